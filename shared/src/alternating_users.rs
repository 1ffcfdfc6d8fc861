//! The naming rule of alternating-users rotation (a database secret with `masterarn`): the
//! two users are `<base>` and `<base>_clone`, and `AWSCURRENT` names whichever is current.
//! One rule for rds-init (which keeps both users' privileges in step) and secret-rotation
//! (which switches between them), as in AWS's MultiUser templates: the other user of `name`
//! is `name` without a trailing `_clone`, or else `name` with `_clone` appended.
//!
//! A name that ends in `_clone` twice (`app_clone_clone`) has no stable pair: its other user
//! `app_clone` alternates with `app`, not back. [`AlternatingPair::of`] refuses it.

/// Suffix of the second user of a pair.
pub const CLONE_SUFFIX: &str = "_clone";

/// The other user of an alternating pair: `app` ↔ `app_clone`.
pub fn alternate_username(username: &str) -> String {
    match clone_base(username) {
        Some(base) => base.to_owned(),
        None => format!("{username}{CLONE_SUFFIX}"),
    }
}

/// `username` without its trailing `_clone`, when it has one and something is left.
fn clone_base(username: &str) -> Option<&str> {
    username
        .strip_suffix(CLONE_SUFFIX)
        .filter(|base| !base.is_empty())
}

/// The two users of an alternating pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlternatingPair {
    /// The user without the suffix (`app`).
    pub base: String,
    /// `<base>_clone`.
    pub clone: String,
}

/// A user name whose pair would not alternate back to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "user name `{username}` has no stable alternating pair: its other user `{other}` \
     alternates with `{beyond}`, not back (a name may end in `_clone` once)"
)]
pub struct NoStablePair {
    pub username: String,
    pub other: String,
    pub beyond: String,
}

impl AlternatingPair {
    /// The pair `username` (either of its users) belongs to.
    pub fn of(username: &str) -> Result<Self, NoStablePair> {
        let base = clone_base(username).unwrap_or(username);
        if clone_base(base).is_some() {
            let other = alternate_username(username);
            return Err(NoStablePair {
                username: username.to_owned(),
                beyond: alternate_username(&other),
                other,
            });
        }
        Ok(Self {
            base: base.to_owned(),
            clone: format!("{base}{CLONE_SUFFIX}"),
        })
    }

    /// Whether `username` is the pair's clone (not its base).
    pub fn is_clone(&self, username: &str) -> bool {
        username == self.clone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_other_user_strips_or_appends_the_suffix() {
        for (name, other) in [
            ("app", "app_clone"),
            ("app_clone", "app"),
            ("_clone", "_clone_clone"),
            ("_clone_clone", "_clone"),
            ("clone", "clone_clone"),
            ("app_clonex", "app_clonex_clone"),
        ] {
            assert_eq!(alternate_username(name), other, "{name}");
        }
    }

    #[test]
    fn both_users_of_a_pair_name_the_same_pair_and_alternate_into_each_other() {
        for name in ["app", "app_clone", "_clone", "_clone_clone", "a"] {
            let pair = AlternatingPair::of(name).unwrap();
            assert_eq!(AlternatingPair::of(&pair.base).unwrap(), pair, "{name}");
            assert_eq!(AlternatingPair::of(&pair.clone).unwrap(), pair, "{name}");
            assert_eq!(alternate_username(&pair.base), pair.clone);
            assert_eq!(alternate_username(&pair.clone), pair.base);
            assert!(pair.is_clone(&pair.clone) && !pair.is_clone(&pair.base));
        }
        let pair = AlternatingPair::of("app_clone").unwrap();
        assert_eq!(
            (pair.base.as_str(), pair.clone.as_str()),
            ("app", "app_clone")
        );
    }

    #[test]
    fn a_name_ending_in_the_suffix_twice_has_no_stable_pair() {
        let err = AlternatingPair::of("app_clone_clone").unwrap_err();
        assert_eq!(
            (err.other.as_str(), err.beyond.as_str()),
            ("app_clone", "app")
        );
        assert!(
            err.to_string()
                .starts_with("user name `app_clone_clone` has no stable alternating pair"),
            "{err}"
        );
    }
}
