//! Runs the CloudWatch CBOR bridge on its own, for `scripts/local`: functions under
//! `cargo lambda watch` reach moto's CloudWatch through it via the SDK's standard
//! `AWS_ENDPOINT_URL_CLOUDWATCH`. Usage: `cloudwatch-cbor-bridge <moto endpoint URL>`;
//! prints the bridge's URL on one line, then serves until killed.

use harness::cloudwatch_cbor::CborBridge;

#[tokio::main]
async fn main() {
    let Some(moto_url) = std::env::args().nth(1) else {
        eprintln!("usage: cloudwatch-cbor-bridge <moto endpoint URL>");
        std::process::exit(2);
    };
    let bridge = CborBridge::start(&moto_url).await;
    println!("{}", bridge.url());
    std::future::pending::<()>().await;
}
