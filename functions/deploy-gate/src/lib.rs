//! deploy-gate: pass or fail a deploy on alarms and metrics, as a CloudFormation custom
//! resource, a CodeDeploy hook or a CI step. This version recognises its three entry points
//! but evaluates nothing: it never passes a deploy it has not checked.

pub mod entry;

use entry::{Entry, EntryError};
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde_json::{Map, Value, json};
use shared::{
    BoxError,
    custom_resource::{CustomResource, Outcome, Request, Responder, ResponderError},
};

const NOT_YET: &str = "gate checks are not implemented in this version";

/// `Custom::DeployGate`.
pub struct DeployGate;

impl CustomResource for DeployGate {
    type Properties = Map<String, Value>;

    async fn create(&self, _: &Request, _: Self::Properties) -> Result<Outcome, BoxError> {
        Err(NOT_YET.into())
    }

    async fn update(
        &self,
        _: &Request,
        _: Self::Properties,
        _: Option<Self::Properties>,
    ) -> Result<Outcome, BoxError> {
        Err(NOT_YET.into())
    }

    async fn delete(&self, _: &Request, _: Self::Properties) -> Result<Outcome, BoxError> {
        Ok(Outcome::new())
    }
}

/// Why an invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error(transparent)]
    Entry(#[from] EntryError),
    #[error(transparent)]
    CloudFormation(#[from] ResponderError),
    #[error("deployment {deployment_id}: {NOT_YET}")]
    HookNotImplemented { deployment_id: String },
}

impl From<GateError> for Diagnostic {
    fn from(error: GateError) -> Self {
        match error {
            GateError::CloudFormation(inner) => inner.into(),
            GateError::Entry(_) => shared::diagnostic("UnrecognisedEvent", &error),
            GateError::HookNotImplemented { .. } => {
                shared::diagnostic("HookNotImplemented", &error)
            }
        }
    }
}

/// The Lambda entry point.
pub async fn handle(event: LambdaEvent<Value>, responder: &Responder) -> Result<Value, GateError> {
    let (payload, context) = event.into_parts();
    match Entry::from_payload(payload)? {
        Entry::CloudFormation(request) => {
            let answered = responder
                .respond(&DeployGate, LambdaEvent::new(request, context))
                .await?;
            Ok(serde_json::to_value(answered).expect("an answer of strings serializes"))
        }
        Entry::CodeDeployHook(hook) => {
            let error = GateError::HookNotImplemented {
                deployment_id: hook.deployment_id,
            };
            tracing::error!(%error);
            Err(error)
        }
        Entry::Direct(definition) => {
            let keys: Vec<&String> = definition.keys().collect();
            tracing::info!(?keys, NOT_YET);
            Ok(json!({ "verdict": "inconclusive", "reason": NOT_YET, "checks": [] }))
        }
    }
}
