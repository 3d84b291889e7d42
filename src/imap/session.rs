//! One IMAP session: the RFC 3501 state machine (not authenticated →
//! authenticated → selected → logout) and every command of SPEC §9.
//! Commands outside the read-mostly agent view are answered `NO`, unknown
//! or malformed ones `BAD`; the connection stays open either way.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Duration;

use imap_next::server::Event;
use imap_types::IntoStatic;
use imap_types::auth::{AuthMechanism, AuthenticateData};
use imap_types::command::{Command, CommandBody};
use imap_types::core::{Atom, Charset, QuotedChar, Tag, Vec1};
use imap_types::extensions::thread::ThreadingAlgorithm;
use imap_types::flag::{Flag, FlagNameAttribute, FlagPerm};
use imap_types::mailbox::{ListMailbox, Mailbox};
use imap_types::response::{
    Bye, Capability, Code, CodeOther, Data, Greeting, GreetingKind, Status, StatusBody, StatusKind,
    Tagged,
};
use imap_types::search::SearchKey;
use imap_types::status::{StatusDataItem, StatusDataItemName};
use tokio::io::{AsyncRead, AsyncWrite};

use super::Shared;
use super::conn::{Conn, Input};
use super::names;
use super::selected::{Changes, Selected, nz};
use crate::metrics;
use crate::shutdown::Shutdown;
use crate::store::users::{self, Standing, User};
use crate::store::{StoreError, view};

pub(super) enum Flow {
    Continue,
    Close,
}

pub(super) struct Session<'a, S> {
    pub shared: &'a Shared,
    pub conn: Conn<S>,
    peer: SocketAddr,
    pub user: Option<User>,
    pub selected: Option<Selected>,
    commits: tokio::sync::watch::Receiver<u64>,
    /// Moves when any user's credentials change (see `Store::credentials`):
    /// an IDLE re-checks its user then.
    credentials: tokio::sync::watch::Receiver<i64>,
    shutdown: Shutdown,
    /// The tag of an AUTHENTICATE in progress.
    auth_tag: Option<Tag<'static>>,
    bad_in_a_row: u32,
}

fn capabilities(authenticated: bool) -> Vec1<Capability<'static>> {
    let mut caps = vec![
        Capability::Imap4Rev1,
        Capability::LiteralPlus,
        Capability::Idle,
        Capability::Unselect,
        Capability::Thread(ThreadingAlgorithm::References),
    ];
    // SPECIAL-USE (RFC 6154): LIST marks the user's Sent `\Sent`.
    for name in ["CHILDREN", "SPECIAL-USE"] {
        if let Ok(atom) = Atom::try_from(name) {
            caps.push(Capability::from(atom));
        }
    }
    if !authenticated {
        caps.push(Capability::Auth(AuthMechanism::Plain));
    }
    Vec1::try_from(caps).unwrap_or_else(|_| Vec1::from(Capability::Imap4Rev1))
}

fn text(s: impl Into<String>) -> imap_types::core::Text<'static> {
    let s: String = s.into();
    let clean: String = s
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    imap_types::core::Text::try_from(if clean.trim().is_empty() {
        "-".to_string()
    } else {
        clean
    })
    .unwrap_or_else(|_| imap_types::core::Text::unvalidated("-"))
}

pub(super) fn tagged(
    tag: &Tag<'static>,
    kind: StatusKind,
    code: Option<Code<'static>>,
    msg: impl Into<String>,
) -> Status<'static> {
    Status::Tagged(Tagged {
        tag: tag.clone(),
        body: StatusBody {
            kind,
            code,
            text: text(msg),
        },
    })
}

pub(super) fn code_other(name: &'static str) -> Code<'static> {
    Code::Other(CodeOther::unvalidated(name.as_bytes()))
}

fn mailbox_bytes(m: &Mailbox<'_>) -> Vec<u8> {
    match m {
        Mailbox::Inbox => b"INBOX".to_vec(),
        Mailbox::Other(o) => o.as_ref().to_vec(),
    }
}

fn command_name(body: &CommandBody<'_>) -> &'static str {
    match body {
        CommandBody::Capability => "CAPABILITY",
        CommandBody::Noop => "NOOP",
        CommandBody::Logout => "LOGOUT",
        CommandBody::Login { .. } => "LOGIN",
        CommandBody::Authenticate { .. } => "AUTHENTICATE",
        CommandBody::Select { .. } => "SELECT",
        CommandBody::Examine { .. } => "EXAMINE",
        CommandBody::Unselect => "UNSELECT",
        CommandBody::List { .. } => "LIST",
        CommandBody::Lsub { .. } => "LSUB",
        CommandBody::Status { .. } => "STATUS",
        CommandBody::Check => "CHECK",
        CommandBody::Close => "CLOSE",
        CommandBody::Search { .. } => "SEARCH",
        CommandBody::Thread { .. } => "THREAD",
        CommandBody::Fetch { .. } => "FETCH",
        CommandBody::Store { .. } => "STORE",
        CommandBody::Idle => "IDLE",
        CommandBody::Append { .. } => "APPEND",
        _ => "other",
    }
}

/// Runs a session on an accepted (and, for TLS, handshaken) stream until
/// LOGOUT, the client leaving, a timeout or shutdown.
pub(super) async fn run<S>(shared: &Shared, io: S, peer: SocketAddr, tls: bool, shutdown: Shutdown)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let greeting = Greeting {
        kind: GreetingKind::Ok,
        code: Some(Code::Capability(capabilities(false))),
        text: text("backchannel IMAP4rev1 ready"),
    };
    // The largest command line (literals included) and the largest literal
    // a client may send before login (imap.max_line_bytes,
    // imap.max_literal_bytes), and the largest literal after it
    // (imap.max_append_bytes: a sent copy saved with APPEND).
    let limits = &shared.config.imap;
    let conn = Conn::new(
        io,
        greeting,
        limits.max_line_bytes,
        limits.max_literal_bytes,
        limits.max_append_bytes,
        limits.idle_timeout,
    );
    let mut session = Session {
        shared,
        conn,
        peer,
        user: None,
        selected: None,
        commits: shared.store.commits(),
        credentials: shared.store.credentials(),
        shutdown,
        auth_tag: None,
        bad_in_a_row: 0,
    };
    tracing::debug!(tls, "IMAP session started");
    if let Err(e) = session.main_loop().await {
        tracing::debug!(error = %e, "IMAP session ended with an I/O error");
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<'_, S> {
    fn store(&self) -> &crate::store::Store {
        &self.shared.store
    }

    fn wait_limit(&self) -> Duration {
        let idle = self.shared.config.imap.idle_timeout;
        if self.user.is_none() {
            // Before login a connection gets at most imap.preauth_timeout
            // between commands.
            idle.min(self.shared.config.imap.preauth_timeout)
        } else {
            idle
        }
    }

    async fn bye(&mut self, code: Option<Code<'static>>, msg: &str) {
        self.conn.status(Status::Bye(Bye {
            code,
            text: text(msg),
        }));
        self.conn.close().await;
    }

    async fn main_loop(&mut self) -> std::io::Result<()> {
        // The next command must be complete by this time, however its bytes
        // are spread: a client trickling a byte at a time (slowloris) is
        // logged out like an idle one.
        let mut deadline: Option<tokio::time::Instant> = None;
        // imap.preauth_max_time bounds the whole unauthenticated phase: a
        // client that keeps sending NOOPs without logging in holds its
        // connection slot no longer than this.
        let preauth_end = tokio::time::Instant::now() + self.shared.config.imap.preauth_max_time;
        loop {
            while let Some(input) = self.conn.take_input() {
                deadline = None;
                if let Flow::Close = self.handle(input).await? {
                    self.conn.close().await;
                    return Ok(());
                }
                self.conn.flush_if_full().await?;
            }
            self.conn.flush().await?;
            if self.shutdown.is_triggered() {
                self.bye(None, "Server shutting down").await;
                return Ok(());
            }
            // Checked here, not only as a read deadline: a client sending
            // without pause would always have input ready.
            let preauth = self.user.is_none();
            if preauth && tokio::time::Instant::now() >= preauth_end {
                self.preauth_expired().await;
                return Ok(());
            }
            let limit = self.wait_limit();
            let mut until = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + limit);
            if preauth {
                until = until.min(preauth_end);
            }
            tokio::select! {
                _ = self.shutdown.wait() => {
                    self.bye(None, "Server shutting down").await;
                    return Ok(());
                }
                read = tokio::time::timeout_at(until, self.conn.read_more()) => match read {
                    Err(_) if preauth && tokio::time::Instant::now() >= preauth_end => {
                        self.preauth_expired().await;
                        return Ok(());
                    }
                    Err(_) => {
                        self.bye(None, "Autologout; idle for too long").await;
                        return Ok(());
                    }
                    Ok(Ok(0)) => return Ok(()),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(e),
                }
            }
        }
    }

    async fn preauth_expired(&mut self) {
        metrics::inc("imap_sessions_cut_total", &[("reason", "preauth_max_time")]);
        tracing::info!(peer = %self.peer, "not logged in within imap.preauth_max_time");
        self.bye(None, "Autologout; not logged in in time").await;
    }

    async fn handle(&mut self, input: Input) -> std::io::Result<Flow> {
        match input {
            Input::Answered => Ok(Flow::Continue),
            Input::Refused { tag, reason } => {
                metrics::inc("imap_commands_total", &[("command", "invalid")]);
                self.bad_in_a_row += 1;
                let status = match tag.and_then(|t| Tag::try_from(t).ok()) {
                    Some(tag) => tagged(&tag.into_static(), StatusKind::Bad, None, reason),
                    None => Status::Untagged(StatusBody {
                        kind: StatusKind::Bad,
                        code: None,
                        text: text(reason),
                    }),
                };
                self.conn.status(status);
                // imap.max_bad_commands unparsable commands in a row close
                // the connection.
                if self.bad_in_a_row >= self.shared.config.imap.max_bad_commands {
                    self.bye(None, "Too many invalid commands").await;
                    return Ok(Flow::Close);
                }
                Ok(Flow::Continue)
            }
            Input::Event(Event::CommandReceived { command }) => {
                self.bad_in_a_row = 0;
                metrics::inc(
                    "imap_commands_total",
                    &[("command", command_name(&command.body))],
                );
                if !matches!(command.body, CommandBody::Logout) {
                    match self.still_allowed().await {
                        Ok(true) => {}
                        Ok(false) => {
                            self.revoked(Some(&command.tag)).await;
                            return Ok(Flow::Close);
                        }
                        Err(e) => {
                            self.store_failed(&command.tag, e);
                            return Ok(Flow::Continue);
                        }
                    }
                }
                self.command(command).await
            }
            Input::Event(Event::CommandAuthenticateReceived {
                command_authenticate,
            }) => {
                self.bad_in_a_row = 0;
                metrics::inc("imap_commands_total", &[("command", "AUTHENTICATE")]);
                let tag = command_authenticate.tag.clone();
                if self.user.is_some() {
                    self.conn.authenticate_finish(tagged(
                        &tag,
                        StatusKind::Bad,
                        None,
                        "Already logged in",
                    ));
                    return Ok(Flow::Continue);
                }
                if command_authenticate.mechanism != AuthMechanism::Plain {
                    self.conn.authenticate_finish(tagged(
                        &tag,
                        StatusKind::No,
                        None,
                        "Unsupported mechanism; use PLAIN or LOGIN <email> <API token>",
                    ));
                    return Ok(Flow::Continue);
                }
                match command_authenticate.initial_response {
                    Some(data) => {
                        let data = data.declassify().to_vec();
                        self.auth_tag = Some(tag);
                        self.authenticate_plain(&data).await;
                    }
                    None => {
                        self.auth_tag = Some(tag);
                        self.conn.authenticate_continue();
                    }
                }
                Ok(Flow::Continue)
            }
            Input::Event(Event::AuthenticateDataReceived { authenticate_data }) => {
                match authenticate_data {
                    AuthenticateData::Continue(data) => {
                        let data = data.declassify().to_vec();
                        self.authenticate_plain(&data).await;
                    }
                    AuthenticateData::Cancel => {
                        if let Some(tag) = self.auth_tag.take() {
                            self.conn.authenticate_finish(tagged(
                                &tag,
                                StatusKind::Bad,
                                None,
                                "Authentication cancelled",
                            ));
                        }
                    }
                }
                Ok(Flow::Continue)
            }
            Input::Event(Event::IdleCommandReceived { tag }) => {
                metrics::inc("imap_commands_total", &[("command", "IDLE")]);
                self.idle(tag).await
            }
            Input::Event(Event::IdleDoneReceived) => Ok(Flow::Continue),
            Input::Event(Event::GreetingSent { .. }) | Input::Event(Event::ResponseSent { .. }) => {
                Ok(Flow::Continue)
            }
        }
    }

    // -----------------------------------------------------------------
    // Login

    /// Whether the logged-in user may go on (true before login): not
    /// deactivated, token not rotated, role unchanged since the login (one
    /// primary-key read). A deactivation from another process (the command
    /// line) is seen by the next command.
    async fn still_allowed(&mut self) -> Result<bool, StoreError> {
        let Some(user) = &self.user else {
            return Ok(true);
        };
        let (id, epoch) = (user.id, user.credential_epoch);
        match self
            .store()
            .read(move |c| users::standing(c, id, epoch))
            .await?
        {
            Standing::Valid(now) => {
                self.user = Some(now);
                Ok(true)
            }
            Standing::Revoked => Ok(false),
        }
    }

    /// Ends a session whose user was deactivated, changed role or got a
    /// new token: `* BYE`, the command's tagged `NO`, and the connection
    /// closes.
    async fn revoked(&mut self, tag: Option<&Tag<'static>>) {
        metrics::inc("imap_sessions_cut_total", &[("reason", "revoked")]);
        if let Some(u) = &self.user {
            tracing::info!(user = %u.email, "IMAP session ended: access revoked");
        }
        self.conn.status(Status::Bye(Bye {
            code: None,
            text: text("Access revoked (user deactivated, role changed or token rotated)"),
        }));
        if let Some(tag) = tag {
            self.conn.status(tagged(
                tag,
                StatusKind::No,
                Some(code_other("AUTHENTICATIONFAILED")),
                "Access revoked; log in again",
            ));
        }
        self.conn.close().await;
    }

    /// Checks `email` + API token: the single place a login attempt (LOGIN
    /// or AUTHENTICATE PLAIN) is decided, through the per-IP limiter for
    /// repeated failures.
    async fn check_login(&self, email: String, token: String) -> Result<User, LoginError> {
        // An address that failed too often is refused before its
        // credentials are looked at: a blocked guesser learns nothing more.
        let limiter = &self.shared.limits.imap_login;
        let ip = self.peer.ip();
        if let Err(wait) = limiter.check(ip) {
            return Err(LoginError::Throttled(wait.secs()));
        }
        let user = self
            .store()
            .read(move |c| crate::store::users::by_token(c, &token))
            .await
            .map_err(LoginError::Store)?;
        // Blocked meanwhile by a concurrent attempt from the address: this
        // one is refused too, right or wrong (see `limits`).
        match user {
            Some(u) if u.email.eq_ignore_ascii_case(email.trim()) => match limiter.success(ip) {
                Ok(()) => Ok(u),
                Err(wait) => Err(LoginError::Throttled(wait.secs())),
            },
            _ => match limiter.failure(ip) {
                Ok(_) => Err(LoginError::Invalid),
                Err(wait) => Err(LoginError::Throttled(wait.secs())),
            },
        }
    }

    /// The tagged answer to a login attempt (the user is logged in on
    /// success).
    async fn finish_login(
        &mut self,
        tag: Tag<'static>,
        result: Result<User, LoginError>,
    ) -> Status<'static> {
        match result {
            Ok(user) => {
                metrics::inc("imap_logins_total", &[("result", "ok")]);
                tracing::info!(user = %user.email, "IMAP login");
                self.user = Some(user);
                self.conn.logged_in();
                tagged(
                    &tag,
                    StatusKind::Ok,
                    Some(Code::Capability(capabilities(true))),
                    "Logged in",
                )
            }
            Err(LoginError::Invalid) => {
                metrics::inc("imap_logins_total", &[("result", "failed")]);
                tracing::info!(peer = %self.peer, "IMAP login failed");
                // imap.login_failure_delay: slows guessing.
                tokio::time::sleep(self.shared.config.imap.login_failure_delay).await;
                tagged(
                    &tag,
                    StatusKind::No,
                    Some(code_other("AUTHENTICATIONFAILED")),
                    "Invalid credentials (user name: your email, password: your API token)",
                )
            }
            Err(LoginError::Throttled(secs)) => {
                metrics::inc("imap_logins_total", &[("result", "throttled")]);
                tracing::info!(peer = %self.peer, "IMAP login refused: too many failures");
                tagged(
                    &tag,
                    StatusKind::No,
                    Some(code_other("UNAVAILABLE")),
                    format!("Too many failed logins from your address; try again in {secs} s"),
                )
            }
            Err(LoginError::Store(e)) => {
                tracing::warn!(error = %e, "IMAP login: store unavailable");
                tagged(
                    &tag,
                    StatusKind::No,
                    Some(code_other("UNAVAILABLE")),
                    "Temporary failure, try again",
                )
            }
        }
    }

    async fn authenticate_plain(&mut self, data: &[u8]) {
        // authzid NUL authcid NUL passwd; authzid empty or the same user.
        let parts: Vec<&[u8]> = data.split(|&b| b == 0).collect();
        let result = if let [authz, authc, pass] = parts.as_slice() {
            let authc = String::from_utf8_lossy(authc).into_owned();
            let pass = String::from_utf8_lossy(pass).into_owned();
            if !authz.is_empty() && !authz.eq_ignore_ascii_case(authc.as_bytes()) {
                Err(LoginError::Invalid)
            } else {
                self.check_login(authc, pass).await
            }
        } else {
            Err(LoginError::Invalid)
        };
        if let Some(tag) = self.auth_tag.take() {
            let status = self.finish_login(tag, result).await;
            self.conn.authenticate_finish(status);
        }
    }

    // -----------------------------------------------------------------
    // Commands

    async fn command(&mut self, command: Command<'static>) -> std::io::Result<Flow> {
        let Command { tag, body } = command;
        match body {
            CommandBody::Capability => {
                self.conn
                    .data(Data::Capability(capabilities(self.user.is_some())));
                self.ok(&tag, "CAPABILITY completed").await;
            }
            CommandBody::Noop | CommandBody::Check => {
                self.ok(&tag, "Completed").await;
            }
            CommandBody::Logout => {
                self.conn.status(Status::Bye(Bye {
                    code: None,
                    text: text("Logging out"),
                }));
                self.conn
                    .status(tagged(&tag, StatusKind::Ok, None, "LOGOUT completed"));
                return Ok(Flow::Close);
            }
            CommandBody::Login { username, password } => {
                if self.user.is_some() {
                    self.conn
                        .status(tagged(&tag, StatusKind::Bad, None, "Already logged in"));
                } else {
                    let email = String::from_utf8_lossy(username.as_ref()).into_owned();
                    let token =
                        String::from_utf8_lossy(password.declassify().as_ref()).into_owned();
                    let result = self.check_login(email, token).await;
                    let status = self.finish_login(tag, result).await;
                    self.conn.status(status);
                }
            }
            body if self.user.is_none() => {
                let _ = body;
                self.conn.status(tagged(
                    &tag,
                    StatusKind::Bad,
                    None,
                    "Log in first (LOGIN <email> <API token>)",
                ));
            }
            CommandBody::Select { mailbox, .. } => self.select(&tag, &mailbox, false).await,
            CommandBody::Examine { mailbox, .. } => self.select(&tag, &mailbox, true).await,
            CommandBody::Unselect | CommandBody::Close => {
                if self.selected.take().is_some() {
                    self.conn
                        .status(tagged(&tag, StatusKind::Ok, None, "Completed"));
                } else {
                    self.conn
                        .status(tagged(&tag, StatusKind::Bad, None, "No mailbox selected"));
                }
            }
            CommandBody::List {
                reference,
                mailbox_wildcard,
            } => self.list(&tag, &reference, &mailbox_wildcard, false).await,
            CommandBody::Lsub {
                reference,
                mailbox_wildcard,
            } => self.list(&tag, &reference, &mailbox_wildcard, true).await,
            CommandBody::Status {
                mailbox,
                item_names,
            } => self.status(&tag, &mailbox, &item_names).await,
            CommandBody::Subscribe { mailbox } => {
                // Every mailbox is subscribed already.
                match self.find_mailbox(&mailbox).await {
                    Ok(Some(_)) => self.ok(&tag, "SUBSCRIBE completed").await,
                    Ok(None) => self.conn.status(tagged(
                        &tag,
                        StatusKind::No,
                        Some(code_other("NONEXISTENT")),
                        "No such mailbox",
                    )),
                    Err(e) => self.store_failed(&tag, e),
                }
            }
            CommandBody::Search {
                charset,
                criteria,
                uid,
            } => self.search(&tag, charset.as_ref(), criteria, uid).await,
            CommandBody::Thread {
                algorithm,
                charset,
                search_criteria,
                uid,
            } => {
                self.thread(&tag, &algorithm, &charset, search_criteria, uid)
                    .await
            }
            CommandBody::Fetch {
                sequence_set,
                macro_or_item_names,
                uid,
                ..
            } => {
                super::fetch::fetch(self, &tag, &sequence_set, macro_or_item_names, uid).await?;
            }
            CommandBody::Store {
                sequence_set,
                kind,
                response,
                flags,
                uid,
                ..
            } => {
                super::fetch::store(self, &tag, &sequence_set, kind, response, &flags, uid).await?;
            }
            CommandBody::Append { mailbox, .. } => self.append(&tag, &mailbox).await,
            CommandBody::Create { .. }
            | CommandBody::Delete { .. }
            | CommandBody::Rename { .. }
            | CommandBody::Unsubscribe { .. } => {
                self.conn.status(tagged(
                    &tag,
                    StatusKind::No,
                    Some(code_other("CANNOT")),
                    "The agent view is read-only: mailboxes follow the helpdesk's tickets",
                ));
            }
            CommandBody::Copy { .. }
            | CommandBody::Move { .. }
            | CommandBody::Expunge
            | CommandBody::ExpungeUid { .. } => {
                self.conn.status(tagged(
                    &tag,
                    StatusKind::No,
                    Some(code_other("CANNOT")),
                    "The agent view is read-only: messages cannot be copied, moved or removed",
                ));
            }
            _ => {
                self.conn
                    .status(tagged(&tag, StatusKind::Bad, None, "Command not supported"));
            }
        }
        Ok(Flow::Continue)
    }

    fn store_failed(&mut self, tag: &Tag<'static>, e: StoreError) {
        tracing::warn!(error = %e, "IMAP command failed on the store");
        self.conn.status(tagged(
            tag,
            StatusKind::No,
            Some(code_other("UNAVAILABLE")),
            "Temporary failure, try again",
        ));
    }

    /// Reports what changed in the selected mailbox (untagged EXPUNGE,
    /// EXISTS, FETCH FLAGS), if anything was committed since the last look.
    pub(super) async fn updates(&mut self, allow_expunge: bool) {
        let Some(sel) = self.selected.as_ref() else {
            return;
        };
        if self.user.is_none() {
            return;
        }
        let owed = allow_expunge && sel.has_pending();
        if !self.commits.has_changed().unwrap_or(false) && !owed {
            return;
        }
        self.commits.borrow_and_update();
        self.refresh_now(allow_expunge).await;
    }

    /// [`Session::updates`] without first asking whether anything was
    /// committed (the caller just learnt it was).
    async fn refresh_now(&mut self, allow_expunge: bool) {
        let Some(user_id) = self.user.as_ref().map(|u| u.id) else {
            return;
        };
        let Some(sel) = self.selected.as_mut() else {
            return;
        };
        match sel
            .refresh(&self.shared.store, user_id, allow_expunge)
            .await
        {
            Ok(changes) => emit_changes(&mut self.conn, changes),
            Err(e) => tracing::warn!(error = %e, "IMAP refresh failed"),
        }
    }

    /// Untagged updates, then `tag OK msg`.
    async fn ok(&mut self, tag: &Tag<'static>, msg: &str) {
        self.updates(true).await;
        self.conn.status(tagged(tag, StatusKind::Ok, None, msg));
    }

    /// Who is logged in, as the agent view sees them.
    fn viewer(&self) -> Option<view::Viewer> {
        self.user.as_ref().map(|u| view::Viewer {
            role: u.role,
            user_id: u.id,
        })
    }

    async fn find_mailbox(
        &self,
        mailbox: &Mailbox<'_>,
    ) -> Result<Option<view::Mailbox>, StoreError> {
        let Some(viewer) = self.viewer() else {
            return Ok(None);
        };
        let name = names::from_wire(&mailbox_bytes(mailbox));
        self.store()
            .read(move |c| view::mailbox_by_name(c, viewer, &name))
            .await
    }

    async fn select(&mut self, tag: &Tag<'static>, mailbox: &Mailbox<'_>, read_only: bool) {
        // A failed SELECT leaves no mailbox selected (RFC 3501 §6.3.1).
        self.selected = None;
        let Some(user_id) = self.user.as_ref().map(|u| u.id) else {
            return;
        };
        let found = match self.find_mailbox(mailbox).await {
            Ok(f) => f,
            Err(e) => return self.store_failed(tag, e),
        };
        let Some(mb) = found else {
            self.conn.status(tagged(
                tag,
                StatusKind::No,
                Some(code_other("NONEXISTENT")),
                "No such mailbox",
            ));
            return;
        };
        self.commits.borrow_and_update();
        let sel = match Selected::open(self.store(), mb, user_id, read_only).await {
            Ok(s) => s,
            Err(e) => return self.store_failed(tag, e),
        };
        let flags = vec![Flag::Answered, Flag::Flagged, Flag::Seen];
        let mut defined = flags.clone();
        // Set by the gateway, never by a client: defined, not permanent.
        defined.push(super::fetch::unverified_keyword());
        self.conn.data(Data::Flags(defined));
        let perm: Vec<FlagPerm<'static>> = if read_only {
            Vec::new()
        } else {
            flags.into_iter().map(FlagPerm::Flag).collect()
        };
        self.conn.status(Status::Untagged(StatusBody {
            kind: StatusKind::Ok,
            code: Some(Code::PermanentFlags(perm)),
            text: text(if read_only {
                "Read-only mailbox"
            } else {
                "Flags kept per user"
            }),
        }));
        self.conn.data(Data::Exists(sel.exists()));
        self.conn.data(Data::Recent(0));
        if let Some(first) = sel.first_unseen() {
            self.conn.status(Status::Untagged(StatusBody {
                kind: StatusKind::Ok,
                code: Some(Code::Unseen(nz(first))),
                text: text("First unseen"),
            }));
        }
        self.conn.status(Status::Untagged(StatusBody {
            kind: StatusKind::Ok,
            code: Some(Code::UidValidity(nz(sel.mailbox.uidvalidity))),
            text: text("UIDs valid"),
        }));
        self.conn.status(Status::Untagged(StatusBody {
            kind: StatusKind::Ok,
            code: Some(Code::UidNext(nz(sel.mailbox.uidnext))),
            text: text("Predicted next UID"),
        }));
        let (code, msg) = if read_only {
            (Code::ReadOnly, "EXAMINE completed")
        } else {
            (Code::ReadWrite, "SELECT completed")
        };
        self.selected = Some(sel);
        self.conn
            .status(tagged(tag, StatusKind::Ok, Some(code), msg));
    }

    /// APPEND: a client saving its copy of what it sent (SPEC §12). The
    /// gateway already keeps the message that left, in the user's Sent, so
    /// the copy (read whole by imap-next, within `max_literal_bytes`) is
    /// dropped and the client told so. Every other mailbox is read-only.
    async fn append(&mut self, tag: &Tag<'static>, mailbox: &Mailbox<'_>) {
        match self.find_mailbox(mailbox).await {
            Ok(Some(mb)) if mb.kind == "sent" => {
                self.ok(
                    tag,
                    "APPEND done: the gateway keeps its own copy of sent mail",
                )
                .await
            }
            Ok(Some(_)) => self.conn.status(tagged(
                tag,
                StatusKind::No,
                Some(code_other("CANNOT")),
                "Only Sent takes APPEND (a copy of sent mail); the agent view is read-only",
            )),
            Ok(None) => self.conn.status(tagged(
                tag,
                StatusKind::No,
                Some(Code::TryCreate),
                "No such mailbox",
            )),
            Err(e) => self.store_failed(tag, e),
        }
    }

    async fn list(
        &mut self,
        tag: &Tag<'static>,
        reference: &Mailbox<'_>,
        pattern: &ListMailbox<'_>,
        lsub: bool,
    ) {
        let Some(viewer) = self.viewer() else {
            return;
        };
        let reference = String::from_utf8_lossy(&mailbox_bytes(reference)).into_owned();
        let pattern = match pattern {
            ListMailbox::Token(t) => String::from_utf8_lossy(t.as_ref()).into_owned(),
            ListMailbox::String(s) => String::from_utf8_lossy(s.as_ref()).into_owned(),
        };
        let delimiter = QuotedChar::try_from(names::DELIMITER).ok();
        let make = |items: Vec<FlagNameAttribute<'static>>, mailbox: Mailbox<'static>| {
            if lsub {
                Data::Lsub {
                    items,
                    delimiter,
                    mailbox,
                }
            } else {
                Data::List {
                    items,
                    delimiter,
                    mailbox,
                }
            }
        };
        if pattern.is_empty() && !lsub {
            // The hierarchy delimiter and root (RFC 3501 §6.3.8).
            if let Ok(root) = Mailbox::try_from(String::new()) {
                self.conn
                    .data(make(vec![FlagNameAttribute::Noselect], root.into_static()));
            }
            return self.ok(tag, "LIST completed").await;
        }
        let full = names::list_pattern(&reference, &pattern);
        let mailboxes = match self.store().read(move |c| view::mailboxes(c, viewer)).await {
            Ok(m) => m,
            Err(e) => return self.store_failed(tag, e),
        };
        let wire: Vec<String> = mailboxes
            .iter()
            .map(|m| names::encode_mutf7(&m.name))
            .collect();
        let attr = |name: &str| {
            Atom::try_from(name.to_string())
                .ok()
                .map(FlagNameAttribute::from)
        };
        for entry in names::hierarchy(&wire) {
            if !names::matches(&full, &entry.name) {
                continue;
            }
            let mut items = Vec::new();
            if entry.noselect {
                items.push(FlagNameAttribute::Noselect);
            }
            items.extend(attr(if entry.has_children {
                "HasChildren"
            } else {
                "HasNoChildren"
            }));
            // RFC 6154: the one Sent mailbox a user sees is theirs.
            if !entry.noselect && entry.name == view::SENT {
                items.extend(attr("Sent"));
            }
            let Ok(mailbox) = Mailbox::try_from(entry.name.clone()) else {
                continue;
            };
            self.conn.data(make(items, mailbox.into_static()));
        }
        self.ok(
            tag,
            if lsub {
                "LSUB completed"
            } else {
                "LIST completed"
            },
        )
        .await;
    }

    async fn status(
        &mut self,
        tag: &Tag<'static>,
        mailbox: &Mailbox<'static>,
        items: &[StatusDataItemName],
    ) {
        let Some(user_id) = self.user.as_ref().map(|u| u.id) else {
            return;
        };
        let found = match self.find_mailbox(mailbox).await {
            Ok(f) => f,
            Err(e) => return self.store_failed(tag, e),
        };
        let Some(mb) = found else {
            self.conn.status(tagged(
                tag,
                StatusKind::No,
                Some(code_other("NONEXISTENT")),
                "No such mailbox",
            ));
            return;
        };
        let id = mb.id;
        let counts = match self
            .store()
            .read(move |c| view::counts(c, id, user_id))
            .await
        {
            Ok(c) => c,
            Err(e) => return self.store_failed(tag, e),
        };
        let (total, unseen) = counts;
        let mut out = Vec::new();
        for item in items {
            out.push(match item {
                StatusDataItemName::Messages => StatusDataItem::Messages(total),
                StatusDataItemName::Recent => StatusDataItem::Recent(0),
                StatusDataItemName::UidNext => StatusDataItem::UidNext(nz(mb.uidnext)),
                StatusDataItemName::UidValidity => StatusDataItem::UidValidity(nz(mb.uidvalidity)),
                StatusDataItemName::Unseen => StatusDataItem::Unseen(unseen),
                StatusDataItemName::Deleted => StatusDataItem::Deleted(0),
                _ => continue,
            });
        }
        self.conn.data(Data::Status {
            mailbox: mailbox.clone(),
            items: Cow::Owned(out),
        });
        self.ok(tag, "STATUS completed").await;
    }

    /// BAD when no mailbox is selected; true when one is.
    pub(super) fn require_selected(&mut self, tag: &Tag<'static>) -> bool {
        if self.selected.is_some() {
            return true;
        }
        self.conn
            .status(tagged(tag, StatusKind::Bad, None, "No mailbox selected"));
        false
    }

    fn charset_ok(&mut self, tag: &Tag<'static>, charset: Option<&Charset<'_>>) -> bool {
        let name = match charset {
            None => return true,
            Some(Charset::Atom(a)) => a.inner().to_string(),
            Some(Charset::Quoted(q)) => q.inner().to_string(),
        };
        if name.eq_ignore_ascii_case("UTF-8") || name.eq_ignore_ascii_case("US-ASCII") {
            return true;
        }
        let allowed = ["US-ASCII", "UTF-8"]
            .iter()
            .filter_map(|c| Atom::try_from(*c).ok().map(Charset::from))
            .collect();
        self.conn.status(tagged(
            tag,
            StatusKind::No,
            Some(Code::BadCharset { allowed }),
            "Unsupported charset",
        ));
        false
    }

    /// The messages matching `criteria` (indexes into the sequence map).
    async fn matching(
        &mut self,
        criteria: Vec1<SearchKey<'static>>,
    ) -> Result<Vec<usize>, StoreError> {
        let Some(sel) = self.selected.as_ref() else {
            return Ok(Vec::new());
        };
        let keys = criteria.into_inner();
        let key = if keys.len() == 1 {
            keys.into_iter().next().unwrap_or(SearchKey::All)
        } else {
            match Vec1::try_from(keys) {
                Ok(v) => SearchKey::And(v),
                Err(_) => SearchKey::All,
            }
        };
        let cond = super::search::compile(&key, sel);
        super::search::run(&self.shared.store, sel, cond).await
    }

    async fn search(
        &mut self,
        tag: &Tag<'static>,
        charset: Option<&Charset<'_>>,
        criteria: Vec1<SearchKey<'static>>,
        uid: bool,
    ) {
        if !self.require_selected(tag) || !self.charset_ok(tag, charset) {
            return;
        }
        let found = match self.matching(criteria).await {
            Ok(f) => f,
            Err(e) => return self.store_failed(tag, e),
        };
        let Some(sel) = self.selected.as_ref() else {
            return;
        };
        let numbers = found
            .into_iter()
            .map(|i| {
                if uid {
                    nz(sel.msgs[i].uid)
                } else {
                    nz(i as u32 + 1)
                }
            })
            .collect();
        self.conn.data(Data::Search(numbers));
        self.updates(uid).await;
        self.conn
            .status(tagged(tag, StatusKind::Ok, None, "SEARCH completed"));
    }

    async fn thread(
        &mut self,
        tag: &Tag<'static>,
        algorithm: &ThreadingAlgorithm<'_>,
        charset: &Charset<'_>,
        criteria: Vec1<SearchKey<'static>>,
        uid: bool,
    ) {
        if !self.require_selected(tag) {
            return;
        }
        if *algorithm != ThreadingAlgorithm::References {
            self.conn.status(tagged(
                tag,
                StatusKind::No,
                None,
                "Only THREAD=REFERENCES is supported",
            ));
            return;
        }
        if !self.charset_ok(tag, Some(charset)) {
            return;
        }
        let found = match self.matching(criteria).await {
            Ok(f) => f,
            Err(e) => return self.store_failed(tag, e),
        };
        let threads = match super::fetch::threads(self, &found, uid).await {
            Ok(t) => t,
            Err(e) => return self.store_failed(tag, e),
        };
        self.conn.data(Data::Thread(threads));
        self.updates(uid).await;
        self.conn
            .status(tagged(tag, StatusKind::Ok, None, "THREAD completed"));
    }

    // -----------------------------------------------------------------
    // IDLE

    async fn idle(&mut self, tag: Tag<'static>) -> std::io::Result<Flow> {
        if self.user.is_none() {
            self.conn
                .idle_reject(tagged(&tag, StatusKind::Bad, None, "Log in first"));
            return Ok(Flow::Continue);
        }
        match self.still_allowed().await {
            Ok(true) => {}
            Ok(false) => {
                self.revoked(None).await;
                return Ok(Flow::Close);
            }
            Err(e) => {
                tracing::warn!(error = %e, "IMAP IDLE: store unavailable");
                self.conn.idle_reject(tagged(
                    &tag,
                    StatusKind::No,
                    Some(code_other("UNAVAILABLE")),
                    "Temporary failure, try again",
                ));
                return Ok(Flow::Continue);
            }
        }
        self.updates(true).await;
        self.conn.idle_accept();
        self.conn.flush().await?;
        let mut watching = true;
        let mut watching_credentials = true;
        // Only the client's own input counts as activity: pushed updates do
        // not keep a forgotten IDLE alive past the timeout.
        let limit = self.shared.config.imap.idle_timeout;
        let mut deadline = tokio::time::Instant::now() + limit;
        loop {
            // DONE may already be here (pipelined).
            while let Some(input) = self.conn.take_input() {
                match input {
                    Input::Event(Event::IdleDoneReceived) => {
                        self.updates(true).await;
                        self.conn
                            .status(tagged(&tag, StatusKind::Ok, None, "IDLE terminated"));
                        return Ok(Flow::Continue);
                    }
                    Input::Refused { .. } => {
                        self.conn.status(Status::Untagged(StatusBody {
                            kind: StatusKind::Bad,
                            code: None,
                            text: text("Expected DONE"),
                        }));
                    }
                    _ => {}
                }
            }
            self.conn.flush().await?;
            let selected = self.selected.is_some();
            tokio::select! {
                _ = self.shutdown.wait() => {
                    self.bye(None, "Server shutting down").await;
                    return Ok(Flow::Close);
                }
                changed = self.credentials.changed(), if watching_credentials => {
                    if changed.is_err() {
                        watching_credentials = false;
                    } else {
                        self.credentials.borrow_and_update();
                        // A store failure leaves the IDLE as it is; the
                        // next change or command checks again.
                        if let Ok(false) = self.still_allowed().await {
                            self.revoked(None).await;
                            return Ok(Flow::Close);
                        }
                    }
                }
                changed = self.commits.changed(), if watching && selected => {
                    if changed.is_err() {
                        watching = false;
                    } else {
                        self.commits.borrow_and_update();
                        self.refresh_now(true).await;
                    }
                }
                read = tokio::time::timeout_at(deadline, self.conn.read_more()) => match read {
                    Err(_) => {
                        self.bye(None, "Autologout; idle for too long").await;
                        return Ok(Flow::Close);
                    }
                    Ok(Ok(0)) => return Ok(Flow::Close),
                    Ok(Ok(_)) => deadline = tokio::time::Instant::now() + limit,
                    Ok(Err(e)) => return Err(e),
                }
            }
        }
    }
}

pub(super) fn emit_changes<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    changes: Changes,
) {
    for seq in changes.expunged {
        conn.data(Data::Expunge(nz(seq)));
    }
    if let Some(n) = changes.exists {
        conn.data(Data::Exists(n));
    }
    for (seq, uid, bits) in changes.flags {
        conn.data(super::fetch::flags_response(seq, uid, bits));
    }
}

#[derive(Debug)]
enum LoginError {
    Invalid,
    /// The address failed too often: refused for this many seconds.
    Throttled(u64),
    Store(StoreError),
}
