//! Mail an agent writes in their own mail client (SPEC §12): over the
//! submission listener, or as a reply to a notification email arriving on
//! the MX at its agent-reply address. It is never relayed: it becomes a
//! follow-up in one side conversation, or starts one on a parent ticket, and
//! the gateway composes what leaves exactly as for the API — the side
//! conversation's sender address, signature, Message-ID, threading, DKIM —
//! from the visible part of what the agent wrote (the quoted thread or
//! notification, and anything internal in it, stays behind) and the
//! attachments.
//!
//! Which side conversation (the first rule that names one decides; two
//! different ones, or a start and a reply at once, are refused):
//! - a recipient is its reply address (`reply+<token>@<gateway>`, a plus
//!   sender's `<local>+<token>@<custom domain>`) or an agent-reply address
//!   of this agent carrying its token;
//! - In-Reply-To, then References from the last: a message of the thread;
//! - a recipient `ticket+<parent external id>@<gateway>`: a new side
//!   conversation on that (existing) parent, to the other recipients (To
//!   header → `to`, Cc header → `cc`).
//!
//! The same client message submitted twice (same Message-ID, a client
//! retrying after a lost connection) is sent once.

use hmac::{Hmac, Mac};
use mail_parser::{HeaderValue, MessageParser, MimeHeaders};
use sha2::Sha256;

use super::follow_up::follow_up_in;
use super::start::{check, start_in};
use super::{
    Actor, Attachment, Conversations, FollowUpRequest, MAX_NEW_PARTICIPANTS, ServiceError,
    StartRequest,
};
use crate::config::Config;
use crate::model::{MailAddr, Token, base32_lower, is_author_address, random_bytes};
use crate::store::{self, Db, StoreError, get_setting, put_setting};

/// How the mail reached the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The submission listener, the agent authenticated.
    Submission,
    /// A reply to a notification email, at an agent-reply address naming
    /// this side conversation, from the agent's own address with DMARC
    /// passing (checked by the caller).
    NotificationReply { side_conversation: i64 },
}

/// Why agent mail was not sent. `Refused` is a rule (SMTP `550 5.7.1`, the
/// text shown to the agent); `Store` a fault (`451 4.3.0`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentMailError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Store(String),
}

impl From<StoreError> for AgentMailError {
    fn from(e: StoreError) -> Self {
        AgentMailError::Store(e.to_string())
    }
}

impl From<ServiceError> for AgentMailError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Store(m) => AgentMailError::Store(m),
            ServiceError::NotFound(what) => AgentMailError::Refused(format!("{what} not found")),
            ServiceError::Invalid { field, message } => {
                AgentMailError::Refused(format!("{field}: {message}"))
            }
            ServiceError::Conflict(m) | ServiceError::RateLimited(m) => AgentMailError::Refused(m),
        }
    }
}

fn refused(m: impl Into<String>) -> AgentMailError {
    AgentMailError::Refused(m.into())
}

/// What became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    pub side_conversation: i64,
    /// The gateway's outbound message.
    pub message: i64,
    /// A new side conversation was started.
    pub started: bool,
    /// The same client message was submitted before; nothing new was sent.
    pub duplicate: bool,
}

/// Most attachments taken from one message.
const MAX_ATTACHMENTS: usize = 20;

/// An agent's message, parsed (outside the writer: parsing is the slow part).
#[derive(Debug, Clone, Default)]
pub struct AgentMessage {
    /// Every From author (one is expected: the agent).
    pub from: Vec<String>,
    /// Sender header, when the client set one.
    pub sender: Option<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub subject: String,
    pub message_id: Option<String>,
    pub in_reply_to: Vec<String>,
    pub references: Vec<String>,
    /// The visible part of what the agent wrote.
    pub text: String,
    pub attachments: Vec<Attachment>,
}

fn normalize_id(id: &str) -> Option<String> {
    let t = id
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim();
    (!t.is_empty() && t.len() <= 998 && !t.chars().any(|c| c.is_whitespace() || c.is_control()))
        .then(|| t.to_string())
}

fn ids(value: &HeaderValue<'_>) -> Vec<String> {
    match value {
        HeaderValue::Text(t) => normalize_id(t).into_iter().collect(),
        HeaderValue::TextList(list) => list.iter().filter_map(|t| normalize_id(t)).collect(),
        _ => Vec::new(),
    }
}

fn addresses(addr: Option<&mail_parser::Address<'_>>) -> Vec<String> {
    addr.map(|a| {
        a.iter()
            .filter_map(|m| m.address())
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect()
    })
    .unwrap_or_default()
}

/// Parses what the agent's client sent. Never fails: a message that cannot
/// be read has no author and no text, and is refused for that.
pub fn parse(raw: &[u8]) -> AgentMessage {
    let bounded = crate::mime_guard::for_parser(raw);
    let Some(msg) = MessageParser::default().parse(bounded.as_ref()) else {
        return AgentMessage::default();
    };
    let text = match msg.body_text(0) {
        Some(t) => crate::reply_text::visible_text(&t),
        None => msg
            .body_html(0)
            .map(|h| crate::reply_text::visible_html(&h))
            .unwrap_or_default(),
    };
    let attachments = msg
        .attachments()
        .filter(|p| !p.is_message() || p.attachment_name().is_some())
        .take(MAX_ATTACHMENTS + 1)
        .map(|p| Attachment {
            filename: crate::model::file_name(p.attachment_name().unwrap_or("attachment")),
            content_type: p
                .content_type()
                .map(|ct| match ct.subtype() {
                    Some(sub) => format!("{}/{}", ct.ctype(), sub),
                    None => ct.ctype().to_string(),
                })
                .filter(|t| t.contains('/'))
                .unwrap_or_else(|| "application/octet-stream".into()),
            data: p.contents().to_vec(),
        })
        .collect();
    AgentMessage {
        from: addresses(msg.from()),
        sender: addresses(msg.sender()).into_iter().next(),
        to: addresses(msg.to()),
        cc: addresses(msg.cc()),
        subject: msg.subject().unwrap_or_default().trim().to_string(),
        message_id: msg.message_id().and_then(normalize_id),
        in_reply_to: ids(msg.in_reply_to()),
        references: ids(msg.references()),
        text,
        attachments,
    }
}

// ---------------------------------------------------------------------------
// Agent-reply addresses

/// Local part of agent-reply addresses on the gateway domain.
pub const AGENT_LOCAL: &str = "agent";

type HmacSha256 = Hmac<Sha256>;

/// The workspace's key for agent-reply addresses, made on first use.
fn secret(db: &Db<'_>) -> store::Result<Vec<u8>> {
    if let Some(s) =
        get_setting(db, "agent_reply_secret")?.and_then(|v| v.as_str().map(str::to_string))
    {
        return Ok(s.into_bytes());
    }
    let s = base32_lower(&random_bytes::<32>());
    put_setting(db, "agent_reply_secret", &serde_json::json!(s))?;
    Ok(s.into_bytes())
}

/// The 16-character signature of (user, token).
fn signature(secret: &[u8], user: i64, token: Option<&str>) -> String {
    let mut mac = match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        // HMAC takes keys of any length.
        Err(_) => return String::new(),
    };
    mac.update(format!("agent-reply\0{user}\0{}", token.unwrap_or("")).as_bytes());
    base32_lower(&mac.finalize().into_bytes()[..10])
}

/// The address a notification to `user` about the side conversation with
/// `token` (none: a notification about several) carries as its Reply-To:
/// `agent+t<token>u<user id>m<signature>@<gateway>`. Only a reply from that
/// user's own address (DMARC passing) or over submission is sent.
pub fn agent_reply_address(
    db: &Db<'_>,
    config: &Config,
    user: i64,
    token: Option<&str>,
) -> store::Result<String> {
    let sig = signature(&secret(db)?, user, token);
    let t = token.map(|t| format!("t{t}")).unwrap_or_default();
    Ok(format!("{AGENT_LOCAL}+{t}u{user}m{sig}@{}", config.domain))
}

/// What an agent-reply address names, its signature checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentReplyTarget {
    pub user: i64,
    /// The side conversation's token; `None` for a notification about
    /// several side conversations.
    pub token: Option<Token>,
}

/// The syntax of an agent-reply address, before the signature is checked:
/// (user, token, signature).
fn agent_reply_parts(config: &Config, addr: &str) -> Option<(i64, Option<String>, String)> {
    let a = MailAddr::parse(addr)?;
    if !a.domain.eq_ignore_ascii_case(&config.domain) {
        return None;
    }
    let (base, detail) = a.plus_parts()?;
    if !base.eq_ignore_ascii_case(AGENT_LOCAL) {
        return None;
    }
    let detail = detail.to_ascii_lowercase();
    let (token, rest) = match detail.strip_prefix('t') {
        Some(r) if r.len() > 16 && r.is_char_boundary(16) => (Some(r[..16].to_string()), &r[16..]),
        Some(_) => return None,
        None => (None, detail.as_str()),
    };
    let rest = rest.strip_prefix('u')?;
    let (user, sig) = rest.split_once('m')?;
    let user: i64 = user.parse().ok().filter(|u| *u > 0)?;
    (sig.len() == 16).then(|| (user, token, sig.to_string()))
}

/// Reads an agent-reply address; `None` when it is not one or its
/// signature is wrong (a guessed or altered address).
pub fn parse_agent_reply_address(
    db: &Db<'_>,
    config: &Config,
    addr: &str,
) -> store::Result<Option<AgentReplyTarget>> {
    let Some((user, token, sig)) = agent_reply_parts(config, addr) else {
        return Ok(None);
    };
    // Read only (RCPT asks on a read connection): without a key no address
    // was ever handed out.
    let Some(key) =
        get_setting(db, "agent_reply_secret")?.and_then(|v| v.as_str().map(str::to_string))
    else {
        return Ok(None);
    };
    let expected = signature(key.as_bytes(), user, token.as_deref());
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        expected.as_bytes(),
        sig.as_bytes(),
    )) {
        return Ok(None);
    }
    let token = match token {
        Some(t) => match t.parse::<Token>() {
            Ok(t) => Some(t),
            Err(_) => return Ok(None),
        },
        None => None,
    };
    Ok(Some(AgentReplyTarget { user, token }))
}

/// Whether `addr` has the shape of an agent-reply address (signature not
/// checked): at RCPT, to tell "unknown" from "not an agent address".
pub fn looks_like_agent_reply_address(config: &Config, addr: &str) -> bool {
    agent_reply_parts(config, addr).is_some()
}

// ---------------------------------------------------------------------------
// Recipients

/// What one recipient of agent mail is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rcpt {
    /// Names a side conversation (its reply address, an agent-reply address).
    Thread(i64),
    /// `ticket+<external id>@<gateway>`: start on that parent.
    Ticket(String),
    /// The agent's own address, or another of the gateway's: not a recipient.
    Ignore,
    /// Someone outside.
    External(String),
}

fn classify(
    db: &Db<'_>,
    config: &Config,
    actor: &Actor,
    addr: &str,
) -> Result<Rcpt, AgentMailError> {
    let addr = addr.trim();
    if addr.eq_ignore_ascii_case(&actor.email) {
        return Ok(Rcpt::Ignore);
    }
    let Some(a) = MailAddr::parse(addr) else {
        return Err(refused(format!("<{addr}> is not a valid address")));
    };
    if a.is_address_literal() {
        return Err(refused(format!(
            "<{addr}> names an IP address instead of a mail domain"
        )));
    }
    let gateway = a.domain.eq_ignore_ascii_case(&config.domain);
    if gateway {
        if let Some((base, detail)) = a.plus_parts()
            && base.eq_ignore_ascii_case("ticket")
        {
            if detail.is_empty() {
                return Err(refused("ticket+<parent id>: the parent id is missing"));
            }
            return Ok(Rcpt::Ticket(detail.to_string()));
        }
        if looks_like_agent_reply_address(config, addr) {
            return match parse_agent_reply_address(db, config, addr)? {
                Some(t) if t.user != actor.user_id => Err(refused(format!(
                    "<{addr}> is another agent's reply address"
                ))),
                Some(AgentReplyTarget {
                    token: Some(token), ..
                }) => thread_of(db, &token, addr),
                Some(_) => Err(refused(format!(
                    "<{addr}> answers a notification about several side conversations: \
                     reply to the vendor's message of the one you mean instead"
                ))),
                None => Err(refused(format!(
                    "<{addr}> is not a valid agent-reply address"
                ))),
            };
        }
        return match a.token() {
            Some(token) => thread_of(db, &token, addr),
            None => Ok(Rcpt::Ignore),
        };
    }
    if let Some(token) = a.token()
        && let Some((base, _)) = a.plus_parts()
        && store::senders::get(db, &format!("{base}@{}", a.domain))?.is_some()
    {
        return thread_of(db, &token, addr);
    }
    if store::senders::get(db, addr)?.is_some() {
        return Ok(Rcpt::Ignore);
    }
    if store::users::exists(db, addr)? {
        return Err(refused(format!(
            "<{addr}> is a user of this gateway: mention them in a note instead"
        )));
    }
    Ok(Rcpt::External(addr.to_string()))
}

fn thread_of(db: &Db<'_>, token: &Token, addr: &str) -> Result<Rcpt, AgentMailError> {
    match store::routing::side_conversation_of_token(db, token)? {
        Some(sc) => Ok(Rcpt::Thread(sc)),
        None => Err(refused(format!(
            "<{addr}>: no side conversation has this address"
        ))),
    }
}

/// The side conversation a message of a thread names: In-Reply-To, then
/// References from the last.
fn thread_of_references(
    db: &Db<'_>,
    config: &Config,
    m: &AgentMessage,
) -> Result<Option<i64>, AgentMailError> {
    for id in m.in_reply_to.iter().chain(m.references.iter().rev()) {
        if let Some(sc) = store::routing::side_conversations_of_message_id(db, id)?.first() {
            return Ok(Some(*sc));
        }
        // The gateway's own format, `<token>.<n>.<random>@<gateway>`.
        if let Some((left, domain)) = id.rsplit_once('@')
            && domain.eq_ignore_ascii_case(&config.domain)
            && let Some(Ok(token)) = left.split('.').next().map(str::parse::<Token>)
            && let Some(sc) = store::routing::side_conversation_of_token(db, &token)?
        {
            return Ok(Some(sc));
        }
    }
    Ok(None)
}

/// The agent's mail as a follow-up or a start, in the caller's transaction.
pub fn agent_mail_in(
    db: &Db<'_>,
    config: &Config,
    actor: &Actor,
    m: &AgentMessage,
    rcpts: &[String],
    via: Via,
) -> Result<Submitted, AgentMailError> {
    // The author is the agent, and only the agent.
    match m.from.as_slice() {
        [one] if one.eq_ignore_ascii_case(&actor.email) => {}
        [] => return Err(refused("the message has no From address")),
        [other] => {
            return Err(refused(format!(
                "From <{other}> is not your address: send as <{}>",
                actor.email
            )));
        }
        _ => return Err(refused("the message names more than one author in From")),
    }
    if m.sender
        .as_deref()
        .is_some_and(|s| !s.eq_ignore_ascii_case(&actor.email))
    {
        return Err(refused(format!(
            "Sender is not your address: send as <{}>",
            actor.email
        )));
    }
    if m.attachments.len() > MAX_ATTACHMENTS {
        return Err(refused(format!("at most {MAX_ATTACHMENTS} attachments")));
    }
    // Quoted lines alone are not a message (the extractor keeps a quote
    // when nothing else is left).
    let own_text = m
        .text
        .lines()
        .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('>'));
    if !own_text && m.attachments.is_empty() {
        return Err(refused(
            "the message has no text of its own (only quoted text or a signature)",
        ));
    }
    if let Some(id) = &m.message_id
        && let Some((sc, message)) = store::agent_mail::find(db, actor.user_id, id)?
    {
        return Ok(Submitted {
            side_conversation: sc,
            message,
            started: false,
            duplicate: true,
        });
    }

    // Who the mail is for, and what it names.
    let (mut threads, mut tickets, mut externals) = (Vec::new(), Vec::new(), Vec::new());
    let listed = |a: &str| {
        m.to.iter()
            .chain(m.cc.iter())
            .any(|h| h.eq_ignore_ascii_case(a))
    };
    let envelope: Vec<&String> = match via {
        Via::Submission => rcpts.iter().collect(),
        // At the agent-reply address: the thread is the address's; nobody
        // else is written to.
        Via::NotificationReply { side_conversation } => {
            threads.push(side_conversation);
            Vec::new()
        }
    };
    for r in envelope {
        match classify(db, config, actor, r)? {
            Rcpt::Thread(sc) if !threads.contains(&sc) => threads.push(sc),
            Rcpt::Ticket(t) if !tickets.contains(&t) => tickets.push(t),
            Rcpt::External(a) => {
                if !listed(&a) {
                    return Err(refused(format!(
                        "<{a}> is a Bcc recipient: side conversations have no Bcc, \
                         put everyone in To or Cc"
                    )));
                }
                if !externals
                    .iter()
                    .any(|e: &String| e.eq_ignore_ascii_case(&a))
                {
                    externals.push(a);
                }
            }
            _ => {}
        }
    }
    if via == Via::Submission
        && let Some(sc) = thread_of_references(db, config, m)?
        && !threads.contains(&sc)
        && tickets.is_empty()
    {
        if threads.is_empty() {
            threads.push(sc);
        } else {
            return Err(refused(
                "the message answers a message of one side conversation but is addressed \
                 to another: send one message per side conversation",
            ));
        }
    }
    let sent = match (threads.as_slice(), tickets.as_slice()) {
        ([], []) => {
            return Err(refused(format!(
                "no side conversation to send this in: reply to a message of the thread, \
                 write to its reply address, or start one by writing to \
                 ticket+<parent id>@{}",
                config.domain
            )));
        }
        ([sc], []) => {
            let sc = *sc;
            // Whoever is written to at their own address is on the thread;
            // anyone else the agent added joins in Cc.
            let (to, cc) = super::follow_up::recipients(db, sc)?;
            let (to, cc) = super::addressing::addressees(db, config, sc, &to, &cc)?;
            let known = |a: &str| {
                to.iter().chain(cc.iter()).any(|p| {
                    p.address.eq_ignore_ascii_case(a) || p.participant.eq_ignore_ascii_case(a)
                })
            };
            let extra: Vec<String> = externals.into_iter().filter(|a| !known(a)).collect();
            if extra.len() > MAX_NEW_PARTICIPANTS {
                return Err(refused(format!(
                    "at most {MAX_NEW_PARTICIPANTS} new people per message"
                )));
            }
            let req = FollowUpRequest {
                body_text: Some(m.text.clone()),
                body_html: None,
                cc: extra.clone(),
                attachments: m.attachments.clone(),
            };
            let sent = follow_up_in(db, config, actor, sc, &req, &extra)?;
            Submitted {
                side_conversation: sent.side_conversation,
                message: sent.message,
                started: false,
                duplicate: false,
            }
        }
        ([], [ticket]) => {
            let Some(parent) = store::parents::get(db, ticket)? else {
                return Err(refused(format!(
                    "ticket+{ticket}@{}: there is no parent ticket {ticket:?}",
                    config.domain
                )));
            };
            let in_header =
                |list: &[String], a: &str| list.iter().any(|h| h.eq_ignore_ascii_case(a));
            let to: Vec<String> = externals
                .iter()
                .filter(|a| in_header(&m.to, a))
                .cloned()
                .collect();
            let cc: Vec<String> = externals
                .iter()
                .filter(|a| !in_header(&m.to, a))
                .cloned()
                .collect();
            if to.is_empty() {
                return Err(refused(
                    "a new side conversation needs at least one vendor in To",
                ));
            }
            let req = StartRequest {
                to,
                cc,
                subject: m.subject.clone(),
                body_text: Some(m.text.clone()),
                attachments: m.attachments.clone(),
                ..StartRequest::default()
            };
            let checked = check(&parent.external_id, &req)?;
            let sent = start_in(db, config, actor, &parent.external_id, &req, &checked)?;
            Submitted {
                side_conversation: sent.side_conversation,
                message: sent.message,
                started: true,
                duplicate: false,
            }
        }
        (_, []) => {
            return Err(refused(
                "the message is addressed to more than one side conversation: \
                 send one message per side conversation",
            ));
        }
        ([], _) => {
            return Err(refused(
                "the message starts side conversations on more than one ticket: \
                 send one message per ticket",
            ));
        }
        _ => {
            return Err(refused(
                "the message both starts a side conversation and replies in one: \
                 send them separately",
            ));
        }
    };
    if let Some(id) = &m.message_id {
        store::agent_mail::record(db, actor.user_id, id, sent.side_conversation, sent.message)?;
    }
    Ok(sent)
}

impl Conversations {
    /// Agent mail from the submission listener: parsed here, applied in one
    /// write.
    pub async fn agent_mail(
        &self,
        actor: Actor,
        raw: Vec<u8>,
        rcpts: Vec<String>,
    ) -> Result<Submitted, AgentMailError> {
        let parsed = tokio::task::spawn_blocking(move || parse(&raw))
            .await
            .map_err(|e| AgentMailError::Store(format!("parsing failed: {e}")))?;
        if !is_author_address(parsed.from.first().map(String::as_str).unwrap_or("")) {
            return Err(refused("the message has no valid From address"));
        }
        let config = self.config.clone();
        let sent = self
            .store
            .write_with(move |db| {
                agent_mail_in(db, &config, &actor, &parsed, &rcpts, Via::Submission)
            })
            .await?;
        self.outbox_waker.notify_one();
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::from_toml_str("domain = \"gw.example.com\"\n", Vec::new()).expect("config")
    }

    #[test]
    fn agent_reply_addresses_read_back() {
        let c = config();
        let addr = format!(
            "agent+tabcdefghijklmnopu12m{}@gw.example.com",
            "a".repeat(16)
        );
        assert_eq!(
            agent_reply_parts(&c, &addr),
            Some((12, Some("abcdefghijklmnop".into()), "a".repeat(16)))
        );
        let addr = format!("AGENT+U7M{}@GW.example.com", "B".repeat(16));
        assert_eq!(
            agent_reply_parts(&c, &addr),
            Some((7, None, "b".repeat(16)))
        );
        for bad in [
            "agent+u7mshort@gw.example.com",
            "agent+t123u7maaaaaaaaaaaaaaaa@gw.example.com",
            "agent+u0maaaaaaaaaaaaaaaa@gw.example.com",
            "agent+umaaaaaaaaaaaaaaaa@gw.example.com",
            "agent+u7maaaaaaaaaaaaaaaa@other.example",
            "reply+u7maaaaaaaaaaaaaaaa@gw.example.com",
        ] {
            assert_eq!(agent_reply_parts(&c, bad), None, "{bad}");
        }
    }

    #[test]
    fn the_visible_part_and_attachments_are_taken() {
        let raw = b"From: Ann <ann@acme.com>\r\nTo: vera@vendor.example\r\nSubject: Re: RMA\r\n\
Message-ID: <c1@client>\r\nIn-Reply-To: <v1@vendor.example>\r\nReferences: <a@gw> <v1@vendor.example>\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
Content-Type: text/plain\r\n\r\nShipped today.\r\n\r\nOn Tue, Vera wrote:\r\n> internal notes\r\n\r\n\
--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=pod.pdf\r\n\r\n%PDF\r\n--b--\r\n";
        let m = parse(raw);
        assert_eq!(m.from, vec!["ann@acme.com"]);
        assert_eq!(m.text, "Shipped today.");
        assert_eq!(m.in_reply_to, vec!["v1@vendor.example"]);
        assert_eq!(m.references, vec!["a@gw", "v1@vendor.example"]);
        assert_eq!(m.attachments.len(), 1);
        assert_eq!(m.attachments[0].filename, "pod.pdf");
        assert_eq!(m.attachments[0].content_type, "application/pdf");
    }
}
