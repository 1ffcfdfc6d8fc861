//! The Secrets Manager rotation event and its four steps.

use aws_lambda_events::event::secretsmanager::SecretsManagerSecretRotationEvent;
use serde_json::Value;
use shared::payload::{MalformedEvent, decode};

/// The four steps of the rotation protocol, in the order Secrets Manager calls them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationStep {
    CreateSecret,
    SetSecret,
    TestSecret,
    FinishSecret,
}

impl RotationStep {
    /// The name Secrets Manager uses in the event.
    pub fn as_str(self) -> &'static str {
        match self {
            RotationStep::CreateSecret => "createSecret",
            RotationStep::SetSecret => "setSecret",
            RotationStep::TestSecret => "testSecret",
            RotationStep::FinishSecret => "finishSecret",
        }
    }
}

impl std::fmt::Display for RotationStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an event was turned away.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error(transparent)]
    Malformed(#[from] MalformedEvent),
    #[error(
        "unknown rotation step `{0}`; expected createSecret, setSecret, testSecret or finishSecret"
    )]
    UnknownStep(String),
}

/// One rotation call, decoded: which secret, which version (the token) and which step.
/// Suite naming rule: the decoded event a handler acts on is `Trigger`, in the crate's
/// `trigger.rs`, and its decode error is `TriggerError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    pub secret_id: String,
    pub token: String,
    pub step: RotationStep,
}

impl Trigger {
    pub fn from_payload(payload: Value) -> Result<Self, TriggerError> {
        let event: SecretsManagerSecretRotationEvent = decode(payload, "Secrets Manager rotation")?;
        let step = match event.step.as_str() {
            "createSecret" => RotationStep::CreateSecret,
            "setSecret" => RotationStep::SetSecret,
            "testSecret" => RotationStep::TestSecret,
            "finishSecret" => RotationStep::FinishSecret,
            other => return Err(TriggerError::UnknownStep(other.to_owned())),
        };
        Ok(Trigger {
            secret_id: event.secret_id,
            token: event.client_request_token,
            step,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::sample_events::sample;

    #[test]
    fn each_sample_decodes_to_its_step() {
        for (file, step) in [
            ("createSecret", RotationStep::CreateSecret),
            ("setSecret", RotationStep::SetSecret),
            ("testSecret", RotationStep::TestSecret),
            ("finishSecret", RotationStep::FinishSecret),
        ] {
            let request =
                Trigger::from_payload(sample("secret-rotation", &format!("{file}.json"))).unwrap();
            assert_eq!(request.step, step);
            assert_eq!(request.token, "3f0c8b4e-7a1d-4c52-9e6b-2d8f1a7c5e90");
        }
    }

    #[test]
    fn an_unknown_step_is_refused_by_name() {
        let mut event = sample("secret-rotation", "createSecret.json");
        event["Step"] = "rollbackSecret".into();
        let err = Trigger::from_payload(event).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("unknown rotation step `rollbackSecret`"),
            "{err}"
        );
    }
}
