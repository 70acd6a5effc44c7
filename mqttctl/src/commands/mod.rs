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

/// `--url` as the TCP control API's base: an `http` or `https` URL with a
/// host (`localhost:8081` parses as a URL of scheme `localhost`, and
/// would only fail later, as "unreachable").
fn parse_url(text: &str) -> Result<Url, CtlError> {
    let usage = |why: String| {
        CtlError::Usage(format!(
            "invalid --url {text:?}: {why} (expected e.g. http://host:8081)"
        ))
    };
    let url = Url::parse(text).map_err(|e| usage(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(usage(format!(
            "scheme {:?} is not http or https",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(usage("no host".into()));
    }
    Ok(url)
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
        Some(url) => Target::Tcp {
            url: parse_url(&url)?,
            token,
        },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_must_be_http_with_a_host() {
        for bad in ["localhost:8081", "ftp://h/", "not a url", "http://"] {
            let err = parse_url(bad).unwrap_err();
            assert_eq!(err.exit_code(), crate::error::EXIT_USAGE, "{bad}: {err}");
        }
        assert!(parse_url("http://127.0.0.1:8081").is_ok());
        assert!(parse_url("https://mqttd.example:8081/").is_ok());
    }
}
