//! Actions rendered as SQL for each engine. Pure: identifiers are validated and quoted,
//! literals come from `shared::database::sql` (PostgreSQL passwords as SCRAM-SHA-256
//! verifiers, never the cleartext); the result is executed by [`crate::server`].

use crate::identifier::Identifier;
use crate::plan::Action;
use crate::properties::Access;
use secrecy::{ExposeSecret, SecretString};
use shared::database::{
    Engine,
    sql::{mysql_string_literal, postgres_password_literal, postgres_string_literal},
};
use std::collections::BTreeMap;
use std::fmt;

/// One SQL statement and where it runs.
pub struct Statement {
    /// PostgreSQL: the database to run in (extensions, schema grants); `None`: the master's
    /// own connection.
    pub database: Option<Identifier>,
    pub sql: String,
    /// The SQL holds a password: never print it.
    pub holds_secret: bool,
}

impl Statement {
    fn on_server(sql: String) -> Self {
        Self {
            database: None,
            sql,
            holds_secret: false,
        }
    }

    fn in_database(database: &Identifier, sql: String) -> Self {
        Self {
            database: Some(database.clone()),
            sql,
            holds_secret: false,
        }
    }

    fn secret(sql: String) -> Self {
        Self {
            holds_secret: true,
            ..Self::on_server(sql)
        }
    }
}

impl fmt::Debug for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sql = if self.holds_secret {
            "<holds a password>"
        } else {
            &self.sql
        };
        f.debug_struct("Statement")
            .field("database", &self.database)
            .field("sql", &sql)
            .finish()
    }
}

/// A user's password was needed but not supplied (a bug in the caller, reported not panicked).
#[derive(Debug, thiserror::Error)]
#[error("no password was read for user `{0}`")]
pub struct MissingPassword(pub String);

/// The SQL for `action` on `engine`. `passwords` holds each app user's password.
pub fn render(
    engine: Engine,
    action: &Action,
    passwords: &BTreeMap<Identifier, SecretString>,
) -> Result<Vec<Statement>, MissingPassword> {
    let password = |user: &Identifier| {
        passwords
            .get(user)
            .cloned()
            .ok_or_else(|| MissingPassword(user.to_string()))
    };
    Ok(if engine.is_mysql_family() {
        mysql(action, &password)?
    } else {
        postgres(action, &password)?
    })
}

type PasswordOf<'a> = dyn Fn(&Identifier) -> Result<SecretString, MissingPassword> + 'a;

fn mysql(action: &Action, password: &PasswordOf) -> Result<Vec<Statement>, MissingPassword> {
    let s = Statement::on_server;
    Ok(match action {
        // Plain CREATE on both engines: "already exists" must fail, so that a database or
        // user someone else made after planning is adopted, not marked (crate::ownership).
        Action::CreateDatabase(db) => vec![s(format!(
            "CREATE DATABASE {} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
            db.mysql_quoted()
        ))],
        // Planning never asks for extensions on MariaDB/MySQL.
        Action::CreateExtension { .. } => vec![],
        Action::CreateUser(user) => vec![Statement::secret(format!(
            "CREATE USER {} IDENTIFIED BY {}",
            user.mysql_account(),
            mysql_string_literal(password(user)?.expose_secret())
        ))],
        Action::SetPassword(user) => vec![Statement::secret(format!(
            "ALTER USER {} IDENTIFIED BY {}",
            user.mysql_account(),
            mysql_string_literal(password(user)?.expose_secret())
        ))],
        Action::GrantAccess {
            user,
            database,
            access: Access::Readwrite,
            ..
        } => vec![s(format!(
            "GRANT ALL PRIVILEGES ON {}.* TO {}",
            database.mysql_grant_database(),
            user.mysql_account()
        ))],
        Action::GrantAccess {
            user,
            database,
            access: Access::Readonly,
            ..
        } => {
            // SELECT first so the REVOKE always has a grant to revoke (error 1141 otherwise).
            let grant = format!(
                "GRANT SELECT ON {}.* TO {}",
                database.mysql_grant_database(),
                user.mysql_account()
            );
            vec![
                s(grant.clone()),
                s(mysql_revoke_all(user, database)),
                s(grant),
            ]
        }
        Action::RevokeAccess { user, database } => vec![
            s(format!(
                "GRANT SELECT ON {}.* TO {}",
                database.mysql_grant_database(),
                user.mysql_account()
            )),
            s(mysql_revoke_all(user, database)),
        ],
        Action::DropDatabase(db) => {
            vec![s(format!("DROP DATABASE IF EXISTS {}", db.mysql_quoted()))]
        }
        Action::DropUser(user) => vec![s(format!("DROP USER IF EXISTS {}", user.mysql_account()))],
        // Planning never asks for role memberships or session roles on MariaDB/MySQL: both
        // alternating users get every grant themselves.
        Action::GrantMembership { .. }
        | Action::RevokeMembership { .. }
        | Action::SetSessionRole { .. }
        | Action::DetachClone { .. } => vec![],
    })
}

fn mysql_revoke_all(user: &Identifier, database: &Identifier) -> String {
    format!(
        "REVOKE ALL PRIVILEGES ON {}.* FROM {}",
        database.mysql_grant_database(),
        user.mysql_account()
    )
}

fn postgres(action: &Action, password: &PasswordOf) -> Result<Vec<Statement>, MissingPassword> {
    let s = Statement::on_server;
    let d = Statement::in_database;
    Ok(match action {
        Action::CreateDatabase(db) => vec![s(format!("CREATE DATABASE {}", db.pg_quoted()))],
        Action::CreateExtension {
            database,
            extension,
        } => vec![d(
            database,
            format!("CREATE EXTENSION IF NOT EXISTS {}", extension.pg_quoted()),
        )],
        Action::CreateUser(user) => vec![Statement::secret(format!(
            "CREATE ROLE {} WITH LOGIN PASSWORD {}",
            user.pg_quoted(),
            postgres_password_literal(&password(user)?)
        ))],
        Action::SetPassword(user) => vec![Statement::secret(format!(
            "ALTER ROLE {} WITH LOGIN PASSWORD {}",
            user.pg_quoted(),
            postgres_password_literal(&password(user)?)
        ))],
        Action::GrantAccess {
            user,
            database,
            access,
            table_creators,
        } => {
            // On RDS the master is not a superuser: membership in a role lets it grant on
            // that role's tables and set default privileges for them, and grant and revoke on
            // the tables the user owns itself (without it a GRANT there fails and a REVOKE
            // does nothing).
            let mut out = pg_master_joins([user].into_iter().chain(table_creators));
            out.extend(match access {
                Access::Readwrite => pg_grant_readwrite(user, database, table_creators),
                Access::Readonly => pg_grant_readonly(user, database, table_creators),
            });
            out
        }
        Action::RevokeAccess { user, database } => pg_revoke_access(user, database),
        Action::DropDatabase(db) => pg_drop_database(db),
        Action::DropUser(user) => vec![
            s(format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = {}",
                postgres_string_literal(user.as_str())
            )),
            s(format!("DROP ROLE IF EXISTS {}", user.pg_quoted())),
        ],
        Action::GrantMembership { role, member } => vec![s(format!(
            "GRANT {} TO {}",
            role.pg_quoted(),
            member.pg_quoted()
        ))],
        Action::RevokeMembership { role, member } => vec![s(format!(
            "REVOKE {} FROM {}",
            role.pg_quoted(),
            member.pg_quoted()
        ))],
        // A role name as a string: the setting holds it verbatim.
        Action::SetSessionRole { user, role } => vec![s(format!(
            "ALTER ROLE {} SET role = {}",
            user.pg_quoted(),
            postgres_string_literal(role.as_str())
        ))],
        Action::DetachClone {
            clone,
            base,
            database,
            table_creators,
        } => pg_detach_clone(clone, base, database, table_creators),
    })
}

/// PostgreSQL read-write access: everything on the database and in its `public` schema, now
/// and (default privileges) on what the user or `table_creators` create later.
fn pg_grant_readwrite(
    user: &Identifier,
    database: &Identifier,
    table_creators: &[Identifier],
) -> Vec<Statement> {
    let d = Statement::in_database;
    let (u, db) = (user.pg_quoted(), database.pg_quoted());
    let mut out = vec![Statement::on_server(format!(
        "GRANT ALL PRIVILEGES ON DATABASE {db} TO {u}"
    ))];
    for sql in [
        // PostgreSQL 15+ no longer lets PUBLIC create in `public`.
        format!("GRANT ALL ON SCHEMA public TO {u}"),
        format!("GRANT ALL ON ALL TABLES IN SCHEMA public TO {u}"),
        format!("GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {u}"),
        format!("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO {u}"),
        format!("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO {u}"),
    ] {
        out.push(d(database, sql));
    }
    for creator in table_creators {
        let c = creator.pg_quoted();
        out.push(d(
            database,
            format!(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {c} IN SCHEMA public GRANT ALL ON TABLES TO {u}"
            ),
        ));
        out.push(d(database, format!("ALTER DEFAULT PRIVILEGES FOR ROLE {c} IN SCHEMA public GRANT ALL ON SEQUENCES TO {u}")));
    }
    out
}

/// PostgreSQL read-only access: whatever the user held is revoked first, then CONNECT and
/// SELECT on the tables of `public`, now and on what `table_creators` create later.
fn pg_grant_readonly(
    user: &Identifier,
    database: &Identifier,
    table_creators: &[Identifier],
) -> Vec<Statement> {
    let s = Statement::on_server;
    let d = Statement::in_database;
    let (u, db) = (user.pg_quoted(), database.pg_quoted());
    let mut out = vec![
        s(format!("REVOKE ALL ON DATABASE {db} FROM {u}")),
        s(format!("GRANT CONNECT ON DATABASE {db} TO {u}")),
    ];
    for sql in pg_revoke_in_database(&u) {
        out.push(d(database, sql));
    }
    out.push(d(database, format!("GRANT USAGE ON SCHEMA public TO {u}")));
    out.push(d(
        database,
        format!("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {u}"),
    ));
    out.push(d(
        database,
        format!("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {u}"),
    ));
    for creator in table_creators {
        let c = creator.pg_quoted();
        out.push(d(database, format!("ALTER DEFAULT PRIVILEGES FOR ROLE {c} IN SCHEMA public GRANT SELECT ON TABLES TO {u}")));
    }
    out
}

/// PostgreSQL: every privilege of `user` on `database` and in its `public` schema, revoked.
fn pg_revoke_access(user: &Identifier, database: &Identifier) -> Vec<Statement> {
    let u = user.pg_quoted();
    let mut out = pg_master_joins([user]);
    out.push(Statement::on_server(format!(
        "REVOKE ALL ON DATABASE {} FROM {u}",
        database.pg_quoted()
    )));
    out.extend(
        pg_revoke_in_database(&u)
            .into_iter()
            .map(|sql| Statement::in_database(database, sql)),
    );
    out
}

/// PostgreSQL: no new sessions, then end the open ones (DROP DATABASE fails while any
/// exist), then the drop.
fn pg_drop_database(db: &Identifier) -> Vec<Statement> {
    let s = Statement::on_server;
    let literal = postgres_string_literal(db.as_str());
    vec![
        s(format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS false",
            db.pg_quoted()
        )),
        s(format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = {literal} AND pid <> pg_backend_pid()"
        )),
        s(format!("DROP DATABASE IF EXISTS {}", db.pg_quoted())),
    ]
}

/// PostgreSQL: the clone of an alternating pair gives what it owns in `database` to `base`
/// and loses every privilege there, its default privileges from `table_creators` included.
fn pg_detach_clone(
    clone: &Identifier,
    base: &Identifier,
    database: &Identifier,
    table_creators: &[Identifier],
) -> Vec<Statement> {
    let d = Statement::in_database;
    let (c, b) = (clone.pg_quoted(), base.pg_quoted());
    // REASSIGN OWNED needs the master in both roles; the revokes on the base's
    // tables and for the creators' default privileges need it in those.
    let mut out = pg_master_joins([clone, base].into_iter().chain(table_creators));
    // First, so the revokes below (and those on the base) reach what the clone made.
    out.push(d(database, format!("REASSIGN OWNED BY {c} TO {b}")));
    out.push(Statement::on_server(format!(
        "REVOKE ALL ON DATABASE {} FROM {c}",
        database.pg_quoted()
    )));
    out.extend(
        pg_revoke_in_database(&c)
            .into_iter()
            .map(|sql| d(database, sql)),
    );
    for creator in table_creators {
        let creator = creator.pg_quoted();
        for kind in ["TABLES", "SEQUENCES"] {
            out.push(d(
                database,
                format!(
                    "ALTER DEFAULT PRIVILEGES FOR ROLE {creator} IN SCHEMA public \
                     REVOKE ALL ON {kind} FROM {c}"
                ),
            ));
        }
    }
    out
}

/// PostgreSQL: the master becomes a member of each of `roles` (on RDS it is not a superuser,
/// and changes privileges on a role's own objects only as a member).
fn pg_master_joins<'a>(roles: impl IntoIterator<Item = &'a Identifier>) -> Vec<Statement> {
    roles
        .into_iter()
        .map(|role| Statement::on_server(format!("GRANT {} TO CURRENT_USER", role.pg_quoted())))
        .collect()
}

/// Everything a user may hold inside one database's `public` schema, revoked.
fn pg_revoke_in_database(u: &str) -> Vec<String> {
    vec![
        format!("REVOKE ALL ON SCHEMA public FROM {u}"),
        format!("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {u}"),
        format!("REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {u}"),
        format!("ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM {u}"),
        format!("ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON SEQUENCES FROM {u}"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identifier::IdentifierKind;

    fn user(name: &str) -> Identifier {
        Identifier::parse(IdentifierKind::User, name).unwrap()
    }
    fn db(name: &str) -> Identifier {
        Identifier::parse(IdentifierKind::Database, name).unwrap()
    }
    fn passwords() -> BTreeMap<Identifier, SecretString> {
        [(user("app"), SecretString::from(r"it's\secret"))].into()
    }

    #[test]
    fn mariadb_databases_are_utf8mb4_and_grants_escape_wildcards() {
        let sql = render(
            Engine::MariaDb,
            &Action::CreateDatabase(db("tenant_pool_1")),
            &passwords(),
        )
        .unwrap();
        assert_eq!(
            sql[0].sql,
            "CREATE DATABASE `tenant_pool_1` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
        );
        let grant = Action::GrantAccess {
            user: user("app"),
            database: db("tenant_pool_1"),
            access: Access::Readwrite,
            table_creators: vec![],
        };
        let sql = render(Engine::MariaDb, &grant, &passwords()).unwrap();
        assert_eq!(
            sql[0].sql,
            r"GRANT ALL PRIVILEGES ON `tenant\_pool\_1`.* TO `app`@`%`"
        );
    }

    #[test]
    fn passwords_are_escaped_and_statements_holding_them_do_not_print() {
        let sql = render(
            Engine::MariaDb,
            &Action::CreateUser(user("app")),
            &passwords(),
        )
        .unwrap();
        assert_eq!(
            sql[0].sql,
            r"CREATE USER `app`@`%` IDENTIFIED BY 'it''s\secret'"
        );
        assert!(!format!("{:?}", sql[0]).contains("secret'"));
        let sql = render(
            Engine::Postgres,
            &Action::SetPassword(user("app")),
            &passwords(),
        )
        .unwrap();
        // A SCRAM verifier, not the password.
        let sql_text = &sql[0].sql;
        assert!(
            sql_text.starts_with(r#"ALTER ROLE "app" WITH LOGIN PASSWORD E'SCRAM-SHA-256$4096:"#),
            "{sql_text}"
        );
        assert!(!sql_text.contains("secret"), "{sql_text}");
        let err = render(
            Engine::Postgres,
            &Action::CreateUser(user("other")),
            &passwords(),
        );
        assert!(err.is_err());
    }

    #[test]
    fn postgres_readwrite_reaches_the_public_schema_in_the_database_itself() {
        let grant = Action::GrantAccess {
            user: user("app"),
            database: db("bp"),
            access: Access::Readwrite,
            table_creators: vec![],
        };
        let sql = render(Engine::Postgres, &grant, &passwords()).unwrap();
        assert_eq!(sql[0].database, None);
        assert!(
            sql.iter()
                .any(|s| s.sql == r#"GRANT ALL ON SCHEMA public TO "app""#
                    && s.database == Some(db("bp")))
        );
    }

    #[test]
    fn postgres_drop_database_ends_sessions_first() {
        let sql = render(
            Engine::Postgres,
            &Action::DropDatabase(db("bp")),
            &passwords(),
        )
        .unwrap();
        assert!(sql[1].sql.contains("pg_terminate_backend") && sql[1].sql.contains("E'bp'"));
        assert_eq!(sql[2].sql, r#"DROP DATABASE IF EXISTS "bp""#);
    }

    fn sql_of(engine: Engine, action: &Action) -> Vec<(Option<String>, String)> {
        render(engine, action, &passwords())
            .unwrap()
            .into_iter()
            .map(|s| (s.database.map(|d| d.to_string()), s.sql))
            .collect()
    }

    #[test]
    fn postgres_grants_and_revokes_make_the_master_a_member_of_the_user_first() {
        let revoke = Action::RevokeAccess {
            user: user("app"),
            database: db("old"),
        };
        let sql = sql_of(Engine::Postgres, &revoke);
        assert_eq!(sql[0], (None, r#"GRANT "app" TO CURRENT_USER"#.to_owned()));
        assert_eq!(
            sql[1],
            (
                None,
                r#"REVOKE ALL ON DATABASE "old" FROM "app""#.to_owned()
            )
        );
        let grant = Action::GrantAccess {
            user: user("reporting"),
            database: db("bp"),
            access: Access::Readonly,
            table_creators: vec![user("app")],
        };
        let sql = sql_of(Engine::Postgres, &grant);
        assert_eq!(
            sql[..2],
            [
                (None, r#"GRANT "reporting" TO CURRENT_USER"#.to_owned()),
                (None, r#"GRANT "app" TO CURRENT_USER"#.to_owned()),
            ]
        );
    }

    #[test]
    fn postgres_clone_upkeep_reassigns_before_it_revokes_and_sets_the_role_as_a_string() {
        let detach = Action::DetachClone {
            clone: user("app_clone"),
            base: user("app"),
            database: db("bp"),
            table_creators: vec![user("writer")],
        };
        let sql = sql_of(Engine::Postgres, &detach);
        let bp = || Some("bp".to_owned());
        assert_eq!(
            sql[..5],
            [
                (None, r#"GRANT "app_clone" TO CURRENT_USER"#.to_owned()),
                (None, r#"GRANT "app" TO CURRENT_USER"#.to_owned()),
                (None, r#"GRANT "writer" TO CURRENT_USER"#.to_owned()),
                (bp(), r#"REASSIGN OWNED BY "app_clone" TO "app""#.to_owned()),
                (
                    None,
                    r#"REVOKE ALL ON DATABASE "bp" FROM "app_clone""#.to_owned()
                ),
            ]
        );
        assert!(sql.contains(&(
            bp(),
            r#"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM "app_clone""#.to_owned()
        )));
        assert_eq!(
            sql.last().unwrap(),
            &(
                bp(),
                r#"ALTER DEFAULT PRIVILEGES FOR ROLE "writer" IN SCHEMA public REVOKE ALL ON SEQUENCES FROM "app_clone""#
                    .to_owned()
            )
        );
        let set_role = Action::SetSessionRole {
            user: user("app_clone"),
            role: user("app"),
        };
        assert_eq!(
            sql_of(Engine::Postgres, &set_role),
            [(
                None,
                r#"ALTER ROLE "app_clone" SET role = E'app'"#.to_owned()
            )]
        );
        let join = Action::GrantMembership {
            role: user("app"),
            member: user("app_clone"),
        };
        assert_eq!(
            sql_of(Engine::Postgres, &join),
            [(None, r#"GRANT "app" TO "app_clone""#.to_owned())]
        );
        // MariaDB/MySQL has no role inheritance: planning grants both users instead.
        for action in [detach, set_role, join] {
            assert!(sql_of(Engine::MariaDb, &action).is_empty(), "{action}");
        }
    }
}
