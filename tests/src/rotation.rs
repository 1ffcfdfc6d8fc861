//! Driving a Secrets Manager rotation on moto the way Secrets Manager does, for tests that run
//! secret-rotation's steps themselves.

use aws_sdk_secretsmanager::Client as SecretsClient;
use aws_sdk_secretsmanager::types::RotationRulesType;
use serde_json::{Value, json};

use crate::moto::Moto;

/// The rotation function moto is told about; moto never invokes it, the test runs the steps.
pub const ROTATION_LAMBDA_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:rotation";

/// Creates secret `name` holding `value` (JSON); returns its ARN.
pub async fn create_secret(secrets: &SecretsClient, name: &str, value: &Value) -> String {
    secrets
        .create_secret()
        .name(name)
        .secret_string(value.to_string())
        .send()
        .await
        .expect("CreateSecret")
        .arn
        .expect("an ARN")
}

/// The version of a secret that has `stage`: its id and its value (JSON).
pub async fn secret_value(secrets: &SecretsClient, arn: &str, stage: &str) -> (String, Value) {
    let out = secrets
        .get_secret_value()
        .secret_id(arn)
        .version_stage(stage)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GetSecretValue {arn} {stage}: {e}"));
    let value = out.secret_string().expect("a SecretString");
    (
        out.version_id().expect("a version id").to_owned(),
        serde_json::from_str(value).expect("JSON"),
    )
}

/// Enables rotation and starts one: the token is an `AWSPENDING` version with no value.
/// Panics where AWS would refuse (see [`try_start_rotation`]).
pub async fn start_rotation(secrets: &SecretsClient, arn: &str) -> String {
    try_start_rotation(secrets, arn)
        .await
        .unwrap_or_else(|refusal| panic!("{refusal}"))
}

/// [`start_rotation`], refused as AWS refuses `RotateSecret` while a previous rotation is
/// unfinished: `AWSPENDING` on a version that is not `AWSCURRENT`. moto checks the opposite
/// (it refuses when `AWSPENDING` is on the current version), so the harness checks AWS's
/// rule itself, and tests call [`end_rotation`] after a rotation as Secrets Manager does.
pub async fn try_start_rotation(secrets: &SecretsClient, arn: &str) -> Result<String, String> {
    let versions = secrets
        .describe_secret()
        .secret_id(arn)
        .send()
        .await
        .expect("DescribeSecret")
        .version_ids_to_stages()
        .cloned()
        .unwrap_or_default();
    if let Some((version, _)) = versions.iter().find(|(_, stages)| {
        stages.iter().any(|s| s == "AWSPENDING") && !stages.iter().any(|s| s == "AWSCURRENT")
    }) {
        return Err(format!(
            "RotateSecret refused, as AWS refuses it: a previous rotation isn't complete \
             (version {version} of {arn} is AWSPENDING)"
        ));
    }
    Ok(secrets
        .rotate_secret()
        .secret_id(arn)
        .rotation_lambda_arn(ROTATION_LAMBDA_ARN)
        .rotation_rules(
            RotationRulesType::builder()
                .automatically_after_days(30)
                .build(),
        )
        .send()
        .await
        .expect("RotateSecret")
        .version_id()
        .expect("a token")
        .to_owned())
}

/// What Secrets Manager does after a successful finishSecret (moto does not): the
/// `AWSPENDING` label leaves the new version, so the next rotation can start.
pub async fn end_rotation(secrets: &SecretsClient, arn: &str, token: &str) {
    secrets
        .update_secret_version_stage()
        .secret_id(arn)
        .version_stage("AWSPENDING")
        .remove_from_version_id(token)
        .send()
        .await
        .expect("UpdateSecretVersionStage");
}

/// moto wants the rotation Lambda to exist before `RotateSecret`; it never runs it (the test
/// drives the steps). Creates its role and the function (an empty zip, Docker off).
pub async fn allow_rotation(moto: &Moto) {
    let http = reqwest::Client::new();
    for (path, service, content_type, body) in [
        (
            "/moto-api/config",
            "moto",
            "application/json",
            json!({"lambda": {"use_docker": false}}).to_string(),
        ),
        (
            "/",
            "iam",
            "application/x-www-form-urlencoded",
            "Action=CreateRole&Version=2010-05-08&RoleName=rotation&AssumeRolePolicyDocument=%7B%7D"
                .to_owned(),
        ),
        (
            "/2015-03-31/functions",
            "lambda",
            "application/json",
            json!({"FunctionName": "rotation", "Runtime": "provided.al2023", "Handler": "bootstrap",
                   "Role": "arn:aws:iam::123456789012:role/rotation",
                   "Code": {"ZipFile": "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="}})
            .to_string(),
        ),
    ] {
        let response = http
            .post(format!("{}{path}", moto.endpoint_url()))
            .header(
                "Authorization",
                crate::moto::unsigned_authorization("test", service),
            )
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .await
            .expect("moto answers");
        let status = response.status();
        assert!(
            status.is_success(),
            "{path}: {status} {}",
            response.text().await.unwrap_or_default()
        );
    }
}
