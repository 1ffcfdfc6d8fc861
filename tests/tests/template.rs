//! template.yaml as CloudFormation receives it: `scripts/render-template` expands Fn::ForEach
//! (AWS::LanguageExtensions, with SAM CLI's own local processor) and runs the SAM transform
//! (samtranslator) offline; these tests read the resulting JSON and check the wiring every
//! function relies on, the VPC placement, the IAM guard rails, the dead-letter queues and one
//! GPU group + idle alarm per workflow.

use std::collections::{BTreeMap, BTreeSet};

use harness::iam::{self, Request};
use harness::process::workspace_root;
use harness::template::{
    FUNCTIONS, MAX_WORKFLOWS, default_template, evaluate, exists, get_att, json_filter_matches,
    of_type, one_or_many, reference, refers_to, render, resolved, resource, resources, run_render,
    rust_sources, stack_template, stack_template_with,
};
use serde_json::{Map, Value, json};

/// Every statement of every identity policy: inline role policies and AWS::IAM::Policy.
fn iam_statements(template: &Value) -> Vec<(String, &Value)> {
    let mut statements = Vec::new();
    for (id, role) in of_type(template, "AWS::IAM::Role") {
        for policy in role["Properties"]["Policies"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for statement in one_or_many(&policy["PolicyDocument"]["Statement"]) {
                statements.push((format!("{id}/{}", policy["PolicyName"]), statement));
            }
        }
    }
    for kind in ["AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"] {
        for (id, policy) in of_type(template, kind) {
            for statement in one_or_many(&policy["Properties"]["PolicyDocument"]["Statement"]) {
                statements.push((id.clone(), statement));
            }
        }
    }
    statements
}

fn actions(statement: &Value) -> Vec<String> {
    one_or_many(&statement["Action"])
        .into_iter()
        .map(|action| action.as_str().expect("actions are strings").to_owned())
        .collect()
}

/// Read-only by name: Describe*, Get*, List* (the IAM access levels List and Read); anything
/// else, and any wildcard, counts as a write.
fn is_read_only(action: &str) -> bool {
    let name = action.split_once(':').map_or(action, |(_, name)| name);
    !name.contains('*')
        && ["Describe", "Get", "List"]
            .iter()
            .any(|p| name.starts_with(p))
}

/// The function's role, by the function's Role property (SAM names it <Function>Role).
fn role_statements<'a>(template: &'a Value, function: &str) -> Vec<&'a Value> {
    let role_ref = &resource(template, function)["Properties"]["Role"];
    let role_id = role_ref["Fn::GetAtt"][0]
        .as_str()
        .unwrap_or_else(|| panic!("{function}: Role is not a GetAtt of a role in this stack"));
    let role = resource(template, role_id);
    role["Properties"]["Policies"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|policy| one_or_many(&policy["PolicyDocument"]["Statement"]))
        .collect()
}

fn env_vars<'a>(template: &'a Value, function: &str) -> &'a Map<String, Value> {
    resource(template, function)["Properties"]["Environment"]["Variables"]
        .as_object()
        .unwrap_or_else(|| panic!("{function} has no environment variables"))
}

/// EventBridge rules whose targets include `function`.
fn rules_targeting<'a>(template: &'a Value, function: &str) -> Vec<(&'a String, &'a Value)> {
    let arn = get_att(function, "Arn");
    of_type(template, "AWS::Events::Rule")
        .into_iter()
        .filter(|(_, rule)| {
            one_or_many(&rule["Properties"]["Targets"])
                .iter()
                .any(|target| target["Arn"] == arn)
        })
        .collect()
}

#[test]
fn every_function_is_rust_on_arm64_with_json_logs() {
    let template = default_template();
    let functions = of_type(template, "AWS::Lambda::Function");
    let ids: BTreeSet<&str> = functions.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, FUNCTIONS.into_iter().collect(), "the five functions");
    for (id, function) in functions {
        let properties = &function["Properties"];
        assert_eq!(properties["Runtime"], "provided.al2023", "{id}");
        assert_eq!(properties["Architectures"], json!(["arm64"]), "{id}");
        assert_eq!(properties["LoggingConfig"]["LogFormat"], "JSON", "{id}");
        let timeout = properties["Timeout"].as_u64().expect("Timeout");
        assert!((1..=900).contains(&timeout), "{id}: timeout {timeout}");
    }
}

#[test]
fn scale_to_zero_gets_the_idle_topic_the_one_minute_schedule_and_its_env() {
    let template = default_template();
    let subscriptions: Vec<_> = of_type(template, "AWS::SNS::Subscription")
        .into_iter()
        .filter(|(_, s)| s["Properties"]["Endpoint"] == get_att("ScaleToZeroFunction", "Arn"))
        .collect();
    // The idle alarms' topic and the backend's wake topic.
    let topics: BTreeSet<String> = subscriptions
        .iter()
        .map(|(_, s)| {
            assert_eq!(s["Properties"]["Protocol"], "lambda");
            s["Properties"]["TopicArn"]["Ref"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        topics,
        ["IdleAlarmTopic", "WakeTopic"].map(String::from).into(),
        "{subscriptions:?}"
    );

    // The schedule, and the backend's Jobs Queued events (see the wake test below).
    let rules = rules_targeting(template, "ScaleToZeroFunction");
    let schedules: Vec<_> = rules
        .iter()
        .filter_map(|(_, rule)| rule["Properties"]["ScheduleExpression"].as_str())
        .collect();
    assert_eq!(schedules, ["rate(1 minute)"], "one schedule: {rules:?}");
    assert_eq!(rules.len(), 2, "the schedule and the wake rule: {rules:?}");

    let permissions: BTreeSet<String> = of_type(template, "AWS::Lambda::Permission")
        .into_iter()
        .filter(|(_, p)| p["Properties"]["FunctionName"] == reference("ScaleToZeroFunction"))
        .map(|(_, p)| p["Properties"]["Principal"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        permissions,
        ["events.amazonaws.com", "sns.amazonaws.com"]
            .map(String::from)
            .into(),
        "SNS and EventBridge may invoke scale-to-zero"
    );

    let env = env_vars(template, "ScaleToZeroFunction");
    for variable in [
        "QUEUE_METRIC_NAMESPACE",
        "QUEUE_METRIC_NAME",
        "WORKFLOW_DIMENSION",
        "TARGET_BACKLOG_PER_INSTANCE",
    ] {
        assert!(env.contains_key(variable), "scale-to-zero: {variable}");
    }
    assert_eq!(env["NOTIFY_TOPIC_ARN"], reference("FleetEventsTopic"));
    assert!(
        !resource(template, "ScaleToZeroFunction")["Properties"]["DeadLetterConfig"]["TargetArn"]
            .is_null(),
        "asynchronous failures of scale-to-zero go to a dead-letter queue"
    );
}

#[test]
fn wake_requests_reach_scale_to_zero_on_the_stacks_own_bus_and_topic() {
    use scale_to_zero::wake::{EVENT_DETAIL_TYPE, EVENT_SOURCE};
    let template = default_template();
    // The rule listens on the stack's own bus (never the default one, which every stage of
    // the account shares) for exactly the backend's Jobs Queued events.
    let rule = &resource(template, "ScaleToZeroFunctionJobsQueued")["Properties"];
    assert_eq!(rule["EventBusName"], get_att("WakeEventBus", "Name"));
    assert_eq!(
        rule["EventPattern"],
        json!({"source": [EVENT_SOURCE], "detail-type": [EVENT_DETAIL_TYPE]})
    );
    let bus = resource(template, "WakeEventBus");
    assert_eq!(bus["Type"], "AWS::Events::EventBus");
    let bus_name = resolved(
        &stack_template("orch-a"),
        &resource(&stack_template("orch-a"), "WakeEventBus")["Properties"]["Name"],
    );
    assert_eq!(bus_name, json!("orch-a-backend"));
    let targets = one_or_many(&rule["Targets"]);
    assert_eq!(targets.len(), 1);
    let target = targets[0];
    assert_eq!(target["Arn"], get_att("ScaleToZeroFunction", "Arn"));
    // Its dead letters go to the event DLQ (alarmed), which lets this rule write to it.
    assert_eq!(
        target["DeadLetterConfig"]["Arn"],
        get_att("EventDeadLetterQueue", "Arn")
    );
    assert_eq!(target["RetryPolicy"]["MaximumEventAgeInSeconds"], 60);
    let dlq_policy =
        &resource(template, "EventDeadLetterQueuePolicy")["Properties"]["PolicyDocument"];
    assert!(
        one_or_many(&dlq_policy["Statement"][0]["Condition"]["ArnEquals"]["aws:SourceArn"])
            .contains(&&get_att("ScaleToZeroFunctionJobsQueued", "Arn")),
        "{dlq_policy}"
    );
    // No other rule of the stack takes Jobs Queued, on any bus.
    let jobs_queued: Vec<_> = of_type(template, "AWS::Events::Rule")
        .into_iter()
        .filter(|(_, r)| r["Properties"]["EventPattern"]["source"] == json!([EVENT_SOURCE]))
        .map(|(id, _)| id.as_str())
        .collect();
    assert_eq!(jobs_queued, ["ScaleToZeroFunctionJobsQueued"]);
    // Invoked only by that rule and the wake topic, each named with this account.
    let invokers: BTreeMap<String, Value> = of_type(template, "AWS::Lambda::Permission")
        .into_iter()
        .filter(|(id, _)| id.contains("JobsQueued") || id.contains("WakeTopic"))
        .map(|(_, p)| {
            (
                p["Properties"]["Principal"].as_str().unwrap().to_owned(),
                p["Properties"]["SourceArn"].clone(),
            )
        })
        .collect();
    assert_eq!(
        invokers,
        BTreeMap::from([
            (
                "events.amazonaws.com".to_owned(),
                get_att("ScaleToZeroFunctionJobsQueued", "Arn")
            ),
            ("sns.amazonaws.com".to_owned(), reference("WakeTopic")),
        ])
    );
    // The gate waits for the wiring nothing else waits for.
    let gate = depends_on(template, "DeployGate");
    for id in [
        "ScaleToZeroFunctionJobsQueuedPermission",
        "ScaleToZeroFunctionWakeTopic",
        "ScaleToZeroFunctionWakeTopicPermission",
        "WakeSenderPolicy",
    ] {
        assert!(gate.contains(id), "DeployGate does not wait for {id}");
    }
    for output in ["WakeEventBusName", "WakeTopicArn", "WakeSenderPolicyArn"] {
        assert!(
            !template["Outputs"][output].is_null(),
            "output {output} is missing"
        );
    }
}

#[test]
fn the_backends_wake_policy_allows_the_three_wake_paths_of_its_own_stack_only() {
    use scale_to_zero::wake::{EVENT_DETAIL_TYPE, EVENT_SOURCE};
    let template = stack_template("orch-a");
    let policy = resource(&template, "WakeSenderPolicy");
    assert_eq!(policy["Type"], "AWS::IAM::ManagedPolicy");
    // No role of the stack carries it: it is for the backend's role, outside the stack.
    for (id, role) in of_type(&template, "AWS::IAM::Role") {
        assert!(
            !role["Properties"]["ManagedPolicyArns"]
                .to_string()
                .contains("WakeSenderPolicy"),
            "{id}"
        );
    }
    let statements = resolved(
        &template,
        &policy["Properties"]["PolicyDocument"]["Statement"],
    );
    let statements = statements.as_array().expect("statements");
    let granted: BTreeSet<String> = statements.iter().flat_map(actions).collect();
    assert_eq!(
        granted,
        ["events:PutEvents", "lambda:InvokeFunction", "sns:Publish"]
            .map(String::from)
            .into()
    );
    let bus = resolved(&template, &get_att("WakeEventBus", "Arn"));
    let bus = bus.as_str().unwrap();
    let topic = resolved(&template, &reference("WakeTopic"));
    let topic = topic.as_str().unwrap();
    let function = resolved(&template, &get_att("ScaleToZeroFunction", "Arn"));
    let function = function.as_str().unwrap();
    let put = |bus: &str, source: &str, detail_type: &str| {
        Request::new("events:PutEvents", bus)
            .with("events:source", source)
            .with("events:detail-type", detail_type)
    };
    let default_bus = "arn:aws:events:us-east-1:123456789012:event-bus/default";
    let idle_topic = resolved(&template, &reference("IdleAlarmTopic"));
    let other_function = resolved(&template, &get_att("SpotInterruptionFunction", "Arn"));
    for (request, expected) in [
        (put(bus, EVENT_SOURCE, EVENT_DETAIL_TYPE), true),
        (Request::new("sns:Publish", topic), true),
        (Request::new("lambda:InvokeFunction", function), true),
        (put(default_bus, EVENT_SOURCE, EVENT_DETAIL_TYPE), false),
        (put(bus, "aws.ec2", EVENT_DETAIL_TYPE), false),
        (put(bus, EVENT_SOURCE, "Scheduled Event"), false),
        (
            Request::new("sns:Publish", idle_topic.as_str().unwrap()),
            false,
        ),
        (
            Request::new("lambda:InvokeFunction", other_function.as_str().unwrap()),
            false,
        ),
    ] {
        assert_eq!(allowed(statements, &request), expected, "{request:?}");
    }
}

#[test]
fn spot_interruption_gets_the_three_ec2_and_autoscaling_events() {
    let template = default_template();
    let mut detail_types: Vec<(String, String)> =
        rules_targeting(template, "SpotInterruptionFunction")
            .into_iter()
            .map(|(_, rule)| {
                let pattern = &rule["Properties"]["EventPattern"];
                (
                    pattern["source"][0].as_str().unwrap().to_owned(),
                    pattern["detail-type"][0].as_str().unwrap().to_owned(),
                )
            })
            .collect();
    detail_types.sort();
    assert_eq!(
        detail_types,
        vec![
            (
                "aws.autoscaling".into(),
                "EC2 Instance-terminate Lifecycle Action".into()
            ),
            (
                "aws.ec2".into(),
                "EC2 Instance Rebalance Recommendation".into()
            ),
            (
                "aws.ec2".into(),
                "EC2 Spot Instance Interruption Warning".into()
            ),
        ]
    );
    let env = env_vars(template, "SpotInterruptionFunction");
    assert_eq!(env["FLEET_TOPIC_ARN"], reference("FleetEventsTopic"));
    assert!(env.contains_key("METRIC_NAMESPACE"));

    // The groups must have the terminate hook, or the lifecycle events never fire.
    for (id, group) in of_type(template, "AWS::AutoScaling::AutoScalingGroup") {
        let hooks = group["Properties"]["LifecycleHookSpecificationList"].to_string();
        assert!(
            hooks.contains("autoscaling:EC2_INSTANCE_TERMINATING"),
            "{id}: {hooks}"
        );
    }
}

#[test]
fn spot_interruption_keeps_its_progress_in_a_table_only_it_uses_until_its_retries_are_over() {
    use spot_interruption::progress_table::{EXPIRES_ATTRIBUTE, KEY_ATTRIBUTE, RECORD_TTL_SECONDS};
    let template = default_template();
    let env = env_vars(template, "SpotInterruptionFunction");
    assert_eq!(env["PROGRESS_TABLE"], reference("SpotProgressTable"));
    let table = resource(template, "SpotProgressTable");
    assert_eq!(table["Type"], "AWS::DynamoDB::Table");
    let properties = &table["Properties"];
    assert_eq!(
        properties["KeySchema"],
        json!([{"AttributeName": KEY_ATTRIBUTE, "KeyType": "HASH"}])
    );
    assert_eq!(
        properties["AttributeDefinitions"],
        json!([{"AttributeName": KEY_ATTRIBUTE, "AttributeType": "S"}])
    );
    assert_eq!(
        properties["TimeToLiveSpecification"],
        json!({"AttributeName": EXPIRES_ATTRIBUTE, "Enabled": true})
    );
    assert_eq!(properties["BillingMode"], "PAY_PER_REQUEST");
    assert!(properties.get("TableName").is_none(), "generated name");

    // Lambda's retries end before a record expires, so a retry always finds it.
    let invoke_config = resource(template, "SpotInterruptionFunctionEventInvokeConfig");
    assert_eq!(
        invoke_config["Properties"]["FunctionName"],
        reference("SpotInterruptionFunction")
    );
    let max_age = invoke_config["Properties"]["MaximumEventAgeInSeconds"]
        .as_i64()
        .unwrap();
    assert!(max_age < RECORD_TTL_SECONDS, "{max_age}");
    assert_eq!(invoke_config["Properties"]["MaximumRetryAttempts"], 2);

    // Only spot-interruption reaches the table, and only it.
    let functions = of_type(template, "AWS::Lambda::Function");
    assert_eq!(functions.len(), 5);
    for (function, _) in functions {
        let dynamodb: Vec<&Value> = role_statements(template, function)
            .into_iter()
            .filter(|s| actions(s).iter().any(|a| a.starts_with("dynamodb:")))
            .collect();
        if function == "SpotInterruptionFunction" {
            assert_eq!(dynamodb.len(), 1, "{dynamodb:?}");
            assert_eq!(dynamodb[0]["Resource"], get_att("SpotProgressTable", "Arn"));
        } else {
            assert!(dynamodb.is_empty(), "{function}: {dynamodb:?}");
        }
    }
}

#[test]
fn rds_init_serves_tenant_databases_after_the_database() {
    let template = default_template();
    let custom: Vec<_> = of_type(template, "Custom::TenantDatabases");
    assert_eq!(custom.len(), 1);
    let properties = &custom[0].1["Properties"];
    assert_eq!(
        properties["ServiceToken"],
        get_att("RdsInitFunction", "Arn")
    );
    // The attachment's Ref is the secret ARN, and it exists only once the DB does.
    assert_eq!(
        properties["MasterSecretArn"],
        reference("DbMasterSecretAttachment")
    );
    assert_eq!(
        resource(template, "DbMasterSecretAttachment")["Properties"]["TargetId"],
        reference("Database")
    );
    assert_eq!(
        properties["Databases"],
        json!(["bp", "tenant_pool_1", "tenant_pool_2"])
    );
    // Through its attachment too: the secret carries the host once rds-init runs.
    assert_eq!(
        properties["Users"][0]["SecretArn"],
        reference("AppUserSecretAttachment")
    );
    assert_eq!(properties["Users"][0]["Access"], "readwrite");

    let database = &resource(template, "Database")["Properties"];
    assert_eq!(database["Engine"], "mariadb");
    assert_eq!(database["EngineVersion"], "10.11");
    assert_eq!(database["DBInstanceClass"], "db.t4g.small");
    assert_eq!(database["PubliclyAccessible"], false);
}

#[test]
fn secret_rotation_rotates_the_suites_secrets_monthly_app_user_alternating() {
    let template = default_template();
    let schedules = of_type(template, "AWS::SecretsManager::RotationSchedule");
    let secrets: BTreeSet<String> = schedules
        .iter()
        .filter(|(_, schedule)| exists(template, schedule))
        .map(|(id, schedule)| {
            let properties = &schedule["Properties"];
            assert_eq!(
                properties["RotationLambdaARN"],
                get_att("SecretRotationFunction", "Arn"),
                "{id}"
            );
            let rules = &properties["RotationRules"];
            assert!(
                rules["AutomaticallyAfterDays"] == 30 || monthly_window(rules).is_some(),
                "{id}: every 30 days or once a month: {rules}"
            );
            properties["SecretId"]["Ref"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        secrets,
        [
            "AppUserSecretAttachment",
            "DbMasterSecretAttachment",
            "FleetSecret",
            "RedisAuthTokenSecret"
        ]
        .map(String::from)
        .into()
    );
    let app_secret = resource(template, "AppUserSecret")["Properties"]["GenerateSecretString"]
        ["SecretStringTemplate"]
        .to_string();
    assert!(app_secret.contains("masterarn"), "{app_secret}");
    assert!(app_secret.contains("DbMasterSecret"), "{app_secret}");

    let invoke = of_type(template, "AWS::Lambda::Permission")
        .into_iter()
        .any(|(_, p)| {
            p["Properties"]["Principal"] == "secretsmanager.amazonaws.com"
                && p["Properties"]["FunctionName"] == get_att("SecretRotationFunction", "Arn")
        });
    assert!(invoke, "Secrets Manager may invoke the rotation function");
}

#[test]
fn deploy_gate_is_optional_and_publishes_to_alerts() {
    let template = default_template();
    let gates = of_type(template, "Custom::DeployGate");
    assert_eq!(gates.len(), 1);
    assert_eq!(gates[0].1["Condition"], "HasGateAlarms");
    assert!(
        !evaluate(&template["Conditions"]["HasGateAlarms"]),
        "no gate without GateAlarmNames: {}",
        template["Conditions"]["HasGateAlarms"]
    );
    assert_eq!(
        env_vars(template, "DeployGateFunction")["ALERT_TOPIC_ARN"],
        reference("AlertsTopic")
    );

    let gated = render(&["GateAlarmNames=api-5xx,api-latency"]);
    let gates = of_type(&gated, "Custom::DeployGate");
    assert_eq!(gates.len(), 1);
    let properties = &gates[0].1["Properties"];
    assert_eq!(
        properties["ServiceToken"],
        get_att("DeployGateFunction", "Arn")
    );
    assert_eq!(gates[0].1["Condition"], "HasGateAlarms");
    assert!(
        evaluate(&gated["Conditions"]["HasGateAlarms"]),
        "GateAlarmNames set -> gate"
    );
}

#[test]
fn deploy_gate_reads_the_status_of_its_own_stack_only() {
    let template = default_template();
    // Any grant of a CloudFormation action, anywhere: only the gate's DescribeStacks.
    let grants: Vec<(String, &Value)> = iam_statements(template)
        .into_iter()
        .filter(|(_, s)| actions(s).iter().any(|a| a.starts_with("cloudformation:")))
        .collect();
    assert_eq!(grants.len(), 1, "{grants:?}");
    let (policy, statement) = &grants[0];
    assert!(policy.starts_with("DeployGateFunctionRole/"), "{policy}");
    assert_eq!(statement["Effect"], "Allow");
    assert_eq!(actions(statement), ["cloudformation:DescribeStacks"]);
    // (The local render fills in the stack's id: arn:…:stack/<name>/<guid>.)
    let resource = statement["Resource"].as_str().unwrap_or_default();
    assert!(
        resource
            .starts_with("arn:aws:cloudformation:us-east-1:123456789012:stack/orchestrator-suite/")
            && !resource.contains('*'),
        "{policy}: scoped to the stack the gate belongs to: {resource}"
    );
    assert!(
        role_statements(template, "DeployGateFunction").contains(statement),
        "the function's own role has it"
    );
}

#[test]
fn only_the_two_database_functions_run_in_the_private_subnets() {
    let template = default_template();
    let private = json!([reference("PrivateSubnetA"), reference("PrivateSubnetB")]);
    for function in FUNCTIONS {
        let vpc = &resource(template, function)["Properties"]["VpcConfig"];
        if matches!(function, "RdsInitFunction" | "SecretRotationFunction") {
            assert_eq!(vpc["SubnetIds"], private, "{function}");
            assert_eq!(
                vpc["SecurityGroupIds"],
                json!([reference("FunctionSecurityGroup")]),
                "{function}"
            );
        } else {
            assert!(vpc.is_null(), "{function} must not run in the VPC: {vpc}");
        }
    }
    // Private means: out through the NAT gateway, not the internet gateway.
    let routes = of_type(template, "AWS::EC2::Route");
    assert!(routes.iter().any(|(_, r)| {
        r["Properties"]["RouteTableId"] == reference("PrivateRouteTable")
            && r["Properties"]["NatGatewayId"] == reference("NatGateway")
    }));
    // The database accepts 3306 from the functions' group and nothing else.
    let ingress: Vec<_> = of_type(template, "AWS::EC2::SecurityGroupIngress")
        .into_iter()
        .filter(|(_, r)| r["Properties"]["GroupId"] == reference("DatabaseSecurityGroup"))
        .collect();
    assert_eq!(ingress.len(), 1);
    let rule = &ingress[0].1["Properties"];
    assert_eq!(
        rule["SourceSecurityGroupId"],
        reference("FunctionSecurityGroup")
    );
    assert_eq!(
        (rule["FromPort"].as_u64(), rule["ToPort"].as_u64()),
        (Some(3306), Some(3306))
    );
    assert!(
        resource(template, "DatabaseSecurityGroup")["Properties"]["SecurityGroupIngress"].is_null()
    );
}

#[test]
fn auto_scaling_writes_require_the_managed_and_the_stack_tag() {
    let template = default_template();
    let mut seen = BTreeSet::new();
    for (policy, statement) in iam_statements(template) {
        for action in actions(statement) {
            if !action.starts_with("autoscaling:") || is_read_only(&action) {
                continue;
            }
            let tags = &statement["Condition"]["StringEquals"];
            assert_eq!(
                tags["autoscaling:ResourceTag/orchestrator:managed"], "true",
                "{policy}: {action} without the orchestrator:managed=true condition: {statement}"
            );
            assert_eq!(
                tags["autoscaling:ResourceTag/orchestrator:stack"],
                reference("AWS::StackName"),
                "{policy}: {action} without the orchestrator:stack=<stack> condition: {statement}"
            );
            seen.insert(action);
        }
    }
    for action in [
        "autoscaling:SetDesiredCapacity",
        "autoscaling:DetachInstances",
        "autoscaling:CompleteLifecycleAction",
        "autoscaling:SetInstanceProtection",
        "autoscaling:RecordLifecycleActionHeartbeat",
    ] {
        assert!(
            seen.contains(action),
            "{action} is granted somewhere: {seen:?}"
        );
    }
}

#[test]
fn no_policy_grants_a_write_action_on_star_without_a_condition() {
    let template = default_template();
    let statements = iam_statements(template);
    assert!(
        statements.len() >= 10,
        "policies were found: {}",
        statements.len()
    );
    for (policy, statement) in statements {
        if statement["Effect"] != "Allow" || !statement["Condition"].is_null() {
            continue;
        }
        let on_star = one_or_many(&statement["Resource"])
            .iter()
            .any(|resource| resource.as_str() == Some("*"));
        if !on_star {
            continue;
        }
        for action in actions(statement) {
            assert!(
                is_read_only(&action),
                "{policy}: {action} on \"*\" without a condition: {statement}"
            );
        }
    }
}

#[test]
fn the_only_managed_policies_are_the_lambda_service_ones() {
    let template = default_template();
    for (id, role) in of_type(template, "AWS::IAM::Role") {
        for arn in role["Properties"]["ManagedPolicyArns"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let arn = arn.to_string();
            assert!(
                arn.ends_with("policy/service-role/AWSLambdaBasicExecutionRole\"")
                    || arn.ends_with("policy/service-role/AWSLambdaVPCAccessExecutionRole\""),
                "{id}: unexpected managed policy {arn}"
            );
        }
    }
}

#[test]
fn metric_writes_and_secret_access_are_scoped() {
    let template = default_template();
    for (policy, statement) in iam_statements(template) {
        let actions = actions(statement);
        if actions.iter().any(|a| a == "cloudwatch:PutMetricData") {
            assert!(
                !statement["Condition"]["StringEquals"]["cloudwatch:namespace"].is_null(),
                "{policy}: PutMetricData without a namespace condition"
            );
        }
        let secret_actions: Vec<_> = actions
            .iter()
            .filter(|a| {
                a.starts_with("secretsmanager:") && *a != "secretsmanager:GetRandomPassword"
            })
            .collect();
        // A team's secrets: read only, and only those tagged for this stack's rds-init.
        let tagged_for_this_stack = secret_actions == ["secretsmanager:GetSecretValue"]
            && statement["Condition"]["StringEquals"]["secretsmanager:ResourceTag/orchestrator:rds-init"]
                == reference("AWS::StackName");
        if !secret_actions.is_empty() && !tagged_for_this_stack {
            for resource in one_or_many(&statement["Resource"]) {
                assert!(
                    [
                        "DbMasterSecret",
                        "AppUserSecret",
                        "FleetSecret",
                        "RedisAuthTokenSecret",
                    ]
                    .iter()
                    .any(|secret| *resource == reference(secret)),
                    "{policy}: {secret_actions:?} on {resource} (only the suite's secrets)"
                );
            }
        }
    }
    // The namespaces are the ones the functions write to: by default one per stack.
    let template = stack_template("orch-a");
    let namespace_of = |function: &str| {
        role_statements(&template, function)
            .into_iter()
            .find(|s| actions(s).iter().any(|a| a == "cloudwatch:PutMetricData"))
            .map(|s| {
                resolved(
                    &template,
                    &s["Condition"]["StringEquals"]["cloudwatch:namespace"],
                )
            })
    };
    // spot-interruption writes EMF to stdout: no PutMetricData at all.
    assert_eq!(namespace_of("SpotInterruptionFunction"), None);
    for (function, variable, namespace) in [
        (
            "ScaleToZeroFunction",
            "QUEUE_METRIC_NAMESPACE",
            "Orchestrator/orch-a/Queue",
        ),
        (
            "SpotInterruptionFunction",
            "METRIC_NAMESPACE",
            "Orchestrator/orch-a/Fleet",
        ),
    ] {
        if function == "ScaleToZeroFunction" {
            assert_eq!(namespace_of(function), Some(json!(namespace)), "{function}");
        }
        assert_eq!(
            resolved(&template, &env_vars(&template, function)[variable]),
            json!(namespace),
            "{function}"
        );
    }
    let given = stack_template_with("orch-a", &["QueueMetricNamespace=Backend/Jobs"]);
    assert_eq!(
        resolved(
            &given,
            &env_vars(&given, "ScaleToZeroFunction")["QUEUE_METRIC_NAMESPACE"]
        ),
        json!("Backend/Jobs"),
        "a namespace given as a parameter is used as it is"
    );
}

#[test]
fn eventbridge_targets_have_a_dead_letter_queue_and_a_retry_policy() {
    let template = default_template();
    let rules = of_type(template, "AWS::Events::Rule");
    assert!(
        rules.len() >= 4,
        "schedule + three EC2/ASG rules: {}",
        rules.len()
    );
    let dlq_arn = get_att("EventDeadLetterQueue", "Arn");
    for (id, rule) in &rules {
        for target in one_or_many(&rule["Properties"]["Targets"]) {
            assert_eq!(target["DeadLetterConfig"]["Arn"], dlq_arn, "{id}");
            assert!(
                target["RetryPolicy"]["MaximumRetryAttempts"].is_u64(),
                "{id}"
            );
        }
    }
    // EventBridge may write to the queue, for exactly these rules.
    let policy = &resource(template, "EventDeadLetterQueuePolicy")["Properties"]["PolicyDocument"];
    let allowed: BTreeSet<String> =
        one_or_many(&policy["Statement"][0]["Condition"]["ArnEquals"]["aws:SourceArn"])
            .into_iter()
            .map(|arn| arn["Fn::GetAtt"][0].as_str().unwrap().to_owned())
            .collect();
    let rule_ids: BTreeSet<String> = rules.iter().map(|(id, _)| (*id).clone()).collect();
    assert_eq!(allowed, rule_ids);
    // Every dead-letter queue has a depth alarm on the P1 topic (events lost).
    for queue in ["EventDeadLetterQueue", "FunctionDeadLetterQueue"] {
        let alarmed = of_type(template, "AWS::CloudWatch::Alarm")
            .into_iter()
            .any(|(_, a)| {
                a["Properties"]["Dimensions"][0]["Value"] == get_att(queue, "QueueName")
                    && a["Properties"]["AlarmActions"] == json!([reference("AlertsP1Topic")])
            });
        assert!(alarmed, "{queue} has a depth alarm");
    }
}

/// One launch template, group, scaling policy and idle alarm per workflow, tagged and wired.
fn assert_one_group_and_alarm_per_workflow(template: &Value, workflows: &[&str]) {
    let groups = of_type(template, "AWS::AutoScaling::AutoScalingGroup");
    assert_eq!(groups.len(), workflows.len(), "groups: {groups:?}");
    let idle_alarms: Vec<_> = of_type(template, "AWS::CloudWatch::Alarm")
        .into_iter()
        .filter(|(_, a)| a["Properties"]["AlarmActions"] == json!([reference("IdleAlarmTopic")]))
        .collect();
    assert_eq!(idle_alarms.len(), workflows.len(), "idle alarms");
    assert_eq!(
        of_type(template, "AWS::AutoScaling::ScalingPolicy").len(),
        workflows.len()
    );
    for workflow in workflows {
        let group = &resource(template, &format!("WorkerGroup{workflow}"))["Properties"];
        assert_eq!(group["MinSize"], "0", "{workflow}");
        assert_eq!(group["CapacityRebalance"], true, "{workflow}");
        let distribution = &group["MixedInstancesPolicy"]["InstancesDistribution"];
        assert_eq!(distribution["OnDemandBaseCapacity"], 0, "{workflow}");
        assert_eq!(
            distribution["OnDemandPercentageAboveBaseCapacity"], 0,
            "{workflow}: 100% Spot"
        );
        let tags = group["Tags"].as_array().expect("Tags");
        for (key, value) in [
            ("orchestrator:managed", "true"),
            ("orchestrator:workflow", *workflow),
        ] {
            assert!(
                tags.iter().any(|t| t["Key"] == key
                    && t["Value"] == value
                    && t["PropagateAtLaunch"] == true),
                "{workflow}: tag {key}={value} propagated at launch: {tags:?}"
            );
        }
        let alarm = &resource(template, &format!("WorkerIdleAlarm{workflow}"))["Properties"];
        assert_eq!(alarm["MetricName"], "QueueDepth", "{workflow}");
        assert_eq!(alarm["Dimensions"][0]["Value"], *workflow, "{workflow}");
        assert_eq!(alarm["Threshold"], 0, "{workflow}");
        assert_eq!(alarm["ComparisonOperator"], "LessThanOrEqualToThreshold");
        let minutes =
            alarm["Period"].as_u64().unwrap() * alarm["EvaluationPeriods"].as_u64().unwrap();
        assert_eq!(minutes, 15 * 60, "{workflow}: 15 minutes");
        assert_eq!(alarm["TreatMissingData"], "notBreaching", "{workflow}");

        let policy = &resource(template, &format!("WorkerBacklogPolicy{workflow}"))["Properties"];
        let metric = &policy["TargetTrackingConfiguration"]["CustomizedMetricSpecification"];
        assert_eq!(metric["MetricName"], "BacklogPerInstance", "{workflow}");
        assert_eq!(metric["Dimensions"][0]["Value"], *workflow, "{workflow}");
    }
}

#[test]
fn one_spot_group_and_idle_alarm_per_default_workflow() {
    assert_one_group_and_alarm_per_workflow(default_template(), &["img2vid", "vid2vid"]);
}

#[test]
fn three_workflows_give_three_groups_and_alarms() {
    let template = render(&["Workflows=img2vid,vid2vid,txt2img"]);
    assert_one_group_and_alarm_per_workflow(&template, &["img2vid", "vid2vid", "txt2img"]);
    let outputs = template["Outputs"].as_object().expect("Outputs");
    for workflow in ["img2vid", "vid2vid", "txt2img"] {
        assert!(
            outputs.contains_key(&format!("WorkerGroup{workflow}Name")),
            "{workflow}"
        );
    }
}

#[test]
fn function_errors_alarm_on_the_p2_topic_and_throttles_on_the_p3_topic() {
    let template = default_template();
    for function in FUNCTIONS {
        for (metric, topic) in [("Errors", "AlertsP2Topic"), ("Throttles", "AlertsP3Topic")] {
            let alarm = &resource(template, &format!("{function}{metric}"))["Properties"];
            assert_eq!(alarm["MetricName"], metric);
            let dimension = &alarm["Dimensions"][0]["Value"];
            assert!(
                refers_to(dimension, function),
                "{function}{metric}: {dimension}"
            );
            assert_eq!(alarm["AlarmActions"], json!([reference(topic)]));
        }
    }
    let rotation_failed = &resource(template, "RotationFailedRule")["Properties"];
    assert_eq!(
        rotation_failed["Targets"][0]["Arn"],
        reference("AlertsP2Topic")
    );
}

#[test]
fn fleet_functions_know_their_stack_and_every_group_carries_it() {
    let template = default_template();
    for function in ["ScaleToZeroFunction", "SpotInterruptionFunction"] {
        assert_eq!(
            env_vars(template, function)["ORCHESTRATOR_STACK"],
            reference("AWS::StackName"),
            "{function}"
        );
    }
    let groups = of_type(template, "AWS::AutoScaling::AutoScalingGroup");
    assert!(!groups.is_empty());
    for (id, group) in groups {
        let tags = group["Properties"]["Tags"].as_array().expect("Tags");
        assert!(
            tags.iter().any(|t| t["Key"] == "orchestrator:stack"
                && t["Value"] == reference("AWS::StackName")
                && t["PropagateAtLaunch"] == true),
            "{id}: orchestrator:stack=<stack name>, propagated at launch: {tags:?}"
        );
    }
}

/// Every name a stack gives a resource, and every metric namespace it uses, from a template
/// rendered for `stack_name` with `overrides`, resolved.
fn names_and_namespaces(stack_name: &str, overrides: &[&str]) -> BTreeSet<String> {
    let template = stack_template_with(stack_name, overrides);
    let mut names = BTreeSet::new();
    let mut add = |value: &Value| {
        if value.is_null() {
            return;
        }
        let value = resolved(&template, value);
        let text = value
            .as_str()
            .unwrap_or_else(|| panic!("not a name: {value}"));
        if !text.starts_with("AWS/") {
            names.insert(text.to_owned());
        }
    };
    for (kind, pointers) in [
        ("AWS::CloudWatch::Alarm", &["/AlarmName", "/Namespace"][..]),
        (
            "AWS::AutoScaling::AutoScalingGroup",
            &["/AutoScalingGroupName"],
        ),
        ("AWS::EC2::LaunchTemplate", &["/LaunchTemplateName"]),
        ("AWS::SQS::Queue", &["/QueueName"]),
        ("AWS::SNS::Topic", &["/TopicName"]),
        ("AWS::Events::EventBus", &["/Name"]),
        ("AWS::SecretsManager::Secret", &["/Name"]),
        (
            "AWS::AutoScaling::ScalingPolicy",
            &["/TargetTrackingConfiguration/CustomizedMetricSpecification/Namespace"],
        ),
        (
            "AWS::Lambda::Function",
            &[
                "/Environment/Variables/QUEUE_METRIC_NAMESPACE",
                "/Environment/Variables/METRIC_NAMESPACE",
            ],
        ),
    ] {
        for (_, resource) in of_type(&template, kind) {
            for pointer in pointers {
                add(resource["Properties"]
                    .pointer(pointer)
                    .unwrap_or(&Value::Null));
            }
        }
    }
    names
}

#[test]
fn two_stacks_share_no_name_or_namespace_but_the_secrets_of_the_same_prefix_and_stage() {
    let a = names_and_namespaces("orch-a", &[]);
    let b = names_and_namespaces("orch-b", &[]);
    assert!(a.len() >= 20, "names found: {a:?}");
    // The secrets follow the architecture's /<prefix>/<stage>/… layout, not the stack: two
    // stacks with the same prefix and stage claim the same secrets (the second stack fails to
    // create, docs/several-stacks.md says so), and nothing else.
    let shared: BTreeSet<&String> = a.intersection(&b).collect();
    let secrets: BTreeSet<&String> = a.iter().filter(|n| n.starts_with("/bp/dev/")).collect();
    assert_eq!(secrets.len(), 6, "{secrets:?}");
    assert_eq!(
        shared, secrets,
        "stacks orch-a and orch-b would collide on more than their secrets"
    );
    for other in [
        names_and_namespaces("orch-b", &["Stage=staging"]),
        names_and_namespaces("orch-b", &["SecretPathPrefix=crm"]),
    ] {
        let shared: Vec<_> = a.intersection(&other).collect();
        assert!(
            shared.is_empty(),
            "stacks with another stage or prefix would collide on {shared:?}"
        );
    }
    for expected in [
        "Orchestrator/orch-a/Queue",
        "Orchestrator/orch-a/Fleet",
        "orch-a-img2vid-idle",
    ] {
        assert!(a.contains(expected), "{expected} in {a:?}");
    }
}

const GROUP_ARN: &str = "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:6d1e7b0c-1111-2222-3333-444455556666:autoScalingGroupName/orch-a-img2vid";

/// A call on an Auto Scaling group carrying `tags`.
fn on_group(action: &str, tags: &[(&str, &str)]) -> Request {
    Request::new(action, GROUP_ARN).with_resource_tags("autoscaling", tags.iter().copied())
}

fn allowed(statements: &[Value], request: &Request) -> bool {
    iam::evaluate(statements, request)
        .unwrap_or_else(|e| panic!("{request:?}: {e}"))
        .is_allowed()
}

const OURS: &[(&str, &str)] = &[
    ("orchestrator:managed", "true"),
    ("orchestrator:stack", "orch-a"),
    ("orchestrator:workflow", "img2vid"),
];
const THEIRS: &[(&str, &str)] = &[
    ("orchestrator:managed", "true"),
    ("orchestrator:stack", "orch-b"),
    ("orchestrator:workflow", "img2vid"),
];
const UNMANAGED: &[(&str, &str)] = &[("orchestrator:stack", "orch-a")];

#[test]
fn fleet_functions_may_change_only_their_own_stacks_groups() {
    let template = stack_template("orch-a");
    for (function, actions) in [
        (
            "ScaleToZeroFunction",
            &["autoscaling:SetDesiredCapacity"][..],
        ),
        (
            "SpotInterruptionFunction",
            &[
                "autoscaling:DetachInstances",
                "autoscaling:CompleteLifecycleAction",
            ],
        ),
    ] {
        let role = resolved(&template, &json!(role_statements(&template, function)));
        let statements = role.as_array().expect("statements");
        for action in actions {
            assert!(
                allowed(statements, &on_group(action, OURS)),
                "{function}: {action} on its own group"
            );
            for (whose, tags) in [
                ("another stack's", THEIRS),
                ("an unmanaged", UNMANAGED),
                ("an untagged", &[][..]),
            ] {
                assert!(
                    !allowed(statements, &on_group(action, tags)),
                    "{function}: {action} on {whose} group"
                );
            }
        }
    }
}

#[test]
fn the_worker_role_allows_the_worker_contract_on_its_own_stack_only() {
    let template = stack_template("orch-a");
    let role = json!({"Properties": resolved(&template, &resource(&template, "WorkerRole")["Properties"])});
    let statements = iam::role_statements(&role);
    let contract = [
        "autoscaling:SetInstanceProtection",
        "autoscaling:RecordLifecycleActionHeartbeat",
        "autoscaling:CompleteLifecycleAction",
    ];
    for action in contract {
        assert!(
            allowed(&statements, &on_group(action, OURS)),
            "{action} on its own group"
        );
        assert!(
            !allowed(&statements, &on_group(action, THEIRS)),
            "{action} on another stack's group"
        );
        assert!(
            !allowed(&statements, &on_group(action, UNMANAGED)),
            "{action} on an unmanaged group"
        );
    }
    for action in [
        "autoscaling:SetDesiredCapacity",
        "autoscaling:DetachInstances",
        "autoscaling:UpdateAutoScalingGroup",
    ] {
        assert!(
            !allowed(&statements, &on_group(action, OURS)),
            "a worker must not {action}"
        );
    }
    assert!(allowed(
        &statements,
        &Request::new("autoscaling:DescribeAutoScalingInstances", "*")
    ));
    // The fleet secret, and no other.
    let fleet_secret = resolved(&template, &reference("FleetSecret"));
    let fleet_secret = fleet_secret.as_str().unwrap();
    assert!(allowed(
        &statements,
        &Request::new("secretsmanager:GetSecretValue", fleet_secret)
    ));
    for other in ["AppUserSecret", "DbMasterSecret"] {
        let arn = resolved(&template, &reference(other));
        assert!(
            !allowed(
                &statements,
                &Request::new("secretsmanager:GetSecretValue", arn.as_str().unwrap())
            ),
            "a worker must not read {other}"
        );
    }
    // Its own queue, subscribed to the fleet topic; nobody else's.
    let own_queue = "arn:aws:sqs:us-east-1:123456789012:orch-a-worker-i-0abc";
    let other_queue = "arn:aws:sqs:us-east-1:123456789012:orch-b-worker-i-0abc";
    for action in [
        "sqs:CreateQueue",
        "sqs:SetQueueAttributes",
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:DeleteQueue",
    ] {
        assert!(
            allowed(&statements, &Request::new(action, own_queue)),
            "{action} on its own queue"
        );
        assert!(
            !allowed(&statements, &Request::new(action, other_queue)),
            "{action} on another stack's queue"
        );
    }
    let topic = resolved(&template, &reference("FleetEventsTopic"));
    let subscribe = |protocol: &str, endpoint: &str| {
        Request::new("sns:Subscribe", topic.as_str().unwrap())
            .with("sns:Protocol", protocol)
            .with("sns:Endpoint", endpoint)
    };
    assert!(allowed(&statements, &subscribe("sqs", own_queue)));
    assert!(!allowed(&statements, &subscribe("sqs", other_queue)));
    assert!(!allowed(
        &statements,
        &subscribe("https", "https://example.invalid/hook")
    ));
    let alerts = resolved(&template, &reference("AlertsTopic"));
    assert!(!allowed(
        &statements,
        &Request::new("sns:Subscribe", alerts.as_str().unwrap())
            .with("sns:Protocol", "sqs")
            .with("sns:Endpoint", own_queue)
    ));
    let subscription = "arn:aws:sns:us-east-1:123456789012:orch-a-fleet-events:3f1c2a9e";
    assert!(allowed(
        &statements,
        &Request::new("sns:Unsubscribe", subscription)
    ));
    let elsewhere = "arn:aws:sns:us-east-1:123456789012:orch-b-fleet-events:3f1c2a9e";
    assert!(!allowed(
        &statements,
        &Request::new("sns:Unsubscribe", elsewhere)
    ));
    // Nothing beyond the contract: every action granted is one of these.
    let granted: BTreeSet<String> = statements.iter().flat_map(actions).collect();
    let known: BTreeSet<String> = [
        "autoscaling:DescribeAutoScalingInstances",
        "autoscaling:SetInstanceProtection",
        "autoscaling:RecordLifecycleActionHeartbeat",
        "autoscaling:CompleteLifecycleAction",
        "secretsmanager:GetSecretValue",
        "secretsmanager:DescribeSecret",
        "sqs:CreateQueue",
        "sqs:GetQueueUrl",
        "sqs:GetQueueAttributes",
        "sqs:SetQueueAttributes",
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:DeleteQueue",
        "sns:Subscribe",
        "sns:Unsubscribe",
    ]
    .map(String::from)
    .into();
    assert_eq!(
        granted, known,
        "WorkerRole grants exactly the worker contract"
    );
}

/// The secrets whose first value CloudFormation generates.
const GENERATED_SECRETS: [&str; 4] = [
    "DbMasterSecret",
    "AppUserSecret",
    "FleetSecret",
    "LaravelAppKeySecret",
];

/// The values secret-rotation's generic engine knows for `format` (the contract in
/// DESIGN.md: `password` by default, `laravel-app-key`, `hex` and `base64`).
const GENERIC_FORMATS: [&str; 4] = ["password", "laravel-app-key", "hex", "base64"];

/// The JSON a generated secret starts with (its SecretStringTemplate) and its
/// GenerateSecretString.
fn generated_document<'a>(template: &'a Value, logical_id: &str) -> (Value, &'a Value) {
    let spec = &resource(template, logical_id)["Properties"]["GenerateSecretString"];
    let document = serde_json::from_str(
        spec["SecretStringTemplate"]
            .as_str()
            .unwrap_or_else(|| panic!("{logical_id}: no SecretStringTemplate")),
    )
    .unwrap_or_else(|e| panic!("{logical_id}: SecretStringTemplate is not JSON: {e}"));
    (document, spec)
}

#[test]
fn the_fleet_key_and_the_app_key_are_generic_secrets_with_their_format() {
    let template = default_template();
    let (fleet, spec) = generated_document(template, "FleetSecret");
    assert_eq!(fleet, json!({"engine": "generic", "format": "password"}));
    // The value rotation writes is of the kind CloudFormation made: same key, length and
    // excluded characters as secret-rotation's GetRandomPassword.
    let rotation = env_vars(template, "SecretRotationFunction");
    assert_eq!(spec["GenerateStringKey"], "password");
    assert_eq!(
        spec["PasswordLength"].to_string(),
        rotation["PASSWORD_LENGTH"].as_str().unwrap()
    );
    assert_eq!(spec["ExcludeCharacters"], rotation["EXCLUDE_CHARACTERS"]);
    let schedule = &resource(template, "FleetSecretRotation");
    assert_eq!(schedule["Properties"]["SecretId"], reference("FleetSecret"));
    assert_eq!(
        schedule["DependsOn"],
        json!("FleetSecretRotationPermission")
    );

    let (app_key, spec) = generated_document(template, "LaravelAppKeySecret");
    assert_eq!(
        app_key,
        json!({"engine": "generic", "format": "laravel-app-key"})
    );
    // Until a rotation writes base64:…, Laravel reads the value as a raw key: AES-256 takes
    // exactly 32 bytes, and letters and digits need no quoting in a .env file.
    assert_eq!(spec["GenerateStringKey"], "password");
    assert_eq!(spec["PasswordLength"], 32);
    assert_eq!(spec["ExcludePunctuation"], true);
    // Data in the database snapshot is only readable with it.
    let app_key_secret = resource(template, "LaravelAppKeySecret");
    assert_eq!(app_key_secret["DeletionPolicy"], "Retain");
    assert_eq!(app_key_secret["UpdateReplacePolicy"], "Retain");

    for (id, secret) in of_type(template, "AWS::SecretsManager::Secret") {
        let Some(text) =
            secret["Properties"]["GenerateSecretString"]["SecretStringTemplate"].as_str()
        else {
            continue;
        };
        let document: Value = serde_json::from_str(text).unwrap();
        if document["engine"] == "generic" {
            let format = document["format"].as_str().unwrap_or_default();
            assert!(GENERIC_FORMATS.contains(&format), "{id}: format {format:?}");
        } else {
            assert!(document.get("format").is_none(), "{id}: {document}");
        }
    }
}

/// Every secret of a [`stack_template_with`]: logical id → its name, resolved.
fn secret_names(template: &Value) -> BTreeMap<String, String> {
    of_type(template, "AWS::SecretsManager::Secret")
        .into_iter()
        .map(|(id, secret)| {
            let name = resolved(template, &secret["Properties"]["Name"]);
            (id.clone(), name.as_str().expect("a name").to_owned())
        })
        .collect()
}

#[test]
fn every_secret_is_named_under_its_prefix_and_stage() {
    for (overrides, prefix, user, providers) in [
        (&[][..], "/bp/dev/", "app", &["google"][..]),
        (
            &[
                "SecretPathPrefix=Acme.crm_1",
                "Stage=prod",
                "AppDbUsername=web",
                "OAuthProviders=google,git-hub",
            ][..],
            "/Acme.crm_1/prod/",
            "web",
            &["google", "git-hub"][..],
        ),
    ] {
        let template = stack_template_with("orch-a", overrides);
        let mut expected: BTreeMap<String, String> = [
            ("DbMasterSecret", "db/master".to_owned()),
            ("AppUserSecret", format!("db/{user}")),
            ("FleetSecret", "fleet/key".to_owned()),
            ("LaravelAppKeySecret", "laravel/app-key".to_owned()),
            ("RedisAuthTokenSecret", "redis/auth-token".to_owned()),
        ]
        .into_iter()
        .map(|(id, path)| (id.to_owned(), format!("{prefix}{path}")))
        .collect();
        for provider in providers {
            expected.insert(
                format!("OAuthSecret{}", provider.replace('-', "")),
                format!("{prefix}oauth/{provider}"),
            );
        }
        let names = secret_names(&template);
        assert_eq!(names, expected, "{overrides:?}");
        assert_eq!(
            resolved(&template, &template["Outputs"]["SecretsPath"]["Value"]),
            json!(prefix),
            "{overrides:?}"
        );
        // The workers find the fleet key by the name their group's tag gives.
        for (id, group) in of_type(&template, "AWS::AutoScaling::AutoScalingGroup") {
            let tag = group["Properties"]["Tags"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["Key"] == "orchestrator:fleet-secret" && t["PropagateAtLaunch"] == true)
                .unwrap_or_else(|| panic!("{id}: no orchestrator:fleet-secret tag"));
            assert_eq!(
                resolved(&template, &tag["Value"]),
                json!(names["FleetSecret"]),
                "{id}"
            );
        }
    }
}

#[test]
fn the_secret_parameters_refuse_what_cloudformation_or_secrets_manager_would() {
    for (value, why) in [
        ("SecretPathPrefix=", "SecretPathPrefix"),
        ("SecretPathPrefix=bp/prod", "SecretPathPrefix"),
        ("SecretPathPrefix=-bp", "SecretPathPrefix"),
        ("SecretPathPrefix=b p", "SecretPathPrefix"),
        ("SecretPathPrefix=bp!", "SecretPathPrefix"),
        ("SecretPathPrefix=bp*", "SecretPathPrefix"),
        (
            &format!("SecretPathPrefix={}x", longest_stack_name()),
            "SecretPathPrefix",
        ),
        ("OAuthProviders=", "OAuthProviders"),
        ("OAuthProviders=google,", "OAuthProviders"),
        ("OAuthProviders=Google", "OAuthProviders"),
        ("OAuthProviders=google/x", "OAuthProviders"),
        ("OAuthProviders=git-hub,github", "same logical ids"),
        ("AppKeyRotation=weekly", "AppKeyRotation"),
    ] {
        let message = refused(&[value]);
        assert!(message.contains(why), "{value}: {message}");
    }
    // Any CloudFormation stack name is a prefix (a stack made before the parameter keeps its
    // secrets with its own name), and so is every character Secrets Manager allows in a name
    // except the slash.
    for value in [longest_stack_name().as_str(), "bp", "Acme.crm_1+x=y@z-2"] {
        let template = stack_template_with("orch-a", &[&format!("SecretPathPrefix={value}")]);
        assert_eq!(
            secret_names(&template)["LaravelAppKeySecret"],
            format!("/{value}/dev/laravel/app-key")
        );
    }
}

/// A rotated secret's logical id → its schedule's rules, for the schedules that exist.
fn rotated_secrets(template: &Value) -> BTreeMap<String, Value> {
    of_type(template, "AWS::SecretsManager::RotationSchedule")
        .into_iter()
        .filter(|(_, schedule)| exists(template, schedule))
        .map(|(id, schedule)| {
            let properties = &schedule["Properties"];
            assert_eq!(
                properties["RotationLambdaARN"],
                get_att("SecretRotationFunction", "Arn"),
                "{id}"
            );
            let target = properties["SecretId"]["Ref"]
                .as_str()
                .unwrap_or_else(|| panic!("{id}: SecretId is not a Ref"));
            let secret = target.trim_end_matches("Attachment").to_owned();
            let mut rules = properties["RotationRules"].clone();
            rules["RotateImmediatelyOnUpdate"] = properties["RotateImmediatelyOnUpdate"].clone();
            (secret, rules)
        })
        .collect()
}

/// The secrets Secrets Manager may invoke secret-rotation for (the permissions that exist).
fn rotation_invokers(template: &Value) -> BTreeSet<String> {
    of_type(template, "AWS::Lambda::Permission")
        .into_iter()
        .filter(|(_, p)| {
            exists(template, p) && p["Properties"]["Principal"] == "secretsmanager.amazonaws.com"
        })
        .map(|(_, p)| {
            p["Properties"]["SourceArn"]["Ref"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[test]
fn each_secret_rotates_on_its_schedule_the_app_key_only_when_asked_oauth_never() {
    let monthly_db = |template: &Value| {
        let rotated = rotated_secrets(template);
        assert_eq!(
            monthly_window(&rotated["DbMasterSecret"]).map(|(day, ..)| day),
            Some(1)
        );
        assert_eq!(
            monthly_window(&rotated["AppUserSecret"]).map(|(day, ..)| day),
            Some(15)
        );
        assert_eq!(rotated["FleetSecret"]["AutomaticallyAfterDays"], 30);
        assert_eq!(
            rotated["RedisAuthTokenSecret"],
            json!({"ScheduleExpression": "cron(0 3 22 * ? *)", "Duration": "2h",
                   "RotateImmediatelyOnUpdate": false})
        );
        rotated
    };
    let rotated = monthly_db(default_template());
    let always: BTreeSet<String> = [
        "AppUserSecret",
        "DbMasterSecret",
        "FleetSecret",
        "RedisAuthTokenSecret",
    ]
    .map(String::from)
    .into();
    assert_eq!(
        rotated.keys().cloned().collect::<BTreeSet<_>>(),
        always,
        "by default the APP_KEY is never rotated"
    );
    assert_eq!(rotation_invokers(default_template()), always);
    assert_eq!(
        default_template()["Parameters"]["AppKeyRotation"]["Default"],
        "never"
    );

    for (value, cron) in [
        ("yearly", "cron(0 3 8 1 ? *)"),
        ("quarterly", "cron(0 3 8 1,4,7,10 ? *)"),
        ("monthly", "cron(0 3 8 * ? *)"),
    ] {
        let template = render(&[
            &format!("AppKeyRotation={value}"),
            "OAuthProviders=google,github",
        ]);
        let rotated = monthly_db(&template);
        let mut with_app_key = always.clone();
        with_app_key.insert("LaravelAppKeySecret".to_owned());
        assert_eq!(
            rotated.keys().cloned().collect::<BTreeSet<_>>(),
            with_app_key,
            "{value}"
        );
        assert_eq!(rotation_invokers(&template), with_app_key, "{value}");
        // In a night window, and never as a side effect of the deploy that turns it on.
        assert_eq!(
            rotated["LaravelAppKeySecret"],
            json!({"ScheduleExpression": cron, "Duration": "2h", "RotateImmediatelyOnUpdate": false}),
            "{value}"
        );
        assert_eq!(
            depends_on(&template, "LaravelAppKeySecretRotation"),
            ["LaravelAppKeySecretRotationPermission".to_owned()].into()
        );
        // The OAuth secrets: issued by the provider, so nothing to generate and nothing to
        // rotate; the template writes no value an update could put over the operator's.
        for provider in ["google", "github"] {
            let id = format!("OAuthSecret{provider}");
            let properties = &resource(&template, &id)["Properties"];
            assert!(properties["GenerateSecretString"].is_null(), "{id}");
            assert!(properties["SecretString"].is_null(), "{id}");
            assert!(!rotated.contains_key(&id), "{id} is rotated");
        }
    }
}

/// The secrets a role's statements name (Refs to secrets of the template), apart from the one
/// statement that reads secrets tagged for rds-init.
fn secrets_granted(template: &Value, statements: &[&Value]) -> BTreeSet<String> {
    let mut granted = BTreeSet::new();
    for statement in statements {
        let actions = actions(statement);
        if !actions
            .iter()
            .any(|a| a.starts_with("secretsmanager:") && a != "secretsmanager:GetRandomPassword")
        {
            continue;
        }
        if !statement["Condition"]["StringEquals"]["secretsmanager:ResourceTag/orchestrator:rds-init"]
            .is_null()
        {
            continue;
        }
        for resource in one_or_many(&statement["Resource"]) {
            let id = resource["Ref"]
                .as_str()
                .unwrap_or_else(|| panic!("a secret grant on {resource}, not a secret's Ref"));
            assert_eq!(
                self::resource(template, id)["Type"],
                "AWS::SecretsManager::Secret",
                "{id}"
            );
            granted.insert(id.to_owned());
        }
    }
    granted
}

#[test]
fn every_reader_of_a_secret_is_granted_exactly_the_secrets_it_reads() {
    for (overrides, rotation_reads_app_key) in [
        (&[][..], false),
        (
            &["AppKeyRotation=monthly", "OAuthProviders=google,github"][..],
            true,
        ),
    ] {
        let template = render(overrides);
        let mut rotated = vec![
            "AppUserSecret",
            "DbMasterSecret",
            "FleetSecret",
            "RedisAuthTokenSecret",
        ];
        if rotation_reads_app_key {
            rotated.push("LaravelAppKeySecret");
        }
        let worker_role: Vec<&Value> = resource(&template, "WorkerRole")["Properties"]["Policies"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| one_or_many(&p["PolicyDocument"]["Statement"]))
            .collect();
        for (reader, statements, reads) in [
            (
                "SecretRotationFunction",
                role_statements(&template, "SecretRotationFunction"),
                rotated,
            ),
            (
                "RdsInitFunction",
                role_statements(&template, "RdsInitFunction"),
                vec!["AppUserSecret", "DbMasterSecret"],
            ),
            ("WorkerRole", worker_role, vec!["FleetSecret"]),
            (
                "ScaleToZeroFunction",
                role_statements(&template, "ScaleToZeroFunction"),
                vec![],
            ),
            (
                "SpotInterruptionFunction",
                role_statements(&template, "SpotInterruptionFunction"),
                vec![],
            ),
            (
                "DeployGateFunction",
                role_statements(&template, "DeployGateFunction"),
                vec![],
            ),
        ] {
            let reads: BTreeSet<String> = reads.into_iter().map(String::from).collect();
            assert_eq!(
                secrets_granted(&template, &statements),
                reads,
                "{reader} with {overrides:?}"
            );
        }
    }
    // Evaluated on the resolved roles too: nobody in the stack reads an OAuth secret or, unless
    // it rotates, the APP_KEY (the app's own role, outside this stack, reads them).
    let template = stack_template_with("orch-a", &["OAuthProviders=google"]);
    let arn = |id: &str| {
        resolved(&template, &reference(id))
            .as_str()
            .unwrap()
            .to_owned()
    };
    let roles: Vec<(&str, Vec<Value>)> = [
        "SecretRotationFunction",
        "RdsInitFunction",
        "ScaleToZeroFunction",
        "SpotInterruptionFunction",
        "DeployGateFunction",
    ]
    .into_iter()
    .map(|f| {
        let statements = resolved(&template, &json!(role_statements(&template, f)));
        (f, statements.as_array().unwrap().clone())
    })
    .chain([(
        "WorkerRole",
        iam::role_statements(&json!({
            "Properties": resolved(&template, &resource(&template, "WorkerRole")["Properties"])
        })),
    )])
    .collect();
    for (role, statements) in &roles {
        for secret in ["OAuthSecretgoogle", "LaravelAppKeySecret"] {
            for action in [
                "secretsmanager:GetSecretValue",
                "secretsmanager:PutSecretValue",
            ] {
                assert!(
                    !allowed(statements, &Request::new(action, &arn(secret))),
                    "{role} may {action} {secret}"
                );
            }
        }
    }
}

#[test]
fn a_stack_made_before_the_prefix_keeps_its_secrets_with_its_name_as_prefix() {
    // Names and generated strings as the template before SecretPathPrefix made them
    // (/<stack>/<stage>/…): with the stack's name as the prefix, an update renames nothing,
    // so it replaces no secret, generates no new password and leaves the database's
    // MasterUsername reference as it was (a change there would replace the instance).
    for stack in ["orchestrator-suite", longest_stack_name().as_str()] {
        let template = stack_template_with(stack, &[&format!("SecretPathPrefix={stack}")]);
        let names = secret_names(&template);
        for (id, path) in [
            ("DbMasterSecret", "db/master"),
            ("AppUserSecret", "db/app"),
            ("FleetSecret", "fleet/key"),
        ] {
            assert_eq!(names[id], format!("/{stack}/dev/{path}"), "{id}");
        }
        let generated = |id: &str| {
            resolved(
                &template,
                &resource(&template, id)["Properties"]["GenerateSecretString"],
            )
        };
        assert_eq!(
            generated("DbMasterSecret"),
            json!({
                "SecretStringTemplate": r#"{"username": "admin", "engine": "mariadb"}"#,
                "GenerateStringKey": "password",
                "PasswordLength": 32,
                "ExcludeCharacters": "/@\"'\\"
            })
        );
        assert_eq!(
            generated("AppUserSecret"),
            json!({
                "SecretStringTemplate": r#"{"engine": "mariadb", "username": "app", "masterarn": "DbMasterSecret-id"}"#,
                "GenerateStringKey": "password",
                "PasswordLength": 32,
                "ExcludeCharacters": "/@\"'\\"
            })
        );
        let database = &resource(&template, "Database")["Properties"];
        for (property, key) in [
            ("MasterUsername", "username"),
            ("MasterUserPassword", "password"),
        ] {
            assert_eq!(
                database[property],
                json!({"Fn::Sub": format!("{{{{resolve:secretsmanager:${{DbMasterSecret}}:SecretString:{key}}}}}")}),
                "{property}"
            );
        }
    }
}

#[test]
fn worker_user_data_comes_from_the_parameter_and_defaults_to_none() {
    let key = "/Properties/LaunchTemplateData/UserData";
    let template = stack_template("orch-a");
    let data = resolved(
        &template,
        &resource(&template, "WorkerLaunchTemplateimg2vid")["Properties"],
    );
    assert!(
        json!({"Properties": data}).pointer(key).is_none(),
        "no UserData by default"
    );
    let script = "#!/bin/bash\nexec /opt/worker/run --stack orch-a\n";
    let template = stack_template_with("orch-a", &[&format!("WorkerUserData={script}")]);
    for workflow in ["img2vid", "vid2vid"] {
        let data = resolved(
            &template,
            &resource(&template, &format!("WorkerLaunchTemplate{workflow}"))["Properties"],
        );
        assert_eq!(
            json!({"Properties": data}).pointer(key),
            Some(&json!(
                "IyEvYmluL2Jhc2gKZXhlYyAvb3B0L3dvcmtlci9ydW4gLS1zdGFjayBvcmNoLWEK"
            )),
            "{workflow}: the script, base64-encoded"
        );
    }
}

#[test]
fn a_default_deploy_verifies_rds_with_no_tls_parameter() {
    let template = stack_template("orch-a");
    // The RDS authorities as canonical base64 bodies, to look for in the trust the function builds.
    let body = |pem: &str| -> Vec<String> {
        pem.split("-----BEGIN CERTIFICATE-----")
            .skip(1)
            .map(|block| {
                let body = block
                    .split("-----END CERTIFICATE-----")
                    .next()
                    .unwrap_or_default();
                body.split_whitespace().collect()
            })
            .collect()
    };
    let rds = body(shared::database::RDS_CA_BUNDLE);
    assert!(rds.len() >= 80, "{} RDS certificates shipped", rds.len());
    for function in ["RdsInitFunction", "SecretRotationFunction"] {
        let env = resolved(
            &template,
            &Value::Object(env_vars(&template, function).clone()),
        );
        let env = env.as_object().expect("variables");
        assert!(
            !env.contains_key("DB_CA_BUNDLE"),
            "{function}: DB_CA_BUNDLE is set by default: {env:?}"
        );
        // What the function builds at cold start from exactly that environment.
        let pairs: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                )
            })
            .collect();
        let settings = shared::database::ConnectSettings::from_env(
            &shared::env_config::EnvVars::from_pairs(pairs),
        )
        .unwrap_or_else(|e| panic!("{function}: {e}"));
        let trusted: BTreeSet<String> = body(settings.trust.pem()).into_iter().collect();
        let missing = rds.iter().filter(|c| !trusted.contains(*c)).count();
        assert_eq!(
            missing, 0,
            "{function}: {missing} RDS authorities not trusted by default"
        );
    }
    let description = template["Parameters"]["DbCaBundle"]["Description"]
        .as_str()
        .unwrap();
    assert!(
        description.contains("in addition to") && description.contains("RDS needs"),
        "DbCaBundle says it adds trust: {description}"
    );
}

/// A monthly rotation window, `cron(M H D * ? *)` with `Duration: Nh`: (day, start hour, hours).
fn monthly_window(rules: &Value) -> Option<(u32, u32, u32)> {
    let cron = rules["ScheduleExpression"].as_str()?;
    let fields: Vec<&str> = cron
        .strip_prefix("cron(")?
        .strip_suffix(')')?
        .split(' ')
        .collect();
    let [_, hour, day, "*", "?", "*"] = fields.as_slice() else {
        return None;
    };
    let hours = rules["Duration"]
        .as_str()?
        .strip_suffix('h')?
        .parse()
        .ok()?;
    Some((day.parse().ok()?, hour.parse().ok()?, hours))
}

/// A resource's `DependsOn` as a list.
fn depends_on(template: &Value, logical_id: &str) -> BTreeSet<String> {
    one_or_many(&resource(template, logical_id)["DependsOn"])
        .into_iter()
        .map(|d| d.as_str().expect("DependsOn names").to_owned())
        .collect()
}

#[test]
fn custom_resources_time_out_a_little_after_their_function() {
    let template = default_template();
    for (custom, function) in [
        ("TenantDatabasesResource", "RdsInitFunction"),
        ("DeployGate", "DeployGateFunction"),
    ] {
        let timeout = resource(template, function)["Properties"]["Timeout"]
            .as_u64()
            .expect("Timeout");
        let service_timeout = resource(template, custom)["Properties"]["ServiceTimeout"]
            .as_u64()
            .unwrap_or_else(|| panic!("{custom} has no ServiceTimeout (default: one hour)"));
        assert!(
            service_timeout > timeout && service_timeout <= timeout + 120,
            "{custom}: ServiceTimeout {service_timeout} s for a {timeout} s function"
        );
    }
}

#[test]
fn rotations_wait_for_their_permission_and_never_overlap() {
    let with_app_key = render(&["AppKeyRotation=monthly"]);
    for template in [default_template(), &with_app_key] {
        let schedules = of_type(template, "AWS::SecretsManager::RotationSchedule");
        for (id, schedule) in schedules.into_iter().filter(|(_, s)| exists(template, s)) {
            // The permission for this schedule's secret (the database secrets' schedules name
            // them through their attachments, whose Ref is the same ARN).
            let secret = match schedule["Properties"]["SecretId"]["Ref"].as_str() {
                Some(attachment) if attachment.ends_with("Attachment") => {
                    attachment.trim_end_matches("Attachment")
                }
                Some(other) => other,
                None => panic!("{id}: SecretId is not a Ref"),
            };
            let permitted = depends_on(template, id).into_iter().any(|dependency| {
                let permission = &resource(template, &dependency)["Properties"];
                permission["Principal"] == "secretsmanager.amazonaws.com"
                    && permission["SourceArn"] == reference(secret)
            });
            assert!(
                permitted,
                "{id} is created before Secrets Manager may invoke the function for {secret}"
            );
        }
    }
    let template = default_template();
    let window = |id: &str| {
        let properties = &resource(template, id)["Properties"];
        assert_eq!(
            properties["RotateImmediatelyOnUpdate"], false,
            "{id}: a rotation at create or update would run both at once"
        );
        monthly_window(&properties["RotationRules"])
            .unwrap_or_else(|| panic!("{id}: no monthly window"))
    };
    let (master_day, master_hour, master_hours) = window("DbMasterSecretRotation");
    let (app_day, app_hour, app_hours) = window("AppUserSecretRotation");
    let start = |day: u32, hour: u32| day * 24 + hour;
    let master = start(master_day, master_hour)..start(master_day, master_hour) + master_hours;
    let app = start(app_day, app_hour)..start(app_day, app_hour) + app_hours;
    assert!(
        master.end <= app.start || app.end <= master.start,
        "master {master:?} and app {app:?} (hours of the month) overlap"
    );
    assert!(depends_on(template, "AppUserSecretRotation").contains("DbMasterSecretRotation"));
}

#[test]
fn tenant_databases_wait_for_every_network_piece_they_need() {
    let template = default_template();
    let needs = depends_on(template, "TenantDatabasesResource");
    for piece in [
        "PrivateDefaultRoute",
        "PrivateSubnetARouteTable",
        "PrivateSubnetBRouteTable",
        "IsolatedSubnetARouteTable",
        "IsolatedSubnetBRouteTable",
        "S3GatewayEndpoint",
        "SecretsManagerEndpoint",
        "FunctionToDatabaseEgress",
        "DatabaseFromFunctionsIngress",
    ] {
        assert!(
            needs.contains(piece),
            "TenantDatabasesResource does not wait for {piece}"
        );
    }
    // Every security-group rule and route-table association of the template is among them,
    // except those of the public subnets (the NAT's own) which PrivateDefaultRoute waits for.
    for kind in [
        "AWS::EC2::SecurityGroupEgress",
        "AWS::EC2::SecurityGroupIngress",
        "AWS::EC2::SubnetRouteTableAssociation",
    ] {
        for (id, _) in of_type(template, kind) {
            // The cache's rules: rds-init never connects to the cache, and a DependsOn cannot
            // name a resource whose condition (RedisCache) may be false.
            let cache_rule = resource(template, id)["Condition"] == "HasRedisCache";
            assert!(
                needs.contains(id) || id.starts_with("Public") || cache_rule,
                "TenantDatabasesResource does not wait for {id}"
            );
        }
    }
}

/// The AWS SDK operations the functions may call, by the method name the Rust SDK gives them,
/// with their IAM action. A call not listed here fails the test below, so the list grows with
/// the code.
const SDK_OPERATIONS: &[(&str, &str)] = &[
    (
        "modify_replication_group",
        "elasticache:ModifyReplicationGroup",
    ),
    (
        "describe_replication_groups",
        "elasticache:DescribeReplicationGroups",
    ),
    (
        "describe_auto_scaling_groups",
        "autoscaling:DescribeAutoScalingGroups",
    ),
    (
        "describe_auto_scaling_instances",
        "autoscaling:DescribeAutoScalingInstances",
    ),
    ("set_desired_capacity", "autoscaling:SetDesiredCapacity"),
    ("detach_instances", "autoscaling:DetachInstances"),
    (
        "complete_lifecycle_action",
        "autoscaling:CompleteLifecycleAction",
    ),
    ("get_metric_data", "cloudwatch:GetMetricData"),
    ("put_metric_data", "cloudwatch:PutMetricData"),
    ("describe_alarms", "cloudwatch:DescribeAlarms"),
    ("publish", "sns:Publish"),
    ("get_secret_value", "secretsmanager:GetSecretValue"),
    ("describe_secret", "secretsmanager:DescribeSecret"),
    ("put_secret_value", "secretsmanager:PutSecretValue"),
    (
        "update_secret_version_stage",
        "secretsmanager:UpdateSecretVersionStage",
    ),
    ("get_random_password", "secretsmanager:GetRandomPassword"),
    (
        "put_lifecycle_event_hook_execution_status",
        "codedeploy:PutLifecycleEventHookExecutionStatus",
    ),
    ("describe_stacks", "cloudformation:DescribeStacks"),
    ("get_item", "dynamodb:GetItem"),
    ("put_item", "dynamodb:PutItem"),
];

/// The IAM actions a function's code calls: every `.operation()` of an SDK client in its
/// crate's `src/`.
fn actions_called(crate_dir: &str) -> BTreeSet<String> {
    let mut called = BTreeSet::new();
    for file in rust_sources(&workspace_root().join(crate_dir).join("src")) {
        let text = std::fs::read_to_string(&file).unwrap();
        // Builder calls on a client: `.operation()` alone at the end of a line.
        for line in text.lines() {
            let line = line.trim();
            let method = line
                .strip_prefix('.')
                .and_then(|rest| rest.strip_suffix("()"));
            if let Some((_, action)) = SDK_OPERATIONS.iter().find(|(m, _)| Some(*m) == method) {
                called.insert((*action).to_owned());
            }
        }
    }
    called
}

#[test]
fn every_function_is_granted_exactly_the_aws_actions_its_code_calls() {
    // With a CodeDeploy application, so deploy-gate's optional hook grant is there too.
    let template = &render(&["CodeDeployApplication=web"]);
    for (function, crate_dir) in [
        ("ScaleToZeroFunction", "functions/scale-to-zero"),
        ("SpotInterruptionFunction", "functions/spot-interruption"),
        ("RdsInitFunction", "functions/rds-init"),
        ("SecretRotationFunction", "functions/secret-rotation"),
        ("DeployGateFunction", "functions/deploy-gate"),
    ] {
        let called = actions_called(crate_dir);
        assert!(
            !called.is_empty(),
            "{function}: no SDK call found in {crate_dir}"
        );
        let granted: BTreeSet<String> = role_statements(template, function)
            .into_iter()
            .flat_map(actions)
            // SAM's own grant for the function's dead-letter queue (Lambda sends to it).
            .filter(|a| a != "sqs:SendMessage")
            .collect();
        let unused: Vec<_> = granted.difference(&called).collect();
        let missing: Vec<_> = called.difference(&granted).collect();
        assert!(
            unused.is_empty() && missing.is_empty(),
            "{function}: granted but never called {unused:?}; called but not granted {missing:?}"
        );
    }
}

#[test]
fn deploy_gate_may_answer_codedeploy_hooks_only_of_the_named_application() {
    let codedeploy = |template: &Value| -> Vec<Value> {
        role_statements(template, "DeployGateFunction")
            .into_iter()
            .filter(|s| actions(s).iter().any(|a| a.starts_with("codedeploy:")))
            .map(|s| resolved(template, &s["Resource"]))
            .collect()
    };
    assert_eq!(
        codedeploy(default_template()),
        Vec::<Value>::new(),
        "no CodeDeploy permission without CodeDeployApplication"
    );
    let template = stack_template_with("orch-a", &["CodeDeployApplication=web"]);
    assert_eq!(
        codedeploy(&template),
        [json!(
            "arn:aws:codedeploy:us-east-1:123456789012:deploymentgroup:web/*"
        )]
    );
}

#[test]
fn every_invoke_permission_for_a_service_names_its_source_and_account() {
    for (template, rotation_permissions) in [
        (default_template(), 4),
        (&render(&["AppKeyRotation=yearly"]), 5),
    ] {
        let permissions: Vec<_> = of_type(template, "AWS::Lambda::Permission")
            .into_iter()
            .filter(|(_, p)| exists(template, p))
            .collect();
        // The rotation permissions, the idle topic, the tick, the three EC2/ASG rules, the wake
        // rule and the wake topic.
        assert_eq!(
            permissions.len(),
            rotation_permissions + 7,
            "{permissions:?}"
        );
        assert_invoke_permissions_name_source_and_account(&permissions);
    }
}

fn assert_invoke_permissions_name_source_and_account(permissions: &[(&String, &Value)]) {
    for (id, permission) in permissions {
        let properties = &permission["Properties"];
        let principal = properties["Principal"].as_str().unwrap_or_default();
        assert!(
            principal.ends_with(".amazonaws.com"),
            "{id}: only AWS services invoke the functions, not {principal}"
        );
        assert!(
            !properties["SourceArn"].is_null(),
            "{id}: {principal} may invoke without a SourceArn"
        );
        // (The local render fills in its placeholder account for some of them.)
        let account = &properties["SourceAccount"];
        assert!(
            *account == reference("AWS::AccountId") || *account == "123456789012",
            "{id}: SourceAccount is not this account: {account}"
        );
    }
}

/// Runs scripts/render-template expecting CloudFormation's refusal; returns its message.
fn refused(overrides: &[&str]) -> String {
    let output = run_render(overrides);
    assert!(
        !output.status.success(),
        "{overrides:?} should be refused, as CloudFormation refuses it"
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn workflow_slugs_with_dashes_work_and_bad_slugs_are_refused() {
    let template = stack_template_with("orch-a", &["Workflows=img-2-vid,vid2vid"]);
    // Logical ids keep letters and digits; names and tags keep the slug as given.
    let group = &resource(&template, "WorkerGroupimg2vid")["Properties"];
    assert_eq!(
        resolved(&template, &group["AutoScalingGroupName"]),
        "orch-a-img-2-vid"
    );
    assert!(
        group["Tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["Key"] == "orchestrator:workflow" && t["Value"] == "img-2-vid"),
        "{group}"
    );
    let alarm = &resource(&template, "WorkerIdleAlarmimg2vid")["Properties"];
    assert_eq!(alarm["Dimensions"][0]["Value"], "img-2-vid");
    assert!(refers_to(
        &resource(&template, "WorkerBacklogPolicyimg2vid")["Properties"]["AutoScalingGroupName"],
        "WorkerGroupimg2vid"
    ));
    assert!(template["Outputs"]["WorkerGroupimg2vidName"].is_object());
    // The parameter says what its pattern enforces.
    let spec = &template["Parameters"]["Workflows"];
    let description = spec["ConstraintDescription"].as_str().unwrap();
    assert!(description.contains("1-32") && description.contains("dashes"));

    for (slugs, why) in [
        ("Workflows=Img2Vid", "pattern"),
        ("Workflows=img_2_vid", "pattern"),
        ("Workflows=2vid", "pattern"),
        ("Workflows=", "pattern"),
        ("Workflows=a-very-long-workflow-slug-of-33-chars", "pattern"),
        ("Workflows=vid-2-vid,vid2vid", "same logical ids"),
    ] {
        let message = refused(&[slugs]);
        assert!(message.contains(why), "{slugs}: {message}");
    }
}

/// The longest stack name CloudFormation allows (128 characters).
fn longest_stack_name() -> String {
    let name: String = "orchestrator-".repeat(10).chars().take(128).collect();
    assert_eq!(name.len(), 128);
    name
}

/// Service limits of the names the template generates: (resource type, JSON pointer into its
/// Properties, limit in characters).
const NAME_LIMITS: &[(&str, &str, usize)] = &[
    ("AWS::SQS::Queue", "/QueueName", 80),
    ("AWS::SNS::Topic", "/TopicName", 256),
    ("AWS::Events::EventBus", "/Name", 256),
    ("AWS::SNS::Topic", "/DisplayName", 100),
    ("AWS::EC2::LaunchTemplate", "/LaunchTemplateName", 128),
    ("AWS::CloudWatch::Alarm", "/AlarmName", 255),
    ("AWS::CloudWatch::Dashboard", "/DashboardName", 255),
    ("AWS::CloudWatch::Alarm", "/Namespace", 255),
    (
        "AWS::AutoScaling::AutoScalingGroup",
        "/AutoScalingGroupName",
        255,
    ),
    (
        "AWS::AutoScaling::ScalingPolicy",
        "/TargetTrackingConfiguration/CustomizedMetricSpecification/Namespace",
        255,
    ),
    ("AWS::SecretsManager::Secret", "/Name", 512),
    ("AWS::Logs::LogGroup", "/LogGroupName", 512),
    (
        "AWS::Logs::MetricFilter",
        "/MetricTransformations/0/MetricNamespace",
        255,
    ),
    (
        "AWS::Logs::MetricFilter",
        "/MetricTransformations/0/MetricName",
        255,
    ),
    ("AWS::RDS::DBInstance", "/DBInstanceIdentifier", 63),
    (
        "AWS::ElastiCache::ReplicationGroup",
        "/ReplicationGroupId",
        40,
    ),
    (
        "AWS::Lambda::Function",
        "/Environment/Variables/QUEUE_METRIC_NAMESPACE",
        255,
    ),
    (
        "AWS::Lambda::Function",
        "/Environment/Variables/METRIC_NAMESPACE",
        255,
    ),
];

/// Property names that name a resource; each one the template sets must be in NAME_LIMITS.
const NAME_PROPERTIES: &[&str] = &[
    "QueueName",
    "TopicName",
    "DisplayName",
    "LaunchTemplateName",
    "AlarmName",
    "DashboardName",
    "AutoScalingGroupName",
    "LogGroupName",
    "DBInstanceIdentifier",
    "ReplicationGroupId",
    "FunctionName",
    "RoleName",
    "Name",
];

#[test]
fn every_generated_name_fits_its_limit_for_the_longest_stack_name_and_parameters() {
    let stack = longest_stack_name();
    let slug = format!("w{}", "x".repeat(31));
    let template = stack_template_with(
        &stack,
        &[
            &format!("Workflows={slug},img2vid"),
            "Stage=production-eu-we",
            "AppDbUsername=app_user_with_long_name_",
            "GateAlarmNames=x",
            &format!("SecretPathPrefix={stack}"),
            &format!("OAuthProviders={slug},google"),
            "AppKeyRotation=monthly",
        ],
    );
    let mut checked = 0;
    for (id, resource) in resources(&template) {
        let kind = resource["Type"].as_str().unwrap_or_default();
        let properties = &resource["Properties"];
        for (limited_kind, pointer, limit) in NAME_LIMITS {
            if kind != *limited_kind {
                continue;
            }
            let Some(raw) = properties.pointer(pointer) else {
                continue;
            };
            let name = resolved(&template, raw);
            let name = name
                .as_str()
                .unwrap_or_else(|| panic!("{id}{pointer}: {name}"));
            assert!(
                name.chars().count() <= *limit,
                "{id}{pointer} has {} characters, more than {limit}: {name}",
                name.chars().count()
            );
            checked += 1;
        }
        // A name property the table does not know would go unchecked; references to another
        // resource (Ref / GetAtt) are not names this resource generates.
        for key in NAME_PROPERTIES {
            let Some(raw) = properties.get(*key) else {
                continue;
            };
            let reference_to_resource = raw.get("Ref").is_some()
                || raw.get("Fn::GetAtt").is_some()
                || resources(&template)
                    .keys()
                    .any(|other| refers_to(raw, other));
            let known = NAME_LIMITS
                .iter()
                .any(|(k, pointer, _)| *k == kind && *pointer == format!("/{key}"));
            assert!(
                reference_to_resource || known,
                "{id} ({kind}) sets {key}; add its service's limit to NAME_LIMITS"
            );
        }
        // Tag values: 256 characters everywhere.
        for tag in properties["Tags"].as_array().into_iter().flatten() {
            let value = resolved(&template, &tag["Value"]);
            let value = value.as_str().unwrap_or_default();
            assert!(value.len() <= 256, "{id}: tag {} is {value}", tag["Key"]);
        }
    }
    assert!(checked >= 40, "only {checked} names checked");
}

/// OAuth providers (one secret each) that fit beside [`MAX_WORKFLOWS`] workflows.
const MAX_OAUTH_PROVIDERS_AT_MAX_WORKFLOWS: usize = 3;

#[test]
fn a_stack_holds_the_documented_number_of_workflows_under_500_resources() {
    let slugs = |n: usize| -> String {
        let list: Vec<String> = (1..=n).map(|i| format!("workflow-{i:03}")).collect();
        format!("Workflows={}", list.join(","))
    };
    let providers = |n: usize| -> String {
        let list: Vec<String> = (1..=n).map(|i| format!("provider-{i}")).collect();
        format!("OAuthProviders={}", list.join(","))
    };
    // GateAlarmNames and AppKeyRotation: conditional resources are declared either way; count
    // them.
    let most = render(&[
        &slugs(MAX_WORKFLOWS),
        &providers(MAX_OAUTH_PROVIDERS_AT_MAX_WORKFLOWS),
        "GateAlarmNames=x",
        "AppKeyRotation=monthly",
    ]);
    let count = resources(&most).len();
    assert!(
        count <= 500,
        "{MAX_WORKFLOWS} workflows, {MAX_OAUTH_PROVIDERS_AT_MAX_WORKFLOWS} OAuth providers: {count} resources"
    );
    let one_more_provider = render(&[
        &slugs(MAX_WORKFLOWS),
        &providers(MAX_OAUTH_PROVIDERS_AT_MAX_WORKFLOWS + 1),
    ]);
    assert!(
        resources(&one_more_provider).len() > 500,
        "{} OAuth providers still fit with {MAX_WORKFLOWS} workflows: raise \
         MAX_OAUTH_PROVIDERS_AT_MAX_WORKFLOWS and docs/template.md",
        MAX_OAUTH_PROVIDERS_AT_MAX_WORKFLOWS + 1
    );
    assert!(
        most["Outputs"].as_object().unwrap().len() <= 200,
        "CloudFormation allows 200 outputs"
    );
    // The Workflows value itself stays under CloudFormation's 4 KB parameter value limit.
    assert!(slugs(MAX_WORKFLOWS).len() < 4096);
    let one_more = render(&[&slugs(MAX_WORKFLOWS + 1)]);
    assert!(
        resources(&one_more).len() > 500,
        "{} workflows still fit: raise MAX_WORKFLOWS and docs/template.md",
        MAX_WORKFLOWS + 1
    );
    let description = default_template()["Parameters"]["Workflows"]["Description"]
        .as_str()
        .expect("Workflows has a description")
        .to_owned();
    assert!(
        description.contains(&format!("at most {MAX_WORKFLOWS} workflows")),
        "the Workflows parameter states the limit of {MAX_WORKFLOWS}: {description}"
    );
    // Wherever the documentation states the limit, it states this one.
    let mut documents = vec![workspace_root().join("README.md")];
    documents.extend(
        std::fs::read_dir(workspace_root().join("docs"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|e| e == "md")),
    );
    let mut stated = Vec::new();
    for document in &documents {
        let text = std::fs::read_to_string(document).unwrap();
        for (at, _) in text.match_indices(" workflows.**") {
            let number: String = text[..at]
                .chars()
                .rev()
                .take_while(char::is_ascii_digit)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            stated.push((document.display().to_string(), number));
        }
        if text.contains(&format!(
            "{MAX_OAUTH_PROVIDERS_AT_MAX_WORKFLOWS} OAuth providers"
        )) {
            stated.push((document.display().to_string(), "providers".to_owned()));
        }
    }
    let workflows: Vec<_> = stated.iter().filter(|(_, n)| n != "providers").collect();
    assert!(
        !workflows.is_empty()
            && workflows
                .iter()
                .all(|(_, n)| *n == MAX_WORKFLOWS.to_string()),
        "the documentation states the limit as \"**…at most {MAX_WORKFLOWS} workflows.**\", \
         and only that: {workflows:?}"
    );
    assert!(
        stated.iter().any(|(_, n)| n == "providers"),
        "the documentation states how many OAuth providers fit beside them \
         ({MAX_OAUTH_PROVIDERS_AT_MAX_WORKFLOWS} OAuth providers)"
    );
}

#[test]
fn every_function_logs_into_its_own_group_with_retention_and_alarms_on_logged_errors() {
    assert_eq!(
        default_template()["Parameters"]["LogRetentionDays"]["Default"],
        30
    );
    let template = &render(&["LogRetentionDays=90"]);
    // (The local render substitutes the parameter's value, as text.)
    let retention = json!("90");
    let error_line = {
        let logs = harness::log_capture::CapturedLogs::default();
        let _guard = logs.install();
        tracing::error!(event_id = "e-1", "the fleet topic refused the message");
        tracing::info!("a line that is not an error");
        logs.lines()
    };
    for function in FUNCTIONS {
        let group_id = format!("{function}LogGroup");
        assert_eq!(
            resource(template, function)["Properties"]["LoggingConfig"]["LogGroup"],
            reference(&group_id),
            "{function} writes into its declared group"
        );
        let group = &resource(template, &group_id)["Properties"];
        assert_eq!(group["RetentionInDays"], retention, "{group_id}");

        // (Other filters on the group count events for the dashboards: template_monitoring.rs.)
        let filters: Vec<_> = of_type(template, "AWS::Logs::MetricFilter")
            .into_iter()
            .filter(|(_, f)| refers_to(&f["Properties"]["LogGroupName"], &group_id))
            .filter(|(_, f)| {
                f["Properties"]["FilterPattern"]
                    .to_string()
                    .contains("$.level")
            })
            .collect();
        assert_eq!(filters.len(), 1, "{function}: one ERROR filter");
        let filter = &filters[0].1["Properties"];
        let pattern = filter["FilterPattern"].as_str().unwrap();
        assert_eq!(
            error_line
                .iter()
                .map(|line| json_filter_matches(pattern, line))
                .collect::<Vec<_>>(),
            [true, false],
            "{function}: {pattern} counts the suite's ERROR lines only: {error_line:?}"
        );
        let metric = &filter["MetricTransformations"][0];
        let alarmed = of_type(template, "AWS::CloudWatch::Alarm")
            .into_iter()
            .any(|(_, a)| {
                let a = &a["Properties"];
                a["MetricName"] == metric["MetricName"]
                    && a["Namespace"] == metric["MetricNamespace"]
                    && a["Threshold"] == 0
                    && a["ComparisonOperator"] == "GreaterThanThreshold"
                    && a["AlarmActions"] == json!([reference("AlertsP2Topic")])
            });
        assert!(alarmed, "{function}: an alarm on {metric}");
    }
}

#[test]
fn the_database_error_log_has_retention_and_the_identifier_it_is_named_after() {
    let log_group_name = |template: &Value| -> (String, String) {
        let database = &resource(template, "Database");
        assert!(
            depends_on(template, "Database").contains("DatabaseErrorLogGroup"),
            "RDS would create the group first, with no retention"
        );
        assert_eq!(
            database["Properties"]["EnableCloudwatchLogsExports"],
            json!(["error"])
        );
        let group = &resource(template, "DatabaseErrorLogGroup")["Properties"];
        assert_eq!(group["RetentionInDays"], "90", "LogRetentionDays");
        (
            database["Properties"]["DBInstanceIdentifier"]
                .as_str()
                .expect("identifier")
                .to_owned(),
            group["LogGroupName"].as_str().expect("name").to_owned(),
        )
    };
    let retention = ["LogRetentionDays=90"];
    let (id_a, group_a) = log_group_name(&stack_template_with("orch-a", &retention));
    let (id_long, group_long) =
        log_group_name(&stack_template_with(&longest_stack_name(), &retention));
    for (id, group) in [(&id_a, &group_a), (&id_long, &group_long)] {
        assert_eq!(*group, format!("/aws/rds/instance/{id}/error"));
        // RDS: 1-63 letters, digits, hyphens; a letter first; no "--"; no hyphen last.
        assert!(id.len() <= 63 && id.starts_with("orch-"), "{id}");
        assert!(!id.contains("--") && !id.ends_with('-'), "{id}");
        assert!(
            id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "{id}"
        );
    }
    assert_ne!(id_a, id_long, "one identifier per stack");
    // From the stack id, never from a parameter: an update never replaces the instance.
    let raw = std::fs::read_to_string(workspace_root().join("template.yaml")).unwrap();
    assert!(
        raw.contains(r#"DBInstanceIdentifier: !Join ["", ["orch-", !Select [2, !Split ["/", !Ref AWS::StackId]]]]"#),
        "DBInstanceIdentifier comes from AWS::StackId"
    );
}

#[test]
fn an_unrelated_parameter_change_never_regenerates_a_secret() {
    // Every generated secret: a changed GenerateSecretString writes a new value over it.
    let generated = |overrides: &[&str]| -> Vec<Value> {
        let template = stack_template_with("orch-a", overrides);
        GENERATED_SECRETS
            .iter()
            .map(|id| {
                resolved(
                    &template,
                    &resource(&template, id)["Properties"]["GenerateSecretString"],
                )
            })
            .collect()
    };
    let all = generated(&[]);
    for change in [
        "TenantDatabases=other_db,bp",
        "DbInstanceClass=db.r6g.large",
        "DbAllocatedStorage=100",
        "Workflows=img2vid",
        "LogRetentionDays=90",
        "AppKeyRotation=monthly",
        "OAuthProviders=google,github",
    ] {
        assert_eq!(
            generated(&[change]),
            all,
            "{change} regenerates a secret ({GENERATED_SECRETS:?})"
        );
    }
    let base = &all[GENERATED_SECRETS
        .iter()
        .position(|id| *id == "AppUserSecret")
        .unwrap()];
    // The connection details come from the attachment, which follows the database.
    let template = default_template();
    let attachment = &resource(template, "AppUserSecretAttachment")["Properties"];
    assert_eq!(attachment["SecretId"], reference("AppUserSecret"));
    assert_eq!(attachment["TargetId"], reference("Database"));
    let text = base.to_string();
    for field in ["username", "masterarn", "engine"] {
        assert!(text.contains(field), "{field} in {text}");
    }
}

/// Logical ids a resource refers to: Ref, GetAtt, `${Id}` in (locally flattened) Fn::Sub
/// strings, and DependsOn.
fn direct_dependencies(template: &Value, logical_id: &str) -> BTreeSet<String> {
    fn walk(value: &Value, out: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    match (key.as_str(), inner) {
                        ("Ref", Value::String(id)) => {
                            out.insert(id.clone());
                        }
                        ("Fn::GetAtt", Value::Array(parts)) => {
                            if let Some(id) = parts.first().and_then(Value::as_str) {
                                out.insert(id.to_owned());
                            }
                        }
                        _ => walk(inner, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, out)),
            Value::String(text) => {
                for part in text.split("${").skip(1) {
                    if let Some(id) = part.split('}').next() {
                        out.insert(id.split('.').next().unwrap_or(id).to_owned());
                    }
                }
            }
            _ => {}
        }
    }
    let resource = resource(template, logical_id);
    let mut out = BTreeSet::new();
    walk(&resource["Properties"], &mut out);
    out.extend(depends_on(template, logical_id));
    out.retain(|id| resources(template).contains_key(id));
    out
}

#[test]
fn the_deploy_gate_runs_after_everything_else_in_the_stack() {
    for overrides in [
        &["Workflows=img2vid,vid2vid"][..],
        &["Workflows=a,b-c,d", "OAuthProviders=google,git-hub"],
        &["AppKeyRotation=quarterly"],
    ] {
        let mut overrides = overrides.to_vec();
        overrides.push("GateAlarmNames=x");
        let template = render(&overrides);
        let mut reached = BTreeSet::new();
        let mut pending = vec!["DeployGate".to_owned()];
        while let Some(id) = pending.pop() {
            for dependency in direct_dependencies(&template, &id) {
                if reached.insert(dependency.clone()) {
                    pending.push(dependency);
                }
            }
        }
        let missed: Vec<_> = resources(&template)
            .iter()
            .filter(|(id, r)| {
                *id != "DeployGate"
                    && !reached.contains(*id)
                    // One whose condition is false is not created: nothing to wait for.
                    && exists(&template, r)
            })
            .map(|(id, _)| id)
            .collect();
        assert!(
            missed.is_empty(),
            "{overrides:?}: the gate does not wait for {missed:?}"
        );
    }
}

#[test]
fn alerts_without_an_email_are_reported_not_silent() {
    let delivery = |template: &Value| -> String {
        resolved(template, &template["Outputs"]["AlertsDelivery"]["Value"])
            .as_str()
            .expect("AlertsDelivery is text")
            .to_owned()
    };
    let silent = delivery(&stack_template("orch-a"));
    assert!(silent.starts_with("NOBODY"), "{silent}");
    assert!(silent.contains("AlertsTopicArn"), "{silent}");
    let mailed = delivery(&stack_template_with(
        "orch-a",
        &["AlertEmail=ops@example.com"],
    ));
    assert!(mailed.contains("ops@example.com"), "{mailed}");
    let message = refused(&["AlertEmail=ops.example.com"]);
    assert!(message.contains("AlertEmail"), "{message}");
}

#[test]
fn rds_init_reads_the_suites_secrets_and_only_those_tagged_for_its_stack() {
    let template = stack_template("orch-a");
    let role = resolved(
        &template,
        &json!(role_statements(&template, "RdsInitFunction")),
    );
    let statements = role.as_array().expect("statements");
    let secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:/team/prod/pg/master-AbCdEf";
    let read = |tags: &[(&str, &str)]| {
        Request::new("secretsmanager:GetSecretValue", secret)
            .with_resource_tags("secretsmanager", tags.iter().copied())
    };
    assert!(allowed(
        statements,
        &read(&[("orchestrator:rds-init", "orch-a")])
    ));
    for tags in [
        &[("orchestrator:rds-init", "orch-b")][..],
        &[("orchestrator:stack", "orch-a")][..],
        &[][..],
    ] {
        assert!(!allowed(statements, &read(tags)), "{tags:?}");
    }
    for own in ["DbMasterSecret", "AppUserSecret"] {
        let arn = resolved(&template, &reference(own));
        let request = Request::new("secretsmanager:GetSecretValue", arn.as_str().unwrap());
        assert!(allowed(statements, &request), "{own}");
    }
    // Reading is all it may do with them.
    let write = Request::new("secretsmanager:PutSecretValue", secret)
        .with_resource_tags("secretsmanager", [("orchestrator:rds-init", "orch-a")]);
    assert!(!allowed(statements, &write));
}

/// The ElastiCache Redis cache and its AUTH token (RedisCache, on by default).
const REDIS_RESOURCES: [&str; 9] = [
    "RedisAuthTokenSecret",
    "RedisSubnetGroup",
    "RedisSecurityGroup",
    "RedisFromFunctionsIngress",
    "RedisFromWorkersIngress",
    "FunctionToRedisEgress",
    "RedisReplicationGroup",
    "RedisAuthTokenSecretRotation",
    "RedisAuthTokenSecretRotationPermission",
];

#[test]
fn the_redis_cache_is_one_tls_only_encrypted_node_in_the_isolated_subnets_with_the_secrets_token() {
    let template = stack_template("orch-a");
    let group = resolved(
        &template,
        &resource(&template, "RedisReplicationGroup")["Properties"],
    );
    for (property, expected) in [
        ("Engine", json!("redis")),
        ("EngineVersion", json!("7.1")),
        ("CacheNodeType", json!("cache.t4g.micro")),
        ("NumCacheClusters", json!(1)),
        ("Port", json!(6379)),
        ("TransitEncryptionEnabled", json!(true)),
        ("TransitEncryptionMode", json!("required")),
        ("AtRestEncryptionEnabled", json!(true)),
        (
            "AuthToken",
            json!("{{resolve:secretsmanager:RedisAuthTokenSecret-id:SecretString:password}}"),
        ),
        ("CacheSubnetGroupName", json!("RedisSubnetGroup-id")),
        ("SecurityGroupIds", json!(["RedisSecurityGroup-id"])),
    ] {
        assert_eq!(group[property], expected, "{property}");
    }
    let subnets = resolved(
        &template,
        &resource(&template, "RedisSubnetGroup")["Properties"]["SubnetIds"],
    );
    assert_eq!(subnets, json!(["IsolatedSubnetA-id", "IsolatedSubnetB-id"]));

    // The secret: the rotation contract's fields, named after the one group, a first token
    // ElastiCache accepts (letters and digits, 32 of them).
    let (document, spec) = generated_document(&template, "RedisAuthTokenSecret");
    assert_eq!(
        document,
        json!({"engine": "redis", "replicationGroupId": group["ReplicationGroupId"],
               "port": 6379, "ssl": true})
    );
    let id = group["ReplicationGroupId"].as_str().unwrap();
    assert!(
        id.len() <= 40
            && id.starts_with("orch-")
            && id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !id.contains("--")
            && !id.ends_with('-'),
        "{id}: not a valid replication group id"
    );
    assert_eq!(spec["GenerateStringKey"], "password");
    assert_eq!(spec["PasswordLength"], 32);
    assert_eq!(spec["ExcludePunctuation"], true);
    assert_eq!(
        resolved(
            &template,
            &resource(&template, "RedisAuthTokenSecret")["Properties"]["Name"]
        ),
        "/bp/dev/redis/auth-token"
    );

    // Outputs: the endpoint and the secret.
    for (output, value) in [
        (
            "RedisEndpointAddress",
            get_att("RedisReplicationGroup", "PrimaryEndPoint.Address"),
        ),
        (
            "RedisEndpointPort",
            get_att("RedisReplicationGroup", "PrimaryEndPoint.Port"),
        ),
        ("RedisAuthTokenSecretArn", reference("RedisAuthTokenSecret")),
    ] {
        assert_eq!(template["Outputs"][output]["Value"], value, "{output}");
    }
}

#[test]
fn only_the_functions_and_the_workers_reach_redis_and_only_on_6379() {
    let template = default_template();
    let cache = reference("RedisSecurityGroup");
    let sources: BTreeSet<String> = of_type(template, "AWS::EC2::SecurityGroupIngress")
        .into_iter()
        .filter(|(_, rule)| rule["Properties"]["GroupId"] == cache)
        .map(|(id, rule)| {
            let properties = &rule["Properties"];
            assert_eq!(
                (
                    &properties["IpProtocol"],
                    &properties["FromPort"],
                    &properties["ToPort"]
                ),
                (&json!("tcp"), &json!(6379), &json!(6379)),
                "{id}"
            );
            assert!(properties["CidrIp"].is_null(), "{id}: an address range");
            properties["SourceSecurityGroupId"]["Ref"]
                .as_str()
                .unwrap_or_else(|| panic!("{id}: not from a security group"))
                .to_owned()
        })
        .collect();
    assert_eq!(
        sources,
        ["FunctionSecurityGroup", "WorkerSecurityGroup"]
            .map(String::from)
            .into()
    );
    let group = &resource(template, "RedisSecurityGroup")["Properties"];
    assert!(group["SecurityGroupIngress"].is_null(), "no inline ingress");
    assert_eq!(
        group["SecurityGroupEgress"][0]["CidrIp"], "127.0.0.1/32",
        "no egress (placeholder)"
    );
    // The functions' group may open connections to it.
    let egress = &resource(template, "FunctionToRedisEgress")["Properties"];
    assert_eq!(egress["GroupId"], reference("FunctionSecurityGroup"));
    assert_eq!(egress["DestinationSecurityGroupId"], cache);
    assert_eq!(
        (&egress["FromPort"], &egress["ToPort"]),
        (&json!(6379), &json!(6379))
    );
}

#[test]
fn secret_rotation_may_change_the_auth_token_of_the_one_group_only() {
    let template = stack_template("orch-a");
    let group_arn =
        |id: &str| format!("arn:aws:elasticache:us-east-1:123456789012:replicationgroup:{id}");
    let role_id = resource(&template, "SecretRotationFunction")["Properties"]["Role"]["Fn::GetAtt"]
        [0]
    .as_str()
    .unwrap()
    .to_owned();
    let role =
        json!({"Properties": resolved(&template, &resource(&template, &role_id)["Properties"])});
    let statements = iam::role_statements(&role);
    for action in [
        "elasticache:ModifyReplicationGroup",
        "elasticache:DescribeReplicationGroups",
    ] {
        assert!(
            allowed(
                &statements,
                &Request::new(action, &group_arn("RedisReplicationGroup-id"))
            ),
            "{action} on the suite's group"
        );
        assert!(
            !allowed(
                &statements,
                &Request::new(action, &group_arn("someone-elses"))
            ),
            "{action} on another group"
        );
    }
    for other in [
        "elasticache:DeleteReplicationGroup",
        "elasticache:CreateReplicationGroup",
        "elasticache:ModifyCacheCluster",
    ] {
        assert!(!allowed(
            &statements,
            &Request::new(other, &group_arn("RedisReplicationGroup-id"))
        ));
    }
    // No other role touches ElastiCache.
    for (policy, statement) in iam_statements(&template) {
        if actions(statement)
            .iter()
            .any(|a| a.starts_with("elasticache:"))
        {
            assert!(policy.starts_with(&role_id), "{policy}: {statement}");
        }
    }
    // The token's secret rotates through secret-rotation, invoked for that secret only, and
    // its failures reach the alerts topic.
    assert!(rotation_invokers(&template).contains("RedisAuthTokenSecret"));
    let failed = &resource(&template, "RotationFailedRule")["Properties"]["EventPattern"]["detail"]
        ["additionalEventData"]["SecretId"];
    assert!(
        one_or_many(failed).contains(&&reference("RedisAuthTokenSecret")),
        "{failed}"
    );
    assert_eq!(
        depends_on(&template, "RedisAuthTokenSecretRotation"),
        [
            "RedisAuthTokenSecretRotationPermission",
            "RedisReplicationGroup"
        ]
        .map(String::from)
        .into()
    );
}

#[test]
fn redis_cache_disabled_leaves_out_the_cache_its_secret_its_rotation_and_its_grants() {
    let template = render(&["RedisCache=disabled"]);
    for id in REDIS_RESOURCES {
        assert!(
            resources(&template)
                .get(id)
                .is_none_or(|r| !exists(&template, r)),
            "{id} is created with RedisCache=disabled"
        );
    }
    for (policy, statement) in iam_statements(&template) {
        assert!(
            !actions(statement)
                .iter()
                .any(|a| a.starts_with("elasticache:")),
            "{policy}: {statement}"
        );
        for resource in one_or_many(&statement["Resource"]) {
            assert!(!refers_to(resource, "RedisAuthTokenSecret"), "{policy}");
        }
    }
    assert!(!rotation_invokers(&template).contains("RedisAuthTokenSecret"));
    // On by default, as the architecture has it: every piece is there.
    let default = default_template();
    assert_eq!(default["Parameters"]["RedisCache"]["Default"], "enabled");
    for id in REDIS_RESOURCES {
        assert!(exists(default, resource(default, id)), "{id}");
    }
}
