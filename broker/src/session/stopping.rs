//! Closing every session's connection when the broker stops, wills first.
//!
//! As Mosquitto does, a broker that stops delivers the wills of the
//! clients it disconnects to the subscribers still connected: stopping is
//! an unclean close for every client. Closing all connections at once
//! would route the wills to subscribers whose connections are already
//! gone, so [`close_all`] works in two steps over the session table:
//!
//! 1. every session publishes its will now ([`SessionMsg::PublishWillNow`]),
//!    a delayed one included (the session ends with the broker, and a
//!    session that ends publishes its will [MQTT-3.1.3-9]); once all have
//!    answered, each will sits in the delivery mailbox of every session
//!    subscribed to it;
//! 2. every session hands its connection what the router delivered to it,
//!    then the close ([`SessionMsg::CloseForShutdown`]): the connection
//!    writes the wills before its DISCONNECT.
//!
//! The caller bounds the whole in time.

use futures::future::join_all;
use tokio::sync::oneshot;

use super::SessionMsg;
use crate::context::Context;

/// Closes every connection at once, whatever it is doing (shutdown, once
/// the grace for closing by themselves is over): each session ends.
pub fn force_close_all(ctx: &Context) {
    ctx.table.for_each(|e| {
        let _ =
            e.tx.send(SessionMsg::Shutdown(super::CloseReason::ServerShutdown));
    });
}

/// Publishes every session's will, then closes every connection behind
/// what was delivered to it. Returns the number of sessions.
pub async fn close_all(ctx: &Context) -> usize {
    let entries = ctx.table.all();
    let ask = |msg: fn(oneshot::Sender<()>) -> SessionMsg| {
        let waits: Vec<_> = entries
            .iter()
            .filter_map(|e| {
                let (tx, rx) = oneshot::channel();
                e.tx.send(msg(tx)).ok().map(|()| rx)
            })
            .collect();
        join_all(waits)
    };
    ask(SessionMsg::PublishWillNow).await;
    ask(SessionMsg::CloseForShutdown).await;
    entries.len()
}
