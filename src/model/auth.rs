//! The authentication verdicts of an inbound message (SPF, DKIM, DMARC,
//! ARC; computed by `ingest::auth`) and what they come to for the trust
//! boundary: whether the author is verified (SPEC §10).

use serde::{Deserialize, Serialize};

/// Result values, as in RFC 8601 `Authentication-Results`.
pub const PASS: &str = "pass";
pub const FAIL: &str = "fail";
pub const SOFTFAIL: &str = "softfail";
pub const NEUTRAL: &str = "neutral";
pub const NONE: &str = "none";
pub const TEMPERROR: &str = "temperror";
pub const PERMERROR: &str = "permerror";

/// The authentication verdicts for one message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuthResults {
    /// Each of `spf`, `dkim`, `dmarc`, `arc` is one of `pass`, `fail`,
    /// `softfail`, `neutral`, `none`, `temperror`, `permerror`.
    pub spf: String,
    pub dkim: String,
    pub dmarc: String,
    pub arc: String,
    /// Domain of the RFC5322.From, lowercased, if any.
    pub from_domain: Option<String>,
    /// Short human-readable details (e.g. "spf=fail smtp.mailfrom=x; dkim=pass header.d=y").
    pub detail: String,
    /// The one author's domain vouches for this message (SPEC §10): DMARC
    /// passes, or the From domain publishes no DMARC policy and SPF or DKIM
    /// passes for a domain aligned with it (same organisational domain by
    /// the Public Suffix List). Never for a message with more than one From
    /// author or a malformed one. Absent in rows stored before it existed:
    /// those count through [`AuthResults::verified`]'s DMARC pass alone.
    #[serde(default)]
    pub aligned_pass: bool,
}

impl AuthResults {
    /// True when the From domain publishes DMARC and the message failed it.
    pub fn dmarc_failed(&self) -> bool {
        self.dmarc == FAIL
    }

    /// Whether the author is authenticated: anything but an aligned pass
    /// (fail, none, temperror, permerror, several authors) is not.
    pub fn verified(&self) -> bool {
        self.aligned_pass || self.dmarc == PASS
    }

    /// The same verdict for every check (a timeout, an internal error).
    pub fn all(value: &str, from_domain: Option<String>, detail: String) -> AuthResults {
        AuthResults {
            spf: value.to_string(),
            dkim: value.to_string(),
            dmarc: value.to_string(),
            arc: value.to_string(),
            from_domain,
            detail,
            aligned_pass: false,
        }
    }
}
