//! The `Custom::TenantDatabases` properties as CloudFormation sends them, and their validated
//! form ([`TenantDatabaseSpec`]) that planning works from.

use crate::identifier::{Identifier, IdentifierKind, InvalidIdentifier};
use serde::Deserialize;
use shared::alternating_users::AlternatingPair;
use shared::custom_resource::lenient;
use std::fmt;

/// `Properties` of `Custom::TenantDatabases` (without `ServiceToken`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct TenantDatabaseProperties {
    pub master_secret_arn: String,
    pub databases: Vec<String>,
    /// PostgreSQL only; ignored (with a note in the log and `Reason`) on MariaDB/MySQL.
    #[serde(default)]
    pub extensions: Vec<String>,
    #[serde(default)]
    pub users: Vec<UserProperties>,
    #[serde(default, deserialize_with = "lenient::optional_bool")]
    pub remove_on_delete: Option<bool>,
}

/// One app user: its secret holds `username` and `password`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct UserProperties {
    pub secret_arn: String,
    pub databases: Vec<String>,
    pub access: Access,
}

/// What a user may do in its databases.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// All privileges on the databases (PostgreSQL: also on schema `public`, its tables and
    /// sequences), so the user can create tables.
    Readwrite,
    /// `SELECT` on every table, including tables created later.
    Readonly,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Readwrite => "readwrite",
            Access::Readonly => "readonly",
        })
    }
}

/// System databases this resource never creates, grants on or drops.
const RESERVED_DATABASES: &[&str] = &[
    "mysql",
    "information_schema",
    "performance_schema",
    "sys",
    "postgres",
    "template0",
    "template1",
    "rdsadmin",
    // rds-init's own bookkeeping on MariaDB/MySQL.
    crate::ownership::USER_MARKS_DATABASE,
];

/// Properties that cannot be carried out, found before anything runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error(transparent)]
    Identifier(#[from] InvalidIdentifier),
    #[error("database `{0}` is a system database this resource does not manage")]
    ReservedDatabase(String),
    #[error("Databases is empty: list at least one database")]
    NoDatabases,
    #[error("user `{user}` (secret {secret_arn}): database `{database}` is not in Databases")]
    UnlistedDatabase {
        user: String,
        secret_arn: String,
        database: String,
    },
    #[error("user `{user}` is listed twice (secrets {first} and {second})")]
    DuplicateUser {
        user: String,
        first: String,
        second: String,
    },
    #[error(
        "user `{user}` (secret {secret_arn}) is the master user; the master's password and \
         privileges are managed by RDS, not by this resource"
    )]
    MasterUser { user: String, secret_arn: String },
    #[error("user `{user}` (secret {secret_arn}) has an empty Databases list")]
    UserWithoutDatabases { user: String, secret_arn: String },
    #[error(
        "user `{user}` (secret {secret_arn}) rotates with alternating users (its secret has \
         masterarn), but {problem}"
    )]
    AlternatingUsers {
        user: String,
        secret_arn: String,
        problem: String,
    },
}

/// Validated database and extension names (users are added once their secrets are read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseNames {
    pub databases: Vec<Identifier>,
    pub extensions: Vec<Identifier>,
}

impl DatabaseNames {
    /// Validates `Databases` and `Extensions` and every user's `Databases` (no SQL and no AWS
    /// call happens before this).
    pub fn validate(properties: &TenantDatabaseProperties) -> Result<Self, SpecError> {
        let databases = unique(&properties.databases, IdentifierKind::Database)?;
        if databases.is_empty() {
            return Err(SpecError::NoDatabases);
        }
        if let Some(reserved) = databases
            .iter()
            .find(|db| RESERVED_DATABASES.contains(&db.as_str().to_ascii_lowercase().as_str()))
        {
            return Err(SpecError::ReservedDatabase(reserved.to_string()));
        }
        for user in &properties.users {
            unique(&user.databases, IdentifierKind::Database)?;
        }
        Ok(Self {
            databases,
            extensions: unique(&properties.extensions, IdentifierKind::Extension)?,
        })
    }
}

/// One app user as planning sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserGrant {
    pub secret_arn: String,
    /// The user its secret's `AWSCURRENT` version names.
    pub username: Identifier,
    pub databases: Vec<Identifier>,
    pub access: Access,
    /// The secret has `masterarn`: rotation alternates between these two users, and
    /// `username` is one of them.
    pub alternating: Option<AlternatingUsers>,
}

impl UserGrant {
    /// Every user name this entry manages: its own and, with alternating users, the other.
    pub fn managed_names(&self) -> Vec<&Identifier> {
        match &self.alternating {
            Some(pair) => vec![&pair.base, &pair.clone],
            None => vec![&self.username],
        }
    }
}

/// The two users of an alternating pair (`shared::alternating_users` holds the naming rule),
/// both validated as identifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlternatingUsers {
    /// `<base>`: on PostgreSQL the one privilege holder and object owner.
    pub base: Identifier,
    /// `<base>_clone`, created by secret-rotation on the first rotation.
    pub clone: Identifier,
}

impl AlternatingUsers {
    /// The pair `username` belongs to; the clone's name must be a valid identifier too.
    fn of(username: &Identifier) -> Result<Self, String> {
        let pair = AlternatingPair::of(username.as_str()).map_err(|e| e.to_string())?;
        let parse = |name: &str| {
            Identifier::parse(IdentifierKind::User, name).map_err(|e| {
                format!("the other user's name is not usable ({e}); choose a shorter user name")
            })
        };
        Ok(Self {
            base: parse(&pair.base)?,
            clone: parse(&pair.clone)?,
        })
    }
}

/// What a user's secret says about it: the user name, and whether the secret rotates with
/// alternating users (`masterarn` present).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretUser {
    pub username: String,
    pub alternating: bool,
}

impl SecretUser {
    /// A secret without `masterarn`.
    pub fn single(username: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            alternating: false,
        }
    }
}

/// Everything the resource should make true, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantDatabaseSpec {
    pub databases: Vec<Identifier>,
    pub extensions: Vec<Identifier>,
    pub users: Vec<UserGrant>,
}

impl TenantDatabaseSpec {
    /// Combines validated names with what the users' secrets say (`secret_users[i]` belongs
    /// to `properties.users[i]`).
    pub fn new(
        properties: &TenantDatabaseProperties,
        names: DatabaseNames,
        secret_users: &[SecretUser],
        master_user: &str,
    ) -> Result<Self, SpecError> {
        let mut users: Vec<UserGrant> = Vec::new();
        for (user, secret_user) in properties.users.iter().zip(secret_users) {
            let grant = UserGrant::new(user, secret_user)?;
            grant.fits(&secret_user.username, &users, &names, master_user)?;
            users.push(grant);
        }
        Ok(Self {
            databases: names.databases,
            extensions: names.extensions,
            users,
        })
    }
}

impl UserGrant {
    /// One entry of `Users` with the user its secret names.
    fn new(user: &UserProperties, secret_user: &SecretUser) -> Result<Self, SpecError> {
        let name = &secret_user.username;
        let username = Identifier::parse(IdentifierKind::User, name)?;
        let alternating = if secret_user.alternating {
            Some(AlternatingUsers::of(&username).map_err(|problem| {
                SpecError::AlternatingUsers {
                    user: name.clone(),
                    secret_arn: user.secret_arn.clone(),
                    problem,
                }
            })?)
        } else {
            None
        };
        Ok(UserGrant {
            secret_arn: user.secret_arn.clone(),
            username,
            databases: unique(&user.databases, IdentifierKind::Database)?,
            access: user.access,
            alternating,
        })
    }

    /// Whether this grant (for the user its secret calls `name`) can join the `earlier`
    /// ones: not the master, no user managed twice, at least one database, each of them listed.
    fn fits(
        &self,
        name: &str,
        earlier: &[UserGrant],
        names: &DatabaseNames,
        master_user: &str,
    ) -> Result<(), SpecError> {
        let managed = self.managed_names();
        if let Some(master) = managed.iter().find(|n| n.as_str() == master_user) {
            return Err(SpecError::MasterUser {
                user: master.to_string(),
                secret_arn: self.secret_arn.clone(),
            });
        }
        if let Some((first, shared)) = earlier.iter().find_map(|u| {
            let shared = u
                .managed_names()
                .into_iter()
                .find(|n| managed.contains(n))?;
            Some((u, shared))
        }) {
            return Err(SpecError::DuplicateUser {
                user: shared.to_string(),
                first: first.secret_arn.clone(),
                second: self.secret_arn.clone(),
            });
        }
        if self.databases.is_empty() {
            return Err(SpecError::UserWithoutDatabases {
                user: name.to_owned(),
                secret_arn: self.secret_arn.clone(),
            });
        }
        if let Some(missing) = self
            .databases
            .iter()
            .find(|db| !names.databases.contains(db))
        {
            return Err(SpecError::UnlistedDatabase {
                user: name.to_owned(),
                secret_arn: self.secret_arn.clone(),
                database: missing.to_string(),
            });
        }
        Ok(())
    }
}

/// Validated names in their first-listed order, duplicates dropped.
fn unique(names: &[String], kind: IdentifierKind) -> Result<Vec<Identifier>, InvalidIdentifier> {
    let mut out: Vec<Identifier> = Vec::new();
    for name in names {
        let id = Identifier::parse(kind, name)?;
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn props(value: serde_json::Value) -> TenantDatabaseProperties {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn string_typed_values_and_optional_fields_parse() {
        let p = props(json!({
            "MasterSecretArn": "arn:m", "Databases": ["bp"], "RemoveOnDelete": "true",
            "Users": [{"SecretArn": "arn:u", "Databases": ["bp"], "Access": "readonly"}]
        }));
        assert_eq!(p.remove_on_delete, Some(true));
        assert_eq!(p.users[0].access, Access::Readonly);
        assert!(p.extensions.is_empty());
        let err = serde_json::from_value::<TenantDatabaseProperties>(
            json!({"MasterSecretArn": "a", "Databases": [], "Databse": 1}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `Databse`"), "{err}");
    }

    #[test]
    fn hostile_names_anywhere_are_refused_before_anything_runs() {
        let p = props(json!({"MasterSecretArn": "a", "Databases": ["bp", "x; DROP DATABASE bp"]}));
        let err = DatabaseNames::validate(&p).unwrap_err().to_string();
        assert!(err.contains("\"x; DROP DATABASE bp\""), "{err}");
        let p = props(json!({"MasterSecretArn": "a", "Databases": ["bp"], "Extensions": ["a`b"]}));
        assert!(DatabaseNames::validate(&p).is_err());
        let p = props(json!({"MasterSecretArn": "a", "Databases": ["mysql"]}));
        assert_eq!(
            DatabaseNames::validate(&p).unwrap_err(),
            SpecError::ReservedDatabase("mysql".into())
        );
        let p = props(json!({"MasterSecretArn": "a", "Databases": ["_orchestrator_rds_init"]}));
        assert!(DatabaseNames::validate(&p).is_err());
    }

    #[test]
    fn users_are_checked_against_the_databases_and_the_master() {
        let p = props(json!({
            "MasterSecretArn": "a", "Databases": ["bp", "bp"],
            "Users": [{"SecretArn": "arn:u", "Databases": ["other"], "Access": "readwrite"}]
        }));
        let names = DatabaseNames::validate(&p).unwrap();
        assert_eq!(names.databases.len(), 1);
        let single = |name: &str| [SecretUser::single(name)];
        let err = TenantDatabaseSpec::new(&p, names.clone(), &single("app"), "admin").unwrap_err();
        assert!(matches!(err, SpecError::UnlistedDatabase { .. }), "{err}");
        let err =
            TenantDatabaseSpec::new(&p, names.clone(), &single("admin"), "admin").unwrap_err();
        assert!(matches!(err, SpecError::MasterUser { .. }), "{err}");
        let err = TenantDatabaseSpec::new(&p, names, &single("a'b"), "admin").unwrap_err();
        assert!(err.to_string().starts_with("user name \"a'b\""), "{err}");
    }

    fn alternating(name: &str) -> SecretUser {
        SecretUser {
            username: name.to_owned(),
            alternating: true,
        }
    }

    #[test]
    fn a_secret_with_masterarn_manages_both_users_of_its_pair() {
        let p = props(json!({
            "MasterSecretArn": "a", "Databases": ["bp"],
            "Users": [{"SecretArn": "arn:u", "Databases": ["bp"], "Access": "readwrite"}]
        }));
        let names = DatabaseNames::validate(&p).unwrap();
        for current in ["app", "app_clone"] {
            let spec = TenantDatabaseSpec::new(&p, names.clone(), &[alternating(current)], "admin")
                .unwrap();
            let user = &spec.users[0];
            assert_eq!(user.username.as_str(), current);
            let pair = user.alternating.as_ref().unwrap();
            assert_eq!(
                (pair.base.as_str(), pair.clone.as_str()),
                ("app", "app_clone")
            );
        }
        let spec =
            TenantDatabaseSpec::new(&p, names.clone(), &[SecretUser::single("app")], "admin")
                .unwrap();
        assert_eq!(spec.users[0].alternating, None);
    }

    #[test]
    fn an_alternating_pair_that_cannot_exist_or_collides_is_refused() {
        let p = props(json!({
            "MasterSecretArn": "a", "Databases": ["bp"],
            "Users": [{"SecretArn": "arn:u", "Databases": ["bp"], "Access": "readwrite"}]
        }));
        let names = DatabaseNames::validate(&p).unwrap();
        let err = TenantDatabaseSpec::new(
            &p,
            names.clone(),
            &[alternating("app_clone_clone")],
            "admin",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("has no stable alternating pair"),
            "{err}"
        );
        // 60 bytes: the clone's name would be 66, over the 63 both engines keep.
        let long = "a".repeat(60);
        let err =
            TenantDatabaseSpec::new(&p, names.clone(), &[alternating(&long)], "admin").unwrap_err();
        assert!(
            matches!(err, SpecError::AlternatingUsers { .. })
                && err.to_string().contains("choose a shorter user name"),
            "{err}"
        );
        // The master's own pair is not an app user's.
        let err =
            TenantDatabaseSpec::new(&p, names.clone(), &[alternating("admin_clone")], "admin")
                .unwrap_err();
        assert!(matches!(err, SpecError::MasterUser { .. }), "{err}");

        let two = props(json!({
            "MasterSecretArn": "a", "Databases": ["bp"],
            "Users": [{"SecretArn": "arn:one", "Databases": ["bp"], "Access": "readwrite"},
                      {"SecretArn": "arn:two", "Databases": ["bp"], "Access": "readonly"}]
        }));
        let names = DatabaseNames::validate(&two).unwrap();
        let err = TenantDatabaseSpec::new(
            &two,
            names,
            &[alternating("app"), SecretUser::single("app_clone")],
            "admin",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "user `app_clone` is listed twice (secrets arn:one and arn:two)"
        );
    }
}
