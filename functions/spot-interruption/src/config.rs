//! Configuration from the environment, read once at cold start.

use shared::env_config::{ConfigError, EnvVars};
use shared::fleet_tags::{StackName, stack_from_env};

/// Where fleet messages go, where `SpotInterruptions` is counted, and whose groups are acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `FLEET_TOPIC_ARN`: the SNS topic workers and the backend subscribe to.
    pub fleet_topic_arn: String,
    /// `METRIC_NAMESPACE`: the CloudWatch namespace of `SpotInterruptions`.
    pub metric_namespace: String,
    /// `ORCHESTRATOR_STACK`: only instances of groups tagged `orchestrator:stack` with this
    /// name are acted on.
    pub orchestrator_stack: StackName,
    /// `PROGRESS_TABLE`: the DynamoDB table (name or ARN) that keeps what a failed attempt at
    /// an event got done, for Lambda's retry ([`crate::progress_table`]).
    pub progress_table: String,
}

impl Config {
    pub fn from_env(env: &EnvVars) -> Result<Self, ConfigError> {
        let fleet_topic_arn = env.optional_with("FLEET_TOPIC_ARN", |raw| {
            if raw.starts_with("arn:") && raw.contains(":sns:") {
                Ok(raw.to_owned())
            } else {
                Err("expected an SNS topic ARN (arn:aws:sns:<region>:<account>:<name>)".to_owned())
            }
        })?;
        Ok(Config {
            fleet_topic_arn: fleet_topic_arn.ok_or_else(|| ConfigError::Missing {
                name: "FLEET_TOPIC_ARN".to_owned(),
            })?,
            metric_namespace: env.required("METRIC_NAMESPACE")?,
            orchestrator_stack: stack_from_env(env)?,
            progress_table: env.required("PROGRESS_TABLE")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:fleet";
    const STACK: (&str, &str) = ("ORCHESTRATOR_STACK", "orchestrator-dev");
    const TABLE: (&str, &str) = ("PROGRESS_TABLE", "orchestrator-dev-SpotProgressTable-1ABC");

    #[test]
    fn all_variables_are_read() {
        let env = EnvVars::from_pairs([
            ("FLEET_TOPIC_ARN", TOPIC),
            ("METRIC_NAMESPACE", "Orchestrator"),
            STACK,
            TABLE,
        ]);
        assert_eq!(
            Config::from_env(&env).unwrap(),
            Config {
                fleet_topic_arn: TOPIC.into(),
                metric_namespace: "Orchestrator".into(),
                orchestrator_stack: "orchestrator-dev".parse().unwrap(),
                progress_table: "orchestrator-dev-SpotProgressTable-1ABC".into(),
            }
        );
    }

    #[test]
    fn a_missing_or_invalid_value_names_the_variable() {
        let missing = Config::from_env(&EnvVars::from_pairs([("FLEET_TOPIC_ARN", TOPIC), STACK]));
        assert_eq!(
            missing.unwrap_err().to_string(),
            "environment variable METRIC_NAMESPACE is required but not set"
        );
        let empty = Config::from_env(&EnvVars::from_pairs([
            ("FLEET_TOPIC_ARN", ""),
            ("METRIC_NAMESPACE", "Orchestrator"),
            STACK,
        ]));
        assert_eq!(
            empty.unwrap_err().to_string(),
            "environment variable FLEET_TOPIC_ARN is required but not set"
        );
        let not_an_arn = Config::from_env(&EnvVars::from_pairs([
            ("FLEET_TOPIC_ARN", "fleet"),
            ("METRIC_NAMESPACE", "Orchestrator"),
            STACK,
        ]));
        let text = not_an_arn.unwrap_err().to_string();
        assert!(
            text.contains("FLEET_TOPIC_ARN") && text.contains("`fleet`"),
            "{text}"
        );
    }

    #[test]
    fn a_missing_progress_table_stops_the_function_at_init() {
        let missing = Config::from_env(&EnvVars::from_pairs([
            ("FLEET_TOPIC_ARN", TOPIC),
            ("METRIC_NAMESPACE", "Orchestrator"),
            STACK,
        ]));
        assert_eq!(
            missing.unwrap_err().to_string(),
            "environment variable PROGRESS_TABLE is required but not set"
        );
    }

    #[test]
    fn a_missing_or_invalid_stack_stops_the_function_at_init() {
        let missing = Config::from_env(&EnvVars::from_pairs([
            ("FLEET_TOPIC_ARN", TOPIC),
            ("METRIC_NAMESPACE", "Orchestrator"),
        ]));
        assert_eq!(
            missing.unwrap_err().to_string(),
            "environment variable ORCHESTRATOR_STACK is required but not set"
        );
        let invalid = Config::from_env(&EnvVars::from_pairs([
            ("FLEET_TOPIC_ARN", TOPIC),
            ("METRIC_NAMESPACE", "Orchestrator"),
            ("ORCHESTRATOR_STACK", "orchestrator dev"),
        ]));
        let text = invalid.unwrap_err().to_string();
        assert!(
            text.contains("ORCHESTRATOR_STACK")
                && text.contains("`orchestrator dev`")
                && text.contains("CloudFormation stack name"),
            "{text}"
        );
    }
}
