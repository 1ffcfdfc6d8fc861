//! The `Subject` of an SNS message, built so that `Publish` never rejects it.
//!
//! SNS takes a subject of "less than 100 characters" (so at most 99; moto accepts 100) of printable ASCII, without line breaks or
//! control characters, beginning with a letter, digit or punctuation mark; anything else fails
//! the whole `Publish` (`InvalidParameter`). The suite publishes its notices after the change
//! they announce was made, so a rejected subject loses the notice. Subjects name groups
//! (up to 255 characters), workflows and releases, so every function builds its subject
//! through [`SnsSubject::new`], which always returns a valid one.

use std::fmt;

/// The most characters SNS accepts in a subject.
pub const MAX_SUBJECT_CHARS: usize = 99;
/// Ends a subject that was cut to fit.
pub const TRUNCATION_MARKER: &str = "...";
/// Stands in for each character SNS would refuse (anything but printable ASCII).
pub const REPLACEMENT_CHARACTER: char = '?';
/// The subject of a text that has nothing printable in it.
pub const EMPTY_SUBJECT: &str = "(no subject)";

/// A subject SNS accepts: 1 to 99 characters of printable ASCII that neither begin nor end
/// with a space.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SnsSubject(String);

impl SnsSubject {
    /// The subject for `text`: line breaks, tabs, other control characters and runs of
    /// whitespace become one space, leading and trailing whitespace goes, every other
    /// character outside printable ASCII becomes `?`, and a result longer than 99
    /// characters is cut and ends with `...`.
    pub fn new(text: &str) -> SnsSubject {
        let mut subject = String::with_capacity(text.len().min(MAX_SUBJECT_CHARS + 1));
        let mut space_pending = false;
        for c in text.chars() {
            if c.is_whitespace() || c.is_control() {
                space_pending = true;
                continue;
            }
            if space_pending && !subject.is_empty() {
                subject.push(' ');
            }
            space_pending = false;
            subject.push(if c.is_ascii_graphic() {
                c
            } else {
                REPLACEMENT_CHARACTER
            });
            // One character past the limit is enough to know the subject must be cut.
            if subject.len() > MAX_SUBJECT_CHARS {
                break;
            }
        }
        // Only printable ASCII is left, so a byte index is a character boundary.
        if subject.len() > MAX_SUBJECT_CHARS {
            subject.truncate(MAX_SUBJECT_CHARS - TRUNCATION_MARKER.len());
            subject.truncate(subject.trim_end().len());
            subject.push_str(TRUNCATION_MARKER);
        }
        if subject.is_empty() {
            subject.push_str(EMPTY_SUBJECT);
        }
        SnsSubject(subject)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SnsSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<SnsSubject> for String {
    fn from(subject: SnsSubject) -> String {
        subject.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What SNS checks (Publish API reference: less than 100 characters): 1 to 99 characters, printable ASCII only,
    /// beginning with a letter, digit or punctuation mark.
    fn assert_valid(subject: &SnsSubject) {
        let text = subject.as_str();
        assert!(
            (1..=MAX_SUBJECT_CHARS).contains(&text.chars().count()),
            "{} characters: {text:?}",
            text.chars().count()
        );
        assert!(
            text.chars().all(|c| c == ' ' || c.is_ascii_graphic()),
            "{text:?}"
        );
        assert!(text.starts_with(|c: char| c.is_ascii_graphic()), "{text:?}");
        assert_eq!(text, text.trim(), "no surrounding whitespace");
    }

    #[test]
    fn a_short_printable_subject_is_kept_as_it_is() {
        let subject = SnsSubject::new("scale-to-zero: 2 -> 0 desired, img2vid idle (gpu-img2vid)");
        assert_valid(&subject);
        assert_eq!(
            subject.as_str(),
            "scale-to-zero: 2 -> 0 desired, img2vid idle (gpu-img2vid)"
        );
    }

    #[test]
    fn a_255_character_group_name_is_cut_to_99_characters_with_a_marker() {
        let group = format!("orchestrator-{}", "g".repeat(255 - 13));
        assert_eq!(group.len(), 255);
        let subject = SnsSubject::new(&format!("scale-to-zero: 2 -> 0 desired ({group})"));
        assert_valid(&subject);
        let text = subject.as_str();
        assert_eq!(text.len(), MAX_SUBJECT_CHARS);
        assert!(text.ends_with("ggg..."), "{text}");
        assert!(text.starts_with("scale-to-zero: 2 -> 0 desired (orchestrator-ggg"));
    }

    #[test]
    fn exactly_99_characters_are_not_cut_and_100_are() {
        let hundred = "a".repeat(99);
        assert_eq!(SnsSubject::new(&hundred).as_str(), hundred);
        let cut = SnsSubject::new(&"a".repeat(101));
        assert_eq!(cut.as_str(), format!("{}...", "a".repeat(96)));
        assert_valid(&cut);
    }

    #[test]
    fn a_cut_never_leaves_a_space_before_the_marker() {
        let text = format!("{} {}", "a".repeat(96), "b".repeat(20));
        let subject = SnsSubject::new(&text);
        assert_valid(&subject);
        assert_eq!(subject.as_str(), format!("{}...", "a".repeat(96)));
    }

    #[test]
    fn non_ascii_characters_are_replaced_one_for_one() {
        let subject = SnsSubject::new("deploy-gate fail: vidéo-β 🚀 release «2»");
        assert_valid(&subject);
        assert_eq!(subject.as_str(), "deploy-gate fail: vid?o-? ? release ?2?");
    }

    #[test]
    fn long_non_ascii_input_is_cut_on_a_character_boundary() {
        // Multi-byte characters around the cut: a byte-wise cut would split one (and panic).
        for filler in ["é", "日本", "🚀", "a\u{301}"] {
            let text = format!("deploy-gate pass: {}", filler.repeat(300));
            let subject = SnsSubject::new(&text);
            assert_valid(&subject);
            assert_eq!(subject.as_str().len(), MAX_SUBJECT_CHARS, "{filler}");
            assert!(subject.as_str().ends_with("..."), "{subject}");
            assert!(
                subject.as_str().contains(REPLACEMENT_CHARACTER),
                "{subject}"
            );
        }
    }

    #[test]
    fn line_breaks_tabs_and_control_characters_become_single_spaces() {
        let subject =
            SnsSubject::new("scale-to-zero:\r\n img2vid\tidle\u{0}\u{7}\u{1b}[31m (gpu)\n");
        assert_valid(&subject);
        assert_eq!(subject.as_str(), "scale-to-zero: img2vid idle [31m (gpu)");
        // DEL and the C1 controls are control characters too.
        let subject = SnsSubject::new("a\u{7f}b\u{85}c\u{9b}d");
        assert_valid(&subject);
        assert_eq!(subject.as_str(), "a b c d");
    }

    #[test]
    fn a_subject_never_begins_with_whitespace() {
        let subject = SnsSubject::new(" \t\n\u{a0}\u{3000} deploy-gate pass  ");
        assert_valid(&subject);
        assert_eq!(subject.as_str(), "deploy-gate pass");
    }

    #[test]
    fn nothing_printable_still_gives_a_valid_subject() {
        for text in ["", "   ", "\n\r\t", "\u{0}\u{1}"] {
            let subject = SnsSubject::new(text);
            assert_valid(&subject);
            assert_eq!(subject.as_str(), EMPTY_SUBJECT, "{text:?}");
        }
    }

    #[test]
    fn the_subject_converts_into_the_string_the_sdk_takes() {
        let subject = SnsSubject::new("deploy-gate pass: r42");
        assert_eq!(subject.to_string(), "deploy-gate pass: r42");
        assert_eq!(String::from(subject), "deploy-gate pass: r42");
    }
}
