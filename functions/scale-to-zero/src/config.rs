//! The function's configuration, read from the environment once per cold start.

use shared::env_config::{ConfigError, EnvVars};
use shared::fleet_tags::{StackName, stack_from_env};

/// What scale-to-zero needs to know about the platform it serves.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Namespace of the backend's queue metric; `BacklogPerInstance` is published here too,
    /// where the groups' target-tracking policies read it.
    pub queue_metric_namespace: String,
    pub queue_metric_name: String,
    /// The dimension whose value is the workflow slug, on both metrics and in the idle alarm.
    pub workflow_dimension: String,
    /// Queued jobs one instance is expected to take; sizes a group woken from zero.
    pub target_backlog_per_instance: f64,
    pub notify_topic_arn: String,
    /// `ORCHESTRATOR_STACK`: only groups tagged `orchestrator:stack` with this name are acted on.
    pub orchestrator_stack: StackName,
}

impl Config {
    pub fn from_env(env: &EnvVars) -> Result<Self, ConfigError> {
        let queue_metric_namespace = env
            .optional_with("QUEUE_METRIC_NAMESPACE", |raw| {
                // PutMetricData rejects these; better to stop at init than on every tick.
                if raw.starts_with("AWS/") {
                    Err("namespaces starting with `AWS/` are reserved for AWS services".into())
                } else {
                    Ok(raw.to_owned())
                }
            })?
            .ok_or_else(|| ConfigError::Missing {
                name: "QUEUE_METRIC_NAMESPACE".into(),
            })?;
        let target_backlog_per_instance = env
            .optional_with("TARGET_BACKLOG_PER_INSTANCE", |raw| {
                match raw.parse::<f64>() {
                    Ok(value) if value.is_finite() && value > 0.0 => Ok(value),
                    Ok(_) => Err("must be a number greater than 0".into()),
                    Err(e) => Err(e.to_string()),
                }
            })?
            .unwrap_or(1.0);
        Ok(Config {
            queue_metric_namespace,
            queue_metric_name: env.or_default("QUEUE_METRIC_NAME", "QueueDepth".to_owned())?,
            workflow_dimension: env.or_default("WORKFLOW_DIMENSION", "Workflow".to_owned())?,
            target_backlog_per_instance,
            notify_topic_arn: env.required("NOTIFY_TOPIC_ARN")?,
            orchestrator_stack: stack_from_env(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:idle";
    const STACK: (&str, &str) = ("ORCHESTRATOR_STACK", "orchestrator-dev");

    #[test]
    fn defaults_apply_when_only_the_required_values_are_set() {
        let env = EnvVars::from_pairs([
            ("QUEUE_METRIC_NAMESPACE", "Orchestrator/Queue"),
            ("NOTIFY_TOPIC_ARN", TOPIC),
            ("WORKFLOW_DIMENSION", ""),
            STACK,
        ]);
        assert_eq!(
            Config::from_env(&env).unwrap(),
            Config {
                queue_metric_namespace: "Orchestrator/Queue".into(),
                queue_metric_name: "QueueDepth".into(),
                workflow_dimension: "Workflow".into(),
                target_backlog_per_instance: 1.0,
                notify_topic_arn: TOPIC.into(),
                orchestrator_stack: "orchestrator-dev".parse().unwrap(),
            }
        );
    }

    #[test]
    fn missing_and_invalid_values_name_the_variable() {
        let err = Config::from_env(&EnvVars::from_pairs([("NOTIFY_TOPIC_ARN", TOPIC), STACK]))
            .unwrap_err();
        assert!(err.to_string().contains("QUEUE_METRIC_NAMESPACE"), "{err}");

        for (value, reason) in [
            ("0", "greater than 0"),
            ("-2", "greater than 0"),
            ("NaN", "greater than 0"),
            ("two", "invalid float"),
        ] {
            let env = EnvVars::from_pairs([
                ("QUEUE_METRIC_NAMESPACE", "Q"),
                ("NOTIFY_TOPIC_ARN", TOPIC),
                ("TARGET_BACKLOG_PER_INSTANCE", value),
                STACK,
            ]);
            let err = Config::from_env(&env).unwrap_err().to_string();
            assert!(err.contains("TARGET_BACKLOG_PER_INSTANCE"), "{err}");
            assert!(err.contains(reason), "{value}: {err}");
        }

        let env = EnvVars::from_pairs([
            ("QUEUE_METRIC_NAMESPACE", "AWS/SQS"),
            ("NOTIFY_TOPIC_ARN", TOPIC),
            STACK,
        ]);
        let err = Config::from_env(&env).unwrap_err().to_string();
        assert!(
            err.contains("QUEUE_METRIC_NAMESPACE") && err.contains("reserved"),
            "{err}"
        );

        let env = EnvVars::from_pairs([("QUEUE_METRIC_NAMESPACE", "Q"), STACK]);
        let err = Config::from_env(&env).unwrap_err().to_string();
        assert!(err.contains("NOTIFY_TOPIC_ARN"), "{err}");
    }

    #[test]
    fn a_missing_or_invalid_stack_stops_the_function_at_init() {
        let env =
            EnvVars::from_pairs([("QUEUE_METRIC_NAMESPACE", "Q"), ("NOTIFY_TOPIC_ARN", TOPIC)]);
        assert_eq!(
            Config::from_env(&env).unwrap_err().to_string(),
            "environment variable ORCHESTRATOR_STACK is required but not set"
        );
        for value in ["dev stack", "1dev", "orchestrator_dev"] {
            let env = EnvVars::from_pairs([
                ("QUEUE_METRIC_NAMESPACE", "Q"),
                ("NOTIFY_TOPIC_ARN", TOPIC),
                ("ORCHESTRATOR_STACK", value),
            ]);
            let err = Config::from_env(&env).unwrap_err().to_string();
            assert!(
                err.contains("ORCHESTRATOR_STACK") && err.contains("CloudFormation stack name"),
                "{value}: {err}"
            );
        }
    }

    #[test]
    fn fractional_targets_are_accepted() {
        let env = EnvVars::from_pairs([
            ("QUEUE_METRIC_NAMESPACE", "Q"),
            ("NOTIFY_TOPIC_ARN", TOPIC),
            ("TARGET_BACKLOG_PER_INSTANCE", "2.5"),
            STACK,
        ]);
        assert_eq!(
            Config::from_env(&env).unwrap().target_backlog_per_instance,
            2.5
        );
    }
}
