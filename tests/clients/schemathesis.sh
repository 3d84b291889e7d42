#!/usr/bin/env bash
# Runs schemathesis (from PyPI) against the real binary's /api/openapi.json
# with an owner's token: fails on any 5xx, any response that does not match
# the document (status, content type, headers, body schema), schema-invalid
# requests that are accepted, or ignored auth. Schema-valid requests that a
# rule refuses with 422 (an unknown user, an unverified sender) are SPEC's
# behaviour, so the positive-acceptance check is left out. The JMAP push
# stream (/jmap/eventsource) never ends by design, so it is left out too;
# tests/jmap.rs covers it.
#
# Nothing leaves this machine: outbound mail goes to the maildir, DNS goes to
# a closed loopback port, and webhook delivery is off (the fuzzer registers
# endpoints with arbitrary URLs).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin="${BACKCHANNEL_BIN:-$repo/target/release/backchannel}"

if ! command -v st >/dev/null 2>&1; then
    python3 -m pip install -q schemathesis
fi

tmp="$(mktemp -d)"
pid=""
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$tmp"' EXIT
cat > "$tmp/c.toml" <<TOML
domain = "gw.example.com"
data_dir = "$tmp/data"
[smtp]
listen = "127.0.0.1:0"
[http]
listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
[imap]
listen = "127.0.0.1:0"
[submission]
listen = "127.0.0.1:0"
[dns]
nameservers = ["127.0.0.1:9"]
[ingest]
authenticate = false
# The fuzzer registers webhook endpoints with arbitrary URLs: never call them.
[webhooks]
deliver = false
TOML
# The binary reads every BACKCHANNEL_* variable as a config key: hide ours.
unset BACKCHANNEL_BIN
token="$("$bin" --config "$tmp/c.toml" user add --email st@gw.example.com --name Schemathesis --role owner)"
"$bin" --config "$tmp/c.toml" serve --ready-file "$tmp/ready.json" > "$tmp/serve.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do [ -s "$tmp/ready.json" ] && break; sleep 0.1; done
http="$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['http'])" "$tmp/ready.json")"

status=0
# Changing users (role, active) and rotating tokens would lock the fuzzer's
# own token out and leave every later operation answering 401: those two
# operations get a run of their own, after the rest.
st run "http://$http/api/openapi.json" \
    -H "Authorization: Bearer $token" \
    --checks all --exclude-checks positive_data_acceptance \
    --exclude-path /jmap/eventsource \
    --exclude-operation-id updateUser --exclude-operation-id rotateUserToken \
    --max-examples 50 --seed 1 || status=$?
st run "http://$http/api/openapi.json" \
    -H "Authorization: Bearer $token" \
    --checks all --exclude-checks positive_data_acceptance \
    --include-operation-id updateUser --include-operation-id rotateUserToken \
    --max-examples 50 --seed 1 || status=$?
if grep -q "panicked" "$tmp/serve.log"; then
    echo "schemathesis: the server log shows a panic"
    grep "panicked" "$tmp/serve.log" | head -5
    status=1
fi
exit "$status"
