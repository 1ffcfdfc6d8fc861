//! `shared::database::connect` against real servers: verified TLS by default, plaintext only
//! when the secret says `ssl: false`, no downgrade, bounded waits, clear errors without the
//! password. The default trust (system roots + RDS authorities) refuses the harness's CA;
//! `DB_CA_BUNDLE` adds to it.

use harness::{mariadb::MariaDb, postgres::Postgres, tls::TestCa};
use serde_json::json;
use shared::database::{ConnectError, ConnectSettings, DatabaseSecret, DbConnection, connect};
use shared::env_config::EnvVars;
use std::path::Path;
use std::time::{Duration, Instant};

fn secret(
    engine: &str,
    port: u16,
    user: &str,
    password: &str,
    ssl: Option<bool>,
) -> DatabaseSecret {
    let mut value = json!({
        "engine": engine, "host": "127.0.0.1", "port": port, "username": user, "password": password,
    });
    if let Some(ssl) = ssl {
        value["ssl"] = json!(ssl);
    }
    DatabaseSecret::from_json(&value.to_string()).unwrap()
}

/// Each TLS-only server's admin login: engine, port, user, password and the test CA.
fn admin_logins<'a>(
    maria: &'a MariaDb,
    postgres: &'a Postgres,
) -> [(&'static str, u16, &'static str, &'a str, Option<&'a Path>); 2] {
    [
        (
            "mariadb",
            maria.port(),
            maria.admin_user(),
            maria.admin_password(),
            maria.ca_pem_path(),
        ),
        (
            "postgres",
            postgres.port(),
            postgres.admin_user(),
            postgres.admin_password(),
            postgres.ca_pem_path(),
        ),
    ]
}

/// `ca` is `DB_CA_BUNDLE`: added to the default trust (system roots + RDS authorities).
fn settings(ca: Option<&Path>) -> ConnectSettings {
    let settings = ConnectSettings {
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(1),
        ..ConnectSettings::default()
    };
    match ca {
        Some(ca) => settings.trusting(ca).expect("the test CA is a PEM bundle"),
        None => settings,
    }
}

/// Settings as a function builds them at cold start, from its environment.
fn settings_from_env(ca_bundle: Option<&Path>) -> ConnectSettings {
    let pairs = ca_bundle.map(|path| ("DB_CA_BUNDLE", path.to_str().unwrap()));
    ConnectSettings::from_env(&EnvVars::from_pairs(pairs)).unwrap()
}

/// Connects with `settings` and checks, asking the server, that the session runs over TLS.
async fn connects_over_tls(engine: &str, secret: &DatabaseSecret, settings: &ConnectSettings) {
    let mut connection = connect(secret, None, settings)
        .await
        .unwrap_or_else(|e| panic!("{engine}: {e}"));
    assert!(
        session_uses_tls(&mut connection).await,
        "{engine} session is not encrypted"
    );
    connection.close().await.unwrap();
}

/// Whether the session really runs over TLS, asked of the server itself.
async fn session_uses_tls(connection: &mut DbConnection) -> bool {
    match connection {
        DbConnection::MySql(c) => {
            let (_, cipher): (String, String) =
                sqlx::query_as("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
                    .fetch_one(&mut *c)
                    .await
                    .unwrap();
            !cipher.is_empty()
        }
        DbConnection::Postgres(c) => {
            sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                .fetch_one(&mut *c)
                .await
                .unwrap()
        }
    }
}

#[tokio::test]
async fn without_ssl_in_the_secret_tls_is_required_and_verified() {
    let (maria, postgres) = tokio::join!(MariaDb::start_tls_only(), Postgres::start_tls_only());
    for (engine, port, user, password, ca) in admin_logins(&maria, &postgres) {
        connects_over_tls(
            engine,
            &secret(engine, port, user, password, None),
            &settings(ca),
        )
        .await;

        // A certificate from any other CA is refused (DB_CA_BUNDLE naming another CA only adds
        // that CA to the default trust).
        let stranger = TestCa::new();
        let err = connect(
            &secret(engine, port, user, password, Some(true)),
            None,
            &settings(Some(stranger.ca_pem_path())),
        )
        .await
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("verified TLS") && text.to_lowercase().contains("certificate"),
            "{engine}: {text}"
        );
        assert!(!err.is_authentication_failure());
    }
}

#[tokio::test]
async fn the_default_trust_refuses_an_unknown_ca_and_db_ca_bundle_adds_to_it() {
    let (maria, postgres) = tokio::join!(MariaDb::start_tls_only(), Postgres::start_tls_only());
    for (engine, port, user, password, ca) in admin_logins(&maria, &postgres) {
        // No DB_CA_BUNDLE: system roots + RDS authorities, neither of which signed the
        // harness's certificate. UnknownIssuer also shows every trusted certificate loaded.
        let default = settings_from_env(None);
        let err = connect(&secret(engine, port, user, password, None), None, &default)
            .await
            .expect_err("a certificate from an unknown CA is refused by default");
        let text = err.to_string();
        assert!(
            // "invalid peer certificate" is what the missing-region hint looks for.
            text.contains("over verified TLS")
                && text.contains("invalid peer certificate: UnknownIssuer"),
            "{engine}: {text}"
        );
        assert!(!err.is_authentication_failure(), "{engine}: {text}");

        // DB_CA_BUNDLE = the harness CA: added to the default trust, and the server verifies.
        let added = settings_from_env(ca);
        let (default_trust, trust) = (&default.trust, &added.trust);
        assert_eq!(trust.count(), default_trust.count() + 1, "{engine}");
        assert!(trust.pem().starts_with(default_trust.pem()), "{engine}");
        connects_over_tls(engine, &secret(engine, port, user, password, None), &added).await;

        // Trusting the server does not let a wrong password in.
        let err = connect(
            &secret(engine, port, user, "not-the-password-91c2", None),
            None,
            &added,
        )
        .await
        .expect_err("a wrong password still fails");
        assert!(err.is_authentication_failure(), "{engine}: {err}");
    }
}

#[tokio::test]
async fn a_server_without_tls_is_refused_unless_the_secret_says_ssl_false() {
    let (maria, postgres) = tokio::join!(MariaDb::start(), Postgres::start());
    for (engine, port, user, password) in [
        (
            "mariadb",
            maria.port(),
            maria.admin_user(),
            maria.admin_password(),
        ),
        (
            "postgres",
            postgres.port(),
            postgres.admin_user(),
            postgres.admin_password(),
        ),
    ] {
        for ssl in [None, Some(true)] {
            let err = connect(
                &secret(engine, port, user, password, ssl),
                None,
                &settings(None),
            )
            .await
            .expect_err("no silent downgrade to plaintext");
            assert!(
                err.to_string().contains("over verified TLS"),
                "{engine}: {err}"
            );
        }
        let mut connection = connect(
            &secret(engine, port, user, password, Some(false)),
            None,
            &settings(None),
        )
        .await
        .unwrap_or_else(|e| panic!("{engine}: {e}"));
        assert!(!session_uses_tls(&mut connection).await);
        connection.execute("SELECT 1").await.unwrap();
    }
}

#[tokio::test]
async fn a_wrong_password_is_an_authentication_failure_that_never_shows_the_password() {
    let (maria, postgres) = tokio::join!(MariaDb::start_tls_only(), Postgres::start_tls_only());
    for (engine, port, user, _, ca) in admin_logins(&maria, &postgres) {
        let err = connect(
            &secret(engine, port, user, "not-the-password-7f3a", None),
            None,
            &settings(ca),
        )
        .await
        .unwrap_err();
        assert!(err.is_authentication_failure(), "{engine}: {err}");
        let text = format!("{err} {err:?}");
        assert!(
            !text.contains("not-the-password-7f3a"),
            "{engine} leaked the password: {text}"
        );
        assert!(
            text.contains(&format!("127.0.0.1:{port}")) && text.contains(user),
            "{engine}: {text}"
        );
    }
}

#[tokio::test]
async fn a_database_that_never_answers_fails_within_the_connect_timeout() {
    // Accepts connections and then says nothing, like a half-dead server.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let _silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    for engine in ["mariadb", "postgres"] {
        let mut settings = settings(None);
        settings.connect_timeout = Duration::from_millis(800);
        let started = Instant::now();
        let err = connect(&secret(engine, port, "app", "pw", None), None, &settings)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ConnectError::TimedOut { .. }),
            "{engine}: {err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{engine} waited {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn statements_are_cut_off_by_the_statement_timeout() {
    let (maria, postgres) = tokio::join!(MariaDb::start(), Postgres::start());
    let mut maria_connection = connect(
        &secret(
            "mariadb",
            maria.port(),
            maria.admin_user(),
            maria.admin_password(),
            Some(false),
        ),
        None,
        &settings(None),
    )
    .await
    .unwrap();
    let mut pg_connection = connect(
        &secret(
            "postgres",
            postgres.port(),
            postgres.admin_user(),
            postgres.admin_password(),
            Some(false),
        ),
        None,
        &settings(None),
    )
    .await
    .unwrap();
    for (engine, connection, sql) in [
        (
            "mariadb",
            &mut maria_connection,
            "SELECT SLEEP(10) FROM DUAL",
        ),
        ("postgres", &mut pg_connection, "SELECT pg_sleep(10)"),
    ] {
        let started = Instant::now();
        let result = connection.execute(sql).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{engine} statement ran {:?}",
            started.elapsed()
        );
        let err = result.expect_err("the statement should be interrupted");
        assert!(
            err.to_string().to_lowercase().contains("timeout")
                || err.to_string().contains("max_statement_time"),
            "{engine}: {err}"
        );
    }
}
