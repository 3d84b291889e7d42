#!/usr/bin/env bash
# The Rust test suite on PostgreSQL (SPEC §13): starts a throwaway server
# (tests/pg/pg.sh: initdb into a temporary directory, pg_ctl on a loopback
# port, no system service), runs `cargo test` with BACKCHANNEL_TEST_POSTGRES
# pointing at it — every test gateway then gets a database of its own on it,
# tests/nodes.rs runs several nodes on one — and stops the server.
#
#   bash tests/pg/run.sh                  # the whole suite
#   bash tests/pg/run.sh --test nodes     # arguments go to cargo test
#
# Needs Debian's postgresql package (.ci/run installs it). fsync stays off
# for the suite's speed (PG_FAST=1): what the suite checks is the gateway's
# behaviour on PostgreSQL, not PostgreSQL's own durability.
set -euo pipefail
cd "$(dirname "$0")/../.."

dir="$(mktemp -d /tmp/backchannel-pg.XXXXXX)"
cleanup() { bash tests/pg/pg.sh stop "$dir" >/dev/null 2>&1 || true; }
trap cleanup EXIT
url="$(PG_FAST="${PG_FAST:-1}" bash tests/pg/pg.sh start "$dir")"
echo "pg: test server at $url" >&2
BACKCHANNEL_TEST_POSTGRES="$url" cargo test "$@"
