//! A TCP proxy in front of a database that cuts every connection at a chosen point: what the
//! database sees when the client's process is killed there. Armed with
//! [`CuttingProxy::cut_at`]`(n)`, it forwards the next `n - 1` messages the clients send (one
//! read of a client socket each: a login packet, a statement), then drops the connection
//! instead of the `n`th and refuses every later connection, until [`CuttingProxy::heal`].
//! Walking `n` from 1 until [`CuttingProxy::cut`] stays false cuts a step at every point.
//!
//! ```no_run
//! # async fn demo(db_port: u16) {
//! let proxy = harness::cutting_proxy::CuttingProxy::start(db_port).await;
//! proxy.cut_at(3); // secrets name `127.0.0.1:proxy.port()`
//! # }
//! ```

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::sync::lock;

#[derive(Debug, Default)]
struct State {
    /// The message (1-based, counted since armed) that is not forwarded.
    cut_at: Option<usize>,
    forwarded: usize,
    cut: bool,
}

impl State {
    /// Whether the next client message may pass; counts it.
    fn pass(&mut self) -> bool {
        if self.cut {
            return false;
        }
        let Some(at) = self.cut_at else {
            return true;
        };
        self.forwarded += 1;
        self.cut = self.forwarded >= at;
        !self.cut
    }
}

/// The proxy on a loopback port; stops (dropping every connection) when dropped.
pub struct CuttingProxy {
    port: u16,
    state: Arc<Mutex<State>>,
    server: JoinHandle<()>,
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl CuttingProxy {
    /// Starts on a free loopback port, forwarding to `127.0.0.1:upstream_port`.
    pub async fn start(upstream_port: u16) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the cutting proxy to a loopback port");
        let port = listener.local_addr().expect("local address").port();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let server = tokio::spawn(async move {
            // Owned here, so aborting the server drops every relayed connection with it.
            let mut relays = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                if lock(&shared).cut {
                    continue; // the "process" is gone: no new connection gets through
                }
                relays.spawn(relay(client, upstream_port, shared.clone()));
            }
        });
        CuttingProxy {
            port,
            state,
            server,
        }
    }

    /// The port secrets name instead of the database's.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Forwards `n - 1` more client messages, then cuts (see the module doc).
    pub fn cut_at(&self, n: usize) {
        *self.lock() = State {
            cut_at: Some(n),
            ..State::default()
        };
    }

    /// Forwards everything again.
    pub fn heal(&self) {
        *self.lock() = State::default();
    }

    /// Whether the armed cut happened.
    pub fn cut(&self) -> bool {
        self.lock().cut
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

/// Relays one connection until either side closes or the cut comes; then both sockets close.
async fn relay(client: TcpStream, upstream_port: u16, state: Arc<Mutex<State>>) {
    let Ok(upstream) = TcpStream::connect(("127.0.0.1", upstream_port)).await else {
        return;
    };
    let (mut client_in, mut client_out) = client.into_split();
    let (mut upstream_in, mut upstream_out) = upstream.into_split();
    let to_server = async {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = client_in.read(&mut buffer).await?;
            if n == 0 || !lock(&state).pass() {
                return Ok::<(), std::io::Error>(());
            }
            upstream_out.write_all(&buffer[..n]).await?;
        }
    };
    let to_client = tokio::io::copy(&mut upstream_in, &mut client_out);
    tokio::select! {
        _ = to_server => {}
        _ = to_client => {}
    }
}
