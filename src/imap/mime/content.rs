//! The Content-* fields of a part as Dovecot keeps them for BODYSTRUCTURE: type and subtype as
//! written, parameters raw with RFC 2231 continuations merged, encoding, id, description, MD5,
//! disposition, language and location.
//!
//! Not mail-parser's Content-Type reader: it decodes RFC 2231 values and encoded-words, while
//! BODYSTRUCTURE carries parameters as written (continuations joined the way Dovecot joins them,
//! broken ones kept under their own names).

use super::header::Fields;
use super::rfc822::Rfc822;

impl Rfc822<'_> {
    /// `type/subtype` into `out` (as written); -1 when broken, and then `out` keeps the type
    /// only when there was nothing after it but a broken subtype part.
    pub(super) fn parse_content_type(&mut self, out: &mut Vec<u8>) -> i32 {
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
    pub(super) fn parse_params(&mut self) -> Vec<(Vec<u8>, Vec<u8>)> {
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

/// Content-* fields of a part, as Dovecot keeps them for BODYSTRUCTURE.
#[derive(Debug, Default)]
pub(super) struct PartData {
    pub(super) r#type: Option<Vec<u8>>,
    pub(super) subtype: Option<Vec<u8>>,
    pub(super) params: Vec<(Vec<u8>, Vec<u8>)>,
    pub(super) id: Option<Vec<u8>>,
    pub(super) description: Option<Vec<u8>>,
    pub(super) encoding: Option<Vec<u8>>,
    pub(super) md5: Option<Vec<u8>>,
    pub(super) disposition: Option<Vec<u8>>,
    pub(super) disposition_params: Vec<(Vec<u8>, Vec<u8>)>,
    pub(super) language: Vec<Vec<u8>>,
    pub(super) location: Option<Vec<u8>>,
}

impl PartData {
    pub(super) fn parse(header: &[u8]) -> PartData {
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
}
