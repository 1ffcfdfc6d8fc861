//! spot-interruption: on Spot interruption warnings, rebalance recommendations and terminate
//! lifecycle actions, replace capacity and tell the backend which jobs to requeue. This
//! version decodes and logs the events; acting on them is not implemented yet.

pub mod notice;

use lambda_runtime::{Diagnostic, LambdaEvent};
use notice::ReceivedNotice;
use serde_json::{Value, json};
use shared::payload::MalformedEvent;

/// Why an invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum SpotInterruptionError {
    #[error(transparent)]
    Malformed(#[from] MalformedEvent),
}

impl From<SpotInterruptionError> for Diagnostic {
    fn from(error: SpotInterruptionError) -> Self {
        let error_type = match error {
            SpotInterruptionError::Malformed(_) => "MalformedEvent",
        };
        shared::diagnostic(error_type, &error)
    }
}

/// The Lambda entry point.
pub async fn handle(event: LambdaEvent<Value>) -> Result<Value, SpotInterruptionError> {
    let received = ReceivedNotice::from_payload(event.payload)?;
    tracing::info!(event_id = %received.event_id, notice = ?received.notice, "instance notice received; acting on it is not implemented in this version");
    Ok(json!({ "eventId": received.event_id, "actions": [] }))
}
