//! The plumbing the HTTP stand-ins in front of moto share: a loopback HTTP/1 server that hands
//! every request to a handler (one call per request, keep-alive connections included), the
//! forwarding of one request to moto as it came, and the AWS operation a request names.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::{BodyExt, Full};
use hyper::http::request::Parts;
use hyper::{Request, Response, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, task::JoinHandle};

/// What a handler answers.
pub type Answer = Result<Response<Full<Bytes>>, std::io::Error>;

/// A server started by [`serve`].
pub struct Served {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// Aborting it closes the listener and every connection.
    pub task: JoinHandle<()>,
    /// TCP connections accepted so far.
    pub connections: Arc<AtomicUsize>,
}

/// Serves `handler` on a free loopback port.
pub async fn serve<H, F>(what: &str, handler: H) -> Served
where
    H: Fn(Request<hyper::body::Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Answer> + Send + 'static,
{
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap_or_else(|e| panic!("bind the {what} to a loopback port: {e}"));
    let url = format!("http://{}", listener.local_addr().expect("local address"));
    let connections = Arc::new(AtomicUsize::new(0));
    let accepted = connections.clone();
    let task = tokio::spawn(async move {
        // Owned here, so aborting the server drops every connection with it.
        let mut open = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            let handler = handler.clone();
            open.spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(handler))
                    .await;
            });
        }
    });
    Served {
        url,
        task,
        connections,
    }
}

/// A request's head and its whole body.
pub async fn read(
    request: Request<hyper::body::Incoming>,
) -> Result<(Parts, Bytes), std::io::Error> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    Ok((parts, body))
}

/// Sends the request to `upstream` (same method, path and headers but `Host` and the length)
/// and hands back its answer: status, content type and body.
pub async fn forward(parts: &Parts, body: Bytes, upstream: &str, http: &reqwest::Client) -> Answer {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes())
        .map_err(std::io::Error::other)?;
    let mut forwarded = http.request(method, format!("{upstream}{path}")).body(body);
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            forwarded = forwarded.header(name.as_str(), value.as_bytes());
        }
    }
    let answer = forwarded.send().await.map_err(std::io::Error::other)?;
    let status = answer.status().as_u16();
    let content_type = answer
        .headers()
        .get("content-type")
        .map(|v| v.as_bytes().to_vec())
        .unwrap_or_else(|| b"application/x-amz-json-1.1".to_vec());
    let body = answer.bytes().await.map_err(std::io::Error::other)?;
    Ok(Response::builder()
        .status(status)
        .header("Content-Type", content_type)
        .body(Full::new(body))
        .expect("valid response"))
}

/// The AWS operation a request calls, whatever its protocol: `X-Amz-Target: <service>.<Op>`
/// (JSON), `/service/<service>/operation/<Op>` (RPC v2 CBOR), or `Action=<Op>` in a form body
/// (query: Auto Scaling, SNS, SQS). Empty when none says.
pub fn operation(parts: &Parts, body: &[u8]) -> String {
    if let Some(target) = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
    {
        return target.rsplit('.').next().unwrap_or_default().to_owned();
    }
    if let Some((_, op)) = parts.uri.path().rsplit_once("/operation/") {
        return op.to_owned();
    }
    form_urlencoded_action(body).unwrap_or_default()
}

fn form_urlencoded_action(body: &[u8]) -> Option<String> {
    let body = std::str::from_utf8(body).ok()?;
    body.split('&')
        .find_map(|pair| pair.strip_prefix("Action="))
        .map(str::to_owned)
}
