//! The database adapter: logging in, changing a user's own password, provisioning the other
//! user of an alternating pair, and the test query. TLS and timeouts come from
//! `shared::database::connect`, never weakened here.

use crate::plan::LoginOutcome;
use crate::sql::{self, SqlTextError};
use secrecy::{ExposeSecret, SecretString};
use shared::database::{
    ConnectError, ConnectSettings, DatabaseSecret, DbConnection, Engine,
    sql::{KnownSecrets, mysql_string_literal, postgres_password_literal},
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
    #[error("internal error: a {0} secret got a connection of the other driver")]
    DriverMismatch(Engine),
    #[error("user `{user}` does not exist on {engine}")]
    NoSuchUser { user: String, engine: Engine },
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

pub async fn log_in(
    secret: &DatabaseSecret,
    settings: &ConnectSettings,
) -> Result<DbConnection, ConnectError> {
    shared::database::connect(secret, None, settings).await
}

/// One statement, with errors that say what was being done and never the password.
struct Session<'a> {
    connection: &'a mut DbConnection,
    engine: Engine,
    host: &'a str,
    port: u16,
    /// Scrubbed from server messages (MySQL quotes the statement near a syntax error); the
    /// step redacts every other password it read before its error leaves the function.
    password: Option<&'a SecretString>,
}

impl Session<'_> {
    fn failed(&self, action: &str, error: sqlx::Error) -> DatabaseUserError {
        let known = self
            .password
            .map(|password| KnownSecrets::default().with(password))
            .unwrap_or_default();
        let message = known.redact(&error.to_string());
        DatabaseUserError::Statement {
            action: action.to_owned(),
            engine: self.engine,
            host: self.host.to_owned(),
            port: self.port,
            message,
        }
    }

    async fn execute(&mut self, action: &str, sql: String) -> Result<(), DatabaseUserError> {
        match self.connection.execute(sql).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.failed(action, e)),
        }
    }

    /// The password as SQL: PostgreSQL a SCRAM-SHA-256 verifier (the cleartext never reaches
    /// the server or its log), MariaDB/MySQL a literal for the `NO_BACKSLASH_ESCAPES` session
    /// `shared::database::connect` opened.
    fn password_literal(&self, password: &SecretString) -> String {
        match self.engine {
            Engine::Postgres => postgres_password_literal(password),
            Engine::MariaDb | Engine::MySql => mysql_string_literal(password.expose_secret()),
        }
    }
}

/// Single user: the logged-in user sets its own password (`CURRENT_USER`, so no other account
/// can be touched).
pub async fn change_own_password(
    connection: &mut DbConnection,
    secret: &DatabaseSecret,
    new_password: &SecretString,
) -> Result<(), DatabaseUserError> {
    let mut session = Session {
        connection,
        engine: secret.engine,
        host: &secret.host,
        port: secret.port,
        password: Some(new_password),
    };
    let literal = session.password_literal(new_password);
    let statement = match secret.engine {
        Engine::Postgres => format!("ALTER ROLE CURRENT_USER WITH PASSWORD {literal}"),
        // MariaDB lets a user change only its own password this way without CREATE USER
        // (AWS's MariaDB template does the same).
        Engine::MariaDb => format!("SET PASSWORD = PASSWORD({literal})"),
        Engine::MySql => format!("ALTER USER CURRENT_USER() IDENTIFIED BY {literal}"),
    };
    session
        .execute(
            &format!("changing the password of `{}`", secret.username),
            statement,
        )
        .await
}

/// Alternating users, logged in as the master: creates `target` if it does not exist (locked,
/// without a usable password), gives it the privileges of `source`, and sets its password
/// last — so a pending password that logs in means the whole step is done.
pub async fn provision_alternate_user(
    master: &mut DbConnection,
    master_secret: &DatabaseSecret,
    source: &str,
    target: &str,
    password: &SecretString,
) -> Result<(), DatabaseUserError> {
    let engine = master_secret.engine;
    sql::validate_user_name(source, engine)?;
    sql::validate_user_name(target, engine)?;
    let mut session = Session {
        connection: master,
        engine,
        host: &master_secret.host,
        port: master_secret.port,
        password: Some(password),
    };
    match engine {
        Engine::Postgres => provision_postgres(&mut session, source, target, password).await,
        _ => provision_mysql(&mut session, source, target, password).await,
    }
}

async fn provision_mysql(
    session: &mut Session<'_>,
    source: &str,
    target: &str,
    password: &SecretString,
) -> Result<(), DatabaseUserError> {
    let engine = session.engine;
    let DbConnection::MySql(c) = &mut *session.connection else {
        return Err(DatabaseUserError::DriverMismatch(session.engine));
    };
    let hosts: Result<Vec<String>, _> =
        sqlx::query_scalar("SELECT CAST(Host AS CHAR) FROM mysql.user WHERE User = ?")
            .bind(source)
            .fetch_all(&mut *c)
            .await;
    let hosts = hosts.map_err(|e| session.failed(&format!("looking up user `{source}`"), e))?;
    let host = match hosts.as_slice() {
        [host] => host.clone(),
        [] => {
            return Err(DatabaseUserError::NoSuchUser {
                user: source.to_owned(),
                engine,
            });
        }
        many => {
            return Err(DatabaseUserError::AmbiguousHost {
                user: source.to_owned(),
                engine,
                count: many.len(),
                hosts: many.join(", "),
            });
        }
    };
    let DbConnection::MySql(c) = &mut *session.connection else {
        return Err(DatabaseUserError::DriverMismatch(session.engine));
    };
    let exists: Result<i64, _> =
        sqlx::query_scalar("SELECT COUNT(*) FROM mysql.user WHERE User = ? AND Host = ?")
            .bind(target)
            .bind(&host)
            .fetch_one(&mut *c)
            .await;
    let exists = exists.map_err(|e| session.failed(&format!("looking up user `{target}`"), e))? > 0;
    let from = sql::mysql_account(source, &host);
    let to = sql::mysql_account(target, &host);
    if !exists {
        session
            .execute(
                &format!("creating user {to}"),
                format!("CREATE USER {to} ACCOUNT LOCK"),
            )
            .await?;
    }
    let DbConnection::MySql(c) = &mut *session.connection else {
        return Err(DatabaseUserError::DriverMismatch(session.engine));
    };
    let grants: Result<Vec<String>, _> =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW GRANTS FOR {from}")))
            .fetch_all(&mut *c)
            .await;
    let grants = grants.map_err(|e| session.failed(&format!("reading the grants of {from}"), e))?;
    for line in &grants {
        match sql::copy_grant(line, &from, &to)? {
            Some(grant) => {
                session
                    .execute(&format!("copying grants of {from} to {to}"), grant)
                    .await?
            }
            None => tracing::warn!(grant = %line, "grant skipped: the RDS master cannot grant it"),
        }
    }
    if engine == Engine::MySql {
        copy_mysql_tls_requirement(session, &host, source, &to).await?;
    }
    let literal = session.password_literal(password);
    session
        .execute(
            &format!("setting the password of {to}"),
            format!("ALTER USER {to} IDENTIFIED BY {literal} ACCOUNT UNLOCK"),
        )
        .await
}

/// MySQL 8 `SHOW GRANTS` omits `REQUIRE`, so the TLS requirement is copied from `mysql.user`
/// (MariaDB prints it in the grants, which are replayed as they are).
async fn copy_mysql_tls_requirement(
    session: &mut Session<'_>,
    host: &str,
    source: &str,
    to: &str,
) -> Result<(), DatabaseUserError> {
    let DbConnection::MySql(c) = &mut *session.connection else {
        return Err(DatabaseUserError::DriverMismatch(session.engine));
    };
    let ssl_type: Result<String, _> = sqlx::query_scalar(
        "SELECT CAST(ssl_type AS CHAR) FROM mysql.user WHERE User = ? AND Host = ?",
    )
    .bind(source)
    .bind(host)
    .fetch_one(&mut *c)
    .await;
    let ssl_type = ssl_type.map_err(|e| session.failed("reading the TLS requirement", e))?;
    let clause = match ssl_type.as_str() {
        "ANY" => "SSL",
        "X509" => "X509",
        "" => return Ok(()),
        _ => {
            return Err(DatabaseUserError::Statement {
                action: format!("copying the TLS requirement to {to}"),
                engine: session.engine,
                host: session.host.to_owned(),
                port: session.port,
                message: format!(
                    "`{source}` requires a specific certificate (ssl_type {ssl_type}); set REQUIRE on {to} by hand"
                ),
            });
        }
    };
    session
        .execute(
            &format!("copying the TLS requirement to {to}"),
            format!("ALTER USER {to} REQUIRE {clause}"),
        )
        .await
}

async fn provision_postgres(
    session: &mut Session<'_>,
    source: &str,
    target: &str,
    password: &SecretString,
) -> Result<(), DatabaseUserError> {
    let DbConnection::Postgres(c) = &mut *session.connection else {
        return Err(DatabaseUserError::DriverMismatch(session.engine));
    };
    let exists: Result<Option<i32>, _> =
        sqlx::query_scalar("SELECT 1 FROM pg_roles WHERE rolname = $1")
            .bind(target)
            .fetch_optional(&mut *c)
            .await;
    let exists = exists
        .map_err(|e| session.failed(&format!("looking up role `{target}`"), e))?
        .is_some();
    let to = sql::postgres_identifier(target);
    if !exists {
        session
            .execute(
                &format!("creating role {to}"),
                format!("CREATE ROLE {to} NOLOGIN"),
            )
            .await?;
    }
    // Membership in the original role gives the same privileges. Not when either is already
    // a member of the other (a repeated run, or the swap back), which PostgreSQL refuses.
    let DbConnection::Postgres(c) = &mut *session.connection else {
        return Err(DatabaseUserError::DriverMismatch(session.engine));
    };
    let related: Result<bool, _> =
        sqlx::query_scalar("SELECT pg_has_role($1, $2, 'MEMBER') OR pg_has_role($2, $1, 'MEMBER')")
            .bind(target)
            .bind(source)
            .fetch_one(&mut *c)
            .await;
    let related = related.map_err(|e| session.failed("reading role memberships", e))?;
    if !related {
        let from = sql::postgres_identifier(source);
        session
            .execute(
                &format!("granting role {from} to {to}"),
                format!("GRANT {from} TO {to}"),
            )
            .await?;
    }
    let literal = session.password_literal(password);
    session
        .execute(
            &format!("setting the password of {to}"),
            format!("ALTER ROLE {to} WITH LOGIN PASSWORD {literal}"),
        )
        .await
}

/// testSecret: the pending credentials log in and a query runs.
pub async fn run_test_query(
    secret: &DatabaseSecret,
    settings: &ConnectSettings,
) -> Result<(), DatabaseUserError> {
    let mut connection = log_in(secret, settings).await?;
    let mut session = Session {
        connection: &mut connection,
        engine: secret.engine,
        host: &secret.host,
        port: secret.port,
        password: Some(&secret.password),
    };
    session
        .execute(
            &format!("the test query as `{}`", secret.username),
            "SELECT 1".to_owned(),
        )
        .await?;
    let _ = connection.close().await;
    Ok(())
}
