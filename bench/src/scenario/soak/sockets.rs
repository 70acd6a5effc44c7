//! The broker's end of a connection, found in the kernel's socket table
//! (`/proc/net/tcp`, `/proc/net/tcp6`).
//!
//! A client that never reads cannot learn that the broker closed it: the
//! broker's FIN waits behind the data its full receive window refuses. The
//! broker's own socket tells: ESTABLISHED while the broker holds the
//! connection, FIN_WAIT1 and the like once it has closed it (the kernel
//! still trying to deliver), absent once it is gone.

use std::net::SocketAddr;

/// TCP_ESTABLISHED in the kernel's `st` column.
const ESTABLISHED: u8 = 0x01;

/// The broker's end of one connection, as the socket table shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Present, with its state and the bytes in its send queue.
    Present { state: u8, send_queue: u64 },
    /// Not in the table: the broker closed it and the kernel let it go.
    Gone,
}

impl Seen {
    /// Whether the broker still holds the connection.
    pub fn connected(self) -> bool {
        matches!(self, Seen::Present { state, .. } if state == ESTABLISHED)
    }

    /// Bytes the broker's kernel still holds for the peer.
    pub fn send_queue(self) -> u64 {
        match self {
            Seen::Present { send_queue, .. } => send_queue,
            Seen::Gone => 0,
        }
    }
}

/// An address as the socket table prints it: each 32-bit word of the IP
/// in the machine's byte order, in hex, then the port in hex.
pub fn proc_addr(addr: SocketAddr) -> String {
    let ip = match addr {
        SocketAddr::V4(a) => format!("{:08X}", u32::from_ne_bytes(a.ip().octets())),
        SocketAddr::V6(a) => a
            .ip()
            .octets()
            .chunks_exact(4)
            .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
            .collect(),
    };
    format!("{ip}:{:04X}", addr.port())
}

/// The entry whose local address is `local` and remote address `remote`
/// in a socket table's text.
pub fn find(table: &str, local: SocketAddr, remote: SocketAddr) -> Seen {
    let (l, r) = (proc_addr(local), proc_addr(remote));
    for line in table.lines().skip(1) {
        let mut f = line.split_whitespace().skip(1);
        let (Some(la), Some(ra), Some(st), Some(queues)) = (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        if !la.eq_ignore_ascii_case(&l) || !ra.eq_ignore_ascii_case(&r) {
            continue;
        }
        let state = u8::from_str_radix(st, 16).unwrap_or(0);
        let send_queue = queues
            .split(':')
            .next()
            .and_then(|q| u64::from_str_radix(q, 16).ok())
            .unwrap_or(0);
        return Seen::Present { state, send_queue };
    }
    Seen::Gone
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_endian = "little")]
    #[test]
    fn finds_the_broker_end() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
           0: 0100007F:0753 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
           1: 0100007F:0753 0100007F:A1B2 01 0002F000:00000000 01:00000014 00000000     0        0 2 1 0 20 4 30 10 -1\n\
           2: 0100007F:0753 0100007F:A1B3 04 00001000:00000000 01:00000014 00000000     0        0 0 1 0 20 4 30 10 -1\n";
        let broker: SocketAddr = "127.0.0.1:1875".parse().unwrap();
        let seen = find(table, broker, "127.0.0.1:41394".parse().unwrap());
        assert_eq!(
            seen,
            Seen::Present {
                state: 1,
                send_queue: 0x2f000
            }
        );
        assert!(seen.connected());
        let closing = find(table, broker, "127.0.0.1:41395".parse().unwrap());
        assert!(!closing.connected());
        assert_eq!(closing.send_queue(), 0x1000);
        let gone = find(table, broker, "127.0.0.1:9".parse().unwrap());
        assert_eq!(gone, Seen::Gone);
        assert!(!gone.connected());
        assert_eq!(
            proc_addr("[::1]:1883".parse().unwrap()),
            "00000000000000000000000001000000:075B"
        );
    }

    #[test]
    fn skips_malformed_lines() {
        let broker: SocketAddr = "127.0.0.1:1875".parse().unwrap();
        assert_eq!(find("header\n0: x\n\n", broker, broker), Seen::Gone);
    }
}
