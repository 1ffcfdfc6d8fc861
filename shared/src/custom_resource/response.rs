//! What a handler returns, and the response body CloudFormation accepts (at most 4096 bytes).

use aws_lambda_events::event::cloudformation::{
    CloudFormationCustomResourceResponse, CloudFormationCustomResourceResponseStatus,
};
use std::collections::BTreeMap;

/// CloudFormation rejects larger response bodies.
pub const MAX_RESPONSE_BYTES: usize = 4096;
/// CloudFormation's limit for a physical resource id.
pub const MAX_PHYSICAL_ID_BYTES: usize = 1024;
const TRUNCATION_MARK: &str = " … [truncated, full text in the function log]";

/// A handler's successful result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub(crate) physical_resource_id: Option<String>,
    pub(crate) data: BTreeMap<String, String>,
    pub(crate) no_echo: bool,
    pub(crate) reason: Option<String>,
}

impl Outcome {
    pub fn new() -> Self {
        Self::default()
    }

    /// Names the resource. Without one, a Create gets `<LogicalResourceId>-<RequestId>` and an
    /// Update keeps the current id. Returning a different id on Update tells CloudFormation
    /// the resource was replaced, and it will send a Delete for the old id.
    pub fn physical_resource_id(mut self, id: impl Into<String>) -> Self {
        self.physical_resource_id = Some(id.into());
        self
    }

    /// A value readable with `Fn::GetAtt`.
    pub fn data(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.data.insert(key.into(), value.into());
        self
    }

    /// A note for the stack events (default: `Create succeeded` and so on).
    pub fn reason(mut self, text: impl Into<String>) -> Self {
        self.reason = Some(text.into());
        self
    }

    /// Asks CloudFormation to mask `Data` in its console and API output.
    pub fn no_echo(mut self) -> Self {
        self.no_echo = true;
        self
    }
}

/// Identifies the request a response answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ResponseIds {
    pub stack_id: String,
    pub request_id: String,
    pub logical_resource_id: String,
}

/// SUCCESS or FAILED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Success,
    Failed,
}

/// The answer before encoding.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub status: Status,
    pub reason: String,
    pub physical_resource_id: String,
    pub data: BTreeMap<String, String>,
    pub no_echo: bool,
}

/// The encoded body and what had to change to fit it.
#[derive(Debug)]
pub(crate) struct EncodedResponse {
    pub body: String,
    pub status: Status,
    pub reason: String,
    pub reason_truncated: bool,
}

/// Encodes `answer` within [`MAX_RESPONSE_BYTES`]: `Reason` is truncated to fit; `Data` is
/// never cut silently: when it alone is too large the answer becomes FAILED and says why.
pub(crate) fn encode(mut answer: Answer, ids: &ResponseIds) -> EncodedResponse {
    let without_reason = to_json(&answer, ids, "").len();
    if without_reason > MAX_RESPONSE_BYTES {
        let data_bytes: usize = answer.data.iter().map(|(k, v)| k.len() + v.len()).sum();
        let keys: Vec<&str> = answer.data.keys().map(String::as_str).collect();
        answer.reason = format!(
            "the response Data ({data_bytes} bytes in keys {}) does not fit CloudFormation's \
             {MAX_RESPONSE_BYTES}-byte response limit, so none of it was returned",
            keys.join(", ")
        );
        answer.status = Status::Failed;
        answer.data.clear();
    }
    let budget = MAX_RESPONSE_BYTES.saturating_sub(to_json(&answer, ids, "").len());
    let (reason, reason_truncated) = truncate_escaped(&answer.reason, budget);
    EncodedResponse {
        body: to_json(&answer, ids, &reason),
        status: answer.status,
        reason,
        reason_truncated,
    }
}

fn to_json(answer: &Answer, ids: &ResponseIds, reason: &str) -> String {
    let mut response = CloudFormationCustomResourceResponse::default();
    response.status = match answer.status {
        Status::Success => CloudFormationCustomResourceResponseStatus::Success,
        Status::Failed => CloudFormationCustomResourceResponseStatus::Failed,
    };
    response.reason = Some(reason.to_owned());
    response.physical_resource_id = answer.physical_resource_id.clone();
    response.stack_id = ids.stack_id.clone();
    response.request_id = ids.request_id.clone();
    response.logical_resource_id = ids.logical_resource_id.clone();
    response.no_echo = answer.no_echo;
    response.data = answer
        .data
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    serde_json::to_string(&response).expect("a response of strings always serializes")
}

/// Length of `text` once escaped inside a JSON string.
fn escaped_len(text: &str) -> usize {
    serde_json::to_string(text).map_or(text.len(), |quoted| quoted.len() - 2)
}

/// The longest prefix of `text` (on a char boundary, plus a mark) whose escaped form fits `budget`.
fn truncate_escaped(text: &str, budget: usize) -> (String, bool) {
    if escaped_len(text) <= budget {
        return (text.to_owned(), false);
    }
    let mark = if escaped_len(TRUNCATION_MARK) <= budget {
        TRUNCATION_MARK
    } else {
        ""
    };
    let boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    let fits = |end: usize| escaped_len(&text[..end]) + escaped_len(mark) <= budget;
    // Escaped length grows with the prefix, so the longest fitting prefix can be bisected.
    // `text` is non-empty here (an empty one always fits), and the empty prefix always fits.
    let (mut lo, mut hi) = (0, boundaries.len() - 1);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if fits(boundaries[mid]) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let end = boundaries[lo];
    (format!("{}{mark}", &text[..end]), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> ResponseIds {
        ResponseIds {
            stack_id: "arn:aws:cloudformation:us-east-1:123456789012:stack/s/1".into(),
            request_id: "req-1".into(),
            logical_resource_id: "TenantDatabases".into(),
        }
    }

    fn answer(reason: &str, data: &[(&str, &str)]) -> Answer {
        Answer {
            status: Status::Success,
            reason: reason.into(),
            physical_resource_id: "pid".into(),
            data: data
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            no_echo: false,
        }
    }

    #[test]
    fn small_answers_are_unchanged() {
        let encoded = encode(answer("ok", &[("Port", "3306")]), &ids());
        let body: serde_json::Value = serde_json::from_str(&encoded.body).unwrap();
        assert_eq!(body["Status"], "SUCCESS");
        assert_eq!(body["Reason"], "ok");
        assert_eq!(body["Data"]["Port"], "3306");
        assert!(!encoded.reason_truncated);
    }

    #[test]
    fn long_reasons_with_multibyte_and_escaped_chars_are_cut_to_exactly_fit() {
        for unit in ["é", "\"", "\n", "a", "€\\"] {
            let reason = unit.repeat(9000);
            let encoded = encode(answer(&reason, &[("K", "v")]), &ids());
            assert!(
                encoded.body.len() <= MAX_RESPONSE_BYTES,
                "{unit}: {}",
                encoded.body.len()
            );
            assert!(
                encoded.body.len() > MAX_RESPONSE_BYTES - 8,
                "{unit}: wasteful cut"
            );
            assert!(encoded.reason_truncated);
            assert!(encoded.reason.ends_with(TRUNCATION_MARK));
            let body: serde_json::Value = serde_json::from_str(&encoded.body).unwrap();
            assert_eq!(body["Data"]["K"], "v");
        }
    }

    #[test]
    fn oversized_data_fails_and_says_so_instead_of_being_cut() {
        let big = "x".repeat(5000);
        let encoded = encode(answer("ok", &[("Blob", &big), ("Port", "1")]), &ids());
        assert_eq!(encoded.status, Status::Failed);
        assert!(encoded.body.len() <= MAX_RESPONSE_BYTES);
        let body: serde_json::Value = serde_json::from_str(&encoded.body).unwrap();
        assert_eq!(body["Status"], "FAILED");
        assert_eq!(body["Data"], serde_json::json!({}));
        let reason = body["Reason"].as_str().unwrap();
        assert!(
            reason.contains("Blob, Port") && reason.contains("4096"),
            "{reason}"
        );
    }
}
