//! The suite's main job, end to end, on the local stand-ins: `template.yaml` as a stack on
//! moto, a private TLS-only MariaDB as the RDS instance, the five functions under
//! `cargo lambda watch`, and real events (the samples in `events/`, ids filled in) sent with
//! `cargo lambda invoke`. Each step is narrated as one row; the first failed step stops the
//! run, because every later step builds on it.
//!
//! `scripts/local` runs it (`local-scenario` binary); `tests/tests/local_scenario.rs` runs
//! the same in CI.

mod deadline;
pub mod lambda;
pub mod stack;
mod steps;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// An SDK error as a step's reason: the operation and the error's whole chain (the
/// `DisplayErrorContext` every SDK crate re-exports).
pub(crate) fn aws_error<E: std::error::Error>(
    operation: impl std::fmt::Display,
) -> impl FnOnce(E) -> String {
    move |e| {
        format!(
            "{operation}: {}",
            aws_sdk_cloudwatch::error::DisplayErrorContext(e)
        )
    }
}

/// One narrated step.
#[derive(Debug, Clone)]
pub struct StepResult {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
    pub seconds: f64,
}

impl StepResult {
    /// The step as a table row.
    pub fn row(&self) -> String {
        let result = if self.ok { "ok" } else { "FAILED" };
        format!(
            "{:<51} {:<6} {:>5.1}s  {}",
            self.name, result, self.seconds, self.detail
        )
    }
}

/// The header of the narrated table.
pub fn header() -> String {
    format!(
        "{:<51} {:<6} {:>6}  {}",
        "STEP", "RESULT", "TIME", "WHAT HAPPENED"
    )
}

/// Where the scenario runs: the workspace (for `template.yaml`, `events/`, the binaries and
/// the tools in `.venv`) and a directory for the functions' logs.
#[derive(Debug, Clone)]
pub struct Options {
    pub root: PathBuf,
    /// The function binaries (`target/debug` after `cargo build --bins`).
    pub binaries: PathBuf,
    pub log_dir: PathBuf,
}

/// Runs the scenario; `on_step` sees each step as it ends. Returns every step; the last one
/// is the failure when the run did not get through.
pub async fn run(options: &Options, mut on_step: impl FnMut(&StepResult)) -> Vec<StepResult> {
    let mut narrator = Narrator {
        steps: Vec::new(),
        on_step: &mut on_step,
    };
    let _ = steps::run(options, &mut narrator).await;
    narrator.steps
}

/// Records the steps and hands each to the caller as it ends.
pub(crate) struct Narrator<'a> {
    steps: Vec<StepResult>,
    on_step: &'a mut dyn FnMut(&StepResult),
}

/// A failed step (already narrated): the run stops.
#[derive(Debug)]
pub(crate) struct Stop;

impl Narrator<'_> {
    /// Runs one step: `Ok(detail)` or `Err(reason)`; a failure stops the scenario.
    pub(crate) async fn step<T>(
        &mut self,
        name: &'static str,
        work: impl Future<Output = Result<(T, String), String>>,
    ) -> Result<T, Stop> {
        let started = Instant::now();
        let outcome = work.await;
        let seconds = started.elapsed().as_secs_f64();
        let (ok, detail, value) = match outcome {
            Ok((value, detail)) => (true, detail, Some(value)),
            Err(reason) => (false, reason, None),
        };
        let step = StepResult {
            name,
            ok,
            detail,
            seconds,
        };
        (self.on_step)(&step);
        self.steps.push(step);
        value.ok_or(Stop)
    }
}

/// The stack the scenario creates on moto.
pub const STACK: &str = "orch-local";

/// Where the CloudWatch console shows the dashboard `name` (the template's `DashboardUrl`
/// output has this form; the stack's fleet dashboard is named after the stack).
pub fn dashboard_url(region: &str, name: &str) -> String {
    format!(
        "https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#dashboards:name={name}"
    )
}

/// A short summary for the end of the table (or a test's failure message).
pub fn summary(steps: &[StepResult], log_dir: &Path) -> String {
    let mut text = String::new();
    let total: f64 = steps.iter().map(|s| s.seconds).sum();
    match steps.iter().find(|s| !s.ok) {
        None => {
            let _ = write!(
                text,
                "all {} steps passed in {total:.0} s\n\
                 on AWS, the stack's dashboard would be at {} (docs/monitoring.md)",
                steps.len(),
                dashboard_url(crate::moto::REGION, STACK)
            );
        }
        Some(failed) => {
            let _ = write!(
                text,
                "step \"{}\" failed: {}\nfunction logs: {}",
                failed.name,
                failed.detail,
                log_dir.display()
            );
        }
    }
    text
}
