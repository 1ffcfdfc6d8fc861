//! Configuration read once at cold start; a bad value names its variable.

use shared::database::ConnectSettings;
use shared::env_config::{ConfigError, EnvVars};

/// Characters new passwords never contain unless `EXCLUDE_CHARACTERS` says otherwise: the
/// ones that break connection strings, shells and hand-written SQL.
pub const DEFAULT_EXCLUDE_CHARACTERS: &str = r#"/@"'\"#;
pub const DEFAULT_PASSWORD_LENGTH: u32 = 32;
/// `GetRandomPassword` accepts 1..=4096; shorter than 8 is never a sensible database password.
const PASSWORD_LENGTH_RANGE: std::ops::RangeInclusive<u32> = 8..=4096;

/// Everything the function reads from its environment.
#[derive(Debug, Clone)]
pub struct RotationConfig {
    pub exclude_characters: String,
    pub password_length: u32,
    pub connect: ConnectSettings,
}

impl RotationConfig {
    /// `EXCLUDE_CHARACTERS`, `PASSWORD_LENGTH`, and the database settings of
    /// [`ConnectSettings::from_env`] (`DB_CA_BUNDLE`, `DB_CONNECT_TIMEOUT_SECONDS`,
    /// `DB_STATEMENT_TIMEOUT_SECONDS`).
    pub fn from_env(env: &EnvVars) -> Result<Self, ConfigError> {
        let exclude_characters = env
            .raw("EXCLUDE_CHARACTERS")
            .unwrap_or_else(|| DEFAULT_EXCLUDE_CHARACTERS.to_owned());
        let password_length = env
            .optional_with("PASSWORD_LENGTH", |raw| {
                let length = raw.parse::<u32>().map_err(|e| e.to_string())?;
                if PASSWORD_LENGTH_RANGE.contains(&length) {
                    Ok(length)
                } else {
                    Err(format!(
                        "must be between {} and {}",
                        PASSWORD_LENGTH_RANGE.start(),
                        PASSWORD_LENGTH_RANGE.end()
                    ))
                }
            })?
            .unwrap_or(DEFAULT_PASSWORD_LENGTH);
        Ok(Self {
            exclude_characters,
            password_length,
            connect: ConnectSettings::from_env(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let config = RotationConfig::from_env(&EnvVars::from_pairs::<&str, &str>([])).unwrap();
        assert_eq!(config.exclude_characters, "/@\"'\\");
        assert_eq!(config.password_length, 32);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (name, value) in [
            ("PASSWORD_LENGTH", "thirty"),
            ("PASSWORD_LENGTH", "4"),
            ("PASSWORD_LENGTH", "5000"),
            ("DB_CA_BUNDLE", "/nonexistent.pem"),
            ("DB_STATEMENT_TIMEOUT_SECONDS", "0"),
        ] {
            let err = RotationConfig::from_env(&EnvVars::from_pairs([(name, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(name) && err.contains(value), "{err}");
        }
    }

    #[test]
    fn values_are_taken_as_given() {
        let env = EnvVars::from_pairs([("EXCLUDE_CHARACTERS", "abc"), ("PASSWORD_LENGTH", "64")]);
        let config = RotationConfig::from_env(&env).unwrap();
        assert_eq!(
            (config.exclude_characters.as_str(), config.password_length),
            ("abc", 64)
        );
    }
}
