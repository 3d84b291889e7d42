//! The web console's agent pages (SPEC §11), driven like a browser over
//! real sockets: sign in by link, start a side conversation through the
//! multipart form, read a vendor reply (hostile HTML shown escaped), the
//! inbox's unread order and paging, follow-up and close/reopen, unrouted
//! triage, and the refusals (CSRF, viewers, unknown ids).

mod common;

use backchannel::model::Role;
use common::console::{Session, sign_in};
use common::{TestServer, api_call, make_user, smtp_send};
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

/// A side conversation's id from a redirect to its page.
fn thread_id(location: &str) -> i64 {
    location
        .strip_prefix("/app/side-conversations/")
        .and_then(|r| r.split('?').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a thread page: {location}"))
}

/// Starts a side conversation on `parent` through the console's form.
async fn start_by_form(b: &Session, parent: &str, to: &str, subject: &str) -> i64 {
    let (st, loc, body) = b
        .post_form(
            &format!("/app/parents/{parent}/new"),
            &[
                ("csrf", &b.csrf),
                ("to", to),
                ("subject", subject),
                ("body_text", "Where is it?"),
            ],
        )
        .await;
    assert_eq!(st, StatusCode::SEE_OTHER, "{body}");
    thread_id(&loc.expect("location"))
}

async fn thread_json(s: &TestServer, token: &str, id: i64) -> Value {
    let (st, v) = api_call(
        s,
        "GET",
        &format!("/api/side-conversations/{id}"),
        token,
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v
}

/// A vendor's reply over SMTP to the thread's reply address.
async fn vendor_reply(s: &TestServer, reply_address: &str, from: &str, body: &str) {
    let data = format!(
        "From: Vera <{from}>\nTo: {reply_address}\nSubject: Re: pallet\nMessage-ID: <{}@carrier.example>\nContent-Type: text/plain; charset=utf-8\n\n{body}\n",
        backchannel::model::base32_lower(&backchannel::model::random_bytes::<8>())
    );
    let r = smtp_send(s.smtp, from, &[reply_address], &data).await;
    assert!(r.starts_with("250"), "{r}");
    s.wait_ingested().await;
}

#[tokio::test]
async fn start_with_two_recipients_cc_and_an_attachment_through_the_form() {
    let s = TestServer::start("").await;
    let token = make_user(&s, "ann@acme.com", "Ann Agent", Role::Member).await;
    let b = sign_in(&s, "ann@acme.com").await;

    let (st, page) = b.get("/app/parents/T-100/new").await;
    assert_eq!(st, StatusCode::OK);
    assert!(page.contains("has not synced this ticket yet"), "{page}");
    for field in [
        "name=\"to\"",
        "name=\"cc\"",
        "name=\"subject\"",
        "name=\"body_text\"",
        "name=\"from\"",
        "name=\"include_context\"",
        "name=\"share_portal_link\"",
        "name=\"attachments\"",
    ] {
        assert!(page.contains(field), "{field} missing");
    }

    let form = Form::new()
        .text("csrf", b.csrf.clone())
        .text("to", "vera@carrier.example, sam@supplier.example")
        .text("cc", "carl@vendor.example")
        .text("subject", "Pallet 7")
        .text("body_text", "Where is pallet 7?")
        .text("share_portal_link", "true")
        .part(
            "attachments",
            Part::bytes(b"%PDF-1.4 manifest".to_vec())
                .file_name("manifest.pdf")
                .mime_str("application/pdf")
                .expect("mime"),
        );
    let (st, loc, body) = b.post_multipart("/app/parents/T-100/new", form).await;
    assert_eq!(st, StatusCode::SEE_OTHER, "{body}");
    let loc = loc.expect("location");
    assert!(loc.ends_with("?notice=started"), "{loc}");
    let id = thread_id(&loc);

    let v = thread_json(&s, &token, id).await;
    assert_eq!(v["parent"], "T-100");
    assert_eq!(v["subject"], "Pallet 7");
    assert_eq!(
        v["participants"],
        json!([
            "vera@carrier.example",
            "sam@supplier.example",
            "carl@vendor.example"
        ])
    );
    let first = &v["messages"][0];
    assert_eq!(first["attachments"][0]["filename"], "manifest.pdf");
    let recipients: Vec<&str> = first["delivery"]
        .as_array()
        .expect("delivery")
        .iter()
        .filter_map(|d| d["recipient"].as_str())
        .collect();
    assert!(
        recipients.contains(&"vera@carrier.example"),
        "{recipients:?}"
    );
    assert!(
        recipients.contains(&"sam@supplier.example"),
        "{recipients:?}"
    );
    assert_eq!(v["portal_links"].as_array().map(Vec::len), Some(3));

    // The thread page: the notice, the delivery per recipient, the
    // attachment and portal links, the forms of a writer.
    let (st, page) = b.get(&loc).await;
    assert_eq!(st, StatusCode::OK);
    assert!(page.contains("The side conversation was started"));
    assert!(page.contains("sam@supplier.example"));
    assert!(page.contains(&format!("/app/messages/{}/attachments/0", first["id"])));
    assert!(page.contains("data-copy=\"#portal-0\""));
    assert!(page.contains(&format!("/app/side-conversations/{id}/close")));
    let att = b
        .get_response(&format!("/app/messages/{}/attachments/0", first["id"]))
        .await;
    assert_eq!(att.status(), StatusCode::OK);
    assert!(
        att.headers()["content-disposition"]
            .to_str()
            .expect("disposition")
            .starts_with("attachment")
    );
    assert_eq!(
        att.bytes().await.expect("bytes").as_ref(),
        b"%PDF-1.4 manifest"
    );
    let raw = b
        .get_response(&format!("/app/messages/{}/raw", first["id"]))
        .await;
    assert_eq!(raw.status(), StatusCode::OK);
    assert_eq!(raw.headers()["content-type"], "message/rfc822");

    // The parent's page: details, activity, the side conversation, the link
    // to start another.
    let (st, parent) = b.get("/app/parents/T-100").await;
    assert_eq!(st, StatusCode::OK);
    assert!(parent.contains("Ann Agent started a side conversation with"));
    assert!(parent.contains(&format!("href=\"/app/side-conversations/{id}\"")));
    assert!(parent.contains("href=\"/app/parents/T-100/new\""));
    assert!(parent.contains("data-watch=\"parent:T-100\""));
}

#[tokio::test]
async fn a_refused_start_keeps_the_input_and_says_why() {
    let s = TestServer::start("").await;
    make_user(&s, "ann@acme.com", "Ann Agent", Role::Member).await;
    let b = sign_in(&s, "ann@acme.com").await;
    let (st, _, page) = b
        .post_form(
            "/app/new",
            &[
                ("csrf", &b.csrf),
                ("parent", "T-5"),
                ("to", "not-an-address"),
                ("subject", "Keep <me>"),
                ("body_text", "typed text"),
            ],
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("is not a valid email address"), "{page}");
    assert!(
        page.contains("value=\"Keep &#60;me&#62;\"") || page.contains("value=\"Keep &lt;me&gt;\""),
        "{page}"
    );
    assert!(page.contains(">typed text</textarea>"));
    // No parent typed on /app/new.
    let (st, _, page) = b
        .post_form(
            "/app/new",
            &[("csrf", &b.csrf), ("to", "vera@carrier.example")],
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("parent:"), "{page}");
    let n: i64 = s.query("SELECT count(*) FROM side_conversations").await;
    assert_eq!(n, 0);
}

#[tokio::test]
async fn the_start_form_defaults_from_to_the_parents_last_sender() {
    let s = TestServer::start("").await;
    let token = make_user(&s, "ann@acme.com", "Ann Agent", Role::Member).await;
    s.add_sender("support@acme.com", "fwd-k3j9x2").await;
    s.sql
        .write(|c| {
            c.execute("UPDATE senders SET status = 'verified'", [])?;
            Ok(())
        })
        .await
        .expect("verify");
    let (st, v) = api_call(
        &s,
        "POST",
        "/api/parents/T-7/side-conversations",
        &token,
        Some(json!({"to": ["vera@carrier.example"], "subject": "S", "body_text": "b", "from": "support@acme.com"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let b = sign_in(&s, "ann@acme.com").await;
    let (_, page) = b.get("/app/parents/T-7/new").await;
    assert!(
        page.contains("<option value=\"support@acme.com\" selected>"),
        "{page}"
    );
    // Another ticket has no last sender: the gateway's own address.
    let (_, page) = b.get("/app/parents/T-8/new").await;
    assert!(
        page.contains("<option value=\"reply@gw.example.com\" selected>"),
        "{page}"
    );
    assert!(page.contains("<option value=\"support@acme.com\">"));
}

#[tokio::test]
async fn a_template_fills_the_form() {
    let s = TestServer::start("").await;
    let admin = make_user(&s, "ada@acme.com", "Ada Admin", Role::Admin).await;
    let (st, t) = api_call(
        &s,
        "POST",
        "/api/templates",
        &admin,
        Some(
            json!({"name": "Carrier check", "to": ["vera@carrier.example"],
                    "subject": "About {{parent.subject}}",
                    "body_text": "Hello, {{agent.name}} here about {{requester.name}}."}),
        ),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{t}");
    let tid = t["id"].as_i64().expect("template id");
    let (st, _) = api_call(
        &s,
        "PUT",
        "/api/parents/T-9",
        &admin,
        Some(json!({"subject": "Lost <pallet>", "requester": {"name": "Rita", "email": "rita@example.org"}})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED);
    let b = sign_in(&s, "ada@acme.com").await;
    let (_, page) = b.get("/app/parents/T-9/new").await;
    assert!(page.contains("data-template-picker"));
    assert!(page.contains(&format!("<option value=\"{tid}\">Carrier check</option>")));
    let (st, page) = b.get(&format!("/app/parents/T-9/new?template={tid}")).await;
    assert_eq!(st, StatusCode::OK);
    assert!(page.contains("value=\"vera@carrier.example\""), "{page}");
    assert!(
        page.contains("About Lost &#60;pallet&#62;") || page.contains("About Lost &lt;pallet&gt;"),
        "{page}"
    );
    assert!(page.contains("Hello, Ada Admin here about Rita."), "{page}");
    assert!(page.contains(&format!("<option value=\"{tid}\" selected>")));
    let (st, page) = b.get("/app/parents/T-9/new?template=999").await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("no template 999"));
}

#[tokio::test]
async fn a_vendor_reply_is_shown_escaped_unread_first_and_opening_reads_it() {
    let s = TestServer::start("").await;
    let token = make_user(&s, "ann@acme.com", "Ann Agent", Role::Member).await;
    let b = sign_in(&s, "ann@acme.com").await;
    let a = start_by_form(&b, "T-1", "vera@carrier.example", "Pallet A").await;
    let c = start_by_form(&b, "T-2", "sam@supplier.example", "Pallet B").await;
    let addr_a = thread_json(&s, &token, a).await["reply_address"]
        .as_str()
        .expect("reply address")
        .to_string();
    let addr_c = thread_json(&s, &token, c).await["reply_address"]
        .as_str()
        .expect("reply address")
        .to_string();
    vendor_reply(
        &s,
        &addr_a,
        "vera@carrier.example",
        "It left <script>alert(1)</script> <img src=x onerror=alert(2)> today.",
    )
    .await;
    vendor_reply(&s, &addr_c, "sam@supplier.example", "Shipped B.").await;
    // Reading B leaves A the only unread one: first, though B's reply is newer.
    let (st, _) = b.get(&format!("/app/side-conversations/{c}")).await;
    assert_eq!(st, StatusCode::OK);
    let (_, inbox) = b.get("/app/").await;
    let pos_a = inbox
        .find(&format!("href=\"/app/side-conversations/{a}\""))
        .expect("A in the inbox");
    let pos_c = inbox
        .find(&format!("href=\"/app/side-conversations/{c}\""))
        .expect("B in the inbox");
    assert!(pos_a < pos_c, "unread first");
    assert_eq!(inbox.matches("badge new").count(), 1, "{inbox}");
    assert!(!inbox.contains("<script>alert"));

    let (st, page) = b.get(&format!("/app/side-conversations/{a}")).await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        page.contains("It left &#60;script&#62;alert(1)&#60;/script&#62;")
            || page.contains("It left &lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(!page.contains("<script>alert"));
    assert!(!page.contains("<img src=x"));
    assert!(page.contains("data-watch=\"sc:"));
    let (_, inbox) = b.get("/app/").await;
    assert_eq!(inbox.matches("badge new").count(), 0, "{inbox}");
    // The agent view agrees: the reply is \Seen for this user.
    let seen: i64 = s
        .query(&format!(
            "SELECT count(*) FROM message_flags f JOIN messages m ON m.id = f.message_id
             WHERE m.side_conversation_id = {a} AND m.direction = 'in' AND f.seen = 1"
        ))
        .await;
    assert_eq!(seen, 1);
}

#[tokio::test]
async fn follow_up_and_close_reopen_change_the_state() {
    let s = TestServer::start("").await;
    let token = make_user(&s, "ann@acme.com", "Ann Agent", Role::Member).await;
    let b = sign_in(&s, "ann@acme.com").await;
    let id = start_by_form(&b, "T-3", "vera@carrier.example", "Pallet").await;
    let form = Form::new()
        .text("csrf", b.csrf.clone())
        .text("body_text", "Any news?")
        .text("cc", "sam@supplier.example");
    let (st, loc, body) = b
        .post_multipart(&format!("/app/side-conversations/{id}/messages"), form)
        .await;
    assert_eq!(st, StatusCode::SEE_OTHER, "{body}");
    assert!(loc.expect("location").ends_with("?notice=sent"));
    let v = thread_json(&s, &token, id).await;
    assert_eq!(v["messages"].as_array().map(Vec::len), Some(2));
    assert!(
        v["participants"]
            .to_string()
            .contains("sam@supplier.example")
    );

    let path = format!("/app/side-conversations/{id}/close");
    let (st, loc, _) = b.post_form(&path, &[("csrf", &b.csrf)]).await;
    assert_eq!(st, StatusCode::SEE_OTHER);
    assert!(loc.expect("location").ends_with("?notice=closed"));
    assert_eq!(thread_json(&s, &token, id).await["status"], "closed");
    // Closed twice: the state refuses it, on the page.
    let (st, _, page) = b.post_form(&path, &[("csrf", &b.csrf)]).await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert!(page.contains("role=\"alert\""));
    // A follow-up on a closed thread is refused with the text kept.
    let (st, _, page) = b
        .post_form(
            &format!("/app/side-conversations/{id}/messages"),
            &[("csrf", &b.csrf), ("body_text", "kept words")],
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{page}");
    let (st, loc, _) = b
        .post_form(
            &format!("/app/side-conversations/{id}/reopen"),
            &[("csrf", &b.csrf)],
        )
        .await;
    assert_eq!(st, StatusCode::SEE_OTHER);
    assert!(loc.expect("location").ends_with("?notice=reopened"));
    assert_eq!(thread_json(&s, &token, id).await["status"], "open");
}

#[tokio::test]
async fn an_unverified_sender_is_marked_and_can_be_admitted() {
    let s = TestServer::start("").await;
    let token = make_user(&s, "ann@acme.com", "Ann Agent", Role::Member).await;
    let b = sign_in(&s, "ann@acme.com").await;
    let id = start_by_form(&b, "T-4", "vera@carrier.example", "Pallet").await;
    let addr = thread_json(&s, &token, id).await["reply_address"]
        .as_str()
        .expect("reply address")
        .to_string();
    // unknown.example publishes nothing: its mail is unverified.
    vendor_reply(&s, &addr, "eve@unknown.example", "I am the carrier too.").await;
    let (_, page) = b.get(&format!("/app/side-conversations/{id}")).await;
    assert!(page.contains("unverified sender"), "{page}");
    assert!(page.contains("Admit eve@unknown.example as a participant"));
    let (st, loc, body) = b
        .post_form(
            &format!("/app/side-conversations/{id}/participants"),
            &[("csrf", &b.csrf), ("email", "eve@unknown.example")],
        )
        .await;
    assert_eq!(st, StatusCode::SEE_OTHER, "{body}");
    assert!(loc.expect("location").ends_with("?notice=admitted"));
    let v = thread_json(&s, &token, id).await;
    assert!(
        v["participants"]
            .to_string()
            .contains("eve@unknown.example")
    );
    let (_, page) = b.get(&format!("/app/side-conversations/{id}")).await;
    assert!(!page.contains("Admit eve@unknown.example"));
    assert!(page.contains("admitted by an agent"));
}

#[tokio::test]
async fn unrouted_mail_is_assigned_from_the_triage_page() {
    let s = TestServer::start("").await;
    let admin = make_user(&s, "ada@acme.com", "Ada Admin", Role::Admin).await;
    make_user(&s, "mo@acme.com", "Mo Member", Role::Member).await;
    let b = sign_in(&s, "ada@acme.com").await;
    let id = start_by_form(&b, "T-6", "vera@carrier.example", "Pallet").await;
    let lost = "From: Vera <vera@carrier.example>\nTo: reply@gw.example.com\nSubject: About <b>the</b> pallet\nMessage-ID: <lost@carrier.example>\n\nIt shipped.\n";
    smtp_send(
        s.smtp,
        "vera@carrier.example",
        &["reply@gw.example.com"],
        lost,
    )
    .await;
    s.wait_ingested().await;
    let (_, list) = api_call(&s, "GET", "/api/unrouted", &admin, None).await;
    let mid = list["items"][0]["id"].as_i64().expect("unrouted id");

    let (st, page) = b.get("/app/unrouted").await;
    assert_eq!(st, StatusCode::OK);
    assert!(page.contains("It shipped."));
    assert!(
        page.contains("About &#60;b&#62;the&#60;/b&#62; pallet")
            || page.contains("About &lt;b&gt;the&lt;/b&gt; pallet"),
        "{page}"
    );
    assert!(page.contains(&format!("action=\"/app/unrouted/{mid}/assign\"")));
    assert!(page.contains(&format!("<option value=\"{id}\">")));
    // Members do not triage (as in the API).
    let m = sign_in(&s, "mo@acme.com").await;
    let (st, _) = m.get("/app/unrouted").await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (_, inbox) = m.get("/app/").await;
    assert!(!inbox.contains("href=\"/app/unrouted\""), "{inbox}");
    let (_, inbox) = b.get("/app/").await;
    assert!(inbox.contains("href=\"/app/unrouted\""));
    let path = format!("/app/unrouted/{mid}/assign");
    let (st, _, _) = m
        .post_form(
            &path,
            &[("csrf", &m.csrf), ("side_conversation_id", &id.to_string())],
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // A side conversation that does not exist: said on the page.
    let (st, _, page) = b
        .post_form(
            &path,
            &[("csrf", &b.csrf), ("side_conversation_id", "999999")],
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("there is no side conversation 999999"));
    let (st, loc, body) = b
        .post_form(
            &path,
            &[("csrf", &b.csrf), ("side_conversation_id", &id.to_string())],
        )
        .await;
    assert_eq!(st, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(
        loc.as_deref(),
        Some(format!("/app/side-conversations/{id}?notice=assigned").as_str())
    );
    let (_, msg) = api_call(&s, "GET", &format!("/api/messages/{mid}"), &admin, None).await;
    assert_eq!(msg["side_conversation_id"], id);
    let (_, page) = b.get("/app/unrouted").await;
    assert!(page.contains("Nothing to triage"));
}

#[tokio::test]
async fn a_post_without_the_csrf_token_is_refused_and_changes_nothing() {
    let s = TestServer::start("").await;
    let token = make_user(&s, "ann@acme.com", "Ann Agent", Role::Member).await;
    let b = sign_in(&s, "ann@acme.com").await;
    let id = start_by_form(&b, "T-10", "vera@carrier.example", "Pallet").await;
    let path = format!("/app/side-conversations/{id}/close");
    let (st, _, _) = b.post_form(&path, &[]).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _, _) = b.post_form(&path, &[("csrf", "forged")]).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // From another site, even with the token.
    let r = b
        .client
        .post(format!("{}{path}", b.base))
        .header("cookie", &b.cookie)
        .header("origin", "https://evil.example")
        .form(&[("csrf", b.csrf.as_str())])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let (st, _, _) = b
        .post_form(
            "/app/new",
            &[
                ("parent", "T-11"),
                ("to", "vera@carrier.example"),
                ("subject", "s"),
                ("body_text", "b"),
            ],
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert_eq!(thread_json(&s, &token, id).await["status"], "open");
    let n: i64 = s.query("SELECT count(*) FROM side_conversations").await;
    assert_eq!(n, 1);
}

#[tokio::test]
async fn a_viewer_sees_no_forms_and_their_posts_are_refused() {
    let s = TestServer::start("").await;
    let token = make_user(&s, "ann@acme.com", "Ann Agent", Role::Member).await;
    make_user(&s, "vic@acme.com", "Vic Viewer", Role::Viewer).await;
    let a = sign_in(&s, "ann@acme.com").await;
    let id = start_by_form(&a, "T-12", "vera@carrier.example", "Pallet").await;
    let v = sign_in(&s, "vic@acme.com").await;
    let (st, page) = v.get(&format!("/app/side-conversations/{id}")).await;
    assert_eq!(st, StatusCode::OK);
    assert!(page.contains("Pallet"));
    assert!(
        !page.contains(&format!("action=\"/app/side-conversations/{id}")),
        "{page}"
    );
    let (_, parent) = v.get("/app/parents/T-12").await;
    assert!(!parent.contains("/app/parents/T-12/new"));
    let (st, _) = v.get("/app/new").await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    for (path, fields) in [
        (format!("/app/side-conversations/{id}/close"), vec![]),
        (
            format!("/app/side-conversations/{id}/messages"),
            vec![("body_text", "hi")],
        ),
        (
            "/app/parents/T-12/new".to_string(),
            vec![
                ("to", "x@vendor.example"),
                ("subject", "s"),
                ("body_text", "b"),
            ],
        ),
    ] {
        let mut f = vec![("csrf", v.csrf.as_str())];
        f.extend(fields);
        let (st, _, _) = v.post_form(&path, &f).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{path}");
    }
    let t = thread_json(&s, &token, id).await;
    assert_eq!(t["status"], "open");
    assert_eq!(t["messages"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn unknown_ids_are_not_found_pages() {
    let s = TestServer::start("").await;
    make_user(&s, "ann@acme.com", "Ann Agent", Role::Member).await;
    let b = sign_in(&s, "ann@acme.com").await;
    for path in [
        "/app/side-conversations/999999",
        "/app/side-conversations/not-a-number",
        "/app/parents/NO-SUCH-TICKET",
        "/app/messages/999999/raw",
        "/app/messages/999999/attachments/0",
    ] {
        let r = b.get_response(path).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .expect("type")
                .starts_with("text/html"),
            "{path}"
        );
        let body = r.text().await.expect("body");
        assert!(body.contains("was not found"), "{path}: {body}");
    }
    let (st, _, _) = b
        .post_form("/app/side-conversations/999999/close", &[("csrf", &b.csrf)])
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // Without a session a download leads to the sign-in page.
    let r = b
        .client
        .get(format!("{}/app/messages/1/raw", b.base))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn the_inbox_pages_with_a_cursor() {
    let s = TestServer::start("").await;
    make_user(&s, "ann@acme.com", "Ann Agent", Role::Member).await;
    s.sql
        .write(|c| {
            for i in 0..57 {
                c.execute(
                    "INSERT INTO parents (external_id, subject, created_at, updated_at)
                     VALUES (?1, 'Order', 0, 0)",
                    [format!("P-{i}")],
                )?;
                c.execute(
                    "INSERT INTO side_conversations
                       (parent_id, token, subject, sender_email, created_at, updated_at)
                     VALUES ((SELECT id FROM parents WHERE external_id = ?4), ?1, ?2,
                             'reply@gw.example.com', 0, ?3)",
                    rusqlite::params![
                        format!("tok{i:013}"),
                        format!("Thread {i}"),
                        1000 + i,
                        format!("P-{i}")
                    ],
                )?;
            }
            Ok(())
        })
        .await
        .expect("seed");
    let b = sign_in(&s, "ann@acme.com").await;
    let links = |html: &str| -> Vec<String> {
        html.match_indices("class=\"subject\" href=\"/app/side-conversations/")
            .map(|(i, m)| {
                let rest = &html[i + m.len()..];
                rest[..rest.find('"').expect("end")].to_string()
            })
            .collect()
    };
    let (st, first) = b.get("/app/?filter=open").await;
    assert_eq!(st, StatusCode::OK);
    let one = links(&first);
    assert_eq!(one.len(), 50);
    let next = first
        .split("href=\"")
        .find(|p| p.contains("rel=\"next\"") && p.starts_with("/app/?filter=open&amp;cursor="))
        .and_then(|p| p.split('"').next())
        .expect("a next page link")
        .replace("&amp;", "&");
    let (st, second) = b.get(&next).await;
    assert_eq!(st, StatusCode::OK);
    let two = links(&second);
    assert_eq!(two.len(), 7, "{second}");
    assert!(two.iter().all(|l| !one.contains(l)));
    assert!(!second.contains("rel=\"next\""));
    // Newest activity first.
    assert!(first.find("Thread 56").expect("56") < first.find("Thread 50").expect("50"));
    let (st, _) = b.get("/app/?filter=open&cursor=garbage").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}
