//! Small things a user trips on (issue #22, SPEC §6/§7), each from the
//! outside: unknown query parameters, RFC 3339 times in the webhook log and
//! payloads, settings that merge and validate like templates, one signature
//! separator, editing a sender in place, the author's own mail read.

mod common;

use backchannel::model::Role;
use common::{TestServer, api_call, make_user, wait_for};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

fn is_rfc3339(v: &Value) -> bool {
    v.as_str()
        .and_then(backchannel::model::parse_rfc3339)
        .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_query_parameter_is_a_400_naming_it() {
    let s = TestServer::start("").await;
    let admin = make_user(&s, "ad@acme.com", "Ad", Role::Admin).await;
    let get = |path: &'static str| api_call(&s, "GET", path, &admin, None);

    let (st, v) = get("/api/side-conversations?statuss=open").await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], "bad_request");
    let msg = v["error"]["message"].as_str().expect("message");
    assert!(msg.contains("statuss") && msg.contains("status"), "{msg}");

    let (st, v) = get("/api/me?verbose=1").await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .expect("m")
            .contains("takes none")
    );
    let (st, v) = get("/api/users?limit=5&sort=name").await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");

    // What the operation takes still works, on every kind of route.
    let (st, v) = get("/api/side-conversations?status=open&limit=5").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = get("/api/contacts?limit=2").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = get("/api/side-conversations?").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = get("/api/side-conversations?status=open&status=closed").await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "a repeated parameter: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_times_are_rfc3339() {
    let s =
        TestServer::start_with("", "[webhooks]\nallow_destinations = [\"127.0.0.0/8\"]\n").await;
    let admin = make_user(&s, "ad@acme.com", "Ad", Role::Admin).await;
    // Nobody listens there: the delivery stays in the log, deferred.
    let closed = common::dns::closed_addr().await;
    let (st, hook) = api_call(
        &s,
        "POST",
        "/api/webhooks",
        &admin,
        Some(json!({"url": format!("http://{closed}/hook"), "secret": "k", "events": ["side_conversation.started"]})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{hook}");
    assert!(is_rfc3339(&hook["created_at"]), "{hook}");
    let (st, v) = api_call(
        &s,
        "POST",
        "/api/parents/T-1/side-conversations",
        &admin,
        Some(json!({"to": ["vera@vendor.example"], "subject": "S", "body_text": "b"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let path = format!("/api/webhooks/{}/deliveries", hook["id"]);
    let entry = wait_for("a delivery log entry", || async {
        let (_, v) = api_call(&s, "GET", &path, &admin, None).await;
        v["items"].as_array().and_then(|a| a.first().cloned())
    })
    .await;
    assert!(is_rfc3339(&entry["created_at"]), "{entry}");
    assert!(is_rfc3339(&entry["next_attempt_at"]), "{entry}");
    assert!(
        entry["delivered_at"].is_null() || is_rfc3339(&entry["delivered_at"]),
        "{entry}"
    );
    assert!(is_rfc3339(&entry["payload"]["created_at"]), "{entry}");
    let (_, list) = api_call(&s, "GET", "/api/webhooks", &admin, None).await;
    assert!(is_rfc3339(&list["items"][0]["created_at"]), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_merge_validate_and_sign_once() {
    let s = TestServer::start("").await;
    let admin = make_user(&s, "ad@acme.com", "Ad <Min>", Role::Admin).await;
    let put = |body: Value| api_call(&s, "PUT", "/api/settings", &admin, Some(body));

    let (st, v) = put(json!({"signature": {"text": "-- \n{{agent.name}}\nAcme", "html": "<p>{{ agent.name }}</p>"}})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    // Only the text: the HTML signature stays.
    let (st, v) = put(json!({"signature": {"text": "--\n{{agent.name}}\nAcme support"}})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["signature"]["html"], "<p>{{ agent.name }}</p>", "{v}");
    assert_eq!(v["signature"]["text"], "--\n{{agent.name}}\nAcme support");

    // Unknown placeholders are refused by name, as in templates; nothing changes.
    let (st, v) = put(json!({"signature": {"text": "{{agent.nmae}}"}})).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["field"], "signature.text", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .expect("m")
            .contains("{{agent.nmae}}")
    );
    let (st, v) = put(json!({"signature": {"html": "<b>{{parent.id}}</b>"}})).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (_, v) = api_call(&s, "GET", "/api/settings", &admin, None).await;
    assert_eq!(v["signature"]["text"], "--\n{{agent.name}}\nAcme support");

    // The sent mail carries one separator line and the escaped agent name.
    let (st, v) = api_call(
        &s,
        "POST",
        "/api/parents/T-1/side-conversations",
        &admin,
        Some(json!({"to": ["vera@vendor.example"], "subject": "S", "body_text": "Hello"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let id = v["messages"][0]["id"].as_i64().expect("id");
    let (_, m) = api_call(&s, "GET", &format!("/api/messages/{id}"), &admin, None).await;
    let text = m["text"].as_str().expect("text");
    assert_eq!(text.matches("--").count(), 1, "{text}");
    assert!(
        text.contains("Hello\n\n-- \nAd <Min>\nAcme support"),
        "{text:?}"
    );
    let html = m["html"].as_str().expect("html");
    assert!(html.contains("<p>Ad &lt;Min&gt;</p>"), "{html}");

    // `null` removes a part.
    let (st, v) = put(json!({"signature": {"html": null}})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["signature"]["html"], Value::Null, "{v}");
    assert_eq!(v["signature"]["text"], "--\n{{agent.name}}\nAcme support");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_is_edited_in_place() {
    let s = TestServer::start("").await;
    let admin = make_user(&s, "ad@acme.com", "Ad", Role::Admin).await;
    let member = make_user(&s, "mo@acme.com", "Mo", Role::Member).await;
    let (st, v) = api_call(
        &s,
        "POST",
        "/api/senders",
        &admin,
        Some(json!({"email": "support@acme.com", "name": "Acme", "signature": {"html": "<i>Acme</i>"}})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let forwarding = v["forwarding_address"].clone();
    let path = "/api/senders/support@acme.com";

    let (st, v) = api_call(
        &s,
        "PATCH",
        path,
        &admin,
        Some(json!({"name": "Acme Support", "reply_mode": "plus", "signature": {"text": "{{sender.name}}"}})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["name"], "Acme Support");
    assert_eq!(v["reply_mode"], "plus");
    assert_eq!(v["signature"]["text"], "{{sender.name}}");
    assert_eq!(v["signature"]["html"], "<i>Acme</i>", "kept: {v}");
    assert_eq!(v["forwarding_address"], forwarding, "unchanged: {v}");
    let (_, v) = api_call(&s, "GET", path, &admin, None).await;
    assert_eq!(v["name"], "Acme Support");
    let (_, audit) = api_call(&s, "GET", "/api/audit?limit=1", &admin, None).await;
    let entry = &audit["items"][0];
    assert_eq!(entry["action"], "sender.updated", "{audit}");
    assert_eq!(entry["actor"], "ad@acme.com", "{entry}");
    assert_eq!(
        entry["detail"]["changed"],
        json!(["name", "reply_mode", "signature.text"]),
        "{entry}"
    );

    for (body, status) in [
        (
            json!({"reply_mode": "sometimes"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"signature": {"text": "{{agent.nmae}}"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({"email": "other@acme.com"}), StatusCode::BAD_REQUEST),
        (json!({"name": 5}), StatusCode::BAD_REQUEST),
        (json!({"signature": ["x"]}), StatusCode::BAD_REQUEST),
    ] {
        let (st, v) = api_call(&s, "PATCH", path, &admin, Some(body.clone())).await;
        assert_eq!(st, status, "{body}: {v}");
        assert!(v["error"]["code"].is_string(), "{v}");
    }
    let (_, v) = api_call(&s, "GET", path, &admin, None).await;
    assert_eq!(
        v["reply_mode"], "plus",
        "a refused edit changes nothing: {v}"
    );
    let (st, _) = api_call(&s, "PATCH", path, &member, Some(json!({"name": "x"}))).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, v) = api_call(
        &s,
        "PATCH",
        "/api/senders/nobody@acme.com",
        &admin,
        Some(json!({"name": "x"})),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_author_has_read_their_own_message() {
    let s = TestServer::start("").await;
    let ann = make_user(&s, "ann@acme.com", "Ann", Role::Member).await;
    let bob = make_user(&s, "bob@acme.com", "Bob", Role::Member).await;
    let (st, v) = api_call(
        &s,
        "POST",
        "/api/parents/T-7/side-conversations",
        &ann,
        Some(json!({"to": ["vera@vendor.example"], "subject": "S", "body_text": "b"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");

    let flags_of = |who: &'static str, token: String| {
        let addr = s.imap;
        async move {
            let stream = tokio::net::TcpStream::connect(addr).await.expect("imap");
            let mut io = tokio::io::BufReader::new(stream);
            let mut greeting = String::new();
            io.read_line(&mut greeting).await.expect("greeting");
            let r = common::imap_cmd(&mut io, "a", &format!("LOGIN {who} {token}")).await;
            assert!(r.last().is_some_and(|l| l.starts_with("a OK")), "{r:?}");
            let r = common::imap_cmd(&mut io, "b", "SELECT Tickets/T-7").await;
            assert!(r.last().is_some_and(|l| l.starts_with("b OK")), "{r:?}");
            let r = common::imap_cmd(&mut io, "c", "FETCH 1 (FLAGS)").await;
            common::imap_cmd(&mut io, "d", "LOGOUT").await;
            r.into_iter()
                .find(|l| l.starts_with("* 1 FETCH"))
                .expect("a FETCH line")
        }
    };
    let own = flags_of("ann@acme.com", ann.clone()).await;
    assert!(own.contains("\\Seen"), "{own}");
    let other = flags_of("bob@acme.com", bob.clone()).await;
    assert!(!other.contains("\\Seen"), "{other}");

    // JMAP says the same: $seen for the author only.
    let seen = |token: String| {
        let http = s.http;
        async move {
            let body = json!({
                "using": ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"],
                "methodCalls": [
                    ["Email/query", {"accountId": "a1"}, "q"],
                    ["Email/get", {"accountId": "a1", "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"}, "properties": ["keywords"]}, "g"]
                ]
            });
            let v: Value = reqwest::Client::new()
                .post(format!("http://{http}/jmap"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .expect("jmap")
                .json()
                .await
                .expect("json");
            v["methodResponses"][1][1]["list"][0]["keywords"]["$seen"] == json!(true)
        }
    };
    assert!(seen(ann).await);
    assert!(!seen(bob).await);
}
