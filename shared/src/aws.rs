//! AWS SDK configuration, loaded once per cold start and shared by every client.

use aws_config::{BehaviorVersion, SdkConfig};

/// Loads the SDK configuration from the Lambda environment (region, credentials).
///
/// The only local override is the SDK's own `AWS_ENDPOINT_URL` (and
/// `AWS_ENDPOINT_URL_<SERVICE>`), which the SDK reads itself: pointing the suite at a local
/// stand-in needs no code path of its own, so what runs locally is what runs in AWS.
pub async fn load_aws_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}
