//! The cache: the Redis AUTH token rotated twice by secret-rotation, through the ElastiCache
//! API stand-in and the private TLS redis-server, and each ElastiCache call checked against the
//! function's own role (the calls go to the stand-in, so the moto-based proof does not see
//! them).

use serde_json::Value;

use super::World;
use super::iam_proof::access_key_id;
use crate::iam::{self, Request};
use crate::moto::{ACCOUNT_ID, REGION};

const SECRET: &str = "RedisAuthTokenSecret";
const GROUP: &str = "RedisReplicationGroup";

impl World {
    /// Rotation one: the new token logs in and the old one still does. Rotation two: the
    /// token before last is refused, the last two log in.
    pub(super) async fn rotate_redis_token(&mut self) -> Result<((), String), String> {
        // What CloudFormation does when it creates the group: the secret's first token is its
        // only AUTH token. (moto's CloudFormation makes no ElastiCache group that answers.)
        let first = self.secret(SECRET, "AWSCURRENT").await?;
        let group_id = text(&first, "replicationGroupId")?;
        let token0 = text(&first, "password")?;
        self.redis.set_default_passwords(&[&token0]).await;
        self.elasticache.add_group(&group_id, &self.redis, &token0);
        self.ids.insert(GROUP.to_owned(), group_id.clone());

        self.rotate(SECRET).await?;
        let token1 = text(&self.secret(SECRET, "AWSCURRENT").await?, "password")?;
        if token1 == token0 {
            return Err("AWSCURRENT still holds the first token".into());
        }
        self.expect_tokens(&[(&token1, true), (&token0, true)], "after rotation one")
            .await?;

        self.rotate(SECRET).await?;
        let token2 = text(&self.secret(SECRET, "AWSCURRENT").await?, "password")?;
        self.expect_tokens(
            &[(&token2, true), (&token1, true), (&token0, false)],
            "after rotation two",
        )
        .await?;
        let changes = self.elasticache.accepted_changes();
        if changes != ["ROTATE", "SET", "ROTATE"] {
            return Err(format!(
                "ModifyReplicationGroup changes {changes:?}, expected ROTATE, SET, ROTATE"
            ));
        }
        let calls = self.elasticache_calls_allowed(&group_id)?;
        Ok((
            (),
            format!(
                "{group_id}: new token works, old one until the next rotation, then refused; \
                 ROTATE, SET, ROTATE; {calls} ElastiCache calls allowed by secret-rotation's role"
            ),
        ))
    }

    async fn expect_tokens(&self, tokens: &[(&str, bool)], when: &str) -> Result<(), String> {
        for (index, (token, works)) in tokens.iter().enumerate() {
            if self.redis.accepts(token).await != *works {
                let age = ["the newest", "the one before", "the one before that"]
                    .get(index)
                    .copied()
                    .unwrap_or("an older");
                let (actual, expected) = if *works {
                    ("is refused", "to log in")
                } else {
                    ("logs in", "to be refused")
                };
                return Err(format!(
                    "{when}: {age} token {actual}; expected it {expected}"
                ));
            }
        }
        Ok(())
    }

    /// Each ElastiCache call secret-rotation made, evaluated against its role: the action on
    /// the group's ARN. Returns how many.
    fn elasticache_calls_allowed(&self, group_id: &str) -> Result<usize, String> {
        let statements = self.role_statements("SecretRotationFunctionRole")?;
        let key = access_key_id("secret-rotation");
        let arn = format!("arn:aws:elasticache:{REGION}:{ACCOUNT_ID}:replicationgroup:{group_id}");
        let calls: Vec<_> = self
            .elasticache
            .calls()
            .into_iter()
            .filter(|call| call.access_key.as_deref() == Some(key.as_str()))
            .collect();
        if calls.is_empty() {
            return Err(format!("no ElastiCache call was signed with {key}"));
        }
        for call in &calls {
            let request = Request::new(&format!("elasticache:{}", call.action), &arn);
            let decision = iam::evaluate(&statements, &request)
                .map_err(|e| format!("{}: {e}", call.action))?;
            if !decision.is_allowed() {
                return Err(format!(
                    "elasticache:{} on {arn} is {decision:?} by SecretRotationFunctionRole",
                    call.action
                ));
            }
        }
        Ok(calls.len())
    }
}

fn text(value: &Value, key: &str) -> Result<String, String> {
    value[key]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("the Redis secret has no {key}"))
}
