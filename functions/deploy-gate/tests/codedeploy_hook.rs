//! The CodeDeploy hook (moto lacks CodeDeploy, so the clients are mocked): the gate from the
//! environment decides, and `PutLifecycleEventHookExecutionStatus` carries `Succeeded` only on
//! a pass — `Failed` on a breach, on an API error and when no gate is configured.

use aws_sdk_cloudwatch::operation::describe_alarms::{DescribeAlarmsError, DescribeAlarmsOutput};
use aws_sdk_cloudwatch::types::{MetricAlarm, StateValue};
use aws_sdk_codedeploy::operation::put_lifecycle_event_hook_execution_status::{
    PutLifecycleEventHookExecutionStatusError, PutLifecycleEventHookExecutionStatusOutput,
};
use aws_sdk_codedeploy::types::LifecycleEventStatus;
use aws_sdk_codedeploy::types::error::LifecycleEventAlreadyCompletedException;
use aws_sdk_sns::operation::publish::PublishOutput;
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use aws_smithy_types::error::ErrorMetadata;
use deploy_gate::{DeployGate, aws::AwsGate, config::Config};
use lambda_runtime::{Context, Diagnostic, LambdaEvent};
use serde_json::{Value, json};
use shared::{custom_resource::Responder, env_config::EnvVars};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:alerts";
const DEPLOYMENT: &str = "d-8RTX3C0LE";

fn hook() -> Value {
    json!({"DeploymentId": DEPLOYMENT, "LifecycleEventHookExecutionId": "exec-1"})
}

fn context() -> Context {
    let mut context = Context::default();
    let deadline = SystemTime::now() + Duration::from_secs(60);
    context.deadline = deadline.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    context
}

fn alarms(state: StateValue) -> Rule {
    mock!(aws_sdk_cloudwatch::Client::describe_alarms).then_output(move || {
        DescribeAlarmsOutput::builder()
            .metric_alarms(
                MetricAlarm::builder()
                    .alarm_name("api-5xx")
                    .state_value(state.clone())
                    .build(),
            )
            .build()
    })
}

fn answer(status: LifecycleEventStatus) -> Rule {
    mock!(aws_sdk_codedeploy::Client::put_lifecycle_event_hook_execution_status)
        .match_requests(move |r| {
            r.deployment_id() == Some(DEPLOYMENT)
                && r.lifecycle_event_hook_execution_id() == Some("exec-1")
                && r.status() == Some(&status)
        })
        .then_output(|| PutLifecycleEventHookExecutionStatusOutput::builder().build())
}

fn publish() -> Rule {
    mock!(aws_sdk_sns::Client::publish)
        .then_output(|| PublishOutput::builder().message_id("m").build())
}

fn function(
    gate_env: &[(&str, &str)],
    cloudwatch: &[&Rule],
    codedeploy: &[&Rule],
    sns: &[&Rule],
) -> DeployGate {
    let mut env = vec![("ALERT_TOPIC_ARN", TOPIC)];
    env.extend_from_slice(gate_env);
    let config = Config::from_env(&EnvVars::from_pairs(env)).unwrap();
    let aws = AwsGate::new(
        mock_client!(aws_sdk_cloudwatch, RuleMode::MatchAny, cloudwatch),
        mock_client!(aws_sdk_sns, RuleMode::MatchAny, sns),
        mock_client!(aws_sdk_codedeploy, RuleMode::MatchAny, codedeploy),
        mock_client!(aws_sdk_cloudformation, RuleMode::MatchAny, &[]),
    );
    DeployGate::new(config, aws, Responder::new())
}

const GATE: &[(&str, &str)] = &[("GATE_ALARM_NAMES", "api-5xx"), ("GATE_BAKE_SECONDS", "0")];

#[tokio::test]
async fn a_pass_answers_succeeded_and_publishes_the_verdict() {
    let (ok, succeeded, published) = (
        alarms(StateValue::Ok),
        answer(LifecycleEventStatus::Succeeded),
        publish(),
    );
    let verdict = function(GATE, &[&ok], &[&succeeded], &[&published])
        .handle(LambdaEvent::new(hook(), context()))
        .await
        .unwrap();
    assert_eq!(verdict["verdict"], "pass", "{verdict}");
    assert_eq!(verdict["deploymentId"], DEPLOYMENT);
    assert_eq!(verdict["trigger"], "codedeploy");
    assert_eq!(verdict["published"], true);
    assert_eq!((succeeded.num_calls(), published.num_calls()), (1, 1));
}

#[tokio::test]
async fn a_breach_answers_failed() {
    let (alarm, failed, published) = (
        alarms(StateValue::Alarm),
        answer(LifecycleEventStatus::Failed),
        publish(),
    );
    let verdict = function(GATE, &[&alarm], &[&failed], &[&published])
        .handle(LambdaEvent::new(hook(), context()))
        .await
        .unwrap();
    assert_eq!(verdict["verdict"], "fail", "{verdict}");
    assert!(
        verdict["reason"]
            .as_str()
            .unwrap()
            .contains("alarm:api-5xx"),
        "{verdict}"
    );
    assert_eq!(failed.num_calls(), 1);
}

#[tokio::test]
async fn an_api_error_answers_failed_never_succeeded() {
    for code in ["AccessDenied", "Throttling"] {
        let error = mock!(aws_sdk_cloudwatch::Client::describe_alarms).then_error(move || {
            DescribeAlarmsError::generic(ErrorMetadata::builder().code(code).message("no").build())
        });
        let (failed, published) = (answer(LifecycleEventStatus::Failed), publish());
        let verdict = function(GATE, &[&error], &[&failed], &[&published])
            .handle(LambdaEvent::new(hook(), context()))
            .await
            .unwrap();
        assert_eq!(verdict["verdict"], "fail", "{code}: {verdict}");
        assert!(
            verdict["reason"]
                .as_str()
                .unwrap()
                .contains("could not be checked"),
            "{verdict}"
        );
        assert_eq!(verdict["checks"][0]["status"], "error", "{verdict}");
        assert_eq!(failed.num_calls(), 1, "{code}");
    }
}

#[tokio::test]
async fn without_a_configured_gate_the_hook_fails_and_says_why() {
    let (failed, published) = (answer(LifecycleEventStatus::Failed), publish());
    let verdict = function(&[], &[], &[&failed], &[&published])
        .handle(LambdaEvent::new(hook(), context()))
        .await
        .unwrap();
    assert_eq!(verdict["verdict"], "fail");
    assert!(
        verdict["reason"]
            .as_str()
            .unwrap()
            .contains("GATE_ALARM_NAMES"),
        "{verdict}"
    );
    assert_eq!(failed.num_calls(), 1);
}

#[tokio::test]
async fn a_hook_already_answered_counts_as_answered_and_a_throttled_answer_is_retried() {
    let ok = alarms(StateValue::Ok);
    let done = mock!(aws_sdk_codedeploy::Client::put_lifecycle_event_hook_execution_status)
        .then_error(|| {
            PutLifecycleEventHookExecutionStatusError::LifecycleEventAlreadyCompletedException(
                LifecycleEventAlreadyCompletedException::builder()
                    .message("already")
                    .build(),
            )
        });
    let published = publish();
    let verdict = function(GATE, &[&ok], &[&done], &[&published])
        .handle(LambdaEvent::new(hook(), context()))
        .await
        .unwrap();
    assert_eq!(verdict["verdict"], "pass");

    let throttled = mock!(aws_sdk_codedeploy::Client::put_lifecycle_event_hook_execution_status)
        .then_error(|| {
            PutLifecycleEventHookExecutionStatusError::generic(
                ErrorMetadata::builder().code("ThrottlingException").build(),
            )
        });
    let error = function(GATE, &[&ok], &[&throttled], &[&published])
        .handle(LambdaEvent::new(hook(), context()))
        .await
        .unwrap_err();
    let diagnostic = Diagnostic::from(error);
    assert_eq!(diagnostic.error_type, "RetryableAwsError", "{diagnostic:?}");
    assert!(
        diagnostic.error_message.contains(DEPLOYMENT),
        "{diagnostic:?}"
    );
}

#[tokio::test]
async fn a_failed_publish_never_changes_the_verdict() {
    let (ok, succeeded) = (
        alarms(StateValue::Ok),
        answer(LifecycleEventStatus::Succeeded),
    );
    let refused = mock!(aws_sdk_sns::Client::publish).then_error(|| {
        aws_sdk_sns::operation::publish::PublishError::generic(
            ErrorMetadata::builder().code("AuthorizationError").build(),
        )
    });
    let verdict = function(GATE, &[&ok], &[&succeeded], &[&refused])
        .handle(LambdaEvent::new(hook(), context()))
        .await
        .unwrap();
    assert_eq!(
        (verdict["verdict"].as_str(), verdict["published"].as_bool()),
        (Some("pass"), Some(false))
    );
    assert_eq!(succeeded.num_calls(), 1);
}

/// An alarm that only the second page of `DescribeAlarms` lists still fails the gate: the
/// adapter follows every page (the SDK's paginator).
#[tokio::test]
async fn an_alarm_on_the_second_page_of_describe_alarms_fails_the_gate() {
    let page = |name: &'static str, state: StateValue, next: Option<&'static str>| {
        DescribeAlarmsOutput::builder()
            .metric_alarms(
                MetricAlarm::builder()
                    .alarm_name(name)
                    .state_value(state)
                    .build(),
            )
            .set_next_token(next.map(str::to_owned))
            .build()
    };
    let first = mock!(aws_sdk_cloudwatch::Client::describe_alarms)
        .match_requests(|r| r.next_token().is_none())
        .then_output(move || page("api-5xx", StateValue::Ok, Some("page-2")));
    let second = mock!(aws_sdk_cloudwatch::Client::describe_alarms)
        .match_requests(|r| r.next_token() == Some("page-2"))
        .then_output(move || page("api-latency", StateValue::Alarm, None));
    let (failed, published) = (answer(LifecycleEventStatus::Failed), publish());
    let gate = &[
        ("GATE_ALARM_NAMES", "api-5xx,api-latency"),
        ("GATE_BAKE_SECONDS", "0"),
    ];
    let verdict = function(gate, &[&first, &second], &[&failed], &[&published])
        .handle(LambdaEvent::new(hook(), context()))
        .await
        .unwrap();
    assert_eq!(verdict["verdict"], "fail", "{verdict}");
    assert!(
        verdict["reason"]
            .as_str()
            .unwrap()
            .contains("alarm:api-latency"),
        "{verdict}"
    );
    assert_eq!((first.num_calls(), second.num_calls()), (1, 1));
}
