//! One scale-to-zero schedule tick over many managed groups, through the release binary,
//! with moto's recorder counting the API calls against DESIGN.md's batched-call bound.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::scenarios::{self, Scenario};
use crate::{BenchError, Stage, cold_run};

#[derive(Debug, Serialize)]
pub struct TickResult {
    pub groups: usize,
    pub groups_with_work: usize,
    /// API calls of the first (cold) tick, by action.
    pub calls: BTreeMap<String, usize>,
    pub total_calls: usize,
    /// ceil(groups/100) DescribeAutoScalingGroups + ceil(groups/500) GetMetricData +
    /// ceil(groups/1000) PutMetricData + one SetDesiredCapacity per woken group.
    pub bound: usize,
    pub within_bound: bool,
    pub backlog_published: Option<u64>,
    pub changes: usize,
    /// Spawn → answer of the cold tick (init included).
    pub cold_ms: f64,
    /// The following ticks (the woken groups now have instances: no more changes).
    pub warm_ms: Vec<f64>,
    pub peak_rss_kib: u64,
    /// The function's CPU time over all ticks (the rest of their duration is waiting on moto).
    pub cpu_ms: f64,
}

/// Creates `groups` managed groups at 0 (one queue in `groups_with_work` has a job), then
/// runs the binary: one cold tick (counted) and `warm` more.
pub async fn run(
    stage: &Stage,
    binary: &Path,
    log: &Path,
    groups: usize,
    groups_with_work: usize,
    warm: usize,
) -> Result<TickResult, BenchError> {
    let (scenario, total_groups) = prepare(stage, groups, groups_with_work).await?;
    stage.moto.clear_recording().await;
    let mut counted = BTreeMap::new();
    let run = cold_run(stage, binary, &scenario, warm, log, |_| {
        // Read right after the cold tick answered, before the warm ticks add theirs.
        for action in stage.moto.recorded_actions() {
            let name = action.rsplit(':').next().unwrap_or(&action).to_owned();
            *counted.entry(name).or_insert(0) += 1;
        }
    })
    .await?;
    let answer: Value = serde_json::from_slice(&run.first_body).unwrap_or(Value::Null);
    let changes = answer["changes"].as_array().map_or(0, Vec::len);
    let bound = total_groups.div_ceil(100)
        + total_groups.div_ceil(500)
        + total_groups.div_ceil(1000)
        + changes;
    let total_calls = counted.values().sum();
    Ok(TickResult {
        groups: total_groups,
        groups_with_work,
        total_calls,
        within_bound: total_calls <= bound,
        bound,
        calls: counted,
        backlog_published: answer["backlogPublished"].as_u64(),
        changes,
        cold_ms: ms(run.cold),
        warm_ms: run.warm.iter().copied().map(ms).collect(),
        peak_rss_kib: run.peak_rss_kib,
        cpu_ms: ms(run.cpu),
    })
}

/// A fresh moto with `groups` managed groups at 0 (the scale-to-zero scenario's ten among
/// them) and their queue depths, one in `groups_with_work` with a job; the schedule event.
/// Returns the scenario and the number of groups.
pub async fn prepare(
    stage: &Stage,
    groups: usize,
    groups_with_work: usize,
) -> Result<(Scenario, usize), BenchError> {
    stage.moto.reset().await;
    let mut scenario = scenarios::prepare(stage, "scale-to-zero").await?;
    // The scenario made ten groups of its own; the tick covers them too.
    let fixture_groups = 10;
    let extra = groups.saturating_sub(fixture_groups);
    create_groups(stage, extra).await?;
    let every = (extra / groups_with_work.max(1)).max(1);
    let depths: Vec<(String, f64)> = (0..extra)
        .map(|n| {
            let depth = if n % every == 0 && n / every < groups_with_work {
                1.0
            } else {
                0.0
            };
            (format!("tick-wf-{n:04}"), depth)
        })
        .collect();
    scenarios::put_queue_depths(stage, &depths).await?;
    scenario.event = scenarios::try_sample("scale-to-zero", "schedule.json")?;
    Ok((scenario, extra + fixture_groups))
}

/// Creating a group at 0 is one cheap call; moto serves them in parallel threads.
async fn create_groups(stage: &Stage, count: usize) -> Result<(), BenchError> {
    let autoscaling = Arc::new(stage.autoscaling.clone());
    let mut creating = tokio::task::JoinSet::new();
    for n in 0..count {
        if creating.len() >= 16 {
            join_one(&mut creating).await?;
        }
        let autoscaling = autoscaling.clone();
        creating.spawn(async move {
            scenarios::create_managed_group(
                &autoscaling,
                &format!("tick-gpu-{n:04}"),
                &format!("tick-wf-{n:04}"),
                0,
                4,
            )
            .await
        });
    }
    while !creating.is_empty() {
        join_one(&mut creating).await?;
    }
    Ok(())
}

async fn join_one(
    set: &mut tokio::task::JoinSet<Result<(), BenchError>>,
) -> Result<(), BenchError> {
    match set.join_next().await {
        Some(Ok(result)) => result,
        Some(Err(e)) => Err(format!("group creation task: {e}").into()),
        None => Ok(()),
    }
}

pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
