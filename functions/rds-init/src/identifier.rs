//! SQL identifiers (database, user and extension names), validated before any SQL runs.
//!
//! The rule is deliberately narrow so a name means the same on both engines and can never
//! change the meaning of a statement: ASCII letters, digits and `_`, starting with a letter
//! or `_`, 1 to 63 bytes (PostgreSQL silently truncates longer names). Extension names may
//! also contain `-` (`uuid-ossp`). Names are still quoted wherever they reach SQL.

use shared::database::sql;
use std::fmt;

// String literals come from `shared::database::sql` only: PostgreSQL `E'…'` (any
// `standard_conforming_strings`), MariaDB/MySQL for the `NO_BACKSLASH_ESCAPES` sessions
// `shared::database::connect` opens.

/// PostgreSQL's NAMEDATALEN - 1; MariaDB allows 64 for databases, so 63 fits both.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// What a name is, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentifierKind {
    Database,
    User,
    Extension,
}

impl fmt::Display for IdentifierKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdentifierKind::Database => "database",
            IdentifierKind::User => "user",
            IdentifierKind::Extension => "extension",
        })
    }
}

/// A validated name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Identifier(String);

/// Why a name was refused. Names the kind, the name (escaped, so control characters show)
/// and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} name {name:?} is not a valid identifier: {rule}")]
pub struct InvalidIdentifier {
    pub kind: IdentifierKind,
    pub name: String,
    pub rule: String,
}

impl Identifier {
    pub fn parse(kind: IdentifierKind, name: &str) -> Result<Self, InvalidIdentifier> {
        let invalid = |rule: String| InvalidIdentifier {
            kind,
            name: name.to_owned(),
            rule,
        };
        if name.is_empty() {
            return Err(invalid("it is empty".into()));
        }
        if name.len() > MAX_IDENTIFIER_BYTES {
            return Err(invalid(format!(
                "it is {} bytes long, the limit is {MAX_IDENTIFIER_BYTES}",
                name.len()
            )));
        }
        let allowed = |c: char| {
            c.is_ascii_alphanumeric() || c == '_' || (kind == IdentifierKind::Extension && c == '-')
        };
        if let Some(bad) = name.chars().find(|&c| !allowed(c)) {
            let extra = if kind == IdentifierKind::Extension {
                ", `_` and `-`"
            } else {
                " and `_`"
            };
            return Err(invalid(format!(
                "it contains {bad:?}; only ASCII letters, digits{extra} are allowed"
            )));
        }
        if name.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
            return Err(invalid("it must start with a letter or `_`".into()));
        }
        Ok(Identifier(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Quoted for MariaDB/MySQL: `` `name` `` ([`sql::mysql_identifier`]).
    pub fn mysql_quoted(&self) -> String {
        sql::mysql_identifier(&self.0)
    }

    /// Quoted for a MariaDB/MySQL database-level GRANT or REVOKE, where `_` and `%` in the
    /// database name are wildcards ([`sql::mysql_grant_database`]).
    pub fn mysql_grant_database(&self) -> String {
        sql::mysql_grant_database(&self.0)
    }

    /// A MariaDB/MySQL account name for host `%`: `` `name`@`%` ``.
    pub fn mysql_account(&self) -> String {
        sql::mysql_account(&self.0, "%")
    }

    /// Quoted for PostgreSQL: `"name"` ([`sql::postgres_identifier`]).
    pub fn pg_quoted(&self) -> String {
        sql::postgres_identifier(&self.0)
    }
}

/// The names joined by `separator` (`Data` values, notes).
pub fn join(names: &[Identifier], separator: &str) -> String {
    names
        .iter()
        .map(Identifier::as_str)
        .collect::<Vec<_>>()
        .join(separator)
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(name: &str) -> Result<Identifier, InvalidIdentifier> {
        Identifier::parse(IdentifierKind::Database, name)
    }

    #[test]
    fn ordinary_names_are_accepted() {
        for name in ["bp", "tenant_pool_1", "_x", "App2", &"a".repeat(63)] {
            assert_eq!(db(name).unwrap().as_str(), name);
        }
        assert!(Identifier::parse(IdentifierKind::Extension, "uuid-ossp").is_ok());
    }

    #[test]
    fn hostile_and_malformed_names_are_refused_and_named() {
        for (name, rule) in [
            ("x; DROP DATABASE bp", "contains ';'"),
            ("a'b", "contains '\\''"),
            ("a`b", "contains '`'"),
            ("a\"b", "contains '\"'"),
            ("", "empty"),
            (&"a".repeat(65), "65 bytes"),
            ("1abc", "start with a letter"),
            ("tenant-pool", "contains '-'"),
            ("bä", "contains 'ä'"),
        ] {
            let err = db(name).unwrap_err().to_string();
            assert!(err.contains(rule), "{name}: {err}");
            assert!(err.starts_with("database name "), "{err}");
            assert!(err.contains(&format!("{name:?}")), "{err}");
        }
        let err = Identifier::parse(IdentifierKind::Extension, "-x").unwrap_err();
        assert!(err.to_string().contains("extension name"), "{err}");
    }

    #[test]
    fn quoting_per_engine() {
        let name = db("tenant_pool_1").unwrap();
        assert_eq!(name.mysql_quoted(), "`tenant_pool_1`");
        assert_eq!(name.mysql_grant_database(), "`tenant\\_pool\\_1`");
        assert_eq!(name.pg_quoted(), "\"tenant_pool_1\"");
        assert_eq!(name.mysql_account(), "`tenant_pool_1`@`%`");
    }
}
