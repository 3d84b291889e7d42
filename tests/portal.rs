//! The vendor portal (SPEC §8) over real HTTP against the in-process
//! server: what the page shows and hides, escaping of hostile mail, the
//! security headers, attachment downloads through the token, replies from
//! the form with the effects of an email reply and copies to the other
//! participants, CSRF, revocation, closed conversations, upload and rate
//! limits.

mod common;

use backchannel::model::Role;
use common::{TestServer, smtp_send};
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

const NO_AUTH: &str = "";

struct Portal {
    base: String,
    /// Never follows redirects, so 303s can be checked.
    http: reqwest::Client,
    agent: String,
}

struct Started {
    id: i64,
    token: String,
    portal: String,
    first_message: i64,
}

impl Portal {
    async fn new(s: &TestServer) -> Portal {
        let agent = common::make_user(s, "mia@acme.com", "Mia Member", Role::Member).await;
        Portal {
            base: format!("http://{}", s.http),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            agent,
        }
    }

    async fn api(&self, method: &str, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .http
            .request(m, format!("{}{path}", self.base))
            .bearer_auth(token);
        if !body.is_null() {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn start(&self, parent: &str, body: Value) -> Started {
        let (st, v) = self
            .api(
                "POST",
                &format!("/api/parents/{parent}/side-conversations"),
                &self.agent,
                body,
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        let url = v["portal_url"].as_str().expect("portal_url").to_string();
        let portal = url.split("/p/").nth(1).expect("token in url").to_string();
        Started {
            id: v["id"].as_i64().expect("id"),
            token: v["token"].as_str().expect("token").to_string(),
            portal,
            first_message: v["messages"][0]["id"].as_i64().expect("message id"),
        }
    }

    async fn get(&self, path: &str) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("get");
        let status = resp.status();
        let headers = resp.headers().clone();
        (status, headers, resp.text().await.expect("text"))
    }

    async fn page(&self, portal: &str) -> String {
        let (st, _, body) = self.get(&format!("/p/{portal}")).await;
        assert_eq!(st, StatusCode::OK, "{body}");
        body
    }

    async fn csrf(&self, portal: &str) -> String {
        let page = self.page(portal).await;
        let start = page
            .find("name=\"csrf\" value=\"")
            .expect("the page has a form")
            + "name=\"csrf\" value=\"".len();
        let end = page[start..].find('"').expect("end of value") + start;
        page[start..end].to_string()
    }

    async fn post(
        &self,
        portal: &str,
        form: Form,
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        self.post_with(portal, form, None).await
    }

    async fn post_with(
        &self,
        portal: &str,
        form: Form,
        origin: Option<&str>,
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let mut req = self
            .http
            .post(format!("{}/p/{portal}/reply", self.base))
            .multipart(form);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        let resp = req.send().await.expect("post");
        let status = resp.status();
        let headers = resp.headers().clone();
        (status, headers, resp.text().await.unwrap_or_default())
    }
}

fn file(name: &str, ctype: &str, data: Vec<u8>) -> Part {
    Part::bytes(data)
        .file_name(name.to_string())
        .mime_str(ctype)
        .expect("mime")
}

fn assert_hardened(h: &reqwest::header::HeaderMap) {
    let csp = h["content-security-policy"].to_str().expect("csp");
    for part in [
        "default-src 'none'",
        "img-src 'self' data:",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(part), "CSP lacks {part}: {csp}");
    }
    assert!(
        csp.contains("style-src 'sha256-"),
        "style allowed by hash only: {csp}"
    );
    assert!(!csp.contains("unsafe-inline") && !csp.contains("script-src"));
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["cache-control"], "no-store");
}

/// The style element's hash is the one the CSP allows.
fn assert_style_hash_matches(page: &str, h: &reqwest::header::HeaderMap) {
    use sha2::{Digest, Sha256};
    let start = page.find("<style>").expect("style") + "<style>".len();
    let end = page.find("</style>").expect("end of style");
    let digest = Sha256::digest(&page.as_bytes()[start..end]);
    let b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(digest)
    };
    let csp = h["content-security-policy"].to_str().expect("csp");
    assert!(csp.contains(&format!("'sha256-{b64}'")), "{csp}");
}

/// A reply from `from` (a From header value), sent with its address as the
/// envelope sender: from a verified domain of the harness, it shows on the
/// portal.
async fn vendor_reply(s: &TestServer, from: &str, token: &str, body: &str) {
    let address = from
        .rsplit_once('<')
        .map_or(from, |(_, a)| a.trim_end_matches('>'));
    let r = smtp_send(
        s.smtp,
        address,
        &[&format!("reply+{token}@gw.example.com")],
        &format!(
            "From: {from}\nTo: reply+{token}@gw.example.com\nSubject: Re: shipment\nMessage-ID: <{}@carrier.example>\n{body}",
            backchannel::model::base32_lower(&backchannel::model::random_bytes::<8>())
        ),
    )
    .await;
    assert!(r.starts_with("250"), "{r}");
    s.wait_ingested().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_what_the_vendor_saw_and_nothing_internal() {
    let mut s = TestServer::start_with("", NO_AUTH).await;
    let p = Portal::new(&s).await;
    let (st, v) = p
        .api(
            "PUT",
            "/api/parents/T-100",
            &p.agent,
            json!({"subject": "Customer is angry", "requester": {"name": "Rita Requester", "email": "rita@customer.example"}}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let a = p
        .start(
            "T-100",
            json!({"to": ["vic@carrier.example"], "subject": "Pallet 7 delayed",
                   "body_text": "Hello Vic,\nwhere is pallet 7?", "share_portal_link": true}),
        )
        .await;
    let b = p
        .start(
            "T-100",
            json!({"to": ["other@supplier.example"], "subject": "Other matter",
                   "body_text": "Secret other thread", "share_portal_link": true}),
        )
        .await;
    vendor_reply(
        &s,
        "Vic Vendor <vic@carrier.example>",
        &a.token,
        "\nIt ships tomorrow morning.\n",
    )
    .await;
    vendor_reply(
        &s,
        "vic@carrier.example",
        &a.token,
        "Auto-Submitted: auto-replied\n\nI am out of the office until Monday.\n",
    )
    .await;
    vendor_reply(
        &s,
        "stranger@elsewhere.example",
        &b.token,
        "\nReply on the other thread.\n",
    )
    .await;

    let (st, h, page) = p.get(&format!("/p/{}", a.portal)).await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        h["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/html")
    );
    assert_hardened(&h);
    assert_style_hash_matches(&page, &h);
    assert!(!page.contains("<script"), "no script on the page");
    assert!(page.contains("<h1>Pallet 7 delayed</h1>"), "{page}");
    assert!(page.contains("where is pallet 7?"));
    assert!(page.contains("It ships tomorrow morning."));
    assert!(page.contains("Vic Vendor"));
    assert!(page.contains("Mia Member"), "the agent's name as sent");
    // Order: the agent's message, then the reply.
    assert!(page.find("where is pallet 7?") < page.find("It ships tomorrow morning."));
    assert!(page.contains("2 messages"), "{page}");
    for hidden in [
        "out of the office",
        "Secret other thread",
        "Reply on the other thread",
        "rita@customer.example",
        "Rita Requester",
        "Customer is angry",
        "started a side conversation",
        "unverified_sender",
        "mia@acme.com",
    ] {
        assert!(!page.contains(hidden), "the page shows {hidden:?}");
    }
    // A form with a CSRF token; tokens are matched case-insensitively.
    assert!(page.contains("name=\"csrf\""));
    assert!(page.contains("enctype=\"multipart/form-data\""));
    let (st, _, _) = p.get(&format!("/p/{}", a.portal.to_uppercase())).await;
    assert_eq!(st, StatusCode::OK);

    // Unknown and malformed tokens: the same 404 page, hardened too.
    for bad in [
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_string(),
        "x".to_string(),
        a.token.clone(),
        format!("{}%3Cscript%3E", a.portal),
    ] {
        let (st, h, body) = p.get(&format!("/p/{bad}")).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{bad}");
        assert_hardened(&h);
        assert!(body.contains("Link not found"), "{body}");
        assert!(!body.contains("<form"));
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_mail_content_is_shown_as_text() {
    let mut s = TestServer::start_with("", NO_AUTH).await;
    let p = Portal::new(&s).await;
    let a = p
        .start(
            "T-200",
            json!({"to": ["vic@carrier.example"], "subject": "Pallet <b>7</b> \"delayed\"",
                   "body_text": "Where is it?", "share_portal_link": true}),
        )
        .await;
    vendor_reply(
        &s,
        "\"Vic <i>Vendor</i>\" <vic@carrier.example>",
        &a.token,
        "MIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=\"b1\"\n\n--b1\nContent-Type: text/plain; charset=utf-8\n\nHi <script>alert(1)</script> and <img src=x onerror=alert(2)>\nSee <a href=\"javascript:alert(3)\">this</a>\n--b1\nContent-Type: text/html; charset=utf-8\n\n<p>Hi <script>alert(1)</script> <img src=x onerror=alert(2)> <a href=\"javascript:alert(3)\">this</a></p>\n--b1--\n",
    )
    .await;
    // HTML only: its text is shown, entities decoded and then escaped.
    vendor_reply(
        &s,
        "vic@carrier.example",
        &a.token,
        "MIME-Version: 1.0\nContent-Type: text/html; charset=utf-8\n\n<p>Decoded &lt;script&gt;alert(4)&lt;/script&gt;</p><iframe src=\"javascript:alert(5)\"></iframe><style>body{display:none}</style>\n",
    )
    .await;
    let page = p.page(&a.portal).await;
    assert!(!page.contains("<script"), "{page}");
    assert!(!page.contains("<img"), "{page}");
    assert!(!page.contains("<iframe"), "{page}");
    assert!(!page.contains("<a href=\"javascript"), "{page}");
    assert!(!page.contains("href=\"javascript"), "{page}");
    assert!(!page.contains("<i>Vendor"), "{page}");
    assert!(!page.contains("<b>7"), "{page}");
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(
        page.contains("&lt;img src=x onerror=alert(2)&gt;"),
        "{page}"
    );
    assert!(page.contains("&lt;a href=&quot;javascript:alert(3)&quot;&gt;"));
    assert!(
        page.contains("Decoded &lt;script&gt;alert(4)&lt;/script&gt;"),
        "{page}"
    );
    assert!(page.contains("Vic &lt;i&gt;Vendor&lt;/i&gt;"));
    assert!(page.contains("Pallet &lt;b&gt;7&lt;/b&gt; &quot;delayed&quot;"));
    // Only our own style element: the mail's <style> never reaches the page.
    assert_eq!(page.matches("<style>").count(), 1);
    assert!(!page.contains("display:none"));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_download_through_the_token_only_for_their_thread() {
    let mut s = TestServer::start_with("", NO_AUTH).await;
    let p = Portal::new(&s).await;
    let a = p
        .start(
            "T-300",
            json!({"to": ["vic@carrier.example"], "subject": "Docs", "body_text": "Attached the order.",
                   "share_portal_link": true,
                   "attachments": [{"filename": "order.pdf", "content_type": "application/pdf", "content_base64": "JVBERi0xLjQK"}]}),
        )
        .await;
    let b = p
        .start(
            "T-301",
            json!({"to": ["sue@supplier.example"], "subject": "Other", "body_text": "x", "share_portal_link": true}),
        )
        .await;
    let attachment = "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"m\"\n\n--m\nContent-Type: text/plain\n\nManifest attached.\n--m\nContent-Type: text/html; name=\"manifest.html\"\nContent-Disposition: attachment; filename=\"manifest.html\"\n\n<script>alert('file')</script>\n--m--\n";
    vendor_reply(&s, "vic@carrier.example", &a.token, attachment).await;
    vendor_reply(&s, "sue@supplier.example", &b.token, attachment).await;
    let ids: Vec<i64> = {
        let (_, v) = p
            .api(
                "GET",
                &format!("/api/side-conversations/{}", a.id),
                &p.agent,
                Value::Null,
            )
            .await;
        v["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| m["id"].as_i64().expect("id"))
            .collect()
    };
    let (_, vb) = p
        .api(
            "GET",
            &format!("/api/side-conversations/{}", b.id),
            &p.agent,
            Value::Null,
        )
        .await;
    let b_reply = vb["messages"][1]["id"].as_i64().expect("b reply");
    let vendor_msg = ids[1];

    let page = p.page(&a.portal).await;
    let link = format!("{}/attachments/{vendor_msg}/0", a.portal);
    assert!(page.contains(&format!("href=\"{link}\"")), "{page}");
    assert!(page.contains("manifest.html"));
    assert!(page.contains(&format!(
        "href=\"{}/attachments/{}/0\"",
        a.portal, a.first_message
    )));

    let (st, h, body) = p.get(&format!("/p/{link}")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body.trim_end(), "<script>alert('file')</script>");
    assert!(
        h["content-disposition"]
            .to_str()
            .expect("cd")
            .starts_with("attachment; filename=\"manifest.html\"")
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert!(
        h["content-security-policy"]
            .to_str()
            .expect("csp")
            .contains("sandbox")
    );
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["cache-control"], "no-store");
    let (st, h, body) = p
        .get(&format!(
            "/p/{}/attachments/{}/0",
            a.portal, a.first_message
        ))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h["content-type"], "application/pdf");
    assert_eq!(body, "%PDF-1.4\n");

    // Another side conversation's attachment, through this token: 404.
    for path in [
        format!("/p/{}/attachments/{b_reply}/0", a.portal),
        format!("/p/{}/attachments/{vendor_msg}/1", a.portal),
        format!("/p/{}/attachments/{vendor_msg}/-1", a.portal),
        format!("/p/{}/attachments/abc/0", a.portal),
        format!("/p/{}/attachments/{vendor_msg}/0", "a".repeat(32)),
    ] {
        let (st, h, _) = p.get(&path).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{path}");
        assert_hardened(&h);
    }
    let (st, _, _) = p
        .get(&format!("/p/{}/attachments/{b_reply}/0", b.portal))
        .await;
    assert_eq!(st, StatusCode::OK, "the right token serves it");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_reply_is_threaded_like_an_email_reply_and_copied_to_the_others() {
    let mut s = TestServer::start_with("", NO_AUTH).await;
    let p = Portal::new(&s).await;
    s.sql
        .write(|c| {
            c.execute(
                "INSERT INTO webhooks (url, secret, events, created_at) VALUES ('http://127.0.0.1:9/hook', 's', '[]', 0)",
                [],
            )?;
            Ok(())
        })
        .await
        .expect("webhook");
    let (st, _) = p
        .api(
            "PUT",
            "/api/parents/T-400",
            &p.agent,
            json!({"status": "snoozed"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let a = p
        .start(
            "T-400",
            json!({"to": ["amy@carrier.example", "bob@carrier.example"], "cc": ["cal@broker.example"],
                   "subject": "Pallet 7", "body_text": "Where is pallet 7?", "share_portal_link": true}),
        )
        .await;
    // Each recipient has a link of their own (SPEC §8): Bob's replies as
    // Bob only; the answer's portal_url is the first recipient's.
    let (_, v) = p
        .api(
            "GET",
            &format!("/api/side-conversations/{}", a.id),
            &p.agent,
            Value::Null,
        )
        .await;
    let links = v["portal_links"].as_array().expect("portal_links");
    assert_eq!(links.len(), 3, "{v}");
    let link_of = |email: &str| {
        let url = links
            .iter()
            .find(|l| l["email"] == email)
            .and_then(|l| l["url"].as_str())
            .expect("a link per recipient");
        url.split("/p/").nth(1).expect("token").to_string()
    };
    assert_eq!(link_of("amy@carrier.example"), a.portal);
    let bob = link_of("bob@carrier.example");
    assert_ne!(bob, a.portal);
    let csrf = p.csrf(&bob).await;
    let page = p.page(&bob).await;
    assert!(!page.contains("<select"), "no choice of identity: {page}");
    assert!(page.contains("bob@carrier.example"), "{page}");
    assert!(!page.contains("amy@carrier.example"), "{page}");

    // Nobody else may be named as the author, participant or not.
    for other in ["mallory@evil.example", "amy@carrier.example"] {
        let form = Form::new()
            .text("csrf", csrf.clone())
            .text("email", other)
            .text("text", "hi");
        let (st, h, body) = p.post(&bob, form).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_hardened(&h);
        assert!(
            body.contains("replies as bob@carrier.example only"),
            "{body}"
        );
    }

    let form = Form::new()
        .text("csrf", csrf.clone())
        .text("text", "It left the depot at 9:00.\nTracking attached.")
        .part(
            "attachment",
            file("tracking.pdf", "application/pdf", b"%PDF-tracking".to_vec()),
        )
        .part("attachment", Part::bytes(Vec::new()).file_name(""));
    let (st, h, body) = p.post(&bob, form).await;
    assert_eq!(st, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(
        h["location"].to_str().expect("location"),
        format!("../{bob}?sent=1")
    );
    let page = p.page(&format!("{bob}?sent=1")).await;
    assert!(page.contains("Your reply was sent."));
    assert!(page.contains("It left the depot at 9:00."));
    assert!(page.contains("tracking.pdf"));
    assert!(
        page.contains("2 messages"),
        "the relayed copy is not shown twice: {page}"
    );

    // On the thread through the API.
    let (_, v) = p
        .api(
            "GET",
            &format!("/api/side-conversations/{}", a.id),
            &p.agent,
            Value::Null,
        )
        .await;
    let msgs = v["messages"].as_array().expect("messages");
    let reply = msgs
        .iter()
        .find(|m| m["direction"] == "in")
        .expect("the portal reply");
    assert_eq!(reply["route"], "portal");
    assert_eq!(reply["kind"], "reply");
    assert_eq!(reply["from"]["email"], "bob@carrier.example");
    assert_eq!(reply["flags"], json!([]));
    assert_eq!(
        reply["visible_reply"],
        "It left the depot at 9:00.\nTracking attached."
    );
    assert_eq!(reply["attachments"].as_array().map(Vec::len), Some(1));
    assert_eq!(reply["attachments"][0]["filename"], "tracking.pdf");
    let first_mid = msgs[0]["message_id"].as_str().expect("first Message-ID");
    assert_eq!(reply["in_reply_to"].as_str(), Some(first_mid));
    let reply_id = reply["id"].as_i64().expect("id");
    let raw = p
        .http
        .get(format!("{}/api/messages/{reply_id}/raw", p.base))
        .bearer_auth(&p.agent)
        .send()
        .await
        .expect("raw")
        .text()
        .await
        .expect("raw text");
    assert!(raw.contains("Message-ID: <portal."), "{raw}");
    assert!(raw.contains("@gw.example.com>"), "{raw}");
    assert!(
        raw.contains("From: <bob@carrier.example>") || raw.contains("From: bob@carrier.example"),
        "{raw}"
    );
    assert!(
        raw.contains(&format!("reply+{}@gw.example.com", a.token)),
        "{raw}"
    );
    assert!(
        raw.contains(&format!("In-Reply-To: <{first_mid}>")),
        "{raw}"
    );
    assert!(raw.contains("tracking.pdf"));

    // Effects: parent woken, activity, webhook event.
    let (_, parent) = p
        .api("GET", "/api/parents/T-400", &p.agent, Value::Null)
        .await;
    assert_eq!(parent["status"], "open");
    let (_, activity) = p
        .api("GET", "/api/parents/T-400/activity", &p.agent, Value::Null)
        .await;
    let texts: Vec<&str> = activity["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["text"].as_str())
        .collect();
    assert!(
        texts.contains(&"bob@carrier.example replied in a side conversation"),
        "{texts:?}"
    );
    let received: i64 = s
        .query("SELECT COUNT(*) FROM webhook_deliveries WHERE event = 'message.received'")
        .await;
    assert_eq!(received, 1);
    let woken: i64 = s
        .query("SELECT COUNT(*) FROM webhook_deliveries WHERE event = 'parent.woken'")
        .await;
    assert_eq!(woken, 1);
    // The agent who started it is told, as for an email reply.
    let notified: i64 = s
        .query(&format!(
            "SELECT COUNT(*) FROM notification_queue WHERE message_id = {reply_id}"
        ))
        .await;
    assert_eq!(notified, 1);

    // The copy to everyone else, from the sender in Bob's name.
    let copy = msgs
        .iter()
        .find(|m| m["direction"] == "out" && m["route"] == "portal")
        .expect("the relayed copy");
    let mut rcpts: Vec<&str> = copy["delivery"]
        .as_array()
        .expect("delivery")
        .iter()
        .filter_map(|d| d["recipient"].as_str())
        .collect();
    rcpts.sort();
    assert_eq!(rcpts, ["amy@carrier.example", "cal@broker.example"]);
    let copy_id = copy["id"].as_i64().expect("copy id");
    let copy_raw = p
        .http
        .get(format!("{}/api/messages/{copy_id}/raw", p.base))
        .bearer_auth(&p.agent)
        .send()
        .await
        .expect("raw")
        .text()
        .await
        .expect("raw text");
    assert!(
        copy_raw.contains("From: \"bob@carrier.example\" <reply@gw.example.com>"),
        "{copy_raw}"
    );
    assert!(
        copy_raw.contains(&format!("Reply-To: <reply+{}@gw.example.com>", a.token)),
        "{copy_raw}"
    );
    assert!(copy_raw.contains("It left the depot at 9:00."));
    assert!(copy_raw.contains("tracking.pdf"));
    let outbox_rows: i64 = s
        .query(&format!(
            "SELECT COUNT(*) FROM outbox WHERE message_id = {copy_id}"
        ))
        .await;
    assert_eq!(outbox_rows, 2);
    // Each copy carries its recipient's own link, never Bob's or another's.
    for (who, link) in [
        ("amy@carrier.example", link_of("amy@carrier.example")),
        ("cal@broker.example", link_of("cal@broker.example")),
    ] {
        let (id, msg): (i64, i64) = s
            .sql
            .read({
                let who = who.to_string();
                move |c| {
                    Ok(c.query_row(
                        "SELECT id, message_id FROM outbox WHERE message_id = ?1 AND recipient = ?2",
                        rusqlite::params![copy_id, who],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )?)
                }
            })
            .await
            .expect("outbox row");
        let sent: Vec<u8> = s
            .store
            .read(move |db| backchannel::store::outbox::raw(db, id, msg))
            .await
            .expect("sent copy");
        let sent = String::from_utf8_lossy(&sent);
        assert!(sent.contains(&format!("/p/{link}")), "{who}: {sent}");
        assert!(!sent.contains(&format!("/p/{bob}")), "{who}: {sent}");
    }

    // Amy's own link replies as Amy.
    let amy_csrf = p.csrf(&a.portal).await;
    let form = Form::new()
        .text("csrf", amy_csrf)
        .text("text", "Second note.");
    let (st, _, body) = p.post(&a.portal, form).await;
    assert_eq!(st, StatusCode::SEE_OTHER, "{body}");
    let author: String = s
        .query("SELECT from_email FROM messages WHERE route = 'portal' AND direction = 'in' ORDER BY id DESC LIMIT 1")
        .await;
    assert_eq!(author, "amy@carrier.example");
    // An empty reply is refused.
    let form = Form::new().text("csrf", csrf).text("text", "   ");
    let (st, _, body) = p.post(&bob, form).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("Write a reply or attach a file."), "{body}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_need_the_form_token_of_this_page() {
    let mut s = TestServer::start_with("", NO_AUTH).await;
    let p = Portal::new(&s).await;
    let a = p
        .start(
            "T-500",
            json!({"to": ["vic@carrier.example"], "subject": "A", "body_text": "a", "share_portal_link": true}),
        )
        .await;
    let b = p
        .start(
            "T-501",
            json!({"to": ["sue@supplier.example"], "subject": "B", "body_text": "b", "share_portal_link": true}),
        )
        .await;
    let csrf_a = p.csrf(&a.portal).await;
    let csrf_b = p.csrf(&b.portal).await;
    let cases: Vec<(&str, Option<String>, Option<&str>)> = vec![
        ("missing", None, None),
        ("wrong", Some("6745a1b2.00ff".to_string()), None),
        ("another page's", Some(csrf_b), None),
        (
            "cross-site origin",
            Some(csrf_a.clone()),
            Some("https://evil.example"),
        ),
    ];
    for (what, csrf, origin) in cases {
        let mut form = Form::new().text("text", "hello");
        if let Some(c) = csrf {
            form = form.text("csrf", c);
        }
        let (st, h, body) = p.post_with(&a.portal, form, origin).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{what}: {body}");
        assert_hardened(&h);
        assert!(body.contains("Your reply was not sent"), "{body}");
    }
    let stored: i64 = s
        .query("SELECT COUNT(*) FROM messages WHERE route = 'portal'")
        .await;
    assert_eq!(stored, 0);
    // The page's own post: same origin, or `null` under no-referrer.
    for origin in [Some(p.base.as_str()), Some("null")] {
        let form = Form::new().text("csrf", csrf_a.clone()).text("text", "ok");
        let (st, _, body) = p.post_with(&a.portal, form, origin).await;
        assert_eq!(st, StatusCode::SEE_OTHER, "{origin:?}: {body}");
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_link_is_gone() {
    let mut s = TestServer::start_with("", NO_AUTH).await;
    let p = Portal::new(&s).await;
    let viewer = common::make_user(&s, "val@acme.com", "Val Viewer", Role::Viewer).await;
    let a = p
        .start(
            "T-600",
            json!({"to": ["vic@carrier.example"], "subject": "A", "body_text": "a", "share_portal_link": true,
                   "attachments": [{"filename": "a.txt", "content_type": "text/plain", "content_base64": "aGk="}]}),
        )
        .await;
    let csrf = p.csrf(&a.portal).await;
    let revoke = format!("/api/side-conversations/{}/portal/revoke", a.id);
    let (st, _) = p.api("POST", &revoke, &viewer, Value::Null).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = p
        .api(
            "POST",
            "/api/side-conversations/99999/portal/revoke",
            &p.agent,
            Value::Null,
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, v) = p.api("POST", &revoke, &p.agent, Value::Null).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["id"], a.id);
    assert_eq!(v["portal_url"], Value::Null);
    let (st, v) = p.api("POST", &revoke, &p.agent, Value::Null).await;
    assert_eq!((st, &v["portal_url"]), (StatusCode::OK, &Value::Null));

    let (st, h, body) = p.get(&format!("/p/{}", a.portal)).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_hardened(&h);
    assert!(body.contains("Link not found"));
    let (st, _, _) = p
        .get(&format!(
            "/p/{}/attachments/{}/0",
            a.portal, a.first_message
        ))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let form = Form::new().text("csrf", csrf).text("text", "still there?");
    let (st, _, _) = p.post(&a.portal, form).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // Later mail no longer carries the link.
    let (st, v) = p
        .api(
            "POST",
            &format!("/api/side-conversations/{}/messages", a.id),
            &p.agent,
            json!({"body_text": "follow-up"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert!(!v["text"].as_str().expect("text").contains("/p/"), "{v}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_conversation_is_read_only() {
    let mut s = TestServer::start_with("", NO_AUTH).await;
    let p = Portal::new(&s).await;
    let a = p
        .start(
            "T-700",
            json!({"to": ["vic@carrier.example"], "subject": "A", "body_text": "Closing soon", "share_portal_link": true}),
        )
        .await;
    let csrf = p.csrf(&a.portal).await;
    let (st, _) = p
        .api(
            "POST",
            &format!("/api/side-conversations/{}/close", a.id),
            &p.agent,
            Value::Null,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let page = p.page(&a.portal).await;
    assert!(page.contains("Closing soon"));
    assert!(!page.contains("<form"), "{page}");
    assert!(!page.contains("name=\"csrf\""));
    assert!(page.contains("This conversation is closed."));
    assert!(
        page.contains("A reply by email still reaches the team."),
        "{page}"
    );
    assert!(page.contains("badge closed"));
    let form = Form::new()
        .text("csrf", csrf)
        .text("text", "Can we reopen?");
    let (st, h, body) = p.post(&a.portal, form).await;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
    assert_hardened(&h);
    assert!(body.contains("This conversation is closed"));
    assert!(
        body.contains("A reply by email still reaches the team"),
        "{body}"
    );
    let (_, v) = p
        .api(
            "GET",
            &format!("/api/side-conversations/{}", a.id),
            &p.agent,
            Value::Null,
        )
        .await;
    assert_eq!(v["status"], "closed");
    assert_eq!(v["messages"].as_array().map(Vec::len), Some(1));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_over_the_limit_are_refused_while_reading() {
    let mut s = TestServer::start_with("", NO_AUTH).await;
    let p = Portal::new(&s).await;
    let a = p
        .start(
            "T-800",
            json!({"to": ["vic@carrier.example"], "subject": "A", "body_text": "a", "share_portal_link": true}),
        )
        .await;
    let csrf = p.csrf(&a.portal).await;
    let limit = 10 * 1024 * 1024;
    // One file over the limit, and two that are only together.
    let forms = [
        Form::new()
            .text("csrf", csrf.clone())
            .text("text", "big")
            .part(
                "attachment",
                file("big.bin", "application/octet-stream", vec![7u8; limit + 1]),
            ),
        Form::new()
            .text("csrf", csrf.clone())
            .text("text", "two")
            .part(
                "attachment",
                file(
                    "a.bin",
                    "application/octet-stream",
                    vec![1u8; limit / 2 + 10],
                ),
            )
            .part(
                "attachment",
                file(
                    "b.bin",
                    "application/octet-stream",
                    vec![2u8; limit / 2 + 10],
                ),
            ),
    ];
    for form in forms {
        let (st, h, body) = p.post(&a.portal, form).await;
        assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        assert_hardened(&h);
        assert!(
            body.contains("The attachment is too large (limit: 10 MB)"),
            "{body}"
        );
    }
    // A body far past the limit is cut off by the body limit itself.
    let form = Form::new()
        .text("csrf", csrf.clone())
        .part("other", Part::bytes(vec![0u8; limit + 2 * 1024 * 1024]));
    let (st, _, body) = p.post(&a.portal, form).await;
    assert!(
        st == StatusCode::PAYLOAD_TOO_LARGE || st == StatusCode::BAD_REQUEST,
        "{st}: {body}"
    );
    let stored: i64 = s
        .query("SELECT COUNT(*) FROM messages WHERE route = 'portal'")
        .await;
    assert_eq!(stored, 0);
    // Just under the limit goes through.
    let form = Form::new().text("csrf", csrf).part(
        "attachment",
        file("ok.bin", "application/octet-stream", vec![3u8; limit]),
    );
    let (st, _, body) = p.post(&a.portal, form).await;
    assert_eq!(st, StatusCode::SEE_OTHER, "{body}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_are_rate_limited_per_link() {
    let mut s =
        TestServer::start_with("", &format!("{NO_AUTH}[portal]\nreplies_per_hour = 2\n")).await;
    let p = Portal::new(&s).await;
    let a = p
        .start(
            "T-900",
            json!({"to": ["vic@carrier.example"], "subject": "A", "body_text": "a", "share_portal_link": true}),
        )
        .await;
    let b = p
        .start(
            "T-901",
            json!({"to": ["sue@supplier.example"], "subject": "B", "body_text": "b", "share_portal_link": true}),
        )
        .await;
    let csrf = p.csrf(&a.portal).await;
    for i in 0..2 {
        let form = Form::new()
            .text("csrf", csrf.clone())
            .text("text", format!("note {i}"));
        let (st, _, body) = p.post(&a.portal, form).await;
        assert_eq!(st, StatusCode::SEE_OTHER, "{body}");
    }
    let form = Form::new().text("csrf", csrf).text("text", "one too many");
    let (st, h, body) = p.post(&a.portal, form).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_hardened(&h);
    assert!(body.contains("(limit: 2)"), "{body}");
    // Another link has its own budget.
    let csrf_b = p.csrf(&b.portal).await;
    let form = Form::new().text("csrf", csrf_b).text("text", "fine");
    let (st, _, _) = p.post(&b.portal, form).await;
    assert_eq!(st, StatusCode::SEE_OTHER);
    let stored: i64 = s
        .query("SELECT COUNT(*) FROM messages WHERE route = 'portal' AND direction = 'in'")
        .await;
    assert_eq!(stored, 3);
    s.shutdown().await;
}
