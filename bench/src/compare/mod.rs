//! `compare`: BENCHMARKS.md from two brokers' JSON results. (stub)

/// Writes the side-by-side report.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: &Args) -> anyhow::Result<()> {
    Ok(())
}
