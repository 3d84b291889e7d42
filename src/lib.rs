//! backchannel: an email-native gateway for helpdesk side conversations.
//!
//! An agent working a ticket opens a side conversation with an outside party
//! by email; the vendor's reply arrives over the gateway's own SMTP server on
//! a plus-addressed mailbox, is threaded by token and by Message-ID, stored in
//! SQLite and shown to agents.
//!
//! # Layout
//!
//! ```text
//! main.rs        thin: parse CLI, init tracing, load config, call app
//! cli.rs         clap commands: serve, config, user add/list
//! config.rs      TOML + BACKCHANNEL_* env → validated Config (secrets redacted)
//! app.rs         wiring, listeners, shutdown; start() for tests
//! model.rs       plain domain types: Token, ApiToken, Role, MailAddr (no I/O)
//! metrics.rs     process-wide counters and histograms (Prometheus text)
//! net/           DNS resolvers built from [dns] (dns.rs) and the TLS server
//!                set-up from PEM files (tls.rs), once for every module
//! limits.rs      per-address abuse limits: failure limiter (token guessing,
//!                bad logins), connection-rate limiter, bounded memory
//! store/         SQLite: open, migrations from schema.sql, group-commit writer,
//!                read pool; one file per aggregate
//! smtp/          inbound SMTP listener on tokio + smtp-proto: session state
//!                machine, replies, envelope checks, limits, STARTTLS
//! api/           axum router: the JSON API, /healthz, and the vendor
//!                portal's HTML pages (portal.rs); /metrics on its own
//!                listener (scrape.rs, http.metrics_listen)
//! jmap/          JMAP (RFC 8620/8621 subset) over the agent view: session,
//!                methods, blob download, EventSource push
//! ingest/        inbound pipeline: parse.rs (mail-parser), classify (auto-reply,
//!                bounce), auth.rs (SPF/DKIM/DMARC/ARC), route.rs (pure rules),
//!                forwarding.rs (verification/confirmation mail), apply.rs
//!                (persist + effects in one transaction), mod.rs (worker)
//! outbound/      outbound mail: worker.rs (outbox worker), deliver.rs (maildir,
//!                relay via lettre, MX via hickory-resolver), retry.rs (pure policy)
//! reply_text.rs  visible-reply extraction and HTML → text, pure
//! conversations.rs  the side-conversation service: start, follow-up, close,
//!                reopen, portal replies and revocation
//! templates.rs   side-conversation templates (macros) and their placeholders
//! notifications.rs reply notifications to agents, batched, sent through the outbox
//! webhooks.rs    webhook delivery worker: signed POSTs, retries (pure policy)
//! egress.rs      which addresses the gateway may connect to for a user (webhooks,
//!                MX): internal-address classifier and allow-list, pure
//! senders/       sender addresses: dkim.rs (key generation, one stored key per
//!                domain), dns/ (SPF/DKIM/DMARC health checks through the
//!                configured resolver; SPF evaluated by mail-auth)
//! imap/          IMAP4rev1 agent view: mime/ (ENVELOPE, BODYSTRUCTURE, BODY[section]
//!                from raw bytes, pure), thread.rs (THREAD=REFERENCES, pure)
//! ```
//!
//! Dependency direction: `main → app → {smtp, api, ingest, outbound, webhooks}`;
//! `api → conversations → {outbound, store}`; `ingest → {reply_text, store}`; everything → `model`;
//! `store` imports no protocol module; `smtp` and `api` never import each other.

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod conversations;
pub mod egress;
pub mod http;
pub mod imap;
pub mod ingest;
pub mod jmap;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod net;
pub mod notifications;
pub mod outbound;
pub mod portal;
pub mod reply_text;
pub mod senders;
pub mod shutdown;
pub mod smtp;
pub mod store;
pub mod templates;
pub mod webhooks;
