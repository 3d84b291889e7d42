//! Shared set-up of the fuzz targets: one gateway per fuzzing process (a
//! temporary data directory, the real store, a config that never leaves
//! loopback and never delivers webhooks), a tokio runtime to drive async
//! code from libFuzzer's synchronous callback, and a few seeded records
//! (a side conversation with a known token, a sender, API users).
//!
//! The data directory lives on /dev/shm when there is one: the store commits
//! with `synchronous=FULL`, and an fsync per input on a real disk would make
//! the fuzzers crawl.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use backchannel::config::Config;
use backchannel::conversations::Conversations;
use backchannel::http::AppState;
use backchannel::limits::Limits;
use backchannel::model::{NewSenderRow, NewSideConversation, ParticipantRole, Role, now_ms};
use backchannel::shutdown::Shutdown;
use backchannel::store::inbound::{self, Envelope};
use backchannel::store::{self, Store};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

/// Token of the seeded side conversation; seeds address `reply+<TOKEN>@gw.example.com`.
pub const TOKEN: &str = "abcdefghijklmn23";
/// Gateway domain of every fuzz target.
pub const DOMAIN: &str = "gw.example.com";

/// A gateway's store and config for one fuzzing process.
pub struct Gateway {
    pub rt: tokio::runtime::Runtime,
    pub config: Arc<Config>,
    pub store: Store,
    /// The abuse limits. The targets' peers are on loopback, which the
    /// default `limits.exempt` leaves alone, so no tarpit or login pause
    /// slows the fuzzers down.
    pub limits: Arc<Limits>,
    /// Keeps the shutdown signal unsent for the process's life.
    pub trigger: tokio::sync::watch::Sender<bool>,
    pub shutdown: Shutdown,
    /// The process's scratch directory (store, spool). libFuzzer ends the
    /// process with `exit`, so nothing here would run a destructor: the
    /// directory is left behind, and fuzz/run.sh, which points
    /// `FUZZ_SCRATCH` at a directory of its own, removes it.
    pub dir: PathBuf,
}

/// A new directory under `FUZZ_SCRATCH` when set, else under /dev/shm when
/// there is one, else under the system's temporary directory.
fn scratch_dir() -> PathBuf {
    let base = match std::env::var_os("FUZZ_SCRATCH") {
        Some(dir) => PathBuf::from(dir),
        None if PathBuf::from("/dev/shm").is_dir() => PathBuf::from("/dev/shm"),
        None => std::env::temp_dir(),
    };
    let pid = std::process::id();
    for n in 0..1000 {
        let dir = base.join(format!("backchannel-fuzz-{pid}-{n}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => return dir,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("scratch directory {}: {e}", dir.display()),
        }
    }
    panic!("no free scratch directory under {}", base.display());
}

/// The config every target uses: loopback only, DNS to a closed port
/// (lookups fail at once), no webhook delivery, short timeouts so a session
/// waiting for input cannot stall the fuzzer, no inbound authentication
/// (DNS would only fail), limits high enough not to mask the code under test.
pub fn config_text(data_dir: &std::path::Path) -> String {
    format!(
        r#"domain = "{DOMAIN}"
data_dir = "{}"
[smtp]
listen = "127.0.0.1:0"
max_message_bytes = 1048576
command_timeout = "2s"
data_timeout = "2s"
shutdown_grace = "1s"
[http]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:8080"
max_body_bytes = 1048576
request_timeout = "10s"
[imap]
listen = "127.0.0.1:0"
login_failure_delay = "0s"
[submission]
listen = ""
[dns]
nameservers = ["127.0.0.1:9"]
timeout = "100ms"
[ingest]
authenticate = false
[webhooks]
deliver = false
[senders]
probe_wait = "10ms"
[portal]
replies_per_hour = 1000000000
"#,
        data_dir.display()
    )
}

impl Gateway {
    /// Opens a fresh store with a side conversation (token [`TOKEN`], one
    /// participant `vendor@carrier.example`) and a registered sender
    /// `support@acme.com` (forwarding local part `fwd-fuzz`).
    pub fn new() -> Gateway {
        let dir = scratch_dir();
        let text = config_text(&dir.join("data"));
        let config = Config::from_toml_str(&text, Vec::new()).expect("fuzz config");
        let store = Store::open(&config.db_path()).expect("open store");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(store.write(|db| {
            let (parent, _) = store::parents::create_if_missing(db, "T-fuzz", "Order 1001", 0)?;
            let sc = store::side_conversations::insert(
                db,
                &NewSideConversation {
                    parent_id: parent,
                    token: TOKEN,
                    portal_per_recipient: false,
                    subject: "Pallet 7 delayed",
                    sender_email: "support@acme.com",
                    started_by: None,
                    created_at: 0,
                },
            )?;
            store::participants::add(
                db,
                sc,
                "vendor@carrier.example",
                None,
                ParticipantRole::To,
                0,
            )?;
            store::senders::insert(
                db,
                &NewSenderRow {
                    email: "support@acme.com".into(),
                    name: String::new(),
                    reply_mode: "gateway".into(),
                    forwarding_local: "fwd-fuzz".into(),
                    signature_text: None,
                    signature_html: None,
                    created_at: 0,
                },
            )
        }))
        .expect("seed store");
        let limits = Limits::new(&config);
        let (trigger, shutdown) = Shutdown::new();
        Gateway {
            rt,
            config: Arc::new(config),
            store,
            limits,
            trigger,
            shutdown,
            dir,
        }
    }

    /// Runs one message through the real ingest pipeline (queue, prepare,
    /// apply), as the ingest worker would; returns the apply outcome.
    pub fn ingest(
        &self,
        mail_from: &str,
        rcpt: &str,
        raw: &[u8],
    ) -> (
        i64,
        backchannel::store::Result<backchannel::ingest::apply::Applied>,
    ) {
        let env = Envelope {
            peer_ip: "127.0.0.1".into(),
            helo: "mx.carrier.example".into(),
            mail_from: mail_from.into(),
            rcpts: vec![rcpt.into()],
            tls: false,
            params: Vec::new(),
            received_at: now_ms(),
        };
        let raw = raw.to_vec();
        self.rt.block_on(async {
            let id = self
                .store
                .write(move |c| inbound::enqueue(c, &env, &raw))
                .await
                .expect("enqueue");
            let m = self
                .store
                .read(move |c| inbound::get(c, id))
                .await
                .expect("queued row");
            let prepared = backchannel::ingest::prepare(m, None, DOMAIN.to_string())
                .await
                .expect("prepare");
            let config = self.config.clone();
            let applied = self
                .store
                .write(move |c| backchannel::ingest::apply::apply(c, &config, &prepared))
                .await;
            (id, applied)
        })
    }

    /// Creates a user; returns its API token.
    pub fn user(&self, email: &str, role: Role) -> String {
        let email = email.to_string();
        self.rt
            .block_on(
                self.store.write(move |c| {
                    backchannel::store::users::create(c, &email, "Fuzz User", role)
                }),
            )
            .expect("create user")
            .1
            .as_str()
            .to_string()
    }
}

/// The HTTP side: the real router on the gateway's store, four users
/// (owner, admin, member, viewer) and a seeded thread — started over the
/// API with a portal link, answered by the vendor through ingest — whose
/// ids and tokens inputs can name with placeholders (see [`Api::substitute`]).
pub struct Api {
    pub gw: Gateway,
    pub router: axum::Router,
    /// Owner, admin, member, viewer.
    pub tokens: [String; 4],
    pub substitutions: Vec<(&'static [u8], Vec<u8>)>,
}

/// One request through the router: (status, content type, body).
pub async fn call(
    router: &axum::Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Option<String>, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if let Some(ct) = content_type {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    let req = req.body(Body::from(body)).expect("request");
    let resp = router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    (status, ct, bytes)
}

impl Api {
    pub fn new() -> Api {
        let gw = Gateway::new();
        let tokens = [
            gw.user("owner@gw.example.com", Role::Owner),
            gw.user("admin2@gw.example.com", Role::Admin),
            gw.user("member@gw.example.com", Role::Member),
            gw.user("viewer@gw.example.com", Role::Viewer),
        ];
        let resolver = backchannel::senders::dns::Resolver::new(&gw.config.dns).expect("resolver");
        let conversations = Conversations::new(
            gw.config.clone(),
            gw.store.clone(),
            Arc::new(tokio::sync::Notify::new()),
        );
        let router = backchannel::app::http_router(
            AppState {
                store: gw.store.clone(),
                config: gw.config.clone(),
                conversations,
                resolver,
                limits: gw.limits.clone(),
            },
            gw.shutdown.clone(),
        );
        let owner = Some(tokens[0].as_str());
        let (sc, token, portal, message) = gw.rt.block_on(async {
            let (s, _, _) = call(
                &router,
                Method::PUT,
                "/api/parents/T-1",
                owner,
                Some("application/json"),
                json!({"subject": "Order 1001", "requester": {"name": "Ann", "email": "ann@customer.example"}})
                    .to_string()
                    .into_bytes(),
            )
            .await;
            assert!(s.is_success(), "parent upsert: {s}");
            let (s, _, body) = call(
                &router,
                Method::POST,
                "/api/parents/T-1/side-conversations",
                owner,
                Some("application/json"),
                json!({"to": ["vendor@carrier.example"], "subject": "Pallet 7", "body_text": "Where is it?", "share_portal_link": true})
                    .to_string()
                    .into_bytes(),
            )
            .await;
            assert_eq!(s, StatusCode::CREATED, "start: {}", String::from_utf8_lossy(&body));
            let v: Value = serde_json::from_slice(&body).expect("start JSON");
            let sc = v["id"].as_i64().expect("id");
            let token = v["token"].as_str().expect("token").to_string();
            let portal_url = v["portal_url"].as_str().expect("portal_url");
            let portal = portal_url.rsplit('/').next().expect("portal token").to_string();
            let message = v["messages"][0]["id"].as_i64().expect("message id");
            (sc, token, portal, message)
        });
        // The vendor answers with an attachment, so the thread has an
        // inbound message, a blob and a download.
        let reply = format!(
            "From: Vera <vendor@carrier.example>\r\nTo: reply+{token}@{DOMAIN}\r\nSubject: Re: Pallet 7\r\nMessage-ID: <seed.reply@carrier.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"s\"\r\n\r\n--s\r\nContent-Type: text/plain\r\n\r\nOn its way.\r\n--s\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"pod.pdf\"\r\n\r\n%PDF-1.4\r\n--s--\r\n"
        );
        let (_, applied) = gw.ingest(
            "vendor@carrier.example",
            &format!("reply+{token}@{DOMAIN}"),
            reply.as_bytes(),
        );
        applied.expect("seed reply");
        let csrf = gw.rt.block_on(async {
            let (s, _, page) = call(
                &router,
                Method::GET,
                &format!("/p/{portal}"),
                None,
                None,
                Vec::new(),
            )
            .await;
            assert_eq!(s, StatusCode::OK, "portal page");
            String::from_utf8_lossy(&page)
                .split("name=\"csrf\" value=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .expect("csrf in the portal form")
                .to_string()
        });
        let account = backchannel::jmap::account_id(1);
        let substitutions = vec![
            (&b"$T"[..], token.into_bytes()),
            (&b"$P"[..], portal.into_bytes()),
            (&b"$C"[..], csrf.into_bytes()),
            (&b"$S"[..], sc.to_string().into_bytes()),
            (&b"$M"[..], message.to_string().into_bytes()),
            (&b"$A"[..], account.into_bytes()),
        ];
        Api {
            gw,
            router,
            tokens,
            substitutions,
        }
    }

    /// Replaces the placeholders `$T` (reply token), `$P` (portal token),
    /// `$C` (portal CSRF token), `$S` (side conversation id), `$M` (a
    /// message id) and `$A` (the owner's JMAP account id).
    pub fn substitute(&self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len());
        let mut i = 0;
        'outer: while i < data.len() {
            for (from, to) in &self.substitutions {
                if data[i..].starts_with(from) {
                    out.extend_from_slice(to);
                    i += from.len();
                    continue 'outer;
                }
            }
            out.push(data[i]);
            i += 1;
        }
        out
    }
}

impl Default for Api {
    fn default() -> Self {
        Api::new()
    }
}

/// Checks an answer of the JSON API (`/api/…`, `/jmap…`): never a 500, and
/// an error is the JSON error shape (or, for JMAP, a problem document).
pub fn check_api_answer(what: &str, status: StatusCode, ct: Option<&str>, body: &[u8]) {
    assert_ne!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "500 for {what}: {}",
        String::from_utf8_lossy(body)
    );
    if status.is_client_error() || status.is_server_error() {
        assert!(
            ct.is_some_and(
                |c| c.starts_with("application/json") || c.starts_with("application/problem+json")
            ),
            "{status} for {what} is not JSON: {ct:?}"
        );
        let v: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => panic!("{status} for {what}: body is not JSON ({e})"),
        };
        assert!(
            (v["error"]["code"].is_string() && v["error"]["message"].is_string())
                || v["type"].is_string(),
            "{status} for {what}: not an error shape: {v}"
        );
    }
}

impl Default for Gateway {
    fn default() -> Self {
        Gateway::new()
    }
}

/// True when `out` is a sequence of well-formed SMTP replies: each line is
/// three digits 2xx–5xx, then a space or a hyphen (or nothing), text without
/// CR or LF, and CRLF; a multi-line reply keeps one code.
pub fn replies_well_formed(out: &[u8]) -> Result<usize, String> {
    let mut replies = 0;
    let mut continuing: Option<&[u8]> = None;
    let mut rest = out;
    while !rest.is_empty() {
        let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Err(format!(
                "reply not ended by CRLF: {:?}",
                String::from_utf8_lossy(rest)
            ));
        };
        let line = &rest[..end];
        rest = &rest[end + 2..];
        if line.len() < 3
            || !line[..3].iter().all(u8::is_ascii_digit)
            || !(b'2'..=b'5').contains(&line[0])
        {
            return Err(format!(
                "bad reply line {:?}",
                String::from_utf8_lossy(line)
            ));
        }
        if line.contains(&b'\r') || line.contains(&b'\n') {
            return Err(format!("bare CR/LF in {:?}", String::from_utf8_lossy(line)));
        }
        if let Some(code) = continuing
            && code != &line[..3]
        {
            return Err(format!(
                "multi-line reply changed code: {:?}",
                String::from_utf8_lossy(line)
            ));
        }
        match line.get(3) {
            Some(b'-') => continuing = Some(&line[..3]),
            None | Some(b' ') => {
                continuing = None;
                replies += 1;
            }
            Some(_) => {
                return Err(format!(
                    "bad separator in {:?}",
                    String::from_utf8_lossy(line)
                ));
            }
        }
    }
    if continuing.is_some() {
        return Err("multi-line reply not finished".into());
    }
    Ok(replies)
}
