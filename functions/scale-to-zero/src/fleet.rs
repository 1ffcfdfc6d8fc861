//! The fleet as the decisions see it: plain values, no SDK types. The AWS adapter fills these
//! in from `DescribeAutoScalingGroups` and `GetMetricData`.

use std::time::Duration;

use shared::fleet_tags::Ownership;

/// Where an instance is in its Auto Scaling lifecycle, as far as capacity is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// `Pending`, `Pending:Wait`, `Pending:Proceed`: counts toward desired capacity, not serving yet.
    Launching,
    InService,
    /// `Standby`, `EnteringStandby`, warm-pool states: outside desired capacity.
    Standby,
    /// `Terminating*`, `Detaching`, `Detached`, `Terminated`: on its way out.
    Leaving,
}

impl Lifecycle {
    /// Maps Auto Scaling's `LifecycleState` names.
    pub fn from_state_name(name: &str) -> Lifecycle {
        match name {
            "InService" => Lifecycle::InService,
            name if name.starts_with("Pending") => Lifecycle::Launching,
            name if name.starts_with("Terminat") || name.starts_with("Detach") => {
                Lifecycle::Leaving
            }
            // Standby, EnteringStandby and the Warmed:* states.
            _ => Lifecycle::Standby,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub lifecycle: Lifecycle,
    /// Workers set scale-in protection while they run a job: a protected instance is busy.
    pub protected_from_scale_in: bool,
}

/// An Auto Scaling group and what it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    pub name: String,
    /// Whether this stack's function may act on it (and its workflow), from its tags.
    pub ownership: Ownership,
    pub min_size: u32,
    pub max_size: u32,
    pub desired_capacity: u32,
    pub instances: Vec<Instance>,
}

impl GroupState {
    /// The workflow of a group this stack manages.
    pub fn workflow(&self) -> Option<&str> {
        match &self.ownership {
            Ownership::Ours { workflow } => Some(workflow),
            Ownership::NotOurs(_) => None,
        }
    }

    pub fn in_service(&self) -> u32 {
        self.count(|i| i.lifecycle == Lifecycle::InService)
    }

    /// Protected instances that count toward desired capacity: the floor a scale-in must keep,
    /// because Auto Scaling will not terminate them anyway.
    pub fn busy(&self) -> u32 {
        self.count(|i| {
            i.protected_from_scale_in
                && matches!(i.lifecycle, Lifecycle::InService | Lifecycle::Launching)
        })
    }

    fn count(&self, keep: impl Fn(&Instance) -> bool) -> u32 {
        let n = self.instances.iter().filter(|i| keep(i)).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

/// One datapoint of the queue metric (`Maximum` per minute).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueSample {
    /// Seconds since the Unix epoch.
    pub timestamp: i64,
    pub value: f64,
}

/// The stretch of time whose queue samples count for a decision: `length` back from `now`
/// (seconds since the Unix epoch), both edges included. A sample older than the window says
/// nothing about the queue now; one after `now` is a publisher's clock running ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleWindow {
    pub now: i64,
    pub length: Duration,
}

impl SampleWindow {
    pub fn new(now: i64, length: Duration) -> SampleWindow {
        SampleWindow { now, length }
    }

    /// The oldest timestamp that still counts.
    pub fn start(&self) -> i64 {
        let length = i64::try_from(self.length.as_secs()).unwrap_or(i64::MAX);
        self.now.saturating_sub(length)
    }

    pub fn contains(&self, timestamp: i64) -> bool {
        (self.start()..=self.now).contains(&timestamp)
    }
}

/// The queue depth at the window's end: its newest sample that can be a depth. NaN, infinite
/// and negative values are a broken publisher, not a queue, and are skipped; `None` when
/// nothing usable arrived in the window.
pub fn current_depth(samples: &[QueueSample], window: SampleWindow) -> Option<f64> {
    samples
        .iter()
        .filter(|s| window.contains(s.timestamp) && s.value.is_finite() && s.value >= 0.0)
        .max_by_key(|s| s.timestamp)
        .map(|s| s.value)
}
