//! A pass-through in front of `cargo lambda watch`'s Runtime API that gives each invocation
//! a real deadline.
//!
//! cargo-lambda 1.9 sends `Lambda-Runtime-Deadline-Ms: 600000` with every event: a constant,
//! which read as the epoch milliseconds Lambda sends means 00:10 on 1 January 1970. The suite's
//! functions plan their work against the deadline (rds-init answers CloudFormation before it,
//! deploy-gate fits its bake into it), so they would give up at once. The proxy sets the
//! header to now + the function's configured timeout, as Lambda does; everything else passes
//! through untouched.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, task::JoinHandle};

const DEADLINE_HEADER: &str = "lambda-runtime-deadline-ms";
/// Set again by the HTTP client and server on each side.
const HOP_HEADERS: &[&str] = &["host", "content-length", "transfer-encoding", "connection"];

/// One function's view of the Runtime API; stops when dropped.
pub struct DeadlineProxy {
    address: SocketAddr,
    server: JoinHandle<()>,
}

impl Drop for DeadlineProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl DeadlineProxy {
    /// Forwards to `upstream` (e.g. `http://127.0.0.1:9000/.rt/rds-init`) and stamps each
    /// event with a deadline `timeout` from when the function receives it.
    pub async fn start(upstream: String, timeout: Duration) -> std::io::Result<DeadlineProxy> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let address = listener.local_addr()?;
        // No client timeout: `/invocation/next` is a long poll.
        let http = reqwest::Client::new();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (upstream, http) = (upstream.clone(), http.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        forward(request, upstream.clone(), http.clone(), timeout)
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(DeadlineProxy { address, server })
    }

    /// The value for the function's `AWS_LAMBDA_RUNTIME_API` (host and port, as Lambda sets it).
    pub fn runtime_api(&self) -> String {
        self.address.to_string()
    }
}

async fn forward(
    request: Request<hyper::body::Incoming>,
    upstream: String,
    http: reqwest::Client,
    timeout: Duration,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut forwarded = http.request(parts.method.clone(), format!("{upstream}{path}"));
    for (name, value) in &parts.headers {
        if !HOP_HEADERS.contains(&name.as_str()) {
            forwarded = forwarded.header(name.as_str(), value.as_bytes());
        }
    }
    let answer = forwarded
        .body(body)
        .send()
        .await
        .map_err(std::io::Error::other)?;
    let mut response = Response::builder().status(answer.status().as_u16());
    let is_event = path.ends_with("/invocation/next") && answer.status().is_success();
    for (name, value) in answer.headers() {
        if HOP_HEADERS.contains(&name.as_str()) || (name.as_str() == DEADLINE_HEADER && is_event) {
            continue;
        }
        response = response.header(name.as_str(), value.as_bytes());
    }
    if is_event {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        response = response.header(DEADLINE_HEADER, (now + timeout).as_millis().to_string());
    }
    let bytes = answer.bytes().await.map_err(std::io::Error::other)?;
    response
        .body(Full::new(bytes))
        .map_err(std::io::Error::other)
}
