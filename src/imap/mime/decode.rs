//! Header values read as text, dates and message ids, for THREAD (and sorting): RFC 2047
//! encoded-words, Date fields, `<id>`s.

use super::rfc822::Rfc822;

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
