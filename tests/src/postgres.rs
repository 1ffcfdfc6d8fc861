//! A private PostgreSQL server per test: its own data directory, port and socket directory,
//! SCRAM password authentication, and optionally TLS-only.
//!
//! ```no_run
//! # async fn demo() {
//! let db = harness::postgres::Postgres::start().await;
//! let pool = db.admin_pool().await;
//! let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&pool).await.unwrap();
//! # }
//! ```
//!
//! PostgreSQL refuses to run as root, so when the tests run as root the server runs as the
//! `postgres` system user (which the Debian package creates) and its files belong to it.
//! `initdb` takes seconds, so it runs once per machine and PostgreSQL version: the result is
//! cached as a template (see [`crate::process`]) and every instance starts from a copy.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgSslMode};

use crate::database::DatabaseServer;
use crate::process::{
    ServerInstance, ServerProcess, StartError, StopSignal, binary_candidates, binary_fingerprint,
    cached_dir, chown, copy_tree, random_hex, require_binary, run_to_completion, running_as_root,
    start_with_port_retry, temp_dir, wait_until_ready,
};
use crate::tls::TestCa;

/// The superuser every instance has (password authentication, random password).
pub const ADMIN_USER: &str = "postgres";
/// The database that always exists; connection options select it.
pub const DEFAULT_DATABASE: &str = "postgres";

/// Bump when the template's content changes.
const TEMPLATE_FORMAT: u32 = 1;
const START_TIMEOUT: Duration = Duration::from_secs(60);
const INITDB_TIMEOUT: Duration = Duration::from_secs(180);
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Fast and unsafe for real data; dynamic shared memory in the data directory (not
/// /dev/shm) so nothing outlives the instance's temp dir even after a `SIGKILL`.
const SERVER_SETTINGS: &[&str] = &[
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "shared_buffers=16MB",
    "dynamic_shared_memory_type=mmap",
];

/// A PostgreSQL server listening on 127.0.0.1, stopped and deleted when dropped.
#[derive(Debug)]
pub struct Postgres(DatabaseServer);

impl std::ops::Deref for Postgres {
    type Target = DatabaseServer;

    fn deref(&self) -> &DatabaseServer {
        &self.0
    }
}

/// The installed server binaries and the account to run them as.
struct Installation {
    initdb: PathBuf,
    postgres: PathBuf,
    /// `(uid, gid)` of the `postgres` user when the tests run as root; `None` otherwise.
    owner: Option<(u32, u32)>,
}

impl Postgres {
    /// Starts a server that accepts plaintext (and only password-authenticated) connections.
    /// Panics if PostgreSQL is not installed (run `scripts/setup`) or does not start.
    pub async fn start() -> Postgres {
        Postgres::start_with(false, &[]).await
    }

    /// [`Postgres::start`] with extra server settings (`name=value`, as `postgres -c` takes
    /// them), e.g. `standard_conforming_strings=off` or `log_statement=all`; the server's log
    /// is [`Postgres::server_log`].
    pub async fn start_with_settings(settings: &[&str]) -> Postgres {
        Postgres::start_with(false, settings).await
    }

    /// Everything the server has logged so far (its stderr: statements under
    /// `log_statement`, errors with the statement that failed).
    pub fn server_log(&self) -> String {
        fs::read_to_string(self.dir().join("postgres.log")).unwrap_or_default()
    }

    /// Starts a server with `ssl=on`, a fresh [`TestCa`]'s certificate, and a `pg_hba.conf`
    /// that has only `hostssl` lines: plaintext connections are refused, and clients verify
    /// the server with [`DatabaseServer::ca_pem_path`](crate::database::DatabaseServer::ca_pem_path).
    pub async fn start_tls_only() -> Postgres {
        Postgres::start_with(true, &[]).await
    }

    async fn start_with(tls_only: bool, settings: &[&str]) -> Postgres {
        let installation = Installation::find();
        let template = template(&installation).await;
        start_with_port_retry("PostgreSQL", |port| {
            Postgres::start_instance(&installation, &template, tls_only, settings, port)
        })
        .await
    }

    /// One start attempt on `port`: a fresh copy of the template, this instance's password and
    /// `pg_hba.conf`, then the server.
    async fn start_instance(
        installation: &Installation,
        template: &Path,
        tls_only: bool,
        settings: &[&str],
        port: u16,
    ) -> Result<Postgres, StartError> {
        let owner = installation.owner;
        let failed = |what: &str, e: std::io::Error| StartError::Failed(format!("{what}: {e}"));
        let dir = temp_dir("harness-postgres-");
        chown(dir.path(), owner).map_err(|e| failed("chown the instance directory", e))?;
        let data = dir.path().join("data");
        copy_tree(template, &data, owner).map_err(|e| failed("copy the template", e))?;

        let ca = tls_only.then(TestCa::new);
        write_access_rules(&data, ca.as_ref(), owner)?;
        let admin_password = set_admin_password(installation, dir.path(), &data).await?;

        let mut command = installation.command(&installation.postgres, dir.path());
        command
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string()])
            .arg("-k")
            .arg(dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"]);
        for setting in SERVER_SETTINGS.iter().chain(settings) {
            command.args(["-c", setting]);
        }
        if ca.is_some() {
            command.args([
                "-c",
                "ssl=on",
                "-c",
                "ssl_cert_file=server.crt",
                "-c",
                "ssl_key_file=server.key",
            ]);
        }
        let mut server = ServerProcess::spawn(
            command,
            dir.path().join("postgres.log"),
            StopSignal::Interrupt,
        )
        .map_err(|e| failed("spawn postgres", e))?;
        let options = connect_options(port, ADMIN_USER, &admin_password, ca.as_ref());
        wait_until_ready(&mut server, START_TIMEOUT, || can_log_in(&options)).await?;
        Ok(Postgres(DatabaseServer {
            instance: ServerInstance::new(server, dir),
            port,
            admin_password,
            ca,
        }))
    }

    /// The superuser's name: [`ADMIN_USER`].
    pub fn admin_user(&self) -> &'static str {
        ADMIN_USER
    }

    /// Connection options for any user of this server, database [`DEFAULT_DATABASE`].
    /// Plaintext servers: TLS disabled. TLS-only servers: `VerifyFull` against the test CA.
    /// Override with the usual builder methods (e.g. `.ssl_mode(..)`, `.database(..)`).
    pub fn connect_options(&self, user: &str, password: &str) -> PgConnectOptions {
        connect_options(self.port, user, password, self.ca.as_ref())
    }

    /// A small pool logged in as the superuser.
    pub async fn admin_pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(4)
            .connect_with(self.connect_options(ADMIN_USER, &self.admin_password))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "connect to PostgreSQL on port {} as postgres: {e}",
                    self.port
                )
            })
    }

    /// Whether the pgvector extension (`CREATE EXTENSION vector`) is installed for this
    /// server's PostgreSQL version. Tests that need it should assert this with a hint to
    /// install the package.
    pub fn has_pgvector() -> bool {
        let installation = Installation::find();
        let sharedir = Command::new(installation.initdb.with_file_name("pg_config"))
            .arg("--sharedir")
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
        sharedir.is_some_and(|dir| dir.join("extension/vector.control").is_file())
    }
}

impl Installation {
    /// The newest PostgreSQL under `/usr/lib/postgresql/<version>/bin` (Debian's layout),
    /// else `initdb`/`postgres` on `PATH`. Panics naming what is missing.
    fn find() -> Installation {
        let newest = fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let version: f64 = entry.file_name().to_str()?.parse().ok()?;
                let bin = entry.path().join("bin");
                bin.join("initdb").is_file().then_some((version, bin))
            })
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, bin)| bin.join("initdb"));
        let candidates: Vec<PathBuf> = newest
            .into_iter()
            .chain(binary_candidates("initdb", &[]))
            .collect();
        let initdb = require_binary("initdb (package postgresql)", &candidates);
        let postgres = require_binary(
            "postgres (package postgresql)",
            &[initdb.with_file_name("postgres")],
        );
        let owner = running_as_root().then(|| {
            postgres_account().unwrap_or_else(|| {
                panic!(
                    "PostgreSQL refuses to run as root and there is no `postgres` user in \
                     /etc/passwd: run scripts/setup (the postgresql package creates it)"
                )
            })
        });
        Installation {
            initdb,
            postgres,
            owner,
        }
    }

    /// A command for one of the server binaries, run as the owning account, in `dir`, with
    /// a locale that always exists.
    fn command(&self, program: &Path, dir: &Path) -> Command {
        let mut command = Command::new(program);
        command
            .current_dir(dir)
            .env("LC_ALL", "C")
            .env_remove("PGDATA");
        if let Some((uid, gid)) = self.owner {
            command.uid(uid).gid(gid);
        }
        command
    }
}

/// `(uid, gid)` of the `postgres` system user.
fn postgres_account() -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        match fields.as_slice() {
            ["postgres", _, uid, gid, ..] => Some((uid.parse().ok()?, gid.parse().ok()?)),
            _ => None,
        }
    })
}

/// The readiness probe: the superuser can log in.
async fn can_log_in(options: &PgConnectOptions) -> Result<(), String> {
    let connection = PgConnection::connect_with(options)
        .await
        .map_err(|e| e.to_string())?;
    connection.close().await.map_err(|e| e.to_string())
}

fn connect_options(port: u16, user: &str, password: &str, ca: Option<&TestCa>) -> PgConnectOptions {
    // Not `new()`: that would read ~/.pgpass.
    let options = PgConnectOptions::new_without_pgpass()
        .host("127.0.0.1")
        .port(port)
        .username(user)
        .password(password)
        .database(DEFAULT_DATABASE);
    match ca {
        Some(ca) => options
            .ssl_mode(PgSslMode::VerifyFull)
            .ssl_root_cert(ca.ca_pem_path()),
        None => options.ssl_mode(PgSslMode::Disable),
    }
}

/// `pg_hba.conf` (password logins over TCP only, TLS-only with `ca`) and, with `ca`, the
/// server's certificate and key.
fn write_access_rules(
    data: &Path,
    ca: Option<&TestCa>,
    owner: Option<(u32, u32)>,
) -> Result<(), StartError> {
    let failed = |what: &str, e: std::io::Error| StartError::Failed(format!("{what}: {e}"));
    let hba_method = match ca {
        Some(ca) => {
            install_private_file(&data.join("server.crt"), ca.cert_path(), owner)
                .map_err(|e| failed("install the server certificate", e))?;
            install_private_file(&data.join("server.key"), ca.key_path(), owner)
                .map_err(|e| failed("install the server key", e))?;
            "hostssl"
        }
        None => "host",
    };
    let hba = format!(
        "# Written by the test harness: password logins over TCP only.\n\
         {hba_method} all all 127.0.0.1/32 scram-sha-256\n"
    );
    write_private_file(&data.join("pg_hba.conf"), hba.as_bytes(), owner)
        .map_err(|e| failed("write pg_hba.conf", e))
}

/// The template's superuser password is a placeholder: this instance's own, set in
/// single-user mode before anything listens.
async fn set_admin_password(
    installation: &Installation,
    dir: &Path,
    data: &Path,
) -> Result<String, StartError> {
    let admin_password = random_hex(16);
    let sql = dir.join("set-password.sql");
    fs::write(
        &sql,
        format!("ALTER ROLE {ADMIN_USER} PASSWORD '{admin_password}';\n"),
    )
    .map_err(|e| StartError::Failed(format!("write set-password.sql: {e}")))?;
    let mut single = installation.command(&installation.postgres, dir);
    single
        .arg("--single")
        .arg("-D")
        .arg(data)
        .args(["-c", "fsync=off", DEFAULT_DATABASE]);
    let log = dir.join("single-user.log");
    run_to_completion(single, Some(&sql), &log, SETUP_TIMEOUT)
        .await
        .map_err(StartError::Failed)?;
    Ok(admin_password)
}

/// Writes a file only its owner can read (PostgreSQL insists on that for the key).
fn write_private_file(
    path: &Path,
    contents: &[u8],
    owner: Option<(u32, u32)>,
) -> std::io::Result<()> {
    fs::write(path, contents)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    chown(path, owner)
}

fn install_private_file(
    path: &Path,
    from: &Path,
    owner: Option<(u32, u32)>,
) -> std::io::Result<()> {
    write_private_file(path, &fs::read(from)?, owner)
}

/// The cached template data directory (`initdb` with SCRAM authentication and a placeholder
/// superuser password).
async fn template(installation: &Installation) -> PathBuf {
    let key = format!(
        "postgres-{}-f{TEMPLATE_FORMAT}",
        binary_fingerprint(&installation.postgres)
    );
    cached_dir(&key, |staging| build_template(installation, staging)).await
}

/// Fills `staging` with a fresh data directory (`initdb`), for [`template`].
async fn build_template(installation: &Installation, staging: PathBuf) -> Result<(), String> {
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    // initdb runs as the owner, so it gets its own (empty) directory and work dir.
    fs::create_dir(&staging).map_err(|e| io("create the staging directory", e))?;
    fs::set_permissions(&staging, fs::Permissions::from_mode(0o700))
        .map_err(|e| io("restrict the staging directory", e))?;
    chown(&staging, installation.owner).map_err(|e| io("chown the staging directory", e))?;
    let work = temp_dir("harness-postgres-initdb-");
    chown(work.path(), installation.owner).map_err(|e| io("chown the work directory", e))?;
    let password_file = work.path().join("password");
    write_private_file(
        &password_file,
        random_hex(16).as_bytes(),
        installation.owner,
    )
    .map_err(|e| io("write the password file", e))?;

    let mut command = installation.command(&installation.initdb, work.path());
    command
        .arg("-D")
        .arg(&staging)
        .args(["--auth=scram-sha-256", "-U", ADMIN_USER])
        .arg(format!("--pwfile={}", password_file.display()))
        .args([
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ]);
    let log = work.path().join("initdb.log");
    run_to_completion(command, None, &log, INITDB_TIMEOUT).await
}
