//! `mqttctl status`: the broker at a glance.

use mqttd_api::{MemoryInfo, Status, StoreInfo};

use crate::client::Client;
use crate::error::CtlError;
use crate::output::{age, bytes, duration, emit, fields, json, now_secs, table, utc, Format};

/// Show version, uptime, readiness, listeners, counts and the store.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(client: &Client, _args: &Args, format: Format) -> Result<(), CtlError> {
    let status: Status = client.get(&["status"], &()).await?;
    emit(&match format {
        Format::Json => json(&status),
        Format::Table => render(&status, now_secs()),
    });
    Ok(())
}

fn render(s: &Status, now: u64) -> String {
    let mut pairs = vec![
        ("version", s.version.clone()),
        ("uptime", duration(s.uptime_secs)),
        ("ready", if s.ready { "yes" } else { "no" }.into()),
        ("connections", s.connections.to_string()),
        ("sessions", s.sessions.to_string()),
        ("subscriptions", s.subscriptions.to_string()),
        ("retained", s.retained_messages.to_string()),
        ("pool size", s.pool_size.to_string()),
    ];
    match &s.store {
        Some(store) => pairs.extend(store_fields(store, now)),
        // A broker older than the store does not send the field.
        None => pairs.push(("store", "not reported by this broker".into())),
    }
    if let Some(m) = &s.memory {
        pairs.push(("memory", memory(m)));
    }
    let mut out = fields(&pairs);
    if !s.listeners.is_empty() {
        let rows = s
            .listeners
            .iter()
            .map(|l| vec![l.name.clone(), l.kind.clone(), l.bind.clone()])
            .collect();
        out.push('\n');
        out.push_str(&table(&["LISTENER", "KIND", "BIND"], rows, &[]));
    }
    if let Some(store) = s.store.as_ref().filter(|st| !st.recoveries.is_empty()) {
        let rows = store
            .recoveries
            .iter()
            .map(|r| vec![utc(r.at), r.path.clone(), r.reason.clone()])
            .collect();
        out.push('\n');
        out.push_str(&table(&["RECOVERED AT", "MOVED TO", "REASON"], rows, &[]));
    }
    out
}

/// The message copies held against the budget (`limits.max_memory_bytes`).
fn memory(m: &MemoryInfo) -> String {
    let held = bytes(m.accounted_bytes);
    let peak = bytes(m.peak_bytes);
    if m.budget_bytes == 0 {
        format!("{held} held by messages (no budget; peak {peak})")
    } else {
        let budget = bytes(m.budget_bytes);
        format!("{held} of {budget} budget held by messages (peak {peak})")
    }
}

/// The store's lines: the same keys whatever the mode, `-` where a
/// figure does not apply, so that scripts grepping them need no cases.
fn store_fields(st: &StoreInfo, now: u64) -> Vec<(&'static str, String)> {
    let on_disk = st.path.is_some();
    let durability = if on_disk {
        st.durability.clone()
    } else {
        format!("{} (nothing is kept across a restart)", st.durability)
    };
    let last_fsync = match st.last_fsync_at {
        Some(at) => format!("{} ({} ago)", utc(at), age(at, now)),
        None if on_disk => "not since start".into(),
        None => "-".into(),
    };
    let recoveries = match st.recoveries.len() {
        0 => "none".to_string(),
        n => format!("{n} (moved aside at start-up, see below)"),
    };
    vec![
        ("store", st.engine.clone()),
        ("durability", durability),
        ("data dir", st.path.clone().unwrap_or_else(|| "-".into())),
        (
            "disk",
            if on_disk {
                bytes(st.disk_bytes)
            } else {
                "-".into()
            },
        ),
        ("last fsync", last_fsync),
        ("recoveries", recoveries),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqttd_api::StoreRecovery;

    fn status(store: Option<StoreInfo>) -> Status {
        Status {
            version: "0.1.0".into(),
            uptime_secs: 42,
            ready: true,
            listeners: vec![],
            connections: 1,
            sessions: 2,
            subscriptions: 3,
            retained_messages: 4,
            pool_size: 2,
            store,
            memory: Some(MemoryInfo {
                budget_bytes: 2 << 20,
                accounted_bytes: 1 << 20,
                peak_bytes: 3 << 19,
            }),
        }
    }

    fn disk_store() -> StoreInfo {
        StoreInfo {
            engine: "fjall 3".into(),
            path: Some("/var/lib/mqttd".into()),
            durability: "batched".into(),
            disk_bytes: 1_572_864,
            last_fsync_at: Some(1_000),
            recoveries: vec![],
        }
    }

    #[test]
    fn store_on_disk() {
        let out = render(&status(Some(disk_store())), 1_090);
        for line in [
            "store:         fjall 3\n",
            "durability:    batched\n",
            "data dir:      /var/lib/mqttd\n",
            "disk:          1.5 MiB\n",
            "last fsync:    1970-01-01T00:16:40Z (1m ago)\n",
            "recoveries:    none\n",
            "memory:        1.0 MiB of 2.0 MiB budget held by messages (peak 1.5 MiB)\n",
        ] {
            assert!(out.contains(line), "{line:?} in\n{out}");
        }
        assert!(!out.contains("RECOVERED AT"), "{out}");
    }

    #[test]
    fn memory_store() {
        let st = StoreInfo {
            engine: "none".into(),
            path: None,
            durability: "memory".into(),
            disk_bytes: 0,
            last_fsync_at: None,
            recoveries: vec![],
        };
        let out = render(&status(Some(st)), 1_090);
        for line in [
            "store:         none\n",
            "durability:    memory (nothing is kept across a restart)\n",
            "data dir:      -\n",
            "disk:          -\n",
            "last fsync:    -\n",
            "recoveries:    none\n",
        ] {
            assert!(out.contains(line), "{line:?} in\n{out}");
        }
    }

    #[test]
    fn recoveries_are_listed() {
        let mut st = disk_store();
        st.last_fsync_at = None;
        st.recoveries.push(StoreRecovery {
            at: 0,
            path: "/var/lib/mqttd/quarantine/19700101T000000Z-000/store".into(),
            reason: "checksum mismatch".into(),
        });
        let out = render(&status(Some(st)), 1_090);
        assert!(out.contains("last fsync:    not since start\n"), "{out}");
        assert!(
            out.contains("recoveries:    1 (moved aside at start-up, see below)\n"),
            "{out}"
        );
        assert!(
            out.contains(
                "RECOVERED AT          MOVED TO                                              REASON\n\
                 1970-01-01T00:00:00Z  /var/lib/mqttd/quarantine/19700101T000000Z-000/store  checksum mismatch\n"
            ),
            "{out}"
        );
    }

    #[test]
    fn older_broker_without_store() {
        let out = render(&status(None), 0);
        assert!(
            out.contains("store:         not reported by this broker\n"),
            "{out}"
        );
    }
}
