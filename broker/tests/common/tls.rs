//! TLS test helpers: certificate authorities, server and client
//! certificates made with `rcgen`, written as PEM files, and `rumqttc`
//! options that connect over TLS or WebSocket.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, TlsConfiguration, Transport};
use tokio::sync::mpsc;

use super::{Client, WAIT};

/// rustls is built with two crypto providers in tests (rumqttc brings
/// aws-lc-rs); clients need a process default. The broker picks ring
/// itself.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A certificate authority.
pub struct Ca {
    cert: Certificate,
    key: KeyPair,
}

/// A PEM certificate and its PEM private key.
#[derive(Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("ca key");
        let cert = params.self_signed(&key).expect("ca cert");
        Ca { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server(&self) -> Pem {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "mqttd test server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate with common name `cn` and optionally a DNS
    /// subject alternative name.
    pub fn client(&self, cn: &str, san_dns: Option<&str>) -> Pem {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params.distinguished_name.push(DnType::CommonName, cn);
        if let Some(dns) = san_dns {
            params.subject_alt_names = vec![SanType::DnsName(dns.try_into().expect("ia5 name"))];
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Pem {
        let key = KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("signed cert");
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// Writes `contents` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write test file");
    path
}

/// The files a TLS listener needs, in a temporary directory.
pub struct TlsFiles {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca_file: PathBuf,
}

impl TlsFiles {
    pub fn new() -> TlsFiles {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new("mqttd test CA");
        let server = ca.server();
        let cert = write(dir.path(), "server.pem", &server.cert);
        let key = write(dir.path(), "server.key", &server.key);
        let ca_file = write(dir.path(), "ca.pem", &ca.pem());
        TlsFiles {
            dir,
            ca,
            cert,
            key,
            ca_file,
        }
    }

    /// A `tls:` block for a listener (indented for a list item), with
    /// `extra` lines (already indented by 6) appended.
    pub fn yaml(&self, extra: &str) -> String {
        format!(
            "    tls:\n      cert_file: {}\n      key_file: {}\n{extra}",
            self.cert.display(),
            self.key.display()
        )
    }
}

/// Client-side TLS settings for rumqttc.
pub fn tls_config(ca_pem: &str, client: Option<&Pem>, alpn: Option<&[&str]>) -> TlsConfiguration {
    install_crypto_provider();
    TlsConfiguration::Simple {
        ca: ca_pem.as_bytes().to_vec(),
        alpn: alpn.map(|a| a.iter().map(|p| p.as_bytes().to_vec()).collect()),
        client_auth: client.map(|p| (p.cert.as_bytes().to_vec(), p.key.as_bytes().to_vec())),
    }
}

/// rumqttc options for MQTT over TLS to `addr` (server name 127.0.0.1).
pub fn tls_options(addr: SocketAddr, id: &str, tls: TlsConfiguration) -> MqttOptions {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o.set_transport(Transport::tls_with_config(tls));
    o
}

/// rumqttc options for MQTT over WebSocket (`wss` when `tls` is given).
pub fn ws_options(
    addr: SocketAddr,
    path: &str,
    id: &str,
    tls: Option<TlsConfiguration>,
) -> MqttOptions {
    let (scheme, host) = if tls.is_some() {
        ("wss", "localhost")
    } else {
        ("ws", "127.0.0.1")
    };
    let url = format!("{scheme}://{host}:{}{path}", addr.port());
    let mut o = MqttOptions::new(id, url, addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o.set_transport(match tls {
        Some(t) => Transport::wss_with_config(t),
        None => Transport::Ws,
    });
    o
}

/// Connects with `opts`; `Err` describes why the connection failed
/// (TLS error, refused CONNACK, ...).
pub async fn try_connect(opts: MqttOptions) -> Result<Client, String> {
    let (client, mut el) = AsyncClient::new(opts, 100);
    let first = tokio::time::timeout(WAIT, async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(a))) => return Ok(a),
                Ok(_) => continue,
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .map_err(|_| "no CONNACK in time".to_string())??;
    if first.code != rumqttc::ConnectReturnCode::Success {
        return Err(format!("refused: {:?}", first.code));
    }
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(Packet::ConnAck(first)).expect("fresh channel");
    let task = tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(p)) => {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
                Ok(Event::Outgoing(_)) => {}
                Err(_) => return,
            }
        }
    });
    let mut c = Client { client, rx, task };
    let _ = c.next().await; // the CONNACK
    Ok(c)
}

/// Connects with `opts`, expecting failure; returns why it failed.
pub async fn connect_err(opts: MqttOptions) -> String {
    match try_connect(opts).await {
        Ok(_) => panic!("connection unexpectedly accepted"),
        Err(e) => e,
    }
}
