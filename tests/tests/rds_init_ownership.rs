//! rds-init's `RemoveOnDelete` drops only databases it created: a database that existed
//! before (adopted) survives Create and Delete with its data, on both engines, also in the
//! Delete of a stack rollback; one rds-init created carries its resource's mark and is dropped.
//! The function runs in-process, its secrets in moto, against real MariaDB and PostgreSQL.

use aws_sdk_secretsmanager::Client as SecretsClient;
use harness::log_capture::CapturedLogs;
use harness::{
    cfn_recorder::CfnResponseRecorder, mariadb::MariaDb, moto::Moto, postgres::Postgres,
};
use lambda_runtime::{Context, LambdaEvent};
use rds_init::{Config, TenantDatabases};
use serde_json::{Value, json};
use shared::{
    custom_resource::Responder,
    database::{ConnectSettings, DatabaseSecret, DbConnection, connect},
};
use std::{
    path::Path,
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

const APP_PASSWORD: &str = "app-Pa55word-7f3a9c";
const STACK_ID: &str = "arn:aws:cloudformation:us-east-1:123456789012:stack/orchestrator/1a2b";
const OTHER_STACK_ID: &str = "arn:aws:cloudformation:us-east-1:123456789012:stack/team-stack/9f8e";
const RESOURCE: &str = "TenantDatabases";

fn mark(stack_id: &str) -> String {
    format!("created by orchestrator rds-init for stack {stack_id} resource {RESOURCE}")
}

enum Server {
    Maria(MariaDb),
    Pg(Postgres),
}

impl Server {
    fn is_postgres(&self) -> bool {
        matches!(self, Server::Pg(_))
    }

    fn port(&self) -> u16 {
        match self {
            Server::Maria(s) => s.port(),
            Server::Pg(s) => s.port(),
        }
    }

    fn admin(&self) -> (&'static str, String) {
        match self {
            Server::Maria(s) => (s.admin_user(), s.admin_password().to_owned()),
            Server::Pg(s) => (s.admin_user(), s.admin_password().to_owned()),
        }
    }

    fn ca(&self) -> Option<&Path> {
        match self {
            Server::Maria(s) => s.ca_pem_path(),
            Server::Pg(s) => s.ca_pem_path(),
        }
    }

    fn secret(&self, user: &str, password: &str) -> Value {
        let engine = if self.is_postgres() {
            "postgres"
        } else {
            "mariadb"
        };
        let mut secret = json!({
            "engine": engine, "host": "127.0.0.1", "port": self.port(),
            "username": user, "password": password,
        });
        if self.ca().is_none() {
            secret["ssl"] = json!(false);
        }
        secret
    }

    fn settings(&self) -> ConnectSettings {
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

    /// The administrator, in `database` (`None`: the engine's system database).
    async fn admin_in(&self, database: Option<&str>) -> DbConnection {
        let (user, password) = self.admin();
        let system = if self.is_postgres() {
            "postgres"
        } else {
            "mysql"
        };
        let secret = DatabaseSecret::from_json(&self.secret(user, &password).to_string()).unwrap();
        connect(&secret, Some(database.unwrap_or(system)), &self.settings())
            .await
            .unwrap()
    }

    async fn databases(&self) -> Vec<String> {
        let mut c = self.admin_in(None).await;
        let rows: Vec<String> = match &mut c {
            DbConnection::MySql(c) => {
                sqlx::query_scalar(
                    "SELECT CAST(SCHEMA_NAME AS CHAR) FROM information_schema.SCHEMATA",
                )
                .fetch_all(&mut *c)
                .await
            }
            DbConnection::Postgres(c) => {
                sqlx::query_scalar("SELECT datname::text FROM pg_database")
                    .fetch_all(&mut *c)
                    .await
            }
        }
        .unwrap();
        rows
    }

    async fn users(&self) -> Vec<String> {
        let mut c = self.admin_in(None).await;
        let rows: Vec<String> = match &mut c {
            DbConnection::MySql(c) => {
                sqlx::query_scalar("SELECT CAST(User AS CHAR) FROM mysql.user WHERE Host = '%'")
                    .fetch_all(&mut *c)
                    .await
            }
            DbConnection::Postgres(c) => {
                sqlx::query_scalar("SELECT rolname::text FROM pg_roles")
                    .fetch_all(&mut *c)
                    .await
            }
        }
        .unwrap();
        rows
    }

    /// The rds-init mark on `database`, read independently of the function: PostgreSQL's
    /// database comment, MariaDB's marker table comment.
    async fn mark_on(&self, database: &str) -> Option<String> {
        let mut c = self.admin_in(None).await;
        let rows: Vec<(String, String)> = match &mut c {
            DbConnection::MySql(c) => {
                sqlx::query_as(
                    "SELECT CAST(TABLE_SCHEMA AS CHAR), CAST(TABLE_COMMENT AS CHAR) \
                     FROM information_schema.TABLES WHERE TABLE_NAME = '_orchestrator_rds_init'",
                )
                .fetch_all(&mut *c)
                .await
            }
            DbConnection::Postgres(c) => {
                sqlx::query_as(
                    "SELECT datname::text, shobj_description(oid, 'pg_database') \
                     FROM pg_database WHERE shobj_description(oid, 'pg_database') IS NOT NULL",
                )
                .fetch_all(&mut *c)
                .await
            }
        }
        .unwrap();
        rows.into_iter()
            .find(|(db, _)| db == database)
            .map(|(_, mark)| mark)
    }

    /// A database made by someone else before the stack, with a table and a row.
    async fn make_legacy_database(&self, name: &str) {
        let mut admin = self.admin_in(None).await;
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

    async fn legacy_rows(&self, name: &str) -> Vec<String> {
        let mut inside = self.admin_in(Some(name)).await;
        match &mut inside {
            DbConnection::MySql(c) => {
                sqlx::query_scalar("SELECT note FROM keep_me")
                    .fetch_all(&mut *c)
                    .await
            }
            DbConnection::Postgres(c) => {
                sqlx::query_scalar("SELECT note FROM keep_me")
                    .fetch_all(&mut *c)
                    .await
            }
        }
        .unwrap()
    }
}

struct Fixture {
    server: Server,
    _moto: Moto,
    recorder: CfnResponseRecorder,
    resource: TenantDatabases,
    master_arn: String,
    app_arn: String,
    calls: AtomicUsize,
}

impl Fixture {
    async fn new(server: Server) -> Fixture {
        let (moto, recorder) = tokio::join!(Moto::start(), CfnResponseRecorder::start());
        let secrets = SecretsClient::new(&moto.sdk_config().await);
        let (admin, admin_password) = server.admin();
        let master_arn =
            create_secret(&secrets, "master", &server.secret(admin, &admin_password)).await;
        let app_arn = create_secret(
            &secrets,
            "app",
            &json!({"username": "app", "password": APP_PASSWORD}),
        )
        .await;
        let resource = TenantDatabases::new(
            secrets,
            Config {
                connect: server.settings(),
            },
        );
        Fixture {
            server,
            _moto: moto,
            recorder,
            resource,
            master_arn,
            app_arn,
            calls: AtomicUsize::new(0),
        }
    }

    /// `RemoveOnDelete: "true"`, the app user readwrite on every database.
    fn props(&self, databases: &[&str]) -> Value {
        json!({
            "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:rds-init",
            "MasterSecretArn": self.master_arn,
            "Databases": databases,
            "Users": [{"SecretArn": self.app_arn, "Databases": databases, "Access": "readwrite"}],
            "RemoveOnDelete": "true",
        })
    }

    fn physical_id(&self) -> String {
        format!("tenant-databases@127.0.0.1:{}", self.server.port())
    }

    /// Invokes the function for `stack_id` and returns the body it PUT.
    async fn invoke(&self, request_type: &str, stack_id: &str, props: Value) -> Value {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let mut event = json!({
            "RequestType": request_type,
            "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:rds-init",
            "ResponseURL": self.recorder.response_url(&format!("call-{n}")),
            "StackId": stack_id,
            "RequestId": format!("req-{n}"),
            "LogicalResourceId": RESOURCE,
            "ResourceType": "Custom::TenantDatabases",
            "ResourceProperties": props,
        });
        if request_type != "Create" {
            event["PhysicalResourceId"] = json!(self.physical_id());
        }
        let responder = Responder::new().with_retries(3, Duration::from_millis(20));
        responder
            .respond(
                &self.resource,
                LambdaEvent::new(event, context(Duration::from_secs(60))),
            )
            .await
            .unwrap();
        let requests = self.recorder.wait_for(n, Duration::from_secs(5)).await;
        let body = requests[n - 1].json();
        assert_eq!(body["Status"], "SUCCESS", "{body:#}");
        body
    }
}

async fn create_secret(client: &SecretsClient, name: &str, value: &Value) -> String {
    client
        .create_secret()
        .name(name)
        .secret_string(value.to_string())
        .send()
        .await
        .unwrap()
        .arn
        .unwrap()
}

fn context(left: Duration) -> Context {
    let mut context = Context::default();
    context.request_id = "lambda-request-1".into();
    let deadline = SystemTime::now() + left;
    context.deadline = deadline.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    context
}

fn reason(body: &Value) -> &str {
    body["Reason"].as_str().unwrap()
}

/// A database that existed before the stack is used, not marked, and kept with its data by
/// Delete with `RemoveOnDelete: "true"`; the Reason and the log say it was kept as adopted.
async fn an_adopted_database_survives_create_and_remove_on_delete(server: Server) {
    let logs = CapturedLogs::default();
    let _guard = logs.install();
    let f = Fixture::new(server).await;
    f.server.make_legacy_database("legacy").await;

    let body = f.invoke("Create", STACK_ID, f.props(&["legacy"])).await;
    assert_eq!(body["Data"]["AdoptedDatabases"], "legacy", "{body:#}");
    assert!(
        reason(&body).contains("database `legacy` used as it is: adopted"),
        "{body:#}"
    );
    assert_eq!(
        f.server.mark_on("legacy").await,
        None,
        "an adopted database is not marked"
    );

    let body = f.invoke("Delete", STACK_ID, f.props(&["legacy"])).await;
    let kept = "database `legacy` kept, with its data: adopted";
    assert!(reason(&body).contains(kept), "{body:#}");
    assert!(logs.text().contains(kept), "{}", logs.text());
    assert!(f.server.databases().await.contains(&"legacy".to_owned()));
    assert_eq!(
        f.server.legacy_rows("legacy").await,
        ["data from before the stack"]
    );
    // The user keeps its access to the kept database rather than failing the Delete.
    assert!(
        reason(&body).contains("user `app` kept: it has access to database(s) `legacy`"),
        "{body:#}"
    );
}

#[tokio::test]
async fn mariadb_an_adopted_database_survives_create_and_remove_on_delete() {
    an_adopted_database_survives_create_and_remove_on_delete(Server::Maria(MariaDb::start().await))
        .await;
}

#[tokio::test]
async fn postgres_an_adopted_database_survives_create_and_remove_on_delete() {
    an_adopted_database_survives_create_and_remove_on_delete(Server::Pg(Postgres::start().await))
        .await;
}

/// A database rds-init creates carries this resource's mark, is still its own after a
/// retried Create, and is dropped (with its user) by Delete with `RemoveOnDelete: "true"`.
async fn a_database_rds_init_created_is_marked_and_dropped(server: Server) {
    let f = Fixture::new(server).await;
    let body = f.invoke("Create", STACK_ID, f.props(&["fresh"])).await;
    assert_eq!(body["Data"]["AdoptedDatabases"], "", "{body:#}");
    assert_eq!(f.server.mark_on("fresh").await, Some(mark(STACK_ID)));

    // CloudFormation retries the Create: the database it made is still its own.
    let body = f.invoke("Create", STACK_ID, f.props(&["fresh"])).await;
    assert_eq!(body["Data"]["AdoptedDatabases"], "", "{body:#}");
    assert!(!reason(&body).contains("adopted"), "{body:#}");

    let body = f.invoke("Delete", STACK_ID, f.props(&["fresh"])).await;
    assert!(!reason(&body).contains("kept"), "{body:#}");
    assert!(!f.server.databases().await.contains(&"fresh".to_owned()));
    assert!(!f.server.users().await.contains(&"app".to_owned()));
}

#[tokio::test]
async fn mariadb_a_database_rds_init_created_is_marked_and_dropped() {
    a_database_rds_init_created_is_marked_and_dropped(Server::Maria(MariaDb::start().await)).await;
}

#[tokio::test]
async fn postgres_a_database_rds_init_created_is_marked_and_dropped() {
    a_database_rds_init_created_is_marked_and_dropped(Server::Pg(Postgres::start().await)).await;
}

/// The stack's Create fails after this resource succeeded, and CloudFormation's rollback
/// sends Delete: it drops what this resource created and keeps both the database that
/// existed before and one created by another stack's resource (marked for that stack).
async fn the_rollback_delete_after_a_failed_create_keeps_adopted_databases(server: Server) {
    let f = Fixture::new(server).await;
    f.server.make_legacy_database("legacy").await;
    // Another stack's rds-init created `shared_db` first.
    f.invoke("Create", OTHER_STACK_ID, f.props(&["shared_db"]))
        .await;
    assert_eq!(
        f.server.mark_on("shared_db").await,
        Some(mark(OTHER_STACK_ID))
    );

    let all = ["legacy", "shared_db", "fresh"];
    let body = f.invoke("Create", STACK_ID, f.props(&all)).await;
    assert_eq!(body["Data"]["AdoptedDatabases"], "legacy,shared_db");
    // Adopting does not take the other stack's mark over.
    assert_eq!(
        f.server.mark_on("shared_db").await,
        Some(mark(OTHER_STACK_ID))
    );

    let body = f.invoke("Delete", STACK_ID, f.props(&all)).await;
    assert!(reason(&body).contains("`legacy` kept"), "{body:#}");
    assert!(
        reason(&body).contains("`shared_db` kept") && reason(&body).contains(OTHER_STACK_ID),
        "{body:#}"
    );
    let databases = f.server.databases().await;
    assert!(!databases.contains(&"fresh".to_owned()), "{databases:?}");
    assert!(
        databases.contains(&"legacy".to_owned()) && databases.contains(&"shared_db".to_owned()),
        "{databases:?}"
    );
    assert_eq!(
        f.server.legacy_rows("legacy").await,
        ["data from before the stack"]
    );
}

#[tokio::test]
async fn mariadb_the_rollback_delete_after_a_failed_create_keeps_adopted_databases() {
    the_rollback_delete_after_a_failed_create_keeps_adopted_databases(Server::Maria(
        MariaDb::start().await,
    ))
    .await;
}

#[tokio::test]
async fn postgres_the_rollback_delete_after_a_failed_create_keeps_adopted_databases() {
    the_rollback_delete_after_a_failed_create_keeps_adopted_databases(Server::Pg(
        Postgres::start().await,
    ))
    .await;
}
