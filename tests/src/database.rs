//! What the private MariaDB and PostgreSQL instances have in common: a server on a loopback
//! port, an administrator password, and for TLS-only instances the CA that signed their
//! certificate. `MariaDb` and `Postgres` deref to it.

use crate::process::ServerInstance;
use crate::tls::TestCa;
use std::ops::Deref;
use std::path::Path;

#[derive(Debug)]
pub struct DatabaseServer {
    pub(crate) instance: ServerInstance,
    pub(crate) port: u16,
    pub(crate) admin_password: String,
    pub(crate) ca: Option<TestCa>,
}

impl DatabaseServer {
    /// The address the server listens on: `127.0.0.1`.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The administrator's password (random per instance).
    pub fn admin_password(&self) -> &str {
        &self.admin_password
    }

    /// The CA bundle that verifies a TLS-only server's certificate; `None` for a plaintext
    /// server.
    pub fn ca_pem_path(&self) -> Option<&Path> {
        self.ca.as_ref().map(TestCa::ca_pem_path)
    }
}

impl Deref for DatabaseServer {
    type Target = ServerInstance;

    fn deref(&self) -> &ServerInstance {
        &self.instance
    }
}
