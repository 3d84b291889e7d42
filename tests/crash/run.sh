#!/usr/bin/env bash
# Crash-consistency test of the real binary (SPEC §10): SMTP load, side
# conversations through the API with relay delivery to a local sink, and
# webhooks to a local receiver, while the server is killed with SIGKILL and
# restarted on the same data dir; then every acknowledged message, outbox
# row and webhook delivery is checked. See tests/crash/crash.py.
#
#   tests/crash/run.sh                 short form (CI): 3 kills
#   tests/crash/run.sh --long          long form: 30 kills
#   tests/crash/run.sh --kills N ...   any crash.py options (--seed, --keep, …)
#
#   BACKCHANNEL_BIN  binary to test (default target/release/backchannel, else
#                    target/debug/backchannel), relative to the repo root
#   CRASH_KILLS      kills when neither --long nor --kills is given (default 3)
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

args=()
kills="${CRASH_KILLS:-3}"
for a in "$@"; do
    case "$a" in
        --long) kills=30 ;;
        *) args+=("$a") ;;
    esac
done

# Handed to the harness alone: the binary reads every BACKCHANNEL_* variable
# as a config key, and the harness strips them before starting it.
BACKCHANNEL_BIN="$BACKCHANNEL_BIN" exec python3 "$here/crash.py" --kills "$kills" ${args[@]+"${args[@]}"}
