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

use std::borrow::Cow;
use std::num::NonZeroU32;

use imap_types::body::{
    BasicFields, Body, BodyStructure, Disposition, Language, Location, MultiPartExtensionData,
    SinglePartExtensionData, SpecificFields,
};
use imap_types::core::{IString, Literal, NString, Quoted, Vec1};
use imap_types::envelope::{Address, Envelope};
use imap_types::fetch::{Part, Section};

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

// ---------------------------------------------------------------------------------------------
// Bytes

fn is_lwsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn find_lf(data: &[u8], from: usize) -> Option<usize> {
    memchr::memchr(b'\n', data.get(from..)?).map(|i| from + i)
}

/// Positions of the LFs in `data` that have no CR before them.
fn bare_lfs(data: &[u8]) -> impl Iterator<Item = usize> + '_ {
    memchr::memchr_iter(b'\n', data).filter(move |&i| i == 0 || data[i - 1] != b'\r')
}

/// Bare LF → CRLF, borrowed when there is none (IMAP sends messages with CRLF line ends).
fn crlf(data: &[u8]) -> Cow<'_, [u8]> {
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
fn istring(bytes: Cow<'_, [u8]>) -> IString<'static> {
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

fn nstring(bytes: Option<Cow<'_, [u8]>>) -> NString<'static> {
    NString(bytes.map(istring))
}

fn istr(s: &'static str) -> IString<'static> {
    IString::Quoted(Quoted::unvalidated(s))
}

/// A header value on one line (Dovecot's `nolf`): CR and LF go, and a line break not followed
/// by whitespace becomes a space so the joined lines stay apart.
fn nolf(value: &[u8]) -> Cow<'_, [u8]> {
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
fn for_humans(value: &[u8]) -> Cow<'_, [u8]> {
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

// ---------------------------------------------------------------------------------------------
// Header fields

/// One header field. `value` runs from after the colon (initial blanks skipped) to the end of
/// its last continuation line, inner line breaks included; `None` for a line without a colon.
#[derive(Debug, Clone, Copy)]
struct Field<'a> {
    name: &'a [u8],
    value: Option<&'a [u8]>,
}

/// A physical line: `[start, end)` without its line break, `next` after it.
#[derive(Debug, Clone, Copy)]
struct Line {
    start: usize,
    end: usize,
    next: usize,
    /// Bytes of the line break: 0 (end of data), 1 (LF) or 2 (CRLF).
    newline: usize,
}

fn line_at(data: &[u8], start: usize) -> Line {
    match find_lf(data, start) {
        Some(lf) => {
            let crlf = lf > start && data[lf - 1] == b'\r';
            Line {
                start,
                end: if crlf { lf - 1 } else { lf },
                next: lf + 1,
                newline: if crlf { 2 } else { 1 },
            }
        }
        None => Line {
            start,
            end: data.len(),
            next: data.len(),
            newline: 0,
        },
    }
}

/// Whether the line at `start` ends a header block (an empty line).
fn is_blank_line(data: &[u8], start: usize) -> bool {
    match data.get(start) {
        Some(b'\n') => true,
        Some(b'\r') => data.get(start + 1) == Some(&b'\n'),
        _ => false,
    }
}

/// The fields of a header block (which ends at its blank line or at the end of `data`).
struct Fields<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    fn new(data: &'a [u8]) -> Self {
        Fields { data, pos: 0 }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Field<'a>;

    fn next(&mut self) -> Option<Field<'a>> {
        let data = self.data;
        if self.pos >= data.len() || is_blank_line(data, self.pos) {
            return None;
        }
        let first = line_at(data, self.pos);
        let mut last = first;
        while last.next < data.len() && is_lwsp(data[last.next]) {
            last = line_at(data, last.next);
        }
        self.pos = last.next;
        let text = &data[first.start..first.end];
        let Some(colon) = text.iter().position(|&b| b == b':') else {
            return Some(Field {
                name: text,
                value: None,
            });
        };
        let mut name_end = colon;
        while name_end > 0 && is_lwsp(text[name_end - 1]) {
            name_end -= 1;
        }
        let line_value = &text[colon + 1..];
        let mut skip = line_value.iter().take_while(|&&b| is_lwsp(b)).count();
        if skip == line_value.len() && skip > 0 {
            // A value of only blanks keeps all but the first one (Dovecot).
            skip = 1;
        }
        let value_start = first.start + colon + 1 + skip;
        Some(Field {
            name: &text[..name_end],
            value: Some(&data[value_start..last.end.max(value_start)]),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// RFC 822 tokens (Dovecot's rfc822-parser rules)

fn is_atext(b: u8) -> bool {
    b >= 0x80
        || b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'/'
                | b'='
                | b'?'
                | b'^'
                | b'_'
                | b'`'
                | b'{'
                | b'|'
                | b'}'
                | b'~'
        )
}

/// MIME token characters: atext without the tspecials `/ ? =`, plus `.`.
fn is_token_char(b: u8) -> bool {
    (is_atext(b) && !matches!(b, b'/' | b'?' | b'=')) || b == b'.'
}

struct Rfc822<'a> {
    data: &'a [u8],
    pos: usize,
    last_comment: Option<Vec<u8>>,
    nul_replacement: bool,
}

impl<'a> Rfc822<'a> {
    fn new(data: &'a [u8]) -> Self {
        Rfc822 {
            data,
            pos: 0,
            last_comment: None,
            nul_replacement: false,
        }
    }

    fn with_comments(data: &'a [u8]) -> Self {
        Rfc822 {
            data,
            pos: 0,
            last_comment: Some(Vec::new()),
            nul_replacement: true,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.data.get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// 1: more data, 0: end, -1: broken comment.
    fn more(&self) -> i32 {
        i32::from(!self.at_end())
    }

    /// NUL inside comments, quoted strings and domain literals (addresses only).
    fn nul(&self, out: &mut Vec<u8>) {
        if self.nul_replacement {
            out.extend_from_slice("\u{FFFD}".as_bytes());
        } else {
            out.push(0);
        }
    }

    fn skip_comment(&mut self) -> i32 {
        let mut level = 1;
        let mut comment = self.last_comment.take();
        if let Some(c) = &mut comment {
            c.clear();
        }
        self.pos += 1;
        let mut start = self.pos;
        let mut ret = -1;
        while self.pos < self.data.len() {
            match self.data[self.pos] {
                0 => {
                    if let Some(c) = &mut comment
                        && self.nul_replacement
                    {
                        c.extend_from_slice(&self.data[start..self.pos]);
                        self.nul(c);
                        start = self.pos + 1;
                    }
                }
                b'(' => level += 1,
                b')' => {
                    level -= 1;
                    if level == 0 {
                        if let Some(c) = &mut comment {
                            c.extend_from_slice(&self.data[start..self.pos]);
                        }
                        self.pos += 1;
                        ret = self.more();
                        break;
                    }
                }
                b'\n' => {
                    if let Some(c) = &mut comment {
                        let mut end = self.pos;
                        if end > start && self.data[end - 1] == b'\r' {
                            end -= 1;
                        }
                        c.extend_from_slice(&self.data[start..end]);
                        start = self.pos + 1;
                    }
                }
                b'\\' => {
                    self.pos += 1;
                    if self.at_end() {
                        break;
                    }
                    if matches!(self.data[self.pos], b'\r' | b'\n' | 0) {
                        self.pos -= 1;
                    } else {
                        if let Some(c) = &mut comment {
                            c.extend_from_slice(&self.data[start..self.pos - 1]);
                        }
                        start = self.pos;
                    }
                }
                _ => {}
            }
            self.pos += 1;
        }
        self.last_comment = comment;
        ret
    }

    fn skip_lwsp(&mut self) -> i32 {
        while let Some(b) = self.peek() {
            match b {
                b' ' | b'\t' | b'\r' | b'\n' => self.pos += 1,
                b'(' => {
                    if self.skip_comment() < 0 {
                        return -1;
                    }
                }
                _ => break,
            }
        }
        self.more()
    }

    fn parse_atom(&mut self, out: &mut Vec<u8>) -> i32 {
        if !self.peek().is_some_and(is_atext) {
            return -1;
        }
        let start = self.pos;
        while self.peek().is_some_and(is_atext) {
            self.pos += 1;
        }
        out.extend_from_slice(&self.data[start..self.pos]);
        if self.at_end() { 0 } else { self.skip_lwsp() }
    }

    fn parse_dot_atom(&mut self, out: &mut Vec<u8>) -> i32 {
        if !self.peek().is_some_and(is_atext) {
            return -1;
        }
        let mut start = self.pos;
        self.pos += 1;
        while !self.at_end() {
            if self.peek().is_some_and(is_atext) {
                self.pos += 1;
                continue;
            }
            if start == self.pos {
                return -1;
            }
            out.extend_from_slice(&self.data[start..self.pos]);
            let ret = self.skip_lwsp();
            if ret <= 0 {
                return ret;
            }
            if self.peek() != Some(b'.') {
                return 1;
            }
            // Blanks may come before a dot but not after it (Dovecot 2.3).
            self.pos += 1;
            out.push(b'.');
            start = self.pos;
        }
        out.extend_from_slice(&self.data[start..self.pos]);
        0
    }

    fn parse_mime_token(&mut self, out: &mut Vec<u8>) -> i32 {
        let start = self.pos;
        while self.peek().is_some_and(is_token_char) {
            self.pos += 1;
        }
        out.extend_from_slice(&self.data[start..self.pos]);
        if self.at_end() { 0 } else { self.skip_lwsp() }
    }

    fn parse_quoted_string(&mut self, out: &mut Vec<u8>) -> i32 {
        self.pos += 1;
        let mut start = self.pos;
        while self.pos < self.data.len() {
            match self.data[self.pos] {
                0 if self.nul_replacement => {
                    out.extend_from_slice(&self.data[start..self.pos]);
                    self.nul(out);
                    start = self.pos + 1;
                }
                b'"' => {
                    out.extend_from_slice(&self.data[start..self.pos]);
                    self.pos += 1;
                    return self.skip_lwsp();
                }
                b'\n' => {
                    let mut end = self.pos;
                    if end > start && self.data[end - 1] == b'\r' {
                        end -= 1;
                    }
                    out.extend_from_slice(&self.data[start..end]);
                    start = self.pos + 1;
                }
                b'\\' => {
                    self.pos += 1;
                    if self.at_end() {
                        return -1;
                    }
                    if matches!(self.data[self.pos], b'\r' | b'\n' | 0) {
                        self.pos -= 1;
                    } else {
                        out.extend_from_slice(&self.data[start..self.pos - 1]);
                        start = self.pos;
                    }
                }
                _ => {}
            }
            self.pos += 1;
        }
        -1
    }

    fn parse_atom_or_dot(&mut self, out: &mut Vec<u8>) -> i32 {
        let start = self.pos;
        while self.peek().is_some_and(|b| is_atext(b) || b == b'.') {
            self.pos += 1;
        }
        out.extend_from_slice(&self.data[start..self.pos]);
        if self.at_end() { 0 } else { self.skip_lwsp() }
    }

    fn parse_phrase(&mut self, out: &mut Vec<u8>) -> i32 {
        match self.peek() {
            None => return 0,
            Some(b'.') => return -1,
            _ => {}
        }
        loop {
            let ret = if self.peek() == Some(b'"') {
                self.parse_quoted_string(out)
            } else {
                self.parse_atom_or_dot(out)
            };
            if ret <= 0 {
                return ret;
            }
            match self.peek() {
                Some(b) if is_atext(b) || b == b'"' || b == b'.' => out.push(b' '),
                _ => break,
            }
        }
        self.skip_lwsp()
    }

    fn parse_domain_literal(&mut self, out: &mut Vec<u8>) -> i32 {
        let mut start = self.pos;
        self.pos += 1;
        while self.pos < self.data.len() {
            match self.data[self.pos] {
                0 if self.nul_replacement => {
                    out.extend_from_slice(&self.data[start..self.pos]);
                    self.nul(out);
                    start = self.pos + 1;
                }
                b'[' => return -1,
                b']' => {
                    out.extend_from_slice(&self.data[start..=self.pos]);
                    self.pos += 1;
                    return self.skip_lwsp();
                }
                b'\n' => {
                    let mut end = self.pos;
                    if end > start && self.data[end - 1] == b'\r' {
                        end -= 1;
                    }
                    out.extend_from_slice(&self.data[start..end]);
                    start = self.pos + 1;
                }
                b'\\' => {
                    self.pos += 1;
                    if self.at_end() {
                        return -1;
                    }
                    if matches!(self.data[self.pos], b'\r' | b'\n' | 0) {
                        out.extend_from_slice(&self.data[start..self.pos]);
                        start = self.pos;
                        self.pos -= 1;
                    }
                }
                _ => {}
            }
            self.pos += 1;
        }
        -1
    }

    /// At `@`: the domain after it.
    fn parse_domain(&mut self, out: &mut Vec<u8>) -> i32 {
        self.pos += 1;
        if self.skip_lwsp() <= 0 {
            return -1;
        }
        if self.peek() == Some(b'[') {
            self.parse_domain_literal(out)
        } else {
            self.parse_dot_atom(out)
        }
    }

    /// `type/subtype` into `out` (as written); -1 when broken, and then `out` keeps the type
    /// only when there was nothing after it but a broken subtype part.
    fn parse_content_type(&mut self, out: &mut Vec<u8>) -> i32 {
        let start = out.len();
        if self.skip_lwsp() <= 0 {
            return -1;
        }
        if self.parse_mime_token(out) <= 0 || out.len() == start {
            return -1;
        }
        if self.peek() != Some(b'/') {
            out.truncate(start);
            return -1;
        }
        self.pos += 1;
        if self.skip_lwsp() <= 0 {
            out.truncate(start);
            return -1;
        }
        out.push(b'/');
        let sub = out.len();
        let ret = self.parse_mime_token(out);
        if ret < 0 || out.len() == sub || (!self.at_end() && self.peek() != Some(b';')) {
            out.truncate(start);
            return -1;
        }
        ret
    }

    /// One `; key=value`: 0 at the end, -1 broken, 1 with a parameter.
    fn parse_content_param(&mut self) -> (i32, Vec<u8>, Vec<u8>) {
        let mut key = Vec::new();
        let mut value = Vec::new();
        match self.peek() {
            None => return (0, key, value),
            Some(b';') => self.pos += 1,
            Some(_) => return (-1, key, value),
        }
        if self.skip_lwsp() <= 0 {
            return (-1, key, value);
        }
        if self.parse_mime_token(&mut key) <= 0 {
            return (-1, key, value);
        }
        if self.peek() != Some(b'=') {
            return (-1, key, value);
        }
        self.pos += 1;
        let mut ret = self.skip_lwsp();
        if ret <= 0 {
            // broken or no value
        } else if self.peek() == Some(b'"') {
            ret = self.parse_quoted_string(&mut value);
        } else if self.peek() == Some(b'=') {
            // name==?utf-8?b?...?= written without quotes
            while let Some(b) = self.peek() {
                if matches!(b, b';' | b' ' | b'\t' | b'\r' | b'\n') {
                    break;
                }
                value.push(b);
                self.pos += 1;
            }
        } else {
            ret = self.parse_mime_token(&mut value);
        }
        (if ret < 0 { -1 } else { 1 }, key, value)
    }

    /// All parameters, RFC 2231 continuations merged (Dovecot's rfc2231_parse).
    fn parse_params(&mut self) -> Vec<(Vec<u8>, Vec<u8>)> {
        struct Cont {
            key: Vec<u8>,
            value: Vec<u8>,
            idx: u32,
            extended: bool,
        }
        let mut result = Vec::new();
        let mut conts: Vec<Cont> = Vec::new();
        let mut idx: u32 = 0;
        loop {
            let (ret, key, value) = self.parse_content_param();
            if ret == 0 {
                break;
            }
            if ret < 0 {
                if self.at_end() {
                    break;
                }
                self.pos += 1;
                continue;
            }
            if let Some(star) = key.iter().position(|&b| b == b'*') {
                // Dovecot's index survives from the previous parameter when a key ends in
                // its only `*` ("name*"), so do the same.
                let mut p = star;
                if p + 1 < key.len() {
                    p += 1;
                    idx = 0;
                    while let Some(d) = key.get(p).filter(|d| d.is_ascii_digit()) {
                        idx = idx.saturating_mul(10).saturating_add(u32::from(d - b'0'));
                        p += 1;
                    }
                }
                let extended = key.get(p) == Some(&b'*');
                if extended {
                    p += 1;
                }
                if p >= key.len() {
                    conts.push(Cont {
                        key: key[..star].to_vec(),
                        value,
                        idx,
                        extended,
                    });
                    continue;
                }
            }
            result.push((key, value));
        }
        if conts.is_empty() {
            return result;
        }
        conts.sort_by(|a, b| a.key.cmp(&b.key).then(a.idx.cmp(&b.idx)));
        let mut i = 0;
        while i < conts.len() {
            let mut j = i;
            let mut ok = true;
            let mut have_extended = false;
            let mut next_idx = 0;
            while j < conts.len() && conts[j].key.eq_ignore_ascii_case(&conts[i].key) {
                if conts[j].idx != next_idx {
                    ok = false;
                }
                have_extended |= conts[j].extended;
                next_idx += 1;
                j += 1;
            }
            if !ok {
                for c in &conts[i..j] {
                    let mut key = c.key.clone();
                    key.push(b'*');
                    key.extend_from_slice(c.idx.to_string().as_bytes());
                    if c.extended {
                        key.push(b'*');
                    }
                    result.push((key, c.value.clone()));
                }
            } else {
                let mut value = Vec::new();
                if !conts[i].extended && have_extended {
                    value.extend_from_slice(b"''");
                }
                for c in &conts[i..j] {
                    if !c.extended && have_extended {
                        for &b in &c.value {
                            if b == b'%' {
                                value.extend_from_slice(b"%25");
                            } else {
                                value.push(b);
                            }
                        }
                    } else {
                        value.extend_from_slice(&c.value);
                    }
                }
                let mut key = conts[i].key.clone();
                if have_extended {
                    key.push(b'*');
                }
                result.push((key, value));
            }
            i = j;
        }
        result
    }
}

// ---------------------------------------------------------------------------------------------
// Addresses (Dovecot's message-address with FILL_MISSING)

#[derive(Debug, Default, Clone)]
struct MailAddr {
    name: Option<Vec<u8>>,
    route: Option<Vec<u8>>,
    mailbox: Option<Vec<u8>>,
    domain: Option<Vec<u8>>,
    invalid: bool,
}

struct AddrParser<'a> {
    p: Rfc822<'a>,
    out: Vec<MailAddr>,
    addr: MailAddr,
    /// The last local part read, kept even when it was broken (Dovecot's `ctx->str`).
    s: Vec<u8>,
}

impl AddrParser<'_> {
    fn add(&mut self) {
        self.out.push(std::mem::take(&mut self.addr));
    }

    fn parse_local_part(&mut self) -> i32 {
        self.s.clear();
        let ret = if self.p.peek() == Some(b'"') {
            self.p.parse_quoted_string(&mut self.s)
        } else {
            self.p.parse_dot_atom(&mut self.s)
        };
        if ret < 0 {
            return -1;
        }
        self.addr.mailbox = Some(self.s.clone());
        ret
    }

    fn parse_domain(&mut self) -> i32 {
        let mut s = Vec::new();
        let ret = self.p.parse_domain(&mut s);
        if ret < 0 {
            return -1;
        }
        self.addr.domain = Some(s);
        ret
    }

    fn parse_domain_list(&mut self) -> i32 {
        let mut s = Vec::new();
        loop {
            if self.p.at_end() {
                return 0;
            }
            if self.p.peek() != Some(b'@') {
                break;
            }
            if !s.is_empty() {
                s.push(b',');
            }
            s.push(b'@');
            let ret = self.p.parse_domain(&mut s);
            if ret <= 0 {
                return ret;
            }
            while self.p.skip_lwsp() > 0 && self.p.peek() == Some(b',') {
                self.p.pos += 1;
            }
        }
        self.addr.route = Some(s);
        1
    }

    fn parse_angle_addr(&mut self) -> i32 {
        self.p.pos += 1; // '<'
        if self.p.skip_lwsp() <= 0 {
            return -1;
        }
        if self.p.peek() == Some(b'@') {
            if self.parse_domain_list() > 0 && self.p.peek() == Some(b':') {
                self.p.pos += 1;
            } else {
                self.addr.route = Some(b"INVALID_ROUTE".to_vec());
                if self.p.at_end() {
                    return -1;
                }
            }
            if self.p.skip_lwsp() <= 0 {
                return -1;
            }
        }
        if self.p.peek() != Some(b'>') {
            if self.parse_local_part() <= 0 {
                return -1;
            }
            if self.p.peek() == Some(b'@') && self.parse_domain() <= 0 {
                return -1;
            }
        }
        if self.p.peek() != Some(b'>') {
            return -1;
        }
        self.p.pos += 1;
        self.p.skip_lwsp()
    }

    fn parse_name_addr(&mut self) -> i32 {
        let mut s = Vec::new();
        if self.p.parse_phrase(&mut s) <= 0 || self.p.peek() != Some(b'<') {
            return -1;
        }
        self.addr.name = if s.is_empty() { None } else { Some(s) };
        if self.parse_angle_addr() < 0 {
            self.addr.domain = Some(b"SYNTAX_ERROR".to_vec());
            self.addr.invalid = true;
        }
        self.p.more()
    }

    fn parse_addr_spec(&mut self) -> i32 {
        let mut ret2 = -2;
        if let Some(c) = &mut self.p.last_comment {
            c.clear();
        }
        let quoted = self.p.peek() == Some(b'"');
        let mut ret = self.parse_local_part();
        if ret <= 0 {
            self.addr.invalid = true;
        }
        if ret != 0 && self.p.peek() == Some(b'@') {
            ret2 = self.parse_domain();
            if ret2 <= 0 {
                ret = ret2;
            }
        }
        let comment = self
            .p
            .last_comment
            .as_ref()
            .filter(|c| !c.is_empty())
            .cloned();
        if let Some(comment) = comment {
            self.addr.name = Some(comment);
        } else if ret2 == -2 {
            // A lone word is a mailbox; anything after it makes it all a display name.
            let mut s = std::mem::take(&mut self.s);
            s.push(b' ');
            let before = s.len();
            let _ = self.p.parse_phrase(&mut s);
            if s.len() != before {
                self.addr.mailbox = None;
                self.addr.name = Some(s);
            } else if !quoted {
                self.addr.domain = Some(Vec::new());
            }
            self.addr.invalid = true;
            ret = -1;
        }
        ret
    }

    fn add_fixed(&mut self) {
        if self.addr.mailbox.is_none() {
            self.addr.mailbox = Some(b"MISSING_MAILBOX".to_vec());
            self.addr.invalid = true;
        }
        if self.addr.domain.as_ref().is_none_or(|d| d.is_empty()) {
            self.addr.domain = Some(b"MISSING_DOMAIN".to_vec());
            self.addr.invalid = true;
        }
        self.add();
    }

    fn parse_mailbox(&mut self) -> i32 {
        let start = self.p.pos;
        let mut ret = self.parse_name_addr();
        if ret < 0 {
            self.p.pos = start;
            self.addr = MailAddr::default();
            ret = self.parse_addr_spec();
            if self.addr.invalid
                && self.addr.name.is_none()
                && self.addr.mailbox.is_some()
                && self.addr.domain.is_none()
            {
                self.addr.name = self.addr.mailbox.take();
            }
        }
        if ret < 0 {
            self.addr.invalid = true;
        }
        self.add_fixed();
        ret
    }

    fn parse_group(&mut self) -> i32 {
        let mut s = Vec::new();
        if self.p.parse_phrase(&mut s) <= 0 || self.p.peek() != Some(b':') {
            return -1;
        }
        self.p.pos += 1;
        let mut ret = self.p.skip_lwsp();
        if ret <= 0 {
            self.addr.invalid = true;
        }
        self.addr.mailbox = Some(s);
        self.add();
        if ret > 0 && self.p.peek() != Some(b';') {
            loop {
                let _ = self.parse_mailbox();
                if self.p.peek() != Some(b',') {
                    break;
                }
                self.p.pos += 1;
                if self.p.skip_lwsp() <= 0 {
                    ret = -1;
                    break;
                }
            }
        }
        if ret >= 0 {
            if self.p.peek() != Some(b';') {
                ret = -1;
            } else {
                self.p.pos += 1;
                ret = self.p.skip_lwsp();
            }
        }
        if ret < 0 {
            self.addr.invalid = true;
        }
        self.add();
        if ret == 0 { 0 } else { 1 }
    }

    fn parse_address(&mut self) -> i32 {
        let start = self.p.pos;
        let saved = self.out.len();
        let ret = self.parse_group();
        if ret < 0 {
            self.p.pos = start;
            self.out.truncate(saved);
            self.addr = MailAddr::default();
            return self.parse_mailbox();
        }
        ret
    }

    fn parse_list(&mut self) {
        // Dovecot bounds nothing here; a header is bounded by the message size anyway.
        loop {
            if self.parse_address() == 0 {
                break;
            }
            if self.p.peek() != Some(b',') {
                break;
            }
            self.p.pos += 1;
            let ret = self.p.skip_lwsp();
            if ret <= 0 {
                if ret < 0 {
                    self.add_fixed();
                }
                break;
            }
        }
    }
}

fn parse_addresses(value: &[u8]) -> Vec<MailAddr> {
    let mut ap = AddrParser {
        p: Rfc822::with_comments(value),
        out: Vec::new(),
        addr: MailAddr::default(),
        s: Vec::new(),
    };
    if ap.p.skip_lwsp() > 0 {
        ap.parse_list();
    }
    ap.out
}

fn imap_addresses(list: &[MailAddr]) -> Vec<Address<'static>> {
    list.iter()
        .map(|a| Address {
            name: nstring(a.name.as_deref().map(for_humans)),
            adl: nstring(a.route.as_deref().map(nolf)),
            mailbox: nstring(a.mailbox.as_deref().map(nolf)),
            host: nstring(a.domain.as_deref().map(nolf)),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Envelope

fn envelope_of_header(header: &[u8]) -> Envelope<'static> {
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

/// A header value as UTF-8 text: RFC 2047 encoded-words decoded (blanks between two of them
/// dropped, a broken one left as written), charsets converted, invalid UTF-8 replaced (Dovecot's
/// `message_header_decode_utf8`).
#[must_use]
pub fn decode_header(value: &[u8]) -> String {
    let mut out = String::with_capacity(value.len());
    let mut start = 0;
    let mut pos = 0;
    while pos + 1 < value.len() {
        if value[pos] != b'=' || value[pos + 1] != b'?' {
            pos += 1;
            continue;
        }
        let plain = &value[start..pos];
        let Some((charset, decoded, used)) = encoded_word(&value[pos + 2..]) else {
            // Not an encoded-word: its "=?" stays in the plain text.
            pos += 2;
            continue;
        };
        if !plain
            .iter()
            .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        {
            out.push_str(&String::from_utf8_lossy(plain));
        }
        out.push_str(&to_utf8(charset, &decoded));
        pos += 2 + used;
        start = pos;
    }
    if start < value.len() {
        out.push_str(&String::from_utf8_lossy(&value[start..]));
    }
    out
}

/// `charset?enc?text?=` after a "=?": the charset, the decoded octets and the length used.
fn encoded_word(data: &[u8]) -> Option<(&[u8], Vec<u8>, usize)> {
    let mut qs = [0usize; 3];
    let mut n = 0;
    let mut i = 0;
    while i < data.len() {
        if data[i] == b'?' {
            qs[n] = i;
            n += 1;
            if n == 3 {
                break;
            }
        }
        i += 1;
    }
    if n < 3 || data.get(qs[2] + 1) != Some(&b'=') {
        return None;
    }
    let charset = &data[..qs[0]];
    let text = &data[qs[1] + 1..qs[2]];
    let decoded = match data.get(qs[0] + 1) {
        Some(b'q' | b'Q') => q_decode(text),
        Some(b'b' | b'B') => b64_decode(text),
        _ => return None,
    };
    Some((charset, decoded, qs[2] + 2))
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 2047 "Q": `_` is a space, `=XX` an octet; a broken `=` is kept.
fn q_decode(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'_' => out.push(b' '),
            b'=' => {
                if let (Some(h), Some(l)) = (
                    text.get(i + 1).copied().and_then(hex),
                    text.get(i + 2).copied().and_then(hex),
                ) {
                    out.push(h << 4 | l);
                    i += 2;
                } else {
                    out.push(b'=');
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// Base64, as much as decodes (stops at the first octet outside the alphabet, padding aside).
fn b64_decode(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &c in text {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b' ' | b'\t' | b'\r' | b'\n' => continue,
            _ => break,
        };
        acc = acc << 6 | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Octets in `charset` as UTF-8; an unknown charset is read as UTF-8.
fn to_utf8(charset: &[u8], bytes: &[u8]) -> String {
    // RFC 2231 lets an encoded-word's charset carry "*language".
    let charset = charset.split(|&b| b == b'*').next().unwrap_or(charset);
    let is_utf8 = charset.eq_ignore_ascii_case(b"utf-8") || charset.eq_ignore_ascii_case(b"utf8");
    if !is_utf8
        && let Some(decoder) = mail_parser::decoders::charsets::map::charset_decoder(charset)
    {
        return decoder(bytes);
    }
    String::from_utf8_lossy(bytes).into_owned()
}

/// A Date header value as seconds since the epoch, parsed the way Dovecot does (RFC 2822 with
/// comments and blanks anywhere, 2-digit years, `.` for `:`, unknown zones as UTC); `None` when
/// it cannot be read.
#[must_use]
pub fn parse_date(value: &[u8]) -> Option<i64> {
    const MONTHS: [&[u8]; 12] = [
        b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov",
        b"dec",
    ];
    let mut p = Rfc822::new(value);
    let token = |p: &mut Rfc822<'_>| -> Option<Vec<u8>> {
        let mut t = Vec::new();
        if !p.at_end() && p.parse_atom(&mut t) < 0 {
            return None;
        }
        Some(t)
    };
    let digits = |t: &[u8]| -> Option<i64> {
        if t.is_empty() || !t.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(t.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    p.skip_lwsp();
    let mut t = token(&mut p).filter(|t| !t.is_empty())?;
    if t.len() == 3 {
        // weekday
        if p.peek() != Some(b',') {
            return None;
        }
        p.pos += 1;
        p.skip_lwsp();
        t = token(&mut p).filter(|t| !t.is_empty())?;
    }
    if t.len() > 2 {
        return None;
    }
    let day = digits(&t)?;
    let t = token(&mut p).filter(|t| t.len() >= 3)?;
    let month = MONTHS.iter().position(|m| t[..3].eq_ignore_ascii_case(m))?;
    let t = token(&mut p).filter(|t| t.len() == 2 || t.len() == 4)?;
    let mut year = digits(&t)?;
    if t.len() == 2 {
        year += if year < 70 { 2000 } else { 1900 };
    } else if year < 1900 {
        return None;
    }
    let t = token(&mut p).filter(|t| !t.is_empty() && t.len() <= 2)?;
    let hour = digits(&t)?;
    let is_sep = |b: Option<u8>| matches!(b, Some(b':' | b'.'));
    if !is_sep(p.peek()) {
        return None;
    }
    p.pos += 1;
    p.skip_lwsp();
    let t = token(&mut p).filter(|t| t.len() == 2)?;
    let min = digits(&t)?;
    let mut sec = 0;
    if is_sep(p.peek()) {
        p.pos += 1;
        p.skip_lwsp();
        let t = token(&mut p).filter(|t| t.len() == 2)?;
        sec = digits(&t)?;
    }
    let zone = token(&mut p)?;
    let offset = zone_offset(&zone);
    // Dovecot's utc_mktime refuses fields out of range rather than normalising them.
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if day < 1 || day > month_days[month] || hour > 23 || min > 59 || sec > 59 {
        return None;
    }
    // Days from the civil date (proleptic Gregorian), as timegm would count them.
    let (y, m) = if month < 2 {
        (year - 1, month as i64 + 10)
    } else {
        (year, month as i64 - 2)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468 + day - 1;
    Some(days * 86_400 + hour * 3600 + min * 60 + sec - offset * 60)
}

/// A zone as minutes east of UTC (military letters the correct way round, unknown ones UTC).
fn zone_offset(z: &[u8]) -> i64 {
    match z {
        [sign @ (b'+' | b'-'), d @ ..] if d.len() == 4 && d.iter().all(u8::is_ascii_digit) => {
            let v = |i: usize| i64::from(d[i] - b'0');
            let off = (v(0) * 10 + v(1)) * 60 + v(2) * 10 + v(3);
            if *sign == b'+' { off } else { -off }
        }
        [c] => {
            let c = c.to_ascii_uppercase();
            let raw = i64::from(*z.first().unwrap_or(&b'Z'));
            if c < b'J' {
                (raw - i64::from(b'A') + 1) * 60
            } else if c == b'J' {
                0
            } else if c <= b'M' {
                (raw - i64::from(b'A')) * 60
            } else if c < b'Z' {
                (i64::from(b'M') - raw) * 60
            } else {
                0
            }
        }
        [u, t] if u.eq_ignore_ascii_case(&b'u') && t.eq_ignore_ascii_case(&b't') => 0,
        [a, b, b'T'] => {
            let base = match a.to_ascii_uppercase() {
                b'E' => -5 * 60,
                b'C' => -6 * 60,
                b'M' => -7 * 60,
                b'P' => -8 * 60,
                _ => return 0,
            };
            match b.to_ascii_uppercase() {
                b'D' => base + 60,
                b'S' => base,
                _ => 0,
            }
        }
        _ => 0,
    }
}

/// The next valid `<id-left@id-right>` message id in `value` from `*pos` (Dovecot's
/// `message_id_get_next`): brackets gone, blanks and comments removed.
pub(crate) fn next_message_id(value: &[u8], pos: &mut usize) -> Option<Vec<u8>> {
    loop {
        let open = value.get(*pos..)?.iter().position(|&b| b == b'<')? + *pos;
        let start = open + 1;
        let mut found_at = false;
        let mut p = start;
        let stop = loop {
            let b = *value.get(p)?;
            if b >= b'A' {
                p += 1;
                continue;
            }
            if b == b'@' {
                found_at = true;
            }
            if matches!(b, b'>' | b'"' | b'(' | b'[') || b == 0 {
                break b;
            }
            p += 1;
        };
        if stop == 0 {
            *pos = value.len();
            return None;
        }
        if stop == b'>' {
            *pos = p + 1;
            if found_at {
                return Some(
                    value[start..p]
                        .iter()
                        .copied()
                        .filter(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
                        .collect(),
                );
            }
            continue;
        }
        // The slow way: quoted strings, comments or domain literals inside.
        let mut r = Rfc822::new(&value[start..]);
        let mut id = Vec::new();
        r.skip_lwsp();
        let ret = if r.peek() == Some(b'"') {
            r.parse_quoted_string(&mut id)
        } else {
            r.parse_dot_atom(&mut id)
        };
        if ret > 0 && r.peek() == Some(b'@') {
            id.push(b'@');
            r.pos += 1;
            r.skip_lwsp();
            if r.parse_dot_atom(&mut id) > 0 && r.peek() == Some(b'>') {
                *pos = start + r.pos + 1;
                return Some(id);
            }
        }
        *pos = start;
    }
}

// ---------------------------------------------------------------------------------------------
// MIME tree (Dovecot's message-parser, on a complete buffer)

/// Octets and lines of a header or body; `virtual_size` counts every bare LF as CRLF.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Size {
    physical: usize,
    virtual_size: u64,
    lines: u32,
}

impl Size {
    fn add(&mut self, other: Size) {
        self.physical += other.physical;
        self.virtual_size += other.virtual_size;
        self.lines = self.lines.saturating_add(other.lines);
    }

    /// Account the bytes `raw[start..end]`.
    fn add_bytes(&mut self, raw: &[u8], start: usize, end: usize) {
        if end <= start {
            return;
        }
        let mut lines = 0u32;
        let mut missing_cr = 0u64;
        for i in memchr::memchr_iter(b'\n', &raw[start..end]) {
            let i = start + i;
            lines = lines.saturating_add(1);
            if i == 0 || raw[i - 1] != b'\r' {
                missing_cr += 1;
            }
        }
        self.physical += end - start;
        self.virtual_size += (end - start) as u64 + missing_cr;
        self.lines = self.lines.saturating_add(lines);
    }
}

const MULTIPART: u8 = 1;
const RFC822: u8 = 2;
const TEXT: u8 = 4;
const IS_MIME: u8 = 8;
const DIGEST: u8 = 16;

/// Dovecot's limits: deeper or further parts are left unparsed inside their parent's body.
const MAX_NESTING: usize = 100;
const MAX_PARTS: usize = 10_000;

#[derive(Debug, Clone)]
struct Node {
    /// Offset of the header block.
    pos: usize,
    header: Size,
    body: Size,
    flags: u8,
    parent: Option<usize>,
    children: Vec<usize>,
    depth: usize,
}

impl Node {
    fn body_start(&self) -> usize {
        self.pos + self.header.physical
    }
}

struct Boundary<'a> {
    part: usize,
    text: Cow<'a, [u8]>,
}

struct Tree<'r> {
    raw: &'r [u8],
    nodes: Vec<Node>,
}

/// What the parser does next.
enum Step {
    Header(usize),
    BodyToBoundary,
    BodyToEof,
}

impl<'r> Tree<'r> {
    fn parse(raw: &'r [u8]) -> Tree<'r> {
        let mut nodes = vec![Node {
            pos: 0,
            header: Size::default(),
            body: Size::default(),
            flags: 0,
            parent: None,
            children: Vec::new(),
            depth: 0,
        }];
        let mut boundaries: Vec<Boundary<'_>> = Vec::new();
        let mut cur = 0usize;
        let mut pos = 0usize;
        let mut step = Step::Header(0);
        loop {
            match step {
                Step::Header(part) => {
                    cur = part;
                    let (next_pos, pushed) =
                        Self::parse_header(raw, pos, &mut nodes, part, &mut boundaries);
                    pos = next_pos;
                    let node = &nodes[part];
                    step = if pushed {
                        Step::BodyToBoundary
                    } else if node.flags & RFC822 != 0 {
                        // The encapsulated message, even when no byte of it is left.
                        let child = Self::append(&mut nodes, part);
                        Step::Header(child)
                    } else {
                        step_after_body(&boundaries)
                    };
                }
                Step::BodyToEof => {
                    nodes[cur].body.add_bytes(raw, pos, raw.len());
                    break;
                }
                Step::BodyToBoundary => {
                    // Find the first line from `pos` that is a known boundary: `pos` itself,
                    // or a line after an LF that starts with "--".
                    let mut line_start = pos;
                    let mut found = find_boundary(raw, pos, &boundaries);
                    if found.is_none() {
                        let mut from = pos;
                        while let Some(at) = memchr::memmem::find(&raw[from..], b"\n--") {
                            line_start = from + at + 1;
                            found = find_boundary(raw, line_start, &boundaries);
                            if found.is_some() {
                                break;
                            }
                            from = line_start;
                        }
                    }
                    let Some((bidx, closing)) = found else {
                        nodes[cur].body.add_bytes(raw, pos, raw.len());
                        break;
                    };
                    let newline = if line_start == pos {
                        0
                    } else if line_start >= pos + 2 && raw[line_start - 2] == b'\r' {
                        2
                    } else {
                        1
                    };
                    nodes[cur].body.add_bytes(raw, pos, line_start - newline);
                    let owner = boundaries[bidx].part;
                    // Close the parts inside the boundary's multipart.
                    let mut p = cur;
                    while p != owner {
                        let Some(parent) = nodes[p].parent else { break };
                        let (h, b) = (nodes[p].header, nodes[p].body);
                        nodes[parent].body.add(b);
                        nodes[parent].body.add(h);
                        p = parent;
                    }
                    cur = owner;
                    let blen = boundaries[bidx].text.len();
                    if closing {
                        boundaries.truncate(bidx);
                    } else {
                        boundaries.truncate(bidx + 1);
                    }
                    let mut end = line_start + 2 + blen + if closing { 2 } else { 0 };
                    nodes[cur].body.add_bytes(raw, line_start - newline, end);
                    // The rest of the boundary line.
                    let rest_end = find_lf(raw, end).map_or(raw.len(), |lf| lf + 1);
                    nodes[cur].body.add_bytes(raw, end, rest_end);
                    end = rest_end;
                    pos = end;
                    if boundaries.last().is_some_and(|b| b.part == cur) {
                        // A new part, even when no byte of it is left.
                        if nodes.len() >= MAX_PARTS {
                            // Too many parts: the rest is this multipart's body.
                            boundaries.clear();
                            step = Step::BodyToEof;
                            continue;
                        }
                        let child = Self::append(&mut nodes, cur);
                        nodes[child].flags |= IS_MIME;
                        step = Step::Header(child);
                    } else if pos >= raw.len() {
                        break;
                    } else {
                        step = step_after_body(&boundaries);
                    }
                }
            }
        }
        // End of data: close every open part into its parent.
        let mut p = cur;
        while let Some(parent) = nodes[p].parent {
            let (h, b) = (nodes[p].header, nodes[p].body);
            nodes[parent].body.add(b);
            nodes[parent].body.add(h);
            p = parent;
        }
        Tree { raw, nodes }
    }

    /// A new child of `parent`, placed right after what the parent holds so far (for a
    /// message/rfc822 part whose blank line went to a boundary, that is the blank line).
    fn append(nodes: &mut Vec<Node>, parent: usize) -> usize {
        let idx = nodes.len();
        let p = &nodes[parent];
        let pos = p.pos + p.header.physical + p.body.physical;
        let depth = p.depth + 1;
        nodes.push(Node {
            pos,
            header: Size::default(),
            body: Size::default(),
            flags: 0,
            parent: Some(parent),
            children: Vec::new(),
            depth,
        });
        nodes[parent].children.push(idx);
        idx
    }

    /// Moves the last header line's newline (`newline` octets, 0 for none) from the header of
    /// `part` to its parent's body, where it is part of the boundary line that follows.
    fn give_newline_to_parent(nodes: &mut [Node], part: usize, newline: usize) {
        if newline == 0 {
            return;
        }
        let h = &mut nodes[part].header;
        h.lines = h.lines.saturating_sub(1);
        h.physical = h.physical.saturating_sub(newline);
        h.virtual_size = h.virtual_size.saturating_sub(2);
        if let Some(parent) = nodes[part].parent {
            let b = &mut nodes[parent].body;
            b.lines = b.lines.saturating_add(1);
            b.physical += newline;
            b.virtual_size += 2;
        }
    }

    /// Parses the header of `part` at `pos`; returns where its body starts and whether a
    /// multipart boundary was pushed.
    fn parse_header(
        raw: &'r [u8],
        mut pos: usize,
        nodes: &mut [Node],
        part: usize,
        boundaries: &mut Vec<Boundary<'r>>,
    ) -> (usize, bool) {
        let mut seen_content_type = false;
        let mut last_boundary: Option<Cow<'r, [u8]>> = None;
        let mut prev_newline = 0usize;
        let mut pushed = false;
        let parent_digest = nodes[part]
            .parent
            .is_some_and(|p| nodes[p].flags & DIGEST != 0);
        loop {
            if pos >= raw.len() {
                break;
            }
            if is_blank_line(raw, pos) {
                let line = line_at(raw, pos);
                if let Some(b) = last_boundary.take()
                    && nodes[part].flags & IS_MIME != 0
                    && nodes[part].depth < MAX_NESTING
                {
                    boundaries.push(Boundary { part, text: b });
                    pushed = true;
                }
                let h = &mut nodes[part].header;
                h.physical += line.next - pos;
                h.virtual_size += 2;
                h.lines = h.lines.saturating_add(1);
                pos = line.next;
                // An enclosing boundary right after the blank line takes the blank line's
                // newline as its own, leaving the header without its end (Dovecot's parser
                // looks for boundaries before deciding the header is over).
                if find_boundary(raw, pos, boundaries)
                    .is_some_and(|(b, _)| boundaries[b].part != part)
                {
                    Self::give_newline_to_parent(nodes, part, line.newline);
                }
                break;
            }
            if find_boundary(raw, pos, boundaries).is_some_and(|(b, _)| boundaries[b].part != part)
            {
                // A boundary cuts the header short; the newline before it is the boundary's.
                Self::give_newline_to_parent(nodes, part, prev_newline);
                break;
            }
            // One field: its first line and the continuation lines.
            let first = line_at(raw, pos);
            let mut last = first;
            let mut field_size = Size::default();
            loop {
                let h = &mut field_size;
                h.physical += last.next - last.start;
                h.virtual_size += (last.next - last.start) as u64 + u64::from(last.newline == 1);
                if last.newline > 0 {
                    h.lines = h.lines.saturating_add(1);
                }
                if last.next < raw.len() && is_lwsp(raw[last.next]) {
                    last = line_at(raw, last.next);
                } else {
                    break;
                }
            }
            nodes[part].header.add(field_size);
            prev_newline = last.newline;
            let field = Fields::new(&raw[first.start..last.next]).next();
            pos = last.next;
            let Some(Field {
                name,
                value: Some(value),
            }) = field
            else {
                continue;
            };
            if name.eq_ignore_ascii_case(b"mime-version") {
                nodes[part].flags |= IS_MIME;
            } else if name.eq_ignore_ascii_case(b"content-type") {
                nodes[part].flags |= IS_MIME;
                if seen_content_type {
                    continue;
                }
                seen_content_type = true;
                let mut p = Rfc822::new(value);
                let mut ct = Vec::new();
                let ret = p.parse_content_type(&mut ct);
                let flags = &mut nodes[part].flags;
                if ct.eq_ignore_ascii_case(b"message/rfc822") {
                    *flags |= RFC822;
                } else if ct.len() >= 4
                    && ct[..4].eq_ignore_ascii_case(b"text")
                    && (ct.len() == 4 || ct[4] == b'/')
                {
                    *flags |= TEXT;
                } else if ct.len() >= 10 && ct[..10].eq_ignore_ascii_case(b"multipart/") {
                    *flags |= MULTIPART;
                    if ct[10..].eq_ignore_ascii_case(b"digest") {
                        *flags |= DIGEST;
                    }
                }
                if ret >= 0 && *flags & MULTIPART != 0 {
                    for (k, v) in p.parse_params() {
                        if k.eq_ignore_ascii_case(b"boundary") {
                            let mut b = boundary_text(value, v);
                            if b.len() > BOUNDARY_MAX {
                                match &mut b {
                                    Cow::Borrowed(t) => *t = &t[..BOUNDARY_MAX],
                                    Cow::Owned(t) => t.truncate(BOUNDARY_MAX),
                                }
                            }
                            last_boundary = Some(b);
                            break;
                        }
                    }
                }
            }
        }
        let node = &mut nodes[part];
        if node.flags & IS_MIME == 0 {
            node.flags = 0;
        }
        if !seen_content_type || node.flags & IS_MIME == 0 {
            if parent_digest {
                node.flags |= RFC822;
            } else {
                node.flags |= TEXT;
            }
        }
        if node.flags & RFC822 != 0 && node.depth >= MAX_NESTING {
            node.flags &= !RFC822;
        }
        (pos, pushed)
    }

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

    fn section(&self, section: &Section<'_>) -> Option<Vec<u8>> {
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

    fn structure(&self, idx: usize, extended: bool) -> BodyStructure<'static> {
        let node = &self.nodes[idx];
        let mut data = self.data_of(idx);
        if idx == 0 && data.is_plain_7bit(node) {
            // Dovecot answers a plain US-ASCII message in its canonical spelling.
            data = PartData::default();
        }
        if node.flags & MULTIPART != 0 {
            let bodies: Vec<BodyStructure<'static>> = node
                .children
                .iter()
                .map(|&c| self.structure(c, extended))
                .collect();
            let bodies =
                Vec1::try_from(bodies).unwrap_or_else(|_| Vec1::from(empty_body(extended)));
            let subtype = istring(Cow::Owned(data.subtype.clone().unwrap_or_default()));
            let extension_data = extended.then(|| MultiPartExtensionData {
                parameter_list: params(&data.params, false),
                tail: Some(data.disposition_tail()),
            });
            return BodyStructure::Multi {
                bodies,
                subtype,
                extension_data,
            };
        }
        let (r#type, subtype, text) = if node.flags & RFC822 != 0 {
            (istr("message"), istr("rfc822"), false)
        } else {
            match &data.r#type {
                None => (istr("text"), istr("plain"), true),
                Some(t) => (
                    istring(Cow::Owned(t.clone())),
                    istring(Cow::Owned(data.subtype.clone().unwrap_or_default())),
                    t.eq_ignore_ascii_case(b"text"),
                ),
            }
        };
        let basic = BasicFields {
            parameter_list: params(&data.params, text),
            id: nstring(data.id.as_deref().map(nolf)),
            description: nstring(data.description.as_deref().map(nolf)),
            content_transfer_encoding: data
                .encoding
                .clone()
                .map_or_else(|| istr("7bit"), |e| istring(Cow::Owned(e))),
            size: u32::try_from(node.body.virtual_size).unwrap_or(u32::MAX),
        };
        let specific = if text {
            SpecificFields::Text {
                subtype,
                number_of_lines: node.body.lines,
            }
        } else if node.flags & RFC822 != 0 {
            let child = node.children.first().copied();
            let envelope = child.map_or_else(
                || envelope_of_header(b""),
                |c| envelope_of_header(self.header_bytes(c)),
            );
            let inner = child.map_or_else(|| empty_body(extended), |c| self.structure(c, extended));
            SpecificFields::Message {
                envelope: Box::new(envelope),
                body_structure: Box::new(inner),
                number_of_lines: node.body.lines,
            }
        } else {
            SpecificFields::Basic { r#type, subtype }
        };
        let extension_data = extended.then(|| SinglePartExtensionData {
            md5: nstring(data.md5.as_deref().map(nolf)),
            tail: Some(data.disposition_tail()),
        });
        BodyStructure::Single {
            body: Body { basic, specific },
            extension_data,
        }
    }
}

fn step_after_body(boundaries: &[Boundary<'_>]) -> Step {
    if boundaries.is_empty() {
        Step::BodyToEof
    } else {
        Step::BodyToBoundary
    }
}

/// The boundary text, borrowed from the header when it appears there verbatim (the usual case)
/// so the parser needs no allocation per multipart.
fn boundary_text(value: &[u8], b: Vec<u8>) -> Cow<'_, [u8]> {
    if b.is_empty() {
        return Cow::Borrowed(&value[..0]);
    }
    match value.windows(b.len()).position(|w| w == b.as_slice()) {
        Some(i) => Cow::Borrowed(&value[i..i + b.len()]),
        None => Cow::Owned(b),
    }
}

/// Dovecot cuts boundaries to 80 octets (RFC 2046 allows 70).
const BOUNDARY_MAX: usize = 70 + 10;

/// Whether the line at `start` is `--<boundary>` for a known boundary: the line need only start
/// with the boundary (RFC 2046), the longest match wins, the innermost among equals. Returns its
/// index and whether it closes (`--` right after it).
fn find_boundary(raw: &[u8], start: usize, boundaries: &[Boundary<'_>]) -> Option<(usize, bool)> {
    if boundaries.is_empty() {
        return None;
    }
    let rest = raw.get(start..)?;
    if rest.len() < 2 || rest[0] != b'-' || rest[1] != b'-' {
        return None;
    }
    let data = &rest[2..];
    let mut best: Option<usize> = None;
    for (i, b) in boundaries.iter().enumerate().rev() {
        if data.starts_with(&b.text) && best.is_none_or(|x| boundaries[x].text.len() < b.text.len())
        {
            best = Some(i);
        }
    }
    let i = best?;
    let len = boundaries[i].text.len();
    let closing = data.get(len..len + 2) == Some(b"--");
    Some((i, closing))
}

impl<'r> Tree<'r> {
    fn header_bytes(&self, idx: usize) -> &'r [u8] {
        let n = &self.nodes[idx];
        &self.raw[n.pos..n.body_start()]
    }

    fn body_bytes(&self, idx: usize) -> &'r [u8] {
        let n = &self.nodes[idx];
        &self.raw[n.body_start()..n.body_start() + n.body.physical]
    }

    /// Content-* data of a part; forgotten when the part is not MIME (no MIME-Version, no
    /// Content-Type, not inside a multipart), as Dovecot does.
    fn data_of(&self, idx: usize) -> PartData {
        if self.nodes[idx].flags & IS_MIME == 0 {
            return PartData::default();
        }
        PartData::parse(self.header_bytes(idx))
    }
}

/// Content-* fields of a part, as Dovecot keeps them for BODYSTRUCTURE.
#[derive(Debug, Default)]
struct PartData {
    r#type: Option<Vec<u8>>,
    subtype: Option<Vec<u8>>,
    params: Vec<(Vec<u8>, Vec<u8>)>,
    id: Option<Vec<u8>>,
    description: Option<Vec<u8>>,
    encoding: Option<Vec<u8>>,
    md5: Option<Vec<u8>>,
    disposition: Option<Vec<u8>>,
    disposition_params: Vec<(Vec<u8>, Vec<u8>)>,
    language: Vec<Vec<u8>>,
    location: Option<Vec<u8>>,
}

impl PartData {
    /// text/plain, US-ASCII, 7bit and nothing else: Dovecot's "plain 7bit" message.
    fn is_plain_7bit(&self, node: &Node) -> bool {
        node.flags & TEXT != 0
            && node.children.is_empty()
            && self
                .subtype
                .as_ref()
                .is_none_or(|s| s.eq_ignore_ascii_case(b"plain"))
            && (self.params.is_empty()
                || (self.params.len() == 1
                    && self.params[0].0.eq_ignore_ascii_case(b"charset")
                    && self.params[0].1.eq_ignore_ascii_case(b"us-ascii")))
            && self.id.is_none()
            && self.description.is_none()
            && self
                .encoding
                .as_ref()
                .is_none_or(|e| e.eq_ignore_ascii_case(b"7bit"))
            && self.md5.is_none()
            && self.disposition.is_none()
            && self.language.is_empty()
            && self.location.is_none()
    }

    fn parse(header: &[u8]) -> PartData {
        let mut d = PartData::default();
        for field in Fields::new(header) {
            let name = field.name;
            if name.len() < 8 || !name[..8].eq_ignore_ascii_case(b"content-") {
                continue;
            }
            let value = field.value.unwrap_or(b"");
            let rest = &name[8..];
            if rest.eq_ignore_ascii_case(b"type") && d.r#type.is_none() {
                let mut p = Rfc822::new(value);
                let mut ct = Vec::new();
                let ret = p.parse_content_type(&mut ct);
                match ct.iter().position(|&b| b == b'/') {
                    Some(slash) => {
                        d.subtype = Some(ct[slash + 1..].to_vec());
                        ct.truncate(slash);
                    }
                    None => d.subtype = Some(Vec::new()),
                }
                d.r#type = Some(ct);
                if ret >= 0 {
                    d.params = p.parse_params();
                }
            } else if rest.eq_ignore_ascii_case(b"transfer-encoding") && d.encoding.is_none() {
                let mut p = Rfc822::new(value);
                let mut tok = Vec::new();
                if p.skip_lwsp() >= 0
                    && p.parse_mime_token(&mut tok) >= 0
                    && p.skip_lwsp() == 0
                    && !tok.is_empty()
                {
                    d.encoding = Some(tok);
                }
            } else if rest.eq_ignore_ascii_case(b"id") && d.id.is_none() {
                d.id = Some(value.to_vec());
            } else if rest.eq_ignore_ascii_case(b"md5") && d.md5.is_none() {
                d.md5 = Some(value.to_vec());
            } else if rest.eq_ignore_ascii_case(b"description") && d.description.is_none() {
                d.description = Some(value.to_vec());
            } else if rest.eq_ignore_ascii_case(b"location") && d.location.is_none() {
                d.location = Some(value.to_vec());
            } else if rest.eq_ignore_ascii_case(b"language") && d.language.is_empty() {
                let mut p = Rfc822::new(value);
                p.skip_lwsp();
                loop {
                    let mut tag = Vec::new();
                    if p.parse_atom(&mut tag) < 0 {
                        break;
                    }
                    d.language.push(tag);
                    if p.peek() != Some(b',') {
                        break;
                    }
                    p.pos += 1;
                    p.skip_lwsp();
                }
            } else if rest.eq_ignore_ascii_case(b"disposition") && d.disposition_params.is_empty() {
                let mut p = Rfc822::new(value);
                p.skip_lwsp();
                let mut tok = Vec::new();
                if p.parse_mime_token(&mut tok) >= 0 {
                    d.disposition = Some(tok);
                    d.disposition_params = p.parse_params();
                }
            }
        }
        d
    }

    fn disposition_tail(&self) -> Disposition<'static> {
        Disposition {
            disposition: self.disposition.as_ref().map(|d| {
                (
                    istring(Cow::Owned(d.clone())),
                    params(&self.disposition_params, false),
                )
            }),
            tail: Some(Language {
                language: self
                    .language
                    .iter()
                    .map(|l| istring(Cow::Owned(l.clone())))
                    .collect(),
                tail: Some(Location {
                    location: nstring(self.location.as_deref().map(nolf)),
                    extensions: Vec::new(),
                }),
            }),
        }
    }
}

fn params(
    list: &[(Vec<u8>, Vec<u8>)],
    default_charset: bool,
) -> Vec<(IString<'static>, IString<'static>)> {
    let mut out: Vec<(IString<'static>, IString<'static>)> = list
        .iter()
        .map(|(k, v)| {
            (
                istring(Cow::Owned(k.clone())),
                istring(Cow::Owned(v.clone())),
            )
        })
        .collect();
    if default_charset && !list.iter().any(|(k, _)| k.eq_ignore_ascii_case(b"charset")) {
        out.push((istr("charset"), istr("us-ascii")));
    }
    out
}

/// What Dovecot writes for a multipart without parts: one empty text/plain.
fn empty_body(extended: bool) -> BodyStructure<'static> {
    BodyStructure::Single {
        body: Body {
            basic: BasicFields {
                parameter_list: vec![(istr("charset"), istr("us-ascii"))],
                id: NString(None),
                description: NString(None),
                content_transfer_encoding: istr("7bit"),
                size: 0,
            },
            specific: SpecificFields::Text {
                subtype: istr("plain"),
                number_of_lines: 0,
            },
        },
        extension_data: extended.then(|| SinglePartExtensionData {
            md5: NString(None),
            tail: Some(Disposition {
                disposition: None,
                tail: Some(Language {
                    language: Vec::new(),
                    tail: Some(Location {
                        location: NString(None),
                        extensions: Vec::new(),
                    }),
                }),
            }),
        }),
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

#[cfg(test)]
mod tests {
    //! Expected answers are Dovecot 2.3.19's for the same bytes (checked against a running
    //! Dovecot with tests/clients/dovecot.sh), written the way imap-codec spells them: it sends
    //! the fixed type names of text and message/rfc822 parts as "TEXT" and "MESSAGE" "RFC822"
    //! where Dovecot echoes the header's spelling.

    use super::*;
    use imap_codec::ResponseCodec;
    use imap_codec::encode::Encoder;
    use imap_types::core::AString;
    use imap_types::fetch::MessageDataItem;
    use imap_types::response::{Data, Response};

    /// The wire form of one FETCH data item, without the `* 1 FETCH (NAME ` frame.
    fn wire(item: MessageDataItem<'static>) -> String {
        let resp = Response::Data(Data::Fetch {
            seq: NonZeroU32::MIN,
            items: Vec1::from(item),
        });
        let out =
            String::from_utf8_lossy(&ResponseCodec::default().encode(&resp).dump()).into_owned();
        let body = out
            .strip_prefix("* 1 FETCH (")
            .and_then(|s| s.strip_suffix(")\r\n"))
            .unwrap_or(&out)
            .to_owned();
        let space = body.find(' ').map_or(0, |i| i + 1);
        body[space..].to_owned()
    }

    fn env(raw: &[u8]) -> String {
        wire(MessageDataItem::Envelope(envelope(raw)))
    }

    fn bs(raw: &[u8]) -> String {
        wire(MessageDataItem::BodyStructure(body_structure(raw, true)))
    }

    fn body(raw: &[u8]) -> String {
        wire(MessageDataItem::Body(body_structure(raw, false)))
    }

    fn part(path: &[u32]) -> Part {
        let nums: Vec<NonZeroU32> = path.iter().filter_map(|&n| NonZeroU32::new(n)).collect();
        Part(Vec1::try_from(nums).expect("a part path"))
    }

    /// `BODY[<section>]` as text (`None` for a part that does not exist).
    fn sec(raw: &[u8], section: Option<Section<'_>>) -> Option<String> {
        super::section(raw, section.as_ref()).map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    fn names(list: &[&'static str]) -> Vec1<AString<'static>> {
        let v: Vec<AString<'static>> = list
            .iter()
            .map(|n| AString::try_from(*n).expect("a field name"))
            .collect();
        Vec1::try_from(v).expect("names")
    }

    const NESTED: &[u8] = b"From: Outer <outer@example.com>\r\n\
        Subject: nested\r\n\
        MIME-Version: 1.0\r\n\
        Content-Type: multipart/mixed; boundary=\"outer\"\r\n\
        \r\n\
        preamble\r\n\
        --outer\r\n\
        Content-Type: multipart/alternative; boundary=inner\r\n\
        \r\n\
        --inner\r\n\
        Content-Type: text/plain; charset=utf-8\r\n\
        Content-Transfer-Encoding: quoted-printable\r\n\
        \r\n\
        caf=C3=A9\r\n\
        --inner\r\n\
        Content-Type: text/html\r\n\
        \r\n\
        <p>hi</p>\r\n\
        --inner--\r\n\
        --outer\r\n\
        Content-Type: message/rfc822\r\n\
        Content-Disposition: attachment; filename=\"fwd.eml\"\r\n\
        \r\n\
        From: inner@example.org\r\n\
        Subject: =?utf-8?q?caf=C3=A9?=\r\n\
        Message-ID: <in@example.org>\r\n\
        \r\n\
        inner body\r\n\
        --outer--\r\n\
        epilogue\r\n";

    #[test]
    fn simple_text_message() {
        let raw = b"From: A <a@example.com>\r\nSubject: hi\r\n\r\nhello\r\n";
        assert_eq!(
            env(raw),
            r#"(NIL "hi" (("A" NIL "a" "example.com")) (("A" NIL "a" "example.com")) (("A" NIL "a" "example.com")) NIL NIL NIL NIL NIL)"#
        );
        assert_eq!(
            body(raw),
            r#"("TEXT" "plain" ("charset" "us-ascii") NIL NIL "7bit" 7 1)"#
        );
    }

    #[test]
    fn nested_multiparts_and_an_attached_message() {
        assert_eq!(
            bs(NESTED),
            concat!(
                r#"((("TEXT" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 9 0 NIL NIL NIL NIL)"#,
                r#"("TEXT" "html" ("charset" "us-ascii") NIL NIL "7bit" 9 0 NIL NIL NIL NIL) "alternative" ("boundary" "inner") NIL NIL NIL)"#,
                r#"("MESSAGE" "RFC822" NIL NIL NIL "7bit" 99 (NIL "=?utf-8?q?caf=C3=A9?=" ((NIL NIL "inner" "example.org")) ((NIL NIL "inner" "example.org")) ((NIL NIL "inner" "example.org")) NIL NIL NIL NIL "<in@example.org>") ("TEXT" "plain" ("charset" "us-ascii") NIL NIL "7bit" 10 0 NIL NIL NIL NIL) 4 NIL ("attachment" ("filename" "fwd.eml")) NIL NIL)"#,
                r#" "mixed" ("boundary" "outer") NIL NIL NIL)"#
            )
        );
        assert_eq!(
            body(NESTED),
            concat!(
                r#"((("TEXT" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 9 0)("TEXT" "html" ("charset" "us-ascii") NIL NIL "7bit" 9 0) "alternative")"#,
                r#"("MESSAGE" "RFC822" NIL NIL NIL "7bit" 99 (NIL "=?utf-8?q?caf=C3=A9?=" ((NIL NIL "inner" "example.org")) ((NIL NIL "inner" "example.org")) ((NIL NIL "inner" "example.org")) NIL NIL NIL NIL "<in@example.org>") ("TEXT" "plain" ("charset" "us-ascii") NIL NIL "7bit" 10 0) 4) "mixed")"#
            )
        );
    }

    #[test]
    fn sections_of_nested_parts() {
        let raw = NESTED;
        assert_eq!(
            sec(raw, Some(Section::Part(part(&[1, 1])))).as_deref(),
            Some("caf=C3=A9")
        );
        assert_eq!(
            sec(raw, Some(Section::Part(part(&[1, 2])))).as_deref(),
            Some("<p>hi</p>")
        );
        assert_eq!(
            sec(raw, Some(Section::Mime(part(&[1, 2])))).as_deref(),
            Some("Content-Type: text/html\r\n\r\n")
        );
        // A message/rfc822 part: its body is the whole message, its HEADER and TEXT the
        // message's, and its part 1 the message's (non-multipart) body.
        let inner = "From: inner@example.org\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\nMessage-ID: <in@example.org>\r\n\r\ninner body";
        assert_eq!(
            sec(raw, Some(Section::Part(part(&[2])))).as_deref(),
            Some(inner)
        );
        assert_eq!(
            sec(raw, Some(Section::Header(Some(part(&[2]))))).as_deref(),
            Some(&inner[..inner.len() - "inner body".len()])
        );
        assert_eq!(
            sec(raw, Some(Section::Text(Some(part(&[2]))))).as_deref(),
            Some("inner body")
        );
        assert_eq!(
            sec(raw, Some(Section::Part(part(&[2, 1])))).as_deref(),
            Some("inner body")
        );
        assert_eq!(
            sec(
                raw,
                Some(Section::HeaderFields(Some(part(&[2])), names(&["subject"])))
            )
            .as_deref(),
            Some("Subject: =?utf-8?q?caf=C3=A9?=\r\n\r\n")
        );
        // HEADER and TEXT of a part that holds no message, and parts that do not exist.
        assert_eq!(sec(raw, Some(Section::Header(Some(part(&[1, 1]))))), None);
        assert_eq!(sec(raw, Some(Section::Text(Some(part(&[1]))))), None);
        assert_eq!(sec(raw, Some(Section::Part(part(&[3])))), None);
        assert_eq!(sec(raw, Some(Section::Part(part(&[2, 2])))), None);
        assert_eq!(sec(raw, Some(Section::Part(part(&[1, 1, 2])))), None);
        // Part 1 of a single part is the part itself.
        assert_eq!(
            sec(raw, Some(Section::Part(part(&[1, 1, 1])))).as_deref(),
            Some("caf=C3=A9")
        );
        // The whole message, its header and text.
        assert_eq!(sec(raw, None).as_deref().map(str::len), Some(raw.len()));
        assert!(sec(raw, Some(Section::Text(None))).is_some_and(|t| t.starts_with("preamble\r\n")));
        assert_eq!(
            sec(
                raw,
                Some(Section::HeaderFields(None, names(&["SUBJECT", "from"])))
            )
            .as_deref(),
            Some("From: Outer <outer@example.com>\r\nSubject: nested\r\n\r\n")
        );
        assert_eq!(
            sec(
                raw,
                Some(Section::HeaderFieldsNot(
                    None,
                    names(&["content-type", "mime-version"])
                ))
            )
            .as_deref(),
            Some("From: Outer <outer@example.com>\r\nSubject: nested\r\n\r\n")
        );
    }

    #[test]
    fn part_one_of_a_single_part_message_is_its_body() {
        let raw = b"Subject: s\r\n\r\nbody\r\n";
        assert_eq!(
            sec(raw, Some(Section::Part(part(&[1])))).as_deref(),
            Some("body\r\n")
        );
        assert_eq!(
            sec(raw, Some(Section::Mime(part(&[1])))).as_deref(),
            Some("Subject: s\r\n\r\n")
        );
        assert_eq!(sec(raw, Some(Section::Part(part(&[2])))), None);
        // A message that is a message/rfc822: part 1 is the attached message, 1.1 its body.
        let raw = b"MIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\nFrom: in@x.y\r\nSubject: in\r\n\r\nhello\r\n";
        assert_eq!(
            sec(raw, Some(Section::Part(part(&[1])))).as_deref(),
            Some("From: in@x.y\r\nSubject: in\r\n\r\nhello\r\n")
        );
        assert_eq!(
            sec(raw, Some(Section::Part(part(&[1, 1])))).as_deref(),
            Some("hello\r\n")
        );
        assert_eq!(
            sec(raw, Some(Section::Header(Some(part(&[1]))))).as_deref(),
            Some("From: in@x.y\r\nSubject: in\r\n\r\n")
        );
    }

    #[test]
    fn envelope_values_are_raw_and_unfolded() {
        // Encoded-words stay encoded; folding is undone; subject and names lose extra blanks;
        // the other fields keep theirs; a repeated field is the last one, repeated address
        // fields add up.
        let raw = b"Subject: \t Re:  tabs\t\tand  spaces \r\n  folded\r\n\
            From: \"  Spaced   Name  \" <a@b.c>\r\n\
            Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\
            Date: second\r\n\
            Message-ID:\r\n <folded@id>\r\n\
            In-Reply-To: <a@b>\r\n  <c@d>\r\n\
            To: =?utf-8?q?x=C3=A9?= <e@w.c>\r\n\
            To: g@h.i\r\n\
            \r\n\
            body\r\n";
        assert_eq!(
            env(raw),
            concat!(
                r#"("second" "Re: tabs and spaces folded" (("Spaced Name" NIL "a" "b.c")) (("Spaced Name" NIL "a" "b.c")) (("Spaced Name" NIL "a" "b.c")) "#,
                r#"(("=?utf-8?q?x=C3=A9?=" NIL "e" "w.c")(NIL NIL "g" "h.i")) NIL NIL "<a@b>  <c@d>" " <folded@id>")"#
            )
        );
    }

    #[test]
    fn group_addresses() {
        let raw = b"From: a@b.c\r\nTo: undisclosed-recipients:;\r\n\
            Cc: Group: a@b.c, \"Q, N\" <d@e.f>;, g@h.i\r\n\
            Bcc: \"\": ;, empty:;\r\n\r\nbody\r\n";
        assert_eq!(
            env(raw),
            concat!(
                r#"(NIL NIL ((NIL NIL "a" "b.c")) ((NIL NIL "a" "b.c")) ((NIL NIL "a" "b.c")) "#,
                r#"((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) "#,
                r#"((NIL NIL "Group" NIL)(NIL NIL "a" "b.c")("Q, N" NIL "d" "e.f")(NIL NIL NIL NIL)(NIL NIL "g" "h.i")) "#,
                r#"((NIL NIL "" NIL)(NIL NIL NIL NIL)(NIL NIL "empty" NIL)(NIL NIL NIL NIL)) NIL NIL)"#
            )
        );
    }

    #[test]
    fn broken_addresses_as_dovecot_reads_them() {
        let raw = b"From: a@b.c (Comment Name)\r\n\
            To: <x@y.z>, \"Quoted, Name\" <q@r.s>, Name <@r1,@r2:a@b.c>, justlocal, =?utf-8?q?x=C3=A9?= <e@w.c>, Broken <a@b.c, \"unterminated <u@v.w>\r\n\
            Cc: a@b.c.,<>, @, x@, \"\" <y@z.w>, name only <>\r\n\
            Reply-To: a . b @ c . d, [lit]@x\r\n\
            Sender: ,,, a@b.c ,,\r\n\r\nbody\r\n";
        assert_eq!(
            env(raw),
            concat!(
                r#"(NIL NIL (("Comment Name" NIL "a" "b.c")) "#,
                r#"((NIL NIL "MISSING_MAILBOX" "MISSING_DOMAIN")(NIL NIL "MISSING_MAILBOX" "MISSING_DOMAIN")(NIL NIL "MISSING_MAILBOX" "MISSING_DOMAIN")(NIL NIL "a" "b.c")(NIL NIL "MISSING_MAILBOX" "MISSING_DOMAIN")) "#,
                r#"(("a. b" NIL "MISSING_MAILBOX" "MISSING_DOMAIN")) "#,
                r#"((NIL NIL "x" "y.z")("Quoted, Name" NIL "q" "r.s")("Name" "@r1,@r2" "a" "b.c")(NIL NIL "justlocal" "MISSING_DOMAIN")("=?utf-8?q?x=C3=A9?=" NIL "e" "w.c")("Broken" NIL "a" "SYNTAX_ERROR")(NIL NIL "MISSING_MAILBOX" "MISSING_DOMAIN")) "#,
                r#"((NIL NIL "a" "MISSING_DOMAIN")(NIL NIL "MISSING_MAILBOX" "MISSING_DOMAIN")(NIL NIL "MISSING_MAILBOX" "MISSING_DOMAIN")(NIL NIL "x" "MISSING_DOMAIN")(NIL NIL "y" "z.w")("name only" NIL "MISSING_MAILBOX" "MISSING_DOMAIN")) NIL NIL NIL)"#
            )
        );
    }

    #[test]
    fn missing_header_fields_are_nil() {
        assert_eq!(env(b""), "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)");
        assert_eq!(
            env(b"X-Other: 1\r\n\r\nbody"),
            "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
        );
        // An empty Subject is an empty string, an empty From no address.
        assert_eq!(
            env(b"Subject:    \r\nFrom:\r\n\r\n"),
            r#"(NIL "" NIL NIL NIL NIL NIL NIL NIL NIL)"#
        );
    }

    #[test]
    fn nul_and_eight_bit_header_values() {
        let raw = b"Subject: a\x00b \xc3\xa9t\xc3\xa9\r\nFrom: \"N\x00me\" <a@b.c>\r\n\r\nbody\r\n";
        let e = envelope(raw);
        assert_eq!(
            e.subject.into_option().as_deref(),
            Some("a\u{FFFD}b \u{e9}t\u{e9}".as_bytes())
        );
        assert_eq!(
            e.from[0].name.clone().into_option().as_deref(),
            Some("N\u{FFFD}me".as_bytes())
        );
    }

    #[test]
    fn content_type_variants() {
        let raw = b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n\
            --B\r\nContent-Type: text\r\n\r\na\r\n\
            --B\r\nContent-Type: TEXT/PLAIN; CHARSET=UTF-8; Format=flowed\r\n\r\nb\r\n\
            --B\r\nContent-Type: text/plain garbage\r\n\r\nc\r\n\
            --B\r\nContent-Type: application/x; name*0=\"a b\"; name*1=c; title*=utf-8''%E2%82%AC; f*1=x; f*0*=us-ascii''y%20\r\n\r\nd\r\n\
            --B\r\nContent-Type: image/png; name=\"q\\\"uo\\\\te\"; name=dup\r\n\
            Content-Disposition: attachment; filename=\"a.png\"; size=12\r\n\
            Content-Disposition: inline\r\n\
            Content-Language: en, de-CH\r\n\
            Content-Location: http://x/y\r\n z\r\n\
            Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\r\n\
            Content-ID: <cid@x>\r\n\
            Content-Description: a\r\n\tfolded  description\r\n\
            Content-Transfer-Encoding: BASE64\r\n\r\nAAAA\r\n\
            --B\r\nContent-Type: ;\r\n\r\ne\r\n\
            --B\r\nContent-Transfer-Encoding: x-uuencode (comment)\r\n\r\ng\r\n\
            --B--\r\n";
        assert_eq!(
            bs(raw),
            concat!(
                r#"(("TEXT" "" ("charset" "us-ascii") NIL NIL "7bit" 1 0 NIL NIL NIL NIL)"#,
                r#"("TEXT" "PLAIN" ("CHARSET" "UTF-8" "Format" "flowed") NIL NIL "7bit" 1 0 NIL NIL NIL NIL)"#,
                r#"("" "" NIL NIL NIL "7bit" 1 NIL NIL NIL NIL)"#,
                r#"("application" "x" ("f*" "us-ascii''y%20x" "name" "a bc" "title*1*" "utf-8''%E2%82%AC") NIL NIL "7bit" 1 NIL NIL NIL NIL)"#,
                "(\"image\" \"png\" (\"name\" \"q\\\"uo\\\\te\" \"name\" \"dup\") \"<cid@x>\" \"a\tfolded  description\" \"BASE64\" 4 \"Q2hlY2sgSW50ZWdyaXR5IQ==\" (\"attachment\" (\"filename\" \"a.png\" \"size\" \"12\")) (\"en\" \"de-CH\") \"http://x/y z\")",
                r#"("" "" NIL NIL NIL "7bit" 1 NIL NIL NIL NIL)"#,
                r#"("TEXT" "plain" ("charset" "us-ascii") NIL NIL "x-uuencode" 1 0 NIL NIL NIL NIL)"#,
                r#" "mixed" ("boundary" "B") NIL NIL NIL)"#
            )
        );
    }

    #[test]
    fn plain_us_ascii_messages_have_one_spelling() {
        for raw in [
            &b"Content-Type: text/plain; charset=US-ASCII\r\nContent-Transfer-Encoding: 7bit\r\n\r\nb\r\n"[..],
            b"MIME-Version: 1.0\r\nContent-Type: Text/Plain (comment) ; charset=\"us-ascii\" (c2)\r\nContent-Transfer-Encoding: 7BIT\r\n\r\nb\r\n",
            b"Subject: no MIME at all\r\n\r\nb\r\n",
        ] {
            assert_eq!(
                bs(raw),
                r#"("TEXT" "plain" ("charset" "us-ascii") NIL NIL "7bit" 3 1 NIL NIL NIL NIL)"#
            );
        }
    }

    #[test]
    fn multipart_digest_and_attached_messages() {
        // In a digest a part without Content-Type is a message; an attached message can hold
        // another; an empty one is still a message with an empty text body.
        let digest = b"MIME-Version: 1.0\r\nContent-Type: multipart/digest; boundary=D\r\n\r\n\
            --D\r\n\r\nFrom: x@y.z\r\nSubject: in digest\r\n\r\nbody1\r\n\
            --D\r\nContent-Type: text/plain\r\n\r\nbody2\r\n--D--\r\n";
        assert_eq!(
            body(digest),
            concat!(
                r#"(("MESSAGE" "RFC822" NIL NIL NIL "7bit" 40 (NIL "in digest" ((NIL NIL "x" "y.z")) ((NIL NIL "x" "y.z")) ((NIL NIL "x" "y.z")) NIL NIL NIL NIL NIL) ("TEXT" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 0) 3)"#,
                r#"("TEXT" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 0) "digest")"#
            )
        );
        let nested = b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=O\r\n\r\n\
            --O\r\nContent-Type: message/rfc822\r\n\r\n\
            From: inner@x.y\r\nSubject: inner\r\nMIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\n\
            From: inner2@x.y\r\nSubject: inner2\r\n\r\ntext\r\n\
            --O\r\nContent-Type: message/rfc822\r\n\r\n--O--\r\n";
        assert_eq!(
            body(nested),
            concat!(
                r#"(("MESSAGE" "RFC822" NIL NIL NIL "7bit" 125 (NIL "inner" ((NIL NIL "inner" "x.y")) ((NIL NIL "inner" "x.y")) ((NIL NIL "inner" "x.y")) NIL NIL NIL NIL NIL) "#,
                r#"("MESSAGE" "RFC822" NIL NIL NIL "7bit" 41 (NIL "inner2" ((NIL NIL "inner2" "x.y")) ((NIL NIL "inner2" "x.y")) ((NIL NIL "inner2" "x.y")) NIL NIL NIL NIL NIL) ("TEXT" "plain" ("charset" "us-ascii") NIL NIL "7bit" 4 0) 3) 8)"#,
                r#"("MESSAGE" "RFC822" NIL NIL NIL "7bit" 0 (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) ("TEXT" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0) 0) "mixed")"#
            )
        );
        // The second attached message's blank line belongs to the closing boundary: its MIME
        // header ends without it and the message's HEADER.FIELDS are read past it.
        assert_eq!(
            sec(nested, Some(Section::Mime(part(&[2])))).as_deref(),
            Some("Content-Type: message/rfc822\r\n")
        );
        assert_eq!(
            sec(
                nested,
                Some(Section::HeaderFields(Some(part(&[2])), names(&["subject"])))
            )
            .as_deref(),
            Some("\r\n")
        );
        assert_eq!(
            sec(nested, Some(Section::Part(part(&[1, 1, 1])))).as_deref(),
            Some("text")
        );
    }

    #[test]
    fn broken_boundaries() {
        // No boundary parameter, no parts, a boundary cutting a header short, text after the
        // closing boundary, a boundary longer than 80 octets (Dovecot cuts it), boundaries that
        // are prefixes of each other and one that ends in dashes.
        let cases: [(&[u8], &str); 6] = [
            (
                b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed\r\n\r\nhello\r\n",
                r#"(("TEXT" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0) "mixed")"#,
            ),
            (
                b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=Z\r\n\r\npreamble only\r\n",
                r#"(("TEXT" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0) "mixed")"#,
            ),
            (
                b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=H\r\n\r\n--H\r\nContent-Type: text/plain\r\n--H\r\nContent-Type: text/plain\r\n\r\nx\r\n--H--\r\n",
                r#"(("TEXT" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0)("TEXT" "plain" ("charset" "us-ascii") NIL NIL "7bit" 1 0) "mixed")"#,
            ),
            (
                b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=P\r\n\r\npre\r\n--P\r\n\r\na\r\n--P--\r\nepilogue\r\n--P\r\nafter close\r\n",
                r#"(("TEXT" "plain" ("charset" "us-ascii") NIL NIL "7bit" 1 0) "mixed")"#,
            ),
            (
                b"Content-Type: multipart/mixed; boundary=\"a--\"\n\n--a--\nContent-Type: multipart/mixed; boundary=\"a----\"\n\n--a----\nContent-Type: text/plain\n\nbody\n--a------\nContent-Type: text/html\n\nbody2\n--a----\r\n",
                r#"((("TEXT" "plain" ("charset" "us-ascii") NIL NIL "7bit" 4 0) "mixed") "mixed")"#,
            ),
            (
                b"Content-Type: multipart/alternative;\n boundary=\"--120710081418BV.24190.Texte--\"\r\nMime-Version: 1.0\r\n\r\n\r\n----120710081418BV.24190.Texte--\r\nContent-Type: text/plain;\r\n  charset=\"UTF-8\"\r\n\r\nHi\n\r\n----120710081418BV.24190.Texte--\r\nContent-Type: text/html;\r\n  charset=\"UTF-8\"\r\n\r\n<html><body>Hi</body></html>\r\n\r\n----120710081418BV.24190.Texte----\r\n",
                r#"(("TEXT" "plain" ("charset" "UTF-8") NIL NIL "7bit" 4 1)("TEXT" "html" ("charset" "UTF-8") NIL NIL "7bit" 30 1) "alternative")"#,
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(body(raw), want, "{}", String::from_utf8_lossy(raw));
        }
        let long = [
            &b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\""[..],
            &[b'x'; 90],
            b"\"\r\n\r\n--",
            &[b'x'; 90],
            b"\r\nContent-Type: text/plain\r\n\r\nbody\r\n--",
            &[b'x'; 80],
            b"--\r\n",
        ]
        .concat();
        assert_eq!(
            body(&long),
            r#"(("TEXT" "plain" ("charset" "us-ascii") NIL NIL "7bit" 4 0) "mixed")"#
        );
    }

    #[test]
    fn bare_lf_counts_as_crlf() {
        let raw = b"From: a@b.c\nMIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=\"L\"\n\n--L\nContent-Type: text/plain\n\nline1\nline2\n--L\nContent-Type: text/html\n\n<p>x</p>\n--L--\n";
        assert_eq!(
            body(raw),
            r#"(("TEXT" "plain" ("charset" "us-ascii") NIL NIL "7bit" 12 1)("TEXT" "html" ("charset" "us-ascii") NIL NIL "7bit" 8 0) "alternative")"#
        );
        assert_eq!(
            sec(raw, Some(Section::Part(part(&[1])))).as_deref(),
            Some("line1\r\nline2")
        );
        let whole = super::section(raw, None).unwrap_or_default();
        assert!(!whole.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'));
        assert_eq!(
            whole.len(),
            raw.len() + raw.iter().filter(|&&b| b == b'\n').count()
        );
    }

    #[test]
    fn header_fields_blank_line_rules() {
        // HEADER.FIELDS of the message always ends with the blank line; HEADER.FIELDS.NOT only
        // when the header has one (Dovecot).
        let no_blank = b"From: a@b.c\r\nSubject: no body";
        assert_eq!(
            sec(
                no_blank,
                Some(Section::HeaderFields(None, names(&["from", "subject"])))
            )
            .as_deref(),
            Some("From: a@b.c\r\nSubject: no body\r\n")
        );
        assert_eq!(
            sec(
                no_blank,
                Some(Section::HeaderFieldsNot(None, names(&["x"])))
            )
            .as_deref(),
            Some("From: a@b.c\r\nSubject: no body")
        );
        assert_eq!(
            sec(b"", Some(Section::HeaderFields(None, names(&["x"])))).as_deref(),
            Some("\r\n")
        );
        assert_eq!(
            sec(b"", Some(Section::HeaderFieldsNot(None, names(&["x"])))).as_deref(),
            Some("")
        );
    }

    #[test]
    fn partial_windows() {
        let nz = NonZeroU32::new;
        assert_eq!(partial(b"0123456789", 0, nz(3)), b"012");
        assert_eq!(partial(b"0123456789", 8, nz(5)), b"89");
        assert_eq!(partial(b"0123456789", 10, nz(5)), b"");
        assert_eq!(partial(b"0123456789", 4_000_000_000, nz(5)), b"");
        assert_eq!(partial(b"0123456789", 3, None), b"3456789");
    }

    #[test]
    fn header_decoding_and_dates() {
        assert_eq!(
            decode_header(b"=?iso-8859-1?Q?Die_Hasen_und_die_Fr\xf6sche?="),
            "Die Hasen und die Fr\u{f6}sche"
        );
        assert_eq!(
            decode_header(b"=?UTF-8?B?Y2Fmw6k=?= =?utf-8?q?_au_lait?=."),
            "caf\u{e9} au lait."
        );
        assert_eq!(decode_header(b"a =?bogus?x?y?= b"), "a =?bogus?x?y?= b");
        assert_eq!(
            parse_date(b"Fri, 21 Nov 1997 09(comment):   55  :  06 -0600"),
            Some(880_127_706)
        );
        assert_eq!(parse_date(b"21 Nov 97 09:55:06 GMT"), Some(880_106_106));
        assert_eq!(parse_date(b"Wed, 15 Dec 2010    59:10 -0500"), None);
        assert_eq!(parse_date(b"Thu,"), None);
        assert_eq!(
            parse_date(b"Thu, 13 Feb 1969 23:32:54 -0330"),
            Some(-27_723_426)
        );
    }

    /// Every prefix of a tricky message parses without panicking and with consistent sizes.
    #[test]
    fn truncated_input_never_panics() {
        for raw in [NESTED, &b"Content-Type: multipart/mixed; boundary=\"a--\"\n\n--a--\nContent-Type: message/rfc822\n\nContent-Type: multipart/digest; boundary=a\n\n--a\n\nFrom: (x\n--a--"[..]] {
            for end in 0..=raw.len() {
                let raw = &raw[..end];
                let _ = envelope(raw);
                check_sizes(raw);
            }
        }
    }

    /// Invariants between BODYSTRUCTURE and the section bytes, for every part of `raw`.
    fn check_sizes(raw: &[u8]) {
        fn walk(tree: &Tree<'_>, b: &BodyStructure<'_>, path: &mut Vec<u32>) {
            match b {
                BodyStructure::Multi { bodies, .. } => {
                    for (i, child) in bodies.as_ref().iter().enumerate() {
                        path.push(u32::try_from(i + 1).unwrap_or(u32::MAX));
                        walk(tree, child, path);
                        path.pop();
                    }
                }
                BodyStructure::Single { body, .. } => {
                    let p = if path.is_empty() {
                        vec![1]
                    } else {
                        path.clone()
                    };
                    let bytes = tree.section(&Section::Part(part(&p)));
                    // A multipart without parts reports one empty part it does not have.
                    let Some(bytes) = bytes else {
                        assert_eq!(body.basic.size, 0, "{p:?}");
                        return;
                    };
                    assert_eq!(body.basic.size as usize, bytes.len(), "size of {p:?}");
                    let lines = bytes.iter().filter(|&&c| c == b'\n').count();
                    match &body.specific {
                        SpecificFields::Text {
                            number_of_lines, ..
                        }
                        | SpecificFields::Message {
                            number_of_lines, ..
                        } => {
                            assert_eq!(*number_of_lines as usize, lines, "lines of {p:?}");
                        }
                        SpecificFields::Basic { .. } => {}
                    }
                    if let SpecificFields::Message { body_structure, .. } = &body.specific {
                        let mut inner = p.clone();
                        if !matches!(**body_structure, BodyStructure::Multi { .. }) {
                            inner.push(1);
                        }
                        walk(tree, body_structure, &mut inner);
                    }
                }
            }
        }
        let tree = Tree::parse(raw);
        let b = tree.structure(0, true);
        let _ = tree.structure(0, false);
        walk(&tree, &b, &mut Vec::new());
    }

    /// The whole shared corpus: no panic, and sizes and line counts that match the bytes.
    #[test]
    fn corpus_structure_is_consistent() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
        if !root.is_dir() {
            eprintln!("notice: {} absent, corpus check skipped", root.display());
            return;
        }
        let mut stack = vec![root];
        let mut n = 0;
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let path = e.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Ok(raw) = std::fs::read(&path) {
                    let _ = envelope(&raw);
                    check_sizes(&raw);
                    let _ = super::section(&raw, Some(&Section::Header(None)));
                    n += 1;
                }
            }
        }
        assert!(n > 1000, "only {n} corpus files");
    }
}
