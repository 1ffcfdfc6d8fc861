// The handler future nests the SDK futures of three clients joined together; its layout needs
// more than the default 128 levels of query depth to compute.
#![recursion_limit = "256"]

use lambda_runtime::{Error, run, service_fn};
use shared::env_config::EnvVars;
use spot_interruption::{Config, SpotAws};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init_tracing();
    let config = Config::from_env(&EnvVars::from_process())?;
    let sdk_config =
        shared::aws::load_aws_config(shared::aws::AwsTimeouts::SPOT_INTERRUPTION).await;
    let fleet = SpotAws::new(
        config,
        aws_sdk_autoscaling::Client::new(&sdk_config),
        aws_sdk_sns::Client::new(&sdk_config),
        aws_sdk_dynamodb::Client::new(&sdk_config),
    );
    let fleet = &fleet;
    run(service_fn(move |event| {
        spot_interruption::handle(event, fleet)
    }))
    .await
}
