//! secret-rotation end to end: the handler in-process against moto's Secrets Manager and the
//! harness's real MariaDB and PostgreSQL, driven with the four rotation events for a token
//! that `RotateSecret` started (moto runs no rotation function itself).

use aws_sdk_secretsmanager::Client;
use harness::log_capture::CapturedLogs;
use harness::{mariadb::MariaDb, moto::Moto, postgres::Postgres, tls::TestCa};
use lambda_runtime::Diagnostic;
use secret_rotation::{RotationError, Rotator, config::RotationConfig};
use serde_json::{Value, json};
use shared::env_config::EnvVars;
use sqlx::Connection;
use std::time::{Duration, Instant};

const STEPS: [&str; 4] = ["createSecret", "setSecret", "testSecret", "finishSecret"];

/// moto with Secrets Manager and a placeholder rotation Lambda (the issue's recipe).
struct Aws {
    moto: Moto,
    secrets: Client,
    lambda_arn: String,
}

impl Aws {
    async fn start() -> Aws {
        let moto = Moto::start().await;
        let http = reqwest::Client::new();
        let post = |path: &str, service: &str, content_type: &str, body: String| {
            http.post(format!("{}{path}", moto.endpoint_url()))
                .header(
                    "Authorization",
                    format!(
                        "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0"
                    ),
                )
                .header("Content-Type", content_type)
                .body(body)
                .send()
        };
        for (path, service, content_type, body) in [
            (
                "/moto-api/config",
                "moto",
                "application/json",
                json!({"lambda": {"use_docker": false}}).to_string(),
            ),
            (
                "/",
                "iam",
                "application/x-www-form-urlencoded",
                "Action=CreateRole&Version=2010-05-08&RoleName=rotation&AssumeRolePolicyDocument=%7B%7D".to_owned(),
            ),
            (
                "/2015-03-31/functions",
                "lambda",
                "application/json",
                // An empty zip: moto needs a function to exist, never runs it.
                json!({"FunctionName": "rotation", "Runtime": "provided.al2023", "Handler": "bootstrap",
                       "Role": "arn:aws:iam::123456789012:role/rotation",
                       "Code": {"ZipFile": "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="}})
                .to_string(),
            ),
        ] {
            let response = post(path, service, content_type, body).await.unwrap();
            assert!(
                response.status().is_success(),
                "{path}: {}",
                response.text().await.unwrap()
            );
        }
        let secrets = Client::new(&moto.sdk_config().await);
        Aws {
            moto,
            secrets,
            lambda_arn: "arn:aws:lambda:us-east-1:123456789012:function:rotation".to_owned(),
        }
    }

    fn rotator(&self, env: &[(&str, &str)]) -> Rotator {
        let mut pairs = vec![("DB_CONNECT_TIMEOUT_SECONDS", "2")];
        pairs.extend_from_slice(env);
        let config = RotationConfig::from_env(&EnvVars::from_pairs(pairs)).unwrap();
        Rotator::new(self.secrets.clone(), config)
    }

    async fn create_secret(&self, name: &str, value: &Value) -> String {
        self.secrets
            .create_secret()
            .name(name)
            .secret_string(value.to_string())
            .send()
            .await
            .unwrap()
            .arn()
            .unwrap()
            .to_owned()
    }

    /// Enables rotation and starts one: the token is an `AWSPENDING` version with no value.
    async fn start_rotation(&self, arn: &str) -> String {
        self.secrets
            .rotate_secret()
            .secret_id(arn)
            .rotation_lambda_arn(&self.lambda_arn)
            .rotation_rules(
                aws_sdk_secretsmanager::types::RotationRulesType::builder()
                    .automatically_after_days(30)
                    .build(),
            )
            .send()
            .await
            .unwrap()
            .version_id()
            .unwrap()
            .to_owned()
    }

    /// What Secrets Manager does after a successful finishSecret (moto does not): the
    /// `AWSPENDING` label leaves the new version, so the next rotation can start.
    async fn end_rotation(&self, arn: &str, token: &str) {
        self.secrets
            .update_secret_version_stage()
            .secret_id(arn)
            .version_stage("AWSPENDING")
            .remove_from_version_id(token)
            .send()
            .await
            .unwrap();
    }

    async fn value(&self, arn: &str, stage: &str) -> (String, Value) {
        let out = self
            .secrets
            .get_secret_value()
            .secret_id(arn)
            .version_stage(stage)
            .send()
            .await
            .unwrap();
        (
            out.version_id().unwrap().to_owned(),
            serde_json::from_str(out.secret_string().unwrap()).unwrap(),
        )
    }

    async fn stages(&self, arn: &str) -> std::collections::HashMap<String, Vec<String>> {
        self.secrets
            .describe_secret()
            .secret_id(arn)
            .send()
            .await
            .unwrap()
            .version_ids_to_stages()
            .cloned()
            .unwrap_or_default()
    }
}

fn event(step: &str, arn: &str, token: &str) -> Value {
    json!({"Step": step, "SecretId": arn, "ClientRequestToken": token})
}

async fn step(
    rotator: &Rotator,
    step: &str,
    arn: &str,
    token: &str,
) -> Result<String, RotationError> {
    let answer = rotator.handle_payload(event(step, arn, token)).await?;
    Ok(answer["outcome"].as_str().unwrap().to_owned())
}

/// Runs the four steps, each twice: the second run of each must change nothing.
async fn rotate_fully(rotator: &Rotator, arn: &str, token: &str, set_outcome: &str) {
    let expected = [
        ("pending-created", "pending-already-exists"),
        (set_outcome, "pending-already-logs-in"),
        ("pending-verified", "pending-verified"),
        ("current-moved", "rotation-already-complete"),
    ];
    for (name, (first, second)) in STEPS.iter().zip(expected) {
        let second = if set_outcome == "nothing-to-set" && *name == "setSecret" {
            "nothing-to-set"
        } else {
            second
        };
        assert_eq!(
            step(rotator, name, arn, token).await.unwrap(),
            first,
            "{name}"
        );
        assert_eq!(
            step(rotator, name, arn, token).await.unwrap(),
            second,
            "{name} again"
        );
    }
}

fn error_type(error: RotationError) -> (String, String) {
    let diagnostic = Diagnostic::from(error);
    (diagnostic.error_type, diagnostic.error_message)
}

async fn maria_logs_in(db: &MariaDb, user: &str, password: &str) -> bool {
    sqlx::MySqlConnection::connect_with(&db.connect_options(user, password))
        .await
        .is_ok()
}

async fn postgres_logs_in(db: &Postgres, user: &str, password: &str) -> bool {
    sqlx::PgConnection::connect_with(&db.connect_options(user, password))
        .await
        .is_ok()
}

fn db_secret(engine: &str, port: u16, user: &str, password: &str) -> Value {
    json!({"engine": engine, "host": "127.0.0.1", "port": port, "username": user,
           "password": password, "ssl": false, "kept": {"owner": "team-a"}})
}

#[tokio::test]
async fn single_user_rotation_on_both_engines_with_hostile_passwords_and_no_password_in_logs() {
    // As main.rs installs it.
    let logs = CapturedLogs::default();
    let _guard = logs.install();
    let (aws, maria, postgres) = tokio::join!(Aws::start(), MariaDb::start(), Postgres::start());
    let maria_admin = maria.admin_pool().await;
    sqlx::query("CREATE USER 'app'@'%' IDENTIFIED BY 'Old-password-1'")
        .execute(&maria_admin)
        .await
        .unwrap();
    let pg_admin = postgres.admin_pool().await;
    sqlx::query("CREATE ROLE app LOGIN PASSWORD 'Old-password-1'")
        .execute(&pg_admin)
        .await
        .unwrap();
    let rotator = aws.rotator(&[]);
    let mut passwords = vec!["Old-password-1".to_owned()];

    for (engine, port) in [("mariadb", maria.port()), ("postgres", postgres.port())] {
        let arn = aws
            .create_secret(
                &format!("{engine}-app"),
                &db_secret(engine, port, "app", "Old-password-1"),
            )
            .await;
        let (old_version, _) = aws.value(&arn, "AWSCURRENT").await;
        let token = aws.start_rotation(&arn).await;
        rotate_fully(&rotator, &arn, &token, "password-changed").await;

        let (current_version, current) = aws.value(&arn, "AWSCURRENT").await;
        let (previous_version, previous) = aws.value(&arn, "AWSPREVIOUS").await;
        assert_eq!(
            (current_version.as_str(), previous_version.as_str()),
            (token.as_str(), old_version.as_str())
        );
        assert_eq!(previous["password"], "Old-password-1");
        assert_eq!(
            current["kept"],
            json!({"owner": "team-a"}),
            "other fields are kept"
        );
        assert_eq!(current["username"], "app");
        let new_password = current["password"].as_str().unwrap().to_owned();
        assert_eq!(new_password.len(), 32);
        assert!(
            !new_password.contains(['/', '@', '"', '\'', '\\']),
            "{new_password}"
        );
        let logs_in = |password: String| {
            let (maria, postgres) = (&maria, &postgres);
            async move {
                match engine {
                    "mariadb" => maria_logs_in(maria, "app", &password).await,
                    _ => postgres_logs_in(postgres, "app", &password).await,
                }
            }
        };
        assert!(
            logs_in(new_password.clone()).await,
            "{engine}: the new password logs in"
        );
        assert!(
            !logs_in("Old-password-1".into()).await,
            "{engine}: the old one is refused"
        );
        passwords.push(new_password.clone());

        // Second rotation with a pending password no generator would make (quotes, backslashes,
        // SQL wildcards), stored as the pending version the way createSecret would.
        aws.end_rotation(&arn, &token).await;
        let token = aws.start_rotation(&arn).await;
        let hostile = r#"q'u"o\t'e\\'; DROP USER app; --%_"#;
        passwords.push(hostile.to_owned());
        let mut pending = current.clone();
        pending["password"] = json!(hostile);
        aws.secrets
            .put_secret_value()
            .secret_id(&arn)
            .client_request_token(&token)
            .secret_string(pending.to_string())
            .version_stages("AWSPENDING")
            .send()
            .await
            .unwrap();
        assert_eq!(
            step(&rotator, "createSecret", &arn, &token).await.unwrap(),
            "pending-already-exists"
        );
        assert_eq!(
            step(&rotator, "setSecret", &arn, &token).await.unwrap(),
            "password-changed"
        );
        assert_eq!(
            step(&rotator, "testSecret", &arn, &token).await.unwrap(),
            "pending-verified"
        );
        assert_eq!(
            step(&rotator, "finishSecret", &arn, &token).await.unwrap(),
            "current-moved"
        );
        assert!(
            logs_in(hostile.to_owned()).await,
            "{engine}: the hostile password was set exactly"
        );
        assert!(!logs_in(new_password).await);
    }
    let text = logs.text();
    assert!(text.contains("rotation step done"), "{text}");
    for password in &passwords {
        assert!(
            !text.contains(password.as_str()),
            "a password appears in the logs: {text}"
        );
    }
    drop(aws.moto);
}

#[tokio::test]
async fn alternating_users_rotation_on_both_engines_swaps_and_swaps_back() {
    let (aws, maria, postgres) = tokio::join!(Aws::start(), MariaDb::start(), Postgres::start());
    let maria_admin = maria.admin_pool().await;
    for sql in [
        "CREATE DATABASE bp",
        "CREATE TABLE bp.t (id int)",
        "CREATE USER 'app'@'%' IDENTIFIED BY 'App-password-1'",
        "GRANT SELECT, INSERT ON bp.* TO 'app'@'%'",
    ] {
        sqlx::query(sql).execute(&maria_admin).await.unwrap();
    }
    let pg_admin = postgres.admin_pool().await;
    for sql in [
        "CREATE TABLE jobs (id int)",
        "INSERT INTO jobs VALUES (7)",
        "CREATE ROLE app LOGIN PASSWORD 'App-password-1'",
        "GRANT SELECT ON jobs TO app",
    ] {
        sqlx::query(sql).execute(&pg_admin).await.unwrap();
    }
    let rotator = aws.rotator(&[]);

    for (engine, port, admin, admin_password) in [
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
        let master_arn = aws
            .create_secret(
                &format!("{engine}-master"),
                &db_secret(engine, port, admin, admin_password),
            )
            .await;
        let mut secret = db_secret(engine, port, "app", "App-password-1");
        secret["masterarn"] = json!(master_arn);
        let arn = aws.create_secret(&format!("{engine}-app"), &secret).await;

        let mut expected_user = "app_clone";
        let mut token = aws.start_rotation(&arn).await;
        for round in 0..2 {
            rotate_fully(&rotator, &arn, &token, "alternate-user-provisioned").await;
            let (_, current) = aws.value(&arn, "AWSCURRENT").await;
            let (_, previous) = aws.value(&arn, "AWSPREVIOUS").await;
            assert_eq!(current["username"], expected_user, "{engine} round {round}");
            assert_eq!(current["masterarn"], json!(master_arn));
            let users = [
                (
                    current["username"].as_str().unwrap(),
                    current["password"].as_str().unwrap(),
                ),
                (
                    previous["username"].as_str().unwrap(),
                    previous["password"].as_str().unwrap(),
                ),
            ];
            for (user, password) in users {
                match engine {
                    "mariadb" => {
                        let mut c = sqlx::MySqlConnection::connect_with(
                            &maria.connect_options(user, password),
                        )
                        .await
                        .unwrap_or_else(|e| panic!("{user} logs in: {e}"));
                        sqlx::query("INSERT INTO bp.t VALUES (1)")
                            .execute(&mut c)
                            .await
                            .unwrap_or_else(|e| {
                                panic!("{user} has the original's privileges: {e}")
                            });
                    }
                    _ => {
                        let mut c = sqlx::PgConnection::connect_with(
                            &postgres.connect_options(user, password),
                        )
                        .await
                        .unwrap_or_else(|e| panic!("{user} logs in: {e}"));
                        let id: i32 = sqlx::query_scalar("SELECT id FROM jobs")
                            .fetch_one(&mut c)
                            .await
                            .unwrap();
                        assert_eq!(id, 7, "{user} has the original's privileges");
                    }
                }
            }
            aws.end_rotation(&arn, &token).await;
            token = aws.start_rotation(&arn).await;
            expected_user = "app";
        }
        if engine == "mariadb" {
            let grants: Vec<String> = sqlx::query_scalar("SHOW GRANTS FOR 'app_clone'@'%'")
                .fetch_all(&maria_admin)
                .await
                .unwrap();
            assert!(
                grants
                    .iter()
                    .any(|g| g.contains("GRANT SELECT, INSERT ON `bp`.* TO `app_clone`@`%`")),
                "{grants:?}"
            );
        }
    }
}

/// Stops a server's process (SIGSTOP) so it accepts no connection, until dropped.
struct Frozen(u32);

impl Frozen {
    fn new(pid: u32) -> Frozen {
        // SAFETY: signals cannot violate memory safety.
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0 as i32, libc::SIGCONT) };
    }
}

#[tokio::test]
async fn a_database_down_during_set_secret_fails_in_seconds_and_a_retry_completes() {
    let (aws, maria, postgres) = tokio::join!(Aws::start(), MariaDb::start(), Postgres::start());
    sqlx::query("CREATE USER 'app'@'%' IDENTIFIED BY 'Old-password-1'")
        .execute(&maria.admin_pool().await)
        .await
        .unwrap();
    sqlx::query("CREATE ROLE app LOGIN PASSWORD 'Old-password-1'")
        .execute(&postgres.admin_pool().await)
        .await
        .unwrap();
    let rotator = aws.rotator(&[]);
    for (engine, port, pid) in [
        ("mariadb", maria.port(), maria.pid()),
        ("postgres", postgres.port(), postgres.pid()),
    ] {
        let arn = aws
            .create_secret(
                &format!("{engine}-app"),
                &db_secret(engine, port, "app", "Old-password-1"),
            )
            .await;
        let token = aws.start_rotation(&arn).await;
        step(&rotator, "createSecret", &arn, &token).await.unwrap();

        let frozen = Frozen::new(pid);
        let started = Instant::now();
        let err = step(&rotator, "setSecret", &arn, &token).await.unwrap_err();
        let took = started.elapsed();
        let (kind, message) = error_type(err);
        assert_eq!(kind, "DatabaseUnreachable", "{message}");
        assert!(message.contains("timed out after 2 s"), "{message}");
        assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
        assert!(took < Duration::from_secs(8), "{engine}: took {took:?}");
        drop(frozen);

        let logs_in = match engine {
            "mariadb" => maria_logs_in(&maria, "app", "Old-password-1").await,
            _ => postgres_logs_in(&postgres, "app", "Old-password-1").await,
        };
        assert!(logs_in, "{engine}: the current password still logs in");
        assert_eq!(
            aws.value(&arn, "AWSCURRENT").await.1["password"],
            "Old-password-1"
        );

        // The same token again, after the database is back.
        for (name, outcome) in STEPS.iter().zip([
            "pending-already-exists",
            "password-changed",
            "pending-verified",
            "current-moved",
        ]) {
            assert_eq!(
                step(&rotator, name, &arn, &token).await.unwrap(),
                outcome,
                "{engine} {name}"
            );
        }
        let new_password = aws.value(&arn, "AWSCURRENT").await.1["password"]
            .as_str()
            .unwrap()
            .to_owned();
        let logs_in = match engine {
            "mariadb" => maria_logs_in(&maria, "app", &new_password).await,
            _ => postgres_logs_in(&postgres, "app", &new_password).await,
        };
        assert!(logs_in, "{engine}: the rotation completed");
    }

    // A port nobody listens on: refused at once, named, not masked by other passwords.
    let closed = harness::process::free_port();
    let arn = aws
        .create_secret(
            "nowhere",
            &db_secret("mariadb", closed, "app", "Old-password-1"),
        )
        .await;
    let token = aws.start_rotation(&arn).await;
    step(&rotator, "createSecret", &arn, &token).await.unwrap();
    let (kind, message) = error_type(step(&rotator, "setSecret", &arn, &token).await.unwrap_err());
    assert_eq!(kind, "DatabaseUnreachable", "{message}");
    assert!(
        message.contains("AWSPENDING") && message.contains(&format!("127.0.0.1:{closed}")),
        "{message}"
    );
}

#[tokio::test]
async fn no_password_works_names_all_three_attempts() {
    let (aws, maria) = tokio::join!(Aws::start(), MariaDb::start());
    sqlx::query("CREATE USER 'app'@'%' IDENTIFIED BY 'Changed-by-hand-1'")
        .execute(&maria.admin_pool().await)
        .await
        .unwrap();
    let rotator = aws.rotator(&[]);
    let arn = aws
        .create_secret(
            "app",
            &db_secret("mariadb", maria.port(), "app", "Old-password-1"),
        )
        .await;
    let token = aws.start_rotation(&arn).await;
    step(&rotator, "createSecret", &arn, &token).await.unwrap();
    let (kind, message) = error_type(step(&rotator, "setSecret", &arn, &token).await.unwrap_err());
    assert_eq!(kind, "NoCredentialsLogIn", "{message}");
    for part in [
        "AWSPENDING: could not connect",
        "AWSCURRENT: could not connect",
        "AWSPREVIOUS: no previous version",
    ] {
        assert!(message.contains(part), "{part}: {message}");
    }
    assert!(message.contains("Access denied"), "{message}");
    assert!(!message.contains("Old-password-1"), "{message}");
}

#[tokio::test]
async fn generic_secrets_leftover_pending_refusals_and_malformed_secrets() {
    let aws = Aws::start().await;
    let rotator = aws.rotator(&[("PASSWORD_LENGTH", "40"), ("EXCLUDE_CHARACTERS", "abcdef")]);

    // engine: generic rotates `password` alone, keeping the other fields.
    let arn = aws
        .create_secret(
            "app-keys",
            &json!({"engine": "generic", "password": "k1", "issuer": "bp"}),
        )
        .await;
    let token = aws.start_rotation(&arn).await;
    rotate_fully(&rotator, &arn, &token, "nothing-to-set").await;
    let (version, current) = aws.value(&arn, "AWSCURRENT").await;
    assert_eq!(version, token);
    assert_eq!(current["issuer"], "bp");
    let key = current["password"].as_str().unwrap();
    assert_eq!(key.len(), 40);
    assert!(!key.contains(['a', 'b', 'c', 'd', 'e', 'f']), "{key}");
    assert_eq!(aws.value(&arn, "AWSPREVIOUS").await.1["password"], "k1");

    // A rotation aborted after createSecret: its retry keeps the stored password.
    aws.end_rotation(&arn, &token).await;
    let aborted = aws.start_rotation(&arn).await;
    step(&rotator, "createSecret", &arn, &aborted)
        .await
        .unwrap();
    let (_, first) = aws.value(&arn, "AWSPENDING").await;
    assert_eq!(
        step(&rotator, "createSecret", &arn, &aborted)
            .await
            .unwrap(),
        "pending-already-exists"
    );
    assert_eq!(aws.value(&arn, "AWSPENDING").await.1, first);
    // The leftover is cleared (AWS: remove AWSPENDING) and a new rotation starts: the old
    // token is refused, the new one gets a fresh password.
    aws.end_rotation(&arn, &aborted).await;
    let (kind, message) = error_type(
        step(&rotator, "setSecret", &arn, &aborted)
            .await
            .unwrap_err(),
    );
    assert_eq!(kind, "TokenNotPending", "{message}");
    assert!(message.contains("is not AWSPENDING"), "{message}");
    let fresh = aws.start_rotation(&arn).await;
    rotate_fully(&rotator, &arn, &fresh, "nothing-to-set").await;
    assert_ne!(
        aws.value(&arn, "AWSCURRENT").await.1["password"],
        first["password"]
    );

    // An unknown token.
    let (kind, message) = error_type(
        step(
            &rotator,
            "createSecret",
            &arn,
            "00000000-0000-0000-0000-000000000000",
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(kind, "UnknownRotationToken", "{message}");
    assert!(message.contains("is not a version of secret"), "{message}");

    // Rotation not enabled.
    let plain = aws
        .create_secret(
            "not-rotated",
            &json!({"engine": "generic", "password": "x"}),
        )
        .await;
    let (version, _) = aws.value(&plain, "AWSCURRENT").await;
    let (kind, message) = error_type(
        step(&rotator, "createSecret", &plain, &version)
            .await
            .unwrap_err(),
    );
    assert_eq!(kind, "RotationNotEnabled", "{message}");

    // Malformed secrets: the reason, never the value; nothing is written.
    for (name, value, reason) in [
        (
            "no-host",
            json!({"engine": "mariadb", "port": 3306, "username": "u", "password": "Secret-77"}),
            "missing field `host`",
        ),
        (
            "number-password",
            json!({"engine": "mariadb", "host": "h", "port": 3306, "username": "u", "password": 987654321}),
            "`password` must be a string",
        ),
        (
            "oracle",
            json!({"engine": "oracle", "host": "h", "port": 1521, "username": "u", "password": "Secret-77"}),
            "unsupported database engine `oracle`",
        ),
    ] {
        let arn = aws.create_secret(name, &value).await;
        let token = aws.start_rotation(&arn).await;
        let (kind, message) = error_type(
            step(&rotator, "createSecret", &arn, &token)
                .await
                .unwrap_err(),
        );
        assert_eq!(kind, "MalformedSecret", "{message}");
        assert!(
            message.contains(reason) && message.contains("AWSCURRENT"),
            "{message}"
        );
        assert!(
            !message.contains("Secret-77") && !message.contains("987654321"),
            "{message}"
        );
        assert_eq!(
            aws.stages(&arn).await[&token],
            ["AWSPENDING"],
            "nothing written"
        );
        assert!(
            aws.secrets
                .get_secret_value()
                .secret_id(&arn)
                .version_id(&token)
                .version_stage("AWSPENDING")
                .send()
                .await
                .is_err(),
            "the pending version still has no value"
        );
    }

    // A malformed event.
    let (kind, _) = error_type(
        rotator
            .handle_payload(json!({"Step": "setSecret"}))
            .await
            .unwrap_err(),
    );
    assert_eq!(kind, "InvalidRotationEvent");
}

#[tokio::test]
async fn secrets_manager_unreachable_is_a_retryable_error() {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .empty_test_environment()
        .endpoint_url(format!(
            "http://127.0.0.1:{}",
            harness::process::free_port()
        ))
        .region(aws_config::Region::new("us-east-1"))
        .test_credentials()
        .load()
        .await;
    let rotator = Rotator::new(
        Client::new(&config),
        RotationConfig::from_env(&EnvVars::from_pairs::<&str, &str>([])).unwrap(),
    );
    let err = rotator
        .handle_payload(event(
            "createSecret",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:x",
            "t",
        ))
        .await
        .unwrap_err();
    let (kind, message) = error_type(err);
    assert_eq!(kind, "RetryableAwsError", "{message}");
    assert!(message.contains("DescribeSecret"), "{message}");
}

#[tokio::test]
async fn tls_only_mariadb_rotates_over_verified_tls_and_never_falls_back() {
    let (aws, maria) = tokio::join!(Aws::start(), MariaDb::start_tls_only());
    let admin = maria.admin_pool().await;
    for sql in [
        "CREATE DATABASE bp",
        "CREATE USER 'app'@'%' IDENTIFIED BY 'App-password-1' REQUIRE SSL",
        "GRANT SELECT ON bp.* TO 'app'@'%'",
    ] {
        sqlx::query(sql).execute(&admin).await.unwrap();
    }
    let ca = maria.ca_pem_path().unwrap().to_str().unwrap().to_owned();
    let rotator = aws.rotator(&[("DB_CA_BUNDLE", ca.as_str())]);
    let secret = |user: &str, password: &str| {
        // No `ssl` field: TLS required and verified.
        json!({"engine": "mariadb", "host": "127.0.0.1", "port": maria.port(), "username": user, "password": password})
    };
    let master_arn = aws
        .create_secret(
            "master",
            &secret(maria.admin_user(), maria.admin_password()),
        )
        .await;
    let mut app = secret("app", "App-password-1");
    app["masterarn"] = json!(master_arn);
    let arn = aws.create_secret("app", &app).await;

    // A CA that did not sign the server's certificate: the step fails, nothing is changed.
    let other_ca = TestCa::new();
    let wrong = aws.rotator(&[("DB_CA_BUNDLE", other_ca.ca_pem_path().to_str().unwrap())]);
    let token = aws.start_rotation(&arn).await;
    step(&wrong, "createSecret", &arn, &token).await.unwrap();
    let (kind, message) = error_type(step(&wrong, "setSecret", &arn, &token).await.unwrap_err());
    assert_eq!(kind, "DatabaseUnreachable", "{message}");
    assert!(message.contains("over verified TLS"), "{message}");
    let clone_exists: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM mysql.user WHERE User = 'app_clone'")
            .fetch_one(&admin)
            .await
            .unwrap();
    assert_eq!(clone_exists, 0, "nothing was done without verified TLS");

    // The right CA: the same token completes, over verified TLS.
    for (name, outcome) in STEPS.iter().zip([
        "pending-already-exists",
        "alternate-user-provisioned",
        "pending-verified",
        "current-moved",
    ]) {
        assert_eq!(
            step(&rotator, name, &arn, &token).await.unwrap(),
            outcome,
            "{name}"
        );
    }
    let (_, current) = aws.value(&arn, "AWSCURRENT").await;
    assert_eq!(current["username"], "app_clone");
    let grants: Vec<String> = sqlx::query_scalar("SHOW GRANTS FOR 'app_clone'@'%'")
        .fetch_all(&admin)
        .await
        .unwrap();
    let grants = grants.join("\n");
    assert!(
        grants.contains("REQUIRE SSL"),
        "REQUIRE SSL is kept: {grants}"
    );
    assert!(
        grants.contains("GRANT SELECT ON `bp`.* TO `app_clone`@`%`"),
        "{grants}"
    );
    let mut c = sqlx::MySqlConnection::connect_with(
        &maria.connect_options("app_clone", current["password"].as_str().unwrap()),
    )
    .await
    .unwrap();
    let (_, cipher): (String, String) = sqlx::query_as("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert!(!cipher.is_empty(), "the clone is served over TLS");
}

#[tokio::test]
async fn alternating_users_refuse_to_use_the_master_when_the_current_login_fails() {
    let (aws, postgres) = tokio::join!(Aws::start(), Postgres::start());
    sqlx::query("CREATE ROLE app LOGIN PASSWORD 'Changed-by-hand-1'")
        .execute(&postgres.admin_pool().await)
        .await
        .unwrap();
    let rotator = aws.rotator(&[]);
    let master_arn = aws
        .create_secret(
            "master",
            &db_secret(
                "postgres",
                postgres.port(),
                postgres.admin_user(),
                postgres.admin_password(),
            ),
        )
        .await;
    let mut secret = db_secret("postgres", postgres.port(), "app", "Not-the-password-1");
    secret["masterarn"] = json!(master_arn);
    let arn = aws.create_secret("app", &secret).await;
    let token = aws.start_rotation(&arn).await;
    step(&rotator, "createSecret", &arn, &token).await.unwrap();
    let (kind, message) = error_type(step(&rotator, "setSecret", &arn, &token).await.unwrap_err());
    assert_eq!(kind, "CurrentCredentialsRefused", "{message}");
    assert!(message.contains("confused-deputy"), "{message}");
    let clones: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM pg_roles WHERE rolname = 'app_clone'")
            .fetch_one(&postgres.admin_pool().await)
            .await
            .unwrap();
    assert_eq!(clones, 0, "the master did nothing");
}

/// Non-default server settings (MariaDB: `NO_BACKSLASH_ESCAPES` in the global `sql_mode`;
/// PostgreSQL: `standard_conforming_strings=off` and every statement logged): a pending
/// password with quotes, backslashes and `$` is set exactly, and PostgreSQL's statement log
/// gets a SCRAM verifier, never the password.
#[tokio::test]
async fn hostile_passwords_rotate_exactly_whatever_the_server_settings_and_never_reach_the_server_log()
 {
    let logs = CapturedLogs::default();
    let _guard = logs.install();
    let (aws, maria, postgres) = tokio::join!(
        Aws::start(),
        MariaDb::start(),
        Postgres::start_with_settings(&["standard_conforming_strings=off", "log_statement=all"])
    );
    let maria_admin = maria.admin_pool().await;
    for sql in [
        "SET GLOBAL sql_mode = CONCAT_WS(',', NULLIF(@@GLOBAL.sql_mode, ''), 'NO_BACKSLASH_ESCAPES')",
        "CREATE USER 'app'@'%' IDENTIFIED BY 'Old-password-1'",
    ] {
        sqlx::query(sql).execute(&maria_admin).await.unwrap();
    }
    let pg_admin = postgres.admin_pool().await;
    sqlx::query("CREATE ROLE app LOGIN PASSWORD 'Old-password-1'")
        .execute(&pg_admin)
        .await
        .unwrap();
    let rotator = aws.rotator(&[]);
    let hostile = r#"it's "q" \back\\slash $1 $$ end\"#;
    for (engine, port) in [("mariadb", maria.port()), ("postgres", postgres.port())] {
        let arn = aws
            .create_secret(
                &format!("{engine}-app"),
                &db_secret(engine, port, "app", "Old-password-1"),
            )
            .await;
        let (_, current) = aws.value(&arn, "AWSCURRENT").await;
        let token = aws.start_rotation(&arn).await;
        let mut pending = current.clone();
        pending["password"] = json!(hostile);
        aws.secrets
            .put_secret_value()
            .secret_id(&arn)
            .client_request_token(&token)
            .secret_string(pending.to_string())
            .version_stages("AWSPENDING")
            .send()
            .await
            .unwrap();
        for (name, outcome) in [
            ("setSecret", "password-changed"),
            ("testSecret", "pending-verified"),
            ("finishSecret", "current-moved"),
        ] {
            assert_eq!(
                step(&rotator, name, &arn, &token).await.unwrap(),
                outcome,
                "{engine} {name}"
            );
        }
        let logs_in = match engine {
            "mariadb" => maria_logs_in(&maria, "app", hostile).await,
            _ => postgres_logs_in(&postgres, "app", hostile).await,
        };
        assert!(logs_in, "{engine}: the password was set exactly");
    }
    let server_log = postgres.server_log();
    assert!(
        server_log.contains("ALTER ROLE CURRENT_USER WITH PASSWORD E'SCRAM-SHA-256$4096:"),
        "log_statement=all logged the change, with a verifier: {server_log}"
    );
    for piece in [hostile, "slash $1 $$ end"] {
        assert!(
            !server_log.contains(piece),
            "the password in PostgreSQL's log: {server_log}"
        );
        assert!(!logs.text().contains(piece), "the password in the logs");
    }
}
