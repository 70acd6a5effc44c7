//! `mqttctl status`: the broker at a glance.

use mqttd_api::Status;

use crate::client::Client;
use crate::error::CtlError;
use crate::output::{duration, emit, fields, json, table, Format};

/// Show version, uptime, readiness, listeners and counts.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(client: &Client, _args: &Args, format: Format) -> Result<(), CtlError> {
    let status: Status = client.get(&["status"], &()).await?;
    emit(&match format {
        Format::Json => json(&status),
        Format::Table => render(&status),
    });
    Ok(())
}

fn render(s: &Status) -> String {
    let mut out = fields(&[
        ("version", s.version.clone()),
        ("uptime", duration(s.uptime_secs)),
        ("ready", if s.ready { "yes" } else { "no" }.into()),
        ("connections", s.connections.to_string()),
        ("sessions", s.sessions.to_string()),
        ("subscriptions", s.subscriptions.to_string()),
        ("retained", s.retained_messages.to_string()),
        ("pool size", s.pool_size.to_string()),
    ]);
    if !s.listeners.is_empty() {
        let rows = s
            .listeners
            .iter()
            .map(|l| vec![l.name.clone(), l.kind.clone(), l.bind.clone()])
            .collect();
        out.push('\n');
        out.push_str(&table(&["LISTENER", "KIND", "BIND"], rows, &[]));
    }
    out
}
