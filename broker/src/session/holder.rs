//! The owner of a session without a connection.
//!
//! When a persistent session's connection goes, the session is handed to
//! a small task that keeps it: it queues what the router delivers (within
//! the session's bounds), publishes a delayed will when it is due, expires
//! the session, and answers control messages. A resume or takeover takes
//! the session out of it as a value ([`SessionMsg::Take`]) and the task
//! ends; so does an expiry or a destroy, which end the session.
//!
//! [`SessionMsg::Take`]: super::SessionMsg::Take

use tokio::time::Instant;

use super::session::{Control, Event, Flow, Session};
use super::DetachKind;

/// Lets `session` go from its connection, as `ending` says: it ends now,
/// or is kept offline by a holder task.
pub fn release(mut session: Box<Session>, ending: DetachKind) {
    session.publish_counters();
    match session.detach(ending) {
        Flow::Stop => session.end(),
        Flow::Continue => park(session),
    }
}

/// Keeps an offline session in a holder task until it is taken or ends.
pub fn park(session: Box<Session>) {
    tokio::spawn(hold(session));
}

async fn hold(mut session: Box<Session>) {
    // One timer for the holder's life, moved only when the deadline
    // changes: a timer made anew for each delivery would be registered in
    // and removed from tokio's timer wheel (under its lock) for every
    // message routed to every offline session.
    let mut deadline = session.next_deadline();
    let timer = tokio::time::sleep_until(deadline.unwrap_or_else(far_future));
    tokio::pin!(timer);
    loop {
        let event = tokio::select! {
            // A due expiry wins over a resume that arrives at the same
            // time: an expired session is never handed out.
            biased;
            _ = &mut timer, if deadline.is_some() => {
                if session.on_timer() == Flow::Stop {
                    session.end();
                    return;
                }
                rearm(&session, &mut deadline, timer.as_mut(), true);
                continue;
            }
            event = session.next_event() => event,
        };
        match event {
            Event::Delivery(d) => session.deliver(d),
            Event::Control(msg) => match session.control(msg) {
                Control::Take(reply) => match reply.send(session) {
                    Ok(()) => return,
                    // The taker gave up (the broker stops): keep it.
                    Err(returned) => session = returned,
                },
                Control::End(_) => {
                    session.end();
                    return;
                }
                Control::Stop => {
                    session.stop();
                    return;
                }
                Control::Handled | Control::CloseForShutdown | Control::KeepAliveExpired(_) => {}
            },
        }
        session.publish_counters();
        rearm(&session, &mut deadline, timer.as_mut(), false);
    }
}

/// Moves the timer to the session's next deadline if it changed (or it
/// just fired).
fn rearm(
    session: &Session,
    deadline: &mut Option<Instant>,
    timer: std::pin::Pin<&mut tokio::time::Sleep>,
    fired: bool,
) {
    let next = session.next_deadline();
    if next != *deadline || fired {
        *deadline = next;
        if let Some(at) = next {
            timer.reset(at);
        }
    }
}

/// A deadline that is never reached (the timer is not polled without a
/// real one).
fn far_future() -> Instant {
    Instant::now() + std::time::Duration::from_secs(86_400 * 365 * 30)
}
