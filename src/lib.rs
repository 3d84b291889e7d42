//! backchannel: an email-native gateway for helpdesk side conversations.
//!
//! An agent working a ticket opens a side conversation with an outside party
//! by email; the vendor's reply arrives over the gateway's own SMTP server on
//! a plus-addressed mailbox, is threaded by token and by Message-ID, stored in
//! SQLite and shown to agents.
//!
//! # Layout
//!
//! This is the one module map (the README points here). Each line says a
//! module's job; the table after it says which modules each may import.
//!
//! ```text
//! main.rs        thin: hands over to cli
//! cli.rs         clap commands: serve, config, backup, user add/list/set-role/
//!                deactivate/activate/rotate-token/set-password/login-link, sender
//!                add/list/verify/check;
//!                output that survives a closed stdout
//! app.rs         wiring: store, workers, listeners, ready file, signals, shutdown;
//!                start() for tests
//! shutdown.rs    the shutdown signal every task waits on (a leaf)
//! config/        TOML + BACKCHANNEL_* env → validated Config, split by concern
//!                (smtp, imap, http, ingest, outbound, webhooks, abuse); serde with
//!                typed fields, errors name the key (secrets redacted)
//! model/         plain domain types, no I/O: Token, ApiToken, Role, Mailbox,
//!                records (Parent, SideConversation, Participant, Message …), the
//!                status and kind enums, authentication verdicts, DKIM key types
//! metrics.rs     counters, gauges, histograms → Prometheus text
//! limits.rs      per-address abuse limits: failure limiter (token guessing, bad
//!                logins), connection-rate and per-IP connection caps, bounded memory
//! net/           DNS resolvers built from [dns] (dns.rs), the TLS acceptor from PEM
//!                files (tls.rs), the SMTP/IMAP accept loop (accept.rs)
//! egress.rs      where webhooks and MX delivery may connect: internal-address
//!                classifier and allow-list (pure)
//! reply_text/    visible-reply extraction (many languages), HTML → text and HTML
//!                escaping: the one HTML → text every reader uses (pure)
//! mime_guard.rs  the copy of a message mail-parser is handed: header fields
//!                bounded (its encoded-word decoding is quadratic), pure
//! templates.rs   side-conversation templates and their placeholders
//! store/         SQLite or PostgreSQL, the only module with SQL: open (WAL,
//!                synchronous=FULL, foreign keys), migrations from schema.sql /
//!                schema_pg.sql, group-commit writer thread, checkpointer, read
//!                pool; sql.rs: one SQL surface over both databases; pg.rs:
//!                PostgreSQL sessions, LISTEN/NOTIFY, the scheduler's advisory
//!                lock; copy.rs: SQLite → PostgreSQL; a typed `Db` handle lent to reads
//!                and writes; one file of typed functions per aggregate (parents,
//!                side_conversations, participants, messages, inbound, outbox,
//!                senders, dkim, users, settings, templates, webhooks, events,
//!                notifications, activity, contacts, routing, portal, view, stats,
//!                audit, console: sessions and sign-in links, inbox: the console's
//!                lists, agent_pages, waiting: whom a thread waits on and its tags,
//!                reports); lock.rs (one serving process per data dir), backup.rs
//!                (online copy)
//! outbound/      compose.rs (mail-builder, Thread-Index, DKIM), worker.rs (outbox
//!                worker), deliver.rs (maildir, relay via lettre, MX via hickory),
//!                retry.rs (pure policy)
//! conversations/ the domain rules every front calls: start, follow-up,
//!                close/reopen, portal reply, participants (admit, remove), parent
//!                upsert, a vendor reply's effects (reopen, wake, activity,
//!                notification, webhook event, trust), assigning unrouted mail, what a
//!                delivery's outcome sets off (message.sent/failed, bounce: delivery.rs),
//!                agent mail from mail clients (agent_mail.rs) and the "not sent"
//!                email for a refused reply to a notification (agent_notice.rs);
//!                the user lifecycle (users.rs), workspace settings (settings.rs)
//!                and console sign-in links and passwords (sign_in.rs); tags
//!                (tags.rs) and the side-conversation report (reports.rs)
//! notifications.rs reply notifications to agents, batched, through the outbox
//! webhooks.rs    webhook delivery worker: signed POSTs, bounded concurrency, retries
//! senders/       sender addresses: service.rs (add, verify, probe, re-check), dns/
//!                (SPF by mail-auth, DKIM, DMARC health), dkim.rs (keys)
//! ingest/        inbound pipeline: parse.rs (mail-parser), classify/ (auto-reply,
//!                bounce), auth.rs (SPF/DKIM/DMARC/ARC), route.rs (pure rules),
//!                forwarding.rs, apply.rs (one write: store + conversations' reply
//!                effects), agent_reply.rs (an agent answering a notification),
//!                mod.rs (worker), pipeline.rs (its window of messages in flight)
//! http/          what the HTTP doors share: AppState, the auth extractor, errors,
//!                downloads, the listener (caps, idle and slowloris cut), /metrics
//! smtp/          door: inbound SMTP on tokio + smtp-proto: session state machine,
//!                DATA, recipient policy, per-sender quotas, replies, STARTTLS;
//!                the submission listener for agents' mail clients (AUTH, then
//!                conversations::agent_mail: submission.rs, submission_session.rs)
//! imap/          door: IMAP4rev1 agent view: session, selected state, FETCH/STORE,
//!                SEARCH, mime/ (Dovecot-exact ENVELOPE, BODYSTRUCTURE, sections,
//!                decoded by mail-parser), thread.rs (THREAD=REFERENCES)
//! jmap/          door: JMAP (RFC 8620/8621 subset) over the agent view: session,
//!                methods, blob download, EventSource push
//! api/           door: the JSON API (router, ROUTES, handlers, admin, views)
//! portal/        door: the vendor portal's HTML pages
//! console/       door: the web console for agents and admins (askama pages in
//!                pages/, one style sheet and script in static/): sign-in and
//!                sessions, agent pages, admin pages, live updates
//! ```
//!
//! # Imports
//!
//! A module names only the modules listed after it (`crate::…`); everything
//! else is a circle waiting to happen. The doors (smtp, imap, jmap, api,
//! portal, console) import none of each other; only `main` and `cli` import `app`;
//! only `store` names the database drivers (rusqlite, postgres). `tests/layout.rs` checks this table against
//! the source, and that no file in `src/` is over 1,500 lines.
//!
//! ```text
//! model          →
//! config         →
//! shutdown       →
//! reply_text     →
//! mime_guard     →
//! metrics        → config
//! limits         → config metrics
//! net            → config shutdown
//! egress         → config model
//! templates      → model
//! store          → model
//! outbound       → config egress metrics model net reply_text shutdown store
//! webhooks       → config egress metrics model net outbound shutdown store
//! senders        → config model net outbound shutdown store templates
//! notifications  → config conversations metrics model outbound shutdown store
//! conversations  → config mime_guard model outbound reply_text store templates
//! ingest         → config conversations metrics mime_guard model net notifications reply_text shutdown store
//! http           → config conversations limits metrics model senders shutdown store
//! smtp           → config conversations limits metrics model net shutdown store
//! imap           → config limits metrics net shutdown store
//! jmap           → config http mime_guard model reply_text shutdown store
//! api            → conversations egress http model senders store templates
//! portal         → conversations http metrics model reply_text store
//! console        → config conversations http limits metrics model reply_text senders shutdown store templates
//! app            → config console conversations http imap ingest limits metrics model notifications outbound senders shutdown smtp store webhooks
//! cli            → app config conversations model senders store
//! ```

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod console;
pub mod conversations;
pub mod egress;
pub mod http;
pub mod imap;
pub mod ingest;
pub mod jmap;
pub mod limits;
pub mod metrics;
pub mod mime_guard;
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
