//! The steps for database secrets, the same for every engine family: AWS's SingleUser
//! template, and its MultiUser template when the secret names a `masterarn`. The decisions
//! come from [`crate::plan`]; what differs between engines, from the family's
//! `DatabaseUsers`.

use crate::credential_target::NewCredentials;
use crate::database_users::{self, DatabaseUserError, DatabaseUsers};
use crate::plan::{self, CredentialStage, LoginOutcome, SetDecision};
use crate::secret_document::SecretDocument;
use crate::trigger::RotationStep;
use crate::{
    RotationError, StepContext, StepOutcome, inconsistent, malformed, pending_mismatch, sql,
};
use shared::alternating_users::AlternatingPair;
use shared::database::{ConnectSettings, DatabaseSecret, DbConnection};

/// The master secret's ARN when the secret uses alternating users.
pub fn master_arn(secret: &DatabaseSecret) -> Option<&str> {
    secret
        .masterarn
        .as_deref()
        .filter(|arn| !arn.trim().is_empty())
}

/// createSecret: a new password, for the other user of the pair with alternating users.
pub(crate) async fn new_credentials(
    current: &DatabaseSecret,
    step: &StepContext<'_>,
) -> Result<NewCredentials, RotationError> {
    let username = match master_arn(current) {
        Some(_) => {
            // A name that ends in `_clone` twice has no pair that alternates back to it.
            AlternatingPair::of(&current.username)
                .map_err(|e| inconsistent(step.secret_id, e.to_string()))?;
            let other = plan::alternate_username(&current.username);
            sql::validate_user_name(&other, current.engine)
                .map_err(|e| inconsistent(step.secret_id, e.to_string()))?;
            Some(other)
        }
        None => None,
    };
    Ok(NewCredentials {
        username,
        password: step.new_password().await?,
    })
}

/// setSecret: the pending credentials are made to log in.
pub(crate) async fn set(
    users: &impl DatabaseUsers,
    current: DatabaseSecret,
    pending: &SecretDocument,
    step: &mut StepContext<'_>,
) -> Result<StepOutcome, RotationError> {
    let id = step.secret_id;
    let pending = pending
        .database()
        .map_err(malformed(id, plan::AWSPENDING))?;
    same_database(id, &current, &pending)?;
    match master_arn(&current).map(str::to_owned) {
        None => {
            if pending.username != current.username {
                return Err(pending_mismatch(
                    id,
                    format!(
                        "the pending user `{}` is not the current user `{}`; single-user rotation changes only its own password",
                        pending.username, current.username
                    ),
                ));
            }
            set_single_user(users, current, pending, step).await
        }
        Some(master_arn) => {
            let expected = plan::alternate_username(&current.username);
            if pending.username != expected {
                return Err(pending_mismatch(
                    id,
                    format!(
                        "the pending user is `{}`, expected `{expected}` (the other user of `{}`)",
                        pending.username, current.username
                    ),
                ));
            }
            set_alternating(users, current, pending, &master_arn, step).await
        }
    }
}

/// testSecret: the pending credentials log in and a query runs.
pub(crate) async fn test(
    users: &impl DatabaseUsers,
    pending: &DatabaseSecret,
    step: &mut StepContext<'_>,
) -> Result<StepOutcome, RotationError> {
    users
        .test(pending, &step.config.connect)
        .await
        .map_err(database_failed(RotationStep::TestSecret, step.secret_id))?;
    Ok(StepOutcome::PendingVerified)
}

/// setSecret with one user: log in as pending (already set?), current or previous, and
/// change the user's own password to the pending one, in the order [`plan::single_user_next`]
/// gives.
async fn set_single_user(
    users: &impl DatabaseUsers,
    current: DatabaseSecret,
    pending: DatabaseSecret,
    step: &mut StepContext<'_>,
) -> Result<StepOutcome, RotationError> {
    let (id, config) = (step.secret_id, step.config);
    let settings = &config.connect;
    let mut attempts: Vec<(CredentialStage, LoginOutcome)> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let mut last_connect_error = None;
    loop {
        match plan::single_user_next(&attempts) {
            SetDecision::Try(stage) => {
                let credentials = match stage {
                    CredentialStage::Pending => Some(pending.clone()),
                    CredentialStage::Current => Some(current.clone()),
                    CredentialStage::Previous => previous_for(step, &current).await?,
                };
                let Some(credentials) = credentials else {
                    errors.push(format!(
                        "{}: no previous version for this user and host",
                        stage.label()
                    ));
                    attempts.push((stage, LoginOutcome::NoCredentials));
                    continue;
                };
                let result = users.log_in(&credentials, settings).await;
                attempts.push((stage, database_users::login_outcome(&result)));
                match result {
                    Ok(connection) if stage == CredentialStage::Pending => {
                        let _ = connection.close().await;
                    }
                    Ok(connection) => {
                        change_own_password(users, connection, &current, &pending, id).await?;
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
                    None => no_credentials_log_in(id, &errors),
                });
            }
            SetDecision::FailNoPasswordWorks
            | SetDecision::FailCurrentRefused
            | SetDecision::ProvisionWithMaster => return Err(no_credentials_log_in(id, &errors)),
        }
    }
}

/// On a connection logged in as the user itself, its password becomes the pending one.
async fn change_own_password(
    users: &impl DatabaseUsers,
    mut connection: DbConnection,
    current: &DatabaseSecret,
    pending: &DatabaseSecret,
    id: &str,
) -> Result<(), RotationError> {
    users
        .change_own_password(&mut connection, current, &pending.password)
        .await
        .map_err(database_failed(RotationStep::SetSecret, id))?;
    let _ = connection.close().await;
    Ok(())
}

fn no_credentials_log_in(id: &str, errors: &[String]) -> RotationError {
    RotationError::NoCredentialsLogIn {
        secret_id: id.to_owned(),
        attempts: errors.join("; "),
    }
}

/// `AWSPREVIOUS`, when there is one for the same user and database.
async fn previous_for(
    step: &mut StepContext<'_>,
    current: &DatabaseSecret,
) -> Result<Option<DatabaseSecret>, RotationError> {
    let id = step.secret_id;
    let Some(previous) = step.read(id, plan::AWSPREVIOUS).await? else {
        return Ok(None);
    };
    let previous = previous
        .database()
        .map_err(malformed(id, plan::AWSPREVIOUS))?;
    let same = previous.username == current.username
        && previous.host == current.host
        && previous.port == current.port;
    Ok(same.then_some(previous))
}

/// setSecret with alternating users (AWS's MultiUser template): unless the pending user
/// already logs in, the master secret (`masterarn`) creates or updates it as a copy of the
/// current one, in the order [`plan::alternating_next`] gives.
async fn set_alternating(
    users: &impl DatabaseUsers,
    current: DatabaseSecret,
    pending: DatabaseSecret,
    master_arn: &str,
    step: &mut StepContext<'_>,
) -> Result<StepOutcome, RotationError> {
    let (id, config) = (step.secret_id, step.config);
    let settings = &config.connect;
    if pending_already_logs_in(users, &current, &pending, settings, id).await? {
        return Ok(StepOutcome::PendingAlreadyLogsIn);
    }
    let master = master_of(step, master_arn, &current).await?;
    let database_error = database_failed(RotationStep::SetSecret, id);
    // The master works in the database the secret names (PostgreSQL's `REASSIGN OWNED`
    // reaches only the connected database), or in its own when the secret names none.
    let mut master_here = master.clone();
    if current.dbname.is_some() {
        master_here.dbname.clone_from(&current.dbname);
    }
    // Both names go into SQL text: checked once here, for every engine, before any login.
    for name in [&current.username, &pending.username] {
        sql::validate_user_name(name, master.engine)
            .map_err(|e| database_error(DatabaseUserError::from(e)))?;
    }
    let mut connection = users
        .log_in(&master_here, settings)
        .await
        .map_err(|e| database_error(DatabaseUserError::from(e)))?;
    let result = users
        .provision_alternate(
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

/// The logins before alternating users are provisioned: `true` when the pending user logs in
/// already, `false` when the current one does (the master provisions the pending user), an
/// error when neither can.
async fn pending_already_logs_in(
    users: &impl DatabaseUsers,
    current: &DatabaseSecret,
    pending: &DatabaseSecret,
    settings: &ConnectSettings,
    id: &str,
) -> Result<bool, RotationError> {
    let mut attempts: Vec<(CredentialStage, LoginOutcome)> = Vec::new();
    let mut last_error = None;
    loop {
        match plan::alternating_next(&attempts) {
            SetDecision::Try(stage) => {
                let credentials = match stage {
                    CredentialStage::Pending => pending,
                    _ => current,
                };
                let result = users.log_in(credentials, settings).await;
                attempts.push((stage, database_users::login_outcome(&result)));
                match result {
                    Ok(connection) => {
                        let _ = connection.close().await;
                    }
                    Err(error) => last_error = Some(error),
                }
            }
            SetDecision::AlreadySet => return Ok(true),
            SetDecision::ProvisionWithMaster => return Ok(false),
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
}

/// The master secret `masterarn` names, which must be for the server this secret is for: the
/// master acts only on the database this secret names.
async fn master_of(
    step: &mut StepContext<'_>,
    master_arn: &str,
    current: &DatabaseSecret,
) -> Result<DatabaseSecret, RotationError> {
    let master = step
        .read(master_arn, plan::AWSCURRENT)
        .await?
        .ok_or(RotationError::MissingVersion {
            secret_id: master_arn.to_owned(),
            stage: plan::AWSCURRENT,
            hint: " (the master secret named by `masterarn`)",
        })?
        .database()
        .map_err(malformed(master_arn, plan::AWSCURRENT))?;
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
            step.secret_id,
            format!(
                "the master secret {master_arn} is for {} at {}:{}, this secret for {} at {}:{}",
                master.engine, master.host, master.port, current.engine, current.host, current.port
            ),
        ));
    }
    Ok(master)
}

/// A statement or login of `step` failed on the database.
fn database_failed(step: RotationStep, id: &str) -> impl Fn(DatabaseUserError) -> RotationError {
    let secret_id = id.to_owned();
    move |source| RotationError::Database {
        step,
        secret_id: secret_id.clone(),
        source: Box::new(source),
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
        Err(pending_mismatch(
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
