"""Crash-consistency test of backchannel (SPEC §10, issue 11).

Runs the real `backchannel serve` binary under continuous load and kills it
with SIGKILL at random moments, restarting it on the same data directory
each time. Three flows run at once:

- inbound: several concurrent SMTP sessions send replies with a unique
  marker each, to real side conversations (by `reply+<token>` and by
  In-Reply-To) and unrouted; every message answered 250 is recorded. A
  message not answered 250 is sent again with the same bytes half of the
  time, as a real MTA would, and abandoned otherwise.
- outbound: side conversations are started (and followed up) through the
  HTTP API with outbound mode `relay` to a local SMTP sink that records
  every message it accepts, answers slowly and sometimes 451.
- webhooks: one endpoint registered through the API, a local HTTP receiver
  that records every delivery it accepts (by X-Backchannel-Delivery),
  answers slowly and sometimes 500.

After the kills the load stops, the server runs until every queue is
drained, stops with SIGTERM, and the SQLite file (read-only) and the HTTP
API are checked:

- every acknowledged inbound message is stored exactly once, on the thread
  it was sent to (or unrouted), with each effect exactly once: the activity
  entry, the `message.received` event, the notification, the agent-view
  placements, the sender among the participants; a message never
  acknowledged is stored whole or not at all;
- every acknowledged side-conversation start / follow-up is stored once with
  its outbox rows, activity entry and events; every outbox row is `sent`
  and the sink got each (message, recipient) at least once, duplicates
  carrying the same Message-ID and bytes;
- every webhook delivery is `delivered` and the receiver got it at least
  once, duplicates carrying the same delivery id and body.

Prints the tallies; exits 1 on any loss, double effect or half-stored
message. Only 127.0.0.1 is contacted.
"""

import argparse
import atexit
import base64
import email.utils
import hashlib
import hmac
import http.server
import json
import os
import random
import re
import shutil
import signal
import smtplib
import socket
import socketserver
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "clients"))
from bc_harness import StubDns, find_binary  # noqa: E402

DOMAIN = "gw.example.com"
AGENT = "agent@helpdesk.example"
WEBHOOK_SECRET = "crash-test-secret"


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------
# The outbound side: an SMTP sink standing in for the relay.


class Sink:
    """Accepts mail on 127.0.0.1 and records every message it answers 250.

    Like a real MTA it records (commits) a message before answering 250, so
    a sender killed between our 250 and its own commit sends it again: the
    duplicates of at-least-once delivery."""

    def __init__(self, rng, delay_max, fail_rate):
        self.rng = rng
        self.delay_max = delay_max
        self.fail_rate = fail_rate
        self.lock = threading.Lock()
        self.received = []  # dicts: mail_from, rcpts, message_id, sha, subject
        self.in_transaction = 0  # sessions between MAIL and the end of DATA
        self.cut = 0  # sessions that ended inside a transaction
        self.refused = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn):
        conn.settimeout(120)
        f = conn.makefile("rb")
        in_txn = False
        mail_from, rcpts = None, []

        def say(line):
            conn.sendall(line.encode() + b"\r\n")

        try:
            say("220 sink.example ESMTP")
            while True:
                line = f.readline()
                if not line:
                    return
                cmd = line.decode("utf-8", "replace").strip()
                verb = cmd[:4].upper()
                if verb in ("EHLO", "HELO"):
                    conn.sendall(b"250-sink.example\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 52428800\r\n")
                elif verb == "MAIL":
                    mail_from = cmd[10:].split(">")[0].lstrip("<")
                    rcpts = []
                    if not in_txn:
                        in_txn = True
                        with self.lock:
                            self.in_transaction += 1
                    say("250 2.1.0 ok")
                elif verb == "RCPT":
                    rcpts.append(cmd[8:].split(">")[0].lstrip("<").lower())
                    say("250 2.1.5 ok")
                elif verb == "DATA":
                    say("354 go ahead")
                    data = []
                    while True:
                        dl = f.readline()
                        if not dl:
                            return
                        if dl in (b".\r\n", b".\n"):
                            break
                        if dl.startswith(b"."):
                            dl = dl[1:]
                        data.append(dl)
                    raw = b"".join(data)
                    time.sleep(self.rng.uniform(0, self.delay_max))
                    if self.rng.random() < self.fail_rate:
                        with self.lock:
                            self.refused += 1
                        say("451 4.3.0 try again later")
                    else:
                        m = re.search(rb"(?im)^message-id:\s*<([^>]+)>", raw)
                        s = re.search(rb"(?im)^subject:\s*(.*?)\r?$", raw)
                        with self.lock:
                            self.received.append(
                                {
                                    "mail_from": mail_from,
                                    "rcpts": list(rcpts),
                                    "message_id": m.group(1).decode() if m else None,
                                    "subject": s.group(1).decode("utf-8", "replace") if s else "",
                                    "sha": hashlib.sha256(raw).hexdigest(),
                                }
                            )
                        say("250 2.0.0 queued")
                    in_txn = False
                    with self.lock:
                        self.in_transaction -= 1
                elif verb == "RSET":
                    if in_txn:
                        in_txn = False
                        with self.lock:
                            self.in_transaction -= 1
                    say("250 2.0.0 ok")
                elif verb == "NOOP":
                    say("250 2.0.0 ok")
                elif verb == "QUIT":
                    say("221 2.0.0 bye")
                    return
                else:
                    say("502 5.5.1 not implemented")
        except OSError:
            pass
        finally:
            if in_txn:
                with self.lock:
                    self.in_transaction -= 1
                    self.cut += 1
            try:
                conn.close()
            except OSError:
                pass

    def busy(self):
        with self.lock:
            return self.in_transaction > 0


# --------------------------------------------------------------------------
# The webhook receiver.


class Receiver:
    """Records every webhook delivery it answers 2xx (by delivery id)."""

    def __init__(self, rng, delay_max, fail_rate):
        self.rng = rng
        self.delay_max = delay_max
        self.fail_rate = fail_rate
        self.lock = threading.Lock()
        self.received = []  # dicts: delivery, event, sha, signature_ok
        self.in_flight = 0
        self.refused = 0
        self.bad_signatures = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                with outer.lock:
                    outer.in_flight += 1
                try:
                    n = int(self.headers.get("Content-Length") or 0)
                    body = self.rfile.read(n)
                    time.sleep(outer.rng.uniform(0, outer.delay_max))
                    if outer.rng.random() < outer.fail_rate:
                        with outer.lock:
                            outer.refused += 1
                        status = 500
                    else:
                        want = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
                        sig_ok = hmac.compare_digest(want, self.headers.get("X-Backchannel-Signature", ""))
                        with outer.lock:
                            if not sig_ok:
                                outer.bad_signatures += 1
                            outer.received.append(
                                {
                                    "delivery": self.headers.get("X-Backchannel-Delivery"),
                                    "event": self.headers.get("X-Backchannel-Event"),
                                    "sha": hashlib.sha256(body).hexdigest(),
                                }
                            )
                        status = 200
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass
                finally:
                    with outer.lock:
                        outer.in_flight -= 1

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def handle_error(self, request, client_address):
                pass  # a sender killed mid-request: expected here

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def busy(self):
        with self.lock:
            return self.in_flight > 0


# --------------------------------------------------------------------------
# The server process.


class Gateway:
    def __init__(self, binary, workdir, sink_port, dns_port):
        self.binary = binary
        self.dir = workdir
        self.data_dir = os.path.join(workdir, "data")
        self.db_path = os.path.join(self.data_dir, "backchannel.db")
        self.ready = os.path.join(workdir, "ready.json")
        self.log_path = os.path.join(workdir, "server.log")
        self.config = os.path.join(workdir, "backchannel.toml")
        with open(self.config, "w") as f:
            f.write(
                "\n".join(
                    [
                        f'domain = "{DOMAIN}"',
                        f'data_dir = "{self.data_dir}"',
                        "[smtp]",
                        'listen = "127.0.0.1:0"',
                        "max_connections_per_ip = 1000",
                        'shutdown_grace = "5s"',
                        "[http]",
                        'listen = "127.0.0.1:0"',
                        # Not the fixed default port (9090): runs must not clash.
                        'metrics_listen = "127.0.0.1:0"',
                        "[imap]",
                        'listen = "127.0.0.1:0"',
                        "[submission]",
                        'listen = "127.0.0.1:0"',
                        "[outbound]",
                        'mode = "relay"',
                        f'relay_url = "smtp://127.0.0.1:{sink_port}"',
                        'retry_schedule = ["1s"]',
                        'send_timeout = "20s"',
                        "[notifications]",
                        'batch_window = "1s"',
                        # Every reply is checked to be listed in exactly one
                        # notification email: list them all.
                        "max_replies_per_email = 100000",
                        "[webhooks]",
                        'timeout = "5s"',
                        'retry_schedule = ["1s"]',
                        # The receiver answers slowly on purpose: let it
                        # take as many attempts at once as the whole pool.
                        "concurrency = 8",
                        "per_endpoint = 8",
                        # The receiver is on loopback (SPEC §10).
                        'allow_destinations = ["127.0.0.0/8"]',
                        "[dns]",
                        f'nameservers = ["127.0.0.1:{dns_port}"]',
                        'timeout = "1s"',
                    ]
                )
                + "\n"
            )
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BACKCHANNEL_")}
        self.env.setdefault("RUST_LOG", "warn")
        self.proc = None
        self.smtp = None
        self.http = None
        self.generation = 0
        self.up = threading.Event()
        self.logf = open(self.log_path, "ab")

    def add_user(self):
        r = subprocess.run(
            [self.binary, "--config", self.config, "user", "add", "--email", AGENT, "--name", "Agent", "--role", "owner"],
            capture_output=True,
            env=self.env,
            cwd=self.dir,
            timeout=60,
        )
        if r.returncode != 0:
            raise SystemExit(f"user add failed: {r.stderr.decode(errors='replace')}")
        return r.stdout.decode().strip().splitlines()[-1].strip()

    def start(self, timeout=60):
        if os.path.exists(self.ready):
            os.unlink(self.ready)
        self.proc = subprocess.Popen(
            [self.binary, "--config", self.config, "serve", "--ready-file", self.ready],
            stdout=self.logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=self.dir,
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if os.path.exists(self.ready):
                with open(self.ready) as f:
                    addrs = json.load(f)
                h, p = addrs["smtp"].rsplit(":", 1)
                self.smtp = (h, int(p))
                h, p = addrs["http"].rsplit(":", 1)
                self.http = (h, int(p))
                assert self.smtp[0] == "127.0.0.1" and self.http[0] == "127.0.0.1", addrs
                self.generation += 1
                self.up.set()
                return
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited with {self.proc.returncode} before ready:\n{self.log_tail()}")
            time.sleep(0.01)
        self.proc.kill()
        raise SystemExit(f"no ready file after {timeout}s:\n{self.log_tail()}")

    def kill_early(self, after):
        """Starts the server and kills it `after` seconds later, ready or
        not: a crash during start-up (migrations, recovery of the last
        run's in-flight work)."""
        if os.path.exists(self.ready):
            os.unlink(self.ready)
        proc = subprocess.Popen(
            [self.binary, "--config", self.config, "serve", "--ready-file", self.ready],
            stdout=self.logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=self.dir,
        )
        time.sleep(after)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def kill(self):
        self.up.clear()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def term_then_kill(self, after):
        """SIGTERM, then SIGKILL `after` seconds later if it has not exited
        by then: a crash in the middle of a clean shutdown. Returns the exit
        code, or None when it had to be killed."""
        self.up.clear()
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=after)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            return None

    def stop(self):
        self.up.clear()
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return "timeout"

    def log_tail(self, n=4000):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def panics(self):
        with open(self.log_path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        return [line for line in text.splitlines() if "panicked at" in line]

    def db(self):
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)
        conn.execute("PRAGMA busy_timeout = 30000")
        return conn

    def api(self, method, path, token, body=None, timeout=15):
        """(status, json) or raises OSError / urllib errors."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"http://{self.http[0]}:{self.http[1]}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            payload = e.read()
            try:
                return e.code, json.loads(payload or b"null")
            except ValueError:
                return e.code, None


# --------------------------------------------------------------------------
# Load.


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.stop = threading.Event()
        # side conversations known to exist (acknowledged starts)
        self.threads = []  # dicts: id, token, to, message_id, marker
        # inbound: marker -> dict(kind, sc, from, mid, acked, tries)
        self.inbound = {}
        # outbound: marker -> dict(op, sc, acked, recipients)
        self.outbound = {}
        self.smtp_in_transaction = 0
        self.counts = {"smtp_sessions": 0, "smtp_errors": 0, "api_errors": 0}

    def bump(self, key, n=1):
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + n


def is_connect_refused(e):
    if isinstance(e, ConnectionRefusedError):
        return True
    reason = getattr(e, "reason", None)
    return isinstance(reason, ConnectionRefusedError)


def permanent(e):
    """Whether an smtplib error carries a 5xx reply."""
    if isinstance(e, smtplib.SMTPRecipientsRefused):
        return any(code >= 500 for code, _ in e.recipients.values())
    code = getattr(e, "smtp_code", None)
    return isinstance(code, int) and code >= 500


def compose_inbound(marker, st, rng):
    """Picks a kind and target for a new inbound message; returns its record."""
    with st.lock:
        threads = list(st.threads)
    r = rng.random()
    if threads and r < 0.65:
        t = rng.choice(threads)
        kind = "token"
    elif threads and r < 0.8:
        t = rng.choice(threads)
        kind = "references"
    else:
        t = None
        kind = "unrouted"
    if t is not None and rng.random() < 0.85:
        sender = t["to"]
    else:
        sender = f"new-{marker}@vendor.example"
    rcpt = f"reply+{t['token']}@{DOMAIN}" if kind == "token" else f"reply@{DOMAIN}"
    headers = [
        f'From: "Vendor {marker}" <{sender}>',
        f"To: {rcpt}",
        f"Subject: crash test {marker}",
        f"Message-ID: <{marker}@vendor.example>",
        f"Date: {email.utils.formatdate()}",
    ]
    if kind == "references":
        headers.append(f"In-Reply-To: <{t['message_id']}>")
        headers.append(f"References: <{t['message_id']}>")
    headers.append("MIME-Version: 1.0")
    text = f"Reply {marker} from the crash test.\r\n" + ("Some filler text to make it a real message.\r\n" * rng.randint(1, 40))
    attachment = rng.random() < 0.05
    if attachment:
        # A large one now and then: a longer commit to be killed in.
        blob = base64.encodebytes(rng.randbytes(rng.randint(1000, 400_000))).decode().replace("\n", "\r\n")
        headers.append('Content-Type: multipart/mixed; boundary="b-crash"')
        body = (
            "--b-crash\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + text
            + f'--b-crash\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename="{marker}.bin"\r\n'
            + "Content-Transfer-Encoding: base64\r\n\r\n" + blob + "--b-crash--\r\n"
        )
    else:
        headers.append("Content-Type: text/plain; charset=utf-8")
        body = text
    raw = ("\r\n".join(headers) + "\r\n\r\n" + body).encode()
    return {
        "kind": kind,
        "sc": t["id"] if t else None,
        "from": sender,
        "rcpt": rcpt,
        "raw": raw,
        "acked": False,
        "tries": 0,
        "attachment": attachment,
    }


def smtp_worker(n, gw, st, seed):
    rng = random.Random(seed)
    seq = 0
    retry = []  # markers to send again (same bytes)
    while not st.stop.is_set():
        if not gw.up.wait(timeout=0.5):
            continue
        addr = gw.smtp
        try:
            s = smtplib.SMTP(timeout=15)
            s.connect(addr[0], addr[1])
            s.ehlo("crash-client.example")
        except (OSError, smtplib.SMTPException):
            st.bump("smtp_errors")
            time.sleep(0.05)
            continue
        st.bump("smtp_sessions")
        try:
            for _ in range(rng.randint(1, 3)):
                if st.stop.is_set():
                    break
                if retry and rng.random() < 0.5:
                    marker = retry.pop(0)
                    with st.lock:
                        rec = st.inbound[marker]
                else:
                    seq += 1
                    marker = f"cm{n:02d}x{seq:06d}z"
                    rec = compose_inbound(marker, st, rng)
                    with st.lock:
                        st.inbound[marker] = rec
                rec["tries"] += 1
                with st.lock:
                    st.smtp_in_transaction += 1
                try:
                    s.sendmail(rec["from"], [rec["rcpt"]], rec["raw"])
                    rec["acked"] = True
                except (OSError, smtplib.SMTPException) as e:
                    # A permanent refusal of a valid message is a bug.
                    if permanent(e):
                        st.bump("smtp_5xx")
                        log(f"SMTP refused {marker} for good: {e}")
                    # Not acknowledged: an MTA would try again; half the
                    # time we do (same bytes), else it is abandoned.
                    if rng.random() < 0.5:
                        retry.append(marker)
                    raise
                finally:
                    with st.lock:
                        st.smtp_in_transaction -= 1
            s.quit()
            # A steady stream rather than a flood: what matters is where the
            # kills land, and the queues must drain afterwards.
            time.sleep(rng.uniform(0, 0.05))
        except (OSError, smtplib.SMTPException):
            st.bump("smtp_errors")
            try:
                s.close()
            except OSError:
                pass
            time.sleep(0.02)


def api_worker(n, gw, st, token, seed):
    rng = random.Random(seed)
    seq = 0
    pending = None  # a request refused at connect: never sent, so sent again
    while not st.stop.is_set():
        if not gw.up.wait(timeout=0.5):
            continue
        if pending is None:
            seq += 1
            marker = f"om{n:02d}x{seq:06d}z"
            with st.lock:
                threads = list(st.threads)
            r = rng.random()
            if threads and r < 0.08:
                # Snoozed parents are woken by the next reply (parent.woken).
                pending = {
                    "marker": marker,
                    "op": "snooze",
                    "sc": None,
                    "method": "PUT",
                    "path": f"/api/parents/CP-{rng.randint(1, 12)}",
                    "body": {"status": "snoozed"},
                }
            elif threads and r < 0.14:
                # Closed side conversations are reopened by the next reply.
                t = rng.choice(threads)
                pending = {
                    "marker": marker,
                    "op": "close",
                    "sc": t["id"],
                    "path": f"/api/side-conversations/{t['id']}/close",
                    "body": {},
                }
            elif threads and r < 0.4:
                t = rng.choice(threads)
                pending = {
                    "marker": marker,
                    "op": "follow_up",
                    "sc": t["id"],
                    "path": f"/api/side-conversations/{t['id']}/messages",
                    "body": {"body_text": f"Follow-up {marker} from the agent."},
                }
            else:
                to = [f"v-{marker}@vendor.example"]
                cc = [f"c-{marker}@vendor.example"] if rng.random() < 0.3 else []
                pending = {
                    "marker": marker,
                    "op": "start",
                    "sc": None,
                    "recipients": to + cc,
                    "path": f"/api/parents/CP-{rng.randint(1, 12)}/side-conversations",
                    "body": {
                        "to": to,
                        "cc": cc,
                        "subject": f"Crash start {marker}",
                        "body_text": f"Start {marker}: when does it ship?",
                    },
                }
            with st.lock:
                st.outbound[marker] = dict(pending, acked=False)
        p = pending
        try:
            status, v = gw.api(p.get("method", "POST"), p["path"], token, p["body"])
        except Exception as e:  # noqa: BLE001 - any transport failure
            if is_connect_refused(e):
                time.sleep(0.05)
                continue  # never reached the server: the same request again
            st.bump("api_errors")
            pending = None
            time.sleep(0.05)
            continue
        pending = None
        if status in (200, 201):
            with st.lock:
                rec = st.outbound[p["marker"]]
                rec["acked"] = True
                if p["op"] == "start":
                    rec["sc"] = v["id"]
                    st.threads.append(
                        {
                            "id": v["id"],
                            "token": v["token"],
                            "to": p["body"]["to"][0],
                            "message_id": v["messages"][0]["message_id"],
                        }
                    )
        else:
            st.bump("api_errors")
            if status >= 500:
                st.bump("api_5xx")
                log(f"API answered {status}: {v}")
        time.sleep(rng.uniform(0, 0.15))


# --------------------------------------------------------------------------
# Checks.


class Checker:
    def __init__(self):
        self.errors = []
        self.count = 0

    def fail(self, msg):
        self.count += 1
        if len(self.errors) < 60:
            self.errors.append(msg)

    def expect(self, cond, msg):
        if not cond:
            self.fail(msg)


def one(db, sql, args=()):
    return db.execute(sql, args).fetchone()[0]


def wait_drained(gw, timeout):
    deadline = time.time() + timeout
    stable = 0
    last = None
    while time.time() < deadline:
        db = gw.db()
        try:
            left = (
                one(db, "SELECT COUNT(*) FROM inbound_queue WHERE state = 'queued'"),
                one(db, "SELECT COUNT(*) FROM outbox WHERE state IN ('queued', 'sending', 'deferred')"),
                one(db, "SELECT COUNT(*) FROM webhook_deliveries WHERE state IN ('queued', 'sending', 'deferred')"),
                one(db, "SELECT COUNT(*) FROM notification_queue WHERE sent_message_id IS NULL"),
            )
        finally:
            db.close()
        if left != last:
            log(f"  left: inbound {left[0]}, outbox {left[1]}, webhooks {left[2]}, notifications {left[3]}")
        last = left
        stable = stable + 1 if left == (0, 0, 0, 0) else 0
        if stable >= 3:
            return True, left
        time.sleep(2 if any(left) else 0.5)
    return False, last


MARKER = re.compile(r"cm\d\dx\d{6}z")


class Index:
    """The tables the checks need, read once (a few queries over the whole
    database rather than a few per message)."""

    def __init__(self, db):
        def group(rows):
            out = {}
            for k, v in rows:
                out.setdefault(k, []).append(v)
            return out

        q = lambda sql, args=(): db.execute(sql, args).fetchall()  # noqa: E731
        self.inbound = group((r[1], r) for r in q("SELECT id, message_id, side_conversation_id, kind, route, flags FROM messages WHERE direction = 'in'"))
        queue = {}
        for qid, state, msg, raw in q("SELECT q.id, q.state, q.message_id, coalesce(r.raw, q.raw) FROM inbound_queue q LEFT JOIN inbound_raw r ON r.id = q.id"):
            m = re.search(rb"(?im)^message-id:\s*<([^>]+)>", bytes(raw))
            queue.setdefault(m.group(1).decode() if m else None, []).append((qid, state, msg))
        self.queue = queue
        self.queue_rows = sum(len(v) for v in queue.values())
        self.queue_not_done = sum(1 for v in queue.values() for r in v if r[1] != "done")
        self.activity_by_marker = {}
        self.activity_by_sc = {}
        for sc, text in q("SELECT side_conversation_id, text FROM activity"):
            for m in set(MARKER.findall(text)):
                self.activity_by_marker[m] = self.activity_by_marker.get(m, 0) + 1
            self.activity_by_sc.setdefault(sc, []).append(text)
        self.deliveries = q("SELECT id, event, state, payload FROM webhook_deliveries")
        self.events = {}
        for _, event, _, payload in self.deliveries:
            data = json.loads(payload).get("data") or {}
            keys = [("sc", data.get("side_conversation_id"))]
            msg = data.get("message")
            if isinstance(msg, dict):
                keys.append(("message", msg.get("id")))
            if "message_id" in data:
                keys.append(("message_id", data.get("message_id")))
            for k in keys:
                self.events[(event,) + k] = self.events.get((event,) + k, 0) + 1
        self.notes = group(q("SELECT message_id, sent_message_id FROM notification_queue"))
        self.notified = {}
        for mid, text in q("SELECT id, text_body FROM messages WHERE direction = 'out' AND kind = 'notification'"):
            for m in set(re.findall(r"Reply (cm\d\dx\d{6}z) from", text or "")):
                self.notified.setdefault(m, []).append(mid)
        self.placements = group(
            q("SELECT mm.message_id, mb.kind FROM mailbox_messages mm JOIN mailboxes mb ON mb.id = mm.mailbox_id")
        )
        self.participants = {(sc, e.lower()) for sc, e in q("SELECT side_conversation_id, email FROM participants")}
        self.participant_count = dict(q("SELECT side_conversation_id, COUNT(*) FROM participants GROUP BY side_conversation_id"))
        self.attachments = dict(q("SELECT message_id, COUNT(*) FROM attachments GROUP BY message_id"))
        self.sc_by_subject = group(q("SELECT subject, id FROM side_conversations"))
        self.sc_ids = [r[0] for r in q("SELECT id FROM side_conversations")]
        self.agent_out = group(
            (r[1], r) for r in q("SELECT id, side_conversation_id, text_body FROM messages WHERE direction = 'out' AND kind = 'agent' ORDER BY id")
        )
        self.follow_ups = {}
        for mid, sc, text in (r for v in self.agent_out.values() for r in v):
            for m in set(re.findall(r"Follow-up (om\d\dx\d{6}z) from", text or "")):
                self.follow_ups.setdefault(m, []).append((mid, sc))
        self.outbox_by_message = group(
            (r[0], (r[1], r[2])) for r in q("SELECT message_id, recipient, state FROM outbox")
        )
        self.outbox = q(
            "SELECT o.id, o.recipient, o.state, o.verp_key, m.message_id, m.kind FROM outbox o JOIN messages m ON m.id = o.message_id"
        )


def check_inbound(ix, st, ck, tally):
    acked = {m: r for m, r in st.inbound.items() if r["acked"]}
    unacked = {m: r for m, r in st.inbound.items() if not r["acked"]}
    tally["inbound_acknowledged"] = len(acked)
    tally["inbound_unacknowledged"] = len(unacked)
    tally["inbound_resent"] = sum(1 for r in st.inbound.values() if r["tries"] > 1)
    stored = dup = lost = half = unacked_stored = 0
    for marker, rec in st.inbound.items():
        mid = f"{marker}@vendor.example"
        rows = ix.inbound.get(mid, [])
        queue = ix.queue.get(mid, [])
        if rec["acked"]:
            if not rows:
                lost += 1
                ck.fail(f"inbound {marker}: acknowledged but not stored (queue rows {queue})")
                continue
            if len(rows) > 1:
                dup += 1
                ck.fail(f"inbound {marker}: stored {len(rows)} times: {rows}")
            stored += 1
        elif not rows:
            # Never acknowledged and not stored: fine, if nothing of it is left.
            ck.expect(
                all(q[1] != "queued" for q in queue),
                f"inbound {marker}: a queue row was never processed: {queue}",
            )
            act = ix.activity_by_marker.get(marker, 0)
            if act:
                half += 1
                ck.fail(f"inbound {marker}: not stored but has {act} activity entries")
            continue
        else:
            unacked_stored += 1
            if len(rows) > 1:
                dup += 1
                ck.fail(f"inbound {marker} (unacknowledged): stored {len(rows)} times")
        msg, _, sc, kind, route, flags = rows[0]
        for q in queue:
            ck.expect(q[1] == "done", f"inbound {marker}: queue row {q[0]} is {q[1]}")
            ck.expect(q[2] == msg, f"inbound {marker}: queue row {q[0]} points at message {q[2]}, not {msg}")
        ck.expect("duplicate_of" not in flags and "ingest_error" not in flags, f"inbound {marker}: flags {flags}")
        ck.expect(kind == "reply", f"inbound {marker}: kind {kind}")
        ck.expect(route == rec["kind"], f"inbound {marker}: route {route}, sent as {rec['kind']}")
        ck.expect(sc == rec["sc"], f"inbound {marker}: on side conversation {sc}, sent to {rec['sc']}")
        placements = sorted(ix.placements.get(msg, []))
        activity = ix.activity_by_marker.get(marker, 0)
        events = ix.events.get(("message.received", "message", msg), 0)
        notes = ix.notes.get(msg, [])
        woken = ix.events.get(("parent.woken", "message_id", msg), 0)
        if woken > 1:
            half += 1
            ck.fail(f"inbound {marker}: woke its parent {woken} times")
        attachments = ix.attachments.get(msg, 0)
        if attachments != int(rec["attachment"]):
            half += 1
            ck.fail(f"inbound {marker}: {attachments} attachments stored, sent {int(rec['attachment'])}")
        if rec["kind"] == "unrouted":
            if placements != ["unrouted"] or activity or events or notes:
                half += 1
                ck.fail(f"inbound {marker} (unrouted): placements {placements}, activity {activity}, events {events}, notifications {notes}")
            continue
        participant = (sc, rec["from"].lower()) in ix.participants
        full = ix.participant_count.get(sc, 0) >= 50
        # The reply is listed in exactly one notification email, the one
        # its queue row points at.
        notified = ix.notified.get(marker, [])
        ok = (
            placements == ["inbox", "ticket"]
            and activity == 1
            and events == 1
            and len(notes) == 1
            and notes[0] is not None
            and notified == notes
            and (participant or full)
        )
        if not ok:
            half += 1
            ck.fail(
                f"inbound {marker}: effects wrong: placements {placements}, activity {activity}, "
                f"message.received events {events}, notifications {notes}, notification emails {notified}, "
                f"sender participant {participant}"
            )
    tally["inbound_stored"] = stored
    tally["inbound_duplicates"] = dup
    tally["inbound_lost"] = lost
    tally["inbound_half_applied"] = half
    tally["inbound_unacked_stored"] = unacked_stored
    tally["inbound_queue_rows"] = ix.queue_rows
    ck.expect(ix.queue_not_done == 0, f"{ix.queue_not_done} inbound queue rows are not done")


def check_outbound(ix, st, sink, ck, tally):
    acked = {m: r for m, r in st.outbound.items() if r["acked"]}
    tally["api_acknowledged"] = len(acked)
    tally["api_unacknowledged"] = len(st.outbound) - len(acked)
    lost = dup_effects = 0
    closes = {}
    for marker, rec in st.outbound.items():
        if rec["op"] == "close":
            closes[rec["sc"]] = closes.get(rec["sc"], 0) + 1
        if rec["op"] in ("snooze", "close"):
            continue
        if rec["op"] == "start":
            scs = ix.sc_by_subject.get(f"Crash start {marker}", [])
            if len(scs) > 1:
                dup_effects += 1
                ck.fail(f"outbound {marker}: {len(scs)} side conversations")
            # A start's message is its side conversation's first.
            msgs = [(r[0], r[1]) for sc in scs[:1] for r in ix.agent_out.get(sc, [])[:1]]
            if scs and not msgs:
                ck.fail(f"outbound {marker}: side conversation {scs[0]} without its first message")
        else:
            msgs = ix.follow_ups.get(marker, [])
        if rec["acked"] and not msgs:
            lost += 1
            ck.fail(f"outbound {marker} ({rec['op']}): acknowledged but not stored")
            continue
        if len(msgs) > 1:
            dup_effects += 1
            ck.fail(f"outbound {marker}: stored {len(msgs)} times")
        if not msgs:
            continue
        msg, sc = msgs[0]
        if rec["acked"] and rec["sc"] is not None:
            ck.expect(sc == rec["sc"], f"outbound {marker}: on side conversation {sc}, API said {rec['sc']}")
        rows = ix.outbox_by_message.get(msg, [])
        ck.expect(rows, f"outbound {marker}: no outbox rows")
        if rec["op"] == "start":
            want = sorted(rec["recipients"])
            ck.expect(sorted(r[0] for r in rows) == want, f"outbound {marker}: outbox recipients {rows}, want {want}")
            act = sum(1 for t in ix.activity_by_sc.get(sc, []) if "started a side conversation" in t)
            started = ix.events.get(("side_conversation.started", "sc", sc), 0)
            ck.expect(act == 1, f"outbound {marker}: {act} 'started' activity entries")
            ck.expect(started == 1, f"outbound {marker}: {started} side_conversation.started events")
        sent_ev = ix.events.get(("message.sent", "message", msg), 0)
        ck.expect(sent_ev == 1, f"outbound {marker}: {sent_ev} message.sent events")
    # A side conversation is reopened at most once per close, and each
    # agent follow-up has one activity entry.
    for sc in ix.sc_ids:
        reopened = ix.events.get(("side_conversation.reopened", "sc", sc), 0)
        ck.expect(reopened <= closes.get(sc, 0), f"side conversation {sc}: reopened {reopened} times, closed {closes.get(sc, 0)} times")
        outs = len(ix.agent_out.get(sc, []))
        acts = sum(1 for t in ix.activity_by_sc.get(sc, []) if t == "Agent replied in a side conversation")
        ck.expect(acts == outs - 1, f"side conversation {sc}: {outs} agent messages but {acts} follow-up activity entries")
    tally["closes_sent"] = sum(closes.values())
    tally["reopened_events"] = sum(1 for d in ix.deliveries if d[1] == "side_conversation.reopened")
    tally["parent_woken_events"] = sum(1 for d in ix.deliveries if d[1] == "parent.woken")

    # Every outbox row delivered at least once; duplicates identical.
    with sink.lock:
        got = list(sink.received)
    by_key = {}
    for g in got:
        for r in g["rcpts"]:
            by_key.setdefault((g["message_id"], r.lower()), []).append(g)
    delivered = dup = missing = 0
    kinds = {}
    for oid, rcpt, state, verp, mid, kind in ix.outbox:
        kinds[kind] = kinds.get(kind, 0) + 1
        copies = by_key.get((mid, rcpt.lower()), [])
        ck.expect(state == "sent", f"outbox {oid} ({kind}, {rcpt}): state {state}")
        if not copies:
            missing += 1
            ck.fail(f"outbox {oid} ({kind}, {mid} to {rcpt}): never reached the sink")
            continue
        delivered += 1
        dup += len(copies) - 1
        ck.expect(len({c["sha"] for c in copies}) == 1, f"outbox {oid}: duplicate copies differ in content")
        ck.expect(
            all(c["mail_from"] == f"bounce+{verp}@{DOMAIN}" for c in copies),
            f"outbox {oid}: envelope sender not its VERP address: {[c['mail_from'] for c in copies]}",
        )
    known = {(mid, rcpt.lower()) for _, rcpt, _, _, mid, _ in ix.outbox}
    phantom = [k for k in by_key if k not in known]
    ck.expect(not phantom, f"the sink got messages the store does not know: {phantom[:5]}")
    tally["outbox_rows"] = len(ix.outbox)
    tally["outbox_rows_by_kind"] = kinds
    tally["outbox_delivered"] = delivered
    tally["outbox_lost"] = missing
    tally["outbox_duplicates"] = dup
    tally["outbound_lost_acknowledged"] = lost
    tally["outbound_double_stored"] = dup_effects
    tally["sink_refusals_451"] = sink.refused
    tally["sink_transactions_cut"] = sink.cut


def check_webhooks(ix, receiver, ck, tally):
    rows = ix.deliveries
    with receiver.lock:
        got = list(receiver.received)
    by_id = {}
    for g in got:
        by_id.setdefault(g["delivery"], []).append(g)
    delivered = dup = missing = 0
    events = {}
    for did, event, state, payload in rows:
        events[event] = events.get(event, 0) + 1
        ck.expect(state == "delivered", f"webhook delivery {did} ({event}): state {state}")
        copies = by_id.get(str(did), [])
        if not copies:
            missing += 1
            ck.fail(f"webhook delivery {did} ({event}): never reached the receiver")
            continue
        delivered += 1
        dup += len(copies) - 1
        ck.expect(
            all(c["sha"] == hashlib.sha256(payload.encode()).hexdigest() for c in copies),
            f"webhook delivery {did}: a copy differs from the stored payload",
        )
        ck.expect(all(c["event"] == event for c in copies), f"webhook delivery {did}: event header differs")
    ids = {r[0] for r in rows}
    phantom = [k for k in by_id if k is None or not k.isdigit() or int(k) not in ids]
    ck.expect(not phantom, f"the receiver got deliveries the store does not know: {phantom[:5]}")
    ck.expect(receiver.bad_signatures == 0, f"{receiver.bad_signatures} deliveries with a bad signature")
    tally["webhook_deliveries"] = len(rows)
    tally["webhook_events"] = events
    tally["webhook_delivered"] = delivered
    tally["webhook_lost"] = missing
    tally["webhook_duplicates"] = dup
    tally["receiver_refusals_500"] = receiver.refused


def check_api(gw, token, st, ck, tally):
    """The same facts through the HTTP API, for every side conversation."""
    checked = 0
    with st.lock:
        threads = list(st.threads)
    acked_by_sc = {}
    for marker, rec in st.inbound.items():
        if rec["acked"] and rec["sc"] is not None:
            acked_by_sc.setdefault(rec["sc"], set()).add(f"{marker}@vendor.example")
    for t in threads:
        status, v = gw.api("GET", f"/api/side-conversations/{t['id']}", token)
        if status != 200:
            ck.fail(f"API: side conversation {t['id']}: {status} {v}")
            continue
        ids = [m.get("message_id") for m in v.get("messages", []) if m.get("direction") == "in"]
        for mid in acked_by_sc.get(t["id"], ()):
            n = ids.count(mid)
            ck.expect(n == 1, f"API: side conversation {t['id']} shows {mid} {n} times")
        for m in v.get("messages", []):
            if m.get("direction") == "out":
                for d in m.get("delivery") or []:
                    ck.expect(d.get("state") == "sent", f"API: message {m.get('id')} to {d.get('recipient')}: {d.get('state')}")
        checked += 1
    tally["api_threads_checked"] = checked


# --------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=int(os.environ.get("CRASH_KILLS", "25")))
    ap.add_argument("--gap-min", type=float, default=0.3, help="least uptime before a kill (s)")
    ap.add_argument("--gap-max", type=float, default=2.5, help="most uptime before a kill (s)")
    ap.add_argument("--smtp-clients", type=int, default=4)
    ap.add_argument("--api-clients", type=int, default=2)
    ap.add_argument("--drain-timeout", type=float, default=600)
    ap.add_argument("--seed", type=int, default=int(os.environ.get("CRASH_SEED", "0")) or None)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1, 1 << 30)
    rng = random.Random(seed)
    binary = find_binary()
    workdir = tempfile.mkdtemp(prefix="bc-crash-")
    log(f"crash test: binary {binary}, {args.kills} kills, seed {seed}, dir {workdir}")

    # vendor.example authorises loopback (no DMARC): every vendor of the
    # test is a verified sender (SPEC §10), so new senders join their
    # thread and the checks below can ask for it.
    dns = StubDns({"vendor.example": "v=spf1 ip4:127.0.0.0/8 -all"})
    sink = Sink(random.Random(rng.random()), delay_max=0.4, fail_rate=0.05)
    receiver = Receiver(random.Random(rng.random()), delay_max=0.2, fail_rate=0.05)
    gw = Gateway(binary, workdir, sink.port, dns.port)

    # Never leave a server behind, however the harness ends.
    def reap():
        if gw.proc is not None and gw.proc.poll() is None:
            gw.proc.kill()
            gw.proc.wait()

    atexit.register(reap)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(130))
    token = gw.add_user()
    gw.start()
    status, hook = gw.api(
        "POST", "/api/webhooks", token, {"url": f"http://127.0.0.1:{receiver.port}/hook", "secret": WEBHOOK_SECRET}
    )
    if status != 201:
        raise SystemExit(f"webhook registration: {status} {hook}")

    st = State()
    # A few side conversations to reply to from the start.
    for i in range(6):
        marker = f"seed{i:02d}z"
        to = f"v-{marker}@vendor.example"
        status, v = gw.api(
            "POST",
            f"/api/parents/CP-{i + 1}/side-conversations",
            token,
            {"to": [to], "subject": f"Crash start {marker}", "body_text": f"Start {marker}"},
        )
        if status != 201:
            raise SystemExit(f"seeding: {status} {v}")
        st.outbound[marker] = {"op": "start", "sc": v["id"], "acked": True, "recipients": [to]}
        st.threads.append({"id": v["id"], "token": v["token"], "to": to, "message_id": v["messages"][0]["message_id"]})

    workers = []
    for n in range(args.smtp_clients):
        workers.append(threading.Thread(target=smtp_worker, args=(n, gw, st, rng.random()), daemon=True))
    for n in range(args.api_clients):
        workers.append(threading.Thread(target=api_worker, args=(n, gw, st, token, rng.random()), daemon=True))
    for w in workers:
        w.start()

    kills = {"total": 0, "smtp_in_transaction": 0, "outbound_in_flight": 0, "webhook_in_flight": 0}
    bad_stops = []
    started = time.time()
    # `total` counts SIGKILLs under load (one of them may come in the middle
    # of a SIGTERM shutdown); a SIGTERM that finished first is a clean stop
    # and does not count; kills during start-up come on top.
    while kills["total"] < args.kills:
        # Mostly some uptime first; sometimes right after the restart, while
        # the last run's interrupted work is being recovered.
        if rng.random() < 0.2:
            time.sleep(rng.uniform(0, 0.1))
        else:
            time.sleep(rng.uniform(args.gap_min, args.gap_max))
        with st.lock:
            in_data = st.smtp_in_transaction > 0
        out_busy = sink.busy()
        hook_busy = receiver.busy()
        if rng.random() < 0.1:
            rc = gw.term_then_kill(rng.uniform(0, 1.0))
            if rc is not None:
                kills["clean_stops"] = kills.get("clean_stops", 0) + 1
                if rc != 0:
                    bad_stops.append(rc)
                gw.start()
                continue
            kills["during_shutdown"] = kills.get("during_shutdown", 0) + 1
        else:
            gw.kill()
        kills["total"] += 1
        kills["smtp_in_transaction"] += in_data
        kills["outbound_in_flight"] += out_busy
        kills["webhook_in_flight"] += hook_busy
        if rng.random() < 0.15:
            gw.kill_early(rng.uniform(0, 0.3))
            kills["during_start"] = kills.get("during_start", 0) + 1
        k = kills["total"]
        if k % 5 == 0 or k == args.kills:
            log(f"kill {k}/{args.kills} (inbound {len(st.inbound)}, api {len(st.outbound)}, sink {len(sink.received)}, hooks {len(receiver.received)})")
        gw.start()
    # Some load after the last restart too, then stop it.
    time.sleep(1.0)
    st.stop.set()
    for w in workers:
        w.join(timeout=60)
    load_secs = time.time() - started
    log("load stopped; waiting for the queues to drain")
    drained, left = wait_drained(gw, args.drain_timeout)
    if not drained:
        log(f"queues not drained after {args.drain_timeout}s: inbound/outbox/webhooks/notifications left {left}")

    ck = Checker()
    tally = {"seed": seed, "kills": kills, "load_seconds": round(load_secs, 1)}
    tally.update({k: v for k, v in st.counts.items()})
    check_api(gw, token, st, ck, tally)
    rc = gw.stop()
    ck.expect(rc == 0, f"SIGTERM: exit code {rc}")
    ck.expect(not bad_stops, f"SIGTERM during the load: exit codes {bad_stops}")
    time.sleep(0.5)  # let the sink and receiver finish recording
    db = gw.db()
    try:
        ix = Index(db)
        check_inbound(ix, st, ck, tally)
        check_outbound(ix, st, sink, ck, tally)
        check_webhooks(ix, receiver, ck, tally)
        integrity = db.execute("PRAGMA integrity_check").fetchall()
        ck.expect(integrity == [("ok",)], f"integrity_check: {integrity[:5]}")
        fks = db.execute("PRAGMA foreign_key_check").fetchall()
        ck.expect(not fks, f"foreign_key_check: {fks[:5]}")
    finally:
        db.close()
    ck.expect(st.counts.get("smtp_5xx", 0) == 0, f"{st.counts.get('smtp_5xx')} valid messages refused with 5xx")
    ck.expect(st.counts.get("api_5xx", 0) == 0, f"{st.counts.get('api_5xx')} API requests answered 5xx")
    panics = gw.panics()
    ck.expect(not panics, f"panics in the server log: {panics[:3]}")
    ck.expect(drained, f"queues not drained: {left}")

    print("\n== tallies")
    for k, v in tally.items():
        print(f"  {k}: {v}")
    print(
        "\n  summary: kills {k}; inbound acknowledged {a}, stored {s}, duplicates {d}, lost {l}; "
        "outbox rows {o}, lost {ol}, duplicate deliveries {od}; webhook deliveries {w}, lost {wl}, duplicates {wd}".format(
            k=kills["total"],
            a=tally["inbound_acknowledged"],
            s=tally["inbound_stored"],
            d=tally["inbound_duplicates"],
            l=tally["inbound_lost"],
            o=tally["outbox_rows"],
            ol=tally["outbox_lost"],
            od=tally["outbox_duplicates"],
            w=tally["webhook_deliveries"],
            wl=tally["webhook_lost"],
            wd=tally["webhook_duplicates"],
        )
    )
    if ck.errors:
        print(f"\nFAILED: {ck.count} problems")
        for e in ck.errors:
            print(f"  - {e}")
        if ck.count > len(ck.errors):
            print(f"  … and {ck.count - len(ck.errors)} more")
        print(f"(work directory kept: {workdir}; server log: {gw.log_path})")
        return 1
    print("\ncrash test: passed")
    if args.keep:
        print(f"(work directory kept: {workdir})")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
