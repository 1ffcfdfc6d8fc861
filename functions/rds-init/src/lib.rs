//! rds-init: tenant databases, users, grants and extensions as the CloudFormation custom
//! resource `Custom::TenantDatabases`. This version answers through the shared responder but
//! does not provision yet: Create and Update fail with a clear reason, Delete removes nothing.

use lambda_runtime::LambdaEvent;
use serde_json::{Map, Value};
use shared::{
    BoxError,
    custom_resource::{Answered, CustomResource, Outcome, Request, Responder, ResponderError},
};

const NOT_YET: &str = "tenant database provisioning is not implemented in this version";

/// `Custom::TenantDatabases`.
pub struct TenantDatabases;

impl CustomResource for TenantDatabases {
    type Properties = Map<String, Value>;

    async fn create(&self, _: &Request, _: Self::Properties) -> Result<Outcome, BoxError> {
        Err(NOT_YET.into())
    }

    async fn update(
        &self,
        _: &Request,
        _: Self::Properties,
        _: Option<Self::Properties>,
    ) -> Result<Outcome, BoxError> {
        Err(NOT_YET.into())
    }

    async fn delete(&self, _: &Request, _: Self::Properties) -> Result<Outcome, BoxError> {
        Ok(Outcome::new().reason("nothing removed: this version creates nothing"))
    }
}

/// The Lambda entry point.
pub async fn handle(
    event: LambdaEvent<Value>,
    responder: &Responder,
) -> Result<Answered, ResponderError> {
    responder.respond(&TenantDatabases, event).await
}
