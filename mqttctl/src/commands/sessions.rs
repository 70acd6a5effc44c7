//! `mqttctl sessions list|show|destroy`.

use std::io::IsTerminal;

use clap::Subcommand;
use mqttd_api::{SessionDetail, SessionPage, SessionQuery, SessionSummary, MAX_PAGE_LIMIT};
use serde::Serialize;

use crate::client::Client;
use crate::error::CtlError;
use crate::output::{age, emit, fields, json, now_secs, or_dash, table, utc, Format};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List sessions ordered by client id, one page at a time.
    List(ListArgs),
    /// Show one session with its subscriptions.
    Show {
        /// Client id of the session.
        client_id: String,
    },
    /// Destroy sessions, disconnecting their clients; each result is
    /// reported, and the exit status is 1 if any failed.
    Destroy {
        /// Client ids of the sessions.
        #[arg(required = true)]
        client_ids: Vec<String>,
    },
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only sessions with a connected client.
    #[arg(long, conflicts_with = "disconnected")]
    pub connected: bool,
    /// Only sessions without a connected client.
    #[arg(long)]
    pub disconnected: bool,
    /// Only client ids starting with this prefix.
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<String>,
    /// Only sessions of this username.
    #[arg(long, value_name = "USER")]
    pub username: Option<String>,
    /// Sessions per page, 1 to 1000 (default 100; 1000 with --all).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub limit: Option<u16>,
    /// Start after this cursor (printed at the end of the previous page).
    #[arg(long, value_name = "CURSOR")]
    pub cursor: Option<String>,
    /// Fetch every page (progress on stderr).
    #[arg(long)]
    pub all: bool,
}

pub async fn run(client: &Client, cmd: Command, format: Format) -> Result<(), CtlError> {
    match cmd {
        Command::List(args) => list(client, &args, format).await,
        Command::Show { client_id } => show(client, &client_id, format).await,
        Command::Destroy { client_ids } => destroy(client, &client_ids, format).await,
    }
}

fn query(args: &ListArgs) -> SessionQuery {
    let connected = match (args.connected, args.disconnected) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    };
    let default_limit = args.all.then_some(MAX_PAGE_LIMIT);
    SessionQuery {
        connected,
        prefix: args.prefix.clone(),
        username: args.username.clone(),
        limit: args.limit.map(usize::from).or(default_limit),
        cursor: args.cursor.clone(),
    }
}

async fn list(client: &Client, args: &ListArgs, format: Format) -> Result<(), CtlError> {
    let mut q = query(args);
    let mut page: SessionPage = client.get(&["sessions"], &q).await?;
    if args.all {
        let progress = Progress::new();
        while let Some(cursor) = page.next_cursor.take() {
            progress.show(page.sessions.len(), page.total);
            if q.cursor.as_ref() == Some(&cursor) {
                return Err(CtlError::Failed(format!(
                    "mqttd returned the same cursor {cursor:?} twice; stopping"
                )));
            }
            q.cursor = Some(cursor);
            let next: SessionPage = client.get(&["sessions"], &q).await?;
            page.sessions.extend(next.sessions);
            page.total = next.total;
            page.next_cursor = next.next_cursor;
        }
        progress.done(page.sessions.len());
    }
    match format {
        Format::Json => emit(&json(&page)),
        Format::Table if page.sessions.is_empty() => eprintln!("no sessions match"),
        Format::Table => {
            emit(&render_list(&page.sessions, now_secs()));
            if let Some(cursor) = &page.next_cursor {
                eprintln!(
                    "{} of {} sessions shown; next page: --cursor {} (or --all)",
                    page.sessions.len(),
                    page.total,
                    shell_quote(cursor)
                );
            }
        }
    }
    Ok(())
}

/// `s` as one shell word, quoted only when needed (cursors are client ids,
/// which may hold spaces or quotes).
fn shell_quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:@%+=,".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Progress of `list --all` on stderr: one updated line on a terminal, a
/// line per page otherwise.
struct Progress {
    tty: bool,
}

impl Progress {
    fn new() -> Self {
        Progress {
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn show(&self, fetched: usize, total: usize) {
        if self.tty {
            eprint!("\rfetched {fetched} of {total} sessions");
        } else {
            eprintln!("fetched {fetched} of {total} sessions");
        }
    }

    fn done(&self, fetched: usize) {
        if self.tty {
            eprintln!("\rfetched {fetched} sessions{:20}", "");
        }
    }
}

fn render_list(sessions: &[SessionSummary], now: u64) -> String {
    let rows = sessions
        .iter()
        .map(|s| {
            vec![
                s.client_id.clone(),
                state(s).into(),
                s.protocol.clone(),
                or_dash(s.username.as_deref()),
                or_dash(s.peer.as_deref()),
                s.subscriptions.to_string(),
                s.inflight.to_string(),
                s.queued.to_string(),
                age(s.created_at, now),
                or_dash(s.disconnected_at.map(|at| age(at, now))),
            ]
        })
        .collect();
    let header = [
        "CLIENT ID",
        "STATE",
        "PROTO",
        "USERNAME",
        "PEER",
        "SUBS",
        "INFLIGHT",
        "QUEUED",
        "AGE",
        "OFFLINE FOR",
    ];
    table(&header, rows, &[5, 6, 7])
}

fn state(s: &SessionSummary) -> &'static str {
    if s.connected {
        "connected"
    } else {
        "disconnected"
    }
}

async fn show(client: &Client, client_id: &str, format: Format) -> Result<(), CtlError> {
    let detail: SessionDetail = client
        .get(&["sessions", client_id], &())
        .await
        .map_err(|e| not_found_as_session(e, client_id))?;
    emit(&match format {
        Format::Json => json(&detail),
        Format::Table => render_detail(&detail, now_secs()),
    });
    Ok(())
}

fn render_detail(d: &SessionDetail, now: u64) -> String {
    let s = &d.summary;
    let when = |at: u64| format!("{} ({} ago)", utc(at), age(at, now));
    let mut out = fields(&[
        ("client id", s.client_id.clone()),
        ("state", state(s).into()),
        ("persistent", if s.persistent { "yes" } else { "no" }.into()),
        ("protocol", s.protocol.clone()),
        ("username", or_dash(s.username.as_deref())),
        ("peer", or_dash(s.peer.as_deref())),
        ("listener", or_dash(d.listener.as_deref())),
        ("keepalive", format!("{}s", d.keepalive_secs)),
        ("connected at", or_dash(s.connected_at.map(when))),
        ("disconnected at", or_dash(s.disconnected_at.map(when))),
        ("created at", when(s.created_at)),
        (
            "expiry interval",
            or_dash(s.expiry_interval_secs.map(|e| format!("{e}s"))),
        ),
        ("inflight", s.inflight.to_string()),
        ("queued", s.queued.to_string()),
        ("subscriptions", s.subscriptions.to_string()),
    ]);
    if !d.subscription_list.is_empty() {
        let rows = d
            .subscription_list
            .iter()
            .map(|sub| vec![sub.filter.clone(), sub.qos.to_string()])
            .collect();
        out.push('\n');
        out.push_str(&table(&["FILTER", "QOS"], rows, &[1]));
    }
    out
}

/// One line of `destroy -o json`.
#[derive(Debug, Serialize)]
struct DestroyOutcome<'a> {
    client_id: &'a str,
    destroyed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

async fn destroy(client: &Client, client_ids: &[String], format: Format) -> Result<(), CtlError> {
    let mut outcomes = Vec::with_capacity(client_ids.len());
    let mut last_error = None;
    for id in client_ids {
        let error = match client.delete(&["sessions", id]).await {
            Ok(()) => None,
            // No point trying the others if the broker is gone.
            Err(e @ CtlError::Unreachable(_)) => return Err(e),
            Err(e) => Some(not_found_as_session(e, id)),
        };
        let message = error.as_ref().map(ToString::to_string);
        if format == Format::Table {
            match &message {
                None => emit(&format!("destroyed session {id:?}\n")),
                // A lone failure is reported by main, as the command's error.
                Some(m) if client_ids.len() > 1 => eprintln!("error: {m}"),
                Some(_) => {}
            }
        }
        outcomes.push(DestroyOutcome {
            client_id: id,
            destroyed: error.is_none(),
            error: message,
        });
        last_error = error.or(last_error);
    }
    if format == Format::Json {
        emit(&json(&outcomes));
    }
    let failed = outcomes.iter().filter(|o| !o.destroyed).count();
    match (failed, last_error) {
        (0, _) | (_, None) => Ok(()),
        (1, Some(e)) if client_ids.len() == 1 => Err(e),
        _ => Err(CtlError::Partial {
            failed,
            total: client_ids.len(),
        }),
    }
}

/// A 404 from a session endpoint always means this: say so in our words.
fn not_found_as_session(err: CtlError, client_id: &str) -> CtlError {
    match err {
        CtlError::NotFound(_) => {
            CtlError::NotFound(format!("no session with client id {client_id:?}"))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn cursors_are_quoted_for_the_shell() {
        assert_eq!(shell_quote("dev-2"), "dev-2");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
