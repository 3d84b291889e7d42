#!/usr/bin/env bash
# Benchmark harness (issue 10): backchannel side by side with smtp-sink, a
# private Postfix and a private Dovecot, all on 127.0.0.1, measured in one run.
#
#   bench/run.sh            the full run (about 15-25 minutes on 2 cores)
#   bench/run.sh --smoke    a few hundred messages per part (CI: the harness never rots)
#   bench/run.sh --only-dns part 5 alone (with --smoke too: tiny counts); its
#                           section replaces part 5's in the existing RESULTS.md
#
# Parts: 1. SMTP ingest (smtp-source, 5 KB, 1/20/100 sessions) against
# smtp-sink, Postfix and backchannel, with end-of-DATA→250 latency from our
# own client alongside; 2. the same 20-session ingest on a store of 1,000,000
# messages over 100,000 side conversations, three times, each after a run on a
# new empty store (medians and every run reported); 3. agent view: IMAP FETCH of
# 10,000 messages (imaplib) and an mbsync pull, backchannel vs Dovecot;
# 4. peak RSS with 500 idle SMTP connections and during the FETCH; 5. threading
# under a resolver's latency (issue 27): a resolver stand-in answering after 0,
# 50 and 200 ms, mail from one sender domain and from a domain per message,
# threaded rate and commit (`250`) → threaded p50/p99.
#
# Writes bench/RESULTS.md (or $BENCH_RESULTS). It judges nothing: the exit
# status is non-zero only when something failed to run.
#
# Installs Debian's postfix (smtp-source, smtp-sink, a private instance),
# dovecot-imapd and isync when missing. The private Postfix and Dovecot run
# from their own config directories under a temporary directory, listen on
# 127.0.0.1 only, never relay (default_transport = error, no DNS) and are
# stopped at the end; a system Postfix or Dovecot service is never touched.
#
# Sizes can be changed with BENCH_MSGS, BENCH_SESSIONS, BENCH_FILL_MSGS,
# BENCH_FILL_SCS, BENCH_SCALE_ROUNDS, BENCH_IMAP_MSGS, BENCH_IDLE,
# BENCH_DNS_DELAYS (ms), BENCH_DNS_ONE_MSGS, BENCH_DNS_MANY_MSGS, BENCH_DNS_ROUNDS;
# BENCH_BACKCHANNEL_BIN another gateway binary; BENCH_KEEP=1 keeps the
# temporary directory.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cd "$repo"

mode=full
only=""
for arg in "$@"; do
    case "$arg" in
        --smoke) mode=smoke ;;
        --only-dns) only=dns ;;
        *) echo "usage: bench/run.sh [--smoke] [--only-dns]" >&2; exit 2 ;;
    esac
done
if [[ $mode == smoke ]]; then
    MSGS=${BENCH_MSGS:-300}
    SESSIONS=${BENCH_SESSIONS:-"1 20"}
    FILL_MSGS=${BENCH_FILL_MSGS:-3000}
    FILL_SCS=${BENCH_FILL_SCS:-300}
    IMAP_MSGS=${BENCH_IMAP_MSGS:-200}
    IDLE=${BENCH_IDLE:-50}
    SCALE_ROUNDS=${BENCH_SCALE_ROUNDS:-1}
    CONSOLE_REPS=${BENCH_CONSOLE_REPS:-10}
    DNS_DELAYS=${BENCH_DNS_DELAYS:-"0 50"}
    DNS_ONE_MSGS=${BENCH_DNS_ONE_MSGS:-200}
    DNS_MANY_MSGS=${BENCH_DNS_MANY_MSGS:-100}
    DNS_ROUNDS=${BENCH_DNS_ROUNDS:-1}
else
    MSGS=${BENCH_MSGS:-20000}
    SESSIONS=${BENCH_SESSIONS:-"1 20 100"}
    FILL_MSGS=${BENCH_FILL_MSGS:-1000000}
    FILL_SCS=${BENCH_FILL_SCS:-100000}
    IMAP_MSGS=${BENCH_IMAP_MSGS:-10000}
    IDLE=${BENCH_IDLE:-500}
    SCALE_ROUNDS=${BENCH_SCALE_ROUNDS:-5}
    CONSOLE_REPS=${BENCH_CONSOLE_REPS:-50}
    DNS_DELAYS=${BENCH_DNS_DELAYS:-"0 50 200"}
    DNS_ONE_MSGS=${BENCH_DNS_ONE_MSGS:-3000}
    DNS_MANY_MSGS=${BENCH_DNS_MANY_MSGS:-1000}
    DNS_ROUNDS=${BENCH_DNS_ROUNDS:-3}
fi
SIZE=5120
WAIT=900
[[ $mode == smoke ]] && WAIT=120
DOMAIN=gw.bench.test
RESULTS=${BENCH_RESULTS:-$here/RESULTS.md}

failures=()
fail() {
    echo "bench: FAILED: $*" >&2
    failures+=("$*")
}
log() { echo "bench: $*" >&2; }
now() { date +%s.%N; }
# calc EXPR: floating-point arithmetic, 2 decimals.
calc() { awk "BEGIN { v = $1; if (v != v) print \"n/a\"; else printf \"%.2f\", v }" 2>/dev/null || echo n/a; }
# median_of PREFIX SUFFIX: median of R[PREFIX.<round>SUFFIX] over the scale rounds.
median_of() {
    local vals=() r x
    for r in $(seq 1 "$SCALE_ROUNDS"); do
        x=${R[$1.$r$2]:-}
        [[ -n $x && $x != n/a ]] && vals+=("$x")
    done
    if [[ ${#vals[@]} -eq 0 ]]; then
        echo n/a
    else
        python3 -c 'import statistics,sys; print(round(statistics.median(float(v) for v in sys.argv[1:]), 2))' "${vals[@]}"
    fi
}
declare -A R
CONSOLE_PAGES=()

# ---------------------------------------------------------------- install
install_missing() {
    local need=()
    command -v smtp-source >/dev/null 2>&1 || need+=(postfix)
    command -v dovecot >/dev/null 2>&1 || need+=(dovecot-imapd)
    [[ -x /usr/lib/dovecot/imap ]] || need+=(dovecot-imapd)
    command -v mbsync >/dev/null 2>&1 || need+=(isync)
    command -v python3 >/dev/null 2>&1 || need+=(python3)
    [[ ${#need[@]} -eq 0 ]] && return 0
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # No mail service of the system is configured or started by the install.
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    local policy_added=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        policy_added=1
    fi
    apt-get update -qq >/dev/null && apt-get install -y -qq "${need[@]}" >/dev/null
    local rc=$?
    [[ $policy_added == 1 ]] && rm -f /usr/sbin/policy-rc.d
    return $rc
}
if [[ $only != dns ]] && ! install_missing; then
    fail "installing postfix/dovecot-imapd/isync"
fi

# ---------------------------------------------------------------- build
target="${CARGO_TARGET_DIR:-$repo/target}"
log "building release binaries"
if ! cargo build --release -q -p backchannel -p backchannel-bench; then
    echo "bench: cannot build" >&2
    exit 1
fi
# BENCH_BACKCHANNEL_BIN: another build of the gateway to measure (say, the
# one before a change), with this tree's helpers.
BIN="${BENCH_BACKCHANNEL_BIN:-$target/release/backchannel}"
BCB="$target/release/bcbench"
PY="python3 $here/helpers.py"

work="$(mktemp -d /tmp/bcbench.XXXXXX)"
chmod 755 "$work"
started_pids=()
PF_ETC=""
DV_CONF=""
cleanup() {
    for p in "${started_pids[@]}"; do
        kill -TERM "$p" 2>/dev/null
    done
    for p in "${started_pids[@]}"; do
        wait "$p" 2>/dev/null
    done
    [[ -n "$PF_ETC" ]] && postfix -c "$PF_ETC" stop >/dev/null 2>&1
    [[ -n "$DV_CONF" ]] && doveadm -c "$DV_CONF" stop >/dev/null 2>&1
    if [[ "${BENCH_KEEP:-0}" != 1 ]]; then
        rm -rf "$work"
    else
        log "kept $work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
forget_pid() {
    local p=$1 keep=()
    for q in "${started_pids[@]}"; do [[ $q != "$p" ]] && keep+=("$q"); done
    started_pids=("${keep[@]}")
}

load_start=$(uptime | sed 's/.*load average: //')
date_start=$(date -u '+%Y-%m-%d %H:%M:%S UTC')

# ---------------------------------------------------------------- servers
# backchannel: bc_start DIR → BC_PID BC_SMTP BC_HTTP BC_IMAP BC_TOKEN (owner)
bc_start() {
    local dir=$1
    mkdir -p "$dir"
    cat > "$dir/config.toml" <<EOF
domain = "$DOMAIN"
data_dir = "$dir/data"
[smtp]
listen = "127.0.0.1:0"
max_connections = 4096
max_connections_per_ip = 4096
# smtp-source opens a connection per message, all from 127.0.0.1.
connections_per_minute_per_ip = 4000000000
[http]
listen = "127.0.0.1:0"
# Not the fixed default port (9090); the ready file has the address.
metrics_listen = "127.0.0.1:0"
[imap]
listen = "127.0.0.1:0"
[submission]
listen = "127.0.0.1:0"
[outbound]
mode = "maildir"
[dns]
nameservers = ["127.0.0.1:$DNS_PORT"]
timeout = "${DNS_TIMEOUT:-1s}"
[ingest]
authenticate = ${BENCH_AUTHENTICATE:-true}
# The benchmark sends hundreds of thousands of messages to three threads.
max_thread_messages = 100000000
max_thread_bytes = 1000000000000
[webhooks]
deliver = false
EOF
    # The owner is created once per store; a restart reuses its token.
    if [[ -s "$dir/owner.token" ]]; then
        BC_TOKEN=$(cat "$dir/owner.token")
    else
        BC_TOKEN=$("$BIN" user add --config "$dir/config.toml" --email "admin@$DOMAIN" \
            --name Bench --role owner 2>>"$dir/server.log") || return 1
        echo "$BC_TOKEN" > "$dir/owner.token"
    fi
    rm -f "$dir/ready.json"
    "$BIN" serve --config "$dir/config.toml" --ready-file "$dir/ready.json" \
        >>"$dir/server.log" 2>&1 &
    BC_PID=$!
    started_pids+=("$BC_PID")
    for _ in $(seq 1 600); do
        [[ -s "$dir/ready.json" ]] && break
        kill -0 "$BC_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [[ ! -s "$dir/ready.json" ]]; then
        tail -5 "$dir/server.log" >&2
        return 1
    fi
    BC_SMTP=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["smtp"])' "$dir/ready.json")
    BC_HTTP=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["http"])' "$dir/ready.json")
    BC_IMAP=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("imap",""))' "$dir/ready.json")
    BC_DB="$dir/data/backchannel.db"
}
bc_stop() {
    kill -TERM "$BC_PID" 2>/dev/null
    wait "$BC_PID" 2>/dev/null
    forget_pid "$BC_PID"
}

# A stand-in for the local caching resolver a gateway would use: answers
# every question at once with NXDOMAIN, so SPF/DKIM/DMARC are evaluated
# (ingest.authenticate = true) without waiting on timeouts.
DNS_PORT=$($PY free-port)
$PY dns "$DNS_PORT" 2>"$work/dns.log" &
started_pids+=($!)

SINK_PORT=$($PY free-port)
start_sink() {
    smtp-sink -u nobody "127.0.0.1:$SINK_PORT" 1024 >"$work/sink.log" 2>&1 &
    SINK_PID=$!
    started_pids+=("$SINK_PID")
    sleep 0.3
    kill -0 "$SINK_PID" 2>/dev/null
}

PF_PORT=$($PY free-port)
PF_DIR="$work/postfix"
PF_MAILDIR="$PF_DIR/mail/bench"
start_postfix() {
    mkdir -p "$PF_DIR/etc" "$PF_DIR/queue" "$PF_DIR/data" "$PF_DIR/mail"
    chown postfix "$PF_DIR/data"
    chown nobody:nogroup "$PF_DIR/mail"
    cat > "$PF_DIR/etc/main.cf" <<EOF
# Private bench instance: loopback only, local Maildir delivery, never relays.
compatibility_level = 3.6
queue_directory = $PF_DIR/queue
data_directory = $PF_DIR/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.postfix.bench.test
mydomain = postfix.bench.test
myorigin = \$myhostname
mydestination = bench.test
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost =
default_transport = error:the bench never relays
relay_transport = error:the bench never relays
disable_dns_lookups = yes
smtp_dns_support_level = disabled
smtp_host_lookup = native
lmtp_host_lookup = native
smtpd_peername_lookup = no
local_transport = virtual
local_recipient_maps =
virtual_mailbox_base = $PF_DIR/mail
virtual_mailbox_maps = static:bench/
virtual_uid_maps = static:$(id -u nobody)
virtual_gid_maps = static:$(id -g nobody)
virtual_minimum_uid = 1
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
alias_maps =
alias_database =
biff = no
# 100 sessions plus the latency client need more than the default 100 smtpd.
default_process_limit = 200
maillog_file_prefixes = $PF_DIR
maillog_file = $PF_DIR/postfix.log
EOF
    cat > "$PF_DIR/etc/master.cf" <<EOF
127.0.0.1:$PF_PORT inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
    PF_ETC="$PF_DIR/etc"
    postfix -c "$PF_ETC" check >"$PF_DIR/check.log" 2>&1
    postfix -c "$PF_ETC" start >"$PF_DIR/start.log" 2>&1 || { cat "$PF_DIR/start.log" >&2; return 1; }
    for _ in $(seq 1 100); do
        python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' \
            "$PF_PORT" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

DV_PORT=$($PY free-port)
DV_DIR="$work/dovecot"
start_dovecot() {
    mkdir -p "$DV_DIR/run" "$DV_DIR/state" "$DV_DIR/mail" "$DV_DIR/home"
    chown -R nobody:nogroup "$DV_DIR/mail" "$DV_DIR/home"
    cat > "$DV_DIR/dovecot.conf" <<EOF
# Private bench instance: IMAP on 127.0.0.1 only, one static user.
base_dir = $DV_DIR/run
state_dir = $DV_DIR/state
log_path = $DV_DIR/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:$DV_DIR/mail/%u
first_valid_uid = 1
passdb {
  driver = static
  args = password=benchpass
}
userdb {
  driver = static
  args = uid=$(id -u nobody) gid=$(id -g nobody) home=$DV_DIR/home/%u
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $DV_PORT
  }
  inet_listener imaps {
    port = 0
  }
}
service anvil {
  chroot =
}
service imap-login {
  chroot =
}
EOF
    DV_CONF="$DV_DIR/dovecot.conf"
    dovecot -c "$DV_CONF" >"$DV_DIR/start.log" 2>&1 || { cat "$DV_DIR/start.log" >&2; return 1; }
    for _ in $(seq 1 100); do
        python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' \
            "$DV_PORT" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# ---------------------------------------------------------------- load
# run_load PORT SESSIONS MSGS RCPT... : smtp-source, one process per
# recipient (at most one per session), sessions and messages shared out.
# Sets LOAD_T0 LOAD_T1; returns non-zero if a generator failed.
run_load() {
    local port=$1 s=$2 m=$3
    shift 3
    local rcpts=("$@")
    local k=${#rcpts[@]}
    (( k > s )) && k=$s
    local per_s=$(( s / k )) per_m=$(( m / k )) pids=() i rc=0
    LOAD_T0=$(now)
    for (( i = 0; i < k; i++ )); do
        local ss=$per_s mm=$per_m
        if (( i == 0 )); then
            ss=$(( s - per_s * (k - 1) ))
            mm=$(( m - per_m * (k - 1) ))
        fi
        smtp-source -s "$ss" -m "$mm" -l "$SIZE" -S "bench load $i" \
            -f vendor@vendor.bench.test -t "${rcpts[$i]}" -M client.bench.test \
            "127.0.0.1:$port" >"$work/source.$i.log" 2>&1 &
        pids+=($!)
    done
    for p in "${pids[@]}"; do
        wait "$p" || rc=1
    done
    LOAD_T1=$(now)
    return $rc
}

# latency_start PORT OUT RCPT... [-- CITE_RCPT CITE_ID...]: our client alongside the load.
latency_start() {
    local port=$1 out=$2
    shift 2
    local args=()
    while [[ $# -gt 0 && $1 != -- ]]; do
        args+=(--rcpt "$1")
        shift
    done
    if [[ ${1:-} == -- ]]; then
        shift
        args+=(--cite-rcpt "$1")
        shift
        for id in "$@"; do args+=(--cite "$id"); done
    fi
    rm -f "$work/stop"
    "$BCB" latency --server "127.0.0.1:$port" --stop-file "$work/stop" --out "$out" \
        --size "$SIZE" "${args[@]}" 2>>"$work/latency.log" &
    LAT_PID=$!
}
latency_stop() {
    touch "$work/stop"
    wait "$LAT_PID" || return 1
}
jget() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."): d=d[k]
print(d if not isinstance(d,float) else round(d,2))' "$1" "$2" 2>/dev/null || echo n/a; }

# Parts 1 to 4 (not with --only-dns).
if [[ $only != dns ]]; then
# ---------------------------------------------------------------- part 1
log "part 1: SMTP ingest, $MSGS messages of ${SIZE} B at sessions: $SESSIONS"
if start_sink; then
    for s in $SESSIONS; do
        latency_start "$SINK_PORT" "$work/lat.sink.$s.json" bench@bench.test
        if run_load "$SINK_PORT" "$s" "$MSGS" bench@bench.test bench@bench.test bench@bench.test bench@bench.test; then
            R[sink.$s]=$(calc "$MSGS / ($LOAD_T1 - $LOAD_T0)")
        else
            fail "smtp-source against smtp-sink at $s sessions"
        fi
        latency_stop || fail "latency client against smtp-sink"
        R[sink.$s.p50]=$(jget "$work/lat.sink.$s.json" data_to_250.p50_ms)
        R[sink.$s.p99]=$(jget "$work/lat.sink.$s.json" data_to_250.p99_ms)
        log "smtp-sink $s sessions: ${R[sink.$s]:-n/a} msg/s"
    done
    kill -TERM "$SINK_PID" 2>/dev/null; wait "$SINK_PID" 2>/dev/null; forget_pid "$SINK_PID"
else
    fail "starting smtp-sink"
fi

if start_postfix; then
    for s in $SESSIONS; do
        find "$PF_MAILDIR" -type f -delete 2>/dev/null
        latency_start "$PF_PORT" "$work/lat.pf.$s.json" bench@bench.test
        if run_load "$PF_PORT" "$s" "$MSGS" bench@bench.test bench@bench.test bench@bench.test bench@bench.test; then
            R[pf.$s]=$(calc "$MSGS / ($LOAD_T1 - $LOAD_T0)")
        else
            fail "smtp-source against Postfix at $s sessions"
        fi
        latency_stop || fail "latency client against Postfix"
        sent=$(jget "$work/lat.pf.$s.json" sent)
        [[ $sent =~ ^[0-9]+$ ]] || sent=0
        if t2=$("$BCB" wait-files --dir "$PF_MAILDIR" --count $(( MSGS + sent )) --timeout-secs "$WAIT"); then
            R[pf.$s.e2e]=$(calc "($MSGS + $sent) / (${t2%% *} - $LOAD_T0)")
        else
            fail "Postfix did not deliver every message at $s sessions"
        fi
        R[pf.$s.p50]=$(jget "$work/lat.pf.$s.json" data_to_250.p50_ms)
        R[pf.$s.p99]=$(jget "$work/lat.pf.$s.json" data_to_250.p99_ms)
        log "Postfix $s sessions: accept ${R[pf.$s]:-n/a} msg/s, delivered ${R[pf.$s.e2e]:-n/a} msg/s"
    done
    postfix -c "$PF_ETC" stop >/dev/null 2>&1
    PF_ETC=""
else
    fail "starting the private Postfix"
fi

# bc_ingest DIR SESSIONS KEY RCPT... [-- CITE_RCPT IDS...]: one ingest run
# against the running backchannel; results under R[KEY.*].
bc_ingest() {
    local dir=$1 s=$2 key=$3
    shift 3
    local rcpts=() rest=()
    while [[ $# -gt 0 && $1 != -- ]]; do rcpts+=("$1"); shift; done
    rest=("$@")
    local port=${BC_SMTP##*:}
    local before
    before=$($PY counts "$BC_DB" 0 | python3 -c 'import json,sys; print(json.load(sys.stdin)["max_message_id"])')
    latency_start "$port" "$work/lat.$key.json" "${rcpts[@]}" "${rest[@]}"
    if run_load "$port" "$s" "$MSGS" "${rcpts[@]}"; then
        R[$key]=$(calc "$MSGS / ($LOAD_T1 - $LOAD_T0)")
    else
        fail "smtp-source against backchannel ($key)"
    fi
    latency_stop || fail "latency client against backchannel ($key)"
    local sent
    sent=$(jget "$work/lat.$key.json" sent)
    [[ $sent =~ ^[0-9]+$ ]] || sent=0
    if t2=$("$BCB" wait-ingested --db "$BC_DB" --timeout-secs "$WAIT"); then
        R[$key.threaded]=$(calc "($MSGS + $sent) / ($t2 - $LOAD_T0)")
        R[$key.drain_s]=$(calc "$t2 - $LOAD_T1")
    else
        fail "backchannel did not ingest every message ($key)"
    fi
    R[$key.p50]=$(jget "$work/lat.$key.json" data_to_250.p50_ms)
    R[$key.p99]=$(jget "$work/lat.$key.json" data_to_250.p99_ms)
    R[$key.rcpt_p50]=$(jget "$work/lat.$key.json" rcpt_to_250.p50_ms)
    R[$key.rcpt_p99]=$(jget "$work/lat.$key.json" rcpt_to_250.p99_ms)
    R[$key.counts]=$($PY counts "$BC_DB" "$before")
    log "backchannel $key: accept ${R[$key]:-n/a} msg/s, threaded ${R[$key.threaded]:-n/a} msg/s, p99 ${R[$key.p99]} ms; ${R[$key.counts]}"
}

for s in $SESSIONS; do
    dir="$work/bc-$s"
    if ! bc_start "$dir"; then
        fail "starting backchannel"
        continue
    fi
    if ! toks=$($PY seed "$BC_HTTP" "$BC_TOKEN" "P-$s" 3); then
        fail "seeding side conversations through the API"
        bc_stop
        continue
    fi
    mapfile -t tk <<<"$toks"
    bc_ingest "$dir" "$s" "bc.$s" "reply+${tk[0]}@$DOMAIN" "reply+${tk[1]}@$DOMAIN" \
        "reply+${tk[2]}@$DOMAIN" "reply@$DOMAIN"
    bc_stop
done

# ---------------------------------------------------------------- part 2
log "part 2: scale, $FILL_MSGS messages over $FILL_SCS side conversations, then 20 sessions"
fdir="$work/bc-fill"
mkdir -p "$fdir/data"
t=$(now)
if "$BCB" fill --data-dir "$fdir/data" --domain "$DOMAIN" --messages "$FILL_MSGS" \
    --side-conversations "$FILL_SCS" --size "$SIZE" --tokens-out "$fdir/tokens.txt" \
    --ids-out "$fdir/ids.txt" >"$fdir/fill.json" 2>"$fdir/fill.log"; then
    R[fill.secs]=$(calc "$(now) - $t")
    R[fill.rate]=$(calc "$FILL_MSGS / ${R[fill.secs]}")
    R[fill.db_gb]=$(calc "$(jget "$fdir/fill.json" db_bytes) / 1e9")
    # The fill leaves gigabytes of dirty pages: flushed first, so that the
    # kernel writing them back does not slow the measured run's fsyncs.
    t=$(now)
    sync
    R[fill.sync]=$(calc "$(now) - $t")
    R[route.inproc]=$("$BCB" route-latency --db "$fdir/data/backchannel.db" \
        --tokens "$fdir/tokens.txt" --domain "$DOMAIN" --samples 20000) || fail "route-latency"
    # Rounds of two 20-session runs: one on a new empty store (set up as in
    # part 1), then one on the filled store. Each filled-store run is thus
    # compared with a run made a minute before it, not with part 1's from
    # several minutes and a fill earlier: the machine's drift in between
    # would otherwise count as the store's size. Every run is reported.
    step=$(( FILL_SCS / 3 ))
    mapfile -t ft < <(awk -v s="$step" 'NR % s == 1' "$fdir/tokens.txt" | head -3)
    mapfile -t ids < <(head -200 "$fdir/ids.txt")
    for round in $(seq 1 "$SCALE_ROUNDS"); do
        rdir="$work/bc-ref-$round"
        if bc_start "$rdir"; then
            if toks=$($PY seed "$BC_HTTP" "$BC_TOKEN" "P-ref-$round" 3); then
                mapfile -t tk <<<"$toks"
                bc_ingest "$rdir" 20 "ref.$round" "reply+${tk[0]}@$DOMAIN" "reply+${tk[1]}@$DOMAIN" \
                    "reply+${tk[2]}@$DOMAIN" "reply@$DOMAIN"
            else
                fail "seeding side conversations through the API (empty store, round $round)"
            fi
            bc_stop
        else
            fail "starting backchannel on an empty store (round $round)"
        fi
        rm -rf "$rdir/data"
        if bc_start "$fdir"; then
            bc_ingest "$fdir" 20 "big.$round" "reply+${ft[0]}@$DOMAIN" "reply+${ft[1]}@$DOMAIN" \
                "reply+${ft[2]}@$DOMAIN" "reply@$DOMAIN" -- "reply@$DOMAIN" "${ids[@]}"
            bc_stop
        else
            fail "starting backchannel on the filled store (round $round)"
        fi
    done
    for m in "" .threaded .p50 .p99 .rcpt_p50 .rcpt_p99; do
        R[big.20$m]=$(median_of big "$m")
        R[ref.20$m]=$(median_of ref "$m")
    done
    R[big.20.counts]=${R[big.1.counts]:-n/a}
    # The web console on the filled store: each page's time on one
    # keep-alive connection over loopback (server time plus a loopback
    # round trip), after one warm-up load. The owner's unread list holds the
    # threads the rounds above wrote to (the fill ran before any user).
    if bc_start "$fdir"; then
        if link=$("$BIN" user login-link --config "$fdir/config.toml" --email "admin@$DOMAIN" 2>>"$fdir/server.log"); then
            link="/app/login/${link##*/app/login/}"
            mid=$(( FILL_SCS / 2 ))
            mid_parent=$(python3 -c 'import sqlite3,sys
c = sqlite3.connect(sys.argv[1])
print(c.execute("SELECT p.external_id FROM side_conversations s JOIN parents p ON p.id = s.parent_id WHERE s.id = ?", (int(sys.argv[2]),)).fetchone()[0])' "$BC_DB" "$mid")
            CONSOLE_PAGES=(/app/ "next:/app/" "/app/?filter=open" "next:/app/?filter=open" "/app/?filter=closed"
                "/app/?filter=mine" /app/unrouted "/app/parents/$mid_parent" "/app/side-conversations/$mid")
            if out=$($PY console-pages "$BC_HTTP" "$link" "$CONSOLE_REPS" "${CONSOLE_PAGES[@]}"); then
                R[console.pages]=$out
            else
                fail "timing the console's pages on the filled store"
            fi
        else
            fail "making a sign-in link on the filled store"
        fi
        bc_stop
    else
        fail "starting backchannel on the filled store (console pages)"
    fi
else
    fail "filling the store (see fill.log)"
    tail -5 "$fdir/fill.log" >&2
fi
rm -rf "$fdir/data"

# ---------------------------------------------------------------- parts 3 and 4
log "part 3: agent view, $IMAP_MSGS messages in one mailbox; part 4: memory"
mail_dir="$work/mail"
$PY gen-mail "$IMAP_MSGS" "$mail_dir" || fail "generating the agent-view messages"
rss() { awk -v k="$2:" '$1 == k { printf "%.1f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null; }
mbsync_pull() { # HOST PORT USER PASS → prints seconds; checks the count
    local rc="$work/mbsyncrc" local_dir="$work/mbsync-local"
    rm -rf "$local_dir"; mkdir -p "$local_dir"
    cat > "$rc" <<EOF
IMAPAccount bench
Host $1
Port $2
User $3
Pass $4
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account bench

MaildirStore local
Path $local_dir/
Inbox $local_dir/INBOX

Channel pull
Far :remote:
Near :local:
Patterns INBOX
Create Near
Sync Pull
SyncState *
EOF
    local t0 t1 n
    t0=$(now)
    mbsync -c "$rc" -q pull >"$work/mbsync.log" 2>&1 || { tail -3 "$work/mbsync.log" >&2; return 1; }
    t1=$(now)
    n=$(find "$local_dir/INBOX/cur" "$local_dir/INBOX/new" -type f 2>/dev/null | wc -l)
    if [[ $n -ne $IMAP_MSGS ]]; then
        echo "mbsync pulled $n of $IMAP_MSGS" >&2
        return 1
    fi
    calc "$t1 - $t0"
}

# Dovecot
if start_dovecot; then
    md="$DV_DIR/mail/bench"
    mkdir -p "$md/cur" "$md/new" "$md/tmp"
    $PY maildir-copy "$mail_dir" "$md"
    chown -R nobody:nogroup "$DV_DIR/mail"
    if out=$($PY imap-fetch 127.0.0.1 "$DV_PORT" bench benchpass INBOX "$IMAP_MSGS"); then
        R[dv.fetch]=$out
    else
        fail "imaplib FETCH against Dovecot"
    fi
    R[dv.mbsync]=$(mbsync_pull 127.0.0.1 "$DV_PORT" bench benchpass) || fail "mbsync against Dovecot"
    doveadm -c "$DV_CONF" stop >/dev/null 2>&1
    DV_CONF=""
else
    fail "starting the private Dovecot"
fi

# backchannel
dir="$work/bc-view"
if bc_start "$dir"; then
    # Part 4a: idle connections.
    base=$(rss "$BC_PID" VmRSS)
    echo 5 > "/proc/$BC_PID/clear_refs" 2>/dev/null
    rm -f "$work/idle.ready" "$work/idle.release"
    "$BCB" idle --server "$BC_SMTP" --n "$IDLE" --ready-file "$work/idle.ready" \
        --release-file "$work/idle.release" >"$work/idle.out" 2>"$work/idle.log" &
    idle_pid=$!
    for _ in $(seq 1 600); do
        [[ -e "$work/idle.ready" ]] && break
        kill -0 "$idle_pid" 2>/dev/null || break
        sleep 0.1
    done
    if [[ -e "$work/idle.ready" ]]; then
        sleep 1
        R[mem.base]=$base
        R[mem.idle]=$(rss "$BC_PID" VmRSS)
        R[mem.idle_peak]=$(rss "$BC_PID" VmHWM)
    fi
    touch "$work/idle.release"
    wait "$idle_pid" || fail "holding $IDLE idle SMTP connections (see idle.log)"
    log "memory: base ${R[mem.base]:-n/a} MB, $IDLE idle ${R[mem.idle]:-n/a} MB (peak ${R[mem.idle_peak]:-n/a})"

    # Part 3: the agent view.
    if toks=$($PY seed "$BC_HTTP" "$BC_TOKEN" "P-view" 1); then
        if "$BCB" send --server "$BC_SMTP" --rcpt "reply+${toks}@$DOMAIN" --dir "$mail_dir" --sessions 4 \
            2>>"$work/send.log" && "$BCB" wait-ingested --db "$BC_DB" --timeout-secs "$WAIT" >/dev/null; then
            if [[ -z "$BC_IMAP" ]]; then
                R[bc.imap]="IMAP not available"
                log "IMAP not available in this build: the agent-view comparison is skipped"
            else
                echo 5 > "/proc/$BC_PID/clear_refs" 2>/dev/null
                if out=$($PY imap-fetch 127.0.0.1 "${BC_IMAP##*:}" "admin@$DOMAIN" "$BC_TOKEN" INBOX "$IMAP_MSGS"); then
                    R[bc.fetch]=$out
                    R[mem.fetch_peak]=$(rss "$BC_PID" VmHWM)
                else
                    fail "imaplib FETCH against backchannel"
                fi
                R[bc.mbsync]=$(mbsync_pull 127.0.0.1 "${BC_IMAP##*:}" "admin@$DOMAIN" "$BC_TOKEN") \
                    || fail "mbsync against backchannel"
            fi
        else
            fail "delivering the agent-view messages to backchannel"
        fi
    else
        fail "seeding the agent-view side conversation"
    fi
    bc_stop
else
    fail "starting backchannel for the agent view"
fi

fi # parts 1 to 4

# ---------------------------------------------------------------- part 5
# Threading under a resolver's latency: for each delay and each mix, a new
# store, a stand-in (`bcbench dns`) answering every query after the delay
# (NXDOMAIN with an SOA of 300 s), [dns] timeout at its default (5 s), and
# 20 sessions sending the mix to three side conversations and reply@.
log "part 5: threading under resolver latency, delays $DNS_DELAYS ms; $DNS_ONE_MSGS messages from one domain, $DNS_MANY_MSGS from as many domains"
dnslat_run() { # DELAY MIX MESSAGES DOMAINS ROUND → R[dl.DELAY.MIX.ROUND.*]
    local delay=$1 mix=$2 msgs=$3 domains=$4 key="dl.$1.$2.$5"
    local port dpid dir out t0 t1 rep
    port=$($PY free-port)
    "$BCB" dns --listen "127.0.0.1:$port" --delay-ms "$delay" 2>>"$work/dnslat.log" &
    dpid=$!
    started_pids+=("$dpid")
    dir="$work/bc-dns-$delay-$mix-$5"
    if DNS_PORT=$port DNS_TIMEOUT=5s bc_start "$dir"; then
        if toks=$($PY seed "$BC_HTTP" "$BC_TOKEN" "P-dns-$delay-$mix-$5" 3); then
            mapfile -t tk <<<"$toks"
            if out=$("$BCB" send-mix --server "$BC_SMTP" --messages "$msgs" --domains "$domains" \
                --sessions 20 --size "$SIZE" --rcpt "reply+${tk[0]}@$DOMAIN" --rcpt "reply+${tk[1]}@$DOMAIN" \
                --rcpt "reply+${tk[2]}@$DOMAIN" --rcpt "reply@$DOMAIN" 2>>"$work/dnslat.log"); then
                t0=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["t0"])' "$out")
                t1=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["t1"])' "$out")
                R[$key.accept]=$(calc "$msgs / ($t1 - $t0)")
                if rep=$("$BCB" threaded --db "$BC_DB" --t0 "$t0" --timeout-secs "$WAIT"); then
                    for k in threaded_rate to_threaded_p50_ms to_threaded_p99_ms n temperror failed; do
                        R[$key.$k]=$(python3 -c 'import json,sys; v=json.loads(sys.argv[1])[sys.argv[2]]
print(round(v, 2) if isinstance(v, float) else v)' "$rep" "$k")
                    done
                else
                    fail "backchannel did not thread every message (delay $delay ms, $mix)"
                fi
            else
                fail "sending the $mix mix (delay $delay ms)"
            fi
        else
            fail "seeding side conversations (delay $delay ms, $mix)"
        fi
        bc_stop
    else
        fail "starting backchannel (delay $delay ms, $mix)"
    fi
    kill -TERM "$dpid" 2>/dev/null; wait "$dpid" 2>/dev/null; forget_pid "$dpid"
    rm -rf "$dir/data"
    log "round $5, delay $delay ms, $mix: accept ${R[$key.accept]:-n/a} msg/s, threaded ${R[$key.threaded_rate]:-n/a} msg/s, 250→threaded p50 ${R[$key.to_threaded_p50_ms]:-n/a} / p99 ${R[$key.to_threaded_p99_ms]:-n/a} ms"
}
# Rounds of every delay and mix in turn, so that the machine's drift
# spreads over all of them; the report gives the median of the rounds.
for round in $(seq 1 "$DNS_ROUNDS"); do
    for delay in $DNS_DELAYS; do
        dnslat_run "$delay" one "$DNS_ONE_MSGS" 1 "$round"
        dnslat_run "$delay" many "$DNS_MANY_MSGS" "$DNS_MANY_MSGS" "$round"
    done
done
dl_median() { # KEY-PREFIX FIELD: median over the rounds
    local vals=() r x
    for r in $(seq 1 "$DNS_ROUNDS"); do
        x=${R[$1.$r.$2]:-}
        [[ -n $x && $x != n/a ]] && vals+=("$x")
    done
    if [[ ${#vals[@]} -eq 0 ]]; then
        echo n/a
    else
        python3 -c 'import statistics,sys; m = statistics.median(float(v) for v in sys.argv[1:])
print(int(m) if m == int(m) else round(m, 2))' "${vals[@]}"
    fi
}
for delay in $DNS_DELAYS; do
    for mix in one many; do
        for f in accept threaded_rate to_threaded_p50_ms to_threaded_p99_ms n temperror; do
            R[dl.$delay.$mix.$f]=$(dl_median "dl.$delay.$mix" "$f")
        done
    done
done

# ---------------------------------------------------------------- report
load_end=$(uptime | sed 's/.*load average: //')
v() { echo "${R[$1]:-n/a}"; }
ratio() { # a b → a/b with 3 decimals (so 0.899 is not shown as 0.90 next to a 0.9 target)
    local a b
    a=$(v "$1"); b=$(v "$2")
    if [[ $a == n/a || $b == n/a ]]; then
        echo n/a
    else
        awk "BEGIN { v = $a / $b; if (v != v) print \"n/a\"; else printf \"%.3f\", v }" 2>/dev/null || echo n/a
    fi
}
dns_section() { # part 5's section of the report
    echo "## 5. Threading under resolver latency (msg/s; commit (\`250\`) → threaded, ms)"
    echo
    echo "Resolver stand-in \`bcbench dns\` on 127.0.0.1 answering every query after the delay (NXDOMAIN with an SOA, TTL and minimum 300 s);"
    echo "backchannel \`[dns] timeout = \"5s\"\` (the default), a new store per run; \`bcbench send-mix\`: 20 sessions, ${SIZE} B bodies, to three"
    echo "side conversations and \`reply@\`; *one*: $DNS_ONE_MSGS messages from one sender domain; *many*: $DNS_MANY_MSGS messages, a domain each."
    echo "Threaded rate: messages / (last threaded − start of the load). Medians of $DNS_ROUNDS round(s), each round every delay and mix in turn."
    echo "Targets: at 50 ms ≥ 0.8× the 0 ms rate, at 200 ms ≥ 0.5×."
    echo
    echo "| mix | delay ms | accept | threaded | threaded / 0 ms | 250→threaded p50 | p99 | messages threaded | with temperror | threaded, every round |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    local first mix d r rounds
    first=${DNS_DELAYS%% *}
    for mix in one many; do
        for d in $DNS_DELAYS; do
            rounds=""
            for r in $(seq 1 "$DNS_ROUNDS"); do rounds+="${rounds:+, }$(v dl.$d.$mix.$r.threaded_rate)"; done
            echo "| $mix | $d | $(v dl.$d.$mix.accept) | $(v dl.$d.$mix.threaded_rate) | $(ratio dl.$d.$mix.threaded_rate dl.$first.$mix.threaded_rate) | $(v dl.$d.$mix.to_threaded_p50_ms) | $(v dl.$d.$mix.to_threaded_p99_ms) | $(v dl.$d.$mix.n) | $(v dl.$d.$mix.temperror) | $rounds |"
        done
    done
    echo
}
fj() { # JSON key.path in R[$1]
    local j
    j=$(v "$1")
    [[ $j == n/a || $j == "IMAP not available" ]] && { echo n/a; return; }
    python3 -c 'import json,sys; d=json.loads(sys.argv[1])
for k in sys.argv[2].split("."): d=d[k]
print(round(d, 3) if isinstance(d, float) else d)' "$j" "$2" 2>/dev/null || echo n/a
}
if [[ $only == dns ]]; then
    {
        dns_section
        echo "Part 5 alone (\`bench/run.sh --only-dns\`, $mode): $date_start, backchannel $(git -C "$repo" rev-parse --short HEAD 2>/dev/null)${BENCH_BACKCHANNEL_BIN:+ (gateway binary: $BENCH_BACKCHANNEL_BIN)}, load average at start $load_start, at end $load_end."
        if [[ ${#failures[@]} -gt 0 ]]; then
            echo
            for f in "${failures[@]}"; do echo "- FAILED: $f"; done
        fi
        echo
    } >"$work/dns-section.md"
    $PY splice-section "$RESULTS" "$work/dns-section.md" "## 5. "
    log "wrote part 5 into $RESULTS"
    cat "$work/dns-section.md"
    [[ ${#failures[@]} -gt 0 ]] && exit 1
    exit 0
fi
{
    echo "# Benchmark results"
    echo
    echo "Written by \`bench/run.sh\` ($mode run). Only ratios measured in this one run mean"
    echo "anything: the machine is shared and noisy."
    echo
    echo "- date: $date_start"
    echo "- machine: $(uname -srm), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(awk '/MemTotal/ {printf "%.0f GB", $2/1048576}' /proc/meminfo) RAM"
    echo "- load average (1/5/15 min) at start: $load_start; at end: $load_end"
    echo "- backchannel $(git -C "$repo" rev-parse --short HEAD 2>/dev/null) (release build); $(postconf -d mail_version 2>/dev/null | sed 's/ = / /'); dovecot $(dovecot --version 2>/dev/null | cut -d' ' -f1); $(mbsync --version 2>/dev/null)"
    echo "- messages: smtp-source \`-l $SIZE\` (≈5.3 KB with headers), $MSGS per run, a new connection per message;"
    echo "  backchannel config: data dir on $(df -P "$work" | awk 'NR==2 {print $1}'), [dns] nameservers = a local stand-in answering NXDOMAIN at once,"
    echo "  ingest.authenticate = ${BENCH_AUTHENTICATE:-true}, webhooks.deliver = false, outbound maildir, log level info to a file"
    echo "- load mix against backchannel: smtp-source split into one process per recipient: three"
    echo "  \`reply+<token>\` addresses of side conversations started through the API, and \`reply@\` (unrouted)"
    echo
    echo "## 1. SMTP ingest (msg/s; latency end of DATA → 250 from our client alongside, ms)"
    echo
    echo "| sessions | smtp-sink | Postfix accept | Postfix delivered | backchannel accept | backchannel threaded | bc/Postfix accept | bc threaded/Postfix delivered | bc/smtp-sink | bc p50 | bc p99 | Postfix p50 | Postfix p99 |"
    echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for s in $SESSIONS; do
        echo "| $s | $(v sink.$s) | $(v pf.$s) | $(v pf.$s.e2e) | $(v bc.$s) | $(v bc.$s.threaded) | $(ratio bc.$s pf.$s) | $(ratio bc.$s.threaded pf.$s.e2e) | $(ratio bc.$s sink.$s) | $(v bc.$s.p50) | $(v bc.$s.p99) | $(v pf.$s.p50) | $(v pf.$s.p99) |"
    done
    echo
    echo "Time from the end of the load until backchannel had routed and threaded everything (s):"
    for s in $SESSIONS; do echo "- $s sessions: $(v bc.$s.drain_s); stored by route: $(v bc.$s.counts)"; done
    echo
    echo "## 2. Scale: $FILL_MSGS messages over $FILL_SCS side conversations"
    echo
    echo "- fill through the store API: $(v fill.secs) s ($(v fill.rate) msg/s), database $(v fill.db_gb) GB; its writes flushed (\`sync\`) before measuring: $(v fill.sync) s"
    echo "- 20 sessions, $SCALE_ROUNDS round(s), each a run on a new empty store (same setup as part 1) and then one on the filled store:"
    echo
    echo "| round | empty accept | empty threaded | filled accept | filled threaded | filled/empty accept | filled/empty threaded | filled p50 | filled p99 |"
    echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for r in $(seq 1 "$SCALE_ROUNDS"); do
        echo "| $r | $(v ref.$r) | $(v ref.$r.threaded) | $(v big.$r) | $(v big.$r.threaded) | $(ratio big.$r ref.$r) | $(ratio big.$r.threaded ref.$r.threaded) | $(v big.$r.p50) | $(v big.$r.p99) |"
    done
    echo
    echo "- median of the rounds: filled store accept $(v big.20) msg/s, threaded $(v big.20.threaded) msg/s, p50 $(v big.20.p50) ms, p99 $(v big.20.p99) ms; empty store accept $(v ref.20), threaded $(v ref.20.threaded)"
    echo "- **ratio filled / empty store (medians)**: accept $(ratio big.20 ref.20), threaded $(ratio big.20.threaded ref.20.threaded); against part 1's 20-session run instead: accept $(ratio big.20 bc.20), threaded $(ratio big.20.threaded bc.20.threaded)"
    echo "- routing lookup (RCPT → 250 over SMTP, our client, medians): empty store p50 $(v ref.20.rcpt_p50) / p99 $(v ref.20.rcpt_p99) ms; filled store p50 $(v big.20.rcpt_p50) / p99 $(v big.20.rcpt_p99) ms"
    echo "- routing lookup in-process (\`smtp::policy::decide\`, random tokens of the filled store): $(v route.inproc)"
    echo "- stored by route on the filled store (round 1): $(v big.20.counts) (our client cites stored Message-IDs on every fourth message: route \`references\`)"
    echo
    echo "Web console pages on the filled store (ms per page load, $CONSOLE_REPS loads each after one warm-up, one keep-alive connection; target: under 50 ms server time):"
    echo
    echo "| page | status | p50 | p99 | max | bytes |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: |"
    for pg in "${CONSOLE_PAGES[@]}"; do
        echo "| \`$pg\` | $(fj console.pages "$pg.status") | $(fj console.pages "$pg.p50_ms") | $(fj console.pages "$pg.p99_ms") | $(fj console.pages "$pg.max_ms") | $(fj console.pages "$pg.bytes") |"
    done
    echo
    echo "## 3. Agent view: $IMAP_MSGS messages (~5 KB) in INBOX (s; first run, then median of 3)"
    echo
    if [[ "$(v bc.imap)" == "IMAP not available" ]]; then
        echo "**IMAP not available** in this build of backchannel (no \`imap\` address in the ready file): the backchannel side was not measured."
        echo
    fi
    echo "| | Dovecot first | Dovecot median | backchannel first | backchannel median | ratio bc/Dovecot (median) |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: |"
    for k in envelope body; do
        d=$(fj dv.fetch "$k.median_s"); b=$(fj bc.fetch "$k.median_s")
        r=n/a; [[ $d != n/a && $b != n/a ]] && r=$(calc "$b / $d")
        label="UID FETCH 1:* (UID FLAGS ENVELOPE)"; [[ $k == body ]] && label="UID FETCH 1:* (BODY.PEEK[])"
        echo "| \`$label\` | $(fj dv.fetch "$k.first_s") | $d | $(fj bc.fetch "$k.first_s") | $b | $r |"
    done
    echo "| mbsync full pull | $(v dv.mbsync) | | $(v bc.mbsync) | | $(ratio bc.mbsync dv.mbsync) |"
    echo
    echo "## 4. Memory of backchannel (RSS, MB)"
    echo
    echo "- after start: $(v mem.base); with $IDLE idle SMTP connections: $(v mem.idle) (peak $(v mem.idle_peak))"
    echo "- peak during the $IMAP_MSGS-message FETCHes: $(v mem.fetch_peak)"
    echo
    dns_section
    if [[ ${#failures[@]} -gt 0 ]]; then
        echo "## Failures"
        echo
        for f in "${failures[@]}"; do echo "- $f"; done
    else
        echo "Every part ran."
    fi
} >"$RESULTS"
log "wrote $RESULTS"
cat "$RESULTS"

if [[ ${#failures[@]} -gt 0 ]]; then
    exit 1
fi
exit 0
