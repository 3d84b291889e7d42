//! `BODY[section]`: which bytes of the raw message a section is (Dovecot's imap-msgpart),
//! answered from the MIME tree as a raw byte range with CRLF line ends, never re-encoded.

use imap_types::fetch::{Part, Section};

use super::header::{is_blank_line, is_lwsp, line_at};
use super::tree::{MULTIPART, RFC822, Tree};
use super::wire::crlf;

impl Tree<'_> {
    /// The part a section's part number names (Dovecot's `imap_msgpart_find`): in a multipart
    /// the number picks a child; anything else only has part 1, itself, and it must end the path
    /// unless it is a message/rfc822 part, whose further numbers address the message it holds.
    fn find_part(&self, part: &Part) -> Option<usize> {
        let path = part.0.as_ref();
        let mut idx = 0usize;
        for (i, n) in path.iter().enumerate() {
            let n = usize::try_from(n.get()).ok()?;
            let more = i + 1 < path.len();
            let node = &self.nodes[idx];
            if node.flags & MULTIPART != 0 {
                idx = *node.children.get(n.checked_sub(1)?)?;
            } else if n != 1 || (more && node.flags & RFC822 == 0) {
                return None;
            }
            if more && self.nodes[idx].flags & RFC822 != 0 {
                idx = *self.nodes[idx].children.first()?;
            }
        }
        Some(idx)
    }

    pub(super) fn section(&self, section: &Section<'_>) -> Option<Vec<u8>> {
        let header_of = |idx: usize| self.header_bytes(idx);
        let body_of = |idx: usize| self.body_bytes(idx);
        // HEADER/TEXT of a part address the message it holds.
        let message_of = |part: Option<&Part>| -> Option<usize> {
            let Some(part) = part else { return Some(0) };
            let node = &self.nodes[self.find_part(part)?];
            if node.flags & RFC822 != 0 {
                node.children.first().copied()
            } else {
                None
            }
        };
        let bytes: Vec<u8> = match section {
            Section::Part(part) => {
                let idx = self.find_part(part)?;
                crlf(body_of(idx)).into_owned()
            }
            Section::Header(part) => crlf(header_of(message_of(part.as_ref())?)).into_owned(),
            Section::Text(part) => crlf(body_of(message_of(part.as_ref())?)).into_owned(),
            Section::Mime(part) => {
                let idx = self.find_part(part)?;
                crlf(header_of(idx)).into_owned()
            }
            Section::HeaderFields(part, names) | Section::HeaderFieldsNot(part, names) => {
                let keep = matches!(section, Section::HeaderFields(..));
                let names: Vec<&[u8]> = names.as_ref().iter().map(|n| n.as_ref()).collect();
                match part {
                    None => header_fields(header_of(0), &names, keep, true),
                    // Dovecot reads an encapsulated message's fields from where its header
                    // starts up to the first blank line, wherever that is.
                    Some(part) => {
                        let m = message_of(Some(part))?;
                        header_fields(&self.raw[self.nodes[m].pos..], &names, keep, false)
                    }
                }
            }
        };
        Some(bytes)
    }
}

/// HEADER.FIELDS (`keep`) / HEADER.FIELDS.NOT: the matching (or other) fields of the header
/// at the start of `data`, as written, then the blank line when the header has one; the
/// message's own HEADER.FIELDS (`top`) always ends with it (all as Dovecot answers).
fn header_fields(data: &[u8], names: &[&[u8]], keep: bool, top: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() && !is_blank_line(data, pos) {
        let first = line_at(data, pos);
        let mut last = first;
        while last.next < data.len() && is_lwsp(data[last.next]) {
            last = line_at(data, last.next);
        }
        let text = &data[first.start..first.end];
        let name_end = text.iter().position(|&b| b == b':').unwrap_or(text.len());
        let mut name = &text[..name_end];
        while let [rest @ .., b' ' | b'\t'] = name {
            name = rest;
        }
        if names.iter().any(|n| n.eq_ignore_ascii_case(name)) == keep {
            out.extend_from_slice(&crlf(&data[first.start..last.next]));
        }
        pos = last.next;
    }
    if (top && keep) || pos < data.len() {
        out.extend_from_slice(b"\r\n");
    }
    out
}
