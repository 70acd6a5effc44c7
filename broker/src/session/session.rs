//! The session task: one per client id, alive independently of the TCP
//! connection (emqttd's `emqttd_session`).
//!
//! It owns the subscriptions, the outgoing window and queue and the will
//! (the incoming QoS 2 ids live in [`SessionShared`], used by the
//! connection that handles PUBLISH). Connections attach to it (create,
//! resume, takeover) and detach from it through its control mailbox; the
//! router delivers messages to its delivery mailbox. It never blocks:
//! everything it sends goes through unbounded mailboxes whose growth it
//! bounds itself (window, queue, QoS 0 backlog).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::outgoing::{Outgoing, Pending, RecOutcome};
use super::qos0::{Qos0Budget, Qos0Limit};
use super::table::SessionShared;
use super::{
    CloseReason, ConnHandle, DeliverTx, Delivery, DetachKind, Outbound, SessionDetail, SessionMsg,
    SessionTx, SubscriptionInfo, NEVER_EXPIRES,
};
use crate::auth::topics::{covers, strip_share};
use crate::auth::ClientCtx;
use crate::backlog;
use crate::codec::{
    LastWill, Packet, ProtocolVersion, PubResp, ReasonCode, RetainHandling, SubAck, Subscribe,
    SubscriptionOptions, UnsubAck, Unsubscribe,
};
use crate::context::Context;
use crate::mailbox::{self, mailbox};
use crate::message::Message;
use crate::router::SubscribeOutcome;
use crate::types::{ClientId, QoS, TopicFilter};

/// Whether the task goes on after a mailbox message.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

pub(crate) struct Session {
    ctx: Arc<Context>,
    client_id: ClientId,
    /// Registered with the router for this session's subscriptions.
    deliver_tx: DeliverTx,
    shared: Arc<SessionShared>,
    conn: Option<ConnHandle>,
    protocol: ProtocolVersion,
    /// Seconds the session outlives a connection (see [`NEVER_EXPIRES`]).
    expiry_secs: u32,
    /// When an offline session expires.
    expire_at: Option<Instant>,
    /// When a delayed will (MQTT 5.0 will delay interval) is due.
    will_due: Option<Instant>,
    subscriptions: HashMap<TopicFilter, SubscriptionOptions>,
    out: Outgoing,
    /// Retained messages matched by a SUBSCRIBE and not yet handed to the
    /// connection: fed as the connection drains (see [`Session::feed_replay`]).
    replay: VecDeque<Pending>,
    will: Option<Box<LastWill>>,
    /// When a full queue was last logged, and drops since then: a queue
    /// that stays full logs one line per [`DROP_LOG_INTERVAL`].
    drop_logged_at: Option<Instant>,
    dropped_unlogged: u64,
}

const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Starts a session task with `conn` attached. Returns its mailbox and
/// the task's join handle (watched by the manager).
pub(crate) fn spawn(
    ctx: Arc<Context>,
    client_id: ClientId,
    shared: Arc<SessionShared>,
    conn: ConnHandle,
) -> (SessionTx, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mailbox();
    let (deliver_tx, deliver_rx) = DeliverTx::channel(ctx.metrics.backlog.clone());
    let cfg = &ctx.config.mqtt;
    let out = Outgoing::new(
        usize::from(cfg.max_inflight_messages),
        cfg.max_queued_messages,
    );
    let mut session = Session {
        protocol: conn.info.protocol,
        ctx,
        client_id,
        deliver_tx,
        shared,
        conn: None,
        expiry_secs: 0,
        expire_at: None,
        will_due: None,
        subscriptions: HashMap::new(),
        out,
        replay: VecDeque::new(),
        will: None,
        drop_logged_at: None,
        dropped_unlogged: 0,
    };
    session.attach(conn);
    // Boxed, so the task's future holds a pointer rather than the state.
    let join = tokio::spawn(Box::new(session).run(rx, deliver_rx));
    (tx, join)
}

impl Session {
    async fn run(
        mut self: Box<Self>,
        mut rx: mailbox::Receiver<SessionMsg>,
        mut deliveries: backlog::Receiver<Delivery>,
    ) {
        loop {
            let timer = match (self.will_due, self.expire_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            // A retained replay waits for the connection to write.
            let replay_budget = match &self.conn {
                Some(conn) if !self.replay.is_empty() => Some(conn.pending_qos0.clone()),
                _ => None,
            };
            // Control first: acknowledgements free window slots and must
            // not wait behind a flood of deliveries.
            let flow = tokio::select! {
                biased;
                msg = rx.recv() => match msg {
                    Some(msg @ SessionMsg::CloseForShutdown(_)) => {
                        // What the router handed over before goes out
                        // before the close (wills at shutdown).
                        while let Some(d) = deliveries.try_recv() {
                            self.deliver(d);
                        }
                        self.handle(msg)
                    }
                    Some(msg) => self.handle(msg),
                    None => Flow::Stop,
                },
                d = deliveries.recv() => {
                    // Out of transit (see crate::backlog): from here on,
                    // this session's own limits bound it.
                    if let Some(d) = d {
                        self.deliver(d);
                    }
                    Flow::Continue
                }
                _ = sleep_until(timer) => self.on_timer(),
                _ = wait_written(replay_budget.as_deref()) => {
                    self.feed_replay();
                    Flow::Continue
                }
            };
            self.publish_counters();
            if flow == Flow::Stop {
                break;
            }
        }
        // Shared subscriptions stop choosing this session; what is still
        // in its delivery mailbox is dropped (and uncounted) with it.
        self.deliver_tx.set_online(false);
        drop(deliveries);
        // The will of a session that ends is sent now, whatever its delay
        // [MQTT-3.1.3-9].
        self.publish_will();
        // Give back connections that tried to attach while we were ending,
        // so the manager can create a new session for them.
        rx.close();
        while let Ok(msg) = rx.try_recv() {
            if let SessionMsg::Attach { conn, reply } = msg {
                let _ = reply.send(Err(conn));
            }
        }
        tracing::debug!(client_id = %self.client_id, "session ended");
    }

    fn handle(&mut self, msg: SessionMsg) -> Flow {
        match msg {
            SessionMsg::Attach { conn, reply } => {
                self.take_over();
                self.attach(*conn);
                let _ = reply.send(Ok(()));
            }
            SessionMsg::Packet { conn_id, packet } => {
                if self.conn.as_ref().is_some_and(|c| c.conn_id == conn_id) {
                    self.on_packet(*packet);
                }
            }
            SessionMsg::Detach { conn_id, ending } => {
                if self.conn.as_ref().is_some_and(|c| c.conn_id == conn_id) {
                    return self.detach(ending);
                }
            }
            SessionMsg::Subscribe {
                conn_id,
                subscribe,
                denied,
            } => {
                if self.conn.as_ref().is_some_and(|c| c.conn_id == conn_id) {
                    self.on_subscribe(*subscribe, &denied);
                }
            }
            SessionMsg::Discarded { conn_id, packet_id } => {
                if self.conn.as_ref().is_some_and(|c| c.conn_id == conn_id) {
                    self.out.discard(packet_id);
                    self.fill_window();
                }
            }
            SessionMsg::Inspect(reply) => {
                let _ = reply.send(self.detail());
            }
            SessionMsg::Sync(reply) => {
                let _ = reply.send(());
            }
            SessionMsg::Shutdown(reason) => {
                if let Some(conn) = self.conn.take() {
                    let _ = conn.tx.send(Outbound::Close(reason));
                    self.publish_will();
                }
                return Flow::Stop;
            }
            SessionMsg::Revoke(filters) => self.revoke(filters, "ACL reload"),
            SessionMsg::PublishWillNow(done) => {
                // A delayed will is due now: the session ends with the
                // broker (docs/security.md).
                if self.will.is_some() {
                    tracing::debug!(client_id = %self.client_id, "publishing will at shutdown");
                }
                self.publish_will_then(Some(done));
            }
            SessionMsg::CloseForShutdown(done) => {
                let mut flow = Flow::Continue;
                if let Some(conn) = &self.conn {
                    let _ = conn.tx.send(Outbound::Close(CloseReason::ServerShutdown));
                    flow = self.detach(DetachKind::Unclean);
                }
                let _ = done.send(());
                return flow;
            }
        }
        Flow::Continue
    }

    /// Removes `filters` from the subscriptions because authorization no
    /// longer grants them, and drops queued messages that no remaining
    /// subscription matches (in-flight ones were already sent and are
    /// completed as the protocol requires).
    fn revoke(&mut self, filters: Vec<TopicFilter>, why: &'static str) {
        let mut removed = 0;
        for filter in filters {
            if self.subscriptions.remove(&filter).is_some() {
                self.ctx.router.unsubscribe(&self.client_id, &filter);
                self.ctx.metrics.subscriptions_revoked.inc();
                tracing::info!(client_id = %self.client_id, %filter, reason = why, "subscription revoked: no longer authorized");
                removed += 1;
            }
        }
        if removed == 0 {
            return;
        }
        let subs = &self.subscriptions;
        let dropped = self.out.drop_queued_unless(|p| {
            subs.keys()
                .any(|f| covers(strip_share(f.as_str()), p.msg.topic.as_str()))
        });
        for p in dropped {
            self.drop_message(p.qos);
        }
    }

    /// Closes the current connection because a new one attaches
    /// [MQTT-3.1.4-2]; its will is published as for any unclean close.
    fn take_over(&mut self) {
        if let Some(old) = self.conn.take() {
            tracing::info!(client_id = %self.client_id, peer = %old.info.peer, "session taken over");
            let _ = old.tx.send(Outbound::Close(CloseReason::TakenOver));
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

    fn attach(&mut self, mut conn: ConnHandle) {
        // Before anything queued is sent to the client.
        self.revoke(std::mem::take(&mut conn.revoked), "resume");
        self.protocol = conn.info.protocol;
        // A reconnect in time cancels a delayed will [MQTT-3.1.3-9].
        self.will_due = None;
        self.expire_at = None;
        self.will = conn.will.take();
        self.set_expiry(conn.session_expiry_secs);
        let ours = self.ctx.config.mqtt.max_inflight_messages;
        let window = conn.receive_maximum.map_or(ours, |theirs| theirs.min(ours));
        self.out.set_window(usize::from(window));
        self.shared.set_client(Some(conn.info.clone()));
        self.conn = Some(conn);
        self.deliver_tx.set_online(true);
        // Resent within the new window [MQTT-3.3.4-9]; fill_window sends
        // the rest as acknowledgements come.
        for out in self.out.resume() {
            self.send_out(out);
        }
        self.fill_window();
    }

    fn set_expiry(&mut self, secs: u32) {
        self.expiry_secs = secs;
        self.shared.persistent.store(secs > 0, Ordering::Relaxed);
        self.shared
            .expiry_interval_secs
            .store(secs, Ordering::Relaxed);
    }

    fn detach(&mut self, ending: DetachKind) -> Flow {
        self.conn = None;
        self.deliver_tx.set_online(false);
        self.shared.set_client(None);
        let publish_will = match ending {
            DetachKind::Disconnect {
                session_expiry_secs,
            } => {
                if let Some(secs) = session_expiry_secs {
                    self.set_expiry(secs);
                }
                false
            }
            DetachKind::DisconnectWithWill {
                session_expiry_secs,
            } => {
                if let Some(secs) = session_expiry_secs {
                    self.set_expiry(secs);
                }
                true
            }
            DetachKind::Unclean => true,
        };
        if self.expiry_secs == 0 {
            if !publish_will {
                // DISCONNECT discards the will [MQTT-3.14.4-3].
                self.will = None;
            }
            return Flow::Stop;
        }
        let now = Instant::now();
        if self.expiry_secs != NEVER_EXPIRES {
            self.expire_at = Some(now + Duration::from_secs(u64::from(self.expiry_secs)));
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
                self.will_due = Some(now + Duration::from_secs(u64::from(delay)));
            }
        }
        Flow::Continue
    }

    /// A timer fired: publish a delayed will, or expire the session.
    fn on_timer(&mut self) -> Flow {
        let now = Instant::now();
        if self.will_due.is_some_and(|t| t <= now) {
            self.will_due = None;
            self.publish_will();
        }
        if self.expire_at.is_some_and(|t| t <= now) {
            tracing::info!(client_id = %self.client_id, "session expired");
            self.ctx.metrics.sessions_expired.inc();
            return Flow::Stop;
        }
        Flow::Continue
    }

    fn send(&self, packet: Packet) {
        self.send_out(Outbound::Packet(Box::new(packet)));
    }

    /// Hands `out` to the connection, if one is attached (a QoS 1/2
    /// message that cannot go stays in the window for the next one).
    fn send_out(&self, out: Outbound) {
        if let Some(conn) = &self.conn {
            let _ = conn.tx.send(out);
        }
    }

    fn publish_will(&mut self) {
        self.publish_will_then(None);
    }

    /// Publishes the will, if the session holds one and authorization,
    /// asked again now (the ACL may have changed since CONNECT), allows
    /// it; a refused will is dropped, counted and logged. `done` is
    /// answered once the will is routed or refused.
    fn publish_will_then(&mut self, done: Option<oneshot::Sender<()>>) {
        self.will_due = None;
        let Some(will) = self.will.take() else {
            answer(done);
            return;
        };
        let msg = Message::from_will(*will, &self.client_id);
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
        super::reauthorize::client_ctx(&self.client_id, self.shared.last_client().as_deref())
    }

    fn on_packet(&mut self, packet: Packet) {
        match packet {
            Packet::PubAck(r) => {
                self.out.puback(r.packet_id);
                self.fill_window();
            }
            Packet::PubRec(r) => self.on_pubrec(r),
            Packet::PubComp(r) => {
                self.out.pubcomp(r.packet_id);
                self.fill_window();
            }
            Packet::Subscribe(s) => self.on_subscribe(s, &[]),
            Packet::Unsubscribe(u) => self.on_unsubscribe(u),
            other => {
                tracing::debug!(client_id = %self.client_id, packet = other.name(), "ignored by session");
            }
        }
    }

    /// Closes the connection (not the session) for a protocol violation
    /// the session detected; the connection publishes the will.
    fn close(&mut self, reason: CloseReason) {
        if let Some(conn) = &self.conn {
            tracing::warn!(client_id = %self.client_id, ?reason, "closing connection");
            let _ = conn.tx.send(Outbound::Close(reason));
        }
    }

    fn on_pubrec(&mut self, r: PubResp) {
        if r.code.is_error() {
            // MQTT 5.0: a failed PUBREC ends the exchange [MQTT-4.3.3-4].
            self.out.pubrec(r.packet_id);
            self.out.pubcomp(r.packet_id);
            self.fill_window();
            return;
        }
        let mut resp = PubResp::success(r.packet_id);
        if self.out.pubrec(r.packet_id) == RecOutcome::Unknown && self.protocol.is_v5() {
            resp.code = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
        }
        self.send(Packet::PubRel(resp));
    }

    /// `denied[i]` marks filters authorization refused.
    fn on_subscribe(&mut self, s: Subscribe, denied: &[bool]) {
        let sub_id = s.properties.subscription_identifiers.first().copied();
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut retained = Vec::new();
        for (i, (filter, opts)) in s.filters.into_iter().enumerate() {
            if denied.get(i).copied().unwrap_or(false) {
                codes.push(self.refusal(ReasonCode::NOT_AUTHORIZED));
                continue;
            }
            if self.is_denied(&filter) {
                tracing::info!(client_id = %self.client_id, %filter, "subscription refused by deny list");
                codes.push(self.refusal(ReasonCode::NOT_AUTHORIZED));
                continue;
            }
            let outcome = self.ctx.router.subscribe(
                &self.client_id,
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
                    self.subscriptions.insert(filter, opts);
                }
                Err(e) if e.is_protocol_error() && self.protocol.is_v5() => {
                    // No Local on a shared subscription [MQTT-3.8.3-4].
                    tracing::info!(client_id = %self.client_id, %filter, error = %e, "protocol error in SUBSCRIBE");
                    self.close(CloseReason::ProtocolError);
                    return;
                }
                Err(e) => {
                    tracing::info!(client_id = %self.client_id, %filter, error = %e, "subscription refused");
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
        let mut room = self.ctx.retained.len().saturating_sub(self.replay.len());
        for (msgs, qos) in retained {
            for msg in msgs {
                let qos = msg.qos.min(qos);
                if room == 0 {
                    self.drop_message(qos);
                    continue;
                }
                room -= 1;
                self.replay.push_back(Pending {
                    qos,
                    msg,
                    retain: true,
                    sub_ids: sub_id.into_iter().collect(),
                });
            }
        }
        self.feed_replay();
    }

    /// Hands retained messages of a replay to the connection while it has
    /// room: QoS 0 up to the QoS 0 bounds, QoS 1/2 while the window has
    /// room and nothing is queued. The rest waits for the connection to
    /// write (QoS 0) or for acknowledgements (QoS 1/2).
    fn feed_replay(&mut self) {
        let Some(conn) = &self.conn else {
            return;
        };
        let budget = conn.pending_qos0.clone();
        let cfg = &self.ctx.config.mqtt;
        let (max_messages, max_bytes) = (cfg.max_pending_qos0_messages, cfg.max_pending_qos0_bytes);
        while let Some(next) = self.replay.front() {
            if next.msg.is_expired() {
                let qos = next.qos;
                self.replay.pop_front();
                self.drop_message(qos);
                continue;
            }
            let ready = if next.qos == QoS::AtMostOnce {
                budget
                    .fits(next.msg.payload.len(), max_messages, max_bytes)
                    .is_ok()
            } else {
                self.out.has_room() && self.out.queued_len() == 0
            };
            if !ready {
                break;
            }
            let Some(pending) = self.replay.pop_front() else {
                break;
            };
            if pending.qos == QoS::AtMostOnce {
                self.deliver_qos0(pending);
            } else {
                let publish = self.out.send(pending);
                self.send_out(Outbound::Publish(publish));
            }
        }
    }

    /// The SUBACK failure code: 0x80 for 3.1.1, `v5` for 5.0.
    fn refusal(&self, v5: ReasonCode) -> ReasonCode {
        if self.protocol.is_v5() {
            v5
        } else {
            ReasonCode::UNSPECIFIED_ERROR
        }
    }

    fn is_denied(&self, filter: &TopicFilter) -> bool {
        self.ctx
            .config
            .mqtt
            .deny_subscribe
            .iter()
            .any(|deny| filter_covers(deny, filter.as_str()))
    }

    fn on_unsubscribe(&mut self, u: Unsubscribe) {
        let mut codes = Vec::with_capacity(u.filters.len());
        for filter in &u.filters {
            let existed = self.subscriptions.remove(filter).is_some();
            self.ctx.router.unsubscribe(&self.client_id, filter);
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
    fn deliver(&mut self, d: Delivery) {
        let qos = d.msg.qos.min(d.qos);
        if d.msg.is_expired() {
            self.drop_message(qos);
            return;
        }
        let pending = Pending {
            msg: d.msg,
            qos,
            retain: d.retain,
            sub_ids: d.subscription_ids,
        };
        let behind_queue = self.conn.is_some() && self.out.queued_len() > 0;
        if qos == QoS::AtMostOnce && !behind_queue {
            self.deliver_qos0(pending);
        } else if qos != QoS::AtMostOnce && self.conn.is_some() && self.out.has_room() {
            let publish = self.out.send(pending);
            self.send_out(Outbound::Publish(publish));
        } else {
            self.enqueue(pending);
        }
    }

    /// A message that will not be delivered.
    fn drop_message(&self, qos: QoS) {
        self.ctx.metrics.messages_dropped.qos(qos).inc();
    }

    fn enqueue(&mut self, pending: Pending) {
        match self.out.enqueue(pending) {
            Ok(()) => {}
            Err(p) => {
                self.drop_message(p.qos);
                self.dropped_unlogged += 1;
                let now = Instant::now();
                if self
                    .drop_logged_at
                    .is_none_or(|t| now >= t + DROP_LOG_INTERVAL)
                {
                    tracing::warn!(
                        client_id = %self.client_id,
                        limit = self.ctx.config.mqtt.max_queued_messages,
                        dropped = self.dropped_unlogged,
                        "session queue full: dropping messages"
                    );
                    self.drop_logged_at = Some(now);
                    self.dropped_unlogged = 0;
                }
            }
        }
    }

    /// QoS 0 goes straight to a connected client unless it is too far
    /// behind, in messages or in bytes; offline sessions do not queue QoS 0.
    fn deliver_qos0(&mut self, pending: Pending) {
        let cfg = &self.ctx.config.mqtt;
        let Some(conn) = &self.conn else {
            self.drop_message(QoS::AtMostOnce);
            return;
        };
        let taken = conn.pending_qos0.take(
            pending.msg.payload.len(),
            cfg.max_pending_qos0_messages,
            cfg.max_pending_qos0_bytes,
        );
        match taken {
            Ok(()) => {
                let publish = pending.to_out(None, false);
                self.send_out(Outbound::Publish(publish));
            }
            Err(limit) => {
                if limit == Qos0Limit::Bytes {
                    self.ctx.metrics.qos0_byte_limit_drops.inc();
                }
                self.drop_message(QoS::AtMostOnce);
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
        while let Some(next) = self.out.next_queued() {
            match next {
                Err(expired) => self.drop_message(expired.qos),
                Ok(pending) if pending.qos == QoS::AtMostOnce => self.deliver_qos0(pending),
                Ok(pending) => {
                    let publish = self.out.send(pending);
                    self.send_out(Outbound::Publish(publish));
                }
            }
        }
        if !self.replay.is_empty() {
            self.feed_replay();
        }
    }

    fn publish_counters(&self) {
        let s = &self.shared;
        s.subscriptions
            .store(self.subscriptions.len(), Ordering::Relaxed);
        s.inflight.store(self.out.inflight_len(), Ordering::Relaxed);
        s.queued.store(self.out.queued_len(), Ordering::Relaxed);
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
    /// Runs on every exit, a panic included: the router must not keep
    /// subscriptions pointing at a dead mailbox.
    fn drop(&mut self) {
        self.ctx
            .router
            .unsubscribe_all(&self.client_id, self.subscriptions.keys());
        self.shared.set_client(None);
        if let Some(conn) = self.conn.take() {
            let _ = conn.tx.send(Outbound::Close(CloseReason::ServerShutdown));
        }
    }
}

/// Routes a will authorization allowed, or drops and counts a refused one.
fn route_will(ctx: &Context, client: &ClientCtx, msg: Arc<Message>, allowed: bool) {
    if allowed {
        tracing::debug!(client_id = %client.client_id, topic = %msg.topic, "publishing will");
        crate::publish::route(ctx, msg);
    } else {
        tracing::info!(client_id = %client.client_id, topic = %msg.topic, "will denied by ACL; dropped");
        ctx.metrics.wills_denied.inc();
        ctx.metrics.messages_dropped.qos(msg.qos).inc();
    }
}

fn answer(done: Option<oneshot::Sender<()>>) {
    if let Some(done) = done {
        let _ = done.send(());
    }
}

async fn wait_written(budget: Option<&Qos0Budget>) {
    match budget {
        Some(b) => b.wait_written().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
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
