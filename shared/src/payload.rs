//! Decoding Lambda payloads into the typed event structs of `aws_lambda_events`, with errors
//! that say what arrived.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// A payload that has the shape of an event kind but does not decode as one.
#[derive(Debug, thiserror::Error)]
#[error("malformed {kind} event: {source}")]
pub struct MalformedEvent {
    pub kind: &'static str,
    #[source]
    pub source: serde_json::Error,
}

/// Decodes `payload` as the event type `T`, naming `kind` in the error.
pub fn decode<T: DeserializeOwned>(
    payload: Value,
    kind: &'static str,
) -> Result<T, MalformedEvent> {
    serde_json::from_value(payload).map_err(|source| MalformedEvent { kind, source })
}

/// The payload's top-level keys (or its JSON type), for "unrecognised event" errors.
pub fn describe_shape(payload: &Value) -> String {
    match payload {
        Value::Object(map) if map.is_empty() => "an empty object".to_owned(),
        Value::Object(map) => {
            // Sorted: serde_json keeps insertion order when a dependency enables `preserve_order`.
            let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
            keys.sort_unstable();
            format!("an object with keys {}", keys.join(", "))
        }
        Value::Null => "null".to_owned(),
        Value::Bool(_) => "a boolean".to_owned(),
        Value::Number(_) => "a number".to_owned(),
        Value::String(_) => "a string".to_owned(),
        Value::Array(_) => "an array".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shapes_are_described() {
        assert_eq!(
            describe_shape(&json!({"b": 1, "a": 2})),
            "an object with keys a, b"
        );
        assert_eq!(describe_shape(&json!({})), "an empty object");
        assert_eq!(describe_shape(&json!([1])), "an array");
    }

    #[test]
    fn malformed_events_name_their_kind_and_the_problem() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Rotation {
            #[serde(rename = "Step")]
            step: String,
        }
        let err = decode::<Rotation>(json!({"Stp": "x"}), "rotation").unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed rotation event: missing field `Step`"
        );
    }
}
