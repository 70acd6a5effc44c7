//! Sessions that must not come back after a kill, each with its part of
//! a broker life (`load`) and its check after the restart (`verify`): a
//! clean session, a session destroyed by a clean start, and sessions
//! whose expiry passed (MQTT 5.0, 1 s; one that disconnected, one that
//! was connected at the kill).

use std::net::SocketAddr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;
use tokio::time::Instant;

use crate::common::wire::{self, Conn, DISCONNECT, SUBACK};
use crate::state::idle;

/// Whether the broker has a session for `client_id`: a 5.0 CONNECT
/// without clean start and with no session expiry, so that a session it
/// finds ends with this connection.
async fn session_present(addr: SocketAddr, client_id: &str) -> bool {
    let (mut c, present) = Conn::open(addr, &wire::connect_v5(client_id, false, None))
        .await
        .expect("probe connects");
    let _ = c.send(&DISCONNECT).await;
    present
}

/// A 5.0 session with a 1 s expiry, created in one life and checked once
/// its expiry has surely passed.
struct Expiring {
    client_id: &'static str,
    /// Stays connected until the kill (else it disconnects at once).
    held: bool,
    /// Created in this life, not yet checked.
    created_in: Option<usize>,
    /// Gone for sure once this passes: set at the first restart after
    /// its creation (a session connected at a kill counts from the
    /// restart), plus its expiry and a margin.
    due: Option<Instant>,
}

const EXPIRY_SECS: u32 = 1;
const EXPIRY_MARGIN: Duration = Duration::from_millis(1_000);

impl Expiring {
    async fn load(&mut self, addr: SocketAddr, life: usize, delay: Duration) {
        if self.created_in.is_some() {
            return;
        }
        tokio::time::sleep(delay).await;
        self.created_in = Some(life);
        let connect = wire::connect_v5(self.client_id, true, Some(EXPIRY_SECS));
        let Ok((mut c, _)) = Conn::open(addr, &connect).await else {
            return;
        };
        // Messages queue for it while it is offline: its expiry drops them.
        let sub = wire::subscribe_v5(1, "crash/#", 1);
        if c.send(&sub).await.is_err() || c.expect(SUBACK).await.is_err() {
            return;
        }
        if self.held {
            idle(c).await;
        } else {
            let _ = c.send(&DISCONNECT).await;
        }
    }

    /// Probes the session once its time is up: `None` if not yet,
    /// `Some(error)` tells whether it came back.
    async fn verify(
        &mut self,
        addr: SocketAddr,
        life: usize,
        started: Instant,
    ) -> Option<Option<String>> {
        let created = self.created_in.filter(|c| *c < life)?;
        let expiry = Duration::from_secs(EXPIRY_SECS.into());
        let due = *self.due.get_or_insert(started + expiry + EXPIRY_MARGIN);
        if Instant::now() < due {
            return None;
        }
        self.created_in = None;
        self.due = None;
        let back = session_present(addr, self.client_id).await;
        Some(back.then(|| {
            format!(
                "{}: session expired ({EXPIRY_SECS} s, created in life {created}) came back",
                self.client_id
            )
        }))
    }

    fn pending_due(&self) -> Option<Instant> {
        self.due
    }
}

/// The sessions that must not come back.
pub struct Sessions {
    /// `crash-gone`'s persistent session was destroyed by a clean start
    /// (its CONNACK received).
    destroyed: bool,
    quit: Expiring,
    held: Expiring,
    rng: StdRng,
    pub probes: u64,
}

impl Sessions {
    pub fn new(rng: StdRng) -> Self {
        let expiring = |client_id, held| Expiring {
            client_id,
            held,
            created_in: None,
            due: None,
        };
        Sessions {
            destroyed: false,
            quit: expiring("crash-exp-quit", false),
            held: expiring("crash-exp-held", true),
            rng,
            probes: 0,
        }
    }

    pub async fn load(&mut self, addr: SocketAddr, life: usize) {
        let delays: [Duration; 3] =
            std::array::from_fn(|_| Duration::from_millis(self.rng.gen_range(0..150)));
        let gone_pause = Duration::from_millis(self.rng.gen_range(0..50));
        let clean = async {
            let Ok((mut c, _)) = Conn::open(addr, &wire::connect("crash-clean", true)).await else {
                return;
            };
            if c.send(&wire::subscribe(1, "crash/#", 1)).await.is_ok() {
                idle(c).await;
            }
        };
        let destroyed = &mut self.destroyed;
        let gone = async move {
            tokio::time::sleep(delays[0]).await;
            let Ok((mut c, _)) = Conn::open(addr, &wire::connect("crash-gone", false)).await else {
                return;
            };
            let sub = wire::subscribe(1, "crash/gone/#", 1);
            if c.send(&sub).await.is_err() || c.expect(SUBACK).await.is_err() {
                return;
            }
            let _ = c.send(&DISCONNECT).await;
            tokio::time::sleep(gone_pause).await;
            if let Ok((mut c, _)) = Conn::open(addr, &wire::connect("crash-gone", true)).await {
                *destroyed = true;
                let _ = c.send(&DISCONNECT).await;
            }
        };
        tokio::join!(
            clean,
            gone,
            self.quit.load(addr, life, delays[1]),
            self.held.load(addr, life, delays[2]),
        );
    }

    /// After a restart at `started`: the clean session and a destroyed
    /// one are gone, and so are the expiring ones whose time is up.
    pub async fn verify(&mut self, addr: SocketAddr, life: usize, started: Instant) -> Vec<String> {
        let mut errors = Vec::new();
        if session_present(addr, "crash-clean").await {
            errors.push("crash-clean: a clean session came back".into());
        }
        let present = session_present(addr, "crash-gone").await;
        if present && self.destroyed {
            errors.push("crash-gone: a session destroyed by a clean start came back".into());
        }
        self.destroyed = false;
        self.probes += 2;
        for e in [&mut self.quit, &mut self.held] {
            if let Some(result) = e.verify(addr, life, started).await {
                self.probes += 1;
                errors.extend(result);
            }
        }
        errors
    }

    /// When the expiring sessions still unchecked are due (the last life
    /// waits for it).
    pub fn last_due(&self) -> Option<Instant> {
        self.quit.pending_due().max(self.held.pending_due())
    }
}
