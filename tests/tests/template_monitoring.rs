//! The monitoring the stack creates (docs/monitoring.md), on the rendered template: every
//! alarm's priority, window and topic; the dashboards' bodies as CloudWatch reads them (valid
//! JSON under the body limit, from one workflow to the most a stack holds); and every metric a
//! widget or an alarm names is one this suite's code or an AWS service publishes, with the
//! namespace and dimensions they use (taken from the functions' own constants and config).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use harness::process::workspace_root;
use harness::scenario::{self, StepResult};
use harness::template::{
    FUNCTIONS, MAX_WORKFLOWS, exists, json_filter_matches, of_type, one_or_many, reference,
    refers_to, render, resolved, resource, resources, rust_sources, stack_template,
    stack_template_with,
};
use serde_json::{Value, json};

const STACK: &str = "orch-a";

/// The architecture's priorities: name part, window (period × evaluation periods) in seconds,
/// and the topic their alarms act on.
const PRIORITIES: [(&str, u64, &str); 3] = [
    ("P1", 300, "AlertsP1Topic"),
    ("P2", 900, "AlertsP2Topic"),
    ("P3", 3600, "AlertsP3Topic"),
];

/// The alarms of the issue and those before it: logical id, priority, metric, comparison,
/// threshold. (Per function: `<Function>Errors` and `…LoggedErrors` P2, `…Throttles` P3.)
const ALARMS: &[(&str, &str, &str, &str, f64)] = &[
    (
        "EventDeadLetterQueueDepth",
        "P1",
        "ApproximateNumberOfMessagesVisible",
        "GreaterThanThreshold",
        0.0,
    ),
    (
        "FunctionDeadLetterQueueDepth",
        "P1",
        "ApproximateNumberOfMessagesVisible",
        "GreaterThanThreshold",
        0.0,
    ),
    (
        "DatabaseCpuAlarm",
        "P1",
        "CPUUtilization",
        "GreaterThanThreshold",
        80.0,
    ),
    (
        "DatabaseFreeStorageAlarm",
        "P2",
        "FreeStorageSpace",
        "LessThanThreshold",
        10.0,
    ),
    (
        "DeployGateFailedAlarm",
        "P2",
        "DeployGateVerdicts",
        "GreaterThanThreshold",
        0.0,
    ),
    (
        "CacheCpuAlarm",
        "P2",
        "EngineCPUUtilization",
        "GreaterThanThreshold",
        80.0,
    ),
    (
        "SpotInterruptionsAlarm",
        "P3",
        "SpotInterruptions",
        "GreaterThanThreshold",
        10.0,
    ),
    (
        "CacheHitRateAlarm",
        "P3",
        "CacheHitRate",
        "LessThanThreshold",
        70.0,
    ),
];

/// Every alarm that pages someone: all but the idle alarms, which drive scale-to-zero.
fn priority_alarms(template: &Value) -> Vec<(&String, &Value)> {
    of_type(template, "AWS::CloudWatch::Alarm")
        .into_iter()
        .filter(|(_, a)| a["Properties"]["AlarmActions"] != json!([reference("IdleAlarmTopic")]))
        .collect()
}

fn expected_alarms() -> Vec<(String, &'static str, String, &'static str, f64)> {
    let mut alarms: Vec<_> = ALARMS
        .iter()
        .map(|(id, p, metric, op, threshold)| {
            (id.to_string(), *p, metric.to_string(), *op, *threshold)
        })
        .collect();
    for function in FUNCTIONS {
        alarms.push((
            format!("{function}Errors"),
            "P2",
            "Errors".into(),
            "GreaterThanThreshold",
            0.0,
        ));
        alarms.push((
            format!("{function}LoggedErrors"),
            "P2",
            format!("{function}LoggedErrors"),
            "GreaterThanThreshold",
            0.0,
        ));
        alarms.push((
            format!("{function}Throttles"),
            "P3",
            "Throttles".into(),
            "GreaterThanThreshold",
            0.0,
        ));
    }
    alarms
}

/// An alarm's period: `Period`, or that of its metric math / Metrics Insights queries.
fn period(properties: &Value) -> u64 {
    if let Some(period) = properties["Period"].as_u64() {
        return period;
    }
    let periods: BTreeSet<u64> = properties["Metrics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["MetricStat"]["Period"].as_u64().or(m["Period"].as_u64()))
        .collect();
    assert_eq!(periods.len(), 1, "one period: {properties}");
    periods.into_iter().next().unwrap()
}

#[test]
fn every_alarm_has_its_priority_in_its_name_its_window_and_its_priority_topic_only() {
    let template = stack_template(STACK);
    let alarms = priority_alarms(&template);
    let expected = expected_alarms();
    let ids: BTreeSet<&String> = alarms.iter().map(|(id, _)| *id).collect();
    let wanted: BTreeSet<&String> = expected.iter().map(|(id, ..)| id).collect();
    assert_eq!(ids, wanted, "the alarms by priority");
    for (id, priority, metric, comparison, threshold) in &expected {
        let properties = &resource(&template, id)["Properties"];
        let (_, window, topic) = PRIORITIES.iter().find(|(p, ..)| p == priority).unwrap();
        let name = resolved(&template, &properties["AlarmName"]);
        assert!(
            name.as_str()
                .unwrap()
                .starts_with(&format!("{STACK}-{priority}-")),
            "{id}: {name}"
        );
        let description = resolved(&template, &properties["AlarmDescription"]);
        assert!(
            description
                .as_str()
                .unwrap()
                .starts_with(&format!("{priority}: ")),
            "{id}: {description}"
        );
        let evaluation = properties["EvaluationPeriods"].as_u64().unwrap();
        assert_eq!(
            period(properties) * evaluation,
            *window,
            "{id}: {priority} window"
        );
        assert_eq!(
            properties["AlarmActions"],
            json!([reference(topic)]),
            "{id}"
        );
        for other in ["OKActions", "InsufficientDataActions"] {
            assert!(properties[other].is_null(), "{id}: {other}");
        }
        assert_eq!(properties["ComparisonOperator"], *comparison, "{id}");
        assert_eq!(properties["Threshold"].as_f64(), Some(*threshold), "{id}");
        let names: Vec<String> = alarm_metrics(&template, properties)
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert!(names.contains(metric), "{id}: {names:?}");
    }
    // DeployGateFailedAlarm counts the verdict deploy-gate logs as "fail".
    let gate =
        std::fs::read_to_string(workspace_root().join("functions/deploy-gate/src/lib.rs")).unwrap();
    assert!(
        gate.contains("=> \"fail\""),
        "deploy-gate labels a failed verdict \"fail\""
    );
    // Secrets Manager's RotationFailed event is the "rotation failed" alert: P2, at once.
    assert_eq!(
        resource(&template, "RotationFailedRule")["Properties"]["Targets"][0]["Arn"],
        reference("AlertsP2Topic")
    );
}

#[test]
fn each_priority_has_its_topic_cloudwatch_may_publish_to_and_alert_email_gets_them_all() {
    let template = stack_template_with(STACK, &["AlertEmail=ops@example.com"]);
    for (priority, _, topic) in PRIORITIES {
        let name = resolved(
            &template,
            &resource(&template, topic)["Properties"]["TopicName"],
        );
        assert_eq!(name, json!(format!("{STACK}-{priority}-alerts")));
    }
    let policy = &resource(&template, "AlertsTopicPolicy")["Properties"]["PolicyDocument"];
    let alarms = one_or_many(&policy["Statement"])
        .into_iter()
        .find(|s| s["Principal"]["Service"] == "cloudwatch.amazonaws.com")
        .expect("CloudWatch may publish");
    let allowed: Vec<&Value> = one_or_many(&alarms["Resource"]);
    for (_, _, topic) in PRIORITIES {
        assert!(allowed.iter().any(|r| refers_to(r, topic)), "{topic}");
    }
    let mailed: BTreeSet<String> = of_type(&template, "AWS::SNS::Subscription")
        .into_iter()
        .filter(|(_, s)| s["Properties"]["Protocol"] == "email")
        .map(|(id, s)| {
            assert_eq!(s["Condition"], "HasAlertEmail", "{id}");
            let topic = &s["Properties"]["TopicArn"];
            [
                "AlertsTopic",
                "AlertsP1Topic",
                "AlertsP2Topic",
                "AlertsP3Topic",
            ]
            .into_iter()
            .find(|t| refers_to(topic, t))
            .unwrap_or_else(|| panic!("{id}: {topic}"))
            .to_owned()
        })
        .collect();
    assert_eq!(
        mailed,
        BTreeSet::from(
            [
                "AlertsTopic",
                "AlertsP1Topic",
                "AlertsP2Topic",
                "AlertsP3Topic"
            ]
            .map(String::from)
        ),
        "AlertEmail gets every priority and the deploy verdicts"
    );
}

/// One metric as a widget or an alarm names it: namespace, name, and dimensions (a value when
/// the reference pins one, `None` when a query groups or filters by it).
#[derive(Debug, Clone, PartialEq)]
struct MetricUse {
    namespace: String,
    name: String,
    dimensions: BTreeMap<String, Option<String>>,
}

/// A Metrics Insights query of the form the template uses:
/// `SELECT FN(Metric) FROM SCHEMA("namespace", Dim, …) [WHERE Dim = 'value'] [GROUP BY Dim, …]`.
/// SCHEMA names the metric's dimensions exactly (a metric with others does not match).
fn metrics_insights(query: &str) -> MetricUse {
    let rest = query
        .strip_prefix("SELECT ")
        .unwrap_or_else(|| panic!("not a Metrics Insights query: {query}"));
    let (function, rest) = rest.split_once('(').expect("SELECT FN(");
    assert!(
        ["SUM", "MAX", "MIN", "AVG", "COUNT"].contains(&function),
        "{query}"
    );
    let (name, rest) = rest.split_once(')').expect("FN(metric)");
    let rest = rest
        .trim_start()
        .strip_prefix("FROM SCHEMA(")
        .unwrap_or_else(|| panic!("FROM SCHEMA(…): {query}"));
    let (schema, rest) = rest.split_once(')').expect("SCHEMA(…)");
    let mut parts = schema.split(',').map(str::trim);
    let namespace = parts.next().unwrap().trim_matches('"').to_owned();
    let mut dimensions: BTreeMap<String, Option<String>> =
        parts.map(|d| (d.to_owned(), None)).collect();
    let (filter, grouping) = match rest.split_once("GROUP BY") {
        Some((filter, grouping)) => (filter, Some(grouping)),
        None => (rest, None),
    };
    if let Some(filter) = filter.trim().strip_prefix("WHERE ") {
        for condition in filter.split(" AND ") {
            let (dimension, value) = condition.split_once('=').expect("Dim = 'value'");
            let dimension = dimension.trim();
            assert!(
                dimensions.contains_key(dimension),
                "{query}: WHERE {dimension}"
            );
            dimensions.insert(
                dimension.to_owned(),
                Some(value.trim().trim_matches('\'').to_owned()),
            );
        }
    }
    for dimension in grouping.into_iter().flat_map(|g| g.split(',')) {
        assert!(
            dimensions.contains_key(dimension.trim()),
            "{query}: GROUP BY {dimension}"
        );
    }
    MetricUse {
        namespace,
        name: name.trim().to_owned(),
        dimensions,
    }
}

/// The metrics a metric widget names: rows `[namespace, name, dim, value, …, {options}]`,
/// where "." repeats the row above at that position, and Metrics Insights expressions.
fn widget_metrics(widget: &Value) -> Vec<MetricUse> {
    let rows = widget["properties"]["metrics"]
        .as_array()
        .unwrap_or_else(|| panic!("no metrics: {widget}"));
    assert!(rows.len() <= 100, "a graph holds at most 100 metrics");
    let mut previous: Vec<String> = Vec::new();
    let mut metrics = Vec::new();
    for row in rows {
        let row = row.as_array().expect("a metric row is an array");
        if let Some(expression) = row[0]["expression"].as_str() {
            metrics.push(metrics_insights(expression));
            continue;
        }
        let fields: Vec<String> = row
            .iter()
            .filter_map(Value::as_str)
            .enumerate()
            .map(|(i, field)| match field {
                "." => previous
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| panic!("\".\" with nothing above: {widget}")),
                other => other.to_owned(),
            })
            .collect();
        assert!(
            fields.len() >= 2 && fields.len().is_multiple_of(2),
            "{row:?}"
        );
        metrics.push(MetricUse {
            namespace: fields[0].clone(),
            name: fields[1].clone(),
            dimensions: fields[2..]
                .chunks(2)
                .map(|pair| (pair[0].clone(), Some(pair[1].clone())))
                .collect(),
        });
        previous = fields;
    }
    metrics
}

/// The metrics an alarm reads, resolved: its metric, or its math's and queries' metrics.
fn alarm_metrics(template: &Value, properties: &Value) -> Vec<MetricUse> {
    let one = |metric: &Value| MetricUse {
        namespace: resolved(template, &metric["Namespace"])
            .as_str()
            .unwrap()
            .to_owned(),
        name: resolved(template, &metric["MetricName"])
            .as_str()
            .unwrap()
            .to_owned(),
        dimensions: metric["Dimensions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                let value = resolved(template, &d["Value"]);
                (
                    d["Name"].as_str().unwrap().to_owned(),
                    Some(value.as_str().unwrap().to_owned()),
                )
            })
            .collect(),
    };
    if properties["Metrics"].is_null() {
        return vec![one(properties)];
    }
    properties["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| {
            if !m["MetricStat"].is_null() {
                return Some(one(&m["MetricStat"]["Metric"]));
            }
            let expression = resolved(template, &m["Expression"]);
            let expression = expression.as_str().unwrap();
            // Metric math over the ids above names no metric of its own.
            expression
                .starts_with("SELECT")
                .then(|| metrics_insights(expression))
        })
        .collect()
}

/// What a publisher puts out: a namespace, its metric names and their dimensions (with the
/// values allowed, `None` for any).
#[derive(Debug)]
struct Published {
    source: String,
    namespace: String,
    names: BTreeSet<String>,
    dimensions: BTreeMap<String, Option<BTreeSet<String>>>,
}

fn published(
    source: &str,
    namespace: &str,
    names: &[&str],
    dimensions: &[(&str, Option<BTreeSet<String>>)],
) -> Published {
    Published {
        source: source.to_owned(),
        namespace: namespace.to_owned(),
        names: names.iter().map(|n| n.to_string()).collect(),
        dimensions: dimensions
            .iter()
            .map(|(d, values)| (d.to_string(), values.clone()))
            .collect(),
    }
}

fn env(template: &Value, function: &str, variable: &str) -> String {
    let value = &resource(template, function)["Properties"]["Environment"]["Variables"][variable];
    resolved(template, value)
        .as_str()
        .unwrap_or_else(|| panic!("{function} {variable}"))
        .to_owned()
}

fn ids<'a>(
    template: &Value,
    logical: impl IntoIterator<Item = &'a str>,
) -> Option<BTreeSet<String>> {
    Some(
        logical
            .into_iter()
            .map(|id| {
                resolved(template, &reference(id))
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect(),
    )
}

/// The function's crate, from the binary its Metadata builds.
fn crate_dir(template: &Value, function: &str) -> std::path::PathBuf {
    let binary = resource(template, function)["Metadata"]["BuildProperties"]["Binary"]
        .as_str()
        .unwrap_or_else(|| panic!("{function}: no Binary"));
    workspace_root().join("functions").join(binary)
}

/// Whether the crate's code logs `message` through a `tracing` macro that also records each
/// of `fields` (the suite's JSON subscriber writes fields beside `message`).
fn logs(crate_dir: &Path, message: &str, fields: &[&str]) -> bool {
    let code: String = rust_sources(&crate_dir.join("src"))
        .iter()
        .map(|file| std::fs::read_to_string(file).unwrap())
        .collect();
    let literal = format!("\"{message}\"");
    code.match_indices(&literal).any(|(at, _)| {
        let Some(start) = code[..at].rfind("tracing::") else {
            return false;
        };
        let call = &code[start..at];
        !call.contains(';')
            && fields.iter().all(|field| {
                call.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .any(|word| word == *field)
            })
    })
}

/// The metric filters' metrics, each checked against the lines its function logs: every
/// `$.message` it matches is a message the function's code logs with the fields it reads.
fn filter_metrics(template: &Value) -> Vec<Published> {
    let mut metrics = Vec::new();
    for (id, filter) in of_type(template, "AWS::Logs::MetricFilter") {
        let properties = &filter["Properties"];
        let function = FUNCTIONS
            .into_iter()
            .find(|f| refers_to(&properties["LogGroupName"], &format!("{f}LogGroup")))
            .unwrap_or_else(|| panic!("{id}: not on a function's log group"));
        let pattern = properties["FilterPattern"].as_str().unwrap();
        let transformation = &properties["MetricTransformations"][0];
        let dimensions: Vec<(String, String)> = transformation["Dimensions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                let field = d["Value"]
                    .as_str()
                    .unwrap()
                    .strip_prefix("$.")
                    .expect("$.field");
                (d["Key"].as_str().unwrap().to_owned(), field.to_owned())
            })
            .collect();
        let mut fields: Vec<&str> = dimensions.iter().map(|(_, f)| f.as_str()).collect();
        let selectors: Vec<&str> = pattern
            .split("$.")
            .skip(1)
            .filter_map(|s| s.split_whitespace().next())
            .filter(|s| *s != "message" && *s != "level")
            .collect();
        fields.extend(selectors);
        fields.retain(|f| *f != "message");
        let messages: Vec<&str> = pattern
            .split("$.message = \"")
            .skip(1)
            .map(|s| s.split('"').next().unwrap())
            .collect();
        for message in &messages {
            assert!(
                logs(&crate_dir(template, function), message, &fields),
                "{id}: {function} never logs \"{message}\" with {fields:?}"
            );
            let line = json!({"level": "INFO", "message": message, "step": "finishSecret"});
            assert!(
                json_filter_matches(pattern, &line),
                "{id}: {pattern} misses \"{message}\""
            );
        }
        metrics.push(Published {
            source: format!("{id} on {function}'s log"),
            namespace: resolved(template, &transformation["MetricNamespace"])
                .as_str()
                .unwrap()
                .to_owned(),
            names: BTreeSet::from([resolved(template, &transformation["MetricName"])
                .as_str()
                .unwrap()
                .to_owned()]),
            dimensions: dimensions
                .iter()
                .map(|(key, field)| {
                    // An event dimension's value is the message itself.
                    let values = (field == "message")
                        .then(|| messages.iter().map(|m| m.to_string()).collect());
                    (key.clone(), values)
                })
                .collect(),
        });
    }
    metrics
}

/// Everything a widget or alarm of `template` may name, with `workflows` its slugs.
fn publishers(template: &Value, workflows: &[&str]) -> Vec<Published> {
    let slugs = Some(
        workflows
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>(),
    );
    let groups: Vec<(&String, &Value)> = of_type(template, "AWS::AutoScaling::AutoScalingGroup");
    // AWS/AutoScaling publishes a group metric only when the group collects it.
    let collected = groups
        .iter()
        .map(|(_, g)| {
            g["Properties"]["MetricsCollection"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["Granularity"] == "1Minute")
                .flat_map(|c| c["Metrics"].as_array().cloned().unwrap_or_default())
                .filter_map(|m| m.as_str().map(str::to_owned))
                .collect::<BTreeSet<_>>()
        })
        .reduce(|a, b| a.intersection(&b).cloned().collect())
        .unwrap_or_default();
    let collected: Vec<&str> = collected.iter().map(String::as_str).collect();
    let mut all = vec![
        // scale-to-zero reads the backend's queue metric and publishes BacklogPerInstance beside
        // it, both per workflow, where its config says.
        published(
            "scale-to-zero",
            &env(template, "ScaleToZeroFunction", "QUEUE_METRIC_NAMESPACE"),
            &[
                &env(template, "ScaleToZeroFunction", "QUEUE_METRIC_NAME"),
                scale_to_zero::aws::BACKLOG_METRIC_NAME,
            ],
            &[(
                &env(template, "ScaleToZeroFunction", "WORKFLOW_DIMENSION"),
                slugs.clone(),
            )],
        ),
        published(
            "spot-interruption (EMF)",
            &env(template, "SpotInterruptionFunction", "METRIC_NAMESPACE"),
            &[spot_interruption::metric::INTERRUPTIONS_METRIC],
            &[
                (spot_interruption::metric::WORKFLOW_DIMENSION, slugs.clone()),
                (spot_interruption::metric::INSTANCE_TYPE_DIMENSION, None),
                (spot_interruption::metric::AVAILABILITY_ZONE_DIMENSION, None),
            ],
        ),
        published(
            "Lambda",
            "AWS/Lambda",
            &["Errors", "Throttles", "Duration"],
            &[("FunctionName", ids(template, FUNCTIONS))],
        ),
        published(
            "RDS",
            "AWS/RDS",
            &["CPUUtilization", "DatabaseConnections", "FreeStorageSpace"],
            &[("DBInstanceIdentifier", ids(template, ["Database"]))],
        ),
        published(
            "Auto Scaling (MetricsCollection)",
            "AWS/AutoScaling",
            &collected,
            &[(
                "AutoScalingGroupName",
                ids(template, groups.iter().map(|(id, _)| id.as_str())),
            )],
        ),
        published(
            "SQS",
            "AWS/SQS",
            &["ApproximateNumberOfMessagesVisible"],
            &[(
                "QueueName",
                ids(
                    template,
                    ["EventDeadLetterQueue", "FunctionDeadLetterQueue"],
                ),
            )],
        ),
        published(
            "EventBridge",
            "AWS/Events",
            &["MatchedEvents"],
            &[("RuleName", ids(template, ["RotationFailedRule"]))],
        ),
    ];
    if exists(template, resource(template, "RedisReplicationGroup")) {
        let cluster = resolved(
            template,
            &json!({"Fn::Sub": "${RedisReplicationGroup}-001"}),
        );
        all.push(published(
            "ElastiCache",
            "AWS/ElastiCache",
            &[
                "CPUUtilization",
                "EngineCPUUtilization",
                "CacheHitRate",
                "CurrConnections",
            ],
            &[
                (
                    "CacheClusterId",
                    Some(BTreeSet::from([cluster.as_str().unwrap().to_owned()])),
                ),
                ("CacheNodeId", Some(BTreeSet::from(["0001".to_owned()]))),
            ],
        ));
    }
    all.extend(filter_metrics(template));
    all
}

/// Panics unless some publisher puts out `metric` with exactly its dimensions.
fn assert_published(metric: &MetricUse, publishers: &[Published], context: &str) {
    let matching = publishers.iter().find(|p| {
        p.namespace == metric.namespace
            && p.names.contains(&metric.name)
            && p.dimensions.keys().eq(metric.dimensions.keys())
    });
    let publisher = matching.unwrap_or_else(|| {
        panic!("{context}: nothing publishes {metric:?}; publishers: {publishers:#?}")
    });
    for (dimension, value) in &metric.dimensions {
        if let (Some(value), Some(allowed)) = (value, &publisher.dimensions[dimension]) {
            assert!(
                allowed.contains(value),
                "{context}: {} {dimension}={value} is not one of {allowed:?} ({})",
                metric.name,
                publisher.source
            );
        }
    }
}

/// Every dashboard of `template`, by name, with its body parsed (panics on invalid JSON).
fn dashboards(template: &Value) -> BTreeMap<String, (String, Value)> {
    of_type(template, "AWS::CloudWatch::Dashboard")
        .into_iter()
        .map(|(id, d)| {
            let name = resolved(template, &d["Properties"]["DashboardName"]);
            let body = resolved(template, &d["Properties"]["DashboardBody"]);
            let body = body
                .as_str()
                .unwrap_or_else(|| panic!("{id}: body {body}"))
                .to_owned();
            let parsed: Value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("{id}: the body is not JSON ({e}):\n{body}"));
            (name.as_str().unwrap().to_owned(), (body, parsed))
        })
        .collect()
}

fn widgets(body: &Value) -> &Vec<Value> {
    body["widgets"].as_array().expect("widgets")
}

fn workflows(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("flow-{i:03}")).collect()
}

#[test]
fn every_metric_a_widget_or_alarm_names_is_one_the_suite_or_aws_publishes() {
    for overrides in [
        &[][..],
        // The parameters flow into the widgets: a team's own queue metric and namespaces.
        &[
            "QueueMetricNamespace=Team/Queue",
            "QueueMetricName=Backlog",
            "WorkflowDimension=Pipeline",
            "FleetMetricNamespace=Team/Fleet",
            "Workflows=img2vid,vid-2-vid",
        ][..],
        &["RedisCache=disabled"][..],
    ] {
        let template = stack_template_with(STACK, overrides);
        let slugs: Vec<String> = resolved(&template, &reference("Workflows"))
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect();
        let slugs: Vec<&str> = slugs.iter().map(String::as_str).collect();
        let publishers = publishers(&template, &slugs);
        let mut checked = 0;
        for (name, (_, body)) in dashboards(&template) {
            for widget in widgets(&body) {
                if widget["type"] != "metric" {
                    continue;
                }
                for metric in widget_metrics(widget) {
                    assert_published(&metric, &publishers, &format!("{overrides:?} {name}"));
                    checked += 1;
                }
            }
        }
        for (id, alarm) in priority_alarms(&template) {
            if !exists(&template, alarm) {
                continue;
            }
            for metric in alarm_metrics(&template, &alarm["Properties"]) {
                assert_published(&metric, &publishers, &format!("{overrides:?} {id}"));
                checked += 1;
            }
        }
        assert!(
            checked >= 40,
            "{overrides:?}: only {checked} metrics checked"
        );
    }
}

#[test]
fn the_dashboards_are_valid_json_under_the_body_limit_from_one_workflow_to_the_most() {
    for count in [1, 3, MAX_WORKFLOWS] {
        let slugs = workflows(count);
        let template = stack_template_with(STACK, &[&format!("Workflows={}", slugs.join(","))]);
        let dashboards = dashboards(&template);
        // The fleet's, and one per workflow, through the workflows' own Fn::ForEach.
        assert_eq!(dashboards.len(), count + 1, "{count} workflows");
        for slug in &slugs {
            let name = format!("{STACK}-{slug}");
            let (_, body) = dashboards
                .get(&name)
                .unwrap_or_else(|| panic!("no dashboard {name}"));
            let logical = format!("WorkerGroup{}", slug.replace('-', ""));
            let group = resolved(&template, &reference(&logical));
            let capacity = widgets(body)
                .iter()
                .flat_map(|w| {
                    if w["type"] == "metric" {
                        widget_metrics(w)
                    } else {
                        Vec::new()
                    }
                })
                .filter(|m| m.namespace == "AWS/AutoScaling")
                .collect::<Vec<_>>();
            assert_eq!(capacity.len(), 2, "{name}: desired and in service");
            for metric in capacity {
                assert_eq!(
                    metric.dimensions["AutoScalingGroupName"].as_deref(),
                    group.as_str(),
                    "{name}: its own group"
                );
            }
        }
        for (name, (text, body)) in &dashboards {
            // PutDashboard refuses a body over 1 MB.
            assert!(text.len() < 1_000_000, "{name}: {} bytes", text.len());
            let widgets = widgets(body);
            assert!(!widgets.is_empty() && widgets.len() <= 500, "{name}");
            for widget in widgets {
                let kind = widget["type"].as_str().unwrap_or_default();
                assert!(
                    ["metric", "text", "log", "alarm"].contains(&kind),
                    "{name}: {widget}"
                );
                let width = widget["width"].as_u64().unwrap_or(0);
                assert!((1..=24).contains(&width), "{name}: {widget}");
                assert!(widget["properties"].is_object(), "{name}: {widget}");
            }
        }
        // The expanded template stays far from CloudFormation's 1 MB (sam deploy uploads
        // template.yaml to S3, resolve_s3, since it is past the 51,200 bytes of an inline body).
        let size = serde_json::to_string(&template).unwrap().len();
        assert!(size < 1_000_000, "{count} workflows: {size} bytes");
    }
}

#[test]
fn the_fleet_dashboard_shows_every_alarm_and_reads_the_functions_own_log_groups() {
    let template = stack_template(STACK);
    let dashboards = dashboards(&template);
    let (_, body) = &dashboards[STACK];
    let widgets = widgets(body);
    let alarm_widget = widgets
        .iter()
        .find(|w| w["type"] == "alarm")
        .expect("an alarm status widget");
    let shown: BTreeSet<String> = alarm_widget["properties"]["alarms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    // (An alarm's name, its Ref, is `<logical>-id` here.)
    let alarms: BTreeSet<String> = priority_alarms(&template)
        .into_iter()
        .filter(|(_, a)| exists(&template, a))
        .map(|(id, _)| format!("arn:aws:cloudwatch:us-east-1:123456789012:alarm:{id}-id"))
        .collect();
    assert_eq!(shown, alarms, "every alarm by priority, and only those");

    // Init duration comes from Lambda's JSON platform.report records, which the functions'
    // log groups get because every function logs in JSON.
    let query = widgets
        .iter()
        .find(|w| w["type"] == "log")
        .and_then(|w| w["properties"]["query"].as_str())
        .expect("a Logs Insights widget");
    let sources: BTreeSet<String> = query
        .split("SOURCE '")
        .skip(1)
        .map(|s| s.split('\'').next().unwrap().to_owned())
        .collect();
    let groups: BTreeSet<String> = FUNCTIONS
        .iter()
        .map(|f| {
            let logging = &resource(&template, f)["Properties"]["LoggingConfig"];
            assert_eq!(logging["LogFormat"], "JSON", "{f}");
            resolved(&template, &logging["LogGroup"])
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(sources, groups);
    assert!(
        query.contains("type = 'platform.report'")
            && query.contains("record.metrics.initDurationMs")
    );
}

#[test]
fn without_the_cache_there_is_no_cache_alarm_or_widget() {
    let with = stack_template(STACK);
    let without = stack_template_with(STACK, &["RedisCache=disabled"]);
    for (template, cache) in [(&with, true), (&without, false)] {
        for id in ["CacheCpuAlarm", "CacheHitRateAlarm"] {
            assert_eq!(exists(template, resource(template, id)), cache, "{id}");
        }
        let dashboards = dashboards(template);
        let (text, _) = &dashboards[STACK];
        assert_eq!(text.contains("AWS/ElastiCache"), cache, "{text}");
    }
}

#[test]
fn the_local_scenario_ends_with_the_url_of_its_stacks_dashboard() {
    let template = stack_template(scenario::STACK);
    let url = scenario::dashboard_url(harness::moto::REGION, scenario::STACK);
    assert_eq!(
        resolved(&template, &template["Outputs"]["DashboardUrl"]["Value"]),
        json!(url),
        "the DashboardUrl output has the form the scenario prints"
    );
    assert!(dashboards(&template).contains_key(scenario::STACK));
    let done = StepResult {
        name: "a step",
        ok: true,
        detail: String::new(),
        seconds: 1.0,
    };
    let summary = scenario::summary(&[done], Path::new("/tmp"));
    assert!(summary.contains(&url), "{summary}");
}

#[test]
fn every_dashboard_and_alarm_name_is_the_stacks_own() {
    // Two stacks in one account and region: no dashboard name in common.
    let names = |stack: &str| -> BTreeSet<String> {
        dashboards(&stack_template(stack)).into_keys().collect()
    };
    assert!(names("orch-a").is_disjoint(&names("orch-b")));
    let template = render(&[]);
    assert!(resources(&template).contains_key("Dashboard"));
}
