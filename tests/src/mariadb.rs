//! A private MariaDB server per test: its own data directory, port and socket, real password
//! authentication, and optionally TLS-only.
//!
//! ```no_run
//! # async fn demo() {
//! let db = harness::mariadb::MariaDb::start().await;
//! let pool = db.admin_pool().await;
//! let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&pool).await.unwrap();
//! # }
//! ```
//!
//! Creating a data directory (`mariadb-install-db`) takes seconds, so it happens once per
//! machine and MariaDB version: the result is cached as a template (see
//! [`crate::process`]) and every instance starts from a copy, which takes milliseconds.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sqlx::Connection;
use sqlx::mysql::{
    MySqlConnectOptions, MySqlConnection, MySqlPool, MySqlPoolOptions, MySqlSslMode,
};

use crate::database::DatabaseServer;
use crate::process::{
    ServerInstance, ServerProcess, StartError, StopSignal, binary_candidates, binary_fingerprint,
    cached_dir, copy_tree, random_hex, require_binary, run_to_completion, running_as_root,
    start_with_port_retry, temp_dir, wait_until_ready,
};
use crate::tls::TestCa;

/// The administrator account every instance has: all privileges `WITH GRANT OPTION`, from
/// any host, password authentication. There is no `root` account.
pub const ADMIN_USER: &str = "admin";

/// Bump when the template's content or the server options it depends on change.
const TEMPLATE_FORMAT: u32 = 1;
const START_TIMEOUT: Duration = Duration::from_secs(60);
const INSTALL_TIMEOUT: Duration = Duration::from_secs(180);

/// Settings used both when creating the template and when running it. Small and unsafe for
/// real data, fast for tests: tiny buffer pool and redo log, no fsync, no doublewrite.
const SERVER_TUNING: &[&str] = &[
    "--innodb-buffer-pool-size=16M",
    "--innodb-log-file-size=4M",
    "--innodb-flush-method=nosync",
    "--innodb-flush-log-at-trx-commit=0",
    "--innodb-doublewrite=0",
    "--skip-name-resolve",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_general_ci",
];

/// A MariaDB server listening on 127.0.0.1, stopped and deleted when dropped.
#[derive(Debug)]
pub struct MariaDb(DatabaseServer);

impl std::ops::Deref for MariaDb {
    type Target = DatabaseServer;

    fn deref(&self) -> &DatabaseServer {
        &self.0
    }
}

impl MariaDb {
    /// Starts a server that accepts plaintext connections. Panics if MariaDB is not installed
    /// (run `scripts/setup`) or does not start.
    pub async fn start() -> MariaDb {
        MariaDb::start_with(false).await
    }

    /// Starts a server with a fresh [`TestCa`]'s certificate and
    /// `require_secure_transport=ON`: plaintext TCP connections are refused, and clients
    /// verify the server with [`DatabaseServer::ca_pem_path`](crate::database::DatabaseServer::ca_pem_path).
    pub async fn start_tls_only() -> MariaDb {
        MariaDb::start_with(true).await
    }

    async fn start_with(tls_only: bool) -> MariaDb {
        let mariadbd = require_binary(
            "mariadbd (package mariadb-server)",
            &binary_candidates("mariadbd", &["/usr/sbin", "/usr/libexec"]),
        );
        let template = template(&mariadbd).await;
        start_with_port_retry("MariaDB", |port| {
            MariaDb::start_instance(&mariadbd, &template, tls_only, port)
        })
        .await
    }

    /// One start attempt on `port`: a fresh copy of the template, then the server.
    async fn start_instance(
        mariadbd: &Path,
        template: &Path,
        tls_only: bool,
        port: u16,
    ) -> Result<MariaDb, StartError> {
        let dir = temp_dir("harness-mariadb-");
        let data = dir.path().join("data");
        copy_tree(template, &data, None)
            .map_err(|e| StartError::Failed(format!("copy the MariaDB template: {e}")))?;
        // The template's admin password is a placeholder; each instance gets its own,
        // set by the init file before the server accepts connections.
        let admin_password = random_hex(16);
        let init_file = dir.path().join("init.sql");
        fs::write(
            &init_file,
            format!("ALTER USER '{ADMIN_USER}'@'%' IDENTIFIED BY '{admin_password}';\n"),
        )
        .map_err(|e| StartError::Failed(format!("write {}: {e}", init_file.display())))?;

        let ca = tls_only.then(TestCa::new);
        let mut command = Command::new(mariadbd);
        // --no-defaults must come first: nothing from /etc/mysql or ~/.my.cnf.
        command
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!(
                "--socket={}",
                dir.path().join("mysqld.sock").display()
            ))
            .arg(format!(
                "--pid-file={}",
                dir.path().join("mysqld.pid").display()
            ))
            .arg(format!("--tmpdir={}", dir.path().display()))
            .arg(format!("--init-file={}", init_file.display()))
            .args(SERVER_TUNING)
            .current_dir(dir.path());
        if running_as_root() {
            // mariadbd refuses to run as root unless told to.
            command.arg("--user=root");
        }
        if let Some(ca) = &ca {
            command
                .arg(format!("--ssl-ca={}", ca.ca_pem_path().display()))
                .arg(format!("--ssl-cert={}", ca.cert_path().display()))
                .arg(format!("--ssl-key={}", ca.key_path().display()))
                .arg("--require-secure-transport=ON");
        }
        let mut server = ServerProcess::spawn(
            command,
            dir.path().join("mariadb.log"),
            StopSignal::Terminate,
        )
        .map_err(|e| StartError::Failed(format!("spawn {}: {e}", mariadbd.display())))?;
        let options = connect_options(port, ADMIN_USER, &admin_password, ca.as_ref());
        wait_until_ready(&mut server, START_TIMEOUT, || can_log_in(&options)).await?;
        Ok(MariaDb(DatabaseServer {
            instance: ServerInstance::new(server, dir),
            port,
            admin_password,
            ca,
        }))
    }

    /// The administrator's user name: [`ADMIN_USER`].
    pub fn admin_user(&self) -> &'static str {
        ADMIN_USER
    }

    /// Connection options for any user of this server, no database selected. Plaintext
    /// servers: TLS disabled. TLS-only servers: `VerifyIdentity` against the test CA.
    /// Override with the usual builder methods (e.g. `.ssl_mode(..)`, `.database(..)`).
    pub fn connect_options(&self, user: &str, password: &str) -> MySqlConnectOptions {
        connect_options(self.port, user, password, self.ca.as_ref())
    }

    /// A small pool logged in as the administrator.
    pub async fn admin_pool(&self) -> MySqlPool {
        MySqlPoolOptions::new()
            .max_connections(4)
            .connect_with(self.connect_options(ADMIN_USER, &self.admin_password))
            .await
            .unwrap_or_else(|e| panic!("connect to MariaDB on port {} as admin: {e}", self.port))
    }
}

/// The readiness probe: the administrator can log in.
async fn can_log_in(options: &MySqlConnectOptions) -> Result<(), String> {
    let connection = MySqlConnection::connect_with(options)
        .await
        .map_err(|e| e.to_string())?;
    connection.close().await.map_err(|e| e.to_string())
}

fn connect_options(
    port: u16,
    user: &str,
    password: &str,
    ca: Option<&TestCa>,
) -> MySqlConnectOptions {
    let options = MySqlConnectOptions::new()
        .host("127.0.0.1")
        .port(port)
        .username(user)
        .password(password);
    match ca {
        Some(ca) => options
            .ssl_mode(MySqlSslMode::VerifyIdentity)
            .ssl_ca(ca.ca_pem_path()),
        None => options.ssl_mode(MySqlSslMode::Disabled),
    }
}

/// The cached template data directory: system tables, no test database, no `root`, and an
/// `admin` account whose password each instance replaces.
async fn template(mariadbd: &Path) -> PathBuf {
    let key = format!(
        "mariadb-{}-f{TEMPLATE_FORMAT}",
        binary_fingerprint(mariadbd)
    );
    cached_dir(&key, build_template).await
}

/// Fills `staging` with a fresh data directory (`mariadb-install-db`), for [`template`].
async fn build_template(staging: PathBuf) -> Result<(), String> {
    let install_db = require_binary(
        "mariadb-install-db (package mariadb-server)",
        &binary_candidates("mariadb-install-db", &["/usr/bin"]),
    );
    let work = temp_dir("harness-mariadb-install-");
    let extra_sql = work.path().join("accounts.sql");
    // Runs inside the bootstrap, after the system tables exist. The root accounts the
    // installer creates have no password, so they go.
    let placeholder = random_hex(16);
    fs::write(
        &extra_sql,
        format!(
            "DELETE FROM mysql.global_priv WHERE User = 'root';\n\
             DELETE FROM mysql.proxies_priv WHERE User = 'root';\n\
             FLUSH PRIVILEGES;\n\
             CREATE USER '{ADMIN_USER}'@'%' IDENTIFIED BY '{placeholder}';\n\
             GRANT ALL PRIVILEGES ON *.* TO '{ADMIN_USER}'@'%' WITH GRANT OPTION;\n"
        ),
    )
    .map_err(|e| format!("write {}: {e}", extra_sql.display()))?;
    let mut command = Command::new(install_db);
    command
        .arg("--no-defaults")
        .arg(format!("--datadir={}", staging.display()))
        .arg("--auth-root-authentication-method=normal")
        .arg("--skip-test-db")
        .arg(format!("--extra-file={}", extra_sql.display()))
        .args(SERVER_TUNING)
        .current_dir(work.path());
    if running_as_root() {
        command.arg("--user=root");
    }
    let log = work.path().join("install.log");
    run_to_completion(command, None, &log, INSTALL_TIMEOUT).await
}
