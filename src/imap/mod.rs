//! IMAP: the agent view served over IMAP4rev1 (SPEC §9).
//!
//! `mime` and `thread` are pure (bytes in, imap-types values out, no I/O): the message-structure
//! layer the server calls for ENVELOPE, BODY/BODYSTRUCTURE, BODY[section] and THREAD.

pub mod mime;
pub mod thread;
