//! Pure planning: the wanted state plus what the server has now → the actions to take, in
//! order. No SQL runs here and no SDK type appears; [`crate::statements`] renders actions as
//! SQL and [`crate::server`] carries them out.

use crate::identifier::{self, Identifier};
use crate::ownership::{Creator, Ownership};
use crate::properties::{Access, TenantDatabaseSpec};
use shared::database::Engine;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// What the server has now, as far as planning needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerState {
    pub databases: BTreeSet<String>,
    /// MariaDB/MySQL: accounts for host `%`; PostgreSQL: roles.
    pub users: BTreeSet<String>,
    /// Existing users whose secret's current password logs in.
    pub users_with_current_password: BTreeSet<String>,
    /// Existing users whose secret's `AWSPENDING` password logs in: secret-rotation has set
    /// the new password and not yet promoted it. Their password is left alone.
    pub users_mid_rotation: BTreeSet<String>,
    /// PostgreSQL: `pg_available_extensions`; empty on MariaDB/MySQL.
    pub available_extensions: BTreeSet<String>,
    /// Each database's rds-init mark, where it has one (see [`crate::ownership`]).
    pub database_marks: BTreeMap<String, String>,
    /// Each user's rds-init mark, where it has one.
    pub user_marks: BTreeMap<String, String>,
}

/// The previous properties of an Update, as far as planning needs them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreviousSpec {
    pub databases: Vec<Identifier>,
    /// Per user secret ARN, the databases that user had.
    pub user_databases: BTreeMap<String, Vec<Identifier>>,
}

/// One step. `Display` describes it for logs; it never contains a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    CreateDatabase(Identifier),
    CreateExtension {
        database: Identifier,
        extension: Identifier,
    },
    CreateUser(Identifier),
    /// The secret's password no longer logs in: set it.
    SetPassword(Identifier),
    GrantAccess {
        user: Identifier,
        database: Identifier,
        access: Access,
        /// PostgreSQL: the other readwrite users of the same database, whose future tables
        /// this user must be able to use (default privileges are per creating role).
        table_creators: Vec<Identifier>,
    },
    /// The database was removed from the user's list.
    RevokeAccess {
        user: Identifier,
        database: Identifier,
    },
    DropDatabase(Identifier),
    DropUser(Identifier),
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::CreateDatabase(db) => write!(f, "create database `{db}`"),
            Action::CreateExtension {
                database,
                extension,
            } => write!(f, "create extension `{extension}` in database `{database}`"),
            Action::CreateUser(user) => write!(f, "create user `{user}`"),
            Action::SetPassword(user) => {
                write!(f, "set the password of user `{user}` from its secret")
            }
            Action::GrantAccess {
                user,
                database,
                access,
                ..
            } => write!(
                f,
                "grant {access} on database `{database}` to user `{user}`"
            ),
            Action::RevokeAccess { user, database } => {
                write!(f, "revoke user `{user}`'s access to database `{database}`")
            }
            Action::DropDatabase(db) => write!(f, "drop database `{db}`"),
            Action::DropUser(user) => write!(f, "drop user `{user}`"),
        }
    }
}

/// The actions and what was deliberately left alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// For the log and the `Reason`: databases kept, extensions ignored, and so on.
    pub notes: Vec<String>,
}

/// Why the wanted state cannot be reached; found before anything runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "extension `{extension}` is not available on this PostgreSQL server \
         (not in pg_available_extensions); install it or remove it from Extensions"
    )]
    UnavailableExtension { extension: String },
}

/// Create and Update: creates what is missing, sets passwords that no longer work, and
/// (re)applies every grant, so running it twice changes nothing the second time. Nothing is
/// dropped; what an Update removed from the lists is kept and noted.
pub fn plan_apply(
    engine: Engine,
    spec: &TenantDatabaseSpec,
    previous: Option<&PreviousSpec>,
    state: &ServerState,
) -> Result<Plan, PlanError> {
    let mut plan = Plan::default();
    let postgres = engine == Engine::Postgres;
    if postgres {
        if let Some(missing) = spec
            .extensions
            .iter()
            .find(|e| !state.available_extensions.contains(e.as_str()))
        {
            return Err(PlanError::UnavailableExtension {
                extension: missing.to_string(),
            });
        }
    } else if !spec.extensions.is_empty() {
        plan.notes.push(format!(
            "Extensions ({}) ignored: extensions are PostgreSQL only and this is {engine}",
            identifier::join(&spec.extensions, ", ")
        ));
    }

    for db in &spec.databases {
        if !state.databases.contains(db.as_str()) {
            plan.actions.push(Action::CreateDatabase(db.clone()));
        }
    }
    if postgres {
        // IF NOT EXISTS on the statement: cheap, and no per-database state to read first.
        for db in &spec.databases {
            for extension in &spec.extensions {
                plan.actions.push(Action::CreateExtension {
                    database: db.clone(),
                    extension: extension.clone(),
                });
            }
        }
    }
    for user in &spec.users {
        let name = user.username.as_str();
        if !state.users.contains(name) {
            plan.actions.push(Action::CreateUser(user.username.clone()));
        } else if state.users_with_current_password.contains(name) {
            // The secret's password works: nothing to do.
        } else if state.users_mid_rotation.contains(name) {
            plan.notes.push(format!(
                "password of user `{name}` left alone: a rotation is in progress (its pending \
                 password logs in)"
            ));
        } else {
            plan.actions
                .push(Action::SetPassword(user.username.clone()));
        }
    }
    for user in &spec.users {
        for db in &user.databases {
            let table_creators = spec
                .users
                .iter()
                .filter(|other| {
                    postgres
                        && other.username != user.username
                        && other.access == Access::Readwrite
                        && other.databases.contains(db)
                })
                .map(|other| other.username.clone())
                .collect();
            plan.actions.push(Action::GrantAccess {
                user: user.username.clone(),
                database: db.clone(),
                access: user.access,
                table_creators,
            });
        }
    }

    if let Some(previous) = previous {
        let kept: Vec<&Identifier> = previous
            .databases
            .iter()
            .filter(|db| !spec.databases.contains(db))
            .collect();
        if !kept.is_empty() {
            let names: Vec<String> = kept.iter().map(|db| format!("`{db}`")).collect();
            plan.notes.push(format!(
                "database(s) {} removed from Databases are kept, with their data",
                names.join(", ")
            ));
        }
        for user in &spec.users {
            let Some(before) = previous.user_databases.get(&user.secret_arn) else {
                continue;
            };
            for db in before.iter().filter(|db| !user.databases.contains(db)) {
                // Only a database that still exists can have grants to revoke.
                if state.databases.contains(db.as_str()) {
                    plan.actions.push(Action::RevokeAccess {
                        user: user.username.clone(),
                        database: db.clone(),
                    });
                }
            }
        }
    }
    Ok(plan)
}

/// Listed databases that exist and that this resource did not create, with why: Create
/// and Update use them as they are (never marking them), and Delete keeps them.
pub fn adopted_databases<'a>(
    spec: &'a TenantDatabaseSpec,
    state: &ServerState,
    creator: &Creator,
) -> Vec<(&'a Identifier, Ownership)> {
    adopted(
        &spec.databases,
        &state.databases,
        &state.database_marks,
        creator,
    )
}

/// Listed users that exist and that this resource did not create, with why: like
/// [`adopted_databases`], used as they are and kept by Delete.
pub fn adopted_users<'a>(
    spec: &'a TenantDatabaseSpec,
    state: &ServerState,
    creator: &Creator,
) -> Vec<(&'a Identifier, Ownership)> {
    adopted(
        spec.users.iter().map(|u| &u.username),
        &state.users,
        &state.user_marks,
        creator,
    )
}

fn adopted<'a>(
    names: impl IntoIterator<Item = &'a Identifier>,
    existing: &BTreeSet<String>,
    marks: &BTreeMap<String, String>,
    creator: &Creator,
) -> Vec<(&'a Identifier, Ownership)> {
    names
        .into_iter()
        .filter(|name| existing.contains(name.as_str()))
        .map(|name| (name, ownership(name, marks, creator)))
        .filter(|(_, ownership)| *ownership != Ownership::Ours)
        .collect()
}

fn ownership(name: &Identifier, marks: &BTreeMap<String, String>, creator: &Creator) -> Ownership {
    creator.judge(marks.get(name.as_str()).map(String::as_str))
}

/// Delete with `RemoveOnDelete`: drops the listed databases this resource created (marked
/// as its own), then the listed users it created (a PostgreSQL role cannot be dropped while
/// it holds privileges in a database). Adopted databases and users are kept, and so is a user
/// with access to a database that stays: dropping it would fail on PostgreSQL. What is
/// already gone is skipped.
pub fn plan_removal(spec: &TenantDatabaseSpec, state: &ServerState, creator: &Creator) -> Plan {
    let mut plan = Plan::default();
    let mut dropped = BTreeSet::new();
    for db in &spec.databases {
        if !state.databases.contains(db.as_str()) {
            plan.notes.push(format!("database `{db}` was already gone"));
            continue;
        }
        match ownership(db, &state.database_marks, creator) {
            Ownership::Ours => {
                dropped.insert(db.as_str());
                plan.actions.push(Action::DropDatabase(db.clone()));
            }
            adopted => plan.notes.push(format!(
                "database `{db}` kept, with its data: {adopted}; RemoveOnDelete drops only \
                 databases rds-init created"
            )),
        }
    }
    for user in &spec.users {
        let name = user.username.as_str();
        if !state.users.contains(name) {
            plan.notes.push(format!("user `{name}` was already gone"));
            continue;
        }
        let kept: Vec<String> = user
            .databases
            .iter()
            .filter(|db| state.databases.contains(db.as_str()) && !dropped.contains(db.as_str()))
            .map(|db| format!("`{db}`"))
            .collect();
        match ownership(&user.username, &state.user_marks, creator) {
            Ownership::Ours if kept.is_empty() => {
                plan.actions.push(Action::DropUser(user.username.clone()));
            }
            Ownership::Ours => plan.notes.push(format!(
                "user `{name}` kept: it has access to database(s) {} that are kept",
                kept.join(", ")
            )),
            adopted => plan.notes.push(format!(
                "user `{name}` kept: {adopted}; RemoveOnDelete drops only users rds-init created"
            )),
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identifier::IdentifierKind;
    use crate::properties::UserGrant;

    fn id(name: &str) -> Identifier {
        Identifier::parse(IdentifierKind::Database, name).unwrap()
    }

    fn user(name: &str, arn: &str, dbs: &[&str], access: Access) -> UserGrant {
        UserGrant {
            secret_arn: arn.into(),
            username: Identifier::parse(IdentifierKind::User, name).unwrap(),
            databases: dbs.iter().map(|d| id(d)).collect(),
            access,
        }
    }

    fn spec(dbs: &[&str], extensions: &[&str], users: Vec<UserGrant>) -> TenantDatabaseSpec {
        TenantDatabaseSpec {
            databases: dbs.iter().map(|d| id(d)).collect(),
            extensions: extensions
                .iter()
                .map(|e| Identifier::parse(IdentifierKind::Extension, e).unwrap())
                .collect(),
            users,
        }
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_fresh_server_gets_databases_extensions_users_and_grants_in_order() {
        let wanted = spec(
            &["bp", "t1"],
            &["pg_trgm"],
            vec![
                user("app", "arn:app", &["bp", "t1"], Access::Readwrite),
                user("ro", "arn:ro", &["bp"], Access::Readonly),
            ],
        );
        let state = ServerState {
            available_extensions: set(&["pg_trgm"]),
            ..Default::default()
        };
        let plan = plan_apply(Engine::Postgres, &wanted, None, &state).unwrap();
        let described: Vec<String> = plan.actions.iter().map(ToString::to_string).collect();
        assert_eq!(
            described,
            [
                "create database `bp`",
                "create database `t1`",
                "create extension `pg_trgm` in database `bp`",
                "create extension `pg_trgm` in database `t1`",
                "create user `app`",
                "create user `ro`",
                "grant readwrite on database `bp` to user `app`",
                "grant readwrite on database `t1` to user `app`",
                "grant readonly on database `bp` to user `ro`",
            ]
        );
        // The readonly user also gets default privileges on the readwrite user's tables.
        assert!(matches!(
            &plan.actions[8],
            Action::GrantAccess { table_creators, .. } if table_creators == &[user("app", "", &[], Access::Readwrite).username]
        ));
    }

    #[test]
    fn a_second_run_creates_nothing_and_only_reapplies_grants() {
        let wanted = spec(
            &["bp"],
            &[],
            vec![user("app", "arn:app", &["bp"], Access::Readwrite)],
        );
        let state = ServerState {
            databases: set(&["bp"]),
            users: set(&["app"]),
            users_with_current_password: set(&["app"]),
            ..Default::default()
        };
        let plan = plan_apply(Engine::MariaDb, &wanted, None, &state).unwrap();
        assert_eq!(plan.actions.len(), 1);
        assert!(matches!(plan.actions[0], Action::GrantAccess { .. }));
    }

    #[test]
    fn a_password_that_no_longer_logs_in_is_set_from_the_secret() {
        let wanted = spec(
            &["bp"],
            &[],
            vec![user("app", "arn:app", &["bp"], Access::Readonly)],
        );
        let state = ServerState {
            databases: set(&["bp"]),
            users: set(&["app"]),
            ..Default::default()
        };
        let plan = plan_apply(Engine::MariaDb, &wanted, None, &state).unwrap();
        assert_eq!(
            plan.actions[0],
            Action::SetPassword(wanted.users[0].username.clone())
        );
    }

    #[test]
    fn a_rotation_in_progress_is_not_fought() {
        let wanted = spec(
            &["bp"],
            &[],
            vec![user("app", "arn:app", &["bp"], Access::Readonly)],
        );
        let state = ServerState {
            databases: set(&["bp"]),
            users: set(&["app"]),
            users_mid_rotation: set(&["app"]),
            ..Default::default()
        };
        let plan = plan_apply(Engine::Postgres, &wanted, None, &state).unwrap();
        assert!(
            !plan
                .actions
                .iter()
                .any(|a| matches!(a, Action::SetPassword(_)))
        );
        assert!(
            plan.notes[0].contains("rotation is in progress"),
            "{:?}",
            plan.notes
        );
    }

    #[test]
    fn update_keeps_removed_databases_and_revokes_removed_grants() {
        let wanted = spec(
            &["bp"],
            &[],
            vec![user("app", "arn:app", &["bp"], Access::Readwrite)],
        );
        let previous = PreviousSpec {
            databases: vec![id("bp"), id("old")],
            user_databases: [("arn:app".to_string(), vec![id("bp"), id("old")])].into(),
        };
        let state = ServerState {
            databases: set(&["bp", "old"]),
            users: set(&["app"]),
            users_with_current_password: set(&["app"]),
            ..Default::default()
        };
        let plan = plan_apply(Engine::MariaDb, &wanted, Some(&previous), &state).unwrap();
        assert!(
            !plan
                .actions
                .iter()
                .any(|a| matches!(a, Action::DropDatabase(_)))
        );
        assert_eq!(
            plan.actions.last().unwrap().to_string(),
            "revoke user `app`'s access to database `old`"
        );
        assert!(plan.notes[0].contains("`old`") && plan.notes[0].contains("kept"));
    }

    #[test]
    fn extensions_are_checked_on_postgres_and_ignored_with_a_note_elsewhere() {
        let wanted = spec(&["bp"], &["vector"], vec![]);
        let err = plan_apply(Engine::Postgres, &wanted, None, &ServerState::default()).unwrap_err();
        assert!(
            err.to_string().contains("`vector` is not available"),
            "{err}"
        );
        let plan = plan_apply(Engine::MariaDb, &wanted, None, &ServerState::default()).unwrap();
        assert!(plan.notes[0].contains("ignored"), "{:?}", plan.notes);
        assert!(
            !plan
                .actions
                .iter()
                .any(|a| matches!(a, Action::CreateExtension { .. }))
        );
    }

    #[test]
    fn removal_drops_databases_before_users_and_skips_what_is_gone() {
        let wanted = spec(
            &["bp", "gone"],
            &[],
            vec![user("app", "arn:app", &["bp"], Access::Readwrite)],
        );
        let state = ServerState {
            databases: set(&["bp"]),
            users: set(&["app"]),
            database_marks: [("bp".to_owned(), creator().mark())].into(),
            user_marks: marked(&["app"]),
            ..Default::default()
        };
        let plan = plan_removal(&wanted, &state, &creator());
        let described: Vec<String> = plan.actions.iter().map(ToString::to_string).collect();
        assert_eq!(described, ["drop database `bp`", "drop user `app`"]);
        assert_eq!(plan.notes, ["database `gone` was already gone"]);
    }

    fn creator() -> Creator {
        Creator::new(
            "arn:aws:cloudformation:eu-west-1:1:stack/s/1",
            "TenantDatabases",
        )
    }

    /// `names`, each marked as [`creator`]'s.
    fn marked(names: &[&str]) -> BTreeMap<String, String> {
        names
            .iter()
            .map(|n| (n.to_string(), creator().mark()))
            .collect()
    }

    #[test]
    fn removal_drops_only_users_marked_as_this_resources_and_keeps_adopted_ones() {
        let wanted = spec(
            &["ours"],
            &[],
            vec![
                user("app", "arn:app", &["ours"], Access::Readwrite),
                user("legacy", "arn:legacy", &["ours"], Access::Readonly),
                user("theirs", "arn:theirs", &["ours"], Access::Readonly),
            ],
        );
        let other_resource = Creator::new(creator().stack_id, "MoreDatabases");
        let mut user_marks = marked(&["app"]);
        user_marks.insert("theirs".to_owned(), other_resource.mark());
        let state = ServerState {
            databases: set(&["ours"]),
            users: set(&["app", "legacy", "theirs"]),
            database_marks: marked(&["ours"]),
            user_marks,
            ..Default::default()
        };
        let plan = plan_removal(&wanted, &state, &creator());
        let described: Vec<String> = plan.actions.iter().map(ToString::to_string).collect();
        assert_eq!(described, ["drop database `ours`", "drop user `app`"]);
        assert_eq!(plan.notes.len(), 2, "{:?}", plan.notes);
        assert!(
            plan.notes[0].starts_with("user `legacy` kept: adopted (it existed before;"),
            "{:?}",
            plan.notes
        );
        assert!(
            plan.notes[1].starts_with("user `theirs` kept: adopted")
                && plan.notes[1].contains("MoreDatabases")
                && plan.notes[1].ends_with("RemoveOnDelete drops only users rds-init created"),
            "{:?}",
            plan.notes
        );
        let adopted: Vec<&str> = adopted_users(&wanted, &state, &creator())
            .iter()
            .map(|(user, _)| user.as_str())
            .collect();
        assert_eq!(adopted, ["legacy", "theirs"]);
    }

    #[test]
    fn removal_drops_only_databases_marked_as_this_resources_and_keeps_adopted_ones() {
        let wanted = spec(
            &["ours", "unmarked", "other_stack", "other_resource"],
            &[],
            vec![],
        );
        let other_stack = Creator::new(
            "arn:aws:cloudformation:eu-west-1:1:stack/s/2",
            "TenantDatabases",
        );
        let other_resource = Creator::new(creator().stack_id, "MoreDatabases");
        let state = ServerState {
            databases: set(&["ours", "unmarked", "other_stack", "other_resource"]),
            database_marks: [
                ("ours".to_owned(), creator().mark()),
                ("other_stack".to_owned(), other_stack.mark()),
                ("other_resource".to_owned(), other_resource.mark()),
            ]
            .into(),
            ..Default::default()
        };
        let plan = plan_removal(&wanted, &state, &creator());
        assert_eq!(plan.actions, [Action::DropDatabase(id("ours"))]);
        assert_eq!(plan.notes.len(), 3, "{:?}", plan.notes);
        assert!(plan.notes[0].starts_with("database `unmarked` kept, with its data: adopted"));
        assert!(
            plan.notes[1].contains("`other_stack` kept") && plan.notes[1].contains("stack/s/2")
        );
        assert!(
            plan.notes[2].contains("`other_resource` kept")
                && plan.notes[2].contains("MoreDatabases")
        );
        let adopted: Vec<&str> = adopted_databases(&wanted, &state, &creator())
            .iter()
            .map(|(db, _)| db.as_str())
            .collect();
        assert_eq!(adopted, ["unmarked", "other_stack", "other_resource"]);
    }

    #[test]
    fn removal_keeps_a_user_with_access_to_a_kept_database() {
        let wanted = spec(
            &["ours", "legacy"],
            &[],
            vec![
                user("app", "arn:app", &["ours", "legacy"], Access::Readwrite),
                user("ro", "arn:ro", &["ours"], Access::Readonly),
            ],
        );
        let state = ServerState {
            databases: set(&["ours", "legacy"]),
            users: set(&["app", "ro"]),
            database_marks: [("ours".to_owned(), creator().mark())].into(),
            user_marks: marked(&["app", "ro"]),
            ..Default::default()
        };
        let plan = plan_removal(&wanted, &state, &creator());
        let described: Vec<String> = plan.actions.iter().map(ToString::to_string).collect();
        assert_eq!(described, ["drop database `ours`", "drop user `ro`"]);
        assert_eq!(
            plan.notes[1],
            "user `app` kept: it has access to database(s) `legacy` that are kept"
        );
    }

    #[test]
    fn a_create_that_finds_a_database_reports_it_as_adopted_and_does_not_create_it() {
        let wanted = spec(&["legacy", "fresh"], &[], vec![]);
        let state = ServerState {
            databases: set(&["legacy"]),
            ..Default::default()
        };
        let plan = plan_apply(Engine::MariaDb, &wanted, None, &state).unwrap();
        assert_eq!(plan.actions, [Action::CreateDatabase(id("fresh"))]);
        let adopted = adopted_databases(&wanted, &state, &creator());
        assert_eq!(adopted, [(&id("legacy"), Ownership::Unmarked)]);
        // A retried Create: what it created before carries its mark and is not adopted.
        let retried = ServerState {
            databases: set(&["legacy", "fresh"]),
            database_marks: [("fresh".to_owned(), creator().mark())].into(),
            ..Default::default()
        };
        assert_eq!(adopted_databases(&wanted, &retried, &creator()).len(), 1);
    }
}
