#!/usr/bin/env python3
"""Backchannel's IMAP answers against a real Dovecot's, and mbsync against backchannel (issue 9).

The same corpus messages go into a private Dovecot (maildir, written directly, so its bytes are
exactly the ones sent) and into backchannel (over its SMTP port, to an address no side
conversation owns, so they land in `Unrouted`; a few more go to a side conversation's reply
address so `INBOX` and `Tickets/<id>` have mail too). Then, with imaplib, from both:

  FETCH 1:* (ENVELOPE BODYSTRUCTURE BODY RFC822.SIZE BODY.PEEK[])
  FETCH <n> (BODY.PEEK[<section>] ...) for every part of every message: the part, its MIME
            header, HEADER/TEXT/HEADER.FIELDS of attached messages, part numbers that do not
            exist, partial fetches
  THREAD REFERENCES UTF-8 ALL

must give identical answers, value for value (a quoted string and a literal with the same bytes
are the same answer). Deliberate or known differences are normalised and counted, and printed:

  type-case     imap-codec writes the type of a text part as "TEXT" and of an attached message
                as "MESSAGE" "RFC822"; Dovecot echoes the header's spelling ("text", "Text").
  nil-section   a section that does not exist: Dovecot sends "", backchannel NIL.
  cr-only-hdr   a CR-only message whose whole text is one header line: Dovecot's cached
                HEADER.FIELDS drops one CR before the line's end (compared without CRs).

Dovecot answers the first BODYSTRUCTURE of a plain US-ASCII message with the header's spelling
and later ones (from its cache) in a canonical one; backchannel always gives the canonical form,
so Dovecot's cache is warmed first. Dovecot's received dates (maildir mtimes) are set to
backchannel's INTERNALDATEs so THREAD sorts undated messages alike.

Finally mbsync pulls every backchannel mailbox into a local Maildir, and each mailbox there must
hold exactly the messages imaplib reads from it (mbsync stores LF line ends; compared as such).

Options (environment): BACKCHANNEL_BIN (binary), BACKCHANNEL_CORPUS (corpus dir),
IMAP_COMPARE_SAMPLE=N (every N-th corpus message, plus every message with an attached message
or a multipart, so all MIME kinds stay covered; default 1 = all). Exit status 1 on any
mismatch, 0 when all agree (or the corpus is absent: notice and skip).
"""

import collections
import datetime
import hashlib
import imaplib
import json
import os
import re
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bc_harness import DOMAIN, Server  # noqa: E402
from deliver_corpus import corpus_dir, messages_of  # noqa: E402

UNROUTED_RCPT = f"reply@{DOMAIN}"  # the generic reply address: kept, threaded nowhere
SENDER = "corpus@client.example.org"
ADMIN = "admin@agents.example.com"
DOVECOT_USER = "cmp"
MAX_PATHS = 60  # part numbers compared per message (the 3,000-part message has more)


# ---------------------------------------------------------------------------------------------
# IMAP response values


class Atom(str):
    """An atom or number (not a string)."""


def parse_value(buf, i):
    """One IMAP value at buf[i:]: list, quoted string, literal, NIL or atom; (value, next i)."""
    c = buf[i:i + 1]
    if c == b"(":
        i += 1
        out = []
        while True:
            while buf[i:i + 1] == b" ":
                i += 1
            if buf[i:i + 1] == b")":
                return out, i + 1
            if i >= len(buf):
                raise ValueError("unterminated list")
            v, i = parse_value(buf, i)
            out.append(v)
    if c == b'"':
        i += 1
        s = bytearray()
        while i < len(buf):
            ch = buf[i:i + 1]
            if ch == b"\\":
                s += buf[i + 1:i + 2]
                i += 2
                continue
            if ch == b'"':
                return bytes(s), i + 1
            s += ch
            i += 1
        raise ValueError("unterminated string")
    if c == b"{":
        m = re.compile(rb"\{(\d+)\+?\}\r\n").match(buf, i)
        if not m:
            raise ValueError(f"bad literal at {buf[i:i + 20]!r}")
        n = int(m.group(1))
        j = m.end()
        return buf[j:j + n], j + n
    j = i
    depth = 0
    while j < len(buf):
        ch = buf[j:j + 1]
        if ch == b"[":
            depth += 1
        elif ch == b"]":
            depth -= 1
        elif depth == 0 and ch in (b" ", b"(", b")", b"\r", b"\n"):
            break
        j += 1
    a = buf[i:j].decode("latin-1")
    if a.upper() == "NIL":
        return None, j
    return Atom(a), j


def imaplib_stream(data):
    """imaplib's FETCH data back into one byte stream of `n (...)` responses, CRLF-separated."""
    out = bytearray()
    continued = False
    for item in data:
        if item is None:
            continue
        if isinstance(item, tuple):
            if not continued and out:
                out += b"\r\n"
            out += item[0] + b"\r\n" + item[1]
            continued = True
        else:
            if not continued and out:
                out += b"\r\n"
            out += item
            continued = False
    return bytes(out)


def parse_fetch(data):
    """{seq: {ITEM: value}} from imaplib FETCH data."""
    stream = imaplib_stream(data)
    out = {}
    pat = re.compile(rb"(?:^|\r\n)(\d+) \(")
    i = 0
    while True:
        m = pat.search(stream, i)
        if not m:
            break
        seq = int(m.group(1))
        v, i = parse_value(stream, m.end() - 1)
        d = out.setdefault(seq, {})
        for k in range(0, len(v) - 1, 2):
            name = str(v[k]).upper().replace("BODY.PEEK[", "BODY[")
            d[name] = v[k + 1]
    return out


def norm_structure(v, tally):
    """The type names imap-codec spells itself, compared case-insensitively."""
    if isinstance(v, list):
        if len(v) > 1 and isinstance(v[0], bytes) and isinstance(v[1], (bytes, type(None))):
            t = v[0].lower()
            if t == b"text" and v[0] != b"text":
                tally["type-case"] += 1
                v = [b"text"] + v[1:]
            elif t == b"message" and isinstance(v[1], bytes) and v[1].lower() == b"rfc822":
                if v[0] != b"message" or v[1] != b"rfc822":
                    tally["type-case"] += 1
                v = [b"message", b"rfc822"] + v[2:]
        return [norm_structure(x, tally) for x in v]
    return v


# ---------------------------------------------------------------------------------------------
# Sections to ask for


def is_rfc822(b):
    return (isinstance(b, list) and b and not isinstance(b[0], list) and isinstance(b[0], bytes)
            and b[0].lower() == b"message" and len(b) > 1 and isinstance(b[1], bytes)
            and b[1].lower() == b"rfc822")


def part_paths(bs, prefix=""):
    """(path, is message/rfc822) for every part of a BODYSTRUCTURE value."""
    out = []
    if isinstance(bs, list) and bs and isinstance(bs[0], list):
        i = 0
        for sub in bs:
            if not isinstance(sub, list):
                break
            i += 1
            p = f"{prefix}{i}"
            out.append((p, is_rfc822(sub)))
            out += inner_paths(sub, p)
    return out


def inner_paths(sub, p):
    if isinstance(sub, list) and sub and isinstance(sub[0], list):
        return part_paths(sub, p + ".")
    if is_rfc822(sub) and len(sub) > 8:
        inner = sub[8]
        if isinstance(inner, list) and inner and isinstance(inner[0], list):
            return part_paths(inner, p + ".")
        return [(p + ".1", is_rfc822(inner))] + inner_paths(inner, p + ".1")
    return []


def section_items(bs):
    items = ["BODY.PEEK[HEADER]", "BODY.PEEK[TEXT]", "BODY.PEEK[HEADER.FIELDS (FROM SUBJECT MESSAGE-ID)]",
             "BODY.PEEK[HEADER.FIELDS.NOT (RECEIVED)]", "BODY.PEEK[1]", "BODY.PEEK[99]",
             "BODY.PEEK[1.99.1]", "BODY.PEEK[1]<0.20>", "BODY.PEEK[]<5.10>", "BODY.PEEK[TEXT]<100000.10>"]
    paths = part_paths(bs) or ([("1", is_rfc822(bs))] + inner_paths(bs, "1"))
    for p, rfc in paths[:MAX_PATHS]:
        items += [f"BODY.PEEK[{p}]", f"BODY.PEEK[{p}.MIME]", f"BODY.PEEK[{p}.1]",
                  f"BODY.PEEK[{p}.HEADER]", f"BODY.PEEK[{p}.TEXT]"]
        if rfc:
            items.append(f"BODY.PEEK[{p}.HEADER.FIELDS (SUBJECT)]")
    return "(" + " ".join(dict.fromkeys(items)) + ")"


# ---------------------------------------------------------------------------------------------
# The two servers


def admin_token(srv):
    r = subprocess.run([srv.binary, "--config", srv.config_path, "user", "add", "--email", ADMIN,
                        "--name", "Compare Admin", "--role", "admin"],
                       capture_output=True, env=srv.env, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"user add failed: {r.stderr.decode(errors='replace')}")
    return r.stdout.decode().strip().splitlines()[-1]


def ready_addrs(srv):
    with open(srv.ready) as f:
        return json.load(f)


def http(srv, method, path, token, body=None):
    base = "http://" + ready_addrs(srv)["http"]
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"null")


def served_form(msg):
    """BODY[] of stored bytes: CRLF line ends, NUL as 0x80 (what Dovecot sends too)."""
    return re.sub(rb"(?<!\r)\n", b"\r\n", msg).replace(b"\0", b"\x80")


def stored_form(msg):
    """What backchannel stores for bytes sent with smtplib: a CRLF is added when the message
    does not end with one (dot-stuffing is undone by the server)."""
    return msg if msg.endswith(b"\r\n") else msg + b"\r\n"


def send_all(srv, msgs, rcpt):
    """Sends each message on one connection, in order; returns the indexes accepted."""
    accepted = []
    s = smtplib.SMTP(srv.smtp_host, srv.smtp_port, local_hostname="compare.client.example.org",
                     timeout=60)
    try:
        for i, (label, msg) in enumerate(msgs):
            try:
                s.sendmail(SENDER, [rcpt], msg)
                accepted.append(i)
            except smtplib.SMTPResponseException as e:
                print(f"  not accepted: {label}: {e.smtp_code} {e.smtp_error[:80]!r}")
                s.rset()
            except (smtplib.SMTPException, OSError) as e:
                print(f"  not accepted: {label}: {e}")
                s.close()
                s = smtplib.SMTP(srv.smtp_host, srv.smtp_port, timeout=60)
    finally:
        try:
            s.quit()
        except (smtplib.SMTPException, OSError):
            pass
    return accepted


def imap_login(host, port, user, password):
    m = imaplib.IMAP4(host, port, timeout=120)
    m.login(user, password)
    return m


def wait_ingested(srv, timeout=600):
    """Until the inbound queue has nothing left to ingest."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        conn = srv.db()
        try:
            left = conn.execute("SELECT COUNT(*) FROM inbound_queue WHERE state = 'queued'").fetchone()[0]
        finally:
            conn.close()
        if left == 0:
            return
        time.sleep(0.3)
    raise RuntimeError(f"ingest not done after {timeout}s")


class Dovecot:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="bc-dovecot-")
        out = subprocess.run([os.path.join(HERE, "dovecot.sh"), "start", self.dir],
                             capture_output=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError("Dovecot did not start: " + out.stderr.decode(errors="replace"))
        fields = dict(kv.split("=", 1) for kv in out.stdout.decode().split())
        self.port = int(fields["port"])
        self.owner = fields["owner"]

    def load(self, msgs, dates):
        """Writes the messages into the user's maildir, in order, with these received dates."""
        md = os.path.join(self.dir, "home", DOVECOT_USER, "Maildir")
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(md, sub), exist_ok=True)
        for i, msg in enumerate(msgs):
            path = os.path.join(md, "cur", f"{1_000_000_000 + i}.M{i}P1.compare:2,")
            with open(path, "wb") as f:
                f.write(msg)
            os.utime(path, (dates[i], dates[i]))
        if os.getuid() == 0:
            subprocess.run(["chown", "-R", f"{self.owner}:", os.path.join(self.dir, "home")],
                           check=True)

    def stop(self):
        subprocess.run([os.path.join(HERE, "dovecot.sh"), "stop", self.dir], timeout=60)
        if os.environ.get("BC_KEEP_TMP"):
            print(f"  (kept {self.dir})")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Comparing


class Tally:
    def __init__(self):
        self.checked = collections.Counter()
        self.mismatch = collections.Counter()
        self.known = collections.Counter()
        self.examples = []

    def compare(self, what, seq, label, ours, theirs, names=("backchannel", "dovecot")):
        self.checked[what] += 1
        if ours == theirs:
            return True
        self.mismatch[what] += 1
        if len(self.examples) < 25:
            self.examples.append(f"{what} #{seq} {label}\n      {names[1]:11} {theirs!r:.400}\n"
                                 f"      {names[0]:11} {ours!r:.400}")
        return False


def cr_only(msg):
    return b"\n" not in msg.rstrip(b"\r\n")


def compare_messages(tally, bc, dv, labels, msgs):
    items = "(ENVELOPE BODYSTRUCTURE BODY RFC822.SIZE BODY.PEEK[])"
    dv.fetch("1:*", "(BODYSTRUCTURE BODY)")  # warm Dovecot's cache (see the module doc)
    theirs = parse_fetch(dv.fetch("1:*", items)[1])
    ours = parse_fetch(bc.fetch("1:*", items)[1])
    for seq in range(1, len(labels) + 1):
        a, b = ours.get(seq, {}), theirs.get(seq, {})
        for name in ("ENVELOPE", "BODYSTRUCTURE", "BODY", "RFC822.SIZE", "BODY[]"):
            va, vb = a.get(name), b.get(name)
            if name.startswith("BODY") and name != "BODY[]":
                va, vb = norm_structure(va, tally.known), norm_structure(vb, collections.Counter())
            tally.compare(name, seq, labels[seq - 1], va, vb)
    # Sections, message by message.
    for seq in range(1, len(labels) + 1):
        bs = theirs.get(seq, {}).get("BODYSTRUCTURE")
        if bs is None:
            continue
        spec = section_items(bs)
        b = parse_fetch(dv.fetch(str(seq), spec)[1]).get(seq, {})
        a = parse_fetch(bc.fetch(str(seq), spec)[1]).get(seq, {})
        for name in sorted(set(a) | set(b)):
            if not name.startswith("BODY["):
                continue
            va, vb = a.get(name, "MISSING"), b.get(name, "MISSING")
            # A part that does not exist: Dovecot sends "" (with the origin of a partial fetch,
            # "BODY[9]<0>"), backchannel NIL (without one).
            bare = re.sub(r"<\d+>$", "", name)
            if vb == b"" and (va is None or (va == "MISSING" and bare != name and a.get(bare, 0) is None)):
                tally.known["nil-section"] += 1
                va = b""
            if va != vb and ".FIELDS" in name and cr_only(msgs[seq - 1]) \
                    and isinstance(va, bytes) and isinstance(vb, bytes) \
                    and va.replace(b"\r", b"") == vb.replace(b"\r", b""):
                tally.known["cr-only-hdr"] += 1
                va = vb
            tally.compare("BODY[section]", seq, f"{labels[seq - 1]} {name}", va, vb)


def thread_of(m):
    typ, data = m.thread("REFERENCES", "UTF-8", "ALL")
    if typ != "OK":
        raise RuntimeError(f"THREAD: {typ} {data}")
    return b"".join(d for d in data if d)


def split_threads(line):
    out, depth, cur = [], 0, bytearray()
    for ch in line:
        if ch == ord("("):
            depth += 1
        if depth:
            cur.append(ch)
        if ch == ord(")"):
            depth -= 1
            if depth == 0:
                out.append(bytes(cur))
                cur = bytearray()
    return out


# ---------------------------------------------------------------------------------------------
# mbsync


def mbsync_pull(host, port, token, dest):
    cfg = os.path.join(dest, "mbsyncrc")
    local = os.path.join(dest, "mail")
    os.makedirs(local)
    with open(cfg, "w") as f:
        f.write(f"""IMAPAccount backchannel
Host {host}
Port {port}
User {ADMIN}
Pass {token}
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account backchannel

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel pull
Far :remote:
Near :local:
Patterns *
Create Near
Sync Pull
SyncState *
""")
    r = subprocess.run(["mbsync", "-c", cfg, "-a"], capture_output=True, timeout=600,
                       cwd=dest, env=dict(os.environ, HOME=dest))
    return r, local


def maildir_messages(local):
    """{mailbox name: Counter of sha256} of the Maildir tree mbsync wrote."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(local):
        base = os.path.basename(dirpath)
        if base not in ("cur", "new"):
            continue
        name = os.path.relpath(os.path.dirname(dirpath), local)
        c = out.setdefault(name, collections.Counter())
        for fn in filenames:
            with open(os.path.join(dirpath, fn), "rb") as f:
                body = without_tuid(lf(f.read()))
            h = hashlib.sha256(body).hexdigest()
            SAMPLES[h] = body
            c[h] += 1
    return out


SAMPLES = {}  # hash -> bytes, to show what differs


def lf(b):
    """Line ends as mbsync writes a Maildir: CRs before an LF dropped."""
    return re.sub(rb"\r+\n", b"\n", b)


def without_tuid(b):
    """mbsync adds its own `X-TUID:` line to the header of each message it stores."""
    return re.sub(rb"(?m)^X-TUID: [^\n]*\n", b"", b, count=1)


def imap_mailboxes(m):
    typ, data = m.list()
    names = []
    for line in data:
        v, _ = parse_value(b"(" + line + b")", 0)
        flags, name = v[0], v[2]
        if any(str(f).lower() == "\\noselect" for f in flags):
            continue
        names.append(name.decode() if isinstance(name, bytes) else str(name))
    return names


def imap_contents(m, mailbox, skipped):
    """Counter of message hashes in `mailbox`, without the UIDs mbsync said it skipped (it
    refuses a message whose header does not end, having nowhere to put its X-TUID line)."""
    typ, _ = m.select(f'"{mailbox}"', readonly=True)
    if typ != "OK":
        raise RuntimeError(f"SELECT {mailbox}: {typ}")
    typ, data = m.fetch("1:*", "(UID BODY.PEEK[])")
    c = collections.Counter()
    left_out = 0
    for v in parse_fetch(data).values():
        body = v.get("BODY[]") or b""
        if int(v.get("UID", 0)) in skipped and not has_header_end(body):
            left_out += 1
            continue
        h = hashlib.sha256(lf(body)).hexdigest()
        SAMPLES[h] = lf(body)
        c[h] += 1
    return c, left_out


def has_header_end(body):
    return b"\r\n\r\n" in body or body.startswith(b"\r\n")


# ---------------------------------------------------------------------------------------------


def sample(msgs):
    every = max(1, int(os.environ.get("IMAP_COMPARE_SAMPLE", "1")))
    if every == 1:
        return msgs
    keep = []
    for i, (label, m) in enumerate(msgs):
        head = m[:20000].lower()
        if i % every == 0 or b"multipart/" in head or b"message/rfc822" in head:
            keep.append((label, m))
    return keep


def main():
    root = corpus_dir()
    if not os.path.isdir(root):
        print(f"imap_compare: corpus {root} absent, skipped")
        return 0
    if not shutil.which("mbsync") or not os.path.exists("/usr/sbin/dovecot"):
        print("imap_compare: dovecot-imapd and isync are needed (tests/clients/dovecot.sh install)")
        return 1
    _, corpus = messages_of(root)
    corpus = sample([(label, m) for label, m in corpus if m])
    started = time.time()
    srv = Server(name="imap-compare")
    dovecot = None
    tmp = tempfile.mkdtemp(prefix="bc-mbsync-")
    tally = Tally()
    ok = True
    labels = []
    try:
        srv.start()
        token = admin_token(srv)
        imap_host, imap_port = ready_addrs(srv)["imap"].rsplit(":", 1)
        imap_port = int(imap_port)

        print(f"imap_compare: {len(corpus)} corpus messages to backchannel over SMTP")
        accepted = send_all(srv, corpus, UNROUTED_RCPT)
        print(f"  accepted {len(accepted)}; waiting for ingest")
        if not accepted:
            raise RuntimeError("backchannel accepted no message")
        wait_ingested(srv)

        # A side conversation, so INBOX and Tickets/<id> hold mail for mbsync.
        http(srv, "PUT", "/api/parents/CMP-1", token, {"subject": "compare"})
        sc = http(srv, "POST", "/api/parents/CMP-1/side-conversations", token,
                  {"to": ["vendor@vendor.example.net"], "subject": "Compare thread",
                   "body_text": "Hello vendor"})
        replies = [(f"reply {i}", f"From: vendor@vendor.example.net\r\nSubject: Re: Compare thread\r\n"
                    f"Message-ID: <cmp-reply-{i}@vendor.example.net>\r\n\r\nreply {i}\r\n".encode())
                   for i in range(3)]
        send_all(srv, replies, sc["reply_address"])
        wait_ingested(srv)

        # Unrouted holds the accepted messages ingest kept (it drops repeated deliveries of a
        # message it already has): match them to what was sent by content, in Unrouted's order.
        bc = imap_login(imap_host, imap_port, ADMIN, token)
        bc.select("Unrouted", readonly=True)
        got = parse_fetch(bc.fetch("1:*", "(INTERNALDATE BODY.PEEK[])")[1])
        by_content = {}
        for i in accepted:
            by_content.setdefault(served_form(stored_form(corpus[i][1])), i)
        msgs, labels, dates = [], [], []
        for seq in sorted(got):
            v = got[seq]
            i = by_content.get(v.get("BODY[]"))
            if i is None:
                tally.compare("Unrouted message", seq, "not one that was sent", v.get("BODY[]"), None)
                continue
            msgs.append(stored_form(corpus[i][1]))
            labels.append(corpus[i][0])
            when = v.get("INTERNALDATE")
            dates.append(datetime.datetime.strptime(when.decode(), "%d-%b-%Y %H:%M:%S %z").timestamp()
                         if isinstance(when, bytes) else time.time())
        print(f"  Unrouted holds {len(got)} of them ({len(accepted) - len(got)} repeated deliveries "
              "kept out by ingest)")

        dovecot = Dovecot()
        dovecot.load(msgs, dates)
        dv = imap_login("127.0.0.1", dovecot.port, DOVECOT_USER, "pass")
        dv.select("INBOX", readonly=True)

        compare_messages(tally, bc, dv, labels, msgs)

        t_ours, t_theirs = thread_of(bc), thread_of(dv)
        threads = split_threads(t_theirs)
        tally.compare("THREAD", 0, f"{len(threads)} threads", t_ours, t_theirs)
        bc.logout()
        dv.logout()

        # mbsync: every mailbox, message for message.
        r, local = mbsync_pull(imap_host, imap_port, token, tmp)
        if r.returncode != 0:
            print("MISMATCH: mbsync failed:\n" + r.stderr.decode(errors="replace")[-2000:])
            ok = False
        else:
            pulled = maildir_messages(local)
            skipped = {int(n) for n in re.findall(
                rb"message (\d+) from far side has incomplete header", r.stdout + r.stderr)}
            m = imap_login(imap_host, imap_port, ADMIN, token)
            boxes = imap_mailboxes(m)
            for box in boxes:
                want, left_out = imap_contents(m, box, skipped)
                tally.known["mbsync-no-header-end"] += left_out
                have = pulled.get(box, collections.Counter())
                missing, extra = want - have, have - want
                tally.checked["mbsync mailbox"] += 1
                if missing or extra:
                    tally.mismatch["mbsync mailbox"] += 1
                    tally.examples.append(
                        f"mbsync {box}: {sum(missing.values())} of {sum(want.values())} messages not "
                        f"pulled as served, {sum(extra.values())} pulled that the server does not have"
                        + "".join(f"\n      not pulled: {SAMPLES[h][:200]!r}" for h in list(missing)[:2])
                        + "".join(f"\n      extra:      {SAMPLES[h][:200]!r}" for h in list(extra)[:2]))
            for box in pulled:
                if box not in boxes:
                    tally.compare("mbsync mailbox", 0, f"{box} (not on the server)", box, None)
            m.logout()
            print(f"  mbsync pulled {', '.join(f'{b}: {sum(pulled.get(b, {}).values())}' for b in boxes)}")
            benign = ("has incomplete header; skipping", "no UIDVALIDITY, creating new",
                      "Password is being sent in the clear")
            said = [line for line in (r.stdout + r.stderr).decode(errors="replace").splitlines()
                    if line.strip() and not any(b in line for b in benign)]
            if skipped:
                print(f"  mbsync skipped {len(skipped)} messages whose header never ends (its rule)")
            if said:
                print("  mbsync said: " + "\n    ".join(said[-20:]))
        panics = srv.panics()
        if panics:
            print("MISMATCH: backchannel panicked: " + "; ".join(panics))
            ok = False
    finally:
        if dovecot:
            dovecot.stop()
        srv.stop()
        srv.cleanup()
        if os.environ.get("BC_KEEP_TMP"):
            print(f"  (kept {tmp})")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"imap_compare: {len(labels)} messages, {time.time() - started:.0f}s")
    for what in tally.checked:
        print(f"  {what:16} {tally.checked[what]:6} compared, {tally.mismatch[what]} different")
    if tally.known:
        print("  known differences (normalised): "
              + ", ".join(f"{k} {v}" for k, v in sorted(tally.known.items())))
    for e in tally.examples:
        print("  MISMATCH " + e)
    if tally.mismatch or not ok:
        print("imap_compare: FAILED")
        return 1
    print("imap_compare: backchannel and Dovecot agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
