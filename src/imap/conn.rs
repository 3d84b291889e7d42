//! The I/O side of one IMAP connection: drives imap-next's sans-I/O
//! [`Server`] (command framing, literal continuations, IDLE and
//! AUTHENTICATE flows) over any async stream (plain TCP or rustls), and
//! collects output in one buffer that goes out in large writes.
//!
//! imap-next ships its own `Stream` driver, but that one writes every
//! response with its own system call and reports every sent response as an
//! event; a `UID FETCH 1:*` over ten thousand messages would cost ten
//! thousand writes and wake-ups. Here the responses of a command are
//! appended to one buffer (bulk FETCH data is encoded straight into it with
//! imap-codec, see [`Conn::write_encoded`]) and flushed when large or when
//! the command is done.

use std::collections::VecDeque;
use std::time::Duration;

use imap_codec::ResponseCodec;
use imap_codec::encode::{Encoder, Fragment};
use imap_next::server::{Error as FlowError, Event, Options, Server};
use imap_next::{Interrupt, Io, State};
use imap_types::response::{Data, Greeting, Response, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Output is written out once this much is waiting.
pub const FLUSH_AT: usize = 256 * 1024;
const READ_CHUNK: usize = 16 * 1024;

/// Something the client sent.
#[derive(Debug)]
pub enum Input {
    Event(Event),
    /// A message imap-next refused (unparsable, too long); `tag` when one
    /// could be read from its start, so the answer can be tagged.
    Refused {
        tag: Option<String>,
        reason: &'static str,
    },
    /// A too-long literal: imap-next has already answered it `BAD`.
    Answered,
}

pub struct Conn<S> {
    io: S,
    server: Server,
    /// Until login: the small limits imap-next cannot apply by itself (its
    /// limits are fixed when the connection starts, sized for APPEND).
    preauth: Option<Preauth>,
    out: Vec<u8>,
    pending: VecDeque<Input>,
    buf: Box<[u8]>,
    write_timeout: Duration,
}

/// The limits before login, which imap-next cannot apply by itself (its
/// limits are fixed when the connection starts, sized for APPEND after
/// login). Input is passed on a whole line at a time: a line longer than
/// `max_line` is dropped up to its end and answered `BAD` ("Command line
/// too long"), a literal announced larger than `max_literal` is not passed
/// on and answered `BAD` ("Literal too large"; a non-synchronizing one's
/// bytes, and the rest of its line, are read and dropped); literal data
/// within the limit is passed on as it comes. So an unauthenticated client
/// can make the server hold no more than before, and the session goes on.
struct Preauth {
    max_line: usize,
    max_literal: u64,
    /// The line being assembled (at most `max_line` bytes).
    line: Vec<u8>,
    /// Literal data still to pass on unread.
    literal_left: u64,
    /// What is being dropped.
    drop: Dropping,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dropping {
    Nothing,
    /// Up to the next LF.
    Line,
    /// This many literal bytes, then up to the next LF.
    Literal(u64),
}

/// What the framer hands on.
#[derive(Debug, PartialEq, Eq)]
enum Framed {
    Pass(Vec<u8>),
    Refuse {
        tag: Option<String>,
        reason: &'static str,
    },
}

impl Preauth {
    fn new(max_line: usize, max_literal: u64) -> Preauth {
        Preauth {
            max_line,
            max_literal,
            line: Vec::new(),
            literal_left: 0,
            drop: Dropping::Nothing,
        }
    }

    fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<Framed>) {
        while !bytes.is_empty() {
            if self.literal_left > 0 {
                let n = bytes
                    .len()
                    .min(usize::try_from(self.literal_left).unwrap_or(usize::MAX));
                out.push(Framed::Pass(bytes[..n].to_vec()));
                self.literal_left -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            match self.drop {
                Dropping::Literal(left) => {
                    let n = bytes.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let left = left - n as u64;
                    self.drop = if left == 0 {
                        Dropping::Line
                    } else {
                        Dropping::Literal(left)
                    };
                    bytes = &bytes[n..];
                    continue;
                }
                Dropping::Line => {
                    match bytes.iter().position(|&b| b == b'\n') {
                        Some(i) => {
                            self.drop = Dropping::Nothing;
                            bytes = &bytes[i + 1..];
                        }
                        None => bytes = &[],
                    }
                    continue;
                }
                Dropping::Nothing => {}
            }
            let (chunk, done) = match bytes.iter().position(|&b| b == b'\n') {
                Some(i) => (&bytes[..=i], true),
                None => (bytes, false),
            };
            bytes = &bytes[chunk.len()..];
            if self.line.len() + chunk.len() > self.max_line + 1 {
                out.push(Framed::Refuse {
                    tag: leading_tag(&self.line).or_else(|| leading_tag(chunk)),
                    reason: "Command line too long",
                });
                self.line.clear();
                self.drop = if done {
                    Dropping::Nothing
                } else {
                    Dropping::Line
                };
                continue;
            }
            self.line.extend_from_slice(chunk);
            if !done {
                continue;
            }
            let line = std::mem::take(&mut self.line);
            let body = &line[..line.len() - 1];
            match literal_at_end(body) {
                Some(n) if n > self.max_literal => {
                    out.push(Framed::Refuse {
                        tag: leading_tag(&line),
                        reason: "Literal too large",
                    });
                    if body.ends_with(b"+}") || body.ends_with(b"+}\r") {
                        self.drop = Dropping::Literal(n);
                    }
                }
                Some(n) => {
                    out.push(Framed::Pass(line));
                    self.literal_left = n;
                }
                None => out.push(Framed::Pass(line)),
            }
        }
    }
}

/// The size announced by a line ending in `{n}` or `{n+}` (CR optional).
fn literal_at_end(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let inner = line.strip_suffix(b"}")?;
    let inner = inner.strip_suffix(b"+").unwrap_or(inner);
    let open = inner.iter().rposition(|&c| c == b'{')?;
    let digits = &inner[open + 1..];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // More digits than u64 holds is too large anyway.
    Some(
        std::str::from_utf8(digits)
            .ok()?
            .parse()
            .unwrap_or(u64::MAX),
    )
}

/// Reads the tag at the start of a refused message: the bytes up to the
/// first space, if they form a valid tag (ASTRING-CHAR but `+`).
fn leading_tag(bytes: &[u8]) -> Option<String> {
    let end = bytes.iter().position(|&b| b == b' ')?;
    let tag = &bytes[..end];
    let valid = !tag.is_empty()
        && tag.len() <= 64
        && tag.iter().all(|&b| {
            b.is_ascii_graphic()
                && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b'+')
        });
    valid.then(|| String::from_utf8_lossy(tag).into_owned())
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// `max_command`/`max_literal`: the limits before login, checked here;
    /// `max_append`: the largest literal after login (a sent copy saved
    /// with APPEND), which imap-next applies from the start. With
    /// `max_append` equal to `max_literal` the limits never change.
    pub fn new(
        io: S,
        greeting: Greeting<'static>,
        max_command: u32,
        max_literal: u32,
        max_append: u32,
        write_timeout: Duration,
    ) -> Conn<S> {
        let mut options = Options::default();
        // Accept bare LF line ends (scripts, netcat): being strict here
        // only turns working commands into errors.
        options.crlf_relaxed = true;
        let max_append = max_append.max(max_literal);
        options.max_literal_size = max_append;
        // The config guarantees room for the largest literal plus its
        // command; the max keeps that true for any caller.
        options.max_command_size = max_command.max(max_append.saturating_add(1024));
        let _ = options.set_literal_reject_text("Literal too large".to_string());
        let _ = options.set_literal_accept_text("Ready for literal data".to_string());
        Conn {
            io,
            server: Server::new(options, greeting),
            preauth: (max_append > max_literal)
                .then(|| Preauth::new(max_command as usize, u64::from(max_literal))),
            out: Vec::with_capacity(16 * 1024),
            pending: VecDeque::new(),
            buf: vec![0u8; READ_CHUNK].into_boxed_slice(),
            write_timeout,
        }
    }

    /// Runs the protocol state machine as far as it goes without I/O:
    /// queued responses become bytes in the output buffer; the next
    /// complete client message, if any, is returned.
    fn pump(&mut self) -> Option<Input> {
        loop {
            match self.server.next() {
                Ok(Event::GreetingSent { .. }) | Ok(Event::ResponseSent { .. }) => continue,
                Ok(event) => return Some(Input::Event(event)),
                Err(Interrupt::Io(Io::Output(bytes))) => {
                    if self.out.is_empty() && bytes.capacity() >= self.out.capacity() {
                        self.out = bytes;
                    } else {
                        self.out.extend_from_slice(&bytes);
                    }
                }
                Err(Interrupt::Io(Io::NeedMoreInput)) => return None,
                Err(Interrupt::Error(e)) => {
                    return Some(match e {
                        FlowError::LiteralTooLong { .. } => Input::Answered,
                        FlowError::MalformedMessage { discarded_bytes }
                        | FlowError::ExpectedCrlfGotLf { discarded_bytes } => Input::Refused {
                            tag: leading_tag(discarded_bytes.declassify()),
                            reason: "Unknown command or invalid arguments",
                        },
                        FlowError::CommandTooLong { discarded_bytes } => Input::Refused {
                            tag: leading_tag(discarded_bytes.declassify()),
                            reason: "Command line too long",
                        },
                    });
                }
            }
        }
    }

    /// Moves every queued response into the output buffer; client
    /// messages decoded on the way are kept for [`Conn::take_input`].
    fn drain(&mut self) {
        while let Some(input) = self.pump() {
            self.pending.push_back(input);
        }
    }

    /// The next client message already received, if any.
    pub fn take_input(&mut self) -> Option<Input> {
        if let Some(i) = self.pending.pop_front() {
            return Some(i);
        }
        self.pump()
    }

    /// Reads more bytes from the client (cancel-safe: what was read is
    /// handed to the parser before this returns). 0 at end of stream.
    ///
    /// Before login, input goes through [`Preauth`] first.
    pub async fn read_more(&mut self) -> std::io::Result<usize> {
        let n = self.io.read(&mut self.buf).await?;
        if n == 0 {
            return Ok(0);
        }
        match &mut self.preauth {
            None => self.server.enqueue_input(&self.buf[..n]),
            Some(p) => {
                let mut framed = Vec::new();
                p.feed(&self.buf[..n], &mut framed);
                for f in framed {
                    match f {
                        Framed::Pass(bytes) => {
                            self.server.enqueue_input(&bytes);
                            // In order: what this completes comes before
                            // any refusal that follows it.
                            self.drain();
                        }
                        Framed::Refuse { tag, reason } => {
                            self.pending.push_back(Input::Refused { tag, reason })
                        }
                    }
                }
            }
        }
        Ok(n)
    }

    /// The user logged in: from now on imap-next's (APPEND-sized) limits
    /// apply alone.
    pub fn logged_in(&mut self) {
        self.preauth = None;
    }

    /// Writes out everything buffered.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        self.drain();
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        let result = tokio::time::timeout(self.write_timeout, async {
            self.io.write_all(&out).await?;
            self.io.flush().await
        })
        .await;
        self.out = out;
        self.out.clear();
        if self.out.capacity() > 4 * FLUSH_AT {
            self.out.shrink_to(64 * 1024);
        }
        match result {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "client does not read",
            )),
        }
    }

    /// Flushes if enough output is waiting.
    pub async fn flush_if_full(&mut self) -> std::io::Result<()> {
        if self.out.len() >= FLUSH_AT {
            self.flush().await
        } else {
            Ok(())
        }
    }

    pub fn data(&mut self, data: Data<'static>) {
        self.server.enqueue_data(data);
    }

    pub fn status(&mut self, status: Status<'static>) {
        self.server.enqueue_status(status);
    }

    /// Appends responses encoded elsewhere (see [`encode_into`]), after
    /// every response queued before them: bulk FETCH data is encoded on the
    /// blocking pool straight from the stored bytes.
    pub fn write_encoded(&mut self, bytes: &[u8]) {
        self.drain();
        self.out.extend_from_slice(bytes);
    }

    pub fn idle_accept(&mut self) -> bool {
        let cont = imap_types::response::CommandContinuationRequest::basic(None, "idling");
        match cont {
            Ok(c) => self.server.idle_accept(c).is_ok(),
            Err(_) => false,
        }
    }

    pub fn idle_reject(&mut self, status: Status<'static>) -> bool {
        self.server.idle_reject(status).is_ok()
    }

    /// Asks for (more) AUTHENTICATE data with an empty challenge.
    pub fn authenticate_continue(&mut self) -> bool {
        let cont = imap_types::response::CommandContinuationRequest::base64(&b""[..]);
        self.server.authenticate_continue(cont).is_ok()
    }

    pub fn authenticate_finish(&mut self, status: Status<'static>) -> bool {
        self.server.authenticate_finish(status).is_ok()
    }

    /// Sends what is buffered and closes the write side.
    pub async fn close(&mut self) {
        let _ = self.flush().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.io.shutdown()).await;
    }
}

/// Encodes one response with imap-codec and appends its bytes (literals
/// included) to `out`.
pub fn encode_into(codec: &ResponseCodec, response: &Response<'_>, out: &mut Vec<u8>) {
    for fragment in codec.encode(response) {
        match fragment {
            Fragment::Line { data } | Fragment::Literal { data, .. } => {
                out.extend_from_slice(&data)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Framed, Preauth, leading_tag, literal_at_end};

    #[test]
    fn literal_announcements() {
        assert_eq!(literal_at_end(b"a LOGIN {5}\r"), Some(5));
        assert_eq!(literal_at_end(b"a APPEND Sent {120+}"), Some(120));
        assert_eq!(
            literal_at_end(b"a LOGIN {99999999999999999999999}"),
            Some(u64::MAX)
        );
        assert_eq!(literal_at_end(b"a NOOP"), None);
        assert_eq!(literal_at_end(b"a {x}"), None);
        assert_eq!(literal_at_end(b"a {}"), None);
    }

    fn run(p: &mut Preauth, input: &[&[u8]]) -> Vec<Framed> {
        let mut out = Vec::new();
        for chunk in input {
            p.feed(chunk, &mut out);
        }
        out
    }

    fn pass(b: &[u8]) -> Framed {
        Framed::Pass(b.to_vec())
    }

    #[test]
    fn lines_and_literals_before_login() {
        let mut p = Preauth::new(100, 10);
        // A LOGIN with a small literal, split anywhere: passed on.
        let out = run(&mut p, &[b"a LOGIN {5}\r", b"\nhel", b"lo x\r\n"]);
        assert_eq!(
            out,
            vec![
                pass(b"a LOGIN {5}\r\n"),
                pass(b"hel"),
                pass(b"lo"),
                pass(b" x\r\n")
            ]
        );
        // Too large a literal: refused, the line not passed on.
        let out = run(&mut p, &[b"b APPEND Sent {1", b"1}\r\n"]);
        assert_eq!(
            out,
            vec![Framed::Refuse {
                tag: Some("b".into()),
                reason: "Literal too large"
            }]
        );
        // Non-synchronizing and too large: its bytes and line end dropped.
        let out = run(&mut p, &[b"c X {12+}\r\n0123456789ab rest\r\nd NOOP\r\n"]);
        assert_eq!(
            out,
            vec![
                Framed::Refuse {
                    tag: Some("c".into()),
                    reason: "Literal too large"
                },
                pass(b"d NOOP\r\n")
            ]
        );
        // Too long a line: dropped to its end, refused once.
        let mut long = b"e NOOP ".to_vec();
        long.extend_from_slice(&[b'x'; 200]);
        let out = run(&mut p, &[&long, b"yy\r\n", b"f NOOP\n"]);
        assert_eq!(
            out,
            vec![
                Framed::Refuse {
                    tag: Some("e".into()),
                    reason: "Command line too long"
                },
                pass(b"f NOOP\n")
            ]
        );
    }

    #[test]
    fn tags_of_refused_lines() {
        assert_eq!(leading_tag(b"a1 FOO\r\n").as_deref(), Some("a1"));
        assert_eq!(leading_tag(b"a.b-c BAR x\r\n").as_deref(), Some("a.b-c"));
        assert_eq!(leading_tag(b"+ x\r\n"), None);
        assert_eq!(leading_tag(b"* x\r\n"), None);
        assert_eq!(leading_tag(b"nospace\r\n"), None);
        assert_eq!(leading_tag(b" leading\r\n"), None);
    }
}
