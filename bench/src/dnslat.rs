//! Threading under a resolver's latency (issue 27): a resolver stand-in
//! with a configurable delay, a sender of many messages from one or many
//! domains, and the report of when each message was threaded.
//!
//! - `dns`: answers every query on a loopback UDP port after `--delay-ms`,
//!   many at once: the TXT records it is given (`--txt name=value`), and
//!   NXDOMAIN with an SOA (TTL and minimum 300 s, so a resolver may cache
//!   the negative answer, RFC 2308) for every other name. With
//!   `BCBENCH_DNS_LOG` set it prints every question to stderr.
//! - `send-mix`: N messages over S sessions, from `vendor@d<k>.<suffix>`
//!   with k = n mod D: D = 1 is one sender domain, D = N a domain each.
//! - `threaded`: waits until nothing is queued, then prints the threaded
//!   rate (N / (last message threaded − `--t0`)) and the time from the
//!   message's commit (`received_at`, just before its `250`) to its
//!   threading (`processed_at`), p50 and p99.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mail_auth::hickory_resolver::proto::op::{Message, MessageType, OpCode, ResponseCode};
use mail_auth::hickory_resolver::proto::rr::rdata::{SOA, TXT};
use mail_auth::hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

use super::{Smtp, loopback, message, percentile, stuffed, unix_now};

/// TTL of every record and of negative answers.
const TTL: u32 = 300;

#[derive(clap::Args)]
pub struct DnsArgs {
    /// Where to listen (UDP); must be on loopback.
    #[arg(long)]
    listen: SocketAddr,
    /// How long every answer waits.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// A TXT record, `name=value` (repeatable).
    #[arg(long)]
    txt: Vec<String>,
}

#[derive(clap::Args)]
pub struct MixArgs {
    #[arg(long)]
    server: SocketAddr,
    #[arg(long, required = true)]
    rcpt: Vec<String>,
    #[arg(long)]
    messages: usize,
    /// Sender domains: message n comes from `vendor@d<n mod domains>.<suffix>`.
    #[arg(long, default_value_t = 1)]
    domains: usize,
    #[arg(long, default_value = "mix.bench.test")]
    suffix: String,
    #[arg(long, default_value_t = 20)]
    sessions: usize,
    #[arg(long, default_value_t = 5120)]
    size: usize,
}

#[derive(clap::Args)]
pub struct ThreadedArgs {
    #[arg(long)]
    db: PathBuf,
    /// Unix time the load started (seconds).
    #[arg(long)]
    t0: f64,
    #[arg(long, default_value_t = 900)]
    timeout_secs: u64,
}

/// Serves until killed.
pub fn dns(args: DnsArgs) -> Result<()> {
    loopback(args.listen)?;
    let mut records = Vec::new();
    for t in &args.txt {
        let (name, value) = t
            .split_once('=')
            .with_context(|| format!("--txt {t}: expected name=value"))?;
        records.push((fqdn(name)?, value.to_string()));
    }
    let records = Arc::new(records);
    let delay = Duration::from_millis(args.delay_ms);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let sock = Arc::new(tokio::net::UdpSocket::bind(args.listen).await?);
        eprintln!(
            "dns: on {} (UDP), answers after {} ms",
            args.listen, args.delay_ms
        );
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                continue;
            };
            let Some(reply) = answer(&buf[..n], &records) else {
                continue;
            };
            let sock = sock.clone();
            tokio::spawn(async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let _ = sock.send_to(&reply, peer).await;
            });
        }
    })
}

fn fqdn(name: &str) -> Result<Name> {
    let mut n = Name::from_ascii(name).with_context(|| format!("bad name {name}"))?;
    n.set_fqdn(true);
    Ok(n)
}

/// The answer to one query: the TXT records of its name, NOERROR with no
/// data for a known name asked another type, NXDOMAIN otherwise; `None`
/// for a packet that is no query.
fn answer(packet: &[u8], records: &[(Name, String)]) -> Option<Vec<u8>> {
    let request = Message::from_vec(packet).ok()?;
    if request.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    let Some(query) = request.queries.first().cloned() else {
        reply.metadata.response_code = ResponseCode::FormErr;
        return reply.to_vec().ok();
    };
    if request.metadata.op_code != OpCode::Query {
        reply.metadata.response_code = ResponseCode::NotImp;
        return reply.to_vec().ok();
    }
    let qname = query.name().to_lowercase();
    if std::env::var_os("BCBENCH_DNS_LOG").is_some() {
        eprintln!("dns: {} {}", qname, query.query_type());
    }
    let known: Vec<&String> = records
        .iter()
        .filter(|(n, _)| n.to_lowercase() == qname)
        .map(|(_, v)| v)
        .collect();
    reply.add_query(query.clone());
    if known.is_empty() || query.query_type() != RecordType::TXT {
        reply.metadata.response_code = if known.is_empty() {
            ResponseCode::NXDomain
        } else {
            ResponseCode::NoError
        };
        let soa = SOA::new(
            Name::from_ascii("ns.bench.test.").ok()?,
            Name::from_ascii("admin.bench.test.").ok()?,
            1,
            TTL as i32,
            TTL as i32,
            TTL as i32,
            TTL,
        );
        reply.add_authority(Record::from_rdata(Name::root(), TTL, RData::SOA(soa)));
    } else {
        for value in known {
            let chunks: Vec<&[u8]> = value.as_bytes().chunks(255).collect();
            let txt = TXT::from_bytes(chunks);
            reply.add_answer(Record::from_rdata(qname.clone(), TTL, RData::TXT(txt)));
        }
    }
    reply.to_vec().ok()
}

/// Sends the mix; prints `{"t0", "t1", "sent"}` (Unix seconds).
pub fn send_mix(args: MixArgs) -> Result<()> {
    loopback(args.server)?;
    let sessions = args.sessions.max(1);
    let domains = args.domains.max(1);
    let t0 = unix_now();
    let started = Instant::now();
    let mut handles = Vec::new();
    for s in 0..sessions {
        let rcpts = args.rcpt.clone();
        let (suffix, server, size, total) =
            (args.suffix.clone(), args.server, args.size, args.messages);
        handles.push(std::thread::spawn(move || -> Result<usize> {
            let mut c = Smtp::connect(server)?;
            let mut sent = 0;
            for n in (s..total).step_by(sessions) {
                let from = format!("vendor@d{}.{suffix}", n % domains);
                let to = &rcpts[n % rcpts.len()];
                let body = stuffed(&message(n, &from, to, size, None));
                c.send(format!("MAIL FROM:<{from}>\r\nRCPT TO:<{to}>\r\nDATA\r\n").as_bytes())?;
                c.expect(250)?;
                c.expect(250)?;
                c.expect(354)?;
                c.send(&body)?;
                c.send(b".\r\n")?;
                c.expect(250).with_context(|| format!("message {n}"))?;
                sent += 1;
            }
            let _ = c.send(b"QUIT\r\n");
            Ok(sent)
        }));
    }
    let mut sent = 0;
    for h in handles {
        sent += h
            .join()
            .map_err(|_| anyhow::anyhow!("a sending thread panicked"))??;
    }
    let t1 = unix_now();
    eprintln!(
        "send-mix: {sent} messages from {domains} domain(s) in {:.2}s",
        started.elapsed().as_secs_f64()
    );
    println!(
        "{}",
        serde_json::json!({ "t0": t0, "t1": t1, "sent": sent })
    );
    Ok(())
}

/// Waits for the queue to drain; prints the threaded rate and the
/// commit → threaded percentiles as JSON.
pub fn threaded(args: ThreadedArgs) -> Result<()> {
    let conn = rusqlite::Connection::open_with_flags(
        &args.db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    loop {
        let queued: i64 = conn.query_row(
            "SELECT COUNT(*) FROM inbound_queue WHERE state = 'queued'",
            [],
            |r| r.get(0),
        )?;
        if queued == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("still {queued} queued after the timeout");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut st = conn.prepare(
        "SELECT received_at, processed_at FROM inbound_queue WHERE state = 'done' AND processed_at IS NOT NULL",
    )?;
    let rows = st
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let failed: i64 = conn.query_row(
        "SELECT COUNT(*) FROM inbound_queue WHERE state = 'failed'",
        [],
        |r| r.get(0),
    )?;
    let last = rows.iter().map(|r| r.1).max().unwrap_or(0) as f64 / 1000.0;
    let mut waits: Vec<f64> = rows.iter().map(|(a, b)| (b - a) as f64).collect();
    waits.sort_by(|a, b| a.total_cmp(b));
    let n = rows.len();
    let rate = n as f64 / (last - args.t0);
    let temperror: i64 = conn.query_row(
        "SELECT COUNT(*) FROM messages WHERE direction = 'in' AND auth LIKE '%temperror%'",
        [],
        |r| r.get(0),
    )?;
    println!(
        "{}",
        serde_json::json!({
            "n": n,
            "failed": failed,
            "temperror": temperror,
            "threaded_rate": rate,
            "last_threaded": last,
            "to_threaded_p50_ms": percentile(&waits, 50.0),
            "to_threaded_p99_ms": percentile(&waits, 99.0),
        })
    );
    Ok(())
}
