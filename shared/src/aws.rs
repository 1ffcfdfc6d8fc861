//! AWS SDK configuration, loaded once per cold start and shared by every client.

use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response as HttpResponse;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// Error codes AWS services use for throttling (the SDK's own retry list, plus the Auto
/// Scaling and CloudWatch spellings).
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
];

/// Loads the SDK configuration from the Lambda environment (region, credentials).
///
/// The only local override is the SDK's own `AWS_ENDPOINT_URL` (and
/// `AWS_ENDPOINT_URL_<SERVICE>`), which the SDK reads itself: pointing the suite at a local
/// stand-in needs no code path of its own, so what runs locally is what runs in AWS.
pub async fn load_aws_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// An AWS call that failed, with what was being done: the adapters' error, so handlers can
/// tell a retryable failure from one to report.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation} failed: {message}")]
pub struct AwsError {
    pub operation: String,
    pub message: String,
    /// Throttling, 5xx, timeout or network failure: a retry can succeed ([`is_transient`]).
    pub transient: bool,
}

impl AwsError {
    /// `operation` names the call and what it was about (`DescribeStacks (<stack id>)`).
    pub fn from_sdk<E>(operation: impl Into<String>, error: SdkError<E, HttpResponse>) -> AwsError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        AwsError {
            operation: operation.into(),
            transient: is_transient(&error),
            message: DisplayErrorContext(&error).to_string(),
        }
    }
}

/// Whether an AWS call failed for a reason a later retry can fix: throttling, a 5xx, a
/// timeout or a network failure. Handlers return such errors so Lambda retries the event;
/// anything else (bad input, missing permission, unknown resource) is reported and not
/// retried forever.
pub fn is_transient<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> bool {
    match error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => {
            let throttled = service
                .err()
                .code()
                .is_some_and(|code| THROTTLING_CODES.contains(&code));
            throttled || service.raw().status().is_server_error()
        }
        // Construction failures are bugs or bad input; unknown variants are not assumed safe.
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::{body::SdkBody, error::ErrorMetadata};

    fn service_error(code: &str, status: u16) -> SdkError<ErrorMetadata, HttpResponse> {
        let metadata = ErrorMetadata::builder().code(code).build();
        let raw = HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::empty());
        SdkError::service_error(metadata, raw)
    }

    #[test]
    fn throttling_and_server_errors_are_transient() {
        assert!(is_transient(&service_error("Throttling", 400)));
        assert!(is_transient(&service_error("ThrottlingException", 400)));
        assert!(is_transient(&service_error("InternalFailure", 500)));
        assert!(is_transient(&service_error("ServiceUnavailable", 503)));
        assert!(is_transient(
            &SdkError::<ErrorMetadata, HttpResponse>::timeout_error("slow")
        ));
    }

    #[test]
    fn an_sdk_error_keeps_the_operation_the_code_and_whether_to_retry() {
        let throttled = AwsError::from_sdk("Publish (verdict)", service_error("Throttling", 400));
        assert!(throttled.transient);
        let denied = AwsError::from_sdk("DescribeStacks (s)", service_error("AccessDenied", 403));
        assert!(!denied.transient);
        let text = denied.to_string();
        assert!(
            text.starts_with("DescribeStacks (s) failed: ") && text.contains("AccessDenied"),
            "{text}"
        );
    }

    #[test]
    fn client_errors_are_not() {
        assert!(!is_transient(&service_error("ValidationError", 400)));
        assert!(!is_transient(&service_error("AccessDenied", 403)));
        assert!(!is_transient(&service_error("ResourceNotFound", 404)));
    }
}
