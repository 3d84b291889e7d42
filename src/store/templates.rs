//! Saved side-conversation templates: their rows.

use rusqlite::{OptionalExtension, params};

use super::{Db, Result, StoreError};
use crate::model::{NewTemplate, Template, now_ms, rfc3339};

/// A row as stored, recipient lists still JSON.
struct Row {
    template: Template,
    to: String,
    cc: String,
    tags: String,
}

fn from_row(r: &super::sql::Row<'_, '_>) -> rusqlite::Result<Row> {
    Ok(Row {
        template: Template {
            id: r.get(0)?,
            name: r.get(1)?,
            to: Vec::new(),
            cc: Vec::new(),
            subject: r.get(4)?,
            body_text: r.get(5)?,
            body_html: r.get(6)?,
            tags: Vec::new(),
            created_at: rfc3339(r.get(7)?),
        },
        to: r.get(2)?,
        cc: r.get(3)?,
        tags: r.get(8)?,
    })
}

fn to_template(row: Row) -> Result<Template> {
    let mut t = row.template;
    t.to = serde_json::from_str(&row.to)?;
    t.cc = serde_json::from_str(&row.cc)?;
    t.tags = serde_json::from_str(&row.tags)?;
    Ok(t)
}

const COLUMNS: &str =
    "id, name, to_addrs, cc_addrs, subject, body_text, body_html, created_at, tags";

pub fn create(db: &Db<'_>, t: &NewTemplate, by: i64) -> Result<Template> {
    let conn = db.conn();
    conn.execute(
        "INSERT INTO templates (name, to_addrs, cc_addrs, subject, body_text, body_html, created_by,
                                created_at, tags)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            t.name.trim(),
            serde_json::to_string(&t.to)?,
            serde_json::to_string(&t.cc)?,
            t.subject,
            t.body_text,
            t.body_html,
            by,
            now_ms(),
            serde_json::to_string(&t.tags)?
        ],
    )?;
    get(db, conn.last_insert_rowid())
}

pub fn get(db: &Db<'_>, id: i64) -> Result<Template> {
    let row = db
        .conn()
        .query_row(
            &format!("SELECT {COLUMNS} FROM templates WHERE id = ?1"),
            [id],
            from_row,
        )
        .optional()?
        .ok_or(StoreError::NotFound)?;
    to_template(row)
}

pub fn list(db: &Db<'_>) -> Result<Vec<Template>> {
    let mut stmt = db
        .conn()
        .prepare(&format!("SELECT {COLUMNS} FROM templates ORDER BY id"))?;
    let rows = stmt
        .query_map([], from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter().map(to_template).collect()
}

pub fn delete(db: &Db<'_>, id: i64) -> Result<()> {
    match db
        .conn()
        .execute("DELETE FROM templates WHERE id = ?1", [id])?
    {
        0 => Err(StoreError::NotFound),
        _ => Ok(()),
    }
}
