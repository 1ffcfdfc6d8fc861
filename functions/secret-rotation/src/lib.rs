//! secret-rotation: the four-step Secrets Manager rotation for database credentials and
//! generated keys. This version decodes the rotation event and refuses to rotate, so a
//! rotation never reports success without having changed anything.

pub mod step;

use lambda_runtime::{Diagnostic, LambdaEvent};
use serde_json::Value;
use step::{RotationEventError, RotationRequest, RotationStep};

/// Why a rotation step failed.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error(transparent)]
    Event(#[from] RotationEventError),
    #[error(
        "{step:?} for {secret_id}: rotation is not implemented in this version; the secret was not changed"
    )]
    NotImplemented {
        step: RotationStep,
        secret_id: String,
    },
}

impl From<RotationError> for Diagnostic {
    fn from(error: RotationError) -> Self {
        let error_type = match error {
            RotationError::Event(_) => "InvalidRotationEvent",
            RotationError::NotImplemented { .. } => "RotationNotImplemented",
        };
        shared::diagnostic(error_type, &error)
    }
}

/// The Lambda entry point.
pub async fn handle(event: LambdaEvent<Value>) -> Result<Value, RotationError> {
    let request = RotationRequest::from_payload(event.payload)?;
    let error = RotationError::NotImplemented {
        step: request.step,
        secret_id: request.secret_id,
    };
    tracing::warn!(%error);
    Err(error)
}
