//! The scaling decisions, as pure functions: group state, queue samples and the target in, a
//! decision out. Nothing here talks to AWS; the adapter carries the decisions out.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::Serialize;
use shared::fleet_tags::{NotOurs, Ownership};

use crate::fleet::{GroupState, QueueSample, SampleWindow, current_depth};

/// What to do with a group whose workflow looks idle (idle alarm or off-hours invoke).
#[derive(Debug, Clone, PartialEq)]
pub enum IdleDecision {
    /// Set desired capacity to `to`: zero, or the busy (protected) instances and `min_size`.
    ScaleIn {
        from: u32,
        to: u32,
        busy: u32,
    },
    Leave(LeaveReason),
}

/// Why a group was left as it is.
#[derive(Debug, Clone, PartialEq)]
pub enum LeaveReason {
    /// Unmanaged, another stack's (or no stack's), or managed without a workflow tag.
    NotOurs(NotOurs),
    /// Another managed group of this stack carries the same workflow tag: which one to size is
    /// ambiguous.
    SharedWorkflow { groups: usize },
    /// No usable queue sample in the look-back window: idleness cannot be confirmed.
    NoQueueData,
    /// The alarm is stale: work arrived since it fired.
    QueueNotEmpty { depth: f64 },
    /// Already at (or below) what scaling in would set.
    AlreadyIdle { desired: u32, floor: u32 },
    /// At zero with work queued, but `max_size` is 0.
    MaxSizeZero { depth: f64 },
    /// No Auto Scaling group carries this workflow's tag (an unknown workflow).
    NoGroup,
    /// A wake request with no job queued.
    NothingQueued,
    /// A wake request whose group already runs what the backlog needs, or more: a wake never
    /// shrinks a group.
    AlreadyEnough {
        desired: u32,
        need: u32,
        queued: u64,
    },
    /// A wake request sent longer ago than [`WAKE_MAX_AGE_SECONDS`].
    StaleWake { age_seconds: i64 },
    /// This execution environment settled a wake covering as many jobs or more a moment ago.
    RecentlySettled {
        capacity: u32,
        queued: u64,
        millis_ago: u128,
    },
}

impl fmt::Display for LeaveReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeaveReason::NotOurs(why) => why.fmt(f),
            LeaveReason::SharedWorkflow { groups } => write!(
                f,
                "{groups} managed groups of this stack share this orchestrator:workflow tag; none is sized until one remains"
            ),
            LeaveReason::NoQueueData => write!(
                f,
                "no queue depth sample in the look-back window; idleness not confirmed"
            ),
            LeaveReason::QueueNotEmpty { depth } => {
                write!(f, "queue depth is {depth} now; the alarm is stale")
            }
            LeaveReason::AlreadyIdle { desired, floor } => write!(
                f,
                "desired capacity {desired} is already at or below the idle floor {floor}"
            ),
            LeaveReason::MaxSizeZero { depth } => {
                write!(f, "queue depth is {depth} but max size is 0; cannot wake")
            }
            LeaveReason::NoGroup => write!(
                f,
                "no Auto Scaling group is tagged orchestrator:workflow with this workflow"
            ),
            LeaveReason::NothingQueued => write!(f, "0 jobs queued; nothing to wake for"),
            LeaveReason::AlreadyEnough {
                desired,
                need,
                queued,
            } => write!(
                f,
                "desired capacity {desired} already covers {queued} queued jobs (they need {need}); a wake never shrinks a group"
            ),
            LeaveReason::StaleWake { age_seconds } => write!(
                f,
                "wake request sent {age_seconds} s ago, more than {WAKE_MAX_AGE_SECONDS} s; the tick and target tracking have read the queue since"
            ),
            LeaveReason::RecentlySettled {
                capacity,
                queued,
                millis_ago,
            } => write!(
                f,
                "a wake for {queued} queued jobs left the group at {capacity} {millis_ago} ms ago in this execution environment"
            ),
        }
    }
}

/// The idle decision for one group: confirm the queue is still empty, then scale in to zero,
/// but never below the busy instances (killing a GPU mid-job is the worst outcome) nor below
/// the group's minimum (Auto Scaling would reject it). Only the samples of `window` (the
/// idle re-read window, ending now) count.
pub fn decide_idle(
    group: &GroupState,
    queue: &[QueueSample],
    window: SampleWindow,
) -> IdleDecision {
    if let Ownership::NotOurs(why) = &group.ownership {
        return IdleDecision::Leave(LeaveReason::NotOurs(why.clone()));
    }
    let depth = match current_depth(queue, window) {
        None => return IdleDecision::Leave(LeaveReason::NoQueueData),
        Some(depth) if depth > 0.0 => {
            return IdleDecision::Leave(LeaveReason::QueueNotEmpty { depth });
        }
        Some(depth) => depth,
    };
    debug_assert_eq!(depth, 0.0);
    let busy = group.busy();
    let floor = busy.max(group.min_size);
    if group.desired_capacity <= floor {
        // Also covers a duplicate delivery: the first one already scaled in.
        return IdleDecision::Leave(LeaveReason::AlreadyIdle {
            desired: group.desired_capacity,
            floor,
        });
    }
    IdleDecision::ScaleIn {
        from: group.desired_capacity,
        to: floor,
        busy,
    }
}

/// Desired capacity for a group woken from zero: enough instances for the backlog at the
/// target per instance, within the group's bounds.
pub fn wake_capacity(depth: f64, target_per_instance: f64, min_size: u32, max_size: u32) -> u32 {
    let wanted = (depth / target_per_instance).ceil();
    // Compare as floats first: a huge backlog must cap at max, not overflow.
    let capped = if wanted.is_nan() {
        0.0
    } else {
        wanted.min(f64::from(max_size)).max(0.0)
    };
    (capped as u32).max(min_size).min(max_size)
}

/// How long after it was sent a wake request is acted on. Later, the one-minute tick has read
/// the queue metric itself and target tracking sizes the group, so a request that Lambda or
/// EventBridge delivers again after this (retries run for minutes to hours) changes nothing.
pub const WAKE_MAX_AGE_SECONDS: i64 = 5 * 60;

/// What to do with a group when the backend says `queued` jobs wait for its workflow.
#[derive(Debug, Clone, PartialEq)]
pub enum WakeDecision {
    /// Set desired capacity from `from` up to `to`.
    Raise {
        from: u32,
        to: u32,
    },
    Leave(LeaveReason),
}

/// The wake for one group: the tick's size, min(max, ceil(queued / target)) (and at least the
/// group's min), and only upward. The group's own desired capacity is the state: a group at or
/// above the need is left as it is, so a repeated request, or one that lost a race to a larger
/// one, changes nothing.
pub fn decide_wake(group: &GroupState, queued: u64, target_per_instance: f64) -> WakeDecision {
    if let Ownership::NotOurs(why) = &group.ownership {
        return WakeDecision::Leave(LeaveReason::NotOurs(why.clone()));
    }
    if queued == 0 {
        return WakeDecision::Leave(LeaveReason::NothingQueued);
    }
    let depth = queued as f64;
    let need = wake_capacity(depth, target_per_instance, group.min_size, group.max_size);
    if need == 0 {
        return WakeDecision::Leave(LeaveReason::MaxSizeZero { depth });
    }
    if group.desired_capacity >= need {
        return WakeDecision::Leave(LeaveReason::AlreadyEnough {
            desired: group.desired_capacity,
            need,
            queued,
        });
    }
    WakeDecision::Raise {
        from: group.desired_capacity,
        to: need,
    }
}

/// `Some` when a wake request sent at `sent_at` (seconds since the epoch; `None` for a direct
/// invoke, which carries no time) is too old to act on at `now`.
pub fn stale_wake(sent_at: Option<i64>, now: i64) -> Option<LeaveReason> {
    let age_seconds = now.saturating_sub(sent_at?);
    (age_seconds > WAKE_MAX_AGE_SECONDS).then_some(LeaveReason::StaleWake { age_seconds })
}

/// A group of this stack to raise for a wake request.
#[derive(Debug, Clone, PartialEq)]
pub struct Raise {
    pub group: String,
    pub workflow: String,
    pub from: u32,
    pub to: u32,
}

/// Everything one wake request does to its workflow's groups.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WakePlan {
    /// The one group of this stack to raise, if it needs it.
    pub raise: Option<Raise>,
    /// The group and the capacity it will stand at (raised or already enough): what a later
    /// request for no more jobs can rely on.
    pub settled: Option<(String, u32)>,
    pub left_alone: Vec<LeftAlone>,
}

/// The wake over every group tagged with `workflow` (any stack, managed or not): another
/// stack's groups and unmanaged ones are left alone with their reason, two groups of this stack
/// claiming the workflow are ambiguous (as in the tick), and the one group of this stack gets
/// [`decide_wake`].
pub fn plan_wake(
    groups: Vec<GroupState>,
    workflow: &str,
    queued: u64,
    target_per_instance: f64,
) -> WakePlan {
    let no_group = groups.is_empty();
    let mut roster = Roster::new(groups);
    let mut plan = WakePlan {
        left_alone: std::mem::take(&mut roster.set_aside),
        ..WakePlan::default()
    };
    for left in &mut plan.left_alone {
        left.workflow.get_or_insert_with(|| workflow.to_owned());
    }
    if no_group {
        plan.left_alone.push(LeftAlone {
            group: String::new(),
            workflow: Some(workflow.to_owned()),
            reason: LeaveReason::NoGroup,
        });
    }
    // Auto Scaling filtered on this workflow's tag, so the roster holds no other workflow.
    for (tagged, group) in roster.by_workflow {
        match decide_wake(&group, queued, target_per_instance) {
            WakeDecision::Raise { from, to } => {
                plan.settled = Some((group.name.clone(), to));
                plan.raise = Some(Raise {
                    group: group.name,
                    workflow: tagged,
                    from,
                    to,
                });
            }
            WakeDecision::Leave(reason) => {
                if let LeaveReason::AlreadyEnough { desired, .. } = reason {
                    plan.settled = Some((group.name.clone(), desired));
                }
                plan.left_alone.push(LeftAlone {
                    group: group.name,
                    workflow: Some(tagged),
                    reason,
                });
            }
        }
    }
    plan
}

/// Queue depth per in-service instance; the depth itself when none is in service (so a
/// target-tracking policy still sees the backlog of a group at zero).
pub fn backlog_per_instance(depth: f64, in_service: u32) -> f64 {
    if in_service == 0 {
        depth
    } else {
        depth / f64::from(in_service)
    }
}

/// This stack's managed groups of one tick, one per workflow, and the groups set aside.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Roster {
    pub by_workflow: BTreeMap<String, GroupState>,
    pub set_aside: Vec<LeftAlone>,
}

/// A group (or workflow) left as it is, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct LeftAlone {
    pub group: String,
    pub workflow: Option<String>,
    pub reason: LeaveReason,
}

impl Roster {
    /// Sorts this stack's groups by workflow; groups that are not ours (unmanaged, another
    /// stack's, no workflow tag) and groups sharing a workflow are set aside. Another stack's
    /// group never makes a workflow ambiguous.
    pub fn new(groups: Vec<GroupState>) -> Roster {
        let mut roster = Roster::default();
        let mut by_workflow: BTreeMap<String, Vec<GroupState>> = BTreeMap::new();
        for group in groups {
            match &group.ownership {
                Ownership::Ours { workflow } => {
                    by_workflow.entry(workflow.clone()).or_default().push(group);
                }
                Ownership::NotOurs(why) => roster.set_aside.push(LeftAlone {
                    reason: LeaveReason::NotOurs(why.clone()),
                    group: group.name,
                    workflow: None,
                }),
            }
        }
        for (workflow, mut groups) in by_workflow {
            if groups.len() == 1 {
                roster.by_workflow.insert(workflow, groups.remove(0));
                continue;
            }
            let count = groups.len();
            roster
                .set_aside
                .extend(groups.into_iter().map(|g| LeftAlone {
                    group: g.name,
                    workflow: Some(workflow.clone()),
                    reason: LeaveReason::SharedWorkflow { groups: count },
                }));
        }
        roster
    }

    pub fn workflows(&self) -> Vec<String> {
        self.by_workflow.keys().cloned().collect()
    }
}

/// One `BacklogPerInstance` value to publish.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BacklogValue {
    pub workflow: String,
    pub value: f64,
}

/// A group at zero to wake because work is queued.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Wake {
    pub group: String,
    pub workflow: String,
    pub to: u32,
    pub queue_depth: f64,
}

/// Everything one schedule tick does.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TickPlan {
    pub backlog: Vec<BacklogValue>,
    pub wakes: Vec<Wake>,
    pub left_alone: Vec<LeftAlone>,
}

/// The tick: for every workflow with a usable queue depth, its `BacklogPerInstance`; a group at
/// zero with queued work is woken to min(max, ceil(depth / target)). A workflow without queue
/// data in `window` (the look-back, ending now) gets neither (publishing a guess would steer
/// the target-tracking policy).
pub fn plan_tick(
    roster: Roster,
    samples: &HashMap<String, Vec<QueueSample>>,
    target_per_instance: f64,
    window: SampleWindow,
) -> TickPlan {
    let mut plan = TickPlan {
        left_alone: roster.set_aside,
        ..TickPlan::default()
    };
    for (workflow, group) in roster.by_workflow {
        let queue = samples
            .get(&workflow)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let Some(depth) = current_depth(queue, window) else {
            plan.left_alone.push(LeftAlone {
                group: group.name,
                workflow: Some(workflow),
                reason: LeaveReason::NoQueueData,
            });
            continue;
        };
        plan.backlog.push(BacklogValue {
            workflow: workflow.clone(),
            value: backlog_per_instance(depth, group.in_service()),
        });
        if group.desired_capacity > 0 || depth <= 0.0 {
            continue;
        }
        match wake_capacity(depth, target_per_instance, group.min_size, group.max_size) {
            0 => plan.left_alone.push(LeftAlone {
                group: group.name,
                workflow: Some(workflow),
                reason: LeaveReason::MaxSizeZero { depth },
            }),
            to => plan.wakes.push(Wake {
                group: group.name,
                workflow,
                to,
                queue_depth: depth,
            }),
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::{Instance, Lifecycle};

    fn instance(id: &str, lifecycle: Lifecycle, protected: bool) -> Instance {
        Instance {
            id: id.into(),
            lifecycle,
            protected_from_scale_in: protected,
        }
    }

    fn group(name: &str, workflow: &str, desired: u32, instances: Vec<Instance>) -> GroupState {
        GroupState {
            name: name.into(),
            ownership: Ownership::Ours {
                workflow: workflow.into(),
            },
            min_size: 0,
            max_size: 4,
            desired_capacity: desired,
            instances,
        }
    }

    /// The decisions' `now`, and their window: five minutes up to it.
    const NOW: i64 = 1_800_000_000;

    fn window() -> SampleWindow {
        SampleWindow::new(NOW, std::time::Duration::from_secs(300))
    }

    fn samples(values: &[f64]) -> Vec<QueueSample> {
        // Oldest first, a minute apart; the last value is the newest, just before now.
        let newest = NOW - 10;
        let count = values.len() as i64;
        values
            .iter()
            .enumerate()
            .map(|(i, &value)| QueueSample {
                timestamp: newest - 60 * (count - 1 - i as i64),
                value,
            })
            .collect()
    }

    fn sample_at(timestamp: i64, value: f64) -> QueueSample {
        QueueSample { timestamp, value }
    }

    fn in_service(n: usize) -> Vec<Instance> {
        (0..n)
            .map(|i| instance(&format!("i-{i}"), Lifecycle::InService, false))
            .collect()
    }

    #[test]
    fn current_depth_is_the_newest_usable_sample() {
        let cases: &[(&str, Vec<QueueSample>, Option<f64>)] = &[
            ("no data", vec![], None),
            ("newest wins", samples(&[5.0, 0.0]), Some(0.0)),
            (
                "order of arrival does not matter",
                {
                    let mut s = samples(&[5.0, 0.0]);
                    s.reverse();
                    s
                },
                Some(0.0),
            ),
            ("NaN skipped", samples(&[3.0, f64::NAN]), Some(3.0)),
            ("negative skipped", samples(&[2.0, -1.0]), Some(2.0)),
            ("infinite skipped", samples(&[f64::INFINITY]), None),
            ("only garbage is no data", samples(&[f64::NAN, -4.0]), None),
        ];
        for (name, queue, expected) in cases {
            assert_eq!(current_depth(queue, window()), *expected, "{name}");
        }
    }

    #[test]
    fn only_samples_inside_the_window_count_at_each_edge() {
        let start = window().start();
        assert_eq!(start, NOW - 300);
        // (case, samples) -> depth: just inside and just outside each edge.
        let cases: &[(&str, Vec<QueueSample>, Option<f64>)] = &[
            (
                "oldest edge, just inside",
                vec![sample_at(start, 2.0)],
                Some(2.0),
            ),
            (
                "oldest edge, just outside",
                vec![sample_at(start - 1, 2.0)],
                None,
            ),
            ("now, just inside", vec![sample_at(NOW, 3.0)], Some(3.0)),
            (
                "after now, just outside",
                vec![sample_at(NOW + 1, 3.0)],
                None,
            ),
            (
                "a future sample never hides the newest one inside",
                vec![sample_at(NOW - 60, 4.0), sample_at(NOW + 60, 0.0)],
                Some(4.0),
            ),
        ];
        for (name, queue, expected) in cases {
            assert_eq!(current_depth(queue, window()), *expected, "{name}");
        }
    }

    #[test]
    fn an_idle_alarm_scales_in_only_on_a_zero_inside_the_re_read_window() {
        let g = || group("g", "w", 2, in_service(2));
        let start = window().start();
        assert_eq!(
            decide_idle(&g(), &[sample_at(start, 0.0)], window()),
            IdleDecision::ScaleIn {
                from: 2,
                to: 0,
                busy: 0
            }
        );
        assert_eq!(
            decide_idle(&g(), &[sample_at(start - 1, 0.0)], window()),
            IdleDecision::Leave(LeaveReason::NoQueueData),
            "a zero older than the window does not confirm the queue is empty now"
        );
        assert_eq!(
            decide_idle(&g(), &[sample_at(NOW, 0.0)], window()),
            IdleDecision::ScaleIn {
                from: 2,
                to: 0,
                busy: 0
            }
        );
        assert_eq!(
            decide_idle(&g(), &[sample_at(NOW + 1, 0.0)], window()),
            IdleDecision::Leave(LeaveReason::NoQueueData)
        );
        // A longer window reaches the older zero.
        let longer = SampleWindow::new(NOW, std::time::Duration::from_secs(301));
        assert!(matches!(
            decide_idle(&g(), &[sample_at(start - 1, 0.0)], longer),
            IdleDecision::ScaleIn { .. }
        ));
    }

    #[test]
    fn the_tick_wakes_and_publishes_only_on_a_sample_inside_its_look_back() {
        let roster = || Roster::new(vec![group("g", "w", 0, vec![])]);
        let start = window().start();
        for (timestamp, woken) in [
            (start - 1, false),
            (start, true),
            (NOW, true),
            (NOW + 1, false),
        ] {
            let samples = HashMap::from([("w".to_owned(), vec![sample_at(timestamp, 2.0)])]);
            let plan = plan_tick(roster(), &samples, 1.0, window());
            assert_eq!(
                plan.wakes.len(),
                usize::from(woken),
                "sample at now{:+}",
                timestamp - NOW
            );
            assert_eq!(plan.backlog.len(), usize::from(woken));
            if !woken {
                assert_eq!(plan.left_alone[0].reason, LeaveReason::NoQueueData);
            }
        }
    }

    #[test]
    fn idle_decisions() {
        use IdleDecision::*;
        use LeaveReason::{AlreadyIdle, NoQueueData, QueueNotEmpty};
        let mut unmanaged = group("g", "w", 2, in_service(2));
        unmanaged.ownership = Ownership::NotOurs(NotOurs::Unmanaged);
        let other_stack = NotOurs::OtherStack {
            stack: Some("orch-b".into()),
        };
        let mut theirs = group("g", "w", 2, in_service(2));
        theirs.ownership = Ownership::NotOurs(other_stack.clone());
        let mut no_stack = group("g", "w", 2, in_service(2));
        no_stack.ownership = Ownership::NotOurs(NotOurs::OtherStack { stack: None });
        let mut min_one = group("g", "w", 3, in_service(3));
        min_one.min_size = 1;
        let cases: Vec<(&str, GroupState, Vec<QueueSample>, IdleDecision)> = vec![
            (
                "idle group goes to zero",
                group("g", "w", 2, in_service(2)),
                samples(&[0.0]),
                ScaleIn {
                    from: 2,
                    to: 0,
                    busy: 0,
                },
            ),
            (
                "unmanaged group is left",
                unmanaged,
                samples(&[0.0]),
                Leave(LeaveReason::NotOurs(NotOurs::Unmanaged)),
            ),
            (
                "another stack's idle group is left",
                theirs,
                samples(&[0.0]),
                Leave(LeaveReason::NotOurs(other_stack)),
            ),
            (
                "a managed group of no stack is left",
                no_stack,
                samples(&[0.0]),
                Leave(LeaveReason::NotOurs(NotOurs::OtherStack { stack: None })),
            ),
            (
                "no data is not idle",
                group("g", "w", 2, in_service(2)),
                vec![],
                Leave(NoQueueData),
            ),
            (
                "NaN and negative only: no data",
                group("g", "w", 2, in_service(2)),
                samples(&[f64::NAN, -1.0]),
                Leave(NoQueueData),
            ),
            (
                "stale alarm",
                group("g", "w", 2, in_service(2)),
                samples(&[0.0, 3.0]),
                Leave(QueueNotEmpty { depth: 3.0 }),
            ),
            (
                "protected instances are the floor",
                group(
                    "g",
                    "w",
                    3,
                    vec![
                        instance("a", Lifecycle::InService, true),
                        instance("b", Lifecycle::InService, false),
                        instance("c", Lifecycle::Launching, true),
                    ],
                ),
                samples(&[0.0]),
                ScaleIn {
                    from: 3,
                    to: 2,
                    busy: 2,
                },
            ),
            (
                "protected but leaving or in standby is not busy",
                group(
                    "g",
                    "w",
                    1,
                    vec![
                        instance("a", Lifecycle::Leaving, true),
                        instance("b", Lifecycle::Standby, true),
                        instance("c", Lifecycle::InService, false),
                    ],
                ),
                samples(&[0.0]),
                ScaleIn {
                    from: 1,
                    to: 0,
                    busy: 0,
                },
            ),
            (
                "all protected: nothing to do",
                group(
                    "g",
                    "w",
                    2,
                    vec![
                        instance("a", Lifecycle::InService, true),
                        instance("b", Lifecycle::InService, true),
                    ],
                ),
                samples(&[0.0]),
                Leave(AlreadyIdle {
                    desired: 2,
                    floor: 2,
                }),
            ),
            (
                "min size is kept",
                min_one,
                samples(&[0.0]),
                ScaleIn {
                    from: 3,
                    to: 1,
                    busy: 0,
                },
            ),
            (
                "already at zero (duplicate delivery)",
                group("g", "w", 0, vec![]),
                samples(&[0.0]),
                Leave(AlreadyIdle {
                    desired: 0,
                    floor: 0,
                }),
            ),
            (
                "zero in service, desired 1 pending",
                group(
                    "g",
                    "w",
                    1,
                    vec![instance("a", Lifecycle::Launching, false)],
                ),
                samples(&[0.0]),
                ScaleIn {
                    from: 1,
                    to: 0,
                    busy: 0,
                },
            ),
        ];
        for (name, group, queue, expected) in cases {
            assert_eq!(decide_idle(&group, &queue, window()), expected, "{name}");
        }
    }

    #[test]
    fn wake_capacity_cases() {
        // (depth, target, min, max) -> capacity
        let cases = [
            ((1.0, 1.0, 0, 4), 1),
            ((3.0, 1.0, 0, 4), 3),
            ((10.0, 1.0, 0, 4), 4),  // max cap
            ((5.0, 2.0, 0, 4), 3),   // ceil
            ((0.5, 1.0, 0, 4), 1),   // a fraction of a job still needs an instance
            ((1e300, 1.0, 0, 7), 7), // no overflow
            ((3.0, 1.0, 0, 0), 0),   // max 0
            ((1.0, 1.0, 2, 4), 2),   // min kept
            ((3.0, 0.5, 0, 10), 6),  // fractional target
        ];
        for ((depth, target, min, max), expected) in cases {
            assert_eq!(
                wake_capacity(depth, target, min, max),
                expected,
                "{depth}/{target} in [{min},{max}]"
            );
        }
    }

    #[test]
    fn backlog_per_instance_cases() {
        assert_eq!(backlog_per_instance(6.0, 3), 2.0);
        assert_eq!(backlog_per_instance(6.0, 0), 6.0); // zero in service: the depth itself
        assert_eq!(backlog_per_instance(0.0, 2), 0.0);
        assert_eq!(backlog_per_instance(1.0, 4), 0.25);
    }

    #[test]
    fn roster_sets_aside_unmanaged_untagged_and_shared_workflows() {
        let mut unmanaged = group("u", "x", 1, vec![]);
        unmanaged.ownership = Ownership::NotOurs(NotOurs::Unmanaged);
        let mut untagged = group("t", "x", 1, vec![]);
        untagged.ownership = Ownership::NotOurs(NotOurs::NoWorkflow);
        let roster = Roster::new(vec![
            group("a", "img2vid", 1, vec![]),
            unmanaged,
            untagged,
            group("b1", "vid2vid", 1, vec![]),
            group("b2", "vid2vid", 1, vec![]),
        ]);
        assert_eq!(roster.workflows(), ["img2vid"]);
        let reasons: Vec<(&str, &LeaveReason)> = roster
            .set_aside
            .iter()
            .map(|l| (l.group.as_str(), &l.reason))
            .collect();
        assert_eq!(
            reasons,
            [
                ("u", &LeaveReason::NotOurs(NotOurs::Unmanaged)),
                ("t", &LeaveReason::NotOurs(NotOurs::NoWorkflow)),
                ("b1", &LeaveReason::SharedWorkflow { groups: 2 }),
                ("b2", &LeaveReason::SharedWorkflow { groups: 2 }),
            ]
        );
    }

    #[test]
    fn another_stacks_groups_never_make_a_workflow_ambiguous() {
        let theirs = |name: &str, stack: Option<&str>| {
            let mut g = group(name, "img2vid", 0, vec![]);
            g.ownership = Ownership::NotOurs(NotOurs::OtherStack {
                stack: stack.map(str::to_owned),
            });
            g
        };
        let roster = Roster::new(vec![
            theirs("orch-b-img2vid", Some("orch-b")),
            group("orch-a-img2vid", "img2vid", 0, vec![]),
            theirs("legacy-img2vid", None),
        ]);
        assert_eq!(roster.workflows(), ["img2vid"]);
        assert_eq!(roster.by_workflow["img2vid"].name, "orch-a-img2vid");
        let reasons: Vec<(&str, String)> = roster
            .set_aside
            .iter()
            .map(|l| (l.group.as_str(), l.reason.to_string()))
            .collect();
        assert_eq!(
            reasons,
            [
                (
                    "orch-b-img2vid",
                    "other stack (orchestrator:stack=orch-b)".to_owned()
                ),
                (
                    "legacy-img2vid",
                    "other stack (tagged orchestrator:managed=true but no orchestrator:stack tag)"
                        .to_owned()
                ),
            ]
        );
        // Only ours is woken.
        let samples = HashMap::from([("img2vid".to_owned(), samples(&[2.0]))]);
        let plan = plan_tick(roster, &samples, 1.0, window());
        let wakes: Vec<(&str, u32)> = plan
            .wakes
            .iter()
            .map(|w| (w.group.as_str(), w.to))
            .collect();
        assert_eq!(wakes, [("orch-a-img2vid", 2)]);
        assert!(
            plan.left_alone
                .iter()
                .all(|l| !matches!(l.reason, LeaveReason::SharedWorkflow { .. })),
            "{:?}",
            plan.left_alone
        );
    }

    #[test]
    fn tick_plans() {
        let roster = Roster::new(vec![
            group("busy", "busy", 3, in_service(3)),
            group("asleep", "asleep", 0, vec![]),
            group("flood", "flood", 0, vec![]),
            group("quiet", "quiet", 0, vec![]),
            group("silent", "silent", 2, in_service(2)),
            group("broken", "broken", 0, vec![]),
        ]);
        let samples: HashMap<String, Vec<QueueSample>> = [
            ("busy", samples(&[6.0])),
            ("asleep", samples(&[2.0])),
            ("flood", samples(&[100.0])),
            ("quiet", samples(&[0.0])),
            ("broken", samples(&[f64::NAN, -3.0])),
        ]
        .into_iter()
        .map(|(w, s)| (w.to_owned(), s))
        .collect();
        let plan = plan_tick(roster, &samples, 1.0, window());
        let backlog: Vec<(&str, f64)> = plan
            .backlog
            .iter()
            .map(|b| (b.workflow.as_str(), b.value))
            .collect();
        assert_eq!(
            backlog,
            [
                ("asleep", 2.0),
                ("busy", 2.0),
                ("flood", 100.0),
                ("quiet", 0.0)
            ]
        );
        let wakes: Vec<(&str, u32)> = plan
            .wakes
            .iter()
            .map(|w| (w.group.as_str(), w.to))
            .collect();
        assert_eq!(wakes, [("asleep", 2), ("flood", 4)]); // flood capped at max 4
        let left: Vec<(&str, &LeaveReason)> = plan
            .left_alone
            .iter()
            .map(|l| (l.group.as_str(), &l.reason))
            .collect();
        assert_eq!(
            left,
            [
                ("broken", &LeaveReason::NoQueueData),
                ("silent", &LeaveReason::NoQueueData)
            ]
        );
    }

    #[test]
    fn a_group_at_zero_with_max_zero_is_reported_not_woken() {
        let mut g = group("g", "w", 0, vec![]);
        g.max_size = 0;
        let samples = HashMap::from([("w".to_owned(), samples(&[5.0]))]);
        let plan = plan_tick(Roster::new(vec![g]), &samples, 1.0, window());
        assert!(plan.wakes.is_empty());
        assert_eq!(
            plan.left_alone[0].reason,
            LeaveReason::MaxSizeZero { depth: 5.0 }
        );
        assert_eq!(plan.backlog[0].value, 5.0);
    }

    #[test]
    fn wake_decisions_only_ever_raise_to_what_the_jobs_need() {
        use LeaveReason::{AlreadyEnough, MaxSizeZero, NothingQueued};
        use WakeDecision::{Leave, Raise};
        let theirs = {
            let mut g = group("g", "w", 0, vec![]);
            g.ownership = Ownership::NotOurs(NotOurs::OtherStack {
                stack: Some("orch-b".into()),
            });
            g
        };
        let mut max_zero = group("g", "w", 0, vec![]);
        max_zero.max_size = 0;
        let mut min_two = group("g", "w", 0, vec![]);
        min_two.min_size = 2;
        // (case, group, queued, target) -> decision; the group's max is 4.
        let cases: Vec<(&str, GroupState, u64, f64, WakeDecision)> = vec![
            (
                "from zero",
                group("g", "w", 0, vec![]),
                3,
                1.0,
                Raise { from: 0, to: 3 },
            ),
            (
                "capped at max",
                group("g", "w", 0, vec![]),
                1000,
                1.0,
                Raise { from: 0, to: 4 },
            ),
            (
                "ceil of jobs / target",
                group("g", "w", 0, vec![]),
                5,
                2.0,
                Raise { from: 0, to: 3 },
            ),
            (
                "below the need: raised",
                group("g", "w", 1, in_service(1)),
                3,
                1.0,
                Raise { from: 1, to: 3 },
            ),
            ("min kept", min_two, 1, 1.0, Raise { from: 0, to: 2 }),
            (
                "at the need: a repeated request changes nothing",
                group("g", "w", 3, in_service(3)),
                3,
                1.0,
                Leave(AlreadyEnough {
                    desired: 3,
                    need: 3,
                    queued: 3,
                }),
            ),
            (
                "above the need: never shrunk",
                group("g", "w", 4, in_service(4)),
                1,
                1.0,
                Leave(AlreadyEnough {
                    desired: 4,
                    need: 1,
                    queued: 1,
                }),
            ),
            (
                "nothing queued",
                group("g", "w", 0, vec![]),
                0,
                1.0,
                Leave(NothingQueued),
            ),
            (
                "max size 0",
                max_zero,
                2,
                1.0,
                Leave(MaxSizeZero { depth: 2.0 }),
            ),
            (
                "another stack's group",
                theirs,
                2,
                1.0,
                Leave(LeaveReason::NotOurs(NotOurs::OtherStack {
                    stack: Some("orch-b".into()),
                })),
            ),
        ];
        for (name, group, queued, target, expected) in cases {
            assert_eq!(decide_wake(&group, queued, target), expected, "{name}");
        }
    }

    #[test]
    fn a_wake_request_is_stale_after_five_minutes_and_a_direct_one_never() {
        let now = 1_800_000_000;
        assert_eq!(stale_wake(None, now), None);
        assert_eq!(stale_wake(Some(now), now), None);
        assert_eq!(stale_wake(Some(now + 30), now), None, "clock skew");
        assert_eq!(stale_wake(Some(now - WAKE_MAX_AGE_SECONDS), now), None);
        assert_eq!(
            stale_wake(Some(now - WAKE_MAX_AGE_SECONDS - 1), now),
            Some(LeaveReason::StaleWake { age_seconds: 301 })
        );
        assert_eq!(
            LeaveReason::StaleWake { age_seconds: 301 }.to_string(),
            "wake request sent 301 s ago, more than 300 s; the tick and target tracking have read the queue since"
        );
    }

    #[test]
    fn wake_plans_raise_our_one_group_and_name_every_other_with_its_reason() {
        let theirs = |name: &str| {
            let mut g = group(name, "img2vid", 0, vec![]);
            g.ownership = Ownership::NotOurs(NotOurs::OtherStack {
                stack: Some("orch-b".into()),
            });
            g
        };
        let plan = plan_wake(
            vec![
                theirs("orch-b-img2vid"),
                group("orch-a-img2vid", "img2vid", 1, in_service(1)),
            ],
            "img2vid",
            2,
            1.0,
        );
        assert_eq!(
            plan.raise,
            Some(Raise {
                group: "orch-a-img2vid".into(),
                workflow: "img2vid".into(),
                from: 1,
                to: 2
            })
        );
        assert_eq!(plan.settled, Some(("orch-a-img2vid".into(), 2)));
        let left: Vec<(String, Option<String>, String)> = plan
            .left_alone
            .into_iter()
            .map(|l| (l.group, l.workflow, l.reason.to_string()))
            .collect();
        assert_eq!(
            left,
            [(
                "orch-b-img2vid".to_owned(),
                Some("img2vid".to_owned()),
                "other stack (orchestrator:stack=orch-b)".to_owned()
            )]
        );

        // Only another stack's group: left alone, nothing settled, nothing raised.
        let plan = plan_wake(vec![theirs("orch-b-img2vid")], "img2vid", 2, 1.0);
        assert_eq!((plan.raise, plan.settled), (None, None));
        assert_eq!(plan.left_alone.len(), 1);

        // Unknown workflow.
        let plan = plan_wake(vec![], "nope", 2, 1.0);
        assert_eq!(plan.raise, None);
        assert_eq!(
            plan.left_alone,
            [LeftAlone {
                group: String::new(),
                workflow: Some("nope".into()),
                reason: LeaveReason::NoGroup
            }]
        );
        assert_eq!(
            LeaveReason::NoGroup.to_string(),
            "no Auto Scaling group is tagged orchestrator:workflow with this workflow"
        );

        // Two groups of this stack claim it: neither is sized.
        let plan = plan_wake(
            vec![
                group("a", "img2vid", 0, vec![]),
                group("b", "img2vid", 0, vec![]),
            ],
            "img2vid",
            2,
            1.0,
        );
        assert_eq!(plan.raise, None);
        assert!(
            plan.left_alone
                .iter()
                .all(|l| l.reason == LeaveReason::SharedWorkflow { groups: 2 }),
            "{:?}",
            plan.left_alone
        );

        // Already enough: settled at its capacity, nothing raised.
        let plan = plan_wake(
            vec![group("a", "img2vid", 4, in_service(4))],
            "img2vid",
            2,
            1.0,
        );
        assert_eq!(plan.raise, None);
        assert_eq!(plan.settled, Some(("a".into(), 4)));
    }
}
