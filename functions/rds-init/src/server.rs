//! The database adapter: connects as the master (retrying while a new instance comes up),
//! reads the state planning needs, and runs statements.

use crate::statements::Statement;
use secrecy::SecretString;
use shared::database::{
    ConnectError, ConnectSettings, DatabaseSecret, DbConnection, connect, sql::KnownSecrets,
};
use std::collections::{BTreeMap, BTreeSet, btree_map::Entry};
use std::time::Duration;
use tokio::time::Instant;

/// Time kept back from the answer-by point so our own FAILED (with the connection error)
/// goes out rather than the responder's generic timeout.
const ANSWER_RESERVE: Duration = Duration::from_secs(1);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A refused password will not fix itself; a few tries cover a master secret that was just
/// rotated or an instance that is still applying it.
const MAX_AUTHENTICATION_FAILURES: u32 = 3;
const MIN_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(200);

/// Why the database work failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("gave up connecting after {attempts} attempt(s) in {seconds:.1} s: {source}")]
    Unreachable {
        attempts: u32,
        seconds: f32,
        #[source]
        source: ConnectError,
    },
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("could not read the server's {what}: {source}")]
    ReadState {
        what: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("could not {action}: {source}")]
    Statement {
        action: String,
        #[source]
        source: sqlx::Error,
    },
}

/// Connects as `secret`'s user, retrying with backoff until shortly before `answer_by`.
pub async fn connect_with_retry(
    secret: &DatabaseSecret,
    settings: &ConnectSettings,
    answer_by: Instant,
) -> Result<DbConnection, ServerError> {
    let started = Instant::now();
    let mut backoff = FIRST_BACKOFF;
    let (mut attempts, mut authentication_failures) = (0u32, 0u32);
    loop {
        let budget = answer_by
            .saturating_duration_since(Instant::now())
            .saturating_sub(ANSWER_RESERVE);
        let mut attempt_settings = settings.clone();
        attempt_settings.connect_timeout = settings
            .connect_timeout
            .min(budget)
            .max(MIN_ATTEMPT_TIMEOUT);
        attempts += 1;
        let error = match connect(secret, None, &attempt_settings).await {
            Ok(connection) => {
                if attempts > 1 {
                    tracing::info!(attempts, "connected to the database");
                }
                return Ok(connection);
            }
            Err(error) => error,
        };
        if error.is_authentication_failure() {
            authentication_failures += 1;
        }
        let left = answer_by
            .saturating_duration_since(Instant::now())
            .saturating_sub(ANSWER_RESERVE);
        // Stop when no meaningful attempt fits any more; otherwise shorten the last pause so
        // one more attempt still runs just before the deadline.
        if authentication_failures >= MAX_AUTHENTICATION_FAILURES || left < 2 * MIN_ATTEMPT_TIMEOUT
        {
            return Err(ServerError::Unreachable {
                attempts,
                seconds: started.elapsed().as_secs_f32(),
                source: error,
            });
        }
        let pause = backoff.min(left - MIN_ATTEMPT_TIMEOUT);
        let error = KnownSecrets::default()
            .with(&secret.password)
            .redact_error(&error);
        tracing::warn!(attempts, error = %error, retry_in_ms = pause.as_millis() as u64, "database not reachable yet; retrying");
        tokio::time::sleep(pause).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Names the server has, read as the master.
pub async fn read_names(
    connection: &mut DbConnection,
) -> Result<(BTreeSet<String>, BTreeSet<String>, BTreeSet<String>), ServerError> {
    async fn names(
        connection: &mut DbConnection,
        what: &'static str,
        mysql: &'static str,
        postgres: &'static str,
    ) -> Result<BTreeSet<String>, ServerError> {
        let rows: Result<Vec<String>, sqlx::Error> = match connection {
            DbConnection::MySql(c) => sqlx::query_scalar(mysql).fetch_all(&mut *c).await,
            DbConnection::Postgres(c) => sqlx::query_scalar(postgres).fetch_all(&mut *c).await,
        };
        rows.map(|rows| rows.into_iter().collect())
            .map_err(|source| ServerError::ReadState { what, source })
    }
    let databases = names(
        connection,
        "databases",
        "SELECT CAST(SCHEMA_NAME AS CHAR) FROM information_schema.SCHEMATA",
        "SELECT datname::text FROM pg_database",
    )
    .await?;
    let users = names(
        connection,
        "users",
        "SELECT CAST(User AS CHAR) FROM mysql.user WHERE Host = '%'",
        "SELECT rolname::text FROM pg_roles",
    )
    .await?;
    let extensions = match connection {
        DbConnection::MySql(_) => BTreeSet::new(),
        DbConnection::Postgres(_) => {
            names(
                connection,
                "available extensions",
                "",
                "SELECT name::text FROM pg_available_extensions",
            )
            .await?
        }
    };
    Ok((databases, users, extensions))
}

/// PostgreSQL role facts: direct memberships as (role, member), and the role each role's
/// sessions act as (`ALTER ROLE … SET role`). Empty on MariaDB/MySQL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleFacts {
    pub memberships: BTreeSet<(String, String)>,
    pub session_roles: BTreeMap<String, String>,
}

/// Reads [`RoleFacts`] as the master.
pub async fn read_role_facts(connection: &mut DbConnection) -> Result<RoleFacts, ServerError> {
    let DbConnection::Postgres(c) = connection else {
        return Ok(RoleFacts::default());
    };
    let memberships: Vec<(String, String)> = sqlx::query_as(
        "SELECT r.rolname::text, m.rolname::text FROM pg_auth_members a \
         JOIN pg_roles r ON r.oid = a.roleid JOIN pg_roles m ON m.oid = a.member",
    )
    .fetch_all(&mut *c)
    .await
    .map_err(|source| ServerError::ReadState {
        what: "role memberships",
        source,
    })?;
    // rolconfig holds the settings for every database, as `name=value`.
    let session_roles: Vec<(String, String)> = sqlx::query_as(
        "SELECT rolname::text, substr(setting, 6) FROM pg_roles, unnest(rolconfig) AS setting \
         WHERE setting LIKE 'role=%'",
    )
    .fetch_all(&mut *c)
    .await
    .map_err(|source| ServerError::ReadState {
        what: "role settings",
        source,
    })?;
    Ok(RoleFacts {
        memberships: memberships.into_iter().collect(),
        session_roles: session_roles.into_iter().collect(),
    })
}

/// Whether `username` logs in with `password` (a single attempt, no retry). A failure that
/// is not a refused password (a timeout, say) counts as "works": the password is then left
/// alone rather than overwritten on a guess.
pub async fn password_logs_in(
    master: &DatabaseSecret,
    settings: &ConnectSettings,
    username: &str,
    password: &SecretString,
) -> bool {
    let mut secret = master.clone();
    secret.username = username.to_owned();
    secret.password = password.clone();
    secret.dbname = None;
    match connect(&secret, None, settings).await {
        Ok(connection) => {
            let _ = connection.close().await;
            true
        }
        Err(error) if error.is_authentication_failure() => false,
        Err(error) => {
            let error = KnownSecrets::default()
                .with(&master.password)
                .with(password)
                .redact_error(&error);
            tracing::warn!(user = username, error = %error, "could not check the user's password; leaving it unchanged");
            true
        }
    }
}

/// Runs statements as the master: on its own connection, or (PostgreSQL) on a connection to
/// the statement's database, opened once and reused.
pub struct StatementRunner<'a> {
    master: &'a DatabaseSecret,
    settings: &'a ConnectSettings,
    server: DbConnection,
    in_database: BTreeMap<String, DbConnection>,
}

impl<'a> StatementRunner<'a> {
    pub fn new(
        master: &'a DatabaseSecret,
        settings: &'a ConnectSettings,
        server: DbConnection,
    ) -> Self {
        Self {
            master,
            settings,
            server,
            in_database: BTreeMap::new(),
        }
    }

    /// Runs `statements`, the SQL of one action described by `action` (for errors).
    pub async fn run(
        &mut self,
        action: &str,
        statements: Vec<Statement>,
    ) -> Result<(), ServerError> {
        for statement in statements {
            let connection = match &statement.database {
                None => &mut self.server,
                Some(database) => match self.in_database.entry(database.to_string()) {
                    Entry::Occupied(open) => open.into_mut(),
                    Entry::Vacant(slot) => {
                        let connection =
                            connect(self.master, Some(database.as_str()), self.settings).await?;
                        slot.insert(connection)
                    }
                },
            };
            connection
                .execute(statement.sql)
                .await
                .map_err(|source| ServerError::Statement {
                    action: action.to_owned(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Closes a database's connection (before it is dropped: PostgreSQL refuses to drop a
    /// database with sessions, ours included).
    pub async fn release(&mut self, database: &str) {
        if let Some(connection) = self.in_database.remove(database) {
            let _ = connection.close().await;
        }
    }

    /// Mutable access to the master's own connection (for reads between actions).
    pub fn server(&mut self) -> &mut DbConnection {
        &mut self.server
    }

    pub async fn close(self) {
        for (_, connection) in self.in_database {
            let _ = connection.close().await;
        }
        let _ = self.server.close().await;
    }
}
