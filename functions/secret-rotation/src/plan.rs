//! Pure decisions of the rotation protocol: fed facts about secret versions and login
//! attempts, they say what to do. The adapters (`secrets_store`, `database_users`) carry the
//! decisions out; nothing here talks to AWS or a database.

use std::collections::HashMap;

pub const AWSCURRENT: &str = "AWSCURRENT";
pub const AWSPENDING: &str = "AWSPENDING";
pub const AWSPREVIOUS: &str = "AWSPREVIOUS";
/// The naming rule of alternating users (`app` ↔ `app_clone`, as in AWS's MultiUser
/// templates), the one rds-init follows too.
pub use shared::alternating_users::{CLONE_SUFFIX, alternate_username};

/// What the entry guard (run before every step, as AWS's templates do) decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryDecision {
    /// The token is the pending version: run the step.
    Proceed,
    /// The token is already `AWSCURRENT`: the rotation is complete, nothing to do.
    AlreadyCurrent,
}

/// Why the entry guard refuses a step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryRefusal {
    #[error("rotation is not enabled for secret {secret_id}")]
    RotationDisabled { secret_id: String },
    #[error("token {token} is not a version of secret {secret_id}")]
    UnknownToken { secret_id: String, token: String },
    #[error(
        "version {token} of secret {secret_id} is not AWSPENDING (its stages: {stages}); another rotation has replaced it or it was never started"
    )]
    NotPending {
        secret_id: String,
        token: String,
        stages: String,
    },
}

/// The entry guard: rotation enabled, token a version of the secret, `AWSCURRENT` → nothing
/// to do, otherwise it must be `AWSPENDING`.
pub fn entry_guard(
    secret_id: &str,
    token: &str,
    rotation_enabled: bool,
    versions: &HashMap<String, Vec<String>>,
) -> Result<EntryDecision, EntryRefusal> {
    if !rotation_enabled {
        return Err(EntryRefusal::RotationDisabled {
            secret_id: secret_id.to_owned(),
        });
    }
    let Some(stages) = versions.get(token) else {
        return Err(EntryRefusal::UnknownToken {
            secret_id: secret_id.to_owned(),
            token: token.to_owned(),
        });
    };
    if stages.iter().any(|s| s == AWSCURRENT) {
        Ok(EntryDecision::AlreadyCurrent)
    } else if stages.iter().any(|s| s == AWSPENDING) {
        Ok(EntryDecision::Proceed)
    } else {
        Err(EntryRefusal::NotPending {
            secret_id: secret_id.to_owned(),
            token: token.to_owned(),
            stages: if stages.is_empty() {
                "none".to_owned()
            } else {
                stages.join(", ")
            },
        })
    }
}

/// What `finishSecret` does with the version stages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishAction {
    AlreadyCurrent,
    /// Move `AWSCURRENT` to the token, off `from` (none when no version holds it);
    /// Secrets Manager then labels `from` `AWSPREVIOUS` itself.
    MoveCurrent {
        from: Option<String>,
    },
}

pub fn finish(token: &str, versions: &HashMap<String, Vec<String>>) -> FinishAction {
    let current = versions
        .iter()
        .find(|(_, stages)| stages.iter().any(|s| s == AWSCURRENT))
        .map(|(version, _)| version.clone());
    match current {
        Some(version) if version == token => FinishAction::AlreadyCurrent,
        from => FinishAction::MoveCurrent { from },
    }
}

/// The credentials a login attempt used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialStage {
    Pending,
    Current,
    Previous,
}

impl CredentialStage {
    pub fn label(self) -> &'static str {
        match self {
            CredentialStage::Pending => AWSPENDING,
            CredentialStage::Current => AWSCURRENT,
            CredentialStage::Previous => AWSPREVIOUS,
        }
    }
}

/// How a login attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginOutcome {
    LoggedIn,
    /// The server refused the password (or user): another password may work.
    WrongPassword,
    /// There is no such version (no `AWSPREVIOUS` yet, or one for another user or host).
    NoCredentials,
    /// The server could not be reached, refused TLS, or timed out: no other password would
    /// do better, and trying them would hide the real error.
    Unreachable,
}

/// What `setSecret` does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetDecision {
    Try(CredentialStage),
    /// The pending password already logs in: an earlier run finished the step.
    AlreadySet,
    /// Single user: change the password while logged in with these credentials.
    ChangePasswordAs(CredentialStage),
    /// Alternating users: the current user logged in (the confused-deputy guard passed);
    /// provision the other user with the master secret.
    ProvisionWithMaster,
    /// The database cannot be reached with these credentials: fail with that error.
    FailUnreachable(CredentialStage),
    /// Single user: neither pending, current nor previous logs in.
    FailNoPasswordWorks,
    /// Alternating users: the current user does not log in, so the master is not used.
    FailCurrentRefused,
}

/// Single user, AWS's order: pending (already done?), then current, then previous.
pub fn single_user_next(attempts: &[(CredentialStage, LoginOutcome)]) -> SetDecision {
    use CredentialStage::*;
    let Some(&(stage, outcome)) = attempts.last() else {
        return SetDecision::Try(Pending);
    };
    match (stage, outcome) {
        (_, LoginOutcome::Unreachable) => SetDecision::FailUnreachable(stage),
        (Pending, LoginOutcome::LoggedIn) => SetDecision::AlreadySet,
        (stage, LoginOutcome::LoggedIn) => SetDecision::ChangePasswordAs(stage),
        (Pending, _) => SetDecision::Try(Current),
        (Current, _) => SetDecision::Try(Previous),
        (Previous, _) => SetDecision::FailNoPasswordWorks,
    }
}

/// Alternating users, AWS's order: pending (already done?), then current as the guard.
pub fn alternating_next(attempts: &[(CredentialStage, LoginOutcome)]) -> SetDecision {
    use CredentialStage::*;
    let Some(&(stage, outcome)) = attempts.last() else {
        return SetDecision::Try(Pending);
    };
    match (stage, outcome) {
        (_, LoginOutcome::Unreachable) => SetDecision::FailUnreachable(stage),
        (Pending, LoginOutcome::LoggedIn) => SetDecision::AlreadySet,
        (Pending, _) => SetDecision::Try(Current),
        (_, LoginOutcome::LoggedIn) => SetDecision::ProvisionWithMaster,
        (_, _) => SetDecision::FailCurrentRefused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CredentialStage::*;
    use LoginOutcome::*;

    fn versions(pairs: &[(&str, &[&str])]) -> HashMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(v, s)| (v.to_string(), s.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn the_entry_guard_follows_aws() {
        let v = versions(&[
            ("cur", &[AWSCURRENT]),
            ("pend", &[AWSPENDING]),
            ("old", &[]),
        ]);
        assert_eq!(
            entry_guard("s", "pend", true, &v),
            Ok(EntryDecision::Proceed)
        );
        assert_eq!(
            entry_guard("s", "cur", true, &v),
            Ok(EntryDecision::AlreadyCurrent)
        );
        assert!(matches!(
            entry_guard("s", "pend", false, &v),
            Err(EntryRefusal::RotationDisabled { .. })
        ));
        let err = entry_guard("s", "nope", true, &v).unwrap_err();
        assert_eq!(err.to_string(), "token nope is not a version of secret s");
        let err = entry_guard("s", "old", true, &v).unwrap_err().to_string();
        assert!(
            err.contains("is not AWSPENDING (its stages: none)"),
            "{err}"
        );
    }

    #[test]
    fn finish_moves_current_once() {
        let v = versions(&[("cur", &[AWSCURRENT]), ("pend", &[AWSPENDING])]);
        assert_eq!(
            finish("pend", &v),
            FinishAction::MoveCurrent {
                from: Some("cur".into())
            }
        );
        let v = versions(&[("cur", &[AWSPREVIOUS]), ("pend", &[AWSPENDING, AWSCURRENT])]);
        assert_eq!(finish("pend", &v), FinishAction::AlreadyCurrent);
    }

    #[test]
    fn alternate_users_swap_back_and_forth() {
        assert_eq!(alternate_username("app"), "app_clone");
        assert_eq!(alternate_username("app_clone"), "app");
        assert_eq!(alternate_username("_clone"), "_clone_clone");
    }

    #[test]
    fn single_user_tries_pending_current_previous() {
        assert_eq!(single_user_next(&[]), SetDecision::Try(Pending));
        assert_eq!(
            single_user_next(&[(Pending, LoggedIn)]),
            SetDecision::AlreadySet
        );
        assert_eq!(
            single_user_next(&[(Pending, WrongPassword)]),
            SetDecision::Try(Current)
        );
        assert_eq!(
            single_user_next(&[(Pending, WrongPassword), (Current, LoggedIn)]),
            SetDecision::ChangePasswordAs(Current)
        );
        assert_eq!(
            single_user_next(&[(Pending, WrongPassword), (Current, WrongPassword)]),
            SetDecision::Try(Previous)
        );
        assert_eq!(
            single_user_next(&[
                (Pending, WrongPassword),
                (Current, WrongPassword),
                (Previous, LoggedIn)
            ]),
            SetDecision::ChangePasswordAs(Previous)
        );
        assert_eq!(
            single_user_next(&[
                (Pending, WrongPassword),
                (Current, WrongPassword),
                (Previous, NoCredentials)
            ]),
            SetDecision::FailNoPasswordWorks
        );
    }

    #[test]
    fn an_unreachable_database_is_never_masked_by_other_passwords() {
        assert_eq!(
            single_user_next(&[(Pending, Unreachable)]),
            SetDecision::FailUnreachable(Pending)
        );
        assert_eq!(
            single_user_next(&[(Pending, WrongPassword), (Current, Unreachable)]),
            SetDecision::FailUnreachable(Current)
        );
        assert_eq!(
            alternating_next(&[(Pending, Unreachable)]),
            SetDecision::FailUnreachable(Pending)
        );
    }

    #[test]
    fn alternating_users_guard_with_the_current_login() {
        assert_eq!(alternating_next(&[]), SetDecision::Try(Pending));
        assert_eq!(
            alternating_next(&[(Pending, LoggedIn)]),
            SetDecision::AlreadySet
        );
        assert_eq!(
            alternating_next(&[(Pending, WrongPassword), (Current, LoggedIn)]),
            SetDecision::ProvisionWithMaster
        );
        assert_eq!(
            alternating_next(&[(Pending, WrongPassword), (Current, WrongPassword)]),
            SetDecision::FailCurrentRefused
        );
    }
}
