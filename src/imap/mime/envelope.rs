//! ENVELOPE from a header block, and the raw header fields THREAD reads.

use imap_types::envelope::Envelope;

use super::address::{MailAddr, imap_addresses, parse_addresses};
use super::header::Fields;
use super::wire::{for_humans, nolf, nstring};

pub(super) fn envelope_of_header(header: &[u8]) -> Envelope<'static> {
    const DATE: usize = 0;
    const SUBJECT: usize = 1;
    const IN_REPLY_TO: usize = 2;
    const MESSAGE_ID: usize = 3;
    const FROM: usize = 0;
    const SENDER: usize = 1;
    const REPLY_TO: usize = 2;
    const TO: usize = 3;
    const CC: usize = 4;
    const BCC: usize = 5;
    enum Slot {
        Text(usize),
        Addresses(usize),
    }
    let mut texts: [Option<&[u8]>; 4] = [None; 4];
    let mut addrs: [Vec<MailAddr>; 6] = Default::default();
    for field in Fields::new(header) {
        let name = field.name;
        let slot = match name.len() {
            2 if name.eq_ignore_ascii_case(b"to") => Slot::Addresses(TO),
            2 if name.eq_ignore_ascii_case(b"cc") => Slot::Addresses(CC),
            3 if name.eq_ignore_ascii_case(b"bcc") => Slot::Addresses(BCC),
            4 if name.eq_ignore_ascii_case(b"date") => Slot::Text(DATE),
            4 if name.eq_ignore_ascii_case(b"from") => Slot::Addresses(FROM),
            6 if name.eq_ignore_ascii_case(b"sender") => Slot::Addresses(SENDER),
            7 if name.eq_ignore_ascii_case(b"subject") => Slot::Text(SUBJECT),
            8 if name.eq_ignore_ascii_case(b"reply-to") => Slot::Addresses(REPLY_TO),
            10 if name.eq_ignore_ascii_case(b"message-id") => Slot::Text(MESSAGE_ID),
            11 if name.eq_ignore_ascii_case(b"in-reply-to") => Slot::Text(IN_REPLY_TO),
            _ => continue,
        };
        let value = field.value.unwrap_or(b"");
        match slot {
            // A repeated text field replaces the earlier one; repeated address fields add up
            // (both as Dovecot does).
            Slot::Text(i) => texts[i] = Some(value),
            Slot::Addresses(i) => addrs[i].extend(parse_addresses(value)),
        }
    }
    let [from, sender, reply_to, to, cc, bcc] = addrs;
    let list = |a: &[MailAddr]| imap_addresses(a);
    let from = list(&from);
    let or_from = |a: &[MailAddr]| if a.is_empty() { from.clone() } else { list(a) };
    Envelope {
        date: nstring(texts[DATE].map(nolf)),
        subject: nstring(texts[SUBJECT].map(for_humans)),
        sender: or_from(&sender),
        reply_to: or_from(&reply_to),
        to: list(&to),
        cc: list(&cc),
        bcc: list(&bcc),
        in_reply_to: nstring(texts[IN_REPLY_TO].map(nolf)),
        message_id: nstring(texts[MESSAGE_ID].map(nolf)),
        from,
    }
}

/// The header fields THREAD needs (first occurrence of each, raw value).
#[derive(Debug, Default)]
pub(crate) struct ThreadHeaders<'a> {
    pub(crate) message_id: Option<&'a [u8]>,
    pub(crate) in_reply_to: Option<&'a [u8]>,
    pub(crate) references: Option<&'a [u8]>,
    pub(crate) subject: Option<&'a [u8]>,
    pub(crate) date: Option<&'a [u8]>,
}

pub(crate) fn thread_headers(raw: &[u8]) -> ThreadHeaders<'_> {
    let mut h = ThreadHeaders::default();
    for field in Fields::new(raw) {
        let slot = if field.name.eq_ignore_ascii_case(b"message-id") {
            &mut h.message_id
        } else if field.name.eq_ignore_ascii_case(b"in-reply-to") {
            &mut h.in_reply_to
        } else if field.name.eq_ignore_ascii_case(b"references") {
            &mut h.references
        } else if field.name.eq_ignore_ascii_case(b"subject") {
            &mut h.subject
        } else if field.name.eq_ignore_ascii_case(b"date") {
            &mut h.date
        } else {
            continue;
        };
        if slot.is_none() {
            *slot = Some(field.value.unwrap_or(b""));
        }
    }
    h
}
