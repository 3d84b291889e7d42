//! People can be offboarded (issue #22, SPEC §2 and §7): roles change,
//! users are deactivated and activated, tokens rotate — through the API and
//! through the command line while the gateway runs — and the change holds
//! at once on every listener: the HTTP API (401), open IMAP sessions (also
//! in IDLE) and JMAP push streams. The last active owner stays; every
//! change is in the audit log, newest first.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use backchannel::model::Role;
use common::{TestServer, api_call, imap_cmd, make_user};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_backchannel");

/// A config file for the command line naming the running server's data
/// directory.
fn cli_config(s: &TestServer) -> PathBuf {
    let path = s.dir.path().join("cli.toml");
    let data = s.dir.path().join("data");
    // On PostgreSQL the command line reaches the gateway's database.
    let store = common::postgres_database(&data)
        .map(|url| format!("[store]\nurl = \"{url}\"\n"))
        .unwrap_or_default();
    std::fs::write(
        &path,
        format!(
            "domain = \"gw.example.com\"\ndata_dir = \"{}\"\n{store}",
            data.display()
        ),
    )
    .expect("write config");
    path
}

/// Runs the binary (`user …`) on another thread, as another process.
async fn cli(config: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("BACKCHANNEL_") {
            c.env_remove(k);
        }
    }
    c.arg("--config").arg(config).args(args);
    tokio::task::spawn_blocking(move || c.output().expect("run the binary"))
        .await
        .expect("join")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn status_with(s: &TestServer, token: &str) -> StatusCode {
    api_call(s, "GET", "/api/me", token, None).await.0
}

/// A raw IMAP connection logged in as `email`.
async fn imap_login(s: &TestServer, email: &str, token: &str) -> BufReader<TcpStream> {
    let tcp = TcpStream::connect(s.imap).await.expect("connect imap");
    let mut io = BufReader::new(tcp);
    let mut greeting = String::new();
    io.read_line(&mut greeting).await.expect("greeting");
    assert!(greeting.starts_with("* OK"), "{greeting}");
    let r = imap_cmd(&mut io, "a1", &format!("LOGIN \"{email}\" \"{token}\"")).await;
    assert!(r.last().is_some_and(|l| l.starts_with("a1 OK")), "{r:?}");
    io
}

/// Reads lines until the server closes the connection; returns them.
async fn read_to_close(io: &mut BufReader<TcpStream>) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(common::WAIT_DEADLINE, io.read_line(&mut line))
            .await
            .expect("the server closes the connection in time")
            .unwrap_or(0);
        if n == 0 {
            return lines;
        }
        lines.push(line.trim_end().to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_changes_role_name_and_active_with_the_last_owner_guard() {
    let s = TestServer::start("").await;
    let owner = make_user(&s, "olga@acme.com", "Olga", Role::Owner).await;
    let viewer = make_user(&s, "vic@acme.com", "Vic", Role::Viewer).await;
    let (st, created) = api_call(
        &s,
        "POST",
        "/api/users",
        &owner,
        Some(json!({"email": "mo@acme.com", "name": "Mo", "role": "member"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{created}");
    assert_eq!(created["active"], true);
    let mo = created["id"].as_i64().expect("id");
    let mo_token = created["token"].as_str().expect("token").to_string();
    let path = format!("/api/users/{mo}");

    // Members and viewers change no one.
    for token in [&viewer, &mo_token] {
        let (st, body) = api_call(&s, "PATCH", &path, token, Some(json!({"name": "X"}))).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["error"]["code"], "forbidden");
        let (st, _) = api_call(&s, "POST", &format!("{path}/token"), token, None).await;
        assert_eq!(st, StatusCode::FORBIDDEN);
    }
    // Malformed values: the documented error shape, nothing changed.
    for (body, want) in [
        (json!({"role": "king"}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"name": "  "}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"active": "no"}), StatusCode::BAD_REQUEST),
        (json!({"role": 3}), StatusCode::BAD_REQUEST),
        (json!({"colour": "red"}), StatusCode::BAD_REQUEST),
        (json!([{"role": "admin"}]), StatusCode::BAD_REQUEST),
        (
            json!({"role": "admin", "active": false, "name": "\u{7}"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let (st, answer) = api_call(&s, "PATCH", &path, &owner, Some(body.clone())).await;
        assert_eq!(st, want, "{body} → {answer}");
        assert!(answer["error"]["code"].is_string(), "{answer}");
        assert!(answer["error"]["message"].is_string(), "{answer}");
    }
    let (st, _) = api_call(&s, "PATCH", "/api/users/abc", &owner, Some(json!({}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, body) = api_call(&s, "PATCH", "/api/users/9999", &owner, Some(json!({}))).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{body}");
    let (st, _) = api_call(&s, "POST", "/api/users/9999/token", &owner, None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(status_with(&s, &mo_token).await, StatusCode::OK);
    let (_, me) = api_call(&s, "GET", "/api/me", &mo_token, None).await;
    assert_eq!(
        (me["role"].as_str(), me["name"].as_str()),
        (Some("member"), Some("Mo"))
    );

    // Role and name together.
    let (st, body) = api_call(
        &s,
        "PATCH",
        &path,
        &owner,
        Some(json!({"role": "admin", "name": "Mo Admin"})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["role"], "admin");
    assert_eq!(body["name"], "Mo Admin");
    assert!(body.get("token").is_none());

    // An admin neither makes owners nor changes an owner.
    let (olga_id, _) = {
        let (_, list) = api_call(&s, "GET", "/api/users", &owner, None).await;
        let olga = list["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|u| u["email"] == "olga@acme.com")
            .cloned()
            .expect("olga");
        (olga["id"].as_i64().expect("id"), olga)
    };
    let (st, _) = api_call(
        &s,
        "PATCH",
        &path,
        &mo_token,
        Some(json!({"role": "owner"})),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let olga_path = format!("/api/users/{olga_id}");
    let (st, _) = api_call(
        &s,
        "PATCH",
        &olga_path,
        &mo_token,
        Some(json!({"active": false})),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = api_call(&s, "POST", &format!("{olga_path}/token"), &mo_token, None).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert_eq!(status_with(&s, &owner).await, StatusCode::OK);

    // The last active owner is neither demoted nor deactivated, not even
    // by themself, and nothing of the refused change is kept.
    for body in [
        json!({"role": "admin"}),
        json!({"active": false}),
        json!({"name": "Olga B", "role": "member"}),
    ] {
        let (st, answer) = api_call(&s, "PATCH", &olga_path, &owner, Some(body)).await;
        assert_eq!(st, StatusCode::CONFLICT, "{answer}");
        assert_eq!(answer["error"]["code"], "conflict");
    }
    let (_, me) = api_call(&s, "GET", "/api/me", &owner, None).await;
    assert_eq!(
        (me["role"].as_str(), me["name"].as_str()),
        (Some("owner"), Some("Olga"))
    );

    // Deactivated: the token stops at once; the list says so; activated
    // again, the same token works.
    let (st, body) = api_call(&s, "PATCH", &path, &owner, Some(json!({"active": false}))).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["active"], false);
    assert!(
        body["deactivated_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{body}"
    );
    assert_eq!(status_with(&s, &mo_token).await, StatusCode::UNAUTHORIZED);
    let (_, list) = api_call(&s, "GET", "/api/users", &owner, None).await;
    let listed = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|u| u["id"] == mo)
        .cloned()
        .expect("mo listed");
    assert_eq!(listed["active"], false);
    let (st, body) = api_call(&s, "PATCH", &path, &owner, Some(json!({"active": true}))).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["deactivated_at"], Value::Null);
    assert_eq!(status_with(&s, &mo_token).await, StatusCode::OK);

    // A second owner: now the first may step down.
    let (st, _) = api_call(&s, "PATCH", &path, &owner, Some(json!({"role": "owner"}))).await;
    assert_eq!(st, StatusCode::OK);
    let (st, body) = api_call(
        &s,
        "PATCH",
        &olga_path,
        &owner,
        Some(json!({"role": "admin"})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");

    // Olga, an admin now, may not rotate an owner's token; the owner may
    // rotate their own: the answer holds the new token, the old one is
    // refused.
    let (st, _) = api_call(&s, "POST", &format!("{path}/token"), &owner, None).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, body) = api_call(&s, "POST", &format!("{path}/token"), &mo_token, None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let new = body["token"].as_str().expect("new token").to_string();
    assert_ne!(new, mo_token);
    assert_eq!(status_with(&s, &mo_token).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status_with(&s, &new).await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_lists_who_changed_what_newest_first_in_pages() {
    let s = TestServer::start("").await;
    let owner = make_user(&s, "olga@acme.com", "Olga", Role::Owner).await;
    let member = make_user(&s, "mo@acme.com", "Mo", Role::Member).await;
    let (st, user) = api_call(
        &s,
        "POST",
        "/api/users",
        &owner,
        Some(json!({"email": "ann@acme.com", "name": "Ann", "role": "viewer"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED);
    let ann = user["id"].as_i64().expect("id");
    let path = format!("/api/users/{ann}");
    let (st, _) = api_call(&s, "PATCH", &path, &owner, Some(json!({"role": "member"}))).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = api_call(&s, "POST", &format!("{path}/token"), &owner, None).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = api_call(&s, "PATCH", &path, &owner, Some(json!({"active": false}))).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = api_call(
        &s,
        "PUT",
        "/api/settings",
        &owner,
        Some(json!({"side_conversations_enabled": false})),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, hook) = api_call(
        &s,
        "POST",
        "/api/webhooks",
        &owner,
        Some(
            json!({"url": "https://hooks.example.com/in", "secret": "s3cr3t-value", "events": []}),
        ),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{hook}");
    let hook_id = hook["id"].as_i64().expect("id");
    let (st, _) = api_call(
        &s,
        "DELETE",
        &format!("/api/webhooks/{hook_id}"),
        &owner,
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, sender) = api_call(
        &s,
        "POST",
        "/api/senders",
        &owner,
        Some(json!({"email": "support@acme.com", "name": "Support"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{sender}");
    let (st, _) = api_call(&s, "DELETE", "/api/senders/support@acme.com", &owner, None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    // A refused change leaves no entry.
    let (st, _) = api_call(&s, "PATCH", &path, &member, Some(json!({"role": "admin"}))).await;
    assert_eq!(st, StatusCode::FORBIDDEN);

    // Newest first, three at a time.
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/api/audit?limit=3&cursor={c}"),
            None => "/api/audit?limit=3".to_string(),
        };
        let (st, page) = api_call(&s, "GET", &q, &owner, None).await;
        assert_eq!(st, StatusCode::OK, "{page}");
        let items = page["items"].as_array().expect("items").clone();
        assert!(items.len() <= 3);
        all.extend(items);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let actions: Vec<&str> = all.iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(
        actions,
        [
            "sender.deleted",
            "sender.added",
            "webhook.deleted",
            "webhook.created",
            "settings.updated",
            "user.deactivated",
            "user.token_rotated",
            "user.role_changed",
            "user.created",
        ]
    );
    for e in &all {
        assert_eq!(e["actor"], "olga@acme.com", "{e}");
        assert!(e["actor_id"].is_i64(), "{e}");
        let at = e["at"].as_str().expect("at");
        assert!(at.ends_with('Z') && at.contains('T'), "{at}");
        assert!(!e.to_string().contains("s3cr3t-value"), "{e}");
    }
    let ids: Vec<i64> = all.iter().filter_map(|e| e["id"].as_i64()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    let role = &all[7];
    assert_eq!(role["target"], "ann@acme.com");
    assert_eq!(
        role["detail"],
        json!({"before": "viewer", "after": "member"})
    );
    assert_eq!(
        all[4]["detail"],
        json!({"side_conversations_enabled": {"before": true, "after": false}})
    );
    // Rotated tokens never reach the log.
    assert_eq!(all[6]["detail"], json!({}));

    // Owner/admin only; malformed paging is a 400.
    let (st, _) = api_call(&s, "GET", "/api/audit", &member, None).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    for q in ["limit=0", "limit=x", "cursor=zz", "cursor=c-1", "order=asc"] {
        let (st, body) = api_call(&s, "GET", &format!("/api/audit?{q}"), &owner, None).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{q}: {body}");
        assert_eq!(body["error"]["code"], "bad_request");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_changes_users_of_a_running_gateway_at_once() {
    let s = TestServer::start("").await;
    let owner = make_user(&s, "olga@acme.com", "Olga", Role::Owner).await;
    let config = cli_config(&s);

    let out = cli(
        &config,
        &["user", "add", "--email", "mo@acme.com", "--name", "Mo"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let token = stdout(&out).trim().to_string();
    assert_eq!(status_with(&s, &token).await, StatusCode::OK);

    let out = cli(
        &config,
        &[
            "user",
            "set-role",
            "--email",
            "mo@acme.com",
            "--role",
            "viewer",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let (_, me) = api_call(&s, "GET", "/api/me", &token, None).await;
    assert_eq!(me["role"], "viewer");

    // Deactivated from another process: the running server refuses the
    // token on the very next request.
    let out = cli(&config, &["user", "deactivate", "--email", "mo@acme.com"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(status_with(&s, &token).await, StatusCode::UNAUTHORIZED);
    let out = cli(&config, &["user", "list"]).await;
    assert!(out.status.success());
    let line = stdout(&out)
        .lines()
        .find(|l| l.contains("mo@acme.com"))
        .map(str::to_string)
        .expect("mo listed");
    assert!(line.ends_with("\tviewer\tMo\tinactive"), "{line}");
    let out = cli(&config, &["user", "activate", "--email", "mo@acme.com"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(status_with(&s, &token).await, StatusCode::OK);

    // Rotation prints the new token alone on one line; the old one stops.
    let out = cli(&config, &["user", "rotate-token", "--email", "mo@acme.com"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text:?}");
    let new = text.trim().to_string();
    assert_ne!(new, token);
    assert_eq!(status_with(&s, &token).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status_with(&s, &new).await, StatusCode::OK);

    // Refusals: a clear message and a non-zero exit, nothing changed.
    for (args, says) in [
        (
            vec!["user", "deactivate", "--email", "nobody@acme.com"],
            "no user",
        ),
        (
            vec!["user", "rotate-token", "--email", "nobody@acme.com"],
            "no user",
        ),
        (
            vec![
                "user",
                "set-role",
                "--email",
                "mo@acme.com",
                "--role",
                "king",
            ],
            "role",
        ),
        (
            vec!["user", "deactivate", "--email", "olga@acme.com"],
            "last active owner",
        ),
        (
            vec![
                "user",
                "set-role",
                "--email",
                "olga@acme.com",
                "--role",
                "admin",
            ],
            "last active owner",
        ),
    ] {
        let out = cli(&config, &args).await;
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{args:?}: {}", stdout(&out));
    }
    assert_eq!(status_with(&s, &owner).await, StatusCode::OK);
    let (_, me) = api_call(&s, "GET", "/api/me", &new, None).await;
    assert_eq!(me["role"], "viewer");

    // The log names the command line as the actor.
    let (_, page) = api_call(&s, "GET", "/api/audit", &owner, None).await;
    let entries = page["items"].as_array().expect("items");
    let actions: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        [
            "user.token_rotated",
            "user.activated",
            "user.deactivated",
            "user.role_changed",
            "user.created",
        ]
    );
    assert!(
        entries
            .iter()
            .all(|e| e["actor"] == "cli" && e["actor_id"].is_null())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_imap_sessions_end_when_access_is_revoked() {
    let s = TestServer::start("").await;
    let owner = make_user(&s, "olga@acme.com", "Olga", Role::Owner).await;
    let mo = make_user(&s, "mo@acme.com", "Mo", Role::Member).await;
    let ann = make_user(&s, "ann@acme.com", "Ann", Role::Member).await;
    let (_, list) = api_call(&s, "GET", "/api/users", &owner, None).await;
    let id_of = |email: &str| {
        list["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|u| u["email"] == email)
            .and_then(|u| u["id"].as_i64())
            .expect("user id")
    };
    let (mo_id, ann_id) = (id_of("mo@acme.com"), id_of("ann@acme.com"));

    // A selected session: deactivated through the API, its next command
    // gets BYE and a tagged NO, and the connection closes.
    let mut io = imap_login(&s, "mo@acme.com", &mo).await;
    let r = imap_cmd(&mut io, "a2", "SELECT INBOX").await;
    assert!(r.last().is_some_and(|l| l.starts_with("a2 OK")), "{r:?}");
    let r = imap_cmd(&mut io, "a3", "NOOP").await;
    assert!(r.last().is_some_and(|l| l.starts_with("a3 OK")), "{r:?}");
    let (st, _) = api_call(
        &s,
        "PATCH",
        &format!("/api/users/{mo_id}"),
        &owner,
        Some(json!({"active": false})),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let r = imap_cmd(&mut io, "a4", "FETCH 1:* (FLAGS)").await;
    assert!(r.iter().any(|l| l.starts_with("* BYE")), "{r:?}");
    assert!(r.last().is_some_and(|l| l.starts_with("a4 NO")), "{r:?}");
    assert!(read_to_close(&mut io).await.is_empty());
    // And the token no longer logs in.
    let tcp = TcpStream::connect(s.imap).await.expect("connect");
    let mut io = BufReader::new(tcp);
    let mut greeting = String::new();
    io.read_line(&mut greeting).await.expect("greeting");
    let r = imap_cmd(&mut io, "b1", &format!("LOGIN \"mo@acme.com\" \"{mo}\"")).await;
    assert!(r.last().is_some_and(|l| l.starts_with("b1 NO")), "{r:?}");

    // A session in IDLE ends with BYE when the token is rotated.
    let mut idle = imap_login(&s, "ann@acme.com", &ann).await;
    let r = imap_cmd(&mut idle, "c2", "SELECT INBOX").await;
    assert!(r.last().is_some_and(|l| l.starts_with("c2 OK")), "{r:?}");
    idle.get_mut()
        .write_all(b"c3 IDLE\r\n")
        .await
        .expect("write");
    let mut line = String::new();
    idle.read_line(&mut line).await.expect("continuation");
    assert!(line.starts_with("+ "), "{line}");
    let (st, _) = api_call(
        &s,
        "POST",
        &format!("/api/users/{ann_id}/token"),
        &owner,
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let rest = read_to_close(&mut idle).await;
    assert!(rest.iter().any(|l| l.starts_with("* BYE")), "{rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_ends_when_the_command_line_deactivates_its_user() {
    let s = TestServer::start("").await;
    make_user(&s, "olga@acme.com", "Olga", Role::Owner).await;
    let mo = make_user(&s, "mo@acme.com", "Mo", Role::Member).await;
    let config = cli_config(&s);
    let mut io = imap_login(&s, "mo@acme.com", &mo).await;
    let r = imap_cmd(&mut io, "a2", "SELECT INBOX").await;
    assert!(r.last().is_some_and(|l| l.starts_with("a2 OK")), "{r:?}");
    io.get_mut().write_all(b"a3 IDLE\r\n").await.expect("write");
    let mut line = String::new();
    io.read_line(&mut line).await.expect("continuation");
    assert!(line.starts_with("+ "), "{line}");
    // A second session, not idling: its next command is refused.
    let mut busy = imap_login(&s, "mo@acme.com", &mo).await;

    let out = cli(&config, &["user", "deactivate", "--email", "mo@acme.com"]).await;
    assert!(out.status.success(), "{}", stderr(&out));

    let rest = read_to_close(&mut io).await;
    assert!(rest.iter().any(|l| l.starts_with("* BYE")), "{rest:?}");
    let r = imap_cmd(&mut busy, "b2", "LIST \"\" \"*\"").await;
    assert!(r.iter().any(|l| l.starts_with("* BYE")), "{r:?}");
    assert!(r.last().is_some_and(|l| l.starts_with("b2 NO")), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_stream_ends_when_its_user_is_deactivated() {
    let s = TestServer::start("").await;
    let owner = make_user(&s, "olga@acme.com", "Olga", Role::Owner).await;
    let mo = make_user(&s, "mo@acme.com", "Mo", Role::Member).await;
    let http = reqwest::Client::new();
    let open = || {
        http.get(format!(
            "http://{}/jmap/eventsource?types=*&closeafter=no&ping=1",
            s.http
        ))
        .bearer_auth(&mo)
        .send()
    };
    let mut stream = open().await.expect("open");
    assert_eq!(stream.status(), StatusCode::OK);
    // Alive: pings arrive.
    let first = tokio::time::timeout(Duration::from_secs(30), stream.chunk())
        .await
        .expect("a ping in time")
        .expect("chunk");
    assert!(first.is_some());

    let (_, list) = api_call(&s, "GET", "/api/users", &owner, None).await;
    let mo_id = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|u| u["email"] == "mo@acme.com")
        .and_then(|u| u["id"].as_i64())
        .expect("id");
    let (st, _) = api_call(
        &s,
        "PATCH",
        &format!("/api/users/{mo_id}"),
        &owner,
        Some(json!({"active": false})),
    )
    .await;
    assert_eq!(st, StatusCode::OK);

    // The stream ends (pings arrive every second until then).
    let ended = tokio::time::timeout(common::WAIT_DEADLINE, async {
        loop {
            match stream.chunk().await {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the push stream did not end");
    let resp = open().await.expect("reopen");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}
