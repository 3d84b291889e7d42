#!/usr/bin/env python3
"""A stub DNS server on 127.0.0.1 for the outside tests (bc_harness.StubDns):
NXDOMAIN for every name but those given as `--txt name=text`.

    stub_dns.py PORT_FILE [--txt carrier.example="v=spf1 ip4:127.0.0.0/8 -all"] ...
                          [--records-file RECORDS.json]

With --records-file, the JSON object {name: text} in that file is read again
whenever the file changes, so records can be published while it runs.

Writes the port it listens on (UDP and TCP) to PORT_FILE and serves until
killed.
"""
import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bc_harness import StubDns  # noqa: E402


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    txt = {}
    records_file = None
    args = sys.argv[2:]
    while args:
        flag = args.pop(0)
        if flag == "--records-file" and args:
            records_file = args.pop(0)
            continue
        if flag != "--txt" or not args or "=" not in args[0]:
            raise SystemExit(__doc__)
        name, text = args.pop(0).split("=", 1)
        txt[name] = text
    dns = StubDns(txt, records_file)
    tmp = sys.argv[1] + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(dns.port))
    os.replace(tmp, sys.argv[1])
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
