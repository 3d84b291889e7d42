//! The side-conversation report (SPEC §15) over the HTTP API, on a fixture
//! of known timings seeded in the store: every figure is exact (opened,
//! closed, nearest-rank percentiles of the seconds to the first vendor
//! reply and to closing, open now by age, bounce and unverified rates), by
//! each grouping, as JSON and as CSV; bad queries are 400s.

mod common;

use backchannel::model::{Role, now_ms, rfc3339};
use common::{TestServer, api_call as call, make_user as user};
use reqwest::StatusCode;
use serde_json::{Value, json};

const S: i64 = 1000;
const H: i64 = 3600 * S;
const D: i64 = 24 * H;

/// One side conversation of the fixture.
struct Sc {
    created: i64,
    closed: Option<i64>,
    to: &'static str,
    agent: &'static str,
    tags: &'static [&'static str],
    /// Vendor messages: (offset from the start, kind, unverified).
    inbound: &'static [(i64, &'static str, bool)],
    /// States of the first message's recipients.
    outbox: &'static [&'static str],
}

async fn seed(s: &TestServer, list: Vec<Sc>) {
    s.sql
        .write(move |c| {
            for (n, sc) in list.iter().enumerate() {
                c.execute(
                    "INSERT INTO parents (external_id, subject, created_at, updated_at)
                     VALUES (?1, 'p', 0, 0)",
                    [format!("R-{n}")],
                )?;
                let parent = c.last_insert_rowid();
                let agent: i64 =
                    c.query_row("SELECT id FROM users WHERE email = ?1", [sc.agent], |r| {
                        r.get(0)
                    })?;
                c.execute(
                    "INSERT INTO side_conversations (parent_id, token, status, subject, sender_email,
                         started_by, created_at, updated_at, closed_at)
                     VALUES (?1, ?2, ?3, 's', 'support@acme.com', ?4, ?5, ?5, ?6)",
                    rusqlite::params![
                        parent,
                        format!("tok{n:013}"),
                        if sc.closed.is_some() { "closed" } else { "open" },
                        agent,
                        sc.created,
                        sc.closed
                    ],
                )?;
                let id = c.last_insert_rowid();
                c.execute(
                    "INSERT INTO participants (side_conversation_id, email, role, added_at)
                     VALUES (?1, ?2, 'to', ?3)",
                    rusqlite::params![id, sc.to, sc.created],
                )?;
                for t in sc.tags {
                    c.execute(
                        "INSERT INTO side_conversation_tags (side_conversation_id, tag) VALUES (?1, ?2)",
                        rusqlite::params![id, t],
                    )?;
                }
                c.execute(
                    "INSERT INTO messages (side_conversation_id, direction, kind, route, raw, raw_sha256,
                         author_id, received_at)
                     VALUES (?1, 'out', 'agent', 'api', x'00', x'00', ?2, ?3)",
                    rusqlite::params![id, agent, sc.created],
                )?;
                let first = c.last_insert_rowid();
                for (i, state) in sc.outbox.iter().enumerate() {
                    c.execute(
                        "INSERT INTO outbox (message_id, recipient, verp_key, state, next_attempt_at, created_at)
                         VALUES (?1, ?2, ?3, ?4, 0, 0)",
                        rusqlite::params![first, format!("r{i}@x.example"), format!("v{n}-{i}"), state],
                    )?;
                }
                for (offset, kind, unverified) in sc.inbound {
                    c.execute(
                        "INSERT INTO messages (side_conversation_id, direction, kind, route, raw, raw_sha256,
                             from_email, received_at)
                         VALUES (?1, 'in', ?2, 'token', x'00', x'00', ?3, ?4)",
                        rusqlite::params![id, kind, sc.to, sc.created + offset],
                    )?;
                    if *unverified {
                        c.execute(
                            "INSERT INTO unverified_messages (message_id) VALUES (?1)",
                            [c.last_insert_rowid()],
                        )?;
                    }
                }
            }
            Ok(())
        })
        .await
        .expect("seed");
}

fn enc(t: i64) -> String {
    rfc3339(t).replace('+', "%2B")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_figures_on_known_timings_are_exact() {
    let mut s = TestServer::start_with("", "").await;
    let mo = user(&s, "mo@acme.com", "Mo", Role::Member).await;
    let viewer = user(&s, "vi@acme.com", "Vi", Role::Viewer).await;
    user(&s, "ada@acme.com", "Ada", Role::Admin).await;
    let n = now_ms();
    let carrier = "vera@carrier.example";
    let supplier = "sam@supplier.example";
    seed(
        &s,
        vec![
            // Opened in the range, answered after 600 s, closed after 1 h.
            Sc {
                created: n - 9 * D,
                closed: Some(n - 9 * D + H),
                to: carrier,
                agent: "mo@acme.com",
                tags: &["billing"],
                inbound: &[(600 * S, "reply", false)],
                outbox: &["sent", "bounced"],
            },
            // An unverified reply after 1200 s, then a verified one; open
            // 5 days.
            Sc {
                created: n - 5 * D,
                closed: None,
                to: carrier,
                agent: "mo@acme.com",
                tags: &["Billing", "urgent"],
                inbound: &[(1200 * S, "reply", true), (5000 * S, "reply", false)],
                outbox: &["sent"],
            },
            // Answered after 3000 s (an auto-reply before does not count),
            // closed after 2 h.
            Sc {
                created: n - 2 * D,
                closed: Some(n - 2 * D + 2 * H),
                to: carrier,
                agent: "mo@acme.com",
                tags: &[],
                inbound: &[(60 * S, "auto_reply", false), (3000 * S, "reply", false)],
                outbox: &["sent"],
            },
            // Open 2 hours, only an auto-reply.
            Sc {
                created: n - 2 * H,
                closed: None,
                to: carrier,
                agent: "mo@acme.com",
                tags: &[],
                inbound: &[(60 * S, "auto_reply", false)],
                outbox: &["queued"],
            },
            // Opened before the range, closed in it after 19 days.
            Sc {
                created: n - 20 * D,
                closed: Some(n - D),
                to: supplier,
                agent: "ada@acme.com",
                tags: &[],
                inbound: &[],
                outbox: &["sent"],
            },
            // Opened before the range, still open (over 7 days).
            Sc {
                created: n - 12 * D,
                closed: None,
                to: supplier,
                agent: "ada@acme.com",
                tags: &[],
                inbound: &[],
                outbox: &["sent"],
            },
        ],
    )
    .await;
    let (from, to) = (n - 10 * D, n + H);
    let path = |g: &str| {
        format!(
            "/api/reports/side-conversations?from={}&to={}&group_by={g}",
            enc(from),
            enc(to)
        )
    };
    let (st, v) = call(&s, "GET", &path("vendor_domain"), &viewer, None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["group_by"], "vendor_domain");
    assert_eq!(
        v["rows"],
        json!([
            {"key": "carrier.example", "opened": 4, "closed": 2,
             "first_reply_p50_s": 1200, "first_reply_p90_s": 3000, "close_p50_s": 3600,
             "open_now": 2, "open_by_age": {"<1d": 1, "1-3d": 0, "3-7d": 1, ">7d": 0},
             "bounce_rate": 0.2, "unverified_rate": 0.25},
            {"key": "supplier.example", "opened": 0, "closed": 1,
             "first_reply_p50_s": null, "first_reply_p90_s": null, "close_p50_s": 19 * 86_400,
             "open_now": 1, "open_by_age": {"<1d": 0, "1-3d": 0, "3-7d": 0, ">7d": 1},
             "bounce_rate": null, "unverified_rate": null},
        ])
    );

    // By tag: each of its tags (without case), the untagged together.
    let (_, v) = call(&s, "GET", &path("tag"), &mo, None).await;
    let brief: Vec<Value> = v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            json!([
                r["key"],
                r["opened"],
                r["closed"],
                r["first_reply_p50_s"],
                r["open_now"]
            ])
        })
        .collect();
    assert_eq!(
        brief,
        vec![
            json!([null, 2, 2, 3000, 2]),
            json!(["billing", 2, 1, 600, 1]),
            json!(["urgent", 1, 0, 1200, 1]),
        ]
    );
    let (_, v) = call(&s, "GET", &path("agent"), &mo, None).await;
    let keys: Vec<_> = v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| (r["key"].clone(), r["opened"].clone()))
        .collect();
    assert_eq!(
        keys,
        vec![
            (json!("mo@acme.com"), json!(4)),
            (json!("ada@acme.com"), json!(0))
        ]
    );
    let (_, v) = call(&s, "GET", &path("sender"), &mo, None).await;
    assert_eq!(v["rows"][0]["key"], "support@acme.com");
    assert_eq!(v["rows"][0]["opened"], 4);

    // A narrower range: only the last 3 days.
    let (_, v) = call(
        &s,
        "GET",
        &format!(
            "/api/reports/side-conversations?from={}&to={}",
            enc(n - 3 * D),
            enc(to)
        ),
        &mo,
        None,
    )
    .await;
    assert_eq!(v["rows"][0]["key"], "carrier.example");
    assert_eq!(
        (&v["rows"][0]["opened"], &v["rows"][0]["closed"]),
        (&json!(2), &json!(1))
    );
    assert_eq!(v["rows"][0]["first_reply_p50_s"], 3000);

    // CSV.
    let resp = reqwest::Client::new()
        .get(format!("http://{}{}", s.http, path("vendor_domain")))
        .bearer_auth(&mo)
        .header("accept", "text/csv")
        .send()
        .await
        .expect("csv");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/csv")
    );
    let text = resp.text().await.expect("text");
    assert_eq!(
        text,
        "key,opened,closed,first_reply_p50_s,first_reply_p90_s,close_p50_s,open_now,open_lt_1d,open_1_3d,open_3_7d,open_gt_7d,bounce_rate,unverified_rate\r\n\
         carrier.example,4,2,1200,3000,3600,2,1,0,1,0,0.2,0.25\r\n\
         supplier.example,0,1,,,1641600,1,0,0,0,1,,\r\n"
    );

    // Bad queries.
    for bad in [
        "group_by=colour".to_string(),
        "from=yesterday".to_string(),
        format!("from={}&to={}", enc(n), enc(n - D)),
        format!("from={}&to={}", enc(n - 400 * D), enc(n)),
        "grup_by=tag".to_string(),
    ] {
        let (st, v) = call(
            &s,
            "GET",
            &format!("/api/reports/side-conversations?{bad}"),
            &mo,
            None,
        )
        .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert!(v["error"]["message"].is_string(), "{v}");
    }
    let (st, _) = call(&s, "GET", "/api/reports/side-conversations", "nope", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    // The console's page: the same figures in a table and a chart, and
    // the same CSV.
    let browser = common::console::sign_in(&s, "vi@acme.com").await;
    let query = format!("from={}&to={}&group_by=vendor_domain", enc(from), enc(to));
    let (st, page) = browser.get(&format!("/app/reports?{query}")).await;
    assert_eq!(st, StatusCode::OK, "{page}");
    let table = &page[page.find("<table id=\"report\"").expect("the table")..];
    let carrier_row = table
        .split("<tr>")
        .find(|r| r.contains("carrier.example"))
        .expect("carrier row");
    let cells: Vec<&str> = carrier_row
        .split("<td>")
        .skip(1)
        .map(|c| c.split('<').next().unwrap_or(""))
        .collect();
    assert_eq!(
        cells,
        vec![
            "4", "2", "20 min", "50 min", "1.0 h", "2", "1", "0", "1", "0", "20.0%", "25.0%"
        ]
    );
    assert!(
        page.contains("<meter min=\"0\" max=\"4\" value=\"4\""),
        "{page}"
    );
    assert!(!page.contains("style="), "no inline styles under the CSP");
    let (_, page) = browser.get("/app/reports?group_by=tag").await;
    assert!(
        page.contains("billing") && page.contains("(none)"),
        "{page}"
    );
    let (st, _) = browser.get("/app/reports?group_by=colour").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = browser.get("/app/reports?from=2026-13-45").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, csv) = browser.get(&format!("/app/reports.csv?{query}")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(csv, text);
    s.shutdown().await;
}
