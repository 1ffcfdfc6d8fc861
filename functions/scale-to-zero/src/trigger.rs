//! The events that invoke scale-to-zero, decoded into the typed structs of `aws_lambda_events`.

use aws_lambda_events::event::{
    cloudwatch_alarms::CloudWatchAlarm, eventbridge::EventBridgeEvent, sns::SnsEvent,
};
use serde::Deserialize;
use serde_json::Value;
use shared::payload::{MalformedEvent, decode, describe_shape};

/// Why an event was turned away.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error(
        "unrecognised event ({0}); expected SNS records, a CloudWatch alarm \
         action, an EventBridge schedule or {{\"action\":\"scale-to-zero\",\"workflow\":\"…\"}}"
    )]
    Unrecognised(String),
    #[error(transparent)]
    Malformed(#[from] MalformedEvent),
}

/// `{"action":"scale-to-zero","workflow":"<slug>"}`, sent by off-hours schedules.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectInvoke {
    pub action: DirectAction,
    pub workflow: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DirectAction {
    ScaleToZero,
}

/// One invocation's trigger.
#[derive(Debug)]
pub enum Trigger {
    /// The idle alarm's notification through SNS (each record's message is the alarm JSON).
    Sns(SnsEvent),
    /// The idle alarm invoking the function directly as its alarm action.
    AlarmAction(Box<CloudWatchAlarm>),
    /// The EventBridge schedule tick.
    Schedule(Box<EventBridgeEvent>),
    Direct(DirectInvoke),
}

impl Trigger {
    /// Tells the event kinds apart by their distinguishing top-level key, then decodes.
    pub fn from_payload(payload: Value) -> Result<Self, TriggerError> {
        let has = |key: &str| payload.get(key).is_some();
        if has("Records") {
            Ok(Trigger::Sns(decode(payload, "SNS")?))
        } else if has("alarmData") {
            Ok(Trigger::AlarmAction(Box::new(decode(
                payload,
                "CloudWatch alarm",
            )?)))
        } else if has("detail-type") {
            Ok(Trigger::Schedule(Box::new(decode(payload, "EventBridge")?)))
        } else if has("action") {
            Ok(Trigger::Direct(decode(payload, "direct invoke")?))
        } else {
            Err(TriggerError::Unrecognised(describe_shape(&payload)))
        }
    }

    /// A short name for logs and results.
    pub fn kind(&self) -> &'static str {
        match self {
            Trigger::Sns(_) => "sns-alarm",
            Trigger::AlarmAction(_) => "alarm-action",
            Trigger::Schedule(_) => "schedule",
            Trigger::Direct(_) => "direct",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::sample_events::sample;

    #[test]
    fn every_sample_event_decodes_to_its_kind() {
        for (file, kind) in [
            ("sns-idle-alarm.json", "sns-alarm"),
            ("sns-ok-alarm.json", "sns-alarm"),
            ("alarm-action.json", "alarm-action"),
            ("schedule.json", "schedule"),
            ("direct-scale-to-zero.json", "direct"),
        ] {
            let trigger = Trigger::from_payload(sample("scale-to-zero", file)).unwrap();
            assert_eq!(trigger.kind(), kind, "{file}");
        }
    }

    #[test]
    fn direct_invoke_names_the_workflow() {
        let Trigger::Direct(direct) =
            Trigger::from_payload(sample("scale-to-zero", "direct-scale-to-zero.json")).unwrap()
        else {
            panic!("not a direct invoke");
        };
        assert_eq!(direct.workflow, "img2vid");
    }

    #[test]
    fn unknown_and_malformed_events_are_explained() {
        let err = Trigger::from_payload(serde_json::json!({"hello": 1})).unwrap_err();
        assert!(
            err.to_string().contains("an object with keys hello"),
            "{err}"
        );
        let err = Trigger::from_payload(serde_json::json!(["x"])).unwrap_err();
        assert!(err.to_string().contains("(an array)"), "{err}");
        let err = Trigger::from_payload(serde_json::json!({"action": "explode", "workflow": "a"}))
            .unwrap_err();
        assert!(
            err.to_string().starts_with("malformed direct invoke event"),
            "{err}"
        );
    }
}
