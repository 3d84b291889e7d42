//! `backchannel store copy --to postgres://…` (SPEC §13): moves a SQLite
//! store into an empty PostgreSQL database in one transaction, then
//! compares the row counts of every table on both sides.
//!
//! Tables go parents first (by their foreign keys), rows in id order, with
//! the PostgreSQL triggers off while copying (the rows already carry what
//! the triggers would compute); identity sequences are moved past the
//! copied ids afterwards, so new rows get new ids.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rusqlite::types::Value;

use super::sql::{Conn, PgConn, params_from_iter};
use super::{Result, StoreError, pg};

/// Rows one INSERT carries.
const ROWS_PER_INSERT: usize = 200;

/// What was copied: each table with its row count (equal on both sides).
#[derive(Debug)]
pub struct Copied {
    pub tables: Vec<(String, i64)>,
    pub version: u32,
}

/// Tables whose rows say the target is in use (a copy goes only into a
/// database no gateway has written to).
const IN_USE: [&str; 4] = ["users", "messages", "inbound_queue", "side_conversations"];

fn db(e: impl std::fmt::Display) -> StoreError {
    StoreError::Database(e.to_string())
}

/// Copies the SQLite database at `path` (already migrated to the newest
/// version; nobody may be writing to it) into the PostgreSQL database at
/// `url`.
pub fn copy_to_postgres(path: &Path, url: &str) -> Result<Copied> {
    let path = path.to_owned();
    let url = url.to_owned();
    // The blocking client runs a runtime of its own: keep it off any
    // runtime thread of the caller's.
    std::thread::spawn(move || copy_here(&path, &url))
        .join()
        .map_err(|_| db("the copy failed (internal error)"))?
}

fn copy_here(path: &Path, url: &str) -> Result<Copied> {
    let lite =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let version: u32 = lite.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let target = pg::Target::parse(url)?;
    let mut client = target.connect()?;
    let pg_version = pg::migrate(&mut client)?;
    if pg_version != version {
        return Err(db(format!(
            "the SQLite store is at schema version {version}, PostgreSQL at {pg_version}: run this binary's `serve` once on the SQLite store first"
        )));
    }
    let pg = PgConn::new(client);
    let conn = Conn::Pg(&pg);
    for table in IN_USE {
        let n: i64 = conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?;
        if n > 0 {
            return Err(db(format!(
                "the PostgreSQL database is in use ({table} has {n} rows): copy into an empty database"
            )));
        }
    }
    let tables = parents_first(&lite)?;
    let pg_columns = postgres_columns(conn)?;
    for t in &tables {
        if !pg_columns.contains_key(t) {
            return Err(db(format!("table {t} is missing in PostgreSQL")));
        }
    }

    // One snapshot of SQLite, one transaction in PostgreSQL: all or nothing.
    lite.execute_batch("BEGIN")?;
    conn.execute_batch("BEGIN")?;
    let copied = (|| -> Result<Vec<(String, i64)>> {
        let mut out = Vec::new();
        // The schema's own rows (counters, the INBOX) come across with
        // everything else.
        let all: Vec<String> = tables.iter().rev().cloned().collect();
        conn.execute_batch(&format!("TRUNCATE {} RESTART IDENTITY", all.join(", ")))?;
        for t in &tables {
            conn.execute_batch(&format!("ALTER TABLE {t} DISABLE TRIGGER USER"))?;
            let n = copy_table(&lite, conn, t, &pg_columns[t])?;
            conn.execute_batch(&format!("ALTER TABLE {t} ENABLE TRIGGER USER"))?;
            move_sequences(conn, t)?;
            out.push((t.clone(), n));
        }
        Ok(out)
    })();
    match copied {
        Ok(counts) => {
            conn.execute_batch("COMMIT")?;
            lite.execute_batch("COMMIT")?;
            verify(&lite, conn, &counts)?;
            Ok(Copied {
                tables: counts,
                version,
            })
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            let _ = lite.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// SQLite's tables, each after the tables its foreign keys point to.
fn parents_first(lite: &rusqlite::Connection) -> Result<Vec<String>> {
    let names: Vec<String> = lite
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut parents: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for t in &names {
        let refs: BTreeSet<String> = lite
            .prepare(&format!(
                "SELECT \"table\" FROM pragma_foreign_key_list('{t}')"
            ))?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        parents.insert(t.clone(), refs.into_iter().filter(|p| p != t).collect());
    }
    let mut order = Vec::new();
    let mut done = BTreeSet::new();
    while order.len() < names.len() {
        let ready: Vec<String> = names
            .iter()
            .filter(|t| !done.contains(*t) && parents[*t].iter().all(|p| done.contains(p)))
            .cloned()
            .collect();
        if ready.is_empty() {
            return Err(db("the tables' foreign keys form a cycle"));
        }
        for t in ready {
            done.insert(t.clone());
            order.push(t);
        }
    }
    Ok(order)
}

/// PostgreSQL's tables and their columns.
fn postgres_columns(conn: Conn<'_>) -> Result<BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut stmt = conn.prepare(
        "SELECT table_name, column_name FROM information_schema.columns
         WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position",
    )?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
        let (t, c) = row?;
        out.entry(t).or_default().push(c);
    }
    Ok(out)
}

/// Copies one table's rows; returns how many.
fn copy_table(
    lite: &rusqlite::Connection,
    conn: Conn<'_>,
    table: &str,
    pg_columns: &[String],
) -> Result<i64> {
    let mut columns: Vec<String> = lite
        .prepare(&format!(
            "SELECT name FROM pragma_table_info('{table}') ORDER BY cid"
        ))?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for c in &columns {
        if !pg_columns.contains(c) {
            return Err(db(format!("column {table}.{c} is missing in PostgreSQL")));
        }
    }
    // A table PostgreSQL orders by an explicit `rowid` gets SQLite's.
    let select_rowid =
        pg_columns.iter().any(|c| c == "rowid") && !columns.iter().any(|c| c == "rowid");
    let mut select_list = columns.join(", ");
    if select_rowid {
        select_list.push_str(", rowid");
        columns.push("rowid".into());
    }
    let width = columns.len();
    let insert = |rows: usize| {
        let mut sql = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
        for r in 0..rows {
            if r > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for c in 0..width {
                if c > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("?{}", r * width + c + 1));
            }
            sql.push(')');
        }
        sql
    };
    let full = insert(ROWS_PER_INSERT);
    // Rows in insertion order (a table without rowid in its key's).
    let without_rowid: bool = lite.query_row(
        "SELECT sql LIKE '%WITHOUT ROWID%' FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [table],
        |r| r.get(0),
    )?;
    let order = if without_rowid { "1" } else { "rowid" };
    let mut select = lite.prepare(&format!(
        "SELECT {select_list} FROM {table} ORDER BY {order}"
    ))?;
    let mut rows = select.query([])?;
    let mut batch: Vec<Value> = Vec::with_capacity(ROWS_PER_INSERT * width);
    let mut n = 0i64;
    let flush = |batch: &mut Vec<Value>| -> Result<()> {
        let rows = batch.len() / width;
        if rows == 0 {
            return Ok(());
        }
        let sql = if rows == ROWS_PER_INSERT {
            full.clone()
        } else {
            insert(rows)
        };
        conn.execute(&sql, params_from_iter(batch.drain(..)))?;
        Ok(())
    };
    while let Some(row) = rows.next()? {
        for i in 0..width {
            batch.push(row.get::<_, Value>(i)?);
        }
        n += 1;
        if batch.len() == ROWS_PER_INSERT * width {
            flush(&mut batch)?;
        }
    }
    flush(&mut batch)?;
    Ok(n)
}

/// Moves every identity sequence of `table` past the ids copied into it.
fn move_sequences(conn: Conn<'_>, table: &str) -> Result<()> {
    let identity: Vec<String> = conn
        .prepare(
            "SELECT column_name FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = ?1 AND is_identity = 'YES'",
        )?
        .query_map([table], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for column in identity {
        conn.query_row(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', '{column}'),
                               COALESCE((SELECT MAX({column}) FROM {table}), 0) + 1, false)"
            ),
            [],
            |_| Ok(()),
        )?;
    }
    Ok(())
}

/// Counts every table again, on both sides, after the commit.
fn verify(lite: &rusqlite::Connection, conn: Conn<'_>, copied: &[(String, i64)]) -> Result<()> {
    for (table, n) in copied {
        let in_lite: i64 =
            lite.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?;
        let in_pg: i64 =
            conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?;
        if in_lite != *n || in_pg != *n {
            return Err(db(format!(
                "{table}: {in_lite} rows in SQLite, {in_pg} in PostgreSQL after copying {n}"
            )));
        }
    }
    Ok(())
}
