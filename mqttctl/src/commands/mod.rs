//! The command tree's leaves: one module per noun, each with clap `Args`
//! and a thin `run` over [`Client`].

use std::path::PathBuf;

use reqwest::Url;

use crate::cli::{Cli, Command};
use crate::client::{Client, Target};
use crate::error::{socket_unreachable, CtlError};
use crate::socket_owner;

pub mod completions;
pub mod passwd;
pub mod pool;
pub mod sessions;
pub mod status;

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<(), CtlError> {
    let Cli {
        socket,
        socket_owner,
        url,
        token,
        output,
        command,
    } = cli;
    let client = || connect(socket, socket_owner.as_deref(), url, token);
    match command {
        Command::Completions(args) => {
            completions::run(&args);
            Ok(())
        }
        Command::Status(args) => status::run(&client()?, &args, output).await,
        Command::Sessions(cmd) => sessions::run(&client()?, cmd, output).await,
        Command::Pool(cmd) => pool::run(&client()?, cmd, output).await,
        Command::Passwd(cmd) => passwd::run(cmd),
    }
}

/// Picks the target: `--url` if given (then `--socket` is ignored), else
/// `--socket`, else the first default socket location that exists; a
/// socket only if its owner is trusted ([`socket_owner`]).
fn connect(
    socket: Option<PathBuf>,
    socket_owner: Option<&str>,
    url: Option<String>,
    token: Option<String>,
) -> Result<Client, CtlError> {
    let target = match url {
        Some(url) => {
            let url = Url::parse(&url).map_err(|e| {
                CtlError::Usage(format!(
                    "invalid --url {url:?}: {e} (expected e.g. http://host:8081)"
                ))
            })?;
            Target::Tcp { url, token }
        }
        None => {
            let path = socket.unwrap_or_else(mqttd_api::socket::client_socket_path);
            // Checked here so a missing socket gets its clear message at once.
            if let Err(e) = std::fs::metadata(&path) {
                return Err(socket_unreachable(&path, &e));
            }
            let extra_owner = socket_owner.map(socket_owner::parse_owner).transpose()?;
            Target::Socket(socket_owner::trusted_socket(&path, extra_owner)?)
        }
    };
    Client::new(target)
}
