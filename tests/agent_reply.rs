//! Replies to notification emails (SPEC §4 effects, §12), over real SMTP
//! and HTTP against fake DNS zones:
//!
//! - `acme.com` (the agents' domain): SPF authorising loopback, DMARC
//!   `p=reject` — mail from the agent over loopback passes DMARC;
//! - `vendor.example`: SPF authorising loopback (a verified vendor);
//! - `evil.test`: nothing (mail from there, From an agent, fails DMARC).
//!
//! A notification carries the agent's signed agent-reply address as its
//! Reply-To; the agent's verified answer to it becomes a follow-up composed
//! by the gateway, anything else is kept unrouted as `agent_reply_unverified`
//! and the agent is told why (never for an automatic reply).

mod common;

use backchannel::model::Role;
use common::dns::{FakeDns, RecordKind};
use common::{TestServer, api_call, code, connect, make_user, smtp_send, wait_for};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn zones() -> Vec<(&'static str, RecordKind)> {
    vec![
        (
            "acme.com",
            RecordKind::Txt("v=spf1 ip4:127.0.0.0/8 -all".into()),
        ),
        (
            "_dmarc.acme.com",
            RecordKind::Txt("v=DMARC1; p=reject".into()),
        ),
        (
            "vendor.example",
            RecordKind::Txt("v=spf1 ip4:127.0.0.0/8 -all".into()),
        ),
    ]
}

struct Gw {
    s: TestServer,
    _dns: FakeDns,
    ann: String,
    owner: String,
}

impl Gw {
    async fn start() -> Gw {
        let dns = FakeDns::start(&zones()).await;
        let s = TestServer::start_with(
            "",
            &format!(
                "[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\n\
                 [notifications]\nbatch_window = \"1s\"\n",
                dns.addr
            ),
        )
        .await;
        let ann = make_user(&s, "ann@acme.com", "Ann Agent", Role::Member).await;
        let owner = make_user(&s, "olga@acme.com", "Olga Owner", Role::Owner).await;
        Gw {
            s,
            _dns: dns,
            ann,
            owner,
        }
    }

    async fn api(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        api_call(&self.s, method, path, &self.ann, body).await
    }

    /// Starts a side conversation with `vendor`; (id, token).
    async fn start_thread(&self, parent: &str, vendor: &str, subject: &str) -> (i64, String) {
        let (st, v) = self
            .api(
                "POST",
                &format!("/api/parents/{parent}/side-conversations"),
                Some(json!({"to": [vendor], "subject": subject, "body_text": "Where is it?"})),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        (
            v["id"].as_i64().expect("id"),
            v["token"].as_str().expect("token").to_string(),
        )
    }

    async fn send(&self, mail_from: &str, rcpt: &str, data: &str) {
        let r = smtp_send(self.s.smtp, mail_from, &[rcpt], data).await;
        assert!(r.starts_with("250"), "{r}");
    }

    async fn vendor_reply(&self, vendor: &str, token: &str, id: &str, body: &str) {
        self.send(
            vendor,
            &format!("reply+{token}@gw.example.com"),
            &format!(
                "From: Vera <{vendor}>\nTo: reply+{token}@gw.example.com\nSubject: Re: parts\n\
                 Message-ID: <{id}@vendor.example>\n\n{body}\n"
            ),
        )
        .await;
    }

    /// Files delivered to `rcpt` (maildir) that contain `needle`.
    fn delivered(&self, rcpt: &str, needle: &str) -> Vec<String> {
        std::fs::read_dir(self.s.dir.path().join("data/sent/new"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .filter(|t| t.contains(&format!("Delivered-To: {rcpt}")) && t.contains(needle))
            .collect()
    }

    async fn wait_delivered(&self, rcpt: &str, needle: &str) -> String {
        wait_for(&format!("mail to {rcpt} with {needle:?}"), || async {
            self.delivered(rcpt, needle).into_iter().next()
        })
        .await
    }

    async fn count(&self, sql: &str) -> i64 {
        self.s.query::<i64>(sql).await
    }
}

/// The value of header `name` in a raw message (unfolded).
fn header(raw: &str, name: &str) -> String {
    let head = raw.split("\r\n\r\n").next().unwrap_or(raw);
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no {name} in\n{raw}"))
}

fn bare(addr: &str) -> String {
    addr.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string()
}

/// The agent's answer to a notification, quoting it as a mail client does.
fn answer(from: &str, to: &str, in_reply_to: &str, id: &str, text: &str) -> String {
    format!(
        "From: Ann Agent <{from}>\nTo: {to}\nSubject: Re: your notification\n\
         Message-ID: <{id}@mail.acme.com>\nIn-Reply-To: <{in_reply_to}>\n\
         References: <{in_reply_to}>\n\n{text}\n\n\
         On Mon, backchannel <reply@gw.example.com> wrote:\n\
         > Vera replied in the side conversation: QUOTED-NOTIFICATION-TEXT\n\
         > Thread: http://internal/secret\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answering_a_notification_sends_a_follow_up_composed_by_the_gateway() {
    let g = Gw::start().await;
    let (sc, token) = g
        .start_thread("T-1", "vera@vendor.example", "Pallet 7")
        .await;
    g.vendor_reply("vera@vendor.example", &token, "v1", "It left on Monday.")
        .await;
    let note = g
        .wait_delivered("ann@acme.com", "X-Backchannel-Notification")
        .await;
    let reply_to = bare(&header(&note, "Reply-To"));
    assert!(
        reply_to.starts_with(&format!("agent+t{token}u")) && reply_to.ends_with("@gw.example.com"),
        "{reply_to}"
    );
    assert!(note.contains("Reply to this email to answer"), "{note}");
    let note_id = bare(&header(&note, "Message-ID"));

    g.send(
        "ann@acme.com",
        &reply_to,
        &answer(
            "ann@acme.com",
            &reply_to,
            &note_id,
            "a1",
            "Thanks, tracking is 1Z999.",
        ),
    )
    .await;
    // The follow-up reaches the vendor, composed by the gateway.
    let out = g.wait_delivered("vera@vendor.example", "1Z999").await;
    assert!(!out.contains("QUOTED-NOTIFICATION-TEXT"), "{out}");
    assert!(!out.contains("http://internal/secret"), "{out}");
    assert!(!out.contains("X-Backchannel-Notification"), "{out}");
    let mid = bare(&header(&out, "Message-ID"));
    assert!(mid.starts_with(&format!("{token}.")), "{mid}");
    assert!(header(&out, "From").contains("@gw.example.com"), "{out}");
    assert!(
        !header(&out, "From").contains("ann@acme.com"),
        "the gateway's sender address, not the agent's: {out}"
    );
    // On the thread: the agent's follow-up, never the inbound copy as a
    // vendor reply; the inbound is kept apart as `agent_reply`.
    let (_, v) = g
        .api("GET", &format!("/api/side-conversations/{sc}"), None)
        .await;
    let msgs = v["messages"].as_array().expect("messages");
    assert_eq!(msgs.len(), 3, "start, vendor reply, follow-up: {v}");
    assert_eq!(msgs[2]["direction"], "out", "{v}");
    assert_eq!(
        g.count("SELECT count(*) FROM messages WHERE kind = 'agent_reply' AND side_conversation_id IS NULL")
            .await,
        1
    );
    assert_eq!(
        g.count(
            "SELECT count(*) FROM agent_replies a JOIN messages m ON m.id = a.sent_message_id \
             WHERE m.direction = 'out' AND a.reason IS NULL"
        )
        .await,
        1
    );
    // As an API follow-up: the activity entry on the parent.
    assert_eq!(
        g.count("SELECT count(*) FROM activity WHERE text LIKE '%replied in a side conversation%' AND text LIKE '%Ann Agent%'")
            .await,
        1
    );
    // The same message delivered again is sent once.
    g.send(
        "ann@acme.com",
        &reply_to,
        &answer(
            "ann@acme.com",
            &reply_to,
            &note_id,
            "a1",
            "Thanks, tracking is 1Z999.",
        ),
    )
    .await;
    g.s.wait_ingested().await;
    assert_eq!(
        g.count("SELECT count(*) FROM messages WHERE direction = 'out' AND kind = 'agent' AND side_conversation_id IS NOT NULL")
            .await,
        2,
        "the start and one follow-up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_or_refused_reply_is_kept_unrouted_and_the_agent_is_told_why() {
    let g = Gw::start().await;
    let (sc, token) = g
        .start_thread("T-2", "vera@vendor.example", "Pallet 8")
        .await;
    g.vendor_reply("vera@vendor.example", &token, "v2", "Which pallet?")
        .await;
    let note = g
        .wait_delivered("ann@acme.com", "X-Backchannel-Notification")
        .await;
    let reply_to = bare(&header(&note, "Reply-To"));
    let note_id = bare(&header(&note, "Message-ID"));
    let outbound_before = g
        .count("SELECT count(*) FROM outbox WHERE recipient = 'vera@vendor.example'")
        .await;

    // From the agent, but sent from a domain acme.com does not authorise:
    // DMARC fails.
    g.send(
        "mallory@evil.test",
        &reply_to,
        &answer(
            "ann@acme.com",
            &reply_to,
            &note_id,
            "f1",
            "Send the refund to IBAN X.",
        ),
    )
    .await;
    let notice = g.wait_delivered("ann@acme.com", "Not sent").await;
    assert!(
        notice.contains("DMARC failed for <ann@acme.com>"),
        "{notice}"
    );
    assert_eq!(header(&notice, "Auto-Submitted"), "auto-generated");
    assert_eq!(
        g.count("SELECT count(*) FROM messages WHERE kind = 'agent_reply_unverified' AND side_conversation_id IS NULL")
            .await,
        1
    );
    assert_eq!(
        g.count("SELECT count(*) FROM outbox WHERE recipient = 'vera@vendor.example'")
            .await,
        outbound_before,
        "nothing queued to the vendor"
    );
    // Admins see it with the unrouted mail, by kind.
    let (st, v) = api_call(&g.s, "GET", "/api/unrouted", &g.owner, None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let listed = v.to_string();
    assert!(listed.contains("agent_reply_unverified"), "{v}");

    // From someone else entirely.
    g.send(
        "vera@vendor.example",
        &reply_to,
        &answer("vera@vendor.example", &reply_to, &note_id, "f2", "Hijack."),
    )
    .await;
    g.wait_delivered("ann@acme.com", "it came from <vera@vendor.example>")
        .await;

    // A closed side conversation: agent_mail refuses; nothing half-written.
    let (st, _) = g
        .api("POST", &format!("/api/side-conversations/{sc}/close"), None)
        .await;
    assert!(st.is_success());
    g.send(
        "ann@acme.com",
        &reply_to,
        &answer("ann@acme.com", &reply_to, &note_id, "f3", "One more thing."),
    )
    .await;
    let closed = g
        .wait_delivered("ann@acme.com", "reopen it and reply again")
        .await;
    assert!(closed.contains("closed"), "{closed}");
    assert_eq!(
        g.count("SELECT count(*) FROM outbox WHERE recipient = 'vera@vendor.example'")
            .await,
        outbound_before
    );
    assert_eq!(
        g.count("SELECT count(*) FROM messages WHERE kind = 'agent_reply_unverified'")
            .await,
        3
    );

    // An answer to a "not sent" email that fails again is kept, and tells
    // nobody again: no loop.
    let notices = g.delivered("ann@acme.com", "Not sent").len();
    let notice_id = bare(&header(&notice, "Message-ID"));
    g.send(
        "mallory@evil.test",
        &reply_to,
        &answer("ann@acme.com", &reply_to, &notice_id, "f4", "Again."),
    )
    .await;
    g.s.wait_ingested().await;
    assert_eq!(
        g.count("SELECT count(*) FROM messages WHERE kind = 'agent_reply_unverified'")
            .await,
        4
    );
    assert_eq!(
        g.count(
            "SELECT count(*) FROM outbox o JOIN messages m ON m.id = o.message_id \
                 WHERE o.recipient = 'ann@acme.com' AND m.subject LIKE 'Not sent%'"
        )
        .await,
        notices as i64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_about_several_conversations_names_each_ones_address() {
    let g = Gw::start().await;
    let (sc1, t1) = g
        .start_thread("T-3", "vera@vendor.example", "Pallet 9")
        .await;
    let (_sc2, t2) = g.start_thread("T-4", "vic@vendor.example", "Crate 4").await;
    g.vendor_reply("vera@vendor.example", &t1, "v3", "Pallet news.")
        .await;
    g.vendor_reply("vic@vendor.example", &t2, "v4", "Crate news.")
        .await;
    let note = g
        .wait_delivered("ann@acme.com", "new replies in side conversations")
        .await;
    let reply_to = bare(&header(&note, "Reply-To"));
    assert!(
        reply_to.starts_with("agent+u") && !reply_to.contains(&t1) && !reply_to.contains(&t2),
        "token-less: {reply_to}"
    );
    let body = note.replace("=\r\n", "");
    let mailtos: Vec<String> = body
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Reply to this conversation: mailto:"))
        .map(str::to_string)
        .collect();
    assert_eq!(mailtos.len(), 2, "{note}");
    let first = mailtos
        .iter()
        .find(|a| a.contains(&format!("t{t1}u")))
        .expect("the first conversation's address")
        .clone();
    let note_id = bare(&header(&note, "Message-ID"));

    // At the batch's own Reply-To: not sent, with the reason.
    g.send(
        "ann@acme.com",
        &reply_to,
        &answer("ann@acme.com", &reply_to, &note_id, "b1", "Which one?"),
    )
    .await;
    let notice = g
        .wait_delivered("ann@acme.com", "covered several side conversations")
        .await;
    assert!(notice.contains("Not sent"), "{notice}");
    // At one conversation's address: a follow-up in that one.
    g.send(
        "ann@acme.com",
        &first,
        &answer("ann@acme.com", &first, &note_id, "b2", "Pallet answer 42."),
    )
    .await;
    g.wait_delivered("vera@vendor.example", "Pallet answer 42.")
        .await;
    assert!(
        g.delivered("vic@vendor.example", "Pallet answer 42.")
            .is_empty()
    );
    let (_, v) = g
        .api("GET", &format!("/api/side-conversations/{sc1}"), None)
        .await;
    assert!(v.to_string().contains("Pallet answer 42."), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_addresses_and_deactivated_agents_are_refused_at_rcpt() {
    let g = Gw::start().await;
    let (_, token) = g
        .start_thread("T-5", "vera@vendor.example", "Pallet 10")
        .await;
    g.vendor_reply("vera@vendor.example", &token, "v5", "Hello.")
        .await;
    let note = g
        .wait_delivered("ann@acme.com", "X-Backchannel-Notification")
        .await;
    let reply_to = bare(&header(&note, "Reply-To"));
    let (local, domain) = reply_to.rsplit_once('@').expect("address");
    // One character of the signature changed; another user's id with this
    // signature.
    let last = local.chars().last().expect("char");
    let swapped = if last == 'a' { 'b' } else { 'a' };
    let tampered = format!("{}{swapped}@{domain}", &local[..local.len() - 1]);
    // `agent+t<token>u<user id>m<16-character signature>`.
    let (head, sig) = local.split_at(local.len() - 16);
    let head = head.strip_suffix('m').expect("signature mark");
    let (prefix, uid) = head.rsplit_once('u').expect("user");
    let other_user = format!(
        "{prefix}u{}m{sig}@{domain}",
        uid.parse::<i64>().expect("id") + 1
    );

    let mut c = connect(g.s.smtp).await;
    c.reply().await;
    c.cmd("EHLO test.example").await;
    assert_eq!(code(&c.cmd("MAIL FROM:<ann@acme.com>").await), "250");
    for bad in [&tampered, &other_user] {
        let r = c.cmd(&format!("RCPT TO:<{bad}>")).await;
        assert!(r.starts_with("550 5.1.1"), "{bad}: {r}");
    }
    let r = c.cmd(&format!("RCPT TO:<{reply_to}>")).await;
    assert_eq!(code(&r), "250", "{r}");
    c.cmd("QUIT").await;

    // Ann deactivated: her address is refused at once.
    let ann_id = g
        .count("SELECT id FROM users WHERE email = 'ann@acme.com'")
        .await;
    let (st, v) = api_call(
        &g.s,
        "PATCH",
        &format!("/api/users/{ann_id}"),
        &g.owner,
        Some(json!({"active": false})),
    )
    .await;
    assert!(st.is_success(), "{v}");
    let mut c = connect(g.s.smtp).await;
    c.reply().await;
    c.cmd("EHLO test.example").await;
    c.cmd("MAIL FROM:<ann@acme.com>").await;
    let r = c.cmd(&format!("RCPT TO:<{reply_to}>")).await;
    assert!(r.starts_with("550 5.1.1"), "{r}");
    c.cmd("QUIT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_office_answer_is_kept_and_sends_nothing() {
    let g = Gw::start().await;
    let (_, token) = g
        .start_thread("T-6", "vera@vendor.example", "Pallet 11")
        .await;
    g.vendor_reply("vera@vendor.example", &token, "v6", "Ping.")
        .await;
    let note = g
        .wait_delivered("ann@acme.com", "X-Backchannel-Notification")
        .await;
    let reply_to = bare(&header(&note, "Reply-To"));
    let note_id = bare(&header(&note, "Message-ID"));
    let to_vendor = g
        .count("SELECT count(*) FROM outbox WHERE recipient = 'vera@vendor.example'")
        .await;
    let to_ann = g
        .count("SELECT count(*) FROM outbox WHERE recipient = 'ann@acme.com'")
        .await;
    g.send(
        "ann@acme.com",
        &reply_to,
        &format!(
            "From: Ann Agent <ann@acme.com>\nTo: {reply_to}\nSubject: Out of office\n\
             Auto-Submitted: auto-replied\nMessage-ID: <ooo1@mail.acme.com>\n\
             In-Reply-To: <{note_id}>\n\nI am away until Monday.\n"
        ),
    )
    .await;
    g.s.wait_ingested().await;
    assert_eq!(
        g.count("SELECT count(*) FROM messages WHERE kind = 'agent_reply_unverified' AND message_id = 'ooo1@mail.acme.com'")
            .await,
        1
    );
    assert_eq!(
        g.count("SELECT count(*) FROM outbox WHERE recipient = 'vera@vendor.example'")
            .await,
        to_vendor,
        "no follow-up"
    );
    assert_eq!(
        g.count("SELECT count(*) FROM outbox WHERE recipient = 'ann@acme.com'")
            .await,
        to_ann,
        "nobody told"
    );
}
