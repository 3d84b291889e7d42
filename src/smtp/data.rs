//! The DATA phase as a byte-level state machine: dot-unstuffing, the size
//! cap, and the end-of-data sequence. Pure; fed whatever the socket gave.
//!
//! Only `<CRLF>.<CRLF>` ends the data (RFC 5321 §4.1.1.4). A `.` line ended
//! by a bare LF, or a dot line after a bare-LF line, is content: accepting
//! `<LF>.<LF>` as an end is what makes SMTP smuggling possible. Lines of any
//! length are accepted (§4.5.3.1: avoid limits); the message size cap bounds
//! them. Bytes are kept as received apart from the removed stuffing dots.

/// Progress of one DATA transfer.
#[derive(Debug)]
pub struct DataReceiver {
    max: usize,
    body: Vec<u8>,
    /// Bytes of content seen, including any past the cap.
    size: usize,
    overflow: bool,
    /// At the first byte of a line.
    at_line_start: bool,
    /// The previous line ended with CRLF (true at the start of data).
    crlf_before: bool,
    /// The last content byte was CR (for CRLF split across reads).
    last_cr: bool,
    dot: DotState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DotState {
    None,
    Dot,
    DotCr,
}

/// What a finished transfer produced.
#[derive(Debug, PartialEq, Eq)]
pub enum DataOutcome {
    Complete(Vec<u8>),
    /// The content was larger than the cap; it was counted, not kept.
    TooLarge {
        size: usize,
    },
}

impl DataReceiver {
    pub fn new(max: usize) -> DataReceiver {
        DataReceiver {
            max,
            body: Vec::new(),
            size: 0,
            overflow: false,
            at_line_start: true,
            crlf_before: true,
            last_cr: false,
            dot: DotState::None,
        }
    }

    /// Content bytes seen so far.
    pub fn size(&self) -> usize {
        self.size
    }

    fn push(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.size = self.size.saturating_add(bytes.len());
        if self.overflow || self.size > self.max {
            if !self.overflow {
                self.overflow = true;
                self.body = Vec::new();
            }
        } else {
            self.body.extend_from_slice(bytes);
        }
        self.last_cr = bytes.last() == Some(&b'\r');
    }

    /// Feeds bytes; returns how many were consumed when the end of data was
    /// reached (the rest belongs to the next command), or `None` when all
    /// were consumed and more are needed.
    pub fn feed(&mut self, input: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < input.len() {
            if self.at_line_start {
                let b = input[i];
                match self.dot {
                    DotState::None => {
                        if b == b'.' {
                            self.dot = DotState::Dot;
                            i += 1;
                        } else {
                            self.at_line_start = false;
                        }
                    }
                    DotState::Dot => {
                        if b == b'\r' {
                            self.dot = DotState::DotCr;
                            i += 1;
                        } else {
                            // A stuffed dot: drop it; the line goes on.
                            self.dot = DotState::None;
                            self.at_line_start = false;
                        }
                    }
                    DotState::DotCr => {
                        self.dot = DotState::None;
                        if b == b'\n' && self.crlf_before {
                            return Some(i + 1);
                        }
                        // ".\r" that does not end the data: the dot was
                        // stuffing, the CR is content.
                        self.push(b"\r");
                        self.at_line_start = false;
                    }
                }
                continue;
            }
            let rest = &input[i..];
            match rest.iter().position(|&b| b == b'\n') {
                None => {
                    self.push(rest);
                    i = input.len();
                }
                Some(pos) => {
                    let line = &rest[..=pos];
                    let cr = if pos > 0 {
                        rest[pos - 1] == b'\r'
                    } else {
                        self.last_cr
                    };
                    self.push(line);
                    self.crlf_before = cr;
                    self.at_line_start = true;
                    i += pos + 1;
                }
            }
        }
        None
    }

    /// Takes the result after [`feed`](Self::feed) reported the end.
    pub fn finish(self) -> DataOutcome {
        if self.overflow {
            DataOutcome::TooLarge { size: self.size }
        } else {
            DataOutcome::Complete(self.body)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]], max: usize) -> (Option<DataOutcome>, Vec<u8>) {
        let mut r = DataReceiver::new(max);
        for (n, chunk) in chunks.iter().enumerate() {
            if let Some(used) = r.feed(chunk) {
                let mut rest = chunk[used..].to_vec();
                for c in &chunks[n + 1..] {
                    rest.extend_from_slice(c);
                }
                return (Some(r.finish()), rest);
            }
        }
        (None, Vec::new())
    }

    fn complete(chunks: &[&[u8]]) -> Vec<u8> {
        match run(chunks, 1 << 20).0 {
            Some(DataOutcome::Complete(b)) => b,
            other => panic!("not complete: {other:?}"),
        }
    }

    #[test]
    fn table() {
        let cases: &[(&[u8], &[u8])] = &[
            (b".\r\n", b""),
            (
                b"Subject: x\r\n\r\nhi\r\n.\r\n",
                b"Subject: x\r\n\r\nhi\r\n",
            ),
            (b"a\r\n..b\r\n.\r\n", b"a\r\n.b\r\n"),
            (b"a\r\n..\r\n.\r\n", b"a\r\n.\r\n"),
            (b"...\r\n.\r\n", b"..\r\n"),
            // bare LF content is kept as is
            (b"a\nb\n\r\n.\r\n", b"a\nb\n\r\n"),
            // <LF>.<LF> and <LF>.<CRLF> do not end the data (smuggling)
            (
                b"a\n.\nMAIL FROM:<x@y>\r\n.\r\n",
                b"a\n\nMAIL FROM:<x@y>\r\n",
            ),
            (b"a\n.\r\nb\r\n.\r\n", b"a\n\r\nb\r\n"),
            (b"a\r\n.\nb\r\n.\r\n", b"a\r\n\nb\r\n"),
            // dot followed by CR and something else
            (b".\rx\r\n.\r\n", b"\rx\r\n"),
        ];
        for (input, expected) in cases {
            assert_eq!(
                complete(&[input]),
                expected.to_vec(),
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn split_anywhere_gives_the_same_result() {
        let input: &[u8] = b"From: a@b\r\n\r\n..x\r\nline\nbare\r\n.\r\nQUIT\r\n";
        let whole = run(&[input], 1 << 20);
        for cut in 0..input.len() {
            let (a, b) = input.split_at(cut);
            let split = run(&[a, b], 1 << 20);
            assert_eq!(split, whole, "cut at {cut}");
        }
        assert_eq!(whole.1, b"QUIT\r\n".to_vec());
        for cuts in [vec![1usize; input.len()]] {
            let mut chunks = Vec::new();
            let mut at = 0;
            for c in cuts {
                chunks.push(&input[at..at + c]);
                at += c;
            }
            assert_eq!(run(&chunks, 1 << 20), whole, "byte at a time");
        }
    }

    #[test]
    fn oversize_is_counted_not_kept() {
        let mut r = DataReceiver::new(10);
        assert_eq!(r.feed(b"0123456789ABCDEF\r\n"), None);
        assert_eq!(r.feed(b".\r\n"), Some(3));
        assert_eq!(r.finish(), DataOutcome::TooLarge { size: 18 });
    }

    #[test]
    fn exactly_at_the_cap_is_accepted() {
        let mut r = DataReceiver::new(5);
        assert_eq!(r.feed(b"abc\r\n.\r\n"), Some(8));
        assert_eq!(r.finish(), DataOutcome::Complete(b"abc\r\n".to_vec()));
    }

    #[test]
    fn a_long_line_without_newline_is_fine() {
        let big = vec![b'x'; 3_000_000];
        let mut r = DataReceiver::new(4_000_000);
        assert_eq!(r.feed(&big), None);
        assert_eq!(r.feed(b"\r\n.\r\n"), Some(5));
        match r.finish() {
            DataOutcome::Complete(b) => assert_eq!(b.len(), 3_000_002),
            other => panic!("{other:?}"),
        }
    }
}
