//! Sender addresses (SPEC §6): the DKIM key of each sending domain and the
//! DNS health of a sender (SPF, DKIM, DMARC), checked through the
//! configured resolver.

pub mod dkim;
pub mod dns;
pub mod spf;
