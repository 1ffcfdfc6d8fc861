//! A throwaway certificate authority and a server certificate it signed, as PEM files, for
//! the TLS-only database servers. Clients verify the server against [`TestCa::ca_pem_path`]
//! (what the functions receive as `DB_CA_BUNDLE`).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;

use crate::process::temp_dir;

/// The names the server certificate is valid for: the harness's servers listen on 127.0.0.1,
/// and clients may say `localhost`.
pub const SERVER_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// A self-signed CA and a server certificate for [`SERVER_NAMES`], written as PEM files to a
/// temporary directory that is removed on drop.
#[derive(Debug)]
pub struct TestCa {
    ca_pem_path: PathBuf,
    cert_path: PathBuf,
    key_path: PathBuf,
    ca_pem: String,
    // Last, so the files stay until everything else is gone.
    dir: TempDir,
}

impl TestCa {
    /// Generates a fresh CA (ECDSA P-256) and server certificate. Panics if that fails.
    pub fn new() -> TestCa {
        let ca_key = KeyPair::generate().expect("generate the test CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca_params.distinguished_name = common_name("orchestrator harness test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .expect("self-sign the test CA");
        let issuer = Issuer::new(ca_params, &ca_key);

        let server_key = KeyPair::generate().expect("generate the server key");
        let mut server_params =
            CertificateParams::new(SERVER_NAMES.map(String::from).to_vec()).expect("server names");
        server_params.distinguished_name = common_name("localhost");
        server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server_params.use_authority_key_identifier_extension = true;
        let server_cert = server_params
            .signed_by(&server_key, &issuer)
            .expect("sign the server certificate");

        let dir = temp_dir("harness-tls-");
        let ca_pem = ca_cert.pem();
        let ca_pem_path = dir.path().join("ca.pem");
        let cert_path = dir.path().join("server.pem");
        let key_path = dir.path().join("server.key");
        for (path, contents) in [
            (&ca_pem_path, ca_pem.clone()),
            (&cert_path, server_cert.pem()),
            (&key_path, server_key.serialize_pem()),
        ] {
            fs::write(path, contents).expect("write a test certificate file");
        }
        // Servers refuse private keys that others can read.
        fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600))
            .expect("restrict the server key's permissions");
        TestCa {
            ca_pem_path,
            cert_path,
            key_path,
            ca_pem,
            dir,
        }
    }

    /// The CA certificate (PEM): the trust anchor clients verify the server with.
    pub fn ca_pem_path(&self) -> &Path {
        &self.ca_pem_path
    }

    /// The CA certificate's PEM text.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The server certificate (PEM), valid for [`SERVER_NAMES`].
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The server's private key (PKCS#8 PEM, mode 0600).
    pub fn key_path(&self) -> &Path {
        &self.key_path
    }

    /// The directory holding the three files; removed when the `TestCa` is dropped.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

fn common_name(name: &str) -> rcgen::DistinguishedName {
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}
