//! The resident memory of a process, from `/proc/PID/status`: `VmRSS`
//! now, `VmHWM` at its peak so far.

use std::path::PathBuf;

/// Why the resident memory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RssError {
    #[error("cannot read {path}: {source} (is process {pid} running?)")]
    Read {
        pid: u32,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} has no {1} line")]
    Missing(PathBuf, &'static str),
}

/// Parses a `NAME:  1234 kB` line of a `/proc/PID/status` text (`name`
/// with its colon, e.g. `VmRSS:`) into bytes. `None` if the line is absent
/// or malformed.
fn parse_field(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    let mut fields = line[name.len()..].split_whitespace();
    let value: u64 = fields.next()?.parse().ok()?;
    let unit = match fields.next()? {
        "kB" | "KB" | "kb" => 1024,
        "mB" | "MB" => 1024 * 1024,
        "B" => 1,
        _ => return None,
    };
    value.checked_mul(unit)
}

/// The resident memory of process `pid`, in bytes.
pub fn read_rss(pid: u32) -> Result<u64, RssError> {
    read_field(pid, "VmRSS:")
}

/// The largest resident memory process `pid` has had so far, in bytes.
pub fn read_peak_rss(pid: u32) -> Result<u64, RssError> {
    read_field(pid, "VmHWM:")
}

fn read_field(pid: u32, name: &'static str) -> Result<u64, RssError> {
    let path = PathBuf::from(format!("/proc/{pid}/status"));
    let text = std::fs::read_to_string(&path).map_err(|source| RssError::Read {
        pid,
        path: path.clone(),
        source,
    })?;
    parse_field(&text, name).ok_or(RssError::Missing(path, name.trim_end_matches(':')))
}

/// Bytes per connection between two readings; negative when memory shrank.
pub fn per_connection(before: u64, after: u64, connections: u64) -> f64 {
    if connections == 0 {
        0.0
    } else {
        (after as f64 - before as f64) / connections as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tmosquitto\nUmask:\t0022\nState:\tS (sleeping)\n\
        VmPeak:\t   12000 kB\nVmSize:\t   11000 kB\nVmHWM:\t    6000 kB\n\
        VmRSS:\t    5432 kB\nRssAnon:\t    1000 kB\nThreads:\t1\n";

    #[test]
    fn parses_vm_rss_in_kib() {
        assert_eq!(parse_field(STATUS, "VmRSS:"), Some(5432 * 1024));
        assert_eq!(parse_field(STATUS, "VmHWM:"), Some(6000 * 1024));
    }

    #[test]
    fn missing_or_malformed_line() {
        let rss = |s| parse_field(s, "VmRSS:");
        assert_eq!(rss("Name:\tx\n"), None);
        assert_eq!(rss("VmRSS:\tlots kB\n"), None);
        assert_eq!(rss("VmRSS:\t12\n"), None);
        // A kernel thread has no VmRSS line at all.
        assert_eq!(rss("Name:\tkthreadd\nThreads:\t1\n"), None);
    }

    #[test]
    fn reads_our_own_process() {
        let rss = read_rss(std::process::id()).map_err(|e| e.to_string());
        assert!(matches!(rss, Ok(n) if n > 0), "{rss:?}");
        let peak = read_peak_rss(std::process::id()).map_err(|e| e.to_string());
        assert!(
            matches!((&rss, &peak), (Ok(r), Ok(p)) if p >= r),
            "{peak:?}"
        );
        assert!(read_rss(u32::MAX).is_err());
    }

    #[test]
    fn per_connection_delta() {
        assert_eq!(per_connection(1000, 5000, 4), 1000.0);
        assert_eq!(per_connection(5000, 1000, 4), -1000.0);
        assert_eq!(per_connection(1, 2, 0), 0.0);
    }
}
