//! `bcbench fill`: a store with many messages over many side conversations,
//! built through the real store API: parents and side conversations as
//! rows (as `conversations` would leave them, without outbound mail), then
//! every message the way SMTP + ingest store it — `inbound::enqueue` (the
//! SMTP commit) and `ingest::apply::apply` (the ingest writer: routing
//! lookups, duplicate check, message row, references, agent-view placement,
//! reply effects), prepared by `ingest::prepare` (mail-parser, classifier,
//! visible reply).

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use backchannel::ingest::{self, apply};
use backchannel::model::{NewSideConversation, ParticipantRole, Token, now_ms};
use backchannel::store::inbound::{self, Envelope, InboundMessage};
use backchannel::store::{self, Store};
use sha2::{Digest, Sha256};

#[derive(clap::Args)]
pub struct FillArgs {
    /// The gateway's data dir: the store is `<data-dir>/backchannel.db`.
    #[arg(long)]
    data_dir: PathBuf,
    #[arg(long)]
    domain: String,
    #[arg(long, default_value_t = 1_000_000)]
    messages: usize,
    #[arg(long, default_value_t = 100_000)]
    side_conversations: usize,
    /// Approximate raw size of each message.
    #[arg(long, default_value_t = 5120)]
    size: usize,
    /// Where to write the side conversations' tokens, one a line.
    #[arg(long)]
    tokens_out: PathBuf,
    /// Where to write a sample of stored Message-IDs, one a line.
    #[arg(long)]
    ids_out: PathBuf,
}

/// Messages per write job (one savepoint each); the writer commits every
/// job waiting together.
const CHUNK: usize = 250;
/// Jobs in flight at once.
const IN_FLIGHT: usize = 6;

struct Sc {
    token: String,
    vendor: String,
}

fn vendor(sc: usize) -> String {
    format!("vendor{sc}@v{}.bench.test", sc % 997)
}

fn raw_message(i: usize, n_sc: usize, sc: &Sc, domain: &str, size: usize) -> Vec<u8> {
    let seq = i / n_sc;
    let mut m = format!(
        "From: Vendor {sci} <{v}>\r\nTo: <reply+{t}@{domain}>\r\nSubject: Re: Pallet {sci} delayed\r\n\
         Date: Thu, 01 Jan 2026 10:{mm:02}:00 +0000\r\nMessage-ID: <fill.{i}@vendor.bench.test>\r\n",
        sci = i % n_sc,
        v = sc.vendor,
        t = sc.token,
        mm = seq % 60,
    );
    if seq > 0 {
        let prev = i - n_sc;
        let mut refs = Vec::new();
        let mut r = prev as isize;
        while r >= 0 && refs.len() < 3 {
            refs.push(format!("<fill.{r}@vendor.bench.test>"));
            r -= n_sc as isize;
        }
        refs.reverse();
        m.push_str(&format!(
            "In-Reply-To: <fill.{prev}@vendor.bench.test>\r\nReferences: {}\r\n",
            refs.join(" ")
        ));
    }
    m.push_str(&format!(
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Hello,\r\n\r\nUpdate {seq} on pallet {sci}: it left the depot and should arrive tomorrow.\r\n\r\n\
         Regards,\r\nVendor {sci}\r\n\r\nOn Thu, 1 Jan 2026 at 09:00, Support <reply+{t}@{domain}> wrote:\r\n",
        sci = i % n_sc,
        t = sc.token,
    ));
    let quoted =
        "> lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor\r\n";
    while m.len() < size {
        m.push_str(quoted);
    }
    m.into_bytes()
}

pub fn run(args: FillArgs) -> Result<()> {
    if args.side_conversations == 0 {
        bail!("--side-conversations must be at least 1");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(fill(args))
}

async fn fill(args: FillArgs) -> Result<()> {
    let db = args.data_dir.join("backchannel.db");
    let store = Store::open(&db).with_context(|| format!("open {}", db.display()))?;
    let started = Instant::now();
    let n_sc = args.side_conversations;

    // Parents (two side conversations each) and side conversations with
    // their vendor as participant, in batches.
    let mut scs: Vec<Sc> = Vec::with_capacity(n_sc);
    for start in (0..n_sc).step_by(5000) {
        let batch: Vec<(usize, String, String)> = (start..(start + 5000).min(n_sc))
            .map(|k| (k, Token::generate().as_str().to_string(), vendor(k)))
            .collect();
        for (_, t, v) in &batch {
            scs.push(Sc {
                token: t.clone(),
                vendor: v.clone(),
            });
        }
        let domain = args.domain.clone();
        store
            .write(move |db| {
                let now = now_ms();
                let mut parent = 0i64;
                for (k, token, vendor) in &batch {
                    if k % 2 == 0 || parent == 0 {
                        parent = store::parents::create_if_missing(
                            db,
                            &format!("F-{}", k / 2),
                            &format!("Order {}", k / 2),
                            now,
                        )?
                        .0;
                    }
                    let sc = store::side_conversations::insert(
                        db,
                        &NewSideConversation {
                            parent_id: parent,
                            token,
                            portal_per_recipient: false,
                            subject: &format!("Pallet {k} delayed"),
                            sender_email: &format!("reply@{domain}"),
                            started_by: None,
                            created_at: now,
                        },
                    )?;
                    store::participants::add(db, sc, vendor, None, ParticipantRole::To, now)?;
                }
                Ok(())
            })
            .await?;
    }
    eprintln!(
        "fill: {n_sc} side conversations in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let mut in_flight: VecDeque<tokio::task::JoinHandle<Result<usize>>> = VecDeque::new();
    let mut done = 0usize;
    let mut last_report = Instant::now();
    let msg_started = Instant::now();
    for start in (0..args.messages).step_by(CHUNK) {
        let end = (start + CHUNK).min(args.messages);
        let mut prepared = Vec::with_capacity(end - start);
        let mut tasks = Vec::with_capacity(end - start);
        for i in start..end {
            let sc = &scs[i % n_sc];
            let raw = raw_message(i, n_sc, sc, &args.domain, args.size);
            let sha256 = Sha256::digest(&raw).to_vec();
            let m = InboundMessage {
                id: 0,
                envelope: Envelope {
                    peer_ip: "127.0.0.1".into(),
                    helo: "mx.vendor.bench.test".into(),
                    mail_from: sc.vendor.clone(),
                    rcpts: vec![format!("reply+{}@{}", sc.token, args.domain)],
                    tls: false,
                    params: Vec::new(),
                    received_at: now_ms(),
                },
                raw,
                sha256,
                state: "queued".into(),
                attempts: 0,
            };
            tasks.push(tokio::spawn(ingest::prepare(m, None, args.domain.clone())));
        }
        for t in tasks {
            match t.await? {
                Ok(p) => prepared.push(p),
                Err(e) => bail!("prepare failed: {e}"),
            }
        }
        let config = backchannel::config::Config::from_toml_str(
            &format!("domain = \"{}\"\n", args.domain),
            Vec::new(),
        )?;
        let write = store.submit_write(move |c| {
            let mut n = 0;
            for mut p in prepared {
                p.inbound_id = inbound::enqueue(c, &p.envelope, &p.raw)?;
                match apply::apply(c, &config, &p)? {
                    apply::Applied::Stored { .. } => n += 1,
                    other => {
                        return Err(backchannel::store::StoreError::Conflict(format!(
                            "unexpected {other:?}"
                        )));
                    }
                }
            }
            Ok(n)
        })?;
        in_flight.push_back(tokio::spawn(async move { Ok(write.await?) }));
        while in_flight.len() >= IN_FLIGHT {
            if let Some(h) = in_flight.pop_front() {
                done += h.await??;
            }
        }
        if last_report.elapsed().as_secs() >= 10 {
            last_report = Instant::now();
            eprintln!(
                "fill: {done} messages, {:.0}/s",
                done as f64 / msg_started.elapsed().as_secs_f64()
            );
        }
    }
    while let Some(h) = in_flight.pop_front() {
        done += h.await??;
    }
    let secs = msg_started.elapsed().as_secs_f64();
    eprintln!(
        "fill: {done} messages in {secs:.1}s ({:.0}/s)",
        done as f64 / secs
    );
    store.close();

    let conn = rusqlite::Connection::open(&db)?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    drop(conn);

    let mut f = std::io::BufWriter::new(std::fs::File::create(&args.tokens_out)?);
    for sc in &scs {
        writeln!(f, "{}", sc.token)?;
    }
    f.flush()?;
    let mut f = std::io::BufWriter::new(std::fs::File::create(&args.ids_out)?);
    let step = (args.messages / 1000).max(1);
    for i in (0..args.messages).step_by(step) {
        writeln!(f, "fill.{i}@vendor.bench.test")?;
    }
    f.flush()?;
    let size = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
    println!(
        "{}",
        serde_json::json!({
            "messages": done,
            "side_conversations": n_sc,
            "seconds": started.elapsed().as_secs_f64(),
            "db_bytes": size,
        })
    );
    Ok(())
}
