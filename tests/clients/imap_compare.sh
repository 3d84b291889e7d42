#!/usr/bin/env bash
# Backchannel's IMAP against a private Dovecot, and mbsync against backchannel (issue 9).
#   BACKCHANNEL_BIN      binary to test (default target/release/backchannel, else
#                        target/debug/backchannel), relative to the repo root
#   BACKCHANNEL_CORPUS   corpus dir (default <repo>/../shared/corpus)
#   IMAP_COMPARE_SAMPLE  every N-th corpus message (plus all multiparts and attached
#                        messages); default 1, all of them
# Installs dovecot-imapd and isync when missing (needs root for that). Exits non-zero on any
# difference that is not a documented one.
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
echo "imap_compare: testing $BACKCHANNEL_BIN"

"$here/dovecot.sh" install
BACKCHANNEL_BIN="$BACKCHANNEL_BIN" python3 "$here/imap_compare.py"
