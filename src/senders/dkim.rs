//! DKIM keys for sending domains: generation (Ed25519 or RSA-2048, private
//! keys as PKCS#8 DER, the form `outbound::compose::dkim_sign` loads), the
//! TXT record an admin publishes at `<selector>._domainkey.<domain>`, and
//! the one stored key per domain in `dkim_keys`.

pub use crate::model::{
    DkimAlgorithm as Algorithm, DkimKeyRow, GeneratedKey, normalize_domain, record, record_for,
};
use crate::store::Db;
use crate::store::StoreError;
pub use crate::store::dkim::{find, insert_if_absent};
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use mail_auth::common::crypto::Ed25519Key;

#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    #[error("cannot generate a DKIM key: {0}")]
    Generate(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Generates a new key pair.
pub fn generate(algorithm: Algorithm) -> Result<GeneratedKey, DkimError> {
    let (private, public) = match algorithm {
        Algorithm::Ed25519 => {
            let der =
                Ed25519Key::generate_pkcs8().map_err(|e| DkimError::Generate(e.to_string()))?;
            let public = Ed25519Key::from_pkcs8_der(&der)
                .map_err(|e| DkimError::Generate(e.to_string()))?
                .public_key();
            (der, public)
        }
        Algorithm::Rsa2048 => {
            let pair = RsaKeyPair::generate(KeySize::Rsa2048)
                .map_err(|e| DkimError::Generate(format!("RSA-2048: {e}")))?;
            let der: Pkcs8V1Der<'static> = pair
                .as_der()
                .map_err(|e| DkimError::Generate(format!("RSA PKCS#8 encoding: {e}")))?;
            let spki: PublicKeyX509Der<'static> = pair
                .public_key()
                .as_der()
                .map_err(|e| DkimError::Generate(format!("RSA public key encoding: {e}")))?;
            (der.as_ref().to_vec(), spki.as_ref().to_vec())
        }
    };
    Ok(GeneratedKey {
        algorithm,
        private_key_pkcs8_der: private,
        public_key_b64: BASE64.encode(public),
    })
}

/// The key type of a `p=` value: 32 bytes is an Ed25519 key (RFC 8463),
/// anything else RSA. `None` when it is not base64.
pub fn algorithm_of_public_key(public_key_b64: &str) -> Option<Algorithm> {
    let bytes = BASE64.decode(public_key_b64.trim()).ok()?;
    Some(if bytes.len() == 32 {
        Algorithm::Ed25519
    } else {
        Algorithm::Rsa2048
    })
}

/// The key of `domain`, generated and stored the first time it is asked
/// for; later calls return the same key whatever `selector` and
/// `algorithm` they pass.
///
/// Generating an RSA-2048 key takes tens to hundreds of milliseconds; to
/// keep that off the store's writer thread, call [`find`] on a reader,
/// [`generate`] outside the store and [`insert_if_absent`] on the writer.
pub fn ensure_key(
    conn: &Db<'_>,
    domain: &str,
    selector: &str,
    algorithm: Algorithm,
) -> Result<DkimKeyRow, DkimError> {
    if let Some(existing) = find(conn, domain)? {
        return Ok(existing);
    }
    let key = generate(algorithm)?;
    Ok(insert_if_absent(conn, domain, selector, &key)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ed25519_public_key_is_raw_32_bytes() {
        let key = generate(Algorithm::Ed25519).expect("generate");
        let public = BASE64.decode(&key.public_key_b64).expect("base64");
        assert_eq!(public.len(), 32);
        assert_eq!(
            algorithm_of_public_key(&key.public_key_b64),
            Some(Algorithm::Ed25519)
        );
        assert!(Ed25519Key::from_pkcs8_der(&key.private_key_pkcs8_der).is_ok());
        assert_eq!(
            record(&key),
            format!("v=DKIM1; k=ed25519; p={}", key.public_key_b64)
        );
    }

    #[test]
    fn rsa_public_key_is_subject_public_key_info() {
        let key = generate(Algorithm::Rsa2048).expect("generate");
        let public = BASE64.decode(&key.public_key_b64).expect("base64");
        // SEQUENCE { SEQUENCE { rsaEncryption OID, NULL }, BIT STRING }
        assert_eq!(public.first(), Some(&0x30));
        let rsa_oid = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
        assert!(public.windows(rsa_oid.len()).any(|w| w == rsa_oid));
        assert!(public.len() > 256, "2048-bit modulus: {}", public.len());
        assert_eq!(
            algorithm_of_public_key(&key.public_key_b64),
            Some(Algorithm::Rsa2048)
        );
        assert!(record(&key).starts_with("v=DKIM1; k=rsa; p=MII"));
        assert!(record(&key).len() > 255, "needs several TXT strings");
    }

    #[test]
    fn debug_never_shows_the_private_key() {
        let key = generate(Algorithm::Ed25519).expect("generate");
        let shown = format!("{key:?}");
        assert!(shown.contains("<redacted>"));
        assert!(!shown.contains(&format!("{:?}", key.private_key_pkcs8_der)));
    }

    #[test]
    fn one_key_per_domain_kept_across_calls() {
        let memory = crate::store::memory_db();
        let conn = &crate::store::Db::for_test(&memory);
        assert_eq!(find(conn, "acme.com").expect("find"), None);
        let first =
            ensure_key(conn, "Acme.COM.", "backchannel", Algorithm::Ed25519).expect("first key");
        assert_eq!(first.domain, "acme.com");
        assert_eq!(first.selector, "backchannel");
        assert_eq!(first.algorithm, Algorithm::Ed25519);
        let again = ensure_key(conn, "acme.com", "other", Algorithm::Rsa2048).expect("second call");
        assert_eq!(again, first, "the existing key is kept");
        let count = crate::store::dkim::count(conn).expect("count");
        assert_eq!(count, 1);

        let other = generate(Algorithm::Ed25519).expect("generate");
        let kept = insert_if_absent(conn, "ACME.com", "x", &other).expect("insert");
        assert_eq!(kept, first, "insert_if_absent keeps the existing key");

        let rsa =
            ensure_key(conn, "beta.example", "backchannel", Algorithm::Rsa2048).expect("rsa key");
        assert_eq!(rsa.algorithm, Algorithm::Rsa2048);
        assert_eq!(rsa.signing_key().algorithm, "rsa");
        assert_eq!(rsa.record_name(), "backchannel._domainkey.beta.example");
    }

    #[test]
    fn algorithm_round_trips() {
        for a in [Algorithm::Ed25519, Algorithm::Rsa2048] {
            assert_eq!(a.as_str().parse::<Algorithm>(), Ok(a));
        }
        assert!("dsa".parse::<Algorithm>().is_err());
        assert_eq!(algorithm_of_public_key("not base64!"), None);
    }
}
