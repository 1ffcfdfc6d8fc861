//! rds-init's `RemoveOnDelete` drops only databases and users it created: a database or user
//! that existed before (adopted) survives Create and Delete, a database with its data, on both
//! engines, also in the Delete of a stack rollback; one rds-init created carries its
//! resource's mark and is dropped. A database or user someone else creates between planning
//! and rds-init's `CREATE` is adopted, never marked. The function runs in-process, its secrets
//! in moto, against real MariaDB and PostgreSQL.

use harness::log_capture::CapturedLogs;
use harness::tenant_databases::{LOGICAL_RESOURCE_ID, Server, TenantDatabasesUnderTest};
use harness::{mariadb::MariaDb, postgres::Postgres};
use rds_init::execution::{FoundExisting, carry_out};
use rds_init::identifier::{Identifier, IdentifierKind};
use rds_init::ownership::Creator;
use rds_init::plan::{Action, Plan};
use rds_init::server::StatementRunner;
use secrecy::SecretString;
use serde_json::{Value, json};
use shared::database::{DatabaseSecret, connect};
use std::ops::Deref;
use std::time::Duration;

const APP_PASSWORD: &str = "app-Pa55word-7f3a9c";
const STACK_ID: &str = "arn:aws:cloudformation:us-east-1:123456789012:stack/orchestrator/1a2b";
const OTHER_STACK_ID: &str = "arn:aws:cloudformation:us-east-1:123456789012:stack/team-stack/9f8e";

fn mark(stack_id: &str) -> String {
    format!("created by orchestrator rds-init for stack {stack_id} resource {LOGICAL_RESOURCE_ID}")
}

/// The function under test, every request expected to succeed.
struct Fixture(TenantDatabasesUnderTest);

impl Deref for Fixture {
    type Target = TenantDatabasesUnderTest;

    fn deref(&self) -> &TenantDatabasesUnderTest {
        &self.0
    }
}

impl Fixture {
    async fn new(server: Server) -> Fixture {
        Fixture(TenantDatabasesUnderTest::start(server, APP_PASSWORD).await)
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

    /// Invokes the function for `stack_id` and returns the body it PUT.
    async fn invoke(&self, request_type: &str, stack_id: &str, props: Value) -> Value {
        let extra = if request_type == "Create" {
            json!({})
        } else {
            json!({"PhysicalResourceId": self.physical_id()})
        };
        let body = self
            .0
            .invoke(
                request_type,
                stack_id,
                props,
                extra,
                Duration::from_secs(60),
            )
            .await;
        assert_eq!(body["Status"], "SUCCESS", "{body:#}");
        body
    }
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

/// A database and a user rds-init creates carry this resource's mark, are still its own
/// after a retried Create, and are dropped by Delete with `RemoveOnDelete: "true"`.
async fn a_database_rds_init_created_is_marked_and_dropped(server: Server) {
    let f = Fixture::new(server).await;
    let body = f.invoke("Create", STACK_ID, f.props(&["fresh"])).await;
    assert_eq!(body["Data"]["AdoptedDatabases"], "", "{body:#}");
    assert_eq!(body["Data"]["AdoptedUsers"], "", "{body:#}");
    assert_eq!(f.server.mark_on("fresh").await, Some(mark(STACK_ID)));
    assert_eq!(f.server.user_mark_on("app").await, Some(mark(STACK_ID)));

    // CloudFormation retries the Create: what it made is still its own.
    let body = f.invoke("Create", STACK_ID, f.props(&["fresh"])).await;
    assert_eq!(body["Data"]["AdoptedDatabases"], "", "{body:#}");
    assert_eq!(body["Data"]["AdoptedUsers"], "", "{body:#}");
    assert!(!reason(&body).contains("adopted"), "{body:#}");
    assert_eq!(f.server.user_mark_on("app").await, Some(mark(STACK_ID)));

    let body = f.invoke("Delete", STACK_ID, f.props(&["fresh"])).await;
    assert!(!reason(&body).contains("kept"), "{body:#}");
    assert!(!f.server.databases().await.contains(&"fresh".to_owned()));
    assert!(!f.server.users().await.contains(&"app".to_owned()));
    // MariaDB's row goes with the user, so a later `app` made by hand is not taken for ours.
    assert_eq!(f.server.user_mark_on("app").await, None);
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

/// A user that existed before the stack is used (its grants applied), not marked, and kept by
/// Delete with `RemoveOnDelete: "true"`; the Reason, `AdoptedUsers` and the log say so. The
/// database rds-init created for it is still dropped.
async fn an_adopted_user_survives_create_and_remove_on_delete(server: Server) {
    let logs = CapturedLogs::default();
    let _guard = logs.install();
    let f = Fixture::new(server).await;
    f.server.make_legacy_user("app", APP_PASSWORD).await;

    let body = f.invoke("Create", STACK_ID, f.props(&["fresh"])).await;
    assert_eq!(body["Data"]["AdoptedUsers"], "app", "{body:#}");
    assert_eq!(body["Data"]["AdoptedDatabases"], "", "{body:#}");
    assert!(
        reason(&body).contains("user `app` used as it is: adopted"),
        "{body:#}"
    );
    assert_eq!(
        f.server.user_mark_on("app").await,
        None,
        "an adopted user is not marked"
    );
    f.server.login("app", APP_PASSWORD, "fresh").await.unwrap();

    let body = f.invoke("Delete", STACK_ID, f.props(&["fresh"])).await;
    let kept = "user `app` kept: adopted (it existed before;";
    assert!(reason(&body).contains(kept), "{body:#}");
    assert!(logs.text().contains(kept), "{}", logs.text());
    assert!(f.server.users().await.contains(&"app".to_owned()));
    assert!(!f.server.databases().await.contains(&"fresh".to_owned()));
}

#[tokio::test]
async fn mariadb_an_adopted_user_survives_create_and_remove_on_delete() {
    an_adopted_user_survives_create_and_remove_on_delete(Server::Maria(MariaDb::start().await))
        .await;
}

#[tokio::test]
async fn postgres_an_adopted_user_survives_create_and_remove_on_delete() {
    an_adopted_user_survives_create_and_remove_on_delete(Server::Pg(Postgres::start().await)).await;
}

/// Planning found neither `late` nor `late_user`, then someone else created both before
/// rds-init's statements ran: its plain `CREATE`s are refused as "already exists", and both
/// are adopted, not marked. Runs after that (a retried Create) still adopt them.
async fn what_appears_after_planning_is_adopted_not_marked(server: Server) {
    let f = Fixture::new(server).await;
    let database = Identifier::parse(IdentifierKind::Database, "late").unwrap();
    let user = Identifier::parse(IdentifierKind::User, "late_user").unwrap();
    let plan = Plan {
        actions: vec![
            Action::CreateDatabase(database.clone()),
            Action::CreateUser(user.clone()),
        ],
        notes: vec![],
    };
    f.server.make_legacy_database("late").await;
    f.server
        .make_legacy_user("late_user", "their-Pa55word")
        .await;

    let (admin, password) = f.server.admin();
    let master = DatabaseSecret::from_json(&f.server.secret(admin, &password).to_string()).unwrap();
    let settings = f.server.settings();
    let connection = connect(&master, None, &settings).await.unwrap();
    let mut runner = StatementRunner::new(&master, &settings, connection);
    let passwords = [(user.clone(), SecretString::from(APP_PASSWORD))].into();
    let creator = Creator::new(STACK_ID, LOGICAL_RESOURCE_ID);
    let found = carry_out(master.engine, &creator, &plan, &passwords, &mut runner).await;
    runner.close().await;
    let found = found.unwrap();
    assert_eq!(f.server.mark_on("late").await, None);
    assert_eq!(f.server.user_mark_on("late_user").await, None);
    assert_eq!(
        found,
        FoundExisting {
            databases: vec![database],
            users: vec![user],
        }
    );
    assert_eq!(
        f.server.legacy_rows("late").await,
        ["data from before the stack"]
    );

    for _ in 0..2 {
        let body = f.invoke("Create", STACK_ID, f.props(&["late"])).await;
        assert_eq!(body["Data"]["AdoptedDatabases"], "late", "{body:#}");
        assert_eq!(f.server.mark_on("late").await, None);
    }
}

#[tokio::test]
async fn mariadb_what_appears_after_planning_is_adopted_not_marked() {
    what_appears_after_planning_is_adopted_not_marked(Server::Maria(MariaDb::start().await)).await;
}

#[tokio::test]
async fn postgres_what_appears_after_planning_is_adopted_not_marked() {
    what_appears_after_planning_is_adopted_not_marked(Server::Pg(Postgres::start().await)).await;
}
