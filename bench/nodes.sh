#!/usr/bin/env bash
# Benchmark part 8 (issue 26): the gateway on PostgreSQL beside SQLite, one
# node and two, in one run on this machine, all on 127.0.0.1.
#
#   bench/nodes.sh            BENCH_NODES_MSGS messages (default 20000) per setup, 2 rounds
#   bench/nodes.sh --smoke    a few hundred messages, 1 round (the harness never rots)
#
# For each setup — SQLite, one node on PostgreSQL, two nodes on one
# PostgreSQL — a new store, three threads seeded through the API, then
# smtp-source sends replies to them over BENCH_NODES_SESSIONS sessions (split
# evenly between the nodes). Measured: accept rate (messages / time until the
# last `250`), threaded rate (messages / time until nothing is queued), and
# PostgreSQL round trips per message (the nodes' store_round_trips_total
# before and after, summed, over the messages; every prepare, query, execute
# and transaction statement counts one).
#
# BENCH_NODES_SETUPS (default "sqlite pg1 pg2") picks the setups; with
# BENCH_BACKCHANNEL_BIN another binary (one from before PostgreSQL, on
# "sqlite" alone) is measured the same way.
#
# PostgreSQL runs from tests/pg/pg.sh on a temporary directory with its
# defaults (fsync on, synchronous_commit on) but max_connections = 400; the
# gateway nodes each keep up to 24 read sessions, one writer, one listener and
# one scheduler-lock session. Writes its section into bench/RESULTS.md (or
# $BENCH_RESULTS), replacing an earlier part 8. Judges nothing: non-zero exit
# only when something failed to run.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cd "$repo"

mode=full
for arg in "$@"; do
    case "$arg" in
        --smoke) mode=smoke ;;
        *) echo "usage: bench/nodes.sh [--smoke]" >&2; exit 2 ;;
    esac
done
if [[ $mode == smoke ]]; then
    MSGS=${BENCH_NODES_MSGS:-400}
    ROUNDS=${BENCH_NODES_ROUNDS:-1}
else
    MSGS=${BENCH_NODES_MSGS:-20000}
    ROUNDS=${BENCH_NODES_ROUNDS:-2}
fi
SESSIONS=${BENCH_NODES_SESSIONS:-20}
# BENCH_NODES_SETUPS="sqlite" with BENCH_BACKCHANNEL_BIN=… compares another binary on SQLite.
SETUPS=${BENCH_NODES_SETUPS:-"sqlite pg1 pg2"}
SIZE=5120
WAIT=900
DOMAIN=gw.bench.test
RESULTS=${BENCH_RESULTS:-$here/RESULTS.md}
PY="python3 $here/helpers.py"

log() { echo "bench-nodes: $*" >&2; }
now() { date +%s.%N; }
calc() { awk "BEGIN { v = $1; if (v != v) print \"n/a\"; else printf \"%.2f\", v }" 2>/dev/null || echo n/a; }
failures=()
fail() { log "FAILED: $*"; failures+=("$*"); }

if ! command -v smtp-source >/dev/null 2>&1; then
    log "installing postfix (for smtp-source; no mail service is configured or started)"
    export DEBIAN_FRONTEND=noninteractive
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -qq && apt-get install -y -qq postfix >/dev/null
fi

target="${CARGO_TARGET_DIR:-$repo/target}"
BIN="${BENCH_BACKCHANNEL_BIN:-$target/release/backchannel}"
if [[ -z ${BENCH_BACKCHANNEL_BIN:-} ]]; then
    cargo build --release --quiet || { log "cargo build failed"; exit 1; }
fi

work="$(mktemp -d /tmp/bcnodes.XXXXXX)"
chmod 755 "$work"   # PostgreSQL runs as its own user under it
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
    wait 2>/dev/null
    bash "$repo/tests/pg/pg.sh" stop "$work/pg" >/dev/null 2>&1
    [[ ${BENCH_KEEP:-} == 1 ]] || rm -rf "$work"
}
trap cleanup EXIT

DNS_PORT=$($PY free-port)
$PY dns "$DNS_PORT" 2>"$work/dns.log" &
pids+=($!)
PG_URL=$(bash "$repo/tests/pg/pg.sh" start "$work/pg") || { log "cannot start PostgreSQL"; exit 1; }
PG_BASE=${PG_URL%/postgres}

# node_start NAME DIR URL → NODE_SMTP[NAME] NODE_HTTP[NAME] NODE_METRICS[NAME]
declare -A NODE_SMTP NODE_HTTP NODE_METRICS NODE_PID
node_start() {
    local name=$1 dir=$2 url=$3
    mkdir -p "$dir"
    cat > "$dir/$name.toml" <<EOF
domain = "$DOMAIN"
data_dir = "$dir/data"
[smtp]
listen = "127.0.0.1:0"
max_connections = 4096
max_connections_per_ip = 4096
connections_per_minute_per_ip = 4000000000
[http]
listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
[imap]
listen = "127.0.0.1:0"
[submission]
listen = ""
[outbound]
mode = "maildir"
[dns]
nameservers = ["127.0.0.1:$DNS_PORT"]
[ingest]
max_thread_messages = 100000000
max_thread_bytes = 1000000000000
[webhooks]
deliver = false
$([[ -n $url ]] && printf '[store]\nurl = "%s"' "$url")
EOF
    rm -f "$dir/$name.ready"
    "$BIN" serve --config "$dir/$name.toml" --ready-file "$dir/$name.ready" >>"$dir/$name.log" 2>&1 &
    NODE_PID[$name]=$!
    pids+=("${NODE_PID[$name]}")
    for _ in $(seq 1 600); do
        [[ -s "$dir/$name.ready" ]] && break
        kill -0 "${NODE_PID[$name]}" 2>/dev/null || break
        sleep 0.1
    done
    [[ -s "$dir/$name.ready" ]] || { tail -5 "$dir/$name.log" >&2; return 1; }
    NODE_SMTP[$name]=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["smtp"])' "$dir/$name.ready")
    NODE_HTTP[$name]=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["http"])' "$dir/$name.ready")
    NODE_METRICS[$name]=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["metrics"])' "$dir/$name.ready")
}
node_stop() {
    kill -TERM "${NODE_PID[$1]}" 2>/dev/null
    wait "${NODE_PID[$1]}" 2>/dev/null
}
round_trips() {
    python3 - "$1" <<'EOF'
import sys, urllib.request
text = urllib.request.urlopen(f"http://{sys.argv[1]}/metrics", timeout=10).read().decode()
print(next((l.split()[-1] for l in text.splitlines() if l.startswith("store_round_trips_total")), "0"))
EOF
}
# queued SETUP DIR: messages accepted and not yet threaded.
queued() {
    if [[ $1 == sqlite ]]; then
        python3 -c 'import sqlite3,sys; c=sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, timeout=10); print(c.execute("SELECT COUNT(*) FROM inbound_queue WHERE state = '"'"'queued'"'"'").fetchone()[0])' "$2/data/backchannel.db"
    else
        psql "$3" -qtAc "SELECT COUNT(*) FROM inbound_queue WHERE state = 'queued'"
    fi
}

declare -A R
# run SETUP ROUND: one measured run.
run() {
    local setup=$1 round=$2 dir="$work/$1.$2" url="" nodes=(a)
    case $setup in
        sqlite) ;;
        pg1) url="$PG_BASE/b_${setup}_$round" ;;
        pg2) url="$PG_BASE/b_${setup}_$round"; nodes=(a b) ;;
    esac
    mkdir -p "$dir"
    [[ -n $url ]] && psql "$PG_URL" -qc "CREATE DATABASE b_${setup}_$round" >/dev/null
    local token
    token=$("$BIN" user add --config <(printf 'domain = "%s"\ndata_dir = "%s/data"\n' "$DOMAIN" "$dir"; [[ -n $url ]] && printf '[store]\nurl = "%s"\n' "$url") \
        --email "admin@$DOMAIN" --name Bench --role owner 2>>"$dir/cli.log") || { fail "$setup user add"; return; }
    for n in "${nodes[@]}"; do
        node_start "$n" "$dir" "$url" || { fail "$setup node $n start"; return; }
    done
    local toks
    toks=$($PY seed "${NODE_HTTP[a]}" "$token" "P-$setup" 3) || { fail "$setup seed"; return; }
    mapfile -t tk <<<"$toks"
    local before=0 n
    if [[ -n $url ]]; then
        for n in "${nodes[@]}"; do before=$(( before + $(round_trips "${NODE_METRICS[$n]}") )); done
    fi
    # The load: sessions and messages split evenly between the nodes, each
    # node's share over the three threads.
    local k=${#nodes[@]} per_s=$(( SESSIONS / ${#nodes[@]} )) per_m=$(( MSGS / ${#nodes[@]} )) gen=() t0 t1 t2 i
    t0=$(now)
    for n in "${nodes[@]}"; do
        local port=${NODE_SMTP[$n]##*:}
        for i in 0 1 2; do
            local ss=$(( per_s / 3 )) mm=$(( per_m / 3 ))
            (( i == 0 )) && { ss=$(( per_s - 2 * (per_s / 3) )); mm=$(( per_m - 2 * (per_m / 3) )); }
            smtp-source -s "$ss" -m "$mm" -l "$SIZE" -S "bench nodes $i" \
                -f vendor@vendor.bench.test -t "reply+${tk[$i]}@$DOMAIN" -M client.bench.test \
                "127.0.0.1:$port" >"$dir/source.$n.$i.log" 2>&1 &
            gen+=($!)
        done
    done
    local rc=0
    for p in "${gen[@]}"; do wait "$p" || rc=1; done
    t1=$(now)
    (( rc == 0 )) || fail "$setup round $round: smtp-source failed"
    local deadline=$(( $(date +%s) + WAIT )) q
    while :; do
        q=$(queued "$setup" "$dir" "$url" 2>/dev/null || echo x)
        [[ $q == 0 ]] && break
        (( $(date +%s) > deadline )) && { fail "$setup round $round: still $q queued after ${WAIT}s"; break; }
        sleep 0.05
    done
    t2=$(now)
    local key="$setup.$round"
    R[$key.accept]=$(calc "$MSGS / ($t1 - $t0)")
    R[$key.threaded]=$(calc "$MSGS / ($t2 - $t0)")
    if [[ -n $url ]]; then
        local after=0
        for n in "${nodes[@]}"; do after=$(( after + $(round_trips "${NODE_METRICS[$n]}") )); done
        R[$key.rt]=$(calc "($after - $before) / $MSGS")
    else
        R[$key.rt]="—"
    fi
    log "$setup round $round: accept ${R[$key.accept]} msg/s, threaded ${R[$key.threaded]} msg/s, round trips/msg ${R[$key.rt]}"
    for n in "${nodes[@]}"; do node_stop "$n"; done
}

date_start=$(date -u '+%Y-%m-%d %H:%M UTC')
load_start=$(cut -d' ' -f1 /proc/loadavg)
for r in $(seq 1 "$ROUNDS"); do
    for setup in $SETUPS; do
        run "$setup" "$r"
    done
done
load_end=$(cut -d' ' -f1 /proc/loadavg)

median() {
    local vals=() r x
    for r in $(seq 1 "$ROUNDS"); do
        x=${R[$1.$r.$2]:-}
        [[ -n $x && $x != n/a && $x != — ]] && vals+=("$x")
    done
    [[ ${#vals[@]} -eq 0 ]] && { echo "${R[$1.1.$2]:-n/a}"; return; }
    python3 -c 'import statistics,sys; print(round(statistics.median(float(v) for v in sys.argv[1:]), 2))' "${vals[@]}"
}
section="$work/section.md"
{
    echo "## 8. Several nodes on PostgreSQL (bench/nodes.sh)"
    echo
    echo "bench/nodes.sh ($mode): $date_start, backchannel $(git -C "$repo" rev-parse --short HEAD 2>/dev/null), load average at start $load_start, at end $load_end. $MSGS messages of $SIZE bytes per run over $SESSIONS smtp-source sessions (split evenly between the nodes), replies to three threads; $ROUNDS round(s), medians. PostgreSQL 15 from tests/pg/pg.sh on the same 2 cores (fsync on, synchronous_commit on, max_connections 400); each node is \`backchannel serve\` with \`[store] url\`."
    echo
    echo "| setup | accept msg/s | threaded msg/s | PostgreSQL round trips per message | every round (accept / threaded) |"
    echo "|---|---|---|---|---|"
    for setup in $SETUPS; do
        label=$setup
        case $setup in sqlite) label="SQLite, one node" ;; pg1) label="PostgreSQL, one node" ;; pg2) label="PostgreSQL, two nodes" ;; esac
        rounds=""
        for r in $(seq 1 "$ROUNDS"); do rounds+="${rounds:+; }${R[$setup.$r.accept]:-n/a} / ${R[$setup.$r.threaded]:-n/a}"; done
        echo "| $label | $(median "$setup" accept) | $(median "$setup" threaded) | $(median "$setup" rt) | $rounds |"
    done
    echo
    if [[ ${#failures[@]} -gt 0 ]]; then
        echo "Failures: ${failures[*]}"
        echo
    fi
} > "$section"
cat "$section"
$PY splice-section "$RESULTS" "$section" "## 8. " || fail "writing $RESULTS"
[[ ${#failures[@]} -eq 0 ]]
