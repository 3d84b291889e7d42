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
//! store/         SQLite: open, migrations from schema.sql, group-commit writer,
//!                read pool; one file per aggregate
//! smtp/          inbound SMTP listener on tokio + smtp-proto: session state
//!                machine, replies, envelope checks, limits, STARTTLS
//! api/           axum router: /healthz, /metrics
//! ```
//!
//! Dependency direction: `main → app → {smtp, api}`; everything → `model`;
//! `store` imports no protocol module; `smtp` and `api` never import each other.

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod metrics;
pub mod model;
pub mod smtp;
pub mod store;
