//! Every rule of the CloudFormation custom-resource protocol, checked over real HTTP: the
//! shared `Responder` PUTs its answers to a local server that records them.

use harness::cfn_recorder::{CfnResponseRecorder, RecordedRequest, Reply, presigned_response_url};
use harness::lambda_context::with_deadline_in as context;
use harness::log_capture::CapturedLogs;
use lambda_runtime::LambdaEvent;
use serde::Deserialize;
use serde_json::{Value, json};
use shared::{
    BoxError,
    custom_resource::{
        CREATE_FAILED_PREFIX, CustomResource, Outcome, Request, Responder, ResponderError, Status,
        lenient,
    },
};
use std::{
    hash::{BuildHasher, RandomState},
    sync::Mutex,
    time::{Duration, SystemTime},
};

const WAIT: Duration = Duration::from_secs(10);
const STACK_ID: &str = "arn:aws:cloudformation:us-east-1:123456789012:stack/orchestrator/1a2b";

/// What the test resource does, chosen by its `Mode` property.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    #[default]
    Ok,
    Fail,
    Panic,
    Hang,
    HugeData,
    LongError,
    Replace,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct Props {
    #[serde(deserialize_with = "lenient::number")]
    bake_seconds: u64,
    #[serde(default, deserialize_with = "lenient::optional_bool")]
    remove_on_delete: Option<bool>,
    #[serde(default)]
    mode: Mode,
}

/// Records each call it gets, then behaves as its properties say.
#[derive(Default)]
struct TestResource {
    calls: Mutex<Vec<(String, Props, Option<Props>)>>,
}

impl TestResource {
    fn calls(&self) -> Vec<(String, Props, Option<Props>)> {
        self.calls.lock().unwrap().clone()
    }

    async fn act(&self, step: &str, props: Props, old: Option<Props>) -> Result<Outcome, BoxError> {
        self.calls
            .lock()
            .unwrap()
            .push((step.to_owned(), props.clone(), old));
        match props.mode {
            Mode::Ok => Ok(Outcome::new()
                .data("BakeSeconds", props.bake_seconds.to_string())
                .data("RemoveOnDelete", format!("{:?}", props.remove_on_delete))),
            Mode::Fail => {
                Err(std::io::Error::other("database tenant_pool_1 is unreachable").into())
            }
            Mode::Panic => panic!("boom in {step}"),
            Mode::Hang => {
                tokio::time::sleep(Duration::from_secs(600)).await;
                Ok(Outcome::new())
            }
            Mode::HugeData => Ok(Outcome::new().data("Blob", "x".repeat(5000))),
            Mode::LongError => Err(format!("bad: {}", "é\"".repeat(4000)).into()),
            Mode::Replace => Ok(Outcome::new().physical_resource_id("replacement-id")),
        }
    }
}

impl CustomResource for TestResource {
    type Properties = Props;

    async fn create(&self, _: &Request, props: Props) -> Result<Outcome, BoxError> {
        self.act("create", props, None).await
    }
    async fn update(
        &self,
        _: &Request,
        props: Props,
        old: Option<Props>,
    ) -> Result<Outcome, BoxError> {
        self.act("update", props, old).await
    }
    async fn delete(&self, _: &Request, props: Props) -> Result<Outcome, BoxError> {
        self.act("delete", props, None).await
    }
}

fn event(request_type: &str, url: &str, props: Value) -> Value {
    let mut properties =
        json!({ "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:gate" });
    properties
        .as_object_mut()
        .unwrap()
        .extend(props.as_object().unwrap().clone());
    json!({
        "RequestType": request_type,
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:gate",
        "ResponseURL": url,
        "StackId": STACK_ID,
        "RequestId": "9f1c2d3e-0000-4000-8000-000000000001",
        "LogicalResourceId": "DeployGate",
        "ResourceType": "Custom::DeployGate",
        "ResourceProperties": properties,
    })
}

fn with(mut event: Value, key: &str, value: Value) -> Value {
    event[key] = value;
    event
}

fn responder() -> Responder {
    Responder::new().with_retries(5, Duration::from_millis(20))
}

async fn invoke(
    resource: &TestResource,
    payload: Value,
) -> Result<shared::custom_resource::Answered, ResponderError> {
    responder()
        .respond(
            resource,
            LambdaEvent::new(payload, context(Duration::from_secs(60))),
        )
        .await
}

/// The single response the recorder received, checked for the fields every response carries.
async fn only_response(recorder: &CfnResponseRecorder) -> RecordedRequest {
    let requests = recorder.wait_for(1, WAIT).await;
    assert_eq!(requests.len(), 1, "exactly one response expected");
    let response = requests.into_iter().next().unwrap();
    assert_eq!(response.method, "PUT");
    assert!(
        response.body.len() <= 4096,
        "body is {} bytes",
        response.body.len()
    );
    response
}

#[tokio::test]
async fn create_answers_success_with_empty_content_type_and_a_stable_physical_id() {
    let recorder = CfnResponseRecorder::start().await;
    let resource = TestResource::default();
    let url = recorder.response_url("create");
    let answered = invoke(
        &resource,
        event("Create", &url, json!({"BakeSeconds": 300})),
    )
    .await
    .unwrap();

    let response = only_response(&recorder).await;
    assert!(
        response
            .uri
            .starts_with("/cloudformation-custom-resource-response/create?X-Amz-Algorithm")
    );
    assert_eq!(
        response.header("content-type"),
        Some(""),
        "pre-signed URLs expect an empty content type"
    );
    let body = response.json();
    assert_eq!(body["Status"], "SUCCESS");
    assert_eq!(body["StackId"], STACK_ID);
    assert_eq!(body["RequestId"], "9f1c2d3e-0000-4000-8000-000000000001");
    assert_eq!(body["LogicalResourceId"], "DeployGate");
    assert_eq!(
        body["PhysicalResourceId"],
        "DeployGate-9f1c2d3e-0000-4000-8000-000000000001"
    );
    assert_eq!(body["Data"]["BakeSeconds"], "300");
    assert_eq!(body["NoEcho"], false);
    assert_eq!(answered.status, Status::Success);
    assert_eq!(answered.attempts, 1);

    // The same request delivered twice (Lambda's async retry) yields the same id.
    invoke(
        &resource,
        event("Create", &url, json!({"BakeSeconds": 300})),
    )
    .await
    .unwrap();
    let second = recorder.wait_for(2, WAIT).await[1].json();
    assert_eq!(second["PhysicalResourceId"], body["PhysicalResourceId"]);
}

#[tokio::test]
async fn string_typed_property_values_are_accepted_and_service_token_is_not_a_property() {
    let recorder = CfnResponseRecorder::start().await;
    let resource = TestResource::default();
    // Props deny unknown fields, so this also proves ServiceToken never reaches the handler.
    let props = json!({"BakeSeconds": "300", "RemoveOnDelete": "true", "ServiceTimeout": "600"});
    invoke(
        &resource,
        event("Create", &recorder.response_url("s"), props),
    )
    .await
    .unwrap();

    let body = only_response(&recorder).await.json();
    assert_eq!(body["Status"], "SUCCESS", "{body}");
    let (_, props, _) = resource.calls().remove(0);
    assert_eq!(props.bake_seconds, 300);
    assert_eq!(props.remove_on_delete, Some(true));
}

#[tokio::test]
async fn invalid_properties_answer_failed_with_a_reason_naming_the_value() {
    let recorder = CfnResponseRecorder::start().await;
    let resource = TestResource::default();
    let props = json!({"BakeSeconds": "five minutes"});
    invoke(
        &resource,
        event("Create", &recorder.response_url("bad"), props),
    )
    .await
    .unwrap();

    let body = only_response(&recorder).await.json();
    assert_eq!(body["Status"], "FAILED");
    let reason = body["Reason"].as_str().unwrap();
    assert!(
        reason.contains("invalid properties") && reason.contains("\"five minutes\""),
        "{reason}"
    );
    assert!(
        resource.calls().is_empty(),
        "the handler must not run with bad properties"
    );

    // A typo in a property name is caught too.
    let recorder = CfnResponseRecorder::start().await;
    let props = json!({"BakeSeconds": "5", "RemoveOndelete": "true"});
    invoke(
        &resource,
        event("Create", &recorder.response_url("typo"), props),
    )
    .await
    .unwrap();
    let reason = only_response(&recorder).await.json()["Reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("RemoveOndelete"), "{reason}");
}

#[tokio::test]
async fn a_failed_create_is_answered_and_its_rollback_delete_touches_nothing() {
    let recorder = CfnResponseRecorder::start().await;
    let resource = TestResource::default();
    let props = json!({"BakeSeconds": "1", "Mode": "fail"});
    let answered = invoke(
        &resource,
        event("Create", &recorder.response_url("c"), props.clone()),
    )
    .await
    .unwrap();
    let body = only_response(&recorder).await.json();
    assert_eq!(body["Status"], "FAILED");
    assert_eq!(body["Reason"], "database tenant_pool_1 is unreachable");
    let physical_id = body["PhysicalResourceId"].as_str().unwrap().to_owned();
    assert!(
        physical_id.starts_with(CREATE_FAILED_PREFIX),
        "{physical_id}"
    );
    assert_eq!(answered.physical_resource_id, physical_id);

    // CloudFormation rolls back with a Delete for that id.
    let recorder = CfnResponseRecorder::start().await;
    let delete = with(
        event("Delete", &recorder.response_url("d"), props),
        "PhysicalResourceId",
        json!(physical_id),
    );
    invoke(&resource, delete).await.unwrap();
    let body = only_response(&recorder).await.json();
    assert_eq!(body["Status"], "SUCCESS");
    assert_eq!(body["PhysicalResourceId"], physical_id);
    assert_eq!(
        resource.calls().len(),
        1,
        "only the Create ran; the Delete touched nothing"
    );
}

#[tokio::test]
async fn a_handler_panic_is_answered_failed() {
    let recorder = CfnResponseRecorder::start().await;
    let resource = TestResource::default();
    let props = json!({"BakeSeconds": "1", "Mode": "panic"});
    invoke(
        &resource,
        event("Create", &recorder.response_url("p"), props),
    )
    .await
    .unwrap();

    let body = only_response(&recorder).await.json();
    assert_eq!(body["Status"], "FAILED");
    assert_eq!(body["Reason"], "the handler panicked: boom in create");
}

#[tokio::test]
async fn a_handler_that_outlives_the_deadline_is_stopped_and_answered_failed_in_time() {
    let recorder = CfnResponseRecorder::start().await;
    let resource = TestResource::default();
    let props = json!({"BakeSeconds": "1", "Mode": "hang"});
    let lambda_deadline = SystemTime::now() + Duration::from_secs(3);
    let responder = responder().with_deadline_margin(Duration::from_secs(1));
    let context = context(Duration::from_secs(3));
    let started = std::time::Instant::now();
    responder
        .respond(
            &resource,
            LambdaEvent::new(event("Create", &recorder.response_url("t"), props), context),
        )
        .await
        .unwrap();

    let response = only_response(&recorder).await;
    assert!(
        response.received_at < lambda_deadline,
        "answered after the Lambda deadline"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "answered before the guard was due"
    );
    let body = response.json();
    assert_eq!(body["Status"], "FAILED");
    assert!(
        body["Reason"].as_str().unwrap().starts_with("timed out"),
        "{body}"
    );
}

#[tokio::test]
async fn a_short_lambda_timeout_leaves_the_handler_most_of_it_and_is_still_answered() {
    // Lambda's default timeout is 3 s, less than the default 5 s margin.
    let resource = TestResource::default();
    let recorder = CfnResponseRecorder::start().await;
    let answered = responder()
        .respond(
            &resource,
            LambdaEvent::new(
                event(
                    "Create",
                    &recorder.response_url("ok"),
                    json!({"BakeSeconds": "1"}),
                ),
                context(Duration::from_secs(3)),
            ),
        )
        .await
        .unwrap();
    assert_eq!(answered.status, Status::Success);
    assert_eq!(only_response(&recorder).await.json()["Status"], "SUCCESS");

    let recorder = CfnResponseRecorder::start().await;
    let lambda_deadline = SystemTime::now() + Duration::from_secs(3);
    let started = std::time::Instant::now();
    let props = json!({"BakeSeconds": "1", "Mode": "hang"});
    responder()
        .respond(
            &resource,
            LambdaEvent::new(
                event("Create", &recorder.response_url("hang"), props),
                context(Duration::from_secs(3)),
            ),
        )
        .await
        .unwrap();
    let response = only_response(&recorder).await;
    assert!(
        response.received_at < lambda_deadline,
        "answered after the Lambda deadline"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1800),
        "the handler got less than two thirds of the time"
    );
    assert_eq!(response.json()["Status"], "FAILED");
}

#[tokio::test]
async fn the_put_is_retried_on_5xx_and_dropped_connections() {
    let recorder = CfnResponseRecorder::start().await;
    recorder.script([
        Reply::Status(500),
        Reply::DropConnection,
        Reply::Status(503),
    ]);
    let resource = TestResource::default();
    let answered = invoke(
        &resource,
        event(
            "Create",
            &recorder.response_url("r"),
            json!({"BakeSeconds": 1}),
        ),
    )
    .await
    .unwrap();

    let requests = recorder.requests();
    assert_eq!(requests.len(), 4);
    assert_eq!(answered.attempts, 4);
    assert!(
        requests.windows(2).all(|w| w[0].body == w[1].body),
        "every attempt sends the same body"
    );
    assert_eq!(requests[3].json()["Status"], "SUCCESS");
    assert_eq!(
        resource.calls().len(),
        1,
        "retrying the PUT does not rerun the handler"
    );
}

#[tokio::test]
async fn a_refused_response_is_not_retried_and_fails_the_invocation() {
    let recorder = CfnResponseRecorder::start().await;
    recorder.script([Reply::Status(403)]);
    let resource = TestResource::default();
    let err = invoke(
        &resource,
        event(
            "Create",
            &recorder.response_url("x"),
            json!({"BakeSeconds": 1}),
        ),
    )
    .await
    .unwrap_err();

    assert_eq!(recorder.requests().len(), 1);
    let text = err.to_string();
    assert!(
        text.contains("HTTP 403") && text.contains("DeployGate"),
        "{text}"
    );
}

#[tokio::test]
async fn giving_up_after_the_attempts_fails_the_invocation_so_lambda_retries() {
    let recorder = CfnResponseRecorder::start().await;
    recorder.script([Reply::Status(502); 5]);
    let resource = TestResource::default();
    let err = invoke(
        &resource,
        event(
            "Create",
            &recorder.response_url("g"),
            json!({"BakeSeconds": 1}),
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(recorder.requests().len(), 5);
    assert!(err.to_string().contains("after 5 attempt(s)"), "{err}");
}

#[tokio::test]
async fn a_long_reason_is_truncated_so_the_body_fits_4096_bytes() {
    let recorder = CfnResponseRecorder::start().await;
    let resource = TestResource::default();
    let props = json!({"BakeSeconds": "1", "Mode": "long-error"});
    let answered = invoke(
        &resource,
        event("Create", &recorder.response_url("l"), props),
    )
    .await
    .unwrap();

    let response = only_response(&recorder).await;
    assert!(
        response.body.len() > 4000,
        "the reason should use the room there is"
    );
    let reason = response.json()["Reason"].as_str().unwrap().to_owned();
    assert!(reason.starts_with("bad: é\"é\""), "{reason}");
    assert!(
        reason.ends_with("[truncated, full text in the function log]"),
        "{reason}"
    );
    assert_eq!(answered.reason, reason);
}

#[tokio::test]
async fn data_too_large_for_the_response_fails_clearly_instead_of_being_cut() {
    let recorder = CfnResponseRecorder::start().await;
    let resource = TestResource::default();
    let props = json!({"BakeSeconds": "1", "Mode": "huge-data"});
    invoke(
        &resource,
        event("Create", &recorder.response_url("h"), props),
    )
    .await
    .unwrap();

    let body = only_response(&recorder).await.json();
    assert_eq!(body["Status"], "FAILED");
    assert_eq!(body["Data"], json!({}));
    assert!(body["Reason"].as_str().unwrap().contains("Blob"), "{body}");
}

#[tokio::test]
async fn update_keeps_the_physical_id_unless_the_handler_replaces_the_resource() {
    let resource = TestResource::default();
    let update = |url: &str, props: Value, old: Value| {
        let e = with(
            event("Update", url, props),
            "PhysicalResourceId",
            json!("gate-1"),
        );
        with(e, "OldResourceProperties", old)
    };

    let recorder = CfnResponseRecorder::start().await;
    let e = update(
        &recorder.response_url("u1"),
        json!({"BakeSeconds": "60"}),
        json!({"BakeSeconds": "30"}),
    );
    invoke(&resource, e).await.unwrap();
    let body = only_response(&recorder).await.json();
    assert_eq!(
        (body["Status"].as_str(), body["PhysicalResourceId"].as_str()),
        (Some("SUCCESS"), Some("gate-1"))
    );
    let (_, new, old) = resource.calls().pop().unwrap();
    assert_eq!(
        (new.bake_seconds, old.map(|o| o.bake_seconds)),
        (60, Some(30))
    );

    // Old properties this version no longer accepts reach the handler as None.
    let recorder = CfnResponseRecorder::start().await;
    let e = update(
        &recorder.response_url("u2"),
        json!({"BakeSeconds": "60"}),
        json!({"Legacy": "x"}),
    );
    invoke(&resource, e).await.unwrap();
    assert_eq!(only_response(&recorder).await.json()["Status"], "SUCCESS");
    assert_eq!(resource.calls().pop().unwrap().2, None);

    let recorder = CfnResponseRecorder::start().await;
    let e = update(
        &recorder.response_url("u3"),
        json!({"BakeSeconds": "1", "Mode": "replace"}),
        json!({"BakeSeconds": "1"}),
    );
    invoke(&resource, e).await.unwrap();
    assert_eq!(
        only_response(&recorder).await.json()["PhysicalResourceId"],
        "replacement-id"
    );

    // A failed update keeps the current id, so CloudFormation does not see a replacement.
    let recorder = CfnResponseRecorder::start().await;
    let e = update(
        &recorder.response_url("u4"),
        json!({"BakeSeconds": "1", "Mode": "fail"}),
        json!({"BakeSeconds": "1"}),
    );
    invoke(&resource, e).await.unwrap();
    let body = only_response(&recorder).await.json();
    assert_eq!(
        (body["Status"].as_str(), body["PhysicalResourceId"].as_str()),
        (Some("FAILED"), Some("gate-1"))
    );
}

#[tokio::test]
async fn delete_answers_with_the_id_it_was_asked_about() {
    let resource = TestResource::default();
    let recorder = CfnResponseRecorder::start().await;
    let e = with(
        event(
            "Delete",
            &recorder.response_url("d1"),
            json!({"BakeSeconds": "1"}),
        ),
        "PhysicalResourceId",
        json!("gate-1"),
    );
    invoke(&resource, e).await.unwrap();
    let body = only_response(&recorder).await.json();
    assert_eq!(
        (body["Status"].as_str(), body["PhysicalResourceId"].as_str()),
        (Some("SUCCESS"), Some("gate-1"))
    );
    assert_eq!(resource.calls()[0].0, "delete");

    // Properties that no longer parse: succeed without deleting anything (never stuck in DELETE_FAILED).
    let recorder = CfnResponseRecorder::start().await;
    let e = with(
        event(
            "Delete",
            &recorder.response_url("d2"),
            json!({"Legacy": "1"}),
        ),
        "PhysicalResourceId",
        json!("gate-1"),
    );
    invoke(&resource, e).await.unwrap();
    let body = only_response(&recorder).await.json();
    assert_eq!(body["Status"], "SUCCESS");
    assert!(
        body["Reason"]
            .as_str()
            .unwrap()
            .contains("nothing was deleted"),
        "{body}"
    );
    assert_eq!(resource.calls().len(), 1);
}

#[tokio::test]
async fn a_malformed_request_with_a_response_url_is_still_answered() {
    let recorder = CfnResponseRecorder::start().await;
    let resource = TestResource::default();
    let e = with(
        event(
            "Rename",
            &recorder.response_url("m"),
            json!({"BakeSeconds": "1"}),
        ),
        "RequestType",
        json!("Rename"),
    );
    invoke(&resource, e).await.unwrap();
    let body = only_response(&recorder).await.json();
    assert_eq!(body["Status"], "FAILED");
    assert!(
        body["Reason"]
            .as_str()
            .unwrap()
            .contains("malformed custom-resource request"),
        "{body}"
    );
    assert!(resource.calls().is_empty());
}

#[tokio::test]
async fn an_event_without_a_response_url_is_an_error_and_sends_nothing() {
    let resource = TestResource::default();
    let err = invoke(&resource, json!({"detail-type": "Scheduled Event"}))
        .await
        .unwrap_err();
    assert!(matches!(err, ResponderError::NotARequest(_)), "{err}");
    assert!(err.to_string().contains("no ResponseURL"), "{err}");
}

#[tokio::test]
async fn logs_never_contain_the_pre_signed_signature() {
    let logs = CapturedLogs::default();
    let _guard = logs.install();

    let recorder = CfnResponseRecorder::start().await;
    recorder.script([Reply::Status(500)]);
    let resource = TestResource::default();
    invoke(
        &resource,
        event(
            "Create",
            &recorder.response_url("log"),
            json!({"BakeSeconds": "1", "Mode": "fail"}),
        ),
    )
    .await
    .unwrap();

    let text = logs.text();
    assert!(text.contains("answered CloudFormation"), "{text}");
    assert!(
        text.contains("/cloudformation-custom-resource-response/log"),
        "the URL path is logged: {text}"
    );
    assert!(
        !text.contains("not-a-real-signature"),
        "the signature leaked into the logs: {text}"
    );
}

/// 64 hex digits no other test uses, so finding them anywhere can only be a leak.
fn random_signature() -> String {
    (0..4)
        .map(|i| {
            format!(
                "{:016x}",
                RandomState::new().hash_one((i, SystemTime::now()))
            )
        })
        .collect()
}

/// Runs a Create whose answer cannot be delivered to `url`, with logs captured, and checks
/// that `signature`, or the query string at all, is in no log line, no `Reason` sent and no
/// error returned. Returns the invocation's `errorMessage`, for the test to check it still
/// says what went wrong.
async fn undeliverable_create(
    url: &str,
    signature: &str,
    lambda_timeout: Duration,
    sent: impl FnOnce() -> Vec<RecordedRequest>,
) -> String {
    let logs = CapturedLogs::default();
    let _guard = logs.install();
    let resource = TestResource::default();
    let err = responder()
        .respond(
            &resource,
            LambdaEvent::new(
                event("Create", url, json!({"BakeSeconds": "1"})),
                context(lambda_timeout),
            ),
        )
        .await
        .unwrap_err();

    let text = logs.text();
    assert!(
        text.contains("CloudFormation was not told the result"),
        "the failure is logged: {text}"
    );
    let leaks_query = |text: &str| text.contains(signature) || text.contains("X-Amz-Credential");
    let mut leaks = Vec::new();
    for line in text.lines().filter(|line| leaks_query(line)) {
        leaks.push(format!("log line: {line}"));
    }
    for request in sent() {
        assert!(
            request.uri.contains(signature),
            "the PUT went to the signed URL"
        );
        let reason = request.json()["Reason"].as_str().unwrap_or("").to_owned();
        if leaks_query(&reason) {
            leaks.push(format!("Reason: {reason}"));
        }
    }
    let (display, debug) = (err.to_string(), format!("{err:?}"));
    let message = lambda_runtime::Diagnostic::from(err).error_message;
    for (place, shown) in [
        ("error", &display),
        ("error (Debug)", &debug),
        ("errorMessage", &message),
    ] {
        if leaks_query(shown) {
            leaks.push(format!("{place}: {shown}"));
        }
    }
    assert!(
        leaks.is_empty(),
        "the pre-signed query string leaked into:\n{}",
        leaks.join("\n")
    );
    assert!(
        message.contains("could not tell CloudFormation the result"),
        "{message}"
    );
    message
}

#[tokio::test]
async fn connections_dropped_on_every_attempt_never_leak_the_signature() {
    let recorder = CfnResponseRecorder::start().await;
    recorder.script([Reply::DropConnection; 5]);
    let signature = random_signature();
    let url = recorder.presigned_response_url("dropped", &signature);

    let message = undeliverable_create(&url, &signature, Duration::from_secs(60), || {
        recorder.requests()
    })
    .await;
    assert_eq!(recorder.requests().len(), 5);
    assert!(message.contains("after 5 attempt(s)"), "{message}");
    assert!(message.contains("connection closed"), "{message}");
}

#[tokio::test]
async fn a_response_url_that_never_answers_never_leaks_the_signature() {
    let recorder = CfnResponseRecorder::start().await;
    recorder.script([Reply::Hang; 5]);
    let signature = random_signature();
    let url = recorder.presigned_response_url("hang", &signature);

    // A 1.5 s Lambda timeout: the one attempt there is time for hangs until it times out.
    let message = undeliverable_create(&url, &signature, Duration::from_millis(1500), || {
        recorder.requests()
    })
    .await;
    assert!(!recorder.requests().is_empty());
    assert!(message.contains("timed out"), "{message}");
}

#[tokio::test]
async fn a_refused_connection_never_leaks_the_signature() {
    // A loopback port that was free a moment ago and nobody listens on now.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap();
    let signature = random_signature();
    let url = presigned_response_url(closed, "refused", &signature);

    let message = undeliverable_create(&url, &signature, Duration::from_secs(60), Vec::new).await;
    assert!(message.contains("after 5 attempt(s)"), "{message}");
    assert!(message.contains("Connection refused"), "{message}");
}
