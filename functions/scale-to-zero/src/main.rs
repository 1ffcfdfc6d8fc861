use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use scale_to_zero::{ScaleToZero, aws::AwsFleet, config::Config};
use serde_json::Value;
use shared::env_config::EnvVars;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init_tracing();
    let config = Config::from_env(&EnvVars::from_process())?;
    let sdk = shared::aws::load_aws_config(shared::aws::AwsTimeouts::SCALE_TO_ZERO).await;
    let function = ScaleToZero::new(
        config,
        AwsFleet::new(
            aws_sdk_autoscaling::Client::new(&sdk),
            aws_sdk_cloudwatch::Client::new(&sdk),
            aws_sdk_sns::Client::new(&sdk),
        ),
    );
    let function = &function;
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        function.handle(event).await
    }))
    .await
}
