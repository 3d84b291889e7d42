//! What mail-parser is handed. mail-parser decodes RFC 2047 encoded-words
//! in a way that costs time quadratic in a header field's length when the
//! field is a run of unterminated words (`=?ab?q?a` repeated: a 256 KiB
//! Subject took about 9 s to parse). Every reader of stored or received
//! mail parses a copy whose header fields are bounded instead: a field is
//! cut at [`MAX_FIELD`] bytes (the gateway keeps no more of a header value
//! than that anyway) and the header block at [`MAX_HEADER`] bytes. The raw
//! bytes stay the source of truth; only the parser's copy is cut. Pure.

use std::borrow::Cow;

/// Bytes of one header field (folded lines included) the parser sees.
pub const MAX_FIELD: usize = 16 * 1024;
/// Bytes of the message's header block the parser sees.
pub const MAX_HEADER: usize = 512 * 1024;
/// Fields whose values are message identifiers: longer, since a long
/// thread's References matter for threading, and parsed without
/// encoded-words.
const ID_FIELDS: [&str; 3] = ["references", "in-reply-to", "message-id"];
const MAX_ID_FIELD: usize = 256 * 1024;

/// The end of the header block: the index just past the empty line (or the
/// whole message when there is none).
fn header_end(raw: &[u8]) -> usize {
    let mut i = 0;
    while i < raw.len() {
        let line_end = match memchr::memchr(b'\n', &raw[i..]) {
            Some(p) => i + p + 1,
            None => return raw.len(),
        };
        let line = &raw[i..line_end];
        if line == b"\n" || line == b"\r\n" {
            return line_end;
        }
        i = line_end;
    }
    raw.len()
}

/// The header fields of `head`, each with its continuation lines, as
/// byte ranges.
fn fields(head: &[u8]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < head.len() {
        let end = memchr::memchr(b'\n', &head[i..]).map_or(head.len(), |p| i + p + 1);
        let continues = matches!(head[i], b' ' | b'\t');
        match out.last_mut() {
            Some(last) if continues => last.1 = end,
            _ => out.push((i, end)),
        }
        i = end;
    }
    out
}

fn limit_of(field: &[u8]) -> usize {
    let name_end = memchr::memchr(b':', field).unwrap_or(0).min(64);
    let name = String::from_utf8_lossy(&field[..name_end])
        .trim()
        .to_ascii_lowercase();
    if ID_FIELDS.contains(&name.as_str()) {
        MAX_ID_FIELD
    } else {
        MAX_FIELD
    }
}

/// `raw` with its header fields bounded for parsing; borrowed unchanged
/// when nothing is over a limit (nearly all mail).
pub fn for_parser(raw: &[u8]) -> Cow<'_, [u8]> {
    let end = header_end(raw);
    let (head, body) = raw.split_at(end);
    let ranges = fields(head);
    let over =
        head.len() > MAX_HEADER || ranges.iter().any(|&(a, b)| b - a > limit_of(&head[a..b]));
    if !over {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(MAX_HEADER.min(head.len()) + body.len());
    for (a, b) in ranges {
        let field = &head[a..b];
        // The empty line ending the block is kept whatever the budget.
        if field == b"\r\n" || field == b"\n" {
            out.extend_from_slice(field);
            continue;
        }
        let limit = limit_of(field);
        let kept = if field.len() > limit {
            &field[..limit]
        } else {
            field
        };
        if out.len() + kept.len() > MAX_HEADER {
            continue;
        }
        out.extend_from_slice(kept);
        if !kept.ends_with(b"\n") {
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(body);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_mail_is_borrowed() {
        let raw = b"From: a@b.example\r\nSubject: hi\r\n there\r\n\r\nbody\r\n";
        assert!(matches!(for_parser(raw), Cow::Borrowed(_)));
        assert!(matches!(for_parser(b""), Cow::Borrowed(_)));
        assert!(matches!(for_parser(b"no header end"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_long_field_is_cut_and_the_rest_kept() {
        let mut raw = b"From: a@b.example\r\nSubject: ".to_vec();
        raw.extend(std::iter::repeat_n(b'x', 100_000));
        raw.extend_from_slice(b"\r\n folded\r\nTo: c@d.example\r\n\r\nbody\r\n");
        let out = for_parser(&raw);
        let text = String::from_utf8_lossy(&out);
        assert!(out.len() < 20_000, "{}", out.len());
        assert!(text.starts_with("From: a@b.example\r\nSubject: xxx"));
        assert!(
            text.ends_with("\r\nTo: c@d.example\r\n\r\nbody\r\n"),
            "{text:.100}"
        );
        let parsed = mail_parser::MessageParser::default()
            .parse(out.as_ref())
            .expect("parses");
        assert_eq!(
            parsed.subject().map(str::len),
            Some(MAX_FIELD - "Subject: ".len())
        );
        assert_eq!(parsed.body_text(0).as_deref(), Some("body\r\n"));
    }

    #[test]
    fn references_keep_more() {
        let mut raw = b"References:".to_vec();
        for i in 0..2000 {
            raw.extend_from_slice(format!(" <{i}@x.example>\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\nbody");
        assert!(raw.len() > MAX_FIELD);
        assert!(matches!(for_parser(&raw), Cow::Borrowed(_)));
    }

    #[test]
    fn the_header_block_is_bounded() {
        let mut raw = Vec::new();
        for i in 0..100 {
            raw.extend_from_slice(format!("X-{i}: ").as_bytes());
            raw.extend(std::iter::repeat_n(b'y', 10_000));
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(b"\r\nbody");
        let out = for_parser(&raw);
        assert!(out.len() <= MAX_HEADER + 6, "{}", out.len());
        assert!(out.ends_with(b"\r\n\r\nbody"));
    }
}
