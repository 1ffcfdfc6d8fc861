use deploy_gate::{DeployGate, aws::AwsGate, config::Config};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;
use shared::{custom_resource::Responder, env_config::EnvVars};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init_tracing();
    let config = Config::from_env(&EnvVars::from_process())?;
    let sdk = shared::aws::load_aws_config(shared::aws::AwsTimeouts::DEPLOY_GATE).await;
    let function = DeployGate::new(
        config,
        AwsGate::new(
            aws_sdk_cloudwatch::Client::new(&sdk),
            aws_sdk_sns::Client::new(&sdk),
            aws_sdk_codedeploy::Client::new(&sdk),
            aws_sdk_cloudformation::Client::new(&sdk),
        ),
        Responder::new(),
    );
    let function = &function;
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        function.handle(event).await
    }))
    .await
}
