//! Network set-up shared by every door and worker, once: the DNS resolvers
//! built from `[dns]` ([`dns`]) and the TLS server configuration loaded
//! from PEM files ([`tls`]), and the accept loop of the SMTP and IMAP
//! listeners ([`accept`]). Nothing here decides anything about mail; it
//! only builds the clients and acceptors the other modules use.

pub mod accept;
pub mod dns;
pub mod tls;
