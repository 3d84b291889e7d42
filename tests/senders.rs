//! Sender addresses end to end (SPEC §6): added over the API, verified by
//! code or by their own verification mail coming back through forwarding,
//! provider confirmations captured, DNS checked against a local zone, a
//! forwarding probe, and the rules on who may send.

mod common;

use std::path::Path;
use std::time::Duration;

use common::dns::{FakeDns, RecordKind};
use common::{TestServer, api_call as call, make_user, smtp_send};

async fn owner(s: &TestServer) -> String {
    make_user(s, "olga@acme.com", "Olga", backchannel::model::Role::Owner).await
}
use reqwest::StatusCode;
use serde_json::json;

/// Waits for a Maildir file addressed to `rcpt` whose text contains `needle`.
async fn sent_mail(dir: &Path, rcpt: &str, needle: &str) -> String {
    sent_mail_except(dir, rcpt, needle, &[]).await
}

fn sent_files(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir.join("data/sent/new"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Like [`sent_mail`], ignoring files that were there before.
async fn sent_mail_except(
    dir: &Path,
    rcpt: &str,
    needle: &str,
    seen: &[std::path::PathBuf],
) -> String {
    let new = dir.join("data/sent/new");
    for _ in 0..300 {
        if let Ok(entries) = std::fs::read_dir(&new) {
            for e in entries.flatten().filter(|e| !seen.contains(&e.path())) {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                if text.contains(&format!("Delivered-To: {rcpt}")) && text.contains(needle) {
                    return text;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "no mail to {rcpt} containing {needle:?} in {}",
        new.display()
    );
}

/// What the provider's forwarding does to a message: drops our delivery
/// lines, adds its trace headers, and sends it to the forwarding address.
fn forwarded(maildir_text: &str, original_rcpt: &str, fwd: &str) -> String {
    let body: Vec<&str> = maildir_text
        .lines()
        .skip_while(|l| l.starts_with("Return-Path:") || l.starts_with("Delivered-To:"))
        .collect();
    format!(
        "Received: from mx.acme.com by mx.google.com; Tue, 1 Sep 2026 10:00:00 +0000\nX-Forwarded-To: {fwd}\nX-Forwarded-For: {original_rcpt} {fwd}\nDelivered-To: {original_rcpt}\n{}",
        body.join("\n")
    )
}

fn code_of(mail: &str) -> String {
    let at =
        mail.find("Verification code: ").expect("code in the mail") + "Verification code: ".len();
    mail[at..at + 6].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_by_code_with_limited_attempts() {
    let mut s = TestServer::start_with("", "").await;
    let t = owner(&s).await;
    let (st, v) = call(
        &s,
        "POST",
        "/api/senders",
        &t,
        Some(json!({"email": "support@acme.com", "name": "Acme Support", "reply_mode": "plus"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["status"], "pending");
    assert_eq!(v["forwarding"], "unknown");
    let fwd = v["forwarding_address"]
        .as_str()
        .expect("forwarding address")
        .to_string();
    assert!(
        fwd.starts_with("fwd-") && fwd.ends_with("@gw.example.com") && fwd.len() > 30,
        "{fwd}"
    );
    assert!(
        v["instructions"]["text"]
            .as_str()
            .is_some_and(|t| t.contains(&fwd))
    );
    let record = &v["instructions"]["records"][0];
    assert_eq!(record["name"], "backchannel._domainkey.acme.com");
    assert!(
        record["value"]
            .as_str()
            .is_some_and(|r| r.starts_with("v=DKIM1; k=rsa; p="))
    );
    let (st, _) = call(
        &s,
        "POST",
        "/api/senders",
        &t,
        Some(json!({"email": "SUPPORT@acme.com"})),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT);
    let (st, v) = call(
        &s,
        "POST",
        "/api/senders",
        &t,
        Some(json!({"email": "x@acme.com", "reply_mode": "sideways"})),
    )
    .await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("reply_mode"))
    );

    // The verification mail leaves through the outbox.
    let mail = sent_mail(s.dir.path(), "support@acme.com", "Verification code").await;
    assert!(mail.contains("Auto-Submitted: auto-generated"));
    let code = code_of(&mail);

    // Sending from a pending sender is refused.
    let (st, v) = call(&s, "POST", "/api/parents/T-1/side-conversations", &t, Some(json!({"to": ["v@x.example"], "subject": "s", "body_text": "b", "from": "support@acme.com"}))).await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("from")),
        "{v}"
    );

    let wrong = if code == "000000" { "111111" } else { "000000" };
    let (st, v) = call(
        &s,
        "POST",
        "/api/senders/support@acme.com/verify",
        &t,
        Some(json!({"code": wrong})),
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("4 attempts left")),
        "{v}"
    );
    let (st, _) = call(
        &s,
        "POST",
        "/api/senders/support@acme.com/verify",
        &t,
        Some(json!({"code": "12ab"})),
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    let (st, v) = call(
        &s,
        "POST",
        "/api/senders/support@acme.com/verify",
        &t,
        Some(json!({"code": code})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "verified");
    assert_eq!(
        v["forwarding"], "unknown",
        "usable but flagged: forwarding not confirmed"
    );
    let (st, _) = call(
        &s,
        "POST",
        "/api/senders/support@acme.com/verify",
        &t,
        Some(json!({"code": code})),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT);

    // Now it sends, with Reply-To in plus mode; the last sender is the default next time.
    let (st, sc) = call(&s, "POST", "/api/parents/T-1/side-conversations", &t, Some(json!({"to": ["v@x.example"], "subject": "s", "body_text": "b", "from": "support@acme.com"}))).await;
    assert_eq!(st, StatusCode::CREATED, "{sc}");
    assert_eq!(
        sc["reply_address"],
        format!("support+{}@acme.com", sc["token"].as_str().expect("token"))
    );
    let (_, sc2) = call(
        &s,
        "POST",
        "/api/parents/T-1/side-conversations",
        &t,
        Some(json!({"to": ["w@x.example"], "subject": "s2", "body_text": "b"})),
    )
    .await;
    assert_eq!(sc2["sender"], "support@acme.com");

    // A second sender: too many wrong codes lock the code; check sends a new one.
    call(
        &s,
        "POST",
        "/api/senders",
        &t,
        Some(json!({"email": "sales@acme.com"})),
    )
    .await;
    let first = sent_mail(s.dir.path(), "sales@acme.com", "Verification code").await;
    let first_code = code_of(&first);
    let wrong = if first_code == "000000" {
        "111111"
    } else {
        "000000"
    };
    for _ in 0..5 {
        call(
            &s,
            "POST",
            "/api/senders/sales@acme.com/verify",
            &t,
            Some(json!({"code": wrong})),
        )
        .await;
    }
    let (st, v) = call(
        &s,
        "POST",
        "/api/senders/sales@acme.com/verify",
        &t,
        Some(json!({"code": first_code})),
    )
    .await;
    assert_eq!(
        st,
        StatusCode::CONFLICT,
        "locked even for the right code: {v}"
    );
    let events: i64 = s.query("SELECT COUNT(*) FROM webhook_deliveries").await;
    assert_eq!(events, 0, "no webhook endpoints: nothing queued");
    let (st, _) = call(&s, "DELETE", "/api/senders/sales@acme.com", &t, None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = call(&s, "GET", "/api/senders/sales@acme.com", &t, None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verification_mail_coming_back_through_forwarding_verifies_by_itself() {
    let mut s = TestServer::start_with("", "").await;
    let t = owner(&s).await;
    let (_, v) = call(
        &s,
        "POST",
        "/api/senders",
        &t,
        Some(json!({"email": "help@acme.com", "name": "Help"})),
    )
    .await;
    let fwd = v["forwarding_address"].as_str().expect("fwd").to_string();
    let mail = sent_mail(s.dir.path(), "help@acme.com", "Verification code").await;
    // acme.com's provider forwards help@acme.com to the gateway.
    let r = smtp_send(
        s.smtp,
        "bounce+x@gw.example.com",
        &[&fwd],
        &forwarded(&mail, "help@acme.com", &fwd),
    )
    .await;
    assert!(r.starts_with("250"), "{r}");
    s.wait_ingested().await;
    let (_, v) = call(&s, "GET", "/api/senders/help@acme.com", &t, None).await;
    assert_eq!(v["status"], "verified");
    assert_eq!(v["forwarding"], "confirmed");
    assert!(v["forwarding_confirmed_at"].is_string());

    // Gmail's confirmation mails, in two languages, are captured with their codes.
    for (subject, code) in [
        (
            "(#583920174) Gmail Forwarding Confirmation - Receive Mail from help@acme.com",
            "583920174",
        ),
        (
            "(#918273645) Gmail-Weiterleitungsbestätigung – E-Mails von help@acme.com empfangen",
            "918273645",
        ),
    ] {
        let msg = format!(
            "From: Gmail Team <forwarding-noreply@google.com>\nTo: {fwd}\nSubject: {subject}\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\nMessage-ID: <{code}@google.com>\n\nConfirmation code: {code}\n\nhttps://mail-settings.google.com/mail/vf-%5B{code}%5D-x\n"
        );
        smtp_send(s.smtp, "forwarding-noreply@google.com", &[&fwd], &msg).await;
        s.wait_ingested().await;
        let (_, v) = call(&s, "GET", "/api/senders/help@acme.com", &t, None).await;
        assert_eq!(v["forwarding_confirmation"]["provider"], "gmail");
        assert_eq!(v["forwarding_confirmation"]["code"], code, "{subject}");
        assert!(
            v["forwarding_confirmation"]["link"]
                .as_str()
                .is_some_and(|l| l.contains(code))
        );
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_check_and_forwarding_probe_and_dkim_signing() {
    // Published: SPF with the gateway's path, DMARC; the DKIM record is the
    // key the gateway generates, published once we know it.
    let dns = FakeDns::start(&[
        (
            "acme.com",
            RecordKind::Txt("v=spf1 include:_spf.gw.example.com ~all".into()),
        ),
        (
            "_spf.gw.example.com",
            RecordKind::Txt("v=spf1 ip4:203.0.113.5 -all".into()),
        ),
        (
            "_dmarc.acme.com",
            RecordKind::Txt("v=DMARC1; p=reject".into()),
        ),
        (
            "other.example",
            RecordKind::Txt("v=spf1 ip4:192.0.2.9 -all".into()),
        ),
    ])
    .await;
    let mut s = TestServer::start_with(
        "",
        &format!(
            "[dns]\nnameservers = [\"{}\"]\ntimeout = \"2s\"\n[outbound]\nspf = [\"ip4:203.0.113.5\"]\n[senders]\nprobe_wait = \"1s\"\n",
            dns.addr
        ),
    )
    .await;
    let t = owner(&s).await;
    let (_, v) = call(
        &s,
        "POST",
        "/api/senders",
        &t,
        Some(json!({"email": "ops@acme.com", "dkim_algorithm": "ed25519"})),
    )
    .await;
    let fwd = v["forwarding_address"].as_str().expect("fwd").to_string();
    let record = v["instructions"]["records"][0]["value"]
        .as_str()
        .expect("dkim record")
        .to_string();
    assert!(record.starts_with("v=DKIM1; k=ed25519; p="), "{record}");
    let code = code_of(&sent_mail(s.dir.path(), "ops@acme.com", "Verification code").await);
    call(
        &s,
        "POST",
        "/api/senders/ops@acme.com/verify",
        &t,
        Some(json!({"code": code})),
    )
    .await;

    // The DKIM record is not published yet: dkim missing, DMARC alignment
    // therefore not achievable through DKIM.
    let (st, v) = call(&s, "POST", "/api/senders/ops@acme.com/check", &t, None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["dns"]["spf"]["status"], "pass", "{}", v["dns"]);
    assert_eq!(v["dns"]["dkim"]["status"], "missing");
    assert_eq!(v["dns"]["dkim"]["record_to_publish"], record.as_str());

    // Published now (a second server instance of the zone with the record).
    let dns2 = FakeDns::start(&[
        (
            "acme.com",
            RecordKind::Txt("v=spf1 include:_spf.gw.example.com ~all".into()),
        ),
        (
            "_spf.gw.example.com",
            RecordKind::Txt("v=spf1 ip4:203.0.113.5 -all".into()),
        ),
        (
            "_dmarc.acme.com",
            RecordKind::Txt("v=DMARC1; p=reject".into()),
        ),
        (
            "backchannel._domainkey.acme.com",
            RecordKind::Txt(record.clone()),
        ),
    ])
    .await;
    // Restart the same data directory against the new zone.
    let data = std::mem::replace(&mut s.dir, tempfile::tempdir().expect("dir"));
    s.shutdown().await;
    s.store.close();
    let mut s = TestServer::start_in(
        data,
        "",
        &format!(
            "[dns]\nnameservers = [\"{}\"]\ntimeout = \"2s\"\n[outbound]\nspf = [\"ip4:203.0.113.5\"]\n[senders]\nprobe_wait = \"20s\"\n",
            dns2.addr
        ),
    )
    .await;

    // check: DNS passes, and the forwarding probe goes out; the provider
    // forwards it back while check waits for it.
    let server_dir = s.dir.path().to_path_buf();
    let smtp = s.smtp;
    let fwd2 = fwd.clone();
    let seen = sent_files(&server_dir);
    let forwarder = tokio::spawn(async move {
        let probe = sent_mail_except(&server_dir, "ops@acme.com", "forwarding test", &seen).await;
        smtp_send(
            smtp,
            "bounce+p@gw.example.com",
            &[&fwd2],
            &forwarded(&probe, "ops@acme.com", &fwd2),
        )
        .await
    });
    let (st, v) = call(&s, "POST", "/api/senders/ops@acme.com/check", &t, None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(forwarder.await.expect("forwarder").starts_with("250"));
    assert_eq!(v["dns"]["spf"]["status"], "pass");
    assert_eq!(v["dns"]["dkim"]["status"], "pass", "{}", v["dns"]);
    assert_eq!(v["dns"]["dmarc"]["status"], "pass", "{}", v["dns"]);
    assert_eq!(
        v["forwarding"], "confirmed",
        "the probe came back while check waited"
    );

    // With DKIM verified, mail from the sender is signed and verifies.
    let (st, sc) = call(&s, "POST", "/api/parents/T-9/side-conversations", &t, Some(json!({"to": ["v@vendor.example"], "subject": "signed", "body_text": "b", "from": "ops@acme.com"}))).await;
    assert_eq!(st, StatusCode::CREATED, "{sc}");
    let mid = sc["messages"][0]["id"].as_i64().expect("message");
    let raw: Vec<u8> = s
        .query(&format!("SELECT raw FROM messages WHERE id = {mid}"))
        .await;
    assert!(raw.starts_with(b"DKIM-Signature:"));
    let auth = backchannel::ingest::auth::Authenticator::new(&backchannel::config::DnsConfig {
        nameservers: vec![dns2.addr],
        timeout: Duration::from_secs(2),
    })
    .expect("authenticator");
    let r = auth
        .authenticate(
            &raw,
            "203.0.113.5".parse().expect("ip"),
            "gw.example.com",
            "bounce+k@gw.example.com",
            "gw.example.com",
        )
        .await;
    assert_eq!(r.dkim, "pass", "{r:?}");
    assert_eq!(r.dmarc, "pass", "{r:?}");
    drop(dns);
    s.shutdown().await;
}

/// A new sender's answer carries the three DNS records to publish, each
/// `unknown` until the first check; asking for a DKIM key type other than
/// the one the domain already has is a 422 naming the existing key, and
/// stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_sender_shows_three_records_and_a_dkim_type_mismatch_is_refused() {
    let mut s = TestServer::start_with("", "[outbound]\nspf = [\"ip4:203.0.113.5\"]\n").await;
    let t = owner(&s).await;
    let (st, v) = call(
        &s,
        "POST",
        "/api/senders",
        &t,
        Some(json!({"email": "support@acme.com", "dkim_algorithm": "ed25519"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let dns = &v["dns"];
    for check in ["spf", "dkim", "dmarc"] {
        assert_eq!(dns[check]["status"], "unknown", "{check}: {dns}");
    }
    assert_eq!(dns["spf"]["record_name"], "acme.com");
    assert_eq!(
        dns["spf"]["record_to_publish"],
        "v=spf1 ip4:203.0.113.5 ~all"
    );
    assert_eq!(
        dns["dkim"]["record_name"],
        "backchannel._domainkey.acme.com"
    );
    assert_eq!(
        dns["dkim"]["record_to_publish"],
        v["instructions"]["records"][0]["value"]
    );
    assert!(
        dns["dkim"]["record_to_publish"]
            .as_str()
            .is_some_and(|r| r.starts_with("v=DKIM1; k=ed25519; p=")),
        "{dns}"
    );
    assert_eq!(dns["dmarc"]["record_name"], "_dmarc.acme.com");
    assert_eq!(dns["dmarc"]["record_to_publish"], "v=DMARC1; p=none");

    let (st, v) = call(
        &s,
        "POST",
        "/api/senders",
        &t,
        Some(json!({"email": "sales@acme.com", "dkim_algorithm": "rsa"})),
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["field"], "dkim_algorithm", "{v}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("acme.com already has an Ed25519 DKIM key"),
        "{message}"
    );
    let (st, _) = call(&s, "GET", "/api/senders/sales@acme.com", &t, None).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "nothing stored");
    // The same type, or none, uses the domain's key.
    for (email, algorithm) in [
        ("sales@acme.com", Some("ed25519")),
        ("billing@acme.com", None),
    ] {
        let mut body = json!({"email": email});
        if let Some(a) = algorithm {
            body["dkim_algorithm"] = json!(a);
        }
        let (st, v) = call(&s, "POST", "/api/senders", &t, Some(body)).await;
        assert_eq!(st, StatusCode::CREATED, "{email}: {v}");
    }
    s.shutdown().await;
}
