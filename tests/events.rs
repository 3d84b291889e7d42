//! Events that follow delivery, not queueing (SPEC §5, §7): side
//! conversations started over the API, delivered by the running gateway's
//! outbox worker through a relay written here (which can refuse a
//! recipient, or hold its answer to DATA until the test releases it), to a
//! port nobody listens on, or to the Maildir; webhook events received by an
//! HTTP receiver on loopback; bounces sent over SMTP to the VERP address.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use backchannel::model::Role;
use common::{TestServer, api_call, make_user, smtp_send, wait_for, wait_until};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::Notify;

// ---------------------------------------------------------------------------
// The webhook receiver: records every event it is sent.

#[derive(Default)]
struct Hooks {
    got: Mutex<Vec<(String, Value)>>,
}

async fn hook(State(h): State<Arc<Hooks>>, headers: HeaderMap, body: Bytes) -> &'static str {
    let event = headers
        .get("x-backchannel-event")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    h.got.lock().expect("lock").push((event, body));
    "ok"
}

struct Receiver {
    addr: SocketAddr,
    hooks: Arc<Hooks>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        let hooks = Arc::new(Hooks::default());
        let app = Router::new().fallback(hook).with_state(hooks.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, hooks, task }
    }

    /// The `data` of every `event` received so far.
    fn events(&self, event: &str) -> Vec<Value> {
        self.hooks
            .got
            .lock()
            .expect("lock")
            .iter()
            .filter(|(e, _)| e == event)
            .map(|(_, body)| body["data"].clone())
            .collect()
    }

    async fn wait_event(&self, event: &str) -> Value {
        wait_for(&format!("webhook {event}"), || async {
            self.events(event).into_iter().next()
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------
// The relay: a small SMTP server that refuses some recipients at RCPT and
// can hold its answer to DATA until released.

#[derive(Default)]
struct RelayState {
    /// Recipients refused at RCPT with `550 5.1.1`.
    refuse: Vec<String>,
    /// Hold the answer to DATA until `release`.
    hold: Mutex<bool>,
    release: Notify,
    /// Messages whose DATA was read (answered or held): (rcpt, bytes).
    data: Mutex<Vec<(String, String)>>,
    /// Messages answered 250.
    accepted: Mutex<Vec<(String, String)>>,
}

struct Relay {
    addr: SocketAddr,
    state: Arc<RelayState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    async fn start(refuse: &[&str], hold: bool) -> Relay {
        let state = Arc::new(RelayState {
            refuse: refuse.iter().map(|r| r.to_string()).collect(),
            hold: Mutex::new(hold),
            ..RelayState::default()
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay addr");
        let task = {
            let state = state.clone();
            tokio::spawn(async move {
                let mut sessions = tokio::task::JoinSet::new();
                while let Ok((tcp, _)) = listener.accept().await {
                    sessions.spawn(session(tcp, state.clone()));
                }
            })
        };
        Relay { addr, state, task }
    }

    fn release(&self) {
        *self.state.hold.lock().expect("lock") = false;
        self.state.release.notify_waiters();
    }

    fn held(&self) -> usize {
        self.state.data.lock().expect("lock").len()
    }

    fn accepted(&self) -> Vec<(String, String)> {
        self.state.accepted.lock().expect("lock").clone()
    }

    fn config(&self, extra: &str) -> String {
        format!(
            "[outbound]\nmode = \"relay\"\nrelay_url = \"smtp://{}\"\n{extra}\n{WEBHOOKS}",
            self.addr
        )
    }
}

async fn session(tcp: tokio::net::TcpStream, state: Arc<RelayState>) {
    let mut io = BufReader::new(tcp);
    let say = |text: String| text + "\r\n";
    if io
        .get_mut()
        .write_all(say("220 relay.test ESMTP".into()).as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let mut rcpt = String::new();
    loop {
        let mut line = String::new();
        match io.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = line.trim_end().to_string();
        let upper = line.to_ascii_uppercase();
        let reply = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            "250-relay.test\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES".to_string()
        } else if upper.starts_with("MAIL FROM") || upper == "RSET" || upper == "NOOP" {
            "250 2.0.0 ok".to_string()
        } else if upper.starts_with("RCPT TO") {
            rcpt = line
                .split_once('<')
                .and_then(|(_, r)| r.split_once('>'))
                .map(|(r, _)| r.to_string())
                .unwrap_or_default();
            if state.refuse.iter().any(|r| r.eq_ignore_ascii_case(&rcpt)) {
                format!("550 5.1.1 <{rcpt}>: no such user here")
            } else {
                "250 2.1.5 ok".to_string()
            }
        } else if upper == "DATA" {
            if io
                .get_mut()
                .write_all(say("354 go ahead".into()).as_bytes())
                .await
                .is_err()
            {
                return;
            }
            let mut data = String::new();
            loop {
                let mut l = String::new();
                match io.read_line(&mut l).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if l == ".\r\n" {
                    break;
                }
                data.push_str(&l);
            }
            state
                .data
                .lock()
                .expect("lock")
                .push((rcpt.clone(), data.clone()));
            loop {
                // Registered before the check, so a release in between is kept.
                let released = state.release.notified();
                if !*state.hold.lock().expect("lock") {
                    break;
                }
                released.await;
            }
            state
                .accepted
                .lock()
                .expect("lock")
                .push((rcpt.clone(), data));
            "250 2.0.0 queued".to_string()
        } else if upper == "QUIT" {
            let _ = io.get_mut().write_all(b"221 2.0.0 bye\r\n").await;
            return;
        } else {
            "500 5.5.2 unknown command".to_string()
        };
        if io.get_mut().write_all(say(reply).as_bytes()).await.is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers.

/// Webhooks to the loopback receiver, polled quickly.
const WEBHOOKS: &str = "[webhooks]\nallow_destinations = [\"127.0.0.0/8\"]\ntimeout = \"2s\"\nretry_schedule = [\"1s\"]\n";

const AGENT: &str = "ann@acme.com";

struct Setup {
    s: TestServer,
    hooks: Receiver,
    token: String,
}

/// A gateway with `rest` as its config, a webhook to a receiver for the
/// events these tests look at, and the agent Ann.
async fn setup(rest: &str) -> Setup {
    let s = TestServer::start_with("", rest).await;
    let hooks = Receiver::start().await;
    let token = make_user(&s, AGENT, "Ann Agent", Role::Admin).await;
    let (st, v) = api_call(
        &s,
        "POST",
        "/api/webhooks",
        &token,
        Some(json!({"url": format!("http://{}/hook", hooks.addr), "secret": "s3cret",
                    "events": ["side_conversation.started", "message.sent", "message.failed", "message.bounced"]})),
    )
    .await;
    assert_eq!(st.as_u16(), 201, "{v}");
    assert_eq!(v["events"][2], "message.failed", "{v}");
    Setup { s, hooks, token }
}

/// Starts a side conversation on a new parent `parent` to `to`; returns
/// its id.
async fn start(x: &Setup, parent: &str, to: &[&str]) -> i64 {
    let (st, v) = api_call(
        &x.s,
        "PUT",
        &format!("/api/parents/{parent}"),
        &x.token,
        Some(json!({"subject": "Order 1001", "requester": {"name": "Rita", "email": "rita@customer.example"}, "status": "open"})),
    )
    .await;
    assert!(st.is_success(), "{v}");
    let (st, v) = api_call(
        &x.s,
        "POST",
        &format!("/api/parents/{parent}/side-conversations"),
        &x.token,
        Some(json!({"to": to, "subject": "Pallet 7 delayed", "body_text": "Where is pallet 7?"})),
    )
    .await;
    assert_eq!(st.as_u16(), 201, "{v}");
    v["id"].as_i64().expect("side conversation id")
}

/// The state of the outbox row of `recipient`.
async fn state_of(s: &TestServer, recipient: &str) -> (String, i64, Option<String>) {
    let r = recipient.to_string();
    s.sql
        .read(move |c| {
            Ok(c.query_row(
                "SELECT state, attempts, last_error FROM outbox WHERE recipient = ?1",
                [r],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )?)
        })
        .await
        .expect("outbox row")
}

async fn wait_state(s: &TestServer, recipient: &str, want: &str) -> (String, i64, Option<String>) {
    wait_for(&format!("{recipient} {want}"), || async {
        let st = state_of(s, recipient).await;
        (st.0 == want).then_some(st)
    })
    .await
}

/// How many deliveries of `event` were queued (to the one webhook).
async fn queued_events(s: &TestServer, event: &str) -> i64 {
    let e = event.to_string();
    s.sql
        .read(move |c| {
            Ok(c.query_row(
                "SELECT COUNT(*) FROM webhook_deliveries WHERE event = ?1",
                [e],
                |r| r.get(0),
            )?)
        })
        .await
        .expect("count")
}

async fn activity(x: &Setup, parent: &str) -> Vec<String> {
    let (_, v) = api_call(
        &x.s,
        "GET",
        &format!("/api/parents/{parent}/activity"),
        &x.token,
        None,
    )
    .await;
    v["items"]
        .as_array()
        .expect("activity items")
        .iter()
        .filter_map(|a| a["text"].as_str().map(str::to_string))
        .collect()
}

/// The failure notifications queued for the agent: their raw bytes.
async fn notifications(s: &TestServer) -> Vec<String> {
    s.sql
        .read(|c| {
            let mut stmt = c.prepare(
                "SELECT m.raw FROM messages m JOIN outbox o ON o.message_id = m.id
                 WHERE m.kind = 'notification' AND o.recipient = 'ann@acme.com' ORDER BY m.id",
            )?;
            let rows = stmt
                .query_map([], |r| r.get::<_, Vec<u8>>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows
                .into_iter()
                .map(|raw| String::from_utf8_lossy(&raw).into_owned())
                .collect())
        })
        .await
        .expect("notifications")
}

fn assert_failure_notice(raw: &str, recipient: &str, diagnostic: &str, sc: i64) {
    assert!(raw.contains("Auto-Submitted: auto-generated"), "{raw}");
    assert!(raw.contains("X-Backchannel-Notification:"), "{raw}");
    assert!(
        raw.contains("To: <ann@acme.com>") || raw.contains("To: ann@acme.com"),
        "{raw}"
    );
    assert!(
        raw.contains(&format!("Could not reach {recipient}")),
        "{raw}"
    );
    assert!(raw.contains("Pallet 7 delayed"), "{raw}");
    assert!(
        raw.contains(&format!("{recipient} could not be reached")),
        "{raw}"
    );
    assert!(raw.contains(diagnostic), "{raw}");
    assert!(
        raw.contains(&format!("/app/side-conversations/{sc}")),
        "{raw}"
    );
}

// ---------------------------------------------------------------------------
// Tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_fails_after_the_retries_and_tells_the_agent() {
    let closed = common::dns::closed_addr().await;
    let rest = format!(
        "[outbound]\nmode = \"relay\"\nrelay_url = \"smtp://{closed}\"\nretry_schedule = [\"1s\"]\nmax_age = \"3s\"\n{WEBHOOKS}"
    );
    let mut x = setup(&rest).await;
    let sc = start(&x, "T-1", &["vera@vendor.example"]).await;

    // Deferred first: no event yet.
    let first = wait_for("a first failed attempt", || async {
        let st = state_of(&x.s, "vera@vendor.example").await;
        (st.0 == "deferred" || st.0 == "failed").then_some(st.0)
    })
    .await;
    if first == "deferred" {
        assert_eq!(queued_events(&x.s, "message.failed").await, 0);
        assert!(
            activity(&x, "T-1")
                .await
                .iter()
                .all(|a| !a.contains("could not be reached"))
        );
    }
    let (state, attempts, error) = wait_state(&x.s, "vera@vendor.example", "failed").await;
    assert_eq!(state, "failed");
    assert!(attempts >= 2, "retried before giving up: {attempts}");
    let error = error.unwrap_or_default();
    assert!(error.contains("gave up after"), "{error}");

    let failed = x.hooks.wait_event("message.failed").await;
    assert_eq!(failed["recipient"], "vera@vendor.example");
    assert_eq!(failed["reason"], "delivery");
    assert_eq!(failed["side_conversation_id"], sc);
    assert_eq!(failed["parent"], "T-1");
    assert_eq!(failed["diagnostic"].as_str(), Some(error.as_str()));
    assert!(
        failed["failed_at"]
            .as_str()
            .and_then(backchannel::model::parse_rfc3339)
            .is_some(),
        "{failed}"
    );
    assert_eq!(failed["delivery"][0]["state"], "failed");

    let act = activity(&x, "T-1").await;
    assert!(
        act.contains(&format!(
            "vera@vendor.example could not be reached: {error}"
        )),
        "{act:?}"
    );
    let notes = notifications(&x.s).await;
    assert_eq!(notes.len(), 1, "one email for the agent");
    assert_failure_notice(&notes[0], "vera@vendor.example", "gave up after", sc);

    // The agent's own email cannot go out either; its failure tells nobody.
    wait_state(&x.s, AGENT, "failed").await;
    assert_eq!(notifications(&x.s).await.len(), 1, "no notice of a notice");
    assert_eq!(queued_events(&x.s, "message.failed").await, 1);
    assert_eq!(queued_events(&x.s, "message.sent").await, 0);
    assert!(x.hooks.events("message.sent").is_empty());
    x.s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_550_at_rcpt_fails_at_once_and_the_agent_gets_an_email() {
    let relay = Relay::start(&["gone@vendor.example"], false).await;
    let mut x = setup(&relay.config("retry_schedule = [\"1h\"]")).await;
    let sc = start(&x, "T-2", &["gone@vendor.example", "vera@vendor.example"]).await;

    let (_, attempts, error) = wait_state(&x.s, "gone@vendor.example", "failed").await;
    assert_eq!(attempts, 1, "a permanent refusal is not retried");
    let error = error.unwrap_or_default();
    assert!(error.starts_with("550 5.1.1"), "{error}");
    wait_state(&x.s, "vera@vendor.example", "sent").await;

    let failed = x.hooks.wait_event("message.failed").await;
    assert_eq!(failed["recipient"], "gone@vendor.example");
    assert_eq!(failed["reason"], "delivery");
    assert_eq!(failed["attempts"], 1);
    let sent = x.hooks.wait_event("message.sent").await;
    assert_eq!(sent["recipient"], "vera@vendor.example");

    let act = activity(&x, "T-2").await;
    assert!(
        act.contains(&format!(
            "gone@vendor.example could not be reached: {error}"
        )),
        "{act:?}"
    );
    // The agent's email reaches the relay.
    let (_, email) = wait_for("the agent's email at the relay", || async {
        relay.accepted().into_iter().find(|(r, _)| r == AGENT)
    })
    .await;
    assert_failure_notice(&email, "gone@vendor.example", "550 5.1.1", sc);
    assert_eq!(queued_events(&x.s, "message.failed").await, 1);
    x.s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_who_turned_notifications_off_gets_no_email() {
    let relay = Relay::start(&["gone@vendor.example"], false).await;
    let mut x = setup(&relay.config("retry_schedule = [\"1h\"]")).await;
    let (st, v) = api_call(
        &x.s,
        "PUT",
        "/api/me",
        &x.token,
        Some(json!({"notifications": "off"})),
    )
    .await;
    assert!(st.is_success(), "{v}");
    start(&x, "T-3", &["gone@vendor.example"]).await;
    wait_state(&x.s, "gone@vendor.example", "failed").await;
    x.hooks.wait_event("message.failed").await;
    let act = activity(&x, "T-3").await;
    assert!(
        act.iter()
            .any(|a| a.starts_with("gone@vendor.example could not be reached: 550")),
        "{act:?}"
    );
    assert!(notifications(&x.s).await.is_empty());
    x.s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_sent_fires_once_after_delivery_not_before() {
    let relay = Relay::start(&[], true).await;
    let mut x = setup(&relay.config("")).await;
    let sc = start(&x, "T-4", &["vera@vendor.example", "otto@vendor.example"]).await;

    // Both copies are at the relay, which has not answered DATA yet.
    wait_until("both messages held at the relay", || async {
        relay.held() == 2
    })
    .await;
    assert_eq!(state_of(&x.s, "vera@vendor.example").await.0, "sending");
    assert_eq!(
        queued_events(&x.s, "message.sent").await,
        0,
        "nothing is sent yet"
    );
    // The start itself was reported.
    x.hooks.wait_event("side_conversation.started").await;
    assert!(x.hooks.events("message.sent").is_empty());

    relay.release();
    wait_state(&x.s, "vera@vendor.example", "sent").await;
    wait_state(&x.s, "otto@vendor.example", "sent").await;
    let sent = x.hooks.wait_event("message.sent").await;
    assert_eq!(sent["side_conversation_id"], sc);
    assert_eq!(sent["parent"], "T-4");
    let first = sent["recipient"].as_str().unwrap_or_default().to_string();
    assert!(
        ["vera@vendor.example", "otto@vendor.example"].contains(&first.as_str()),
        "{sent}"
    );
    assert!(
        sent["sent_at"]
            .as_str()
            .and_then(backchannel::model::parse_rfc3339)
            .is_some(),
        "{sent}"
    );
    let delivery = sent["delivery"].as_array().expect("delivery");
    assert_eq!(delivery.len(), 2);
    assert!(
        delivery
            .iter()
            .any(|d| d["recipient"] == first.as_str() && d["state"] == "sent"),
        "{sent}"
    );
    assert_eq!(
        sent["message"]["to"],
        json!(["vera@vendor.example", "otto@vendor.example"])
    );
    // Once per message, however many recipients.
    assert_eq!(queued_events(&x.s, "message.sent").await, 1);
    assert!(x.hooks.events("message.failed").is_empty());

    // A follow-up follows the same rule.
    relay.release();
    let (st, v) = api_call(
        &x.s,
        "POST",
        &format!("/api/side-conversations/{sc}/messages"),
        &x.token,
        Some(json!({"body_text": "Any news?"})),
    )
    .await;
    assert!(st.is_success(), "{v}");
    wait_until("the follow-up's message.sent", || async {
        queued_events(&x.s, "message.sent").await == 2
    })
    .await;
    x.s.shutdown().await;
}

/// A DSN for `recipient` with a fresh Message-ID.
fn dsn(recipient: &str, verp: &str) -> String {
    format!(
        "From: Mail Delivery System <MAILER-DAEMON@mx.vendor.example>\n\
To: bounce+{verp}@gw.example.com\n\
Subject: Undelivered Mail Returned to Sender\n\
Message-ID: <{}@mx.vendor.example>\n\
MIME-Version: 1.0\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\n\
\n\
--B\n\
Content-Type: text/plain\n\
\n\
Your message could not be delivered.\n\
--B\n\
Content-Type: message/delivery-status\n\
\n\
Reporting-MTA: dns; mx.vendor.example\n\
\n\
Final-Recipient: rfc822; {recipient}\n\
Action: failed\n\
Status: 5.1.1\n\
Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: mailbox closed\n\
--B--\n",
        backchannel::model::Token::generate()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounce_to_the_verp_address_tells_the_agent_once() {
    // Maildir (the default mode): delivered at once.
    let mut x = setup(WEBHOOKS).await;
    let sc = start(&x, "T-5", &["vera@vendor.example"]).await;
    wait_state(&x.s, "vera@vendor.example", "sent").await;
    x.hooks.wait_event("message.sent").await;
    let verp: String =
        x.s.query("SELECT verp_key FROM outbox WHERE recipient = 'vera@vendor.example'")
            .await;

    let bounce = format!("bounce+{verp}@gw.example.com");
    let r = smtp_send(x.s.smtp, "", &[&bounce], &dsn("vera@vendor.example", &verp)).await;
    assert!(r.starts_with("250"), "{r}");
    x.s.wait_ingested().await;

    let (state, _, error) = state_of(&x.s, "vera@vendor.example").await;
    assert_eq!(state, "bounced");
    let diagnostic = error.unwrap_or_default();
    assert!(diagnostic.contains("5.1.1"), "{diagnostic}");
    let bounced = x.hooks.wait_event("message.bounced").await;
    assert_eq!(bounced["recipient"], "vera@vendor.example");
    assert_eq!(bounced["side_conversation_id"], sc);
    assert!(
        bounced["at"]
            .as_str()
            .and_then(backchannel::model::parse_rfc3339)
            .is_some(),
        "{bounced}"
    );
    let failed = x.hooks.wait_event("message.failed").await;
    assert_eq!(failed["reason"], "bounce");
    assert_eq!(failed["recipient"], "vera@vendor.example");
    assert_eq!(failed["diagnostic"].as_str(), Some(diagnostic.as_str()));

    let act = activity(&x, "T-5").await;
    let entry = format!("vera@vendor.example could not be reached: {diagnostic}");
    assert!(act.contains(&entry), "{act:?}");
    // The agent's email is written to the Maildir.
    let maildir = x.s.dir.path().join("data/sent/new");
    let email = wait_for("the agent's email in the Maildir", || async {
        std::fs::read_dir(&maildir).ok()?.find_map(|f| {
            let text = std::fs::read_to_string(f.ok()?.path()).ok()?;
            text.contains("Could not reach").then_some(text)
        })
    })
    .await;
    assert_failure_notice(&email, "vera@vendor.example", "5.1.1", sc);

    // Another report for the same delivery changes nothing and tells nobody.
    let r = smtp_send(x.s.smtp, "", &[&bounce], &dsn("vera@vendor.example", &verp)).await;
    assert!(r.starts_with("250"), "{r}");
    x.s.wait_ingested().await;
    assert_eq!(
        x.s.query::<i64>("SELECT COUNT(*) FROM messages WHERE kind = 'bounce'")
            .await,
        2,
        "both reports are kept"
    );
    let act = activity(&x, "T-5").await;
    assert_eq!(act.iter().filter(|a| **a == entry).count(), 1, "{act:?}");
    assert_eq!(notifications(&x.s).await.len(), 1);
    assert_eq!(queued_events(&x.s, "message.bounced").await, 1);
    assert_eq!(queued_events(&x.s, "message.failed").await, 1);
    x.s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounce_for_a_delivery_already_failed_tells_nobody_again() {
    let relay = Relay::start(&["gone@vendor.example"], false).await;
    let mut x = setup(&relay.config("retry_schedule = [\"1h\"]")).await;
    start(&x, "T-6", &["gone@vendor.example"]).await;
    wait_state(&x.s, "gone@vendor.example", "failed").await;
    x.hooks.wait_event("message.failed").await;
    let verp: String =
        x.s.query("SELECT verp_key FROM outbox WHERE recipient = 'gone@vendor.example'")
            .await;
    let bounce = format!("bounce+{verp}@gw.example.com");
    let r = smtp_send(x.s.smtp, "", &[&bounce], &dsn("gone@vendor.example", &verp)).await;
    assert!(r.starts_with("250"), "{r}");
    x.s.wait_ingested().await;
    assert_eq!(state_of(&x.s, "gone@vendor.example").await.0, "failed");
    assert_eq!(notifications(&x.s).await.len(), 1);
    assert_eq!(queued_events(&x.s, "message.failed").await, 1);
    assert_eq!(queued_events(&x.s, "message.bounced").await, 0);
    let act = activity(&x, "T-6").await;
    assert_eq!(
        act.iter()
            .filter(|a| a.contains("could not be reached"))
            .count(),
        1,
        "{act:?}"
    );
    x.s.shutdown().await;
}
