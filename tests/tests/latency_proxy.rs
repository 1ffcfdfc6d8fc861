//! The latency proxy holds every AWS call once for its delay, on kept-alive connections too,
//! passes the calls on to moto unchanged, and counts how many were in flight at once.

use std::time::{Duration, Instant};

use harness::latency_proxy::LatencyProxy;
use harness::moto::Moto;

async fn sns_through(moto: &Moto, proxy: &LatencyProxy) -> aws_sdk_sns::Client {
    let sdk = moto.sdk_config().await;
    aws_sdk_sns::Client::from_conf(
        aws_sdk_sns::config::Builder::from(&sdk)
            .endpoint_url(proxy.url())
            .build(),
    )
}

#[tokio::test]
async fn each_call_on_a_kept_alive_connection_is_held_once() {
    let delay = Duration::from_millis(150);
    let moto = Moto::start().await;
    let proxy = LatencyProxy::start(moto.endpoint_url(), delay).await;
    let sns = sns_through(&moto, &proxy).await;

    sns.create_topic().name("held").send().await.unwrap();
    for _ in 0..3 {
        let started = Instant::now();
        let listed = sns.list_topics().send().await.unwrap();
        assert_eq!(
            listed.topics().len(),
            1,
            "moto's answer comes back unchanged"
        );
        assert!(
            started.elapsed() >= delay,
            "a call on the kept-alive connection took {:?}, less than the delay",
            started.elapsed()
        );
    }

    assert_eq!(
        proxy.connections(),
        1,
        "the SDK kept one connection for the four calls"
    );
    let answered = proxy.answered();
    let operations: Vec<&str> = answered.iter().map(|c| c.operation.as_str()).collect();
    assert_eq!(
        operations,
        ["CreateTopic", "ListTopics", "ListTopics", "ListTopics"]
    );
    for call in &answered {
        assert_eq!(call.status, 200);
        assert!(
            call.answered - call.received >= delay,
            "{call:?} was not held for {delay:?}"
        );
    }
    assert_eq!(
        moto.recorded_actions(),
        [
            "sns:CreateTopic",
            "sns:ListTopics",
            "sns:ListTopics",
            "sns:ListTopics"
        ],
        "every call reaches moto once"
    );
    assert!(
        proxy
            .first_answer("ListTopics", answered[3].answered)
            .is_some()
    );
    assert!(
        proxy
            .first_answer("Publish", answered[0].received)
            .is_none()
    );
}

#[tokio::test]
async fn calls_made_at_once_are_held_side_by_side_and_counted() {
    let delay = Duration::from_millis(300);
    let moto = Moto::start().await;
    let proxy = LatencyProxy::start(moto.endpoint_url(), delay).await;
    let sns = sns_through(&moto, &proxy).await;

    let call = || sns.list_topics().send();
    let (a, b, c, d) = tokio::join!(call(), call(), call(), call());
    for answer in [a, b, c, d] {
        answer.unwrap();
    }
    assert_eq!(proxy.max_in_flight(), 4);
    assert_eq!(proxy.answered().len(), 4);

    proxy.reset();
    sns.list_topics().send().await.unwrap();
    assert_eq!(
        proxy.max_in_flight(),
        1,
        "reset forgets the high-water mark"
    );
    assert_eq!(proxy.answered().len(), 1);
}
