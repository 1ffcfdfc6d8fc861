//! The proof that each function's role is enough for what it really does: every AWS call a
//! function made during the scenario (moto's recording, told apart by the access key id each
//! function process signs with) is evaluated with `harness::iam` against that function's own
//! role in the rendered template, with the call's real values: the action, the resource's ARN
//! (looked up from the name in the request where the request names one) and the condition keys
//! (the group's or secret's tags, PutMetricData's namespace). moto accepts every call, so
//! without this a missing or too narrow grant would only show up in AWS.
//!
//! The mapping from a recorded request to an IAM request is pure (unit-tested below, also on
//! calls a role refuses); an action it does not know is a failure, never a pass.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_autoscaling::types::AutoScalingGroup;
use aws_sdk_secretsmanager::types::SecretListEntry;
use serde_json::Value;

use super::worker::on_group;
use super::{FUNCTIONS, STACK, World};
use crate::iam::{self, Request};
use crate::moto::{ACCOUNT_ID, REGION, RecordedRequest};
use crate::scenario::aws_error;

/// The access key id a function process signs with (moto checks no signature), e.g.
/// `AKIASCALETOZERO` for `scale-to-zero`.
pub(super) fn access_key_id(binary: &str) -> String {
    format!("AKIA{}", binary.replace('-', "").to_ascii_uppercase())
}

/// A function and the statements of its own role (`<FunctionLogicalId>Role`, made by SAM).
pub(super) struct FunctionRole {
    pub(super) binary: &'static str,
    pub(super) role: String,
    pub(super) statements: Vec<Value>,
}

/// The resources a call's ARN and tags are looked up in, as they were at the end of the
/// scenario (no step changes a tag or renames anything, so they are what each call saw).
#[derive(Default)]
pub(super) struct Resources {
    pub(super) groups: Vec<AutoScalingGroup>,
    pub(super) secrets: Vec<SecretListEntry>,
    /// Stack name → stack id (its ARN).
    pub(super) stacks: BTreeMap<String, String>,
}

/// One function's calls that were checked and allowed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Checked {
    pub(super) calls: usize,
    pub(super) actions: BTreeSet<String>,
}

/// Every function's checked calls, and how many recorded calls were not a function's (the
/// harness's own, signed with its test key).
#[derive(Debug, Default)]
pub(super) struct Proof {
    pub(super) functions: BTreeMap<&'static str, Checked>,
    pub(super) not_attributed: usize,
}

/// Checks every call of every function in `roles` against its own role; a function with no
/// call at all is a failure too (the proof would hold vacuously). Returns every failure, not
/// just the first.
pub(super) fn check(
    recorded: &[RecordedRequest],
    roles: &[FunctionRole],
    resources: &Resources,
) -> Result<Proof, Vec<String>> {
    let mut proof = Proof::default();
    let mut failures = Vec::new();
    let mut with_calls = BTreeSet::new();
    for request in recorded {
        let Some(function) = roles
            .iter()
            .find(|f| request.access_key() == Some(access_key_id(f.binary).as_str()))
        else {
            proof.not_attributed += 1;
            continue;
        };
        with_calls.insert(function.binary);
        match allowed(request, function, resources) {
            Ok(action) => {
                let checked = proof.functions.entry(function.binary).or_default();
                checked.calls += 1;
                checked.actions.insert(action);
            }
            Err(failure) => failures.push(format!("{}: {failure}", function.binary)),
        }
    }
    for function in roles {
        if !with_calls.contains(function.binary) {
            failures.push(format!(
                "{}: no AWS call signed with its key {} was recorded, so nothing was proven",
                function.binary,
                access_key_id(function.binary)
            ));
        }
    }
    if failures.is_empty() {
        Ok(proof)
    } else {
        Err(failures)
    }
}

/// The call's IAM action if `function`'s role allows it; otherwise why not.
fn allowed(
    request: &RecordedRequest,
    function: &FunctionRole,
    resources: &Resources,
) -> Result<String, String> {
    let call = iam_request(request, resources)?;
    let decision = iam::evaluate(&function.statements, &call)
        .map_err(|e| format!("{} on {}: {e}", call.action, call.resource))?;
    if decision.is_allowed() {
        Ok(call.action)
    } else {
        Err(format!(
            "{} on {} is {decision:?} by {} (condition keys {:?})",
            call.action, call.resource, function.role, call.context
        ))
    }
}

/// The IAM prefix of a service, from the signing name in the request's credential scope.
fn iam_prefix(signing_name: &str) -> Result<&'static str, String> {
    Ok(match signing_name {
        "autoscaling" => "autoscaling",
        "cloudformation" => "cloudformation",
        "dynamodb" => "dynamodb",
        // CloudWatch signs as `monitoring`; its IAM actions are `cloudwatch:*`.
        "monitoring" => "cloudwatch",
        "secretsmanager" => "secretsmanager",
        "sns" => "sns",
        other => return Err(format!("no IAM prefix known for the signing name {other}")),
    })
}

/// A recorded request as IAM sees it: action, resource ARN and condition keys, from the
/// request's own values.
pub(super) fn iam_request(
    request: &RecordedRequest,
    resources: &Resources,
) -> Result<Request, String> {
    let service = request
        .service()
        .ok_or("a request without a SigV4 credential scope")?;
    let name = request
        .action()
        .ok_or_else(|| format!("{service} {} {}: no action", request.method, request.path()))?;
    let action = format!("{}:{name}", iam_prefix(service)?);
    let parameters = request.parameters();
    let parameter = |key: &str| {
        parameters
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| format!("{action} without {key}"))
    };
    match action.as_str() {
        // No resource-level permission: IAM authorizes these on "*". (DescribeAlarms does
        // have alarm ARNs, but it returns composite alarms only when granted on "*".)
        "autoscaling:DescribeAutoScalingGroups"
        | "autoscaling:DescribeAutoScalingInstances"
        | "cloudwatch:DescribeAlarms"
        | "cloudwatch:GetMetricData"
        | "secretsmanager:GetRandomPassword" => Ok(Request::new(&action, "*")),
        "cloudwatch:PutMetricData" => {
            Ok(Request::new(&action, "*").with("cloudwatch:namespace", parameter("Namespace")?))
        }
        "autoscaling:SetDesiredCapacity"
        | "autoscaling:DetachInstances"
        | "autoscaling:CompleteLifecycleAction" => {
            let name = parameter("AutoScalingGroupName")?;
            let group = resources
                .groups
                .iter()
                .find(|g| g.auto_scaling_group_name() == Some(name))
                .ok_or_else(|| format!("{action} on a group moto does not have: {name}"))?;
            Ok(on_group(&action, group))
        }
        "secretsmanager:DescribeSecret"
        | "secretsmanager:GetSecretValue"
        | "secretsmanager:PutSecretValue"
        | "secretsmanager:UpdateSecretVersionStage" => {
            let id = parameter("SecretId")?;
            // SecretId is the ARN or the name; IAM always sees the ARN.
            let secret = resources
                .secrets
                .iter()
                .find(|s| s.arn() == Some(id) || s.name() == Some(id))
                .ok_or_else(|| format!("{action} on a secret moto does not have: {id}"))?;
            let tags = secret
                .tags()
                .iter()
                .filter_map(|t| Some((t.key()?, t.value()?)));
            Ok(Request::new(&action, secret.arn().unwrap_or_default())
                .with_resource_tags("secretsmanager", tags))
        }
        "dynamodb:GetItem" | "dynamodb:PutItem" => {
            // TableName is the name or the ARN; IAM sees the table's ARN.
            let table = parameter("TableName")?;
            let arn = if table.starts_with("arn:") {
                table.to_owned()
            } else {
                format!("arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{table}")
            };
            Ok(Request::new(&action, &arn))
        }
        "sns:Publish" => {
            let topic = parameter("TopicArn").or_else(|_| parameter("TargetArn"))?;
            Ok(Request::new(&action, topic))
        }
        "cloudformation:DescribeStacks" => {
            // StackName is the name or the id (the ARN); without it, every stack: "*".
            let stack = match parameters.get("StackName") {
                None => "*",
                Some(id) if id.starts_with("arn:") => id,
                Some(name) => resources
                    .stacks
                    .get(name)
                    .ok_or_else(|| format!("{action} on a stack moto does not have: {name}"))?,
            };
            Ok(Request::new(&action, stack))
        }
        other => Err(format!(
            "{other}: the proof does not know this action's resource and condition keys (add it to iam_proof::iam_request)"
        )),
    }
}

impl World {
    /// The last step: every AWS call of every function, allowed by its own role.
    pub(super) async fn every_call_allowed_by_its_role(&self) -> Result<((), String), String> {
        let mut roles = Vec::new();
        for (logical, binary) in FUNCTIONS {
            let role = format!("{logical}Role");
            roles.push(FunctionRole {
                binary,
                statements: self.role_statements(&role)?,
                role,
            });
        }
        let resources = self.resources().await?;
        let proof = check(&self.moto.recorded_requests(), &roles, &resources)
            .map_err(|failures| failures.join("\n"))?;
        let per_function: Vec<String> = roles
            .iter()
            .filter_map(|f| {
                let checked = proof.functions.get(f.binary)?;
                let actions = checked.actions.len();
                Some(format!(
                    "{} {} ({actions} action{})",
                    f.binary,
                    checked.calls,
                    if actions == 1 { "" } else { "s" }
                ))
            })
            .collect();
        Ok((
            (),
            format!(
                "calls allowed: {}; {} harness calls not a function's",
                per_function.join(", "),
                proof.not_attributed
            ),
        ))
    }

    /// Every group and secret moto holds, and this stack's id.
    async fn resources(&self) -> Result<Resources, String> {
        let groups = self
            .clients
            .autoscaling
            .describe_auto_scaling_groups()
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(aws_error("DescribeAutoScalingGroups"))?;
        let secrets = self
            .clients
            .secrets
            .list_secrets()
            .into_paginator()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(aws_error("ListSecrets"))?
            .into_iter()
            .flat_map(|page| page.secret_list.unwrap_or_default())
            .collect();
        Ok(Resources {
            groups,
            secrets,
            stacks: BTreeMap::from([(STACK.to_owned(), self.stack_id.clone())]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_autoscaling::types::TagDescription;
    use aws_sdk_secretsmanager::types::Tag;
    use serde_json::json;

    const ACCOUNT: &str = "123456789012";
    const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:orch-local-fleet";
    const MASTER: &str =
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:/bp/local/db/master-AbCdEf";

    fn group_arn(name: &str) -> String {
        format!(
            "arn:aws:autoscaling:us-east-1:{ACCOUNT}:autoScalingGroup:0a1b:autoScalingGroupName/{name}"
        )
    }

    fn group(name: &str, stack: &str) -> AutoScalingGroup {
        let tag = |key: &str, value: &str| TagDescription::builder().key(key).value(value).build();
        AutoScalingGroup::builder()
            .auto_scaling_group_name(name)
            .auto_scaling_group_arn(group_arn(name))
            .tags(tag("orchestrator:managed", "true"))
            .tags(tag("orchestrator:stack", stack))
            .build()
    }

    fn resources() -> Resources {
        Resources {
            groups: vec![
                group("orch-local-img2vid", "orch-local"),
                group("orch-other-img2vid", "orch-other"),
            ],
            secrets: vec![
                SecretListEntry::builder()
                    .name("/bp/local/db/master")
                    .arn(MASTER)
                    .tags(
                        Tag::builder()
                            .key("orchestrator:stage")
                            .value("local")
                            .build(),
                    )
                    .build(),
            ],
            stacks: BTreeMap::new(),
        }
    }

    /// The template's scale-to-zero policy, resolved for the stack `orch-local`.
    fn scale_to_zero() -> FunctionRole {
        let statements = vec![
            json!({"Sid": "ReadFleetAndMetrics", "Effect": "Allow",
                   "Action": ["autoscaling:DescribeAutoScalingGroups", "cloudwatch:GetMetricData"],
                   "Resource": "*"}),
            json!({"Sid": "ScaleManagedGroupsOnly", "Effect": "Allow",
                   "Action": ["autoscaling:SetDesiredCapacity"],
                   "Resource": format!("arn:aws:autoscaling:us-east-1:{ACCOUNT}:autoScalingGroup:*:autoScalingGroupName/*"),
                   "Condition": {"StringEquals": {
                       "autoscaling:ResourceTag/orchestrator:managed": "true",
                       "autoscaling:ResourceTag/orchestrator:stack": "orch-local"}}}),
            json!({"Sid": "BacklogMetricOnlyInQueueNamespace", "Effect": "Allow",
                   "Action": "cloudwatch:PutMetricData", "Resource": "*",
                   "Condition": {"StringEquals": {"cloudwatch:namespace": "Orchestrator/orch-local/Queue"}}}),
            json!({"Sid": "Notices", "Effect": "Allow", "Action": "sns:Publish", "Resource": TOPIC}),
        ];
        FunctionRole {
            binary: "scale-to-zero",
            role: "ScaleToZeroFunctionRole".into(),
            statements,
        }
    }

    fn rds_init() -> FunctionRole {
        FunctionRole {
            binary: "rds-init",
            role: "RdsInitFunctionRole".into(),
            statements: vec![json!({"Effect": "Allow",
                "Action": "secretsmanager:GetSecretValue", "Resource": [MASTER]})],
        }
    }

    /// A request as moto records it, signed with `key` for `service`.
    fn recorded(key: &str, service: &str, headers: &[(&str, &str)], body: &str) -> RecordedRequest {
        let mut all: BTreeMap<String, String> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        all.insert(
            "Authorization".into(),
            crate::moto::unsigned_authorization(key, service),
        );
        RecordedRequest {
            method: "POST".into(),
            url: "http://127.0.0.1:1/".into(),
            headers: all,
            body: body.as_bytes().to_vec(),
        }
    }

    fn by_scale_to_zero(service: &str, body: &str) -> RecordedRequest {
        recorded(&access_key_id("scale-to-zero"), service, &[], body)
    }

    fn set_desired(group: &str) -> RecordedRequest {
        by_scale_to_zero(
            "autoscaling",
            &format!(
                "Action=SetDesiredCapacity&Version=2011-01-01&AutoScalingGroupName={group}&DesiredCapacity=0"
            ),
        )
    }

    fn put_metric_data(namespace: &str) -> RecordedRequest {
        let mut request = by_scale_to_zero(
            "monitoring",
            &json!({"Namespace": namespace, "MetricData": []}).to_string(),
        );
        request.headers.insert(
            "X-Amz-Target".into(),
            "GraniteServiceVersion20100801.PutMetricData".into(),
        );
        request
    }

    fn publish(topic: &str) -> RecordedRequest {
        by_scale_to_zero(
            "sns",
            &format!("Action=Publish&TopicArn={topic}&Message=%7B%7D"),
        )
    }

    fn only_failure(recorded: &[RecordedRequest], roles: &[FunctionRole]) -> String {
        let failures = check(recorded, roles, &resources()).unwrap_err();
        assert_eq!(failures.len(), 1, "{failures:?}");
        failures[0].clone()
    }

    #[test]
    fn allowed_calls_are_counted_per_function_and_the_harness_calls_ignored() {
        let calls = [
            set_desired("orch-local-img2vid"),
            put_metric_data("Orchestrator/orch-local/Queue"),
            publish(TOPIC),
            by_scale_to_zero("autoscaling", "Action=DescribeAutoScalingGroups"),
            recorded(
                "testing",
                "autoscaling",
                &[],
                "Action=SetDesiredCapacity&AutoScalingGroupName=orch-other-img2vid",
            ),
        ];
        let proof = check(&calls, &[scale_to_zero()], &resources()).unwrap();
        assert_eq!(proof.not_attributed, 1);
        assert_eq!(proof.functions["scale-to-zero"].calls, 4);
        assert_eq!(
            proof.functions["scale-to-zero"].actions,
            BTreeSet::from([
                "autoscaling:DescribeAutoScalingGroups".to_owned(),
                "autoscaling:SetDesiredCapacity".to_owned(),
                "cloudwatch:PutMetricData".to_owned(),
                "sns:Publish".to_owned(),
            ])
        );
    }

    #[test]
    fn scaling_another_stacks_group_is_denied_with_function_action_group_and_decision() {
        let failure = only_failure(&[set_desired("orch-other-img2vid")], &[scale_to_zero()]);
        for part in [
            "scale-to-zero: ",
            "autoscaling:SetDesiredCapacity on ",
            &group_arn("orch-other-img2vid"),
            "ImplicitlyDenied by ScaleToZeroFunctionRole",
            "\"autoscaling:ResourceTag/orchestrator:stack\": \"orch-other\"",
        ] {
            assert!(failure.contains(part), "{part:?} not in {failure}");
        }
    }

    #[test]
    fn publishing_to_another_topic_or_metrics_to_another_namespace_is_denied() {
        let other_topic = TOPIC.replace("fleet", "alerts");
        let failure = only_failure(&[publish(&other_topic)], &[scale_to_zero()]);
        assert!(
            failure.contains(&format!("sns:Publish on {other_topic} is ImplicitlyDenied")),
            "{failure}"
        );
        let failure = only_failure(&[put_metric_data("AWS/EC2")], &[scale_to_zero()]);
        assert!(
            failure.contains("cloudwatch:PutMetricData on * is ImplicitlyDenied")
                && failure.contains("\"cloudwatch:namespace\": \"AWS/EC2\""),
            "{failure}"
        );
    }

    #[test]
    fn spot_interruption_may_read_and_write_its_progress_table_and_no_other() {
        let table = |name: &str| format!("arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/{name}");
        let role = || FunctionRole {
            binary: "spot-interruption",
            role: "SpotInterruptionFunctionRole".into(),
            statements: vec![json!({"Sid": "ProgressRecords", "Effect": "Allow",
                "Action": ["dynamodb:GetItem", "dynamodb:PutItem"],
                "Resource": table("orch-local-SpotProgressTable-1A")})],
        };
        let call = |operation: &str, table_name: &str| {
            recorded(
                &access_key_id("spot-interruption"),
                "dynamodb",
                &[("X-Amz-Target", &format!("DynamoDB_20120810.{operation}"))],
                &json!({"TableName": table_name, "Key": {}}).to_string(),
            )
        };
        let proof = check(
            &[
                call("GetItem", "orch-local-SpotProgressTable-1A"),
                call("PutItem", &table("orch-local-SpotProgressTable-1A")),
            ],
            &[role()],
            &resources(),
        )
        .unwrap();
        assert_eq!(proof.functions["spot-interruption"].calls, 2);
        let failure = only_failure(
            &[call("GetItem", "orch-other-SpotProgressTable-9Z")],
            &[role()],
        );
        assert!(
            failure.contains(&format!(
                "dynamodb:GetItem on {} is ImplicitlyDenied",
                table("orch-other-SpotProgressTable-9Z")
            )),
            "{failure}"
        );
        let failure = only_failure(
            &[call("DeleteItem", "orch-local-SpotProgressTable-1A")],
            &[role()],
        );
        assert!(failure.contains("dynamodb:DeleteItem"), "{failure}");
    }

    #[test]
    fn an_action_without_a_mapping_fails_instead_of_passing() {
        let failure = only_failure(
            &[by_scale_to_zero(
                "autoscaling",
                "Action=UpdateAutoScalingGroup&AutoScalingGroupName=orch-local-img2vid&MaxSize=9",
            )],
            &[scale_to_zero()],
        );
        assert!(
            failure.starts_with(
                "scale-to-zero: autoscaling:UpdateAutoScalingGroup: the proof does not know"
            ),
            "{failure}"
        );
        let unknown_service = only_failure(
            &[by_scale_to_zero("sts", "Action=GetCallerIdentity")],
            &[scale_to_zero()],
        );
        assert!(
            unknown_service.contains("signing name sts"),
            "{unknown_service}"
        );
    }

    #[test]
    fn a_function_without_calls_fails_the_proof() {
        let failures = check(
            &[publish(TOPIC)],
            &[scale_to_zero(), rds_init()],
            &resources(),
        )
        .unwrap_err();
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(
            failures[0].starts_with("rds-init: no AWS call signed with its key AKIARDSINIT"),
            "{}",
            failures[0]
        );
    }

    #[test]
    fn a_stack_named_by_name_is_checked_by_its_id() {
        let id = "arn:aws:cloudformation:us-east-1:123456789012:stack/orch-local/0a1b";
        let mut known = resources();
        known.stacks.insert("orch-local".into(), id.into());
        let describe = |body: &str| {
            let request = recorded(&access_key_id("deploy-gate"), "cloudformation", &[], body);
            iam_request(&request, &known).map(|r| r.resource)
        };
        assert_eq!(
            describe("Action=DescribeStacks&StackName=orch-local").unwrap(),
            id
        );
        assert_eq!(
            describe(&format!("Action=DescribeStacks&StackName={id}")).unwrap(),
            id
        );
        assert_eq!(describe("Action=DescribeStacks").unwrap(), "*");
        assert!(describe("Action=DescribeStacks&StackName=orch-other").is_err());
    }

    #[test]
    fn a_secret_named_by_name_is_checked_by_its_arn_with_its_tags() {
        let get = |id: &str| {
            recorded(
                &access_key_id("rds-init"),
                "secretsmanager",
                &[("X-Amz-Target", "secretsmanager.GetSecretValue")],
                &json!({"SecretId": id}).to_string(),
            )
        };
        let by_name = iam_request(&get("/bp/local/db/master"), &resources()).unwrap();
        assert_eq!(by_name.resource, MASTER);
        assert_eq!(
            by_name.context["secretsmanager:ResourceTag/orchestrator:stage"],
            "local"
        );
        assert!(
            check(
                &[get(MASTER), get("/bp/local/db/master")],
                &[rds_init()],
                &resources()
            )
            .is_ok()
        );
        let unknown = only_failure(&[get("/orch-local/local/pg/master")], &[rds_init()]);
        assert!(
            unknown.contains("a secret moto does not have: /orch-local/local/pg/master"),
            "{unknown}"
        );
    }
}
