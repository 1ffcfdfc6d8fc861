//! The three ways deploy-gate is invoked, told apart by their shape.

use aws_lambda_events::event::codedeploy::CodeDeployLifecycleEvent;
use serde::Serialize;
use serde_json::{Map, Value};
use shared::payload::{MalformedEvent, decode, describe_shape};

/// One invocation's event, decoded. Suite naming rule: the decoded event a handler acts on is
/// `Trigger`, in the crate's `trigger.rs`, and its decode error is `TriggerError`.
#[derive(Debug)]
pub enum Trigger {
    /// `Custom::DeployGate`: answered through the shared responder.
    CloudFormation(Value),
    /// A CodeDeploy lifecycle hook; the gate comes from the function's environment.
    CodeDeployHook(CodeDeployLifecycleEvent),
    /// A CI step invoking the function with a gate definition; gets the verdict back.
    Direct(Map<String, Value>),
}

/// Why an event was turned away.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error(transparent)]
    Malformed(#[from] MalformedEvent),
    #[error(
        "unrecognised event ({0}); expected a CloudFormation request, a CodeDeploy hook or a gate definition object"
    )]
    Unrecognised(String),
}

impl Trigger {
    pub fn from_payload(payload: Value) -> Result<Self, TriggerError> {
        let has = |key: &str| payload.get(key).is_some();
        if has("ResponseURL") || has("RequestType") {
            Ok(Trigger::CloudFormation(payload))
        } else if has("DeploymentId") || has("LifecycleEventHookExecutionId") {
            Ok(Trigger::CodeDeployHook(decode(
                payload,
                "CodeDeploy lifecycle hook",
            )?))
        } else if let Value::Object(definition) = payload {
            Ok(Trigger::Direct(definition))
        } else {
            Err(TriggerError::Unrecognised(describe_shape(&payload)))
        }
    }
}

/// Which entry point asked: the verdict's `trigger`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TriggerKind {
    Cloudformation,
    Codedeploy,
    Direct,
}

impl TriggerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerKind::Cloudformation => "cloudformation",
            TriggerKind::Codedeploy => "codedeploy",
            TriggerKind::Direct => "direct",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::sample_events::sample;

    #[test]
    fn each_sample_is_told_apart() {
        for cloudformation in ["cfn-create.json", "cfn-update.json", "cfn-delete.json"] {
            assert!(
                matches!(
                    Trigger::from_payload(sample("deploy-gate", cloudformation)).unwrap(),
                    Trigger::CloudFormation(_)
                ),
                "{cloudformation}"
            );
        }
        let Trigger::CodeDeployHook(hook) =
            Trigger::from_payload(sample("deploy-gate", "codedeploy-hook.json")).unwrap()
        else {
            panic!("not a CodeDeploy hook");
        };
        assert_eq!(hook.deployment_id, "d-8RTX3C0LE");
        assert!(matches!(
            Trigger::from_payload(sample("deploy-gate", "ci-direct.json")).unwrap(),
            Trigger::Direct(_)
        ));
    }

    #[test]
    fn a_hook_without_its_execution_id_is_malformed_and_non_objects_are_refused() {
        let err = Trigger::from_payload(serde_json::json!({"DeploymentId": "d-1"})).unwrap_err();
        assert!(
            err.to_string().contains("LifecycleEventHookExecutionId"),
            "{err}"
        );
        let err = Trigger::from_payload(serde_json::json!("pass please")).unwrap_err();
        assert!(err.to_string().contains("a string"), "{err}");
    }
}
