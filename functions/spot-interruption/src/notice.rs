//! What the EC2 and Auto Scaling events spot-interruption acts on say: the notice about an
//! instance and the time it was emitted.

use std::fmt;

pub const SPOT_INTERRUPTION_WARNING: &str = "EC2 Spot Instance Interruption Warning";
pub const REBALANCE_RECOMMENDATION: &str = "EC2 Instance Rebalance Recommendation";
pub const TERMINATE_LIFECYCLE_ACTION: &str = "EC2 Instance-terminate Lifecycle Action";

/// What an event says is about to happen to an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceNotice {
    SpotInterruption {
        instance_id: String,
    },
    RebalanceRecommendation {
        instance_id: String,
    },
    Terminating {
        instance_id: String,
        auto_scaling_group: String,
        lifecycle_hook_name: String,
        lifecycle_action_token: String,
    },
    /// Another detail type (the rule should not route it here): logged and left alone.
    Other {
        detail_type: String,
    },
}

impl InstanceNotice {
    /// The instance the notice is about (`None` for detail types not handled here).
    pub fn instance_id(&self) -> Option<&str> {
        match self {
            InstanceNotice::SpotInterruption { instance_id }
            | InstanceNotice::RebalanceRecommendation { instance_id }
            | InstanceNotice::Terminating { instance_id, .. } => Some(instance_id),
            InstanceNotice::Other { .. } => None,
        }
    }

    /// A short name for logs and the invocation result.
    pub fn kind(&self) -> &str {
        match self {
            InstanceNotice::SpotInterruption { .. } => SPOT_INTERRUPTION_WARNING,
            InstanceNotice::RebalanceRecommendation { .. } => REBALANCE_RECOMMENDATION,
            InstanceNotice::Terminating { .. } => TERMINATE_LIFECYCLE_ACTION,
            InstanceNotice::Other { detail_type } => detail_type,
        }
    }
}

/// A point in time to the second, in UTC (EventBridge event times carry no fractions).
///
/// Kept as plain seconds so the decision code needs no date library; it prints as RFC 3339
/// (`2026-11-22T12:03:14Z`), the format of the events themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventTime {
    unix_seconds: i64,
}

impl EventTime {
    pub const fn from_unix_seconds(unix_seconds: i64) -> Self {
        EventTime { unix_seconds }
    }

    pub const fn unix_seconds(self) -> i64 {
        self.unix_seconds
    }

    pub const fn plus_seconds(self, seconds: i64) -> Self {
        EventTime {
            unix_seconds: self.unix_seconds.saturating_add(seconds),
        }
    }
}

impl fmt::Display for EventTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.unix_seconds.div_euclid(86_400);
        let second_of_day = self.unix_seconds.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
            second_of_day / 3600,
            second_of_day % 3600 / 60,
            second_of_day % 60
        )
    }
}

impl serde::Serialize for EventTime {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// `#[serde(with)]` for an [`EventTime`] kept as plain Unix seconds (the progress record), where
/// its own `Serialize` writes RFC 3339 for people.
pub mod unix_seconds {
    use super::EventTime;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(time: &EventTime, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i64(time.unix_seconds())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<EventTime, D::Error> {
        i64::deserialize(deserializer).map(EventTime::from_unix_seconds)
    }

    /// The same for an optional time.
    pub mod option {
        use super::EventTime;
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(
            time: &Option<EventTime>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match time {
                Some(time) => serializer.serialize_some(&time.unix_seconds()),
                None => serializer.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<EventTime>, D::Error> {
            Option::<i64>::deserialize(deserializer).map(|s| s.map(EventTime::from_unix_seconds))
        }
    }
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use crate::trigger::Trigger;
    use aws_lambda_events::event::eventbridge::EventBridgeEvent;
    use shared::sample_events::sample;

    #[test]
    fn event_time_formats_like_chrono_across_the_calendar() {
        // Leap days, century rules, year ends, before 1970: checked against chrono's own
        // formatting of the same instant (chrono arrives through aws_lambda_events).
        let instants = [
            "1969-12-31T23:59:59Z",
            "1970-01-01T00:00:00Z",
            "2000-02-29T12:00:00Z",
            "2024-02-29T23:59:59Z",
            "2024-03-01T00:00:00Z",
            "2026-12-31T23:58:30Z",
            "2100-03-01T00:00:00Z",
            "2400-02-29T06:07:08Z",
            "1900-02-28T00:00:00Z",
        ];
        for text in instants {
            let mut event = sample("spot-interruption", "rebalance-recommendation.json");
            event["time"] = text.into();
            let decoded: EventBridgeEvent = serde_json::from_value(event.clone()).unwrap();
            let chrono_time = decoded.time.unwrap();
            let ours = Trigger::from_payload(event).unwrap().time;
            assert_eq!(ours.to_string(), text);
            assert_eq!(
                ours.plus_seconds(120).to_string(),
                (chrono_time + std::time::Duration::from_secs(120))
                    .format("%Y-%m-%dT%H:%M:%SZ")
                    .to_string(),
                "{text}"
            );
        }
    }
}
