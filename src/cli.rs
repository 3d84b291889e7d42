//! Command line: `serve`, `config`, `backup`,
//! `user add|list|set-role|deactivate|activate|rotate-token`,
//! `sender add|list|verify|check`.
//!
//! Everything a command prints goes through [`out`]: when stdout is closed
//! early (`backchannel sender list | head -1`), the command stops quietly
//! with exit status 0, like `ls` into a closed pipe, instead of panicking
//! the way `println!` does (Rust ignores SIGPIPE, so the write fails with
//! `EPIPE`). The command's work is already done by then (a write committed).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat};
use crate::model::{Role, now_ms};
use crate::store::audit::Actor;
use crate::store::{self, Store, StoreError};

#[derive(Debug, Parser)]
#[command(
    name = "backchannel",
    version,
    about = "Email gateway for helpdesk side conversations"
)]
pub struct Cli {
    /// Config file (TOML). Without one, the embedded defaults apply.
    #[arg(long, global = true, env = "BACKCHANNEL_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway: SMTP, HTTP API and portal, delivery, scheduled jobs.
    Serve {
        /// Write the bound addresses as JSON to this file once listening.
        #[arg(long, value_name = "PATH")]
        ready_file: Option<PathBuf>,
        /// Log format (overrides `log.format`).
        #[arg(long, value_parser = ["text", "json"])]
        log_format: Option<String>,
    },
    /// Print the effective configuration, secrets redacted.
    Config,
    /// Write a consistent copy of the SQLite store to PATH, also while
    /// `serve` runs. Restore: stop serve, replace the database file with
    /// the copy (removing its -wal and -shm files), start serve.
    /// (PostgreSQL stores are backed up with pg_dump.)
    Backup {
        /// Where to write the copy (a new file).
        #[arg(value_name = "PATH")]
        path: PathBuf,
        /// Replace PATH if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage sender addresses (custom From addresses).
    Sender {
        #[command(subcommand)]
        command: SenderCommand,
    },
    /// Move the store between databases.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy the SQLite store (in data_dir) into an empty PostgreSQL
    /// database, in one transaction, and verify the row counts of every
    /// table. Stop `serve` first; afterwards set `[store] url` to the URL.
    Copy {
        /// The PostgreSQL database: postgres://user:pass@host:port/db
        #[arg(long, value_name = "URL")]
        to: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SenderCommand {
    /// Add a sender: prints the forwarding address and the DNS records to
    /// publish; the verification mail leaves when `serve` runs.
    Add {
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "")]
        name: String,
        /// gateway, plus or none.
        #[arg(long, default_value = "gateway")]
        reply_mode: String,
        /// rsa or ed25519: the type of the domain's DKIM key when it has
        /// none yet (rsa when not given). A domain keeps its one key:
        /// naming the other type than the existing key's is an error.
        #[arg(long, value_parser = ["rsa", "ed25519"])]
        dkim: Option<String>,
    },
    /// List senders with their state.
    List,
    /// Verify a sender with the code from its verification mail.
    Verify {
        #[arg(long)]
        email: String,
        #[arg(long)]
        code: String,
    },
    /// Re-check DNS (SPF, DKIM, DMARC) and re-test forwarding.
    Check {
        #[arg(long)]
        email: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user and print its API token (alone, on one line).
    Add {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "member")]
        role: String,
    },
    /// List users (tab-separated: id, email, role, name, active or inactive).
    List,
    /// Change a user's role (owner, admin, member or viewer); their open
    /// sessions end. The last active owner cannot be demoted.
    SetRole {
        #[arg(long)]
        email: String,
        #[arg(long)]
        role: String,
    },
    /// Deactivate a user: their token, IMAP sessions and push streams stop
    /// at once; their history stays. The last active owner cannot be
    /// deactivated.
    Deactivate {
        #[arg(long)]
        email: String,
    },
    /// Activate a deactivated user again (with the token they had).
    Activate {
        #[arg(long)]
        email: String,
    },
    /// Give a user a new API token and print it (alone, on one line); the
    /// old one stops working at once.
    RotateToken {
        #[arg(long)]
        email: String,
    },
    /// Set a user's web console password, read from standard input (one
    /// line, at least 10 characters); the user's other console sessions
    /// end. With --remove, the user can sign in by link only.
    SetPassword {
        #[arg(long)]
        email: String,
        #[arg(long)]
        remove: bool,
    },
    /// Make a one-time link that signs the user in to the web console and
    /// print it (alone, on one line); it works once, within
    /// `console.login_link_ttl`.
    LoginLink {
        #[arg(long)]
        email: String,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            note!("backchannel: {e}");
            return ExitCode::from(2);
        }
    };
    match run(cli.command, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<StdoutClosed>() => ExitCode::SUCCESS,
        Err(e) => {
            note!("backchannel: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve {
            ready_file,
            log_format,
        } => {
            let format = match log_format.as_deref() {
                Some("json") => LogFormat::Json,
                Some(_) => LogFormat::Text,
                None => config.log_format,
            };
            init_tracing(format, &config.log_level);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("backchannel")
                .build()?;
            runtime.block_on(crate::app::serve(config, ready_file))
        }
        Command::Config => out(&config.to_redacted_toml()),
        Command::Backup { path, force } => {
            if !config.store.url.is_empty() {
                anyhow::bail!(
                    "the store is in PostgreSQL ([store] url): back it up with pg_dump, e.g. `pg_dump --format=custom --file={} '<url>'` (restore with pg_restore into an empty database)",
                    path.display()
                );
            }
            let report = store::backup::backup(&config.db_path(), &path, force)?;
            outln(&format!(
                "wrote {} ({} bytes, user_version {})",
                report.path.display(),
                report.bytes,
                report.user_version
            ))
        }
        Command::Store {
            command: StoreCommand::Copy { to },
        } => {
            if !config.store.url.is_empty() {
                anyhow::bail!(
                    "[store] url is set: `store copy` reads the SQLite store in data_dir; unset it to copy"
                );
            }
            // No `serve` may write while the copy reads: take its lock.
            let _lock = store::lock::DataDirLock::acquire(
                &config.db_path(),
                &store::lock::Holder::this_process(Default::default()),
            )?;
            if !config.db_path().exists() {
                anyhow::bail!("no SQLite store at {}", config.db_path().display());
            }
            // Brings the SQLite store to this binary's schema version.
            Store::open(&config.db_path())?.close();
            let copied = store::copy::copy_to_postgres(&config.db_path(), &to)?;
            for (table, rows) in &copied.tables {
                outln(&format!("{table:<32} {rows:>10} rows"))?;
            }
            outln(&format!(
                "copied {} tables at schema version {} into {}; counts verified. Set [store] url to use it.",
                copied.tables.len(),
                copied.version,
                crate::config::redact_url(&to)
            ))
        }
        Command::User { command } => {
            let store = Store::open_location(&config.db_path(), &config.store.url, false)?;
            let result = user_command(&store, &config, command);
            store.close();
            result
        }
        Command::Sender { command } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let store = Store::open_location(&config.db_path(), &config.store.url, false)?;
            let config = std::sync::Arc::new(config);
            let result = runtime.block_on(sender_command(&store, &config, command));
            store.close();
            result
        }
    }
}

fn user_command(store: &Store, config: &Config, command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add { email, name, role } => {
            let role: Role = role.parse().map_err(anyhow::Error::msg)?;
            if !crate::model::is_valid_email(&email) {
                anyhow::bail!("`{email}` is not a valid email address");
            }
            if name.trim().is_empty() {
                anyhow::bail!("--name must not be empty");
            }
            let (_, token) = store.write_blocking(move |c| {
                store::users::create_audited(c, &Actor::cli(), &email, &name, role)
            })?;
            outln(token.as_str())?;
        }
        UserCommand::List => {
            let users = store.read_blocking(store::users::list)?;
            for u in users {
                let state = if u.active { "active" } else { "inactive" };
                outln(&format!(
                    "{}\t{}\t{}\t{}\t{}",
                    u.id, u.email, u.role, u.name, state
                ))?;
            }
        }
        UserCommand::SetRole { email, role } => {
            let role: Role = role.parse().map_err(anyhow::Error::msg)?;
            change_user(
                store,
                email,
                store::users::Change {
                    role: Some(role),
                    ..Default::default()
                },
            )?;
        }
        UserCommand::Deactivate { email } => {
            change_user(
                store,
                email,
                store::users::Change {
                    active: Some(false),
                    ..Default::default()
                },
            )?;
        }
        UserCommand::Activate { email } => {
            change_user(
                store,
                email,
                store::users::Change {
                    active: Some(true),
                    ..Default::default()
                },
            )?;
        }
        UserCommand::RotateToken { email } => {
            let who = email.clone();
            let (_, token) = store
                .write_blocking(move |c| {
                    let user = store::users::by_email(c, &email)?;
                    store::users::rotate_token(c, &Actor::cli(), user.id)
                })
                .map_err(|e| user_error(&who, e))?;
            outln(token.as_str())?;
        }
        UserCommand::SetPassword { email, remove } => {
            use crate::conversations::sign_in;
            let phc = if remove {
                None
            } else {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                let password = line.trim_end_matches(['\r', '\n']);
                sign_in::check_password(password).map_err(anyhow::Error::msg)?;
                Some(sign_in::hash_password(password).map_err(anyhow::Error::msg)?)
            };
            let who = email.clone();
            store
                .write_blocking(move |c| {
                    let user = store::users::by_email(c, &email)?;
                    store::console::set_password(c, &Actor::cli(), user.id, phc.as_deref(), None)
                })
                .map_err(|e| user_error(&who, e))?;
            if remove {
                note!("{who}: password removed; console sessions ended");
            } else {
                note!("{who}: password set; other console sessions ended");
            }
        }
        UserCommand::LoginLink { email } => {
            let who = email.clone();
            let config = config.clone();
            let url = store
                .write_blocking(move |c| {
                    let user = store::users::by_email(c, &email)?;
                    if !user.active {
                        return Err(StoreError::Conflict(format!(
                            "{} is deactivated; activate them first",
                            user.email
                        )));
                    }
                    crate::conversations::sign_in::create_link(c, &config, &user, now_ms())
                })
                .map_err(|e| user_error(&who, e))?;
            outln(&url)?;
        }
    }
    Ok(())
}

/// Applies a change to the user with this email (audited as `cli`) and
/// says what the user is now on stderr.
fn change_user(store: &Store, email: String, change: store::users::Change) -> anyhow::Result<()> {
    let who = email.clone();
    let (_, after) = store
        .write_blocking(move |c| {
            let user = store::users::by_email(c, &email)?;
            store::users::change(c, &Actor::cli(), user.id, &change)
        })
        .map_err(|e| user_error(&who, e))?;
    let state = if after.active { "active" } else { "inactive" };
    note!("{}: {}, {state}", after.email, after.role);
    Ok(())
}

/// A store error of a user command, in words.
fn user_error(email: &str, e: StoreError) -> anyhow::Error {
    match e {
        StoreError::NotFound => anyhow::anyhow!("no user has the email address `{email}`"),
        StoreError::Conflict(m) => anyhow::anyhow!("refused: {m}"),
        other => other.into(),
    }
}

async fn sender_command(
    store: &Store,
    config: &std::sync::Arc<Config>,
    command: SenderCommand,
) -> anyhow::Result<()> {
    use crate::senders::service;
    let show = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default();
    match command {
        SenderCommand::Add {
            email,
            name,
            reply_mode,
            dkim,
        } => {
            let new = service::NewSender {
                email: email.clone(),
                name,
                reply_mode: Some(reply_mode),
                dkim_algorithm: dkim,
                ..Default::default()
            };
            let v = service::add_sender(store, config, new, Actor::cli()).await?;
            outln(&show(&v))?;
            note!(
                "Forward mail for {email} to {}. The verification mail with its code is queued; it leaves when `backchannel serve` runs.",
                v["forwarding_address"].as_str().unwrap_or("")
            );
            note!(
                "DNS records to publish (`backchannel sender check --email {email}` checks them):"
            );
            for check in ["spf", "dkim", "dmarc"] {
                let c = &v["dns"][check];
                note!(
                    "  {:<5} [{}] TXT {} {}",
                    check.to_ascii_uppercase(),
                    c["status"].as_str().unwrap_or("unknown"),
                    c["record_name"].as_str().unwrap_or(""),
                    match c["record_to_publish"].as_str() {
                        Some(r) => format!("\"{r}\""),
                        None => format!("(none: {})", c["detail"].as_str().unwrap_or("")),
                    }
                );
            }
        }
        SenderCommand::List => {
            let config = config.clone();
            let list = store
                .read(move |c| {
                    service::list(c, &config).map_err(|e| StoreError::Database(e.to_string()))
                })
                .await?;
            for v in list {
                outln(&format!(
                    "{}\t{}\tforwarding={}\t{}",
                    v["email"].as_str().unwrap_or(""),
                    v["status"].as_str().unwrap_or(""),
                    v["forwarding"].as_str().unwrap_or(""),
                    v["forwarding_address"].as_str().unwrap_or("")
                ))?;
            }
        }
        SenderCommand::Verify { email, code } => {
            let config = config.clone();
            let v = store
                .write_with(move |c| {
                    service::verify_audited(c, &config, &Actor::cli(), &email, &code)
                })
                .await?
                .into_result()?;
            outln(&show(&v))?;
        }
        SenderCommand::Check { email } => {
            let resolver = crate::senders::dns::Resolver::new(&config.dns)?;
            let v =
                service::check_sender(store, config, &resolver, &email, std::time::Duration::ZERO)
                    .await?;
            outln(&show(&v))?;
        }
    }
    Ok(())
}

/// Writes a line to stderr; a closed stderr is not worth a panic.
macro_rules! note {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
use note;

/// stdout was closed before everything was printed (`| head`): the
/// command ends quietly, with exit status 0.
#[derive(Debug, thiserror::Error)]
#[error("stdout is closed")]
struct StdoutClosed;

/// Prints `text` as it is; a closed stdout is [`StdoutClosed`].
fn out(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("write to stdout")),
    }
}

/// Prints `line` and a newline.
fn outln(line: &str) -> anyhow::Result<()> {
    out(&format!("{line}\n"))
}

/// Structured logs on stderr: text by default, JSON on request.
/// `RUST_LOG` wins over `log.level` when set.
///
/// A plain level (`info`, the usual case) is a static maximum level: an
/// `EnvFilter` looks up its span table every time a span is entered or
/// left, and the SMTP session's span is entered at every poll of the
/// session (a visible share of the listener's CPU under load). Directives
/// (`info,backchannel::smtp=debug`, or `RUST_LOG`) still get the
/// `EnvFilter`.
pub fn init_tracing(format: LogFormat, level: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::filter::LevelFilter;
    let builder = tracing_subscriber::fmt()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let plain = match std::env::var_os("RUST_LOG") {
        Some(_) => None,
        None => level.trim().parse::<LevelFilter>().ok(),
    };
    let _ = match (plain, format) {
        (Some(max), LogFormat::Json) => builder
            .with_max_level(max)
            .json()
            .flatten_event(true)
            .try_init(),
        (Some(max), LogFormat::Text) => builder.with_max_level(max).try_init(),
        (None, format) => {
            let filter =
                EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
            let builder = builder.with_env_filter(filter);
            match format {
                LogFormat::Json => builder.json().flatten_event(true).try_init(),
                LogFormat::Text => builder.try_init(),
            }
        }
    };
}
