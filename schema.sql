-- backchannel schema: the single source of truth for the database.
--
-- The file is a sequence of numbered migrations. Each starts with a line
-- `-- migration: N` and runs once, inside one transaction, when the store
-- opens a database whose `PRAGMA user_version` is below N. A migration is
-- never edited once released; later changes append a new migration.
--
-- Conventions: times are integer milliseconds since the Unix epoch (UTC);
-- JSON columns hold compact JSON text; e-mail addresses are compared
-- case-insensitively (COLLATE NOCASE) because mail systems do so in practice.

-- migration: 1

-- People who use the gateway: agents and admins. The API token is stored only
-- as its SHA-256 hash.
CREATE TABLE users (
    id              INTEGER PRIMARY KEY,
    email           TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    name            TEXT    NOT NULL,
    role            TEXT    NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    token_hash      BLOB    NOT NULL UNIQUE,
    notifications   TEXT    NOT NULL DEFAULT 'email' CHECK (notifications IN ('email', 'off')),
    created_at      INTEGER NOT NULL
);

-- Tickets of the helpdesk that side conversations hang off.
CREATE TABLE parents (
    id              INTEGER PRIMARY KEY,
    external_id     TEXT    NOT NULL UNIQUE,
    subject         TEXT    NOT NULL DEFAULT '',
    requester_name  TEXT,
    requester_email TEXT COLLATE NOCASE,
    status          TEXT    NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'snoozed', 'closed')),
    snoozed_until   INTEGER,
    assignee_id     INTEGER REFERENCES users(id) ON DELETE SET NULL,
    last_sender     TEXT COLLATE NOCASE,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

-- Custom sender addresses (SPEC §6).
CREATE TABLE senders (
    id                      INTEGER PRIMARY KEY,
    email                   TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    name                    TEXT    NOT NULL DEFAULT '',
    reply_mode              TEXT    NOT NULL DEFAULT 'gateway' CHECK (reply_mode IN ('gateway', 'plus', 'none')),
    status                  TEXT    NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'verified')),
    -- local part of the forwarding address on the gateway domain (unguessable)
    forwarding_local        TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    forwarding_state        TEXT    NOT NULL DEFAULT 'unknown' CHECK (forwarding_state IN ('unknown', 'confirmed')),
    forwarding_confirmed_at INTEGER,
    -- {provider, code, link} of a provider's forwarding-confirmation mail
    forwarding_confirmation TEXT,
    verification_code_hash  BLOB,
    verification_expires_at INTEGER,
    verification_attempts   INTEGER NOT NULL DEFAULT 0,
    verification_nonce      TEXT UNIQUE,
    verified_at             INTEGER,
    signature_text          TEXT,
    signature_html          TEXT,
    -- {spf, dkim, dmarc: {status, record_to_publish, detail}}
    dns                     TEXT,
    dns_checked_at          INTEGER,
    created_at              INTEGER NOT NULL
);

-- One DKIM key per sending domain.
CREATE TABLE dkim_keys (
    domain          TEXT    PRIMARY KEY COLLATE NOCASE,
    selector        TEXT    NOT NULL,
    algorithm       TEXT    NOT NULL CHECK (algorithm IN ('ed25519', 'rsa')),
    private_key     BLOB    NOT NULL,
    public_key      TEXT    NOT NULL,
    created_at      INTEGER NOT NULL
);

CREATE TABLE side_conversations (
    id              INTEGER PRIMARY KEY,
    parent_id       INTEGER NOT NULL REFERENCES parents(id) ON DELETE CASCADE,
    -- 16 lowercase base32 characters, 80 random bits (SPEC §3)
    token           TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    portal_token    TEXT    UNIQUE,
    portal_revoked  INTEGER NOT NULL DEFAULT 0,
    status          TEXT    NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    subject         TEXT    NOT NULL,
    sender_email    TEXT    NOT NULL COLLATE NOCASE,
    started_by      INTEGER REFERENCES users(id) ON DELETE SET NULL,
    -- 22-byte Outlook Thread-Index header block, extended per reply
    thread_index    BLOB,
    -- the <n> of the next outbound Message-ID
    next_seq        INTEGER NOT NULL DEFAULT 1,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    closed_at       INTEGER
);
CREATE INDEX side_conversations_parent ON side_conversations(parent_id);

CREATE TABLE participants (
    side_conversation_id INTEGER NOT NULL REFERENCES side_conversations(id) ON DELETE CASCADE,
    email           TEXT    NOT NULL COLLATE NOCASE,
    name            TEXT,
    -- how they joined: to, cc, or joined (by CC or forward on an inbound reply)
    role            TEXT    NOT NULL CHECK (role IN ('to', 'cc', 'joined')),
    added_at        INTEGER NOT NULL,
    PRIMARY KEY (side_conversation_id, email)
);

-- Addresses first seen on inbound mail ("leads").
CREATE TABLE contacts (
    id              INTEGER PRIMARY KEY,
    email           TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    name            TEXT,
    first_message_id INTEGER,
    created_at      INTEGER NOT NULL
);

-- Messages accepted over SMTP, committed before the 250 reply, waiting for
-- the ingest pipeline. The raw bytes here are exactly what was received.
CREATE TABLE inbound_queue (
    id              INTEGER PRIMARY KEY,
    received_at     INTEGER NOT NULL,
    peer_ip         TEXT    NOT NULL,
    helo            TEXT    NOT NULL,
    mail_from       TEXT    NOT NULL,         -- '' for the null reverse-path
    rcpts           TEXT    NOT NULL,         -- JSON array of addresses
    tls             INTEGER NOT NULL DEFAULT 0,
    -- MAIL/RCPT parameters worth keeping (SIZE, BODY, SMTPUTF8, RET, ENVID, NOTIFY, ORCPT)
    params          TEXT,
    size            INTEGER NOT NULL,
    sha256          BLOB    NOT NULL,
    raw             BLOB    NOT NULL,
    state           TEXT    NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'done', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    processed_at    INTEGER,
    -- the message this delivery became (or duplicated), once ingested
    message_id      INTEGER
);
CREATE INDEX inbound_queue_pending ON inbound_queue(state, id);

CREATE TABLE messages (
    id              INTEGER PRIMARY KEY,
    side_conversation_id INTEGER REFERENCES side_conversations(id) ON DELETE SET NULL,
    direction       TEXT    NOT NULL CHECK (direction IN ('in', 'out')),
    kind            TEXT    NOT NULL CHECK (kind IN ('reply', 'auto_reply', 'bounce', 'verification',
                                                     'forwarding_confirmation', 'agent', 'notification')),
    route           TEXT    NOT NULL CHECK (route IN ('token', 'references', 'forwarding', 'bounce',
                                                      'unrouted', 'api', 'portal')),
    inbound_id      INTEGER UNIQUE REFERENCES inbound_queue(id),
    raw             BLOB    NOT NULL,
    raw_sha256      BLOB    NOT NULL,
    message_id      TEXT,
    in_reply_to     TEXT,
    refs            TEXT    NOT NULL DEFAULT '[]',   -- JSON array of Message-IDs
    from_name       TEXT,
    from_email      TEXT COLLATE NOCASE,
    reply_to        TEXT,
    to_addrs        TEXT    NOT NULL DEFAULT '[]',   -- JSON array of {name,email}
    cc_addrs        TEXT    NOT NULL DEFAULT '[]',
    date            INTEGER,
    subject         TEXT    NOT NULL DEFAULT '',
    text_body       TEXT,
    html_body       TEXT,
    visible_reply   TEXT,
    flags           TEXT    NOT NULL DEFAULT '[]',   -- JSON array: unverified_sender, duplicate_of:<id> …
    auth            TEXT,                            -- JSON {spf, dkim, dmarc, arc}
    bounce          TEXT,                            -- JSON {recipient, status, diagnostic}
    author_id       INTEGER REFERENCES users(id) ON DELETE SET NULL,
    received_at     INTEGER NOT NULL
);
CREATE INDEX messages_message_id ON messages(message_id);
CREATE INDEX messages_side_conversation ON messages(side_conversation_id, id);
CREATE INDEX messages_sha ON messages(raw_sha256);
CREATE INDEX messages_unrouted ON messages(route, id) WHERE side_conversation_id IS NULL;

-- Every id a message cites in In-Reply-To/References, for threading through
-- messages the gateway never received itself.
CREATE TABLE message_refs (
    ref             TEXT    NOT NULL,
    message_id      INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    PRIMARY KEY (ref, message_id)
) WITHOUT ROWID;
CREATE INDEX message_refs_message ON message_refs(message_id);

CREATE TABLE attachments (
    message_id      INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    idx             INTEGER NOT NULL,
    filename        TEXT,
    content_type    TEXT    NOT NULL,
    size            INTEGER NOT NULL,
    content_id      TEXT,
    data            BLOB    NOT NULL,
    PRIMARY KEY (message_id, idx)
);

-- One row per recipient of an outbound message.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    message_id      INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    recipient       TEXT    NOT NULL COLLATE NOCASE,
    -- VERP key: the envelope sender is bounce+<verp_key>@<domain>
    verp_key        TEXT    NOT NULL UNIQUE,
    state           TEXT    NOT NULL DEFAULT 'queued'
                    CHECK (state IN ('queued', 'sending', 'sent', 'deferred', 'failed', 'bounced')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_attempt_at INTEGER,
    last_error      TEXT,
    sent_at         INTEGER,
    created_at      INTEGER NOT NULL,
    UNIQUE (message_id, recipient)
);
CREATE INDEX outbox_due ON outbox(state, next_attempt_at);

-- Workspace settings (signature, default sender, side_conversations_enabled …)
-- as JSON values.
CREATE TABLE settings (
    key             TEXT    PRIMARY KEY,
    value           TEXT    NOT NULL
);

CREATE TABLE activity (
    id              INTEGER PRIMARY KEY,
    parent_id       INTEGER NOT NULL REFERENCES parents(id) ON DELETE CASCADE,
    side_conversation_id INTEGER REFERENCES side_conversations(id) ON DELETE SET NULL,
    actor_id        INTEGER REFERENCES users(id) ON DELETE SET NULL,
    text            TEXT    NOT NULL,
    created_at      INTEGER NOT NULL
);
CREATE INDEX activity_parent ON activity(parent_id, id);

CREATE TABLE webhooks (
    id              INTEGER PRIMARY KEY,
    url             TEXT    NOT NULL,
    secret          TEXT    NOT NULL,
    events          TEXT    NOT NULL,   -- JSON array of event names; empty = all
    active          INTEGER NOT NULL DEFAULT 1,
    created_at      INTEGER NOT NULL
);

CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY,
    webhook_id      INTEGER NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event           TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    state           TEXT    NOT NULL DEFAULT 'queued'
                    CHECK (state IN ('queued', 'sending', 'delivered', 'deferred', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    delivered_at    INTEGER
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(state, next_attempt_at);
CREATE INDEX webhook_deliveries_hook ON webhook_deliveries(webhook_id, id);

-- Saved side-conversation templates (macros).
CREATE TABLE templates (
    id              INTEGER PRIMARY KEY,
    name            TEXT    NOT NULL,
    to_addrs        TEXT    NOT NULL DEFAULT '[]',
    cc_addrs        TEXT    NOT NULL DEFAULT '[]',
    subject         TEXT    NOT NULL DEFAULT '',
    body_text       TEXT,
    body_html       TEXT,
    created_by      INTEGER REFERENCES users(id) ON DELETE SET NULL,
    created_at      INTEGER NOT NULL
);

-- Pending reply notifications, batched per agent (SPEC §4 effects).
CREATE TABLE notification_queue (
    id              INTEGER PRIMARY KEY,
    user_id         INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    message_id      INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    -- when the reply was queued; its batch is sent a window after the first
    due_at          INTEGER NOT NULL,
    sent_message_id INTEGER REFERENCES messages(id) ON DELETE SET NULL,
    UNIQUE (user_id, message_id)
);
CREATE INDEX notification_queue_due ON notification_queue(sent_message_id, due_at);

-- Agent view (SPEC §9). Each mailbox gives its messages UIDs that never
-- change; UIDVALIDITY changes only if a mailbox is recreated.
CREATE TABLE mailboxes (
    id              INTEGER PRIMARY KEY,
    name            TEXT    NOT NULL UNIQUE,
    kind            TEXT    NOT NULL CHECK (kind IN ('inbox', 'ticket', 'unrouted')),
    parent_id       INTEGER UNIQUE REFERENCES parents(id) ON DELETE CASCADE,
    uidvalidity     INTEGER NOT NULL,
    uidnext         INTEGER NOT NULL DEFAULT 1,
    highest_modseq  INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE mailbox_messages (
    mailbox_id      INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    uid             INTEGER NOT NULL,
    message_id      INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    modseq          INTEGER NOT NULL,
    PRIMARY KEY (mailbox_id, uid),
    UNIQUE (mailbox_id, message_id)
);
CREATE INDEX mailbox_messages_message ON mailbox_messages(message_id);

-- Per-user flags on messages.
CREATE TABLE message_flags (
    user_id         INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    message_id      INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    seen            INTEGER NOT NULL DEFAULT 0,
    flagged         INTEGER NOT NULL DEFAULT 0,
    answered        INTEGER NOT NULL DEFAULT 0,
    modseq          INTEGER NOT NULL,
    PRIMARY KEY (user_id, message_id)
);

-- Monotonic counters: 'modseq' (every change visible to the agent view; JMAP
-- state strings derive from it).
CREATE TABLE counters (
    name            TEXT    PRIMARY KEY,
    value           INTEGER NOT NULL
);
INSERT INTO counters (name, value) VALUES ('modseq', 0);

-- migration: 2
-- Agent view, second part: what left a mailbox (a message of the Unrouted
-- list assigned to a thread), so IMAP sessions report EXPUNGE and JMAP
-- Email/changes reports it, and indexes for "what changed since modseq N".
CREATE TABLE mailbox_removed (
    mailbox_id      INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    uid             INTEGER NOT NULL,
    message_id      INTEGER NOT NULL,
    modseq          INTEGER NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
);
CREATE INDEX mailbox_removed_modseq ON mailbox_removed(mailbox_id, modseq);
CREATE INDEX mailbox_messages_modseq ON mailbox_messages(mailbox_id, modseq);
CREATE INDEX message_flags_modseq ON message_flags(user_id, modseq);
-- INBOX and Unrouted exist from the start, so clients can select them empty.
INSERT OR IGNORE INTO mailboxes (name, kind, uidvalidity)
    VALUES ('INBOX', 'inbox', max(1, CAST(strftime('%s', 'now') AS INTEGER)));
INSERT OR IGNORE INTO mailboxes (name, kind, uidvalidity)
    VALUES ('Unrouted', 'unrouted', max(1, CAST(strftime('%s', 'now') AS INTEGER)));

-- migration: 3
-- Agent view, third part: JMAP lists and threads sort by received time and
-- group by side conversation. Both columns sit after the raw message in the
-- row, so without this index every listing would read through each
-- message's overflow pages; with it, listings read only the index.
CREATE INDEX messages_thread_received ON messages(side_conversation_id, received_at);

-- migration: 4
-- The bytes of each accepted message move out of the queue row into a table
-- of their own. Marking a queue row done changes its size (state, processed
-- time, message), and SQLite then rewrites the whole record, overflow pages
-- and all: every accepted message's bytes were written a third time. Rows
-- queued before this migration keep their bytes in `inbound_queue.raw`;
-- new rows have an empty `raw` there and the bytes in `inbound_raw`.
CREATE TABLE inbound_raw (
    id              INTEGER PRIMARY KEY,      -- inbound_queue.id
    raw             BLOB    NOT NULL
);
-- JMAP Email/query sorts a mailbox by received time: without this index a
-- query on a large store read and sorted every message row.
CREATE INDEX messages_received ON messages(received_at, id);
-- The content hash finds a duplicate only of a message without a
-- Message-ID (with one, the Message-ID does): the full index cost every
-- stored message a write at a random place in a large B-tree.
DROP INDEX messages_sha;
CREATE INDEX messages_sha_without_id ON messages(raw_sha256) WHERE message_id IS NULL;
-- `messages.visible_reply` is NULL from now on when it equals the text
-- body; readers take coalesce(visible_reply, text_body).

-- migration: 5
-- The agent view's placement rows, keyed by what they are: (mailbox, UID).
-- As a rowid table each row cost five B-tree inserts (the table, the key,
-- the (mailbox, message) constraint, the by-message index, the modseq
-- index), two rows per inbound message. Without a rowid the table is the
-- key; the constraint leads with the message, so it also answers "which
-- mailboxes hold message N" (and the cascade when a message is deleted):
-- three B-trees per row.
CREATE TABLE mailbox_messages_v5 (
    mailbox_id      INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    uid             INTEGER NOT NULL,
    message_id      INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    modseq          INTEGER NOT NULL,
    PRIMARY KEY (mailbox_id, uid),
    UNIQUE (message_id, mailbox_id)
) WITHOUT ROWID;
INSERT INTO mailbox_messages_v5 (mailbox_id, uid, message_id, modseq)
    SELECT mailbox_id, uid, message_id, modseq FROM mailbox_messages;
DROP TABLE mailbox_messages;
ALTER TABLE mailbox_messages_v5 RENAME TO mailbox_messages;
CREATE INDEX mailbox_messages_modseq ON mailbox_messages(mailbox_id, modseq);

-- migration: 6
-- Two indexes every inbound message paid for and no query needs.
-- `mailbox_messages_modseq`: a placement row is only ever inserted, with
-- the mailbox's next UID and a new modseq in the same transaction, and
-- never changed: within a mailbox the modseq grows with the UID, so "added
-- since modseq N" reads the primary key backwards from the highest UID and
-- stops at the first older row. Each inbound message went into two
-- mailboxes, each an insert in the middle of this index (INBOX's range).
-- `messages_side_conversation`: `messages_thread_received` starts with the
-- same column and serves every lookup by side conversation (threads are
-- short; ordering one by id is a small sort).
DROP INDEX mailbox_messages_modseq;
DROP INDEX messages_side_conversation;

-- migration: 7
-- The trust boundary of a thread (SPEC §10, SECURITY.md).
-- Participants may also be admitted by an agent (`admitted`): unverified mail
-- never adds anyone by itself.
CREATE TABLE participants_v7 (
    side_conversation_id INTEGER NOT NULL REFERENCES side_conversations(id) ON DELETE CASCADE,
    email           TEXT    NOT NULL COLLATE NOCASE,
    name            TEXT,
    -- how they joined: to, cc, joined (a verified reply, or copied in by a
    -- verified participant), admitted (by an agent)
    role            TEXT    NOT NULL CHECK (role IN ('to', 'cc', 'joined', 'admitted')),
    added_at        INTEGER NOT NULL,
    PRIMARY KEY (side_conversation_id, email)
);
INSERT INTO participants_v7 (side_conversation_id, email, name, role, added_at)
    SELECT side_conversation_id, email, name, role, added_at FROM participants;
DROP TABLE participants;
ALTER TABLE participants_v7 RENAME TO participants;
-- What each side conversation has received, for its quota
-- (`[ingest] max_thread_messages` / `max_thread_bytes`), kept by the ingest
-- writer in the message's own transaction.
ALTER TABLE side_conversations ADD COLUMN inbound_messages INTEGER NOT NULL DEFAULT 0;
ALTER TABLE side_conversations ADD COLUMN inbound_bytes INTEGER NOT NULL DEFAULT 0;
UPDATE side_conversations SET
    inbound_messages = (SELECT count(*) FROM messages m
                        WHERE m.side_conversation_id = side_conversations.id AND m.direction = 'in'),
    inbound_bytes = (SELECT coalesce(sum(coalesce(q.size, length(m.raw))), 0) FROM messages m
                     LEFT JOIN inbound_queue q ON q.id = m.inbound_id
                     WHERE m.side_conversation_id = side_conversations.id AND m.direction = 'in');
-- Messages flagged `unverified_sender`: the agent view shows them with the
-- keyword `$unverified` (IMAP and JMAP) from this small table, so listing a
-- mailbox never reads the messages themselves.
CREATE TABLE unverified_messages (
    message_id      INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE
);
INSERT INTO unverified_messages (message_id)
    SELECT id FROM messages WHERE flags LIKE '%"unverified_sender"%';
-- One portal link per recipient (SPEC §8): it shows the thread and replies
-- as that recipient only; each can be revoked alone. The side conversation's
-- own `portal_token` (links handed out before) keeps working as before.
CREATE TABLE portal_links (
    token           TEXT    PRIMARY KEY,
    side_conversation_id INTEGER NOT NULL REFERENCES side_conversations(id) ON DELETE CASCADE,
    email           TEXT    NOT NULL COLLATE NOCASE,
    created_at      INTEGER NOT NULL,
    revoked_at      INTEGER,
    UNIQUE (side_conversation_id, email)
);
-- Whether the side conversation's mail carries each recipient's own link
-- (started with share_portal_link from now on; off once revoked).
ALTER TABLE side_conversations ADD COLUMN portal_per_recipient INTEGER NOT NULL DEFAULT 0;
-- A recipient's own copy of an outbound message, when it differs from the
-- message's (it carries their portal link); without a row the message's raw
-- bytes are sent. A table of its own: an outbox row changes state several
-- times, and SQLite rewrites a changed row whole, overflow pages included.
CREATE TABLE outbox_copies (
    outbox_id       INTEGER PRIMARY KEY REFERENCES outbox(id) ON DELETE CASCADE,
    raw             BLOB    NOT NULL
);

-- migration: 8
-- User lifecycle (SPEC §2, §7): a user may be deactivated (their history
-- stays; their token, IMAP sessions and push streams stop) and their token
-- rotated. `credential_epoch` moves whenever what a session logged in with
-- stops being what it was (token rotated, user deactivated, role changed):
-- an open IMAP session or JMAP push stream compares it with the one it
-- started with. The counter 'credentials' moves with every such change, in
-- the same transaction, so a serving process learns of a change another
-- process made (the command line) from one small read.
ALTER TABLE users ADD COLUMN active INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1));
ALTER TABLE users ADD COLUMN deactivated_at INTEGER;
ALTER TABLE users ADD COLUMN credential_epoch INTEGER NOT NULL DEFAULT 0;
INSERT OR IGNORE INTO counters (name, value) VALUES ('credentials', 0);
-- Who changed users, senders, settings and webhooks, and when
-- (`GET /api/audit`, newest first). `actor` is the acting user's email at
-- the time, or `cli` for the command line; `detail` is compact JSON with
-- before/after values where they mean something, never a secret or token.
CREATE TABLE audit (
    id              INTEGER PRIMARY KEY,
    at              INTEGER NOT NULL,
    actor_id        INTEGER REFERENCES users(id) ON DELETE SET NULL,
    actor           TEXT    NOT NULL,
    action          TEXT    NOT NULL,
    target          TEXT    NOT NULL,
    detail          TEXT    NOT NULL DEFAULT '{}'
);

-- migration: 9
-- Agents' own mail clients (SPEC §12): each message an agent's client
-- submitted, by its Message-ID, so that a client retrying after a lost
-- connection sends once.
CREATE TABLE agent_submissions (
    user_id         INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    client_message_id TEXT  NOT NULL,
    side_conversation_id INTEGER NOT NULL REFERENCES side_conversations(id) ON DELETE CASCADE,
    message_id      INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    at              INTEGER NOT NULL,
    PRIMARY KEY (user_id, client_message_id)
) WITHOUT ROWID;

-- migration: 10
-- Replies to notification emails (SPEC §12): an agent's reply that arrives
-- on the MX at an agent-reply address is kept as `agent_reply` (it became
-- a follow-up) or `agent_reply_unverified` (it was not sent: with the
-- unrouted mail, and the agent is told why). The kinds widen the CHECK of
-- `messages.kind`. The table is large, so rather than copying it the CHECK
-- text is edited in place, as SQLite documents for a change that alters no
-- stored record ("Making Other Kinds Of Table Schema Changes",
-- lang_altertable.html): every existing row satisfies the wider CHECK. The
-- CREATE TABLE below moves the schema cookie (other connections reload),
-- and `writable_schema = RESET` reloads this connection's schema.
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
   SET sql = replace(sql, '''agent'', ''notification'')',
                     '''agent'', ''notification'', ''agent_reply'', ''agent_reply_unverified'')')
 WHERE type = 'table' AND name = 'messages';
-- What each agent reply became: the outbound message it was sent as, or
-- why it was not sent and the email that said so.
CREATE TABLE agent_replies (
    message_id      INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
    user_id         INTEGER REFERENCES users(id) ON DELETE SET NULL,
    side_conversation_id INTEGER REFERENCES side_conversations(id) ON DELETE SET NULL,
    sent_message_id INTEGER REFERENCES messages(id) ON DELETE SET NULL,
    reason          TEXT,
    -- the email that told the agent why it was not sent (never sent in
    -- answer to such an email: no loop)
    notice_message_id INTEGER REFERENCES messages(id) ON DELETE SET NULL
);
CREATE INDEX agent_replies_notice ON agent_replies(notice_message_id)
    WHERE notice_message_id IS NOT NULL;
PRAGMA writable_schema = RESET;

-- migration: 11
-- Each user's own `Sent` mailbox (SPEC §9, §12): every side-conversation
-- message a user wrote (API, portal, their mail client) is in it as well as
-- in its ticket's mailbox. Only its owner sees it; everyone sees their own
-- under the one name `Sent` (the stored name, `Sent:<user id>`, is unique).
-- The kind's CHECK grows a value, which SQLite can only do by rebuilding the
-- table; its two child tables are rebuilt with it (dropping `mailboxes`
-- while they point at it would cascade into them). Every row keeps its id,
-- UIDs and modseqs.
CREATE TABLE mailboxes_v11 (
    id              INTEGER PRIMARY KEY,
    name            TEXT    NOT NULL UNIQUE,
    kind            TEXT    NOT NULL CHECK (kind IN ('inbox', 'ticket', 'unrouted', 'sent')),
    parent_id       INTEGER UNIQUE REFERENCES parents(id) ON DELETE CASCADE,
    -- the user whose Sent mailbox this is (kind 'sent' only)
    owner_user_id   INTEGER UNIQUE REFERENCES users(id) ON DELETE CASCADE,
    uidvalidity     INTEGER NOT NULL,
    uidnext         INTEGER NOT NULL DEFAULT 1,
    highest_modseq  INTEGER NOT NULL DEFAULT 0,
    CHECK ((kind = 'sent') = (owner_user_id IS NOT NULL))
);
INSERT INTO mailboxes_v11 (id, name, kind, parent_id, uidvalidity, uidnext, highest_modseq)
    SELECT id, name, kind, parent_id, uidvalidity, uidnext, highest_modseq FROM mailboxes;
CREATE TABLE mailbox_messages_v11 (
    mailbox_id      INTEGER NOT NULL REFERENCES mailboxes_v11(id) ON DELETE CASCADE,
    uid             INTEGER NOT NULL,
    message_id      INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    modseq          INTEGER NOT NULL,
    PRIMARY KEY (mailbox_id, uid),
    UNIQUE (message_id, mailbox_id)
) WITHOUT ROWID;
INSERT INTO mailbox_messages_v11 (mailbox_id, uid, message_id, modseq)
    SELECT mailbox_id, uid, message_id, modseq FROM mailbox_messages;
CREATE TABLE mailbox_removed_v11 (
    mailbox_id      INTEGER NOT NULL REFERENCES mailboxes_v11(id) ON DELETE CASCADE,
    uid             INTEGER NOT NULL,
    message_id      INTEGER NOT NULL,
    modseq          INTEGER NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
);
INSERT INTO mailbox_removed_v11 (mailbox_id, uid, message_id, modseq)
    SELECT mailbox_id, uid, message_id, modseq FROM mailbox_removed;
DROP TABLE mailbox_messages;
DROP TABLE mailbox_removed;
DROP TABLE mailboxes;
ALTER TABLE mailboxes_v11 RENAME TO mailboxes;
ALTER TABLE mailbox_messages_v11 RENAME TO mailbox_messages;
ALTER TABLE mailbox_removed_v11 RENAME TO mailbox_removed;
CREATE INDEX mailbox_removed_modseq ON mailbox_removed(mailbox_id, modseq);
-- A Sent mailbox for every user (new users get theirs when created).
INSERT INTO mailboxes (name, kind, owner_user_id, uidvalidity)
    SELECT 'Sent:' || id, 'sent', id, max(1, CAST(strftime('%s', 'now') AS INTEGER)) FROM users;
-- What users wrote before: in their Sent in the order it entered its
-- ticket's mailbox, at the modseq it did (so within Sent the modseq grows
-- with the UID, and JMAP clients see no change for mail they know).
INSERT INTO mailbox_messages (mailbox_id, uid, message_id, modseq)
    SELECT s.id,
           row_number() OVER (PARTITION BY s.id ORDER BY t.modseq, m.id),
           m.id, t.modseq
    FROM messages m
    JOIN mailboxes s ON s.owner_user_id = m.author_id
    JOIN (SELECT mm.message_id, min(mm.modseq) AS modseq FROM mailbox_messages mm
          JOIN mailboxes tb ON tb.id = mm.mailbox_id AND tb.kind = 'ticket'
          GROUP BY mm.message_id) t ON t.message_id = m.id
    WHERE m.direction = 'out' AND m.author_id IS NOT NULL;
UPDATE mailboxes SET
    uidnext = 1 + (SELECT count(*) FROM mailbox_messages mm WHERE mm.mailbox_id = mailboxes.id),
    highest_modseq = (SELECT coalesce(max(mm.modseq), 0) FROM mailbox_messages mm
                      WHERE mm.mailbox_id = mailboxes.id)
WHERE kind = 'sent';
-- migration: 12
-- The web console (SPEC §11). A user may have a password (argon2id PHC
-- string); sign-in opens a session, known here only by the SHA-256 of its
-- cookie value, with the CSRF token its forms carry. A sign-in link is a
-- one-time token (kept hashed) that opens a session once, before it expires.
ALTER TABLE users ADD COLUMN password_hash TEXT;
CREATE TABLE console_sessions (
    id_hash         BLOB    PRIMARY KEY,
    user_id         INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf            TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    last_seen_at    INTEGER NOT NULL,
    -- how the session was opened: 'password' or 'link'
    method          TEXT    NOT NULL
) WITHOUT ROWID;
CREATE INDEX console_sessions_user ON console_sessions(user_id);
CREATE TABLE login_links (
    token_hash      BLOB    PRIMARY KEY,
    user_id         INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    used_at         INTEGER
) WITHOUT ROWID;
CREATE INDEX login_links_user ON login_links(user_id);
-- What a side conversation's list needs without reading its messages: the
-- latest vendor reply (inbound `reply`; auto-replies and bounces do not
-- count) and the latest agent message (outbound `agent`). It waits on an
-- agent while the first is newer than the second. Kept by triggers, so
-- every path that stores or assigns a message keeps them.
ALTER TABLE side_conversations ADD COLUMN last_in_id INTEGER;
ALTER TABLE side_conversations ADD COLUMN last_out_id INTEGER;
UPDATE side_conversations SET
    last_in_id = (SELECT max(m.id) FROM messages m WHERE m.side_conversation_id = side_conversations.id
                  AND m.direction = 'in' AND m.kind = 'reply'),
    last_out_id = (SELECT max(m.id) FROM messages m WHERE m.side_conversation_id = side_conversations.id
                   AND m.direction = 'out' AND m.kind = 'agent');
-- Those waiting on an agent, newest vendor reply first: a partial index, so
-- listing and counting them costs what they number, not what all open ones
-- do.
CREATE INDEX side_conversations_waiting ON side_conversations(last_in_id)
    WHERE status = 'open' AND last_in_id > coalesce(last_out_id, 0);
CREATE INDEX parents_assignee ON parents(assignee_id) WHERE assignee_id IS NOT NULL;
CREATE INDEX side_conversations_updated ON side_conversations(status, updated_at, id);
-- Per user, the side conversations with a vendor reply they have not opened
-- in the console yet (the newest such reply). A row is written for every
-- active user when a reply arrives and removed when the user opens the
-- thread.
CREATE TABLE console_unread (
    user_id         INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    side_conversation_id INTEGER NOT NULL REFERENCES side_conversations(id) ON DELETE CASCADE,
    message_id      INTEGER NOT NULL,
    PRIMARY KEY (user_id, side_conversation_id)
) WITHOUT ROWID;
CREATE INDEX console_unread_newest ON console_unread(user_id, message_id);
CREATE TRIGGER messages_thread_insert AFTER INSERT ON messages
WHEN NEW.side_conversation_id IS NOT NULL
BEGIN
    UPDATE side_conversations SET last_in_id = max(coalesce(last_in_id, 0), NEW.id)
        WHERE id = NEW.side_conversation_id AND NEW.direction = 'in' AND NEW.kind = 'reply';
    UPDATE side_conversations SET last_out_id = max(coalesce(last_out_id, 0), NEW.id)
        WHERE id = NEW.side_conversation_id AND NEW.direction = 'out' AND NEW.kind = 'agent';
    INSERT INTO console_unread (user_id, side_conversation_id, message_id)
        SELECT u.id, NEW.side_conversation_id, NEW.id FROM users u
        WHERE u.active = 1 AND NEW.direction = 'in' AND NEW.kind = 'reply'
        ON CONFLICT (user_id, side_conversation_id) DO UPDATE
        SET message_id = max(message_id, excluded.message_id);
END;
CREATE TRIGGER messages_thread_assign AFTER UPDATE OF side_conversation_id ON messages
WHEN NEW.side_conversation_id IS NOT NULL
     AND NEW.side_conversation_id IS NOT OLD.side_conversation_id
BEGIN
    UPDATE side_conversations SET last_in_id = max(coalesce(last_in_id, 0), NEW.id)
        WHERE id = NEW.side_conversation_id AND NEW.direction = 'in' AND NEW.kind = 'reply';
    INSERT INTO console_unread (user_id, side_conversation_id, message_id)
        SELECT u.id, NEW.side_conversation_id, NEW.id FROM users u
        WHERE u.active = 1 AND NEW.direction = 'in' AND NEW.kind = 'reply'
        ON CONFLICT (user_id, side_conversation_id) DO UPDATE
        SET message_id = max(message_id, excluded.message_id);
END;
-- migration: 13
-- Waiting on the vendor, tags, reminders, reports (SPEC §15).
-- Open threads whose latest agent message is newer than any vendor reply
-- (they wait on the vendor), oldest agent message first: the twin of
-- side_conversations_waiting.
CREATE INDEX side_conversations_waiting_vendor ON side_conversations(last_out_id)
    WHERE status = 'open' AND last_out_id > coalesce(last_in_id, 0);
-- Tags of a side conversation, compared case-insensitively.
CREATE TABLE side_conversation_tags (
    side_conversation_id INTEGER NOT NULL REFERENCES side_conversations(id) ON DELETE CASCADE,
    tag             TEXT    NOT NULL COLLATE NOCASE,
    PRIMARY KEY (side_conversation_id, tag)
) WITHOUT ROWID;
CREATE INDEX side_conversation_tags_tag ON side_conversation_tags(tag, side_conversation_id);
-- The tags a template sets (JSON array of strings).
ALTER TABLE templates ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
-- A vendor's portal reply relayed to the other participants is stored as
-- an outbound `agent` message with route `portal`: it is the vendor
-- speaking, so it must not make the thread wait on the vendor.
DROP TRIGGER messages_thread_insert;
CREATE TRIGGER messages_thread_insert AFTER INSERT ON messages
WHEN NEW.side_conversation_id IS NOT NULL
BEGIN
    UPDATE side_conversations SET last_in_id = max(coalesce(last_in_id, 0), NEW.id)
        WHERE id = NEW.side_conversation_id AND NEW.direction = 'in' AND NEW.kind = 'reply';
    UPDATE side_conversations SET last_out_id = max(coalesce(last_out_id, 0), NEW.id)
        WHERE id = NEW.side_conversation_id AND NEW.direction = 'out' AND NEW.kind = 'agent'
          AND NEW.route <> 'portal';
    INSERT INTO console_unread (user_id, side_conversation_id, message_id)
        SELECT u.id, NEW.side_conversation_id, NEW.id FROM users u
        WHERE u.active = 1 AND NEW.direction = 'in' AND NEW.kind = 'reply'
        ON CONFLICT (user_id, side_conversation_id) DO UPDATE
        SET message_id = max(message_id, excluded.message_id);
END;
UPDATE side_conversations SET
    last_out_id = (SELECT max(m.id) FROM messages m WHERE m.side_conversation_id = side_conversations.id
                   AND m.direction = 'out' AND m.kind = 'agent' AND m.route <> 'portal')
WHERE last_out_id IS NOT NULL;
-- Reports (SPEC §15) read side conversations opened or closed in a range,
-- and those open now.
CREATE INDEX side_conversations_created ON side_conversations(created_at);
CREATE INDEX side_conversations_closed ON side_conversations(closed_at) WHERE closed_at IS NOT NULL;
-- Reminders (SPEC §15): after `remind_after` ms without a vendor reply to
-- the latest agent message, the assignee is reminded once (and, with
-- `nudge_vendor`, the vendor is sent one follow-up). `reminded_out_id` is
-- the agent message the last reminder was for.
ALTER TABLE side_conversations ADD COLUMN remind_after INTEGER;
ALTER TABLE side_conversations ADD COLUMN nudge_vendor INTEGER NOT NULL DEFAULT 0;
ALTER TABLE side_conversations ADD COLUMN reminded_out_id INTEGER;
-- A reminder rides in the reply notifications' batches: its text, where a
-- reply's row has NULL.
ALTER TABLE notification_queue ADD COLUMN reminder TEXT;

-- migration: 14
-- Several nodes on one PostgreSQL store (SPEC §13); SQLite has the same
-- columns so both schemas stay one shape. A row being sent or delivered is
-- leased: another node takes it over once `lease_until` (ms) has passed
-- (its node died mid-send). `accepted_by` names the node that accepted an
-- inbound message ('' on SQLite): each node threads its own, and anyone
-- threads what a node left queued for long.
ALTER TABLE outbox ADD COLUMN lease_until INTEGER;
ALTER TABLE webhook_deliveries ADD COLUMN lease_until INTEGER;
ALTER TABLE inbound_queue ADD COLUMN accepted_by TEXT NOT NULL DEFAULT '';
