//! Reply notifications (SPEC §4 effects): every accepted vendor reply is
//! queued for the parent's assignee (else the agent who started the side
//! conversation) unless they turned notifications off; replies to one agent
//! within `notifications.batch_window` share one email. The worker composes
//! it and sends it through the outbox from the gateway's own address, marked
//! `Auto-Submitted: auto-generated` and `X-Backchannel-Notification`, so a
//! notification that comes back (an auto-reply, a bounce, a forward) is
//! recognised and never threaded.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::conversations::agent_mail::agent_reply_address;
use crate::metrics;
use crate::model::now_ms;
use crate::outbound::compose;
use crate::shutdown::Shutdown;
use crate::store::Db;
use crate::store::{self, Result, Store, outbox};

/// The header that marks our notifications.
pub const HEADER: &str = compose::NOTIFICATION_HEADER;

/// Message-IDs of notifications: `notify.<random>@<gateway domain>`.
pub fn is_notification_id(id: &str, gateway_domain: &str) -> bool {
    id.rsplit_once('@').is_some_and(|(left, domain)| {
        left.starts_with("notify.") && domain.eq_ignore_ascii_case(gateway_domain)
    })
}

/// Queues a reply for its agent's notification; called inside the reply's
/// own transaction. A batch is sent a window after its first reply (see
/// [`send_due`]).
pub fn enqueue(db: &Db<'_>, sc: i64, message: i64, now: i64) -> Result<()> {
    store::notifications::enqueue(db, sc, message, now)
}

struct Reply {
    parent: String,
    subject: String,
    sc: i64,
    vendor: String,
    /// The visible reply, cut to `notifications.excerpt_chars`.
    visible: String,
    /// The reply was cut.
    cut: bool,
    /// Flagged `unverified_sender`.
    unverified: bool,
    /// The agent's reply address for this side conversation (SPEC §12).
    answer_to: String,
    /// A reminder (SPEC §15), not a reply: its text.
    reminder: Option<String>,
}

/// Sends every batch that is due; returns how many emails were queued.
/// Replies are listed in arrival order.
///
/// Each agent's batch is its own savepoint: one that fails (a store error)
/// is rolled back alone, logged and tried again a batch window later,
/// while every other agent's email goes out. What one email reads is bounded
/// by `notifications.max_replies_per_email` × `notifications.excerpt_chars`
/// whatever the replies weigh, so a flood of large replies costs the writer
/// little and memory stays flat.
pub fn send_due(db: &Db<'_>, config: &Config, now: i64) -> Result<usize> {
    // A batch is due a window after its first reply.
    let window = config.notifications.batch_window.as_millis() as i64;
    let mut sent = 0;
    for user in store::notifications::due_users(db, now, window)? {
        match db.savepoint(|db| send_batch(db, config, user, now)) {
            Ok(n) => sent += n,
            Err(e) => {
                tracing::warn!(user_id = user, error = %e, retry_in_ms = window,
                    "notifications: this agent's batch failed; the others go on");
                metrics::inc("notifications_failed_total", &[]);
                store::notifications::postpone(db, user, now)?;
            }
        }
    }
    Ok(sent)
}

/// Composes and queues one agent's due batch; returns 1 if an email was
/// queued.
fn send_batch(db: &Db<'_>, config: &Config, user: i64, now: i64) -> Result<usize> {
    let agent = store::users::by_id(db, user)?;
    if agent.notifications != "email" || !agent.active {
        // Turned off (or the agent deactivated) while the batch waited:
        // drop it.
        store::notifications::drop_pending(db, user)?;
        return Ok(0);
    }
    let limit = config.notifications.max_replies_per_email;
    let chars = config.notifications.excerpt_chars;
    // One character more than shown, to know it was cut.
    let mut rows: Vec<Reply> = Vec::new();
    for r in store::notifications::pending(db, user, limit, chars + 1)? {
        let visible = crate::store::messages::plain_visible(&r.text);
        let (visible, cut) = excerpt(&visible, chars);
        let token = store::side_conversations::get(db, r.side_conversation)?.map(|t| t.token);
        let answer_to = agent_reply_address(db, config, user, token.as_deref())?;
        rows.push(Reply {
            parent: r.parent,
            subject: r.subject,
            sc: r.side_conversation,
            vendor: r.vendor,
            visible,
            cut,
            unverified: r.unverified,
            answer_to,
            reminder: r.reminder,
        });
    }
    if rows.is_empty() {
        // Replies whose thread is gone: nothing to tell.
        store::notifications::drop_pending(db, user)?;
        return Ok(0);
    }
    let total = store::notifications::pending_count(db, user)?;
    let more = total.saturating_sub(rows.len());
    // One side conversation: answering the email answers it. Several (or
    // some not listed): the email's own Reply-To names none, and each
    // reply carries its own address.
    let single = more == 0 && rows.iter().all(|r| r.sc == rows[0].sc);
    let reply_to = if single {
        rows[0].answer_to.clone()
    } else {
        agent_reply_address(db, config, user, None)?
    };
    let message = compose_and_queue(
        db,
        config,
        &Agent {
            email: &agent.email,
            name: &agent.name,
            reply_to: &reply_to,
        },
        &rows.iter().collect::<Vec<_>>(),
        more,
        now,
    )?;
    // Every reply of the batch is told of by this email, listed or counted.
    store::notifications::mark_sent(db, user, message)?;
    metrics::inc("notifications_sent_total", &[]);
    Ok(1)
}

/// At most `chars` characters of `text`, cut at a line or word end when
/// one is near; and whether anything was cut.
fn excerpt(text: &str, chars: usize) -> (String, bool) {
    match text.char_indices().nth(chars) {
        None => (text.to_string(), false),
        Some((end, _)) => {
            let head = &text[..end];
            let floor = head.len() * 3 / 4;
            let at = head
                .rfind('\n')
                .filter(|&i| i >= floor)
                .or_else(|| head.rfind(' ').filter(|&i| i >= floor))
                .unwrap_or(end);
            (head[..at].trim_end().to_string(), true)
        }
    }
}

/// Who a notification is for, and where their answer goes.
struct Agent<'a> {
    email: &'a str,
    name: &'a str,
    reply_to: &'a str,
}

fn compose_and_queue(
    db: &Db<'_>,
    config: &Config,
    who: &Agent<'_>,
    replies: &[&Reply],
    more: usize,
    now: i64,
) -> Result<i64> {
    let (to, agent) = (who.email, who.name);
    let single = more == 0 && replies.iter().all(|r| r.sc == replies[0].sc);
    let first = replies[0];
    let count = replies.len() + more;
    let any_unverified = replies.iter().any(|r| r.unverified);
    let mut subject = if count == 1 && first.reminder.is_some() {
        format!(
            "[{}] Reminder: {}",
            first.parent,
            first.reminder.as_deref().unwrap_or_default()
        )
    } else if count == 1 {
        format!(
            "[{}] {} replied: {}",
            first.parent, first.vendor, first.subject
        )
    } else {
        let mut parents: Vec<&str> = replies.iter().map(|r| r.parent.as_str()).collect();
        parents.dedup();
        format!(
            "[{}] {} new replies in side conversations",
            parents.join(", "),
            count
        )
    };
    if any_unverified {
        subject = format!("[unverified] {subject}");
    }
    let mut text = String::new();
    if any_unverified {
        text.push_str(
            "Warning: the sender of a reply below could not be verified (their domain's \
             DMARC/SPF/DKIM did not vouch for it, or they are not a participant). Do not \
             trust what it asks for; admit the sender to the side conversation only if \
             you know them.\n\n",
        );
    }
    text.push_str(&format!("Hello {agent},\n\n"));
    if single {
        text.push_str(
            "Reply to this email to answer in the side conversation: what you write is sent \
             to the vendor from the side conversation's address, with its signature. Only \
             your own new text (and attachments) is sent, never this notification or \
             anything quoted from it.\n\n",
        );
    } else {
        text.push_str(
            "This email covers several side conversations, so replying to it sends nothing \
             to a vendor. To answer one, write to its \"Reply to this conversation\" \
             address below: your own new text (and attachments) is sent to the vendor, \
             never this notification or anything quoted from it.\n\n",
        );
    }
    for r in replies {
        if let Some(reminder) = &r.reminder {
            text.push_str(&format!(
                "Reminder: {reminder}, in the side conversation \"{}\" on ticket {}.\nThread: {}/app/side-conversations/{}\n{}\n---\n\n",
                r.subject,
                r.parent,
                config.http.public_url,
                r.sc,
                if single {
                    String::new()
                } else {
                    format!("Reply to this conversation: mailto:{}\n", r.answer_to)
                }
            ));
            continue;
        }
        if r.unverified {
            text.push_str("[unverified sender] ");
        }
        text.push_str(&format!(
            "{} replied in the side conversation \"{}\" on ticket {}:\n\n{}\n{}\nThread: {}/app/side-conversations/{}\n{}\n---\n\n",
            r.vendor,
            r.subject,
            r.parent,
            r.visible.lines().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n"),
            if r.cut { "  […] (cut here; the whole reply is on the thread)\n" } else { "" },
            config.http.public_url,
            r.sc,
            if single {
                String::new()
            } else {
                format!("Reply to this conversation: mailto:{}\n", r.answer_to)
            }
        ));
    }
    if more > 0 {
        text.push_str(&format!(
            "… and {more} more {} not listed here; they are on their threads.\n\n",
            if more == 1 { "reply" } else { "replies" }
        ));
    }
    text.push_str(&format!(
        "You get this because you are the ticket's assignee or started the side conversation.\n\
         Turn it off in the console ({}/app/me) or with PUT /api/me {{\"notifications\": \"off\"}}.\n",
        config.http.public_url
    ));
    let mail = compose::notification(&compose::NotificationDraft {
        gateway_domain: &config.domain,
        to,
        reply_to: Some(who.reply_to),
        subject: &subject,
        text: &text,
        date: now,
    })
    .map_err(|e| crate::store::StoreError::Database(e.to_string()))?;
    let message = store::messages::insert_system_mail(
        db,
        &store::messages::SystemMail {
            kind: "notification",
            raw: &mail.raw,
            message_id: &mail.message_id,
            from_email: &mail.from,
            to: (Some(agent), to),
            subject: &subject,
            text: &text,
            at: now,
        },
    )?;
    outbox::enqueue(db, message, to, now)?;
    Ok(message)
}

/// Sends due batches until shutdown.
pub struct Worker {
    config: Arc<Config>,
    store: Store,
    outbox_waker: Arc<tokio::sync::Notify>,
}

impl Worker {
    pub fn new(
        config: Arc<Config>,
        store: Store,
        outbox_waker: Arc<tokio::sync::Notify>,
    ) -> Worker {
        metrics::describe(
            "notifications_sent_total",
            "Reply notification emails queued",
        );
        metrics::describe(
            "notifications_failed_total",
            "Agents' notification batches that failed and wait for a retry",
        );
        Worker {
            config,
            store,
            outbox_waker,
        }
    }

    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        // Batches are due a window after their first reply; a one-second
        // tick keeps the delay within a second of the window.
        loop {
            tokio::select! {
                _ = shutdown.wait() => return Ok(()),
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let config = self.config.clone();
            match self
                .store
                .write(move |c| send_due(c, &config, now_ms()))
                .await
            {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(notifications = n, "reply notifications queued");
                    self.outbox_waker.notify_one();
                }
                Err(e) => tracing::warn!(error = %e, "notifications: cannot send due batches"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::excerpt;

    #[test]
    fn excerpts_are_bounded_and_cut_at_a_word() {
        assert_eq!(excerpt("short", 10), ("short".to_string(), false));
        let (cut, was_cut) = excerpt("one two three four five six", 20);
        assert!(was_cut);
        assert_eq!(cut, "one two three four");
        // Multi-byte text is cut at a character boundary, never inside one.
        let text = "ü".repeat(5000);
        let (cut, was_cut) = excerpt(&text, 2000);
        assert!(was_cut);
        assert_eq!(cut.chars().count(), 2000);
    }
}
