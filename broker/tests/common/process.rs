//! The real `mqttd` binary as a child process, for tests that kill it
//! (SIGKILL) or stop it (SIGTERM) and start it again on the same data
//! directory.
//!
//! It binds its MQTT listener and HTTP port to 127.0.0.1:0 and logs in
//! JSON; the ports it got are read back from its "listening" and "mqttd
//! started" lines, so no port is guessed (and none can be taken by
//! another process in between). Its whole stderr is kept for assertions.
#![allow(dead_code)]

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

pub const MQTTD: &str = env!("CARGO_BIN_EXE_mqttd");

/// Upper bound for a start (a debug build recovering its store) or a stop.
pub const START_LIMIT: Duration = Duration::from_secs(20);

/// A running broker.
pub struct Mqttd {
    child: Child,
    pub mqtt: SocketAddr,
    pub http: SocketAddr,
    log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// What a start came to.
pub enum Started {
    Running(Mqttd),
    /// It exited before it was ready (a refused store, a bad config).
    Exited {
        status: ExitStatus,
        log: String,
    },
}

impl Started {
    pub fn running(self) -> Mqttd {
        match self {
            Started::Running(m) => m,
            Started::Exited { status, log } => panic!("mqttd exited ({status}):\n{log}"),
        }
    }
}

enum Line {
    Mqtt(SocketAddr),
    Http(SocketAddr),
    Eof,
}

/// How to start it.
pub struct Spec<'a> {
    /// Holds the config file and the control socket.
    pub dir: &'a Path,
    pub data_dir: &'a Path,
    /// `--durability`, if given.
    pub durability: Option<&'a str>,
    /// More YAML for the config file (top-level keys other than
    /// `listeners`, `log`, `http`).
    pub extra_yaml: &'a str,
    /// The log filter ([`QUIET`]: the store engine's recovery steps left
    /// out).
    pub log_level: &'a str,
}

/// mqttd's own lines; the engine's warnings and errors only.
pub const QUIET: &str = "info,fjall=warn,lsm_tree=warn";

impl Mqttd {
    /// Starts the binary and waits until it accepts connections (or
    /// exits); panics if neither happens within [`START_LIMIT`].
    pub fn start(spec: &Spec<'_>) -> Started {
        Self::start_with_open_files(spec, None)
    }

    /// [`Mqttd::start`] with its open-file limit (soft and hard) set to
    /// `open_files`, if given.
    pub fn start_with_open_files(spec: &Spec<'_>, open_files: Option<u64>) -> Started {
        let config = spec.dir.join("mqttd.yaml");
        let yaml = format!(
            "listeners:\n  - name: mqtt\n    bind: 127.0.0.1:0\n\
             log:\n  format: json\n  level: \"{}\"\n\
             http:\n  bind: 127.0.0.1:0\n{}",
            spec.log_level, spec.extra_yaml
        );
        std::fs::write(&config, yaml).expect("write config");
        let mut cmd = Command::new(MQTTD);
        cmd.arg("--config")
            .arg(&config)
            .arg("--control-socket")
            .arg(spec.dir.join("mqttd.sock"))
            .arg("--data-dir")
            .arg(spec.data_dir)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(d) = spec.durability {
            cmd.args(["--durability", d]);
        }
        if let Some(n) = open_files {
            use std::os::unix::process::CommandExt as _;
            let limit = libc::rlimit {
                rlim_cur: n as libc::rlim_t,
                rlim_max: n as libc::rlim_t,
            };
            // SAFETY: between fork and exec only `setrlimit` runs, which
            // is async-signal-safe and touches no memory of the parent.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = cmd.spawn().expect("spawn mqttd");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let kept = log.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(found) = addresses(&line) {
                    let _ = tx.send(found);
                }
                let mut log = kept.lock().expect("log lock");
                log.push_str(&line);
                log.push('\n');
            }
            let _ = tx.send(Line::Eof);
        });
        let deadline = Instant::now() + START_LIMIT;
        let (mut mqtt, mut http) = (None, None);
        while mqtt.is_none() || http.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Line::Mqtt(a)) => mqtt = Some(a),
                Ok(Line::Http(a)) => http = Some(a),
                Ok(Line::Eof) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = wait_limited(&mut child, START_LIMIT);
                    let _ = reader.join();
                    let log = log.lock().expect("log lock").clone();
                    return Started::Exited { status, log };
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = log.lock().expect("log lock").clone();
                    panic!("mqttd did not start within {START_LIMIT:?}:\n{log}");
                }
            }
        }
        Started::Running(Mqttd {
            child,
            mqtt: mqtt.expect("mqtt address"),
            http: http.expect("http address"),
            log,
            reader: Some(reader),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// SIGKILL, and waits for it to be gone; returns its log.
    pub fn kill(mut self) -> String {
        self.child.kill().expect("SIGKILL mqttd");
        self.child.wait().expect("wait for mqttd");
        self.finish()
    }

    /// SIGTERM, and waits (bounded) for it to exit; returns the exit
    /// status and its log.
    pub fn terminate(mut self) -> (ExitStatus, String) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: a plain signal to our own child, which we have not
        // waited for yet (so the pid cannot have been reused).
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "SIGTERM mqttd");
        let status = wait_limited(&mut self.child, START_LIMIT);
        (status, self.finish())
    }

    fn finish(&mut self) -> String {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.log()
    }

    /// GET `path` on its HTTP port (HTTP/1.0 by hand): the body.
    pub fn http_get(&self, path: &str) -> String {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(self.http).expect("connect to the HTTP port");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("write request");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read response");
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        assert!(
            head.starts_with("HTTP/1.") && head.contains(" 200 "),
            "{head}"
        );
        body.to_string()
    }

    /// The value of an unlabelled metric on `/metrics`.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.http_get("/metrics").lines().find_map(|l| {
            let (n, v) = l.split_once(' ')?;
            (n == name).then(|| v.trim().parse().ok())?
        })
    }
}

impl Drop for Mqttd {
    /// A test that panics does not leave its broker running.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits for `child` to exit, killing it after `limit`.
fn wait_limited(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("mqttd did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The address in a JSON log line that announces the MQTT listener or
/// the HTTP port.
fn addresses(line: &str) -> Option<Line> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = v.get("fields")?;
    let addr = |key: &str| fields.get(key)?.as_str()?.parse().ok();
    match fields.get("message")?.as_str()? {
        "listening" => addr("addr").map(Line::Mqtt),
        "mqttd started" => addr("http").map(Line::Http),
        _ => None,
    }
}

/// A data directory's quarantine entries (`quarantine/<stamp>`), sorted.
pub fn quarantined(data_dir: &Path) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(data_dir.join("quarantine")) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = dir.filter_map(|e| Some(e.ok()?.path())).collect();
    out.sort();
    out
}
