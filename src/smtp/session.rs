//! One SMTP session: reads commands, parses them with smtp-proto, keeps the
//! transaction state, answers with the replies of `reply.rs`, and commits
//! each accepted message through the store's group-commit writer before the
//! `250`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use smtp_proto::{Error as ParseError, MailFrom, RcptTo, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::Shared;
use super::data::{DataOutcome, DataReceiver};
use super::policy::{self, RcptClass, RcptVerdict};
use super::reply::{self, Reply};
use crate::metrics;
use crate::model::{MailAddr, now_ms};
use crate::shutdown::Shutdown;
use crate::store::inbound::{self, Envelope};

/// Why the I/O loop returned.
pub(super) enum Outcome {
    Close,
    StartTls,
}

/// What a command asks of the I/O loop after its reply is queued.
enum Next {
    Continue,
    Data,
    Bdat { size: usize, last: bool },
    StartTls,
    Close,
}

/// The transaction (MAIL … DATA) in progress.
#[derive(Default)]
struct Transaction {
    mail_from: Option<String>,
    params: Vec<String>,
    rcpts: Vec<String>,
    /// Bytes received so far by BDAT, `None` when BDAT is not in use.
    bdat: Option<Vec<u8>>,
    bdat_size: usize,
    /// When the first DATA/BDAT byte transfer of this transaction began:
    /// the whole transfer must end within `smtp.data_max_time`.
    data_started: Option<Instant>,
}

pub(super) struct Session<'a> {
    shared: &'a Shared,
    peer: SocketAddr,
    shutdown: Shutdown,
    helo: Option<String>,
    pub(super) tls: bool,
    txn: Transaction,
    errors: usize,
    input: Vec<u8>,
    output: Vec<u8>,
    /// A too-long line is being skipped up to its end.
    discarding: bool,
    /// Set once shutdown was seen during DATA: the transfer may go on until then.
    grace_deadline: Option<Instant>,
    /// The address failed too many recipients: the session ends with 421.
    cut: bool,
    /// When the command line being waited for must be complete: a client
    /// trickling a byte at a time cannot hold the session past
    /// `smtp.command_timeout` for one command.
    line_deadline: Option<Instant>,
}

const READ_CHUNK: usize = 64 * 1024;
const FIRST_READ_CHUNK: usize = 8 * 1024;
/// Spare room made in the input buffer before a command-phase read.
const COMMAND_CHUNK: usize = 4 * 1024;

/// Commands that mean a web client or proxy probe is talking to us.
const FOREIGN_PROTOCOLS: &[&[u8]] = &[b"GET ", b"POST ", b"HEAD ", b"PUT ", b"CONNECT "];

impl<'a> Session<'a> {
    pub(super) fn new(shared: &'a Shared, peer: SocketAddr, shutdown: Shutdown) -> Self {
        Session {
            shared,
            peer,
            shutdown,
            helo: None,
            tls: false,
            txn: Transaction::default(),
            errors: 0,
            input: Vec::new(),
            output: Vec::new(),
            discarding: false,
            grace_deadline: None,
            cut: false,
            line_deadline: None,
        }
    }

    fn host(&self) -> &str {
        &self.shared.config.smtp.hostname
    }

    fn say(&mut self, r: Reply) {
        metrics::inc("smtp_replies_total", &[("class", r.class())]);
        if r.is_permanent() {
            self.errors += 1;
        }
        r.write_to(&mut self.output);
    }

    /// After STARTTLS: everything from before the handshake is forgotten
    /// (RFC 3207 §4.2), including any bytes the client pipelined.
    pub(super) fn reset_for_tls(&mut self) {
        self.helo = None;
        self.txn = Transaction::default();
        self.input.clear();
        self.discarding = false;
        self.line_deadline = None;
        self.tls = true;
    }

    pub(super) fn greet(&mut self) {
        reply::greeting(&self.shared.config.smtp.hostname.clone()).write_to(&mut self.output);
    }

    async fn flush<S: AsyncWrite + Unpin>(&mut self, io: &mut S) -> std::io::Result<()> {
        if self.output.is_empty() {
            return Ok(());
        }
        let timeout = self.shared.config.smtp.command_timeout;
        let out = std::mem::take(&mut self.output);
        match tokio::time::timeout(timeout, async {
            io.write_all(&out).await?;
            io.flush().await
        })
        .await
        {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "write timeout",
            )),
        }
    }

    /// Reads more input in the command phase. `Ok(false)` at end of stream.
    /// The whole line must arrive by `line_deadline`, however the bytes
    /// are spread (set when the wait for the line began).
    async fn read_command_input<S: AsyncRead + Unpin>(&mut self, io: &mut S) -> Result<bool, Stop> {
        let timeout = self.shared.config.smtp.command_timeout;
        let deadline = *self.line_deadline.get_or_insert(Instant::now() + timeout);
        // Straight into the input buffer: no 64 KiB buffer zeroed per read,
        // and an idle session holds only a few KiB.
        self.input.reserve(COMMAND_CHUNK);
        let shutdown = self.shutdown.clone();
        tokio::select! {
            biased;
            _ = shutdown.wait() => Err(Stop::Shutdown),
            r = tokio::time::timeout_at(deadline.into(), io.read_buf(&mut self.input)) => match r {
                Err(_) => Err(Stop::Timeout),
                Ok(Err(e)) => Err(Stop::Io(e)),
                Ok(Ok(0)) => Ok(false),
                Ok(Ok(_)) => Ok(true),
            }
        }
    }

    /// Reads more input in the DATA/BDAT phase: each read within
    /// `data_timeout`, the whole transfer by `transfer_deadline`. Shutdown
    /// does not stop it at once: the transfer may finish until
    /// `shutdown_grace` has passed.
    async fn read_data_input<S: AsyncRead + Unpin>(
        &mut self,
        io: &mut S,
        buf: &mut [u8],
        transfer_deadline: Instant,
    ) -> Result<usize, Stop> {
        let data_timeout = self.shared.config.smtp.data_timeout;
        loop {
            if self.grace_deadline.is_none() && self.shutdown.is_triggered() {
                self.grace_deadline = Some(Instant::now() + self.shared.config.smtp.shutdown_grace);
            }
            let total_left = transfer_deadline.saturating_duration_since(Instant::now());
            if total_left.is_zero() {
                return Err(Stop::Timeout);
            }
            let data_timeout = data_timeout.min(total_left);
            let (limit, by_grace) = match self.grace_deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Stop::Shutdown);
                    }
                    (left.min(data_timeout), left < data_timeout)
                }
                None => (data_timeout, false),
            };
            let shutdown = self.shutdown.clone();
            let watching_shutdown = self.grace_deadline.is_none();
            tokio::select! {
                biased;
                _ = shutdown.wait(), if watching_shutdown => continue,
                r = tokio::time::timeout(limit, io.read(buf)) => return match r {
                    Err(_) if by_grace => Err(Stop::Shutdown),
                    Err(_) => Err(Stop::Timeout),
                    Ok(Err(e)) => Err(Stop::Io(e)),
                    Ok(Ok(n)) => Ok(n),
                }
            }
        }
    }

    /// Runs the command loop on `io` until the client quits, an error ends
    /// the session, or STARTTLS asks for an upgrade.
    pub(super) async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
    ) -> std::io::Result<Outcome> {
        let result = self.command_loop(io).await;
        let host = self.host().to_string();
        match result {
            Ok(outcome) => {
                self.flush(io).await?;
                Ok(outcome)
            }
            Err(Stop::Io(e)) => {
                // The client closed its side (end of stream mid-BDAT or
                // mid-DATA) but may still read: the replies already due —
                // a `250` for a message committed earlier in the pipeline
                // among them — are still sent (bounded by the write timeout).
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    let _ = self.flush(io).await;
                }
                Err(e)
            }
            Err(stop) => {
                let r = match stop {
                    Stop::Timeout => reply::timeout(&host),
                    Stop::TooManyErrors => reply::too_many_errors(),
                    Stop::Blocked => reply::blocked(),
                    _ => reply::shutting_down(&host),
                };
                tracing::info!(reason = ?stop, "closing session");
                self.say(r);
                let _ = self.flush(io).await;
                let _ = io.shutdown().await;
                Ok(Outcome::Close)
            }
        }
    }

    async fn command_loop<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
    ) -> Result<Outcome, Stop> {
        let max_line = self.shared.config.smtp.max_line_length;
        loop {
            if self.cut {
                return Err(Stop::Blocked);
            }
            if self.errors > self.shared.config.smtp.max_errors {
                return Err(Stop::TooManyErrors);
            }
            if self.discarding {
                match self.input.iter().position(|&b| b == b'\n') {
                    Some(pos) => {
                        self.input.drain(..=pos);
                        self.discarding = false;
                    }
                    None => self.input.clear(),
                }
            }
            let newline = if self.discarding {
                None
            } else {
                self.input.iter().position(|&b| b == b'\n')
            };
            match newline {
                Some(pos) if pos < max_line => {
                    let line: Vec<u8> = self.input.drain(..=pos).collect();
                    self.line_deadline = None;
                    match self.command(&line).await {
                        Next::Continue => {}
                        Next::Close => return Ok(Outcome::Close),
                        Next::StartTls => {
                            self.flush(io).await.map_err(Stop::Io)?;
                            return Ok(Outcome::StartTls);
                        }
                        Next::Data => {
                            self.flush(io).await.map_err(Stop::Io)?;
                            self.receive_data(io).await?;
                        }
                        Next::Bdat { size, last } => {
                            self.receive_bdat(io, size, last).await?;
                        }
                    }
                    continue;
                }
                Some(_) => {
                    self.say(reply::line_too_long());
                    self.discarding = true;
                    continue;
                }
                None if !self.discarding && self.input.len() >= max_line => {
                    self.say(reply::line_too_long());
                    self.discarding = true;
                    continue;
                }
                None => {}
            }
            // Nothing complete is buffered: answer everything so far
            // (PIPELINING) before waiting for more.
            self.flush(io).await.map_err(Stop::Io)?;
            if !self.read_command_input(io).await? {
                return Ok(Outcome::Close);
            }
        }
    }

    /// Handles one command line (ending in LF).
    async fn command(&mut self, line: &[u8]) -> Next {
        if FOREIGN_PROTOCOLS
            .iter()
            .any(|p| line.len() >= p.len() && line[..p.len()].eq_ignore_ascii_case(p))
        {
            self.say(reply::not_smtp());
            return Next::Close;
        }
        // smtp-proto saturates numbers wrongly: past u64 a further digit
        // restarts the value, so `SIZE=` or `BDAT` with 21 digits would read
        // as a small number. Such numbers are checked here first.
        match oversized_number(line, self.shared.config.smtp.max_message_bytes) {
            Some(Oversized::MailSize) => {
                metrics::inc("smtp_messages_rejected_total", &[("reason", "size")]);
                self.say(reply::size_exceeded());
                return Next::Continue;
            }
            Some(Oversized::Bdat) => {
                // The chunk cannot be skipped without reading all of it, and
                // the stream is out of step otherwise: refuse and close.
                metrics::inc("smtp_messages_rejected_total", &[("reason", "size")]);
                self.say(reply::size_exceeded());
                return Next::Close;
            }
            None => {}
        }
        // Relay tricks the command parser would hide (it drops source
        // routes and quotes) or call a syntax error (address literals, a
        // trailing dot): refused as relaying, and counted like any refused
        // recipient, whatever the token in the address.
        if let Some(trick) = policy::path_trick(line) {
            metrics::inc("smtp_commands_total", &[("command", "RCPT")]);
            self.refuse_path_trick(trick).await;
            return Next::Continue;
        }
        let parsed = Request::parse(&mut line.iter()).map(Request::into_owned);
        let name = match &parsed {
            Ok(r) => r.name(),
            Err(_) => "invalid",
        };
        metrics::inc("smtp_commands_total", &[("command", name)]);
        let request = match parsed {
            Ok(r) => r,
            Err(e) => {
                self.say(parse_error_reply(e));
                return Next::Continue;
            }
        };
        match request {
            Request::Ehlo { host } => {
                self.helo = Some(host.clone());
                self.txn = Transaction::default();
                let mut lines = vec![
                    format!("{} greets {}", self.host(), host),
                    format!("SIZE {}", self.shared.config.smtp.max_message_bytes),
                    "8BITMIME".to_string(),
                    "PIPELINING".to_string(),
                    "ENHANCEDSTATUSCODES".to_string(),
                    "SMTPUTF8".to_string(),
                    "CHUNKING".to_string(),
                ];
                if self.shared.tls.is_some() && !self.tls {
                    lines.push("STARTTLS".to_string());
                }
                lines.push("HELP".to_string());
                metrics::inc("smtp_replies_total", &[("class", "2xx")]);
                reply::write_multiline(&mut self.output, 250, &lines);
            }
            Request::Helo { host } => {
                self.txn = Transaction::default();
                let r = reply::helo_ok(self.host(), &host);
                self.helo = Some(host);
                self.say(r);
            }
            Request::Lhlo { .. } => self.say(reply::unrecognized()),
            Request::Mail { from } => self.mail(from),
            Request::Rcpt { to } => {
                let explicit_postmaster = contains_ignore_case(line, b"<postmaster>");
                self.rcpt(to, explicit_postmaster).await;
            }
            Request::Data => {
                if self.txn.mail_from.is_none() {
                    self.say(reply::need_mail());
                } else if self.txn.rcpts.is_empty() {
                    self.say(reply::need_rcpt());
                } else if self.txn.bdat.is_some() {
                    self.say(reply::bdat_data_mix());
                } else {
                    reply::start_data().write_to(&mut self.output);
                    return Next::Data;
                }
            }
            Request::Bdat {
                chunk_size,
                is_last,
            } => {
                return Next::Bdat {
                    size: chunk_size,
                    last: is_last,
                };
            }
            Request::Rset => {
                self.txn = Transaction::default();
                self.say(reply::ok());
            }
            Request::Noop { .. } => self.say(reply::ok()),
            Request::Quit => {
                let r = reply::bye(self.host());
                self.say(r);
                return Next::Close;
            }
            Request::Vrfy { .. } => self.say(reply::vrfy()),
            Request::Help { .. } => self.say(reply::help()),
            Request::StartTls => {
                if self.tls {
                    self.say(reply::already_tls());
                } else if self.shared.tls.is_none() {
                    self.say(reply::not_implemented("STARTTLS"));
                } else {
                    self.say(reply::start_tls());
                    return Next::StartTls;
                }
            }
            Request::Expn { .. } => self.say(reply::not_implemented("EXPN")),
            Request::Auth { .. } => self.say(reply::not_implemented("AUTH")),
            Request::Etrn { .. } => self.say(reply::not_implemented("ETRN")),
            Request::Atrn { .. } => self.say(reply::not_implemented("ATRN")),
            Request::Burl { .. } => self.say(reply::not_implemented("BURL")),
        }
        Next::Continue
    }

    fn mail(&mut self, from: MailFrom<String>) {
        if self.helo.is_none() {
            return self.say(reply::need_helo());
        }
        if self.txn.mail_from.is_some() {
            return self.say(reply::nested_mail());
        }
        // Addresses are personal data: at debug only, never at info.
        tracing::debug!(mail_from = %from.address, "MAIL FROM");
        // Parameters of extensions we do not advertise are refused (RFC 5321 §4.1.1.11).
        let unsupported = if from.flags & smtp_proto::MAIL_REQUIRETLS != 0 {
            Some("REQUIRETLS")
        } else if from.flags & smtp_proto::MAIL_BODY_BINARYMIME != 0 {
            Some("BODY=BINARYMIME")
        } else if from.flags & smtp_proto::MAIL_CONPERM != 0 {
            Some("CONPERM")
        } else {
            unadvertised_mail_param(&from)
        };
        if let Some(param) = unsupported {
            return self.say(reply::unsupported_parameter(param));
        }
        if from.size > self.shared.config.smtp.max_message_bytes {
            metrics::inc("smtp_messages_rejected_total", &[("reason", "size")]);
            return self.say(reply::size_exceeded());
        }
        if !self.sender_quota_allows(&from.address, from.size as u64) {
            metrics::inc(
                "smtp_messages_rejected_total",
                &[("reason", "sender_quota")],
            );
            tracing::info!("sender over its hourly quota");
            return self.say(reply::sender_over_quota());
        }
        let mut params = Vec::new();
        if from.size > 0 {
            params.push(format!("SIZE={}", from.size));
        }
        if from.flags & smtp_proto::MAIL_BODY_8BITMIME != 0 {
            params.push("BODY=8BITMIME".into());
        } else if from.flags & smtp_proto::MAIL_BODY_7BIT != 0 {
            params.push("BODY=7BIT".into());
        }
        if from.flags & smtp_proto::MAIL_SMTPUTF8 != 0 {
            params.push("SMTPUTF8".into());
        }
        if from.flags & smtp_proto::MAIL_RET_FULL != 0 {
            params.push("RET=FULL".into());
        } else if from.flags & smtp_proto::MAIL_RET_HDRS != 0 {
            params.push("RET=HDRS".into());
        }
        if let Some(envid) = &from.env_id {
            params.push(format!("ENVID={envid}"));
        }
        self.txn.mail_from = Some(from.address);
        self.txn.params = params;
        self.say(reply::sender_ok());
    }

    async fn rcpt(&mut self, to: RcptTo<String>, explicit_postmaster: bool) {
        if self.txn.mail_from.is_none() {
            return self.say(reply::need_mail());
        }
        let address = if to.address.is_empty() {
            if !explicit_postmaster {
                return self.say(reply::bad_recipient_address());
            }
            format!("postmaster@{}", self.shared.config.domain)
        } else {
            to.address.clone()
        };
        tracing::debug!(rcpt = %address, "RCPT TO");
        if MailAddr::parse(&address).is_none() {
            return self.say(reply::bad_recipient_address());
        }
        if self
            .txn
            .rcpts
            .iter()
            .any(|r| r.eq_ignore_ascii_case(&address))
        {
            return self.say(reply::recipient_ok());
        }
        if self.txn.rcpts.len() >= self.shared.config.smtp.max_recipients {
            metrics::inc("smtp_rcpt_total", &[("result", "too_many")]);
            return self.say(reply::too_many_recipients());
        }
        // Blocked meanwhile (by this session or another from the address).
        if self.shared.limits.smtp_rcpt.check(self.peer.ip()).is_err() {
            self.cut = true;
            metrics::inc("smtp_sessions_cut_total", &[("reason", "blocked")]);
            return;
        }
        let class = policy::classify(&address, &self.shared.config.domain);
        let token = match &class {
            RcptClass::GatewayToken(t) => Some(t.as_str().to_string()),
            _ => None,
        };
        let mut cached = false;
        let verdict = if class == RcptClass::Foreign {
            Ok(RcptVerdict::RelayDenied)
        } else if matches!(class, RcptClass::Fixed | RcptClass::Bounce) {
            // Accepted whatever the store holds (see `policy::decide`).
            Ok(RcptVerdict::Accept)
        } else if token
            .as_deref()
            .is_some_and(|t| self.shared.known_tokens.contains(t))
        {
            cached = true;
            Ok(RcptVerdict::Accept)
        } else {
            let config = self.shared.config.clone();
            self.shared
                .store
                .read(move |c| policy::decide(c, &class, &config))
                .await
        };
        // Only the store's answer starts a new freshness period.
        if let (Ok(RcptVerdict::Accept), Some(t), false) = (&verdict, &token, cached) {
            self.shared.known_tokens.insert(t);
        }
        match verdict {
            // Blocked while the lookup ran (by another session from the
            // address): no answer about this recipient, right or wrong.
            Ok(_) if self.shared.limits.smtp_rcpt.check(self.peer.ip()).is_err() => {
                self.cut = true;
                metrics::inc("smtp_sessions_cut_total", &[("reason", "blocked")]);
            }
            Ok(RcptVerdict::Accept) => {
                metrics::inc("smtp_rcpt_total", &[("result", "accepted")]);
                let mut notes = Vec::new();
                if to.flags
                    & (smtp_proto::RCPT_NOTIFY_SUCCESS
                        | smtp_proto::RCPT_NOTIFY_FAILURE
                        | smtp_proto::RCPT_NOTIFY_DELAY
                        | smtp_proto::RCPT_NOTIFY_NEVER)
                    != 0
                {
                    notes.push(format!("NOTIFY={}", notify_text(to.flags)));
                }
                if let Some(orcpt) = &to.orcpt {
                    notes.push(format!("ORCPT={orcpt}"));
                }
                if !notes.is_empty() {
                    self.txn
                        .params
                        .push(format!("RCPT {address} {}", notes.join(" ")));
                }
                self.txn.rcpts.push(address);
                self.say(reply::recipient_ok());
            }
            Ok(RcptVerdict::UnknownUser) => {
                metrics::inc("smtp_rcpt_total", &[("result", "unknown_user")]);
                tracing::info!("unknown recipient");
                if self.rcpt_failed().await {
                    self.say(reply::no_such_user());
                }
            }
            Ok(RcptVerdict::OverQuota) => {
                metrics::inc("smtp_rcpt_total", &[("result", "over_quota")]);
                tracing::info!("side conversation over its quota");
                self.say(reply::thread_over_quota());
            }
            Ok(RcptVerdict::RelayDenied) => {
                metrics::inc("smtp_rcpt_total", &[("result", "relay_denied")]);
                tracing::info!("relaying denied");
                if self.rcpt_failed().await {
                    self.say(reply::relay_denied());
                }
            }
            Err(e) => {
                metrics::inc("smtp_rcpt_total", &[("result", "lookup_failed")]);
                tracing::error!(error = %e, "recipient lookup failed");
                self.say(reply::lookup_failed());
            }
        }
    }

    /// A `RCPT` whose path carries a relay trick (`policy::path_trick`):
    /// `550 5.7.1` once a transaction is open, counted against the client
    /// like any refused recipient.
    async fn refuse_path_trick(&mut self, trick: policy::PathTrick) {
        if self.txn.mail_from.is_none() {
            return self.say(reply::need_mail());
        }
        if self.shared.limits.smtp_rcpt.check(self.peer.ip()).is_err() {
            self.cut = true;
            metrics::inc("smtp_sessions_cut_total", &[("reason", "blocked")]);
            return;
        }
        metrics::inc("smtp_rcpt_total", &[("result", "relay_denied")]);
        tracing::info!(?trick, "relaying denied: routing syntax in the recipient");
        if self.rcpt_failed().await {
            self.say(reply::relay_denied());
        }
    }

    /// Counts a failed recipient against the client's address (token
    /// guessing, relay probing): past `smtp.rcpt_failures_before_tarpit`
    /// each further failure is answered more slowly (the n-th past it after
    /// n × `smtp.tarpit_delay`); reaching `smtp.max_rcpt_failures` cuts the
    /// session after this reply and blocks the address for `smtp.block_time`.
    /// `false` when the address was blocked meanwhile by another session:
    /// then the failure is not answered (only the `421` of the cut), so
    /// however many sessions guess at once, no more than
    /// `smtp.max_rcpt_failures` failures are ever answered.
    async fn rcpt_failed(&mut self) -> bool {
        let cfg = &self.shared.config.smtp;
        let failure = match self.shared.limits.smtp_rcpt.failure(self.peer.ip()) {
            Ok(f) => f,
            Err(_) => {
                metrics::inc("smtp_sessions_cut_total", &[("reason", "blocked")]);
                self.cut = true;
                return false;
            }
        };
        if failure.blocked.is_some() {
            metrics::inc("smtp_sessions_cut_total", &[("reason", "rcpt_failures")]);
            tracing::warn!(
                failures = failure.count,
                block_secs = cfg.block_time.as_secs(),
                "too many failed recipients: cutting the session and blocking the address"
            );
            self.cut = true;
            return true;
        }
        let delay = tarpit(
            failure.count,
            cfg.rcpt_failures_before_tarpit,
            cfg.tarpit_delay,
        );
        if delay.is_zero() {
            return true;
        }
        metrics::observe("smtp_tarpit_seconds", &[], delay.as_secs_f64());
        tracing::debug!(
            failures = failure.count,
            delay_ms = delay.as_millis() as u64,
            "tarpit"
        );
        let shutdown = self.shutdown.clone();
        tokio::select! {
            _ = shutdown.wait() => {}
            _ = tokio::time::sleep(delay) => {}
        }
        true
    }

    async fn receive_data<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
    ) -> Result<(), Stop> {
        let transfer_deadline = Instant::now() + self.shared.config.smtp.data_max_time;
        let mut rx = DataReceiver::new(self.shared.config.smtp.max_message_bytes);
        let mut done = rx.feed(&self.input);
        // Most messages are small: the buffer starts small (zeroing 64 KiB
        // for every message showed in profiles) and grows once a read fills it.
        let mut buf = vec![0u8; FIRST_READ_CHUNK];
        match done {
            Some(used) => {
                self.input.drain(..used);
            }
            None => self.input.clear(),
        }
        while done.is_none() {
            let n = self
                .read_data_input(io, &mut buf, transfer_deadline)
                .await?;
            if n == 0 {
                // The client went away mid-DATA: nothing is stored.
                return Err(Stop::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed during DATA",
                )));
            }
            done = rx.feed(&buf[..n]);
            if let Some(used) = done {
                self.input.extend_from_slice(&buf[used..n]);
            }
            if n == buf.len() && buf.len() < READ_CHUNK {
                buf.resize(READ_CHUNK, 0);
            }
        }
        match rx.finish() {
            DataOutcome::TooLarge { size } => {
                tracing::info!(size, "message over the size limit");
                metrics::inc("smtp_messages_rejected_total", &[("reason", "size")]);
                self.txn = Transaction::default();
                self.say(reply::size_exceeded());
            }
            DataOutcome::Complete(raw) => self.commit(raw).await,
        }
        self.after_message()
    }

    async fn receive_bdat<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        size: usize,
        last: bool,
    ) -> Result<(), Stop> {
        // The chunk is read in full whatever the verdict, so the stream stays
        // in step with the client.
        let refusal = if self.txn.mail_from.is_none() {
            Some(reply::need_mail())
        } else if self.txn.rcpts.is_empty() {
            Some(reply::need_rcpt())
        } else {
            None
        };
        let max = self.shared.config.smtp.max_message_bytes;
        // Chunks of one transaction share one transfer deadline, so many
        // small slow chunks cannot stretch it either.
        let started = if refusal.is_none() {
            *self.txn.data_started.get_or_insert_with(Instant::now)
        } else {
            Instant::now()
        };
        let transfer_deadline = started + self.shared.config.smtp.data_max_time;
        let keep = refusal.is_none();
        let mut body = if keep {
            self.txn.bdat.take().unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut left = size;
        let take = left.min(self.input.len());
        let append = |bytes: &[u8], body: &mut Vec<u8>, total: &mut usize| {
            *total = total.saturating_add(bytes.len());
            if keep && *total <= max {
                body.extend_from_slice(bytes);
            }
        };
        let mut total = self.txn.bdat_size;
        let head: Vec<u8> = self.input.drain(..take).collect();
        append(&head, &mut body, &mut total);
        left -= take;
        let mut buf = vec![0u8; left.clamp(1, READ_CHUNK)];
        while left > 0 {
            let want = left.min(buf.len());
            let n = self
                .read_data_input(io, &mut buf[..want], transfer_deadline)
                .await?;
            if n == 0 {
                return Err(Stop::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed during BDAT",
                )));
            }
            append(&buf[..n], &mut body, &mut total);
            left -= n;
        }
        if let Some(r) = refusal {
            self.say(r);
            return Ok(());
        }
        if total > max {
            metrics::inc("smtp_messages_rejected_total", &[("reason", "size")]);
            self.txn = Transaction::default();
            self.say(reply::size_exceeded());
            return self.after_message();
        }
        self.txn.bdat_size = total;
        if last {
            self.commit(body).await;
            return self.after_message();
        }
        self.txn.bdat = Some(body);
        self.say(reply::chunk_ok(size));
        Ok(())
    }

    /// After a message: if shutdown began meanwhile, the session ends here.
    fn after_message(&mut self) -> Result<(), Stop> {
        if self.shutdown.is_triggered() {
            return Err(Stop::Shutdown);
        }
        Ok(())
    }

    /// Whether the envelope sender may send `size` more bytes (0 at MAIL
    /// FROM) within its hour (`smtp.max_*_per_sender_per_hour`); exempt
    /// addresses always may.
    fn sender_quota_allows(&self, mail_from: &str, size: u64) -> bool {
        let ip = self.peer.ip();
        if self.shared.config.limits.exempt.contains(ip) {
            return true;
        }
        let key = super::quota::sender_key(mail_from, ip);
        self.shared.sender_quota.allows(&key, size, Instant::now())
    }

    /// Commits the message and its envelope; `250` only once durable.
    async fn commit(&mut self, raw: Vec<u8>) {
        let mail_from = self.txn.mail_from.clone().unwrap_or_default();
        if !self.sender_quota_allows(&mail_from, raw.len() as u64) {
            self.txn = Transaction::default();
            metrics::inc(
                "smtp_messages_rejected_total",
                &[("reason", "sender_quota")],
            );
            tracing::info!(
                size = raw.len(),
                "message would exceed the sender's hourly quota"
            );
            return self.say(reply::sender_over_quota());
        }
        let txn = std::mem::take(&mut self.txn);
        let envelope = Envelope {
            peer_ip: self.peer.ip().to_string(),
            helo: self.helo.clone().unwrap_or_default(),
            mail_from: txn.mail_from.unwrap_or_default(),
            rcpts: txn.rcpts,
            tls: self.tls,
            params: txn.params,
            received_at: now_ms(),
        };
        let size = raw.len();
        let started = Instant::now();
        let result = self
            .shared
            .store
            .write_urgent(move |c| inbound::enqueue(c, &envelope, &raw))
            .await;
        metrics::observe("smtp_commit_seconds", &[], started.elapsed().as_secs_f64());
        match result {
            Ok(id) => {
                if !self.shared.config.limits.exempt.contains(self.peer.ip()) {
                    let key = super::quota::sender_key(&mail_from, self.peer.ip());
                    self.shared
                        .sender_quota
                        .record(&key, size as u64, Instant::now());
                }
                metrics::inc("smtp_messages_accepted_total", &[]);
                metrics::add("smtp_bytes_accepted_total", &[], size as u64);
                tracing::info!(queue_id = id, size, "message accepted");
                self.shared.committed.notify_one();
                self.say(reply::queued(id));
            }
            Err(e) => {
                metrics::inc("smtp_messages_rejected_total", &[("reason", "commit")]);
                tracing::error!(error = %e, "commit failed; answering 451");
                self.say(reply::commit_failed());
            }
        }
    }
}

/// Why a session ends other than by QUIT or end of stream.
#[derive(Debug)]
pub(super) enum Stop {
    Timeout,
    Shutdown,
    TooManyErrors,
    /// The address is blocked for failing too many recipients.
    Blocked,
    Io(std::io::Error),
}

/// The tarpit: how long the reply to the `failures`-th failed recipient
/// waits, `threshold` failures being free and each further one waiting one
/// `step` longer than the last.
fn tarpit(failures: u32, threshold: u32, step: Duration) -> Duration {
    step.saturating_mul(failures.saturating_sub(threshold))
}

/// A MAIL FROM parameter of an extension neither listener advertises
/// (`BY`, `HOLDFOR`, `MTRK`, …), if the command has one.
pub(super) fn unadvertised_mail_param(from: &MailFrom<String>) -> Option<&'static str> {
    if from.by != 0 {
        Some("BY")
    } else if from.hold_for != 0 || from.hold_until != 0 {
        Some("HOLDFOR/HOLDUNTIL")
    } else if from.mtrk.is_some() {
        Some("MTRK")
    } else if from.mt_priority != 0 {
        Some("MT-PRIORITY")
    } else if from.trans_id.is_some() {
        Some("TRANSID")
    } else if from.solicit.is_some() {
        Some("SOLICIT")
    } else {
        None
    }
}

pub(super) fn parse_error_reply(e: ParseError) -> Reply {
    match e {
        ParseError::UnknownCommand => reply::unrecognized(),
        ParseError::InvalidSenderAddress => reply::bad_sender_address(),
        ParseError::InvalidRecipientAddress => reply::bad_recipient_address(),
        ParseError::SyntaxError { syntax } => reply::syntax(syntax),
        ParseError::InvalidParameter { param } => reply::invalid_parameter(param),
        ParseError::UnsupportedParameter { param } => {
            let shown: String = param.chars().take(64).collect();
            reply::unsupported_parameter(&shown)
        }
        ParseError::ResponseTooLong => reply::line_too_long(),
        ParseError::NeedsMoreData { .. } | ParseError::InvalidResponse { .. } => {
            reply::syntax("command not understood")
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Oversized {
    MailSize,
    Bdat,
}

/// The digits after `at`, and whether they fit in a u64.
fn number_at(line: &[u8], at: usize) -> Option<Option<u64>> {
    let digits: Vec<u8> = line[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    if digits.is_empty() {
        return None;
    }
    Some(
        std::str::from_utf8(&digits)
            .ok()
            .and_then(|d| d.parse::<u64>().ok()),
    )
}

/// A `MAIL … SIZE=n` or `BDAT n` whose number is over the limit, judged on
/// the raw digits (so no wrapped value can slip through).
fn oversized_number(line: &[u8], max: usize) -> Option<Oversized> {
    let upper = line.to_ascii_uppercase();
    let over = |n: Option<u64>| n.is_none_or(|n| n > max as u64);
    if upper.starts_with(b"BDAT ") {
        let at = 5 + upper[5..].iter().take_while(|b| **b == b' ').count();
        // A chunk over the limit but countable is read and discarded (the
        // session stays usable); one whose length cannot even be counted
        // cannot be skipped.
        return number_at(line, at)
            .filter(Option::is_none)
            .map(|_| Oversized::Bdat);
    }
    if upper.starts_with(b"MAIL ") {
        let params_start = upper.iter().rposition(|b| *b == b'>').unwrap_or(0);
        let params = &upper[params_start..];
        let mut i = 0;
        while let Some(pos) = params[i..].windows(5).position(|w| w == b"SIZE=") {
            let at = params_start + i + pos + 5;
            let before = upper.get(at - 6).copied().unwrap_or(b' ');
            if (before == b' ' || before == b'\t') && number_at(line, at).is_some_and(over) {
                return Some(Oversized::MailSize);
            }
            i += pos + 5;
        }
    }
    None
}

fn notify_text(flags: u64) -> String {
    if flags & smtp_proto::RCPT_NOTIFY_NEVER != 0 {
        return "NEVER".into();
    }
    let mut parts = Vec::new();
    if flags & smtp_proto::RCPT_NOTIFY_SUCCESS != 0 {
        parts.push("SUCCESS");
    }
    if flags & smtp_proto::RCPT_NOTIFY_FAILURE != 0 {
        parts.push("FAILURE");
    }
    if flags & smtp_proto::RCPT_NOTIFY_DELAY != 0 {
        parts.push("DELAY");
    }
    parts.join(",")
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tarpit_grows_with_each_failure() {
        let ms = Duration::from_millis;
        let cases = [
            (1, 3, ms(1000), ms(0)),
            (3, 3, ms(1000), ms(0)),
            (4, 3, ms(1000), ms(1000)),
            (5, 3, ms(1000), ms(2000)),
            (10, 3, ms(1000), ms(7000)),
            (2, 1, ms(50), ms(50)),
            (3, 1, ms(50), ms(100)),
            (1, 0, ms(50), ms(50)),
            (u32::MAX, 0, Duration::MAX, Duration::MAX),
        ];
        for (failures, threshold, step, want) in cases {
            assert_eq!(
                tarpit(failures, threshold, step),
                want,
                "{failures} past {threshold}"
            );
        }
    }

    #[test]
    fn oversized_numbers_are_caught_before_parsing() {
        let max = 1000;
        let cases: &[(&[u8], Option<Oversized>)] = &[
            (
                b"MAIL FROM:<a@b> SIZE=999999999999999999999\r\n",
                Some(Oversized::MailSize),
            ),
            (
                b"mail from:<a@b> size=123456789012345678901234567\r\n",
                Some(Oversized::MailSize),
            ),
            (
                b"MAIL FROM:<a@b> BODY=8BITMIME SIZE=1001\r\n",
                Some(Oversized::MailSize),
            ),
            (b"MAIL FROM:<a@b> SIZE=1000\r\n", None),
            (b"MAIL FROM:<size=99999999999@b>\r\n", None),
            (b"MAIL FROM:<a@b>\r\n", None),
            (
                b"BDAT 999999999999999999995 LAST\r\n",
                Some(Oversized::Bdat),
            ),
            (b"bdat  5000\r\n", None),
            (b"bdat  18446744073709551616\r\n", Some(Oversized::Bdat)),
            (b"BDAT 1000 LAST\r\n", None),
            (b"BDAT x\r\n", None),
        ];
        for (line, expected) in cases {
            assert_eq!(
                &oversized_number(line, max),
                expected,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }
}
