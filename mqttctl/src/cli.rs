//! Command line: global flags and the command tree.

use std::path::PathBuf;

use clap::{Arg, CommandFactory, Parser, Subcommand};

use crate::commands::{completions, passwd, pool, sessions, status};
use crate::output::Format;

/// Help heading of the flags every command accepts.
const GLOBAL: &str = "Global options";

const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  success
  1  the operation failed (no such session, pool size out of range, ...)
  2  usage error (bad flags or arguments)
  3  cannot reach mqttd (socket missing, permission denied, nothing
     listening, token refused)";

/// Manage a running mqttd broker through its control socket.
///
/// Without --socket or --url, mqttctl looks for the socket at
/// /run/mqttd/mqttd.sock, then $XDG_RUNTIME_DIR/mqttd/mqttd.sock, then
/// /tmp/mqttd-<uid>/mqttd.sock, the same places mqttd binds to.
#[derive(Debug, Parser)]
#[command(name = "mqttctl", version, after_help = EXIT_STATUS_HELP)]
pub struct Cli {
    /// Path of mqttd's control socket.
    #[arg(long, global = true, env = "MQTTD_SOCKET", value_name = "PATH", help_heading = GLOBAL)]
    pub socket: Option<PathBuf>,

    /// Also trust a control socket owned by this user (name or uid), e.g.
    /// the user mqttd runs as when you run mqttctl as root. Without it,
    /// the socket and its directory must belong to you or root.
    #[arg(
        long,
        global = true,
        env = "MQTTD_SOCKET_OWNER",
        value_name = "USER",
        help_heading = GLOBAL
    )]
    pub socket_owner: Option<String>,

    /// Use the TCP control API at this URL (e.g. http://10.0.0.5:8081)
    /// instead of the socket.
    #[arg(long, global = true, env = "MQTTD_URL", value_name = "URL", help_heading = GLOBAL)]
    pub url: Option<String>,

    /// Bearer token for --url (mqttd's control.tcp token).
    #[arg(
        long,
        global = true,
        env = "MQTTD_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        help_heading = GLOBAL
    )]
    pub token: Option<String>,

    /// Output format: aligned tables for people, JSON for scripts.
    #[arg(
        short,
        long,
        global = true,
        value_enum,
        default_value_t = Format::Table,
        value_name = "FORMAT",
        help_heading = GLOBAL
    )]
    pub output: Format,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the broker's version, uptime, listeners and counts.
    Status(status::Args),
    /// List, inspect and destroy sessions.
    #[command(subcommand)]
    Sessions(sessions::Command),
    /// Show or resize the session-manager pool.
    #[command(subcommand)]
    Pool(pool::Command),
    /// Print a shell completion script to stdout.
    Completions(completions::Args),
    /// Maintain a password file (no broker needed).
    #[command(subcommand)]
    Passwd(passwd::Command),
}

/// The flags that say how to reach the broker: `passwd` works on a file
/// and never uses them.
const CONNECTION_FLAGS: [&str; 4] = ["socket", "socket_owner", "url", "token"];

/// The command tree, with the broker-connection flags hidden from the help
/// of `passwd` and its commands. They are global, so clap would copy them
/// into every command; a command that already has an argument of the same
/// id keeps its own, here a hidden copy (still accepted, never listed).
pub fn command() -> clap::Command {
    let cmd = Cli::command();
    let hidden: Vec<Arg> = cmd
        .get_arguments()
        .filter(|a| CONNECTION_FLAGS.contains(&a.get_id().as_str()))
        .map(|a| a.clone().hide(true))
        .collect();
    cmd.mut_subcommand("passwd", |p| with_hidden(p, &hidden))
}

fn with_hidden(cmd: clap::Command, hidden: &[Arg]) -> clap::Command {
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    let mut cmd = cmd.args(hidden.iter().cloned());
    for name in names {
        cmd = cmd.mut_subcommand(name, |c| with_hidden(c, hidden));
    }
    cmd
}
