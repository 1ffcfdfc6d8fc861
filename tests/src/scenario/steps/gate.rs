//! The deploy gate, invoked from CI against the template's own alarms.

use aws_sdk_cloudwatch::types::StateValue;
use serde_json::{Value, json};
use shared::sample_events::try_sample;

use super::World;
use super::fleet::set_alarm_state;
use crate::process::random_hex;

impl World {
    /// The function-error alarms of the template gate a CI deploy: all OK, the gate passes.
    pub(super) async fn gate_passes(&self) -> Result<(Vec<String>, String), String> {
        let cloudwatch = &self.clients.cloudwatch;
        let mut names = Vec::new();
        for logical in [
            "ScaleToZeroFunctionErrors",
            "SpotInterruptionFunctionErrors",
        ] {
            let alarm = self.put_alarm(logical).await?;
            // What CloudWatch reports once it has evaluated zero errors.
            set_alarm_state(cloudwatch, &alarm.name, StateValue::Ok).await?;
            names.push(alarm.name);
        }
        let verdict = self.gate(&names).await?;
        if verdict["verdict"] != "pass" {
            return Err(format!("expected pass, got {verdict}"));
        }
        Ok((names.clone(), format!("pass ({} alarms OK)", names.len())))
    }

    pub(super) async fn gate_fails(&self, names: &[String]) -> Result<((), String), String> {
        let firing = &names[0];
        set_alarm_state(&self.clients.cloudwatch, firing, StateValue::Alarm).await?;
        let verdict = self.gate(names).await?;
        if verdict["verdict"] != "fail" {
            return Err(format!("expected fail, got {verdict}"));
        }
        let reason = verdict["reason"].as_str().unwrap_or_default();
        if !reason.contains(firing.as_str()) {
            return Err(format!("the reason does not name {firing}: {verdict}"));
        }
        Ok(((), format!("fail: {reason}")))
    }

    /// The CI invoke sample, gating on `names` with a short bake.
    async fn gate(&self, names: &[String]) -> Result<Value, String> {
        let mut event = try_sample("deploy-gate", "ci-direct.json")?;
        let object = event
            .as_object_mut()
            .ok_or("ci-direct.json is not an object")?;
        // No load balancer here: the alarms are the checks.
        object.remove("TargetGroup");
        object.remove("LoadBalancer");
        object.insert("AlarmNames".into(), json!(names));
        object.insert("BakeSeconds".into(), json!("2"));
        object.insert("PollSeconds".into(), json!("1"));
        object.insert("Release".into(), json!(format!("local-{}", random_hex(4))));
        self.invoke("deploy-gate", &event).await
    }
}
