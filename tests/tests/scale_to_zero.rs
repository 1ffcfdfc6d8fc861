//! scale-to-zero against moto through the real Rust SDK: idle alarms scale managed groups to
//! zero (never below busy instances), the schedule publishes `BacklogPerInstance` and wakes
//! groups at zero, and the calls stay batched. Two stacks share the account with the same
//! workflow slugs: each function touches only its own stack's groups.

use harness::cloudwatch_cbor::CborBridge;
use harness::log_capture::CapturedLogs;
use shared::sample_events::sample;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_autoscaling::types::{AutoScalingGroup, Tag};
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricDatum, MetricStat};
use harness::latency_proxy::LatencyProxy;
use harness::moto::{Moto, deployed_sdk_config};
use harness::sns_inbox::SnsInbox;
use lambda_runtime::{Context, LambdaEvent};
use scale_to_zero::{ScaleToZero, aws::AwsFleet, config::Config};
use serde_json::{Value, json};
use shared::env_config::EnvVars;

const NAMESPACE: &str = "Orchestrator/Queue";
const LAUNCH_CONFIGURATION: &str = "gpu-worker";
/// The stack the stage's function serves (`ORCHESTRATOR_STACK`); groups are tagged with it.
const STACK: &str = "orch-a";
/// Another stack in the same account and region, with the same workflow slugs.
const OTHER_STACK: &str = "orch-b";

/// A moto server with the notice topic subscribed by an SQS queue, one launch
/// configuration for every group, and the function wired to it all.
struct Stage {
    moto: Moto,
    _bridge: CborBridge,
    /// The function of [`STACK`].
    function: ScaleToZero,
    fleet: AwsFleet,
    topic_arn: String,
    autoscaling: aws_sdk_autoscaling::Client,
    cloudwatch: aws_sdk_cloudwatch::Client,
    notices: SnsInbox,
}

impl Stage {
    async fn start() -> Stage {
        let moto = Moto::start().await;
        let sdk = moto.sdk_config().await;
        let autoscaling = aws_sdk_autoscaling::Client::new(&sdk);
        let bridge = CborBridge::start(moto.endpoint_url()).await;
        let cloudwatch = bridge.cloudwatch_client(&sdk);
        let sns = aws_sdk_sns::Client::new(&sdk);
        let sqs = aws_sdk_sqs::Client::new(&sdk);

        let topic_arn = sns
            .create_topic()
            .name("idle-notices")
            .send()
            .await
            .unwrap()
            .topic_arn
            .unwrap();
        let notices = SnsInbox::subscribe(&sns, &sqs, &topic_arn, "notices", &[]).await;
        autoscaling
            .create_launch_configuration()
            .launch_configuration_name(LAUNCH_CONFIGURATION)
            .image_id("ami-12c6146b")
            .instance_type("g5.xlarge")
            .send()
            .await
            .unwrap();

        let fleet = AwsFleet::new(autoscaling.clone(), cloudwatch.clone(), sns);
        let function = function_of(STACK, &topic_arn, &fleet);
        Stage {
            moto,
            _bridge: bridge,
            function,
            fleet,
            topic_arn,
            autoscaling,
            cloudwatch,
            notices,
        }
    }

    /// The function configured for `stack`, on the same clients and notice topic.
    fn function_of(&self, stack: &str) -> ScaleToZero {
        function_of(stack, &self.topic_arn, &self.fleet)
    }

    /// Creates a group of [`STACK`] with `desired` in-service instances; `managed: None`
    /// leaves the tag off.
    async fn create_group(
        &self,
        name: &str,
        workflow: &str,
        managed: Option<&str>,
        desired: i32,
        max: i32,
    ) {
        self.create_stack_group(Some(STACK), name, workflow, managed, desired, max)
            .await;
    }

    /// Creates a group tagged `orchestrator:stack=<stack>` (`None` leaves the tag off).
    async fn create_stack_group(
        &self,
        stack: Option<&str>,
        name: &str,
        workflow: &str,
        managed: Option<&str>,
        desired: i32,
        max: i32,
    ) {
        let tags = GroupTags {
            managed,
            stack,
            workflow,
        };
        create_group(&self.autoscaling, name, tags, desired, max).await;
    }

    async fn group(&self, name: &str) -> AutoScalingGroup {
        let answer = self
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .unwrap();
        answer.auto_scaling_groups()[0].clone()
    }

    async fn put_queue_depths(&self, depths: &[(&str, f64)]) {
        let data = depths
            .iter()
            .map(|(workflow, depth)| {
                MetricDatum::builder()
                    .metric_name("QueueDepth")
                    .dimensions(
                        Dimension::builder()
                            .name("Workflow")
                            .value(*workflow)
                            .build(),
                    )
                    .value(*depth)
                    .build()
            })
            .collect();
        self.cloudwatch
            .put_metric_data()
            .namespace(NAMESPACE)
            .set_metric_data(Some(data))
            .send()
            .await
            .unwrap();
    }

    async fn invoke(&self, payload: Value) -> Value {
        invoke(&self.function, payload).await
    }

    /// The notices delivered to the subscribed queue so far (their SNS `Message`, parsed).
    async fn notices(&self) -> Vec<Value> {
        self.notice_envelopes()
            .await
            .iter()
            .map(|envelope| serde_json::from_str(envelope["Message"].as_str().unwrap()).unwrap())
            .collect()
    }

    /// The SNS envelopes (`Subject`, `Message`, `MessageAttributes`, ...) delivered to the
    /// subscribed queue since the last call.
    async fn notice_envelopes(&self) -> Vec<Value> {
        let envelopes = self.notices.drain_json().await;
        for envelope in &envelopes {
            assert_eq!(
                envelope["MessageAttributes"]["type"]["Value"], "scaled-to-zero",
                "{envelope}"
            );
        }
        envelopes
    }

    /// `BacklogPerInstance` as CloudWatch answers it for each workflow (newest value).
    async fn backlog(&self, workflows: &[&str]) -> BTreeMap<String, Option<f64>> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let queries = workflows.iter().enumerate().map(|(i, workflow)| {
            let metric = Metric::builder()
                .namespace(NAMESPACE)
                .metric_name("BacklogPerInstance")
                .dimensions(
                    Dimension::builder()
                        .name("Workflow")
                        .value(*workflow)
                        .build(),
                )
                .build();
            MetricDataQuery::builder()
                .id(format!("b{i}"))
                .metric_stat(
                    MetricStat::builder()
                        .metric(metric)
                        .period(60)
                        .stat("Maximum")
                        .build(),
                )
                .build()
        });
        let answer = self
            .cloudwatch
            .get_metric_data()
            .start_time(DateTime::from_secs(now - 600))
            .end_time(DateTime::from_secs(now + 120))
            .set_metric_data_queries(Some(queries.collect()))
            .send()
            .await
            .unwrap();
        workflows
            .iter()
            .enumerate()
            .map(|(i, workflow)| {
                let result = answer
                    .metric_data_results()
                    .iter()
                    .find(|r| r.id() == Some(&format!("b{i}")));
                (
                    workflow.to_string(),
                    result.and_then(|r| r.values().first().copied()),
                )
            })
            .collect()
    }
}

/// Configured the way main.rs does it, from (here: fixed) environment variables.
fn function_of(stack: &str, topic_arn: &str, fleet: &AwsFleet) -> ScaleToZero {
    let config = Config::from_env(&EnvVars::from_pairs([
        ("QUEUE_METRIC_NAMESPACE", NAMESPACE),
        ("NOTIFY_TOPIC_ARN", topic_arn),
        ("ORCHESTRATOR_STACK", stack),
    ]))
    .unwrap();
    ScaleToZero::new(config, fleet.clone())
}

async fn invoke(function: &ScaleToZero, payload: Value) -> Value {
    function
        .handle(LambdaEvent::new(payload, Context::default()))
        .await
        .unwrap_or_else(|e| panic!("invocation failed: {e}"))
}

/// A group's suite tags; `None` leaves a tag off.
#[derive(Clone, Copy)]
struct GroupTags<'a> {
    managed: Option<&'a str>,
    stack: Option<&'a str>,
    workflow: &'a str,
}

impl<'a> GroupTags<'a> {
    /// Tagged as `stack` manages a group.
    fn managed_by(stack: &'a str, workflow: &'a str) -> Self {
        GroupTags {
            managed: Some("true"),
            stack: Some(stack),
            workflow,
        }
    }
}

async fn create_group(
    autoscaling: &aws_sdk_autoscaling::Client,
    name: &str,
    tags: GroupTags<'_>,
    desired: i32,
    max: i32,
) {
    let tag = |key: &str, value: &str| Tag::builder().key(key).value(value).build();
    let mut request = autoscaling
        .create_auto_scaling_group()
        .auto_scaling_group_name(name)
        .launch_configuration_name(LAUNCH_CONFIGURATION)
        .min_size(0)
        .max_size(max)
        .desired_capacity(desired)
        .availability_zones("us-east-1a")
        .tags(tag("orchestrator:workflow", tags.workflow));
    if let Some(managed) = tags.managed {
        request = request.tags(tag("orchestrator:managed", managed));
    }
    if let Some(stack) = tags.stack {
        request = request.tags(tag("orchestrator:stack", stack));
    }
    request.send().await.unwrap();
}

fn desired(group: &AutoScalingGroup) -> i32 {
    group.desired_capacity().unwrap()
}

fn instance_ids(group: &AutoScalingGroup) -> Vec<String> {
    let mut ids: Vec<String> = group
        .instances()
        .iter()
        .map(|i| i.instance_id().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn schedule() -> Value {
    sample("scale-to-zero", "schedule.json")
}

#[tokio::test]
async fn idle_alarm_scales_the_managed_group_to_zero_and_sends_a_notice() {
    let stage = Stage::start().await;
    stage
        .create_group("gpu-img2vid", "img2vid", Some("true"), 2, 4)
        .await;
    assert_eq!(stage.group("gpu-img2vid").await.instances().len(), 2);
    stage.put_queue_depths(&[("img2vid", 0.0)]).await;

    let report = stage
        .invoke(sample("scale-to-zero", "sns-idle-alarm.json"))
        .await;

    assert_eq!(
        report["changes"],
        json!([{"group": "gpu-img2vid", "workflow": "img2vid", "from": 2, "to": 0, "reason": "idle"}])
    );
    let group = stage.group("gpu-img2vid").await;
    assert_eq!(desired(&group), 0);
    assert!(
        group.instances().is_empty(),
        "instances terminated: {:?}",
        group.instances()
    );
    let notices = stage.notices().await;
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0]["workflow"], "img2vid");
    assert_eq!(notices[0]["autoScalingGroup"], "gpu-img2vid");
    assert_eq!(notices[0]["previousDesiredCapacity"], 2);
    assert_eq!(notices[0]["desiredCapacity"], 0);
    assert_eq!(notices[0]["cause"], "orchestrator-dev-img2vid-idle");
}

#[tokio::test]
async fn stale_alarm_unmanaged_group_and_ok_state_change_nothing() {
    let stage = Stage::start().await;
    // Stale: work arrived after the alarm fired.
    stage
        .create_group("gpu-img2vid", "img2vid", Some("true"), 2, 4)
        .await;
    stage
        .put_queue_depths(&[("img2vid", 0.0), ("img2vid", 3.0)])
        .await;
    let report = stage
        .invoke(sample("scale-to-zero", "sns-idle-alarm.json"))
        .await;
    assert_eq!(report["changes"], json!([]));
    assert!(
        report["leftAlone"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("queue depth is 3"),
        "{report}"
    );
    assert_eq!(desired(&stage.group("gpu-img2vid").await), 2);

    // Unmanaged: tagged with the workflow but not orchestrator:managed=true.
    stage
        .create_group("gpu-vid2vid", "vid2vid", Some("false"), 1, 4)
        .await;
    stage
        .create_group("gpu-vid2vid-legacy", "vid2vid", None, 1, 4)
        .await;
    stage.put_queue_depths(&[("vid2vid", 0.0)]).await;
    let report = stage
        .invoke(json!({"action": "scale-to-zero", "workflow": "vid2vid"}))
        .await;
    assert_eq!(report["changes"], json!([]), "{report}");
    assert_eq!(report["leftAlone"].as_array().unwrap().len(), 2, "{report}");
    assert_eq!(desired(&stage.group("gpu-vid2vid").await), 1);
    assert_eq!(desired(&stage.group("gpu-vid2vid-legacy").await), 1);

    // An OK-state notification is ignored even when the queue is empty.
    stage.put_queue_depths(&[("img2vid", 0.0)]).await;
    let report = stage
        .invoke(sample("scale-to-zero", "sns-ok-alarm.json"))
        .await;
    assert_eq!(
        report["ignored"],
        json!(["orchestrator-dev-img2vid-idle is OK"])
    );
    assert_eq!(desired(&stage.group("gpu-img2vid").await), 2);

    assert!(stage.notices().await.is_empty());
}

#[tokio::test]
async fn protected_busy_instances_survive() {
    let stage = Stage::start().await;
    stage
        .create_group("gpu-img2vid", "img2vid", Some("true"), 3, 4)
        .await;
    let all = instance_ids(&stage.group("gpu-img2vid").await);
    let busy = all[..2].to_vec();
    stage
        .autoscaling
        .set_instance_protection()
        .auto_scaling_group_name("gpu-img2vid")
        .set_instance_ids(Some(busy.clone()))
        .protected_from_scale_in(true)
        .send()
        .await
        .unwrap();
    stage.put_queue_depths(&[("img2vid", 0.0)]).await;

    let report = stage
        .invoke(sample("scale-to-zero", "alarm-action.json"))
        .await;

    assert_eq!(report["changes"][0]["to"], 2, "{report}");
    let group = stage.group("gpu-img2vid").await;
    assert_eq!(desired(&group), 2);
    assert_eq!(
        instance_ids(&group),
        busy,
        "only the idle instance is terminated"
    );
    let notices = stage.notices().await;
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0]["busyInstances"], 2);
}

#[tokio::test]
async fn a_255_character_group_name_still_gets_its_notice_published() {
    // Auto Scaling allows 255 characters; SNS wants a subject under 100. The notice is sent
    // after the capacity changed, so a rejected subject would lose it.
    let stage = Stage::start().await;
    let group = format!("gpu-img2vid-{}", "x".repeat(255 - 12));
    assert_eq!(group.len(), 255);
    stage
        .create_group(&group, "img2vid", Some("true"), 2, 4)
        .await;
    stage.put_queue_depths(&[("img2vid", 0.0)]).await;

    let report = stage
        .invoke(sample("scale-to-zero", "sns-idle-alarm.json"))
        .await;

    assert_eq!(report["changes"][0]["group"], group.as_str(), "{report}");
    assert_eq!(desired(&stage.group(&group).await), 0);
    let envelopes = stage.notice_envelopes().await;
    assert_eq!(envelopes.len(), 1, "{envelopes:?}");
    let subject = envelopes[0]["Subject"].as_str().expect("a subject");
    assert_eq!(
        subject.len(),
        shared::sns_subject::MAX_SUBJECT_CHARS,
        "{subject}"
    );
    assert_eq!(subject.len(), 99, "{subject}");
    assert!(
        subject.starts_with("scale-to-zero: desired 2 -> 0, img2vid idle (gpu-img2vid-xxx"),
        "{subject}"
    );
    assert!(subject.ends_with("xxx..."), "{subject}");
    // The message itself carries the whole name.
    let notice: Value = serde_json::from_str(envelopes[0]["Message"].as_str().unwrap()).unwrap();
    assert_eq!(notice["autoScalingGroup"], group.as_str());
    assert_eq!(notice["desiredCapacity"], 0);
}

#[tokio::test]
async fn duplicate_alarm_delivery_leaves_the_same_state() {
    let stage = Stage::start().await;
    stage
        .create_group("gpu-img2vid", "img2vid", Some("true"), 2, 4)
        .await;
    stage.put_queue_depths(&[("img2vid", 0.0)]).await;

    let first = stage
        .invoke(sample("scale-to-zero", "alarm-action.json"))
        .await;
    let after_first = stage.group("gpu-img2vid").await;
    let second = stage
        .invoke(sample("scale-to-zero", "alarm-action.json"))
        .await;
    let after_second = stage.group("gpu-img2vid").await;

    assert_eq!(first["changes"].as_array().unwrap().len(), 1);
    assert_eq!(second["changes"], json!([]), "{second}");
    assert_eq!(desired(&after_first), 0);
    assert_eq!(desired(&after_second), 0);
    assert_eq!(instance_ids(&after_first), instance_ids(&after_second));
    assert_eq!(stage.notices().await.len(), 1, "one notice for one change");
}

#[tokio::test]
async fn direct_invoke_scales_an_idle_workflow_to_zero() {
    let stage = Stage::start().await;
    stage
        .create_group("gpu-img2vid", "img2vid", Some("true"), 1, 4)
        .await;
    stage.put_queue_depths(&[("img2vid", 0.0)]).await;
    let report = stage
        .invoke(sample("scale-to-zero", "direct-scale-to-zero.json"))
        .await;
    assert_eq!(report["changes"][0]["to"], 0, "{report}");
    assert_eq!(desired(&stage.group("gpu-img2vid").await), 0);
    assert_eq!(stage.notices().await[0]["cause"], "direct invoke");
}

#[tokio::test]
async fn tick_publishes_backlog_per_workflow_and_wakes_a_group_at_zero() {
    let stage = Stage::start().await;
    stage
        .create_group("gpu-img2vid", "img2vid", Some("true"), 2, 4)
        .await;
    stage
        .create_group("gpu-vid2vid", "vid2vid", Some("true"), 0, 3)
        .await;
    stage
        .create_group("gpu-txt2img", "txt2img", Some("true"), 1, 4)
        .await;
    stage
        .create_group("gpu-sd", "sd", Some("false"), 0, 4)
        .await;
    stage
        .put_queue_depths(&[
            ("img2vid", 6.0),
            ("vid2vid", 5.0),
            ("txt2img", 0.0),
            ("sd", 4.0),
        ])
        .await;

    let report = stage.invoke(schedule()).await;

    assert_eq!(report["backlogPublished"], 3, "{report}");
    let backlog = stage
        .backlog(&["img2vid", "vid2vid", "txt2img", "sd"])
        .await;
    assert_eq!(backlog["img2vid"], Some(3.0), "6 queued / 2 in service");
    assert_eq!(
        backlog["vid2vid"],
        Some(5.0),
        "none in service: the depth itself"
    );
    assert_eq!(backlog["txt2img"], Some(0.0));
    assert_eq!(backlog["sd"], None, "unmanaged workflows get no metric");
    assert_eq!(
        report["changes"],
        json!([{"group": "gpu-vid2vid", "workflow": "vid2vid", "from": 0, "to": 3, "reason": "wake"}])
    );
    assert_eq!(
        desired(&stage.group("gpu-vid2vid").await),
        3,
        "5 queued, capped at max 3"
    );
    assert_eq!(stage.group("gpu-vid2vid").await.instances().len(), 3);
    assert_eq!(desired(&stage.group("gpu-img2vid").await), 2);
    assert_eq!(desired(&stage.group("gpu-txt2img").await), 1);
    assert_eq!(
        desired(&stage.group("gpu-sd").await),
        0,
        "unmanaged group is not woken"
    );

    // A second tick (duplicate delivery) wakes nothing more.
    let again = stage.invoke(schedule()).await;
    assert_eq!(again["changes"], json!([]), "{again}");
}

#[tokio::test]
async fn tick_over_300_groups_stays_within_the_batched_call_bound() {
    const GROUPS: usize = 300;
    const WITH_WORK: usize = 10;
    /// Another stack's groups, with the first slugs: Auto Scaling filters them out, so they
    /// cost no describe page (client-side filtering would need a fourth).
    const OTHER_STACK_GROUPS: usize = 100;
    let stage = Stage::start().await;
    let autoscaling = Arc::new(stage.autoscaling.clone());
    // Groups at zero have no instances, so creating them is cheap; eight at a time.
    let mut creating = tokio::task::JoinSet::new();
    for n in 0..GROUPS + OTHER_STACK_GROUPS {
        if creating.len() >= 8 {
            creating.join_next().await.unwrap().unwrap();
        }
        let autoscaling = autoscaling.clone();
        creating.spawn(async move {
            let (stack, name, workflow) = if n < GROUPS {
                (STACK, format!("gpu-wf-{n:03}"), format!("wf-{n:03}"))
            } else {
                let n = n - GROUPS;
                (
                    OTHER_STACK,
                    format!("orch-b-wf-{n:03}"),
                    format!("wf-{n:03}"),
                )
            };
            let tags = GroupTags::managed_by(stack, &workflow);
            create_group(&autoscaling, &name, tags, 0, 2).await;
        });
    }
    while let Some(done) = creating.join_next().await {
        done.unwrap();
    }
    let workflows: Vec<String> = (0..GROUPS).map(|n| format!("wf-{n:03}")).collect();
    let depths: Vec<(&str, f64)> = workflows
        .iter()
        .enumerate()
        .map(|(n, w)| {
            (
                w.as_str(),
                if n % (GROUPS / WITH_WORK) == 0 {
                    1.0
                } else {
                    0.0
                },
            )
        })
        .collect();
    for chunk in depths.chunks(1000) {
        stage.put_queue_depths(chunk).await;
    }
    stage.moto.clear_recording().await;

    let started = std::time::Instant::now();
    let report = stage.invoke(schedule()).await;
    eprintln!("tick over {GROUPS} groups took {:?}", started.elapsed());

    assert_eq!(report["backlogPublished"], GROUPS, "{report}");
    let changes = report["changes"].as_array().unwrap().len();
    assert_eq!(changes, WITH_WORK);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for action in stage.moto.recorded_actions() {
        let name = action.rsplit(':').next().unwrap().to_owned();
        *counts.entry(name).or_default() += 1;
    }
    eprintln!("API calls: {counts:?}");
    let bound = GROUPS.div_ceil(100) + GROUPS.div_ceil(500) + GROUPS.div_ceil(1000) + changes;
    let total: usize = counts.values().sum();
    assert_eq!(counts.get("DescribeAutoScalingGroups"), Some(&3));
    assert_eq!(counts.get("GetMetricData"), Some(&1));
    assert_eq!(counts.get("PutMetricData"), Some(&1));
    assert_eq!(counts.get("SetDesiredCapacity"), Some(&WITH_WORK));
    assert!(total <= bound, "{total} calls > bound {bound}: {counts:?}");
    assert_eq!(desired(&stage.group("gpu-wf-000").await), 1);
    assert_eq!(desired(&stage.group("gpu-wf-001").await), 0);
    assert_eq!(
        desired(&stage.group("orch-b-wf-000").await),
        0,
        "another stack's group with the same slug and work queued is not woken"
    );
    assert_eq!(report["leftAlone"], json!([]), "nothing ambiguous");
}

/// Desired capacity, and each instance with its lifecycle state and scale-in protection:
/// everything a function of another stack must not change.
fn snapshot(group: &AutoScalingGroup) -> (i32, Vec<(String, String, bool)>) {
    let mut instances: Vec<(String, String, bool)> = group
        .instances()
        .iter()
        .map(|i| {
            (
                i.instance_id().unwrap().to_owned(),
                i.lifecycle_state().unwrap().as_str().to_owned(),
                i.protected_from_scale_in().unwrap(),
            )
        })
        .collect();
    instances.sort();
    (desired(group), instances)
}

#[tokio::test]
async fn idle_alarm_of_one_stack_leaves_the_other_stacks_group_of_the_same_workflow_alone() {
    let stage = Stage::start().await;
    stage
        .create_group("orch-a-img2vid", "img2vid", Some("true"), 2, 4)
        .await;
    stage
        .create_stack_group(
            Some(OTHER_STACK),
            "orch-b-img2vid",
            "img2vid",
            Some("true"),
            2,
            4,
        )
        .await;
    let theirs = instance_ids(&stage.group("orch-b-img2vid").await);
    stage
        .autoscaling
        .set_instance_protection()
        .auto_scaling_group_name("orch-b-img2vid")
        .instance_ids(&theirs[0])
        .protected_from_scale_in(true)
        .send()
        .await
        .unwrap();
    let before = snapshot(&stage.group("orch-b-img2vid").await);
    stage.put_queue_depths(&[("img2vid", 0.0)]).await;
    let logs = CapturedLogs::default();
    let guard = logs.install();

    let report = stage
        .invoke(sample("scale-to-zero", "sns-idle-alarm.json"))
        .await;

    assert_eq!(
        report["changes"],
        json!([{"group": "orch-a-img2vid", "workflow": "img2vid", "from": 2, "to": 0, "reason": "idle"}])
    );
    assert_eq!(
        report["leftAlone"],
        json!([{"group": "orch-b-img2vid", "workflow": "img2vid",
                "reason": "other stack (orchestrator:stack=orch-b)"}])
    );
    assert_eq!(desired(&stage.group("orch-a-img2vid").await), 0);
    assert_eq!(snapshot(&stage.group("orch-b-img2vid").await), before);
    let logged = logs.lines().into_iter().any(|line| {
        line["group"] == "orch-b-img2vid"
            && line["stack"] == STACK
            && line["reason"] == "other stack (orchestrator:stack=orch-b)"
    });
    assert!(
        logged,
        "the other stack's group is logged: {:?}",
        logs.lines()
    );
    let notices = stage.notices().await;
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0]["autoScalingGroup"], "orch-a-img2vid");

    // The off-hours direct invoke takes the same path.
    let report = stage
        .invoke(sample("scale-to-zero", "direct-scale-to-zero.json"))
        .await;
    assert_eq!(report["changes"], json!([]), "{report}");
    assert_eq!(report["leftAlone"].as_array().unwrap().len(), 2, "{report}");
    assert_eq!(snapshot(&stage.group("orch-b-img2vid").await), before);
    drop(guard);

    // The other stack's own function does scale its group in (keeping the busy instance).
    let report = invoke(
        &stage.function_of(OTHER_STACK),
        sample("scale-to-zero", "alarm-action.json"),
    )
    .await;
    assert_eq!(
        report["changes"],
        json!([{"group": "orch-b-img2vid", "workflow": "img2vid", "from": 2, "to": 1, "reason": "idle"}])
    );
    assert_eq!(
        report["leftAlone"][0]["reason"], "other stack (orchestrator:stack=orch-a)",
        "{report}"
    );
    assert_eq!(
        instance_ids(&stage.group("orch-b-img2vid").await),
        theirs[..1]
    );
}

#[tokio::test]
async fn tick_of_one_stack_wakes_its_own_groups_and_never_the_other_stacks() {
    let stage = Stage::start().await;
    for workflow in ["img2vid", "vid2vid"] {
        stage
            .create_group(&format!("orch-a-{workflow}"), workflow, Some("true"), 0, 4)
            .await;
        stage
            .create_stack_group(
                Some(OTHER_STACK),
                &format!("orch-b-{workflow}"),
                workflow,
                Some("true"),
                0,
                4,
            )
            .await;
    }
    stage
        .put_queue_depths(&[("img2vid", 2.0), ("vid2vid", 1.0)])
        .await;
    stage.moto.clear_recording().await;

    let report = stage.invoke(schedule()).await;

    assert_eq!(
        report["changes"],
        json!([
            {"group": "orch-a-img2vid", "workflow": "img2vid", "from": 0, "to": 2, "reason": "wake"},
            {"group": "orch-a-vid2vid", "workflow": "vid2vid", "from": 0, "to": 1, "reason": "wake"},
        ])
    );
    assert_eq!(
        report["leftAlone"],
        json!([]),
        "nothing is ambiguous: {report}"
    );
    assert_eq!(report["backlogPublished"], 2);
    let describes = stage
        .moto
        .recorded_actions()
        .iter()
        .filter(|a| a.ends_with(":DescribeAutoScalingGroups"))
        .count();
    assert_eq!(describes, 1);
    for (group, wanted) in [("orch-a-img2vid", 2), ("orch-a-vid2vid", 1)] {
        let group = stage.group(group).await;
        assert_eq!(
            (desired(&group), group.instances().len()),
            (wanted, wanted as usize)
        );
    }
    for group in ["orch-b-img2vid", "orch-b-vid2vid"] {
        assert_eq!(snapshot(&stage.group(group).await), (0, vec![]), "{group}");
    }

    // The other stack's tick wakes its own, and leaves ours as they are.
    let report = invoke(&stage.function_of(OTHER_STACK), schedule()).await;
    let woken: Vec<&str> = report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["group"].as_str().unwrap())
        .collect();
    assert_eq!(woken, ["orch-b-img2vid", "orch-b-vid2vid"], "{report}");
    assert_eq!(report["leftAlone"], json!([]), "{report}");
    assert_eq!(desired(&stage.group("orch-a-img2vid").await), 2);
    assert_eq!(desired(&stage.group("orch-a-vid2vid").await), 1);
}

#[tokio::test]
async fn a_managed_group_without_a_stack_tag_is_left_alone() {
    let stage = Stage::start().await;
    stage
        .create_stack_group(None, "legacy-img2vid", "img2vid", Some("true"), 1, 4)
        .await;
    stage
        .create_stack_group(None, "legacy-vid2vid", "vid2vid", Some("true"), 0, 4)
        .await;
    let before = snapshot(&stage.group("legacy-img2vid").await);
    stage
        .put_queue_depths(&[("img2vid", 0.0), ("vid2vid", 3.0)])
        .await;

    let report = stage
        .invoke(sample("scale-to-zero", "sns-idle-alarm.json"))
        .await;
    assert_eq!(report["changes"], json!([]), "{report}");
    assert_eq!(
        report["leftAlone"],
        json!([{"group": "legacy-img2vid", "workflow": "img2vid",
                "reason": "other stack (tagged orchestrator:managed=true but no orchestrator:stack tag)"}])
    );
    assert_eq!(snapshot(&stage.group("legacy-img2vid").await), before);

    let report = stage.invoke(schedule()).await;
    assert_eq!(report["changes"], json!([]), "{report}");
    assert_eq!(report["backlogPublished"], 0, "{report}");
    assert_eq!(
        snapshot(&stage.group("legacy-vid2vid").await),
        (0, vec![]),
        "not woken"
    );
    assert!(stage.notices().await.is_empty());
}

// ---- Event-driven wake: the backend says jobs were queued ------------------------------------

/// Now, as EventBridge writes `time` and SNS `Timestamp` (RFC 3339, UTC).
fn now_rfc3339() -> String {
    aws_smithy_types::DateTime::from(std::time::SystemTime::now())
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap()
}

/// The direct invoke asking to wake `workflow` for `queued` jobs.
fn wake_direct(workflow: &str, queued: u64) -> Value {
    let mut payload = sample("scale-to-zero", "wake-direct.json");
    payload["workflow"] = json!(workflow);
    payload["queued"] = json!(queued);
    payload
}

/// The backend's `Jobs Queued` EventBridge event, sent now.
fn wake_event(workflow: &str, queued: u64) -> Value {
    let mut event = sample("scale-to-zero", "wake-event.json");
    event["time"] = json!(now_rfc3339());
    event["detail"] = json!({"workflow": workflow, "queued": queued});
    event
}

/// The SNS delivery of the wake body, published now.
fn wake_sns(workflow: &str, queued: u64) -> Value {
    let mut event = sample("scale-to-zero", "wake-sns.json");
    let sns = &mut event["Records"][0]["Sns"];
    sns["Timestamp"] = json!(now_rfc3339());
    sns["Message"] =
        json!(json!({"action": "wake", "workflow": workflow, "queued": queued}).to_string());
    event
}

impl Stage {
    /// The `SetDesiredCapacity` calls moto received since the recording was last cleared.
    fn capacity_calls(&self) -> usize {
        self.moto
            .recorded_actions()
            .iter()
            .filter(|a| a.ends_with(":SetDesiredCapacity"))
            .count()
    }
}

#[tokio::test]
async fn each_wake_path_raises_a_group_at_zero_to_what_the_jobs_need_and_redelivery_changes_nothing()
 {
    let stage = Stage::start().await;
    for workflow in ["img2vid", "vid2vid", "txt2img"] {
        stage
            .create_group(&format!("gpu-{workflow}"), workflow, Some("true"), 0, 4)
            .await;
    }
    // No queue metric at all: the wake needs none, the request carries the count.
    // (trigger, request, queued, group, desired after)
    let paths = [
        (
            "direct-wake",
            wake_direct("img2vid", 3),
            3,
            "gpu-img2vid",
            3,
        ),
        ("event-wake", wake_event("vid2vid", 2), 2, "gpu-vid2vid", 2),
        ("sns-wake", wake_sns("txt2img", 9), 9, "gpu-txt2img", 4), // capped at max 4
    ];
    stage.moto.clear_recording().await;
    for (trigger, payload, _, group, to) in &paths {
        let report = stage.invoke(payload.clone()).await;
        assert_eq!(report["trigger"], *trigger, "{report}");
        let workflow = group.trim_start_matches("gpu-");
        assert_eq!(
            report["changes"],
            json!([{"group": group, "workflow": workflow, "from": 0, "to": to, "reason": "wake"}]),
            "{trigger}: {report}"
        );
        let state = stage.group(group).await;
        assert_eq!(
            (desired(&state), state.instances().len()),
            (*to, *to as usize),
            "{trigger}"
        );
    }
    assert_eq!(stage.capacity_calls(), 3, "one call per wake");

    // Delivered again: to this environment (it settled them a moment ago) and to a fresh one
    // (which reads the group's desired capacity): no call, no change, nothing shrunk.
    stage.moto.clear_recording().await;
    let fresh = stage.function_of(STACK);
    for (trigger, payload, queued, group, to) in &paths {
        let again = stage.invoke(payload.clone()).await;
        assert_eq!(again["changes"], json!([]), "{trigger}: {again}");
        assert!(
            again["leftAlone"][0]["reason"]
                .as_str()
                .unwrap()
                .contains("in this execution environment"),
            "{trigger}: {again}"
        );
        let elsewhere = invoke(&fresh, payload.clone()).await;
        assert_eq!(elsewhere["changes"], json!([]), "{trigger}: {elsewhere}");
        assert_eq!(
            elsewhere["leftAlone"][0]["reason"]
                .as_str()
                .unwrap()
                .split(';')
                .next()
                .unwrap(),
            format!("desired capacity {to} already covers {queued} queued jobs (they need {to})"),
            "{trigger}: {elsewhere}"
        );
        assert_eq!(desired(&stage.group(group).await), *to);
    }
    assert_eq!(stage.capacity_calls(), 0);
    // Fewer jobs than the group runs for: never shrunk.
    let fewer = invoke(&fresh, wake_direct("img2vid", 1)).await;
    assert_eq!(fewer["changes"], json!([]), "{fewer}");
    assert_eq!(desired(&stage.group("gpu-img2vid").await), 3);
    // More jobs: raised, from where it stands.
    let more = stage.invoke(wake_event("vid2vid", 3)).await;
    assert_eq!(
        more["changes"],
        json!([{"group": "gpu-vid2vid", "workflow": "vid2vid", "from": 2, "to": 3, "reason": "wake"}])
    );
    assert!(stage.notices().await.is_empty(), "a wake sends no notice");
}

#[tokio::test]
async fn a_burst_of_200_wake_requests_costs_at_most_3_capacity_calls_and_never_overshoots() {
    let stage = Stage::start().await;
    stage
        .create_group("gpu-img2vid", "img2vid", Some("true"), 0, 10)
        .await;
    stage.moto.clear_recording().await;
    let function = Arc::new(stage.function.clone());
    // 200 requests at once over the three paths, for 1 to 6 queued jobs: the backlog needs
    // 6 instances, never the group's max of 10.
    let mut requests = tokio::task::JoinSet::new();
    for n in 0..200u64 {
        let queued = n % 6 + 1;
        let payload = match n % 3 {
            0 => wake_direct("img2vid", queued),
            1 => wake_event("img2vid", queued),
            _ => wake_sns("img2vid", queued),
        };
        let function = function.clone();
        requests.spawn(async move { invoke(&function, payload).await });
    }
    let mut changes = Vec::new();
    while let Some(report) = requests.join_next().await {
        let report = report.unwrap();
        changes.extend(report["changes"].as_array().unwrap().iter().cloned());
    }
    let calls = stage.capacity_calls();
    eprintln!("200 wake requests: {calls} SetDesiredCapacity calls, changes {changes:?}");
    assert!((1..=3).contains(&calls), "{calls} SetDesiredCapacity calls");
    assert_eq!(changes.len(), calls, "every call is reported: {changes:?}");
    assert!(
        changes
            .iter()
            .all(|c| c["from"].as_u64() < c["to"].as_u64() && c["to"].as_u64() <= Some(6)),
        "only raises, never above what 6 jobs need: {changes:?}"
    );
    let describes = stage
        .moto
        .recorded_actions()
        .iter()
        .filter(|a| a.ends_with(":DescribeAutoScalingGroups"))
        .count();
    eprintln!("200 wake requests: {describes} DescribeAutoScalingGroups calls");
    assert!(describes <= 3, "{describes} describe calls");
    let group = stage.group("gpu-img2vid").await;
    assert_eq!((desired(&group), group.instances().len()), (6, 6));
}

#[tokio::test]
async fn malformed_wake_requests_fail_with_a_clear_error_and_touch_nothing() {
    let stage = Stage::start().await;
    stage
        .create_group("gpu-img2vid", "img2vid", Some("true"), 0, 4)
        .await;
    stage.moto.clear_recording().await;
    let mut wrong_source = wake_event("img2vid", 2);
    wrong_source["source"] = json!("aws.events");
    let mut wrong_type = wake_event("img2vid", 2);
    wrong_type["detail-type"] = json!("Jobs Queue");
    let cases = [
        (
            json!({"action": "wake", "workflow": "img2vid"}),
            "UnrecognisedEvent",
            "malformed direct invoke event: missing field `queued`",
        ),
        (
            json!({"action": "wake", "workflow": "img2vid", "queued": -2}),
            "UnrecognisedEvent",
            "malformed direct invoke event: invalid value: integer `-2`",
        ),
        (
            {
                let mut event = wake_event("img2vid", 2);
                event["detail"] = json!({"workflow": "img2vid", "jobs": 2});
                event
            },
            "InvalidEvent",
            "malformed wake request (EventBridge): unknown field `jobs`",
        ),
        (
            wrong_source,
            "InvalidEvent",
            "EventBridge event `Jobs Queued` comes from `aws.events`; a wake must come from `orchestrator.backend`",
        ),
        (
            wrong_type,
            "InvalidEvent",
            "EventBridge event `Jobs Queue` is neither a scheduled tick",
        ),
        (
            {
                let mut event = wake_sns("img2vid", 2);
                event["Records"][0]["Sns"]["Message"] =
                    json!(r#"{"action":"wake","workflow":"img2vid","queued":"lots"}"#);
                event
            },
            "InvalidEvent",
            "malformed wake request (SNS): invalid type: string \"lots\", expected u64",
        ),
        (
            wake_direct("  ", 2),
            "InvalidEvent",
            "wake request (direct invoke) names no workflow (`workflow` is empty)",
        ),
    ];
    for (payload, error_type, message) in cases {
        let error = stage
            .function
            .handle(LambdaEvent::new(payload.clone(), Context::default()))
            .await
            .expect_err("a malformed wake request fails the invocation");
        let diagnostic = lambda_runtime::Diagnostic::from(error);
        assert_eq!(
            diagnostic.error_type, error_type,
            "{payload}: {diagnostic:?}"
        );
        assert!(
            diagnostic.error_message.starts_with(message),
            "{payload}: {}",
            diagnostic.error_message
        );
    }
    assert_eq!(stage.moto.recorded_actions(), Vec::<String>::new());
    assert_eq!(desired(&stage.group("gpu-img2vid").await), 0);
}

#[tokio::test]
async fn an_unknown_workflow_another_stacks_group_and_a_stale_request_are_left_alone() {
    let stage = Stage::start().await;
    stage
        .create_stack_group(
            Some(OTHER_STACK),
            "orch-b-img2vid",
            "img2vid",
            Some("true"),
            0,
            4,
        )
        .await;
    let report = stage.invoke(wake_event("nope", 2)).await;
    assert_eq!(report["changes"], json!([]));
    assert_eq!(
        report["leftAlone"],
        json!([{"group": "", "workflow": "nope",
                "reason": "no Auto Scaling group is tagged orchestrator:workflow with this workflow"}])
    );

    let report = stage.invoke(wake_sns("img2vid", 2)).await;
    assert_eq!(report["changes"], json!([]), "{report}");
    assert_eq!(
        report["leftAlone"],
        json!([{"group": "orch-b-img2vid", "workflow": "img2vid",
                "reason": "other stack (orchestrator:stack=orch-b)"}])
    );
    assert_eq!(snapshot(&stage.group("orch-b-img2vid").await), (0, vec![]));
    // That stack's own function wakes it.
    let theirs = invoke(&stage.function_of(OTHER_STACK), wake_sns("img2vid", 2)).await;
    assert_eq!(theirs["changes"][0]["to"], 2, "{theirs}");

    // The sample was sent on 2026-11-22: a late redelivery is left alone.
    let report = stage
        .invoke(sample("scale-to-zero", "wake-event.json"))
        .await;
    assert_eq!(report["changes"], json!([]), "{report}");
    let reason = report["leftAlone"][0]["reason"].as_str().unwrap();
    assert!(reason.starts_with("wake request sent "), "{reason}");
}

/// The tick behind an AWS-like round trip (the latency proxy): its independent calls go out
/// together but never more than `MAX_CALLS_IN_FLIGHT` at once, and it ends where one call at a
/// time ends. Two stacks hold the same workflows, groups and queues; one ticks with three calls
/// in flight, the other with one.
#[tokio::test]
async fn the_tick_bounds_its_calls_in_flight_and_ends_as_one_call_at_a_time_would() {
    const GROUPS: usize = 24;
    let stage = Stage::start().await;
    let mut depths = Vec::new();
    for n in 0..GROUPS {
        let workflow = format!("wf-{n:02}");
        for stack in [STACK, OTHER_STACK] {
            let tags = GroupTags::managed_by(stack, &workflow);
            create_group(
                &stage.autoscaling,
                &format!("{stack}-{workflow}"),
                tags,
                0,
                4,
            )
            .await;
        }
        // Half the workflows have work (1 to 6 jobs), the rest an empty queue.
        depths.push((workflow, if n % 2 == 0 { (n % 6 + 1) as f64 } else { 0.0 }));
    }
    let depths: Vec<(&str, f64)> = depths.iter().map(|(w, d)| (w.as_str(), *d)).collect();
    stage.put_queue_depths(&depths).await;

    let proxy = LatencyProxy::start(stage.moto.endpoint_url(), Duration::from_millis(25)).await;
    let sdk = deployed_sdk_config(proxy.url(), shared::aws::AwsTimeouts::SCALE_TO_ZERO).await;
    let bridge = CborBridge::start(proxy.url()).await;
    let fleet = AwsFleet::new(
        aws_sdk_autoscaling::Client::new(&sdk),
        bridge.cloudwatch_client(&sdk),
        aws_sdk_sns::Client::new(&sdk),
    );
    let function = |stack: &str, calls: &str| {
        let config = Config::from_env(&EnvVars::from_pairs([
            ("QUEUE_METRIC_NAMESPACE", NAMESPACE),
            ("NOTIFY_TOPIC_ARN", stage.topic_arn.as_str()),
            ("ORCHESTRATOR_STACK", stack),
            ("MAX_CALLS_IN_FLIGHT", calls),
        ]))
        .unwrap();
        ScaleToZero::new(config, fleet.clone())
    };

    proxy.reset();
    let together = invoke(&function(STACK, "3"), schedule()).await;
    let most_together = proxy.max_in_flight();
    proxy.reset();
    let one_by_one = invoke(&function(OTHER_STACK, "1"), schedule()).await;
    let most_one_by_one = proxy.max_in_flight();

    assert_eq!(together["changes"].as_array().unwrap().len(), GROUPS / 2);
    assert!(
        (2..=3).contains(&most_together),
        "{most_together} calls were in flight at once with MAX_CALLS_IN_FLIGHT=3"
    );
    assert_eq!(most_one_by_one, 1);
    // The same report and the same capacities, group names aside.
    let unprefixed =
        |report: &Value, stack: &str| report.to_string().replace(&format!("\"{stack}-"), "\"");
    assert_eq!(
        unprefixed(&together, STACK),
        unprefixed(&one_by_one, OTHER_STACK)
    );
    for (workflow, depth) in depths {
        let ours = desired(&stage.group(&format!("{STACK}-{workflow}")).await);
        let theirs = desired(&stage.group(&format!("{OTHER_STACK}-{workflow}")).await);
        assert_eq!(ours, theirs, "{workflow}");
        assert_eq!(
            ours,
            (depth as i32).min(4),
            "{workflow}: woken to its backlog"
        );
    }
}
