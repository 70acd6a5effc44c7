//! Re-checking subscriptions against authorization as it is now.
//!
//! A subscription is authorized when it is made, but what the ACL (or the
//! HTTP hook) allows changes: a reload edits the rules, and a client may
//! resume its session through another listener. So the subscriptions of a
//! session are checked again when it is resumed (by the connect flow,
//! before the session sends anything to the new connection) and, for
//! every live session, after an ACL reload. Refused ones are revoked:
//! removed from the session and the router, logged and counted
//! (`mqttd_subscriptions_revoked_total`).
//!
//! The checks run outside the session's owner, because the HTTP hook answers
//! asynchronously; the session only applies the verdict.

use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::oneshot;

use super::{ClientInfo, SessionEntry, SessionMsg, SessionTx};
use crate::auth::{Auth, ClientCtx};
use crate::context::Context;
use crate::types::{ClientId, TopicFilter};

/// Sessions re-checked at once after a reload: enough to keep a slow HTTP
/// hook from serialising the walk, few enough not to flood it.
const RECHECK_CONCURRENCY: usize = 32;

/// The client as authorization sees it, from the session's client id and
/// its attached (or last) connection; anonymous without one.
pub(crate) fn client_ctx(client_id: &ClientId, info: Option<&ClientInfo>) -> ClientCtx {
    match info {
        Some(i) => ClientCtx::new(client_id.as_str(), i.username.clone(), &i.listener),
        None => ClientCtx::new(client_id.as_str(), None, ""),
    }
}

/// The subscriptions of `session` that `client` may not hold now; empty
/// when the session does not answer (it is ending).
pub async fn denied_subscriptions(
    auth: &Auth,
    client: &ClientCtx,
    session: &SessionTx,
) -> Vec<TopicFilter> {
    if !auth.restricts() {
        return Vec::new();
    }
    let (tx, rx) = oneshot::channel();
    if session.send(SessionMsg::Inspect(tx)).is_err() {
        return Vec::new();
    }
    let Ok(detail) = rx.await else {
        return Vec::new();
    };
    let mut denied = Vec::new();
    for sub in detail.subscriptions {
        if !auth.authorize_subscribe(client, sub.filter.as_str()).await {
            denied.push(sub.filter);
        }
    }
    denied
}

/// Re-checks every live session's subscriptions (after an ACL reload) and
/// revokes the refused ones.
pub async fn recheck_all(ctx: Arc<Context>) {
    if !ctx.auth.restricts() {
        return;
    }
    let entries = ctx.table.all();
    let sessions = entries.len();
    let before = ctx.metrics.subscriptions_revoked.get();
    futures::stream::iter(entries)
        .for_each_concurrent(RECHECK_CONCURRENCY, |entry| {
            let ctx = &ctx;
            async move { recheck(ctx, &entry).await }
        })
        .await;
    tracing::info!(
        sessions,
        revoked = ctx.metrics.subscriptions_revoked.get() - before,
        "subscriptions re-checked against the reloaded ACL"
    );
}

async fn recheck(ctx: &Context, entry: &SessionEntry) {
    let client = client_ctx(&entry.client_id, entry.shared.last_client().as_deref());
    let denied = denied_subscriptions(&ctx.auth, &client, &entry.tx).await;
    if !denied.is_empty() {
        // Wait until it is applied, so the count logged after the walk
        // is complete.
        let _ = entry.tx.send(SessionMsg::Revoke(denied));
        let (tx, rx) = oneshot::channel();
        if entry.tx.send(SessionMsg::Sync(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}
