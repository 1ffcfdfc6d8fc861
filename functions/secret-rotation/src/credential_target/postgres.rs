//! `engine: postgres`: the user changes its own password with `ALTER ROLE CURRENT_USER`.
//! Alternating users share one owner: the base role `<base>` (the name without `_clone`)
//! holds every privilege and owns every object; `<base>_clone` is a member of it whose
//! sessions act as it (`ALTER ROLE <clone> SET role = '<base>'`), so what the clone creates
//! belongs to `<base>` and both users can use and alter it across any number of rotations.
//! rds-init keeps the same rule (`shared::alternating_users` names the pair). Passwords reach
//! the server only as SCRAM-SHA-256 verifiers, never in cleartext.

use crate::database_users::{DatabaseUserError, DatabaseUsers, Session};
use crate::sql;
use secrecy::SecretString;
use shared::alternating_users::AlternatingPair;
use shared::database::{
    DatabaseSecret, DbConnection,
    sql::{postgres_password_literal, postgres_string_literal},
};

/// PostgreSQL (and RDS's aliases for it).
pub(crate) struct Postgres;

impl DatabaseUsers for Postgres {
    async fn change_own_password(
        &self,
        connection: &mut DbConnection,
        secret: &DatabaseSecret,
        new_password: &SecretString,
    ) -> Result<(), DatabaseUserError> {
        let literal = postgres_password_literal(new_password);
        Session::new(connection, secret, new_password)
            .execute(
                &format!("changing the password of `{}`", secret.username),
                format!("ALTER ROLE CURRENT_USER WITH PASSWORD {literal}"),
            )
            .await
    }

    /// Whichever user is the target, the pair is first brought to the shared-owner rule
    /// ([`pair_upkeep`]): a no-op, catalog reads only, once it holds. Then the target gets
    /// its password, last.
    async fn provision_alternate(
        &self,
        master: &mut DbConnection,
        master_secret: &DatabaseSecret,
        // The pair follows from the target alone (`shared::alternating_users`).
        _source: &str,
        target: &str,
        password: &SecretString,
    ) -> Result<(), DatabaseUserError> {
        let pair = AlternatingPair::of(target)?;
        let mut session = Session::new(master, master_secret, password);
        let facts = read_pair_facts(&mut session, &pair).await?;
        if !facts.base_exists {
            // Only when the current user is the clone: rotation never invents the owner.
            return Err(DatabaseUserError::MissingBase {
                base: pair.base,
                clone: pair.clone,
            });
        }
        let to = sql::postgres_identifier(target);
        if !facts.clone_exists {
            session
                .execute(
                    &format!("creating role {to}"),
                    format!("CREATE ROLE {to} NOLOGIN"),
                )
                .await?;
        }
        for statement in pair_upkeep(&pair, &facts) {
            session
                .execute(
                    &format!(
                        "`{statement}` (alternating users `{}` / `{}`)",
                        pair.base, pair.clone
                    ),
                    statement,
                )
                .await?;
        }
        let literal = postgres_password_literal(password);
        session
            .execute(
                &format!("setting the password of {to}"),
                format!("ALTER ROLE {to} WITH LOGIN PASSWORD {literal}"),
            )
            .await
    }
}

/// What the master finds about an alternating pair, in the database it is connected to (the
/// one the secret names).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PairFacts {
    pub base_exists: bool,
    pub clone_exists: bool,
    /// The clone is a direct member of the base (what the rule wants).
    pub clone_in_base: bool,
    /// The base is a direct member of the clone (a cycle with the rule's membership).
    pub base_in_clone: bool,
    /// The clone's `role` setting for every database (`ALTER ROLE … SET role`), if any.
    pub clone_session_role: Option<String>,
    /// The clone owns an object in this database, or a shared one (a database).
    pub clone_owns_here: bool,
    /// The master is a member of the base / of the clone (a superuser counts as both).
    pub master_in_base: bool,
    pub master_in_clone: bool,
}

/// The statements, as the master, that bring the pair to the shared-owner rule, in order:
///
/// 1. what the clone owns here goes to the base (`REASSIGN OWNED`, which needs the master in
///    both roles: on RDS it is not a superuser, so it joins them first). Only for a clone
///    that created objects before this rule (a version of rotation without it); first, so
///    the base never loses access to them;
/// 2. a membership of the base in the clone is revoked (older rotations made it when the
///    first rotation started from the clone), or the next statement would be a cycle;
/// 3. the clone becomes a member of the base;
/// 4. every session of the clone acts as the base, so what it creates belongs to the base.
///    Why not default privileges both ways: `ALTER TABLE`, `DROP`, indexes and `TRUNCATE`
///    need the owner, which no grant can give the other user.
///
/// Nothing when the rule holds, so a repeated run (or the rotation back) changes nothing.
pub(crate) fn pair_upkeep(pair: &AlternatingPair, facts: &PairFacts) -> Vec<String> {
    let base = sql::postgres_identifier(&pair.base);
    let clone = sql::postgres_identifier(&pair.clone);
    let mut statements = Vec::new();
    if facts.clone_owns_here {
        if !facts.master_in_clone {
            statements.push(format!("GRANT {clone} TO CURRENT_USER"));
        }
        if !facts.master_in_base {
            statements.push(format!("GRANT {base} TO CURRENT_USER"));
        }
        statements.push(format!("REASSIGN OWNED BY {clone} TO {base}"));
    }
    if facts.base_in_clone {
        statements.push(format!("REVOKE {clone} FROM {base}"));
    }
    if !facts.clone_in_base {
        statements.push(format!("GRANT {base} TO {clone}"));
    }
    if facts.clone_session_role.as_deref() != Some(pair.base.as_str()) {
        // The setting holds the role name verbatim: a string, not an identifier.
        statements.push(format!(
            "ALTER ROLE {clone} SET role = {}",
            postgres_string_literal(&pair.base)
        ));
    }
    statements
}

/// Reads [`PairFacts`] from the catalogs (no lock is taken). Roles that do not exist yet are
/// simply absent: nothing here names a role the server would have to resolve.
async fn read_pair_facts(
    session: &mut Session<'_>,
    pair: &AlternatingPair,
) -> Result<PairFacts, DatabaseUserError> {
    let DbConnection::Postgres(c) = &mut *session.connection else {
        return Err(DatabaseUserError::DriverMismatch(session.engine));
    };
    type Row = (bool, bool, bool, bool, Option<String>, bool, bool, bool);
    let row: Result<Row, _> = sqlx::query_as(
        "WITH b AS (SELECT oid FROM pg_roles WHERE rolname = $1), \
              c AS (SELECT oid, rolconfig FROM pg_roles WHERE rolname = $2) \
         SELECT EXISTS (SELECT 1 FROM b), \
                EXISTS (SELECT 1 FROM c), \
                EXISTS (SELECT 1 FROM pg_auth_members m, b, c \
                        WHERE m.roleid = b.oid AND m.member = c.oid), \
                EXISTS (SELECT 1 FROM pg_auth_members m, b, c \
                        WHERE m.roleid = c.oid AND m.member = b.oid), \
                (SELECT substr(s, 6) FROM c, unnest(c.rolconfig) AS s \
                 WHERE s LIKE 'role=%' LIMIT 1), \
                EXISTS (SELECT 1 FROM pg_shdepend d, c \
                        WHERE d.refclassid = 'pg_authid'::regclass AND d.refobjid = c.oid \
                          AND d.deptype = 'o' \
                          AND d.classid <> 'pg_default_acl'::regclass \
                          AND d.dbid IN (0, (SELECT oid FROM pg_database \
                                             WHERE datname = current_database()))), \
                EXISTS (SELECT 1 FROM b WHERE pg_has_role(b.oid, 'MEMBER')), \
                EXISTS (SELECT 1 FROM c WHERE pg_has_role(c.oid, 'MEMBER'))",
    )
    .bind(&pair.base)
    .bind(&pair.clone)
    .fetch_one(&mut *c)
    .await;
    let row = row.map_err(|e| {
        session.failed(
            &format!(
                "reading roles `{}` and `{}` (alternating users)",
                pair.base, pair.clone
            ),
            e,
        )
    })?;
    Ok(PairFacts {
        base_exists: row.0,
        clone_exists: row.1,
        clone_in_base: row.2,
        base_in_clone: row.3,
        clone_session_role: row.4,
        clone_owns_here: row.5,
        master_in_base: row.6,
        master_in_clone: row.7,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> AlternatingPair {
        AlternatingPair::of("app").unwrap()
    }

    /// A pair that keeps the rule.
    fn in_rule() -> PairFacts {
        PairFacts {
            base_exists: true,
            clone_exists: true,
            clone_in_base: true,
            base_in_clone: false,
            clone_session_role: Some("app".into()),
            clone_owns_here: false,
            master_in_base: true,
            master_in_clone: true,
        }
    }

    #[test]
    fn a_pair_in_the_shared_owner_rule_needs_nothing_either_way() {
        assert_eq!(pair_upkeep(&pair(), &in_rule()), Vec::<String>::new());
    }

    #[test]
    fn pair_upkeep_brings_every_older_shape_to_the_rule() {
        let set_role = r#"ALTER ROLE "app_clone" SET role = E'app'"#;
        let join = r#"GRANT "app" TO "app_clone""#;
        for (case, facts, expected) in [
            (
                "a clone just created",
                PairFacts {
                    clone_exists: false,
                    clone_in_base: false,
                    clone_session_role: None,
                    master_in_clone: false,
                    ..in_rule()
                },
                vec![join, set_role],
            ),
            (
                "a clone from a rotation without the session role",
                PairFacts {
                    clone_session_role: None,
                    ..in_rule()
                },
                vec![set_role],
            ),
            (
                "a session role naming another role",
                PairFacts {
                    clone_session_role: Some("someone_else".into()),
                    ..in_rule()
                },
                vec![set_role],
            ),
            (
                "a clone that owns tables, an RDS master in neither role",
                PairFacts {
                    clone_session_role: None,
                    clone_owns_here: true,
                    master_in_base: false,
                    master_in_clone: false,
                    ..in_rule()
                },
                vec![
                    r#"GRANT "app_clone" TO CURRENT_USER"#,
                    r#"GRANT "app" TO CURRENT_USER"#,
                    r#"REASSIGN OWNED BY "app_clone" TO "app""#,
                    set_role,
                ],
            ),
            (
                "a clone that owns tables, a superuser master",
                PairFacts {
                    clone_owns_here: true,
                    ..in_rule()
                },
                vec![r#"REASSIGN OWNED BY "app_clone" TO "app""#],
            ),
            (
                "the base a member of the clone (the reverse)",
                PairFacts {
                    clone_in_base: false,
                    base_in_clone: true,
                    clone_session_role: None,
                    ..in_rule()
                },
                vec![r#"REVOKE "app_clone" FROM "app""#, join, set_role],
            ),
        ] {
            assert_eq!(pair_upkeep(&pair(), &facts), expected, "{case}");
        }
    }

    #[test]
    fn the_base_is_never_made_a_member_of_the_clone() {
        for clone_in_base in [false, true] {
            for base_in_clone in [false, true] {
                let facts = PairFacts {
                    clone_in_base,
                    base_in_clone,
                    ..in_rule()
                };
                let statements = pair_upkeep(&pair(), &facts);
                assert!(
                    !statements
                        .iter()
                        .any(|s| s == r#"GRANT "app_clone" TO "app""#),
                    "{statements:?}"
                );
            }
        }
    }
}
