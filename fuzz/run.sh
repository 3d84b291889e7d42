#!/usr/bin/env bash
# Runs every fuzz target for a bounded time and prints, per target, the
# executions and the findings (crash, timeout, out-of-memory inputs saved in
# fuzz/artifacts/<target>/). Exits non-zero when any target found something.
#
#   fuzz/run.sh [seconds-per-target]        (default 60)
#
# Environment:
#   FUZZ_TARGETS       targets to run (default: all of them, see below)
#   FUZZ_TARGET_DIR    cargo target dir of the fuzz build (default: fuzz/target)
#   FUZZ_PROFILE       release (default: optimised, debug assertions on) or
#                      dev (unoptimised: compiles faster, runs slower; CI)
#
# The toolchain is stable Rust. cargo-fuzz needs nightly compiler flags
# (-Zsanitizer=address, sanitizer coverage); RUSTC_BOOTSTRAP=1 lets the
# stable compiler accept them. It is set here, for the fuzz build only.
#
# Seeds: fuzz/corpus.py writes fuzz/corpus/<target>/ (gitignored) from
# ../shared/corpus and from hand-written seeds; the fuzzer adds what it
# finds there. The shared corpus is never copied into the repository.
set -euo pipefail
cd "$(dirname "$0")"

secs="${1:-60}"
targets=(${FUZZ_TARGETS:-smtp_session ingest reply_text api_request imap_command jmap_request})
target_dir="${FUZZ_TARGET_DIR:-$PWD/target}"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz (once)"
    cargo install cargo-fuzz --locked
fi

python3 corpus.py

profile="${FUZZ_PROFILE:-release}"
case "$profile" in
    release) build_flags=(--codegen-units 16) ; bin_dir="$target_dir/x86_64-unknown-linux-gnu/release" ;;
    dev) build_flags=(--dev) ; bin_dir="$target_dir/x86_64-unknown-linux-gnu/debug" ;;
    *) echo "fuzz: FUZZ_PROFILE must be release or dev" >&2; exit 2 ;;
esac
echo "fuzz: building ${targets[*]} ($profile, debug assertions, AddressSanitizer)"
started=$(date +%s)
RUSTC_BOOTSTRAP=1 cargo fuzz build --target-dir "$target_dir" "${build_flags[@]}" >build.log 2>&1 || {
    tail -50 build.log
    echo "fuzz: build failed (fuzz/build.log)" >&2
    exit 2
}
echo "fuzz: built in $(( $(date +%s) - started ))s"

declare -A max_len=([smtp_session]=262144 [ingest]=262144 [reply_text]=65536 [api_request]=65536 [imap_command]=16384 [jmap_request]=65536)
declare -A dict=([smtp_session]=smtp.dict [ingest]=mime.dict [reply_text]=reply.dict [api_request]=api.dict [imap_command]=imap.dict [jmap_request]=jmap.dict)

# SQLite's amalgamation has two file-local arrays of one name, which
# AddressSanitizer reports as an ODR violation at start-up; a false alarm.
export ASAN_OPTIONS="detect_odr_violation=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
mkdir -p logs
failed=0
printf '%-14s %12s %9s %8s  %s\n' target executions exec/s findings artifacts
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    before=$(ls "artifacts/$t" | wc -l)
    set +e
    "$bin_dir/$t" "corpus/$t" \
        -max_total_time="$secs" \
        -timeout=30 \
        -rss_limit_mb=4096 \
        -max_len="${max_len[$t]:-65536}" \
        -dict="dicts/${dict[$t]}" \
        -detect_leaks=0 \
        -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/" \
        >"logs/$t.log" 2>&1
    rc=$?
    set -e
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' | tail -1 || true)
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' | tail -1 || true)
    after=$(ls "artifacts/$t" | wc -l)
    found=$((after - before))
    if [ "$rc" -ne 0 ] && [ "$found" -eq 0 ]; then
        # The fuzzer stopped without saving an input: count it, show why.
        found=1
    fi
    new=""
    if [ "$found" -gt 0 ]; then
        new=$(ls -t "artifacts/$t" | head -n "$found" | tr '\n' ' ' || true)
    fi
    printf '%-14s %12s %9s %8s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "$found" "$new"
    if [ "$found" -ne 0 ]; then
        failed=1
        grep -m1 -B2 -A25 -E 'panicked|ERROR: (libFuzzer|AddressSanitizer)|SUMMARY' "logs/$t.log" || tail -30 "logs/$t.log"
    fi
done
if [ "$failed" -ne 0 ]; then
    echo "fuzz: findings (logs in fuzz/logs/, inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz: no findings"
