//! A second stack in the same account and region (`orch-other`, say staging beside dev) with
//! the same workflow slugs: its groups carry `orchestrator:stack=orch-other`, and nothing this
//! stack's functions do may change them.

use aws_sdk_autoscaling::types::{AutoScalingGroup, LaunchTemplateSpecification, Tag};

use super::worker::on_group;
use super::{BACKLOG, OTHER_STACK, World};
use crate::iam;
use crate::scenario::aws_error;

/// A group as far as "untouched" goes: desired capacity and every instance's state.
fn snapshot(group: &AutoScalingGroup) -> String {
    let mut instances: Vec<String> = group
        .instances()
        .iter()
        .map(|i| {
            format!(
                "{}:{}:{}",
                i.instance_id.as_deref().unwrap_or("?"),
                i.lifecycle_state.as_ref().map_or("?", |s| s.as_str()),
                if i.protected_from_scale_in == Some(true) {
                    "protected"
                } else {
                    "unprotected"
                }
            )
        })
        .collect();
    instances.sort();
    format!(
        "desired {} [{}]",
        group.desired_capacity.unwrap_or(-1),
        instances.join(", ")
    )
}

impl World {
    /// The other stack's groups, tagged as its template would tag them: img2vid with one
    /// instance (a wrong idle alarm would take it to 0), vid2vid at 0 (a wrong tick would
    /// wake it, since this stack's vid2vid has a backlog).
    pub(super) async fn create_other_stack_groups(&mut self) -> Result<((), String), String> {
        let autoscaling = &self.clients.autoscaling;
        let subnet = self.id("PrivateSubnetA")?.to_owned();
        for (workflow, _) in BACKLOG {
            let name = format!("{OTHER_STACK}-{workflow}");
            let desired = i32::from(workflow == "img2vid");
            let tag = |key: &str, value: &str| {
                Tag::builder()
                    .resource_id(&name)
                    .resource_type("auto-scaling-group")
                    .key(key)
                    .value(value)
                    .propagate_at_launch(true)
                    .build()
            };
            autoscaling
                .create_auto_scaling_group()
                .auto_scaling_group_name(&name)
                .launch_template(
                    LaunchTemplateSpecification::builder()
                        .launch_template_id(self.id(&format!("WorkerLaunchTemplate{workflow}"))?)
                        .build(),
                )
                .min_size(0)
                .max_size(4)
                .desired_capacity(desired)
                .vpc_zone_identifier(&subnet)
                .tags(tag("orchestrator:managed", "true"))
                .tags(tag("orchestrator:stack", OTHER_STACK))
                .tags(tag("orchestrator:workflow", workflow))
                .send()
                .await
                .map_err(aws_error(format!("CreateAutoScalingGroup {name}")))?;
            let group = self.group_named(&name).await?;
            self.other_groups.insert(name, snapshot(&group));
        }
        let detail = self
            .other_groups
            .iter()
            .map(|(name, snapshot)| format!("{name} {snapshot}"))
            .collect::<Vec<_>>()
            .join("; ");
        Ok(((), detail))
    }

    /// After the tick, both idle alarms and the Spot warning of this stack, and a Spot
    /// warning on one of its own instances handled by this stack's function, the other
    /// stack's groups are exactly as they were created. Their IAM conditions would refuse
    /// this stack's functions too.
    pub(super) async fn other_stack_untouched(&self) -> Result<((), String), String> {
        let img2vid = self.group_named(&format!("{OTHER_STACK}-img2vid")).await?;
        let instance = img2vid
            .instances()
            .first()
            .and_then(|i| i.instance_id.clone())
            .ok_or("the other stack's img2vid has no instance")?;
        let outcome = self
            .invoke("spot-interruption", &self.spot_warning_event(&instance)?)
            .await?;
        if outcome["outcome"] != "ignored" {
            return Err(format!(
                "a Spot warning on {instance} of {OTHER_STACK}: {outcome}"
            ));
        }
        for (name, before) in &self.other_groups {
            let now = snapshot(&self.group_named(name).await?);
            if &now != before {
                return Err(format!("{name} changed: {before} -> {now}"));
            }
        }
        let mut refused = Vec::new();
        for (role, action) in [
            ("ScaleToZeroFunctionRole", "autoscaling:SetDesiredCapacity"),
            (
                "SpotInterruptionFunctionRole",
                "autoscaling:DetachInstances",
            ),
        ] {
            let statements = self.role_statements(role)?;
            for group in [&img2vid, &self.group("img2vid").await?] {
                let allowed = iam::evaluate(&statements, &on_group(action, group))?.is_allowed();
                let theirs = group.auto_scaling_group_name() == img2vid.auto_scaling_group_name();
                if allowed == theirs {
                    return Err(format!(
                        "{role}: {action} on {} is {}",
                        group.auto_scaling_group_name().unwrap_or_default(),
                        if allowed { "allowed" } else { "refused" }
                    ));
                }
            }
            refused.push(action.trim_start_matches("autoscaling:"));
        }
        Ok((
            (),
            format!(
                "{} groups unchanged; Spot warning on its {instance} ignored; IAM refuses this stack's {} on them",
                self.other_groups.len(),
                refused.join("/")
            ),
        ))
    }
}
