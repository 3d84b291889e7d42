#!/usr/bin/env python3
"""Delivers the shared email corpus to a real backchannel over SMTP and
checks that every accepted message is stored byte-identical.

Corpus: <repo>/../shared/corpus (or $BACKCHANNEL_CORPUS); absent -> notice, exit 0.

Messages: every data file of the corpus (metadata files MANIFEST.tsv,
EXPECTED.md, SOURCES.md, COPYING and the expected-output *.json excluded).
`*.mbox` files and sisimai `mailbox/` files are split on `From ` lines;
other files are one message each (bare bodies without headers included),
with a leading mbox `From ` line stripped.

Passes, all against one server:
  1. smtplib, CRLF-normalised: each message with its line endings turned into
     CRLF (what smtplib does for str messages, and what an MTA sends);
     expected stored bytes = the normalised message, ending in CRLF.
  2. smtplib, bytes as they are: every message that has bare LF or bare CR
     line endings is sent again unchanged (smtplib only dot-stuffs bytes);
     the gateway keeps the bytes as received, so expected = the message
     itself plus the CRLF smtplib appends when it does not end in CRLF.
  3. swaks: a sample of ~50 files with `swaks --data @file`; swaks rewrites
     the data (header lines rebuilt with CRLF, `\\n` and %TOKENS% expanded,
     a leading `From ` line and a trailing `.` line removed, LF -> CRLF,
     leading dots doubled); the expected bytes follow that rewriting (see
     swaks_wire) and the receiving-side unstuffing of RFC 5321 §4.5.2.
     Files with no LF at all (CR-only) are not sampled: swaks then takes the
     data for a file name and exits 1 without connecting.
Then inbound_queue must hold exactly the accepted messages (as a multiset of
sha256), each byte-identical.
"""

import collections
import concurrent.futures
import os
import queue
import re
import shutil
import smtplib
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bc_harness import CRLF, DOMAIN, REPO, Server, sha256, smtp_unstuff  # noqa: E402

RCPT = f"reply@{DOMAIN}"
SENDER = "corpus@client.example.org"
THREADS = 8
SWAKS_SAMPLE = 50
SKIP_NAMES = {"MANIFEST.tsv", "EXPECTED.md", "SOURCES.md", "COPYING"}


def corpus_dir():
    env = os.environ.get("BACKCHANNEL_CORPUS")
    return env or os.path.normpath(os.path.join(REPO, "..", "shared", "corpus"))


def data_files(root):
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name in SKIP_NAMES or name.endswith(".json") or name.startswith("."):
                continue
            out.append(os.path.join(dirpath, name))
    return sorted(out)


def is_mbox(path):
    return path.endswith(".mbox") or os.path.basename(os.path.dirname(path)) == "mailbox"


def strip_from_line(data):
    if data.startswith(b"From "):
        nl = data.find(b"\n")
        return b"" if nl < 0 else data[nl + 1 :]
    return data


def split_mbox(data):
    """Messages of an mbox: split before every line starting `From `; the
    separator line is dropped and so is the blank line before it."""
    starts = [m.start() for m in re.finditer(rb"(?m)^From ", data)]
    chunks = []
    if not starts:
        return [data] if data else []
    if starts[0] > 0 and data[: starts[0]].strip():
        chunks.append(data[: starts[0]])
    for i, s in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(data)
        chunks.append(strip_from_line(data[s:end]))
    out = []
    for i, c in enumerate(chunks):
        if i + 1 < len(chunks):
            for sep in (b"\r\n\r\n", b"\n\n"):
                if c.endswith(sep):
                    c = c[: -len(sep) // 2]
                    break
        out.append(c)
    return out


def messages_of(root):
    files = data_files(root)
    msgs = []  # (label, bytes)
    for path in files:
        with open(path, "rb") as f:
            data = f.read()
        rel = os.path.relpath(path, root)
        if is_mbox(path):
            for i, m in enumerate(split_mbox(data)):
                msgs.append((f"{rel}#{i + 1}", m))
        else:
            msgs.append((rel, strip_from_line(data)))
    return files, msgs


def crlf_normalise(data):
    # smtplib._fix_eols, for bytes
    return re.sub(rb"(?:\r\n|\n|\r(?!\n))", CRLF, data)


def smtplib_wire(msg):
    """What smtplib.SMTP.data() puts on the wire for bytes `msg`."""
    q = smtplib._quote_periods(msg)
    if q[-2:] != CRLF:
        q += CRLF
    return q + b"." + CRLF


def expected_after(wire, label):
    content, rest = smtp_unstuff(wire)
    if content is None or rest:
        raise ValueError(f"{label}: the wire form ends the data early")
    return content


# ----------------------------------------------------------------------------
# swaks


SWAKS_TOKENS = [b"%BODY%", b"%NEWLINE%", b"%FROM_ADDRESS%", b"%TO_ADDRESS%", b"%MESSAGEID%",
                b"%SWAKS_VERSION%", b"%DATE%", b"%NEW_HEADERS%", b"DUMP_AS_BODY_HAS_BEEN_SET",
                b"%RAW_PASSWORD_STRING%"]


def swaks_wire(data):
    """The DATA bytes swaks (20201014) sends for `--data @file` (its
    "data fixup"), replayed from its source: `\\n` -> CRLF, the header block
    (up to the first blank line) re-split on \\r?\\n and joined with CRLF,
    tokens expanded (files with tokens are not sampled), a leading
    `From ` line and a trailing dot line removed, `\\n.` -> `\\n..`, every LF
    not after CR -> CRLF, then `\\r\\n.` and the CRLF of the command."""
    d = data.replace(b"\\n", b"\r\n")
    m = re.match(rb"\A(.*?)\r?\n\r?\n", d, re.S)
    if m:
        header, d = m.group(1), d[m.end():]
    else:
        header, d = d, b""
    lines = re.split(rb"\r?\n", header)
    while lines and lines[-1] == b"":  # perl split drops trailing empty fields
        lines.pop()
    d = b"".join(line + b"\r\n" for line in lines) + b"\r\n" + d
    d = re.sub(rb"\\n|%NEWLINE%", b"\r\n", d)
    d = re.sub(rb"\AFrom [^\n]*\n", b"", d, count=1)
    d = re.sub(rb"\r?\n\.\r?\n?$", b"", d, count=1, flags=re.S)
    d = d.replace(b"\n.", b"\n..")
    d = re.sub(rb"([^\r])\n", rb"\1\r\n", d)
    d = re.sub(rb"([^\r])\n", rb"\1\r\n", d)
    return d + b"\r\n." + b"\r\n"


def line_kind(b):
    crlf = b.count(b"\r\n")
    lf = b.count(b"\n") - crlf
    cr = b.count(b"\r") - crlf
    return ("crlf" if crlf else "") + ("lf" if lf else "") + ("cr" if cr else "") or "none"


def swaks_sample(files):
    """~SWAKS_SAMPLE single-message files, spread over line-ending kinds and
    sources, deterministic."""
    by_kind = collections.defaultdict(list)
    for path in files:
        if is_mbox(path):
            continue
        with open(path, "rb") as f:
            data = f.read()
        if any(t in data for t in SWAKS_TOKENS):
            continue
        if not re.search(rb"\n|\\n|%NEWLINE%", data):
            # swaks takes data without any newline for a file name to open
            # (its deprecated inference, applied even after `@file`): it
            # cannot send such a file, e.g. the CR-only sisimai messages
            continue
        by_kind[line_kind(data)].append(path)
    kinds = sorted(by_kind)
    share = max(1, SWAKS_SAMPLE // len(kinds))
    picked = []
    for k in kinds:
        paths = by_kind[k]
        n = min(len(paths), share)
        picked += [paths[(i * len(paths)) // n] for i in range(n)]
    rest = [p for k in kinds for p in by_kind[k] if p not in set(picked)]
    need = SWAKS_SAMPLE - len(picked)
    if need > 0 and rest:
        picked += [rest[(i * len(rest)) // need] for i in range(min(need, len(rest)))]
    return sorted(set(picked))


# ----------------------------------------------------------------------------


class Delivery:
    __slots__ = ("label", "pas", "msg", "expected", "accepted", "error", "queue_id")

    def __init__(self, label, pas, msg, expected):
        self.label, self.pas, self.msg, self.expected = label, pas, msg, expected
        self.accepted = False
        self.error = None
        self.queue_id = None


def smtplib_deliver_all(srv, deliveries):
    """Sends every delivery with smtplib over THREADS persistent connections."""
    work = queue.Queue()
    for d in deliveries:
        work.put(d)
    host, port = srv.addr

    def connect():
        s = smtplib.SMTP(host, port, local_hostname="corpus.client.example.org", timeout=60)
        s.ehlo()
        return s

    def worker():
        s = None
        while True:
            try:
                d = work.get_nowait()
            except queue.Empty:
                break
            try:
                if s is None:
                    s = connect()
                opts = ["BODY=8BITMIME"] if any(b > 127 for b in d.msg) else []
                # smtplib.sendmail, keeping the DATA reply (for the queue id)
                opts = ["SIZE=%d" % len(d.msg)] + opts
                code, resp = s.mail(SENDER, opts)
                if code != 250:
                    raise smtplib.SMTPSenderRefused(code, resp, SENDER)
                code, resp = s.rcpt(RCPT)
                if code not in (250, 251):
                    raise smtplib.SMTPRecipientsRefused({RCPT: (code, resp)})
                code, resp = s.data(d.msg)
                if code != 250:
                    raise smtplib.SMTPDataError(code, resp)
                d.accepted = True
                m = re.search(rb"queued as (\d+)", resp)
                d.queue_id = int(m.group(1)) if m else None
            except (smtplib.SMTPException, OSError) as e:
                d.error = f"{type(e).__name__}: {e}"
                try:
                    if s is not None:
                        s.rset()
                except (smtplib.SMTPException, OSError):
                    try:
                        s.close()
                    except Exception:  # noqa: BLE001
                        pass
                    s = None
        if s is not None:
            try:
                s.quit()
            except (smtplib.SMTPException, OSError):
                pass

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def swaks_deliver(srv, path, label):
    try:
        with open(path, "rb") as f:
            data = f.read()
        expected = expected_after(swaks_wire(data), label)
    except ValueError as e:
        d = Delivery(label, "swaks", b"", b"")
        d.error = f"not sampled: {e}"
        return d
    d = Delivery(label, "swaks", data, expected)
    host, port = srv.addr
    cmd = [
        "swaks", "--server", f"{host}:{port}", "--to", RCPT, "--from", "x@y.z",
        "--helo", "swaks.client.example.org", "--timeout", "60", "--data", "@" + path,
    ]
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=120)
    except subprocess.TimeoutExpired:
        d.error = "swaks timed out"
        return d
    out = r.stdout.decode("utf-8", "replace")
    # the reply swaks printed after the final dot (" -> ." then "<-  250 ...")
    lines = out.splitlines()
    dots = [i for i, line in enumerate(lines) if line.rstrip() in (" -> .", "~> .")]
    reply = None
    if dots:
        for line in lines[dots[-1] + 1:]:
            m = re.match(r"^<(?:-|~|\*\*) +(\d{3})[ -](.*)$", line)
            if m:
                reply = m
                break
    if r.returncode != 0:
        d.error = f"swaks exit {r.returncode}: " + " | ".join(out.strip().splitlines()[-4:])
    elif reply is None or reply.group(1) != "250":
        d.error = "no 250 after the data: " + " | ".join(out.strip().splitlines()[-4:])
    else:
        d.accepted = True
        q = re.search(r"queued as (\d+)", reply.group(2))
        d.queue_id = int(q.group(1)) if q else None
    return d


def main():
    root = corpus_dir()
    if not os.path.isdir(root):
        print(f"corpus not found at {root}: nothing to deliver (notice only)")
        print("0 passed, 0 failed")
        return 0
    t0 = time.time()
    files, msgs = messages_of(root)
    failures = []
    passed = 0

    deliveries = []
    for label, m in msgs:
        norm = crlf_normalise(m)
        exp = expected_after(smtplib_wire(norm), label)
        assert exp == (norm if norm.endswith(CRLF) else norm + CRLF), label
        deliveries.append(Delivery(label, "crlf", norm, exp))
    raw_deliveries = []
    for label, m in msgs:
        if crlf_normalise(m) != m:
            exp = expected_after(smtplib_wire(m), label)
            assert exp == (m if m.endswith(CRLF) else m + CRLF), label
            raw_deliveries.append(Delivery(label, "as-is", m, exp))

    have_swaks = shutil.which("swaks") is not None
    sample = swaks_sample(files) if have_swaks else []

    srv = Server(name="corpus").start()
    try:
        smtplib_deliver_all(srv, deliveries + raw_deliveries)
        t_smtp = time.time() - t0
        swaks_deliveries = []
        if have_swaks:
            with concurrent.futures.ThreadPoolExecutor(4) as ex:
                swaks_deliveries = list(ex.map(lambda p: swaks_deliver(srv, p, os.path.relpath(p, root)), sample))
        # a delivery that could not be sampled is not a delivery
        skipped = [d for d in swaks_deliveries if d.error and d.error.startswith("not sampled")]
        swaks_deliveries = [d for d in swaks_deliveries if d not in skipped]
        all_d = deliveries + raw_deliveries + swaks_deliveries

        rows = srv.rows()
        by_id = {r["id"]: r for r in rows}
        stored = collections.Counter()
        bad_rows = []
        for r in rows:
            h = sha256(r["raw"])
            if h != r["sha256"] or r["size"] != len(r["raw"]):
                bad_rows.append(r["id"])
            stored[h] += 1
        left = stored.copy()
        identical = collections.Counter()
        accepted = collections.Counter()
        for d in all_d:
            if not d.accepted:
                failures.append(f"[{d.pas}] {d.label}: not accepted: {d.error}")
                continue
            accepted[d.pas] += 1
            h = sha256(d.expected)
            if left[h] > 0:
                left[h] -= 1
                identical[d.pas] += 1
                passed += 1
                continue
            detail = ""
            row = by_id.get(d.queue_id)
            if row is not None:
                a, b = row["raw"], d.expected
                i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                detail = (f" (queue id {d.queue_id}: {len(a)} bytes stored vs {len(b)} expected, first difference at "
                          f"{i}: stored {a[max(0, i - 16):i + 24]!r} expected {b[max(0, i - 16):i + 24]!r})")
            failures.append(f"[{d.pas}] {d.label}: answered 250 but not stored byte-identical{detail}")
        extra = sum(left.values())
        if extra:
            failures.append(f"{extra} stored message(s) match no accepted delivery")
        else:
            passed += 1
        if bad_rows:
            failures.append(f"rows with a wrong sha256/size column: {bad_rows[:10]}")
        else:
            passed += 1
        if not have_swaks:
            failures.append("swaks is not installed (apt-get install -y swaks): swaks sample not delivered")
        rc = srv.stop()
        if rc != 0:
            failures.append(f"server exit code {rc} after SIGTERM:\n{srv.log_tail()}")
        else:
            passed += 1
        # SPEC §10: bad input never makes a panic (e.g. in the ingest worker)
        panics = srv.panics()
        if panics:
            failures.append(f"server log has {len(panics)} distinct panic(s) while taking the corpus: "
                            + " | ".join(panics[:5]))
        else:
            passed += 1
    finally:
        srv.cleanup()

    n_files = len(files)
    print(f"corpus: {root}")
    print(f"files: {n_files}, messages: {len(msgs)}")
    print(f"smtplib crlf-normalised: messages {len(deliveries)}, accepted {accepted['crlf']}, identical {identical['crlf']}")
    print(f"smtplib as-is (bare LF/CR): messages {len(raw_deliveries)}, accepted {accepted['as-is']}, "
          f"identical {identical['as-is']}")
    print(f"swaks sample: files {len(swaks_deliveries)} (+{len(skipped)} not modelled), accepted {accepted['swaks']}, "
          f"identical {identical['swaks']}")
    for s in skipped:
        print(f"  swaks skipped {s.label}: {s.error}")
    total_msgs = len(all_d)
    print(f"totals: files {n_files}, messages {total_msgs}, accepted {sum(accepted.values())}, "
          f"identical {sum(identical.values())}, stored rows {len(rows)}, {time.time() - t0:.1f}s "
          f"(smtplib passes {t_smtp:.1f}s)")
    for f in failures[:200]:
        print("FAIL " + f)
    if len(failures) > 200:
        print(f"... and {len(failures) - 200} more failures")
    print(f"{passed} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
