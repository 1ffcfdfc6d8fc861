//! The sample events in the repository's `events/<function>/` folders, as the tests and the
//! benchmark read them: one loader for every crate (feature `test-util`, so no Lambda binary
//! carries it).

use std::path::PathBuf;

use serde_json::Value;

/// The workspace's `events/` folder.
pub fn events_dir() -> PathBuf {
    // This crate sits at `<workspace>/shared`.
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../events")
}

/// `events/<function>/<name>` as JSON; the error names the file.
pub fn try_sample(function: &str, name: &str) -> Result<Value, String> {
    let path = events_dir().join(function).join(name);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("read sample event {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("parse sample event {}: {e}", path.display()))
}

/// `events/<function>/<name>` as JSON, for tests: panics naming the file when it is missing
/// or not JSON.
pub fn sample(function: &str, name: &str) -> Value {
    try_sample(function, name).unwrap_or_else(|e| panic!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_event_is_json_and_a_missing_one_is_named() {
        let mut read = 0;
        for function in std::fs::read_dir(events_dir()).unwrap().flatten() {
            for file in std::fs::read_dir(function.path()).unwrap().flatten() {
                let function = function.file_name().into_string().unwrap();
                let name = file.file_name().into_string().unwrap();
                assert!(try_sample(&function, &name).is_ok(), "{function}/{name}");
                read += 1;
            }
        }
        assert!(read >= 5, "{read} samples");
        let missing = try_sample("deploy-gate", "nope.json").unwrap_err();
        assert!(
            missing.contains("events/deploy-gate/nope.json"),
            "{missing}"
        );
    }
}
