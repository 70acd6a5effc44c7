//! The CONNECT handshake, step by step as in the seed: extract and
//! validate the parameters, authenticate, authorize the will, start the
//! session through the session manager, record the client, answer CONNACK.
//!
//! Nothing happens before validation and authentication pass; a refused
//! client gets the CONNACK code the specification names and is closed. A
//! will to a topic the client may not publish to is refused as Mosquitto
//! does (0x05 / 0x87). Before a persistent session is resumed, its
//! subscriptions are authorized again for this client (see
//! [`crate::session::reauthorize`]); the session manager gives a session
//! only to the identity that created it.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::auth::ClientCtx;
use crate::broker::Broker;
use crate::codec::{
    connack_v3, encode, ConnAck, Connect, Packet, Properties, ProtocolVersion, ReasonCode,
};
use tokio::sync::oneshot;

use crate::connection::{Ending, Framed};
use crate::log_limit::LogLimit;
use crate::session::manager::owner;
use crate::session::reauthorize::denied_subscriptions;
use crate::session::ManagerError;
use crate::session::{
    holder, ClientInfo, ConnHandle, DetachKind, Session, StartRequest, NEVER_EXPIRES,
};
use crate::session_limits::{self, Hit};
use crate::topic_alias::{InboundAliases, OutboundAliases};
use crate::types::ClientId;

/// Longest client id MQTT 3.1 allows.
const MAX_CLIENT_ID_LEN_V31: usize = 23;

/// At most one line a second for CONNECTs refused by a limit: at the
/// bound, every device retrying would otherwise write one each.
static LIMIT_LOG: LogLimit = LogLimit::new(std::time::Duration::from_secs(1));

/// What happens to the session when the connection ends.
#[derive(Debug)]
pub(crate) enum Fate {
    /// Detached as the connection's ending says: ended, or kept offline.
    Detach,
    /// Handed to the connection taking it over.
    HandOver(oneshot::Sender<Box<Session>>),
    /// Ended (destroyed, clean start elsewhere).
    End,
    /// Let go with the broker, its stored state kept ([`Session::stop`]).
    Stop,
}

/// The state of an MQTT 5.0 connection that 3.1.x connections have no use
/// for: one allocation, made only for 5.0 clients.
pub(crate) struct Mqtt5 {
    /// Topic aliases set by the client.
    pub aliases_in: InboundAliases,
    /// Topic aliases set by the broker.
    pub aliases_out: OutboundAliases,
    /// The largest packet the client accepts.
    pub max_packet_out: Option<u32>,
}

/// A connection whose CONNECT was accepted and answered, and the session
/// it now owns.
pub(crate) struct Accepted {
    pub session: Box<Session>,
    pub fate: Fate,
    pub version: ProtocolVersion,
    /// The session expiry interval of CONNECT (MQTT 5.0), to validate the
    /// one DISCONNECT may carry [MQTT-3.14.2-2].
    pub session_expiry_secs: u32,
    /// What only MQTT 5.0 connections use; `None` for 3.1.x, so that they
    /// do not carry it.
    pub v5: Option<Box<Mqtt5>>,
    /// Who the client is, for authorization of PUBLISH and SUBSCRIBE.
    pub client: ClientCtx,
}

/// The keep alive the broker applies: the client's, capped by `max`
/// (0 = no cap); a client asking for none gets `max`. A 5.0 client is told
/// through Server Keep Alive [MQTT-3.2.2-21]; a 3.1.x client cannot be
/// told, but is held to it all the same (closed after 1.5 × `max` of
/// silence), so that no client can hold a connection, or a half-sent
/// packet, forever.
fn granted_keep_alive(asked: u16, max: u16) -> u16 {
    if max == 0 || (asked != 0 && asked <= max) {
        asked
    } else {
        max
    }
}

/// Waits for CONNECT (bounded by the connect timeout) and runs the connect
/// flow. `None` when the connection must close.
pub(crate) async fn handshake<S>(framed: &mut Framed<S>, broker: &Broker) -> Option<Accepted>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ctx = &broker.ctx;
    let timeout = ctx.config.mqtt.connect_timeout();
    let peer = framed.meta.peer;
    let first = tokio::select! {
        r = tokio::time::timeout(timeout, framed.read_packet()) => r,
        _ = broker.stopping.cancelled() => return None,
    };
    let connect = match first {
        Err(_) => {
            tracing::info!(%peer, ?timeout, "no CONNECT in time; closing");
            return None;
        }
        Ok(Ok(None)) | Ok(Err(Ending::Closed(_))) => return None,
        Ok(Ok(Some(Packet::Connect(c)))) => *c,
        Ok(Ok(Some(other))) => {
            tracing::warn!(%peer, packet = other.name(), "first packet must be CONNECT [MQTT-3.1.0-1]; closing");
            ctx.metrics.malformed_packets.inc();
            return None;
        }
        Ok(Err(Ending::Violation { reason, code })) => {
            tracing::warn!(%peer, %reason, "invalid CONNECT; closing");
            ctx.metrics.malformed_packets.inc();
            if code == ReasonCode::UNSUPPORTED_PROTOCOL_VERSION {
                // [MQTT-3.1.2-2]: answer 0x01 before closing.
                let ack = connack(false, ReasonCode(connack_v3::UNACCEPTABLE_PROTOCOL_VERSION));
                let _ = framed.send(&ack, ProtocolVersion::V311).await;
            }
            return None;
        }
        Ok(Err(_)) => return None,
    };
    accept(framed, broker, connect).await
}

fn connack(session_present: bool, code: ReasonCode) -> Packet {
    Packet::ConnAck(ConnAck {
        session_present,
        code,
        properties: Default::default(),
    })
}

/// Leaves out properties of a 5.0 CONNACK that would make it larger than
/// the client's Maximum Packet Size [MQTT-3.1.2-24]: first all but the
/// assigned client identifier, then that too. (A bare CONNACK, 5 bytes, is
/// sent even to a client that announced less: there is nothing left out.)
fn fit_connack(ack: &mut ConnAck, max: Option<u32>) {
    let Some(max) = max else { return };
    let size = |ack: &ConnAck| {
        let mut buf = BytesMut::new();
        let packet = Packet::ConnAck(ack.clone());
        encode(&packet, ProtocolVersion::V5, &mut buf).map_or(usize::MAX, |()| buf.len())
    };
    if size(ack) <= max as usize {
        return;
    }
    let assigned = ack.properties.assigned_client_identifier.take();
    ack.properties = Properties {
        assigned_client_identifier: assigned,
        ..Properties::default()
    };
    if size(ack) > max as usize {
        ack.properties = Properties::default();
    }
}

/// Sends a refusal CONNACK in the client's protocol version.
async fn refuse<S>(framed: &mut Framed<S>, version: ProtocolVersion, v3: u8, v5: ReasonCode)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let code = if version.is_v5() { v5 } else { ReasonCode(v3) };
    let _ = framed.send(&connack(false, code), version).await;
}

/// Refuses a CONNECT because the broker cannot serve it now (stopping,
/// or the session manager gone): 0x03 / 0x88.
async fn refuse_unavailable<S>(framed: &mut Framed<S>, version: ProtocolVersion)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    refuse(
        framed,
        version,
        connack_v3::SERVER_UNAVAILABLE,
        ReasonCode::SERVER_UNAVAILABLE,
    )
    .await;
}

/// Refuses a CONNECT whose client id, username or will topic is longer
/// than `limits:` allows, with the code the specification has for each:
/// 0x85 client identifier not valid (3.1.1: 0x02), 0x86 bad user name or
/// password, "not accepted" (3.1.1: 0x04), 0x90 topic name invalid (3.1.1
/// has no such code: 0x05 not authorized, as for a will the ACL refuses).
async fn refuse_over_limit<S>(framed: &mut Framed<S>, broker: &Broker, c: &Connect, hit: Hit)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    hit.count(&broker.ctx.metrics.session_limits);
    if let Some(suppressed) = LIMIT_LOG.check() {
        let peer = framed.meta.peer;
        tracing::info!(%peer, limit = hit.key(), suppressed, "CONNECT refused: over a limit");
    }
    let (v3, v5) = match hit {
        Hit::ClientIdLen => (
            connack_v3::IDENTIFIER_REJECTED,
            ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
        ),
        Hit::UsernameLen => (
            connack_v3::BAD_USER_NAME_OR_PASSWORD,
            ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        ),
        Hit::TopicLen | Hit::TopicLevels => {
            (connack_v3::NOT_AUTHORIZED, ReasonCode::TOPIC_NAME_INVALID)
        }
    };
    refuse(framed, c.protocol, v3, v5).await;
}

/// The client id to use, and whether the broker assigned it; `Err` when
/// the id must be rejected (CONNACK 0x02 / 0x85).
fn client_id_for(c: &Connect) -> Result<(ClientId, bool), &'static str> {
    if c.client_id.is_empty() {
        return match c.protocol {
            ProtocolVersion::V31 => Err("MQTT 3.1 requires a client id"),
            ProtocolVersion::V311 if !c.clean_start => {
                Err("empty client id with a persistent session [MQTT-3.1.3-8]")
            }
            _ => Ok((
                ClientId::new(format!("mqttd-{:016x}", rand::random::<u64>())),
                true,
            )),
        };
    }
    if c.protocol == ProtocolVersion::V31 && c.client_id.len() > MAX_CLIENT_ID_LEN_V31 {
        return Err("MQTT 3.1 client ids are at most 23 characters");
    }
    Ok((ClientId::new(c.client_id.as_str()), false))
}

async fn accept<S>(framed: &mut Framed<S>, broker: &Broker, c: Connect) -> Option<Accepted>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ctx = &broker.ctx;
    let version = c.protocol;
    let peer = framed.meta.peer;
    if let Err(hit) = session_limits::check_connect(&ctx.config.limits, &c) {
        refuse_over_limit(framed, broker, &c, hit).await;
        return None;
    }
    let (client_id, assigned) = match client_id_for(&c) {
        Ok(x) => x,
        Err(why) => {
            tracing::info!(%peer, client_id = %c.client_id, reason = why, "client id rejected");
            refuse(
                framed,
                version,
                connack_v3::IDENTIFIER_REJECTED,
                ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
            )
            .await;
            return None;
        }
    };
    if version.is_v5() && c.properties.authentication_method.is_some() {
        // Enhanced authentication is not offered [MQTT-4.12.0-1].
        tracing::info!(%peer, %client_id, "enhanced authentication requested; refusing");
        refuse(framed, version, 0, ReasonCode::BAD_AUTHENTICATION_METHOD).await;
        return None;
    }
    let authenticated = {
        let password = c.password.as_deref();
        let req = framed
            .meta
            .connect_request(client_id.as_str(), c.username.as_deref(), password);
        framed.meta.auth().authenticate(&req).await
    };
    let mut client_ctx = match authenticated {
        Ok(client) => client,
        Err(e) => {
            ctx.metrics.auth_failures.inc();
            tracing::info!(%peer, %client_id, reason = %e, "authentication failed");
            let (v3, v5) = e.connack_codes();
            refuse(framed, version, v3, v5).await;
            return None;
        }
    };
    client_ctx.share(&client_id, &framed.meta.listener.name);
    if let Some(will) = &c.will {
        let auth = framed.meta.auth();
        if !auth
            .authorize_publish(&client_ctx, will.topic.as_str())
            .await
        {
            ctx.metrics.wills_denied.inc();
            tracing::info!(%peer, %client_id, topic = %will.topic, "will denied by ACL; refusing CONNECT");
            refuse(
                framed,
                version,
                connack_v3::NOT_AUTHORIZED,
                ReasonCode::NOT_AUTHORIZED,
            )
            .await;
            return None;
        }
    }
    // The subscriptions a resumed session would keep that this client may
    // not hold (only a session of its own identity is resumed).
    let revoked = match ctx.table.get(client_id.as_str()) {
        Some(entry) if !c.clean_start && owner(&entry) == client_ctx.identity() => {
            let auth = framed.meta.auth();
            denied_subscriptions(auth, &client_ctx, &entry.tx).await
        }
        _ => Vec::new(),
    };
    let asked_expiry_secs = match (version.is_v5(), c.clean_start) {
        (true, _) => c.properties.session_expiry_interval.unwrap_or(0),
        (false, true) => 0,
        (false, false) => NEVER_EXPIRES,
    };
    // Capped by limits.max_session_expiry_secs; a 5.0 client is told in
    // CONNACK (below), a 3.1.1 one cannot be.
    let session_expiry_secs = ctx.config.limits.granted_session_expiry(asked_expiry_secs);
    let keep_alive_secs = granted_keep_alive(c.keep_alive, ctx.config.mqtt.max_keepalive_secs);
    let conn_id = ctx.next_id();
    let info = Arc::new(ClientInfo {
        conn_id,
        peer,
        username: client_ctx.username.clone(),
        protocol: version,
        keep_alive_secs,
        connected_at: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        listener: framed.meta.listener.name.clone(),
    });
    let conn = ConnHandle {
        info,
        will: c.will.map(Box::new),
        receive_maximum: c.properties.receive_maximum,
        session_expiry_secs,
    };
    if broker.stopping.is_cancelled() {
        // Shutting down: a session started now would miss the wills step.
        refuse_unavailable(framed, version).await;
        return None;
    }
    let request = StartRequest {
        client_id: client_id.clone(),
        clean_start: c.clean_start,
        conn,
        revoked,
    };
    // Writes from here on are this start's (a stored session it ends, or
    // the new one saved), unless another connection's land meanwhile.
    let ticket = ctx.store.ticket();
    let started = match broker.manager.start_session(request).await {
        Ok(s) => s,
        Err(ManagerError::TooManySessions(max)) => {
            ctx.metrics.session_limits.sessions.inc();
            if let Some(suppressed) = LIMIT_LOG.check() {
                tracing::warn!(%peer, %client_id, max, suppressed, "CONNECT refused: limits.max_sessions reached");
            }
            refuse(
                framed,
                version,
                connack_v3::SERVER_UNAVAILABLE,
                ReasonCode::QUOTA_EXCEEDED,
            )
            .await;
            return None;
        }
        Err(e) => {
            tracing::error!(%peer, %client_id, error = %e, "cannot start session");
            refuse_unavailable(framed, version).await;
            return None;
        }
    };
    let mut ack = ConnAck {
        session_present: started.session_present,
        code: ReasonCode::SUCCESS,
        properties: Default::default(),
    };
    if version.is_v5() {
        let p = &mut ack.properties;
        let m = &ctx.config.mqtt;
        p.assigned_client_identifier = assigned.then(|| client_id.to_string());
        p.receive_maximum = (m.receive_maximum != u16::MAX).then_some(m.receive_maximum);
        p.maximum_packet_size = Some(m.max_packet_size_bytes);
        p.topic_alias_maximum = (m.topic_alias_maximum > 0).then_some(m.topic_alias_maximum);
        p.retain_available = (!m.retain_available).then_some(0);
        p.server_keep_alive = (keep_alive_secs != c.keep_alive).then_some(keep_alive_secs);
        if session_expiry_secs != asked_expiry_secs {
            // MQTT 5.0 section 3.2.2.3.2: the client uses the broker's value.
            p.session_expiry_interval = Some(session_expiry_secs);
            ctx.metrics.session_limits.expiry_capped.inc();
        }
        fit_connack(&mut ack, c.properties.maximum_packet_size);
    }
    // With `storage.durability: sync`, a persistent session is on disk
    // before the client hears it exists, and a stored session this start
    // ended (a clean start, or a resume without expiry) is gone from the
    // disk before the client hears so: a power cut must not bring it
    // back. (Another connection's write in between only costs a wait for
    // the fsync it needs anyway.)
    if ctx.store.acks_wait() && (started.session.is_stored() || ctx.store.ticket() > ticket) {
        ctx.store.wait_durable(ctx.store.ticket()).await;
    }
    if framed.send(&Packet::ConnAck(ack), version).await.is_err() {
        holder::release(started.session, DetachKind::Unclean);
        return None;
    }
    tracing::debug!(%peer, %client_id, %version, session_present = started.session_present, "client connected");
    Some(Accepted {
        session: started.session,
        fate: Fate::Detach,
        version,
        session_expiry_secs,
        v5: version.is_v5().then(|| {
            Box::new(Mqtt5 {
                aliases_in: InboundAliases::new(ctx.config.mqtt.topic_alias_maximum),
                aliases_out: OutboundAliases::new(c.properties.topic_alias_maximum.unwrap_or(0)),
                max_packet_out: c.properties.maximum_packet_size,
            })
        }),
        client: client_ctx,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(protocol: ProtocolVersion, id: &str, clean: bool) -> Connect {
        Connect {
            protocol,
            clean_start: clean,
            keep_alive: 0,
            client_id: id.to_string(),
            will: None,
            username: None,
            password: None,
            properties: Default::default(),
        }
    }

    #[test]
    fn client_id_rules() {
        use ProtocolVersion::*;
        assert!(client_id_for(&connect(V311, "", false)).is_err());
        let (id, assigned) = client_id_for(&connect(V311, "", true)).unwrap();
        assert!(assigned && !id.is_empty());
        assert!(client_id_for(&connect(V31, "", true)).is_err());
        assert!(client_id_for(&connect(V31, &"x".repeat(24), true)).is_err());
        assert!(client_id_for(&connect(V311, &"x".repeat(100), true)).is_ok());
        assert!(client_id_for(&connect(V5, "", false)).unwrap().1);
    }

    /// Found by the `connection` fuzz target: the CONNACK exceeded a small
    /// Maximum Packet Size of the client.
    #[test]
    fn connack_fits_the_client_maximum_packet_size() {
        let full = || {
            let mut ack = ConnAck {
                session_present: false,
                code: ReasonCode::SUCCESS,
                properties: Properties::default(),
            };
            let p = &mut ack.properties;
            p.assigned_client_identifier = Some("mqttd-0123456789abcdef".into());
            p.receive_maximum = Some(5);
            p.maximum_packet_size = Some(128);
            p.server_keep_alive = Some(19);
            ack
        };
        let len = |ack: &ConnAck| {
            let mut buf = BytesMut::new();
            encode(&Packet::ConnAck(ack.clone()), ProtocolVersion::V5, &mut buf).unwrap();
            buf.len()
        };
        let mut ack = full();
        fit_connack(&mut ack, None);
        assert_eq!(ack, full());
        fit_connack(&mut ack, Some(len(&full()) as u32));
        assert_eq!(ack, full(), "left alone when it fits");
        let mut ack = full();
        fit_connack(&mut ack, Some(40));
        assert!(len(&ack) <= 40);
        assert_eq!(
            ack.properties.assigned_client_identifier,
            full().properties.assigned_client_identifier
        );
        assert_eq!(ack.properties.receive_maximum, None);
        let mut ack = full();
        fit_connack(&mut ack, Some(16));
        assert_eq!((len(&ack), ack.properties), (5, Properties::default()));
        let mut ack = full();
        fit_connack(&mut ack, Some(1));
        assert_eq!(len(&ack), 5, "a bare CONNACK is all that can be sent");
    }

    #[test]
    fn keep_alive_cap() {
        assert_eq!(granted_keep_alive(100, 0), 100);
        assert_eq!(granted_keep_alive(0, 0), 0);
        assert_eq!(granted_keep_alive(100, 60), 60);
        assert_eq!(granted_keep_alive(0, 60), 60);
        assert_eq!(granted_keep_alive(30, 60), 30);
    }
}
