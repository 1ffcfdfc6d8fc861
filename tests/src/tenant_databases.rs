//! rds-init's `Custom::TenantDatabases` under test: a MariaDB or PostgreSQL server as the
//! tests use it ([`Server`]: the master secret and connect settings the function gets, logins,
//! what a test reads back independently of the function, such as names and rds-init's marks,
//! or makes beforehand, such as a database or user that existed before the stack), and the
//! function in-process with its secrets in moto and its answers recorded
//! ([`TenantDatabasesUnderTest`]).

use crate::cfn_recorder::CfnResponseRecorder;
use crate::database::DatabaseServer;
use crate::lambda_context::with_deadline_in as context;
use crate::mariadb::MariaDb;
use crate::moto::Moto;
use crate::postgres::Postgres;
use aws_sdk_secretsmanager::Client as SecretsClient;
use lambda_runtime::LambdaEvent;
use rds_init::{Config, TenantDatabases};
use serde_json::{Value, json};
use shared::custom_resource::Responder;
use shared::database::{ConnectSettings, DatabaseSecret, DbConnection, connect, server_error_code};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The logical id every test request names.
pub const LOGICAL_RESOURCE_ID: &str = "TenantDatabases";

/// The function in-process against `server`, a master secret and an app user's secret
/// (`app`) in moto, and a recorder for the answers it PUTs.
pub struct TenantDatabasesUnderTest {
    pub server: Server,
    pub moto: Moto,
    pub secrets: SecretsClient,
    pub recorder: CfnResponseRecorder,
    pub resource: TenantDatabases,
    pub master_arn: String,
    pub app_arn: String,
    calls: AtomicUsize,
}

impl TenantDatabasesUnderTest {
    /// `app_password`: the password in the app user's secret.
    pub async fn start(server: Server, app_password: &str) -> Self {
        let (moto, recorder) = tokio::join!(Moto::start(), CfnResponseRecorder::start());
        let secrets = SecretsClient::new(&moto.sdk_config().await);
        let (admin, admin_password) = server.admin();
        let master_arn = crate::rotation::create_secret(
            &secrets,
            "master",
            &server.secret(admin, &admin_password),
        )
        .await;
        let app_arn = crate::rotation::create_secret(
            &secrets,
            "app",
            &json!({"username": "app", "password": app_password}),
        )
        .await;
        let resource = TenantDatabases::new(
            secrets.clone(),
            Config {
                connect: server.settings(),
            },
        );
        Self {
            server,
            moto,
            secrets,
            recorder,
            resource,
            master_arn,
            app_arn,
            calls: AtomicUsize::new(0),
        }
    }

    /// A secret in moto holding `value`; returns its ARN.
    pub async fn create_secret(&self, name: &str, value: &Value) -> String {
        crate::rotation::create_secret(&self.secrets, name, value).await
    }

    /// The `PhysicalResourceId` the function gives this server's endpoint.
    pub fn physical_id(&self) -> String {
        format!("tenant-databases@127.0.0.1:{}", self.server.port())
    }

    /// Invokes the function for stack `stack_id` with `extra` event fields (e.g.
    /// `PhysicalResourceId`) and a Lambda deadline `left` away; returns the body it PUT.
    pub async fn invoke(
        &self,
        request_type: &str,
        stack_id: &str,
        props: Value,
        extra: Value,
        left: Duration,
    ) -> Value {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let mut event = json!({
            "RequestType": request_type,
            "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:rds-init",
            "ResponseURL": self.recorder.response_url(&format!("call-{n}")),
            "StackId": stack_id,
            "RequestId": format!("req-{n}"),
            "LogicalResourceId": LOGICAL_RESOURCE_ID,
            "ResourceType": "Custom::TenantDatabases",
            "ResourceProperties": props,
        });
        event
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let responder = Responder::new().with_retries(3, Duration::from_millis(20));
        responder
            .respond(&self.resource, LambdaEvent::new(event, context(left)))
            .await
            .unwrap();
        let requests = self.recorder.wait_for(n, Duration::from_secs(5)).await;
        requests[n - 1].json()
    }
}

/// A database server of either engine.
pub enum Server {
    Maria(MariaDb),
    Pg(Postgres),
}

impl Server {
    fn common(&self) -> &DatabaseServer {
        match self {
            Server::Maria(s) => s,
            Server::Pg(s) => s,
        }
    }

    /// The `engine` of its RDS secret.
    pub fn engine(&self) -> &'static str {
        match self {
            Server::Maria(_) => "mariadb",
            Server::Pg(_) => "postgres",
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Server::Pg(_))
    }

    pub fn port(&self) -> u16 {
        self.common().port()
    }

    /// The administrator (rds-init's master) and its password.
    pub fn admin(&self) -> (&'static str, String) {
        let user = match self {
            Server::Maria(s) => s.admin_user(),
            Server::Pg(s) => s.admin_user(),
        };
        (user, self.common().admin_password().to_owned())
    }

    /// The test CA of a TLS-only server.
    pub fn ca(&self) -> Option<&Path> {
        self.common().ca_pem_path()
    }

    /// A secret in the RDS convention for `user` (`ssl: false` on a plaintext server).
    pub fn secret(&self, user: &str, password: &str) -> Value {
        let mut secret = json!({
            "engine": self.engine(), "host": "127.0.0.1", "port": self.port(),
            "username": user, "password": password,
        });
        if self.ca().is_none() {
            secret["ssl"] = json!(false);
        }
        secret
    }

    /// The function's connect settings: trusting the test CA, 10 s per statement.
    pub fn settings(&self) -> ConnectSettings {
        let settings = ConnectSettings {
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
            ..ConnectSettings::default()
        };
        match self.ca() {
            Some(ca) => settings.trusting(ca).expect("the test CA is a PEM bundle"),
            None => settings,
        }
    }

    /// Logs in as `user` to `database` through `shared::database`, as the functions do.
    pub async fn login(
        &self,
        user: &str,
        password: &str,
        database: &str,
    ) -> Result<DbConnection, String> {
        let secret = DatabaseSecret::from_json(&self.secret(user, password).to_string()).unwrap();
        connect(&secret, Some(database), &self.settings())
            .await
            .map_err(|e| e.to_string())
    }

    /// The administrator, in `database` (`None`: the engine's system database).
    pub async fn admin_in(&self, database: Option<&str>) -> DbConnection {
        let (user, password) = self.admin();
        let system = if self.is_postgres() {
            "postgres"
        } else {
            "mysql"
        };
        self.login(user, &password, database.unwrap_or(system))
            .await
            .unwrap()
    }

    /// The administrator, in the engine's system database.
    pub async fn admin_connection(&self) -> DbConnection {
        self.admin_in(None).await
    }

    /// The databases the server has.
    pub async fn databases(&self) -> Vec<String> {
        let mut connection = self.admin_connection().await;
        let sql = match &connection {
            DbConnection::MySql(_) => {
                "SELECT CAST(SCHEMA_NAME AS CHAR) FROM information_schema.SCHEMATA"
            }
            DbConnection::Postgres(_) => "SELECT datname::text FROM pg_database",
        };
        query_strings(&mut connection, sql).await
    }

    /// The users (MariaDB: accounts for host `%`; PostgreSQL: roles).
    pub async fn users(&self) -> Vec<String> {
        let mut connection = self.admin_connection().await;
        let sql = match &connection {
            DbConnection::MySql(_) => "SELECT CAST(User AS CHAR) FROM mysql.user WHERE Host = '%'",
            DbConnection::Postgres(_) => "SELECT rolname::text FROM pg_roles",
        };
        query_strings(&mut connection, sql).await
    }

    /// The rds-init mark on `database`: PostgreSQL's database comment, MariaDB's marker table
    /// comment.
    pub async fn mark_on(&self, database: &str) -> Option<String> {
        let sql = match self {
            Server::Maria(_) => {
                "SELECT CAST(TABLE_SCHEMA AS CHAR), CAST(TABLE_COMMENT AS CHAR) \
                 FROM information_schema.TABLES WHERE TABLE_NAME = '_orchestrator_rds_init'"
            }
            Server::Pg(_) => {
                "SELECT datname::text, shobj_description(oid, 'pg_database') \
                 FROM pg_database WHERE shobj_description(oid, 'pg_database') IS NOT NULL"
            }
        };
        self.mark_in(sql, database).await
    }

    /// The rds-init mark on `user`: PostgreSQL's role comment, MariaDB's row in
    /// `_orchestrator_rds_init.created_users` (none while that table does not exist).
    pub async fn user_mark_on(&self, user: &str) -> Option<String> {
        let sql = match self {
            Server::Maria(_) => {
                "SELECT CAST(user_name AS CHAR), CAST(created_by AS CHAR) \
                 FROM `_orchestrator_rds_init`.`created_users`"
            }
            Server::Pg(_) => {
                "SELECT rolname::text, shobj_description(oid, 'pg_authid') \
                 FROM pg_roles WHERE shobj_description(oid, 'pg_authid') IS NOT NULL"
            }
        };
        self.mark_in(sql, user).await
    }

    /// The second column of the row of `sql` whose first column is `name`.
    async fn mark_in(&self, sql: &'static str, name: &str) -> Option<String> {
        let mut c = self.admin_connection().await;
        let rows: Result<Vec<(String, String)>, sqlx::Error> = match &mut c {
            DbConnection::MySql(c) => sqlx::query_as(sql).fetch_all(&mut *c).await,
            DbConnection::Postgres(c) => sqlx::query_as(sql).fetch_all(&mut *c).await,
        };
        let rows = match rows {
            // MariaDB ER_NO_SUCH_TABLE: rds-init has not created a user yet.
            Err(error) if server_error_code(&error).as_deref() == Some("1146") => Vec::new(),
            rows => rows.unwrap(),
        };
        rows.into_iter()
            .find(|(found, _)| found == name)
            .map(|(_, mark)| mark)
    }

    /// A database made by someone else before the stack, with a table and a row.
    pub async fn make_legacy_database(&self, name: &str) {
        let mut admin = self.admin_connection().await;
        admin
            .execute(format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let mut inside = self.admin_in(Some(name)).await;
        inside
            .execute("CREATE TABLE keep_me (note VARCHAR(40))")
            .await
            .unwrap();
        inside
            .execute("INSERT INTO keep_me VALUES ('data from before the stack')")
            .await
            .unwrap();
    }

    /// The rows of the table [`Self::make_legacy_database`] made.
    pub async fn legacy_rows(&self, name: &str) -> Vec<String> {
        let mut inside = self.admin_in(Some(name)).await;
        query_strings(&mut inside, "SELECT note FROM keep_me").await
    }

    /// PostgreSQL: a master as RDS has one, not a superuser (`LOGIN CREATEROLE CREATEDB`; on
    /// RDS it is also a member of `rds_superuser`), named `name` with `password` (plain
    /// words). Returns its secret in the RDS convention.
    pub async fn make_rds_like_master(&self, name: &str, password: &str) -> Value {
        assert!(self.is_postgres(), "RDS-like masters are PostgreSQL roles");
        self.admin_connection()
            .await
            .execute(format!(
                "CREATE ROLE {name} LOGIN CREATEROLE CREATEDB PASSWORD '{password}'"
            ))
            .await
            .unwrap();
        self.secret(name, password)
    }

    /// A user made by someone else before the stack (`name` and `password` are plain words).
    pub async fn make_legacy_user(&self, name: &str, password: &str) {
        let sql = if self.is_postgres() {
            format!("CREATE ROLE {name} LOGIN PASSWORD '{password}'")
        } else {
            format!("CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'")
        };
        self.admin_connection().await.execute(sql).await.unwrap();
    }
}

/// The first column of every row `sql` returns, as text.
pub async fn query_strings(connection: &mut DbConnection, sql: &'static str) -> Vec<String> {
    match connection {
        DbConnection::MySql(c) => sqlx::query_scalar(sql).fetch_all(&mut *c).await.unwrap(),
        DbConnection::Postgres(c) => sqlx::query_scalar(sql).fetch_all(&mut *c).await.unwrap(),
    }
}
