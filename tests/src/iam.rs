//! An IAM identity-policy evaluator, for what the stand-ins never check: moto accepts every
//! call whatever the caller's role says. The template tests and the local scenario ask it
//! whether a role of `template.yaml` really allows a call, with the resource's tags as
//! condition context, before (or instead of) making the call.
//!
//! It is strict where it cannot be sure: an operator it does not implement, a value that is
//! still an unresolved intrinsic function, or a statement without `Effect` is an error, never
//! a silent allow. The rules are AWS's for one identity policy set: an explicit `Deny` wins,
//! then any `Allow`, otherwise the call is implicitly denied. Conditions: every operator of a
//! statement must hold, every key of an operator must hold, and one of a key's values is
//! enough; a key missing from the request fails a positive operator, passes a negated one,
//! and passes any `…IfExists` operator.

use std::collections::BTreeMap;

use serde_json::Value;

/// One call as IAM sees it: the action, the resource ARN and the condition keys it carries
/// (e.g. `autoscaling:ResourceTag/orchestrator:stack`, `sns:Protocol`).
#[derive(Debug, Clone)]
pub struct Request {
    pub action: String,
    pub resource: String,
    pub context: BTreeMap<String, String>,
}

impl Request {
    pub fn new(action: &str, resource: &str) -> Request {
        Request {
            action: action.to_owned(),
            resource: resource.to_owned(),
            context: BTreeMap::new(),
        }
    }

    /// Adds a condition key, e.g. `.with("sns:Protocol", "sqs")`.
    pub fn with(mut self, key: &str, value: &str) -> Request {
        self.context.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Adds a resource's tags as `<service>:ResourceTag/<key>` (and `aws:ResourceTag/<key>`).
    pub fn with_resource_tags<'a>(
        mut self,
        service: &str,
        tags: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Request {
        for (key, value) in tags {
            for prefix in [service, "aws"] {
                self.context
                    .insert(format!("{prefix}:ResourceTag/{key}"), value.to_owned());
            }
        }
        self
    }
}

/// What IAM decides, with the statement that decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allowed { statement: String },
    ExplicitlyDenied { statement: String },
    ImplicitlyDenied,
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed { .. })
    }
}

/// Evaluates `request` against policy statements whose values are resolved (plain strings).
pub fn evaluate(statements: &[Value], request: &Request) -> Result<Decision, String> {
    let mut allowed = None;
    for (index, statement) in statements.iter().enumerate() {
        let name = statement["Sid"]
            .as_str()
            .map_or_else(|| format!("statement {index}"), str::to_owned);
        if !applies(statement, request).map_err(|e| format!("{name}: {e}"))? {
            continue;
        }
        match statement["Effect"].as_str() {
            Some("Deny") => return Ok(Decision::ExplicitlyDenied { statement: name }),
            Some("Allow") => {
                allowed.get_or_insert(name);
            }
            other => return Err(format!("{name}: Effect {other:?} is not Allow or Deny")),
        }
    }
    Ok(
        allowed.map_or(Decision::ImplicitlyDenied, |statement| Decision::Allowed {
            statement,
        }),
    )
}

/// The statements of every inline policy of a role resource (`Properties.Policies`).
pub fn role_statements(role: &Value) -> Vec<Value> {
    role["Properties"]["Policies"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|policy| one_or_many(&policy["PolicyDocument"]["Statement"]))
        .cloned()
        .collect()
}

fn applies(statement: &Value, request: &Request) -> Result<bool, String> {
    let action = match (statement.get("Action"), statement.get("NotAction")) {
        (Some(patterns), None) => any_matches(patterns, &request.action, true)?,
        (None, Some(patterns)) => !any_matches(patterns, &request.action, true)?,
        _ => return Err("needs exactly one of Action and NotAction".into()),
    };
    let resource = match (statement.get("Resource"), statement.get("NotResource")) {
        (Some(patterns), None) => any_matches(patterns, &request.resource, false)?,
        (None, Some(patterns)) => !any_matches(patterns, &request.resource, false)?,
        _ => return Err("needs exactly one of Resource and NotResource".into()),
    };
    if !(action && resource) {
        return Ok(false);
    }
    match statement.get("Condition") {
        None => Ok(true),
        Some(Value::Object(operators)) => {
            for (operator, keys) in operators {
                if !condition_holds(operator, keys, &request.context)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Some(other) => Err(format!("Condition is not a map: {other}")),
    }
}

fn one_or_many(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

fn strings(value: &Value) -> Result<Vec<String>, String> {
    one_or_many(value)
        .into_iter()
        .map(|v| match v {
            Value::String(s) => Ok(s.clone()),
            Value::Bool(b) => Ok(b.to_string()),
            Value::Number(n) => Ok(n.to_string()),
            other => Err(format!("unresolved value {other}")),
        })
        .collect()
}

fn any_matches(patterns: &Value, value: &str, ignore_case: bool) -> Result<bool, String> {
    Ok(strings(patterns)?.iter().any(|pattern| {
        if ignore_case {
            glob(&pattern.to_ascii_lowercase(), &value.to_ascii_lowercase())
        } else {
            glob(pattern, value)
        }
    }))
}

/// IAM's wildcards: `*` any run of characters (colons included), `?` one character.
fn glob(pattern: &str, value: &str) -> bool {
    let (p, v): (Vec<char>, Vec<char>) = (pattern.chars().collect(), value.chars().collect());
    let (mut pi, mut vi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == v[vi]) {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, vi));
            pi += 1;
        } else if let Some((star_p, star_v)) = star {
            pi = star_p + 1;
            vi = star_v + 1;
            star = Some((star_p, star_v + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn condition_holds(
    operator: &str,
    keys: &Value,
    context: &BTreeMap<String, String>,
) -> Result<bool, String> {
    if operator.starts_with("ForAllValues:") || operator.starts_with("ForAnyValue:") {
        return Err(format!("{operator}: multi-valued keys are not implemented"));
    }
    let (base, if_exists) = match operator.strip_suffix("IfExists") {
        Some(base) => (base, true),
        None => (operator, false),
    };
    let (matches, negated): (fn(&str, &str) -> bool, bool) = match base {
        "StringEquals" | "ArnEquals" | "Bool" => (|p, v| p == v, false),
        "StringNotEquals" | "ArnNotEquals" => (|p, v| p == v, true),
        "StringEqualsIgnoreCase" => (|p, v| p.eq_ignore_ascii_case(v), false),
        "StringNotEqualsIgnoreCase" => (|p, v| p.eq_ignore_ascii_case(v), true),
        "StringLike" | "ArnLike" => (glob, false),
        "StringNotLike" | "ArnNotLike" => (glob, true),
        other => return Err(format!("condition operator {other} is not implemented")),
    };
    let Value::Object(keys) = keys else {
        return Err(format!("{operator}: not a map of keys"));
    };
    for (key, expected) in keys {
        // Condition keys are case-insensitive; tag keys in them keep their case in AWS, but
        // the suite's tags are all lower case.
        let actual = context
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str());
        let holds = match actual {
            None => if_exists || negated,
            Some(actual) => {
                let any = strings(expected)?.iter().any(|p| matches(p, actual));
                any != negated
            }
        };
        if !holds {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const GROUPS: &str =
        "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:*:autoScalingGroupName/*";
    const GROUP: &str = "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:0a1b:autoScalingGroupName/a-img2vid";

    fn scoped() -> Vec<Value> {
        vec![json!({
            "Sid": "Scoped", "Effect": "Allow",
            "Action": ["autoscaling:SetInstanceProtection"], "Resource": GROUPS,
            "Condition": {"StringEquals": {
                "autoscaling:ResourceTag/orchestrator:managed": "true",
                "autoscaling:ResourceTag/orchestrator:stack": "a"}}
        })]
    }

    #[test]
    fn every_condition_key_must_hold_and_a_missing_key_denies() {
        let call = |tags: &[(&str, &str)]| {
            evaluate(
                &scoped(),
                &Request::new("autoscaling:SetInstanceProtection", GROUP)
                    .with_resource_tags("autoscaling", tags.iter().copied()),
            )
            .unwrap()
        };
        assert!(
            call(&[
                ("orchestrator:managed", "true"),
                ("orchestrator:stack", "a")
            ])
            .is_allowed()
        );
        assert_eq!(
            call(&[
                ("orchestrator:managed", "true"),
                ("orchestrator:stack", "b")
            ]),
            Decision::ImplicitlyDenied
        );
        assert_eq!(
            call(&[("orchestrator:managed", "true")]),
            Decision::ImplicitlyDenied
        );
    }

    #[test]
    fn actions_ignore_case_resources_do_not_and_deny_wins() {
        let mut statements = scoped();
        let tags = [
            ("orchestrator:managed", "true"),
            ("orchestrator:stack", "a"),
        ];
        let request = Request::new("AutoScaling:setinstanceprotection", GROUP)
            .with_resource_tags("autoscaling", tags);
        assert!(evaluate(&statements, &request).unwrap().is_allowed());
        let other_case = Request::new(
            "autoscaling:SetInstanceProtection",
            &GROUP.replace("autoScalingGroupName", "autoscalinggroupname"),
        )
        .with_resource_tags("autoscaling", tags);
        assert!(!evaluate(&statements, &other_case).unwrap().is_allowed());
        statements.push(
            json!({"Sid": "No", "Effect": "Deny", "Action": "autoscaling:*", "Resource": "*"}),
        );
        assert_eq!(
            evaluate(&statements, &request).unwrap(),
            Decision::ExplicitlyDenied {
                statement: "No".into()
            }
        );
    }

    #[test]
    fn like_operators_use_wildcards_and_negations_pass_on_missing_keys() {
        let statements = vec![json!({
            "Effect": "Allow", "Action": "sns:Subscribe", "Resource": "arn:aws:sns:*:*:t",
            "Condition": {"StringEquals": {"sns:Protocol": "sqs"},
                          "StringLike": {"sns:Endpoint": "arn:aws:sqs:*:*:a-worker-*"},
                          "StringNotEquals": {"aws:PrincipalTag/blocked": "yes"}}
        })];
        let subscribe = |endpoint: &str| {
            evaluate(
                &statements,
                &Request::new("sns:Subscribe", "arn:aws:sns:us-east-1:1:t")
                    .with("sns:Protocol", "sqs")
                    .with("sns:Endpoint", endpoint),
            )
            .unwrap()
            .is_allowed()
        };
        assert!(subscribe("arn:aws:sqs:us-east-1:1:a-worker-i-0abc"));
        assert!(!subscribe("arn:aws:sqs:us-east-1:1:b-worker-i-0abc"));
    }

    #[test]
    fn what_it_cannot_evaluate_is_an_error_not_an_allow() {
        let unresolved = vec![json!({"Effect": "Allow", "Action": "s3:GetObject",
            "Resource": {"Fn::Sub": "arn:${AWS::Partition}:s3:::b/*"}})];
        let request = Request::new("s3:GetObject", "arn:aws:s3:::b/k");
        assert!(
            evaluate(&unresolved, &request)
                .unwrap_err()
                .contains("unresolved")
        );
        let unknown = vec![
            json!({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*",
            "Condition": {"DateGreaterThan": {"aws:CurrentTime": "2020-01-01"}}}),
        ];
        assert!(
            evaluate(&unknown, &request)
                .unwrap_err()
                .contains("not implemented")
        );
    }

    #[test]
    fn not_action_and_not_resource_match_everything_else() {
        let statements = vec![json!({"Effect": "Allow", "NotAction": "sns:Subscribe",
            "NotResource": "arn:aws:sns:*:*:private"})];
        let call = |action: &str, topic: &str| {
            evaluate(
                &statements,
                &Request::new(action, &format!("arn:aws:sns:us-east-1:1:{topic}")),
            )
            .unwrap()
        };
        assert!(call("sns:Publish", "t").is_allowed());
        assert_eq!(call("sns:Subscribe", "t"), Decision::ImplicitlyDenied);
        assert_eq!(call("sns:Publish", "private"), Decision::ImplicitlyDenied);
    }

    #[test]
    fn one_listed_value_is_enough_and_if_exists_passes_on_a_missing_key() {
        let statements = vec![
            json!({"Effect": "Allow", "Action": "cloudwatch:PutMetricData",
            "Resource": "*",
            "Condition": {"StringEquals": {"cloudwatch:namespace": ["A", "B"]},
                          "StringEqualsIfExists": {"aws:RequestTag/team": "x"}}}),
        ];
        let put = |namespace: &str| {
            Request::new("cloudwatch:PutMetricData", "*").with("cloudwatch:namespace", namespace)
        };
        assert!(evaluate(&statements, &put("B")).unwrap().is_allowed());
        assert!(!evaluate(&statements, &put("C")).unwrap().is_allowed());
        assert!(
            !evaluate(&statements, &put("A").with("aws:RequestTag/team", "y"))
                .unwrap()
                .is_allowed()
        );
    }

    #[test]
    fn a_call_on_every_resource_needs_a_grant_on_every_resource() {
        // Actions without resource-level permission are requested on "*": a grant on some
        // ARNs does not cover them.
        let on = |resource: &str| {
            vec![
                json!({"Effect": "Allow", "Action": "cloudwatch:DescribeAlarms", "Resource": resource}),
            ]
        };
        let describe = Request::new("cloudwatch:DescribeAlarms", "*");
        assert!(evaluate(&on("*"), &describe).unwrap().is_allowed());
        assert_eq!(
            evaluate(&on("arn:aws:cloudwatch:*:*:alarm:orch-*"), &describe).unwrap(),
            Decision::ImplicitlyDenied
        );
    }

    #[test]
    fn globs_match_like_iam() {
        assert!(glob("a*c", "abbbc"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "abbc"));
        assert!(glob("*", ""));
        assert!(glob("arn:*:x", "arn:aws:y:x"));
        assert!(!glob("abc", "abcd"));
    }
}
