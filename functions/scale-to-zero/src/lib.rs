//! scale-to-zero: idle per-workflow Spot GPU groups to zero, `BacklogPerInstance` for the
//! groups' target-tracking policies, and wake 0→N when work arrives. Only the groups of its own
//! stack (`ORCHESTRATOR_STACK`) are acted on; other stacks' groups are left alone.
//!
//! `trigger`, `alarm` and `wake` read the events, `decision` decides (pure), `aws` gathers the
//! inputs and carries the decisions out; [`ScaleToZero::handle`] ties them together. The
//! backend's wake requests (direct invoke, EventBridge `Jobs Queued`, SNS) go through the
//! [`wake::WakeLedger`], which lets one wake per workflow run at a time in this environment.

pub mod alarm;
pub mod aws;
pub mod config;
pub mod decision;
pub mod fleet;
pub mod trigger;
pub mod wake;

use std::sync::Arc;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sns::SnsEvent;
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde::Serialize;
use serde_json::Value;

use crate::alarm::{AlarmError, AlarmNotice};
use crate::aws::{AwsError, AwsFleet, IdleNotice, unix_now};
use crate::config::Config;
use crate::decision::{
    IdleDecision, LeaveReason, LeftAlone, Roster, decide_idle, plan_tick, plan_wake, stale_wake,
};
use crate::fleet::SampleWindow;
use crate::trigger::{DirectInvoke, Trigger, TriggerError};
use crate::wake::{EVENT_DETAIL_TYPE, Turn, WakeError, WakeLedger, WakeRequest};

/// Why an invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    #[error(transparent)]
    Trigger(#[from] TriggerError),
    #[error(transparent)]
    Alarm(#[from] AlarmError),
    #[error(transparent)]
    Wake(#[from] WakeError),
    #[error(
        "EventBridge event `{0}` is neither a scheduled tick (detail-type `Scheduled Event`) nor a wake (detail-type `Jobs Queued` from `orchestrator.backend`)"
    )]
    NotASchedule(String),
    #[error("direct invoke names no workflow (`workflow` is empty)")]
    EmptyWorkflow,
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error("{failed} of {attempted} capacity changes failed (the rest were made); first: {first}")]
    Changes {
        failed: usize,
        attempted: usize,
        first: AwsError,
        /// Any failure that a retry can fix: the invocation is then worth retrying.
        transient: bool,
    },
}

impl ScaleError {
    /// Whether Lambda's retry of the event can succeed where this attempt failed.
    pub fn is_transient(&self) -> bool {
        match self {
            ScaleError::Aws(e) => e.transient,
            ScaleError::Changes { transient, .. } => *transient,
            _ => false,
        }
    }
}

impl From<ScaleError> for Diagnostic {
    fn from(error: ScaleError) -> Self {
        let error_type = match &error {
            ScaleError::Trigger(_) => "UnrecognisedEvent",
            ScaleError::Alarm(_)
            | ScaleError::Wake(_)
            | ScaleError::NotASchedule(_)
            | ScaleError::EmptyWorkflow => "InvalidEvent",
            e if e.is_transient() => shared::aws::RETRYABLE_ERROR_TYPE,
            _ => shared::aws::FAILED_ERROR_TYPE,
        };
        shared::diagnostic(error_type, &error)
    }
}

/// What an invocation did, returned to the invoker and logged.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub trigger: &'static str,
    pub changes: Vec<Change>,
    pub left_alone: Vec<LeftAloneEntry>,
    /// `BacklogPerInstance` values published (schedule ticks).
    pub backlog_published: usize,
    /// Alarm notifications in a state other than `ALARM`.
    pub ignored: Vec<String>,
}

/// One desired-capacity change made.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    pub group: String,
    pub workflow: String,
    pub from: u32,
    pub to: u32,
    /// `idle` or `wake`.
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeftAloneEntry {
    pub group: String,
    pub workflow: Option<String>,
    pub reason: String,
}

impl From<LeftAlone> for LeftAloneEntry {
    fn from(left: LeftAlone) -> Self {
        LeftAloneEntry {
            group: left.group,
            workflow: left.workflow,
            reason: left.reason.to_string(),
        }
    }
}

/// The function: its configuration and the AWS adapter, built once per cold start, and the
/// wakes of this execution environment (shared by clones).
#[derive(Debug, Clone)]
pub struct ScaleToZero {
    config: Config,
    fleet: AwsFleet,
    wakes: Arc<WakeLedger>,
}

impl ScaleToZero {
    /// The fleet's calls are bounded by the configuration's `max_calls_in_flight`.
    pub fn new(config: Config, fleet: AwsFleet) -> Self {
        let fleet = fleet.with_calls_in_flight(config.max_calls_in_flight);
        ScaleToZero {
            config,
            fleet,
            wakes: Arc::default(),
        }
    }

    /// The Lambda entry point.
    pub async fn handle(&self, event: LambdaEvent<Value>) -> Result<Value, ScaleError> {
        let trigger = Trigger::from_payload(event.payload)?;
        let mut report = Report {
            trigger: trigger.kind(),
            ..Report::default()
        };
        // Boxed: the SDK futures nest deep enough to exceed the compiler's layout recursion limit.
        let outcome = Box::pin(self.run(trigger, &mut report)).await;
        tracing::info!(
            trigger = report.trigger,
            changes = report.changes.len(),
            left_alone = report.left_alone.len(),
            backlog_published = report.backlog_published,
            failed = outcome.is_err(),
            "scale-to-zero invocation finished"
        );
        outcome?;
        Ok(serde_json::to_value(&report).expect("a report serializes"))
    }

    async fn run(&self, trigger: Trigger, report: &mut Report) -> Result<(), ScaleError> {
        match trigger {
            Trigger::Sns(event) => self.on_sns(event, report).await,
            Trigger::AlarmAction(alarm) => {
                let dimension = &self.config.workflow_dimension;
                self.on_alarm(alarm::from_alarm_action(&alarm, dimension), report)
                    .await
            }
            Trigger::EventBridge(event) => self.on_eventbridge(*event, report).await,
            Trigger::Direct(DirectInvoke::ScaleToZero { workflow }) => {
                let workflow = workflow.trim();
                if workflow.is_empty() {
                    return Err(ScaleError::EmptyWorkflow);
                }
                self.idle(workflow, "direct invoke", report).await
            }
            Trigger::Direct(DirectInvoke::Wake { workflow, queued }) => {
                let request = WakeRequest::new(workflow, queued, None, "direct invoke")?;
                self.wake(request, report).await
            }
        }
    }

    /// Idle alarm notifications and wake requests; every record is read first, so a bad one
    /// fails the event before anything changes.
    async fn on_sns(&self, event: SnsEvent, report: &mut Report) -> Result<(), ScaleError> {
        enum Message {
            Alarm(AlarmNotice),
            Wake(WakeRequest),
        }
        let dimension = &self.config.workflow_dimension;
        let messages = event
            .records
            .iter()
            .map(|record| {
                let message = &record.sns.message;
                if wake::is_wake_message(message) {
                    let sent_at = Some(record.sns.timestamp.timestamp());
                    Ok(Message::Wake(WakeRequest::from_sns_message(
                        message, sent_at,
                    )?))
                } else {
                    Ok(Message::Alarm(alarm::from_sns_message(message, dimension)?))
                }
            })
            .collect::<Result<Vec<_>, ScaleError>>()?;
        for message in messages {
            match message {
                Message::Alarm(notice) => self.on_alarm(notice, report).await?,
                Message::Wake(request) => self.wake(request, report).await?,
            }
        }
        Ok(())
    }

    async fn on_eventbridge(
        &self,
        event: EventBridgeEvent,
        report: &mut Report,
    ) -> Result<(), ScaleError> {
        match event.detail_type.as_str() {
            "Scheduled Event" => self.tick(report).await,
            EVENT_DETAIL_TYPE => {
                let sent_at = event.time.map(|time| time.timestamp());
                let request = WakeRequest::from_event(
                    &event.source,
                    &event.detail_type,
                    event.detail,
                    sent_at,
                )?;
                self.wake(request, report).await
            }
            _ => Err(ScaleError::NotASchedule(event.detail_type)),
        }
    }

    /// The backend queued work: raise the workflow's group to what the backlog needs, at once
    /// and only upward. One wake per workflow runs at a time here; requests arriving meanwhile
    /// ride on the next one (see [`WakeLedger`]).
    async fn wake(&self, request: WakeRequest, report: &mut Report) -> Result<(), ScaleError> {
        let workflow = request.workflow.as_str();
        let via = request.via;
        if let Some(reason) = stale_wake(request.sent_at, unix_now()) {
            tracing::info!(workflow, via, %reason, "wake request left alone");
            report.left_alone.push(LeftAloneEntry {
                group: String::new(),
                workflow: Some(workflow.to_owned()),
                reason: reason.to_string(),
            });
            return Ok(());
        }
        let turn = self
            .wakes
            .serve(workflow, request.queued, |queued| {
                self.wake_groups(workflow, queued)
            })
            .await?;
        let (queued, (changes, left_alone)) = match turn {
            Turn::Ran { queued, outcome } => (queued, outcome),
            Turn::Covered(settled) => {
                let reason = LeaveReason::RecentlySettled {
                    capacity: settled.capacity,
                    queued: settled.queued,
                    millis_ago: settled.at.elapsed().as_millis(),
                };
                let left = LeftAlone {
                    group: settled.group,
                    workflow: Some(workflow.to_owned()),
                    reason,
                };
                (request.queued, (Vec::new(), vec![left]))
            }
        };
        let stack = self.config.orchestrator_stack.as_str();
        for left in left_alone {
            tracing::info!(group = %left.group, workflow, via, queued = request.queued, stack, reason = %left.reason, "group left as it is");
            report.left_alone.push(left.into());
        }
        for change in changes {
            tracing::info!(group = %change.group, workflow, via, queued, from = change.from, to = change.to, "group woken");
            report.changes.push(change);
        }
        Ok(())
    }

    /// One turn of a wake: read the groups tagged with the workflow, raise ours if it needs it.
    async fn wake_groups(
        &self,
        workflow: &str,
        queued: u64,
    ) -> Result<((Vec<Change>, Vec<LeftAlone>), Option<(String, u32)>), ScaleError> {
        let stack = self.config.orchestrator_stack.as_str();
        let groups = self.fleet.workflow_groups(workflow, stack).await?;
        let plan = plan_wake(
            groups,
            workflow,
            queued,
            self.config.target_backlog_per_instance,
        );
        let mut changes = Vec::new();
        if let Some(raise) = plan.raise {
            self.fleet
                .set_desired_capacity(&raise.group, raise.to)
                .await?;
            changes.push(Change {
                group: raise.group,
                workflow: raise.workflow,
                from: raise.from,
                to: raise.to,
                reason: "wake",
            });
        }
        Ok(((changes, plan.left_alone), plan.settled))
    }

    async fn on_alarm(&self, notice: AlarmNotice, report: &mut Report) -> Result<(), ScaleError> {
        if !notice.is_alarm() {
            tracing::info!(alarm = %notice.alarm_name, state = %notice.state, "alarm is not in ALARM; ignored");
            report
                .ignored
                .push(format!("{} is {}", notice.alarm_name, notice.state));
            return Ok(());
        }
        let Some(workflow) = notice.workflow.filter(|w| !w.trim().is_empty()) else {
            return Err(AlarmError::NoWorkflowDimension {
                alarm: notice.alarm_name,
                dimension: self.config.workflow_dimension.clone(),
            }
            .into());
        };
        self.idle(&workflow, &notice.alarm_name, report).await
    }

    /// The workflow looks idle: re-read its queue and scale its groups in if it still is.
    async fn idle(
        &self,
        workflow: &str,
        cause: &str,
        report: &mut Report,
    ) -> Result<(), ScaleError> {
        let stack = self.config.orchestrator_stack.as_str();
        let groups = self.fleet.workflow_groups(workflow, stack).await?;
        if groups.is_empty() {
            tracing::warn!(
                workflow,
                cause,
                "no Auto Scaling group is tagged with this workflow"
            );
            report.left_alone.push(LeftAloneEntry {
                group: String::new(),
                workflow: Some(workflow.to_owned()),
                reason: LeaveReason::NoGroup.to_string(),
            });
            return Ok(());
        }
        let window = SampleWindow::new(unix_now(), self.config.idle_reread_window);
        // Only a group of this stack needs the queue re-read.
        let samples = if groups.iter().any(|g| g.workflow().is_some()) {
            self.fleet
                .queue_samples(&self.config, &[workflow.to_owned()], window)
                .await?
                .remove(workflow)
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        for group in groups {
            match decide_idle(&group, &samples, window) {
                IdleDecision::Leave(reason) => {
                    tracing::info!(group = %group.name, workflow, cause, stack, %reason, "group left as it is");
                    report.left_alone.push(LeftAloneEntry {
                        group: group.name,
                        workflow: Some(workflow.to_owned()),
                        reason: reason.to_string(),
                    });
                }
                IdleDecision::ScaleIn { from, to, busy } => {
                    let scale_in = Change {
                        group: group.name,
                        workflow: workflow.to_owned(),
                        from,
                        to,
                        reason: "idle",
                    };
                    self.scale_in(scale_in, busy, cause, report).await?;
                }
            }
        }
        Ok(())
    }

    /// Scales an idle group in, then announces it.
    async fn scale_in(
        &self,
        change: Change,
        busy: u32,
        cause: &str,
        report: &mut Report,
    ) -> Result<(), ScaleError> {
        let (group, workflow) = (&change.group, &change.workflow);
        self.fleet.set_desired_capacity(group, change.to).await?;
        self.wakes.forget(workflow);
        tracing::info!(%group, %workflow, cause, from = change.from, to = change.to, busy, "idle group scaled in");
        // After the change: a notice never announces what did not happen. A retry after a
        // failed publish finds the group already idle and sends none.
        let notice = IdleNotice {
            kind: "scaled-to-zero",
            workflow: workflow.clone(),
            auto_scaling_group: group.clone(),
            previous_desired_capacity: change.from,
            desired_capacity: change.to,
            busy_instances: busy,
            cause: cause.to_owned(),
        };
        report.changes.push(change);
        self.fleet
            .publish_notice(&self.config.notify_topic_arn, &notice)
            .await?;
        Ok(())
    }

    /// One pass over this stack's managed groups: publish backlog, wake groups at zero with
    /// work. The describe pages follow each other (each carries the last one's token); the
    /// GetMetricData batches, then the wakes and the publish, go out at once, within the
    /// fleet's call slots.
    async fn tick(&self, report: &mut Report) -> Result<(), ScaleError> {
        let stack = self.config.orchestrator_stack.as_str();
        let window = SampleWindow::new(unix_now(), self.config.queue_lookback);
        let roster = Roster::new(self.fleet.managed_groups(stack).await?);
        let samples = self
            .fleet
            .queue_samples(&self.config, &roster.workflows(), window)
            .await?;
        let plan = plan_tick(
            roster,
            &samples,
            self.config.target_backlog_per_instance,
            window,
        );
        for left in &plan.left_alone {
            tracing::info!(group = %left.group, workflow = ?left.workflow, stack, reason = %left.reason, "group left as it is");
        }
        report.left_alone = plan
            .left_alone
            .into_iter()
            .map(LeftAloneEntry::from)
            .collect();
        let wakes = plan
            .wakes
            .into_iter()
            .map(|wake| Change {
                group: wake.group,
                workflow: wake.workflow,
                from: 0,
                to: wake.to,
                reason: "wake",
            })
            .collect();
        // Wakes first in line for the call slots: a group at zero with work waiting matters
        // more than a metric.
        let (woken, published) = tokio::join!(
            self.apply_changes(wakes, report),
            self.fleet.put_backlog(&self.config, &plan.backlog)
        );
        published?;
        report.backlog_published = plan.backlog.len();
        woken
    }

    /// One capacity change and how it went.
    async fn make_change(&self, change: Change) -> (Change, Result<(), AwsError>) {
        let result = self
            .fleet
            .set_desired_capacity(&change.group, change.to)
            .await;
        (change, result)
    }

    /// Makes the changes, as many at once as the call slots allow; every change is attempted
    /// even when one fails.
    async fn apply_changes(
        &self,
        changes: Vec<Change>,
        report: &mut Report,
    ) -> Result<(), ScaleError> {
        let attempted = changes.len();
        let calls: Vec<_> = changes
            .into_iter()
            .map(|change| self.make_change(change))
            .collect();
        let results = futures_util::future::join_all(calls).await;
        let mut failures = Vec::new();
        for (change, result) in results {
            match result {
                Ok(()) => {
                    tracing::info!(group = %change.group, workflow = %change.workflow, to = change.to, "group woken");
                    report.changes.push(change);
                }
                Err(error) => {
                    tracing::error!(group = %change.group, %error, "capacity change failed");
                    failures.push(error);
                }
            }
        }
        // Deterministic order in the report, whatever order the calls finished in.
        report.changes.sort_by(|a, b| a.group.cmp(&b.group));
        if failures.is_empty() {
            return Ok(());
        }
        let transient = failures.iter().any(|e| e.transient);
        Err(ScaleError::Changes {
            failed: failures.len(),
            attempted,
            first: failures.swap_remove(0),
            transient,
        })
    }
}
