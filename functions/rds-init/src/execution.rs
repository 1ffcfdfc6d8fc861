//! Carries out a plan: each action's SQL through the [`StatementRunner`], then the marks
//! that follow from it ([`ownership::mark_statements`]). A `CREATE` refused because the
//! database or user already exists (someone made it after planning) is not an error: it is
//! adopted, left unmarked, and reported.

use crate::TenantDatabaseError;
use crate::identifier::Identifier;
use crate::ownership::{self, Creator};
use crate::plan::{Action, Plan};
use crate::server::{ServerError, StatementRunner};
use crate::statements;
use secrecy::SecretString;
use shared::database::{Engine, server_error_code};
use std::collections::BTreeMap;

/// What a run found already there when it went to create it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FoundExisting {
    pub databases: Vec<Identifier>,
    pub users: Vec<Identifier>,
}

impl FoundExisting {
    /// For the log and the `Reason`, one note each.
    pub fn notes(&self) -> Vec<String> {
        let note = |kind: &str, name: &Identifier| {
            format!(
                "{kind} `{name}` already existed when rds-init went to create it (made by \
                 someone else after planning): used as it is, not marked; RemoveOnDelete will \
                 keep it"
            )
        };
        let databases = self.databases.iter().map(|db| note("database", db));
        databases
            .chain(self.users.iter().map(|user| note("user", user)))
            .collect()
    }
}

/// Runs `plan`'s actions in order, marking what this run created as `creator`'s.
pub async fn carry_out(
    engine: Engine,
    creator: &Creator,
    plan: &Plan,
    passwords: &BTreeMap<Identifier, SecretString>,
    runner: &mut StatementRunner<'_>,
) -> Result<FoundExisting, TenantDatabaseError> {
    for note in &plan.notes {
        tracing::info!(note = %note, "left alone");
    }
    let mut found = FoundExisting::default();
    for action in &plan.actions {
        let statements = statements::render(engine, action, passwords)?;
        if let Action::DropDatabase(database) = action {
            runner.release(database.as_str()).await;
        }
        tracing::info!(action = %action, statements = statements.len(), "applying");
        match runner.run(&action.to_string(), statements).await {
            Ok(()) => {}
            Err(ServerError::Statement { source, .. })
                if ownership::already_exists(action, server_error_code(&source).as_deref()) =>
            {
                match action {
                    Action::CreateDatabase(db) => found.databases.push(db.clone()),
                    Action::CreateUser(user) => found.users.push(user.clone()),
                    // `already_exists` holds for these two CREATEs only.
                    _ => {}
                }
                continue;
            }
            Err(error) => return Err(error.into()),
        }
        let marks = ownership::mark_statements(engine, action, creator);
        if !marks.is_empty() {
            let described = format!("update rds-init's marks after \"{action}\"");
            runner.run(&described, marks).await?;
        }
    }
    for note in found.notes() {
        tracing::info!(note = %note, "left alone");
    }
    Ok(found)
}
