//! `mqttd`: an MQTT 3.1, 3.1.1 and 5.0 broker for the edge.
//!
//! The connect/session core follows emqttd's design: a connection validates
//! CONNECT and authenticates, then a pool of session-manager workers
//! (picked by hash of the client id) creates, resumes or destroys sessions
//! in a shared session table.
//!
//! # Layout
//!
//! - [`server`]: start (bind listeners) and stop the broker (wills first);
//! - [`config`]: the YAML configuration and its validation;
//! - [`preflight`]: every check start-up makes before binding (also `--check-config`);
//! - [`listener`]: accept loops and transport handshakes;
//! - [`admission`]: connection limits, accept rates and cheap refusals;
//! - [`tls`]: TLS configuration, client certificates, certificate reload;
//! - [`transport`]: WebSocket streams and per-connection transport facts;
//! - [`reload`]: SIGHUP and changed-file reloads (certificates, passwords, ACL), then subscription re-checks;
//! - [`file_stamp`]: noticing that a file changed;
//! - [`connection`]: framing and the per-connection loop;
//! - [`connect`]: the CONNECT flow (validate, authenticate, authorize the will, start session, CONNACK);
//! - [`keepalive`]: the 1.5 × keep alive rule, by one sweep of the session table;
//! - [`auth`]: who may connect, publish and subscribe (passwords, ACL, HTTP hook);
//! - [`session`]: the session value (one owner at a time: its connection's
//!   task or an offline holder), the session table, the manager pool
//!   (sessions belong to identities), re-authorization and stopping;
//! - [`session_limits`]: client id, username and topic lengths and topic levels (`limits:`);
//! - [`router`]: topic matching and retained messages;
//! - [`retain`]: retained messages under their limits, restored, expired;
//! - [`topic_alias`]: MQTT 5.0 topic aliases of a connection;
//! - [`publish`]: a client's PUBLISH/PUBREL and routing to sessions;
//! - [`backlog`]: back-pressure from the broker to publishers;
//! - [`budget`]: the broker's memory budget for the message copies sessions hold;
//! - [`rate`]: the per-connection publish rate (slowed by reading less);
//! - [`message`]: an application message in flight through the broker;
//! - [`memory`]: allocator settings that give memory back after a load;
//! - [`broker`], [`context`]: state shared by tasks;
//! - [`admin`]: the control API backend over the running broker;
//! - [`control`]: the admin API on the control socket, health and metrics HTTP server;
//! - [`metrics`]: broker-wide counters rendered for Prometheus;
//! - [`sys_topics`]: Mosquitto's `$SYS` topics, every `mqtt.sys_interval_secs`;
//! - [`logging`]: log setup;
//! - [`log_limit`]: rate limits for log lines clients can trigger;
//! - [`types`]: validated newtypes (client id, topic name/filter, packet id, QoS);
//! - [`codec`]: the MQTT wire format.

pub mod admin;
pub mod admission;
pub mod auth;
pub mod backlog;
pub mod broker;
pub mod budget;
pub mod codec;
pub mod config;
pub mod connect;
pub mod connection;
pub mod context;
pub mod control;
pub mod file_stamp;
pub mod keepalive;
pub mod listener;
pub mod log_limit;
pub mod logging;
pub mod memory;
pub mod message;
pub mod metrics;
pub mod preflight;
pub mod publish;
pub mod rate;
pub mod reload;
pub mod retain;
pub mod router;
pub mod routing_gate;
pub mod server;
pub mod session;
pub mod session_limits;
pub mod store;
pub mod sys_topics;
pub mod tls;
pub mod topic_alias;
pub mod transport;
pub mod types;
