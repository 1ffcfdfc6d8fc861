//! A proxy in front of moto that fails chosen AWS calls, for fault-injection tests of the
//! JSON-protocol services (Secrets Manager, DynamoDB, …). Every call is forwarded to moto
//! as it came (moto's recorder still sees it) unless a fault is armed for its operation:
//!
//! - [`Fault::Throttled`]: `ThrottlingException` (HTTP 400) before moto sees the call. The
//!   SDK's standard retry tries again.
//! - [`Fault::AppliedThenLost`]: moto applies the call, then its answer is replaced by
//!   `InternalFailure` (HTTP 500), as when a response is lost on the way back. The SDK retries
//!   a call that already took effect.
//! - [`Fault::AccessDenied`]: `AccessDeniedException` (HTTP 400) before moto sees the call,
//!   which no retry fixes.
//!
//! ```no_run
//! # async fn demo(moto: &harness::moto::Moto) {
//! use harness::aws_fault_proxy::{Fault, FaultProxy};
//! let proxy = FaultProxy::start(moto.endpoint_url()).await;
//! proxy.fail("PutSecretValue", Fault::Throttled, 1); // the next call only
//! # }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use http_body_util::Full;
use hyper::{Request, Response, body::Bytes};
use tokio::task::JoinHandle;

use crate::http_relay;

use crate::sync::lock;

/// How an armed call fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Throttled,
    AppliedThenLost,
    AccessDenied,
}

impl Fault {
    /// Whether the SDK's standard retry counts it as transient.
    pub fn is_transient(self) -> bool {
        !matches!(self, Fault::AccessDenied)
    }

    fn answer(self) -> (u16, &'static str, &'static str) {
        match self {
            Fault::Throttled => (400, "ThrottlingException", "Rate exceeded"),
            Fault::AppliedThenLost => (500, "InternalFailure", "injected: the answer was lost"),
            Fault::AccessDenied => (
                400,
                "AccessDeniedException",
                "injected: not authorized to perform this action",
            ),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// operation → (fault, calls still to fail).
    armed: HashMap<String, (Fault, usize)>,
    /// Faults injected so far.
    fired: usize,
}

/// The proxy on a loopback port; stops when dropped.
pub struct FaultProxy {
    url: String,
    state: Arc<Mutex<State>>,
    server: JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FaultProxy {
    pub async fn start(moto_url: &str) -> FaultProxy {
        let state = Arc::new(Mutex::new(State::default()));
        let (moto_url, http, shared) = (moto_url.to_owned(), reqwest::Client::new(), state.clone());
        let served = http_relay::serve("fault proxy", move |request| {
            forward(request, moto_url.clone(), http.clone(), shared.clone())
        })
        .await;
        FaultProxy {
            url: served.url,
            state,
            server: served.task,
        }
    }

    /// The endpoint to give the SDK.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The next `calls` calls of `operation` (e.g. `PutSecretValue`) fail with `fault`;
    /// `usize::MAX` for every call until [`FaultProxy::clear`].
    pub fn fail(&self, operation: &str, fault: Fault, calls: usize) {
        self.lock()
            .armed
            .insert(operation.to_owned(), (fault, calls));
    }

    /// Every call goes through again.
    pub fn clear(&self) {
        self.lock().armed.clear();
    }

    /// How many calls have been failed so far.
    pub fn fired(&self) -> usize {
        self.lock().fired
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

/// The fault for this call of `operation`, if one is armed (and counts it).
fn take_fault(state: &Mutex<State>, operation: &str) -> Option<Fault> {
    let mut state = lock(state);
    let (fault, left) = state.armed.get_mut(operation)?;
    if *left == 0 {
        return None;
    }
    if *left != usize::MAX {
        *left -= 1;
    }
    let fault = *fault;
    state.fired += 1;
    Some(fault)
}

async fn forward(
    request: Request<hyper::body::Incoming>,
    moto_url: String,
    http: reqwest::Client,
    state: Arc<Mutex<State>>,
) -> http_relay::Answer {
    let (parts, body) = http_relay::read(request).await?;
    let operation = http_relay::operation(&parts, &body);
    let fault = take_fault(&state, &operation);
    if let Some(fault) = fault.filter(|f| *f != Fault::AppliedThenLost) {
        return Ok(error_response(fault));
    }
    let answer = http_relay::forward(&parts, body, &moto_url, &http).await?;
    if let Some(fault) = fault {
        return Ok(error_response(fault));
    }
    Ok(answer)
}

fn error_response(fault: Fault) -> Response<Full<Bytes>> {
    let (status, code, message) = fault.answer();
    let body = serde_json::json!({"__type": code, "message": message}).to_string();
    Response::builder()
        .status(status)
        .header("Content-Type", "application/x-amz-json-1.1")
        .header("x-amzn-ErrorType", code)
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}
