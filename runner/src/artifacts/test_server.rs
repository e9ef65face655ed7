//! A real HTTP server on 127.0.0.1 for the artifact tests, scripted per path, counting hits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;

#[derive(Clone)]
pub enum Reply {
    Bytes(Vec<u8>),
    Status(u16),
    /// Answer 500 this many times, then the bytes.
    FailThen(usize, Vec<u8>),
    /// Headers and these bytes, then silence forever (the connection stays open).
    StallAfter(Vec<u8>),
    /// Announce more bytes than are sent, then end the body: a truncated transfer.
    Truncated(Vec<u8>),
    /// The bytes without a Content-Length (chunked), so only streaming can enforce a limit.
    Chunked(Vec<u8>),
    /// Wait, then the bytes: lets concurrent requests overlap.
    Slow(Duration, Vec<u8>),
    /// The bytes with this ETag; 304 Not Modified when the client already has it.
    Tagged(String, Vec<u8>),
    /// 302 to this URL.
    Redirect(String),
}

#[derive(Default)]
struct Script {
    routes: Mutex<HashMap<String, Reply>>,
    hits: Mutex<HashMap<String, usize>>,
}

pub struct TestServer {
    base: String,
    script: Arc<Script>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1").await
    }

    /// On another loopback address (127.0.0.0/8 is all loopback on Linux).
    pub async fn start_on(ip: &str) -> Self {
        let script = Arc::new(Script::default());
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        TestServer { base, script, task }
    }

    /// Serve `reply` at `path` and return its URL.
    pub fn route(&self, path: &str, reply: Reply) -> String {
        self.script
            .routes
            .lock()
            .unwrap()
            .insert(path.to_string(), reply);
        format!("{}{path}", self.base)
    }

    pub fn hits(&self, path: &str) -> usize {
        self.script
            .hits
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(script): State<Arc<Script>>, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().to_string();
    let hit = {
        let mut hits = script.hits.lock().unwrap();
        let n = hits.entry(path.clone()).or_default();
        *n += 1;
        *n
    };
    let reply = script.routes.lock().unwrap().get(&path).cloned();
    match reply {
        None => StatusCode::NOT_FOUND.into_response(),
        Some(Reply::Bytes(b)) => b.into_response(),
        Some(Reply::Status(code)) => StatusCode::from_u16(code).unwrap().into_response(),
        Some(Reply::FailThen(n, _)) if hit <= n => {
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        Some(Reply::FailThen(_, b)) => b.into_response(),
        Some(Reply::StallAfter(prefix)) => {
            let len = prefix.len() + 1000;
            let body =
                futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(prefix)) })
                    .chain(futures::stream::pending());
            (
                [(header::CONTENT_LENGTH, len.to_string())],
                Body::from_stream(body),
            )
                .into_response()
        }
        Some(Reply::Truncated(prefix)) => {
            let len = prefix.len() + 1000;
            let body =
                futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(prefix)) });
            (
                [(header::CONTENT_LENGTH, len.to_string())],
                Body::from_stream(body),
            )
                .into_response()
        }
        Some(Reply::Chunked(b)) => {
            let chunks: Vec<Result<Bytes, std::io::Error>> = b
                .chunks(64 * 1024)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            Body::from_stream(futures::stream::iter(chunks)).into_response()
        }
        Some(Reply::Tagged(etag, b)) => {
            if headers
                .get(header::IF_NONE_MATCH)
                .is_some_and(|v| v == etag.as_str())
            {
                StatusCode::NOT_MODIFIED.into_response()
            } else {
                ([(header::ETAG, etag)], b).into_response()
            }
        }
        Some(Reply::Slow(delay, b)) => {
            tokio::time::sleep(delay).await;
            b.into_response()
        }
        Some(Reply::Redirect(to)) => (StatusCode::FOUND, [(header::LOCATION, to)]).into_response(),
    }
}

/// A TCP server that accepts connections and never answers. Returns its URL.
pub async fn silent_server() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/kernel", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (url, task)
}
