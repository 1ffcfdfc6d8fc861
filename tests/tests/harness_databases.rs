//! The private MariaDB and PostgreSQL servers enforce passwords, TLS-only servers refuse
//! plaintext and are verifiable against the test CA, and dropping a server leaves nothing
//! behind.

use std::path::PathBuf;
use std::time::Instant;

use harness::mariadb::MariaDb;
use harness::postgres::Postgres;
use harness::process::{process_is_running, remove_abandoned_dirs};
use harness::tls::TestCa;
use sqlx::mysql::{MySqlConnection, MySqlDatabaseError, MySqlSslMode};
use sqlx::postgres::{PgConnection, PgSslMode};
use sqlx::{Connection, Row};

/// MySQL's error number for a connection error, e.g. 1045 (access denied).
fn mysql_error_number(error: &sqlx::Error) -> Option<u16> {
    let database_error = error.as_database_error()?;
    Some(
        database_error
            .try_downcast_ref::<MySqlDatabaseError>()?
            .number(),
    )
}

/// PostgreSQL's SQLSTATE for a connection error, e.g. `28P01` (invalid password).
fn sqlstate(error: &sqlx::Error) -> Option<String> {
    Some(error.as_database_error()?.code()?.into_owned())
}

// ---- MariaDB ------------------------------------------------------------------------------

#[tokio::test]
async fn mariadb_refuses_a_wrong_password_and_accepts_the_right_one() {
    let started = Instant::now();
    let db = MariaDb::start().await;
    eprintln!("MariaDB started in {:?}", started.elapsed());

    let wrong = db.connect_options(db.admin_user(), "not-the-password");
    let error = MySqlConnection::connect_with(&wrong)
        .await
        .expect_err("a wrong password");
    assert_eq!(mysql_error_number(&error), Some(1045), "{error}");

    // The installer's password-less root accounts are gone.
    let root = db.connect_options("root", "");
    let error = MySqlConnection::connect_with(&root)
        .await
        .expect_err("root without password");
    assert_eq!(mysql_error_number(&error), Some(1045), "{error}");

    let pool = db.admin_pool().await;
    let user: String = sqlx::query_scalar("SELECT CURRENT_USER()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(user, "admin@%");

    // The admin can create accounts, and connect_options works for them too.
    sqlx::query("CREATE USER 'app'@'%' IDENTIFIED BY 'app-password'")
        .execute(&pool)
        .await
        .unwrap();
    let mut app = MySqlConnection::connect_with(&db.connect_options("app", "app-password"))
        .await
        .expect("the new account logs in");
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut app)
        .await
        .unwrap();
    assert_eq!(one, 1);
}

#[tokio::test]
async fn tls_only_mariadb_refuses_plaintext_and_verifies_against_the_test_ca() {
    let started = Instant::now();
    let db = MariaDb::start_tls_only().await;
    eprintln!("TLS-only MariaDB started in {:?}", started.elapsed());
    let ca_pem_path = db.ca_pem_path().expect("a TLS-only server has a CA");
    assert!(ca_pem_path.is_file());

    let plaintext = db
        .connect_options(db.admin_user(), db.admin_password())
        .ssl_mode(MySqlSslMode::Disabled);
    let error = MySqlConnection::connect_with(&plaintext)
        .await
        .expect_err("plaintext is refused");
    // MariaDB (unlike MySQL's 3159) answers "access denied" (1045) for insecure transport
    // (MDEV-30178); the same credentials succeed over TLS just below.
    assert_eq!(mysql_error_number(&error), Some(1045), "{error}");

    // connect_options verifies the certificate (CA and host name) by default.
    let mut connection =
        MySqlConnection::connect_with(&db.connect_options(db.admin_user(), db.admin_password()))
            .await
            .expect("a verified TLS connection");
    let row = sqlx::query("SHOW SESSION STATUS LIKE 'Ssl_version'")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    let version: String = row.get(1);
    assert!(version.starts_with("TLS"), "Ssl_version = {version:?}");

    // Verification is real: another CA's bundle does not verify this server.
    let other_ca = TestCa::new();
    let untrusted = db
        .connect_options(db.admin_user(), db.admin_password())
        .ssl_ca(other_ca.ca_pem_path());
    let error = MySqlConnection::connect_with(&untrusted)
        .await
        .expect_err("a certificate from an untrusted CA");
    assert!(
        error.as_database_error().is_none(),
        "a TLS error, not a login error: {error}"
    );
}

#[tokio::test]
async fn dropping_mariadb_stops_the_server_and_removes_its_files() {
    let db = MariaDb::start().await;
    let (pid, dir) = (db.pid(), db.dir().to_path_buf());
    assert!(process_is_running(pid));
    let started = Instant::now();
    drop(db);
    eprintln!("MariaDB stopped in {:?}", started.elapsed());
    assert!(!process_is_running(pid), "mariadbd (pid {pid}) still runs");
    assert!(!dir.exists(), "{} still exists", dir.display());
}

// ---- PostgreSQL ---------------------------------------------------------------------------

#[tokio::test]
async fn postgres_refuses_a_wrong_password_and_accepts_the_right_one() {
    let started = Instant::now();
    let db = Postgres::start().await;
    eprintln!("PostgreSQL started in {:?}", started.elapsed());

    let wrong = db.connect_options(db.admin_user(), "not-the-password");
    let error = PgConnection::connect_with(&wrong)
        .await
        .expect_err("a wrong password");
    assert_eq!(sqlstate(&error).as_deref(), Some("28P01"), "{error}");

    let pool = db.admin_pool().await;
    let (user, superuser): (String, bool) = sqlx::query_as(
        "SELECT current_user::text, rolsuper FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((user.as_str(), superuser), ("postgres", true));

    sqlx::query("CREATE ROLE app LOGIN PASSWORD 'app-password'")
        .execute(&pool)
        .await
        .unwrap();
    let mut app = PgConnection::connect_with(&db.connect_options("app", "app-password"))
        .await
        .expect("the new role logs in");
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut app)
        .await
        .unwrap();
    assert_eq!(one, 1);
}

#[tokio::test]
async fn tls_only_postgres_refuses_plaintext_and_verifies_against_the_test_ca() {
    let started = Instant::now();
    let db = Postgres::start_tls_only().await;
    eprintln!("TLS-only PostgreSQL started in {:?}", started.elapsed());
    let ca_pem_path = db.ca_pem_path().expect("a TLS-only server has a CA");
    assert!(ca_pem_path.is_file());

    let plaintext = db
        .connect_options(db.admin_user(), db.admin_password())
        .ssl_mode(PgSslMode::Disable);
    let error = PgConnection::connect_with(&plaintext)
        .await
        .expect_err("plaintext is refused");
    // "no pg_hba.conf entry for host ..., no encryption"
    assert_eq!(sqlstate(&error).as_deref(), Some("28000"), "{error}");

    let mut connection =
        PgConnection::connect_with(&db.connect_options(db.admin_user(), db.admin_password()))
            .await
            .expect("a verified TLS connection");
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&mut connection)
            .await
            .unwrap();
    assert!(encrypted);

    let other_ca = TestCa::new();
    let untrusted = db
        .connect_options(db.admin_user(), db.admin_password())
        .ssl_root_cert(other_ca.ca_pem_path());
    let error = PgConnection::connect_with(&untrusted)
        .await
        .expect_err("a certificate from an untrusted CA");
    assert!(
        error.as_database_error().is_none(),
        "a TLS error, not a login error: {error}"
    );
}

#[tokio::test]
async fn dropping_postgres_stops_the_server_and_removes_its_files() {
    let db = Postgres::start().await;
    // A pool still open at drop time must not stall the shutdown.
    let pool = db.admin_pool().await;
    sqlx::query("SELECT 1").execute(&pool).await.unwrap();
    let (pid, dir) = (db.pid(), db.dir().to_path_buf());
    assert!(process_is_running(pid));
    let started = Instant::now();
    drop(db);
    eprintln!("PostgreSQL stopped in {:?}", started.elapsed());
    assert!(!process_is_running(pid), "postgres (pid {pid}) still runs");
    assert!(!dir.exists(), "{} still exists", dir.display());
}

#[tokio::test]
async fn servers_start_in_parallel() {
    let (maria, postgres) = tokio::join!(MariaDb::start(), Postgres::start());
    let maria_pool = maria.admin_pool().await;
    let postgres_pool = postgres.admin_pool().await;
    let a: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&maria_pool)
        .await
        .unwrap();
    let b: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&postgres_pool)
        .await
        .unwrap();
    assert_eq!((a, b), (1, 1));
}

#[test]
fn starting_a_server_can_run_on_any_task() {
    fn is_send<T: Send>(_: T) {}
    is_send(MariaDb::start());
    is_send(MariaDb::start_tls_only());
    is_send(Postgres::start());
    is_send(Postgres::start_tls_only());
}

// ---- Nothing outlives the test ------------------------------------------------------------

#[tokio::test]
async fn a_panicking_test_still_stops_its_server() {
    let (pid_sender, pid_receiver) = std::sync::mpsc::channel();
    let task = tokio::spawn(async move {
        let db = MariaDb::start().await;
        pid_sender.send((db.pid(), db.dir().to_path_buf())).unwrap();
        panic!("the test fails while the server runs");
    });
    assert!(task.await.unwrap_err().is_panic());
    let (pid, dir) = pid_receiver.recv().unwrap();
    assert!(
        !process_is_running(pid),
        "mariadbd (pid {pid}) survived the panic"
    );
    assert!(!dir.exists(), "{} survived the panic", dir.display());
}

const SERVER_PID_LINE: &str = "harness server pid: ";
/// Set in the child process that holds a server until it is killed.
const HOLDER_MARKER: &str = "ORCHESTRATOR_HARNESS_HOLD_SERVER";

#[tokio::test]
async fn a_killed_test_process_takes_its_server_along() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    if std::env::var_os(HOLDER_MARKER).is_some() {
        // In the child: start a server, report it, and wait to be killed.
        let db = MariaDb::start().await;
        println!("{SERVER_PID_LINE}{} {}", db.pid(), db.dir().display());
        tokio::time::sleep(std::time::Duration::from_secs(120)).await;
        panic!("the holder was not killed");
    }

    // This test again, in a child process (libtest's and nextest's binaries both accept
    // these arguments).
    let mut holder = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_killed_test_process_takes_its_server_along",
            "--nocapture",
        ])
        .env(HOLDER_MARKER, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (server_pid, dir) = BufReader::new(holder.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            let (pid, dir) = line.strip_prefix(SERVER_PID_LINE)?.split_once(' ')?;
            Some((pid.parse::<u32>().ok()?, PathBuf::from(dir)))
        })
        .expect("the helper reports its server's pid and directory");
    assert!(process_is_running(server_pid));

    holder.kill().unwrap(); // SIGKILL: no unwinding, no Drop
    holder.wait().unwrap();
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while process_is_running(server_pid) && Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        !process_is_running(server_pid),
        "mariadbd (pid {server_pid}) outlived its killed test process"
    );

    // Nobody could remove the killed process's directory; the next sweep does.
    assert!(dir.is_dir());
    remove_abandoned_dirs();
    assert!(!dir.exists(), "{} was not swept", dir.display());
}
