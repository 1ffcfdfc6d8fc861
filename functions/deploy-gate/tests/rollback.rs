//! `Custom::DeployGate` Updates while CloudFormation rolls back (the status and API failures
//! are mocked; tests/tests/deploy_gate.rs reads a real stack from moto): a rollback answers
//! SUCCESS without reading CloudWatch, and a status that cannot be read never skips the gate.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudformation::operation::describe_stacks::{
    DescribeStacksError, DescribeStacksOutput,
};
use aws_sdk_cloudformation::types::{Stack, StackStatus};
use aws_sdk_cloudwatch::operation::describe_alarms::DescribeAlarmsOutput;
use aws_sdk_cloudwatch::types::{MetricAlarm, StateValue};
use aws_sdk_sns::operation::publish::PublishOutput;
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use aws_smithy_types::DateTime;
use aws_smithy_types::error::ErrorMetadata;
use deploy_gate::{DeployGate, aws::AwsGate, config::Config};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};
use shared::{custom_resource::Responder, env_config::EnvVars};

const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:alerts";
const STACK: &str = "arn:aws:cloudformation:us-east-1:123456789012:stack/orchestrator/1a2b";
const PHYSICAL_ID: &str = "DeployGate-req-create";

/// A one-shot stand-in for the pre-signed response URL: answers 200 to one PUT and hands
/// back its body.
fn response_url() -> (String, JoinHandle<Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/cfn-response", listener.local_addr().unwrap());
    let receiver = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .unwrap();
        serde_json::from_slice(&body).unwrap()
    });
    (url, receiver)
}

fn update(response_url: &str) -> Value {
    let properties = json!({
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:gate",
        "Release": "2026.11.21-3", "AlarmNames": ["api-5xx"], "BakeSeconds": "0",
    });
    json!({
        "RequestType": "Update",
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:gate",
        "ResponseURL": response_url,
        "StackId": STACK,
        "RequestId": "req-rollback",
        "LogicalResourceId": "DeployGate",
        "PhysicalResourceId": PHYSICAL_ID,
        "ResourceType": "Custom::DeployGate",
        "ResourceProperties": properties,
        "OldResourceProperties": properties,
    })
}

fn context() -> Context {
    let mut context = Context::default();
    let deadline = SystemTime::now() + Duration::from_secs(60);
    context.deadline = deadline.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    context
}

fn stack_in(status: StackStatus) -> Rule {
    mock!(aws_sdk_cloudformation::Client::describe_stacks)
        .match_requests(|r| r.stack_name() == Some(STACK))
        .then_output(move || {
            DescribeStacksOutput::builder()
                .stacks(
                    Stack::builder()
                        .stack_id(STACK)
                        .stack_name("orchestrator")
                        .creation_time(DateTime::from_secs(1_700_000_000))
                        .stack_status(status.clone())
                        .build(),
                )
                .build()
        })
}

fn alarm_firing() -> Rule {
    mock!(aws_sdk_cloudwatch::Client::describe_alarms).then_output(|| {
        DescribeAlarmsOutput::builder()
            .metric_alarms(
                MetricAlarm::builder()
                    .alarm_name("api-5xx")
                    .state_value(StateValue::Alarm)
                    .build(),
            )
            .build()
    })
}

/// Publishes whose `verdict` attribute is `label`.
fn publish(label: &'static str) -> Rule {
    mock!(aws_sdk_sns::Client::publish)
        .match_requests(move |r| {
            r.message_attributes()
                .and_then(|a| a.get("verdict"))
                .and_then(|v| v.string_value())
                == Some(label)
        })
        .then_output(|| PublishOutput::builder().message_id("m").build())
}

fn function(cloudformation: &[&Rule], cloudwatch: &[&Rule], sns: &[&Rule]) -> DeployGate {
    let config = Config::from_env(&EnvVars::from_pairs([("ALERT_TOPIC_ARN", TOPIC)])).unwrap();
    let aws = AwsGate::new(
        mock_client!(aws_sdk_cloudwatch, RuleMode::MatchAny, cloudwatch),
        mock_client!(aws_sdk_sns, RuleMode::MatchAny, sns),
        mock_client!(aws_sdk_codedeploy, RuleMode::MatchAny, &[]),
        mock_client!(aws_sdk_cloudformation, RuleMode::MatchAny, cloudformation),
    );
    DeployGate::new(
        config,
        aws,
        Responder::new().with_retries(1, Duration::from_millis(10)),
    )
}

#[tokio::test]
async fn an_update_during_a_rollback_succeeds_without_a_bake_and_publishes_the_skip() {
    let (rolling_back, firing, skipped) = (
        stack_in(StackStatus::UpdateRollbackInProgress),
        alarm_firing(),
        publish("skipped"),
    );
    let gate = function(&[&rolling_back], &[&firing], &[&skipped]);
    let (url, receiver) = response_url();
    gate.handle(LambdaEvent::new(update(&url), context()))
        .await
        .unwrap();
    let answer = receiver.join().unwrap();

    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    assert_eq!(answer["PhysicalResourceId"], PHYSICAL_ID);
    let reason = answer["Reason"].as_str().unwrap();
    assert!(
        reason.contains("stack rolling back") && reason.contains("does not block a rollback"),
        "{reason}"
    );
    assert_eq!(answer["Data"]["Verdict"], "skipped", "{answer}");
    assert_eq!(
        (rolling_back.num_calls(), firing.num_calls()),
        (1, 0),
        "the stack status is read, CloudWatch is not"
    );
    assert_eq!(skipped.num_calls(), 1, "the skip reaches ALERT_TOPIC_ARN");
}

#[tokio::test]
async fn a_stack_status_that_cannot_be_read_never_skips_the_gate() {
    let denied = mock!(aws_sdk_cloudformation::Client::describe_stacks).then_error(|| {
        DescribeStacksError::generic(
            ErrorMetadata::builder()
                .code("AccessDenied")
                .message("not authorized to perform: cloudformation:DescribeStacks")
                .build(),
        )
    });
    let missing = mock!(aws_sdk_cloudformation::Client::describe_stacks)
        .then_output(|| DescribeStacksOutput::builder().build());
    for (unreadable, why) in [(&denied, "AccessDenied"), (&missing, "no such stack")] {
        let (firing, failed) = (alarm_firing(), publish("fail"));
        let gate = function(&[unreadable], &[&firing], &[&failed]);
        let (url, receiver) = response_url();
        gate.handle(LambdaEvent::new(update(&url), context()))
            .await
            .unwrap();
        let answer = receiver.join().unwrap();

        assert_eq!(answer["Status"], "FAILED", "{why}: {answer}");
        let reason = answer["Reason"].as_str().unwrap();
        assert!(
            reason.contains("breached") && reason.contains("alarm:api-5xx"),
            "{why}: {reason}"
        );
        assert!(
            reason.contains("stack status could not be read") && reason.contains(why),
            "{why}: {reason}"
        );
        assert!(firing.num_calls() >= 1, "{why}: the gate ran");
        assert_eq!(
            failed.num_calls(),
            1,
            "{why}: the fail verdict is published"
        );
    }
}
