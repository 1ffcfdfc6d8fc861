//! User-name validation and the copying of MySQL-family grants. Identifiers and literals
//! themselves come from `shared::database::sql`, the suite's one producer of SQL text for
//! values.

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
pub const UNGRANTABLE_ON_RDS: &str = "XA_RECOVER_ADMIN";

/// Rewrites one line of `SHOW GRANTS FOR <from>` so that it grants the same to `to`:
/// `GRANT … TO <from> [IDENTIFIED …] [REQUIRE …] [WITH …]` keeps everything but the password
/// clause (the new user gets its own password last) and keeps `WITH GRANT OPTION`, and
/// MariaDB's `SET DEFAULT ROLE … FOR <from>` is carried over. [`UNGRANTABLE_ON_RDS`] is left
/// out of a line's privileges (the other privileges of that line are kept); `Ok(None)` for a
/// line with nothing left to grant.
pub fn copy_grant(line: &str, from: &str, to: &str) -> Result<Option<String>, SqlTextError> {
    let unsupported = |reason| SqlTextError::UnsupportedGrant {
        line: redact_password_clause(line),
        target: to.to_owned(),
        reason,
    };
    let without_ungrantable;
    let line = if line.contains(UNGRANTABLE_ON_RDS) {
        match drop_ungrantable(line) {
            Some(rest) => {
                without_ungrantable = rest;
                without_ungrantable.as_str()
            }
            None => return Ok(None),
        }
    } else {
        line
    };
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

/// `GRANT a,XA_RECOVER_ADMIN,b ON *.* TO …` without [`UNGRANTABLE_ON_RDS`] (MySQL 8 lists
/// dynamic privileges in one line); `None` when it was the line's only privilege or the line
/// is not a privilege grant.
fn drop_ungrantable(line: &str) -> Option<String> {
    let privileges = line.strip_prefix("GRANT ")?;
    let on = privileges.find(" ON ")?;
    let (privileges, rest) = privileges.split_at(on);
    let kept: Vec<&str> = privileges
        .split(',')
        .map(str::trim)
        .filter(|privilege| *privilege != UNGRANTABLE_ON_RDS)
        .collect();
    (!kept.is_empty()).then(|| format!("GRANT {}{rest}", kept.join(",")))
}

/// What setSecret does with the grants of the other user of a MariaDB/MySQL pair (`to`) so
/// that it ends up with exactly the privileges of the current one (`from`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantCopy {
    /// `to` already holds exactly what `from` holds: nothing is granted or revoked.
    InStep,
    /// Grant `grants` (a grant the master cannot give fails here, before anything is revoked),
    /// then `REVOKE ALL PRIVILEGES, GRANT OPTION FROM <to>` and whatever that leaves
    /// ([`revokes_left_over`]), then `grants` again.
    Replace { grants: Vec<String> },
}

/// Compares the grants of `from` (copied to `to`) with those `to` holds (both as `SHOW
/// GRANTS` prints them; password clauses are not privileges and are ignored).
pub fn grant_copy(
    source_grants: &[String],
    target_grants: &[String],
    from: &str,
    to: &str,
) -> Result<GrantCopy, SqlTextError> {
    let mut grants = Vec::with_capacity(source_grants.len());
    for line in source_grants {
        if let Some(grant) = copy_grant(line, from, to)? {
            grants.push(grant);
        }
    }
    // A line of the target's that cannot be read back is a difference: it is replaced.
    let held: Option<Vec<String>> = target_grants
        .iter()
        .map(|line| copy_grant(line, to, to).ok())
        .collect::<Option<Vec<_>>>()
        .map(|held| held.into_iter().flatten().collect());
    let sorted = |lines: &[String]| {
        let mut lines = lines.to_vec();
        lines.sort();
        lines
    };
    Ok(match held {
        Some(held) if sorted(&held) == sorted(&grants) => GrantCopy::InStep,
        _ => GrantCopy::Replace { grants },
    })
}

/// After `REVOKE ALL PRIVILEGES, GRANT OPTION FROM <to>`, the statements that remove what
/// `SHOW GRANTS FOR <to>` still lists: roles (MySQL 8 keeps them; MariaDB revokes them
/// too), proxy grants, and MariaDB's default role (`SET DEFAULT ROLE NONE`). The account line
/// (`GRANT USAGE ON *.*` with its password, `REQUIRE` and limits) stays. Anything else left
/// is an error: the copy promises exactly the source's privileges.
pub fn revokes_left_over(remaining: &[String], to: &str) -> Result<Vec<String>, SqlTextError> {
    let usage = format!("GRANT USAGE ON *.* TO {to}");
    let marker = format!(" TO {to}");
    let mut revokes = Vec::new();
    for line in remaining {
        if line.starts_with(&usage) {
            continue;
        }
        if line.starts_with("SET DEFAULT ROLE ") {
            revokes.push(format!("SET DEFAULT ROLE NONE FOR {to}"));
            continue;
        }
        let granted = line
            .strip_prefix("GRANT ")
            .and_then(|rest| rest.find(&marker).map(|at| &rest[..at]));
        match granted {
            // A role (or list of roles): no `ON`.
            Some(roles) if !roles.contains(" ON ") => {
                revokes.push(format!("REVOKE {roles} FROM {to}"))
            }
            Some(proxy) if proxy.starts_with("PROXY ON ") => {
                revokes.push(format!("REVOKE {proxy} FROM {to}"))
            }
            _ => {
                return Err(SqlTextError::UnsupportedGrant {
                    line: redact_password_clause(line),
                    target: to.to_owned(),
                    reason: "it is left after REVOKE ALL PRIVILEGES, GRANT OPTION; remove it by hand",
                });
            }
        }
    }
    Ok(revokes)
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

    #[test]
    fn only_the_ungrantable_privilege_is_left_out_of_a_line() {
        let (from, to) = (mysql_account("app", "%"), mysql_account("app_clone", "%"));
        assert_eq!(
            copy_grant(
                "GRANT BACKUP_ADMIN,XA_RECOVER_ADMIN,ROLE_ADMIN ON *.* TO `app`@`%` WITH GRANT OPTION",
                &from,
                &to
            )
            .unwrap()
            .unwrap(),
            "GRANT BACKUP_ADMIN,ROLE_ADMIN ON *.* TO `app_clone`@`%` WITH GRANT OPTION"
        );
    }

    fn lines(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|line| (*line).to_owned()).collect()
    }

    #[test]
    fn a_target_with_exactly_the_source_privileges_is_left_alone() {
        let (from, to) = (mysql_account("app", "%"), mysql_account("app_clone", "%"));
        let source = lines(&[
            "GRANT USAGE ON *.* TO `app`@`%` IDENTIFIED BY PASSWORD '*AAA' REQUIRE SSL",
            "GRANT SELECT, INSERT ON `bp`.* TO `app`@`%` WITH GRANT OPTION",
            "GRANT `reader` TO `app`@`%`",
        ]);
        // Another password hash and another order: the same privileges.
        let target = lines(&[
            "GRANT `reader` TO `app_clone`@`%`",
            "GRANT USAGE ON *.* TO `app_clone`@`%` IDENTIFIED BY PASSWORD '*BBB' REQUIRE SSL",
            "GRANT SELECT, INSERT ON `bp`.* TO `app_clone`@`%` WITH GRANT OPTION",
        ]);
        assert_eq!(
            grant_copy(&source, &target, &from, &to).unwrap(),
            GrantCopy::InStep
        );
    }

    #[test]
    fn a_target_that_differs_in_any_way_is_replaced_by_the_source_grants() {
        let (from, to) = (mysql_account("app", "%"), mysql_account("app_clone", "%"));
        let source = lines(&[
            "GRANT USAGE ON *.* TO `app`@`%` IDENTIFIED BY PASSWORD '*AAA'",
            "GRANT SELECT ON `bp`.* TO `app`@`%` WITH GRANT OPTION",
        ]);
        let replaced = GrantCopy::Replace {
            grants: lines(&[
                "GRANT USAGE ON *.* TO `app_clone`@`%`",
                "GRANT SELECT ON `bp`.* TO `app_clone`@`%` WITH GRANT OPTION",
            ]),
        };
        for target in [
            // More privileges on the database.
            &[
                "GRANT USAGE ON *.* TO `app_clone`@`%`",
                "GRANT SELECT, DELETE ON `bp`.* TO `app_clone`@`%` WITH GRANT OPTION",
            ][..],
            // No grant option.
            &[
                "GRANT USAGE ON *.* TO `app_clone`@`%`",
                "GRANT SELECT ON `bp`.* TO `app_clone`@`%`",
            ],
            // Another database, a role, a default role.
            &[
                "GRANT `reader` TO `app_clone`@`%`",
                "GRANT USAGE ON *.* TO `app_clone`@`%`",
                "GRANT SELECT ON `bp`.* TO `app_clone`@`%` WITH GRANT OPTION",
                "GRANT ALL PRIVILEGES ON `old`.* TO `app_clone`@`%`",
                "SET DEFAULT ROLE `reader` FOR `app_clone`@`%`",
            ],
            // A line that cannot be read back (a MySQL partial revoke).
            &[
                "GRANT USAGE ON *.* TO `app_clone`@`%`",
                "GRANT SELECT ON `bp`.* TO `app_clone`@`%` WITH GRANT OPTION",
                "REVOKE INSERT ON `mysql`.* FROM `app_clone`@`%`",
            ],
            // Just created: nothing yet.
            &["GRANT USAGE ON *.* TO `app_clone`@`%`"],
        ] {
            assert_eq!(
                grant_copy(&source, &lines(target), &from, &to).unwrap(),
                replaced,
                "{target:?}"
            );
        }
    }

    #[test]
    fn what_revoke_all_leaves_is_revoked_one_by_one() {
        let to = mysql_account("app_clone", "%");
        assert_eq!(
            revokes_left_over(
                &lines(&[
                    "GRANT `reader`,`writer` TO `app_clone`@`%` WITH ADMIN OPTION",
                    "GRANT USAGE ON *.* TO `app_clone`@`%` IDENTIFIED BY PASSWORD '*BBB' REQUIRE SSL",
                    "GRANT PROXY ON `other`@`%` TO `app_clone`@`%` WITH GRANT OPTION",
                    "SET DEFAULT ROLE `reader` FOR `app_clone`@`%`",
                ]),
                &to
            )
            .unwrap(),
            lines(&[
                "REVOKE `reader`,`writer` FROM `app_clone`@`%`",
                "REVOKE PROXY ON `other`@`%` FROM `app_clone`@`%`",
                "SET DEFAULT ROLE NONE FOR `app_clone`@`%`",
            ])
        );
        let err = revokes_left_over(&lines(&["GRANT SELECT ON `bp`.* TO `app_clone`@`%`"]), &to)
            .unwrap_err()
            .to_string();
        assert!(err.contains("left after REVOKE ALL"), "{err}");
    }
}
