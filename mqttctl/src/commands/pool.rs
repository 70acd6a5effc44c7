//! `mqttctl pool show|resize N`: the session-manager pool.

use clap::Subcommand;
use mqttd_api::{PoolInfo, ResizeRequest};

use crate::client::Client;
use crate::error::CtlError;
use crate::output::{emit, json, table, Format};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the workers, their queue depth and completed operations.
    Show,
    /// Change the number of workers (1 to 1024) while the broker runs.
    ///
    /// Requests in flight finish on the old workers; no session is lost.
    Resize {
        /// New number of workers.
        size: usize,
    },
}

pub async fn run(client: &Client, cmd: Command, format: Format) -> Result<(), CtlError> {
    let pool: PoolInfo = match cmd {
        Command::Show => client.get(&["pool"], &()).await?,
        Command::Resize { size } => {
            client
                .post(&["pool", "resize"], &ResizeRequest { size })
                .await?
        }
    };
    emit(&match format {
        Format::Json => json(&pool),
        Format::Table => render(&pool),
    });
    Ok(())
}

fn render(pool: &PoolInfo) -> String {
    let rows = pool
        .workers
        .iter()
        .map(|w| {
            let ops = w.operations;
            vec![
                w.index.to_string(),
                w.queue_depth.to_string(),
                ops.created.to_string(),
                ops.resumed.to_string(),
                ops.destroyed.to_string(),
            ]
        })
        .collect();
    let header = ["WORKER", "QUEUE", "CREATED", "RESUMED", "DESTROYED"];
    format!(
        "pool size: {}\n\n{}",
        pool.size,
        table(&header, rows, &[0, 1, 2, 3, 4])
    )
}
