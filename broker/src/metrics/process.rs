//! The standard Prometheus `process_*` figures of this process, read from
//! `/proc/self` at scrape time (as the Go and Python clients do), without
//! a metrics crate: resident memory, CPU seconds, open and maximum file
//! descriptors. On a system without `/proc` they are left out.

use super::{Exposition, Kind};

/// What one scrape read.
#[derive(Debug, Default, PartialEq)]
pub struct ProcessStats {
    pub resident_memory_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
}

impl ProcessStats {
    /// Reads this process's figures now.
    pub fn read() -> ProcessStats {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let (cpu_seconds, resident_memory_bytes) = stat
            .as_deref()
            .and_then(|s| parse_stat(s, clock_ticks(), page_size()))
            .map_or((None, None), |(cpu, rss)| (Some(cpu), Some(rss)));
        ProcessStats {
            resident_memory_bytes,
            cpu_seconds,
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|d| d.count() as u64),
            max_fds: max_fds(),
        }
    }

    pub(super) fn render(&self, e: &mut Exposition) {
        if let Some(v) = self.cpu_seconds {
            e.single(
                "process_cpu_seconds_total",
                Kind::Counter,
                "Total user and system CPU time spent in seconds.",
                v,
            );
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                self.resident_memory_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                self.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                self.max_fds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                e.single(name, Kind::Gauge, help, v);
            }
        }
    }
}

/// CPU seconds (user + system) and resident bytes from `/proc/self/stat`.
/// The command name (field 2) is in parentheses and may hold spaces and
/// parentheses itself: fields are counted after its last `)`.
fn parse_stat(stat: &str, ticks_per_sec: u64, page: u64) -> Option<(f64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name, the first field is field 3 (state): utime is field
    // 14, stime 15, rss (pages) 24.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let ticks = field(14)? + field(15)?;
    let cpu = ticks as f64 / ticks_per_sec.max(1) as f64;
    Some((cpu, field(24)? * page))
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|t| *t > 0).unwrap_or(100)
}

fn page_size() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(p).ok().filter(|p| *p > 0).unwrap_or(4096)
}

/// The soft limit on open files (what `open` fails at).
fn max_fds() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for getrlimit to fill in.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    ok.then_some(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_count_after_the_name() {
        // A name with a space and a parenthesis; utime 250, stime 50,
        // rss 1000 pages.
        let stat = "42 (my (odd) d) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 \
                    123 456789 1000 18446744073709551615";
        assert_eq!(parse_stat(stat, 100, 4096), Some((3.0, 4_096_000)));
        assert_eq!(parse_stat("garbage", 100, 4096), None);
    }

    #[test]
    fn this_process_is_read() {
        let s = ProcessStats::read();
        assert!(s.resident_memory_bytes.unwrap() > 0);
        assert!(s.open_fds.unwrap() >= 3);
        assert!(s.max_fds.unwrap() >= s.open_fds.unwrap());
        assert!(s.cpu_seconds.is_some());
    }
}
