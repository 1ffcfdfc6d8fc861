//! A private moto server (AWS API mock) per test, plus a way to see which API calls it
//! received.
//!
//! ```no_run
//! # async fn demo() {
//! let moto = harness::moto::Moto::start().await;
//! let sns = aws_sdk_sns::Client::new(&moto.sdk_config().await);
//! sns.create_topic().name("alerts").send().await.unwrap();
//! assert_eq!(moto.recorded_actions(), ["sns:CreateTopic"]);
//! # }
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use serde::Deserialize;

use crate::process::{
    ServerInstance, ServerProcess, StartError, StopSignal, random_hex, require_binary,
    start_with_port_retry, temp_dir, wait_until_ready, workspace_root,
};

/// The region every moto client is configured for.
pub const REGION: &str = "us-east-1";
/// The account id moto uses for every resource it creates (its default).
pub const ACCOUNT_ID: &str = "123456789012";

/// The SDK configuration a function builds in production for `timeouts` (its timeouts and
/// standard retries), pointed at `endpoint_url` (moto, or a proxy in front of it) with
/// [`REGION`] and static test credentials, and nothing from the process environment.
pub async fn deployed_sdk_config(
    endpoint_url: &str,
    timeouts: shared::aws::AwsTimeouts,
) -> SdkConfig {
    shared::aws::aws_config_loader(timeouts)
        .empty_test_environment()
        .endpoint_url(endpoint_url)
        .region(Region::new(REGION))
        .test_credentials()
        .load()
        .await
}

/// Points a child process's AWS SDK at `endpoint_url` the way a Lambda's environment would:
/// `AWS_ENDPOINT_URL`, region and test credentials, and no shared config or profile from this
/// machine (for tests that run the production config loader in a child process).
pub fn aws_env_for_child<'a>(command: &'a mut Command, endpoint_url: &str) -> &'a mut Command {
    command
        .env("AWS_ENDPOINT_URL", endpoint_url)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/aws-credentials",
        )
        .env_remove("AWS_PROFILE")
}

/// An `Authorization` header for a request to moto made without the SDK (control APIs, the
/// few calls with no SDK crate in the workspace): moto tells the services apart by the
/// credential scope and the caller by the access key id, and checks no signature.
pub fn unsigned_authorization(access_key_id: &str, service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential={access_key_id}/20260101/{REGION}/{service}/aws4_request, \
         SignedHeaders=host, Signature=0"
    )
}

/// moto imports most of botocore at startup: seconds on a busy 2-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A moto server on its own port, stopped (and its temp dir removed) when dropped.
///
/// Every request is recorded (moto's recorder, on from the start), so tests can count API
/// calls with [`Moto::recorded_requests`] / [`Moto::recorded_actions`].
#[derive(Debug)]
pub struct Moto {
    instance: ServerInstance,
    endpoint_url: String,
    recording: PathBuf,
    http: reqwest::Client,
}

impl std::ops::Deref for Moto {
    type Target = ServerInstance;

    fn deref(&self) -> &ServerInstance {
        &self.instance
    }
}

impl Moto {
    /// Starts `<workspace>/.venv/bin/moto_server` on a free port of 127.0.0.1 and waits until
    /// it answers HTTP. Panics if moto is not installed (run `scripts/setup`) or does not start.
    pub async fn start() -> Moto {
        let binary = require_binary(
            "moto_server (moto[server] in the workspace's .venv)",
            &[workspace_root().join(".venv/bin/moto_server")],
        );
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("build an HTTP client");
        start_with_port_retry("moto", |port| Moto::start_instance(&binary, &http, port)).await
    }

    /// One start attempt on `port`.
    async fn start_instance(
        binary: &Path,
        http: &reqwest::Client,
        port: u16,
    ) -> Result<Moto, StartError> {
        let dir = temp_dir("harness-moto-");
        let recording = dir.path().join("recording.jsonl");
        let mut command = Command::new(binary);
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_ENABLE_RECORDING", "True")
            .env("MOTO_RECORDER_FILEPATH", &recording)
            .current_dir(dir.path());
        let mut server =
            ServerProcess::spawn(command, dir.path().join("moto.log"), StopSignal::Terminate)
                .map_err(|e| StartError::Failed(format!("spawn {}: {e}", binary.display())))?;
        let endpoint_url = format!("http://127.0.0.1:{port}");
        wait_until_ready(&mut server, START_TIMEOUT, || {
            answers_as(http, &endpoint_url, &recording)
        })
        .await?;
        Ok(Moto {
            instance: ServerInstance::new(server, dir),
            endpoint_url,
            recording,
            http: http.clone(),
        })
    }

    /// The server's base URL, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint_url(&self) -> &str {
        &self.endpoint_url
    }

    /// The region clients are configured for: [`REGION`].
    pub fn region(&self) -> &'static str {
        REGION
    }

    /// SDK configuration pointing at this server: its endpoint, [`REGION`], static test
    /// credentials, and nothing from the process environment or `~/.aws` (so tests stay
    /// parallel-safe and independent of the machine).
    pub async fn sdk_config(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .empty_test_environment()
            .endpoint_url(&self.endpoint_url)
            .region(Region::new(REGION))
            .test_credentials()
            .load()
            .await
    }

    /// Creates spot-interruption's progress table `name` (the key and TTL `template.yaml`
    /// declares) and returns its name, for `PROGRESS_TABLE`.
    pub async fn create_progress_table(&self, name: &str) -> Result<String, String> {
        use aws_sdk_dynamodb::types::{
            AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
            TimeToLiveSpecification,
        };
        use spot_interruption::progress_table::{EXPIRES_ATTRIBUTE, KEY_ATTRIBUTE};
        let dynamodb = aws_sdk_dynamodb::Client::new(&self.sdk_config().await);
        let built = |e: aws_sdk_dynamodb::error::BuildError| e.to_string();
        dynamodb
            .create_table()
            .table_name(name)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(KEY_ATTRIBUTE)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(built)?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(KEY_ATTRIBUTE)
                    .key_type(KeyType::Hash)
                    .build()
                    .map_err(built)?,
            )
            .send()
            .await
            .map_err(crate::scenario::aws_error(format!("CreateTable {name}")))?;
        dynamodb
            .update_time_to_live()
            .table_name(name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(EXPIRES_ATTRIBUTE)
                    .enabled(true)
                    .build()
                    .map_err(built)?,
            )
            .send()
            .await
            .map_err(crate::scenario::aws_error(format!(
                "UpdateTimeToLive {name}"
            )))?;
        Ok(name.to_owned())
    }

    /// Forgets every resource moto holds (all services, all regions) and clears the request
    /// recording.
    pub async fn reset(&self) {
        self.post("/moto-api/reset").await;
        self.clear_recording().await;
    }

    /// Clears the request recording only (e.g. after a test's setup calls, before the code
    /// under test runs).
    pub async fn clear_recording(&self) {
        self.post("/moto-api/recorder/reset-recording").await;
    }

    /// Every AWS API request moto received since it started or the recording was last
    /// cleared, oldest first. moto's own control API (`/moto-api/...`) is left out.
    pub fn recorded_requests(&self) -> Vec<RecordedRequest> {
        let text = match fs::read_to_string(&self.recording) {
            Ok(text) => text,
            // moto creates the file with the first recorded request.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => panic!("read moto's recording {}: {e}", self.recording.display()),
        };
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                let raw: RawRecord = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("parse moto's recording line {line:?}: {e}"));
                RecordedRequest::from(raw)
            })
            .filter(|request| !request.path().starts_with("/moto-api/"))
            .collect()
    }

    /// The recorded requests as `"service:Action"` strings (e.g. `"sns:Publish"`), oldest
    /// first; REST-style requests without an action name appear as `"service:METHOD /path"`.
    pub fn recorded_actions(&self) -> Vec<String> {
        self.recorded_requests()
            .iter()
            .map(|request| {
                let service = request.service().unwrap_or("?");
                match request.action() {
                    Some(action) => format!("{service}:{action}"),
                    None => format!("{service}:{} {}", request.method, request.path()),
                }
            })
            .collect()
    }

    async fn post(&self, path: &str) {
        let url = format!("{}{path}", self.endpoint_url);
        let response = self
            .http
            .post(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        assert!(
            response.status().is_success(),
            "POST {url} answered {}",
            response.status()
        );
    }
}

/// The readiness probe: an HTTP answer, and proof that it came from *our* server (the probe
/// shows up in our recording) rather than another one that got the same port.
async fn answers_as(
    http: &reqwest::Client,
    endpoint_url: &str,
    recording: &Path,
) -> Result<(), String> {
    let token = random_hex(8);
    let url = format!("{endpoint_url}/moto-api/?harness-probe={token}");
    http.get(&url).send().await.map_err(|e| e.to_string())?;
    match fs::read_to_string(recording) {
        Ok(text) if text.contains(&token) => Ok(()),
        _ => Err(format!(
            "the answer from {endpoint_url} was not recorded by this moto"
        )),
    }
}

/// One request moto received, as its recorder saw it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// The full URL, e.g. `http://127.0.0.1:40123/?Action=...`.
    pub url: String,
    /// Request headers (names as moto saw them; use [`RecordedRequest::header`] to look one
    /// up case-insensitively).
    pub headers: BTreeMap<String, String>,
    /// The raw body.
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// A header's value, matching the name case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The URL's path (without the query), e.g. `/` or `/2015-03-31/functions`.
    pub fn path(&self) -> &str {
        let after_scheme = self
            .url
            .split_once("://")
            .map_or(&*self.url, |(_, rest)| rest);
        let path = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
        path.split(['?', '#']).next().unwrap_or("/")
    }

    /// The signing name of the service called (`sns`, `secretsmanager`, `rds`, ...), from the
    /// SigV4 credential scope of the `Authorization` header.
    pub fn service(&self) -> Option<&str> {
        self.credential_scope()?.split('/').nth(3)
    }

    /// The access key id the request was signed with (moto checks no signature, so the
    /// scenario gives each function its own key to tell their calls apart).
    pub fn access_key(&self) -> Option<&str> {
        self.credential_scope()?.split('/').next()
    }

    /// `AKID/20240101/us-east-1/sns/aws4_request` from
    /// `Credential=AKID/20240101/us-east-1/sns/aws4_request, SignedHeaders=..., Signature=...`.
    fn credential_scope(&self) -> Option<&str> {
        let scope = self.header("authorization")?.split("Credential=").nth(1)?;
        scope.split([',', ' ']).next()
    }

    /// The request's top-level parameters: the form pairs of a query-protocol request (URL
    /// query and body: SNS, Auto Scaling; lists flattened as `InstanceIds.member.1`), or the
    /// top-level string members of a JSON body (Secrets Manager, CloudWatch through the
    /// bridge). Nested members are left out.
    pub fn parameters(&self) -> BTreeMap<String, String> {
        if let Ok(serde_json::Value::Object(members)) =
            serde_json::from_slice::<serde_json::Value>(&self.body)
        {
            return members
                .into_iter()
                .filter_map(|(key, value)| Some((key, value.as_str()?.to_owned())))
                .collect();
        }
        let query = self.url.split_once('?').map_or("", |(_, q)| q);
        let body = std::str::from_utf8(&self.body).unwrap_or("");
        let mut pairs = BTreeMap::new();
        for form in [query, body] {
            let Ok(mut url) = reqwest::Url::parse("http://form.invalid/") else {
                continue;
            };
            url.set_query(Some(form));
            pairs.extend(
                url.query_pairs()
                    .map(|(k, v)| (k.into_owned(), v.into_owned())),
            );
        }
        pairs
    }

    /// The API action, for the protocols that name one: the `X-Amz-Target` header (JSON
    /// protocols, e.g. Secrets Manager), the `Action` parameter (query protocols: SNS, RDS,
    /// Auto Scaling), or the `/service/.../operation/<Name>` path (Smithy RPC v2 CBOR, e.g.
    /// CloudWatch). `None` for REST protocols; use [`RecordedRequest::path`] there.
    pub fn action(&self) -> Option<String> {
        if let Some(target) = self.header("x-amz-target") {
            return target.rsplit('.').next().map(str::to_owned);
        }
        if let Some((_, operation)) = self.path().split_once("/operation/") {
            return Some(operation.trim_end_matches('/').to_owned());
        }
        let query = self.url.split_once('?').map(|(_, q)| q).unwrap_or("");
        let body = std::str::from_utf8(&self.body).unwrap_or("");
        query
            .split('&')
            .chain(body.split('&'))
            .find_map(|pair| pair.strip_prefix("Action="))
            .map(str::to_owned)
    }
}

/// A line of moto's recording file.
#[derive(Deserialize)]
struct RawRecord {
    method: String,
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    body_encoded: bool,
}

impl From<RawRecord> for RecordedRequest {
    fn from(raw: RawRecord) -> Self {
        let body = raw.body.unwrap_or_default();
        let body = if raw.body_encoded {
            base64_decode(&body).unwrap_or_else(|| panic!("moto recorded invalid base64: {body}"))
        } else {
            body.into_bytes()
        };
        RecordedRequest {
            method: raw.method,
            url: raw.url,
            headers: raw.headers,
            body,
        }
    }
}

/// Standard base64 (moto encodes binary bodies with Python's `b64encode`).
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut buffer = 0u32;
    let mut bits = 0;
    for byte in text
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'=')
    {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(url: &str, headers: &[(&str, &str)], body: &str) -> RecordedRequest {
        RecordedRequest {
            method: "POST".into(),
            url: url.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn query_protocol_action_comes_from_the_body() {
        let r = request(
            "http://127.0.0.1:1/",
            &[("Authorization", &unsigned_authorization("AKID", "sns"))],
            "Action=CreateTopic&Name=t&Version=2010-03-31",
        );
        assert_eq!(r.service(), Some("sns"));
        assert_eq!(r.action().as_deref(), Some("CreateTopic"));
        assert_eq!(r.path(), "/");
    }

    #[test]
    fn json_protocol_action_comes_from_the_target_header() {
        let r = request(
            "http://127.0.0.1:1/",
            &[("X-Amz-Target", "secretsmanager.GetSecretValue")],
            "{}",
        );
        assert_eq!(r.action().as_deref(), Some("GetSecretValue"));
    }

    #[test]
    fn rpc_v2_cbor_action_comes_from_the_path() {
        let r = request(
            "http://127.0.0.1:1/service/GraniteServiceVersion20100801/operation/PutMetricData",
            &[],
            "",
        );
        assert_eq!(r.action().as_deref(), Some("PutMetricData"));
    }

    #[test]
    fn rest_requests_have_no_action() {
        let r = request("http://127.0.0.1:1/2015-03-31/functions?x=1", &[], "");
        assert_eq!(r.action(), None);
        assert_eq!(r.path(), "/2015-03-31/functions");
    }

    #[test]
    fn the_access_key_comes_from_the_credential_scope() {
        let r = request(
            "http://127.0.0.1:1/",
            &[("Authorization", &unsigned_authorization("AKID", "sns"))],
            "",
        );
        assert_eq!(r.access_key(), Some("AKID"));
        assert_eq!(request("http://127.0.0.1:1/", &[], "").access_key(), None);
    }

    #[test]
    fn parameters_come_from_the_form_or_the_json_body() {
        let form = request(
            "http://127.0.0.1:1/?Version=2010-03-31",
            &[],
            "Action=Publish&TopicArn=arn%3Aaws%3Asns%3Aus-east-1%3A1%3At&Message=a+b",
        );
        let p = form.parameters();
        assert_eq!(p["TopicArn"], "arn:aws:sns:us-east-1:1:t");
        assert_eq!(p["Message"], "a b");
        assert_eq!(p["Version"], "2010-03-31");
        let json = request(
            "http://127.0.0.1:1/",
            &[],
            r#"{"Namespace": "N/x", "MetricData": [{"MetricName": "m"}]}"#,
        );
        assert_eq!(
            json.parameters().into_iter().collect::<Vec<_>>(),
            [("Namespace".to_owned(), "N/x".to_owned())]
        );
    }

    #[test]
    fn decodes_base64() {
        assert_eq!(
            base64_decode("QWN0aW9uPUNyZWF0ZVRvcGljJk5hbWU9dDE=").unwrap(),
            b"Action=CreateTopic&Name=t1"
        );
    }
}
