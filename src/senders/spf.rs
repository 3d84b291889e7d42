//! SPF policy evaluation (RFC 7208 `check_host`) over the small
//! [`Dns`] trait, for the sender DNS check: would a domain's policy give
//! `pass` to one of the gateway's outbound IPs, and does it reach the
//! gateway's `include:` domain.
//!
//! Supported: the mechanisms `all`, `include`, `a`, `mx`, `ip4`, `ip6`,
//! `exists` and `ptr` (never evaluated: RFC 7208 §5.5 says not to use it, so
//! it counts as a DNS term and does not match), qualifiers `+ - ~ ?`, the
//! `redirect=` modifier (`exp=` is parsed and ignored, other modifiers are
//! ignored), dual CIDR lengths, macros (`%{s l o d i p v h}` with digit and
//! `r` transformers and delimiters; `p` expands to `unknown`), and the
//! limits: at most 10 DNS-querying terms, at most 2 void lookups, at most 10
//! MX names per `mx`, include/redirect loops.
//!
//! When the subject is an include domain rather than an IP
//! ([`Target::Include`]), `include:`/`redirect=` of exactly that domain
//! match; `a`, `mx`, `exists` and `ptr` count towards the 10 terms but are
//! not resolved and never match, and so do terms whose macros need the IP.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::pin::Pin;

use super::dns::Dns;

/// RFC 7208 §4.6.4: DNS-querying terms per evaluation.
pub const MAX_DNS_TERMS: usize = 10;
/// RFC 7208 §4.6.4: lookups that find nothing.
pub const MAX_VOID_LOOKUPS: usize = 2;
/// RFC 7208 §4.6.4: MX names one `mx` may look at.
pub const MAX_MX_NAMES: usize = 10;
/// Longest domain name a lookup may use (RFC 7208 §7.3 truncation).
const MAX_DOMAIN_LEN: usize = 253;

/// What the policy is evaluated for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Would mail from this IP pass?
    Ip(IpAddr),
    /// Does the policy delegate to this domain (`+include:` or `redirect=`
    /// reached in evaluation order)?
    Include(String),
}

/// The result of `check_host` (RFC 7208 §2.6), with the reason for the two
/// errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpfResult {
    Pass,
    Fail,
    SoftFail,
    Neutral,
    None,
    TempError(String),
    PermError(String),
}

impl SpfResult {
    pub fn name(&self) -> &'static str {
        match self {
            SpfResult::Pass => "pass",
            SpfResult::Fail => "fail",
            SpfResult::SoftFail => "softfail",
            SpfResult::Neutral => "neutral",
            SpfResult::None => "none",
            SpfResult::TempError(_) => "temperror",
            SpfResult::PermError(_) => "permerror",
        }
    }
}

/// One evaluation: its result, the counts against the RFC limits, and notes
/// on terms that could not be evaluated exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    pub result: SpfResult,
    pub dns_terms: usize,
    pub void_lookups: usize,
    pub notes: Vec<String>,
}

/// The identity being checked, for macros: the sender address (`%{s}`,
/// `%{l}`, `%{o}`) and the HELO name (`%{h}`).
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub sender: &'a str,
    pub helo: &'a str,
}

// ---------------------------------------------------------------------------
// Parsing

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qualifier {
    Pass,
    Fail,
    SoftFail,
    Neutral,
}

impl Qualifier {
    fn outcome(self) -> Outcome {
        match self {
            Qualifier::Pass => Outcome::Pass,
            Qualifier::Fail => Outcome::Fail,
            Qualifier::SoftFail => Outcome::SoftFail,
            Qualifier::Neutral => Outcome::Neutral,
        }
    }
}

/// A mechanism; domain specs are kept unexpanded (they may hold macros).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mechanism {
    All,
    Include(String),
    A {
        domain: Option<String>,
        cidr4: u8,
        cidr6: u8,
    },
    Mx {
        domain: Option<String>,
        cidr4: u8,
        cidr6: u8,
    },
    Ptr(Option<String>),
    Ip4(Ipv4Addr, u8),
    Ip6(Ipv6Addr, u8),
    Exists(String),
}

impl Mechanism {
    /// Whether evaluating it queries DNS (and so counts towards the limit).
    fn queries_dns(&self) -> bool {
        matches!(
            self,
            Mechanism::Include(_)
                | Mechanism::A { .. }
                | Mechanism::Mx { .. }
                | Mechanism::Ptr(_)
                | Mechanism::Exists(_)
        )
    }
}

/// A parsed `v=spf1` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub directives: Vec<(Qualifier, Mechanism)>,
    pub redirect: Option<String>,
    pub exp: Option<String>,
}

/// Whether a TXT record is an SPF record: `v=spf1` alone or followed by a
/// space (RFC 7208 §4.5), case-insensitively.
pub fn is_spf_record(txt: &str) -> bool {
    let t = txt.as_bytes();
    t.len() >= 6 && t[..6].eq_ignore_ascii_case(b"v=spf1") && (t.len() == 6 || t[6] == b' ')
}

/// Parses an SPF record; any syntax error is a permerror (RFC 7208 §4.6).
pub fn parse(record: &str) -> Result<Policy, String> {
    if !is_spf_record(record) {
        return Err("not an SPF record (no v=spf1)".to_string());
    }
    let mut policy = Policy {
        directives: Vec::new(),
        redirect: None,
        exp: None,
    };
    for term in record[6..].split_ascii_whitespace() {
        match parse_term(term)? {
            Term::Directive(q, m) => policy.directives.push((q, m)),
            Term::Redirect(spec) => {
                if policy.redirect.replace(spec).is_some() {
                    return Err("redirect= appears more than once".to_string());
                }
            }
            Term::Exp(spec) => {
                if policy.exp.replace(spec).is_some() {
                    return Err("exp= appears more than once".to_string());
                }
            }
            Term::Unknown => {}
        }
    }
    Ok(policy)
}

enum Term {
    Directive(Qualifier, Mechanism),
    Redirect(String),
    Exp(String),
    Unknown,
}

fn parse_term(term: &str) -> Result<Term, String> {
    if let Some((name, value)) = term.split_once('=')
        && is_modifier_name(name)
    {
        check_macro_string(value).map_err(|e| format!("`{term}`: {e}"))?;
        return match name.to_ascii_lowercase().as_str() {
            "redirect" => {
                check_domain_spec(value).map_err(|e| format!("`{term}`: {e}"))?;
                Ok(Term::Redirect(value.to_string()))
            }
            "exp" => {
                check_domain_spec(value).map_err(|e| format!("`{term}`: {e}"))?;
                Ok(Term::Exp(value.to_string()))
            }
            _ => Ok(Term::Unknown),
        };
    }
    let (qualifier, rest) = match term.as_bytes().first() {
        Some(b'+') => (Qualifier::Pass, &term[1..]),
        Some(b'-') => (Qualifier::Fail, &term[1..]),
        Some(b'~') => (Qualifier::SoftFail, &term[1..]),
        Some(b'?') => (Qualifier::Neutral, &term[1..]),
        _ => (Qualifier::Pass, term),
    };
    let name_end = rest.find([':', '/']).unwrap_or(rest.len());
    let (name, arg) = rest.split_at(name_end);
    let bad = |why: &str| format!("`{term}`: {why}");
    let mechanism = match name.to_ascii_lowercase().as_str() {
        "all" if arg.is_empty() => Mechanism::All,
        "all" => return Err(bad("all takes no argument")),
        "include" => Mechanism::Include(required_domain(arg).map_err(|e| bad(&e))?),
        "exists" => Mechanism::Exists(required_domain(arg).map_err(|e| bad(&e))?),
        "a" | "mx" => {
            let (domain, cidr4, cidr6) = domain_and_cidr(arg).map_err(|e| bad(&e))?;
            if name.eq_ignore_ascii_case("a") {
                Mechanism::A {
                    domain,
                    cidr4,
                    cidr6,
                }
            } else {
                Mechanism::Mx {
                    domain,
                    cidr4,
                    cidr6,
                }
            }
        }
        "ptr" if arg.is_empty() => Mechanism::Ptr(None),
        "ptr" => Mechanism::Ptr(Some(required_domain(arg).map_err(|e| bad(&e))?)),
        "ip4" => {
            let value = arg
                .strip_prefix(':')
                .ok_or_else(|| bad("ip4 needs an address"))?;
            let (addr, len) = split_cidr(value, 32).map_err(|e| bad(&e))?;
            let addr = addr
                .parse::<Ipv4Addr>()
                .map_err(|_| bad("not an IPv4 address"))?;
            Mechanism::Ip4(addr, len)
        }
        "ip6" => {
            let value = arg
                .strip_prefix(':')
                .ok_or_else(|| bad("ip6 needs an address"))?;
            let (addr, len) = split_cidr(value, 128).map_err(|e| bad(&e))?;
            let addr = addr
                .parse::<Ipv6Addr>()
                .map_err(|_| bad("not an IPv6 address"))?;
            Mechanism::Ip6(addr, len)
        }
        _ => return Err(bad("unknown mechanism")),
    };
    Ok(Term::Directive(qualifier, mechanism))
}

/// `name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." )`.
fn is_modifier_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn required_domain(arg: &str) -> Result<String, String> {
    let spec = arg
        .strip_prefix(':')
        .filter(|s| !s.is_empty())
        .ok_or("needs a domain")?;
    check_domain_spec(spec)?;
    Ok(spec.to_string())
}

/// `[":" domain-spec] [ip4-cidr-length] ["/" ip6-cidr-length]`.
fn domain_and_cidr(arg: &str) -> Result<(Option<String>, u8, u8), String> {
    let (domain, cidr) = match arg.strip_prefix(':') {
        Some(rest) => {
            let (domain, cidr) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            if domain.is_empty() {
                return Err("empty domain".to_string());
            }
            check_domain_spec(domain)?;
            (Some(domain.to_string()), cidr)
        }
        None => (None, arg),
    };
    let (v4, v6) = if cidr.is_empty() {
        (None, None)
    } else if let Some(v6) = cidr.strip_prefix("//") {
        (None, Some(v6))
    } else if let Some(rest) = cidr.strip_prefix('/') {
        match rest.split_once("//") {
            Some((v4, v6)) => (Some(v4), Some(v6)),
            None => (Some(rest), None),
        }
    } else {
        return Err("bad CIDR length".to_string());
    };
    let cidr4 = v4.map(|v| cidr_len(v, 32)).transpose()?.unwrap_or(32);
    let cidr6 = v6.map(|v| cidr_len(v, 128)).transpose()?.unwrap_or(128);
    Ok((domain, cidr4, cidr6))
}

fn split_cidr(value: &str, max: u8) -> Result<(&str, u8), String> {
    match value.rsplit_once('/') {
        Some((addr, len)) => Ok((addr, cidr_len(len, max)?)),
        None => Ok((value, max)),
    }
}

fn cidr_len(text: &str, max: u8) -> Result<u8, String> {
    let ok = !text.is_empty()
        && text.len() <= 3
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    match text.parse::<u8>() {
        Ok(n) if ok && n <= max => Ok(n),
        _ => Err(format!("bad CIDR length /{text} (0 to {max})")),
    }
}

/// A domain spec without macros must be a domain name; one with macros
/// must have well-formed macros.
fn check_domain_spec(spec: &str) -> Result<(), String> {
    check_macro_string(spec)?;
    if !spec.contains('%') && !valid_domain(spec.trim_end_matches('.')) {
        return Err(format!("{spec:?} is not a domain name"));
    }
    Ok(())
}

fn check_macro_string(spec: &str) -> Result<(), String> {
    let vars = Vars {
        sender: "postmaster@example.com",
        helo: "example.com",
        domain: "example.com",
        ip: Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
    };
    match expand(spec, &vars) {
        Ok(_) => Ok(()),
        Err(MacroError::Syntax(e)) => Err(e),
        Err(MacroError::Unavailable(_)) => Ok(()),
    }
}

/// A domain name: labels of 1–63 letters, digits, `-` or `_`, at least
/// two of them, at most 253 characters, a top label that is not all
/// digits.
pub fn valid_domain(domain: &str) -> bool {
    if domain.is_empty() || domain.len() > MAX_DOMAIN_LEN {
        return false;
    }
    let labels: Vec<&str> = domain.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        && labels
            .last()
            .is_some_and(|t| !t.bytes().all(|b| b.is_ascii_digit()))
}

// ---------------------------------------------------------------------------
// Macros (RFC 7208 §7)

struct Vars<'a> {
    sender: &'a str,
    helo: &'a str,
    domain: &'a str,
    ip: Option<IpAddr>,
}

#[derive(Debug, PartialEq, Eq)]
enum MacroError {
    Syntax(String),
    /// The letter needs a value this evaluation does not have (the IP).
    Unavailable(char),
}

fn expand(spec: &str, vars: &Vars<'_>) -> Result<String, MacroError> {
    let syntax = |why: &str| MacroError::Syntax(format!("bad macro in {spec:?}: {why}"));
    let mut out = String::new();
    let mut chars = spec.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('_') => out.push(' '),
            Some('-') => out.push_str("%20"),
            Some('{') => {
                let letter = chars.next().ok_or_else(|| syntax("unterminated"))?;
                let mut digits = String::new();
                let mut reverse = false;
                let mut delimiters = String::new();
                loop {
                    match chars.next() {
                        None => return Err(syntax("unterminated")),
                        Some('}') => break,
                        Some(d) if d.is_ascii_digit() && !reverse && delimiters.is_empty() => {
                            digits.push(d)
                        }
                        Some('r' | 'R') if !reverse && delimiters.is_empty() => reverse = true,
                        Some(d) if ".-+,/_=".contains(d) => delimiters.push(d),
                        Some(_) => return Err(syntax("bad transformer")),
                    }
                }
                let value = macro_value(letter, vars).map_err(|e| match e {
                    MacroError::Syntax(why) => syntax(&why),
                    other => other,
                })?;
                let keep = if digits.is_empty() {
                    None
                } else {
                    match digits.parse::<usize>() {
                        Ok(0) | Err(_) => {
                            return Err(syntax("digit transformer must be 1 or more"));
                        }
                        Ok(n) => Some(n),
                    }
                };
                let delimiters = if delimiters.is_empty() {
                    ".".to_string()
                } else {
                    delimiters
                };
                let mut parts: Vec<&str> = value.split(|c| delimiters.contains(c)).collect();
                if reverse {
                    parts.reverse();
                }
                if let Some(n) = keep {
                    parts = parts.split_off(parts.len().saturating_sub(n));
                }
                let joined = parts.join(".");
                if letter.is_ascii_uppercase() {
                    out.push_str(&url_escape(&joined));
                } else {
                    out.push_str(&joined);
                }
            }
            _ => return Err(syntax("`%` must be followed by `{`, `%`, `_` or `-`")),
        }
    }
    Ok(out)
}

fn macro_value(letter: char, vars: &Vars<'_>) -> Result<String, MacroError> {
    let (local, sender_domain) = match vars.sender.rsplit_once('@') {
        Some((l, d)) if !l.is_empty() => (l, d),
        Some((_, d)) => ("postmaster", d),
        None => ("postmaster", vars.sender),
    };
    Ok(match letter.to_ascii_lowercase() {
        's' => format!("{local}@{sender_domain}"),
        'l' => local.to_string(),
        'o' => sender_domain.to_string(),
        'd' => vars.domain.to_string(),
        'h' => vars.helo.to_string(),
        // We never validate a PTR name (RFC 7208 §7.3 allows "unknown").
        'p' => "unknown".to_string(),
        'i' => match vars.ip {
            Some(IpAddr::V4(ip)) => ip.to_string(),
            Some(IpAddr::V6(ip)) => ip
                .octets()
                .iter()
                .flat_map(|b| [b >> 4, b & 0xf])
                .map(|n| format!("{n:x}"))
                .collect::<Vec<_>>()
                .join("."),
            None => return Err(MacroError::Unavailable(letter)),
        },
        'v' => match vars.ip {
            Some(IpAddr::V4(_)) => "in-addr".to_string(),
            Some(IpAddr::V6(_)) => "ip6".to_string(),
            None => return Err(MacroError::Unavailable(letter)),
        },
        'c' | 'r' | 't' => {
            return Err(MacroError::Syntax(format!(
                "%{{{letter}}} is only allowed in exp="
            )));
        }
        _ => {
            return Err(MacroError::Syntax(format!(
                "unknown macro letter {letter:?}"
            )));
        }
    })
}

fn url_escape(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Lowercase, no trailing dot, cut from the left to 253 characters at a
/// label boundary (RFC 7208 §7.3).
fn normalize(domain: &str) -> String {
    let mut d = domain.trim_end_matches('.').to_ascii_lowercase();
    while d.len() > MAX_DOMAIN_LEN {
        match d.split_once('.') {
            Some((_, rest)) => d = rest.to_string(),
            None => break,
        }
    }
    d
}

// ---------------------------------------------------------------------------
// Evaluation

/// The non-error results of `check_host`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Pass,
    Fail,
    SoftFail,
    Neutral,
    None,
}

/// What ends an evaluation at once.
enum Abort {
    Perm(String),
    Temp(String),
}

type Step<'s, T> = Pin<Box<dyn Future<Output = Result<T, Abort>> + Send + 's>>;

/// Evaluates `domain`'s policy for `target` (RFC 7208 §4).
pub async fn evaluate<D: Dns>(
    dns: &D,
    domain: &str,
    target: &Target,
    identity: Identity<'_>,
) -> Evaluation {
    let domain = normalize(domain);
    let target = match target {
        Target::Ip(ip) => Target::Ip(ip.to_canonical()),
        Target::Include(d) => Target::Include(normalize(d)),
    };
    let mut eval = Eval {
        dns,
        target: &target,
        identity,
        dns_terms: 0,
        void_lookups: 0,
        stack: Vec::new(),
        notes: Vec::new(),
    };
    let result = if !valid_domain(&domain) {
        eval.note(format!("{domain:?} is not a domain name"));
        SpfResult::None
    } else {
        match eval.check_host(domain).await {
            Ok(Outcome::Pass) => SpfResult::Pass,
            Ok(Outcome::Fail) => SpfResult::Fail,
            Ok(Outcome::SoftFail) => SpfResult::SoftFail,
            Ok(Outcome::Neutral) => SpfResult::Neutral,
            Ok(Outcome::None) => SpfResult::None,
            Err(Abort::Perm(why)) => SpfResult::PermError(why),
            Err(Abort::Temp(why)) => SpfResult::TempError(why),
        }
    };
    Evaluation {
        result,
        dns_terms: eval.dns_terms,
        void_lookups: eval.void_lookups,
        notes: eval.notes,
    }
}

struct Eval<'a, D> {
    dns: &'a D,
    target: &'a Target,
    identity: Identity<'a>,
    dns_terms: usize,
    void_lookups: usize,
    /// Domains whose policy is being evaluated, outermost first.
    stack: Vec<String>,
    notes: Vec<String>,
}

impl<'a, D: Dns> Eval<'a, D> {
    fn note(&mut self, note: String) {
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }

    fn check_host(&mut self, domain: String) -> Step<'_, Outcome> {
        Box::pin(async move {
            let records = self
                .dns
                .txt(&domain)
                .await
                .map_err(|e| Abort::Temp(format!("TXT lookup of {domain}: {e}")))?;
            let spf: Vec<&String> = records.iter().filter(|r| is_spf_record(r)).collect();
            let record = match spf.as_slice() {
                [] => return Ok(Outcome::None),
                [one] => *one,
                many => {
                    return Err(Abort::Perm(format!(
                        "{domain} publishes {} SPF records (RFC 7208 §4.5 allows one)",
                        many.len()
                    )));
                }
            };
            let policy =
                parse(record).map_err(|e| Abort::Perm(format!("SPF record of {domain}: {e}")))?;
            self.stack.push(domain.clone());
            let outcome = self.run(&domain, &policy).await;
            self.stack.pop();
            outcome
        })
    }

    fn run<'s>(&'s mut self, domain: &'s str, policy: &'s Policy) -> Step<'s, Outcome> {
        Box::pin(async move {
            for (qualifier, mechanism) in &policy.directives {
                if mechanism.queries_dns() {
                    self.count_term()?;
                }
                if self.matches(domain, mechanism).await? {
                    return Ok(qualifier.outcome());
                }
            }
            let Some(spec) = &policy.redirect else {
                return Ok(Outcome::Neutral);
            };
            self.count_term()?;
            let Some(next) = self.expand_domain(spec, domain, "redirect=")? else {
                return Ok(Outcome::Neutral);
            };
            if self.is_target_include(&next) {
                return Ok(Outcome::Pass);
            }
            self.check_loop(&next)?;
            match self.check_host(next.clone()).await? {
                Outcome::None => Err(Abort::Perm(format!(
                    "redirect={next} (from {domain}) has no SPF record"
                ))),
                other => Ok(other),
            }
        })
    }

    fn matches<'s>(&'s mut self, domain: &'s str, mechanism: &'s Mechanism) -> Step<'s, bool> {
        Box::pin(async move {
            let ip = match self.target {
                Target::Ip(ip) => Some(*ip),
                Target::Include(_) => None,
            };
            match mechanism {
                Mechanism::All => Ok(true),
                Mechanism::Ip4(net, len) => Ok(match ip {
                    Some(IpAddr::V4(ip)) => in_v4(ip, *net, *len),
                    _ => false,
                }),
                Mechanism::Ip6(net, len) => Ok(match ip {
                    Some(IpAddr::V6(ip)) => in_v6(ip, *net, *len),
                    _ => false,
                }),
                Mechanism::Include(spec) => {
                    let Some(name) = self.expand_domain(spec, domain, "include:")? else {
                        return Ok(false);
                    };
                    if self.is_target_include(&name) {
                        return Ok(true);
                    }
                    self.check_loop(&name)?;
                    match self.check_host(name.clone()).await? {
                        Outcome::Pass => Ok(true),
                        Outcome::Fail | Outcome::SoftFail | Outcome::Neutral => Ok(false),
                        Outcome::None => Err(Abort::Perm(format!(
                            "include:{name} (from {domain}) has no SPF record"
                        ))),
                    }
                }
                Mechanism::Ptr(_) => {
                    self.note(
                        "ptr is not evaluated (RFC 7208 §5.5 advises against it) and never matches"
                            .to_string(),
                    );
                    Ok(false)
                }
                Mechanism::A { .. } | Mechanism::Mx { .. } | Mechanism::Exists(_)
                    if ip.is_none() =>
                {
                    Ok(false)
                }
                Mechanism::A {
                    domain: spec,
                    cidr4,
                    cidr6,
                } => {
                    let Some(ip) = ip else { return Ok(false) };
                    let Some(name) = self.expand_optional(spec.as_deref(), domain, "a")? else {
                        return Ok(false);
                    };
                    let addrs = self.addresses(&name, ip.is_ipv6()).await?;
                    if addrs.is_empty() {
                        self.void_lookup(&name)?;
                    }
                    Ok(addrs.iter().any(|a| in_cidr(ip, *a, *cidr4, *cidr6)))
                }
                Mechanism::Mx {
                    domain: spec,
                    cidr4,
                    cidr6,
                } => {
                    let Some(ip) = ip else { return Ok(false) };
                    let Some(name) = self.expand_optional(spec.as_deref(), domain, "mx")? else {
                        return Ok(false);
                    };
                    let hosts = self
                        .dns
                        .mx(&name)
                        .await
                        .map_err(|e| Abort::Temp(format!("MX lookup of {name}: {e}")))?;
                    if hosts.is_empty() {
                        self.void_lookup(&name)?;
                    }
                    let hosts: Vec<String> = hosts
                        .iter()
                        .map(|h| normalize(h))
                        .filter(|h| !h.is_empty())
                        .collect();
                    if hosts.len() > MAX_MX_NAMES {
                        return Err(Abort::Perm(format!(
                            "mx:{name} has {} MX names (RFC 7208 §4.6.4 allows {MAX_MX_NAMES})",
                            hosts.len()
                        )));
                    }
                    for host in hosts {
                        let addrs = self.addresses(&host, ip.is_ipv6()).await?;
                        if addrs.iter().any(|a| in_cidr(ip, *a, *cidr4, *cidr6)) {
                            return Ok(true);
                        }
                    }
                    Ok(false)
                }
                Mechanism::Exists(spec) => {
                    let Some(name) = self.expand_domain(spec, domain, "exists:")? else {
                        return Ok(false);
                    };
                    let found = self
                        .dns
                        .a(&name)
                        .await
                        .map_err(|e| Abort::Temp(format!("A lookup of {name}: {e}")))?;
                    if found.is_empty() {
                        self.void_lookup(&name)?;
                    }
                    Ok(!found.is_empty())
                }
            }
        })
    }

    fn is_target_include(&self, name: &str) -> bool {
        matches!(self.target, Target::Include(t) if t == name)
    }

    fn count_term(&mut self) -> Result<(), Abort> {
        self.dns_terms += 1;
        if self.dns_terms > MAX_DNS_TERMS {
            return Err(Abort::Perm(format!(
                "the policy needs more than {MAX_DNS_TERMS} DNS-querying terms \
                 (include, a, mx, ptr, exists, redirect; RFC 7208 §4.6.4)"
            )));
        }
        Ok(())
    }

    fn void_lookup(&mut self, name: &str) -> Result<(), Abort> {
        self.void_lookups += 1;
        if self.void_lookups > MAX_VOID_LOOKUPS {
            return Err(Abort::Perm(format!(
                "more than {MAX_VOID_LOOKUPS} lookups found nothing (the last: {name}; RFC 7208 §4.6.4)"
            )));
        }
        Ok(())
    }

    fn check_loop(&self, name: &str) -> Result<(), Abort> {
        if self.stack.iter().any(|d| d == name) {
            return Err(Abort::Perm(format!(
                "loop: the policy of {name} includes itself (via {})",
                self.stack.join(" → ")
            )));
        }
        Ok(())
    }

    async fn addresses(&self, name: &str, v6: bool) -> Result<Vec<IpAddr>, Abort> {
        if v6 {
            let found = self
                .dns
                .aaaa(name)
                .await
                .map_err(|e| Abort::Temp(format!("AAAA lookup of {name}: {e}")))?;
            Ok(found.into_iter().map(IpAddr::V6).collect())
        } else {
            let found = self
                .dns
                .a(name)
                .await
                .map_err(|e| Abort::Temp(format!("A lookup of {name}: {e}")))?;
            Ok(found.into_iter().map(IpAddr::V4).collect())
        }
    }

    fn expand_optional(
        &mut self,
        spec: Option<&str>,
        domain: &str,
        term: &str,
    ) -> Result<Option<String>, Abort> {
        match spec {
            Some(spec) => self.expand_domain(spec, domain, term),
            None => Ok(Some(domain.to_string())),
        }
    }

    /// The domain of a term; `None` (the term does not match) when a macro
    /// needs a value we do not have or expands to something that is not a
    /// domain name.
    fn expand_domain(
        &mut self,
        spec: &str,
        domain: &str,
        term: &str,
    ) -> Result<Option<String>, Abort> {
        let vars = Vars {
            sender: self.identity.sender,
            helo: self.identity.helo,
            domain,
            ip: match self.target {
                Target::Ip(ip) => Some(*ip),
                Target::Include(_) => None,
            },
        };
        match expand(spec, &vars) {
            Ok(name) => {
                let name = normalize(&name);
                if valid_domain(&name) {
                    Ok(Some(name))
                } else if spec.contains('%') {
                    self.note(format!(
                        "{term}{spec} expands to {name:?}, not a domain name; treated as not matching"
                    ));
                    Ok(None)
                } else {
                    Err(Abort::Perm(format!("{term}{spec}: not a domain name")))
                }
            }
            Err(MacroError::Unavailable(letter)) => {
                self.note(format!(
                    "{term}{spec} uses %{{{letter}}}, which has no value when checking an include; \
                     treated as not matching"
                ));
                Ok(None)
            }
            Err(MacroError::Syntax(why)) => Err(Abort::Perm(why)),
        }
    }
}

fn in_cidr(ip: IpAddr, addr: IpAddr, cidr4: u8, cidr6: u8) -> bool {
    match (ip, addr.to_canonical()) {
        (IpAddr::V4(ip), IpAddr::V4(a)) => in_v4(ip, a, cidr4),
        (IpAddr::V6(ip), IpAddr::V6(a)) => in_v6(ip, a, cidr6),
        _ => false,
    }
}

fn in_v4(ip: Ipv4Addr, net: Ipv4Addr, len: u8) -> bool {
    let shift = 32u32.saturating_sub(u32::from(len));
    let mask = u32::MAX.checked_shl(shift).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, len: u8) -> bool {
    let shift = 128u32.saturating_sub(u32::from(len));
    let mask = u128::MAX.checked_shl(shift).unwrap_or(0);
    u128::from(ip) & mask == u128::from(net) & mask
}

/// The first and the last address of `net/len` (the same address for a
/// host route).
pub fn range_ends(net: IpAddr, len: u8) -> (IpAddr, IpAddr) {
    match net {
        IpAddr::V4(net) => {
            let shift = 32u32.saturating_sub(u32::from(len));
            let host = if shift == 0 {
                0
            } else {
                u32::MAX.checked_shr(32 - shift).unwrap_or(0)
            };
            let first = u32::from(net) & !host;
            (
                IpAddr::V4(Ipv4Addr::from(first)),
                IpAddr::V4(Ipv4Addr::from(first | host)),
            )
        }
        IpAddr::V6(net) => {
            let shift = 128u32.saturating_sub(u32::from(len));
            let host = if shift == 0 {
                0
            } else {
                u128::MAX.checked_shr(128 - shift).unwrap_or(0)
            };
            let first = u128::from(net) & !host;
            (
                IpAddr::V6(Ipv6Addr::from(first)),
                IpAddr::V6(Ipv6Addr::from(first | host)),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::senders::dns::testing::MapDns;

    const IP: &str = "192.0.2.10";
    const GW: &str = "_spf.gw.example";

    fn eval(dns: &MapDns, domain: &str, target: Target) -> Evaluation {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(evaluate(
            dns,
            domain,
            &target,
            Identity {
                sender: "support@example.com",
                helo: "gw.example",
            },
        ))
    }

    fn ip(text: &str) -> Target {
        Target::Ip(text.parse().expect("ip"))
    }

    /// (case, DNS, target, expected result name, text the reason or a note
    /// must contain)
    type Case = (&'static str, MapDns, Target, &'static str, &'static str);

    fn chain(n: usize) -> MapDns {
        let mut dns = MapDns::new().txt("example.com", "v=spf1 include:i1.example -all");
        let names: Vec<String> = (1..=n).map(|i| format!("i{i}.example")).collect();
        for (i, name) in names.iter().enumerate() {
            let record = if i + 1 < n {
                format!("v=spf1 include:i{}.example -all", i + 2)
            } else {
                format!("v=spf1 ip4:{IP} -all")
            };
            dns = dns.txt(name, &record);
        }
        dns
    }

    fn cases() -> Vec<Case> {
        let flat_includes = {
            let mut record = String::from("v=spf1");
            let mut dns = MapDns::new();
            for i in 1..=11 {
                record.push_str(&format!(" include:f{i}.example"));
                dns = dns.txt(&format!("f{i}.example"), "v=spf1 -all");
            }
            record.push_str(" ip4:192.0.2.10 -all");
            dns.txt("example.com", &record)
        };
        let many_mx = {
            let mut dns = MapDns::new().txt("example.com", "v=spf1 mx -all");
            for i in 0..11 {
                dns = dns.mx("example.com", &format!("mx{i}.example.com"));
            }
            dns
        };
        vec![
            ("direct ip4", MapDns::new().txt("example.com", "v=spf1 ip4:192.0.2.10 -all"), ip(IP), "pass", ""),
            ("ip4 range", MapDns::new().txt("example.com", "v=spf1 ip4:192.0.2.0/24 -all"), ip(IP), "pass", ""),
            ("ip4 range excludes", MapDns::new().txt("example.com", "v=spf1 ip4:192.0.3.0/24 -all"), ip(IP), "fail", ""),
            ("other ip, -all", MapDns::new().txt("example.com", "v=spf1 ip4:198.51.100.1 -all"), ip(IP), "fail", ""),
            ("~all", MapDns::new().txt("example.com", "v=spf1 ip4:198.51.100.1 ~all"), ip(IP), "softfail", ""),
            ("?all", MapDns::new().txt("example.com", "v=spf1 ?all"), ip(IP), "neutral", ""),
            ("no all", MapDns::new().txt("example.com", "v=spf1 ip4:198.51.100.1"), ip(IP), "neutral", ""),
            ("+all", MapDns::new().txt("example.com", "v=spf1 +all"), ip(IP), "pass", ""),
            ("first match wins", MapDns::new().txt("example.com", "v=spf1 -ip4:192.0.2.10 +all"), ip(IP), "fail", ""),
            ("case-insensitive", MapDns::new().txt("example.com", "V=SPF1 IP4:192.0.2.10 -ALL"), ip(IP), "pass", ""),
            ("v=spf10 is not spf", MapDns::new().txt("example.com", "v=spf10 +all"), ip(IP), "none", ""),
            ("no record", MapDns::new().txt("example.com", "google-site-verification=x"), ip(IP), "none", ""),
            ("two records", MapDns::new().txt("example.com", "v=spf1 -all").txt("example.com", "v=spf1 +all"), ip(IP), "permerror", "2 SPF records"),
            ("TXT servfail", MapDns::new().failing("example.com"), ip(IP), "temperror", "SERVFAIL"),
            ("unknown mechanism", MapDns::new().txt("example.com", "v=spf1 foo:bar +all"), ip(IP), "permerror", "unknown mechanism"),
            ("bad ip4", MapDns::new().txt("example.com", "v=spf1 ip4:300.1.1.1 +all"), ip(IP), "permerror", "not an IPv4"),
            ("bad cidr", MapDns::new().txt("example.com", "v=spf1 ip4:192.0.2.0/33 +all"), ip(IP), "permerror", "CIDR"),
            ("bad macro", MapDns::new().txt("example.com", "v=spf1 exists:%{z}.x.example +all"), ip(IP), "permerror", "macro"),
            ("unknown modifier ignored", MapDns::new().txt("example.com", "v=spf1 foo=bar exp=explain.example ip4:192.0.2.10 -all"), ip(IP), "pass", ""),
            ("two redirects", MapDns::new().txt("example.com", "v=spf1 redirect=a.example redirect=b.example"), ip(IP), "permerror", "more than once"),
            ("include chain", chain(3), ip(IP), "pass", ""),
            ("include of 9 nested", chain(9), ip(IP), "pass", ""),
            ("include chain of 11", chain(11), ip(IP), "permerror", "more than 10"),
            ("11 flat includes", flat_includes, ip(IP), "permerror", "more than 10"),
            ("include fail does not match",
                MapDns::new().txt("example.com", "v=spf1 include:a.example ~all").txt("a.example", "v=spf1 -all"),
                ip(IP), "softfail", ""),
            ("include without record",
                MapDns::new().txt("example.com", "v=spf1 include:nothing.example -all"),
                ip(IP), "permerror", "has no SPF record"),
            ("include temperror",
                MapDns::new().txt("example.com", "v=spf1 include:a.example -all").failing("a.example"),
                ip(IP), "temperror", "a.example"),
            ("include loop",
                MapDns::new().txt("example.com", "v=spf1 include:a.example -all")
                    .txt("a.example", "v=spf1 include:b.example -all")
                    .txt("b.example", "v=spf1 include:a.example -all"),
                ip(IP), "permerror", "loop"),
            ("a", MapDns::new().txt("example.com", "v=spf1 a -all").a("example.com", IP), ip(IP), "pass", ""),
            ("a:domain/24",
                MapDns::new().txt("example.com", "v=spf1 a:mail.example.com/24 -all").a("mail.example.com", "192.0.2.200"),
                ip(IP), "pass", ""),
            ("a without /24", MapDns::new().txt("example.com", "v=spf1 a:mail.example.com -all").a("mail.example.com", "192.0.2.200"), ip(IP), "fail", ""),
            ("a//64 for ipv6",
                MapDns::new().txt("example.com", "v=spf1 a//64 -all").aaaa("example.com", "2001:db8::99"),
                ip("2001:db8::1"), "pass", ""),
            ("mx", MapDns::new().txt("example.com", "v=spf1 mx -all").mx("example.com", "mx1.example.com").a("mx1.example.com", IP), ip(IP), "pass", ""),
            ("mx other host", MapDns::new().txt("example.com", "v=spf1 mx -all").mx("example.com", "mx1.example.com").a("mx1.example.com", "198.51.100.1"), ip(IP), "fail", ""),
            ("mx with 11 names", many_mx, ip(IP), "permerror", "11 MX names"),
            ("ip6", MapDns::new().txt("example.com", "v=spf1 ip6:2001:db8::/32 -all"), ip("2001:db8::1"), "pass", ""),
            ("ip4 never matches ipv6", MapDns::new().txt("example.com", "v=spf1 ip4:0.0.0.0/0 -all"), ip("2001:db8::1"), "fail", ""),
            ("v4-mapped ipv6 is ipv4", MapDns::new().txt("example.com", "v=spf1 ip4:192.0.2.10 -all"), ip("::ffff:192.0.2.10"), "pass", ""),
            ("exists with %{i}",
                MapDns::new().txt("example.com", "v=spf1 exists:%{i}.allow.example -all").a("192.0.2.10.allow.example", "127.0.0.2"),
                ip(IP), "pass", ""),
            ("exists with %{ir} and %{d}",
                MapDns::new().txt("example.com", "v=spf1 exists:%{ir}.%{d} -all").a("10.2.0.192.example.com", "127.0.0.2"),
                ip(IP), "pass", ""),
            ("exists with %{o} and %{l}",
                MapDns::new().txt("example.com", "v=spf1 exists:%{l}.%{o}.users.example -all").a("support.example.com.users.example", "127.0.0.2"),
                ip(IP), "pass", ""),
            ("ptr never matches",
                MapDns::new().txt("example.com", "v=spf1 ptr ~all"),
                ip(IP), "softfail", "ptr is not evaluated"),
            ("two void lookups are fine",
                MapDns::new().txt("example.com", "v=spf1 a:n1.example.com a:n2.example.com ip4:192.0.2.10 -all"),
                ip(IP), "pass", ""),
            ("three void lookups",
                MapDns::new().txt("example.com", "v=spf1 a:n1.example.com a:n2.example.com mx:n3.example.com ip4:192.0.2.10 -all"),
                ip(IP), "permerror", "found nothing"),
            ("redirect",
                MapDns::new().txt("example.com", "v=spf1 redirect=_spf.example.net").txt("_spf.example.net", "v=spf1 ip4:192.0.2.10 -all"),
                ip(IP), "pass", ""),
            ("redirect to fail",
                MapDns::new().txt("example.com", "v=spf1 redirect=_spf.example.net").txt("_spf.example.net", "v=spf1 -all"),
                ip(IP), "fail", ""),
            ("redirect ignored after all",
                MapDns::new().txt("example.com", "v=spf1 -all redirect=_spf.example.net").txt("_spf.example.net", "v=spf1 +all"),
                ip(IP), "fail", ""),
            ("redirect without record",
                MapDns::new().txt("example.com", "v=spf1 redirect=_spf.example.net"),
                ip(IP), "permerror", "has no SPF record"),
            ("redirect with %{d}",
                MapDns::new().txt("example.com", "v=spf1 redirect=_spf.%{d}").txt("_spf.example.com", "v=spf1 ip4:192.0.2.10 -all"),
                ip(IP), "pass", ""),
            // The gateway's include: domain as the subject.
            ("include of the gateway", MapDns::new().txt("example.com", "v=spf1 include:_spf.gw.example -all"), Target::Include(GW.into()), "pass", ""),
            ("include of the gateway, upper case", MapDns::new().txt("example.com", "v=spf1 include:_SPF.GW.example -all"), Target::Include(GW.into()), "pass", ""),
            ("nested include of the gateway",
                MapDns::new().txt("example.com", "v=spf1 include:a.example -all").txt("a.example", "v=spf1 include:_spf.gw.example ~all"),
                Target::Include(GW.into()), "pass", ""),
            ("neutral include of the gateway", MapDns::new().txt("example.com", "v=spf1 ?include:_spf.gw.example -all"), Target::Include(GW.into()), "neutral", ""),
            ("gateway include after all", MapDns::new().txt("example.com", "v=spf1 -all include:_spf.gw.example"), Target::Include(GW.into()), "fail", ""),
            ("gateway not included", MapDns::new().txt("example.com", "v=spf1 ip4:192.0.2.10 -all"), Target::Include(GW.into()), "fail", ""),
            ("redirect to the gateway", MapDns::new().txt("example.com", "v=spf1 redirect=_spf.gw.example"), Target::Include(GW.into()), "pass", ""),
            ("include mode: exists skipped",
                MapDns::new().txt("example.com", "v=spf1 exists:%{i}.allow.example include:_spf.gw.example -all"),
                Target::Include(GW.into()), "pass", ""),
            ("include mode: include with %{i} skipped",
                MapDns::new().txt("example.com", "v=spf1 include:%{ir}.x.example include:_spf.gw.example -all"),
                Target::Include(GW.into()), "pass", "%{i}"),
            ("include mode: still 10 terms",
                MapDns::new().txt("example.com", "v=spf1 a a a a a a a a a a include:_spf.gw.example -all"),
                Target::Include(GW.into()), "permerror", "more than 10"),
        ]
    }

    #[test]
    fn check_host_table() {
        let mut failures = Vec::new();
        for (name, dns, target, want, text) in cases() {
            let got = eval(&dns, "example.com", target);
            let reason = match &got.result {
                SpfResult::PermError(r) | SpfResult::TempError(r) => r.clone(),
                _ => String::new(),
            };
            let all_text = format!("{reason} {}", got.notes.join(" "));
            if got.result.name() != want || !all_text.contains(text) {
                failures.push(format!("{name}: want {want} ({text:?}), got {got:?}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn lookups_stop_at_the_first_match() {
        let dns = MapDns::new()
            .txt(
                "example.com",
                "v=spf1 ip4:192.0.2.10 include:a.example -all",
            )
            .txt("a.example", "v=spf1 -all");
        let got = eval(&dns, "example.com", ip(IP));
        assert_eq!(got.result, SpfResult::Pass);
        assert_eq!(got.dns_terms, 0);
        assert_eq!(dns.query_count(), 1, "only the policy itself was read");
    }

    #[test]
    fn counts_terms_and_voids() {
        let dns = MapDns::new()
            .txt(
                "example.com",
                "v=spf1 a:n1.example.com include:a.example -all",
            )
            .txt("a.example", "v=spf1 ip4:192.0.2.10 -all");
        let got = eval(&dns, "example.com", ip(IP));
        assert_eq!(got.result, SpfResult::Pass);
        assert_eq!((got.dns_terms, got.void_lookups), (2, 1));
    }

    #[test]
    fn parses_terms() {
        let p = parse("v=spf1 +a -mx:mail.example.com/24//64 ~ip4:192.0.2.0/24 ?ip6:2001:db8::/32 ptr exists:%{i}.x.example include:_spf.example.net redirect=r.example exp=e.example all")
            .expect("parse");
        assert_eq!(
            p.directives,
            vec![
                (
                    Qualifier::Pass,
                    Mechanism::A {
                        domain: None,
                        cidr4: 32,
                        cidr6: 128
                    }
                ),
                (
                    Qualifier::Fail,
                    Mechanism::Mx {
                        domain: Some("mail.example.com".into()),
                        cidr4: 24,
                        cidr6: 64
                    }
                ),
                (
                    Qualifier::SoftFail,
                    Mechanism::Ip4("192.0.2.0".parse().expect("ip"), 24)
                ),
                (
                    Qualifier::Neutral,
                    Mechanism::Ip6("2001:db8::".parse().expect("ip"), 32)
                ),
                (Qualifier::Pass, Mechanism::Ptr(None)),
                (Qualifier::Pass, Mechanism::Exists("%{i}.x.example".into())),
                (
                    Qualifier::Pass,
                    Mechanism::Include("_spf.example.net".into())
                ),
                (Qualifier::Pass, Mechanism::All),
            ]
        );
        assert_eq!(p.redirect.as_deref(), Some("r.example"));
        assert_eq!(p.exp.as_deref(), Some("e.example"));
        assert_eq!(
            parse("v=spf1 a//64").expect("parse").directives,
            vec![(
                Qualifier::Pass,
                Mechanism::A {
                    domain: None,
                    cidr4: 32,
                    cidr6: 64
                }
            )]
        );
        for bad in [
            "v=spf1 all:x",
            "v=spf1 include",
            "v=spf1 include:",
            "v=spf1 include:localhost",
            "v=spf1 a/",
            "v=spf1 a/024",
            "v=spf1 ip6:2001:db8::/129",
            "v=spf1 ip4",
            "v=spf1 exists:%{c}.example.com",
            "v=spf1 exists:%{d0}.example.com",
            "v=spf1 exists:%x.example.com",
            "v=spf1 exists:%{d.example.com",
            "spf1 all",
        ] {
            assert!(parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn macro_expansion_table() {
        let v4 = Vars {
            sender: "strong-bad@email.example.com",
            helo: "mx.example.org",
            domain: "email.example.com",
            ip: Some("192.0.2.3".parse().expect("ip")),
        };
        let v6 = Vars {
            ip: Some("2001:db8::cb01".parse().expect("ip")),
            ..Vars { ..v4 }
        };
        // RFC 7208 §7.4 examples.
        let table: [(&Vars<'_>, &str, &str); 14] = [
            (&v4, "%{s}", "strong-bad@email.example.com"),
            (&v4, "%{o}", "email.example.com"),
            (&v4, "%{d}", "email.example.com"),
            (&v4, "%{d4}", "email.example.com"),
            (&v4, "%{d3}", "email.example.com"),
            (&v4, "%{d2}", "example.com"),
            (&v4, "%{d1}", "com"),
            (&v4, "%{dr}", "com.example.email"),
            (&v4, "%{d2r}", "example.email"),
            (&v4, "%{l}", "strong-bad"),
            (&v4, "%{l-}", "strong.bad"),
            (&v4, "%{lr-}", "bad.strong"),
            (
                &v4,
                "%{ir}.%{v}._spf.%{d2}",
                "3.2.0.192.in-addr._spf.example.com",
            ),
            (
                &v6,
                "%{ir}.%{v}._spf.%{d2}",
                "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com",
            ),
        ];
        for (vars, spec, want) in table {
            assert_eq!(expand(spec, vars).as_deref(), Ok(want), "{spec}");
        }
        assert_eq!(expand("%%%_%-", &v4).as_deref(), Ok("% %20"));
        assert_eq!(expand("%{L}", &v4).as_deref(), Ok("strong-bad"));
        assert_eq!(
            expand("%{S}", &v4).as_deref(),
            Ok("strong-bad%40email.example.com")
        );
        let no_ip = Vars { ip: None, ..v4 };
        assert_eq!(expand("%{i}.x", &no_ip), Err(MacroError::Unavailable('i')));
    }

    #[test]
    fn cidr_and_ranges() {
        let a = |s: &str| s.parse::<Ipv4Addr>().expect("ip");
        assert!(in_v4(a("192.0.2.10"), a("192.0.2.0"), 24));
        assert!(!in_v4(a("192.0.3.10"), a("192.0.2.0"), 24));
        assert!(in_v4(a("10.0.0.1"), a("192.0.2.0"), 0));
        assert!(in_v4(a("192.0.2.10"), a("192.0.2.10"), 32));
        assert!(!in_v4(a("192.0.2.11"), a("192.0.2.10"), 32));
        let six = |s: &str| s.parse::<Ipv6Addr>().expect("ip");
        assert!(in_v6(six("2001:db8::1"), six("2001:db8::"), 32));
        assert!(!in_v6(six("2001:db9::1"), six("2001:db8::"), 32));
        assert!(in_v6(six("::1"), six("2001:db8::"), 0));
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(
            range_ends(ip("192.0.2.77"), 24),
            (ip("192.0.2.0"), ip("192.0.2.255"))
        );
        assert_eq!(
            range_ends(ip("192.0.2.77"), 32),
            (ip("192.0.2.77"), ip("192.0.2.77"))
        );
        assert_eq!(
            range_ends(ip("192.0.2.77"), 0),
            (ip("0.0.0.0"), ip("255.255.255.255"))
        );
        assert_eq!(
            range_ends(ip("2001:db8::5"), 64),
            (ip("2001:db8::"), ip("2001:db8::ffff:ffff:ffff:ffff"))
        );
        assert_eq!(
            range_ends(ip("2001:db8::5"), 128),
            (ip("2001:db8::5"), ip("2001:db8::5"))
        );
    }

    #[test]
    fn domains() {
        for good in [
            "example.com",
            "_spf.example.com",
            "a-b.example",
            "x.y.z.example",
        ] {
            assert!(valid_domain(good), "{good}");
        }
        for bad in [
            "",
            "localhost",
            "a..example",
            "example.123",
            "a b.example",
            &"a.".repeat(130),
        ] {
            assert!(!valid_domain(bad), "{bad}");
        }
        let long = format!("{}example.com", "abcdefghij.".repeat(30));
        let n = normalize(&long);
        assert!(n.len() <= 253 && n.ends_with("example.com"), "{n}");
    }
}
