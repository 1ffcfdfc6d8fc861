//! The process reads its root certificates once (`shared::system_roots`) and both of a
//! function's HTTPS clients trust exactly those: the SDK's (`load_aws_config`) and the
//! CloudFormation responder's. Checked over real TLS against a local HTTPS server whose
//! certificate a throwaway CA signed. Each case runs in a child process of this test binary,
//! since the roots are per process (`SSL_CERT_FILE` names the file to read).

use harness::cfn_recorder::CfnResponseRecorder;
use harness::lambda_context::with_deadline_in as context;
use harness::moto::aws_env_for_child;
use harness::tls::TestCa;
use lambda_runtime::LambdaEvent;
use serde_json::{Value, json};
use shared::BoxError;
use shared::custom_resource::{CustomResource, Outcome, Request, Responder};
use std::process::Command;
use std::time::Duration;

const CHILD_MARKER: &str = "ORCHESTRATOR_SYSTEM_ROOTS_CHILD";
const SERVER_URL: &str = "ORCHESTRATOR_SYSTEM_ROOTS_SERVER";
const TEST_NAME: &str = "both_https_clients_trust_the_roots_the_process_read_and_nothing_else";

/// A custom resource that succeeds at once.
struct Succeeds;

impl CustomResource for Succeeds {
    type Properties = Value;

    async fn create(&self, _: &Request, _: Value) -> Result<Outcome, BoxError> {
        Ok(Outcome::new())
    }
    async fn update(&self, _: &Request, _: Value, _: Option<Value>) -> Result<Outcome, BoxError> {
        Ok(Outcome::new())
    }
    async fn delete(&self, _: &Request, _: Value) -> Result<Outcome, BoxError> {
        Ok(Outcome::new())
    }
}

/// In the child: one SDK call and one custom-resource answer to the server, through the
/// production code paths. Returns what each error said (`None`: the request got through).
async fn child(server: &str) -> (Option<String>, Option<String>) {
    let config = shared::aws::load_aws_config(shared::aws::AwsTimeouts::SPOT_INTERRUPTION).await;
    let sdk = aws_sdk_sns::Client::new(&config).list_topics().send().await;
    // The server answers 200 with a body that is no SNS answer: a TLS failure is a dispatch
    // failure, anything else means the request arrived.
    let sdk_error = match sdk {
        Err(aws_sdk_sns::error::SdkError::DispatchFailure(failure)) => {
            Some(format!("{:?}", failure))
        }
        _ => None,
    };
    let event = json!({
        "RequestType": "Create",
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:rds-init",
        "ResponseURL": format!("{server}/cloudformation-custom-resource-response/tls?X-Amz-Signature=5e5e5e5e5e5e"),
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/orchestrator/1a2b",
        "RequestId": "9f1c2d3e-0000-4000-8000-000000000002",
        "LogicalResourceId": "TenantDatabases",
        "ResourceType": "Custom::TenantDatabases",
        "ResourceProperties": {},
    });
    let answered = Responder::new()
        .with_retries(1, Duration::from_millis(10))
        .respond(
            &Succeeds,
            LambdaEvent::new(event, context(Duration::from_secs(30))),
        )
        .await;
    (sdk_error, answered.err().map(|e| e.to_string()))
}

fn run_child(server: &str, ssl_cert_file: Option<&std::path::Path>) -> String {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", TEST_NAME, "--nocapture"])
        .env(CHILD_MARKER, "1")
        .env(SERVER_URL, server);
    aws_env_for_child(&mut command, server)
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR");
    if let Some(file) = ssl_cert_file {
        command.env("SSL_CERT_FILE", file);
    }
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "child failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn both_https_clients_trust_the_roots_the_process_read_and_nothing_else() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    if std::env::var_os(CHILD_MARKER).is_some() {
        let server = std::env::var(SERVER_URL).unwrap();
        let (sdk, responder) = runtime.block_on(child(&server));
        println!("CHILD-RESULT sdk={sdk:?} responder={responder:?}");
        return;
    }

    let ca = TestCa::new();
    let server = runtime.block_on(CfnResponseRecorder::start_tls(&ca));

    // In this process (system roots only), a client built on roots holding the test CA gets
    // through: the SDK's client trusts what it is handed, not a set it loaded itself.
    let handed = shared::system_roots::SystemRoots::read(ca.ca_pem_path());
    let sdk = runtime.block_on(async {
        let config = shared::aws::aws_config_loader(shared::aws::AwsTimeouts::SPOT_INTERRUPTION)
            .http_client(shared::aws::https_client(&handed).unwrap())
            .endpoint_url(server.base_url())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sns::config::Credentials::for_tests())
            .load()
            .await;
        aws_sdk_sns::Client::new(&config).list_topics().send().await
    });
    assert!(
        !matches!(sdk, Err(aws_sdk_sns::error::SdkError::DispatchFailure(_))),
        "{sdk:?}"
    );
    assert_eq!(server.requests().len(), 1);

    // The system roots (what a Lambda reads): they do not vouch for the test CA, so neither
    // client gets a request through the handshake.
    let refused = run_child(&server.base_url(), None);
    let line = refused
        .lines()
        .find(|line| line.starts_with("CHILD-RESULT"))
        .unwrap();
    assert!(
        line.contains("sdk=Some(") && line.contains("responder=Some("),
        "{line}"
    );
    assert!(
        line.matches("UnknownIssuer").count() >= 2,
        "both refused the certificate: {line}"
    );
    assert_eq!(server.requests().len(), 1, "{:?}", server.requests());

    // Roots read from SSL_CERT_FILE, which holds the test CA: both get through.
    let trusted = run_child(&server.base_url(), Some(ca.ca_pem_path()));
    let line = trusted
        .lines()
        .find(|line| line.starts_with("CHILD-RESULT"))
        .unwrap();
    assert_eq!(line, "CHILD-RESULT sdk=None responder=None");
    let requests = server.requests().split_off(1);
    let kinds: Vec<_> = requests
        .iter()
        .map(|request| {
            (
                request.method.as_str(),
                request.uri.split('?').next().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("POST", "/"),
            ("PUT", "/cloudformation-custom-resource-response/tls")
        ]
    );
    assert!(String::from_utf8_lossy(&requests[0].body).contains("Action=ListTopics"));
    assert_eq!(requests[1].json()["Status"], "SUCCESS");
}
