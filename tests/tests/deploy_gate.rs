//! deploy-gate against moto through the real Rust SDK (CloudWatch through the CBOR bridge):
//! alarms set with `SetAlarmState`, ALB metrics put with `PutMetricData`, verdicts read back
//! from an SQS queue subscribed to the alert topic, CloudFormation answers over real HTTP,
//! stack statuses read from a real moto stack.

use std::time::{Duration, Instant};

use aws_sdk_cloudwatch::types::{
    ComparisonOperator, Dimension, MetricDatum, StateValue, Statistic, StatisticSet,
};
use deploy_gate::{DeployGate, aws::AwsGate, config::Config};
use harness::cfn_recorder::CfnResponseRecorder;
use harness::cloudwatch_cbor::CborBridge;
use harness::lambda_context::with_deadline_in as context;
use harness::moto::Moto;
use harness::sns_inbox::SnsInbox;
use lambda_runtime::LambdaEvent;
use serde_json::{Value, json};
use shared::{custom_resource::Responder, env_config::EnvVars};

const LB: &str = "app/orchestrator-dev/50dc6c495c0c9188";

struct Stage {
    moto: Moto,
    _bridge: CborBridge,
    function: DeployGate,
    cloudwatch: aws_sdk_cloudwatch::Client,
    cloudformation: aws_sdk_cloudformation::Client,
    verdicts: SnsInbox,
}

impl Stage {
    async fn start() -> Stage {
        let moto = Moto::start().await;
        let sdk = moto.sdk_config().await;
        let bridge = CborBridge::start(moto.endpoint_url()).await;
        let cloudwatch = bridge.cloudwatch_client(&sdk);
        let sns = aws_sdk_sns::Client::new(&sdk);
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let cloudformation = aws_sdk_cloudformation::Client::new(&sdk);
        let topic_arn = sns
            .create_topic()
            .name("alerts")
            .send()
            .await
            .unwrap()
            .topic_arn
            .unwrap();
        let verdicts = SnsInbox::subscribe(&sns, &sqs, &topic_arn, "verdicts", &[]).await;
        let config = Config::from_env(&EnvVars::from_pairs([(
            "ALERT_TOPIC_ARN",
            topic_arn.as_str(),
        )]))
        .unwrap();
        let function = DeployGate::new(
            config,
            // moto has no CodeDeploy: hooks are tested with mocks (functions/deploy-gate/tests).
            AwsGate::new(
                cloudwatch.clone(),
                sns,
                aws_sdk_codedeploy::Client::new(&sdk),
                cloudformation.clone(),
            ),
            Responder::new().with_retries(5, Duration::from_millis(20)),
        );
        Stage {
            moto,
            _bridge: bridge,
            function,
            cloudwatch,
            cloudformation,
            verdicts,
        }
    }

    async fn alarm(&self, name: &str, state: StateValue) {
        if self
            .cloudwatch
            .describe_alarms()
            .alarm_names(name)
            .send()
            .await
            .unwrap()
            .metric_alarms()
            .is_empty()
        {
            self.cloudwatch
                .put_metric_alarm()
                .alarm_name(name)
                .namespace("AWS/ApplicationELB")
                .metric_name("HTTPCode_Target_5XX_Count")
                .statistic(Statistic::Sum)
                .period(60)
                .evaluation_periods(5)
                .threshold(5.0)
                .comparison_operator(ComparisonOperator::GreaterThanThreshold)
                .send()
                .await
                .unwrap();
        }
        self.cloudwatch
            .set_alarm_state()
            .alarm_name(name)
            .state_value(state)
            .state_reason("set by the test")
            .send()
            .await
            .unwrap();
    }

    /// One minute of ALB metrics for `target_group`.
    async fn traffic(
        &self,
        target_group: &str,
        requests: f64,
        errors: f64,
        seconds: f64,
        healthy: f64,
        unhealthy: f64,
    ) {
        let dimensions = [("TargetGroup", target_group), ("LoadBalancer", LB)]
            .map(|(n, v)| Dimension::builder().name(n).value(v).build());
        let datum = |name: &str, value: f64| {
            MetricDatum::builder()
                .metric_name(name)
                .set_dimensions(Some(dimensions.to_vec()))
                .value(value)
                .build()
        };
        let latency = MetricDatum::builder()
            .metric_name("TargetResponseTime")
            .set_dimensions(Some(dimensions.to_vec()))
            .statistic_values(
                StatisticSet::builder()
                    .sample_count(requests)
                    .sum(seconds * requests)
                    .minimum(0.0)
                    .maximum(seconds * 2.0)
                    .build(),
            )
            .build();
        let mut data = vec![
            datum("RequestCount", requests),
            datum("HealthyHostCount", healthy),
            datum("UnHealthyHostCount", unhealthy),
            latency,
        ];
        if errors > 0.0 {
            data.push(datum("HTTPCode_Target_5XX_Count", errors));
        }
        self.cloudwatch
            .put_metric_data()
            .namespace("AWS/ApplicationELB")
            .set_metric_data(Some(data))
            .send()
            .await
            .unwrap();
    }

    async fn direct(&self, gate: Value) -> Value {
        self.function
            .handle(LambdaEvent::new(gate, context(Duration::from_secs(60))))
            .await
            .unwrap_or_else(|e| panic!("invocation failed: {e}"))
    }

    /// Verdicts delivered to the alert topic's queue since the last call: (verdict, its
    /// `verdict` message attribute).
    async fn published(&self) -> Vec<(Value, String)> {
        self.verdicts
            .drain_json()
            .await
            .into_iter()
            .map(|envelope| {
                let attribute = envelope["MessageAttributes"]["verdict"]["Value"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let verdict = serde_json::from_str(envelope["Message"].as_str().unwrap()).unwrap();
                (verdict, attribute)
            })
            .collect()
    }
}

fn check<'a>(verdict: &'a Value, name: &str) -> &'a Value {
    verdict["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {verdict}"))
}

#[tokio::test]
async fn an_alarm_in_alarm_fails_and_all_ok_with_healthy_metrics_passes() {
    let stage = Stage::start().await;
    stage.alarm("api-5xx", StateValue::Ok).await;
    stage.alarm("api-latency", StateValue::Ok).await;
    stage
        .traffic("targetgroup/api/1", 100.0, 1.0, 0.2, 4.0, 0.0)
        .await;
    let gate = json!({
        "Release": "2026.11.22-1", "AlarmNames": ["api-5xx", "api-latency"], "BakeSeconds": "0",
        "TargetGroup": "targetgroup/api/1", "LoadBalancer": LB,
    });

    let verdict = stage.direct(gate.clone()).await;
    assert_eq!(verdict["verdict"], "pass", "{verdict}");
    assert_eq!(check(&verdict, "alarm:api-5xx")["value"], "OK");
    assert_eq!(check(&verdict, "error-rate")["value"], 1.0);
    assert_eq!(check(&verdict, "error-rate")["threshold"], 5.0);
    assert_eq!(check(&verdict, "error-rate")["windowSeconds"], 300);
    assert!(
        (check(&verdict, "response-time")["value"].as_f64().unwrap() - 0.2).abs() < 1e-9,
        "{verdict}"
    );
    assert_eq!(check(&verdict, "unhealthy-hosts")["value"], 0.0);

    stage.alarm("api-latency", StateValue::Alarm).await;
    let verdict = stage.direct(gate).await;
    assert_eq!(verdict["verdict"], "fail", "{verdict}");
    assert_eq!(check(&verdict, "alarm:api-latency")["status"], "breached");
    assert!(
        verdict["reason"]
            .as_str()
            .unwrap()
            .contains("alarm:api-latency"),
        "{verdict}"
    );

    let published = stage.published().await;
    let labels: Vec<&str> = published
        .iter()
        .map(|(_, attribute)| attribute.as_str())
        .collect();
    assert_eq!(
        labels,
        ["pass", "fail"],
        "every verdict reaches ALERT_TOPIC_ARN"
    );
    assert_eq!(published[1].0["release"], "2026.11.22-1");
}

#[tokio::test]
async fn error_rate_ten_of_a_hundred_fails_one_passes_and_no_datapoints_is_inconclusive() {
    let stage = Stage::start().await;
    stage
        .traffic("targetgroup/bad/1", 100.0, 10.0, 0.1, 4.0, 0.0)
        .await;
    stage
        .traffic("targetgroup/good/1", 100.0, 1.0, 0.1, 4.0, 0.0)
        .await;
    let gate = |target_group: &str| {
        json!({"TargetGroup": target_group, "LoadBalancer": LB, "BakeSeconds": "0",
               "Checks": {"ResponseTime": {"Enabled": "false"}, "UnhealthyHosts": {"Enabled": "false"}}})
    };

    let bad = stage.direct(gate("targetgroup/bad/1")).await;
    assert_eq!(bad["verdict"], "fail", "{bad}");
    assert_eq!(check(&bad, "error-rate")["value"], 10.0);
    assert!(
        bad["reason"]
            .as_str()
            .unwrap()
            .contains("error-rate 10% > 5% over 300 s"),
        "{bad}"
    );

    let good = stage.direct(gate("targetgroup/good/1")).await;
    assert_eq!(good["verdict"], "pass", "{good}");

    let quiet = stage
        .direct(
            json!({"TargetGroup": "targetgroup/quiet/1", "LoadBalancer": LB, "BakeSeconds": "0"}),
        )
        .await;
    assert_eq!(quiet["verdict"], "inconclusive", "{quiet}");
    assert_eq!(quiet["noData"], "inconclusive");
    for name in ["error-rate", "response-time", "unhealthy-hosts"] {
        assert_eq!(check(&quiet, name)["status"], "no-data", "{quiet}");
    }
    assert!(
        quiet["reason"]
            .as_str()
            .unwrap()
            .starts_with("inconclusive: no data"),
        "{quiet}"
    );

    // Ratios come from plain metric queries, one GetMetricData per poll.
    let calls = stage.moto.recorded_actions();
    assert_eq!(
        calls
            .iter()
            .filter(|a| a.as_str() == "monitoring:GetMetricData")
            .count(),
        3,
        "{calls:?}"
    );
}

#[tokio::test]
async fn an_alarm_flipping_mid_bake_fails_within_one_poll_interval() {
    let stage = Stage::start().await;
    stage.alarm("api-5xx", StateValue::Ok).await;
    let started = Instant::now();
    let gate = json!({"AlarmNames": ["api-5xx"], "BakeSeconds": "30", "PollSeconds": "2"});
    let (verdict, flipped_at) = tokio::join!(stage.direct(gate), async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        stage.alarm("api-5xx", StateValue::Alarm).await;
        Instant::now()
    });
    let after_flip = Instant::now() - flipped_at;
    assert_eq!(verdict["verdict"], "fail", "{verdict}");
    assert!(
        after_flip < Duration::from_secs(3),
        "failed {after_flip:?} after the flip (poll 2 s)"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "did not bake on after the breach"
    );
    assert!(verdict["polls"].as_u64().unwrap() >= 2, "{verdict}");
}

#[tokio::test]
async fn a_bake_that_cannot_fit_fails_at_once_and_says_so() {
    let stage = Stage::start().await;
    stage.moto.clear_recording().await;
    let started = Instant::now();
    let verdict = stage
        .function
        .handle(LambdaEvent::new(
            json!({"AlarmNames": ["api-5xx"], "BakeSeconds": "120"}),
            context(Duration::from_secs(30)),
        ))
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(verdict["verdict"], "fail", "{verdict}");
    assert!(
        verdict["reason"].as_str().unwrap().contains("cannot fit"),
        "{verdict}"
    );
    let calls = stage.moto.recorded_actions();
    assert!(
        !calls.iter().any(|a| a.starts_with("monitoring:")),
        "{calls:?}"
    );
}

#[tokio::test]
async fn custom_resource_fails_with_reasons_succeeds_on_pass_and_deletes_nothing() {
    let stage = Stage::start().await;
    let recorder = CfnResponseRecorder::start().await;
    stage.alarm("api-5xx", StateValue::Alarm).await;
    let event = |request_type: &str, name: &str| {
        let mut event = json!({
            "RequestType": request_type,
            "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:gate",
            "ResponseURL": recorder.response_url(name),
            "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/orchestrator/1a2b",
            "RequestId": format!("req-{name}"),
            "LogicalResourceId": "DeployGate",
            "ResourceType": "Custom::DeployGate",
            "ResourceProperties": {
                "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:gate",
                "Release": name, "AlarmNames": ["api-5xx"], "BakeSeconds": "2", "PollSeconds": "1",
            },
        });
        if request_type != "Create" {
            event["PhysicalResourceId"] = json!("DeployGate-req-create");
        }
        if request_type == "Update" {
            event["OldResourceProperties"] = event["ResourceProperties"].clone();
        }
        event
    };
    let invoke = |payload: Value| {
        stage
            .function
            .handle(LambdaEvent::new(payload, context(Duration::from_secs(60))))
    };

    invoke(event("Create", "create")).await.unwrap();
    stage.alarm("api-5xx", StateValue::Ok).await;
    invoke(event("Update", "update")).await.unwrap();
    stage.moto.clear_recording().await;
    invoke(event("Delete", "delete")).await.unwrap();

    let answers: Vec<Value> = recorder.requests().iter().map(|r| r.json()).collect();
    assert_eq!(answers.len(), 3);
    assert_eq!(answers[0]["Status"], "FAILED", "{}", answers[0]);
    let reason = answers[0]["Reason"].as_str().unwrap();
    assert!(
        reason.contains("deploy gate fail")
            && reason.contains("breached")
            && reason.contains("alarm:api-5xx"),
        "{reason}"
    );
    assert_eq!(answers[1]["Status"], "SUCCESS", "{}", answers[1]);
    assert_eq!(answers[1]["Data"]["Verdict"], "pass");
    assert_eq!(answers[1]["Data"]["Release"], "update");
    assert_eq!(answers[1]["PhysicalResourceId"], "DeployGate-req-create");
    assert_eq!(answers[2]["Status"], "SUCCESS", "{}", answers[2]);
    assert!(
        stage.moto.recorded_actions().is_empty(),
        "Delete reads nothing: {:?}",
        stage.moto.recorded_actions()
    );
}

#[tokio::test]
async fn an_update_of_a_stack_that_is_not_rolling_back_is_still_gated() {
    let stage = Stage::start().await;
    let recorder = CfnResponseRecorder::start().await;
    // A real stack, so DescribeStacks answers with a status (CREATE_COMPLETE) rather than an error.
    let stack_id = stage
        .cloudformation
        .create_stack()
        .stack_name("orchestrator")
        .template_body(json!({"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}}).to_string())
        .send()
        .await
        .unwrap()
        .stack_id
        .unwrap();
    let status = stage
        .cloudformation
        .describe_stacks()
        .stack_name(&stack_id)
        .send()
        .await
        .unwrap()
        .stacks()[0]
        .stack_status()
        .unwrap()
        .as_str()
        .to_owned();
    assert!(
        status.ends_with("_COMPLETE") && !status.contains("ROLLBACK"),
        "{status}"
    );
    stage.alarm("api-5xx", StateValue::Alarm).await;
    stage.moto.clear_recording().await;
    let properties = json!({
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:gate",
        "Release": "2026.11.22-2", "AlarmNames": ["api-5xx"], "BakeSeconds": "2", "PollSeconds": "1",
    });
    let update = json!({
        "RequestType": "Update",
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:gate",
        "ResponseURL": recorder.response_url("update"),
        "StackId": stack_id,
        "RequestId": "req-update",
        "LogicalResourceId": "DeployGate",
        "PhysicalResourceId": "DeployGate-req-create",
        "ResourceType": "Custom::DeployGate",
        "ResourceProperties": properties,
        "OldResourceProperties": properties,
    });

    stage
        .function
        .handle(LambdaEvent::new(update, context(Duration::from_secs(60))))
        .await
        .unwrap();

    let answers: Vec<Value> = recorder.requests().iter().map(|r| r.json()).collect();
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0]["Status"], "FAILED", "{}", answers[0]);
    let reason = answers[0]["Reason"].as_str().unwrap();
    assert!(
        reason.contains("breached") && reason.contains("alarm:api-5xx"),
        "{reason}"
    );
    assert!(
        !reason.contains("could not be read"),
        "the status was read: {reason}"
    );
    assert_eq!(answers[0]["PhysicalResourceId"], "DeployGate-req-create");
    let calls = stage.moto.recorded_actions();
    assert!(
        calls.iter().any(|a| a == "cloudformation:DescribeStacks"),
        "the stack status was asked for: {calls:?}"
    );
    let published = stage.published().await;
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].1, "fail");
}
