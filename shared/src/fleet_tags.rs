//! Which Auto Scaling groups a fleet function may touch: the suite's tags, the stack a function
//! serves (`ORCHESTRATOR_STACK`), and the classification of a group by its tags. Pure: the
//! functions' adapters hand the tags in, whatever SDK type they came from.
//!
//! Several stacks (stages) share one account and region, with the same workflow slugs; a
//! function acts only on groups tagged `orchestrator:managed=true` and
//! `orchestrator:stack=<its stack>`, and leaves every other group alone.

use std::fmt;
use std::str::FromStr;

use crate::env_config::{ConfigError, EnvVars};

/// The suite acts only on groups carrying this tag with the value `true` (exactly).
pub const MANAGED_TAG: &str = "orchestrator:managed";
/// The name of the stack that owns a group.
pub const STACK_TAG: &str = "orchestrator:stack";
/// The tag naming a group's workflow.
pub const WORKFLOW_TAG: &str = "orchestrator:workflow";
/// The variable that tells a fleet function which stack it serves.
pub const STACK_VARIABLE: &str = "ORCHESTRATOR_STACK";

/// A CloudFormation stack name: a letter, then up to 127 letters, digits and hyphens.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StackName(String);

impl StackName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StackName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for StackName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Why a value is not a stack name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a CloudFormation stack name (a letter, then up to 127 letters, digits and hyphens): {0}"
)]
pub struct InvalidStackName(&'static str);

impl FromStr for StackName {
    type Err = InvalidStackName;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let mut chars = value.chars();
        match chars.next() {
            None => return Err(InvalidStackName("it is empty")),
            Some(first) if !first.is_ascii_alphabetic() => {
                return Err(InvalidStackName("it must start with a letter"));
            }
            Some(_) => {}
        }
        if !chars.all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(InvalidStackName(
                "only letters, digits and hyphens are allowed",
            ));
        }
        if value.len() > 128 {
            return Err(InvalidStackName("it is longer than 128 characters"));
        }
        Ok(StackName(value.to_owned()))
    }
}

/// `ORCHESTRATOR_STACK`, required: the stack whose groups the function acts on.
pub fn stack_from_env(env: &EnvVars) -> Result<StackName, ConfigError> {
    env.required(STACK_VARIABLE)
}

/// Whose a group is, as far as a fleet function of one stack is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// Managed, of this stack, with a workflow (trimmed, never empty).
    Ours {
        workflow: String,
    },
    NotOurs(NotOurs),
}

/// Why a group is left alone. The first that applies, in this order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotOurs {
    /// Not tagged `orchestrator:managed=true` (the value must be exactly `true`).
    Unmanaged,
    /// Managed, but by another stack: `stack` is its `orchestrator:stack` tag, `None` when the
    /// tag is missing or empty.
    OtherStack { stack: Option<String> },
    /// Managed by this stack, but without an `orchestrator:workflow` tag: a template mistake.
    NoWorkflow,
}

impl NotOurs {
    /// A group someone should fix rather than an expected neighbour: a managed group that no
    /// stack acts on.
    pub fn is_misconfiguration(&self) -> bool {
        matches!(
            self,
            NotOurs::NoWorkflow | NotOurs::OtherStack { stack: None }
        )
    }
}

impl fmt::Display for NotOurs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotOurs::Unmanaged => write!(f, "not tagged {MANAGED_TAG}=true"),
            NotOurs::OtherStack { stack: Some(stack) } => {
                write!(f, "other stack ({STACK_TAG}={stack})")
            }
            NotOurs::OtherStack { stack: None } => {
                write!(
                    f,
                    "other stack (tagged {MANAGED_TAG}=true but no {STACK_TAG} tag)"
                )
            }
            NotOurs::NoWorkflow => {
                write!(f, "tagged {MANAGED_TAG}=true but has no {WORKFLOW_TAG} tag")
            }
        }
    }
}

/// Classifies a group by its tags for the function serving `stack`. `tag` looks a tag's value
/// up by key. The stack tag must equal `stack` exactly, as Auto Scaling's `tag:` filter
/// compares; the workflow is trimmed.
pub fn ownership<'a>(tag: impl Fn(&str) -> Option<&'a str>, stack: &str) -> Ownership {
    if tag(MANAGED_TAG) != Some("true") {
        return Ownership::NotOurs(NotOurs::Unmanaged);
    }
    match tag(STACK_TAG) {
        Some(tagged) if tagged == stack => {}
        tagged => {
            let stack = tagged.filter(|s| !s.trim().is_empty()).map(str::to_owned);
            return Ownership::NotOurs(NotOurs::OtherStack { stack });
        }
    }
    match tag(WORKFLOW_TAG).map(str::trim) {
        Some(workflow) if !workflow.is_empty() => Ownership::Ours {
            workflow: workflow.to_owned(),
        },
        _ => Ownership::NotOurs(NotOurs::NoWorkflow),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STACK: &str = "orch-a";

    fn classify(tags: &[(&str, &str)]) -> Ownership {
        ownership(
            |key| tags.iter().find(|(k, _)| *k == key).map(|(_, v)| *v),
            STACK,
        )
    }

    fn ours(workflow: &str) -> Ownership {
        Ownership::Ours {
            workflow: workflow.into(),
        }
    }

    fn other(stack: Option<&str>) -> Ownership {
        Ownership::NotOurs(NotOurs::OtherStack {
            stack: stack.map(str::to_owned),
        })
    }

    #[test]
    fn groups_are_classified_by_their_tags() {
        use NotOurs::*;
        let m = MANAGED_TAG;
        let s = STACK_TAG;
        let w = WORKFLOW_TAG;
        type Tags<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(&str, Tags, Ownership)] = &[
            (
                "ours",
                &[(m, "true"), (s, STACK), (w, "img2vid")],
                ours("img2vid"),
            ),
            (
                "workflow is trimmed",
                &[(m, "true"), (s, STACK), (w, " img2vid ")],
                ours("img2vid"),
            ),
            (
                "another stack",
                &[(m, "true"), (s, "orch-b"), (w, "img2vid")],
                other(Some("orch-b")),
            ),
            (
                "stack names are compared exactly",
                &[(m, "true"), (s, "Orch-A"), (w, "img2vid")],
                other(Some("Orch-A")),
            ),
            (
                "a padded stack tag is not ours",
                &[(m, "true"), (s, " orch-a"), (w, "img2vid")],
                other(Some(" orch-a")),
            ),
            (
                "a prefix of our name is not ours",
                &[(m, "true"), (s, "orch"), (w, "img2vid")],
                other(Some("orch")),
            ),
            ("no stack tag", &[(m, "true"), (w, "img2vid")], other(None)),
            (
                "empty stack tag",
                &[(m, "true"), (s, "  "), (w, "img2vid")],
                other(None),
            ),
            (
                "another stack without a workflow is another stack's problem",
                &[(m, "true"), (s, "orch-b")],
                other(Some("orch-b")),
            ),
            (
                "ours without a workflow",
                &[(m, "true"), (s, STACK)],
                Ownership::NotOurs(NoWorkflow),
            ),
            (
                "ours with an empty workflow",
                &[(m, "true"), (s, STACK), (w, " ")],
                Ownership::NotOurs(NoWorkflow),
            ),
            (
                "managed false",
                &[(m, "false"), (s, STACK), (w, "img2vid")],
                Ownership::NotOurs(Unmanaged),
            ),
            (
                "managed must be exactly true",
                &[(m, "TRUE"), (s, STACK), (w, "img2vid")],
                Ownership::NotOurs(Unmanaged),
            ),
            (
                "managed is not trimmed",
                &[(m, " true"), (s, STACK), (w, "img2vid")],
                Ownership::NotOurs(Unmanaged),
            ),
            (
                "unmanaged wins over another stack",
                &[(m, "yes"), (s, "orch-b"), (w, "img2vid")],
                Ownership::NotOurs(Unmanaged),
            ),
            ("no tags", &[], Ownership::NotOurs(Unmanaged)),
        ];
        for (name, tags, expected) in cases {
            assert_eq!(&classify(tags), expected, "{name}");
        }
    }

    #[test]
    fn reasons_name_the_tag_and_the_other_stack() {
        let cases = [
            (NotOurs::Unmanaged, "not tagged orchestrator:managed=true"),
            (
                NotOurs::OtherStack {
                    stack: Some("orch-b".into()),
                },
                "other stack (orchestrator:stack=orch-b)",
            ),
            (
                NotOurs::OtherStack { stack: None },
                "other stack (tagged orchestrator:managed=true but no orchestrator:stack tag)",
            ),
            (
                NotOurs::NoWorkflow,
                "tagged orchestrator:managed=true but has no orchestrator:workflow tag",
            ),
        ];
        for (reason, text) in cases {
            assert_eq!(reason.to_string(), text);
        }
        assert!(NotOurs::NoWorkflow.is_misconfiguration());
        assert!(NotOurs::OtherStack { stack: None }.is_misconfiguration());
        assert!(
            !NotOurs::OtherStack {
                stack: Some("orch-b".into())
            }
            .is_misconfiguration()
        );
        assert!(!NotOurs::Unmanaged.is_misconfiguration());
    }

    #[test]
    fn stack_names_follow_cloudformation() {
        let long = format!("a{}", "b".repeat(127));
        let too_long = format!("a{}", "b".repeat(128));
        let cases: &[(&str, Result<(), &str>)] = &[
            ("orch-a", Ok(())),
            ("A", Ok(())),
            ("orchestrator-dev-2", Ok(())),
            (&long, Ok(())),
            (&too_long, Err("longer than 128")),
            ("", Err("empty")),
            ("1stack", Err("start with a letter")),
            ("-stack", Err("start with a letter")),
            ("my stack", Err("letters, digits and hyphens")),
            ("my_stack", Err("letters, digits and hyphens")),
            ("stäck", Err("letters, digits and hyphens")),
            ("arn:aws:cloudformation", Err("letters, digits and hyphens")),
        ];
        for (value, expected) in cases {
            match (value.parse::<StackName>(), expected) {
                (Ok(name), Ok(())) => assert_eq!(name.as_str(), *value),
                (Err(e), Err(fragment)) => {
                    let text = e.to_string();
                    assert!(text.contains(fragment), "{value:?}: {text}");
                    assert!(text.contains("CloudFormation stack name"), "{text}");
                }
                (actual, _) => panic!("{value:?}: got {actual:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn the_stack_variable_is_required_and_validated() {
        let stack = stack_from_env(&EnvVars::from_pairs([(STACK_VARIABLE, " orch-a ")])).unwrap();
        assert_eq!(stack.as_str(), "orch-a");

        for env in [
            EnvVars::from_pairs([("OTHER", "x")]),
            EnvVars::from_pairs([(STACK_VARIABLE, "")]),
        ] {
            assert_eq!(
                stack_from_env(&env).unwrap_err().to_string(),
                "environment variable ORCHESTRATOR_STACK is required but not set"
            );
        }

        let err = stack_from_env(&EnvVars::from_pairs([(STACK_VARIABLE, "dev stack")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ORCHESTRATOR_STACK"), "{err}");
        assert!(err.contains("`dev stack`"), "{err}");
        assert!(err.contains("CloudFormation stack name"), "{err}");
    }
}
