//! How a connection reached the broker: the listener it came through and
//! what its transport (TLS, WebSocket) established, handed to the
//! connection with the stream.
//!
//! - [`ws`]: MQTT over WebSocket as a byte stream.

pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::auth::{Auth, CertUser, ConnectRequest};
use crate::config::ListenerKind;

/// A listener's settings the connect flow needs, shared by its connections.
#[derive(Debug)]
pub struct ListenerCtx {
    pub name: Arc<str>,
    pub kind: ListenerKind,
    /// Overrides `auth.allow_anonymous` for this listener.
    pub allow_anonymous: Option<bool>,
    /// The broker's authentication and authorization.
    pub auth: Arc<Auth>,
    /// This listener's connections, bytes and TLS failures.
    pub metrics: Arc<crate::metrics::ListenerMetrics>,
}

/// One connection's transport facts.
#[derive(Debug)]
pub struct ConnMeta {
    pub listener: Arc<ListenerCtx>,
    pub peer: SocketAddr,
    /// The username from the client certificate, where the listener takes it.
    pub cert_user: CertUser,
    /// The connection's place under the connection bounds, given back
    /// when the connection ends (`None` in tests). Held here rather than
    /// beside the connection's future, which would then be stored twice
    /// in its task (an async wrapper keeps its argument and the future it
    /// awaits apart).
    pub slot: Option<crate::admission::Slot>,
}

impl ConnMeta {
    pub fn auth(&self) -> &Auth {
        &self.listener.auth
    }

    /// The authentication request for a CONNECT on this connection.
    pub fn connect_request<'a>(
        &'a self,
        client_id: &'a str,
        username: Option<&'a str>,
        password: Option<&'a [u8]>,
    ) -> ConnectRequest<'a> {
        ConnectRequest {
            peer: self.peer.ip(),
            client_id,
            username,
            password,
            listener: &self.listener.name,
            allow_anonymous: self.listener.allow_anonymous,
            cert_user: &self.cert_user,
        }
    }
}
