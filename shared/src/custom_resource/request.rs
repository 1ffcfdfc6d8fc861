//! The request CloudFormation sends, split into what the handler sees ([`Request`]) and what
//! only the responder needs (the pre-signed response URL).

use super::response::ResponseIds;
use aws_lambda_events::event::cloudformation::CloudFormationCustomResourceRequest as CfnRequest;
use serde::Serialize;
use serde_json::Value;
use std::time::Duration;
use tokio::time::Instant;

/// Properties CloudFormation itself adds; handlers never see them, so their property types can
/// use `#[serde(deny_unknown_fields)]` and catch typos in templates.
const PROTOCOL_PROPERTIES: [&str; 2] = ["ServiceToken", "ServiceTimeout"];

/// The suite's ordering properties (`WaitsFor`, `WaitsFor<slug>`, ...): a template puts there
/// Refs to what the resource must come after when `DependsOn` cannot name it (resources that
/// Fn::ForEach makes per workflow). Handlers never see them either.
const ORDERING_PREFIX: &str = "WaitsFor";

/// Which lifecycle step CloudFormation asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RequestType {
    Create,
    Update,
    Delete,
}

/// A custom-resource request as a handler sees it.
#[derive(Debug, Clone)]
pub struct Request {
    pub request_type: RequestType,
    pub request_id: String,
    pub stack_id: String,
    pub logical_resource_id: String,
    pub resource_type: String,
    /// Set on Update and Delete; on Create the handler (or the responder) chooses it.
    pub physical_resource_id: Option<String>,
    pub(crate) answer_by: Instant,
}

impl Request {
    /// When the responder stops waiting for the handler and answers FAILED. Handlers that
    /// retry or poll (connecting to a new database, baking a deploy) plan to finish before it.
    pub fn answer_by(&self) -> Instant {
        self.answer_by
    }

    /// Time left until [`Request::answer_by`].
    pub fn time_left(&self) -> Duration {
        self.answer_by.saturating_duration_since(Instant::now())
    }

    pub(crate) fn ids(&self) -> ResponseIds {
        ResponseIds {
            stack_id: self.stack_id.clone(),
            request_id: self.request_id.clone(),
            logical_resource_id: self.logical_resource_id.clone(),
        }
    }
}

/// A parsed request with the parts only the responder uses.
#[derive(Debug)]
pub(crate) struct Envelope {
    pub request: Request,
    pub response_url: String,
    pub properties: Value,
    pub old_properties: Option<Value>,
}

/// A payload that is not a valid custom-resource request.
#[derive(Debug)]
pub(crate) enum InvalidRequest {
    /// It has a response URL, so CloudFormation can still be told why (answered FAILED).
    Answerable {
        response_url: String,
        ids: ResponseIds,
        physical_resource_id: Option<String>,
        reason: String,
    },
    /// Nobody to answer: not a CloudFormation request at all.
    Unanswerable(String),
}

impl Envelope {
    pub(crate) fn parse(payload: Value, answer_by: Instant) -> Result<Self, Box<InvalidRequest>> {
        let parsed = serde_json::from_value::<CfnRequest<Value, Value>>(payload.clone());
        let (request_type, common, physical_resource_id, properties, old_properties) = match parsed
        {
            Ok(CfnRequest::Create(r)) => (
                RequestType::Create,
                (
                    r.request_id,
                    r.response_url,
                    r.stack_id,
                    r.resource_type,
                    r.logical_resource_id,
                ),
                None,
                r.resource_properties,
                None,
            ),
            Ok(CfnRequest::Update(r)) => (
                RequestType::Update,
                (
                    r.request_id,
                    r.response_url,
                    r.stack_id,
                    r.resource_type,
                    r.logical_resource_id,
                ),
                Some(r.physical_resource_id),
                r.resource_properties,
                Some(r.old_resource_properties),
            ),
            Ok(CfnRequest::Delete(r)) => (
                RequestType::Delete,
                (
                    r.request_id,
                    r.response_url,
                    r.stack_id,
                    r.resource_type,
                    r.logical_resource_id,
                ),
                Some(r.physical_resource_id),
                r.resource_properties,
                None,
            ),
            Ok(_) => {
                return Err(Box::new(salvage(
                    &payload,
                    "unsupported RequestType".to_owned(),
                )));
            }
            Err(e) => return Err(Box::new(salvage(&payload, e.to_string()))),
        };
        let (request_id, response_url, stack_id, resource_type, logical_resource_id) = common;
        Ok(Envelope {
            request: Request {
                request_type,
                request_id,
                stack_id,
                logical_resource_id,
                resource_type,
                physical_resource_id,
                answer_by,
            },
            response_url,
            properties: without_protocol_properties(properties),
            old_properties: old_properties.map(without_protocol_properties),
        })
    }
}

fn without_protocol_properties(mut properties: Value) -> Value {
    if let Value::Object(map) = &mut properties {
        map.retain(|key, _| {
            !PROTOCOL_PROPERTIES.contains(&key.as_str()) && !key.starts_with(ORDERING_PREFIX)
        });
    }
    properties
}

/// Keeps what is needed to answer FAILED from a payload that did not parse as a request.
fn salvage(payload: &Value, error: String) -> InvalidRequest {
    let field = |name: &str| payload.get(name).and_then(Value::as_str).map(str::to_owned);
    let Some(response_url) = field("ResponseURL") else {
        return InvalidRequest::Unanswerable(format!(
            "not a CloudFormation custom-resource request (no ResponseURL): {error}"
        ));
    };
    InvalidRequest::Answerable {
        response_url,
        ids: ResponseIds {
            stack_id: field("StackId").unwrap_or_default(),
            request_id: field("RequestId").unwrap_or_default(),
            logical_resource_id: field("LogicalResourceId").unwrap_or_default(),
        },
        physical_resource_id: field("PhysicalResourceId"),
        reason: format!("malformed custom-resource request: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn handlers_never_see_the_protocol_or_ordering_properties() {
        let payload = json!({
            "RequestType": "Update",
            "RequestId": "r-1",
            "ResponseURL": "https://example.com/response",
            "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/s/guid",
            "ResourceType": "Custom::DeployGate",
            "LogicalResourceId": "DeployGate",
            "PhysicalResourceId": "gate-1",
            "ResourceProperties": {
                "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:f",
                "ServiceTimeout": "960",
                "WaitsForimg2vid": ["orch-img2vid-idle", "arn:aws:autoscaling:policy"],
                "AlarmNames": ["a"]
            },
            "OldResourceProperties": {"ServiceToken": "t", "WaitsForvid2vid": [], "BakeSeconds": "60"}
        });
        let envelope = Envelope::parse(payload, Instant::now()).expect("a valid request");
        assert_eq!(envelope.properties, json!({"AlarmNames": ["a"]}));
        assert_eq!(envelope.old_properties, Some(json!({"BakeSeconds": "60"})));
    }
}
