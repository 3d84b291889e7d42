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

use backchannel::config::Config;
use backchannel::model::Role;
use backchannel::store::Store;

/// Token of the seeded side conversation; seeds address `reply+<TOKEN>@gw.example.com`.
pub const TOKEN: &str = "abcdefghijklmn23";
/// Gateway domain of every fuzz target.
pub const DOMAIN: &str = "gw.example.com";

/// A gateway's store and config for one fuzzing process.
pub struct Gateway {
    pub rt: tokio::runtime::Runtime,
    pub config: Arc<Config>,
    pub store: Store,
    /// Kept so the directory lives as long as the process.
    pub dir: tempfile::TempDir,
}

fn scratch_dir() -> tempfile::TempDir {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir()
        && let Ok(d) = tempfile::Builder::new()
            .prefix("backchannel-fuzz-")
            .tempdir_in(&shm)
    {
        return d;
    }
    tempfile::Builder::new()
        .prefix("backchannel-fuzz-")
        .tempdir()
        .expect("temporary directory")
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
        let text = config_text(&dir.path().join("data"));
        let config = Config::from_toml_str(&text, Vec::new()).expect("fuzz config");
        let store = Store::open(&config.db_path()).expect("open store");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(store.write(|c| {
            c.execute(
                "INSERT INTO parents (external_id, subject, status, created_at, updated_at)
                 VALUES ('T-fuzz', 'Order 1001', 'open', 0, 0)",
                [],
            )?;
            let parent = c.last_insert_rowid();
            c.execute(
                "INSERT INTO side_conversations
                   (parent_id, token, status, subject, sender_email, created_at, updated_at)
                 VALUES (?1, ?2, 'open', 'Pallet 7 delayed', 'support@acme.com', 0, 0)",
                rusqlite::params![parent, TOKEN],
            )?;
            let sc = c.last_insert_rowid();
            c.execute(
                "INSERT INTO participants (side_conversation_id, email, role, added_at)
                 VALUES (?1, 'vendor@carrier.example', 'to', 0)",
                [sc],
            )?;
            c.execute(
                "INSERT INTO senders (email, forwarding_local, created_at)
                 VALUES ('support@acme.com', 'fwd-fuzz', 0)",
                [],
            )?;
            Ok(())
        }))
        .expect("seed store");
        Gateway {
            rt,
            config: Arc::new(config),
            store,
            dir,
        }
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
