//! Database connections under the suite's TLS rules, for rds-init and secret-rotation.
//!
//! - `ssl` absent or `true` in the secret: TLS is required and the server certificate is
//!   verified, host name included. Trusted by default: the system CA bundle and the Amazon RDS
//!   certificate authorities of every region ([`RDS_CA_BUNDLE`], compiled in), so a bare deploy
//!   verifies RDS. `DB_CA_BUNDLE` adds its certificates to these and never replaces them (sqlx
//!   also adds webpki-roots' Mozilla roots).
//! - Only an explicit `ssl: false` connects in plaintext.
//! - Never a silent downgrade: a server without TLS fails the connection, and the error says so.
//!
//! The trust set is built once per process, at cold start ([`ConnectSettings::from_env`]): a
//! connect reads no file, it hands sqlx the PEM held in memory ([`TrustedCertificates`]).
//!
//! Connecting is bounded by a timeout and every session gets a statement timeout, so a dead
//! database fails a step in seconds rather than at the Lambda deadline. Passwords live in
//! [`SecretString`] and never appear in `Debug` output or errors, and sqlx's statement logging
//! is off: `ALTER USER … IDENTIFIED BY '…'` must never reach a log line.
//!
//! MariaDB/MySQL sessions get `NO_BACKSLASH_ESCAPES` added to their `sql_mode` (so the
//! literals of [`sql`] mean the same whatever the server's global mode) and a
//! `lock_wait_timeout` equal to the statement timeout (so DDL never waits a year on a metadata
//! lock). PostgreSQL sessions get `statement_timeout` and a `lock_timeout` of half of it in
//! their startup packet (no extra round trip; see [`pg_lock_timeout`]). SQL text for values
//! and names comes from [`sql`] only.

pub mod sql;

use crate::custom_resource::lenient;
use crate::env_config::{ConfigError, EnvVars};
use crate::system_roots::{SystemRoots, pem_of};
use rustls_pki_types::{CertificateDer, pem::PemObject};
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
    sync::{Arc, LazyLock},
    time::Duration,
};

/// The Amazon RDS certificate authorities: each region's RSA2048, RSA4096 and ECC384 G1 roots,
/// expired ones left out. Compiled in, so there is no file to ship or to point at;
/// `shared/certs/SOURCE.md` says where they come from, `scripts/refresh-rds-ca` refreshes them.
pub const RDS_CA_BUNDLE: &str = include_str!("../certs/rds-ca-bundle.pem");

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

/// Commercial regions whose RDS certificate authorities [`RDS_CA_BUNDLE`] does not hold yet
/// (its source has none; `shared/certs/SOURCE.md`): a database there needs its region's CA in
/// `DB_CA_BUNDLE`, and a refused certificate says so.
pub const RDS_REGIONS_NOT_IN_BUNDLE: &[&str] = &[
    "ca-west-1",
    "il-central-1",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ap-east-2",
    "mx-central-1",
];

/// What to do when an RDS endpoint of such a region refuses verification (rustls reports
/// "invalid peer certificate"); empty otherwise.
fn missing_rds_ca_hint(host: &str, error: &sqlx::Error) -> String {
    let region = host
        .to_ascii_lowercase()
        .strip_suffix(".rds.amazonaws.com")
        .and_then(|rest| rest.rsplit('.').next().map(str::to_owned));
    match region {
        Some(region)
            if RDS_REGIONS_NOT_IN_BUNDLE.contains(&region.as_str())
                && error.to_string().contains("invalid peer certificate") =>
        {
            format!(
                " (the RDS CA bundle shipped with the suite has no CA for {region} yet: put \
                 that region's bundle from AWS in DB_CA_BUNDLE, the template's DbCaBundle)"
            )
        }
        _ => String::new(),
    }
}

/// How connections are made: what server certificates are verified against, and timeouts.
/// Read once at cold start; cheap to clone.
#[derive(Debug, Clone)]
pub struct ConnectSettings {
    /// The default trust (the system bundle and [`RDS_CA_BUNDLE`]), plus `DB_CA_BUNDLE`'s
    /// certificates when it is set.
    pub trust: TrustedCertificates,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
}

impl Default for ConnectSettings {
    /// The default trust and timeouts.
    fn default() -> Self {
        Self {
            trust: DEFAULT_TRUST.clone(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
        }
    }
}

impl ConnectSettings {
    /// `DB_CA_BUNDLE` (a readable PEM file whose certificates are added to the default trust),
    /// `DB_CONNECT_TIMEOUT_SECONDS` (default 5) and `DB_STATEMENT_TIMEOUT_SECONDS` (default 30).
    /// The trust is built here, once, so a bad bundle stops the function at init and a connect
    /// reads no file.
    pub fn from_env(env: &EnvVars) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let trust = env.optional_with("DB_CA_BUNDLE", |raw| {
            defaults
                .trust
                .with_bundle(Path::new(raw))
                .map_err(|e| e.to_string())
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
            connect_timeout: seconds("DB_CONNECT_TIMEOUT_SECONDS", defaults.connect_timeout)?,
            statement_timeout: seconds("DB_STATEMENT_TIMEOUT_SECONDS", defaults.statement_timeout)?,
            trust: trust.unwrap_or(defaults.trust),
        })
    }

    /// These settings, also trusting the certificates of the PEM file at `path` (what
    /// `DB_CA_BUNDLE` does).
    pub fn trusting(self, path: &Path) -> Result<Self, CaBundleError> {
        Ok(Self {
            trust: self.trust.with_bundle(path)?,
            ..self
        })
    }
}

/// The system bundle and the RDS certificate authorities, built once per process, at the
/// first [`ConnectSettings::default`] (cold start).
static DEFAULT_TRUST: LazyLock<TrustedCertificates> = LazyLock::new(|| {
    // The process's one copy of the system roots (the SDK's client trusts the same).
    let mut certificates = SystemRoots::get().certificates().to_vec();
    // This module's tests check that every block of the shipped bundle parses.
    certificates.extend(certificates_in(RDS_CA_BUNDLE.as_bytes()).unwrap_or_default());
    TrustedCertificates::from_certificates(&certificates)
});

/// The certificates a server's chain may end in, as PEM holding certificate blocks only (no
/// comments, keys or other sections), handed to sqlx on every connect. Cheap to clone.
#[derive(Clone)]
pub struct TrustedCertificates {
    pem: Arc<str>,
    count: usize,
}

impl TrustedCertificates {
    /// The certificates, one PEM block each.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// How many certificates [`Self::pem`] holds.
    pub fn count(&self) -> usize {
        self.count
    }

    fn from_certificates(certificates: &[CertificateDer<'_>]) -> Self {
        Self {
            pem: pem_of(certificates).into(),
            count: certificates.len(),
        }
    }

    /// These certificates and those of the PEM file at `path`, which must hold at least one
    /// certificate, every one valid PEM.
    fn with_bundle(&self, path: &Path) -> Result<Self, CaBundleError> {
        let bytes = std::fs::read(path).map_err(|source| CaBundleError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        let added = certificates_in(&bytes).map_err(|reason| CaBundleError::Malformed {
            path: path.to_path_buf(),
            reason,
        })?;
        if added.is_empty() {
            return Err(CaBundleError::NoCertificate {
                path: path.to_path_buf(),
            });
        }
        let mut certificates = certificates_in(self.pem.as_bytes()).unwrap_or_default();
        certificates.extend(added);
        Ok(Self::from_certificates(&certificates))
    }
}

impl fmt::Debug for TrustedCertificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustedCertificates({} certificates)", self.count)
    }
}

/// Every certificate block of a PEM text (other sections are skipped), parsed by rustls'
/// own PEM reader, the one sqlx uses: what passes here also passes there. A block that does
/// not decode is an error naming its number, because sqlx would otherwise fail every connect
/// with the whole in-memory bundle in its message.
fn certificates_in(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem)
        .enumerate()
        .map(|(index, block)| block.map_err(|e| format!("certificate {}: {e}", index + 1)))
        .collect()
}

/// Why a CA bundle (`DB_CA_BUNDLE`) cannot be added to the trust.
#[derive(Debug, thiserror::Error)]
pub enum CaBundleError {
    #[error("cannot read the CA bundle {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} is not a PEM certificate bundle (no `-----BEGIN CERTIFICATE-----` block)",
        path.display()
    )]
    NoCertificate { path: PathBuf },
    #[error("{} is not a valid PEM certificate bundle: {reason}", path.display())]
    Malformed { path: PathBuf, reason: String },
}

/// An open connection to either engine family.
#[derive(Debug)]
pub enum DbConnection {
    MySql(MySqlConnection),
    Postgres(PgConnection),
}

impl DbConnection {
    /// Runs one statement that returns no rows. Callers build `sql` only from validated,
    /// quoted identifiers and literals of [`sql`]; values users supply never reach it raw.
    /// PostgreSQL gets it over the extended protocol, which refuses a second statement.
    pub async fn execute(&mut self, sql: impl Into<String>) -> Result<u64, sqlx::Error> {
        let sql = AssertSqlSafe(sql.into());
        Ok(match self {
            DbConnection::MySql(c) => sqlx::raw_sql(sql).execute(c).await?.rows_affected(),
            DbConnection::Postgres(c) => sqlx::query(sql)
                .persistent(false)
                .execute(c)
                .await?
                .rows_affected(),
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

/// The code the server gave an error: its error number on MariaDB/MySQL (their SQLSTATE is
/// often the catch-all `HY000`: "database exists" and "CREATE USER failed" share it), the
/// SQLSTATE on PostgreSQL. `None` when the error did not come from the server.
pub fn server_error_code(error: &sqlx::Error) -> Option<String> {
    let error = error.as_database_error()?;
    match error.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        Some(mysql) => Some(mysql.number().to_string()),
        None => error.code().map(|code| code.into_owned()),
    }
}

/// Why a connection could not be made. Says where, as whom and over what, never the password.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "could not connect to {engine} at {host}:{port} as {user} over {transport}: {source}{}",
        missing_rds_ca_hint(host, source)
    )]
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
    let attempt = async {
        let trust = (transport == Transport::VerifiedTls).then_some(&settings.trust);
        match secret.engine {
            Engine::MariaDb | Engine::MySql => {
                let options = mysql_options(secret, database, trust);
                let mut connection = MySqlConnection::connect_with(&options).await?;
                sqlx::raw_sql(AssertSqlSafe(mysql_session_settings(
                    secret.engine,
                    settings.statement_timeout,
                )))
                .execute(&mut connection)
                .await?;
                Ok(DbConnection::MySql(connection))
            }
            Engine::Postgres => {
                let options = pg_options(secret, database, trust, settings);
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

/// The session settings every MariaDB/MySQL connection starts with: the statement timeout
/// (MariaDB counts seconds; MySQL milliseconds, and only for SELECT), `lock_wait_timeout` at
/// the same bound in whole seconds (DDL such as GRANT waits on metadata locks, by default for
/// a year), and `NO_BACKSLASH_ESCAPES` added to whatever `sql_mode` the server gave, so a
/// backslash in a [`sql::mysql_string_literal`] is just a backslash.
fn mysql_session_settings(engine: Engine, limit: Duration) -> String {
    let statement = match engine {
        Engine::MariaDb => format!("max_statement_time = {}", limit.as_secs_f64()),
        _ => format!("max_execution_time = {}", limit.as_millis()),
    };
    let lock_seconds = limit.as_secs_f64().ceil().max(1.0) as u64;
    format!(
        "SET SESSION {statement}, SESSION lock_wait_timeout = {lock_seconds}, \
         SESSION sql_mode = CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), 'NO_BACKSLASH_ESCAPES')"
    )
}

/// `trust`: verified TLS against these certificates; `None`: plaintext (`ssl: false`).
fn mysql_options(
    secret: &DatabaseSecret,
    database: Option<&str>,
    trust: Option<&TrustedCertificates>,
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
    match trust {
        None => options.ssl_mode(MySqlSslMode::Disabled),
        Some(trust) => options
            .ssl_mode(MySqlSslMode::VerifyIdentity)
            .ssl_ca_from_pem(trust.pem().as_bytes().to_vec()),
    }
}

/// PostgreSQL's `lock_timeout` for a session whose statements may run `statement_timeout`:
/// half of it. Equal would never fire (the statement's clock starts first and wins the tie),
/// and the wait should end early: a DDL or GRANT queued for a lock makes every later request
/// for that lock queue behind it. So a lock wait fails as itself (SQLSTATE 55P03, "lock
/// timeout"), not as a slow statement.
fn pg_lock_timeout(statement_timeout: Duration) -> Duration {
    (statement_timeout / 2).max(Duration::from_millis(1))
}

/// `trust`: verified TLS against these certificates; `None`: plaintext (`ssl: false`).
fn pg_options(
    secret: &DatabaseSecret,
    database: Option<&str>,
    trust: Option<&TrustedCertificates>,
    settings: &ConnectSettings,
) -> PgConnectOptions {
    let statement_timeout = settings.statement_timeout.as_millis().to_string();
    let lock_timeout = pg_lock_timeout(settings.statement_timeout)
        .as_millis()
        .to_string();
    let mut options = PgConnectOptions::new()
        // sqlx logs statement text (slow ones at WARN); statements can carry passwords.
        .disable_statement_logging()
        .host(&secret.host)
        .port(secret.port)
        .username(&secret.username)
        .password(secret.password.expose_secret())
        // Sent in the startup packet: the limits hold from the first statement on.
        .options([
            ("statement_timeout", statement_timeout.as_str()),
            ("lock_timeout", lock_timeout.as_str()),
        ]);
    // PostgreSQL connects to a database named like the user when none is given.
    options = options.database(database.unwrap_or("postgres"));
    match trust {
        None => options.ssl_mode(PgSslMode::Disable),
        Some(trust) => options
            .ssl_mode(PgSslMode::VerifyFull)
            .ssl_root_cert_from_pem(trust.pem().as_bytes().to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use x509_parser::{pem::Pem, prelude::*, public_key::PublicKey};

    /// AWS's commercial regions (partition `aws`: not GovCloud, not China) that the shipped
    /// bundle covers; each must have its three G1 roots.
    const COMMERCIAL_REGIONS: &[&str] = &[
        "us-east-1",
        "us-east-2",
        "us-west-1",
        "us-west-2",
        "af-south-1",
        "ap-east-1",
        "ap-south-1",
        "ap-south-2",
        "ap-southeast-1",
        "ap-southeast-2",
        "ap-southeast-3",
        "ap-southeast-4",
        "ap-northeast-1",
        "ap-northeast-2",
        "ap-northeast-3",
        "ca-central-1",
        "eu-central-1",
        "eu-central-2",
        "eu-west-1",
        "eu-west-2",
        "eu-west-3",
        "eu-south-1",
        "eu-south-2",
        "eu-north-1",
        "me-south-1",
        "me-central-1",
        "sa-east-1",
    ];

    /// Commercial regions AWS lists whose G1 roots the source package does not carry yet
    /// ([`RDS_REGIONS_NOT_IN_BUNDLE`]). When a refresh brings one in, a test below fails: move
    /// it up.
    const REGIONS_MISSING_FROM_THE_BUNDLE: &[&str] = RDS_REGIONS_NOT_IN_BUNDLE;

    /// The three root CAs RDS runs per region, with the key each must hold: (name, RSA?, bits).
    const G1_ROOTS: [(&str, bool, usize); 3] = [
        ("RSA2048", true, 2048),
        ("RSA4096", true, 4096),
        ("ECC384", false, 384),
    ];

    /// A CA trusted nowhere else (self-signed, EC P-256, valid until 2126), for `DB_CA_BUNDLE`.
    const TEST_CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBsjCCAVmgAwIBAgIUKBPg1nhWMG7BCDcbCTjfU1nk1PswCgYIKoZIzj0EAwIw
JjEkMCIGA1UEAwwbb3JjaGVzdHJhdG9yIHNoYXJlZCB0ZXN0IENBMCAXDTI2MTIw
MTIxMjI0M1oYDzIxMjYxMTA3MjEyMjQzWjAmMSQwIgYDVQQDDBtvcmNoZXN0cmF0
b3Igc2hhcmVkIHRlc3QgQ0EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAASOeqXX
RX7qgnGXcuw+4vZic0jmv/tpYeko159N3goKVd+Blky5st9VqTrgpU6dXYEIfX6g
GIADIasebGjhj53io2MwYTAdBgNVHQ4EFgQUdcVd4y9ueRhBWSjsceYH0xHZFMww
HwYDVR0jBBgwFoAUdcVd4y9ueRhBWSjsceYH0xHZFMwwDwYDVR0TAQH/BAUwAwEB
/zAOBgNVHQ8BAf8EBAMCAQYwCgYIKoZIzj0EAwIDRwAwRAIgQoKbaDkeVsMrtDOz
un9q53wRyDhC9Ul8vS3z+yOqXsACIDYaFzq3Ta8PxrYEKZAUQrL8F+h6s0+Q/WTE
yXGmyxdo
-----END CERTIFICATE-----
";

    /// A PEM file in the temp dir, removed on drop.
    struct TempPem(PathBuf);

    impl TempPem {
        fn new(name: &str, contents: &str) -> TempPem {
            let path = std::env::temp_dir()
                .join(format!("shared-database-{}-{name}.pem", std::process::id()));
            std::fs::write(&path, contents).unwrap();
            TempPem(path)
        }

        fn env(&self) -> EnvVars {
            EnvVars::from_pairs([("DB_CA_BUNDLE", self.0.to_str().unwrap())])
        }
    }

    impl Drop for TempPem {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn certificates(pem: &str) -> Vec<CertificateDer<'static>> {
        certificates_in(pem.as_bytes()).unwrap()
    }

    /// (common name, whether self-signed, public key) of every certificate in the RDS bundle.
    fn rds_roots() -> Vec<(String, bool, bool, usize)> {
        Pem::iter_from_buffer(RDS_CA_BUNDLE.as_bytes())
            .map(|pem| {
                let pem = pem.expect("every block of the RDS bundle is PEM");
                let certificate = pem.parse_x509().expect("every RDS certificate parses");
                let name = certificate
                    .subject()
                    .iter_common_name()
                    .next()
                    .and_then(|cn| cn.as_str().ok())
                    .expect("every RDS certificate has a common name")
                    .to_owned();
                let self_signed = certificate.subject().as_raw() == certificate.issuer().as_raw();
                let key = certificate.public_key().parsed().expect("a public key");
                (
                    name,
                    self_signed,
                    matches!(key, PublicKey::RSA(_)),
                    key.key_size(),
                )
            })
            .collect()
    }

    #[test]
    fn the_shipped_rds_bundle_parses_and_holds_only_unexpired_rds_certificate_authorities() {
        let blocks = RDS_CA_BUNDLE.matches("-----BEGIN CERTIFICATE-----").count();
        let pems: Vec<Pem> = Pem::iter_from_buffer(RDS_CA_BUNDLE.as_bytes())
            .collect::<Result<_, _>>()
            .expect("the RDS bundle is PEM");
        assert_eq!(pems.len(), blocks, "every block parses");
        assert!(
            blocks >= 3 * COMMERCIAL_REGIONS.len(),
            "{blocks} certificates"
        );
        // The system clock, not a fixed date: a shipped CA that expires fails CI from that day.
        let now = ASN1Time::now();
        for pem in &pems {
            assert_eq!(pem.label, "CERTIFICATE");
            let certificate = pem.parse_x509().expect("an X.509 certificate");
            let subject = certificate.subject().to_string();
            assert!(
                certificate.validity().is_valid_at(now),
                "{subject} is not valid now ({} to {})",
                certificate.validity().not_before,
                certificate.validity().not_after
            );
            assert!(certificate.is_ca(), "{subject} is not a CA");
            assert!(
                subject.contains("O=Amazon Web Services, Inc.") && subject.contains("Amazon RDS"),
                "{subject} is not an Amazon RDS authority"
            );
        }
        // What the connect path hands sqlx: every block, none dropped as malformed.
        assert_eq!(certificates(RDS_CA_BUNDLE).len(), blocks);
    }

    #[test]
    fn every_commercial_region_has_its_rsa2048_rsa4096_and_ecc384_g1_roots() {
        let roots = rds_roots();
        let mut missing = Vec::new();
        for region in COMMERCIAL_REGIONS {
            for (kind, rsa, bits) in G1_ROOTS {
                let name = format!("Amazon RDS {region} Root CA {kind} G1");
                match roots.iter().find(|(cn, ..)| *cn == name) {
                    Some((_, self_signed, is_rsa, size)) => {
                        assert!(*self_signed, "{name} is not a root (self-signed)");
                        assert_eq!((*is_rsa, *size), (rsa, bits), "{name}'s key");
                    }
                    None => missing.push(name),
                }
            }
        }
        assert!(missing.is_empty(), "not in the RDS bundle: {missing:#?}");
    }

    #[test]
    fn regions_known_to_be_missing_from_the_bundle_are_still_missing() {
        let roots = rds_roots();
        for region in REGIONS_MISSING_FROM_THE_BUNDLE {
            assert!(
                !COMMERCIAL_REGIONS.contains(region),
                "{region} is in both lists"
            );
            let prefix = format!("Amazon RDS {region} ");
            assert!(
                !roots.iter().any(|(cn, ..)| cn.starts_with(&prefix)),
                "the bundle now has {region}: move it to COMMERCIAL_REGIONS"
            );
        }
    }

    #[test]
    fn the_default_trust_is_the_system_bundle_and_every_rds_root() {
        let settings = ConnectSettings::from_env(&EnvVars::from_pairs::<&str, &str>([])).unwrap();
        let trust = certificates(settings.trust.pem());
        let rds = certificates(RDS_CA_BUNDLE);
        for certificate in &rds {
            assert!(trust.contains(certificate), "an RDS root is not trusted");
        }
        let system = SystemRoots::get().certificates();
        assert!(!system.is_empty(), "this machine has a system CA bundle");
        for certificate in system {
            assert!(trust.contains(certificate), "a system root is not trusted");
        }
        assert_eq!(trust.len(), system.len() + rds.len());
        assert_eq!(settings.trust.count(), trust.len());
        assert_eq!(ConnectSettings::default().trust.pem(), settings.trust.pem());
    }

    #[test]
    fn db_ca_bundle_adds_its_certificates_to_the_default_trust_once_at_cold_start() {
        let default = ConnectSettings::default().trust;
        // A key or a comment next to the certificate is neither trusted nor kept in memory.
        let file = TempPem::new(
            "adds",
            &format!(
                "# our private CA\n-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n{TEST_CA_PEM}"
            ),
        );
        let settings = ConnectSettings::from_env(&file.env()).unwrap();
        let trust = &settings.trust;
        assert_eq!(trust.count(), default.count() + 1);
        assert!(
            trust.pem().starts_with(default.pem()),
            "added, not replaced"
        );
        assert!(trust.pem().contains(TEST_CA_PEM));
        let trusted = certificates(trust.pem());
        for certificate in certificates(RDS_CA_BUNDLE) {
            assert!(trusted.contains(&certificate));
        }
        assert!(!trust.pem().contains("PRIVATE KEY") && !trust.pem().contains("our private CA"));
        // The same through the constructor the tests use.
        let built = ConnectSettings::default().trusting(&file.0).unwrap();
        assert_eq!(built.trust.pem(), trust.pem());
        // Read once: the settings hold the certificates, not the path.
        drop(file);
        assert_eq!(settings.clone().trust.pem(), trust.pem());
    }

    #[test]
    fn a_db_ca_bundle_without_valid_certificates_stops_the_function_at_init() {
        let corrupt = TEST_CA_PEM.replacen("MIIB", "M!IB", 1);
        let truncated = TEST_CA_PEM.replace("-----END CERTIFICATE-----\n", "");
        for (name, contents, reason) in [
            (
                "key-only",
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "not a PEM certificate bundle",
            ),
            ("corrupt", corrupt.as_str(), "certificate 1:"),
            (
                "second-truncated",
                &format!("{TEST_CA_PEM}{truncated}"),
                "certificate 2:",
            ),
        ] {
            let file = TempPem::new(name, contents);
            let err = ConnectSettings::from_env(&file.env())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("DB_CA_BUNDLE") && err.contains(reason),
                "{name}: {err}"
            );
        }
    }

    #[test]
    fn certificates_are_held_as_canonical_pem_whatever_the_file_looked_like() {
        let body: String = TEST_CA_PEM
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        // One long line and CRLF endings come out as the canonical block.
        for text in [
            format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----"),
            TEST_CA_PEM.replace('\n', "\r\n"),
        ] {
            let held = TrustedCertificates::from_certificates(&certificates(&text));
            assert_eq!(held.pem(), TEST_CA_PEM, "{text}");
        }
        assert!(certificates("no pem here").is_empty());
    }

    /// Not a limit: prints what building the trust costs at cold start (`--no-capture`).
    #[test]
    fn the_cold_start_cost_of_the_trust_set_is_printed() {
        let started = Instant::now();
        let trust = ConnectSettings::default().trust;
        let default_cost = started.elapsed();
        let file = TempPem::new("timing", TEST_CA_PEM);
        let started = Instant::now();
        let settings = ConnectSettings::from_env(&file.env()).unwrap();
        let bundle_cost = started.elapsed();
        eprintln!(
            "default trust (system + RDS): {} certificates, {} bytes (RDS {} bytes), built in \
             {default_cost:?} (or less, when another test built it first); \
             ConnectSettings::from_env with a one-certificate DB_CA_BUNDLE on top: {bundle_cost:?}",
            trust.count(),
            trust.pem().len(),
            RDS_CA_BUNDLE.len(),
        );
        assert_eq!(settings.trust.count(), trust.count() + 1);
    }

    #[test]
    fn a_refused_certificate_in_a_region_the_bundle_lacks_says_what_to_do() {
        let refused = || {
            sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "invalid peer certificate: UnknownIssuer",
            ))
        };
        let failed = |host: &str, source: sqlx::Error| ConnectError::Failed {
            engine: Engine::MariaDb,
            host: host.to_owned(),
            port: 3306,
            user: "admin".to_owned(),
            transport: Transport::VerifiedTls,
            source,
        };
        let text = failed("db.c9akciq32.ca-west-1.rds.amazonaws.com", refused()).to_string();
        assert!(
            text.contains("no CA for ca-west-1") && text.contains("DB_CA_BUNDLE"),
            "{text}"
        );
        // A covered region, another error or another host: no hint.
        for (host, source) in [
            ("db.c9akciq32.eu-west-1.rds.amazonaws.com", refused()),
            (
                "db.c9akciq32.ca-west-1.rds.amazonaws.com",
                sqlx::Error::Protocol("closed".into()),
            ),
            ("db.example.com", refused()),
        ] {
            let text = failed(host, source).to_string();
            assert!(!text.contains("DB_CA_BUNDLE"), "{text}");
        }
    }

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
    fn postgres_sessions_start_with_a_statement_and_a_shorter_lock_timeout() {
        let secret = DatabaseSecret::from_json(
            r#"{"engine":"postgres","host":"db","port":5432,"username":"app","password":"x","ssl":false}"#,
        )
        .unwrap();
        let settings = ConnectSettings {
            statement_timeout: Duration::from_secs(30),
            ..ConnectSettings::default()
        };
        let options = pg_options(&secret, None, None, &settings);
        assert_eq!(
            options.get_options(),
            Some("-c statement_timeout=30000 -c lock_timeout=15000")
        );
        assert_eq!(
            pg_lock_timeout(Duration::from_millis(1)),
            Duration::from_millis(1)
        );
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
