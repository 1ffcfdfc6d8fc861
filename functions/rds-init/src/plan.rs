//! Pure planning: the wanted state plus what the server has now → the actions to take, in
//! order. No SQL runs here and no SDK type appears; [`crate::statements`] renders actions as
//! SQL and [`crate::server`] carries them out.

use crate::identifier::{self, Identifier};
use crate::ownership::{Creator, Ownership};
use crate::properties::{Access, TenantDatabaseSpec, UserGrant};
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
    /// PostgreSQL: direct role memberships as (role, member); empty on MariaDB/MySQL.
    pub role_memberships: BTreeSet<(String, String)>,
    /// PostgreSQL: the role each role's sessions act as (`ALTER ROLE … SET role = …`), where
    /// one is set; empty on MariaDB/MySQL.
    pub session_roles: BTreeMap<String, String>,
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
    /// PostgreSQL, alternating users: `member` (the clone) becomes a member of `role` (the
    /// base), so it has the base's privileges.
    GrantMembership {
        role: Identifier,
        member: Identifier,
    },
    /// PostgreSQL, alternating users: a membership the other way round (the base in the
    /// clone) ends; it would make the clone a second privilege holder and forbid the right one.
    RevokeMembership {
        role: Identifier,
        member: Identifier,
    },
    /// PostgreSQL, alternating users: every session of `user` (the clone) acts as `role` (the
    /// base), so what it creates belongs to the base.
    SetSessionRole {
        user: Identifier,
        role: Identifier,
    },
    /// PostgreSQL, alternating users: in `database`, what `clone` owns goes to `base`, and
    /// every privilege `clone` holds there itself is revoked (it has the base's through
    /// membership), so nothing outlives a revoke on the base.
    DetachClone {
        clone: Identifier,
        base: Identifier,
        database: Identifier,
        /// The readwrite users whose future tables default privileges may name the clone in.
        table_creators: Vec<Identifier>,
    },
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
            Action::GrantMembership { role, member } => {
                write!(f, "make user `{member}` a member of `{role}`")
            }
            Action::RevokeMembership { role, member } => {
                write!(f, "end user `{member}`'s membership in `{role}`")
            }
            Action::SetSessionRole { user, role } => {
                write!(f, "make every session of user `{user}` act as `{role}`")
            }
            Action::DetachClone {
                clone,
                base,
                database,
                ..
            } => write!(
                f,
                "hand what user `{clone}` owns in database `{database}` to `{base}` and revoke \
                 `{clone}`'s own privileges there"
            ),
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
    #[error(
        "user `{user}` (secret {secret_arn}) is the clone of alternating users `{base}` / \
         `{user}`, and role `{base}` does not exist: on PostgreSQL `{base}` holds the \
         privileges of both; give the secret the username `{base}` (rotation creates `{user}`) \
         or create role `{base}`"
    )]
    AlternateBaseMissing {
        user: String,
        base: String,
        secret_arn: String,
    },
}

/// Create and Update: creates what is missing, sets passwords that no longer work, and
/// (re)applies every grant, so running it twice changes nothing the second time. Nothing is
/// dropped; what an Update removed from the lists is kept and noted. Alternating users (a
/// secret with `masterarn`) are granted and revoked as one: see [`grantees`] and
/// [`clone_upkeep`].
pub fn plan_apply(
    engine: Engine,
    spec: &TenantDatabaseSpec,
    previous: Option<&PreviousSpec>,
    state: &ServerState,
) -> Result<Plan, PlanError> {
    let mut plan = Plan::default();
    let postgres = engine == Engine::Postgres;
    check_extensions(engine, spec, state, &mut plan)?;
    create_databases(postgres, spec, state, &mut plan);
    create_users(spec, state, &mut plan);
    let grantees = spec
        .users
        .iter()
        .map(|user| grantees(engine, user, state))
        .collect::<Result<Vec<_>, _>>()?;
    let revoked = removed_from_lists(spec, previous, state);
    if postgres {
        // Before the grants and revokes: they must reach what the clone made.
        for (user, databases) in spec.users.iter().zip(managed_databases(spec, &revoked)) {
            plan.actions
                .extend(clone_upkeep(spec, user, state, &databases));
        }
    }
    for (user, grantees) in spec.users.iter().zip(&grantees) {
        for db in &user.databases {
            let table_creators = table_creators(postgres, spec, user, db);
            for grantee in grantees {
                plan.actions.push(Action::GrantAccess {
                    user: grantee.clone(),
                    database: db.clone(),
                    access: user.access,
                    table_creators: table_creators.clone(),
                });
            }
        }
    }
    if let Some(previous) = previous {
        note_kept_databases(spec, previous, &mut plan);
    }
    for (databases, grantees) in revoked.iter().zip(&grantees) {
        for db in databases {
            for grantee in grantees {
                plan.actions.push(Action::RevokeAccess {
                    user: grantee.clone(),
                    database: db.clone(),
                });
            }
        }
    }
    Ok(plan)
}

/// PostgreSQL: every extension must be available before anything runs. Other engines: the
/// extensions are noted as ignored.
fn check_extensions(
    engine: Engine,
    spec: &TenantDatabaseSpec,
    state: &ServerState,
    plan: &mut Plan,
) -> Result<(), PlanError> {
    if engine == Engine::Postgres {
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
    Ok(())
}

/// The databases that do not exist yet, then (PostgreSQL) every extension in every database.
fn create_databases(
    postgres: bool,
    spec: &TenantDatabaseSpec,
    state: &ServerState,
    plan: &mut Plan,
) {
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
}

/// The users that do not exist yet, and a new password for those whose secret's password
/// no longer logs in (unless a rotation is under way).
fn create_users(spec: &TenantDatabaseSpec, state: &ServerState, plan: &mut Plan) {
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
}

/// An Update never drops a database: the ones removed from `Databases` are noted as kept.
fn note_kept_databases(spec: &TenantDatabaseSpec, previous: &PreviousSpec, plan: &mut Plan) {
    let kept: Vec<String> = previous
        .databases
        .iter()
        .filter(|db| !spec.databases.contains(db))
        .map(|db| format!("`{db}`"))
        .collect();
    if !kept.is_empty() {
        plan.notes.push(format!(
            "database(s) {} removed from Databases are kept, with their data",
            kept.join(", ")
        ));
    }
}

/// Per user of `spec`, the databases an Update removed from its list that still exist (only
/// those can have grants to revoke).
fn removed_from_lists(
    spec: &TenantDatabaseSpec,
    previous: Option<&PreviousSpec>,
    state: &ServerState,
) -> Vec<Vec<Identifier>> {
    spec.users
        .iter()
        .map(|user| {
            let before = previous.and_then(|p| p.user_databases.get(&user.secret_arn));
            before
                .into_iter()
                .flatten()
                .filter(|db| !user.databases.contains(db) && state.databases.contains(db.as_str()))
                .cloned()
                .collect()
        })
        .collect()
}

/// Per user of `spec`, every database this plan grants or revokes it something in.
fn managed_databases(
    spec: &TenantDatabaseSpec,
    revoked: &[Vec<Identifier>],
) -> Vec<Vec<Identifier>> {
    spec.users
        .iter()
        .zip(revoked)
        .map(|(user, revoked)| user.databases.iter().chain(revoked).cloned().collect())
        .collect()
}

/// The users that get a spec user's grants and revokes. A single user: itself. Alternating
/// users on PostgreSQL: the base only, the one privilege holder (the clone has the base's
/// privileges through membership); on MariaDB/MySQL, which has no role inheritance: both
/// users, each that exists (the current one is created by this plan if missing). A user that
/// does not exist never gets a grant: MariaDB would create it without a password.
fn grantees(
    engine: Engine,
    user: &UserGrant,
    state: &ServerState,
) -> Result<Vec<Identifier>, PlanError> {
    let exists = |name: &Identifier| *name == user.username || state.users.contains(name.as_str());
    let Some(pair) = &user.alternating else {
        return Ok(vec![user.username.clone()]);
    };
    if engine.is_mysql_family() {
        return Ok([&pair.base, &pair.clone]
            .into_iter()
            .filter(|name| exists(name))
            .cloned()
            .collect());
    }
    if !exists(&pair.base) {
        return Err(PlanError::AlternateBaseMissing {
            user: user.username.to_string(),
            base: pair.base.to_string(),
            secret_arn: user.secret_arn.clone(),
        });
    }
    Ok(vec![pair.base.clone()])
}

/// PostgreSQL: the role that holds a spec user's privileges and owns what it creates.
fn privilege_holder(user: &UserGrant) -> &Identifier {
    user.alternating
        .as_ref()
        .map_or(&user.username, |pair| &pair.base)
}

/// PostgreSQL: the other readwrite users of `db`, whose future tables `user` must be able to
/// use (default privileges are per creating role). Empty on MariaDB/MySQL.
fn table_creators(
    postgres: bool,
    spec: &TenantDatabaseSpec,
    user: &UserGrant,
    db: &Identifier,
) -> Vec<Identifier> {
    if !postgres {
        return Vec::new();
    }
    let holder = privilege_holder(user);
    spec.users
        .iter()
        .filter(|other| other.access == Access::Readwrite && other.databases.contains(db))
        .map(privilege_holder)
        .filter(|creator| *creator != holder)
        .cloned()
        .collect()
}

/// PostgreSQL, alternating users whose clone exists (or is created by this plan; [`grantees`]
/// has made sure the base exists): the clone is a member of the base and never the other way
/// round, its sessions act as the base, and in every database of `databases` it owns nothing
/// and holds nothing itself. Memberships and the session role are changed only when the
/// server differs; the per-database part is re-applied every run, like grants.
fn clone_upkeep(
    spec: &TenantDatabaseSpec,
    user: &UserGrant,
    state: &ServerState,
    databases: &[Identifier],
) -> Vec<Action> {
    let Some(pair) = &user.alternating else {
        return Vec::new();
    };
    if pair.clone != user.username && !state.users.contains(pair.clone.as_str()) {
        return Vec::new();
    }
    let (base, clone) = (&pair.base, &pair.clone);
    let member = |role: &Identifier, member: &Identifier| {
        state
            .role_memberships
            .contains(&(role.to_string(), member.to_string()))
    };
    let mut actions = Vec::new();
    if member(clone, base) {
        actions.push(Action::RevokeMembership {
            role: clone.clone(),
            member: base.clone(),
        });
    }
    if !member(base, clone) {
        actions.push(Action::GrantMembership {
            role: base.clone(),
            member: clone.clone(),
        });
    }
    if state.session_roles.get(clone.as_str()).map(String::as_str) != Some(base.as_str()) {
        actions.push(Action::SetSessionRole {
            user: clone.clone(),
            role: base.clone(),
        });
    }
    for db in databases {
        actions.push(Action::DetachClone {
            clone: clone.clone(),
            base: base.clone(),
            database: db.clone(),
            table_creators: table_creators(true, spec, user, db),
        });
    }
    actions
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
            alternating: None,
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

    /// `user` whose secret has `masterarn`: `current` is the user `AWSCURRENT` names.
    fn alternating(current: &str, arn: &str, dbs: &[&str], access: Access) -> UserGrant {
        let name = |n: &str| Identifier::parse(IdentifierKind::User, n).unwrap();
        let pair = shared::alternating_users::AlternatingPair::of(current).unwrap();
        UserGrant {
            alternating: Some(crate::properties::AlternatingUsers {
                base: name(&pair.base),
                clone: name(&pair.clone),
            }),
            ..user(current, arn, dbs, access)
        }
    }

    fn described(plan: &Plan) -> Vec<String> {
        plan.actions.iter().map(ToString::to_string).collect()
    }

    /// An Update after a rotation: `AWSCURRENT` names `app_clone`, both users exist and log
    /// in, and `old` was removed from the user's list.
    fn after_rotation(access: Access) -> (TenantDatabaseSpec, PreviousSpec, ServerState) {
        let wanted = spec(
            &["bp", "old"],
            &[],
            vec![alternating("app_clone", "arn:app", &["bp"], access)],
        );
        let previous = PreviousSpec {
            databases: vec![id("bp"), id("old")],
            user_databases: [("arn:app".to_string(), vec![id("bp"), id("old")])].into(),
        };
        let state = ServerState {
            databases: set(&["bp", "old"]),
            users: set(&["app", "app_clone"]),
            users_with_current_password: set(&["app_clone"]),
            ..Default::default()
        };
        (wanted, previous, state)
    }

    #[test]
    fn mariadb_alternating_users_both_get_every_grant_revoke_and_downgrade() {
        let (wanted, previous, state) = after_rotation(Access::Readonly);
        for engine in [Engine::MariaDb, Engine::MySql] {
            let plan = plan_apply(engine, &wanted, Some(&previous), &state).unwrap();
            assert_eq!(
                described(&plan),
                [
                    "grant readonly on database `bp` to user `app`",
                    "grant readonly on database `bp` to user `app_clone`",
                    "revoke user `app`'s access to database `old`",
                    "revoke user `app_clone`'s access to database `old`",
                ],
                "{engine}"
            );
        }
    }

    #[test]
    fn mariadb_grants_go_only_to_alternating_users_that_exist() {
        // Before the first rotation there is no clone: it is not granted anything (MariaDB
        // would create it, without a password).
        let wanted = spec(
            &["bp"],
            &[],
            vec![alternating("app", "arn:app", &["bp"], Access::Readwrite)],
        );
        let plan = plan_apply(Engine::MariaDb, &wanted, None, &ServerState::default()).unwrap();
        assert_eq!(
            described(&plan),
            [
                "create database `bp`",
                "create user `app`",
                "grant readwrite on database `bp` to user `app`",
            ]
        );
        // A secret naming the clone whose base is gone: the clone alone.
        let wanted = spec(
            &["bp"],
            &[],
            vec![alternating(
                "app_clone",
                "arn:app",
                &["bp"],
                Access::Readwrite,
            )],
        );
        let state = ServerState {
            databases: set(&["bp"]),
            users: set(&["app_clone"]),
            users_with_current_password: set(&["app_clone"]),
            ..Default::default()
        };
        let plan = plan_apply(Engine::MariaDb, &wanted, None, &state).unwrap();
        assert_eq!(
            described(&plan),
            ["grant readwrite on database `bp` to user `app_clone`"]
        );
    }

    #[test]
    fn postgres_alternating_users_are_granted_and_revoked_on_the_base_and_the_clone_acts_as_it() {
        let (wanted, previous, mut state) = after_rotation(Access::Readwrite);
        // As secret-rotation leaves it: the clone a member of the base.
        state.role_memberships = [("app".to_owned(), "app_clone".to_owned())].into();
        let plan = plan_apply(Engine::Postgres, &wanted, Some(&previous), &state).unwrap();
        assert_eq!(
            described(&plan),
            [
                "make every session of user `app_clone` act as `app`",
                "hand what user `app_clone` owns in database `bp` to `app` and revoke \
                 `app_clone`'s own privileges there",
                "hand what user `app_clone` owns in database `old` to `app` and revoke \
                 `app_clone`'s own privileges there",
                "grant readwrite on database `bp` to user `app`",
                "revoke user `app`'s access to database `old`",
            ]
        );
        // Whichever user AWSCURRENT names, the same grants.
        let mut before_swap = wanted.clone();
        before_swap.users[0].username = before_swap.users[0].alternating.clone().unwrap().base;
        let mut swapped = state.clone();
        swapped.users_with_current_password = set(&["app"]);
        let other = plan_apply(Engine::Postgres, &before_swap, Some(&previous), &swapped).unwrap();
        assert_eq!(other.actions, plan.actions);
    }

    #[test]
    fn postgres_downgrade_of_alternating_users_touches_the_base_only() {
        let (wanted, previous, mut state) = after_rotation(Access::Readonly);
        state.role_memberships = [("app".to_owned(), "app_clone".to_owned())].into();
        state.session_roles = [("app_clone".to_owned(), "app".to_owned())].into();
        let plan = plan_apply(Engine::Postgres, &wanted, Some(&previous), &state).unwrap();
        let grants: Vec<&Action> = plan
            .actions
            .iter()
            .filter(|a| matches!(a, Action::GrantAccess { .. } | Action::RevokeAccess { .. }))
            .collect();
        assert_eq!(
            grants,
            [
                &Action::GrantAccess {
                    user: id("app"),
                    database: id("bp"),
                    access: Access::Readonly,
                    table_creators: vec![],
                },
                &Action::RevokeAccess {
                    user: id("app"),
                    database: id("old"),
                },
            ]
        );
    }

    #[test]
    fn postgres_clone_upkeep_changes_only_what_differs_and_undoes_a_reversed_membership() {
        let (wanted, _, mut state) = after_rotation(Access::Readwrite);
        state.role_memberships = [("app".to_owned(), "app_clone".to_owned())].into();
        state.session_roles = [("app_clone".to_owned(), "app".to_owned())].into();
        // A second run: only the per-database part, re-applied like grants.
        let plan = plan_apply(Engine::Postgres, &wanted, None, &state).unwrap();
        assert_eq!(
            plan.actions,
            [
                Action::DetachClone {
                    clone: id("app_clone"),
                    base: id("app"),
                    database: id("bp"),
                    table_creators: vec![],
                },
                Action::GrantAccess {
                    user: id("app"),
                    database: id("bp"),
                    access: Access::Readwrite,
                    table_creators: vec![],
                },
            ]
        );
        // A pair set up the other way round (the base a member of the clone), and a session
        // role that names someone else.
        state.role_memberships = [("app_clone".to_owned(), "app".to_owned())].into();
        state.session_roles = [("app_clone".to_owned(), "someone".to_owned())].into();
        let plan = plan_apply(Engine::Postgres, &wanted, None, &state).unwrap();
        assert_eq!(
            described(&plan)[..3],
            [
                "end user `app`'s membership in `app_clone`",
                "make user `app_clone` a member of `app`",
                "make every session of user `app_clone` act as `app`",
            ]
        );
    }

    #[test]
    fn postgres_a_clone_whose_base_does_not_exist_fails_before_anything_runs() {
        let wanted = spec(
            &["bp"],
            &[],
            vec![alternating(
                "app_clone",
                "arn:app",
                &["bp"],
                Access::Readwrite,
            )],
        );
        let state = ServerState {
            databases: set(&["bp"]),
            users: set(&["app_clone"]),
            ..Default::default()
        };
        let err = plan_apply(Engine::Postgres, &wanted, None, &state).unwrap_err();
        assert_eq!(
            err,
            PlanError::AlternateBaseMissing {
                user: "app_clone".into(),
                base: "app".into(),
                secret_arn: "arn:app".into(),
            }
        );
        assert!(
            err.to_string().contains("role `app` does not exist"),
            "{err}"
        );
    }

    #[test]
    fn postgres_before_the_first_rotation_only_the_base_exists_and_gets_the_grants() {
        let wanted = spec(
            &["bp"],
            &[],
            vec![alternating("app", "arn:app", &["bp"], Access::Readwrite)],
        );
        let plan = plan_apply(Engine::Postgres, &wanted, None, &ServerState::default()).unwrap();
        assert_eq!(
            described(&plan),
            [
                "create database `bp`",
                "create user `app`",
                "grant readwrite on database `bp` to user `app`",
            ]
        );
    }

    #[test]
    fn postgres_other_users_default_privileges_name_the_base_of_an_alternating_writer() {
        let wanted = spec(
            &["bp"],
            &[],
            vec![
                alternating("app_clone", "arn:app", &["bp"], Access::Readwrite),
                user("reporting", "arn:ro", &["bp"], Access::Readonly),
            ],
        );
        let state = ServerState {
            databases: set(&["bp"]),
            users: set(&["app", "app_clone", "reporting"]),
            users_with_current_password: set(&["app_clone", "reporting"]),
            role_memberships: [("app".to_owned(), "app_clone".to_owned())].into(),
            session_roles: [("app_clone".to_owned(), "app".to_owned())].into(),
            ..Default::default()
        };
        let plan = plan_apply(Engine::Postgres, &wanted, None, &state).unwrap();
        assert!(
            plan.actions.contains(&Action::GrantAccess {
                user: id("reporting"),
                database: id("bp"),
                access: Access::Readonly,
                table_creators: vec![id("app")],
            }),
            "{:?}",
            plan.actions
        );
    }

    #[test]
    fn a_clone_of_a_single_user_secret_is_never_touched() {
        // Without masterarn, `app_clone` is somebody else's user.
        let wanted = spec(
            &["bp"],
            &[],
            vec![user("app", "arn:app", &["bp"], Access::Readwrite)],
        );
        let state = ServerState {
            databases: set(&["bp"]),
            users: set(&["app", "app_clone"]),
            users_with_current_password: set(&["app"]),
            role_memberships: [("app".to_owned(), "app_clone".to_owned())].into(),
            ..Default::default()
        };
        for engine in [Engine::MariaDb, Engine::Postgres] {
            let plan = plan_apply(engine, &wanted, None, &state).unwrap();
            assert_eq!(
                described(&plan),
                ["grant readwrite on database `bp` to user `app`"],
                "{engine}"
            );
        }
    }
}
