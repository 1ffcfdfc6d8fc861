//! The seam between the rotation protocol and what a secret's credentials are for. A secret's
//! `engine` picks its [`CredentialTarget`] in [`CredentialTarget::of`], and nowhere else; the
//! target's module does the three steps that differ (createSecret's new value, setSecret,
//! testSecret). The entry guard and finishSecret are the same for every target (`lib.rs`).
//!
//! - [`mariadb_mysql`] and [`postgres`]: database users. Each implements
//!   `database_users::DatabaseUsers` (`log_in`, `change_own_password`,
//!   `provision_alternate`, `test`); [`crate::database_rotation`] runs the single-user and
//!   alternating-users steps on top of it.
//! - [`generic`]: a generated value in `password`, no external system.
//! - [`redis`]: an ElastiCache replication group's AUTH token (`ROTATE`, then `SET`).
//!
//! Adding a target (Redis) is one module, one variant below and its `engine` name in
//! [`CredentialTarget::of`]; the compiler then lists every match that must handle it.

pub mod generic;
pub mod mariadb_mysql;
pub mod postgres;
pub mod redis;

pub use generic::{FormatError, GenericFormat};

use self::redis::{Redis, RedisSecret};
use crate::database_rotation;
use crate::secret_document::{MalformedSecret, SecretDocument};
use crate::{RotationError, StepContext, StepOutcome};
use mariadb_mysql::MariaDbMySql;
use postgres::Postgres;
use secrecy::SecretString;
use serde_json::Value;
use shared::database::{DatabaseSecret, Engine};

/// The `engine` values rotation accepts, for error messages. The database engines' RDS
/// aliases (`aurora-mysql`, `postgresql`, `aurora-postgresql`, …) are [`Engine`]'s.
pub const SUPPORTED_ENGINES: &str = "mariadb, mysql, postgres, generic, redis";
const GENERIC: &str = "generic";
const REDIS: &str = "redis";

/// What a secret's credentials are for, decided by its `engine`.
#[derive(Debug, Clone)]
pub enum CredentialTarget {
    /// `engine: mariadb` or `mysql` (and RDS's aliases).
    MariaDbMySql(DatabaseSecret),
    /// `engine: postgres` (and RDS's aliases).
    Postgres(DatabaseSecret),
    /// `engine: generic`.
    Generic(GenericFormat),
    /// `engine: redis` (an ElastiCache replication group's AUTH token).
    Redis(Redis),
}

/// What createSecret puts in the pending version: a new `password`, and a new `username` when
/// the user changes (alternating users). Every other field is kept.
pub struct NewCredentials {
    pub username: Option<String>,
    pub password: SecretString,
}

impl CredentialTarget {
    /// The target a secret version names: the one place its `engine` is read.
    pub fn of(document: &SecretDocument) -> Result<Self, MalformedSecret> {
        let fields = document.fields()?;
        let engine = match fields.get("engine") {
            Some(Value::String(engine)) => engine.trim(),
            Some(_) => return Err(MalformedSecret::EngineNotAString),
            None => return Err(MalformedSecret::MissingEngine),
        };
        if engine.eq_ignore_ascii_case(GENERIC) {
            return Ok(Self::Generic(GenericFormat::of(&fields)?));
        }
        if engine.eq_ignore_ascii_case(REDIS) {
            return Ok(Self::Redis(Redis(RedisSecret::of(&fields)?)));
        }
        let Ok(engine) = engine.parse::<Engine>() else {
            return Err(MalformedSecret::UnsupportedEngine(engine.to_owned()));
        };
        let secret = document.database()?;
        Ok(match engine {
            Engine::MariaDb | Engine::MySql => Self::MariaDbMySql(secret),
            Engine::Postgres => Self::Postgres(secret),
        })
    }

    /// createSecret: the credentials of the pending version (`self` is the current one's).
    pub(crate) async fn new_credentials(
        &self,
        step: &StepContext<'_>,
    ) -> Result<NewCredentials, RotationError> {
        match self {
            Self::MariaDbMySql(current) | Self::Postgres(current) => {
                database_rotation::new_credentials(current, step).await
            }
            Self::Generic(format) => Ok(NewCredentials {
                username: None,
                password: format.new_value(step).await?,
            }),
            Self::Redis(target) => Ok(NewCredentials {
                username: None,
                password: target.new_token(step).await?,
            }),
        }
    }

    /// setSecret: the target accepts the pending credentials (`self` is the current version's).
    pub(crate) async fn set(
        self,
        pending: &SecretDocument,
        step: &mut StepContext<'_>,
    ) -> Result<StepOutcome, RotationError> {
        match self {
            Self::MariaDbMySql(current) => {
                database_rotation::set(&MariaDbMySql, current, pending, step).await
            }
            Self::Postgres(current) => {
                database_rotation::set(&Postgres, current, pending, step).await
            }
            // Nothing outside Secrets Manager holds the value.
            Self::Generic(_) => Ok(StepOutcome::NothingToSet),
            Self::Redis(current) => current.set(pending, step).await,
        }
    }

    /// testSecret: the pending credentials work (`self` is the pending version's target).
    pub(crate) async fn test(
        self,
        pending: &SecretDocument,
        step: &mut StepContext<'_>,
    ) -> Result<StepOutcome, RotationError> {
        match self {
            Self::MariaDbMySql(pending) => {
                database_rotation::test(&MariaDbMySql, &pending, step).await
            }
            Self::Postgres(pending) => database_rotation::test(&Postgres, &pending, step).await,
            Self::Generic(format) => {
                format
                    .check(pending)
                    .map_err(crate::malformed(step.secret_id, crate::plan::AWSPENDING))?;
                Ok(StepOutcome::PendingVerified)
            }
            Self::Redis(_) => redis::test(pending, step).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> SecretDocument {
        SecretDocument::new(SecretString::from(text))
    }

    #[test]
    fn kinds_follow_engine_and_masterarn() {
        assert!(matches!(
            CredentialTarget::of(&doc(r#"{"engine":"generic","password":"x"}"#)),
            Ok(CredentialTarget::Generic(GenericFormat::Password))
        ));
        let single = r#"{"engine":"mariadb","host":"h","port":3306,"username":"u","password":"p"}"#;
        assert!(matches!(
            CredentialTarget::of(&doc(single)),
            Ok(CredentialTarget::MariaDbMySql(secret)) if database_rotation::master_arn(&secret).is_none()
        ));
        let multi = r#"{"engine":"postgres","host":"h","port":5432,"username":"u","password":"p","masterarn":"arn:m"}"#;
        assert!(matches!(
            CredentialTarget::of(&doc(multi)),
            Ok(CredentialTarget::Postgres(secret)) if database_rotation::master_arn(&secret) == Some("arn:m")
        ));
    }

    #[test]
    fn every_engine_name_picks_its_family() {
        for (engine, family) in [
            ("mariadb", "mariadb_mysql"),
            ("mysql", "mariadb_mysql"),
            ("aurora-mysql", "mariadb_mysql"),
            ("postgres", "postgres"),
            ("postgresql", "postgres"),
            ("aurora-postgresql", "postgres"),
            ("generic", "generic"),
            ("Generic", "generic"),
            ("redis", "redis"),
            ("Redis", "redis"),
        ] {
            let text = format!(
                r#"{{"engine":"{engine}","replicationGroupId":"g","host":"h","port":1,"username":"u","password":"p-16-characters!"}}"#
            );
            let picked = match CredentialTarget::of(&doc(&text)).unwrap() {
                CredentialTarget::MariaDbMySql(_) => "mariadb_mysql",
                CredentialTarget::Postgres(_) => "postgres",
                CredentialTarget::Generic(_) => "generic",
                CredentialTarget::Redis(_) => "redis",
            };
            assert_eq!(picked, family, "{engine}");
        }
    }

    #[test]
    fn an_unknown_engine_is_malformed_and_names_the_supported_ones() {
        for (text, expected) in [
            (
                r#"{"engine":"memcached","host":"h","port":11211,"password":"Secret-77"}"#,
                "unsupported database engine `memcached`; supported engines: mariadb, mysql, postgres, generic, redis",
            ),
            (
                r#"{"engine":"oracle","host":"h","port":1521,"username":"u","password":"Secret-77"}"#,
                "unsupported database engine `oracle`; supported engines: mariadb, mysql, postgres, generic, redis",
            ),
            (
                r#"{"host":"h","port":3306,"username":"u","password":"Secret-77"}"#,
                "missing field `engine`; supported engines: mariadb, mysql, postgres, generic, redis",
            ),
            (
                r#"{"engine":3306,"password":"Secret-77"}"#,
                "field `engine` must be a string; supported engines: mariadb, mysql, postgres, generic, redis",
            ),
        ] {
            let err = CredentialTarget::of(&doc(text)).unwrap_err();
            assert_eq!(err.to_string(), expected);
        }
    }

    #[test]
    fn malformed_secrets_never_quote_the_password() {
        for text in [
            r#"{"engine":"mysql","host":"h","port":3306,"username":"u","password":987654321}"#,
            r#"{"engine":"mysql","host":"h","port":3306,"username":"u","password":"987654321"#,
            r#"["987654321"]"#,
            r#"{"engine":"generic","password":987654321}"#,
        ] {
            let err = CredentialTarget::of(&doc(text)).unwrap_err().to_string();
            assert!(!err.contains("987654321"), "{err}");
        }
        let err = CredentialTarget::of(&doc(
            r#"{"engine":"mysql","port":3306,"username":"u","password":"p"}"#,
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("missing field `host`"), "{err}");
    }
}
