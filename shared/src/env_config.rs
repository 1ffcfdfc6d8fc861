//! Typed configuration from environment variables, parsed once at cold start.
//!
//! A missing or invalid value stops the function at init with an error that names the
//! variable. An empty value counts as unset, because templates pass `""` for optional
//! parameters.

use std::{collections::HashMap, fmt::Display, str::FromStr};

/// Why a configuration value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {name} is required but not set")]
    Missing { name: String },
    #[error("environment variable {name} has an invalid value `{value}`: {reason}")]
    Invalid {
        name: String,
        value: String,
        reason: String,
    },
}

/// Where variables are read from: the process environment, or a fixed map in tests (so tests
/// never mutate the process environment, which is unsafe with threads).
#[derive(Debug, Clone)]
pub struct EnvVars {
    overrides: Option<HashMap<String, String>>,
}

impl EnvVars {
    /// Reads the process environment.
    pub fn from_process() -> Self {
        Self { overrides: None }
    }

    /// Reads only the given pairs (for tests and local tools).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let map = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Self {
            overrides: Some(map),
        }
    }

    /// The raw value, trimmed; empty counts as unset.
    pub fn raw(&self, name: &str) -> Option<String> {
        let value = match &self.overrides {
            Some(map) => map.get(name).cloned(),
            None => std::env::var(name).ok(),
        }?;
        let trimmed = value.trim();
        (!trimmed.is_empty()).then(|| trimmed.to_owned())
    }

    /// A value that must be set.
    pub fn required<T>(&self, name: &str) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.optional(name)?.ok_or_else(|| ConfigError::Missing {
            name: name.to_owned(),
        })
    }

    /// A value that may be unset.
    pub fn optional<T>(&self, name: &str) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.optional_with(name, |raw| raw.parse::<T>().map_err(|e| e.to_string()))
    }

    /// A value with a default when unset.
    pub fn or_default<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        Ok(self.optional(name)?.unwrap_or(default))
    }

    /// A value parsed by `parse`, whose error message becomes the reason in [`ConfigError::Invalid`].
    pub fn optional_with<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        let Some(raw) = self.raw(name) else {
            return Ok(None);
        };
        parse(&raw)
            .map(Some)
            .map_err(|reason| ConfigError::Invalid {
                name: name.to_owned(),
                value: raw,
                reason,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_variable_is_named() {
        let env = EnvVars::from_pairs([("OTHER", "1")]);
        let err = env.required::<String>("NOTIFY_TOPIC_ARN").unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable NOTIFY_TOPIC_ARN is required but not set"
        );
    }

    #[test]
    fn invalid_value_names_variable_value_and_reason() {
        let env = EnvVars::from_pairs([("PASSWORD_LENGTH", "thirty")]);
        let err = env.or_default::<u32>("PASSWORD_LENGTH", 32).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("PASSWORD_LENGTH"), "{text}");
        assert!(text.contains("`thirty`"), "{text}");
        assert!(text.contains("invalid digit"), "{text}");
    }

    #[test]
    fn empty_counts_as_unset_and_values_are_trimmed() {
        let env = EnvVars::from_pairs([("ALERT", "  "), ("TARGET", " 4 ")]);
        assert_eq!(env.optional::<String>("ALERT").unwrap(), None);
        assert_eq!(env.or_default::<u32>("ALERT", 7).unwrap(), 7);
        assert_eq!(env.required::<u32>("TARGET").unwrap(), 4);
    }

    #[test]
    fn custom_parser_reason_is_reported() {
        let env = EnvVars::from_pairs([("TARGET", "0")]);
        let err = env
            .optional_with("TARGET", |raw| match raw.parse::<u32>() {
                Ok(0) => Err("must be at least 1".to_owned()),
                Ok(n) => Ok(n),
                Err(e) => Err(e.to_string()),
            })
            .unwrap_err();
        assert_eq!(
            err,
            ConfigError::Invalid {
                name: "TARGET".into(),
                value: "0".into(),
                reason: "must be at least 1".into()
            }
        );
    }
}
