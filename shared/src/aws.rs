//! AWS SDK configuration, loaded once per cold start and shared by every client.

use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response as HttpResponse;
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
    fn client_errors_are_not() {
        assert!(!is_transient(&service_error("ValidationError", 400)));
        assert!(!is_transient(&service_error("AccessDenied", 403)));
        assert!(!is_transient(&service_error("ResourceNotFound", 404)));
    }
}
