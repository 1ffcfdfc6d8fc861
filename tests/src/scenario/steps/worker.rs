//! A GPU worker, played by the scenario with the template's `WorkerRole`: every call it makes
//! is first checked against that role's policies (`harness::iam`, with the group's tags as
//! condition context), because moto would accept it whatever the role says. These are the
//! steps of docs/worker-contract.md.

use aws_sdk_autoscaling::types::AutoScalingGroup;
use serde_json::{Value, json};

use super::{OTHER_STACK, STACK, STAGE, World};
use crate::iam::{self, Request};
use crate::moto::{ACCOUNT_ID, REGION};
use crate::scenario::aws_error;

/// One worker: its instance, its group and what its role allows.
pub(super) struct Worker {
    pub(super) instance: String,
    group: AutoScalingGroup,
    statements: Vec<Value>,
}

/// A call on an Auto Scaling group as IAM sees it: the group's ARN, its tags as
/// `autoscaling:ResourceTag/…` condition keys.
pub(super) fn on_group(action: &str, group: &AutoScalingGroup) -> Request {
    let tags = group
        .tags()
        .iter()
        .filter_map(|t| Some((t.key.as_deref()?, t.value.as_deref()?)));
    Request::new(action, group.auto_scaling_group_arn().unwrap_or_default())
        .with_resource_tags("autoscaling", tags)
}

impl Worker {
    /// Whether the role allows `action` on `group` (its ARN and tags as the condition context).
    fn allowed_on_group(&self, action: &str, group: &AutoScalingGroup) -> Result<bool, String> {
        Ok(iam::evaluate(&self.statements, &on_group(action, group))?.is_allowed())
    }

    /// Refuses, like IAM would, a call the role does not allow.
    fn authorize(&self, request: &Request) -> Result<(), String> {
        match iam::evaluate(&self.statements, request)? {
            decision if decision.is_allowed() => Ok(()),
            decision => Err(format!(
                "WorkerRole does not allow {} on {} ({decision:?}); context {:?}",
                request.action, request.resource, request.context
            )),
        }
    }

    fn on_own_group(&self, action: &str) -> Request {
        on_group(action, &self.group)
    }
}

impl World {
    /// The worker on the first in-service instance of this stack's `workflow` group.
    pub(super) async fn worker_on(&self, workflow: &str) -> Result<Worker, String> {
        let group = self.group(workflow).await?;
        let instance = group
            .instances()
            .iter()
            .find(|i| i.lifecycle_state.as_ref().map(|s| s.as_str()) == Some("InService"))
            .and_then(|i| i.instance_id.clone())
            .ok_or_else(|| format!("{workflow} has no instance in service"))?;
        Ok(Worker {
            instance,
            group,
            statements: self.role_statements("WorkerRole")?,
        })
    }

    /// `SetInstanceProtection` as the worker, checked against its role first.
    async fn protect(&self, worker: &Worker, protected: bool) -> Result<(), String> {
        worker.authorize(&worker.on_own_group("autoscaling:SetInstanceProtection"))?;
        self.clients
            .autoscaling
            .set_instance_protection()
            .set_auto_scaling_group_name(worker.group.auto_scaling_group_name.clone())
            .instance_ids(&worker.instance)
            .protected_from_scale_in(protected)
            .send()
            .await
            .map_err(aws_error("SetInstanceProtection"))?;
        Ok(())
    }

    /// A worker takes a job: it protects its instance from scale-in. The queue then drains
    /// and the idle alarm fires, but scale-to-zero keeps the busy instance: desired capacity
    /// goes to 1, and the instance stays in service. The role would refuse the same call on
    /// the other stack's group.
    pub(super) async fn worker_protects_its_job(&self) -> Result<((), String), String> {
        let worker = self.worker_on("img2vid").await?;
        let other = self.group_named(&format!("{OTHER_STACK}-img2vid")).await?;
        for action in [
            "autoscaling:SetInstanceProtection",
            "autoscaling:RecordLifecycleActionHeartbeat",
            "autoscaling:CompleteLifecycleAction",
        ] {
            worker.authorize(&worker.on_own_group(action))?;
            if worker.allowed_on_group(action, &other)? {
                return Err(format!(
                    "WorkerRole allows {action} on {OTHER_STACK}'s group: the stack condition is missing"
                ));
            }
        }
        let fleet_key = self.read_fleet_secret(&worker).await?;
        self.protect(&worker, true).await?;
        let (alarm, report) = self.idle_alarm("img2vid").await?;
        let group = self.group("img2vid").await?;
        let kept = group.instances().iter().find(|i| {
            i.instance_id.as_deref() == Some(worker.instance.as_str())
                && i.lifecycle_state.as_ref().map(|s| s.as_str()) == Some("InService")
                && i.protected_from_scale_in == Some(true)
        });
        if kept.is_none() || group.desired_capacity != Some(1) {
            return Err(format!(
                "after {alarm}: desired {:?}, {} protected and in service: {}; report {report}",
                group.desired_capacity,
                worker.instance,
                kept.is_some()
            ));
        }
        Ok((
            (),
            format!(
                "{} protected (role allows it here, not on {OTHER_STACK}); {alarm} -> desired 1, it keeps running; fleet key read ({fleet_key})",
                worker.instance
            ),
        ))
    }

    /// The job is done: the worker removes its protection, and the next idle alarm takes the
    /// group to zero.
    pub(super) async fn idle_after_the_job(&self) -> Result<((), String), String> {
        let worker = self.worker_on("img2vid").await?;
        self.protect(&worker, false).await?;
        let (alarm, report) = self.idle_alarm("img2vid").await?;
        let idle = self.group("img2vid").await?;
        let busy = self.group("vid2vid").await?;
        if idle.desired_capacity != Some(0) {
            return Err(format!(
                "img2vid desired {:?} after {alarm}; report {report}",
                idle.desired_capacity
            ));
        }
        if busy.desired_capacity == Some(0) {
            return Err("vid2vid, which has work, was set to zero too".into());
        }
        Ok((
            (),
            format!(
                "{} unprotected; {alarm} -> img2vid desired 0; vid2vid left at {}",
                worker.instance,
                busy.desired_capacity.unwrap_or(0)
            ),
        ))
    }

    /// The fleet secret, read by name as the worker does: the name is its instance's
    /// `orchestrator:fleet-secret` tag (propagated from the group), `/<prefix>/<stage>/fleet/key`.
    async fn read_fleet_secret(&self, worker: &Worker) -> Result<String, String> {
        let arn = self.id("FleetSecret")?;
        worker.authorize(&Request::new("secretsmanager:GetSecretValue", arn))?;
        let name = worker
            .group
            .tags()
            .iter()
            .find(|t| t.key.as_deref() == Some("orchestrator:fleet-secret"))
            .and_then(|t| t.value.clone())
            .ok_or("the group has no orchestrator:fleet-secret tag")?;
        let expected = format!("/{}/{STAGE}/fleet/key", self.parameter("SecretPathPrefix"));
        if name != expected {
            return Err(format!(
                "orchestrator:fleet-secret is {name}, not the fleet secret {expected}"
            ));
        }
        let value = self
            .clients
            .secrets
            .get_secret_value()
            .secret_id(&name)
            .send()
            .await
            .map_err(aws_error(format!("GetSecretValue {name}")))?;
        let document: Value = serde_json::from_str(value.secret_string().unwrap_or_default())
            .map_err(|e| format!("{name}: {e}"))?;
        match (document["engine"].as_str(), document["password"].as_str()) {
            (Some("generic"), Some(key)) if !key.is_empty() => Ok(format!("{} chars", key.len())),
            _ => Err(format!("{name} is not a generic secret with a password")),
        }
    }

    /// The worker's own queue for fleet messages, `<stack>-worker-<instance id>`, subscribed
    /// to the fleet topic with a filter on its instance id (raw delivery: the body is the
    /// fleet message). Returns the queue URL.
    pub(super) async fn subscribe_worker_queue(&self, worker: &Worker) -> Result<String, String> {
        let name = format!("{STACK}-worker-{}", worker.instance);
        let queue_arn = format!("arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{name}");
        let topic = self.id("FleetEventsTopic")?;
        for action in [
            "sqs:CreateQueue",
            "sqs:SetQueueAttributes",
            "sqs:ReceiveMessage",
        ] {
            worker.authorize(&Request::new(action, &queue_arn))?;
        }
        let subscribe = Request::new("sns:Subscribe", topic)
            .with("sns:Protocol", "sqs")
            .with("sns:Endpoint", &queue_arn);
        worker.authorize(&subscribe)?;
        let elsewhere = subscribe.clone().with(
            "sns:Endpoint",
            &format!("arn:aws:sqs:{REGION}:{ACCOUNT_ID}:someone-elses-queue"),
        );
        if iam::evaluate(&worker.statements, &elsewhere)?.is_allowed() {
            return Err("WorkerRole may subscribe any queue to the fleet topic".into());
        }
        let sqs = &self.clients.sqs;
        let url = sqs
            .create_queue()
            .queue_name(&name)
            .send()
            .await
            .map_err(aws_error("CreateQueue"))?
            .queue_url
            .ok_or("CreateQueue: no URL")?;
        // Only the fleet topic may send to it.
        let policy = json!({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "sns.amazonaws.com"},
            "Action": "sqs:SendMessage", "Resource": queue_arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": topic}}}]});
        sqs.set_queue_attributes()
            .queue_url(&url)
            .attributes(
                aws_sdk_sqs::types::QueueAttributeName::Policy,
                policy.to_string(),
            )
            .send()
            .await
            .map_err(aws_error("SetQueueAttributes"))?;
        self.clients
            .sns
            .subscribe()
            .topic_arn(topic)
            .protocol("sqs")
            .endpoint(&queue_arn)
            .attributes("RawMessageDelivery", "true")
            .attributes("FilterPolicyScope", "MessageBody")
            .attributes(
                "FilterPolicy",
                json!({"instanceId": [worker.instance]}).to_string(),
            )
            .send()
            .await
            .map_err(aws_error("Subscribe"))?;
        Ok(url)
    }
}
