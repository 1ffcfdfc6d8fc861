//! What a function logs, captured: the suite's JSON subscriber (as every `main.rs` installs
//! it) writing into memory, for tests that assert what is logged and what never is (secrets,
//! pre-signed signatures).
//!
//! ```no_run
//! let logs = harness::log_capture::CapturedLogs::default();
//! let _guard = logs.install();
//! tracing::info!(answer = 42, "done");
//! assert!(logs.text().contains("done"));
//! ```

use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::sync::lock;

/// The captured log bytes; clones share them.
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLogs {
    /// Sends this thread's logs here while the guard lives (a `#[tokio::test]` runs on one
    /// thread unless it asks for more).
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        tracing::subscriber::set_default(shared::telemetry::json_subscriber(move || writer.clone()))
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        let bytes = lock(&self.0).clone();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Each line parsed; panics on a line that is not JSON (the suite logs only JSON).
    pub fn lines(&self) -> Vec<Value> {
        self.text()
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"))
            })
            .collect()
    }
}
