//! The AWS adapter: reads alarm states and ALB metrics for the pure verdict and the stack
//! status for the rollback check, publishes verdicts and answers CodeDeploy. Nothing here
//! decides anything.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatch::types::{
    AlarmType, Dimension, Metric, MetricDataQuery, MetricDataResult, MetricStat, ScanBy,
    StateValue, StatusCode,
};
use aws_sdk_codedeploy::types::LifecycleEventStatus;
use aws_sdk_sns::types::MessageAttributeValue;
use aws_smithy_types::DateTime;
use shared::sns_subject::SnsSubject;

use crate::bake::Observer;
use crate::gate::{Gate, TargetGroup};
use crate::verdict::{AlarmState, ApiFailure, Datapoint, Observation, Series};
/// Re-exported: the handler names its adapter's error `aws::AwsError`.
pub use shared::aws::AwsError;

pub const ALB_NAMESPACE: &str = "AWS/ApplicationELB";
/// `DescribeAlarms` takes at most 100 names per request.
const ALARMS_PER_REQUEST: usize = 100;
/// ALB publishes per minute.
const PERIOD_SECONDS: i32 = 60;

impl From<AwsError> for ApiFailure {
    fn from(error: AwsError) -> Self {
        ApiFailure {
            transient: error.transient,
            message: error.to_string(),
        }
    }
}

/// The clients, built once per cold start.
#[derive(Debug, Clone)]
pub struct AwsGate {
    cloudwatch: aws_sdk_cloudwatch::Client,
    sns: aws_sdk_sns::Client,
    codedeploy: aws_sdk_codedeploy::Client,
    cloudformation: aws_sdk_cloudformation::Client,
}

impl Observer for AwsGate {
    async fn observe(&self, gate: &Gate) -> Observation {
        // The current minute is included: whole minutes, ending after now.
        let window_end = (unix_now() / 60 + 1) * 60;
        let (alarms, metrics) = tokio::join!(
            self.alarm_states(&gate.alarm_names),
            self.metric_series(gate, window_end)
        );
        Observation {
            alarms: alarms.map_err(ApiFailure::from),
            metrics: metrics.map_err(ApiFailure::from),
            window_end,
        }
    }
}

impl AwsGate {
    pub fn new(
        cloudwatch: aws_sdk_cloudwatch::Client,
        sns: aws_sdk_sns::Client,
        codedeploy: aws_sdk_codedeploy::Client,
        cloudformation: aws_sdk_cloudformation::Client,
    ) -> Self {
        AwsGate {
            cloudwatch,
            sns,
            codedeploy,
            cloudformation,
        }
    }

    /// The status name of the stack (`UPDATE_ROLLBACK_IN_PROGRESS`, …); a stack
    /// `DescribeStacks` does not return is an error.
    pub async fn stack_status(&self, stack_id: &str) -> Result<String, AwsError> {
        let operation = || format!("DescribeStacks ({stack_id})");
        let answer = self
            .cloudformation
            .describe_stacks()
            .stack_name(stack_id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(operation(), e))?;
        answer
            .stacks()
            .iter()
            .find_map(|stack| stack.stack_status())
            .map(|status| status.as_str().to_owned())
            .ok_or_else(|| AwsError {
                operation: operation(),
                message: "no such stack".to_owned(),
                transient: false,
                code: None,
            })
    }

    /// States of the named alarms (metric and composite) that exist.
    pub async fn alarm_states(
        &self,
        names: &[String],
    ) -> Result<HashMap<String, AlarmState>, AwsError> {
        let mut states = HashMap::with_capacity(names.len());
        for chunk in names.chunks(ALARMS_PER_REQUEST) {
            let mut pages = self
                .cloudwatch
                .describe_alarms()
                .set_alarm_names(Some(chunk.to_vec()))
                .alarm_types(AlarmType::MetricAlarm)
                .alarm_types(AlarmType::CompositeAlarm)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| {
                    AwsError::from_sdk(format!("DescribeAlarms ({} alarms)", chunk.len()), e)
                })?;
                let metric = page
                    .metric_alarms()
                    .iter()
                    .map(|a| (a.alarm_name(), a.state_value()));
                let composite = page
                    .composite_alarms()
                    .iter()
                    .map(|a| (a.alarm_name(), a.state_value()));
                for (name, state) in metric.chain(composite) {
                    let (Some(name), Some(state)) = (name, state) else {
                        continue;
                    };
                    let state = match state {
                        StateValue::Alarm => AlarmState::Alarm,
                        StateValue::Ok => AlarmState::Ok,
                        // INSUFFICIENT_DATA, and any state this SDK does not know yet.
                        _ => AlarmState::InsufficientData,
                    };
                    states.insert(name.to_owned(), state);
                }
            }
        }
        Ok(states)
    }

    /// Per-minute values of the series the gate's checks read, over the longest window.
    pub async fn metric_series(
        &self,
        gate: &Gate,
        window_end: i64,
    ) -> Result<HashMap<Series, Vec<Datapoint>>, AwsError> {
        let (Some(target), Some(longest)) = (
            &gate.target,
            gate.checks.iter().map(|c| c.window_seconds).max(),
        ) else {
            return Ok(HashMap::new());
        };
        let series = series_read_by(gate);
        let queries: Vec<MetricDataQuery> = series
            .iter()
            .enumerate()
            .map(|(index, s)| query(index, *s, target))
            .collect();
        let operation = || {
            format!(
                "GetMetricData ({} ALB series of {})",
                series.len(),
                target.target_group
            )
        };
        let mut values: HashMap<Series, Vec<Datapoint>> = HashMap::new();
        let mut pages = self
            .cloudwatch
            .get_metric_data()
            .start_time(DateTime::from_secs(window_end - i64::from(longest)))
            .end_time(DateTime::from_secs(window_end))
            .scan_by(ScanBy::TimestampAscending)
            .set_metric_data_queries(Some(queries))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk(operation(), e))?;
            for result in page.metric_data_results() {
                let Some(s) = series_of(result, &series) else {
                    continue;
                };
                let points = datapoints(result, *s).map_err(|(message, transient)| AwsError {
                    operation: operation(),
                    message,
                    transient,
                    code: None,
                })?;
                values.entry(*s).or_default().extend(points);
            }
        }
        Ok(values)
    }

    /// Publishes a verdict (JSON) with `verdict` and `trigger` message attributes.
    pub async fn publish_verdict(
        &self,
        topic_arn: &str,
        subject: &SnsSubject,
        verdict: &str,
        trigger: &str,
        message: String,
    ) -> Result<(), AwsError> {
        let attribute = |value: &str| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .expect("data_type is set")
        };
        self.sns
            .publish()
            .topic_arn(topic_arn)
            .subject(subject.as_str())
            .message(message)
            .message_attributes("verdict", attribute(verdict))
            .message_attributes("trigger", attribute(trigger))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("Publish (verdict)", e))?;
        Ok(())
    }

    /// Tells CodeDeploy the hook's result. A hook already answered (a retried invocation)
    /// counts as answered.
    pub async fn answer_hook(
        &self,
        deployment_id: &str,
        execution_id: &str,
        succeeded: bool,
    ) -> Result<(), AwsError> {
        let status = if succeeded {
            LifecycleEventStatus::Succeeded
        } else {
            LifecycleEventStatus::Failed
        };
        match self
            .codedeploy
            .put_lifecycle_event_hook_execution_status()
            .deployment_id(deployment_id)
            .lifecycle_event_hook_execution_id(execution_id)
            .status(status.clone())
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_lifecycle_event_already_completed_exception()) =>
            {
                tracing::warn!(deployment_id, ?status, "the hook was already answered");
                Ok(())
            }
            Err(e) => Err(AwsError::from_sdk(
                format!("PutLifecycleEventHookExecutionStatus ({deployment_id}, {status:?})"),
                e,
            )),
        }
    }
}

/// One series' values. A series CloudWatch could not read must not look like a quiet one: its
/// error (the message, and whether a retry can fix it) instead.
fn datapoints(
    result: &MetricDataResult,
    series: Series,
) -> Result<impl Iterator<Item = Datapoint> + '_, (String, bool)> {
    if let Some(code @ (StatusCode::InternalError | StatusCode::Forbidden)) = result.status_code() {
        let messages: Vec<&str> = result.messages().iter().filter_map(|m| m.value()).collect();
        let (namespace, metric) = series.metric();
        return Err((
            format!("{namespace} {metric}: {code:?} {}", messages.join("; ")),
            code == &StatusCode::InternalError,
        ));
    }
    Ok(result
        .timestamps()
        .iter()
        .zip(result.values())
        .map(|(t, &value)| Datapoint {
            timestamp: t.secs(),
            value,
        }))
}

/// Every series the gate's checks read, each once, in a stable order.
fn series_read_by(gate: &Gate) -> Vec<Series> {
    let mut series: Vec<Series> = gate
        .checks
        .iter()
        .flat_map(|c| Series::for_check(c.kind))
        .collect();
    series.sort();
    series.dedup();
    series
}

/// The series an answer belongs to: its id is `s<index into series>` ([`query`]).
fn series_of<'a>(result: &MetricDataResult, series: &'a [Series]) -> Option<&'a Series> {
    result
        .id()
        .and_then(|id| id.strip_prefix('s'))
        .and_then(|n| n.parse::<usize>().ok())
        .and_then(|n| series.get(n))
}

/// The query for `series` under the id `s<index>`.
fn query(index: usize, series: Series, target: &TargetGroup) -> MetricDataQuery {
    let (metric_name, stat) = series.metric();
    let dimension = |name: &str, value: &str| Dimension::builder().name(name).value(value).build();
    let metric = Metric::builder()
        .namespace(ALB_NAMESPACE)
        .metric_name(metric_name)
        .dimensions(dimension("TargetGroup", &target.target_group))
        .dimensions(dimension("LoadBalancer", &target.load_balancer))
        .build();
    MetricDataQuery::builder()
        // Ids must start with a lowercase letter; the index maps the answer back.
        .id(format!("s{index}"))
        .metric_stat(
            MetricStat::builder()
                .metric(metric)
                .period(PERIOD_SECONDS)
                .stat(stat)
                .build(),
        )
        .return_data(true)
        .build()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
