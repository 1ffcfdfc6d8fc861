//! The local harness every integration test shares: a moto server for the AWS APIs, private
//! MariaDB and PostgreSQL instances (plain and TLS-only), and a server that records the
//! responses a CloudFormation custom resource sends to its pre-signed `ResponseURL`.
//!
//! Each piece owns its processes and temporary files and stops them when dropped, so tests
//! can run in parallel and leave nothing behind. A missing tool fails loudly and names the
//! setup command that installs it.

pub mod cfn_recorder;
pub mod database;
pub mod mariadb;
pub mod moto;
pub mod postgres;
pub mod process;
pub mod tls;
