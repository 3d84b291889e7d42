//! TLS server set-up, once: a PEM certificate chain and private key
//! (`tls_cert`, `tls_key` of `[smtp]` and `[imap]`) loaded into a rustls
//! server configuration on the aws-lc-rs provider, with its safe default
//! protocol versions and no client authentication.

use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;

/// A TLS acceptor for the certificate chain and key in `files`. Fails with
/// the file named when a file cannot be read, holds no certificate or key,
/// or the key does not belong to the certificate.
pub fn acceptor(files: &TlsFiles) -> anyhow::Result<TlsAcceptor> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("read {}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parse {}", files.cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no certificate", files.cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("read key {}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("certificate and key do not match")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &std::path::Path, cert: &str, key: &str) -> TlsFiles {
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, cert).expect("write cert");
        std::fs::write(&files.key, key).expect("write key");
        files
    }

    fn generated() -> rcgen::CertifiedKey<rcgen::KeyPair> {
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert")
    }

    #[test]
    fn loads_a_matching_pair() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ck = generated();
        let files = write_pair(dir.path(), &ck.cert.pem(), &ck.signing_key.serialize_pem());
        assert!(acceptor(&files).is_ok());
    }

    #[test]
    fn refuses_missing_empty_and_mismatched_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ck = generated();
        let other = generated();

        let missing = TlsFiles {
            cert: dir.path().join("nope.pem"),
            key: dir.path().join("nope.key"),
        };
        let e = format!("{:#}", acceptor(&missing).err().expect("missing files"));
        assert!(e.contains("nope.pem"), "{e}");

        let empty = write_pair(dir.path(), "", &ck.signing_key.serialize_pem());
        let e = format!("{:#}", acceptor(&empty).err().expect("empty cert"));
        assert!(e.contains("holds no certificate"), "{e}");

        let no_key = write_pair(dir.path(), &ck.cert.pem(), "not a key");
        let e = format!("{:#}", acceptor(&no_key).err().expect("no key"));
        assert!(e.contains("read key"), "{e}");

        let mismatched = write_pair(
            dir.path(),
            &ck.cert.pem(),
            &other.signing_key.serialize_pem(),
        );
        let e = format!("{:#}", acceptor(&mismatched).err().expect("mismatch"));
        assert!(e.contains("do not match"), "{e}");
    }
}
