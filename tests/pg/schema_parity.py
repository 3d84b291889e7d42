#!/usr/bin/env python3
"""Proof that schema_pg.sql (PostgreSQL) and schema.sql (SQLite) agree.

usage: tests/pg/schema_parity.py POSTGRES_URL      (e.g. the URL printed by
       tests/pg/pg.sh start DIR)

It creates a scratch database on that server, applies schema_pg.sql to it
with psql (each migration in its own transaction, ON_ERROR_STOP), applies
every migration of schema.sql to an in-memory SQLite database the way the
store does, and compares

  * the migration numbers of the two files;
  * the tables; each table's columns in order (PostgreSQL may have only the
    extra columns listed in EXTRA_COLUMNS), their types, NOT NULL, defaults,
    identity columns (SQLite's rowid aliases) and primary keys;
  * every unique key (COLLATE NOCASE columns as lower(col) in PostgreSQL);
  * the named indexes: names, keys, uniqueness, partial predicates;
  * foreign keys with their ON DELETE / ON UPDATE actions; trigger names;

then replays one scenario of inserts, updates and deletes on both (every
branch of the triggers on `messages`) and compares every table's rows, the
participants' order, and probes constraints (case-insensitive uniqueness,
CHECKs, foreign keys, NOT NULL) for the same accept/refuse outcome.

Exit status 0 only when everything agrees; each difference is printed. The
scratch database is dropped at the end. Standard library and psql only.
"""

import json
import os
import re
import secrets
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
SQLITE_SCHEMA = ROOT / "schema.sql"
PG_SCHEMA = ROOT / "schema_pg.sql"
MARK = "-- migration: "

# Columns only PostgreSQL has, always last: SQLite's implicit rowid, which
# the code orders by.
EXTRA_COLUMNS = {"participants": ["rowid"]}
# SQLite rowid aliases that are another table's id: the code always supplies
# them, so in PostgreSQL they are plain keys, not identity columns.
NOT_IDENTITY = {
    ("inbound_raw", "id"),
    ("agent_replies", "message_id"),
    ("unverified_messages", "message_id"),
    ("outbox_copies", "outbox_id"),
}
SQLITE_TO_PG_TYPE = {
    "INTEGER": "bigint",
    "TEXT": "text",
    "BLOB": "bytea",
    "REAL": "double precision",
}
FK_ACTION = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}

problems = []


def problem(msg):
    problems.append(msg)
    print("DIFF: " + msg)


# --------------------------------------------------------------- migrations


def migrations(text):
    """The numbered blocks of a schema file, split as src/store/mod.rs does."""
    out = []
    rest = text
    while True:
        pos = rest.find(MARK)
        if pos < 0:
            break
        after = rest[pos + len(MARK):]
        line_end = after.find("\n")
        if line_end < 0:
            line_end = len(after)
        try:
            version = int(after[:line_end].strip())
        except ValueError:
            rest = after[line_end:]
            continue
        body = after[line_end:]
        body_len = body.find(MARK)
        if body_len < 0:
            body_len = len(body)
        out.append((version, body[:body_len]))
        rest = body[body_len:]
    return out


# --------------------------------------------------------------- PostgreSQL


class Pg:
    def __init__(self, url):
        self.url = url

    def run(self, sql, single_tx=False, check=True):
        cmd = ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", self.url]
        if single_tx:
            cmd.append("-1")
        env = dict(os.environ, PGCONNECT_TIMEOUT="10")
        proc = subprocess.run(
            cmd, input=sql, capture_output=True, text=True, env=env, timeout=300
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"psql failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def json(self, query):
        out = self.run(f"SELECT coalesce(({query}), '[]'::json);").stdout.strip()
        return json.loads(out, object_pairs_hook=list)


def with_database(url, name):
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def pg_literal(value):
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        raise TypeError("no booleans: flags are 0/1 integers")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return "'\\x" + bytes(value).hex() + "'::bytea"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"cannot render {value!r}")


def render(sql, params):
    """`?` placeholders filled with PostgreSQL literals (no `?` in the SQL text)."""
    pieces = sql.split("?")
    if len(pieces) != len(params) + 1:
        raise ValueError(f"{len(params)} parameters for {len(pieces) - 1} placeholders: {sql}")
    out = [pieces[0]]
    for value, piece in zip(params, pieces[1:]):
        out.append(pg_literal(value))
        out.append(piece)
    return "".join(out)


# --------------------------------------------------------------- structure


def norm_expr(text):
    """An expression compared loosely: no casts, parentheses, spaces or case."""
    if text is None:
        return None
    t = text.lower()
    t = re.sub(r"::[a-z_]+( [a-z_]+)*", "", t)
    t = re.sub(r"[()\s]", "", t)
    return t


def sqlite_checks(table_sql):
    """The CHECK expressions of a CREATE TABLE, normalised."""
    text = re.sub(r"--[^\n]*", "", table_sql)
    out = []
    for m in re.finditer(r"\bCHECK\s*\(", text, re.I):
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        out.append(norm_expr(text[m.end():i - 1]))
    return sorted(out)


def pg_check(definition):
    """pg_get_constraintdef of a CHECK, normalised like SQLite's text:
    PostgreSQL writes `x IN (...)` as `x = ANY (ARRAY[...])`."""
    body = re.sub(r"^CHECK\s*", "", definition)
    body = re.sub(r"(\w+) = ANY \(ARRAY\[(.*?)\]\)", r"\1 IN (\2)", body)
    return norm_expr(body)


def sqlite_structure(db):
    tables = [
        r[0]
        for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    sql_of = dict(db.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL"))
    s = {"tables": {}, "unique": set(), "indexes": {}, "fks": set(), "triggers": set(), "nocase": []}
    for t in tables:
        without_rowid = re.search(r"WITHOUT\s+ROWID\s*$", sql_of[t], re.I) is not None
        info = db.execute(f'PRAGMA table_info("{t}")').fetchall()
        pk = [r[1] for r in sorted((r for r in info if r[5] > 0), key=lambda r: r[5])]
        rowid_alias = None
        if not without_rowid and len(pk) == 1:
            col = next(r for r in info if r[1] == pk[0])
            if col[2].upper() == "INTEGER":
                rowid_alias = pk[0]
        nocase = set()
        for line in sql_of[t].replace(",", ",\n").splitlines():
            m = re.match(r'\s*"?(\w+)"?\s+\w+.*COLLATE\s+NOCASE', line, re.I)
            if m:
                nocase.add(m.group(1))
                s["nocase"].append(f"{t}.{m.group(1)}")
        cols = []
        for cid, name, typ, notnull, dflt, pkpos in info:
            cols.append(
                {
                    "name": name,
                    "type": SQLITE_TO_PG_TYPE.get(typ.upper(), "?" + typ),
                    # a PRIMARY KEY column may hold NULL in a SQLite rowid
                    # table (a documented quirk); PostgreSQL never allows it
                    "notnull": bool(notnull) or pkpos > 0,
                    "default": norm_expr(dflt),
                    "identity": name == rowid_alias and (t, name) not in NOT_IDENTITY,
                }
            )
        s["tables"][t] = {"columns": cols, "pk": pk, "nocase": nocase, "checks": sqlite_checks(sql_of[t])}
        if rowid_alias:
            s["unique"].add((t, (rowid_alias,)))
        for _, iname, unique, origin, partial in db.execute(f'PRAGMA index_list("{t}")'):
            keys = []
            for row in db.execute(f'PRAGMA index_xinfo("{iname}")'):
                _, _, cname, _, coll, is_key = row
                if not is_key:
                    continue
                keys.append(f"lower({cname})" if (coll or "").upper() == "NOCASE" else cname)
            if origin in ("u", "pk"):
                s["unique"].add((t, tuple(keys)))
            else:
                m = re.search(r"\bWHERE\b(.*)$", sql_of[iname], re.I | re.S)
                s["indexes"][iname] = {
                    "table": t,
                    "keys": tuple(keys),
                    "unique": bool(unique),
                    "where": norm_expr(m.group(1)) if m else None,
                }
                if unique:
                    s["unique"].add((t, tuple(keys)))
        fk_rows = db.execute(f'PRAGMA foreign_key_list("{t}")').fetchall()
        by_id = {}
        for fid, seq, ref, frm, to, on_update, on_delete, _match in fk_rows:
            by_id.setdefault(fid, []).append((seq, ref, frm, to, on_update, on_delete))
        for parts in by_id.values():
            parts.sort()
            ref = parts[0][1]
            s["fks"].add(
                (
                    t,
                    tuple(p[2] for p in parts),
                    ref,
                    tuple(p[3] for p in parts),
                    parts[0][5].upper(),
                    parts[0][4].upper(),
                )
            )
    for name, tbl in db.execute("SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger'"):
        s["triggers"].add((tbl, name))
    return s


def pg_structure(pg):
    s = {"tables": {}, "unique": set(), "indexes": {}, "fks": set(), "triggers": set()}
    cols = pg.json(
        """SELECT json_agg(json_build_array(c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
                                  a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attidentity)
                ORDER BY c.relname, a.attnum)
           FROM pg_attribute a
           JOIN pg_class c ON c.oid = a.attrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
           LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
           WHERE n.nspname = 'public' AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped"""
    )
    for t, name, typ, notnull, dflt, ident in cols:
        s["tables"].setdefault(t, {"columns": [], "pk": []})["columns"].append(
            {
                "name": name,
                "type": typ,
                "notnull": notnull,
                "default": norm_expr(dflt),
                "identity": ident == "d",
                "always": ident == "a",
            }
        )
    idx = pg.json(
        """SELECT json_agg(json_build_array(t.relname, i.relname, x.indisunique, x.indisprimary,
                                  pg_get_expr(x.indpred, x.indrelid),
                                  (SELECT json_agg(pg_get_indexdef(x.indexrelid, k, true) ORDER BY k)
                                   FROM generate_series(1, x.indnkeyatts) k),
                                  EXISTS (SELECT 1 FROM pg_constraint con
                                          WHERE con.conindid = x.indexrelid AND con.contype IN ('p', 'u'))))
           FROM pg_index x
           JOIN pg_class i ON i.oid = x.indexrelid
           JOIN pg_class t ON t.oid = x.indrelid
           JOIN pg_namespace n ON n.oid = t.relnamespace
           WHERE n.nspname = 'public'"""
    )
    for t, iname, unique, primary, pred, keys, constraint in idx:
        keys = tuple(k.lower().replace(" ", "") for k in keys)
        if primary:
            s["tables"][t]["pk"] = list(keys)
        if constraint or (unique and iname.endswith("_nocase")):
            # a key of the table: compared as unique keys, not by name
            s["unique"].add((t, keys, primary))
        else:
            s["indexes"][iname] = {
                "table": t,
                "keys": keys,
                "unique": unique,
                "where": norm_expr(pred),
            }
    fks = pg.json(
        """SELECT json_agg(json_build_array(
                     cl.relname, (SELECT json_agg(a.attname ORDER BY k.ord)
                                  FROM unnest(c.conkey) WITH ORDINALITY k(att, ord)
                                  JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.att),
                     rf.relname, (SELECT json_agg(a.attname ORDER BY k.ord)
                                  FROM unnest(c.confkey) WITH ORDINALITY k(att, ord)
                                  JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.att),
                     c.confdeltype, c.confupdtype))
           FROM pg_constraint c
           JOIN pg_class cl ON cl.oid = c.conrelid
           JOIN pg_class rf ON rf.oid = c.confrelid
           JOIN pg_namespace n ON n.oid = c.connamespace
           WHERE c.contype = 'f' AND n.nspname = 'public'"""
    )
    for t, frm, ref, to, on_delete, on_update in fks:
        s["fks"].add((t, tuple(frm), ref, tuple(to), FK_ACTION[on_delete], FK_ACTION[on_update]))
    trig = pg.json(
        """SELECT json_agg(json_build_array(c.relname, tg.tgname))
           FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE NOT tg.tgisinternal AND n.nspname = 'public'"""
    )
    for t, name in trig:
        s["triggers"].add((t, name))
    checks = pg.json(
        """SELECT json_agg(json_build_array(cl.relname, pg_get_constraintdef(c.oid)))
           FROM pg_constraint c JOIN pg_class cl ON cl.oid = c.conrelid
           JOIN pg_namespace n ON n.oid = c.connamespace
           WHERE c.contype = 'c' AND n.nspname = 'public'"""
    )
    for t in s["tables"].values():
        t["checks"] = []
    for t, definition in checks:
        s["tables"][t]["checks"].append(pg_check(definition))
    for t in s["tables"].values():
        t["checks"].sort()
    return s


def compare_structure(lite, pg):
    lt, pt = set(lite["tables"]), set(pg["tables"])
    for t in sorted(lt - pt):
        problem(f"table {t} missing in PostgreSQL")
    for t in sorted(pt - lt):
        problem(f"table {t} only in PostgreSQL")
    for t in sorted(lt & pt):
        lcols = lite["tables"][t]["columns"]
        pcols = pg["tables"][t]["columns"]
        lnames = [c["name"] for c in lcols]
        pnames = [c["name"] for c in pcols]
        extra = EXTRA_COLUMNS.get(t, [])
        if pnames != lnames + extra:
            problem(f"{t}: columns differ\n  sqlite:   {lnames + extra}\n  postgres: {pnames}")
            continue
        for lc, pc in zip(lcols, pcols):
            where = f"{t}.{lc['name']}"
            if lc["type"] != pc["type"]:
                problem(f"{where}: type {pc['type']} in PostgreSQL, expected {lc['type']}")
            if lc["notnull"] != pc["notnull"]:
                problem(f"{where}: NOT NULL {pc['notnull']} in PostgreSQL, {lc['notnull']} in SQLite")
            if lc["default"] != pc["default"]:
                problem(f"{where}: default {pc['default']!r} in PostgreSQL, {lc['default']!r} in SQLite")
            if lc["identity"] != pc["identity"] or pc["always"]:
                problem(
                    f"{where}: identity (BY DEFAULT) {pc['identity']} in PostgreSQL, "
                    f"rowid alias {lc['identity']} in SQLite"
                )
        for name in extra:
            pc = next(c for c in pcols if c["name"] == name)
            if not pc["identity"]:
                problem(f"{t}.{name}: the extra column must be GENERATED BY DEFAULT AS IDENTITY")
        if lite["tables"][t]["checks"] != pg["tables"][t]["checks"]:
            problem(
                f"{t}: CHECK constraints differ\n  sqlite:   {lite['tables'][t]['checks']}\n"
                f"  postgres: {pg['tables'][t]['checks']}"
            )
        if lite["tables"][t]["pk"] != pg["tables"][t]["pk"]:
            problem(
                f"{t}: primary key {pg['tables'][t]['pk']} in PostgreSQL, "
                f"{lite['tables'][t]['pk']} in SQLite"
            )
    # unique keys
    lu = lite["unique"]
    pu = {(t, k) for t, k, _ in pg["unique"]}
    for t, k in sorted(lu - pu):
        problem(f"{t}: unique key {k} missing in PostgreSQL")
    for t, k, primary in sorted(pg["unique"]):
        if (t, k) in lu:
            continue
        lowered = tuple(f"lower({c})" if c in lite["tables"].get(t, {}).get("nocase", ()) else c for c in k)
        if primary and (t, lowered) in lu:
            continue  # the primary key beside its case-insensitive twin
        problem(f"{t}: unique key {k} only in PostgreSQL")
    # named indexes
    li, pi = lite["indexes"], pg["indexes"]
    for name in sorted(set(li) - set(pi)):
        problem(f"index {name} missing in PostgreSQL")
    for name in sorted(set(pi) - set(li)):
        problem(f"index {name} only in PostgreSQL")
    for name in sorted(set(li) & set(pi)):
        if li[name] != pi[name]:
            problem(f"index {name} differs\n  sqlite:   {li[name]}\n  postgres: {pi[name]}")
    for fk in sorted(lite["fks"] - pg["fks"]):
        problem(f"foreign key {fk} missing in PostgreSQL")
    for fk in sorted(pg["fks"] - lite["fks"]):
        problem(f"foreign key {fk} only in PostgreSQL")
    for tr in sorted(lite["triggers"] - pg["triggers"]):
        problem(f"trigger {tr} missing in PostgreSQL")
    for tr in sorted(pg["triggers"] - lite["triggers"]):
        problem(f"trigger {tr} only in PostgreSQL")


# --------------------------------------------------------------- scenario

RAW = b"From: v@v.test\r\nSubject: hi\r\n\r\nbody\r\n"
SHA = bytes(range(32))

MSG_COLS = (
    "side_conversation_id, direction, kind, route, raw, raw_sha256, message_id, "
    "from_email, subject, author_id, received_at"
)


def msg(sc, direction, kind, route, n, author=None, inbound=None):
    """One message insert; its id is n in both databases."""
    cols = MSG_COLS + (", inbound_id" if inbound else "")
    params = [sc, direction, kind, route, RAW + bytes([n]), SHA, f"<m{n}@v.test>",
              "Vendor@V.test" if direction == "in" else None, f"message {n}", author, 2000 + n]
    if inbound:
        params.append(inbound)
    marks = ", ".join("?" * len(params))
    return (f"INSERT INTO messages ({cols}) VALUES ({marks})", params)

UNREAD = "SELECT user_id, side_conversation_id, message_id FROM console_unread WHERE side_conversation_id = "
LAST = "SELECT id, last_in_id, last_out_id FROM side_conversations WHERE id = "


def expect(query, rows):
    """A checkpoint: the query's rows, the same in both databases."""
    if query.startswith(UNREAD):
        query += " ORDER BY user_id"
    return ("EXPECT", query, rows)


# Steps run in order on both databases: (sql, params). Ids are never given:
# each database picks them, and they must come out the same.
SCENARIO = [
    ("INSERT INTO users (email, name, role, token_hash, created_at) VALUES (?, ?, ?, ?, ?)",
     ["alice@x.test", "Alice", "owner", b"\x01", 1000]),
    ("INSERT INTO users (email, name, role, token_hash, created_at) VALUES (?, ?, ?, ?, ?)",
     ["Bob@X.test", "Bob", "admin", b"\x02", 1001]),
    ("INSERT INTO users (email, name, role, token_hash, created_at, password_hash) VALUES (?, ?, ?, ?, ?, ?)",
     ["carol@x.test", "Carol", "member", b"\x03", 1002, "$argon2id$x"]),
    # Carol is inactive: no unread rows for her
    ("UPDATE users SET active = 0, deactivated_at = 1500, credential_epoch = credential_epoch + 1 WHERE id = 3", []),
    ("UPDATE counters SET value = value + 1 WHERE name = 'credentials'", []),
    ("INSERT INTO mailboxes (name, kind, owner_user_id, uidvalidity) VALUES ('Sent:1', 'sent', 1, 111)", []),
    ("INSERT INTO parents (external_id, subject, requester_email, assignee_id, created_at, updated_at) "
     "VALUES ('T-1', 'Ticket one', 'Req@Example.test', 1, 1000, 1000)", []),
    ("INSERT INTO parents (external_id, created_at, updated_at) VALUES ('T-2', 1000, 1000)", []),
    ("INSERT INTO mailboxes (name, kind, parent_id, uidvalidity) VALUES ('T-1', 'ticket', 1, 222)", []),
    ("INSERT INTO side_conversations (parent_id, token, subject, sender_email, started_by, thread_index, "
     "created_at, updated_at) VALUES (1, 'aaaaaaaaaaaaaaaa', 'Side one', 'Support@Acme.test', 1, ?, 1000, 1000)",
     [b"\x01\xd0" + bytes(20)]),
    ("INSERT INTO side_conversations (parent_id, token, portal_token, subject, sender_email, created_at, "
     "updated_at) VALUES (1, 'bbbbbbbbbbbbbbbb', 'ptok2', 'Side two', 'support@acme.test', 1001, 1001)", []),
    ("INSERT INTO side_conversations (parent_id, token, subject, sender_email, created_at, updated_at) "
     "VALUES (2, 'cccccccccccccccc', 'Side three', 'support@acme.test', 1002, 1002)", []),
    ("INSERT INTO participants (side_conversation_id, email, name, role, added_at) "
     "VALUES (1, 'vendor@v.test', 'Vendor', 'to', 1000)", []),
    ("INSERT INTO participants (side_conversation_id, email, name, role, added_at) "
     "VALUES (1, 'other@v.test', NULL, 'cc', 1000)", []),
    ("INSERT INTO participants (side_conversation_id, email, name, role, added_at) "
     "VALUES (1, 'early@v.test', 'Early', 'joined', 999)", []),
    # the same address in other case: ignored (case-insensitive key)
    ("INSERT INTO participants (side_conversation_id, email, name, role, added_at) "
     "VALUES (1, 'VENDOR@v.test', 'Shouting', 'joined', 1000) ON CONFLICT DO NOTHING", []),
    ("INSERT INTO participants (side_conversation_id, email, name, role, added_at) "
     "VALUES (1, 'admitted@v.test', NULL, 'admitted', 1000)", []),
    ("INSERT INTO participants (side_conversation_id, email, name, role, added_at) "
     "VALUES (3, 'vendor@v.test', NULL, 'to', 1002)", []),
    ("INSERT INTO contacts (email, name, created_at) VALUES ('vendor@v.test', 'Vendor', 1000)", []),
    ("INSERT INTO contacts (email, name, created_at) VALUES ('Vendor@V.TEST', 'Dup', 1000) ON CONFLICT DO NOTHING", []),
    ("INSERT INTO senders (email, forwarding_local, verification_code_hash, verification_nonce, created_at) "
     "VALUES ('support@acme.test', 'fwd7h3k2', ?, 'nonce1', 1000)", [b"\xaa" * 32]),
    ("UPDATE senders SET status = 'verified', verified_at = 1100, verification_attempts = 1 WHERE id = 1", []),
    ("INSERT INTO dkim_keys (domain, selector, algorithm, private_key, public_key, created_at) "
     "VALUES ('acme.test', 'backchannel', 'ed25519', ?, 'MCow', 1000)", [b"\x30\x2e" + bytes(46)]),
    ("INSERT INTO settings (key, value) VALUES ('signature', '\"--\\nAcme\"')", []),
    ("INSERT INTO inbound_queue (received_at, peer_ip, helo, mail_from, rcpts, size, sha256, raw) "
     "VALUES (1999, '127.0.0.1', 'mx.v.test', 'v@v.test', '[\"t@gw\"]', 40, ?, ?)", [SHA, b""]),
    ("INSERT INTO inbound_raw (id, raw) VALUES (1, ?)", [RAW]),
    # messages 1..9
    msg(1, "in", "reply", "token", 1, inbound=1),          # sc1 last_in 1; unread alice, bob
    msg(1, "out", "agent", "api", 2, author=1),            # sc1 last_out 2
    msg(1, "out", "agent", "portal", 3),                   # relayed portal reply: last_out stays 2
    msg(1, "in", "auto_reply", "token", 4),                # no effect
    msg(1, "in", "reply", "references", 5),                # sc1 last_in 5; unread -> 5 (upsert)
    msg(None, "in", "reply", "unrouted", 6),               # no thread: trigger not fired
    msg(2, "in", "bounce", "bounce", 7),                   # no effect
    msg(None, "out", "agent", "api", 8, author=2),         # no thread
    msg(3, "in", "reply", "token", 9),                     # sc3 last_in 9; unread alice, bob
    expect(UNREAD + "3", [[1, 3, 9], [2, 3, 9]]),
    expect(LAST + "1", [[1, 5, 2]]),
    ("UPDATE inbound_queue SET state = 'done', processed_at = 2001, message_id = 1 WHERE id = 1", []),
    # assignment from the unrouted list: sc2 last_in 6, unread alice, bob
    ("UPDATE messages SET side_conversation_id = 2 WHERE id = 6", []),
    # alice opens sc2; re-setting the same thread must not bring the row back
    ("DELETE FROM console_unread WHERE user_id = 1 AND side_conversation_id = 2", []),
    ("UPDATE messages SET side_conversation_id = 2 WHERE id = 6", []),
    expect(UNREAD + "2", [[2, 2, 6]]),
    # an outbound agent message assigned: the assign trigger leaves last_out_id
    ("UPDATE messages SET side_conversation_id = 2 WHERE id = 8", []),
    # other columns: no trigger
    ("UPDATE messages SET subject = 'changed', visible_reply = 'hi' WHERE id = 1", []),
    ("UPDATE messages SET side_conversation_id = 2 WHERE id = 4", []),
    # an older reply moved: last_in_id keeps the max, alice's row comes back
    # with 5, bob's stays 6
    ("UPDATE messages SET side_conversation_id = 2 WHERE id = 5", []),
    expect(UNREAD + "2", [[1, 2, 5], [2, 2, 6]]),
    expect(LAST + "2", [[2, 6, None]]),
    # several rows in one statement: 10 and 11 on sc1
    ("INSERT INTO messages (side_conversation_id, direction, kind, route, raw, raw_sha256, received_at) "
     "VALUES (1, 'in', 'reply', 'token', ?, ?, 2010), (1, 'in', 'reply', 'token', ?, ?, 2011)",
     [RAW + b"10", SHA, RAW + b"11", SHA]),
    ("UPDATE users SET active = 0, deactivated_at = 2011 WHERE id = 2", []),
    msg(2, "in", "reply", "token", 12),                    # only alice's row moves
    expect(UNREAD + "2", [[1, 2, 12], [2, 2, 6]]),
    msg(2, "out", "agent", "api", 13, author=1),           # sc2 last_out 13
    msg(2, "out", "agent", "portal", 14),                  # no change
    msg(None, "out", "notification", "api", 15),
    msg(None, "in", "agent_reply", "token", 16, author=1),
    msg(2, "in", "reply", "portal", 17),                   # counts as a reply; bob (inactive) keeps 6
    expect(LAST + "2", [[2, 17, 13]]),
    expect(LAST + "1", [[1, 11, 2]]),
    expect(UNREAD + "1", [[1, 1, 11], [2, 1, 11]]),
    ("UPDATE messages SET side_conversation_id = NULL WHERE id = 7", []),
    ("UPDATE users SET active = 1, deactivated_at = NULL WHERE id = 2", []),
    # a message stored by several paths at once: multi-row assignment
    ("UPDATE messages SET side_conversation_id = 1 WHERE id IN (15, 16)", []),
    ("INSERT INTO message_refs (ref, message_id) VALUES ('<m2@v.test>', 5), ('<m1@v.test>', 5)", []),
    ("INSERT INTO attachments (message_id, idx, filename, content_type, size, content_id, data) "
     "VALUES (1, 0, 'a.pdf', 'application/pdf', 3, NULL, ?)", [b"%PD"]),
    ("INSERT INTO outbox (message_id, recipient, verp_key, next_attempt_at, created_at) "
     "VALUES (2, 'vendor@v.test', 'verp1', 2002, 2002)", []),
    ("INSERT INTO outbox (message_id, recipient, verp_key, next_attempt_at, created_at) "
     "VALUES (2, 'other@v.test', 'verp2', 2002, 2002)", []),
    ("INSERT INTO outbox (message_id, recipient, verp_key, next_attempt_at, created_at) "
     "VALUES (2, 'OTHER@v.test', 'verp3', 2002, 2002) ON CONFLICT DO NOTHING", []),
    ("UPDATE outbox SET state = 'sent', attempts = 1, last_attempt_at = 2003, sent_at = 2003 WHERE id = 1", []),
    ("INSERT INTO outbox_copies (outbox_id, raw) VALUES (2, ?)", [RAW + b"copy"]),
    ("INSERT INTO activity (parent_id, side_conversation_id, actor_id, text, created_at) "
     "VALUES (1, 1, 1, 'started', 1000), (1, 3, NULL, 'vendor replied', 2009)", []),
    ("INSERT INTO webhooks (url, secret, events, created_at) VALUES ('http://127.0.0.1:9/h', 's', '[]', 1000)", []),
    ("INSERT INTO webhook_deliveries (webhook_id, event, payload, next_attempt_at, created_at) "
     "VALUES (1, 'message.received', '{}', 2001, 2001)", []),
    ("UPDATE webhook_deliveries SET state = 'delivered', last_status = 200, delivered_at = 2002", []),
    ("INSERT INTO templates (name, subject, created_by, created_at) VALUES ('Ask', 'Question', 1, 1000)", []),
    ("INSERT INTO templates (name, created_at, tags) VALUES ('Tagged', 1000, '[\"urgent\"]')", []),
    ("INSERT INTO notification_queue (user_id, message_id, due_at) VALUES (1, 1, 2001), (2, 1, 2001)", []),
    ("INSERT INTO notification_queue (user_id, message_id, due_at, reminder) VALUES (1, 2, 5000, 'no reply')", []),
    ("UPDATE notification_queue SET sent_message_id = 15 WHERE id = 1", []),
    ("INSERT INTO mailbox_messages (mailbox_id, uid, message_id, modseq) "
     "VALUES (1, 1, 1, 1), (4, 1, 1, 1), (3, 1, 2, 2), (2, 1, 6, 3)", []),
    ("INSERT INTO mailbox_removed (mailbox_id, uid, message_id, modseq) VALUES (2, 1, 6, 4)", []),
    ("DELETE FROM mailbox_messages WHERE mailbox_id = 2 AND uid = 1", []),
    ("UPDATE mailboxes SET uidnext = 2, highest_modseq = 4 WHERE id IN (1, 3, 4)", []),
    ("UPDATE counters SET value = 4 WHERE name = 'modseq'", []),
    ("INSERT INTO message_flags (user_id, message_id, seen, modseq) VALUES (1, 1, 1, 4)", []),
    ("INSERT INTO unverified_messages (message_id) VALUES (4)", []),
    ("INSERT INTO portal_links (token, side_conversation_id, email, created_at) "
     "VALUES ('pl1', 1, 'Vendor@v.test', 1000), ('pl2', 1, 'other@v.test', 1000)", []),
    ("UPDATE portal_links SET revoked_at = 3000 WHERE token = 'pl2'", []),
    ("UPDATE side_conversations SET portal_per_recipient = 1, inbound_messages = 3, inbound_bytes = 120, "
     "remind_after = 86400000, nudge_vendor = 1, reminded_out_id = 2, next_seq = 3 WHERE id = 1", []),
    ("UPDATE side_conversations SET status = 'closed', closed_at = 4000 WHERE id = 2", []),
    ("INSERT INTO audit (at, actor_id, actor, action, target) VALUES (1000, 1, 'alice@x.test', 'user.add', 'bob')", []),
    ("INSERT INTO audit (at, actor, action, target, detail) VALUES (1001, 'cli', 'user.add', 'carol', '{\"x\":1}')", []),
    ("INSERT INTO agent_submissions (user_id, client_message_id, side_conversation_id, message_id, at) "
     "VALUES (1, '<c1@client>', 1, 2, 2002)", []),
    ("INSERT INTO agent_replies (message_id, user_id, side_conversation_id, sent_message_id, reason) "
     "VALUES (16, 1, 1, 2, NULL)", []),
    ("INSERT INTO console_sessions (id_hash, user_id, csrf, created_at, last_seen_at, method) "
     "VALUES (?, 1, 'csrf1', 1000, 1001, 'password')", [b"\x55" * 32]),
    ("INSERT INTO login_links (token_hash, user_id, created_at, expires_at) VALUES (?, 2, 1000, 1900)", [b"\x66" * 32]),
    ("UPDATE login_links SET used_at = 1100", []),
    ("INSERT INTO side_conversation_tags (side_conversation_id, tag) VALUES (1, 'Urgent'), (1, 'billing'), (3, 'x')", []),
    ("INSERT INTO side_conversation_tags (side_conversation_id, tag) VALUES (1, 'URGENT') ON CONFLICT DO NOTHING", []),
    # deleting a thread: cascades and SET NULL (which fires no trigger effect)
    ("DELETE FROM side_conversations WHERE id = 3", []),
    # deleting the inactive user: cascades and SET NULL
    ("DELETE FROM users WHERE id = 3", []),
    ("DELETE FROM message_refs WHERE ref = '<m2@v.test>'", []),
    expect("SELECT user_id, side_conversation_id, message_id FROM console_unread "
           "ORDER BY user_id, side_conversation_id", [[1, 1, 11], [1, 2, 17], [2, 1, 11], [2, 2, 6]]),
    expect("SELECT id, side_conversation_id FROM messages WHERE id IN (7, 9) ORDER BY id", [[7, None], [9, None]]),
]

# One statement each, run in a transaction that is rolled back: both
# databases must accept it, or both refuse it.
PROBES = [
    ("case-insensitive users.email", "INSERT INTO users (email, name, role, token_hash, created_at) "
     "VALUES ('ALICE@X.TEST', 'A', 'member', :blob, 1)", "refuse"),
    ("users.token_hash unique", "INSERT INTO users (email, name, role, token_hash, created_at) "
     "VALUES ('new@x.test', 'A', 'member', :blob, 1)", "refuse", b"\x01"),
    ("users new", "INSERT INTO users (email, name, role, token_hash, created_at) "
     "VALUES ('new@x.test', 'A', 'member', :blob, 1)", "accept"),
    ("users.role CHECK", "INSERT INTO users (email, name, role, token_hash, created_at) "
     "VALUES ('n2@x.test', 'A', 'boss', :blob, 1)", "refuse"),
    ("users.active CHECK", "UPDATE users SET active = 2 WHERE id = 1", "refuse"),
    ("case-insensitive senders.email", "INSERT INTO senders (email, forwarding_local, created_at) "
     "VALUES ('SUPPORT@acme.test', 'fwdother', 1)", "refuse"),
    ("case-insensitive senders.forwarding_local", "INSERT INTO senders (email, forwarding_local, created_at) "
     "VALUES ('s2@acme.test', 'FWD7H3K2', 1)", "refuse"),
    ("case-insensitive dkim_keys.domain", "INSERT INTO dkim_keys (domain, selector, algorithm, private_key, "
     "public_key, created_at) VALUES ('ACME.test', 's', 'rsa', :blob, 'p', 1)", "refuse"),
    ("case-insensitive side_conversations.token", "INSERT INTO side_conversations (parent_id, token, subject, "
     "sender_email, created_at, updated_at) VALUES (1, 'AAAAAAAAAAAAAAAA', 's', 'e', 1, 1)", "refuse"),
    ("case-insensitive participants key", "INSERT INTO participants (side_conversation_id, email, role, added_at) "
     "VALUES (1, 'Other@V.Test', 'to', 1)", "refuse"),
    ("participants.role CHECK", "INSERT INTO participants (side_conversation_id, email, role, added_at) "
     "VALUES (1, 'z@v.test', 'boss', 1)", "refuse"),
    ("case-insensitive contacts.email", "INSERT INTO contacts (email, created_at) VALUES ('VENDOR@v.test', 1)",
     "refuse"),
    ("case-insensitive outbox (message, recipient)", "INSERT INTO outbox (message_id, recipient, verp_key, "
     "next_attempt_at, created_at) VALUES (2, 'VENDOR@V.TEST', 'verp9', 1, 1)", "refuse"),
    ("case-insensitive portal_links (thread, email)", "INSERT INTO portal_links (token, side_conversation_id, "
     "email, created_at) VALUES ('pl9', 1, 'vendor@V.test', 1)", "refuse"),
    ("case-insensitive tags", "INSERT INTO side_conversation_tags (side_conversation_id, tag) VALUES (1, 'BILLING')",
     "refuse"),
    ("messages.kind agent_reply_unverified", "INSERT INTO messages (direction, kind, route, raw, raw_sha256, "
     "received_at) VALUES ('in', 'agent_reply_unverified', 'token', :blob, :blob, 1)", "accept"),
    ("messages.kind CHECK", "INSERT INTO messages (direction, kind, route, raw, raw_sha256, received_at) "
     "VALUES ('in', 'spam', 'token', :blob, :blob, 1)", "refuse"),
    ("messages.route CHECK", "INSERT INTO messages (direction, kind, route, raw, raw_sha256, received_at) "
     "VALUES ('in', 'reply', 'pigeon', :blob, :blob, 1)", "refuse"),
    ("messages.raw NOT NULL", "INSERT INTO messages (direction, kind, route, raw, raw_sha256, received_at) "
     "VALUES ('in', 'reply', 'token', NULL, :blob, 1)", "refuse"),
    ("messages foreign key", "INSERT INTO messages (side_conversation_id, direction, kind, route, raw, "
     "raw_sha256, received_at) VALUES (999, 'in', 'reply', 'token', :blob, :blob, 1)", "refuse"),
    ("messages.inbound_id unique", "INSERT INTO messages (direction, kind, route, inbound_id, raw, raw_sha256, "
     "received_at) VALUES ('in', 'reply', 'token', 1, :blob, :blob, 1)", "refuse"),
    ("mailboxes sent needs an owner", "INSERT INTO mailboxes (name, kind, uidvalidity) VALUES ('S', 'sent', 1)",
     "refuse"),
    ("mailboxes ticket has no owner", "INSERT INTO mailboxes (name, kind, owner_user_id, uidvalidity) "
     "VALUES ('S', 'ticket', 2, 1)", "refuse"),
    ("mailboxes one Sent per user", "INSERT INTO mailboxes (name, kind, owner_user_id, uidvalidity) "
     "VALUES ('Sent:again', 'sent', 1, 1)", "refuse"),
    ("inbound_queue.state CHECK", "UPDATE inbound_queue SET state = 'lost'", "refuse"),
    ("outbox.state CHECK", "UPDATE outbox SET state = 'lost'", "refuse"),
    ("webhook_deliveries.state CHECK", "UPDATE webhook_deliveries SET state = 'lost'", "refuse"),
    ("parents.status CHECK", "UPDATE parents SET status = 'lost'", "refuse"),
    ("side_conversations.status CHECK", "UPDATE side_conversations SET status = 'lost'", "refuse"),
    ("senders.reply_mode CHECK", "UPDATE senders SET reply_mode = 'lost'", "refuse"),
    ("deleting an inbound_queue row a message cites (NO ACTION)",
     "DELETE FROM inbound_queue WHERE id = 1", "refuse"),
    ("deleting a parent cascades", "DELETE FROM parents WHERE id = 1", "accept"),
]


def probe_params(sql, extra):
    """Probes write `:blob` for a blob parameter."""
    n = sql.count(":blob")
    value = extra[0] if extra else secrets.token_bytes(8)
    return sql.replace(":blob", "?"), [value] * n


def sqlite_rows(db, table, columns):
    rows = []
    cols = ", ".join(f'"{c}"' for c in columns)
    for row in db.execute(f'SELECT {cols} FROM "{table}"'):
        rows.append([("\\x" + v.hex()) if isinstance(v, bytes) else v for v in row])
    return rows


def pg_rows(pg, table, columns):
    cols = ", ".join(f'"{c}"' for c in columns)
    data = pg.json(f'SELECT json_agg(json_build_array({cols})) FROM "{table}"')
    return [list(r) for r in data]


def sort_key(row):
    return [(v is None, str(type(v)), v if v is not None else 0) for v in row]


def compare_rows(db, pg, lite):
    now = time.time()
    for t in sorted(lite["tables"]):
        columns = [c["name"] for c in lite["tables"][t]["columns"]]
        pk = lite["tables"][t]["pk"]
        key_idx = [columns.index(c) for c in pk] or list(range(len(columns)))
        lrows = sqlite_rows(db, t, columns)
        prows = pg_rows(pg, t, columns)
        for rows in (lrows, prows):
            if t == "mailboxes":
                # seeded with the current time in seconds by each database
                i = columns.index("uidvalidity")
                for r in rows:
                    if isinstance(r[i], int) and abs(r[i] - now) < 3600:
                        r[i] = "<now>"
            rows.sort(key=lambda r: sort_key([r[i] for i in key_idx]))
        if lrows != prows:
            problem(f"rows of {t} differ")
            for r in lrows:
                if r not in prows:
                    print(f"    only in sqlite:   {r}")
            for r in prows:
                if r not in lrows:
                    print(f"    only in postgres: {r}")
            if sorted(map(repr, lrows)) == sorted(map(repr, prows)):
                print("    (same rows, different order)")
        else:
            print(f"ok  {t}: {len(lrows)} rows agree")
    # the participants' order, as src/store/participants.rs lists them
    order = "SELECT side_conversation_id, email FROM participants ORDER BY side_conversation_id, added_at, rowid"
    lo = [list(r) for r in db.execute(order)]
    po = [list(r) for r in pg.json(
        "SELECT json_agg(json_build_array(side_conversation_id, email) "
        "ORDER BY side_conversation_id, added_at, rowid) FROM participants")]
    if lo != po:
        problem(f"participants' order differs\n  sqlite:   {lo}\n  postgres: {po}")
    else:
        print(f"ok  participants ordered by (added_at, rowid) agree: {[e for _, e in lo]}")


def run_probes(db, pg):
    """Refusal means a constraint refused: SQLite's IntegrityError, SQLSTATE
    class 23 in PostgreSQL. Any other error is a broken probe."""
    for name, sql, expect, *extra in PROBES:
        sql_q, params = probe_params(sql, extra)
        db.execute("SAVEPOINT probe")
        try:
            db.execute(sql_q, params)
            lite = "accept"
        except sqlite3.IntegrityError:
            lite = "refuse"
        except sqlite3.DatabaseError as e:
            lite = f"error ({e})"
        db.execute("ROLLBACK TO probe")
        db.execute("RELEASE probe")
        proc = pg.run(f"\\set VERBOSITY verbose\nBEGIN;\n{render(sql_q, params)};\nROLLBACK;\n", check=False)
        err = proc.stderr.strip()
        if proc.returncode == 0:
            pgr = "accept"
        elif re.search(r"ERROR:\s+23[0-9A-Z]{3}:", err):
            pgr = "refuse"
        else:
            pgr = f"error ({err.splitlines()[0] if err else proc.returncode})"
        if lite != pgr or lite != expect:
            problem(f"probe '{name}': sqlite {lite}, postgres {pgr}, expected {expect}")
        else:
            print(f"ok  probe {name}: both {lite}")


def check_lastval(pg):
    """A trigger must not move lastval(): the store reads it after inserts."""
    proc = pg.run(
        "BEGIN;\n"
        + render("INSERT INTO messages (side_conversation_id, direction, kind, route, raw, raw_sha256, "
                 "received_at) VALUES (1, 'in', 'reply', 'token', ?, ?, 9000)", [RAW, SHA])
        + ";\nSELECT lastval() = (SELECT max(id) FROM messages), "
        "(SELECT count(*) FROM console_unread WHERE message_id = lastval());\nROLLBACK;\n"
    )
    out = proc.stdout.strip()
    if out != "t|2":
        problem(f"after inserting a reply, lastval() is not the message's id (or no unread rows): {out!r}")
    else:
        print("ok  lastval() after a message insert is the message id (triggers use no sequence)")


# --------------------------------------------------------------- main


def run_scenario(db, pg):
    """SCENARIO on both; PostgreSQL gets it in batches between checkpoints."""
    batch = []

    def flush():
        if batch:
            proc = pg.run("BEGIN;\n" + "\n".join(batch) + "\nCOMMIT;\n", check=False)
            batch.clear()
            if proc.returncode != 0:
                print(f"scenario fails in PostgreSQL: {proc.stderr.strip()}", file=sys.stderr)
                return False
        return True

    for step in SCENARIO:
        if step[0] == "EXPECT":
            _, query, rows = step
            if not flush():
                return False
            lrows = [list(r) for r in db.execute(query)]
            prows = [list(r) for r in pg.json(
                "SELECT json_agg((SELECT json_agg(e.value) FROM json_each(row_to_json(q)) e)) "
                f"FROM ({query}) q"
            )]
            if lrows != rows or prows != rows:
                problem(f"checkpoint {query}\n  expected: {rows}\n  sqlite:   {lrows}\n  postgres: {prows}")
            else:
                print(f"ok  checkpoint {query} -> {rows}")
            continue
        sql, params = step
        try:
            db.execute(sql, params)
        except sqlite3.DatabaseError as e:
            print(f"scenario step fails in SQLite: {e}\n  {sql}", file=sys.stderr)
            return False
        batch.append(render(sql, params) + ";")
    return flush()



def main():
    if len(sys.argv) != 2 or not sys.argv[1].startswith(("postgres://", "postgresql://")):
        print(f"usage: {sys.argv[0]} postgres://USER@HOST:PORT/DB", file=sys.stderr)
        return 2
    admin = Pg(sys.argv[1])
    lite_migrations = migrations(SQLITE_SCHEMA.read_text())
    pg_migrations = migrations(PG_SCHEMA.read_text())
    lite_numbers = [n for n, _ in lite_migrations]
    pg_numbers = [n for n, _ in pg_migrations]
    if lite_numbers != list(range(1, len(lite_numbers) + 1)):
        problem(f"schema.sql migrations are not 1..N in order: {lite_numbers}")
    expected_pg = [13] + [n for n in lite_numbers if n > 13]
    if pg_numbers != expected_pg:
        problem(f"schema_pg.sql migrations {pg_numbers}, expected {expected_pg}")

    db = sqlite3.connect(":memory:", isolation_level=None)
    db.execute("PRAGMA foreign_keys = ON")
    for n, sql in lite_migrations:
        try:
            db.executescript("BEGIN;\n" + sql + "\nCOMMIT;")
        except sqlite3.DatabaseError as e:
            print(f"schema.sql migration {n} fails in SQLite: {e}", file=sys.stderr)
            return 1

    scratch = f"schema_parity_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        admin.run(f'CREATE DATABASE "{scratch}";')
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        print(f"cannot create a scratch database: {e}", file=sys.stderr)
        return 1
    try:
        pg = Pg(with_database(sys.argv[1], scratch))
        for n, sql in pg_migrations:
            proc = pg.run(sql, single_tx=True, check=False)
            if proc.returncode != 0:
                print(f"schema_pg.sql migration {n} fails: {proc.stderr.strip()}", file=sys.stderr)
                return 1
        print(f"applied schema.sql {lite_numbers[0]}..{lite_numbers[-1]} to SQLite "
              f"{sqlite3.sqlite_version}, schema_pg.sql {pg_numbers} to {scratch}")

        lite = sqlite_structure(db)
        compare_structure(lite, pg_structure(pg))
        print(f"structure compared: {len(lite['tables'])} tables, "
          f"{sum(len(t['checks']) for t in lite['tables'].values())} CHECKs, {len(lite['indexes'])} named indexes, "
              f"{len(lite['unique'])} unique keys, {len(lite['fks'])} foreign keys, "
              f"{len(lite['triggers'])} triggers")
        print("COLLATE NOCASE columns in SQLite: " + ", ".join(lite["nocase"]))

        if not run_scenario(db, pg):
            return 1
        compare_rows(db, pg, lite)
        check_lastval(pg)
        run_probes(db, pg)
    finally:
        proc = admin.run(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE);', check=False)
        if proc.returncode != 0:
            print(f"could not drop {scratch}: {proc.stderr.strip()}", file=sys.stderr)

    if problems:
        print(f"\nFAIL: {len(problems)} difference(s) between schema.sql and schema_pg.sql")
        return 1
    print("\nOK: schema.sql and schema_pg.sql agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
