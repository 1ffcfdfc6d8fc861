//! spot-interruption against moto through the real Rust SDK: the function runs in-process with
//! clients pointed at a private moto, the fleet topic has SQS queues subscribed (one plain, one
//! behind a subscription filter on the message attributes), and what the function did is read
//! back from Auto Scaling, SQS and moto's request recording. `SpotInterruptions` is an Embedded
//! Metric Format line (CloudWatch Logs extracts it in AWS); the tests read those lines. The
//! function serves one stack; another stack's groups share the account and the workflow slugs.

use shared::sample_events::sample;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_autoscaling::types::Tag;
use harness::log_capture::CapturedLogs;
use harness::moto::{Moto, RecordedRequest};
use harness::sns_inbox::SnsInbox;
use harness::stalling_server::StallingServer;
use serde_json::{Value, json};
use shared::aws::AwsTimeouts;
use shared::env_config::EnvVars;
use spot_interruption::notice::EventTime;
use spot_interruption::{Config, SpotAws};

const NAMESPACE: &str = "Orchestrator/Test";
const INSTANCE_TYPE: &str = "g5.xlarge";
/// The stack the function serves (`ORCHESTRATOR_STACK`).
const STACK: &str = "orch-a";
/// Another stack in the same account and region.
const OTHER_STACK: &str = "orch-b";
/// spot-interruption's progress table (`PROGRESS_TABLE`).
const PROGRESS_TABLE: &str = "orch-a-SpotProgressTable";

/// moto with a fleet topic, two subscribed queues, a launch configuration, and the function's
/// clients.
struct Fleet {
    moto: Moto,
    fleet: SpotAws,
    config: Config,
    sdk: aws_config::SdkConfig,
    autoscaling: aws_sdk_autoscaling::Client,
    /// The metric lines the function wrote.
    metric_lines: Arc<Mutex<Vec<String>>>,
    /// Gets every fleet message (SNS envelope, as a standard subscription delivers it).
    all_queue: SnsInbox,
    /// Raw delivery, filter policy `type = spot-interruption, workflow = img2vid`.
    filtered_queue: SnsInbox,
}

impl Fleet {
    async fn start() -> Fleet {
        let moto = Moto::start().await;
        let sdk = moto.sdk_config().await;
        let autoscaling = aws_sdk_autoscaling::Client::new(&sdk);
        let sns = aws_sdk_sns::Client::new(&sdk);
        let sqs = aws_sdk_sqs::Client::new(&sdk);

        let topic_arn = sns
            .create_topic()
            .name("fleet-events")
            .send()
            .await
            .expect("CreateTopic")
            .topic_arn
            .expect("topic ARN");
        let all_queue = SnsInbox::subscribe(&sns, &sqs, &topic_arn, "fleet-all", &[]).await;
        let filtered_queue = SnsInbox::subscribe(
            &sns,
            &sqs,
            &topic_arn,
            "img2vid-interruptions",
            &[
                ("RawMessageDelivery", "true"),
                (
                    "FilterPolicy",
                    r#"{"type": ["spot-interruption"], "workflow": ["img2vid"]}"#,
                ),
            ],
        )
        .await;
        autoscaling
            .create_launch_configuration()
            .launch_configuration_name("gpu-worker")
            .image_id("ami-0abcdef1234567890")
            .instance_type(INSTANCE_TYPE)
            .send()
            .await
            .expect("CreateLaunchConfiguration");

        let table = moto
            .create_progress_table(PROGRESS_TABLE)
            .await
            .expect("progress table");
        let config = Config::from_env(&EnvVars::from_pairs([
            ("FLEET_TOPIC_ARN", topic_arn.as_str()),
            ("METRIC_NAMESPACE", NAMESPACE),
            ("ORCHESTRATOR_STACK", STACK),
            ("PROGRESS_TABLE", table.as_str()),
        ]))
        .expect("config");
        let metric_lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&metric_lines);
        let fleet = SpotAws::new(
            config.clone(),
            autoscaling.clone(),
            sns,
            aws_sdk_dynamodb::Client::new(&sdk),
        )
        .with_metric_output(Arc::new(move |line: &str| {
            sink.lock().unwrap().push(line.to_owned())
        }));
        Fleet {
            moto,
            fleet,
            config,
            sdk,
            autoscaling,
            metric_lines,
            all_queue,
            filtered_queue,
        }
    }

    /// A group of `size` instances with `tags`; returns its instance ids.
    async fn group(&self, name: &str, size: i32, tags: &[(&str, &str)]) -> Vec<String> {
        let mut create = self
            .autoscaling
            .create_auto_scaling_group()
            .auto_scaling_group_name(name)
            .launch_configuration_name("gpu-worker")
            .min_size(0)
            .max_size(size * 2)
            .desired_capacity(size)
            .availability_zones("us-east-1a")
            .availability_zones("us-east-1b");
        for (key, value) in tags {
            create = create.tags(
                Tag::builder()
                    .key(*key)
                    .value(*value)
                    .resource_id(name)
                    .resource_type("auto-scaling-group")
                    .propagate_at_launch(true)
                    .build(),
            );
        }
        create.send().await.expect("CreateAutoScalingGroup");
        let (desired, instances) = self.group_state(name).await;
        assert_eq!((desired, instances.len()), (size, size as usize));
        instances
    }

    /// Desired capacity and instance ids of a group.
    async fn group_state(&self, name: &str) -> (i32, Vec<String>) {
        let output = self
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .expect("DescribeAutoScalingGroups");
        let group = &output.auto_scaling_groups()[0];
        let instances = group
            .instances()
            .iter()
            .filter_map(|i| i.instance_id().map(str::to_owned))
            .collect();
        (group.desired_capacity().unwrap_or_default(), instances)
    }

    /// Another execution environment of the function (its own memory), with these SNS and
    /// DynamoDB clients, writing its metric lines where the first one does.
    fn environment(&self, sns: aws_sdk_sns::Client, dynamodb: aws_sdk_dynamodb::Client) -> SpotAws {
        let sink = Arc::clone(&self.metric_lines);
        SpotAws::new(self.config.clone(), self.autoscaling.clone(), sns, dynamodb)
            .with_metric_output(Arc::new(move |line: &str| {
                sink.lock().unwrap().push(line.to_owned())
            }))
    }

    /// What the function called, split into the progress table's calls and the others. The
    /// table is read alongside the Auto Scaling lookup, so only the others keep an order.
    fn calls(&self) -> (Vec<String>, Vec<String>) {
        self.moto
            .recorded_actions()
            .into_iter()
            .partition(|action| action.starts_with("dynamodb:"))
    }

    async fn handle(&self, event: Value) -> Value {
        spot_interruption::handle_payload(event, &self.fleet)
            .await
            .unwrap_or_else(|e| panic!("the invocation failed: {e}"))
    }

    /// The fleet messages the plain subscription got: (message body, message attributes).
    async fn fleet_messages(&self) -> Vec<(Value, BTreeMap<String, String>)> {
        self.all_queue
            .drain()
            .await
            .iter()
            .map(|message| {
                let envelope: Value = serde_json::from_str(message.body().unwrap_or_default())
                    .expect("SNS envelope JSON");
                let body: Value = serde_json::from_str(envelope["Message"].as_str().unwrap())
                    .expect("fleet message JSON");
                let attributes = envelope["MessageAttributes"]
                    .as_object()
                    .map(|attributes| {
                        attributes
                            .iter()
                            .map(|(name, attribute)| {
                                assert_eq!(attribute["Type"], "String", "{name}");
                                (
                                    name.clone(),
                                    attribute["Value"].as_str().unwrap().to_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                (body, attributes)
            })
            .collect()
    }

    /// `SpotInterruptions` counted for one workflow / instance type / AZ, read from the
    /// Embedded Metric Format lines as CloudWatch would: only a well-formed document with this
    /// namespace, metric and dimension set counts.
    fn interruptions(&self, workflow: &str, availability_zone: &str) -> f64 {
        let now_millis = unix_now() * 1000;
        self.metric_lines
            .lock()
            .unwrap()
            .iter()
            .map(|line| serde_json::from_str::<Value>(line).expect("a metric line is JSON"))
            .filter(|doc| {
                let directive = &doc["_aws"]["CloudWatchMetrics"][0];
                let timestamp = doc["_aws"]["Timestamp"].as_i64().expect("Timestamp in ms");
                (now_millis - timestamp).abs() < 600_000
                    && directive["Namespace"] == NAMESPACE
                    && directive["Dimensions"]
                        == json!([["Workflow", "InstanceType", "AvailabilityZone"]])
                    && directive["Metrics"]
                        == json!([{"Name": "SpotInterruptions", "Unit": "Count"}])
                    && doc["Workflow"] == workflow
                    && doc["InstanceType"] == INSTANCE_TYPE
                    && doc["AvailabilityZone"] == availability_zone
            })
            .map(|doc| doc["SpotInterruptions"].as_f64().expect("a numeric value"))
            .sum()
    }

    /// The Availability Zone Auto Scaling reports for an instance.
    async fn availability_zone(&self, instance_id: &str) -> String {
        let output = self
            .autoscaling
            .describe_auto_scaling_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .expect("DescribeAutoScalingInstances");
        output.auto_scaling_instances()[0]
            .availability_zone()
            .expect("an AZ")
            .to_owned()
    }

    /// The instance ids of every recorded `DetachInstances` call, with the call's
    /// `ShouldDecrementDesiredCapacity`.
    fn detach_calls(&self) -> Vec<(String, String)> {
        self.moto
            .recorded_requests()
            .iter()
            .filter(|r| r.action().as_deref() == Some("DetachInstances"))
            .map(|r| {
                (
                    form_value(r, "InstanceIds.member.1").expect("an instance id"),
                    form_value(r, "ShouldDecrementDesiredCapacity").unwrap_or_default(),
                )
            })
            .collect()
    }
}

/// A form parameter of a query-protocol request (Auto Scaling).
fn form_value(request: &RecordedRequest, name: &str) -> Option<String> {
    let body = String::from_utf8_lossy(&request.body).into_owned();
    body.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| value.to_owned())
    })
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

/// A sample event for `instance_id`, with its own id and the current time.
fn event(sample_name: &str, event_id: &str, instance_id: &str, time: EventTime) -> Value {
    let mut event = sample("spot-interruption", sample_name);
    event["id"] = event_id.into();
    event["time"] = time.to_string().into();
    if let Some(detail) = event["detail"].as_object_mut() {
        if detail.contains_key("instance-id") {
            detail.insert("instance-id".into(), instance_id.into());
        } else {
            detail.insert("EC2InstanceId".into(), instance_id.into());
        }
    }
    event
}

fn warning(event_id: &str, instance_id: &str) -> Value {
    event(
        "spot-interruption-warning.json",
        event_id,
        instance_id,
        EventTime::from_unix_seconds(unix_now()),
    )
}

/// The tags of a group the function's own stack manages.
fn managed(workflow: &str) -> [(&'static str, &str); 3] {
    managed_by(STACK, workflow)
}

/// The tags of a group `stack` manages.
fn managed_by<'a>(stack: &'a str, workflow: &'a str) -> [(&'static str, &'a str); 3] {
    [
        ("orchestrator:managed", "true"),
        ("orchestrator:stack", stack),
        ("orchestrator:workflow", workflow),
    ]
}

#[tokio::test]
async fn a_warning_detaches_the_instance_the_group_replaces_it_and_the_fleet_is_told() {
    let fleet = Fleet::start().await;
    let group = "orchestrator-test-img2vid";
    let instances = fleet.group(group, 2, &managed("img2vid")).await;
    let interrupted = &instances[0];
    let availability_zone = fleet.availability_zone(interrupted).await;
    fleet.moto.clear_recording().await;

    let time = EventTime::from_unix_seconds(unix_now());
    let outcome = fleet
        .handle(event(
            "spot-interruption-warning.json",
            "evt-warning-1",
            interrupted,
            time,
        ))
        .await;

    assert_eq!(outcome["outcome"], "acted", "{outcome}");
    assert_eq!(
        outcome["actions"],
        json!([
            "published-fleet-message",
            "detached",
            "counted-interruption"
        ])
    );
    // Detached without lowering desired capacity: the group launched a replacement.
    assert_eq!(
        fleet.detach_calls(),
        [(interrupted.clone(), "false".to_owned())]
    );
    let (table, actions) = fleet.calls();
    assert_eq!(table, ["dynamodb:GetItem"], "no record: nothing failed");
    assert_eq!(
        actions[..2],
        [
            "autoscaling:DescribeAutoScalingInstances",
            "autoscaling:DescribeAutoScalingGroups",
        ],
        "the lookups first: {actions:?}"
    );
    // Then the message and the detach at the same time: neither waits on the other.
    let mut acting = actions[2..].to_vec();
    acting.sort();
    assert_eq!(
        acting,
        ["autoscaling:DetachInstances", "sns:Publish"],
        "four calls per warning: {actions:?}"
    );
    let (desired, now_in_group) = fleet.group_state(group).await;
    assert_eq!(desired, 2);
    assert_eq!(now_in_group.len(), 2, "{now_in_group:?}");
    assert!(!now_in_group.contains(interrupted), "{now_in_group:?}");
    assert!(now_in_group.contains(&instances[1]));

    // The plain subscription: the contract's body and the two attributes.
    let messages = fleet.fleet_messages().await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    let (body, attributes) = &messages[0];
    assert_eq!(
        body,
        &json!({
            "type": "spot-interruption",
            "workflow": "img2vid",
            "autoScalingGroup": group,
            "instanceId": interrupted,
            "eventId": "evt-warning-1",
            "time": time.to_string(),
            "deadline": time.plus_seconds(120).to_string(),
        })
    );
    assert_eq!(
        attributes,
        &BTreeMap::from([
            ("type".to_owned(), "spot-interruption".to_owned()),
            ("workflow".to_owned(), "img2vid".to_owned()),
        ])
    );
    // A subscription filtering on those attributes gets it too, raw.
    let filtered = fleet.filtered_queue.drain().await;
    assert_eq!(filtered.len(), 1);
    let raw: Value = serde_json::from_str(filtered[0].body().unwrap()).unwrap();
    assert_eq!(raw["eventId"], "evt-warning-1");

    assert_eq!(fleet.interruptions("img2vid", &availability_zone), 1.0);
}

#[tokio::test]
async fn a_rebalance_recommendation_only_tells_the_fleet() {
    let fleet = Fleet::start().await;
    let group = "orchestrator-test-txt2img";
    let instances = fleet.group(group, 2, &managed("txt2img")).await;
    fleet.moto.clear_recording().await;

    let time = EventTime::from_unix_seconds(unix_now());
    let outcome = fleet
        .handle(event(
            "rebalance-recommendation.json",
            "evt-rebalance-1",
            &instances[0],
            time,
        ))
        .await;

    assert_eq!(outcome["outcome"], "acted", "{outcome}");
    assert_eq!(outcome["actions"], json!(["published-fleet-message"]));
    let (table, actions) = fleet.calls();
    assert_eq!(table, ["dynamodb:GetItem"]);
    assert_eq!(
        actions,
        [
            "autoscaling:DescribeAutoScalingInstances",
            "autoscaling:DescribeAutoScalingGroups",
            "sns:Publish",
        ],
        "no detach"
    );
    assert!(fleet.metric_lines.lock().unwrap().is_empty(), "no metric");
    assert_eq!(fleet.group_state(group).await, (2, instances.clone()));
    let messages = fleet.fleet_messages().await;
    assert_eq!(messages.len(), 1);
    let (body, attributes) = &messages[0];
    assert_eq!(
        body,
        &json!({
            "type": "rebalance-recommendation",
            "workflow": "txt2img",
            "autoScalingGroup": group,
            "instanceId": instances[0],
            "eventId": "evt-rebalance-1",
            "time": time.to_string(),
        })
    );
    assert_eq!(attributes["type"], "rebalance-recommendation");
    assert_eq!(attributes["workflow"], "txt2img");
    assert!(
        fleet.filtered_queue.drain().await.is_empty(),
        "the interruption-only subscription filters it out"
    );
}

#[tokio::test]
async fn a_terminate_lifecycle_action_hands_hook_and_token_to_the_worker() {
    let fleet = Fleet::start().await;
    let group = "orchestrator-test-img2vid";
    let instances = fleet.group(group, 1, &managed("img2vid")).await;
    fleet.moto.clear_recording().await;

    let mut lifecycle = event(
        "terminate-lifecycle-action.json",
        "evt-lifecycle-1",
        &instances[0],
        EventTime::from_unix_seconds(unix_now()),
    );
    lifecycle["detail"]["AutoScalingGroupName"] = group.into();
    let outcome = fleet.handle(lifecycle).await;

    assert_eq!(outcome["outcome"], "acted", "{outcome}");
    assert_eq!(outcome["actions"], json!(["published-fleet-message"]));
    let (table, mut actions) = fleet.calls();
    assert_eq!(table, ["dynamodb:GetItem"]);
    actions.sort();
    assert_eq!(
        actions,
        [
            "autoscaling:DescribeAutoScalingGroups",
            "autoscaling:DescribeAutoScalingInstances",
            "sns:Publish",
        ],
        "the worker is still there: it completes the action itself"
    );
    let messages = fleet.fleet_messages().await;
    assert_eq!(messages.len(), 1);
    let (body, attributes) = &messages[0];
    assert_eq!(body["type"], "instance-terminating");
    assert_eq!(body["instanceId"], instances[0].as_str());
    assert_eq!(body["autoScalingGroup"], group);
    assert_eq!(body["lifecycleHookName"], "drain-before-terminate");
    assert_eq!(
        body["lifecycleActionToken"],
        "71514b9d-6a40-4b26-8523-05e7eEXAMPLE"
    );
    assert!(body.get("deadline").is_none(), "{body}");
    assert_eq!(attributes["type"], "instance-terminating");
    assert_eq!(attributes["workflow"], "img2vid");
}

#[tokio::test]
async fn the_same_warning_delivered_twice_detaches_once() {
    let fleet = Fleet::start().await;
    let group = "orchestrator-test-img2vid";
    let instances = fleet.group(group, 2, &managed("img2vid")).await;
    let availability_zone = fleet.availability_zone(&instances[0]).await;
    fleet.moto.clear_recording().await;

    let first = fleet.handle(warning("evt-dup", &instances[0])).await;
    let second = fleet.handle(warning("evt-dup", &instances[0])).await;

    assert_eq!(first["outcome"], "acted", "{first}");
    assert_eq!(second["outcome"], "ignored", "{second}");
    assert!(
        second["reason"]
            .as_str()
            .unwrap()
            .contains("in no Auto Scaling group"),
        "{second}"
    );
    assert_eq!(fleet.detach_calls().len(), 1);
    assert_eq!(fleet.fleet_messages().await.len(), 1);
    assert_eq!(fleet.interruptions("img2vid", &availability_zone), 1.0);
    let (desired, now_in_group) = fleet.group_state(group).await;
    assert_eq!((desired, now_in_group.len()), (2, 2));
}

#[tokio::test]
async fn a_message_owed_after_the_detach_is_sent_by_a_retry_in_another_execution_environment() {
    let fleet = Fleet::start().await;
    let group = "orchestrator-test-img2vid";
    let instances = fleet.group(group, 2, &managed("img2vid")).await;
    let availability_zone = fleet.availability_zone(&instances[0]).await;
    // The first environment's SNS has stalled: its publish times out (a transient failure).
    let stalled = StallingServer::start().await;
    let stalled_sns = aws_sdk_sns::Client::from_conf(
        aws_sdk_sns::config::Builder::from(&fleet.sdk)
            .endpoint_url(stalled.endpoint_url())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_timeout(Duration::from_millis(300))
                    .build(),
            )
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .build(),
    );
    let first = fleet.environment(stalled_sns, aws_sdk_dynamodb::Client::new(&fleet.sdk));
    fleet.moto.clear_recording().await;
    let warning = warning("evt-owed", &instances[0]);

    let failed = spot_interruption::handle_payload(warning.clone(), &first)
        .await
        .unwrap_err();

    assert!(failed.to_string().contains("Publish"), "{failed}");
    assert_eq!(
        fleet.detach_calls().len(),
        1,
        "the replacement did not wait"
    );
    let (desired, in_group) = fleet.group_state(group).await;
    assert!(!in_group.contains(&instances[0]));
    assert_eq!(desired, 2);
    assert!(fleet.fleet_messages().await.is_empty());

    // Lambda's retry runs in another environment: no group lists the instance any more, yet
    // the message goes out, from the progress table in moto's DynamoDB.
    let retried = fleet.handle(warning.clone()).await;
    assert_eq!(retried["outcome"], "acted", "{retried}");
    assert_eq!(retried["actions"], json!(["published-fleet-message"]));
    assert_eq!(
        retried["alreadyDone"],
        json!(["detached", "counted-interruption"])
    );
    let messages = fleet.fleet_messages().await;
    assert_eq!(messages.len(), 1);
    let (body, attributes) = &messages[0];
    assert_eq!(body["eventId"], "evt-owed");
    assert_eq!(body["instanceId"], instances[0].as_str());
    assert_eq!(body["autoScalingGroup"], group);
    assert_eq!(body["workflow"], "img2vid");
    assert_eq!(attributes["type"], "spot-interruption");
    assert_eq!(fleet.detach_calls().len(), 1, "detached once");
    assert_eq!(fleet.interruptions("img2vid", &availability_zone), 1.0);

    // A late duplicate, in a third environment: nothing again.
    let third = fleet.environment(
        aws_sdk_sns::Client::new(&fleet.sdk),
        aws_sdk_dynamodb::Client::new(&fleet.sdk),
    );
    let duplicate = spot_interruption::handle_payload(warning, &third)
        .await
        .unwrap();
    assert_eq!(duplicate["outcome"], "ignored", "{duplicate}");
    assert!(fleet.fleet_messages().await.is_empty());
    assert_eq!(fleet.detach_calls().len(), 1);
}

#[tokio::test]
async fn a_progress_table_that_never_answers_delays_no_detach() {
    let fleet = Fleet::start().await;
    let group = "orchestrator-test-img2vid";
    let instances = fleet.group(group, 2, &managed("img2vid")).await;
    let stalled = StallingServer::start().await;
    let stalled_table = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&fleet.sdk)
            .endpoint_url(stalled.endpoint_url())
            .build(),
    );
    let environment = fleet.environment(aws_sdk_sns::Client::new(&fleet.sdk), stalled_table);
    fleet.moto.clear_recording().await;

    let started = Instant::now();
    let outcome =
        spot_interruption::handle_payload(warning("evt-no-table", &instances[0]), &environment)
            .await
            .unwrap();
    let took = started.elapsed();

    assert_eq!(outcome["outcome"], "acted", "{outcome}");
    assert_eq!(fleet.detach_calls().len(), 1);
    assert_eq!(fleet.fleet_messages().await.len(), 1);
    assert!(stalled.connections() >= 1, "the table was asked");
    // Decided without the table once its lookup budget was spent: the DynamoDB call itself
    // would have run on to its own operation timeout.
    assert!(
        took < AwsTimeouts::SPOT_INTERRUPTION.operation,
        "took {took:?}, the table's budget is {:?}",
        spot_interruption::progress_table::LOOKUP_BUDGET
    );
}

#[tokio::test]
async fn unmanaged_and_unknown_instances_are_left_alone_with_a_log_line() {
    let fleet = Fleet::start().await;
    let unmanaged = fleet
        .group(
            "someone-elses",
            1,
            &[
                ("orchestrator:managed", "false"),
                ("orchestrator:workflow", "img2vid"),
            ],
        )
        .await;
    let untagged = fleet.group("untagged", 1, &[("team", "ml")]).await;
    let no_workflow = fleet
        .group(
            "half-tagged",
            1,
            &[
                ("orchestrator:managed", "true"),
                ("orchestrator:stack", STACK),
            ],
        )
        .await;
    let no_stack = fleet
        .group(
            "stackless",
            1,
            &[
                ("orchestrator:managed", "true"),
                ("orchestrator:workflow", "img2vid"),
            ],
        )
        .await;
    fleet.moto.clear_recording().await;
    let logs = CapturedLogs::default();
    let _guard = logs.install();

    let cases = [
        (
            warning("evt-u1", &unmanaged[0]),
            "not tagged orchestrator:managed=true",
        ),
        (
            warning("evt-u2", &untagged[0]),
            "not tagged orchestrator:managed=true",
        ),
        (
            warning("evt-u3", &no_workflow[0]),
            "has no orchestrator:workflow tag",
        ),
        (
            warning("evt-u4", "i-0123456789abcdef0"),
            "in no Auto Scaling group",
        ),
        (
            warning("evt-u6", &no_stack[0]),
            "other stack (tagged orchestrator:managed=true but no orchestrator:stack tag)",
        ),
        (
            event(
                "rebalance-recommendation.json",
                "evt-u5",
                &unmanaged[0],
                EventTime::from_unix_seconds(unix_now()),
            ),
            "not tagged orchestrator:managed=true",
        ),
    ];
    for (event, reason) in cases {
        let event_id = event["id"].as_str().unwrap().to_owned();
        let outcome = fleet.handle(event).await;
        assert_eq!(outcome["outcome"], "ignored", "{outcome}");
        assert!(
            outcome["reason"].as_str().unwrap().contains(reason),
            "{outcome}"
        );
        let line = logs
            .lines()
            .into_iter()
            .find(|line| line["event_id"] == event_id.as_str() && line["outcome"] == "ignored")
            .unwrap_or_else(|| panic!("no log line for {event_id}: {:?}", logs.lines()));
        assert!(line["reason"].as_str().unwrap().contains(reason), "{line}");
    }
    for event_id in ["evt-u3", "evt-u6"] {
        let warned = logs.lines().into_iter().any(|line| {
            line["level"] == "WARN"
                && line["event_id"] == event_id
                && line["message"].as_str().unwrap().contains("tags")
        });
        assert!(
            warned,
            "{event_id}: a managed group without a workflow or a stack is a warning: {:?}",
            logs.lines()
        );
    }

    let (table, actions) = fleet.calls();
    assert!(
        actions
            .iter()
            .all(|a| a.starts_with("autoscaling:Describe"))
            && table.iter().all(|a| a == "dynamodb:GetItem"),
        "only lookups: {actions:?} {table:?}"
    );
    for (group, instances) in [
        ("someone-elses", &unmanaged),
        ("untagged", &untagged),
        ("half-tagged", &no_workflow),
        ("stackless", &no_stack),
    ] {
        assert_eq!(fleet.group_state(group).await, (1, instances.clone()));
    }
    assert!(fleet.fleet_messages().await.is_empty());
}

#[tokio::test]
async fn another_stacks_instance_is_left_alone_and_ours_is_still_handled() {
    let fleet = Fleet::start().await;
    // Two stacks, the same workflow slug: the filtered subscription matches both groups'
    // messages, so it would show a leak too.
    let ours = fleet
        .group("orch-a-img2vid", 2, &managed_by(STACK, "img2vid"))
        .await;
    let theirs = fleet
        .group("orch-b-img2vid", 2, &managed_by(OTHER_STACK, "img2vid"))
        .await;
    fleet.moto.clear_recording().await;
    let logs = CapturedLogs::default();
    let _guard = logs.install();

    let outcome = fleet.handle(warning("evt-theirs", &theirs[0])).await;

    assert_eq!(outcome["outcome"], "ignored", "{outcome}");
    assert_eq!(
        outcome["reason"],
        "Auto Scaling group orch-b-img2vid is left alone: other stack (orchestrator:stack=orch-b)"
    );
    let line = logs
        .lines()
        .into_iter()
        .find(|line| line["event_id"] == "evt-theirs" && line["outcome"] == "ignored")
        .unwrap_or_else(|| panic!("no log line: {:?}", logs.lines()));
    assert!(
        line["reason"].as_str().unwrap().contains("orch-b"),
        "{line}"
    );
    assert!(fleet.detach_calls().is_empty());
    let (table, actions) = fleet.calls();
    assert_eq!(table, ["dynamodb:GetItem"]);
    assert_eq!(
        actions,
        [
            "autoscaling:DescribeAutoScalingInstances",
            "autoscaling:DescribeAutoScalingGroups",
        ],
        "only the lookups"
    );
    assert_eq!(
        fleet.group_state("orch-b-img2vid").await,
        (2, theirs.clone()),
        "the other stack's group still lists the instance"
    );
    assert!(fleet.fleet_messages().await.is_empty());
    assert!(fleet.filtered_queue.drain().await.is_empty());
    assert!(fleet.metric_lines.lock().unwrap().is_empty(), "no metric");

    // A rebalance recommendation for their instance: no message either.
    let rebalance = event(
        "rebalance-recommendation.json",
        "evt-theirs-rebalance",
        &theirs[1],
        EventTime::from_unix_seconds(unix_now()),
    );
    let outcome = fleet.handle(rebalance).await;
    assert_eq!(outcome["outcome"], "ignored", "{outcome}");
    assert!(fleet.fleet_messages().await.is_empty());

    // Ours, same slug, same invocation setup: handled as always.
    let outcome = fleet.handle(warning("evt-ours", &ours[0])).await;
    assert_eq!(outcome["outcome"], "acted", "{outcome}");
    assert_eq!(
        fleet.detach_calls(),
        [(ours[0].clone(), "false".to_owned())]
    );
    let (desired, now_in_group) = fleet.group_state("orch-a-img2vid").await;
    assert_eq!(desired, 2);
    assert!(!now_in_group.contains(&ours[0]), "{now_in_group:?}");
    let messages = fleet.fleet_messages().await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0].0["autoScalingGroup"], "orch-a-img2vid");
    assert_eq!(messages[0].0["instanceId"], ours[0].as_str());
    assert_eq!(fleet.group_state("orch-b-img2vid").await, (2, theirs));
}

#[tokio::test]
async fn malformed_events_are_rejected_without_calls_or_panics() {
    let fleet = Fleet::start().await;
    fleet.moto.clear_recording().await;
    let logs = CapturedLogs::default();
    let _guard = logs.install();

    let mut no_instance = sample("spot-interruption", "spot-interruption-warning.json");
    no_instance["detail"] = json!({"instance-action": "terminate"});
    let mut bad_instance = sample("spot-interruption", "spot-interruption-warning.json");
    bad_instance["detail"]["instance-id"] = "'; DROP TABLE".into();
    let mut no_id = sample("spot-interruption", "rebalance-recommendation.json");
    no_id.as_object_mut().unwrap().remove("id");
    let mut no_token = sample("spot-interruption", "terminate-lifecycle-action.json");
    no_token["detail"]
        .as_object_mut()
        .unwrap()
        .remove("LifecycleActionToken");
    let mut bad_time = sample("spot-interruption", "spot-interruption-warning.json");
    bad_time["time"] = "yesterday".into();
    let cases = [
        (json!(null), "malformed EventBridge event"),
        (json!({}), "malformed EventBridge event"),
        (json!([1, 2, 3]), "malformed EventBridge event"),
        (
            json!({"detail-type": "EC2 Spot Instance Interruption Warning"}),
            "malformed EventBridge event",
        ),
        (no_instance, "missing field `instance-id`"),
        (bad_instance, "not an EC2 instance id"),
        (no_id, "has no `id`"),
        (no_token, "missing field `LifecycleActionToken`"),
        (bad_time, "malformed EventBridge event"),
    ];
    for (payload, reason) in cases {
        let outcome = fleet.handle(payload.clone()).await;
        assert_eq!(outcome["outcome"], "rejected", "{payload}: {outcome}");
        assert!(
            outcome["reason"].as_str().unwrap().contains(reason),
            "{payload}: {outcome}"
        );
    }
    let errors: Vec<Value> = logs
        .lines()
        .into_iter()
        .filter(|line| line["level"] == "ERROR" && line["outcome"] == "rejected")
        .collect();
    assert_eq!(
        errors.len(),
        9,
        "one clear error line per event: {errors:?}"
    );
    assert!(
        errors[4]["error"]
            .as_str()
            .unwrap()
            .contains("missing field `instance-id`")
    );
    assert_eq!(errors[1]["payload"], "an empty object");

    // Another detail type is not malformed, just not ours.
    let mut state_change = sample("spot-interruption", "rebalance-recommendation.json");
    state_change["detail-type"] = "EC2 Instance State-change Notification".into();
    let outcome = fleet.handle(state_change).await;
    assert_eq!(outcome["outcome"], "ignored", "{outcome}");

    assert!(
        fleet.moto.recorded_actions().is_empty(),
        "{:?}",
        fleet.moto.recorded_actions()
    );
}

#[tokio::test]
async fn two_hundred_warnings_across_four_workflows_each_detach_once() {
    const WORKFLOWS: [&str; 4] = ["img2vid", "txt2img", "upscale", "caption"];
    const PER_GROUP: usize = 50;
    const CONCURRENCY: usize = 8;
    let fleet = Arc::new(Fleet::start().await);
    let mut originals: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for workflow in WORKFLOWS {
        let instances = fleet
            .group(
                &format!("orchestrator-test-{workflow}"),
                PER_GROUP as i32,
                &managed(workflow),
            )
            .await;
        originals.insert(workflow, instances);
    }
    // Interleaved across workflows, as a capacity-pool interruption would arrive.
    let mut events = Vec::new();
    for index in 0..PER_GROUP {
        for (workflow, instances) in &originals {
            let event_id = format!("evt-{workflow}-{index}");
            events.push((event_id, instances[index].clone(), *workflow));
        }
    }
    fleet.moto.clear_recording().await;

    let started = Instant::now();
    let limit = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut invocations = tokio::task::JoinSet::new();
    for (event_id, instance_id, workflow) in events {
        let fleet = Arc::clone(&fleet);
        let permit = Arc::clone(&limit).acquire_owned().await.unwrap();
        invocations.spawn(async move {
            let outcome =
                spot_interruption::handle_payload(warning(&event_id, &instance_id), &fleet.fleet)
                    .await;
            drop(permit);
            (event_id, workflow, outcome)
        });
    }
    let mut outcomes = Vec::new();
    while let Some(joined) = invocations.join_next().await {
        outcomes.push(joined.expect("no invocation panics"));
    }
    let elapsed = started.elapsed();
    eprintln!("200 warnings handled in {elapsed:?} ({CONCURRENCY} at a time)");

    for (event_id, _, outcome) in &outcomes {
        let outcome = outcome
            .as_ref()
            .unwrap_or_else(|e| panic!("{event_id}: {e}"));
        assert_eq!(outcome["outcome"], "acted", "{event_id}: {outcome}");
    }
    let detached: Vec<String> = fleet
        .detach_calls()
        .into_iter()
        .map(|(id, decrement)| {
            assert_eq!(decrement, "false");
            id
        })
        .collect();
    let all_originals: BTreeSet<String> = originals.values().flatten().cloned().collect();
    assert_eq!(detached.len(), 200, "one DetachInstances per warning");
    assert_eq!(
        detached.iter().cloned().collect::<BTreeSet<_>>(),
        all_originals,
        "every instance detached once"
    );
    let (table, calls) = fleet.calls();
    assert_eq!(calls.len(), 800, "four calls per warning");
    assert_eq!(table.len(), 200, "and one progress-table lookup");
    assert!(table.iter().all(|a| a == "dynamodb:GetItem"), "{table:?}");

    let messages = fleet.fleet_messages().await;
    assert_eq!(messages.len(), 200);
    let event_ids: BTreeSet<&str> = messages
        .iter()
        .map(|(body, _)| body["eventId"].as_str().unwrap())
        .collect();
    assert_eq!(event_ids.len(), 200, "one message per event");
    let mut per_workflow: BTreeMap<String, usize> = BTreeMap::new();
    for (body, attributes) in &messages {
        assert_eq!(body["type"], "spot-interruption");
        assert_eq!(attributes["workflow"], body["workflow"].as_str().unwrap());
        *per_workflow
            .entry(attributes["workflow"].clone())
            .or_default() += 1;
    }
    assert_eq!(
        per_workflow.values().collect::<Vec<_>>(),
        [&50, &50, &50, &50],
        "{per_workflow:?}"
    );
    assert_eq!(
        fleet.filtered_queue.drain().await.len(),
        50,
        "img2vid's interruptions only"
    );

    let mut counted = 0.0;
    for workflow in WORKFLOWS {
        for availability_zone in ["us-east-1a", "us-east-1b"] {
            counted += fleet.interruptions(workflow, availability_zone);
        }
    }
    assert_eq!(counted, 200.0);

    // Every group is back at its desired count with none of the interrupted instances.
    for workflow in WORKFLOWS {
        let (desired, instances) = fleet
            .group_state(&format!("orchestrator-test-{workflow}"))
            .await;
        assert_eq!(desired, PER_GROUP as i32);
        assert!(
            instances.iter().all(|i| !all_originals.contains(i)),
            "{workflow}: {instances:?}"
        );
        assert_eq!(instances.len(), PER_GROUP, "{workflow}: {instances:?}");
    }
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
}
