//! The idle alarm, from either delivery path: an SNS notification (its message is the alarm
//! JSON) or CloudWatch invoking the function directly as the alarm action.

use aws_lambda_events::event::cloudwatch_alarms::{
    CloudWatchAlarm, CloudWatchAlarmStateValue, CloudWatchMetricDefinition,
};
use aws_lambda_events::event::sns::CloudWatchAlarmPayload;
use serde_json::Value;

/// What the function needs from an alarm state change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmNotice {
    pub alarm_name: String,
    /// `ALARM`, `OK` or `INSUFFICIENT_DATA`.
    pub state: String,
    /// The value of the workflow dimension on the alarm's metric, if it has one.
    pub workflow: Option<String>,
}

impl AlarmNotice {
    pub fn is_alarm(&self) -> bool {
        self.state == "ALARM"
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AlarmError {
    #[error(
        "SNS message is neither a wake request (a JSON object with `action`) nor a CloudWatch alarm notification: {0}"
    )]
    NotAnAlarm(#[source] serde_json::Error),
    #[error(
        "alarm `{alarm}` is in ALARM but its metric has no `{dimension}` dimension naming a workflow"
    )]
    NoWorkflowDimension { alarm: String, dimension: String },
}

/// Reads an SNS record's message.
pub fn from_sns_message(
    message: &str,
    workflow_dimension: &str,
) -> Result<AlarmNotice, AlarmError> {
    let mut json: Value = serde_json::from_str(message).map_err(AlarmError::NotAnAlarm)?;
    // CloudWatch sends `null` for an alarm without a description (and for some trigger fields
    // of metric-math alarms), which the typed payload declares as plain strings.
    for pointer in ["/AlarmDescription", "/NewStateReason", "/OldStateValue"] {
        null_to_empty(&mut json, pointer);
    }
    for field in [
        "/Trigger/TreatMissingData",
        "/Trigger/EvaluateLowSampleCountPercentile",
        "/Trigger/ComparisonOperator",
    ] {
        null_to_empty(&mut json, field);
    }
    let payload: CloudWatchAlarmPayload =
        serde_json::from_value(json).map_err(AlarmError::NotAnAlarm)?;
    let trigger = &payload.trigger;
    let workflow = trigger
        .dimensions
        .iter()
        .chain(
            trigger
                .metrics
                .iter()
                .filter_map(|m| m.metric_stat.as_ref())
                .flat_map(|stat| stat.metric.dimensions.iter()),
        )
        .find(|d| d.name == workflow_dimension)
        .map(|d| d.value.clone());
    Ok(AlarmNotice {
        alarm_name: payload.alarm_name,
        state: payload.new_state_value,
        workflow,
    })
}

/// Reads a direct CloudWatch alarm-action event.
pub fn from_alarm_action(alarm: &CloudWatchAlarm, workflow_dimension: &str) -> AlarmNotice {
    let data = &alarm.alarm_data;
    let state = match data.state.as_ref().map(|s| &s.value) {
        Some(CloudWatchAlarmStateValue::Alarm) => "ALARM",
        Some(CloudWatchAlarmStateValue::Ok) => "OK",
        Some(CloudWatchAlarmStateValue::InsufficientData) => "INSUFFICIENT_DATA",
        _ => "UNKNOWN",
    };
    // Metric-math alarms mix metric definitions with expressions; only the former have dimensions.
    let workflow = data
        .configuration
        .get("metrics")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| serde_json::from_value::<CloudWatchMetricDefinition>(m.clone()).ok())
        .find_map(|m| {
            m.metric_stat
                .metric
                .dimensions
                .get(workflow_dimension)
                .cloned()
        });
    AlarmNotice {
        alarm_name: data.alarm_name.clone(),
        state: state.to_owned(),
        workflow,
    }
}

fn null_to_empty(json: &mut Value, pointer: &str) {
    if let Some(value) = json.pointer_mut(pointer)
        && value.is_null()
    {
        *value = Value::String(String::new());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use shared::sample_events::sample;

    fn sns_message(state: &str, description: Value, dimensions: Value) -> String {
        json!({
            "AlarmName": "wf-idle", "AlarmDescription": description, "AWSAccountId": "123456789012",
            "NewStateValue": state, "NewStateReason": "r", "StateChangeTime": "2026-11-22T12:00:05.123+0000",
            "Region": "US East (N. Virginia)", "AlarmArn": "arn:aws:cloudwatch:us-east-1:123456789012:alarm:wf-idle",
            "OldStateValue": "OK",
            "Trigger": {
                "MetricName": "QueueDepth", "Namespace": "Orchestrator/Queue", "StatisticType": "Statistic",
                "Statistic": "MAXIMUM", "Unit": null, "Dimensions": dimensions, "Period": 60,
                "EvaluationPeriods": 15, "ComparisonOperator": "LessThanOrEqualToThreshold",
                "Threshold": 0.0, "TreatMissingData": "notBreaching", "EvaluateLowSampleCountPercentile": ""
            }
        })
        .to_string()
    }

    #[test]
    fn sns_alarm_names_its_workflow_even_without_a_description() {
        let message = sns_message(
            "ALARM",
            Value::Null,
            json!([{"value": "img2vid", "name": "Workflow"}]),
        );
        let notice = from_sns_message(&message, "Workflow").unwrap();
        assert!(notice.is_alarm());
        assert_eq!(notice.workflow.as_deref(), Some("img2vid"));
        assert_eq!(notice.alarm_name, "wf-idle");
    }

    #[test]
    fn sns_alarm_on_another_dimension_has_no_workflow() {
        let message = sns_message("OK", json!("d"), json!([{"value": "x", "name": "Queue"}]));
        let notice = from_sns_message(&message, "Workflow").unwrap();
        assert!(!notice.is_alarm());
        assert_eq!(notice.workflow, None);
    }

    #[test]
    fn metric_math_sns_alarm_finds_the_dimension_in_its_metrics() {
        let mut message: Value =
            serde_json::from_str(&sns_message("ALARM", json!("d"), json!([]))).unwrap();
        message["Trigger"]["Metrics"] = json!([
            {"Id": "e1", "Expression": "m1 + 0", "ReturnData": true},
            {"Id": "m1", "ReturnData": false, "MetricStat": {"Metric": {"Namespace": "Q", "MetricName": "QueueDepth",
                "Dimensions": [{"value": "vid2vid", "name": "Workflow"}]}, "Period": 60, "Stat": "Maximum"}}
        ]);
        let notice = from_sns_message(&message.to_string(), "Workflow").unwrap();
        assert_eq!(notice.workflow.as_deref(), Some("vid2vid"));
    }

    #[test]
    fn a_message_that_is_not_an_alarm_is_explained() {
        let err = from_sns_message("hello", "Workflow").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("SNS message is neither a wake request (a JSON object with `action`) nor a CloudWatch alarm notification"),
            "{err}"
        );
        let err = from_sns_message(r#"{"type":"something-else"}"#, "Workflow").unwrap_err();
        assert!(err.to_string().contains("missing field"), "{err}");
    }

    #[test]
    fn sample_events_name_the_workflow_and_state() {
        let sns: aws_lambda_events::event::sns::SnsEvent =
            serde_json::from_value(sample("scale-to-zero", "sns-idle-alarm.json")).unwrap();
        let notice = from_sns_message(&sns.records[0].sns.message, "Workflow").unwrap();
        assert_eq!(
            (notice.state.as_str(), notice.workflow.as_deref()),
            ("ALARM", Some("img2vid"))
        );

        let ok: aws_lambda_events::event::sns::SnsEvent =
            serde_json::from_value(sample("scale-to-zero", "sns-ok-alarm.json")).unwrap();
        let notice = from_sns_message(&ok.records[0].sns.message, "Workflow").unwrap();
        assert_eq!((notice.state.as_str(), notice.is_alarm()), ("OK", false));

        let action: CloudWatchAlarm =
            serde_json::from_value(sample("scale-to-zero", "alarm-action.json")).unwrap();
        let notice = from_alarm_action(&action, "Workflow");
        assert_eq!(notice.alarm_name, "orchestrator-dev-img2vid-idle");
        assert_eq!(
            (notice.state.as_str(), notice.workflow.as_deref()),
            ("ALARM", Some("img2vid"))
        );
        assert_eq!(from_alarm_action(&action, "Queue").workflow, None);
    }
}
