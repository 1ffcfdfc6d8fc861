//! The EC2 and Auto Scaling events spot-interruption acts on, decoded from EventBridge.

use std::fmt;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use serde::Deserialize;
use serde_json::Value;
use shared::payload::{MalformedEvent, decode};

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

/// An event with its id, which deduplicates repeated deliveries, and the time it was emitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedNotice {
    pub event_id: String,
    pub time: EventTime,
    pub notice: InstanceNotice,
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

#[derive(Deserialize)]
struct Ec2InstanceDetail {
    #[serde(rename = "instance-id")]
    instance_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LifecycleActionDetail {
    #[serde(rename = "EC2InstanceId")]
    ec2_instance_id: String,
    auto_scaling_group_name: String,
    lifecycle_hook_name: String,
    lifecycle_action_token: String,
}

/// Why an EventBridge event cannot be acted on although it decodes.
#[derive(Debug, thiserror::Error)]
pub enum InvalidNotice {
    #[error(transparent)]
    Malformed(#[from] MalformedEvent),
    #[error("{detail_type} event has no `id`, which fleet subscribers deduplicate on")]
    MissingId { detail_type: String },
    #[error("{detail_type} event {event_id} has no `time`, which the fleet message carries")]
    MissingTime {
        detail_type: String,
        event_id: String,
    },
    #[error(
        "{detail_type} event {event_id} names `{instance_id}`, which is not an EC2 instance id"
    )]
    NotAnInstanceId {
        detail_type: String,
        event_id: String,
        instance_id: String,
    },
}

impl ReceivedNotice {
    pub fn from_payload(payload: Value) -> Result<Self, InvalidNotice> {
        let event: EventBridgeEvent = decode(payload, "EventBridge")?;
        let detail_type = event.detail_type.clone();
        let event_id = match event.id.as_deref().map(str::trim) {
            Some(id) if !id.is_empty() => id.to_owned(),
            _ => return Err(InvalidNotice::MissingId { detail_type }),
        };
        let Some(time) = event.time else {
            return Err(InvalidNotice::MissingTime {
                detail_type,
                event_id,
            });
        };
        let time = EventTime::from_unix_seconds(time.timestamp());
        let notice = match event.detail_type.as_str() {
            SPOT_INTERRUPTION_WARNING => {
                let detail: Ec2InstanceDetail = decode(event.detail, SPOT_INTERRUPTION_WARNING)?;
                InstanceNotice::SpotInterruption {
                    instance_id: detail.instance_id,
                }
            }
            REBALANCE_RECOMMENDATION => {
                let detail: Ec2InstanceDetail = decode(event.detail, REBALANCE_RECOMMENDATION)?;
                InstanceNotice::RebalanceRecommendation {
                    instance_id: detail.instance_id,
                }
            }
            TERMINATE_LIFECYCLE_ACTION => {
                let detail: LifecycleActionDetail =
                    decode(event.detail, TERMINATE_LIFECYCLE_ACTION)?;
                InstanceNotice::Terminating {
                    instance_id: detail.ec2_instance_id,
                    auto_scaling_group: detail.auto_scaling_group_name,
                    lifecycle_hook_name: detail.lifecycle_hook_name,
                    lifecycle_action_token: detail.lifecycle_action_token,
                }
            }
            other => InstanceNotice::Other {
                detail_type: other.to_owned(),
            },
        };
        if let Some(instance_id) = notice.instance_id()
            && !looks_like_instance_id(instance_id)
        {
            return Err(InvalidNotice::NotAnInstanceId {
                instance_id: instance_id.to_owned(),
                detail_type,
                event_id,
            });
        }
        Ok(ReceivedNotice {
            event_id,
            time,
            notice,
        })
    }
}

/// `i-` and 8 or 17 hex digits: anything else cannot be an instance, and Auto Scaling would
/// only answer with a validation error.
fn looks_like_instance_id(id: &str) -> bool {
    id.strip_prefix("i-").is_some_and(|hex| {
        matches!(hex.len(), 8 | 17) && hex.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::sample_events::sample;

    #[test]
    fn the_three_sample_events_decode() {
        let warning = ReceivedNotice::from_payload(sample(
            "spot-interruption",
            "spot-interruption-warning.json",
        ))
        .unwrap();
        assert_eq!(warning.event_id, "1e5527d7-bb36-4607-3370-4164db56a40e");
        assert_eq!(
            warning.notice,
            InstanceNotice::SpotInterruption {
                instance_id: "i-0b1c2d3e4f5a6b7c8".into()
            }
        );
        let rebalance = ReceivedNotice::from_payload(sample(
            "spot-interruption",
            "rebalance-recommendation.json",
        ))
        .unwrap();
        assert!(matches!(
            rebalance.notice,
            InstanceNotice::RebalanceRecommendation { .. }
        ));
        let lifecycle = ReceivedNotice::from_payload(sample(
            "spot-interruption",
            "terminate-lifecycle-action.json",
        ))
        .unwrap();
        assert_eq!(
            lifecycle.notice,
            InstanceNotice::Terminating {
                instance_id: "i-0b1c2d3e4f5a6b7c8".into(),
                auto_scaling_group: "orchestrator-dev-img2vid".into(),
                lifecycle_hook_name: "drain-before-terminate".into(),
                lifecycle_action_token: "71514b9d-6a40-4b26-8523-05e7eEXAMPLE".into(),
            }
        );
    }

    #[test]
    fn other_detail_types_are_recognised_as_not_ours() {
        let mut event = sample("spot-interruption", "rebalance-recommendation.json");
        event["detail-type"] = "EC2 Instance State-change Notification".into();
        let notice = ReceivedNotice::from_payload(event).unwrap();
        assert!(matches!(notice.notice, InstanceNotice::Other { .. }));
    }

    #[test]
    fn a_warning_without_an_instance_id_is_malformed() {
        let mut event = sample("spot-interruption", "spot-interruption-warning.json");
        event["detail"] = serde_json::json!({"instance-action": "terminate"});
        let err = ReceivedNotice::from_payload(event).unwrap_err();
        assert!(
            err.to_string().contains("missing field `instance-id`"),
            "{err}"
        );
    }

    #[test]
    fn id_time_and_instance_id_are_required() {
        let mut no_id = sample("spot-interruption", "spot-interruption-warning.json");
        no_id.as_object_mut().unwrap().remove("id");
        let err = ReceivedNotice::from_payload(no_id).unwrap_err();
        assert!(matches!(err, InvalidNotice::MissingId { .. }), "{err}");

        let mut no_time = sample("spot-interruption", "spot-interruption-warning.json");
        no_time.as_object_mut().unwrap().remove("time");
        let err = ReceivedNotice::from_payload(no_time).unwrap_err();
        assert!(err.to_string().contains("has no `time`"), "{err}");

        for bad in [
            "",
            "i-",
            "vol-0b1c2d3e4f5a6b7c8",
            "i-0b1c2d3e4f5a6b7cZ",
            "i-123",
        ] {
            let mut event = sample("spot-interruption", "spot-interruption-warning.json");
            event["detail"]["instance-id"] = bad.into();
            let err = ReceivedNotice::from_payload(event).unwrap_err();
            assert!(
                matches!(err, InvalidNotice::NotAnInstanceId { .. }),
                "{bad:?}: {err}"
            );
        }
        let mut short_id = sample("spot-interruption", "rebalance-recommendation.json");
        short_id["detail"]["instance-id"] = "i-0123abcd".into();
        assert!(ReceivedNotice::from_payload(short_id).is_ok());
    }

    #[test]
    fn not_an_eventbridge_event_is_malformed() {
        for payload in [
            serde_json::json!({}),
            serde_json::json!([1, 2]),
            serde_json::json!("EC2 Spot Instance Interruption Warning"),
            serde_json::json!({"detail-type": 7, "source": "aws.ec2", "detail": {}}),
        ] {
            let err = ReceivedNotice::from_payload(payload.clone()).unwrap_err();
            assert!(
                err.to_string().starts_with("malformed EventBridge event"),
                "{payload}: {err}"
            );
        }
    }

    #[test]
    fn event_time_keeps_the_events_own_format() {
        let warning = ReceivedNotice::from_payload(sample(
            "spot-interruption",
            "spot-interruption-warning.json",
        ))
        .unwrap();
        assert_eq!(warning.time.to_string(), "2026-11-22T12:03:14Z");
        assert_eq!(
            warning.time.plus_seconds(120).to_string(),
            "2026-11-22T12:05:14Z"
        );
    }

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
            let ours = ReceivedNotice::from_payload(event).unwrap().time;
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
