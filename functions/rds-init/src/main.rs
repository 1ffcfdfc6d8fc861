use lambda_runtime::{Error, run, service_fn};
use shared::custom_resource::Responder;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init_tracing();
    let responder = Responder::new()?;
    run(service_fn(|event| rds_init::handle(event, &responder))).await
}
