//! The one DKIM key of each sending domain (`dkim_keys`).

use rusqlite::{OptionalExtension, params};

use super::{Db, StoreError};
use crate::model::{DkimKeyRow, GeneratedKey, normalize_domain, now_ms};

/// The stored key of `domain`, if any.
pub fn find(db: &Db<'_>, domain: &str) -> Result<Option<DkimKeyRow>, StoreError> {
    let row = db
        .conn()
        .query_row(
            "SELECT domain, selector, algorithm, private_key, public_key, created_at
               FROM dkim_keys WHERE lower(domain) = lower(?1)",
            [normalize_domain(domain)],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            },
        )
        .optional()?;
    row.map(
        |(domain, selector, algorithm, private_key, public_key_b64, created_at)| {
            Ok(DkimKeyRow {
                algorithm: algorithm
                    .parse()
                    .map_err(|e| StoreError::Corrupt(format!("dkim_keys {domain}: {e}")))?,
                domain,
                selector,
                private_key,
                public_key_b64,
                created_at,
            })
        },
    )
    .transpose()
}

/// Stores `key` for `domain` unless the domain has a key already; returns
/// the domain's key either way (the existing one wins).
pub fn insert_if_absent(
    db: &Db<'_>,
    domain: &str,
    selector: &str,
    key: &GeneratedKey,
) -> Result<DkimKeyRow, StoreError> {
    let domain = normalize_domain(domain);
    db.conn().execute(
        "INSERT INTO dkim_keys (domain, selector, algorithm, private_key, public_key, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (domain) DO NOTHING",
        params![
            domain,
            selector,
            key.algorithm.as_str(),
            key.private_key_pkcs8_der,
            key.public_key_b64,
            now_ms()
        ],
    )?;
    find(db, &domain)?.ok_or(StoreError::NotFound)
}

/// How many domains have a key.
pub fn count(db: &Db<'_>) -> Result<i64, StoreError> {
    Ok(db
        .conn()
        .query_row("SELECT COUNT(*) FROM dkim_keys", [], |r| r.get(0))?)
}
