//! Statistics, budgets, the cost estimate, and the results as Markdown and JSON.

use std::fmt::Write;

use serde::Serialize;

use crate::RunSample;
use crate::paths::PathsResult;
use crate::runtime_api::AnswerKind;
use crate::scenarios::Scenario;
use crate::tick::{TickResult, ms};

/// The budgets, per function.
pub const INIT_BUDGET_MS: f64 = 15.0;
/// 4 MB = 4,000,000 bytes (the stricter reading).
pub const ZIP_BUDGET_BYTES: u64 = 4_000_000;
/// 32 MiB (Lambda's "MB" of memory are MiB).
pub const RSS_BUDGET_KIB: u64 = 32 * 1024;

/// arm64 list prices (us-east-1).
pub const PRICE_PER_GB_SECOND: f64 = 0.000_013_333_4;
pub const PRICE_PER_MILLION_REQUESTS: f64 = 0.20;
/// One tick a minute for 30 days.
pub const TICKS_PER_MONTH: u64 = 43_200;

#[derive(Debug, Serialize)]
pub struct Stats {
    pub median: f64,
    pub p95: f64,
    pub min: f64,
    pub max: f64,
    pub samples: usize,
}

impl Stats {
    pub fn of(values: impl IntoIterator<Item = f64>) -> Stats {
        let mut values: Vec<f64> = values.into_iter().collect();
        values.sort_by(f64::total_cmp);
        // Nearest rank: the smallest value with at least p% of the samples at or below it.
        let rank = |p: f64| {
            let index = ((p / 100.0) * values.len() as f64).ceil() as usize;
            values
                .get(index.saturating_sub(1))
                .copied()
                .unwrap_or(f64::NAN)
        };
        Stats {
            median: rank(50.0),
            p95: rank(95.0),
            min: values.first().copied().unwrap_or(f64::NAN),
            max: values.last().copied().unwrap_or(f64::NAN),
            samples: values.len(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct FunctionResult {
    pub function: String,
    pub event: String,
    pub memory_mb: u32,
    /// Spawn → first `GET /runtime/invocation/next`.
    pub init_ms: Stats,
    /// Spawn → first answer (`response` or `error`) fully received.
    pub cold_start_ms: Stats,
    /// Event handed out → answer received, on an already-initialised process.
    pub warm_ms: Stats,
    /// `ru_maxrss` per run.
    pub peak_rss_kib: Stats,
    /// CPU time (user + system) per run: init, the cold and the warm invocations.
    pub cpu_per_run_ms: Stats,
    pub zip_bytes: Option<u64>,
    pub answer: String,
    pub budgets: Budgets,
}

#[derive(Debug, Serialize)]
pub struct Budgets {
    pub init: bool,
    pub zip: Option<bool>,
    pub rss: bool,
}

impl FunctionResult {
    pub fn new(scenario: &Scenario, samples: &[RunSample], zip_bytes: Option<u64>) -> Self {
        let init_ms = Stats::of(samples.iter().map(|s| ms(s.init)));
        let peak_rss_kib = Stats::of(samples.iter().map(|s| s.peak_rss_kib as f64));
        let answer = samples.first().map_or_else(String::new, |s| {
            let kind = match s.first_kind {
                AnswerKind::Response => "response",
                AnswerKind::Error => "error",
            };
            let body = String::from_utf8_lossy(&s.first_body);
            let excerpt: String = body.chars().take(300).collect();
            format!("{kind}: {excerpt}")
        });
        let budgets = Budgets {
            init: init_ms.median <= INIT_BUDGET_MS,
            zip: zip_bytes.map(|bytes| bytes <= ZIP_BUDGET_BYTES),
            rss: peak_rss_kib.max <= RSS_BUDGET_KIB as f64,
        };
        FunctionResult {
            function: scenario.function.to_owned(),
            event: scenario.event_label.clone(),
            memory_mb: scenario.memory_mb,
            cold_start_ms: Stats::of(samples.iter().map(|s| ms(s.cold))),
            warm_ms: Stats::of(samples.iter().flat_map(|s| s.warm.iter().copied().map(ms))),
            init_ms,
            peak_rss_kib,
            cpu_per_run_ms: Stats::of(samples.iter().map(|s| ms(s.cpu))),
            zip_bytes,
            answer,
            budgets,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct CostLine {
    pub case: String,
    pub memory_mb: u32,
    pub billed_ms: u64,
    pub invocations: u64,
    pub compute_usd: f64,
    pub requests_usd: f64,
    pub total_usd: f64,
}

impl CostLine {
    fn new(case: String, memory_mb: u32, duration_ms: f64, invocations: u64) -> CostLine {
        // Lambda bills duration rounded up to the millisecond.
        let billed_ms = duration_ms.ceil().max(1.0) as u64;
        let gb_seconds =
            invocations as f64 * (billed_ms as f64 / 1000.0) * (f64::from(memory_mb) / 1024.0);
        let compute_usd = gb_seconds * PRICE_PER_GB_SECOND;
        let requests_usd = invocations as f64 * PRICE_PER_MILLION_REQUESTS / 1_000_000.0;
        CostLine {
            case,
            memory_mb,
            billed_ms,
            invocations,
            compute_usd,
            requests_usd,
            total_usd: compute_usd + requests_usd,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub host: String,
    pub runs: usize,
    pub warm_per_run: usize,
    pub functions: Vec<FunctionResult>,
    pub tick: Option<TickResult>,
    /// The paths a user waits on, straight to moto and through the latency proxy.
    pub paths: Option<PathsResult>,
    pub cost: Vec<CostLine>,
}

impl Summary {
    pub fn new(
        runs: usize,
        warm_per_run: usize,
        functions: Vec<FunctionResult>,
        tick: Option<TickResult>,
        paths: Option<PathsResult>,
    ) -> Summary {
        let mut cost = Vec::new();
        if let Some(f) = functions.iter().find(|f| f.function == "scale-to-zero") {
            cost.push(CostLine::new(
                "scale-to-zero ticks, 10 groups (warm median)".to_owned(),
                f.memory_mb,
                f.warm_ms.median,
                TICKS_PER_MONTH,
            ));
        }
        if let Some(t) = &tick {
            let warm = Stats::of(t.warm_ms.iter().copied());
            cost.push(CostLine::new(
                format!("scale-to-zero ticks, {} groups (warm median)", t.groups),
                256,
                warm.median,
                TICKS_PER_MONTH,
            ));
        }
        if let Some(p) = &paths {
            for row in p
                .rows
                .iter()
                .filter(|r| r.path.starts_with("schedule tick"))
            {
                cost.push(CostLine::new(
                    format!(
                        "{}, {:.0} ms per AWS call (warm median)",
                        row.path.replace("schedule tick", "scale-to-zero ticks"),
                        p.delay_ms
                    ),
                    256,
                    row.delayed_ms.median,
                    TICKS_PER_MONTH,
                ));
            }
        }
        Summary {
            host: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
            runs,
            warm_per_run,
            functions,
            tick,
            paths,
            cost,
        }
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Host: {} (timings and RSS: native release build; zip: arm64). {} cold runs per \
             function, {} warm invocations each.\n",
            self.host, self.runs, self.warm_per_run
        );
        out.push_str(
            "| function | init median / p95 | cold start median / p95 | warm median | CPU per run (median) | peak RSS (max) | arm64 zip | budgets |\n\
             |---|---|---|---|---|---|---|---|\n",
        );
        for f in &self.functions {
            let zip = f.zip_bytes.map_or_else(
                || "not built".to_owned(),
                |b| format!("{:.2} MB", b as f64 / 1e6),
            );
            let mut missed = Vec::new();
            if !f.budgets.init {
                missed.push("init");
            }
            if f.budgets.zip == Some(false) {
                missed.push("zip");
            }
            if !f.budgets.rss {
                missed.push("RSS");
            }
            let budgets = if missed.is_empty() {
                if f.budgets.zip.is_none() {
                    "met (zip not measured)".to_owned()
                } else {
                    "all met".to_owned()
                }
            } else {
                format!("missed: {}", missed.join(", "))
            };
            let _ = writeln!(
                out,
                "| `{}` | {:.1} / {:.1} ms | {:.1} / {:.1} ms | {:.1} ms | {:.1} ms | {:.1} MiB | {} | {} |",
                f.function,
                f.init_ms.median,
                f.init_ms.p95,
                f.cold_start_ms.median,
                f.cold_start_ms.p95,
                f.warm_ms.median,
                f.cpu_per_run_ms.median,
                f.peak_rss_kib.max / 1024.0,
                zip,
                budgets
            );
        }
        out.push_str("\nEvents (from `events/`):\n\n");
        for f in &self.functions {
            let _ = writeln!(out, "- `{}`: {}", f.function, f.event);
        }
        if let Some(t) = &self.tick {
            let _ = writeln!(
                out,
                "\nscale-to-zero tick over {} managed groups ({} with a queued job): {} API calls, \
                 bound {} → {}.\n",
                t.groups,
                t.groups_with_work,
                t.total_calls,
                t.bound,
                if t.within_bound { "within" } else { "OVER" }
            );
            out.push_str("| action | calls |\n|---|---|\n");
            for (action, count) in &t.calls {
                let _ = writeln!(out, "| `{action}` | {count} |");
            }
            let warm = Stats::of(t.warm_ms.iter().copied());
            let _ = writeln!(
                out,
                "\nTick duration: cold {:.0} ms (init included), warm {} ms (median {:.0}); the \
                 function's own CPU time over all {} ticks: {:.0} ms; peak RSS {:.1} MiB.",
                t.cold_ms,
                t.warm_ms
                    .iter()
                    .map(|w| format!("{w:.0}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                warm.median,
                1 + t.warm_ms.len(),
                t.cpu_ms,
                t.peak_rss_kib as f64 / 1024.0
            );
        }
        if let Some(p) = &self.paths {
            let _ = writeln!(
                out,
                "\nPaths on warm processes ({} events each; rotation: {} rotations), straight to \
                 moto and through the latency proxy holding every AWS call {:.0} ms:\n",
                p.samples, p.samples, p.delay_ms
            );
            let _ = writeln!(
                out,
                "| path | timed until | moto: median / p95 | {:.0} ms per call: median / p95 (max) | AWS calls | goal |\n\
                 |---|---|---|---|---|---|",
                p.delay_ms
            );
            for row in &p.rows {
                if let Some(error) = &row.error {
                    let _ = writeln!(out, "| {} | failed: {error} | | | | |", row.path);
                    continue;
                }
                let goal = row.goal_ms.map_or_else(String::new, |goal| {
                    let met = if row.delayed_ms.median <= goal {
                        "met"
                    } else {
                        "MISSED"
                    };
                    format!("≤ {goal:.0} ms: {met}")
                });
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.1} / {:.1} ms | {:.1} / {:.1} ms ({:.1}) | {} | {} |",
                    row.path,
                    row.until,
                    row.undelayed_ms.median,
                    row.undelayed_ms.p95,
                    row.delayed_ms.median,
                    row.delayed_ms.p95,
                    row.delayed_ms.max,
                    row.calls,
                    goal
                );
            }
        }
        if !self.cost.is_empty() {
            out.push_str(
                "\n| monthly cost case | memory | billed per tick | ticks | compute | requests | total |\n\
                 |---|---|---|---|---|---|---|\n",
            );
            for c in &self.cost {
                let _ = writeln!(
                    out,
                    "| {} | {} MB | {} ms | {} | ${:.4} | ${:.4} | ${:.4} |",
                    c.case,
                    c.memory_mb,
                    c.billed_ms,
                    c.invocations,
                    c.compute_usd,
                    c.requests_usd,
                    c.total_usd
                );
            }
        }
        out
    }
}
