//! The events that invoke scale-to-zero, decoded into the typed structs of `aws_lambda_events`.

use aws_lambda_events::event::{
    cloudwatch_alarms::CloudWatchAlarm, eventbridge::EventBridgeEvent, sns::SnsEvent,
};
use serde::Deserialize;
use serde_json::Value;
use shared::payload::{MalformedEvent, decode, describe_shape};

use crate::wake::{EVENT_DETAIL_TYPE, is_wake_message};

/// Why an event was turned away.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error(
        "unrecognised event ({0}); expected SNS records, a CloudWatch alarm \
         action, an EventBridge schedule or `Jobs Queued` event, \
         {{\"action\":\"scale-to-zero\",\"workflow\":\"…\"}} or \
         {{\"action\":\"wake\",\"workflow\":\"…\",\"queued\":<n>}}"
    )]
    Unrecognised(String),
    #[error(transparent)]
    Malformed(#[from] MalformedEvent),
}

/// A direct invoke: `{"action":"scale-to-zero","workflow":"<slug>"}` (off-hours schedules) or
/// `{"action":"wake","workflow":"<slug>","queued":<n>}` (the backend queued work).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DirectInvoke {
    ScaleToZero { workflow: String },
    Wake { workflow: String, queued: u64 },
}

/// One invocation's trigger.
#[derive(Debug)]
pub enum Trigger {
    /// SNS records: the idle alarm's notifications (each message is the alarm JSON) or the
    /// backend's wake requests (each message is the direct invoke's wake body).
    Sns(SnsEvent),
    /// The idle alarm invoking the function directly as its alarm action.
    AlarmAction(Box<CloudWatchAlarm>),
    /// An EventBridge event: the schedule tick, or the backend's `Jobs Queued`.
    EventBridge(Box<EventBridgeEvent>),
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
            Ok(Trigger::EventBridge(Box::new(decode(
                payload,
                "EventBridge",
            )?)))
        } else if has("action") {
            Ok(Trigger::Direct(decode(payload, "direct invoke")?))
        } else {
            Err(TriggerError::Unrecognised(describe_shape(&payload)))
        }
    }

    /// A short name for logs and results.
    pub fn kind(&self) -> &'static str {
        match self {
            Trigger::Sns(event)
                if event
                    .records
                    .first()
                    .is_some_and(|r| is_wake_message(&r.sns.message)) =>
            {
                "sns-wake"
            }
            Trigger::Sns(_) => "sns-alarm",
            Trigger::AlarmAction(_) => "alarm-action",
            Trigger::EventBridge(event) if event.detail_type == EVENT_DETAIL_TYPE => "event-wake",
            Trigger::EventBridge(_) => "schedule",
            Trigger::Direct(DirectInvoke::ScaleToZero { .. }) => "direct",
            Trigger::Direct(DirectInvoke::Wake { .. }) => "direct-wake",
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
            ("wake-direct.json", "direct-wake"),
            ("wake-event.json", "event-wake"),
            ("wake-sns.json", "sns-wake"),
        ] {
            let trigger = Trigger::from_payload(sample("scale-to-zero", file)).unwrap();
            assert_eq!(trigger.kind(), kind, "{file}");
        }
    }

    #[test]
    fn direct_invokes_name_the_workflow_and_a_wake_its_jobs() {
        let Trigger::Direct(direct) =
            Trigger::from_payload(sample("scale-to-zero", "direct-scale-to-zero.json")).unwrap()
        else {
            panic!("not a direct invoke");
        };
        assert_eq!(
            direct,
            DirectInvoke::ScaleToZero {
                workflow: "img2vid".into()
            }
        );
        let Trigger::Direct(wake) =
            Trigger::from_payload(sample("scale-to-zero", "wake-direct.json")).unwrap()
        else {
            panic!("not a direct invoke");
        };
        assert_eq!(
            wake,
            DirectInvoke::Wake {
                workflow: "img2vid".into(),
                queued: 3
            }
        );
    }

    #[test]
    fn a_malformed_direct_wake_is_explained() {
        for (payload, problem) in [
            (
                serde_json::json!({"action": "wake", "workflow": "a"}),
                "missing field `queued`",
            ),
            (
                serde_json::json!({"action": "wake", "workflow": "a", "queued": -3}),
                "invalid value: integer `-3`",
            ),
            (
                serde_json::json!({"action": "wake", "workflow": "a", "queued": 1, "jobs": 1}),
                "unknown field `jobs`",
            ),
            (
                serde_json::json!({"action": "scale-to-zero", "workflow": "a", "queued": 1}),
                "unknown field `queued`",
            ),
        ] {
            let err = Trigger::from_payload(payload.clone())
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("malformed direct invoke event: ") && err.contains(problem),
                "{payload}: {err}"
            );
        }
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
