//! deploy-gate: pass or fail a deploy on alarms and metrics, as a CloudFormation custom
//! resource, a CodeDeploy hook or a CI step. This version recognises its three entry points
//! but evaluates nothing: it never passes a deploy it has not checked.

pub mod entry;

use entry::Entry;
use lambda_runtime::LambdaEvent;
use serde_json::{Map, Value, json};
use shared::{
    BoxError,
    custom_resource::{CustomResource, Outcome, Request, Responder},
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

/// The Lambda entry point.
pub async fn handle(event: LambdaEvent<Value>, responder: &Responder) -> Result<Value, BoxError> {
    let (payload, context) = event.into_parts();
    match Entry::from_payload(payload)? {
        Entry::CloudFormation(request) => {
            let answered = responder
                .respond(&DeployGate, LambdaEvent::new(request, context))
                .await?;
            Ok(serde_json::to_value(answered)?)
        }
        Entry::CodeDeployHook(hook) => {
            tracing::error!(deployment_id = %hook.deployment_id, NOT_YET);
            Err(format!("deployment {}: {NOT_YET}", hook.deployment_id).into())
        }
        Entry::Direct(definition) => {
            let keys: Vec<&String> = definition.keys().collect();
            tracing::info!(?keys, NOT_YET);
            Ok(json!({ "verdict": "inconclusive", "reason": NOT_YET, "checks": [] }))
        }
    }
}
