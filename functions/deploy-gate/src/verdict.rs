//! The decision, pure: alarm states and metric samples + the gate → each check's result, and
//! from those a verdict. No SDK types; the adapter feeds plain values in.

use crate::gate::{CheckKind, Gate, MetricCheck, NoData};
use serde::Serialize;
use std::collections::HashMap;

/// An alarm's state as CloudWatch reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmState {
    Ok,
    Alarm,
    InsufficientData,
}

impl AlarmState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmState::Ok => "OK",
            AlarmState::Alarm => "ALARM",
            AlarmState::InsufficientData => "INSUFFICIENT_DATA",
        }
    }
}

/// The metric series the built-in checks read (all `AWS/ApplicationELB`, per minute).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Series {
    Target5xx,
    Requests,
    ResponseTimeSum,
    ResponseTimeCount,
    UnhealthyHosts,
    HealthyHosts,
}

impl Series {
    /// Metric name and statistic. Every ratio is a ratio of sums over the window, computed
    /// here because the local stand-in (and a plain query) has no metric math.
    pub fn metric(self) -> (&'static str, &'static str) {
        match self {
            Series::Target5xx => ("HTTPCode_Target_5XX_Count", "Sum"),
            Series::Requests => ("RequestCount", "Sum"),
            Series::ResponseTimeSum => ("TargetResponseTime", "Sum"),
            Series::ResponseTimeCount => ("TargetResponseTime", "SampleCount"),
            Series::UnhealthyHosts => ("UnHealthyHostCount", "Sum"),
            Series::HealthyHosts => ("HealthyHostCount", "Sum"),
        }
    }

    pub fn for_check(kind: CheckKind) -> [Series; 2] {
        match kind {
            CheckKind::ErrorRate => [Series::Target5xx, Series::Requests],
            CheckKind::ResponseTime => [Series::ResponseTimeSum, Series::ResponseTimeCount],
            CheckKind::UnhealthyHosts => [Series::UnhealthyHosts, Series::HealthyHosts],
        }
    }
}

/// One per-minute value; `timestamp` is the start of its minute (epoch seconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Datapoint {
    pub timestamp: i64,
    pub value: f64,
}

/// An AWS call that failed while measuring.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiFailure {
    pub message: String,
    /// Throttling, 5xx, timeout: the next poll may succeed.
    pub transient: bool,
}

/// What one poll saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// States of the named alarms that exist.
    pub alarms: Result<HashMap<String, AlarmState>, ApiFailure>,
    pub metrics: Result<HashMap<Series, Vec<Datapoint>>, ApiFailure>,
    /// End of every window (epoch seconds, exclusive).
    pub window_end: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Ok,
    Breached,
    NoData,
    Error,
}

/// A number or an alarm state.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Measure {
    Number(f64),
    State(&'static str),
}

/// One check's result, as reported.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    /// `alarm:<name>` or the built-in check's name.
    pub name: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Measure>,
    /// Breached above this (alarms: the state that fails).
    pub threshold: Measure,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_seconds: Option<u32>,
    pub detail: String,
    #[serde(skip)]
    pub transient: bool,
}

impl CheckResult {
    /// A short line for reasons: `error-rate 10% > 5% over 300 s`.
    pub fn summary(&self) -> String {
        match (&self.value, self.window_seconds) {
            (Some(Measure::Number(v)), Some(w)) => {
                let (Measure::Number(t), unit) = (&self.threshold, self.unit.unwrap_or("")) else {
                    return format!("{}: {}", self.name, self.detail);
                };
                let unit = if unit == "percent" { "%" } else { " s" };
                let op = if self.status == Status::Breached {
                    ">"
                } else {
                    "≤"
                };
                format!(
                    "{} {}{unit} {op} {}{unit} over {w} s ({})",
                    self.name,
                    round(*v),
                    round(*t),
                    self.detail
                )
            }
            _ => format!("{}: {}", self.name, self.detail),
        }
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Every check of the gate against one observation.
pub fn evaluate(gate: &Gate, observation: &Observation) -> Vec<CheckResult> {
    let mut results = Vec::with_capacity(gate.alarm_names.len() + gate.checks.len());
    for name in &gate.alarm_names {
        results.push(alarm_result(name, &observation.alarms));
    }
    for check in &gate.checks {
        results.push(metric_result(
            check,
            &observation.metrics,
            observation.window_end,
        ));
    }
    results
}

fn alarm_result(
    name: &str,
    alarms: &Result<HashMap<String, AlarmState>, ApiFailure>,
) -> CheckResult {
    let result = |status, value, detail: String, transient| CheckResult {
        name: format!("alarm:{name}"),
        status,
        value,
        threshold: Measure::State("ALARM"),
        unit: None,
        window_seconds: None,
        detail,
        transient,
    };
    match alarms {
        Err(failure) => result(
            Status::Error,
            None,
            failure.message.clone(),
            failure.transient,
        ),
        // A typo must not pass a deploy silently.
        Ok(states) => match states.get(name) {
            None => result(
                Status::Error,
                None,
                "no such alarm: the gate cannot watch it".into(),
                false,
            ),
            Some(AlarmState::Alarm) => result(
                Status::Breached,
                Some(Measure::State("ALARM")),
                "alarm is in ALARM".into(),
                false,
            ),
            Some(AlarmState::Ok) => result(
                Status::Ok,
                Some(Measure::State("OK")),
                "alarm is OK".into(),
                false,
            ),
            Some(AlarmState::InsufficientData) => result(
                Status::NoData,
                Some(Measure::State("INSUFFICIENT_DATA")),
                "alarm has insufficient data".into(),
                false,
            ),
        },
    }
}

fn metric_result(
    check: &MetricCheck,
    metrics: &Result<HashMap<Series, Vec<Datapoint>>, ApiFailure>,
    window_end: i64,
) -> CheckResult {
    let mut result = CheckResult {
        name: check.kind.name().to_owned(),
        status: Status::NoData,
        value: None,
        threshold: Measure::Number(check.threshold),
        unit: Some(check.kind.unit()),
        window_seconds: Some(check.window_seconds),
        detail: String::new(),
        transient: false,
    };
    let series = match metrics {
        Err(failure) => {
            result.status = Status::Error;
            result.detail = failure.message.clone();
            result.transient = failure.transient;
            return result;
        }
        Ok(series) => series,
    };
    let since = window_end - i64::from(check.window_seconds);
    let measured = measure(check.kind, |s| {
        window_sum(series.get(&s).map(Vec::as_slice), since, window_end)
    });
    match measured {
        Ok((value, detail)) => {
            result.value = Some(Measure::Number(value));
            result.status = if value > check.threshold {
                Status::Breached
            } else {
                Status::Ok
            };
            result.detail = detail;
        }
        Err(detail) => result.detail = detail,
    }
    result
}

/// The sum of a series' usable values in `[since, end)`; `None` when it has none there.
fn window_sum(points: Option<&[Datapoint]>, since: i64, end: i64) -> Option<f64> {
    let values: Vec<f64> = points
        .into_iter()
        .flatten()
        .filter(|p| {
            p.timestamp >= since && p.timestamp < end && p.value.is_finite() && p.value >= 0.0
        })
        .map(|p| p.value)
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// A check's value and how it was reached, from the window sums of its two series; or why
/// there is no value.
fn measure(kind: CheckKind, sum: impl Fn(Series) -> Option<f64>) -> Result<(f64, String), String> {
    let [numerator, denominator] = Series::for_check(kind);
    match kind {
        CheckKind::ErrorRate => match sum(denominator) {
            Some(requests) if requests > 0.0 => {
                // ALB publishes no 5xx count for a minute without 5xx.
                let errors = sum(numerator).unwrap_or(0.0);
                Ok((
                    100.0 * errors / requests,
                    format!("{errors} of {requests} requests answered 5xx"),
                ))
            }
            _ => Err("no requests in the window".to_owned()),
        },
        CheckKind::ResponseTime => match (sum(numerator), sum(denominator)) {
            (Some(total), Some(count)) if count > 0.0 => {
                Ok((total / count, format!("average of {count} responses")))
            }
            _ => Err("no responses in the window".to_owned()),
        },
        CheckKind::UnhealthyHosts => match (sum(numerator), sum(denominator)) {
            (None, None) => Err("no host counts in the window".to_owned()),
            (unhealthy, healthy) => {
                let (u, h) = (unhealthy.unwrap_or(0.0), healthy.unwrap_or(0.0));
                if u + h > 0.0 {
                    Ok((
                        100.0 * u / (u + h),
                        format!("{u} unhealthy of {} host-minutes", u + h),
                    ))
                } else {
                    Err("no registered targets in the window".to_owned())
                }
            }
        },
    }
}

/// `pass`, `fail` or `inconclusive`; `skipped` when the gate did not run at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Pass,
    Fail,
    Inconclusive,
    /// Never from [`decide`]: a CloudFormation rollback is let through unbaked (`rollback`).
    Skipped,
}

/// The decision after a poll: `Some` when the bake can stop (a breach or a permanent error
/// fails at once), always `Some` on the final poll.
pub fn decide(
    no_data: NoData,
    checks: &[CheckResult],
    is_final: bool,
) -> Option<(Decision, String)> {
    let with = |status: Status, transient: Option<bool>| -> Vec<String> {
        checks
            .iter()
            .filter(|c| c.status == status && transient.is_none_or(|t| c.transient == t))
            .map(CheckResult::summary)
            .collect()
    };
    let breached = with(Status::Breached, None);
    if !breached.is_empty() {
        return Some((Decision::Fail, format!("breached: {}", breached.join("; "))));
    }
    let permanent = with(Status::Error, Some(false));
    if !permanent.is_empty() {
        return Some((
            Decision::Fail,
            format!("could not be checked: {}", permanent.join("; ")),
        ));
    }
    if !is_final {
        return None;
    }
    // An API error is never a pass.
    let errors = with(Status::Error, None);
    if !errors.is_empty() {
        return Some((
            Decision::Fail,
            format!("could not be checked: {}", errors.join("; ")),
        ));
    }
    let quiet = with(Status::NoData, None);
    if quiet.is_empty() {
        return Some((
            Decision::Pass,
            format!("all {} checks passed", checks.len()),
        ));
    }
    let listed = quiet.join("; ");
    Some(match no_data {
        NoData::Inconclusive => (
            Decision::Inconclusive,
            format!("inconclusive: no data (NoData: inconclusive): {listed}"),
        ),
        NoData::Fail => (
            Decision::Fail,
            format!("no data counts as a failure (NoData: fail): {listed}"),
        ),
        NoData::Pass => (
            Decision::Pass,
            format!("passed; no data counted as a pass (NoData: pass): {listed}"),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::GateDefinition;
    use serde_json::json;

    const END: i64 = 1_800_000_000;

    fn gate(no_data: &str) -> Gate {
        GateDefinition::from_json(json!({
            "AlarmNames": ["api-5xx"],
            "TargetGroup": "targetgroup/api/1", "LoadBalancer": "app/lb/2", "NoData": no_data,
        }))
        .unwrap()
    }

    fn points(values: &[(i64, f64)]) -> Vec<Datapoint> {
        values
            .iter()
            .map(|&(ago, value)| Datapoint {
                timestamp: END - ago,
                value,
            })
            .collect()
    }

    fn observe(alarm: Option<AlarmState>, series: &[(Series, &[(i64, f64)])]) -> Observation {
        Observation {
            alarms: Ok(alarm
                .into_iter()
                .map(|s| ("api-5xx".to_owned(), s))
                .collect()),
            metrics: Ok(series.iter().map(|(s, p)| (*s, points(p))).collect()),
            window_end: END,
        }
    }

    fn healthy() -> Vec<(Series, &'static [(i64, f64)])> {
        vec![
            (Series::Requests, &[(60, 100.0)]),
            (Series::Target5xx, &[(60, 1.0)]),
            (Series::ResponseTimeSum, &[(60, 20.0)]),
            (Series::ResponseTimeCount, &[(60, 100.0)]),
            (Series::HealthyHosts, &[(60, 4.0)]),
            (Series::UnhealthyHosts, &[(60, 0.0)]),
        ]
    }

    fn statuses(checks: &[CheckResult]) -> Vec<(&str, Status)> {
        checks.iter().map(|c| (c.name.as_str(), c.status)).collect()
    }

    #[test]
    fn each_check_against_its_threshold_and_window() {
        use Series::*;
        type Case = (
            &'static str,
            Vec<(Series, &'static [(i64, f64)])>,
            &'static str,
            Status,
            Option<f64>,
        );
        let cases: Vec<Case> = vec![
            (
                "1 of 100 is 1%",
                vec![(Requests, &[(60, 100.0)]), (Target5xx, &[(60, 1.0)])],
                "error-rate",
                Status::Ok,
                Some(1.0),
            ),
            (
                "10 of 100 is 10%",
                vec![
                    (Requests, &[(60, 60.0), (120, 40.0)]),
                    (Target5xx, &[(60, 10.0)]),
                ],
                "error-rate",
                Status::Breached,
                Some(10.0),
            ),
            (
                "5xx never published is 0%",
                vec![(Requests, &[(60, 100.0)])],
                "error-rate",
                Status::Ok,
                Some(0.0),
            ),
            (
                "errors outside the 5 min window do not count",
                vec![(Requests, &[(60, 100.0)]), (Target5xx, &[(360, 50.0)])],
                "error-rate",
                Status::Ok,
                Some(0.0),
            ),
            (
                "no requests is no data",
                vec![(Target5xx, &[(60, 3.0)])],
                "error-rate",
                Status::NoData,
                None,
            ),
            (
                "zero requests is no data",
                vec![(Requests, &[(60, 0.0)])],
                "error-rate",
                Status::NoData,
                None,
            ),
            (
                "exactly at the threshold passes",
                vec![(Requests, &[(60, 100.0)]), (Target5xx, &[(60, 5.0)])],
                "error-rate",
                Status::Ok,
                Some(5.0),
            ),
            (
                "average response 3 s",
                vec![
                    (ResponseTimeSum, &[(60, 300.0)]),
                    (ResponseTimeCount, &[(60, 100.0)]),
                ],
                "response-time",
                Status::Breached,
                Some(3.0),
            ),
            (
                "response time over 10 min",
                vec![
                    (ResponseTimeSum, &[(540, 10.0), (60, 10.0)]),
                    (ResponseTimeCount, &[(540, 10.0), (60, 10.0)]),
                ],
                "response-time",
                Status::Ok,
                Some(1.0),
            ),
            (
                "no responses",
                vec![],
                "response-time",
                Status::NoData,
                None,
            ),
            (
                "3 of 4 hosts unhealthy",
                vec![(UnhealthyHosts, &[(60, 3.0)]), (HealthyHosts, &[(60, 1.0)])],
                "unhealthy-hosts",
                Status::Breached,
                Some(75.0),
            ),
            (
                "half unhealthy is not above 50%",
                vec![(UnhealthyHosts, &[(60, 2.0)]), (HealthyHosts, &[(60, 2.0)])],
                "unhealthy-hosts",
                Status::Ok,
                Some(50.0),
            ),
            (
                "unhealthy 4 min ago is outside 3 min",
                vec![
                    (UnhealthyHosts, &[(240, 9.0), (60, 0.0)]),
                    (HealthyHosts, &[(60, 4.0)]),
                ],
                "unhealthy-hosts",
                Status::Ok,
                Some(0.0),
            ),
            (
                "no targets",
                vec![(UnhealthyHosts, &[(60, 0.0)]), (HealthyHosts, &[(60, 0.0)])],
                "unhealthy-hosts",
                Status::NoData,
                None,
            ),
            (
                "NaN is ignored",
                vec![(Requests, &[(60, 100.0)]), (Target5xx, &[(60, f64::NAN)])],
                "error-rate",
                Status::Ok,
                Some(0.0),
            ),
        ];
        for (case, series, name, status, value) in cases {
            let checks = evaluate(
                &gate("inconclusive"),
                &observe(Some(AlarmState::Ok), &series),
            );
            let check = checks.iter().find(|c| c.name == name).unwrap();
            assert_eq!(check.status, status, "{case}: {check:?}");
            match value {
                Some(v) => assert_eq!(check.value, Some(Measure::Number(v)), "{case}"),
                None => assert_eq!(check.value, None, "{case}"),
            }
        }
    }

    #[test]
    fn alarms_by_state() {
        for (state, status) in [
            (Some(AlarmState::Alarm), Status::Breached),
            (Some(AlarmState::Ok), Status::Ok),
            (Some(AlarmState::InsufficientData), Status::NoData),
            (None, Status::Error),
        ] {
            let checks = evaluate(&gate("inconclusive"), &observe(state, &healthy()));
            assert_eq!(checks[0].name, "alarm:api-5xx");
            assert_eq!(checks[0].status, status, "{state:?}");
        }
    }

    #[test]
    fn decisions() {
        let all_ok = evaluate(
            &gate("inconclusive"),
            &observe(Some(AlarmState::Ok), &healthy()),
        );
        assert_eq!(
            decide(NoData::Inconclusive, &all_ok, false),
            None,
            "keep baking"
        );
        assert_eq!(
            decide(NoData::Inconclusive, &all_ok, true).unwrap().0,
            Decision::Pass
        );

        let breached = evaluate(
            &gate("inconclusive"),
            &observe(Some(AlarmState::Alarm), &healthy()),
        );
        let (decision, reason) = decide(NoData::Inconclusive, &breached, false).unwrap();
        assert_eq!(decision, Decision::Fail, "a breach fails fast");
        assert!(reason.contains("alarm:api-5xx"), "{reason}");

        let quiet = evaluate(&gate("inconclusive"), &observe(Some(AlarmState::Ok), &[]));
        assert_eq!(
            decide(NoData::Inconclusive, &quiet, false),
            None,
            "no data waits for the end"
        );
        for (rule, decision, text) in [
            (
                NoData::Inconclusive,
                Decision::Inconclusive,
                "inconclusive: no data",
            ),
            (NoData::Fail, Decision::Fail, "NoData: fail"),
            (NoData::Pass, Decision::Pass, "NoData: pass"),
        ] {
            let (got, reason) = decide(rule, &quiet, true).unwrap();
            assert_eq!(got, decision);
            assert!(
                reason.contains(text) && reason.contains("error-rate"),
                "{reason}"
            );
        }
    }

    #[test]
    fn an_api_error_is_never_a_pass() {
        let failure = |transient| ApiFailure {
            message: "GetMetricData failed: Throttling".into(),
            transient,
        };
        for transient in [true, false] {
            let mut observation = observe(Some(AlarmState::Ok), &healthy());
            observation.metrics = Err(failure(transient));
            let checks = evaluate(&gate("pass"), &observation);
            assert_eq!(statuses(&checks)[1], ("error-rate", Status::Error));
            // A permanent error fails at once; a transient one gets the next poll.
            assert_eq!(decide(NoData::Pass, &checks, false).is_some(), !transient);
            let (decision, reason) = decide(NoData::Pass, &checks, true).unwrap();
            assert_eq!(decision, Decision::Fail);
            assert!(reason.contains("Throttling"), "{reason}");
        }
        let mut observation = observe(Some(AlarmState::Ok), &healthy());
        observation.alarms = Err(failure(true));
        let checks = evaluate(&gate("pass"), &observation);
        assert_eq!(
            decide(NoData::Pass, &checks, true).unwrap().0,
            Decision::Fail
        );
    }

    #[test]
    fn results_serialize_with_value_threshold_and_window() {
        let checks = evaluate(
            &gate("inconclusive"),
            &observe(Some(AlarmState::Ok), &healthy()),
        );
        let json = serde_json::to_value(&checks).unwrap();
        assert_eq!(
            json[0],
            json!({"name": "alarm:api-5xx", "status": "ok", "value": "OK", "threshold": "ALARM", "detail": "alarm is OK"})
        );
        assert_eq!(json[1]["value"], 1.0);
        assert_eq!(json[1]["threshold"], 5.0);
        assert_eq!(json[1]["windowSeconds"], 300);
        assert_eq!(json[1]["unit"], "percent");
    }
}
