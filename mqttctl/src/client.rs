//! HTTP client of the control API: over the Unix socket (base URL
//! `http://mqttd`, like docker's client) or over TCP with a bearer token.

use std::error::Error as _;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use mqttd_api::ApiError;
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{socket_unreachable, CtlError};

/// How long one request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Host name used in URLs sent over the socket (it only fills the Host header).
const SOCKET_BASE_URL: &str = "http://mqttd/";

/// Where the broker is.
#[derive(Debug, Clone)]
pub enum Target {
    Socket(PathBuf),
    Tcp { url: Url, token: Option<String> },
}

/// A control API client.
pub struct Client {
    http: reqwest::Client,
    base: Url,
    target: Target,
}

impl Client {
    pub fn new(target: Target) -> Result<Self, CtlError> {
        let builder = reqwest::Client::builder().timeout(REQUEST_TIMEOUT);
        let (builder, base) = match &target {
            Target::Socket(path) => (
                builder.unix_socket(path.as_path()),
                Url::parse(SOCKET_BASE_URL).map_err(|e| CtlError::Failed(e.to_string()))?,
            ),
            Target::Tcp { url, .. } => (builder, url.clone()),
        };
        let http = builder
            .build()
            .map_err(|e| CtlError::Failed(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Client { http, base, target })
    }

    /// `GET /v1/<segments>?<query>`, decoding the JSON answer.
    pub async fn get<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &impl Serialize,
    ) -> Result<T, CtlError> {
        let req = self.request(Method::GET, segments).query(query);
        decode(self.send(req).await?).await
    }

    /// `POST /v1/<segments>` with a JSON body, decoding the JSON answer.
    pub async fn post<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &impl Serialize,
    ) -> Result<T, CtlError> {
        let req = self.request(Method::POST, segments).json(body);
        decode(self.send(req).await?).await
    }

    /// `DELETE /v1/<segments>`, expecting no body.
    pub async fn delete(&self, segments: &[&str]) -> Result<(), CtlError> {
        self.send(self.request(Method::DELETE, segments)).await?;
        Ok(())
    }

    /// Builds a request; each segment is percent-encoded (`/` included), so
    /// any client id travels as one path segment.
    fn request(&self, method: Method, segments: &[&str]) -> reqwest::RequestBuilder {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().push("v1").extend(segments);
        }
        let req = self.http.request(method, url);
        match &self.target {
            Target::Tcp {
                token: Some(token), ..
            } => req.bearer_auth(token),
            _ => req,
        }
    }

    /// Sends, turning transport failures and error statuses into [`CtlError`].
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, CtlError> {
        let resp = req.send().await.map_err(|e| self.transport_error(&e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let reason = match resp.json::<ApiError>().await {
            Ok(body) => body.error,
            // Not mqttd's control API: its every error is an ApiError. A
            // 404 there is the wrong endpoint (the metrics port, a proxy),
            // not a missing session.
            Err(_) if matches!(self.target, Target::Tcp { .. }) => {
                return Err(CtlError::Unreachable(format!(
                    "{} answered {status} without mqttd's error body: is --url the control API \
                     (control.tcp.bind), not the health and metrics port or another server?",
                    self.describe()
                )))
            }
            Err(_) => format!("mqttd answered {status}"),
        };
        Err(match status {
            StatusCode::NOT_FOUND => CtlError::NotFound(reason),
            StatusCode::UNAUTHORIZED => CtlError::Unreachable(format!(
                "mqttd at {} refused the request: {reason} — pass --token or set MQTTD_TOKEN",
                self.describe()
            )),
            _ => CtlError::Failed(reason),
        })
    }

    fn transport_error(&self, err: &reqwest::Error) -> CtlError {
        if err.is_timeout() {
            return CtlError::Unreachable(format!(
                "mqttd at {} did not answer within {}s",
                self.describe(),
                REQUEST_TIMEOUT.as_secs()
            ));
        }
        match (&self.target, io_cause(err)) {
            (Target::Socket(path), Some(io)) => socket_unreachable(path, io),
            (_, Some(io)) => {
                CtlError::Unreachable(format!("cannot reach mqttd at {}: {io}", self.describe()))
            }
            (_, None) => {
                CtlError::Unreachable(format!("cannot reach mqttd at {}: {err}", self.describe()))
            }
        }
    }

    /// The socket path or URL, for messages.
    pub fn describe(&self) -> String {
        match &self.target {
            Target::Socket(path) => path.display().to_string(),
            Target::Tcp { url, .. } => url.to_string(),
        }
    }
}

/// The I/O error at the bottom of a reqwest error, if any.
fn io_cause(err: &reqwest::Error) -> Option<&io::Error> {
    let mut source = err.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io);
        }
        source = e.source();
    }
    None
}

async fn decode<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, CtlError> {
    resp.json()
        .await
        .map_err(|e| CtlError::Failed(format!("cannot read mqttd's answer: {e}")))
}
