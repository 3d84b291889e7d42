//! Bytes as IMAP sends them: CRLF line ends, strings for arbitrary octets (quoted or literal,
//! NUL replaced) and header values on one line, as Dovecot writes them.

use std::borrow::Cow;

use imap_types::core::{IString, Literal, NString, Quoted};

/// Positions of the LFs in `data` that have no CR before them.
fn bare_lfs(data: &[u8]) -> impl Iterator<Item = usize> + '_ {
    memchr::memchr_iter(b'\n', data).filter(move |&i| i == 0 || data[i - 1] != b'\r')
}

/// Bare LF → CRLF, borrowed when there is none (IMAP sends messages with CRLF line ends).
pub(super) fn crlf(data: &[u8]) -> Cow<'_, [u8]> {
    let bare = bare_lfs(data).count();
    if bare == 0 {
        return Cow::Borrowed(data);
    }
    let mut out = Vec::with_capacity(data.len() + bare);
    let mut last = 0;
    for i in bare_lfs(data) {
        out.extend_from_slice(&data[last..i]);
        out.extend_from_slice(b"\r\n");
        last = i + 1;
    }
    out.extend_from_slice(&data[last..]);
    Cow::Owned(out)
}

/// An IMAP string for arbitrary bytes: quoted when it can be, else a literal. NUL (never allowed
/// in IMAP strings) becomes U+FFFD, as Dovecot sends header values.
pub(super) fn istring(bytes: Cow<'_, [u8]>) -> IString<'static> {
    if let Ok(q) = std::str::from_utf8(&bytes)
        && let Ok(q) = Quoted::try_from(q.to_owned())
    {
        return IString::Quoted(q);
    }
    let owned = if bytes.contains(&0) {
        let mut out = Vec::with_capacity(bytes.len() + 8);
        for &b in bytes.iter() {
            if b == 0 {
                out.extend_from_slice("\u{FFFD}".as_bytes());
            } else {
                out.push(b);
            }
        }
        out
    } else {
        bytes.into_owned()
    };
    match Literal::try_from(owned) {
        Ok(l) => IString::Literal(l),
        // Unreachable once NULs are gone; an empty quoted string is the safe answer anyway.
        Err(_) => IString::Quoted(Quoted::unvalidated("")),
    }
}

pub(super) fn nstring(bytes: Option<Cow<'_, [u8]>>) -> NString<'static> {
    NString(bytes.map(istring))
}

pub(super) fn istr(s: &'static str) -> IString<'static> {
    IString::Quoted(Quoted::unvalidated(s))
}

/// A header value on one line (Dovecot's `nolf`): CR and LF go, and a line break not followed
/// by whitespace becomes a space so the joined lines stay apart.
pub(super) fn nolf(value: &[u8]) -> Cow<'_, [u8]> {
    if !value.iter().any(|&b| b == b'\r' || b == b'\n') {
        return Cow::Borrowed(value);
    }
    let mut out = Vec::with_capacity(value.len());
    for (i, &b) in value.iter().enumerate() {
        if b != b'\r' && b != b'\n' {
            out.push(b);
        } else if !matches!(value.get(i + 1), None | Some(b' ' | b'\t' | b'\r' | b'\n')) {
            out.push(b' ');
        }
    }
    Cow::Owned(out)
}

/// A value for people (subject, display name): runs of whitespace and line breaks become one
/// space, leading and trailing whitespace goes.
pub(super) fn for_humans(value: &[u8]) -> Cow<'_, [u8]> {
    let ws = |b: u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let clean = value.first().is_none_or(|&b| !ws(b))
        && value.last().is_none_or(|&b| !ws(b))
        && !value
            .windows(2)
            .any(|w| matches!(w[0], b'\t' | b'\r' | b'\n') || (ws(w[0]) && ws(w[1])))
        && !value.iter().any(|&b| matches!(b, b'\t' | b'\r' | b'\n'));
    if clean {
        return Cow::Borrowed(value);
    }
    let mut out = Vec::with_capacity(value.len());
    let mut pending_space = false;
    for &b in value {
        if ws(b) {
            pending_space = !out.is_empty();
        } else {
            if pending_space {
                out.push(b' ');
                pending_space = false;
            }
            out.push(b);
        }
    }
    Cow::Owned(out)
}
