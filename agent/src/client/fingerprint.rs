//! Node fingerprinting: CPU (total MHz across cores), memory, the storage
//! under the data dir, hostname, kernel, OS and address attributes, as
//! Nomad's fingerprinters name them.

use std::collections::BTreeMap;

/// Host facts the scheduler and interpolation use.
#[derive(Debug, Clone, Default)]
pub struct HostFacts {
    /// Node attributes (`kernel.name`, `cpu.numcores`, …).
    pub attributes: BTreeMap<String, String>,
    /// Total compute in MHz.
    pub cpu_mhz: u64,
    /// Cores.
    pub cores: u64,
    /// Memory in MB.
    pub memory_mb: u64,
    /// Free space (MB) on the filesystem of the data dir: what ephemeral
    /// disks are placed against (Nomad's `DiskMB`).
    pub disk_free_mb: u64,
}

/// Total and free bytes of the filesystem holding `dir`.
fn storage(dir: &std::path::Path) -> Option<(u64, u64)> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    let block = st.fragment_size() as u64;
    Some((st.blocks() as u64 * block, st.blocks_available() as u64 * block))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Per-core MHz from /proc/cpuinfo, else the max from cpufreq, else 1000.
fn core_mhz(cpuinfo: &str) -> u64 {
    let from_cpuinfo = cpuinfo
        .lines()
        .filter(|l| l.starts_with("cpu MHz"))
        .filter_map(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
        .fold(0.0f64, f64::max);
    if from_cpuinfo > 0.0 {
        return from_cpuinfo as u64;
    }
    read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
        .trim()
        .parse::<u64>()
        .map(|khz| khz / 1000)
        .unwrap_or(1000)
}

/// Total memory in MB from /proc/meminfo.
fn memory_mb(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|kb| kb / 1024)
        .unwrap_or(0)
}

fn os_release() -> (String, String) {
    let text = read("/etc/os-release");
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_default()
    };
    (get("ID"), get("VERSION_ID"))
}

/// Fingerprints this host; `address` is the node's advertised IP and
/// `data_dir` the agent's data dir (allocation directories live under it).
pub fn fingerprint(address: &str, data_dir: &std::path::Path) -> HostFacts {
    let uts = nix::sys::utsname::uname().ok();
    let field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
        uts.as_ref().map(|u| f(u).to_string_lossy().into_owned()).unwrap_or_default()
    };
    let cores = std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(1);
    let mhz = core_mhz(&read("/proc/cpuinfo"));
    let mut attrs = BTreeMap::new();
    let hostname = field(|u| u.nodename());
    attrs.insert("unique.hostname".into(), hostname);
    attrs.insert("kernel.name".into(), field(|u| u.sysname()).to_lowercase());
    attrs.insert("kernel.version".into(), field(|u| u.release()));
    attrs.insert("kernel.arch".into(), field(|u| u.machine()));
    let arch = match field(|u| u.machine()).as_str() {
        "x86_64" => "amd64".to_string(),
        "aarch64" => "arm64".to_string(),
        other => other.to_string(),
    };
    attrs.insert("cpu.arch".into(), arch);
    attrs.insert("cpu.numcores".into(), cores.to_string());
    attrs.insert("cpu.frequency".into(), mhz.to_string());
    attrs.insert("cpu.totalcompute".into(), (mhz * cores).to_string());
    let (os, version) = os_release();
    attrs.insert("os.name".into(), os);
    attrs.insert("os.version".into(), version);
    attrs.insert("unique.network.ip-address".into(), address.to_string());
    attrs.insert("nomad.version".into(), crate::VERSION.to_string());
    attrs.insert("berth.version".into(), crate::VERSION.to_string());
    let memory_mb = memory_mb(&read("/proc/meminfo"));
    attrs.insert("memory.totalbytes".into(), (memory_mb * 1024 * 1024).to_string());
    let (total, free) = storage(data_dir).unwrap_or_default();
    attrs.insert("unique.storage.volume".into(), data_dir.display().to_string());
    attrs.insert("unique.storage.bytestotal".into(), total.to_string());
    attrs.insert("unique.storage.bytesfree".into(), free.to_string());
    HostFacts { attributes: attrs, cpu_mhz: mhz * cores, cores, memory_mb, disk_free_mb: free / (1024 * 1024) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        assert_eq!(core_mhz("processor: 0\ncpu MHz\t\t: 2399.998\nprocessor: 1\ncpu MHz : 2500.0\n"), 2500);
        assert_eq!(memory_mb("MemTotal:       24576000 kB\nMemFree: 1 kB\n"), 24000);
        let dir = tempfile::tempdir().unwrap();
        let facts = fingerprint("127.0.0.1", dir.path());
        assert_eq!(facts.attributes["kernel.name"], "linux");
        assert!(facts.cpu_mhz > 0 && facts.memory_mb > 0);
        let (total, free) = storage(dir.path()).unwrap();
        assert!(total >= free && free > 0, "{total} {free}");
        assert_eq!(facts.disk_free_mb, facts.attributes["unique.storage.bytesfree"].parse::<u64>().unwrap() >> 20);
    }
}
