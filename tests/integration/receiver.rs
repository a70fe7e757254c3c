//! A recording HTTP server on 127.0.0.1 standing in for each notification service's API:
//! every request kept (method, path, headers, JSON body), some answered 503 first.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use crate::util::*;

/// One request the receiver got.
#[derive(Clone, Debug)]
pub(crate) struct Got {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

#[derive(Default)]
pub(crate) struct Inner {
    pub got: Vec<Got>,
    /// Requests to answer 503 before answering normally.
    pub fail_first: usize,
    pub seen: usize,
}

#[derive(Clone, Default)]
pub(crate) struct Receiver(pub Arc<Mutex<Inner>>);

impl Receiver {
    pub(crate) fn got(&self) -> Vec<Got> {
        self.0.lock().unwrap().got.clone()
    }

    pub(crate) fn on(&self, method: &str, path: &str) -> Vec<Got> {
        self.got()
            .into_iter()
            .filter(|g| g.method == method && g.path == path)
            .collect()
    }

    pub(crate) async fn wait(&self, method: &str, path: &str, n: usize) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let g = self.on(method, path);
            if g.len() >= n {
                return g;
            }
            assert!(
                Instant::now() < deadline,
                "no {n}× {method} {path}; got {:#?}",
                self.got()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

pub(crate) async fn record(State(r): State<Receiver>, req: Request) -> axum::response::Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let bytes = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    {
        let mut inner = r.0.lock().unwrap();
        inner.seen += 1;
        if inner.seen <= inner.fail_first {
            return (StatusCode::SERVICE_UNAVAILABLE, "down for maintenance").into_response();
        }
        inner.got.push(Got {
            method: method.clone(),
            path: path.clone(),
            headers,
            body,
        });
    }
    // What each API answers when an issue is made.
    let answer = match (method.as_str(), path.as_str()) {
        ("POST", "/repos/ops/infra/issues") => {
            json!({"number": 17, "html_url": "https://github.example/ops/infra/issues/17"})
        }
        ("POST", "/api/v4/projects/ops%2Finfra/issues") => {
            json!({"iid": 5, "web_url": "https://gitlab.example/ops/infra/-/issues/5"})
        }
        ("POST", "/rest/api/3/issue") => json!({"key": "OPS-42", "id": "10042"}),
        _ => json!({"ok": true}),
    };
    (StatusCode::OK, axum::Json(answer)).into_response()
}

pub(crate) async fn receiver(fail_first: usize) -> (Receiver, String) {
    let r = Receiver::default();
    r.0.lock().unwrap().fail_first = fail_first;
    let app = axum::Router::new().fallback(record).with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (r, url)
}

/// The `event` of each delivery, in order.
pub(crate) fn events(got: &[Got]) -> Vec<&str> {
    got.iter()
        .filter_map(|g| g.body["event"].as_str())
        .collect()
}

pub(crate) fn header<'a>(g: &'a Got, name: &str) -> &'a str {
    g.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

pub(crate) async fn timeline(d: &TestDaemon, id: &Value) -> Vec<Value> {
    d.get(&format!("/v1/incidents/{id}/timeline")).await["timeline"]
        .as_array()
        .unwrap()
        .clone()
}

/// Channel `id` in a `GET /v1/channels` answer.
pub(crate) fn channel_in(list: &Value, id: &str) -> Value {
    list["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no channel {id} in {list}"))
}
