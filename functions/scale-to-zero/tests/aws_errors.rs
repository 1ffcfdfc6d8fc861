//! AWS failures moto cannot produce: throttling and 5xx must fail the invocation so Lambda
//! retries it; a permanent refusal is reported as such. Also what a request carries: the
//! tick's describe asks for this stack's managed groups only.

use aws_sdk_autoscaling::operation::describe_auto_scaling_groups::DescribeAutoScalingGroupsOutput;
use aws_sdk_autoscaling::types::{AutoScalingGroup, Filter, TagDescription};
use aws_sdk_cloudwatch::operation::get_metric_data::GetMetricDataOutput;
use aws_sdk_cloudwatch::operation::put_metric_data::PutMetricDataOutput;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::MetricDataResult;
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use aws_smithy_runtime_api::http::{Response as HttpResponse, StatusCode};
use aws_smithy_types::body::SdkBody;
use lambda_runtime::{Context, Diagnostic, LambdaEvent};
use scale_to_zero::{ScaleToZero, aws::AwsFleet, config::Config};
use serde_json::json;

fn config() -> Config {
    Config {
        queue_metric_namespace: "Orchestrator/Queue".into(),
        queue_metric_name: "QueueDepth".into(),
        workflow_dimension: "Workflow".into(),
        target_backlog_per_instance: 1.0,
        notify_topic_arn: "arn:aws:sns:us-east-1:123456789012:idle".into(),
        orchestrator_stack: STACK.parse().unwrap(),
        idle_reread_window: std::time::Duration::from_secs(300),
        queue_lookback: std::time::Duration::from_secs(300),
        max_calls_in_flight: 8,
    }
}

const STACK: &str = "orchestrator-dev";

/// A group at desired 0 (max 4) with these tags.
fn group_at_zero(name: &str, tags: &[(&str, &str)]) -> AutoScalingGroup {
    let mut group = AutoScalingGroup::builder()
        .auto_scaling_group_name(name)
        .min_size(0)
        .max_size(4)
        .desired_capacity(0);
    for (key, value) in tags {
        group = group.tags(TagDescription::builder().key(*key).value(*value).build());
    }
    group.build()
}

/// An Auto Scaling (query protocol) error response, parsed by the SDK as the real one would be.
fn autoscaling_error(status: u16, code: &str) -> HttpResponse {
    let body = format!(
        "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{code} here</Message></Error><RequestId>r</RequestId></ErrorResponse>"
    );
    HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::from(body))
}

/// GetMetricData answering one queue-depth sample of a minute ago for the first workflow
/// (query `q0`).
fn queue_depth(depth: f64) -> Rule {
    let a_minute_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - 60;
    mock!(aws_sdk_cloudwatch::Client::get_metric_data).then_output(move || {
        GetMetricDataOutput::builder()
            .metric_data_results(
                MetricDataResult::builder()
                    .id("q0")
                    .timestamps(DateTime::from_secs(a_minute_ago))
                    .values(depth)
                    .build(),
            )
            .build()
    })
}

fn function(autoscaling: &[&Rule], cloudwatch: &[&Rule]) -> ScaleToZero {
    let autoscaling = mock_client!(aws_sdk_autoscaling, RuleMode::MatchAny, autoscaling);
    let cloudwatch = mock_client!(aws_sdk_cloudwatch, RuleMode::MatchAny, cloudwatch);
    let sns = mock_client!(aws_sdk_sns, RuleMode::MatchAny, &[]);
    ScaleToZero::new(config(), AwsFleet::new(autoscaling, cloudwatch, sns))
}

async fn invoke(function: &ScaleToZero) -> Diagnostic {
    let tick = json!({"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}});
    let error = function
        .handle(LambdaEvent::new(tick, Context::default()))
        .await
        .expect_err("the invocation must fail");
    Diagnostic::from(error)
}

#[tokio::test]
async fn throttled_describe_fails_the_tick_for_a_retry() {
    let throttled = mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups)
        .sequence()
        .http_response(|| autoscaling_error(400, "Throttling"))
        .repeatedly()
        .build();
    let diagnostic = invoke(&function(&[&throttled], &[])).await;
    assert_eq!(diagnostic.error_type, "RetryableAwsError", "{diagnostic:?}");
    assert!(
        diagnostic
            .error_message
            .contains("DescribeAutoScalingGroups"),
        "{diagnostic:?}"
    );
    assert!(
        diagnostic.error_message.contains("Throttling"),
        "{diagnostic:?}"
    );
}

#[tokio::test]
async fn access_denied_is_reported_as_not_worth_retrying() {
    let denied = mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups)
        .sequence()
        .http_response(|| autoscaling_error(403, "AccessDenied"))
        .repeatedly()
        .build();
    let diagnostic = invoke(&function(&[&denied], &[])).await;
    assert_eq!(diagnostic.error_type, "AwsRequestFailed", "{diagnostic:?}");
    assert!(
        diagnostic.error_message.contains("AccessDenied"),
        "{diagnostic:?}"
    );
}

#[tokio::test]
async fn a_failed_wake_still_publishes_the_backlog_and_asks_for_a_retry() {
    let group = group_at_zero(
        "gpu-img2vid",
        &[
            ("orchestrator:managed", "true"),
            ("orchestrator:stack", STACK),
            ("orchestrator:workflow", "img2vid"),
        ],
    );
    let describe =
        mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups).then_output(move || {
            DescribeAutoScalingGroupsOutput::builder()
                .auto_scaling_groups(group.clone())
                .build()
        });
    let set_capacity = mock!(aws_sdk_autoscaling::Client::set_desired_capacity)
        .sequence()
        .http_response(|| autoscaling_error(503, "ServiceUnavailable"))
        .repeatedly()
        .build();
    let depth = queue_depth(3.0);
    let put = mock!(aws_sdk_cloudwatch::Client::put_metric_data)
        .match_requests(|req| {
            req.metric_data().len() == 1 && req.metric_data()[0].value() == Some(3.0)
        })
        .then_output(|| PutMetricDataOutput::builder().build());
    let diagnostic = invoke(&function(&[&describe, &set_capacity], &[&depth, &put])).await;
    assert_eq!(diagnostic.error_type, "RetryableAwsError", "{diagnostic:?}");
    assert!(
        diagnostic
            .error_message
            .contains("1 of 1 capacity changes failed"),
        "{diagnostic:?}"
    );
    assert_eq!(
        put.num_calls(),
        1,
        "the backlog is published although the wake failed"
    );
    assert!(set_capacity.num_calls() >= 1);
}

/// The filters of a describe request, as (name, values) pairs.
fn filters(filters: &[Filter]) -> Vec<(String, Vec<String>)> {
    filters
        .iter()
        .map(|f| (f.name().unwrap_or_default().to_owned(), f.values().to_vec()))
        .collect()
}

#[tokio::test]
async fn the_tick_asks_for_this_stacks_managed_groups_and_wakes_only_ours() {
    // Auto Scaling filters server-side; should another stack's group slip through anyway
    // (same workflow slug, at zero, work queued), it is set aside, not woken and not counted
    // as a second claim on the workflow.
    let ours = group_at_zero(
        "orchestrator-dev-img2vid",
        &[
            ("orchestrator:managed", "true"),
            ("orchestrator:stack", STACK),
            ("orchestrator:workflow", "img2vid"),
        ],
    );
    let theirs = group_at_zero(
        "orchestrator-staging-img2vid",
        &[
            ("orchestrator:managed", "true"),
            ("orchestrator:stack", "orchestrator-staging"),
            ("orchestrator:workflow", "img2vid"),
        ],
    );
    let describe = mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups)
        .match_requests(|req| {
            filters(req.filters())
                == [
                    (
                        "tag:orchestrator:managed".to_owned(),
                        vec!["true".to_owned()],
                    ),
                    ("tag:orchestrator:stack".to_owned(), vec![STACK.to_owned()]),
                ]
                && req.max_records() == Some(100)
        })
        .then_output(move || {
            DescribeAutoScalingGroupsOutput::builder()
                .auto_scaling_groups(theirs.clone())
                .auto_scaling_groups(ours.clone())
                .build()
        });
    let set_capacity = mock!(aws_sdk_autoscaling::Client::set_desired_capacity)
        .match_requests(|req| {
            req.auto_scaling_group_name() == Some("orchestrator-dev-img2vid")
                && req.desired_capacity() == Some(2)
        })
        .then_output(|| {
            aws_sdk_autoscaling::operation::set_desired_capacity::SetDesiredCapacityOutput::builder(
            )
            .build()
        });
    let depth = queue_depth(2.0);
    let put = mock!(aws_sdk_cloudwatch::Client::put_metric_data)
        .then_output(|| PutMetricDataOutput::builder().build());
    let function = function(&[&describe, &set_capacity], &[&depth, &put]);

    let tick = json!({"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}});
    // On a task of its own, as the runtime may run it: the handler's future is `Send`.
    let report = tokio::spawn(async move {
        function
            .handle(LambdaEvent::new(tick, Context::default()))
            .await
            .unwrap_or_else(|e| panic!("the tick failed: {e}"))
    })
    .await
    .unwrap();

    assert_eq!(describe.num_calls(), 1);
    assert_eq!(set_capacity.num_calls(), 1, "{report}");
    assert_eq!(
        report["changes"],
        json!([{"group": "orchestrator-dev-img2vid", "workflow": "img2vid", "from": 0, "to": 2, "reason": "wake"}])
    );
    assert_eq!(
        report["leftAlone"],
        json!([{"group": "orchestrator-staging-img2vid", "workflow": null,
                "reason": "other stack (orchestrator:stack=orchestrator-staging)"}])
    );
    assert_eq!(report["backlogPublished"], 1);
}

#[tokio::test]
async fn a_wake_whose_raise_fails_is_retried_in_full_by_the_next_delivery() {
    let group = group_at_zero(
        "gpu-img2vid",
        &[
            ("orchestrator:managed", "true"),
            ("orchestrator:stack", STACK),
            ("orchestrator:workflow", "img2vid"),
        ],
    );
    let describe =
        mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups).then_output(move || {
            DescribeAutoScalingGroupsOutput::builder()
                .auto_scaling_groups(group.clone())
                .build()
        });
    // Throttled once (all three SDK attempts), then accepted.
    let set_capacity = mock!(aws_sdk_autoscaling::Client::set_desired_capacity)
        .match_requests(|req| req.desired_capacity() == Some(3))
        .sequence()
        .http_response(|| autoscaling_error(400, "Throttling"))
        .times(3)
        .output(|| {
            aws_sdk_autoscaling::operation::set_desired_capacity::SetDesiredCapacityOutput::builder(
            )
            .build()
        })
        .build();
    let function = function(&[&describe, &set_capacity], &[]);
    let wake = || {
        LambdaEvent::new(
            json!({"action": "wake", "workflow": "img2vid", "queued": 3}),
            Context::default(),
        )
    };
    let error = function
        .handle(wake())
        .await
        .expect_err("the throttled raise fails the invocation");
    let diagnostic = Diagnostic::from(error);
    assert_eq!(diagnostic.error_type, "RetryableAwsError", "{diagnostic:?}");
    assert!(
        diagnostic
            .error_message
            .contains("SetDesiredCapacity (gpu-img2vid to 3)"),
        "{diagnostic:?}"
    );
    // The same environment gets the retry: the failed turn settled nothing, so it raises.
    let report = function.handle(wake()).await.unwrap();
    assert_eq!(
        report["changes"],
        json!([{"group": "gpu-img2vid", "workflow": "img2vid", "from": 0, "to": 3, "reason": "wake"}])
    );
    assert_eq!(set_capacity.num_calls(), 4);
}
