//! Property values as CloudFormation sends them.
//!
//! CloudFormation passes every scalar property to a custom resource as a string: `300` in a
//! template arrives as `"300"`, `true` as `"true"`. These deserializers accept the string and
//! the typed form alike, and say what they got when neither fits:
//!
//! ```
//! #[derive(serde::Deserialize)]
//! #[serde(rename_all = "PascalCase")]
//! struct GateProperties {
//!     #[serde(deserialize_with = "shared::custom_resource::lenient::number")]
//!     bake_seconds: u64,
//!     #[serde(default, deserialize_with = "shared::custom_resource::lenient::optional_bool")]
//!     remove_on_delete: Option<bool>,
//! }
//! let p: GateProperties =
//!     serde_json::from_str(r#"{"BakeSeconds": "300", "RemoveOnDelete": "true"}"#).unwrap();
//! assert_eq!((p.bake_seconds, p.remove_on_delete), (300, Some(true)));
//! ```

use serde::{Deserialize, Deserializer, de::Error};
use serde_json::Value;
use std::{fmt::Display, str::FromStr};

/// `true`, `false`, `"true"`, `"false"` (any case, surrounding spaces ignored).
pub fn bool_value<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    parse_bool(Value::deserialize(deserializer)?).map_err(D::Error::custom)
}

/// Like [`bool_value`]; a missing property or `null` is `None` (use with `#[serde(default)]`).
pub fn optional_bool<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<bool>, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::Null => Ok(None),
        other => parse_bool(other).map(Some).map_err(D::Error::custom),
    }
}

/// A number, or a string holding one (`300` or `"300"`), of any type that parses from text.
pub fn number<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: Display,
{
    parse_number(Value::deserialize(deserializer)?).map_err(D::Error::custom)
}

/// Like [`number`]; a missing property or `null` is `None` (use with `#[serde(default)]`).
pub fn optional_number<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: Display,
{
    match Value::deserialize(deserializer)? {
        Value::Null => Ok(None),
        other => parse_number(other).map(Some).map_err(D::Error::custom),
    }
}

fn parse_bool(value: Value) -> Result<bool, String> {
    match &value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.trim().eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.trim().eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(format!("expected true or false, got {value}")),
    }
}

fn parse_number<T>(value: Value) -> Result<T, String>
where
    T: FromStr,
    T::Err: Display,
{
    let text = match &value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_owned(),
        _ => return Err(format!("expected a number, got {value}")),
    };
    text.parse::<T>()
        .map_err(|e| format!("expected a number, got {value}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Props {
        #[serde(deserialize_with = "number")]
        seconds: u32,
        #[serde(deserialize_with = "bool_value")]
        flag: bool,
        #[serde(default, deserialize_with = "optional_number")]
        ratio: Option<f64>,
        #[serde(default, deserialize_with = "optional_bool")]
        maybe: Option<bool>,
    }

    fn parse(json: &str) -> Result<Props, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn strings_and_typed_values_are_both_accepted() {
        let a = parse(r#"{"seconds":"300","flag":"true","ratio":"0.05","maybe":"FALSE"}"#).unwrap();
        let b = parse(r#"{"seconds":300,"flag":true,"ratio":0.05,"maybe":false}"#).unwrap();
        for p in [a, b] {
            assert_eq!(p.seconds, 300);
            assert!(p.flag);
            assert_eq!(p.ratio, Some(0.05));
            assert_eq!(p.maybe, Some(false));
        }
    }

    #[test]
    fn optional_values_may_be_missing() {
        let p = parse(r#"{"seconds":" 5 ","flag":"false"}"#).unwrap();
        assert_eq!(
            (p.seconds, p.flag, p.ratio, p.maybe),
            (5, false, None, None)
        );
    }

    #[test]
    fn bad_values_say_what_they_got() {
        let err = parse(r#"{"seconds":"soon","flag":"true"}"#).unwrap_err();
        assert!(err.contains(r#"expected a number, got "soon""#), "{err}");
        let err = parse(r#"{"seconds":"-1","flag":"true"}"#).unwrap_err();
        assert!(err.contains(r#"got "-1""#), "{err}");
        let err = parse(r#"{"seconds":"1","flag":"yes"}"#).unwrap_err();
        assert!(
            err.contains(r#"expected true or false, got "yes""#),
            "{err}"
        );
    }
}
