//! What rotation does with a database's users, as one trait (`DatabaseUsers`) that each
//! engine family's module implements (`credential_target::mariadb_mysql`,
//! `credential_target::postgres`), and what those modules share: the statement session and
//! its errors. TLS and timeouts come from `shared::database::connect`, never weakened here.

use crate::plan::LoginOutcome;
use crate::sql::SqlTextError;
use secrecy::SecretString;
use shared::alternating_users::NoStablePair;
use shared::database::{
    ConnectError, ConnectSettings, DatabaseSecret, DbConnection, Engine, sql::KnownSecrets,
};

/// A database statement or check that failed. Messages never contain a password: server
/// messages are scrubbed of it before they are kept.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseUserError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("{action} on {engine} at {host}:{port} failed: {message}")]
    Statement {
        action: String,
        engine: Engine,
        host: String,
        port: u16,
        message: String,
    },
    #[error(transparent)]
    SqlText(#[from] SqlTextError),
    #[error(
        "user `{user}` exists for {count} hosts ({hosts}) on {engine}; alternating users needs exactly one"
    )]
    AmbiguousHost {
        user: String,
        engine: Engine,
        count: usize,
        hosts: String,
    },
    #[error("internal error: a {0} secret reached the other engine family's code")]
    DriverMismatch(Engine),
    #[error("user `{user}` does not exist on {engine}")]
    NoSuchUser { user: String, engine: Engine },
    #[error(transparent)]
    NoStablePair(#[from] NoStablePair),
    #[error(
        "role `{base}`, the base of alternating users `{base}` / `{clone}`, does not exist on postgres: \
         it holds the privileges and owns the objects both users use, so rotation does not create it; \
         create it (rds-init does) or give the secret the username `{base}`"
    )]
    MissingBase { base: String, clone: String },
}

/// Classifies a login attempt: a refused password is worth trying another; anything else
/// (unreachable, TLS refused, timeout) is the error to report.
pub fn login_outcome(result: &Result<DbConnection, ConnectError>) -> LoginOutcome {
    match result {
        Ok(_) => LoginOutcome::LoggedIn,
        Err(e) if e.is_authentication_failure() => LoginOutcome::WrongPassword,
        Err(_) => LoginOutcome::Unreachable,
    }
}

/// One engine family's users: the four things rotation does with a database. The family is
/// picked from the secret's `engine` by `credential_target::CredentialTarget::of`, once.
pub(crate) trait DatabaseUsers {
    /// Logs in as the secret's user.
    async fn log_in(
        &self,
        secret: &DatabaseSecret,
        settings: &ConnectSettings,
    ) -> Result<DbConnection, ConnectError> {
        shared::database::connect(secret, None, settings).await
    }

    /// Single user: the logged-in user sets its own password, so no other account can be
    /// touched.
    async fn change_own_password(
        &self,
        connection: &mut DbConnection,
        secret: &DatabaseSecret,
        new_password: &SecretString,
    ) -> Result<(), DatabaseUserError>;

    /// Alternating users, logged in as the master: creates `target` if it does not exist
    /// (locked, without a usable password), gives it the privileges of `source`, and sets its
    /// password last, so a pending password that logs in means the whole step is done.
    async fn provision_alternate(
        &self,
        master: &mut DbConnection,
        master_secret: &DatabaseSecret,
        source: &str,
        target: &str,
        password: &SecretString,
    ) -> Result<(), DatabaseUserError>;

    /// testSecret: the credentials log in and a query runs.
    async fn test(
        &self,
        secret: &DatabaseSecret,
        settings: &ConnectSettings,
    ) -> Result<(), DatabaseUserError> {
        let mut connection = self.log_in(secret, settings).await?;
        Session::new(&mut connection, secret, &secret.password)
            .execute(
                &format!("the test query as `{}`", secret.username),
                "SELECT 1".to_owned(),
            )
            .await?;
        let _ = connection.close().await;
        Ok(())
    }
}

/// Statements on one connection, with errors that say what was being done and never the
/// password.
pub(crate) struct Session<'a> {
    pub(crate) connection: &'a mut DbConnection,
    pub(crate) engine: Engine,
    pub(crate) host: &'a str,
    pub(crate) port: u16,
    /// Scrubbed from server messages (MySQL quotes the statement near a syntax error); the
    /// step redacts every other password it read before its error leaves the function.
    password: &'a SecretString,
}

impl<'a> Session<'a> {
    /// A session for statements run as `secret`'s user (or as the master, for `secret`'s
    /// server), scrubbing `password` from server messages.
    pub(crate) fn new(
        connection: &'a mut DbConnection,
        secret: &'a DatabaseSecret,
        password: &'a SecretString,
    ) -> Self {
        Session {
            connection,
            engine: secret.engine,
            host: &secret.host,
            port: secret.port,
            password,
        }
    }

    pub(crate) fn failed(&self, action: &str, error: sqlx::Error) -> DatabaseUserError {
        let message = KnownSecrets::default()
            .with(self.password)
            .redact(&error.to_string());
        DatabaseUserError::Statement {
            action: action.to_owned(),
            engine: self.engine,
            host: self.host.to_owned(),
            port: self.port,
            message,
        }
    }

    pub(crate) async fn execute(
        &mut self,
        action: &str,
        sql: String,
    ) -> Result<(), DatabaseUserError> {
        match self.connection.execute(sql).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.failed(action, e)),
        }
    }
}
