//! The suite's main job on the local stand-ins, narrated step by step (`scripts/local`).
//! Exits 1 when a step fails; the functions' logs stay in `target/local-scenario/`.

use harness::scenario::{self, Options};

#[tokio::main]
async fn main() {
    let root = harness::process::workspace_root();
    let log_dir = root.join("target/local-scenario");
    let _ = std::fs::remove_dir_all(&log_dir);
    if let Err(e) = std::fs::create_dir_all(&log_dir) {
        eprintln!("create {}: {e}", log_dir.display());
        std::process::exit(2);
    }
    let options = Options {
        binaries: root.join("target/debug"),
        root,
        log_dir: log_dir.clone(),
    };
    println!("{}", scenario::header());
    let steps = scenario::run(&options, |step| println!("{}", step.row())).await;
    println!("\n{}", scenario::summary(&steps, &log_dir));
    if steps.iter().any(|s| !s.ok) {
        std::process::exit(1);
    }
}
