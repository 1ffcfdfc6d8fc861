//! The AWS adapter: gathers the facts a decision needs from Auto Scaling and carries an
//! [`ActionPlan`](crate::plan::ActionPlan) out (SNS, Auto Scaling, the metric line). No
//! decisions are made here.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_autoscaling::Client as AutoScalingClient;
use aws_sdk_dynamodb::Client as DynamoDbClient;
use aws_sdk_sns::Client as SnsClient;
use aws_sdk_sns::types::MessageAttributeValue;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response as HttpResponse;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use shared::aws::AwsError;

use crate::config::Config;
use crate::fleet_message::FleetMessage;
use crate::metric;
use crate::plan::{
    Detach, Facts, FactsNeeded, GroupFacts, InstanceFacts, InterruptionCount, LifecycleCompletion,
};
use crate::progress_table::{LOOKUP_BUDGET, ProgressTable};
use crate::unfinished::{Unfinished, UnfinishedEvents};

/// The error code Auto Scaling answers when an instance is not (or no longer) in a state the
/// call needs: not attached for `DetachInstances`, no pending action for
/// `CompleteLifecycleAction`.
const VALIDATION_ERROR: &str = "ValidationError";

/// An AWS call of this function that failed: `operation` names the call and its target.
pub(crate) fn call_failed<E>(
    operation: &str,
    target: &str,
    error: SdkError<E, HttpResponse>,
) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    AwsError::from_sdk(format!("{operation} for {target}"), error)
}

/// What a step that may find its work already done reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepResult {
    Done,
    /// Auto Scaling refused because the work is already done (by a concurrent delivery, the
    /// group, or the worker); its message says which.
    AlreadyDone(String),
}

/// Where Embedded Metric Format lines go: stdout in Lambda (CloudWatch Logs extracts them).
pub type MetricOutput = Arc<dyn Fn(&str) + Send + Sync>;

fn stdout_metric_output() -> MetricOutput {
    Arc::new(|line| {
        // One write of the whole line, so it never interleaves with a log line.
        let _ = std::io::stdout()
            .lock()
            .write_all(format!("{line}\n").as_bytes());
    })
}

/// The Auto Scaling, SNS and DynamoDB clients (built once per cold start), the fleet topic,
/// the metric namespace and the progress table, and the events this execution environment
/// left unfinished for Lambda's retry (shared by clones).
#[derive(Clone)]
pub struct SpotAws {
    config: Config,
    autoscaling: AutoScalingClient,
    sns: SnsClient,
    progress: ProgressTable,
    metric_output: MetricOutput,
    unfinished: Arc<UnfinishedEvents>,
}

impl fmt::Debug for SpotAws {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpotAws")
            .field("config", &self.config)
            .field("unfinished_events", &self.unfinished.len())
            .finish_non_exhaustive()
    }
}

impl SpotAws {
    pub fn new(
        config: Config,
        autoscaling: AutoScalingClient,
        sns: SnsClient,
        dynamodb: DynamoDbClient,
    ) -> Self {
        let progress = ProgressTable::new(dynamodb, config.progress_table.clone());
        SpotAws {
            config,
            autoscaling,
            sns,
            progress,
            metric_output: stdout_metric_output(),
            unfinished: Arc::default(),
        }
    }

    /// The configuration the fleet was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What transiently failed invocations here left for their retries.
    pub fn unfinished_events(&self) -> &UnfinishedEvents {
        &self.unfinished
    }

    /// The record an attempt at `event_id` in any execution environment left in the progress
    /// table. `None` also when the table does not answer within [`LOOKUP_BUDGET`] or holds an
    /// unreadable record (both logged): the event is then decided from Auto Scaling alone, as
    /// a first attempt is, so the table can delay no detach.
    pub async fn recorded_progress(&self, event_id: &str) -> Option<Unfinished> {
        let table = self.progress.table_name();
        match tokio::time::timeout(LOOKUP_BUDGET, self.progress.get(event_id, unix_now())).await {
            Ok(Ok(record)) => record,
            Ok(Err(error)) => {
                tracing::warn!(event_id, table, error = %error, "progress record not read: deciding from Auto Scaling alone");
                None
            }
            Err(_) => {
                tracing::warn!(
                    event_id,
                    table,
                    budget_ms = LOOKUP_BUDGET.as_millis() as u64,
                    "progress table did not answer in time: deciding from Auto Scaling alone"
                );
                None
            }
        }
    }

    /// Stores what an attempt at `event_id` got done, for a retry in any execution
    /// environment; a failure is logged and returned (the memory record still serves a retry
    /// here).
    pub async fn record_progress(
        &self,
        event_id: &str,
        unfinished: &Unfinished,
    ) -> Result<(), AwsError> {
        let stored = self.progress.put(event_id, unfinished, unix_now()).await;
        if let Err(error) = &stored {
            tracing::warn!(event_id, table = self.progress.table_name(), error = %error, "progress record not stored");
        }
        stored
    }

    /// Sends metric lines to `output` instead of stdout (tests read them back).
    pub fn with_metric_output(mut self, output: MetricOutput) -> Self {
        self.metric_output = output;
        self
    }

    /// Looks up what `needed` names: at most two read calls.
    pub async fn gather(&self, needed: &FactsNeeded) -> Result<Facts, AwsError> {
        match needed {
            FactsNeeded::None => Ok(Facts::default()),
            FactsNeeded::InstanceThenItsGroup { instance_id } => {
                let instance = self.describe_instance(instance_id).await?;
                let group = match &instance {
                    Some(instance) => self.describe_group(&instance.auto_scaling_group).await?,
                    None => None,
                };
                Ok(Facts { instance, group })
            }
            FactsNeeded::InstanceAndGroup {
                instance_id,
                auto_scaling_group,
            } => {
                let (instance, group) = tokio::join!(
                    self.describe_instance(instance_id),
                    self.describe_group(auto_scaling_group)
                );
                Ok(Facts {
                    instance: instance?,
                    group: group?,
                })
            }
        }
    }

    async fn describe_instance(
        &self,
        instance_id: &str,
    ) -> Result<Option<InstanceFacts>, AwsError> {
        let output = self
            .autoscaling
            .describe_auto_scaling_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| call_failed("DescribeAutoScalingInstances", instance_id, e))?;
        Ok(output
            .auto_scaling_instances()
            .iter()
            .find(|details| details.instance_id() == Some(instance_id))
            .map(|details| InstanceFacts {
                instance_id: instance_id.to_owned(),
                auto_scaling_group: details.auto_scaling_group_name().unwrap_or("").to_owned(),
                instance_type: details.instance_type().unwrap_or("unknown").to_owned(),
                availability_zone: details.availability_zone().unwrap_or("unknown").to_owned(),
                lifecycle_state: details.lifecycle_state().unwrap_or("").to_owned(),
            }))
    }

    async fn describe_group(&self, name: &str) -> Result<Option<GroupFacts>, AwsError> {
        let output = self
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .map_err(|e| call_failed("DescribeAutoScalingGroups", name, e))?;
        Ok(output
            .auto_scaling_groups()
            .iter()
            .find(|group| group.auto_scaling_group_name() == Some(name))
            .map(|group| GroupFacts {
                name: name.to_owned(),
                tags: group
                    .tags()
                    .iter()
                    .filter_map(|tag| Some((tag.key()?.to_owned(), tag.value()?.to_owned())))
                    .collect::<BTreeMap<_, _>>(),
            }))
    }

    pub async fn publish(&self, message: &FleetMessage) -> Result<(), AwsError> {
        let target = format!(
            "{} to {}",
            message.kind.as_str(),
            self.config.fleet_topic_arn
        );
        let mut publish = self
            .sns
            .publish()
            .topic_arn(&self.config.fleet_topic_arn)
            .message(message.body());
        for (name, value) in message.attributes() {
            let attribute = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(|e| AwsError {
                    operation: format!("Publish for {target}"),
                    message: format!("message attribute `{name}`: {e}"),
                    transient: false,
                    code: None,
                })?;
            publish = publish.message_attributes(name, attribute);
        }
        publish
            .send()
            .await
            .map_err(|e| call_failed("Publish", &target, e))?;
        Ok(())
    }

    pub async fn detach(&self, detach: &Detach) -> Result<StepResult, AwsError> {
        let target = format!("{} in {}", detach.instance_id, detach.auto_scaling_group);
        let result = self
            .autoscaling
            .detach_instances()
            .auto_scaling_group_name(&detach.auto_scaling_group)
            .instance_ids(&detach.instance_id)
            // Keep desired capacity: the group launches the replacement right away.
            .should_decrement_desired_capacity(false)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| call_failed("DetachInstances", &target, e));
        already_done_on_validation_error(result)
    }

    /// Writes one `SpotInterruptions` data point (EMF, see [`crate::metric`]).
    pub fn count_interruption(&self, count: &InterruptionCount) {
        let now_millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as i64);
        (self.metric_output)(&metric::interruption_document(
            &self.config.metric_namespace,
            count,
            now_millis,
        ));
    }

    pub async fn complete_lifecycle_action(
        &self,
        completion: &LifecycleCompletion,
    ) -> Result<StepResult, AwsError> {
        let target = format!(
            "hook {} of {} for {}",
            completion.hook_name, completion.auto_scaling_group, completion.instance_id
        );
        let result = self
            .autoscaling
            .complete_lifecycle_action()
            .auto_scaling_group_name(&completion.auto_scaling_group)
            .lifecycle_hook_name(&completion.hook_name)
            .lifecycle_action_token(&completion.token)
            .instance_id(&completion.instance_id)
            .lifecycle_action_result("CONTINUE")
            .send()
            .await
            .map(|_| ())
            .map_err(|e| call_failed("CompleteLifecycleAction", &target, e));
        already_done_on_validation_error(result)
    }
}

/// `ValidationError` from a state-changing Auto Scaling call means the state it wanted to
/// change is already gone; anything else is a failure.
fn already_done_on_validation_error(result: Result<(), AwsError>) -> Result<StepResult, AwsError> {
    match result {
        Ok(()) => Ok(StepResult::Done),
        Err(error) if error.code.as_deref() == Some(VALIDATION_ERROR) => {
            Ok(StepResult::AlreadyDone(error.message))
        }
        Err(error) => Err(error),
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}
