//! An SQS queue subscribed to an SNS topic: how tests read what a function published.
//!
//! ```no_run
//! # async fn demo(sns: &aws_sdk_sns::Client, sqs: &aws_sdk_sqs::Client, topic: &str) {
//! let inbox = harness::sns_inbox::SnsInbox::subscribe(sns, sqs, topic, "verdicts", &[]).await;
//! for envelope in inbox.drain_json().await {
//!     println!("{}", envelope["Message"]);
//! }
//! # }
//! ```

use aws_sdk_sqs::types::{Message, QueueAttributeName};
use serde_json::Value;

/// The queue and the client that reads it.
#[derive(Debug, Clone)]
pub struct SnsInbox {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SnsInbox {
    /// Creates queue `name` and subscribes it to `topic_arn` with the subscription
    /// `attributes` (`RawMessageDelivery`, `FilterPolicy`, …).
    pub async fn subscribe(
        sns: &aws_sdk_sns::Client,
        sqs: &aws_sdk_sqs::Client,
        topic_arn: &str,
        name: &str,
        attributes: &[(&str, &str)],
    ) -> SnsInbox {
        let queue_url = sqs
            .create_queue()
            .queue_name(name)
            .send()
            .await
            .expect("CreateQueue")
            .queue_url
            .expect("queue URL");
        let queue_arn = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("GetQueueAttributes")
            .attributes
            .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
            .expect("queue ARN");
        let mut subscribe = sns
            .subscribe()
            .topic_arn(topic_arn)
            .protocol("sqs")
            .endpoint(queue_arn);
        for (key, value) in attributes {
            subscribe = subscribe.attributes(*key, *value);
        }
        subscribe.send().await.expect("Subscribe");
        SnsInbox {
            sqs: sqs.clone(),
            queue_url,
        }
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// Every message waiting now, with its message attributes, deleted from the queue.
    pub async fn drain(&self) -> Vec<Message> {
        let mut messages = Vec::new();
        loop {
            let batch = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .message_attribute_names("All")
                .send()
                .await
                .expect("ReceiveMessage")
                .messages
                .unwrap_or_default();
            if batch.is_empty() {
                return messages;
            }
            for message in &batch {
                self.sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(message.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .expect("DeleteMessage");
            }
            messages.extend(batch);
        }
    }

    /// [`SnsInbox::drain`], each body parsed as JSON: the SNS envelope (`Message`,
    /// `MessageAttributes`, …), or with raw delivery the published message itself.
    pub async fn drain_json(&self) -> Vec<Value> {
        self.drain()
            .await
            .iter()
            .map(|message| {
                let body = message.body().unwrap_or_default();
                serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
            })
            .collect()
    }
}
