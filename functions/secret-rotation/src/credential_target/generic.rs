//! `engine: generic`: a generated value in `password`, with no external system to update.
//! The optional `format` field says what kind of value; `bytes`, how many random bytes a
//! `hex` or `base64` value holds.

use crate::secret_document::{MalformedSecret, SecretDocument};
use crate::{RotationError, StepContext};
use aws_smithy_types::base64;
use secrecy::zeroize::Zeroize;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use std::fmt::Write;
use std::ops::RangeInclusive;

/// The `format` values, for error messages.
pub const FORMATS: &str = "password, laravel-app-key, hex, base64";
/// `bytes` when the secret does not say.
pub const DEFAULT_BYTES: usize = 32;
/// `bytes` a secret may ask for: fewer than 16 is no key; more than 1024 no secret needs
/// (Secrets Manager stores 64 KiB).
pub const BYTES_RANGE: RangeInclusive<usize> = 16..=1024;
/// Laravel's `APP_KEY` for its default cipher, AES-256-CBC: `base64:` and a 32-byte key.
const LARAVEL_PREFIX: &str = "base64:";
const LARAVEL_KEY_BYTES: usize = 32;

/// What kind of value a generic secret holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenericFormat {
    /// `password` (the default): `GetRandomPassword` with `PASSWORD_LENGTH` and
    /// `EXCLUDE_CHARACTERS`.
    Password,
    /// `laravel-app-key`, `hex`, `base64`: `bytes` random bytes from the OS CSPRNG, encoded.
    RandomBytes { encoding: Encoding, bytes: usize },
}

/// How random bytes are written into `password`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `base64:` followed by standard base64 (Laravel's `APP_KEY`).
    LaravelAppKey,
    /// Lowercase hex.
    Hex,
    /// Standard base64, padded.
    Base64,
}

/// Why a generic secret's `format`, `bytes` or value is not usable. Never quotes the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("unknown format `{0}`; formats: {FORMATS}")]
    UnknownFormat(String),
    #[error("field `format` must be a string; formats: {FORMATS}")]
    FormatNotAString,
    #[error(
        "field `bytes` is {found}; it must be a whole number from {} to {} (default {DEFAULT_BYTES})",
        BYTES_RANGE.start(),
        BYTES_RANGE.end()
    )]
    BadBytes { found: String },
    #[error("field `password` is not {expected}")]
    WrongShape { expected: String },
}

impl GenericFormat {
    /// Reads `format` (absent or null: `password`) and, for `hex` and `base64`, `bytes`
    /// (absent or null: 32; a number or a string of digits). The other formats ignore `bytes`.
    pub fn of(fields: &Map<String, Value>) -> Result<Self, FormatError> {
        let name = match fields.get("format") {
            None | Some(Value::Null) => return Ok(GenericFormat::Password),
            Some(Value::String(name)) => name.as_str(),
            Some(_) => return Err(FormatError::FormatNotAString),
        };
        let random = |encoding, bytes| GenericFormat::RandomBytes { encoding, bytes };
        Ok(match name {
            "password" => GenericFormat::Password,
            "laravel-app-key" => random(Encoding::LaravelAppKey, LARAVEL_KEY_BYTES),
            "hex" => random(Encoding::Hex, byte_count(fields.get("bytes"))?),
            "base64" => random(Encoding::Base64, byte_count(fields.get("bytes"))?),
            other => return Err(FormatError::UnknownFormat(other.to_owned())),
        })
    }

    /// Whether `value` has the shape this format produces: a non-empty password; random bytes
    /// that decode from their encoding to exactly their count.
    pub fn check_shape(self, value: &str) -> Result<(), FormatError> {
        let right = match self {
            GenericFormat::Password => !value.is_empty(),
            GenericFormat::RandomBytes { encoding, bytes } => {
                encoding.decoded_length(value) == Some(bytes)
            }
        };
        if right {
            return Ok(());
        }
        let expected = match self {
            GenericFormat::Password => "a non-empty string (format password)".to_owned(),
            GenericFormat::RandomBytes {
                encoding: Encoding::LaravelAppKey,
                bytes,
            } => format!(
                "a Laravel key (format laravel-app-key: `{LARAVEL_PREFIX}` and {bytes} bytes in standard base64)"
            ),
            GenericFormat::RandomBytes {
                encoding: Encoding::Hex,
                bytes,
            } => format!("{bytes} bytes in hex (format hex)"),
            GenericFormat::RandomBytes {
                encoding: Encoding::Base64,
                bytes,
            } => format!("{bytes} bytes in standard base64 (format base64)"),
        };
        Err(FormatError::WrongShape { expected })
    }

    /// createSecret: a new value, from Secrets Manager (`password`) or the OS CSPRNG.
    pub(crate) async fn new_value(
        self,
        step: &StepContext<'_>,
    ) -> Result<SecretString, RotationError> {
        let GenericFormat::RandomBytes { encoding, bytes } = self else {
            return step.new_password().await;
        };
        let mut random = vec![0; bytes];
        let filled = getrandom::fill(&mut random).map(|()| encoding.encode(&random));
        random.zeroize();
        filled
            .map(SecretString::from)
            .map_err(|source| RotationError::RandomSource {
                secret_id: step.secret_id.to_owned(),
                source,
            })
    }

    /// testSecret: the pending version's `password` has this format's shape.
    pub(crate) fn check(self, pending: &SecretDocument) -> Result<(), MalformedSecret> {
        pending.fields()?;
        let password = pending.password().unwrap_or_else(|| SecretString::from(""));
        Ok(self.check_shape(password.expose_secret())?)
    }
}

impl Encoding {
    pub fn encode(self, random: &[u8]) -> String {
        match self {
            Encoding::LaravelAppKey => format!("{LARAVEL_PREFIX}{}", base64::encode(random)),
            Encoding::Hex => {
                random
                    .iter()
                    .fold(String::with_capacity(random.len() * 2), |mut hex, byte| {
                        let _ = write!(hex, "{byte:02x}");
                        hex
                    })
            }
            Encoding::Base64 => base64::encode(random),
        }
    }

    /// How many bytes `value` decodes to; `None` when it is not in this encoding.
    pub fn decoded_length(self, value: &str) -> Option<usize> {
        let base64_length = |text: &str| {
            base64::decode(text).ok().map(|mut decoded| {
                let length = decoded.len();
                decoded.zeroize();
                length
            })
        };
        let hex_length = |text: &str| {
            let digits = text.bytes().all(|c| c.is_ascii_hexdigit());
            (digits && text.len().is_multiple_of(2)).then_some(text.len() / 2)
        };
        match self {
            Encoding::LaravelAppKey => value.strip_prefix(LARAVEL_PREFIX).and_then(base64_length),
            Encoding::Hex => hex_length(value),
            Encoding::Base64 => base64_length(value),
        }
    }
}

/// `bytes`: absent or null → the default; a whole number or a string of digits in range.
fn byte_count(value: Option<&Value>) -> Result<usize, FormatError> {
    let count = match value {
        None | Some(Value::Null) => return Ok(DEFAULT_BYTES),
        Some(Value::Number(number)) => number.as_u64(),
        Some(Value::String(text)) => text.trim().parse::<u64>().ok(),
        Some(_) => None,
    };
    count
        .and_then(|count| usize::try_from(count).ok())
        .filter(|count| BYTES_RANGE.contains(count))
        .ok_or_else(|| FormatError::BadBytes {
            found: describe(value),
        })
}

/// A short description of a `bytes` value for an error (not a secret, but kept short).
fn describe(value: Option<&Value>) -> String {
    let text = value.map(Value::to_string).unwrap_or_default();
    match text.char_indices().nth(24) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LARAVEL: GenericFormat = GenericFormat::RandomBytes {
        encoding: Encoding::LaravelAppKey,
        bytes: 32,
    };

    fn hex(bytes: usize) -> GenericFormat {
        GenericFormat::RandomBytes {
            encoding: Encoding::Hex,
            bytes,
        }
    }

    fn base64_of(bytes: usize) -> GenericFormat {
        GenericFormat::RandomBytes {
            encoding: Encoding::Base64,
            bytes,
        }
    }

    fn format_of(value: Value) -> Result<GenericFormat, FormatError> {
        let Value::Object(fields) = value else {
            panic!("not an object")
        };
        GenericFormat::of(&fields)
    }

    #[test]
    fn format_and_bytes_are_read_with_their_defaults() {
        for (value, expected) in [
            (json!({}), GenericFormat::Password),
            (json!({"format": null}), GenericFormat::Password),
            (
                json!({"format": "password", "bytes": 5}),
                GenericFormat::Password,
            ),
            (json!({"format": "laravel-app-key"}), LARAVEL),
            (json!({"format": "laravel-app-key", "bytes": 64}), LARAVEL),
            (json!({"format": "hex"}), hex(32)),
            (json!({"format": "hex", "bytes": 16}), hex(16)),
            (
                json!({"format": "base64", "bytes": "1024"}),
                base64_of(1024),
            ),
            (json!({"format": "base64", "bytes": null}), base64_of(32)),
        ] {
            assert_eq!(format_of(value.clone()), Ok(expected), "{value}");
        }
    }

    #[test]
    fn bad_formats_and_byte_counts_say_what_is_allowed() {
        let range = "it must be a whole number from 16 to 1024 (default 32)";
        for (value, expected) in [
            (
                json!({"format": "uuid"}),
                "unknown format `uuid`; formats: password, laravel-app-key, hex, base64".to_owned(),
            ),
            (
                json!({"format": "Hex"}),
                "unknown format `Hex`; formats: password, laravel-app-key, hex, base64".to_owned(),
            ),
            (
                json!({"format": ["hex"]}),
                "field `format` must be a string; formats: password, laravel-app-key, hex, base64"
                    .to_owned(),
            ),
            (
                json!({"format": "hex", "bytes": 15}),
                format!("field `bytes` is 15; {range}"),
            ),
            (
                json!({"format": "base64", "bytes": 1025}),
                format!("field `bytes` is 1025; {range}"),
            ),
            (
                json!({"format": "hex", "bytes": -32}),
                format!("field `bytes` is -32; {range}"),
            ),
            (
                json!({"format": "hex", "bytes": 32.5}),
                format!("field `bytes` is 32.5; {range}"),
            ),
            (
                json!({"format": "hex", "bytes": true}),
                format!("field `bytes` is true; {range}"),
            ),
            (
                json!({"format": "base64", "bytes": "lots and lots and lots of bytes"}),
                format!("field `bytes` is \"lots and lots and lots …; {range}"),
            ),
        ] {
            assert_eq!(
                format_of(value.clone()).unwrap_err().to_string(),
                expected,
                "{value}"
            );
        }
    }

    #[test]
    fn each_format_encodes_its_bytes() {
        let random: Vec<u8> = (0u8..32).collect();
        assert_eq!(
            Encoding::LaravelAppKey.encode(&random),
            "base64:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
        );
        assert_eq!(
            Encoding::Hex.encode(&random),
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
        );
        assert_eq!(
            Encoding::Base64.encode(&random),
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
        );
        for encoding in [Encoding::LaravelAppKey, Encoding::Hex, Encoding::Base64] {
            let format = GenericFormat::RandomBytes {
                encoding,
                bytes: 32,
            };
            assert_eq!(format.check_shape(&encoding.encode(&random)), Ok(()));
        }
    }

    #[test]
    fn shape_checks_refuse_the_wrong_length_or_alphabet() {
        let key_of = |n: usize| base64::encode(vec![7u8; n]);
        assert!(
            LARAVEL
                .check_shape(&format!("base64:{}", key_of(32)))
                .is_ok()
        );
        for wrong in [
            key_of(32),
            format!("base64:{}", key_of(31)),
            format!("base64:{}", key_of(33)),
            format!("base64:{}!", key_of(32)),
            format!("base64: {}", key_of(32)),
            "base64:".to_owned(),
        ] {
            let err = LARAVEL.check_shape(&wrong).unwrap_err().to_string();
            assert_eq!(
                err,
                "field `password` is not a Laravel key (format laravel-app-key: `base64:` and 32 bytes in standard base64)"
            );
        }
        assert!(hex(16).check_shape(&"ab".repeat(16)).is_ok());
        assert!(hex(16).check_shape(&"AB".repeat(16)).is_ok());
        for wrong in [
            "ab".repeat(15),
            "ab".repeat(17),
            format!("{}a", "ab".repeat(15)),
            "zz".repeat(16),
        ] {
            assert_eq!(
                hex(16).check_shape(&wrong).unwrap_err().to_string(),
                "field `password` is not 16 bytes in hex (format hex)"
            );
        }
        assert!(base64_of(48).check_shape(&key_of(48)).is_ok());
        for wrong in [
            key_of(47),
            key_of(49),
            format!("{}\n", key_of(48)),
            String::new(),
        ] {
            assert_eq!(
                base64_of(48).check_shape(&wrong).unwrap_err().to_string(),
                "field `password` is not 48 bytes in standard base64 (format base64)"
            );
        }
        assert!(GenericFormat::Password.check_shape("x").is_ok());
        assert_eq!(
            GenericFormat::Password
                .check_shape("")
                .unwrap_err()
                .to_string(),
            "field `password` is not a non-empty string (format password)"
        );
    }

    #[test]
    fn the_pending_version_is_checked_without_quoting_it() {
        let pending = |password: &str| {
            SecretDocument::new(SecretString::from(
                json!({"engine": "generic", "format": "hex", "password": password}).to_string(),
            ))
        };
        assert_eq!(hex(16).check(&pending(&"0f".repeat(16))), Ok(()));
        let err = hex(16)
            .check(&pending("Secret-77"))
            .unwrap_err()
            .to_string();
        assert!(!err.contains("Secret-77"), "{err}");
        let missing = SecretDocument::new(SecretString::from(r#"{"engine":"generic"}"#));
        assert!(GenericFormat::Password.check(&missing).is_err());
    }
}
