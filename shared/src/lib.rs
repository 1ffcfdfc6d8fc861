//! What the suite's Lambda functions share: typed configuration from the environment, AWS SDK
//! and tracing setup done once per cold start, the CloudFormation custom-resource protocol
//! (`custom_resource`), which rds-init and deploy-gate answer through and nothing else, and the
//! naming rule of alternating-users rotation (`alternating_users`), which rds-init follows and
//! secret-rotation's rotation must agree with.

pub mod alternating_users;
pub mod aws;
pub mod custom_resource;
#[cfg(feature = "database")]
pub mod database;
pub mod env_config;
pub mod fleet_tags;
pub mod payload;
#[cfg(any(test, feature = "test-util"))]
pub mod sample_events;
pub mod sns_subject;
pub mod system_roots;
pub mod telemetry;

/// The error type handlers return to `lambda_runtime`; domain errors are mapped to it at the edge.
pub type BoxError = lambda_runtime::Error;

/// The error Lambda reports for a failed invocation: a stable `errorType` a person (or a
/// metric filter) can match on, and the error with its causes as `errorMessage`. Functions
/// implement `From<TheirError> for Diagnostic` with it, so the console does not show a Rust
/// type name.
pub fn diagnostic(
    error_type: &str,
    error: &(dyn std::error::Error + 'static),
) -> lambda_runtime::Diagnostic {
    lambda_runtime::Diagnostic {
        error_type: error_type.to_owned(),
        error_message: error_chain(error),
    }
}

/// An error and its sources as one line (`outer: inner: root`), skipping a source whose text
/// the previous message already contains.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}
