//! The system's root certificates, read once per process and shared by every TLS client of a
//! function: the SDK's HTTPS client ([`crate::aws`]), the CloudFormation responder
//! ([`crate::custom_resource`]) and, with the `database` feature, the database trust set.
//!
//! Reading and parsing them is most of a cold start's Init. Left to themselves, the SDK and
//! the responder's `reqwest` each load their own copy (the bundle file, then every file of the
//! certificate directory: about 150 on Debian), and the database trust set a third.
//!
//! Where they come from: `SSL_CERT_FILE` when set (as OpenSSL and the SDK's own loader honour
//! it), else the first system bundle that exists ([`SYSTEM_CA_BUNDLES`]; Amazon Linux's first,
//! the Lambda runtime's). A certificate that rustls cannot use as a trust anchor is left out
//! with a warning, as the SDK's own loader does (given one, the SDK would panic instead).

use rustls_pki_types::{CertificateDer, pem::PemObject};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

/// Where distributions keep the system CA bundle; the first that exists is read (Amazon Linux
/// first: the Lambda runtime).
pub const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/ssl/cert.pem",
];

static SYSTEM_ROOTS: LazyLock<SystemRoots> = LazyLock::new(|| {
    let from_env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let roots = SystemRoots::locate(from_env, SYSTEM_CA_BUNDLES);
    if roots.certificates.is_empty() {
        tracing::warn!(
            bundle = ?roots.source,
            "no system root certificate found: TLS clients fall back to their own loaders"
        );
    }
    roots
});

/// Root certificates, each one rustls accepts as a trust anchor.
#[derive(Debug, Clone, Default)]
pub struct SystemRoots {
    source: Option<PathBuf>,
    certificates: Vec<CertificateDer<'static>>,
}

impl SystemRoots {
    /// This process's roots, read on first use.
    pub fn get() -> &'static SystemRoots {
        &SYSTEM_ROOTS
    }

    /// The roots of `explicit` (`SSL_CERT_FILE`) if given, else of the first of `candidates`
    /// that is a file. Unreadable or empty: no roots (and a warning).
    pub fn locate(explicit: Option<PathBuf>, candidates: &[&str]) -> SystemRoots {
        let source = explicit.or_else(|| {
            candidates
                .iter()
                .map(PathBuf::from)
                .find(|path| path.is_file())
        });
        match source {
            Some(path) => SystemRoots::read(&path),
            None => SystemRoots::default(),
        }
    }

    /// The usable roots of the PEM file at `path`.
    pub fn read(path: &Path) -> SystemRoots {
        let certificates = match std::fs::read(path) {
            Ok(pem) => usable_roots(path, &pem),
            Err(error) => {
                tracing::warn!(bundle = %path.display(), %error, "cannot read the CA bundle");
                Vec::new()
            }
        };
        SystemRoots {
            source: Some(path.to_path_buf()),
            certificates,
        }
    }

    /// The file they were read from.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    pub fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.certificates
    }

    pub fn is_empty(&self) -> bool {
        self.certificates.is_empty()
    }

    /// The roots as canonical PEM (certificate blocks only), for clients that take PEM.
    pub fn pem(&self) -> String {
        pem_of(&self.certificates)
    }
}

/// The certificate blocks of `pem` that rustls accepts as trust anchors; a block that does not
/// decode, or is no usable root, is left out with a warning naming its number.
fn usable_roots(path: &Path, pem: &[u8]) -> Vec<CertificateDer<'static>> {
    let mut roots = Vec::new();
    let mut store = rustls::RootCertStore::empty();
    for (index, block) in CertificateDer::pem_slice_iter(pem).enumerate() {
        let problem = match block {
            Ok(certificate) => match store.add(certificate.clone()) {
                Ok(()) => {
                    roots.push(certificate);
                    continue;
                }
                Err(error) => error.to_string(),
            },
            Err(error) => error.to_string(),
        };
        tracing::warn!(
            bundle = %path.display(),
            certificate = index + 1,
            problem,
            "left a certificate out of the trusted roots"
        );
    }
    roots
}

/// Canonical PEM: one `CERTIFICATE` block per certificate, 64-character lines.
pub fn pem_of(certificates: &[CertificateDer<'_>]) -> String {
    let mut pem = String::new();
    for certificate in certificates {
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        let body = aws_smithy_types::base64::encode(certificate.as_ref());
        for line in body.as_bytes().chunks(64) {
            // base64 is ASCII.
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    pem
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine_bundle() -> PathBuf {
        SYSTEM_CA_BUNDLES
            .iter()
            .map(PathBuf::from)
            .find(|path| path.is_file())
            .expect("this machine has a system CA bundle")
    }

    fn certificates(pem: &[u8]) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(pem)
            .collect::<Result<_, _>>()
            .unwrap()
    }

    struct TempFile(PathBuf);
    impl TempFile {
        fn new(name: &str, contents: &str) -> TempFile {
            let path = std::env::temp_dir()
                .join(format!("system-roots-{name}-{}.pem", std::process::id()));
            std::fs::write(&path, contents).unwrap();
            TempFile(path)
        }
    }
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn the_roots_are_every_certificate_of_the_first_system_bundle_that_exists() {
        let bundle = machine_bundle();
        let expected = certificates(&std::fs::read(&bundle).unwrap());
        assert!(expected.len() > 50, "a real bundle: {}", expected.len());
        let missing = "/nonexistent/ca-bundle.crt";
        let found = bundle.to_str().unwrap();
        let roots = SystemRoots::locate(None, &[missing, found]);
        assert_eq!(roots.source(), Some(bundle.as_path()));
        assert_eq!(roots.certificates(), expected.as_slice());
        // The process's own copy is the same (SSL_CERT_FILE is not set under test).
        assert_eq!(SystemRoots::get().certificates(), expected.as_slice());
        assert!(
            std::ptr::eq(SystemRoots::get(), SystemRoots::get()),
            "read once"
        );
    }

    #[test]
    fn ssl_cert_file_comes_before_the_system_bundles() {
        let bundle = std::fs::read_to_string(machine_bundle()).unwrap();
        let first = pem_of(&certificates(bundle.as_bytes())[..1]);
        let file = TempFile::new("explicit", &first);
        let roots = SystemRoots::locate(Some(file.0.clone()), SYSTEM_CA_BUNDLES);
        assert_eq!(roots.source(), Some(file.0.as_path()));
        assert_eq!(roots.pem(), first);
        // Named but missing: no roots (and a warning), never a silent fallback.
        let gone = SystemRoots::locate(Some("/nonexistent/x.pem".into()), SYSTEM_CA_BUNDLES);
        assert!(gone.is_empty());
        assert!(SystemRoots::locate(None, &["/nonexistent/x.pem"]).is_empty());
    }

    #[test]
    fn blocks_that_do_not_decode_or_are_no_usable_root_are_left_out() {
        let bundle = certificates(&std::fs::read(machine_bundle()).unwrap());
        let (a, b) = (pem_of(&bundle[..1]), pem_of(&bundle[1..2]));
        // Valid base64 whose DER is no certificate: the SDK would panic on it.
        let not_a_root = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let broken = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        let file = TempFile::new("mixed", &format!("{a}{not_a_root}# comment\n{broken}{b}"));
        let roots = SystemRoots::read(&file.0);
        assert_eq!(roots.certificates(), &bundle[..2]);
    }

    #[test]
    fn pem_of_writes_canonical_blocks_that_read_back_the_same() {
        let bundle = certificates(&std::fs::read(machine_bundle()).unwrap());
        let pem = pem_of(&bundle);
        assert_eq!(certificates(pem.as_bytes()), bundle);
        assert!(pem.lines().all(|line| line.len() <= 64));
        assert_eq!(pem_of(&[]), "");
    }
}
