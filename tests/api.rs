//! The HTTP API over real HTTP against the in-process server: auth, roles,
//! every error code, parents, the side-conversation lifecycle, messages,
//! unrouted triage, users, settings, pagination, and the parent-sync rules
//! end to end with an SMTP reply.

mod common;

use common::{TestServer, smtp_send};
use reqwest::StatusCode;
use serde_json::{Value, json};

const NO_AUTH: &str = "";

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(s: &TestServer) -> Api {
        Api {
            base: format!("http://{}", s.http),
            http: reqwest::Client::new(),
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call("GET", path, Some(token), None).await
    }
    async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", path, Some(token), Some(body)).await
    }
    async fn put(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call("PUT", path, Some(token), Some(body)).await
    }
}

fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_roles_and_error_shapes() {
    use backchannel::model::Role;
    let mut s = TestServer::start_with("", NO_AUTH).await;
    let api = Api::new(&s);
    let owner = common::make_user(&s, "owner@acme.com", "Olga Owner", Role::Owner).await;
    let viewer = common::make_user(&s, "viewer@acme.com", "Vic Viewer", Role::Viewer).await;
    let member = common::make_user(&s, "member@acme.com", "Mia Member", Role::Member).await;

    let (st, v) = api.call("GET", "/api/me", None, None).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let (st, _) = api.get("/api/me", "bc_wrongtoken").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, v) = api.get("/api/me", &viewer).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        (v["email"].as_str(), v["role"].as_str()),
        (Some("viewer@acme.com"), Some("viewer"))
    );

    // Viewers read only; members cannot administer.
    let (st, v) = api
        .put("/api/parents/T-1", &viewer, json!({"subject": "x"}))
        .await;
    assert_eq!((st, error_code(&v)), (StatusCode::FORBIDDEN, "forbidden"));
    let (st, _) = api
        .post(
            "/api/users",
            &member,
            json!({"email": "x@acme.com", "name": "X"}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = api.get("/api/unrouted", &member).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = api
        .put(
            "/api/settings",
            &member,
            json!({"side_conversations_enabled": false}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);

    // 400, 404, 413, 422.
    let resp = reqwest::Client::new()
        .put(format!("{}/api/parents/T-1", api.base))
        .bearer_auth(&member)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(error_code(&v), "bad_request");
    let (st, v) = api
        .put(
            "/api/parents/T-1",
            &member,
            json!({"subject": "x", "surprise": 1}),
        )
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::BAD_REQUEST, "bad_request"),
        "{v}"
    );
    let (st, v) = api.get("/api/side-conversations/99999", &member).await;
    assert_eq!((st, error_code(&v)), (StatusCode::NOT_FOUND, "not_found"));
    let (st, _) = api.get("/api/no/such/route", &member).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, v) = api
        .put("/api/parents/T-1", &member, json!({"status": "sleeping"}))
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed")
    );
    assert_eq!(v["error"]["field"], "status");
    let big = "x".repeat(41 * 1024 * 1024);
    let (st, v) = api
        .put("/api/parents/T-1", &member, json!({"subject": big}))
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        "{v}"
    );
    let (st, v) = api.get("/api/side-conversations?limit=0", &member).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::BAD_REQUEST, "bad_request")
    );
    let (st, _) = api
        .get("/api/side-conversations?cursor=nonsense", &member)
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    // Users: the token is shown once, in the creation answer.
    let (st, v) = api
        .post(
            "/api/users",
            &owner,
            json!({"email": "new@acme.com", "name": "New", "role": "admin"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let new_token = v["token"].as_str().expect("token").to_string();
    let (st, v) = api.get("/api/me", &new_token).await;
    assert_eq!((st, v["role"].as_str()), (StatusCode::OK, Some("admin")));
    let (st, v) = api
        .post(
            "/api/users",
            &new_token,
            json!({"email": "o2@acme.com", "name": "O", "role": "owner"}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    let (st, v) = api
        .post(
            "/api/users",
            &owner,
            json!({"email": "NEW@acme.com", "name": "Dup"}),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    let (st, v) = api
        .post("/api/users", &owner, json!({"email": "bad", "name": "Dup"}))
        .await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("email"))
    );
    let (_, v) = api.get("/api/users", &owner).await;
    assert_eq!(v["items"].as_array().map(Vec::len), Some(4));
    assert!(!v.to_string().contains("bc_"), "tokens are never listed");

    // Me: notifications setting.
    let (st, v) = api
        .put("/api/me", &member, json!({"notifications": "off"}))
        .await;
    assert_eq!(
        (st, v["notifications"].as_str()),
        (StatusCode::OK, Some("off"))
    );
    let (st, _) = api
        .put("/api/me", &member, json!({"notifications": "sms"}))
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);

    // Settings.
    let (st, v) = api
        .put("/api/settings", &owner, json!({"signature": {"text": "-- {{agent.name}}", "html": "<p>{{agent.name}}</p>"}, "side_conversations_enabled": true}))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["signature"]["text"], "-- {{agent.name}}");
    let (st, v) = api
        .put(
            "/api/settings",
            &owner,
            json!({"default_sender": "unknown@acme.com"}),
        )
        .await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("default_sender"))
    );
    let (_, v) = api.get("/api/settings", &viewer).await;
    assert_eq!(v["side_conversations_enabled"], true);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_parent_sync_and_a_reply_by_smtp() {
    use backchannel::model::Role;
    let mut s = TestServer::start_with("", NO_AUTH).await;
    let api = Api::new(&s);
    let ann = common::make_user(&s, "ann@acme.com", "Ann Agent", Role::Member).await;
    common::make_user(&s, "bob@acme.com", "Bob Agent", Role::Member).await;

    let (st, v) = api
        .put(
            "/api/parents/T-500",
            &ann,
            json!({"subject": "Broken pallet", "requester": {"name": "Rita", "email": "rita@customer.example"},
                   "status": "open", "assignee": "bob@acme.com"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["assignee"], "bob@acme.com");
    let (st, _) = api
        .put(
            "/api/parents/T-500",
            &ann,
            json!({"assignee": "nobody@acme.com"}),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);

    // Start: validations, then 201 with the thread.
    let (st, v) = api
        .post(
            "/api/parents/T-500/side-conversations",
            &ann,
            json!({"to": [], "subject": "x", "body_text": "y"}),
        )
        .await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("to"))
    );
    let (st, v) = api
        .post(
            "/api/parents/T-500/side-conversations",
            &ann,
            json!({"to": ["bob@acme.com"], "subject": "x", "body_text": "y"}),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("mention them in a note instead")),
        "{v}"
    );
    let pdf = "JVBERi0xLjQ="; // %PDF-1.4
    let (st, sc) = api
        .post(
            "/api/parents/T-500/side-conversations",
            &ann,
            json!({"to": ["vera@carrier.example"], "cc": ["boss@carrier.example"], "subject": "Pallet 7",
                   "body_text": "When does it ship?", "share_portal_link": true,
                   "attachments": [{"filename": "photo.pdf", "content_type": "application/pdf", "content_base64": pdf}]}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{sc}");
    let id = sc["id"].as_i64().expect("id");
    let token = sc["token"].as_str().expect("token").to_string();
    assert_eq!(sc["reply_address"], format!("reply+{token}@gw.example.com"));
    assert_eq!(sc["status"], "open");
    assert_eq!(sc["assignee"], "bob@acme.com", "the parent's assignee");
    assert!(
        sc["portal_url"]
            .as_str()
            .is_some_and(|u| u.starts_with("http://127.0.0.1:8080/p/"))
    );
    assert_eq!(
        sc["participants"],
        json!(["vera@carrier.example", "boss@carrier.example"])
    );
    let first = &sc["messages"][0];
    assert_eq!(
        (
            first["direction"].as_str(),
            first["kind"].as_str(),
            first["route"].as_str()
        ),
        (Some("out"), Some("agent"), Some("api"))
    );
    assert_eq!(first["delivery"].as_array().map(Vec::len), Some(2));
    assert_eq!(first["delivery"][0]["state"], "queued");
    assert_eq!(first["attachments"][0]["filename"], "photo.pdf");
    let mid = first["id"].as_i64().expect("message id");

    // Raw bytes and the attachment download.
    let raw = reqwest::Client::new()
        .get(format!("{}/api/messages/{mid}/raw", api.base))
        .bearer_auth(&ann)
        .send()
        .await
        .expect("raw");
    assert_eq!(raw.headers()["content-type"], "message/rfc822");
    let raw = raw.bytes().await.expect("bytes");
    let stored: Vec<u8> = s
        .query(&format!("SELECT CASE WHEN length(m.raw) > 0 THEN m.raw ELSE (SELECT ir.raw FROM inbound_raw ir WHERE ir.id = m.inbound_id) END FROM messages m WHERE m.id = {mid}"))
        .await;
    assert_eq!(raw.to_vec(), stored);
    let att = reqwest::Client::new()
        .get(format!("{}/api/messages/{mid}/attachments/0", api.base))
        .bearer_auth(&ann)
        .send()
        .await
        .expect("attachment");
    assert_eq!(att.headers()["content-type"], "application/pdf");
    assert!(
        att.headers()["content-disposition"]
            .to_str()
            .expect("ascii")
            .contains("photo.pdf")
    );
    assert_eq!(att.bytes().await.expect("bytes").as_ref(), b"%PDF-1.4");
    let (st, _) = api
        .get(&format!("/api/messages/{mid}/attachments/9"), &ann)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // Follow-up, close, reply refused while closed, reopen.
    let (st, m) = api
        .post(
            &format!("/api/side-conversations/{id}/messages"),
            &ann,
            json!({"body_text": "Any news?"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{m}");
    assert_eq!(m["subject"], "Re: Pallet 7");
    let (st, v) = api
        .post(
            &format!("/api/side-conversations/{id}/close"),
            &ann,
            json!({}),
        )
        .await;
    assert_eq!((st, v["status"].as_str()), (StatusCode::OK, Some("closed")));
    let (st, v) = api
        .post(
            &format!("/api/side-conversations/{id}/messages"),
            &ann,
            json!({"body_text": "x"}),
        )
        .await;
    assert_eq!((st, error_code(&v)), (StatusCode::CONFLICT, "conflict"));
    let (st, _) = api
        .post(
            &format!("/api/side-conversations/{id}/close"),
            &ann,
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT);

    // The parent is snoozed; the vendor replies by SMTP: thread reopens, parent wakes.
    api.put(
        "/api/parents/T-500",
        &ann,
        json!({"status": "snoozed", "snoozed_until": "2030-01-01T00:00:00Z"}),
    )
    .await;
    let reply = format!(
        "From: Vera <vera@carrier.example>\nTo: reply+{token}@gw.example.com\nSubject: Re: Pallet 7\nMessage-ID: <v1@carrier.example>\n\nMonday.\n\nOn Tue, Ann wrote:\n> Any news?\n"
    );
    let r = smtp_send(
        s.smtp,
        "vera@carrier.example",
        &[&format!("reply+{token}@gw.example.com")],
        &reply,
    )
    .await;
    assert!(r.starts_with("250"), "{r}");
    s.wait_ingested().await;
    let (_, thread) = api
        .get(&format!("/api/side-conversations/{id}"), &ann)
        .await;
    assert_eq!(thread["status"], "open");
    let last = thread["messages"]
        .as_array()
        .and_then(|m| m.last())
        .expect("messages")
        .clone();
    assert_eq!(
        (last["direction"].as_str(), last["route"].as_str()),
        (Some("in"), Some("token"))
    );
    assert_eq!(last["visible_reply"], "Monday.");
    assert_eq!(last["from"]["email"], "vera@carrier.example");
    let (_, parent) = api.get("/api/parents/T-500", &ann).await;
    assert_eq!(parent["status"], "open");
    assert_eq!(parent["snoozed_until"], Value::Null);
    let (_, act) = api.get("/api/parents/T-500/activity", &ann).await;
    let texts: Vec<&str> = act["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|a| a["text"].as_str())
        .collect();
    assert_eq!(
        texts,
        vec![
            "Ann Agent started a side conversation with vera@carrier.example, boss@carrier.example",
            "Ann Agent replied in a side conversation",
            "Ann Agent closed a side conversation",
            "Vera replied in a side conversation",
        ]
    );

    // Closing the parent closes its side conversations.
    let (st, v) = api
        .put("/api/parents/T-500", &ann, json!({"status": "closed"}))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["side_conversations"][0]["status"], "closed");

    // Lists with filters and cursors.
    for n in 0..3 {
        api.post(
            "/api/parents/T-501/side-conversations",
            &ann,
            json!({"to": ["v@x.example"], "subject": format!("s{n}"), "body_text": "b"}),
        )
        .await;
    }
    let (_, l) = api
        .get("/api/side-conversations?parent=T-501&limit=2", &ann)
        .await;
    assert_eq!(l["items"].as_array().map(Vec::len), Some(2));
    let cursor = l["next_cursor"].as_str().expect("cursor").to_string();
    let (_, l2) = api
        .get(
            &format!("/api/side-conversations?parent=T-501&limit=2&cursor={cursor}"),
            &ann,
        )
        .await;
    assert_eq!(l2["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(l2["next_cursor"], Value::Null);
    assert_eq!(l2["items"][0]["subject"], "s2");
    let (_, closed) = api.get("/api/side-conversations?status=closed", &ann).await;
    assert_eq!(closed["items"].as_array().map(Vec::len), Some(1));
    let (_, contacts) = api.get("/api/contacts", &ann).await;
    assert_eq!(contacts["items"][0]["email"], "vera@carrier.example");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrouted_triage_moves_the_message_and_applies_the_effects() {
    use backchannel::model::Role;
    let mut s = TestServer::start_with("", NO_AUTH).await;
    let api = Api::new(&s);
    let admin = common::make_user(&s, "admin@acme.com", "Ada Admin", Role::Admin).await;
    let member = common::make_user(&s, "m@acme.com", "Mo", Role::Member).await;
    let (_, sc) = api
        .post(
            "/api/parents/T-600/side-conversations",
            &admin,
            json!({"to": ["vera@carrier.example"], "subject": "Pallet", "body_text": "b"}),
        )
        .await;
    let id = sc["id"].as_i64().expect("id");
    api.put("/api/parents/T-600", &admin, json!({"status": "snoozed"}))
        .await;
    let lost = "From: Vera <vera@carrier.example>\nTo: reply@gw.example.com\nSubject: About the pallet\nMessage-ID: <lost@carrier.example>\n\nIt shipped.\n";
    smtp_send(
        s.smtp,
        "vera@carrier.example",
        &["reply@gw.example.com"],
        lost,
    )
    .await;
    s.wait_ingested().await;
    let (st, list) = api.get("/api/unrouted", &admin).await;
    assert_eq!(st, StatusCode::OK);
    let mid = list["items"][0]["id"].as_i64().expect("unrouted id");
    assert_eq!(list["items"][0]["route"], "unrouted");
    // Members never see unrouted mail, not even by id.
    let (st, _) = api.get(&format!("/api/messages/{mid}"), &member).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, v) = api
        .post(
            &format!("/api/unrouted/{mid}/assign"),
            &admin,
            json!({"side_conversation_id": 424242}),
        )
        .await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("side_conversation_id")
        )
    );
    let (st, v) = api
        .post(
            &format!("/api/unrouted/{mid}/assign"),
            &admin,
            json!({"side_conversation_id": id}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["side_conversation_id"], id);
    let (st, _) = api
        .post(
            &format!("/api/unrouted/{mid}/assign"),
            &admin,
            json!({"side_conversation_id": id}),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    let (_, list) = api.get("/api/unrouted", &admin).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0));
    let (_, parent) = api.get("/api/parents/T-600", &admin).await;
    assert_eq!(parent["status"], "open", "the parent woke");
    let (_, act) = api.get("/api/parents/T-600/activity", &admin).await;
    assert_eq!(
        act["items"]
            .as_array()
            .and_then(|a| a.last())
            .map(|a| a["text"].clone()),
        Some(json!("Vera replied in a side conversation"))
    );
    let in_ticket: i64 = s
        .query(&format!("SELECT COUNT(*) FROM mailbox_messages m JOIN mailboxes b ON b.id = m.mailbox_id WHERE b.name = 'Tickets/T-600' AND m.message_id = {mid}"))
        .await;
    assert_eq!(in_ticket, 1);
    let in_unrouted: i64 = s
        .query(&format!("SELECT COUNT(*) FROM mailbox_messages m JOIN mailboxes b ON b.id = m.mailbox_id WHERE b.name = 'Unrouted' AND m.message_id = {mid}"))
        .await;
    assert_eq!(in_unrouted, 0);

    // Metrics: request counts by route template, queue depths — on the
    // metrics listener (`http.metrics_listen`) only.
    let public = reqwest::get(format!("{}/metrics", api.base))
        .await
        .expect("GET /metrics on the public listener");
    assert_eq!(public.status(), StatusCode::NOT_FOUND);
    let body: Value = public.json().await.expect("a JSON error");
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    let text = s.metrics_text().await;
    assert!(text.contains("http_requests_total{method=\"POST\",route=\"/api/unrouted/{id}/assign\",status=\"200\"}"), "{text}");
    assert!(text.contains("outbox_queue_depth"), "{text}");
    assert!(text.contains("smtp_messages_accepted_total"), "{text}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_ascii_subjects_and_slow_clients() {
    use backchannel::model::Role;
    // The idle timeout also bounds, from the connect, when every other
    // request's head must arrive: 5 s leaves a loaded machine room to
    // schedule the client (with 1 s a stalled client was cut now and then);
    // the slow client below is still cut by it, within a 30 s bound.
    let mut s = TestServer::start_with_http("", "idle_timeout = \"5s\"", "").await;
    // A pooled keep-alive connection may be closed by the server's idle
    // timeout just as the client reuses it (a race that is nothing this
    // test is about): every request here opens its own connection. The
    // server does not cut a request whose handler is slower than the idle
    // timeout (the idle clock is off while a request is in progress).
    let api = Api {
        base: format!("http://{}", s.http),
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("client"),
    };
    let ann = common::make_user(&s, "ann@acme.com", "Ann", Role::Member).await;
    for subject in ["Größe der Palette", "a€", "📦 shipped", "Ré"] {
        let (st, sc) = api
            .post(
                "/api/parents/T-1/side-conversations",
                &ann,
                json!({"to": ["v@x.example"], "subject": subject, "body_text": "b"}),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{subject}: {sc}");
        let id = sc["id"].as_i64().expect("id");
        let (st, m) = api
            .post(
                &format!("/api/side-conversations/{id}/messages"),
                &ann,
                json!({"body_text": "again"}),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{subject}: {m}");
        assert_eq!(m["subject"], format!("Re: {subject}"));
    }
    // A client that never finishes its headers is disconnected.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut slow = tokio::net::TcpStream::connect(s.http)
        .await
        .expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 64];
    // Cut by the 5 s idle timeout; 30 s is only a generous bound.
    let n = tokio::time::timeout(std::time::Duration::from_secs(30), slow.read(&mut buf))
        .await
        .expect("closed within the idle timeout")
        .unwrap_or(0);
    assert_eq!(n, 0, "no answer, just closed");
    // The server still answers others (on a new connection).
    let (st, _) = api.get("/api/me", &ann).await;
    assert_eq!(st, StatusCode::OK);
    s.shutdown().await;
}
