//! Task log files: the rotating writer used by the task shim, and the
//! reader behind `alloc logs` (Nomad's layout:
//! `<alloc_dir>/alloc/logs/<task>.<stdout|stderr>.<N>`, newest N last).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Rotation limits for one stream.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Rotation {
    /// Files kept, the current one included.
    pub max_files: u32,
    /// Size at which the current file is closed and the next one opened.
    pub max_file_bytes: u64,
}

impl Rotation {
    /// No capture at all (`logs { disabled = true }`): the streams are
    /// drained into /dev/null and no file is made.
    pub const DISABLED: Rotation = Rotation { max_files: 0, max_file_bytes: u64::MAX };

    /// Whether logging is disabled.
    pub fn is_disabled(&self) -> bool {
        self.max_files == 0
    }
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation { max_files: 10, max_file_bytes: 10 * 1024 * 1024 }
    }
}

/// The indexes of existing files for `<task>.<stream>`, ascending.
pub fn log_indexes(dir: &Path, task: &str, stream: &str) -> Vec<u64> {
    let prefix = format!("{task}.{stream}.");
    let mut idx: Vec<u64> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix(&prefix)?.parse().ok())
        .collect();
    idx.sort_unstable();
    idx
}

/// Appends to the newest log file of a stream, rotating by size.
pub struct RotatingWriter {
    dir: PathBuf,
    base: String,
    rotation: Rotation,
    index: u64,
    file: File,
    size: u64,
}

impl RotatingWriter {
    /// Opens (continuing) the newest file for `<task>.<stream>` in `dir`.
    pub fn open(dir: &Path, task: &str, stream: &str, rotation: Rotation) -> io::Result<Self> {
        if rotation.is_disabled() {
            let file = OpenOptions::new().write(true).open("/dev/null")?;
            let base = format!("{task}.{stream}");
            return Ok(RotatingWriter { dir: dir.to_path_buf(), base, rotation, index: 0, file, size: 0 });
        }
        fs::create_dir_all(dir)?;
        let index = log_indexes(dir, task, stream).last().copied().unwrap_or(0);
        let base = format!("{task}.{stream}");
        let path = dir.join(format!("{base}.{index}"));
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(RotatingWriter { dir: dir.to_path_buf(), base, rotation, index, file, size })
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.index += 1;
        let path = self.dir.join(format!("{}.{}", self.base, self.index));
        self.file = OpenOptions::new().create(true).append(true).open(path)?;
        self.size = 0;
        let keep = self.rotation.max_files.max(1) as u64;
        if self.index >= keep {
            let oldest_kept = self.index + 1 - keep;
            let prefix = format!("{}.", self.base);
            for entry in fs::read_dir(&self.dir)?.flatten() {
                let name = entry.file_name();
                let Some(n) = name.to_str().and_then(|n| n.strip_prefix(&prefix)).and_then(|n| n.parse::<u64>().ok())
                else {
                    continue;
                };
                if n < oldest_kept {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        Ok(())
    }
}

impl Write for RotatingWriter {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let total = buf.len();
        while !buf.is_empty() {
            if self.size >= self.rotation.max_file_bytes {
                self.rotate()?;
            }
            let room = (self.rotation.max_file_bytes - self.size) as usize;
            let n = room.min(buf.len());
            self.file.write_all(&buf[..n])?;
            self.size += n as u64;
            buf = &buf[n..];
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// A reader over all the files of a stream as one byte sequence.
pub struct LogReader {
    dir: PathBuf,
    task: String,
    stream: String,
}

impl LogReader {
    /// A reader for `<task>.<stream>` in the alloc's log dir.
    pub fn new(dir: &Path, task: &str, stream: &str) -> Self {
        LogReader { dir: dir.to_path_buf(), task: task.into(), stream: stream.into() }
    }

    fn files(&self) -> Vec<(u64, PathBuf, u64)> {
        log_indexes(&self.dir, &self.task, &self.stream)
            .into_iter()
            .map(|i| {
                let p = self.dir.join(format!("{}.{}.{i}", self.task, self.stream));
                let len = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                (i, p, len)
            })
            .collect()
    }

    /// Total bytes currently stored.
    pub fn len(&self) -> u64 {
        self.files().iter().map(|f| f.2).sum()
    }

    /// True when nothing was logged.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads from logical offset `from` to the current end (at most `limit` bytes).
    pub fn read_from(&self, from: u64, limit: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut base = 0u64;
        for (_, path, len) in self.files() {
            if from < base + len && out.len() < limit {
                let mut f = File::open(&path)?;
                let start = from.saturating_sub(base);
                f.seek(SeekFrom::Start(start))?;
                let want = ((len - start) as usize).min(limit - out.len());
                let mut chunk = vec![0; want];
                f.read_exact(&mut chunk)?;
                out.extend_from_slice(&chunk);
            }
            base += len;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_and_keeps_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let rot = Rotation { max_files: 3, max_file_bytes: 10 };
        let mut w = RotatingWriter::open(dir.path(), "web", "stdout", rot).unwrap();
        for i in 0..10 {
            writeln!(w, "line{i:02}").unwrap();
        }
        drop(w);
        let idx = log_indexes(dir.path(), "web", "stdout");
        assert_eq!(idx.len(), 3, "{idx:?}");
        let r = LogReader::new(dir.path(), "web", "stdout");
        let all = String::from_utf8(r.read_from(0, 1 << 20).unwrap()).unwrap();
        assert!(all.ends_with("line09\n"), "{all}");
        assert!(!all.contains("line00"));
        // Reopening continues in the newest file.
        let mut w = RotatingWriter::open(dir.path(), "web", "stdout", rot).unwrap();
        w.write_all(b"x").unwrap();
        assert!(String::from_utf8(r.read_from(0, 1 << 20).unwrap()).unwrap().ends_with("line09\nx"));
    }

    #[test]
    fn reads_across_files_from_an_offset() {
        let dir = tempfile::tempdir().unwrap();
        let rot = Rotation { max_files: 10, max_file_bytes: 4 };
        let mut w = RotatingWriter::open(dir.path(), "t", "stderr", rot).unwrap();
        w.write_all(b"abcdefghij").unwrap();
        let r = LogReader::new(dir.path(), "t", "stderr");
        assert_eq!(r.len(), 10);
        assert_eq!(r.read_from(3, 100).unwrap(), b"defghij");
        assert_eq!(r.read_from(3, 2).unwrap(), b"de");
    }
}
