//! `SpotInterruptions` as a CloudWatch Embedded Metric Format (EMF) document: one JSON line
//! on stdout that CloudWatch Logs turns into the metric.
//!
//! EMF rather than `PutMetricData` (DESIGN.md allows it for operational counters): the count
//! is written in the same invocation right after the detach and cannot fail or be throttled,
//! so a storm of warnings costs no CloudWatch calls and no count is lost to an API error
//! after the instance is already detached (a retried event finds nothing left to count).

use serde_json::json;

use crate::plan::InterruptionCount;

pub const INTERRUPTIONS_METRIC: &str = "SpotInterruptions";
pub const WORKFLOW_DIMENSION: &str = "Workflow";
pub const INSTANCE_TYPE_DIMENSION: &str = "InstanceType";
pub const AVAILABILITY_ZONE_DIMENSION: &str = "AvailabilityZone";

/// The EMF line counting one interruption at `timestamp_millis` (Unix epoch milliseconds).
pub fn interruption_document(
    namespace: &str,
    count: &InterruptionCount,
    timestamp_millis: i64,
) -> String {
    json!({
        "_aws": {
            "Timestamp": timestamp_millis,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [[WORKFLOW_DIMENSION, INSTANCE_TYPE_DIMENSION, AVAILABILITY_ZONE_DIMENSION]],
                "Metrics": [{"Name": INTERRUPTIONS_METRIC, "Unit": "Count"}],
            }],
        },
        WORKFLOW_DIMENSION: count.workflow,
        INSTANCE_TYPE_DIMENSION: count.instance_type,
        AVAILABILITY_ZONE_DIMENSION: count.availability_zone,
        INTERRUPTIONS_METRIC: 1,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn the_document_follows_the_embedded_metric_format() {
        let count = InterruptionCount {
            workflow: "img2vid".into(),
            instance_type: "g5.xlarge".into(),
            availability_zone: "us-east-1a".into(),
        };
        let line = interruption_document("Orchestrator", &count, 1_795_348_994_000);
        assert!(!line.contains('\n'), "one line: {line}");
        let document: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            document,
            json!({
                "_aws": {
                    "Timestamp": 1_795_348_994_000_i64,
                    "CloudWatchMetrics": [{
                        "Namespace": "Orchestrator",
                        "Dimensions": [["Workflow", "InstanceType", "AvailabilityZone"]],
                        "Metrics": [{"Name": "SpotInterruptions", "Unit": "Count"}],
                    }],
                },
                "Workflow": "img2vid",
                "InstanceType": "g5.xlarge",
                "AvailabilityZone": "us-east-1a",
                "SpotInterruptions": 1,
            })
        );
    }
}
