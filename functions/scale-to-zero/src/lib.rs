//! scale-to-zero: idle per-workflow Spot GPU groups to zero, backlog-per-instance scaling,
//! wake 0→N when work arrives. This version decodes and logs its triggers; the scaling
//! decisions are not implemented yet.

pub mod trigger;

use lambda_runtime::{Diagnostic, LambdaEvent};
use serde_json::{Value, json};
use trigger::{Trigger, TriggerError};

impl From<TriggerError> for Diagnostic {
    fn from(error: TriggerError) -> Self {
        shared::diagnostic("UnrecognisedEvent", &error)
    }
}

/// The Lambda entry point.
pub async fn handle(event: LambdaEvent<Value>) -> Result<Value, TriggerError> {
    let trigger = Trigger::from_payload(event.payload)?;
    tracing::info!(
        trigger = trigger.kind(),
        "scale-to-zero invoked; scaling is not implemented in this version"
    );
    Ok(json!({ "trigger": trigger.kind(), "changes": [] }))
}
