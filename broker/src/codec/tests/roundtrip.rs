//! Property tests: `decode(encode(p)) == p` for valid packets of every
//! version, arbitrary bytes never panic, and streaming decode in random
//! chunks yields what whole-buffer decode yields.

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;
use crate::codec::arbitrary::{connect, packet, versioned_packet, VERSIONS};

/// Decodes every packet in `bytes` with the free function, as a
/// connection would: `None` until a CONNECT, then its version.
fn decode_all(bytes: &[u8]) -> Result<Vec<Packet>, DecodeError> {
    let mut version = None;
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Some((p, used)) = decode(rest, version, DEFAULT_MAX_PACKET_SIZE)? {
        if let Packet::Connect(c) = &p {
            version = Some(c.protocol);
        }
        out.push(p);
        rest = rest.get(used..).unwrap_or_default();
    }
    Ok(out)
}

/// A CONNECT for some version followed by packets valid for it.
fn session() -> impl Strategy<Value = (ProtocolVersion, Vec<Packet>)> {
    crate::codec::arbitrary::version().prop_flat_map(|v| {
        (connect(v), vec(packet(v), 0..8)).prop_map(move |(c, mut rest)| {
            rest.insert(0, c);
            (v, rest)
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn round_trip((v, p) in versioned_packet()) {
        let bytes = enc(&p, v);
        let decoded = decode(&bytes, Some(v), u32::MAX);
        prop_assert_eq!(decoded, Ok(Some((p, bytes.len()))));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn connect_round_trips_before_the_version_is_known(
        (v, c) in crate::codec::arbitrary::version().prop_flat_map(|v| (Just(v), connect(v)))
    ) {
        let bytes = enc(&c, v);
        prop_assert_eq!(dec(&bytes, None), Ok(c));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..300)) {
        for version in [None, Some(V31), Some(V311), Some(V5)] {
            let mut rest = &bytes[..];
            while let Ok(Some((_, used))) = decode(rest, version, 1024) {
                prop_assert!(used > 0 && used <= rest.len());
                rest = &rest[used..];
            }
        }
    }

    #[test]
    fn mutated_packets_never_panic_and_re_encode(
        (v, p) in versioned_packet(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = enc(&p, v);
        for (at, byte) in flips {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        if let Ok(Some((decoded, _))) = decode(&bytes, Some(v), u32::MAX) {
            // Whatever decodes must survive its own round trip.
            let again = enc(&decoded, v);
            prop_assert_eq!(decode(&again, Some(v), u32::MAX), Ok(Some((decoded, again.len()))));
        }
    }

    #[test]
    fn streaming_matches_whole_buffer(
        (_v, packets) in session(),
        chunks in vec(1usize..40, 1..200),
    ) {
        let mut wire = BytesMut::new();
        for p in &packets {
            let version = match &packets[0] {
                Packet::Connect(c) => c.protocol,
                _ => unreachable!("session starts with connect"),
            };
            encode(p, version, &mut wire).unwrap();
        }
        let whole = decode_all(&wire);
        prop_assert_eq!(whole.as_ref(), Ok(&packets));

        let mut decoder = Decoder::new(u32::MAX);
        let mut buf = BytesMut::new();
        let mut streamed = Vec::new();
        let mut fed = 0;
        let mut sizes = chunks.iter().cycle();
        while fed < wire.len() {
            let n = (*sizes.next().unwrap()).min(wire.len() - fed);
            buf.extend_from_slice(&wire[fed..fed + n]);
            fed += n;
            while let Some(p) = decoder.decode(&mut buf).unwrap() {
                streamed.push(p);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(Ok(streamed), whole);
    }
}

#[test]
fn every_version_round_trips_pings() {
    for v in VERSIONS {
        for p in [Packet::PingReq, Packet::PingResp] {
            assert_eq!(dec(&enc(&p, v), Some(v)), Ok(p));
        }
    }
}
