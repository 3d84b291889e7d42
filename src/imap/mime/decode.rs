//! Header values read as text, dates and message ids, for THREAD (and sorting): RFC 2047
//! encoded-words, Date fields, `<id>`s.

use mail_parser::parsers::MessageStream;

use super::rfc822::Rfc822;

/// A header value as UTF-8 text: RFC 2047 encoded-words decoded (blanks between two of them
/// dropped, a broken one left as written), charsets converted, invalid UTF-8 replaced (Dovecot's
/// `message_header_decode_utf8`).
///
/// Each encoded-word is decoded by mail-parser (its Q/B decoders and charset tables, the ones
/// ingest and JMAP use). Only the joining of words and plain text is Dovecot's: mail-parser's
/// unstructured-field reader puts a space between an encoded-word and text written right after
/// it (`=?utf-8?b?…?=. Mail failure.` gets `… . Mail failure.`), and on the shared corpus that
/// changes eight base subjects and the THREAD answer Dovecot gives. Where a word is broken the
/// decoding is mail-parser's too: a B word loses an unpadded last group and one with an octet
/// outside base64 stays as written, where Dovecot keeps what decodes (no Subject in the corpus
/// has either).
#[must_use]
pub fn decode_header(value: &[u8]) -> String {
    let mut out = String::with_capacity(value.len());
    let mut start = 0;
    let mut pos = 0;
    while let Some(at) = memchr::memmem::find(value.get(pos..).unwrap_or_default(), b"=?") {
        pos += at;
        let Some((decoded, used)) = encoded_word(value.get(pos..).unwrap_or_default()) else {
            // Not an encoded-word: its "=?" stays in the plain text.
            pos += 2;
            continue;
        };
        let plain = value.get(start..pos).unwrap_or_default();
        if !plain
            .iter()
            .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        {
            out.push_str(&String::from_utf8_lossy(plain));
        }
        out.push_str(&decoded);
        pos += used;
        start = pos;
    }
    if let Some(rest) = value.get(start..) {
        out.push_str(&String::from_utf8_lossy(rest));
    }
    out
}

/// The encoded-word at the start of `data` (`=?charset?enc?text?=`), decoded, and its length.
///
/// The word ends where Dovecot ends it, at the third `?` (which must be followed by `=`), and only
/// that slice goes to mail-parser: its Q decoder reads on past a `?` that is not followed by `=`,
/// so given the rest of the value, every `=?` of a long run like `=?ab?q?a=?ab?q?a…` would be read
/// to the end of the value (quadratic work on one hostile Subject).
fn encoded_word(data: &[u8]) -> Option<(String, usize)> {
    let body = data.get(2..)?;
    let mut marks = memchr::memchr_iter(b'?', body);
    let (_, _, last) = (marks.next()?, marks.next()?, marks.next()?);
    if body.get(last + 1) != Some(&b'=') {
        return None;
    }
    let used = 2 + last + 2;
    // mail-parser reads an encoded-word from the "?" after its "=".
    let mut word = MessageStream::new(data.get(1..used)?);
    word.decode_rfc2047().map(|text| (text, used))
}

/// A Date header value as seconds since the epoch, parsed the way Dovecot does (RFC 2822 with
/// comments and blanks anywhere, 2-digit years, `.` for `:`, unknown zones as UTC); `None` when
/// it cannot be read.
///
/// Which dates are readable is Dovecot's rule, not mail-parser's: THREAD orders by these dates
/// and falls back to the received date for the rest, and mail-parser's lenient reader disagrees
/// on 10 of the corpus's 957 Date fields (it refuses `Wed, 3 May 2007 23:34:45`, which Dovecot
/// reads as UTC, reads `Thu 29 Apr 2010 …` and `Tue, 029 Apr 2019 …`, which Dovecot refuses,
/// and skips a comment inside the time differently), which reorders Dovecot's THREAD answer.
/// The calendar arithmetic is mail-parser's.
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
    let (Ok(year), Ok(month), Ok(day), Ok(hour), Ok(minute), Ok(second)) = (
        u16::try_from(year),
        u8::try_from(month + 1),
        u8::try_from(day),
        u8::try_from(hour),
        u8::try_from(min),
        u8::try_from(sec),
    ) else {
        return None;
    };
    // The calendar is mail-parser's (proleptic Gregorian, as timegm counts).
    let date = mail_parser::DateTime {
        year,
        month,
        day,
        hour,
        minute,
        second,
        tz_before_gmt: offset < 0,
        tz_hour: u8::try_from(offset.abs() / 60).ok()?,
        tz_minute: u8::try_from(offset.abs() % 60).ok()?,
    };
    Some(date.to_timestamp())
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
/// `message_id_get_next`): brackets gone, blanks and comments removed. Dovecot's rule rather than
/// mail-parser's `parse_id`, which takes any `<…>` (no `@` needed) and so links threads Dovecot
/// does not.
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
