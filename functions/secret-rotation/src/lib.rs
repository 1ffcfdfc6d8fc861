//! secret-rotation: the four-step Secrets Manager rotation protocol (AWS's SingleUser and
//! MultiUser templates for MariaDB/MySQL/PostgreSQL) plus `engine: generic` secrets.
//!
//! Every step first runs the entry guard, then does only what is still missing, so a step run
//! twice is a no-op the second time. A failed step leaves `AWSCURRENT` working; the next try of
//! the same token picks up where it stopped. What differs by `engine` lives behind
//! [`credential_target::CredentialTarget`].

pub mod config;
pub mod credential_target;
pub mod database_rotation;
pub mod database_users;
pub mod plan;
pub mod secret_document;
pub mod secrets_store;
pub mod sql;
pub mod trigger;

use config::RotationConfig;
use credential_target::CredentialTarget;
use database_users::DatabaseUserError;
use lambda_runtime::{Diagnostic, LambdaEvent};
use plan::{CredentialStage, EntryDecision, FinishAction};
use secrecy::SecretString;
use secret_document::{MalformedSecret, SecretDocument};
use secrets_store::SecretsStore;
use serde_json::{Value, json};
use shared::aws::AwsError;
use shared::database::{ConnectError, sql::KnownSecrets};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use trigger::{RotationStep, Trigger, TriggerError};

/// Why a rotation step failed.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error(transparent)]
    Event(#[from] TriggerError),
    #[error(transparent)]
    Refused(#[from] plan::EntryRefusal),
    #[error(transparent)]
    SecretsManager(#[from] AwsError),
    #[error("secret {secret_id} has no {stage} value{hint}")]
    MissingVersion {
        secret_id: String,
        stage: &'static str,
        hint: &'static str,
    },
    #[error("the {stage} version of secret {secret_id} is malformed: {source}")]
    MalformedSecret {
        secret_id: String,
        stage: &'static str,
        #[source]
        source: MalformedSecret,
    },
    #[error("secret {secret_id}: {reason}")]
    Inconsistent {
        secret_id: String,
        reason: String,
        /// The pending version does not fit the current one (another user or database): no
        /// retry of its token can complete the rotation.
        about_pending: bool,
    },
    #[error("{step} for {secret_id}: {source}")]
    Database {
        step: RotationStep,
        secret_id: String,
        #[source]
        source: Box<DatabaseUserError>,
    },
    #[error(
        "setSecret for {secret_id}: the database cannot be reached with the {} credentials, so no password was changed: {source}",
        stage.label()
    )]
    Unreachable {
        secret_id: String,
        stage: CredentialStage,
        #[source]
        source: Box<ConnectError>,
    },
    #[error(
        "setSecret for {secret_id}: none of the pending, current or previous credentials log in; the password was changed outside this rotation. Attempts: {attempts}"
    )]
    NoCredentialsLogIn { secret_id: String, attempts: String },
    #[error(
        "setSecret for {secret_id}: the current credentials do not log in, so the master secret is not used (confused-deputy guard): {source}"
    )]
    CurrentCredentialsRefused {
        secret_id: String,
        #[source]
        source: Box<ConnectError>,
    },
    #[error(
        "createSecret for {secret_id}: the operating system's random number generator failed: {source}"
    )]
    RandomSource {
        secret_id: String,
        #[source]
        source: getrandom::Error,
    },
    #[error(
        "finishSecret for {secret_id}: AWSCURRENT stays where it is, because the pending version does not work now (run setSecret and testSecret for this token first): {source}"
    )]
    FinishRefused {
        secret_id: String,
        #[source]
        source: Box<RotationError>,
    },
    /// `engine: redis`: the replication group or its server.
    #[error("{step} for {secret_id}: {source}")]
    Redis {
        step: RotationStep,
        secret_id: String,
        #[source]
        source: Box<credential_target::redis::RedisTokenError>,
    },
    /// The token's pending version can never complete the rotation (it is malformed, or names
    /// another user or database than `AWSCURRENT`). Secrets Manager retries the token and, on
    /// AWS, refuses every new rotation while it is `AWSPENDING`, so the message says how an
    /// operator abandons it.
    #[error(
        "{source}. Version {token} can never complete this rotation, and Secrets Manager starts no new rotation while it is AWSPENDING. Abandon it: `aws secretsmanager update-secret-version-stage --secret-id {secret_id} --version-stage AWSPENDING --remove-from-version-id {token}`, then rotate again: `aws secretsmanager rotate-secret --secret-id {secret_id}` (docs/secret-rotation.md: Abandoned rotations)"
    )]
    PendingUnusable {
        secret_id: String,
        token: String,
        #[source]
        source: Box<RotationError>,
    },
    /// An error as it leaves the function: its text with every password the step read
    /// removed ([`KnownSecrets`]), its `errorType` kept.
    #[error("{message}")]
    Redacted {
        error_type: &'static str,
        message: String,
    },
}

impl RotationError {
    /// The `errorType` Lambda reports.
    pub fn error_type(&self) -> &'static str {
        use plan::EntryRefusal::*;
        match self {
            RotationError::Event(_) => "InvalidRotationEvent",
            RotationError::Refused(RotationDisabled { .. }) => "RotationNotEnabled",
            RotationError::Refused(UnknownToken { .. }) => "UnknownRotationToken",
            RotationError::Refused(NotPending { .. }) => "TokenNotPending",
            RotationError::SecretsManager(e) => e.error_type(),
            RotationError::MissingVersion { .. } => "SecretVersionMissing",
            RotationError::MalformedSecret { .. } => "MalformedSecret",
            RotationError::Inconsistent { .. } => "InconsistentSecret",
            RotationError::Database { source, .. }
                if matches!(**source, DatabaseUserError::Connect(_)) =>
            {
                "DatabaseLoginFailed"
            }
            RotationError::Database { .. } => "DatabaseStatementFailed",
            RotationError::Unreachable { .. } => "DatabaseUnreachable",
            RotationError::NoCredentialsLogIn { .. } => "NoCredentialsLogIn",
            RotationError::CurrentCredentialsRefused { .. } => "CurrentCredentialsRefused",
            RotationError::RandomSource { .. } => "RandomSourceFailed",
            RotationError::FinishRefused { .. } => "PendingNotVerified",
            RotationError::Redis { source, .. } => source.error_type(),
            RotationError::PendingUnusable { .. } => "PendingVersionUnusable",
            RotationError::Redacted { error_type, .. } => error_type,
        }
    }

    /// Whether the pending version itself is what fails (see [`RotationError::PendingUnusable`]).
    fn pending_is_unusable(&self) -> bool {
        match self {
            RotationError::Inconsistent { about_pending, .. } => *about_pending,
            RotationError::MalformedSecret { stage, .. } => *stage == plan::AWSPENDING,
            RotationError::FinishRefused { source, .. } => source.pending_is_unusable(),
            RotationError::Redis { source, .. } => {
                matches!(
                    **source,
                    credential_target::redis::RedisTokenError::DifferentGroup { .. }
                )
            }
            _ => false,
        }
    }

    /// This error with every secret in `known` removed from its text.
    pub fn redacted(self, known: &KnownSecrets) -> RotationError {
        match self {
            RotationError::Redacted {
                error_type,
                message,
            } => RotationError::Redacted {
                error_type,
                message: known.redact(&message),
            },
            error => RotationError::Redacted {
                error_type: error.error_type(),
                message: known.redact_error(&error),
            },
        }
    }
}

impl From<RotationError> for Diagnostic {
    fn from(error: RotationError) -> Self {
        shared::diagnostic(error.error_type(), &error)
    }
}

/// What a step did; returned to the caller and logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// The token is already `AWSCURRENT`.
    RotationAlreadyComplete,
    PendingCreated,
    PendingAlreadyExists,
    PasswordChanged,
    AlternateUserProvisioned,
    PendingAlreadyLogsIn,
    /// `engine: generic`: there is no external system to update.
    NothingToSet,
    PendingVerified,
    CurrentMoved,
    AlreadyCurrent,
}

impl StepOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            StepOutcome::RotationAlreadyComplete => "rotation-already-complete",
            StepOutcome::PendingCreated => "pending-created",
            StepOutcome::PendingAlreadyExists => "pending-already-exists",
            StepOutcome::PasswordChanged => "password-changed",
            StepOutcome::AlternateUserProvisioned => "alternate-user-provisioned",
            StepOutcome::PendingAlreadyLogsIn => "pending-already-logs-in",
            StepOutcome::NothingToSet => "nothing-to-set",
            StepOutcome::PendingVerified => "pending-verified",
            StepOutcome::CurrentMoved => "current-moved",
            StepOutcome::AlreadyCurrent => "already-current",
        }
    }
}

/// The rotation function: Secrets Manager plus configuration, built once per cold start.
#[derive(Debug, Clone)]
pub struct Rotator {
    secrets: SecretsStore,
    config: RotationConfig,
    /// `engine: redis` only; see [`Rotator::with_elasticache`].
    elasticache: Option<aws_sdk_elasticache::Client>,
}

impl Rotator {
    pub fn new(client: aws_sdk_secretsmanager::Client, config: RotationConfig) -> Self {
        Self {
            secrets: SecretsStore::new(client),
            config,
            elasticache: None,
        }
    }

    /// The ElastiCache client `engine: redis` secrets are rotated with.
    pub fn with_elasticache(mut self, client: aws_sdk_elasticache::Client) -> Self {
        self.elasticache = Some(client);
        self
    }

    /// The Lambda entry point.
    pub async fn handle(&self, event: LambdaEvent<Value>) -> Result<Value, RotationError> {
        let deadline = invocation_deadline(event.context.deadline);
        self.handle_payload_until(event.payload, deadline).await
    }

    /// Decodes and runs one rotation event (what [`Rotator::handle`] does, without the context).
    pub async fn handle_payload(&self, payload: Value) -> Result<Value, RotationError> {
        self.handle_payload_until(payload, None).await
    }

    /// [`Rotator::handle_payload`] for an invocation that must end by `deadline`.
    async fn handle_payload_until(
        &self,
        payload: Value,
        deadline: Option<Instant>,
    ) -> Result<Value, RotationError> {
        let trigger = Trigger::from_payload(payload)?;
        let mut known = KnownSecrets::default();
        match self.rotate_with(&trigger, &mut known, deadline).await {
            Ok(outcome) => {
                tracing::info!(
                    secret_id = %trigger.secret_id,
                    token = %trigger.token,
                    step = %trigger.step,
                    outcome = outcome.as_str(),
                    "rotation step done"
                );
                Ok(json!({
                    "secretId": trigger.secret_id,
                    "token": trigger.token,
                    "step": trigger.step.as_str(),
                    "outcome": outcome.as_str(),
                }))
            }
            Err(error) => {
                let error = error.redacted(&known);
                tracing::error!(
                    secret_id = %trigger.secret_id,
                    token = %trigger.token,
                    step = %trigger.step,
                    error = %shared::error_chain(&error),
                    "rotation step failed"
                );
                Err(error)
            }
        }
    }

    /// Runs one step for `trigger`. Its error is not redacted yet: [`Rotator::handle`] does
    /// that before the error leaves the function.
    pub async fn rotate(&self, trigger: &Trigger) -> Result<StepOutcome, RotationError> {
        self.rotate_with(trigger, &mut KnownSecrets::default(), None)
            .await
    }

    /// [`Rotator::rotate`], adding every password read to `known`.
    async fn rotate_with(
        &self,
        trigger: &Trigger,
        known: &mut KnownSecrets,
        deadline: Option<Instant>,
    ) -> Result<StepOutcome, RotationError> {
        let id = trigger.secret_id.as_str();
        let token = trigger.token.as_str();
        let metadata = self.secrets.metadata(id).await?;
        if plan::entry_guard(id, token, metadata.rotation_enabled, &metadata.versions)?
            == EntryDecision::AlreadyCurrent
        {
            return Ok(StepOutcome::RotationAlreadyComplete);
        }
        let mut step = StepContext {
            secret_id: id,
            secrets: &self.secrets,
            config: &self.config,
            known,
            elasticache: self.elasticache.as_ref(),
            deadline,
        };
        let outcome = match trigger.step {
            RotationStep::CreateSecret => create_secret(&mut step, token).await,
            RotationStep::SetSecret => set_secret(&mut step, token).await,
            RotationStep::TestSecret => test_secret(&mut step, token).await,
            RotationStep::FinishSecret => match plan::finish(token, &metadata.versions) {
                FinishAction::AlreadyCurrent => Ok(StepOutcome::AlreadyCurrent),
                // No `?` here: every error of the step leaves through the mapping below.
                FinishAction::MoveCurrent { from } => {
                    match verify_before_finish(&mut step, token).await {
                        Ok(()) => self.move_current(id, token, from.as_deref()).await,
                        Err(error) => Err(error),
                    }
                }
            },
        };
        outcome.map_err(|error| match error.pending_is_unusable() {
            true => RotationError::PendingUnusable {
                secret_id: id.to_owned(),
                token: token.to_owned(),
                source: Box::new(error),
            },
            false => error,
        })
    }

    /// Moves `AWSCURRENT` to `token`. A move whose answer was lost took effect all the same,
    /// and the SDK's retry of it then fails (`from` no longer holds `AWSCURRENT`): where
    /// `AWSCURRENT` is now decides, not the error.
    async fn move_current(
        &self,
        id: &str,
        token: &str,
        from: Option<&str>,
    ) -> Result<StepOutcome, RotationError> {
        let Err(error) = self.secrets.move_current(id, token, from).await else {
            return Ok(StepOutcome::CurrentMoved);
        };
        match self.secrets.metadata(id).await {
            Ok(now) if plan::finish(token, &now.versions) == FinishAction::AlreadyCurrent => {
                tracing::warn!(
                    secret_id = id,
                    token,
                    error = %error,
                    "UpdateSecretVersionStage answered an error, but AWSCURRENT is on the token: the move took effect"
                );
                Ok(StepOutcome::CurrentMoved)
            }
            _ => Err(error.into()),
        }
    }
}

async fn create_secret(
    step: &mut StepContext<'_>,
    token: &str,
) -> Result<StepOutcome, RotationError> {
    let id = step.secret_id;
    let current = step.current().await?;
    // A pending value for this token means an earlier run got this far: keep its password,
    // which a later step may already have set in the database.
    if step
        .secrets
        .value(id, Some(token), plan::AWSPENDING)
        .await?
        .is_some()
    {
        return Ok(StepOutcome::PendingAlreadyExists);
    }
    let target = CredentialTarget::of(&current).map_err(malformed(id, plan::AWSCURRENT))?;
    let new = target.new_credentials(step).await?;
    step.known.add(&new.password);
    let pending = current
        .with_credentials(new.username.as_deref(), &new.password)
        .map_err(malformed(id, plan::AWSCURRENT))?;
    step.secrets.put_pending(id, token, &pending).await?;
    Ok(StepOutcome::PendingCreated)
}

async fn set_secret(step: &mut StepContext<'_>, token: &str) -> Result<StepOutcome, RotationError> {
    let current = step.current().await?;
    let pending = step.pending(token).await?;
    CredentialTarget::of(&current)
        .map_err(malformed(step.secret_id, plan::AWSCURRENT))?
        .set(&pending, step)
        .await
}

async fn test_secret(
    step: &mut StepContext<'_>,
    token: &str,
) -> Result<StepOutcome, RotationError> {
    let pending = step.pending(token).await?;
    CredentialTarget::of(&pending)
        .map_err(malformed(step.secret_id, plan::AWSPENDING))?
        .test(&pending, step)
        .await
}

/// `AWSCURRENT` only ever moves to credentials that work right now: finishSecret runs
/// testSecret's check again (a login, or the format's shape) before it moves any stage. A
/// finishSecret run out of order (right after createSecret, or with no pending value at all)
/// is refused and leaves every stage where it was, instead of locking clients out.
async fn verify_before_finish(
    step: &mut StepContext<'_>,
    token: &str,
) -> Result<(), RotationError> {
    match test_secret(step, token).await {
        Ok(_) => Ok(()),
        // Secrets Manager itself failing says nothing about the pending version.
        Err(error @ RotationError::SecretsManager(_)) => Err(error),
        Err(source) => Err(RotationError::FinishRefused {
            secret_id: step.secret_id.to_owned(),
            source: Box::new(source),
        }),
    }
}

/// What one step works with: the secret, Secrets Manager, the configuration, and every
/// password read so far (removed from the step's error before it leaves the function).
pub(crate) struct StepContext<'a> {
    pub(crate) secret_id: &'a str,
    pub(crate) secrets: &'a SecretsStore,
    pub(crate) config: &'a RotationConfig,
    pub(crate) known: &'a mut KnownSecrets,
    /// `engine: redis`: the replication group's API, and when the invocation must end.
    pub(crate) elasticache: Option<&'a aws_sdk_elasticache::Client>,
    pub(crate) deadline: Option<Instant>,
}

impl StepContext<'_> {
    /// The value with `stage` of any secret (this one's `AWSPREVIOUS`, a master's
    /// `AWSCURRENT`), its password remembered.
    pub(crate) async fn read(
        &mut self,
        secret_id: &str,
        stage: &'static str,
    ) -> Result<Option<SecretDocument>, RotationError> {
        let document = self.secrets.value(secret_id, None, stage).await?;
        if let Some(document) = &document {
            remember(self.known, document);
        }
        Ok(document)
    }

    async fn current(&mut self) -> Result<SecretDocument, RotationError> {
        let id = self.secret_id;
        self.read(id, plan::AWSCURRENT)
            .await?
            .ok_or(RotationError::MissingVersion {
                secret_id: id.to_owned(),
                stage: plan::AWSCURRENT,
                hint: "",
            })
    }

    async fn pending(&mut self, token: &str) -> Result<SecretDocument, RotationError> {
        let id = self.secret_id;
        self.secrets
            .value(id, Some(token), plan::AWSPENDING)
            .await?
            .inspect(|document| remember(self.known, document))
            .ok_or(RotationError::MissingVersion {
                secret_id: id.to_owned(),
                stage: plan::AWSPENDING,
                hint: " for this token (createSecret has not run)",
            })
    }

    /// A new password from `GetRandomPassword`, with `PASSWORD_LENGTH` and
    /// `EXCLUDE_CHARACTERS`.
    pub(crate) async fn new_password(&self) -> Result<SecretString, RotationError> {
        Ok(self
            .secrets
            .random_password(
                self.secret_id,
                self.config.password_length,
                &self.config.exclude_characters,
            )
            .await?)
    }
}

/// Adds the document's password to what error texts must not show.
fn remember(known: &mut KnownSecrets, document: &SecretDocument) {
    if let Some(password) = document.password() {
        known.add(&password);
    }
}

pub(crate) fn malformed(
    id: &str,
    stage: &'static str,
) -> impl Fn(MalformedSecret) -> RotationError {
    let secret_id = id.to_owned();
    move |source| RotationError::MalformedSecret {
        secret_id: secret_id.clone(),
        stage,
        source,
    }
}

pub(crate) fn inconsistent(id: &str, reason: String) -> RotationError {
    RotationError::Inconsistent {
        secret_id: id.to_owned(),
        reason,
        about_pending: false,
    }
}

/// The pending version names another user or database than the current one.
pub(crate) fn pending_mismatch(id: &str, reason: String) -> RotationError {
    RotationError::Inconsistent {
        secret_id: id.to_owned(),
        reason,
        about_pending: true,
    }
}

/// The Lambda deadline (epoch milliseconds, 0 when unknown) on the monotonic clock.
fn invocation_deadline(epoch_millis: u64) -> Option<Instant> {
    let deadline = UNIX_EPOCH + Duration::from_millis(epoch_millis);
    let left = deadline
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    (epoch_millis > 0).then(|| Instant::now() + left)
}

#[cfg(test)]
mod tests {
    use super::*;
    use credential_target::redis::RedisTokenError;

    fn inconsistent_redis(source: RedisTokenError) -> RotationError {
        RotationError::Redis {
            step: RotationStep::SetSecret,
            secret_id: "s".to_owned(),
            source: Box::new(source),
        }
    }

    /// Only a pending version that can never complete is one to abandon.
    #[test]
    fn only_a_pending_version_that_cannot_complete_is_unusable() {
        assert!(pending_mismatch("s", "another database".into()).pending_is_unusable());
        assert!(!inconsistent("s", "the master is elsewhere".into()).pending_is_unusable());
        let other_group = inconsistent_redis(RedisTokenError::DifferentGroup {
            current: "a".into(),
            current_host: "h".into(),
            current_port: 6379,
            pending: "b".into(),
            pending_host: "h".into(),
            pending_port: 6379,
        });
        assert!(other_group.pending_is_unusable());
        let finish = RotationError::FinishRefused {
            secret_id: "s".to_owned(),
            source: Box::new(other_group),
        };
        assert!(finish.pending_is_unusable());
        let gone = inconsistent_redis(RedisTokenError::GroupNotFound { group: "a".into() });
        assert!(!gone.pending_is_unusable());
    }
}
