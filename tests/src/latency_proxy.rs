//! A proxy in front of moto that makes every AWS API call take as long as it does from a
//! Lambda function in the region: moto answers in about a millisecond, AWS APIs in tens.
//! Each request is held for the delay before it is forwarded, so every call pays it once,
//! however the SDK reuses its keep-alive connections. It also keeps what the benchmarks and
//! the concurrency tests read: calls, connections, the most calls in flight at once, and when
//! each operation's answer went back.
//!
//! ```no_run
//! # async fn demo(moto: &harness::moto::Moto) {
//! use harness::latency_proxy::LatencyProxy;
//! let proxy = LatencyProxy::start(moto.endpoint_url(), LatencyProxy::DEFAULT_DELAY).await;
//! // Point the SDK (AWS_ENDPOINT_URL) or a CborBridge at proxy.url().
//! # }
//! ```

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::http_relay;

/// One answered call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnsweredCall {
    /// The AWS operation (`SetDesiredCapacity`, `GetMetricData`, …); empty when the request
    /// names none.
    pub operation: String,
    pub status: u16,
    /// When the request arrived and when its answer left for the caller.
    pub received: Instant,
    pub answered: Instant,
}

#[derive(Debug, Default)]
struct Counters {
    /// The delay, in microseconds (changeable while serving).
    delay_micros: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    answered: Mutex<Vec<AnsweredCall>>,
}

impl Counters {
    fn answered(&self) -> MutexGuard<'_, Vec<AnsweredCall>> {
        crate::sync::lock(&self.answered)
    }
}

/// The proxy on a loopback port; stops when dropped.
pub struct LatencyProxy {
    url: String,
    counters: Arc<Counters>,
    connections: Arc<AtomicUsize>,
    server: JoinHandle<()>,
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl LatencyProxy {
    /// Roughly what an AWS API call takes from a Lambda function in the same region.
    pub const DEFAULT_DELAY: Duration = Duration::from_millis(40);

    /// Starts in front of `upstream` (moto's URL, or another stand-in's), holding each request
    /// for `delay`.
    pub async fn start(upstream: &str, delay: Duration) -> LatencyProxy {
        let counters = Arc::new(Counters::default());
        counters.delay_micros.store(micros(delay), Ordering::SeqCst);
        let (upstream, http, shared) = (
            upstream.to_owned(),
            reqwest::Client::new(),
            counters.clone(),
        );
        let served = http_relay::serve("latency proxy", move |request| {
            let (upstream, http, counters) = (upstream.clone(), http.clone(), shared.clone());
            async move {
                let received = Instant::now();
                let now_in_flight = counters.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                counters
                    .max_in_flight
                    .fetch_max(now_in_flight, Ordering::SeqCst);
                let delay = Duration::from_micros(counters.delay_micros.load(Ordering::SeqCst));
                let answer = delayed(request, delay, &upstream, &http).await;
                counters.in_flight.fetch_sub(1, Ordering::SeqCst);
                if let Ok((operation, response)) = &answer {
                    counters.answered().push(AnsweredCall {
                        operation: operation.clone(),
                        status: response.status().as_u16(),
                        received,
                        answered: Instant::now(),
                    });
                }
                answer.map(|(_, response)| response)
            }
        })
        .await;
        LatencyProxy {
            url: served.url,
            counters,
            connections: served.connections,
            server: served.task,
        }
    }

    /// The endpoint to give the SDK (or a bridge) instead of moto's.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn delay(&self) -> Duration {
        Duration::from_micros(self.counters.delay_micros.load(Ordering::SeqCst))
    }

    /// Holds the calls that arrive from now on for `delay` (zero: forwarded at once, still
    /// counted and timed).
    pub fn set_delay(&self, delay: Duration) {
        self.counters
            .delay_micros
            .store(micros(delay), Ordering::SeqCst);
    }

    /// Every call answered so far, in the order the answers left.
    pub fn answered(&self) -> Vec<AnsweredCall> {
        self.counters.answered().clone()
    }

    /// The first answer to `operation` that left at or after `since`.
    pub fn first_answer(&self, operation: &str, since: Instant) -> Option<AnsweredCall> {
        self.counters
            .answered()
            .iter()
            .find(|call| call.operation == operation && call.answered >= since)
            .cloned()
    }

    /// The most calls that were in flight at once since the last [`LatencyProxy::reset`].
    pub fn max_in_flight(&self) -> usize {
        self.counters.max_in_flight.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far (not reset).
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Forgets the answers and the in-flight high-water mark.
    pub fn reset(&self) {
        self.counters.answered().clear();
        self.counters.max_in_flight.store(
            self.counters.in_flight.load(Ordering::SeqCst),
            Ordering::SeqCst,
        );
    }
}

fn micros(delay: Duration) -> u64 {
    u64::try_from(delay.as_micros()).unwrap_or(u64::MAX)
}

/// Holds the request for `delay`, then forwards it; returns the operation with the answer.
async fn delayed(
    request: hyper::Request<hyper::body::Incoming>,
    delay: Duration,
    upstream: &str,
    http: &reqwest::Client,
) -> Result<
    (
        String,
        hyper::Response<http_body_util::Full<hyper::body::Bytes>>,
    ),
    std::io::Error,
> {
    let (parts, body) = http_relay::read(request).await?;
    let operation = http_relay::operation(&parts, &body);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let response = http_relay::forward(&parts, body, upstream, http).await?;
    Ok((operation, response))
}
