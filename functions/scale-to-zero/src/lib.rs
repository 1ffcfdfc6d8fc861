//! scale-to-zero: idle per-workflow Spot GPU groups to zero, backlog-per-instance scaling,
//! wake 0→N when work arrives. This version decodes and logs its triggers; the scaling
//! decisions are not implemented yet.

pub mod trigger;

use lambda_runtime::LambdaEvent;
use serde_json::{Value, json};
use shared::BoxError;
use trigger::Trigger;

/// The Lambda entry point.
pub async fn handle(event: LambdaEvent<Value>) -> Result<Value, BoxError> {
    let trigger = Trigger::from_payload(event.payload)?;
    tracing::info!(
        trigger = trigger.kind(),
        "scale-to-zero invoked; scaling is not implemented in this version"
    );
    Ok(json!({ "trigger": trigger.kind(), "changes": [] }))
}
