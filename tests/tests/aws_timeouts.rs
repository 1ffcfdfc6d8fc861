//! Every AWS call is bounded. Each function gets its SDK configuration the way `main.rs` builds
//! it (`shared::aws`, with that function's timeouts and retries), pointed at an endpoint that
//! accepts connections and never answers; one sample event from `events/` must then end in
//! the function's retryable error (rds-init, a custom resource: FAILED naming the call that
//! timed out) before the function's Lambda timeout. Each test prints how long that took and
//! how many attempts the stalled endpoint saw (run with `--no-capture` to read it).

use shared::sample_events::sample;
use std::future::Future;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use deploy_gate::DeployGate;
use harness::cfn_recorder::CfnResponseRecorder;
use harness::lambda_context::with_deadline_in as context;
use harness::stalling_server::StallingServer;
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde_json::{Value, json};
use shared::aws::AwsTimeouts;
use shared::custom_resource::{Responder, Status};
use shared::env_config::EnvVars;

/// The functions' `Timeout` in template.yaml (checked against the rendered template below).
const SPOT_INTERRUPTION_TIMEOUT: Duration = Duration::from_secs(30);
const SCALE_TO_ZERO_TIMEOUT: Duration = Duration::from_secs(60);
const SECRET_ROTATION_TIMEOUT: Duration = Duration::from_secs(60);
const RDS_INIT_TIMEOUT: Duration = Duration::from_secs(300);
const DEPLOY_GATE_TIMEOUT: Duration = Duration::from_secs(900);

/// The SDK configuration production builds for `timeouts`, with the stalled endpoint, a region
/// and test credentials given explicitly (no process environment, so tests stay parallel).
async fn sdk_config(endpoint: &StallingServer, timeouts: AwsTimeouts) -> SdkConfig {
    harness::moto::deployed_sdk_config(endpoint.endpoint_url(), timeouts).await
}

/// Runs one invocation; panics if it is still running when the Lambda timeout is up.
/// Prints and returns how long it took.
async fn within_lambda_timeout<T>(
    function: &str,
    timeout: Duration,
    endpoint: &StallingServer,
    invocation: impl Future<Output = T>,
) -> (T, Duration) {
    let started = Instant::now();
    let outcome = tokio::time::timeout(timeout, invocation)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{function} was still waiting on the stalled endpoint when its {} s Lambda \
                 timeout was up",
                timeout.as_secs()
            )
        });
    let elapsed = started.elapsed();
    eprintln!(
        "{function}: answered after {:.1} s ({} connections to the stalled endpoint; Lambda \
         timeout {} s)",
        elapsed.as_secs_f64(),
        endpoint.connections(),
        timeout.as_secs()
    );
    (outcome, elapsed)
}

/// The attempt timeout, not only the operation timeout, is in force: the stalled first
/// attempt was given up and retried.
fn assert_retried_a_stalled_attempt(function: &str, endpoint: &StallingServer) {
    assert!(
        endpoint.connections() >= 2,
        "{function}: {} connection(s); a stalled attempt should be retried before the call \
         gives up",
        endpoint.connections()
    );
}

fn assert_timed_out(diagnostic: &Diagnostic) {
    eprintln!("{}: {}", diagnostic.error_type, diagnostic.error_message);
    assert!(
        diagnostic.error_message.contains("timed out"),
        "not a timeout: {}",
        diagnostic.error_message
    );
}

#[tokio::test]
async fn spot_interruption_answers_a_stalled_endpoint_with_a_transient_error_in_time() {
    let endpoint = StallingServer::start().await;
    let sdk = sdk_config(&endpoint, AwsTimeouts::SPOT_INTERRUPTION).await;
    let config = spot_interruption::Config::from_env(&EnvVars::from_pairs([
        (
            "FLEET_TOPIC_ARN",
            "arn:aws:sns:us-east-1:123456789012:orchestrator-dev-fleet-events",
        ),
        ("METRIC_NAMESPACE", "Orchestrator/orchestrator-dev/Fleet"),
        ("ORCHESTRATOR_STACK", "orchestrator-dev"),
        ("PROGRESS_TABLE", "orchestrator-dev-SpotProgressTable-1ABC"),
    ]))
    .unwrap();
    let fleet = spot_interruption::SpotAws::new(
        config,
        aws_sdk_autoscaling::Client::new(&sdk),
        aws_sdk_sns::Client::new(&sdk),
        aws_sdk_dynamodb::Client::new(&sdk),
    );
    let event = LambdaEvent::new(
        sample("spot-interruption", "spot-interruption-warning.json"),
        context(SPOT_INTERRUPTION_TIMEOUT),
    );

    let (result, _) = within_lambda_timeout(
        "spot-interruption",
        SPOT_INTERRUPTION_TIMEOUT,
        &endpoint,
        spot_interruption::handle(event, &fleet),
    )
    .await;

    let diagnostic = Diagnostic::from(result.expect_err("a stalled endpoint fails the invocation"));
    assert_eq!(
        diagnostic.error_type, "RetryableAwsError",
        "{}",
        diagnostic.error_message
    );
    assert_timed_out(&diagnostic);
    assert_retried_a_stalled_attempt("spot-interruption", &endpoint);
}

#[tokio::test]
async fn scale_to_zero_answers_a_stalled_endpoint_with_a_retryable_error_in_time() {
    let endpoint = StallingServer::start().await;
    let sdk = sdk_config(&endpoint, AwsTimeouts::SCALE_TO_ZERO).await;
    let config = scale_to_zero::config::Config::from_env(&EnvVars::from_pairs([
        (
            "QUEUE_METRIC_NAMESPACE",
            "Orchestrator/orchestrator-dev/Queue",
        ),
        (
            "NOTIFY_TOPIC_ARN",
            "arn:aws:sns:us-east-1:123456789012:orchestrator-dev-notices",
        ),
        ("ORCHESTRATOR_STACK", "orchestrator-dev"),
    ]))
    .unwrap();
    let function = scale_to_zero::ScaleToZero::new(
        config,
        scale_to_zero::aws::AwsFleet::new(
            aws_sdk_autoscaling::Client::new(&sdk),
            aws_sdk_cloudwatch::Client::new(&sdk),
            aws_sdk_sns::Client::new(&sdk),
        ),
    );
    let event = LambdaEvent::new(
        sample("scale-to-zero", "sns-idle-alarm.json"),
        context(SCALE_TO_ZERO_TIMEOUT),
    );

    let (result, _) = within_lambda_timeout(
        "scale-to-zero",
        SCALE_TO_ZERO_TIMEOUT,
        &endpoint,
        function.handle(event),
    )
    .await;

    let error = result.expect_err("a stalled endpoint fails the invocation");
    assert!(error.is_transient(), "{error}");
    let diagnostic = Diagnostic::from(error);
    assert_eq!(
        diagnostic.error_type, "RetryableAwsError",
        "{}",
        diagnostic.error_message
    );
    assert_timed_out(&diagnostic);
    assert_retried_a_stalled_attempt("scale-to-zero", &endpoint);
}

#[tokio::test]
async fn secret_rotation_answers_a_stalled_endpoint_with_a_retryable_error_in_time() {
    let endpoint = StallingServer::start().await;
    let sdk = sdk_config(&endpoint, AwsTimeouts::SECRET_ROTATION).await;
    let rotator = secret_rotation::Rotator::new(
        aws_sdk_secretsmanager::Client::new(&sdk),
        secret_rotation::config::RotationConfig::from_env(&EnvVars::from_pairs::<&str, &str>([]))
            .unwrap(),
    );
    let event = LambdaEvent::new(
        sample("secret-rotation", "createSecret.json"),
        context(SECRET_ROTATION_TIMEOUT),
    );

    let (result, _) = within_lambda_timeout(
        "secret-rotation",
        SECRET_ROTATION_TIMEOUT,
        &endpoint,
        rotator.handle(event),
    )
    .await;

    let diagnostic = Diagnostic::from(result.expect_err("a stalled endpoint fails the step"));
    assert_eq!(
        diagnostic.error_type, "RetryableAwsError",
        "{}",
        diagnostic.error_message
    );
    assert_timed_out(&diagnostic);
    assert!(
        diagnostic.error_message.contains("DescribeSecret"),
        "{}",
        diagnostic.error_message
    );
    assert_retried_a_stalled_attempt("secret-rotation", &endpoint);
}

/// A custom resource has no "retry me" for CloudFormation: the request is answered FAILED,
/// with the Secrets Manager call that timed out as the reason, long before the responder's
/// own deadline guard (5 s before the Lambda deadline) would have stopped the handler.
#[tokio::test]
async fn rds_init_answers_failed_naming_the_timed_out_secret_read_in_time() {
    let endpoint = StallingServer::start().await;
    let recorder = CfnResponseRecorder::start().await;
    let sdk = sdk_config(&endpoint, AwsTimeouts::RDS_INIT).await;
    let resource = rds_init::TenantDatabases::new(
        aws_sdk_secretsmanager::Client::new(&sdk),
        rds_init::Config::from_env(&EnvVars::from_pairs::<&str, &str>([])).unwrap(),
    );
    let responder = Responder::new();
    let mut payload = sample("rds-init", "create.json");
    payload["ResponseURL"] = json!(recorder.response_url("rds-init-create"));
    let master_arn = payload["ResourceProperties"]["MasterSecretArn"]
        .as_str()
        .unwrap()
        .to_owned();
    let event = LambdaEvent::new(payload, context(RDS_INIT_TIMEOUT));

    let (answered, elapsed) = within_lambda_timeout(
        "rds-init",
        RDS_INIT_TIMEOUT,
        &endpoint,
        rds_init::handle(event, &resource, &responder),
    )
    .await;

    let answered = answered.expect("CloudFormation is answered");
    assert_eq!(answered.status, Status::Failed, "{}", answered.reason);
    let answers: Vec<Value> = recorder.requests().iter().map(|r| r.json()).collect();
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0]["Status"], "FAILED", "{}", answers[0]);
    let reason = answers[0]["Reason"].as_str().unwrap();
    eprintln!("FAILED: {reason}");
    assert!(
        reason.contains(&format!("could not read secret {master_arn}"))
            && reason.contains("timed out"),
        "the reason is the timed-out secret read, not the deadline guard: {reason}"
    );
    assert!(
        elapsed < RDS_INIT_TIMEOUT - Duration::from_secs(5),
        "answered after {elapsed:?}: only the deadline guard stopped the stalled call"
    );
    assert_retried_a_stalled_attempt("rds-init", &endpoint);
}

/// A CodeDeploy hook with a bake of 0 s (a real one bakes for minutes; the stalled calls are
/// the same): the alarm read, the verdict's publish and the answer to CodeDeploy all stall.
/// The verdict cannot reach CodeDeploy, so the invocation fails for Lambda to retry.
#[tokio::test]
async fn deploy_gate_answers_a_stalled_endpoint_with_a_retryable_error_in_time() {
    let endpoint = StallingServer::start().await;
    let sdk = sdk_config(&endpoint, AwsTimeouts::DEPLOY_GATE).await;
    let config = deploy_gate::config::Config::from_env(&EnvVars::from_pairs([
        (
            "ALERT_TOPIC_ARN",
            "arn:aws:sns:us-east-1:123456789012:orchestrator-dev-alerts",
        ),
        (
            "GATE_ALARM_NAMES",
            "orchestrator-dev-api-5xx,orchestrator-dev-api-latency",
        ),
        ("GATE_BAKE_SECONDS", "0"),
    ]))
    .unwrap();
    let function = DeployGate::new(
        config,
        deploy_gate::aws::AwsGate::new(
            aws_sdk_cloudwatch::Client::new(&sdk),
            aws_sdk_sns::Client::new(&sdk),
            aws_sdk_codedeploy::Client::new(&sdk),
            aws_sdk_cloudformation::Client::new(&sdk),
        ),
        Responder::new(),
    );
    let event = LambdaEvent::new(
        sample("deploy-gate", "codedeploy-hook.json"),
        context(DEPLOY_GATE_TIMEOUT),
    );

    let (result, _) = within_lambda_timeout(
        "deploy-gate",
        DEPLOY_GATE_TIMEOUT,
        &endpoint,
        function.handle(event),
    )
    .await;

    let diagnostic = Diagnostic::from(result.expect_err("an unanswered hook fails the invocation"));
    assert_eq!(
        diagnostic.error_type, "RetryableAwsError",
        "{}",
        diagnostic.error_message
    );
    assert_timed_out(&diagnostic);
    assert!(
        diagnostic
            .error_message
            .contains("PutLifecycleEventHookExecutionStatus"),
        "{}",
        diagnostic.error_message
    );
    assert_retried_a_stalled_attempt("deploy-gate", &endpoint);
}

#[test]
fn the_timeouts_used_here_are_the_lambda_timeouts_in_template_yaml() {
    let template =
        harness::scenario::stack::render(&harness::process::workspace_root(), "orch", &[]).unwrap();
    for (function, timeout) in [
        ("SpotInterruptionFunction", SPOT_INTERRUPTION_TIMEOUT),
        ("ScaleToZeroFunction", SCALE_TO_ZERO_TIMEOUT),
        ("SecretRotationFunction", SECRET_ROTATION_TIMEOUT),
        ("RdsInitFunction", RDS_INIT_TIMEOUT),
        ("DeployGateFunction", DEPLOY_GATE_TIMEOUT),
    ] {
        assert_eq!(
            template["Resources"][function]["Properties"]["Timeout"].as_u64(),
            Some(timeout.as_secs()),
            "{function}"
        );
    }
}
