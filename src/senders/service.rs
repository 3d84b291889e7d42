//! Sender addresses (SPEC §6): adding one gives it an unguessable
//! forwarding address on the gateway domain and sends a verification mail
//! with a 6-digit code through the outbox. The sender turns `verified` when
//! the admin enters the code (limited attempts, expiry), or by itself when
//! that mail comes back through forwarding (ingest, routing rule 3), which
//! also proves forwarding works. A probe re-tests forwarding on demand.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::model::{
    MailAddr, NewSenderRow, PendingCode, base32_lower, is_valid_email, now_ms, random_bytes,
    rfc3339, verification_message_id,
};
use crate::outbound::compose::{ReplyMode, clean_header};
use crate::store::Db;
use crate::store::{self, StoreError, events, outbox};

/// How long a verification code is valid.
pub const CODE_TTL_MS: i64 = 24 * 3600 * 1000;
/// Wrong codes allowed before a new code must be sent.
pub const MAX_CODE_ATTEMPTS: i64 = 5;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SenderError {
    #[error("sender not found")]
    NotFound,
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Store(String),
}

impl From<StoreError> for SenderError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => SenderError::NotFound,
            StoreError::Conflict(m) => SenderError::Conflict(m),
            other => SenderError::Store(other.to_string()),
        }
    }
}

fn invalid(field: &str, message: impl Into<String>) -> SenderError {
    SenderError::Invalid {
        field: field.to_string(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Default)]
pub struct NewSender {
    pub email: String,
    pub name: String,
    pub reply_mode: Option<String>,
    pub signature_text: Option<String>,
    pub signature_html: Option<String>,
    /// `rsa` (default) or `ed25519`, for the domain's DKIM key when it has
    /// none yet; naming the other type than an existing key's is refused.
    pub dkim_algorithm: Option<String>,
}

fn dkim_algorithm(new: &NewSender) -> Result<super::dkim::Algorithm, SenderError> {
    match new.dkim_algorithm.as_deref().unwrap_or("rsa") {
        "rsa" => Ok(super::dkim::Algorithm::Rsa2048),
        "ed25519" => Ok(super::dkim::Algorithm::Ed25519),
        _ => Err(invalid("dkim_algorithm", "expected rsa or ed25519")),
    }
}

/// "an RSA-2048" / "an Ed25519", for messages.
fn key_type(algorithm: super::dkim::Algorithm) -> &'static str {
    match algorithm {
        super::dkim::Algorithm::Rsa2048 => "an RSA-2048",
        super::dkim::Algorithm::Ed25519 => "an Ed25519",
    }
}

fn code_hash(email: &str, code: &str) -> [u8; 32] {
    Sha256::digest(format!("{}\u{0}{code}", email.to_ascii_lowercase())).into()
}

/// Six random digits.
fn new_code() -> String {
    let n = u32::from_be_bytes(random_bytes::<4>()) % 1_000_000;
    format!("{n:06}")
}

/// Queues the verification mail (or a forwarding probe) to the sender's
/// address; returns the code it carries.
fn send_verification(
    db: &Db<'_>,
    config: &Config,
    email: &str,
    probe: bool,
) -> Result<String, SenderError> {
    let now = now_ms();
    let code = new_code();
    let nonce = base32_lower(&random_bytes::<12>());
    let message_id = verification_message_id(&nonce, &config.domain);
    let from = format!("reply@{}", config.domain);
    let (subject, text) = if probe {
        (
            format!("backchannel forwarding test for {email}"),
            format!(
                "This message tests that mail for {email} is forwarded to the gateway.\n\
                 Nothing needs to be done: when it arrives through forwarding, the sender's\n\
                 forwarding shows as confirmed.\n"
            ),
        )
    } else {
        (
            format!("Verify {email} for backchannel: code {code}"),
            format!(
                "Someone added {email} as a sender address in backchannel.\n\n\
                 Verification code: {code}\n\n\
                 Enter the code in backchannel to verify the address, or set up forwarding of\n\
                 {email} to the gateway: when this message comes back through forwarding, the\n\
                 address is verified by itself. The code is valid for 24 hours.\n\n\
                 If you did not expect this message, ignore it.\n"
            ),
        )
    };
    let raw = mail_builder::MessageBuilder::new()
        .from(mail_builder::headers::address::Address::new_address(
            Some("backchannel"),
            from.clone(),
        ))
        .to(email.to_string())
        .subject(subject.clone())
        .message_id(message_id.clone())
        .date(now / 1000)
        .header(
            "Auto-Submitted",
            mail_builder::headers::raw::Raw::new("auto-generated"),
        )
        .header(
            "X-Auto-Response-Suppress",
            mail_builder::headers::raw::Raw::new("All"),
        )
        .text_body(text.clone())
        .write_to_vec()
        .map_err(|e| SenderError::Store(e.to_string()))?;
    let message = store::messages::insert_system_mail(
        db,
        &store::messages::SystemMail {
            kind: "verification",
            raw: &raw,
            message_id: &message_id,
            from_email: &from,
            to: (None, email),
            subject: &subject,
            text: &text,
            at: now,
        },
    )?;
    outbox::enqueue(db, message, email, now)?;
    if probe {
        store::senders::set_probe(db, email, &nonce)?;
    } else {
        store::senders::set_code(
            db,
            email,
            &nonce,
            &code_hash(email, &code),
            now + CODE_TTL_MS,
        )?;
    }
    Ok(code)
}

/// Adds a sender and queues its verification mail. `key` is a DKIM key
/// generated beforehand (outside the writer), stored when the domain has
/// none. Returns the sender's JSON.
pub fn add(
    db: &Db<'_>,
    config: &Config,
    new: &NewSender,
    key: Option<&super::dkim::GeneratedKey>,
) -> Result<Value, SenderError> {
    let email = new.email.trim();
    if !is_valid_email(email) {
        return Err(invalid("email", "not a valid email address"));
    }
    let Some(addr) = MailAddr::parse(email) else {
        return Err(invalid("email", "not a valid email address"));
    };
    if addr.domain == config.domain {
        return Err(invalid(
            "email",
            "addresses of the gateway domain need no sender entry",
        ));
    }
    if addr.local.contains('+') {
        return Err(invalid(
            "email",
            "a sender address cannot be plus-addressed itself",
        ));
    }
    let name = clean_header(&new.name);
    if name.len() > 200 {
        return Err(invalid("name", "at most 200 characters"));
    }
    let mode = new.reply_mode.as_deref().unwrap_or("gateway");
    if ReplyMode::parse(mode).is_none() {
        return Err(invalid("reply_mode", "expected gateway, plus or none"));
    }
    let requested = dkim_algorithm(new)?;
    if new.dkim_algorithm.is_some()
        && let Some(existing) = store::dkim::find(db, &addr.domain)?
        && existing.algorithm != requested
    {
        return Err(invalid(
            "dkim_algorithm",
            format!(
                "{} already has {} DKIM key (selector {}), which every sender of the domain \
                 signs with; a {} key cannot be chosen for it (keys are not rotated): leave the \
                 option out to use the existing key",
                addr.domain,
                key_type(existing.algorithm),
                existing.selector,
                requested.as_str()
            ),
        ));
    }
    crate::templates::check_signature(
        "signature",
        new.signature_text.as_deref(),
        new.signature_html.as_deref(),
    )
    .map_err(|e| invalid(&e.field, e.message))?;
    if store::senders::exists(db, email)? {
        return Err(SenderError::Conflict(format!(
            "{email} is already a sender"
        )));
    }
    let forwarding_local = format!("fwd-{}", base32_lower(&random_bytes::<10>()));
    store::senders::insert(
        db,
        &NewSenderRow {
            email: email.to_string(),
            name,
            reply_mode: mode.to_string(),
            forwarding_local,
            signature_text: new.signature_text.clone(),
            signature_html: new.signature_html.clone(),
            created_at: now_ms(),
        },
    )?;
    if let Some(key) = key {
        store::dkim::insert_if_absent(db, &addr.domain, &config.outbound.dkim_selector, key)?;
    }
    send_verification(db, config, email, false)?;
    view(db, config, email)
}

/// What a code check came to. A wrong code is an outcome, not an error:
/// its counted attempt must be committed.
#[derive(Debug, Clone, PartialEq)]
pub enum Verified {
    Yes(Value),
    WrongCode { attempts_left: i64 },
}

/// Checks a code. Wrong codes count; past the limit or the expiry a new
/// code is needed (`check` sends one for a pending sender).
pub fn verify(
    db: &Db<'_>,
    config: &Config,
    email: &str,
    code: &str,
) -> Result<Verified, SenderError> {
    let Some(PendingCode {
        status,
        code_hash: hash,
        expires_at: expires,
        attempts,
    }) = store::senders::pending_code(db, email)?
    else {
        return Err(SenderError::NotFound);
    };
    if status == "verified" {
        return Err(SenderError::Conflict(format!(
            "{email} is already verified"
        )));
    }
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            "code",
            "expected the 6-digit code from the verification mail",
        ));
    }
    let (Some(hash), Some(expires)) = (hash, expires) else {
        return Err(SenderError::Conflict(
            "no code is pending: send a new one with check".into(),
        ));
    };
    if attempts >= MAX_CODE_ATTEMPTS {
        return Err(SenderError::Conflict(
            "too many wrong codes: send a new one with check".into(),
        ));
    }
    if now_ms() > expires {
        return Err(SenderError::Conflict(
            "the code has expired: send a new one with check".into(),
        ));
    }
    let ok: bool = code_hash(email, code).ct_eq(hash.as_slice()).into();
    if !ok {
        store::senders::count_wrong_code(db, email)?;
        return Ok(Verified::WrongCode {
            attempts_left: MAX_CODE_ATTEMPTS - attempts - 1,
        });
    }
    store::senders::mark_verified_by_code(db, email, now_ms())?;
    events::enqueue(db, "sender.verified", json!({"email": email, "by": "code"}))?;
    view(db, config, email).map(Verified::Yes)
}

impl Verified {
    /// The sender JSON, or the wrong code as a refusal naming the field.
    pub fn into_result(self) -> Result<Value, SenderError> {
        match self {
            Verified::Yes(v) => Ok(v),
            Verified::WrongCode { attempts_left } => Err(invalid(
                "code",
                format!("wrong code ({attempts_left} attempts left)"),
            )),
        }
    }
}

/// Re-tests forwarding (a probe for a verified sender, a new code for a
/// pending one). The DNS part of a check runs outside the transaction.
pub fn resend_or_probe(db: &Db<'_>, config: &Config, email: &str) -> Result<(), SenderError> {
    let sender = store::senders::get(db, email)?.ok_or(SenderError::NotFound)?;
    let probe = sender.status == "verified";
    send_verification(db, config, email, probe).map(|_| ())
}

pub fn delete(db: &Db<'_>, email: &str) -> Result<(), SenderError> {
    if !store::senders::delete(db, email)? {
        return Err(SenderError::NotFound);
    }
    // A default sender that is gone falls back to the gateway address.
    if store::get_setting(db, "default_sender")?
        .and_then(|v| v.as_str().map(|s| s.eq_ignore_ascii_case(email)))
        .unwrap_or(false)
    {
        store::put_setting(db, "default_sender", &Value::Null)?;
    }
    Ok(())
}

/// Stores the result of a DNS check.
pub fn record_dns(db: &Db<'_>, email: &str, dns: &Value) -> Result<(), SenderError> {
    store::senders::record_dns(db, email, &dns.to_string(), now_ms())?;
    Ok(())
}

/// The sender JSON of SPEC §7.
pub fn view(db: &Db<'_>, config: &Config, email: &str) -> Result<Value, SenderError> {
    let s = store::senders::get(db, email)?.ok_or(SenderError::NotFound)?;
    let json_of = |t: Option<&String>| t.and_then(|t| serde_json::from_str::<Value>(t).ok());
    let forwarding_address = format!("{}@{}", s.forwarding_local, config.domain);
    let mut v = json!({
        "email": s.email,
        "name": s.name,
        "reply_mode": s.reply_mode,
        "status": s.status,
        "forwarding_address": forwarding_address,
        "forwarding": s.forwarding_state,
        "forwarding_confirmed_at": s.forwarding_confirmed_at.map(rfc3339),
        "forwarding_confirmation": json_of(s.forwarding_confirmation.as_ref()),
        // Before the first check: the records to publish, each `unknown`.
        "dns": match json_of(s.dns.as_ref()) {
            Some(dns) => dns,
            None => {
                let domain = MailAddr::parse(email).map(|a| a.domain).unwrap_or_default();
                let key = store::dkim::find(db, &domain)?;
                let gateway = gateway_dns(config, key.as_ref());
                serde_json::to_value(super::dns::to_publish(&domain, &gateway))
                    .map_err(|e| SenderError::Store(e.to_string()))?
            }
        },
        "dns_checked_at": s.dns_checked_at.map(rfc3339),
        "signature": {"text": s.signature_text, "html": s.signature_html},
        "verified_at": s.verified_at.map(rfc3339),
        "created_at": rfc3339(s.created_at),
    });
    // What to tell the admin: where to forward, which records to publish.
    let domain = MailAddr::parse(email).map(|a| a.domain).unwrap_or_default();
    let mut records = vec![];
    if let Some(key) = store::dkim::find(db, &domain)? {
        records.push(json!({"type": "TXT", "name": key.record_name(), "value": key.record()}));
    }
    v["instructions"] = json!({
        "forward_to": forwarding_address,
        "text": format!("Forward mail for {email} to {forwarding_address}, then publish the DNS records below."),
        "records": records,
    });
    Ok(v)
}

pub fn list(db: &Db<'_>, config: &Config) -> Result<Vec<Value>, SenderError> {
    store::senders::emails(db)?
        .iter()
        .map(|e| view(db, config, e))
        .collect()
}

// ---------------------------------------------------------------------------
// Asynchronous operations, shared by the HTTP API and the CLI.

/// Adds a sender: the domain's DKIM key is generated outside the store's
/// writer (RSA takes a while), then everything is stored in one write.
///
/// The addition is recorded in the audit log as `actor`'s, in the same
/// write.
pub async fn add_sender(
    store: &store::Store,
    config: &std::sync::Arc<Config>,
    new: NewSender,
    actor: store::audit::Actor,
) -> Result<Value, SenderError> {
    let algorithm = dkim_algorithm(&new)?;
    let domain = MailAddr::parse(new.email.trim())
        .map(|a| a.domain)
        .unwrap_or_default();
    let existing = {
        let d = domain.clone();
        store.read(move |c| super::dkim::find(c, &d)).await?
    };
    let key = match existing {
        Some(_) => None,
        None if domain.is_empty() => None,
        None => Some(
            tokio::task::spawn_blocking(move || super::dkim::generate(algorithm))
                .await
                .map_err(|e| SenderError::Store(e.to_string()))?
                .map_err(|e| SenderError::Store(e.to_string()))?,
        ),
    };
    let config = config.clone();
    store
        .write_with(move |c| {
            let v = add(c, &config, &new, key.as_ref())?;
            store::audit::record(
                c,
                &actor,
                "sender.added",
                v["email"].as_str().unwrap_or_default(),
                &json!({"name": v["name"], "reply_mode": v["reply_mode"]}),
            )?;
            Ok(v)
        })
        .await
}

/// What the gateway sends with, for the DNS check of a domain with `key`.
fn gateway_dns(config: &Config, key: Option<&super::dkim::DkimKeyRow>) -> super::dns::GatewayDns {
    super::dns::GatewayDns {
        spf: config.outbound.spf.clone(),
        dkim_selector: key
            .map(|k| k.selector.clone())
            .unwrap_or_else(|| config.outbound.dkim_selector.clone()),
        dkim_public_key_b64: key.map(|k| k.public_key_b64.clone()),
        gateway_domain: config.domain.clone(),
    }
}

/// [`verify`], recorded in the audit log as `actor`'s when the code was
/// right (a wrong code changes only the attempt count).
pub fn verify_audited(
    db: &Db<'_>,
    config: &Config,
    actor: &store::audit::Actor,
    email: &str,
    code: &str,
) -> Result<Verified, SenderError> {
    let outcome = verify(db, config, email, code)?;
    if let Verified::Yes(v) = &outcome {
        store::audit::record(
            db,
            actor,
            "sender.verified",
            v["email"].as_str().unwrap_or(email),
            &json!({"by": "code"}),
        )?;
    }
    Ok(outcome)
}

/// [`delete`], recorded in the audit log as `actor`'s.
pub fn delete_audited(
    db: &Db<'_>,
    actor: &store::audit::Actor,
    email: &str,
) -> Result<(), SenderError> {
    delete(db, email)?;
    store::audit::record(db, actor, "sender.deleted", email, &json!({}))?;
    Ok(())
}

/// The DNS health of a sender's domain, stored on the sender.
pub async fn check_dns(
    store: &store::Store,
    config: &Config,
    resolver: &super::dns::Resolver,
    email: &str,
) -> Result<Value, SenderError> {
    let Some(addr) = MailAddr::parse(email) else {
        return Err(SenderError::NotFound);
    };
    let key = {
        let d = addr.domain.clone();
        store.read(move |c| super::dkim::find(c, &d)).await?
    };
    let gateway = gateway_dns(config, key.as_ref());
    let health = super::dns::check(resolver, &addr.domain, email, &gateway).await;
    let value = serde_json::to_value(&health).map_err(|e| SenderError::Store(e.to_string()))?;
    let (e, v) = (email.to_string(), value.clone());
    store.write_with(move |c| record_dns(c, &e, &v)).await?;
    Ok(value)
}

/// `check`: re-checks DNS, and re-tests forwarding (a probe through the
/// sender's address, or a new code for a pending sender), waiting up to
/// `wait` for the probe to come back through forwarding.
pub async fn check_sender(
    store: &store::Store,
    config: &std::sync::Arc<Config>,
    resolver: &super::dns::Resolver,
    email: &str,
    wait: std::time::Duration,
) -> Result<Value, SenderError> {
    {
        let e = email.to_string();
        if !store.read(move |db| store::senders::exists(db, &e)).await? {
            return Err(SenderError::NotFound);
        }
    }
    check_dns(store, config, resolver, email).await?;
    {
        let (cfg, e) = (config.clone(), email.to_string());
        store
            .write_with(move |c| resend_or_probe(c, &cfg, &e))
            .await?;
    }
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let e = email.to_string();
        let state = store
            .read(move |db| store::senders::forwarding_state(db, &e))
            .await?
            .ok_or(SenderError::NotFound)?;
        if state == "confirmed" || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (cfg, e) = (config.clone(), email.to_string());
    store
        .read(move |c| view(c, &cfg, &e).map_err(|e| StoreError::Database(e.to_string())))
        .await
        .map_err(Into::into)
}

/// [`add_sender`] as an admin's request does it: the first DNS check
/// runs in the background (a slow DNS server must not hold the request;
/// the result appears on the sender) and `outbox_waker` is woken for the
/// verification mail.
pub async fn add_sender_and_check(
    store: &store::Store,
    config: &std::sync::Arc<Config>,
    resolver: &super::dns::Resolver,
    outbox_waker: &std::sync::Arc<tokio::sync::Notify>,
    new: NewSender,
    actor: store::audit::Actor,
) -> Result<Value, SenderError> {
    let email = new.email.trim().to_string();
    let v = add_sender(store, config, new, actor).await?;
    outbox_waker.notify_one();
    let (store, config, resolver) = (store.clone(), config.clone(), resolver.clone());
    tokio::spawn(async move {
        if let Err(e) = check_dns(&store, &config, &resolver, &email).await {
            tracing::warn!(sender = %email, error = %e, "first DNS check failed");
        }
    });
    Ok(v)
}

/// [`check_sender`] as an admin's request does it: `outbox_waker` is
/// woken while it waits, so the probe (queued inside) goes out at once.
pub async fn check_sender_now(
    store: &store::Store,
    config: &std::sync::Arc<Config>,
    resolver: &super::dns::Resolver,
    outbox_waker: &std::sync::Arc<tokio::sync::Notify>,
    email: &str,
) -> Result<Value, SenderError> {
    let waker = outbox_waker.clone();
    let ticker = tokio::spawn(async move {
        for _ in 0..3 {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            waker.notify_one();
        }
    });
    let v = check_sender(store, config, resolver, email, config.senders.probe_wait).await;
    ticker.abort();
    v
}

/// The daily DNS re-check of every sender (SPEC §6).
pub async fn recheck_all(store: &store::Store, config: &Config, resolver: &super::dns::Resolver) {
    let emails = store.read(store::senders::emails).await;
    match emails {
        Ok(list) => {
            for email in list {
                if let Err(e) = check_dns(store, config, resolver, &email).await {
                    tracing::warn!(sender = %email, error = %e, "scheduled DNS check failed");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "scheduled DNS check: cannot list senders"),
    }
}

/// Runs [`recheck_all`] every `interval` until shutdown.
pub async fn scheduler(
    store: store::Store,
    config: std::sync::Arc<Config>,
    resolver: super::dns::Resolver,
    interval: std::time::Duration,
    shutdown: crate::shutdown::Shutdown,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            _ = shutdown.wait() => return Ok(()),
            _ = tokio::time::sleep(interval) => recheck_all(&store, &config, &resolver).await,
        }
    }
}
