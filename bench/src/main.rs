//! `bcbench`: the Rust helpers of `bench/run.sh`.
//!
//! - `latency`: a small SMTP client that runs alongside the load generator
//!   and measures, per message, the time from the end of DATA (`.` sent) to
//!   the `250`, and from `RCPT TO` to its reply (the routing lookup).
//! - `send`: delivers every file of a directory over SMTP (pipelined
//!   sessions), for the agent-view mailbox.
//! - `idle`: holds N SMTP connections open and silent (memory test).
//! - `fill`: fills a store through the real store API (inbound queue +
//!   the ingest writer's `apply`) with M messages over N side conversations.
//! - `route-latency`: times the RCPT routing lookup (`smtp::policy::decide`)
//!   in-process against a store.
//! - `dns`, `send-mix`, `threaded`: threading under a resolver's latency
//!   (see `dnslat`).
//! - `wait-ingested` / `wait-files`: wait until the ingest queue is empty or a
//!   Maildir holds N messages, and print when that happened.
//!
//! Every network address it is given must be on loopback; it refuses others.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

mod dnslat;
mod fill;

#[derive(Parser)]
#[command(name = "bcbench", about = "benchmark helpers for bench/run.sh")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Send messages one by one on one connection until the stop file
    /// appears (or --max is reached); print latency percentiles as JSON.
    Latency {
        #[arg(long)]
        server: SocketAddr,
        /// Recipients, used in turn.
        #[arg(long, required = true)]
        rcpt: Vec<String>,
        #[arg(long, default_value = "latency@client.bench.test")]
        from: String,
        /// Body bytes per message.
        #[arg(long, default_value_t = 5120)]
        size: usize,
        /// Message-IDs to cite (In-Reply-To) on every fourth message, sent to
        /// --cite-rcpt: exercises routing by references.
        #[arg(long)]
        cite: Vec<String>,
        #[arg(long)]
        cite_rcpt: Option<String>,
        #[arg(long)]
        stop_file: Option<PathBuf>,
        #[arg(long, default_value_t = 1_000_000)]
        max: usize,
        /// Pause between messages (the client measures; it should not be
        /// a load of its own).
        #[arg(long, default_value_t = 50)]
        pause_ms: u64,
        /// Where to write the JSON result (else stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Deliver every file of a directory (sorted by name) over SMTP.
    Send {
        #[arg(long)]
        server: SocketAddr,
        #[arg(long, required = true)]
        rcpt: Vec<String>,
        #[arg(long, default_value = "vendor@vendor.bench.test")]
        from: String,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 4)]
        sessions: usize,
    },
    /// Open N SMTP connections (greeting + EHLO) and hold them idle until
    /// the release file appears; writes the ready file once all are open.
    Idle {
        #[arg(long)]
        server: SocketAddr,
        #[arg(long, default_value_t = 500)]
        n: usize,
        #[arg(long)]
        ready_file: PathBuf,
        #[arg(long)]
        release_file: PathBuf,
        #[arg(long, default_value_t = 120)]
        timeout_secs: u64,
    },
    /// Fill a store with messages over side conversations.
    Fill(fill::FillArgs),
    /// Time the RCPT routing lookup against a store, in-process.
    RouteLatency {
        #[arg(long)]
        db: PathBuf,
        /// File of side-conversation tokens, one a line.
        #[arg(long)]
        tokens: PathBuf,
        #[arg(long)]
        domain: String,
        #[arg(long, default_value_t = 20_000)]
        samples: usize,
    },
    /// Wait until the inbound queue of the store has no queued row; print
    /// the Unix time (seconds, fractional) when that was seen.
    WaitIngested {
        #[arg(long)]
        db: PathBuf,
        #[arg(long, default_value_t = 1800)]
        timeout_secs: u64,
    },
    /// A resolver stand-in answering after a delay (see `dnslat`).
    Dns(dnslat::DnsArgs),
    /// Send N messages from one or many sender domains.
    SendMix(dnslat::MixArgs),
    /// Wait until nothing is queued; print the threaded rate and the time
    /// from commit to threaded as JSON.
    Threaded(dnslat::ThreadedArgs),
    /// Wait until a Maildir (new/ + cur/) holds at least N files; print the
    /// Unix time when that was seen.
    WaitFiles {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 1800)]
        timeout_secs: u64,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Latency {
            server,
            rcpt,
            from,
            size,
            cite,
            cite_rcpt,
            stop_file,
            max,
            pause_ms,
            out,
        } => {
            loopback(server)?;
            let spec = LatencySpec {
                rcpts: rcpt,
                from,
                size,
                cite,
                cite_rcpt,
                stop_file,
                max,
                pause: Duration::from_millis(pause_ms),
            };
            let result = latency(server, &spec)?;
            let text = result.to_string();
            match out {
                Some(p) => std::fs::write(&p, text + "\n")
                    .with_context(|| format!("write {}", p.display()))?,
                None => println!("{text}"),
            }
            Ok(())
        }
        Cmd::Send {
            server,
            rcpt,
            from,
            dir,
            sessions,
        } => {
            loopback(server)?;
            send_dir(server, &rcpt, &from, &dir, sessions)
        }
        Cmd::Idle {
            server,
            n,
            ready_file,
            release_file,
            timeout_secs,
        } => {
            loopback(server)?;
            idle(
                server,
                n,
                &ready_file,
                &release_file,
                Duration::from_secs(timeout_secs),
            )
        }
        Cmd::Fill(args) => fill::run(args),
        Cmd::RouteLatency {
            db,
            tokens,
            domain,
            samples,
        } => route_latency(&db, &tokens, &domain, samples),
        Cmd::WaitIngested { db, timeout_secs } => {
            wait_ingested(&db, Duration::from_secs(timeout_secs))
        }
        Cmd::Dns(args) => dnslat::dns(args),
        Cmd::SendMix(args) => dnslat::send_mix(args),
        Cmd::Threaded(args) => dnslat::threaded(args),
        Cmd::WaitFiles {
            dir,
            count,
            timeout_secs,
        } => wait_files(&dir, count, Duration::from_secs(timeout_secs)),
    }
}

fn loopback(addr: SocketAddr) -> Result<()> {
    if !addr.ip().is_loopback() {
        bail!("{addr} is not a loopback address; the benchmark only talks to this machine");
    }
    Ok(())
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A line-oriented SMTP client on a blocking socket.
struct Smtp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Smtp {
    fn connect(addr: SocketAddr) -> Result<Smtp> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .with_context(|| format!("connect {addr}"))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        let writer = s.try_clone()?;
        let mut c = Smtp {
            reader: BufReader::new(s),
            writer,
        };
        c.expect(220)?;
        c.send(b"EHLO client.bench.test\r\n")?;
        c.expect(250)?;
        Ok(c)
    }

    fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.writer.write_all(bytes)?;
        Ok(())
    }

    /// Reads one reply (all its lines); returns its code.
    fn reply(&mut self) -> Result<u16> {
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                bail!("connection closed by the server");
            }
            let code: u16 = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .with_context(|| format!("bad reply line {line:?}"))?;
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(code);
            }
        }
    }

    fn expect(&mut self, want: u16) -> Result<()> {
        let got = self.reply()?;
        if got != want {
            bail!("expected {want}, got {got}");
        }
        Ok(())
    }
}

/// Dot-stuffs `body` (CRLF lines) and appends the terminator.
fn stuffed(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    let mut at_line_start = true;
    for &b in body {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !at_line_start {
        out.extend_from_slice(b"\r\n");
    }
    out
}

struct LatencySpec {
    rcpts: Vec<String>,
    from: String,
    size: usize,
    cite: Vec<String>,
    cite_rcpt: Option<String>,
    stop_file: Option<PathBuf>,
    max: usize,
    pause: Duration,
}

fn message(n: usize, from: &str, to: &str, size: usize, cite: Option<&str>) -> Vec<u8> {
    let pid = std::process::id();
    let mut m = format!(
        "From: Latency Probe <{from}>\r\nTo: <{to}>\r\nSubject: latency probe {n}\r\n\
         Date: Thu, 01 Jan 2026 00:00:00 +0000\r\nMessage-ID: <lat.{pid}.{n}@client.bench.test>\r\n"
    );
    if let Some(id) = cite {
        m.push_str(&format!("In-Reply-To: <{id}>\r\nReferences: <{id}>\r\n"));
    }
    m.push_str("\r\nThanks, the pallet left the warehouse this morning.\r\n\r\n");
    let line = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor\r\n";
    while m.len() < size {
        m.push_str(line);
    }
    m.into_bytes()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(mut v: Vec<f64>) -> serde_json::Value {
    v.sort_by(|a, b| a.total_cmp(b));
    serde_json::json!({
        "n": v.len(),
        "p50_ms": percentile(&v, 50.0),
        "p99_ms": percentile(&v, 99.0),
        "max_ms": v.last().copied().unwrap_or(f64::NAN),
    })
}

fn latency(server: SocketAddr, spec: &LatencySpec) -> Result<serde_json::Value> {
    let mut data_ms = Vec::new();
    let mut rcpt_ms = Vec::new();
    let mut failures = 0usize;
    let mut c = Smtp::connect(server)?;
    let started = Instant::now();
    for n in 0..spec.max {
        if let Some(stop) = &spec.stop_file
            && stop.exists()
        {
            break;
        }
        let cited = match (&spec.cite_rcpt, spec.cite.is_empty()) {
            (Some(r), false) if n % 4 == 3 => {
                Some((r.as_str(), &spec.cite[n / 4 % spec.cite.len()]))
            }
            _ => None,
        };
        let (to, cite) = match cited {
            Some((r, id)) => (r, Some(id.as_str())),
            None => (spec.rcpts[n % spec.rcpts.len()].as_str(), None),
        };
        let body = stuffed(&message(n, &spec.from, to, spec.size, cite));
        let attempt = (|| -> Result<()> {
            c.send(format!("MAIL FROM:<{}>\r\n", spec.from).as_bytes())?;
            c.expect(250)?;
            let t = Instant::now();
            c.send(format!("RCPT TO:<{to}>\r\n").as_bytes())?;
            c.expect(250)?;
            rcpt_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            c.send(b"DATA\r\n")?;
            c.expect(354)?;
            c.send(&body)?;
            let t = Instant::now();
            c.send(b".\r\n")?;
            c.expect(250)?;
            data_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            Ok(())
        })();
        if let Err(e) = attempt {
            failures += 1;
            eprintln!("latency: message {n} failed: {e:#}");
            if failures > 20 {
                bail!("latency client: too many failures");
            }
            c = Smtp::connect(server)?;
        }
        if !spec.pause.is_zero() {
            std::thread::sleep(spec.pause);
        }
    }
    let _ = c.send(b"QUIT\r\n");
    let sent = data_ms.len();
    Ok(serde_json::json!({
        "sent": sent,
        "failures": failures,
        "seconds": started.elapsed().as_secs_f64(),
        "data_to_250": summary(data_ms),
        "rcpt_to_250": summary(rcpt_ms),
    }))
}

fn send_dir(
    server: SocketAddr,
    rcpts: &[String],
    from: &str,
    dir: &Path,
    sessions: usize,
) -> Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let sessions = sessions.max(1);
    let started = Instant::now();
    let mut handles = Vec::new();
    for s in 0..sessions {
        let mine: Vec<(usize, PathBuf)> = files
            .iter()
            .enumerate()
            .filter(|(i, _)| i % sessions == s)
            .map(|(i, p)| (i, p.clone()))
            .collect();
        let rcpts = rcpts.to_vec();
        let from = from.to_string();
        handles.push(std::thread::spawn(move || -> Result<usize> {
            let mut c = Smtp::connect(server)?;
            for (i, path) in &mine {
                let mut raw = Vec::new();
                std::fs::File::open(path)?.read_to_end(&mut raw)?;
                let to = &rcpts[i % rcpts.len()];
                c.send(format!("MAIL FROM:<{from}>\r\nRCPT TO:<{to}>\r\nDATA\r\n").as_bytes())?;
                c.expect(250)?;
                c.expect(250)?;
                c.expect(354)?;
                let mut body = stuffed(&raw);
                body.extend_from_slice(b".\r\n");
                c.send(&body)?;
                c.expect(250)
                    .with_context(|| format!("message {}", path.display()))?;
            }
            c.send(b"QUIT\r\n")?;
            Ok(mine.len())
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h
            .join()
            .map_err(|_| anyhow::anyhow!("a sending thread panicked"))??;
    }
    eprintln!(
        "send: {total} messages in {:.2}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn idle(
    server: SocketAddr,
    n: usize,
    ready_file: &Path,
    release_file: &Path,
    timeout: Duration,
) -> Result<()> {
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        conns.push(Smtp::connect(server).with_context(|| format!("idle connection {i}"))?);
    }
    std::fs::write(ready_file, format!("{n}\n"))?;
    let deadline = Instant::now() + timeout;
    while !release_file.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Every connection must still be alive: a NOOP answered 250.
    let mut alive = 0;
    for c in &mut conns {
        if c.send(b"NOOP\r\n").is_ok() && c.expect(250).is_ok() {
            alive += 1;
        }
        let _ = c.send(b"QUIT\r\n");
    }
    println!("{alive}");
    if alive != n {
        bail!("only {alive} of {n} idle connections were still open");
    }
    Ok(())
}

fn route_latency(db: &Path, tokens: &Path, domain: &str, samples: usize) -> Result<()> {
    use backchannel::smtp::policy;
    let text = std::fs::read_to_string(tokens)?;
    let tokens: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    if tokens.is_empty() {
        bail!("no tokens in the file");
    }
    // As the SMTP session asks: a pooled reader, one read transaction.
    let store = backchannel::store::Store::open(db)?;
    let mut times = Vec::with_capacity(samples);
    // The defaults' quotas: the lookup reads the thread's counters too.
    let mut config = backchannel::config::Config::from_toml_str(
        &format!("domain = \"{domain}\"\n"),
        Vec::new(),
    )?;
    config.ingest = backchannel::config::IngestConfig {
        max_thread_messages: 10_000,
        max_thread_bytes: 1 << 30,
    };
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..samples {
        // xorshift: a spread of tokens, not one cached page.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let token = tokens[(state % tokens.len() as u64) as usize];
        let addr = format!("reply+{token}@{domain}");
        let t = Instant::now();
        let class = policy::classify(&addr, domain);
        let verdict = store.read_blocking(|c| policy::decide(c, &class, &config))?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        if verdict != policy::RcptVerdict::Accept {
            bail!("token {token} was not accepted: {verdict:?}");
        }
    }
    println!("{}", summary(times));
    Ok(())
}

fn wait_ingested(db: &Path, timeout: Duration) -> Result<()> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let deadline = Instant::now() + timeout;
    loop {
        // Cheap on any store size: the (state, id) index holds few 'queued'.
        let queued: i64 = conn.query_row(
            "SELECT COUNT(*) FROM inbound_queue WHERE state = 'queued'",
            [],
            |r| r.get(0),
        )?;
        if queued == 0 {
            println!("{:.3}", unix_now());
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("still {queued} queued after the timeout");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn count_files(dir: &Path) -> usize {
    ["new", "cur"]
        .iter()
        .map(|sub| {
            std::fs::read_dir(dir.join(sub))
                .map(|d| d.count())
                .unwrap_or(0)
        })
        .sum()
}

fn wait_files(dir: &Path, count: usize, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let n = count_files(dir);
        if n >= count {
            println!("{:.3} {n}", unix_now());
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {n} of {count} files after the timeout");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
