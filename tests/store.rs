//! Store: migrations, group commit under concurrent load, failure paths.

use std::collections::HashSet;
use std::sync::Arc;

mod common;

use backchannel::model::{Role, Token};
use backchannel::store::{self, Store, StoreError, inbound};

fn user_version(path: &std::path::Path) -> u32 {
    let c = rusqlite::Connection::open(path).expect("open");
    c.query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version")
}

fn tables(path: &std::path::Path) -> Vec<String> {
    let c = rusqlite::Connection::open(path).expect("open");
    let mut s = c
        .prepare("SELECT name FROM sqlite_master WHERE type IN ('table','index') ORDER BY name")
        .expect("prepare");
    s.query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

#[test]
fn migrates_an_empty_file_and_reopens_idempotently() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sub/dir/bc.db");
    let latest = store::migrations()
        .last()
        .map(|m| m.0)
        .expect("has migrations");

    let s = Store::open(&path).expect("open new");
    s.close();
    assert_eq!(user_version(&path), latest);
    let first = tables(&path);
    for t in [
        "users",
        "parents",
        "senders",
        "dkim_keys",
        "side_conversations",
        "participants",
        "contacts",
        "inbound_queue",
        "messages",
        "attachments",
        "outbox",
        "settings",
        "activity",
        "webhooks",
        "webhook_deliveries",
        "templates",
        "mailboxes",
        "mailbox_messages",
        "message_flags",
        "counters",
        "messages_message_id",
        "outbox_due",
    ] {
        assert!(first.iter().any(|x| x == t), "missing {t}");
    }

    // Data written before a reopen survives it, and nothing is re-applied.
    let s = Store::open(&path).expect("reopen");
    s.write_blocking(|c| store::users::create(c, "a@example.com", "A", Role::Admin))
        .expect("create user");
    s.close();
    let s = Store::open(&path).expect("reopen again");
    let users = s.read_blocking(store::users::list).expect("list");
    assert_eq!(users.len(), 1);
    s.close();
    assert_eq!(tables(&path), first);
    assert_eq!(user_version(&path), latest);

    // Pragmas: WAL is persistent in the file.
    let c = rusqlite::Connection::open(&path).expect("open");
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("mode");
    assert_eq!(mode, "wal");
}

/// Migration 11 gives every user a Sent mailbox and fills it with what
/// they wrote before: in the order it entered its ticket's mailbox, at the
/// same modseq; every other mailbox row, UID and modseq stays, and deleting
/// a message still cascades to its placements.
#[test]
fn migration_11_backfills_each_users_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bc.db");
    let c = rusqlite::Connection::open(&path).expect("open");
    for (n, sql) in store::migrations().into_iter().filter(|m| m.0 < 11) {
        c.execute_batch(sql).expect("old migration");
        c.execute_batch(&format!("PRAGMA user_version = {n}"))
            .expect("version");
    }
    c.execute_batch(
        "INSERT INTO users (id, email, name, role, token_hash, created_at) VALUES
           (1, 'ann@acme.com', 'Ann', 'member', x'01', 0),
           (2, 'bob@acme.com', 'Bob', 'member', x'02', 0),
           (3, 'olga@acme.com', 'Olga', 'owner', x'03', 0);
         INSERT INTO parents (id, external_id, created_at, updated_at) VALUES (1, 'T-1', 0, 0);
         INSERT INTO mailboxes (id, name, kind, parent_id, uidvalidity, uidnext, highest_modseq)
           VALUES (10, 'Tickets/T-1', 'ticket', 1, 7, 6, 50);",
    )
    .expect("seed");
    // Five messages on the ticket: Ann wrote 1 and 4 (4 first, by modseq),
    // Bob 2, 3 came in, 5 left without an author (a system message).
    let rows = [
        (1, "out", Some(1), 40),
        (2, "out", Some(2), 20),
        (3, "in", None, 30),
        (4, "out", Some(1), 10),
        (5, "out", None, 50),
    ];
    for (uid, (id, dir, author, modseq)) in rows.iter().enumerate() {
        c.execute(
            "INSERT INTO messages (id, direction, kind, route, raw, raw_sha256, received_at, author_id)
             VALUES (?1, ?2, 'reply', 'token', x'41', x'00', 0, ?3)",
            rusqlite::params![id, dir, author],
        )
        .expect("message");
        c.execute(
            "INSERT INTO mailbox_messages (mailbox_id, uid, message_id, modseq) VALUES (10, ?1, ?2, ?3)",
            rusqlite::params![uid as i64 + 1, id, modseq],
        )
        .expect("placement");
    }
    c.execute_batch("UPDATE counters SET value = 50 WHERE name = 'modseq'")
        .expect("counter");
    drop(c);

    let s = Store::open(&path).expect("migrate");
    let viewer = |user_id| store::view::Viewer {
        role: Role::Member,
        user_id,
    };
    let (ann, bob, olga, ticket) = s
        .read_blocking(move |c| {
            let sent =
                |user| -> Result<(store::view::Mailbox, Vec<store::view::Entry>), StoreError> {
                    let mb = store::view::mailbox_by_name(c, viewer(user), "Sent")?
                        .ok_or(StoreError::NotFound)?;
                    let entries = store::view::entries(c, mb.id)?;
                    Ok((mb, entries))
                };
            Ok((sent(1)?, sent(2)?, sent(3)?, store::view::entries(c, 10)?))
        })
        .expect("read");
    s.close();
    let latest = store::migrations()
        .last()
        .map(|m| m.0)
        .expect("has migrations");
    assert!(latest >= 11);
    assert_eq!(user_version(&path), latest);
    let e = |entries: &[store::view::Entry]| {
        entries
            .iter()
            .map(|e| (e.uid, e.message_id, e.modseq))
            .collect::<Vec<_>>()
    };
    assert_eq!(e(&ann.1), vec![(1, 4, 10), (2, 1, 40)]);
    assert_eq!(
        (ann.0.name.as_str(), ann.0.uidnext, ann.0.highest_modseq),
        ("Sent", 3, 40)
    );
    assert_eq!(e(&bob.1), vec![(1, 2, 20)]);
    assert_eq!((bob.0.uidnext, bob.0.highest_modseq), (2, 20));
    assert!(olga.1.is_empty());
    assert_eq!((olga.0.uidnext, olga.0.highest_modseq), (1, 0));
    assert_eq!(ticket.len(), 5);
    assert_eq!(
        e(&ticket),
        vec![(1, 1, 40), (2, 2, 20), (3, 3, 30), (4, 4, 10), (5, 5, 50)]
    );
    let c = rusqlite::Connection::open(&path).expect("open");
    let counter: i64 = c
        .query_row(
            "SELECT value FROM counters WHERE name = 'modseq'",
            [],
            |r| r.get(0),
        )
        .expect("counter");
    assert_eq!(counter, 50, "no change a JMAP client would see");
    c.execute_batch("PRAGMA foreign_keys = ON; DELETE FROM messages WHERE id = 4")
        .expect("delete");
    let left: i64 = c
        .query_row(
            "SELECT count(*) FROM mailbox_messages WHERE message_id = 4",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(left, 0);
    let fk: i64 = c
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .expect("fk check");
    assert_eq!(fk, 0);
}

/// Migration 5 rebuilds the agent view's placement table without a rowid:
/// a store written by the previous version keeps every row, its UIDs and
/// modseqs, and the lookups by mailbox and by message still find them.
#[test]
fn migration_5_keeps_every_mailbox_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bc.db");
    let c = rusqlite::Connection::open(&path).expect("open");
    for (n, sql) in store::migrations().into_iter().filter(|m| m.0 <= 4) {
        c.execute_batch(sql).expect("old migration");
        c.execute_batch(&format!("PRAGMA user_version = {n}"))
            .expect("version");
    }
    let mut boxes = Vec::new();
    for name in ["Tickets/A", "Tickets/B"] {
        c.execute(
            "INSERT INTO mailboxes (name, kind, uidvalidity) VALUES (?1, 'ticket', 7)",
            [name],
        )
        .expect("mailbox");
        boxes.push(c.last_insert_rowid());
    }
    let mut want = Vec::new();
    for i in 0..40i64 {
        c.execute(
            "INSERT INTO messages (direction, kind, route, raw, raw_sha256, received_at)
             VALUES ('in', 'reply', 'token', x'41', x'00', ?1)",
            [i],
        )
        .expect("message");
        let message = c.last_insert_rowid();
        // Every message in its ticket mailbox, every third one in both.
        for (k, mailbox) in boxes.iter().enumerate() {
            if k == (i % 2) as usize || i % 3 == 0 {
                let uid = want
                    .iter()
                    .filter(|w: &&(i64, i64, i64, i64)| w.0 == *mailbox)
                    .count() as i64
                    + 1;
                c.execute(
                    "INSERT INTO mailbox_messages (mailbox_id, uid, message_id, modseq)
                     VALUES (?1, ?2, ?3, ?4)",
                    [*mailbox, uid, message, 100 + i],
                )
                .expect("placement");
                want.push((*mailbox, uid, message, 100 + i));
            }
        }
    }
    drop(c);

    let s = Store::open(&path).expect("migrate");
    let (entries, of_first, of_second) = s
        .read_blocking(|c| {
            let mut all = Vec::new();
            for mailbox in [1, 2].map(|k| boxes[k - 1]) {
                for e in store::view::entries(c, mailbox)? {
                    all.push((mailbox, e.uid as i64, e.message_id, e.modseq));
                }
            }
            let first = store::view::mailboxes_of(c, 1)?;
            let second = store::view::mailboxes_of(c, 2)?;
            Ok((all, first, second))
        })
        .expect("read");
    s.close();
    let latest = store::migrations()
        .last()
        .map(|m| m.0)
        .expect("has migrations");
    assert!(latest >= 5);
    assert_eq!(user_version(&path), latest);
    let mut sorted = want.clone();
    sorted.sort();
    assert_eq!(entries, sorted);
    assert_eq!(of_first, boxes, "message 1 (i = 0) is in both mailboxes");
    assert_eq!(
        of_second,
        vec![boxes[1]],
        "message 2 (i = 1) only in the second"
    );

    let c = rusqlite::Connection::open(&path).expect("open");
    let sql: String = c
        .query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'mailbox_messages'",
            [],
            |r| r.get(0),
        )
        .expect("table");
    assert!(sql.contains("WITHOUT ROWID"), "{sql}");
    let indexes: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'mailbox_messages' AND sql IS NOT NULL")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    // Migration 6 dropped the modseq index: "added since" reads the key.
    assert!(indexes.is_empty(), "{indexes:?}");
    let gone: i64 = c
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name IN
               ('mailbox_messages_modseq', 'messages_side_conversation')",
            [],
            |r| r.get(0),
        )
        .expect("indexes");
    assert_eq!(gone, 0);
    // Deleting a message still cascades to its placements.
    c.execute_batch("PRAGMA foreign_keys = ON; DELETE FROM messages WHERE id = 1")
        .expect("delete");
    let left: i64 = c
        .query_row(
            "SELECT count(*) FROM mailbox_messages WHERE message_id = 1",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(left, 0);
    let rows: i64 = c
        .query_row("SELECT count(*) FROM mailbox_messages", [], |r| r.get(0))
        .expect("count");
    assert_eq!(rows as usize, want.len() - 2);
}

#[test]
fn a_file_from_a_newer_version_is_left_alone() {
    // A database already at (or past) the latest version gets no migration.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bc.db");
    Store::open(&path).expect("open").close();
    let c = rusqlite::Connection::open(&path).expect("open");
    c.execute_batch("PRAGMA user_version = 999").expect("bump");
    drop(c);
    Store::open(&path).expect("open at 999").close();
    assert_eq!(user_version(&path), 999);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousands_of_concurrent_writes_are_all_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bc.db");
    let s = Store::open(&path).expect("open");
    const N: usize = 4000;
    let mut handles = Vec::new();
    for i in 0..N {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let env = inbound::Envelope {
                peer_ip: "127.0.0.1".into(),
                helo: "client".into(),
                mail_from: format!("sender{i}@example.com"),
                rcpts: vec!["reply@gw.example.com".into()],
                ..Default::default()
            };
            let raw = format!("Subject: {i}\r\n\r\nbody {i}\r\n").into_bytes();
            let id = s.write(move |c| inbound::enqueue(c, &env, &raw)).await?;
            Ok::<_, StoreError>((i, id))
        }));
    }
    let mut acked = Vec::new();
    for h in handles {
        acked.push(h.await.expect("join").expect("write acknowledged"));
    }
    assert_eq!(acked.len(), N);
    let ids: HashSet<i64> = acked.iter().map(|a| a.1).collect();
    assert_eq!(ids.len(), N, "every write got its own row");
    s.close();

    // Read back through a fresh connection after closing: every acknowledged
    // row is there with its own content.
    let s = Store::open(&path).expect("reopen");
    for (i, id) in acked {
        let m = s.read_blocking(move |c| inbound::get(c, id)).expect("row");
        assert_eq!(m.envelope.mail_from, format!("sender{i}@example.com"));
        assert_eq!(
            m.raw,
            format!("Subject: {i}\r\n\r\nbody {i}\r\n").into_bytes()
        );
    }
    s.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_write_does_not_undo_its_batch_neighbours() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Store::open(&dir.path().join("bc.db")).expect("open");
    let mut handles = Vec::new();
    for i in 0..200 {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            s.write(move |c| {
                store::put_setting(c, &format!("k{i}"), &serde_json::json!(1))?;
                if i % 2 == 1 {
                    // Odd jobs fail after writing: their insert must vanish.
                    return Err(StoreError::Conflict("odd".into()));
                }
                Ok(())
            })
            .await
        }));
    }
    for (i, h) in handles.into_iter().enumerate() {
        let r = h.await.expect("join");
        assert_eq!(r.is_ok(), i % 2 == 0, "job {i}: {r:?}");
    }
    let n: i64 = common::Sql::at(dir.path().join("bc.db"))
        .read(|c| Ok(c.query_row("SELECT COUNT(*) FROM settings", [], |r| r.get(0))?))
        .await
        .expect("count");
    assert_eq!(n, 100);
    s.close();
}

#[tokio::test]
async fn a_failed_commit_answers_every_caller_with_an_error_and_keeps_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Store::open(&dir.path().join("bc.db")).expect("open");
    s.fail_next_commit();
    let r = s
        .write(|c| store::put_setting(c, "x", &serde_json::json!(1)))
        .await;
    assert!(matches!(r, Err(StoreError::Database(_))), "{r:?}");
    let x = s.read(|c| store::get_setting(c, "x")).await.expect("read");
    assert_eq!(x, None, "nothing of the failed batch is kept");
    // The writer goes on working afterwards.
    s.write(|c| store::put_setting(c, "y", &serde_json::json!(1)))
        .await
        .expect("next write");
    s.close();
}

#[tokio::test]
async fn not_found_and_conflict_are_distinct_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Store::open(&dir.path().join("bc.db")).expect("open");
    let missing = s.read(|c| inbound::get(c, 42)).await;
    assert_eq!(missing, Err(StoreError::NotFound));
    s.write(|c| store::users::create(c, "dup@example.com", "D", Role::Member).map(|_| ()))
        .await
        .expect("first");
    let dup = s
        .write(|c| store::users::create(c, "DUP@example.com", "D", Role::Member).map(|_| ()))
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    s.close();
    // After close, writes are refused, not hung.
    let closed = s.write(|_| Ok(())).await;
    assert_eq!(closed, Err(StoreError::Closed));
}

#[tokio::test]
async fn side_conversation_tokens_are_unique_in_the_schema() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Arc::new(Store::open(&dir.path().join("bc.db")).expect("open"));
    let token = Token::generate();
    let t1 = token.to_string();
    let insert = |db: &store::Db<'_>, parent: &str, token: &str| -> store::Result<()> {
        let (parent_id, _) = store::parents::create_if_missing(db, parent, "", 0)?;
        store::side_conversations::insert(
            db,
            &backchannel::model::NewSideConversation {
                parent_id,
                token,
                portal_per_recipient: false,
                subject: "s",
                sender_email: "reply@gw.example.com",
                started_by: None,
                created_at: 0,
            },
        )?;
        Ok(())
    };
    let r = s
        .write(move |c| {
            insert(c, "T-1", &t1)?;
            insert(c, "T-1", &t1)
        })
        .await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    // Case-insensitive too: the upper-case form is the same token.
    let upper = token.to_string().to_ascii_uppercase();
    let lower = token.to_string();
    let r = s
        .write(move |c| {
            insert(c, "T-2", &lower)?;
            insert(c, "T-2", &upper)
        })
        .await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    s.close();
}

#[tokio::test]
async fn a_panicking_write_fails_alone_and_the_writer_lives_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Store::open(&dir.path().join("bc.db")).expect("open");
    let r: Result<(), StoreError> = s
        .write(|c| {
            store::put_setting(c, "half", &serde_json::json!(1))?;
            panic!("a bug in a write job");
        })
        .await;
    assert!(r.is_err());
    s.write(|c| store::put_setting(c, "next", &serde_json::json!(1)))
        .await
        .expect("the writer still works");
    let keys: String = common::Sql::at(dir.path().join("bc.db"))
        .read(|c| Ok(c.query_row("SELECT group_concat(key) FROM settings", [], |r| r.get(0))?))
        .await
        .expect("read");
    assert_eq!(keys, "next", "the panicking job's insert was rolled back");
    s.close();
}
