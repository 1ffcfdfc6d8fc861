//! A stand-in for the ElastiCache API (the Query protocol) that applies AUTH-token changes to
//! a real [`RedisServer`]: moto's `ModifyReplicationGroup` ignores `AuthToken`.
//!
//! ```no_run
//! # async fn demo() {
//! let redis = harness::redis::RedisServer::start_tls("first-token-0123456789").await;
//! let elasticache = harness::elasticache::ElastiCacheStandIn::start().await;
//! elasticache.add_group("bp-cache", &redis, "first-token-0123456789");
//! // AWS_ENDPOINT_URL_ELASTICACHE = elasticache.endpoint_url()
//! # }
//! ```
//!
//! Two actions, as ElastiCache answers them:
//! - `DescribeReplicationGroups` (one group or all): status, endpoint, AUTH and encryption.
//! - `ModifyReplicationGroup` with `AuthToken` and `AuthTokenUpdateStrategy`: the group reports
//!   `modifying` for a moment ([`ElastiCacheStandIn::set_modifying_for`], 300 ms by default),
//!   then the change reaches the server and the group is `available` again. `ROTATE` makes
//!   the server accept the current token and the new one (Redis ACL: the `default` user with
//!   two passwords); `SET` leaves only the one it names and is refused unless a `ROTATE` came
//!   before it ("SET - allowed only after ROTATE"). A change while the group is `modifying` is
//!   refused (`InvalidReplicationGroupState`), and so is a token ElastiCache would refuse
//!   (16–128 printable characters, none of `/`, `"`, `@` or space).
//!
//! What it does not model: a `ROTATE` while two tokens are live is refused here (the suite
//! never sends one), signatures and IAM are not checked (`harness::iam` evaluates the role),
//! and the change reaches the server all at once at the end of `modifying`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::redis::{RedisAdmin, RedisServer};

/// How long a group stays `modifying` after a change unless a test says otherwise.
pub const DEFAULT_MODIFYING_FOR: Duration = Duration::from_millis(300);
const XMLNS: &str = "http://elasticache.amazonaws.com/doc/2015-02-02/";

/// One API call as the stand-in answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// `ModifyReplicationGroup` or `DescribeReplicationGroups` (or whatever was asked).
    pub action: String,
    pub replication_group_id: Option<String>,
    /// `ROTATE` / `SET` for a `ModifyReplicationGroup`.
    pub strategy: Option<String>,
    /// `ok`, or the error code answered.
    pub outcome: String,
    /// The access key id the call was signed with (the scenario tells functions apart by it).
    pub access_key: Option<String>,
}

struct Group {
    admin: RedisAdmin,
    status: &'static str,
    /// Oldest first; at most two.
    tokens: Vec<String>,
    last_strategy: Option<String>,
    modifying_for: Duration,
    last_modified: SystemTime,
}

#[derive(Default)]
struct State {
    groups: BTreeMap<String, Group>,
    calls: Vec<Call>,
    changes: Vec<JoinHandle<()>>,
}

/// The stand-in on a loopback port; stops (and abandons changes in flight) when dropped.
pub struct ElastiCacheStandIn {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    server: JoinHandle<()>,
}

impl ElastiCacheStandIn {
    /// Starts on a free loopback port (bound at once, so no port race).
    pub async fn start() -> ElastiCacheStandIn {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the ElastiCache stand-in to a loopback port");
        let addr = listener.local_addr().expect("listener address");
        let state = Arc::new(Mutex::new(State::default()));
        let server = tokio::spawn(serve(listener, state.clone()));
        ElastiCacheStandIn {
            addr,
            state,
            server,
        }
    }

    /// The base URL, for `AWS_ENDPOINT_URL_ELASTICACHE` or an SDK config's endpoint.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A replication group named `id` whose primary is `server`, `available`, with `token`
    /// its only AUTH token (the one the server was started with).
    pub fn add_group(&self, id: &str, server: &RedisServer, token: &str) {
        self.state.lock().unwrap().groups.insert(
            id.to_owned(),
            Group {
                admin: server.admin(),
                status: "available",
                tokens: vec![token.to_owned()],
                last_strategy: None,
                modifying_for: DEFAULT_MODIFYING_FOR,
                last_modified: SystemTime::now(),
            },
        );
    }

    /// How long the group reports `modifying` after each later change.
    pub fn set_modifying_for(&self, id: &str, duration: Duration) {
        self.group(id, |group| group.modifying_for = duration);
    }

    /// The group's status now (`available` or `modifying`).
    pub fn status(&self, id: &str) -> &'static str {
        self.group(id, |group| group.status)
    }

    /// How many AUTH tokens the group holds now (1 or 2).
    pub fn live_token_count(&self, id: &str) -> usize {
        self.group(id, |group| group.tokens.len())
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    /// The strategies of the `ModifyReplicationGroup` calls that were accepted, in order.
    pub fn accepted_changes(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|call| call.action == "ModifyReplicationGroup" && call.outcome == "ok")
            .filter_map(|call| call.strategy)
            .collect()
    }

    /// Waits until the group is `available` (a change has reached the server). Panics after
    /// `timeout`.
    pub async fn wait_until_available(&self, id: &str, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.status(id) != "available" {
            assert!(
                tokio::time::Instant::now() < deadline,
                "replication group {id} still modifying after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn group<T>(&self, id: &str, read: impl FnOnce(&mut Group) -> T) -> T {
        let mut state = self.state.lock().unwrap();
        let group = state
            .groups
            .get_mut(id)
            .unwrap_or_else(|| panic!("no replication group {id} in the stand-in"));
        read(group)
    }
}

impl Drop for ElastiCacheStandIn {
    fn drop(&mut self) {
        self.server.abort();
        if let Ok(state) = self.state.lock() {
            state.changes.iter().for_each(JoinHandle::abort);
        }
    }
}

async fn serve(listener: TcpListener, state: Arc<Mutex<State>>) {
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        let state = state.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| answer(request, state.clone()));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// An answer: HTTP status and XML body.
type Answer = (u16, String);

async fn answer(
    request: Request<hyper::body::Incoming>,
    state: Arc<Mutex<State>>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let access_key = access_key(&request);
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let params = form_params(&String::from_utf8_lossy(&body));
    let param = |name: &str| params.get(name).cloned();
    let action = param("Action").unwrap_or_default();
    let group_id = param("ReplicationGroupId");
    let strategy = param("AuthTokenUpdateStrategy");
    let (status, xml) = {
        let mut guard = state.lock().unwrap();
        let (status, xml) = match action.as_str() {
            "DescribeReplicationGroups" => describe(&guard, group_id.as_deref()),
            "ModifyReplicationGroup" => modify(&mut guard, &state, &params),
            other => error(
                400,
                "InvalidAction",
                &format!("the stand-in does not answer {other}"),
            ),
        };
        let outcome = if status == 200 {
            "ok".to_owned()
        } else {
            error_code(&xml)
        };
        guard.calls.push(Call {
            action,
            replication_group_id: group_id,
            strategy,
            outcome,
            access_key,
        });
        (status, xml)
    };
    Ok(Response::builder()
        .status(status)
        .header("Content-Type", "text/xml")
        .body(Full::new(Bytes::from(xml)))
        .expect("a valid response"))
}

fn describe(state: &State, id: Option<&str>) -> Answer {
    let groups: Vec<String> = match id {
        Some(id) => match state.groups.get(id) {
            Some(group) => vec![group_xml(id, group)],
            None => return not_found(id),
        },
        None => state
            .groups
            .iter()
            .map(|(id, group)| group_xml(id, group))
            .collect(),
    };
    (
        200,
        format!(
            "<DescribeReplicationGroupsResponse xmlns=\"{XMLNS}\"><DescribeReplicationGroupsResult>\
             <ReplicationGroups>{}</ReplicationGroups></DescribeReplicationGroupsResult>\
             <ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata>\
             </DescribeReplicationGroupsResponse>",
            groups.concat(),
            request_id()
        ),
    )
}

fn modify(
    state: &mut State,
    shared: &Arc<Mutex<State>>,
    params: &BTreeMap<String, String>,
) -> Answer {
    let Some(id) = params.get("ReplicationGroupId") else {
        return error(400, "MissingParameter", "ReplicationGroupId is required");
    };
    let Some(group) = state.groups.get_mut(id) else {
        return not_found(id);
    };
    if group.status != "available" {
        return error(
            400,
            "InvalidReplicationGroupState",
            &format!(
                "Replication group {id} is not in available state ({}).",
                group.status
            ),
        );
    }
    let strategy = params
        .get("AuthTokenUpdateStrategy")
        .map_or("ROTATE", String::as_str);
    let tokens = match tokens_after(group, strategy, params.get("AuthToken")) {
        Ok(tokens) => tokens,
        Err(refusal) => return refusal,
    };
    group.status = "modifying";
    group.tokens = tokens.clone();
    group.last_strategy = Some(strategy.to_owned());
    group.last_modified = SystemTime::now();
    let answer = (
        200,
        format!(
            "<ModifyReplicationGroupResponse xmlns=\"{XMLNS}\"><ModifyReplicationGroupResult>{}\
             </ModifyReplicationGroupResult><ResponseMetadata><RequestId>{}</RequestId>\
             </ResponseMetadata></ModifyReplicationGroupResponse>",
            group_xml(id, group),
            request_id()
        ),
    );
    let (admin, wait, id, shared) = (
        group.admin.clone(),
        group.modifying_for,
        id.clone(),
        shared.clone(),
    );
    let change = tokio::spawn(async move {
        tokio::time::sleep(wait).await;
        let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
        admin.set_default_passwords(&tokens).await;
        if let Some(group) = shared.lock().unwrap().groups.get_mut(&id) {
            group.status = "available";
        }
    });
    state.changes.push(change);
    answer
}

/// The group's AUTH tokens once `strategy` applies `token`, as ElastiCache allows it: ROTATE
/// adds a second token, SET (only after a ROTATE) leaves the new one alone.
fn tokens_after(
    group: &Group,
    strategy: &str,
    token: Option<&String>,
) -> Result<Vec<String>, Answer> {
    let Some(token) = token else {
        return Err(error(
            400,
            "InvalidParameterCombination",
            "AuthTokenUpdateStrategy must be specified with AuthToken",
        ));
    };
    if !token_is_acceptable(token) {
        return Err(error(
            400,
            "InvalidParameterValue",
            "Invalid AuthToken provided.",
        ));
    }
    match strategy {
        "ROTATE" if group.tokens.len() >= 2 => Err(error(
            400,
            "InvalidParameterCombination",
            "the stand-in does not model ROTATE while two AUTH tokens are live",
        )),
        "ROTATE" => {
            let mut tokens = group.tokens.clone();
            tokens.push(token.clone());
            Ok(tokens)
        }
        "SET" if group.last_strategy.as_deref() != Some("ROTATE") => Err(error(
            400,
            "InvalidParameterValue",
            "AuthTokenUpdateStrategy SET is allowed only after ROTATE",
        )),
        "SET" => Ok(vec![token.clone()]),
        other => Err(error(
            400,
            "InvalidParameterValue",
            &format!("AuthTokenUpdateStrategy {other} is not supported by the stand-in"),
        )),
    }
}

/// `Credential=<key id>/…` of a SigV4 `Authorization` header.
fn access_key<B>(request: &Request<B>) -> Option<String> {
    let header = request.headers().get("authorization")?.to_str().ok()?;
    let credential = header.split("Credential=").nth(1)?;
    credential.split('/').next().map(str::to_owned)
}

/// ElastiCache's rule for AUTH tokens, as the contract states it.
fn token_is_acceptable(token: &str) -> bool {
    (16..=128).contains(&token.chars().count())
        && token
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '/' | '"' | '@'))
}

fn group_xml(id: &str, group: &Group) -> String {
    let modified = group
        .last_modified
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let port = group.admin.port();
    format!(
        "<ReplicationGroup><ReplicationGroupId>{id}</ReplicationGroupId>\
         <Description>harness stand-in</Description><Status>{status}</Status>\
         <MemberClusters><ClusterId>{id}-001</ClusterId></MemberClusters>\
         <NodeGroups><NodeGroup><NodeGroupId>0001</NodeGroupId><Status>{status}</Status>\
         <PrimaryEndpoint><Address>127.0.0.1</Address><Port>{port}</Port></PrimaryEndpoint>\
         </NodeGroup></NodeGroups><ClusterEnabled>false</ClusterEnabled>\
         <CacheNodeType>cache.t4g.micro</CacheNodeType><Engine>redis</Engine>\
         <AuthTokenEnabled>true</AuthTokenEnabled>\
         <AuthTokenLastModifiedDate>{modified}</AuthTokenLastModifiedDate>\
         <TransitEncryptionEnabled>true</TransitEncryptionEnabled>\
         <AtRestEncryptionEnabled>true</AtRestEncryptionEnabled></ReplicationGroup>",
        status = group.status,
        modified = iso8601(modified),
    )
}

fn not_found(id: &str) -> Answer {
    error(
        404,
        "ReplicationGroupNotFoundFault",
        &format!("ReplicationGroup {id} not found."),
    )
}

fn error(status: u16, code: &str, message: &str) -> Answer {
    (
        status,
        format!(
            "<ErrorResponse xmlns=\"{XMLNS}\"><Error><Type>Sender</Type><Code>{code}</Code>\
             <Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
            escape(message),
            request_id()
        ),
    )
}

/// The `<Code>` of an error answer.
fn error_code(xml: &str) -> String {
    xml.split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map_or_else(String::new, |(code, _)| code.to_owned())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn request_id() -> String {
    crate::process::random_hex(16)
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (civil-from-days, proleptic Gregorian).
fn iso8601(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let rest = seconds % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// `application/x-www-form-urlencoded` pairs (`+` is a space, `%XX` a byte).
fn form_params(body: &str) -> BTreeMap<String, String> {
    body.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'+', _, _) => out.push(b' '),
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 2;
            }
            (byte, _, _) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_decode_as_the_sdk_encodes_them() {
        let params = form_params("Action=ModifyReplicationGroup&AuthToken=a%21%26b%2Bc+d&Empty=");
        assert_eq!(params["Action"], "ModifyReplicationGroup");
        assert_eq!(params["AuthToken"], "a!&b+c d");
        assert_eq!(params["Empty"], "");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%4"), "%4");
    }

    #[test]
    fn timestamps_are_iso8601_utc() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_795_000_000), "2026-11-18T11:06:40Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn tokens_follow_the_contract() {
        assert!(token_is_acceptable("0123456789abcdef"));
        assert!(!token_is_acceptable("0123456789abcde"));
        assert!(!token_is_acceptable("0123456789abcde@"));
        assert!(!token_is_acceptable("0123456789 abcdef"));
    }
}
