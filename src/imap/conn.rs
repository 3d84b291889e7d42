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
    out: Vec<u8>,
    pending: VecDeque<Input>,
    buf: Box<[u8]>,
    write_timeout: Duration,
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
    pub fn new(
        io: S,
        greeting: Greeting<'static>,
        max_command: u32,
        max_literal: u32,
        write_timeout: Duration,
    ) -> Conn<S> {
        let mut options = Options::default();
        // Accept bare LF line ends (scripts, netcat): being strict here
        // only turns working commands into errors.
        options.crlf_relaxed = true;
        options.max_literal_size = max_literal;
        // The config guarantees room for the largest literal plus its
        // command; the max keeps that true for any caller.
        options.max_command_size = max_command.max(max_literal.saturating_add(1024));
        let _ = options.set_literal_reject_text("Literal too large".to_string());
        let _ = options.set_literal_accept_text("Ready for literal data".to_string());
        Conn {
            io,
            server: Server::new(options, greeting),
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
    pub async fn read_more(&mut self) -> std::io::Result<usize> {
        let n = self.io.read(&mut self.buf).await?;
        if n > 0 {
            self.server.enqueue_input(&self.buf[..n]);
        }
        Ok(n)
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
    use super::leading_tag;

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
