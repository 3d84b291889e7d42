#!/usr/bin/env bash
# Browser test of the web console (SPEC §11): the release binary on
# 127.0.0.1 (ports :0, maildir outbound, no DNS off the machine), driven by
# Debian's Chromium through playwright-core (tests/browser/console.mjs): an
# agent signs in by link, starts a side conversation with two recipients,
# sees a vendor reply arrive without reloading, follows up and closes; an
# admin adds a sender, publishes the DNS records the page shows on the stub
# DNS, re-checks to pass and verifies by code.
#   BACKCHANNEL_BIN  binary to test (default target/release/backchannel)
#   CI_ARTIFACTS     where the screenshots (console-*.png) go
#                    (default target/ci-artifacts)
# Installs what it needs: chromium (apt-get) and playwright-core (npm, into
# tests/browser/node_modules; never a browser download). Prints
# `N passed, M failed` last and exits non-zero on any failure.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

fail_setup() {
    echo "console browser test: $*" >&2
    echo "0 passed, 1 failed"
    exit 1
}

bin="${BACKCHANNEL_BIN:-target/release/backchannel}"
[[ "$bin" = /* ]] || bin="$repo/$bin"
[[ -x "$bin" ]] || fail_setup "no binary at $bin (cargo build --release, or set BACKCHANNEL_BIN)"
artifacts="${CI_ARTIFACTS:-$repo/target/ci-artifacts}"
mkdir -p "$artifacts"

need=()
[[ -x /usr/bin/chromium ]] || need+=(chromium)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
if [[ ${#need[@]} -gt 0 ]]; then
    echo "console: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; } ||
        fail_setup "cannot install ${need[*]}"
fi
if [[ ! -f "$here/node_modules/playwright-core/package.json" ]]; then
    echo "console: installing playwright-core"
    # playwright-core brings no browser; Debian's chromium is used.
    (cd "$here" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-package-lock \
        --no-audit --no-fund --loglevel=error >/dev/null) ||
        fail_setup "npm install playwright-core failed"
fi

tmp="$(mktemp -d)"
server=""
dns=""
cleanup() {
    if [[ -n "$server" ]] && kill -0 "$server" 2>/dev/null; then
        kill -TERM "$server" 2>/dev/null
        wait "$server" 2>/dev/null
    fi
    [[ -n "$dns" ]] && kill "$dns" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

# A stub DNS on loopback: carrier.example authorises 127.0.0.0/8 (no DMARC),
# so the vendor's mail is from a verified sender (SPEC §10); the records the
# admin publishes go into records.json, which it reads again on change;
# every other name is NXDOMAIN.
echo '{}' >"$tmp/records.json"
python3 "$repo/tests/clients/stub_dns.py" "$tmp/dns.port" \
    --txt "carrier.example=v=spf1 ip4:127.0.0.0/8 -all" --records-file "$tmp/records.json" &
dns=$!
for _ in $(seq 1 100); do
    [[ -s "$tmp/dns.port" ]] && break
    sleep 0.1
done
[[ -s "$tmp/dns.port" ]] || fail_setup "the stub DNS did not start"

# Ports are :0, so public_url cannot name the bound port: the script takes
# the link's path from the mail and puts it on the address actually bound.
cat >"$tmp/config.toml" <<EOF
domain = "gw.example.com"
data_dir = "$tmp/data"
[smtp]
listen = "127.0.0.1:0"
[http]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:8080"
metrics_listen = "127.0.0.1:0"
[imap]
listen = "127.0.0.1:0"
[submission]
listen = "127.0.0.1:0"
[outbound]
mode = "maildir"
# The outbound path the SPF record to publish names.
spf = ["ip4:192.0.2.25"]
[dns]
nameservers = ["127.0.0.1:$(cat "$tmp/dns.port")"]
timeout = "1s"
EOF
export BACKCHANNEL_CONFIG="$tmp/config.toml"

# The binary reads every BACKCHANNEL_* variable as a config key: hide ours.
owner="$(env -u BACKCHANNEL_BIN "$bin" user add --email owner@acme.example --name "Olive Owner" --role owner 2>"$tmp/user.log")" ||
    fail_setup "user add failed: $(cat "$tmp/user.log")"
env -u BACKCHANNEL_BIN "$bin" user add --email ada@acme.example --name "Ada Agent" --role member >/dev/null 2>>"$tmp/user.log" ||
    fail_setup "user add failed: $(cat "$tmp/user.log")"
# Sign-in links as `backchannel user login-link` prints them; the path is
# used on the address actually bound.
link_path() {
    local url
    url="$(env -u BACKCHANNEL_BIN "$bin" user login-link --email "$1" 2>>"$tmp/user.log")" ||
        fail_setup "login-link failed: $(cat "$tmp/user.log")"
    echo "/app/login/${url##*/app/login/}"
}
agent_link="$(link_path ada@acme.example)"
admin_link="$(link_path owner@acme.example)"

env -u BACKCHANNEL_BIN "$bin" serve --ready-file "$tmp/ready.json" >"$tmp/server.log" 2>&1 &
server=$!
for _ in $(seq 1 300); do
    [[ -s "$tmp/ready.json" ]] && break
    kill -0 "$server" 2>/dev/null || break
    sleep 0.1
done
[[ -s "$tmp/ready.json" ]] || fail_setup "the server did not start: $(tail -20 "$tmp/server.log")"

export CONSOLE_READY="$tmp/ready.json" CONSOLE_OWNER_TOKEN="$owner" CONSOLE_DATA_DIR="$tmp/data" \
    CONSOLE_AGENT_LINK="$agent_link" CONSOLE_ADMIN_LINK="$admin_link" CONSOLE_RECORDS="$tmp/records.json" \
    CONSOLE_ARTIFACTS="$artifacts" CONSOLE_CHROMIUM=/usr/bin/chromium CONSOLE_PROFILE="$tmp/profile"
node "$here/console.mjs"
status=$?
if [[ $status -ne 0 ]]; then
    echo "console: server log (tail):" >&2
    tail -30 "$tmp/server.log" >&2
fi
exit "$status"
