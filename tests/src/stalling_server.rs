//! An AWS endpoint that has stalled: it accepts every connection, reads what the client sends
//! and never answers, keeping the connection open. A client without a timeout waits forever;
//! with one, it gets a timeout error (not a connection error).
//!
//! ```no_run
//! # async fn demo() {
//! let endpoint = harness::stalling_server::StallingServer::start().await;
//! let url = endpoint.endpoint_url(); // `AWS_ENDPOINT_URL` for the SDK
//! # let _ = url;
//! # }
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// The stalled endpoint on a loopback port; stops (and drops every connection) when dropped.
#[derive(Debug)]
pub struct StallingServer {
    endpoint_url: String,
    connections: Arc<AtomicUsize>,
    server: JoinHandle<()>,
}

impl StallingServer {
    /// Starts on a free loopback port (bound at once, so no port race).
    pub async fn start() -> StallingServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the stalling server to a loopback port");
        let endpoint_url = format!("http://{}", listener.local_addr().expect("local address"));
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::clone(&connections);
        let server = tokio::spawn(async move {
            // Owned here, so aborting the server drops every held connection with it.
            let mut held = JoinSet::new();
            while let Ok((mut stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                held.spawn(async move {
                    let mut sink = [0u8; 4096];
                    // Read (and forget) the request; when the client gives up, stop.
                    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                });
            }
        });
        StallingServer {
            endpoint_url,
            connections,
            server,
        }
    }

    /// The base URL, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint_url(&self) -> &str {
        &self.endpoint_url
    }

    /// Connections accepted so far: one per attempt a client made (a timed-out attempt's
    /// connection is not reused).
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for StallingServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}
