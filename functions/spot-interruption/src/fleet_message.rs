//! The message the fleet topic carries: what the backend reads to requeue a worker's jobs.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::notice::EventTime;

/// Message attribute names, for SNS subscription filter policies.
pub const TYPE_ATTRIBUTE: &str = "type";
pub const WORKFLOW_ATTRIBUTE: &str = "workflow";

/// What is about to happen to the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FleetMessageKind {
    /// Terminated at `deadline`: hand work back now.
    SpotInterruption,
    /// Elevated interruption risk: stop taking new jobs; capacity rebalance replaces it.
    RebalanceRecommendation,
    /// Auto Scaling is terminating it: finish, then complete the lifecycle action.
    InstanceTerminating,
}

impl FleetMessageKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            FleetMessageKind::SpotInterruption => "spot-interruption",
            FleetMessageKind::RebalanceRecommendation => "rebalance-recommendation",
            FleetMessageKind::InstanceTerminating => "instance-terminating",
        }
    }
}

/// The lifecycle action a worker completes when it is done (terminate lifecycle hook).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleAction {
    pub hook_name: String,
    pub token: String,
}

/// One fleet message; `event_id` lets subscribers drop repeated deliveries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetMessage {
    pub kind: FleetMessageKind,
    pub workflow: String,
    pub auto_scaling_group: String,
    pub instance_id: String,
    pub event_id: String,
    #[serde(with = "crate::notice::unix_seconds")]
    pub time: EventTime,
    #[serde(with = "crate::notice::unix_seconds::option")]
    pub deadline: Option<EventTime>,
    pub lifecycle_action: Option<LifecycleAction>,
}

impl FleetMessage {
    /// The SNS message body (DESIGN.md, spot-interruption). Optional fields are left out,
    /// not sent as `null`.
    pub fn body(&self) -> String {
        let mut body = json!({
            "type": self.kind.as_str(),
            "workflow": self.workflow,
            "autoScalingGroup": self.auto_scaling_group,
            "instanceId": self.instance_id,
            "eventId": self.event_id,
            "time": self.time.to_string(),
        });
        if let Value::Object(fields) = &mut body {
            if let Some(deadline) = self.deadline {
                fields.insert("deadline".into(), deadline.to_string().into());
            }
            if let Some(action) = &self.lifecycle_action {
                fields.insert("lifecycleHookName".into(), action.hook_name.clone().into());
                fields.insert("lifecycleActionToken".into(), action.token.clone().into());
            }
        }
        body.to_string()
    }

    /// The String message attributes subscription filters match on.
    pub fn attributes(&self) -> [(&'static str, &str); 2] {
        [
            (TYPE_ATTRIBUTE, self.kind.as_str()),
            (WORKFLOW_ATTRIBUTE, &self.workflow),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: FleetMessageKind) -> FleetMessage {
        FleetMessage {
            kind,
            workflow: "img2vid".into(),
            auto_scaling_group: "orchestrator-dev-img2vid".into(),
            instance_id: "i-0b1c2d3e4f5a6b7c8".into(),
            event_id: "1e5527d7-bb36-4607-3370-4164db56a40e".into(),
            time: EventTime::from_unix_seconds(1_795_348_994), // 2026-11-22T12:03:14Z
            deadline: None,
            lifecycle_action: None,
        }
    }

    #[test]
    fn an_interruption_carries_its_deadline_and_no_lifecycle_fields() {
        let mut warning = message(FleetMessageKind::SpotInterruption);
        warning.deadline = Some(warning.time.plus_seconds(120));
        let body: Value = serde_json::from_str(&warning.body()).unwrap();
        assert_eq!(
            body,
            json!({
                "type": "spot-interruption",
                "workflow": "img2vid",
                "autoScalingGroup": "orchestrator-dev-img2vid",
                "instanceId": "i-0b1c2d3e4f5a6b7c8",
                "eventId": "1e5527d7-bb36-4607-3370-4164db56a40e",
                "time": "2026-11-22T12:03:14Z",
                "deadline": "2026-11-22T12:05:14Z",
            })
        );
        assert_eq!(
            warning.attributes(),
            [("type", "spot-interruption"), ("workflow", "img2vid")]
        );
    }

    #[test]
    fn a_terminating_message_carries_hook_and_token() {
        let mut terminating = message(FleetMessageKind::InstanceTerminating);
        terminating.lifecycle_action = Some(LifecycleAction {
            hook_name: "drain-before-terminate".into(),
            token: "71514b9d-6a40-4b26-8523-05e7eEXAMPLE".into(),
        });
        let body: Value = serde_json::from_str(&terminating.body()).unwrap();
        assert_eq!(body["type"], "instance-terminating");
        assert_eq!(body["lifecycleHookName"], "drain-before-terminate");
        assert_eq!(
            body["lifecycleActionToken"],
            "71514b9d-6a40-4b26-8523-05e7eEXAMPLE"
        );
        assert!(body.get("deadline").is_none(), "{body}");
    }
}
