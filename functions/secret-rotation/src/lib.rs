//! secret-rotation: the four-step Secrets Manager rotation for database credentials and
//! generated keys. This version decodes the rotation event and refuses to rotate, so a
//! rotation never reports success without having changed anything.

pub mod step;

use lambda_runtime::LambdaEvent;
use serde_json::Value;
use shared::BoxError;
use step::RotationRequest;

/// The Lambda entry point.
pub async fn handle(event: LambdaEvent<Value>) -> Result<Value, BoxError> {
    let request = RotationRequest::from_payload(event.payload)?;
    tracing::warn!(secret_id = %request.secret_id, step = ?request.step, "rotation is not implemented in this version; the secret was not changed");
    Err(format!(
        "{:?} for {}: rotation is not implemented in this version; the secret was not changed",
        request.step, request.secret_id
    )
    .into())
}
