//! Authentication (who may connect) and authorization (what a client may
//! publish and subscribe to).
//!
//! [`Auth`] combines the sources configured under `auth:`:
//!
//! - **connect**: a username taken from the client certificate (listeners
//!   with `username_from_cert`) is trusted as is; a client without a
//!   username is anonymous, accepted only where `allow_anonymous` holds
//!   (CONNACK 0x05 / 0x87 otherwise); a username is checked against the
//!   password file, then (if the user is not in it) the HTTP hook. A wrong
//!   password or unknown user gets CONNACK 0x04 / 0x86. With no password
//!   file and no hook, a username is only a label, accepted where
//!   anonymous clients are.
//! - **publish / subscribe**: the ACL file decides (deny wins, see
//!   [`acl`]); questions it has no rule for go to the HTTP hook if it
//!   authorizes, and are refused otherwise. With neither, everything is
//!   allowed.
//!
//! Password checks are bounded: at most `auth.max_concurrent_hashes` run
//! at once (a CONNECT waiting too long is refused as busy, CONNACK 0x89 /
//! 0x03), and an address or username with too many recent failures is
//! refused without a check (CONNACK 0x9F / 0x03), see [`throttle`].
//!
//! Files are reloaded by [`Auth::reload`] (SIGHUP); a file that fails to
//! load keeps its previous contents. Passwords are never logged.
//!
//! - [`password`]: the password file, checked on blocking threads through
//!   a bounded [`password::HashGate`];
//! - [`throttle`]: failed-login counting per address and per username;
//! - [`acl`]: ACL syntax and decisions; [`topics`]: filter set relations;
//! - [`http_hook`]: the HTTP endpoint; [`cache`]: its answer cache.

pub mod acl;
pub mod cache;
pub mod http_hook;
pub mod password;
pub mod throttle;
pub mod topics;

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use mqttd_passwd::{PasswdError, Verification};
use parking_lot::RwLock;

use crate::codec::{connack_v3, Connect, ReasonCode};
use crate::config::AuthConfig;
use crate::file_stamp::{stamp, FileStamp};
use crate::metrics::AuthMetrics;
pub use acl::{Acl, AclError, Decision};
use http_hook::{HookAction, HttpHook};
use password::{HashGate, PasswordStore};
use throttle::LoginThrottle;
pub use throttle::Throttled;

/// Why a client was refused; the connect flow turns it into a CONNACK code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// CONNACK 0x04 (3.1.1) / 0x86 (5.0).
    #[error("bad user name or password")]
    BadCredentials,
    /// CONNACK 0x05 (3.1.1) / 0x87 (5.0).
    #[error("not authorized")]
    NotAuthorized,
    /// Too many failed logins from the address or for the username; the
    /// password was not checked. CONNACK 0x03 server unavailable (3.1.1)
    /// / 0x9F connection rate exceeded (5.0).
    #[error("too many failed logins from this {0}; not checked")]
    Throttled(Throttled),
    /// No password hashing slot freed in time. CONNACK 0x03 server
    /// unavailable (3.1.1) / 0x89 server busy (5.0).
    #[error("password checks busy")]
    Busy,
}

impl From<Throttled> for AuthError {
    fn from(t: Throttled) -> AuthError {
        AuthError::Throttled(t)
    }
}

impl AuthError {
    /// The CONNACK return code (3.1.1) and reason code (5.0) to refuse with.
    pub fn connack_codes(self) -> (u8, ReasonCode) {
        match self {
            AuthError::BadCredentials => (
                connack_v3::BAD_USER_NAME_OR_PASSWORD,
                ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            ),
            AuthError::NotAuthorized => (connack_v3::NOT_AUTHORIZED, ReasonCode::NOT_AUTHORIZED),
            AuthError::Throttled(_) => (
                connack_v3::SERVER_UNAVAILABLE,
                ReasonCode::CONNECTION_RATE_EXCEEDED,
            ),
            AuthError::Busy => (connack_v3::SERVER_UNAVAILABLE, ReasonCode::SERVER_BUSY),
        }
    }
}

/// Why the auth sources cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error(transparent)]
    Passwords(#[from] PasswdError),
    #[error(transparent)]
    Acl(#[from] AclError),
    #[error("cannot set up the HTTP auth hook: {0}")]
    Hook(String),
}

/// A connected client as authorization sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCtx {
    /// Shared with the session's client id (see [`ClientCtx::share`]).
    pub client_id: Arc<str>,
    /// The authenticated username (from CONNECT or the certificate).
    pub username: Option<String>,
    /// The listener the client connected through.
    pub listener: Arc<str>,
}

impl ClientCtx {
    pub fn new(client_id: &str, username: Option<String>, listener: &str) -> ClientCtx {
        ClientCtx {
            client_id: client_id.into(),
            username,
            listener: listener.into(),
        }
    }

    /// Makes the client id and listener name point at the copies the
    /// broker already holds (the session's client id, the listener's
    /// name): a connection keeps this record for its whole life.
    pub fn share(&mut self, client_id: &crate::types::ClientId, listener: &Arc<str>) {
        if *self.client_id == *client_id.as_str() {
            self.client_id = client_id.arc();
        }
        if self.listener == *listener {
            self.listener = listener.clone();
        }
    }

    /// Who the client is, for session ownership.
    pub fn identity(&self) -> Identity {
        Identity::of(self.username.as_deref())
    }
}

/// Who a session belongs to: the identity authorization knows the client
/// by, i.e. the authenticated username (from the password file, the HTTP
/// hook or the client certificate with `username_from_cert`), or no one.
/// A session is resumed only by the identity that created it (see
/// `docs/security.md`, "Sessions belong to identities").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// A client without a username: its own identity, distinct from every user.
    Anonymous,
    User(Arc<str>),
}

impl Identity {
    pub fn of(username: Option<&str>) -> Identity {
        username.map_or(Identity::Anonymous, |u| Identity::User(u.into()))
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Anonymous => f.write_str("<anonymous>"),
            Identity::User(u) => f.write_str(u),
        }
    }
}

/// What the TLS layer learned about the client's identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CertUser {
    /// The listener does not take usernames from certificates, or the
    /// client sent no certificate (optional client auth).
    #[default]
    None,
    /// The username taken from the client certificate.
    Name(Box<str>),
    /// The listener takes usernames from certificates, but this one has
    /// no usable name: the client is refused.
    Unusable,
}

/// The credentials of one CONNECT and where it came from.
pub struct ConnectRequest<'a> {
    /// The client's network address, for failed-login throttling.
    pub peer: IpAddr,
    pub client_id: &'a str,
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
    pub listener: &'a str,
    /// The listener's `allow_anonymous`, overriding `auth.allow_anonymous`.
    pub allow_anonymous: Option<bool>,
    pub cert_user: &'a CertUser,
}

impl fmt::Debug for ConnectRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectRequest")
            .field("peer", &self.peer)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.map(|_| "<redacted>"))
            .field("listener", &self.listener)
            .field("allow_anonymous", &self.allow_anonymous)
            .field("cert_user", &self.cert_user)
            .finish()
    }
}

/// Every authentication and authorization source, combined.
pub struct Auth {
    allow_anonymous: bool,
    passwords: Option<PasswordStore>,
    acl_file: Option<PathBuf>,
    acl: RwLock<Option<Arc<Acl>>>,
    hook: Option<HttpHook>,
    hashes: HashGate,
    throttle: LoginThrottle,
    metrics: Arc<AuthMetrics>,
    /// The password and ACL files as last loaded, to notice changes.
    stamps: parking_lot::Mutex<Vec<FileStamp>>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("allow_anonymous", &self.allow_anonymous)
            .field("password_file", &self.passwords.as_ref().map(|p| p.path()))
            .field("acl_file", &self.acl_file)
            .field("http_hook", &self.hook.is_some())
            .finish()
    }
}

impl Auth {
    /// Loads the configured files; fails naming the file that is missing
    /// or malformed.
    pub fn new(cfg: &AuthConfig) -> Result<Auth, AuthSetupError> {
        // Before reading: a change while loading is seen by the next poll.
        let stamps = [&cfg.password_file, &cfg.acl_file]
            .into_iter()
            .flatten()
            .map(|p| stamp(p))
            .collect();
        let passwords = cfg
            .password_file
            .as_deref()
            .map(PasswordStore::load)
            .transpose()?;
        let acl = cfg.acl_file.as_deref().map(Acl::load).transpose()?;
        let hook = cfg
            .http_hook
            .as_ref()
            .map(HttpHook::new)
            .transpose()
            .map_err(|e| AuthSetupError::Hook(e.to_string()))?;
        let metrics = Arc::new(AuthMetrics::default());
        Ok(Auth {
            allow_anonymous: cfg.allow_anonymous,
            passwords,
            acl_file: cfg.acl_file.clone(),
            acl: RwLock::new(acl.map(Arc::new)),
            hook,
            hashes: HashGate::new(
                cfg.effective_max_concurrent_hashes(),
                cfg.hash_wait_timeout(),
                metrics.clone(),
            ),
            throttle: LoginThrottle::new(cfg, metrics.clone()),
            metrics,
            stamps: parking_lot::Mutex::new(stamps),
        })
    }

    /// Whether there are password or ACL files to watch.
    pub fn has_files(&self) -> bool {
        self.passwords.is_some() || self.acl_file.is_some()
    }

    fn file_stamps(&self) -> Vec<FileStamp> {
        let passwords = self.passwords.as_ref().map(|p| p.path());
        passwords
            .into_iter()
            .chain(self.acl_file.as_deref())
            .map(stamp)
            .collect()
    }

    /// Reloads the password and ACL files if either changed since the
    /// last load or attempt; `None` if neither did. Blocking file I/O.
    pub fn reload_if_changed(&self) -> Option<Result<(), AuthSetupError>> {
        if self.file_stamps() == *self.stamps.lock() {
            return None;
        }
        Some(self.reload())
    }

    /// Password hashing and throttling figures, for `/metrics`.
    pub fn metrics(&self) -> Arc<AuthMetrics> {
        self.metrics.clone()
    }

    /// Re-reads the password and ACL files and forgets cached hook
    /// answers. A file that fails keeps its previous contents; the first
    /// error is returned after both were tried. Blocking file I/O: the
    /// broker calls it on a blocking thread (see [`crate::reload`]).
    pub fn reload(&self) -> Result<(), AuthSetupError> {
        *self.stamps.lock() = self.file_stamps();
        let mut first_error = None;
        if let Some(p) = &self.passwords {
            match p.reload() {
                Ok(users) => {
                    tracing::info!(file = %p.path().display(), users, "password file reloaded")
                }
                Err(e) => first_error = Some(AuthSetupError::from(e)),
            }
        }
        if let Some(path) = &self.acl_file {
            match Acl::load(path) {
                Ok(acl) => {
                    *self.acl.write() = Some(Arc::new(acl));
                    tracing::info!(file = %path.display(), "ACL file reloaded");
                }
                Err(e) => {
                    first_error.get_or_insert(AuthSetupError::from(e));
                }
            }
        }
        if let Some(h) = &self.hook {
            h.clear_cache();
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Decides whether a CONNECT is accepted, and under which username.
    pub async fn authenticate(&self, req: &ConnectRequest<'_>) -> Result<ClientCtx, AuthError> {
        let ctx = |username: Option<&str>| {
            ClientCtx::new(req.client_id, username.map(str::to_string), req.listener)
        };
        match req.cert_user {
            CertUser::Name(name) => return Ok(ctx(Some(name))),
            CertUser::Unusable => return Err(AuthError::NotAuthorized),
            CertUser::None => {}
        }
        let anonymous_ok = req.allow_anonymous.unwrap_or(self.allow_anonymous);
        let Some(user) = req.username else {
            return if anonymous_ok {
                Ok(ctx(None))
            } else {
                Err(AuthError::NotAuthorized)
            };
        };
        let hook = self.hook.as_ref().filter(|h| h.authenticates());
        if self.passwords.is_some() || hook.is_some() {
            // Credentials are checked: a guesser's attempts are counted.
            self.throttle.check(req.peer, user)?;
            let checked = self.check_credentials(req, user, hook).await;
            if checked == Err(AuthError::BadCredentials) {
                self.throttle.record_failure(req.peer, user);
            }
            return checked.map(|()| ctx(Some(user)));
        }
        if anonymous_ok {
            // No credential store: the username is only a label.
            Ok(ctx(Some(user)))
        } else {
            Err(AuthError::BadCredentials)
        }
    }

    /// Checks `user`'s password against the file, then (unknown there)
    /// the hook.
    async fn check_credentials(
        &self,
        req: &ConnectRequest<'_>,
        user: &str,
        hook: Option<&HttpHook>,
    ) -> Result<(), AuthError> {
        if let Some(store) = &self.passwords {
            let password = req.password.unwrap_or_default();
            match store.verify(&self.hashes, user, password).await {
                Ok(Verification::Valid) => return Ok(()),
                Ok(Verification::Invalid) => return Err(AuthError::BadCredentials),
                Ok(Verification::UnknownUser) => {}
                Err(password::Busy) => return Err(AuthError::Busy),
            }
        }
        match hook {
            Some(hook) => {
                let asked = hook.authenticate(req.client_id, user, req.password, req.listener);
                if Box::pin(asked).await {
                    Ok(())
                } else {
                    Err(AuthError::BadCredentials)
                }
            }
            None => Err(AuthError::BadCredentials),
        }
    }

    /// Whether `client` may publish to `topic`.
    pub async fn authorize_publish(&self, client: &ClientCtx, topic: &str) -> bool {
        let decision = self.acl().map(|acl| acl.check_publish(client, topic));
        self.finish(client, decision, HookAction::Publish, topic)
            .await
    }

    /// Whether anything may be refused: an ACL file is loaded or the HTTP
    /// hook authorizes (without either, every publish and subscription is
    /// allowed, and re-checking them is pointless).
    pub fn restricts(&self) -> bool {
        self.acl.read().is_some() || self.hook.as_ref().is_some_and(|h| h.authorizes())
    }

    /// Whether [`Auth::authorize_publish`] may wait (for the HTTP hook).
    pub fn may_wait_for_publish(&self) -> bool {
        self.hook.as_ref().is_some_and(|h| h.authorizes())
    }

    /// Whether `client` may publish to `topic`, if that can be decided
    /// without asking the HTTP hook (`None`: only the hook can answer).
    /// Lets a session decide about its will without waiting.
    pub fn authorize_publish_now(&self, client: &ClientCtx, topic: &str) -> Option<bool> {
        let decision = self.acl().map(|acl| acl.check_publish(client, topic));
        match decision {
            Some(Decision::Allow) => Some(true),
            Some(Decision::Deny) => Some(false),
            Some(Decision::NoMatch) | None => match self.hook.as_ref() {
                Some(h) if h.authorizes() => None,
                _ => Some(decision.is_none()),
            },
        }
    }

    /// Whether `client` may subscribe to `filter` (it must be allowed to
    /// read every topic the filter can match).
    pub async fn authorize_subscribe(&self, client: &ClientCtx, filter: &str) -> bool {
        let decision = self.acl().map(|acl| acl.check_subscribe(client, filter));
        self.finish(client, decision, HookAction::Subscribe, filter)
            .await
    }

    fn acl(&self) -> Option<Arc<Acl>> {
        self.acl.read().clone()
    }

    /// Turns the ACL's decision (`None`: no ACL file) into the answer,
    /// asking the hook when the ACL has no rule.
    async fn finish(
        &self,
        client: &ClientCtx,
        acl: Option<Decision>,
        action: HookAction,
        topic: &str,
    ) -> bool {
        match acl {
            Some(Decision::Allow) => return true,
            Some(Decision::Deny) => return false,
            Some(Decision::NoMatch) | None => {}
        }
        match self.hook.as_ref().filter(|h| h.authorizes()) {
            // Boxed: the HTTP request's state is large, and connections
            // that never ask the hook should not carry room for it.
            Some(hook) => Box::pin(hook.authorize(client, action, topic)).await,
            None => acl.is_none(),
        }
    }
}

/// The CONNECT check before [`Auth`] existed: anonymous access only.
/// Superseded by [`Auth::authenticate`]; kept until the connect flow
/// calls it.
pub fn authenticate(cfg: &AuthConfig, connect: &Connect) -> Result<Option<String>, AuthError> {
    match &connect.username {
        None if !cfg.allow_anonymous => Err(AuthError::NotAuthorized),
        None => Ok(None),
        Some(_) if !cfg.allow_anonymous => Err(AuthError::BadCredentials),
        Some(u) => Ok(Some(u.clone())),
    }
}

#[cfg(test)]
mod tests;
