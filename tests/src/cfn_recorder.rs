//! A stand-in for the pre-signed S3 URL CloudFormation gives a custom resource: it records
//! every request it receives and answers as scripted (a status, a dropped connection, or no
//! answer at all), so tests can check what was sent, how often, and when.

use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};
use tokio::{net::TcpListener, sync::Notify, task::JoinHandle};
use tokio_rustls::TlsAcceptor;

use crate::tls::TestCa;

/// How the server answers one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Answer with this HTTP status (and a short body).
    Status(u16),
    /// Read the request, then close the connection without answering (a connection error
    /// for the client).
    DropConnection,
    /// Read the request, then never answer and keep the connection open (a timeout for the
    /// client).
    Hang,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query, e.g. `/cfn/create?X-Amz-Signature=…`.
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub received_at: SystemTime,
    pub reply: Reply,
}

impl RecordedRequest {
    /// The first value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON; panics with the body text when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

#[derive(Default)]
struct State {
    script: VecDeque<Reply>,
    requests: Vec<RecordedRequest>,
}

/// The recording server. Stops when dropped.
pub struct CfnResponseRecorder {
    addr: SocketAddr,
    /// `http`, or `https` when started with [`CfnResponseRecorder::start_tls`].
    scheme: &'static str,
    state: Arc<Mutex<State>>,
    arrived: Arc<Notify>,
    server: JoinHandle<()>,
}

impl CfnResponseRecorder {
    /// Starts on a free loopback port (the listener is bound at once, so no port race).
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// The same over HTTPS, with the server certificate `ca` signed (valid for `localhost`
    /// and `127.0.0.1`): a client must trust `ca` to get a request through.
    pub async fn start_tls(ca: &TestCa) -> Self {
        Self::start_with(Some(tls_acceptor(ca))).await
    }

    async fn start_with(tls: Option<TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the CloudFormation response recorder to a loopback port");
        let addr = listener.local_addr().expect("listener address");
        let state = Arc::new(Mutex::new(State::default()));
        let arrived = Arc::new(Notify::new());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let server = tokio::spawn(serve(listener, tls, state.clone(), arrived.clone()));
        Self {
            addr,
            scheme,
            state,
            arrived,
            server,
        }
    }

    /// The server's base URL (`http://127.0.0.1:<port>`, or `https://localhost:<port>`), for
    /// clients other than the responder.
    pub fn base_url(&self) -> String {
        match self.scheme {
            "https" => format!("https://localhost:{}", self.addr.port()),
            _ => format!("http://{}", self.addr),
        }
    }

    /// Queues replies for the next requests, in order; once they are used up every request
    /// gets 200.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.lock().unwrap().script.extend(replies);
    }

    /// A URL shaped like CloudFormation's pre-signed one, unique per `name`.
    pub fn response_url(&self, name: &str) -> String {
        format!(
            "{}/cloudformation-custom-resource-response/{name}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=not-a-real-signature",
            self.base_url()
        )
    }

    /// [`presigned_response_url`] on this recorder.
    pub fn presigned_response_url(&self, name: &str, signature: &str) -> String {
        presigned_response_url(self.addr, name, signature)
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Waits until at least `count` requests have arrived; panics after `timeout`.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<RecordedRequest> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.arrived.notified();
            let requests = self.requests();
            if requests.len() >= count {
                return requests;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "expected {count} CloudFormation response(s) within {timeout:?}, got {}",
                    self.requests().len()
                );
            }
        }
    }
}

/// A URL at `addr` with the full query string of CloudFormation's pre-signed S3 URL, signed
/// with `signature`, for tests that check the signature never leaks.
pub fn presigned_response_url(addr: SocketAddr, name: &str, signature: &str) -> String {
    format!(
        "http://{addr}/cloudformation-custom-resource-response-useast1/arn%3Aaws%3Acloudformation%3Aus-east-1%3A123456789012%3Astack/orchestrator/1a2b%7C{name}%7C9f1c2d3e?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20250101T000000Z&X-Amz-SignedHeaders=host&X-Amz-Expires=7200&X-Amz-Credential=AKIAEXAMPLE123456789%2F20250101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature={signature}"
    )
}

impl Drop for CfnResponseRecorder {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: Arc<Mutex<State>>,
    arrived: Arc<Notify>,
) {
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        let (state, arrived, tls) = (state.clone(), arrived.clone(), tls.clone());
        connections.spawn(async move {
            let service =
                service_fn(move |request| record(request, state.clone(), arrived.clone()));
            // A dropped connection surfaces here as an error; that is the point of it.
            let connection = http1::Builder::new();
            let _ = match tls {
                // A client that does not trust the certificate ends the handshake: no request.
                Some(tls) => match tls.accept(stream).await {
                    Ok(stream) => {
                        connection
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                    }
                    Err(_) => return,
                },
                None => {
                    connection
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                }
            };
        });
    }
}

/// A TLS acceptor presenting `ca`'s server certificate.
fn tls_acceptor(ca: &TestCa) -> TlsAcceptor {
    let chain = CertificateDer::pem_file_iter(ca.cert_path())
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .expect("read the test server certificate");
    let key = PrivateKeyDer::from_pem_file(ca.key_path()).expect("read the test server key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, key))
    .expect("a TLS server configuration for the test certificate");
    TlsAcceptor::from(Arc::new(config))
}

async fn record(
    request: Request<hyper::body::Incoming>,
    state: Arc<Mutex<State>>,
    arrived: Arc<Notify>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let reply = {
        let mut state = state.lock().unwrap();
        let reply = state.script.pop_front().unwrap_or(Reply::Status(200));
        state.requests.push(RecordedRequest {
            method: parts.method.to_string(),
            uri: parts.uri.to_string(),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body,
            received_at: SystemTime::now(),
            reply,
        });
        reply
    };
    arrived.notify_waiters();
    match reply {
        Reply::Status(code) => Ok(Response::builder()
            .status(code)
            .body(Full::new(Bytes::from(format!("recorder says {code}"))))
            .expect("valid response")),
        // hyper closes the connection without a response when the service fails.
        Reply::DropConnection => Err(std::io::Error::other("scripted connection drop")),
        // The connection task ends when the recorder is dropped (its `JoinSet` goes with it).
        Reply::Hang => std::future::pending().await,
    }
}
