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
name=console
# shellcheck source=tests/browser/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# A stub DNS on loopback: carrier.example authorises 127.0.0.0/8 (no DMARC),
# so the vendor's mail is from a verified sender (SPEC §10); the records the
# admin publishes go into records.json, which it reads again on change;
# every other name is NXDOMAIN.
echo '{}' >"$tmp/records.json"
start_stub_dns --txt "carrier.example=v=spf1 ip4:127.0.0.0/8 -all" --records-file "$tmp/records.json"
# The outbound path the SPF record to publish names.
write_config 'spf = ["ip4:192.0.2.25"]'

owner="$(backchannel user add --email owner@acme.example --name "Olive Owner" --role owner 2>"$tmp/user.log")" ||
    fail_setup "user add failed: $(cat "$tmp/user.log")"
backchannel user add --email ada@acme.example --name "Ada Agent" --role member >/dev/null 2>>"$tmp/user.log" ||
    fail_setup "user add failed: $(cat "$tmp/user.log")"
# Sign-in links as `backchannel user login-link` prints them; the path is
# used on the address actually bound.
link_path() {
    local url
    url="$(backchannel user login-link --email "$1" 2>>"$tmp/user.log")" ||
        fail_setup "login-link failed: $(cat "$tmp/user.log")"
    echo "/app/login/${url##*/app/login/}"
}
agent_link="$(link_path ada@acme.example)"
admin_link="$(link_path owner@acme.example)"

start_server
export CONSOLE_READY="$tmp/ready.json" CONSOLE_OWNER_TOKEN="$owner" CONSOLE_DATA_DIR="$tmp/data" \
    CONSOLE_AGENT_LINK="$agent_link" CONSOLE_ADMIN_LINK="$admin_link" CONSOLE_RECORDS="$tmp/records.json" \
    CONSOLE_ARTIFACTS="$artifacts" CONSOLE_CHROMIUM=/usr/bin/chromium CONSOLE_PROFILE="$tmp/profile"
run_test console.mjs
