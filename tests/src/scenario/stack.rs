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

/// The two changes moto needs, each a moto limitation rather than a template choice:
/// an `AWS::SSM::Parameter::Value` default under `/aws/service/` (moto resolves the default
/// before any override and has no public parameters), and `DBParameterGroupName`, whose Ref
/// moto hands RDS as an object.
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

/// A resource's `Properties` with `Ref` and `Fn::GetAtt …Arn` resolved the way CloudFormation
/// resolves them: parameters from `parameters`, resources from `ids` (logical → physical id).
pub fn resolve(
    value: &Value,
    template: &Value,
    ids: &BTreeMap<String, String>,
    parameters: &BTreeMap<String, Value>,
) -> Result<Value, String> {
    Ok(match value {
        Value::Object(map) if map.len() == 1 && map.contains_key("Ref") => {
            let name = map["Ref"].as_str().ok_or("Ref of a non-string")?;
            if let Some(value) = parameters.get(name) {
                value.clone()
            } else if let Some(id) = ids.get(name) {
                json!(id)
            } else {
                return Err(format!("Ref {name}: no such parameter or resource"));
            }
        }
        Value::Object(map) if map.len() == 1 && map.contains_key("Fn::GetAtt") => {
            let parts = map["Fn::GetAtt"]
                .as_array()
                .ok_or("Fn::GetAtt of a non-list")?;
            let (Some(logical), Some("Arn")) = (
                parts.first().and_then(Value::as_str),
                parts.get(1).and_then(Value::as_str),
            ) else {
                return Err(format!("unsupported Fn::GetAtt {parts:?}"));
            };
            let id = ids
                .get(logical)
                .ok_or_else(|| format!("Fn::GetAtt {logical}.Arn: no such resource"))?;
            match template.pointer(&format!("/Resources/{logical}/Type")) {
                Some(t) if t == "AWS::Lambda::Function" => {
                    json!(format!(
                        "arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{id}"
                    ))
                }
                _ => json!(id),
            }
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), resolve(v, template, ids, parameters)?)))
                .collect::<Result<_, String>>()?,
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| resolve(v, template, ids, parameters))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
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
