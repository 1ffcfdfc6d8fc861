//! The benchmark driver behind `scripts/bench`: per function, cold start (process spawn → first
//! `GET next`, and → first answer) and warm latency on a local Lambda Runtime API stand-in, peak
//! RSS (`wait4`'s `ru_maxrss`), the arm64 zip's size; and the API calls of one scale-to-zero
//! tick over many groups (moto's recorder) against DESIGN.md's bound. AWS calls go to moto.
//! Then the paths whose speed users wait on (a wake, the tick at 10 and at many groups, a Spot
//! warning's detach, rotation's four steps), on warm processes, straight to moto and through
//! the latency proxy, which holds every AWS call for an AWS-like round trip.
//!
//! Usage: `bench [--runs 20] [--warm 5] [--groups 1000] [--functions a,b] [--skip-tick]
//!         [--latency-ms 40] [--paths 20] [--skip-paths]
//!         [--bin-dir target/release] [--zip-dir target/lambda] [--out target/bench]`

#[path = "bench/child.rs"]
mod child;
#[path = "bench/paths.rs"]
mod paths;
#[path = "bench/report.rs"]
mod report;
#[path = "bench/runtime_api.rs"]
mod runtime_api;
#[path = "bench/scenarios.rs"]
mod scenarios;
#[path = "bench/tick.rs"]
mod tick;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use harness::cfn_recorder::CfnResponseRecorder;
use harness::cloudwatch_cbor::CborBridge;
use harness::latency_proxy::LatencyProxy;
use harness::moto::{Moto, REGION};
use hyper::body::Bytes;
use serde_json::Value;

use child::FunctionProcess;
use runtime_api::{Answer, AnswerKind, RuntimeApi};
use scenarios::Scenario;

pub type BenchError = Box<dyn std::error::Error + Send + Sync>;

/// How long one invocation may take before the run is declared stuck (moto can be slow on a
/// busy machine; the 1000-group tick takes seconds).
const ANSWER_LIMIT: Duration = Duration::from_secs(120);

/// The stand-ins every run shares.
pub struct Stage {
    pub moto: Moto,
    pub bridge: CborBridge,
    /// moto behind an AWS-like round trip per call, and the CloudWatch bridge in front of it.
    pub proxy: LatencyProxy,
    pub proxied_bridge: CborBridge,
    pub recorder: CfnResponseRecorder,
    pub autoscaling: aws_sdk_autoscaling::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub sns: aws_sdk_sns::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    /// An empty HOME: like Lambda, no `~/.aws` for the SDK to find.
    pub home: tempfile::TempDir,
}

/// Where a function's AWS calls go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Route {
    Moto,
    LatencyProxy,
}

struct Options {
    runs: usize,
    warm: usize,
    groups: usize,
    functions: Vec<String>,
    skip_tick: bool,
    latency: Duration,
    /// Warm events per path and route.
    path_samples: usize,
    skip_paths: bool,
    bin_dir: PathBuf,
    zip_dir: PathBuf,
    out: PathBuf,
}

/// One cold run of a function: a new process, its first invocation, then `warm` more.
pub struct RunSample {
    pub init: Duration,
    pub cold: Duration,
    pub warm: Vec<Duration>,
    pub peak_rss_kib: u64,
    /// The process's CPU time over the run (init, cold and warm invocations).
    pub cpu: Duration,
    pub first_kind: AnswerKind,
    pub first_body: Bytes,
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args() -> Result<Options, BenchError> {
    let root = harness::process::workspace_root();
    let mut options = Options {
        runs: 20,
        warm: 5,
        groups: 1000,
        functions: scenarios::FUNCTIONS
            .iter()
            .map(|f| f.0.to_owned())
            .collect(),
        skip_tick: false,
        latency: LatencyProxy::DEFAULT_DELAY,
        path_samples: 20,
        skip_paths: false,
        bin_dir: root.join("target/release"),
        zip_dir: root.join("target/lambda"),
        out: root.join("target/bench"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--skip-tick" {
            options.skip_tick = true;
            continue;
        }
        if flag == "--skip-paths" {
            options.skip_paths = true;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<usize>()
                .map_err(|_| format!("{flag}: `{value}` is not a number"))
        };
        match flag.as_str() {
            "--runs" => options.runs = number()?.max(1),
            "--warm" => options.warm = number()?,
            "--groups" => options.groups = number()?.max(10),
            "--latency-ms" => options.latency = Duration::from_millis(number()? as u64),
            "--paths" => options.path_samples = number()?.max(1),
            "--functions" => {
                options.functions = value.split(',').map(str::to_owned).collect();
            }
            "--bin-dir" => options.bin_dir = value.into(),
            "--zip-dir" => options.zip_dir = value.into(),
            "--out" => options.out = value.into(),
            _ => return Err(format!("unknown option {flag}").into()),
        }
    }
    Ok(options)
}

async fn run(options: &Options) -> Result<(), BenchError> {
    for function in &options.functions {
        let binary = options.bin_dir.join(function);
        if !binary.is_file() {
            return Err(format!(
                "{} is missing: build it with `cargo build --release --bins -p {function}`",
                binary.display()
            )
            .into());
        }
    }
    let logs = options.out.join("logs");
    std::fs::create_dir_all(&logs)?;
    let stage = start_stage(options.latency).await?;

    let mut results = Vec::new();
    for function in &options.functions {
        stage.moto.reset().await;
        let scenario = scenarios::prepare(&stage, function).await?;
        let log = logs.join(format!("{function}.log"));
        let _ = std::fs::remove_file(&log);
        eprintln!(
            "[bench] {function}: {} cold runs × (1 + {} warm)",
            options.runs, options.warm
        );
        let mut samples = Vec::with_capacity(options.runs);
        for _ in 0..options.runs {
            let sample = cold_run(
                &stage,
                &options.bin_dir.join(function),
                &scenario,
                options.warm,
                &log,
                |_| {},
            )
            .await
            .map_err(|e| format!("{function}: {e} (log: {})", log.display()))?;
            samples.push(sample);
        }
        let zip = options.zip_dir.join(function).join("bootstrap.zip");
        results.push(report::FunctionResult::new(
            &scenario,
            &samples,
            scenarios::file_size(&zip),
        ));
    }

    let tick = if options.skip_tick {
        None
    } else {
        eprintln!("[bench] scale-to-zero tick over {} groups", options.groups);
        let log = logs.join("scale-to-zero-tick.log");
        let _ = std::fs::remove_file(&log);
        let started = Instant::now();
        let tick = tick::run(
            &stage,
            &options.bin_dir.join("scale-to-zero"),
            &log,
            options.groups,
            10,
            3,
        )
        .await
        .map_err(|e| format!("tick: {e} (log: {})", log.display()))?;
        eprintln!(
            "[bench] tick done ({:.0} s with setup)",
            started.elapsed().as_secs_f64()
        );
        Some(tick)
    };

    let paths = if options.skip_paths {
        None
    } else {
        let started = Instant::now();
        let paths = paths::run(
            &stage,
            &options.bin_dir,
            &logs,
            options.path_samples,
            options.groups,
        )
        .await?;
        eprintln!(
            "[bench] paths done ({:.0} s with setup)",
            started.elapsed().as_secs_f64()
        );
        Some(paths)
    };

    let summary = report::Summary::new(options.runs, options.warm, results, tick, paths);
    std::fs::create_dir_all(&options.out)?;
    let markdown = summary.markdown();
    std::fs::write(options.out.join("results.md"), &markdown)?;
    std::fs::write(
        options.out.join("results.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    println!("{markdown}");
    eprintln!(
        "[bench] wrote {} and results.json",
        options.out.join("results.md").display()
    );
    Ok(())
}

async fn start_stage(latency: Duration) -> Result<Stage, BenchError> {
    let moto = Moto::start().await;
    let bridge = CborBridge::start(moto.endpoint_url()).await;
    let proxy = LatencyProxy::start(moto.endpoint_url(), latency).await;
    let proxied_bridge = CborBridge::start(proxy.url()).await;
    let recorder = CfnResponseRecorder::start().await;
    let sdk = moto.sdk_config().await;
    let cloudwatch = aws_sdk_cloudwatch::Client::from_conf(
        aws_sdk_cloudwatch::config::Builder::from(&sdk)
            .endpoint_url(bridge.url())
            // The bridge speaks uncompressed CBOR only.
            .disable_request_compression(true)
            .build(),
    );
    Ok(Stage {
        autoscaling: aws_sdk_autoscaling::Client::new(&sdk),
        sns: aws_sdk_sns::Client::new(&sdk),
        secrets: aws_sdk_secretsmanager::Client::new(&sdk),
        cloudwatch,
        home: tempfile::Builder::new().prefix("bench-home-").tempdir()?,
        moto,
        bridge,
        proxy,
        proxied_bridge,
        recorder,
    })
}

/// What Lambda puts in a function's environment (provided.al2023, JSON log format), pointed
/// at the stand-ins, plus the function's own variables.
fn lambda_env(stage: &Stage, scenario: &Scenario, api: &RuntimeApi) -> Vec<(String, String)> {
    let name = scenarios::lambda_name(scenario.function);
    let (aws, cloudwatch) = match scenario.route {
        Route::Moto => (stage.moto.endpoint_url(), stage.bridge.url()),
        Route::LatencyProxy => (stage.proxy.url(), stage.proxied_bridge.url()),
    };
    let mut env: Vec<(String, String)> = [
        ("AWS_LAMBDA_RUNTIME_API", api.host_port()),
        ("AWS_LAMBDA_FUNCTION_NAME", name.clone()),
        (
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            scenario.memory_mb.to_string(),
        ),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}")),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "bench".to_owned()),
        ("AWS_LAMBDA_LOG_FORMAT", "JSON".to_owned()),
        ("AWS_LAMBDA_LOG_LEVEL", "INFO".to_owned()),
        ("AWS_REGION", REGION.to_owned()),
        ("AWS_DEFAULT_REGION", REGION.to_owned()),
        // Static test credentials for moto, the shape Lambda gives (session credentials).
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
        ("AWS_SESSION_TOKEN", "testing".to_owned()),
        ("AWS_ENDPOINT_URL", aws.to_owned()),
        ("AWS_ENDPOINT_URL_CLOUDWATCH", cloudwatch.to_owned()),
        ("AWS_DISABLE_REQUEST_COMPRESSION", "true".to_owned()),
        ("RUST_LOG", "info".to_owned()),
        ("HOME", stage.home.path().display().to_string()),
        ("LAMBDA_TASK_ROOT", "/var/task".to_owned()),
        ("TZ", ":UTC".to_owned()),
        ("LANG", "en_US.UTF-8".to_owned()),
        ("PATH", "/usr/local/bin:/usr/bin/:/bin".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    env.extend(scenario.env.iter().cloned());
    env
}

/// One cold run: a fresh runtime API and process; the first event is queued before the spawn.
/// `after_cold` runs once the first answer is in (the tick counts moto's calls there).
pub async fn cold_run(
    stage: &Stage,
    binary: &Path,
    scenario: &Scenario,
    warm: usize,
    log: &Path,
    after_cold: impl FnOnce(&Answer),
) -> Result<RunSample, BenchError> {
    let (mut function, answer) =
        WarmFunction::start(stage, binary, scenario, scenario.event.clone(), log).await?;
    after_cold(&answer);
    let init = function.init()?;
    let cold = answer
        .at
        .saturating_duration_since(function.process.spawned_at);
    let mut warm_times = Vec::with_capacity(warm);
    for _ in 0..warm {
        let (sent, warm_answer) = function.invoke(scenario.event.clone()).await?;
        warm_times.push(warm_answer.at.saturating_duration_since(sent));
    }
    let usage = function.process.kill().await?;
    Ok(RunSample {
        init,
        cold,
        warm: warm_times,
        peak_rss_kib: usage.peak_rss_kib,
        cpu: usage.cpu,
        first_kind: answer.kind,
        first_body: answer.body,
    })
}

/// A function process on its own runtime API, kept to answer one event after another.
pub struct WarmFunction {
    api: RuntimeApi,
    pub process: FunctionProcess,
}

impl WarmFunction {
    /// Queues `first`, spawns the process and waits for its (cold) answer.
    pub async fn start(
        stage: &Stage,
        binary: &Path,
        scenario: &Scenario,
        first: Value,
        log: &Path,
    ) -> Result<(WarmFunction, Answer), BenchError> {
        let mut api = RuntimeApi::start(scenario.arn(), scenario.timeout).await?;
        let pending = api.invoke(first)?;
        let env = lambda_env(stage, scenario, &api);
        let process = FunctionProcess::spawn(binary, &env, log)?;
        let answer = wait_answer(&process, &api, pending).await?;
        Ok((WarmFunction { api, process }, answer))
    }

    /// Spawn → first `GET next`.
    pub fn init(&self) -> Result<Duration, BenchError> {
        Ok(self
            .api
            .first_next()
            .ok_or("answered without asking for an event")?
            .saturating_duration_since(self.process.spawned_at))
    }

    /// Hands `event` to the waiting process; returns when it was handed over and the answer.
    pub async fn invoke(&mut self, event: Value) -> Result<(Instant, Answer), BenchError> {
        let sent = Instant::now();
        let pending = self.api.invoke(event)?;
        let answer = wait_answer(&self.process, &self.api, pending).await?;
        Ok((sent, answer))
    }
}

/// Waits for the answer, failing early when the process has died (init error, crash).
async fn wait_answer(
    process: &FunctionProcess,
    api: &RuntimeApi,
    mut pending: tokio::sync::oneshot::Receiver<Answer>,
) -> Result<Answer, BenchError> {
    let started = Instant::now();
    loop {
        tokio::select! {
            answer = &mut pending => {
                return answer.map_err(|_| "the runtime API dropped the invocation".into());
            }
            () = tokio::time::sleep(Duration::from_millis(20)) => {
                if process.has_exited() {
                    let why = api.init_error().unwrap_or_else(|| "no init error reported".to_owned());
                    return Err(format!("the function exited before answering ({why})").into());
                }
                if started.elapsed() > ANSWER_LIMIT {
                    return Err(format!("no answer within {ANSWER_LIMIT:?}").into());
                }
            }
        }
    }
}
