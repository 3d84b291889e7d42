//! JMAP over real HTTP against the in-process server: the session
//! resource, request- and method-level errors, mail ingested over SMTP as
//! Mailbox/Email/Thread objects, filters and sorting, keywords per user,
//! /changes after new mail, flag changes and unrouted triage, blob
//! downloads byte for byte, and push over EventSource.

mod common;

use std::time::Duration;

use backchannel::model::Role;
use common::{TestServer, make_user, smtp_send};
use reqwest::StatusCode;
use serde_json::{Value, json};

const NO_AUTH: &str = "";
const CORE: &str = "urn:ietf:params:jmap:core";
const MAIL: &str = "urn:ietf:params:jmap:mail";

struct Jmap {
    base: String,
    http: reqwest::Client,
    token: String,
    account: String,
}

impl Jmap {
    async fn new(s: &TestServer, token: &str) -> Jmap {
        let http = reqwest::Client::new();
        let session: Value = http
            .get(format!("http://{}/.well-known/jmap", s.http))
            .bearer_auth(token)
            .send()
            .await
            .expect("session")
            .json()
            .await
            .expect("session json");
        let account = session["primaryAccounts"][MAIL]
            .as_str()
            .expect("primary account")
            .to_string();
        Jmap {
            base: format!("http://{}", s.http),
            http,
            token: token.to_string(),
            account,
        }
    }

    /// Posts raw bytes to /jmap: (status, content type, body as JSON).
    async fn post_raw(&self, body: Vec<u8>) -> (StatusCode, String, Value) {
        let resp = self
            .http
            .post(format!("{}/jmap", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("post");
        let status = resp.status();
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = resp.text().await.expect("text");
        (
            status,
            ctype,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// One request with both capabilities; the method responses.
    async fn call(&self, calls: Value) -> Vec<Value> {
        let (status, _, v) = self
            .post_raw(
                serde_json::to_vec(&json!({"using": [CORE, MAIL], "methodCalls": calls}))
                    .expect("json"),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v["methodResponses"]
            .as_array()
            .expect("methodResponses")
            .clone()
    }

    /// One method call; its arguments (panics on an error response).
    async fn one(&self, name: &str, mut args: Value) -> Value {
        args["accountId"] = json!(self.account);
        let r = self.call(json!([[name, args, "c"]])).await;
        assert_eq!(r[0][0], name, "{}", r[0]);
        r[0][1].clone()
    }

    /// One method call expected to fail; the error type.
    async fn error(&self, name: &str, mut args: Value) -> String {
        if args.get("accountId").is_none() {
            args["accountId"] = json!(self.account);
        }
        let r = self.call(json!([[name, args, "c"]])).await;
        assert_eq!(r[0][0], "error", "{}", r[0]);
        r[0][1]["type"].as_str().expect("type").to_string()
    }

    async fn download(&self, blob: &str, name: &str, accept: &str) -> reqwest::Response {
        self.http
            .get(format!(
                "{}/jmap/download/{}/{blob}/{name}?accept={accept}",
                self.base, self.account
            ))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("download")
    }

    /// The id of the mailbox with this name (Inbox, Unrouted, or a ticket's
    /// external id).
    async fn mailbox(&self, name: &str) -> Option<String> {
        let v = self.one("Mailbox/get", json!({"ids": null})).await;
        v["list"]
            .as_array()
            .expect("list")
            .iter()
            .find(|m| m["name"] == name)
            .map(|m| m["id"].as_str().expect("id").to_string())
    }

    async fn state(&self, name: &str) -> String {
        let v = self.one(name, json!({"ids": []})).await;
        v["state"].as_str().expect("state").to_string()
    }
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Starts a side conversation on `parent` through the API; (id, reply address).
async fn start_thread(s: &TestServer, token: &str, parent: &str) -> (i64, String) {
    let (st, sc) = common::api_call(
        s,
        "POST",
        &format!("/api/parents/{parent}/side-conversations"),
        token,
        Some(json!({"to": ["vera@carrier.example"], "subject": "Pallet 7", "body_text": "Where is pallet 7?"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{sc}");
    (
        sc["id"].as_i64().expect("id"),
        sc["reply_address"].as_str().expect("reply").to_string(),
    )
}

const PDF: &[u8] = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n";

fn rich_reply(to: &str) -> String {
    use base64::Engine;
    let pdf = base64::engine::general_purpose::STANDARD.encode(PDF);
    format!(
        "From: =?UTF-8?Q?Vera_M=C3=BCller?= <vera@carrier.example>\r\n\
To: {to}\r\n\
Cc: \"Ops, Night\" <ops@carrier.example>\r\n\
Subject: =?UTF-8?B?UmU6IFBhbGxldCA3IOKAkyBHcsO8w59l?=\r\n\
Message-ID: <rich.1@carrier.example>\r\n\
Date: Tue, 01 Sep 2026 10:00:00 +0200\r\n\
X-Custom: kept as is\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"outer\"\r\n\
\r\n\
--outer\r\n\
Content-Type: multipart/alternative; boundary=\"alt\"\r\n\
\r\n\
--alt\r\n\
Content-Type: text/plain; charset=iso-8859-1\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
The pallet ships Monday. Gr=FC=DFe\r\n\
--alt\r\n\
Content-Type: text/html; charset=utf-8\r\n\
\r\n\
<p>The pallet ships <b>Monday</b>.</p>\r\n\
--alt--\r\n\
--outer\r\n\
Content-Type: application/pdf; name=\"manifest.pdf\"\r\n\
Content-Disposition: attachment; filename=\"manifest.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
{pdf}\r\n\
--outer--\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_and_request_errors() {
    let mut s = TestServer::start_with_http("", "max_body_bytes = 65536", NO_AUTH).await;
    let member = make_user(&s, "mo@acme.com", "Mo", Role::Member).await;
    let admin = make_user(&s, "ada@acme.com", "Ada", Role::Admin).await;
    let http = reqwest::Client::new();

    // The session needs the API token.
    let resp = http
        .get(format!("http://{}/.well-known/jmap", s.http))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let session: Value = http
        .get(format!("http://{}/.well-known/jmap", s.http))
        .bearer_auth(&member)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let core = &session["capabilities"][CORE];
    assert_eq!(core["maxSizeRequest"], 65536);
    assert_eq!(core["maxCallsInRequest"], 32);
    assert!(core["maxObjectsInGet"].as_u64().is_some());
    assert!(session["capabilities"][MAIL].is_object());
    let account = session["primaryAccounts"][MAIL].as_str().expect("account");
    assert_eq!(session["accounts"][account]["name"], "mo@acme.com");
    assert_eq!(session["username"], "mo@acme.com");
    assert!(
        session["apiUrl"]
            .as_str()
            .expect("apiUrl")
            .ends_with("/jmap")
    );
    assert!(
        session["downloadUrl"]
            .as_str()
            .expect("downloadUrl")
            .contains("{accountId}/{blobId}/{name}?accept={type}")
    );
    assert!(
        session["eventSourceUrl"]
            .as_str()
            .expect("eventSourceUrl")
            .contains("types={types}&closeafter={closeafter}&ping={ping}")
    );

    let j = Jmap::new(&s, &member).await;
    let a = Jmap::new(&s, &admin).await;
    assert_ne!(j.account, a.account, "one account per user");

    // Mailboxes by role: Unrouted only for owners and admins.
    let mv = j.one("Mailbox/get", json!({"ids": null})).await;
    let names: Vec<&str> = mv["list"]
        .as_array()
        .expect("list")
        .iter()
        .map(|m| m["name"].as_str().unwrap_or(""))
        .collect();
    assert!(
        names.contains(&"Inbox") && names.contains(&"Tickets"),
        "{names:?}"
    );
    assert!(!names.contains(&"Unrouted"), "{names:?}");
    let inbox = &mv["list"][0];
    assert_eq!(inbox["role"], "inbox");
    assert_eq!(inbox["myRights"]["mayAddItems"], false);
    assert_eq!(inbox["myRights"]["maySetKeywords"], true);
    assert_eq!(inbox["myRights"]["mayDelete"], false);
    assert!(a.mailbox("Unrouted").await.is_some());
    let unrouted_id = a.mailbox("Unrouted").await.expect("unrouted");
    let v = j
        .one("Mailbox/get", json!({"ids": [unrouted_id, "nope"]}))
        .await;
    assert_eq!(ids(&v["notFound"]).len(), 2, "{v}");
    let v = j
        .one("Mailbox/get", json!({"ids": null, "properties": ["name"]}))
        .await;
    let first = v["list"][0].as_object().expect("object");
    assert_eq!(first.len(), 2, "id and the asked property only: {first:?}");

    // Core/echo and back-references.
    let r = j
        .call(json!([
            ["Core/echo", {"hello": [1, 2]}, "e"],
            ["Mailbox/get", {"accountId": j.account, "ids": null}, "m"],
            ["Mailbox/get", {"accountId": j.account,
                             "#ids": {"resultOf": "m", "name": "Mailbox/get", "path": "/list/*/id"},
                             "properties": ["role"]}, "m2"],
        ]))
        .await;
    assert_eq!(r[0], json!(["Core/echo", {"hello": [1, 2]}, "e"]));
    assert_eq!(
        r[2][1]["list"].as_array().map(Vec::len),
        r[1][1]["list"].as_array().map(Vec::len)
    );
    assert_eq!(r[2][2], "m2");

    // Request-level errors are problem documents.
    for (body, kind) in [
        (b"{".to_vec(), "notJSON"),
        (b"[1,2]".to_vec(), "notRequest"),
        (
            br#"{"using": "x", "methodCalls": []}"#.to_vec(),
            "notRequest",
        ),
        (
            br#"{"using": [], "methodCalls": [["Core/echo", {}]]}"#.to_vec(),
            "notRequest",
        ),
        (
            br#"{"using": ["urn:x"], "methodCalls": []}"#.to_vec(),
            "unknownCapability",
        ),
        ("[".repeat(5000).into_bytes(), "notJSON"),
    ] {
        let (status, ctype, v) = j.post_raw(body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(ctype, "application/problem+json");
        assert_eq!(
            v["type"],
            format!("urn:ietf:params:jmap:error:{kind}"),
            "{v}"
        );
        assert_eq!(v["status"], 400);
    }
    let calls: Vec<Value> = (0..33)
        .map(|i| json!(["Core/echo", {}, format!("c{i}")]))
        .collect();
    let (status, _, v) = j
        .post_raw(
            serde_json::to_vec(&json!({"using": [CORE], "methodCalls": calls})).expect("json"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["limit"], "maxCallsInRequest", "{v}");
    let big =
        json!({"using": [CORE], "methodCalls": [["Core/echo", {"x": "y".repeat(70_000)}, "c"]]});
    let (status, _, v) = j.post_raw(serde_json::to_vec(&big).expect("json")).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(v["limit"], "maxSizeRequest", "{v}");

    // Method-level errors.
    assert_eq!(j.error("Mailbox/set", json!({})).await, "unknownMethod");
    assert_eq!(
        j.error("Email/get", json!({"accountId": "a999", "ids": []}))
            .await,
        "accountNotFound"
    );
    assert_eq!(
        j.error("Email/get", json!({"ids": 5})).await,
        "invalidArguments"
    );
    assert_eq!(
        j.error("Email/get", json!({"ids": [], "properties": ["nope"]}))
            .await,
        "invalidArguments"
    );
    assert_eq!(
        j.error(
            "Email/get",
            json!({"ids": [], "properties": ["header:From:asDate"]})
        )
        .await,
        "invalidArguments"
    );
    let many: Vec<String> = (0..501).map(|i| format!("m{i}")).collect();
    assert_eq!(
        j.error("Email/get", json!({"ids": many})).await,
        "requestTooLarge"
    );
    assert_eq!(
        j.error("Email/query", json!({"sort": [{"property": "subject"}]}))
            .await,
        "unsupportedSort"
    );
    assert_eq!(
        j.error("Email/query", json!({"filter": {"header": ["X"]}}))
            .await,
        "unsupportedFilter"
    );
    assert_eq!(
        j.error("Email/query", json!({"filter": {"before": "yesterday"}}))
            .await,
        "invalidArguments"
    );
    let mut deep = json!({"from": "x"});
    for _ in 0..40 {
        deep = json!({"operator": "NOT", "conditions": [deep]});
    }
    assert_eq!(
        j.error("Email/query", json!({"filter": deep})).await,
        "invalidArguments"
    );
    assert_eq!(
        j.error("Email/query", json!({"anchor": "m1"})).await,
        "anchorNotFound"
    );
    assert_eq!(
        j.error("Email/changes", json!({"sinceState": "banana"}))
            .await,
        "cannotCalculateChanges"
    );
    assert_eq!(
        j.error("Email/changes", json!({"sinceState": "999999"}))
            .await,
        "cannotCalculateChanges"
    );
    assert_eq!(
        j.error("Email/changes", json!({})).await,
        "invalidArguments"
    );
    assert_eq!(
        j.error("Thread/get", json!({"ids": null})).await,
        "requestTooLarge"
    );
    let r = j
        .call(json!([["Email/get", {"accountId": j.account,
            "#ids": {"resultOf": "nothing", "name": "Email/query", "path": "/ids"}}, "c"]]))
        .await;
    assert_eq!(r[0][1]["type"], "invalidResultReference");
    // A method of a capability not in `using`.
    let (status, _, v) = j
        .post_raw(
            serde_json::to_vec(&json!({"using": [CORE],
                "methodCalls": [["Mailbox/get", {"accountId": j.account}, "c"]]}))
            .expect("json"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["methodResponses"][0][1]["type"], "unknownMethod");
    // Uploads are refused; downloads of unknown blobs are 404.
    let resp = http
        .post(format!("http://{}/jmap/upload/{}", s.http, j.account))
        .bearer_auth(&member)
        .body("x")
        .send()
        .await
        .expect("upload");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        j.download("r424242", "x.eml", "message/rfc822")
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        j.download("zz", "x", "a/b").await.status(),
        StatusCode::NOT_FOUND
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_over_smtp_as_jmap_objects() {
    let mut s = TestServer::start_with("", NO_AUTH).await;
    let admin = make_user(&s, "ada@acme.com", "Ada", Role::Admin).await;
    let member = make_user(&s, "mo@acme.com", "Mo", Role::Member).await;
    let a = Jmap::new(&s, &admin).await;
    let j = Jmap::new(&s, &member).await;

    let (sc, reply_to) = start_thread(&s, &admin, "T-700").await;
    let email_state0 = j.state("Email/get").await;
    let mailbox_state0 = j.state("Mailbox/get").await;
    let data = rich_reply(&reply_to);
    let r = smtp_send(s.smtp, "vera@carrier.example", &[&reply_to], &data).await;
    assert!(r.starts_with("250"), "{r}");
    s.wait_ingested().await;
    let inbound: i64 = s
        .query("SELECT id FROM messages WHERE direction = 'in' ORDER BY id DESC LIMIT 1")
        .await;
    let outbound: i64 = s
        .query("SELECT id FROM messages WHERE direction = 'out' ORDER BY id LIMIT 1")
        .await;

    // Inbox holds the reply; the ticket's mailbox holds both directions.
    let inbox = j.mailbox("Inbox").await.expect("inbox");
    let ticket = j.mailbox("T-700").await.expect("ticket mailbox");
    let mv = j
        .one(
            "Mailbox/get",
            json!({"ids": [ticket.clone(), inbox.clone()]}),
        )
        .await;
    assert_eq!(mv["list"][0]["parentId"], "tickets");
    assert_eq!(mv["list"][0]["totalEmails"], 2);
    assert_eq!(mv["list"][0]["totalThreads"], 1);
    assert_eq!(mv["list"][1]["totalEmails"], 1);
    assert_eq!(mv["list"][1]["unreadEmails"], 1);

    // Query → get through back-references, as clients do.
    let r = j
        .call(json!([
            ["Email/query", {"accountId": j.account, "filter": {"inMailbox": inbox},
                             "sort": [{"property": "receivedAt", "isAscending": false}],
                             "calculateTotal": true}, "q"],
            ["Email/get", {"accountId": j.account,
                           "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"},
                           "properties": ["id", "blobId", "threadId", "mailboxIds", "keywords", "size",
                                          "receivedAt", "messageId", "inReplyTo", "references", "from", "to",
                                          "cc", "replyTo", "subject", "sentAt", "hasAttachment", "preview",
                                          "bodyValues", "textBody", "htmlBody", "attachments", "headers",
                                          "bodyStructure", "header:X-Custom", "header:Subject:asText",
                                          "header:Received:asRaw:all"],
                           "fetchAllBodyValues": true, "maxBodyValueBytes": 1000}, "g"],
        ]))
        .await;
    assert_eq!(r[0][1]["total"], 1, "{}", r[0]);
    let email_id = format!("m{inbound}");
    assert_eq!(ids(&r[0][1]["ids"]), vec![email_id.clone()]);
    let e = &r[1][1]["list"][0];
    assert_eq!(e["id"], email_id);
    assert_eq!(e["threadId"], format!("t{sc}"));
    assert_eq!(
        e["mailboxIds"],
        json!({inbox.clone(): true, ticket.clone(): true})
    );
    assert_eq!(e["keywords"], json!({}));
    assert_eq!(e["subject"], "Re: Pallet 7 – Grüße");
    assert_eq!(e["header:Subject:asText"], "Re: Pallet 7 – Grüße");
    assert_eq!(e["header:X-Custom"], " kept as is");
    assert!(e["header:Received:asRaw:all"].is_array());
    assert_eq!(
        e["from"],
        json!([{"name": "Vera Müller", "email": "vera@carrier.example"}])
    );
    assert_eq!(
        e["cc"],
        json!([{"name": "Ops, Night", "email": "ops@carrier.example"}])
    );
    assert_eq!(e["replyTo"], Value::Null);
    assert_eq!(e["messageId"], json!(["rich.1@carrier.example"]));
    assert_eq!(e["sentAt"], "2026-09-01T10:00:00+02:00");
    assert!(e["receivedAt"].as_str().expect("receivedAt").ends_with('Z'));
    assert_eq!(e["hasAttachment"], true);
    assert!(
        e["preview"]
            .as_str()
            .expect("preview")
            .starts_with("The pallet ships Monday. Grüße")
    );
    assert_eq!(e["bodyStructure"]["type"], "multipart/mixed");
    assert_eq!(
        e["bodyStructure"]["subParts"][0]["type"],
        "multipart/alternative"
    );
    assert!(
        e["headers"]
            .as_array()
            .expect("headers")
            .iter()
            .any(|h| h["name"] == "X-Custom")
    );
    let text_part = e["textBody"][0]["partId"]
        .as_str()
        .expect("text part")
        .to_string();
    assert_eq!(e["textBody"][0]["type"], "text/plain");
    assert_eq!(e["textBody"][0]["charset"], "iso-8859-1");
    assert_eq!(e["htmlBody"][0]["type"], "text/html");
    assert!(
        e["bodyValues"][&text_part]["value"]
            .as_str()
            .expect("text value")
            .contains("ships Monday. Grüße")
    );
    let html_part = e["htmlBody"][0]["partId"].as_str().expect("html part");
    assert!(
        e["bodyValues"][html_part]["value"]
            .as_str()
            .expect("html")
            .contains("<b>Monday</b>")
    );
    let att = &e["attachments"][0];
    assert_eq!(att["name"], "manifest.pdf");
    assert_eq!(att["type"], "application/pdf");
    assert_eq!(att["disposition"], "attachment");
    assert_eq!(att["size"], PDF.len());
    assert_eq!(e["attachments"].as_array().map(Vec::len), Some(1));
    let size = e["size"].as_u64().expect("size");

    // Truncated body values.
    let v = j
        .one(
            "Email/get",
            json!({"ids": [email_id], "properties": ["bodyValues"],
                                  "fetchTextBodyValues": true, "maxBodyValueBytes": 10}),
        )
        .await;
    let val = &v["list"][0]["bodyValues"][&text_part];
    assert_eq!(val["isTruncated"], true);
    assert_eq!(val["value"], "The pallet");

    // Blobs: the raw message byte for byte, the attachment decoded.
    let resp = j
        .download(
            e["blobId"].as_str().expect("blobId"),
            "reply.eml",
            "message/rfc822",
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "message/rfc822");
    let blob = resp.bytes().await.expect("bytes");
    let raw: Vec<u8> = s
        .query(&format!("SELECT CASE WHEN length(m.raw) > 0 THEN m.raw ELSE (SELECT ir.raw FROM inbound_raw ir WHERE ir.id = m.inbound_id) END FROM messages m WHERE m.id = {inbound}"))
        .await;
    assert_eq!(blob.as_ref(), &raw[..]);
    assert_eq!(blob.len() as u64, size);
    let api_raw = reqwest::Client::new()
        .get(format!("http://{}/api/messages/{inbound}/raw", s.http))
        .bearer_auth(&member)
        .send()
        .await
        .expect("raw")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(blob, api_raw);
    let resp = j
        .download(
            att["blobId"].as_str().expect("blob"),
            "manifest.pdf",
            "application/pdf",
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/pdf");
    let disposition = resp.headers()["content-disposition"]
        .to_str()
        .expect("cd")
        .to_string();
    assert!(
        disposition.starts_with("attachment;") && disposition.contains("manifest.pdf"),
        "{disposition}"
    );
    assert_eq!(resp.bytes().await.expect("bytes").as_ref(), PDF);
    // Another account's URL is not ours.
    let resp = reqwest::Client::new()
        .get(format!(
            "http://{}/jmap/download/{}/r{inbound}/x",
            s.http, a.account
        ))
        .bearer_auth(&member)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // Filters and sort.
    let q = |filter: Value, asc: bool| json!({"filter": filter, "sort": [{"property": "receivedAt", "isAscending": asc}]});
    let both = vec![format!("m{outbound}"), format!("m{inbound}")];
    let v = j
        .one("Email/query", q(json!({"inMailbox": ticket}), true))
        .await;
    assert_eq!(ids(&v["ids"]), both);
    let v = j
        .one("Email/query", q(json!({"inMailbox": ticket}), false))
        .await;
    assert_eq!(
        ids(&v["ids"]),
        both.iter().rev().cloned().collect::<Vec<_>>()
    );
    let v = j
        .one("Email/query", q(json!({"from": "VERA@carrier"}), true))
        .await;
    assert_eq!(ids(&v["ids"]), vec![format!("m{inbound}")]);
    let v = j
        .one("Email/query", q(json!({"text": "ships monday"}), true))
        .await;
    assert_eq!(ids(&v["ids"]), vec![format!("m{inbound}")]);
    let v = j
        .one("Email/query", q(json!({"text": "pallet 7"}), true))
        .await;
    assert_eq!(ids(&v["ids"]), both);
    let v = j
        .one(
            "Email/query",
            q(json!({"after": "2999-01-01T00:00:00Z"}), true),
        )
        .await;
    assert!(ids(&v["ids"]).is_empty());
    let v = j
        .one(
            "Email/query",
            q(
                json!({"before": "2999-01-01T00:00:00Z", "after": "2000-01-01T00:00:00Z"}),
                true,
            ),
        )
        .await;
    assert_eq!(ids(&v["ids"]), both);
    let v = j
        .one(
            "Email/query",
            q(
                json!({"operator": "NOT", "conditions": [{"from": "vera"}]}),
                true,
            ),
        )
        .await;
    assert_eq!(ids(&v["ids"]), vec![format!("m{outbound}")]);
    let v = j
        .one(
            "Email/query",
            q(
                json!({"operator": "OR", "conditions": [{"from": "vera"}, {"subject": "Pallet"}]}),
                true,
            ),
        )
        .await;
    assert_eq!(ids(&v["ids"]), both);
    let v = j
        .one(
            "Email/query",
            json!({"filter": {"inMailbox": ticket}, "sort": [{"property": "receivedAt"}],
                                   "position": 1, "limit": 5, "calculateTotal": true}),
        )
        .await;
    assert_eq!(
        (ids(&v["ids"]), v["total"].clone(), v["position"].clone()),
        (vec![format!("m{inbound}")], json!(2), json!(1))
    );
    let v = j
        .one("Email/query", json!({"filter": {"inMailbox": ticket}, "sort": [{"property": "receivedAt"}],
                                   "anchor": format!("m{inbound}"), "anchorOffset": -1, "limit": 1}))
        .await;
    assert_eq!(ids(&v["ids"]), vec![format!("m{outbound}")]);
    let v = j
        .one(
            "Email/query",
            json!({"filter": {"inMailbox": ticket}, "collapseThreads": true}),
        )
        .await;
    assert_eq!(ids(&v["ids"]).len(), 1);

    // A side conversation is one thread, oldest first.
    let v = j
        .one("Thread/get", json!({"ids": [format!("t{sc}"), "t999"]}))
        .await;
    assert_eq!(ids(&v["list"][0]["emailIds"]), both);
    assert_eq!(ids(&v["notFound"]), vec!["t999"]);

    // Keywords: the member's own; the admin sees none; both see the state.
    let admin_email_state = a.state("Email/get").await;
    let v = j
        .one("Email/set", json!({"update": {email_id.clone(): {"keywords/$seen": true, "keywords/$flagged": true}},
                                 "create": {"k1": {"subject": "x"}},
                                 "destroy": [email_id.clone()]}))
        .await;
    assert_eq!(v["updated"], json!({email_id.clone(): null}), "{v}");
    assert_eq!(v["notCreated"]["k1"]["type"], "forbidden");
    assert_eq!(v["notDestroyed"][&email_id]["type"], "forbidden");
    assert_ne!(v["oldState"], v["newState"]);
    let after_set = v["newState"].as_str().expect("state").to_string();
    let v = j
        .one(
            "Email/get",
            json!({"ids": [email_id], "properties": ["keywords"]}),
        )
        .await;
    assert_eq!(
        v["list"][0]["keywords"],
        json!({"$seen": true, "$flagged": true})
    );
    let v = a
        .one(
            "Email/get",
            json!({"ids": [email_id], "properties": ["keywords"]}),
        )
        .await;
    assert_eq!(v["list"][0]["keywords"], json!({}));
    assert_eq!(
        a.state("Email/get").await,
        admin_email_state,
        "the admin saw no change"
    );
    let v = j
        .one(
            "Email/set",
            json!({"update": {email_id.clone(): {"keywords": {"$seen": true}}}}),
        )
        .await;
    assert_eq!(v["updated"], json!({email_id.clone(): null}));
    let v = j
        .one(
            "Email/get",
            json!({"ids": [email_id], "properties": ["keywords"]}),
        )
        .await;
    assert_eq!(v["list"][0]["keywords"], json!({"$seen": true}));
    let v = j
        .one(
            "Email/set",
            json!({"update": {email_id.clone(): {"keywords/$draft": true},
                                            "m424242": {"keywords/$seen": true}}}),
        )
        .await;
    assert_eq!(v["notUpdated"][&email_id]["type"], "invalidProperties");
    assert_eq!(v["notUpdated"]["m424242"]["type"], "notFound");
    assert_eq!(
        j.error("Email/set", json!({"ifInState": after_set, "update": {}}))
            .await,
        "stateMismatch"
    );
    let v = j
        .one("Email/query", json!({"filter": {"notKeyword": "$seen"}}))
        .await;
    assert_eq!(ids(&v["ids"]), vec![format!("m{outbound}")]);
    let v = j
        .one("Email/query", json!({"filter": {"hasKeyword": "$seen"}}))
        .await;
    assert_eq!(ids(&v["ids"]), vec![email_id.clone()]);
    let mv = j.one("Mailbox/get", json!({"ids": [inbox.clone()]})).await;
    assert_eq!(mv["list"][0]["unreadEmails"], 0);
    assert_eq!(mv["list"][0]["unreadThreads"], 0);
    let mv = a.one("Mailbox/get", json!({"ids": [inbox.clone()]})).await;
    assert_eq!(mv["list"][0]["unreadEmails"], 1, "flags are per user");

    // Changes since before the reply: the new Email, its mailboxes.
    let v = j
        .one("Email/changes", json!({"sinceState": email_state0}))
        .await;
    assert_eq!(ids(&v["created"]), vec![email_id.clone()], "{v}");
    assert!(
        ids(&v["updated"]).is_empty() && ids(&v["destroyed"]).is_empty(),
        "{v}"
    );
    assert_eq!(v["hasMoreChanges"], false);
    let current = v["newState"].as_str().expect("newState").to_string();
    let v = j.one("Email/changes", json!({"sinceState": current})).await;
    assert!(ids(&v["created"]).is_empty() && ids(&v["updated"]).is_empty());
    assert_eq!(v["newState"], current);
    let v = j
        .one("Mailbox/changes", json!({"sinceState": mailbox_state0}))
        .await;
    let mut changed = ids(&v["updated"]);
    changed.extend(ids(&v["created"]));
    assert!(changed.contains(&inbox) && changed.contains(&ticket), "{v}");
    assert_eq!(
        v["updatedProperties"],
        json!([
            "totalEmails",
            "unreadEmails",
            "totalThreads",
            "unreadThreads"
        ])
    );

    // Another reply: created in Email/changes, the thread updated.
    let email_state1 = j.state("Email/get").await;
    let thread_state1 = j.state("Thread/get").await;
    let mailbox_state1 = j.state("Mailbox/get").await;
    let second = format!(
        "From: vera@carrier.example\r\nTo: {reply_to}\r\nSubject: Re: Pallet 7\r\nMessage-ID: <rich.2@carrier.example>\r\n\r\nIt left the depot.\r\n"
    );
    smtp_send(s.smtp, "vera@carrier.example", &[&reply_to], &second).await;
    s.wait_ingested().await;
    let second_id: i64 = s
        .query("SELECT id FROM messages WHERE direction = 'in' ORDER BY id DESC LIMIT 1")
        .await;
    let v = j
        .one("Email/changes", json!({"sinceState": email_state1}))
        .await;
    assert_eq!(ids(&v["created"]), vec![format!("m{second_id}")], "{v}");
    let v = j
        .one("Thread/changes", json!({"sinceState": thread_state1}))
        .await;
    assert_eq!(ids(&v["updated"]), vec![format!("t{sc}")], "{v}");
    let v = j
        .one("Mailbox/changes", json!({"sinceState": mailbox_state1}))
        .await;
    let mut updated = ids(&v["updated"]);
    updated.sort();
    let mut expect = vec![inbox.clone(), ticket.clone()];
    expect.sort();
    assert_eq!(updated, expect, "{v}");
    // maxChanges cuts on a state boundary and says there is more.
    let v = j
        .one(
            "Email/changes",
            json!({"sinceState": email_state0, "maxChanges": 1}),
        )
        .await;
    assert_eq!(v["hasMoreChanges"], true, "{v}");
    assert_eq!(ids(&v["created"]), vec![email_id.clone()]);
    let v = j
        .one(
            "Email/changes",
            json!({"sinceState": v["newState"], "maxChanges": 1}),
        )
        .await;
    assert_eq!(ids(&v["created"]), vec![format!("m{second_id}")], "{v}");
    assert_eq!(v["hasMoreChanges"], false, "{v}");

    // Unrouted mail: the admin's alone, until it is assigned to the thread.
    let lost = "From: Vera <vera@carrier.example>\r\nTo: reply@gw.example.com\r\nSubject: About the pallet\r\nMessage-ID: <lost@carrier.example>\r\n\r\nIt shipped.\r\n";
    let admin_state = a.state("Email/get").await;
    smtp_send(
        s.smtp,
        "vera@carrier.example",
        &["reply@gw.example.com"],
        lost,
    )
    .await;
    s.wait_ingested().await;
    let lost_id: i64 = s
        .query("SELECT id FROM messages WHERE direction = 'in' ORDER BY id DESC LIMIT 1")
        .await;
    let unrouted_box = a.mailbox("Unrouted").await.expect("unrouted");
    let v = a
        .one(
            "Email/query",
            json!({"filter": {"inMailbox": unrouted_box}}),
        )
        .await;
    assert_eq!(ids(&v["ids"]), vec![format!("u{lost_id}")]);
    let v = a
        .one(
            "Email/get",
            json!({"ids": [format!("u{lost_id}")], "properties": ["threadId", "mailboxIds"]}),
        )
        .await;
    assert_eq!(v["list"][0]["threadId"], format!("tu{lost_id}"));
    assert_eq!(
        v["list"][0]["mailboxIds"],
        json!({unrouted_box.clone(): true})
    );
    let v = j
        .one("Email/get", json!({"ids": [format!("u{lost_id}")]}))
        .await;
    assert_eq!(
        ids(&v["notFound"]),
        vec![format!("u{lost_id}")],
        "members never see unrouted mail"
    );
    let v = j
        .one(
            "Email/query",
            json!({"filter": {"inMailbox": unrouted_box}}),
        )
        .await;
    assert!(ids(&v["ids"]).is_empty());
    assert_eq!(
        j.download(&format!("r{lost_id}"), "x.eml", "message/rfc822")
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    let v = a
        .one("Email/changes", json!({"sinceState": admin_state}))
        .await;
    assert_eq!(ids(&v["created"]), vec![format!("u{lost_id}")], "{v}");

    let admin_state = a.state("Email/get").await;
    let admin_threads = a.state("Thread/get").await;
    let member_state = j.state("Email/get").await;
    let (st, v) = common::api_call(
        &s,
        "POST",
        &format!("/api/unrouted/{lost_id}/assign"),
        &admin,
        Some(json!({"side_conversation_id": sc})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let v = a
        .one("Email/changes", json!({"sinceState": admin_state}))
        .await;
    assert_eq!(ids(&v["destroyed"]), vec![format!("u{lost_id}")], "{v}");
    assert_eq!(ids(&v["created"]), vec![format!("m{lost_id}")], "{v}");
    let v = j
        .one("Email/changes", json!({"sinceState": member_state}))
        .await;
    assert_eq!(ids(&v["created"]), vec![format!("m{lost_id}")], "{v}");
    assert!(ids(&v["destroyed"]).is_empty(), "{v}");
    let v = a
        .one("Thread/changes", json!({"sinceState": admin_threads}))
        .await;
    assert_eq!(ids(&v["destroyed"]), vec![format!("tu{lost_id}")], "{v}");
    assert_eq!(ids(&v["updated"]), vec![format!("t{sc}")], "{v}");
    let v = j
        .one("Thread/get", json!({"ids": [format!("t{sc}")]}))
        .await;
    let members = ids(&v["list"][0]["emailIds"]);
    assert_eq!(members.len(), 4, "{v}");
    assert!(members.contains(&format!("m{lost_id}")));
    assert_eq!(members[0], format!("m{outbound}"));
    s.shutdown().await;
}

/// Reads an SSE stream until a chunk satisfies `want` (or it ends);
/// returns everything read.
async fn read_until(resp: &mut reqwest::Response, want: impl Fn(&str) -> bool) -> (String, bool) {
    let mut seen = String::new();
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(30), resp.chunk())
            .await
            .expect("an event within the timeout");
        match chunk {
            Ok(Some(c)) => {
                seen.push_str(&String::from_utf8_lossy(&c));
                if want(&seen) {
                    return (seen, true);
                }
            }
            Ok(None) | Err(_) => return (seen, false),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_over_eventsource() {
    let mut s = TestServer::start_with_http("", "idle_timeout = \"2s\"", NO_AUTH).await;
    let admin = make_user(&s, "ada@acme.com", "Ada", Role::Admin).await;
    let member = make_user(&s, "mo@acme.com", "Mo", Role::Member).await;
    let j = Jmap::new(&s, &member).await;
    let (_, reply_to) = start_thread(&s, &admin, "T-800").await;
    let http = reqwest::Client::new();
    let addr = s.http;
    let open = |query: &str, last: Option<&str>| {
        let mut req = http
            .get(format!("http://{addr}/jmap/eventsource?{query}"))
            .bearer_auth(&member);
        if let Some(l) = last {
            req = req.header("last-event-id", l);
        }
        req.send()
    };

    let resp = http
        .get(format!("http://{}/jmap/eventsource", s.http))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = open("closeafter=sometimes", None).await.expect("get");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    // New mail pushes a state change; with no ping asked for, comment
    // lines keep the stream open past the 2 s idle timeout.
    let mut stream = open("types=*&closeafter=no&ping=0", None)
        .await
        .expect("open");
    assert_eq!(stream.status(), StatusCode::OK);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let (seen, ok) = read_until(&mut stream, |t| t.matches(":\n\n").count() >= 3).await;
    assert!(ok, "keepalive comments: {seen:?}");
    let email_state = j.state("Email/get").await;
    let body = format!(
        "From: vera@carrier.example\r\nTo: {reply_to}\r\nSubject: Re: Pallet 7\r\n\r\nShipped.\r\n"
    );
    smtp_send(s.smtp, "vera@carrier.example", &[&reply_to], &body).await;
    let (seen, ok) = read_until(&mut stream, |t| t.contains("event: state")).await;
    assert!(ok, "a state event: {seen:?}");
    let data = seen
        .lines()
        .skip_while(|l| *l != "event: state")
        .find_map(|l| l.strip_prefix("data: "))
        .expect("data line");
    let change: Value = serde_json::from_str(data).expect("StateChange JSON");
    assert_eq!(change["@type"], "StateChange");
    let new_email = change["changed"][&j.account]["Email"]
        .as_str()
        .expect("Email state");
    assert_ne!(new_email, email_state);
    s.wait_ingested().await;
    let v = j
        .one("Email/changes", json!({"sinceState": email_state}))
        .await;
    assert_eq!(ids(&v["created"]).len(), 1, "{v}");

    // Ping events at the interval asked for.
    let mut pinged = open("types=Email&closeafter=no&ping=1", None)
        .await
        .expect("open");
    let (seen, ok) = read_until(&mut pinged, |t| t.contains("event: ping")).await;
    assert!(ok && seen.contains("data: {\"interval\":1}"), "{seen:?}");
    drop(pinged);

    // closeafter=state: the stream ends after its first state event, here
    // one caused by the member's own keyword change.
    let mut once = open("types=Email&closeafter=state", None)
        .await
        .expect("open");
    let id = j.one("Email/query", json!({})).await["ids"][0]
        .as_str()
        .expect("id")
        .to_string();
    j.one(
        "Email/set",
        json!({"update": {id: {"keywords/$seen": true}}}),
    )
    .await;
    let (seen, ended) = read_until(&mut once, |_| false).await;
    assert!(!ended && seen.contains("event: state"), "{seen:?}");

    // A client coming back with Last-Event-ID learns at once what it missed.
    let mut back = open("types=*&closeafter=state", Some("0.0.0"))
        .await
        .expect("open");
    let (seen, _) = read_until(&mut back, |_| false).await;
    assert!(
        seen.contains("\"Mailbox\"") && seen.contains("\"Thread\""),
        "{seen:?}"
    );

    // Shutdown ends open streams (and does not wait for them forever).
    s.shutdown().await;
    let (_, more) = read_until(&mut stream, |_| false).await;
    assert!(!more, "the stream ended with the server");
}

/// Every file of the shared corpus of real mail (`../shared/corpus`, read
/// in place), stored as a message on a thread, comes back through
/// Email/get with every property and body value, no method error, and its
/// raw blob byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_messages_through_email_get() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    if !dir.is_dir() {
        println!("notice: {} is absent; corpus not checked", dir.display());
        return;
    }
    let mut files = Vec::new();
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)
            .expect("read_dir")
            .filter_map(Result::ok)
        {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_none_or(|x| x != "md")
                && e.metadata().is_ok_and(|m| m.len() < 4_000_000)
            {
                files.push(p);
            }
        }
    }
    files.sort();
    let raws: Vec<Vec<u8>> = files
        .iter()
        .map(|p| std::fs::read(p).expect("read"))
        .collect();
    assert!(raws.len() > 100, "the corpus has mail");
    let mut s = TestServer::start_with("", NO_AUTH).await;
    let member = make_user(&s, "mo@acme.com", "Mo", Role::Member).await;
    let (_, sc) =
        common::seed_thread(&s.sql, "T-900", "abcdefghijklmn23", "open", "open", &[]).await;
    let stored = raws.clone();
    let (parent, ids): (i64, Vec<i64>) = s
        .sql
        .write(move |c| {
            let parent: i64 = c.query_row(
                "SELECT parent_id FROM side_conversations WHERE id = ?1",
                [sc],
                |r| r.get(0),
            )?;
            let mut ids = Vec::new();
            for (i, raw) in stored.iter().enumerate() {
                c.execute(
                    "INSERT INTO messages (side_conversation_id, direction, kind, route, raw, raw_sha256, received_at)
                     VALUES (?1, 'in', 'reply', 'token', ?2, ?4, ?3)",
                    rusqlite::params![sc, raw, 1_000 + i as i64, &[0u8][..]],
                )?;
                ids.push(c.last_insert_rowid());
            }
            Ok((parent, ids))
        })
        .await
        .expect("store corpus");
    let placed = ids.clone();
    s.store
        .write(move |db| {
            for id in placed {
                backchannel::store::view::add_message(
                    db,
                    id,
                    backchannel::store::view::Placement::Thread {
                        parent_id: parent,
                        external_id: "T-900",
                        inbound: true,
                    },
                )?;
            }
            Ok(())
        })
        .await
        .expect("place corpus");
    let j = Jmap::new(&s, &member).await;
    let mut parts = 0usize;
    for chunk in ids.chunks(100) {
        let want: Vec<String> = chunk.iter().map(|n| format!("m{n}")).collect();
        let v = j
            .one(
                "Email/get",
                json!({"ids": want, "fetchAllBodyValues": true,
                       "properties": ["id", "size", "subject", "from", "to", "sentAt", "messageId",
                                      "references", "preview", "hasAttachment", "headers", "bodyStructure",
                                      "bodyValues", "textBody", "htmlBody", "attachments",
                                      "header:From:asGroupedAddresses:all", "header:List-Post:asURLs"]}),
            )
            .await;
        assert!(ids_of(&v["notFound"]).is_empty(), "{}", v["notFound"]);
        let list = v["list"].as_array().expect("list");
        assert_eq!(list.len(), chunk.len());
        for e in list {
            assert!(e["bodyStructure"].is_object(), "{}", e["id"]);
            parts += e["attachments"].as_array().map_or(0, Vec::len);
        }
    }
    // Raw blobs byte for byte (a sample), part blobs served.
    for (k, n) in ids.iter().enumerate().step_by(25) {
        let resp = j
            .download(&format!("r{n}"), "m.eml", "message/rfc822")
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.bytes().await.expect("bytes").as_ref(), &raws[k][..]);
    }
    println!("corpus: {} messages, {parts} attachments", ids.len());
    s.shutdown().await;
}

fn ids_of(v: &Value) -> Vec<String> {
    ids(v)
}

/// IMAP and JMAP share the per-user flags: a STORE over IMAP is a keyword
/// in JMAP, moves the Email state and is pushed; a keyword set over JMAP is
/// a flag over IMAP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_and_jmap_share_flags() {
    use tokio::io::AsyncBufReadExt;
    let mut s = TestServer::start_with("", NO_AUTH).await;
    let admin = make_user(&s, "ada@acme.com", "Ada", Role::Admin).await;
    let member = make_user(&s, "mo@acme.com", "Mo", Role::Member).await;
    let (_, reply_to) = start_thread(&s, &admin, "T-950").await;
    let body = format!(
        "From: vera@carrier.example\r\nTo: {reply_to}\r\nSubject: Re: Pallet 7\r\n\r\nShipped.\r\n"
    );
    smtp_send(s.smtp, "vera@carrier.example", &[&reply_to], &body).await;
    s.wait_ingested().await;
    let j = Jmap::new(&s, &member).await;
    let id = j.one("Email/query", json!({})).await["ids"][0]
        .as_str()
        .expect("id")
        .to_string();
    let state = j.state("Email/get").await;
    let mut events = reqwest::Client::new()
        .get(format!(
            "http://{}/jmap/eventsource?types=Email&closeafter=state",
            s.http
        ))
        .bearer_auth(&member)
        .send()
        .await
        .expect("eventsource");

    let stream = tokio::net::TcpStream::connect(s.imap).await.expect("imap");
    let mut io = tokio::io::BufReader::new(stream);
    let mut greeting = String::new();
    io.read_line(&mut greeting).await.expect("greeting");
    assert!(greeting.starts_with("* OK"), "{greeting}");
    let r = common::imap_cmd(&mut io, "a", &format!("LOGIN mo@acme.com {member}")).await;
    assert!(r.last().is_some_and(|l| l.starts_with("a OK")), "{r:?}");
    let r = common::imap_cmd(&mut io, "b", "SELECT INBOX").await;
    assert!(r.last().is_some_and(|l| l.starts_with("b OK")), "{r:?}");
    let r = common::imap_cmd(&mut io, "c", "STORE 1 +FLAGS (\\Flagged)").await;
    assert!(r.last().is_some_and(|l| l.starts_with("c OK")), "{r:?}");

    let (seen, _) = read_until(&mut events, |_| false).await;
    assert!(seen.contains("event: state"), "pushed: {seen:?}");
    let v = j
        .one(
            "Email/get",
            json!({"ids": [id], "properties": ["keywords"]}),
        )
        .await;
    assert_eq!(v["list"][0]["keywords"], json!({"$flagged": true}));
    let v = j.one("Email/changes", json!({"sinceState": state})).await;
    assert_eq!(ids(&v["updated"]), vec![id.clone()], "{v}");

    j.one(
        "Email/set",
        json!({"update": {id.clone(): {"keywords/$answered": true}}}),
    )
    .await;
    let r = common::imap_cmd(&mut io, "d", "FETCH 1 (FLAGS)").await;
    let fetched = r.join("\n");
    assert!(
        fetched.contains("\\Answered") && fetched.contains("\\Flagged"),
        "{fetched}"
    );
    common::imap_cmd(&mut io, "e", "LOGOUT").await;
    s.shutdown().await;
}

/// Posts one request with both capabilities: (status, body as JSON, body
/// length in bytes).
async fn post_calls(j: &Jmap, calls: Value) -> (StatusCode, Value, usize) {
    let body =
        serde_json::to_vec(&json!({"using": [CORE, MAIL], "methodCalls": calls})).expect("json");
    let resp = j
        .http
        .post(format!("{}/jmap", j.base))
        .bearer_auth(&j.token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("post");
    let status = resp.status();
    let bytes = resp.bytes().await.expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        bytes.len(),
    )
}

/// A server with a member, an admin, and one side conversation holding an
/// outbound message and one inbound reply: (server, member, admin, side
/// conversation id, the reply's Email id).
async fn one_reply(parent: &str) -> (TestServer, Jmap, Jmap, i64, String) {
    let s = TestServer::start_with_http("", "max_body_bytes = 65536", NO_AUTH).await;
    let admin = make_user(&s, "ada@acme.com", "Ada", Role::Admin).await;
    let member = make_user(&s, "mo@acme.com", "Mo", Role::Member).await;
    let j = Jmap::new(&s, &member).await;
    let a = Jmap::new(&s, &admin).await;
    let (sc, reply_to) = start_thread(&s, &admin, parent).await;
    let reply = format!(
        "From: vera@carrier.example\r\nTo: {reply_to}\r\nSubject: Re: Pallet 7\r\n\r\nShipped.\r\n"
    );
    smtp_send(s.smtp, "vera@carrier.example", &[&reply_to], &reply).await;
    s.wait_ingested().await;
    let inbound: i64 = s
        .query("SELECT id FROM messages WHERE direction = 'in' ORDER BY id DESC LIMIT 1")
        .await;
    (s, j, a, sc, format!("m{inbound}"))
}

/// Core/echo with two references to the previous call doubles the
/// response each time: the values references produce are capped at
/// maxSizeRequest per request, so the chain ends in an error instead of a
/// response of 2^n bytes (a few dozen calls would exhaust memory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_references_cannot_multiply_a_response() {
    let (mut s, j, _a, _sc, _email) = one_reply("T-901").await;
    let mut calls = vec![json!(["Core/echo", {"p": "x".repeat(1000)}, "c0"])];
    for i in 1..14 {
        let r = json!({"resultOf": format!("c{}", i - 1), "name": "Core/echo", "path": ""});
        calls.push(json!(["Core/echo", {"#a": r, "#b": r}, format!("c{i}")]));
    }
    let (status, v, len) = post_calls(&j, json!(calls)).await;
    assert_eq!(status, StatusCode::OK);
    let r = v["methodResponses"].as_array().expect("responses");
    assert_eq!(r[0][0], "Core/echo");
    assert_eq!(r[1][0], "Core/echo", "{}", r[1]);
    assert_eq!(r[13][0], "error", "the chain is cut");
    assert!(
        r.iter()
            .any(|c| c[0] == "error" && c[1]["type"] == "requestTooLarge"),
        "a reference over the budget is requestTooLarge"
    );
    assert!(len < 4 * 65536, "the response stays small: {len} bytes");
    // The budget is per request: ordinary references work in the next one.
    let r = j
        .call(json!([
            ["Email/query", {"accountId": j.account}, "q"],
            ["Email/get", {"accountId": j.account, "properties": ["threadId"],
                           "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"}}, "g"],
        ]))
        .await;
    assert_eq!(r[1][0], "Email/get", "{}", r[1]);
    assert_eq!(r[1][1]["list"].as_array().map(Vec::len), Some(2));
    s.shutdown().await;
}

/// Repeated ids are answered once (RFC 8620 §5.1), so one large message
/// cannot be asked for 500 times in one call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_ids_are_answered_once() {
    let (mut s, j, _a, sc, email) = one_reply("T-902").await;
    let inbox = j.mailbox("Inbox").await.expect("inbox");
    let v = j
        .one(
            "Email/get",
            json!({"ids": [email, email, "m999999", "m999999"], "properties": ["id"]}),
        )
        .await;
    assert_eq!(v["list"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(ids(&v["notFound"]), vec!["m999999"], "{v}");
    let v = j
        .one(
            "Mailbox/get",
            json!({"ids": [inbox, inbox, "b999", "b999"]}),
        )
        .await;
    assert_eq!(v["list"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(ids(&v["notFound"]), vec!["b999"], "{v}");
    let t = format!("t{sc}");
    let v = j.one("Thread/get", json!({"ids": [t, t]})).await;
    assert_eq!(v["list"].as_array().map(Vec::len), Some(1), "{v}");
    // 500 distinct ids at most, however often each is repeated.
    let repeated = vec![email.clone(); 800];
    let v = j
        .one("Email/get", json!({"ids": repeated, "properties": ["id"]}))
        .await;
    assert_eq!(v["list"].as_array().map(Vec::len), Some(1), "{v}");
    s.shutdown().await;
}

/// Property lists are capped (each header property is work per Email and
/// per part, and a key in every object); repeating a name is harmless.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn property_lists_are_capped() {
    let (mut s, j, _a, _sc, email) = one_reply("T-903").await;
    let inbox = j.mailbox("Inbox").await.expect("inbox");
    let many: Vec<String> = (0..1000).map(|i| format!("header:X-H{i}")).collect();
    assert_eq!(
        j.error("Email/get", json!({"ids": [email], "properties": many}))
            .await,
        "invalidArguments"
    );
    assert_eq!(
        j.error(
            "Email/get",
            json!({"ids": [email], "properties": ["bodyStructure"], "bodyProperties": many})
        )
        .await,
        "invalidArguments"
    );
    let some: Vec<String> = (0..20).map(|i| format!("header:X-H{i}")).collect();
    let v = j
        .one("Email/get", json!({"ids": [email], "properties": some}))
        .await;
    assert_eq!(v["list"][0]["header:X-H19"], Value::Null, "{v}");
    let same = vec!["subject"; 3000];
    let v = j
        .one("Email/get", json!({"ids": [email], "properties": same}))
        .await;
    assert_eq!(v["list"][0]["subject"], "Re: Pallet 7", "{v}");
    let same = vec!["name"; 3000];
    let v = j
        .one("Mailbox/get", json!({"ids": [inbox], "properties": same}))
        .await;
    assert_eq!(v["list"][0]["name"], "Inbox", "{v}");
    s.shutdown().await;
}

/// A wide filter (many empty conditions or operators) is a client error,
/// not a database failure (SQLite's expression depth) logged as serverFail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wide_filters_are_client_errors() {
    let (mut s, j, _a, _sc, _email) = one_reply("T-904").await;
    let wide: Vec<Value> = (0..1100).map(|_| json!({})).collect();
    assert_eq!(
        j.error(
            "Email/query",
            json!({"filter": {"operator": "OR", "conditions": wide}})
        )
        .await,
        "invalidArguments"
    );
    let wide: Vec<Value> = (0..1100)
        .map(|_| json!({"operator": "AND", "conditions": []}))
        .collect();
    assert_eq!(
        j.error(
            "Email/query",
            json!({"filter": {"operator": "OR", "conditions": wide}})
        )
        .await,
        "invalidArguments"
    );
    // Within the limit, the same shape answers.
    let some: Vec<Value> = (0..100).map(|_| json!({})).collect();
    let v = j
        .one(
            "Email/query",
            json!({"filter": {"operator": "OR", "conditions": some}}),
        )
        .await;
    assert_eq!(ids(&v["ids"]).len(), 2, "{v}");
    s.shutdown().await;
}

/// Unrouted mail moves only the admin's states. A member who offers a
/// state beyond their own (the admin's) is told it is not one of theirs,
/// rather than learning how far the server-wide counter has moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn states_beyond_the_callers_view_are_refused() {
    let (mut s, j, a, _sc, _email) = one_reply("T-905").await;
    let lost = "From: Vera <vera@carrier.example>\r\nTo: reply@gw.example.com\r\nSubject: Lost\r\n\r\nWhere does this go?\r\n";
    smtp_send(
        s.smtp,
        "vera@carrier.example",
        &["reply@gw.example.com"],
        lost,
    )
    .await;
    s.wait_ingested().await;
    for (method, getter) in [
        ("Email/changes", "Email/get"),
        ("Mailbox/changes", "Mailbox/get"),
        ("Thread/changes", "Thread/get"),
    ] {
        let theirs = a.state(getter).await;
        let mine = j.state(getter).await;
        assert!(
            theirs.parse::<i64>().expect("number") > mine.parse::<i64>().expect("number"),
            "{method}: {theirs} {mine}"
        );
        assert_eq!(
            j.error(method, json!({"sinceState": theirs})).await,
            "cannotCalculateChanges",
            "{method}"
        );
        let v = j.one(method, json!({"sinceState": mine})).await;
        assert_eq!(v["newState"], mine, "{method}: {v}");
        assert!(ids(&v["created"]).is_empty(), "{method}: {v}");
        // The admin's own state still works for the admin.
        let v = a.one(method, json!({"sinceState": theirs})).await;
        assert_eq!(v["newState"], theirs, "{method}: {v}");
    }
    s.shutdown().await;
}

/// Push streams hold a connection each for as long as the client likes:
/// besides the per-user cap, the server holds at most half of
/// `http.max_connections` of them, so ordinary requests always find a
/// connection slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_streams_are_capped_server_wide() {
    let mut s = TestServer::start_with_http("", "max_connections = 8", NO_AUTH).await;
    let first = make_user(&s, "mo@acme.com", "Mo", Role::Member).await;
    let second = make_user(&s, "li@acme.com", "Li", Role::Member).await;
    let http = reqwest::Client::new();
    let addr = s.http;
    let open = |token: &str| {
        http.get(format!(
            "http://{addr}/jmap/eventsource?types=*&closeafter=no&ping=0"
        ))
        .bearer_auth(token)
        .send()
    };
    let mut held = Vec::new();
    for _ in 0..4 {
        let r = open(&first).await.expect("open");
        assert_eq!(r.status(), StatusCode::OK);
        held.push(r);
    }
    // The user's own cap first, then the server's (4 of 8 connections).
    assert_eq!(
        open(&first).await.expect("open").status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let refused = open(&second).await.expect("open");
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key("retry-after"));
    // Requests still get through.
    let j = Jmap::new(&s, &second).await;
    let v = j.one("Mailbox/get", json!({"ids": null})).await;
    assert!(v["list"].is_array(), "{v}");
    // A closed stream gives its slot back (once the server notices).
    drop(held.pop());
    let mut got = None;
    for _ in 0..200 {
        let r = open(&second).await.expect("open");
        if r.status() == StatusCode::OK {
            got = Some(r);
            break;
        }
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(got.is_some(), "a slot came free");
    drop(held);
    drop(got);
    s.shutdown().await;
}

/// A request that times out (http.request_timeout) leaves its method's
/// store work running: that work keeps counting against the user's
/// maxConcurrentRequests until it ends, so a client cannot pile up
/// unbounded work by letting requests time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_work_keeps_its_request_slot() {
    let mut s = TestServer::start_with_http("", "request_timeout = \"500ms\"", NO_AUTH).await;
    let member = make_user(&s, "mo@acme.com", "Mo", Role::Member).await;
    let j = Jmap::new(&s, &member).await;
    // Hold the store's writer, so Email/set work waits in its queue.
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let blocker = tokio::spawn({
        let store = s.store.clone();
        async move {
            store
                .write(move |_| {
                    let _ = wait.recv();
                    Ok(())
                })
                .await
        }
    });
    let set = json!([["Email/set", {"accountId": j.account, "update": {"m1": {"keywords/$seen": true}}}, "s"]]);
    for _ in 0..4 {
        let (status, _, _) = post_calls(&j, set.clone()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "timed out");
    }
    // Four timed-out Email/set calls still wait for the writer: a fifth
    // request is over the limit, however cheap.
    let echo = json!([["Core/echo", {}, "e"]]);
    let (status, v, _) = post_calls(&j, echo.clone()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(v["limit"], "maxConcurrentRequests", "{v}");
    release.send(()).expect("release");
    blocker.await.expect("join").expect("write");
    let mut status = StatusCode::TOO_MANY_REQUESTS;
    for _ in 0..200 {
        status = post_calls(&j, echo.clone()).await.0;
        if status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, StatusCode::OK, "the slots came back");
    s.shutdown().await;
}

/// The Emails one request returns add up to at most `http.max_body_bytes`
/// of JSON (all calls together): a large body is requestTooLarge unless
/// the client cuts it with maxBodyValueBytes (or downloads the blob).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_responses_are_bounded() {
    let (mut s, j, a, _sc, small) = one_reply("T-906").await;
    let (_, reply_to) = start_thread(&s, &a.token, "T-907").await;
    let line = "The pallet is on its way, with all the papers it needs.\r\n";
    let big = format!(
        "From: vera@carrier.example\r\nTo: {reply_to}\r\nSubject: Manifest\r\n\r\n{}",
        line.repeat(1500)
    );
    smtp_send(s.smtp, "vera@carrier.example", &[&reply_to], &big).await;
    s.wait_ingested().await;
    let inbound: i64 = s
        .query("SELECT id FROM messages WHERE direction = 'in' ORDER BY id DESC LIMIT 1")
        .await;
    let large = format!("m{inbound}");
    let body = json!({"properties": ["bodyValues"], "fetchTextBodyValues": true});
    let mut args = body.clone();
    args["ids"] = json!([large]);
    assert_eq!(j.error("Email/get", args.clone()).await, "requestTooLarge");
    // Cut, it fits; the blob has it all.
    args["maxBodyValueBytes"] = json!(1000);
    let v = j.one("Email/get", args.clone()).await;
    let value = v["list"][0]["bodyValues"]
        .as_object()
        .and_then(|o| o.values().next())
        .expect("a body value");
    assert_eq!(value["isTruncated"], true, "{v}");
    assert!(value["value"].as_str().expect("value").len() <= 1000);
    let raw = j
        .download(&format!("r{inbound}"), "m.eml", "message/rfc822")
        .await;
    assert_eq!(raw.status(), StatusCode::OK);
    assert!(raw.bytes().await.expect("raw").len() > 65536);
    // The budget is shared by the calls of one request.
    args["maxBodyValueBytes"] = json!(40000);
    let call = |id: &str| {
        let mut a = args.clone();
        a["accountId"] = json!(j.account);
        a["ids"] = json!([id]);
        json!(["Email/get", a, id])
    };
    let r = j
        .call(json!([call(&small), call(&large), call(&large)]))
        .await;
    assert_eq!(r[0][0], "Email/get", "{}", r[0]);
    assert_eq!(r[1][0], "Email/get", "{}", r[1]);
    assert_eq!(r[2][0], "error", "{}", r[2]);
    assert_eq!(r[2][1]["type"], "requestTooLarge");
    s.shutdown().await;
}

/// An admin who flags an unrouted message and then assigns it learns of
/// `m<n>` as created (with `u<n>` destroyed): the flag change before the
/// assignment belongs to `u<n>`, so it must not turn `m<n>` into an
/// "updated" id the client never had (clients skip those).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_before_assignment_do_not_hide_the_new_email() {
    let (mut s, _j, a, sc, _email) = one_reply("T-910").await;
    let lost = "From: Vera <vera@carrier.example>\r\nTo: reply@gw.example.com\r\nSubject: Lost\r\n\r\nWhere does this go?\r\n";
    smtp_send(
        s.smtp,
        "vera@carrier.example",
        &["reply@gw.example.com"],
        lost,
    )
    .await;
    s.wait_ingested().await;
    let lost_id: i64 = s
        .query("SELECT id FROM messages WHERE direction = 'in' ORDER BY id DESC LIMIT 1")
        .await;
    let state = a.state("Email/get").await;
    let v = a
        .one(
            "Email/set",
            json!({"update": {format!("u{lost_id}"): {"keywords/$seen": true}}}),
        )
        .await;
    assert!(v["updated"].is_object(), "{v}");
    let (st, v) = common::api_call(
        &s,
        "POST",
        &format!("/api/unrouted/{lost_id}/assign"),
        &a.token,
        Some(json!({"side_conversation_id": sc})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let v = a.one("Email/changes", json!({"sinceState": state})).await;
    assert_eq!(ids(&v["created"]), vec![format!("m{lost_id}")], "{v}");
    assert_eq!(ids(&v["destroyed"]), vec![format!("u{lost_id}")], "{v}");
    assert!(ids(&v["updated"]).is_empty(), "{v}");
    // Cut one change at a time, no window reports m<n> before it exists.
    let mut since = state;
    let mut seen_created = false;
    for _ in 0..10 {
        let v = a
            .one(
                "Email/changes",
                json!({"sinceState": since, "maxChanges": 1}),
            )
            .await;
        assert!(
            !ids(&v["updated"]).contains(&format!("m{lost_id}")) || seen_created,
            "{v}"
        );
        seen_created |= ids(&v["created"]).contains(&format!("m{lost_id}"));
        since = v["newState"].as_str().expect("state").to_string();
        if v["hasMoreChanges"] == false {
            break;
        }
    }
    assert!(seen_created);
    // The keyword went along.
    let v = a
        .one(
            "Email/get",
            json!({"ids": [format!("m{lost_id}")], "properties": ["keywords"]}),
        )
        .await;
    assert_eq!(v["list"][0]["keywords"], json!({"$seen": true}), "{v}");
    s.shutdown().await;
}

/// INBOX, Unrouted and the caller's Sent exist (and Mailbox/get lists them)
/// before their first message: that message makes them "updated", never
/// "created" a second time. A ticket's mailbox is created by its first
/// message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standing_mailboxes_are_never_created_again() {
    let mut s = TestServer::start_with("", NO_AUTH).await;
    let admin = make_user(&s, "ada@acme.com", "Ada", Role::Admin).await;
    let a = Jmap::new(&s, &admin).await;
    let inbox = a.mailbox("Inbox").await.expect("inbox before any mail");
    let unrouted = a
        .mailbox("Unrouted")
        .await
        .expect("unrouted before any mail");
    let sent = a.mailbox("Sent").await.expect("sent before any mail");
    let state = a.state("Mailbox/get").await;
    let (_, reply_to) = start_thread(&s, &admin, "T-911").await;
    let reply = format!(
        "From: vera@carrier.example\r\nTo: {reply_to}\r\nSubject: Re: Pallet 7\r\n\r\nShipped.\r\n"
    );
    smtp_send(s.smtp, "vera@carrier.example", &[&reply_to], &reply).await;
    let lost = "From: Vera <vera@carrier.example>\r\nTo: reply@gw.example.com\r\nSubject: Lost\r\n\r\nWhere does this go?\r\n";
    smtp_send(
        s.smtp,
        "vera@carrier.example",
        &["reply@gw.example.com"],
        lost,
    )
    .await;
    s.wait_ingested().await;
    let ticket = a.mailbox("T-911").await.expect("ticket mailbox");
    let v = a.one("Mailbox/changes", json!({"sinceState": state})).await;
    assert_eq!(ids(&v["created"]), vec![ticket], "{v}");
    let mut updated = ids(&v["updated"]);
    updated.sort();
    let mut want = vec![inbox, unrouted, sent];
    want.sort();
    assert_eq!(updated, want, "{v}");
    s.shutdown().await;
}

/// The `[jmap]` limits are config keys: the session resource reports the
/// configured values and the API enforces them (RFC 8620 §3.6.1 `limit`
/// problems, `requestTooLarge` and `invalidArguments` method errors).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_limits_are_reported_and_enforced() {
    let rest = format!(
        "{NO_AUTH}[jmap]\nmax_calls_in_request = 2\nmax_objects_in_get = 3\n\
         max_objects_in_set = 4\nmax_concurrent_requests = 5\nmax_size_request = 20000\n\
         max_properties = 2\nmax_query_results = 6\nmax_filter_conditions = 5\n"
    );
    let mut s = TestServer::start_with_http("", "", &rest).await;
    let member = make_user(&s, "mo@acme.com", "Mo", Role::Member).await;
    let session: Value = reqwest::Client::new()
        .get(format!("http://{}/.well-known/jmap", s.http))
        .bearer_auth(&member)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let core = &session["capabilities"][CORE];
    assert_eq!(core["maxCallsInRequest"], 2, "{core}");
    assert_eq!(core["maxObjectsInGet"], 3, "{core}");
    assert_eq!(core["maxObjectsInSet"], 4, "{core}");
    assert_eq!(core["maxConcurrentRequests"], 5, "{core}");
    assert_eq!(core["maxSizeRequest"], 20000, "{core}");

    let j = Jmap::new(&s, &member).await;
    // Two calls are fine, three are a request-level `limit` problem.
    let two = json!([["Core/echo", {"n": 1}, "a"], ["Core/echo", {"n": 2}, "b"]]);
    assert_eq!(j.call(two).await.len(), 2);
    let three = json!({"using": [CORE], "methodCalls": [
        ["Core/echo", {}, "a"], ["Core/echo", {}, "b"], ["Core/echo", {}, "c"]]});
    let (status, ctype, v) = j.post_raw(serde_json::to_vec(&three).expect("json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(ctype, "application/problem+json");
    assert_eq!(v["type"], "urn:ietf:params:jmap:error:limit", "{v}");
    assert_eq!(v["limit"], "maxCallsInRequest", "{v}");
    // A body over maxSizeRequest (but far under http.max_body_bytes).
    let big =
        json!({"using": [CORE], "methodCalls": [["Core/echo", {"x": "y".repeat(30000)}, "a"]]});
    let (status, _, v) = j.post_raw(serde_json::to_vec(&big).expect("json")).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(v["type"], "urn:ietf:params:jmap:error:limit", "{v}");
    assert_eq!(v["limit"], "maxSizeRequest", "{v}");

    // Per-method limits.
    let ids4 = json!(["b1", "b2", "b3", "b4"]);
    assert_eq!(
        j.error("Mailbox/get", json!({"ids": ids4})).await,
        "requestTooLarge"
    );
    let v = j
        .one("Mailbox/get", json!({"ids": ["x1", "x2", "x3"]}))
        .await;
    assert_eq!(v["notFound"].as_array().map(Vec::len), Some(3), "{v}");
    assert_eq!(
        j.error(
            "Mailbox/get",
            json!({"ids": null, "properties": ["name", "role", "sortOrder"]})
        )
        .await,
        "invalidArguments"
    );
    j.one(
        "Mailbox/get",
        json!({"ids": null, "properties": ["name", "role"]}),
    )
    .await;
    let destroy: Vec<String> = (1..=5).map(|n| format!("m{n}")).collect();
    assert_eq!(
        j.error("Email/set", json!({"destroy": destroy})).await,
        "requestTooLarge"
    );
    let v = j.one("Email/query", json!({})).await;
    assert_eq!(v["limit"], 6, "the default and largest limit: {v}");
    let v = j.one("Email/query", json!({"limit": 100})).await;
    assert_eq!(v["limit"], 6, "{v}");
    // The operator, each condition object and each property count: an OR
    // of two one-property conditions is 5, of three is 7.
    let conds = |n: usize| -> Value {
        json!({"operator": "OR", "conditions":
            (0..n).map(|i| json!({"subject": format!("s{i}")})).collect::<Vec<_>>()})
    };
    j.one("Email/query", json!({"filter": conds(2)})).await;
    assert_eq!(
        j.error("Email/query", json!({"filter": conds(3)})).await,
        "invalidArguments"
    );
    s.shutdown().await;
}

/// One HTML → text for every reader: the preview of an HTML-only message is
/// `reply_text::html_to_text` of its HTML (blanks collapsed, 256 characters),
/// the same text ingest stored for the portal, IMAP SEARCH and the
/// classifier. Lists, blocks, table cells and quotes are where another
/// converter (mail-parser's) would read differently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_of_html_only_mail_is_the_gateways_text() {
    let mut s = TestServer::start_with_http("", "max_body_bytes = 65536", NO_AUTH).await;
    let admin = make_user(&s, "ada@acme.com", "Ada", Role::Admin).await;
    let j = Jmap::new(&s, &admin).await;
    let (_, reply_to) = start_thread(&s, &admin, "T-HTML").await;
    let filler = "Lorem ipsum dolor sit amet. ".repeat(12);
    let html = format!(
        "<html><head><title>ignored</title><style>p {{ color: red }}</style></head><body>\
         <div>Pallet&nbsp;7</div><div>ships Monday</div>\
         <ul><li>one</li><li>two</li></ul>\
         <table><tr><td>cell a</td><td>cell b</td></tr></table>\
         <blockquote>quoted</blockquote><p>{filler}</p></body></html>"
    );
    let reply = format!(
        "From: vera@carrier.example\r\nTo: {reply_to}\r\nSubject: Re: Pallet 7\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n"
    );
    smtp_send(s.smtp, "vera@carrier.example", &[&reply_to], &reply).await;
    s.wait_ingested().await;
    let inbound: i64 = s
        .query("SELECT id FROM messages WHERE direction = 'in' ORDER BY id DESC LIMIT 1")
        .await;
    let stored: String = s
        .query("SELECT text_body FROM messages WHERE direction = 'in' ORDER BY id DESC LIMIT 1")
        .await;
    let v = j
        .one(
            "Email/get",
            json!({"ids": [format!("m{inbound}")], "properties": ["preview"]}),
        )
        .await;
    let preview = v["list"][0]["preview"].as_str().expect("preview");
    let collapse = |t: &str| -> String {
        t.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(256)
            .collect()
    };
    let want = collapse(&backchannel::reply_text::html_to_text(&html));
    assert_eq!(preview, want);
    assert_eq!(preview, collapse(&stored), "the text ingest stored");
    assert!(
        preview.starts_with("Pallet 7 ships Monday - one - two cell a cell b > quoted Lorem"),
        "{preview}"
    );
    assert_eq!(preview.chars().count(), 256);
    s.shutdown().await;
}
