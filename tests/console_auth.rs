//! The web console's sign-in (SPEC §11), from the outside: a browser-like
//! client on the real HTTP listener, cookies kept by hand, forms posted
//! with the token the page gave.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use backchannel::conversations::sign_in;
use backchannel::model::{Role, now_ms};
use backchannel::store::audit::Actor;
use common::*;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};

const BIN: &str = env!("CARGO_BIN_EXE_backchannel");

/// A browser: its cookies, no redirects followed (the tests look at them).
struct Browser {
    base: String,
    client: reqwest::Client,
    cookies: Vec<(String, String)>,
}

struct Answer {
    status: StatusCode,
    location: Option<String>,
    set_cookies: Vec<String>,
    body: String,
}

impl Browser {
    fn new(s: &TestServer) -> Browser {
        Browser {
            base: format!("http://{}", s.http),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            cookies: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep(&mut self, headers: &HeaderMap) -> Vec<String> {
        let mut seen = Vec::new();
        for v in headers.get_all(SET_COOKIE) {
            let v = v.to_str().expect("ascii cookie").to_string();
            let pair = v.split(';').next().unwrap_or("");
            if let Some((k, val)) = pair.split_once('=') {
                self.cookies.retain(|(name, _)| name != k);
                if !val.is_empty() && !v.contains("Max-Age=0") {
                    self.cookies.push((k.to_string(), val.to_string()));
                }
            }
            seen.push(v);
        }
        seen
    }

    async fn answer(&mut self, resp: reqwest::Response) -> Answer {
        let status = resp.status();
        let location = resp
            .headers()
            .get(LOCATION)
            .map(|v| v.to_str().expect("location").to_string());
        let set_cookies = self.keep(resp.headers());
        let body = resp.text().await.expect("body");
        Answer {
            status,
            location,
            set_cookies,
            body,
        }
    }

    async fn get(&mut self, path: &str) -> Answer {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .expect("get");
        self.answer(resp).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)], origin: Option<&str>) -> Answer {
        let mut req = self
            .client
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .form(form);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        let resp = req.send().await.expect("post");
        self.answer(resp).await
    }

    fn has_cookie(&self, name: &str) -> bool {
        self.cookies.iter().any(|(k, _)| k == name)
    }
}

/// The value of the first `name="csrf"` field of a page.
fn csrf_of(body: &str) -> String {
    let at = body
        .find("name=\"csrf\" value=\"")
        .expect("a csrf field on the page");
    let rest = &body[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').expect("end of value")].to_string()
}

/// One value from the database.
async fn q<T: rusqlite::types::FromSql + Send + 'static>(s: &TestServer, sql: &str) -> T {
    let sql = sql.to_string();
    s.sql
        .read(move |c| Ok(c.query_row(&sql, [], |r| r.get(0))?))
        .await
        .expect("query")
}

async fn set_password(s: &TestServer, email: &str, password: &str) {
    let phc = sign_in::hash_password(password).expect("hash");
    let email = email.to_string();
    s.store
        .write(move |c| {
            let u = backchannel::store::users::by_email(c, &email)?;
            backchannel::store::console::set_password(c, &Actor::cli(), u.id, Some(&phc), None)
        })
        .await
        .expect("set password");
}

async fn link_for(s: &TestServer, email: &str) -> String {
    let email = email.to_string();
    let config = s
        .running
        .as_ref()
        .expect("running")
        .conversations
        .config
        .clone();
    let url = s
        .store
        .write(move |c| {
            let u = backchannel::store::users::by_email(c, &email)?;
            sign_in::create_link(c, &config, &u, now_ms())
        })
        .await
        .expect("link");
    let at = url.find("/app/login/").expect("link path");
    url[at..].to_string()
}

/// Signs in with a password through the form; returns the answer to the
/// post.
async fn password_sign_in(b: &mut Browser, email: &str, password: &str) -> Answer {
    let page = b.get("/app/login").await;
    assert_eq!(page.status, StatusCode::OK);
    let csrf = csrf_of(&page.body);
    b.post(
        "/app/login",
        &[
            ("csrf", &csrf),
            ("email", email),
            ("password", password),
            ("next", "/app/"),
        ],
        None,
    )
    .await
}

async fn link_sign_in(b: &mut Browser, path: &str) -> Answer {
    let page = b.get(path).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let csrf = csrf_of(&page.body);
    b.post(path, &[("csrf", &csrf)], None).await
}

fn goes_to_sign_in(a: &Answer) -> bool {
    a.status == StatusCode::SEE_OTHER
        && a.location
            .as_deref()
            .is_some_and(|l| l.starts_with("/app/login"))
}

#[tokio::test]
async fn password_sign_in_sets_a_hardened_cookie_and_sign_out_ends_the_session() {
    let s = TestServer::start("").await;
    make_user(&s, "ada@acme.example", "Ada Agent", Role::Member).await;
    set_password(&s, "ada@acme.example", "correct horse battery").await;
    let mut b = Browser::new(&s);

    // Not signed in: every console page leads to the sign-in page, which
    // remembers where the person was going.
    let a = b.get("/app/parents/T-1").await;
    assert!(goes_to_sign_in(&a));
    assert_eq!(
        a.location.as_deref(),
        Some("/app/login?next=%2Fapp%2Fparents%2FT-1")
    );

    let page = b.get("/app/login").await;
    let csp = "default-src 'none'";
    assert!(page.body.contains("<label for=\"password\">"));
    assert!(b.has_cookie("bc_pre"));
    let _ = csp;

    let wrong = password_sign_in(&mut b, "ada@acme.example", "wrong password!").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("do not match"));
    assert!(!b.has_cookie("bc_session"));
    // The address is kept, escaped, in the form.
    assert!(wrong.body.contains("value=\"ada@acme.example\""));

    let ok = password_sign_in(&mut b, "ada@acme.example", "correct horse battery").await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    assert_eq!(ok.location.as_deref(), Some("/app/"));
    let cookie = ok
        .set_cookies
        .iter()
        .find(|c| c.starts_with("bc_session="))
        .expect("a session cookie");
    for flag in ["HttpOnly", "SameSite=Lax", "Path=/app"] {
        assert!(cookie.contains(flag), "{cookie} lacks {flag}");
    }
    assert!(!cookie.contains("Secure"), "http public_url: no Secure");

    let inbox = b.get("/app/").await;
    assert_eq!(inbox.status, StatusCode::OK);
    assert!(inbox.body.contains("Ada Agent"));
    assert!(inbox.body.contains("Needs attention"));
    // A member sees no admin pages in the nav.
    assert!(!inbox.body.contains("/app/admin/users"));

    // Sign-out needs the form's token.
    let refused = b.post("/app/logout", &[], None).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(b.get("/app/").await.status, StatusCode::OK);
    let old = b.cookies.clone();
    let csrf = csrf_of(&inbox.body);
    let out = b.post("/app/logout", &[("csrf", &csrf)], None).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(!b.has_cookie("bc_session"));
    // The old cookie value opens nothing any more.
    b.cookies = old;
    assert!(goes_to_sign_in(&b.get("/app/").await));
    let sessions: i64 = q(&s, "SELECT count(*) FROM console_sessions").await;
    assert_eq!(sessions, 0);
}

#[tokio::test]
async fn the_session_cookie_is_secure_when_public_url_is_https() {
    let s = TestServer::start_with_http("", "public_url = \"https://console.acme.example\"\n", "")
        .await;
    make_user(&s, "ada@acme.example", "Ada", Role::Member).await;
    let mut b = Browser::new(&s);
    let path = link_for(&s, "ada@acme.example").await;
    let a = link_sign_in(&mut b, &path).await;
    let cookie = a
        .set_cookies
        .iter()
        .find(|c| c.starts_with("bc_session="))
        .expect("session cookie");
    assert!(cookie.contains("; Secure"), "{cookie}");
    // A post naming another origin is refused even with the right token.
    let page = b.get("/app/me").await;
    let csrf = csrf_of(&page.body);
    let a = b
        .post(
            "/app/me",
            &[("csrf", &csrf), ("name", "Mallory")],
            Some("https://evil.example"),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = b
        .post(
            "/app/me",
            &[("csrf", &csrf), ("name", "Ada Lovelace")],
            Some("https://console.acme.example"),
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    let name: String = q(
        &s,
        "SELECT name FROM users WHERE email = 'ada@acme.example'",
    )
    .await;
    assert_eq!(name, "Ada Lovelace");
}

#[tokio::test]
async fn a_sign_in_link_works_once_and_not_after_it_expires() {
    let s = TestServer::start("").await;
    make_user(&s, "ada@acme.example", "Ada", Role::Member).await;
    let path = link_for(&s, "ada@acme.example").await;
    let mut b = Browser::new(&s);
    // Looking at the link (a mail scanner fetching it) does not use it.
    assert_eq!(b.get(&path).await.status, StatusCode::OK);
    let page = b.get(&path).await;
    assert!(page.body.contains("ada@acme.example"));
    let a = link_sign_in(&mut b, &path).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert!(b.has_cookie("bc_session"));
    assert_eq!(b.get("/app/").await.status, StatusCode::OK);

    // Once only.
    let mut other = Browser::new(&s);
    let again = other.get(&path).await;
    assert_eq!(again.status, StatusCode::GONE);
    assert!(again.body.contains("used already"));

    // Expired.
    let token = sign_in::new_token();
    let hash = sign_in::hash(&token);
    s.store
        .write(move |c| {
            let u = backchannel::store::users::by_email(c, "ada@acme.example")?;
            backchannel::store::console::create_link(c, &hash, u.id, now_ms() - 10, now_ms() - 1)
        })
        .await
        .expect("link");
    let a = other.get(&format!("/app/login/{token}")).await;
    assert_eq!(a.status, StatusCode::GONE);
    assert!(a.body.contains("expired"));

    // Unknown, and junk.
    let a = other
        .get(&format!("/app/login/{}", sign_in::new_token()))
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = other.get("/app/login/%3Cscript%3E").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(!a.body.contains("<script>"));
    assert!(!other.has_cookie("bc_session"));
}

#[tokio::test]
async fn asking_for_a_link_emails_one_and_says_the_same_for_strangers() {
    let s = TestServer::start("").await;
    make_user(&s, "ada@acme.example", "Ada", Role::Member).await;
    let mut b = Browser::new(&s);
    let page = b.get("/app/login").await;
    let csrf = csrf_of(&page.body);
    let known = b
        .post(
            "/app/login/link",
            &[("csrf", &csrf), ("email", "ada@acme.example")],
            None,
        )
        .await;
    let stranger = b
        .post(
            "/app/login/link",
            &[("csrf", &csrf), ("email", "nobody@acme.example")],
            None,
        )
        .await;
    assert_eq!(known.status, StatusCode::SEE_OTHER);
    assert_eq!(known.location, stranger.location);
    // One email, to the user, carrying a link that signs in.
    let raw = wait_for("the sign-in email in the outbox", || async {
        s.sql
            .read(|c| {
                Ok(c.query_row(
                    "SELECT m.raw FROM messages m JOIN outbox o ON o.message_id = m.id
                     WHERE o.recipient = 'ada@acme.example'",
                    [],
                    |r| r.get::<_, Vec<u8>>(0),
                )?)
            })
            .await
            .ok()
            .map(|v: Vec<u8>| v)
    })
    .await;
    let raw: Vec<u8> = raw;
    let text = String::from_utf8_lossy(&raw).replace("=\r\n", "");
    let at = text.find("/app/login/").expect("a link in the email");
    let token: String = text[at + "/app/login/".len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    assert_eq!(token.len(), 52, "{text}");
    let mails: i64 = q(&s, "SELECT count(*) FROM outbox").await;
    assert_eq!(mails, 1, "no email for a stranger");
    let mut fresh = Browser::new(&s);
    let a = link_sign_in(&mut fresh, &format!("/app/login/{token}")).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(fresh.get("/app/").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_deactivated_user_is_out_at_once() {
    let s = TestServer::start("").await;
    let owner = make_user(&s, "owner@acme.example", "Owner", Role::Owner).await;
    make_user(&s, "ada@acme.example", "Ada", Role::Member).await;
    let mut b = Browser::new(&s);
    let path = link_for(&s, "ada@acme.example").await;
    link_sign_in(&mut b, &path).await;
    assert_eq!(b.get("/app/").await.status, StatusCode::OK);
    let spare = link_for(&s, "ada@acme.example").await;

    let id: i64 = q(&s, "SELECT id FROM users WHERE email = 'ada@acme.example'").await;
    let (st, _) = api_call(
        &s,
        "PATCH",
        &format!("/api/users/{id}"),
        &owner,
        Some(serde_json::json!({"active": false})),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    // The very next request.
    assert!(goes_to_sign_in(&b.get("/app/").await));
    // Nor does a link made before open a session.
    let mut other = Browser::new(&s);
    let a = other.get(&spare).await;
    assert_eq!(a.status, StatusCode::GONE);
    // Nor a password.
    set_password(&s, "ada@acme.example", "correct horse battery").await;
    let a = password_sign_in(&mut other, "ada@acme.example", "correct horse battery").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn forms_without_the_token_change_nothing() {
    let s = TestServer::start("").await;
    make_user(&s, "ada@acme.example", "Ada", Role::Member).await;
    let mut b = Browser::new(&s);
    let path = link_for(&s, "ada@acme.example").await;
    // The link's own form needs the pre-sign-in token too.
    let a = b.post(&path, &[("csrf", "forged")], None).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    link_sign_in(&mut b, &path).await;

    let a = b.post("/app/me", &[("name", "Mallory")], None).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a.body.contains("The form expired"));
    let a = b
        .post("/app/me", &[("name", "Mallory"), ("csrf", "nope")], None)
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let name: String = q(
        &s,
        "SELECT name FROM users WHERE email = 'ada@acme.example'",
    )
    .await;
    assert_eq!(name, "Ada");

    // With it: notifications off, name changed.
    let page = b.get("/app/me").await;
    let csrf = csrf_of(&page.body);
    let a = b
        .post(
            "/app/me",
            &[
                ("csrf", &csrf),
                ("name", "Ada <b>Agent</b>"),
                ("notifications", "off"),
            ],
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    let (name, n): (String, String) = s
        .sql
        .read(|c| {
            Ok(c.query_row(
                "SELECT name, notifications FROM users WHERE email = 'ada@acme.example'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })
        .await
        .expect("user");
    assert_eq!((name.as_str(), n.as_str()), ("Ada <b>Agent</b>", "off"));
    let page = b.get("/app/me?notice=saved").await;
    assert!(
        page.body.contains("Ada &lt;b&gt;Agent&lt;/b&gt;")
            || page.body.contains("Ada &#60;b&#62;Agent")
    );
    assert!(!page.body.contains("<b>Agent</b>"));
    assert!(page.body.contains("Saved."));
    // A notice code the page does not know shows nothing.
    let page = b
        .get("/app/me?notice=%3Cscript%3Ealert(1)%3C/script%3E")
        .await;
    assert!(!page.body.contains("alert(1)"));
    // A bad value is refused with the page shown again.
    let a = b
        .post(
            "/app/me",
            &[("csrf", &csrf), ("notifications", "sometimes")],
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn own_password_change_asks_for_the_current_one_and_ends_other_sessions() {
    let s = TestServer::start("").await;
    make_user(&s, "ada@acme.example", "Ada", Role::Member).await;
    let mut here = Browser::new(&s);
    let mut there = Browser::new(&s);
    link_sign_in(&mut here, &link_for(&s, "ada@acme.example").await).await;
    link_sign_in(&mut there, &link_for(&s, "ada@acme.example").await).await;

    // No password yet: none asked for.
    let page = here.get("/app/me").await;
    assert!(!page.body.contains("name=\"current_password\""));
    let csrf = csrf_of(&page.body);
    let short = here
        .post(
            "/app/me/password",
            &[
                ("csrf", &csrf),
                ("password", "short"),
                ("password_confirm", "short"),
            ],
            None,
        )
        .await;
    assert_eq!(short.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(short.body.contains("at least 10"));
    let a = here
        .post(
            "/app/me/password",
            &[
                ("csrf", &csrf),
                ("password", "a long enough one"),
                ("password_confirm", "a long enough one"),
            ],
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    // This session goes on; the other one is over.
    assert_eq!(here.get("/app/").await.status, StatusCode::OK);
    assert!(goes_to_sign_in(&there.get("/app/").await));

    // Now the current password is needed.
    let page = here.get("/app/me").await;
    assert!(page.body.contains("name=\"current_password\""));
    let a = here
        .post(
            "/app/me/password",
            &[
                ("csrf", &csrf),
                ("current_password", "not it at all"),
                ("password", "another long one"),
                ("password_confirm", "another long one"),
            ],
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    let mut third = Browser::new(&s);
    let a = password_sign_in(&mut third, "ada@acme.example", "a long enough one").await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    let audit: i64 = q(
        &s,
        "SELECT count(*) FROM audit WHERE action = 'user.password_set'",
    )
    .await;
    assert_eq!(audit, 1);
}

#[tokio::test]
async fn failed_sign_ins_are_throttled_per_address() {
    let s = TestServer::start_with("", "[limits]\nexempt = []\nlogin_failures = 3\n").await;
    make_user(&s, "ada@acme.example", "Ada", Role::Member).await;
    set_password(&s, "ada@acme.example", "correct horse battery").await;
    let mut b = Browser::new(&s);
    for _ in 0..2 {
        let a = password_sign_in(&mut b, "ada@acme.example", "guess guess guess").await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    }
    let a = password_sign_in(&mut b, "ada@acme.example", "guess guess guess").await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    // Blocked: even the right password is refused for a while.
    let a = password_sign_in(&mut b, "ada@acme.example", "correct horse battery").await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(a.body.contains("Too many failed attempts"));
    assert!(!b.has_cookie("bc_session"));
}

#[tokio::test]
async fn an_unused_session_ends_after_the_idle_timeout() {
    let s = TestServer::start_with(
        "",
        "[console]\nsession_idle_timeout = \"2s\"\nsession_max_age = \"1h\"\n",
    )
    .await;
    make_user(&s, "ada@acme.example", "Ada", Role::Member).await;
    let mut b = Browser::new(&s);
    link_sign_in(&mut b, &link_for(&s, "ada@acme.example").await).await;
    // In use, it stays: requests well within the timeout for longer than
    // the timeout itself.
    let started = tokio::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(3) {
        assert_eq!(b.get("/app/me").await.status, StatusCode::OK);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    // Unused for longer than the timeout (the configured time itself is
    // what is waited for), it is over.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert!(goes_to_sign_in(&b.get("/app/me").await));
}

fn cli_config(dir: &Path) -> PathBuf {
    let path = dir.join("cli.toml");
    // On PostgreSQL the command line and the gateway started later on this
    // dir share the dir's database.
    let store = common::postgres_database(&dir.join("data"))
        .map(|url| format!("[store]\nurl = \"{url}\"\n"))
        .unwrap_or_default();
    std::fs::write(
        &path,
        format!(
            "domain = \"gw.example.com\"\ndata_dir = \"{}\"\n[http]\npublic_url = \"https://console.acme.example\"\n{store}",
            dir.join("data").display()
        ),
    )
    .expect("write config");
    path
}

fn cli(config: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("BACKCHANNEL_") {
            c.env_remove(k);
        }
    }
    c.arg("--config").arg(config).args(args);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("run the binary");
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(stdin.unwrap_or("").as_bytes())
            .expect("stdin");
    }
    child.wait_with_output().expect("output")
}

#[tokio::test]
async fn the_command_line_sets_passwords_and_prints_sign_in_links() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = cli_config(dir.path());
    let o = cli(
        &config,
        &[
            "user",
            "add",
            "--email",
            "ada@acme.example",
            "--name",
            "Ada",
            "--role",
            "member",
        ],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = cli(
        &config,
        &["user", "set-password", "--email", "ada@acme.example"],
        Some("too short\n"),
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("at least 10"));
    let o = cli(
        &config,
        &["user", "set-password", "--email", "ada@acme.example"],
        Some("correct horse battery\n"),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = cli(
        &config,
        &["user", "set-password", "--email", "nobody@acme.example"],
        Some("correct horse battery\n"),
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no user"));
    let o = cli(
        &config,
        &["user", "login-link", "--email", "ada@acme.example"],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let url = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(
        url.starts_with("https://console.acme.example/app/login/"),
        "{url}"
    );
    let path = url["https://console.acme.example".len()..].to_string();

    let s = TestServer::start_in(dir, "", "").await;
    let mut b = Browser::new(&s);
    let a = password_sign_in(&mut b, "ada@acme.example", "correct horse battery").await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let mut c = Browser::new(&s);
    let a = link_sign_in(&mut c, &path).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(c.get("/app/").await.status, StatusCode::OK);
}

#[tokio::test]
async fn console_pages_send_a_strict_policy_and_serve_their_assets() {
    let s = TestServer::start("").await;
    let resp = reqwest::Client::new()
        .get(format!("http://{}/app/login", s.http))
        .send()
        .await
        .expect("get");
    let h = resp.headers().clone();
    let csp = h
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .expect("csp")
        .to_string();
    assert!(csp.contains("default-src 'none'"));
    assert!(csp.contains("script-src 'self'"));
    assert!(!csp.contains("unsafe-inline"));
    assert!(csp.contains("frame-ancestors 'none'"));
    assert_eq!(
        h.get("x-frame-options").and_then(|v| v.to_str().ok()),
        Some("DENY")
    );
    let body = resp.text().await.expect("body");
    assert!(!body.contains("<script>"), "no inline script");
    assert!(!body.contains("style="), "no inline style");
    for (path, ct) in [
        ("/app/static/console.css", "text/css"),
        ("/app/static/console.js", "text/javascript"),
    ] {
        let r = reqwest::get(format!("http://{}{path}", s.http))
            .await
            .expect("asset");
        assert_eq!(r.status(), StatusCode::OK);
        assert!(
            r.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with(ct))
        );
    }
    // An unknown console page: sign in first, then an HTML 404 page (not
    // the API's JSON).
    make_user(&s, "ada@acme.example", "Ada", Role::Member).await;
    let mut b = Browser::new(&s);
    let a = b.get("/app/no/such/page").await;
    assert_eq!(
        a.location.as_deref(),
        Some("/app/login?next=%2Fapp%2Fno%2Fsuch%2Fpage")
    );
    link_sign_in(&mut b, &link_for(&s, "ada@acme.example").await).await;
    let a = b.get("/app/no/such/page").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.body.starts_with("<!doctype html>"));
}
