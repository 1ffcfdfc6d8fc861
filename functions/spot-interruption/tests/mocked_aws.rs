//! What moto cannot show: `CompleteLifecycleAction` (moto 5.2.5 does not implement it),
//! throttling, 5xx and permission errors. The function runs through its real entry point
//! with SDK clients whose responses are scripted by `aws-smithy-mocks`; everything moto can
//! run is tested against moto in `tests/tests/spot_interruption.rs`. The progress table is a
//! map behind scripted `GetItem`/`PutItem` answers ([`ProgressTable`]); several `Mocked`
//! functions sharing one are several execution environments of the same function.

use shared::sample_events::sample;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_autoscaling::operation::complete_lifecycle_action::CompleteLifecycleActionOutput;
use aws_sdk_autoscaling::operation::describe_auto_scaling_groups::DescribeAutoScalingGroupsOutput;
use aws_sdk_autoscaling::operation::describe_auto_scaling_instances::DescribeAutoScalingInstancesOutput;
use aws_sdk_autoscaling::operation::detach_instances::DetachInstancesOutput;
use aws_sdk_autoscaling::types::{AutoScalingGroup, AutoScalingInstanceDetails, TagDescription};
use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
use aws_sdk_dynamodb::operation::put_item::PutItemOutput;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sns::operation::publish::PublishOutput;
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use aws_smithy_runtime_api::http::{Response as HttpResponse, StatusCode};
use aws_smithy_types::body::SdkBody;
use serde_json::{Value, json};
use shared::env_config::EnvVars;
use spot_interruption::{Config, SpotAws, SpotInterruptionError};

const STACK: &str = "orchestrator-dev";
const GROUP: &str = "orchestrator-dev-img2vid";
const INSTANCE: &str = "i-0b1c2d3e4f5a6b7c8";
const HOOK: &str = "drain-before-terminate";
const TOKEN: &str = "71514b9d-6a40-4b26-8523-05e7eEXAMPLE";

/// An error answer in the query protocol Auto Scaling and SNS speak.
fn query_error(status: u16, code: &str, message: &str) -> HttpResponse {
    HttpResponse::new(
        StatusCode::try_from(status).unwrap(),
        SdkBody::from(format!(
            "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>\
             <Message>{message}</Message></Error><RequestId>req-1</RequestId></ErrorResponse>"
        )),
    )
}

fn managed_group() -> Rule {
    group_of_stack(STACK)
}

/// `GROUP`, managed, workflow `img2vid`, tagged as `stack`'s.
fn group_of_stack(stack: &'static str) -> Rule {
    mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups)
        .match_requests(|req| req.auto_scaling_group_names() == [GROUP])
        .then_output(move || {
            let tag =
                |key: &str, value: &str| TagDescription::builder().key(key).value(value).build();
            DescribeAutoScalingGroupsOutput::builder()
                .auto_scaling_groups(
                    AutoScalingGroup::builder()
                        .auto_scaling_group_name(GROUP)
                        .tags(tag("orchestrator:managed", "true"))
                        .tags(tag("orchestrator:stack", stack))
                        .tags(tag("orchestrator:workflow", "img2vid"))
                        .build(),
                )
                .build()
        })
}

fn instance_listed(lifecycle_state: &'static str) -> Rule {
    mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_instances)
        .match_requests(|req| req.instance_ids() == [INSTANCE])
        .then_output(move || {
            DescribeAutoScalingInstancesOutput::builder()
                .auto_scaling_instances(
                    AutoScalingInstanceDetails::builder()
                        .instance_id(INSTANCE)
                        .auto_scaling_group_name(GROUP)
                        .instance_type("g5.xlarge")
                        .availability_zone("us-east-1a")
                        .lifecycle_state(lifecycle_state)
                        .health_status("HEALTHY")
                        .protected_from_scale_in(false)
                        .build(),
                )
                .build()
        })
}

fn instance_not_listed() -> Rule {
    mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_instances)
        .then_output(|| DescribeAutoScalingInstancesOutput::builder().build())
}

/// A publish rule that keeps every message body it gets.
fn publish_ok(bodies: &Arc<Mutex<Vec<String>>>) -> Rule {
    let bodies = Arc::clone(bodies);
    mock!(aws_sdk_sns::Client::publish)
        .match_requests(|req| {
            let attributes = req.message_attributes().cloned().unwrap_or_default();
            attributes.get("workflow").and_then(|a| a.string_value()) == Some("img2vid")
                && attributes.contains_key("type")
        })
        .then_compute_output(move |req| {
            bodies
                .lock()
                .unwrap()
                .push(req.message().unwrap_or_default().to_owned());
            PublishOutput::builder().message_id("msg-1").build()
        })
}

type Item = HashMap<String, AttributeValue>;

/// The progress table: items by event id, read and written through scripted DynamoDB answers.
#[derive(Clone, Default)]
struct ProgressTable {
    items: Arc<Mutex<HashMap<String, Item>>>,
}

impl ProgressTable {
    /// `GetItem` and `PutItem` on the items, as DynamoDB answers them.
    fn rules(&self) -> [Rule; 2] {
        let event_id = |item: Option<&Item>| {
            item.and_then(|item| item.get("eventId"))
                .and_then(|id| id.as_s().ok())
                .cloned()
                .unwrap_or_default()
        };
        let items = Arc::clone(&self.items);
        let get = mock!(aws_sdk_dynamodb::Client::get_item)
            .match_requests(|req| req.consistent_read() == Some(true))
            .then_compute_output(move |req| {
                let item = items.lock().unwrap().get(&event_id(req.key())).cloned();
                GetItemOutput::builder().set_item(item).build()
            });
        let items = Arc::clone(&self.items);
        let put = mock!(aws_sdk_dynamodb::Client::put_item).then_compute_output(move |req| {
            let item = req.item().cloned().unwrap_or_default();
            items.lock().unwrap().insert(event_id(Some(&item)), item);
            PutItemOutput::builder().build()
        });
        [get, put]
    }

    /// The steps the record of `event_id` says are done.
    fn done(&self, event_id: &str) -> Option<Value> {
        let items = self.items.lock().unwrap();
        let record = items.get(event_id)?.get("record")?.as_s().ok()?;
        let record: Value = serde_json::from_str(record).unwrap();
        Some(record["done"].clone())
    }
}

const WARNING_ID: &str = "1e5527d7-bb36-4607-3370-4164db56a40e";

/// The function with mocked Auto Scaling, SNS and DynamoDB clients (no SDK retries: each
/// scripted answer is what the function sees) and its metric lines captured.
struct Mocked {
    fleet: SpotAws,
    metric_lines: Arc<Mutex<Vec<String>>>,
}

impl Mocked {
    /// An execution environment with a progress table of its own.
    fn new(autoscaling_rules: &[&Rule], sns_rules: &[&Rule]) -> Mocked {
        Mocked::sharing(&ProgressTable::default(), autoscaling_rules, sns_rules)
    }

    /// An execution environment whose progress table is `table`.
    fn sharing(table: &ProgressTable, autoscaling_rules: &[&Rule], sns_rules: &[&Rule]) -> Mocked {
        let [get, put] = table.rules();
        Mocked::with_table_rules(&[&get, &put], autoscaling_rules, sns_rules)
    }

    fn with_table_rules(
        dynamodb_rules: &[&Rule],
        autoscaling_rules: &[&Rule],
        sns_rules: &[&Rule],
    ) -> Mocked {
        let autoscaling = mock_client!(
            aws_sdk_autoscaling,
            RuleMode::MatchAny,
            autoscaling_rules,
            |config| config
                .retry_config(aws_sdk_autoscaling::config::retry::RetryConfig::disabled())
        );
        let sns = mock_client!(aws_sdk_sns, RuleMode::MatchAny, sns_rules, |config| {
            config.retry_config(aws_sdk_sns::config::retry::RetryConfig::disabled())
        });
        let dynamodb = mock_client!(
            aws_sdk_dynamodb,
            RuleMode::MatchAny,
            dynamodb_rules,
            |config| config.retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
        );
        let config = Config::from_env(&EnvVars::from_pairs([
            (
                "FLEET_TOPIC_ARN",
                "arn:aws:sns:us-east-1:123456789012:fleet",
            ),
            ("METRIC_NAMESPACE", "Orchestrator"),
            ("ORCHESTRATOR_STACK", STACK),
            ("PROGRESS_TABLE", "orchestrator-dev-SpotProgressTable-1ABC"),
        ]))
        .unwrap();
        let metric_lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&metric_lines);
        let fleet = SpotAws::new(config, autoscaling, sns, dynamodb).with_metric_output(Arc::new(
            move |line: &str| sink.lock().unwrap().push(line.to_owned()),
        ));
        Mocked {
            fleet,
            metric_lines,
        }
    }

    async fn handle(&self, event: Value) -> Result<Value, SpotInterruptionError> {
        spot_interruption::handle_payload(event, &self.fleet).await
    }

    fn metric_count(&self) -> usize {
        self.metric_lines.lock().unwrap().len()
    }
}

#[tokio::test]
async fn a_lifecycle_action_of_a_gone_instance_is_completed_with_continue() {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (group, instance, publish) = (managed_group(), instance_not_listed(), publish_ok(&bodies));
    let complete = mock!(aws_sdk_autoscaling::Client::complete_lifecycle_action)
        .match_requests(|req| {
            req.auto_scaling_group_name() == Some(GROUP)
                && req.lifecycle_hook_name() == Some(HOOK)
                && req.lifecycle_action_token() == Some(TOKEN)
                && req.instance_id() == Some(INSTANCE)
                && req.lifecycle_action_result() == Some("CONTINUE")
        })
        .then_output(|| CompleteLifecycleActionOutput::builder().build());
    let mocked = Mocked::new(&[&group, &instance, &complete], &[&publish]);

    let outcome = mocked
        .handle(sample(
            "spot-interruption",
            "terminate-lifecycle-action.json",
        ))
        .await
        .unwrap();

    assert_eq!(outcome["outcome"], "acted", "{outcome}");
    assert_eq!(
        outcome["actions"],
        json!(["published-fleet-message", "completed-lifecycle-action"])
    );
    assert_eq!(complete.num_calls(), 1);
    // The backend still hears of it, so it requeues the worker's jobs.
    let bodies = bodies.lock().unwrap();
    let body: Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(body["type"], "instance-terminating");
    assert_eq!(body["lifecycleActionToken"], TOKEN);
    assert_eq!(body["eventId"], "468fe059-f4b7-445f-bb22-2a4cb1e6e2a8");
}

#[tokio::test]
async fn a_lifecycle_action_already_resolved_is_not_an_error() {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (group, instance, publish) = (managed_group(), instance_not_listed(), publish_ok(&bodies));
    let complete = mock!(aws_sdk_autoscaling::Client::complete_lifecycle_action)
        .then_http_response(|| {
            query_error(
                400,
                "ValidationError",
                "No active Lifecycle Action found with instance ID i-0b1c2d3e4f5a6b7c8",
            )
        });
    let mocked = Mocked::new(&[&group, &instance, &complete], &[&publish]);

    let outcome = mocked
        .handle(sample(
            "spot-interruption",
            "terminate-lifecycle-action.json",
        ))
        .await
        .unwrap();

    assert_eq!(outcome["outcome"], "acted", "{outcome}");
    assert_eq!(
        outcome["actions"],
        json!([
            "published-fleet-message",
            "lifecycle-action-already-resolved"
        ])
    );
    assert_eq!(complete.num_calls(), 1);
}

#[tokio::test]
async fn a_live_worker_completes_its_own_lifecycle_action() {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (group, instance, publish) = (
        managed_group(),
        instance_listed("Terminating:Wait"),
        publish_ok(&bodies),
    );
    let complete = mock!(aws_sdk_autoscaling::Client::complete_lifecycle_action)
        .then_output(|| CompleteLifecycleActionOutput::builder().build());
    let mocked = Mocked::new(&[&group, &instance, &complete], &[&publish]);

    let outcome = mocked
        .handle(sample(
            "spot-interruption",
            "terminate-lifecycle-action.json",
        ))
        .await
        .unwrap();

    assert_eq!(outcome["actions"], json!(["published-fleet-message"]));
    assert_eq!(complete.num_calls(), 0);
    assert_eq!(publish.num_calls(), 1);
}

#[tokio::test]
async fn throttling_fails_the_invocation_so_lambda_retries_it() {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let publish = publish_ok(&bodies);
    let throttled = mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_instances)
        .then_http_response(|| query_error(400, "Throttling", "Rate exceeded"));
    let mocked = Mocked::new(&[&throttled], &[&publish]);

    let error = mocked
        .handle(sample(
            "spot-interruption",
            "spot-interruption-warning.json",
        ))
        .await
        .unwrap_err();

    let text = error.to_string();
    assert!(text.contains("DescribeAutoScalingInstances"), "{text}");
    assert!(text.contains("Rate exceeded"), "{text}");
    assert!(text.contains("Lambda retries"), "{text}");
    let diagnostic = lambda_runtime::Diagnostic::from(error);
    assert_eq!(diagnostic.error_type, "RetryableAwsError");
    assert_eq!(publish.num_calls(), 0, "nothing was done");
}

/// A detach that keeps desired capacity, for `INSTANCE` in `GROUP`: answers `responses` in
/// order, then nothing (a further call finds no rule and fails the test).
fn detach_answering(responses: &[u16]) -> Rule {
    let mut sequence = mock!(aws_sdk_autoscaling::Client::detach_instances)
        .match_requests(|req| {
            req.should_decrement_desired_capacity() == Some(false)
                && req.instance_ids() == [INSTANCE]
                && req.auto_scaling_group_name() == Some(GROUP)
        })
        .sequence();
    for &status in responses {
        sequence = if status == 200 {
            sequence.output(|| DetachInstancesOutput::builder().build())
        } else {
            sequence.http_response(move || query_error(status, "ServiceUnavailable", "try again"))
        };
    }
    sequence.build()
}

/// A publish that fails once with a 5xx; listed before [`publish_ok`], which answers after it.
fn publish_unavailable_once() -> Rule {
    mock!(aws_sdk_sns::Client::publish)
        .sequence()
        .http_response(|| query_error(503, "ServiceUnavailable", "SNS is unavailable"))
        .build()
}

/// Listed `InService` once (the first attempt's lookup), then in no group: what Auto Scaling
/// answers once the instance is detached.
fn instance_listed_then_detached() -> (Rule, Rule) {
    let listed = mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_instances)
        .sequence()
        .output(|| {
            DescribeAutoScalingInstancesOutput::builder()
                .auto_scaling_instances(
                    AutoScalingInstanceDetails::builder()
                        .instance_id(INSTANCE)
                        .auto_scaling_group_name(GROUP)
                        .instance_type("g5.xlarge")
                        .availability_zone("us-east-1a")
                        .lifecycle_state("InService")
                        .health_status("HEALTHY")
                        .protected_from_scale_in(false)
                        .build(),
                )
                .build()
        })
        .build();
    (listed, instance_not_listed())
}

#[tokio::test]
async fn a_transient_publish_failure_still_detaches_and_the_retry_only_publishes() {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (listed, detached) = instance_listed_then_detached();
    let (group, detach) = (managed_group(), detach_answering(&[200]));
    let (unavailable, publish) = (publish_unavailable_once(), publish_ok(&bodies));
    let mocked = Mocked::new(
        &[&group, &listed, &detached, &detach],
        &[&unavailable, &publish],
    );
    let warning = sample("spot-interruption", "spot-interruption-warning.json");

    let first = mocked.handle(warning.clone()).await.unwrap_err();

    // The replacement did not wait for SNS: detached in the same attempt.
    assert_eq!(detach.num_calls(), 1, "detached despite the failed publish");
    assert_eq!(mocked.metric_count(), 1, "counted with the detach");
    assert!(bodies.lock().unwrap().is_empty());
    let text = first.to_string();
    assert!(
        text.contains("Publish") && text.contains("SNS is unavailable"),
        "{text}"
    );
    assert!(
        text.contains("already done: detached, counted-interruption"),
        "{text}"
    );
    assert_eq!(
        lambda_runtime::Diagnostic::from(first).error_type,
        "RetryableAwsError",
        "Lambda retries it"
    );

    // Lambda's retry of the same event: no second detach (Auto Scaling no longer lists the
    // instance, and nothing is looked up), the owed message goes out.
    let retried = mocked.handle(warning).await.unwrap();
    assert_eq!(retried["outcome"], "acted", "{retried}");
    assert_eq!(retried["actions"], json!(["published-fleet-message"]));
    assert_eq!(
        retried["alreadyDone"],
        json!(["detached", "counted-interruption"])
    );
    assert_eq!(detach.num_calls(), 1, "detached once");
    assert_eq!(mocked.metric_count(), 1, "counted once");
    assert_eq!(listed.num_calls() + detached.num_calls(), 1, "one lookup");
    let bodies = bodies.lock().unwrap();
    assert_eq!(bodies.len(), 1);
    let body: Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(body["type"], "spot-interruption");
    assert_eq!(body["autoScalingGroup"], GROUP);
    assert_eq!(body["workflow"], "img2vid");
    assert_eq!(body["eventId"], "1e5527d7-bb36-4607-3370-4164db56a40e");
    assert_eq!(body["deadline"], "2026-11-22T12:05:14Z");
}

#[tokio::test]
async fn a_transient_detach_failure_is_retried_without_a_second_message() {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (group, instance, publish) = (
        managed_group(),
        instance_listed("InService"),
        publish_ok(&bodies),
    );
    let detach = detach_answering(&[503, 200]);
    let mocked = Mocked::new(&[&group, &instance, &detach], &[&publish]);
    let warning = sample("spot-interruption", "spot-interruption-warning.json");

    let first = mocked.handle(warning.clone()).await.unwrap_err();

    assert_eq!(bodies.lock().unwrap().len(), 1, "the message went out");
    assert_eq!(detach.num_calls(), 1);
    let text = first.to_string();
    assert!(text.contains("DetachInstances"), "{text}");
    assert!(
        text.contains("already done: published-fleet-message"),
        "{text}"
    );
    assert_eq!(
        lambda_runtime::Diagnostic::from(first).error_type,
        "RetryableAwsError"
    );
    assert_eq!(
        mocked.metric_count(),
        0,
        "not counted before the detach succeeded"
    );

    // Lambda's retry: the detach succeeds, the interruption is counted once, and the message
    // that already went out is not sent again.
    let retried = mocked.handle(warning).await.unwrap();
    assert_eq!(retried["outcome"], "acted", "{retried}");
    assert_eq!(
        retried["actions"],
        json!(["detached", "counted-interruption"])
    );
    assert_eq!(retried["alreadyDone"], json!(["published-fleet-message"]));
    assert_eq!(detach.num_calls(), 2);
    assert_eq!(mocked.metric_count(), 1);
    assert_eq!(publish.num_calls(), 1, "one message");
    assert_eq!(bodies.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn both_failing_are_both_tried_and_both_retried() {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (group, instance) = (managed_group(), instance_listed("InService"));
    let (unavailable, publish) = (publish_unavailable_once(), publish_ok(&bodies));
    let detach = detach_answering(&[503, 200]);
    let mocked = Mocked::new(&[&group, &instance, &detach], &[&unavailable, &publish]);
    let warning = sample("spot-interruption", "spot-interruption-warning.json");

    let first = mocked.handle(warning.clone()).await.unwrap_err();
    let text = first.to_string();
    assert!(
        text.contains("Publish") && text.contains("DetachInstances"),
        "both failures are named: {text}"
    );
    assert!(!text.contains("already done"), "{text}");
    assert_eq!((unavailable.num_calls(), detach.num_calls()), (1, 1));

    let retried = mocked.handle(warning.clone()).await.unwrap();
    assert_eq!(
        retried["actions"],
        json!([
            "published-fleet-message",
            "detached",
            "counted-interruption"
        ]),
        "{retried}"
    );
    assert_eq!(bodies.lock().unwrap().len(), 1);
    assert_eq!(detach.num_calls(), 2);
    assert_eq!(mocked.metric_count(), 1);
}

#[tokio::test]
async fn a_retry_in_another_execution_environment_sends_no_second_message() {
    // Lambda may run the retry in another execution environment: the progress table tells it
    // that the message went out, so only the detach is done again.
    let table = ProgressTable::default();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (group, instance, publish) = (
        managed_group(),
        instance_listed("InService"),
        publish_ok(&bodies),
    );
    let detach = detach_answering(&[503, 200]);
    let failing = Mocked::sharing(&table, &[&group, &instance, &detach], &[&publish]);
    let warning = sample("spot-interruption", "spot-interruption-warning.json");
    failing.handle(warning.clone()).await.unwrap_err();
    assert_eq!(
        table.done(WARNING_ID),
        Some(json!(["published-fleet-message"]))
    );

    let elsewhere = Mocked::sharing(&table, &[&group, &instance, &detach], &[&publish]);
    let retried = elsewhere.handle(warning).await.unwrap();

    assert_eq!(retried["outcome"], "acted", "{retried}");
    assert_eq!(
        retried["actions"],
        json!(["detached", "counted-interruption"])
    );
    assert_eq!(retried["alreadyDone"], json!(["published-fleet-message"]));
    assert_eq!(detach.num_calls(), 2);
    assert_eq!(bodies.lock().unwrap().len(), 1, "one message");
    assert_eq!(elsewhere.metric_count(), 1);
}

#[tokio::test]
async fn a_message_owed_after_the_detach_is_sent_by_a_retry_in_another_execution_environment() {
    // After the detach no group lists the instance, so the other environment could not make
    // the plan again: it sends the message the progress table kept.
    let table = ProgressTable::default();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (listed, detached) = instance_listed_then_detached();
    let (group, detach) = (managed_group(), detach_answering(&[200]));
    let (unavailable, publish) = (publish_unavailable_once(), publish_ok(&bodies));
    let failing = Mocked::sharing(
        &table,
        &[&group, &listed, &detached, &detach],
        &[&unavailable, &publish],
    );
    let warning = sample("spot-interruption", "spot-interruption-warning.json");
    failing.handle(warning.clone()).await.unwrap_err();
    assert_eq!(
        table.done(WARNING_ID),
        Some(json!(["detached", "counted-interruption"]))
    );

    let elsewhere = Mocked::sharing(&table, &[&group, &detached, &detach], &[&publish]);
    let retried = elsewhere.handle(warning.clone()).await.unwrap();

    assert_eq!(retried["outcome"], "acted", "{retried}");
    assert_eq!(retried["actions"], json!(["published-fleet-message"]));
    assert_eq!(
        retried["alreadyDone"],
        json!(["detached", "counted-interruption"])
    );
    assert_eq!(detach.num_calls(), 1, "detached once");
    assert_eq!(
        elsewhere.metric_count(),
        0,
        "counted once, by the first attempt"
    );
    {
        let bodies = bodies.lock().unwrap();
        assert_eq!(bodies.len(), 1);
        let body: Value = serde_json::from_str(&bodies[0]).unwrap();
        assert_eq!(body["type"], "spot-interruption");
        assert_eq!(body["autoScalingGroup"], GROUP);
        assert_eq!(body["workflow"], "img2vid");
        assert_eq!(body["instanceId"], INSTANCE);
        assert_eq!(body["eventId"], WARNING_ID);
        assert_eq!(body["time"], "2026-11-22T12:03:14Z");
        assert_eq!(body["deadline"], "2026-11-22T12:05:14Z");
    }
    assert_eq!(
        table.done(WARNING_ID),
        Some(json!([
            "detached",
            "counted-interruption",
            "published-fleet-message"
        ])),
        "the record says the plan is done"
    );

    // A late duplicate delivery, in a third environment: nothing is done again.
    let third = Mocked::sharing(&table, &[&group, &detached, &detach], &[&publish]);
    let duplicate = third.handle(warning).await.unwrap();
    assert_eq!(duplicate["outcome"], "ignored", "{duplicate}");
    let reason = duplicate["reason"].as_str().unwrap();
    assert!(reason.starts_with("repeated delivery"), "{reason}");
    assert_eq!(bodies.lock().unwrap().len(), 1);
    assert_eq!(detach.num_calls(), 1);
}

#[tokio::test]
async fn an_unavailable_progress_table_delays_no_detach_and_loses_no_retry_here() {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (listed, detached) = instance_listed_then_detached();
    let (group, detach) = (managed_group(), detach_answering(&[200]));
    let (unavailable, publish) = (publish_unavailable_once(), publish_ok(&bodies));
    let get = mock!(aws_sdk_dynamodb::Client::get_item)
        .then_http_response(|| json_error(500, "InternalServerError", "table unavailable"));
    let put = mock!(aws_sdk_dynamodb::Client::put_item)
        .then_http_response(|| json_error(500, "InternalServerError", "table unavailable"));
    let mocked = Mocked::with_table_rules(
        &[&get, &put],
        &[&group, &listed, &detached, &detach],
        &[&unavailable, &publish],
    );
    let warning = sample("spot-interruption", "spot-interruption-warning.json");

    let first = mocked.handle(warning.clone()).await.unwrap_err();

    assert_eq!(
        detach.num_calls(),
        1,
        "the replacement did not wait on the table"
    );
    assert!(first.to_string().contains("Publish"), "{first}");
    assert_eq!((get.num_calls(), put.num_calls()), (1, 1));
    // The retry in this environment still finishes from the memory record.
    let retried = mocked.handle(warning).await.unwrap();
    assert_eq!(retried["actions"], json!(["published-fleet-message"]));
    assert_eq!(detach.num_calls(), 1);
    assert_eq!(bodies.lock().unwrap().len(), 1);
}

/// An error answer in the JSON protocol DynamoDB speaks.
fn json_error(status: u16, code: &str, message: &str) -> HttpResponse {
    HttpResponse::new(
        StatusCode::try_from(status).unwrap(),
        SdkBody::from(format!(
            r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{code}","message":"{message}"}}"#
        )),
    )
}

#[tokio::test]
async fn a_transient_publish_failure_still_completes_a_gone_instances_lifecycle_action() {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (group, instance) = (managed_group(), instance_not_listed());
    let (unavailable, publish) = (publish_unavailable_once(), publish_ok(&bodies));
    let complete = mock!(aws_sdk_autoscaling::Client::complete_lifecycle_action)
        .then_output(|| CompleteLifecycleActionOutput::builder().build());
    let mocked = Mocked::new(&[&group, &instance, &complete], &[&unavailable, &publish]);
    let lifecycle = sample("spot-interruption", "terminate-lifecycle-action.json");

    mocked.handle(lifecycle.clone()).await.unwrap_err();
    assert_eq!(complete.num_calls(), 1, "the group is not held up by SNS");

    let retried = mocked.handle(lifecycle).await.unwrap();
    assert_eq!(retried["actions"], json!(["published-fleet-message"]));
    assert_eq!(
        retried["alreadyDone"],
        json!(["completed-lifecycle-action"])
    );
    assert_eq!(complete.num_calls(), 1);
    assert_eq!(bodies.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_permanent_publish_failure_still_replaces_the_instance() {
    let (group, instance) = (managed_group(), instance_listed("InService"));
    let denied = mock!(aws_sdk_sns::Client::publish).then_http_response(|| {
        query_error(
            403,
            "AuthorizationError",
            "not authorized to perform SNS:Publish",
        )
    });
    let detach = mock!(aws_sdk_autoscaling::Client::detach_instances)
        .then_output(|| DetachInstancesOutput::builder().build());
    let mocked = Mocked::new(&[&group, &instance, &detach], &[&denied]);

    let outcome = mocked
        .handle(sample(
            "spot-interruption",
            "spot-interruption-warning.json",
        ))
        .await
        .expect("not retried: a retry cannot grant the permission");

    assert_eq!(outcome["outcome"], "failed", "{outcome}");
    assert_eq!(
        outcome["actions"],
        json!(["detached", "counted-interruption"])
    );
    let failure = outcome["failures"][0].as_str().unwrap();
    assert!(
        failure.contains("Publish") && failure.contains("not authorized"),
        "{failure}"
    );
    assert_eq!(detach.num_calls(), 1);
}

#[tokio::test]
async fn a_detach_refused_because_a_concurrent_delivery_did_it_counts_nothing() {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (group, instance, publish) = (
        managed_group(),
        instance_listed("InService"),
        publish_ok(&bodies),
    );
    let detach =
        mock!(aws_sdk_autoscaling::Client::detach_instances).then_http_response(|| {
            query_error(
                400,
                "ValidationError",
                "The instance i-0b1c2d3e4f5a6b7c8 is not part of Auto Scaling group orchestrator-dev-img2vid.",
            )
        });
    let mocked = Mocked::new(&[&group, &instance, &detach], &[&publish]);

    let outcome = mocked
        .handle(sample(
            "spot-interruption",
            "spot-interruption-warning.json",
        ))
        .await
        .unwrap();

    assert_eq!(outcome["outcome"], "acted", "{outcome}");
    assert_eq!(
        outcome["actions"],
        json!(["published-fleet-message", "already-detached"])
    );
    assert_eq!(
        mocked.metric_count(),
        0,
        "the delivery that detached counted"
    );
}

#[tokio::test]
async fn a_permanent_lookup_failure_is_reported_and_not_retried() {
    let denied = mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_instances)
        .then_http_response(|| {
            query_error(
                403,
                "AccessDenied",
                "not authorized to perform autoscaling:DescribeAutoScalingInstances",
            )
        });
    let mocked = Mocked::new(&[&denied], &[]);

    let outcome = mocked
        .handle(sample(
            "spot-interruption",
            "spot-interruption-warning.json",
        ))
        .await
        .unwrap();

    assert_eq!(outcome["outcome"], "failed", "{outcome}");
    assert!(
        outcome["failures"][0]
            .as_str()
            .unwrap()
            .contains("AccessDenied"),
        "{outcome}"
    );
}

#[tokio::test]
async fn another_stacks_lifecycle_action_is_left_to_that_stack() {
    // The instance is gone, so for our own group the function would complete the action; the
    // group is staging's (same workflow slug), so nothing is published or completed.
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (group, instance, publish) = (
        group_of_stack("orchestrator-staging"),
        instance_not_listed(),
        publish_ok(&bodies),
    );
    let complete = mock!(aws_sdk_autoscaling::Client::complete_lifecycle_action)
        .then_output(|| CompleteLifecycleActionOutput::builder().build());
    let detach = mock!(aws_sdk_autoscaling::Client::detach_instances)
        .then_output(|| DetachInstancesOutput::builder().build());
    let mocked = Mocked::new(&[&group, &instance, &complete, &detach], &[&publish]);

    let outcome = mocked
        .handle(sample(
            "spot-interruption",
            "terminate-lifecycle-action.json",
        ))
        .await
        .unwrap();

    assert_eq!(outcome["outcome"], "ignored", "{outcome}");
    let reason = outcome["reason"].as_str().unwrap();
    assert!(
        reason.contains("other stack (orchestrator:stack=orchestrator-staging)"),
        "{reason}"
    );
    assert_eq!(complete.num_calls(), 0);
    assert_eq!(publish.num_calls(), 0);
    assert_eq!(mocked.metric_count(), 0);

    // A Spot warning for an instance of that group: no detach, no message, no count.
    let (group, instance) = (
        group_of_stack("orchestrator-staging"),
        instance_listed("InService"),
    );
    let mocked = Mocked::new(&[&group, &instance, &detach], &[&publish]);
    let outcome = mocked
        .handle(sample(
            "spot-interruption",
            "spot-interruption-warning.json",
        ))
        .await
        .unwrap();
    assert_eq!(outcome["outcome"], "ignored", "{outcome}");
    assert_eq!(detach.num_calls(), 0);
    assert_eq!(publish.num_calls(), 0);
    assert_eq!(mocked.metric_count(), 0);
}
