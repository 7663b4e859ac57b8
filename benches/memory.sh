#!/usr/bin/env bash
# Memory per queued job and recovery time, larder against beanstalkd -b, same machine, same run.
#
# For each server: start it on an empty data directory, note its RSS, put JOBS jobs of
# BODY bytes (16 connections x depth 16, loadgen), note its RSS again, stop it (SIGTERM),
# start it again on the same directory and time how long until it accepts a connection
# (recovery: larder replays its log, beanstalkd its binlog), then note the RSS after
# recovery. Prints bytes of RSS per job and the recovery times.
#
# Usage: benches/memory.sh
# Environment:
#   JOBS=1000000   jobs to queue
#   BODY=1024      body size in bytes
#   PORT=11600     port to listen on
#   BEANSTALKD=beanstalkd
# Needs: cargo, beanstalkd, python3 (for timing). Honours CARGO_TARGET_DIR.

set -euo pipefail

JOBS=${JOBS:-1000000}
BODY=${BODY:-1024}
PORT=${PORT:-11600}
BEANSTALKD=${BEANSTALKD:-beanstalkd}
cd "$(dirname "$0")/.."

work=$(mktemp -d)
pid=""
cleanup() {
    if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --quiet --bin larder
cargo bench --quiet --bench loadgen --no-run 2>/dev/null
target=${CARGO_TARGET_DIR:-target}
larder="$target/release/larder"
loadgen=$(find "$target/release/deps" -maxdepth 1 -type f -executable -name 'loadgen-*' -printf '%T@ %p\n' | sort -n | tail -1 | cut -d' ' -f2)

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# Seconds until the server answers a command (polled every 2 ms): a listening socket can
# accept connections before recovery has finished.
wait_accepting() {
    python3 - "$PORT" <<'EOF'
import socket, sys, time
port = int(sys.argv[1]); start = time.monotonic()
while True:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=600) as s:
            s.sendall(b"list-tubes\r\n")
            if s.recv(64).startswith(b"OK "): break
    except OSError:
        pass
    if time.monotonic() - start > 600: sys.exit("server did not start")
    time.sleep(0.002)
print(f"{time.monotonic() - start:.3f}")
EOF
}

measure() { # name, then the command that starts the server
    local name=$1; shift
    "$@" & pid=$!
    wait_accepting >/dev/null
    local empty; empty=$(rss_kib "$pid")
    "$loadgen" --addr "127.0.0.1:$PORT" --workload put --connections 16 --depth 16 \
        --body-size "$BODY" --jobs "$JOBS" --tube mem >/dev/null
    local full; full=$(rss_kib "$pid")
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    local disk; disk=$(du -sk "$work/$name" | cut -f1)
    "$@" & pid=$!
    local secs; secs=$(wait_accepting)
    local after; after=$(rss_kib "$pid")
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; pid=""
    awk -v n="$name" -v e="$empty" -v f="$full" -v a="$after" -v j="$JOBS" -v s="$secs" -v d="$disk" 'BEGIN {
        printf "%-22s rss empty %7d KiB  full %8d KiB  %6.0f B/job  after recovery %8d KiB (%5.0f B/job)  recovery %6.2f s  disk %8d KiB\n",
            n, e, f, (f - e) * 1024 / j, a, (a - e) * 1024 / j, s, d }'
}

echo "JOBS=$JOBS BODY=$BODY  $(date -u +%FT%TZ)  $(nproc) cores"
mkdir -p "$work/beanstalkd" "$work/larder"
measure beanstalkd "$BEANSTALKD" -l 127.0.0.1 -p "$PORT" -b "$work/beanstalkd"
measure larder "$larder" serve --listen "127.0.0.1:$PORT" --data-dir "$work/larder" --max-jobs 0
