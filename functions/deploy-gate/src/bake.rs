//! The bake: poll every `PollSeconds` until `BakeSeconds` have passed, stop at the first breach,
//! and finish before the invocation has to answer.

use crate::gate::Gate;
use crate::verdict::{ApiFailure, CheckResult, Decision, Observation, decide, evaluate};
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// Longest a single measurement may take before it counts as a (transient) error.
pub const MEASURE_TIMEOUT: Duration = Duration::from_secs(6);
/// Kept after the last measurement for publishing the verdict and answering.
pub const REPORT_TIME: Duration = Duration::from_secs(4);

/// Reads alarms and metrics (the CloudWatch adapter; a fake in tests).
pub trait Observer: Sync {
    fn observe(&self, gate: &Gate) -> impl Future<Output = Observation> + Send;
}

/// How a bake ended.
#[derive(Debug, Clone, PartialEq)]
pub struct BakeOutcome {
    pub decision: Decision,
    pub reason: String,
    /// The checks of the last poll (empty when the bake could not start).
    pub checks: Vec<CheckResult>,
    pub polls: u32,
    pub elapsed: Duration,
}

/// Bakes `gate`, deciding by `finish_by` at the latest.
pub async fn bake<O: Observer>(gate: &Gate, observer: &O, finish_by: Instant) -> BakeOutcome {
    let started = Instant::now();
    let bake_end = started + gate.bake;
    let needed = gate.bake + MEASURE_TIMEOUT + REPORT_TIME;
    let left = finish_by.saturating_duration_since(started);
    if needed > left {
        return BakeOutcome {
            decision: Decision::Fail,
            reason: format!(
                "the bake cannot fit: BakeSeconds {} plus {} s to measure and report needs {} s, \
                 but only {} s are left before the invocation must answer; lower BakeSeconds or \
                 raise the function timeout",
                gate.bake.as_secs(),
                (MEASURE_TIMEOUT + REPORT_TIME).as_secs(),
                needed.as_secs(),
                left.as_secs()
            ),
            checks: Vec::new(),
            polls: 0,
            elapsed: started.elapsed(),
        };
    }
    let mut polls = 0;
    loop {
        let measure_by = (Instant::now() + MEASURE_TIMEOUT).min(finish_by - REPORT_TIME);
        let observation = tokio::time::timeout_at(measure_by, observer.observe(gate))
            .await
            .unwrap_or_else(|_| timed_out());
        polls += 1;
        let checks = evaluate(gate, &observation);
        let is_final = Instant::now() >= bake_end;
        if let Some((decision, reason)) = decide(gate.no_data, &checks, is_final) {
            return BakeOutcome {
                decision,
                reason,
                checks,
                polls,
                elapsed: started.elapsed(),
            };
        }
        let failing: Vec<&str> = checks
            .iter()
            .filter(|c| c.status != crate::verdict::Status::Ok)
            .map(|c| c.name.as_str())
            .collect();
        tracing::info!(polls, ?failing, "gate poll: no breach yet");
        tokio::time::sleep_until((Instant::now() + gate.poll).min(bake_end)).await;
    }
}

fn timed_out() -> Observation {
    let failure = ApiFailure {
        message: format!(
            "the measurement took longer than {} s",
            MEASURE_TIMEOUT.as_secs()
        ),
        transient: true,
    };
    Observation {
        alarms: Err(failure.clone()),
        metrics: Err(failure),
        window_end: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::GateDefinition;
    use crate::verdict::AlarmState;
    use serde_json::json;
    use std::sync::Mutex;

    /// Alarm states in order, one per poll (the last repeats); records when each poll ran.
    struct Script {
        states: Mutex<Vec<Option<AlarmState>>>,
        polled_at: Mutex<Vec<Instant>>,
        delay: Duration,
    }

    impl Script {
        fn new(states: &[Option<AlarmState>]) -> Script {
            Script {
                states: Mutex::new(states.iter().rev().copied().collect()),
                polled_at: Mutex::new(Vec::new()),
                delay: Duration::ZERO,
            }
        }
    }

    impl Observer for Script {
        async fn observe(&self, _: &Gate) -> Observation {
            self.polled_at.lock().unwrap().push(Instant::now());
            tokio::time::sleep(self.delay).await;
            let state = {
                let mut states = self.states.lock().unwrap();
                if states.len() > 1 {
                    states.pop().unwrap()
                } else {
                    states[0]
                }
            };
            Observation {
                alarms: match state {
                    Some(s) => Ok([("api".to_owned(), s)].into()),
                    None => Err(ApiFailure {
                        message: "DescribeAlarms failed: Throttling".into(),
                        transient: true,
                    }),
                },
                metrics: Ok(Default::default()),
                window_end: 0,
            }
        }
    }

    fn gate(bake: u64, poll: u64) -> Gate {
        GateDefinition::from_json(
            json!({"AlarmNames": ["api"], "BakeSeconds": bake, "PollSeconds": poll}),
        )
        .unwrap()
    }

    const OK: Option<AlarmState> = Some(AlarmState::Ok);
    const ALARM: Option<AlarmState> = Some(AlarmState::Alarm);

    #[tokio::test(start_paused = true)]
    async fn polls_until_the_bake_ends_and_the_last_poll_is_at_its_end() {
        let script = Script::new(&[OK]);
        let outcome = bake(
            &gate(100, 30),
            &script,
            Instant::now() + Duration::from_secs(300),
        )
        .await;
        assert_eq!(outcome.decision, Decision::Pass, "{outcome:?}");
        assert_eq!(outcome.polls, 5, "at 0, 30, 60, 90 and 100 s");
        assert_eq!(outcome.elapsed, Duration::from_secs(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_breach_fails_at_the_next_poll() {
        let script = Script::new(&[OK, OK, ALARM]);
        let outcome = bake(
            &gate(300, 30),
            &script,
            Instant::now() + Duration::from_secs(900),
        )
        .await;
        assert_eq!(outcome.decision, Decision::Fail);
        assert_eq!((outcome.polls, outcome.elapsed.as_secs()), (3, 60));
        assert!(outcome.reason.contains("alarm:api"), "{}", outcome.reason);
    }

    #[tokio::test(start_paused = true)]
    async fn a_transient_error_is_retried_but_never_passes_at_the_end() {
        let recovered = bake(
            &gate(60, 30),
            &Script::new(&[None, OK]),
            Instant::now() + Duration::from_secs(300),
        )
        .await;
        assert_eq!(recovered.decision, Decision::Pass);
        let stuck = bake(
            &gate(60, 30),
            &Script::new(&[OK, None]),
            Instant::now() + Duration::from_secs(300),
        )
        .await;
        assert_eq!(stuck.decision, Decision::Fail);
        assert!(stuck.reason.contains("Throttling"), "{}", stuck.reason);
    }

    #[tokio::test(start_paused = true)]
    async fn a_bake_that_cannot_fit_fails_at_once_and_says_so() {
        let script = Script::new(&[OK]);
        let outcome = bake(
            &gate(300, 30),
            &script,
            Instant::now() + Duration::from_secs(200),
        )
        .await;
        assert_eq!((outcome.decision, outcome.polls), (Decision::Fail, 0));
        assert!(
            outcome.reason.contains("cannot fit") && outcome.reason.contains("BakeSeconds 300"),
            "{}",
            outcome.reason
        );
        assert!(script.polled_at.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_measurement_is_cut_off_and_the_verdict_lands_in_time() {
        let mut script = Script::new(&[OK]);
        script.delay = Duration::from_secs(3600);
        let finish_by = Instant::now() + Duration::from_secs(60);
        let outcome = bake(&gate(30, 10), &script, finish_by).await;
        assert_eq!(outcome.decision, Decision::Fail);
        assert!(
            outcome.reason.contains("longer than 6 s"),
            "{}",
            outcome.reason
        );
        assert!(Instant::now() + REPORT_TIME <= finish_by);
    }
}
