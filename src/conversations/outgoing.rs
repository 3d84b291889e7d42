//! Composing and storing one outbound message of a side conversation: the
//! sender address it goes out from (with its reply mode and signature), the
//! DKIM key it is signed with, each recipient's portal link, the message
//! row, its outbox rows and every recipient's own copy where it differs.

use super::addressing::{Addressee, addressees, thread_subject};
use super::{Actor, Attachment, ServiceError, invalid};
use crate::config::Config;
use crate::model::{MailAddr, Route, SideConversation, Token, now_ms};
use crate::outbound::compose::{self, Context, DkimKey, Draft, OutAttachment, Person, ReplyMode};
use crate::store::view::{self, Placement};
use crate::store::{self, Db, get_setting, outbox};

/// The sender address a message goes out from.
pub(super) struct SenderInfo {
    pub email: String,
    pub name: String,
    pub reply_mode: ReplyMode,
    pub signature_text: Option<String>,
    pub signature_html: Option<String>,
}

/// Resolves the sender: the one asked for, else the last used on this
/// parent, else the workspace default, else `reply@<domain>`.
pub(super) fn resolve_sender(
    db: &Db<'_>,
    config: &Config,
    requested: Option<&str>,
    parent_last: Option<&str>,
) -> Result<SenderInfo, ServiceError> {
    let gateway = format!("reply@{}", config.domain);
    let default: Option<String> = get_setting(db, "default_sender")?
        .and_then(|v| v.as_str().map(str::to_string))
        .filter(|s| !s.is_empty());
    let chosen = requested
        .map(str::to_string)
        .or_else(|| parent_last.map(str::to_string))
        .or(default)
        .unwrap_or_else(|| gateway.clone());
    if chosen.eq_ignore_ascii_case(&gateway) {
        return Ok(SenderInfo {
            email: gateway,
            name: String::new(),
            reply_mode: ReplyMode::Gateway,
            signature_text: None,
            signature_html: None,
        });
    }
    let gateway_again =
        || resolve_sender(db, config, Some(&format!("reply@{}", config.domain)), None);
    match store::senders::get(db, &chosen)? {
        None if requested.is_some() => Err(invalid(
            "from",
            format!("{chosen} is not a sender address of this workspace"),
        )),
        // A remembered sender that was since removed: fall back to the gateway.
        None => gateway_again(),
        Some(s) if s.status != "verified" => {
            if requested.is_some() {
                Err(invalid("from", format!("{chosen} is not verified yet")))
            } else {
                gateway_again()
            }
        }
        Some(s) => Ok(SenderInfo {
            reply_mode: ReplyMode::parse(&s.reply_mode).unwrap_or(ReplyMode::Gateway),
            email: s.email,
            name: s.name,
            signature_text: s.signature_text,
            signature_html: s.signature_html,
        }),
    }
}

/// The side conversation's own sender, else (removed or unverified since)
/// the workspace's.
pub(super) fn thread_sender(
    db: &Db<'_>,
    config: &Config,
    sc: &SideConversation,
) -> Result<SenderInfo, ServiceError> {
    resolve_sender(db, config, Some(&sc.sender_email), None)
        .or_else(|_| resolve_sender(db, config, None, None))
}

/// Where vendors reply for this side conversation.
pub fn reply_address(
    db: &Db<'_>,
    domain: &str,
    token: &str,
    sender: &str,
) -> store::Result<String> {
    let mode = store::senders::get(db, sender)?
        .and_then(|s| ReplyMode::parse(&s.reply_mode))
        .unwrap_or(ReplyMode::Gateway);
    let token: Token = token
        .parse()
        .map_err(|_| store::StoreError::Corrupt("malformed token".into()))?;
    Ok(compose::reply_to(mode, sender, &token, domain)
        // Reply mode `none`: replies come through forwarding to the sender itself.
        .unwrap_or_else(|| sender.to_string()))
}

/// The signature (text, HTML): the sender's own, else the workspace's,
/// placeholders filled.
fn signature(
    db: &Db<'_>,
    sender: &SenderInfo,
    actor: &Actor,
) -> Result<(Option<String>, Option<String>), ServiceError> {
    let workspace = get_setting(db, "signature")?.unwrap_or(serde_json::Value::Null);
    let text = sender
        .signature_text
        .clone()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| {
            workspace
                .get("text")
                .and_then(|v| v.as_str())
                .map(str::to_string)
        });
    let html = sender
        .signature_html
        .clone()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| {
            workspace
                .get("html")
                .and_then(|v| v.as_str())
                .map(str::to_string)
        });
    let display = if sender.name.is_empty() {
        &actor.name
    } else {
        &sender.name
    };
    let fill = |t: String, html: bool| {
        crate::templates::fill_signature(&t, html, &actor.name, display, &sender.email)
    };
    Ok((text.map(|t| fill(t, false)), html.map(|h| fill(h, true))))
}

/// The DKIM key to sign with: the From domain's key, when that domain's
/// DKIM record was checked and matches (or it is the gateway domain).
fn dkim_key(db: &Db<'_>, config: &Config, from: &str) -> Result<Option<DkimKey>, ServiceError> {
    let Some(addr) = MailAddr::parse(from) else {
        return Ok(None);
    };
    let Some(key) = store::dkim::find(db, &addr.domain)? else {
        return Ok(None);
    };
    let verified = addr.domain == config.domain
        || store::senders::dns_checks_of_domain(db, &addr.domain)?
            .iter()
            .any(|d| {
                serde_json::from_str::<serde_json::Value>(d)
                    .ok()
                    .and_then(|v| {
                        v.pointer("/dkim/status")
                            .and_then(|s| s.as_str())
                            .map(|s| s == "pass")
                    })
                    .unwrap_or(false)
            });
    Ok(verified.then(|| key.signing_key()))
}

fn people(list: &[String]) -> Vec<Person> {
    list.iter()
        .map(|e| Person {
            name: None,
            email: e.clone(),
        })
        .collect()
}

pub(super) fn out_attachments(list: &[Attachment]) -> Vec<OutAttachment> {
    list.iter()
        .map(|a| OutAttachment {
            filename: a.filename.clone(),
            content_type: a.content_type.clone(),
            data: a.data.clone(),
        })
        .collect()
}

/// Which "View conversation" link a message carries (SPEC §8).
pub(super) enum Portal {
    None,
    /// The side conversation's one shared link (handed out before links
    /// were per recipient): the same in every copy.
    Shared(String),
    /// Each recipient's own link: one copy of the message per recipient.
    PerRecipient,
}

/// The links a side conversation's mail carries.
pub(super) fn portal_of(sc: &SideConversation, public_url: &str) -> Portal {
    if sc.portal_per_recipient {
        return Portal::PerRecipient;
    }
    match (&sc.portal_token, sc.portal_revoked) {
        (Some(t), false) => Portal::Shared(format!("{public_url}/p/{t}")),
        _ => Portal::None,
    }
}

/// Inputs for writing one outbound message.
pub(super) struct Outgoing<'a> {
    pub sc: &'a SideConversation,
    pub sender: &'a SenderInfo,
    /// The agent writing; `None` when a vendor's portal reply is relayed to
    /// the other participants (no signature, no author).
    pub actor: Option<&'a Actor>,
    /// From's display name instead of the sender's (or the agent's).
    pub from_name: Option<String>,
    /// `api` for agents' messages, `portal` for relayed portal replies.
    pub route: Route,
    /// Participants; each is written to at their Reply-To where they set
    /// one (`addressing`).
    pub to: &'a [String],
    pub cc: &'a [String],
    pub text: Option<&'a str>,
    pub html: Option<&'a str>,
    pub context: Option<Context>,
    pub portal: Portal,
    pub attachments: &'a [Attachment],
}

/// Composes and stores one outbound message with its outbox rows.
pub(super) fn write_message(
    db: &Db<'_>,
    config: &Config,
    o: Outgoing<'_>,
) -> Result<i64, ServiceError> {
    let now = now_ms();
    let ids = store::side_conversations::thread_ids(db, o.sc.id)?;
    let token: Token =
        o.sc.token
            .parse()
            .map_err(|_| ServiceError::Store("stored token is malformed".into()))?;
    let (sig_text, sig_html) = match o.actor {
        Some(actor) => signature(db, o.sender, actor)?,
        None => (None, None),
    };
    let dkim = dkim_key(db, config, &o.sender.email)?;
    // Each participant at the address they asked answers to go to.
    let (to, cc) = addressees(db, config, o.sc.id, o.to, o.cc)?;
    let recipients: Vec<&Addressee> = to.iter().chain(cc.iter()).collect();
    let links: Vec<Option<String>> = match &o.portal {
        Portal::None => vec![None; recipients.len()],
        Portal::Shared(url) => vec![Some(url.clone()); recipients.len()],
        Portal::PerRecipient => recipients
            .iter()
            .map(|r| {
                Ok(
                    store::portal::ensure_link(db, o.sc.id, &r.participant, now)?
                        .map(|t| format!("{}/p/{t}", config.http.public_url)),
                )
            })
            .collect::<Result<_, ServiceError>>()?,
    };
    let to: Vec<String> = to.into_iter().map(|a| a.address).collect();
    let cc: Vec<String> = cc.into_iter().map(|a| a.address).collect();
    let recipients: Vec<&String> = to.iter().chain(cc.iter()).collect();
    let to_people = people(&to);
    let cc_people = people(&cc);
    let attachments = out_attachments(o.attachments);
    let from_name = match (&o.from_name, o.actor) {
        (Some(name), _) => name.clone(),
        (None, _) if !o.sender.name.is_empty() => o.sender.name.clone(),
        (None, Some(actor)) => actor.name.clone(),
        (None, None) => String::new(),
    };
    // A follow-up keeps the tag the vendor's ticket system put in the subject.
    let subject = if ids.is_empty() {
        o.sc.subject.clone()
    } else {
        thread_subject(db, o.sc.id, &o.sc.subject)?
    };
    let draft = Draft {
        gateway_domain: &config.domain,
        token: &token,
        seq: o.sc.next_seq,
        from: Person {
            name: Some(from_name.clone()),
            email: o.sender.email.clone(),
        },
        reply_mode: o.sender.reply_mode,
        to: &to_people,
        cc: &cc_people,
        subject: &subject,
        thread_ids: &ids,
        thread_index: o.sc.thread_index.as_deref(),
        text: o.text,
        html: o.html,
        signature_text: sig_text.as_deref(),
        signature_html: sig_html.as_deref(),
        context: o.context.as_ref(),
        portal_url: links.first().and_then(|l| l.as_deref()),
        attachments: &attachments,
        date: now,
        dkim: dkim.as_ref(),
    };
    let message_id = compose::message_id(&token, o.sc.next_seq, &config.domain);
    let composed = compose::compose_as(&draft, message_id.clone())
        .map_err(|e| ServiceError::Store(e.to_string()))?;
    let reply_to = compose::reply_to(o.sender.reply_mode, &o.sender.email, &token, &config.domain);
    let visible = o
        .text
        .map(str::to_string)
        .unwrap_or_else(|| composed.text.clone());
    let message = store::messages::insert_outbound(
        db,
        &store::messages::NewOutbound {
            side_conversation: o.sc.id,
            route: o.route,
            raw: &composed.raw,
            message_id: &composed.message_id,
            in_reply_to: composed.in_reply_to.as_deref(),
            references: &composed.references,
            from_name: &from_name,
            from_email: &o.sender.email,
            reply_to: reply_to.as_deref(),
            to: &to,
            cc: &cc,
            subject: &composed.subject,
            text: &composed.text,
            html: &composed.html,
            visible_reply: &visible,
            author: o.actor.map(|a| a.user_id),
            at: now,
        },
    )?;
    super::store_parts(db, message, &composed, o.attachments)?;
    for rcpt in &recipients {
        outbox::enqueue(db, message, rcpt, now)?;
    }
    // The stored message is the first recipient's copy; every other
    // recipient whose link differs gets their own, under the same
    // Message-ID.
    for (rcpt, link) in recipients.iter().zip(&links).skip(1) {
        if link == &links[0] {
            continue;
        }
        let copy = Draft {
            portal_url: link.as_deref(),
            ..draft.clone()
        };
        let composed = compose::compose_as(&copy, message_id.clone())
            .map_err(|e| ServiceError::Store(e.to_string()))?;
        outbox::set_copy(db, message, rcpt, &composed.raw)?;
    }
    store::side_conversations::advance(db, o.sc.id, &composed.thread_index, now)?;
    store::parents::set_last_sender(db, o.sc.parent_id, &o.sender.email, now)?;
    // In the ticket's mailbox, and in the author's Sent.
    view::add_authored_message(
        db,
        message,
        Placement::Thread {
            parent_id: o.sc.parent_id,
            external_id: &o.sc.parent,
            inbound: false,
        },
        o.actor.map(|a| a.user_id),
    )?;
    // The author has read what they wrote (IMAP \Seen, JMAP $seen).
    if let Some(actor) = o.actor {
        view::store_flags(
            db,
            actor.user_id,
            message,
            view::FlagOp::Add,
            view::FlagSet {
                seen: true,
                ..view::FlagSet::default()
            },
        )?;
    }
    // `message.sent` waits for the first delivery (see `delivery`).
    Ok(message)
}
