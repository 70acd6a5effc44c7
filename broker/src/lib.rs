//! `mqttd`: an MQTT 3.1.1 and 5.0 broker for the edge.
//!
//! The connect/session core follows emqttd's design: a connection validates
//! CONNECT and authenticates, then a pool of session-manager workers
//! (picked by hash of the client id) creates, resumes or destroys sessions
//! in a shared session table.
//!
//! # Layout
//!
//! - [`types`]: validated newtypes (client id, topic name/filter, packet id, QoS);
//! - [`codec`]: the MQTT wire format;
//! - [`control`]: the admin API on the control socket, health and metrics
//!   HTTP server;
//! - [`metrics`]: broker-wide counters rendered for Prometheus.

pub mod codec;
pub mod control;
pub mod metrics;
pub mod types;
