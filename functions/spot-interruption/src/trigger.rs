//! The EventBridge event spot-interruption acts on, decoded.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use serde::Deserialize;
use serde_json::Value;
use shared::payload::{MalformedEvent, decode};

use crate::notice::{
    EventTime, InstanceNotice, REBALANCE_RECOMMENDATION, SPOT_INTERRUPTION_WARNING,
    TERMINATE_LIFECYCLE_ACTION,
};

/// One EventBridge event, decoded: its id, which deduplicates repeated deliveries, the time it
/// was emitted and what it says. Suite naming rule: the decoded event a handler acts on is
/// `Trigger`, in the crate's `trigger.rs`, and its decode error is `TriggerError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    pub event_id: String,
    pub time: EventTime,
    pub notice: InstanceNotice,
}

#[derive(Deserialize)]
struct Ec2InstanceDetail {
    #[serde(rename = "instance-id")]
    instance_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LifecycleActionDetail {
    #[serde(rename = "EC2InstanceId")]
    ec2_instance_id: String,
    auto_scaling_group_name: String,
    lifecycle_hook_name: String,
    lifecycle_action_token: String,
}

/// Why an event was turned away: it does not decode, or it decodes but cannot be acted on.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error(transparent)]
    Malformed(#[from] MalformedEvent),
    #[error("{detail_type} event has no `id`, which fleet subscribers deduplicate on")]
    MissingId { detail_type: String },
    #[error("{detail_type} event {event_id} has no `time`, which the fleet message carries")]
    MissingTime {
        detail_type: String,
        event_id: String,
    },
    #[error(
        "{detail_type} event {event_id} names `{instance_id}`, which is not an EC2 instance id"
    )]
    NotAnInstanceId {
        detail_type: String,
        event_id: String,
        instance_id: String,
    },
}

impl Trigger {
    pub fn from_payload(payload: Value) -> Result<Self, TriggerError> {
        let event: EventBridgeEvent = decode(payload, "EventBridge")?;
        let detail_type = event.detail_type.clone();
        let event_id = match event.id.as_deref().map(str::trim) {
            Some(id) if !id.is_empty() => id.to_owned(),
            _ => return Err(TriggerError::MissingId { detail_type }),
        };
        let Some(time) = event.time else {
            return Err(TriggerError::MissingTime {
                detail_type,
                event_id,
            });
        };
        let time = EventTime::from_unix_seconds(time.timestamp());
        let notice = match event.detail_type.as_str() {
            SPOT_INTERRUPTION_WARNING => {
                let detail: Ec2InstanceDetail = decode(event.detail, SPOT_INTERRUPTION_WARNING)?;
                InstanceNotice::SpotInterruption {
                    instance_id: detail.instance_id,
                }
            }
            REBALANCE_RECOMMENDATION => {
                let detail: Ec2InstanceDetail = decode(event.detail, REBALANCE_RECOMMENDATION)?;
                InstanceNotice::RebalanceRecommendation {
                    instance_id: detail.instance_id,
                }
            }
            TERMINATE_LIFECYCLE_ACTION => {
                let detail: LifecycleActionDetail =
                    decode(event.detail, TERMINATE_LIFECYCLE_ACTION)?;
                InstanceNotice::Terminating {
                    instance_id: detail.ec2_instance_id,
                    auto_scaling_group: detail.auto_scaling_group_name,
                    lifecycle_hook_name: detail.lifecycle_hook_name,
                    lifecycle_action_token: detail.lifecycle_action_token,
                }
            }
            other => InstanceNotice::Other {
                detail_type: other.to_owned(),
            },
        };
        if let Some(instance_id) = notice.instance_id()
            && !looks_like_instance_id(instance_id)
        {
            return Err(TriggerError::NotAnInstanceId {
                instance_id: instance_id.to_owned(),
                detail_type,
                event_id,
            });
        }
        Ok(Trigger {
            event_id,
            time,
            notice,
        })
    }
}

/// `i-` and 8 or 17 hex digits: anything else cannot be an instance, and Auto Scaling would
/// only answer with a validation error.
fn looks_like_instance_id(id: &str) -> bool {
    id.strip_prefix("i-").is_some_and(|hex| {
        matches!(hex.len(), 8 | 17) && hex.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::sample_events::sample;

    #[test]
    fn the_three_sample_events_decode() {
        let warning = Trigger::from_payload(sample(
            "spot-interruption",
            "spot-interruption-warning.json",
        ))
        .unwrap();
        assert_eq!(warning.event_id, "1e5527d7-bb36-4607-3370-4164db56a40e");
        assert_eq!(
            warning.notice,
            InstanceNotice::SpotInterruption {
                instance_id: "i-0b1c2d3e4f5a6b7c8".into()
            }
        );
        let rebalance =
            Trigger::from_payload(sample("spot-interruption", "rebalance-recommendation.json"))
                .unwrap();
        assert!(matches!(
            rebalance.notice,
            InstanceNotice::RebalanceRecommendation { .. }
        ));
        let lifecycle = Trigger::from_payload(sample(
            "spot-interruption",
            "terminate-lifecycle-action.json",
        ))
        .unwrap();
        assert_eq!(
            lifecycle.notice,
            InstanceNotice::Terminating {
                instance_id: "i-0b1c2d3e4f5a6b7c8".into(),
                auto_scaling_group: "orchestrator-dev-img2vid".into(),
                lifecycle_hook_name: "drain-before-terminate".into(),
                lifecycle_action_token: "71514b9d-6a40-4b26-8523-05e7eEXAMPLE".into(),
            }
        );
    }

    #[test]
    fn other_detail_types_are_recognised_as_not_ours() {
        let mut event = sample("spot-interruption", "rebalance-recommendation.json");
        event["detail-type"] = "EC2 Instance State-change Notification".into();
        let notice = Trigger::from_payload(event).unwrap();
        assert!(matches!(notice.notice, InstanceNotice::Other { .. }));
    }

    #[test]
    fn a_warning_without_an_instance_id_is_malformed() {
        let mut event = sample("spot-interruption", "spot-interruption-warning.json");
        event["detail"] = serde_json::json!({"instance-action": "terminate"});
        let err = Trigger::from_payload(event).unwrap_err();
        assert!(
            err.to_string().contains("missing field `instance-id`"),
            "{err}"
        );
    }

    #[test]
    fn id_time_and_instance_id_are_required() {
        let mut no_id = sample("spot-interruption", "spot-interruption-warning.json");
        no_id.as_object_mut().unwrap().remove("id");
        let err = Trigger::from_payload(no_id).unwrap_err();
        assert!(matches!(err, TriggerError::MissingId { .. }), "{err}");

        let mut no_time = sample("spot-interruption", "spot-interruption-warning.json");
        no_time.as_object_mut().unwrap().remove("time");
        let err = Trigger::from_payload(no_time).unwrap_err();
        assert!(err.to_string().contains("has no `time`"), "{err}");

        for bad in [
            "",
            "i-",
            "vol-0b1c2d3e4f5a6b7c8",
            "i-0b1c2d3e4f5a6b7cZ",
            "i-123",
        ] {
            let mut event = sample("spot-interruption", "spot-interruption-warning.json");
            event["detail"]["instance-id"] = bad.into();
            let err = Trigger::from_payload(event).unwrap_err();
            assert!(
                matches!(err, TriggerError::NotAnInstanceId { .. }),
                "{bad:?}: {err}"
            );
        }
        let mut short_id = sample("spot-interruption", "rebalance-recommendation.json");
        short_id["detail"]["instance-id"] = "i-0123abcd".into();
        assert!(Trigger::from_payload(short_id).is_ok());
    }

    #[test]
    fn not_an_eventbridge_event_is_malformed() {
        for payload in [
            serde_json::json!({}),
            serde_json::json!([1, 2]),
            serde_json::json!("EC2 Spot Instance Interruption Warning"),
            serde_json::json!({"detail-type": 7, "source": "aws.ec2", "detail": {}}),
        ] {
            let err = Trigger::from_payload(payload.clone()).unwrap_err();
            assert!(
                err.to_string().starts_with("malformed EventBridge event"),
                "{payload}: {err}"
            );
        }
    }

    #[test]
    fn event_time_keeps_the_events_own_format() {
        let warning = Trigger::from_payload(sample(
            "spot-interruption",
            "spot-interruption-warning.json",
        ))
        .unwrap();
        assert_eq!(warning.time.to_string(), "2026-11-22T12:03:14Z");
        assert_eq!(
            warning.time.plus_seconds(120).to_string(),
            "2026-11-22T12:05:14Z"
        );
    }
}
