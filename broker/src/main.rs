//! The `mqttd` binary: parse flags, load the config, set up logging, run
//! the broker until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use mqttd::config::{Config, Durability};
use mqttd::server::{Server, StartError};

/// An MQTT 3.1, 3.1.1 and 5.0 broker for the edge.
#[derive(Debug, Parser)]
#[command(name = "mqttd", version, about)]
struct Args {
    /// YAML configuration file (defaults apply to every missing key).
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen for plain MQTT on ADDR:PORT instead of the config's TCP
    /// listeners (repeatable).
    #[arg(short, long, value_name = "ADDR:PORT")]
    listen: Vec<SocketAddr>,
    /// Serve the control API on this Unix socket (overrides `control.socket`).
    #[arg(long, value_name = "PATH")]
    control_socket: Option<PathBuf>,
    /// Keep persistent sessions and retained messages under PATH
    /// (overrides `storage.data_dir`).
    #[arg(long, value_name = "PATH")]
    data_dir: Option<PathBuf>,
    /// What an acknowledgement promises: sync, batched or memory
    /// (overrides `storage.durability`; see docs/storage.md).
    #[arg(long, value_name = "MODE", value_parser = parse_durability)]
    durability: Option<Durability>,
    /// Serve health and metrics on ADDR:PORT, or `off` for no HTTP server
    /// (overrides `http.bind` and `http.enabled`).
    #[arg(long, value_name = "ADDR:PORT|off", value_parser = parse_http)]
    http: Option<HttpFlag>,
    /// Check the configuration file (with the other flags applied) as
    /// start-up does, short of binding sockets, and exit: 0 if valid, 2 if not.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    check_config: Option<PathBuf>,
}

/// The `--http` flag's value.
#[derive(Debug, Clone, Copy)]
enum HttpFlag {
    Off,
    Bind(SocketAddr),
}

fn parse_http(s: &str) -> Result<HttpFlag, String> {
    if s == "off" {
        return Ok(HttpFlag::Off);
    }
    s.parse()
        .map(HttpFlag::Bind)
        .map_err(|_| format!("{s:?} is neither ADDR:PORT nor `off`"))
}

/// Exit code for an unusable configuration.
const EXIT_CONFIG: u8 = 2;
/// Exit code for a store written by a newer, incompatible mqttd.
const EXIT_STORE_INCOMPATIBLE: u8 = 3;

fn parse_durability(s: &str) -> Result<Durability, String> {
    match s {
        "sync" => Ok(Durability::Sync),
        "batched" => Ok(Durability::Batched),
        "memory" => Ok(Durability::Memory),
        _ => Err(format!("{s:?} is not one of sync, batched, memory")),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let file = args.check_config.as_ref().or(args.config.as_ref());
    let config = match file.map_or_else(|| Ok(Config::default()), |p| Config::load(p)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mqttd: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let config = match apply_flags(config, &args, file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mqttd: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(path) = &args.check_config {
        // Every check start-up makes before binding (`Server::start` runs
        // the same function first).
        return match mqttd::preflight::check(&config) {
            Ok(_) => {
                println!("{}: configuration is valid", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mqttd: {}", error_chain(&e));
                ExitCode::from(EXIT_CONFIG)
            }
        };
    }
    if let Err(e) = mqttd::logging::init(&config.log) {
        eprintln!("mqttd: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    mqttd::memory::tune();
    // Before anything is opened: the connection bound is derived from
    // the limit in force (see `admission::open_files`).
    mqttd::admission::open_files::raise_soft_limit();
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once: in the log when errors are logged (JSON stays JSON),
            // else as a plain line.
            let text = error_chain(e.as_ref());
            if tracing::enabled!(tracing::Level::ERROR) {
                tracing::error!("{text}");
            } else {
                eprintln!("mqttd: {text}");
            }
            let incompatible = matches!(
                e.downcast_ref::<StartError>(),
                Some(StartError::Store(s)) if s.is_incompatible()
            );
            if incompatible {
                ExitCode::from(EXIT_STORE_INCOMPATIBLE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Applies the command-line overrides to `config` and checks the result
/// again (a `--listen` may clash with the file's HTTP port).
fn apply_flags(
    mut config: Config,
    args: &Args,
    file: Option<&PathBuf>,
) -> Result<Config, mqttd::config::ConfigError> {
    config.override_listeners(&args.listen);
    if let Some(path) = &args.control_socket {
        config.control.socket = Some(path.clone());
    }
    if let Some(path) = &args.data_dir {
        config.storage.data_dir = path.clone();
    }
    if let Some(d) = args.durability {
        config.storage.durability = d;
    }
    match args.http {
        Some(HttpFlag::Off) => config.http.enabled = false,
        Some(HttpFlag::Bind(addr)) => {
            config.http.enabled = true;
            config.http.bind = addr;
        }
        None => {}
    }
    let origin = file.map_or_else(|| PathBuf::from("(command line)"), PathBuf::clone);
    config.revalidate(&origin)?;
    Ok(config)
}

/// The error and its causes, each cause left out when the text before it
/// already says it (thiserror messages often embed their source, so a
/// plain `{:#}` printed "Address in use (os error 98)" twice).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}

#[tokio::main]
async fn run(config: Config) -> anyhow::Result<()> {
    // Before the broker starts: from the moment it accepts clients, a
    // SIGTERM must stop it cleanly, not kill it by the default action.
    let signals = Signals::install().context("cannot install signal handlers")?;
    let server = Server::start(config).await?;
    signals.wait().await;
    server.shutdown().await;
    Ok(())
}

/// SIGTERM and SIGINT, caught from when they are installed (a signal
/// that arrives before [`Signals::wait`] is kept for it).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM received"),
            _ = self.int.recv() => tracing::info!("SIGINT received"),
        }
    }
}
