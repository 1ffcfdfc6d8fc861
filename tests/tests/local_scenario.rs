//! The README's first command, `scripts/local`, as a test: the suite's main job on the local
//! stand-ins must get through every step (see `harness::scenario` for the steps).

use std::process::Command;

use harness::process::workspace_root;
use harness::scenario::{self, Options};

/// The function binaries the scenario runs are the ones this checkout builds: `cargo build
/// --bins` (a no-op when scripts/test has just built them) so a stale binary is never tested.
fn build_function_binaries() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .args(["build", "--bins", "--locked", "--quiet"])
        .current_dir(workspace_root())
        .status()
        .expect("run cargo build --bins");
    assert!(status.success(), "cargo build --bins failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_scenario_gets_through_every_step() {
    build_function_binaries();
    let root = workspace_root();
    // Kept after the run (in target/), so a CI failure leaves the functions' logs to read.
    let log_dir = root.join("target/local-scenario-test");
    let _ = std::fs::remove_dir_all(&log_dir);
    std::fs::create_dir_all(&log_dir).unwrap();
    let options = Options {
        binaries: root.join("target/debug"),
        root,
        log_dir: log_dir.clone(),
    };
    let steps = scenario::run(&options, |step| eprintln!("{}", step.row())).await;
    let summary = scenario::summary(&steps, &log_dir);
    assert!(
        steps.iter().all(|s| s.ok),
        "{summary}\n\n{}",
        steps.iter().map(|s| s.row()).collect::<Vec<_>>().join("\n")
    );
    // Every step of the scenario ran (a step silently dropped would not fail above).
    assert_eq!(steps.len(), 20, "{summary}");
}
