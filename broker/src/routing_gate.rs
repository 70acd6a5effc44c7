//! Turns at routing: how many connections route their PUBLISH packets at
//! the same moment.
//!
//! Routing a PUBLISH is the broker's expensive work (a message matching
//! thousands of sessions takes a millisecond or more), and it runs on the
//! publisher's own task. Under a flood every publisher's task is runnable
//! at once, and tokio runs its tasks in turn: a new connection's accept,
//! its CONNECT and a subscriber's acknowledgements would each wait behind
//! a millisecond of routing per flooding publisher — seconds with a
//! thousand of them (the overload soak, bench/README.md).
//!
//! The gate gives routing a bounded number of turns, one per worker
//! thread of the runtime: a connection takes a turn before it routes a
//! PUBLISH and keeps it while it routes the packets already in its read
//! buffer. After a routing turn (`connection::ROUTING_TURN`) it gives the
//! turn back, asks for it again behind any publisher waiting, and keeps
//! it while it yields to the other tasks of its thread. Publishers that
//! find no free turn wait for one parked, in arrival order (tokio's
//! semaphore is fair), so they neither spin nor crowd the run queue: at
//! most one publisher per turn is runnable, and everything else a worker
//! has to do (connects, acknowledgements, deliveries, the control socket)
//! waits behind a few turns, not behind every flooding publisher's.
//! Without contention, a turn costs one atomic operation to take and one
//! to give back.
//!
//! `mqttd_routing_waits_total` counts the turns that had to wait: a broker
//! whose routing is its bottleneck shows it there first.

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::metrics::Counter;

/// The routing turns, shared by every connection of a broker.
#[derive(Debug)]
pub struct RoutingGate {
    turns: Semaphore,
}

/// A turn at routing, given back when dropped.
#[derive(Debug)]
pub struct Turn<'a> {
    _permit: SemaphorePermit<'a>,
}

impl RoutingGate {
    /// A gate with `turns` turns (at least one).
    pub fn new(turns: usize) -> RoutingGate {
        RoutingGate {
            turns: Semaphore::new(turns.max(1)),
        }
    }

    /// A gate with one turn per thread the runtime is likely to run
    /// (tokio's default: one worker per available CPU).
    pub fn per_cpu() -> RoutingGate {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        RoutingGate::new(cpus)
    }

    /// Takes a turn, waiting (parked) for one when all are taken, and
    /// counting such a wait in `waits`. `None` only if the gate were
    /// closed, which it never is: the caller then routes without a turn.
    pub async fn enter(&self, waits: &Counter) -> Option<Turn<'_>> {
        if let Ok(p) = self.turns.try_acquire() {
            return Some(Turn { _permit: p });
        }
        waits.inc();
        self.turns.acquire().await.ok().map(|p| Turn { _permit: p })
    }

    /// Turns free now.
    pub fn free(&self) -> usize {
        self.turns.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn turns_are_bounded_and_waiters_counted() {
        let gate = Arc::new(RoutingGate::new(2));
        let waits = Arc::new(Counter::default());
        let a = gate.enter(&waits).await.expect("free turn");
        let b = gate.enter(&waits).await.expect("free turn");
        assert_eq!(gate.free(), 0);
        assert_eq!(waits.get(), 0);
        let (g, w) = (gate.clone(), waits.clone());
        let waiter = tokio::spawn(async move {
            let _t = g.enter(&w).await.expect("turn after a wait");
        });
        // The waiter parks: it cannot finish while both turns are held.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        assert_eq!(waits.get(), 1);
        drop(a);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter got the turn given back")
            .expect("waiter task");
        drop(b);
        assert_eq!(gate.free(), 2);
    }

    #[tokio::test]
    async fn waiters_are_served_in_arrival_order() {
        let gate = Arc::new(RoutingGate::new(1));
        let waits = Arc::new(Counter::default());
        let held = gate.enter(&waits).await.expect("free turn");
        let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..5 {
            let (g, o, w) = (gate.clone(), order.clone(), waits.clone());
            tasks.push(tokio::spawn(async move {
                let _t = g.enter(&w).await.expect("turn");
                o.lock().push(i);
            }));
            // Each waiter queues before the next is spawned.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(held);
        for t in tasks {
            t.await.expect("waiter task");
        }
        assert_eq!(*order.lock(), vec![0, 1, 2, 3, 4]);
    }
}
