//! One submission session: EHLO, STARTTLS, AUTH PLAIN/LOGIN (email + API
//! token, through the per-address failure limiter), then MAIL/RCPT/DATA
//! for the authenticated agent. Each command of a logged-in session first
//! checks that the user still stands (not deactivated, role and token
//! unchanged). The message itself is judged by
//! `conversations::agent_mail` at the end of DATA.

use std::net::SocketAddr;
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use smtp_proto::{MailFrom, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::data::{DataOutcome, DataReceiver};
use super::policy::{self, RcptClass};
use super::reply::{self, Reply};
use super::session::parse_error_reply;
use super::submission::{Shared, auth_failure_delay, plaintext_auth_allowed};
use crate::conversations::Actor;
use crate::conversations::agent_mail::{AgentMailError, looks_like_agent_reply_address};
use crate::metrics;
use crate::model::MailAddr;
use crate::shutdown::Shutdown;
use crate::store::users::{self, Standing, User};
use crate::store::{parents, routing};

/// Why the I/O loop returned.
pub(super) enum Outcome {
    Close,
    StartTls,
}

enum Next {
    Continue,
    Data,
    StartTls,
    Close,
}

/// Why a session ends other than by QUIT or end of stream.
#[derive(Debug)]
enum Stop {
    Timeout,
    Shutdown,
    TooManyErrors,
    Revoked,
    Io(std::io::Error),
}

/// A command line read, or why there is none.
enum Line {
    Command(Vec<u8>),
    TooLong,
    End,
}

/// What a recipient is, as far as the envelope tells.
#[derive(Debug)]
enum RcptCheck {
    Accept,
    /// Routing syntax: a request to relay.
    Relay,
    /// A gateway address that names nothing (`550 5.1.1`), with the reason.
    Unknown(String),
}

/// The longest text of one reply line (RFC 5321 §4.5.3.1.5: 512 octets
/// with the code).
const REPLY_WIDTH: usize = 400;
const READ_CHUNK: usize = 64 * 1024;
const COMMAND_CHUNK: usize = 4 * 1024;
const FOREIGN_PROTOCOLS: &[&[u8]] = &[b"GET ", b"POST ", b"HEAD ", b"PUT ", b"CONNECT "];

pub(super) struct Session<'a> {
    shared: &'a Shared,
    peer: SocketAddr,
    shutdown: Shutdown,
    tls: bool,
    helo: bool,
    user: Option<User>,
    mail_from: Option<String>,
    rcpts: Vec<String>,
    errors: usize,
    input: Vec<u8>,
    output: Vec<u8>,
}

impl<'a> Session<'a> {
    pub(super) fn new(shared: &'a Shared, peer: SocketAddr, shutdown: Shutdown) -> Self {
        Session {
            shared,
            peer,
            shutdown,
            tls: false,
            helo: false,
            user: None,
            mail_from: None,
            rcpts: Vec::new(),
            errors: 0,
            input: Vec::new(),
            output: Vec::new(),
        }
    }

    fn host(&self) -> &str {
        &self.shared.config.smtp.hostname
    }

    fn say(&mut self, r: Reply) {
        if r.is_permanent() {
            self.errors += 1;
        }
        r.write_to(&mut self.output);
    }

    /// A reply whose text may be long (a refusal's reason, which mail
    /// clients show): cut at spaces into lines of [`REPLY_WIDTH`].
    fn say_wrapped(&mut self, code: u16, esc: &'static str, text: &str) {
        if code >= 500 {
            self.errors += 1;
        }
        let clean: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let mut lines: Vec<String> = Vec::new();
        let mut line = String::new();
        for word in clean.split_whitespace() {
            if !line.is_empty() && line.len() + 1 + word.len() > REPLY_WIDTH {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        lines.push(line);
        let lines: Vec<String> = lines.into_iter().map(|l| format!("{esc} {l}")).collect();
        reply::write_multiline(&mut self.output, code, &lines);
    }

    pub(super) fn greet(&mut self) {
        let host = self.host().to_string();
        Reply::new(
            220,
            "",
            format!("{host} ESMTP backchannel submission ready"),
        )
        .write_to(&mut self.output);
    }

    /// After STARTTLS everything from before the handshake is forgotten
    /// (RFC 3207 §4.2), pipelined bytes included.
    pub(super) fn reset_for_tls(&mut self) {
        self.helo = false;
        self.user = None;
        self.reset_transaction();
        self.input.clear();
        self.tls = true;
    }

    fn reset_transaction(&mut self) {
        self.mail_from = None;
        self.rcpts.clear();
    }

    async fn flush<S: AsyncWrite + Unpin>(&mut self, io: &mut S) -> std::io::Result<()> {
        if self.output.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.output);
        let timeout = self.shared.config.submission.command_timeout;
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

    /// The next command line: answers what is due first, then reads until
    /// a whole line is there (within `command_timeout`), skipping one that
    /// is too long.
    async fn next_line<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
    ) -> Result<Line, Stop> {
        let max = self.shared.config.submission.max_line_length;
        let deadline = Instant::now() + self.shared.config.submission.command_timeout;
        let mut discarding = false;
        loop {
            if let Some(pos) = self.input.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.input.drain(..=pos).collect();
                if discarding || line.len() > max {
                    return Ok(Line::TooLong);
                }
                return Ok(Line::Command(line));
            }
            if self.input.len() >= max {
                self.input.clear();
                discarding = true;
            }
            self.flush(io).await.map_err(Stop::Io)?;
            self.input.reserve(COMMAND_CHUNK);
            let shutdown = self.shutdown.clone();
            tokio::select! {
                biased;
                _ = shutdown.wait() => return Err(Stop::Shutdown),
                r = tokio::time::timeout_at(deadline.into(), io.read_buf(&mut self.input)) => match r {
                    Err(_) => return Err(Stop::Timeout),
                    Ok(Err(e)) => return Err(Stop::Io(e)),
                    Ok(Ok(0)) => return Ok(Line::End),
                    Ok(Ok(_)) => {}
                }
            }
        }
    }

    /// Runs the command loop until QUIT, end of stream, an error that ends
    /// the session, or STARTTLS.
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
            Err(Stop::Io(e)) => Err(e),
            Err(stop) => {
                let r = match stop {
                    Stop::Timeout => reply::timeout(&host),
                    Stop::TooManyErrors => reply::too_many_errors(),
                    Stop::Revoked => Reply::new(
                        421,
                        "4.7.0",
                        "Access revoked (user deactivated, role changed or token rotated); \
                         closing connection",
                    ),
                    _ => reply::shutting_down(&host),
                };
                tracing::info!(reason = ?stop, "closing submission session");
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
        loop {
            if self.errors > self.shared.config.submission.max_errors {
                return Err(Stop::TooManyErrors);
            }
            let line = match self.next_line(io).await? {
                Line::End => return Ok(Outcome::Close),
                Line::TooLong => {
                    self.say(reply::line_too_long());
                    continue;
                }
                Line::Command(line) => line,
            };
            match self.command(io, &line).await? {
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
            }
        }
    }

    /// Whether the logged-in user still stands (always, before login).
    async fn still_allowed(&mut self) -> Result<bool, Stop> {
        let Some(user) = &self.user else {
            return Ok(true);
        };
        let (id, epoch) = (user.id, user.credential_epoch);
        match self
            .shared
            .store
            .read(move |c| users::standing(c, id, epoch))
            .await
        {
            Ok(Standing::Valid(now)) if now.role.can_write() => {
                self.user = Some(now);
                Ok(true)
            }
            Ok(_) => Ok(false),
            Err(e) => {
                tracing::warn!(error = %e, "submission: store unavailable");
                Ok(true)
            }
        }
    }

    async fn command<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        line: &[u8],
    ) -> Result<Next, Stop> {
        if FOREIGN_PROTOCOLS
            .iter()
            .any(|p| line.len() >= p.len() && line[..p.len()].eq_ignore_ascii_case(p))
        {
            self.say(reply::not_smtp());
            return Ok(Next::Close);
        }
        if !self.still_allowed().await? {
            metrics::inc("submission_sessions_cut_total", &[("reason", "revoked")]);
            return Err(Stop::Revoked);
        }
        // Relay tricks the parser would hide (source routes, quotes) or
        // call a syntax error (address literals, a trailing dot).
        if policy::path_trick(line).is_some() {
            if self.user.is_none() {
                self.say(auth_required());
            } else if self.mail_from.is_none() {
                self.say(reply::need_mail());
            } else {
                metrics::inc("submission_rcpt_total", &[("result", "relay_denied")]);
                self.say(reply::relay_denied());
            }
            return Ok(Next::Continue);
        }
        let request = match Request::parse(&mut line.iter()).map(Request::into_owned) {
            Ok(r) => r,
            Err(e) => {
                self.say(parse_error_reply(e));
                return Ok(Next::Continue);
            }
        };
        match request {
            Request::Ehlo { host } => {
                self.helo = true;
                self.reset_transaction();
                let mut lines = vec![
                    format!("{} greets {}", self.host(), host),
                    format!("SIZE {}", self.shared.config.submission.max_message_bytes),
                    "8BITMIME".to_string(),
                    "PIPELINING".to_string(),
                    "ENHANCEDSTATUSCODES".to_string(),
                ];
                if self.shared.tls.is_some() && !self.tls {
                    lines.push("STARTTLS".to_string());
                }
                if plaintext_auth_allowed(self.tls, self.peer.ip()) {
                    lines.push("AUTH PLAIN LOGIN".to_string());
                }
                lines.push("HELP".to_string());
                reply::write_multiline(&mut self.output, 250, &lines);
            }
            Request::Helo { host } => {
                self.helo = true;
                self.reset_transaction();
                let r = reply::helo_ok(self.host(), &host);
                self.say(r);
            }
            Request::StartTls => {
                if self.tls {
                    self.say(reply::already_tls());
                } else if self.shared.tls.is_none() {
                    self.say(reply::not_implemented("STARTTLS"));
                } else {
                    self.say(reply::start_tls());
                    return Ok(Next::StartTls);
                }
            }
            Request::Auth {
                mechanism,
                initial_response,
            } => self.auth(io, mechanism, initial_response).await?,
            Request::Mail { from } => self.mail(from),
            Request::Rcpt { to } => self.rcpt(to.address).await,
            Request::Data => {
                if self.user.is_none() {
                    self.say(auth_required());
                } else if self.mail_from.is_none() {
                    self.say(reply::need_mail());
                } else if self.rcpts.is_empty() {
                    self.say(reply::need_rcpt());
                } else {
                    reply::start_data().write_to(&mut self.output);
                    return Ok(Next::Data);
                }
            }
            Request::Rset => {
                self.reset_transaction();
                self.say(reply::ok());
            }
            Request::Noop { .. } => self.say(reply::ok()),
            Request::Quit => {
                let r = reply::bye(self.host());
                self.say(r);
                return Ok(Next::Close);
            }
            Request::Vrfy { .. } => self.say(reply::vrfy()),
            Request::Help { .. } => self.say(Reply::new(
                214,
                "2.0.0",
                "Commands: EHLO HELO STARTTLS AUTH MAIL RCPT DATA RSET NOOP QUIT VRFY HELP",
            )),
            Request::Bdat { .. } => {
                // CHUNKING is not offered: the chunk that follows cannot be
                // told from commands, so the session ends.
                self.say(reply::not_implemented("BDAT"));
                return Ok(Next::Close);
            }
            Request::Lhlo { .. } => self.say(reply::unrecognized()),
            Request::Expn { .. } => self.say(reply::not_implemented("EXPN")),
            Request::Etrn { .. } => self.say(reply::not_implemented("ETRN")),
            Request::Atrn { .. } => self.say(reply::not_implemented("ATRN")),
            Request::Burl { .. } => self.say(reply::not_implemented("BURL")),
        }
        Ok(Next::Continue)
    }

    // -----------------------------------------------------------------
    // AUTH

    /// Sends a `334` challenge and reads the client's answer: `None` when
    /// the client cancels (`*`).
    async fn challenge<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        prompt: &str,
    ) -> Result<Option<String>, Stop> {
        self.output
            .extend_from_slice(format!("334 {prompt}\r\n").as_bytes());
        match self.next_line(io).await? {
            Line::End => Err(Stop::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed during AUTH",
            ))),
            Line::TooLong => Ok(Some(String::new())),
            Line::Command(l) => {
                let text = String::from_utf8_lossy(&l).trim().to_string();
                Ok((text != "*").then_some(text))
            }
        }
    }

    async fn auth<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        mechanism: u64,
        initial: String,
    ) -> Result<(), Stop> {
        if !self.helo {
            {
                self.say(reply::need_helo());
                return Ok(());
            }
        }
        if self.user.is_some() {
            {
                self.say(Reply::new(503, "5.5.1", "Already authenticated"));
                return Ok(());
            }
        }
        if self.mail_from.is_some() {
            {
                self.say(Reply::new(
                    503,
                    "5.5.1",
                    "AUTH is not allowed during a mail transaction",
                ));
                return Ok(());
            }
        }
        if !plaintext_auth_allowed(self.tls, self.peer.ip()) {
            metrics::inc("submission_auth_total", &[("result", "needs_tls")]);
            {
                self.say(Reply::new(
                538,
                "5.7.11",
                "Encryption required for requested authentication mechanism: use STARTTLS first",
            ));
                return Ok(());
            }
        }
        let initial = (!initial.is_empty()).then(|| {
            if initial == "=" {
                String::new()
            } else {
                initial
            }
        });
        let credentials = match mechanism {
            smtp_proto::AUTH_PLAIN => {
                let response = match initial {
                    Some(r) => Some(r),
                    None => self.challenge(io, "").await?,
                };
                response.map(|r| decode(&r).and_then(|b| plain_credentials(&b)))
            }
            smtp_proto::AUTH_LOGIN => {
                let user = match initial {
                    Some(u) => Some(u),
                    // "Username:"
                    None => self.challenge(io, "VXNlcm5hbWU6").await?,
                };
                match user {
                    None => None,
                    // "Password:"
                    Some(u) => self
                        .challenge(io, "UGFzc3dvcmQ6")
                        .await?
                        .map(|p| login_credentials(&u, &p)),
                }
            }
            _ => {
                self.say(Reply::new(
                    504,
                    "5.5.4",
                    "Unrecognized authentication type: use PLAIN or LOGIN",
                ));
                return Ok(());
            }
        };
        let (email, token) = match credentials {
            None => {
                self.say(Reply::new(501, "5.0.0", "Authentication cancelled"));
                return Ok(());
            }
            Some(None) => {
                metrics::inc("submission_auth_total", &[("result", "malformed")]);
                {
                    self.say(Reply::new(
                    501,
                    "5.5.2",
                    "Cannot decode the authentication response (base64 of the email and API token)",
                ));
                    return Ok(());
                }
            }
            Some(Some(c)) => c,
        };
        self.check_login(email, token).await;
        Ok(())
    }

    /// Decides email + API token, through the per-address failure limiter
    /// (as IMAP LOGIN does): a blocked address is refused before its
    /// credentials are looked at.
    async fn check_login(&mut self, email: String, token: String) {
        let limiter = &self.shared.limits.submission_login;
        let ip = self.peer.ip();
        let throttled = |secs: u64| {
            Reply::new(
                454,
                "4.7.0",
                format!("Too many failed logins from your address; try again in {secs} s"),
            )
        };
        if let Err(wait) = limiter.check(ip) {
            metrics::inc("submission_auth_total", &[("result", "throttled")]);
            return self.say(throttled(wait.secs()));
        }
        let found = self
            .shared
            .store
            .read(move |c| users::by_token(c, &token))
            .await;
        let user = match found {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "submission AUTH: store unavailable");
                return self.say(Reply::new(
                    454,
                    "4.7.0",
                    "Temporary authentication failure, try again later",
                ));
            }
        };
        match user {
            Some(u) if u.email.eq_ignore_ascii_case(email.trim()) => {
                if let Err(wait) = limiter.success(ip) {
                    metrics::inc("submission_auth_total", &[("result", "throttled")]);
                    return self.say(throttled(wait.secs()));
                }
                if !u.role.can_write() {
                    metrics::inc("submission_auth_total", &[("result", "viewer")]);
                    tracing::info!(user = %u.email, "submission AUTH refused: viewer");
                    return self.say(Reply::new(
                        535,
                        "5.7.8",
                        "Your role (viewer) can read side conversations but not send: \
                         ask an admin for the member role",
                    ));
                }
                metrics::inc("submission_auth_total", &[("result", "ok")]);
                tracing::info!(user = %u.email, "submission login");
                self.user = Some(u);
                self.say(Reply::new(235, "2.7.0", "Authentication successful"));
            }
            _ => match limiter.failure(ip) {
                Ok(_) => {
                    metrics::inc("submission_auth_total", &[("result", "failed")]);
                    tracing::info!(peer = %self.peer, "submission AUTH failed");
                    let delay = auth_failure_delay(&self.shared.config);
                    let shutdown = self.shutdown.clone();
                    tokio::select! {
                        _ = shutdown.wait() => {}
                        _ = tokio::time::sleep(delay) => {}
                    }
                    self.say(Reply::new(
                        535,
                        "5.7.8",
                        "Authentication credentials invalid (user name: your email, \
                         password: your API token)",
                    ));
                }
                Err(wait) => {
                    metrics::inc("submission_auth_total", &[("result", "throttled")]);
                    self.say(throttled(wait.secs()));
                }
            },
        }
    }

    // -----------------------------------------------------------------
    // The envelope

    fn mail(&mut self, from: MailFrom<String>) {
        let Some(email) = self.user.as_ref().map(|u| u.email.clone()) else {
            return self.say(auth_required());
        };
        if self.mail_from.is_some() {
            return self.say(reply::nested_mail());
        }
        let allowed = smtp_proto::MAIL_BODY_7BIT | smtp_proto::MAIL_BODY_8BITMIME;
        let unsupported = if from.flags & !allowed != 0 {
            Some("(only SIZE and BODY are supported)")
        } else if from.env_id.is_some() {
            Some("ENVID")
        } else {
            super::session::unadvertised_mail_param(&from)
        };
        if let Some(param) = unsupported {
            return self.say(reply::unsupported_parameter(param));
        }
        if from.size > self.shared.config.submission.max_message_bytes {
            metrics::inc("submission_messages_total", &[("result", "size")]);
            return self.say(reply::size_exceeded());
        }
        if !from.address.eq_ignore_ascii_case(&email) {
            let text = format!(
                "MAIL FROM <{}> is not your address: send as <{email}>",
                printable(&from.address),
            );
            return self.say_wrapped(550, "5.7.1", &text);
        }
        self.mail_from = Some(from.address);
        self.say(reply::sender_ok());
    }

    async fn rcpt(&mut self, address: String) {
        if self.user.is_none() {
            return self.say(auth_required());
        }
        if self.mail_from.is_none() {
            return self.say(reply::need_mail());
        }
        if address.is_empty() || MailAddr::parse(&address).is_none() {
            return self.say(reply::bad_recipient_address());
        }
        if self.rcpts.iter().any(|r| r.eq_ignore_ascii_case(&address)) {
            return self.say(reply::recipient_ok());
        }
        if self.rcpts.len() >= self.shared.config.submission.max_recipients {
            metrics::inc("submission_rcpt_total", &[("result", "too_many")]);
            return self.say(reply::too_many_recipients());
        }
        match self.check_rcpt(&address).await {
            Ok(RcptCheck::Accept) => {
                metrics::inc("submission_rcpt_total", &[("result", "accepted")]);
                self.rcpts.push(address);
                self.say(reply::recipient_ok());
            }
            Ok(RcptCheck::Relay) => {
                metrics::inc("submission_rcpt_total", &[("result", "relay_denied")]);
                self.say(reply::relay_denied());
            }
            Ok(RcptCheck::Unknown(reason)) => {
                metrics::inc("submission_rcpt_total", &[("result", "unknown")]);
                self.say_wrapped(550, "5.1.1", &reason);
            }
            Err(e) => {
                tracing::error!(error = %e, "submission: recipient lookup failed");
                self.say(reply::lookup_failed());
            }
        }
    }

    /// What the envelope tells of a recipient. Addresses outside are
    /// accepted here: whether they may be written to depends on the
    /// headers, judged with the message (`agent_mail`).
    async fn check_rcpt(&self, address: &str) -> crate::store::Result<RcptCheck> {
        let config = &self.shared.config;
        let own = self
            .user
            .as_ref()
            .is_some_and(|u| u.email.eq_ignore_ascii_case(address));
        if own {
            return Ok(RcptCheck::Accept);
        }
        if policy::routing_syntax(address) {
            return Ok(RcptCheck::Relay);
        }
        let Some(a) = MailAddr::parse(address) else {
            return Ok(RcptCheck::Relay);
        };
        if !a.domain.eq_ignore_ascii_case(&config.domain) {
            return Ok(RcptCheck::Accept);
        }
        let shown = printable(address);
        if let Some((base, detail)) = a.plus_parts()
            && base.eq_ignore_ascii_case("ticket")
        {
            let ticket = detail.to_string();
            let domain = config.domain.clone();
            return self
                .shared
                .store
                .read(move |db| {
                    Ok(match parents::get(db, &ticket)? {
                        Some(_) => RcptCheck::Accept,
                        None => RcptCheck::Unknown(format!(
                            "ticket+{}@{domain}: there is no parent ticket {:?}",
                            printable(&ticket),
                            printable(&ticket)
                        )),
                    })
                })
                .await;
        }
        if looks_like_agent_reply_address(config, address) {
            // Its signature is checked with the message.
            return Ok(RcptCheck::Accept);
        }
        if let RcptClass::GatewayToken(token) = policy::classify(address, &config.domain) {
            return self
                .shared
                .store
                .read(move |db| {
                    Ok(match routing::side_conversation_of_token(db, &token)? {
                        Some(_) => RcptCheck::Accept,
                        None => RcptCheck::Unknown(format!(
                            "<{shown}>: no side conversation has this address"
                        )),
                    })
                })
                .await;
        }
        Ok(RcptCheck::Unknown(format!(
            "<{shown}> is not an address you can send to: write to a side conversation's \
             reply address or to ticket+<parent id>@{}",
            config.domain
        )))
    }

    // -----------------------------------------------------------------
    // DATA

    async fn receive_data<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
    ) -> Result<(), Stop> {
        let cfg = &self.shared.config.submission;
        let (per_read, deadline) = (cfg.data_timeout, Instant::now() + cfg.data_max_time);
        let mut rx = DataReceiver::new(cfg.max_message_bytes);
        let mut done = rx.feed(&self.input);
        match done {
            Some(used) => {
                self.input.drain(..used);
            }
            None => self.input.clear(),
        }
        let mut buf = vec![0u8; READ_CHUNK];
        while done.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Stop::Timeout);
            }
            let n = match tokio::time::timeout(per_read.min(left), io.read(&mut buf)).await {
                Err(_) => return Err(Stop::Timeout),
                Ok(Err(e)) => return Err(Stop::Io(e)),
                Ok(Ok(n)) => n,
            };
            if n == 0 {
                // Gone mid-DATA: nothing was sent.
                return Err(Stop::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed during DATA",
                )));
            }
            done = rx.feed(&buf[..n]);
            if let Some(used) = done {
                self.input.extend_from_slice(&buf[used..n]);
            }
        }
        let rcpts = std::mem::take(&mut self.rcpts);
        self.mail_from = None;
        match rx.finish() {
            DataOutcome::TooLarge { size } => {
                tracing::info!(size, "submitted message over the size limit");
                metrics::inc("submission_messages_total", &[("result", "size")]);
                self.say(reply::size_exceeded());
            }
            DataOutcome::Complete(raw) => self.submit(raw, rcpts).await,
        }
        if self.shutdown.is_triggered() {
            return Err(Stop::Shutdown);
        }
        Ok(())
    }

    /// Hands the message to `agent_mail`: sent (or started) in one
    /// transaction, or refused with the reason the client shows.
    async fn submit(&mut self, raw: Vec<u8>, rcpts: Vec<String>) {
        let Some(user) = &self.user else {
            return self.say(auth_required());
        };
        let actor = Actor {
            user_id: user.id,
            name: user.name.clone(),
            email: user.email.clone(),
        };
        let size = raw.len();
        match self
            .shared
            .conversations
            .agent_mail(actor, raw, rcpts)
            .await
        {
            Ok(s) => {
                let (result, text) = if s.duplicate {
                    (
                        "duplicate",
                        format!(
                            "Already sent in side conversation {} (same Message-ID)",
                            s.side_conversation
                        ),
                    )
                } else if s.started {
                    (
                        "started",
                        format!("Sent: started side conversation {}", s.side_conversation),
                    )
                } else {
                    (
                        "sent",
                        format!("Sent in side conversation {}", s.side_conversation),
                    )
                };
                metrics::inc("submission_messages_total", &[("result", result)]);
                tracing::info!(
                    side_conversation = s.side_conversation,
                    message = s.message,
                    size,
                    result,
                    "agent mail submitted"
                );
                self.say(Reply::new(250, "2.0.0", text));
            }
            Err(AgentMailError::Refused(reason)) => {
                metrics::inc("submission_messages_total", &[("result", "refused")]);
                tracing::info!(%reason, "agent mail refused");
                self.say_wrapped(550, "5.7.1", &reason);
            }
            Err(AgentMailError::Store(e)) => {
                metrics::inc("submission_messages_total", &[("result", "failed")]);
                tracing::error!(error = %e, "agent mail: store fault; answering 451");
                self.say(Reply::new(
                    451,
                    "4.3.0",
                    "Temporary failure sending the message, try again later",
                ));
            }
        }
    }
}

fn auth_required() -> Reply {
    Reply::new(530, "5.7.0", "Authentication required")
}

/// An address as shown in a reply: printable ASCII only, bounded.
fn printable(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(200)
        .collect()
}

fn decode(b64: &str) -> Option<Vec<u8>> {
    BASE64.decode(b64.trim()).ok()
}

/// RFC 4616: `[authzid] NUL authcid NUL passwd`. An authorization
/// identity other than the user's own is refused (no acting as another).
fn plain_credentials(bytes: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut parts = text.split('\0');
    let (authz, authc, pass) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || authc.is_empty() {
        return None;
    }
    if !authz.is_empty() && !authz.eq_ignore_ascii_case(authc) {
        return None;
    }
    Some((authc.to_string(), pass.to_string()))
}

/// AUTH LOGIN: the base64 user name and password.
fn login_credentials(user: &str, pass: &str) -> Option<(String, String)> {
    let user = String::from_utf8(decode(user)?).ok()?;
    let pass = String::from_utf8(decode(pass)?).ok()?;
    (!user.is_empty()).then_some((user, pass))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_credentials_are_read_per_rfc_4616() {
        assert_eq!(
            plain_credentials(b"\0ann@acme.com\0tok"),
            Some(("ann@acme.com".into(), "tok".into()))
        );
        assert_eq!(
            plain_credentials(b"ann@acme.com\0ann@acme.com\0tok"),
            Some(("ann@acme.com".into(), "tok".into()))
        );
        assert_eq!(plain_credentials(b"bob@acme.com\0ann@acme.com\0tok"), None);
        assert_eq!(plain_credentials(b"\0\0tok"), None);
        assert_eq!(plain_credentials(b"ann@acme.com tok"), None);
        assert_eq!(plain_credentials(b"\0a\0b\0c"), None);
        assert_eq!(plain_credentials(&[0, 0xff, 0, b'x']), None);
    }

    #[test]
    fn login_credentials_are_base64() {
        let (u, p) = (BASE64.encode("ann@acme.com"), BASE64.encode("tok"));
        assert_eq!(
            login_credentials(&u, &p),
            Some(("ann@acme.com".into(), "tok".into()))
        );
        assert_eq!(login_credentials("%%%", &p), None);
        assert_eq!(login_credentials("", &p), None);
    }
}
