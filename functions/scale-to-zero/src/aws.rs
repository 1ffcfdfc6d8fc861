//! The AWS adapter: gathers the decisions' inputs and carries the decisions out. Every batch
//! size here is the API's own limit, so the number of calls grows with pages, not groups.
//! Independent calls (GetMetricData batches, capacity changes, the metric publish) may run at
//! once; every call takes one of the fleet's call slots, so at most
//! `MAX_CALLS_IN_FLIGHT` are in flight however they are combined.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_autoscaling::types::{AutoScalingGroup, Filter};
use aws_sdk_cloudwatch::types::{
    Dimension, Metric, MetricDataQuery, MetricDatum, MetricStat, ScanBy, StandardUnit,
};
use aws_sdk_sns::types::MessageAttributeValue;
use aws_smithy_types::DateTime;
use futures_util::{StreamExt, stream};
use shared::fleet_tags::{MANAGED_TAG, STACK_TAG, WORKFLOW_TAG, ownership};
use shared::sns_subject::SnsSubject;

use crate::config::Config;
use crate::decision::BacklogValue;
use crate::fleet::{GroupState, Instance, Lifecycle, QueueSample, SampleWindow};
/// Re-exported: the handler names its adapter's error `aws::AwsError`.
pub use shared::aws::AwsError;

/// `DescribeAutoScalingGroups` returns at most 100 groups per page.
pub const GROUPS_PER_PAGE: i32 = 100;
/// `GetMetricData` takes at most 500 queries per request.
pub const QUERIES_PER_REQUEST: usize = 500;
/// `PutMetricData` takes at most 1000 values per request.
pub const VALUES_PER_REQUEST: usize = 1000;
/// The metric a target-tracking policy scales the groups on.
pub const BACKLOG_METRIC_NAME: &str = "BacklogPerInstance";
const QUEUE_PERIOD_SECONDS: i64 = 60;

/// The scale-to-zero notice published on `NOTIFY_TOPIC_ARN`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IdleNotice {
    /// Always `scaled-to-zero` (also a message attribute, for subscription filters).
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub workflow: String,
    pub auto_scaling_group: String,
    pub previous_desired_capacity: u32,
    pub desired_capacity: u32,
    /// Scale-in-protected instances kept running.
    pub busy_instances: u32,
    /// What asked: the alarm's name, or `direct invoke`.
    pub cause: String,
}

impl IdleNotice {
    /// The change first and the names last: a long group name (up to 255 characters) is what
    /// gets cut to SNS's 100, never the capacities.
    pub fn subject(&self) -> SnsSubject {
        SnsSubject::new(&format!(
            "scale-to-zero: desired {} -> {}, {} idle ({})",
            self.previous_desired_capacity,
            self.desired_capacity,
            self.workflow,
            self.auto_scaling_group
        ))
    }
}

/// The clients, built once per cold start, and the call slots their calls share.
#[derive(Debug, Clone)]
pub struct AwsFleet {
    autoscaling: aws_sdk_autoscaling::Client,
    cloudwatch: aws_sdk_cloudwatch::Client,
    sns: aws_sdk_sns::Client,
    slots: Arc<tokio::sync::Semaphore>,
    calls_in_flight: usize,
}

impl AwsFleet {
    /// One call in flight at a time until [`AwsFleet::with_calls_in_flight`] says more.
    pub fn new(
        autoscaling: aws_sdk_autoscaling::Client,
        cloudwatch: aws_sdk_cloudwatch::Client,
        sns: aws_sdk_sns::Client,
    ) -> Self {
        AwsFleet {
            autoscaling,
            cloudwatch,
            sns,
            slots: Arc::new(tokio::sync::Semaphore::new(1)),
            calls_in_flight: 1,
        }
    }

    /// The same clients with at most `calls` AWS calls in flight at once (at least one).
    pub fn with_calls_in_flight(self, calls: usize) -> Self {
        let calls = calls.max(1);
        AwsFleet {
            slots: Arc::new(tokio::sync::Semaphore::new(calls)),
            calls_in_flight: calls,
            ..self
        }
    }

    /// How many calls may be in flight at once.
    pub fn calls_in_flight(&self) -> usize {
        self.calls_in_flight
    }

    /// Waits for a call slot; the call runs while the permit is held. The semaphore is fair,
    /// so calls go out in the order they asked.
    async fn slot(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.slots
            .acquire()
            .await
            .expect("the call slots are never closed")
    }

    /// Every group tagged `orchestrator:managed=true` and `orchestrator:stack=<stack>`, a page
    /// of 100 per call: Auto Scaling filters by both tags, so other stacks' groups cost no
    /// pages (and are classified again here, should a filter ever be ignored).
    pub async fn managed_groups(&self, stack: &str) -> Result<Vec<GroupState>, AwsError> {
        self.groups_tagged(&[(MANAGED_TAG, "true"), (STACK_TAG, stack)], stack)
            .await
    }

    /// The groups tagged with this workflow, of any stack and managed or not (so a group left
    /// alone is named in the report and the logs rather than silently missing).
    pub async fn workflow_groups(
        &self,
        workflow: &str,
        stack: &str,
    ) -> Result<Vec<GroupState>, AwsError> {
        self.groups_tagged(&[(WORKFLOW_TAG, workflow)], stack).await
    }

    /// The groups carrying every tag of `tags` (Auto Scaling ANDs the filters), classified for
    /// the function serving `stack`.
    async fn groups_tagged(
        &self,
        tags: &[(&str, &str)],
        stack: &str,
    ) -> Result<Vec<GroupState>, AwsError> {
        let filters: Vec<Filter> = tags
            .iter()
            .map(|(key, value)| {
                Filter::builder()
                    .name(format!("tag:{key}"))
                    .values(*value)
                    .build()
            })
            .collect();
        let described = tags
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut groups = Vec::new();
        // Each page's request carries the previous page's token: one call at a time.
        let _slot = self.slot().await;
        let mut pages = self
            .autoscaling
            .describe_auto_scaling_groups()
            .set_filters(Some(filters))
            .max_records(GROUPS_PER_PAGE)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                AwsError::from_sdk(format!("DescribeAutoScalingGroups (tags {described})"), e)
            })?;
            groups.extend(
                page.auto_scaling_groups()
                    .iter()
                    .map(|group| group_state(group, stack)),
            );
        }
        Ok(groups)
    }

    /// The queue metric's samples (per-minute maximum) of `window` for each workflow, in
    /// requests of up to 500 queries, several at once.
    pub async fn queue_samples(
        &self,
        config: &Config,
        workflows: &[String],
        window: SampleWindow,
    ) -> Result<HashMap<String, Vec<QueueSample>>, AwsError> {
        // Whole minutes, so the periods line up with the metric's own; the decisions drop
        // what falls outside the window itself.
        let start = window.start().div_euclid(QUEUE_PERIOD_SECONDS) * QUEUE_PERIOD_SECONDS;
        let end = (window.now.div_euclid(QUEUE_PERIOD_SECONDS) + 1) * QUEUE_PERIOD_SECONDS;
        // Built first, so the stream holds futures only: a closure in it would keep the
        // handler's future from being `Send` (rust-lang/rust#102211).
        let requests: Vec<_> = workflows
            .chunks(QUERIES_PER_REQUEST)
            .map(|batch| self.queue_batch(config, batch, start, end))
            .collect();
        let parallel = requests.len().clamp(1, self.calls_in_flight);
        let mut batches = stream::iter(requests).buffer_unordered(parallel);
        let mut samples = HashMap::with_capacity(workflows.len());
        while let Some(batch) = batches.next().await {
            samples.extend(batch?);
        }
        Ok(samples)
    }

    /// One GetMetricData request (and its pages) for up to 500 workflows.
    async fn queue_batch(
        &self,
        config: &Config,
        batch: &[String],
        start: i64,
        end: i64,
    ) -> Result<HashMap<String, Vec<QueueSample>>, AwsError> {
        let queries = batch
            .iter()
            .enumerate()
            .map(|(index, workflow)| queue_query(config, index, workflow))
            .collect::<Vec<_>>();
        let mut samples: HashMap<String, Vec<QueueSample>> = HashMap::with_capacity(batch.len());
        let _slot = self.slot().await;
        // Only very long look-backs page; every page is read, so no datapoint is dropped.
        let mut pages = self
            .cloudwatch
            .get_metric_data()
            .start_time(DateTime::from_secs(start))
            .end_time(DateTime::from_secs(end))
            .scan_by(ScanBy::TimestampDescending)
            .set_metric_data_queries(Some(queries))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                AwsError::from_sdk(format!("GetMetricData ({} queue metrics)", batch.len()), e)
            })?;
            for result in page.metric_data_results() {
                let Some(workflow) = result
                    .id()
                    .and_then(|id| id.strip_prefix('q'))
                    .and_then(|n| n.parse::<usize>().ok())
                    .and_then(|n| batch.get(n))
                else {
                    continue;
                };
                let entry = samples.entry(workflow.clone()).or_default();
                entry.extend(result.timestamps().iter().zip(result.values()).map(
                    |(time, &value)| QueueSample {
                        timestamp: time.secs(),
                        value,
                    },
                ));
            }
        }
        Ok(samples)
    }

    /// Publishes `BacklogPerInstance` per workflow, up to 1000 values per request.
    pub async fn put_backlog(
        &self,
        config: &Config,
        values: &[BacklogValue],
    ) -> Result<(), AwsError> {
        let now = DateTime::from_secs(unix_now());
        for chunk in values.chunks(VALUES_PER_REQUEST) {
            let _slot = self.slot().await;
            let data = chunk
                .iter()
                .map(|b| {
                    MetricDatum::builder()
                        .metric_name(BACKLOG_METRIC_NAME)
                        .dimensions(dimension(&config.workflow_dimension, &b.workflow))
                        .value(b.value)
                        .unit(StandardUnit::Count)
                        .timestamp(now)
                        .build()
                })
                .collect();
            self.cloudwatch
                .put_metric_data()
                .namespace(&config.queue_metric_namespace)
                .set_metric_data(Some(data))
                .send()
                .await
                .map_err(|e| {
                    AwsError::from_sdk(format!("PutMetricData ({} values)", chunk.len()), e)
                })?;
        }
        Ok(())
    }

    pub async fn set_desired_capacity(&self, group: &str, capacity: u32) -> Result<(), AwsError> {
        let _slot = self.slot().await;
        self.autoscaling
            .set_desired_capacity()
            .auto_scaling_group_name(group)
            .desired_capacity(i32::try_from(capacity).unwrap_or(i32::MAX))
            // Ours is a deliberate decision, not a policy reacting to noise.
            .honor_cooldown(false)
            .send()
            .await
            .map_err(|e| {
                AwsError::from_sdk(format!("SetDesiredCapacity ({group} to {capacity})"), e)
            })?;
        Ok(())
    }

    pub async fn publish_notice(
        &self,
        topic_arn: &str,
        notice: &IdleNotice,
    ) -> Result<(), AwsError> {
        let attribute = |value: &str| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .expect("data_type is set")
        };
        let message = serde_json::to_string(notice).expect("a notice serializes");
        let _slot = self.slot().await;
        self.sns
            .publish()
            .topic_arn(topic_arn)
            .subject(notice.subject())
            .message(message)
            .message_attributes("type", attribute(notice.kind))
            .message_attributes("workflow", attribute(&notice.workflow))
            .send()
            .await
            .map_err(|e| {
                AwsError::from_sdk(
                    format!("Publish (notice for {})", notice.auto_scaling_group),
                    e,
                )
            })?;
        Ok(())
    }
}

fn queue_query(config: &Config, index: usize, workflow: &str) -> MetricDataQuery {
    let metric = Metric::builder()
        .namespace(&config.queue_metric_namespace)
        .metric_name(&config.queue_metric_name)
        .dimensions(dimension(&config.workflow_dimension, workflow))
        .build();
    MetricDataQuery::builder()
        // Ids must start with a lowercase letter; the index maps the answer back.
        .id(format!("q{index}"))
        .metric_stat(
            MetricStat::builder()
                .metric(metric)
                .period(QUEUE_PERIOD_SECONDS as i32)
                .stat("Maximum")
                .build(),
        )
        .return_data(true)
        .build()
}

fn dimension(name: &str, value: &str) -> Dimension {
    Dimension::builder().name(name).value(value).build()
}

fn group_state(group: &AutoScalingGroup, stack: &str) -> GroupState {
    let tag = |key: &str| {
        group
            .tags()
            .iter()
            .find(|t| t.key() == Some(key))
            .and_then(|t| t.value())
    };
    let count = |n: Option<i32>| n.and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
    GroupState {
        name: group
            .auto_scaling_group_name()
            .unwrap_or_default()
            .to_owned(),
        ownership: ownership(tag, stack),
        min_size: count(group.min_size()),
        max_size: count(group.max_size()),
        desired_capacity: count(group.desired_capacity()),
        instances: group
            .instances()
            .iter()
            .map(|i| Instance {
                id: i.instance_id().unwrap_or_default().to_owned(),
                lifecycle: Lifecycle::from_state_name(
                    i.lifecycle_state().map_or("", |s| s.as_str()),
                ),
                protected_from_scale_in: i.protected_from_scale_in().unwrap_or(false),
            })
            .collect(),
    }
}

/// Seconds since the Unix epoch, now.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(workflow: &str, group: &str) -> IdleNotice {
        IdleNotice {
            kind: "scaled-to-zero",
            workflow: workflow.into(),
            auto_scaling_group: group.into(),
            previous_desired_capacity: 12,
            desired_capacity: 2,
            busy_instances: 2,
            cause: "direct invoke".into(),
        }
    }

    #[test]
    fn the_subject_names_the_change_the_workflow_and_the_group() {
        assert_eq!(
            notice("img2vid", "gpu-img2vid").subject().as_str(),
            "scale-to-zero: desired 12 -> 2, img2vid idle (gpu-img2vid)"
        );
    }

    #[test]
    fn a_255_character_group_name_is_cut_and_the_change_survives() {
        let group = "g".repeat(255);
        let subject = notice("img2vid", &group).subject();
        let text = subject.as_str();
        assert_eq!(text.len(), shared::sns_subject::MAX_SUBJECT_CHARS, "{text}");
        assert!(
            text.starts_with("scale-to-zero: desired 12 -> 2, img2vid idle (ggg"),
            "{text}"
        );
        assert!(text.ends_with("..."), "{text}");
    }
}
