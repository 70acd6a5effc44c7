//! The `mqttd` binary: parse flags, load the config, set up logging, run
//! the broker until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use mqttd::config::{Config, Durability};
use mqttd::server::{Server, StartError};

/// An MQTT 3.1.1 and 5.0 broker for the edge.
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
    /// Check the configuration file and exit (0 if valid, 2 if not).
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    check_config: Option<PathBuf>,
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
    if let Some(path) = &args.check_config {
        let checked = Config::load(path)
            .map_err(|e| e.to_string())
            .and_then(|c| mqttd::server::check_files(&c).map_err(|e| e.to_string()));
        return match checked {
            Ok(()) => {
                println!("{}: configuration is valid", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mqttd: {e}");
                ExitCode::from(EXIT_CONFIG)
            }
        };
    }
    let mut config = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("mqttd: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        None => Config::default(),
    };
    config.override_listeners(&args.listen);
    if let Some(path) = args.control_socket {
        config.control.socket = Some(path);
    }
    if let Some(path) = args.data_dir {
        config.storage.data_dir = path;
    }
    if let Some(d) = args.durability {
        config.storage.durability = d;
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
            tracing::error!("{e:#}");
            eprintln!("mqttd: {e:#}");
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
