//! Configuration: the TOML file and `BACKCHANNEL_<SECTION>_<KEY>`
//! environment overrides, merged over the embedded defaults, deserialized
//! into the typed sections and validated → a [`Config`]. Every error names
//! the offending key; `backchannel config` prints the merged keys with
//! secrets redacted.
//!
//! Each section's file owns its typed struct, its defaults (as TOML text:
//! exactly what `backchannel config` prints for a key nobody set) and its
//! validation: `smtp.rs`, `imap.rs`, `submission.rs`, `http.rs` (`[http]`, `[jmap]`,
//! `[portal]`), `outbound.rs` (`[outbound]`, `[notifications]`),
//! `webhooks.rs`, `ingest.rs` (`[ingest]`, `[dns]`, `[senders]`),
//! `abuse.rs` (`[limits]`). `values.rs` holds the value parsers they share,
//! `ranges.rs` the address ranges (`Cidr`, `Exempt`, `AllowList`). This
//! module imports nothing else of the crate: the modules that act on the
//! config depend on it, never the other way.

mod abuse;
mod http;
mod imap;
mod ingest;
mod outbound;
mod ranges;
mod smtp;
mod submission;
mod values;
mod webhooks;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::Deserializer;

pub use abuse::LimitsConfig;
pub use http::{ConsoleConfig, HttpConfig, JmapConfig, PortalConfig};
pub use imap::ImapConfig;
pub use ingest::{DnsConfig, IngestConfig, SendersConfig};
pub use outbound::{
    NotificationsConfig, OutboundConfig, OutboundMode, RelayTls, RelayUrl, redact_url,
};
pub use ranges::{AllowList, Cidr, Exempt, normalize_host};
pub use smtp::SmtpConfig;
pub use submission::SubmissionConfig;
pub use values::{TlsFiles, parse_duration};
pub use webhooks::WebhooksConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML{}: {message}", located(.at))]
    Syntax {
        path: PathBuf,
        /// Where the parser stopped, when it says.
        at: Option<Position>,
        message: String,
    },
    #[error("unknown config key `{0}`")]
    UnknownKey(String),
    #[error("environment variable {var} does not name a config key")]
    UnknownEnv { var: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

/// A place in a config file, both counted from 1 (columns in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` of `text`.
    fn of(text: &str, offset: usize) -> Position {
        let before = &text.as_bytes()[..offset.min(text.len())];
        let line_start = before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        Position {
            line: before.iter().filter(|b| **b == b'\n').count() + 1,
            column: String::from_utf8_lossy(&before[line_start..])
                .chars()
                .count()
                + 1,
        }
    }
}

fn located(at: &Option<Position>) -> String {
    match at {
        Some(p) => format!(" at line {}, column {}", p.line, p.column),
        None => String::new(),
    }
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

/// Parses TOML text; a syntax error names `path` and where in the text.
fn parse_toml(path: &Path, text: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>()
        .map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            at: e.span().map(|span| Position::of(text, span.start)),
            message: e.message().to_string(),
        })
}

// ---------------------------------------------------------------------------
// Embedded defaults: every key there is, in the order they are printed.

const TOP_DEFAULTS: &str = r#"
domain = "localhost"
data_dir = "./backchannel-data"
"#;

const LOG_DEFAULTS: &str = r#"
format = "text"
level = "info"
"#;

/// The sections and their defaults, in the order they are printed.
const SECTIONS: [(&str, &str); 16] = [
    ("log", LOG_DEFAULTS),
    ("smtp", smtp::DEFAULTS),
    ("http", http::HTTP_DEFAULTS),
    ("imap", imap::DEFAULTS),
    ("submission", submission::DEFAULTS),
    ("jmap", http::JMAP_DEFAULTS),
    ("outbound", outbound::DEFAULTS),
    ("notifications", outbound::NOTIFICATIONS_DEFAULTS),
    ("dns", ingest::DNS_DEFAULTS),
    ("ingest", ingest::INGEST_DEFAULTS),
    ("webhooks", webhooks::DEFAULTS),
    ("senders", ingest::SENDERS_DEFAULTS),
    ("portal", http::PORTAL_DEFAULTS),
    ("console", http::CONSOLE_DEFAULTS),
    ("limits", abuse::DEFAULTS),
    ("store", STORE_DEFAULTS),
];

/// `[store]`: "" keeps the store in SQLite inside `data_dir`; a
/// `postgres://` URL puts it in PostgreSQL, shared by several nodes.
const STORE_DEFAULTS: &str = r#"
url = ""
takeover_after = "60s"
"#;

/// `[store]` (SPEC §2, §13).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// "" or `postgres://user:pass@host:port/db[?sslmode=require&sslrootcert=PATH]`.
    #[serde(deserialize_with = "store_url")]
    pub url: String,
    /// Several nodes: how long the work of a node that stopped (mail it
    /// accepted and had not threaded, sends and webhook attempts it had
    /// started) waits before another node takes it over. A live node
    /// finishes its own long before.
    #[serde(deserialize_with = "values::duration")]
    pub takeover_after: std::time::Duration,
}

impl StoreConfig {
    /// How often a node looks for work of a stopped node to take over.
    pub fn takeover_scan(&self) -> std::time::Duration {
        (self.takeover_after / 2).clamp(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(15),
        )
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &redact_url(&self.url))
            .field("takeover_after", &self.takeover_after)
            .finish()
    }
}

fn store_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let url = String::deserialize(d)?;
    if url.is_empty() {
        return Ok(url);
    }
    match url::Url::parse(&url) {
        Ok(u) if matches!(u.scheme(), "postgres" | "postgresql") && u.host_str().is_some() => {
            Ok(url)
        }
        _ => Err(values::bad_value(format_args!(
            "`{}`: expected \"\" (SQLite in data_dir) or postgres://user:pass@host:port/db",
            redact_url(&url)
        ))),
    }
}

/// Every key with its default value. The section structs have no serde
/// defaults: a key missing here, or one here that no struct has, fails
/// every load (and `embedded_defaults_match_the_spec`).
fn default_table() -> Result<toml::Table, ConfigError> {
    let parse = |name: &str, text: &str| {
        text.parse::<toml::Table>()
            .map_err(|e| ConfigError::Invalid {
                key: "(defaults)".into(),
                message: format!("the built-in defaults of {name} are not valid TOML: {e}"),
            })
    };
    let mut table = parse("the top level", TOP_DEFAULTS)?;
    for (name, text) in SECTIONS {
        table.insert(name.to_string(), toml::Value::Table(parse(name, text)?));
    }
    Ok(table)
}

// ---------------------------------------------------------------------------
// The typed form.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone)]
pub struct Config {
    /// Lowercased, without a final dot.
    pub domain: String,
    pub data_dir: PathBuf,
    pub log_format: LogFormat,
    /// A tracing filter (`RUST_LOG` syntax).
    pub log_level: String,
    pub smtp: SmtpConfig,
    pub http: HttpConfig,
    pub imap: ImapConfig,
    /// `[submission]`: agents' mail clients send here (SPEC §12).
    pub submission: SubmissionConfig,
    pub jmap: JmapConfig,
    pub outbound: OutboundConfig,
    pub notifications: NotificationsConfig,
    pub dns: DnsConfig,
    /// Authenticate inbound mail (SPF/DKIM/DMARC/ARC).
    pub ingest_authenticate: bool,
    /// Per-thread quotas.
    pub ingest: IngestConfig,
    pub senders: SendersConfig,
    pub webhooks: WebhooksConfig,
    pub portal: PortalConfig,
    /// `[console]`: the web console's sessions (SPEC §11).
    pub console: ConsoleConfig,
    pub limits: LimitsConfig,
    /// `[store]`: SQLite in `data_dir` or a shared PostgreSQL (SPEC §13).
    pub store: StoreConfig,
    /// Every key as merged (defaults, file, environment), kept for
    /// `backchannel config`.
    effective: toml::Table,
}

/// The top level of the merged table: what [`Config`] is built from.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Sections {
    #[serde(deserialize_with = "values::domain_name")]
    domain: String,
    #[serde(deserialize_with = "values::non_empty_path")]
    data_dir: PathBuf,
    log: LogSection,
    smtp: SmtpConfig,
    http: HttpConfig,
    imap: ImapConfig,
    submission: SubmissionConfig,
    jmap: JmapConfig,
    outbound: OutboundConfig,
    notifications: NotificationsConfig,
    dns: DnsConfig,
    ingest: ingest::IngestSection,
    webhooks: WebhooksConfig,
    senders: SendersConfig,
    portal: PortalConfig,
    console: ConsoleConfig,
    limits: LimitsConfig,
    store: StoreConfig,
}

/// `[log]`; [`Config`] holds it as `log_format` and `log_level`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogSection {
    #[serde(deserialize_with = "log_format")]
    format: LogFormat,
    #[serde(deserialize_with = "log_filter")]
    level: String,
}

fn log_format<'de, D: Deserializer<'de>>(d: D) -> Result<LogFormat, D::Error> {
    match String::deserialize(d)?.as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(values::bad_value(format_args!(
            "`{other}`: expected text or json"
        ))),
    }
}

fn log_filter<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let level = String::deserialize(d)?;
    if level.parse::<tracing_subscriber::EnvFilter>().is_err() {
        return Err(values::bad_value(format_args!(
            "`{level}` is not a log filter"
        )));
    }
    Ok(level)
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("domain", &self.domain)
            .field("data_dir", &self.data_dir)
            .field("log_format", &self.log_format)
            .field("smtp", &self.smtp)
            .field("http", &self.http)
            .field("imap", &self.imap)
            .field("submission", &self.submission)
            .field("jmap", &self.jmap)
            .field("outbound", &self.outbound)
            .field("notifications", &self.notifications)
            .field("dns", &self.dns)
            .field("webhooks", &self.webhooks)
            .field("portal", &self.portal)
            .field("console", &self.console)
            .field("limits", &self.limits)
            .field("store", &self.store)
            .finish()
    }
}

impl Config {
    /// Loads the config: `path` if given, embedded defaults otherwise, then
    /// the `BACKCHANNEL_*` variables of `env` on top.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let file_table = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                parse_toml(path, &text)?
            }
            None => toml::Table::new(),
        };
        Self::from_table(file_table, env)
    }

    /// Loads from TOML text (tests and embedding).
    pub fn from_toml_str(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Self::from_table(parse_toml(Path::new("<string>"), text)?, env)
    }

    fn from_table(
        mut table: toml::Table,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut effective = default_table()?;
        check_known_keys(&table, &effective, "")?;
        apply_env(&mut table, &effective, env)?;
        overlay(&mut effective, table);
        let sections: Sections =
            serde_path_to_error::deserialize(toml::Value::Table(effective.clone()))
                .map_err(values::config_error)?;
        Self::validate(sections, effective)
    }

    /// The rules each section checks on itself, then those across sections.
    fn validate(s: Sections, effective: toml::Table) -> Result<Config, ConfigError> {
        let Sections {
            domain,
            data_dir,
            log,
            mut smtp,
            mut http,
            mut imap,
            mut submission,
            mut jmap,
            mut outbound,
            notifications,
            dns,
            ingest,
            webhooks,
            senders,
            portal,
            console,
            limits,
            store,
        } = s;
        smtp.validate(&domain)?;
        http.validate()?;
        imap.validate()?;
        submission.validate(&smtp)?;
        jmap.validate(&http)?;
        outbound.validate()?;
        notifications.validate()?;
        webhooks.validate()?;
        portal.validate()?;
        console.validate()?;
        limits.validate()?;
        let quotas = ingest.quotas()?;
        senders.validate()?;
        Ok(Config {
            domain,
            data_dir,
            log_format: log.format,
            log_level: log.level,
            smtp,
            http,
            imap,
            submission,
            jmap,
            outbound,
            notifications,
            dns,
            ingest_authenticate: ingest.authenticate,
            ingest: quotas,
            senders,
            webhooks,
            portal,
            console,
            limits,
            store,
            effective,
        })
    }

    /// Path of the SQLite database inside `data_dir`.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("backchannel.db")
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        let mut table = self.effective.clone();
        if let Some(toml::Value::Table(outbound)) = table.get_mut("outbound")
            && let Some(toml::Value::String(url)) = outbound.get_mut("relay_url")
        {
            *url = redact_url(url);
        }
        if let Some(toml::Value::Table(store)) = table.get_mut("store")
            && let Some(toml::Value::String(url)) = store.get_mut("url")
        {
            *url = redact_url(url);
        }
        toml::to_string_pretty(&table).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

// ---------------------------------------------------------------------------
// The merged table: file keys checked against the defaults, environment
// overrides, then both laid over the defaults.

/// Sets the keys of `top` in `base`, section by section; a key keeps its
/// place (the defaults' order), so the printed config reads the same
/// whatever order the file has.
fn overlay(base: &mut toml::Table, top: toml::Table) {
    for (key, value) in top {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(section)), toml::Value::Table(keys)) => section.extend(keys),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn check_known_keys(
    table: &toml::Table,
    defaults: &toml::Table,
    prefix: &str,
) -> Result<(), ConfigError> {
    for (key, value) in table {
        let full = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match defaults.get(key) {
            None => return Err(ConfigError::UnknownKey(full)),
            Some(toml::Value::Table(sub_defaults)) => match value {
                toml::Value::Table(sub) => check_known_keys(sub, sub_defaults, &full)?,
                _ => return Err(invalid(&full, "must be a table ([section])")),
            },
            Some(_) => {}
        }
    }
    Ok(())
}

/// Applies `BACKCHANNEL_<SECTION>_<KEY>` (or `BACKCHANNEL_<KEY>` for
/// top-level keys). The value is read with the type the key has.
fn apply_env(
    table: &mut toml::Table,
    defaults: &toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let vars: BTreeMap<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("BACKCHANNEL_") && k != "BACKCHANNEL_CONFIG")
        .collect();
    for (var, value) in vars {
        let name = var["BACKCHANNEL_".len()..].to_ascii_lowercase();
        let mut target: Option<(Option<String>, String)> = None;
        for (section, sub) in defaults {
            if let toml::Value::Table(sub) = sub
                && let Some(key) = name.strip_prefix(&format!("{section}_"))
                && sub.contains_key(key)
            {
                target = Some((Some(section.clone()), key.to_string()));
            }
        }
        if target.is_none() && defaults.get(&name).is_some_and(|v| !v.is_table()) {
            target = Some((None, name.clone()));
        }
        let Some((section, key)) = target else {
            return Err(ConfigError::UnknownEnv { var });
        };
        let (default_value, dest) = match &section {
            Some(section) => {
                let default_value = defaults
                    .get(section)
                    .and_then(|s| s.get(&key))
                    .cloned()
                    .ok_or_else(|| ConfigError::UnknownEnv { var: var.clone() })?;
                let entry = table
                    .entry(section.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                let toml::Value::Table(dest) = entry else {
                    return Err(invalid(section, "must be a table ([section])"));
                };
                (default_value, dest)
            }
            None => (
                defaults
                    .get(&key)
                    .cloned()
                    .ok_or_else(|| ConfigError::UnknownEnv { var: var.clone() })?,
                &mut *table,
            ),
        };
        let full_key = match &section {
            Some(s) => format!("{s}.{key}"),
            None => key.clone(),
        };
        let parsed = env_value(&default_value, &value)
            .map_err(|m| invalid(&full_key, format!("from {var}: {m}")))?;
        dest.insert(key, parsed);
    }
    Ok(())
}

fn env_value(like: &toml::Value, text: &str) -> Result<toml::Value, String> {
    Ok(match like {
        toml::Value::Integer(_) => toml::Value::Integer(
            text.trim()
                .parse()
                .map_err(|_| format!("`{text}` is not a whole number"))?,
        ),
        toml::Value::Boolean(_) => toml::Value::Boolean(match text.trim() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => return Err(format!("`{text}` is not true or false")),
        }),
        toml::Value::Array(_) => {
            let t = text.trim();
            if t.starts_with('[') {
                let wrapped = format!("v = {t}");
                let parsed: toml::Table = wrapped
                    .parse()
                    .map_err(|_| format!("`{text}` is not a TOML array"))?;
                parsed
                    .get("v")
                    .cloned()
                    .unwrap_or(toml::Value::Array(Vec::new()))
            } else {
                toml::Value::Array(
                    t.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| toml::Value::String(s.to_string()))
                        .collect(),
                )
            }
        }
        _ => toml::Value::String(text.to_string()),
    })
}
