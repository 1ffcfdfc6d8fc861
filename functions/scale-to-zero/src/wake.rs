//! Event-driven wake: the backend says jobs were queued for a workflow, by direct invoke, an
//! EventBridge event or an SNS message, and the workflow's group is raised at once to what the
//! backlog needs instead of at the next tick.
//!
//! This module reads the three request shapes into one [`WakeRequest`] and keeps the
//! [`WakeLedger`], which serializes and coalesces the wakes of one workflow inside an execution
//! environment. What to do is decided by `decision::plan_wake`; the handler calls AWS.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// `source` of the backend's EventBridge event.
pub const EVENT_SOURCE: &str = "orchestrator.backend";
/// `detail-type` of the backend's EventBridge event.
pub const EVENT_DETAIL_TYPE: &str = "Jobs Queued";
/// How long a settled wake answers later requests for no more jobs without an AWS call.
/// Short: nothing but a wake raises a group this fast, and nothing lowers one this fast
/// (the idle alarm needs 15 minutes of an empty queue; an in-process scale-in forgets it).
pub const SETTLED_FOR: Duration = Duration::from_secs(10);
/// Workflows remembered at most; beyond that, idle entries are dropped (the workflow names
/// come from the backend).
const MAX_REMEMBERED: usize = 1024;

/// `{"workflow": "<slug>", "queued": <n>}`: the EventBridge event's `detail`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsQueued {
    pub workflow: String,
    /// Jobs waiting for the workflow now (its backlog, not the jobs just added).
    pub queued: u64,
}

/// `{"action": "wake", "workflow": "<slug>", "queued": <n>}`: an SNS message's body (the same
/// as the direct invoke).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct WakeMessage {
    #[allow(dead_code)] // Checked by deserializing: only `wake` is accepted.
    action: WakeAction,
    workflow: String,
    queued: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum WakeAction {
    Wake,
}

/// Why a wake request was turned away.
#[derive(Debug, thiserror::Error)]
pub enum WakeError {
    #[error(
        "malformed wake request ({via}): {source}; expected {{\"action\":\"wake\",\"workflow\":\"<slug>\",\"queued\":<jobs, a whole number ≥ 0>}}"
    )]
    MalformedMessage {
        via: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "malformed wake request ({via}): {source}; expected detail {{\"workflow\":\"<slug>\",\"queued\":<jobs, a whole number ≥ 0>}}"
    )]
    MalformedDetail {
        via: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "EventBridge event `{detail_type}` comes from `{sender}`; a wake must come from `{EVENT_SOURCE}`"
    )]
    WrongSource { detail_type: String, sender: String },
    #[error("wake request ({via}) names no workflow (`workflow` is empty)")]
    EmptyWorkflow { via: &'static str },
}

/// One wake request, from whichever path it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WakeRequest {
    pub workflow: String,
    pub queued: u64,
    /// When it was sent (seconds since the epoch): EventBridge's `time`, SNS's `Timestamp`;
    /// `None` for a direct invoke.
    pub sent_at: Option<i64>,
    /// `direct invoke`, `EventBridge` or `SNS`.
    pub via: &'static str,
}

impl WakeRequest {
    pub fn new(
        workflow: String,
        queued: u64,
        sent_at: Option<i64>,
        via: &'static str,
    ) -> Result<Self, WakeError> {
        let workflow = workflow.trim();
        if workflow.is_empty() {
            return Err(WakeError::EmptyWorkflow { via });
        }
        Ok(WakeRequest {
            workflow: workflow.to_owned(),
            queued,
            sent_at,
            via,
        })
    }

    /// The `Jobs Queued` event's detail.
    pub fn from_event(
        source: &str,
        detail_type: &str,
        detail: serde_json::Value,
        sent_at: Option<i64>,
    ) -> Result<Self, WakeError> {
        if source != EVENT_SOURCE {
            return Err(WakeError::WrongSource {
                detail_type: detail_type.to_owned(),
                sender: source.to_owned(),
            });
        }
        let via = "EventBridge";
        let jobs: JobsQueued = serde_json::from_value(detail)
            .map_err(|source| WakeError::MalformedDetail { via, source })?;
        WakeRequest::new(jobs.workflow, jobs.queued, sent_at, via)
    }

    /// An SNS message's body.
    pub fn from_sns_message(message: &str, sent_at: Option<i64>) -> Result<Self, WakeError> {
        let via = "SNS";
        let body: WakeMessage = serde_json::from_str(message)
            .map_err(|source| WakeError::MalformedMessage { via, source })?;
        WakeRequest::new(body.workflow, body.queued, sent_at, via)
    }
}

/// Whether an SNS message is meant as a wake request (a JSON object with an `action`), rather
/// than a CloudWatch alarm notification (which has none).
pub fn is_wake_message(message: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(message)
        .is_ok_and(|json| json.get("action").is_some())
}

/// The outcome of a wake the ledger let run, or why none had to.
#[derive(Debug, Clone, PartialEq)]
pub enum Turn<T> {
    /// A wake of this environment settled as many jobs or more a moment ago.
    Covered(Settled),
    /// This request's turn ran, for `queued` jobs (its own and every request that waited).
    Ran { queued: u64, outcome: T },
}

/// A wake that left `group` at `capacity`, enough for `queued` jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    pub group: String,
    pub capacity: u32,
    pub queued: u64,
    pub at: Instant,
}

/// Per workflow, in one execution environment: one wake at a time, and the requests that
/// arrive meanwhile ride on the next turn (which takes the largest `queued` of all of them) or
/// on a settled one. So however many requests for one workflow reach this environment at once,
/// the group is read and raised once per turn, and a turn runs only for a request that needs
/// more than the last settled one covered.
#[derive(Debug, Default)]
pub struct WakeLedger {
    workflows: Mutex<HashMap<String, Arc<WorkflowTurns>>>,
}

#[derive(Debug, Default)]
struct WorkflowTurns {
    /// The largest `queued` of the requests waiting for the next turn.
    waiting: AtomicU64,
    /// Held for a whole turn (read the group, raise it); the last settled wake.
    turn: tokio::sync::Mutex<Option<Settled>>,
}

impl WakeLedger {
    /// Runs `wake` for `workflow` when this request's jobs are not already covered. `wake`
    /// gets the jobs to size for and returns its outcome and, when the group stands at a known
    /// capacity afterwards, that settlement (group, capacity). A failed turn settles nothing.
    pub async fn serve<T, E, F, Fut>(
        &self,
        workflow: &str,
        queued: u64,
        wake: F,
    ) -> Result<Turn<T>, E>
    where
        F: FnOnce(u64) -> Fut,
        Fut: Future<Output = Result<(T, Option<(String, u32)>), E>>,
    {
        let turns = self.turns(workflow);
        turns.waiting.fetch_max(queued, Ordering::SeqCst);
        let mut settled = turns.turn.lock().await;
        if let Some(last) = settled.as_ref()
            && last.queued >= queued
            && last.at.elapsed() < SETTLED_FOR
        {
            return Ok(Turn::Covered(last.clone()));
        }
        // Every request that waited rides on this turn; their own turns then find it covered.
        let queued = turns.waiting.swap(0, Ordering::SeqCst).max(queued);
        let result = wake(queued).await;
        match result {
            Ok((outcome, settlement)) => {
                *settled = settlement.map(|(group, capacity)| Settled {
                    group,
                    capacity,
                    queued,
                    at: Instant::now(),
                });
                Ok(Turn::Ran { queued, outcome })
            }
            Err(error) => {
                // The requests that rode on this turn run their own (each keeps its `queued`).
                *settled = None;
                Err(error)
            }
        }
    }

    /// Forgets what was settled for `workflow`: its group was scaled in here.
    pub fn forget(&self, workflow: &str) {
        let turns = self
            .workflows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(workflow)
            .cloned();
        if let Some(turns) = turns
            && let Ok(mut settled) = turns.turn.try_lock()
        {
            *settled = None;
        }
    }

    fn turns(&self, workflow: &str) -> Arc<WorkflowTurns> {
        let mut workflows = self
            .workflows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if workflows.len() >= MAX_REMEMBERED && !workflows.contains_key(workflow) {
            workflows.retain(|_, turns| Arc::strong_count(turns) > 1);
        }
        workflows.entry(workflow.to_owned()).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use shared::sample_events::sample;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn the_three_sample_requests_read_alike() {
        let event = sample("scale-to-zero", "wake-event.json");
        let request = WakeRequest::from_event(
            event["source"].as_str().unwrap(),
            event["detail-type"].as_str().unwrap(),
            event["detail"].clone(),
            Some(1),
        )
        .unwrap();
        assert_eq!(
            (request.workflow.as_str(), request.queued, request.via),
            ("img2vid", 3, "EventBridge")
        );
        let sns = sample("scale-to-zero", "wake-sns.json");
        let message = sns["Records"][0]["Sns"]["Message"].as_str().unwrap();
        assert!(is_wake_message(message));
        let request = WakeRequest::from_sns_message(message, None).unwrap();
        assert_eq!(
            (request.workflow.as_str(), request.queued, request.via),
            ("img2vid", 3, "SNS")
        );
        assert!(!is_wake_message(
            sample("scale-to-zero", "sns-idle-alarm.json")["Records"][0]["Sns"]["Message"]
                .as_str()
                .unwrap()
        ));
    }

    #[test]
    fn malformed_requests_say_what_is_wrong_and_what_is_expected() {
        let cases: &[(serde_json::Value, &str)] = &[
            (json!({"workflow": "a"}), "missing field `queued`"),
            (json!({"queued": 1}), "missing field `workflow`"),
            (json!({"workflow": "a", "queued": -1}), "invalid value"),
            (json!({"workflow": "a", "queued": 2.5}), "invalid type"),
            (json!({"workflow": "a", "queued": "3"}), "invalid type"),
            (
                json!({"workflow": "a", "queued": 1, "queue": 2}),
                "unknown field `queue`",
            ),
        ];
        for (detail, problem) in cases {
            let err =
                WakeRequest::from_event(EVENT_SOURCE, EVENT_DETAIL_TYPE, detail.clone(), None)
                    .unwrap_err()
                    .to_string();
            assert!(
                err.starts_with("malformed wake request (EventBridge): ") && err.contains(problem),
                "{detail}: {err}"
            );
            assert!(err.contains("expected detail {\"workflow\""), "{err}");
        }
        let err = WakeRequest::from_event("someone.else", EVENT_DETAIL_TYPE, json!({}), None)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "EventBridge event `Jobs Queued` comes from `someone.else`; a wake must come from `orchestrator.backend`"
        );
        let err = WakeRequest::from_sns_message(
            r#"{"action":"scale-to-zero","workflow":"a","queued":1}"#,
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("malformed wake request (SNS): unknown variant `scale-to-zero`"),
            "{err}"
        );
        let err =
            WakeRequest::from_sns_message(r#"{"action":"wake","workflow":"  ","queued":1}"#, None)
                .unwrap_err();
        assert_eq!(
            err.to_string(),
            "wake request (SNS) names no workflow (`workflow` is empty)"
        );
    }

    /// 200 requests for one workflow at once, with rising job counts: the ledger lets two
    /// turns run (the first request's, then one for everything that waited), and the second
    /// sizes for the largest count.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_burst_in_one_environment_runs_a_turn_or_two_sized_for_the_most_jobs() {
        let ledger = Arc::new(WakeLedger::default());
        let turns = Arc::new(AtomicUsize::new(0));
        let sized_for = Arc::new(Mutex::new(Vec::new()));
        let mut requests = tokio::task::JoinSet::new();
        for queued in 1..=200u64 {
            let (ledger, turns, sized_for) = (ledger.clone(), turns.clone(), sized_for.clone());
            requests.spawn(async move {
                ledger
                    .serve("img2vid", queued, |jobs| async move {
                        turns.fetch_add(1, Ordering::SeqCst);
                        sized_for.lock().unwrap().push(jobs);
                        // An AWS round trip: the rest of the burst arrives meanwhile.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok::<_, ()>(((), Some(("gpu-img2vid".to_owned(), 4))))
                    })
                    .await
                    .unwrap()
            });
        }
        let mut covered = 0;
        while let Some(turn) = requests.join_next().await {
            if matches!(turn.unwrap(), Turn::Covered(_)) {
                covered += 1;
            }
        }
        let ran = turns.load(Ordering::SeqCst);
        assert!(ran <= 2, "{ran} turns ran");
        assert_eq!(covered, 200 - ran);
        assert_eq!(sized_for.lock().unwrap().last(), Some(&200));
    }

    #[tokio::test]
    async fn a_request_for_more_jobs_runs_again_and_a_failed_turn_settles_nothing() {
        let ledger = WakeLedger::default();
        let settle = |capacity: u32| {
            move |jobs: u64| async move { Ok::<_, &str>((jobs, Some(("g".to_owned(), capacity)))) }
        };
        let first = ledger.serve("w", 3, settle(3)).await.unwrap();
        assert_eq!(
            first,
            Turn::Ran {
                queued: 3,
                outcome: 3
            }
        );
        let Turn::Covered(settled) = ledger.serve("w", 2, settle(9)).await.unwrap() else {
            panic!("fewer jobs than settled ride on the settlement");
        };
        assert_eq!((settled.capacity, settled.queued), (3, 3));
        assert!(matches!(
            ledger.serve("w", 5, settle(5)).await.unwrap(),
            Turn::Ran { queued: 5, .. }
        ));
        // Another workflow has its own turns.
        assert!(matches!(
            ledger.serve("v", 1, settle(1)).await.unwrap(),
            Turn::Ran { .. }
        ));
        let failed: Result<Turn<u64>, &str> =
            ledger.serve("w", 9, |_| async { Err("throttled") }).await;
        assert_eq!(failed, Err("throttled"));
        assert!(
            matches!(
                ledger.serve("w", 1, settle(1)).await.unwrap(),
                Turn::Ran { .. }
            ),
            "a failure forgets the settlement"
        );
        ledger.forget("w");
        assert!(matches!(
            ledger.serve("w", 1, settle(1)).await.unwrap(),
            Turn::Ran { .. }
        ));
    }
}
