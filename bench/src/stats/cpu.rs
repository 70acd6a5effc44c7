//! CPU time used by this process (getrusage) and by the broker
//! (`/proc/PID/stat`), to tell from the report which side was saturated.

use std::path::PathBuf;
use std::time::Duration;

/// Why a process's CPU time could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    #[error("cannot read {path}: {source} (is process {pid} running?)")]
    Read {
        pid: u32,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is not in the expected format")]
    Format(PathBuf),
}

/// User plus system CPU time of this process so far (all threads).
pub fn self_cpu() -> Duration {
    // SAFETY: getrusage only writes into the struct we pass, which is a
    // plain C struct for which all-zero bytes are a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF is a valid target and `usage` is a valid pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    timeval(usage.ru_utime) + timeval(usage.ru_stime)
}

fn timeval(t: libc::timeval) -> Duration {
    Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
        + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
}

/// User plus system CPU time of process `pid` so far.
pub fn process_cpu(pid: u32) -> Result<Duration, CpuError> {
    let path = PathBuf::from(format!("/proc/{pid}/stat"));
    let text = std::fs::read_to_string(&path).map_err(|source| CpuError::Read {
        pid,
        path: path.clone(),
        source,
    })?;
    parse_proc_stat(&text, clock_ticks()).ok_or(CpuError::Format(path))
}

/// Clock ticks per second, the unit of `/proc/PID/stat` times.
fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// utime + stime of a `/proc/PID/stat` line. The command name (field 2)
/// may contain spaces and parentheses, so fields are counted from the
/// last `)`: utime and stime are the 12th and 13th after it.
pub fn parse_proc_stat(stat: &str, ticks_per_sec: u64) -> Option<Duration> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = utime.checked_add(stime)?;
    let ticks_per_sec = ticks_per_sec.max(1);
    Some(
        Duration::from_secs(ticks / ticks_per_sec)
            + Duration::from_nanos((ticks % ticks_per_sec) * 1_000_000_000 / ticks_per_sec),
    )
}

/// Average cores busy: CPU time over wall time.
pub fn cores(cpu: Duration, wall: Duration) -> f64 {
    if wall.is_zero() {
        0.0
    } else {
        cpu.as_secs_f64() / wall.as_secs_f64()
    }
}

/// Microseconds of CPU per operation (0 when there were none).
pub fn per_op_us(cpu: Duration, ops: f64) -> f64 {
    if ops <= 0.0 {
        0.0
    } else {
        cpu.as_secs_f64() * 1e6 / ops
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_with_an_awkward_name() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 1000 123456 789 18446744073709551615";
        assert_eq!(
            parse_proc_stat(stat, 100),
            Some(Duration::from_millis(3250))
        );
        assert_eq!(parse_proc_stat("garbage", 100), None);
        assert_eq!(parse_proc_stat("1 (x) S 1 2", 100), None);
    }

    #[test]
    fn reads_this_process() {
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(process_cpu(std::process::id()).is_ok());
        assert!(self_cpu() > Duration::ZERO);
        assert!(process_cpu(u32::MAX).is_err());
    }

    #[test]
    fn cores_busy() {
        assert_eq!(cores(Duration::from_secs(3), Duration::from_secs(2)), 1.5);
        assert_eq!(cores(Duration::from_secs(3), Duration::ZERO), 0.0);
        assert_eq!(per_op_us(Duration::from_millis(500), 10_000.0), 50.0);
        assert_eq!(per_op_us(Duration::from_millis(500), 0.0), 0.0);
    }
}
