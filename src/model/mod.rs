//! Plain domain types shared by every module: tokens, roles, addresses, time.
//! Nothing here does I/O.

pub mod auth;
mod dkim;
mod records;
mod status;

pub use auth::AuthResults;
pub use dkim::*;
pub use records::*;
pub use status::*;

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::RngCore;
use sha2::{Digest, Sha256};

/// Parses an age or a delay as the API takes it (SPEC §15 `older_than`,
/// `remind_after`): a whole number and a unit, `m` (minutes), `h`, `d` or
/// `w`, e.g. `90m`, `2d`. Milliseconds; `None` for anything else, zero
/// included, or more than ten years.
pub fn parse_age(text: &str) -> Option<i64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = t.split_at(split);
    let n: i64 = num.parse().ok().filter(|n| *n > 0)?;
    let unit_ms: i64 = match unit {
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return None,
    };
    n.checked_mul(unit_ms)
        .filter(|ms| *ms <= 10 * 366 * 86_400_000)
}

/// A delay as [`parse_age`] reads it back: the largest unit it is a whole
/// number of (`2d`, `36h`, `90m`).
pub fn age_spec(ms: i64) -> String {
    let m = ms / 60_000;
    for (unit, mins) in [("w", 7 * 1440), ("d", 1440), ("h", 60)] {
        if m > 0 && m % mins == 0 {
            return format!("{}{unit}", m / mins);
        }
    }
    format!("{m}m")
}

/// An age as a sentence says it: `3 days`, `5 hours`, `1 minute` (the
/// largest whole unit).
pub fn age_text(ms: i64) -> String {
    let m = ms.max(0) / 60_000;
    let (n, unit) = if m >= 1440 {
        (m / 1440, "day")
    } else if m >= 60 {
        (m / 60, "hour")
    } else {
        (m, "minute")
    };
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// Milliseconds since the Unix epoch, the time unit of the whole store.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

const BASE32_ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Lowercase RFC 4648 base32 without padding.
pub fn base32_lower(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buffer: u64 = 0;
    let mut bits = 0u32;
    for &b in bytes {
        buffer = (buffer << 8) | u64::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32_ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(BASE32_ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Random bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    rand::rng().fill_bytes(&mut buf);
    buf
}

/// A side conversation's token: 16 lowercase base32 characters carrying 80
/// random bits (SPEC §3). Parsing is case-insensitive; the stored and
/// displayed form is lowercase.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Token(String);

impl Token {
    pub const LEN: usize = 16;

    pub fn generate() -> Self {
        Token(base32_lower(&random_bytes::<10>()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Token {
    type Err = InvalidToken;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() == Self::LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphabetic() || (b'2'..=b'7').contains(&b))
        {
            Ok(Token(s.to_ascii_lowercase()))
        } else {
            Err(InvalidToken)
        }
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({})", self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a side-conversation token (16 base32 characters)")]
pub struct InvalidToken;

/// A user's API token: `bc_` and 52 base32 characters (256 random bits).
/// Only its SHA-256 hash is stored.
pub struct ApiToken(String);

impl ApiToken {
    pub fn generate() -> Self {
        ApiToken(format!("bc_{}", base32_lower(&random_bytes::<32>())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn hash(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(***)")
    }
}

/// Roles of SPEC §1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Owner,
    Admin,
    Member,
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
            Role::Viewer => "viewer",
        }
    }

    /// Owner and admin manage senders, signature, webhooks, users, settings.
    pub fn can_administer(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }

    /// Everyone but viewers may start, reply, close and reopen.
    pub fn can_write(self) -> bool {
        !matches!(self, Role::Viewer)
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "owner" => Ok(Role::Owner),
            "admin" => Ok(Role::Admin),
            "member" => Ok(Role::Member),
            "viewer" => Ok(Role::Viewer),
            other => Err(format!(
                "unknown role `{other}` (expected owner, admin, member or viewer)"
            )),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A mailbox address split at its last `@`. The domain is lowercased; the
/// local part keeps its case (it is the receiving system's to interpret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailAddr {
    pub local: String,
    pub domain: String,
}

impl MailAddr {
    /// Splits `local@domain`. Refuses empty parts, whitespace, control
    /// characters and angle brackets: what reaches here is an envelope or
    /// header address already stripped of its brackets.
    pub fn parse(addr: &str) -> Option<MailAddr> {
        let (local, domain) = addr.rsplit_once('@')?;
        if local.is_empty()
            || domain.is_empty()
            || addr.len() > 254
            || addr
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || c == '<' || c == '>')
        {
            return None;
        }
        Some(MailAddr {
            local: local.to_string(),
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
        })
    }

    /// The domain is an address literal (`[127.0.0.1]`, `[IPv6:::1]`) or
    /// an IP address in any spelling (its top label all digits, which no
    /// domain name has): not a mail domain (SPEC §3), and a way to make
    /// the gateway connect wherever one likes.
    pub fn is_address_literal(&self) -> bool {
        self.domain.starts_with('[')
            || self.domain.parse::<std::net::IpAddr>().is_ok()
            || self
                .domain
                .rsplit('.')
                .next()
                .is_some_and(|top| !top.is_empty() && top.bytes().all(|b| b.is_ascii_digit()))
    }

    /// The `<base>+<detail>` split of a plus-addressed local part.
    pub fn plus_parts(&self) -> Option<(&str, &str)> {
        self.local.split_once('+')
    }

    /// The side-conversation token carried by `<anything>+<token>@…`.
    pub fn token(&self) -> Option<Token> {
        self.plus_parts()
            .and_then(|(_, detail)| detail.parse().ok())
    }
}

impl fmt::Display for MailAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// A file name as the gateway hands it out (mail it composes, downloads,
/// the portal page), whatever it was given: no path separators, no control
/// characters, no invisible formatting characters — bidirectional
/// overrides such as U+202E would let `invoice\u{202e}gpj.exe` show as
/// `invoiceexe.jpg` —, no leading dots, at most 200 characters, never empty.
#[must_use]
pub fn file_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .filter(|c| !is_invisible_format(*c))
        .map(|c| {
            if c.is_control() || c == '/' || c == '\\' {
                '_'
            } else {
                c
            }
        })
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').trim();
    if cleaned.is_empty() {
        "attachment".to_string()
    } else {
        cleaned.chars().take(200).collect()
    }
}

/// Zero-width and bidirectional formatting characters (Unicode Cf ones
/// that change how text around them displays).
pub fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{00ad}' | '\u{061c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// Whether `addr` is a well-formed author address (RFC 5322 addr-spec) that
/// can be authenticated and trusted: lettre's parser (the `email_address`
/// rules) accepts it, its domain is a host name (no address literal, no
/// trailing dot, at least two labels). A header such as
/// `boss@strict.test (Boss) <attacker@evil.test>` that a lenient parser turns
/// into `boss@strict.testattacker@evil.test`, or `boss@strict.test.`, is not:
/// such a sender is never verified, never a participant.
pub fn is_author_address(addr: &str) -> bool {
    let Ok(parsed) = addr.parse::<lettre::Address>() else {
        return false;
    };
    let domain = parsed.domain();
    !domain.is_empty()
        && !domain.starts_with('[')
        && !domain.ends_with('.')
        && domain.contains('.')
        && domain.parse::<std::net::IpAddr>().is_err()
        && !addr.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// The organisational domain of `domain` (RFC 7489 §3.2): its registrable
/// part by the Public Suffix List (`psl`), lowercased, without a trailing
/// dot. A name that is itself a public suffix (or unknown to the list and
/// single-label) is its own organisational domain.
pub fn organizational_domain(domain: &str) -> String {
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    match psl::domain_str(&d) {
        Some(org) => org.to_string(),
        None => d,
    }
}

/// Relaxed alignment (RFC 7489 §3.1): the same organisational domain.
pub fn aligned(a: &str, b: &str) -> bool {
    !a.is_empty() && !b.is_empty() && organizational_domain(a) == organizational_domain(b)
}

/// The Message-ID of a sender's verification mail, `verify.<nonce>@<gateway
/// domain>`: written by `senders::service`, recognised by
/// `ingest::forwarding` when the mail comes back through forwarding.
pub fn verification_message_id(nonce: &str, gateway_domain: &str) -> String {
    format!("verify.{nonce}@{gateway_domain}")
}

/// Loose syntax check for addresses coming in through the API. An
/// address literal (`bob@[127.0.0.1]`) is not one: mail goes to domains.
pub fn is_valid_email(addr: &str) -> bool {
    match MailAddr::parse(addr) {
        Some(a) if a.is_address_literal() => false,
        Some(a) => {
            a.domain == "localhost"
                || (a.domain.contains('.')
                    && !a.domain.starts_with('.')
                    && !a.domain.contains(".."))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn author_addresses() {
        for ok in [
            "vera@carrier.example",
            "Vera.Vendor+rma@mail.carrier.co.uk",
            "a_b-c@x.io",
        ] {
            assert!(is_author_address(ok), "{ok}");
        }
        for bad in [
            "boss@strict.testattacker@evil.test",
            "boss@strict.test.",
            "x@[127.0.0.1]",
            "x@127.0.0.1",
            "x@localhost",
            "no-at.example",
            "@example.com",
            "a b@example.com",
            "a@b@example.com",
            "",
        ] {
            assert!(!is_author_address(bad), "{bad}");
        }
    }

    #[test]
    fn address_literals_are_not_valid_emails() {
        let cases = [
            ("bob@vendor.example", true),
            ("bob@localhost", true),
            ("bob@mail.3com.example", true),
            ("bob@[127.0.0.1]", false),
            ("bob@[IPv6:::1]", false),
            ("bob@[10.0.0.1]", false),
            ("bob@127.0.0.1", false),
            ("bob@0177.0.0.1", false),
            ("bob@169.254.169.254.", false),
            ("bob@", false),
        ];
        for (addr, valid) in cases {
            assert_eq!(is_valid_email(addr), valid, "{addr}");
        }
    }

    #[test]
    fn organizational_domains_follow_the_public_suffix_list() {
        for (domain, org) in [
            ("mail.vendor.example.com", "example.com"),
            ("a.b.example.co.uk", "example.co.uk"),
            ("shop.example.com.au", "example.com.au"),
            ("x.y.city.kawasaki.jp", "city.kawasaki.jp"),
            ("foo.github.io", "foo.github.io"),
            ("mail.Vendor.TEST.", "vendor.test"),
            ("strict.test", "strict.test"),
        ] {
            assert_eq!(organizational_domain(domain), org, "{domain}");
        }
        assert!(aligned("bounce.vendor.test", "vendor.test"));
        assert!(!aligned("evil.test", "vendor.test"));
        assert!(!aligned("a.github.io", "b.github.io"));
        assert!(!aligned("", "vendor.test"));
    }

    #[test]
    fn file_names_lose_paths_controls_and_bidi_overrides() {
        let cases = [
            ("report.pdf", "report.pdf"),
            ("../../etc/passwd", "_.._etc_passwd"),
            ("/etc/shadow", "_etc_shadow"),
            ("..\\win.ini", "_win.ini"),
            ("a\u{0}b\r\nc.txt", "a_b__c.txt"),
            ("invoice\u{202e}gpj.exe", "invoicegpj.exe"),
            ("\u{2067}x\u{2069}.pdf", "x.pdf"),
            ("..", "attachment"),
            ("  ", "attachment"),
            ("\u{200b}", "attachment"),
            ("ünïcødé 名前.txt", "ünïcødé 名前.txt"),
        ];
        for (given, want) in cases {
            assert_eq!(file_name(given), want, "{given:?}");
        }
        assert_eq!(file_name(&"x".repeat(5000)).chars().count(), 200);
    }

    #[test]
    fn base32_matches_rfc4648_vectors() {
        // RFC 4648 §10, lowercased, without padding.
        let cases = [
            ("", ""),
            ("f", "my"),
            ("fo", "mzxq"),
            ("foo", "mzxw6"),
            ("foob", "mzxw6yq"),
            ("fooba", "mzxw6ytb"),
            ("foobar", "mzxw6ytboi"),
        ];
        for (input, expected) in cases {
            assert_eq!(base32_lower(input.as_bytes()), expected, "input {input:?}");
        }
    }

    #[test]
    fn tokens_have_the_spec_format_and_do_not_repeat() {
        let mut seen = HashSet::new();
        for _ in 0..100_000 {
            let t = Token::generate();
            assert_eq!(t.as_str().len(), 16);
            assert!(
                t.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)),
                "{t}"
            );
            assert!(seen.insert(t), "duplicate token");
        }
    }

    #[test]
    fn tokens_parse_case_insensitively() {
        let t: Token = "ABCDEFGHIJKLMN23".parse().expect("valid");
        assert_eq!(t.as_str(), "abcdefghijklmn23");
        assert!("abcdefghijklmn2".parse::<Token>().is_err());
        assert!(
            "abcdefghijklmn21".parse::<Token>().is_err(),
            "1 is not base32"
        );
        assert!("abcdefghijklmn2ü".parse::<Token>().is_err());
    }

    #[test]
    fn plus_addresses_yield_tokens() {
        let a = MailAddr::parse("reply+abcdefghijklmn23@GW.Example.com").expect("valid");
        assert_eq!(a.domain, "gw.example.com");
        assert_eq!(
            a.token().map(|t| t.to_string()).as_deref(),
            Some("abcdefghijklmn23")
        );
        let b = MailAddr::parse("support+nope@acme.com").expect("valid");
        assert!(b.token().is_none());
        assert!(MailAddr::parse("no-at-sign").is_none());
        assert!(MailAddr::parse("a b@c").is_none());
        assert!(MailAddr::parse("@c").is_none());
    }

    #[test]
    fn api_tokens_are_long_and_hash_stably() {
        let t = ApiToken::generate();
        assert!(t.as_str().starts_with("bc_"));
        assert_eq!(t.as_str().len(), 3 + 52);
        assert_eq!(ApiToken::hash(t.as_str()), ApiToken::hash(t.as_str()));
        assert_ne!(ApiToken::hash("a"), ApiToken::hash("b"));
    }
}

/// RFC 3339 UTC timestamp (`2026-09-01T10:00:00.000Z`) of ms since the epoch.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Serializes ms since the epoch as RFC 3339 (`#[serde(serialize_with = …)]`
/// on stored times that the API shows as they are).
pub fn serialize_rfc3339<S: serde::Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*ms))
}

/// [`serialize_rfc3339`] for an optional time (`null` when absent).
pub fn serialize_rfc3339_opt<S: serde::Serializer>(
    ms: &Option<i64>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_str(&rfc3339(*ms)),
        None => s.serialize_none(),
    }
}

/// Parses an RFC 3339 timestamp (`2026-09-01T10:00:00Z`, fractional seconds
/// and `±hh:mm` offsets allowed) into ms since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = s.get(start..i)?;
        if frac.is_empty() {
            return None;
        }
        let padded = format!("{frac:0<3}");
        millis = padded.get(..3)?.parse().ok()?;
    }
    let offset_min = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if b.len() == i + 6 && b[i + 3] == b':' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let v = oh * 60 + om;
            if *sign == b'-' { -v } else { v }
        }
        _ => return None,
    };
    // Days from civil.
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2.rem_euclid(400);
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + mi * 60 + se) - offset_min * 60) * 1000 + millis)
}

#[cfg(test)]
mod age_tests {
    use super::{age_text, parse_age};

    #[test]
    fn ages_parse_and_read() {
        assert_eq!(parse_age("2d"), Some(2 * 86_400_000));
        assert_eq!(parse_age("90m"), Some(90 * 60_000));
        assert_eq!(parse_age("1w"), Some(7 * 86_400_000));
        for bad in [
            "",
            "d",
            "2",
            "0d",
            "-1d",
            "2 d",
            "2x",
            "99999999999999999999d",
            "5000w",
        ] {
            assert_eq!(parse_age(bad), None, "{bad}");
        }
        assert_eq!(age_text(2 * 86_400_000 + 5), "2 days");
        assert_eq!(age_text(3_600_000), "1 hour");
        assert_eq!(age_text(59_000), "0 minutes");
        for spec in ["2d", "36h", "90m", "1w"] {
            assert_eq!(super::age_spec(parse_age(spec).expect(spec)), spec);
        }
    }
}

#[cfg(test)]
mod time_tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_788_256_800_123), "2026-09-01T10:00:00.123Z");
        for ms in [0, 951_782_400_000, 1_788_256_800_123, 4_102_444_800_000] {
            assert_eq!(parse_rfc3339(&rfc3339(ms)), Some(ms));
        }
        assert_eq!(
            parse_rfc3339("2026-09-01T12:00:00+02:00"),
            Some(1_788_256_800_000)
        );
        assert_eq!(
            parse_rfc3339("2026-09-01T10:00:00Z"),
            Some(1_788_256_800_000)
        );
        for bad in [
            "",
            "2026-09-01",
            "2026-13-01T00:00:00Z",
            "2026-09-01T10:00:00",
            "yesterday",
            "2026-09-01T10:00:00+0200",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
