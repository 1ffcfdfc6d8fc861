//! spot-interruption: on Spot interruption warnings, rebalance recommendations and terminate
//! lifecycle actions for instances of its own stack's managed Auto Scaling groups, replace
//! capacity and tell the backend (through the fleet topic) which worker is going away. Other
//! stacks' groups in the same account and region are left alone.
//!
//! `trigger` decodes the event, `plan` decides (pure), `aws` gathers facts and carries the
//! plan out. Every step of a plan is attempted, the publish and the detach at the same time.
//! A failure a retry can fix (throttling, 5xx, timeout) then fails the invocation so Lambda
//! retries, and `unfinished` keeps what was done, in memory and in the progress table
//! (`progress_table`), so that retry repeats nothing wherever it runs; anything else is
//! logged and the invocation succeeds, since retrying cannot change the answer.

pub mod aws;
pub mod config;
pub mod fleet_message;
pub mod metric;
pub mod notice;
pub mod plan;
pub mod progress_table;
pub mod trigger;
pub mod unfinished;

use std::future::Future;

use lambda_runtime::{Diagnostic, LambdaEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use aws::{MetricOutput, SpotAws};
pub use config::Config;

use aws::StepResult;
use plan::{ActionPlan, Decision, FactsNeeded, Steps};
use shared::aws::AwsError;
use trigger::Trigger;
use unfinished::{Unfinished, progress_of};

/// Why an invocation failed: only failures a retry can fix end up here.
#[derive(Debug, thiserror::Error)]
pub enum SpotInterruptionError {
    #[error(
        "event {event_id}: {source}{} (transient; failing the invocation so Lambda retries it{})",
        also_note(also),
        done_note(done)
    )]
    Transient {
        event_id: String,
        /// Every step done so far, by this attempt and earlier ones; the retry does not
        /// repeat them.
        done: Vec<Action>,
        source: Box<AwsError>,
        /// The other steps that failed in the same attempt (every step is attempted).
        also: Vec<AwsError>,
    },
}

fn also_note(also: &[AwsError]) -> String {
    also.iter().map(|error| format!("; also {error}")).collect()
}

fn done_note(done: &[Action]) -> String {
    if done.is_empty() {
        String::new()
    } else {
        format!("; already done: {}", action_names(done))
    }
}

fn action_names(actions: &[Action]) -> String {
    let names: Vec<&str> = actions.iter().map(|a| a.as_str()).collect();
    names.join(", ")
}

impl From<SpotInterruptionError> for Diagnostic {
    fn from(error: SpotInterruptionError) -> Self {
        let error_type = match error {
            SpotInterruptionError::Transient { .. } => shared::aws::RETRYABLE_ERROR_TYPE,
        };
        shared::diagnostic(error_type, &error)
    }
}

/// A step carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    PublishedFleetMessage,
    /// Detached with desired capacity kept: the replacement is launching.
    Detached,
    /// `DetachInstances` said the instance is no longer attached (a concurrent delivery or
    /// the group got there first).
    AlreadyDetached,
    CountedInterruption,
    CompletedLifecycleAction,
    /// `CompleteLifecycleAction` found no pending action (completed or timed out already).
    LifecycleActionAlreadyResolved,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::PublishedFleetMessage => "published-fleet-message",
            Action::Detached => "detached",
            Action::AlreadyDetached => "already-detached",
            Action::CountedInterruption => "counted-interruption",
            Action::CompletedLifecycleAction => "completed-lifecycle-action",
            Action::LifecycleActionAlreadyResolved => "lifecycle-action-already-resolved",
        }
    }
}

/// How an invocation ended, when it did not fail for a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutcomeKind {
    /// Every planned step succeeded.
    Acted,
    /// Nothing to do (not ours: unmanaged or another stack's; repeated delivery).
    Ignored,
    /// The event cannot be read; retrying would not change that.
    Rejected,
    /// A step failed for a reason a retry cannot fix (permission, validation); the other
    /// steps still ran.
    Failed,
}

/// The invocation's result (also what `cargo lambda invoke` prints).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub outcome: OutcomeKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<Action>,
    /// Steps an earlier, transiently failed attempt at this event got done (and this one
    /// did not repeat).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub already_done: Vec<Action>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
}

impl Outcome {
    /// An outcome that says nothing but its kind yet.
    fn of(outcome: OutcomeKind) -> Self {
        Outcome {
            outcome,
            event_id: None,
            detail_type: None,
            instance_id: None,
            workflow: None,
            reason: None,
            actions: Vec::new(),
            already_done: Vec::new(),
            failures: Vec::new(),
        }
    }

    fn for_notice(outcome: OutcomeKind, received: &Trigger) -> Self {
        Outcome {
            event_id: Some(received.event_id.clone()),
            detail_type: Some(received.notice.kind().to_owned()),
            instance_id: received.notice.instance_id().map(str::to_owned),
            ..Outcome::of(outcome)
        }
    }

    fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_else(|e| Value::String(e.to_string()))
    }
}

/// The Lambda entry point.
pub async fn handle(
    event: LambdaEvent<Value>,
    fleet: &SpotAws,
) -> Result<Value, SpotInterruptionError> {
    handle_payload(event.payload, fleet).await
}

/// Handles one EventBridge event (the entry point without the Lambda context, for tests).
pub async fn handle_payload(
    payload: Value,
    fleet: &SpotAws,
) -> Result<Value, SpotInterruptionError> {
    let shape = shared::payload::describe_shape(&payload);
    let received = match Trigger::from_payload(payload) {
        Ok(received) => received,
        Err(error) => {
            let reason = shared::error_chain(&error);
            tracing::error!(outcome = "rejected", payload = %shape, error = %reason, "event rejected: nothing done");
            let outcome = Outcome {
                reason: Some(reason),
                ..Outcome::of(OutcomeKind::Rejected)
            };
            return Ok(outcome.to_json());
        }
    };
    let outcome = act_on(&received, fleet).await;
    match &outcome {
        Ok(outcome) => log_outcome(outcome),
        Err(error) => {
            tracing::warn!(event_id = %received.event_id, detail_type = %received.notice.kind(), error = %error, "transient failure: Lambda retries the event")
        }
    }
    outcome.map(|outcome| outcome.to_json())
}

/// Gathers the facts, decides, carries the plan out; or, for the retry of an event an earlier
/// attempt left unfinished (here or in another execution environment), carries the rest of
/// that attempt's plan out.
pub async fn act_on(received: &Trigger, fleet: &SpotAws) -> Result<Outcome, SpotInterruptionError> {
    let event_id = received.event_id.as_str();
    if let Some(unfinished) = fleet.unfinished_events().take(event_id) {
        // No lookup: after the detach no group lists the instance, yet the message may be owed.
        return resume(received, unfinished, "this execution environment", fleet).await;
    }
    let needed = FactsNeeded::for_notice(&received.notice);
    // The table is read while Auto Scaling is asked, so a first attempt does not wait on it.
    let (facts, recorded) = match needed {
        FactsNeeded::None => (fleet.gather(&needed).await, None),
        _ => tokio::join!(fleet.gather(&needed), fleet.recorded_progress(event_id)),
    };
    if let Some(unfinished) = recorded {
        return resume(received, unfinished, "the progress table", fleet).await;
    }
    let facts = match facts {
        Ok(facts) => facts,
        Err(error) if error.transient => {
            return Err(SpotInterruptionError::Transient {
                event_id: received.event_id.clone(),
                done: Vec::new(),
                source: Box::new(error),
                also: Vec::new(),
            });
        }
        Err(error) => {
            let mut outcome = Outcome::for_notice(OutcomeKind::Failed, received);
            outcome.failures = vec![error.to_string()];
            return Ok(outcome);
        }
    };
    let stack = fleet.config().orchestrator_stack.as_str();
    match plan::decide(received, &facts, stack) {
        Decision::Ignore(ignored) => {
            let mut outcome = Outcome::for_notice(OutcomeKind::Ignored, received);
            outcome.reason = Some(ignored.to_string());
            if ignored.is_misconfiguration() {
                tracing::warn!(event_id = %received.event_id, stack, reason = %ignored, "left alone: fix the group's tags");
            }
            Ok(outcome)
        }
        Decision::Act(plan) => carry_out(received, &plan, Vec::new(), fleet).await,
    }
}

/// Finishes the plan an earlier attempt at the event left, repeating none of its steps; once
/// nothing is left, the event is a repeated delivery.
async fn resume(
    received: &Trigger,
    Unfinished { plan, done }: Unfinished,
    from: &str,
    fleet: &SpotAws,
) -> Result<Outcome, SpotInterruptionError> {
    if plan.steps_left(&progress_of(&done)).is_empty() {
        let mut outcome = Outcome::for_notice(OutcomeKind::Ignored, received);
        outcome.workflow = Some(plan.fleet_message.workflow.clone());
        outcome.reason = Some(format!(
            "repeated delivery: earlier attempts did every step ({})",
            action_names(&done)
        ));
        outcome.already_done = done;
        return Ok(outcome);
    }
    tracing::info!(event_id = %received.event_id, already_done = %action_names(&done), record = from, "resuming the plan an earlier attempt left unfinished");
    carry_out(received, &plan, done, fleet).await
}

/// Runs the steps of `plan` that `already_done` leaves, all of them even when one fails:
/// the publish, the detach and the lifecycle completion at the same time, so neither the
/// replacement nor the message waits on the other; the count after a successful detach. A
/// transient failure fails the invocation once every step was tried, recording what got done
/// for the retry; a permanent one is reported and the invocation succeeds. A resumed plan's
/// end is recorded too, so a late duplicate delivery repeats nothing.
async fn carry_out(
    received: &Trigger,
    plan: &ActionPlan,
    already_done: Vec<Action>,
    fleet: &SpotAws,
) -> Result<Outcome, SpotInterruptionError> {
    let steps = plan.steps_left(&progress_of(&already_done));
    let Attempted {
        actions,
        transient,
        failures,
    } = attempt_steps(received, steps, fleet).await;
    let mut done = already_done.clone();
    done.extend_from_slice(&actions);
    let unfinished = Unfinished {
        plan: plan.clone(),
        done,
    };
    if !transient.is_empty() {
        return Err(keep_for_retry(received, unfinished, transient, failures, fleet).await);
    }
    if !already_done.is_empty() {
        // A resumed plan: its record says what is done now (a failure is logged, and a late
        // duplicate then at worst repeats a step that finds its work done).
        let _ = fleet.record_progress(&received.event_id, &unfinished).await;
    }
    let mut outcome = Outcome::for_notice(OutcomeKind::Acted, received);
    outcome.workflow = Some(plan.fleet_message.workflow.clone());
    outcome.actions = actions;
    outcome.already_done = already_done;
    if !failures.is_empty() {
        outcome.outcome = OutcomeKind::Failed;
        outcome.failures = failures.iter().map(ToString::to_string).collect();
    }
    Ok(outcome)
}

/// What one attempt at a plan's steps did, and the failures, by whether a retry can fix them.
struct Attempted {
    actions: Vec<Action>,
    transient: Vec<AwsError>,
    failures: Vec<AwsError>,
}

/// Attempts every step: the publish, the detach and the lifecycle completion at the same
/// time, the count after a successful detach.
async fn attempt_steps(received: &Trigger, steps: Steps<'_>, fleet: &SpotAws) -> Attempted {
    let mut attempted = Attempted {
        actions: Vec::new(),
        transient: Vec::new(),
        failures: Vec::new(),
    };
    let (published, detached, completed) = tokio::join!(
        attempt(steps.publish, |message| fleet.publish(message)),
        attempt(steps.detach, |detach| fleet.detach(detach)),
        attempt(steps.complete_lifecycle_action, |completion| {
            fleet.complete_lifecycle_action(completion)
        }),
    );

    match published {
        None => {}
        Some(Ok(())) => attempted.actions.push(Action::PublishedFleetMessage),
        Some(Err(error)) => attempted.failed(error),
    }

    let mut count = steps.count_interruption;
    match detached {
        None => {}
        Some(Ok(StepResult::Done)) => attempted.actions.push(Action::Detached),
        Some(Ok(StepResult::AlreadyDone(detail))) => {
            // Whoever detached it counted it.
            count = None;
            tracing::info!(event_id = %received.event_id, %detail, "instance no longer attached");
            attempted.actions.push(Action::AlreadyDetached);
        }
        Some(Err(error)) => {
            // Counted by the retry that detaches; a permanent refusal is still an interruption.
            if error.transient {
                count = None;
            }
            attempted.failed(error);
        }
    }

    if let Some(count) = count {
        fleet.count_interruption(count);
        attempted.actions.push(Action::CountedInterruption);
    }

    match completed {
        None => {}
        Some(Ok(StepResult::Done)) => attempted.actions.push(Action::CompletedLifecycleAction),
        Some(Ok(StepResult::AlreadyDone(detail))) => {
            tracing::info!(event_id = %received.event_id, %detail, "lifecycle action already resolved");
            attempted
                .actions
                .push(Action::LifecycleActionAlreadyResolved);
        }
        Some(Err(error)) => attempted.failed(error),
    }
    attempted
}

impl Attempted {
    fn failed(&mut self, error: AwsError) {
        if error.transient {
            self.transient.push(error);
        } else {
            self.failures.push(error);
        }
    }
}

/// A transient failure: what got done is kept, in memory and in the progress table, for the
/// retry, and the invocation fails with every error of the attempt.
async fn keep_for_retry(
    received: &Trigger,
    unfinished: Unfinished,
    mut transient: Vec<AwsError>,
    failures: Vec<AwsError>,
    fleet: &SpotAws,
) -> SpotInterruptionError {
    let stored = fleet.record_progress(&received.event_id, &unfinished).await;
    if stored.is_err() && unfinished.owes_message_after_detach() {
        // The one message a retry in another execution environment cannot rebuild.
        tracing::warn!(
            event_id = %received.event_id,
            fleet_message = %unfinished.plan.fleet_message.body(),
            "fleet message owed: the instance is detached, the message is not sent yet and the progress table did not take the record; only a retry in this execution environment sends it"
        );
    }
    let done = unfinished.done.clone();
    fleet
        .unfinished_events()
        .keep(&received.event_id, unfinished);
    let source = transient.remove(0);
    transient.extend(failures);
    SpotInterruptionError::Transient {
        event_id: received.event_id.clone(),
        done,
        source: Box::new(source),
        also: transient,
    }
}

/// Runs `step` when there is one.
async fn attempt<S, F, T>(step: Option<S>, run: impl FnOnce(S) -> F) -> Option<T>
where
    F: Future<Output = T>,
{
    match step {
        Some(step) => Some(run(step).await),
        None => None,
    }
}

fn log_outcome(outcome: &Outcome) {
    let event_id = outcome.event_id.as_deref().unwrap_or("");
    let detail_type = outcome.detail_type.as_deref().unwrap_or("");
    let instance_id = outcome.instance_id.as_deref().unwrap_or("");
    let workflow = outcome.workflow.as_deref().unwrap_or("");
    let actions: Vec<&str> = outcome.actions.iter().map(|a| a.as_str()).collect();
    let actions = actions.join(",");
    let already_done: Vec<&str> = outcome.already_done.iter().map(|a| a.as_str()).collect();
    let already_done = already_done.join(",");
    match outcome.outcome {
        OutcomeKind::Acted => {
            tracing::info!(
                outcome = "acted",
                event_id,
                detail_type,
                instance_id,
                workflow,
                actions,
                already_done,
                "acted on instance notice"
            )
        }
        OutcomeKind::Ignored => {
            let reason = outcome.reason.as_deref().unwrap_or("");
            tracing::info!(
                outcome = "ignored",
                event_id,
                detail_type,
                instance_id,
                reason,
                "no action"
            )
        }
        OutcomeKind::Failed | OutcomeKind::Rejected => {
            let failures = outcome.failures.join("; ");
            tracing::error!(
                outcome = "failed",
                event_id,
                detail_type,
                instance_id,
                workflow,
                actions,
                already_done,
                failures,
                "instance notice not fully handled; not retried"
            )
        }
    }
}
