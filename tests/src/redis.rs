//! A private, TLS-only redis-server per test: its own directory, port and certificate (a fresh
//! [`TestCa`]), no persistence, and AUTH on the `default` user — what an ElastiCache
//! replication group with in-transit encryption and an AUTH token looks like to a client.
//!
//! ```no_run
//! # async fn demo() {
//! let redis = harness::redis::RedisServer::start_tls("first-token-0123456789").await;
//! assert!(redis.accepts("first-token-0123456789").await);
//! redis.set_default_passwords(&["first-token-0123456789", "second-token-012345"]).await;
//! # }
//! ```
//!
//! The `default` user's passwords are the AUTH tokens (Redis ACL allows several, which is how
//! ElastiCache's two live tokens behave). The harness keeps its own ACL user,
//! [`ADMIN_USER`], so changing `default`'s passwords never locks the harness out.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{
    ServerInstance, ServerProcess, StartError, StopSignal, binary_candidates, random_hex,
    require_binary, start_with_port_retry, temp_dir, wait_until_ready,
};
use crate::tls::TestCa;

/// The harness's own ACL user (every command, every key).
pub const ADMIN_USER: &str = "harness-admin";
/// How long a client of the harness waits to connect or for an answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A TLS-only redis-server on 127.0.0.1, stopped and deleted when dropped.
#[derive(Debug)]
pub struct RedisServer {
    instance: ServerInstance,
    admin: RedisAdmin,
    ca: TestCa,
}

impl std::ops::Deref for RedisServer {
    type Target = ServerInstance;

    fn deref(&self) -> &ServerInstance {
        &self.instance
    }
}

/// What it takes to administer a harness redis-server: its port, its CA and the harness
/// user's password. Cheap to clone (the ElastiCache stand-in holds one per group).
#[derive(Clone)]
pub struct RedisAdmin {
    port: u16,
    ca_pem: String,
    password: String,
}

impl std::fmt::Debug for RedisAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisAdmin(127.0.0.1:{})", self.port)
    }
}

impl RedisServer {
    /// Starts a server whose `default` user accepts only `token` (AUTH), over TLS only (no
    /// plaintext port). Panics if redis-server is missing (run `scripts/setup`) or does not
    /// start.
    pub async fn start_tls(token: &str) -> RedisServer {
        let binary = require_binary(
            "redis-server",
            &binary_candidates("redis-server", &["/usr/bin", "/usr/local/bin"]),
        );
        start_with_port_retry("redis-server", |port| {
            RedisServer::start_instance(&binary, token, port)
        })
        .await
    }

    async fn start_instance(
        binary: &Path,
        token: &str,
        port: u16,
    ) -> Result<RedisServer, StartError> {
        let failed = |what: &str, e: std::io::Error| StartError::Failed(format!("{what}: {e}"));
        let dir = temp_dir("harness-redis-");
        let ca = TestCa::new();
        let admin = RedisAdmin {
            port,
            ca_pem: ca.ca_pem().to_owned(),
            password: random_hex(16),
        };
        let config = server_config(dir.path(), &ca, port, token, &admin.password);
        let config_path = dir.path().join("redis.conf");
        fs::write(&config_path, config).map_err(|e| failed("write redis.conf", e))?;
        let mut command = Command::new(binary);
        command.arg(&config_path);
        let mut server =
            ServerProcess::spawn(command, dir.path().join("redis.log"), StopSignal::Terminate)
                .map_err(|e| failed("spawn redis-server", e))?;
        wait_until_ready(&mut server, START_TIMEOUT, || admin.ping()).await?;
        Ok(RedisServer {
            instance: ServerInstance::new(server, dir),
            admin,
            ca,
        })
    }

    /// The address the server listens on: `127.0.0.1` (the certificate also names
    /// `localhost`).
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The TLS port.
    pub fn port(&self) -> u16 {
        self.admin.port
    }

    /// The CA that signed the server's certificate (what the function gets as
    /// `DB_CA_BUNDLE`).
    pub fn ca_pem_path(&self) -> &Path {
        self.ca.ca_pem_path()
    }

    /// The administration handle (for the ElastiCache stand-in).
    pub fn admin(&self) -> RedisAdmin {
        self.admin.clone()
    }

    /// Whether `AUTH <token>` (the `default` user) is accepted over verified TLS.
    pub async fn accepts(&self, token: &str) -> bool {
        self.admin.accepts(token).await
    }

    /// Makes the `default` user accept exactly `tokens`.
    pub async fn set_default_passwords(&self, tokens: &[&str]) {
        self.admin.set_default_passwords(tokens).await
    }
}

impl RedisAdmin {
    /// The TLS port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether `AUTH <token>` (the `default` user) is accepted over verified TLS. Panics when
    /// the server cannot be reached at all: a test must never read that as "refused".
    pub async fn accepts(&self, token: &str) -> bool {
        match self.connect(None, token).await {
            Ok(_) => true,
            Err(error) if error.kind() == ::redis::ErrorKind::AuthenticationFailed => false,
            Err(error) => panic!("redis-server on port {} is unreachable: {error}", self.port),
        }
    }

    /// Makes the `default` user accept exactly `tokens` (`ACL SETUSER default resetpass
    /// >…`), as the harness user. Panics on failure.
    pub async fn set_default_passwords(&self, tokens: &[&str]) {
        let mut connection = self
            .connect(Some(ADMIN_USER), &self.password)
            .await
            .unwrap_or_else(|e| panic!("log in to redis-server as {ADMIN_USER}: {e}"));
        let mut command = ::redis::cmd("ACL");
        command
            .arg("SETUSER")
            .arg("default")
            .arg("on")
            .arg("resetpass");
        for token in tokens {
            command.arg(format!(">{token}"));
        }
        command
            .query_async::<()>(&mut connection)
            .await
            .unwrap_or_else(|e| panic!("ACL SETUSER default on redis-server: {e}"));
    }

    async fn ping(&self) -> Result<(), String> {
        let mut connection = self
            .connect(Some(ADMIN_USER), &self.password)
            .await
            .map_err(|e| e.to_string())?;
        ::redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// A verified-TLS connection authenticated as `user` (`None`: `default`).
    async fn connect(
        &self,
        user: Option<&str>,
        password: &str,
    ) -> ::redis::RedisResult<::redis::aio::MultiplexedConnection> {
        let mut settings = ::redis::RedisConnectionInfo::default()
            .set_password(password)
            .set_skip_set_lib_name();
        if let Some(user) = user {
            settings = settings.set_username(user);
        }
        let info =
            ::redis::IntoConnectionInfo::into_connection_info(::redis::ConnectionAddr::TcpTls {
                host: "localhost".to_owned(),
                port: self.port,
                insecure: false,
                tls_params: None,
            })?
            .set_redis_settings(settings);
        let client = ::redis::Client::build_with_tls(
            info,
            ::redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(self.ca_pem.clone().into_bytes()),
            },
        )?;
        let config = ::redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CLIENT_TIMEOUT))
            .set_response_timeout(Some(CLIENT_TIMEOUT));
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }
}

/// TLS only (`port 0`), loopback only, nothing written to disk, the `default` user with
/// `token` and the harness user with its own password.
fn server_config(dir: &Path, ca: &TestCa, port: u16, token: &str, admin_password: &str) -> String {
    let path = |p: &Path| PathBuf::from(p).display().to_string();
    format!(
        "# Written by the test harness.\n\
         bind 127.0.0.1\n\
         port 0\n\
         tls-port {port}\n\
         tls-cert-file {cert}\n\
         tls-key-file {key}\n\
         tls-ca-cert-file {ca}\n\
         tls-auth-clients no\n\
         dir {dir}\n\
         save \"\"\n\
         appendonly no\n\
         daemonize no\n\
         databases 1\n\
         user default on >{token} ~* &* +@all\n\
         user {ADMIN_USER} on >{admin_password} ~* &* +@all\n",
        cert = path(ca.cert_path()),
        key = path(ca.key_path()),
        ca = path(ca.ca_pem_path()),
        dir = path(dir),
    )
}
