//! The fleet half: queue backlog and wake-up, the idle alarm, a Spot interruption.

use shared::sample_events::try_sample;
use std::time::{Duration, SystemTime};

use aws_sdk_autoscaling::types::AutoScalingGroup;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{
    ComparisonOperator, Dimension, MetricDatum, StateValue, Statistic,
};
use serde_json::{Value, json};

use super::{BACKLOG, STACK, World, rfc3339_now, uuid_like};
use crate::moto::{ACCOUNT_ID, REGION};
use crate::scenario::aws_error;

impl World {
    /// This stack's group of `workflow`.
    pub(super) async fn group(&self, workflow: &str) -> Result<AutoScalingGroup, String> {
        self.group_named(&format!("{STACK}-{workflow}")).await
    }

    pub(super) async fn group_named(&self, name: &str) -> Result<AutoScalingGroup, String> {
        self.clients
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .map_err(aws_error("DescribeAutoScalingGroups"))?
            .auto_scaling_groups
            .unwrap_or_default()
            .into_iter()
            .next()
            .ok_or_else(|| format!("no group {name}"))
    }

    /// The backend's queue-depth metric, `age` ago (the function reads per-minute maxima, so
    /// the backlog and the drained queue go into different minutes).
    async fn put_queue_depth(&self, depths: &[(&str, f64)], age: Duration) -> Result<(), String> {
        let at = SystemTime::now() - age;
        let namespace = self.queue_namespace()?;
        let metric = self.parameter("QueueMetricName");
        let dimension = self.parameter("WorkflowDimension");
        let data = depths
            .iter()
            .map(|(workflow, depth)| {
                MetricDatum::builder()
                    .metric_name(metric)
                    .dimensions(
                        Dimension::builder()
                            .name(dimension)
                            .value(*workflow)
                            .build(),
                    )
                    .value(*depth)
                    .timestamp(DateTime::from(at))
                    .build()
            })
            .collect();
        self.clients
            .cloudwatch
            .put_metric_data()
            .namespace(&namespace)
            .set_metric_data(Some(data))
            .send()
            .await
            .map_err(aws_error("PutMetricData"))?;
        Ok(())
    }

    /// The backend reports a backlog; the 1-minute tick (the schedule sample, with this
    /// stack's rule) wakes both groups from zero and publishes BacklogPerInstance.
    pub(super) async fn backlog_wakes_groups(&self) -> Result<((), String), String> {
        for (workflow, _) in BACKLOG {
            let group = self.group(workflow).await?;
            if group.desired_capacity != Some(0) {
                return Err(format!(
                    "{workflow} starts at {:?}, not 0",
                    group.desired_capacity
                ));
            }
        }
        self.put_queue_depth(&BACKLOG, Duration::from_secs(120))
            .await?;
        let mut event = try_sample("scale-to-zero", "schedule.json")?;
        event["id"] = json!(uuid_like());
        event["time"] = json!(rfc3339_now());
        let rule = self
            .ids
            .iter()
            .find(|(logical, _)| logical.starts_with("ScaleToZeroFunctionTick"))
            .map(|(_, id)| id.clone())
            .ok_or("the stack has no schedule rule for scale-to-zero")?;
        event["resources"] = json!([format!("arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/{rule}")]);
        let report = self.invoke("scale-to-zero", &event).await?;
        let target: f64 = self
            .parameter("TargetBacklogPerInstance")
            .parse()
            .unwrap_or(1.0);
        let mut woken = Vec::new();
        for (workflow, depth) in BACKLOG {
            let group = self.group(workflow).await?;
            let desired = group.desired_capacity.unwrap_or(0);
            let instances = group.instances.map_or(0, |i| i.len());
            let expected = ((depth / target).ceil() as i32).min(group.max_size.unwrap_or(0));
            if desired != expected {
                return Err(format!(
                    "{workflow}: desired {desired}, expected {expected}; report {report}"
                ));
            }
            woken.push(format!("{workflow} 0->{desired} ({instances} running)"));
        }
        let published = report["backlogPublished"].as_u64().unwrap_or(0);
        let listed = self
            .clients
            .cloudwatch
            .list_metrics()
            .namespace(self.queue_namespace()?)
            .metric_name("BacklogPerInstance")
            .send()
            .await
            .map_err(aws_error("ListMetrics"))?
            .metrics
            .unwrap_or_default()
            .len();
        if published == 0 || listed == 0 {
            return Err(format!(
                "BacklogPerInstance not published (report {published}, CloudWatch {listed})"
            ));
        }
        Ok((
            (),
            format!(
                "{}; BacklogPerInstance for {listed} workflows",
                woken.join(", ")
            ),
        ))
    }

    /// Where the backend publishes the queue metric: the namespace the template gives
    /// scale-to-zero (by default one per stack).
    pub(super) fn queue_namespace(&self) -> Result<String, String> {
        self.resolved(
            "/Resources/ScaleToZeroFunction/Properties/Environment/Variables/QUEUE_METRIC_NAMESPACE",
        )?
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "QUEUE_METRIC_NAMESPACE is not a string".to_owned())
    }

    /// The queue of `workflow` drains; the template's idle alarm (created from its
    /// properties) goes to ALARM and its SNS notification reaches scale-to-zero. Returns the
    /// alarm's name and the function's report.
    pub(super) async fn idle_alarm(&self, workflow: &str) -> Result<(String, Value), String> {
        self.put_queue_depth(&[(workflow, 0.0)], Duration::ZERO)
            .await?;
        let alarm = self
            .put_alarm(&format!("WorkerIdleAlarm{workflow}"))
            .await?;
        let cloudwatch = &self.clients.cloudwatch;
        set_alarm_state(cloudwatch, &alarm.name, StateValue::Alarm).await?;
        let topic = self.id("IdleAlarmTopic")?.to_owned();
        let message = json!({
            "AlarmName": alarm.name, "AlarmDescription": alarm.properties["AlarmDescription"],
            "AWSAccountId": ACCOUNT_ID, "NewStateValue": "ALARM", "OldStateValue": "OK",
            "NewStateReason": "Threshold Crossed: 15 out of the last 15 datapoints were less than or equal to the threshold (0.0).",
            "StateChangeTime": rfc3339_now(), "Region": "US East (N. Virginia)",
            "AlarmArn": format!("arn:aws:cloudwatch:{REGION}:{ACCOUNT_ID}:alarm:{}", alarm.name),
            "AlarmActions": [topic], "OKActions": [], "InsufficientDataActions": [],
            "Trigger": {
                "MetricName": alarm.properties["MetricName"], "Namespace": alarm.properties["Namespace"],
                "StatisticType": "Statistic", "Statistic": "MAXIMUM", "Unit": null,
                "Dimensions": alarm.properties["Dimensions"].as_array().map(|d| d.iter().map(|d| json!({"value": d["Value"], "name": d["Name"]})).collect::<Vec<_>>()),
                "Period": alarm.properties["Period"], "EvaluationPeriods": alarm.properties["EvaluationPeriods"],
                "DatapointsToAlarm": alarm.properties["DatapointsToAlarm"],
                "ComparisonOperator": alarm.properties["ComparisonOperator"], "Threshold": 0.0,
                "TreatMissingData": alarm.properties["TreatMissingData"], "EvaluateLowSampleCountPercentile": ""
            }
        });
        let mut event = try_sample("scale-to-zero", "sns-idle-alarm.json")?;
        let record = &mut event["Records"][0];
        record["EventSubscriptionArn"] = json!(format!("{topic}:{}", uuid_like()));
        record["Sns"]["TopicArn"] = json!(topic);
        record["Sns"]["MessageId"] = json!(uuid_like());
        record["Sns"]["Timestamp"] = json!(rfc3339_now());
        record["Sns"]["Subject"] = json!(format!(
            "ALARM: \"{}\" in US East (N. Virginia)",
            alarm.name
        ));
        record["Sns"]["Message"] = json!(message.to_string());
        let report = self.invoke("scale-to-zero", &event).await?;
        Ok((alarm.name, report))
    }

    /// A template alarm created with PutMetricAlarm from its properties (moto's
    /// CloudFormation skips alarms).
    pub(super) async fn put_alarm(&self, logical: &str) -> Result<Alarm, String> {
        let p = self.properties(logical)?;
        let name = p["AlarmName"]
            .as_str()
            .ok_or_else(|| format!("{logical}: no AlarmName"))?
            .to_owned();
        let number = |key: &str| {
            p[key]
                .as_f64()
                .or_else(|| p[key].as_str().and_then(|s| s.parse().ok()))
        };
        let mut request = self
            .clients
            .cloudwatch
            .put_metric_alarm()
            .alarm_name(&name)
            .set_alarm_description(p["AlarmDescription"].as_str().map(str::to_owned))
            .set_namespace(p["Namespace"].as_str().map(str::to_owned))
            .set_metric_name(p["MetricName"].as_str().map(str::to_owned))
            .set_statistic(p["Statistic"].as_str().map(Statistic::from))
            .set_period(number("Period").map(|v| v as i32))
            .set_evaluation_periods(number("EvaluationPeriods").map(|v| v as i32))
            .set_datapoints_to_alarm(number("DatapointsToAlarm").map(|v| v as i32))
            .set_threshold(number("Threshold"))
            .set_comparison_operator(
                p["ComparisonOperator"]
                    .as_str()
                    .map(ComparisonOperator::from),
            )
            .set_treat_missing_data(p["TreatMissingData"].as_str().map(str::to_owned));
        for d in p["Dimensions"].as_array().into_iter().flatten() {
            request = request.dimensions(
                Dimension::builder()
                    .set_name(d["Name"].as_str().map(str::to_owned))
                    .set_value(d["Value"].as_str().map(str::to_owned))
                    .build(),
            );
        }
        for action in p["AlarmActions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            request = request.alarm_actions(action);
        }
        request
            .send()
            .await
            .map_err(aws_error(format!("PutMetricAlarm {name}")))?;
        Ok(Alarm {
            name,
            properties: p,
        })
    }

    /// The EventBridge event EC2 sends two minutes before it reclaims `instance`.
    pub(super) fn spot_warning_event(&self, instance: &str) -> Result<Value, String> {
        let mut event = try_sample("spot-interruption", "spot-interruption-warning.json")?;
        event["id"] = json!(uuid_like());
        event["time"] = json!(rfc3339_now());
        event["resources"] = json!([format!(
            "arn:aws:ec2:{REGION}:{ACCOUNT_ID}:instance/{instance}"
        )]);
        event["detail"]["instance-id"] = json!(instance);
        Ok(event)
    }

    /// EC2 warns that a vid2vid instance will be reclaimed; spot-interruption detaches it (the
    /// group launches a replacement at once) and the fleet message reaches the worker on that
    /// instance, in the queue it subscribed as the worker contract says.
    pub(super) async fn spot_warning(&self) -> Result<((), String), String> {
        let sqs = &self.clients.sqs;
        let worker = self.worker_on("vid2vid").await?;
        let queue = self.subscribe_worker_queue(&worker).await?;
        let before = self.group("vid2vid").await?;
        let instance = worker.instance.clone();
        let outcome = self
            .invoke("spot-interruption", &self.spot_warning_event(&instance)?)
            .await?;
        let after = self.group("vid2vid").await?;
        let ids: Vec<String> = after
            .instances()
            .iter()
            .filter_map(|i| i.instance_id.clone())
            .collect();
        if ids.contains(&instance) {
            return Err(format!(
                "{instance} is still in the group; outcome {outcome}"
            ));
        }
        if ids.len() != before.instances().len() {
            return Err(format!(
                "{} instances after the detach, {} before: no replacement",
                ids.len(),
                before.instances().len()
            ));
        }
        let mut told = None;
        for _ in 0..20 {
            let messages = sqs
                .receive_message()
                .queue_url(&queue)
                .max_number_of_messages(10)
                .send()
                .await
                .map_err(aws_error("ReceiveMessage"))?
                .messages
                .unwrap_or_default();
            told = messages
                .into_iter()
                .filter_map(|m| m.body)
                .find(|b| b.contains(&instance));
            if told.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if told.is_none() {
            return Err(format!(
                "no fleet message about {instance} in its worker's queue; outcome {outcome}"
            ));
        }
        Ok((
            (),
            format!(
                "{instance} detached; {} in service again; its worker's own queue got the message",
                ids.len()
            ),
        ))
    }
}

/// An alarm the scenario created from the template.
pub(super) struct Alarm {
    pub(super) name: String,
    properties: Value,
}

pub(super) async fn set_alarm_state(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    name: &str,
    state: StateValue,
) -> Result<(), String> {
    cloudwatch
        .set_alarm_state()
        .alarm_name(name)
        .state_value(state.clone())
        .state_reason(format!("local scenario: {}", state.as_str()))
        .send()
        .await
        .map_err(aws_error(format!("SetAlarmState {name}")))?;
    Ok(())
}
