//! The three ways deploy-gate is invoked, told apart by their shape.

use aws_lambda_events::event::codedeploy::CodeDeployLifecycleEvent;
use serde_json::{Map, Value};
use shared::payload::{MalformedEvent, decode, describe_shape};

/// One invocation's entry point.
#[derive(Debug)]
pub enum Entry {
    /// `Custom::DeployGate`: answered through the shared responder.
    CloudFormation(Value),
    /// A CodeDeploy lifecycle hook; the gate comes from the function's environment.
    CodeDeployHook(CodeDeployLifecycleEvent),
    /// A CI step invoking the function with a gate definition; gets the verdict back.
    Direct(Map<String, Value>),
}

#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error(transparent)]
    Malformed(#[from] MalformedEvent),
    #[error(
        "unrecognised event ({0}); expected a CloudFormation request, a CodeDeploy hook or a gate definition object"
    )]
    Unrecognised(String),
}

impl Entry {
    pub fn from_payload(payload: Value) -> Result<Self, EntryError> {
        let has = |key: &str| payload.get(key).is_some();
        if has("ResponseURL") || has("RequestType") {
            Ok(Entry::CloudFormation(payload))
        } else if has("DeploymentId") || has("LifecycleEventHookExecutionId") {
            Ok(Entry::CodeDeployHook(decode(
                payload,
                "CodeDeploy lifecycle hook",
            )?))
        } else if let Value::Object(definition) = payload {
            Ok(Entry::Direct(definition))
        } else {
            Err(EntryError::Unrecognised(describe_shape(&payload)))
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
                    Entry::from_payload(sample("deploy-gate", cloudformation)).unwrap(),
                    Entry::CloudFormation(_)
                ),
                "{cloudformation}"
            );
        }
        let Entry::CodeDeployHook(hook) =
            Entry::from_payload(sample("deploy-gate", "codedeploy-hook.json")).unwrap()
        else {
            panic!("not a CodeDeploy hook");
        };
        assert_eq!(hook.deployment_id, "d-8RTX3C0LE");
        assert!(matches!(
            Entry::from_payload(sample("deploy-gate", "ci-direct.json")).unwrap(),
            Entry::Direct(_)
        ));
    }

    #[test]
    fn a_hook_without_its_execution_id_is_malformed_and_non_objects_are_refused() {
        let err = Entry::from_payload(serde_json::json!({"DeploymentId": "d-1"})).unwrap_err();
        assert!(
            err.to_string().contains("LifecycleEventHookExecutionId"),
            "{err}"
        );
        let err = Entry::from_payload(serde_json::json!("pass please")).unwrap_err();
        assert!(err.to_string().contains("a string"), "{err}");
    }
}
