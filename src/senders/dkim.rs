//! DKIM keys for sending domains: generation (Ed25519 or RSA-2048, private
//! keys as PKCS#8 DER, the form `outbound::compose::dkim_sign` loads), the
//! TXT record an admin publishes at `<selector>._domainkey.<domain>`, and
//! the one stored key per domain in `dkim_keys`.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use mail_auth::common::crypto::Ed25519Key;
use rusqlite::{OptionalExtension, params};

use crate::model::now_ms;
use crate::outbound::compose::DkimKey;
use crate::store::Db;
use crate::store::StoreError;

/// The key types the gateway generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Ed25519,
    /// RSA with a 2048-bit modulus; stored and published as `rsa`.
    Rsa2048,
}

impl Algorithm {
    /// The `dkim_keys.algorithm` value and the record's `k=` tag.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Ed25519 => "ed25519",
            Algorithm::Rsa2048 => "rsa",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = String;

    /// `ed25519` or `rsa` (as stored); `rsa2048` is accepted too.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "ed25519" => Ok(Algorithm::Ed25519),
            "rsa" | "rsa2048" => Ok(Algorithm::Rsa2048),
            other => Err(format!("unknown DKIM key algorithm {other:?}")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    #[error("cannot generate a DKIM key: {0}")]
    Generate(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A freshly generated key pair.
#[derive(Clone, PartialEq, Eq)]
pub struct GeneratedKey {
    pub algorithm: Algorithm,
    pub private_key_pkcs8_der: Vec<u8>,
    /// The `p=` value: the raw 32-byte key for Ed25519 (RFC 8463), the
    /// SubjectPublicKeyInfo DER for RSA (RFC 6376 §3.6.1), base64.
    pub public_key_b64: String,
}

impl fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("algorithm", &self.algorithm)
            .field("private_key_pkcs8_der", &"<redacted>")
            .field("public_key_b64", &self.public_key_b64)
            .finish()
    }
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

/// The TXT record to publish for `key`: `v=DKIM1; k=ed25519|rsa; p=…`.
pub fn record(key: &GeneratedKey) -> String {
    record_for(key.algorithm, &key.public_key_b64)
}

/// The TXT record for a public key given as its `p=` value.
pub fn record_for(algorithm: Algorithm, public_key_b64: &str) -> String {
    format!("v=DKIM1; k={algorithm}; p={public_key_b64}")
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

/// A row of `dkim_keys`: the one key of a sending domain.
#[derive(Clone, PartialEq, Eq)]
pub struct DkimKeyRow {
    /// Lowercase, without a trailing dot.
    pub domain: String,
    pub selector: String,
    pub algorithm: Algorithm,
    /// PKCS#8 DER.
    pub private_key: Vec<u8>,
    /// The `p=` value, base64.
    pub public_key_b64: String,
    /// ms since the epoch.
    pub created_at: i64,
}

impl fmt::Debug for DkimKeyRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DkimKeyRow")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("algorithm", &self.algorithm)
            .field("private_key", &"<redacted>")
            .field("public_key_b64", &self.public_key_b64)
            .field("created_at", &self.created_at)
            .finish()
    }
}

impl DkimKeyRow {
    /// The TXT record to publish at [`DkimKeyRow::record_name`].
    pub fn record(&self) -> String {
        record_for(self.algorithm, &self.public_key_b64)
    }

    /// `<selector>._domainkey.<domain>`.
    pub fn record_name(&self) -> String {
        format!("{}._domainkey.{}", self.selector, self.domain)
    }

    /// The key in the form the composer signs with.
    pub fn signing_key(&self) -> DkimKey {
        DkimKey {
            domain: self.domain.clone(),
            selector: self.selector.clone(),
            algorithm: self.algorithm.as_str().to_string(),
            private_key: self.private_key.clone(),
        }
    }
}

/// Lowercase, without a trailing dot: the form keys are stored under.
pub fn normalize_domain(domain: &str) -> String {
    domain.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The stored key of `domain`, if any.
pub fn find(conn: &Db<'_>, domain: &str) -> Result<Option<DkimKeyRow>, StoreError> {
    let row = conn
        .query_row(
            "SELECT domain, selector, algorithm, private_key, public_key, created_at
               FROM dkim_keys WHERE domain = ?1",
            [normalize_domain(domain)],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            },
        )
        .optional()?;
    row.map(
        |(domain, selector, algorithm, private_key, public_key_b64, created_at)| {
            Ok(DkimKeyRow {
                algorithm: algorithm
                    .parse()
                    .map_err(|e| StoreError::Corrupt(format!("dkim_keys {domain}: {e}")))?,
                domain,
                selector,
                private_key,
                public_key_b64,
                created_at,
            })
        },
    )
    .transpose()
}

/// Stores `key` for `domain` unless the domain has a key already; returns
/// the domain's key either way (the existing one wins).
pub fn insert_if_absent(
    conn: &Db<'_>,
    domain: &str,
    selector: &str,
    key: &GeneratedKey,
) -> Result<DkimKeyRow, StoreError> {
    let domain = normalize_domain(domain);
    conn.execute(
        "INSERT INTO dkim_keys (domain, selector, algorithm, private_key, public_key, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (domain) DO NOTHING",
        params![
            domain,
            selector,
            key.algorithm.as_str(),
            key.private_key_pkcs8_der,
            key.public_key_b64,
            now_ms()
        ],
    )?;
    find(conn, &domain)?.ok_or(StoreError::NotFound)
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

    fn db() -> rusqlite::Connection {
        crate::store::memory_db()
    }

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
        let conn_conn = db();
        let conn = &crate::store::Db::for_test(&conn_conn);
        assert_eq!(find(conn, "acme.com").expect("find"), None);
        let first =
            ensure_key(conn, "Acme.COM.", "backchannel", Algorithm::Ed25519).expect("first key");
        assert_eq!(first.domain, "acme.com");
        assert_eq!(first.selector, "backchannel");
        assert_eq!(first.algorithm, Algorithm::Ed25519);
        let again = ensure_key(conn, "acme.com", "other", Algorithm::Rsa2048).expect("second call");
        assert_eq!(again, first, "the existing key is kept");
        let count: i64 = conn
            .query_row("SELECT COUNT(*) FROM dkim_keys", [], |r| r.get(0))
            .expect("count");
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
