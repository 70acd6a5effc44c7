//! Configuration of the control API (`control:`) and of the health and
//! metrics HTTP server (`http:`).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

/// Default file mode of the control socket: owner and group may connect.
pub const DEFAULT_SOCKET_MODE: u32 = 0o660;

/// Default address of the health and metrics server.
pub const DEFAULT_HTTP_BIND: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8080);

/// `control:` — where the admin API listens.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Unix socket path. When absent the broker uses the first usable
    /// location of [`mqttd_api::socket::socket_path_candidates_from_env`]
    /// (`/run/mqttd/mqttd.sock`, then `$XDG_RUNTIME_DIR/mqttd/`, then
    /// `/tmp/mqttd-<uid>/`); an explicit path is used as is or fails.
    pub socket: Option<PathBuf>,
    /// File mode of the socket, written as an octal string (`"0660"`).
    #[serde(deserialize_with = "deserialize_mode")]
    pub socket_mode: u32,
    /// Optional TCP listener for remote administration; requires a token.
    pub tcp: Option<TcpApiConfig>,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            socket: None,
            socket_mode: DEFAULT_SOCKET_MODE,
            tcp: None,
        }
    }
}

/// `control.tcp:` — the admin API over TCP, protected by a bearer token.
///
/// Exactly one of `token` and `token_file` must be set; the broker refuses to
/// start a TCP control listener without a token.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpApiConfig {
    /// Address to listen on, e.g. `127.0.0.1:8081`.
    pub bind: SocketAddr,
    /// The bearer token, inline.
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding the bearer token (surrounding whitespace is ignored),
    /// e.g. a mounted Kubernetes Secret.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

impl fmt::Debug for TcpApiConfig {
    // Never print the token itself.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpApiConfig")
            .field("bind", &self.bind)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .finish()
    }
}

/// `http:` — health probes and Prometheus metrics.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Whether the health and metrics server runs at all (`false` on a
    /// device nothing scrapes or probes; `mqttd --http off`).
    pub enabled: bool,
    /// Address serving `/healthz`, `/readyz` and `/metrics`.
    pub bind: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            bind: DEFAULT_HTTP_BIND,
        }
    }
}

/// Reads a file mode from an octal string: `"0660"`, `"660"` or `"0o660"`.
///
/// Numbers are refused: YAML reads `0660` as decimal 660, which would be a
/// nonsense mode, so the string form is the only unambiguous one.
fn deserialize_mode<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    struct ModeVisitor;

    impl serde::de::Visitor<'_> for ModeVisitor {
        type Value = u32;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a file mode as an octal string, e.g. \"0660\"")
        }

        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<u32, E> {
            parse_mode(s).ok_or_else(|| {
                E::custom(format!(
                    "invalid socket_mode {s:?}: expected an octal mode from \"0000\" to \"0777\""
                ))
            })
        }

        fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<u32, E> {
            Err(E::custom(format!(
                "socket_mode must be an octal string such as \"0660\", not the number {n}"
            )))
        }

        fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<u32, E> {
            self.visit_u64(n.unsigned_abs())
        }
    }

    d.deserialize_any(ModeVisitor)
}

fn parse_mode(s: &str) -> Option<u32> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if digits.is_empty() || digits.len() > 4 {
        return None;
    }
    u32::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o777)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c: ControlConfig = serde_yaml::from_str("{}").unwrap();
        assert_eq!(c, ControlConfig::default());
        assert_eq!(c.socket_mode, 0o660);
        let h: HttpConfig = serde_yaml::from_str("{}").unwrap();
        assert_eq!(h.bind.to_string(), "0.0.0.0:8080");
        assert!(h.enabled);
        let h: HttpConfig = serde_yaml::from_str("enabled: false").unwrap();
        assert!(!h.enabled);
    }

    #[test]
    fn mode_is_an_octal_string() {
        for (text, mode) in [("'0600'", 0o600), ("\"660\"", 0o660), ("'0o666'", 0o666)] {
            let c: ControlConfig = serde_yaml::from_str(&format!("socket_mode: {text}")).unwrap();
            assert_eq!(c.socket_mode, mode, "{text}");
        }
        // serde_yaml hands a leading-zero scalar over as a string: fine.
        let c: ControlConfig = serde_yaml::from_str("socket_mode: 0660").unwrap();
        assert_eq!(c.socket_mode, 0o660);
        // A number is ambiguous (660 decimal? 0o660 = 432?): refused with a hint.
        for text in ["660", "0o660", "432"] {
            let err =
                serde_yaml::from_str::<ControlConfig>(&format!("socket_mode: {text}")).unwrap_err();
            assert!(err.to_string().contains("octal string"), "{text}: {err}");
        }
        assert!(serde_yaml::from_str::<ControlConfig>("socket_mode: '0999'").is_err());
        assert!(serde_yaml::from_str::<ControlConfig>("socket_mode: '1777'").is_err());
    }

    #[test]
    fn tcp_section_and_unknown_fields() {
        let c: ControlConfig = serde_yaml::from_str(
            "socket: /tmp/x.sock\ntcp:\n  bind: 127.0.0.1:8081\n  token: s3cret\n",
        )
        .unwrap();
        let tcp = c.tcp.unwrap();
        assert_eq!(tcp.token.as_deref(), Some("s3cret"));
        assert!(!format!("{tcp:?}").contains("s3cret"));
        assert!(serde_yaml::from_str::<ControlConfig>("sockett: /x").is_err());
        assert!(serde_yaml::from_str::<HttpConfig>("bind: 1.2.3.4:1\nport: 2").is_err());
    }
}
