//! `mqttctl`: the command-line client of mqttd's control API.
//!
//! # Layout
//!
//! - [`cli`]: global flags and the command tree (clap derive);
//! - [`commands`]: one file per noun (`status`, `sessions`, `pool`,
//!   `completions`), each an `Args` type and a thin `run`;
//! - [`client`]: HTTP over the control socket (or TCP with a token);
//! - [`socket_owner`]: who must own the control socket for mqttctl to use it;
//! - [`error`]: failures as sentences a person can act on, and exit codes;
//! - [`output`]: tables for people, JSON for scripts.

use std::process::ExitCode;

use clap::FromArgMatches;

mod cli;
mod client;
mod commands;
mod error;
mod output;
mod socket_owner;

fn main() -> ExitCode {
    // clap prints usage errors itself and exits with 2.
    let cli = match cli::Cli::from_arg_matches(&cli::command().get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(error::EXIT_FAILED);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
