//! The Secrets Manager adapter: version stages, values, new passwords.

use crate::plan::{AWSCURRENT, AWSPENDING};
use crate::secret_document::SecretDocument;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::http::Response as HttpResponse;
use secrecy::SecretString;
use shared::aws::AwsError;
use std::collections::HashMap;

/// A Secrets Manager call that failed: `operation` names the call and the secret.
fn call_failed<E>(operation: &str, secret_id: &str, error: SdkError<E, HttpResponse>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    AwsError::from_sdk(format!("Secrets Manager {operation} ({secret_id})"), error)
}

/// Rotation status and the version → stages map of a secret.
#[derive(Debug, Clone)]
pub struct SecretMetadata {
    pub rotation_enabled: bool,
    pub versions: HashMap<String, Vec<String>>,
}

/// Secrets Manager, as the rotation needs it.
#[derive(Debug, Clone)]
pub struct SecretsStore {
    client: Client,
}

impl SecretsStore {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    pub async fn metadata(&self, secret_id: &str) -> Result<SecretMetadata, AwsError> {
        let out = self
            .client
            .describe_secret()
            .secret_id(secret_id)
            .send()
            .await
            .map_err(|e| call_failed("DescribeSecret", secret_id, e))?;
        Ok(SecretMetadata {
            rotation_enabled: out.rotation_enabled().unwrap_or(false),
            versions: out.version_ids_to_stages().cloned().unwrap_or_default(),
        })
    }

    /// The value of the version with `stage` (and `version_id`, when given); `None` when
    /// there is no such version or it has no value yet. Always names a stage: a read
    /// without one is ambiguous while a rotation is pending.
    pub async fn value(
        &self,
        secret_id: &str,
        version_id: Option<&str>,
        stage: &str,
    ) -> Result<Option<SecretDocument>, AwsError> {
        let result = self
            .client
            .get_secret_value()
            .secret_id(secret_id)
            .set_version_id(version_id.map(str::to_owned))
            .version_stage(stage)
            .send()
            .await;
        match result {
            Ok(out) => Ok(out
                .secret_string()
                .map(|text| SecretDocument::new(SecretString::from(text)))),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(call_failed("GetSecretValue", secret_id, e)),
        }
    }

    pub async fn random_password(
        &self,
        secret_id: &str,
        length: u32,
        exclude_characters: &str,
    ) -> Result<SecretString, AwsError> {
        let out = self
            .client
            .get_random_password()
            .password_length(i64::from(length))
            .exclude_characters(exclude_characters)
            .send()
            .await
            .map_err(|e| call_failed("GetRandomPassword", secret_id, e))?;
        out.random_password()
            .map(SecretString::from)
            .ok_or_else(|| AwsError {
                operation: format!("Secrets Manager GetRandomPassword ({secret_id})"),
                message: "the answer had no password".to_owned(),
                transient: true,
                code: None,
            })
    }

    /// Stores `document` as the token's version, labelled `AWSPENDING`. Idempotent: the token
    /// is the client request token.
    pub async fn put_pending(
        &self,
        secret_id: &str,
        token: &str,
        document: &SecretDocument,
    ) -> Result<(), AwsError> {
        self.client
            .put_secret_value()
            .secret_id(secret_id)
            .client_request_token(token)
            .secret_string(document.expose_json())
            .version_stages(AWSPENDING)
            .send()
            .await
            .map_err(|e| call_failed("PutSecretValue", secret_id, e))?;
        Ok(())
    }

    /// Moves `AWSCURRENT` to `token`; Secrets Manager labels the old version `AWSPREVIOUS`.
    pub async fn move_current(
        &self,
        secret_id: &str,
        token: &str,
        from: Option<&str>,
    ) -> Result<(), AwsError> {
        self.client
            .update_secret_version_stage()
            .secret_id(secret_id)
            .version_stage(AWSCURRENT)
            .move_to_version_id(token)
            .set_remove_from_version_id(from.map(str::to_owned))
            .send()
            .await
            .map_err(|e| call_failed("UpdateSecretVersionStage", secret_id, e))?;
        Ok(())
    }
}
