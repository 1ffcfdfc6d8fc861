//! Secrets Manager adapter: the master secret (RDS convention) and app users' secrets.
//! Errors name the secret and what is wrong with it, never a value from it.

use aws_sdk_secretsmanager::Client;
use secrecy::SecretString;
use serde::Deserialize;
use shared::aws::AwsError;
use shared::database::DatabaseSecret;

/// Why a secret could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("could not read secret {arn}: {}", source.message)]
    Unreadable {
        arn: String,
        #[source]
        source: AwsError,
    },
    #[error("secret {arn} has no SecretString (binary secrets are not supported)")]
    NotAString { arn: String },
    #[error("secret {arn} is malformed: {problem}")]
    Malformed { arn: String, problem: String },
}

/// An app user's secret: JSON with at least `username` and `password`; `masterarn` (the
/// master's secret, set for alternating-users rotation) says that `username` is one of the
/// pair `<base>` / `<base>_clone`.
#[derive(Deserialize)]
pub struct UserCredentials {
    pub username: String,
    pub password: SecretString,
    #[serde(default)]
    pub masterarn: Option<String>,
}

impl UserCredentials {
    /// Whether the secret rotates with alternating users.
    pub fn alternating(&self) -> bool {
        self.masterarn.as_deref().is_some_and(|arn| !arn.is_empty())
    }
}

/// Reads secrets; built once per cold start.
#[derive(Debug, Clone)]
pub struct SecretStore {
    client: Client,
}

impl SecretStore {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// The master secret: engine, host, port, username, password (optional `ssl`, `dbname`).
    pub async fn master(&self, arn: &str) -> Result<DatabaseSecret, SecretError> {
        let text = self.secret_string(arn).await?;
        DatabaseSecret::from_json(&text).map_err(|e| malformed(arn, &e))
    }

    /// An app user's secret.
    pub async fn user(&self, arn: &str) -> Result<UserCredentials, SecretError> {
        let text = self.secret_string(arn).await?;
        serde_json::from_str(&text).map_err(|e| malformed(arn, &e))
    }

    /// The password of the user secret's `AWSPENDING` version, if a rotation is under way
    /// (`None` when there is no such version or it cannot be read).
    pub async fn pending_user_password(&self, arn: &str) -> Option<SecretString> {
        let output = self
            .client
            .get_secret_value()
            .secret_id(arn)
            .version_stage("AWSPENDING")
            .send()
            .await
            .ok()?;
        serde_json::from_str::<UserCredentials>(output.secret_string()?)
            .ok()
            .map(|credentials| credentials.password)
    }

    async fn secret_string(&self, arn: &str) -> Result<String, SecretError> {
        let output = self
            .client
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(|e| SecretError::Unreadable {
                arn: arn.to_owned(),
                source: AwsError::from_sdk(format!("GetSecretValue ({arn})"), e),
            })?;
        output.secret_string.ok_or_else(|| SecretError::NotAString {
            arn: arn.to_owned(),
        })
    }
}

/// serde's message, unless it could quote a value from the secret (wrong-type errors do).
fn malformed(arn: &str, error: &serde_json::Error) -> SecretError {
    let message = error.to_string();
    let names_only = ["missing field", "unsupported database engine"]
        .iter()
        .any(|safe| message.starts_with(safe));
    let problem = match error.classify() {
        serde_json::error::Category::Data if names_only => message,
        serde_json::error::Category::Data => format!(
            "a field has the wrong type or value (line {}, column {}); expected JSON with \
             string username and password (and optional string masterarn)",
            error.line(),
            error.column()
        ),
        _ => format!(
            "not valid JSON (line {}, column {})",
            error.line(),
            error.column()
        ),
    };
    SecretError::Malformed {
        arn: arn.to_owned(),
        problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_secrets_are_described_without_their_values() {
        let err = serde_json::from_str::<UserCredentials>(r#"{"username":"app"}"#)
            .map(|_| ())
            .unwrap_err();
        let text = malformed("arn:x", &err).to_string();
        assert!(
            text.contains("missing field `password`") && text.contains("arn:x"),
            "{text}"
        );
        let err = serde_json::from_str::<UserCredentials>(r#"{"username":"app","password":4242}"#)
            .map(|_| ())
            .unwrap_err();
        let text = malformed("arn:x", &err).to_string();
        assert!(
            !text.contains("4242") && text.contains("wrong type"),
            "{text}"
        );
        let err = serde_json::from_str::<UserCredentials>("not json s3cret")
            .map(|_| ())
            .unwrap_err();
        let text = malformed("arn:x", &err).to_string();
        assert!(
            !text.contains("s3cret") && text.contains("not valid JSON"),
            "{text}"
        );
    }
}
