//! Which databases rds-init created, so that `RemoveOnDelete` drops only those.
//!
//! `CREATE DATABASE IF NOT EXISTS` (and a listed database that already exists) adopts a
//! database silently; dropping it on Delete would destroy data this resource never owned.
//! So every database rds-init creates gets a mark naming the stack and the logical resource
//! ([`Creator::mark`]), set right after `CREATE DATABASE` and never on a database that already
//! existed. A Delete drops a database only if its mark is exactly this resource's; no mark, an
//! empty one or another resource's means adopted: kept and reported.
//!
//! One mark per engine:
//! - **PostgreSQL**: `COMMENT ON DATABASE`. Stored by the server (`pg_shdescription`), read for
//!   every database in one query, kept by `pg_dump --create` and `pg_dumpall`, and only the
//!   database's owner (the master) or a superuser may set it, so an app user cannot forge it.
//! - **MariaDB/MySQL**: a table `_orchestrator_rds_init` inside the database whose table comment
//!   is the mark (created in one statement, so the mark exists completely or not at all),
//!   holding the same text as a row for whoever looks. Database comments would be tidier, but
//!   only MariaDB 10.5+ has them (`CREATE DATABASE … COMMENT`); MySQL 8 does not, and one mark
//!   must serve both. The table lives and dies with the database, is dumped with it, and all
//!   marks are read in one query on `information_schema.TABLES`. An app user with `readwrite`
//!   could alter it, but that user already holds `DROP` on the database, so it gains nothing;
//!   a tool that empties the database removes the mark, and the database is then kept.
//!
//! Every doubt keeps the database: a mark lost, changed or never written (rds-init stopped
//! between `CREATE DATABASE` and the mark) means it is kept on Delete.

use crate::identifier::Identifier;
use crate::server::ServerError;
use crate::statements::Statement;
use shared::database::sql::{mysql_string_literal, postgres_string_literal};
use shared::database::{DbConnection, Engine};
use std::collections::BTreeMap;
use std::fmt;

/// MariaDB/MySQL: the table inside each created database that carries the mark.
pub const MARKER_TABLE: &str = "_orchestrator_rds_init";

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

    /// The text set on a database this resource created. The stack id is an ARN with the
    /// stack's unique id, so a later stack of the same name does not own it.
    pub fn mark(&self) -> String {
        format!(
            "created by orchestrator rds-init for stack {} resource {}",
            self.stack_id, self.logical_resource_id
        )
    }

    /// Whose a database is, from the mark found on it (`None`: no mark).
    pub fn judge(&self, found: Option<&str>) -> Ownership {
        match found {
            None | Some("") => Ownership::Unmarked,
            Some(mark) if mark == self.mark() => Ownership::Ours,
            Some(mark) => Ownership::OtherResource(mark.to_owned()),
        }
    }
}

/// Whose a database is.
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

/// The statements that mark `database`, just created, as this resource's.
pub fn mark_statements(engine: Engine, database: &Identifier, creator: &Creator) -> Vec<Statement> {
    let mark = creator.mark();
    let on_server = |sql: String| Statement {
        database: None,
        sql,
        holds_secret: false,
    };
    match engine {
        Engine::MariaDb | Engine::MySql => {
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
        Engine::Postgres => vec![on_server(format!(
            "COMMENT ON DATABASE {} IS {}",
            database.pg_quoted(),
            postgres_string_literal(&mark)
        ))],
    }
}

/// Every database's mark, by database name (databases without one are absent).
pub async fn read_marks(
    connection: &mut DbConnection,
) -> Result<BTreeMap<String, String>, ServerError> {
    let rows: Result<Vec<(String, Option<String>)>, sqlx::Error> = match connection {
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
                "SELECT datname::text, shobj_description(oid, 'pg_database') FROM pg_database",
            )
            .fetch_all(&mut *c)
            .await
        }
    };
    let rows = rows.map_err(|source| ServerError::ReadState {
        what: "rds-init marks",
        source,
    })?;
    Ok(rows
        .into_iter()
        .filter_map(|(database, mark)| Some((database, mark?)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identifier::IdentifierKind;

    const STACK: &str = "arn:aws:cloudformation:us-east-1:123456789012:stack/app/1a2b";

    fn db(name: &str) -> Identifier {
        Identifier::parse(IdentifierKind::Database, name).unwrap()
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
        let sql: Vec<String> = mark_statements(Engine::MariaDb, &db("bp"), &creator)
            .into_iter()
            .map(|s| s.sql)
            .collect();
        // MariaDB sessions run with NO_BACKSLASH_ESCAPES (shared::database), so a backslash is
        // itself; PostgreSQL gets an E'' string, the same under either standard_conforming_strings.
        let literal = r"'created by orchestrator rds-init for stack stack/it''s\odd resource R'";
        assert_eq!(
            sql,
            [
                format!(
                    "CREATE TABLE `bp`.`_orchestrator_rds_init` (created_by VARCHAR(2048) NOT NULL) COMMENT = {literal}"
                ),
                format!(
                    "INSERT INTO `bp`.`_orchestrator_rds_init` (created_by) VALUES ({literal})"
                ),
            ]
        );
        let sql = mark_statements(Engine::Postgres, &db("bp"), &creator);
        assert_eq!(
            sql[0].sql,
            r#"COMMENT ON DATABASE "bp" IS E'created by orchestrator rds-init for stack stack/it''s\\odd resource R'"#
        );
        assert_eq!(sql[0].database, None);
    }
}
