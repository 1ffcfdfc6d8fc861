//! secret-rotation's `engine: redis` end to end: the handler in-process against moto's Secrets
//! Manager, the harness's ElastiCache stand-in (through the real `aws-sdk-elasticache` client)
//! and a real private redis-server with TLS, whose `default` user's passwords are the AUTH
//! tokens. Logins are checked with the `redis` crate over TLS verified against the harness CA.

use std::time::Duration;

use aws_sdk_elasticache::types::AuthTokenUpdateStrategyType;
use aws_sdk_secretsmanager::Client as SecretsClient;
use harness::elasticache::ElastiCacheStandIn;
use harness::log_capture::CapturedLogs;
use harness::{moto::Moto, redis::RedisServer};
use lambda_runtime::{Diagnostic, LambdaEvent};
use secret_rotation::credential_target::redis::{TOKEN_PUNCTUATION, check_token};
use secret_rotation::{RotationError, Rotator, config::RotationConfig};
use serde_json::{Value, json};
use shared::env_config::EnvVars;

const GROUP: &str = "bp-cache";
const FIRST_TOKEN: &str = "First-token-0123456789-abcdef";

/// moto (Secrets Manager), a TLS redis-server holding [`FIRST_TOKEN`], the stand-in with the
/// group on it, and the rotation function wired to all three.
struct Fixture {
    _moto: Moto,
    secrets: SecretsClient,
    redis: RedisServer,
    elasticache: ElastiCacheStandIn,
    elasticache_client: aws_sdk_elasticache::Client,
    rotator: Rotator,
}

impl Fixture {
    async fn start() -> Fixture {
        let (moto, redis, elasticache) = tokio::join!(
            Moto::start(),
            RedisServer::start_tls(FIRST_TOKEN),
            ElastiCacheStandIn::start()
        );
        harness::rotation::allow_rotation(&moto).await;
        elasticache.add_group(GROUP, &redis, FIRST_TOKEN);
        let sdk = moto.sdk_config().await;
        let secrets = SecretsClient::new(&sdk);
        let elasticache_client = aws_sdk_elasticache::Client::from_conf(
            aws_sdk_elasticache::config::Builder::from(&sdk)
                .endpoint_url(elasticache.endpoint_url())
                .build(),
        );
        let ca = redis.ca_pem_path().display().to_string();
        let config = RotationConfig::from_env(&EnvVars::from_pairs([
            ("DB_CA_BUNDLE", ca.as_str()),
            ("DB_CONNECT_TIMEOUT_SECONDS", "2"),
        ]))
        .unwrap();
        let rotator =
            Rotator::new(secrets.clone(), config).with_elasticache(elasticache_client.clone());
        Fixture {
            _moto: moto,
            secrets,
            redis,
            elasticache,
            elasticache_client,
            rotator,
        }
    }

    fn secret_value(&self, token: &str) -> Value {
        json!({"engine": "redis", "replicationGroupId": GROUP, "host": self.redis.host(),
               "port": self.redis.port(), "password": token, "ssl": true,
               "kept": {"owner": "team-a"}})
    }

    async fn create_secret(&self, name: &str, value: &Value) -> String {
        harness::rotation::create_secret(&self.secrets, name, value).await
    }

    async fn step(&self, step: &str, arn: &str, token: &str) -> Result<String, RotationError> {
        let answer = self
            .rotator
            .handle_payload(json!({"Step": step, "SecretId": arn, "ClientRequestToken": token}))
            .await?;
        Ok(answer["outcome"].as_str().unwrap().to_owned())
    }

    /// A step run as Lambda runs it, with `left` before the invocation's deadline.
    async fn step_with_deadline(
        &self,
        step: &str,
        arn: &str,
        token: &str,
        left: Duration,
    ) -> Result<Value, RotationError> {
        let payload = json!({"Step": step, "SecretId": arn, "ClientRequestToken": token});
        let context = harness::lambda_context::with_deadline_in(left);
        self.rotator
            .handle(LambdaEvent::new(payload, context))
            .await
    }

    async fn token(&self, arn: &str, stage: &str) -> String {
        let (_, value) = harness::rotation::secret_value(&self.secrets, arn, stage).await;
        value["password"].as_str().unwrap().to_owned()
    }

    async fn version_of(&self, arn: &str, stage: &str) -> String {
        self.secrets
            .get_secret_value()
            .secret_id(arn)
            .version_stage(stage)
            .send()
            .await
            .unwrap()
            .version_id()
            .unwrap()
            .to_owned()
    }

    /// What an operator may do by hand: `SET` the group's only token, and wait for it.
    async fn operator_set(&self, token: &str) {
        self.elasticache_client
            .modify_replication_group()
            .replication_group_id(GROUP)
            .auth_token(token)
            .auth_token_update_strategy(AuthTokenUpdateStrategyType::Set)
            .apply_immediately(true)
            .send()
            .await
            .expect("an operator's SET");
        self.elasticache
            .wait_until_available(GROUP, Duration::from_secs(10))
            .await;
    }

    /// The four steps for a new rotation; returns its token.
    async fn rotate(&self, arn: &str) -> String {
        let token = harness::rotation::start_rotation(&self.secrets, arn).await;
        for step in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
            self.step(step, arn, &token)
                .await
                .unwrap_or_else(|e| panic!("{step}: {}", error_type(e).1));
        }
        harness::rotation::end_rotation(&self.secrets, arn, &token).await;
        token
    }
}

fn error_type(error: RotationError) -> (String, String) {
    let diagnostic = Diagnostic::from(error);
    (diagnostic.error_type, diagnostic.error_message)
}

fn assert_no_token(text: &str, tokens: &[&str]) {
    for token in tokens {
        assert!(!text.contains(token), "a token leaked: {text}");
    }
}

#[tokio::test]
async fn a_full_rotation_keeps_the_old_token_working_until_the_next_rotation_revokes_it() {
    let fx = Fixture::start().await;
    let logs = CapturedLogs::default();
    let _logging = logs.install();
    let arn = fx
        .create_secret("redis-auth", &fx.secret_value(FIRST_TOKEN))
        .await;

    // First rotation: the group was created with one token; ROTATE adds the new one.
    let token = harness::rotation::start_rotation(&fx.secrets, &arn).await;
    let outcomes = [
        ("createSecret", "pending-created"),
        ("setSecret", "password-changed"),
        ("testSecret", "pending-verified"),
        ("finishSecret", "current-moved"),
    ];
    for (step, expected) in outcomes {
        assert_eq!(
            fx.step(step, &arn, &token).await.unwrap(),
            expected,
            "{step}"
        );
    }
    harness::rotation::end_rotation(&fx.secrets, &arn, &token).await;
    let second = fx.token(&arn, "AWSCURRENT").await;
    assert_eq!(fx.token(&arn, "AWSPREVIOUS").await, FIRST_TOKEN);
    assert!(fx.redis.accepts(&second).await, "the new token works");
    assert!(
        fx.redis.accepts(FIRST_TOKEN).await,
        "the old token still works after finishSecret"
    );
    assert_eq!(fx.elasticache.accepted_changes(), ["ROTATE"]);
    assert_eq!(fx.elasticache.live_token_count(GROUP), 2);

    // A token ElastiCache accepts: PASSWORD_LENGTH, only its permitted punctuation.
    assert_eq!(second.len(), 32);
    assert_eq!(check_token(&second), Ok(()));
    assert!(
        second
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || TOKEN_PUNCTUATION.contains(c)),
        "{second}"
    );
    // Every other field is kept.
    let out = fx
        .secrets
        .get_secret_value()
        .secret_id(&arn)
        .send()
        .await
        .unwrap();
    let current: Value = serde_json::from_str(out.secret_string().unwrap()).unwrap();
    assert_eq!(current["kept"]["owner"], "team-a");
    assert_eq!(current["replicationGroupId"], GROUP);

    // Second rotation: setSecret revokes the token AWSPREVIOUS holds, then adds the new one.
    let token = harness::rotation::start_rotation(&fx.secrets, &arn).await;
    fx.step("createSecret", &arn, &token).await.unwrap();
    assert!(
        fx.redis.accepts(FIRST_TOKEN).await,
        "createSecret changes nothing"
    );
    fx.step("setSecret", &arn, &token).await.unwrap();
    let third = fx.token(&arn, "AWSPENDING").await;
    assert!(
        !fx.redis.accepts(FIRST_TOKEN).await,
        "the token before last is revoked"
    );
    assert!(
        fx.redis.accepts(&second).await,
        "the current token keeps working"
    );
    assert!(fx.redis.accepts(&third).await);
    assert_eq!(
        fx.elasticache.accepted_changes(),
        ["ROTATE", "SET", "ROTATE"]
    );
    fx.step("testSecret", &arn, &token).await.unwrap();
    fx.step("finishSecret", &arn, &token).await.unwrap();
    harness::rotation::end_rotation(&fx.secrets, &arn, &token).await;
    assert_eq!(fx.token(&arn, "AWSCURRENT").await, third);
    assert_eq!(fx.token(&arn, "AWSPREVIOUS").await, second);
    assert!(fx.redis.accepts(&second).await && fx.redis.accepts(&third).await);

    // Every call the function made was a Describe or a Modify of the one group.
    for call in fx.elasticache.calls() {
        assert_eq!(
            call.replication_group_id.as_deref(),
            Some(GROUP),
            "{call:?}"
        );
        assert!(
            ["DescribeReplicationGroups", "ModifyReplicationGroup"].contains(&call.action.as_str()),
            "{call:?}"
        );
    }
    assert_no_token(&logs.text(), &[FIRST_TOKEN, &second, &third]);
}

#[tokio::test]
async fn every_step_run_twice_changes_nothing_the_second_time() {
    let fx = Fixture::start().await;
    let arn = fx
        .create_secret("redis-twice", &fx.secret_value(FIRST_TOKEN))
        .await;
    fx.rotate(&arn).await;
    let before = fx.elasticache.accepted_changes();
    assert_eq!(before, ["ROTATE"]);

    let token = harness::rotation::start_rotation(&fx.secrets, &arn).await;
    for (step, first, second) in [
        ("createSecret", "pending-created", "pending-already-exists"),
        ("setSecret", "password-changed", "pending-already-logs-in"),
        ("testSecret", "pending-verified", "pending-verified"),
        ("finishSecret", "current-moved", "rotation-already-complete"),
    ] {
        assert_eq!(fx.step(step, &arn, &token).await.unwrap(), first, "{step}");
        let changes = fx.elasticache.accepted_changes();
        assert_eq!(
            fx.step(step, &arn, &token).await.unwrap(),
            second,
            "{step} again"
        );
        assert_eq!(
            fx.elasticache.accepted_changes(),
            changes,
            "{step} again changed the group"
        );
    }
    assert_eq!(
        fx.elasticache.accepted_changes(),
        ["ROTATE", "SET", "ROTATE"]
    );
}

#[tokio::test]
async fn a_try_that_hits_the_deadline_fails_retryably_and_the_next_goes_on_without_repeating() {
    let fx = Fixture::start().await;
    let arn = fx
        .create_secret("redis-deadline", &fx.secret_value(FIRST_TOKEN))
        .await;
    let second = {
        fx.rotate(&arn).await;
        fx.token(&arn, "AWSCURRENT").await
    };
    let token = harness::rotation::start_rotation(&fx.secrets, &arn).await;
    fx.step("createSecret", &arn, &token).await.unwrap();
    let third = fx.token(&arn, "AWSPENDING").await;

    // The SET takes longer than this invocation has (4 s left, 3 s kept for the answer).
    fx.elasticache
        .set_modifying_for(GROUP, Duration::from_secs(3));
    let (kind, message) = error_type(
        fx.step_with_deadline("setSecret", &arn, &token, Duration::from_secs(4))
            .await
            .unwrap_err(),
    );
    assert_eq!(kind, "ReplicationGroupModifying", "{message}");
    assert!(message.contains("still `modifying`"), "{message}");
    assert_no_token(&message, &[FIRST_TOKEN, &second, &third]);
    assert_eq!(fx.elasticache.accepted_changes(), ["ROTATE", "SET"]);
    assert!(
        fx.redis.accepts(&second).await,
        "AWSCURRENT works while the group is modifying"
    );

    // The next try waits for the SET to finish and only adds the new token.
    fx.elasticache
        .set_modifying_for(GROUP, Duration::from_millis(200));
    let answer = fx
        .step_with_deadline("setSecret", &arn, &token, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(answer["outcome"], "password-changed");
    assert_eq!(
        fx.elasticache.accepted_changes(),
        ["ROTATE", "SET", "ROTATE"]
    );
    assert!(!fx.redis.accepts(FIRST_TOKEN).await);
    assert!(fx.redis.accepts(&second).await && fx.redis.accepts(&third).await);

    // A change still in flight when the step starts is waited for, not repeated.
    let token = {
        fx.step("testSecret", &arn, &token).await.unwrap();
        fx.step("finishSecret", &arn, &token).await.unwrap();
        harness::rotation::end_rotation(&fx.secrets, &arn, &token).await;
        harness::rotation::start_rotation(&fx.secrets, &arn).await
    };
    fx.step("createSecret", &arn, &token).await.unwrap();
    fx.elasticache
        .set_modifying_for(GROUP, Duration::from_secs(1));
    fx.elasticache_client
        .modify_replication_group()
        .replication_group_id(GROUP)
        .auth_token(&third)
        .auth_token_update_strategy(AuthTokenUpdateStrategyType::Set)
        .apply_immediately(true)
        .send()
        .await
        .expect("an operator's SET while the rotation is under way");
    assert_eq!(fx.elasticache.status(GROUP), "modifying");
    fx.elasticache
        .set_modifying_for(GROUP, Duration::from_millis(200));
    assert_eq!(
        fx.step("setSecret", &arn, &token).await.unwrap(),
        "password-changed"
    );
    // The operator's SET already revoked the previous token: only a ROTATE follows.
    assert_eq!(
        fx.elasticache.accepted_changes(),
        ["ROTATE", "SET", "ROTATE", "SET", "ROTATE"]
    );
    assert!(fx.redis.accepts(&third).await, "AWSCURRENT keeps working");
}

#[tokio::test]
async fn a_failure_between_rotate_and_finish_leaves_awscurrent_working() {
    let fx = Fixture::start().await;
    let arn = fx
        .create_secret("redis-failure", &fx.secret_value(FIRST_TOKEN))
        .await;
    let token = harness::rotation::start_rotation(&fx.secrets, &arn).await;
    fx.step("createSecret", &arn, &token).await.unwrap();
    fx.step("setSecret", &arn, &token).await.unwrap();
    let pending = fx.token(&arn, "AWSPENDING").await;
    let current_version = fx.version_of(&arn, "AWSCURRENT").await;

    // The function dies here: nothing else runs. Every client still logs in.
    assert!(fx.redis.accepts(FIRST_TOKEN).await && fx.redis.accepts(&pending).await);

    // An operator takes the pending token away before testSecret (SET with the current one):
    // the test step fails, finishSecret refuses to move AWSCURRENT, and AWSCURRENT keeps
    // working throughout.
    fx.operator_set(FIRST_TOKEN).await;
    let (kind, message) = error_type(fx.step("testSecret", &arn, &token).await.unwrap_err());
    assert_eq!(kind, "RedisTokenRefused", "{message}");
    assert!(message.contains("AWSPENDING token is refused"), "{message}");
    let (kind, message) = error_type(fx.step("finishSecret", &arn, &token).await.unwrap_err());
    assert_eq!(kind, "PendingNotVerified", "{message}");
    assert_no_token(&message, &[FIRST_TOKEN, &pending]);
    assert_eq!(fx.version_of(&arn, "AWSCURRENT").await, current_version);
    assert!(fx.redis.accepts(FIRST_TOKEN).await);

    // The retried setSecret puts the pending token back (ROTATE again), and the rotation ends.
    assert_eq!(
        fx.step("setSecret", &arn, &token).await.unwrap(),
        "password-changed"
    );
    fx.step("testSecret", &arn, &token).await.unwrap();
    fx.step("finishSecret", &arn, &token).await.unwrap();
    assert_eq!(fx.token(&arn, "AWSCURRENT").await, pending);
    assert!(fx.redis.accepts(FIRST_TOKEN).await && fx.redis.accepts(&pending).await);
    assert_eq!(
        fx.elasticache.accepted_changes(),
        ["ROTATE", "SET", "ROTATE"],
        "the function's ROTATE, the operator's SET, the retried ROTATE"
    );
}

#[tokio::test]
async fn a_secret_without_host_is_rotated_on_the_groups_primary_endpoint() {
    let fx = Fixture::start().await;
    let mut value = fx.secret_value(FIRST_TOKEN);
    value.as_object_mut().unwrap().remove("host");
    // The template's port; the group's endpoint (this server's port) is what counts.
    value["port"] = json!(6379);
    let arn = fx.create_secret("redis-no-host", &value).await;
    fx.rotate(&arn).await;
    fx.rotate(&arn).await;
    let (current, previous) = (
        fx.token(&arn, "AWSCURRENT").await,
        fx.token(&arn, "AWSPREVIOUS").await,
    );
    assert!(fx.redis.accepts(&current).await && fx.redis.accepts(&previous).await);
    assert!(!fx.redis.accepts(FIRST_TOKEN).await);
    assert_eq!(
        fx.elasticache.accepted_changes(),
        ["ROTATE", "SET", "ROTATE"]
    );
}

#[tokio::test]
async fn malformed_secrets_and_forbidden_characters_give_a_clear_error_and_change_nothing() {
    let fx = Fixture::start().await;
    let mut missing_group = fx.secret_value(FIRST_TOKEN);
    missing_group
        .as_object_mut()
        .unwrap()
        .remove("replicationGroupId");
    let forbidden = "Token-with-@-in-it-0123456789";
    for (name, value, reason) in [
        (
            "no-group",
            missing_group,
            "missing field `replicationGroupId`",
        ),
        (
            "at-sign",
            fx.secret_value(forbidden),
            "is not an ElastiCache AUTH token: it must be 16 to 128 printable characters without `/`, `\"`, `@` or spaces; it contains `@`",
        ),
        (
            "short",
            fx.secret_value("Short-token-01"),
            "it has 14 characters",
        ),
    ] {
        let arn = fx.create_secret(name, &value).await;
        let token = harness::rotation::start_rotation(&fx.secrets, &arn).await;
        let (kind, message) = error_type(fx.step("createSecret", &arn, &token).await.unwrap_err());
        assert_eq!(kind, "MalformedSecret", "{name}: {message}");
        assert!(
            message.contains(reason) && message.contains("AWSCURRENT"),
            "{message}"
        );
        assert_no_token(&message, &[FIRST_TOKEN, forbidden, "Short-token-01"]);
    }

    // A pending version with a forbidden character (put there by hand) is refused before
    // anything is sent to ElastiCache.
    let arn = fx
        .create_secret("pending-at-sign", &fx.secret_value(FIRST_TOKEN))
        .await;
    let token = harness::rotation::start_rotation(&fx.secrets, &arn).await;
    fx.secrets
        .put_secret_value()
        .secret_id(&arn)
        .client_request_token(&token)
        .secret_string(fx.secret_value(forbidden).to_string())
        .version_stages("AWSPENDING")
        .send()
        .await
        .unwrap();
    // The pending version can never complete: each step says how to abandon the rotation.
    for step in ["setSecret", "testSecret", "finishSecret"] {
        let (kind, message) = error_type(fx.step(step, &arn, &token).await.unwrap_err());
        assert_eq!(kind, "PendingVersionUnusable", "{step}: {message}");
        assert!(message.contains("it contains `@`"), "{message}");
        assert!(
            message.contains(&format!("--remove-from-version-id {token}`")),
            "{message}"
        );
        assert_no_token(&message, &[FIRST_TOKEN, forbidden]);
    }
    assert!(
        fx.elasticache
            .calls()
            .iter()
            .all(|call| call.action != "ModifyReplicationGroup"),
        "{:?}",
        fx.elasticache.calls()
    );
    assert!(fx.redis.accepts(FIRST_TOKEN).await);
    assert_eq!(fx.elasticache.live_token_count(GROUP), 1);
}

#[tokio::test]
async fn a_token_changed_outside_the_rotation_stops_setsecret_before_any_change() {
    let fx = Fixture::start().await;
    let arn = fx
        .create_secret("redis-outside", &fx.secret_value(FIRST_TOKEN))
        .await;
    let token = harness::rotation::start_rotation(&fx.secrets, &arn).await;
    fx.step("createSecret", &arn, &token).await.unwrap();
    fx.redis
        .set_default_passwords(&["Someone-else-0123456789"])
        .await;
    let (kind, message) = error_type(fx.step("setSecret", &arn, &token).await.unwrap_err());
    assert_eq!(kind, "NoCredentialsLogIn", "{message}");
    assert!(
        message.contains("changed outside this rotation"),
        "{message}"
    );
    assert!(fx.elasticache.accepted_changes().is_empty());
}

/// The error code of a failed ElastiCache call.
fn code<E: aws_sdk_elasticache::error::ProvideErrorMetadata>(error: E) -> String {
    error.code().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn the_stand_in_applies_rotate_and_set_to_the_server_as_elasticache_does() {
    let fx = Fixture::start().await;
    let client = &fx.elasticache_client;
    let modify = |strategy: AuthTokenUpdateStrategyType, token: &'static str| {
        client
            .modify_replication_group()
            .replication_group_id(GROUP)
            .auth_token(token)
            .auth_token_update_strategy(strategy)
            .apply_immediately(true)
            .send()
    };
    let second = "Second-token-0123456789";
    // SET is allowed only after ROTATE.
    let refused = modify(AuthTokenUpdateStrategyType::Set, second)
        .await
        .unwrap_err();
    assert_eq!(code(refused), "InvalidParameterValue");
    // A token ElastiCache would refuse.
    let refused = modify(AuthTokenUpdateStrategyType::Rotate, "has space 0123456789")
        .await
        .unwrap_err();
    assert_eq!(code(refused), "InvalidParameterValue");

    // ROTATE: `modifying` for a moment, then both tokens work.
    let out = modify(AuthTokenUpdateStrategyType::Rotate, second)
        .await
        .unwrap();
    assert_eq!(out.replication_group().unwrap().status(), Some("modifying"));
    let busy = modify(AuthTokenUpdateStrategyType::Set, second)
        .await
        .unwrap_err();
    assert_eq!(code(busy), "InvalidReplicationGroupState");
    fx.elasticache
        .wait_until_available(GROUP, Duration::from_secs(10))
        .await;
    let described = client
        .describe_replication_groups()
        .replication_group_id(GROUP)
        .send()
        .await
        .unwrap();
    let group = &described.replication_groups()[0];
    assert_eq!(group.status(), Some("available"));
    assert_eq!(group.auth_token_enabled(), Some(true));
    assert_eq!(group.transit_encryption_enabled(), Some(true));
    assert!(fx.redis.accepts(FIRST_TOKEN).await && fx.redis.accepts(second).await);

    // SET: only the token it names.
    modify(AuthTokenUpdateStrategyType::Set, second)
        .await
        .unwrap();
    fx.elasticache
        .wait_until_available(GROUP, Duration::from_secs(10))
        .await;
    assert!(!fx.redis.accepts(FIRST_TOKEN).await && fx.redis.accepts(second).await);

    let missing = client
        .describe_replication_groups()
        .replication_group_id("no-such-group")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(missing), "ReplicationGroupNotFoundFault");
}
