//! Issue 27: threading under a resolver that is slow, dead or broken.
//! Real SMTP on 127.0.0.1 into a gateway whose `[dns]` points at a
//! [`FakeDns`] that answers late, drops every query or answers SERVFAIL.
//! Every test waits on a state (all threaded), never on a guess of time.

mod common;

use std::time::Duration;

use common::dns::{FakeDns, Mode, RecordKind};
use common::{TOKEN, TestServer, seed_thread, smtp_send, wait_until};

const VENDOR: &str = "vera@carrier.example";

/// A gateway asking only `dns`, with `timeout` per message.
async fn server(dns: &FakeDns, timeout: &str) -> TestServer {
    let section = format!(
        "[dns]\nnameservers = [\"{}\"]\ntimeout = \"{timeout}\"\n",
        dns.addr
    );
    TestServer::start_with("", &section).await
}

fn reply(from: &str, n: usize, tag: &str) -> String {
    format!(
        "From: Vera <{from}>\nTo: reply+{TOKEN}@gw.example.com\nSubject: Re: Pallet 7 delayed\nMessage-ID: <{tag}-{n}@carrier.example>\nDate: Tue, 1 Sep 2026 10:00:00 +0000\n\nUpdate number {n}.\n"
    )
}

async fn send(s: &TestServer, from: &str, n: usize, tag: &str) {
    let r = smtp_send(
        s.smtp,
        from,
        &[&format!("reply+{TOKEN}@gw.example.com")],
        &reply(from, n, tag),
    )
    .await;
    assert!(r.starts_with("250"), "message {n}: {r}");
}

/// Waits until `n` inbound messages are threaded on `sc`.
async fn wait_threaded(s: &TestServer, sc: i64, n: i64) {
    let sql = format!(
        "SELECT COUNT(*) FROM messages WHERE direction = 'in' AND side_conversation_id = {sc}"
    );
    wait_until(&format!("{n} messages threaded"), || async {
        s.query::<i64>(&sql).await == n
    })
    .await;
}

/// (Message-ID, auth JSON) of every inbound message, in storage order.
async fn stored(s: &TestServer) -> Vec<(String, serde_json::Value)> {
    let rows: Vec<(String, String)> = s
        .sql
        .read(|c| {
            let mut st = c.prepare(
                "SELECT message_id, coalesce(auth, 'null') FROM messages WHERE direction = 'in' ORDER BY id",
            )?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
        .expect("read messages");
    rows.into_iter()
        .map(|(id, auth)| (id, serde_json::from_str(&auth).expect("auth JSON")))
        .collect()
}

/// Every message stored once, in the order it was accepted, with
/// `temperror` for SPF and DMARC; nothing left queued or failed.
async fn assert_all_temperror(s: &TestServer, n: usize, tag: &str) {
    let rows = stored(s).await;
    let ids: Vec<&str> = rows.iter().map(|(id, _)| id.as_str()).collect();
    let expected: Vec<String> = (0..n)
        .map(|i| format!("{tag}-{i}@carrier.example"))
        .collect();
    assert_eq!(ids, expected, "stored once each, in the order accepted");
    for (id, auth) in &rows {
        assert_eq!(auth["spf"], "temperror", "{id}: {auth}");
        assert_eq!(auth["dmarc"], "temperror", "{id}: {auth}");
    }
    let left: i64 = s
        .query("SELECT COUNT(*) FROM inbound_queue WHERE state <> 'done'")
        .await;
    assert_eq!(left, 0, "nothing queued or failed");
}

/// More messages than one batch of the worker (64), so that lookups wait
/// across batches.
const MANY: usize = 80;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_resolver_still_threads_every_message_with_temperror() {
    let dns = FakeDns::start_with(&[], Mode::Drop, Duration::ZERO).await;
    let s = server(&dns, "400ms").await;
    let (_, sc) = seed_thread(&s.sql, "T-1", TOKEN, "open", "open", &[VENDOR]).await;
    for n in 0..MANY {
        send(&s, VENDOR, n, "dead").await;
    }
    wait_threaded(&s, sc, MANY as i64).await;
    assert_all_temperror(&s, MANY, "dead").await;
    assert!(dns.query_count() > 0, "the resolver was asked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolver_answering_servfail_still_threads_every_message_with_temperror() {
    let dns = FakeDns::start_with(&[], Mode::ServFail, Duration::ZERO).await;
    let s = server(&dns, "1s").await;
    let (_, sc) = seed_thread(&s.sql, "T-1", TOKEN, "open", "open", &[VENDOR]).await;
    for n in 0..MANY {
        send(&s, VENDOR, n, "servfail").await;
    }
    wait_threaded(&s, sc, MANY as i64).await;
    assert_all_temperror(&s, MANY, "servfail").await;
    assert!(dns.query_count() > 0, "the resolver was asked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_negative_answer_is_cached() {
    // The fake knows carrier.example (SPF) but not nx-sender.example: its
    // SPF and DMARC lookups answer NXDOMAIN with the root SOA (minimum 60 s).
    let records = [(
        "carrier.example",
        RecordKind::Txt("v=spf1 ip4:127.0.0.0/8 -all".into()),
    )];
    let dns = FakeDns::start_with(&records, Mode::Answer, Duration::ZERO).await;
    let s = server(&dns, "2s").await;
    let (_, sc) = seed_thread(&s.sql, "T-1", TOKEN, "open", "open", &[VENDOR]).await;
    let sender = "nobody@nx-sender.example";

    send(&s, sender, 0, "nx").await;
    wait_threaded(&s, sc, 1).await;
    let spf = dns.queries_for("nx-sender.example");
    let dmarc = dns.queries_for("_dmarc.nx-sender.example");
    assert!(spf >= 1, "SPF asked the fake");
    assert!(dmarc >= 1, "DMARC asked the fake");

    send(&s, sender, 1, "nx").await;
    wait_threaded(&s, sc, 2).await;
    assert_eq!(
        dns.queries_for("nx-sender.example"),
        spf,
        "the second message's SPF lookup came from the cache"
    );
    assert_eq!(
        dns.queries_for("_dmarc.nx-sender.example"),
        dmarc,
        "the second message's DMARC lookup came from the cache"
    );
    let rows = stored(&s).await;
    assert_eq!(rows.len(), 2);
    for (id, auth) in &rows {
        assert_eq!(auth["spf"], "none", "{id}: {auth}");
        assert_eq!(auth["dmarc"], "none", "{id}: {auth}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_lookups_of_many_messages_reach_a_slow_resolver_once() {
    // Every answer takes 200 ms: messages from one domain, accepted at
    // once, are authenticated side by side; their identical lookups are
    // sent once (shared while in flight, then cached).
    let dns = FakeDns::start_with(&[], Mode::Answer, Duration::from_millis(200)).await;
    let s = server(&dns, "5s").await;
    let (_, sc) = seed_thread(&s.sql, "T-1", TOKEN, "open", "open", &[VENDOR]).await;
    let sender = "nobody@slow-sender.example";
    let mut sends = tokio::task::JoinSet::new();
    for n in 0..20 {
        let addr = s.smtp;
        sends.spawn(async move {
            let rcpt = format!("reply+{TOKEN}@gw.example.com");
            smtp_send(addr, sender, &[&rcpt], &reply(sender, n, "slow")).await
        });
    }
    while let Some(r) = sends.join_next().await {
        let r = r.expect("send task");
        assert!(r.starts_with("250"), "{r}");
    }
    wait_threaded(&s, sc, 20).await;
    assert_eq!(dns.queries_for("slow-sender.example"), 1, "SPF asked once");
    assert_eq!(
        dns.queries_for("_dmarc.slow-sender.example"),
        1,
        "DMARC asked once"
    );
    let rows = stored(&s).await;
    for (id, auth) in &rows {
        assert_eq!(auth["spf"], "none", "{id}: {auth}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dmarc_tree_walk_asks_each_name_once() {
    // The From domain's DMARC names are asked side by side with SPF
    // (answers shared with DMARC's own walk): each name of the walk reaches
    // the resolver once, and no other name is asked.
    let dns = FakeDns::start_with(&[], Mode::Answer, Duration::from_millis(100)).await;
    let s = server(&dns, "5s").await;
    let (_, sc) = seed_thread(&s.sql, "T-1", TOKEN, "open", "open", &[VENDOR]).await;
    send(&s, "nobody@a.b.walk.example", 0, "walk").await;
    wait_threaded(&s, sc, 1).await;
    let mut asked: Vec<String> = dns
        .queried_names()
        .into_iter()
        .filter(|n| n.starts_with("_dmarc."))
        .collect();
    asked.sort();
    assert_eq!(
        asked,
        [
            "_dmarc.a.b.walk.example",
            "_dmarc.b.walk.example",
            "_dmarc.example",
            "_dmarc.walk.example"
        ]
    );
}
