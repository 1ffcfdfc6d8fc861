//! Per function: the moto resources its sample event needs, the environment Lambda would give
//! it (template.yaml's variables, pointed at moto), and the event.

pub use shared::sample_events::try_sample;
use std::path::Path;
use std::time::Duration;

use aws_sdk_autoscaling::types::Tag;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum};
use harness::moto::{ACCOUNT_ID, REGION};
use serde_json::{Value, json};

use crate::{BenchError, Route, Stage};

/// The functions in template.yaml order, with its `MemorySize` and `Timeout` (Globals: 128 MB,
/// 30 s). Duplicated here because the driver has no YAML parser; docs/benchmarks.md names the source.
pub const FUNCTIONS: [(&str, u32, u64); 5] = [
    ("scale-to-zero", 256, 60),
    ("rds-init", 256, 300),
    ("secret-rotation", 256, 60),
    ("spot-interruption", 128, 30),
    ("deploy-gate", 128, 900),
];

/// The stack the fleet functions serve (`ORCHESTRATOR_STACK`); every group is tagged with it.
pub const STACK: &str = "orchestrator-bench";
/// The template's default namespaces for that stack (`Orchestrator/<stack>/…`).
pub const QUEUE_NAMESPACE: &str = "Orchestrator/orchestrator-bench/Queue";
const FLEET_NAMESPACE: &str = "Orchestrator/orchestrator-bench/Fleet";
pub const LAUNCH_CONFIGURATION: &str = "bench-gpu-worker";
/// Groups the per-function scale-to-zero runs tick over (the template's default is 2 workflows).
const SCALE_TO_ZERO_GROUPS: usize = 10;

pub struct Scenario {
    pub function: &'static str,
    pub memory_mb: u32,
    pub timeout: Duration,
    /// The function's own variables (the Lambda and AWS ones are added by the runner).
    pub env: Vec<(String, String)>,
    pub event: Value,
    /// Which sample event, and what was changed in it, for the report.
    pub event_label: String,
    /// Where its AWS calls go (moto unless a path says otherwise).
    pub route: Route,
}

impl Scenario {
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{}",
            lambda_name(self.function)
        )
    }
}

pub fn lambda_name(function: &str) -> String {
    format!("orchestrator-bench-{function}")
}

/// Prepares moto for `function` and returns its scenario.
pub async fn prepare(stage: &Stage, function: &str) -> Result<Scenario, BenchError> {
    let Some(&(function, memory_mb, timeout)) = FUNCTIONS.iter().find(|f| f.0 == function) else {
        return Err(format!("unknown function `{function}`").into());
    };
    let (env, event, event_label) = match function {
        "scale-to-zero" => scale_to_zero(stage).await?,
        "rds-init" => rds_init(stage)?,
        "secret-rotation" => secret_rotation(stage).await?,
        "spot-interruption" => spot_interruption(stage).await?,
        _ => deploy_gate(stage).await?,
    };
    Ok(Scenario {
        function,
        memory_mb,
        timeout: Duration::from_secs(timeout),
        env,
        event,
        event_label,
        route: Route::Moto,
    })
}

type Prepared = (Vec<(String, String)>, Value, String);

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub async fn create_topic(stage: &Stage, name: &str) -> Result<String, BenchError> {
    let answer = stage.sns.create_topic().name(name).send().await?;
    answer
        .topic_arn
        .ok_or_else(|| BenchError::from("CreateTopic answered no ARN"))
}

pub async fn create_launch_configuration(stage: &Stage) -> Result<(), BenchError> {
    stage
        .autoscaling
        .create_launch_configuration()
        .launch_configuration_name(LAUNCH_CONFIGURATION)
        .image_id("ami-12c6146b")
        .instance_type("g5.xlarge")
        .send()
        .await?;
    Ok(())
}

/// A group tagged as the suite manages it, in [`STACK`], with room for `max` instances.
pub async fn create_managed_group(
    autoscaling: &aws_sdk_autoscaling::Client,
    name: &str,
    workflow: &str,
    desired: i32,
    max: i32,
) -> Result<(), BenchError> {
    let tag = |key: &str, value: &str| Tag::builder().key(key).value(value).build();
    autoscaling
        .create_auto_scaling_group()
        .auto_scaling_group_name(name)
        .launch_configuration_name(LAUNCH_CONFIGURATION)
        .min_size(0)
        .max_size(max)
        .desired_capacity(desired)
        .availability_zones("us-east-1a")
        .tags(tag("orchestrator:managed", "true"))
        .tags(tag("orchestrator:stack", STACK))
        .tags(tag("orchestrator:workflow", workflow))
        .send()
        .await?;
    Ok(())
}

/// Publishes `QueueDepth{Workflow=…}`, up to 1000 values per call (the API's limit).
pub async fn put_queue_depths(stage: &Stage, depths: &[(String, f64)]) -> Result<(), BenchError> {
    for chunk in depths.chunks(1000) {
        let data = chunk
            .iter()
            .map(|(workflow, depth)| {
                MetricDatum::builder()
                    .metric_name("QueueDepth")
                    .dimensions(
                        Dimension::builder()
                            .name("Workflow")
                            .value(workflow)
                            .build(),
                    )
                    .value(*depth)
                    .build()
            })
            .collect();
        stage
            .cloudwatch
            .put_metric_data()
            .namespace(QUEUE_NAMESPACE)
            .set_metric_data(Some(data))
            .send()
            .await?;
    }
    Ok(())
}

/// The schedule tick over ten managed groups at 0 with empty queues: every tick does the same
/// three calls (DescribeAutoScalingGroups, GetMetricData, PutMetricData) and changes nothing.
async fn scale_to_zero(stage: &Stage) -> Result<Prepared, BenchError> {
    let topic = create_topic(stage, "bench-idle-notices").await?;
    create_launch_configuration(stage).await?;
    let mut depths = Vec::new();
    for n in 0..SCALE_TO_ZERO_GROUPS {
        let workflow = format!("bench-wf-{n}");
        create_managed_group(
            &stage.autoscaling,
            &format!("bench-gpu-{n}"),
            &workflow,
            0,
            4,
        )
        .await?;
        depths.push((workflow, 0.0));
    }
    put_queue_depths(stage, &depths).await?;
    let env = pairs(&[
        ("QUEUE_METRIC_NAMESPACE", QUEUE_NAMESPACE),
        ("QUEUE_METRIC_NAME", "QueueDepth"),
        ("WORKFLOW_DIMENSION", "Workflow"),
        ("TARGET_BACKLOG_PER_INSTANCE", "1"),
        ("NOTIFY_TOPIC_ARN", &topic),
        ("ORCHESTRATOR_STACK", STACK),
    ]);
    let label = format!(
        "`schedule.json` (tick over {SCALE_TO_ZERO_GROUPS} managed groups at 0, queues empty)"
    );
    Ok((env, try_sample("scale-to-zero", "schedule.json")?, label))
}

/// A Create whose master secret does not exist: GetSecretValue fails and FAILED goes to the
/// local ResponseURL sink. No database is involved.
fn rds_init(stage: &Stage) -> Result<Prepared, BenchError> {
    let mut event = try_sample("rds-init", "create.json")?;
    event["ResponseURL"] = json!(stage.recorder.response_url("rds-init"));
    let label = "`create.json`, ResponseURL → local sink (master secret absent in moto: \
                 GetSecretValue fails, FAILED is PUT)"
        .to_owned();
    Ok((Vec::new(), event, label))
}

/// The createSecret step of a rotation moto started (`RotateSecret`) on an `engine: generic`
/// secret: no database involved. The first invocation generates and stores the AWSPENDING
/// value; the later ones find it there and keep it (the step is idempotent).
async fn secret_rotation(stage: &Stage) -> Result<Prepared, BenchError> {
    // RotateSecret needs a rotation function to exist in moto (moto never runs it).
    register_placeholder_rotation_function(stage).await?;
    let arn = stage
        .secrets
        .create_secret()
        .name("bench/app-keys")
        .secret_string(
            json!({"engine": "generic", "password": "k1", "issuer": "bench"}).to_string(),
        )
        .send()
        .await?
        .arn
        .ok_or_else(|| BenchError::from("CreateSecret answered no ARN"))?;
    let token = stage
        .secrets
        .rotate_secret()
        .secret_id(&arn)
        .rotation_lambda_arn(format!(
            "arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:bench-rotation"
        ))
        .rotation_rules(
            aws_sdk_secretsmanager::types::RotationRulesType::builder()
                .automatically_after_days(30)
                .build(),
        )
        .send()
        .await?
        .version_id
        .ok_or_else(|| BenchError::from("RotateSecret answered no version id"))?;
    let mut event = try_sample("secret-rotation", "createSecret.json")?;
    event["SecretId"] = json!(arn);
    event["ClientRequestToken"] = json!(token);
    let env = pairs(&[("EXCLUDE_CHARACTERS", "/@\"'\\"), ("PASSWORD_LENGTH", "32")]);
    let label = "`createSecret.json`, SecretId/token → a rotation moto started on an \
                 `engine: generic` secret (DescribeSecret, GetSecretValue, GetRandomPassword, \
                 PutSecretValue; repeats find AWSPENDING and keep it)"
        .to_owned();
    Ok((env, event, label))
}

async fn register_placeholder_rotation_function(stage: &Stage) -> Result<(), BenchError> {
    let http = reqwest::Client::new();
    let requests = [
        (
            "/moto-api/config",
            "moto",
            "application/json",
            json!({"lambda": {"use_docker": false}}).to_string(),
        ),
        (
            "/",
            "iam",
            "application/x-www-form-urlencoded",
            "Action=CreateRole&Version=2010-05-08&RoleName=bench-rotation&AssumeRolePolicyDocument=%7B%7D"
                .to_owned(),
        ),
        (
            "/2015-03-31/functions",
            "lambda",
            "application/json",
            // An empty zip: moto needs the function to exist, never runs it.
            json!({"FunctionName": "bench-rotation", "Runtime": "provided.al2023",
                   "Handler": "bootstrap",
                   "Role": format!("arn:aws:iam::{ACCOUNT_ID}:role/bench-rotation"),
                   "Code": {"ZipFile": "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="}})
            .to_string(),
        ),
    ];
    for (path, service, content_type, body) in requests {
        let response = http
            .post(format!("{}{path}", stage.moto.endpoint_url()))
            .header(
                "Authorization",
                harness::moto::unsigned_authorization("testing", service),
            )
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(format!("moto {path}: {}", response.status()).into());
        }
    }
    Ok(())
}

/// A rebalance recommendation for an instance of a managed group: the function finds its
/// group and publishes a fleet message; the same work on every invocation.
async fn spot_interruption(stage: &Stage) -> Result<Prepared, BenchError> {
    let topic = create_topic(stage, "bench-fleet-events").await?;
    // scale-to-zero's scenario may have made it already; moto then answers AlreadyExists.
    let _ = create_launch_configuration(stage).await;
    create_managed_group(&stage.autoscaling, "bench-spot", "img2vid", 1, 4).await?;
    let groups = stage
        .autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names("bench-spot")
        .send()
        .await?;
    let instance = groups
        .auto_scaling_groups()
        .first()
        .and_then(|g| g.instances().first())
        .and_then(|i| i.instance_id())
        .ok_or_else(|| BenchError::from("moto launched no instance for bench-spot"))?
        .to_owned();
    let mut event = try_sample("spot-interruption", "rebalance-recommendation.json")?;
    event["detail"]["instance-id"] = json!(instance);
    event["resources"] = json!([format!("arn:aws:ec2:us-east-1a:instance/{instance}")]);
    // Read on every invocation (no record: a first attempt), written only on failure.
    let table = stage
        .moto
        .create_progress_table("bench-spot-progress")
        .await?;
    let env = pairs(&[
        ("FLEET_TOPIC_ARN", &topic),
        ("METRIC_NAMESPACE", FLEET_NAMESPACE),
        ("ORCHESTRATOR_STACK", STACK),
        ("PROGRESS_TABLE", &table),
    ]);
    let label =
        "`rebalance-recommendation.json`, instance id → a moto instance in a managed group \
                 (DescribeAutoScalingInstances and the progress table's GetItem at once, fleet \
                 message to SNS)"
            .to_owned();
    Ok((env, event, label))
}

/// The CI direct invoke with the bake cut to 0 s: alarms and target-group metrics are read
/// once (none exist in moto: inconclusive) and the verdict is published.
async fn deploy_gate(stage: &Stage) -> Result<Prepared, BenchError> {
    let topic = create_topic(stage, "bench-alerts").await?;
    let mut event = try_sample("deploy-gate", "ci-direct.json")?;
    // The event's alarms, so the gate reads real alarm states (moto: INSUFFICIENT_DATA).
    let alarms = event["AlarmNames"].as_array().cloned().unwrap_or_default();
    for alarm in alarms.iter().filter_map(Value::as_str) {
        stage
            .cloudwatch
            .put_metric_alarm()
            .alarm_name(alarm)
            .namespace("AWS/ApplicationELB")
            .metric_name("HTTPCode_Target_5XX_Count")
            .statistic(aws_sdk_cloudwatch::types::Statistic::Sum)
            .period(60)
            .evaluation_periods(1)
            .threshold(1.0)
            .comparison_operator(
                aws_sdk_cloudwatch::types::ComparisonOperator::GreaterThanOrEqualToThreshold,
            )
            .send()
            .await?;
    }
    event["BakeSeconds"] = json!("0");
    let env = pairs(&[("ALERT_TOPIC_ARN", &topic)]);
    let label = "`ci-direct.json` with `BakeSeconds: \"0\"`, its two alarms created in moto \
                 (DescribeAlarms, GetMetricData, verdict to SNS)"
        .to_owned();
    Ok((env, event, label))
}

/// Whether a file exists, for the report's artifact column.
pub fn file_size(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}
