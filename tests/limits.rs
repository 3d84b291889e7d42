//! Abuse limits over real sockets (SPEC §10): token guessing at SMTP RCPT is
//! slowed down, then cut and the address blocked; the per-address SMTP
//! connection rate; bad API tokens and unknown portal links answered 429
//! with Retry-After (exactly at the limit, however many arrive at once),
//! and service again once the window has passed; loopback
//! exempt by default; every limit and counter visible in `/metrics` (on the
//! metrics listener, never on the public one); connections per address on
//! HTTP and IMAP, stalled connections, IMAP clients that never log in.
//!
//! Every server here uses the same limits (small, so the tests are quick),
//! which keeps the process-wide `config_limit` gauges stable to check.

mod common;

use std::time::Duration;

use backchannel::model::Role;
use common::{TOKEN, TestServer, code, connect, make_user};
use reqwest::StatusCode;
use serde_json::{Value, json};

const SMTP_LIMITS: &str = "rcpt_failures_before_tarpit = 1\ntarpit_delay = \"50ms\"\nmax_rcpt_failures = 4\nrcpt_failure_window = \"1h\"\nblock_time = \"2s\"\nconnections_per_minute_per_ip = 5\n";
const REST: &str = "[limits]\nexempt = []\nlogin_failures = 3\nlogin_window = \"2s\"\n";
const REST_DEFAULT_EXEMPT: &str = "[limits]\nlogin_failures = 3\nlogin_window = \"2s\"\n";

/// The metrics listener's text (`http.metrics_listen`, on port 0 here).
async fn metrics_text(s: &TestServer) -> String {
    s.metrics_text().await
}

/// The value of one series (`name{labels}` exactly as rendered); 0 when absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

async fn session(s: &TestServer) -> common::Client<tokio::net::TcpStream> {
    let mut c = connect(s.smtp).await;
    let greeting = c.reply().await;
    assert_eq!(code(&greeting), "220", "{greeting}");
    assert_eq!(code(&c.cmd("EHLO guesser.example").await), "250");
    assert_eq!(code(&c.cmd("MAIL FROM:<x@guesser.example>").await), "250");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_guessing_is_slowed_then_cut_and_the_address_blocked() {
    let mut s = TestServer::start_with(SMTP_LIMITS, REST).await;
    s.add_side_conversation(TOKEN).await;
    let before = metrics_text(&s).await;

    let mut c = session(&s).await;
    let ok = c
        .cmd(&format!("RCPT TO:<reply+{TOKEN}@gw.example.com>"))
        .await;
    assert_eq!(code(&ok), "250", "a real token: {ok}");
    // Four guesses: the first answered at once, the next two after 50 ms
    // and 100 ms (the tarpit), the fourth reaches the limit.
    for (n, guess) in [
        "reply+aaaaaaaaaaaaaaaa",
        "reply+bbbbbbbbbbbbbbbb",
        "nobody",
        "reply+cccccccccccccccc",
    ]
    .iter()
    .enumerate()
    {
        let r = c.cmd(&format!("RCPT TO:<{guess}@gw.example.com>")).await;
        assert!(r.starts_with("550 5.1.1"), "guess {n}: {r}");
    }
    let cut = c.reply().await;
    assert!(cut.starts_with("421 4.7.0"), "the session is cut: {cut}");
    assert_eq!(c.reply().await, "", "and closed");

    // The address is blocked: a new connection is refused at the greeting,
    // even one that would only use a real token.
    let mut again = connect(s.smtp).await;
    let greeting = again.reply().await;
    assert!(greeting.starts_with("421 4.7.0"), "{greeting}");
    assert_eq!(again.reply().await, "");

    let after = metrics_text(&s).await;
    let delta = |series: &str| metric(&after, series) - metric(&before, series);
    // At least the two delays of this session, 50 ms then 100 ms (other
    // tests of this binary may tarpit at the same time).
    assert!(delta("smtp_tarpit_seconds_count") >= 2.0, "{after}");
    assert!(
        delta("smtp_tarpit_seconds_sum") >= 0.15 - 1e-9,
        "growing delays: {}",
        delta("smtp_tarpit_seconds_sum")
    );
    assert!(delta("limit_blocks_total{limiter=\"smtp_rcpt\"}") >= 1.0);
    assert!(delta("smtp_sessions_cut_total{reason=\"rcpt_failures\"}") >= 1.0);
    assert!(delta("smtp_connections_refused_total{reason=\"blocked\"}") >= 1.0);
    assert!(delta("limit_failures_total{limiter=\"smtp_rcpt\"}") >= 4.0);
    assert!(metric(&after, "limit_blocked_ips{limiter=\"smtp_rcpt\"}") >= 1.0);
    for (key, value) in [
        ("smtp.max_rcpt_failures", 4.0),
        ("smtp.rcpt_failures_before_tarpit", 1.0),
        ("smtp.tarpit_delay", 0.05),
        ("smtp.block_time", 2.0),
        ("smtp.rcpt_failure_window", 3600.0),
        ("smtp.connections_per_minute_per_ip", 5.0),
        ("limits.login_failures", 3.0),
        ("limits.login_window", 2.0),
    ] {
        let series = format!("config_limit{{key=\"{key}\"}}");
        assert_eq!(metric(&after, &series), value, "{series}");
    }

    // Once the block is over the address is served again.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut c = session(&s).await;
    let ok = c
        .cmd(&format!("RCPT TO:<reply+{TOKEN}@gw.example.com>"))
        .await;
    assert_eq!(code(&ok), "250", "{ok}");
    c.cmd("QUIT").await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_probes_count_like_unknown_tokens() {
    let mut s = TestServer::start_with(SMTP_LIMITS, REST).await;
    let mut c = session(&s).await;
    for n in 0..3 {
        let r = c
            .cmd(&format!("RCPT TO:<victim{n}@elsewhere.example>"))
            .await;
        assert!(r.starts_with("550 5.7.1"), "{r}");
    }
    let r = c
        .cmd("RCPT TO:<user%elsewhere.example@gw.example.com>")
        .await;
    assert!(r.starts_with("550"), "{r}");
    assert!(c.reply().await.starts_with("421 4.7.0"));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_minute_are_limited_per_address() {
    let mut s = TestServer::start_with(SMTP_LIMITS, REST).await;
    let before = metrics_text(&s).await;
    for n in 0..5 {
        let mut c = connect(s.smtp).await;
        let greeting = c.reply().await;
        assert_eq!(code(&greeting), "220", "connection {n}: {greeting}");
        assert_eq!(code(&c.cmd("QUIT").await), "221");
    }
    let mut c = connect(s.smtp).await;
    let refused = c.reply().await;
    assert!(
        refused.starts_with("421 4.7.0") && refused.contains("per minute"),
        "{refused}"
    );
    assert_eq!(c.reply().await, "");
    let after = metrics_text(&s).await;
    let delta = |series: &str| metric(&after, series) - metric(&before, series);
    assert!(delta("smtp_connections_refused_total{reason=\"rate\"}") >= 1.0);
    assert!(delta("limit_refusals_total{limiter=\"smtp_connections\"}") >= 1.0);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_is_exempt_by_default() {
    let mut s = TestServer::start_with(SMTP_LIMITS, REST_DEFAULT_EXEMPT).await;
    for _ in 0..7 {
        let mut c = connect(s.smtp).await;
        assert_eq!(code(&c.reply().await), "220");
        c.cmd("QUIT").await;
    }
    let mut c = session(&s).await;
    for n in 0..8 {
        let r = c
            .cmd(&format!("RCPT TO:<reply+guess{n:010}@gw.example.com>"))
            .await;
        assert!(r.starts_with("550"), "{r}");
    }
    assert_eq!(code(&c.cmd("NOOP").await), "250", "never cut");
    let (st, _) = common::api_call(&s, "GET", "/api/me", "wrong", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    for _ in 0..5 {
        let (st, _) = common::api_call(&s, "GET", "/api/me", "wrong", None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "never 429 from loopback");
    }
    s.shutdown().await;
}

async fn get_me(s: &TestServer, token: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(format!("http://{}/api/me", s.http));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("GET /api/me")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_api_tokens_get_429_then_service_resumes() {
    let mut s = TestServer::start_with(SMTP_LIMITS, REST).await;
    let owner = make_user(&s, "owner@acme.com", "Owner", Role::Owner).await;
    let before = metrics_text(&s).await;

    // A success forgets earlier failures.
    for _ in 0..2 {
        assert_eq!(get_me(&s, Some("guess")).await.status(), 401);
    }
    assert_eq!(get_me(&s, Some(&owner)).await.status(), 200);
    for _ in 0..2 {
        assert_eq!(get_me(&s, Some("guess")).await.status(), 401);
    }
    // The third failure in the window blocks the address.
    assert_eq!(get_me(&s, Some("guess")).await.status(), 401);
    let r = get_me(&s, Some(&owner)).await;
    assert_eq!(r.status(), 429, "even a valid token while blocked");
    let retry: u64 = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=2).contains(&retry), "{retry}");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    // No credentials at all is no guess: still a plain 401.
    assert_eq!(get_me(&s, None).await.status(), 401);
    // Unauthenticated routes are not affected.
    let health = reqwest::get(format!("http://{}/healthz", s.http))
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);

    let after = metrics_text(&s).await;
    let delta = |series: &str| metric(&after, series) - metric(&before, series);
    assert!(delta("auth_failures_total{service=\"api\"}") >= 5.0);
    assert!(delta("limit_blocks_total{limiter=\"api_login\"}") >= 1.0);
    assert!(delta("limit_refusals_total{limiter=\"api_login\"}") >= 1.0);
    assert!(metric(&after, "limit_blocked_ips{limiter=\"api_login\"}") >= 1.0);

    tokio::time::sleep(Duration::from_secs(retry) + Duration::from_millis(100)).await;
    let r = get_me(&s, Some(&owner)).await;
    assert_eq!(r.status(), 200, "served again after the window");
    let me: Value = r.json().await.expect("json");
    assert_eq!(me["email"], "owner@acme.com");
    s.shutdown().await;
}

/// Bad tokens sent at once from one address: all pass the block check
/// before any is counted, yet exactly `limits.login_failures` are answered
/// 401 and every other one 429 (the same limiter code as SMTP RCPT).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_bad_api_tokens_get_exactly_login_failures_401s() {
    let mut s = TestServer::start_with(SMTP_LIMITS, REST).await;
    let http = reqwest::Client::new();
    let requests: Vec<_> = (0..12)
        .map(|n| {
            let req = http
                .get(format!("http://{}/api/me", s.http))
                .bearer_auth(format!("guess-{n}"));
            tokio::spawn(async move { req.send().await.expect("GET /api/me").status() })
        })
        .collect();
    let mut statuses = Vec::new();
    for r in requests {
        statuses.push(r.await.expect("request task").as_u16());
    }
    statuses.sort_unstable();
    let mut want = vec![401; 3];
    want.extend([429; 9]);
    assert_eq!(statuses, want);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_portal_links_get_429_then_service_resumes() {
    let mut s = TestServer::start_with(SMTP_LIMITS, REST).await;
    let agent = make_user(&s, "mia@acme.com", "Mia", Role::Member).await;
    let (st, v) = common::api_call(
        &s,
        "POST",
        "/api/parents/T-9/side-conversations",
        &agent,
        Some(
            json!({"to": ["vic@carrier.example"], "subject": "Pallet", "body_text": "Where?",
                    "share_portal_link": true}),
        ),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let url = v["portal_url"].as_str().expect("portal_url").to_string();
    let path = url
        .find("/p/")
        .map(|i| url[i..].to_string())
        .expect("a /p/ link");
    let base = format!("http://{}", s.http);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let get = |p: String| {
        let (http, base) = (http.clone(), base.clone());
        async move { http.get(format!("{base}{p}")).send().await.expect("GET") }
    };
    assert_eq!(get(path.clone()).await.status(), 200, "the real link works");
    let before = metrics_text(&s).await;

    let guesses = [
        "/p/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_string(),
        "/p/not-a-token".to_string(),
        "/p/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb/attachments/1/0".to_string(),
    ];
    for g in &guesses {
        assert_eq!(get(g.clone()).await.status(), 404, "{g}");
    }
    let r = get(path.clone()).await;
    assert_eq!(r.status(), 429, "even the real link while blocked");
    let retry: u64 = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(
        r.headers()
            .get("content-security-policy")
            .is_some_and(|v| v.to_str().is_ok_and(|v| v.contains("default-src 'none'"))),
        "the 429 page is hardened like every portal page"
    );
    let page = r.text().await.expect("page");
    assert!(page.contains("Too many requests"), "{page}");
    let post = http
        .post(format!("{base}/p/cccccccccccccccccccccccccccccccc/reply"))
        .multipart(reqwest::multipart::Form::new().text("text", "hi"))
        .send()
        .await
        .expect("POST");
    assert_eq!(post.status(), 429, "posts are refused too");

    let after = metrics_text(&s).await;
    let delta = |series: &str| metric(&after, series) - metric(&before, series);
    assert!(delta("auth_failures_total{service=\"portal\"}") >= 3.0);
    assert!(delta("limit_blocks_total{limiter=\"portal\"}") >= 1.0);
    assert!(delta("limit_refusals_total{limiter=\"portal\"}") >= 2.0);

    tokio::time::sleep(Duration::from_secs(retry) + Duration::from_millis(100)).await;
    assert_eq!(
        get(path).await.status(),
        200,
        "served again after the window"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_imap_logins_are_refused_then_service_resumes() {
    use tokio::io::AsyncBufReadExt;
    // Each failed LOGIN is answered after a pause, so the window is longer
    // than the three failures take.
    let rest = REST.replace("login_window = \"2s\"", "login_window = \"6s\"");
    let mut s = TestServer::start_with(SMTP_LIMITS, &rest).await;
    let owner = make_user(&s, "owner@acme.com", "Owner", Role::Owner).await;
    let before = metrics_text(&s).await;
    let stream = tokio::net::TcpStream::connect(s.imap)
        .await
        .expect("connect");
    let mut io = tokio::io::BufReader::new(stream);
    let mut greeting = String::new();
    io.read_line(&mut greeting).await.expect("greeting");
    assert!(greeting.starts_with("* OK"), "{greeting}");

    for i in 0..3 {
        let a = common::imap_cmd(&mut io, &format!("a{i}"), "LOGIN owner@acme.com guess")
            .await
            .join("\n");
        assert!(a.contains("NO [AUTHENTICATIONFAILED]"), "{a}");
    }
    // Blocked: even the right token is refused, without being looked at.
    let a = common::imap_cmd(&mut io, "b1", &format!("LOGIN owner@acme.com {owner}"))
        .await
        .join("\n");
    assert!(
        a.contains("b1 NO [UNAVAILABLE]"),
        "{a}\n{}",
        metrics_text(&s).await
    );
    let after = metrics_text(&s).await;
    let delta = |series: &str| metric(&after, series) - metric(&before, series);
    assert!(
        delta("limit_blocks_total{limiter=\"imap_login\"}") >= 1.0,
        "{after}"
    );

    let retry: u64 = a
        .split("try again in ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("retry time in the answer");
    assert!((1..=6).contains(&retry), "{a}");
    tokio::time::sleep(Duration::from_secs(retry) + Duration::from_millis(200)).await;
    let a = common::imap_cmd(&mut io, "c1", &format!("LOGIN owner@acme.com {owner}"))
        .await
        .join("\n");
    assert!(a.contains("c1 OK"), "served again after the window: {a}");
    s.shutdown().await;
}

// ---------------------------------------------------------------------------
// Connections per address (issue #20, item 5): one address holding many
// idle connections must not starve the others.

/// The per-address cap of the tests below; the server-wide cap is twice
/// it, so without the per-address cap one address would take every slot.
const PER_IP: usize = 4;

/// A TCP connection from `source` to `to`: another loopback address is
/// another client (Linux routes all of 127.0.0.0/8 to the loopback).
async fn connect_from(source: &str, to: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{source}:0").parse().expect("source address"))
        .expect("bind the source address");
    tokio::time::timeout(Duration::from_secs(30), socket.connect(to))
        .await
        .expect("connected in time")
        .expect("connect")
}

/// One line from the server; "" at the end of the stream or on a reset.
async fn line(r: &mut tokio::io::BufReader<tokio::net::TcpStream>) -> String {
    use tokio::io::AsyncBufReadExt;
    let mut line = String::new();
    let read = tokio::time::timeout(Duration::from_secs(30), r.read_line(&mut line))
        .await
        .expect("an answer in time (a connection left waiting in the backlog?)");
    match read {
        Ok(_) => line,
        Err(_) => String::new(),
    }
}

/// `GET path` on a kept-alive connection: the status and the body.
async fn get(c: &mut tokio::io::BufReader<tokio::net::TcpStream>, path: &str) -> (u16, String) {
    get_with(c, path, "").await
}

/// `GET path` with `headers` (each ending in CRLF) added.
async fn get_with(
    c: &mut tokio::io::BufReader<tokio::net::TcpStream>,
    path: &str,
    headers: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!("GET {path} HTTP/1.1\r\nHost: gw.example.com\r\n{headers}\r\n");
    // A connection refused at once may be closed already: its answer is
    // still there to read.
    let _ = c.get_mut().write_all(request.as_bytes()).await;
    let status_line = line(c).await;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {status_line:?}"));
    let mut length = 0;
    loop {
        let header = line(c).await;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().expect("content-length");
        }
    }
    let mut body = vec![0u8; length];
    tokio::time::timeout(Duration::from_secs(30), c.read_exact(&mut body))
        .await
        .expect("body in time")
        .expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Waits (bounded) until a fresh connection from `source` is served
/// `/healthz` again; returns that connection, kept alive.
async fn http_served_again(
    s: &TestServer,
    source: &str,
) -> tokio::io::BufReader<tokio::net::TcpStream> {
    for _ in 0..500 {
        let mut c = tokio::io::BufReader::new(connect_from(source, s.http).await);
        if get(&mut c, "/healthz").await.0 == 200 {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{source} is not served again after closing its connections");
}

/// The probe of issue #20: from one address, three times the per-address
/// cap of kept-alive HTTP connections. The first `PER_IP` are served and
/// stay open; each further one is answered `429 too_many_connections` and
/// closed — it takes no slot, so the server-wide cap (twice `PER_IP`) is
/// never reached — and another address still gets `/healthz`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_http_connection() {
    let http = format!(
        "max_connections = {}\nmax_connections_per_ip = {PER_IP}\n",
        2 * PER_IP
    );
    let mut s = TestServer::start_with_all(SMTP_LIMITS, &http, "", REST).await;
    let mut held = Vec::new();
    for n in 0..3 * PER_IP {
        let mut c = tokio::io::BufReader::new(connect_from("127.0.0.1", s.http).await);
        let (status, body) = get(&mut c, "/healthz").await;
        if n < PER_IP {
            assert_eq!(status, 200, "connection {n}: {body}");
            held.push(c);
        } else {
            assert_eq!(status, 429, "connection {n}: {body}");
            let v: Value = serde_json::from_str(&body).expect("a JSON error");
            assert_eq!(v["error"]["code"], "too_many_connections", "{v}");
            assert_eq!(line(&mut c).await, "", "closed after the answer");
        }
    }
    // Another address is served, while the first still holds its
    // connections, which keep working.
    let mut other = tokio::io::BufReader::new(connect_from("127.0.0.2", s.http).await);
    assert_eq!(get(&mut other, "/healthz").await.0, 200, "another address");
    for c in &mut held {
        assert_eq!(get(c, "/healthz").await.0, 200, "a held connection");
    }
    // The metrics listener is apart: 127.0.0.1 over its cap reads it too.
    let text = metrics_text(&s).await;
    assert!(metric(&text, "http_connections_refused_total{reason=\"per_ip\"}") >= 8.0);
    assert!(metric(&text, "limit_refusals_total{limiter=\"http_connections\"}") >= 8.0);
    // Closing them gives the slots back.
    drop(held);
    http_served_again(&s, "127.0.0.1").await;
    s.shutdown().await;
}

/// The same probe on IMAP: idle pre-auth sessions beyond the per-address
/// cap are told `* BYE [UNAVAILABLE]` and closed, and another address
/// still gets its `* OK` greeting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_imap_connection() {
    let imap = format!(
        "max_connections = {}\nmax_connections_per_ip = {PER_IP}\n",
        2 * PER_IP
    );
    let mut s = TestServer::start_with_all(SMTP_LIMITS, "", &imap, REST).await;
    let mut held = Vec::new();
    for n in 0..3 * PER_IP {
        let mut c = tokio::io::BufReader::new(connect_from("127.0.0.1", s.imap).await);
        let greeting = line(&mut c).await;
        if n < PER_IP {
            assert!(greeting.starts_with("* OK"), "connection {n}: {greeting}");
            held.push(c);
        } else {
            assert!(
                greeting.starts_with("* BYE [UNAVAILABLE]")
                    && greeting
                        .to_ascii_lowercase()
                        .contains("too many connections from your address"),
                "connection {n}: {greeting}"
            );
            assert_eq!(line(&mut c).await, "", "closed after the BYE");
        }
    }
    let mut other = tokio::io::BufReader::new(connect_from("127.0.0.2", s.imap).await);
    let greeting = line(&mut other).await;
    assert!(greeting.starts_with("* OK"), "another address: {greeting}");
    let text = metrics_text(&s).await;
    assert!(metric(&text, "imap_connections_refused_total{reason=\"per_ip\"}") >= 8.0);
    // Closing the held sessions gives their slots back.
    drop(held);
    for attempt in 0.. {
        let mut c = tokio::io::BufReader::new(connect_from("127.0.0.1", s.imap).await);
        if line(&mut c).await.starts_with("* OK") {
            break;
        }
        assert!(attempt < 500, "127.0.0.1 is not served again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.shutdown().await;
}

/// A connection that holds an HTTP slot without finishing a request head,
/// or idles between requests, is closed after `http.idle_timeout` and its
/// slot given back (here the only one of its address).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_http_connections_are_closed_and_give_their_slot_back() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let http = "max_connections_per_ip = 1\nidle_timeout = \"1s\"\n";
    let mut s = TestServer::start_with_all(SMTP_LIMITS, http, "", REST).await;

    // A head that never ends.
    let mut c = connect_from("127.0.0.1", s.http).await;
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw.example.com\r\n")
        .await
        .expect("write");
    let mut said = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), c.read_to_end(&mut said))
        .await
        .expect("closed in time")
        .ok();
    let said = String::from_utf8_lossy(&said);
    assert!(
        !said.contains(" 200 "),
        "an unfinished head was served: {said}"
    );
    drop(c);

    // A kept-alive connection that goes silent after its answer: after
    // `/healthz`, and after a request whose handler waits for the store
    // (the server reads ahead on the connection meanwhile).
    let mut c = http_served_again(&s, "127.0.0.1").await;
    assert_eq!(line(&mut c).await, "", "the idle connection is closed");
    drop(c);
    let mut c = http_served_again(&s, "127.0.0.1").await;
    let (status, body) = get_with(&mut c, "/api/me", "Authorization: Bearer guess\r\n").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(line(&mut c).await, "", "the idle connection is closed");
    drop(c);
    http_served_again(&s, "127.0.0.1").await;
    s.shutdown().await;
}

/// `imap.preauth_max_time` bounds the whole unauthenticated phase: a
/// client that sends NOOPs (each well within `imap.preauth_timeout`) but
/// never logs in is told `* BYE` and closed; a session that logged in,
/// opened earlier, is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_clients_that_never_log_in_are_logged_out() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let imap = "preauth_max_time = \"1s\"\npreauth_timeout = \"60s\"\n";
    let mut s = TestServer::start_with_all(SMTP_LIMITS, "", imap, REST).await;
    let owner = make_user(&s, "owner@acme.com", "Owner", Role::Owner).await;
    let stream = tokio::net::TcpStream::connect(s.imap)
        .await
        .expect("connect");
    let mut io = tokio::io::BufReader::new(stream);
    let mut greeting = String::new();
    io.read_line(&mut greeting).await.expect("greeting");
    let a = common::imap_cmd(&mut io, "a1", &format!("LOGIN owner@acme.com {owner}"))
        .await
        .join("\n");
    assert!(a.contains("a1 OK"), "{a}");

    let mut c = tokio::io::BufReader::new(connect_from("127.0.0.1", s.imap).await);
    assert!(line(&mut c).await.starts_with("* OK"));
    let mut answered = 0;
    let bye = loop {
        let _ = c
            .get_mut()
            .write_all(format!("n{answered} NOOP\r\n").as_bytes())
            .await;
        let l = line(&mut c).await;
        if !l.starts_with(&format!("n{answered} OK")) {
            break l;
        }
        answered += 1;
        assert!(answered < 600, "never logged out");
        // The client's pace: a NOOP every 50 ms, each well within
        // imap.preauth_timeout.
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        bye.starts_with("* BYE") && bye.contains("not logged in"),
        "{bye}"
    );
    assert!(answered >= 1, "the session was served before: {bye}");
    assert_eq!(line(&mut c).await, "", "and closed");
    let a = common::imap_cmd(&mut io, "a2", "NOOP").await.join("\n");
    assert!(a.contains("a2 OK"), "the logged-in session goes on: {a}");
    s.shutdown().await;
}
