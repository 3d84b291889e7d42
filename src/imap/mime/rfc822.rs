//! RFC 822 tokens the way Dovecot's rfc822-parser reads them: atoms, dot-atoms, quoted strings,
//! comments, domain literals and phrases, with its answers (1 more, 0 end, -1 broken).

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

pub(super) struct Rfc822<'a> {
    pub(super) data: &'a [u8],
    pub(super) pos: usize,
    pub(super) last_comment: Option<Vec<u8>>,
    pub(super) nul_replacement: bool,
}

impl<'a> Rfc822<'a> {
    pub(super) fn new(data: &'a [u8]) -> Self {
        Rfc822 {
            data,
            pos: 0,
            last_comment: None,
            nul_replacement: false,
        }
    }

    pub(super) fn with_comments(data: &'a [u8]) -> Self {
        Rfc822 {
            data,
            pos: 0,
            last_comment: Some(Vec::new()),
            nul_replacement: true,
        }
    }

    pub(super) fn peek(&self) -> Option<u8> {
        self.data.get(self.pos).copied()
    }

    pub(super) fn at_end(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// 1: more data, 0: end, -1: broken comment.
    pub(super) fn more(&self) -> i32 {
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

    pub(super) fn skip_lwsp(&mut self) -> i32 {
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

    pub(super) fn parse_atom(&mut self, out: &mut Vec<u8>) -> i32 {
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

    pub(super) fn parse_dot_atom(&mut self, out: &mut Vec<u8>) -> i32 {
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

    pub(super) fn parse_mime_token(&mut self, out: &mut Vec<u8>) -> i32 {
        let start = self.pos;
        while self.peek().is_some_and(is_token_char) {
            self.pos += 1;
        }
        out.extend_from_slice(&self.data[start..self.pos]);
        if self.at_end() { 0 } else { self.skip_lwsp() }
    }

    pub(super) fn parse_quoted_string(&mut self, out: &mut Vec<u8>) -> i32 {
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

    pub(super) fn parse_phrase(&mut self, out: &mut Vec<u8>) -> i32 {
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
    pub(super) fn parse_domain(&mut self, out: &mut Vec<u8>) -> i32 {
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
}
