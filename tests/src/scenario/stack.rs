//! `template.yaml` as a stack on moto: rendered the way `sam build --language-extensions`
//! renders it, adapted only where moto 5.2.5's CloudFormation falls short, and created with
//! CreateStack, so the scenario acts on the resources the template really declares.

use std::collections::BTreeMap;
use std::path::Path;

use aws_sdk_cloudformation::types::{Capability, Parameter, StackStatus};
use serde_json::{Value, json};

use super::aws_error;
use crate::moto::{ACCOUNT_ID, REGION};

/// The SSM parameter the local stack reads the worker AMI id from.
pub const AMI_PARAMETER: &str = "/orchestrator-local/worker-ami";
/// The S3 object the rendered template's `CodeUri` placeholders point at.
pub const CODE_BUCKET: &str = "local-build";
pub const CODE_KEY: &str = "placeholder.zip";

/// Resource types moto's CloudFormation skips without a word; the scenario creates what it
/// needs of them through the services' own APIs, from the template's properties.
pub const NOT_IN_MOTO: &[&str] = &[
    "AWS::SecretsManager::Secret",
    "AWS::SecretsManager::SecretTargetAttachment",
    "AWS::SecretsManager::RotationSchedule",
    "AWS::CloudWatch::Alarm",
    "AWS::AutoScaling::ScalingPolicy",
    "AWS::SNS::TopicPolicy",
];

/// Resource types moto's CloudFormation skips and whose attributes it then cannot give: an
/// output that reads one fails CreateStack with a 500.
const ATTRIBUTES_NOT_IN_MOTO: &[&str] = &["AWS::ElastiCache::ReplicationGroup"];

/// `template.yaml` expanded (one group per workflow) and SAM-transformed by
/// `scripts/render-template`, with the stack name resolved.
pub fn render(root: &Path, stack_name: &str, parameters: &[(&str, &str)]) -> Result<Value, String> {
    let mut command = std::process::Command::new(root.join(".venv/bin/python"));
    command
        .current_dir(root)
        .arg("scripts/render-template")
        .arg(format!("AWS::StackName={stack_name}"));
    for (key, value) in parameters {
        command.arg(format!("{key}={value}"));
    }
    let output = command
        .output()
        .map_err(|e| format!("run scripts/render-template (scripts/setup installs it): {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "scripts/render-template failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    serde_json::from_slice(&output.stdout).map_err(|e| format!("rendered template: {e}"))
}

/// The three changes moto needs, each a moto limitation rather than a template choice:
/// an `AWS::SSM::Parameter::Value` default under `/aws/service/` (moto resolves the default
/// before any override and has no public parameters), `DBParameterGroupName`, whose Ref
/// moto hands RDS as an object, and the outputs that `Fn::GetAtt` a resource of a type moto's
/// CloudFormation skips (the ElastiCache group's endpoint): moto fails the whole CreateStack
/// on them.
pub fn adapt_for_moto(template: &mut Value) -> Result<(), String> {
    let ami = template
        .pointer_mut("/Parameters/WorkerAmiParameter/Default")
        .ok_or("template: no WorkerAmiParameter default")?;
    *ami = json!(AMI_PARAMETER);
    template
        .pointer_mut("/Resources/Database/Properties")
        .and_then(Value::as_object_mut)
        .ok_or("template: no Database properties")?
        .remove("DBParameterGroupName");
    let skipped: Vec<String> = template["Resources"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, r)| ATTRIBUTES_NOT_IN_MOTO.contains(&r["Type"].as_str().unwrap_or("")))
        .map(|(id, _)| id.clone())
        .collect();
    if let Some(outputs) = template.get_mut("Outputs").and_then(Value::as_object_mut) {
        outputs.retain(|_, output| {
            let target = output["Value"]["Fn::GetAtt"][0].as_str().unwrap_or("");
            !skipped.iter().any(|id| id == target)
        });
    }
    Ok(())
}

/// Creates the stack and returns its id. Custom resources keep it in `CREATE_IN_PROGRESS`
/// until their function answers on moto's response URL ([`response_url`]).
pub async fn create(
    cloudformation: &aws_sdk_cloudformation::Client,
    name: &str,
    template: &Value,
    parameters: &[(&str, &str)],
) -> Result<String, String> {
    let mut request = cloudformation
        .create_stack()
        .stack_name(name)
        .template_body(template.to_string())
        .capabilities(Capability::CapabilityIam)
        .capabilities(Capability::CapabilityNamedIam)
        .capabilities(Capability::CapabilityAutoExpand);
    for (key, value) in parameters {
        request = request.parameters(
            Parameter::builder()
                .parameter_key(*key)
                .parameter_value(*value)
                .build(),
        );
    }
    let out = request.send().await.map_err(aws_error("CreateStack"))?;
    out.stack_id
        .ok_or_else(|| "CreateStack returned no stack id".to_owned())
}

/// The stack's status.
pub async fn status(
    cloudformation: &aws_sdk_cloudformation::Client,
    stack_id: &str,
) -> Result<StackStatus, String> {
    cloudformation
        .describe_stacks()
        .stack_name(stack_id)
        .send()
        .await
        .map_err(aws_error("DescribeStacks"))?
        .stacks
        .unwrap_or_default()
        .into_iter()
        .next()
        .and_then(|s| s.stack_status)
        .ok_or_else(|| format!("stack {stack_id} not found"))
}

/// Logical id → physical id of every resource moto created.
pub async fn physical_ids(
    cloudformation: &aws_sdk_cloudformation::Client,
    stack_id: &str,
) -> Result<BTreeMap<String, String>, String> {
    let resources = cloudformation
        .describe_stack_resources()
        .stack_name(stack_id)
        .send()
        .await
        .map_err(aws_error("DescribeStackResources"))?
        .stack_resources
        .unwrap_or_default();
    Ok(resources
        .into_iter()
        .filter_map(|r| Some((r.logical_resource_id?, r.physical_resource_id?)))
        .collect())
}

/// Where moto's CloudFormation takes a custom resource's response (what the pre-signed S3
/// URL is on AWS).
pub fn response_url(moto_url: &str, stack_id: &str) -> String {
    let base = format!("{moto_url}/cloudformation_{REGION}/cfnresponse");
    reqwest::Url::parse_with_params(&base, [("stack", stack_id)])
        .map_or(base, |url| url.to_string())
}

/// A resource's `Properties` with the intrinsic functions resolved the way CloudFormation
/// resolves them: `Ref` (parameters from `parameters`, pseudo parameters, resources from `ids`,
/// logical → physical id; `AWS::NoValue` drops the entry), `Fn::GetAtt …Arn` / `…QueueName`, `Fn::Sub`,
/// `Fn::If` (the template's `Conditions`), `Fn::Join`, `Fn::Select`, `Fn::Split` and
/// `Fn::Base64`. `AWS::StackName` comes from `parameters`; anything else unknown is an error.
pub fn resolve(
    value: &Value,
    template: &Value,
    ids: &BTreeMap<String, String>,
    parameters: &BTreeMap<String, Value>,
) -> Result<Value, String> {
    let context = Context {
        template,
        ids,
        parameters,
    };
    Ok(context.resolve(value)?.unwrap_or(Value::Null))
}

struct Context<'a> {
    template: &'a Value,
    ids: &'a BTreeMap<String, String>,
    parameters: &'a BTreeMap<String, Value>,
}

impl Context<'_> {
    /// `None` is `AWS::NoValue`: the caller drops the entry.
    fn resolve(&self, value: &Value) -> Result<Option<Value>, String> {
        let Value::Object(map) = value else {
            return Ok(Some(match value {
                Value::Array(items) => Value::Array(self.resolve_all(items)?),
                other => other.clone(),
            }));
        };
        if map.len() == 1 {
            let (function, argument) = map.iter().next().expect("one entry");
            match function.as_str() {
                "Ref" => {
                    let name = argument.as_str().ok_or("Ref of a non-string")?;
                    return (name != "AWS::NoValue")
                        .then(|| self.reference(name))
                        .transpose();
                }
                "Fn::GetAtt" => return self.get_att(argument).map(Some),
                "Fn::Sub" => return self.sub(argument).map(|s| Some(json!(s))),
                "Fn::If" => {
                    let parts = argument.as_array().filter(|p| p.len() == 3);
                    let parts = parts.ok_or("Fn::If takes [condition, then, else]")?;
                    let name = parts[0]
                        .as_str()
                        .ok_or("Fn::If of a non-string condition")?;
                    let branch = if self.condition(name)? {
                        &parts[1]
                    } else {
                        &parts[2]
                    };
                    return self.resolve(branch);
                }
                "Fn::Join" => {
                    let (separator, items) = self.pair(argument, "Fn::Join")?;
                    let separator = separator.as_str().ok_or("Fn::Join separator")?;
                    let items = items.as_array().ok_or("Fn::Join of a non-list")?;
                    let items: Vec<String> = items.iter().map(text).collect::<Result<_, _>>()?;
                    return Ok(Some(json!(items.join(separator))));
                }
                "Fn::Select" => {
                    let (index, items) = self.pair(argument, "Fn::Select")?;
                    let index = index
                        .as_u64()
                        .or_else(|| index.as_str().and_then(|s| s.parse().ok()))
                        .ok_or("Fn::Select index")?;
                    let item = items.as_array().and_then(|i| i.get(index as usize));
                    return Ok(Some(item.cloned().ok_or("Fn::Select out of range")?));
                }
                "Fn::Split" => {
                    let (separator, whole) = self.pair(argument, "Fn::Split")?;
                    let separator = separator.as_str().ok_or("Fn::Split separator")?;
                    let whole = text(&whole)?;
                    return Ok(Some(json!(whole.split(separator).collect::<Vec<_>>())));
                }
                "Fn::Base64" => {
                    let plain = text(&self.resolve(argument)?.unwrap_or(Value::Null))?;
                    return Ok(Some(json!(aws_smithy_types::base64::encode(plain))));
                }
                _ => {}
            }
        }
        let mut resolved = serde_json::Map::new();
        for (key, value) in map {
            if let Some(value) = self.resolve(value)? {
                resolved.insert(key.clone(), value);
            }
        }
        Ok(Some(Value::Object(resolved)))
    }

    fn resolve_all(&self, items: &[Value]) -> Result<Vec<Value>, String> {
        let mut resolved = Vec::new();
        for item in items {
            resolved.extend(self.resolve(item)?);
        }
        Ok(resolved)
    }

    /// A two-element argument list, both resolved.
    fn pair(&self, argument: &Value, function: &str) -> Result<(Value, Value), String> {
        match argument.as_array().map(Vec::as_slice) {
            Some([a, b]) => Ok((
                self.resolve(a)?.unwrap_or(Value::Null),
                self.resolve(b)?.unwrap_or(Value::Null),
            )),
            _ => Err(format!("{function} takes two arguments")),
        }
    }

    fn reference(&self, name: &str) -> Result<Value, String> {
        if let Some(value) = self.parameters.get(name) {
            return Ok(value.clone());
        }
        if let Some(id) = self.ids.get(name) {
            return Ok(json!(id));
        }
        Ok(json!(match name {
            "AWS::Region" => REGION,
            "AWS::AccountId" => ACCOUNT_ID,
            "AWS::Partition" => "aws",
            "AWS::URLSuffix" => "amazonaws.com",
            _ => return Err(format!("Ref {name}: no such parameter or resource")),
        }))
    }

    fn get_att(&self, argument: &Value) -> Result<Value, String> {
        let parts: Vec<&str> = match argument {
            Value::String(dotted) => dotted.splitn(2, '.').collect(),
            Value::Array(parts) => parts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let [logical, attribute @ ("Arn" | "QueueName")] = parts.as_slice() else {
            return Err(format!("unsupported Fn::GetAtt {argument}"));
        };
        let id = self
            .ids
            .get(*logical)
            .ok_or_else(|| format!("Fn::GetAtt {logical}.{attribute}: no such resource"))?;
        if *attribute == "QueueName" {
            return Ok(json!(id));
        }
        Ok(
            match self.template.pointer(&format!("/Resources/{logical}/Type")) {
                Some(t) if t == "AWS::Lambda::Function" => {
                    json!(format!(
                        "arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{id}"
                    ))
                }
                Some(t) if t == "AWS::IAM::Role" => {
                    json!(format!("arn:aws:iam::{ACCOUNT_ID}:role/{id}"))
                }
                Some(t) if t == "AWS::DynamoDB::Table" => {
                    json!(format!("arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{id}"))
                }
                _ => json!(id),
            },
        )
    }

    /// `Fn::Sub` in both forms: `${Name}`, `${Logical.Arn}`, `${!Literal}`.
    fn sub(&self, argument: &Value) -> Result<String, String> {
        let (template, variables) = match argument {
            Value::String(template) => (template.as_str(), None),
            Value::Array(parts) if parts.len() == 2 => (
                parts[0].as_str().ok_or("Fn::Sub of a non-string")?,
                Some(&parts[1]),
            ),
            _ => return Err(format!("unsupported Fn::Sub {argument}")),
        };
        let mut out = String::new();
        let mut rest = template;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..]
                .find('}')
                .ok_or_else(|| format!("Fn::Sub: unclosed ${{ in {template}"))?
                + start;
            let name = &rest[start + 2..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else if let Some(value) = variables.and_then(|v| v.get(name)) {
                out.push_str(&text(&self.resolve(value)?.unwrap_or(Value::Null))?);
            } else if let Some((logical, attribute)) = name.split_once('.') {
                out.push_str(&text(&self.get_att(&json!([logical, attribute]))?)?);
            } else {
                out.push_str(&text(&self.reference(name)?)?);
            }
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn condition(&self, name: &str) -> Result<bool, String> {
        let condition = self
            .template
            .pointer(&format!("/Conditions/{name}"))
            .ok_or_else(|| format!("no condition {name}"))?;
        self.evaluate(condition)
    }

    fn evaluate(&self, condition: &Value) -> Result<bool, String> {
        let Some((function, argument)) = condition.as_object().and_then(|m| m.iter().next()) else {
            return Err(format!("cannot evaluate condition {condition}"));
        };
        let items = || argument.as_array().cloned().unwrap_or_default();
        match function.as_str() {
            "Condition" => self.condition(argument.as_str().ok_or("Condition of a non-string")?),
            "Fn::Not" => Ok(!self.evaluate(&items()[0])?),
            "Fn::And" => items()
                .iter()
                .try_fold(true, |all, c| Ok(all && self.evaluate(c)?)),
            "Fn::Or" => items()
                .iter()
                .try_fold(false, |any, c| Ok(any || self.evaluate(c)?)),
            "Fn::Equals" => {
                let (a, b) = self.pair(argument, "Fn::Equals")?;
                Ok(a == b)
            }
            other => Err(format!("cannot evaluate condition function {other}")),
        }
    }
}

/// A resolved value as text (strings as they are, numbers and booleans printed).
fn text(value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(_) | Value::Bool(_) => Ok(value.to_string()),
        other => Err(format!("not a string: {other}")),
    }
}

/// The parameters' effective values: defaults, overridden by `given`; list types as lists.
pub fn parameter_values(template: &Value, given: &[(&str, &str)]) -> BTreeMap<String, Value> {
    let mut values = BTreeMap::new();
    let Some(specs) = template.get("Parameters").and_then(Value::as_object) else {
        return values;
    };
    for (name, spec) in specs {
        let raw = given
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, v)| (*v).to_owned())
            .or_else(|| {
                spec.get("Default").map(|d| match d {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
            });
        let Some(raw) = raw else { continue };
        let is_list = spec.get("Type").and_then(Value::as_str) == Some("CommaDelimitedList");
        let value = if is_list {
            json!(raw.split(',').map(str::trim).collect::<Vec<_>>())
        } else {
            json!(raw)
        };
        values.insert(name.clone(), value);
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_and_function_arns_resolve_like_cloudformation() {
        let template = json!({"Resources": {
            "Fn": {"Type": "AWS::Lambda::Function"},
            "Topic": {"Type": "AWS::SNS::Topic"}
        }});
        let ids = BTreeMap::from([
            ("Fn".to_owned(), "stack-Fn-1".to_owned()),
            (
                "Topic".to_owned(),
                "arn:aws:sns:us-east-1:123456789012:t".to_owned(),
            ),
        ]);
        let params = BTreeMap::from([("Dbs".to_owned(), json!(["a", "b"]))]);
        let props = json!({"Token": {"Fn::GetAtt": ["Fn", "Arn"]},
                           "Users": [{"Topic": {"Ref": "Topic"}, "Databases": {"Ref": "Dbs"}}]});
        assert_eq!(
            resolve(&props, &template, &ids, &params).unwrap(),
            json!({"Token": "arn:aws:lambda:us-east-1:123456789012:function:stack-Fn-1",
                   "Users": [{"Topic": "arn:aws:sns:us-east-1:123456789012:t", "Databases": ["a", "b"]}]})
        );
        let missing = resolve(&json!({"Ref": "Nope"}), &template, &ids, &params).unwrap_err();
        assert!(missing.contains("Nope"), "{missing}");
    }

    #[test]
    fn sub_if_join_and_novalue_resolve_like_cloudformation() {
        let template = json!({
            "Conditions": {
                "HasName": {"Fn::Not": [{"Fn::Equals": [{"Ref": "Name"}, ""]}]},
                "NoData": {"Fn::Equals": [{"Ref": "Data"}, ""]}
            },
            "Resources": {"Role": {"Type": "AWS::IAM::Role"}, "Topic": {"Type": "AWS::SNS::Topic"}}
        });
        let ids = BTreeMap::from([
            ("Role".to_owned(), "stack-Role-1".to_owned()),
            (
                "Topic".to_owned(),
                "arn:aws:sns:us-east-1:123456789012:t".to_owned(),
            ),
        ]);
        let params = BTreeMap::from([
            ("AWS::StackName".to_owned(), json!("orch")),
            ("Name".to_owned(), json!("")),
            ("Data".to_owned(), json!("")),
        ]);
        let props = json!({
            "Namespace": {"Fn::If": ["HasName", {"Ref": "Name"}, {"Fn::Sub": "Orchestrator/${AWS::StackName}/Queue"}]},
            "Arn": {"Fn::Sub": "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:${AWS::StackName}-worker-*"},
            "Role": {"Fn::Sub": ["${R} ${Role.Arn} ${!Literal}", {"R": {"Ref": "Topic"}}]},
            "Joined": {"Fn::Join": [",", ["a", {"Ref": "AWS::StackName"}]]},
            "UserData": {"Fn::If": ["NoData", {"Ref": "AWS::NoValue"}, {"Fn::Base64": "x"}]},
            "List": [{"Ref": "AWS::NoValue"}, {"Fn::Base64": "#!/bin/sh\n"}]
        });
        assert_eq!(
            resolve(&props, &template, &ids, &params).unwrap(),
            json!({
                "Namespace": "Orchestrator/orch/Queue",
                "Arn": "arn:aws:sqs:us-east-1:123456789012:orch-worker-*",
                "Role": "arn:aws:sns:us-east-1:123456789012:t arn:aws:iam::123456789012:role/stack-Role-1 ${Literal}",
                "Joined": "a,orch",
                "List": ["IyEvYmluL3NoCg=="]
            })
        );
    }

    #[test]
    fn the_response_url_carries_the_stack_id_encoded() {
        assert_eq!(
            response_url(
                "http://127.0.0.1:5000",
                "arn:aws:cloudformation:us-east-1:1:stack/s/x"
            ),
            "http://127.0.0.1:5000/cloudformation_us-east-1/cfnresponse?stack=arn%3Aaws%3Acloudformation%3Aus-east-1%3A1%3Astack%2Fs%2Fx"
        );
    }
}
