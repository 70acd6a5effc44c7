//! Sessions and their manager: the heart of the seed's connect flow.
//!
//! A session is a value ([`Session`]) with exactly one owner at a time:
//! the task of the connection attached to it, or, while no client is
//! connected, a [`holder`] task that keeps its queue and its expiry. It
//! moves between owners as a value (resume, takeover), and removes its
//! own table row and router entries when it ends, however it ends.
//!
//! - `session`: the session value (subscriptions, QoS 1/2 in-flight window,
//!   offline queue, incoming QoS 2 ids, will) and what its owner calls;
//! - `holder`: the owner of a session without a connection;
//! - `outgoing`: the in-flight window and queue of messages to the client;
//! - `qos0`: the budget of QoS 0 messages handed to the connection and not
//!   yet written;
//! - `table`: the shared session table (client id → entry);
//! - `manager`: the pool of session-manager workers that create, resume,
//!   take over and destroy sessions, and its run-time resize;
//! - `reauthorize`: re-checking subscriptions against the current ACL (on
//!   resume and after a reload);
//! - `stopping`: closing every session's connection when the broker stops,
//!   wills first.

pub mod holder;
pub mod inbox;
pub mod manager;
mod outgoing;
pub mod qos0;
pub mod reauthorize;
pub mod restore;
#[allow(clippy::module_inception)]
pub mod session;
pub mod stopping;
pub mod table;

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::budget::Charge;
use crate::codec::{LastWill, Packet, SubscriptionOptions};
use crate::message::Message;
use crate::types::{PacketId, QoS, TopicFilter};
pub use manager::{ManagerError, SessionManager, StartRequest, StartResult};
pub use qos0::Qos0Budget;
pub use session::{Control, Session};
pub use table::{ClientInfo, SessionEntry, SessionTable};

/// The sending side of a session's control queue (the manager, the
/// control API, shutdown), served by whoever owns the session now.
pub type SessionTx = inbox::ControlTx;

/// The router's handle on a session: its inbox's delivery side, counted
/// (see [`crate::backlog`]), which also tells whether the session has a
/// connection now, so a shared subscription prefers members that can take
/// a message at once.
pub type DeliverTx = inbox::DeliveryTx;

/// Why the broker closes a connection from the session side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Another connection took the session over [MQTT-3.1.4-2].
    TakenOver,
    /// An operator destroyed the session.
    Destroyed,
    /// The broker is stopping.
    ServerShutdown,
    /// The client broke the protocol in a way the session detected.
    ProtocolError,
}

/// A PUBLISH on its way to the client, built into a packet only when the
/// connection encodes it (so a channel slot stays small).
#[derive(Debug)]
pub struct OutPublish {
    pub msg: Arc<Message>,
    pub qos: QoS,
    pub retain: bool,
    pub dup: bool,
    pub packet_id: Option<PacketId>,
    pub subscription_ids: Vec<u32>,
    /// A QoS 0 message's bytes in the memory budget, until the connection
    /// has encoded it (a QoS 1/2 one is charged in the window instead).
    pub charge: Charge,
}

/// What a session hands its connection to write.
#[derive(Debug)]
pub enum Outbound {
    Publish(OutPublish),
    Packet(Box<Packet>),
}

/// A connection as the session sees it: what the connection announced in
/// CONNECT.
#[derive(Debug)]
pub struct ConnHandle {
    pub info: Arc<ClientInfo>,
    /// Boxed: most clients set no will, and an idle connection should
    /// not carry room for one.
    pub will: Option<Box<LastWill>>,
    /// The client's receive maximum (MQTT 5.0); bounds the in-flight window.
    pub receive_maximum: Option<u16>,
    /// Seconds the session outlives this connection: 0 ends it with the
    /// connection, [`NEVER_EXPIRES`] keeps it until destroyed (3.1.1
    /// persistent sessions).
    pub session_expiry_secs: u32,
}

/// The session expiry interval meaning "never" (MQTT 5.0 section 3.1.2.11.2).
pub const NEVER_EXPIRES: u32 = u32::MAX;

/// A message routed to a session by a subscription.
#[derive(Debug)]
pub struct Delivery {
    pub msg: Arc<Message>,
    /// The granted QoS of the matching subscription(s).
    pub qos: QoS,
    /// Keep the RETAIN flag (retained on subscribe, or retain-as-published).
    pub retain: bool,
    pub subscription_ids: Vec<u32>,
    /// Its sequence number in the store, if it was stored for this
    /// session before it was sent (see crate::store).
    pub seq: Option<u64>,
    /// Its bytes in the memory budget, held as long as the copy is.
    pub charge: Charge,
}

/// One subscription as reported to operators.
#[derive(Debug, Clone)]
pub struct SubscriptionInfo {
    pub filter: TopicFilter,
    pub options: SubscriptionOptions,
}

/// A session's full state for `mqttctl sessions show`.
#[derive(Debug, Clone)]
pub struct SessionDetail {
    pub subscriptions: Vec<SubscriptionInfo>,
    pub inflight: usize,
    pub queued: usize,
}

/// How a connection left its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetachKind {
    /// DISCONNECT: the will is discarded; MQTT 5.0 may set a new session
    /// expiry interval.
    Disconnect { session_expiry_secs: Option<u32> },
    /// MQTT 5.0 DISCONNECT with reason 0x04: publish the will anyway.
    DisconnectWithWill { session_expiry_secs: Option<u32> },
    /// Any other end: the will is published.
    Unclean,
}

/// A session's control messages, handled by its owner (the connection
/// task, or the holder while offline).
#[derive(Debug)]
pub enum SessionMsg {
    /// Hand the session over (resume or takeover): a connected owner
    /// closes its connection as taken over [MQTT-3.1.4-2] first. A session
    /// that is ending drops `reply` instead.
    Take(oneshot::Sender<Box<Session>>),
    Inspect(oneshot::Sender<SessionDetail>),
    /// Answered once every earlier message is handled.
    Sync(oneshot::Sender<()>),
    /// End the session, closing its connection for `reason`.
    Shutdown(CloseReason),
    /// Remove these subscriptions: authorization no longer grants them
    /// (an ACL reload). Queued messages no remaining subscription matches
    /// are dropped.
    Revoke(Vec<TopicFilter>),
    /// The broker is stopping (first step): publish the will now if the
    /// session holds one, a delayed one included; answered once it is
    /// routed or refused.
    PublishWillNow(oneshot::Sender<()>),
    /// The broker is stopping (second step): hand the connection every
    /// message the router has already delivered to this session, then
    /// close it; answered once the close is queued behind them.
    CloseForShutdown(oneshot::Sender<()>),
    /// The connection `conn_id` has been silent past its keep alive (sent
    /// by the keep-alive sweep).
    KeepAliveExpired {
        conn_id: u64,
    },
}
