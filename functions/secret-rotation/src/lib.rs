//! secret-rotation: the four-step Secrets Manager rotation protocol (AWS's SingleUser and
//! MultiUser templates for MariaDB/MySQL/PostgreSQL) plus `engine: generic` secrets.
//!
//! Every step first runs the entry guard, then does only what is still missing, so a step run
//! twice is a no-op the second time. A failed step leaves `AWSCURRENT` working; the next try of
//! the same token picks up where it stopped.

pub mod config;
pub mod database_users;
pub mod plan;
pub mod secret_document;
pub mod secrets_store;
pub mod sql;
pub mod step;

use config::RotationConfig;
use database_users::DatabaseUserError;
use lambda_runtime::{Diagnostic, LambdaEvent};
use plan::{CredentialStage, Entry, FinishAction, LoginOutcome, SetDecision};
use secret_document::{MalformedSecret, SecretDocument, SecretKind};
use secrets_store::{SecretsManagerError, SecretsStore};
use serde_json::{Value, json};
use shared::database::{ConnectError, DatabaseSecret, sql::KnownSecrets};
use step::{RotationEventError, RotationRequest, RotationStep};

/// Why a rotation step failed.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error(transparent)]
    Event(#[from] RotationEventError),
    #[error(transparent)]
    Refused(#[from] plan::EntryRefusal),
    #[error(transparent)]
    SecretsManager(#[from] SecretsManagerError),
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
    Inconsistent { secret_id: String, reason: String },
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
            RotationError::SecretsManager(e) if e.retryable => "RetryableAwsError",
            RotationError::SecretsManager(_) => "AwsRequestFailed",
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
            RotationError::Redacted { error_type, .. } => error_type,
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
}

impl Rotator {
    pub fn new(client: aws_sdk_secretsmanager::Client, config: RotationConfig) -> Self {
        Self {
            secrets: SecretsStore::new(client),
            config,
        }
    }

    /// The Lambda entry point.
    pub async fn handle(&self, event: LambdaEvent<Value>) -> Result<Value, RotationError> {
        self.handle_payload(event.payload).await
    }

    /// Decodes and runs one rotation event (what [`Rotator::handle`] does, without the context).
    pub async fn handle_payload(&self, payload: Value) -> Result<Value, RotationError> {
        let request = RotationRequest::from_payload(payload)?;
        let mut known = KnownSecrets::default();
        match self.rotate_with(&request, &mut known).await {
            Ok(outcome) => {
                tracing::info!(
                    secret_id = %request.secret_id,
                    token = %request.token,
                    step = %request.step,
                    outcome = outcome.as_str(),
                    "rotation step done"
                );
                Ok(json!({
                    "secretId": request.secret_id,
                    "token": request.token,
                    "step": request.step.as_str(),
                    "outcome": outcome.as_str(),
                }))
            }
            Err(error) => {
                let error = error.redacted(&known);
                tracing::error!(
                    secret_id = %request.secret_id,
                    token = %request.token,
                    step = %request.step,
                    error = %shared::error_chain(&error),
                    "rotation step failed"
                );
                Err(error)
            }
        }
    }

    /// Runs one step for `request`. Its error is not redacted yet: [`Rotator::handle`] does
    /// that before the error leaves the function.
    pub async fn rotate(&self, request: &RotationRequest) -> Result<StepOutcome, RotationError> {
        self.rotate_with(request, &mut KnownSecrets::default())
            .await
    }

    /// [`Rotator::rotate`], adding every password read to `known`.
    async fn rotate_with(
        &self,
        request: &RotationRequest,
        known: &mut KnownSecrets,
    ) -> Result<StepOutcome, RotationError> {
        let id = request.secret_id.as_str();
        let token = request.token.as_str();
        let metadata = self.secrets.metadata(id).await?;
        if plan::entry(id, token, metadata.rotation_enabled, &metadata.versions)?
            == Entry::AlreadyCurrent
        {
            return Ok(StepOutcome::RotationAlreadyComplete);
        }
        match request.step {
            RotationStep::CreateSecret => self.create_secret(id, token, known).await,
            RotationStep::SetSecret => self.set_secret(id, token, known).await,
            RotationStep::TestSecret => self.test_secret(id, token, known).await,
            RotationStep::FinishSecret => match plan::finish(token, &metadata.versions) {
                FinishAction::AlreadyCurrent => Ok(StepOutcome::AlreadyCurrent),
                FinishAction::MoveCurrent { from } => {
                    self.secrets
                        .move_current(id, token, from.as_deref())
                        .await?;
                    Ok(StepOutcome::CurrentMoved)
                }
            },
        }
    }

    async fn current(
        &self,
        id: &str,
        known: &mut KnownSecrets,
    ) -> Result<SecretDocument, RotationError> {
        self.secrets
            .value(id, None, plan::AWSCURRENT)
            .await?
            .inspect(|document| remember(known, document))
            .ok_or(RotationError::MissingVersion {
                secret_id: id.to_owned(),
                stage: plan::AWSCURRENT,
                hint: "",
            })
    }

    async fn pending(
        &self,
        id: &str,
        token: &str,
        known: &mut KnownSecrets,
    ) -> Result<SecretDocument, RotationError> {
        self.secrets
            .value(id, Some(token), plan::AWSPENDING)
            .await?
            .inspect(|document| remember(known, document))
            .ok_or(RotationError::MissingVersion {
                secret_id: id.to_owned(),
                stage: plan::AWSPENDING,
                hint: " for this token (createSecret has not run)",
            })
    }

    async fn create_secret(
        &self,
        id: &str,
        token: &str,
        known: &mut KnownSecrets,
    ) -> Result<StepOutcome, RotationError> {
        let current = self.current(id, known).await?;
        // A pending value for this token means an earlier run got this far: keep its password,
        // which a later step may already have set in the database.
        if self
            .secrets
            .value(id, Some(token), plan::AWSPENDING)
            .await?
            .is_some()
        {
            return Ok(StepOutcome::PendingAlreadyExists);
        }
        let kind = current.kind().map_err(malformed(id, plan::AWSCURRENT))?;
        let username = match &kind {
            SecretKind::AlternatingUsers { secret, .. } => {
                let other = plan::alternate_username(&secret.username);
                sql::validate_user_name(&other, secret.engine).map_err(|e| {
                    RotationError::Inconsistent {
                        secret_id: id.to_owned(),
                        reason: e.to_string(),
                    }
                })?;
                Some(other)
            }
            SecretKind::Generic | SecretKind::SingleUser(_) => None,
        };
        let password = self
            .secrets
            .random_password(
                id,
                self.config.password_length,
                &self.config.exclude_characters,
            )
            .await?;
        known.add(&password);
        let pending = current
            .with_credentials(username.as_deref(), &password)
            .map_err(malformed(id, plan::AWSCURRENT))?;
        self.secrets.put_pending(id, token, &pending).await?;
        Ok(StepOutcome::PendingCreated)
    }

    async fn set_secret(
        &self,
        id: &str,
        token: &str,
        known: &mut KnownSecrets,
    ) -> Result<StepOutcome, RotationError> {
        let current = self.current(id, known).await?;
        let pending = self.pending(id, token, known).await?;
        let kind = current.kind().map_err(malformed(id, plan::AWSCURRENT))?;
        match kind {
            SecretKind::Generic => Ok(StepOutcome::NothingToSet),
            SecretKind::SingleUser(current) => {
                let pending = pending
                    .database()
                    .map_err(malformed(id, plan::AWSPENDING))?;
                same_database(id, &current, &pending)?;
                if pending.username != current.username {
                    return Err(inconsistent(
                        id,
                        format!(
                            "the pending user `{}` is not the current user `{}`; single-user rotation changes only its own password",
                            pending.username, current.username
                        ),
                    ));
                }
                self.set_single_user(id, current, pending, known).await
            }
            SecretKind::AlternatingUsers {
                secret: current,
                master_arn,
            } => {
                let pending = pending
                    .database()
                    .map_err(malformed(id, plan::AWSPENDING))?;
                same_database(id, &current, &pending)?;
                let expected = plan::alternate_username(&current.username);
                if pending.username != expected {
                    return Err(inconsistent(
                        id,
                        format!(
                            "the pending user is `{}`, expected `{expected}` (the other user of `{}`)",
                            pending.username, current.username
                        ),
                    ));
                }
                self.set_alternating(id, current, pending, &master_arn, known)
                    .await
            }
        }
    }

    async fn set_single_user(
        &self,
        id: &str,
        current: DatabaseSecret,
        pending: DatabaseSecret,
        known: &mut KnownSecrets,
    ) -> Result<StepOutcome, RotationError> {
        let settings = &self.config.connect;
        let mut attempts: Vec<(CredentialStage, LoginOutcome)> = Vec::new();
        let mut errors: Vec<String> = Vec::new();
        let mut last_connect_error = None;
        loop {
            match plan::single_user_next(&attempts) {
                SetDecision::Try(stage) => {
                    let credentials = match stage {
                        CredentialStage::Pending => Some(pending.clone()),
                        CredentialStage::Current => Some(current.clone()),
                        CredentialStage::Previous => self.previous_for(id, &current, known).await?,
                    };
                    let Some(credentials) = credentials else {
                        errors.push(format!(
                            "{}: no previous version for this user and host",
                            stage.label()
                        ));
                        attempts.push((stage, LoginOutcome::NoCredentials));
                        continue;
                    };
                    let result = database_users::log_in(&credentials, settings).await;
                    attempts.push((stage, database_users::login_outcome(&result)));
                    match result {
                        Ok(connection) => {
                            if stage == CredentialStage::Pending {
                                let _ = connection.close().await;
                                continue;
                            }
                            let mut connection = connection;
                            database_users::change_own_password(
                                &mut connection,
                                &current,
                                &pending.password,
                            )
                            .await
                            .map_err(|source| {
                                RotationError::Database {
                                    step: RotationStep::SetSecret,
                                    secret_id: id.to_owned(),
                                    source: Box::new(source),
                                }
                            })?;
                            let _ = connection.close().await;
                            tracing::info!(
                                secret_id = id,
                                logged_in_with = stage.label(),
                                "password changed"
                            );
                        }
                        Err(error) => {
                            errors.push(format!(
                                "{}: {}",
                                stage.label(),
                                shared::error_chain(&error)
                            ));
                            last_connect_error = Some(error);
                        }
                    }
                }
                SetDecision::AlreadySet => return Ok(StepOutcome::PendingAlreadyLogsIn),
                SetDecision::ChangePasswordAs(_) => return Ok(StepOutcome::PasswordChanged),
                SetDecision::FailUnreachable(stage) => {
                    return Err(match last_connect_error.take() {
                        Some(source) => RotationError::Unreachable {
                            secret_id: id.to_owned(),
                            stage,
                            source: Box::new(source),
                        },
                        None => RotationError::NoCredentialsLogIn {
                            secret_id: id.to_owned(),
                            attempts: errors.join("; "),
                        },
                    });
                }
                SetDecision::FailNoPasswordWorks
                | SetDecision::FailCurrentRefused
                | SetDecision::ProvisionWithMaster => {
                    return Err(RotationError::NoCredentialsLogIn {
                        secret_id: id.to_owned(),
                        attempts: errors.join("; "),
                    });
                }
            }
        }
    }

    /// `AWSPREVIOUS`, when there is one for the same user and database.
    async fn previous_for(
        &self,
        id: &str,
        current: &DatabaseSecret,
        known: &mut KnownSecrets,
    ) -> Result<Option<DatabaseSecret>, RotationError> {
        let Some(previous) = self.secrets.value(id, None, plan::AWSPREVIOUS).await? else {
            return Ok(None);
        };
        remember(known, &previous);
        let previous = previous
            .database()
            .map_err(malformed(id, plan::AWSPREVIOUS))?;
        let same = previous.username == current.username
            && previous.host == current.host
            && previous.port == current.port;
        Ok(same.then_some(previous))
    }

    async fn set_alternating(
        &self,
        id: &str,
        current: DatabaseSecret,
        pending: DatabaseSecret,
        master_arn: &str,
        known: &mut KnownSecrets,
    ) -> Result<StepOutcome, RotationError> {
        let settings = &self.config.connect;
        let mut attempts: Vec<(CredentialStage, LoginOutcome)> = Vec::new();
        let mut last_error = None;
        loop {
            match plan::alternating_next(&attempts) {
                SetDecision::Try(stage) => {
                    let credentials = match stage {
                        CredentialStage::Pending => &pending,
                        _ => &current,
                    };
                    let result = database_users::log_in(credentials, settings).await;
                    attempts.push((stage, database_users::login_outcome(&result)));
                    match result {
                        Ok(connection) => {
                            let _ = connection.close().await;
                        }
                        Err(error) => last_error = Some(error),
                    }
                }
                SetDecision::AlreadySet => return Ok(StepOutcome::PendingAlreadyLogsIn),
                SetDecision::ProvisionWithMaster => break,
                decision => {
                    // Every failing decision follows a failed login, whose error is kept.
                    let Some(source) = last_error.take() else {
                        return Err(inconsistent(
                            id,
                            format!("unexpected login sequence {attempts:?}"),
                        ));
                    };
                    return Err(match decision {
                        SetDecision::FailUnreachable(stage) => RotationError::Unreachable {
                            secret_id: id.to_owned(),
                            stage,
                            source: Box::new(source),
                        },
                        _ => RotationError::CurrentCredentialsRefused {
                            secret_id: id.to_owned(),
                            source: Box::new(source),
                        },
                    });
                }
            }
        }
        let master = self
            .secrets
            .value(master_arn, None, plan::AWSCURRENT)
            .await?
            .inspect(|document| remember(known, document))
            .ok_or(RotationError::MissingVersion {
                secret_id: master_arn.to_owned(),
                stage: plan::AWSCURRENT,
                hint: " (the master secret named by `masterarn`)",
            })?
            .database()
            .map_err(malformed(master_arn, plan::AWSCURRENT))?;
        // The master acts only on the database this secret names.
        if (
            master.host.as_str(),
            master.port,
            master.engine.is_mysql_family(),
        ) != (
            current.host.as_str(),
            current.port,
            current.engine.is_mysql_family(),
        ) {
            return Err(inconsistent(
                id,
                format!(
                    "the master secret {master_arn} is for {} at {}:{}, this secret for {} at {}:{}",
                    master.engine,
                    master.host,
                    master.port,
                    current.engine,
                    current.host,
                    current.port
                ),
            ));
        }
        let database_error = |source: DatabaseUserError| RotationError::Database {
            step: RotationStep::SetSecret,
            secret_id: id.to_owned(),
            source: Box::new(source),
        };
        let mut connection = database_users::log_in(&master, settings)
            .await
            .map_err(|e| database_error(DatabaseUserError::from(e)))?;
        let result = database_users::provision_alternate_user(
            &mut connection,
            &master,
            &current.username,
            &pending.username,
            &pending.password,
        )
        .await;
        let _ = connection.close().await;
        result.map_err(database_error)?;
        Ok(StepOutcome::AlternateUserProvisioned)
    }

    async fn test_secret(
        &self,
        id: &str,
        token: &str,
        known: &mut KnownSecrets,
    ) -> Result<StepOutcome, RotationError> {
        let pending = self.pending(id, token, known).await?;
        match pending.kind().map_err(malformed(id, plan::AWSPENDING))? {
            SecretKind::Generic => {
                if pending
                    .has_password()
                    .map_err(malformed(id, plan::AWSPENDING))?
                {
                    Ok(StepOutcome::PendingVerified)
                } else {
                    Err(malformed(id, plan::AWSPENDING)(
                        MalformedSecret::PasswordNotAString,
                    ))
                }
            }
            SecretKind::SingleUser(secret) | SecretKind::AlternatingUsers { secret, .. } => {
                database_users::run_test_query(&secret, &self.config.connect)
                    .await
                    .map_err(|source| RotationError::Database {
                        step: RotationStep::TestSecret,
                        secret_id: id.to_owned(),
                        source: Box::new(source),
                    })?;
                Ok(StepOutcome::PendingVerified)
            }
        }
    }
}

/// Adds the document's password to what error texts must not show.
fn remember(known: &mut KnownSecrets, document: &SecretDocument) {
    if let Some(password) = document.password() {
        known.add(&password);
    }
}

fn malformed(id: &str, stage: &'static str) -> impl Fn(MalformedSecret) -> RotationError {
    let secret_id = id.to_owned();
    move |source| RotationError::MalformedSecret {
        secret_id: secret_id.clone(),
        stage,
        source,
    }
}

fn inconsistent(id: &str, reason: String) -> RotationError {
    RotationError::Inconsistent {
        secret_id: id.to_owned(),
        reason,
    }
}

/// Pending and current must name the same database: a rotation never moves a secret elsewhere.
fn same_database(
    id: &str,
    current: &DatabaseSecret,
    pending: &DatabaseSecret,
) -> Result<(), RotationError> {
    if (current.host.as_str(), current.port) == (pending.host.as_str(), pending.port)
        && current.engine == pending.engine
    {
        Ok(())
    } else {
        Err(inconsistent(
            id,
            format!(
                "the pending version names {} at {}:{}, the current one {} at {}:{}",
                pending.engine,
                pending.host,
                pending.port,
                current.engine,
                current.host,
                current.port
            ),
        ))
    }
}
