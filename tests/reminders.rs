//! Reminders (SPEC §15) with a controlled clock, never a sleep: a side
//! conversation waiting on the vendor past its `remind_after` reminds its
//! agent once (activity entry and a line in the batched notification
//! email; none for an agent who turned notifications off), optionally
//! nudges the vendor once; a vendor reply, closing or `off` stop it; the
//! workspace default applies to new ones; the scheduler reads its injected
//! clock.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use backchannel::model::{Role, now_ms};
use common::{TestServer, api_call as call, make_user as user, smtp_send, wait_until};
use reqwest::StatusCode;
use serde_json::{Value, json};

const MIN: i64 = 60_000;
const DAY: i64 = 86_400_000;

async fn start(s: &TestServer, token: &str, parent: &str, extra: Value) -> Value {
    let mut body = json!({"to": ["vera@carrier.example"], "subject": format!("About {parent}"), "body_text": "Where is it?"});
    for (k, v) in extra.as_object().expect("object") {
        body[k] = v.clone();
    }
    let (st, sc) = call(
        s,
        "POST",
        &format!("/api/parents/{parent}/side-conversations"),
        token,
        Some(body),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{sc}");
    sc
}

async fn activity(s: &TestServer, token: &str, parent: &str) -> Vec<String> {
    let (st, v) = call(
        s,
        "GET",
        &format!("/api/parents/{parent}/activity"),
        token,
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|a| a["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

async fn reminders_of(s: &TestServer, token: &str, parent: &str) -> Vec<String> {
    activity(s, token, parent)
        .await
        .into_iter()
        .filter(|t| t.starts_with("No reply from"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_fire_after_their_time_and_not_after_a_reply() {
    let mut s = TestServer::start_with("", "").await;
    let admin = user(&s, "ada@acme.com", "Ada", Role::Admin).await;
    let mo = user(&s, "mo@acme.com", "Mo", Role::Member).await;

    // The workspace default, read back as set; bad values refused.
    let (st, v) = call(
        &s,
        "PUT",
        "/api/settings",
        &admin,
        Some(json!({"remind_after": "2d"})),
    )
    .await;
    assert_eq!(
        (st, &v["remind_after"]),
        (StatusCode::OK, &json!("2d")),
        "{v}"
    );
    let (st, v) = call(
        &s,
        "PUT",
        "/api/settings",
        &admin,
        Some(json!({"remind_after": "soon"})),
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["field"], "remind_after");

    let t0 = now_ms();
    let a = start(&s, &mo, "T-A", json!({})).await;
    assert_eq!(
        (&a["remind_after"], &a["nudge_vendor"]),
        (&json!("2d"), &json!(false))
    );
    let b = start(
        &s,
        &mo,
        "T-B",
        json!({"remind_after": "1d", "nudge_vendor": true}),
    )
    .await;
    let c = start(&s, &mo, "T-C", json!({"remind_after": null})).await;
    assert_eq!(c["remind_after"], Value::Null);
    let d = start(&s, &mo, "T-D", json!({})).await;
    let e = start(&s, &mo, "T-E", json!({})).await;
    let (st, v) = call(
        &s,
        "POST",
        "/api/parents/T-F/side-conversations",
        &mo,
        Some(json!({"to": ["vera@carrier.example"], "subject": "x", "body_text": "x", "remind_after": "2 days"})),
    )
    .await;
    assert_eq!(
        (st, &v["error"]["field"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("remind_after"))
    );

    // D's vendor answers; E is closed: neither is reminded.
    let rcpt = format!(
        "reply+{}@gw.example.com",
        d["token"].as_str().expect("token")
    );
    let mail = format!(
        "From: Vera <vera@carrier.example>\nTo: {rcpt}\nSubject: Re\nMessage-ID: <d1@carrier.example>\n\nOn it.\n"
    );
    assert!(
        smtp_send(s.smtp, "vera@carrier.example", &[&rcpt], &mail)
            .await
            .starts_with("250")
    );
    s.wait_ingested().await;
    let (st, _) = call(
        &s,
        "POST",
        &format!("/api/side-conversations/{}/close", e["id"]),
        &mo,
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);

    // Not yet: a minute before B's day.
    assert_eq!(
        s.conversations
            .remind_due(t0 + DAY - MIN)
            .await
            .expect("pass"),
        0
    );
    assert!(reminders_of(&s, &mo, "T-B").await.is_empty());
    // After B's day: B alone, its vendor nudged once.
    assert_eq!(
        s.conversations
            .remind_due(t0 + DAY + MIN)
            .await
            .expect("pass"),
        1
    );
    assert_eq!(
        reminders_of(&s, &mo, "T-B").await,
        vec!["No reply from vera@carrier.example for 1 day".to_string()]
    );
    let (_, thread) = call(
        &s,
        "GET",
        &format!("/api/side-conversations/{}", b["id"]),
        &mo,
        None,
    )
    .await;
    let msgs = thread["messages"].as_array().expect("messages");
    assert_eq!(msgs.len(), 2, "{thread}");
    assert!(
        msgs[1]["text"]
            .as_str()
            .unwrap_or_default()
            .contains("Following up on \"About T-B\""),
        "{thread}"
    );
    assert_eq!(msgs[1]["to"][0]["email"], "vera@carrier.example");
    // After the default's two days: A; B is not reminded again (nor of its
    // nudge), C is off, D was answered, E closed.
    assert_eq!(
        s.conversations
            .remind_due(t0 + 2 * DAY + MIN)
            .await
            .expect("pass"),
        1
    );
    assert_eq!(
        reminders_of(&s, &mo, "T-A").await,
        vec!["No reply from vera@carrier.example for 2 days".to_string()]
    );
    assert_eq!(
        s.conversations
            .remind_due(t0 + 9 * DAY)
            .await
            .expect("pass"),
        0,
        "once each"
    );
    for p in ["T-C", "T-D", "T-E"] {
        assert!(reminders_of(&s, &mo, p).await.is_empty(), "{p}");
    }
    assert_eq!(reminders_of(&s, &mo, "T-B").await.len(), 1);

    // The agent's notification email lists both reminders (one batch).
    let config = s.conversations.config.clone();
    let sent = s
        .store
        .write(move |db| backchannel::notifications::send_due(db, &config, t0 + 10 * DAY))
        .await
        .expect("send");
    assert_eq!(sent, 1);
    let text: String = s
        .query(
            "SELECT text_body FROM messages WHERE kind = 'notification' ORDER BY id DESC LIMIT 1",
        )
        .await;
    assert!(text.contains("Reminder: No reply from vera@carrier.example for 1 day, in the side conversation \"About T-B\""), "{text}");
    assert!(text.contains("Reminder: No reply from vera@carrier.example for 2 days, in the side conversation \"About T-A\""), "{text}");
    let to: String = s
        .query("SELECT recipient FROM outbox o JOIN messages m ON m.id = o.message_id WHERE m.kind = 'notification' ORDER BY o.id DESC LIMIT 1")
        .await;
    assert_eq!(to, "mo@acme.com");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_opt_out_and_the_scheduler_clock() {
    let mut s = TestServer::start_with("", "").await;
    let mo = user(&s, "mo@acme.com", "Mo", Role::Member).await;
    let quiet = user(&s, "qu@acme.com", "Quinn", Role::Member).await;
    let (st, _) = call(
        &s,
        "PUT",
        "/api/me",
        &quiet,
        Some(json!({"notifications": "off"})),
    )
    .await;
    assert_eq!(st, StatusCode::OK);

    let t0 = now_ms();
    let a = start(&s, &quiet, "T-Q", json!({})).await;
    assert_eq!(a["remind_after"], Value::Null, "no workspace default");
    let path = format!("/api/side-conversations/{}", a["id"]);
    for (bad, status) in [
        (
            json!({"remind_after": "tomorrow"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({"remind_after": 3}), StatusCode::BAD_REQUEST),
        (json!({"nudge_vendor": "yes"}), StatusCode::BAD_REQUEST),
    ] {
        let (st, v) = call(&s, "PATCH", &path, &quiet, Some(bad)).await;
        assert_eq!(st, status, "{v}");
    }
    let (st, v) = call(
        &s,
        "PATCH",
        &path,
        &quiet,
        Some(json!({"remind_after": "3h"})),
    )
    .await;
    assert_eq!(
        (st, &v["remind_after"]),
        (StatusCode::OK, &json!("3h")),
        "{v}"
    );

    // The scheduler reads its injected clock: nothing until the test moves
    // it past three hours.
    let clock = Arc::new(AtomicI64::new(t0));
    let read = clock.clone();
    let (stop, shutdown) = backchannel::shutdown::Shutdown::new();
    let task = tokio::spawn(backchannel::app::reminder_scheduler(
        s.conversations.clone(),
        Arc::new(move || read.load(Ordering::SeqCst)),
        std::time::Duration::from_millis(10),
        shutdown,
    ));
    clock.store(t0 + 3 * 3_600_000 + MIN, Ordering::SeqCst);
    wait_until("the scheduler's reminder", || async {
        !reminders_of(&s, &mo, "T-Q").await.is_empty()
    })
    .await;
    assert_eq!(
        reminders_of(&s, &mo, "T-Q").await,
        vec!["No reply from vera@carrier.example for 3 hours".to_string()]
    );
    stop.send(true).expect("stop the scheduler");
    task.await.expect("join").expect("scheduler");
    // Quinn turned notifications off: the activity entry, no email queued.
    let queued: i64 = s
        .query("SELECT count(*) FROM notification_queue WHERE reminder IS NOT NULL")
        .await;
    assert_eq!(queued, 0);

    // `off` stops reminders of a later agent message.
    let b = start(&s, &mo, "T-R", json!({"remind_after": "1h"})).await;
    let (st, v) = call(
        &s,
        "PATCH",
        &format!("/api/side-conversations/{}", b["id"]),
        &mo,
        Some(json!({"remind_after": "off"})),
    )
    .await;
    assert_eq!((st, &v["remind_after"]), (StatusCode::OK, &Value::Null));
    assert_eq!(
        s.conversations
            .remind_due(t0 + 5 * DAY)
            .await
            .expect("pass"),
        0
    );

    // The workspace default from the console's settings page.
    let admin = user(&s, "ada@acme.com", "Ada", Role::Admin).await;
    let browser = common::console::sign_in(&s, "ada@acme.com").await;
    let (st, _, body) = browser
        .post(
            "/app/admin/settings",
            &[("csrf", &browser.csrf), ("remind_after", "later")],
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("remind_after"), "{body}");
    let (st, _, _) = browser
        .post(
            "/app/admin/settings",
            &[("csrf", &browser.csrf), ("remind_after", "3d")],
        )
        .await;
    assert_eq!(st, StatusCode::SEE_OTHER);
    let (_, v) = call(&s, "GET", "/api/settings", &admin, None).await;
    assert_eq!(v["remind_after"], "3d");
    let (_, page) = browser.get("/app/admin/settings").await;
    assert!(
        page.contains("name=\"remind_after\" value=\"3d\""),
        "{page}"
    );
    s.shutdown().await;
}
