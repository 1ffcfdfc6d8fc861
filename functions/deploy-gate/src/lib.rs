//! deploy-gate: pass or fail a deploy on alarms and metrics, as a CloudFormation custom
//! resource, a CodeDeploy hook or a CI step.
//!
//! `trigger` tells the three apart, `gate` reads the one definition they share, `bake` polls
//! and `verdict` decides (pure), `rollback` lets CloudFormation's rollbacks through (pure);
//! `aws` reads CloudWatch and CloudFormation and reports through SNS and CodeDeploy.

pub mod aws;
pub mod bake;
pub mod config;
pub mod gate;
pub mod rollback;
pub mod trigger;
pub mod verdict;

use std::time::Duration;

use lambda_runtime::{Diagnostic, LambdaEvent};
use serde::Serialize;
use serde_json::Value;
use shared::{
    BoxError,
    custom_resource::{CustomResource, Outcome, Request, Responder, ResponderError},
    sns_subject::SnsSubject,
};
use tokio::time::Instant;
use trigger::{Trigger, TriggerError, TriggerKind};

use crate::aws::{AwsError, AwsGate};
use crate::bake::{BakeOutcome, bake};
use crate::config::Config;
use crate::gate::{Gate, GateDefinition, InvalidGate, NoData};
use crate::rollback::{StackStatus, UpdateGating, update_gating};
use crate::verdict::{CheckResult, Decision};

/// Longest the stack status may take to read; a slow answer must not eat the bake's time.
const STACK_STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error(transparent)]
    Trigger(#[from] TriggerError),
    #[error(transparent)]
    CloudFormation(#[from] ResponderError),
    #[error(transparent)]
    InvalidGate(#[from] InvalidGate),
    #[error(
        "the {verdict} verdict of deployment {deployment_id} could not be given to CodeDeploy: {source}"
    )]
    CodeDeployUnanswered {
        deployment_id: String,
        verdict: &'static str,
        #[source]
        source: AwsError,
    },
}

impl From<GateError> for Diagnostic {
    fn from(error: GateError) -> Self {
        match error {
            GateError::CloudFormation(inner) => inner.into(),
            GateError::Trigger(_) => shared::diagnostic("UnrecognisedEvent", &error),
            GateError::InvalidGate(_) => shared::diagnostic("InvalidGateDefinition", &error),
            GateError::CodeDeployUnanswered { ref source, .. } => {
                // Transient: Lambda's retry runs the gate again and answers then.
                shared::diagnostic(source.error_type(), &error)
            }
        }
    }
}

/// The verdict: returned to CI, logged, published to `ALERT_TOPIC_ARN`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    /// `verdict` in the JSON: pass, fail or skipped.
    #[serde(rename = "verdict")]
    pub decision: Decision,
    pub reason: String,
    pub trigger: TriggerKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack_id: Option<String>,
    pub bake_seconds: u64,
    pub poll_seconds: u64,
    pub no_data: NoData,
    pub polls: u32,
    pub elapsed_seconds: f64,
    pub checks: Vec<CheckResult>,
    /// Whether the verdict reached `ALERT_TOPIC_ARN` (a failed publish never changes it).
    pub published: bool,
}

impl Verdict {
    /// A verdict given without a bake: nothing polled, nothing checked.
    fn unbaked(decision: Decision, reason: String, trigger: TriggerKind) -> Self {
        Verdict {
            decision,
            reason,
            trigger,
            release: None,
            deployment_id: None,
            stack_id: None,
            bake_seconds: 0,
            poll_seconds: 0,
            no_data: NoData::default(),
            polls: 0,
            elapsed_seconds: 0.0,
            checks: Vec::new(),
            published: false,
        }
    }

    fn passed(&self) -> bool {
        self.decision == Decision::Pass
    }

    fn label(&self) -> &'static str {
        match self.decision {
            Decision::Pass => "pass",
            Decision::Fail => "fail",
            Decision::Inconclusive => "inconclusive",
            Decision::Skipped => "skipped",
        }
    }
}

/// Where a verdict goes besides the caller (SNS in Lambda).
pub trait Reporter: Sync {
    fn publish(
        &self,
        topic_arn: &str,
        verdict: &Verdict,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
}

impl Reporter for AwsGate {
    async fn publish(&self, topic_arn: &str, verdict: &Verdict) -> Result<(), AwsError> {
        let subject = SnsSubject::new(&format!(
            "deploy-gate {}: {}",
            verdict.label(),
            verdict.release.as_deref().unwrap_or("(no release)")
        ));
        let message = serde_json::to_string(verdict).expect("a verdict serializes");
        self.publish_verdict(
            topic_arn,
            &subject,
            verdict.label(),
            verdict.trigger.as_str(),
            message,
        )
        .await
    }
}

/// The function: configuration, AWS adapter and responder, built once per cold start.
pub struct DeployGate {
    config: Config,
    aws: AwsGate,
    responder: Responder,
}

impl DeployGate {
    pub fn new(config: Config, aws: AwsGate, responder: Responder) -> Self {
        DeployGate {
            config,
            aws,
            responder,
        }
    }

    /// The Lambda entry point.
    pub async fn handle(&self, event: LambdaEvent<Value>) -> Result<Value, GateError> {
        let (payload, context) = event.into_parts();
        match Trigger::from_payload(payload)? {
            Trigger::CloudFormation(request) => {
                let answered = Box::pin(
                    self.responder
                        .respond(self, LambdaEvent::new(request, context)),
                )
                .await?;
                Ok(serde_json::to_value(answered).expect("an answer of strings serializes"))
            }
            Trigger::CodeDeployHook(hook) => {
                let finish_by = self.responder.answer_by(&context);
                let mut verdict = match &self.config.hook_gate {
                    Some(gate) => self.run(gate, TriggerKind::Codedeploy, finish_by).await,
                    // Never leave a deployment waiting for the hook's timeout, never pass it unchecked.
                    None => self.unchecked(TriggerKind::Codedeploy, "no gate is configured for CodeDeploy hooks: set GATE_ALARM_NAMES and/or GATE_TARGET_GROUP with GATE_LOAD_BALANCER").await,
                };
                verdict.deployment_id = Some(hook.deployment_id.clone());
                self.aws
                    .answer_hook(
                        &hook.deployment_id,
                        &hook.lifecycle_event_hook_execution_id,
                        verdict.passed(),
                    )
                    .await
                    .map_err(|source| GateError::CodeDeployUnanswered {
                        deployment_id: hook.deployment_id.clone(),
                        verdict: verdict.label(),
                        source,
                    })?;
                tracing::info!(deployment_id = %hook.deployment_id, verdict = verdict.label(), "CodeDeploy told the verdict");
                Ok(serde_json::to_value(&verdict).expect("a verdict serializes"))
            }
            Trigger::Direct(definition) => {
                let gate = GateDefinition::from_json(Value::Object(definition))?;
                let verdict = self
                    .run(
                        &gate,
                        TriggerKind::Direct,
                        self.responder.answer_by(&context),
                    )
                    .await;
                Ok(serde_json::to_value(&verdict).expect("a verdict serializes"))
            }
        }
    }

    /// Bakes, then logs and publishes the verdict.
    async fn run(&self, gate: &Gate, trigger: TriggerKind, finish_by: Instant) -> Verdict {
        tracing::info!(
            ?trigger,
            release = gate.release.as_deref().unwrap_or(""),
            alarms = gate.alarm_names.len(),
            checks = gate.checks.len(),
            bake_seconds = gate.bake.as_secs(),
            finish_within_ms = finish_by
                .saturating_duration_since(Instant::now())
                .as_millis() as u64,
            "gate bake starting"
        );
        // Boxed: the SDK futures nest deep enough to exceed the compiler's layout recursion limit.
        let outcome = Box::pin(bake(gate, &self.aws, finish_by)).await;
        self.report(verdict_of(gate, trigger, outcome)).await
    }

    async fn unchecked(&self, trigger: TriggerKind, reason: &str) -> Verdict {
        self.report(Verdict::unbaked(Decision::Fail, reason.to_owned(), trigger))
            .await
    }

    async fn report(&self, mut verdict: Verdict) -> Verdict {
        match self
            .aws
            .publish(&self.config.alert_topic_arn, &verdict)
            .await
        {
            Ok(()) => verdict.published = true,
            // The deploy's fate matters more than the notice; the log still has the verdict.
            Err(error) => tracing::error!(%error, "verdict not published"),
        }
        let level_fail = verdict.decision != Decision::Pass;
        if level_fail {
            tracing::warn!(verdict = verdict.label(), reason = %verdict.reason, polls = verdict.polls, published = verdict.published, "gate verdict");
        } else {
            tracing::info!(verdict = verdict.label(), reason = %verdict.reason, polls = verdict.polls, published = verdict.published, "gate verdict");
        }
        verdict
    }
}

fn verdict_of(gate: &Gate, trigger: TriggerKind, outcome: BakeOutcome) -> Verdict {
    Verdict {
        decision: outcome.decision,
        reason: outcome.reason,
        trigger,
        release: gate.release.clone(),
        deployment_id: None,
        stack_id: None,
        bake_seconds: gate.bake.as_secs(),
        poll_seconds: gate.poll.as_secs(),
        no_data: gate.no_data,
        polls: outcome.polls,
        elapsed_seconds: (outcome.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        checks: outcome.checks,
        published: false,
    }
}

/// `Custom::DeployGate`: Create and Update bake (`Release` changes per deploy so an Update
/// arrives every time), except an Update while the stack rolls back; Delete reads nothing and
/// succeeds (a rolled-back Create arrives as a Delete).
impl CustomResource for DeployGate {
    type Properties = GateDefinition;

    async fn create(
        &self,
        request: &Request,
        properties: GateDefinition,
    ) -> Result<Outcome, BoxError> {
        self.custom_resource(request, properties, None).await
    }

    async fn update(
        &self,
        request: &Request,
        properties: GateDefinition,
        _old: Option<GateDefinition>,
    ) -> Result<Outcome, BoxError> {
        let status = self.stack_status(&request.stack_id).await;
        match update_gating(&status) {
            UpdateGating::SkipRollback => Ok(self.skip_rollback(request, properties).await),
            UpdateGating::Gate { status_unread } => {
                if let Some(why) = &status_unread {
                    tracing::warn!(stack_id = %request.stack_id, %why, "the stack status could not be read; gating the update as usual");
                }
                self.custom_resource(request, properties, status_unread.as_deref())
                    .await
            }
        }
    }

    async fn delete(&self, _: &Request, _: GateDefinition) -> Result<Outcome, BoxError> {
        Ok(Outcome::new().reason("nothing to delete: the gate only reads alarms and metrics"))
    }
}

impl DeployGate {
    /// Bakes. `status_unread` (why the stack status is unknown) goes into a FAILED reason:
    /// if this was a rollback, it tells the operator why the gate blocked it.
    async fn custom_resource(
        &self,
        request: &Request,
        properties: GateDefinition,
        status_unread: Option<&str>,
    ) -> Result<Outcome, BoxError> {
        let gate = properties.validate()?;
        let mut verdict = self
            .run(&gate, TriggerKind::Cloudformation, request.answer_by())
            .await;
        verdict.stack_id = Some(request.stack_id.clone());
        match verdict.decision {
            Decision::Pass => Ok(Outcome::new()
                .data("Verdict", "pass")
                .data("Release", gate.release.clone().unwrap_or_default())
                .reason(format!("deploy gate passed: {}", verdict.reason))),
            // CloudFormation knows only SUCCESS and FAILED; an unchecked deploy is not a pass.
            Decision::Fail | Decision::Inconclusive | Decision::Skipped => {
                let mut reason = format!("deploy gate {}: {}", verdict.label(), verdict.reason);
                if let Some(why) = status_unread {
                    reason.push_str(&format!(
                        " (the stack status could not be read, so a rollback would be gated too: {why})"
                    ));
                }
                Err(reason.into())
            }
        }
    }

    /// The request's stack status; any failure, a slow answer included, is `Unreadable`.
    async fn stack_status(&self, stack_id: &str) -> StackStatus {
        match tokio::time::timeout(STACK_STATUS_TIMEOUT, self.aws.stack_status(stack_id)).await {
            Ok(Ok(status)) => StackStatus::Known(status),
            Ok(Err(error)) => StackStatus::Unreadable(error.to_string()),
            Err(_) => StackStatus::Unreadable(format!(
                "DescribeStacks ({stack_id}) took longer than {} s",
                STACK_STATUS_TIMEOUT.as_secs()
            )),
        }
    }

    /// SUCCESS without a bake while CloudFormation rolls back a failed update: gating the old
    /// properties can only strand the stack in `UPDATE_ROLLBACK_FAILED`. Logged and published
    /// like a verdict; the physical id stays.
    async fn skip_rollback(&self, request: &Request, properties: GateDefinition) -> Outcome {
        let reason = format!(
            "skipped: stack rolling back ({}); the deploy gate does not block a rollback",
            rollback::ROLLING_BACK
        );
        let verdict = Verdict {
            release: properties.release.clone(),
            stack_id: Some(request.stack_id.clone()),
            ..Verdict::unbaked(
                Decision::Skipped,
                reason.clone(),
                TriggerKind::Cloudformation,
            )
        };
        self.report(verdict).await;
        Outcome::new()
            .data("Verdict", "skipped")
            .data("Release", properties.release.unwrap_or_default())
            .reason(format!("deploy gate {reason}"))
    }
}
