use lambda_runtime::{Error, run, service_fn};
use secret_rotation::{Rotator, config::RotationConfig};
use shared::env_config::EnvVars;

#[tokio::main]
async fn main() -> Result<(), Error> {
    // shared::telemetry's JSON subscriber, minus sqlx's statement text (it would carry passwords).
    let _ = tracing::subscriber::set_global_default(secret_rotation::without_statement_text(
        shared::telemetry::json_subscriber(std::io::stdout),
    ));
    let config = RotationConfig::from_env(&EnvVars::from_process())?;
    let aws = shared::aws::load_aws_config().await;
    let rotator = Rotator::new(aws_sdk_secretsmanager::Client::new(&aws), config);
    let rotator = &rotator;
    run(service_fn(move |event| rotator.handle(event))).await
}
