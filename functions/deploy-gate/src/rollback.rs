//! Whether a `Custom::DeployGate` Update is a deploy to gate or CloudFormation rolling one back.
//!
//! When the gate fails an update, CloudFormation rolls back and sends the gate an Update with
//! the old properties. Gating that one too (the alarm that failed the deploy usually still
//! fires) leaves the stack in `UPDATE_ROLLBACK_FAILED`, so a rollback is let through. Pure: the
//! stack status is read by the AWS adapter.

/// The status of the request's stack, as `DescribeStacks` gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StackStatus {
    /// CloudFormation's status name, e.g. `UPDATE_IN_PROGRESS`.
    Known(String),
    /// Why it could not be read: an API error, a timeout, or no such stack.
    Unreadable(String),
}

/// The status CloudFormation is in while it undoes a failed update (also after
/// `continue-update-rollback`).
pub const ROLLING_BACK: &str = "UPDATE_ROLLBACK_IN_PROGRESS";

/// What to do with an Update request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateGating {
    /// The stack is rolling back a failed update: answer SUCCESS at once, without a bake.
    SkipRollback,
    /// Bake as usual. `status_unread` says why the status is unknown (for the logs and a
    /// FAILED reason): an unknown status never skips the gate.
    Gate { status_unread: Option<String> },
}

pub fn update_gating(status: &StackStatus) -> UpdateGating {
    match status {
        StackStatus::Known(status) if status == ROLLING_BACK => UpdateGating::SkipRollback,
        StackStatus::Known(_) => UpdateGating::Gate {
            status_unread: None,
        },
        StackStatus::Unreadable(why) => UpdateGating::Gate {
            status_unread: Some(why.clone()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(status: &str) -> StackStatus {
        StackStatus::Known(status.to_owned())
    }

    #[test]
    fn an_update_rollback_in_progress_is_skipped() {
        assert_eq!(
            update_gating(&known("UPDATE_ROLLBACK_IN_PROGRESS")),
            UpdateGating::SkipRollback
        );
    }

    #[test]
    fn a_deploy_and_every_other_status_are_gated() {
        // Rollbacks of a Create, and the cleanup after a rollback, send Deletes, never Updates.
        for status in [
            "UPDATE_IN_PROGRESS",
            "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS",
            "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS",
            "UPDATE_ROLLBACK_FAILED",
            "ROLLBACK_IN_PROGRESS",
            "CREATE_COMPLETE",
            "update_rollback_in_progress",
            "",
        ] {
            assert_eq!(
                update_gating(&known(status)),
                UpdateGating::Gate {
                    status_unread: None
                },
                "{status}"
            );
        }
    }

    #[test]
    fn an_unreadable_status_is_gated_and_says_why() {
        let why = "DescribeStacks failed: AccessDenied";
        assert_eq!(
            update_gating(&StackStatus::Unreadable(why.to_owned())),
            UpdateGating::Gate {
                status_unread: Some(why.to_owned())
            }
        );
    }
}
