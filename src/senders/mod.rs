//! Sender addresses (SPEC §6): the DKIM key of each sending domain and the
//! DNS health of a sender (SPF, DKIM, DMARC), checked through the
//! configured resolver, SPF evaluated by mail-auth (`dns`); `service` adds,
//! verifies, probes and re-checks them, `edit` changes their name, reply
//! mode and signature.

pub mod dkim;
pub mod dns;
pub mod edit;
pub mod service;
