#!/usr/bin/env python3
"""Builds the fuzzers' seed corpora in fuzz/corpus/<target>/ (gitignored).

Seeds come from the shared mail corpus (../shared/corpus relative to the
repository, never copied into the repository) and from the hand-written
seeds below (SMTP dialogues with every command and trick, API requests for
every route). Run by fuzz/run.sh; safe to re-run (files are named by content
hash, so a seed is written once).

    python3 fuzz/corpus.py [--shared PATH] [--out DIR]
"""

import argparse
import hashlib
import json
import os
import sys

TOKEN = "abcdefghijklmn23"
DOMAIN = "gw.example.com"
SKIP_SUFFIXES = (".json", ".md", ".tsv")
SKIP_NAMES = ("COPYING", "MANIFEST", "EXPECTED", "SOURCES")
MAX_SEED = 256 * 1024


def messages(shared):
    """Every message or body file of the shared corpus: (path, bytes)."""
    for root, dirs, files in os.walk(shared):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(SKIP_SUFFIXES) or name.startswith(SKIP_NAMES):
                continue
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                data = f.read()
            if not data:
                continue
            if name.endswith(".mbox") or os.sep + "mailbox" + os.sep in path:
                for i, m in enumerate(split_mbox(data)):
                    yield f"{path}#{i}", m
            else:
                yield path, data


def split_mbox(data):
    out, cur = [], []
    for line in data.splitlines(keepends=True):
        if line.startswith(b"From ") and cur:
            out.append(b"".join(cur))
            cur = []
        if line.startswith(b"From ") and not cur:
            continue
        cur.append(line)
    if cur:
        out.append(b"".join(cur))
    return [m for m in out if m.strip()]


def is_message(path, data):
    head = data[:4096].replace(b"\r\n", b"\n")
    header_block = head.split(b"\n\n", 1)[0]
    return b":" in header_block.split(b"\n", 1)[0] and (
        b"\nFrom:" in b"\n" + header_block or b"\nfrom:" in b"\n" + header_block.lower()
    )


def write(out_dir, data):
    os.makedirs(out_dir, exist_ok=True)
    data = data[:MAX_SEED]
    name = hashlib.sha1(data).hexdigest()
    path = os.path.join(out_dir, name)
    if not os.path.exists(path):
        with open(path, "wb") as f:
            f.write(data)


def dot_stuff(msg):
    msg = msg.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if not msg.endswith(b"\r\n"):
        msg += b"\r\n"
    lines = msg.split(b"\r\n")
    return b"\r\n".join(b"." + l if l.startswith(b".") else l for l in lines)


def smtp_dialogue(msg, rcpt=f"reply+{TOKEN}@{DOMAIN}"):
    return (
        b"EHLO mx.carrier.example\r\nMAIL FROM:<vendor@carrier.example> BODY=8BITMIME\r\n"
        + f"RCPT TO:<{rcpt}>\r\n".encode()
        + b"DATA\r\n"
        + dot_stuff(msg)
        + b".\r\nQUIT\r\n"
    )


SMTP_SEEDS = [
    b"EHLO a\r\nQUIT\r\n",
    b"HELO a\r\nNOOP\r\nRSET\r\nVRFY x\r\nEXPN x\r\nHELP\r\nQUIT\r\n",
    b"EHLO a\r\nSTARTTLS\r\nAUTH PLAIN AGFhAGI=\r\nETRN x\r\nQUIT\r\n",
    b"EHLO a\r\nMAIL FROM:<>\r\nRCPT TO:<postmaster>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n",
    b"EHLO a\r\nMAIL FROM:<a@b> SIZE=100 SMTPUTF8 RET=HDRS ENVID=x\r\n"
    + f"RCPT TO:<reply+{TOKEN}@{DOMAIN}> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@b\r\n".encode()
    + b"BDAT 20\r\nSubject: x\r\n\r\nbody\r\nBDAT 0 LAST\r\nQUIT\r\n",
    b"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<reply@gw.example.com>\r\nBDAT 5 LAST\r\nhello",
    b"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<user%other.example@gw.example.com>\r\n"
    b"RCPT TO:<@a.example,@b.example:c@gw.example.com>\r\n"
    b"RCPT TO:<\"reply+abcdefghijklmn23@evil.example\"@gw.example.com>\r\n"
    b"RCPT TO:<evil.example!user@gw.example.com>\r\n"
    b"RCPT TO:<reply@gw.example.com.>\r\nRCPT TO:<user@[127.0.0.1]>\r\n"
    b"RCPT TO:<reply@xn--gw-xmp.example.com>\r\nRCPT TO:<reply@g\xd0\xb2.example.com>\r\n"
    b"RCPT TO:<bounce+abc@gw.example.com>\r\nRCPT TO:<fwd-fuzz@gw.example.com>\r\n"
    b"RCPT TO:<support+abcdefghijklmn23@acme.com>\r\nQUIT\r\n",
    b"EHLO a\r\nMAIL FROM:<a@b> SIZE=99999999999999999999999\r\nBDAT 99999999999999999999999\r\n",
    b"EHLO a\r\nMAIL FROM:<a@b> REQUIRETLS MT-PRIORITY=3\r\nMAIL FROM:<a@b> BY=120;R\r\n",
    b"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<reply@gw.example.com>\r\nDATA\r\n"
    b"Subject: smuggle\r\n\r\nx\n.\r\nMAIL FROM:<x@y>\r\n.\r\nQUIT\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"EHLO " + b"a" * 5000 + b"\r\nQUIT\r\n",
    b"ehlo a\nmail from:<a@b>\nrcpt to:<reply@gw.example.com>\ndata\nx\n.\nquit\n",
    b"\x00\xff\r\n\r\n" + b"MAIL\r\n" * 12,
    b"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<reply@gw.example.com>\r\nDATA\r\n"
    b"Subject: x\r\n\r\n..leading dot\r\n.\r\nDATA\r\nRSET\r\nQUIT\r\n",
]


def api(method, path, auth="o", ct="j", body=None):
    if body is None:
        body = b""
    elif not isinstance(body, bytes):
        body = json.dumps(body).encode()
    return f"{method} {path}\n{auth}{ct}\n".encode() + body


MULTIPART = (
    b"--XyZ\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n$C\r\n"
    b"--XyZ\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\nThanks, on its way.\r\n"
    b"--XyZ\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\nvendor@carrier.example\r\n"
    b"--XyZ\r\nContent-Disposition: form-data; name=\"attachment\"; filename=\"../../etc/pass\\x00wd.txt\"\r\n"
    b"Content-Type: text/plain\r\n\r\nfile body\r\n--XyZ--\r\n"
)

API_SEEDS = [
    api("GET", "/healthz", "n", "-"),
    api("GET", "/api/openapi.json", "n", "-"),
    api("PUT", "/api/parents/T-2", body={"subject": "S", "requester": {"name": "R", "email": "r@c.example"},
                                         "status": "snoozed", "snoozed_until": "2030-01-01T00:00:00Z",
                                         "assignee": "member@gw.example.com"}),
    api("GET", "/api/parents/T-1"),
    api("GET", "/api/parents/T-1/activity?limit=5"),
    api("POST", "/api/parents/T-1/side-conversations", "m", "j",
        {"to": ["a@vendor.example"], "cc": ["b@vendor.example"], "subject": "Hi", "body_text": "x",
         "body_html": "<p>x</p>", "include_context": True, "share_portal_link": True,
         "attachments": [{"filename": "a.txt", "content_type": "text/plain", "content_base64": "aGk="}]}),
    api("POST", "/api/parents/T-1/side-conversations", "m", "j", {"template": 1}),
    api("GET", "/api/side-conversations?parent=T-1&status=open&limit=2&cursor=abc"),
    api("GET", "/api/side-conversations/$S"),
    api("POST", "/api/side-conversations/$S/messages", "m", "j",
        {"body_text": "more", "cc": ["c@vendor.example"]}),
    api("POST", "/api/side-conversations/$S/close", "m", "j", {}),
    api("POST", "/api/side-conversations/$S/reopen", "m", "j", {}),
    api("POST", "/api/side-conversations/$S/portal/revoke", "v", "j", {}),
    api("GET", "/api/messages/$M"),
    api("GET", "/api/messages/$M/raw"),
    api("GET", "/api/messages/$M/attachments/0"),
    api("GET", "/api/unrouted?limit=1"),
    api("POST", "/api/unrouted/1/assign", "o", "j", {"side_conversation_id": 1}),
    api("GET", "/api/contacts"),
    api("POST", "/api/users", "o", "j", {"email": "n@gw.example.com", "name": "N", "role": "member"}),
    api("GET", "/api/users"),
    api("GET", "/api/me", "v", "-"),
    api("PUT", "/api/me", "m", "j", {"name": "Me", "notifications": "off"}),
    api("GET", "/api/settings"),
    api("PUT", "/api/settings", "o", "j", {"signature": {"text": "-- x", "html": "<b>x</b>"},
                                          "default_sender": None, "side_conversations_enabled": True}),
    api("POST", "/api/senders", "o", "j", {"email": "help@shop.example", "name": "Help",
                                          "reply_mode": "plus", "signature": {"text": "t"}}),
    api("GET", "/api/senders"),
    api("GET", "/api/senders/support@acme.com"),
    api("POST", "/api/senders/support@acme.com/verify", "o", "j", {"code": "123456"}),
    api("DELETE", "/api/senders/help@shop.example"),
    api("POST", "/api/webhooks", "o", "j", {"url": "http://127.0.0.1:9/hook", "secret": "s3cret",
                                           "events": ["message.received"]}),
    api("GET", "/api/webhooks"),
    api("GET", "/api/webhooks/1/deliveries"),
    api("DELETE", "/api/webhooks/1"),
    api("POST", "/api/templates", "o", "j", {"name": "T", "to": ["v@x.example"], "subject": "{{parent.id}}",
                                            "body_text": "Hi {{requester.name}} {{agent.name}}"}),
    api("GET", "/api/templates"),
    api("DELETE", "/api/templates/1"),
    api("GET", "/p/$P", "n", "-"),
    api("GET", "/p/$P/attachments/$M/0", "n", "-"),
    api("POST", "/p/$P/reply", "n", "m", MULTIPART),
    api("GET", "/api/parents/x' OR '1'='1", "o", "-"),
    api("GET", "/api/side-conversations?parent=%27%3B%20DROP%20TABLE%20messages%3B--", "o", "-"),
    api("POST", "/api/parents/T-1/side-conversations", "m", "j", b"[" * 200 + b"]" * 200),
    api("PUT", "/api/parents/T-3", "o", "j", b'{"subject": "a\\r\\nBcc: x@evil.example"}'),
    api("PUT", "/api/parents/T-3", "o", "t", b"not json"),
    api("GET", "/api/nope", "x", "-"),
]


IMAP_SEEDS = [
    b"a1 CAPABILITY\r\na2 LOGIN member@gw.example.com $K\r\na3 LIST \"\" \"*\"\r\na4 LOGOUT\r\n",
    b"a1 LOGIN owner@gw.example.com $O\r\na2 LSUB \"\" \"*\"\r\na3 STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN)\r\n"
    b"a4 SELECT INBOX\r\na5 FETCH 1:* (FLAGS UID INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE)\r\n"
    b"a6 UID FETCH 1:* (BODY.PEEK[HEADER] BODY.PEEK[TEXT] BODY[1] BODY[1.MIME] BODY.PEEK[]<0.10>)\r\n"
    b"a7 SEARCH ALL UNSEEN FROM vendor SUBJECT pallet SINCE 1-Jan-2020 BEFORE 1-Jan-2100\r\n"
    b"a8 UID SEARCH UID 1:*\r\na9 STORE 1 +FLAGS (\\Seen \\Flagged)\r\na10 UID STORE 1 -FLAGS.SILENT (\\Seen)\r\n"
    b"a11 THREAD REFERENCES UTF-8 ALL\r\na12 NOOP\r\na13 CLOSE\r\na14 LOGOUT\r\n",
    b"a1 LOGIN owner@gw.example.com $O\r\na2 EXAMINE \"Tickets/T-1\"\r\na3 FETCH 1 (RFC822 RFC822.HEADER RFC822.TEXT)\r\n"
    b"a4 SELECT Unrouted\r\na5 IDLE\r\nDONE\r\na6 LOGOUT\r\n",
    b"a1 AUTHENTICATE PLAIN\r\nAG1lbWJlckBndy5leGFtcGxlLmNvbQBub3Bl\r\na2 LOGIN {5}\r\nabcde {3}\r\nxyz\r\n",
    b"a1 LOGIN member@gw.example.com $K\r\na2 SELECT INBOX\r\na3 COPY 1 INBOX\r\na4 APPEND INBOX {3}\r\nabc\r\n"
    b"a5 EXPUNGE\r\na6 CREATE x\r\na7 FETCH 999999999:* FLAGS\r\na8 FETCH * (BODY[999.1.2])\r\n",
    b"* BAD\r\n\r\na\r\n\x00\xff\r\na1 SELECT\r\n",
]

JMAP_USING = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"]
JMAP_SEEDS = [
    {"using": JMAP_USING, "methodCalls": [["Mailbox/get", {"accountId": "$A"}, "0"]]},
    {"using": JMAP_USING, "methodCalls": [
        ["Email/query", {"accountId": "$A", "filter": {"operator": "AND", "conditions": [
            {"inMailbox": "x"}, {"from": "vendor"}, {"text": "pallet"}, {"after": "2020-01-01T00:00:00Z"},
            {"before": "2100-01-01T00:00:00Z"}]}, "sort": [{"property": "receivedAt", "isAscending": False}],
            "position": 0, "limit": 10, "collapseThreads": True}, "q"],
        ["Email/get", {"accountId": "$A", "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"},
                       "properties": ["id", "threadId", "mailboxIds", "keywords", "from", "subject", "preview",
                                      "bodyValues", "textBody", "htmlBody", "attachments", "header:From:asAddresses"],
                       "fetchTextBodyValues": True, "fetchHTMLBodyValues": True, "maxBodyValueBytes": 100}, "g"],
        ["Thread/get", {"accountId": "$A", "#ids": {"resultOf": "g", "name": "Email/get", "path": "/list/*/threadId"}}, "t"],
    ]},
    {"using": JMAP_USING, "methodCalls": [
        ["Email/set", {"accountId": "$A", "update": {"x": {"keywords/$seen": True}}}, "s"],
        ["Email/changes", {"accountId": "$A", "sinceState": "0", "maxChanges": 5}, "c"],
        ["Mailbox/changes", {"accountId": "$A", "sinceState": "0"}, "m"],
        ["Mailbox/query", {"accountId": "$A"}, "mq"],
        ["Core/echo", {"hello": [1, 2, 3]}, "e"],
    ]},
    {"using": [], "methodCalls": [["Nope/nope", {}, "x"]]},
    {"using": JMAP_USING, "methodCalls": [["Email/get", {"accountId": "a999", "ids": None}, "0"]] * 3},
]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(here, "..", "..", "shared", "corpus"))
    ap.add_argument("--out", default=os.path.join(here, "corpus"))
    args = ap.parse_args()

    for seed in SMTP_SEEDS:
        write(os.path.join(args.out, "smtp_session"), seed)
    for seed in API_SEEDS:
        write(os.path.join(args.out, "api_request"), seed)
    for seed in IMAP_SEEDS:
        write(os.path.join(args.out, "imap_command"), seed)
    for who, seed in zip("omvoo", JMAP_SEEDS):
        write(os.path.join(args.out, "jmap_request"), who.encode() + json.dumps(seed).encode())
    write(os.path.join(args.out, "jmap_request"), b"o" + b"[" * 5000)
    write(os.path.join(args.out, "api_request"), api("GET", "/.well-known/jmap", "m", "-"))
    write(os.path.join(args.out, "api_request"), api("GET", "/jmap/download/$A/x/pod.pdf", "o", "-"))
    write(os.path.join(args.out, "api_request"), api("POST", "/jmap/upload/$A", "o", "t", b"data"))

    if not os.path.isdir(args.shared):
        print(f"corpus.py: {args.shared} is missing; only the hand-written seeds were written",
              file=sys.stderr)
        return
    counts = {"ingest": 0, "reply_text": 0, "smtp_session": 0, "api_request": 0}
    for i, (path, data) in enumerate(messages(args.shared)):
        if is_message(path, data):
            write(os.path.join(args.out, "ingest"), bytes([i % 5]) + data)
            counts["ingest"] += 1
            body = data.replace(b"\r\n", b"\n").split(b"\n\n", 1)
            if len(body) == 2 and i % 3 == 0:
                write(os.path.join(args.out, "reply_text"), body[1])
            if len(data) <= 32 * 1024 and i % 4 == 0:
                write(os.path.join(args.out, "smtp_session"), smtp_dialogue(data))
                counts["smtp_session"] += 1
        else:
            write(os.path.join(args.out, "reply_text"), data)
            counts["reply_text"] += 1
            if len(data) <= 8 * 1024 and counts["api_request"] < 40:
                # The same body as an agent follow-up and as a start.
                body = data.decode("utf-8", "replace")
                write(os.path.join(args.out, "api_request"),
                      api("POST", "/api/side-conversations/$S/messages", "m", "j",
                          {"body_text": body, "body_html": "<p>" + body + "</p>"}))
                counts["api_request"] += 1
        if path.endswith((".html", ".htm")) or b"<html" in data[:4096].lower():
            write(os.path.join(args.out, "reply_text"), data)
    print("corpus.py: seeds from the shared corpus: "
          + ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
