//! The moto harness answers the real AWS SDK, records the calls it gets, resets, and leaves
//! nothing behind.

use harness::moto::{ACCOUNT_ID, Moto, REGION};
use harness::process::process_is_running;

async fn topic_arns(sns: &aws_sdk_sns::Client) -> Vec<String> {
    let listed = sns.list_topics().send().await.expect("ListTopics");
    listed
        .topics()
        .iter()
        .filter_map(|topic| topic.topic_arn().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn moto_answers_the_rust_sdk_and_records_the_calls() {
    let started = std::time::Instant::now();
    let moto = Moto::start().await;
    eprintln!("moto started in {:?}", started.elapsed());
    assert_eq!(moto.region(), REGION);
    let sns = aws_sdk_sns::Client::new(&moto.sdk_config().await);

    let created = sns
        .create_topic()
        .name("harness-topic")
        .send()
        .await
        .expect("CreateTopic");
    let arn = created.topic_arn().expect("a topic ARN");
    assert_eq!(
        arn,
        format!("arn:aws:sns:{REGION}:{ACCOUNT_ID}:harness-topic")
    );
    assert_eq!(topic_arns(&sns).await, [arn]);

    assert_eq!(
        moto.recorded_actions(),
        ["sns:CreateTopic", "sns:ListTopics"]
    );
    let requests = moto.recorded_requests();
    assert_eq!(requests[0].method, "POST");
    assert!(
        String::from_utf8_lossy(&requests[0].body).contains("Name=harness-topic"),
        "the recorded body is the SDK's form-encoded request: {requests:?}"
    );
}

#[tokio::test]
async fn reset_forgets_resources_and_recording() {
    let moto = Moto::start().await;
    let sns = aws_sdk_sns::Client::new(&moto.sdk_config().await);
    sns.create_topic()
        .name("doomed")
        .send()
        .await
        .expect("CreateTopic");

    moto.reset().await;
    assert!(moto.recorded_requests().is_empty());
    assert!(topic_arns(&sns).await.is_empty());
    assert_eq!(moto.recorded_actions(), ["sns:ListTopics"]);

    moto.clear_recording().await;
    assert!(moto.recorded_actions().is_empty());
}

#[tokio::test]
async fn instances_are_independent() {
    let (first, second) = tokio::join!(Moto::start(), Moto::start());
    assert_ne!(first.endpoint_url(), second.endpoint_url());
    let first_sns = aws_sdk_sns::Client::new(&first.sdk_config().await);
    let second_sns = aws_sdk_sns::Client::new(&second.sdk_config().await);

    first_sns
        .create_topic()
        .name("only-in-first")
        .send()
        .await
        .expect("CreateTopic");
    assert_eq!(topic_arns(&first_sns).await.len(), 1);
    assert!(topic_arns(&second_sns).await.is_empty());
    assert_eq!(second.recorded_actions(), ["sns:ListTopics"]);
}

#[tokio::test]
async fn moto_can_start_on_any_task() {
    let moto = tokio::spawn(Moto::start()).await.unwrap();
    let sns = aws_sdk_sns::Client::new(&moto.sdk_config().await);
    assert!(topic_arns(&sns).await.is_empty());
}

#[tokio::test]
async fn dropping_moto_stops_the_server_and_removes_its_files() {
    let moto = Moto::start().await;
    let pid = moto.pid();
    let dir = moto.dir().to_path_buf();
    assert!(process_is_running(pid));
    assert!(dir.is_dir());

    let stopping = std::time::Instant::now();
    drop(moto);
    eprintln!("moto stopped in {:?}", stopping.elapsed());
    assert!(!process_is_running(pid), "moto (pid {pid}) still runs");
    assert!(!dir.exists(), "{} still exists", dir.display());
}
