//! rds-init's grants follow both alternating users (a user secret with `masterarn`), on the
//! real MariaDB and PostgreSQL: rds-init in-process (`harness::tenant_databases`), and
//! secret-rotation's `Rotator` driven through its four steps against the same moto, as
//! Secrets Manager would.
//!
//! The sequence on each engine: Create; rotate (`AWSCURRENT` names `app_clone`); an Update
//! removes a database from the user's list; rotate again (back to `app`); neither user can
//! write there. Then readwrite → readonly the same way. PostgreSQL runs with an RDS-like
//! master (not a superuser: `CREATEROLE`, `CREATEDB`), and also shows that a table the clone
//! created stays fully usable by the base.

use aws_sdk_secretsmanager::Client;
use harness::rotation::{allow_rotation, end_rotation, start_rotation};
use harness::tenant_databases::{Server, TenantDatabasesUnderTest, query_strings};
use harness::{mariadb::MariaDb, postgres::Postgres};
use secret_rotation::{Rotator, config::RotationConfig};
use serde_json::{Value, json};
use shared::database::DbConnection;
use shared::env_config::EnvVars;
use std::time::Duration;

const APP_PASSWORD: &str = "app-Pa55word-9c1d2e";
const MASTER_PASSWORD: &str = "master-Pa55word-4f6a8b";
const STACK_ID: &str = "arn:aws:cloudformation:us-east-1:123456789012:stack/orchestrator/1a2b";
const STEPS: [&str; 4] = ["createSecret", "setSecret", "testSecret", "finishSecret"];
/// Both databases stay in `Databases` throughout; only the user's list changes.
const DATABASES: [&str; 2] = ["bp", "tenant_pool_1"];

/// A user name and the password a secret version holds for it.
#[derive(Debug, Clone)]
struct Login {
    user: String,
    password: String,
}

/// rds-init and secret-rotation sharing one moto, one server, one master secret and the
/// app user's alternating secret.
struct Fixture {
    under_test: TenantDatabasesUnderTest,
    rotator: Rotator,
    master_arn: String,
    app_arn: String,
    /// The properties of the last successful request (an Update's `OldResourceProperties`).
    current_props: Value,
}

impl Fixture {
    async fn new(server: Server) -> Fixture {
        let under_test = TenantDatabasesUnderTest::start(server, APP_PASSWORD).await;
        let master_arn = master_secret(&under_test).await;
        let mut app = under_test.server.secret("app", APP_PASSWORD);
        app["masterarn"] = json!(master_arn);
        let app_arn = under_test.create_secret("app-alternating", &app).await;
        allow_rotation(&under_test.moto).await;
        let config =
            RotationConfig::from_env(&EnvVars::from_pairs([("DB_CONNECT_TIMEOUT_SECONDS", "5")]))
                .unwrap();
        let rotator = Rotator::new(under_test.secrets.clone(), config);
        Fixture {
            under_test,
            rotator,
            master_arn,
            app_arn,
            current_props: Value::Null,
        }
    }

    fn server(&self) -> &Server {
        &self.under_test.server
    }

    fn props(&self, user_databases: &[&str], access: &str) -> Value {
        json!({
            "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:rds-init",
            "MasterSecretArn": self.master_arn,
            "Databases": DATABASES,
            "Users": [{"SecretArn": self.app_arn, "Databases": user_databases, "Access": access}],
        })
    }

    async fn invoke(&self, request_type: &str, props: Value, extra: Value) -> Value {
        self.under_test
            .invoke(
                request_type,
                STACK_ID,
                props,
                extra,
                Duration::from_secs(60),
            )
            .await
    }

    async fn create(&mut self, props: Value) {
        let body = self.invoke("Create", props.clone(), json!({})).await;
        assert_success(&body);
        self.current_props = props;
    }

    /// An Update to `props`, then the same event again: the second run changes no privilege.
    async fn update_twice(&mut self, props: Value) {
        let extra = json!({
            "PhysicalResourceId": self.under_test.physical_id(),
            "OldResourceProperties": self.current_props,
        });
        assert_success(&self.invoke("Update", props.clone(), extra.clone()).await);
        let after_first = self.privileges().await;
        assert_success(&self.invoke("Update", props.clone(), extra).await);
        assert_eq!(
            self.privileges().await,
            after_first,
            "the same Update again changed privileges"
        );
        self.current_props = props;
    }

    /// One full rotation; returns the new `AWSCURRENT` and the `AWSPREVIOUS` login.
    async fn rotate(&self) -> (Login, Login) {
        let secrets = &self.under_test.secrets;
        let token = start_rotation(secrets, &self.app_arn).await;
        for step in STEPS {
            let event =
                json!({"Step": step, "SecretId": self.app_arn, "ClientRequestToken": token});
            self.rotator
                .handle_payload(event)
                .await
                .unwrap_or_else(|e| panic!("{step}: {e}"));
        }
        end_rotation(secrets, &self.app_arn, &token).await;
        (
            login_at(secrets, &self.app_arn, "AWSCURRENT").await,
            login_at(secrets, &self.app_arn, "AWSPREVIOUS").await,
        )
    }

    /// Runs `sql` in `database` as `login`: the server's message when the login or the
    /// statement is refused.
    async fn run_as(&self, login: &Login, database: &str, sql: &str) -> Result<(), String> {
        let mut connection = self
            .server()
            .login(&login.user, &login.password, database)
            .await?;
        let result = connection.execute(sql.to_owned()).await;
        let _ = connection.close().await;
        result.map(|_| ()).map_err(|e| e.to_string())
    }

    async fn assert_can(&self, login: &Login, database: &str, sql: &str) {
        if let Err(error) = self.run_as(login, database, sql).await {
            panic!("`{}` in {database}: {sql}: {error}", login.user);
        }
    }

    async fn assert_denied(&self, login: &Login, database: &str, sql: &str) {
        match self.run_as(login, database, sql).await {
            Ok(()) => panic!("`{}` may still run in {database}: {sql}", login.user),
            Err(error) => assert!(
                error.to_lowercase().contains("denied"),
                "`{}` in {database}: {sql}: {error}",
                login.user
            ),
        }
    }

    /// Every privilege, membership, owner and session role that concerns `app` and
    /// `app_clone`, as text to compare.
    async fn privileges(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut admin = self.server().admin_connection().await;
        if !self.server().is_postgres() {
            for user in ["app", "app_clone"] {
                let DbConnection::MySql(c) = &mut admin else {
                    unreachable!()
                };
                let grants: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SHOW GRANTS FOR '{user}'@'%'"
                )))
                .fetch_all(&mut *c)
                .await
                .unwrap();
                out.extend(grants);
            }
            return out;
        }
        out.extend(
            query_strings(
                &mut admin,
                "SELECT datname || ' ' || coalesce(datacl::text, '') FROM pg_database \
                 WHERE datname IN ('bp', 'tenant_pool_1') ORDER BY 1",
            )
            .await,
        );
        out.extend(
            query_strings(
                &mut admin,
                "SELECT r.rolname || ' has member ' || m.rolname FROM pg_auth_members a \
                 JOIN pg_roles r ON r.oid = a.roleid JOIN pg_roles m ON m.oid = a.member \
                 ORDER BY 1",
            )
            .await,
        );
        out.extend(
            query_strings(
                &mut admin,
                "SELECT rolname || ' ' || coalesce(rolconfig::text, '') FROM pg_roles \
                 WHERE rolname IN ('app', 'app_clone') ORDER BY 1",
            )
            .await,
        );
        for database in DATABASES {
            let mut inside = self.server().admin_in(Some(database)).await;
            out.extend(
                query_strings(
                    &mut inside,
                    "SELECT c.relname || ' owner ' || pg_get_userbyid(c.relowner) || ' ' || \
                     coalesce(c.relacl::text, '') FROM pg_class c \
                     JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = 'public' ORDER BY 1",
                )
                .await,
            );
            out.extend(
                query_strings(
                    &mut inside,
                    "SELECT 'schema ' || coalesce(nspacl::text, '') FROM pg_namespace \
                     WHERE nspname = 'public' UNION ALL \
                     SELECT 'default ' || pg_get_userbyid(defaclrole) || ' ' || \
                     defaclobjtype::text || ' ' || defaclacl::text FROM pg_default_acl ORDER BY 1",
                )
                .await,
            );
        }
        out
    }

    /// PostgreSQL: the owner of table `name` in `database`.
    async fn owner_of(&self, database: &str, name: &str) -> String {
        let DbConnection::Postgres(mut c) = self.server().admin_in(Some(database)).await else {
            unreachable!()
        };
        sqlx::query_scalar("SELECT tableowner::text FROM pg_tables WHERE tablename = $1")
            .bind(name)
            .fetch_one(&mut c)
            .await
            .unwrap()
    }
}

fn assert_success(body: &Value) {
    assert_eq!(body["Status"], "SUCCESS", "{body:#}");
}

/// The master secret: PostgreSQL an RDS-like master (no superuser), MariaDB the fixture's own.
async fn master_secret(under_test: &TenantDatabasesUnderTest) -> String {
    if !under_test.server.is_postgres() {
        return under_test.master_arn.clone();
    }
    let secret = under_test
        .server
        .make_rds_like_master("rds_master", MASTER_PASSWORD)
        .await;
    under_test.create_secret("rds-master", &secret).await
}

async fn login_at(secrets: &Client, arn: &str, stage: &str) -> Login {
    let (_, value) = harness::rotation::secret_value(secrets, arn, stage).await;
    Login {
        user: value["username"].as_str().unwrap().to_owned(),
        password: value["password"].as_str().unwrap().to_owned(),
    }
}

const INSERT: &str = "INSERT INTO jobs VALUES (2)";

async fn grants_follow_both_alternating_users(server: Server) {
    let mut f = Fixture::new(server).await;
    let postgres = f.server().is_postgres();
    f.create(f.props(&DATABASES, "readwrite")).await;
    let app = Login {
        user: "app".into(),
        password: APP_PASSWORD.into(),
    };
    for database in DATABASES {
        f.assert_can(&app, database, "CREATE TABLE jobs (id INT)")
            .await;
        f.assert_can(&app, database, "INSERT INTO jobs VALUES (1)")
            .await;
    }

    // Rotation 1: the clone is current and has the base's privileges.
    let (clone, previous) = f.rotate().await;
    assert_eq!(
        (clone.user.as_str(), previous.user.as_str()),
        ("app_clone", "app")
    );
    f.assert_can(&clone, "tenant_pool_1", INSERT).await;
    if postgres {
        // The rotation made every session of the clone act as the base: what it creates
        // belongs to the base, before rds-init has even seen the clone.
        f.assert_can(&clone, "bp", "CREATE TABLE made_by_clone (id INT)")
            .await;
        f.assert_can(&clone, "bp", "INSERT INTO made_by_clone VALUES (1)")
            .await;
        assert_eq!(f.owner_of("bp", "made_by_clone").await, "app");
    }

    // tenant_pool_1 leaves the user's list.
    f.update_twice(f.props(&["bp"], "readwrite")).await;
    for login in [&clone, &previous] {
        f.assert_denied(login, "tenant_pool_1", INSERT).await;
        f.assert_can(login, "bp", INSERT).await;
    }
    if postgres {
        // What the clone made belongs to the base now, which reads, writes and alters it.
        assert_eq!(f.owner_of("bp", "made_by_clone").await, "app");
        for sql in [
            "SELECT * FROM made_by_clone",
            "INSERT INTO made_by_clone VALUES (2)",
            "ALTER TABLE made_by_clone ADD COLUMN note TEXT",
        ] {
            f.assert_can(&previous, "bp", sql).await;
        }
        // From now on the clone acts as the base: what it creates is the base's.
        f.assert_can(&clone, "bp", "CREATE TABLE made_later (id INT)")
            .await;
        assert_eq!(f.owner_of("bp", "made_later").await, "app");
        f.assert_can(&previous, "bp", "DROP TABLE made_later").await;
    }

    // Rotation 2: back to the base, which got nothing back from the clone.
    let (base, clone) = f.rotate().await;
    assert_eq!(
        (base.user.as_str(), clone.user.as_str()),
        ("app", "app_clone")
    );
    for login in [&base, &clone] {
        f.assert_denied(login, "tenant_pool_1", INSERT).await;
        f.assert_can(login, "bp", INSERT).await;
    }

    // readwrite → readonly on bp, then rotation 3.
    f.update_twice(f.props(&["bp"], "readonly")).await;
    let (clone, base) = f.rotate().await;
    assert_eq!(
        (clone.user.as_str(), base.user.as_str()),
        ("app_clone", "app")
    );
    for login in [&clone, &base] {
        f.assert_denied(login, "bp", INSERT).await;
        f.assert_denied(login, "bp", "CREATE TABLE more (id INT)")
            .await;
        f.assert_denied(login, "tenant_pool_1", INSERT).await;
        f.assert_can(login, "bp", "SELECT * FROM jobs").await;
        if postgres {
            f.assert_denied(login, "bp", "INSERT INTO made_by_clone VALUES (3)")
                .await;
            f.assert_can(login, "bp", "SELECT * FROM made_by_clone")
                .await;
        }
    }
}

#[tokio::test]
async fn mariadb_grants_follow_both_alternating_users_across_rotations() {
    grants_follow_both_alternating_users(Server::Maria(MariaDb::start().await)).await;
}

#[tokio::test]
async fn postgres_grants_follow_both_alternating_users_across_rotations() {
    grants_follow_both_alternating_users(Server::Pg(Postgres::start().await)).await;
}
