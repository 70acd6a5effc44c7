//! MQTT 5.0 test client: `rumqttc::v5` with its incoming packets (and the
//! reason it was disconnected) delivered on a channel.
#![allow(dead_code, clippy::large_enum_variant)]

use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{Filter, Packet, Publish, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, StateError};
use tokio::sync::mpsc;

use super::WAIT;

#[derive(Debug)]
pub enum V5Event {
    Packet(Packet),
    /// The event loop stopped; the server's DISCONNECT reason if any.
    Closed(String),
}

pub struct V5 {
    pub task: tokio::task::JoinHandle<()>,
    pub client: AsyncClient,
    pub rx: mpsc::UnboundedReceiver<V5Event>,
    pub connack: rumqttc::v5::mqttbytes::v5::ConnAck,
}

pub fn options(addr: SocketAddr, id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o
}

pub async fn connect(opts: MqttOptions) -> V5 {
    let (client, eventloop) = AsyncClient::new(opts, 1000);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(pump(eventloop, tx));
    let first = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("CONNACK in time")
        .expect("event loop alive");
    let connack = match first {
        V5Event::Packet(Packet::ConnAck(a)) => a,
        other => panic!("expected CONNACK, got {other:?}"),
    };
    V5 {
        task,
        client,
        rx,
        connack,
    }
}

pub async fn connect_id(addr: SocketAddr, id: &str) -> V5 {
    connect(options(addr, id)).await
}

async fn pump(mut el: EventLoop, tx: mpsc::UnboundedSender<V5Event>) {
    loop {
        match el.poll().await {
            Ok(Event::Incoming(p)) => {
                if tx.send(V5Event::Packet(p)).is_err() {
                    return;
                }
            }
            Ok(Event::Outgoing(_)) => {}
            Err(e) => {
                let why = match &e {
                    ConnectionError::MqttState(StateError::ServerDisconnect {
                        reason_code,
                        ..
                    }) => format!("{reason_code:?}"),
                    other => other.to_string(),
                };
                let _ = tx.send(V5Event::Closed(why));
                return;
            }
        }
    }
}

impl V5 {
    /// Drops the connection without DISCONNECT.
    pub fn kill(self) {
        self.task.abort();
    }

    pub async fn next(&mut self) -> V5Event {
        loop {
            let e = tokio::time::timeout(WAIT, self.rx.recv())
                .await
                .expect("event in time")
                .unwrap_or(V5Event::Closed("channel closed".into()));
            if !matches!(e, V5Event::Packet(Packet::PingResp(_))) {
                return e;
            }
        }
    }

    pub async fn publish(&mut self) -> Publish {
        loop {
            match self.next().await {
                V5Event::Packet(Packet::Publish(p)) => return p,
                V5Event::Closed(why) => panic!("closed while waiting for PUBLISH: {why}"),
                _ => {}
            }
        }
    }

    pub async fn no_publish(&mut self, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        while let Ok(Some(e)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            assert!(
                !matches!(e, V5Event::Packet(Packet::Publish(_))),
                "unexpected {e:?}"
            );
        }
    }

    /// Waits for the connection to close; returns the reason.
    pub async fn closed(&mut self) -> String {
        loop {
            if let V5Event::Closed(why) = self.next().await {
                return why;
            }
        }
    }

    pub async fn subscribe_filter(&mut self, filter: Filter, id: Option<usize>) -> Vec<String> {
        let props = rumqttc::v5::mqttbytes::v5::SubscribeProperties {
            id,
            user_properties: vec![],
        };
        self.client
            .subscribe_many_with_properties(vec![filter], props)
            .await
            .expect("subscribe");
        loop {
            match self.next().await {
                V5Event::Packet(Packet::SubAck(a)) => {
                    return a.return_codes.iter().map(|c| format!("{c:?}")).collect()
                }
                V5Event::Closed(why) => panic!("closed while subscribing: {why}"),
                _ => {}
            }
        }
    }

    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Vec<String> {
        self.subscribe_filter(Filter::new(filter, qos), None).await
    }

    pub async fn publish_props(
        &self,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: &str,
        props: PublishProperties,
    ) {
        self.client
            .publish_with_properties(topic, qos, retain, payload.to_string(), props)
            .await
            .expect("publish");
    }
}
