//! Dialing the broker: TCP (optionally from one of several loopback source
//! addresses) and TLS, giving boxed read and write halves.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};

use crate::tls::TlsTarget;

pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// Connections one source address can make to one broker port: the
/// default ephemeral port range (32768–60999) holds 28,232; keep a margin.
pub const CONNECTIONS_PER_SOURCE_IP: usize = 25_000;

/// Socket buffer sizes to ask for (bytes; the kernel doubles them and
/// enforces a minimum); `None` leaves the kernel's default and autotuning.
#[derive(Debug, Clone, Copy, Default)]
pub struct SocketBuffers {
    pub recv: Option<u32>,
    pub send: Option<u32>,
}

/// The broker under test and how to reach it.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub tls: Option<TlsTarget>,
    sources: Arc<SourceIps>,
}

/// Local addresses connections are bound to, in turn (empty: let the
/// kernel choose).
#[derive(Debug, Default)]
pub struct SourceIps {
    ips: Vec<IpAddr>,
    next: AtomicUsize,
}

impl SourceIps {
    /// `127.0.0.1` .. `127.0.0.count` (the whole 127/8 block is local on
    /// Linux); none when `count` is 0 or 1, so the kernel's defaults apply.
    pub fn loopback(count: usize) -> SourceIps {
        let ips = if count <= 1 {
            Vec::new()
        } else {
            (1..=count.min(254))
                .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i as u8)))
                .collect()
        };
        SourceIps {
            ips,
            next: AtomicUsize::new(0),
        }
    }

    fn pick(&self) -> Option<IpAddr> {
        if self.ips.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.ips.len();
        Some(self.ips[i])
    }
}

/// Source addresses needed for `connections` to one port without running
/// out of ephemeral ports.
pub fn source_ips_needed(connections: usize) -> usize {
    connections.div_ceil(CONNECTIONS_PER_SOURCE_IP).max(1)
}

impl Target {
    pub fn new(addr: SocketAddr, tls: Option<TlsTarget>) -> Self {
        Target {
            addr,
            tls,
            sources: Arc::new(SourceIps::default()),
        }
    }

    /// The same target, dialing from `sources` (only for a loopback broker).
    pub fn with_sources(mut self, sources: SourceIps) -> Self {
        if self.addr.ip().is_loopback() {
            self.sources = Arc::new(sources);
        }
        self
    }

    pub fn source_count(&self) -> usize {
        self.sources.ips.len().max(1)
    }

    /// Opens a TCP connection (and TLS session, if configured).
    pub async fn dial(&self) -> anyhow::Result<(BoxRead, BoxWrite)> {
        let tcp = self.connect_tcp(SocketBuffers::default()).await?;
        self.wrap(tcp).await
    }

    /// Opens the TCP connection only, with the socket buffers given (set
    /// before connecting, since the window scale is agreed in the
    /// handshake): a small SO_RCVBUF for a client that means to stop
    /// reading, a small SO_SNDBUF for a publisher that should not park
    /// megabytes in the kernel.
    pub async fn connect_tcp(&self, bufs: SocketBuffers) -> anyhow::Result<TcpStream> {
        let socket = match self.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .context("cannot create a socket")?;
        if let Some(size) = bufs.recv {
            socket
                .set_recv_buffer_size(size)
                .context("cannot set SO_RCVBUF")?;
        }
        if let Some(size) = bufs.send {
            socket
                .set_send_buffer_size(size)
                .context("cannot set SO_SNDBUF")?;
        }
        if let Some(ip) = self.sources.pick() {
            socket
                .bind(SocketAddr::new(ip, 0))
                .with_context(|| format!("cannot bind source address {ip}"))?;
        }
        let tcp = socket
            .connect(self.addr)
            .await
            .with_context(|| format!("cannot connect to {}", self.addr))?;
        tcp.set_nodelay(true).context("cannot set TCP_NODELAY")?;
        Ok(tcp)
    }

    /// Splits an open connection into halves, after the TLS handshake if
    /// configured.
    pub async fn wrap(&self, tcp: TcpStream) -> anyhow::Result<(BoxRead, BoxWrite)> {
        match &self.tls {
            None => {
                let (r, w) = tcp.into_split();
                Ok((Box::new(r), Box::new(w)))
            }
            Some(tls) => {
                let stream = tls
                    .connector
                    .connect(tls.server_name.clone(), tcp)
                    .await
                    .with_context(|| format!("TLS handshake with {} failed", self.addr))?;
                let (r, w) = tokio::io::split(stream);
                Ok((Box::new(r), Box::new(w)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ips_round_robin() {
        let s = SourceIps::loopback(3);
        let picks: Vec<_> = (0..4).filter_map(|_| s.pick()).collect();
        assert_eq!(picks[0], IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(picks[2], IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)));
        assert_eq!(picks[3], picks[0]);
        assert!(SourceIps::loopback(1).pick().is_none());
    }

    #[test]
    fn source_ips_for_connection_counts() {
        assert_eq!(source_ips_needed(0), 1);
        assert_eq!(source_ips_needed(25_000), 1);
        assert_eq!(source_ips_needed(100_000), 4);
        assert_eq!(source_ips_needed(100_001), 5);
    }
}
