//! The only producer of SQL text for values and names that cannot be bound as parameters
//! (`CREATE USER … IDENTIFIED BY`, `CREATE ROLE … PASSWORD`, `GRANT … TO`), and the one
//! redaction every error text of rds-init and secret-rotation goes through.
//!
//! Literal rules, chosen so a value means the same whatever the server's settings:
//! - PostgreSQL: escape strings `E'…'` (backslashes and quotes doubled). An `E''` string is read
//!   the same with `standard_conforming_strings` on or off; no `\'` is ever emitted, so
//!   `backslash_quote` does not matter either. Passwords are not sent as literals at all: a
//!   SCRAM-SHA-256 verifier computed here goes in their place ([`postgres_password_verifier`]).
//! - MariaDB/MySQL: quotes doubled, backslashes kept as they are. That reads back exactly only
//!   with `NO_BACKSLASH_ESCAPES`, which [`super::connect`] sets on every session it opens
//!   (whatever the server's global `sql_mode`); use these literals on no other session.
//! - A NUL character cannot be part of PostgreSQL text: a statement holding one fails (the
//!   server refuses it); its meaning never changes.

use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use std::fmt;

/// Iterations of the SCRAM-SHA-256 verifiers (PostgreSQL's default `scram_iterations`).
pub const SCRAM_ITERATIONS: u32 = 4096;
const SCRAM_SALT_BYTES: usize = 16;

/// `` `name` `` with embedded backticks doubled (identifier quoting is not affected by
/// `sql_mode`'s backslash handling).
pub fn mysql_identifier(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `` `user`@`host` ``: an account, the way `SHOW GRANTS` prints it.
pub fn mysql_account(user: &str, host: &str) -> String {
    format!("{}@{}", mysql_identifier(user), mysql_identifier(host))
}

/// A database name for a database-level `GRANT`/`REVOKE`, where `_` and `%` are wildcards:
/// they are escaped with `\` (the grant tables' own escape, independent of `sql_mode`), so
/// `tenant_pool_1` does not also match `tenantXpool_1`.
pub fn mysql_grant_database(name: &str) -> String {
    format!(
        "`{}`",
        name.replace('`', "``")
            .replace('\\', "\\\\")
            .replace('_', "\\_")
            .replace('%', "\\%")
    )
}

/// A MariaDB/MySQL string literal for a session with `NO_BACKSLASH_ESCAPES` (every session
/// [`super::connect`] opens): quotes doubled, backslashes literal.
pub fn mysql_string_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// `"name"` with embedded double quotes doubled.
pub fn postgres_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A PostgreSQL escape-string literal `E'…'`, read the same whatever
/// `standard_conforming_strings` says.
pub fn postgres_string_literal(value: &str) -> String {
    format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// The literal for `CREATE/ALTER ROLE … PASSWORD`: a SCRAM-SHA-256 verifier with a fresh
/// 16-byte random salt and [`SCRAM_ITERATIONS`], as libpq's `PQencryptPasswordConn` (and so
/// psql's `\password`) computes it, so the cleartext never reaches the server or its log.
pub fn postgres_password_literal(password: &SecretString) -> String {
    let salt: [u8; SCRAM_SALT_BYTES] = rand::random();
    postgres_string_literal(&postgres_password_verifier(
        password.expose_secret(),
        &salt,
        SCRAM_ITERATIONS,
    ))
}

/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (RFC 5802/7677, base64). The
/// password is SASLprep-normalised first; one that SASLprep refuses is used as raw bytes, as
/// PostgreSQL and libpq do.
pub fn postgres_password_verifier(password: &str, salt: &[u8], iterations: u32) -> String {
    let prepared =
        stringprep::saslprep(password).map_or_else(|_| password.to_owned(), |p| p.into_owned());
    let salted = salted_password(prepared.as_bytes(), salt, iterations);
    let client_key = hmac_sha256(&salted, b"Client Key");
    let stored_key = Sha256::digest(client_key);
    let server_key = hmac_sha256(&salted, b"Server Key");
    let b64 = |bytes: &[u8]| aws_smithy_types::base64::encode(bytes);
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        b64(salt),
        b64(stored_key.as_slice()),
        b64(&server_key)
    )
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA-256 with one 32-byte block: SCRAM's `Hi()`.
fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut block = salt.to_vec();
    block.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac_sha256(password, &block);
    let mut result = u;
    for _ in 1..iterations {
        u = hmac_sha256(password, &u);
        for (r, x) in result.iter_mut().zip(u) {
            *r ^= x;
        }
    }
    result
}

/// The secret values a function holds (every password it read: master, users, pending and
/// previous versions), to be removed from any error text before it leaves the function
/// (CloudFormation `Reason`, logs, a rotation step's error).
#[derive(Clone, Default)]
pub struct KnownSecrets {
    /// Each value and the escaped forms the literals above give it, longest first.
    forms: Vec<String>,
}

impl KnownSecrets {
    /// Adds a secret value (an empty one hides nothing and is ignored).
    pub fn add(&mut self, secret: &SecretString) {
        let value = secret.expose_secret();
        if value.is_empty() {
            return;
        }
        let forms = [
            value.to_owned(),
            value.replace('\'', "''"),
            value.replace('\\', "\\\\").replace('\'', "''"),
            value.replace('\\', "\\\\"),
        ];
        for form in forms {
            if !self.forms.contains(&form) {
                self.forms.push(form);
            }
        }
        self.forms.sort_by_key(|form| std::cmp::Reverse(form.len()));
    }

    /// These secrets and `secret`.
    pub fn with(mut self, secret: &SecretString) -> Self {
        self.add(secret);
        self
    }

    /// `text` with every known secret (and its escaped SQL forms) replaced by `[REDACTED]`.
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for form in &self.forms {
            if text.contains(form.as_str()) {
                text = text.replace(form.as_str(), "[REDACTED]");
            }
        }
        text
    }

    /// An error and its causes as one line ([`crate::error_chain`]), redacted.
    pub fn redact_error(&self, error: &(dyn std::error::Error + 'static)) -> String {
        self.redact(&crate::error_chain(error))
    }
}

impl fmt::Debug for KnownSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KnownSecrets({} forms)", self.forms.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_the_same_value_whatever_the_server_settings() {
        let password = r#"a'b\c"d\'$$e\"#;
        assert_eq!(mysql_string_literal(password), r#"'a''b\c"d\''$$e\'"#);
        assert_eq!(
            postgres_string_literal(password),
            r#"E'a''b\\c"d\\''$$e\\'"#
        );
    }

    #[test]
    fn identifiers_are_quoted_per_engine() {
        assert_eq!(mysql_account("a`b", "%"), "`a``b`@`%`");
        assert_eq!(postgres_identifier("a\"b"), "\"a\"\"b\"");
        assert_eq!(mysql_grant_database("tenant_pool_1"), r"`tenant\_pool\_1`");
    }

    #[test]
    fn the_scram_verifier_matches_postgres() {
        // RFC 7677's example (password `pencil`, this salt, 4096 iterations): its server
        // signature `v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=` follows from this
        // ServerKey; both keys agree with Python's hashlib.pbkdf2_hmac.
        let salt = aws_smithy_types::base64::decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let verifier = postgres_password_verifier("pencil", &salt, 4096);
        assert_eq!(
            verifier,
            "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
        );
        let literal = postgres_password_literal(&SecretString::from("pencil"));
        assert!(literal.starts_with("E'SCRAM-SHA-256$4096:") && !literal.contains("pencil"));
        assert_ne!(
            literal,
            postgres_password_literal(&SecretString::from("pencil")),
            "a fresh salt each time"
        );
    }

    #[test]
    fn redaction_removes_every_known_secret_and_its_escaped_forms() {
        let known = KnownSecrets::default()
            .with(&SecretString::from(r"it's\x"))
            .with(&SecretString::from("master-pw"))
            .with(&SecretString::from(""));
        let text = r"near 'it''s\\x' and it's\x as master-pw; it''s\x";
        let redacted = known.redact(text);
        assert!(
            !redacted.contains("it's") && !redacted.contains("it''s"),
            "{redacted}"
        );
        assert!(!redacted.contains("master-pw"), "{redacted}");
        assert!(redacted.contains("[REDACTED]"));
        assert!(!format!("{known:?}").contains("master"));
    }
}
