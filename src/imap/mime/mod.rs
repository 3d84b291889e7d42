//! Message structure for IMAP FETCH: ENVELOPE, BODY/BODYSTRUCTURE and `BODY[section]` from the
//! stored raw bytes of a message. Pure: bytes in, imap-types values out, no I/O, no panics.
//!
//! The answers follow Dovecot (2.3), the reference IMAP server clients are tested against, down
//! to its treatment of broken input: header values are returned raw (unfolded, encoded-words
//! left alone), sizes are counted as if every bare LF were CRLF (which is also how `section`
//! returns the bytes), a boundary is any line starting with `--` and the longest known boundary
//! (RFC 2046 lets a boundary line carry trailing garbage), the newline before a boundary belongs
//! to the boundary, and a part without `Content-Type` below `multipart/digest` is a message.
//!
//! The MIME parse is one forward pass over the bytes that records part offsets and sizes; the
//! Content-* fields of a part are parsed only when its BODYSTRUCTURE is written. `envelope`
//! reads the header block only.
//!
//! One file per role: `header` splits a header block into fields and lines, `rfc822` reads
//! RFC 822 tokens, `address` and `envelope` write ENVELOPE, `content` reads a part's Content-*
//! fields, `tree` finds the parts and their sizes, `bodystructure` and `section` answer from that
//! tree, `wire` turns bytes into IMAP strings, and `decode` reads header values as text and
//! dates for THREAD.
//!
//! Decoding is mail-parser's, as for ingest and JMAP: RFC 2047 encoded-words, their Q and B
//! encodings, charsets, the calendar. What stays by hand is what must match Dovecot octet for
//! octet and where mail-parser reads the shared corpus differently (each file says how): the
//! header split, the part tree and its sizes, addresses and Content-* fields as written, which
//! dates and message ids THREAD accepts, and how ENVELOPE and BODYSTRUCTURE are written.

mod address;
mod bodystructure;
mod content;
mod decode;
mod envelope;
mod header;
mod rfc822;
mod section;
mod tree;
mod wire;

#[cfg(test)]
mod tests;

use std::num::NonZeroU32;

use imap_types::body::BodyStructure;
use imap_types::envelope::Envelope;
use imap_types::fetch::Section;

pub(crate) use decode::next_message_id;
pub use decode::{decode_header, parse_date};
pub(crate) use envelope::thread_headers;

use envelope::envelope_of_header;
use tree::Tree;
use wire::crlf;

/// RFC 3501 ENVELOPE of a message (its top-level header block).
#[must_use]
pub fn envelope(raw: &[u8]) -> Envelope<'static> {
    // The field iterator stops at the blank line: the body is never looked at.
    envelope_of_header(raw)
}

/// BODYSTRUCTURE (`extended`) or BODY (not `extended`) of a message.
#[must_use]
pub fn body_structure(raw: &[u8], extended: bool) -> BodyStructure<'static> {
    let tree = Tree::parse(raw);
    tree.structure(0, extended)
}

/// The bytes of `BODY[<section>]` (`None`: the whole message), CRLF line ends, before any
/// `<partial>`; `None` when the section names a part the message does not have, or HEADER/TEXT
/// of a part that holds no message. (Dovecot answers those with an empty string, `BODY[9] ""`,
/// and keeps the origin of a partial fetch, `BODY[9]<0> ""`.)
#[must_use]
pub fn section(raw: &[u8], section: Option<&Section<'_>>) -> Option<Vec<u8>> {
    let Some(section) = section else {
        return Some(crlf(raw).into_owned());
    };
    let tree = Tree::parse(raw);
    tree.section(section)
}

/// The `<start.len>` window of a fetched section (RFC 3501: empty when `start` is past the end).
#[must_use]
pub fn partial(bytes: &[u8], start: u32, len: Option<NonZeroU32>) -> &[u8] {
    let start = usize::try_from(start)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    let rest = &bytes[start..];
    match len {
        Some(len) => {
            let len = usize::try_from(len.get())
                .unwrap_or(usize::MAX)
                .min(rest.len());
            &rest[..len]
        }
        None => rest,
    }
}
