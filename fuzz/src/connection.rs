//! Body of the `connection` fuzz target: a whole broker in-process, driven
//! through its connection state machine (`mqttd::connection::serve`) by an
//! arbitrary sequence of client actions on up to two connections at once.
//!
//! A [`Scenario`] picks small broker limits, then runs steps: open a
//! connection with a generated CONNECT (the two slots may share a client
//! id, so takeovers and resumed sessions happen), send generated packets
//! (encoded with the broker's encoder), raw bytes, half packets, let
//! virtual time pass, close or reset a connection. Each connection's
//! replies are read as they come and checked by [`check_replies`]. At the
//! end every client half-closes its side; every connection must then end
//! and the session manager must stop, within bounded virtual time.
//!
//! The runtime is a current-thread tokio runtime with paused time, so
//! keep alive, connect timeouts and session expiry cost no real time, and
//! "the broker never ends this connection" shows up as a virtual timeout
//! (a panic, hence a finding) rather than as a libFuzzer `-timeout`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arbitrary::Arbitrary;
use bytes::{Bytes, BytesMut};
use mqttd::auth::{Auth, CertUser};
use mqttd::broker::Broker;
use mqttd::codec::{
    decode, encode, Connect, Disconnect, LastWill, Packet, ProtocolVersion, PubResp, Publish,
    ReasonCode, RetainHandling, Subscribe, SubscriptionOptions, Unsubscribe,
};
use mqttd::config::{Config, ListenerKind};
use mqttd::transport::{ConnMeta, ListenerCtx};
use mqttd::types::{PacketId, QoS, TopicFilter, TopicName};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::task::JoinHandle;

/// Most steps run per input (longer inputs are cut).
const MAX_STEPS: usize = 48;
/// Bytes a connection's pipe holds in each direction.
const PIPE_BYTES: usize = 64 * 1024;
/// Virtual time a connection has to end after its client half-closed.
const END_DEADLINE: Duration = Duration::from_secs(120);

/// One fuzz input.
#[derive(Arbitrary, Debug)]
pub struct Scenario {
    pub limits: Limits,
    pub steps: Vec<Step>,
}

/// Broker limits, kept small so that they are reached.
#[derive(Arbitrary, Debug)]
pub struct Limits {
    pub max_inflight: u8,
    pub max_queued: u8,
    pub max_pending_qos0: u8,
    pub receive_maximum: u8,
    pub topic_alias_maximum: u8,
    pub max_keepalive: u8,
    pub retain_available: bool,
    pub small_packets: bool,
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    A,
    B,
}

#[derive(Arbitrary, Debug)]
pub enum Step {
    /// Opens a connection in `slot` (resetting the one there) and sends
    /// CONNECT.
    Open(Slot, Box<ConnectSpec>),
    /// Sends one packet, encoded for the slot's protocol version.
    Send(Slot, PacketSpec),
    /// Sends the first `at` bytes of a packet, lets the broker run, then
    /// the rest.
    Split(Slot, PacketSpec, u8),
    /// Sends raw bytes.
    Raw(Slot, Vec<u8>),
    /// Lets every task run until all wait.
    Settle,
    /// Lets virtual time pass.
    Sleep(u16),
    /// Half-closes the client's side (the broker reads EOF).
    CloseWrite(Slot),
    /// Drops the client's side entirely.
    Reset(Slot),
}

#[derive(Arbitrary, Debug)]
pub enum Version {
    V31,
    V311,
    V5,
}

/// Client ids drawn mostly from a few fixed ones, so connections collide.
#[derive(Arbitrary, Debug)]
pub enum Id {
    Fixed(u8),
    Empty,
    Any(String),
}

#[derive(Arbitrary, Debug)]
pub struct ConnectSpec {
    pub version: Version,
    pub clean_start: bool,
    pub keep_alive: u8,
    pub client_id: Id,
    pub will: Option<WillSpec>,
    pub username: Option<String>,
    pub password: Option<Vec<u8>>,
    pub session_expiry: Option<u32>,
    pub receive_maximum: Option<u16>,
    pub maximum_packet_size: Option<u32>,
    pub topic_alias_maximum: Option<u16>,
    pub request_problem_information: Option<u8>,
    pub request_response_information: Option<u8>,
    pub authentication_method: Option<String>,
    pub user_properties: Vec<(String, String)>,
}

#[derive(Arbitrary, Debug)]
pub struct WillSpec {
    pub topic: Topic,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    pub delay: Option<u32>,
    pub message_expiry: Option<u32>,
}

/// Topic names from a small vocabulary (so subscriptions match), or any.
#[derive(Arbitrary, Debug)]
pub enum Topic {
    Levels(Vec<u8>),
    Any(String),
}

/// Filters from the same vocabulary, with wildcards and shares.
#[derive(Arbitrary, Debug)]
pub enum Filter {
    Levels(Vec<u8>, bool, bool),
    Any(String),
}

#[derive(Arbitrary, Debug)]
pub enum PacketSpec {
    Publish {
        topic: Topic,
        qos: u8,
        retain: bool,
        dup: bool,
        id: u16,
        payload: Vec<u8>,
        topic_alias: Option<u16>,
        empty_topic: bool,
        message_expiry: Option<u32>,
        subscription_id: Option<u32>,
        response_topic: Option<String>,
    },
    PubAck(u16, u8),
    PubRec(u16, u8),
    PubRel(u16, u8),
    PubComp(u16, u8),
    Subscribe {
        id: u16,
        filters: Vec<(Filter, u8, bool, bool, u8)>,
        subscription_id: Option<u32>,
    },
    Unsubscribe(u16, Vec<Filter>),
    PingReq,
    Disconnect(u8, Option<u32>),
    Auth(u8),
    /// A second CONNECT on an open connection.
    Connect(Box<ConnectSpec>),
    /// A packet only servers send.
    ServerOnly(u8),
}

const LEVELS: [&str; 6] = ["a", "b", "$SYS", "", "c d", "a"];

fn topic_name(t: &Topic) -> TopicName {
    let s = match t {
        Topic::Levels(l) => levels(l),
        Topic::Any(s) => s.clone(),
    };
    TopicName::new(&s).unwrap_or_else(|_| TopicName::new("a").expect("valid"))
}

fn levels(l: &[u8]) -> String {
    let parts: Vec<&str> = l
        .iter()
        .take(4)
        .map(|b| LEVELS[*b as usize % LEVELS.len()])
        .collect();
    if parts.is_empty() {
        "a".to_owned()
    } else {
        parts.join("/")
    }
}

fn topic_filter(f: &Filter) -> TopicFilter {
    let s = match f {
        Filter::Levels(l, plus, hash) => {
            let mut s = levels(l);
            if *plus {
                s = format!("+/{s}");
            }
            if *hash {
                s.push_str("/#");
            }
            if l.first().is_some_and(|b| b & 0x80 != 0) {
                s = format!("$share/g/{s}");
            }
            s
        }
        Filter::Any(s) => s.clone(),
    };
    TopicFilter::new(&s).unwrap_or_else(|_| TopicFilter::new("#").expect("valid"))
}

fn qos(v: u8) -> QoS {
    QoS::from_u8(v % 3).expect("0..=2")
}

fn packet_id(v: u16) -> PacketId {
    PacketId::new(v.max(1)).expect("non-zero")
}

/// Packet ids from a small range, so they collide with in-flight ones.
fn small_id(v: u16) -> PacketId {
    packet_id(v % 8 + 1)
}

fn version(v: &Version) -> ProtocolVersion {
    match v {
        Version::V31 => ProtocolVersion::V31,
        Version::V311 => ProtocolVersion::V311,
        Version::V5 => ProtocolVersion::V5,
    }
}

fn connect_packet(c: &ConnectSpec) -> Connect {
    let v = version(&c.version);
    let v5 = v.is_v5();
    let mut properties = mqttd::codec::Properties::default();
    if v5 {
        properties.session_expiry_interval = c.session_expiry;
        properties.receive_maximum = c.receive_maximum;
        properties.maximum_packet_size = c.maximum_packet_size;
        properties.topic_alias_maximum = c.topic_alias_maximum;
        properties.request_problem_information = c.request_problem_information;
        properties.request_response_information = c.request_response_information;
        properties.authentication_method = c.authentication_method.clone();
        properties.user_properties = c.user_properties.iter().take(4).cloned().collect();
    }
    let will = c.will.as_ref().map(|w| {
        let mut properties = mqttd::codec::Properties::default();
        if v5 {
            properties.will_delay_interval = w.delay.map(|d| d % 600);
            properties.message_expiry_interval = w.message_expiry;
        }
        LastWill {
            topic: topic_name(&w.topic),
            payload: Bytes::from(w.payload.clone()),
            qos: qos(w.qos),
            retain: w.retain,
            properties,
        }
    });
    let client_id = match &c.client_id {
        Id::Fixed(n) => format!("c{}", n % 3),
        Id::Empty => String::new(),
        Id::Any(s) => s.clone(),
    };
    Connect {
        protocol: v,
        clean_start: c.clean_start,
        keep_alive: u16::from(c.keep_alive % 64),
        client_id,
        will,
        username: c.username.clone(),
        password: c.password.clone().map(Bytes::from),
        properties,
    }
}

fn resp(id: u16, code: u8, v5: bool) -> PubResp {
    let mut r = PubResp::success(small_id(id));
    if v5 {
        r.code = ReasonCode(code);
    }
    r
}

fn packet(p: &PacketSpec, v: ProtocolVersion) -> Packet {
    let v5 = v.is_v5();
    let mut props = mqttd::codec::Properties::default();
    match p {
        PacketSpec::Publish {
            topic,
            qos: q,
            retain,
            dup,
            id,
            payload,
            topic_alias,
            empty_topic,
            message_expiry,
            subscription_id,
            response_topic,
        } => {
            let qos = qos(*q);
            let mut topic = topic_name(topic);
            if v5 {
                props.topic_alias = *topic_alias;
                props.message_expiry_interval = *message_expiry;
                props.subscription_identifiers = subscription_id.iter().copied().collect();
                props.response_topic = response_topic.clone();
                if *empty_topic && topic_alias.is_some() {
                    topic = TopicName::new_allow_empty("").expect("empty is allowed here");
                }
            }
            Packet::Publish(Publish {
                dup: *dup && qos != QoS::AtMostOnce,
                qos,
                retain: *retain,
                topic,
                packet_id: (qos != QoS::AtMostOnce).then(|| small_id(*id)),
                payload: Bytes::from(payload.clone()),
                properties: props,
            })
        }
        PacketSpec::PubAck(id, c) => Packet::PubAck(resp(*id, *c, v5)),
        PacketSpec::PubRec(id, c) => Packet::PubRec(resp(*id, *c, v5)),
        PacketSpec::PubRel(id, c) => Packet::PubRel(resp(*id, *c, v5)),
        PacketSpec::PubComp(id, c) => Packet::PubComp(resp(*id, *c, v5)),
        PacketSpec::Subscribe {
            id,
            filters,
            subscription_id,
        } => {
            let mut filters: Vec<_> = filters
                .iter()
                .take(4)
                .map(|(f, q, no_local, rap, rh)| {
                    let mut o = SubscriptionOptions::with_qos(qos(*q));
                    if v5 {
                        o.no_local = *no_local;
                        o.retain_as_published = *rap;
                        o.retain_handling = match rh % 3 {
                            0 => RetainHandling::SendAtSubscribe,
                            1 => RetainHandling::SendIfNew,
                            _ => RetainHandling::DoNotSend,
                        };
                    }
                    (topic_filter(f), o)
                })
                .collect();
            if filters.is_empty() {
                filters.push((
                    TopicFilter::new("#").expect("valid"),
                    SubscriptionOptions::with_qos(QoS::AtLeastOnce),
                ));
            }
            if v5 {
                props.subscription_identifiers = subscription_id
                    .iter()
                    .map(|s| s % 268_435_455 + 1)
                    .collect();
            }
            Packet::Subscribe(Subscribe {
                packet_id: small_id(*id),
                filters,
                properties: props,
            })
        }
        PacketSpec::Unsubscribe(id, filters) => {
            let mut filters: Vec<_> = filters.iter().take(4).map(topic_filter).collect();
            if filters.is_empty() {
                filters.push(TopicFilter::new("#").expect("valid"));
            }
            Packet::Unsubscribe(Unsubscribe {
                packet_id: small_id(*id),
                filters,
                properties: props,
            })
        }
        PacketSpec::PingReq => Packet::PingReq,
        PacketSpec::Disconnect(code, expiry) => {
            let mut d = Disconnect::normal();
            if v5 {
                d.code = ReasonCode(*code);
                d.properties.session_expiry_interval = *expiry;
            }
            Packet::Disconnect(d)
        }
        PacketSpec::Auth(code) => Packet::Auth(mqttd::codec::Auth {
            code: ReasonCode(*code),
            properties: props,
        }),
        PacketSpec::Connect(c) => Packet::Connect(Box::new(connect_packet(c))),
        PacketSpec::ServerOnly(n) => match n % 4 {
            0 => Packet::PingResp,
            1 => Packet::ConnAck(mqttd::codec::ConnAck {
                session_present: false,
                code: ReasonCode::SUCCESS,
                properties: props,
            }),
            2 => Packet::SubAck(mqttd::codec::SubAck {
                packet_id: packet_id(1),
                codes: vec![ReasonCode::SUCCESS],
                properties: props,
            }),
            _ => Packet::UnsubAck(mqttd::codec::UnsubAck {
                packet_id: packet_id(1),
                codes: if v5 {
                    vec![ReasonCode::SUCCESS]
                } else {
                    vec![]
                },
                properties: props,
            }),
        },
    }
}

/// Encodes `p`; packets the encoder refuses (e.g. AUTH for 3.1.1) become
/// nothing.
fn bytes_of(p: &Packet, v: ProtocolVersion) -> Vec<u8> {
    let mut buf = BytesMut::new();
    match encode(p, v, &mut buf) {
        Ok(()) => buf.to_vec(),
        Err(_) => Vec::new(),
    }
}

/// What a client asked for in CONNECT that limits the broker's replies.
#[derive(Debug, Clone, Copy)]
struct ClientLimits {
    version: ProtocolVersion,
    max_packet: Option<u32>,
    topic_alias_max: u16,
}

/// Reads everything the broker writes to one connection until EOF and
/// checks it: every byte decodes; CONNACK first; only packets a server
/// sends; nothing after a refusing CONNACK or a DISCONNECT; DISCONNECT
/// only for 5.0; no packet above the client's Maximum Packet Size (when
/// that leaves room for the packet's fixed part); no
/// topic alias above the client's Topic Alias Maximum. Panics otherwise.
async fn check_replies(mut rx: ReadHalf<DuplexStream>, lim: ClientLimits) {
    let mut buf = BytesMut::new();
    let mut seen_connack = false;
    let mut ended = false;
    loop {
        while !buf.is_empty() {
            let (p, used) = match decode(&buf, Some(lim.version), u32::MAX) {
                Ok(Some(x)) => x,
                Ok(None) => break,
                Err(e) => panic!(
                    "broker sent bytes that do not decode: {e} ({:x?})",
                    &buf[..]
                ),
            };
            // A bare CONNACK (5 bytes) and short acknowledgements are sent
            // whatever the client asked for: below these sizes the rule
            // cannot be kept, so it is checked only above them.
            let floor = if matches!(p, Packet::ConnAck(_)) {
                5
            } else {
                16
            };
            if let Some(max) = lim.max_packet.filter(|m| *m >= floor) {
                assert!(
                    used as u64 <= u64::from(max),
                    "{used} bytes > Maximum Packet Size {max}: {p:?}"
                );
            }
            assert!(!ended, "broker sent {p:?} after ending the connection");
            match &p {
                Packet::ConnAck(a) => {
                    assert!(!seen_connack, "second CONNACK");
                    seen_connack = true;
                    ended = if lim.version.is_v5() {
                        a.code.is_error()
                    } else {
                        a.code.0 != 0
                    };
                }
                _ => assert!(seen_connack, "{p:?} before CONNACK"),
            }
            match &p {
                Packet::ConnAck(_)
                | Packet::PubAck(_)
                | Packet::PubRec(_)
                | Packet::PubRel(_)
                | Packet::PubComp(_)
                | Packet::SubAck(_)
                | Packet::UnsubAck(_)
                | Packet::PingResp => {}
                Packet::Publish(p) => {
                    if let Some(alias) = p.properties.topic_alias {
                        assert!(
                            alias >= 1 && alias <= lim.topic_alias_max,
                            "topic alias {alias} above the client's maximum {}",
                            lim.topic_alias_max
                        );
                    }
                    assert!(p.properties.topic_alias.is_some() || !p.topic.is_empty());
                }
                Packet::Disconnect(_) => {
                    assert!(
                        lim.version.is_v5(),
                        "DISCONNECT sent to a {} client",
                        lim.version
                    );
                    ended = true;
                }
                Packet::Connect(_)
                | Packet::Subscribe(_)
                | Packet::Unsubscribe(_)
                | Packet::PingReq
                | Packet::Auth(_) => {
                    panic!("broker sent a client packet: {p:?}")
                }
            }
            let _ = buf.split_to(used);
        }
        match rx.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// One client connection: its write side, the broker's task, the reader.
struct Conn {
    tx: Option<WriteHalf<DuplexStream>>,
    version: ProtocolVersion,
    serve: JoinHandle<()>,
    reader: JoinHandle<()>,
}

fn config(l: &Limits) -> Config {
    let mut c = Config::default();
    c.listeners.clear();
    c.session_manager.pool_size = 2;
    c.storage.data_dir = PathBuf::from("/nonexistent");
    let m = &mut c.mqtt;
    m.max_inflight_messages = u16::from(l.max_inflight % 8) + 1;
    m.max_queued_messages = usize::from(l.max_queued % 16) + 1;
    m.max_pending_qos0_messages = usize::from(l.max_pending_qos0 % 16) + 1;
    m.receive_maximum = u16::from(l.receive_maximum % 8) + 1;
    m.topic_alias_maximum = u16::from(l.topic_alias_maximum % 4);
    m.max_keepalive_secs = u16::from(l.max_keepalive % 32);
    m.retain_available = l.retain_available;
    if l.small_packets {
        m.max_packet_size_bytes = 128;
    }
    m.deny_subscribe = vec!["$SYS/#".to_owned()];
    c
}

/// Runs `s` against a fresh broker. Panics on a broken invariant.
pub fn run(s: Scenario) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(scenario(s));
}

async fn scenario(s: Scenario) {
    let config = config(&s.limits);
    let auth = Arc::new(Auth::new(&config.auth).expect("default auth"));
    let listener = Arc::new(ListenerCtx {
        name: Arc::from("fuzz"),
        kind: ListenerKind::Tcp,
        allow_anonymous: None,
        auth: auth.clone(),
        metrics: Arc::new(mqttd::metrics::ListenerMetrics::new(Arc::from("fuzz"))),
    });
    let broker = Broker::new(config, auth, mqttd::store::Store::memory(), Vec::new());
    let mut slots: [Option<Conn>; 2] = [None, None];
    let mut ended: Vec<JoinHandle<()>> = Vec::new();
    let mut port = 1;
    for step in s.steps.into_iter().take(MAX_STEPS) {
        match step {
            Step::Open(slot, c) => {
                if let Some(mut old) = slots[slot as usize].take() {
                    if let Some(mut tx) = old.tx.take() {
                        let _ = tx.shutdown().await;
                    }
                    ended.push(old.serve);
                    ended.push(old.reader);
                }
                let connect = connect_packet(&c);
                let v = connect.protocol;
                let lim = ClientLimits {
                    version: v,
                    max_packet: connect.properties.maximum_packet_size,
                    topic_alias_max: connect.properties.topic_alias_maximum.unwrap_or(0),
                };
                let (client, server) = tokio::io::duplex(PIPE_BYTES);
                port += 1;
                let peer = SocketAddr::from(([127, 0, 0, 1], port));
                let meta = ConnMeta {
                    listener: listener.clone(),
                    peer,
                    cert_user: CertUser::None,
                    slot: None,
                };
                let serve = tokio::spawn(mqttd::connection::serve(server, meta, broker.clone()));
                let (rx, mut tx) = tokio::io::split(client);
                let reader = tokio::spawn(check_replies(rx, lim));
                let _ = tx
                    .write_all(&bytes_of(&Packet::Connect(Box::new(connect)), v))
                    .await;
                slots[slot as usize] = Some(Conn {
                    tx: Some(tx),
                    version: v,
                    serve,
                    reader,
                });
            }
            Step::Send(slot, p) => {
                if let Some(c) = &mut slots[slot as usize] {
                    let bytes = bytes_of(&packet(&p, c.version), c.version);
                    write(c, &bytes).await;
                }
            }
            Step::Split(slot, p, at) => {
                if let Some(c) = &mut slots[slot as usize] {
                    let bytes = bytes_of(&packet(&p, c.version), c.version);
                    let at = usize::from(at).min(bytes.len());
                    write(c, &bytes[..at]).await;
                    settle().await;
                    write(c, &bytes[at..]).await;
                }
            }
            Step::Raw(slot, bytes) => {
                if let Some(c) = &mut slots[slot as usize] {
                    write(c, &bytes).await;
                }
            }
            Step::Settle => settle().await,
            Step::Sleep(secs) => {
                tokio::time::sleep(Duration::from_secs(u64::from(secs % 600))).await
            }
            Step::CloseWrite(slot) => {
                if let Some(c) = &mut slots[slot as usize] {
                    if let Some(mut tx) = c.tx.take() {
                        let _ = tx.shutdown().await;
                    }
                }
            }
            Step::Reset(slot) => {
                if let Some(c) = slots[slot as usize].take() {
                    drop(c.tx);
                    ended.push(c.serve);
                    c.reader.abort();
                }
            }
        }
    }
    // Every client half-closes: each connection must end in bounded time.
    for c in slots.iter_mut().flatten() {
        if let Some(mut tx) = c.tx.take() {
            let _ = tx.shutdown().await;
        }
    }
    for c in slots.into_iter().flatten() {
        ended.push(c.serve);
        ended.push(c.reader);
    }
    for task in ended {
        match tokio::time::timeout(END_DEADLINE, task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.is_cancelled() => {}
            Ok(Err(e)) => std::panic::resume_unwind(e.into_panic()),
            Err(_) => {
                panic!("a connection did not end within {END_DEADLINE:?} of its client closing")
            }
        }
    }
    assert_eq!(
        broker.ctx.metrics.connections.get(),
        0,
        "connection gauge after all ended"
    );
    broker.shutdown.cancel();
    if tokio::time::timeout(END_DEADLINE, broker.manager.shutdown())
        .await
        .is_err()
    {
        panic!("the session manager did not stop");
    }
}

/// Writes to the broker; a closed pipe (the broker hung up) is fine.
async fn write(c: &mut Conn, bytes: &[u8]) {
    if let Some(tx) = &mut c.tx {
        // Bounded: a broker that stops reading must not stall the input.
        match tokio::time::timeout(END_DEADLINE, tx.write_all(bytes)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => c.tx = None,
            Err(_) => panic!("the broker stopped reading for {END_DEADLINE:?}"),
        }
    }
}

/// Runs every task until all of them wait (time is paused, so a short
/// sleep completes only once the runtime is idle).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}
