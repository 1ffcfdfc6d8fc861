//! The functions as Lambda runs them: `cargo lambda watch --only-lambda-apis` serves the
//! Lambda Runtime API, each function's binary polls it under its own name with the
//! environment CloudFormation gave the function, and `cargo lambda invoke` sends the events.
//!
//! The binaries are started here rather than by `cargo lambda watch` itself because watch
//! gives every function one shared environment and would rebuild them with its own `cargo run`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::deadline::DeadlineProxy;
use crate::process::{ServerProcess, StopSignal, free_port, log_tail, process_is_running};

/// How long `cargo lambda invoke` waits for an answer.
const INVOKE_TIMEOUT: Duration = Duration::from_secs(120);

/// The Runtime API and the function processes polling it; all stopped when dropped.
pub struct LocalLambda {
    cargo_lambda: PathBuf,
    port: u16,
    log_dir: PathBuf,
    _watch: ServerProcess,
    functions: BTreeMap<String, (ServerProcess, DeadlineProxy)>,
}

impl LocalLambda {
    /// Starts `cargo lambda watch --only-lambda-apis` on a free port of 127.0.0.1 in the
    /// workspace `root`, with its log in `log_dir`.
    pub async fn start(root: &Path, log_dir: &Path) -> Result<LocalLambda, String> {
        let cargo_lambda = root.join(".venv/bin/cargo-lambda");
        if !cargo_lambda.is_file() {
            return Err(format!(
                "{} is missing: run scripts/setup to install cargo-lambda",
                cargo_lambda.display()
            ));
        }
        let port = free_port();
        let mut command = Command::new(&cargo_lambda);
        command
            .args(["lambda", "watch", "--only-lambda-apis", "--ignore-changes"])
            .args(["--invoke-address", "127.0.0.1", "--invoke-port"])
            .arg(port.to_string())
            .arg("--timeout")
            .arg(INVOKE_TIMEOUT.as_secs().to_string())
            .current_dir(root);
        let log = log_dir.join("cargo-lambda-watch.log");
        let mut watch = ServerProcess::spawn(command, &log, StopSignal::Terminate)
            .map_err(|e| format!("spawn cargo lambda watch: {e}"))?;
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(LocalLambda {
                    cargo_lambda,
                    port,
                    log_dir: log_dir.to_path_buf(),
                    _watch: watch,
                    functions: BTreeMap::new(),
                });
            }
            if let Ok(Some(status)) = watch.try_wait() {
                return Err(format!(
                    "cargo lambda watch exited ({status}):\n{}",
                    watch.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!(
            "cargo lambda watch did not listen on port {port} within 30 s:\n{}",
            watch.log_tail()
        ))
    }

    /// Starts `binary` as the function `name`: a clean environment (nothing inherited, as on
    /// Lambda) made of `env` plus the Runtime API variables Lambda sets; each event's deadline
    /// is `timeout` after the function receives it.
    pub async fn start_function(
        &mut self,
        name: &str,
        binary: &Path,
        memory_mb: u64,
        timeout: Duration,
        env: &BTreeMap<String, String>,
    ) -> Result<(), String> {
        if !binary.is_file() {
            return Err(format!(
                "{} is missing: build the functions first (cargo build --bins)",
                binary.display()
            ));
        }
        let proxy = DeadlineProxy::start(
            format!("http://127.0.0.1:{}/.rt/{name}", self.port),
            timeout,
        )
        .await
        .map_err(|e| format!("start the Runtime API proxy for {name}: {e}"))?;
        let mut command = Command::new(binary);
        command
            .env_clear()
            .envs(env)
            .env("AWS_LAMBDA_RUNTIME_API", proxy.runtime_api())
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory_mb.to_string());
        if !env.contains_key("AWS_LAMBDA_FUNCTION_NAME") {
            command.env("AWS_LAMBDA_FUNCTION_NAME", name);
        }
        let log = self.log_path(name);
        let process = ServerProcess::spawn(command, &log, StopSignal::Terminate)
            .map_err(|e| format!("spawn {}: {e}", binary.display()))?;
        self.functions.insert(name.to_owned(), (process, proxy));
        Ok(())
    }

    /// Invokes `name` with `event` through `cargo lambda invoke` and returns the function's
    /// JSON response; a function error (or no answer) is an `Err` with its message.
    pub async fn invoke(&self, name: &str, event: &Value) -> Result<Value, String> {
        let data = self.log_dir.join(format!("event-{name}.json"));
        let text = serde_json::to_string_pretty(event).map_err(|e| e.to_string())?;
        std::fs::write(&data, text).map_err(|e| format!("write {}: {e}", data.display()))?;
        let output = tokio::process::Command::new(&self.cargo_lambda)
            .args(["lambda", "invoke", name, "--invoke-address", "127.0.0.1"])
            .arg("--invoke-port")
            .arg(self.port.to_string())
            .arg("--data-file")
            .arg(&data)
            .args(["--output-format", "json", "--color", "never"])
            .kill_on_drop(true)
            .output();
        let pid = self
            .functions
            .get(name)
            .map(|(process, _)| process.pid())
            .ok_or_else(|| format!("{name} was not started"))?;
        // A function that dies never answers: stop waiting as soon as it is gone.
        let died = async {
            while process_is_running(pid) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        let output = tokio::select! {
            output = tokio::time::timeout(INVOKE_TIMEOUT + Duration::from_secs(10), output) => output
                .map_err(|_| format!("cargo lambda invoke {name}: no answer"))?
                .map_err(|e| format!("run cargo lambda invoke: {e}"))?,
            () = died => return Err(format!("{name} exited instead of answering")),
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        if output.status.success() {
            return serde_json::from_str(stdout.trim()).map_err(|e| {
                format!("{name} answered with something other than JSON ({e}): {stdout}")
            });
        }
        // The function's error (errorType / errorMessage) as cargo lambda prints it.
        let stderr = String::from_utf8_lossy(&output.stderr);
        let message: Vec<&str> = stderr
            .lines()
            .chain(stdout.lines())
            .map(|line| line.trim_matches(|c: char| c.is_whitespace() || "│×╰─╭".contains(c)))
            .filter(|line| !line.is_empty())
            .collect();
        Err(message.join(" "))
    }

    /// The end of a function's log (for a failed step's report).
    pub fn log_tail(&self, name: &str) -> String {
        log_tail(&self.log_path(name))
    }

    /// Where a function's output goes.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.log_dir.join(format!("{name}.log"))
    }
}
