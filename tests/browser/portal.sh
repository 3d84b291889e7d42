#!/usr/bin/env bash
# Browser test of the vendor portal (SPEC §8): the release binary on
# 127.0.0.1 (ports :0, maildir outbound, no DNS off the machine), driven by
# Debian's Chromium through playwright-core (tests/browser/portal.mjs).
#   BACKCHANNEL_BIN  binary to test (default target/release/backchannel)
#   CI_ARTIFACTS     where portal.png and portal-narrow.png go
#                    (default target/ci-artifacts)
# Installs what it needs: chromium (apt-get) and playwright-core (npm, into
# tests/browser/node_modules; never a browser download). Prints
# `N passed, M failed` last and exits non-zero on any failure.
set -uo pipefail
name=portal
# shellcheck source=tests/browser/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# A stub DNS on loopback: carrier.example authorises 127.0.0.0/8 (no DMARC),
# so the vendor's mail is from a verified sender (SPEC §10) and shows on the
# portal; every other name is NXDOMAIN.
start_stub_dns --txt "carrier.example=v=spf1 ip4:127.0.0.0/8 -all"
write_config

token="$(backchannel user add --email ada@acme.example --name "Ada Agent" --role member 2>"$tmp/user.log")" ||
    fail_setup "user add failed: $(cat "$tmp/user.log")"

start_server
export PORTAL_READY="$tmp/ready.json" PORTAL_API_TOKEN="$token" PORTAL_DATA_DIR="$tmp/data" \
    PORTAL_ARTIFACTS="$artifacts" PORTAL_CHROMIUM=/usr/bin/chromium PORTAL_PROFILE="$tmp/profile"
run_test portal.mjs
