//! Waiting on the vendor and tags (SPEC §15), from the outside: threads
//! started over the API and answered over SMTP wait on the vendor, then on
//! an agent; an auto-reply changes nothing; closing clears it; the list
//! filters by whom it waits on, how long, and tag, longest waiting first;
//! tags come from start, PATCH and templates, and ride in webhook payloads.

mod common;

use backchannel::model::Role;
use common::{TestServer, api_call as call, make_user as user, smtp_send};
use reqwest::StatusCode;
use serde_json::{Value, json};

const DAY_MS: i64 = 86_400_000;

async fn start(s: &TestServer, token: &str, parent: &str, body: Value) -> Value {
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

async fn vendor_mail(s: &TestServer, sc: &Value, from: &str, id: &str, extra: &str) {
    let rcpt = format!(
        "reply+{}@gw.example.com",
        sc["token"].as_str().expect("token")
    );
    let mail = format!(
        "From: Vera <{from}>\nTo: {rcpt}\nSubject: Re: x\nMessage-ID: <{id}@carrier.example>\n{extra}\nThanks, on it.\n"
    );
    let r = smtp_send(s.smtp, from, &[&rcpt], &mail).await;
    assert!(r.starts_with("250"), "{r}");
    s.wait_ingested().await;
}

async fn get(s: &TestServer, token: &str, path: &str) -> Value {
    let (st, v) = call(s, "GET", path, token, None).await;
    assert_eq!(st, StatusCode::OK, "{path}: {v}");
    v
}

fn ids(list: &Value) -> Vec<i64> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["id"].as_i64().expect("id"))
        .collect()
}

/// Moves a message's received time `days` into the past, as if it had
/// been sent then.
async fn age_message(s: &TestServer, message: i64, days: i64) {
    s.sql
        .write(move |c| {
            c.execute(
                "UPDATE messages SET received_at = received_at - ?2 WHERE id = ?1",
                rusqlite::params![message, days * DAY_MS],
            )?;
            Ok(())
        })
        .await
        .expect("age");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_follows_the_conversation_and_filters_the_list() {
    let mut s = TestServer::start_with("", "").await;
    let mo = user(&s, "mo@acme.com", "Mo Member", Role::Member).await;

    let a = start(
        &s,
        &mo,
        "T-1",
        json!({"to": ["vera@carrier.example"], "subject": "Pallet", "body_text": "Where is it?"}),
    )
    .await;
    let b = start(
        &s,
        &mo,
        "T-2",
        json!({"to": ["vera@carrier.example"], "subject": "Invoice", "body_text": "Please resend."}),
    )
    .await;
    let (a_id, b_id) = (a["id"].as_i64().expect("id"), b["id"].as_i64().expect("id"));
    // An agent's message makes it wait on the vendor, since that message.
    assert_eq!(a["waiting"], "vendor", "{a}");
    assert_eq!(a["waiting_since"], a["messages"][0]["received_at"]);

    // An auto-reply does not count as the vendor answering.
    vendor_mail(
        &s,
        &a,
        "vera@carrier.example",
        "ooo1",
        "Auto-Submitted: auto-replied\n",
    )
    .await;
    let v = get(&s, &mo, &format!("/api/side-conversations/{a_id}")).await;
    assert_eq!(v["messages"][1]["kind"], "auto_reply", "{v}");
    assert_eq!(v["waiting"], "vendor");

    // A vendor reply makes it wait on the agent, since the reply.
    vendor_mail(&s, &a, "vera@carrier.example", "r1", "").await;
    let v = get(&s, &mo, &format!("/api/side-conversations/{a_id}")).await;
    let reply = &v["messages"][2];
    assert_eq!(reply["kind"], "reply", "{v}");
    assert_eq!(
        (&v["waiting"], &v["waiting_since"]),
        (&json!("agent"), &reply["received_at"])
    );

    let list = get(&s, &mo, "/api/side-conversations?waiting=vendor").await;
    assert_eq!(ids(&list), vec![b_id]);
    let list = get(&s, &mo, "/api/side-conversations?waiting=agent").await;
    assert_eq!(ids(&list), vec![a_id]);

    // The agent answers: it waits on the vendor again.
    let (st, _) = call(
        &s,
        "POST",
        &format!("/api/side-conversations/{a_id}/messages"),
        &mo,
        Some(json!({"body_text": "Thanks, and the date?"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED);
    let v = get(&s, &mo, &format!("/api/side-conversations/{a_id}")).await;
    assert_eq!(v["waiting"], "vendor");

    // older_than reads the time of the message it waits since; the longest
    // waiting come first.
    let a_last = v["messages"][3]["id"].as_i64().expect("id");
    let b_first = b["messages"][0]["id"].as_i64().expect("id");
    age_message(&s, a_last, 5).await;
    age_message(&s, b_first, 1).await;
    let list = get(&s, &mo, "/api/side-conversations?waiting=vendor").await;
    assert_eq!(
        ids(&list),
        vec![b_id, a_id],
        "by the waiting message's arrival"
    );
    let list = get(
        &s,
        &mo,
        "/api/side-conversations?waiting=vendor&older_than=2d",
    )
    .await;
    assert_eq!(ids(&list), vec![a_id]);
    let list = get(
        &s,
        &mo,
        "/api/side-conversations?waiting=vendor&older_than=12h",
    )
    .await;
    assert_eq!(ids(&list), vec![b_id, a_id]);
    let list = get(
        &s,
        &mo,
        "/api/side-conversations?waiting=vendor&older_than=6d",
    )
    .await;
    assert_eq!(ids(&list), Vec::<i64>::new());
    // Pages follow the same order.
    let page = get(&s, &mo, "/api/side-conversations?waiting=vendor&limit=1").await;
    assert_eq!(ids(&page), vec![b_id]);
    let next = page["next_cursor"].as_str().expect("cursor").to_string();
    let page = get(
        &s,
        &mo,
        &format!("/api/side-conversations?waiting=vendor&limit=1&cursor={next}"),
    )
    .await;
    assert_eq!(ids(&page), vec![a_id]);
    assert_eq!(page["next_cursor"], Value::Null);

    // Closing clears it.
    let (st, v) = call(
        &s,
        "POST",
        &format!("/api/side-conversations/{b_id}/close"),
        &mo,
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        (&v["waiting"], &v["waiting_since"]),
        (&Value::Null, &Value::Null)
    );
    let list = get(&s, &mo, "/api/side-conversations?waiting=vendor").await;
    assert_eq!(ids(&list), vec![a_id]);

    // Bad filters are a 400 naming the parameter.
    for bad in [
        "waiting=someone",
        "waiting=vendor&older_than=2",
        "waiting=vendor&older_than=-2d",
        "waiting=vendor&older_than=2y",
        "older_than=2d",
        "waitin=vendor",
    ] {
        let (st, v) = call(
            &s,
            "GET",
            &format!("/api/side-conversations?{bad}"),
            &mo,
            None,
        )
        .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {v}");
        let message = v["error"]["message"].as_str().expect("message");
        let name = bad
            .split('&')
            .next_back()
            .and_then(|p| p.split('=').next())
            .expect("name");
        assert!(message.contains(name), "{bad}: {message}");
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_portal_reply_is_the_vendor_speaking() {
    let mut s = TestServer::start_with("", "").await;
    let mo = user(&s, "mo@acme.com", "Mo Member", Role::Member).await;
    let sc = start(
        &s,
        &mo,
        "T-3",
        json!({"to": ["vera@carrier.example", "olaf@carrier.example"], "subject": "Pallet",
               "body_text": "Where is it?", "share_portal_link": true}),
    )
    .await;
    let id = sc["id"].as_i64().expect("id");
    let url = sc["portal_links"][0]["url"].as_str().expect("portal link");
    let portal = url.rsplit('/').next().expect("portal token").to_string();
    let base = format!("http://{}", s.http);
    let page = reqwest::get(format!("{base}/p/{portal}"))
        .await
        .expect("portal page");
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.expect("html");
    let start =
        html.find("name=\"csrf\" value=\"").expect("a form") + "name=\"csrf\" value=\"".len();
    let csrf = html[start..].split('"').next().expect("csrf").to_string();
    let form = reqwest::multipart::Form::new()
        .text("csrf", csrf)
        .text("text", "It ships Monday.");
    let resp = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .post(format!("{base}/p/{portal}/reply"))
        .multipart(form)
        .send()
        .await
        .expect("portal post");
    assert!(
        resp.status().is_success() || resp.status().is_redirection(),
        "{}",
        resp.status()
    );
    let v = get(&s, &mo, &format!("/api/side-conversations/{id}")).await;
    let kinds: Vec<_> = v["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| (m["direction"].clone(), m["route"].clone()))
        .collect();
    assert!(
        kinds.contains(&(json!("out"), json!("portal"))),
        "the reply is relayed to the other vendor: {kinds:?}"
    );
    assert_eq!(v["waiting"], "agent", "{v}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_are_set_filtered_and_carried_in_webhooks() {
    let mut s =
        TestServer::start_with("", "[webhooks]\nallow_destinations = [\"127.0.0.0/8\"]\n").await;
    let admin = user(&s, "ada@acme.com", "Ada Admin", Role::Admin).await;
    let mo = user(&s, "mo@acme.com", "Mo Member", Role::Member).await;
    let viewer = user(&s, "vi@acme.com", "Vi Viewer", Role::Viewer).await;
    // Nothing listens there: the deliveries stay queued, their payloads
    // readable in the log.
    let (st, hook) = call(
        &s,
        "POST",
        "/api/webhooks",
        &admin,
        Some(json!({"url": "http://127.0.0.1:9/hook", "secret": "s3cret"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{hook}");
    let hid = hook["id"].as_i64().expect("id");

    let a = start(
        &s,
        &mo,
        "T-1",
        json!({"to": ["vera@carrier.example"], "subject": "Pallet", "body_text": "b",
               "tags": ["Billing", " urgent ", "billing"]}),
    )
    .await;
    assert_eq!(
        a["tags"],
        json!(["Billing", "urgent"]),
        "trimmed, duplicates dropped"
    );
    let a_id = a["id"].as_i64().expect("id");

    // A template sets tags when the request gives none.
    let (st, t) = call(
        &s,
        "POST",
        "/api/templates",
        &admin,
        Some(
            json!({"name": "Claim", "to": ["claims@carrier.example"], "subject": "Claim",
                    "body_text": "Claim", "tags": ["claims"]}),
        ),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{t}");
    assert_eq!(t["tags"], json!(["claims"]));
    let b = start(&s, &mo, "T-2", json!({"template": t["id"]})).await;
    assert_eq!(b["tags"], json!(["claims"]));
    let b_id = b["id"].as_i64().expect("id");
    let c = start(
        &s,
        &mo,
        "T-3",
        json!({"template": t["id"], "tags": ["other"]}),
    )
    .await;
    assert_eq!(c["tags"], json!(["other"]), "the request's tags win");

    let list = get(&s, &mo, "/api/side-conversations?tag=billing").await;
    assert_eq!(ids(&list), vec![a_id], "a tag matches whatever its case");
    let list = get(&s, &mo, "/api/side-conversations?tag=claims&waiting=vendor").await;
    assert_eq!(ids(&list), vec![b_id]);

    // PATCH replaces them; viewers may not; bad tags name the field.
    let path = format!("/api/side-conversations/{b_id}");
    let (st, v) = call(
        &s,
        "PATCH",
        &path,
        &mo,
        Some(json!({"tags": ["claims", "carrier"]})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["tags"], json!(["carrier", "claims"]));
    let (st, _) = call(&s, "PATCH", &path, &viewer, Some(json!({"tags": []}))).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    for (bad, field) in [
        (json!({"tags": [""]}), "tags[0]"),
        (json!({"tags": ["ok", "a,b"]}), "tags[1]"),
        (json!({"tags": ["x".repeat(51)]}), "tags[0]"),
        (
            json!({"tags": (0..21).map(|i| format!("t{i}")).collect::<Vec<_>>()}),
            "tags",
        ),
    ] {
        let (st, v) = call(&s, "PATCH", &path, &mo, Some(bad)).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert_eq!(v["error"]["field"], field, "{v}");
    }
    let (st, _) = call(&s, "PATCH", &path, &mo, Some(json!({"tags": "claims"}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = call(&s, "PATCH", &path, &mo, Some(json!({"colour": "red"}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = call(
        &s,
        "PATCH",
        "/api/side-conversations/999999",
        &mo,
        Some(json!({"tags": []})),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let v = get(&s, &mo, &path).await;
    assert_eq!(
        v["tags"],
        json!(["carrier", "claims"]),
        "refused patches changed nothing"
    );

    // Webhook payloads carry the tags.
    vendor_mail(&s, &b, "claims@carrier.example", "r1", "").await;
    call(
        &s,
        "POST",
        &format!("/api/side-conversations/{a_id}/close"),
        &mo,
        None,
    )
    .await;
    let log = get(
        &s,
        &admin,
        &format!("/api/webhooks/{hid}/deliveries?limit=200"),
    )
    .await;
    let payload = |event: &str| -> Value {
        log["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|d| d["event"] == event)
            .map(|d| d["payload"].clone())
            .unwrap_or_else(|| panic!("no {event} in {log}"))
    };
    let started = payload("side_conversation.started");
    assert!(started["data"]["tags"].is_array(), "{started}");
    assert_eq!(
        payload("message.received")["data"]["tags"],
        json!(["carrier", "claims"])
    );
    assert_eq!(
        payload("side_conversation.closed")["data"]["tags"],
        json!(["Billing", "urgent"])
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_lists_what_waits_on_the_vendor_and_edits_tags() {
    use common::console::sign_in;
    let mut s = TestServer::start_with("", "").await;
    let mo = user(&s, "mo@acme.com", "Mo Member", Role::Member).await;
    user(&s, "vi@acme.com", "Vi Viewer", Role::Viewer).await;
    let a = start(
        &s,
        &mo,
        "T-1",
        json!({"to": ["vera@carrier.example"], "subject": "Pallet seven", "body_text": "b"}),
    )
    .await;
    let b = start(
        &s,
        &mo,
        "T-2",
        json!({"to": ["vera@carrier.example"], "subject": "Invoice nine", "body_text": "b",
               "tags": ["billing"]}),
    )
    .await;
    let (a_id, b_id) = (a["id"].as_i64().expect("id"), b["id"].as_i64().expect("id"));
    age_message(&s, a["messages"][0]["id"].as_i64().expect("id"), 3).await;
    vendor_mail(&s, &b, "vera@carrier.example", "r1", "").await;

    let browser = sign_in(&s, "mo@acme.com").await;
    let (st, page) = browser.get("/app/?filter=vendor").await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        page.contains("Pallet seven") && !page.contains("Invoice nine"),
        "{page}"
    );
    assert!(page.contains("waiting on vendor · 3 days"), "{page}");
    let (_, page) = browser.get("/app/").await;
    assert!(
        page.contains("Invoice nine") && page.contains("waiting on us · 0 minutes"),
        "{page}"
    );
    let (_, page) = browser.get("/app/?filter=tag&tag=billing").await;
    assert!(
        page.contains("Invoice nine") && !page.contains("Pallet seven"),
        "{page}"
    );
    let (st, _) = browser.get("/app/?filter=tag").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = browser.get("/app/?filter=someone").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    // Tags from the thread page's form, checked like the API's.
    let path = format!("/app/side-conversations/{a_id}/settings");
    let (st, _, _) = browser.post(&path, &[("tags", "carrier")]).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "no CSRF token");
    let long = "x".repeat(60);
    let (st, _, body) = browser
        .post(
            &path,
            &[("csrf", &browser.csrf), ("tags", &format!("ok, {long}"))],
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("tags[1]"), "{body}");
    let (st, loc, _) = browser
        .post(
            &path,
            &[("csrf", &browser.csrf), ("tags", "carrier, Damage")],
        )
        .await;
    assert_eq!(st, StatusCode::SEE_OTHER);
    assert_eq!(loc, format!("/app/side-conversations/{a_id}?notice=saved"));
    let (_, page) = browser
        .get(&format!("/app/side-conversations/{a_id}"))
        .await;
    assert!(page.contains("on the vendor for 3 days"), "{page}");
    assert!(page.contains("value=\"carrier, Damage\""), "{page}");
    let v = get(&s, &mo, &format!("/api/side-conversations/{a_id}")).await;
    assert_eq!(v["tags"], json!(["carrier", "Damage"]));
    assert_eq!(
        v["remind_after"],
        Value::Null,
        "fields the form leaves out are kept"
    );

    // The reminder from the same form; the tags kept when not posted.
    let (st, _, body) = browser
        .post(&path, &[("csrf", &browser.csrf), ("remind_after", "soon")])
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("remind_after"), "{body}");
    let (st, _, _) = browser
        .post(
            &path,
            &[
                ("csrf", &browser.csrf),
                ("remind_after", "36h"),
                ("nudge_vendor", "false"),
                ("nudge_vendor", "true"),
            ],
        )
        .await;
    assert_eq!(st, StatusCode::SEE_OTHER);
    let v = get(&s, &mo, &format!("/api/side-conversations/{a_id}")).await;
    assert_eq!(
        (&v["remind_after"], &v["nudge_vendor"], &v["tags"]),
        (&json!("36h"), &json!(true), &json!(["carrier", "Damage"]))
    );
    let (_, page) = browser
        .get(&format!("/app/side-conversations/{a_id}"))
        .await;
    assert!(page.contains("value=\"36h\""), "{page}");
    let (st, _, _) = browser
        .post(
            &path,
            &[
                ("csrf", &browser.csrf),
                ("remind_after", ""),
                ("nudge_vendor", "false"),
            ],
        )
        .await;
    assert_eq!(st, StatusCode::SEE_OTHER);
    let v = get(&s, &mo, &format!("/api/side-conversations/{a_id}")).await;
    assert_eq!(
        (&v["remind_after"], &v["nudge_vendor"]),
        (&Value::Null, &json!(false))
    );
    let viewer = sign_in(&s, "vi@acme.com").await;
    let (st, _, _) = viewer
        .post(
            &format!("/app/side-conversations/{b_id}/settings"),
            &[("csrf", &viewer.csrf), ("tags", "x")],
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    s.shutdown().await;
}
