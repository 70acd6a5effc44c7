//! Retained messages in the running broker: a retained publish kept under
//! `limits.max_retained_messages` / `limits.max_retained_bytes`, stored
//! ones put back at start-up under the same limits, and expired ones
//! (MQTT 5.0 Message Expiry Interval) purged from memory and the store.
//!
//! A retained publish the limits refuse is still delivered to current
//! subscribers and acknowledged as usual, for MQTT 5.0 too: a PUBACK or
//! PUBREC reason code of 0x80 or more (0x97 "quota exceeded" included)
//! says the message was not accepted (MQTT 5.0 sections 2.4 and
//! 3.4.2.1), which
//! would be untrue of a message that was published, and invites a retry
//! that subscribers would receive twice. EMQX's
//! `retainer.max_retained_messages` does the same; Mosquitto has no
//! bound. The refusal is counted and logged (rate-limited).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::context::Context;
use crate::log_limit::LogLimit;
use crate::message::Message;
use crate::router::{RetainedLimit, RouterError};

/// How often expired retained messages are looked for.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(1);
/// Retained messages purged per tick at most, so that a mass expiry
/// holds the retained store's lock (and the store's writer) briefly each
/// time; the rest wait a tick, hidden from subscribers meanwhile (see
/// [`crate::router::RetainedStore::matching`]).
pub const PURGE_BATCH: usize = 1_000;

static REFUSED_LOG: LogLimit = LogLimit::new(Duration::from_secs(10));

/// Keeps `msg` (a retained publish) as its topic's retained message, or
/// clears the topic for an empty payload [MQTT-3.3.1-10], in memory and
/// in the store.
pub fn apply(ctx: &Context, msg: &Arc<Message>) {
    // The payload is the message's own copy (see
    // `Message::from_publish`), so keeping it holds no read buffer.
    let kept = (!msg.payload.is_empty()).then(|| msg.clone());
    let mut set = ctx.retained.set(&msg.topic, kept.clone());
    // Expired messages not purged yet must not take a live one's room:
    // purge them now (a bounded batch, its store write on this task: only
    // when the bound is reached and something expired) and try once more.
    if matches!(set, Err(RouterError::RetainedFull { .. }))
        && purge_expired(ctx, Instant::now()) > 0
    {
        set = ctx.retained.set(&msg.topic, kept);
    }
    match set {
        Ok(_) => {
            let kept = (!msg.payload.is_empty()).then_some(&**msg);
            ctx.store.set_retained(msg.topic.as_str(), kept);
        }
        Err(RouterError::RetainedFull { topic, limit }) => {
            let r = &ctx.metrics.retained;
            match limit {
                RetainedLimit::Messages => r.refused_messages.inc(),
                RetainedLimit::Bytes => r.refused_bytes.inc(),
            }
            // The topic may hold an older message on disk that a lowered
            // limit left unloaded (see `restore`): this newer one
            // supersedes it, so it must not come back at a later start.
            if ctx.metrics.retained.not_restored.get() > 0 {
                ctx.store.set_retained(topic.as_str(), None);
            }
            if let Some(suppressed) = REFUSED_LOG.check() {
                tracing::warn!(%topic, limit = %format_args!("limits.max_retained_{}", limit.as_str()), suppressed, "retained message not kept: limit reached (still delivered)");
            }
        }
        Err(e) => tracing::info!(topic = %msg.topic, error = %e, "retained message not stored"),
    }
}

/// Puts back the retained messages the store held. Those beyond a limit
/// (lowered since they were stored) stay on disk, neither loaded nor
/// deleted: they are counted and logged, and come back at a later start
/// once the limit allows (unless a newer retained publish to the topic,
/// refused, superseded them: see [`apply`]). Which ones load is the store's key order
/// (topics in byte order), not their age.
pub fn restore(ctx: &Context, msgs: Vec<Arc<Message>>) {
    let mut left = 0u64;
    for msg in msgs {
        let topic = msg.topic.clone();
        match ctx.retained.set(&topic, Some(msg)) {
            Ok(_) => {}
            Err(RouterError::RetainedFull { .. }) => left += 1,
            Err(e) => tracing::warn!(%topic, error = %e, "stored retained message not restored"),
        }
    }
    if left > 0 {
        ctx.metrics.retained.not_restored.add(left);
        tracing::warn!(
            not_restored = left,
            max_messages = ctx.config.limits.max_retained_messages,
            max_bytes = ctx.config.limits.max_retained_bytes,
            "stored retained messages beyond limits.max_retained_* left on disk, not loaded"
        );
    }
}

/// Removes the expired retained messages (at most [`PURGE_BATCH`]) from
/// memory and from the store, in one write; returns how many.
pub fn purge_expired(ctx: &Context, now: Instant) -> usize {
    let n = ctx.retained.purge_expired(now, PURGE_BATCH, |topics| {
        ctx.store.clear_retained(topics.iter().map(|t| t.as_str()));
    });
    ctx.metrics.retained.expired.add(n as u64);
    n
}

/// Purges expired retained messages every [`PURGE_INTERVAL`] until the
/// task is dropped (the broker stops).
pub async fn sweep(ctx: Arc<Context>) {
    let mut tick = tokio::time::interval(PURGE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !ctx.retained.any_expired(Instant::now()) {
            continue;
        }
        // The store's write may touch the disk: not on a runtime thread
        // that serves connections.
        let ctx = ctx.clone();
        let _ = tokio::task::spawn_blocking(move || purge_expired(&ctx, Instant::now())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Auth;
    use crate::codec::{Properties, Publish};
    use crate::config::Config;
    use crate::store::Store;
    use crate::types::{ClientId, QoS, TopicName};

    fn context(max_messages: usize) -> Arc<Context> {
        let mut config = Config::default();
        config.limits.max_retained_messages = max_messages;
        let auth = Arc::new(Auth::new(&config.auth).expect("default auth"));
        Context::new(Arc::new(config), auth, Store::memory())
    }

    fn retained(topic: &str, expiry_secs: Option<u32>) -> Arc<Message> {
        let p = Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: true,
            topic: TopicName::new(topic).expect("topic"),
            packet_id: None,
            payload: bytes::Bytes::from_static(b"x"),
            properties: Properties {
                message_expiry_interval: expiry_secs,
                ..Properties::default()
            },
        };
        Message::from_publish(p, &ClientId::new("p"))
    }

    /// A full store whose messages have expired (and wait for the sweep)
    /// takes a new topic: the expired ones are purged first.
    #[test]
    fn expired_messages_make_room_at_once() {
        let ctx = context(1);
        let mut old = retained("old", Some(1));
        let aged = Arc::make_mut(&mut old);
        aged.received_at -= Duration::from_secs(2);
        ctx.retained
            .set(&old.topic, Some(old.clone()))
            .expect("room");
        apply(&ctx, &retained("new", None));
        assert_eq!(ctx.retained.len(), 1);
        let r = &ctx.metrics.retained;
        assert_eq!((r.expired.get(), r.refused_messages.get()), (1, 0));

        // Without anything expired, the bound holds.
        apply(&ctx, &retained("newer", None));
        assert_eq!(r.refused_messages.get(), 1);
        assert_eq!(ctx.retained.len(), 1);
    }
}
