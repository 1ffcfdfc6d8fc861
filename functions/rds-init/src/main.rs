// The handler future (SDK + sqlx + responder) nests deeper than the default layout limit.
#![recursion_limit = "256"]

use lambda_runtime::{Error, run, service_fn};
use rds_init::{Config, TenantDatabases};
use shared::{custom_resource::Responder, env_config::EnvVars};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init_tracing();
    let config = Config::from_env(&EnvVars::from_process())?;
    let aws = shared::aws::load_aws_config(shared::aws::AwsTimeouts::RDS_INIT).await;
    let resource = TenantDatabases::new(aws_sdk_secretsmanager::Client::new(&aws), config);
    let responder = Responder::new();
    run(service_fn(|event| {
        rds_init::handle(event, &resource, &responder)
    }))
    .await
}
