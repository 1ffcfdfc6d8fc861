//! The local harness every integration test shares: a moto server for the AWS APIs, private
//! MariaDB and PostgreSQL instances (plain and TLS-only), a private TLS-only redis-server behind
//! an ElastiCache API stand-in (moto ignores AUTH tokens), and a server that records the
//! responses a CloudFormation custom resource sends to its pre-signed `ResponseURL`.
//! `aws-sdk-cloudwatch` speaks only Smithy RPC v2 CBOR, which moto 5.2.5 does not route;
//! `cloudwatch_cbor` translates it to the CloudWatch JSON protocol moto does speak. For fault
//! injection, `aws_fault_proxy` fails chosen AWS calls on their way to moto, and
//! `cutting_proxy` cuts database connections at a chosen message; `latency_proxy` gives every AWS
//! call an AWS-like round trip for the benchmarks. The HTTP stand-ins share `http_relay`.
//!
//! Each piece owns its processes and temporary files and stops them when dropped, so tests
//! can run in parallel and leave nothing behind. A missing tool fails loudly and names the
//! setup command that installs it.

pub mod aws_fault_proxy;
pub mod cfn_recorder;
pub mod cloudwatch_cbor;
pub mod cutting_proxy;
pub mod database;
pub mod elasticache;
pub mod http_relay;
pub mod iam;
pub mod lambda_context;
pub mod latency_proxy;
pub mod log_capture;
pub mod mariadb;
pub mod moto;
pub mod postgres;
pub mod process;
pub mod redis;
pub mod rotation;
pub mod scenario;
pub mod sns_inbox;
pub mod stalling_server;
pub mod sync;
pub mod template;
pub mod tenant_databases;
pub mod tls;
