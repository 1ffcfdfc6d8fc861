//! Database connections under the suite's TLS rules, for rds-init and secret-rotation.
//!
//! - `ssl` absent or `true` in the secret: TLS is required and the server certificate is
//!   verified, host name included, against `DB_CA_BUNDLE` (or the system bundle when unset).
//! - Only an explicit `ssl: false` connects in plaintext.
//! - Never a silent downgrade: a server without TLS fails the connection, and the error says so.
//!
//! Connecting is bounded by a timeout and every session gets a statement timeout, so a dead
//! database fails a step in seconds rather than at the Lambda deadline. Passwords live in
//! [`SecretString`] and never appear in `Debug` output or errors, and sqlx's statement logging
//! is off: `ALTER USER … IDENTIFIED BY '…'` must never reach a log line.

use crate::custom_resource::lenient;
use crate::env_config::{ConfigError, EnvVars};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sqlx::{
    AssertSqlSafe, ConnectOptions, Connection, MySqlConnection, PgConnection,
    mysql::{MySqlConnectOptions, MySqlSslMode},
    postgres::{PgConnectOptions, PgSslMode},
};
use std::{
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

/// Where distributions keep the system CA bundle; the first that exists is used when
/// `DB_CA_BUNDLE` is unset (Amazon Linux first: the Lambda runtime).
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/ssl/cert.pem",
];
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The database engines the suite manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    MariaDb,
    MySql,
    Postgres,
}

impl Engine {
    /// MariaDB and MySQL speak the same protocol and SQL dialect for what the suite does.
    pub fn is_mysql_family(self) -> bool {
        matches!(self, Engine::MariaDb | Engine::MySql)
    }
}

impl FromStr for Engine {
    type Err = String;

    /// Accepts the `engine` values RDS writes into its secrets.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim().to_ascii_lowercase().as_str() {
            "mariadb" => Ok(Engine::MariaDb),
            "mysql" | "aurora" | "aurora-mysql" => Ok(Engine::MySql),
            "postgres" | "postgresql" | "aurora-postgresql" => Ok(Engine::Postgres),
            other => Err(format!(
                "unsupported database engine `{other}`; expected mariadb, mysql or postgres"
            )),
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::MariaDb => "MariaDB",
            Engine::MySql => "MySQL",
            Engine::Postgres => "PostgreSQL",
        })
    }
}

/// A database secret in the RDS convention. Unknown fields are ignored here; whoever writes
/// a secret back keeps them.
#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSecret {
    #[serde(deserialize_with = "engine")]
    pub engine: Engine,
    pub host: String,
    #[serde(deserialize_with = "lenient::number")]
    pub port: u16,
    pub username: String,
    pub password: SecretString,
    #[serde(default)]
    pub dbname: Option<String>,
    /// `None` and `Some(true)` both require verified TLS.
    #[serde(default, deserialize_with = "lenient::optional_bool")]
    pub ssl: Option<bool>,
    /// Present for alternating-users rotation: the secret of the user that manages this one.
    #[serde(default)]
    pub masterarn: Option<String>,
}

fn engine<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Engine, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(serde::de::Error::custom)
}

impl DatabaseSecret {
    /// Parses a secret string, with an error that names what is wrong but never the value.
    pub fn from_json(secret_string: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(secret_string)
    }

    /// Whether this secret allows plaintext (only an explicit `ssl: false`).
    pub fn allows_plaintext(&self) -> bool {
        self.ssl == Some(false)
    }
}

/// How connections are made: CA bundle and timeouts, read once at cold start.
#[derive(Debug, Clone)]
pub struct ConnectSettings {
    /// Verifies server certificates; the system bundle when `DB_CA_BUNDLE` is unset.
    pub ca_bundle: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
}

impl Default for ConnectSettings {
    fn default() -> Self {
        Self {
            ca_bundle: SYSTEM_CA_BUNDLES
                .iter()
                .map(PathBuf::from)
                .find(|path| path.is_file()),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
        }
    }
}

impl ConnectSettings {
    /// `DB_CA_BUNDLE` (a readable PEM file), `DB_CONNECT_TIMEOUT_SECONDS` (default 5) and
    /// `DB_STATEMENT_TIMEOUT_SECONDS` (default 30).
    pub fn from_env(env: &EnvVars) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let ca_bundle = env.optional_with("DB_CA_BUNDLE", |raw| {
            let path = PathBuf::from(raw);
            std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read the CA bundle: {e}"))?
                .contains("-----BEGIN CERTIFICATE-----")
                .then_some(path)
                .ok_or_else(|| "not a PEM certificate bundle".to_owned())
        })?;
        let seconds = |name: &str, default: Duration| {
            env.optional_with(name, |raw| match raw.parse::<u64>() {
                Ok(0) => Err("must be at least 1".to_owned()),
                Ok(n) => Ok(Duration::from_secs(n)),
                Err(e) => Err(e.to_string()),
            })
            .map(|value| value.unwrap_or(default))
        };
        Ok(Self {
            ca_bundle: ca_bundle.or(defaults.ca_bundle),
            connect_timeout: seconds("DB_CONNECT_TIMEOUT_SECONDS", defaults.connect_timeout)?,
            statement_timeout: seconds("DB_STATEMENT_TIMEOUT_SECONDS", defaults.statement_timeout)?,
        })
    }
}

/// An open connection to either engine family.
#[derive(Debug)]
pub enum DbConnection {
    MySql(MySqlConnection),
    Postgres(PgConnection),
}

impl DbConnection {
    /// Runs statements that return no rows. Callers build `sql` only from validated,
    /// quoted identifiers and escaped literals; values users supply never reach it raw.
    pub async fn execute(&mut self, sql: impl Into<String>) -> Result<u64, sqlx::Error> {
        let statement = sqlx::raw_sql(AssertSqlSafe(sql.into()));
        Ok(match self {
            DbConnection::MySql(c) => statement.execute(c).await?.rows_affected(),
            DbConnection::Postgres(c) => statement.execute(c).await?.rows_affected(),
        })
    }

    /// Closes the connection cleanly.
    pub async fn close(self) -> Result<(), sqlx::Error> {
        match self {
            DbConnection::MySql(c) => c.close().await,
            DbConnection::Postgres(c) => c.close().await,
        }
    }
}

/// Why a connection could not be made. Says where, as whom and over what, never the password.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("could not connect to {engine} at {host}:{port} as {user} over {transport}: {source}")]
    Failed {
        engine: Engine,
        host: String,
        port: u16,
        user: String,
        transport: Transport,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "timed out after {} s connecting to {engine} at {host}:{port} as {user} over {transport}",
        timeout.as_secs_f32()
    )]
    TimedOut {
        engine: Engine,
        host: String,
        port: u16,
        user: String,
        transport: Transport,
        timeout: Duration,
    },
}

impl ConnectError {
    /// The server refused the credentials (as opposed to being unreachable or refusing TLS):
    /// MySQL error 1045, PostgreSQL SQLSTATE 28P01 / 28000.
    pub fn is_authentication_failure(&self) -> bool {
        let ConnectError::Failed { source, .. } = self else {
            return false;
        };
        source
            .as_database_error()
            .and_then(|db| db.code())
            .is_some_and(|code| matches!(code.as_ref(), "1045" | "28P01" | "28000"))
    }
}

/// Verified TLS or (only when the secret says `ssl: false`) plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    VerifiedTls,
    Plaintext,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::VerifiedTls => "verified TLS",
            Transport::Plaintext => "plaintext (ssl: false)",
        })
    }
}

/// Connects as the secret's user to `database` (or the secret's `dbname`, or none).
pub async fn connect(
    secret: &DatabaseSecret,
    database: Option<&str>,
    settings: &ConnectSettings,
) -> Result<DbConnection, ConnectError> {
    let transport = if secret.allows_plaintext() {
        Transport::Plaintext
    } else {
        Transport::VerifiedTls
    };
    let database = database.or(secret.dbname.as_deref());
    let ca = settings.ca_bundle.as_deref();
    let attempt = async {
        match secret.engine {
            Engine::MariaDb | Engine::MySql => {
                let options = mysql_options(secret, database, transport, ca);
                let mut connection = MySqlConnection::connect_with(&options).await?;
                let limit = settings.statement_timeout;
                let sql = match secret.engine {
                    // MariaDB counts seconds; MySQL milliseconds (and only for SELECT).
                    Engine::MariaDb => {
                        format!("SET SESSION max_statement_time = {}", limit.as_secs_f64())
                    }
                    _ => format!("SET SESSION max_execution_time = {}", limit.as_millis()),
                };
                sqlx::raw_sql(AssertSqlSafe(sql))
                    .execute(&mut connection)
                    .await?;
                Ok(DbConnection::MySql(connection))
            }
            Engine::Postgres => {
                let options = pg_options(secret, database, transport, ca, settings);
                Ok(DbConnection::Postgres(
                    PgConnection::connect_with(&options).await?,
                ))
            }
        }
    };
    match tokio::time::timeout(settings.connect_timeout, attempt).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(source)) => Err(ConnectError::Failed {
            engine: secret.engine,
            host: secret.host.clone(),
            port: secret.port,
            user: secret.username.clone(),
            transport,
            source,
        }),
        Err(_) => Err(ConnectError::TimedOut {
            engine: secret.engine,
            host: secret.host.clone(),
            port: secret.port,
            user: secret.username.clone(),
            transport,
            timeout: settings.connect_timeout,
        }),
    }
}

fn mysql_options(
    secret: &DatabaseSecret,
    database: Option<&str>,
    transport: Transport,
    ca: Option<&Path>,
) -> MySqlConnectOptions {
    let mut options = MySqlConnectOptions::new()
        // sqlx logs statement text (slow ones at WARN); statements can carry passwords.
        .disable_statement_logging()
        .host(&secret.host)
        .port(secret.port)
        .username(&secret.username)
        .password(secret.password.expose_secret());
    if let Some(database) = database {
        options = options.database(database);
    }
    match transport {
        Transport::Plaintext => options.ssl_mode(MySqlSslMode::Disabled),
        Transport::VerifiedTls => {
            let options = options.ssl_mode(MySqlSslMode::VerifyIdentity);
            match ca {
                Some(ca) => options.ssl_ca(ca),
                None => options,
            }
        }
    }
}

fn pg_options(
    secret: &DatabaseSecret,
    database: Option<&str>,
    transport: Transport,
    ca: Option<&Path>,
    settings: &ConnectSettings,
) -> PgConnectOptions {
    let statement_timeout = settings.statement_timeout.as_millis().to_string();
    let mut options = PgConnectOptions::new()
        // sqlx logs statement text (slow ones at WARN); statements can carry passwords.
        .disable_statement_logging()
        .host(&secret.host)
        .port(secret.port)
        .username(&secret.username)
        .password(secret.password.expose_secret())
        // Sent in the startup packet: the limit holds from the first statement on.
        .options([("statement_timeout", statement_timeout.as_str())]);
    // PostgreSQL connects to a database named like the user when none is given.
    options = options.database(database.unwrap_or("postgres"));
    match transport {
        Transport::Plaintext => options.ssl_mode(PgSslMode::Disable),
        Transport::VerifiedTls => {
            let options = options.ssl_mode(PgSslMode::VerifyFull);
            match ca {
                Some(ca) => options.ssl_root_cert(ca),
                None => options,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rds_secrets_parse_with_string_or_number_ports_and_engine_aliases() {
        let secret = DatabaseSecret::from_json(
            r#"{"engine":"aurora-postgresql","host":"db","port":"5432","username":"app","password":"p@ss","extra":1}"#,
        )
        .unwrap();
        assert_eq!((secret.engine, secret.port), (Engine::Postgres, 5432));
        assert_eq!(secret.ssl, None);
        assert!(!secret.allows_plaintext());
        let secret = DatabaseSecret::from_json(
            r#"{"engine":"mariadb","host":"db","port":3306,"username":"app","password":"x","ssl":"false"}"#,
        )
        .unwrap();
        assert!(secret.allows_plaintext());
    }

    #[test]
    fn the_password_never_prints() {
        let secret = DatabaseSecret::from_json(
            r#"{"engine":"mysql","host":"db","port":3306,"username":"app","password":"hunter2-secret"}"#,
        )
        .unwrap();
        assert!(!format!("{secret:?}").contains("hunter2-secret"));
    }

    #[test]
    fn unsupported_engines_and_bad_ports_are_named() {
        let err = DatabaseSecret::from_json(
            r#"{"engine":"oracle","host":"db","port":1521,"username":"a","password":"b"}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("unsupported database engine `oracle`"),
            "{err}"
        );
        let err = DatabaseSecret::from_json(
            r#"{"engine":"mysql","host":"db","port":"99999","username":"a","password":"b"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("99999"), "{err}");
    }

    #[test]
    fn settings_name_the_variable_that_is_wrong() {
        let env = EnvVars::from_pairs([("DB_CA_BUNDLE", "/nonexistent/bundle.pem")]);
        let err = ConnectSettings::from_env(&env).unwrap_err().to_string();
        assert!(
            err.contains("DB_CA_BUNDLE") && err.contains("cannot read"),
            "{err}"
        );
        let env = EnvVars::from_pairs([("DB_CONNECT_TIMEOUT_SECONDS", "0")]);
        let err = ConnectSettings::from_env(&env).unwrap_err().to_string();
        assert!(err.contains("DB_CONNECT_TIMEOUT_SECONDS"), "{err}");
    }
}
