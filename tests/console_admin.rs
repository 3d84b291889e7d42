//! The console's admin pages (SPEC §11) driven like a browser: signed in by
//! a one-time link, forms posted with the page's CSRF token, the outcome
//! read back through the API and the pages. Senders (add, forwarding
//! address, DNS records, verification code, check, edit, delete), settings
//! with the signature preview, templates, webhooks with the delivery log,
//! users (add with the token shown once, role, deactivate, rotate, sign-in
//! link), the audit log; members get 403 everywhere; a post without the
//! CSRF token changes nothing.

mod common;

use std::path::Path;

use backchannel::model::Role;
use common::console::sign_in;
use common::{TestServer, api_call as call, make_user, smtp_send, wait_for, wait_until};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The text of a Maildir file sent to `rcpt` containing `needle`, once
/// the outbox has delivered it.
async fn sent_mail(dir: &Path, rcpt: &str, needle: &str) -> String {
    let new = dir.join("data/sent/new");
    wait_for(&format!("mail to {rcpt} containing {needle:?}"), || {
        let found = std::fs::read_dir(&new).ok().and_then(|entries| {
            entries.flatten().find_map(|e| {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                (text.contains(&format!("Delivered-To: {rcpt}")) && text.contains(needle))
                    .then_some(text)
            })
        });
        async move { found }
    })
    .await
}

fn code_of(mail: &str) -> String {
    let at =
        mail.find("Verification code: ").expect("code in the mail") + "Verification code: ".len();
    mail[at..at + 6].to_string()
}

async fn sender(s: &TestServer, token: &str, email: &str) -> (StatusCode, Value) {
    call(s, "GET", &format!("/api/senders/{email}"), token, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_adds_verifies_checks_edits_and_deletes_a_sender() {
    let s = TestServer::start_with("", "[senders]\nprobe_wait = \"1s\"\n").await;
    let token = make_user(&s, "olga@gw-owner.example", "Olga", Role::Owner).await;
    let b = sign_in(&s, "olga@gw-owner.example").await;

    // A refused address keeps the form's input and says why (422).
    let (status, _, body) = b
        .post(
            "/app/admin/senders",
            &[
                ("csrf", &b.csrf),
                ("email", "not an address"),
                ("name", "Kept <Name>"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("email: not a valid email address"), "{body}");
    assert!(
        body.contains("value=\"Kept &#60;Name&#62;\"")
            || body.contains("value=\"Kept &lt;Name&gt;\""),
        "{body}"
    );

    let (status, location, _) = b
        .post(
            "/app/admin/senders",
            &[
                ("csrf", &b.csrf),
                ("email", "support@acme.com"),
                ("name", "Acme Support"),
                ("reply_mode", "gateway"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        location,
        "/app/admin/senders/support%40acme.com?notice=sender-added"
    );
    let (_, v) = sender(&s, &token, "support@acme.com").await;
    assert_eq!(v["status"], "pending");
    let forwarding = v["forwarding_address"]
        .as_str()
        .expect("forwarding")
        .to_string();
    assert!(forwarding.ends_with("@gw.example.com"), "{forwarding}");

    // The list and the sender's page: forwarding address, the providers'
    // steps, the three DNS records with their names and a re-check.
    let (status, list) = b.get("/app/admin/senders").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        list.contains("support@acme.com") && list.contains("pending"),
        "{list}"
    );
    let (status, page) = b.get(&location).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("The sender address was added."), "{page}");
    assert!(page.contains(&format!("value=\"{forwarding}\"")), "{page}");
    for needle in [
        "Gmail",
        "Microsoft 365",
        "Fastmail",
        "_domainkey.acme.com",
        "_dmarc.acme.com",
        "v=DKIM1",
        "Check again",
        "name=\"code\"",
        "data-copy=\"#forwarding-address\"",
    ] {
        assert!(page.contains(needle), "{needle} on the page: {page}");
    }

    // A provider's forwarding confirmation arriving on the forwarding
    // address is shown: its code and its link as text to copy, not as a
    // link to follow.
    let msg = format!(
        "From: Gmail Team <forwarding-noreply@google.com>\nTo: {forwarding}\nSubject: (#583920174) Gmail Forwarding Confirmation - Receive Mail from support@acme.com\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nMessage-ID: <583920174@google.com>\n\nConfirmation code: 583920174\n\nhttps://mail-settings.google.com/mail/vf-%5B583920174%5D-x\n"
    );
    smtp_send(
        s.smtp,
        "forwarding-noreply@google.com",
        &[&forwarding],
        &msg,
    )
    .await;
    s.wait_ingested().await;
    let (_, page) = b.get("/app/admin/senders/support@acme.com").await;
    assert!(
        page.contains("Forwarding confirmation from gmail"),
        "{page}"
    );
    assert!(page.contains("value=\"583920174\""), "{page}");
    assert!(
        page.contains("value=\"https://mail-settings.google.com/mail/vf-%5B583920174%5D-x\""),
        "{page}"
    );
    assert!(!page.contains("href=\"https://mail-settings"), "{page}");

    // A wrong code is refused on the page; the right one verifies.
    let code = code_of(&sent_mail(s.dir.path(), "support@acme.com", "Verification code").await);
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let verify = "/app/admin/senders/support@acme.com/verify";
    let (status, _, body) = b.post(verify, &[("csrf", &b.csrf), ("code", wrong)]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("wrong code (4 attempts left)"), "{body}");
    assert_eq!(
        sender(&s, &token, "support@acme.com").await.1["status"],
        "pending"
    );
    let (status, location, _) = b.post(verify, &[("csrf", &b.csrf), ("code", &code)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(location.ends_with("?notice=sender-verified"), "{location}");
    assert_eq!(
        sender(&s, &token, "support@acme.com").await.1["status"],
        "verified"
    );
    let (_, page) = b.get(&location).await;
    assert!(page.contains("This address can be used to send."), "{page}");
    assert!(
        !page.contains("name=\"code\""),
        "no code form once verified"
    );

    // A verified sender can be the default sender in the settings.
    let (_, page) = b.get("/app/admin/settings").await;
    assert!(
        page.contains("<option value=\"support@acme.com\">"),
        "{page}"
    );
    let (status, _, _) = b
        .post(
            "/app/admin/settings",
            &[("csrf", &b.csrf), ("default_sender", "support@acme.com")],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, v) = call(&s, "GET", "/api/settings", &token, None).await;
    assert_eq!(v["default_sender"], "support@acme.com");
    assert_eq!(v["side_conversations_enabled"], true, "left out, kept");
    let (_, page) = b.get("/app/admin/settings").await;
    assert!(
        page.contains("<option value=\"support@acme.com\" selected>"),
        "{page}"
    );

    // Check again: the DNS is re-checked (the time is recorded) and a
    // forwarding probe goes out to the address.
    let (status, location, _) = b
        .post(
            "/app/admin/senders/support@acme.com/check",
            &[("csrf", &b.csrf)],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(location.ends_with("?notice=checked"), "{location}");
    let (_, v) = sender(&s, &token, "support@acme.com").await;
    assert!(v["dns_checked_at"].is_string(), "{v}");
    sent_mail(s.dir.path(), "support@acme.com", "forwarding test").await;
    let (_, page) = b.get(&location).await;
    assert!(page.contains("Last checked"), "{page}");

    // Edit: name, reply mode and signature, the same rules as the API.
    let (status, _, body) = b
        .post(
            "/app/admin/senders/support@acme.com",
            &[
                ("csrf", &b.csrf),
                ("name", "Acme Help"),
                ("reply_mode", "none"),
                ("signature_text", "-- {{agent.nmae}}"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("unknown placeholder"), "{body}");
    assert_eq!(
        sender(&s, &token, "support@acme.com").await.1["name"],
        "Acme Support"
    );
    let (status, _, _) = b
        .post(
            "/app/admin/senders/support@acme.com",
            &[
                ("csrf", &b.csrf),
                ("name", "Acme Help"),
                ("reply_mode", "none"),
                ("signature_text", "-- {{agent.name}}"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, v) = sender(&s, &token, "support@acme.com").await;
    assert_eq!(v["name"], "Acme Help");
    assert_eq!(v["reply_mode"], "none");
    assert_eq!(v["signature"]["text"], "-- {{agent.name}}");
    // Posting one field keeps the others.
    let (status, _, _) = b
        .post(
            "/app/admin/senders/support@acme.com",
            &[("csrf", &b.csrf), ("name", "Acme Care")],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, v) = sender(&s, &token, "support@acme.com").await;
    assert_eq!(v["name"], "Acme Care");
    assert_eq!(v["reply_mode"], "none");
    assert_eq!(v["signature"]["text"], "-- {{agent.name}}");

    // Delete needs the confirmation box.
    let del = "/app/admin/senders/support@acme.com/delete";
    let (status, _, body) = b.post(del, &[("csrf", &b.csrf)]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("tick the box"), "{body}");
    assert_eq!(
        sender(&s, &token, "support@acme.com").await.0,
        StatusCode::OK
    );
    let (status, location, _) = b.post(del, &[("csrf", &b.csrf), ("confirm", "1")]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location, "/app/admin/senders?notice=deleted");
    assert_eq!(
        sender(&s, &token, "support@acme.com").await.0,
        StatusCode::NOT_FOUND
    );
    let (status, _) = b.get("/app/admin/senders/support@acme.com").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// An HTTP endpoint on loopback that answers every request `204`.
async fn receiver() -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                // Headers, then as many body bytes as Content-Length says.
                loop {
                    let Ok(n) = sock.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if got.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let _ = sock
                    .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (format!("http://{addr}/hook"), task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_templates_and_webhooks() {
    let s =
        TestServer::start_with("", "[webhooks]\nallow_destinations = [\"127.0.0.0/8\"]\n").await;
    let token = make_user(&s, "olga@gw-owner.example", "Olga", Role::Owner).await;
    let b = sign_in(&s, "olga@gw-owner.example").await;

    // Settings: the current values in the form.
    let (status, page) = b.get("/app/admin/settings").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("data-preview=\"signature-preview\""),
        "{page}"
    );
    assert!(page.contains("id=\"signature-preview\""), "{page}");
    assert!(
        page.contains("name=\"side_conversations_enabled\" value=\"true\" checked"),
        "{page}"
    );

    // Preview: placeholders filled, hostile markup shown as text, nothing saved.
    let hostile_text = "Cheers, {{agent.name}} <script>alert(1)</script>";
    let hostile_html = "<p>{{agent.name}} <img src=x onerror=alert(2)></p>";
    let (status, _, page) = b
        .post(
            "/app/admin/settings",
            &[
                ("csrf", &b.csrf),
                ("signature_text", hostile_text),
                ("signature_html", hostile_html),
                ("side_conversations_enabled", "true"),
                ("preview", "1"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("Cheers, Olga &lt;script&gt;alert(1)&lt;/script&gt;")
            || page.contains("Cheers, Olga &#60;script&#62;alert(1)&#60;/script&#62;"),
        "{page}"
    );
    assert!(!page.contains("<script>alert"), "{page}");
    assert!(!page.contains("<img src=x"), "{page}");
    assert!(!page.contains("onerror=alert(2)>"), "{page}");
    let (_, v) = call(&s, "GET", "/api/settings", &token, None).await;
    assert_eq!(
        v["signature"]["text"],
        Value::Null,
        "a preview saves nothing: {v}"
    );

    // A preview of a wrong placeholder says so, in the preview.
    let (status, _, page) = b
        .post(
            "/app/admin/settings",
            &[
                ("csrf", &b.csrf),
                ("signature_text", "{{agent.nmae}}"),
                ("preview", "1"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("signature.text: unknown placeholder"),
        "{page}"
    );

    // Saving a wrong placeholder is refused (422) with the input kept.
    let (status, _, page) = b
        .post(
            "/app/admin/settings",
            &[("csrf", &b.csrf), ("signature_text", "Bye {{agent.nmae}}")],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("Bye {{agent.nmae}}</textarea>"), "{page}");
    let (_, v) = call(&s, "GET", "/api/settings", &token, None).await;
    assert_eq!(v["signature"]["text"], Value::Null);
    assert_eq!(v["side_conversations_enabled"], true);

    // Save: signature, side conversations off (the box left unticked:
    // only the hidden `false` before it is posted).
    let (status, location, _) = b
        .post(
            "/app/admin/settings",
            &[
                ("csrf", &b.csrf),
                ("side_conversations_enabled", "false"),
                ("default_sender", ""),
                ("signature_text", hostile_text),
                ("signature_html", hostile_html),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location, "/app/admin/settings?notice=saved");
    let (_, v) = call(&s, "GET", "/api/settings", &token, None).await;
    assert_eq!(v["signature"]["text"], hostile_text);
    assert_eq!(v["signature"]["html"], hostile_html);
    assert_eq!(v["side_conversations_enabled"], false);
    let (_, page) = b.get(&location).await;
    assert!(page.contains("Saved."), "{page}");
    assert!(
        !page.contains("<script>alert") && !page.contains("<img src=x"),
        "{page}"
    );
    // A script may post one field: the others stay.
    let (status, _, _) = b
        .post(
            "/app/admin/settings",
            &[
                ("csrf", &b.csrf),
                ("signature_text", "Thanks, {{agent.name}}"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, v) = call(&s, "GET", "/api/settings", &token, None).await;
    assert_eq!(v["signature"]["text"], "Thanks, {{agent.name}}");
    assert_eq!(v["signature"]["html"], hostile_html);
    assert_eq!(v["side_conversations_enabled"], false);
    // A default sender must be verified.
    let (status, _, page) = b
        .post(
            "/app/admin/settings",
            &[("csrf", &b.csrf), ("default_sender", "nobody@acme.com")],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        page.contains("nobody@acme.com is not a verified sender"),
        "{page}"
    );

    // Templates: add (several recipients), refused input, delete.
    let (status, _, page) = b
        .post(
            "/app/admin/templates",
            &[
                ("csrf", &b.csrf),
                ("name", "Damage claim"),
                ("to", "claims@carrier.example"),
                ("subject", "Claim for {{parent.nope}}"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("subject: unknown placeholder"), "{page}");
    let (status, location, _) = b
        .post(
            "/app/admin/templates",
            &[
                ("csrf", &b.csrf),
                ("name", "Damage <claim>"),
                ("to", "claims@carrier.example, ops@carrier.example"),
                ("subject", "Claim for {{parent.id}}"),
                ("body_text", "Hello, {{requester.name}} reports damage."),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location, "/app/admin/templates?notice=saved");
    let (_, v) = call(&s, "GET", "/api/templates", &token, None).await;
    let t = &v["items"][0];
    assert_eq!(t["name"], "Damage <claim>");
    assert_eq!(
        t["to"],
        json!(["claims@carrier.example", "ops@carrier.example"])
    );
    let (_, page) = b.get("/app/admin/templates").await;
    assert!(
        page.contains("Damage &lt;claim&gt;") || page.contains("Damage &#60;claim&#62;"),
        "{page}"
    );
    assert!(
        page.contains("{{requester.email}}"),
        "placeholders listed: {page}"
    );
    let id = t["id"].as_i64().expect("id");
    let (status, location, _) = b
        .post(
            &format!("/app/admin/templates/{id}/delete"),
            &[("csrf", &b.csrf)],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location, "/app/admin/templates?notice=deleted");
    let (_, v) = call(&s, "GET", "/api/templates", &token, None).await;
    assert_eq!(v["items"], json!([]));

    // Webhooks: an internal destination not allowed is refused; a loopback
    // one (allowed here) is added with the ticked events.
    let (status, _, page) = b
        .post(
            "/app/admin/webhooks",
            &[
                ("csrf", &b.csrf),
                ("url", "http://10.1.2.3/x"),
                ("secret", "s3cret"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("10.1.2.3 is an internal address"), "{page}");
    let (url, _receiver) = receiver().await;
    let (status, location, _) = b
        .post(
            "/app/admin/webhooks",
            &[
                ("csrf", &b.csrf),
                ("url", &url),
                ("secret", "s3cret"),
                ("events", "parent.woken"),
                ("events", "sender.verified"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, v) = call(&s, "GET", "/api/webhooks", &token, None).await;
    let hook = v["items"][0].clone();
    assert_eq!(hook["events"], json!(["parent.woken", "sender.verified"]));
    let hook_id = hook["id"].as_i64().expect("id");
    assert_eq!(
        location,
        format!("/app/admin/webhooks/{hook_id}?notice=saved")
    );

    s.store
        .write(|c| backchannel::store::events::enqueue(c, "parent.woken", json!({"parent": "T-1"})))
        .await
        .expect("event");
    wait_until("the delivery to succeed", || async {
        let (_, v) = call(
            &s,
            "GET",
            &format!("/api/webhooks/{hook_id}/deliveries"),
            &token,
            None,
        )
        .await;
        v["items"][0]["state"] == "delivered"
    })
    .await;
    let (status, page) = b.get(&format!("/app/admin/webhooks/{hook_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("parent.woken"), "{page}");
    assert!(page.contains("badge delivered"), "{page}");
    assert!(page.contains("HTTP 204"), "{page}");
    let (status, _) = b
        .get(&format!("/app/admin/webhooks/{hook_id}?before=x"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // A path that names no record: the console's own 404 page, with its CSP.
    for path in ["/app/admin/webhooks/abc", "/app/admin/webhooks/999999"] {
        let resp = b
            .client
            .get(format!("{}{path}", b.base))
            .header(reqwest::header::COOKIE, &b.cookie)
            .send()
            .await
            .expect("GET");
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
        assert!(
            resp.headers()
                .get("content-security-policy")
                .is_some_and(|v| v.to_str().unwrap_or("").contains("default-src 'none'")),
            "{path}"
        );
        assert!(
            resp.text().await.expect("body").contains("was not found"),
            "{path}"
        );
    }

    let (status, location, _) = b
        .post(
            &format!("/app/admin/webhooks/{hook_id}/delete"),
            &[("csrf", &b.csrf)],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location, "/app/admin/webhooks?notice=deleted");
    let (_, v) = call(&s, "GET", "/api/webhooks", &token, None).await;
    assert_eq!(v["items"], json!([]));

    // The audit log shows the changes, newest first, detail as text.
    let (status, page) = b.get("/app/admin/audit").await;
    assert_eq!(status, StatusCode::OK);
    let deleted = page.find("webhook.deleted").expect("webhook.deleted");
    let created = page.find("webhook.created").expect("webhook.created");
    let settings = page.find("settings.updated").expect("settings.updated");
    assert!(
        deleted < created && created < settings,
        "newest first: {page}"
    );
    assert!(page.contains("olga@gw-owner.example"), "{page}");
}

async fn user_id(s: &TestServer, token: &str, email: &str) -> i64 {
    let (_, v) = call(s, "GET", "/api/users", token, None).await;
    v["items"]
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["email"] == email)
        .and_then(|u| u["id"].as_i64())
        .expect("user id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_audit_roles_and_csrf() {
    let s = TestServer::start("").await;
    let owner_token = make_user(&s, "olga@gw-owner.example", "Olga", Role::Owner).await;
    make_user(&s, "adam@gw-owner.example", "Adam", Role::Admin).await;
    let member_token = make_user(&s, "mia@gw-owner.example", "Mia", Role::Member).await;
    let owner = sign_in(&s, "olga@gw-owner.example").await;

    // Add: the token is shown once on the answer page, never in a URL.
    let (status, location, page) = owner
        .post(
            "/app/admin/users",
            &[
                ("csrf", &owner.csrf),
                ("email", "newbie@gw-owner.example"),
                ("name", "Nora <New>"),
                ("role", "member"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(location.is_empty());
    assert!(
        page.contains("Nora &lt;New&gt;") || page.contains("Nora &#60;New&#62;"),
        "{page}"
    );
    let at = page.find("id=\"token\" value=\"").expect("the token") + 18;
    let new_token = page[at..at + page[at..].find('"').expect("end")].to_string();
    let (status, v) = call(&s, "GET", "/api/me", &new_token, None).await;
    assert_eq!(status, StatusCode::OK, "the shown token works: {v}");
    assert_eq!(v["email"], "newbie@gw-owner.example");
    let (_, users) = owner.get("/app/admin/users").await;
    assert!(!users.contains(&new_token), "the token is shown once");
    assert!(users.contains("link only"), "{users}");
    // The same address again: refused, input kept.
    let (status, _, page) = owner
        .post(
            "/app/admin/users",
            &[
                ("csrf", &owner.csrf),
                ("email", "newbie@gw-owner.example"),
                ("name", "Again"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        page.contains("a user with email newbie@gw-owner.example exists"),
        "{page}"
    );
    assert!(page.contains("value=\"Again\""), "{page}");

    // The new user signs in; an admin changes their role.
    let nora_id = user_id(&s, &owner_token, "newbie@gw-owner.example").await;
    let nora = sign_in(&s, "newbie@gw-owner.example").await;
    let (status, location, _) = owner
        .post(
            &format!("/app/admin/users/{nora_id}"),
            &[("csrf", &owner.csrf), ("role", "viewer")],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location, "/app/admin/users?notice=saved");
    let (_, v) = call(&s, "GET", "/api/users", &owner_token, None).await;
    assert!(
        v["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|u| u["id"] == nora_id && u["role"] == "viewer")
    );
    // The new role holds at once in their console session.
    let (status, me) = nora.get("/app/me").await;
    assert_eq!(status, StatusCode::OK);
    assert!(me.contains("(viewer)"), "{me}");

    // Deactivate: their next page load goes to the sign-in page.
    assert_eq!(nora.get("/app/").await.0, StatusCode::OK);
    let (status, _, _) = owner
        .post(
            &format!("/app/admin/users/{nora_id}"),
            &[("csrf", &owner.csrf), ("active", "false")],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, location, _) = nora.get_full("/app/").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(location.starts_with("/app/login"), "{location}");
    let (status, _) = call(&s, "GET", "/api/me", &new_token, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, users) = owner.get("/app/admin/users").await;
    assert!(users.contains("deactivated"), "{users}");

    // Rotate Mia's token: the new one is shown once, the old one stops.
    let mia_id = user_id(&s, &owner_token, "mia@gw-owner.example").await;
    let (status, _, page) = owner
        .post(
            &format!("/app/admin/users/{mia_id}/token"),
            &[("csrf", &owner.csrf)],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("The old token no longer works."), "{page}");
    let at = page.find("id=\"token\" value=\"").expect("the token") + 18;
    let mia_token = page[at..at + page[at..].find('"').expect("end")].to_string();
    assert_eq!(
        call(&s, "GET", "/api/me", &member_token, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&s, "GET", "/api/me", &mia_token, None).await.0,
        StatusCode::OK
    );

    // A sign-in link by email.
    let (status, location, _) = owner
        .post(
            &format!("/app/admin/users/{mia_id}/login-link"),
            &[("csrf", &owner.csrf)],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location, "/app/admin/users?notice=link-sent");
    let mail = sent_mail(s.dir.path(), "mia@gw-owner.example", "/app/login/").await;
    assert!(mail.contains("Your sign-in link"), "{mail}");

    // An admin cannot change an owner (403), and the last active owner
    // cannot be demoted (409): both shown as errors, nothing changed.
    let olga_id = user_id(&s, &owner_token, "olga@gw-owner.example").await;
    let adam = sign_in(&s, "adam@gw-owner.example").await;
    let (status, _, page) = adam
        .post(
            &format!("/app/admin/users/{olga_id}"),
            &[("csrf", &adam.csrf), ("active", "false")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(page.contains("only an owner can change an owner"), "{page}");
    let (status, _, page) = adam
        .post(
            "/app/admin/users",
            &[
                ("csrf", &adam.csrf),
                ("email", "boss@gw-owner.example"),
                ("name", "Boss"),
                ("role", "owner"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(page.contains("only an owner can add an owner"), "{page}");
    let (status, _, page) = owner
        .post(
            &format!("/app/admin/users/{olga_id}"),
            &[("csrf", &owner.csrf), ("role", "admin")],
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(page.contains("is the last active owner"), "{page}");
    let (_, v) = call(&s, "GET", "/api/me", &owner_token, None).await;
    assert_eq!(v["role"], "owner");

    // No CSRF token, or another one: 403, nothing changed.
    for fields in [
        vec![("email", "sneaky@gw-owner.example"), ("name", "Sneaky")],
        vec![
            ("csrf", "forged"),
            ("email", "sneaky@gw-owner.example"),
            ("name", "Sneaky"),
        ],
    ] {
        let (status, _, page) = owner.post("/app/admin/users", &fields).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(page.contains("The form expired"), "{page}");
    }
    let (status, _, _) = owner
        .post(
            &format!("/app/admin/users/{mia_id}"),
            &[("active", "false")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, v) = call(&s, "GET", "/api/users", &owner_token, None).await;
    let items = v["items"].as_array().expect("items");
    assert!(
        !items
            .iter()
            .any(|u| u["email"] == "sneaky@gw-owner.example")
    );
    assert!(
        items
            .iter()
            .any(|u| u["id"] == mia_id && u["active"] == true)
    );

    // The audit log names each change and its actor.
    let (status, page) = owner.get("/app/admin/audit").await;
    assert_eq!(status, StatusCode::OK);
    for action in [
        "user.created",
        "user.role_changed",
        "user.deactivated",
        "user.token_rotated",
        "user.login_link_sent",
    ] {
        assert!(page.contains(action), "{action} in the audit log: {page}");
    }
    assert!(!page.contains(&mia_token), "no token in the audit log");
    let (status, _) = owner.get("/app/admin/audit?before=-3").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A member: 403 on every admin page, and on every admin form.
    let mia = sign_in(&s, "mia@gw-owner.example").await;
    let (_, inbox) = mia.get("/app/").await;
    assert!(
        !inbox.contains("/app/admin/users"),
        "no admin links for members"
    );
    for path in [
        "/app/admin/senders",
        "/app/admin/senders/support@acme.com",
        "/app/admin/settings",
        "/app/admin/templates",
        "/app/admin/webhooks",
        "/app/admin/webhooks/1",
        "/app/admin/users",
        "/app/admin/audit",
    ] {
        let (status, page) = mia.get(path).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        assert!(
            page.contains("This page is for owners and admins."),
            "{path}: {page}"
        );
    }
    for path in [
        "/app/admin/senders".to_string(),
        "/app/admin/settings".to_string(),
        "/app/admin/templates".to_string(),
        "/app/admin/webhooks".to_string(),
        "/app/admin/users".to_string(),
        format!("/app/admin/users/{mia_id}"),
        format!("/app/admin/users/{olga_id}/token"),
        format!("/app/admin/users/{olga_id}/login-link"),
    ] {
        let (status, _, _) = mia
            .post(
                &path,
                &[
                    ("csrf", &mia.csrf),
                    ("email", "x@gw-owner.example"),
                    ("name", "X"),
                    ("role", "owner"),
                    ("url", "http://127.0.0.1/x"),
                    ("secret", "s"),
                ],
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
    }
    let (_, v) = call(&s, "GET", "/api/me", &mia_token, None).await;
    assert_eq!(v["role"], "member");
    let (_, v) = call(&s, "GET", "/api/users", &owner_token, None).await;
    assert!(
        !v["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|u| u["email"] == "x@gw-owner.example")
    );
}
