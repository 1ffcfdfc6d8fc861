//! rds-init (`Custom::TenantDatabases`) end to end: the function in-process, its secrets in
//! moto, real MariaDB and PostgreSQL servers, and its answers PUT over real HTTP to a
//! recording stand-in for CloudFormation's pre-signed URL.

use harness::log_capture::CapturedLogs;
use harness::tenant_databases::{Server, TenantDatabasesUnderTest, query_strings};
use harness::{mariadb::MariaDb, postgres::Postgres};
use serde_json::{Value, json};
use shared::database::DbConnection;
use std::ops::Deref;
use std::time::{Duration, Instant};

const APP_PASSWORD: &str = "app-Pa55word-7f3a9c";
const RO_PASSWORD: &str = "ro-Pa55word-2b8d4e";
const STACK_ID: &str = "arn:aws:cloudformation:us-east-1:123456789012:stack/orchestrator/1a2b";

/// The function under test, with a second (readonly) user's secret.
struct Fixture {
    under_test: TenantDatabasesUnderTest,
    ro_arn: String,
}

impl Deref for Fixture {
    type Target = TenantDatabasesUnderTest;

    fn deref(&self) -> &TenantDatabasesUnderTest {
        &self.under_test
    }
}

impl Fixture {
    async fn new(server: Server) -> Fixture {
        let under_test = TenantDatabasesUnderTest::start(server, APP_PASSWORD).await;
        let ro_arn = under_test
            .create_secret(
                "reporting",
                &json!({"username": "reporting", "password": RO_PASSWORD}),
            )
            .await;
        Fixture { under_test, ro_arn }
    }

    fn props(&self, databases: &[&str], users: Value) -> Value {
        let extensions: &[&str] = if self.server.is_postgres() {
            &["pg_trgm", "citext"]
        } else {
            &[]
        };
        json!({
            "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:rds-init",
            "MasterSecretArn": self.master_arn,
            "Databases": databases,
            "Extensions": extensions,
            "Users": users,
        })
    }

    fn app(&self, databases: &[&str], access: &str) -> Value {
        json!({"SecretArn": self.app_arn, "Databases": databases, "Access": access})
    }

    fn reporting(&self, databases: &[&str]) -> Value {
        json!({"SecretArn": self.ro_arn, "Databases": databases, "Access": "readonly"})
    }

    /// Invokes the function with a `left` Lambda deadline and returns the body it PUT.
    async fn invoke_within(
        &self,
        request_type: &str,
        props: Value,
        extra: Value,
        left: Duration,
    ) -> Value {
        self.under_test
            .invoke(request_type, STACK_ID, props, extra, left)
            .await
    }

    async fn invoke(&self, request_type: &str, props: Value, extra: Value) -> Value {
        self.invoke_within(request_type, props, extra, Duration::from_secs(60))
            .await
    }

    /// An Update whose properties did not change (what a stack update that changes other
    /// resources, or a changed secret, sends).
    async fn update_unchanged(&self, props: &Value) -> Value {
        let extra =
            json!({"PhysicalResourceId": self.physical_id(), "OldResourceProperties": props});
        self.invoke("Update", props.clone(), extra).await
    }
}

fn assert_success(body: &Value) {
    assert_eq!(body["Status"], "SUCCESS", "{body:#}");
}

fn assert_failed_with(body: &Value, needle: &str) {
    assert_eq!(body["Status"], "FAILED", "{body:#}");
    let reason = body["Reason"].as_str().unwrap();
    assert!(reason.contains(needle), "expected {needle:?} in: {reason}");
}

async fn try_execute(connection: &mut DbConnection, sql: &str) -> Result<(), String> {
    connection
        .execute(sql.to_owned())
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The acceptance list for Create, on either engine: run twice, check the resulting state.
async fn create_twice_gives_working_users_and_the_same_state(server: Server) {
    let f = Fixture::new(server).await;
    let props = f.props(
        &["bp", "tenant_pool_1"],
        json!([
            f.app(&["bp", "tenant_pool_1"], "readwrite"),
            f.reporting(&["tenant_pool_1"])
        ]),
    );
    let body = f.invoke("Create", props.clone(), json!({})).await;
    assert_success(&body);
    assert_eq!(body["PhysicalResourceId"], f.physical_id());
    assert_eq!(body["Data"]["Endpoint"], "127.0.0.1");
    assert_eq!(body["Data"]["Port"], f.server.port().to_string());
    assert_eq!(body["Data"]["Databases"], "bp,tenant_pool_1");

    // The app user logs in with its secret's password and can create and fill a table.
    let mut app = f
        .server
        .login("app", APP_PASSWORD, "tenant_pool_1")
        .await
        .unwrap();
    try_execute(
        &mut app,
        "CREATE TABLE jobs (id INT PRIMARY KEY, name VARCHAR(20))",
    )
    .await
    .unwrap();
    try_execute(&mut app, "INSERT INTO jobs VALUES (1, 'first')")
        .await
        .unwrap();
    // The readonly user reads the table created after its grant, and cannot write or create.
    let mut ro = f
        .server
        .login("reporting", RO_PASSWORD, "tenant_pool_1")
        .await
        .unwrap();
    let names = query_strings(&mut ro, "SELECT name FROM jobs").await;
    assert_eq!(names, ["first"]);
    let err = try_execute(&mut ro, "CREATE TABLE nope (id INT)")
        .await
        .unwrap_err();
    assert!(err.to_lowercase().contains("denied"), "{err}");
    let err = try_execute(&mut ro, "INSERT INTO jobs VALUES (2, 'x')")
        .await
        .unwrap_err();
    assert!(err.to_lowercase().contains("denied"), "{err}");
    // Readonly has no access to databases it was not given.
    if !f.server.is_postgres() {
        assert!(
            f.server
                .login("reporting", RO_PASSWORD, "bp")
                .await
                .is_err()
        );
    }
    drop((app, ro));

    if f.server.is_postgres() {
        for db in ["bp", "tenant_pool_1"] {
            let (user, password) = f.server.admin();
            let mut c = f.server.login(user, &password, db).await.unwrap();
            let mut extensions =
                query_strings(&mut c, "SELECT extname::text FROM pg_extension").await;
            extensions.sort();
            assert_eq!(extensions, ["citext", "pg_trgm", "plpgsql"], "{db}");
        }
    } else {
        let mut c = f.server.admin_connection().await;
        let charsets = query_strings(
            &mut c,
            "SELECT CAST(CONCAT(DEFAULT_CHARACTER_SET_NAME, '/', DEFAULT_COLLATION_NAME) AS CHAR) \
             FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN ('bp', 'tenant_pool_1')",
        )
        .await;
        assert_eq!(charsets, ["utf8mb4/utf8mb4_unicode_ci"; 2]);
    }

    // The same Create again: SUCCESS, nothing lost, logins unchanged.
    let databases_before = f.server.databases().await;
    let body = f.invoke("Create", props, json!({})).await;
    assert_success(&body);
    assert_eq!(body["PhysicalResourceId"], f.physical_id());
    assert_eq!(f.server.databases().await, databases_before);
    let mut app = f
        .server
        .login("app", APP_PASSWORD, "tenant_pool_1")
        .await
        .unwrap();
    assert_eq!(
        query_strings(&mut app, "SELECT name FROM jobs").await,
        ["first"]
    );
}

#[tokio::test]
async fn mariadb_create_twice_gives_working_users_and_the_same_state() {
    create_twice_gives_working_users_and_the_same_state(Server::Maria(MariaDb::start().await))
        .await;
}

#[tokio::test]
async fn postgres_create_twice_gives_working_users_and_the_same_state() {
    create_twice_gives_working_users_and_the_same_state(Server::Pg(Postgres::start().await)).await;
}

#[tokio::test]
async fn tls_only_servers_are_provisioned_over_verified_tls() {
    let (maria, pg) = tokio::join!(MariaDb::start_tls_only(), Postgres::start_tls_only());
    for server in [Server::Maria(maria), Server::Pg(pg)] {
        let f = Fixture::new(server).await;
        let props = f.props(&["bp"], json!([f.app(&["bp"], "readwrite")]));
        let body = f.invoke("Create", props, json!({})).await;
        assert_success(&body);
        let mut app = f.server.login("app", APP_PASSWORD, "bp").await.unwrap();
        try_execute(&mut app, "CREATE TABLE t (id INT)")
            .await
            .unwrap();
    }
}

/// Update adds a database and a user, changes access, keeps what was removed.
async fn update_adds_changes_access_and_keeps_removed(server: Server) {
    let f = Fixture::new(server).await;
    let old = f.props(
        &["bp", "tenant_pool_1"],
        json!([f.app(&["bp", "tenant_pool_1"], "readwrite")]),
    );
    assert_success(&f.invoke("Create", old.clone(), json!({})).await);

    // Add tenant_pool_2 and the reporting user.
    let added = f.props(
        &["bp", "tenant_pool_1", "tenant_pool_2"],
        json!([
            f.app(&["bp", "tenant_pool_1", "tenant_pool_2"], "readwrite"),
            f.reporting(&["tenant_pool_2"])
        ]),
    );
    let extra = json!({"PhysicalResourceId": f.physical_id(), "OldResourceProperties": old});
    let body = f.invoke("Update", added.clone(), extra).await;
    assert_success(&body);
    assert_eq!(
        body["PhysicalResourceId"],
        f.physical_id(),
        "same endpoint, same id"
    );
    assert_eq!(body["Data"]["Databases"], "bp,tenant_pool_1,tenant_pool_2");
    let mut app = f
        .server
        .login("app", APP_PASSWORD, "tenant_pool_2")
        .await
        .unwrap();
    try_execute(&mut app, "CREATE TABLE t (id INT)")
        .await
        .unwrap();
    f.server
        .login("reporting", RO_PASSWORD, "tenant_pool_2")
        .await
        .unwrap();

    // Remove tenant_pool_1 from the list and make app readonly on bp: the database stays.
    let removed = f.props(
        &["bp", "tenant_pool_2"],
        json!([
            f.app(&["bp", "tenant_pool_2"], "readonly"),
            f.reporting(&["tenant_pool_2"])
        ]),
    );
    let extra = json!({"PhysicalResourceId": f.physical_id(), "OldResourceProperties": added});
    let body = f.invoke("Update", removed, extra).await;
    assert_success(&body);
    let reason = body["Reason"].as_str().unwrap();
    assert!(
        reason.contains("`tenant_pool_1`") && reason.contains("kept"),
        "{reason}"
    );
    assert!(
        f.server
            .databases()
            .await
            .contains(&"tenant_pool_1".to_owned())
    );
    // The access change applies: app can no longer create tables in bp.
    let mut app = f.server.login("app", APP_PASSWORD, "bp").await.unwrap();
    let err = try_execute(&mut app, "CREATE TABLE t2 (id INT)")
        .await
        .unwrap_err();
    assert!(err.to_lowercase().contains("denied"), "{err}");
}

#[tokio::test]
async fn mariadb_update_adds_changes_access_and_keeps_removed() {
    update_adds_changes_access_and_keeps_removed(Server::Maria(MariaDb::start().await)).await;
}

#[tokio::test]
async fn postgres_update_adds_changes_access_and_keeps_removed() {
    update_adds_changes_access_and_keeps_removed(Server::Pg(Postgres::start().await)).await;
}

/// On RDS the PostgreSQL master is not a superuser: a revoke or downgrade must still reach the
/// tables the user created itself (the master can revoke there only as a member of the user).
#[tokio::test]
async fn postgres_revokes_and_downgrades_reach_the_users_own_tables_with_an_rds_like_master() {
    let f = Fixture::new(Server::Pg(Postgres::start().await)).await;
    let master = f
        .server
        .make_rds_like_master("rds_master", "master-Pa55word-3e5d")
        .await;
    let master_arn = f.create_secret("rds-master", &master).await;
    let props = |databases: &[&str], access: &str| {
        let mut props = f.props(&["bp", "tenant_pool_1"], json!([f.app(databases, access)]));
        props["MasterSecretArn"] = json!(master_arn);
        props["Extensions"] = json!([]);
        props
    };
    let created = props(&["bp", "tenant_pool_1"], "readwrite");
    assert_success(&f.invoke("Create", created.clone(), json!({})).await);
    for db in ["bp", "tenant_pool_1"] {
        let mut app = f.server.login("app", APP_PASSWORD, db).await.unwrap();
        try_execute(&mut app, "CREATE TABLE own (id INT)")
            .await
            .unwrap();
    }

    let downgraded = props(&["bp"], "readonly");
    let extra = json!({"PhysicalResourceId": f.physical_id(), "OldResourceProperties": created});
    assert_success(&f.invoke("Update", downgraded, extra).await);
    for db in ["bp", "tenant_pool_1"] {
        let mut app = f.server.login("app", APP_PASSWORD, db).await.unwrap();
        let err = try_execute(&mut app, "INSERT INTO own VALUES (1)")
            .await
            .unwrap_err();
        assert!(err.contains("permission denied"), "{db}: {err}");
    }
    let mut app = f.server.login("app", APP_PASSWORD, "bp").await.unwrap();
    try_execute(&mut app, "SELECT * FROM own").await.unwrap();
}

/// Delete keeps by default; RemoveOnDelete drops users and databases (PostgreSQL: with a
/// session still open on the database).
async fn delete_keeps_unless_told_to_remove(server: Server) {
    let f = Fixture::new(server).await;
    let props = f.props(
        &["bp", "tenant_pool_1"],
        json!([f.app(&["bp", "tenant_pool_1"], "readwrite")]),
    );
    assert_success(&f.invoke("Create", props.clone(), json!({})).await);

    let body = f
        .invoke(
            "Delete",
            props.clone(),
            json!({"PhysicalResourceId": f.physical_id()}),
        )
        .await;
    assert_success(&body);
    assert!(f.server.databases().await.contains(&"bp".to_owned()));
    assert!(f.server.users().await.contains(&"app".to_owned()));

    let _open_session = f.server.login("app", APP_PASSWORD, "bp").await.unwrap();
    let mut remove = props;
    remove["RemoveOnDelete"] = json!("true");
    let body = f
        .invoke(
            "Delete",
            remove,
            json!({"PhysicalResourceId": f.physical_id()}),
        )
        .await;
    assert_success(&body);
    let databases = f.server.databases().await;
    assert!(
        !databases.iter().any(|d| d == "bp" || d == "tenant_pool_1"),
        "{databases:?}"
    );
    assert!(!f.server.users().await.contains(&"app".to_owned()));
}

#[tokio::test]
async fn mariadb_delete_keeps_unless_told_to_remove() {
    delete_keeps_unless_told_to_remove(Server::Maria(MariaDb::start().await)).await;
}

#[tokio::test]
async fn postgres_delete_keeps_unless_told_to_remove() {
    delete_keeps_unless_told_to_remove(Server::Pg(Postgres::start().await)).await;
}

/// Another session holds `bp`'s catalog row in an open transaction, so rds-init's
/// `GRANT … ON DATABASE bp` waits for a lock. The session's `lock_timeout` (half the 10 s
/// statement timeout) ends the wait as a lock timeout, before the statement timeout would.
#[tokio::test]
async fn postgres_a_grant_stuck_behind_a_lock_fails_with_a_lock_timeout() {
    let f = Fixture::new(Server::Pg(Postgres::start().await)).await;
    let props = f.props(&["bp"], json!([f.app(&["bp"], "readwrite")]));
    assert_success(&f.invoke("Create", props.clone(), json!({})).await);
    let mut holder = f.server.admin_connection().await;
    try_execute(&mut holder, "BEGIN").await.unwrap();
    try_execute(&mut holder, "ALTER DATABASE bp CONNECTION LIMIT 50")
        .await
        .unwrap();

    let started = Instant::now();
    let body = f.update_unchanged(&props).await;
    let took = started.elapsed();
    assert_failed_with(&body, "grant readwrite on database `bp` to user `app`");
    assert_failed_with(&body, "canceling statement due to lock timeout");
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(9),
        "{took:?}"
    );
    try_execute(&mut holder, "ROLLBACK").await.unwrap();
}

#[tokio::test]
async fn delete_after_a_failed_create_succeeds_and_touches_nothing() {
    let f = Fixture::new(Server::Maria(MariaDb::start().await)).await;
    let mut props = f.props(&["bp", "x; DROP DATABASE bp"], json!([]));
    let body = f.invoke("Create", props.clone(), json!({})).await;
    assert_failed_with(&body, "x; DROP DATABASE bp");
    let failed_id = body["PhysicalResourceId"].as_str().unwrap().to_owned();

    props["RemoveOnDelete"] = json!("true");
    props["Databases"] = json!(["mysql"]);
    f.moto.clear_recording().await;
    let body = f
        .invoke("Delete", props, json!({"PhysicalResourceId": failed_id}))
        .await;
    assert_success(&body);
    assert!(
        f.moto.recorded_actions().is_empty(),
        "no secret read: {:?}",
        f.moto.recorded_actions()
    );
    assert!(f.server.databases().await.contains(&"mysql".to_owned()));
}

#[tokio::test]
async fn hostile_identifiers_fail_before_any_sql_or_secret_read() {
    let (maria, pg) = tokio::join!(MariaDb::start(), Postgres::start());
    for server in [Server::Maria(maria), Server::Pg(pg)] {
        let f = Fixture::new(server).await;
        assert_success(
            &f.invoke("Create", f.props(&["bp"], json!([])), json!({}))
                .await,
        );
        let before = f.server.databases().await;
        for hostile in [
            "x; DROP DATABASE bp",
            "a'b",
            "a`b",
            "a\"b",
            &"a".repeat(65),
            "",
        ] {
            f.moto.clear_recording().await;
            let body = f
                .invoke(
                    "Create",
                    f.props(&["new_db", hostile], json!([])),
                    json!({}),
                )
                .await;
            assert_failed_with(&body, &format!("database name {hostile:?}"));
            assert!(
                f.moto.recorded_actions().is_empty(),
                "{hostile}: secrets were read"
            );
        }
        // A hostile user name arrives in a secret: refused after reading it, before any SQL.
        let evil = f
            .create_secret(
                "evil",
                &json!({"username": "u'@'%'; DROP USER admin; --", "password": "x"}),
            )
            .await;
        let body = f
            .invoke(
                "Create",
                f.props(
                    &["new_db"],
                    json!([{"SecretArn": evil, "Databases": ["new_db"], "Access": "readwrite"}]),
                ),
                json!({}),
            )
            .await;
        assert_failed_with(&body, "user name \"u'@'%'; DROP USER admin; --\"");
        assert_eq!(f.server.databases().await, before, "nothing was created");
    }
}

#[tokio::test]
async fn missing_or_malformed_secrets_fail_with_a_clear_reason() {
    let f = Fixture::new(Server::Pg(Postgres::start().await)).await;
    let mut props = f.props(&["bp"], json!([]));
    props["MasterSecretArn"] =
        json!("arn:aws:secretsmanager:us-east-1:123456789012:secret:gone-AbCdEf");
    let body = f.invoke("Create", props, json!({})).await;
    assert_failed_with(
        &body,
        "could not read secret arn:aws:secretsmanager:us-east-1:123456789012:secret:gone-AbCdEf",
    );
    assert_failed_with(&body, "ResourceNotFoundException");

    let no_password = f
        .create_secret("no-password", &json!({"username": "app2"}))
        .await;
    let body = f
        .invoke(
            "Create",
            f.props(
                &["bp"],
                json!([{"SecretArn": no_password, "Databases": ["bp"], "Access": "readwrite"}]),
            ),
            json!({}),
        )
        .await;
    assert_failed_with(
        &body,
        &format!("secret {no_password} is malformed: missing field `password`"),
    );

    let not_json = f
        .create_secret("not-json", &json!("hunter2-not-json"))
        .await;
    let mut props = f.props(&["bp"], json!([]));
    props["MasterSecretArn"] = json!(not_json);
    let body = f.invoke("Create", props, json!({})).await;
    assert_failed_with(&body, "is malformed");
    assert!(!body.to_string().contains("hunter2"), "{body}");
    assert!(!f.server.databases().await.contains(&"bp".to_owned()));
}

#[tokio::test]
async fn an_unknown_extension_fails_naming_it() {
    let f = Fixture::new(Server::Pg(Postgres::start().await)).await;
    let mut props = f.props(&["bp"], json!([]));
    props["Extensions"] = json!(["vector_not_installed"]);
    let body = f.invoke("Create", props, json!({})).await;
    assert_failed_with(&body, "extension `vector_not_installed` is not available");
    assert!(
        !f.server.databases().await.contains(&"bp".to_owned()),
        "nothing created"
    );
}

#[tokio::test]
async fn an_unreachable_database_fails_before_the_deadline_with_the_connection_error() {
    let server = MariaDb::start().await;
    let f = Fixture::new(Server::Maria(server)).await;
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (admin, password) = f.server.admin();
    let mut secret = f.server.secret(admin, &password);
    secret["port"] = json!(closed);
    let arn = f.create_secret("unreachable", &secret).await;
    let mut props = f.props(&["bp"], json!([]));
    props["MasterSecretArn"] = json!(arn);
    let started = Instant::now();
    let body = f
        .invoke_within("Create", props, json!({}), Duration::from_secs(9))
        .await;
    let took = started.elapsed();
    assert_failed_with(&body, "gave up connecting after");
    assert_failed_with(&body, &format!("127.0.0.1:{closed}"));
    assert!(
        body["Reason"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("refused"),
        "{body}"
    );
    // Retried until shortly before its answer-by point (6 s here: the Lambda deadline minus
    // a third), then answered FAILED itself rather than being cut off by the timeout guard.
    assert!(
        took > Duration::from_secs(4) && took < Duration::from_secs(9),
        "{took:?}"
    );
    assert!(
        !body["Reason"]
            .as_str()
            .unwrap()
            .contains("timed out: the handler"),
        "{body}"
    );
}

#[tokio::test]
async fn a_wrong_master_password_is_not_retried_until_the_deadline() {
    let f = Fixture::new(Server::Pg(Postgres::start().await)).await;
    let (admin, _) = f.server.admin();
    let arn = f
        .create_secret("wrong", &f.server.secret(admin, "not-the-password"))
        .await;
    let mut props = f.props(&["bp"], json!([]));
    props["MasterSecretArn"] = json!(arn);
    let started = Instant::now();
    let body = f.invoke("Create", props, json!({})).await;
    assert_failed_with(&body, "gave up connecting after 3 attempt(s)");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// The secret is the source of truth: a password changed in the secret is applied on the
/// next run; a password that still logs in is left alone.
async fn a_changed_secret_password_is_applied(server: Server) {
    let f = Fixture::new(server).await;
    let props = f.props(&["bp"], json!([f.app(&["bp"], "readwrite")]));
    assert_success(&f.invoke("Create", props.clone(), json!({})).await);
    f.secrets
        .put_secret_value()
        .secret_id(&f.app_arn)
        .secret_string(json!({"username": "app", "password": "n3w-Pa55word-9e1f"}).to_string())
        .send()
        .await
        .unwrap();
    let body = f.update_unchanged(&props).await;
    assert_success(&body);
    f.server
        .login("app", "n3w-Pa55word-9e1f", "bp")
        .await
        .unwrap();
    assert!(f.server.login("app", APP_PASSWORD, "bp").await.is_err());

    // Mid-rotation: secret-rotation has stored AWSPENDING and set it on the database, but
    // not yet promoted it. rds-init must not put the current password back.
    f.secrets
        .put_secret_value()
        .secret_id(&f.app_arn)
        .secret_string(json!({"username": "app", "password": "pend1ng-Pa55word"}).to_string())
        .version_stages("AWSPENDING")
        .send()
        .await
        .unwrap();
    let mut admin = f.server.admin_connection().await;
    let set = if f.server.is_postgres() {
        "ALTER ROLE app PASSWORD 'pend1ng-Pa55word'"
    } else {
        "ALTER USER 'app'@'%' IDENTIFIED BY 'pend1ng-Pa55word'"
    };
    try_execute(&mut admin, set).await.unwrap();
    let body = f.update_unchanged(&props).await;
    assert_success(&body);
    assert!(
        body["Reason"]
            .as_str()
            .unwrap()
            .contains("rotation is in progress"),
        "{body}"
    );
    f.server
        .login("app", "pend1ng-Pa55word", "bp")
        .await
        .unwrap();
}

#[tokio::test]
async fn mariadb_a_changed_secret_password_is_applied() {
    a_changed_secret_password_is_applied(Server::Maria(MariaDb::start().await)).await;
}

#[tokio::test]
async fn postgres_a_changed_secret_password_is_applied() {
    a_changed_secret_password_is_applied(Server::Pg(Postgres::start().await)).await;
}

#[tokio::test]
async fn a_changed_endpoint_gets_a_new_physical_id_and_the_old_delete_touches_nothing() {
    let f = Fixture::new(Server::Maria(MariaDb::start().await)).await;
    let mut props = f.props(&["bp"], json!([]));
    props["RemoveOnDelete"] = json!("true");
    assert_success(&f.invoke("Create", props.clone(), json!({})).await);
    let old_id = "tenant-databases@old-instance.example.com:3306";
    let body = f
        .invoke(
            "Update",
            props.clone(),
            json!({"PhysicalResourceId": old_id, "OldResourceProperties": props}),
        )
        .await;
    assert_success(&body);
    assert_eq!(body["PhysicalResourceId"], f.physical_id());
    // CloudFormation then deletes the old id with the old properties, whose secret now
    // points at the new instance: nothing is dropped there.
    let body = f
        .invoke("Delete", props, json!({"PhysicalResourceId": old_id}))
        .await;
    assert_success(&body);
    assert!(f.server.databases().await.contains(&"bp".to_owned()));
}

#[tokio::test]
async fn no_password_appears_in_logs_or_responses() {
    let logs = CapturedLogs::default();
    let _guard = logs.install();
    let (maria, pg) = tokio::join!(MariaDb::start(), Postgres::start());
    let mut passwords = vec![APP_PASSWORD.to_owned(), RO_PASSWORD.to_owned()];
    for server in [Server::Maria(maria), Server::Pg(pg)] {
        passwords.push(server.admin().1);
        let f = Fixture::new(server).await;
        let props = f.props(
            &["bp"],
            json!([f.app(&["bp"], "readwrite"), f.reporting(&["bp"])]),
        );
        assert_success(&f.invoke("Create", props.clone(), json!({})).await);
        // A password change (logged as an action) and a failure that includes SQL errors.
        f.secrets
            .put_secret_value()
            .secret_id(&f.app_arn)
            .secret_string(json!({"username": "app", "password": "n3w-Pa55word-9e1f"}).to_string())
            .send()
            .await
            .unwrap();
        assert_success(&f.invoke("Create", props, json!({})).await);
        let bodies: Vec<String> = f
            .recorder
            .requests()
            .iter()
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .collect();
        for password in passwords.iter().chain([&"n3w-Pa55word-9e1f".to_owned()]) {
            for body in &bodies {
                assert!(
                    !body.contains(password.as_str()),
                    "password in a response: {body}"
                );
            }
        }
    }
    let text = logs.text();
    assert!(
        text.contains("set the password of user `app` from its secret"),
        "{text}"
    );
    for password in passwords.iter().chain([&"n3w-Pa55word-9e1f".to_owned()]) {
        assert!(
            !text.contains(password.as_str()),
            "password {password} in the logs"
        );
    }
}

/// Quotes of both kinds, backslashes (one at the end, where an unescaped one would swallow
/// the closing quote), `$` and `$$`: a password only exact literals set as it is.
const HOSTILE_PASSWORD: &str = r#"it's "q" \back\\slash $1 $$ end\"#;
const HOSTILE_PASSWORD_2: &str = r#"n3w'' "\'$tag$ x\"#;

/// The servers' non-default settings (MariaDB: `NO_BACKSLASH_ESCAPES` in the global
/// `sql_mode`; PostgreSQL: `standard_conforming_strings=off`, every statement logged): a
/// password with quotes, backslashes and `$` is created and changed exactly, logs in, and
/// appears in no `Reason`, no log line and (PostgreSQL) not in the server's statement log.
#[tokio::test]
async fn hostile_passwords_are_set_exactly_whatever_the_server_settings() {
    let logs = CapturedLogs::default();
    let _guard = logs.install();
    let (maria, pg) = tokio::join!(
        MariaDb::start(),
        Postgres::start_with_settings(&["standard_conforming_strings=off", "log_statement=all"])
    );
    let pool = maria.admin_pool().await;
    sqlx::query(
        "SET GLOBAL sql_mode = CONCAT_WS(',', NULLIF(@@GLOBAL.sql_mode, ''), 'NO_BACKSLASH_ESCAPES')",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let mut server_log = String::new();
    let mut bodies = Vec::new();
    for server in [Server::Maria(maria), Server::Pg(pg)] {
        let engine = server.engine();
        let f = Fixture::new(server).await;
        let set_app_password = |password: &str| {
            f.secrets
                .put_secret_value()
                .secret_id(&f.app_arn)
                .secret_string(json!({"username": "app", "password": password}).to_string())
                .send()
        };
        set_app_password(HOSTILE_PASSWORD).await.unwrap();
        let props = f.props(&["bp"], json!([f.app(&["bp"], "readwrite")]));
        let body = f.invoke("Create", props.clone(), json!({})).await;
        bodies.push(body["Reason"].as_str().unwrap_or_default().to_owned());
        assert_success(&body);
        f.server
            .login("app", HOSTILE_PASSWORD, "bp")
            .await
            .unwrap_or_else(|e| panic!("{engine}: the created user logs in: {e}"));
        // The password changed in the secret: ALTER USER / ALTER ROLE.
        set_app_password(HOSTILE_PASSWORD_2).await.unwrap();
        let body = f.update_unchanged(&props).await;
        bodies.push(body["Reason"].as_str().unwrap_or_default().to_owned());
        assert_success(&body);
        f.server
            .login("app", HOSTILE_PASSWORD_2, "bp")
            .await
            .unwrap_or_else(|e| panic!("{engine}: the changed password logs in: {e}"));
        assert!(f.server.login("app", HOSTILE_PASSWORD, "bp").await.is_err());
        if let Server::Pg(pg) = &f.server {
            server_log = pg.server_log();
        }
    }
    assert!(
        server_log.contains("CREATE ROLE") && server_log.contains("SCRAM-SHA-256$4096:"),
        "log_statement=all logged the DDL, with a verifier: {server_log}"
    );
    let text = logs.text();
    // A piece of each password that JSON does not escape (the logs are JSON lines), and
    // each password whole.
    for (password, piece) in [
        (HOSTILE_PASSWORD, "slash $1 $$ end"),
        (HOSTILE_PASSWORD_2, "$tag$ x"),
    ] {
        for reason in &bodies {
            assert!(
                !reason.contains(piece) && !reason.contains(password),
                "password in a Reason: {reason}"
            );
        }
        assert!(!text.contains(piece), "password in the logs: {text}");
        assert!(
            !server_log.contains(piece) && !server_log.contains(password),
            "password in PostgreSQL's log: {server_log}"
        );
    }
}
