//! The function's configuration, read from the environment once per cold start.

use std::time::Duration;

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
    /// `IDLE_REREAD_WINDOW_SECONDS` (default 300): an idle alarm scales in only when the newest
    /// queue sample of this window is 0; an older 0 does not confirm the queue is empty now.
    pub idle_reread_window: Duration,
    /// `QUEUE_LOOKBACK_SECONDS` (default 300): how far back the tick looks for a workflow's
    /// newest queue sample (tolerates a few missed publishes; older, a workflow has no data).
    pub queue_lookback: Duration,
    /// `MAX_CALLS_IN_FLIGHT` (default 8): AWS calls one invocation has in flight at once, so a
    /// tick over many groups runs its independent calls together without throttling itself.
    pub max_calls_in_flight: usize,
}

/// The queue windows' bounds: one metric period at least (a shorter window can hold no
/// sample), an hour at most (longer look-backs page through GetMetricData for every tick).
const WINDOW_SECONDS: std::ops::RangeInclusive<u64> = 60..=3600;
const CALLS_IN_FLIGHT: std::ops::RangeInclusive<usize> = 1..=64;
const DEFAULT_WINDOW: Duration = Duration::from_secs(300);
const DEFAULT_CALLS_IN_FLIGHT: usize = 8;

/// A whole number within `range` (`unit` names it in the error), or `default` when unset.
fn bounded<T>(
    env: &EnvVars,
    name: &str,
    range: std::ops::RangeInclusive<T>,
    unit: &str,
    default: T,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr<Err = std::num::ParseIntError> + PartialOrd + std::fmt::Display,
{
    let value = env.optional_with(name, |raw| match raw.parse::<T>() {
        Ok(value) if range.contains(&value) => Ok(value),
        Ok(_) => Err(format!(
            "must be between {} and {}{unit}",
            range.start(),
            range.end()
        )),
        Err(e) => Err(e.to_string()),
    })?;
    Ok(value.unwrap_or(default))
}

fn window(env: &EnvVars, name: &str) -> Result<Duration, ConfigError> {
    let seconds = bounded(
        env,
        name,
        WINDOW_SECONDS,
        " seconds",
        DEFAULT_WINDOW.as_secs(),
    )?;
    Ok(Duration::from_secs(seconds))
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
            idle_reread_window: window(env, "IDLE_REREAD_WINDOW_SECONDS")?,
            queue_lookback: window(env, "QUEUE_LOOKBACK_SECONDS")?,
            max_calls_in_flight: bounded(
                env,
                "MAX_CALLS_IN_FLIGHT",
                CALLS_IN_FLIGHT,
                "",
                DEFAULT_CALLS_IN_FLIGHT,
            )?,
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
                idle_reread_window: Duration::from_secs(300),
                queue_lookback: Duration::from_secs(300),
                max_calls_in_flight: 8,
            }
        );
    }

    #[test]
    fn the_windows_and_the_calls_in_flight_can_be_tuned_within_bounds() {
        let base = [
            ("QUEUE_METRIC_NAMESPACE", "Q"),
            ("NOTIFY_TOPIC_ARN", TOPIC),
            STACK,
        ];
        let with = |name: &'static str, value: &'static str| {
            Config::from_env(&EnvVars::from_pairs(
                base.into_iter().chain([(name, value)]),
            ))
        };
        let config = with("IDLE_REREAD_WINDOW_SECONDS", "120").unwrap();
        assert_eq!(config.idle_reread_window, Duration::from_secs(120));
        assert_eq!(config.queue_lookback, Duration::from_secs(300));
        let config = with("QUEUE_LOOKBACK_SECONDS", "3600").unwrap();
        assert_eq!(config.queue_lookback, Duration::from_secs(3600));
        assert_eq!(
            with("MAX_CALLS_IN_FLIGHT", "1")
                .unwrap()
                .max_calls_in_flight,
            1
        );

        for (name, value, reason) in [
            (
                "IDLE_REREAD_WINDOW_SECONDS",
                "59",
                "between 60 and 3600 seconds",
            ),
            (
                "QUEUE_LOOKBACK_SECONDS",
                "3601",
                "between 60 and 3600 seconds",
            ),
            ("QUEUE_LOOKBACK_SECONDS", "5m", "invalid digit"),
            ("MAX_CALLS_IN_FLIGHT", "0", "between 1 and 64"),
            ("MAX_CALLS_IN_FLIGHT", "65", "between 1 and 64"),
        ] {
            let err = with(name, value).unwrap_err().to_string();
            assert!(
                err.contains(name) && err.contains(reason),
                "{name}={value}: {err}"
            );
        }
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
