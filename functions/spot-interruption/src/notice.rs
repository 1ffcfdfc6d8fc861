//! The EC2 and Auto Scaling events spot-interruption acts on, decoded from EventBridge.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use serde::Deserialize;
use serde_json::Value;
use shared::payload::{MalformedEvent, decode};

pub const SPOT_INTERRUPTION_WARNING: &str = "EC2 Spot Instance Interruption Warning";
pub const REBALANCE_RECOMMENDATION: &str = "EC2 Instance Rebalance Recommendation";
pub const TERMINATE_LIFECYCLE_ACTION: &str = "EC2 Instance-terminate Lifecycle Action";

/// What an event says is about to happen to an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceNotice {
    SpotInterruption {
        instance_id: String,
    },
    RebalanceRecommendation {
        instance_id: String,
    },
    Terminating {
        instance_id: String,
        auto_scaling_group: String,
        lifecycle_hook_name: String,
        lifecycle_action_token: String,
    },
    /// Another detail type (the rule should not route it here): logged and left alone.
    Other {
        detail_type: String,
    },
}

/// An event with its id, which deduplicates repeated deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedNotice {
    pub event_id: String,
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

impl ReceivedNotice {
    pub fn from_payload(payload: Value) -> Result<Self, MalformedEvent> {
        let event: EventBridgeEvent = decode(payload, "EventBridge")?;
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
        Ok(ReceivedNotice {
            event_id: event.id.unwrap_or_default(),
            notice,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> Value {
        let path = format!(
            "{}/../../events/spot-interruption/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    #[test]
    fn the_three_sample_events_decode() {
        let warning =
            ReceivedNotice::from_payload(sample("spot-interruption-warning.json")).unwrap();
        assert_eq!(warning.event_id, "1e5527d7-bb36-4607-3370-4164db56a40e");
        assert_eq!(
            warning.notice,
            InstanceNotice::SpotInterruption {
                instance_id: "i-0b1c2d3e4f5a6b7c8".into()
            }
        );
        let rebalance =
            ReceivedNotice::from_payload(sample("rebalance-recommendation.json")).unwrap();
        assert!(matches!(
            rebalance.notice,
            InstanceNotice::RebalanceRecommendation { .. }
        ));
        let lifecycle =
            ReceivedNotice::from_payload(sample("terminate-lifecycle-action.json")).unwrap();
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
        let mut event = sample("rebalance-recommendation.json");
        event["detail-type"] = "EC2 Instance State-change Notification".into();
        let notice = ReceivedNotice::from_payload(event).unwrap();
        assert!(matches!(notice.notice, InstanceNotice::Other { .. }));
    }

    #[test]
    fn a_warning_without_an_instance_id_is_malformed() {
        let mut event = sample("spot-interruption-warning.json");
        event["detail"] = serde_json::json!({"instance-action": "terminate"});
        let err = ReceivedNotice::from_payload(event).unwrap_err();
        assert!(
            err.to_string().contains("missing field `instance-id`"),
            "{err}"
        );
    }
}
