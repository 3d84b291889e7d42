#!/usr/bin/env python3
"""Python helpers of bench/run.sh (standard library only).

  seed HTTP TOKEN PARENT N           start N side conversations on PARENT through
                                     the HTTP API; print their tokens, one a line
  gen-mail N DIR                     write N messages of about 5 KB into DIR
  maildir-copy SRC MAILDIR           copy every file of SRC into MAILDIR/cur
  imap-fetch HOST PORT USER PASS MAILBOX EXPECT
                                     time UID FETCH 1:* (UID FLAGS ENVELOPE) and
                                     (BODY.PEEK[]) with imaplib; print JSON
  counts DB [AFTER]                  inbound messages by route (ids above AFTER),
                                     queued and failed queue rows, as JSON
  console-pages HTTP LINK REPS PATH...
                                     sign in to the web console with the sign-in
                                     link path LINK, then time REPS GETs of each
                                     console PATH on one keep-alive connection;
                                     print JSON {path: {status, p50_ms, p99_ms,
                                     max_ms, bytes}}
  free-port                          print a free TCP port on 127.0.0.1
  splice-section FILE SECTION PREFIX replace FILE's section whose heading starts
                                     with PREFIX by the file SECTION (or put it
                                     before the closing lines)
  dns PORT                           answer every DNS question on 127.0.0.1:PORT
                                     (UDP) with NXDOMAIN, quickly

Every address used is on loopback.
"""

import http.client
import imaplib
import re
import json
import os
import socket
import sqlite3
import statistics
import sys
import time
import urllib.request


def loopback(host):
    if not (host.startswith("127.") or host in ("localhost", "::1")):
        sys.exit(f"{host} is not a loopback address")


def api(http, token, method, path, body=None):
    host = http.split(":")[0]
    loopback(host)
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"http://{http}{path}",
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


def seed(http, token, parent, n):
    api(http, token, "PUT", f"/api/parents/{parent}", {
        "subject": f"Order {parent}",
        "requester": {"name": "Customer", "email": "customer@example.net"},
        "status": "open",
    })
    for i in range(int(n)):
        sc = api(http, token, "POST", f"/api/parents/{parent}/side-conversations", {
            "to": [f"vendor{i}@vendor.bench.test"],
            "subject": f"Pallet {i} for {parent}",
            "body_text": "Where is the pallet?",
        })
        print(sc["token"])


WORDS = ("pallet shipment carrier depot invoice tracking customs warehouse delivery "
         "schedule driver confirm update tomorrow morning dock loading order "
         "reference number delayed arrival").split()


def gen_mail(n, out):
    os.makedirs(out, exist_ok=True)
    for i in range(int(n)):
        vendor = i % 50
        lines = []
        k = i
        while sum(len(x) + 2 for x in lines) < 4400:
            words = []
            for _ in range(11):
                k = (k * 1103515245 + 12345) & 0x7FFFFFFF
                words.append(WORDS[k % len(WORDS)])
            lines.append(" ".join(words))
        quoted = "\r\n".join("> " + l for l in lines[len(lines) // 2:])
        body = "\r\n".join(lines[: len(lines) // 2])
        msg = (
            f"Return-Path: <vendor{vendor}@vendor{vendor}.example>\r\n"
            f"From: Vendor {vendor} <vendor{vendor}@vendor{vendor}.example>\r\n"
            f"To: Support <support@acme.example>\r\n"
            f"Cc: ops{vendor}@vendor{vendor}.example\r\n"
            f"Subject: Re: Pallet {i % 997} delayed (order {100000 + i})\r\n"
            f"Date: Thu, 01 Jan 2026 {i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d} +0000\r\n"
            f"Message-ID: <agent-view.{i}@vendor{vendor}.example>\r\n"
            f"In-Reply-To: <thread.{i % 997}@acme.example>\r\n"
            f"References: <thread.{i % 997}@acme.example>\r\n"
            f"MIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Transfer-Encoding: 8bit\r\n"
            f"\r\n{body}\r\n\r\nOn Wed, 31 Dec 2025, Support wrote:\r\n{quoted}\r\n"
        )
        with open(os.path.join(out, f"{i:06d}.eml"), "wb") as f:
            f.write(msg.encode())


def maildir_copy(src, maildir):
    """Every file of SRC into MAILDIR/cur as a Maildir message (no flags)."""
    for i, name in enumerate(sorted(os.listdir(src))):
        with open(os.path.join(src, name), "rb") as f:
            data = f.read()
        with open(os.path.join(maildir, "cur", f"{1767225600 + i}.M{i}P1.bench:2,"), "wb") as f:
            f.write(data)


def timed(fn, reps):
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def imap_fetch(host, port, user, password, mailbox, expect):
    loopback(host)
    expect = int(expect)
    m = imaplib.IMAP4(host, int(port))
    m._mode_utf8 = False
    typ, _ = m.login(user, password)
    if typ != "OK":
        sys.exit("login failed")
    typ, data = m.select(mailbox, readonly=True)
    if typ != "OK":
        sys.exit(f"select failed: {data}")
    exists = int(data[0])
    if exists != expect:
        sys.exit(f"{mailbox} holds {exists} messages, expected {expect}")

    def fetch(items, count_literals):
        typ, data = m.uid("FETCH", "1:*", items)
        if typ != "OK":
            raise SystemExit(f"FETCH {items} failed: {data}")
        n = sum(1 for d in data if isinstance(d, tuple)) if count_literals else \
            sum(1 for d in data if d is not None and (isinstance(d, tuple) or b"UID" in d))
        if n < expect:
            raise SystemExit(f"FETCH {items}: {n} responses, expected {expect}")

    result = {}
    for name, items, lit in (("envelope", "(UID FLAGS ENVELOPE)", False),
                             ("body", "(BODY.PEEK[])", True)):
        cold = timed(lambda: fetch(items, lit), 1)[0]
        warm = timed(lambda: fetch(items, lit), 3)
        result[name] = {"first_s": cold, "median_s": statistics.median(warm)}
    m.logout()
    print(json.dumps(result))


def counts(db, after="0"):
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    out = {}
    for route, n in c.execute(
            "SELECT route, COUNT(*) FROM messages WHERE id > ? AND direction = 'in' GROUP BY route",
            (int(after),)):
        out[route] = n
    out["max_message_id"] = c.execute("SELECT MAX(id) FROM messages").fetchone()[0] or 0
    out["queued"] = c.execute(
        "SELECT COUNT(*) FROM inbound_queue WHERE state = 'queued'").fetchone()[0]
    out["failed"] = c.execute(
        "SELECT COUNT(*) FROM inbound_queue WHERE state = 'failed'").fetchone()[0]
    print(json.dumps(out))


def dns(port):
    """A resolver stand-in on 127.0.0.1:PORT (UDP): every question gets
    NXDOMAIN with an SOA (TTL 300), as a local caching resolver answers for
    the bench's made-up domains, so SPF/DKIM/DMARC run without waiting."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", int(port)))
    soa_rdata = (b"\x02ns\x05bench\x04test\x00" b"\x05admin\x05bench\x04test\x00"
                 + (1).to_bytes(4, "big") + (300).to_bytes(4, "big") * 3 + (300).to_bytes(4, "big"))
    authority = (b"\x05bench\x04test\x00" + b"\x00\x06\x00\x01" + (300).to_bytes(4, "big")
                 + len(soa_rdata).to_bytes(2, "big") + soa_rdata)
    while True:
        try:
            q, addr = s.recvfrom(4096)
        except OSError:
            continue
        if len(q) < 12:
            continue
        # The question ends after its name's zero label plus type and class.
        end = 12
        while end < len(q) and q[end] != 0:
            end += q[end] + 1
        end += 5
        if end > len(q):
            continue
        flags = 0x8000 | (int.from_bytes(q[2:4], "big") & 0x0100) | 0x0080 | 3
        header = q[0:2] + flags.to_bytes(2, "big") + b"\x00\x01\x00\x00\x00\x01\x00\x00"
        s.sendto(header + q[12:end] + authority, addr)


def splice_section(path, section_path, prefix):
    with open(section_path) as f:
        section = f.read().rstrip("\n") + "\n\n"
    try:
        with open(path) as f:
            lines = f.read().splitlines(keepends=True)
    except FileNotFoundError:
        lines = []
    start = next((i for i, l in enumerate(lines) if l.startswith(prefix)), None)
    if start is None:
        # Before the closing lines ("## Failures" or "Every part ran.").
        start = next((i for i, l in enumerate(lines)
                      if l.startswith("## Failures") or l.startswith("Every part ran")), len(lines))
        end = start
    else:
        end = next((i for i in range(start + 1, len(lines))
                    if lines[i].startswith("## ") or lines[i].startswith("Every part ran")), len(lines))
    with open(path, "w") as f:
        f.write("".join(lines[:start]) + section + "".join(lines[end:]))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
    s.close()


def console_pages(http_addr, link, reps, *paths):
    host, port = http_addr.rsplit(":", 1)
    loopback(host)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    cookies = {}

    def request(method, path, body=None):
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        for k, v in r.getheaders():
            if k.lower() == "set-cookie":
                name, _, rest = v.partition("=")
                cookies[name] = rest.split(";", 1)[0]
        return r.status, data

    status, page = request("GET", link)
    m = re.search(rb'name="csrf" value="([^"]+)"', page)
    if status != 200 or not m:
        sys.exit(f"the sign-in link page answered {status}")
    status, _ = request("POST", link, "csrf=" + m.group(1).decode())
    if status != 303 or "bc_session" not in cookies:
        sys.exit(f"signing in answered {status}")
    out = {}
    for name in paths:
        path = name
        if name.startswith("next:"):
            # The second page of a list: the page's own "Next page" link.
            status, first = request("GET", name[len("next:"):])
            m = re.search(rb'href="([^"]+)" rel="next"', first)
            if not m:
                out[name] = {"status": "no next page"}
                continue
            path = m.group(1).decode().replace("&amp;", "&")
        status, data = request("GET", path)  # warm the caches once
        times = []
        for _ in range(int(reps)):
            t0 = time.perf_counter()
            status, data = request("GET", path)
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        out[name] = {
            "status": status,
            "p50_ms": round(statistics.median(times), 2),
            "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 2),
            "max_ms": round(times[-1], 2),
            "bytes": len(data),
        }
    print(json.dumps(out))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    {
        "seed": seed,
        "gen-mail": gen_mail,
        "imap-fetch": imap_fetch,
        "maildir-copy": maildir_copy,
        "counts": counts,
        "free-port": free_port,
        "console-pages": console_pages,
        "splice-section": splice_section,
        "dns": dns,
    }[cmd](*args)


if __name__ == "__main__":
    main()
