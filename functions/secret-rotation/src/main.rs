use lambda_runtime::{Error, run, service_fn};
use secret_rotation::{Rotator, config::RotationConfig};
use shared::env_config::EnvVars;

#[tokio::main]
async fn main() -> Result<(), Error> {
    // sqlx's statement logging is off in shared::database, so no password reaches a log line.
    shared::telemetry::init_tracing();
    let config = RotationConfig::from_env(&EnvVars::from_process())?;
    let aws = shared::aws::load_aws_config(shared::aws::AwsTimeouts::SECRET_ROTATION).await;
    let rotator = Rotator::new(aws_sdk_secretsmanager::Client::new(&aws), config)
        .with_elasticache(aws_sdk_elasticache::Client::new(&aws));
    let rotator = &rotator;
    run(service_fn(move |event| rotator.handle(event))).await
}
