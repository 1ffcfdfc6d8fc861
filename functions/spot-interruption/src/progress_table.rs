//! The durable copy of an unfinished event's record ([`crate::unfinished`]): one item per
//! event id in the DynamoDB table `PROGRESS_TABLE`, so that a retry Lambda runs in another
//! execution environment finishes the same plan. The owed fleet message goes out even though
//! no group lists the detached instance any more, and nothing done is done again.
//!
//! Items are written only when an attempt fails for a retry, and once more when a resumed
//! plan ends (so a late duplicate delivery repeats nothing). A first attempt costs one
//! consistent `GetItem`, made at the same time as the Auto Scaling lookup and bounded by
//! [`LOOKUP_BUDGET`], so the detach never waits on the table. Items expire
//! [`RECORD_TTL_SECONDS`] after their last write (TTL attribute `expiresAt`). DynamoDB
//! deletes expired items lazily, so an expired item that is still there is ignored.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client as DynamoDbClient;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};

use crate::aws::call_failed;
use crate::unfinished::Unfinished;
use shared::aws::AwsError;

/// The table's partition key: the EventBridge event `id`.
pub const KEY_ATTRIBUTE: &str = "eventId";
/// The record itself, as JSON ([`StoredRecord`]).
pub const RECORD_ATTRIBUTE: &str = "record";
/// Unix seconds after which the record no longer counts (the table's TTL attribute).
pub const EXPIRES_ATTRIBUTE: &str = "expiresAt";

/// How long a record counts after its last write. Lambda retries an asynchronous event for at
/// most 6 hours, and EventBridge redelivers within 24 hours.
pub const RECORD_TTL_SECONDS: i64 = 24 * 60 * 60;

/// How long a first attempt waits for the table before it decides from Auto Scaling alone. In
/// the region a `GetItem` answers in milliseconds, as the Auto Scaling lookup made at the same
/// time does.
pub const LOOKUP_BUDGET: Duration = Duration::from_millis(500);

/// The record format; another version is ignored rather than misread.
const RECORD_VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct StoredRecord {
    version: u32,
    #[serde(flatten)]
    unfinished: Unfinished,
}

/// Why a stored record could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Call(#[from] AwsError),
    #[error("progress record of event {event_id} in table {table} is unreadable: {detail}")]
    Unreadable {
        event_id: String,
        table: String,
        detail: String,
    },
}

/// The progress table and the client that reads and writes it.
#[derive(Debug, Clone)]
pub struct ProgressTable {
    client: DynamoDbClient,
    table_name: String,
}

impl ProgressTable {
    pub fn new(client: DynamoDbClient, table_name: impl Into<String>) -> Self {
        ProgressTable {
            client,
            table_name: table_name.into(),
        }
    }

    pub fn table_name(&self) -> &str {
        &self.table_name
    }

    /// The record of `event_id` still in force at `now` (Unix seconds), if any.
    pub async fn get(&self, event_id: &str, now: i64) -> Result<Option<Unfinished>, RecordError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table_name)
            .key(KEY_ATTRIBUTE, AttributeValue::S(event_id.to_owned()))
            // A retry must see the write of the attempt that failed a minute ago.
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| call_failed("GetItem", &self.target(event_id), e))?;
        match output.item() {
            None => Ok(None),
            Some(item) => {
                unfinished_from_item(item, now).map_err(|detail| RecordError::Unreadable {
                    event_id: event_id.to_owned(),
                    table: self.table_name.clone(),
                    detail,
                })
            }
        }
    }

    /// Stores `unfinished` as the record of `event_id`, replacing an older one.
    pub async fn put(
        &self,
        event_id: &str,
        unfinished: &Unfinished,
        now: i64,
    ) -> Result<(), AwsError> {
        self.client
            .put_item()
            .table_name(&self.table_name)
            .set_item(Some(item(event_id, unfinished, now)))
            .send()
            .await
            .map_err(|e| call_failed("PutItem", &self.target(event_id), e))?;
        Ok(())
    }

    fn target(&self, event_id: &str) -> String {
        format!("event {event_id} in {}", self.table_name)
    }
}

/// The item that stores `unfinished` for `event_id`, written at `now`.
pub fn item(event_id: &str, unfinished: &Unfinished, now: i64) -> HashMap<String, AttributeValue> {
    let record = StoredRecord {
        version: RECORD_VERSION,
        unfinished: unfinished.clone(),
    };
    // Plain strings, numbers and enums: serializing cannot fail.
    let json = serde_json::to_string(&record).unwrap_or_default();
    HashMap::from([
        (
            KEY_ATTRIBUTE.to_owned(),
            AttributeValue::S(event_id.to_owned()),
        ),
        (RECORD_ATTRIBUTE.to_owned(), AttributeValue::S(json)),
        (
            EXPIRES_ATTRIBUTE.to_owned(),
            AttributeValue::N((now + RECORD_TTL_SECONDS).to_string()),
        ),
    ])
}

/// The record an item holds; `None` when it expired before `now`.
pub fn unfinished_from_item(
    item: &HashMap<String, AttributeValue>,
    now: i64,
) -> Result<Option<Unfinished>, String> {
    let expires_at: i64 = match item.get(EXPIRES_ATTRIBUTE) {
        Some(AttributeValue::N(number)) => number
            .parse()
            .map_err(|_| format!("`{EXPIRES_ATTRIBUTE}` is not a whole number: {number}"))?,
        _ => return Err(format!("no number `{EXPIRES_ATTRIBUTE}`")),
    };
    if expires_at <= now {
        return Ok(None);
    }
    let json = match item.get(RECORD_ATTRIBUTE) {
        Some(AttributeValue::S(json)) => json,
        _ => return Err(format!("no string `{RECORD_ATTRIBUTE}`")),
    };
    let record: StoredRecord =
        serde_json::from_str(json).map_err(|e| format!("`{RECORD_ATTRIBUTE}`: {e}"))?;
    if record.version != RECORD_VERSION {
        return Err(format!(
            "record version {} (this function reads version {RECORD_VERSION})",
            record.version
        ));
    }
    Ok(Some(record.unfinished))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Action;
    use crate::fleet_message::{FleetMessage, FleetMessageKind, LifecycleAction};
    use crate::notice::EventTime;
    use crate::plan::{ActionPlan, Detach, InterruptionCount, LifecycleCompletion};

    const NOW: i64 = 1_795_348_994;

    fn unfinished() -> Unfinished {
        let time = EventTime::from_unix_seconds(NOW);
        Unfinished {
            plan: ActionPlan {
                fleet_message: FleetMessage {
                    kind: FleetMessageKind::InstanceTerminating,
                    workflow: "img2vid".into(),
                    auto_scaling_group: "orchestrator-dev-img2vid".into(),
                    instance_id: "i-0b1c2d3e4f5a6b7c8".into(),
                    event_id: "evt-1".into(),
                    time,
                    deadline: Some(time.plus_seconds(120)),
                    lifecycle_action: Some(LifecycleAction {
                        hook_name: "drain".into(),
                        token: "tok-1".into(),
                    }),
                },
                detach: Some(Detach {
                    instance_id: "i-0b1c2d3e4f5a6b7c8".into(),
                    auto_scaling_group: "orchestrator-dev-img2vid".into(),
                }),
                count_interruption: Some(InterruptionCount {
                    workflow: "img2vid".into(),
                    instance_type: "g5.xlarge".into(),
                    availability_zone: "us-east-1a".into(),
                }),
                complete_lifecycle_action: Some(LifecycleCompletion {
                    auto_scaling_group: "orchestrator-dev-img2vid".into(),
                    hook_name: "drain".into(),
                    token: "tok-1".into(),
                    instance_id: "i-0b1c2d3e4f5a6b7c8".into(),
                }),
            },
            done: vec![Action::Detached, Action::CountedInterruption],
        }
    }

    #[test]
    fn a_record_reads_back_as_written_until_it_expires() {
        let stored = item("evt-1", &unfinished(), NOW);
        assert_eq!(stored[KEY_ATTRIBUTE], AttributeValue::S("evt-1".into()));
        assert_eq!(
            unfinished_from_item(&stored, NOW + 60).unwrap(),
            Some(unfinished())
        );
        assert_eq!(
            unfinished_from_item(&stored, NOW + RECORD_TTL_SECONDS - 1).unwrap(),
            Some(unfinished())
        );
        // DynamoDB may still return an expired item; it no longer counts.
        assert_eq!(
            unfinished_from_item(&stored, NOW + RECORD_TTL_SECONDS).unwrap(),
            None
        );
    }

    #[test]
    fn the_stored_json_names_its_version_and_the_steps_done() {
        let stored = item("evt-1", &unfinished(), NOW);
        let AttributeValue::S(json) = &stored[RECORD_ATTRIBUTE] else {
            panic!("record is a string");
        };
        let json: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(json["version"], 1);
        assert_eq!(
            json["done"],
            serde_json::json!(["detached", "counted-interruption"])
        );
        assert_eq!(json["plan"]["fleetMessage"]["kind"], "instance-terminating");
        assert_eq!(json["plan"]["fleetMessage"]["time"], NOW);
    }

    #[test]
    fn an_unreadable_item_is_an_error_that_says_what_is_wrong() {
        let mut stored = item("evt-1", &unfinished(), NOW);
        stored.insert(RECORD_ATTRIBUTE.into(), AttributeValue::S("{}".into()));
        let error = unfinished_from_item(&stored, NOW).unwrap_err();
        assert!(error.contains("`record`"), "{error}");

        let mut newer = item("evt-1", &unfinished(), NOW);
        let AttributeValue::S(json) = &newer[RECORD_ATTRIBUTE] else {
            panic!("record is a string");
        };
        let json = json.replace("\"version\":1", "\"version\":2");
        newer.insert(RECORD_ATTRIBUTE.into(), AttributeValue::S(json));
        let error = unfinished_from_item(&newer, NOW).unwrap_err();
        assert!(error.contains("record version 2"), "{error}");

        stored.remove(EXPIRES_ATTRIBUTE);
        let error = unfinished_from_item(&stored, NOW).unwrap_err();
        assert!(error.contains("expiresAt"), "{error}");
    }
}
