//! The Lambda invocation context a test hands a handler, as Lambda builds it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_runtime::Context;

/// A context whose deadline is `left` from now, with a fixed request id (`lambda-request-1`).
pub fn with_deadline_in(left: Duration) -> Context {
    let mut context = Context::default();
    context.request_id = "lambda-request-1".into();
    let deadline = SystemTime::now() + left;
    context.deadline = deadline
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64);
    context
}
