//! The machine a comparison ran on: CPU model, cores, memory, kernel, OS.

use std::fs;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_bytes: u64,
    pub kernel: String,
    pub os: String,
}

/// Reads this machine's description from `/proc` and `/etc/os-release`;
/// anything unreadable is reported as "unknown".
pub fn this_machine() -> Machine {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let os_release = fs::read_to_string("/etc/os-release").unwrap_or_default();
    Machine {
        cpu: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".into()),
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory_bytes: mem_total(&meminfo).unwrap_or(0),
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into()),
        os: pretty_name(&os_release).unwrap_or_else(|| "unknown".into()),
    }
}

/// The first `model name` of a `/proc/cpuinfo` text.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    field(cpuinfo, "model name", ':')
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
pub fn mem_total(meminfo: &str) -> Option<u64> {
    let v = field(meminfo, "MemTotal", ':')?;
    let kib: u64 = v.split_whitespace().next()?.parse().ok()?;
    kib.checked_mul(1024)
}

/// `PRETTY_NAME` of an os-release text, unquoted.
pub fn pretty_name(os_release: &str) -> Option<String> {
    field(os_release, "PRETTY_NAME", '=').map(|v| v.trim_matches('"').to_string())
}

fn field(text: &str, key: &str, sep: char) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(sep)?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6248\n\nprocessor\t: 1\nmodel name\t: Intel(R) Xeon(R) Gold 6248\n";
        assert_eq!(
            cpu_model(cpuinfo).as_deref(),
            Some("Intel(R) Xeon(R) Gold 6248")
        );
        assert_eq!(
            mem_total("MemTotal:       24576000 kB\nMemFree: 1 kB\n"),
            Some(24_576_000 * 1024)
        );
        assert_eq!(
            pretty_name("NAME=x\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n").as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(cpu_model(""), None);
        assert_eq!(mem_total("MemTotal: lots\n"), None);
    }

    #[test]
    fn reads_this_machine() {
        let m = this_machine();
        assert!(m.cores >= 1);
        assert!(m.memory_bytes > 0);
    }
}
