//! AWS SDK configuration, loaded once per cold start and shared by every client.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, SdkConfig};
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response as HttpResponse;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::system_roots::SystemRoots;

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

/// How long one function's AWS calls may take. The SDK alone sets only a connect timeout, so a
/// call that connects and then stalls would run until the Lambda timeout; with these it ends
/// as `SdkError::TimeoutError`, which [`is_transient`] counts as retryable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AwsTimeouts {
    /// Opening the connection (TCP and TLS).
    pub connect: Duration,
    /// One HTTP attempt, connecting included; a stalled attempt is retried.
    pub attempt: Duration,
    /// The whole call: every attempt and the backoff between them.
    pub operation: Duration,
    /// Attempts per call, standard retry mode (throttling, 5xx, timeouts, network errors).
    pub max_attempts: u32,
}

impl AwsTimeouts {
    /// 30 s timeout inside a 2-minute Spot warning: a stalled call gives up in 6 s, so the
    /// failed invocation is retried while the instance still runs (Auto Scaling and SNS
    /// answer in well under a second).
    pub const SPOT_INTERRUPTION: AwsTimeouts = AwsTimeouts {
        connect: Duration::from_secs(1),
        attempt: Duration::from_secs(2),
        operation: Duration::from_secs(6),
        max_attempts: 3,
    };

    /// 60 s timeout, a few rounds of calls per invocation (describe pages, `GetMetricData`,
    /// capacity changes, `PutMetricData`): a stall fails the invocation with 50 s to spare,
    /// and the next minute's tick tries again anyway.
    pub const SCALE_TO_ZERO: AwsTimeouts = AwsTimeouts {
        connect: Duration::from_secs(2),
        attempt: Duration::from_secs(3),
        operation: Duration::from_secs(10),
        max_attempts: 3,
    };

    /// 60 s timeout shared with database logins (`DB_CONNECT_TIMEOUT_SECONDS`, up to three in
    /// setSecret): a stalled Secrets Manager call fails the step in 10 s, and Secrets Manager
    /// retries it.
    pub const SECRET_ROTATION: AwsTimeouts = AwsTimeouts {
        connect: Duration::from_secs(2),
        attempt: Duration::from_secs(3),
        operation: Duration::from_secs(10),
        max_attempts: 3,
    };

    /// 300 s timeout, a handful of `GetSecretValue` calls from inside the VPC (through a NAT
    /// or an endpoint, so more room per attempt): a stall answers FAILED in 15 s instead of at
    /// the responder's deadline guard.
    pub const RDS_INIT: AwsTimeouts = AwsTimeouts {
        connect: Duration::from_secs(3),
        attempt: Duration::from_secs(5),
        operation: Duration::from_secs(15),
        max_attempts: 3,
    };

    /// 900 s timeout, but the bake keeps only 9 s after its last measurement (4 s to report,
    /// 5 s deadline margin) for the SNS publish and the CodeDeploy answer: 2 x 4 s fits, and a
    /// poll's calls end inside its 6 s measurement limit with their own error (the next poll,
    /// 30 s later, tries again).
    pub const DEPLOY_GATE: AwsTimeouts = AwsTimeouts {
        connect: Duration::from_secs(1),
        attempt: Duration::from_secs(2),
        operation: Duration::from_secs(4),
        max_attempts: 3,
    };

    fn timeout_config(self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect)
            .operation_attempt_timeout(self.attempt)
            .operation_timeout(self.operation)
            .build()
    }

    fn retry_config(self) -> RetryConfig {
        RetryConfig::standard().with_max_attempts(self.max_attempts)
    }
}

/// Loads the SDK configuration from the Lambda environment (region, credentials), with the
/// function's `timeouts` and standard retries for every client built from it.
///
/// The only local override is the SDK's own `AWS_ENDPOINT_URL` (and
/// `AWS_ENDPOINT_URL_<SERVICE>`), which the SDK reads itself: pointing the suite at a local
/// stand-in needs no code path of its own, so what runs locally is what runs in AWS.
pub async fn load_aws_config(timeouts: AwsTimeouts) -> SdkConfig {
    aws_config_loader(timeouts).load().await
}

/// The loader [`load_aws_config`] uses, before it reads the environment: tests add an
/// endpoint, region and credentials to it and get the production timeouts and retries.
pub fn aws_config_loader(timeouts: AwsTimeouts) -> ConfigLoader {
    let loader = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(timeouts.timeout_config())
        .retry_config(timeouts.retry_config());
    match https_client(SystemRoots::get()) {
        Some(client) => loader.http_client(client),
        None => loader,
    }
}

/// The SDK's own HTTPS client (hyper, rustls with aws-lc), trusting `roots` and nothing else:
/// the process's one copy of the system roots instead of a second load by the SDK. `None`
/// without roots, so the SDK keeps its own loader.
pub fn https_client(roots: &SystemRoots) -> Option<SharedHttpClient> {
    if roots.is_empty() {
        return None;
    }
    let trust = TrustStore::empty()
        .with_native_roots(false)
        .with_pem_certificate(roots.pem());
    let context = TlsContext::builder().with_trust_store(trust).build().ok()?;
    Some(
        aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
            .tls_context(context)
            .build_https(),
    )
}

/// The `errorType` of every function's invocation that failed on an AWS call a retry can fix
/// (throttling, 5xx, timeouts, network): one name, so one alarm or log query finds them all.
pub const RETRYABLE_ERROR_TYPE: &str = "RetryableAwsError";
/// The `errorType` of an AWS call that failed for good (permissions, bad input, a missing
/// resource).
pub const FAILED_ERROR_TYPE: &str = "AwsRequestFailed";

/// An AWS call that failed, with what was being done: every adapter's error (the only AWS
/// error type of the suite), so handlers can tell a retryable failure from one to report.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation} failed: {message}")]
pub struct AwsError {
    pub operation: String,
    pub message: String,
    /// Throttling, 5xx, timeout or network failure: a retry can succeed ([`is_transient`]).
    pub transient: bool,
    /// The service's error code (`ValidationError`, `AccessDeniedException`, …), when it sent one.
    pub code: Option<String>,
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
            code: error.code().map(str::to_owned),
            message: DisplayErrorContext(&error).to_string(),
        }
    }

    /// [`RETRYABLE_ERROR_TYPE`] or [`FAILED_ERROR_TYPE`].
    pub fn error_type(&self) -> &'static str {
        if self.transient {
            RETRYABLE_ERROR_TYPE
        } else {
            FAILED_ERROR_TYPE
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
        assert_eq!(throttled.error_type(), "RetryableAwsError");
        let denied = AwsError::from_sdk("DescribeStacks (s)", service_error("AccessDenied", 403));
        assert!(!denied.transient);
        assert_eq!(denied.error_type(), "AwsRequestFailed");
        assert_eq!(denied.code.as_deref(), Some("AccessDenied"));
        let text = denied.to_string();
        assert!(
            text.starts_with("DescribeStacks (s) failed: ") && text.contains("AccessDenied"),
            "{text}"
        );
    }

    const PRESETS: [AwsTimeouts; 5] = [
        AwsTimeouts::SPOT_INTERRUPTION,
        AwsTimeouts::SCALE_TO_ZERO,
        AwsTimeouts::SECRET_ROTATION,
        AwsTimeouts::RDS_INIT,
        AwsTimeouts::DEPLOY_GATE,
    ];

    #[test]
    fn every_preset_retries_a_stalled_attempt_within_its_operation_timeout() {
        for timeouts in PRESETS {
            assert!(timeouts.connect <= timeouts.attempt, "{timeouts:?}");
            assert!(timeouts.attempt < timeouts.operation, "{timeouts:?}");
            assert!(timeouts.max_attempts >= 2, "{timeouts:?}");
        }
    }

    #[tokio::test]
    async fn the_loaded_config_carries_the_timeouts_and_standard_retries() {
        let timeouts = AwsTimeouts::SPOT_INTERRUPTION;
        let config = aws_config_loader(timeouts)
            .empty_test_environment()
            .test_credentials()
            .load()
            .await;
        let timeout = config.timeout_config().expect("a timeout config");
        assert_eq!(timeout.connect_timeout(), Some(timeouts.connect));
        assert_eq!(timeout.operation_attempt_timeout(), Some(timeouts.attempt));
        assert_eq!(timeout.operation_timeout(), Some(timeouts.operation));
        let retry = config.retry_config().expect("a retry config");
        assert_eq!(retry.mode(), aws_config::retry::RetryMode::Standard);
        assert_eq!(retry.max_attempts(), timeouts.max_attempts);
    }

    #[test]
    fn client_errors_are_not() {
        assert!(!is_transient(&service_error("ValidationError", 400)));
        assert!(!is_transient(&service_error("AccessDenied", 403)));
        assert!(!is_transient(&service_error("ResourceNotFound", 404)));
    }
}
