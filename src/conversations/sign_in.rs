//! One-time sign-in links to the web console (SPEC §11): made for a user by
//! the CLI (`user login-link`, printed), by an admin in the console or by
//! the user asking on the sign-in page (both sent by email). The link holds
//! 256 random bits; the store keeps only their SHA-256, so a copy of the
//! database opens no session. A link works once, before it expires, and
//! only while its user is active. Passwords are hashed with Argon2id (the
//! `argon2` crate's defaults, a PHC string with its own salt).

use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::model::{base32_lower, random_bytes, rfc3339};
use crate::store::users::User;
use crate::store::{self, Db, Result};

/// The path under `public_url` a link's token is put on.
pub const LINK_PATH: &str = "/app/login/";

/// A new link's token (52 base32 characters).
pub fn new_token() -> String {
    base32_lower(&random_bytes::<32>())
}

/// What the store keeps of a token (sessions' cookies are hashed the same
/// way).
pub fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Records a new link for `user`; returns its URL.
pub fn create_link(db: &Db<'_>, config: &Config, user: &User, now: i64) -> Result<String> {
    let token = new_token();
    let ttl = config.console.login_link_ttl.as_millis() as i64;
    store::console::create_link(db, &hash(&token), user.id, now, now + ttl)?;
    Ok(format!("{}{LINK_PATH}{token}", config.http.public_url))
}

/// Records a new link for `user` and queues an email with it to their
/// address; returns the email's message id.
pub fn email_link(db: &Db<'_>, config: &Config, user: &User, now: i64) -> Result<i64> {
    let url = create_link(db, config, user, now)?;
    let ttl = config.console.login_link_ttl.as_secs();
    let minutes = ttl.div_ceil(60).max(1);
    let subject = "Your sign-in link".to_string();
    let text = format!(
        "Hello {name},\n\n\
         Open this link to sign in to the backchannel console:\n\n{url}\n\n\
         It works once, for {minutes} minute{s} (until {until}). If you did not ask for it, \
         nothing happens unless it is opened; you can ignore this email.\n",
        name = user.name,
        s = if minutes == 1 { "" } else { "s" },
        until = rfc3339(now + ttl as i64 * 1000),
    );
    super::agent_notice::to_agent(
        db,
        config,
        &super::agent_notice::AgentEmail {
            user,
            reply_to: None,
            subject: &subject,
            text: &text,
            // Lists leave the link out; the raw email (kept like all sent
            // mail) has it, and it works once, briefly.
            listed_text: "A sign-in link to the console.",
        },
        now,
    )
}

/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longest password accepted (hashing is bounded work).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Why a password was refused.
pub fn check_password(password: &str) -> std::result::Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!(
            "a password needs at least {MIN_PASSWORD_CHARS} characters"
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "a password may have at most {MAX_PASSWORD_BYTES} bytes"
        ));
    }
    Ok(())
}

/// The PHC string of a password (Argon2id, random salt). CPU-heavy on
/// purpose: call it off the async threads.
pub fn hash_password(password: &str) -> std::result::Result<String, String> {
    use argon2::password_hash::PasswordHasher;
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing the password failed: {e}"))
}

/// A PHC string no password matches, verified against when a user is
/// unknown or has none, so those answers take as long as a wrong password.
static DUMMY: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| hash_password("not a password of anyone's").unwrap_or_default());

/// Whether `password` matches `phc` (a stored hash, or `None`: then the
/// same work is done against a hash nothing matches). CPU-heavy.
pub fn verify_password(password: &str, phc: Option<&str>) -> bool {
    use argon2::password_hash::PasswordVerifier;
    use argon2::password_hash::phc::PasswordHash;
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    let (stored, real) = match phc {
        Some(p) => (p, true),
        None => (DUMMY.as_str(), false),
    };
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    let ok = argon2::Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    ok && real
}
