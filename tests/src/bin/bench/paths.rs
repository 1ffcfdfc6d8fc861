//! The paths a user waits on, timed on warm processes of the release binaries: a wake (the
//! backend's `Jobs Queued` event → `SetDesiredCapacity` accepted), the schedule tick at ten and
//! at many groups (event → answer), a Spot interruption warning → `DetachInstances` accepted,
//! and rotation's four steps (event → answer). Each runs twice through the latency proxy: with
//! no delay (moto's own speed) and with the AWS-like delay per call. "Accepted" is when the
//! proxy sent moto's answer to that call back to the function.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;
use serde::Serialize;
use serde_json::{Value, json};

use crate::report::Stats;
use crate::runtime_api::{Answer, AnswerKind};
use crate::scenarios::{self, Scenario, try_sample};
use crate::tick::{self, ms};
use crate::{BenchError, Route, Stage, WarmFunction};

/// The goals, warm, through the proxy's default delay.
const WAKE_GOAL_MS: f64 = 250.0;
const TICK_MANY_GOAL_MS: f64 = 1500.0;
const SPOT_GOAL_MS: f64 = 300.0;
/// Ticks over many groups take seconds each: fewer samples.
const MANY_GROUP_TICKS: usize = 5;
const ROTATION_STEPS: [&str; 4] = ["createSecret", "setSecret", "testSecret", "finishSecret"];

#[derive(Debug, Serialize)]
pub struct PathsResult {
    /// The proxy's delay per call for the `delayed` figures.
    pub delay_ms: f64,
    pub samples: usize,
    pub rows: Vec<PathRow>,
}

#[derive(Debug, Serialize)]
pub struct PathRow {
    pub path: String,
    /// What is timed, from the event handed to the warm function.
    pub until: String,
    /// moto's own speed (the proxy adds no delay).
    pub undelayed_ms: Stats,
    /// Every call held for `delay_ms`.
    pub delayed_ms: Stats,
    /// AWS calls per event (median of the delayed run).
    pub calls: f64,
    pub goal_ms: Option<f64>,
    /// Why the path has no figures.
    pub error: Option<String>,
}

impl PathRow {
    fn failed(path: &str, error: &str) -> PathRow {
        PathRow {
            path: path.to_owned(),
            until: String::new(),
            undelayed_ms: Stats::of([]),
            delayed_ms: Stats::of([]),
            calls: f64::NAN,
            goal_ms: None,
            error: Some(error.to_owned()),
        }
    }
}

pub async fn run(
    stage: &Stage,
    bin_dir: &Path,
    logs: &Path,
    samples: usize,
    many_groups: usize,
) -> Result<PathsResult, BenchError> {
    let delay = stage.proxy.delay();
    // A path that fails (moto overwhelmed, a function error) is reported as such; the others
    // still run.
    let mut rows = Vec::new();
    let mut keep = |path: &str, row: Result<PathRow, BenchError>| match row {
        Ok(row) => rows.push(row),
        Err(error) => {
            eprintln!("[bench] path {path} failed: {error}");
            rows.push(PathRow::failed(path, &error.to_string()));
        }
    };
    keep("wake", wake(stage, bin_dir, logs, samples).await);
    keep(
        "tick over 10 groups",
        ticks_over(stage, bin_dir, logs, 10, samples, None).await,
    );
    let many = format!("tick over {many_groups} groups");
    keep(
        &many,
        ticks_over(
            stage,
            bin_dir,
            logs,
            many_groups,
            MANY_GROUP_TICKS,
            Some(TICK_MANY_GOAL_MS),
        )
        .await,
    );
    keep(
        "Spot warning",
        spot_warning(stage, bin_dir, logs, samples).await,
    );
    match rotation(stage, bin_dir, logs, samples).await {
        Ok(steps) => rows.extend(steps),
        Err(error) => keep("rotation", Err(error)),
    }
    stage.proxy.set_delay(delay);
    Ok(PathsResult {
        delay_ms: ms(delay),
        samples,
        rows,
    })
}

/// One timed event: how long until it counted as done, and the AWS calls it made.
#[derive(Clone)]
struct Timed {
    ms: f64,
    calls: usize,
}

/// The same path timed with no added delay, then with the proxy's delay.
struct BothRoutes {
    undelayed: Vec<Timed>,
    delayed: Vec<Timed>,
}

impl BothRoutes {
    async fn measure<F, Fut>(stage: &Stage, mut one_route: F) -> Result<BothRoutes, BenchError>
    where
        F: FnMut(&'static str) -> Fut,
        Fut: Future<Output = Result<Vec<Timed>, BenchError>>,
    {
        let delay = stage.proxy.delay();
        stage.proxy.set_delay(Duration::ZERO);
        let undelayed = one_route("undelayed").await?;
        stage.proxy.set_delay(delay);
        let delayed = one_route("delayed").await?;
        Ok(BothRoutes { undelayed, delayed })
    }

    fn row(self, path: String, until: &str, goal_ms: Option<f64>) -> PathRow {
        let calls = Stats::of(self.delayed.iter().map(|t| t.calls as f64)).median;
        PathRow {
            path,
            until: until.to_owned(),
            undelayed_ms: Stats::of(self.undelayed.iter().map(|t| t.ms)),
            delayed_ms: Stats::of(self.delayed.iter().map(|t| t.ms)),
            calls,
            goal_ms,
            error: None,
        }
    }
}

/// The calls the proxy answered between `sent` and the function's answer.
fn calls_between(stage: &Stage, sent: Instant, answer: &Answer) -> usize {
    stage
        .proxy
        .answered()
        .iter()
        .filter(|call| call.received >= sent && call.answered <= answer.at)
        .count()
}

/// When the proxy sent back moto's acceptance of `operation` made for the event sent at `sent`.
fn accepted(
    stage: &Stage,
    operation: &str,
    sent: Instant,
    answer: &Answer,
) -> Result<Timed, BenchError> {
    let call = stage
        .proxy
        .first_answer(operation, sent)
        .filter(|call| call.status == 200 && call.answered <= answer.at)
        .ok_or_else(|| {
            format!(
                "no accepted {operation} for the event; the function answered {}",
                String::from_utf8_lossy(&answer.body)
            )
        })?;
    Ok(Timed {
        ms: ms(call.answered.saturating_duration_since(sent)),
        calls: calls_between(stage, sent, answer),
    })
}

fn succeeded(answer: &Answer) -> Result<(), BenchError> {
    if answer.kind == AnswerKind::Error {
        return Err(format!(
            "the function failed: {}",
            String::from_utf8_lossy(&answer.body)
        )
        .into());
    }
    Ok(())
}

fn answered(stage: &Stage, sent: Instant, answer: &Answer) -> Result<Timed, BenchError> {
    succeeded(answer)?;
    Ok(Timed {
        ms: ms(answer.at.saturating_duration_since(sent)),
        calls: calls_between(stage, sent, answer),
    })
}

fn log_for(logs: &Path, name: &str) -> std::path::PathBuf {
    let log = logs.join(format!("{name}.log"));
    let _ = std::fs::remove_file(&log);
    log
}

/// An EventBridge time, to the second.
fn event_time() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    DateTime::from_secs(now)
        .fmt(Format::DateTime)
        .unwrap_or_default()
}

fn proxied(mut scenario: Scenario) -> Scenario {
    scenario.route = Route::LatencyProxy;
    scenario
}

/// Per route, a warm scale-to-zero and one `Jobs Queued` event per group at zero.
async fn wake(
    stage: &Stage,
    bin_dir: &Path,
    logs: &Path,
    samples: usize,
) -> Result<PathRow, BenchError> {
    eprintln!("[bench] path: wake × {samples} per route");
    stage.moto.reset().await;
    let scenario = proxied(scenarios::prepare(stage, "scale-to-zero").await?);
    let binary = bin_dir.join("scale-to-zero");
    let (scenario, binary) = (&scenario, &binary);
    let mut next_group = 0;
    let both = BothRoutes::measure(stage, move |route| {
        let first = next_group;
        next_group += samples + 1;
        async move {
            for n in first..first + samples + 1 {
                let workflow = format!("wake-wf-{n:03}");
                scenarios::create_managed_group(
                    &stage.autoscaling,
                    &format!("wake-gpu-{n:03}"),
                    &workflow,
                    0,
                    4,
                )
                .await?;
            }
            let jobs_queued = |n: usize| {
                let mut event = try_sample("scale-to-zero", "wake-event.json")?;
                event["time"] = json!(event_time());
                event["detail"] = json!({"workflow": format!("wake-wf-{n:03}"), "queued": 2});
                Ok::<Value, BenchError>(event)
            };
            let log = log_for(logs, &format!("path-wake-{route}"));
            let (mut function, cold) =
                WarmFunction::start(stage, binary, scenario, jobs_queued(first)?, &log).await?;
            succeeded(&cold)?;
            let mut timed = Vec::with_capacity(samples);
            for n in first + 1..first + samples + 1 {
                let (sent, answer) = function.invoke(jobs_queued(n)?).await?;
                timed.push(accepted(stage, "SetDesiredCapacity", sent, &answer)?);
            }
            function.process.kill().await?;
            Ok(timed)
        }
    })
    .await?;
    Ok(both.row(
        "wake: `Jobs Queued` event for a group at 0".to_owned(),
        "SetDesiredCapacity accepted",
        Some(WAKE_GOAL_MS),
    ))
}

/// Per route, a warm scale-to-zero ticking over `groups` groups (the first tick wakes a few;
/// the timed ones change nothing and publish every backlog).
async fn ticks_over(
    stage: &Stage,
    bin_dir: &Path,
    logs: &Path,
    groups: usize,
    ticks: usize,
    goal_ms: Option<f64>,
) -> Result<PathRow, BenchError> {
    eprintln!("[bench] path: tick over {groups} groups × {ticks} per route");
    let (scenario, total) = tick::prepare(stage, groups, 10).await?;
    let scenario = proxied(scenario);
    let binary = bin_dir.join("scale-to-zero");
    let (scenario, binary) = (&scenario, &binary);
    let both = BothRoutes::measure(stage, move |route| async move {
        let log = log_for(logs, &format!("path-tick-{total}-{route}"));
        let (mut function, cold) =
            WarmFunction::start(stage, binary, scenario, scenario.event.clone(), &log).await?;
        succeeded(&cold)?;
        let mut timed = Vec::with_capacity(ticks);
        for _ in 0..ticks {
            let (sent, answer) = function.invoke(scenario.event.clone()).await?;
            timed.push(answered(stage, sent, &answer)?);
        }
        function.process.kill().await?;
        Ok(timed)
    })
    .await?;
    Ok(both.row(
        format!("schedule tick over {total} groups"),
        "answer",
        goal_ms,
    ))
}

/// Per route, a warm spot-interruption and one interruption warning per instance of a group.
async fn spot_warning(
    stage: &Stage,
    bin_dir: &Path,
    logs: &Path,
    samples: usize,
) -> Result<PathRow, BenchError> {
    eprintln!("[bench] path: Spot warning × {samples} per route");
    stage.moto.reset().await;
    let scenario = proxied(scenarios::prepare(stage, "spot-interruption").await?);
    let binary = bin_dir.join("spot-interruption");
    let instances = i32::try_from(samples + 1).unwrap_or(i32::MAX);
    let (scenario, binary) = (&scenario, &binary);
    let both = BothRoutes::measure(stage, move |route| async move {
        let group = format!("spot-gpu-{route}");
        scenarios::create_managed_group(
            &stage.autoscaling,
            &group,
            "img2vid",
            instances,
            instances + 1,
        )
        .await?;
        let described = stage
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(&group)
            .send()
            .await?;
        let ids: Vec<String> = described
            .auto_scaling_groups()
            .first()
            .map(|g| {
                g.instances()
                    .iter()
                    .filter_map(|i| i.instance_id())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        if ids.len() < samples + 1 {
            return Err(format!(
                "moto launched {} instances in {group}, not {}",
                ids.len(),
                samples + 1
            )
            .into());
        }
        let warning = |n: usize| {
            let instance = &ids[n];
            let mut event = try_sample("spot-interruption", "spot-interruption-warning.json")?;
            event["id"] = json!(format!("bench-{route}-{n:04}"));
            event["time"] = json!(event_time());
            event["detail"]["instance-id"] = json!(instance);
            event["resources"] = json!([format!("arn:aws:ec2:us-east-1a:instance/{instance}")]);
            Ok::<Value, BenchError>(event)
        };
        let log = log_for(logs, &format!("path-spot-{route}"));
        let (mut function, cold) =
            WarmFunction::start(stage, binary, scenario, warning(0)?, &log).await?;
        succeeded(&cold)?;
        let mut timed = Vec::with_capacity(samples);
        for n in 1..=samples {
            let (sent, answer) = function.invoke(warning(n)?).await?;
            timed.push(accepted(stage, "DetachInstances", sent, &answer)?);
        }
        function.process.kill().await?;
        Ok(timed)
    })
    .await?;
    Ok(both.row(
        "Spot interruption warning for a managed instance".to_owned(),
        "DetachInstances accepted",
        Some(SPOT_GOAL_MS),
    ))
}

/// Per route, a warm secret-rotation running `samples` whole rotations of an `engine: generic`
/// secret; each step is timed (event → answer). moto is told of each rotation as Secrets
/// Manager would be (RotateSecret, then the `AWSPENDING` label removed after finishSecret).
async fn rotation(
    stage: &Stage,
    bin_dir: &Path,
    logs: &Path,
    samples: usize,
) -> Result<Vec<PathRow>, BenchError> {
    eprintln!("[bench] path: rotation × {samples} per route");
    stage.moto.reset().await;
    let scenario = proxied(scenarios::prepare(stage, "secret-rotation").await?);
    harness::rotation::allow_rotation(&stage.moto).await;
    let arn = scenario.event["SecretId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let first_token = scenario.event["ClientRequestToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let binary = bin_dir.join("secret-rotation");
    let (scenario, binary, arn) = (&scenario, &binary, &arn);
    let mut first = Some(first_token);
    let both = BothRoutes::measure(stage, move |route| {
        let token = first.take();
        async move {
            let step = |name: &str, token: &str| {
                let mut event = try_sample("secret-rotation", &format!("{name}.json"))?;
                event["SecretId"] = json!(arn);
                event["ClientRequestToken"] = json!(token);
                Ok::<Value, BenchError>(event)
            };
            let token = match token {
                Some(token) => token,
                None => harness::rotation::start_rotation(&stage.secrets, arn).await,
            };
            // The first rotation warms the process; its steps are not timed.
            let log = log_for(logs, &format!("path-rotation-{route}"));
            let (mut function, answer) = WarmFunction::start(
                stage,
                binary,
                scenario,
                step(ROTATION_STEPS[0], &token)?,
                &log,
            )
            .await?;
            succeeded(&answer)?;
            for name in &ROTATION_STEPS[1..] {
                let (_, answer) = function.invoke(step(name, &token)?).await?;
                succeeded(&answer)?;
            }
            harness::rotation::end_rotation(&stage.secrets, arn, &token).await;
            let mut timed = Vec::with_capacity(samples * ROTATION_STEPS.len());
            for _ in 0..samples {
                let token = harness::rotation::start_rotation(&stage.secrets, arn).await;
                for name in ROTATION_STEPS {
                    let (sent, answer) = function.invoke(step(name, &token)?).await?;
                    timed.push(answered(stage, sent, &answer)?);
                }
                harness::rotation::end_rotation(&stage.secrets, arn, &token).await;
            }
            function.process.kill().await?;
            Ok(timed)
        }
    })
    .await?;
    // The timed events interleave the four steps: split them back per step.
    let steps = ROTATION_STEPS.len();
    let per_step = |all: &[Timed], index: usize| -> Vec<Timed> {
        all.iter().skip(index).step_by(steps).cloned().collect()
    };
    Ok(ROTATION_STEPS
        .iter()
        .enumerate()
        .map(|(index, name)| {
            BothRoutes {
                undelayed: per_step(&both.undelayed, index),
                delayed: per_step(&both.delayed, index),
            }
            .row(
                format!("rotation `{name}` (`engine: generic`)"),
                "answer",
                None,
            )
        })
        .collect())
}
