//! The function's configuration, read from the environment once per cold start.

use crate::gate::{Gate, GateDefinition};
use shared::env_config::{ConfigError, EnvVars};

/// The gate CodeDeploy hooks run (they carry no definition of their own), one variable per
/// property of the definition.
pub const HOOK_GATE_VARIABLES: [(&str, &str); 7] = [
    ("GATE_ALARM_NAMES", "AlarmNames"),
    ("GATE_BAKE_SECONDS", "BakeSeconds"),
    ("GATE_POLL_SECONDS", "PollSeconds"),
    ("GATE_TARGET_GROUP", "TargetGroup"),
    ("GATE_LOAD_BALANCER", "LoadBalancer"),
    ("GATE_NO_DATA", "NoData"),
    ("GATE_CHECKS", "Checks"),
];

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Every verdict is published here.
    pub alert_topic_arn: String,
    /// `None` when no `GATE_*` variable is set: hooks are then answered `Failed`.
    pub hook_gate: Option<Gate>,
}

impl Config {
    pub fn from_env(env: &EnvVars) -> Result<Self, ConfigError> {
        let alert_topic_arn = env
            .optional_with("ALERT_TOPIC_ARN", |raw| {
                if raw.starts_with("arn:") && raw.split(':').nth(2) == Some("sns") {
                    Ok(raw.to_owned())
                } else {
                    Err("must be an SNS topic ARN (arn:aws:sns:<region>:<account>:<name>)".into())
                }
            })?
            .ok_or_else(|| ConfigError::Missing {
                name: "ALERT_TOPIC_ARN".into(),
            })?;
        Ok(Config {
            alert_topic_arn,
            hook_gate: hook_gate(env)?,
        })
    }
}

fn hook_gate(env: &EnvVars) -> Result<Option<Gate>, ConfigError> {
    let mut definition = GateDefinition::default();
    let mut any = false;
    for (name, property) in HOOK_GATE_VARIABLES {
        let Some(raw) = env.raw(name) else { continue };
        any = true;
        let invalid = |reason: String| ConfigError::Invalid {
            name: name.to_owned(),
            value: raw.clone(),
            reason,
        };
        let value = if property == "Checks" {
            serde_json::from_str::<serde_json::Value>(&raw)
                .map_err(|e| invalid(format!("not JSON: {e}")))?
        } else {
            serde_json::Value::String(raw.clone())
        };
        // One property at a time, so an error names its variable.
        let one = serde_json::from_value::<GateDefinition>(serde_json::json!({ property: value }))
            .map_err(|e| invalid(e.to_string()))?;
        merge(&mut definition, one);
    }
    if !any {
        return Ok(None);
    }
    definition.validate().map(Some).map_err(|e| {
        let name = HOOK_GATE_VARIABLES
            .iter()
            .find(|(_, p)| *p == e.property)
            .map_or("GATE_ALARM_NAMES", |(n, _)| n);
        ConfigError::Invalid {
            name: name.to_owned(),
            value: env.raw(name).unwrap_or_default(),
            reason: e.reason,
        }
    })
}

fn merge(into: &mut GateDefinition, one: GateDefinition) {
    if !one.alarm_names.is_empty() {
        into.alarm_names = one.alarm_names;
    }
    into.bake_seconds = one.bake_seconds.or(into.bake_seconds);
    into.poll_seconds = one.poll_seconds.or(into.poll_seconds);
    into.target_group = one.target_group.or(into.target_group.take());
    into.load_balancer = one.load_balancer.or(into.load_balancer.take());
    into.no_data = one.no_data.or(into.no_data);
    into.checks = one.checks.or(into.checks.take());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::{CheckKind, NoData};

    const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:alerts";

    #[test]
    fn the_topic_is_required_and_the_hook_gate_optional() {
        let config = Config::from_env(&EnvVars::from_pairs([("ALERT_TOPIC_ARN", TOPIC)])).unwrap();
        assert_eq!(
            config,
            Config {
                alert_topic_arn: TOPIC.into(),
                hook_gate: None
            }
        );
        let err = Config::from_env(&EnvVars::from_pairs([("X", "1")])).unwrap_err();
        assert!(err.to_string().contains("ALERT_TOPIC_ARN"), "{err}");
        let err =
            Config::from_env(&EnvVars::from_pairs([("ALERT_TOPIC_ARN", "alerts")])).unwrap_err();
        assert!(
            err.to_string().contains("ALERT_TOPIC_ARN")
                && err.to_string().contains("SNS topic ARN"),
            "{err}"
        );
    }

    #[test]
    fn the_hook_gate_comes_from_gate_variables() {
        let env = EnvVars::from_pairs([
            ("ALERT_TOPIC_ARN", TOPIC),
            ("GATE_ALARM_NAMES", "api-5xx, api-latency"),
            ("GATE_BAKE_SECONDS", "120"),
            ("GATE_POLL_SECONDS", "15"),
            ("GATE_TARGET_GROUP", "targetgroup/api/1"),
            ("GATE_LOAD_BALANCER", "app/lb/2"),
            ("GATE_NO_DATA", "fail"),
            ("GATE_CHECKS", r#"{"ResponseTime": {"Threshold": "1.5"}}"#),
        ]);
        let gate = Config::from_env(&env).unwrap().hook_gate.unwrap();
        assert_eq!(gate.alarm_names, ["api-5xx", "api-latency"]);
        assert_eq!(
            (gate.bake.as_secs(), gate.poll.as_secs(), gate.no_data),
            (120, 15, NoData::Fail)
        );
        let latency = gate
            .checks
            .iter()
            .find(|c| c.kind == CheckKind::ResponseTime)
            .unwrap();
        assert_eq!(latency.threshold, 1.5);
    }

    #[test]
    fn a_bad_gate_variable_is_named() {
        for (name, value, text) in [
            ("GATE_BAKE_SECONDS", "soon", "expected a number"),
            ("GATE_BAKE_SECONDS", "1000", "900"),
            ("GATE_NO_DATA", "maybe", "inconclusive, pass or fail"),
            ("GATE_CHECKS", "{", "not JSON"),
            ("GATE_CHECKS", r#"{"Latency": {}}"#, "unknown field"),
            ("GATE_TARGET_GROUP", "targetgroup/api/1", "required"),
        ] {
            let env = EnvVars::from_pairs([
                ("ALERT_TOPIC_ARN", TOPIC),
                ("GATE_ALARM_NAMES", "a"),
                (name, value),
            ]);
            let err = Config::from_env(&env).unwrap_err().to_string();
            let expected = if name == "GATE_TARGET_GROUP" {
                "GATE_LOAD_BALANCER"
            } else {
                name
            };
            assert!(
                err.contains(expected) && err.contains(text),
                "{name}={value}: {err}"
            );
        }
    }
}
