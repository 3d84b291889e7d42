"""An agent works from mutt (SPEC §12), end to end against the real binary.

mutt runs under tmux, reading the gateway over IMAP and sending through its
submission listener, exactly as a person would configure it (the muttrc
written below is the one docs/agents.md shows). The vendor's mailbox is a
small SMTP sink on 127.0.0.1 that the gateway relays its outbound mail to.

1. The vendor replies to a side conversation; the agent opens INBOX in
   mutt, presses `r`, writes above the quote, sends: the vendor receives a
   follow-up composed by the gateway (its Message-ID, the token, the
   signature), without the quoted text; the thread shows it.
2. The agent starts a side conversation from mutt, writing to
   `ticket+T-1@gw.example.com` and the vendor.
3. The agent replies to the notification email of a vendor reply (in their
   own mailbox, here a Maildir mutt opens): it goes to the notification's
   agent-reply address and becomes a follow-up.

Skips (exit 0, with a notice) when mutt or tmux is missing; `.ci/run`
installs both. Only 127.0.0.1 is contacted.
"""

import email
import email.policy
import json
import os
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bc_harness as h  # noqa: E402

DEADLINE = int(os.environ.get("BC_DEADLINE", "120"))


def wait_for(what, check, timeout=DEADLINE):
    """Polls `check` until it returns something truthy; fails after `timeout`."""
    end = time.time() + timeout
    while time.time() < end:
        v = check()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Sink:
    """An SMTP server on 127.0.0.1 that keeps every message: the vendors'
    and the agent's mailboxes."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.messages = []  # (rcpts, bytes)
        self.lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn):
        f = conn.makefile("rb")
        send = lambda line: conn.sendall(line.encode() + b"\r\n")  # noqa: E731
        send("220 sink.test ESMTP")
        rcpts = []
        try:
            while True:
                line = f.readline()
                if not line:
                    return
                cmd = line.decode("utf-8", "replace").strip()
                up = cmd.upper()
                if up.startswith("EHLO"):
                    conn.sendall(b"250-sink.test\r\n250-8BITMIME\r\n250 SIZE 100000000\r\n")
                elif up.startswith("HELO"):
                    send("250 sink.test")
                elif up.startswith("MAIL"):
                    rcpts = []
                    send("250 2.1.0 ok")
                elif up.startswith("RCPT"):
                    rcpts.append(cmd.split(":", 1)[1].strip().split()[0].strip("<>"))
                    send("250 2.1.5 ok")
                elif up == "DATA":
                    send("354 go on")
                    data = b""
                    while True:
                        l = f.readline()
                        if not l or l in (b".\r\n", b".\n"):
                            break
                        data += l[1:] if l.startswith(b"..") else l
                    with self.lock:
                        self.messages.append((list(rcpts), data))
                    send("250 2.0.0 kept")
                elif up == "QUIT":
                    send("221 bye")
                    return
                else:
                    send("250 ok")
        except OSError:
            return
        finally:
            conn.close()

    def to(self, addr):
        with self.lock:
            return [m for r, m in self.messages if addr in r]


class Gateway:
    def __init__(self, sink):
        self.binary = h.find_binary()
        self.dir = tempfile.mkdtemp(prefix="bc-mutt-")
        dns = h.stub_dns()
        self.config = os.path.join(self.dir, "c.toml")
        with open(self.config, "w") as f:
            f.write(
                f"""domain = "{h.DOMAIN}"
data_dir = "{self.dir}/data"
[smtp]
listen = "127.0.0.1:0"
[http]
listen = "127.0.0.1:0"
metrics_listen = ""
[imap]
listen = "127.0.0.1:0"
[submission]
listen = "127.0.0.1:0"
[dns]
nameservers = ["127.0.0.1:{dns.port}"]
timeout = "1s"
[ingest]
authenticate = false
[notifications]
batch_window = "1s"
[outbound]
mode = "relay"
relay_url = "smtp://127.0.0.1:{sink.port}"
allow_destinations = ["127.0.0.0/8"]
retry_schedule = ["1s"]
"""
            )
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BACKCHANNEL_")}
        self.env["RUST_LOG"] = "warn"

    def cli(self, *args):
        r = subprocess.run(
            [self.binary, "--config", self.config, *args],
            capture_output=True, text=True, env=self.env, timeout=60,
        )
        assert r.returncode == 0, f"{args}: {r.stderr}"
        return r.stdout.strip()

    def start(self):
        ready = os.path.join(self.dir, "ready.json")
        self.log = open(os.path.join(self.dir, "serve.log"), "ab")
        self.proc = subprocess.Popen(
            [self.binary, "--config", self.config, "serve", "--ready-file", ready],
            stdout=self.log, stderr=subprocess.STDOUT, env=self.env,
        )
        self.addrs = wait_for("the ready file", lambda: os.path.exists(ready) and os.path.getsize(ready) > 0 and json.load(open(ready)))
        for k in ("smtp", "http", "imap", "submission"):
            assert self.addrs[k].startswith("127.0.0.1:"), self.addrs

    def api(self, method, path, token, body=None):
        req = urllib.request.Request(
            f"http://{self.addrs['http']}{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"null")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.log.close()


class Mutt:
    """mutt in a tmux session; the editor writes `next_text` above the quote."""

    def __init__(self, workdir, gw, token, folder=None):
        self.dir = workdir
        self.session = f"bcmutt{os.getpid()}"
        self.text_file = os.path.join(workdir, "next_text")
        editor = os.path.join(workdir, "editor.sh")
        with open(editor, "w") as f:
            f.write(
                '#!/bin/sh\n{ cat "' + self.text_file + '"; printf "\\n"; cat "$1"; } > "$1.new" && mv "$1.new" "$1"\n'
                # mutt asks "Attachment modified. Update encoding?" when the
                # file looks newer than its own stamp (same-second races).
                + 'touch -d "10 seconds ago" "$1"\n'
            )
        os.chmod(editor, 0o755)
        imap = gw.addrs["imap"]
        sub_host, sub_port = gw.addrs["submission"].rsplit(":", 1)
        self.muttrc = os.path.join(workdir, "muttrc")
        with open(self.muttrc, "w") as f:
            f.write(
                f"""# Reading: the gateway's IMAP; sending: its submission port.
set from = "ann@acme.com"
set realname = "Ann Agent"
set imap_user = "ann@acme.com"
set imap_pass = "{token}"
set folder = "imap://{imap}/"
set spoolfile = "+INBOX"
set record = "+Sent"
set smtp_url = "smtp://ann%40acme.com@{sub_host}:{sub_port}/"
set smtp_pass = "{token}"
set ssl_starttls = no
set ssl_force_tls = no
set editor = "{editor}"
set edit_headers = no
set fast_reply = yes
set include = yes
set reply_to = yes
set askcc = no
set postpone = no
set abort_unmodified = no
set sort = date
set mail_check = 1
set timeout = 1
set header_cache = ""
set message_cachedir = ""
set certificate_file = "{workdir}/certs"
"""
            )
        cmd = f"mutt -n -F {self.muttrc}" + (f" -f {folder}" if folder else "")
        subprocess.run(["tmux", "kill-session", "-t", self.session], capture_output=True)
        subprocess.run(
            ["tmux", "new-session", "-d", "-s", self.session, "-x", "200", "-y", "50", cmd],
            check=True, env={**os.environ, "TERM": "xterm", "HOME": workdir},
        )

    def screen(self):
        r = subprocess.run(["tmux", "capture-pane", "-p", "-t", self.session], capture_output=True, text=True)
        return r.stdout

    def wait_screen(self, text, timeout=DEADLINE):
        return wait_for(f"mutt to show {text!r}", lambda: text in self.screen(), timeout)

    def keys(self, *keys):
        subprocess.run(["tmux", "send-keys", "-t", self.session, *keys], check=True)

    def write(self, text):
        with open(self.text_file, "w") as f:
            f.write(text + "\n")

    def send(self):
        """Presses `y` in the compose menu and answers mutt's questions
        until it reports the mail sent."""
        self.keys("y")

        def sent():
            screen = self.screen()
            if "Update encoding" in screen:
                self.keys("y")
            return "Mail sent" in screen

        wait_for("mutt to send the mail", sent)

    def close(self):
        subprocess.run(["tmux", "kill-session", "-t", self.session], capture_output=True)


def vendor_reply(gw, token, subject, body, message_id):
    msg = (
        f"From: Vera <vera@vendor.example>\r\nTo: reply+{token}@{h.DOMAIN}\r\n"
        f"Subject: {subject}\r\nMessage-ID: <{message_id}>\r\n"
        f"Date: Mon, 07 Dec 2026 10:00:00 +0000\r\n\r\n{body}\r\n"
    )
    host, port = gw.addrs["smtp"].rsplit(":", 1)
    with smtplib.SMTP(host, int(port), timeout=30) as s:
        s.sendmail("vera@vendor.example", [f"reply+{token}@{h.DOMAIN}"], msg.encode())


def thread(gw, token, sc):
    return gw.api("GET", f"/api/side-conversations/{sc}", token)


def main():
    for tool in ("mutt", "tmux"):
        if shutil.which(tool) is None:
            print(f"mutt_e2e: SKIPPED — {tool} is not installed (.ci/run installs it)")
            return 0
    sink = Sink()
    gw = Gateway(sink)
    work = tempfile.mkdtemp(prefix="bc-mutt-home-")
    mutt = None
    try:
        token = gw.cli("user", "add", "--email", "ann@acme.com", "--name", "Ann Agent", "--role", "member")
        gw.start()
        gw.api("PUT", "/api/parents/T-1", token, {"subject": "Order 1001", "requester": {"name": "Rae", "email": "rae@customer.example"}, "assignee": "ann@acme.com"})
        sc = gw.api("POST", "/api/parents/T-1/side-conversations", token, {"to": ["vera@vendor.example"], "subject": "Pallet 7", "body_text": "Where is pallet 7?"})
        sc_id, sc_token = sc["id"], sc["token"]
        first_id = sc["messages"][0]["message_id"]
        wait_for("the first message at the vendor", lambda: sink.to("vera@vendor.example"))

        # 1. Read the vendor's reply in mutt and answer it.
        vendor_reply(gw, sc_token, "Re: Pallet 7", "It is in Rotterdam.\r\nINTERNAL-MARKER-VENDOR", f"v1.{sc_token}@vendor.example")
        wait_for("the reply on the thread", lambda: len(thread(gw, token, sc_id)["messages"]) == 2)
        mutt = Mutt(work, gw, token)
        mutt.wait_screen("Re: Pallet 7")
        mutt.write("Thanks, please ship it today.")
        mutt.keys("r")
        mutt.wait_screen("y:Send")
        mutt.send()
        wait_for("the follow-up on the thread", lambda: len(thread(gw, token, sc_id)["messages"]) == 3)
        out = thread(gw, token, sc_id)["messages"][2]
        assert out["direction"] == "out", out
        assert "Thanks, please ship it today." in out["text"], out["text"]
        assert "INTERNAL-MARKER-VENDOR" not in out["text"], "the quoted reply was forwarded"
        got = wait_for("the follow-up at the vendor", lambda: [m for m in sink.to("vera@vendor.example") if b"ship it today" in m])
        mail = email.message_from_bytes(got[0], policy=email.policy.default)
        assert sc_token in mail["Message-ID"], mail["Message-ID"]
        assert first_id in (mail["References"] or ""), mail["References"]
        assert "INTERNAL-MARKER-VENDOR" not in got[0].decode("utf-8", "replace")
        print("mutt_e2e: reply from mutt → follow-up composed by the gateway: ok")

        # 2. Start a side conversation from mutt.
        before = len(gw.api("GET", "/api/parents/T-1", token)["side_conversations"])
        mutt.write("Can you quote for 3 pallets to Lyon?")
        mutt.keys("m")
        mutt.wait_screen("To:")
        mutt.keys(f"ticket+T-1@{h.DOMAIN}, quotes@carrier.example", "Enter")
        mutt.wait_screen("Subject:")
        mutt.keys("Lyon quote", "Enter")
        mutt.wait_screen("y:Send")
        mutt.send()
        wait_for("the new side conversation", lambda: len(gw.api("GET", "/api/parents/T-1", token)["side_conversations"]) == before + 1)
        got = wait_for("the start at the carrier", lambda: sink.to("quotes@carrier.example"))
        mail = email.message_from_bytes(got[0], policy=email.policy.default)
        assert mail["Subject"] == "Lyon quote", mail["Subject"]
        assert "3 pallets" in mail.get_body(("plain",)).get_content()
        print("mutt_e2e: start from mutt with ticket+T-1 → new side conversation: ok")
        mutt.keys("q")
        mutt.close()

        # 3. Reply to the notification email of a vendor reply, in the agent's own mailbox.
        vendor_reply(gw, sc_token, "Re: Pallet 7", "It left at noon.", f"v2.{sc_token}@vendor.example")
        note = wait_for("the notification to the agent", lambda: [m for m in sink.to("ann@acme.com") if b"It left at noon." in m])
        maildir = os.path.join(work, "agentmail")
        for sub in ("new", "cur", "tmp"):
            os.makedirs(os.path.join(maildir, sub), exist_ok=True)
        with open(os.path.join(maildir, "new", "1.notification"), "wb") as f:
            f.write(note[0])
        count = len(thread(gw, token, sc_id)["messages"])
        mutt = Mutt(work, gw, token, folder=maildir)
        mutt.wait_screen("backchannel")
        mutt.write("Great, thank you.")
        mutt.keys("r")
        mutt.wait_screen("y:Send")
        mutt.send()
        wait_for("the follow-up from the notification reply", lambda: len(thread(gw, token, sc_id)["messages"]) == count + 1)
        out = thread(gw, token, sc_id)["messages"][-1]
        assert out["direction"] == "out" and "Great, thank you." in out["text"], out
        assert "It left at noon." not in out["text"], "the quoted notification was forwarded"
        print("mutt_e2e: reply to a notification email → follow-up: ok")
        return 0
    except Exception:
        if mutt is not None:
            print("---- mutt screen ----\n" + mutt.screen())
        try:
            with open(os.path.join(gw.dir, "serve.log"), "rb") as f:
                print("---- serve.log (tail) ----\n" + f.read()[-4000:].decode("utf-8", "replace"))
        except OSError:
            pass
        raise
    finally:
        if os.environ.get("BC_KEEP_TMP"):
            print(f"mutt_e2e: kept {gw.dir} and {work}; tmux session {mutt.session if mutt else '-'}")
            return
        if mutt is not None:
            mutt.close()
        try:
            gw.stop()
        except Exception:
            pass
        shutil.rmtree(gw.dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
