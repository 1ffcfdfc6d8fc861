//! `template.yaml` as CloudFormation receives it, for the tests that read it
//! (`tests/tests/template*.rs`): `scripts/render-template` expands Fn::ForEach
//! (AWS::LanguageExtensions, with SAM CLI's own local processor) and runs the SAM transform
//! (samtranslator) offline; these helpers render it, look resources up and resolve intrinsic
//! functions the way CloudFormation would (the local scenario's resolver).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{Map, Value, json};

use crate::process::workspace_root;
use crate::scenario::stack;

/// Workflows one stack holds under CloudFormation's 500-resource limit (the documentation
/// and the `Workflows` parameter say so; tests/tests/template.rs checks both).
pub const MAX_WORKFLOWS: usize = 71;

/// The five functions' logical ids.
pub const FUNCTIONS: [&str; 5] = [
    "ScaleToZeroFunction",
    "RdsInitFunction",
    "SecretRotationFunction",
    "SpotInterruptionFunction",
    "DeployGateFunction",
];

/// Runs scripts/render-template with the venv's Python; `overrides` are `Key=Value` parameters.
pub fn run_render(overrides: &[&str]) -> std::process::Output {
    let root = workspace_root();
    let python = root.join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/setup first (it installs SAM CLI and aws-sam-translator \
         into .venv/, which scripts/render-template needs)",
        python.display()
    );
    Command::new(&python)
        .arg(root.join("scripts/render-template"))
        .arg(root.join("template.yaml"))
        .args(overrides)
        .current_dir(&root)
        .env("SAM_CLI_TELEMETRY", "0")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .expect("scripts/render-template runs")
}

/// The rendered template (see [`run_render`]).
pub fn render(overrides: &[&str]) -> Value {
    let output = run_render(overrides);
    assert!(
        output.status.success(),
        "scripts/render-template {overrides:?} failed ({}); run scripts/setup if the venv is \
         incomplete:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("render-template prints JSON")
}

/// The template with its default parameters, rendered once per test binary.
pub fn default_template() -> &'static Value {
    static TEMPLATE: OnceLock<Value> = OnceLock::new();
    TEMPLATE.get_or_init(|| render(&[]))
}

/// The template as the stack `stack_name` gets it, with `overrides` (`Key=Value`); the values
/// given are kept as the parameters' defaults, so [`resolved`] sees them.
pub fn stack_template_with(stack_name: &str, overrides: &[&str]) -> Value {
    let mut args = vec![format!("AWS::StackName={stack_name}")];
    args.extend(overrides.iter().map(|o| o.to_string()));
    let mut template = render(&args.iter().map(String::as_str).collect::<Vec<_>>());
    for (key, value) in args.iter().filter_map(|a| a.split_once('=')) {
        if let Some(spec) = template["Parameters"].get_mut(key) {
            spec["Default"] = json!(value);
        } else {
            template["Parameters"][key] = json!({"Type": "String", "Default": value});
        }
    }
    template
}

pub fn stack_template(stack_name: &str) -> Value {
    stack_template_with(stack_name, &[])
}

/// A value of a [`stack_template`] with its intrinsic functions resolved as CloudFormation
/// would (the local scenario's resolver); a resource's physical id is `<logical>-id`, a
/// function's or role's ARN is built from that.
pub fn resolved(template: &Value, value: &Value) -> Value {
    let ids = resources(template)
        .keys()
        .map(|logical| (logical.clone(), format!("{logical}-id")))
        .collect();
    let parameters = stack::parameter_values(template, &[]);
    stack::resolve(value, template, &ids, &parameters)
        .unwrap_or_else(|e| panic!("cannot resolve {value}: {e}"))
}

pub fn resources(template: &Value) -> &Map<String, Value> {
    template["Resources"]
        .as_object()
        .expect("Resources is a map")
}

pub fn of_type<'a>(template: &'a Value, kind: &str) -> Vec<(&'a String, &'a Value)> {
    resources(template)
        .iter()
        .filter(|(_, resource)| resource["Type"] == kind)
        .collect()
}

pub fn resource<'a>(template: &'a Value, logical_id: &str) -> &'a Value {
    resources(template)
        .get(logical_id)
        .unwrap_or_else(|| panic!("resource {logical_id} is missing"))
}

pub fn get_att(logical_id: &str, attribute: &str) -> Value {
    json!({ "Fn::GetAtt": [logical_id, attribute] })
}

pub fn reference(logical_id: &str) -> Value {
    json!({ "Ref": logical_id })
}

/// `{"Ref": id}`, `{"Fn::Sub": "${id}"}`, or the string `"${id}"` that SAM CLI's local
/// LanguageExtensions processor leaves of a `!Sub "${id}"` (it flattens Fn::Sub locally; the
/// deployed template keeps Fn::Sub, CloudFormation expands Fn::ForEach itself).
pub fn refers_to(value: &Value, logical_id: &str) -> bool {
    let sub = format!("${{{logical_id}}}");
    *value == reference(logical_id)
        || value.as_str() == Some(sub.as_str())
        || value["Fn::Sub"].as_str() == Some(sub.as_str())
}

/// Evaluates a condition made of Fn::Not / Fn::Equals over values the local expansion resolved
/// (parameters are substituted by their defaults or overrides).
pub fn evaluate(condition: &Value) -> bool {
    if let Some(inner) = condition.get("Fn::Not") {
        return !evaluate(&inner[0]);
    }
    if let Some(pair) = condition.get("Fn::Equals") {
        assert!(
            pair[0].is_string() && pair[1].is_string(),
            "unresolved: {condition}"
        );
        return pair[0] == pair[1];
    }
    panic!("cannot evaluate condition {condition}")
}

/// Whether `resource` is created with the parameters the template was rendered with: it has no
/// Condition, or its condition holds. (The local render drops the Refs inside a resource whose
/// condition is false, so such a resource is not looked at.)
pub fn exists(template: &Value, resource: &Value) -> bool {
    resource["Condition"]
        .as_str()
        .is_none_or(|condition| evaluate(&template["Conditions"][condition]))
}

/// A value that is a string or a list of strings, as IAM allows for Action and Resource.
pub fn one_or_many(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

/// Every `.rs` file under `dir` (a crate's `src/`), for the tests that read a function's code.
pub fn rust_sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(rust_sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// A CloudWatch Logs JSON filter pattern of the forms the template uses, applied to a log line:
/// `{ $.field = "value" }`, combined with `&&`, `||` and parentheses.
pub fn json_filter_matches(pattern: &str, line: &Value) -> bool {
    let inner = pattern
        .trim()
        .strip_prefix('{')
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or_else(|| panic!("not a JSON filter pattern: {pattern}"));
    let mut filter = JsonFilter {
        rest: inner,
        pattern,
    };
    let matched = filter.any(line);
    assert!(filter.rest.trim().is_empty(), "left over in {pattern}");
    matched
}

/// A recursive-descent reader of a JSON filter pattern's body.
struct JsonFilter<'a> {
    rest: &'a str,
    pattern: &'a str,
}

impl JsonFilter<'_> {
    fn eat(&mut self, token: &str) -> bool {
        let trimmed = self.rest.trim_start();
        match trimmed.strip_prefix(token) {
            Some(after) => {
                self.rest = after;
                true
            }
            None => false,
        }
    }

    /// `all ( || all )*`
    fn any(&mut self, line: &Value) -> bool {
        let mut matched = self.all(line);
        while self.eat("||") {
            matched |= self.all(line);
        }
        matched
    }

    /// `one ( && one )*`
    fn all(&mut self, line: &Value) -> bool {
        let mut matched = self.one(line);
        while self.eat("&&") {
            matched &= self.one(line);
        }
        matched
    }

    /// `( any )` or `$.path = "value"`
    fn one(&mut self, line: &Value) -> bool {
        if self.eat("(") {
            let matched = self.any(line);
            assert!(self.eat(")"), "unbalanced parentheses in {}", self.pattern);
            return matched;
        }
        assert!(
            self.eat("$."),
            "selector must start with $.: {}",
            self.pattern
        );
        let end = self
            .rest
            .find('=')
            .unwrap_or_else(|| panic!("only `=` comparisons are evaluated here: {}", self.pattern));
        let path = self.rest[..end].trim();
        self.rest = &self.rest[end + 1..];
        assert!(self.eat("\""), "a quoted value: {}", self.pattern);
        let close = self.rest.find('"').expect("a closing quote");
        let wanted = &self.rest[..close];
        self.rest = &self.rest[close + 1..];
        let mut field = line;
        for part in path.split('.') {
            field = &field[part];
        }
        field.as_str() == Some(wanted)
    }
}
