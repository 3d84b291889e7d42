//! Delivery of one outbound message to one recipient, in the three modes of
//! `outbound.mode` behind the small [`Deliver`] trait: `maildir` (write a
//! file), `relay` (lettre SMTP to a smarthost), `mx` (MX lookup with
//! hickory-resolver, then SMTP to the recipient's mail hosts).
//!
//! Every mode sends the stored raw bytes unchanged, with the VERP envelope
//! sender `bounce+<verp key>@<gateway domain>` and exactly one recipient.
//!
//! **maildir** writes `<data_dir>/sent/new/<queued ms>.<verp key>.<host>`
//! the way a local delivery agent does: written under `tmp/`, fsync'd,
//! renamed into `new/`, the directory fsync'd. The file starts with two
//! lines a delivery agent adds, `Return-Path: <bounce+KEY@domain>` and
//! `Delivered-To: recipient`, followed by the raw bytes exactly as stored
//! (the two lines end like the message's first line, CRLF or LF). The name
//! is the same for every attempt of one recipient row, so a retry after an
//! attempt whose outcome was lost (say, cut off by the timeout after the
//! rename) finds the file in `new/` and does not write a second one; a file
//! a mail reader already moved to `cur/` is found by the start-up check.
//!
//! **relay** uses one lettre transport (pooled connections) to the host of
//! `outbound.relay_url`: `smtp://` upgrades with STARTTLS when the relay
//! offers it (and then a failed handshake is an error, never a downgrade;
//! a relay that does not offer STARTTLS gets the mail — and the AUTH
//! credentials — in clear: use `?starttls=required` off loopback),
//! `?starttls=required` insists, `smtps://` is TLS from the first byte;
//! AUTH PLAIN or LOGIN when the URL has credentials. lettre's own timeout
//! only bounds the connect, so each send runs under `outbound.send_timeout`;
//! a send cut off by it may leave its pooled connection mid-transaction, so
//! the transport is then replaced and the old pool shut down.
//!
//! **mx** resolves the recipient domain's MX records through the configured
//! resolver (`dns.nameservers`), most preferred first (equal preferences in
//! random order, RFC 5321 §5.1); without MX records the domain itself is
//! the host (implicit MX). A null MX (RFC 7505), a domain that does not
//! exist or has neither MX nor address records fails permanently. Each host
//! address is tried on `outbound.mx_port`, at most `outbound.per_host_concurrency`
//! sessions per host at a time; a temporary failure moves on to the next
//! address or host, a permanent one ends the attempt. TLS is opportunistic
//! (RFC 7435): STARTTLS when offered, certificates checked against the
//! native roots; if the upgrade fails (handshake, certificate, or the
//! STARTTLS command refused) the same host is tried again in clear, since
//! unencrypted delivery is what a sender without a TLS policy (no MTA-STS,
//! no DANE) may fall back to. Each host session, including the wait for a
//! session slot on that host, is bounded by `outbound.send_timeout`.
//! Internal addresses (loopback, private, link-local …, `crate::egress`)
//! are never connected to unless `outbound.allow_destinations` lists them
//! (by range, or the recipient domain or MX host by name): they are
//! skipped, and a recipient left with no permitted address fails for good
//! with `destination refused: …`. The relay of mode `relay` is the admin's
//! own configuration and is not checked.
//!
//! What a remote server says reaches `last_error` only as its reply code,
//! enhanced code and a bounded text without control characters
//! ([`DeliveryError::reply`]); an answer that is not SMTP at all is
//! reported as such, never quoted.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use lettre::address::{Address, Envelope};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::{AsyncSmtpTransport, PoolConfig};
use lettre::{AsyncTransport, Tokio1Executor};
use mail_auth::hickory_resolver::TokioResolver;
use mail_auth::hickory_resolver::net::NetError;
use mail_auth::hickory_resolver::proto::rr::{Name, RData};
use rand::seq::SliceRandom;
use tokio::sync::Semaphore;

use super::retry::{Class, DeliveryError, DnsFailure, classify};
use crate::config::{Config, OutboundMode, RelayTls, RelayUrl};
use crate::egress::{AllowList, Refusal, remote_text};
use crate::net::dns::Cache;

/// A boxed future, so that [`Deliver`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Sessions the relay pool keeps open (the worker sends at most this many
/// messages at once anyway).
const RELAY_POOL_SIZE: u32 = 8;
/// Host addresses tried per attempt in mode `mx`.
const MAX_MX_ADDRESSES: usize = 8;
/// DNS queries one MX resolution may take (the MX query, then one address
/// query per host), each bounded by `dns.timeout` × this many tries.
const DNS_TRIES: u32 = 3;
/// Responses kept by the MX resolver's cache.
const DNS_CACHE_SIZE: u64 = 1024;

/// One recipient's copy of an outbound message.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub verp_key: String,
    pub recipient: String,
    /// The stored raw bytes, sent unchanged.
    pub raw: Vec<u8>,
    /// When the outbox row was queued (ms); names the maildir file.
    pub queued_at: i64,
}

/// A delivery mode.
pub trait Deliver: Send + Sync {
    /// Delivers one message to one recipient; `Ok` carries a short
    /// description for the log (the remote's reply, or the file name).
    fn deliver<'a>(&'a self, message: &'a Outgoing)
    -> BoxFuture<'a, Result<String, DeliveryError>>;

    /// The longest one [`deliver`](Self::deliver) may take; the worker cuts
    /// it off after that (a safety net: each mode bounds itself).
    fn max_duration(&self) -> Duration;

    /// Of the VERP keys of rows a crash left in `sending`, those this mode
    /// can prove were delivered. A remote delivery cannot be checked, so the
    /// default proves none (the rows are sent again: at least once).
    fn delivered<'a>(
        &'a self,
        keys: &'a [String],
    ) -> BoxFuture<'a, std::io::Result<HashSet<String>>> {
        let _ = keys;
        Box::pin(async { Ok(HashSet::new()) })
    }
}

/// The deliverer of `outbound.mode`.
pub fn from_config(config: &Config) -> anyhow::Result<Arc<dyn Deliver>> {
    let o = &config.outbound;
    Ok(match o.mode {
        OutboundMode::Maildir => Arc::new(
            Maildir::new(
                &config.data_dir.join("sent"),
                &config.domain,
                &config.smtp.hostname,
                o.send_timeout,
            )
            .context("creating the sent maildir")?,
        ),
        OutboundMode::Relay => {
            let url = o
                .relay
                .clone()
                .context("outbound.relay_url is required when outbound.mode is relay")?;
            Arc::new(Relay::new(
                url,
                &config.domain,
                &config.smtp.hostname,
                o.send_timeout,
            )?)
        }
        OutboundMode::Mx => Arc::new(Mx::new(config)?),
    })
}

/// `bounce+<key>@<domain>`.
pub fn envelope_sender(verp_key: &str, domain: &str) -> String {
    format!("bounce+{verp_key}@{domain}")
}

/// The SMTP envelope: VERP sender, exactly one recipient.
fn envelope(message: &Outgoing, domain: &str) -> Result<Envelope, DeliveryError> {
    let from = Address::from_str(&envelope_sender(&message.verp_key, domain))
        .map_err(|e| DeliveryError::Local(format!("envelope sender: {e}")))?;
    let to = Address::from_str(&message.recipient)
        .map_err(|e| DeliveryError::Unsendable(format!("recipient address: {e}")))?;
    Envelope::new(Some(from), vec![to]).map_err(|e| DeliveryError::Unsendable(e.to_string()))
}

fn hello_name(hostname: &str) -> ClientId {
    match hostname.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ClientId::Ipv4(ip),
        Ok(IpAddr::V6(ip)) => ClientId::Ipv6(ip),
        Err(_) => ClientId::Domain(hostname.to_string()),
    }
}

/// Maps a lettre error onto the classifier's vocabulary.
fn from_lettre(e: lettre::transport::smtp::Error) -> DeliveryError {
    if let Some(code) = e.status() {
        let text = std::error::Error::source(&e)
            .map(|s| s.to_string())
            .unwrap_or_default();
        return DeliveryError::reply(code.to_string().parse().unwrap_or(0), &text);
    }
    if let Some(tls) = tls_cause(&e) {
        DeliveryError::Tls(remote_text(&tls))
    } else if e.is_tls() {
        DeliveryError::Tls(remote_text(&e.to_string()))
    } else if e.is_response() {
        // lettre's parse error quotes what it could not parse: the
        // remote's bytes (an internal web server's page, say).
        DeliveryError::Protocol("the server's answer is not a valid SMTP reply".into())
    } else if e.is_client() {
        DeliveryError::Protocol(remote_text(&e.to_string()))
    } else {
        DeliveryError::Connection(remote_text(&e.to_string()))
    }
}

/// What to hand lettre so the remote receives exactly `raw`: lettre ends
/// the data with `CRLF . CRLF` after the bytes it is given, so a message
/// that already ends with CRLF loses that one (a message without a final
/// CRLF gets one: SMTP cannot carry it otherwise).
fn smtp_body(raw: &[u8]) -> &[u8] {
    raw.strip_suffix(b"\r\n").unwrap_or(raw)
}

/// The TLS failure behind a lettre error, if one is: lettre reports a
/// failed STARTTLS handshake as a connection error.
fn tls_cause(e: &lettre::transport::smtp::Error) -> Option<String> {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(inner.to_string());
        }
        source = err.source();
    }
    None
}

fn reply_text(response: &lettre::transport::smtp::response::Response) -> String {
    let lines: Vec<&str> = response.message().collect();
    format!("{} {}", response.code(), remote_text(&lines.join(" ")))
}

// ---------------------------------------------------------------------------
// maildir

/// Writes each message into a Maildir (`tmp/`, `new/`, `cur/`).
#[derive(Debug, Clone)]
pub struct Maildir {
    root: PathBuf,
    domain: String,
    /// The host part of file names (`/` and `:` escaped as Maildir asks).
    host: String,
    timeout: Duration,
}

impl Maildir {
    /// Creates `root/{tmp,new,cur}` when missing.
    pub fn new(
        root: &Path,
        domain: &str,
        hostname: &str,
        timeout: Duration,
    ) -> std::io::Result<Maildir> {
        for sub in ["tmp", "new", "cur"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        Ok(Maildir {
            root: root.to_path_buf(),
            domain: domain.to_string(),
            host: hostname.replace('/', "\\057").replace(':', "\\072"),
            timeout,
        })
    }

    /// The file name of one recipient row: the same for every attempt.
    pub fn file_name(&self, queued_at: i64, verp_key: &str) -> String {
        format!("{queued_at}.{verp_key}.{}", self.host)
    }

    /// The VERP key in a file name of ours (`<ms>.<key>.<host>[:2,flags]`).
    pub fn key_of(file_name: &str) -> Option<&str> {
        let mut parts = file_name.split('.');
        let time = parts.next()?;
        let key = parts.next()?;
        (!time.is_empty() && time.bytes().all(|b| b.is_ascii_digit()) && !key.is_empty())
            .then_some(key)
    }

    /// Every VERP key with a file in `new/` or `cur/`.
    pub fn delivered_keys(&self) -> std::io::Result<HashSet<String>> {
        let mut keys = HashSet::new();
        for sub in ["new", "cur"] {
            for entry in std::fs::read_dir(self.root.join(sub))? {
                let name = entry?.file_name();
                if let Some(key) = name.to_str().and_then(Maildir::key_of) {
                    keys.insert(key.to_string());
                }
            }
        }
        Ok(keys)
    }

    /// The file's contents: the delivery agent's two lines, then the raw
    /// message unchanged.
    pub fn contents(&self, message: &Outgoing) -> Vec<u8> {
        let eol: &[u8] = match message.raw.iter().position(|b| *b == b'\n') {
            Some(i) if i > 0 && message.raw[i - 1] == b'\r' => b"\r\n",
            Some(_) => b"\n",
            None => b"\r\n",
        };
        let mut out = Vec::with_capacity(message.raw.len() + 128);
        out.extend_from_slice(b"Return-Path: <");
        out.extend_from_slice(envelope_sender(&message.verp_key, &self.domain).as_bytes());
        out.extend_from_slice(b">");
        out.extend_from_slice(eol);
        out.extend_from_slice(b"Delivered-To: ");
        out.extend_from_slice(message.recipient.as_bytes());
        out.extend_from_slice(eol);
        out.extend_from_slice(&message.raw);
        out
    }

    fn write(&self, message: &Outgoing) -> std::io::Result<String> {
        let name = self.file_name(message.queued_at, &message.verp_key);
        let new = self.root.join("new").join(&name);
        if new.exists() {
            return Ok(name);
        }
        let tmp = self.root.join("tmp").join(&name);
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&self.contents(message))?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, &new)?;
        // The rename is durable only once the directory is.
        std::fs::File::open(self.root.join("new"))?.sync_all()?;
        Ok(name)
    }
}

fn check_header_safe(recipient: &str) -> Result<(), DeliveryError> {
    if recipient.is_empty()
        || recipient
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(DeliveryError::Unsendable(format!(
            "recipient address {recipient:?} is not usable"
        )));
    }
    Ok(())
}

impl Deliver for Maildir {
    fn deliver<'a>(
        &'a self,
        message: &'a Outgoing,
    ) -> BoxFuture<'a, Result<String, DeliveryError>> {
        Box::pin(async move {
            check_header_safe(&message.recipient)?;
            let this = self.clone();
            let message = message.clone();
            let work = tokio::task::spawn_blocking(move || this.write(&message));
            match tokio::time::timeout(self.timeout, work).await {
                Ok(Ok(Ok(name))) => Ok(format!("written to sent/new/{name}")),
                Ok(Ok(Err(e))) => Err(DeliveryError::Local(format!("maildir: {e}"))),
                Ok(Err(e)) => Err(DeliveryError::Local(format!("maildir task: {e}"))),
                Err(_) => Err(DeliveryError::Timeout(self.timeout)),
            }
        })
    }

    fn max_duration(&self) -> Duration {
        self.timeout
    }

    fn delivered<'a>(
        &'a self,
        keys: &'a [String],
    ) -> BoxFuture<'a, std::io::Result<HashSet<String>>> {
        Box::pin(async move {
            let this = self.clone();
            let found = tokio::task::spawn_blocking(move || this.delivered_keys())
                .await
                .map_err(std::io::Error::other)??;
            Ok(keys
                .iter()
                .filter(|k| found.contains(*k))
                .cloned()
                .collect())
        })
    }
}

// ---------------------------------------------------------------------------
// relay

type Transport = AsyncSmtpTransport<Tokio1Executor>;

/// Sends through one smarthost.
pub struct Relay {
    url: RelayUrl,
    hello: ClientId,
    domain: String,
    timeout: Duration,
    transport: Mutex<Arc<Transport>>,
}

impl Relay {
    pub fn new(
        url: RelayUrl,
        domain: &str,
        hostname: &str,
        timeout: Duration,
    ) -> anyhow::Result<Relay> {
        let hello = hello_name(hostname);
        let transport = Arc::new(build_transport(&url, &hello, timeout)?);
        Ok(Relay {
            url,
            hello,
            domain: domain.to_string(),
            timeout,
            transport: Mutex::new(transport),
        })
    }

    fn current(&self) -> Result<Arc<Transport>, DeliveryError> {
        self.transport
            .lock()
            .map(|t| t.clone())
            .map_err(|_| DeliveryError::Local("relay transport lock poisoned".into()))
    }

    /// Replaces `old` (if it is still current) by a fresh transport and
    /// shuts the old pool down, so no connection a cancelled send left
    /// mid-transaction is used again. (lettre closes pooled connections
    /// with QUIT and waits for the reply; against a relay gone silent that
    /// background wait ends only when the relay drops the connection.)
    fn replace(&self, old: &Arc<Transport>) {
        let fresh = match build_transport(&self.url, &self.hello, self.timeout) {
            Ok(t) => Arc::new(t),
            Err(e) => {
                tracing::error!(error = %e, "outbound: cannot rebuild the relay transport");
                return;
            }
        };
        if let Ok(mut current) = self.transport.lock()
            && Arc::ptr_eq(&current, old)
        {
            *current = fresh;
            let old = old.clone();
            tokio::spawn(async move { old.shutdown().await });
        }
    }
}

fn build_transport(
    url: &RelayUrl,
    hello: &ClientId,
    timeout: Duration,
) -> anyhow::Result<Transport> {
    let params =
        || TlsParameters::new(url.host.clone()).context("building the TLS parameters of the relay");
    let tls = match url.tls {
        RelayTls::StartTlsIfOffered => Tls::Opportunistic(params()?),
        RelayTls::StartTlsRequired => Tls::Required(params()?),
        RelayTls::Implicit => Tls::Wrapper(params()?),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(url.host.clone())
        .port(url.port)
        .tls(tls)
        .hello_name(hello.clone())
        .timeout(Some(timeout))
        .pool_config(PoolConfig::new().max_size(RELAY_POOL_SIZE));
    if let Some(user) = &url.username {
        builder = builder
            .credentials(Credentials::new(
                user.clone(),
                url.password.clone().unwrap_or_default(),
            ))
            .authentication(vec![Mechanism::Plain, Mechanism::Login]);
    }
    Ok(builder.build())
}

/// The relay refusing our credentials (or asking for some) is a fault of
/// our configuration, not of the recipient: temporary, as an MTA defers on
/// a failed SASL login, so fixing the password lets the queue drain.
fn relay_error(e: DeliveryError) -> DeliveryError {
    match &e {
        DeliveryError::Reply {
            code: 530 | 534 | 535 | 538,
            ..
        } => DeliveryError::Local(format!("relay authentication: {e}")),
        _ => e,
    }
}

impl Deliver for Relay {
    fn deliver<'a>(
        &'a self,
        message: &'a Outgoing,
    ) -> BoxFuture<'a, Result<String, DeliveryError>> {
        Box::pin(async move {
            let envelope = envelope(message, &self.domain)?;
            let transport = self.current()?;
            match tokio::time::timeout(
                self.timeout,
                transport.send_raw(&envelope, smtp_body(&message.raw)),
            )
            .await
            {
                Ok(Ok(response)) => Ok(reply_text(&response)),
                Ok(Err(e)) => Err(relay_error(from_lettre(e))),
                Err(_) => {
                    self.replace(&transport);
                    Err(DeliveryError::Timeout(self.timeout))
                }
            }
        })
    }

    fn max_duration(&self) -> Duration {
        self.timeout
    }
}

// ---------------------------------------------------------------------------
// mx

/// Sends straight to the recipient domain's mail hosts.
pub struct Mx {
    resolver: TokioResolver,
    dns_timeout: Duration,
    port: u16,
    hello: ClientId,
    domain: String,
    timeout: Duration,
    per_host: usize,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// `outbound.allow_destinations`.
    allow: AllowList,
}

/// One mail host of a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailHost {
    /// A host name, to resolve.
    Name(String),
    /// An address literal (`bob@[192.0.2.1]`).
    Literal(IpAddr),
}

fn fqdn(name: &str) -> Result<Name, DeliveryError> {
    let mut n = Name::from_utf8(name).map_err(|e| {
        DeliveryError::Unsendable(format!("recipient domain {name:?} is not a domain: {e}"))
    })?;
    n.set_fqdn(true);
    Ok(n)
}

fn dns_error(failure: DnsFailure, detail: impl Into<String>) -> DeliveryError {
    DeliveryError::Dns {
        failure,
        detail: detail.into(),
    }
}

/// The recipient's domain, lowercased; an address literal as an address.
pub fn recipient_domain(recipient: &str) -> Result<MailHost, DeliveryError> {
    let domain = recipient
        .rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('.'))
        .filter(|d| !d.is_empty())
        .ok_or_else(|| DeliveryError::Unsendable(format!("{recipient:?} has no domain")))?;
    if let Some(literal) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        let ip = literal.strip_prefix("IPv6:").unwrap_or(literal);
        return ip.parse().map(MailHost::Literal).map_err(|_| {
            DeliveryError::Unsendable(format!("{domain:?} is not an address literal"))
        });
    }
    Ok(MailHost::Name(domain.to_ascii_lowercase()))
}

/// Orders MX records (preference, exchange) for delivery: a null MX (RFC
/// 7505, exchange `.`) anywhere means the domain takes no mail; otherwise
/// most preferred first, ties shuffled with `shuffle`. Pure.
pub fn order_mx(
    mut records: Vec<(u16, String)>,
    shuffle: impl Fn(&mut [(u16, String)]),
) -> Result<Vec<String>, DeliveryError> {
    if records
        .iter()
        .any(|(_, host)| host.is_empty() || host == ".")
    {
        return Err(dns_error(DnsFailure::NullMx, ""));
    }
    records.sort_by_key(|(pref, _)| *pref);
    let mut ordered = Vec::with_capacity(records.len());
    for group in records.chunk_by_mut(|a, b| a.0 == b.0) {
        shuffle(group);
        ordered.extend(group.iter().map(|(_, h)| h.clone()));
    }
    ordered.dedup();
    Ok(ordered)
}

impl Mx {
    pub fn new(config: &Config) -> anyhow::Result<Mx> {
        Ok(Mx {
            resolver: crate::net::dns::resolver(&config.dns, Cache::of(DNS_CACHE_SIZE))?,
            dns_timeout: config.dns.timeout.saturating_mul(DNS_TRIES),
            port: config.outbound.mx_port,
            hello: hello_name(&config.smtp.hostname),
            domain: config.domain.clone(),
            timeout: config.outbound.send_timeout,
            per_host: config.outbound.per_host_concurrency,
            hosts: Mutex::new(HashMap::new()),
            allow: config.outbound.allow_destinations.clone(),
        })
    }

    async fn dns<T>(
        &self,
        what: &str,
        lookup: impl Future<Output = Result<T, NetError>>,
    ) -> Result<Result<T, NetError>, DeliveryError> {
        tokio::time::timeout(self.dns_timeout, lookup)
            .await
            .map_err(|_| dns_error(DnsFailure::Temporary, format!("{what}: no answer in time")))
    }

    /// The mail hosts of `domain`, in the order to try them, and whether
    /// they are implicit (no MX records: the domain is its own host).
    async fn mail_hosts(&self, domain: &str) -> Result<(Vec<String>, bool), DeliveryError> {
        let name = fqdn(domain)?;
        match self.dns(domain, self.resolver.mx_lookup(name)).await? {
            Ok(lookup) => {
                let records: Vec<(u16, String)> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::MX(mx) => Some((
                            mx.preference,
                            if mx.exchange.is_root() {
                                String::new()
                            } else {
                                mx.exchange
                                    .to_ascii()
                                    .trim_end_matches('.')
                                    .to_ascii_lowercase()
                            },
                        )),
                        _ => None,
                    })
                    .collect();
                if records.is_empty() {
                    return Ok((vec![domain.to_string()], true));
                }
                Ok((
                    order_mx(records, |group| group.shuffle(&mut rand::rng()))?,
                    false,
                ))
            }
            Err(e) if e.is_nx_domain() => Err(dns_error(DnsFailure::NxDomain, domain)),
            // The domain exists without MX records: it is its own mail host.
            Err(e) if e.is_no_records_found() => Ok((vec![domain.to_string()], true)),
            Err(e) => Err(dns_error(
                DnsFailure::Temporary,
                format!("MX {domain}: {e}"),
            )),
        }
    }

    /// The addresses of one mail host. `implicit`: the host is the
    /// recipient domain itself (no MX), so no address means no mail domain.
    async fn addresses(&self, host: &str, implicit: bool) -> Result<Vec<IpAddr>, DeliveryError> {
        let name = fqdn(host)?;
        match self.dns(host, self.resolver.lookup_ip(name)).await? {
            Ok(lookup) => {
                let ips: Vec<IpAddr> = lookup.iter().collect();
                if ips.is_empty() && implicit {
                    return Err(dns_error(DnsFailure::NoMailHosts, host));
                }
                Ok(ips)
            }
            Err(e) if implicit && e.is_nx_domain() => Err(dns_error(DnsFailure::NxDomain, host)),
            Err(e) if implicit && e.is_no_records_found() => {
                Err(dns_error(DnsFailure::NoMailHosts, host))
            }
            Err(e) if e.is_no_records_found() => Err(dns_error(
                DnsFailure::Temporary,
                format!("mail host {host} has no address"),
            )),
            Err(e) => Err(dns_error(DnsFailure::Temporary, format!("{host}: {e}"))),
        }
    }

    fn semaphore(&self, host: &str) -> Result<Arc<Semaphore>, DeliveryError> {
        let mut hosts = self
            .hosts
            .lock()
            .map_err(|_| DeliveryError::Local("per-host limits lock poisoned".into()))?;
        if let Some(s) = hosts.get(host) {
            return Ok(s.clone());
        }
        // Forget hosts nobody is talking to, so the map stays small.
        hosts.retain(|_, s| Arc::strong_count(s) > 1);
        let s = Arc::new(Semaphore::new(self.per_host));
        hosts.insert(host.to_string(), s.clone());
        Ok(s)
    }

    /// One SMTP session with one address of `host`, STARTTLS when offered
    /// and falling back to clear text when the upgrade fails.
    async fn session(
        &self,
        ip: IpAddr,
        host: &str,
        envelope: &Envelope,
        raw: &[u8],
    ) -> Result<String, DeliveryError> {
        let addr = SocketAddr::new(ip, self.port);
        let connect = || {
            AsyncSmtpConnection::connect_tokio1(addr, Some(self.timeout), &self.hello, None, None)
        };
        let mut conn = connect().await.map_err(from_lettre)?;
        if conn.can_starttls() {
            let upgraded = match TlsParameters::new(host.to_string()) {
                Ok(params) => conn
                    .starttls(params, &self.hello)
                    .await
                    .map_err(from_lettre),
                Err(e) => Err(from_lettre(e)),
            };
            if let Err(e) = upgraded {
                tracing::info!(host, %ip, error = %e, "outbound: STARTTLS failed; retrying in clear (RFC 7435)");
                // Dropped, not aborted: after a failed handshake lettre's
                // stream is gone and writing QUIT to it would panic.
                drop(conn);
                conn = connect().await.map_err(from_lettre)?;
            }
        }
        let tls = conn.is_encrypted();
        let sent = conn
            .send(envelope, smtp_body(raw))
            .await
            .map_err(from_lettre);
        match sent {
            Ok(response) => {
                let _ = conn.quit().await;
                Ok(format!(
                    "{host} [{ip}]{}: {}",
                    if tls { " (TLS)" } else { "" },
                    reply_text(&response)
                ))
            }
            Err(e) => Err(e),
        }
    }

    /// The addresses of `host` that may be connected to (SPEC §10): all of
    /// them when the recipient domain is listed by name in
    /// `outbound.allow_destinations`, else those not internal or allowed.
    fn permitted(
        &self,
        host: &str,
        ips: Vec<IpAddr>,
        domain_allowed: bool,
        literal: bool,
    ) -> Result<Vec<IpAddr>, Refusal> {
        if domain_allowed {
            return Ok(ips);
        }
        if literal {
            for ip in &ips {
                self.allow.check_ip(*ip)?;
            }
            return Ok(ips);
        }
        let permitted = self.allow.check_resolved(host, &ips)?;
        if permitted.len() < ips.len() {
            tracing::info!(
                host,
                refused = ips.len() - permitted.len(),
                "outbound: internal addresses of the mail host skipped"
            );
        }
        Ok(permitted)
    }

    async fn deliver_mx(&self, message: &Outgoing) -> Result<String, DeliveryError> {
        let envelope = envelope(message, &self.domain)?;
        let target = recipient_domain(&message.recipient)?;
        let domain_allowed = matches!(&target, MailHost::Name(d) if self.allow.allows_name(d));
        let (hosts, implicit) = match target {
            MailHost::Literal(ip) => (vec![(ip.to_string(), vec![ip])], true),
            MailHost::Name(domain) => {
                let (names, implicit) = self.mail_hosts(&domain).await?;
                let mut hosts = Vec::with_capacity(names.len());
                for name in names {
                    hosts.push((name, Vec::new()));
                }
                (hosts, implicit)
            }
        };
        let mut last_error = None;
        let mut refused = None;
        let mut tried = 0;
        'hosts: for (host, literal) in hosts {
            let is_literal = !literal.is_empty();
            let ips = if literal.is_empty() {
                match self.addresses(&host, implicit).await {
                    Ok(ips) => ips,
                    Err(e) if classify(&e) == Class::Permanent => return Err(e),
                    Err(e) => {
                        last_error = Some(e);
                        continue;
                    }
                }
            } else {
                literal
            };
            let ips = match self.permitted(&host, ips, domain_allowed, is_literal) {
                Ok(ips) => ips,
                Err(r) => {
                    tracing::warn!(host, refusal = %r, "outbound: mail host refused");
                    refused.get_or_insert(r);
                    continue;
                }
            };
            for ip in ips {
                if tried == MAX_MX_ADDRESSES {
                    break 'hosts;
                }
                tried += 1;
                let limit = self.semaphore(&host)?;
                let attempt = async {
                    let _permit = limit
                        .acquire()
                        .await
                        .map_err(|_| DeliveryError::Local("per-host limit closed".into()))?;
                    self.session(ip, &host, &envelope, &message.raw).await
                };
                let outcome = tokio::time::timeout(self.timeout, attempt)
                    .await
                    .unwrap_or(Err(DeliveryError::Timeout(self.timeout)));
                match outcome {
                    Ok(done) => return Ok(done),
                    Err(e) => {
                        let e = DeliveryError::Remote {
                            host: format!("{host} [{ip}]"),
                            error: Box::new(e),
                        };
                        if classify(&e) == Class::Permanent {
                            return Err(e);
                        }
                        tracing::info!(host, %ip, error = %e, "outbound: mail host failed; trying the next");
                        last_error = Some(e);
                    }
                }
            }
        }
        // A temporary failure elsewhere is worth a retry; hosts that were
        // all refused are not.
        Err(last_error
            .or_else(|| refused.map(|r| DeliveryError::Refused(r.to_string())))
            .unwrap_or_else(|| dns_error(DnsFailure::Temporary, "no mail host could be reached")))
    }
}

impl Deliver for Mx {
    fn deliver<'a>(
        &'a self,
        message: &'a Outgoing,
    ) -> BoxFuture<'a, Result<String, DeliveryError>> {
        Box::pin(self.deliver_mx(message))
    }

    fn max_duration(&self) -> Duration {
        // The MX query, one address query per host, one session per address.
        let dns = self.dns_timeout.saturating_mul(1 + MAX_MX_ADDRESSES as u32);
        dns.saturating_add(self.timeout.saturating_mul(MAX_MX_ADDRESSES as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mx_ordering() {
        let no_shuffle = |_: &mut [(u16, String)]| {};
        let rec = |p: u16, h: &str| (p, h.to_string());
        type Case = (Vec<(u16, String)>, Result<Vec<&'static str>, DnsFailure>);
        let cases: Vec<Case> = vec![
            (
                vec![rec(20, "mx2.v.example"), rec(10, "mx1.v.example")],
                Ok(vec!["mx1.v.example", "mx2.v.example"]),
            ),
            (
                vec![
                    rec(10, "a.v.example"),
                    rec(5, "b.v.example"),
                    rec(10, "a.v.example"),
                ],
                Ok(vec!["b.v.example", "a.v.example"]),
            ),
            (vec![rec(0, "")], Err(DnsFailure::NullMx)),
            (
                vec![rec(0, "."), rec(10, "mx.v.example")],
                Err(DnsFailure::NullMx),
            ),
        ];
        for (records, want) in cases {
            let got = order_mx(records.clone(), no_shuffle);
            match (got, want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{records:?}"),
                (Err(DeliveryError::Dns { failure, .. }), Err(want)) => {
                    assert_eq!(failure, want, "{records:?}")
                }
                (got, want) => panic!("{records:?}: got {got:?}, want {want:?}"),
            }
        }
        // ties are shuffled, preferences never cross
        let reversed = order_mx(
            vec![rec(10, "a"), rec(10, "b"), rec(20, "c")],
            |g: &mut [(u16, String)]| g.reverse(),
        );
        assert_eq!(
            reversed.ok(),
            Some(vec!["b".into(), "a".into(), "c".into()])
        );
    }

    #[test]
    fn recipient_domains() {
        assert_eq!(
            recipient_domain("Bob@Vendor.Example.").ok(),
            Some(MailHost::Name("vendor.example".into()))
        );
        assert_eq!(
            recipient_domain("bob@[127.0.0.1]").ok(),
            Some(MailHost::Literal([127, 0, 0, 1].into()))
        );
        assert_eq!(
            recipient_domain("bob@[IPv6:::1]").ok(),
            Some(MailHost::Literal(std::net::Ipv6Addr::LOCALHOST.into()))
        );
        for bad in ["bob", "bob@", "bob@[nope]"] {
            assert!(
                matches!(recipient_domain(bad), Err(DeliveryError::Unsendable(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn maildir_names_and_contents() {
        let dir = std::env::temp_dir().join(format!(
            "bc-maildir-{}",
            crate::model::base32_lower(&crate::model::random_bytes::<5>())
        ));
        let m = Maildir::new(&dir, "gw.example.com", "mx:1/a", Duration::from_secs(5))
            .expect("maildir");
        let name = m.file_name(1700000000000, "abcdefghijklmnop");
        assert_eq!(name, "1700000000000.abcdefghijklmnop.mx\\0721\\057a");
        assert_eq!(Maildir::key_of(&name), Some("abcdefghijklmnop"));
        assert_eq!(
            Maildir::key_of(&format!("{name}:2,S")),
            Some("abcdefghijklmnop")
        );
        assert_eq!(Maildir::key_of("notours"), None);
        assert_eq!(Maildir::key_of("x.y.z"), None);

        let crlf = Outgoing {
            verp_key: "abcdefghijklmnop".into(),
            recipient: "bob@vendor.example".into(),
            raw: b"Subject: hi\r\n\r\nbody\r\n".to_vec(),
            queued_at: 1,
        };
        assert_eq!(
            m.contents(&crlf),
            b"Return-Path: <bounce+abcdefghijklmnop@gw.example.com>\r\nDelivered-To: bob@vendor.example\r\nSubject: hi\r\n\r\nbody\r\n"
        );
        let lf = Outgoing {
            raw: b"Subject: hi\n\nbody\n".to_vec(),
            ..crlf.clone()
        };
        assert!(m.contents(&lf).starts_with(
            b"Return-Path: <bounce+abcdefghijklmnop@gw.example.com>\nDelivered-To: bob@vendor.example\nSubject"
        ));

        // written once; a second attempt finds the file
        assert_eq!(
            m.write(&crlf).expect("write"),
            m.file_name(1, "abcdefghijklmnop")
        );
        assert_eq!(
            m.write(&crlf).expect("again"),
            m.file_name(1, "abcdefghijklmnop")
        );
        assert_eq!(std::fs::read_dir(dir.join("new")).expect("new").count(), 1);
        assert_eq!(std::fs::read_dir(dir.join("tmp")).expect("tmp").count(), 0);
        assert!(
            m.delivered_keys()
                .expect("keys")
                .contains("abcdefghijklmnop")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
