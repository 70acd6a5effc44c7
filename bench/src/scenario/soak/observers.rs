//! What the soak watches the broker with: healthy subscribers that read
//! everything, the stuck subscriber that reads nothing after its SUBACK,
//! and the probe that opens a new connection every second.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use bytes::BytesMut;
use mqttd::codec::Packet;
use mqttd::types::QoS;
use tokio::io::AsyncWriteExt;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{interval_at, timeout, timeout_at, MissedTickBehavior};

use super::{sockets, Args, Topics};
use crate::ctx::{Ctx, Errors};
use crate::mqtt::{self, Client, Incoming, STREAM_BUFFER};
use crate::net::SocketBuffers;
use crate::payload::now_ns;
use crate::report::{Better, Report};
use crate::stats::latency::LatencyHist;

/// The healthy subscribers, connected and subscribed, not yet reading.
pub struct Healthy {
    clients: Vec<Client>,
    view: HealthyView,
}

/// What the sampler reads of the healthy subscribers while they run.
#[derive(Clone)]
pub struct HealthyView {
    /// Messages received, per subscriber.
    pub received: Arc<[AtomicU64]>,
    /// Whether each is still connected.
    pub alive: Arc<[AtomicBool]>,
    /// Delivery latency since the sampler last took it.
    pub latency: Arc<Mutex<LatencyHist>>,
}

impl Healthy {
    /// Connects `n` subscribers (clean sessions) to the flooded topics at
    /// QoS 1.
    pub async fn connect(ctx: &Ctx, n: u32, topics: &Topics) -> anyhow::Result<Healthy> {
        let mut clients = Vec::new();
        for i in 0..n {
            let opts = ctx.connect_opts(format!("{}-h{i}", ctx.run_id), true);
            let (mut client, _) = Client::connect(&ctx.target, &opts).await?;
            client.subscribe(&topics.filter, QoS::AtLeastOnce).await?;
            clients.push(client);
        }
        let view = HealthyView {
            received: (0..n).map(|_| AtomicU64::new(0)).collect(),
            alive: (0..n).map(|_| AtomicBool::new(true)).collect(),
            latency: Arc::new(Mutex::new(LatencyHist::new())),
        };
        Ok(Healthy { clients, view })
    }

    pub fn view(&self) -> HealthyView {
        self.view.clone()
    }

    /// Starts reading, until `stop`.
    pub fn start(self, stop: Instant, errors: Arc<Errors>) -> HealthyTasks {
        let mut tasks = JoinSet::new();
        let whole = Arc::new(Mutex::new(LatencyHist::new()));
        for (i, client) in self.clients.into_iter().enumerate() {
            let (view, errors, whole) = (self.view.clone(), errors.clone(), whole.clone());
            tasks.spawn(async move {
                if let Err(e) = read(client, i, &view, &whole, stop).await {
                    view.alive[i].store(false, Ordering::Relaxed);
                    errors.record(&e.context("a healthy subscriber lost its connection"));
                }
            });
        }
        HealthyTasks {
            tasks,
            view: self.view,
            whole,
        }
    }
}

/// Reads and acknowledges everything until `stop`.
async fn read(
    client: Client,
    i: usize,
    view: &HealthyView,
    whole: &Mutex<LatencyHist>,
    stop: Instant,
) -> anyhow::Result<()> {
    let Client {
        mut reader,
        mut writer,
        version,
        ..
    } = client;
    reader.set_chunk(STREAM_BUFFER);
    let mut acks = BytesMut::new();
    let mut local = LatencyHist::new();
    loop {
        let now = now_ns();
        let mut got = 0;
        while let Some(frame) = reader.next()? {
            if let Incoming::Publish {
                qos,
                packet_id,
                stamp,
            } = frame
            {
                got += 1;
                if let Some(s) = stamp {
                    local.record(s.latency(now));
                }
                if let (1, Some(id)) = (qos, packet_id) {
                    if let Some(ack) = mqtt::ack_packet(Packet::PubAck, id) {
                        mqtt::encode(&ack, version, &mut acks)?;
                    }
                }
            }
        }
        if got > 0 {
            view.received[i].fetch_add(got, Ordering::Relaxed);
            // One lock per read, not per message.
            if let Ok(mut h) = view.latency.lock() {
                h.merge(&local);
            }
            if let Ok(mut h) = whole.lock() {
                h.merge(&local);
            }
            local = LatencyHist::new();
        }
        if !acks.is_empty() {
            match timeout_at(stop.into(), writer.write_all(&acks)).await {
                Ok(r) => r?,
                Err(_) => return Ok(()),
            }
            acks.clear();
        }
        match timeout_at(stop.into(), reader.fill()).await {
            Err(_) => return Ok(()),
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => return Err(anyhow!("the broker closed the connection")),
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// The healthy subscribers at work.
pub struct HealthyTasks {
    tasks: JoinSet<()>,
    view: HealthyView,
    whole: Arc<Mutex<LatencyHist>>,
}

/// The healthy subscribers' totals.
pub struct HealthyTotals {
    pub received: u64,
    pub dropped: u64,
    pub latency: LatencyHist,
}

impl HealthyTasks {
    pub async fn finish(mut self) -> HealthyTotals {
        while self.tasks.join_next().await.is_some() {}
        HealthyTotals {
            received: self
                .view
                .received
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .sum(),
            dropped: self
                .view
                .alive
                .iter()
                .filter(|a| !a.load(Ordering::Relaxed))
                .count() as u64,
            latency: self.whole.lock().map(|h| h.clone()).unwrap_or_default(),
        }
    }
}

impl HealthyTotals {
    pub fn fill(&self, r: &mut Report) {
        let p = self.latency.percentiles();
        r.metric(
            "healthy_received",
            self.received as f64,
            "msg",
            Better::Higher,
        )
        .metric(
            "healthy_disconnected",
            self.dropped as f64,
            "",
            Better::Lower,
        )
        .metric(
            "healthy_latency_p50_ms",
            p.p50_us / 1000.0,
            "ms",
            Better::Lower,
        )
        .metric(
            "healthy_latency_p99_ms",
            p.p99_us / 1000.0,
            "ms",
            Better::Lower,
        );
    }
}

/// The stuck subscriber: subscribed, then never read again. Its socket
/// stays open until [`Stuck::close`].
pub struct Stuck {
    /// Held, never read: the point of the stuck subscriber.
    client: Client,
    pub view: StuckView,
}

/// Where to look for the broker's end of the stuck subscriber's connection.
#[derive(Debug, Clone, Copy)]
pub struct StuckView {
    broker: SocketAddr,
    local: SocketAddr,
}

impl StuckView {
    /// The broker's end of the connection in the kernel's socket table, if
    /// the broker is on this machine (a loopback address); `None` when
    /// that cannot be told.
    pub fn state(&self) -> Option<sockets::Seen> {
        if !self.broker.ip().is_loopback() {
            return None;
        }
        let table = if self.broker.is_ipv4() {
            "/proc/net/tcp"
        } else {
            "/proc/net/tcp6"
        };
        let text = std::fs::read_to_string(table).ok()?;
        Some(sockets::find(&text, self.broker, self.local))
    }
}

impl Stuck {
    pub async fn connect(ctx: &Ctx, args: &Args, topics: &Topics) -> anyhow::Result<Stuck> {
        let bufs = SocketBuffers {
            recv: Some(args.stuck_rcvbuf),
            send: None,
        };
        let tcp = ctx.target.connect_tcp(bufs).await?;
        let local = tcp.local_addr()?;
        let (rd, wr) = ctx.target.wrap(tcp).await?;
        let mut opts = ctx.connect_opts(format!("{}-stuck", ctx.run_id), true);
        opts.keep_alive = args.stuck_keepalive;
        let (mut client, _) = Client::handshake(rd, wr, &opts).await?;
        client.subscribe(&topics.filter, QoS::AtLeastOnce).await?;
        Ok(Stuck {
            client,
            view: StuckView {
                broker: ctx.target.addr,
                local,
            },
        })
    }

    /// Closes the socket, kept open (and unread) until now: dropping the
    /// client is what closes it, so the soak calls this only once sampling
    /// is over.
    pub fn close(self) {
        drop(self.client);
    }
}

/// One probe: when it started (seconds into the flood) and how long its
/// CONNACK took, or why it failed.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeResult {
    pub started_secs: f64,
    pub outcome: Result<Duration, String>,
}

/// The probe, connecting once a second.
pub struct Probe {
    task: JoinHandle<Vec<ProbeResult>>,
}

impl Probe {
    /// Opens a new connection (clean session, CONNECT, CONNACK, DISCONNECT)
    /// every second from `start` until `stop`; a probe slower than
    /// `limit` counts as failed. Probes overlap when the broker is slow,
    /// so a slow one does not delay the next.
    pub fn start(ctx: &Arc<Ctx>, limit: Duration, start: Instant, stop: Instant) -> Probe {
        let ctx = ctx.clone();
        let task = tokio::spawn(async move {
            let mut tick = interval_at(start.into(), Duration::from_secs(1));
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut probes = JoinSet::new();
            let mut k = 0u64;
            loop {
                tick.tick().await;
                let began = Instant::now();
                if began >= stop {
                    break;
                }
                let ctx = ctx.clone();
                let opts = ctx.connect_opts(format!("{}-probe{k}", ctx.run_id), true);
                k += 1;
                probes.spawn(async move {
                    let outcome = match timeout(limit, Client::connect(&ctx.target, &opts)).await {
                        Ok(Ok((client, _))) => {
                            let took = began.elapsed();
                            let _ = client.disconnect().await;
                            Ok(took)
                        }
                        Ok(Err(e)) => Err(format!("{e:#}")),
                        Err(_) => Err(format!("no CONNACK within {limit:?}")),
                    };
                    ProbeResult {
                        started_secs: began.saturating_duration_since(start).as_secs_f64(),
                        outcome,
                    }
                });
            }
            let mut out = Vec::new();
            while let Some(r) = probes.join_next().await {
                if let Ok(r) = r {
                    out.push(r);
                }
            }
            out.sort_by(|a, b| a.started_secs.total_cmp(&b.started_secs));
            out
        });
        Probe { task }
    }

    pub async fn finish(self) -> Vec<ProbeResult> {
        self.task.await.unwrap_or_default()
    }
}
