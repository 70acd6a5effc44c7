//! Start-up: the persistent sessions and retained messages the store held
//! come back before the first client is accepted.
//!
//! Each session goes back in the table, its subscriptions in the router,
//! and it waits offline in a holder (see [`super::holder`]) for its client
//! to resume it, its expiry counted in wall-clock time from when its
//! connection went. Retained messages go back in the retained store.

use std::sync::Arc;

use super::holder;
use super::session::Session;
use crate::context::Context;
use crate::store::load::Loaded;

/// Puts back what `loaded` holds; returns the number of sessions.
pub fn restore(ctx: &Arc<Context>, loaded: Loaded) -> usize {
    crate::retain::restore(ctx, loaded.retained);
    let life_start = loaded.life_start;
    let mut restored = 0;
    for loaded in loaded.sessions {
        let (session, entry) = Session::restore(ctx, loaded, life_start);
        if ctx.table.insert_new(entry).is_err() {
            // Client ids are unique in the store: cannot happen.
            tracing::error!(client_id = %session.client_id(), "stored session already in the table; skipped");
            continue;
        }
        ctx.metrics.sessions.inc();
        holder::park(session);
        restored += 1;
    }
    restored
}
