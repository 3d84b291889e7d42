//! DKIM keys as data: the key types, a generated pair, a stored row and
//! the key the composer signs with (generation and signing are in
//! `senders::dkim` and `outbound::compose`).

use std::fmt;
use std::str::FromStr;

/// The key types the gateway generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DkimAlgorithm {
    Ed25519,
    /// RSA with a 2048-bit modulus; stored and published as `rsa`.
    Rsa2048,
}

impl DkimAlgorithm {
    /// The `dkim_keys.algorithm` value and the record's `k=` tag.
    pub fn as_str(self) -> &'static str {
        match self {
            DkimAlgorithm::Ed25519 => "ed25519",
            DkimAlgorithm::Rsa2048 => "rsa",
        }
    }
}

impl fmt::Display for DkimAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DkimAlgorithm {
    type Err = String;

    /// `ed25519` or `rsa` (as stored); `rsa2048` is accepted too.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "ed25519" => Ok(DkimAlgorithm::Ed25519),
            "rsa" | "rsa2048" => Ok(DkimAlgorithm::Rsa2048),
            other => Err(format!("unknown DKIM key algorithm {other:?}")),
        }
    }
}

/// A freshly generated key pair.
#[derive(Clone, PartialEq, Eq)]
pub struct GeneratedKey {
    pub algorithm: DkimAlgorithm,
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

/// The TXT record to publish for `key`: `v=DKIM1; k=ed25519|rsa; p=…`.
pub fn record(key: &GeneratedKey) -> String {
    record_for(key.algorithm, &key.public_key_b64)
}

/// The TXT record for a public key given as its `p=` value.
pub fn record_for(algorithm: DkimAlgorithm, public_key_b64: &str) -> String {
    format!("v=DKIM1; k={algorithm}; p={public_key_b64}")
}

/// A row of `dkim_keys`: the one key of a sending domain.
#[derive(Clone, PartialEq, Eq)]
pub struct DkimKeyRow {
    /// Lowercase, without a trailing dot.
    pub domain: String,
    pub selector: String,
    pub algorithm: DkimAlgorithm,
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

/// A DKIM key for the sender's domain, as the composer signs with it.
#[derive(Debug, Clone)]
pub struct DkimKey {
    pub domain: String,
    pub selector: String,
    /// `ed25519` or `rsa`.
    pub algorithm: String,
    /// PKCS#8 DER.
    pub private_key: Vec<u8>,
}

/// Lowercase, without a trailing dot: the form keys are stored under.
pub fn normalize_domain(domain: &str) -> String {
    domain.trim().trim_end_matches('.').to_ascii_lowercase()
}
