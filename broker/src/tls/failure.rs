//! Why a TLS handshake failed, in the few classes an operator acts on
//! (counted in `mqttd_tls_handshake_failures_total{reason}`): a device
//! failing TLS is otherwise invisible, its connection never reaching MQTT.

use rustls::{AlertDescription, CertificateError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// Mutual TLS required and the client sent no certificate.
    NoClientCert,
    /// The client's certificate is not signed by the configured client CA.
    UnknownCa,
    /// The client's certificate is otherwise unusable (expired, revoked,
    /// wrong purpose, bad signature).
    BadClientCert,
    /// The client refused the broker's certificate (an alert from it).
    ServerCertRejected,
    /// No TLS version, cipher suite or ALPN protocol in common, or not
    /// TLS at all (plain MQTT on a TLS port).
    ProtocolMismatch,
    /// The handshake did not finish within the listener's timeout.
    Timeout,
    /// Anything else (a connection closed mid-handshake, ...).
    Other,
}

impl HandshakeFailure {
    pub const ALL: [HandshakeFailure; 7] = [
        HandshakeFailure::NoClientCert,
        HandshakeFailure::UnknownCa,
        HandshakeFailure::BadClientCert,
        HandshakeFailure::ServerCertRejected,
        HandshakeFailure::ProtocolMismatch,
        HandshakeFailure::Timeout,
        HandshakeFailure::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::NoClientCert => "no_client_cert",
            HandshakeFailure::UnknownCa => "unknown_ca",
            HandshakeFailure::BadClientCert => "bad_client_cert",
            HandshakeFailure::ServerCertRejected => "server_cert_rejected",
            HandshakeFailure::ProtocolMismatch => "protocol_mismatch",
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Other => "other",
        }
    }

    /// Classifies the error of a failed accept (tokio-rustls carries the
    /// `rustls::Error` inside the `io::Error`).
    pub fn of(e: &std::io::Error) -> HandshakeFailure {
        if e.kind() == std::io::ErrorKind::TimedOut {
            return HandshakeFailure::Timeout;
        }
        match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(r) => Self::of_rustls(r),
            None => HandshakeFailure::Other,
        }
    }

    fn of_rustls(e: &rustls::Error) -> HandshakeFailure {
        use rustls::Error as E;
        match e {
            E::NoCertificatesPresented => HandshakeFailure::NoClientCert,
            E::InvalidCertificate(CertificateError::UnknownIssuer) => HandshakeFailure::UnknownCa,
            E::InvalidCertificate(_) => HandshakeFailure::BadClientCert,
            E::AlertReceived(
                AlertDescription::UnknownCA
                | AlertDescription::BadCertificate
                | AlertDescription::CertificateUnknown
                | AlertDescription::CertificateExpired
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::AccessDenied,
            ) => HandshakeFailure::ServerCertRejected,
            E::AlertReceived(
                AlertDescription::ProtocolVersion
                | AlertDescription::HandshakeFailure
                | AlertDescription::NoApplicationProtocol,
            )
            | E::PeerIncompatible(_)
            | E::InvalidMessage(_)
            | E::NoApplicationProtocol => HandshakeFailure::ProtocolMismatch,
            _ => HandshakeFailure::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(e: rustls::Error) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn classes() {
        use HandshakeFailure as F;
        let cases = [
            (io(rustls::Error::NoCertificatesPresented), F::NoClientCert),
            (
                io(rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer,
                )),
                F::UnknownCa,
            ),
            (
                io(rustls::Error::InvalidCertificate(CertificateError::Expired)),
                F::BadClientCert,
            ),
            (
                io(rustls::Error::AlertReceived(AlertDescription::UnknownCA)),
                F::ServerCertRejected,
            ),
            (
                io(rustls::Error::InvalidMessage(
                    rustls::InvalidMessage::InvalidContentType,
                )),
                F::ProtocolMismatch,
            ),
            (
                std::io::Error::new(std::io::ErrorKind::TimedOut, "slow"),
                F::Timeout,
            ),
            (
                std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
                F::Other,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(HandshakeFailure::of(&e), want, "{e}");
        }
        for (i, f) in HandshakeFailure::ALL.iter().enumerate() {
            assert_eq!(*f as usize, i, "ALL is in discriminant order");
        }
    }
}
