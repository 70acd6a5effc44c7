//! Proptest strategies generating valid packets for each protocol version
//! (test only). The per-packet property sets are written out here again,
//! independently of `props`, from MQTT 5.0 table 2-4.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;

use super::decode_body::{
    AUTH_CODES, DISCONNECT_CODES, PUBACK_CODES, PUBREL_CODES, SUBACK_CODES, SUBACK_CODES_V3,
    UNSUBACK_CODES,
};
use super::decode_connect::{CONNACK_CODES, CONNACK_CODES_V3};
use super::packet::*;
use super::properties::Properties;
use crate::types::{PacketId, QoS, TopicFilter, TopicName};

/// Where a property block sits, for [`properties`].
#[derive(Debug, Clone, Copy)]
pub enum In {
    Connect,
    ConnAck,
    Publish,
    Will,
    Resp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

pub const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V31,
    ProtocolVersion::V311,
    ProtocolVersion::V5,
];

pub fn version() -> impl Strategy<Value = ProtocolVersion> {
    select(&VERSIONS[..])
}

/// Any valid MQTT string: no U+0000, mostly ASCII, sometimes any char.
pub fn string() -> impl Strategy<Value = String> {
    prop_oneof![3 => "[a-zA-Z0-9 /_-]{0,10}", 1 => "[^\\x00]{0,6}"]
}

pub fn bytes() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..40).prop_map(Bytes::from)
}

pub fn topic_name() -> impl Strategy<Value = TopicName> {
    prop_oneof![3 => "[a-zA-Z0-9/ _$-]{1,16}", 1 => "[^\\x00+#]{1,6}"]
        .prop_map(|s| TopicName::new(&s).expect("strategy yields valid names"))
}

pub fn topic_filter() -> impl Strategy<Value = TopicFilter> {
    let level = prop_oneof![Just("+".to_owned()), "[a-z0-9 ]{0,4}"];
    (any::<bool>(), vec(level, 1..4), any::<bool>()).prop_map(|(shared, levels, hash)| {
        let mut s = levels.join("/");
        if hash {
            s.push_str("/#");
        }
        if s.is_empty() {
            s.push('#');
        }
        if shared {
            s = format!("$share/g/{s}");
        }
        TopicFilter::new(&s).expect("strategy yields valid filters")
    })
}

pub fn packet_id() -> impl Strategy<Value = PacketId> {
    (1u16..).prop_map(|v| PacketId::new(v).expect("non-zero"))
}

pub fn qos() -> impl Strategy<Value = QoS> {
    select(&[QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][..])
}

fn opt<T: std::fmt::Debug + Clone>(
    s: impl Strategy<Value = T>,
) -> impl Strategy<Value = Option<T>> {
    option::weighted(0.25, s)
}

/// Every property with a valid value (then cut down by [`restrict`]).
fn all_properties() -> impl Strategy<Value = Properties> {
    let flag = || opt(0u8..=1);
    let a = (
        (flag(), opt(any::<u32>()), opt(string())),
        (
            opt(topic_name().prop_map(|t| t.as_str().to_owned())),
            opt(bytes()),
        ),
        (
            vec(1u32..=268_435_455, 0..3),
            opt(any::<u32>()),
            opt(string()),
        ),
        (opt(any::<u16>()), opt(string()), opt(bytes()), flag()),
    );
    let b = (
        (opt(any::<u32>()), flag(), opt(string()), opt(string())),
        (opt(string()), opt(1u16..), opt(any::<u16>()), opt(1u16..)),
        (flag(), flag(), vec((string(), string()), 0..3), opt(1u32..)),
        (flag(), flag(), flag()),
    );
    (a, b).prop_map(|(a, b)| Properties {
        payload_format_indicator: a.0 .0,
        message_expiry_interval: a.0 .1,
        content_type: a.0 .2,
        response_topic: a.1 .0,
        correlation_data: a.1 .1,
        subscription_identifiers: a.2 .0,
        session_expiry_interval: a.2 .1,
        assigned_client_identifier: a.2 .2,
        server_keep_alive: a.3 .0,
        authentication_method: a.3 .1,
        authentication_data: a.3 .2,
        request_problem_information: a.3 .3,
        will_delay_interval: b.0 .0,
        request_response_information: b.0 .1,
        response_information: b.0 .2,
        server_reference: b.0 .3,
        reason_string: b.1 .0,
        receive_maximum: b.1 .1,
        topic_alias_maximum: b.1 .2,
        topic_alias: b.1 .3,
        maximum_qos: b.2 .0,
        retain_available: b.2 .1,
        user_properties: b.2 .2,
        maximum_packet_size: b.2 .3,
        wildcard_subscription_available: b.3 .0,
        subscription_identifier_available: b.3 .1,
        shared_subscription_available: b.3 .2,
    })
}

/// Keeps only the properties allowed in `place` (5.0 table 2-4).
fn restrict(mut p: Properties, place: In) -> Properties {
    // Authentication Data needs an Authentication Method.
    if p.authentication_method.is_none() {
        p.authentication_data = None;
    }
    let user_properties = p.user_properties;
    match place {
        In::Connect => Properties {
            session_expiry_interval: p.session_expiry_interval,
            authentication_method: p.authentication_method,
            authentication_data: p.authentication_data,
            request_problem_information: p.request_problem_information,
            request_response_information: p.request_response_information,
            receive_maximum: p.receive_maximum,
            topic_alias_maximum: p.topic_alias_maximum,
            maximum_packet_size: p.maximum_packet_size,
            user_properties,
            ..Properties::default()
        },
        In::ConnAck => Properties {
            payload_format_indicator: None,
            message_expiry_interval: None,
            content_type: None,
            response_topic: None,
            correlation_data: None,
            subscription_identifiers: Vec::new(),
            request_problem_information: None,
            will_delay_interval: None,
            request_response_information: None,
            topic_alias: None,
            user_properties,
            ..p
        },
        In::Publish | In::Will => {
            let publish = matches!(place, In::Publish);
            Properties {
                payload_format_indicator: p.payload_format_indicator,
                message_expiry_interval: p.message_expiry_interval,
                content_type: p.content_type,
                response_topic: p.response_topic,
                correlation_data: p.correlation_data,
                subscription_identifiers: if publish {
                    p.subscription_identifiers
                } else {
                    Vec::new()
                },
                topic_alias: p.topic_alias.filter(|_| publish),
                will_delay_interval: p.will_delay_interval.filter(|_| !publish),
                user_properties,
                ..Properties::default()
            }
        }
        In::Resp | In::SubAck | In::UnsubAck => Properties {
            reason_string: p.reason_string,
            user_properties,
            ..Properties::default()
        },
        In::Subscribe => Properties {
            subscription_identifiers: p.subscription_identifiers.into_iter().take(1).collect(),
            user_properties,
            ..Properties::default()
        },
        In::Unsubscribe => Properties {
            user_properties,
            ..Properties::default()
        },
        In::Disconnect => Properties {
            session_expiry_interval: p.session_expiry_interval,
            server_reference: p.server_reference,
            reason_string: p.reason_string,
            user_properties,
            ..Properties::default()
        },
        In::Auth => Properties {
            authentication_method: p.authentication_method,
            authentication_data: p.authentication_data,
            reason_string: p.reason_string,
            user_properties,
            ..Properties::default()
        },
    }
}

/// Properties valid in `place` for `version` (always empty before 5.0).
pub fn properties(version: ProtocolVersion, place: In) -> BoxedStrategy<Properties> {
    if version.is_v5() {
        all_properties()
            .prop_map(move |p| restrict(p, place))
            .boxed()
    } else {
        Just(Properties::default()).boxed()
    }
}

pub fn will(v: ProtocolVersion) -> impl Strategy<Value = LastWill> {
    (
        topic_name(),
        bytes(),
        qos(),
        any::<bool>(),
        properties(v, In::Will),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| LastWill {
            topic,
            payload,
            qos,
            retain,
            properties,
        })
}

pub fn connect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let creds = (opt(string()), opt(bytes()));
    let head = (any::<bool>(), any::<u16>(), string());
    (head, opt(will(v)), creds, properties(v, In::Connect)).prop_map(
        move |((clean_start, keep_alive, client_id), will, (username, password), properties)| {
            // Before 5.0 a password needs a user name [MQTT-3.1.2-22].
            let username = match (&username, &password) {
                (None, Some(_)) if !v.is_v5() => Some("user".to_owned()),
                _ => username,
            };
            Packet::Connect(Box::new(Connect {
                protocol: v,
                clean_start,
                keep_alive,
                client_id,
                will,
                username,
                password,
                properties,
            }))
        },
    )
}

fn connack(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let codes = if v.is_v5() {
        CONNACK_CODES
    } else {
        CONNACK_CODES_V3
    };
    (any::<bool>(), select(codes), properties(v, In::ConnAck)).prop_map(
        move |(session_present, code, properties)| {
            Packet::ConnAck(ConnAck {
                // 3.1 has no session present flag; errors never have it.
                session_present: session_present && code == 0 && v != ProtocolVersion::V31,
                code: ReasonCode(code),
                properties,
            })
        },
    )
}

pub fn publish(v: ProtocolVersion) -> impl Strategy<Value = Publish> {
    let flags = (any::<bool>(), qos(), any::<bool>(), packet_id());
    (flags, topic_name(), bytes(), properties(v, In::Publish)).prop_map(
        |((dup, qos, retain, id), topic, payload, properties)| Publish {
            dup: dup && qos != QoS::AtMostOnce,
            qos,
            retain,
            topic,
            packet_id: (qos != QoS::AtMostOnce).then_some(id),
            payload,
            properties,
        },
    )
}

fn pub_resp(v: ProtocolVersion, codes: &'static [u8]) -> impl Strategy<Value = PubResp> {
    let codes = if v.is_v5() { codes } else { &[0][..] };
    (packet_id(), select(codes), properties(v, In::Resp)).prop_map(
        |(packet_id, code, properties)| PubResp {
            packet_id,
            code: ReasonCode(code),
            properties,
        },
    )
}

fn subscription(v: ProtocolVersion) -> impl Strategy<Value = (TopicFilter, SubscriptionOptions)> {
    let rh = select(
        &[
            RetainHandling::SendAtSubscribe,
            RetainHandling::SendIfNew,
            RetainHandling::DoNotSend,
        ][..],
    );
    (topic_filter(), qos(), any::<bool>(), any::<bool>(), rh).prop_map(
        move |(filter, qos, no_local, retain_as_published, retain_handling)| {
            let options = if v.is_v5() {
                SubscriptionOptions {
                    qos,
                    // No Local is a protocol error on shared subscriptions.
                    no_local: no_local && !filter.as_str().starts_with("$share/"),
                    retain_as_published,
                    retain_handling,
                }
            } else {
                SubscriptionOptions::with_qos(qos)
            };
            (filter, options)
        },
    )
}

fn codes(allowed: &'static [u8]) -> impl Strategy<Value = Vec<ReasonCode>> {
    vec(select(allowed).prop_map(ReasonCode), 1..4)
}

fn subscriptions(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let sub = (
        packet_id(),
        vec(subscription(v), 1..4),
        properties(v, In::Subscribe),
    )
        .prop_map(|(packet_id, filters, properties)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                filters,
                properties,
            })
        });
    let allowed = if v.is_v5() {
        SUBACK_CODES
    } else {
        SUBACK_CODES_V3
    };
    let suback = (packet_id(), codes(allowed), properties(v, In::SubAck)).prop_map(
        |(packet_id, codes, properties)| {
            Packet::SubAck(SubAck {
                packet_id,
                codes,
                properties,
            })
        },
    );
    let unsub = (
        packet_id(),
        vec(topic_filter(), 1..4),
        properties(v, In::Unsubscribe),
    )
        .prop_map(|(packet_id, filters, properties)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters,
                properties,
            })
        });
    let unsuback_codes = if v.is_v5() {
        codes(UNSUBACK_CODES).boxed()
    } else {
        Just(Vec::new()).boxed()
    };
    let unsuback = (packet_id(), unsuback_codes, properties(v, In::UnsubAck)).prop_map(
        |(packet_id, codes, properties)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                codes,
                properties,
            })
        },
    );
    prop_oneof![sub, suback, unsub, unsuback]
}

fn disconnect_or_auth(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    if !v.is_v5() {
        return Just(Packet::Disconnect(Disconnect::normal())).boxed();
    }
    let disconnect =
        (select(DISCONNECT_CODES), properties(v, In::Disconnect)).prop_map(|(code, properties)| {
            Packet::Disconnect(Disconnect {
                code: ReasonCode(code),
                properties,
            })
        });
    let auth = (select(AUTH_CODES), properties(v, In::Auth)).prop_map(|(code, properties)| {
        Packet::Auth(Auth {
            code: ReasonCode(code),
            properties,
        })
    });
    prop_oneof![disconnect, auth].boxed()
}

/// Any packet valid for `v`.
pub fn packet(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    prop_oneof![
        1 => connect(v),
        1 => connack(v),
        3 => publish(v).prop_map(Packet::Publish),
        1 => pub_resp(v, PUBACK_CODES).prop_map(Packet::PubAck),
        1 => pub_resp(v, PUBACK_CODES).prop_map(Packet::PubRec),
        1 => pub_resp(v, PUBREL_CODES).prop_map(Packet::PubRel),
        1 => pub_resp(v, PUBREL_CODES).prop_map(Packet::PubComp),
        2 => subscriptions(v),
        1 => Just(Packet::PingReq),
        1 => Just(Packet::PingResp),
        1 => disconnect_or_auth(v),
    ]
}

/// A version and a packet valid for it.
pub fn versioned_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    version().prop_flat_map(|v| (Just(v), packet(v)))
}
