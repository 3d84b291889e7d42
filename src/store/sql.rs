//! One SQL surface over the store's two databases: the store's modules
//! write their statements once, in the SQL both SQLite and PostgreSQL
//! understand, with `?N` placeholders, and run them through [`Conn`],
//! [`Statement`] and [`Row`], which have the shape of rusqlite's
//! `Connection`, `Statement` and `Row`.
//!
//! Values cross as rusqlite's (`ToSql` in, `FromSql` out; integers,
//! reals, text, blobs, nulls), so the model's own conversions
//! (`codec.rs`) serve both. On PostgreSQL a value is encoded as whatever
//! type the server inferred for its parameter (an integer bound where the
//! server expects `int4`, `bool` or `text` is sent as one), and a column is
//! read back into the same five kinds (`bool` as 0/1, `numeric` as an
//! integer when it has no fraction). The few spellings the two disagree on
//! are rewritten when a statement is first prepared ([`translate`]); the
//! rest is written portably by the modules.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::error::Error as StdError;

use bytes::BytesMut;
use postgres::types::{FromSql as PgFromSql, IsNull, ToSql as PgToSql, Type};
use rusqlite::ToSql;
use rusqlite::types::{FromSql, Value, ValueRef};

/// Requests this process sent to PostgreSQL (each waits for the server's
/// answer: a prepare, a query, an execute, a batch of statements), for the
/// `store_round_trips_total` metric and the benchmark's cost per message.
static ROUND_TRIPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// See [`ROUND_TRIPS`].
pub fn round_trips() -> u64 {
    ROUND_TRIPS.load(std::sync::atomic::Ordering::Relaxed)
}

fn round_trip() {
    ROUND_TRIPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Which database a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A connection lent to one read or write: SQLite's, or one PostgreSQL
/// session of the store's pool.
#[derive(Clone, Copy)]
pub enum Conn<'c> {
    Lite(&'c rusqlite::Connection),
    Pg(&'c PgConn),
}

/// One PostgreSQL session: the client, its prepared statements (by the
/// SQL the module wrote) and whether a transaction is open.
pub struct PgConn {
    /// Always `Some` but while dropping (see `Drop`).
    client: RefCell<Option<postgres::Client>>,
    cache: RefCell<HashMap<String, postgres::Statement>>,
    in_transaction: Cell<bool>,
}

impl PgConn {
    pub fn new(client: postgres::Client) -> PgConn {
        PgConn {
            client: RefCell::new(Some(client)),
            cache: RefCell::new(HashMap::new()),
            in_transaction: Cell::new(false),
        }
    }

    /// The session is gone (the server closed it or the network failed).
    pub fn is_closed(&self) -> bool {
        self.client.borrow().as_ref().is_none_or(|c| c.is_closed())
    }

    /// The client, for what only PostgreSQL has (advisory locks).
    pub fn client(&self) -> rusqlite::Result<std::cell::RefMut<'_, postgres::Client>> {
        std::cell::RefMut::filter_map(self.client.borrow_mut(), |c| c.as_mut())
            .map_err(|_| rusqlite::Error::InvalidQuery)
    }

    fn statement(&self, sql: &str) -> rusqlite::Result<postgres::Statement> {
        if let Some(s) = self.cache.borrow().get(sql) {
            return Ok(s.clone());
        }
        let translated = translate(sql);
        round_trip();
        let stmt = self
            .client()?
            .prepare(&translated)
            .map_err(|e| match pg_error(e) {
                // What does not prepare is a statement PostgreSQL spells
                // differently: say which.
                rusqlite::Error::ToSqlConversionFailure(why) => {
                    let sql = translated.split_whitespace().collect::<Vec<_>>().join(" ");
                    rusqlite::Error::ToSqlConversionFailure(Box::new(PgFailure(format!(
                        "{} in: {sql}",
                        why.to_string().trim_start_matches("postgres: ")
                    ))))
                }
                other => other,
            })?;
        let mut cache = self.cache.borrow_mut();
        if cache.len() >= 512 {
            cache.clear();
        }
        cache.insert(sql.to_owned(), stmt.clone());
        Ok(stmt)
    }

    /// Runs statements without parameters (several, `;`-separated), keeping
    /// track of the transaction they open or end.
    fn batch(&self, sql: &str) -> rusqlite::Result<()> {
        let translated = translate(sql);
        round_trip();
        self.client()?
            .batch_execute(&translated)
            .map_err(pg_error)?;
        let head = sql.trim_start().to_ascii_uppercase();
        if head.starts_with("BEGIN") || head.starts_with("START TRANSACTION") {
            self.in_transaction.set(true);
        } else if head.starts_with("COMMIT")
            || head.starts_with("END")
            || (head.starts_with("ROLLBACK") && !head.starts_with("ROLLBACK TO"))
        {
            self.in_transaction.set(false);
        }
        Ok(())
    }
}

impl Drop for PgConn {
    /// The blocking client ends its session on a runtime of its own, which
    /// cannot run on a thread of the gateway's runtime: when dropped there
    /// (the store closing inside `serve`), it is dropped on a thread of
    /// its own.
    fn drop(&mut self) {
        let Some(client) = self.client.get_mut().take() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            let _ = std::thread::Builder::new()
                .name("store-pg-close".into())
                .spawn(move || drop(client));
        }
    }
}

/// A PostgreSQL error as rusqlite's, so the store's modules (and
/// `StoreError`) see one kind: a constraint violation (SQLSTATE class 23)
/// is SQLite's constraint failure, anything else carries the message.
fn pg_error(e: postgres::Error) -> rusqlite::Error {
    if let Some(db) = e.as_db_error()
        && db.code().code().starts_with("23")
    {
        return rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
            Some(db.message().to_owned()),
        );
    }
    rusqlite::Error::ToSqlConversionFailure(Box::new(PgFailure(describe(&e))))
}

/// A PostgreSQL error with the server's own message (the client's Display
/// says only "db error").
pub fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{} ({}){}",
            db.message(),
            db.code().code(),
            db.detail().map(|d| format!(": {d}")).unwrap_or_default()
        ),
        None => e.to_string(),
    }
}

/// The text of a PostgreSQL failure (the client's error is not `Clone`).
#[derive(Debug)]
struct PgFailure(String);

impl std::fmt::Display for PgFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "postgres: {}", self.0)
    }
}

impl StdError for PgFailure {}

/// The SQL a module wrote, in PostgreSQL's spelling: `?N` placeholders
/// become `$N` (a bare `?` takes the next number), `INSERT OR IGNORE`
/// becomes `INSERT … ON CONFLICT DO NOTHING`, SQLite's `BEGIN IMMEDIATE`
/// a plain `BEGIN`, an `INDEXED BY name` hint is dropped. Quoted text and
/// identifiers are left alone.
pub fn translate(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 24);
    let bytes = sql.as_bytes();
    let mut i = 0;
    let mut next = 1usize;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'\'' | b'"' => {
                let end = sql[i + 1..]
                    .find(c as char)
                    .map(|n| i + 1 + n + 1)
                    .unwrap_or(bytes.len());
                // SQLite's blob literal X'0a1b' is PostgreSQL's '\x0a1b'::bytea.
                let blob = c == b'\''
                    && i > 0
                    && bytes[i - 1].eq_ignore_ascii_case(&b'x')
                    && (i < 2 || !(bytes[i - 2].is_ascii_alphanumeric() || bytes[i - 2] == b'_'));
                if blob && end > i + 1 {
                    out.pop();
                    out.push_str(&format!("'\\x{}::bytea", &sql[i + 1..end]));
                } else {
                    out.push_str(&sql[i..end]);
                }
                i = end;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                let end = sql[i..].find('\n').map(|n| i + n).unwrap_or(bytes.len());
                out.push_str(&sql[i..end]);
                i = end;
            }
            b'?' => {
                let digits = bytes[i + 1..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                out.push('$');
                if digits == 0 {
                    out.push_str(&next.to_string());
                    next += 1;
                } else {
                    let n = &sql[i + 1..i + 1 + digits];
                    out.push_str(n);
                    if let Ok(v) = n.parse::<usize>() {
                        next = next.max(v + 1);
                    }
                }
                i += 1 + digits;
            }
            _ => {
                let ch = sql[i..].chars().next().unwrap_or(' ');
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    let upper = out.to_ascii_uppercase();
    if let Some(pos) = upper.find("INSERT OR IGNORE INTO") {
        out.replace_range(pos..pos + "INSERT OR IGNORE INTO".len(), "INSERT INTO");
        let upper = out.to_ascii_uppercase();
        let body_end = out.trim_end().trim_end_matches(';').len();
        let at = upper
            .rfind(" RETURNING ")
            .filter(|&r| r < body_end)
            .unwrap_or(body_end);
        out.insert_str(at, " ON CONFLICT DO NOTHING");
    }
    // SQLite's index hints (`t INDEXED BY name`) have no PostgreSQL form.
    while let Some(pos) = out.to_ascii_uppercase().find(" INDEXED BY ") {
        let name = out[pos + " INDEXED BY ".len()..]
            .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
            .map_or(out.len(), |n| pos + " INDEXED BY ".len() + n);
        out.replace_range(pos..name, "");
    }
    if upper.trim_start().starts_with("BEGIN IMMEDIATE") {
        return "BEGIN".to_owned();
    }
    out
}

/// Parameters: rusqlite's `params![…]` slice, an array of one type, or
/// [`params_from_iter`]. They are lent as a slice without copying (the
/// writer runs dozens of statements per message).
pub trait Params {
    fn with<R>(&self, f: impl FnOnce(&[&dyn ToSql]) -> R) -> R;
}

impl Params for &[&dyn ToSql] {
    fn with<R>(&self, f: impl FnOnce(&[&dyn ToSql]) -> R) -> R {
        f(self)
    }
}

impl Params for () {
    fn with<R>(&self, f: impl FnOnce(&[&dyn ToSql]) -> R) -> R {
        f(&[])
    }
}

impl Params for [&(dyn ToSql + Send + Sync); 0] {
    fn with<R>(&self, f: impl FnOnce(&[&dyn ToSql]) -> R) -> R {
        f(&[])
    }
}

macro_rules! array_params {
    ($($n:literal)+) => {$(
        impl<T: ToSql> Params for [T; $n] {
            fn with<R>(&self, f: impl FnOnce(&[&dyn ToSql]) -> R) -> R {
                let refs: [&dyn ToSql; $n] = std::array::from_fn(|i| &self[i] as &dyn ToSql);
                f(&refs)
            }
        }

        impl<T: ToSql> Params for &[T; $n] {
            fn with<R>(&self, f: impl FnOnce(&[&dyn ToSql]) -> R) -> R {
                (**self).with(f)
            }
        }
    )+};
}

array_params!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);

/// Parameters from a list of values of one type (`IN (?, ?, …)`).
pub struct ParamsFromIter<T>(Vec<T>);

pub fn params_from_iter<T: ToSql, I: IntoIterator<Item = T>>(iter: I) -> ParamsFromIter<T> {
    ParamsFromIter(iter.into_iter().collect())
}

impl<T: ToSql> Params for ParamsFromIter<T> {
    fn with<R>(&self, f: impl FnOnce(&[&dyn ToSql]) -> R) -> R {
        let refs: Vec<&dyn ToSql> = self.0.iter().map(|v| v as &dyn ToSql).collect();
        f(&refs)
    }
}

/// One value bound to a PostgreSQL parameter, encoded as the type the
/// server inferred for it.
#[derive(Debug)]
struct Bound(Value);

type BoxError = Box<dyn StdError + Sync + Send>;

/// Encodes `v` as PostgreSQL's `ty`.
fn put<T: PgToSql>(v: T, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
    v.to_sql(ty, out)
}

impl PgToSql for Bound {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        let text_like = matches!(
            *ty,
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN
        );
        match &self.0 {
            Value::Null => Ok(IsNull::Yes),
            Value::Integer(i) => match *ty {
                Type::INT8 => put(*i, ty, out),
                Type::INT4 => put(i32::try_from(*i)?, ty, out),
                Type::INT2 => put(i16::try_from(*i)?, ty, out),
                Type::BOOL => put(*i != 0, ty, out),
                Type::FLOAT8 => put(*i as f64, ty, out),
                Type::FLOAT4 => put(*i as f32, ty, out),
                Type::OID => put(u32::try_from(*i)?, ty, out),
                _ if text_like => put(i.to_string(), &Type::TEXT, out),
                _ => Err(format!("an integer cannot be sent as {ty}").into()),
            },
            Value::Real(f) => match *ty {
                Type::FLOAT8 => put(*f, ty, out),
                Type::FLOAT4 => put(*f as f32, ty, out),
                _ if text_like => put(f.to_string(), &Type::TEXT, out),
                _ => Err(format!("a real cannot be sent as {ty}").into()),
            },
            Value::Text(s) => match *ty {
                Type::JSONB => {
                    out.extend_from_slice(&[1]);
                    out.extend_from_slice(s.as_bytes());
                    Ok(IsNull::No)
                }
                Type::JSON => {
                    out.extend_from_slice(s.as_bytes());
                    Ok(IsNull::No)
                }
                Type::INT8 => put(s.trim().parse::<i64>()?, ty, out),
                Type::BYTEA => put(s.as_bytes(), ty, out),
                // PostgreSQL's text holds no U+0000 (SQLite's does): hostile
                // input keeps its place, the NUL shows as U+FFFD.
                _ if text_like && s.contains('\0') => {
                    put(s.replace('\0', "\u{FFFD}").as_str(), &Type::TEXT, out)
                }
                _ if text_like => put(s.as_str(), &Type::TEXT, out),
                _ => Err(format!("text cannot be sent as {ty}").into()),
            },
            Value::Blob(b) => match *ty {
                Type::BYTEA => put(b.as_slice(), ty, out),
                // SQLite stores what it is given; text columns only ever
                // get UTF-8 from the store's own code.
                _ if text_like => put(std::str::from_utf8(b)?, &Type::TEXT, out),
                _ => Err(format!("bytes cannot be sent as {ty}").into()),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// A column's bytes as PostgreSQL sent them (binary format).
struct Raw<'a>(&'a [u8]);

impl<'a> PgFromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(Raw(raw))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

fn be<const N: usize>(raw: &[u8]) -> Result<[u8; N], BoxError> {
    raw.try_into()
        .map_err(|_| format!("expected {N} bytes, got {}", raw.len()).into())
}

/// A binary `numeric` as an integer when it has no fraction, else a real.
fn numeric(raw: &[u8]) -> Result<Value, BoxError> {
    if raw.len() < 8 {
        return Err("short numeric".into());
    }
    let word = |i: usize| i16::from_be_bytes([raw[i], raw[i + 1]]);
    let ndigits = word(0) as usize;
    let weight = word(2) as i32;
    let sign = u16::from_be_bytes([raw[4], raw[5]]);
    let dscale = word(6);
    if sign == 0xC000 {
        return Ok(Value::Null);
    }
    if raw.len() < 8 + 2 * ndigits {
        return Err("short numeric".into());
    }
    let negative = sign == 0x4000;
    let mut f = 0f64;
    let mut int: Option<i128> = Some(0);
    for d in 0..ndigits {
        let digit = word(8 + 2 * d) as i128;
        let power = weight - d as i32;
        f += digit as f64 * 10000f64.powi(power);
        int = match int {
            Some(acc) if power >= 0 => 10000i128
                .checked_pow(power as u32)
                .and_then(|p| acc.checked_add(digit * p)),
            _ => None,
        };
    }
    let fraction_free = (0..ndigits).all(|d| weight - d as i32 >= 0 || word(8 + 2 * d) == 0);
    match int.and_then(|v| i64::try_from(v).ok()) {
        Some(v) if dscale == 0 || fraction_free => {
            Ok(Value::Integer(if negative { -v } else { v }))
        }
        _ => Ok(Value::Real(if negative { -f } else { f })),
    }
}

/// A PostgreSQL column as one of SQLite's five kinds of value.
fn column_value(row: &postgres::Row, i: usize) -> rusqlite::Result<Value> {
    let ty = row.columns()[i].type_().clone();
    let raw: Option<Raw<'_>> = row.try_get(i).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Null, Box::new(e))
    })?;
    let Some(Raw(raw)) = raw else {
        return Ok(Value::Null);
    };
    let fail =
        |e: BoxError| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Null, e);
    let v = match ty {
        Type::INT8 => Value::Integer(i64::from_be_bytes(be(raw).map_err(fail)?)),
        Type::INT4 => Value::Integer(i32::from_be_bytes(be(raw).map_err(fail)?) as i64),
        Type::INT2 => Value::Integer(i16::from_be_bytes(be(raw).map_err(fail)?) as i64),
        Type::OID => Value::Integer(u32::from_be_bytes(be(raw).map_err(fail)?) as i64),
        Type::BOOL => Value::Integer(i64::from(raw.first().copied().unwrap_or(0) != 0)),
        Type::FLOAT8 => Value::Real(f64::from_be_bytes(be(raw).map_err(fail)?)),
        Type::FLOAT4 => Value::Real(f32::from_be_bytes(be(raw).map_err(fail)?) as f64),
        Type::NUMERIC => numeric(raw).map_err(fail)?,
        Type::BYTEA => Value::Blob(raw.to_vec()),
        Type::JSONB => {
            Value::Text(String::from_utf8_lossy(raw.get(1..).unwrap_or_default()).into_owned())
        }
        _ => match std::str::from_utf8(raw) {
            Ok(s) => Value::Text(s.to_owned()),
            Err(_) => Value::Blob(raw.to_vec()),
        },
    };
    Ok(v)
}

fn bind(params: &impl Params) -> rusqlite::Result<Vec<Bound>> {
    params.with(|refs| {
        refs.iter()
            .map(|p| {
                let out = p.to_sql()?;
                let v = match out {
                    rusqlite::types::ToSqlOutput::Borrowed(r) => owned(r),
                    rusqlite::types::ToSqlOutput::Owned(v) => v,
                    other => {
                        return Err(rusqlite::Error::ToSqlConversionFailure(
                            format!("unsupported parameter {other:?}").into(),
                        ));
                    }
                };
                Ok(Bound(v))
            })
            .collect()
    })
}

fn owned(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

fn pg_rows(
    conn: &PgConn,
    stmt: &postgres::Statement,
    params: &impl Params,
) -> rusqlite::Result<Vec<Vec<Value>>> {
    let bound = bind(params)?;
    let refs: Vec<&(dyn PgToSql + Sync)> =
        bound.iter().map(|b| b as &(dyn PgToSql + Sync)).collect();
    round_trip();
    let rows = conn.client()?.query(stmt, &refs).map_err(pg_error)?;
    rows.iter()
        .map(|row| (0..row.len()).map(|i| column_value(row, i)).collect())
        .collect()
}

fn pg_execute(
    conn: &PgConn,
    stmt: &postgres::Statement,
    params: &impl Params,
) -> rusqlite::Result<usize> {
    let bound = bind(params)?;
    let refs: Vec<&(dyn PgToSql + Sync)> =
        bound.iter().map(|b| b as &(dyn PgToSql + Sync)).collect();
    round_trip();
    let n = conn.client()?.execute(stmt, &refs).map_err(pg_error)?;
    Ok(n as usize)
}

impl<'c> Conn<'c> {
    pub fn dialect(&self) -> Dialect {
        match self {
            Conn::Lite(_) => Dialect::Sqlite,
            Conn::Pg(_) => Dialect::Postgres,
        }
    }

    pub fn prepare_cached(&self, sql: &str) -> rusqlite::Result<Statement<'c>> {
        match *self {
            Conn::Lite(c) => c.prepare_cached(sql).map(Statement::Lite),
            Conn::Pg(c) => Ok(Statement::Pg {
                conn: c,
                stmt: c.statement(sql)?,
            }),
        }
    }

    pub fn prepare(&self, sql: &str) -> rusqlite::Result<Statement<'c>> {
        match *self {
            Conn::Lite(c) => c.prepare(sql).map(Statement::LiteOnce),
            Conn::Pg(_) => self.prepare_cached(sql),
        }
    }

    pub fn execute<P: Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    pub fn query_row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: Params,
        F: FnOnce(&Row<'_, '_>) -> rusqlite::Result<T>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }

    /// Statements without parameters, `;`-separated (DDL, transaction
    /// control).
    pub fn execute_batch(&self, sql: &str) -> rusqlite::Result<()> {
        match *self {
            Conn::Lite(c) => c.execute_batch(sql),
            Conn::Pg(c) => c.batch(sql),
        }
    }

    /// The id the last INSERT into a table with a generated id took.
    pub fn last_insert_rowid(&self) -> i64 {
        match *self {
            Conn::Lite(c) => c.last_insert_rowid(),
            Conn::Pg(c) => c
                .statement("SELECT lastval()")
                .and_then(|s| pg_rows(c, &s, &()))
                .ok()
                .and_then(|rows| rows.into_iter().next())
                .and_then(|row| row.into_iter().next())
                .and_then(|v| match v {
                    Value::Integer(i) => Some(i),
                    _ => None,
                })
                .unwrap_or(0),
        }
    }

    /// No transaction is open (SQLite ends one by itself after a disk
    /// error; a PostgreSQL session that is gone has none either).
    pub fn is_autocommit(&self) -> bool {
        match *self {
            Conn::Lite(c) => c.is_autocommit(),
            Conn::Pg(c) => !c.in_transaction.get() || c.is_closed(),
        }
    }
}

/// A prepared statement of either database.
pub enum Statement<'c> {
    Lite(rusqlite::CachedStatement<'c>),
    LiteOnce(rusqlite::Statement<'c>),
    Pg {
        conn: &'c PgConn,
        stmt: postgres::Statement,
    },
}

/// What a SQLite row goes through on its way to the caller's closure.
type LiteMap<'s, T> = Box<dyn FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T> + 's>;

/// Rows read through [`Statement::query_map`]: SQLite's as they come,
/// PostgreSQL's all at once.
pub enum MappedRows<'s, T> {
    Lite(rusqlite::MappedRows<'s, LiteMap<'s, T>>),
    Pg(std::vec::IntoIter<rusqlite::Result<T>>),
}

impl<T> Iterator for MappedRows<'_, T> {
    type Item = rusqlite::Result<T>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            MappedRows::Lite(a) => a.next(),
            MappedRows::Pg(b) => b.next(),
        }
    }
}

impl<'c> Statement<'c> {
    /// The statement of whichever database this is.
    fn side(&mut self) -> Side<'_, 'c> {
        match self {
            Statement::Lite(s) => Side::Lite(s),
            Statement::LiteOnce(s) => Side::Lite(s),
            Statement::Pg { conn, stmt } => Side::Pg(conn, stmt),
        }
    }

    /// How many parameters the statement takes.
    pub fn parameter_count(&self) -> usize {
        match self {
            Statement::Lite(s) => s.parameter_count(),
            Statement::LiteOnce(s) => s.parameter_count(),
            Statement::Pg { stmt, .. } => stmt.params().len(),
        }
    }

    pub fn execute<P: Params>(&mut self, params: P) -> rusqlite::Result<usize> {
        match self.side() {
            Side::Lite(s) => params.with(|p| s.execute(p)),
            Side::Pg(conn, stmt) => pg_execute(conn, stmt, &params),
        }
    }

    /// Runs an INSERT and returns the id it generated.
    pub fn insert<P: Params>(&mut self, params: P) -> rusqlite::Result<i64> {
        match self.side() {
            Side::Lite(s) => params.with(|p| s.insert(p)),
            Side::Pg(conn, stmt) => {
                pg_execute(conn, stmt, &params)?;
                Ok(Conn::Pg(conn).last_insert_rowid())
            }
        }
    }

    pub fn query_row<T, P, F>(&mut self, params: P, f: F) -> rusqlite::Result<T>
    where
        P: Params,
        F: FnOnce(&Row<'_, '_>) -> rusqlite::Result<T>,
    {
        match self.side() {
            Side::Lite(s) => params.with(|p| s.query_row(p, |r| f(&Row::Lite(r)))),
            Side::Pg(conn, stmt) => {
                let rows = pg_rows(conn, stmt, &params)?;
                match rows.first() {
                    Some(row) => f(&Row::Pg(row)),
                    None => Err(rusqlite::Error::QueryReturnedNoRows),
                }
            }
        }
    }

    pub fn query_map<'s, T, P, F>(
        &'s mut self,
        params: P,
        mut f: F,
    ) -> rusqlite::Result<MappedRows<'s, T>>
    where
        P: Params,
        F: FnMut(&Row<'_, '_>) -> rusqlite::Result<T> + 's,
        T: 's,
    {
        match self.side() {
            Side::Lite(s) => {
                let map: LiteMap<'s, T> = Box::new(move |r| f(&Row::Lite(r)));
                Ok(MappedRows::Lite(params.with(|p| s.query_map(p, map))?))
            }
            Side::Pg(conn, stmt) => {
                let rows = pg_rows(conn, stmt, &params)?;
                let out: Vec<rusqlite::Result<T>> = rows.iter().map(|r| f(&Row::Pg(r))).collect();
                Ok(MappedRows::Pg(out.into_iter()))
            }
        }
    }

    /// The rows, one by one (`while let Some(row) = rows.next()?`).
    pub fn query<P: Params>(&mut self, params: P) -> rusqlite::Result<Rows<'_>> {
        match self.side() {
            Side::Lite(s) => Ok(Rows::Lite(params.with(|p| s.query(p))?)),
            Side::Pg(conn, stmt) => Ok(Rows::Pg(pg_rows(conn, stmt, &params)?, 0)),
        }
    }

    /// Whether the query returns any row.
    pub fn exists<P: Params>(&mut self, params: P) -> rusqlite::Result<bool> {
        let mut rows = self.query_map(params, |_| Ok(()))?;
        rows.next().transpose().map(|r| r.is_some())
    }
}

/// A statement seen as the one database it belongs to.
enum Side<'a, 'c> {
    Lite(&'a mut rusqlite::Statement<'c>),
    Pg(&'c PgConn, &'a postgres::Statement),
}

/// The rows of [`Statement::query`].
pub enum Rows<'s> {
    Lite(rusqlite::Rows<'s>),
    Pg(Vec<Vec<Value>>, usize),
}

impl Rows<'_> {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> rusqlite::Result<Option<Row<'_, '_>>> {
        match self {
            Rows::Lite(rows) => Ok(rows.next()?.map(Row::Lite)),
            Rows::Pg(rows, at) => {
                let row = rows.get(*at);
                *at += 1;
                Ok(row.map(|r| Row::Pg(r.as_slice())))
            }
        }
    }
}

/// One result row of either database.
pub enum Row<'a, 'b> {
    Lite(&'a rusqlite::Row<'b>),
    Pg(&'a [Value]),
}

/// A column by position (or, on SQLite, by name).
pub trait ColumnIndex: rusqlite::RowIndex {
    fn position(&self) -> Option<usize>;
}

impl ColumnIndex for usize {
    fn position(&self) -> Option<usize> {
        Some(*self)
    }
}

impl Row<'_, '_> {
    pub fn get<I: ColumnIndex, T: FromSql>(&self, idx: I) -> rusqlite::Result<T> {
        match self {
            Row::Lite(r) => r.get(idx),
            Row::Pg(values) => {
                let idx = idx.position().ok_or(rusqlite::Error::InvalidQuery)?;
                let v = values
                    .get(idx)
                    .ok_or(rusqlite::Error::InvalidColumnIndex(idx))?;
                T::column_result(ValueRef::from(v)).map_err(|e| match e {
                    rusqlite::types::FromSqlError::InvalidType => {
                        rusqlite::Error::InvalidColumnType(
                            idx,
                            String::new(),
                            ValueRef::from(v).data_type(),
                        )
                    }
                    other => rusqlite::Error::FromSqlConversionFailure(
                        idx,
                        ValueRef::from(v).data_type(),
                        Box::new(other),
                    ),
                })
            }
        }
    }

    pub fn get_ref(&self, idx: usize) -> rusqlite::Result<ValueRef<'_>> {
        match self {
            Row::Lite(r) => r.get_ref(idx),
            Row::Pg(values) => values
                .get(idx)
                .map(ValueRef::from)
                .ok_or(rusqlite::Error::InvalidColumnIndex(idx)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_inserts_are_spelled_for_postgres() {
        assert_eq!(
            translate("SELECT a FROM t WHERE b = ?2 AND c = ?1 AND d = '?x'"),
            "SELECT a FROM t WHERE b = $2 AND c = $1 AND d = '?x'"
        );
        assert_eq!(translate("VALUES (?, ?)"), "VALUES ($1, $2)");
        assert_eq!(
            translate("INSERT OR IGNORE INTO t (a) VALUES (?1)"),
            "INSERT INTO t (a) VALUES ($1) ON CONFLICT DO NOTHING"
        );
        assert_eq!(
            translate("INSERT OR IGNORE INTO t (a) VALUES (?1) RETURNING a;"),
            "INSERT INTO t (a) VALUES ($1) ON CONFLICT DO NOTHING RETURNING a;"
        );
        assert_eq!(translate("BEGIN IMMEDIATE"), "BEGIN");
        assert_eq!(
            translate("SELECT nullif(raw, X''), x'0A' FROM t INDEXED BY t_raw WHERE a = 'X'''"),
            "SELECT nullif(raw, '\\x'::bytea), '\\x0A'::bytea FROM t WHERE a = 'X'''"
        );
        assert_eq!(
            translate("SELECT 1 FROM t INDEXED BY t_a\n WHERE a = ?1"),
            "SELECT 1 FROM t\n WHERE a = $1"
        );
    }

    #[test]
    fn numerics_read_as_integers_or_reals() {
        // 12345678: ndigits 2, weight 1, sign +, dscale 0, digits 1234 5678
        let raw = [0, 2, 0, 1, 0, 0, 0, 0, 0x04, 0xD2, 0x16, 0x2E];
        assert_eq!(numeric(&raw).ok(), Some(Value::Integer(12_345_678)));
        // -1.5: ndigits 2, weight 0, sign -, dscale 1, digits 1 5000
        let raw = [0, 2, 0, 0, 0x40, 0, 0, 1, 0, 1, 0x13, 0x88];
        assert_eq!(numeric(&raw).ok(), Some(Value::Real(-1.5)));
        // 0: no digits
        assert_eq!(
            numeric(&[0, 0, 0, 0, 0, 0, 0, 0]).ok(),
            Some(Value::Integer(0))
        );
    }
}
