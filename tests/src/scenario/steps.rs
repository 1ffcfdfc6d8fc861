//! The scenario's steps, in the order the suite meets them in production.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_sdk_autoscaling::types::AutoScalingGroup;
use aws_sdk_cloudformation::types::StackStatus;
use aws_sdk_cloudwatch::primitives::{DateTime, DateTimeFormat};
use aws_sdk_cloudwatch::types::{
    ComparisonOperator, Dimension, MetricDatum, StateValue, Statistic,
};
use serde_json::{Value, json};
use sqlx::Connection;
use sqlx::mysql::MySqlConnection;

use super::lambda::LocalLambda;
use super::stack::{self, AMI_PARAMETER, CODE_BUCKET, CODE_KEY};
use super::{Narrator, Options, Stop};
use crate::cfn_recorder::CfnResponseRecorder;
use crate::cloudwatch_cbor::CborBridge;
use crate::mariadb::MariaDb;
use crate::moto::{ACCOUNT_ID, Moto, REGION};
use crate::postgres::Postgres;
use crate::process::random_hex;

const STACK: &str = "orch-local";
const STAGE: &str = "local";
/// The template's functions: logical id and binary.
const FUNCTIONS: [(&str, &str); 5] = [
    ("RdsInitFunction", "rds-init"),
    ("SecretRotationFunction", "secret-rotation"),
    ("ScaleToZeroFunction", "scale-to-zero"),
    ("SpotInterruptionFunction", "spot-interruption"),
    ("DeployGateFunction", "deploy-gate"),
];
/// Queue depths the backend reports: img2vid goes idle later, vid2vid keeps working.
const BACKLOG: [(&str, f64); 2] = [("img2vid", 3.0), ("vid2vid", 2.0)];

/// Everything the steps share.
struct World {
    moto: Moto,
    bridge: CborBridge,
    db: MariaDb,
    pg: Postgres,
    /// Takes the responses of the custom resource outside the stack (PostgreSQL).
    recorder: CfnResponseRecorder,
    sdk: SdkConfig,
    lambda: LocalLambda,
    root: std::path::PathBuf,
    template: Value,
    parameters: BTreeMap<String, Value>,
    stack_id: String,
    ids: BTreeMap<String, String>,
}

pub(super) async fn run(options: &Options, n: &mut Narrator<'_>) -> Result<(), Stop> {
    let (moto, bridge, db, pg) = n
        .step("stand-ins up: moto, MariaDB, PostgreSQL", async {
            let (moto, db, pg) = tokio::join!(
                Moto::start(),
                MariaDb::start_tls_only(),
                Postgres::start_tls_only()
            );
            let bridge = CborBridge::start(moto.endpoint_url()).await;
            let detail = format!(
                "moto {}; MariaDB :{} and PostgreSQL :{}, both TLS-only with password auth",
                moto.endpoint_url(),
                db.port(),
                pg.port()
            );
            Ok(((moto, bridge, db, pg), detail))
        })
        .await?;
    let sdk = moto.sdk_config().await;
    // DbCaBundle: the functions verify the databases' certificates against this bundle, as
    // they would against the RDS CA bundle.
    let bundle = options.log_dir.join("db-ca-bundle.pem");
    let mut pem = String::new();
    for ca in [db.ca_pem_path(), pg.ca_pem_path()].into_iter().flatten() {
        pem.push_str(&std::fs::read_to_string(ca).unwrap_or_default());
    }
    if let Err(e) = std::fs::write(&bundle, pem) {
        eprintln!("write {}: {e}", bundle.display());
        return Err(Stop);
    }
    let bundle = bundle.display().to_string();
    let given = [("Stage", STAGE), ("DbCaBundle", bundle.as_str())];

    let (template, stack_id) = n
        .step(
            "stack created from template.yaml",
            create_stack(&options.root, &sdk, &given),
        )
        .await?;
    let parameters = stack::parameter_values(&template, &given);
    let lambda = n
        .step("cargo lambda watch (Runtime API) up", async {
            let lambda = LocalLambda::start(&options.root, &options.log_dir).await?;
            Ok((lambda, "functions poll it under their own names".to_owned()))
        })
        .await?;
    let mut world = World {
        moto,
        bridge,
        db,
        pg,
        recorder: CfnResponseRecorder::start().await,
        sdk,
        lambda,
        root: options.root.clone(),
        template,
        parameters,
        stack_id,
        ids: BTreeMap::new(),
    };
    n.step(
        "secrets created as the template declares them",
        world.create_secrets(),
    )
    .await?;
    n.step(
        "functions started with the stack's environment",
        world.start_functions(&options.binaries),
    )
    .await?;
    n.step(
        "tenant databases created (Custom::TenantDatabases)",
        world.tenant_databases(),
    )
    .await?;
    n.step(
        "app user logs in; a wrong password is refused",
        world.app_user_logs_in(),
    )
    .await?;
    n.step(
        "rds-init on PostgreSQL: extensions, two users",
        world.postgres_tenant(),
    )
    .await?;
    n.step(
        "master password rotated: new works, old refused",
        world.rotate_master(),
    )
    .await?;
    n.step(
        "app user rotated (alternating users)",
        world.rotate_app_user(),
    )
    .await?;
    n.step(
        "queue backlog: groups woken, BacklogPerInstance",
        world.backlog_wakes_groups(),
    )
    .await?;
    n.step("idle alarm: img2vid group set to zero", world.idle_alarm())
        .await?;
    n.step(
        "Spot warning: detached, replaced, fleet told",
        world.spot_warning(),
    )
    .await?;
    let alarms = n
        .step("deploy gate passes with all alarms OK", world.gate_passes())
        .await?;
    n.step(
        "deploy gate fails after an alarm goes off",
        world.gate_fails(&alarms),
    )
    .await?;
    Ok(())
}

async fn create_stack(
    root: &Path,
    sdk: &SdkConfig,
    given: &[(&str, &str)],
) -> Result<((Value, String), String), String> {
    let mut template = stack::render(root, STACK, given)?;
    stack::adapt_for_moto(&mut template)?;
    // What `sam deploy` would have in place: the code bucket and the AMI parameter.
    put_code_placeholder(sdk).await?;
    put_ami_parameter(sdk).await?;
    let cloudformation = aws_sdk_cloudformation::Client::new(sdk);
    let stack_id = stack::create(&cloudformation, STACK, &template, given).await?;
    let status = stack::status(&cloudformation, &stack_id).await?;
    let count = stack::physical_ids(&cloudformation, &stack_id).await?.len();
    let skipped = template["Resources"]
        .as_object()
        .map(|r| {
            r.values()
                .filter(|r| stack::NOT_IN_MOTO.contains(&r["Type"].as_str().unwrap_or("")))
                .count()
        })
        .unwrap_or(0);
    if status != StackStatus::CreateInProgress {
        return Err(format!(
            "stack is {status}, expected CREATE_IN_PROGRESS (waiting for its custom resource)"
        ));
    }
    Ok((
        (template, stack_id),
        format!(
            "{count} resources, {status} until rds-init answers; {skipped} of types moto lacks skipped (the steps make those they use)"
        ),
    ))
}

/// The S3 object the template's `CodeUri` placeholders name (moto's Lambda reads it).
async fn put_code_placeholder(sdk: &SdkConfig) -> Result<(), String> {
    // moto's S3 through its REST API: an empty zip is enough, the code never runs in moto.
    let endpoint = sdk.endpoint_url().ok_or("no endpoint")?;
    let http = reqwest::Client::new();
    let bucket = http.put(format!("{endpoint}/{CODE_BUCKET}")).send().await;
    let object = http
        .put(format!("{endpoint}/{CODE_BUCKET}/{CODE_KEY}"))
        .body(b"PK\x05\x06\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0".to_vec())
        .send()
        .await;
    for (what, result) in [("bucket", bucket), ("object", object)] {
        let response = result.map_err(|e| format!("create the code {what}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("create the code {what}: {}", response.status()));
        }
    }
    Ok(())
}

/// The SSM parameter holding the worker AMI id (`WorkerAmiParameter`).
async fn put_ami_parameter(sdk: &SdkConfig) -> Result<(), String> {
    let endpoint = sdk.endpoint_url().ok_or("no endpoint")?;
    let response = reqwest::Client::new()
        .post(format!("{endpoint}/"))
        .header("X-Amz-Target", "AmazonSSM.PutParameter")
        .header("Content-Type", "application/x-amz-json-1.1")
        .header("Authorization", unsigned_authorization("ssm"))
        .body(json!({"Name": AMI_PARAMETER, "Value": "ami-12c6146b", "Type": "String"}).to_string())
        .send()
        .await
        .map_err(|e| format!("PutParameter: {e}"))?;
    if !response.status().is_success() {
        return Err(format!(
            "PutParameter: {}",
            response.text().await.unwrap_or_default()
        ));
    }
    Ok(())
}

/// moto tells the services apart by the credential scope of the Authorization header; it
/// does not check signatures. (For the few calls with no SDK crate in the workspace.)
fn unsigned_authorization(service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=testing/20260101/{REGION}/{service}/aws4_request, SignedHeaders=host, Signature=0"
    )
}

impl World {
    fn cloudformation(&self) -> aws_sdk_cloudformation::Client {
        aws_sdk_cloudformation::Client::new(&self.sdk)
    }
    fn secrets(&self) -> aws_sdk_secretsmanager::Client {
        aws_sdk_secretsmanager::Client::new(&self.sdk)
    }
    fn autoscaling(&self) -> aws_sdk_autoscaling::Client {
        aws_sdk_autoscaling::Client::new(&self.sdk)
    }
    fn cloudwatch(&self) -> aws_sdk_cloudwatch::Client {
        self.bridge.cloudwatch_client(&self.sdk)
    }

    /// A resource's physical id.
    fn id(&self, logical: &str) -> Result<&str, String> {
        self.ids
            .get(logical)
            .map(String::as_str)
            .ok_or_else(|| format!("the stack has no {logical}"))
    }

    /// A resource's `Properties` with its Refs resolved.
    fn properties(&self, logical: &str) -> Result<Value, String> {
        let raw = self
            .template
            .pointer(&format!("/Resources/{logical}/Properties"))
            .ok_or_else(|| format!("template.yaml has no {logical}"))?;
        stack::resolve(raw, &self.template, &self.ids, &self.parameters)
    }

    /// A sample event from `events/`.
    fn sample(&self, path: &str) -> Result<Value, String> {
        let file = self.root.join("events").join(path);
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))
    }

    async fn invoke(&self, function: &str, event: &Value) -> Result<Value, String> {
        self.lambda.invoke(function, event).await.map_err(|e| {
            format!(
                "{function}: {e}\nend of its log:\n{}",
                self.lambda.log_tail(function)
            )
        })
    }

    /// The master and app secrets with the names, tags and JSON shape the template gives
    /// them (moto's CloudFormation skips secrets): the master as the SecretTargetAttachment
    /// leaves it (host and port added), the app secret pointing at it with `masterarn`.
    async fn create_secrets(&mut self) -> Result<((), String), String> {
        self.ids = stack::physical_ids(&self.cloudformation(), &self.stack_id).await?;
        let secrets = self.secrets();
        let master_props = self.properties("DbMasterSecret")?;
        let master = json!({
            "engine": "mariadb", "host": self.db.host(), "port": self.db.port(),
            "username": self.db.admin_user(), "password": self.db.admin_password(),
            "dbInstanceIdentifier": self.id("Database")?,
        });
        let master_arn = create_secret(&secrets, &master_props, &master).await?;
        let app_props = self.properties("AppUserSecret")?;
        let password = random_password(&secrets, &app_props).await?;
        let app = json!({
            "engine": "mariadb", "host": self.db.host(), "port": self.db.port(),
            "username": self.parameters["AppDbUsername"], "password": password,
            "dbname": self.parameters["TenantDatabases"][0], "masterarn": master_arn,
        });
        let app_arn = create_secret(&secrets, &app_props, &app).await?;
        for (logical, arn) in [
            ("DbMasterSecret", &master_arn),
            ("DbMasterSecretAttachment", &master_arn),
            ("AppUserSecret", &app_arn),
        ] {
            self.ids.insert(logical.to_owned(), arn.clone());
        }
        Ok((
            (),
            format!("{}, {}", name_of(&master_arn), name_of(&app_arn)),
        ))
    }

    /// Each function's binary, polling the Runtime API with the environment moto's Lambda
    /// holds for it (CloudFormation resolved the Refs), plus the stand-ins' endpoints.
    async fn start_functions(&mut self, binaries: &Path) -> Result<((), String), String> {
        let http = reqwest::Client::new();
        let mut started = Vec::new();
        for (logical, binary) in FUNCTIONS {
            let name = self.id(logical)?.to_owned();
            let url = format!("{}/2015-03-31/functions/{name}", self.moto.endpoint_url());
            let body = http
                .get(&url)
                .header("Authorization", unsigned_authorization("lambda"))
                .send()
                .await
                .map_err(|e| format!("GetFunction {name}: {e}"))?
                .bytes()
                .await
                .map_err(|e| format!("GetFunction {name}: {e}"))?;
            let function: Value =
                serde_json::from_slice(&body).map_err(|e| format!("GetFunction {name}: {e}"))?;
            let config = &function["Configuration"];
            let mut env: BTreeMap<String, String> = config["Environment"]["Variables"]
                .as_object()
                .map(|vars| {
                    vars.iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            for (key, value) in [
                ("AWS_ENDPOINT_URL", self.moto.endpoint_url()),
                // aws-sdk-cloudwatch speaks RPC v2 CBOR, which moto does not: the bridge translates.
                ("AWS_ENDPOINT_URL_CLOUDWATCH", self.bridge.url()),
                ("AWS_REGION", REGION),
                ("AWS_DEFAULT_REGION", REGION),
                ("AWS_ACCESS_KEY_ID", "testing"),
                ("AWS_SECRET_ACCESS_KEY", "testing"),
            ] {
                env.insert(key.to_owned(), value.to_owned());
            }
            let memory = config["MemorySize"].as_u64().unwrap_or(128);
            let timeout = Duration::from_secs(config["Timeout"].as_u64().unwrap_or(3));
            self.lambda
                .start_function(binary, &binaries.join(binary), memory, timeout, &env)
                .await?;
            started.push(format!("{binary} ({} env vars)", env.len()));
        }
        Ok(((), started.join(", ")))
    }

    /// rds-init gets the Create event CloudFormation sends (the sample, with this stack's
    /// ids and moto's response URL) and answers moto, which then completes the stack.
    async fn tenant_databases(&self) -> Result<((), String), String> {
        let logical = "TenantDatabasesResource";
        let mut event = self.sample("rds-init/create.json")?;
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
        let cloudformation = self.cloudformation();
        let mut status = stack::status(&cloudformation, &self.stack_id).await?;
        for _ in 0..50 {
            if status != StackStatus::CreateInProgress {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            status = stack::status(&cloudformation, &self.stack_id).await?;
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

    async fn secret(&self, logical: &str, stage: &str) -> Result<Value, String> {
        let value = self
            .secrets()
            .get_secret_value()
            .secret_id(self.id(logical)?)
            .version_stage(stage)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "GetSecretValue {logical} {stage}: {}",
                    aws_sdk_secretsmanager::error::DisplayErrorContext(e)
                )
            })?;
        serde_json::from_str(value.secret_string().unwrap_or(""))
            .map_err(|e| format!("{logical}: {e}"))
    }

    async fn app_user_logs_in(&self) -> Result<((), String), String> {
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
    async fn postgres_tenant(&self) -> Result<((), String), String> {
        let secrets = self.secrets();
        let base = json!({"engine": "postgres", "host": self.pg.host(), "port": self.pg.port()});
        let with = |extra: Value| {
            let mut value = base.clone();
            value
                .as_object_mut()
                .into_iter()
                .for_each(|m| m.extend(extra.as_object().cloned().unwrap_or_default()));
            value
        };
        let named = |name: &str| json!({"Name": format!("/{STACK}/{STAGE}/pg/{name}")});
        let master = create_secret(
            &secrets,
            &named("master"),
            &with(json!({"username": self.pg.admin_user(), "password": self.pg.admin_password()})),
        )
        .await?;
        let app_password = random_hex(16);
        let app = create_secret(
            &secrets,
            &named("app"),
            &with(json!({"username": "app", "password": app_password})),
        )
        .await?;
        let reporting_password = random_hex(16);
        let reporting = create_secret(
            &secrets,
            &named("reporting"),
            &with(json!({"username": "reporting", "password": reporting_password})),
        )
        .await?;
        let mut event = self.sample("rds-init/create-postgres.json")?;
        let properties = &mut event["ResourceProperties"];
        properties["MasterSecretArn"] = json!(master);
        properties["Users"][0]["SecretArn"] = json!(app);
        properties["Users"][1]["SecretArn"] = json!(reporting);
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
        let mut app_conn = connect("app", &app_password).await?;
        for statement in [
            "CREATE TABLE IF NOT EXISTS tenants (id int PRIMARY KEY)",
            "INSERT INTO tenants VALUES (1) ON CONFLICT DO NOTHING",
        ] {
            sqlx::query(statement)
                .execute(&mut app_conn)
                .await
                .map_err(|e| format!("app: {statement}: {e}"))?;
        }
        let mut reporting_conn = connect("reporting", &reporting_password).await?;
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
    async fn rotate(&self, logical: &str) -> Result<String, String> {
        let secrets = self.secrets();
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
            .map_err(|e| {
                format!(
                    "RotateSecret: {}",
                    aws_sdk_secretsmanager::error::DisplayErrorContext(e)
                )
            })?
            .version_id
            .ok_or("RotateSecret returned no version")?;
        for step in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
            let mut event = self.sample(&format!("secret-rotation/{step}.json"))?;
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
            .map_err(|e| {
                format!(
                    "UpdateSecretVersionStage: {}",
                    aws_sdk_secretsmanager::error::DisplayErrorContext(e)
                )
            })?;
        Ok(token)
    }

    async fn rotate_master(&self) -> Result<((), String), String> {
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

    async fn rotate_app_user(&self) -> Result<((), String), String> {
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

    async fn group(&self, workflow: &str) -> Result<AutoScalingGroup, String> {
        let name = format!("{STACK}-{workflow}");
        self.autoscaling()
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(&name)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "DescribeAutoScalingGroups: {}",
                    aws_sdk_autoscaling::error::DisplayErrorContext(e)
                )
            })?
            .auto_scaling_groups
            .unwrap_or_default()
            .into_iter()
            .next()
            .ok_or_else(|| format!("no group {name}"))
    }

    /// The backend's queue-depth metric, `age` ago (the function reads per-minute maxima, so
    /// the backlog and the drained queue go into different minutes).
    async fn put_queue_depth(&self, depths: &[(&str, f64)], age: Duration) -> Result<(), String> {
        let at = SystemTime::now() - age;
        let namespace = self.parameters["QueueMetricNamespace"]
            .as_str()
            .unwrap_or_default();
        let metric = self.parameters["QueueMetricName"]
            .as_str()
            .unwrap_or_default();
        let dimension = self.parameters["WorkflowDimension"]
            .as_str()
            .unwrap_or_default();
        let data = depths
            .iter()
            .map(|(workflow, depth)| {
                MetricDatum::builder()
                    .metric_name(metric)
                    .dimensions(
                        Dimension::builder()
                            .name(dimension)
                            .value(*workflow)
                            .build(),
                    )
                    .value(*depth)
                    .timestamp(DateTime::from(at))
                    .build()
            })
            .collect();
        self.cloudwatch()
            .put_metric_data()
            .namespace(namespace)
            .set_metric_data(Some(data))
            .send()
            .await
            .map_err(|e| {
                format!(
                    "PutMetricData: {}",
                    aws_sdk_cloudwatch::error::DisplayErrorContext(e)
                )
            })?;
        Ok(())
    }

    /// The backend reports a backlog; the 1-minute tick (the schedule sample, with this
    /// stack's rule) wakes both groups from zero and publishes BacklogPerInstance.
    async fn backlog_wakes_groups(&self) -> Result<((), String), String> {
        for (workflow, _) in BACKLOG {
            let group = self.group(workflow).await?;
            if group.desired_capacity != Some(0) {
                return Err(format!(
                    "{workflow} starts at {:?}, not 0",
                    group.desired_capacity
                ));
            }
        }
        self.put_queue_depth(&BACKLOG, Duration::from_secs(120))
            .await?;
        let mut event = self.sample("scale-to-zero/schedule.json")?;
        event["id"] = json!(uuid_like());
        event["time"] = json!(rfc3339_now());
        let rule = self
            .ids
            .iter()
            .find(|(logical, _)| logical.starts_with("ScaleToZeroFunctionTick"))
            .map(|(_, id)| id.clone())
            .ok_or("the stack has no schedule rule for scale-to-zero")?;
        event["resources"] = json!([format!("arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/{rule}")]);
        let report = self.invoke("scale-to-zero", &event).await?;
        let mut woken = Vec::new();
        for (workflow, depth) in BACKLOG {
            let group = self.group(workflow).await?;
            let desired = group.desired_capacity.unwrap_or(0);
            let instances = group.instances.map_or(0, |i| i.len());
            let target = self.parameters["TargetBacklogPerInstance"]
                .as_str()
                .and_then(|t| t.parse::<f64>().ok())
                .unwrap_or(1.0);
            let expected = ((depth / target).ceil() as i32).min(group.max_size.unwrap_or(0));
            if desired != expected {
                return Err(format!(
                    "{workflow}: desired {desired}, expected {expected}; report {report}"
                ));
            }
            woken.push(format!("{workflow} 0->{desired} ({instances} running)"));
        }
        let published = report["backlogPublished"].as_u64().unwrap_or(0);
        let listed = self
            .cloudwatch()
            .list_metrics()
            .namespace(
                self.parameters["QueueMetricNamespace"]
                    .as_str()
                    .unwrap_or_default(),
            )
            .metric_name("BacklogPerInstance")
            .send()
            .await
            .map_err(|e| {
                format!(
                    "ListMetrics: {}",
                    aws_sdk_cloudwatch::error::DisplayErrorContext(e)
                )
            })?
            .metrics
            .unwrap_or_default()
            .len();
        if published == 0 || listed == 0 {
            return Err(format!(
                "BacklogPerInstance not published (report {published}, CloudWatch {listed})"
            ));
        }
        Ok((
            (),
            format!(
                "{}; BacklogPerInstance for {listed} workflows",
                woken.join(", ")
            ),
        ))
    }

    /// The queue drains; the template's idle alarm (created from its properties) goes to
    /// ALARM and its SNS notification reaches scale-to-zero, which sets the group to zero.
    async fn idle_alarm(&self) -> Result<((), String), String> {
        self.put_queue_depth(&[("img2vid", 0.0)], Duration::ZERO)
            .await?;
        let alarm = self.put_alarm("WorkerIdleAlarmimg2vid").await?;
        let cloudwatch = self.cloudwatch();
        set_alarm_state(&cloudwatch, &alarm.name, StateValue::Alarm).await?;
        let topic = self.id("IdleAlarmTopic")?.to_owned();
        let message = json!({
            "AlarmName": alarm.name, "AlarmDescription": alarm.properties["AlarmDescription"],
            "AWSAccountId": ACCOUNT_ID, "NewStateValue": "ALARM", "OldStateValue": "OK",
            "NewStateReason": "Threshold Crossed: 15 out of the last 15 datapoints were less than or equal to the threshold (0.0).",
            "StateChangeTime": rfc3339_now(), "Region": "US East (N. Virginia)",
            "AlarmArn": format!("arn:aws:cloudwatch:{REGION}:{ACCOUNT_ID}:alarm:{}", alarm.name),
            "AlarmActions": [topic], "OKActions": [], "InsufficientDataActions": [],
            "Trigger": {
                "MetricName": alarm.properties["MetricName"], "Namespace": alarm.properties["Namespace"],
                "StatisticType": "Statistic", "Statistic": "MAXIMUM", "Unit": null,
                "Dimensions": alarm.properties["Dimensions"].as_array().map(|d| d.iter().map(|d| json!({"value": d["Value"], "name": d["Name"]})).collect::<Vec<_>>()),
                "Period": alarm.properties["Period"], "EvaluationPeriods": alarm.properties["EvaluationPeriods"],
                "DatapointsToAlarm": alarm.properties["DatapointsToAlarm"],
                "ComparisonOperator": alarm.properties["ComparisonOperator"], "Threshold": 0.0,
                "TreatMissingData": alarm.properties["TreatMissingData"], "EvaluateLowSampleCountPercentile": ""
            }
        });
        let mut event = self.sample("scale-to-zero/sns-idle-alarm.json")?;
        let record = &mut event["Records"][0];
        record["EventSubscriptionArn"] = json!(format!("{topic}:{}", uuid_like()));
        record["Sns"]["TopicArn"] = json!(topic);
        record["Sns"]["MessageId"] = json!(uuid_like());
        record["Sns"]["Timestamp"] = json!(rfc3339_now());
        record["Sns"]["Subject"] = json!(format!(
            "ALARM: \"{}\" in US East (N. Virginia)",
            alarm.name
        ));
        record["Sns"]["Message"] = json!(message.to_string());
        let report = self.invoke("scale-to-zero", &event).await?;
        let idle = self.group("img2vid").await?;
        let busy = self.group("vid2vid").await?;
        if idle.desired_capacity != Some(0) {
            return Err(format!(
                "img2vid desired {:?} after the idle alarm; report {report}",
                idle.desired_capacity
            ));
        }
        if busy.desired_capacity == Some(0) {
            return Err("vid2vid, which has work, was set to zero too".into());
        }
        Ok((
            (),
            format!(
                "{} in ALARM -> img2vid desired 0; vid2vid left at {}",
                alarm.name,
                busy.desired_capacity.unwrap_or(0)
            ),
        ))
    }

    /// A template alarm created with PutMetricAlarm from its properties (moto's
    /// CloudFormation skips alarms).
    async fn put_alarm(&self, logical: &str) -> Result<Alarm, String> {
        let p = self.properties(logical)?;
        let name = p["AlarmName"]
            .as_str()
            .ok_or_else(|| format!("{logical}: no AlarmName"))?
            .to_owned();
        let number = |key: &str| {
            p[key]
                .as_f64()
                .or_else(|| p[key].as_str().and_then(|s| s.parse().ok()))
        };
        let mut request = self
            .cloudwatch()
            .put_metric_alarm()
            .alarm_name(&name)
            .set_alarm_description(p["AlarmDescription"].as_str().map(str::to_owned))
            .set_namespace(p["Namespace"].as_str().map(str::to_owned))
            .set_metric_name(p["MetricName"].as_str().map(str::to_owned))
            .set_statistic(p["Statistic"].as_str().map(Statistic::from))
            .set_period(number("Period").map(|v| v as i32))
            .set_evaluation_periods(number("EvaluationPeriods").map(|v| v as i32))
            .set_datapoints_to_alarm(number("DatapointsToAlarm").map(|v| v as i32))
            .set_threshold(number("Threshold"))
            .set_comparison_operator(
                p["ComparisonOperator"]
                    .as_str()
                    .map(ComparisonOperator::from),
            )
            .set_treat_missing_data(p["TreatMissingData"].as_str().map(str::to_owned));
        for d in p["Dimensions"].as_array().into_iter().flatten() {
            request = request.dimensions(
                Dimension::builder()
                    .set_name(d["Name"].as_str().map(str::to_owned))
                    .set_value(d["Value"].as_str().map(str::to_owned))
                    .build(),
            );
        }
        for action in p["AlarmActions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            request = request.alarm_actions(action);
        }
        request.send().await.map_err(|e| {
            format!(
                "PutMetricAlarm {name}: {}",
                aws_sdk_cloudwatch::error::DisplayErrorContext(e)
            )
        })?;
        Ok(Alarm {
            name,
            properties: p,
        })
    }

    /// EC2 warns that a vid2vid instance will be reclaimed; spot-interruption detaches it (the
    /// group launches a replacement at once) and tells the fleet on the fleet topic.
    async fn spot_warning(&self) -> Result<((), String), String> {
        let sqs = aws_sdk_sqs::Client::new(&self.sdk);
        let queue = subscribe_queue(
            &aws_sdk_sns::Client::new(&self.sdk),
            &sqs,
            self.id("FleetEventsTopic")?,
            "local-fleet-listener",
        )
        .await?;
        let before = self.group("vid2vid").await?;
        let instance = before
            .instances()
            .first()
            .and_then(|i| i.instance_id.clone())
            .ok_or("vid2vid has no instance to interrupt")?;
        let mut event = self.sample("spot-interruption/spot-interruption-warning.json")?;
        event["id"] = json!(uuid_like());
        event["time"] = json!(rfc3339_now());
        event["resources"] = json!([format!(
            "arn:aws:ec2:{REGION}:{ACCOUNT_ID}:instance/{instance}"
        )]);
        event["detail"]["instance-id"] = json!(instance);
        let outcome = self.invoke("spot-interruption", &event).await?;
        let after = self.group("vid2vid").await?;
        let ids: Vec<String> = after
            .instances()
            .iter()
            .filter_map(|i| i.instance_id.clone())
            .collect();
        if ids.contains(&instance) {
            return Err(format!(
                "{instance} is still in the group; outcome {outcome}"
            ));
        }
        if ids.len() != before.instances().len() {
            return Err(format!(
                "{} instances after the detach, {} before: no replacement",
                ids.len(),
                before.instances().len()
            ));
        }
        let mut told = None;
        for _ in 0..20 {
            let messages = sqs
                .receive_message()
                .queue_url(&queue)
                .max_number_of_messages(10)
                .send()
                .await
                .map_err(|e| {
                    format!(
                        "ReceiveMessage: {}",
                        aws_sdk_sqs::error::DisplayErrorContext(e)
                    )
                })?
                .messages
                .unwrap_or_default();
            told = messages
                .into_iter()
                .filter_map(|m| m.body)
                .find(|b| b.contains(&instance));
            if told.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if told.is_none() {
            return Err(format!(
                "no fleet message about {instance}; outcome {outcome}"
            ));
        }
        Ok((
            (),
            format!(
                "{instance} detached; {} in service again; fleet message received",
                ids.len()
            ),
        ))
    }

    /// The function-error alarms of the template gate a CI deploy: all OK, the gate passes.
    async fn gate_passes(&self) -> Result<(Vec<String>, String), String> {
        let cloudwatch = self.cloudwatch();
        let mut names = Vec::new();
        for logical in [
            "ScaleToZeroFunctionErrors",
            "SpotInterruptionFunctionErrors",
        ] {
            let alarm = self.put_alarm(logical).await?;
            // What CloudWatch reports once it has evaluated zero errors.
            set_alarm_state(&cloudwatch, &alarm.name, StateValue::Ok).await?;
            names.push(alarm.name);
        }
        let verdict = self.gate(&names).await?;
        if verdict["verdict"] != "pass" {
            return Err(format!("expected pass, got {verdict}"));
        }
        Ok((names.clone(), format!("pass ({} alarms OK)", names.len())))
    }

    async fn gate_fails(&self, names: &[String]) -> Result<((), String), String> {
        let firing = &names[0];
        set_alarm_state(&self.cloudwatch(), firing, StateValue::Alarm).await?;
        let verdict = self.gate(names).await?;
        if verdict["verdict"] != "fail" {
            return Err(format!("expected fail, got {verdict}"));
        }
        let reason = verdict["reason"].as_str().unwrap_or_default();
        if !reason.contains(firing.as_str()) {
            return Err(format!("the reason does not name {firing}: {verdict}"));
        }
        Ok(((), format!("fail: {reason}")))
    }

    /// The CI invoke sample, gating on `names` with a short bake.
    async fn gate(&self, names: &[String]) -> Result<Value, String> {
        let mut event = self.sample("deploy-gate/ci-direct.json")?;
        let object = event
            .as_object_mut()
            .ok_or("ci-direct.json is not an object")?;
        // No load balancer here: the alarms are the checks.
        object.remove("TargetGroup");
        object.remove("LoadBalancer");
        object.insert("AlarmNames".into(), json!(names));
        object.insert("BakeSeconds".into(), json!("2"));
        object.insert("PollSeconds".into(), json!("1"));
        object.insert("Release".into(), json!(format!("local-{}", random_hex(4))));
        self.invoke("deploy-gate", &event).await
    }
}

struct Alarm {
    name: String,
    properties: Value,
}

async fn set_alarm_state(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    name: &str,
    state: StateValue,
) -> Result<(), String> {
    cloudwatch
        .set_alarm_state()
        .alarm_name(name)
        .state_value(state.clone())
        .state_reason(format!("local scenario: {}", state.as_str()))
        .send()
        .await
        .map_err(|e| {
            format!(
                "SetAlarmState {name}: {}",
                aws_sdk_cloudwatch::error::DisplayErrorContext(e)
            )
        })?;
    Ok(())
}

async fn create_secret(
    secrets: &aws_sdk_secretsmanager::Client,
    properties: &Value,
    value: &Value,
) -> Result<String, String> {
    let name = properties["Name"].as_str().ok_or("secret without a Name")?;
    let mut request = secrets
        .create_secret()
        .name(name)
        .set_description(properties["Description"].as_str().map(str::to_owned))
        .secret_string(value.to_string());
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
        .map_err(|e| {
            format!(
                "CreateSecret {name}: {}",
                aws_sdk_secretsmanager::error::DisplayErrorContext(e)
            )
        })?
        .arn
        .ok_or_else(|| format!("CreateSecret {name}: no ARN"))
}

/// A password as the template's GenerateSecretString makes it.
async fn random_password(
    secrets: &aws_sdk_secretsmanager::Client,
    properties: &Value,
) -> Result<String, String> {
    let spec = &properties["GenerateSecretString"];
    secrets
        .get_random_password()
        .set_password_length(spec["PasswordLength"].as_i64())
        .set_exclude_characters(spec["ExcludeCharacters"].as_str().map(str::to_owned))
        .send()
        .await
        .map_err(|e| {
            format!(
                "GetRandomPassword: {}",
                aws_sdk_secretsmanager::error::DisplayErrorContext(e)
            )
        })?
        .random_password
        .ok_or_else(|| "GetRandomPassword: no password".to_owned())
}

async fn subscribe_queue(
    sns: &aws_sdk_sns::Client,
    sqs: &aws_sdk_sqs::Client,
    topic_arn: &str,
    name: &str,
) -> Result<String, String> {
    let url = sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .map_err(|e| {
            format!(
                "CreateQueue: {}",
                aws_sdk_sqs::error::DisplayErrorContext(e)
            )
        })?
        .queue_url
        .ok_or("CreateQueue: no URL")?;
    sns.subscribe()
        .topic_arn(topic_arn)
        .protocol("sqs")
        .endpoint(format!("arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{name}"))
        .send()
        .await
        .map_err(|e| format!("Subscribe: {}", aws_sdk_sns::error::DisplayErrorContext(e)))?;
    Ok(url)
}

fn str_field(value: &Value, key: &str) -> Result<String, String> {
    value[key]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("secret has no {key}"))
}

/// `…:secret:/orch-local/local/db/master-AbCdEf` → `/orch-local/local/db/master`.
fn name_of(arn: &str) -> &str {
    let name = arn.splitn(7, ':').nth(6).unwrap_or(arn);
    name.rsplit_once('-').map_or(name, |(n, _)| n)
}

fn uuid_like() -> String {
    let h = random_hex(16);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn rfc3339_now() -> String {
    DateTime::from(SystemTime::now())
        .fmt(DateTimeFormat::DateTime)
        .unwrap_or_default()
}
