#!/usr/bin/env bash
# Outside-client tests of the inbound SMTP listener and the submission
# listener, against the real binary.
#   BACKCHANNEL_BIN   binary to test (default target/release/backchannel,
#                     else target/debug/backchannel), relative to the repo root
#   BACKCHANNEL_CORPUS  corpus dir (default <repo>/../shared/corpus)
# Runs every program even if one fails; exits non-zero if any failed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

if [[ -z "${BACKCHANNEL_BIN:-}" ]]; then
    if [[ -x target/release/backchannel ]]; then
        BACKCHANNEL_BIN=target/release/backchannel
    else
        BACKCHANNEL_BIN=target/debug/backchannel
    fi
fi
export BACKCHANNEL_BIN
echo "clients: testing $BACKCHANNEL_BIN"

# The real clients the tests drive; installed when missing.
need=()
command -v swaks >/dev/null 2>&1 || need+=(swaks)
command -v msmtp >/dev/null 2>&1 || need+=(msmtp)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v mutt >/dev/null 2>&1 || need+=(mutt)
command -v tmux >/dev/null 2>&1 || need+=(tmux)
if [[ ${#need[@]} -gt 0 ]]; then
    echo "clients: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi

status=0
echo "== smtp_clients.py"
python3 "$here/smtp_clients.py" || status=1
echo "== deliver_corpus.py"
python3 "$here/deliver_corpus.py" || status=1
echo "== submission_clients.py (smtplib, swaks, msmtp)"
python3 "$here/submission_clients.py" || status=1
echo "== mutt_e2e.py (mutt under tmux: IMAP + submission)"
python3 "$here/mutt_e2e.py" || status=1

if [[ $status -ne 0 ]]; then
    echo "clients: FAILED"
else
    echo "clients: all passed"
fi
exit "$status"
