//! Runs a custom resource's handler under the protocol's guarantees and answers CloudFormation.

use super::{
    CREATE_FAILED_PREFIX,
    delivery::{DeliveryError, ResponseDelivery, loggable_url},
    request::{Envelope, InvalidRequest, Request, RequestType},
    response::{Answer, MAX_PHYSICAL_ID_BYTES, Outcome, ResponseIds, Status, encode},
};
use crate::system_roots::SystemRoots;
use crate::{BoxError, error_chain};
use futures_util::FutureExt;
use lambda_runtime::{Context, LambdaEvent};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use std::{
    any::Any,
    future::Future,
    panic::AssertUnwindSafe,
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use tokio::time::Instant;

/// Time kept back after the answer-by point for the PUT itself.
const DEFAULT_DEADLINE_MARGIN: Duration = Duration::from_secs(5);
/// The PUT stops retrying this long before the Lambda deadline.
const DELIVERY_SLACK: Duration = Duration::from_millis(200);
/// Assumed time budget when the context carries no deadline (a hand-built event).
const UNKNOWN_DEADLINE_BUDGET: Duration = Duration::from_secs(900);

/// A custom resource: what to do on Create, Update and Delete. Implementations only return
/// results; the [`Responder`] owns the protocol. Handlers must be async all the way down:
/// the deadline guard cancels the handler's future, which cannot interrupt blocking code.
pub trait CustomResource: Sync {
    /// The resource's `Properties` (without CloudFormation's own `ServiceToken` and
    /// `ServiceTimeout`, and without the suite's `WaitsFor…` ordering properties). Use
    /// [`super::lenient`] for numbers and booleans.
    type Properties: DeserializeOwned + Send + Sync;

    fn create(
        &self,
        request: &Request,
        properties: Self::Properties,
    ) -> impl Future<Output = Result<Outcome, BoxError>> + Send;

    /// `old` is `None` when the previous properties no longer parse (a property this version
    /// rejects); the handler then works from the new properties alone.
    fn update(
        &self,
        request: &Request,
        properties: Self::Properties,
        old: Option<Self::Properties>,
    ) -> impl Future<Output = Result<Outcome, BoxError>> + Send;

    fn delete(
        &self,
        request: &Request,
        properties: Self::Properties,
    ) -> impl Future<Output = Result<Outcome, BoxError>> + Send;
}

/// Why an invocation ended without CloudFormation being told the result. The Lambda
/// invocation then fails, so Lambda's asynchronous retries run the (idempotent) handler again.
#[derive(Debug, thiserror::Error)]
pub enum ResponderError {
    #[error("{0}")]
    NotARequest(String),
    #[error(
        "could not tell CloudFormation the result ({status:?} for {logical_resource_id}): {source}"
    )]
    Undelivered {
        status: Status,
        logical_resource_id: String,
        #[source]
        source: DeliveryError,
    },
}

impl From<ResponderError> for lambda_runtime::Diagnostic {
    fn from(error: ResponderError) -> Self {
        let error_type = match error {
            ResponderError::NotARequest(_) => "NotACustomResourceRequest",
            ResponderError::Undelivered { .. } => "CloudFormationResponseUndelivered",
        };
        crate::diagnostic(error_type, &error)
    }
}

/// What was sent to CloudFormation; also the Lambda function's return value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Answered {
    pub status: Status,
    pub physical_resource_id: String,
    pub reason: String,
    /// HTTP attempts the PUT took.
    pub attempts: u32,
}

/// Answers CloudFormation for a [`CustomResource`]. Build one per cold start.
#[derive(Debug, Clone)]
pub struct Responder {
    delivery: ResponseDelivery,
    deadline_margin: Duration,
}

impl Default for Responder {
    fn default() -> Self {
        Self::new()
    }
}

impl Responder {
    pub fn new() -> Self {
        Self {
            delivery: ResponseDelivery::new(),
            deadline_margin: DEFAULT_DEADLINE_MARGIN,
        }
    }

    /// How long before the Lambda deadline the handler is stopped and FAILED is sent
    /// (default 5 s, which leaves room for the PUT and its retries; never more than a third
    /// of the invocation's time).
    pub fn with_deadline_margin(mut self, margin: Duration) -> Self {
        self.deadline_margin = margin;
        self
    }

    /// The roots the responses' HTTPS client trusts (default: the process's [`SystemRoots`]).
    pub fn with_roots(mut self, roots: &'static SystemRoots) -> Self {
        self.delivery.roots = roots;
        self
    }

    /// PUT attempts (default 5) and the first pause between them (default 200 ms, doubling).
    pub fn with_retries(mut self, max_attempts: u32, first_backoff: Duration) -> Self {
        self.delivery.max_attempts = max_attempts.max(1);
        self.delivery.first_backoff = first_backoff;
        self
    }

    /// When a handler invoked with `context` must have its answer: the deadline margin before
    /// the Lambda deadline (for a function that answers by itself, as deploy-gate does to
    /// CodeDeploy and direct callers).
    pub fn answer_by(&self, context: &Context) -> Instant {
        self.answer_by_deadline(lambda_deadline(context))
    }

    fn answer_by_deadline(&self, deadline: Instant) -> Instant {
        // A short Lambda timeout (3 s by default) must not be eaten by the margin: keep at
        // most a third of the budget back for the answer.
        let budget = deadline.saturating_duration_since(Instant::now());
        deadline - self.deadline_margin.min(budget / 3)
    }

    /// Handles one invocation: runs `resource` for the request in `event` and PUTs the answer.
    pub async fn respond<R: CustomResource>(
        &self,
        resource: &R,
        event: LambdaEvent<Value>,
    ) -> Result<Answered, ResponderError> {
        let (payload, context) = event.into_parts();
        let deadline = lambda_deadline(&context);
        let answer_by = self.answer_by_deadline(deadline);
        match Envelope::parse(payload, answer_by).map_err(|invalid| *invalid) {
            Ok(envelope) => {
                let answer = self.run(resource, &envelope).await;
                let ids = envelope.request.ids();
                self.send(&envelope.response_url, answer, &ids, deadline)
                    .await
            }
            Err(InvalidRequest::Answerable {
                response_url,
                ids,
                physical_resource_id,
                reason,
            }) => {
                tracing::error!(%reason, "answering FAILED to a malformed request");
                let answer = Answer {
                    status: Status::Failed,
                    physical_resource_id: physical_resource_id
                        .unwrap_or_else(|| create_failed_id(&ids)),
                    reason,
                    data: Default::default(),
                    no_echo: false,
                };
                self.send(&response_url, answer, &ids, deadline).await
            }
            Err(InvalidRequest::Unanswerable(reason)) => {
                tracing::error!(%reason, "event ignored");
                Err(ResponderError::NotARequest(reason))
            }
        }
    }

    /// Runs the handler under the guards and turns whatever happens into an answer.
    async fn run<R: CustomResource>(&self, resource: &R, envelope: &Envelope) -> Answer {
        let request = &envelope.request;
        tracing::info!(
            request_type = ?request.request_type,
            logical_resource_id = %request.logical_resource_id,
            physical_resource_id = request.physical_resource_id.as_deref().unwrap_or(""),
            resource_type = %request.resource_type,
            answer_within_ms = request.time_left().as_millis() as u64,
            "custom resource request"
        );
        if request.request_type == RequestType::Delete
            && current_id(request).starts_with(CREATE_FAILED_PREFIX)
        {
            let reason = "nothing to delete: the Create of this resource failed".to_owned();
            return succeeded(request, Outcome::new().reason(reason));
        }
        let work = AssertUnwindSafe(call_handler(resource, envelope)).catch_unwind();
        match tokio::time::timeout_at(request.answer_by, work).await {
            Ok(Ok(Ok(outcome))) => succeeded(request, outcome),
            Ok(Ok(Err(reason))) => failed(request, reason),
            Ok(Err(panic)) => failed(
                request,
                format!("the handler panicked: {}", panic_message(panic.as_ref())),
            ),
            Err(_elapsed) => failed(
                request,
                format!(
                    "timed out: the handler had not finished {} s before the Lambda deadline, \
                     so it was stopped",
                    self.deadline_margin.as_secs_f32()
                ),
            ),
        }
    }

    async fn send(
        &self,
        response_url: &str,
        answer: Answer,
        ids: &ResponseIds,
        deadline: Instant,
    ) -> Result<Answered, ResponderError> {
        let physical_resource_id = answer.physical_resource_id.clone();
        let encoded = encode(answer, ids);
        let give_up_at = deadline.checked_sub(DELIVERY_SLACK).unwrap_or(deadline);
        let delivered = self
            .delivery
            .put(response_url, encoded.body, give_up_at)
            .await;
        match delivered {
            Ok(attempts) => {
                tracing::info!(
                    status = ?encoded.status,
                    logical_resource_id = %ids.logical_resource_id,
                    %physical_resource_id,
                    reason = %encoded.reason,
                    reason_truncated = encoded.reason_truncated,
                    attempts,
                    response_url = loggable_url(response_url),
                    "answered CloudFormation"
                );
                Ok(Answered {
                    status: encoded.status,
                    physical_resource_id,
                    reason: encoded.reason,
                    attempts,
                })
            }
            Err(source) => {
                tracing::error!(
                    status = ?encoded.status,
                    logical_resource_id = %ids.logical_resource_id,
                    error = %source,
                    response_url = loggable_url(response_url),
                    "CloudFormation was not told the result"
                );
                Err(ResponderError::Undelivered {
                    status: encoded.status,
                    logical_resource_id: ids.logical_resource_id.clone(),
                    source,
                })
            }
        }
    }
}

/// Parses the properties and calls the handler for the request type. `Err` is the reason.
async fn call_handler<R: CustomResource>(
    resource: &R,
    envelope: &Envelope,
) -> Result<Outcome, String> {
    let request = &envelope.request;
    let properties = serde_json::from_value::<R::Properties>(envelope.properties.clone())
        .map_err(|e| format!("invalid properties: {e}"));
    let result = match request.request_type {
        RequestType::Create => resource.create(request, properties?).await,
        RequestType::Update => {
            let old = envelope.old_properties.clone().and_then(|old| {
                serde_json::from_value::<R::Properties>(old)
                    .inspect_err(|e| tracing::warn!(error = %e, "old properties do not parse; updating from the new ones alone"))
                    .ok()
            });
            resource.update(request, properties?, old).await
        }
        RequestType::Delete => match properties {
            Ok(properties) => resource.delete(request, properties).await,
            // Failing here would leave the stack stuck in DELETE_FAILED; deleting nothing is
            // the side that loses nothing.
            Err(reason) => {
                tracing::warn!(%reason, "Delete with properties that do not parse: nothing deleted");
                Ok(Outcome::new().reason(format!("{reason}; nothing was deleted")))
            }
        },
    };
    result.map_err(|e| error_chain(e.as_ref()))
}

fn succeeded(request: &Request, outcome: Outcome) -> Answer {
    let physical_resource_id = match request.request_type {
        RequestType::Create => outcome
            .physical_resource_id
            .clone()
            .unwrap_or_else(|| format!("{}-{}", request.logical_resource_id, request.request_id)),
        RequestType::Update => outcome
            .physical_resource_id
            .clone()
            .unwrap_or_else(|| current_id(request).to_owned()),
        // The id of a deleted resource is the one CloudFormation asked about.
        RequestType::Delete => current_id(request).to_owned(),
    };
    if physical_resource_id.is_empty() || physical_resource_id.len() > MAX_PHYSICAL_ID_BYTES {
        return failed(
            request,
            format!(
                "the handler returned a physical resource id of {} bytes; it must be 1 to \
                 {MAX_PHYSICAL_ID_BYTES} bytes",
                physical_resource_id.len()
            ),
        );
    }
    let reason = outcome
        .reason
        .unwrap_or_else(|| format!("{:?} succeeded", request.request_type));
    Answer {
        status: Status::Success,
        reason,
        physical_resource_id,
        // Data of a Delete is never read; dropping it keeps the answer small.
        data: match request.request_type {
            RequestType::Delete => Default::default(),
            _ => outcome.data,
        },
        no_echo: outcome.no_echo,
    }
}

fn failed(request: &Request, reason: String) -> Answer {
    tracing::error!(request_type = ?request.request_type, %reason, "custom resource request failed");
    let physical_resource_id = match request.request_type {
        RequestType::Create => create_failed_id(&request.ids()),
        RequestType::Update | RequestType::Delete => current_id(request).to_owned(),
    };
    Answer {
        status: Status::Failed,
        reason,
        physical_resource_id,
        data: Default::default(),
        no_echo: false,
    }
}

fn current_id(request: &Request) -> &str {
    request.physical_resource_id.as_deref().unwrap_or_default()
}

/// Recognisable, and the same when CloudFormation retries the same request.
fn create_failed_id(ids: &ResponseIds) -> String {
    format!(
        "{CREATE_FAILED_PREFIX}{}:{}",
        ids.logical_resource_id, ids.request_id
    )
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// The invocation deadline as a monotonic instant.
fn lambda_deadline(context: &Context) -> Instant {
    let now = Instant::now();
    if context.deadline == 0 {
        tracing::warn!(
            "the invocation has no deadline; assuming {} s",
            UNKNOWN_DEADLINE_BUDGET.as_secs()
        );
        return now + UNKNOWN_DEADLINE_BUDGET;
    }
    let deadline = UNIX_EPOCH + Duration::from_millis(context.deadline);
    now + deadline
        .duration_since(SystemTime::now())
        .unwrap_or_default()
}
