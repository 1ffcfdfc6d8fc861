//! Which databases and users rds-init created, so that `RemoveOnDelete` drops only those.
//!
//! A listed database or user that already exists is adopted: used as it is. Dropping it on
//! Delete would destroy what this resource never owned. So every database and user rds-init
//! creates gets a mark naming the stack and the logical resource ([`Creator::mark`]), set
//! right after its `CREATE` and never on one that already existed. The `CREATE` is plain (no
//! `IF NOT EXISTS`): if someone else created the thing between planning and the statement,
//! the server's "already exists" error ([`already_exists`]) makes it adopted, never marked.
//! A Delete drops a database or user only if its mark is exactly this resource's; no mark,
//! an empty one or another resource's means adopted: kept and reported.
//!
//! One mark per engine and kind:
//! - **PostgreSQL**: `COMMENT ON DATABASE` and `COMMENT ON ROLE`. Stored by the server
//!   (`pg_shdescription`), gone with the database or role, read for all in one query each,
//!   kept by `pg_dumpall` (a database's also by `pg_dump --create`); only the owner (the
//!   master), a role with `CREATEROLE` or a superuser may set them, so an app user cannot
//!   forge them.
//! - **MariaDB/MySQL databases**: a table `_orchestrator_rds_init` inside the database whose
//!   table comment is the mark (created in one statement, so the mark exists completely or not
//!   at all), holding the same text as a row for whoever looks. Database comments would be
//!   tidier, but only MariaDB 10.5+ has them (`CREATE DATABASE … COMMENT`); MySQL 8 does not,
//!   and one mark must serve both. The table lives and dies with the database, is dumped with
//!   it, and all marks are read in one query on `information_schema.TABLES`. An app user with
//!   `readwrite` could alter it, but that user already holds `DROP` on the database, so it
//!   gains nothing; a tool that empties the database removes the mark, and the database is
//!   then kept.
//! - **MariaDB/MySQL users**: a row per created user (`'<user>'@'%'`, the only host rds-init
//!   manages) in the table `created_users` of a bookkeeping database `_orchestrator_rds_init`
//!   ([`USER_MARKS_DATABASE`], made on the first user rds-init creates, reserved as a name in
//!   `Databases`). Accounts have no place for a mark both engines share: MySQL 8.0.21+ has
//!   `CREATE USER … COMMENT` / `ATTRIBUTE`, MariaDB 10.11 has neither, and the `mysql` schema
//!   is not writable on RDS. No app user is granted anything on that database, so none can
//!   forge a row. Unlike the other marks a row does not die with the account: rds-init deletes
//!   it when it drops the user and rewrites it when it creates one, but a user dropped and
//!   re-created by hand under the same name would still look like this resource's.
//!
//! Every doubt keeps the database or user: a mark lost, changed or never written (rds-init
//! stopped between the `CREATE` and the mark, the bookkeeping database dropped) means it is
//! kept on Delete.

use crate::plan::Action;
use crate::server::ServerError;
use crate::statements::Statement;
use shared::database::sql::{mysql_identifier, mysql_string_literal, postgres_string_literal};
use shared::database::{DbConnection, Engine, server_error_code};
use std::collections::BTreeMap;
use std::fmt;

/// MariaDB/MySQL: the table inside each created database that carries the mark.
pub const MARKER_TABLE: &str = "_orchestrator_rds_init";
/// MariaDB/MySQL: the database whose [`USER_MARKS_TABLE`] holds a row per created user.
pub const USER_MARKS_DATABASE: &str = "_orchestrator_rds_init";
pub const USER_MARKS_TABLE: &str = "created_users";

/// The custom resource a request acts for: what a mark names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creator {
    pub stack_id: String,
    pub logical_resource_id: String,
}

impl Creator {
    pub fn new(stack_id: impl Into<String>, logical_resource_id: impl Into<String>) -> Self {
        Self {
            stack_id: stack_id.into(),
            logical_resource_id: logical_resource_id.into(),
        }
    }

    /// The text set on a database or user this resource created. The stack id is an ARN
    /// with the stack's unique id, so a later stack of the same name does not own it.
    pub fn mark(&self) -> String {
        format!(
            "created by orchestrator rds-init for stack {} resource {}",
            self.stack_id, self.logical_resource_id
        )
    }

    /// Whose a database or user is, from the mark found on it (`None`: no mark).
    pub fn judge(&self, found: Option<&str>) -> Ownership {
        match found {
            None | Some("") => Ownership::Unmarked,
            Some(mark) if mark == self.mark() => Ownership::Ours,
            Some(mark) => Ownership::OtherResource(mark.to_owned()),
        }
    }
}

/// Whose a database or user is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// This resource created it: `RemoveOnDelete` drops it.
    Ours,
    /// It existed before this resource listed it (or lost its mark): adopted, kept.
    Unmarked,
    /// Its mark names another stack or resource: adopted, kept.
    OtherResource(String),
}

impl fmt::Display for Ownership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ownership::Ours => f.write_str("created by this resource"),
            Ownership::Unmarked => {
                f.write_str("adopted (it existed before; it has no rds-init mark of this resource)")
            }
            Ownership::OtherResource(mark) => {
                write!(
                    f,
                    "adopted (its rds-init mark names another resource: {mark:?})"
                )
            }
        }
    }
}

/// The statements that keep the marks true after `action` ran: a database or user it just
/// created is marked as this resource's; a MariaDB/MySQL user it dropped loses its row (a
/// PostgreSQL role's comment and a database's mark go with them). Nothing for other actions.
pub fn mark_statements(engine: Engine, action: &Action, creator: &Creator) -> Vec<Statement> {
    let mark = creator.mark();
    let on_server = |sql: String| Statement {
        database: None,
        sql,
        holds_secret: false,
    };
    let user_marks = format!(
        "{}.{}",
        mysql_identifier(USER_MARKS_DATABASE),
        mysql_identifier(USER_MARKS_TABLE)
    );
    match (engine, action) {
        (Engine::MariaDb | Engine::MySql, Action::CreateDatabase(database)) => {
            let table = format!("{}.`{MARKER_TABLE}`", database.mysql_quoted());
            let literal = mysql_string_literal(&mark);
            vec![
                on_server(format!(
                    "CREATE TABLE {table} (created_by VARCHAR(2048) NOT NULL) COMMENT = {literal}"
                )),
                on_server(format!(
                    "INSERT INTO {table} (created_by) VALUES ({literal})"
                )),
            ]
        }
        (Engine::MariaDb | Engine::MySql, Action::CreateUser(user)) => vec![
            on_server(format!(
                "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
                mysql_identifier(USER_MARKS_DATABASE)
            )),
            on_server(format!(
                "CREATE TABLE IF NOT EXISTS {user_marks} (\
                 user_name VARCHAR(80) NOT NULL PRIMARY KEY, created_by VARCHAR(2048) NOT NULL) \
                 COMMENT = 'users orchestrator rds-init created (host %), one row each'"
            )),
            // A row left by a user dropped by hand is replaced: this account is new.
            on_server(format!(
                "REPLACE INTO {user_marks} (user_name, created_by) VALUES ({}, {})",
                mysql_string_literal(user.as_str()),
                mysql_string_literal(&mark)
            )),
        ],
        (Engine::MariaDb | Engine::MySql, Action::DropUser(user)) => vec![on_server(format!(
            "DELETE FROM {user_marks} WHERE user_name = {}",
            mysql_string_literal(user.as_str())
        ))],
        (Engine::Postgres, Action::CreateDatabase(database)) => vec![on_server(format!(
            "COMMENT ON DATABASE {} IS {}",
            database.pg_quoted(),
            postgres_string_literal(&mark)
        ))],
        (Engine::Postgres, Action::CreateUser(user)) => vec![on_server(format!(
            "COMMENT ON ROLE {} IS {}",
            user.pg_quoted(),
            postgres_string_literal(&mark)
        ))],
        (
            _,
            Action::DropUser(_)
            | Action::CreateExtension { .. }
            | Action::SetPassword(_)
            | Action::GrantAccess { .. }
            | Action::RevokeAccess { .. }
            | Action::DropDatabase(_)
            | Action::GrantMembership { .. }
            | Action::RevokeMembership { .. }
            | Action::SetSessionRole { .. }
            | Action::DetachClone { .. },
        ) => vec![],
    }
}

/// Whether `action` failed only because what it creates already exists (SQLSTATE or MySQL
/// error number `code`): someone else created it after planning. It is then adopted: used as
/// it is, never marked.
pub fn already_exists(action: &Action, code: Option<&str>) -> bool {
    match (action, code) {
        // MySQL/MariaDB ER_DB_CREATE_EXISTS; PostgreSQL duplicate_database.
        (Action::CreateDatabase(_), Some("1007" | "42P04")) => true,
        // MySQL/MariaDB ER_CANNOT_USER ("Operation CREATE USER failed"); PostgreSQL
        // duplicate_object.
        (Action::CreateUser(_), Some("1396" | "42710")) => true,
        _ => false,
    }
}

/// The marks found on the server, by database and by user name (those without one are
/// absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marks {
    pub databases: BTreeMap<String, String>,
    pub users: BTreeMap<String, String>,
}

/// Every database's and every user's mark.
pub async fn read_marks(connection: &mut DbConnection) -> Result<Marks, ServerError> {
    let (databases, users) = match connection {
        DbConnection::MySql(c) => {
            let databases = sqlx::query_as(
                "SELECT CAST(TABLE_SCHEMA AS CHAR), CAST(TABLE_COMMENT AS CHAR) \
                 FROM information_schema.TABLES WHERE TABLE_NAME = '_orchestrator_rds_init'",
            )
            .fetch_all(&mut *c)
            .await;
            let users = sqlx::query_as(
                "SELECT CAST(user_name AS CHAR), CAST(created_by AS CHAR) \
                 FROM `_orchestrator_rds_init`.`created_users`",
            )
            .fetch_all(&mut *c)
            .await;
            // Until rds-init creates its first user the table does not exist: no user marks.
            let users = match users {
                Err(error) if table_missing(&error) => Ok(Vec::new()),
                other => other,
            };
            (databases, users)
        }
        DbConnection::Postgres(c) => {
            let databases = sqlx::query_as(
                "SELECT datname::text, shobj_description(oid, 'pg_database') FROM pg_database",
            )
            .fetch_all(&mut *c)
            .await;
            let users = sqlx::query_as(
                "SELECT rolname::text, shobj_description(oid, 'pg_authid') FROM pg_roles",
            )
            .fetch_all(&mut *c)
            .await;
            (databases, users)
        }
    };
    let marks = |rows: Result<Vec<(String, Option<String>)>, sqlx::Error>, what| {
        rows.map(|rows| {
            rows.into_iter()
                .filter_map(|(name, mark)| Some((name, mark?)))
                .collect()
        })
        .map_err(|source| ServerError::ReadState { what, source })
    };
    Ok(Marks {
        databases: marks(databases, "rds-init database marks")?,
        users: marks(users, "rds-init user marks")?,
    })
}

/// MySQL/MariaDB ER_NO_SUCH_TABLE or ER_BAD_DB_ERROR.
fn table_missing(error: &sqlx::Error) -> bool {
    matches!(server_error_code(error).as_deref(), Some("1146" | "1049"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identifier::{Identifier, IdentifierKind};

    const STACK: &str = "arn:aws:cloudformation:us-east-1:123456789012:stack/app/1a2b";

    fn db(name: &str) -> Identifier {
        Identifier::parse(IdentifierKind::Database, name).unwrap()
    }

    fn user(name: &str) -> Identifier {
        Identifier::parse(IdentifierKind::User, name).unwrap()
    }

    fn sql(engine: Engine, action: &Action, creator: &Creator) -> Vec<String> {
        mark_statements(engine, action, creator)
            .into_iter()
            .map(|s| s.sql)
            .collect()
    }

    #[test]
    fn the_mark_names_the_stack_and_the_resource() {
        assert_eq!(
            Creator::new(STACK, "TenantDatabases").mark(),
            format!("created by orchestrator rds-init for stack {STACK} resource TenantDatabases")
        );
    }

    #[test]
    fn only_this_resources_exact_mark_is_ours() {
        let creator = Creator::new(STACK, "TenantDatabases");
        assert_eq!(creator.judge(Some(&creator.mark())), Ownership::Ours);
        assert_eq!(creator.judge(None), Ownership::Unmarked);
        assert_eq!(creator.judge(Some("")), Ownership::Unmarked);
        for other in [
            Creator::new(STACK, "OtherDatabases").mark(),
            Creator::new(format!("{STACK}x"), "TenantDatabases").mark(),
            "a comment someone wrote".to_owned(),
        ] {
            assert_eq!(
                creator.judge(Some(&other)),
                Ownership::OtherResource(other.clone())
            );
        }
    }

    #[test]
    fn marks_are_quoted_literals_on_each_engine() {
        let creator = Creator::new(r"stack/it's\odd", "R");
        let create_bp = Action::CreateDatabase(db("bp"));
        // MariaDB sessions run with NO_BACKSLASH_ESCAPES (shared::database), so a backslash is
        // itself; PostgreSQL gets an E'' string, the same under either standard_conforming_strings.
        let literal = r"'created by orchestrator rds-init for stack stack/it''s\odd resource R'";
        assert_eq!(
            sql(Engine::MariaDb, &create_bp, &creator),
            [
                format!(
                    "CREATE TABLE `bp`.`_orchestrator_rds_init` (created_by VARCHAR(2048) NOT NULL) COMMENT = {literal}"
                ),
                format!(
                    "INSERT INTO `bp`.`_orchestrator_rds_init` (created_by) VALUES ({literal})"
                ),
            ]
        );
        let statements = mark_statements(Engine::Postgres, &create_bp, &creator);
        assert_eq!(
            statements[0].sql,
            r#"COMMENT ON DATABASE "bp" IS E'created by orchestrator rds-init for stack stack/it''s\\odd resource R'"#
        );
        assert_eq!(statements[0].database, None);
    }

    #[test]
    fn a_created_user_gets_a_row_or_a_role_comment_and_a_dropped_one_loses_its_row() {
        let creator = Creator::new(STACK, "R");
        let literal = format!("'created by orchestrator rds-init for stack {STACK} resource R'");
        let mysql = sql(Engine::MySql, &Action::CreateUser(user("app")), &creator);
        assert_eq!(mysql.len(), 3);
        assert!(
            mysql[0].starts_with("CREATE DATABASE IF NOT EXISTS `_orchestrator_rds_init`"),
            "{mysql:?}"
        );
        assert!(
            mysql[1].starts_with(
                "CREATE TABLE IF NOT EXISTS `_orchestrator_rds_init`.`created_users` ("
            ),
            "{mysql:?}"
        );
        assert_eq!(
            mysql[2],
            format!(
                "REPLACE INTO `_orchestrator_rds_init`.`created_users` (user_name, created_by) \
                 VALUES ('app', {literal})"
            )
        );
        assert_eq!(
            sql(Engine::MariaDb, &Action::DropUser(user("app")), &creator),
            ["DELETE FROM `_orchestrator_rds_init`.`created_users` WHERE user_name = 'app'"]
        );
        assert_eq!(
            sql(Engine::Postgres, &Action::CreateUser(user("app")), &creator),
            [format!(r#"COMMENT ON ROLE "app" IS E{literal}"#)]
        );
        // The role's comment goes with the role; nothing else is ever marked.
        for action in [
            Action::DropUser(user("app")),
            Action::DropDatabase(db("bp")),
            Action::SetPassword(user("app")),
        ] {
            assert!(
                sql(Engine::Postgres, &action, &creator).is_empty(),
                "{action}"
            );
        }
        assert!(sql(Engine::MariaDb, &Action::DropDatabase(db("bp")), &creator).is_empty());
    }

    #[test]
    fn only_a_create_refused_as_already_existing_is_adopted() {
        let create_db = Action::CreateDatabase(db("bp"));
        let create_user = Action::CreateUser(user("app"));
        for (action, code) in [
            (&create_db, "1007"),
            (&create_db, "42P04"),
            (&create_user, "1396"),
            (&create_user, "42710"),
        ] {
            assert!(already_exists(action, Some(code)), "{action} {code}");
        }
        for (action, code) in [
            (&create_db, Some("1396")),
            (&create_user, Some("1007")),
            (&create_db, Some("42501")),
            (&create_user, None),
            (&Action::DropUser(user("app")), Some("1396")),
        ] {
            assert!(!already_exists(action, code), "{action} {code:?}");
        }
    }
}
