#!/usr/bin/env python3
"""Outside-client tests of backchannel's submission listener (SPEC §12).

Drives the real binary ($BACKCHANNEL_BIN, else target/release/backchannel,
else target/debug/backchannel) over 127.0.0.1 with three real mail
clients, each sending as an agent (user name: the email, password: the API
token) with STARTTLS and AUTH:

- Python smtplib: STARTTLS, AUTH, a reply by In-Reply-To; and a refusal
  whose reason reaches the client;
- swaks: `--tls --auth PLAIN`, to the side conversation's reply address;
- msmtp: a config file (STARTTLS, auth plain, the certificate trusted).

Each one's message must show up as a follow-up in the thread, through the
HTTP API. Prints one line per test and `N passed, M failed`; exits 1 on any
failure. `python3 submission_clients.py NAME...` runs only those tests.
"""

import json
import os
import shutil
import smtplib
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from email.message import EmailMessage

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bc_harness import Runner, Server  # noqa: E402

ANN = "ann@acme.com"
VENDOR = "vera@vendor.example"


def make_certificate(directory):
    """A self-signed certificate for localhost and 127.0.0.1 (openssl)."""
    cert = os.path.join(directory, "cert.pem")
    key = os.path.join(directory, "key.pem")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
            "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


class Gateway:
    """The binary with TLS on, Ann (member) and one side conversation."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="bc-submission-")
        self.cert, key = make_certificate(self.tmp)
        # [smtp]'s certificate is the submission listener's by default.
        self.server = Server(smtp={"tls_cert": self.cert, "tls_key": key}, name="submission")
        self.token = self.cli("user", "add", "--email", ANN, "--name", "Ann Agent", "--role", "member")
        self.server.start()
        with open(self.server.ready) as f:
            addrs = json.load(f)
        assert "submission" in addrs, f"no submission address in the ready file: {addrs}"
        host, port = addrs["submission"].rsplit(":", 1)
        assert host == "127.0.0.1", addrs
        self.host, self.port = host, int(port)
        self.http = addrs["http"]
        sc = self.api(
            "POST",
            "/api/parents/T-1/side-conversations",
            {"to": [VENDOR], "subject": "Pallet 7 delayed", "body_text": "When does pallet 7 ship?"},
        )
        self.sc = sc["id"]
        self.reply_address = sc["reply_address"]
        self.first_message_id = sc["messages"][0]["message_id"]

    def cli(self, *args):
        r = subprocess.run(
            [self.server.binary, "--config", self.server.config_path, *args],
            capture_output=True,
            text=True,
            env=self.server.env,
            timeout=60,
        )
        assert r.returncode == 0, f"{args}: {r.stderr}"
        return r.stdout.strip()

    def api(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://{self.http}{path}", data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def follow_up_with(self, text, timeout=30):
        """The thread's outbound message whose text holds `text`."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            thread = self.api("GET", f"/api/side-conversations/{self.sc}")
            for m in thread.get("messages", []):
                if m["direction"] == "out" and text in (m.get("text") or ""):
                    return m
            time.sleep(0.1)
        raise AssertionError(f"no follow-up with {text!r} in side conversation {self.sc}")

    def message(self, marker, body_extra=""):
        msg = EmailMessage()
        msg["From"] = f"Ann Agent <{ANN}>"
        msg["To"] = VENDOR
        msg["Subject"] = "Re: Pallet 7 delayed"
        msg["Message-ID"] = f"<{uuid.uuid4().hex}@client.example>"
        msg["In-Reply-To"] = f"<{self.first_message_id}>"
        msg["References"] = f"<{self.first_message_id}>"
        msg.set_content(f"{marker}\n{body_extra}\nOn Tue, Vera wrote:\n> internal: do not forward\n")
        return msg

    def close(self):
        self.server.stop()
        self.server.cleanup()
        shutil.rmtree(self.tmp, ignore_errors=True)


def t_smtplib(gw):
    marker = f"from smtplib {uuid.uuid4().hex[:8]}"
    ctx = ssl.create_default_context(cafile=gw.cert)
    with smtplib.SMTP(gw.host, gw.port, timeout=30) as s:
        s.ehlo("client.example")
        assert s.has_extn("starttls"), s.esmtp_features
        s.starttls(context=ctx)
        s.ehlo("client.example")
        assert "PLAIN" in s.esmtp_features.get("auth", ""), s.esmtp_features
        code, _ = s.login(ANN, gw.token)
        assert code == 235, code
        refused = s.send_message(gw.message(marker))
        assert refused == {}, refused
    m = gw.follow_up_with(marker)
    assert m["from"]["email"] != ANN, f"the gateway composes the sender: {m['from']}"
    assert "do not forward" not in m["text"], m["text"]


def t_smtplib_refusal_reason(gw):
    ctx = ssl.create_default_context(cafile=gw.cert)
    with smtplib.SMTP(gw.host, gw.port, timeout=30) as s:
        s.starttls(context=ctx)
        s.login(ANN, gw.token)
        msg = EmailMessage()
        msg["From"] = ANN
        msg["To"] = VENDOR
        msg["Subject"] = "no thread"
        msg.set_content("This names no side conversation.")
        try:
            s.send_message(msg)
        except smtplib.SMTPDataError as e:
            assert e.smtp_code == 550, e
            assert b"no side conversation to send this in" in e.smtp_error, e.smtp_error
        else:
            raise AssertionError("a message without a target was accepted")
    # A wrong token: 535.
    with smtplib.SMTP(gw.host, gw.port, timeout=30) as s:
        s.starttls(context=ctx)
        try:
            s.login(ANN, "not-the-token")
        except smtplib.SMTPAuthenticationError as e:
            assert e.smtp_code == 535, e
        else:
            raise AssertionError("a wrong token logged in")


def t_swaks(gw):
    marker = f"from swaks {uuid.uuid4().hex[:8]}"
    r = subprocess.run(
        [
            "swaks", "--server", f"{gw.host}:{gw.port}", "--tls",
            "--auth", "PLAIN", "--auth-user", ANN, "--auth-password", gw.token,
            "--from", ANN, "--to", gw.reply_address,
            "--header", "Subject: Re: Pallet 7 delayed", "--body", marker,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, f"swaks exit {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-1000:]}"
    assert "Sent in side conversation" in r.stdout, r.stdout[-2000:]
    gw.follow_up_with(marker)


def t_msmtp(gw):
    marker = f"from msmtp {uuid.uuid4().hex[:8]}"
    conf = os.path.join(gw.tmp, "msmtprc")
    with open(conf, "w") as f:
        f.write(
            "\n".join(
                [
                    "defaults",
                    "tls on",
                    "tls_starttls on",
                    f"tls_trust_file {gw.cert}",
                    "",
                    "account backchannel",
                    f"host {gw.host}",
                    f"port {gw.port}",
                    f"from {ANN}",
                    "auth plain",
                    f"user {ANN}",
                    f"password {gw.token}",
                    "",
                    "account default : backchannel",
                    "",
                ]
            )
        )
    os.chmod(conf, 0o600)  # msmtp refuses a readable file holding a password
    raw = gw.message(marker).as_bytes()
    r = subprocess.run(
        ["msmtp", "-C", conf, "-a", "backchannel", VENDOR],
        input=raw,
        capture_output=True,
        timeout=60,
    )
    assert r.returncode == 0, f"msmtp exit {r.returncode}: {r.stderr.decode(errors='replace')}"
    gw.follow_up_with(marker)


def main():
    only = sys.argv[1:]
    runner = Runner()
    tests = [
        ("smtplib_starttls_auth_reply", t_smtplib),
        ("smtplib_sees_the_refusal_reason", t_smtplib_refusal_reason),
        ("swaks_tls_auth_plain", t_swaks),
        ("msmtp_config_file", t_msmtp),
    ]
    gw = Gateway()
    try:
        for name, fn in tests:
            if not only or any(o in name for o in only):
                runner.run(name, fn, gw)
        panics = gw.server.panics()
        if panics:
            runner.failed += 1
            print(f"FAIL server panicked: {panics}", flush=True)
    finally:
        gw.close()
    return runner.finish()


if __name__ == "__main__":
    sys.exit(main())
