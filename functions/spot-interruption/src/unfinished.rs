//! What an invocation that failed for a retry leaves for Lambda's retry of the same event.
//!
//! Lambda retries a failed event with the same payload, so the same `id`, a minute or more
//! later. By then a detached instance is in no group: a retry that looked it up again could
//! neither rebuild the fleet message still owed nor tell that the message already went out.
//! So the failing invocation records its plan and the steps it got done under the event id,
//! and the retry finishes that plan without looking anything up and without repeating a step.
//!
//! The record is kept twice: in the execution environment's memory, where Lambda usually
//! runs the retry, and in the progress table ([`crate::progress_table`]), so a retry that
//! Lambda runs in another environment finishes the same plan too. Only when the table could
//! not take the record either, and the message is still owed after a detach, does the failing
//! invocation log the message in full (`WARN`, "fleet message owed"): a retry elsewhere could
//! not rebuild it, because no group lists the instance any more.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use crate::Action;
use crate::plan::{ActionPlan, Progress};

/// Events remembered at once; the oldest record goes first. A record is dropped as soon as
/// its retry takes it, so this only bounds retries that ran elsewhere or never came.
pub const CAPACITY: usize = 1024;

/// A plan an invocation could not finish, and the steps done so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unfinished {
    pub plan: ActionPlan,
    /// Every step the earlier attempts got done.
    pub done: Vec<Action>,
}

impl Unfinished {
    pub fn progress(&self) -> Progress {
        progress_of(&self.done)
    }

    /// Detached, message not sent: the one case a retry elsewhere cannot finish.
    pub fn owes_message_after_detach(&self) -> bool {
        let progress = self.progress();
        progress.detached && !progress.published
    }
}

/// The steps `done` settles.
pub fn progress_of(done: &[Action]) -> Progress {
    let mut progress = Progress::default();
    for action in done {
        match action {
            Action::PublishedFleetMessage => progress.published = true,
            Action::Detached | Action::AlreadyDetached => progress.detached = true,
            Action::CountedInterruption => progress.counted = true,
            Action::CompletedLifecycleAction | Action::LifecycleActionAlreadyResolved => {
                progress.lifecycle_action_resolved = true
            }
        }
    }
    progress
}

/// This execution environment's unfinished events, by event id.
#[derive(Debug, Default)]
pub struct UnfinishedEvents {
    entries: Mutex<VecDeque<(String, Unfinished)>>,
}

impl UnfinishedEvents {
    /// Removes and returns the record of `event_id`, if an earlier attempt here left one.
    pub fn take(&self, event_id: &str) -> Option<Unfinished> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let index = entries.iter().position(|(id, _)| id == event_id)?;
        entries.remove(index).map(|(_, unfinished)| unfinished)
    }

    /// Records `unfinished` for `event_id`'s retry, replacing an older record of it.
    pub fn keep(&self, event_id: &str, unfinished: Unfinished) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.retain(|(id, _)| id != event_id);
        if entries.len() >= CAPACITY {
            entries.pop_front();
        }
        entries.push_back((event_id.to_owned(), unfinished));
    }

    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet_message::{FleetMessage, FleetMessageKind};
    use crate::notice::EventTime;

    fn unfinished(done: &[Action]) -> Unfinished {
        Unfinished {
            plan: ActionPlan {
                fleet_message: FleetMessage {
                    kind: FleetMessageKind::SpotInterruption,
                    workflow: "img2vid".into(),
                    auto_scaling_group: "orchestrator-dev-img2vid".into(),
                    instance_id: "i-0b1c2d3e4f5a6b7c8".into(),
                    event_id: "evt-1".into(),
                    time: EventTime::from_unix_seconds(1_795_348_994),
                    deadline: None,
                    lifecycle_action: None,
                },
                detach: None,
                count_interruption: None,
                complete_lifecycle_action: None,
            },
            done: done.to_vec(),
        }
    }

    #[test]
    fn a_record_is_taken_once() {
        let events = UnfinishedEvents::default();
        events.keep("evt-1", unfinished(&[Action::PublishedFleetMessage]));
        assert_eq!(events.take("evt-2"), None);
        let taken = events.take("evt-1").expect("recorded");
        assert!(taken.progress().published);
        assert_eq!(events.take("evt-1"), None, "the retry took it");
        assert!(events.is_empty());
    }

    #[test]
    fn a_newer_record_of_the_same_event_replaces_the_older_one() {
        let events = UnfinishedEvents::default();
        events.keep("evt-1", unfinished(&[Action::PublishedFleetMessage]));
        events.keep(
            "evt-1",
            unfinished(&[Action::PublishedFleetMessage, Action::Detached]),
        );
        assert_eq!(events.len(), 1);
        assert!(events.take("evt-1").unwrap().progress().detached);
    }

    #[test]
    fn the_oldest_record_goes_when_the_capacity_is_reached() {
        let events = UnfinishedEvents::default();
        for n in 0..=CAPACITY {
            events.keep(&format!("evt-{n}"), unfinished(&[]));
        }
        assert_eq!(events.len(), CAPACITY);
        assert_eq!(events.take("evt-0"), None);
        assert!(events.take("evt-1").is_some());
        assert!(events.take(&format!("evt-{CAPACITY}")).is_some());
    }

    #[test]
    fn every_action_settles_its_step() {
        let progress = progress_of(&[
            Action::AlreadyDetached,
            Action::LifecycleActionAlreadyResolved,
        ]);
        assert_eq!(
            progress,
            Progress {
                published: false,
                detached: true,
                counted: false,
                lifecycle_action_resolved: true,
            }
        );
        assert!(
            unfinished(&[Action::Detached, Action::CountedInterruption])
                .owes_message_after_detach()
        );
        assert!(
            !unfinished(&[Action::PublishedFleetMessage, Action::Detached])
                .owes_message_after_detach()
        );
        assert!(!unfinished(&[Action::PublishedFleetMessage]).owes_message_after_detach());
    }
}
