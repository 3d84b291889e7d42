#!/usr/bin/env bash
# Runs every fuzz target for a bounded time and prints, per target, the
# executions, the coverage reached and the findings (crash, timeout,
# out-of-memory inputs saved in fuzz/artifacts/<target>/). Exits non-zero
# when any target found something. See fuzz/README.md.
#
#   fuzz/run.sh [seconds-per-target]        (default 60; CI: 10; by hand: 600)
#
# Environment:
#   FUZZ_TARGETS       targets to run (default: all six, see below)
#   FUZZ_PROFILE       release (default: optimised, runs ~10x faster) or
#                      dev (what `cargo test` built; CI)
#   FUZZ_BUILD         workspace (default) or cargo-fuzz, see below
#   FUZZ_SANITIZER     cargo-fuzz build only: address (default) or none
#   FUZZ_TARGET_DIR    cargo-fuzz build only: its target dir (fuzz/target)
#
# FUZZ_BUILD=workspace builds the targets with plain cargo in the workspace's
# own target dir (CARGO_TARGET_DIR or ./target), with fuzz/sancov-rustc as
# RUSTC_WORKSPACE_WRAPPER: the workspace's crates (the gateway and the
# targets) get libFuzzer's coverage instrumentation, every dependency is
# the very artifact `cargo test` (dev) or `cargo build --release` (release)
# already compiled. After those, this build compiles libfuzzer-sys,
# arbitrary, the gateway (instrumented) and the targets: ~2 CPU minutes dev.
# Stable Rust, no nightly flag. No AddressSanitizer: the gateway is safe
# Rust, the fuzzers look for panics, failed checks, hangs and runaway memory.
#
# FUZZ_BUILD=cargo-fuzz is the thorough build for long runs by hand:
# `cargo fuzz build`, every crate instrumented (coverage feedback inside
# mail-parser, imap-codec, … too) and, by default, AddressSanitizer (for the
# C inside: SQLite, aws-lc). Its own dependency tree: ~25 CPU minutes cold.
# ASan needs nightly flags; RUSTC_BOOTSTRAP=1 lets the stable compiler
# accept them, for this build only.
#
# Seeds: fuzz/corpus.py writes fuzz/corpus/<target>/ (gitignored) from
# ../shared/corpus and from hand-written seeds; the fuzzer adds what it
# finds there. The shared corpus is never copied into the repository.
set -euo pipefail
cd "$(dirname "$0")"

secs="${1:-60}"
targets=(${FUZZ_TARGETS:-smtp_session ingest reply_text api_request imap_command jmap_request})
profile="${FUZZ_PROFILE:-release}"
build="${FUZZ_BUILD:-workspace}"

python3 corpus.py

started=$(date +%s)
case "$build" in
workspace)
    case "$profile" in
        # Dev: the features the main crate's dev-dependencies turn on, so
        # every dependency matches the `cargo test` build (fuzz/Cargo.toml).
        dev) build_flags=(--features test-build-deps) ; dir=debug ;;
        release) build_flags=(--release) ; dir=release ;;
        *) echo "fuzz: FUZZ_PROFILE must be release or dev" >&2; exit 2 ;;
    esac
    bin_list=()
    for t in "${targets[@]}"; do bin_list+=(--bin "$t"); done
    target_dir="${CARGO_TARGET_DIR:-$(cd .. && pwd)/target}"
    bin_dir="$target_dir/$dir"
    echo "fuzz: building ${targets[*]} ($profile, coverage-instrumented gateway, dependencies from the $profile build in $target_dir)"
    RUSTC_WORKSPACE_WRAPPER="$PWD/sancov-rustc" \
        cargo build -p backchannel-fuzz "${bin_list[@]}" "${build_flags[@]}" >build.log 2>&1 || {
        tail -50 build.log
        echo "fuzz: build failed (fuzz/build.log)" >&2
        exit 2
    }
    ;;
cargo-fuzz)
    if ! command -v cargo-fuzz >/dev/null 2>&1; then
        echo "fuzz: installing cargo-fuzz (once)"
        cargo install cargo-fuzz --locked
    fi
    sanitizer="${FUZZ_SANITIZER:-address}"
    target_dir="${FUZZ_TARGET_DIR:-$PWD/target}"
    case "$profile" in
        release) build_flags=(--codegen-units 16) ; bin_dir="$target_dir/x86_64-unknown-linux-gnu/release" ;;
        dev) build_flags=(--dev) ; bin_dir="$target_dir/x86_64-unknown-linux-gnu/debug" ;;
        *) echo "fuzz: FUZZ_PROFILE must be release or dev" >&2; exit 2 ;;
    esac
    echo "fuzz: cargo fuzz build of ${targets[*]} ($profile, every crate instrumented, sanitizer $sanitizer, in $target_dir)"
    RUSTC_BOOTSTRAP=1 cargo fuzz build --target-dir "$target_dir" --sanitizer "$sanitizer" \
        "${build_flags[@]}" "${targets[@]}" >build.log 2>&1 || {
        tail -50 build.log
        echo "fuzz: build failed (fuzz/build.log)" >&2
        exit 2
    }
    # SQLite's amalgamation has two file-local arrays of one name, which
    # AddressSanitizer reports as an ODR violation at start-up; a false alarm.
    export ASAN_OPTIONS="detect_odr_violation=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
    ;;
*)
    echo "fuzz: FUZZ_BUILD must be workspace or cargo-fuzz" >&2
    exit 2
    ;;
esac
compiled=$(grep -E '^ +Compiling ' build.log | awk '{print $2}' | tr '\n' ' ' || true)
echo "fuzz: built in $(( $(date +%s) - started ))s; compiled: ${compiled:-nothing (up to date)}"

declare -A max_len=([smtp_session]=262144 [ingest]=262144 [reply_text]=65536 [api_request]=65536 [imap_command]=16384 [jmap_request]=65536)
declare -A dict=([smtp_session]=smtp.dict [ingest]=mime.dict [reply_text]=reply.dict [api_request]=api.dict [imap_command]=imap.dict [jmap_request]=jmap.dict)

# The targets' stores and spools: one directory per run, removed at the end
# (libFuzzer exits without running destructors; fuzz/src/lib.rs).
scratch_base=/dev/shm
[ -d "$scratch_base" ] && [ -w "$scratch_base" ] || scratch_base="${TMPDIR:-/tmp}"
scratch=$(mktemp -d "$scratch_base/backchannel-fuzz-run.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

mkdir -p logs
failed=0
printf '%-14s %11s %8s %7s %7s %6s %8s  %s\n' target executions exec/s cov features corpus findings artifacts
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    before=$(ls "artifacts/$t" | wc -l)
    set +e
    FUZZ_SCRATCH="$scratch" "$bin_dir/$t" "corpus/$t" \
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
    rm -rf "${scratch:?}"/*
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' | tail -1 || true)
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' | tail -1 || true)
    # libFuzzer's last status line: "#N <event> cov: C ft: F corp: K/…".
    last=$(grep -E '^#[0-9]+.* cov: ' "logs/$t.log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
    after=$(ls "artifacts/$t" | wc -l)
    found=$((after - before))
    if [ "$rc" -ne 0 ] && [ "$found" -eq 0 ]; then
        # The fuzzer stopped without saving an input: count it, show why.
        found=1
    fi
    if [ "$found" -eq 0 ] && [ "${cov:-0}" -eq 0 ]; then
        # No coverage feedback: the binary is not instrumented, or no input
        # ran. Such a run proves nothing; fail it.
        echo "fuzz: $t reported no coverage (not instrumented?)" >&2
        failed=1
    fi
    new=""
    if [ "$found" -gt 0 ]; then
        new=$(ls -t "artifacts/$t" | head -n "$found" | tr '\n' ' ' || true)
    fi
    printf '%-14s %11s %8s %7s %7s %6s %8s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$found" "$new"
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
