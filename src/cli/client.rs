//! A small HTTP/1.1 client for the control socket (used by incidentctl and the tests).

use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach incidentd at {path} ({source}): is the daemon running?")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("HTTP exchange with incidentd failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("{message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("unexpected answer from incidentd ({status}): {message}")]
    Decode { status: u16, message: String },
    #[error(
        "incidentd at {path} did not answer within {}; it may be overloaded or stuck (see `--timeout`)",
        humantime::format_duration(*after)
    )]
    Timeout {
        path: PathBuf,
        after: std::time::Duration,
    },
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } | ClientError::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// One request per connection: simple, and the daemon's accept is cheap.
#[derive(Clone, Debug)]
pub struct Client {
    socket: PathBuf,
    /// How long one request may take, connecting included; `None`: no limit.
    timeout: Option<std::time::Duration>,
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Client {
            socket: socket.into(),
            timeout: None,
        }
    }

    /// Gives up on a request (not on a stream's events) after `after`.
    pub fn with_timeout(mut self, after: std::time::Duration) -> Self {
        self.timeout = Some(after);
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends a request and returns the status and body, whatever the status.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let exchange = self.exchange(method, path, body, content_type);
        match self.timeout {
            Some(after) => {
                tokio::time::timeout(after, exchange)
                    .await
                    .map_err(|_| ClientError::Timeout {
                        path: self.socket.clone(),
                        after,
                    })?
            }
            None => exchange.await,
        }
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let stream = self.connect().await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let driver = tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ClientError::Decode {
                status: 0,
                message: e.to_string(),
            })?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        driver.abort();
        Ok((status, bytes))
    }

    /// Sends a request and decodes a JSON answer; an error answer becomes [`ClientError::Api`]
    /// with the daemon's message.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: &str,
    ) -> Result<T, ClientError> {
        let (status, bytes) = self
            .raw(method, path, body.unwrap_or_default(), content_type)
            .await?;
        if !status.is_success() {
            #[derive(serde::Deserialize)]
            struct E {
                error: Inner,
            }
            #[derive(serde::Deserialize)]
            struct Inner {
                code: String,
                message: String,
            }
            return Err(match serde_json::from_slice::<E>(&bytes) {
                Ok(e) => ClientError::Api {
                    status: status.as_u16(),
                    code: e.error.code,
                    message: e.error.message,
                },
                Err(_) => ClientError::Api {
                    status: status.as_u16(),
                    code: "http".into(),
                    message: String::from_utf8_lossy(&bytes).into_owned(),
                },
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            status: status.as_u16(),
            message: e.to_string(),
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path, None, "application/json").await
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Decode {
            status: 0,
            message: e.to_string(),
        })?;
        self.call(Method::POST, path, Some(body), "application/json")
            .await
    }
}

/// One Server-Sent Event as received.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamMessage {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

/// An open `GET /v1/stream`: messages as they arrive.
pub struct EventStream {
    body: hyper::body::Incoming,
    buf: Vec<u8>,
    pending: StreamMessage,
    _driver: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Client {
    /// Opens the event stream at `path`, resuming after `last_event_id` when given.
    async fn connect(&self) -> Result<UnixStream, ClientError> {
        UnixStream::connect(&self.socket)
            .await
            .map_err(|source| ClientError::Connect {
                path: self.socket.clone(),
                source,
            })
    }

    pub async fn stream(
        &self,
        path: &str,
        last_event_id: Option<u64>,
    ) -> Result<EventStream, ClientError> {
        let stream = self.connect().await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let driver = AbortOnDrop(tokio::spawn(async move {
            let _ = conn.await;
        }));
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header("host", "localhost")
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| ClientError::Decode {
                status: 0,
                message: e.to_string(),
            })?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.into_body().collect().await?.to_bytes();
            return Err(ClientError::Api {
                status: status.as_u16(),
                code: "http".into(),
                message: api_message(&bytes),
            });
        }
        Ok(EventStream {
            body: resp.into_body(),
            buf: Vec::new(),
            pending: StreamMessage::default(),
            _driver: driver,
        })
    }
}

/// The `message` of an error answer, or the body as text.
fn api_message(bytes: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(bytes).into_owned())
}

impl EventStream {
    /// The next message; `None` when the daemon ended the stream.
    pub async fn next(&mut self) -> Result<Option<StreamMessage>, ClientError> {
        loop {
            while let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=nl).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    // A blank line dispatches what was gathered (if it has data).
                    let msg = std::mem::take(&mut self.pending);
                    if !msg.data.is_empty() || !msg.event.is_empty() {
                        return Ok(Some(msg));
                    }
                    continue;
                }
                if line.starts_with(':') {
                    continue; // keep-alive comment
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "id" => self.pending.id = Some(value.to_owned()),
                    "event" => self.pending.event = value.to_owned(),
                    "data" => {
                        if !self.pending.data.is_empty() {
                            self.pending.data.push('\n');
                        }
                        self.pending.data.push_str(value);
                    }
                    _ => {}
                }
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}
