//! rds-init: tenant databases, users, grants and extensions on RDS (MariaDB/MySQL and
//! PostgreSQL) as the CloudFormation custom resource `Custom::TenantDatabases`.
//!
//! Layers: [`properties`] and [`identifier`] validate what CloudFormation sent; [`plan`]
//! decides (pure); [`statements`] renders SQL (pure); [`ownership`] marks the databases and
//! users this resource creates and reads the marks back; [`execution`] carries a plan out;
//! [`secrets`] and [`server`] are the adapters to Secrets Manager and the database.
//! [`TenantDatabases`] wires them under the shared responder, which owns the CloudFormation
//! protocol and decodes the event: rds-init has no `Trigger` of its own, its handlers get the
//! responder's [`Request`] and the typed [`properties::TenantDatabaseProperties`].

pub mod execution;
pub mod identifier;
pub mod ownership;
pub mod plan;
pub mod properties;
pub mod secrets;
pub mod server;
pub mod statements;

use crate::identifier::{Identifier, IdentifierKind};
use crate::ownership::{Creator, read_marks};
use crate::plan::{
    PreviousSpec, ServerState, adopted_databases, adopted_users, plan_apply, plan_removal,
};
use crate::properties::{
    DatabaseNames, SecretUser, SpecError, TenantDatabaseProperties, TenantDatabaseSpec,
};
use crate::secrets::{SecretError, SecretStore};
use crate::server::{
    ServerError, StatementRunner, connect_with_retry, password_logs_in, read_names, read_role_facts,
};
use lambda_runtime::LambdaEvent;
use secrecy::SecretString;
use serde_json::Value;
use shared::{
    BoxError,
    custom_resource::{Answered, CustomResource, Outcome, Request, Responder, ResponderError},
    database::{ConnectSettings, DatabaseSecret, DbConnection, sql::KnownSecrets},
    env_config::{ConfigError, EnvVars},
};
use std::collections::BTreeMap;

/// Physical ids name the endpoint: `tenant-databases@<host>:<port>`.
const PHYSICAL_ID_PREFIX: &str = "tenant-databases@";

/// Configuration read once at cold start.
#[derive(Debug, Clone)]
pub struct Config {
    pub connect: ConnectSettings,
}

impl Config {
    /// `DB_CA_BUNDLE`, `DB_CONNECT_TIMEOUT_SECONDS`, `DB_STATEMENT_TIMEOUT_SECONDS`.
    pub fn from_env(env: &EnvVars) -> Result<Self, ConfigError> {
        Ok(Self {
            connect: ConnectSettings::from_env(env)?,
        })
    }
}

/// Why a request failed; becomes the `Reason` CloudFormation shows.
#[derive(Debug, thiserror::Error)]
pub enum TenantDatabaseError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(transparent)]
    Render(#[from] statements::MissingPassword),
}

/// `Custom::TenantDatabases`.
pub struct TenantDatabases {
    secrets: SecretStore,
    config: Config,
}

/// The secrets a request needs, read and validated.
struct Inputs {
    master: DatabaseSecret,
    spec: TenantDatabaseSpec,
    passwords: BTreeMap<Identifier, SecretString>,
}

impl TenantDatabases {
    pub fn new(secrets: aws_sdk_secretsmanager::Client, config: Config) -> Self {
        Self {
            secrets: SecretStore::new(secrets),
            config,
        }
    }

    /// Validates every name, then reads the master's and the users' secrets. No SQL runs
    /// before this returns, and names are checked before any AWS call.
    /// Every password read is added to `known`, so error texts can be redacted.
    async fn inputs(
        &self,
        properties: &TenantDatabaseProperties,
        known: &mut KnownSecrets,
    ) -> Result<Inputs, TenantDatabaseError> {
        let names = DatabaseNames::validate(properties)?;
        let master = self.secrets.master(&properties.master_secret_arn).await?;
        known.add(&master.password);
        let mut secret_users = Vec::new();
        let mut passwords = BTreeMap::new();
        for user in &properties.users {
            let credentials = self.secrets.user(&user.secret_arn).await?;
            known.add(&credentials.password);
            secret_users.push(SecretUser {
                username: credentials.username.clone(),
                alternating: credentials.alternating(),
            });
            if let Ok(name) = Identifier::parse(IdentifierKind::User, &credentials.username) {
                passwords.insert(name, credentials.password);
            }
        }
        let spec = TenantDatabaseSpec::new(properties, names, &secret_users, &master.username)?;
        Ok(Inputs {
            master,
            spec,
            passwords,
        })
    }

    /// Create and Update: converge the server to the properties.
    async fn apply(
        &self,
        request: &Request,
        properties: TenantDatabaseProperties,
        previous: Option<TenantDatabaseProperties>,
        known: &mut KnownSecrets,
    ) -> Result<Outcome, TenantDatabaseError> {
        let Inputs {
            master,
            spec,
            passwords,
        } = self.inputs(&properties, known).await?;
        let previous = previous.as_ref().map(previous_spec);
        let settings = &self.config.connect;
        let mut connection = connect_with_retry(&master, settings, request.answer_by()).await?;
        let state = self
            .server_state(&mut connection, &master, &spec, &passwords, known)
            .await?;
        let mut plan = plan_apply(master.engine, &spec, previous.as_ref(), &state)?;
        let creator = creator(request);
        let mut adopted = Adopted::default();
        for (db, ownership) in adopted_databases(&spec, &state, &creator) {
            plan.notes.push(format!(
                "database `{db}` used as it is: {ownership}; RemoveOnDelete will keep it"
            ));
            adopted.databases.push(db.clone());
        }
        for (user, ownership) in adopted_users(&spec, &state, &creator) {
            plan.notes.push(format!(
                "user `{user}` used as it is: {ownership}; RemoveOnDelete will keep it"
            ));
            adopted.users.push(user.clone());
        }
        let mut runner = StatementRunner::new(&master, settings, connection);
        let result =
            execution::carry_out(master.engine, &creator, &plan, &passwords, &mut runner).await;
        runner.close().await;
        let found = result?;
        plan.notes.extend(found.notes());
        adopted.databases.extend(found.databases);
        adopted.users.extend(found.users);

        let endpoint = format!("{}:{}", master.host, master.port);
        let reason = format!(
            "{} on {} {endpoint}: {} step(s)",
            match request.request_type {
                shared::custom_resource::RequestType::Create => "created",
                _ => "updated",
            },
            master.engine,
            plan.actions.len()
        );
        Ok(Outcome::new()
            .physical_resource_id(format!("{PHYSICAL_ID_PREFIX}{endpoint}"))
            .data("Endpoint", master.host.clone())
            .data("Port", master.port.to_string())
            .data("Databases", identifier::join(&spec.databases, ","))
            .data(
                "AdoptedDatabases",
                identifier::join(&adopted.databases, ","),
            )
            .data("AdoptedUsers", identifier::join(&adopted.users, ","))
            .reason(with_notes(reason, &plan.notes)))
    }

    /// What planning an apply needs to know about the server: names, marks, roles, and which
    /// existing users' secrets log in (current password, or a rotation's pending one).
    async fn server_state(
        &self,
        connection: &mut DbConnection,
        master: &DatabaseSecret,
        spec: &TenantDatabaseSpec,
        passwords: &BTreeMap<Identifier, SecretString>,
        known: &mut KnownSecrets,
    ) -> Result<ServerState, TenantDatabaseError> {
        let settings = &self.config.connect;
        let (databases, users, available_extensions) = read_names(connection).await?;
        let marks = read_marks(connection).await?;
        let roles = read_role_facts(connection).await?;
        let mut state = ServerState {
            databases,
            users,
            available_extensions,
            database_marks: marks.databases,
            user_marks: marks.users,
            role_memberships: roles.memberships,
            session_roles: roles.session_roles,
            ..Default::default()
        };
        for user in spec
            .users
            .iter()
            .filter(|u| state.users.contains(u.username.as_str()))
        {
            let name = user.username.as_str();
            if let Some(password) = passwords.get(&user.username)
                && password_logs_in(master, settings, name, password).await
            {
                state.users_with_current_password.insert(name.to_owned());
            } else if let Some(pending) = self
                .secrets
                .pending_user_password(&user.secret_arn)
                .await
                .inspect(|pending| known.add(pending))
                && password_logs_in(master, settings, name, &pending).await
            {
                state.users_mid_rotation.insert(name.to_owned());
            }
        }
        Ok(state)
    }

    async fn remove(
        &self,
        request: &Request,
        properties: TenantDatabaseProperties,
        known: &mut KnownSecrets,
    ) -> Result<Outcome, TenantDatabaseError> {
        let Inputs {
            master,
            spec,
            passwords,
        } = self.inputs(&properties, known).await?;
        let endpoint = format!("{}:{}", master.host, master.port);
        let current = request.physical_resource_id.as_deref().unwrap_or_default();
        // After a replacement (the endpoint changed) CloudFormation deletes the old id with
        // the old properties, whose secret may now point at the new instance: never drop there.
        if current != format!("{PHYSICAL_ID_PREFIX}{endpoint}") {
            let reason = format!(
                "nothing removed: resource {current} does not name the endpoint the master \
                 secret points at now ({endpoint})"
            );
            tracing::warn!(%reason);
            return Ok(Outcome::new().reason(reason));
        }
        let settings = &self.config.connect;
        let mut connection = connect_with_retry(&master, settings, request.answer_by()).await?;
        let (databases, users, _) = read_names(&mut connection).await?;
        // Read right before the drops: only what is marked as this resource's goes.
        let marks = read_marks(&mut connection).await?;
        let state = ServerState {
            databases,
            users,
            database_marks: marks.databases,
            user_marks: marks.users,
            ..Default::default()
        };
        let creator = creator(request);
        let plan = plan_removal(&spec, &state, &creator);
        let mut runner = StatementRunner::new(&master, settings, connection);
        let result =
            execution::carry_out(master.engine, &creator, &plan, &passwords, &mut runner).await;
        runner.close().await;
        result?;
        let reason = format!("removed from {endpoint}: {} step(s)", plan.actions.len());
        Ok(Outcome::new().reason(with_notes(reason, &plan.notes)))
    }
}

/// The `Reason`: what was done, then every note of the plan.
fn with_notes(mut reason: String, notes: &[String]) -> String {
    for note in notes {
        reason.push_str("; ");
        reason.push_str(note);
    }
    reason
}

/// Listed databases and users this resource uses without having created them.
#[derive(Default)]
struct Adopted {
    databases: Vec<Identifier>,
    users: Vec<Identifier>,
}

/// What the marks of the databases and users this request creates name.
fn creator(request: &Request) -> Creator {
    Creator::new(&request.stack_id, &request.logical_resource_id)
}

/// The previous properties as far as planning needs them; names that no longer validate
/// are skipped (nothing was ever made from them).
fn previous_spec(properties: &TenantDatabaseProperties) -> PreviousSpec {
    let valid = |names: &[String]| -> Vec<Identifier> {
        names
            .iter()
            .filter_map(|n| Identifier::parse(IdentifierKind::Database, n).ok())
            .collect()
    };
    PreviousSpec {
        databases: valid(&properties.databases),
        user_databases: properties
            .users
            .iter()
            .map(|u| (u.secret_arn.clone(), valid(&u.databases)))
            .collect(),
    }
}

impl CustomResource for TenantDatabases {
    type Properties = TenantDatabaseProperties;

    async fn create(
        &self,
        request: &Request,
        properties: Self::Properties,
    ) -> Result<Outcome, BoxError> {
        // A Create is an Update from no earlier properties.
        self.update(request, properties, None).await
    }

    async fn update(
        &self,
        request: &Request,
        properties: Self::Properties,
        old: Option<Self::Properties>,
    ) -> Result<Outcome, BoxError> {
        let mut known = KnownSecrets::default();
        self.apply(request, properties, old, &mut known)
            .await
            .map_err(|error| redacted(&known, &error))
    }

    async fn delete(
        &self,
        request: &Request,
        properties: Self::Properties,
    ) -> Result<Outcome, BoxError> {
        if properties.remove_on_delete != Some(true) {
            let reason = format!(
                "kept databases {} and their users (RemoveOnDelete is not \"true\")",
                properties.databases.join(", ")
            );
            tracing::info!(%reason);
            return Ok(Outcome::new().reason(reason));
        }
        let mut known = KnownSecrets::default();
        self.remove(request, properties, &mut known)
            .await
            .map_err(|error| redacted(&known, &error))
    }
}

/// The error as the `Reason` (and the responder's log line) gets it: every password the
/// request read removed, whatever the server or a driver put into the message.
fn redacted(known: &KnownSecrets, error: &TenantDatabaseError) -> BoxError {
    known.redact_error(error).into()
}

/// The Lambda entry point.
pub async fn handle(
    event: LambdaEvent<Value>,
    resource: &TenantDatabases,
    responder: &Responder,
) -> Result<Answered, ResponderError> {
    responder.respond(resource, event).await
}
