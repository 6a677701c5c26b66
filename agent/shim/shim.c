/* berth's task shim: owns one task process so that the task outlives agent
 * restarts. Built statically by build.rs (a few hundred KiB, where the
 * agent's own binary is tens of MiB), written into the client's data dir
 * and started as `berth-task-shim task-shim SPEC` for every raw_exec task.
 *
 * The contract with the agent (agent/src/client/shim.rs):
 * - SPEC holds NUL-terminated key and value strings, in pairs: command,
 *   cwd, uid and gid (empty: keep the agent's), log_dir, task, max_files,
 *   max_file_bytes, exit_file, netns (empty: none), then any number of arg
 *   and env (K=V) pairs;
 * - the shim starts its own session, enters the network namespace, starts
 *   the task in a new process group with exactly the given environment
 *   (PATH defaulted), stdin from /dev/null and stdout/stderr into rotating
 *   files <log_dir>/<task>.<stream>.<n> (continuing the newest one; with
 *   max_files 0, logging is disabled and they go to /dev/null);
 * - it reports "pid N" or "error WHY" on its stdout, then closes it;
 * - when the task has exited and its output is drained, it writes
 *   {"exit_code":N,"signal":S,"error":"..."} to exit_file atomically. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define DEFAULT_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

struct spec {
    const char *command, *cwd, *uid, *gid, *log_dir, *task, *exit_file, *netns;
    unsigned long max_files;
    unsigned long long max_file_bytes;
    const char **args; /* args[0] is the command, NULL-terminated */
    size_t nargs;
    const char **env; /* NULL-terminated */
    size_t nenv;
};

/* Appends to the newest file of one stream, rotating by size. */
struct rotating {
    int dir;
    char base[NAME_MAX];
    unsigned long long index, size, max_bytes;
    unsigned long keep;
    int fd;
};

static void say(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
}

/* The n of a file name "<base>.<n>", or -1. */
static long long log_index(const char *name, const char *base) {
    size_t len = strlen(base);
    if (strncmp(name, base, len) != 0 || name[len] != '.' || name[len + 1] == '\0') return -1;
    char *end;
    errno = 0;
    unsigned long long n = strtoull(name + len + 1, &end, 10);
    if (errno || *end || name[len + 1] == '-' || name[len + 1] == '+') return -1;
    return (long long)n;
}

static int open_index(struct rotating *r) {
    char name[NAME_MAX + 32];
    snprintf(name, sizeof name, "%s.%llu", r->base, r->index);
    return openat(r->dir, name, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
}

/* Calls f for each "<base>.<n>" in the directory. */
static void each_log(struct rotating *r, void (*f)(struct rotating *, const char *, unsigned long long)) {
    int fd = dup(r->dir);
    DIR *d = fd < 0 ? NULL : fdopendir(fd);
    if (!d) {
        if (fd >= 0) close(fd);
        return;
    }
    rewinddir(d); /* the duplicate shares the offset an earlier walk left */
    for (struct dirent *e; (e = readdir(d));) {
        long long n = log_index(e->d_name, r->base);
        if (n >= 0) f(r, e->d_name, (unsigned long long)n);
    }
    closedir(d);
}

static void newest(struct rotating *r, const char *name, unsigned long long n) {
    (void)name;
    if (n > r->index) r->index = n;
}

static void remove_old(struct rotating *r, const char *name, unsigned long long n) {
    if (n + r->keep < r->index + 1) unlinkat(r->dir, name, 0);
}

static int rotating_open(struct rotating *r, const struct spec *s, const char *stream) {
    snprintf(r->base, sizeof r->base, "%s.%s", s->task, stream);
    if (s->max_files == 0) {
        /* Logging disabled: the stream is read and dropped, no files. */
        r->keep = 1;
        r->max_bytes = ULLONG_MAX;
        r->index = 0;
        r->size = 0;
        r->dir = -1;
        r->fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
        return r->fd < 0 ? -1 : 0;
    }
    r->keep = s->max_files ? s->max_files : 1;
    r->max_bytes = s->max_file_bytes;
    r->index = 0;
    if (mkdir(s->log_dir, 0777) != 0 && errno != EEXIST) return -1;
    r->dir = open(s->log_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (r->dir < 0) return -1;
    each_log(r, newest);
    r->fd = open_index(r);
    if (r->fd < 0) return -1;
    struct stat st;
    if (fstat(r->fd, &st) != 0) return -1;
    r->size = (unsigned long long)st.st_size;
    return 0;
}

static int rotate(struct rotating *r) {
    r->index++;
    int fd = open_index(r);
    if (fd < 0) return -1;
    close(r->fd);
    r->fd = fd;
    r->size = 0;
    /* Keep the newest `keep` files: those from index + 1 - keep on. */
    if (r->index >= r->keep) each_log(r, remove_old);
    return 0;
}

static int rotating_write(struct rotating *r, const char *buf, size_t len) {
    while (len > 0) {
        if (r->size >= r->max_bytes && rotate(r) != 0) return -1;
        size_t room = (size_t)(r->max_bytes - r->size);
        size_t n = room < len ? room : len;
        ssize_t w = write(r->fd, buf, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        r->size += (unsigned long long)w;
        buf += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Writes s as a JSON string body (without quotes). */
static void json_escape(FILE *f, const char *s) {
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
}

static int write_exit(const char *path, long code, long sig, const char *error) {
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "we");
    if (!f) return -1;
    fprintf(f, "{\"exit_code\":%ld,\"signal\":%ld,\"error\":\"", code, sig);
    json_escape(f, error);
    fputs("\"}", f);
    if (fclose(f) != 0) return -1;
    return rename(tmp, path);
}

/* Reads the whole spec file; its strings point into the returned buffer. */
static char *read_spec(const char *path, struct spec *s, char *why, size_t why_len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, why_len, "%s", strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(why, why_len, "%s", strerror(errno));
        close(fd);
        return NULL;
    }
    size_t len = (size_t)st.st_size;
    char *data = malloc(len + 1);
    size_t got = 0;
    while (data && got < len) {
        ssize_t n = read(fd, data + got, len - got);
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(fd);
    if (!data || got != len) {
        snprintf(why, why_len, "short read");
        free(data);
        return NULL;
    }
    data[len] = '\0';
    memset(s, 0, sizeof *s);
    size_t strings = 0;
    for (size_t i = 0; i < len; i++) strings += data[i] == '\0';
    s->args = calloc(strings + 2, sizeof *s->args);
    s->env = calloc(strings + 2, sizeof *s->env);
    if (!s->args || !s->env) {
        snprintf(why, why_len, "out of memory");
        return NULL;
    }
    s->nargs = 1;
    for (size_t at = 0; at < len;) {
        const char *key = data + at;
        at += strlen(key) + 1;
        if (at >= len) {
            snprintf(why, why_len, "key %s has no value", key);
            return NULL;
        }
        const char *value = data + at;
        at += strlen(value) + 1;
        if (!strcmp(key, "command")) s->command = value;
        else if (!strcmp(key, "cwd")) s->cwd = value;
        else if (!strcmp(key, "uid")) s->uid = value;
        else if (!strcmp(key, "gid")) s->gid = value;
        else if (!strcmp(key, "log_dir")) s->log_dir = value;
        else if (!strcmp(key, "task")) s->task = value;
        else if (!strcmp(key, "max_files")) s->max_files = strtoul(value, NULL, 10);
        else if (!strcmp(key, "max_file_bytes")) s->max_file_bytes = strtoull(value, NULL, 10);
        else if (!strcmp(key, "exit_file")) s->exit_file = value;
        else if (!strcmp(key, "netns")) s->netns = value;
        else if (!strcmp(key, "arg")) s->args[s->nargs++] = value;
        else if (!strcmp(key, "env")) s->env[s->nenv++] = value;
        else {
            snprintf(why, why_len, "unknown key %s", key);
            return NULL;
        }
    }
    if (!s->command || !s->cwd || !s->log_dir || !s->task || !s->exit_file || !s->max_file_bytes) {
        snprintf(why, why_len, "a required key is missing");
        return NULL;
    }
    s->args[0] = s->command;
    int has_path = 0;
    for (size_t i = 0; i < s->nenv; i++) has_path |= !strncmp(s->env[i], "PATH=", 5);
    if (!has_path) s->env[s->nenv++] = DEFAULT_PATH;
    return data;
}

/* In the child: everything between fork and exec. Reports errno on `report`. */
static void exec_task(const struct spec *s, int out, int err, int report) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    setpgid(0, 0);
    int null = open("/dev/null", O_RDONLY);
    int failed = null < 0 || dup2(null, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0;
    /* As Rust's Command: the group, then (from root) no supplementary
     * groups and the user, then the working directory. */
    if (!failed && s->uid && *s->uid) {
        gid_t gid = (gid_t)strtoul(s->gid, NULL, 10);
        failed = setgid(gid) != 0 || (getuid() == 0 && setgroups(0, NULL) != 0) ||
                 setuid((uid_t)strtoul(s->uid, NULL, 10)) != 0;
    }
    failed = failed || chdir(s->cwd) != 0;
    if (!failed) {
        environ = (char **)s->env;
        execvp(s->command, (char *const *)s->args);
    }
    int e = errno;
    ssize_t ignored = write(report, &e, sizeof e);
    (void)ignored;
    _exit(127);
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    if (argc < 3 || strcmp(argv[1], "task-shim") != 0) {
        say("error usage: %s task-shim SPEC\n", argv[0]);
        return 1;
    }
    struct spec s;
    char why[512];
    if (!read_spec(argv[2], &s, why, sizeof why)) {
        say("error reading shim spec %s: %s\n", argv[2], why);
        return 1;
    }
    setsid();
    struct rotating logs[2];
    if (rotating_open(&logs[0], &s, "stdout") != 0 || rotating_open(&logs[1], &s, "stderr") != 0) {
        say("error opening log files in %s: %s\n", s.log_dir, strerror(errno));
        return 1;
    }
    char error[PATH_MAX + 256];
    if (s.netns && *s.netns) {
        int ns = open(s.netns, O_RDONLY | O_CLOEXEC);
        if (ns < 0 || setns(ns, CLONE_NEWNET) != 0) {
            snprintf(error, sizeof error, "entering network namespace %s: %s", s.netns, strerror(errno));
            write_exit(s.exit_file, -1, 0, error);
            say("error %s\n", error);
            return 1;
        }
        close(ns);
    }
    int out[2], err[2], report[2];
    if (pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC) || pipe2(report, O_CLOEXEC)) {
        say("error creating pipes: %s\n", strerror(errno));
        return 1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        say("error fork: %s\n", strerror(errno));
        return 1;
    }
    if (pid == 0) exec_task(&s, out[1], err[1], report[1]);
    close(out[1]);
    close(err[1]);
    close(report[1]);
    int child_errno = 0;
    ssize_t n;
    while ((n = read(report[0], &child_errno, sizeof child_errno)) < 0 && errno == EINTR) {
    }
    close(report[0]);
    if (n == (ssize_t)sizeof child_errno) {
        waitpid(pid, NULL, 0);
        snprintf(error, sizeof error, "failed to start \"%s\": %s (os error %d)", s.command, strerror(child_errno),
                 child_errno);
        write_exit(s.exit_file, -1, 0, error);
        say("error %s\n", error);
        return 1;
    }
    say("pid %d\n", (int)pid);
    /* Detach from the agent: our stdout was its pipe. */
    int null = open("/dev/null", O_WRONLY);
    if (null >= 0) {
        dup2(null, 1);
        dup2(null, 2);
        close(null);
    }
    struct pollfd fds[2] = {{.fd = out[0], .events = POLLIN}, {.fd = err[0], .events = POLLIN}};
    char buf[16384];
    while (fds[0].fd >= 0 || fds[1].fd >= 0) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !fds[i].revents) continue;
            ssize_t got = read(fds[i].fd, buf, sizeof buf);
            if (got < 0 && errno == EINTR) continue;
            if (got <= 0 || rotating_write(&logs[i], buf, (size_t)got) != 0) {
                close(fds[i].fd);
                fds[i].fd = -1;
            }
        }
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            snprintf(error, sizeof error, "waiting for the task: %s", strerror(errno));
            write_exit(s.exit_file, -1, 0, error);
            return 1;
        }
    }
    long code = WIFEXITED(status) ? WEXITSTATUS(status) : 0;
    long sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    return write_exit(s.exit_file, code, sig, "") == 0 ? 0 : 1;
}
