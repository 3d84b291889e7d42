//! Reply notifications over real SMTP and HTTP: a vendor reply notifies the
//! right agent once (nobody with notifications off, nobody for an
//! auto-reply), replies within the window share one email, and a
//! notification that comes back into the gateway loops nowhere.

mod common;

use std::time::Duration;

use common::{TestServer, api_call, make_user, smtp_send};

async fn call(s: &TestServer, method: &str, path: &str, token: &str, body: Option<Value>) -> Value {
    api_call(s, method, path, token, body).await.1
}

use serde_json::{Value, json};

const CONFIG: &str = "[notifications]\nbatch_window = \"2s\"\n";

/// Delivered notification files for `rcpt` (maildir).
fn notifications_to(s: &TestServer, rcpt: &str) -> Vec<String> {
    std::fs::read_dir(s.dir.path().join("data/sent/new"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter(|t| {
            t.contains(&format!("Delivered-To: {rcpt}"))
                && t.contains("X-Backchannel-Notification:")
        })
        .collect()
}

async fn wait_notifications(s: &TestServer, rcpt: &str, n: usize) -> Vec<String> {
    common::wait_for(&format!("{n} notification(s) to {rcpt}"), || async {
        let got = notifications_to(s, rcpt);
        (got.len() >= n).then_some(got)
    })
    .await
}

/// Lets more than one batch window pass with the worker running.
async fn settle(s: &TestServer) {
    s.wait_ingested().await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
}

fn reply(token: &str, from: &str, id: &str, extra: &str, body: &str) -> String {
    format!(
        "From: Vera <{from}>\nTo: reply+{token}@gw.example.com\nSubject: Re: Pallet\nMessage-ID: <{id}@carrier.example>\n{extra}\n{body}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_notification_to_the_assignee_and_none_for_auto_replies() {
    let mut s = TestServer::start_with("", CONFIG).await;
    let ann = make_user(&s, "ann@acme.com", "Ann", backchannel::model::Role::Member).await;
    make_user(&s, "bob@acme.com", "Bob", backchannel::model::Role::Member).await;
    call(
        &s,
        "PUT",
        "/api/parents/T-1",
        &ann,
        Some(json!({"assignee": "bob@acme.com"})),
    )
    .await;
    let sc = call(
        &s,
        "POST",
        "/api/parents/T-1/side-conversations",
        &ann,
        Some(json!({"to": ["vera@carrier.example"], "subject": "Pallet", "body_text": "?"})),
    )
    .await;
    let token = sc["token"].as_str().expect("token").to_string();
    let rcpt = format!("reply+{token}@gw.example.com");

    smtp_send(
        s.smtp,
        "vera@carrier.example",
        &[&rcpt],
        &reply(
            &token,
            "vera@carrier.example",
            "r1",
            "",
            "Monday.\n\nOn Mon, Ann wrote:\n> ?",
        ),
    )
    .await;
    let got = wait_notifications(&s, "bob@acme.com", 1).await;
    let n = &got[0];
    assert!(n.contains("Auto-Submitted: auto-generated"), "{n}");
    assert!(n.contains("Subject: [T-1] Vera replied: Pallet"), "{n}");
    assert!(n.contains("  Monday."), "the visible reply: {n}");
    assert!(!n.contains("> ?"), "not the quoted history: {n}");
    assert!(
        n.contains(&format!(
            "http://127.0.0.1:8080/app/side-conversations/{}",
            sc["id"]
        )),
        "{n}"
    );

    // An auto-reply notifies nobody.
    smtp_send(
        s.smtp,
        "vera@carrier.example",
        &[&rcpt],
        &reply(
            &token,
            "vera@carrier.example",
            "ooo",
            "Auto-Submitted: auto-replied",
            "I am out of the office.",
        ),
    )
    .await;
    settle(&s).await;
    assert_eq!(notifications_to(&s, "bob@acme.com").len(), 1, "still one");
    assert!(
        notifications_to(&s, "ann@acme.com").is_empty(),
        "the assignee is notified, not the starter"
    );

    // The notification coming back into the gateway (an agent's auto-reply
    // quoting it, or the notification forwarded) threads nowhere.
    let body: String = n
        .lines()
        .skip_while(|l| l.starts_with("Return-Path:") || l.starts_with("Delivered-To:"))
        .collect::<Vec<_>>()
        .join("\n");
    let before: i64 = s
        .query(&format!(
            "SELECT COUNT(*) FROM messages WHERE side_conversation_id = {}",
            sc["id"]
        ))
        .await;
    smtp_send(s.smtp, "bob@acme.com", &["reply@gw.example.com"], &body).await;
    let notify_id = body
        .lines()
        .find_map(|l| {
            l.strip_prefix("Message-ID: <")
                .and_then(|r| r.strip_suffix('>'))
        })
        .expect("notification id")
        .to_string();
    let ooo = format!(
        "From: Bob <bob@acme.com>\nTo: reply@gw.example.com\nSubject: Automatic reply: [T-1]\nIn-Reply-To: <{notify_id}>\nMessage-ID: <bob-ooo@acme.com>\n\nAway.\n"
    );
    smtp_send(s.smtp, "bob@acme.com", &["reply@gw.example.com"], &ooo).await;
    settle(&s).await;
    let after: i64 = s
        .query(&format!(
            "SELECT COUNT(*) FROM messages WHERE side_conversation_id = {}",
            sc["id"]
        ))
        .await;
    assert_eq!(before, after, "nothing threaded");
    let looped: i64 = s
        .query("SELECT COUNT(*) FROM messages WHERE direction = 'in' AND side_conversation_id IS NULL AND kind = 'auto_reply' AND route = 'unrouted'")
        .await;
    assert_eq!(looped, 2);
    assert_eq!(
        notifications_to(&s, "bob@acme.com").len(),
        1,
        "no notification about a notification"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_within_the_window_share_one_notification_and_off_means_off() {
    let mut s = TestServer::start_with("", CONFIG).await;
    let ann = make_user(&s, "ann@acme.com", "Ann", backchannel::model::Role::Member).await;
    let sc = call(
        &s,
        "POST",
        "/api/parents/T-2/side-conversations",
        &ann,
        Some(json!({"to": ["vera@carrier.example"], "subject": "Invoice", "body_text": "?"})),
    )
    .await;
    let token = sc["token"].as_str().expect("token").to_string();
    let rcpt = format!("reply+{token}@gw.example.com");
    // Nobody is assigned: the agent who started it is notified.
    for (i, text) in ["First answer.", "Second answer.", "Third answer."]
        .iter()
        .enumerate()
    {
        smtp_send(
            s.smtp,
            "vera@carrier.example",
            &[&rcpt],
            &reply(&token, "vera@carrier.example", &format!("b{i}"), "", text),
        )
        .await;
    }
    let got = wait_notifications(&s, "ann@acme.com", 1).await;
    settle(&s).await;
    let got_after = notifications_to(&s, "ann@acme.com");
    assert_eq!(got_after.len(), 1, "one email for three replies");
    let n = &got[0];
    assert!(n.contains("Subject: [T-2] 3 new replies"), "{n}");
    for text in ["First answer.", "Second answer.", "Third answer."] {
        assert!(n.contains(text), "{text} listed: {n}");
    }

    // Turned off: no more notifications.
    call(
        &s,
        "PUT",
        "/api/me",
        &ann,
        Some(json!({"notifications": "off"})),
    )
    .await;
    smtp_send(
        s.smtp,
        "vera@carrier.example",
        &[&rcpt],
        &reply(&token, "vera@carrier.example", "late", "", "Fourth."),
    )
    .await;
    settle(&s).await;
    assert_eq!(notifications_to(&s, "ann@acme.com").len(), 1);
    s.shutdown().await;
}
