# What the browser tests' scripts share (sourced by portal.sh and
# console.sh): the binary, the artifacts directory, installing Chromium and
# playwright-core, a temporary directory cleaned up on exit with the
# server and stub DNS stopped, the stub DNS, the config and the server.
# The caller sets `name` (for messages) before sourcing.

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

fail_setup() {
    echo "$name browser test: $*" >&2
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
    echo "$name: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; } ||
        fail_setup "cannot install ${need[*]}"
fi
if [[ ! -f "$here/node_modules/playwright-core/package.json" ]]; then
    echo "$name: installing playwright-core"
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

# start_stub_dns ARGS…: tests/clients/stub_dns.py with ARGS (--txt,
# --records-file); its port in $tmp/dns.port.
start_stub_dns() {
    python3 "$repo/tests/clients/stub_dns.py" "$tmp/dns.port" "$@" &
    dns=$!
    for _ in $(seq 1 100); do
        [[ -s "$tmp/dns.port" ]] && break
        sleep 0.1
    done
    [[ -s "$tmp/dns.port" ]] || fail_setup "the stub DNS did not start"
}

# write_config [EXTRA_OUTBOUND_KEYS]: every listener on 127.0.0.1:0,
# maildir outbound, the stub DNS; exported as BACKCHANNEL_CONFIG. Ports are
# :0, so public_url cannot name the bound port: links are taken by path and
# put on the address actually bound.
write_config() {
    cat >"$tmp/config.toml" <<CONFIG
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
${1:-}
[dns]
nameservers = ["127.0.0.1:$(cat "$tmp/dns.port")"]
timeout = "1s"
CONFIG
    export BACKCHANNEL_CONFIG="$tmp/config.toml"
}

# The binary reads every BACKCHANNEL_* variable as a config key: ours are
# hidden from it.
backchannel() {
    env -u BACKCHANNEL_BIN "$bin" "$@"
}

# start_server: serve, and wait for the ready file ($tmp/ready.json).
start_server() {
    backchannel serve --ready-file "$tmp/ready.json" >"$tmp/server.log" 2>&1 &
    server=$!
    for _ in $(seq 1 300); do
        [[ -s "$tmp/ready.json" ]] && break
        kill -0 "$server" 2>/dev/null || break
        sleep 0.1
    done
    [[ -s "$tmp/ready.json" ]] || fail_setup "the server did not start: $(tail -20 "$tmp/server.log")"
}

# run_test SCRIPT: node SCRIPT; the server log's tail on failure; exits
# with its status.
run_test() {
    node "$here/$1"
    local status=$?
    if [[ $status -ne 0 ]]; then
        echo "$name: server log (tail):" >&2
        tail -30 "$tmp/server.log" >&2
    fi
    exit "$status"
}
