//! `engine: redis`: the AUTH token of an ElastiCache replication group with in-transit
//! encryption. `{"engine":"redis","replicationGroupId","host","port","password","ssl"?}`.
//! `host` may be left out: the group's primary endpoint (`DescribeReplicationGroups`), address
//! and port, is used then. A template cannot write it into the secret, because the group needs the secret's
//! token before it has an endpoint.
//!
//! ElastiCache holds at most two tokens: `ModifyReplicationGroup` with
//! `AuthTokenUpdateStrategy=ROTATE` adds one and keeps the one in use, `SET` (allowed only
//! after a `ROTATE`) leaves only the one it names. setSecret therefore first revokes the
//! token `AWSPREVIOUS` holds (`SET` with the current token, only while the previous token
//! still logs in), then adds the pending one (`ROTATE`), and waits for the group to be
//! `available` after each change. A client that held the current token before a rotation
//! keeps working until the next rotation begins; no step ever takes the current token away.
//!
//! What is live is read from the server itself, never assumed: each try logs in with the
//! pending, current and previous tokens (AUTH over verified TLS) and does only what is still
//! missing ([`next_action`]), so a retried step repeats nothing that is already in effect.

use std::time::{Duration, Instant};

use aws_sdk_elasticache::Client as ElastiCacheClient;
use aws_sdk_elasticache::error::ProvideErrorMetadata;
use aws_sdk_elasticache::types::AuthTokenUpdateStrategyType;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value};
use shared::aws::AwsError;
use shared::custom_resource::lenient;
use shared::database::{ConnectSettings, Transport};

use crate::plan::{AWSPENDING, AWSPREVIOUS, CredentialStage};
use crate::secret_document::{MalformedSecret, SecretDocument};
use crate::trigger::RotationStep;
use crate::{RotationError, StepContext, StepOutcome};

/// The token lengths ElastiCache accepts.
pub const TOKEN_LENGTH: std::ops::RangeInclusive<usize> = 16..=128;
/// Characters an ElastiCache AUTH token may never contain (besides non-printable ones).
pub const FORBIDDEN_TOKEN_CHARACTERS: &[char] = &['/', '"', '@', ' '];
/// The punctuation new tokens may hold: the only non-alphanumeric characters ElastiCache's
/// API reference permits in `AuthToken`. Every other printable character is excluded when a
/// token is generated, whatever `EXCLUDE_CHARACTERS` says.
pub const TOKEN_PUNCTUATION: &str = "!&#$^<>-";
/// How long setSecret waits for `available` when the invocation has no deadline (a test
/// calling the handler without a Lambda context).
const WAIT_WITHOUT_DEADLINE: Duration = Duration::from_secs(50);
/// Kept free before the Lambda deadline: the step's error must still be reported.
const DEADLINE_MARGIN: Duration = Duration::from_secs(3);
/// `DescribeReplicationGroups` polling: quick at first (a token change on a small group is
/// often done in seconds), then every few seconds.
const FIRST_POLL: Duration = Duration::from_millis(200);
const LONGEST_POLL: Duration = Duration::from_secs(5);
/// The status ElastiCache reports when a group accepts changes again.
const AVAILABLE: &str = "available";
/// Changes one setSecret makes at most: `SET` then `ROTATE`. A third means a change did not
/// take effect.
const MOST_CHANGES: usize = 2;

/// A redis secret's fields (the token is checked separately: serde would quote it).
#[derive(Debug, Clone, Deserialize)]
struct RedisFields {
    #[serde(rename = "replicationGroupId")]
    replication_group_id: String,
    #[serde(default)]
    host: Option<String>,
    #[serde(deserialize_with = "lenient::number")]
    port: u16,
    #[serde(default, deserialize_with = "lenient::optional_bool")]
    ssl: Option<bool>,
}

/// One version of an `engine: redis` secret.
#[derive(Debug, Clone)]
pub struct RedisSecret {
    pub replication_group_id: String,
    /// `None`: the group's primary endpoint.
    pub host: Option<String>,
    pub port: u16,
    /// `None` and `Some(true)` require verified TLS; only `Some(false)` allows plaintext.
    pub ssl: Option<bool>,
    pub token: SecretString,
}

/// Why a redis secret cannot be used. Never quotes the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisSecretError {
    #[error("{0} (engine redis needs replicationGroupId, host, port, password and optionally ssl)")]
    Fields(String),
    #[error("field `replicationGroupId` must not be empty")]
    EmptyGroupId,
    #[error("field `host` must not be empty (leave it out to use the group's primary endpoint)")]
    EmptyHost,
    #[error(
        "field `password` is not an ElastiCache AUTH token: it must be {} to {} printable \
         characters without `/`, `\"`, `@` or spaces; {problem}",
        TOKEN_LENGTH.start(),
        TOKEN_LENGTH.end()
    )]
    BadToken { problem: TokenProblem },
}

/// What is wrong with a token, without the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenProblem {
    #[error("it is missing")]
    Missing,
    #[error("it has {0} characters")]
    Length(usize),
    #[error("it contains `{0}`")]
    Forbidden(char),
    #[error("it contains a character that is not printable ASCII")]
    NotPrintable,
}

impl RedisSecret {
    /// Reads a redis secret's fields (`engine` is the caller's).
    pub fn of(fields: &Map<String, Value>) -> Result<Self, RedisSecretError> {
        let parsed = RedisFields::deserialize(Value::Object(fields.clone()))
            .map_err(|e| RedisSecretError::Fields(e.to_string()))?;
        if parsed.replication_group_id.trim().is_empty() {
            return Err(RedisSecretError::EmptyGroupId);
        }
        if parsed
            .host
            .as_deref()
            .is_some_and(|host| host.trim().is_empty())
        {
            return Err(RedisSecretError::EmptyHost);
        }
        let token = match fields.get("password") {
            Some(Value::String(token)) => token,
            _ => {
                return Err(RedisSecretError::BadToken {
                    problem: TokenProblem::Missing,
                });
            }
        };
        check_token(token).map_err(|problem| RedisSecretError::BadToken { problem })?;
        Ok(Self {
            replication_group_id: parsed.replication_group_id,
            host: parsed.host,
            port: parsed.port,
            ssl: parsed.ssl,
            token: SecretString::from(token.as_str()),
        })
    }

    fn from_document(document: &SecretDocument) -> Result<Self, MalformedSecret> {
        Ok(Self::of(&document.fields()?)?)
    }

    fn transport(&self) -> Transport {
        if self.ssl == Some(false) {
            Transport::Plaintext
        } else {
            Transport::VerifiedTls
        }
    }
}

/// Whether ElastiCache would accept `token` as an AUTH token (what the contract promises).
pub fn check_token(token: &str) -> Result<(), TokenProblem> {
    let length = token.chars().count();
    if !TOKEN_LENGTH.contains(&length) {
        return Err(TokenProblem::Length(length));
    }
    if let Some(forbidden) = token
        .chars()
        .find(|c| FORBIDDEN_TOKEN_CHARACTERS.contains(c))
    {
        return Err(TokenProblem::Forbidden(forbidden));
    }
    if !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err(TokenProblem::NotPrintable);
    }
    Ok(())
}

/// `EXCLUDE_CHARACTERS` for `GetRandomPassword` when it makes a token: the configured ones
/// and every punctuation character outside [`TOKEN_PUNCTUATION`].
pub fn token_exclude_characters(configured: &str) -> String {
    let mut exclude: String = configured
        .chars()
        .filter(|c| c.is_ascii_punctuation())
        .collect();
    exclude.extend(
        (b'!'..=b'~')
            .map(char::from)
            .filter(|c| c.is_ascii_punctuation() && !TOKEN_PUNCTUATION.contains(*c))
            .filter(|c| !configured.contains(*c)),
    );
    exclude
}

/// Why a redis step failed. Never quotes a token.
#[derive(Debug, thiserror::Error)]
pub enum RedisTokenError {
    #[error(transparent)]
    ElastiCache(AwsError),
    #[error("no ElastiCache client: the function was started without one (a bug in its wiring)")]
    NoElastiCacheClient,
    #[error(
        "replication group {group} is still `{status}` after {waited:?} (the invocation's \
         deadline is near); the next try waits for it and goes on from there"
    )]
    StillModifying {
        group: String,
        status: String,
        waited: Duration,
    },
    #[error("replication group {group} was not found by DescribeReplicationGroups")]
    GroupNotFound { group: String },
    #[error(
        "the secret has no `host` and DescribeReplicationGroups gives replication group \
         {group} no primary endpoint yet"
    )]
    NoEndpoint { group: String },
    #[error("the {stage} token is refused by {host}:{port} ({transport}): {reason}", stage = stage.label())]
    TokenRefused {
        stage: CredentialStage,
        host: String,
        port: u16,
        transport: Transport,
        reason: String,
    },
    #[error("{host}:{port} cannot be reached ({transport}) with the {stage} token: {reason}", stage = stage.label())]
    Unreachable {
        stage: CredentialStage,
        host: String,
        port: u16,
        transport: Transport,
        reason: String,
    },
    #[error(
        "neither the pending nor the current token logs in to {host}:{port}; the group's \
         token was changed outside this rotation, so nothing was changed"
    )]
    NoTokenLogsIn { host: String, port: u16 },
    #[error(
        "the pending version names replication group {pending} at {pending_host}:{pending_port}, \
         the current one {current} at {current_host}:{current_port}"
    )]
    DifferentGroup {
        current: String,
        current_host: String,
        current_port: u16,
        pending: String,
        pending_host: String,
        pending_port: u16,
    },
    #[error(
        "replication group {group}: {action} was applied and the group is available, but the \
         tokens that log in did not change as it should; nothing more was changed"
    )]
    ChangeNotInEffect { group: String, action: &'static str },
}

impl RedisTokenError {
    /// The `errorType` Lambda reports.
    pub fn error_type(&self) -> &'static str {
        match self {
            RedisTokenError::ElastiCache(error) => error.error_type(),
            RedisTokenError::NoElastiCacheClient => "MisconfiguredFunction",
            RedisTokenError::StillModifying { .. } => "ReplicationGroupModifying",
            RedisTokenError::GroupNotFound { .. } => "ReplicationGroupNotFound",
            RedisTokenError::NoEndpoint { .. } => "ReplicationGroupNotFound",
            RedisTokenError::TokenRefused { .. } => "RedisTokenRefused",
            RedisTokenError::Unreachable { .. } => "RedisUnreachable",
            RedisTokenError::NoTokenLogsIn { .. } => "NoCredentialsLogIn",
            RedisTokenError::DifferentGroup { .. } => "InconsistentSecret",
            RedisTokenError::ChangeNotInEffect { .. } => "TokenChangeNotInEffect",
        }
    }
}

/// What setSecret does next, from what the server and the group say now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetAction {
    /// The pending token logs in: its `ROTATE` is in effect; nothing to do.
    Done,
    /// Two tokens are live (the previous one still logs in): `SET` the current one, which
    /// revokes the previous one.
    RevokePrevious,
    /// Only the current token is live: `ROTATE` the pending one in.
    RotatePendingIn,
    /// Neither the pending nor the current token logs in: change nothing.
    Refuse,
}

/// Which tokens the server accepts right now (`previous`: `None` when there is no other
/// previous token to try).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveTokens {
    pub pending: bool,
    pub current: bool,
    pub previous: Option<bool>,
}

/// The next change setSecret makes: the revocation first, the new token second, and nothing
/// that is already in effect.
pub fn next_action(live: LiveTokens) -> SetAction {
    match live {
        LiveTokens { pending: true, .. } => SetAction::Done,
        LiveTokens { current: false, .. } => SetAction::Refuse,
        LiveTokens {
            previous: Some(true),
            ..
        } => SetAction::RevokePrevious,
        LiveTokens { .. } => SetAction::RotatePendingIn,
    }
}

/// The target: the current version's secret.
#[derive(Debug, Clone)]
pub struct Redis(pub RedisSecret);

impl Redis {
    /// createSecret: a token ElastiCache accepts, from `GetRandomPassword` with
    /// `PASSWORD_LENGTH` (kept within 16–128) and only [`TOKEN_PUNCTUATION`] as punctuation.
    pub(crate) async fn new_token(
        &self,
        step: &StepContext<'_>,
    ) -> Result<SecretString, RotationError> {
        let length = (step.config.password_length as usize)
            .clamp(*TOKEN_LENGTH.start(), *TOKEN_LENGTH.end()) as u32;
        let exclude = token_exclude_characters(&step.config.exclude_characters);
        let token = step
            .secrets
            .random_password(step.secret_id, length, &exclude)
            .await?;
        check_token(token.expose_secret())
            .map_err(|problem| RedisSecretError::BadToken { problem })
            .map_err(MalformedSecret::from)
            .map_err(crate::malformed(step.secret_id, AWSPENDING))?;
        Ok(token)
    }

    /// setSecret: revoke the previous token if it is still live, then rotate the pending one
    /// in, waiting for `available` around each change.
    pub(crate) async fn set(
        self,
        pending: &SecretDocument,
        step: &mut StepContext<'_>,
    ) -> Result<StepOutcome, RotationError> {
        let id = step.secret_id;
        let current = self.0;
        let pending =
            RedisSecret::from_document(pending).map_err(crate::malformed(id, AWSPENDING))?;
        let fail = |source| redis_error(RotationStep::SetSecret, id, source);
        if (&pending.replication_group_id, &pending.host, pending.port)
            != (&current.replication_group_id, &current.host, current.port)
        {
            let host = |secret: &RedisSecret| secret.host.clone().unwrap_or_default();
            return Err(fail(RedisTokenError::DifferentGroup {
                current: current.replication_group_id.clone(),
                current_host: host(&current),
                current_port: current.port,
                pending_host: host(&pending),
                pending: pending.replication_group_id,
                pending_port: pending.port,
            }));
        }
        let previous = match step.read(id, AWSPREVIOUS).await? {
            // A previous version that is no redis secret (say, an old format) holds no token
            // ElastiCache could still accept.
            Some(document) => RedisSecret::from_document(&document)
                .ok()
                .filter(|previous| {
                    previous.token.expose_secret() != current.token.expose_secret()
                        && previous.token.expose_secret() != pending.token.expose_secret()
                }),
            None => None,
        };
        let group = ReplicationGroup::new(step, &current.replication_group_id).map_err(fail)?;
        let (host, port) = match &current.host {
            Some(host) => (host.clone(), current.port),
            None => group.primary_endpoint().await.map_err(fail)?,
        };
        let settings = &step.config.connect;
        let waited_since = Instant::now();
        let mut last_change = None;
        for _ in 0..=MOST_CHANGES {
            group
                .wait_until_available(waited_since)
                .await
                .map_err(fail)?;
            let live = LiveTokens {
                pending: accepts(settings, &host, port, &pending, CredentialStage::Pending)
                    .await
                    .map_err(fail)?,
                current: accepts(settings, &host, port, &current, CredentialStage::Current)
                    .await
                    .map_err(fail)?,
                previous: match &previous {
                    Some(previous) => Some(
                        accepts(settings, &host, port, previous, CredentialStage::Previous)
                            .await
                            .map_err(fail)?,
                    ),
                    None => None,
                },
            };
            let action = next_action(live);
            if last_change == Some(action) {
                return Err(fail(RedisTokenError::ChangeNotInEffect {
                    group: group.id.to_owned(),
                    action: group_action_name(action),
                }));
            }
            let (strategy, token) = match action {
                SetAction::Done if last_change.is_none() => {
                    return Ok(StepOutcome::PendingAlreadyLogsIn);
                }
                SetAction::Done => return Ok(StepOutcome::PasswordChanged),
                SetAction::Refuse => {
                    return Err(fail(RedisTokenError::NoTokenLogsIn { host, port }));
                }
                SetAction::RevokePrevious => (AuthTokenUpdateStrategyType::Set, &current.token),
                SetAction::RotatePendingIn => (AuthTokenUpdateStrategyType::Rotate, &pending.token),
            };
            group.modify(strategy, token).await.map_err(fail)?;
            tracing::info!(
                secret_id = %id,
                replication_group = %group.id,
                change = group_action_name(action),
                "ModifyReplicationGroup applied"
            );
            last_change = Some(action);
        }
        Err(fail(RedisTokenError::ChangeNotInEffect {
            group: group.id.to_owned(),
            action: last_change.map_or("a change", group_action_name),
        }))
    }
}

/// testSecret (and finishSecret's check): the pending token logs in over the secret's
/// transport and `PING` answers.
pub(crate) async fn test(
    pending: &SecretDocument,
    step: &mut StepContext<'_>,
) -> Result<StepOutcome, RotationError> {
    let id = step.secret_id;
    let pending = RedisSecret::from_document(pending).map_err(crate::malformed(id, AWSPENDING))?;
    let fail = |source| redis_error(RotationStep::TestSecret, id, source);
    let (host, port) = match &pending.host {
        Some(host) => (host.clone(), pending.port),
        None => ReplicationGroup::new(step, &pending.replication_group_id)
            .map_err(fail)?
            .primary_endpoint()
            .await
            .map_err(fail)?,
    };
    log_in(
        &step.config.connect,
        &host,
        port,
        &pending,
        CredentialStage::Pending,
    )
    .await
    .map_err(fail)?;
    Ok(StepOutcome::PendingVerified)
}

fn group_action_name(action: SetAction) -> &'static str {
    match action {
        SetAction::RevokePrevious => "SET (revoke the previous token)",
        SetAction::RotatePendingIn => "ROTATE (add the pending token)",
        SetAction::Done | SetAction::Refuse => "nothing",
    }
}

fn redis_error(step: RotationStep, secret_id: &str, source: RedisTokenError) -> RotationError {
    RotationError::Redis {
        step,
        secret_id: secret_id.to_owned(),
        source: Box::new(source),
    }
}

/// Whether the server accepts `secret`'s token: a refusal is an answer, an unreachable
/// server is an error (nothing can be decided then).
async fn accepts(
    settings: &ConnectSettings,
    host: &str,
    port: u16,
    secret: &RedisSecret,
    stage: CredentialStage,
) -> Result<bool, RedisTokenError> {
    match log_in(settings, host, port, secret, stage).await {
        Ok(()) => Ok(true),
        Err(RedisTokenError::TokenRefused { .. }) => Ok(false),
        Err(error) => Err(error),
    }
}

/// Connects (TLS verified against the same trust as the databases: the system roots,
/// plus `DB_CA_BUNDLE`), authenticates with the token and runs `PING`.
pub async fn log_in(
    settings: &ConnectSettings,
    host: &str,
    port: u16,
    secret: &RedisSecret,
    stage: CredentialStage,
) -> Result<(), RedisTokenError> {
    let transport = secret.transport();
    let unreachable = |reason: String| RedisTokenError::Unreachable {
        stage,
        host: host.to_owned(),
        port,
        transport,
        reason,
    };
    let redis_settings = ::redis::RedisConnectionInfo::default()
        .set_password(secret.token.expose_secret())
        .set_skip_set_lib_name();
    let address = match transport {
        Transport::VerifiedTls => ::redis::ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure: false,
            tls_params: None,
        },
        Transport::Plaintext => ::redis::ConnectionAddr::Tcp(host.to_owned(), port),
    };
    let info = ::redis::IntoConnectionInfo::into_connection_info(address)
        .map_err(|e| unreachable(e.to_string()))?
        .set_redis_settings(redis_settings);
    let client = match transport {
        Transport::VerifiedTls => ::redis::Client::build_with_tls(
            info,
            ::redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(settings.trust.pem().as_bytes().to_vec()),
            },
        ),
        Transport::Plaintext => ::redis::Client::open(info),
    }
    .map_err(|e| unreachable(e.to_string()))?;
    let config = ::redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(settings.connect_timeout))
        .set_response_timeout(Some(settings.statement_timeout));
    let mut connection = match client
        .get_multiplexed_async_connection_with_config(&config)
        .await
    {
        Ok(connection) => connection,
        Err(error) if error.kind() == ::redis::ErrorKind::AuthenticationFailed => {
            return Err(RedisTokenError::TokenRefused {
                stage,
                host: host.to_owned(),
                port,
                transport,
                reason: error.to_string(),
            });
        }
        Err(error) => return Err(unreachable(error.to_string())),
    };
    let pong: String = ::redis::cmd("PING")
        .query_async(&mut connection)
        .await
        .map_err(|e| unreachable(format!("PING: {e}")))?;
    if pong != "PONG" {
        return Err(unreachable(format!("PING answered `{pong}`")));
    }
    Ok(())
}

/// The replication group a secret names, through the ElastiCache API.
struct ReplicationGroup<'a> {
    client: &'a ElastiCacheClient,
    id: &'a str,
    deadline: Instant,
}

impl<'a> ReplicationGroup<'a> {
    fn new(step: &StepContext<'a>, id: &'a str) -> Result<Self, RedisTokenError> {
        let client = step
            .elasticache
            .ok_or(RedisTokenError::NoElastiCacheClient)?;
        let deadline = match step.deadline {
            Some(deadline) => deadline
                .checked_sub(DEADLINE_MARGIN)
                .unwrap_or_else(Instant::now),
            None => Instant::now() + WAIT_WITHOUT_DEADLINE,
        };
        Ok(Self {
            client,
            id,
            deadline,
        })
    }

    async fn status(&self) -> Result<String, RedisTokenError> {
        Ok(self
            .describe()
            .await?
            .status()
            .unwrap_or_default()
            .to_owned())
    }

    /// The primary endpoint's address and port (cluster mode disabled: the first node
    /// group's).
    async fn primary_endpoint(&self) -> Result<(String, u16), RedisTokenError> {
        let group = self.describe().await?;
        group
            .node_groups()
            .first()
            .and_then(|node_group| node_group.primary_endpoint())
            .or(group.configuration_endpoint())
            .and_then(|endpoint| {
                let port = u16::try_from(endpoint.port()?).ok()?;
                Some((endpoint.address()?.to_owned(), port))
            })
            .ok_or_else(|| RedisTokenError::NoEndpoint {
                group: self.id.to_owned(),
            })
    }

    async fn describe(
        &self,
    ) -> Result<aws_sdk_elasticache::types::ReplicationGroup, RedisTokenError> {
        let out = self
            .client
            .describe_replication_groups()
            .replication_group_id(self.id)
            .send()
            .await
            .map_err(|e| {
                if e.code() == Some("ReplicationGroupNotFoundFault") {
                    return RedisTokenError::GroupNotFound {
                        group: self.id.to_owned(),
                    };
                }
                RedisTokenError::ElastiCache(AwsError::from_sdk(
                    format!("DescribeReplicationGroups ({})", self.id),
                    e,
                ))
            })?;
        out.replication_groups()
            .iter()
            .find(|group| group.replication_group_id() == Some(self.id))
            .cloned()
            .ok_or_else(|| RedisTokenError::GroupNotFound {
                group: self.id.to_owned(),
            })
    }

    /// Polls until the group is `available`, or fails (retryably) at the deadline.
    async fn wait_until_available(&self, since: Instant) -> Result<(), RedisTokenError> {
        let mut pause = FIRST_POLL;
        loop {
            let status = self.status().await?;
            if status == AVAILABLE {
                return Ok(());
            }
            let now = Instant::now();
            if now + pause > self.deadline {
                return Err(RedisTokenError::StillModifying {
                    group: self.id.to_owned(),
                    status,
                    waited: now.duration_since(since),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(LONGEST_POLL);
        }
    }

    async fn modify(
        &self,
        strategy: AuthTokenUpdateStrategyType,
        token: &SecretString,
    ) -> Result<(), RedisTokenError> {
        self.client
            .modify_replication_group()
            .replication_group_id(self.id)
            .auth_token(token.expose_secret())
            .auth_token_update_strategy(strategy.clone())
            .apply_immediately(true)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                RedisTokenError::ElastiCache(AwsError::from_sdk(
                    format!(
                        "ModifyReplicationGroup ({}, AuthTokenUpdateStrategy={})",
                        self.id,
                        strategy.as_str()
                    ),
                    e,
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(value: Value) -> Map<String, Value> {
        let Value::Object(fields) = value else {
            panic!("not an object")
        };
        fields
    }

    const TOKEN: &str = "Aa0!&#$^<>-Bb1Cc2Dd3";

    #[test]
    fn the_next_change_is_the_revocation_then_the_new_token_and_never_a_repeat() {
        let live = |pending, current, previous| LiveTokens {
            pending,
            current,
            previous,
        };
        for (tokens, expected) in [
            // First rotation: only the token the group was created with.
            (live(false, true, None), SetAction::RotatePendingIn),
            // Two live from the last rotation: revoke first.
            (live(false, true, Some(true)), SetAction::RevokePrevious),
            // Revoked by an earlier try: add the new one.
            (live(false, true, Some(false)), SetAction::RotatePendingIn),
            // Already rotated in (a retried setSecret): nothing.
            (live(true, true, Some(false)), SetAction::Done),
            (live(true, true, Some(true)), SetAction::Done),
            (live(true, false, None), SetAction::Done),
            // The current token is refused: changed outside; change nothing.
            (live(false, false, Some(true)), SetAction::Refuse),
            (live(false, false, None), SetAction::Refuse),
        ] {
            assert_eq!(next_action(tokens), expected, "{tokens:?}");
        }
    }

    #[test]
    fn tokens_follow_elasticache_rules() {
        assert_eq!(check_token(TOKEN), Ok(()));
        assert_eq!(check_token(&"a".repeat(16)), Ok(()));
        assert_eq!(check_token(&"a".repeat(128)), Ok(()));
        assert_eq!(check_token(&"a".repeat(15)), Err(TokenProblem::Length(15)));
        assert_eq!(
            check_token(&"a".repeat(129)),
            Err(TokenProblem::Length(129))
        );
        for forbidden in ['/', '"', '@', ' '] {
            let token = format!("abcdefgh{forbidden}ijklmnop");
            assert_eq!(check_token(&token), Err(TokenProblem::Forbidden(forbidden)));
        }
        assert_eq!(
            check_token("abcdefgh\tijklmnop"),
            Err(TokenProblem::NotPrintable)
        );
        assert_eq!(
            check_token("abcdefghéijklmnop"),
            Err(TokenProblem::NotPrintable)
        );
    }

    #[test]
    fn generated_tokens_hold_only_the_punctuation_elasticache_permits() {
        let exclude = token_exclude_characters("/@\"'\\");
        for c in (b'!'..=b'~').map(char::from) {
            let excluded = exclude.contains(c);
            let allowed = c.is_ascii_alphanumeric() || TOKEN_PUNCTUATION.contains(c);
            assert_eq!(excluded, !allowed, "{c}");
        }
        // A configured exclusion of an allowed character is kept.
        assert!(token_exclude_characters("$").contains('$'));
        // Letters are never excluded here (GetRandomPassword would still need them).
        assert!(!token_exclude_characters("abc").contains('a'));
    }

    #[test]
    fn a_redis_secret_reads_its_fields_leniently() {
        let secret = RedisSecret::of(&fields(json!({
            "engine": "redis", "replicationGroupId": "bp-cache", "host": "h.cache.amazonaws.com",
            "port": "6379", "password": TOKEN, "ssl": "true"
        })))
        .unwrap();
        assert_eq!(
            (
                secret.replication_group_id.as_str(),
                secret.host.as_deref(),
                secret.port,
                secret.ssl
            ),
            ("bp-cache", Some("h.cache.amazonaws.com"), 6379, Some(true))
        );
        assert_eq!(secret.transport(), Transport::VerifiedTls);
        let plain = RedisSecret::of(&fields(json!({
            "engine": "redis", "replicationGroupId": "g", "host": "h", "port": 6379,
            "password": TOKEN, "ssl": false
        })))
        .unwrap();
        assert_eq!(plain.transport(), Transport::Plaintext);
        // No host: the group's primary endpoint is looked up; an empty one is a mistake.
        let no_host = fields(json!({
            "engine": "redis", "replicationGroupId": "g", "port": 6379, "password": TOKEN
        }));
        assert_eq!(RedisSecret::of(&no_host).unwrap().host, None);
        let mut empty_host = no_host.clone();
        empty_host.insert("host".into(), json!(""));
        assert_eq!(
            RedisSecret::of(&empty_host).unwrap_err(),
            RedisSecretError::EmptyHost
        );
    }

    #[test]
    fn malformed_redis_secrets_say_what_is_wrong_without_the_token() {
        let secret = |extra: Value| {
            let mut base = fields(json!({
                "engine": "redis", "replicationGroupId": "g", "host": "h", "port": 6379,
                "password": "Secret-77-Secret-77"
            }));
            base.extend(fields(extra));
            base
        };
        for (value, expected) in [
            (
                {
                    let mut f = secret(json!({}));
                    f.remove("replicationGroupId");
                    f
                },
                "missing field `replicationGroupId`",
            ),
            (
                secret(json!({"replicationGroupId": " "})),
                "`replicationGroupId` must not be empty",
            ),
            (secret(json!({"port": "sixty"})), "sixty"),
            (
                secret(json!({"password": "Secret@77-Secret-77"})),
                "it contains `@`",
            ),
            (
                secret(json!({"password": "Secret 77-Secret-77"})),
                "it contains ` `",
            ),
            (
                secret(json!({"password": "Secret-77"})),
                "it has 9 characters",
            ),
        ] {
            let err = RedisSecret::of(&value).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
            assert!(!err.contains("Secret"), "{err}");
        }
    }
}
