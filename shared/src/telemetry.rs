//! JSON logs through `tracing`, one line per event, with the Lambda request id.
//!
//! `lambda_runtime` wraps every invocation in a span carrying `requestId`; the JSON format
//! prints the current span with each line, so every line of an invocation carries its id
//! (Logs Insights: `filter span.requestId = "…"`).

use tracing_subscriber::{EnvFilter, fmt::MakeWriter};

/// Level when neither `AWS_LAMBDA_LOG_LEVEL` (Lambda's advanced logging controls) nor `RUST_LOG` is set.
const DEFAULT_LEVEL: &str = "info";

/// Installs the JSON subscriber writing to stdout. Call once at the top of `main`; a second
/// call is a no-op.
pub fn init_tracing() {
    let _ = tracing::subscriber::set_global_default(json_subscriber(std::io::stdout));
}

/// The subscriber [`init_tracing`] installs, writing to `writer` (tests capture lines with it).
pub fn json_subscriber<W>(writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .with_env_filter(level_filter())
        .with_writer(writer)
        .finish()
}

fn level_filter() -> EnvFilter {
    let directives = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .map(|level| level.to_lowercase())
        .unwrap_or_else(|_| DEFAULT_LEVEL.to_owned());
    EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new(DEFAULT_LEVEL))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_json_with_the_request_id_of_the_invocation_span() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = json_subscriber(move || writer.clone());
        tracing::subscriber::with_default(subscriber, || {
            // The span lambda_runtime opens around each invocation.
            let span = tracing::info_span!("Lambda runtime invoke", requestId = "req-42");
            let _entered = span.enter();
            tracing::info!(workflow = "img2vid", "group scaled to zero");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["span"]["requestId"], "req-42");
        assert_eq!(line["message"], "group scaled to zero");
        assert_eq!(line["workflow"], "img2vid");
        assert_eq!(line["level"], "INFO");
    }
}
