//! A secret version's JSON, held as a [`SecretString`] so it never prints.

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use shared::database::DatabaseSecret;
use std::fmt;

use crate::credential_target::{FormatError, SUPPORTED_ENGINES};

/// Why a secret's JSON cannot be used. Never quotes a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedSecret {
    #[error("the secret string is not JSON: {0}")]
    NotJson(String),
    #[error("the secret string is JSON but not an object")]
    NotAnObject,
    #[error("field `password` must be a string")]
    PasswordNotAString,
    #[error("{0}")]
    InvalidDatabaseSecret(String),
    #[error("the version has no SecretString (binary secrets cannot be rotated)")]
    NoSecretString,
    #[error("missing field `engine`; supported engines: {SUPPORTED_ENGINES}")]
    MissingEngine,
    #[error("field `engine` must be a string; supported engines: {SUPPORTED_ENGINES}")]
    EngineNotAString,
    #[error("unsupported database engine `{0}`; supported engines: {SUPPORTED_ENGINES}")]
    UnsupportedEngine(String),
    #[error(transparent)]
    GenericFormat(#[from] FormatError),
    #[error(transparent)]
    Redis(#[from] crate::credential_target::redis::RedisSecretError),
}

/// One secret version's `SecretString`.
#[derive(Clone)]
pub struct SecretDocument(SecretString);

impl fmt::Debug for SecretDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretDocument([REDACTED])")
    }
}

impl SecretDocument {
    pub fn new(secret_string: SecretString) -> Self {
        Self(secret_string)
    }

    pub fn expose_json(&self) -> &str {
        self.0.expose_secret()
    }

    /// The JSON object, checked so that later errors (serde's messages quote values) can never
    /// quote the password.
    pub(crate) fn fields(&self) -> Result<Map<String, Value>, MalformedSecret> {
        let value: Value = serde_json::from_str(self.expose_json())
            // Syntax errors carry only a line and column.
            .map_err(|e| MalformedSecret::NotJson(e.to_string()))?;
        let Value::Object(fields) = value else {
            return Err(MalformedSecret::NotAnObject);
        };
        match fields.get("password") {
            None | Some(Value::String(_)) => Ok(fields),
            Some(_) => Err(MalformedSecret::PasswordNotAString),
        }
    }

    /// The RDS-convention database secret.
    pub fn database(&self) -> Result<DatabaseSecret, MalformedSecret> {
        self.fields()?;
        DatabaseSecret::from_json(self.expose_json())
            .map_err(|e| MalformedSecret::InvalidDatabaseSecret(e.to_string()))
    }

    /// The `password` field when it is a string: what error texts must never show.
    pub fn password(&self) -> Option<SecretString> {
        self.fields()
            .ok()?
            .get("password")
            .and_then(Value::as_str)
            .map(SecretString::from)
    }

    /// The same JSON with a new password (and user name), every other field kept.
    pub fn with_credentials(
        &self,
        username: Option<&str>,
        password: &SecretString,
    ) -> Result<SecretDocument, MalformedSecret> {
        let mut fields = self.fields()?;
        fields.insert(
            "password".into(),
            Value::String(password.expose_secret().to_owned()),
        );
        if let Some(username) = username {
            fields.insert("username".into(), Value::String(username.to_owned()));
        }
        let text = Value::Object(fields).to_string();
        Ok(SecretDocument(SecretString::from(text)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> SecretDocument {
        SecretDocument::new(SecretString::from(text))
    }

    #[test]
    fn new_credentials_keep_every_other_field() {
        let current = doc(
            r#"{"engine":"mariadb","host":"h","port":3306,"username":"u","password":"old","dbname":"bp","custom":{"a":1}}"#,
        );
        let pending = current
            .with_credentials(Some("u_clone"), &SecretString::from("new"))
            .unwrap();
        let value: Value = serde_json::from_str(pending.expose_json()).unwrap();
        assert_eq!(value["password"], "new");
        assert_eq!(value["username"], "u_clone");
        assert_eq!(value["dbname"], "bp");
        assert_eq!(value["custom"]["a"], 1);
        assert!(!format!("{pending:?}").contains("new"));
    }
}
