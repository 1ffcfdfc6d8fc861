//! The gate definition: one shape, read from `Custom::DeployGate` properties, a CI payload or
//! the function's environment (CodeDeploy hooks). Values may arrive as strings (`"300"`).

use serde::{Deserialize, Deserializer};
use serde_json::Value;
use shared::custom_resource::lenient;
use std::time::Duration;

pub const DEFAULT_BAKE_SECONDS: u64 = 300;
pub const DEFAULT_POLL_SECONDS: u64 = 30;
/// ALB metrics are per minute; a window is whole minutes, at most a day.
const MAX_WINDOW_SECONDS: u32 = 86_400;

/// What "no data" means at the end of the bake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NoData {
    #[default]
    Inconclusive,
    Pass,
    Fail,
}

impl std::str::FromStr for NoData {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, String> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "inconclusive" => Ok(NoData::Inconclusive),
            "pass" => Ok(NoData::Pass),
            "fail" => Ok(NoData::Fail),
            _ => Err(format!(
                "expected inconclusive, pass or fail, got `{}`",
                raw.trim()
            )),
        }
    }
}

/// The built-in metric checks on a target group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum CheckKind {
    /// `HTTPCode_Target_5XX_Count / RequestCount`, percent.
    #[serde(rename = "error-rate")]
    ErrorRate,
    /// `TargetResponseTime` average, seconds.
    #[serde(rename = "response-time")]
    ResponseTime,
    /// `UnHealthyHostCount / (HealthyHostCount + UnHealthyHostCount)`, percent.
    #[serde(rename = "unhealthy-hosts")]
    UnhealthyHosts,
}

impl CheckKind {
    pub const ALL: [CheckKind; 3] = [
        CheckKind::ErrorRate,
        CheckKind::ResponseTime,
        CheckKind::UnhealthyHosts,
    ];

    /// The platform's rollback triggers: threshold and window.
    pub fn default_threshold(self) -> f64 {
        match self {
            CheckKind::ErrorRate => 5.0,
            CheckKind::ResponseTime => 2.0,
            CheckKind::UnhealthyHosts => 50.0,
        }
    }

    pub fn default_window_seconds(self) -> u32 {
        match self {
            CheckKind::ErrorRate => 300,
            CheckKind::ResponseTime => 600,
            CheckKind::UnhealthyHosts => 180,
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            CheckKind::ResponseTime => "seconds",
            _ => "percent",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CheckKind::ErrorRate => "error-rate",
            CheckKind::ResponseTime => "response-time",
            CheckKind::UnhealthyHosts => "unhealthy-hosts",
        }
    }

    fn property(self) -> &'static str {
        match self {
            CheckKind::ErrorRate => "ErrorRate",
            CheckKind::ResponseTime => "ResponseTime",
            CheckKind::UnhealthyHosts => "UnhealthyHosts",
        }
    }
}

/// One enabled metric check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricCheck {
    pub kind: CheckKind,
    /// Breached when the value is above it.
    pub threshold: f64,
    pub window_seconds: u32,
}

/// The ALB dimensions the metric checks read (`AWS/ApplicationELB`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetGroup {
    /// `targetgroup/<name>/<id>`
    pub target_group: String,
    /// `app/<name>/<id>`
    pub load_balancer: String,
}

/// A validated gate.
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    pub release: Option<String>,
    pub alarm_names: Vec<String>,
    pub bake: Duration,
    pub poll: Duration,
    pub target: Option<TargetGroup>,
    pub checks: Vec<MetricCheck>,
    pub no_data: NoData,
}

/// A definition that cannot be used; `property` names what to fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid gate definition: {property}: {reason}")]
pub struct InvalidGate {
    pub property: &'static str,
    pub reason: String,
}

fn invalid(property: &'static str, reason: impl Into<String>) -> InvalidGate {
    InvalidGate {
        property,
        reason: reason.into(),
    }
}

/// The definition as written (properties, payload), before validation.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct GateDefinition {
    #[serde(default, deserialize_with = "optional_text")]
    pub release: Option<String>,
    #[serde(default, deserialize_with = "name_list")]
    pub alarm_names: Vec<String>,
    #[serde(default, deserialize_with = "lenient::optional_number")]
    pub bake_seconds: Option<u64>,
    #[serde(default, deserialize_with = "lenient::optional_number")]
    pub poll_seconds: Option<u64>,
    #[serde(default, deserialize_with = "optional_text")]
    pub target_group: Option<String>,
    #[serde(default, deserialize_with = "optional_text")]
    pub load_balancer: Option<String>,
    #[serde(default, deserialize_with = "optional_no_data")]
    pub no_data: Option<NoData>,
    #[serde(default)]
    pub checks: Option<CheckOverrides>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CheckOverrides {
    #[serde(default)]
    pub error_rate: Option<CheckOverride>,
    #[serde(default)]
    pub response_time: Option<CheckOverride>,
    #[serde(default)]
    pub unhealthy_hosts: Option<CheckOverride>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CheckOverride {
    #[serde(default, deserialize_with = "lenient::optional_number")]
    pub threshold: Option<f64>,
    #[serde(default, deserialize_with = "lenient::optional_number")]
    pub window_seconds: Option<u32>,
    #[serde(default, deserialize_with = "lenient::optional_bool")]
    pub enabled: Option<bool>,
}

impl CheckOverrides {
    fn get(&self, kind: CheckKind) -> Option<CheckOverride> {
        match kind {
            CheckKind::ErrorRate => self.error_rate,
            CheckKind::ResponseTime => self.response_time,
            CheckKind::UnhealthyHosts => self.unhealthy_hosts,
        }
    }
}

impl GateDefinition {
    /// Parses a JSON object (custom-resource properties or a CI payload).
    pub fn from_json(value: Value) -> Result<Gate, InvalidGate> {
        serde_json::from_value::<GateDefinition>(value)
            .map_err(|e| invalid("definition", e.to_string()))?
            .validate()
    }

    /// Checks the definition and fills in the defaults; the first problem found is the error.
    pub fn validate(self) -> Result<Gate, InvalidGate> {
        let alarm_names = alarm_names(self.alarm_names)?;
        let bake_seconds = self.bake_seconds.unwrap_or(DEFAULT_BAKE_SECONDS);
        if bake_seconds > 900 {
            return Err(invalid(
                "BakeSeconds",
                format!("{bake_seconds} is longer than a Lambda invocation can run (900 s)"),
            ));
        }
        let poll_seconds = self.poll_seconds.unwrap_or(DEFAULT_POLL_SECONDS);
        if !(1..=900).contains(&poll_seconds) {
            return Err(invalid(
                "PollSeconds",
                format!("must be 1 to 900, got {poll_seconds}"),
            ));
        }
        let target = target(self.target_group, self.load_balancer)?;
        let checks = metric_checks(target.is_some(), &self.checks.unwrap_or_default())?;
        if alarm_names.is_empty() && checks.is_empty() {
            return Err(invalid(
                "AlarmNames",
                "the gate checks nothing: name alarms, or a TargetGroup and LoadBalancer with at least one check enabled",
            ));
        }
        Ok(Gate {
            release: self.release,
            alarm_names,
            bake: Duration::from_secs(bake_seconds),
            poll: Duration::from_secs(poll_seconds),
            target,
            checks,
            no_data: self.no_data.unwrap_or_default(),
        })
    }
}

/// `AlarmNames` in their first-listed order, duplicates dropped.
fn alarm_names(names: Vec<String>) -> Result<Vec<String>, InvalidGate> {
    let mut alarm_names: Vec<String> = Vec::new();
    for name in names {
        if name.len() > 255 {
            return Err(invalid(
                "AlarmNames",
                format!("`{name}` is longer than 255 characters"),
            ));
        }
        if !alarm_names.contains(&name) {
            alarm_names.push(name);
        }
    }
    Ok(alarm_names)
}

/// `TargetGroup` and `LoadBalancer`: both or neither, each as a dimension value or an ARN.
fn target(
    target_group: Option<String>,
    load_balancer: Option<String>,
) -> Result<Option<TargetGroup>, InvalidGate> {
    match (target_group, load_balancer) {
        (Some(tg), Some(lb)) => Ok(Some(TargetGroup {
            target_group: dimension_value(&tg, "targetgroup/").ok_or_else(|| {
                invalid(
                    "TargetGroup",
                    format!("`{tg}` is neither targetgroup/<name>/<id> nor a target group ARN"),
                )
            })?,
            load_balancer: dimension_value(&lb, "app/").ok_or_else(|| {
                invalid(
                    "LoadBalancer",
                    format!(
                        "`{lb}` is neither app/<name>/<id> nor an Application Load Balancer ARN"
                    ),
                )
            })?,
        })),
        (Some(_), None) => Err(invalid(
            "LoadBalancer",
            "required with TargetGroup: ALB publishes target-group metrics under both dimensions",
        )),
        (None, Some(_)) => Err(invalid(
            "TargetGroup",
            "required with LoadBalancer: the checks read target-group metrics",
        )),
        (None, None) => Ok(None),
    }
}

/// The enabled checks, defaults filled in; without a target group there are none, and an
/// override is an error.
fn metric_checks(
    has_target: bool,
    overrides: &CheckOverrides,
) -> Result<Vec<MetricCheck>, InvalidGate> {
    let mut checks = Vec::new();
    for kind in CheckKind::ALL {
        let Some(o) = overrides.get(kind) else {
            if has_target {
                checks.push(metric_check(kind, CheckOverride::default())?);
            }
            continue;
        };
        if !has_target {
            return Err(invalid(
                "Checks",
                format!("{} needs TargetGroup and LoadBalancer", kind.property()),
            ));
        }
        if o.enabled != Some(false) {
            checks.push(metric_check(kind, o)?);
        }
    }
    Ok(checks)
}

/// One check with its override applied: a threshold ≥ 0 and a window of whole minutes.
fn metric_check(kind: CheckKind, o: CheckOverride) -> Result<MetricCheck, InvalidGate> {
    let threshold = o.threshold.unwrap_or(kind.default_threshold());
    if !(threshold.is_finite() && threshold >= 0.0) {
        return Err(invalid(
            "Checks",
            format!(
                "{}.Threshold must be a number ≥ 0, got {threshold}",
                kind.property()
            ),
        ));
    }
    let window_seconds = o.window_seconds.unwrap_or(kind.default_window_seconds());
    if window_seconds == 0
        || !window_seconds.is_multiple_of(60)
        || window_seconds > MAX_WINDOW_SECONDS
    {
        return Err(invalid(
            "Checks",
            format!(
                "{}.WindowSeconds must be whole minutes (60, 120, …) up to {MAX_WINDOW_SECONDS}, got {window_seconds}",
                kind.property()
            ),
        ));
    }
    Ok(MetricCheck {
        kind,
        threshold,
        window_seconds,
    })
}

/// `targetgroup/n/id` as is, or the part of an ARN from `prefix` on.
fn dimension_value(raw: &str, prefix: &str) -> Option<String> {
    let raw = raw.trim();
    let value = if raw.starts_with("arn:") {
        // arn:aws:elasticloadbalancing:<region>:<account>:loadbalancer/app/<name>/<id>
        let resource = raw.splitn(6, ':').nth(5)?;
        resource.strip_prefix("loadbalancer/").unwrap_or(resource)
    } else {
        raw
    };
    (value.starts_with(prefix) && value.split('/').count() == 3 && !value.ends_with('/'))
        .then(|| value.to_owned())
}

fn optional_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => Ok(Some(s.trim().to_owned())),
        Value::Number(n) => Ok(Some(n.to_string())),
        other => Err(serde::de::Error::custom(format!(
            "expected a string, got {other}"
        ))),
    }
}

/// A list of names, or one comma-separated string (a `CommaDelimitedList` parameter, an env var).
fn name_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let split = |s: &str| -> Vec<String> {
        s.split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect()
    };
    match Value::deserialize(d)? {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(split(&s)),
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::String(s) => Ok(split(&s)),
                other => Err(serde::de::Error::custom(format!(
                    "expected alarm names as strings, got {other}"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|lists| lists.concat()),
        other => Err(serde::de::Error::custom(format!(
            "expected a list of alarm names, got {other}"
        ))),
    }
}

fn optional_no_data<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NoData>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => s.parse().map(Some).map_err(serde::de::Error::custom),
        other => Err(serde::de::Error::custom(format!(
            "expected inconclusive, pass or fail, got {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TG: &str = "targetgroup/api/73e2d6bc24d8a067";
    const LB: &str = "app/orchestrator-dev/50dc6c495c0c9188";

    #[test]
    fn string_typed_properties_and_defaults() {
        let gate = GateDefinition::from_json(json!({
            "Release": "r1", "AlarmNames": ["a", "b", "a"], "BakeSeconds": "60",
            "PollSeconds": "5", "TargetGroup": TG, "LoadBalancer": LB, "NoData": "Pass",
            "Checks": {"ErrorRate": {"Threshold": "10", "WindowSeconds": "120"},
                       "ResponseTime": {"Enabled": "false"}}
        }))
        .unwrap();
        assert_eq!(gate.alarm_names, ["a", "b"]);
        assert_eq!((gate.bake.as_secs(), gate.poll.as_secs()), (60, 5));
        assert_eq!(gate.no_data, NoData::Pass);
        assert_eq!(
            gate.checks,
            [
                MetricCheck {
                    kind: CheckKind::ErrorRate,
                    threshold: 10.0,
                    window_seconds: 120
                },
                MetricCheck {
                    kind: CheckKind::UnhealthyHosts,
                    threshold: 50.0,
                    window_seconds: 180
                },
            ]
        );
        let gate = GateDefinition::from_json(json!({"AlarmNames": "x, y"})).unwrap();
        assert_eq!(gate.alarm_names, ["x", "y"]);
        assert_eq!((gate.bake.as_secs(), gate.poll.as_secs()), (300, 30));
        assert_eq!(gate.no_data, NoData::Inconclusive);
        assert!(gate.checks.is_empty() && gate.target.is_none());
    }

    #[test]
    fn the_three_triggers_are_the_defaults_and_arns_are_accepted() {
        let gate = GateDefinition::from_json(json!({
            "TargetGroup": format!("arn:aws:elasticloadbalancing:us-east-1:123456789012:{TG}"),
            "LoadBalancer": format!("arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/{LB}"),
        }))
        .unwrap();
        let target = gate.target.unwrap();
        assert_eq!(
            (target.target_group.as_str(), target.load_balancer.as_str()),
            (TG, LB)
        );
        let defaults: Vec<_> = gate
            .checks
            .iter()
            .map(|c| (c.kind, c.threshold, c.window_seconds))
            .collect();
        assert_eq!(
            defaults,
            [
                (CheckKind::ErrorRate, 5.0, 300),
                (CheckKind::ResponseTime, 2.0, 600),
                (CheckKind::UnhealthyHosts, 50.0, 180)
            ]
        );
    }

    #[test]
    fn bad_definitions_name_the_property() {
        for (definition, property, text) in [
            (json!({}), "AlarmNames", "checks nothing"),
            (
                json!({"AlarmNames": ["a"], "BakeSeconds": "soon"}),
                "definition",
                "expected a number",
            ),
            (
                json!({"AlarmNames": ["a"], "BakeSeconds": "901"}),
                "BakeSeconds",
                "900",
            ),
            (
                json!({"AlarmNames": ["a"], "PollSeconds": "0"}),
                "PollSeconds",
                "1 to 900",
            ),
            (
                json!({"AlarmNames": ["a"], "NoData": "maybe"}),
                "definition",
                "inconclusive, pass or fail",
            ),
            (
                json!({"AlarmNames": ["a"], "Bake": "1"}),
                "definition",
                "unknown field `Bake`",
            ),
            (json!({"TargetGroup": TG}), "LoadBalancer", "required"),
            (
                json!({"TargetGroup": "tg-1", "LoadBalancer": LB}),
                "TargetGroup",
                "neither",
            ),
            (
                json!({"AlarmNames": ["a"], "Checks": {"ErrorRate": {"Threshold": "1"}}}),
                "Checks",
                "needs TargetGroup",
            ),
            (
                json!({"TargetGroup": TG, "LoadBalancer": LB, "Checks": {"ErrorRate": {"WindowSeconds": "90"}}}),
                "Checks",
                "whole minutes",
            ),
            (
                json!({"TargetGroup": TG, "LoadBalancer": LB, "Checks": {"ErrorRate": {"Threshold": "-1"}}}),
                "Checks",
                "≥ 0",
            ),
            (
                json!({"TargetGroup": TG, "LoadBalancer": LB, "Checks": {"ErrorRate": {"Enabled": "false"}, "ResponseTime": {"Enabled": false}, "UnhealthyHosts": {"Enabled": "false"}}}),
                "AlarmNames",
                "checks nothing",
            ),
        ] {
            let err = GateDefinition::from_json(definition.clone()).unwrap_err();
            assert_eq!(err.property, property, "{definition}: {err}");
            assert!(err.to_string().contains(text), "{definition}: {err}");
        }
    }
}

#[cfg(test)]
mod samples {
    use super::*;
    use shared::sample_events::sample;

    #[test]
    fn the_sample_definitions_are_valid_gates() {
        let mut properties = sample("deploy-gate", "cfn-create.json")["ResourceProperties"].clone();
        // The responder strips CloudFormation's own property before the handler parses them.
        properties.as_object_mut().unwrap().remove("ServiceToken");
        let from_cfn = GateDefinition::from_json(properties).unwrap();
        let from_ci = GateDefinition::from_json(sample("deploy-gate", "ci-direct.json")).unwrap();
        assert_eq!(from_cfn, from_ci, "one definition, whichever entry point");
        assert_eq!(from_ci.checks.len(), 3);
        let tuned =
            GateDefinition::from_json(sample("deploy-gate", "ci-direct-checks.json")).unwrap();
        assert_eq!((tuned.checks.len(), tuned.no_data), (2, NoData::Pass));
        assert_eq!(tuned.checks[0].threshold, 2.0);
    }
}
