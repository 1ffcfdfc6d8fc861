//! The database half: secrets, tenant databases on both engines, logins and rotations.

use shared::sample_events::try_sample;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Connection;
use sqlx::mysql::MySqlConnection;

use super::{STACK, STAGE, World, uuid_like};
use crate::moto::{ACCOUNT_ID, REGION};
use crate::postgres::Postgres;
use crate::process::random_hex;
use crate::scenario::aws_error;
use aws_sdk_cloudformation::types::StackStatus;

use crate::scenario::stack;

impl World {
    /// Every secret the template declares, with its name, tags and first value as
    /// CloudFormation makes it (moto's CloudFormation skips secrets): the master as the
    /// SecretTargetAttachment leaves it (host and port added), the app secret pointing at it
    /// with `masterarn`, each other generated secret (fleet key, APP_KEY) from its
    /// GenerateSecretString, and a secret with neither GenerateSecretString nor SecretString
    /// (the OAuth ones) empty, without a version, as CloudFormation leaves it.
    pub(super) async fn create_secrets(&mut self) -> Result<((), String), String> {
        self.ids = stack::physical_ids(&self.clients.cloudformation, &self.stack_id).await?;
        let secrets = &self.clients.secrets;
        let master_props = self.properties("DbMasterSecret")?;
        let master = json!({
            "engine": "mariadb", "host": self.db.host(), "port": self.db.port(),
            "username": self.db.admin_user(), "password": self.db.admin_password(),
            "dbInstanceIdentifier": self.id("Database")?,
        });
        let master_arn = create_secret(secrets, &master_props, Some(&master)).await?;
        self.ids
            .insert("DbMasterSecret".to_owned(), master_arn.clone());
        // The app user: the generated string (username, masterarn) plus what its
        // SecretTargetAttachment adds.
        let app_props = self.properties("AppUserSecret")?;
        let mut app = generated_secret(secrets, &app_props).await?;
        app["host"] = json!(self.db.host());
        app["port"] = json!(self.db.port());
        app["dbInstanceIdentifier"] = json!(self.id("Database")?);
        let app_arn = create_secret(secrets, &app_props, Some(&app)).await?;
        let mut created = vec![
            ("DbMasterSecret".to_owned(), master_arn.clone(), ""),
            ("AppUserSecret".to_owned(), app_arn.clone(), ""),
        ];
        let others: Vec<String> = self.template["Resources"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(id, r)| {
                r["Type"] == "AWS::SecretsManager::Secret"
                    && !matches!(id.as_str(), "DbMasterSecret" | "AppUserSecret")
            })
            .map(|(id, _)| id.clone())
            .collect();
        for logical in others {
            let props = self.properties(&logical)?;
            let (value, note) = if !props["GenerateSecretString"].is_null() {
                (Some(generated_secret(secrets, &props).await?), "")
            } else if let Some(text) = props["SecretString"].as_str() {
                (Some(json!(text)), "")
            } else {
                (None, " (empty)")
            };
            let arn = create_secret(secrets, &props, value.as_ref()).await?;
            created.push((logical, arn, note));
        }
        for (logical, arn, _) in &created {
            self.ids.insert(logical.clone(), arn.clone());
        }
        for (logical, arn) in [
            ("DbMasterSecretAttachment", &master_arn),
            ("AppUserSecretAttachment", &app_arn),
        ] {
            self.ids.insert(logical.to_owned(), arn.clone());
        }
        let names: Vec<String> = created
            .iter()
            .map(|(_, arn, note)| format!("{}{note}", name_of(arn)))
            .collect();
        Ok(((), names.join(", ")))
    }

    /// rds-init gets the Create event CloudFormation sends (the sample, with this stack's
    /// ids and moto's response URL) and answers moto, which then completes the stack.
    pub(super) async fn tenant_databases(&self) -> Result<((), String), String> {
        let logical = "TenantDatabasesResource";
        let mut event = try_sample("rds-init", "create.json")?;
        let properties = self.properties(logical)?;
        event["ServiceToken"] = properties["ServiceToken"].clone();
        event["ResourceProperties"] = properties;
        event["ResponseURL"] = json!(stack::response_url(
            self.moto.endpoint_url(),
            &self.stack_id
        ));
        event["StackId"] = json!(self.stack_id);
        event["RequestId"] = json!(format!("local-{}", random_hex(8)));
        event["LogicalResourceId"] = json!(logical);
        self.invoke("rds-init", &event).await?;
        let cloudformation = &self.clients.cloudformation;
        let mut status = stack::status(cloudformation, &self.stack_id).await?;
        for _ in 0..50 {
            if status != StackStatus::CreateInProgress {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            status = stack::status(cloudformation, &self.stack_id).await?;
        }
        if status != StackStatus::CreateComplete {
            return Err(format!(
                "stack is {status} after rds-init answered; rds-init log:\n{}",
                self.lambda.log_tail("rds-init")
            ));
        }
        let mut admin = self
            .connect(self.db.admin_user(), self.db.admin_password(), None)
            .await?;
        let databases: Vec<String> = sqlx::query_scalar("SHOW DATABASES")
            .fetch_all(&mut admin)
            .await
            .map_err(|e| format!("SHOW DATABASES: {e}"))?;
        let wanted = self.tenant_databases_list();
        let missing: Vec<&String> = wanted.iter().filter(|d| !databases.contains(d)).collect();
        if !missing.is_empty() {
            return Err(format!("databases missing after Create: {missing:?}"));
        }
        Ok(((), format!("{} created; stack {status}", wanted.join(", "))))
    }

    fn tenant_databases_list(&self) -> Vec<String> {
        self.parameters["TenantDatabases"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A TLS connection (verified against the test CA) as `user`.
    async fn connect(
        &self,
        user: &str,
        password: &str,
        database: Option<&str>,
    ) -> Result<MySqlConnection, String> {
        let mut options = self.db.connect_options(user, password);
        if let Some(database) = database {
            options = options.database(database);
        }
        MySqlConnection::connect_with(&options)
            .await
            .map_err(|e| format!("log in as {user}: {e}"))
    }

    /// Whether `user` / `password` is refused with an access-denied error (not any error).
    async fn refused(&self, user: &str, password: &str) -> Result<(), String> {
        match self.connect(user, password, None).await {
            Ok(_) => Err(format!(
                "{user} logged in with a password that must be refused"
            )),
            Err(e) if e.contains("Access denied") => Ok(()),
            Err(e) => Err(format!("expected access denied for {user}, got: {e}")),
        }
    }

    pub(super) async fn secret(&self, logical: &str, stage: &str) -> Result<Value, String> {
        let value = self
            .clients
            .secrets
            .get_secret_value()
            .secret_id(self.id(logical)?)
            .version_stage(stage)
            .send()
            .await
            .map_err(aws_error(format!("GetSecretValue {logical} {stage}")))?;
        serde_json::from_str(value.secret_string().unwrap_or(""))
            .map_err(|e| format!("{logical}: {e}"))
    }

    pub(super) async fn app_user_logs_in(&self) -> Result<((), String), String> {
        let app = self.secret("AppUserSecret", "AWSCURRENT").await?;
        let (user, password) = (str_field(&app, "username")?, str_field(&app, "password")?);
        let databases = self.tenant_databases_list();
        let mut conn = self.connect(&user, &password, Some(&databases[1])).await?;
        // readwrite: the app creates its table and writes a row in a tenant database.
        for statement in [
            "CREATE TABLE IF NOT EXISTS jobs (id INT PRIMARY KEY, state VARCHAR(16))",
            "REPLACE INTO jobs VALUES (1, 'queued')",
        ] {
            sqlx::query(statement)
                .execute(&mut conn)
                .await
                .map_err(|e| format!("{user}: {statement}: {e}"))?;
        }
        let cipher: Option<(String, String)> =
            sqlx::query_as("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
                .fetch_optional(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
        let cipher = cipher
            .map(|(_, c)| c)
            .filter(|c| !c.is_empty())
            .ok_or("the session is not TLS")?;
        self.refused(&user, "not-the-password").await?;
        Ok((
            (),
            format!(
                "{user} wrote to {} over TLS ({cipher}); wrong password refused",
                databases[1]
            ),
        ))
    }

    /// The same function as a custom resource in a team's own stack, on PostgreSQL (the
    /// PostgreSQL sample): extensions, a readwrite and a readonly user; the response goes to
    /// a recording stand-in for CloudFormation's pre-signed URL.
    pub(super) async fn postgres_tenant(&self) -> Result<((), String), String> {
        let secrets = &self.clients.secrets;
        let users = [
            (
                "master",
                self.pg.admin_user(),
                self.pg.admin_password().to_owned(),
            ),
            ("app", "app", random_hex(16)),
            ("reporting", "reporting", random_hex(16)),
        ];
        let mut arns = Vec::new();
        for (name, user, password) in &users {
            let value = json!({"engine": "postgres", "host": self.pg.host(), "port": self.pg.port(),
                               "username": user, "password": password});
            // The tag that lets this stack's rds-init read a team's secret.
            let properties = json!({"Name": format!("/{STACK}/{STAGE}/pg/{name}"),
                                    "Tags": [{"Key": "orchestrator:rds-init", "Value": STACK}]});
            arns.push(create_secret(secrets, &properties, Some(&value)).await?);
        }
        let (app_password, reporting_password) = (&users[1].2, &users[2].2);
        let mut event = try_sample("rds-init", "create-postgres.json")?;
        let properties = &mut event["ResourceProperties"];
        properties["MasterSecretArn"] = json!(arns[0]);
        properties["Users"][0]["SecretArn"] = json!(arns[1]);
        properties["Users"][1]["SecretArn"] = json!(arns[2]);
        // pgvector is not packaged for every PostgreSQL the stand-in may use.
        if !Postgres::has_pgvector() {
            properties["Extensions"] = json!(["pg_trgm", "citext"]);
        }
        let extensions = properties["Extensions"].clone();
        let database = properties["Databases"][0]
            .as_str()
            .unwrap_or("app")
            .to_owned();
        event["ResponseURL"] = json!(self.recorder.response_url("postgres-tenant"));
        event["RequestId"] = json!(uuid_like());
        self.invoke("rds-init", &event).await?;
        let responses = self.recorder.wait_for(1, Duration::from_secs(10)).await;
        let response = responses.last().ok_or("rds-init sent no response")?;
        let answer: Value =
            serde_json::from_slice(&response.body).map_err(|e| format!("response body: {e}"))?;
        if answer["Status"] != "SUCCESS" {
            return Err(format!("rds-init answered {answer}"));
        }
        let connect = |user: &str, password: &str| {
            let options = self.pg.connect_options(user, password).database(&database);
            let user = user.to_owned();
            async move {
                sqlx::postgres::PgConnection::connect_with(&options)
                    .await
                    .map_err(|e| format!("log in as {user}: {e}"))
            }
        };
        let mut admin = connect(self.pg.admin_user(), self.pg.admin_password()).await?;
        let installed: Vec<String> =
            sqlx::query_scalar("SELECT extname::text FROM pg_extension ORDER BY 1")
                .fetch_all(&mut admin)
                .await
                .map_err(|e| e.to_string())?;
        let wanted: Vec<&str> = extensions
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if let Some(missing) = wanted.iter().find(|e| !installed.iter().any(|i| i == *e)) {
            return Err(format!("extension {missing} not installed in {database}"));
        }
        let mut app_conn = connect("app", app_password).await?;
        for statement in [
            "CREATE TABLE IF NOT EXISTS tenants (id int PRIMARY KEY)",
            "INSERT INTO tenants VALUES (1) ON CONFLICT DO NOTHING",
        ] {
            sqlx::query(statement)
                .execute(&mut app_conn)
                .await
                .map_err(|e| format!("app: {statement}: {e}"))?;
        }
        let mut reporting_conn = connect("reporting", reporting_password).await?;
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants")
            .fetch_one(&mut reporting_conn)
            .await
            .map_err(|e| format!("reporting reads tenants: {e}"))?;
        if sqlx::query("INSERT INTO tenants VALUES (2)")
            .execute(&mut reporting_conn)
            .await
            .is_ok()
        {
            return Err("the readonly user could write".into());
        }
        Ok((
            (),
            format!(
                "{database} with {}; app writes, reporting reads {rows} row and cannot write",
                wanted.join(", ")
            ),
        ))
    }

    /// Starts a rotation as Secrets Manager does (RotateSecret names the template's rotation
    /// function) and invokes the four steps with the new version's token.
    pub(super) async fn rotate(&self, logical: &str) -> Result<String, String> {
        let secrets = &self.clients.secrets;
        let arn = self.id(logical)?.to_owned();
        let token = secrets
            .rotate_secret()
            .secret_id(&arn)
            .rotation_lambda_arn(format!(
                "arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{}",
                self.id("SecretRotationFunction")?
            ))
            .rotation_rules(
                aws_sdk_secretsmanager::types::RotationRulesType::builder()
                    .automatically_after_days(30)
                    .build(),
            )
            .send()
            .await
            .map_err(aws_error("RotateSecret"))?
            .version_id
            .ok_or("RotateSecret returned no version")?;
        for step in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
            let mut event = try_sample("secret-rotation", &format!("{step}.json"))?;
            event["SecretId"] = json!(arn);
            event["ClientRequestToken"] = json!(token);
            self.invoke("secret-rotation", &event)
                .await
                .map_err(|e| format!("{step}: {e}"))?;
        }
        // What Secrets Manager does after finishSecret (moto does not): AWSPENDING leaves the
        // new version, so the next rotation can start.
        secrets
            .update_secret_version_stage()
            .secret_id(&arn)
            .version_stage("AWSPENDING")
            .remove_from_version_id(&token)
            .send()
            .await
            .map_err(aws_error("UpdateSecretVersionStage"))?;
        Ok(token)
    }

    pub(super) async fn rotate_master(&self) -> Result<((), String), String> {
        let before = self.secret("DbMasterSecret", "AWSCURRENT").await?;
        self.rotate("DbMasterSecret").await?;
        let after = self.secret("DbMasterSecret", "AWSCURRENT").await?;
        let user = str_field(&after, "username")?;
        let (old, new) = (
            str_field(&before, "password")?,
            str_field(&after, "password")?,
        );
        if old == new {
            return Err("AWSCURRENT still holds the old password".into());
        }
        self.connect(&user, &new, None).await?;
        self.refused(&user, &old).await?;
        Ok((
            (),
            format!("{user}: 4 steps; new password logs in, old one refused"),
        ))
    }

    pub(super) async fn rotate_app_user(&self) -> Result<((), String), String> {
        let before = self.secret("AppUserSecret", "AWSCURRENT").await?;
        self.rotate("AppUserSecret").await?;
        let after = self.secret("AppUserSecret", "AWSCURRENT").await?;
        let (old_user, new_user) = (
            str_field(&before, "username")?,
            str_field(&after, "username")?,
        );
        if old_user == new_user {
            return Err(format!(
                "AWSCURRENT is still {old_user}; expected the other user"
            ));
        }
        let databases = self.tenant_databases_list();
        let mut conn = self
            .connect(
                &new_user,
                &str_field(&after, "password")?,
                Some(&databases[1]),
            )
            .await?;
        let state: String = sqlx::query_scalar("SELECT state FROM jobs WHERE id = 1")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| format!("{new_user} reads jobs: {e}"))?;
        // The previous user keeps working until the next rotation: nobody is locked out.
        self.connect(&old_user, &str_field(&before, "password")?, None)
            .await?;
        Ok((
            (),
            format!(
                "{old_user} -> {new_user}; {new_user} reads the app's rows ({state}); {old_user} still logs in"
            ),
        ))
    }
}

/// A secret with the template's name, description and tags; `value` (a JSON document, or a
/// JSON string taken as it is) as its first version, or none: an empty secret.
async fn create_secret(
    secrets: &aws_sdk_secretsmanager::Client,
    properties: &Value,
    value: Option<&Value>,
) -> Result<String, String> {
    let name = properties["Name"].as_str().ok_or("secret without a Name")?;
    let mut request = secrets
        .create_secret()
        .name(name)
        .set_description(properties["Description"].as_str().map(str::to_owned))
        .set_secret_string(value.map(|v| match v {
            Value::String(text) => text.clone(),
            document => document.to_string(),
        }));
    for tag in properties["Tags"].as_array().into_iter().flatten() {
        request = request.tags(
            aws_sdk_secretsmanager::types::Tag::builder()
                .set_key(tag["Key"].as_str().map(str::to_owned))
                .set_value(tag["Value"].as_str().map(str::to_owned))
                .build(),
        );
    }
    request
        .send()
        .await
        .map_err(aws_error(format!("CreateSecret {name}")))?
        .arn
        .ok_or_else(|| format!("CreateSecret {name}: no ARN"))
}

/// A password as the template's GenerateSecretString makes it.
/// What CloudFormation stores for a `GenerateSecretString`: the template's JSON with a random
/// password (as GetRandomPassword makes it) under the generated key.
async fn generated_secret(
    secrets: &aws_sdk_secretsmanager::Client,
    properties: &Value,
) -> Result<Value, String> {
    let spec = &properties["GenerateSecretString"];
    let mut value: Value = spec["SecretStringTemplate"]
        .as_str()
        .and_then(|t| serde_json::from_str(t).ok())
        .ok_or_else(|| format!("{}: SecretStringTemplate is not JSON", properties["Name"]))?;
    let password = secrets
        .get_random_password()
        .set_password_length(spec["PasswordLength"].as_i64())
        .set_exclude_characters(spec["ExcludeCharacters"].as_str().map(str::to_owned))
        .set_exclude_punctuation(spec["ExcludePunctuation"].as_bool())
        .send()
        .await
        .map_err(aws_error("GetRandomPassword"))?
        .random_password
        .ok_or("GetRandomPassword: no password")?;
    value[spec["GenerateStringKey"].as_str().unwrap_or("password")] = json!(password);
    Ok(value)
}

fn str_field(value: &Value, key: &str) -> Result<String, String> {
    value[key]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("secret has no {key}"))
}

/// `…:secret:/bp/local/db/master-AbCdEf` → `/bp/local/db/master`.
fn name_of(arn: &str) -> &str {
    let name = arn.splitn(7, ':').nth(6).unwrap_or(arn);
    name.rsplit_once('-').map_or(name, |(n, _)| n)
}
