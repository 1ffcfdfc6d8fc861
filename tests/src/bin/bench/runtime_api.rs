//! A minimal Lambda Runtime API stand-in: the endpoints `lambda_runtime` calls (`next`,
//! `response`, `error`, `init/error`), one event handed out per [`RuntimeApi::invoke`].
//! One instance per cold run, so a killed process's half-open long poll can never take the
//! next run's event.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode, body::Bytes, server::conn::http1};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use crate::BenchError;

const PREFIX: &str = "/2018-06-01/runtime";

/// How an invocation ended, as the function reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerKind {
    Response,
    Error,
}

/// The function's answer to one invocation and when its body had fully arrived.
#[derive(Debug)]
pub struct Answer {
    pub kind: AnswerKind,
    pub at: Instant,
    pub body: Bytes,
}

struct Job {
    request_id: String,
    event: Value,
    reply: oneshot::Sender<Answer>,
}

struct State {
    jobs: tokio::sync::Mutex<mpsc::UnboundedReceiver<Job>>,
    waiting: Mutex<HashMap<String, oneshot::Sender<Answer>>>,
    /// Arrival of the first `GET next`: the end of the function's init phase.
    first_next: OnceLock<Instant>,
    init_error: Mutex<Option<String>>,
    function_arn: String,
    timeout: Duration,
}

pub struct RuntimeApi {
    addr: SocketAddr,
    jobs: mpsc::UnboundedSender<Job>,
    state: Arc<State>,
    server: JoinHandle<()>,
    next_id: u64,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        // Dropping the task drops its JoinSet, which aborts every open connection.
        self.server.abort();
    }
}

impl RuntimeApi {
    /// Starts on a free loopback port. `timeout` sets each event's deadline header.
    pub async fn start(function_arn: String, timeout: Duration) -> Result<RuntimeApi, BenchError> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let (jobs, receiver) = mpsc::unbounded_channel();
        let state = Arc::new(State {
            jobs: tokio::sync::Mutex::new(receiver),
            waiting: Mutex::new(HashMap::new()),
            first_next: OnceLock::new(),
            init_error: Mutex::new(None),
            function_arn,
            timeout,
        });
        let server = tokio::spawn(serve(listener, state.clone()));
        Ok(RuntimeApi {
            addr,
            jobs,
            state,
            server,
            next_id: 0,
        })
    }

    /// The value for `AWS_LAMBDA_RUNTIME_API` (`host:port`, no scheme).
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    /// When the function first asked for an event, if it has.
    pub fn first_next(&self) -> Option<Instant> {
        self.state.first_next.get().copied()
    }

    /// What the function reported to `init/error`, if anything.
    pub fn init_error(&self) -> Option<String> {
        self.state
            .init_error
            .lock()
            .ok()
            .and_then(|error| error.clone())
    }

    /// Queues `event` for the function's next `GET next`; the receiver yields its answer.
    pub fn invoke(&mut self, event: Value) -> Result<oneshot::Receiver<Answer>, BenchError> {
        self.next_id += 1;
        let (reply, answer) = oneshot::channel();
        let job = Job {
            request_id: format!("bench-{:08x}-{}", std::process::id(), self.next_id),
            event,
            reply,
        };
        self.jobs
            .send(job)
            .map_err(|_| BenchError::from("the runtime API stand-in stopped"))?;
        Ok(answer)
    }
}

async fn serve(listener: TcpListener, state: Arc<State>) {
    let mut connections = JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        let state = state.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| route(request, state.clone()));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        // Reap finished connections so the set does not grow over warm invocations.
        while connections.try_join_next().is_some() {}
    }
}

type Reply = Result<Response<Full<Bytes>>, hyper::Error>;

async fn route(request: Request<hyper::body::Incoming>, state: Arc<State>) -> Reply {
    let path = request.uri().path().to_owned();
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return Ok(status(StatusCode::NOT_FOUND));
    };
    match (request.method().clone(), rest) {
        (Method::GET, "/invocation/next") => next(&state).await,
        (Method::POST, "/init/error") => {
            let body = request.into_body().collect().await?.to_bytes();
            if let Ok(mut error) = state.init_error.lock() {
                *error = Some(String::from_utf8_lossy(&body).into_owned());
            }
            Ok(status(StatusCode::ACCEPTED))
        }
        (Method::POST, rest) => {
            let Some(rest) = rest.strip_prefix("/invocation/") else {
                return Ok(status(StatusCode::NOT_FOUND));
            };
            let (request_id, kind) = if let Some(id) = rest.strip_suffix("/response") {
                (id.to_owned(), AnswerKind::Response)
            } else if let Some(id) = rest.strip_suffix("/error") {
                (id.to_owned(), AnswerKind::Error)
            } else {
                return Ok(status(StatusCode::NOT_FOUND));
            };
            let body = request.into_body().collect().await?.to_bytes();
            let at = Instant::now();
            let reply = state
                .waiting
                .lock()
                .ok()
                .and_then(|mut waiting| waiting.remove(&request_id));
            match reply {
                Some(reply) => {
                    let _ = reply.send(Answer { kind, at, body });
                    Ok(status(StatusCode::ACCEPTED))
                }
                None => Ok(status(StatusCode::BAD_REQUEST)),
            }
        }
        _ => Ok(status(StatusCode::NOT_FOUND)),
    }
}

/// The long poll: waits for the driver's next event.
async fn next(state: &State) -> Reply {
    state.first_next.get_or_init(Instant::now);
    let job = state.jobs.lock().await.recv().await;
    let Some(job) = job else {
        return Ok(status(StatusCode::GONE));
    };
    let deadline = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_add(state.timeout)
        .as_millis();
    let body = Bytes::from(job.event.to_string());
    if let Ok(mut waiting) = state.waiting.lock() {
        waiting.insert(job.request_id.clone(), job.reply);
    }
    let response = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("lambda-runtime-aws-request-id", &job.request_id)
        .header("lambda-runtime-deadline-ms", deadline.to_string())
        .header("lambda-runtime-invoked-function-arn", &state.function_arn)
        .header(
            "lambda-runtime-trace-id",
            "Root=1-00000000-000000000000000000000000;Parent=0000000000000000;Sampled=0",
        )
        .body(Full::new(body));
    Ok(response.unwrap_or_else(|_| status(StatusCode::INTERNAL_SERVER_ERROR)))
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = code;
    response
}
