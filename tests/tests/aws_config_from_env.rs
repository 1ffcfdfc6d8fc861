//! `shared::aws::load_aws_config` needs no code path of its own for local runs: the SDK's
//! standard `AWS_ENDPOINT_URL` points every client at the stand-in. The check runs in a child
//! process of this test binary that gets the variables from its parent, so no test mutates
//! the process environment.

use harness::moto::{Moto, aws_env_for_child};
use std::process::Command;

const CHILD_MARKER: &str = "ORCHESTRATOR_AWS_CONFIG_CHILD";
const TEST_NAME: &str = "load_aws_config_follows_aws_endpoint_url";
const TOPIC: &str = "created-through-aws-endpoint-url";

#[test]
fn load_aws_config_follows_aws_endpoint_url() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    if std::env::var_os(CHILD_MARKER).is_some() {
        // In the child: only the environment says where AWS is.
        runtime.block_on(async {
            let config =
                shared::aws::load_aws_config(shared::aws::AwsTimeouts::SPOT_INTERRUPTION).await;
            aws_sdk_sns::Client::new(&config)
                .create_topic()
                .name(TOPIC)
                .send()
                .await
                .expect("create a topic through the endpoint from AWS_ENDPOINT_URL");
        });
        return;
    }

    let moto = runtime.block_on(Moto::start());
    let mut child = Command::new(std::env::current_exe().unwrap());
    child
        .args(["--exact", TEST_NAME, "--nocapture"])
        .env(CHILD_MARKER, "1");
    let output = aws_env_for_child(&mut child, moto.endpoint_url())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "child failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    // The topic exists in this moto, so the child's client really talked to it.
    let topics = runtime.block_on(async {
        aws_sdk_sns::Client::new(&moto.sdk_config().await)
            .list_topics()
            .send()
            .await
            .unwrap()
            .topics
            .unwrap_or_default()
    });
    assert!(
        topics.iter().any(|t| t
            .topic_arn()
            .is_some_and(|arn| arn.ends_with(&format!(":{TOPIC}")))),
        "topic not found in moto: {topics:?}"
    );
}
