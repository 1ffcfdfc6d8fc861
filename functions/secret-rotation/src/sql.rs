//! User-name validation and the copying of MySQL grants. Identifiers and literals themselves
//! come from `shared::database::sql`, the suite's one producer of SQL text for values.

use shared::database::Engine;
pub use shared::database::sql::{mysql_account, postgres_identifier};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqlTextError {
    #[error(
        "user name `{name}` is not a valid {engine} user name (letters, digits, `_`, `$`, `-`; starting with a letter or `_`; at most {max} characters)"
    )]
    InvalidUserName {
        name: String,
        engine: Engine,
        max: usize,
    },
    #[error("cannot copy grant `{line}` to {target}: {reason}")]
    UnsupportedGrant {
        line: String,
        target: String,
        reason: &'static str,
    },
}

/// Checks a user name before it is ever put into SQL text.
pub fn validate_user_name(name: &str, engine: Engine) -> Result<(), SqlTextError> {
    // MariaDB allows 80 characters (MySQL 32); PostgreSQL truncates at 63 bytes.
    let max = match engine {
        Engine::MariaDb => 80,
        Engine::MySql => 32,
        Engine::Postgres => 63,
    };
    let mut chars = name.chars();
    let valid_start = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let valid_rest = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '-'));
    if valid_start && valid_rest && name.len() <= max {
        Ok(())
    } else {
        Err(SqlTextError::InvalidUserName {
            name: name.to_owned(),
            engine,
            max,
        })
    }
}

/// A MySQL-family privilege that RDS's master user holds but cannot grant (AWS's template
/// skips it too).
const UNGRANTABLE_ON_RDS: &str = "XA_RECOVER_ADMIN";

/// Rewrites one line of `SHOW GRANTS FOR <from>` so that it grants the same to `to`:
/// `GRANT … TO <from> [IDENTIFIED …] [REQUIRE …] [WITH …]` keeps everything but the password
/// clause (the new user gets its own password last), and MariaDB's `SET DEFAULT ROLE … FOR
/// <from>` is carried over. `Ok(None)` for a line to skip.
pub fn copy_grant(line: &str, from: &str, to: &str) -> Result<Option<String>, SqlTextError> {
    let unsupported = |reason| SqlTextError::UnsupportedGrant {
        line: redact_password_clause(line),
        target: to.to_owned(),
        reason,
    };
    if line.contains(UNGRANTABLE_ON_RDS) {
        return Ok(None);
    }
    if let Some(rest) = line.strip_prefix("SET DEFAULT ROLE ") {
        let role = rest
            .strip_suffix(&format!(" FOR {from}"))
            .ok_or_else(|| unsupported("the account is not where it was expected"))?;
        return Ok(Some(format!("SET DEFAULT ROLE {role} FOR {to}")));
    }
    if !line.starts_with("GRANT ") {
        return Err(unsupported(
            "only GRANT and SET DEFAULT ROLE lines are copied",
        ));
    }
    let marker = format!(" TO {from}");
    let at = line
        .find(&marker)
        .ok_or_else(|| unsupported("the account is not where it was expected"))?;
    let (privileges, tail) = (&line[..at], &line[at + marker.len()..]);
    let options = strip_password_clause(tail.trim_start());
    let mut grant = format!("{privileges} TO {to}");
    if !options.is_empty() {
        grant.push(' ');
        grant.push_str(options);
    }
    Ok(Some(grant))
}

/// Drops a leading `IDENTIFIED BY PASSWORD '…'` / `IDENTIFIED VIA … [USING '…']` clause,
/// keeping `REQUIRE …` and `WITH …`.
fn strip_password_clause(options: &str) -> &str {
    if !options.starts_with("IDENTIFIED ") {
        return options;
    }
    [" REQUIRE ", " WITH "]
        .iter()
        .filter_map(|keyword| options.find(keyword))
        .min()
        .map_or("", |at| options[at..].trim_start())
}

/// A grant line for an error message, without its password hash.
fn redact_password_clause(line: &str) -> String {
    match line.find(" IDENTIFIED ") {
        Some(at) => format!("{} IDENTIFIED …", &line[..at]),
        None => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_user_names_are_refused() {
        for name in [
            "",
            "app`; DROP USER admin; --",
            "app'x",
            "app\"x",
            "1app",
            "app x",
        ] {
            assert!(validate_user_name(name, Engine::MariaDb).is_err(), "{name}");
        }
        assert!(validate_user_name("app_user$1-x", Engine::Postgres).is_ok());
        assert!(validate_user_name(&"a".repeat(33), Engine::MySql).is_err());
        assert!(validate_user_name(&"a".repeat(80), Engine::MariaDb).is_ok());
    }

    #[test]
    fn grants_are_copied_without_the_password_hash() {
        let from = mysql_account("app", "%");
        let to = mysql_account("app_clone", "%");
        assert_eq!(
            copy_grant(
                "GRANT USAGE ON *.* TO `app`@`%` IDENTIFIED BY PASSWORD '*ABC' REQUIRE SSL",
                &from,
                &to
            )
            .unwrap()
            .unwrap(),
            "GRANT USAGE ON *.* TO `app_clone`@`%` REQUIRE SSL"
        );
        assert_eq!(
            copy_grant(
                "GRANT SELECT, INSERT ON `bp`.* TO `app`@`%` WITH GRANT OPTION",
                &from,
                &to
            )
            .unwrap()
            .unwrap(),
            "GRANT SELECT, INSERT ON `bp`.* TO `app_clone`@`%` WITH GRANT OPTION"
        );
        assert_eq!(
            copy_grant("GRANT `reader` TO `app`@`%`", &from, &to)
                .unwrap()
                .unwrap(),
            "GRANT `reader` TO `app_clone`@`%`"
        );
        assert_eq!(
            copy_grant("SET DEFAULT ROLE `reader` FOR `app`@`%`", &from, &to)
                .unwrap()
                .unwrap(),
            "SET DEFAULT ROLE `reader` FOR `app_clone`@`%`"
        );
        assert_eq!(
            copy_grant("GRANT XA_RECOVER_ADMIN ON *.* TO `app`@`%`", &from, &to).unwrap(),
            None
        );
        let err = copy_grant(
            "GRANT PROXY ON ''@'%' TO 'app'@'%' IDENTIFIED BY PASSWORD '*HASH'",
            &from,
            &to,
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains("*HASH"), "{err}");
    }
}
