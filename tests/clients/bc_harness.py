"""Shared harness for the outside-client tests of backchannel's SMTP listener.

Starts the real `backchannel serve` binary on 127.0.0.1 with ports `:0`,
reads the bound addresses from `--ready-file`, talks to it over plain
sockets and reads what it committed from its SQLite database.

Only 127.0.0.1 is ever contacted. A stub DNS server on 127.0.0.1 answers
every query NXDOMAIN, so the ingest worker's SPF/DKIM lookups never leave
the machine.
"""

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DOMAIN = "gw.example.com"
CRLF = b"\r\n"


def find_binary():
    env = os.environ.get("BACKCHANNEL_BIN")
    if env:
        path = env if os.path.isabs(env) else os.path.join(REPO, env)
        if not os.path.exists(path):
            raise SystemExit(f"BACKCHANNEL_BIN={env} does not exist")
        return path
    for rel in ("target/release/backchannel", "target/debug/backchannel"):
        path = os.path.join(REPO, rel)
        if os.path.exists(path):
            return path
    raise SystemExit("no backchannel binary: run `cargo build --release` or set BACKCHANNEL_BIN")


# --------------------------------------------------------------------------
# Stub DNS: every question gets NXDOMAIN, over UDP and TCP, on 127.0.0.1.


class StubDns:
    """NXDOMAIN for every name but those given in `txt` ({name: text}),
    which answer their TXT record (an SPF policy, say) and NODATA for other
    types."""

    def __init__(self, txt=None, records_file=None):
        self.fixed = {k.lower().rstrip("."): v for k, v in (txt or {}).items()}
        self.txt = dict(self.fixed)
        # A JSON file {name: text} read again whenever it changes: a test
        # "publishes" records while the server runs.
        self.records_file = records_file
        self.records_mtime = None
        self.udp = None
        self.tcp = None
        for _ in range(20):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind(("127.0.0.1", port))
            except OSError:
                udp.close()
                tcp.close()
                continue
            tcp.listen(16)
            self.udp, self.tcp, self.port = udp, tcp, port
            break
        if self.udp is None:
            raise RuntimeError("could not bind a stub DNS port")
        self.stopped = False
        threading.Thread(target=self._serve_udp, daemon=True).start()
        threading.Thread(target=self._serve_tcp, daemon=True).start()

    def reload(self):
        if not self.records_file:
            return
        try:
            mtime = os.stat(self.records_file).st_mtime_ns
        except OSError:
            return
        if mtime == self.records_mtime:
            return
        try:
            with open(self.records_file) as f:
                extra = json.load(f)
        except (OSError, ValueError):
            return
        self.records_mtime = mtime
        txt = dict(self.fixed)
        txt.update({k.lower().rstrip("."): v for k, v in extra.items() if isinstance(v, str)})
        self.txt = txt

    def answer(self, query):
        self.reload()
        if len(query) < 12:
            return None
        qid, flags, qdcount = struct.unpack("!HHH", query[:6])
        i = 12
        ok = qdcount == 1
        labels = []
        if ok:
            while i < len(query) and query[i] != 0:
                labels.append(query[i + 1 : i + 1 + query[i]].decode("ascii", "replace"))
                i += 1 + query[i]
            i += 5
            ok = i <= len(query)
        rd = flags & 0x0100
        opcode = flags & 0x7800
        if ok:
            name = ".".join(labels).lower()
            qtype = struct.unpack("!H", query[i - 4 : i - 2])[0]
            if name in self.txt:
                rflags = 0x8000 | opcode | rd | 0x0080  # NOERROR, authoritative data
                if qtype != 16:
                    return struct.pack("!HHHHHH", qid, rflags, 1, 0, 0, 0) + query[12:i]
                # One TXT record of 255-byte character-strings (a DKIM
                # key is longer than one).
                text = self.txt[name].encode()
                chunks = [text[k : k + 255] for k in range(0, len(text), 255)] or [b""]
                rdata = b"".join(bytes([len(c)]) + c for c in chunks)
                rr = struct.pack("!HHHIH", 0xC00C, 16, 1, 60, len(rdata)) + rdata
                return struct.pack("!HHHHHH", qid, rflags, 1, 1, 0, 0) + query[12:i] + rr
            rflags = 0x8000 | opcode | rd | 0x0080 | 3  # NXDOMAIN
            return struct.pack("!HHHHHH", qid, rflags, 1, 0, 0, 0) + query[12:i]
        return struct.pack("!HHHHHH", qid, 0x8000 | opcode | rd | 1, 0, 0, 0, 0)

    def _serve_udp(self):
        while not self.stopped:
            try:
                data, addr = self.udp.recvfrom(4096)
            except OSError:
                return
            reply = self.answer(data)
            if reply:
                try:
                    self.udp.sendto(reply, addr)
                except OSError:
                    pass

    def _serve_tcp(self):
        while not self.stopped:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            threading.Thread(target=self._tcp_conn, args=(conn,), daemon=True).start()

    def _tcp_conn(self, conn):
        conn.settimeout(10)
        try:
            while True:
                head = recv_exact(conn, 2)
                if not head:
                    return
                (n,) = struct.unpack("!H", head)
                q = recv_exact(conn, n)
                if q is None:
                    return
                reply = self.answer(q)
                if reply:
                    conn.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.stopped = True
        self.udp.close()
        self.tcp.close()


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


_DNS = None


def stub_dns():
    global _DNS
    if _DNS is None:
        _DNS = StubDns()
    return _DNS


_KNOWN_KEYS = {}


def key_supported(binary, section):
    """Whether this build accepts the TOML `section` (e.g. `[ingest]\nauthenticate = false`)."""
    if section not in _KNOWN_KEYS:
        d = tempfile.mkdtemp(prefix="bc-probe-")
        try:
            path = os.path.join(d, "c.toml")
            with open(path, "w") as f:
                f.write(f'domain = "{DOMAIN}"\ndata_dir = "{d}/data"\n{section}\n')
            r = subprocess.run([binary, "--config", path, "config"], capture_output=True, timeout=30)
            _KNOWN_KEYS[section] = r.returncode == 0
        finally:
            shutil.rmtree(d, ignore_errors=True)
    return _KNOWN_KEYS[section]


def ingest_key_supported(binary):
    """Whether this build knows `[ingest] authenticate` (turned off if so)."""
    return key_supported(binary, "[ingest]\nauthenticate = false")


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


class Server:
    """One `backchannel serve` process with its own temp dir and database."""

    def __init__(self, smtp=None, env=None, name="server"):
        self.binary = find_binary()
        self.name = name
        self.dir = tempfile.mkdtemp(prefix=f"bc-{name}-")
        self.data_dir = os.path.join(self.dir, "data")
        self.db_path = os.path.join(self.data_dir, "backchannel.db")
        self.ready = os.path.join(self.dir, "ready.json")
        self.log_path = os.path.join(self.dir, "server.log")
        smtp_cfg = {"listen": "127.0.0.1:0", "max_connections_per_ip": 1000}
        smtp_cfg.update(smtp or {})
        dns = stub_dns()
        lines = [
            f"domain = {toml_value(DOMAIN)}",
            f"data_dir = {toml_value(self.data_dir)}",
            "[smtp]",
        ]
        lines += [f"{k} = {toml_value(v)}" for k, v in smtp_cfg.items()]
        lines += ["[http]", 'listen = "127.0.0.1:0"']
        # Never the fixed default metrics port: runs side by side would clash
        # (the bound address is in the ready file as "metrics").
        if key_supported(self.binary, '[http]\nmetrics_listen = "127.0.0.1:0"'):
            lines += ['metrics_listen = "127.0.0.1:0"']
        lines += ["[imap]", 'listen = "127.0.0.1:0"']  # not the fixed default port
        # Nor the submission listener's (1587); the ready file has "submission".
        if key_supported(self.binary, '[submission]\nlisten = "127.0.0.1:0"'):
            lines += ["[submission]", 'listen = "127.0.0.1:0"']
        lines += ["[dns]", f'nameservers = ["127.0.0.1:{dns.port}"]', 'timeout = "1s"']
        if ingest_key_supported(self.binary):
            lines += ["[ingest]", "authenticate = false"]
        self.config_path = os.path.join(self.dir, "backchannel.toml")
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.env = dict(os.environ)
        for k in list(self.env):
            if k.startswith("BACKCHANNEL_"):
                del self.env[k]
        self.env.setdefault("RUST_LOG", "warn")
        self.env.update(env or {})
        self.proc = None
        self.smtp_host = None
        self.smtp_port = None
        self.returncode = None

    def start(self, timeout=30):
        """Starts (or, after stop(), restarts on the same data dir)."""
        if os.path.exists(self.ready):
            os.unlink(self.ready)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [self.binary, "--config", self.config_path, "serve", "--ready-file", self.ready],
            stdout=self.log,
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
                host, port = addrs["smtp"].rsplit(":", 1)
                self.smtp_host, self.smtp_port = host, int(port)
                assert host == "127.0.0.1", addrs
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: server exited with {self.proc.returncode} before ready:\n{self.log_tail()}")
            time.sleep(0.02)
        self.proc.kill()
        raise RuntimeError(f"{self.name}: no ready file after {timeout}s:\n{self.log_tail()}")

    @property
    def addr(self):
        return (self.smtp_host, self.smtp_port)

    def log_tail(self, n=4000):
        try:
            with open(self.log_path, "rb") as f:
                data = f.read()
            return data[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def panics(self):
        """Distinct `panicked at <place>: <message>` reports in the log."""
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return []
        found = []
        for i, line in enumerate(lines):
            if "panicked at" in line:
                where = line.split("panicked at", 1)[1].strip()
                msg = lines[i + 1].strip() if i + 1 < len(lines) else ""
                item = f"{where} {msg[:160]}"
                if item not in found:
                    found.append(item)
        return found

    def sigterm(self):
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout=60):
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.name}: did not exit within {timeout}s of SIGTERM")
        return self.returncode

    def stop(self, timeout=60):
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.sigterm()
        return self.wait(timeout)

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def cleanup(self):
        self.kill()
        try:
            self.log.close()
        except Exception:
            pass
        if os.environ.get("BC_KEEP_TMP"):
            print(f"  (kept {self.dir})")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    # ---- the store ------------------------------------------------------

    def db(self):
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)
        conn.execute("PRAGMA busy_timeout = 30000")
        return conn

    def rows(self, where="1", args=()):
        conn = self.db()
        try:
            cur = conn.execute(
                "SELECT q.id AS id, received_at, peer_ip, helo, mail_from, rcpts, tls, params, size, sha256, "
                "coalesce(r.raw, q.raw) AS raw, state "
                f"FROM inbound_queue q LEFT JOIN inbound_raw r ON r.id = q.id WHERE {where} ORDER BY q.id",
                args,
            )
            cols = [c[0] for c in cur.description]
            out = []
            for r in cur.fetchall():
                d = dict(zip(cols, r))
                d["rcpts"] = json.loads(d["rcpts"])
                d["params"] = json.loads(d["params"]) if d["params"] else []
                d["raw"] = bytes(d["raw"])
                d["sha256"] = bytes(d["sha256"])
                out.append(d)
            return out
        finally:
            conn.close()

    def rows_containing(self, marker):
        if isinstance(marker, str):
            marker = marker.encode()
        return self.rows("instr(coalesce(r.raw, q.raw), ?) > 0", (marker,))

    def execute(self, sql, args=()):
        """Writes to the store; only while the server is stopped."""
        assert self.proc is None or self.proc.poll() is not None, "server still running"
        conn = sqlite3.connect(self.db_path, timeout=30)
        try:
            cur = conn.execute(sql, args)
            conn.commit()
            return cur.lastrowid
        finally:
            conn.close()

    def count(self):
        conn = self.db()
        try:
            return conn.execute("SELECT COUNT(*) FROM inbound_queue").fetchone()[0]
        finally:
            conn.close()


# --------------------------------------------------------------------------
# A line-oriented SMTP client on a raw socket.


class Reply:
    def __init__(self, lines):
        self.lines = lines  # list of str, without CRLF
        self.code = int(lines[-1][:3])
        self.text = "\n".join(lines)

    @property
    def last(self):
        return self.lines[-1]

    def __repr__(self):
        return repr(self.text)


class Client:
    def __init__(self, addr, timeout=15, greet=True):
        self.sock = socket.create_connection(addr, timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.greeting = self.reply() if greet else None

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def cmd(self, line):
        self.send(line + ("\r\n" if isinstance(line, str) else b"\r\n"))
        return self.reply()

    def readline(self):
        """One line without its ending; None at end of stream."""
        while b"\n" not in self.buf:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                if self.buf:
                    line, self.buf = self.buf, b""
                    return line.decode("utf-8", "replace")
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def reply(self):
        """One (possibly multi-line) reply; None at end of stream."""
        lines = []
        while True:
            line = self.readline()
            if line is None:
                if lines:
                    raise AssertionError(f"stream ended inside a multi-line reply: {lines}")
                return None
            lines.append(line)
            if not re.match(r"^\d{3}[ -]", line + " "):
                raise AssertionError(f"malformed reply line {line!r}")
            if len(line) < 4 or line[3] == " ":
                return Reply(lines)

    def expect(self, code, esc=None, what=""):
        r = self.reply()
        check_reply(r, code, esc, what)
        return r

    def at_eof(self, timeout=10):
        """True if the server closed the connection (nothing more to read)."""
        self.sock.settimeout(timeout)
        if self.buf:
            return False
        try:
            data = self.sock.recv(1)
        except (ConnectionResetError, BrokenPipeError):
            return True
        return data == b""

    def ehlo(self, name="client.example.org"):
        r = self.cmd(f"EHLO {name}")
        check_reply(r, 250, None, "EHLO")
        return r

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def check_reply(r, code, esc=None, what=""):
    if r is None:
        raise AssertionError(f"{what}: expected {code} {esc or ''}, got end of stream")
    if r.code != code:
        raise AssertionError(f"{what}: expected {code} {esc or ''}, got {r.text!r}")
    if esc is not None:
        parts = r.last[4:].split(" ", 1)
        if parts[0] != esc:
            raise AssertionError(f"{what}: expected enhanced code {esc}, got {r.text!r}")


# --------------------------------------------------------------------------
# The receiving side of DATA, as RFC 5321 §4.5.2 describes it: the data ends
# at <CRLF>.<CRLF>; a leading dot of any other line is removed. A line starts
# after any LF (what a server that keeps bare LFs does). Independent of the
# server's implementation: this is the oracle the stored bytes are checked
# against.


def smtp_unstuff(wire):
    """Returns (content, rest) for `wire`, the bytes sent after 354; content
    is None if `wire` holds no end-of-data sequence."""
    out = []
    pos = 0
    prev_crlf = True
    while pos < len(wire):
        nl = wire.find(b"\n", pos)
        if nl < 0:
            return None, b""
        line = wire[pos : nl + 1]
        pos = nl + 1
        if line == b".\r\n" and prev_crlf:
            return b"".join(out), wire[pos:]
        if line.startswith(b"."):
            line = line[1:]
        prev_crlf = line.endswith(b"\r\n")
        out.append(line)
    return None, b""


def dot_stuff(content):
    """What a client sends for `content` (which must end in CRLF): stuffing
    after every LF, then the terminator."""
    assert content.endswith(CRLF) or content == b""
    return re.sub(rb"(?m)^\.", b"..", content) + b".\r\n"


def sha256(b):
    return hashlib.sha256(b).digest()


# --------------------------------------------------------------------------
# A tiny test runner: one line per test, final `N passed, M failed`.


class Runner:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.failures = []

    def run(self, name, fn, *args):
        t0 = time.time()
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - a test failure of any kind
            self.failed += 1
            msg = f"{type(e).__name__}: {e}" if not isinstance(e, AssertionError) else str(e)
            self.failures.append((name, msg))
            print(f"FAIL {name} ({time.time() - t0:.1f}s): {msg}", flush=True)
            if os.environ.get("BC_VERBOSE"):
                traceback.print_exc()
        else:
            self.passed += 1
            print(f"ok   {name} ({time.time() - t0:.1f}s)", flush=True)

    def finish(self):
        print(f"{self.passed} passed, {self.failed} failed", flush=True)
        return 1 if self.failed else 0
