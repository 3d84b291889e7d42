#!/usr/bin/env python3
"""Outside-client tests of backchannel's inbound SMTP listener.

Drives the real binary ($BACKCHANNEL_BIN, else target/release/backchannel,
else target/debug/backchannel) over 127.0.0.1 with smtplib and raw sockets,
and checks the replies and the bytes committed to `inbound_queue`.

Prints one line per test and a final `N passed, M failed`; exits 1 on any
failure. BC_VERBOSE=1 prints tracebacks, BC_KEEP_TMP=1 keeps the temp dirs,
`python3 smtp_clients.py NAME...` runs only tests whose name contains NAME.
"""

import os
import signal
import smtplib
import socket
import sys
import threading
import time
import uuid

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bc_harness import (  # noqa: E402
    DOMAIN,
    Client,
    Runner,
    Server,
    check_reply,
    dot_stuff,
    sha256,
    smtp_unstuff,
)

REPLY = f"reply@{DOMAIN}"
POSTMASTER = f"postmaster@{DOMAIN}"
MAX_BYTES = 1048576
MAX_RCPTS = 5
MAX_ERRORS = 10


def marker():
    return f"<{uuid.uuid4().hex}@client.example.org>"


def simple_message(mid, body=b"Hello from the outside.\r\n", subject="test"):
    return (
        f"From: Outside <outside@client.example.org>\r\nTo: {REPLY}\r\n"
        f"Subject: {subject}\r\nMessage-ID: {mid}\r\n\r\n"
    ).encode() + body


class Ledger:
    """Every message a test saw answered 250 on one server, with the bytes
    that must be stored for it."""

    def __init__(self, server):
        self.server = server
        self.expected = {}  # marker -> (expected raw, rows stored for it)

    def check(self, mid, expected, mail_from=None, rcpts=None, params_has=(), helo=None, copies=(1,)):
        """The row holding `mid` is byte-identical to `expected` (`copies`:
        how many rows may hold it)."""
        rows = self.server.rows_containing(mid)
        assert len(rows) in copies, f"{mid}: expected {copies} stored message(s), found {len(rows)}"
        self.expected[mid] = (expected, len(rows))
        for row in rows[1:]:
            assert row["raw"] == expected, f"{mid}: copy {row['id']} differs"
        row = rows[0]
        if row["raw"] != expected:
            i = first_diff(row["raw"], expected)
            lo = max(0, i - 20)
            raise AssertionError(
                f"{mid}: stored bytes differ from the unstuffed wire bytes: {len(row['raw'])} vs "
                f"{len(expected)} bytes; first difference at {i}: stored {row['raw'][lo:lo + 60]!r} "
                f"expected {expected[lo:lo + 60]!r}"
            )
        assert row["sha256"] == sha256(expected), f"{mid}: sha256 column is not sha256(raw)"
        assert row["size"] == len(expected), f"{mid}: size column {row['size']} != {len(expected)}"
        assert row["peer_ip"] == "127.0.0.1", row["peer_ip"]
        if mail_from is not None:
            assert row["mail_from"] == mail_from, f"mail_from {row['mail_from']!r} != {mail_from!r}"
        if rcpts is not None:
            assert row["rcpts"] == rcpts, f"rcpts {row['rcpts']!r} != {rcpts!r}"
        if helo is not None:
            assert row["helo"] == helo, f"helo {row['helo']!r} != {helo!r}"
        for p in params_has:
            assert p in row["params"], f"params {row['params']!r} lack {p!r}"
        return row

    def assert_absent(self, mid):
        rows = self.server.rows_containing(mid)
        assert not rows, f"{mid}: {len(rows)} message(s) stored that must not be"


def first_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def transaction(c, rcpts=(REPLY,), mail_from="sender@client.example.org", mail_params=""):
    check_reply(c.cmd(f"MAIL FROM:<{mail_from}>{(' ' + mail_params) if mail_params else ''}"), 250, "2.1.0", "MAIL")
    for r in rcpts:
        check_reply(c.cmd(f"RCPT TO:<{r}>"), 250, "2.1.5", f"RCPT {r}")
    check_reply(c.cmd("DATA"), 354, None, "DATA")


def send_data(c, content):
    """Sends `content` (ending in CRLF) dot-stuffed; returns the reply."""
    c.send(dot_stuff(content))
    return c.reply()


def sync_point(server, ledger):
    """A complete delivery on a fresh connection: once it is answered, the
    server has processed whatever earlier connections sent."""
    mid = marker()
    msg = simple_message(mid, subject="sync")
    with Client(server.addr) as c:
        c.ehlo()
        transaction(c)
        check_reply(send_data(c, msg), 250, "2.0.0", "sync message")
        check_reply(c.cmd("QUIT"), 221, "2.0.0", "QUIT")
    ledger.check(mid, msg)


# ---------------------------------------------------------------------------
# Tests on the main server.


def t_smtplib_session(srv, led):
    host, port = srv.addr
    with smtplib.SMTP(host, port, local_hostname="client.example.org", timeout=15) as s:
        code, _ = s.ehlo()
        assert code == 250, code
        for ext in ("size", "8bitmime", "pipelining", "enhancedstatuscodes", "smtputf8"):
            assert s.has_extn(ext), f"EHLO lacks {ext}: {s.esmtp_features}"
        assert int(s.esmtp_features["size"]) == MAX_BYTES, s.esmtp_features["size"]
        assert s.noop()[0] == 250
        mid1, mid2 = marker(), marker()
        body = (
            b"Line one\r\n.leading dot\r\n..two dots\r\n.\r\n"
            b"trailing spaces   \r\n\ttab line\r\n\r\n-- \r\nsig\r\n"
        )
        msg1 = simple_message(mid1, body)
        refused = s.sendmail("alice@client.example.org", [REPLY], msg1)
        assert refused == {}, refused
        # a second message in the same session, to two recipients
        msg2 = simple_message(mid2, b"second\r\n")
        assert s.sendmail("alice@client.example.org", [REPLY, POSTMASTER], msg2) == {}
        assert s.rset()[0] == 250
        code, _ = s.quit()
        assert code == 221, code
    led.check(mid1, msg1, mail_from="alice@client.example.org", rcpts=[REPLY], helo="client.example.org",
              params_has=[f"SIZE={len(msg1)}"])
    led.check(mid2, msg2, rcpts=[REPLY, POSTMASTER])


def t_smtplib_str_message(srv, led):
    # str messages: smtplib turns bare LF into CRLF before sending
    host, port = srv.addr
    mid = marker()
    text = f"Subject: lf\nMessage-ID: {mid}\n\nbare\nLF\n.dot\n"
    with smtplib.SMTP(host, port, timeout=15) as s:
        assert s.sendmail("a@client.example.org", [REPLY], text) == {}
    led.check(mid, text.replace("\n", "\r\n").encode())


def t_pipelined(srv, led):
    mid = marker()
    msg = simple_message(mid, b"pipelined body\r\n.with dot\r\n")
    with Client(srv.addr) as c:
        r = c.ehlo()
        assert "PIPELINING" in r.text, r
        c.send(
            "MAIL FROM:<pipe@client.example.org>\r\n"
            f"RCPT TO:<{REPLY}>\r\n"
            f"RCPT TO:<{POSTMASTER}>\r\n"
            "DATA\r\n"
        )
        c.expect(250, "2.1.0", "pipelined MAIL")
        c.expect(250, "2.1.5", "pipelined RCPT 1")
        c.expect(250, "2.1.5", "pipelined RCPT 2")
        c.expect(354, None, "pipelined DATA")
        c.send(dot_stuff(msg) + b"QUIT\r\n")
        c.expect(250, "2.0.0", "end of data")
        c.expect(221, "2.0.0", "QUIT")
        assert c.at_eof(), "connection not closed after QUIT"
    led.check(mid, msg, mail_from="pipe@client.example.org", rcpts=[REPLY, POSTMASTER])

    # a refused recipient in the middle of the pipeline
    mid = marker()
    msg = simple_message(mid)
    with Client(srv.addr) as c:
        c.ehlo()
        c.send(
            "MAIL FROM:<pipe@client.example.org>\r\n"
            "RCPT TO:<victim@elsewhere.example>\r\n"
            f"RCPT TO:<{REPLY}>\r\n"
            "DATA\r\n"
        )
        c.expect(250, "2.1.0", "MAIL")
        c.expect(550, "5.7.1", "relay RCPT")
        c.expect(250, "2.1.5", "RCPT")
        c.expect(354, None, "DATA")
        c.send(dot_stuff(msg) + b"MAIL FROM:<again@client.example.org>\r\nRSET\r\nQUIT\r\n")
        c.expect(250, "2.0.0", "end of data")
        c.expect(250, "2.1.0", "MAIL after data")
        c.expect(250, "2.0.0", "RSET")
        c.expect(221, "2.0.0", "QUIT")
    led.check(mid, msg, rcpts=[REPLY])


def t_null_sender(srv, led):
    mid = marker()
    msg = (
        f"From: Mail Delivery System <MAILER-DAEMON@client.example.org>\r\nTo: bounce+k1@{DOMAIN}\r\n"
        f"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: {mid}\r\n\r\nbounce\r\n"
    ).encode()
    with Client(srv.addr) as c:
        c.ehlo()
        check_reply(c.cmd("MAIL FROM:<>"), 250, "2.1.0", "MAIL FROM:<>")
        check_reply(c.cmd(f"RCPT TO:<bounce+k1@{DOMAIN}>"), 250, "2.1.5", "RCPT bounce+")
        check_reply(c.cmd("DATA"), 354)
        check_reply(send_data(c, msg), 250, "2.0.0", "end of data")
    led.check(mid, msg, mail_from="", rcpts=[f"bounce+k1@{DOMAIN}"])


def t_size_at_mail(srv, led):
    with Client(srv.addr) as c:
        c.ehlo()
        check_reply(c.cmd(f"MAIL FROM:<big@client.example.org> SIZE={MAX_BYTES + 1}"), 552, "5.3.4", "SIZE over")
        # the refused MAIL left no sender behind: a new MAIL is not nested
        check_reply(c.cmd(f"MAIL FROM:<big@client.example.org> SIZE={MAX_BYTES}"), 250, "2.1.0", "SIZE at limit")
        check_reply(c.cmd("RSET"), 250, "2.0.0")
        check_reply(c.cmd("NOOP"), 250)
    # smtplib sends SIZE= itself from the message length
    host, port = srv.addr
    with smtplib.SMTP(host, port, timeout=15) as s:
        s.ehlo()
        code, resp = s.mail("big@client.example.org", ["SIZE=%d" % (MAX_BYTES * 3)])
        assert code == 552 and resp.startswith(b"5.3.4"), (code, resp)


def t_huge_numbers(srv, led):
    """Declared sizes too large for any integer are refused, not wrapped
    around to a small number."""
    bad = []
    with Client(srv.addr) as c:
        c.ehlo()
        for digits in (19, 20, 21, 23, 30):
            size = "9" * digits
            r = c.cmd(f"MAIL FROM:<big@client.example.org> SIZE={size}")
            if r is None or not 500 <= r.code < 600:
                bad.append(f"MAIL FROM:<...> SIZE={size} ({digits} digits) -> {r!r}, want 552 5.3.4 or 501")
                c.cmd("RSET")
        check_reply(c.cmd("NOOP"), 250)
    # BDAT: a chunk size of 999999999999999999995 must not be read as a 5-byte chunk
    mid = marker().encode()
    with Client(srv.addr, timeout=3) as c:
        c.ehlo()
        transaction_mail_rcpt(c)
        c.send(b"BDAT 999999999999999999995 LAST\r\n" + mid[:5])
        try:
            r = c.reply()
        except socket.timeout:
            r = None  # still waiting for the chunk: fine
        if r is not None and r.code == 250:
            bad.append(f"BDAT 999999999999999999995 LAST + 5 bytes -> {r.text!r}: taken as a 5-byte chunk")
    time.sleep(0.2)
    stored = [row for row in srv.rows() if row["raw"] == mid[:5]]
    if stored:
        led.expected[mid.decode()] = (mid[:5], len(stored))  # keep the final tally honest
    assert not bad, "; ".join(bad)


def t_8bitmime_smtputf8(srv, led):
    host, port = srv.addr
    mid = marker()
    sender = "jörg@exämple.de"
    msg = (
        f"From: Jörg Müller <{sender}>\r\nTo: {REPLY}\r\nSubject: Grüße ✓ 日本語\r\n"
        f"Message-ID: {mid}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\nÄrger über Café — ok ✓\r\n.ünïcode line with dot\r\n"
    ).encode("utf-8")
    with smtplib.SMTP(host, port, timeout=15) as s:
        s.ehlo("client.example.org")
        assert s.has_extn("smtputf8") and s.has_extn("8bitmime")
        assert s.sendmail(sender, [REPLY], msg, mail_options=["SMTPUTF8", "BODY=8BITMIME"]) == {}
    led.check(mid, msg, mail_from=sender, rcpts=[REPLY], params_has=["BODY=8BITMIME", "SMTPUTF8"])

    # 8-bit bytes that are not UTF-8 (Latin-1), with BODY=8BITMIME only
    mid = marker()
    msg = simple_message(mid, b"caf\xe9 na\xefve \xff\xfe\x80\r\n")
    with Client(srv.addr) as c:
        c.ehlo()
        transaction(c, mail_params="BODY=8BITMIME")
        check_reply(send_data(c, msg), 250, "2.0.0")
    led.check(mid, msg, params_has=["BODY=8BITMIME"])


def t_dsn_params(srv, led):
    mid = marker()
    msg = simple_message(mid)
    with Client(srv.addr) as c:
        c.ehlo()
        check_reply(c.cmd("MAIL FROM:<dsn@client.example.org> RET=HDRS ENVID=QQ314159"), 250, "2.1.0", "MAIL RET ENVID")
        check_reply(
            c.cmd(f"RCPT TO:<{REPLY}> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;{REPLY}"), 250, "2.1.5", "RCPT NOTIFY ORCPT"
        )
        check_reply(c.cmd(f"RCPT TO:<{POSTMASTER}> NOTIFY=NEVER"), 250, "2.1.5", "RCPT NOTIFY=NEVER")
        check_reply(c.cmd("DATA"), 354)
        check_reply(send_data(c, msg), 250, "2.0.0")
    row = led.check(mid, msg, params_has=["RET=HDRS", "ENVID=QQ314159"])
    params = row["params"]
    first = [p for p in params if REPLY in p and "NOTIFY=" in p]
    assert first, f"no NOTIFY for {REPLY} in {params}"
    assert "NOTIFY=SUCCESS,FAILURE" in first[0], params
    assert f"ORCPT=rfc822;{REPLY}" in first[0] or f"ORCPT={REPLY}" in first[0], f"ORCPT not kept: {params}"
    assert any(POSTMASTER in p and "NOTIFY=NEVER" in p for p in params), params

    mid = marker()
    msg = simple_message(mid)
    with Client(srv.addr) as c:
        c.ehlo()
        transaction(c, mail_params="RET=FULL ENVID=a+2Bb")
        check_reply(send_data(c, msg), 250)
    row = led.check(mid, msg, params_has=["RET=FULL"])
    assert any(p.startswith("ENVID=") for p in row["params"]), row["params"]


def t_garbage_commands(srv, led):
    with Client(srv.addr) as c:
        c.ehlo()
        garbage = [
            b"FOOBAR baz",
            b"\x00\x01\x02\xff\xfe\x80 binary",
            b"MAIL FROM:<unterminated@client.example.org",
            b"MAIL FROM:<a@client.example.org> SIZE=abc",
            b"RCPT",
            b"",
            b"   ",
            b"\xc3\x28 MAIL",
            b"EHLO",
        ]
        for g in garbage:
            r = c.cmd(g)
            assert r is not None, f"connection closed after {g!r}"
            assert 500 <= r.code < 600, f"{g!r}: expected 5xx, got {r}"
        check_reply(c.cmd("NOOP"), 250, None, "NOOP after garbage")
        # the session is still usable for a message
        mid = marker()
        msg = simple_message(mid)
        transaction(c)
        check_reply(send_data(c, msg), 250, "2.0.0")
        check_reply(c.cmd("QUIT"), 221)
    led.check(mid, msg)
    # a command sent without any line ending, then end of stream: no reply, no crash
    with Client(srv.addr) as c:
        c.send(b"EHLO half-a-line")
        c.sock.shutdown(socket.SHUT_WR)
        assert c.at_eof(), "server kept the half-closed connection open"
    with Client(srv.addr) as c:
        check_reply(c.cmd("NOOP"), 250, None, "NOOP on a new connection")


def t_out_of_order(srv, led):
    with Client(srv.addr) as c:
        check_reply(c.cmd("MAIL FROM:<a@client.example.org>"), 503, "5.5.1", "MAIL before EHLO")
        c.ehlo()
        check_reply(c.cmd(f"RCPT TO:<{REPLY}>"), 503, "5.5.1", "RCPT before MAIL")
        check_reply(c.cmd("DATA"), 503, "5.5.1", "DATA before MAIL")
        check_reply(c.cmd("MAIL FROM:<a@client.example.org>"), 250, "2.1.0")
        check_reply(c.cmd("DATA"), 503, "5.5.1", "DATA before RCPT")
        check_reply(c.cmd("MAIL FROM:<b@client.example.org>"), 503, "5.5.1", "nested MAIL")
        check_reply(c.cmd("RCPT TO:<nobody@elsewhere.example>"), 550, "5.7.1")
        check_reply(c.cmd("DATA"), 503, "5.5.1", "DATA with only refused RCPTs")
        check_reply(c.cmd(f"RCPT TO:<{REPLY}>"), 250, "2.1.5")
        mid = marker()
        msg = simple_message(mid)
        check_reply(c.cmd("DATA"), 354)
        check_reply(send_data(c, msg), 250, "2.0.0")
        # after the message the transaction is over again
        check_reply(c.cmd(f"RCPT TO:<{REPLY}>"), 503, "5.5.1", "RCPT after the message")
        check_reply(c.cmd("DATA"), 503, "5.5.1", "DATA after the message")
    # a new connection: the error count starts again (max_errors)
    with Client(srv.addr) as c:
        c.ehlo()
        # EHLO in the middle of a transaction resets it (RFC 5321 §4.1.4)
        check_reply(c.cmd("MAIL FROM:<a@client.example.org>"), 250)
        check_reply(c.cmd(f"RCPT TO:<{REPLY}>"), 250)
        c.ehlo("again.client.example.org")
        check_reply(c.cmd("DATA"), 503, "5.5.1", "DATA after EHLO reset the transaction")
        # BDAT without a transaction: the chunk is read and refused, the stream stays in step
        c.send(b"BDAT 5 LAST\r\nNOOP\n")
        r = c.reply()
        check_reply(r, 503, "5.5.1", "BDAT before MAIL")
        check_reply(c.cmd("NOOP"), 250)
    led.check(mid, msg, mail_from="a@client.example.org", rcpts=[REPLY])


def t_long_line(srv, led):
    with Client(srv.addr, timeout=60) as c:
        c.ehlo()
        chunk = b"A" * (1 << 20)
        for _ in range(10):
            c.send(chunk)
        r = c.reply()
        check_reply(r, 500, "5.5.2", "10 MB line")
        c.send(b"\r\nNOOP\r\n")
        # exactly one reply for the long line: the next one answers NOOP
        check_reply(c.reply(), 250, None, "NOOP after the long line")
        mid = marker()
        msg = simple_message(mid)
        transaction(c)
        check_reply(send_data(c, msg), 250, "2.0.0")
    led.check(mid, msg)
    with Client(srv.addr) as c:
        check_reply(c.cmd("NOOP"), 250, None, "NOOP on another connection")
    # a long MAIL command (over max_line_length, with newline)
    with Client(srv.addr) as c:
        c.ehlo()
        check_reply(c.cmd("MAIL FROM:<" + "x" * 20000 + "@client.example.org>"), 500, "5.5.2", "long MAIL line")
        check_reply(c.cmd("NOOP"), 250)


def t_stop_mid_data(srv, led):
    mids = []
    endings = [
        b"partial body, no end",
        b"whole body\r\n.",          # terminator cut after the dot
        b"whole body\r\n.\r",        # ... after the CR
        b"whole body\r\n\r\n",       # no dot at all
    ]
    for tail in endings:
        mid = marker()
        mids.append(mid)
        c = Client(srv.addr)
        c.ehlo()
        transaction(c)
        c.send(simple_message(mid, b"") + tail)
        c.sock.shutdown(socket.SHUT_WR)
        assert c.at_eof(), "server did not close after the client went away mid-DATA"
        c.close()
    # abrupt reset (RST) mid-DATA
    mid = marker()
    mids.append(mid)
    c = Client(srv.addr)
    c.ehlo()
    transaction(c)
    c.send(simple_message(mid, b"reset me\r\n"))
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    c.close()
    sync_point(srv, led)
    time.sleep(0.3)
    for mid in mids:
        led.assert_absent(mid)


def t_too_many_recipients(srv, led):
    rcpts = [REPLY, POSTMASTER] + [f"bounce+r{i}@{DOMAIN}" for i in range(MAX_RCPTS + 2)]
    mid = marker()
    msg = simple_message(mid)
    with Client(srv.addr) as c:
        c.ehlo()
        c.send("MAIL FROM:<many@client.example.org>\r\n" + "".join(f"RCPT TO:<{r}>\r\n" for r in rcpts))
        c.expect(250, "2.1.0", "MAIL")
        for i, r in enumerate(rcpts):
            if i < MAX_RCPTS:
                c.expect(250, "2.1.5", f"RCPT {i + 1}")
            else:
                c.expect(452, "4.5.3", f"RCPT {i + 1} over max_recipients={MAX_RCPTS}")
        check_reply(c.cmd("DATA"), 354)
        check_reply(send_data(c, msg), 250, "2.0.0")
    led.check(mid, msg, rcpts=rcpts[:MAX_RCPTS])


def t_oversize_in_data(srv, led):
    with Client(srv.addr, timeout=60) as c:
        c.ehlo()
        # 1: over the limit, one huge line without newline, no SIZE given
        big_mid = marker()
        big = simple_message(big_mid, b"x" * (MAX_BYTES + 100) + b"\r\n")
        transaction(c)
        check_reply(send_data(c, big), 552, "5.3.4", "message over max_message_bytes")
        # 2: the connection is usable for the next message
        mid = marker()
        msg = simple_message(mid)
        transaction(c)
        check_reply(send_data(c, msg), 250, "2.0.0", "message after the refused one")
        # 3: exactly at the limit (after unstuffing) is accepted
        at_mid = marker()
        head = simple_message(at_mid, b"")
        line = b"." + b"y" * 998 + b"\r\n"  # stuffed on the wire, 1000 bytes stored
        n = (MAX_BYTES - len(head)) // len(line)
        fill = MAX_BYTES - len(head) - n * len(line) - 2
        at = head + line * n + b"z" * fill + b"\r\n"
        assert len(at) == MAX_BYTES
        transaction(c)
        check_reply(send_data(c, at), 250, "2.0.0", "message of exactly max_message_bytes")
        # 4: one byte more is refused
        over_mid = marker()
        over = simple_message(over_mid, b"") + at[len(head):-2] + b"z\r\n"
        assert len(over) == MAX_BYTES + 1, len(over)
        transaction(c)
        check_reply(send_data(c, over), 552, "5.3.4", "message of max_message_bytes + 1")
        check_reply(c.cmd("NOOP"), 250)
    led.check(mid, msg)
    led.check(at_mid, at)
    led.assert_absent(big_mid)
    led.assert_absent(over_mid)


def t_too_many_errors(srv, led):
    with Client(srv.addr) as c:
        c.ehlo()
        c.send(b"".join(b"BOGUS%d\r\n" % i for i in range(MAX_ERRORS + 5)))
        replies = []
        while True:
            r = c.reply()
            if r is None:
                break
            replies.append(r)
        assert replies, "no reply at all"
        last = replies[-1]
        check_reply(last, 421, "4.7.0", "too many errors")
        assert all(500 <= r.code < 600 for r in replies[:-1]), replies
        assert len(replies) - 1 < MAX_ERRORS + 5, f"all {len(replies) - 1} errors answered before the 421"
        assert len(replies) - 1 >= MAX_ERRORS, f"closed after only {len(replies) - 1} errors (max_errors={MAX_ERRORS})"


def t_http_request(srv, led):
    with Client(srv.addr) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n")
        r = c.reply()
        check_reply(r, 521, None, "GET / HTTP/1.1")
        assert c.at_eof(), "connection not closed after the HTTP request"
    # an HTTP client does not wait for the greeting
    with Client(srv.addr, greet=False) as c:
        c.send(b"POST /api HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}")
        check_reply(c.reply(), 220, None, "greeting")
        check_reply(c.reply(), 521, None, "POST")
        assert c.at_eof()


def t_open_relay(srv, led):
    before = srv.count()
    cases = [
        # (recipient, expected code or None for any 5xx, enhanced code or None)
        ("user%evil.example@gw.example.com", None, None),
        ("@gw.example.com:user@evil.example", 550, "5.7.1"),
        ("@gw.example.com,@relay.example:user@evil.example", 550, "5.7.1"),
        ('"user@evil.example"@gw.example.com', None, None),
        ("user@evil.example@gw.example.com", None, None),
        ("user@evil.example", 550, "5.7.1"),
        ("reply@gw.example.com.evil.example", 550, "5.7.1"),
        ("reply@sub.gw.example.com", 550, "5.7.1"),
        ("reply%gw.example.com@evil.example", 550, "5.7.1"),
        ("evil.example!user@gw.example.com", None, None),
        ("user@[127.0.0.1]", None, None),
        ("reply@gw.example.com@evil.example", None, None),
        ('"reply@gw.example.com"@evil.example', 550, "5.7.1"),
        ("postmaster@evil.example", 550, "5.7.1"),
    ]
    bad = []
    # a few per connection, to stay under max_errors
    for start in range(0, len(cases), 5):
        with Client(srv.addr) as c:
            c.ehlo()
            check_reply(c.cmd("MAIL FROM:<spammer@evil.example>"), 250)
            for rcpt, code, esc in cases[start:start + 5]:
                r = c.cmd(f"RCPT TO:<{rcpt}>")
                assert r is not None, f"connection closed at {rcpt}"
                ok = (r.code == code and (esc is None or r.last.split(" ")[1] == esc)) if code else 500 <= r.code < 600
                if not ok:
                    bad.append(f"RCPT TO:<{rcpt}> -> {r.text!r} (want {code or '5xx'} {esc or ''})")
            check_reply(c.cmd("DATA"), 503, "5.5.1", "DATA with every recipient refused")
    assert not bad, "; ".join(bad)
    assert srv.count() == before, "something was stored"


def t_recipients(srv, led):
    cases = [
        (REPLY, 250, "2.1.5"),
        ("Reply@GW.Example.COM", 250, "2.1.5"),
        (POSTMASTER, 250, "2.1.5"),
        ("postmaster", 250, "2.1.5"),  # RFC 5321 §4.5.1: <postmaster> without domain
        (f"bounce+anything@{DOMAIN}", 250, "2.1.5"),
        (f"reply+abcdefghijklmn23@{DOMAIN}", 550, "5.1.1"),
        (f"reply+ABCDEFGHIJKLMN23@{DOMAIN}", 550, "5.1.1"),
        (f"nobody@{DOMAIN}", 550, "5.1.1"),
        ("reply@elsewhere.example", 550, "5.7.1"),
    ]
    bad = []
    with Client(srv.addr) as c:
        c.ehlo()
        check_reply(c.cmd("MAIL FROM:<a@client.example.org>"), 250)
        for rcpt, code, esc in cases:
            r = c.cmd(f"RCPT TO:<{rcpt}>")
            if r is None or r.code != code or r.last.split(" ")[1] != esc:
                bad.append(f"RCPT TO:<{rcpt}> -> {r!r} (want {code} {esc})")
        check_reply(c.cmd("RSET"), 250)
        # lower-case commands and extra spaces
        mid = marker()
        msg = simple_message(mid)
        check_reply(c.cmd("mail from:<lower@client.example.org>"), 250)
        check_reply(c.cmd(f"rcpt to:<{REPLY}>"), 250)
        check_reply(c.cmd(f"RCPT TO:<{REPLY}>"), 250, "2.1.5", "the same recipient twice")
        check_reply(c.cmd("data"), 354)
        check_reply(send_data(c, msg), 250)
    assert not bad, "; ".join(bad)
    led.check(mid, msg, mail_from="lower@client.example.org", rcpts=[REPLY])


def t_smuggling(srv, led):
    separators = [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\r.\r", b"\r\n.\r"]
    for sep in separators:
        mid, smuggled_mid = marker(), marker()
        before = srv.count()
        content = (
            simple_message(mid, b"first message")
            + sep
            + b"MAIL FROM:<admin@" + DOMAIN.encode() + b">\r\n"
            + b"RCPT TO:<" + REPLY.encode() + b">\r\n"
            + b"DATA\r\n"
            + b"From: admin@" + DOMAIN.encode() + b"\r\nSubject: smuggled\r\nMessage-ID: " + smuggled_mid.encode()
            + b"\r\n\r\nsmuggled body\r\n"
        )
        wire = content + b".\r\nQUIT\r\n"
        expected, rest = smtp_unstuff(wire)
        assert rest == b"QUIT\r\n", (sep, rest)
        with Client(srv.addr) as c:
            c.ehlo()
            transaction(c)
            c.send(wire)
            replies = []
            while True:
                r = c.reply()
                if r is None:
                    break
                replies.append(r)
        codes = [r.code for r in replies]
        assert codes == [250, 221], f"separator {sep!r}: replies {[r.text for r in replies]}"
        row = led.check(mid, expected)
        assert smuggled_mid.encode() in row["raw"] and b"MAIL FROM:<admin@" in row["raw"]
        assert srv.count() == before + 1, f"separator {sep!r}: {srv.count() - before} messages stored"


def t_bdat(srv, led):
    mid = marker()
    part1 = simple_message(mid, b"")
    part2 = b".not stuffed\r\n.\r\nbare\nLF and \x00 NUL\r\n"
    with Client(srv.addr) as c:
        r = c.ehlo()
        assert "CHUNKING" in r.text, r
        transaction_mail_rcpt(c)
        c.send(b"BDAT %d\r\n" % len(part1) + part1)
        check_reply(c.reply(), 250, None, "BDAT chunk 1")
        c.send(b"BDAT %d LAST\r\n" % len(part2) + part2)
        check_reply(c.reply(), 250, None, "BDAT LAST")
        check_reply(c.cmd("NOOP"), 250)
        # DATA inside a BDAT transaction is refused; the transaction goes on
        mid2 = marker()
        chunk = simple_message(mid2, b"after refused DATA\r\n")
        transaction_mail_rcpt(c)
        c.send(b"BDAT %d\r\n" % len(chunk) + chunk)
        check_reply(c.reply(), 250, None, "BDAT chunk")
        check_reply(c.cmd("DATA"), 503, "5.5.1", "DATA after BDAT")
        c.send(b"BDAT 0 LAST\r\n")
        check_reply(c.reply(), 250, None, "BDAT 0 LAST")
        # a chunk over max_message_bytes: 552, then the session goes on
        mid3 = marker()
        big = simple_message(mid3, b"b" * MAX_BYTES)
        transaction_mail_rcpt(c)
        c.send(b"BDAT %d LAST\r\n" % len(big) + big)
        check_reply(c.reply(), 552, "5.3.4", "BDAT over max_message_bytes")
        check_reply(c.cmd("NOOP"), 250, None, "NOOP after the refused BDAT")
    led.check(mid, part1 + part2)
    led.check(mid2, chunk)
    led.assert_absent(mid3)


def transaction_mail_rcpt(c):
    check_reply(c.cmd("MAIL FROM:<chunks@client.example.org>"), 250)
    check_reply(c.cmd(f"RCPT TO:<{REPLY}>"), 250)


def t_raw_bytes_kept(srv, led):
    mid = marker()
    content = (
        simple_message(mid, b"")
        + b"bare LF line\n.dot after bare LF\n..two after bare LF\nCR\ronly\r\n"
        + b"trailing white \t \r\n\r\n\r\n"
        + b"NUL \x00 and DEL \x7f and 8-bit \xe9\xff\r\n"
        + b"." * 5 + b"\r\n"
        + b"long " + b"L" * 200000 + b"\r\n"
        + b"From the start of a line\r\n>From quoted\r\n"
    )
    wire = dot_stuff(content)
    expected, rest = smtp_unstuff(wire)
    assert rest == b""
    with Client(srv.addr) as c:
        c.ehlo()
        transaction(c)
        c.send(wire)
        check_reply(c.reply(), 250, "2.0.0")
    led.check(mid, expected)
    # the stuffing dot of a bare-LF line is removed: the oracle says so too
    assert b"\n.dot after bare LF\n" in expected and b"\n..two after bare LF\n" in expected


def t_byte_at_a_time(srv, led):
    mid = marker()
    msg = simple_message(mid, b"slow\r\n.dot\r\n\r\nend\r\n")
    with Client(srv.addr) as c:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for b in b"EHLO bytewise.client.example.org\r\n":
            c.send(bytes([b]))
        check_reply(c.reply(), 250)
        for line in (f"MAIL FROM:<bytes@client.example.org>\r\nRCPT TO:<{REPLY}>\r\nDATA\r\n").encode():
            c.send(bytes([line]))
        c.expect(250)
        c.expect(250)
        c.expect(354)
        for i, b in enumerate(dot_stuff(msg)):
            c.send(bytes([b]))
            if i % 16 == 0:
                time.sleep(0.002)
        check_reply(c.reply(), 250, "2.0.0", "message sent one byte at a time")
    led.check(mid, msg, helo="bytewise.client.example.org")


def t_same_message_twice(srv, led):
    mid = marker()
    msg = simple_message(mid, b"twice\r\n")
    for _ in range(2):
        with Client(srv.addr) as c:
            c.ehlo()
            transaction(c)
            check_reply(send_data(c, msg), 250, "2.0.0", "a delivery of the same message")
    led.check(mid, msg, copies=(1, 2))


def t_helo_rset_several(srv, led):
    with Client(srv.addr) as c:
        check_reply(c.cmd("HELO old.client.example.org"), 250, None, "HELO")
        check_reply(c.cmd("MAIL FROM:<x@client.example.org>"), 250)
        check_reply(c.cmd(f"RCPT TO:<{REPLY}>"), 250)
        check_reply(c.cmd("RSET"), 250, "2.0.0")
        check_reply(c.cmd("DATA"), 503, "5.5.1", "DATA after RSET")
        mids = []
        for i in range(3):
            mid = marker()
            msg = simple_message(mid, b"message %d\r\n" % i)
            transaction(c, rcpts=[REPLY] if i % 2 == 0 else [POSTMASTER, REPLY])
            check_reply(send_data(c, msg), 250, "2.0.0")
            mids.append((mid, msg, i))
        check_reply(c.cmd("VRFY reply"), 252)
        check_reply(c.cmd("QUIT"), 221)
    for mid, msg, i in mids:
        led.check(mid, msg, helo="old.client.example.org",
                  rcpts=[REPLY] if i % 2 == 0 else [POSTMASTER, REPLY])


def t_concurrent_smtplib(srv, led):
    host, port = srv.addr
    results = {}
    errors = []

    def worker(n):
        try:
            with smtplib.SMTP(host, port, timeout=30) as s:
                for i in range(5):
                    mid = marker()
                    msg = simple_message(mid, (b"worker %d message %d\r\n" % (n, i)) * (50 * i + 1))
                    s.sendmail(f"w{n}@client.example.org", [REPLY], msg)
                    results[mid] = msg
        except Exception as e:  # noqa: BLE001
            errors.append(f"worker {n}: {e!r}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert len(results) == 100, len(results)
    for mid, msg in results.items():
        led.check(mid, msg)


def t_everything_stored(srv, led):
    """Every 250 of this server is stored byte-identical, and nothing else is."""
    rows = srv.rows()
    expected = {sha256(v): k for k, (v, _) in led.expected.items()}
    n = sum(copies for _, copies in led.expected.values())
    assert len(rows) == n, f"{len(rows)} rows stored, {n} expected from the messages answered 250"
    for row in rows:
        assert sha256(row["raw"]) == row["sha256"], f"row {row['id']}: sha256 column wrong"
        assert sha256(row["raw"]) in expected, f"row {row['id']} matches no accepted message"
        assert row["size"] == len(row["raw"])


# ---------------------------------------------------------------------------
# Tests with their own server.


def t_seeded_token_recipients():
    """Recipients that depend on the store: an existing side-conversation
    token, a sender's forwarding address, a plus-mode sender's address. There
    is no API to create them yet, so they are written into a stopped
    server's database (schema.sql), then the server is started again."""
    srv = Server(name="tokens").start()
    try:
        assert srv.stop() == 0
        token, unknown = "abcdefghijklmn23", "abcdefghijklmn22"
        try:
            pid = srv.execute(
                "INSERT INTO parents (external_id, subject, created_at, updated_at) VALUES ('T-1', 'parent', 0, 0)"
            )
            srv.execute(
                "INSERT INTO side_conversations (parent_id, token, subject, sender_email, created_at, updated_at) "
                f"VALUES (?, ?, 'side', '{REPLY}', 0, 0)",
                (pid, token),
            )
            srv.execute(
                "INSERT INTO senders (email, reply_mode, status, forwarding_local, created_at) "
                "VALUES ('support@acme.example', 'plus', 'verified', 'fwd-q7k2x9m4', 0)"
            )
        except Exception as e:  # noqa: BLE001
            raise AssertionError(f"could not seed the store (schema changed?): {e}")
        srv.start()
        led = Ledger(srv)
        cases = [
            (f"reply+{token}@{DOMAIN}", 250, "2.1.5"),
            (f"reply+{token.upper()}@{DOMAIN.upper()}", 250, "2.1.5"),
            (f"reply+{unknown}@{DOMAIN}", 550, "5.1.1"),
            (f"fwd-q7k2x9m4@{DOMAIN}", 250, "2.1.5"),
            (f"FWD-Q7K2X9M4@{DOMAIN}", 250, "2.1.5"),
            (f"support+{token}@acme.example", 250, "2.1.5"),
            (f"support+{unknown}@acme.example", 550, "5.1.1"),
            (f"other+{token}@acme.example", 550, "5.7.1"),
            ("support@acme.example", 550, "5.7.1"),
        ]
        bad = []
        accepted = []
        with Client(srv.addr) as c:
            c.ehlo()
            check_reply(c.cmd("MAIL FROM:<vendor@supplier.example>"), 250)
            for rcpt, code, esc in cases:
                r = c.cmd(f"RCPT TO:<{rcpt}>")
                if r is None or r.code != code or r.last.split(" ")[1] != esc:
                    bad.append(f"RCPT TO:<{rcpt}> -> {r!r} (want {code} {esc})")
                elif code == 250:
                    accepted.append(rcpt)
            mid = marker()
            msg = simple_message(mid, b"a reply to the side conversation\r\n")
            check_reply(c.cmd("DATA"), 354)
            check_reply(send_data(c, msg), 250, "2.0.0")
        assert not bad, "; ".join(bad)
        row = led.check(mid, msg)
        distinct = list(dict.fromkeys(a.lower() for a in accepted))  # duplicates differ only in case
        assert [r.lower() for r in row["rcpts"]] == distinct, f"rcpts {row['rcpts']} for accepted {accepted}"
        rc = srv.stop()
        assert rc == 0, f"exit code {rc}"
    finally:
        srv.cleanup()


def t_slow_client():
    srv = Server(smtp={"command_timeout": "2s", "data_timeout": "2s"}, name="slow").start()
    try:
        led = Ledger(srv)
        # idle after EHLO
        with Client(srv.addr, timeout=20) as c:
            c.ehlo()
            t0 = time.time()
            r = c.reply()
            check_reply(r, 421, "4.4.2", "idle past command_timeout")
            assert time.time() - t0 >= 1.0, "timed out well before command_timeout"
            assert c.at_eof(), "connection not closed after 421"
        # idle right after the greeting
        with Client(srv.addr, timeout=20) as c:
            check_reply(c.reply(), 421, "4.4.2", "idle after greeting")
            assert c.at_eof()
        # a command trickled in slower than the timeout: the timeout is per read
        with Client(srv.addr, timeout=20) as c:
            c.send(b"NO")
            time.sleep(0.8)
            c.send(b"OP\r\n")
            check_reply(c.reply(), 250, None, "NOOP sent in two parts")
        # stalled in DATA past data_timeout: 421 and nothing stored
        mid = marker()
        with Client(srv.addr, timeout=20) as c:
            c.ehlo()
            transaction(c)
            c.send(simple_message(mid, b"stalled\r\n"))
            check_reply(c.reply(), 421, "4.4.2", "stalled in DATA")
            assert c.at_eof()
        sync_point(srv, led)
        led.assert_absent(mid)
        rc = srv.stop()
        assert rc == 0, f"exit code {rc}"
    finally:
        srv.cleanup()


def t_connection_limit():
    limit, total = 512, 600
    srv = Server(smtp={"max_connections": limit, "max_connections_per_ip": 1000}, name="conns").start()
    clients = []
    try:
        for _ in range(total):
            clients.append(Client(srv.addr, timeout=30, greet=False))
        greeted, refused, other = [], [], []
        for c in clients:
            r = c.reply()
            if r is not None and r.code == 220:
                greeted.append(c)
            elif r is not None and r.code == 421 and r.last.split(" ")[1] == "4.7.0":
                refused.append(c)
            else:
                other.append(r)
        assert not other, f"unexpected first replies: {other[:5]}"
        assert len(greeted) == limit, f"{len(greeted)} greeted, {len(refused)} refused (limit {limit})"
        assert len(refused) == total - limit, f"{len(refused)} refused"
        for c in refused:
            assert c.at_eof(), "refused connection left open"
        for c in greeted:
            c.send(b"QUIT\r\n")
        for c in greeted:
            check_reply(c.reply(), 221, None, "QUIT")
            assert c.at_eof()
        for c in clients:
            c.close()
        # the slots are free again
        deadline = time.time() + 10
        while True:
            with Client(srv.addr) as c:
                if c.greeting is not None and c.greeting.code == 220:
                    check_reply(c.cmd("QUIT"), 221)
                    break
            if time.time() > deadline:
                raise AssertionError("no 220 after every session quit")
            time.sleep(0.1)
        rc = srv.stop()
        assert rc == 0, f"exit code {rc}"
    finally:
        for c in clients:
            c.close()
        srv.cleanup()


def t_per_ip_limit():
    srv = Server(smtp={"max_connections_per_ip": 3}, name="perip").start()
    try:
        cs = [Client(srv.addr, greet=False) for _ in range(5)]
        firsts = [c.reply() for c in cs]
        codes = sorted(r.code for r in firsts)
        assert codes == [220, 220, 220, 421, 421], [r.text for r in firsts]
        for c in cs:
            c.close()
        srv.proc.send_signal(signal.SIGINT)
        rc = srv.wait(30)
        assert rc == 0, f"exit code {rc} after SIGINT"
    finally:
        srv.cleanup()


def t_sigterm_during_data():
    srv = Server(smtp={"shutdown_grace": "5s"}, name="sigterm").start()
    try:
        mid = marker()
        msg = simple_message(mid, b"part one\r\n" * 100 + b".dot\r\npart two\r\n")
        wire = dot_stuff(msg)
        a = Client(srv.addr, timeout=20)
        a.ehlo()
        transaction(a)
        a.send(wire[:500])
        b = Client(srv.addr, timeout=20)
        b.ehlo()
        check_reply(b.cmd("NOOP"), 250)
        srv.sigterm()
        check_reply(b.reply(), 421, "4.3.2", "idle session at SIGTERM")
        assert b.at_eof(), "idle session not closed"
        b.close()
        # no new session is served any more
        try:
            with Client(srv.addr, timeout=5, greet=False) as c:
                lines = []
                while True:
                    r = c.reply()
                    if r is None:
                        break
                    lines.append(r)
                assert all(r.code != 250 for r in lines) and (not lines or lines[-1].code == 421), lines
        except (ConnectionRefusedError, ConnectionResetError):
            pass
        # the session in DATA may finish within the grace period
        a.send(wire[500:])
        check_reply(a.reply(), 250, "2.0.0", "message finished during shutdown_grace")
        r = a.reply()
        assert r is None or (r.code == 421 and r.last.split(" ")[1] == "4.3.2"), f"after the message: {r}"
        assert a.at_eof()
        a.close()
        rc = srv.wait(30)
        assert rc == 0, f"exit code {rc}"
        Ledger(srv).check(mid, msg)
    finally:
        srv.cleanup()


def t_sigterm_grace_expires():
    srv = Server(smtp={"shutdown_grace": "2s"}, name="grace").start()
    try:
        mid = marker()
        a = Client(srv.addr, timeout=30)
        a.ehlo()
        transaction(a)
        a.send(simple_message(mid, b"never finished\r\n"))
        time.sleep(0.2)
        srv.sigterm()
        check_reply(a.reply(), 421, "4.3.2", "DATA not finished within shutdown_grace")
        assert a.at_eof()
        a.close()
        rc = srv.wait(30)
        assert rc == 0, f"exit code {rc}"
        Ledger(srv).assert_absent(mid)
        assert srv.count() == 0
    finally:
        srv.cleanup()


def raise_fd_limit():
    """600 client sockets here and as many in the server (which inherits
    the limit) need more than the common default of 1024 descriptors."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ImportError, ValueError, OSError):
        pass


def main():
    raise_fd_limit()
    only = sys.argv[1:]
    runner = Runner()

    def want(name):
        return not only or any(o in name for o in only)

    main_tests = [
        ("smtplib_session", t_smtplib_session),
        ("smtplib_str_message_lf_to_crlf", t_smtplib_str_message),
        ("pipelined_session", t_pipelined),
        ("null_reverse_path", t_null_sender),
        ("size_param_over_limit_552", t_size_at_mail),
        ("huge_size_and_bdat_numbers_not_wrapped", t_huge_numbers),
        ("8bitmime_smtputf8", t_8bitmime_smtputf8),
        ("dsn_params_recorded", t_dsn_params),
        ("garbage_commands_5xx_stay_open", t_garbage_commands),
        ("commands_out_of_order_503", t_out_of_order),
        ("ten_mb_line_500_survives", t_long_line),
        ("client_stops_mid_data_nothing_stored", t_stop_mid_data),
        ("too_many_recipients_452", t_too_many_recipients),
        ("oversize_in_data_552_then_usable", t_oversize_in_data),
        ("open_relay_tricks_refused", t_open_relay),
        ("recipient_policy", t_recipients),
        ("smtp_smuggling_bare_lf_dot", t_smuggling),
        ("bdat_chunking", t_bdat),
        ("raw_bytes_kept_after_unstuffing", t_raw_bytes_kept),
        ("helo_rset_several_messages", t_helo_rset_several),
        ("data_one_byte_at_a_time", t_byte_at_a_time),
        ("same_message_twice_both_250", t_same_message_twice),
        ("concurrent_smtplib_clients", t_concurrent_smtplib),
        ("too_many_errors_421", t_too_many_errors),
        ("http_request_521", t_http_request),
    ]
    if any(want(n) for n, _ in main_tests) or want("every_250_stored"):
        srv = Server(
            smtp={
                "max_message_bytes": MAX_BYTES,
                "max_recipients": MAX_RCPTS,
                "max_errors": MAX_ERRORS,
                "command_timeout": "60s",
                "data_timeout": "60s",
            },
            name="main",
        )
        try:
            srv.start()
            led = Ledger(srv)
            for name, fn in main_tests:
                if want(name):
                    runner.run(name, fn, srv, led)
            if not only:
                runner.run("every_250_stored_byte_identical", t_everything_stored, srv, led)

                def stop_main():
                    rc = srv.stop()
                    assert rc == 0, f"exit code {rc}:\n{srv.log_tail()}"
                runner.run("main_server_sigterm_exit_0", stop_main)

                def no_panic():
                    p = srv.panics()
                    assert not p, f"{len(p)} distinct panic(s) in the server log: " + " | ".join(p[:5])
                runner.run("main_server_log_has_no_panic", no_panic)
        except Exception as e:  # noqa: BLE001 - the server failed to start
            err = e

            def start_failed():
                raise AssertionError(f"main server did not start: {err}")

            runner.run("main_server_start", start_failed)
        finally:
            srv.cleanup()

    for name, fn in [
        ("seeded_token_and_forwarding_recipients", t_seeded_token_recipients),
        ("slow_client_421_timeout", t_slow_client),
        ("600_connections_vs_max_512", t_connection_limit),
        ("per_ip_limit_and_sigint_exit_0", t_per_ip_limit),
        ("sigterm_during_data_finishes_idle_421", t_sigterm_during_data),
        ("sigterm_grace_expires_nothing_stored", t_sigterm_grace_expires),
    ]:
        if want(name):
            runner.run(name, fn)
    return runner.finish()


if __name__ == "__main__":
    sys.exit(main())
