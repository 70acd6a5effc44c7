//! `mqttctl completions SHELL`: shell completion scripts.

use clap_complete::Shell;

/// Print a completion script, e.g.
/// `mqttctl completions bash > /etc/bash_completion.d/mqttctl`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Shell to generate for.
    #[arg(value_enum)]
    pub shell: Shell,
}

pub fn run(args: &Args) {
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut crate::cli::command(), "mqttctl", &mut buf);
    crate::output::emit(&String::from_utf8_lossy(&buf));
}
