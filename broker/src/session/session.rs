//! The session: one per client id, alive independently of the TCP
//! connection (emqttd's `emqttd_session`), as a value with one owner at a
//! time.
//!
//! It owns the subscriptions, the incoming QoS 2 ids, the outgoing window
//! and queue, the will, and its two mailboxes: control messages (from the
//! manager, the control API, shutdown) and deliveries (from the router).
//! While a client is connected, the connection's task owns it and calls
//! it directly for every packet; the session answers by putting packets
//! in its outbox, which the connection writes. Without a connection, a
//! [`super::holder`] owns it. A takeover or resume moves it to the new
//! connection whole ([`SessionMsg::Take`]), mailboxes included, so nothing
//! routed to it meanwhile is lost.
//!
//! It never blocks, and bounds what it keeps itself (window, queue, QoS 0
//! budget). When it ends, for any reason (a panic of its owner included),
//! dropping it removes its router entries (by incarnation) and its table
//! row, and signals [`SessionEntry::ended`].

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::inbox::Inbox;
use super::outgoing::{Outgoing, Pending, RecOutcome};
use super::qos0::{Qos0Budget, Qos0Limit};
use super::table::SessionEntry;
use super::{
    CloseReason, ConnHandle, DeliverTx, Delivery, DetachKind, Outbound, SessionDetail, SessionMsg,
    SubscriptionInfo, NEVER_EXPIRES,
};
use crate::auth::topics::{covers, strip_share};
use crate::auth::ClientCtx;
use crate::budget::{self, Account};
use crate::codec::{
    LastWill, Packet, ProtocolVersion, PubResp, ReasonCode, RetainHandling, SubAck, Subscribe,
    SubscriptionOptions, UnsubAck, Unsubscribe,
};
use crate::context::Context;
use crate::message::Message;
use crate::metrics::DropReason;
use crate::router::SubscribeOutcome;
use crate::store::load::LoadedSession;
use crate::store::record;
use crate::store::{SentStage, SessionRecord, SubscriptionRecord};
use crate::types::{ClientId, PacketId, PacketIdSet, QoS, TopicFilter};

/// Whether the session goes on after a detach or a timer.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// What the owner must do after a control message ([`Session::control`]).
#[derive(Debug)]
pub enum Control {
    /// Handled; nothing changes for the owner.
    Handled,
    /// Hand the session to `reply` (resume or takeover): a connection
    /// closes as taken over first.
    Take(oneshot::Sender<Box<Session>>),
    /// End the session; a connection closes for the reason given.
    End(CloseReason),
    /// The broker stops now: the owner lets the session go with the
    /// process ([`Session::stop`]); its stored state stays for the restart.
    Stop,
    /// The broker is stopping: the connection writes what the session
    /// handed it, then closes (the session goes on offline).
    CloseForShutdown,
    /// The connection `conn_id` outlived its keep alive.
    KeepAliveExpired(u64),
}

/// An event for the session's owner, from its inbox.
pub type Event = super::inbox::Item;

pub struct Session {
    ctx: Arc<Context>,
    /// This incarnation's table row (client id, incarnation, mailbox).
    entry: Arc<SessionEntry>,
    /// Registered with the router for this session's subscriptions.
    deliver_tx: DeliverTx,
    /// Its control messages and deliveries.
    inbox: Inbox,
    /// The connection attached now, if any.
    conn: Option<ConnHandle>,
    protocol: ProtocolVersion,
    /// Its record is in the store (a persistent session on a durable
    /// store): changes are written through, and its end deletes it.
    saved: bool,
    /// Seconds the session outlives a connection (see [`NEVER_EXPIRES`]).
    expiry_secs: u32,
    /// Offline timers and the drop log, which most sessions never use:
    /// one allocation when one does.
    cold: Option<Box<Cold>>,
    subscriptions: HashMap<TopicFilter, SubscriptionOptions>,
    /// Incoming QoS 2 packet ids received (PUBREC sent) and not yet
    /// released [MQTT-4.3.3-2].
    incoming_qos2: PacketIdSet,
    out: Outgoing,
    /// Packets for the connection, not yet written.
    outbox: VecDeque<Outbound>,
    /// The QoS 0 PUBLISH packets in `outbox`.
    qos0: Qos0Budget,
    /// Retained messages matched by a SUBSCRIBE and not yet handed to the
    /// connection: fed as the connection drains (see [`Session::feed_replay`]).
    /// Boxed: most sessions never have one, and every session carries
    /// the field (8 bytes instead of a `VecDeque`'s 32).
    #[allow(clippy::box_collection)]
    replay: Option<Box<VecDeque<Pending>>>,
    will: Option<Box<LastWill>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("client_id", &self.entry.client_id)
            .field("incarnation", &self.entry.uid)
            .finish_non_exhaustive()
    }
}

const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The parts of a session most never use.
#[derive(Debug, Default)]
struct Cold {
    /// When an offline session expires.
    expire_at: Option<Instant>,
    /// When a delayed will (MQTT 5.0 will delay interval) is due.
    will_due: Option<Instant>,
    /// When a full queue was last logged, and drops since then: a queue
    /// that stays full logs one line per [`DROP_LOG_INTERVAL`].
    drop_logged_at: Option<Instant>,
    dropped_unlogged: u64,
}

impl Session {
    /// A new session for `client_id`, without a connection yet, and its
    /// table row (not yet in the table: the manager inserts it, then
    /// attaches the connection).
    pub(crate) fn create(
        ctx: &Arc<Context>,
        client_id: ClientId,
    ) -> (Box<Session>, Arc<SessionEntry>) {
        let account = Account::new(ctx.budget.clone());
        let (tx, deliver_tx, inbox) = super::inbox::inbox(ctx.metrics.backlog.clone(), account);
        let entry = Arc::new(SessionEntry::new(
            ctx.next_id(),
            client_id,
            tx,
            SystemTime::now(),
        ));
        let cfg = &ctx.config.mqtt;
        let mut out = Outgoing::new(
            usize::from(cfg.max_inflight_messages),
            cfg.max_queued_messages,
            cfg.max_queued_bytes,
        );
        out.charge_places_to(deliver_tx.account().clone());
        let session = Box::new(Session {
            protocol: ProtocolVersion::V311,
            saved: false,
            ctx: ctx.clone(),
            entry: entry.clone(),
            deliver_tx,
            inbox,
            conn: None,
            expiry_secs: 0,
            cold: None,
            subscriptions: HashMap::new(),
            incoming_qos2: PacketIdSet::default(),
            out,
            outbox: VecDeque::new(),
            qos0: Qos0Budget::default(),
            replay: None,
            will: None,
        });
        (session, entry)
    }

    /// A persistent session read back from the store, offline, with its
    /// subscriptions back in the router, and its table row (not yet in
    /// the table). A session that was connected when the broker stopped
    /// lost its connection uncleanly then: its will is due as for any
    /// unclean close, counted from now.
    pub(crate) fn restore(
        ctx: &Arc<Context>,
        loaded: LoadedSession,
        life_start: u64,
    ) -> (Box<Session>, Arc<SessionEntry>) {
        let (mut session, entry) = Session::create(ctx, ClientId::new(loaded.client_id.as_str()));
        let rec = loaded.record;
        session.protocol = rec.protocol;
        // A session stored with a longer expiry (the cap lowered since, or
        // a 3.1.1 session stored as "never" by an older mqttd) gets the
        // cap, counted from when its connection went: it may expire at once.
        session.set_expiry(rec.expiry_secs);
        session.saved = true;
        session.deliver_tx.set_stored(true);
        let now = Instant::now();
        let wall_now = record::now_ms();
        let at = |ms: u64| now + Duration::from_millis(ms.saturating_sub(wall_now));
        if let Some(ms) = rec.disconnected_at_ms {
            entry.shared.restore_disconnected_at(ms / 1000);
        }
        if session.expiry_secs != NEVER_EXPIRES {
            let gone = rec.disconnected_at_ms.unwrap_or(wall_now);
            let ends = gone + u64::from(session.expiry_secs) * 1000;
            session.cold().expire_at = Some(at(ends));
        }
        session.will = rec.will.map(Box::new);
        let delay = session
            .will
            .as_ref()
            .map(|w| w.properties.will_delay_interval.unwrap_or(0));
        match (rec.disconnected_at_ms, rec.will_due_ms, delay) {
            (_, Some(due), Some(_)) => session.cold().will_due = Some(at(due)),
            (None, None, Some(delay)) => {
                session.cold().will_due = Some(now + Duration::from_secs(u64::from(delay)));
            }
            // Offline with no will pending.
            _ => session.will = None,
        }
        for (filter, sub) in loaded.subscriptions {
            let Ok(filter) = TopicFilter::new(&filter) else {
                continue;
            };
            let added = ctx.router.subscribe(
                &entry.client_id,
                entry.uid,
                &filter,
                sub.options,
                sub.subscription_id,
                session.deliver_tx.clone(),
            );
            if added.is_ok() {
                session.subscriptions.insert(filter, sub.options);
            }
        }
        for id in loaded.incoming_qos2 {
            session.incoming_qos2.insert(id);
        }
        for m in loaded.messages {
            let pending = pending_of(m.seq, m.record, session.deliver_tx.account());
            match m.stage {
                SentStage::Published(id) => session.out.restore_inflight(id, pending, false),
                SentStage::Released(id) => session.out.restore_inflight(id, pending, true),
            }
        }
        if let Some((from, left)) = loaded.tail {
            session.out.restore_tail(from, life_start, left);
        }
        if rec.disconnected_at_ms.is_none() {
            // Its expiry (and a delayed will) now count from this start:
            // written down, or every later restart would count afresh and
            // a broker that keeps crashing would keep the session forever.
            session.save_meta();
        }
        session.publish_counters();
        (session, entry)
    }

    pub fn client_id(&self) -> &ClientId {
        &self.entry.client_id
    }

    /// The next control message or delivery; control first, so that a
    /// flood of deliveries cannot hold up a takeover or a shutdown. It
    /// never ends: the session's own row keeps a control sender. Cancel
    /// safe.
    pub async fn next_event(&mut self) -> Event {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// [`Session::next_event`] as a poll, for an owner that waits on
    /// several things in one future.
    pub fn poll_event(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Event> {
        // A delivery taken out is out of transit (see crate::backlog):
        // from here on, this session's own limits bound it.
        self.inbox.poll_next(cx)
    }

    fn cold(&mut self) -> &mut Cold {
        self.cold.get_or_insert_default()
    }

    /// The client was heard from (keep alive).
    pub fn touch(&self) {
        self.entry.shared.keepalive.touch();
    }

    /// The next control message only. Cancel safe.
    pub async fn next_control(&mut self) -> SessionMsg {
        std::future::poll_fn(|cx| self.inbox.poll_control(cx)).await
    }

    /// The next delivery if one is waiting.
    pub fn try_next_delivery(&mut self) -> Option<Delivery> {
        self.inbox.try_delivery()
    }

    /// Takes what the router has delivered so far, without waiting.
    pub fn drain_deliveries(&mut self) {
        while let Some(d) = self.inbox.try_delivery() {
            self.deliver(d);
        }
    }

    /// Handles a control message, as far as the session can; the owner
    /// acts on what is returned.
    pub fn control(&mut self, msg: SessionMsg) -> Control {
        match msg {
            SessionMsg::Take(reply) => return Control::Take(reply),
            SessionMsg::Inspect(reply) => {
                let _ = reply.send(self.detail());
            }
            SessionMsg::Sync(reply) => {
                let _ = reply.send(());
            }
            SessionMsg::Shutdown(CloseReason::ServerShutdown) => return Control::Stop,
            SessionMsg::Shutdown(reason) => return Control::End(reason),
            SessionMsg::Revoke(filters) => self.revoke(filters, "ACL reload"),
            SessionMsg::PublishWillNow(done) => {
                // A delayed will is due now: the session ends with the
                // broker (docs/security.md).
                if self.will.is_some() {
                    tracing::debug!(client_id = %self.client_id(), "publishing will at shutdown");
                }
                self.publish_will_then(Some(done));
            }
            SessionMsg::CloseForShutdown(done) => {
                // What the router handed over before goes out before the
                // close (wills at shutdown).
                self.drain_deliveries();
                let _ = done.send(());
                if self.conn.is_some() {
                    return Control::CloseForShutdown;
                }
            }
            SessionMsg::KeepAliveExpired { conn_id } => {
                if self
                    .conn
                    .as_ref()
                    .is_some_and(|c| c.info.conn_id == conn_id)
                {
                    return Control::KeepAliveExpired(conn_id);
                }
            }
        }
        Control::Handled
    }

    /// The next packet for the connection to write. As the outbox drains,
    /// a retained-message replay is fed into it.
    pub fn next_outbound(&mut self) -> Option<Outbound> {
        if self.outbox.is_empty() && self.replaying() {
            self.feed_replay();
        }
        let out = self.outbox.pop_front()?;
        if let Outbound::Publish(p) = &out {
            if p.qos == QoS::AtMostOnce {
                self.qos0.written(p.msg.payload.len());
            }
        }
        Some(out)
    }

    /// Whether the session is in the store (its incoming QoS 2 ids are
    /// stored too).
    pub fn is_stored(&self) -> bool {
        self.saved
    }

    /// The incoming QoS 2 ids (the connection's PUBLISH and PUBREL).
    pub fn incoming_qos2(&mut self) -> &mut PacketIdSet {
        &mut self.incoming_qos2
    }

    /// The connection discarded the PUBLISH `packet_id` as too large for
    /// the client; it counts as delivered [MQTT-3.1.2-25].
    pub fn discarded(&mut self, packet_id: PacketId) {
        if let Some(p) = self.out.discard(packet_id) {
            self.forget(&p);
        }
        self.fill_window();
    }

    /// Publishes counters for readers outside the owner (control API).
    pub fn publish_counters(&self) {
        let s = &self.entry.shared;
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        s.subscriptions
            .store(count(self.subscriptions.len()), Ordering::Relaxed);
        s.inflight
            .store(count(self.out.inflight_len()), Ordering::Relaxed);
        s.queued
            .store(count(self.out.queued_len()), Ordering::Relaxed);
    }

    /// When the holder must wake: a delayed will or the expiry.
    pub fn next_deadline(&self) -> Option<Instant> {
        let c = self.cold.as_ref()?;
        match (c.will_due, c.expire_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Ends the session: its will is sent now, whatever its delay
    /// [MQTT-3.1.3-9]; dropping it cleans up (see [`Drop`]).
    pub fn end(mut self: Box<Self>) {
        self.publish_will();
        if self.saved {
            self.ctx.store.delete_session(self.entry.client_id.as_str());
        }
        tracing::debug!(client_id = %self.client_id(), "session ended");
    }

    /// The broker stops with the session still going: its will is
    /// published now (an unclean close for its client), and it is let go
    /// without ending, so what the store holds of it comes back at the
    /// next start.
    pub fn stop(mut self: Box<Self>) {
        self.publish_will();
        tracing::debug!(client_id = %self.client_id(), "session stopped with the broker");
    }

    /// Removes `filters` from the subscriptions because authorization no
    /// longer grants them, and drops queued messages that no remaining
    /// subscription matches (in-flight ones were already sent and are
    /// completed as the protocol requires).
    fn revoke(&mut self, filters: Vec<TopicFilter>, why: &'static str) {
        let mut removed = Vec::new();
        for filter in filters {
            if self.subscriptions.remove(&filter).is_some() {
                self.ctx
                    .router
                    .unsubscribe(&self.entry.client_id, self.entry.uid, &filter);
                self.ctx.metrics.subscriptions_revoked.inc();
                tracing::info!(client_id = %self.entry.client_id, %filter, reason = why, "subscription revoked: no longer authorized");
                removed.push(filter);
            }
        }
        if removed.is_empty() {
            return;
        }
        if self.saved {
            let filters = removed.iter().map(|f| f.as_str());
            self.ctx
                .store
                .delete_subscriptions(self.entry.client_id.as_str(), filters);
        }
        let subs = &self.subscriptions;
        let (ctx, entry) = (&self.ctx, &self.entry);
        let account = self.deliver_tx.account();
        let load = |seq| load_stored(ctx, entry, account, seq);
        let dropped = self.out.drop_queued_unless(
            |p| {
                subs.keys()
                    .any(|f| covers(strip_share(f.as_str()), p.msg.topic.as_str()))
            },
            &load,
        );
        for p in dropped {
            self.deliver_tx.set_full(false);
            self.drop_pending(DropReason::Unsubscribed, &p);
        }
    }

    /// Lets go of the current connection because a new one takes the
    /// session over [MQTT-3.1.4-2]; its will is published as for any
    /// unclean close, unless delayed (the session goes on). The owner
    /// closes the connection and hands the session on.
    pub fn take_over(&mut self) {
        if let Some(old) = self.conn.take() {
            tracing::info!(client_id = %self.entry.client_id, peer = %old.info.peer, "session taken over");
            self.unlink();
            self.ctx.metrics.sessions_taken_over.inc();
            // The session goes on, so a delayed will is not due [MQTT-3.1.3-9].
            let delayed = self
                .will
                .as_ref()
                .is_some_and(|w| w.properties.will_delay_interval.unwrap_or(0) > 0);
            if delayed {
                self.will = None;
            } else {
                self.publish_will();
            }
        }
    }

    /// Attaches a new connection (create, resume, takeover): what the
    /// session must resend goes into the outbox for it.
    /// `revoked`: subscriptions authorization no longer grants this client
    /// (see [`super::reauthorize`]).
    pub fn attach(&mut self, mut conn: ConnHandle, revoked: Vec<TopicFilter>) {
        // Before anything queued is sent to the client.
        self.revoke(revoked, "resume");
        self.protocol = conn.info.protocol;
        // A reconnect in time cancels a delayed will [MQTT-3.1.3-9].
        if let Some(c) = self.cold.as_mut() {
            c.will_due = None;
            c.expire_at = None;
        }
        self.will = conn.will.take();
        self.set_expiry(conn.session_expiry_secs);
        let ours = self.ctx.config.mqtt.max_inflight_messages;
        let window = conn.receive_maximum.map_or(ours, |theirs| theirs.min(ours));
        self.out.set_window(usize::from(window));
        self.entry.shared.set_client(Some(conn.info.clone()));
        self.entry
            .shared
            .keepalive
            .arm(conn.info.conn_id, conn.info.keep_alive_secs);
        self.conn = Some(conn);
        self.deliver_tx.set_online(true);
        self.deliver_tx.set_full(false);
        if self.expiry_secs > 0 {
            self.save_meta();
        } else if self.saved {
            // Resumed as a session that ends with its connection: a crash
            // must not bring it back.
            self.ctx.store.delete_session(self.entry.client_id.as_str());
            self.saved = false;
            self.deliver_tx.set_stored(false);
        }
        // Resent within the new window [MQTT-3.3.4-9]; fill_window sends
        // the rest as acknowledgements come.
        for out in self.out.resume() {
            self.send_out(out);
        }
        self.fill_window();
    }

    /// Sets the expiry interval, capped by `limits.max_session_expiry_secs`
    /// whatever set it (CONNECT, DISCONNECT, the store).
    fn set_expiry(&mut self, secs: u32) {
        let secs = self.ctx.config.limits.granted_session_expiry(secs);
        self.expiry_secs = secs;
        let shared = &self.entry.shared;
        shared.persistent.store(secs > 0, Ordering::Relaxed);
        shared.expiry_interval_secs.store(secs, Ordering::Relaxed);
    }

    /// Writes the session's own fields to the store, if it is persistent
    /// and the store durable; from then on its QoS 1/2 deliveries are
    /// stored before they are sent to it.
    fn save_meta(&mut self) {
        if !self.ctx.store.is_durable() || self.expiry_secs == 0 {
            return;
        }
        let now = Instant::now();
        let wall_now = record::now_ms();
        let wall = |t: Instant| wall_now + t.saturating_duration_since(now).as_millis() as u64;
        let cold = self.cold.as_deref();
        let disconnected_at_ms = self.conn.is_none().then(|| {
            // When the connection went: the expiry counts from there.
            match cold.and_then(|c| c.expire_at) {
                Some(t) => wall(t).saturating_sub(u64::from(self.expiry_secs) * 1000),
                None => wall_now,
            }
        });
        let rec = SessionRecord {
            protocol: self.protocol,
            expiry_secs: self.expiry_secs,
            disconnected_at_ms,
            will: self.will.as_deref().cloned(),
            will_due_ms: cold.and_then(|c| c.will_due).map(wall),
        };
        self.ctx
            .store
            .save_session(self.entry.client_id.as_str(), &rec);
        self.saved = true;
        self.deliver_tx.set_stored(true);
    }

    /// Stops sending to the connection: what it did not write is dropped
    /// (QoS 1/2 messages stay in the window and are resent to the next).
    fn unlink(&mut self) {
        self.conn = None;
        self.entry.shared.keepalive.disarm();
        self.deliver_tx.set_online(false);
        self.entry.shared.set_client(None);
        // QoS 0 messages not yet written are lost with the connection
        // (QoS 1/2 ones stay in the window for the next).
        for out in self.outbox.drain(..) {
            if let Outbound::Publish(p) = out {
                if p.qos == QoS::AtMostOnce {
                    self.ctx
                        .metrics
                        .messages_dropped
                        .inc(DropReason::Disconnected, QoS::AtMostOnce);
                }
            }
        }
        self.qos0 = Qos0Budget::default();
        self.out.keep_stored_on_disk();
    }

    /// The connection is gone, as `ending` says. `Stop`: the session ends
    /// with it (the owner calls [`Session::end`]); otherwise it goes on
    /// offline.
    pub fn detach(&mut self, ending: DetachKind) -> Flow {
        self.unlink();
        let (publish_will, asked) = match ending {
            DetachKind::Disconnect {
                session_expiry_secs,
            } => (false, session_expiry_secs),
            DetachKind::DisconnectWithWill {
                session_expiry_secs,
            } => (true, session_expiry_secs),
            DetachKind::Unclean => (true, None),
        };
        if let Some(secs) = asked {
            self.set_expiry(secs);
            if self.expiry_secs < secs {
                self.ctx.metrics.session_limits.expiry_capped.inc();
            }
        }
        if self.expiry_secs == 0 {
            if !publish_will {
                // DISCONNECT discards the will [MQTT-3.14.4-3].
                self.will = None;
            }
            return Flow::Stop;
        }
        let now = Instant::now();
        if self.expiry_secs != NEVER_EXPIRES {
            self.cold().expire_at = Some(now + Duration::from_secs(u64::from(self.expiry_secs)));
        }
        if !publish_will {
            self.will = None;
        } else {
            let delay = self
                .will
                .as_ref()
                .and_then(|w| w.properties.will_delay_interval)
                .unwrap_or(0);
            if delay == 0 {
                self.publish_will();
            } else {
                self.cold().will_due = Some(now + Duration::from_secs(u64::from(delay)));
            }
        }
        self.save_meta();
        Flow::Continue
    }

    /// A timer fired: publish a delayed will, or expire the session.
    pub fn on_timer(&mut self) -> Flow {
        let now = Instant::now();
        let due = |t: &Option<Instant>| t.is_some_and(|t| t <= now);
        if self.cold.as_ref().is_some_and(|c| due(&c.will_due)) {
            self.publish_will();
        }
        if self.cold.as_ref().is_some_and(|c| due(&c.expire_at)) {
            tracing::info!(client_id = %self.entry.client_id, "session expired");
            self.ctx.metrics.sessions_expired.inc();
            return Flow::Stop;
        }
        Flow::Continue
    }

    fn send(&mut self, packet: Packet) {
        self.send_out(Outbound::Packet(Box::new(packet)));
    }

    /// Hands `out` to the connection, if one is attached (a QoS 1/2
    /// message that cannot go stays in the window for the next one).
    fn send_out(&mut self, out: Outbound) {
        if self.conn.is_some() {
            self.outbox.push_back(out);
        }
    }

    /// Publishes the will now, if the session holds one.
    pub fn publish_will(&mut self) {
        self.publish_will_then(None);
    }

    /// Publishes the will, if the session holds one and authorization,
    /// asked again now (the ACL may have changed since CONNECT), allows
    /// it; a refused will is dropped, counted and logged. `done` is
    /// answered once the will is routed or refused.
    fn publish_will_then(&mut self, done: Option<oneshot::Sender<()>>) {
        if let Some(c) = self.cold.as_mut() {
            c.will_due = None;
        }
        let Some(will) = self.will.take() else {
            answer(done);
            return;
        };
        if self.saved {
            self.save_meta();
        }
        let msg = Message::from_will(*will, &self.entry.client_id);
        let client = self.client_ctx();
        let ctx = self.ctx.clone();
        match ctx.auth.authorize_publish_now(&client, msg.topic.as_str()) {
            Some(allowed) => {
                route_will(&ctx, &client, msg, allowed);
                answer(done);
            }
            // Only the HTTP hook can answer: ask it without holding up
            // the session.
            None => {
                tokio::spawn(async move {
                    let allowed = ctx
                        .auth
                        .authorize_publish(&client, msg.topic.as_str())
                        .await;
                    route_will(&ctx, &client, msg, allowed);
                    answer(done);
                });
            }
        }
    }

    /// The client as authorization sees it: the session's owner, through
    /// the connection attached now or last.
    fn client_ctx(&self) -> ClientCtx {
        super::reauthorize::client_ctx(
            &self.entry.client_id,
            self.entry.shared.last_client().as_deref(),
        )
    }

    /// PUBACK from the client.
    pub fn on_puback(&mut self, id: PacketId) {
        if let Some(p) = self.out.puback(id) {
            self.forget(&p);
        }
        self.fill_window();
    }

    /// PUBCOMP from the client.
    pub fn on_pubcomp(&mut self, id: PacketId) {
        if let Some(p) = self.out.pubcomp(id) {
            self.forget(&p);
        }
        self.fill_window();
    }

    /// A message is delivered or dropped: its stored copy goes.
    fn forget(&self, p: &Pending) {
        if let Some(seq) = p.seq {
            self.ctx
                .store
                .remove_message(self.entry.client_id.as_str(), seq);
        }
    }

    /// Puts a QoS 1/2 message into the window and hands its PUBLISH to
    /// the connection; a stored one is marked sent with its packet id.
    fn send_window(&mut self, pending: Pending) {
        let seq = pending.seq;
        let publish = self.out.send(pending);
        if let (Some(seq), Some(id)) = (seq, publish.packet_id) {
            let client_id = self.entry.client_id.as_str();
            self.ctx
                .store
                .mark_sent(client_id, seq, SentStage::Published(id));
        }
        self.send_out(Outbound::Publish(publish));
    }

    /// PUBREC from the client.
    pub fn on_pubrec(&mut self, r: PubResp) {
        if r.code.is_error() {
            // MQTT 5.0: a failed PUBREC ends the exchange [MQTT-4.3.3-4].
            self.out.pubrec(r.packet_id);
            if let Some(p) = self.out.pubcomp(r.packet_id) {
                self.forget(&p);
            }
            self.fill_window();
            return;
        }
        let mut resp = PubResp::success(r.packet_id);
        let seq = self.out.seq_of(r.packet_id);
        match self.out.pubrec(r.packet_id) {
            RecOutcome::Unknown if self.protocol.is_v5() => {
                resp.code = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
            }
            RecOutcome::Unknown => {}
            RecOutcome::Release => {
                if let Some(seq) = seq {
                    let client_id = self.entry.client_id.as_str();
                    let stage = SentStage::Released(r.packet_id);
                    self.ctx.store.mark_sent(client_id, seq, stage);
                }
            }
        }
        self.send(Packet::PubRel(resp));
    }

    /// SUBSCRIBE from the client; `denied[i]` marks filters authorization
    /// refused. `Err`: the client broke the protocol and its connection
    /// must close (the session goes on).
    pub fn on_subscribe(&mut self, s: Subscribe, denied: &[bool]) -> Result<(), CloseReason> {
        let sub_id = s.properties.subscription_identifiers.first().copied();
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut retained = Vec::new();
        for (i, (filter, opts)) in s.filters.into_iter().enumerate() {
            if denied.get(i).copied().unwrap_or(false) {
                codes.push(self.refusal(ReasonCode::NOT_AUTHORIZED));
                continue;
            }
            if self.is_denied(&filter) {
                tracing::info!(client_id = %self.entry.client_id, %filter, "subscription refused by deny list");
                codes.push(self.refusal(ReasonCode::NOT_AUTHORIZED));
                continue;
            }
            if let Err(code) = self.within_limits(&filter) {
                codes.push(self.refusal(code));
                continue;
            }
            let outcome = self.ctx.router.subscribe(
                &self.entry.client_id,
                self.entry.uid,
                &filter,
                opts,
                sub_id,
                self.deliver_tx.clone(),
            );
            match outcome {
                Ok(outcome) => {
                    codes.push(ReasonCode(opts.qos as u8));
                    let send_retained = match opts.retain_handling {
                        RetainHandling::SendAtSubscribe => true,
                        RetainHandling::SendIfNew => outcome == SubscribeOutcome::New,
                        RetainHandling::DoNotSend => false,
                    };
                    if send_retained && !filter.as_str().starts_with("$share/") {
                        retained.push((self.ctx.retained.matching(&filter), opts.qos));
                    }
                    if self.saved {
                        let rec = SubscriptionRecord {
                            options: opts,
                            subscription_id: sub_id,
                        };
                        let client_id = self.entry.client_id.as_str();
                        self.ctx
                            .store
                            .save_subscription(client_id, filter.as_str(), &rec);
                    }
                    self.subscriptions.insert(filter, opts);
                }
                Err(e) if e.is_protocol_error() && self.protocol.is_v5() => {
                    // No Local on a shared subscription [MQTT-3.8.3-4].
                    tracing::warn!(client_id = %self.entry.client_id, %filter, error = %e, "protocol error in SUBSCRIBE: closing connection");
                    return Err(CloseReason::ProtocolError);
                }
                Err(e) => {
                    tracing::info!(client_id = %self.entry.client_id, %filter, error = %e, "subscription refused");
                    codes.push(self.refusal(ReasonCode::TOPIC_FILTER_INVALID));
                }
            }
        }
        self.send(Packet::SubAck(SubAck {
            packet_id: s.packet_id,
            codes,
            properties: Default::default(),
        }));
        // Retained messages follow the SUBACK, with RETAIN set
        // [MQTT-3.3.1-8], paced to the connection rather than pushed into
        // the QoS 0 bound or the queue all at once (where a large
        // retained set would be cut). The replay holds at most as many
        // messages as are retained: one whole replay always fits, and a
        // client that subscribes again and again without reading cannot
        // make it grow further (the excess is dropped and counted).
        let queued = self.replay.as_ref().map_or(0, |r| r.len());
        let mut room = self.ctx.retained.len().saturating_sub(queued);
        for (msgs, qos) in retained {
            for msg in msgs {
                let qos = msg.qos.min(qos);
                if room == 0 {
                    self.drop_message(DropReason::ReplayOverflow, qos);
                    continue;
                }
                room -= 1;
                self.replay.get_or_insert_default().push_back(Pending {
                    qos,
                    msg,
                    retain: true,
                    sub_ids: sub_id.into_iter().collect(),
                    seq: None,
                    // The retained store holds the message: a replay
                    // adds only its place, bounded by the retained set.
                    charge: budget::Charge::none(),
                });
            }
        }
        self.feed_replay();
        Ok(())
    }

    /// Hands retained messages of a replay to the connection while it has
    /// room: QoS 0 up to the QoS 0 bounds, QoS 1/2 while the window has
    /// room and nothing is queued. The rest waits for the connection to
    /// write (QoS 0) or for acknowledgements (QoS 1/2).
    fn feed_replay(&mut self) {
        if self.conn.is_none() {
            return;
        }
        let cfg = &self.ctx.config.mqtt;
        let (max_messages, max_bytes) = (cfg.max_pending_qos0_messages, cfg.max_pending_qos0_bytes);
        while let Some(next) = self.replay.as_ref().and_then(|r| r.front()) {
            if next.msg.is_expired() {
                let qos = next.qos;
                self.replay_pop();
                self.drop_message(DropReason::Expired, qos);
                continue;
            }
            let ready = if next.qos == QoS::AtMostOnce {
                self.qos0
                    .fits(next.msg.payload.len(), max_messages, max_bytes)
                    .is_ok()
            } else {
                self.out.has_room() && self.out.queued_len() == 0
            };
            if !ready {
                break;
            }
            let Some(pending) = self.replay_pop() else {
                break;
            };
            if pending.qos == QoS::AtMostOnce {
                self.deliver_qos0(pending);
            } else {
                self.send_window(pending);
            }
        }
    }

    /// Whether retained messages of a SUBSCRIBE wait to be handed out.
    fn replaying(&self) -> bool {
        self.replay.as_ref().is_some_and(|r| !r.is_empty())
    }

    /// The next message of the replay; the replay's memory goes with its
    /// last message.
    fn replay_pop(&mut self) -> Option<Pending> {
        let replay = self.replay.as_mut()?;
        let next = replay.pop_front();
        if replay.is_empty() {
            self.replay = None;
        }
        next
    }

    /// The SUBACK failure code: 0x80 for 3.1.1, `v5` for 5.0.
    fn refusal(&self, v5: ReasonCode) -> ReasonCode {
        if self.protocol.is_v5() {
            v5
        } else {
            ReasonCode::UNSPECIFIED_ERROR
        }
    }

    /// Whether `filter` may be added under the session limits: its length
    /// and levels, and the number of subscriptions (a filter the session
    /// holds is replaced, not added). `Err`: the 5.0 SUBACK code.
    fn within_limits(&self, filter: &TopicFilter) -> Result<(), ReasonCode> {
        let limits = &self.ctx.config.limits;
        let metrics = &self.ctx.metrics.session_limits;
        let client_id = &self.entry.client_id;
        if let Err(hit) = crate::session_limits::check_topic(limits, filter.as_str()) {
            hit.count(metrics);
            // Debug: a client can send thousands; the metric counts each.
            tracing::debug!(%client_id, %filter, limit = hit.key(), "subscription refused: topic filter too long");
            return Err(ReasonCode::TOPIC_FILTER_INVALID);
        }
        let max = limits.max_subscriptions_per_client;
        if self.subscriptions.len() >= max && !self.subscriptions.contains_key(filter) {
            metrics.subscriptions.inc();
            tracing::debug!(%client_id, %filter, max, "subscription refused: limits.max_subscriptions_per_client reached");
            return Err(ReasonCode::QUOTA_EXCEEDED);
        }
        Ok(())
    }

    fn is_denied(&self, filter: &TopicFilter) -> bool {
        self.ctx
            .config
            .mqtt
            .deny_subscribe
            .iter()
            .any(|deny| filter_covers(deny, filter.as_str()))
    }

    /// UNSUBSCRIBE from the client.
    pub fn on_unsubscribe(&mut self, u: Unsubscribe) {
        let mut codes = Vec::with_capacity(u.filters.len());
        for filter in &u.filters {
            let existed = self.subscriptions.remove(filter).is_some();
            if existed && self.saved {
                let client_id = self.entry.client_id.as_str();
                self.ctx
                    .store
                    .delete_subscriptions(client_id, [filter.as_str()]);
            }
            self.ctx
                .router
                .unsubscribe(&self.entry.client_id, self.entry.uid, filter);
            codes.push(if existed {
                ReasonCode::SUCCESS
            } else {
                ReasonCode::NO_SUBSCRIPTION_EXISTED
            });
        }
        if !self.protocol.is_v5() {
            codes.clear();
        }
        self.send(Packet::UnsubAck(UnsubAck {
            packet_id: u.packet_id,
            codes,
            properties: Default::default(),
        }));
    }

    /// Sends or queues a message routed to this session, at the minimum of
    /// the published and granted QoS [MQTT-3.8.4-6]. While QoS 1/2
    /// messages wait behind a full window, QoS 0 ones queue behind them so
    /// that each publisher's messages arrive in order [MQTT-4.6.0-6].
    pub fn deliver(&mut self, d: Delivery) {
        let qos = d.msg.qos.min(d.qos);
        let pending = Pending {
            msg: d.msg,
            qos,
            retain: d.retain,
            sub_ids: d.subscription_ids,
            seq: d.seq,
            charge: d.charge,
        };
        if pending.msg.is_expired() {
            self.drop_pending(DropReason::Expired, &pending);
            return;
        }
        let behind_queue = self.conn.is_some() && self.out.queued_len() > 0;
        if qos == QoS::AtMostOnce && !behind_queue {
            self.deliver_qos0(pending);
        } else if qos != QoS::AtMostOnce && self.conn.is_some() && self.out.has_room() {
            self.send_window(pending);
        } else {
            self.enqueue(pending);
        }
    }

    /// A message that will not be delivered.
    fn drop_message(&self, reason: DropReason, qos: QoS) {
        self.ctx.metrics.messages_dropped.inc(reason, qos);
    }

    /// A message that will not be delivered, and its stored copy.
    fn drop_pending(&self, reason: DropReason, p: &Pending) {
        self.drop_message(reason, p.qos);
        self.forget(p);
    }

    fn enqueue(&mut self, pending: Pending) {
        // Offline, a stored message waits as its place in line only.
        let queued = if self.conn.is_none() {
            self.out.enqueue_stored(pending)
        } else {
            self.out.enqueue(pending)
        };
        match queued {
            Ok(()) => {}
            Err(p) => {
                let reason = if self.out.full_by_bytes() {
                    DropReason::QueueBytes
                } else {
                    // Offline, nothing leaves the queue until a connection
                    // attaches: the router may drop the next ones itself.
                    if self.conn.is_none() {
                        self.deliver_tx.set_full(true);
                    }
                    DropReason::QueueFull
                };
                self.drop_pending(reason, &p);
                let limit = self.ctx.config.mqtt.max_queued_messages;
                let client_id = self.entry.client_id.clone();
                let c = self.cold();
                c.dropped_unlogged += 1;
                let now = Instant::now();
                if c.drop_logged_at
                    .is_none_or(|t| now >= t + DROP_LOG_INTERVAL)
                {
                    tracing::warn!(
                        %client_id,
                        limit,
                        dropped = c.dropped_unlogged,
                        "session queue full: dropping messages"
                    );
                    c.drop_logged_at = Some(now);
                    c.dropped_unlogged = 0;
                }
            }
        }
    }

    /// QoS 0 goes straight to a connected client unless it is too far
    /// behind, in messages or in bytes; offline sessions do not queue QoS 0.
    fn deliver_qos0(&mut self, pending: Pending) {
        let cfg = &self.ctx.config.mqtt;
        if self.conn.is_none() {
            self.drop_message(DropReason::Qos0Offline, QoS::AtMostOnce);
            return;
        }
        let taken = self.qos0.take(
            pending.msg.payload.len(),
            cfg.max_pending_qos0_messages,
            cfg.max_pending_qos0_bytes,
        );
        match taken {
            Ok(()) => {
                let mut publish = pending.to_out(None, false);
                // Charged until the connection has encoded it.
                publish.charge = pending.charge;
                self.send_out(Outbound::Publish(publish));
            }
            Err(limit) => {
                let reason = match limit {
                    Qos0Limit::Bytes => DropReason::Qos0Bytes,
                    Qos0Limit::Messages => DropReason::Qos0Overflow,
                };
                self.drop_message(reason, QoS::AtMostOnce);
            }
        }
    }

    /// Moves queued messages into the window while it has room.
    fn fill_window(&mut self) {
        if self.conn.is_none() {
            return;
        }
        for out in self.out.resend_ready() {
            self.send_out(out);
        }
        loop {
            let (ctx, entry, subs) = (&self.ctx, &self.entry, &self.subscriptions);
            let account = self.deliver_tx.account();
            let client_id = entry.client_id.as_str();
            let next = self.out.next_queued(
                &|seq| {
                    load_stored(ctx, entry, account, seq)
                        .filter(|p| still_wanted(ctx, entry, subs, p))
                },
                &|from, end, max| ctx.store.read_places(client_id, from, end, max),
            );
            let Some(next) = next else {
                break;
            };
            match next {
                Err(expired) => self.drop_pending(DropReason::Expired, &expired),
                Ok(pending) if pending.qos == QoS::AtMostOnce => self.deliver_qos0(pending),
                Ok(pending) => self.send_window(pending),
            }
        }
        if self.replaying() {
            self.feed_replay();
        }
    }

    fn detail(&self) -> SessionDetail {
        let mut subscriptions: Vec<_> = self
            .subscriptions
            .iter()
            .map(|(filter, opts)| SubscriptionInfo {
                filter: filter.clone(),
                options: *opts,
            })
            .collect();
        subscriptions.sort_by(|a, b| a.filter.cmp(&b.filter));
        SessionDetail {
            subscriptions,
            inflight: self.out.inflight_len(),
            queued: self.out.queued_len(),
        }
    }
}

impl Drop for Session {
    /// Runs on every end, a panic of the owner included: the router must
    /// not keep subscriptions pointing at a dead mailbox, and the table
    /// must not keep a row no one serves. Both are removed by incarnation,
    /// so a successor under the same client id keeps its own.
    fn drop(&mut self) {
        let entry = &self.entry;
        self.ctx
            .router
            .unsubscribe_all(&entry.client_id, entry.uid, self.subscriptions.keys());
        self.deliver_tx.set_online(false);
        entry.shared.set_client(None);
        if self
            .ctx
            .table
            .remove_if(entry.client_id.as_str(), entry.uid)
        {
            self.ctx.metrics.sessions.dec();
        }
        entry.ended.cancel();
    }
}

/// A queued message of the session `entry` read back from the store.
fn load_stored(
    ctx: &Context,
    entry: &SessionEntry,
    entry_account: &Arc<Account>,
    seq: u64,
) -> Option<Pending> {
    let record = ctx.store.read_message(entry.client_id.as_str(), seq);
    if record.is_none() {
        ctx.metrics
            .messages_dropped
            .inc(DropReason::StoreMissing, QoS::AtLeastOnce);
    }
    Some(pending_of(seq, record?, entry_account))
}

/// Whether a stored message read back still has a subscription to go by
/// (one may have been removed or revoked since it was queued, and the
/// part of a queue left on disk at start-up was not pruned then); one
/// that has not is dropped and counted.
fn still_wanted(
    ctx: &Context,
    entry: &SessionEntry,
    subs: &HashMap<TopicFilter, SubscriptionOptions>,
    p: &Pending,
) -> bool {
    let topic = p.msg.topic.as_str();
    if subs.keys().any(|f| covers(strip_share(f.as_str()), topic)) {
        return true;
    }
    ctx.metrics
        .messages_dropped
        .inc(DropReason::Unsubscribed, p.qos);
    if let Some(seq) = p.seq {
        ctx.store.remove_message(entry.client_id.as_str(), seq);
    }
    false
}

/// A stored message read back for the session whose share is `account`:
/// charged whatever the budget holds (it is off the disk already, and the
/// window bounds how many are read back; see crate::budget).
fn pending_of(seq: u64, r: crate::store::QueuedRecord, account: &Arc<Account>) -> Pending {
    let charge = account.force(budget::cost(&r.msg));
    Pending {
        msg: r.msg,
        qos: r.qos,
        retain: r.retain,
        sub_ids: r.sub_ids,
        seq: Some(seq),
        charge,
    }
}

/// Routes a will authorization allowed, or drops and counts a refused one.
fn route_will(ctx: &Context, client: &ClientCtx, msg: Arc<Message>, allowed: bool) {
    if allowed {
        tracing::debug!(client_id = %client.client_id, topic = %msg.topic, "publishing will");
        crate::publish::route(ctx, msg, None);
    } else {
        tracing::info!(client_id = %client.client_id, topic = %msg.topic, "will denied by ACL; dropped");
        ctx.metrics.wills_denied.inc();
        ctx.metrics
            .messages_dropped
            .inc(DropReason::AclDenied, msg.qos);
    }
}

fn answer(done: Option<oneshot::Sender<()>>) {
    if let Some(done) = done {
        let _ = done.send(());
    }
}

/// Whether every topic `requested` can match is also matched by `deny`.
fn filter_covers(deny: &str, requested: &str) -> bool {
    let mut req = requested.split('/');
    for d in deny.split('/') {
        match (d, req.next()) {
            ("#", _) => return true,
            (_, None) => return false,
            ("+", Some("#")) => return false,
            ("+", Some(_)) => {}
            (lit, Some(r)) if lit == r => {}
            _ => return false,
        }
    }
    req.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::filter_covers;

    #[test]
    fn deny_list_coverage() {
        assert!(filter_covers("secret/#", "secret/a"));
        assert!(filter_covers("secret/#", "secret/+/b"));
        assert!(filter_covers("secret/#", "secret/#"));
        assert!(filter_covers("secret/#", "secret"));
        assert!(!filter_covers("secret/#", "#"));
        assert!(filter_covers("+/x", "a/x"));
        assert!(!filter_covers("+/x", "#"));
        assert!(!filter_covers("a/b", "a/b/c"));
        assert!(filter_covers("a/b", "a/b"));
    }
}
