//! The decision: a notice and what Auto Scaling says about the instance and its group → what
//! to do. Plain values in, an [`ActionPlan`] out; the AWS adapter gathers the facts and carries
//! the plan out.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use shared::fleet_tags::{NotOurs, Ownership, ownership};

use crate::fleet_message::{FleetMessage, FleetMessageKind, LifecycleAction};
use crate::notice::InstanceNotice;
use crate::trigger::Trigger;

/// A Spot interruption warning comes two minutes before EC2 reclaims the instance.
pub const INTERRUPTION_NOTICE_SECONDS: i64 = 120;

/// An instance as Auto Scaling lists it (`DescribeAutoScalingInstances`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceFacts {
    pub instance_id: String,
    pub auto_scaling_group: String,
    pub instance_type: String,
    pub availability_zone: String,
    /// `InService`, `Terminating:Wait`, `Detaching`, ...
    pub lifecycle_state: String,
}

/// A group and its tags (`DescribeAutoScalingGroups`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupFacts {
    pub name: String,
    pub tags: BTreeMap<String, String>,
}

/// What the adapter found out before deciding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// `None` when no group lists the instance: not Auto Scaling's, or already detached.
    pub instance: Option<InstanceFacts>,
    /// The instance's group (the one the lifecycle event names); `None` when it does not exist.
    pub group: Option<GroupFacts>,
}

/// What the adapter looks up for a notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FactsNeeded {
    /// Nothing: the notice is not one this function acts on.
    None,
    /// The instance, then the group Auto Scaling says it belongs to.
    InstanceThenItsGroup { instance_id: String },
    /// The instance and the group the event names (a lifecycle event knows its group).
    InstanceAndGroup {
        instance_id: String,
        auto_scaling_group: String,
    },
}

impl FactsNeeded {
    pub fn for_notice(notice: &InstanceNotice) -> Self {
        match notice {
            InstanceNotice::SpotInterruption { instance_id }
            | InstanceNotice::RebalanceRecommendation { instance_id } => {
                FactsNeeded::InstanceThenItsGroup {
                    instance_id: instance_id.clone(),
                }
            }
            InstanceNotice::Terminating {
                instance_id,
                auto_scaling_group,
                ..
            } => FactsNeeded::InstanceAndGroup {
                instance_id: instance_id.clone(),
                auto_scaling_group: auto_scaling_group.clone(),
            },
            InstanceNotice::Other { .. } => FactsNeeded::None,
        }
    }
}

/// Detach the instance without lowering desired capacity, so the group launches its
/// replacement now instead of after the instance is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Detach {
    pub instance_id: String,
    pub auto_scaling_group: String,
}

/// One `SpotInterruptions` data point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InterruptionCount {
    pub workflow: String,
    pub instance_type: String,
    pub availability_zone: String,
}

/// Complete a terminate lifecycle action with `CONTINUE` because no worker is left to do it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleCompletion {
    pub auto_scaling_group: String,
    pub hook_name: String,
    pub token: String,
    pub instance_id: String,
}

/// What to do: publish, detach and complete are independent of each other and all attempted
/// (neither the replacement nor the message waits on the other's success); the count follows
/// the detach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionPlan {
    pub fleet_message: FleetMessage,
    pub detach: Option<Detach>,
    pub count_interruption: Option<InterruptionCount>,
    pub complete_lifecycle_action: Option<LifecycleCompletion>,
}

/// What an earlier attempt at the same event already did (the record a transiently failed
/// invocation leaves for Lambda's retry: [`crate::unfinished`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub published: bool,
    /// Detached, or found already detached.
    pub detached: bool,
    pub counted: bool,
    /// Completed, or found already resolved.
    pub lifecycle_action_resolved: bool,
}

/// The steps of a plan still to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Steps<'a> {
    pub publish: Option<&'a FleetMessage>,
    pub detach: Option<&'a Detach>,
    /// With a detach: counted only when this attempt's detach succeeds (a detach that finds
    /// the instance gone was someone else's, who counted it). Without one: counted now.
    pub count_interruption: Option<&'a InterruptionCount>,
    pub complete_lifecycle_action: Option<&'a LifecycleCompletion>,
}

impl ActionPlan {
    /// What is left to do once `progress` is done: nothing is done twice. An earlier detach
    /// settles the count too: it counted, or found the instance already detached.
    pub fn steps_left(&self, progress: &Progress) -> Steps<'_> {
        Steps {
            publish: (!progress.published).then_some(&self.fleet_message),
            detach: self.detach.as_ref().filter(|_| !progress.detached),
            count_interruption: self
                .count_interruption
                .as_ref()
                .filter(|_| !progress.counted && !progress.detached),
            complete_lifecycle_action: self
                .complete_lifecycle_action
                .as_ref()
                .filter(|_| !progress.lifecycle_action_resolved),
        }
    }
}

impl Steps<'_> {
    pub fn is_empty(&self) -> bool {
        self.publish.is_none()
            && self.detach.is_none()
            && self.count_interruption.is_none()
            && self.complete_lifecycle_action.is_none()
    }
}

/// Why nothing is done. Every case ends the invocation successfully: a retry would find the
/// same facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignored {
    NotHandled {
        detail_type: String,
    },
    /// Not in any Auto Scaling group: not ours, or a repeated warning after the detach.
    NotInAnyGroup {
        instance_id: String,
    },
    GroupNotFound {
        auto_scaling_group: String,
    },
    /// The group is not this stack's to act on: unmanaged, another stack's (or no stack's),
    /// or managed without a workflow (a template mistake, worth a warning).
    NotOurs {
        auto_scaling_group: String,
        why: NotOurs,
    },
    /// Already on its way out of the group (a concurrent or repeated delivery detached it).
    AlreadyDetaching {
        instance_id: String,
        auto_scaling_group: String,
        lifecycle_state: String,
    },
}

impl Ignored {
    /// A misconfiguration someone should fix, rather than an expected no-op.
    pub fn is_misconfiguration(&self) -> bool {
        matches!(self, Ignored::NotOurs { why, .. } if why.is_misconfiguration())
    }
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ignored::NotHandled { detail_type } => {
                write!(
                    f,
                    "detail type `{detail_type}` is not one this function handles"
                )
            }
            Ignored::NotInAnyGroup { instance_id } => write!(
                f,
                "instance {instance_id} is in no Auto Scaling group (not managed by one, or already detached)"
            ),
            Ignored::GroupNotFound { auto_scaling_group } => {
                write!(f, "Auto Scaling group {auto_scaling_group} does not exist")
            }
            Ignored::NotOurs {
                auto_scaling_group,
                why,
            } => write!(
                f,
                "Auto Scaling group {auto_scaling_group} is left alone: {why}"
            ),
            Ignored::AlreadyDetaching {
                instance_id,
                auto_scaling_group,
                lifecycle_state,
            } => write!(
                f,
                "instance {instance_id} is already leaving {auto_scaling_group} ({lifecycle_state})"
            ),
        }
    }
}

/// The decision for one notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Act(Box<ActionPlan>),
    Ignore(Ignored),
}

/// Where an instance stands in its group, as far as the decision cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Membership {
    /// `InService` or `Standby`: the only states `DetachInstances` accepts.
    Detachable,
    /// Being detached or detached: a repeated delivery found our own work.
    Detaching,
    /// Launching, terminating, warm pool...: the group already handles it; not detachable.
    Other,
}

impl Membership {
    fn of(lifecycle_state: &str) -> Self {
        match lifecycle_state {
            "InService" | "Standby" => Membership::Detachable,
            "Detaching" | "Detached" => Membership::Detaching,
            _ => Membership::Other,
        }
    }
}

/// Decides what to do about `received`, given `facts` gathered as [`FactsNeeded`] says, for
/// the function serving `stack` (it acts only on that stack's groups).
pub fn decide(received: &Trigger, facts: &Facts, stack: &str) -> Decision {
    match decide_or_ignore(received, facts, stack) {
        Ok(plan) => Decision::Act(Box::new(plan)),
        Err(ignored) => Decision::Ignore(ignored),
    }
}

fn decide_or_ignore(received: &Trigger, facts: &Facts, stack: &str) -> Result<ActionPlan, Ignored> {
    match &received.notice {
        InstanceNotice::Other { detail_type } => Err(Ignored::NotHandled {
            detail_type: detail_type.clone(),
        }),
        InstanceNotice::SpotInterruption { instance_id } => {
            spot_interruption(received, facts, stack, instance_id)
        }
        InstanceNotice::RebalanceRecommendation { instance_id } => {
            rebalance_recommendation(received, facts, stack, instance_id)
        }
        InstanceNotice::Terminating {
            instance_id,
            auto_scaling_group,
            lifecycle_hook_name,
            lifecycle_action_token,
        } => {
            let action = LifecycleAction {
                hook_name: lifecycle_hook_name.clone(),
                token: lifecycle_action_token.clone(),
            };
            terminating(
                received,
                facts,
                stack,
                instance_id,
                auto_scaling_group,
                action,
            )
        }
    }
}

/// A Spot interruption warning: tell the fleet (with the two-minute deadline), detach the
/// instance so the group launches its replacement now, count the interruption.
fn spot_interruption(
    received: &Trigger,
    facts: &Facts,
    stack: &str,
    instance_id: &str,
) -> Result<ActionPlan, Ignored> {
    let (instance, workflow, membership) = our_instance(facts, instance_id, stack)?;
    let mut fleet_message = message(
        received,
        FleetMessageKind::SpotInterruption,
        &workflow,
        &instance.auto_scaling_group,
        instance_id,
    );
    fleet_message.deadline = Some(received.time.plus_seconds(INTERRUPTION_NOTICE_SECONDS));
    Ok(ActionPlan {
        fleet_message,
        // Launching or already terminating: the group replaces it by itself.
        detach: (membership == Membership::Detachable).then(|| Detach {
            instance_id: instance_id.to_owned(),
            auto_scaling_group: instance.auto_scaling_group.clone(),
        }),
        count_interruption: Some(InterruptionCount {
            workflow,
            instance_type: instance.instance_type.clone(),
            availability_zone: instance.availability_zone.clone(),
        }),
        complete_lifecycle_action: None,
    })
}

/// A rebalance recommendation: the fleet is told, nothing else.
fn rebalance_recommendation(
    received: &Trigger,
    facts: &Facts,
    stack: &str,
    instance_id: &str,
) -> Result<ActionPlan, Ignored> {
    let (instance, workflow, _) = our_instance(facts, instance_id, stack)?;
    // No detach: replacing on every recommendation is the thrash users of other
    // handlers complain about; the group's capacity rebalance decides.
    Ok(ActionPlan {
        fleet_message: message(
            received,
            FleetMessageKind::RebalanceRecommendation,
            &workflow,
            &instance.auto_scaling_group,
            instance_id,
        ),
        detach: None,
        count_interruption: None,
        complete_lifecycle_action: None,
    })
}

/// A terminate lifecycle action: the fleet is told (the worker completes the action); if no
/// worker is left, this function completes it.
fn terminating(
    received: &Trigger,
    facts: &Facts,
    stack: &str,
    instance_id: &str,
    auto_scaling_group: &str,
    action: LifecycleAction,
) -> Result<ActionPlan, Ignored> {
    // Another stack's hook is another stack's to complete.
    let workflow = our_workflow(facts, auto_scaling_group, stack)?;
    let mut fleet_message = message(
        received,
        FleetMessageKind::InstanceTerminating,
        &workflow,
        auto_scaling_group,
        instance_id,
    );
    // The group no longer lists the instance: no worker is left to complete the
    // action, which would otherwise hold the group until the heartbeat times out.
    let gone = !facts.instance.as_ref().is_some_and(|instance| {
        instance.instance_id == instance_id && instance.auto_scaling_group == auto_scaling_group
    });
    let complete_lifecycle_action = gone.then(|| LifecycleCompletion {
        auto_scaling_group: auto_scaling_group.to_owned(),
        hook_name: action.hook_name.clone(),
        token: action.token.clone(),
        instance_id: instance_id.to_owned(),
    });
    fleet_message.lifecycle_action = Some(action);
    Ok(ActionPlan {
        fleet_message,
        detach: None,
        count_interruption: None,
        complete_lifecycle_action,
    })
}

/// The fleet message about `received`, without a deadline or lifecycle action.
fn message(
    received: &Trigger,
    kind: FleetMessageKind,
    workflow: &str,
    group: &str,
    instance_id: &str,
) -> FleetMessage {
    FleetMessage {
        kind,
        workflow: workflow.to_owned(),
        auto_scaling_group: group.to_owned(),
        instance_id: instance_id.to_owned(),
        event_id: received.event_id.clone(),
        time: received.time,
        deadline: None,
        lifecycle_action: None,
    }
}

/// The instance a notice names, when a managed group of `stack` lists it and it is not
/// already leaving: its facts, the group's workflow and where it stands in the group.
fn our_instance<'a>(
    facts: &'a Facts,
    instance_id: &str,
    stack: &str,
) -> Result<(&'a InstanceFacts, String, Membership), Ignored> {
    let instance = listed_instance(facts, instance_id)?;
    let workflow = our_workflow(facts, &instance.auto_scaling_group, stack)?;
    let membership = still_in_group(instance)?;
    Ok((instance, workflow, membership))
}

fn listed_instance<'a>(facts: &'a Facts, instance_id: &str) -> Result<&'a InstanceFacts, Ignored> {
    facts
        .instance
        .as_ref()
        .filter(|instance| instance.instance_id == instance_id)
        .ok_or_else(|| Ignored::NotInAnyGroup {
            instance_id: instance_id.to_owned(),
        })
}

fn still_in_group(instance: &InstanceFacts) -> Result<Membership, Ignored> {
    match Membership::of(&instance.lifecycle_state) {
        Membership::Detaching => Err(Ignored::AlreadyDetaching {
            instance_id: instance.instance_id.clone(),
            auto_scaling_group: instance.auto_scaling_group.clone(),
            lifecycle_state: instance.lifecycle_state.clone(),
        }),
        membership => Ok(membership),
    }
}

/// The workflow of `group_name` if it is a managed group of `stack`.
fn our_workflow(facts: &Facts, group_name: &str, stack: &str) -> Result<String, Ignored> {
    let group = facts
        .group
        .as_ref()
        .filter(|group| group.name == group_name)
        .ok_or_else(|| Ignored::GroupNotFound {
            auto_scaling_group: group_name.to_owned(),
        })?;
    match ownership(|key| group.tags.get(key).map(String::as_str), stack) {
        Ownership::Ours { workflow } => Ok(workflow),
        Ownership::NotOurs(why) => Err(Ignored::NotOurs {
            auto_scaling_group: group_name.to_owned(),
            why,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notice::EventTime;
    use shared::fleet_tags::{MANAGED_TAG, STACK_TAG, WORKFLOW_TAG};

    const STACK: &str = "orchestrator-dev";
    const INSTANCE: &str = "i-0b1c2d3e4f5a6b7c8";
    const GROUP: &str = "orchestrator-dev-img2vid";
    const TIME: EventTime = EventTime::from_unix_seconds(1_795_348_994); // 2026-11-22T12:03:14Z

    fn received(notice: InstanceNotice) -> Trigger {
        Trigger {
            event_id: "evt-1".into(),
            time: TIME,
            notice,
        }
    }

    fn warning() -> Trigger {
        received(InstanceNotice::SpotInterruption {
            instance_id: INSTANCE.into(),
        })
    }

    fn rebalance() -> Trigger {
        received(InstanceNotice::RebalanceRecommendation {
            instance_id: INSTANCE.into(),
        })
    }

    fn terminating() -> Trigger {
        received(InstanceNotice::Terminating {
            instance_id: INSTANCE.into(),
            auto_scaling_group: GROUP.into(),
            lifecycle_hook_name: "drain".into(),
            lifecycle_action_token: "token-1".into(),
        })
    }

    fn instance(state: &str) -> Option<InstanceFacts> {
        Some(InstanceFacts {
            instance_id: INSTANCE.into(),
            auto_scaling_group: GROUP.into(),
            instance_type: "g5.xlarge".into(),
            availability_zone: "us-east-1a".into(),
            lifecycle_state: state.into(),
        })
    }

    fn group(tags: &[(&str, &str)]) -> Option<GroupFacts> {
        Some(GroupFacts {
            name: GROUP.into(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
    }

    const MANAGED: &[(&str, &str)] = &[
        (MANAGED_TAG, "true"),
        (STACK_TAG, STACK),
        (WORKFLOW_TAG, "img2vid"),
    ];

    fn facts(instance: Option<InstanceFacts>, group: Option<GroupFacts>) -> Facts {
        Facts { instance, group }
    }

    type Summary = (&'static str, bool, bool, bool);

    /// What a decision amounts to, compactly: (message type, detach?, count?, complete?) or
    /// the reason it was ignored.
    fn summary(decision: &Decision) -> Result<Summary, String> {
        match decision {
            Decision::Act(plan) => Ok((
                plan.fleet_message.kind.as_str(),
                plan.detach.is_some(),
                plan.count_interruption.is_some(),
                plan.complete_lifecycle_action.is_some(),
            )),
            Decision::Ignore(reason) => Err(reason.to_string()),
        }
    }

    #[test]
    fn decisions_table() {
        let unmanaged = &[
            (MANAGED_TAG, "false"),
            (STACK_TAG, STACK),
            (WORKFLOW_TAG, "img2vid"),
        ][..];
        let untagged = &[("team", "ml")][..];
        let no_workflow = &[(MANAGED_TAG, "true"), (STACK_TAG, STACK)][..];
        // The same workflow slug, managed by the staging stack.
        let other_stack = &[
            (MANAGED_TAG, "true"),
            (STACK_TAG, "orchestrator-staging"),
            (WORKFLOW_TAG, "img2vid"),
        ][..];
        let no_stack = &[(MANAGED_TAG, "true"), (WORKFLOW_TAG, "img2vid")][..];
        let unmanaged_other_stack = &[
            (MANAGED_TAG, "false"),
            (STACK_TAG, "orchestrator-staging"),
            (WORKFLOW_TAG, "img2vid"),
        ][..];
        let other_stack_no_workflow =
            &[(MANAGED_TAG, "true"), (STACK_TAG, "orchestrator-staging")][..];
        let cases: Vec<(&str, Trigger, Facts, Result<Summary, &str>)> = vec![
            (
                "warning, in service",
                warning(),
                facts(instance("InService"), group(MANAGED)),
                Ok(("spot-interruption", true, true, false)),
            ),
            (
                "warning, standby",
                warning(),
                facts(instance("Standby"), group(MANAGED)),
                Ok(("spot-interruption", true, true, false)),
            ),
            (
                "warning, group already terminating it",
                warning(),
                facts(instance("Terminating:Wait"), group(MANAGED)),
                Ok(("spot-interruption", false, true, false)),
            ),
            (
                "warning, still launching",
                warning(),
                facts(instance("Pending"), group(MANAGED)),
                Ok(("spot-interruption", false, true, false)),
            ),
            (
                "warning, repeated while detaching",
                warning(),
                facts(instance("Detaching"), group(MANAGED)),
                Err("already leaving"),
            ),
            (
                "warning, repeated after the detach",
                warning(),
                facts(None, None),
                Err("in no Auto Scaling group"),
            ),
            (
                "warning, unmanaged group",
                warning(),
                facts(instance("InService"), group(unmanaged)),
                Err("not tagged orchestrator:managed=true"),
            ),
            (
                "warning, untagged group",
                warning(),
                facts(instance("InService"), group(untagged)),
                Err("not tagged orchestrator:managed=true"),
            ),
            (
                "warning, managed without workflow",
                warning(),
                facts(instance("InService"), group(no_workflow)),
                Err("has no orchestrator:workflow"),
            ),
            (
                "warning, another stack's group",
                warning(),
                facts(instance("InService"), group(other_stack)),
                Err("other stack (orchestrator:stack=orchestrator-staging)"),
            ),
            (
                "warning, managed group of no stack",
                warning(),
                facts(instance("InService"), group(no_stack)),
                Err("other stack (tagged orchestrator:managed=true but no orchestrator:stack tag)"),
            ),
            (
                "warning, another stack's unmanaged group",
                warning(),
                facts(instance("InService"), group(unmanaged_other_stack)),
                Err("not tagged orchestrator:managed=true"),
            ),
            (
                "warning, another stack's group without workflow",
                warning(),
                facts(instance("InService"), group(other_stack_no_workflow)),
                Err("other stack (orchestrator:stack=orchestrator-staging)"),
            ),
            (
                "warning, group vanished",
                warning(),
                facts(instance("InService"), None),
                Err("does not exist"),
            ),
            (
                "rebalance, in service",
                rebalance(),
                facts(instance("InService"), group(MANAGED)),
                Ok(("rebalance-recommendation", false, false, false)),
            ),
            (
                "rebalance, unmanaged",
                rebalance(),
                facts(instance("InService"), group(unmanaged)),
                Err("not tagged"),
            ),
            (
                "rebalance, another stack's group",
                rebalance(),
                facts(instance("InService"), group(other_stack)),
                Err("other stack (orchestrator:stack=orchestrator-staging)"),
            ),
            (
                "rebalance, unknown instance",
                rebalance(),
                facts(None, None),
                Err("in no Auto Scaling group"),
            ),
            (
                "rebalance, detached",
                rebalance(),
                facts(instance("Detached"), group(MANAGED)),
                Err("already leaving"),
            ),
            (
                "terminating, worker still there",
                terminating(),
                facts(instance("Terminating:Wait"), group(MANAGED)),
                Ok(("instance-terminating", false, false, false)),
            ),
            (
                "terminating, instance gone",
                terminating(),
                facts(None, group(MANAGED)),
                Ok(("instance-terminating", false, false, true)),
            ),
            (
                "terminating, unmanaged",
                terminating(),
                facts(None, group(unmanaged)),
                Err("not tagged"),
            ),
            (
                "terminating, another stack's group: its hook is not completed",
                terminating(),
                facts(None, group(other_stack)),
                Err("other stack (orchestrator:stack=orchestrator-staging)"),
            ),
            (
                "terminating, managed group of no stack",
                terminating(),
                facts(None, group(no_stack)),
                Err("no orchestrator:stack tag"),
            ),
            (
                "terminating, group gone",
                terminating(),
                facts(None, None),
                Err("does not exist"),
            ),
            (
                "another detail type",
                received(InstanceNotice::Other {
                    detail_type: "EC2 Instance State-change Notification".into(),
                }),
                Facts::default(),
                Err("is not one this function handles"),
            ),
        ];
        for (name, notice, facts, expected) in cases {
            let decision = decide(&notice, &facts, STACK);
            match (summary(&decision), expected) {
                (Ok(actual), Ok(expected)) => assert_eq!(actual, expected, "{name}"),
                (Err(reason), Err(fragment)) => {
                    assert!(reason.contains(fragment), "{name}: {reason}")
                }
                (actual, expected) => panic!("{name}: got {actual:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn a_warning_plan_detaches_keeps_capacity_counts_and_announces_the_deadline() {
        let Decision::Act(plan) = decide(
            &warning(),
            &facts(instance("InService"), group(MANAGED)),
            STACK,
        ) else {
            panic!("a managed in-service instance is acted on");
        };
        assert_eq!(
            plan.detach,
            Some(Detach {
                instance_id: INSTANCE.into(),
                auto_scaling_group: GROUP.into()
            })
        );
        assert_eq!(
            plan.count_interruption,
            Some(InterruptionCount {
                workflow: "img2vid".into(),
                instance_type: "g5.xlarge".into(),
                availability_zone: "us-east-1a".into(),
            })
        );
        let message = plan.fleet_message;
        assert_eq!(message.workflow, "img2vid");
        assert_eq!(message.auto_scaling_group, GROUP);
        assert_eq!(message.event_id, "evt-1");
        assert_eq!(message.time.to_string(), "2026-11-22T12:03:14Z");
        assert_eq!(
            message.deadline.map(|d| d.to_string()).as_deref(),
            Some("2026-11-22T12:05:14Z")
        );
    }

    #[test]
    fn a_retried_plan_repeats_only_what_the_earlier_attempt_did_not_do() {
        let Decision::Act(plan) = decide(
            &warning(),
            &facts(instance("InService"), group(MANAGED)),
            STACK,
        ) else {
            panic!("acted on");
        };
        // (published, detached, counted) before → (publish, detach, count) now.
        let cases = [
            ((false, false, false), (true, true, true)),
            // The message went out, the detach failed: detach and count, no second message.
            ((true, false, false), (false, true, true)),
            // Detached (and counted), the publish failed: only the message.
            ((false, true, true), (true, false, false)),
            // Found already detached: whoever detached it counted it.
            ((false, true, false), (true, false, false)),
            ((true, true, true), (false, false, false)),
        ];
        for ((published, detached, counted), expected) in cases {
            let progress = Progress {
                published,
                detached,
                counted,
                lifecycle_action_resolved: false,
            };
            let steps = plan.steps_left(&progress);
            assert_eq!(
                (
                    steps.publish.is_some(),
                    steps.detach.is_some(),
                    steps.count_interruption.is_some()
                ),
                expected,
                "{progress:?}"
            );
            assert_eq!(steps.is_empty(), expected == (false, false, false));
        }
        let all = plan.steps_left(&Progress::default());
        assert_eq!(all.publish, Some(&plan.fleet_message));
        assert_eq!(all.detach, plan.detach.as_ref());
    }

    #[test]
    fn a_retried_lifecycle_plan_does_not_complete_twice() {
        let Decision::Act(plan) = decide(&terminating(), &facts(None, group(MANAGED)), STACK)
        else {
            panic!("acted on");
        };
        let resolved = Progress {
            lifecycle_action_resolved: true,
            ..Progress::default()
        };
        let steps = plan.steps_left(&resolved);
        assert!(steps.complete_lifecycle_action.is_none());
        assert!(steps.publish.is_some());
        let published = Progress {
            published: true,
            ..Progress::default()
        };
        let steps = plan.steps_left(&published);
        assert!(steps.complete_lifecycle_action.is_some());
        assert!(steps.publish.is_none());
    }

    #[test]
    fn a_lifecycle_plan_hands_hook_and_token_over_and_completes_only_for_a_gone_instance() {
        let Decision::Act(plan) = decide(&terminating(), &facts(None, group(MANAGED)), STACK)
        else {
            panic!("a managed group's lifecycle action is acted on");
        };
        assert_eq!(
            plan.fleet_message.lifecycle_action,
            Some(LifecycleAction {
                hook_name: "drain".into(),
                token: "token-1".into()
            })
        );
        assert_eq!(plan.fleet_message.deadline, None);
        assert_eq!(
            plan.complete_lifecycle_action,
            Some(LifecycleCompletion {
                auto_scaling_group: GROUP.into(),
                hook_name: "drain".into(),
                token: "token-1".into(),
                instance_id: INSTANCE.into(),
            })
        );
        // Listed in another group: not the one whose action is pending, so it is gone from ours.
        let mut elsewhere = instance("InService");
        if let Some(i) = elsewhere.as_mut() {
            i.auto_scaling_group = "other".into();
        }
        let Decision::Act(plan) = decide(&terminating(), &facts(elsewhere, group(MANAGED)), STACK)
        else {
            panic!("acted on");
        };
        assert!(plan.complete_lifecycle_action.is_some());
    }

    #[test]
    fn the_workflow_tag_is_trimmed_and_managed_must_be_exactly_true() {
        let spaced = &[
            (MANAGED_TAG, "true"),
            (STACK_TAG, STACK),
            (WORKFLOW_TAG, " img2vid "),
        ][..];
        let Decision::Act(plan) = decide(
            &warning(),
            &facts(instance("InService"), group(spaced)),
            STACK,
        ) else {
            panic!("acted on");
        };
        assert_eq!(plan.fleet_message.workflow, "img2vid");
        for value in ["TRUE", "yes", "1", ""] {
            let tags = &[
                (MANAGED_TAG, value),
                (STACK_TAG, STACK),
                (WORKFLOW_TAG, "img2vid"),
            ][..];
            assert!(
                matches!(
                    decide(
                        &warning(),
                        &facts(instance("InService"), group(tags)),
                        STACK
                    ),
                    Decision::Ignore(Ignored::NotOurs {
                        why: NotOurs::Unmanaged,
                        ..
                    })
                ),
                "{MANAGED_TAG}={value:?} must not count as managed"
            );
        }
    }

    #[test]
    fn another_stacks_group_is_ignored_with_a_reason_naming_that_stack() {
        let other_stack = &[
            (MANAGED_TAG, "true"),
            (STACK_TAG, "orchestrator-staging"),
            (WORKFLOW_TAG, "img2vid"),
        ][..];
        let decision = decide(
            &warning(),
            &facts(instance("InService"), group(other_stack)),
            STACK,
        );
        let Decision::Ignore(ignored) = decision else {
            panic!("another stack's instance is not acted on: {decision:?}");
        };
        assert_eq!(
            ignored.to_string(),
            "Auto Scaling group orchestrator-dev-img2vid is left alone: other stack \
             (orchestrator:stack=orchestrator-staging)"
        );
        assert!(!ignored.is_misconfiguration(), "a neighbour, not a mistake");
        // The same group is the other stack's function's to act on.
        assert!(matches!(
            decide(
                &warning(),
                &facts(instance("InService"), group(other_stack)),
                "orchestrator-staging"
            ),
            Decision::Act(_)
        ));
        let no_stack = &[(MANAGED_TAG, "true"), (WORKFLOW_TAG, "img2vid")][..];
        let Decision::Ignore(ignored) = decide(
            &warning(),
            &facts(instance("InService"), group(no_stack)),
            STACK,
        ) else {
            panic!("a group of no stack is not acted on");
        };
        assert!(
            ignored.is_misconfiguration(),
            "no stack acts on it: {ignored}"
        );
    }
}
