//! A header block as Dovecot splits it: physical lines and fields (name, raw value with its
//! continuation lines), up to the blank line.
//!
//! Not mail-parser's header reader: ENVELOPE, the sizes `tree` counts and HEADER.FIELDS all need
//! Dovecot's split, and mail-parser splits malformed headers differently (an indented line after
//! a line without a colon starts a new field there and continues one here, blanks inside a name
//! are dropped, a leading colon is part of the name), which changes the field list of 150 of the
//! shared corpus's 1,183 messages.

pub(super) fn is_lwsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

pub(super) fn find_lf(data: &[u8], from: usize) -> Option<usize> {
    memchr::memchr(b'\n', data.get(from..)?).map(|i| from + i)
}

/// One header field. `value` runs from after the colon (initial blanks skipped) to the end of
/// its last continuation line, inner line breaks included; `None` for a line without a colon.
#[derive(Debug, Clone, Copy)]
pub(super) struct Field<'a> {
    pub(super) name: &'a [u8],
    pub(super) value: Option<&'a [u8]>,
}

/// A physical line: `[start, end)` without its line break, `next` after it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Line {
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) next: usize,
    /// Bytes of the line break: 0 (end of data), 1 (LF) or 2 (CRLF).
    pub(super) newline: usize,
}

pub(super) fn line_at(data: &[u8], start: usize) -> Line {
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
pub(super) fn is_blank_line(data: &[u8], start: usize) -> bool {
    match data.get(start) {
        Some(b'\n') => true,
        Some(b'\r') => data.get(start + 1) == Some(&b'\n'),
        _ => false,
    }
}

/// The fields of a header block (which ends at its blank line or at the end of `data`).
pub(super) struct Fields<'a> {
    pub(super) data: &'a [u8],
    pub(super) pos: usize,
}

impl<'a> Fields<'a> {
    pub(super) fn new(data: &'a [u8]) -> Self {
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
