//! The scenario's steps, in the order the suite meets them in production.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_sdk_cloudformation::types::StackStatus;
use aws_sdk_cloudwatch::primitives::{DateTime, DateTimeFormat};
use serde_json::{Value, json};

mod cache;
mod databases;
mod fleet;
mod gate;
mod iam_proof;
mod other_stack;
mod worker;

use super::lambda::LocalLambda;
use super::stack::{self, AMI_PARAMETER, CODE_BUCKET, CODE_KEY};
use super::{Narrator, Options, Stop};
use crate::cfn_recorder::CfnResponseRecorder;
use crate::cloudwatch_cbor::CborBridge;
use crate::elasticache::ElastiCacheStandIn;
use crate::mariadb::MariaDb;
use crate::moto::{Moto, REGION, unsigned_authorization};
use crate::postgres::Postgres;
use crate::process::random_hex;
use crate::redis::RedisServer;

use super::STACK;
/// A second stack in the same account and region, with the same workflow slugs.
const OTHER_STACK: &str = "orch-other";
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

/// The SDK clients the steps use, built once (CloudWatch through the CBOR bridge).
struct Clients {
    cloudformation: aws_sdk_cloudformation::Client,
    secrets: aws_sdk_secretsmanager::Client,
    autoscaling: aws_sdk_autoscaling::Client,
    cloudwatch: aws_sdk_cloudwatch::Client,
    sns: aws_sdk_sns::Client,
    sqs: aws_sdk_sqs::Client,
}

impl Clients {
    fn new(sdk: &SdkConfig, bridge: &CborBridge) -> Clients {
        Clients {
            cloudformation: aws_sdk_cloudformation::Client::new(sdk),
            secrets: aws_sdk_secretsmanager::Client::new(sdk),
            autoscaling: aws_sdk_autoscaling::Client::new(sdk),
            cloudwatch: bridge.cloudwatch_client(sdk),
            sns: aws_sdk_sns::Client::new(sdk),
            sqs: aws_sdk_sqs::Client::new(sdk),
        }
    }
}

/// Everything the steps share.
struct World {
    moto: Moto,
    bridge: CborBridge,
    db: MariaDb,
    pg: Postgres,
    /// The cache: a TLS redis-server behind the ElastiCache API stand-in.
    redis: RedisServer,
    elasticache: ElastiCacheStandIn,
    /// Takes the responses of the custom resource outside the stack (PostgreSQL).
    recorder: CfnResponseRecorder,
    clients: Clients,
    lambda: LocalLambda,
    template: Value,
    parameters: BTreeMap<String, Value>,
    stack_id: String,
    ids: BTreeMap<String, String>,
    /// The other stack's groups as they were created: name → snapshot.
    other_groups: BTreeMap<String, String>,
}

pub(super) async fn run(options: &Options, n: &mut Narrator<'_>) -> Result<(), Stop> {
    let (moto, bridge, db, pg, redis, elasticache, bundle) = n
        .step("stand-ins up: moto, MariaDB, PostgreSQL, Redis", async {
            // The cache's first token is the secret's, set when the scenario creates the group.
            let placeholder = random_hex(16);
            let (moto, db, pg, redis, elasticache) = tokio::join!(
                Moto::start(),
                MariaDb::start_tls_only(),
                Postgres::start_tls_only(),
                RedisServer::start_tls(&placeholder),
                ElastiCacheStandIn::start()
            );
            let bridge = CborBridge::start(moto.endpoint_url()).await;
            // DbCaBundle: the functions verify both servers' certificates against this
            // bundle, as they would against the RDS CA bundle.
            let bundle = options.log_dir.join("db-ca-bundle.pem");
            let mut pem = String::new();
            let cas = [
                db.ca_pem_path(),
                pg.ca_pem_path(),
                Some(redis.ca_pem_path()),
            ];
            for ca in cas.into_iter().flatten() {
                pem.push_str(&std::fs::read_to_string(ca).map_err(|e| e.to_string())?);
            }
            std::fs::write(&bundle, pem).map_err(|e| format!("{}: {e}", bundle.display()))?;
            let detail = format!(
                "moto {}; MariaDB :{}, PostgreSQL :{} and Redis :{}, TLS-only with password auth; \
                 ElastiCache API {}",
                moto.endpoint_url(),
                db.port(),
                pg.port(),
                redis.port(),
                elasticache.endpoint_url()
            );
            let bundle = bundle.display().to_string();
            Ok(((moto, bridge, db, pg, redis, elasticache, bundle), detail))
        })
        .await?;
    let sdk = moto.sdk_config().await;
    let given = [("Stage", STAGE), ("DbCaBundle", bundle.as_str())];

    let (template, stack_id) = n
        .step(
            "stack created from template.yaml",
            create_stack(&options.root, &sdk, &given),
        )
        .await?;
    let mut parameters = stack::parameter_values(&template, &given);
    parameters.insert("AWS::StackName".to_owned(), json!(STACK));
    // DeployGateFunctionRole's ReadOwnStackStatus is granted on `!Ref AWS::StackId`.
    parameters.insert("AWS::StackId".to_owned(), json!(stack_id));
    let lambda = n
        .step("cargo lambda watch (Runtime API) up", async {
            let lambda = LocalLambda::start(&options.root, &options.log_dir).await?;
            Ok((lambda, "functions poll it under their own names".to_owned()))
        })
        .await?;
    let clients = Clients::new(&sdk, &bridge);
    let mut world = World {
        moto,
        bridge,
        db,
        pg,
        redis,
        elasticache,
        recorder: CfnResponseRecorder::start().await,
        clients,
        lambda,
        template,
        parameters,
        stack_id,
        ids: BTreeMap::new(),
        other_groups: BTreeMap::new(),
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
        "Redis token rotated: old one works until the next",
        world.rotate_redis_token(),
    )
    .await?;
    n.step(
        "another stack's groups, same workflow slugs",
        world.create_other_stack_groups(),
    )
    .await?;
    n.step(
        "queue backlog: groups woken, BacklogPerInstance",
        world.backlog_wakes_groups(),
    )
    .await?;
    n.step(
        "worker protects its job: idle alarm spares it",
        world.worker_protects_its_job(),
    )
    .await?;
    n.step(
        "job done, unprotected: img2vid set to zero",
        world.idle_after_the_job(),
    )
    .await?;
    n.step(
        "Spot warning: detached, replaced, worker told",
        world.spot_warning(),
    )
    .await?;
    n.step(
        "the other stack's groups were never touched",
        world.other_stack_untouched(),
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
    // Last, so it sees every call the functions made.
    n.step(
        "every AWS call allowed by its function's own role",
        world.every_call_allowed_by_its_role(),
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
        .header("Authorization", unsigned_authorization("testing", "ssm"))
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

impl World {
    /// A string parameter's effective value (default or given).
    fn parameter(&self, name: &str) -> &str {
        self.parameters
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
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
        self.resolved(&format!("/Resources/{logical}/Properties"))
    }

    /// A part of the rendered template (a JSON pointer) with its intrinsic functions resolved.
    fn resolved(&self, pointer: &str) -> Result<Value, String> {
        let raw = self
            .template
            .pointer(pointer)
            .ok_or_else(|| format!("template.yaml has no {pointer}"))?;
        stack::resolve(raw, &self.template, &self.ids, &self.parameters)
    }

    /// The statements of a role's inline policies, resolved (for `harness::iam`).
    fn role_statements(&self, role: &str) -> Result<Vec<Value>, String> {
        let resolved = json!({"Properties": self.properties(role)?});
        Ok(crate::iam::role_statements(&resolved))
    }

    async fn invoke(&self, function: &str, event: &Value) -> Result<Value, String> {
        self.lambda.invoke(function, event).await.map_err(|e| {
            format!(
                "{function}: {e}\nend of its log:\n{}",
                self.lambda.log_tail(function)
            )
        })
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
                .header("Authorization", unsigned_authorization("testing", "lambda"))
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
            // Its own key: the IAM proof tells the functions' calls apart by it.
            let access_key = iam_proof::access_key_id(binary);
            let elasticache = self.elasticache.endpoint_url();
            for (key, value) in [
                ("AWS_LAMBDA_FUNCTION_NAME", name.as_str()),
                ("AWS_ENDPOINT_URL", self.moto.endpoint_url()),
                // aws-sdk-cloudwatch speaks RPC v2 CBOR, which moto does not: the bridge translates.
                ("AWS_ENDPOINT_URL_CLOUDWATCH", self.bridge.url()),
                // moto's ModifyReplicationGroup ignores AuthToken: the stand-in applies it.
                ("AWS_ENDPOINT_URL_ELASTICACHE", elasticache.as_str()),
                ("AWS_REGION", REGION),
                ("AWS_DEFAULT_REGION", REGION),
                ("AWS_ACCESS_KEY_ID", access_key.as_str()),
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
