#!/usr/bin/env bash
# The cost of TLS: the same durable loads against larder (--fsync always) over plain TCP and
# over TLS, and the ratio TLS/plain.
#
# Builds larder and the loadgen bench in release mode, makes a self-signed certificate with
# openssl, then for each workload starts a fresh larder without TLS, runs loadgen, stops it,
# and does the same with a fresh larder serving TLS (loadgen --tls-ca). Each server runs
# alone and every run starts from an empty data directory.
#
# Usage: benches/tls.sh
# Environment:
#   DURATION=4     measured seconds per run
#   WARMUP=1       unmeasured seconds before each run
#   PORT=11600     first port to listen on (each server start takes the next one)
# Needs: cargo, jq, openssl. Honours CARGO_TARGET_DIR.

set -euo pipefail

DURATION=${DURATION:-4}
WARMUP=${WARMUP:-1}
PORT=${PORT:-11600}

for tool in cargo jq openssl; do
    command -v "$tool" >/dev/null || { echo "tls.sh: $tool not found" >&2; exit 1; }
done
cd "$(dirname "$0")/.."

work=$(mktemp -d)
server_pid=""
stop_server() {
    if [[ -n $server_pid ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
cleanup() {
    stop_server
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=benches/build.sh
source "benches/build.sh" tls.sh

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 \
    -addext basicConstraints=critical,CA:FALSE \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

# Starts larder ($1: plain or tls) on the next free port; waits for its "listening" line.
start_server() {
    while (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do PORT=$((PORT + 1)); done
    addr=127.0.0.1:$PORT
    local tls=()
    [[ $1 == tls ]] && tls=(--tls-cert "$work/cert.pem" --tls-key "$work/key.pem")
    : >"$work/$1.log"
    LARDER_LOG=info "$larder" serve --listen "$addr" --max-jobs 0 --max-bytes 0 "${tls[@]}" \
        --data-dir "$(mktemp -d -p "$work")" 2>>"$work/$1.log" &
    server_pid=$!
    PORT=$((PORT + 1))
    for _ in $(seq 200); do
        grep -q ' listening' "$work/$1.log" && return 0
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.05
    done
    echo "tls.sh: larder ($1) did not start on $addr; log:" >&2
    cat "$work/$1.log" >&2
    exit 1
}

workloads=(
    "put 1x1|--workload put --connections 1 --depth 1"
    "put 16x16|--workload put --connections 16 --depth 16"
    "put 16x16 1KiB|--workload put --connections 16 --depth 16 --body-size 1024"
    "mixed 4p+4c d1|--workload mixed --producers 4 --consumers 4 --depth 1"
    "mixed 4p+4c d16|--workload mixed --producers 4 --consumers 4 --depth 16"
)

printf '%-24s %12s %12s %8s   %s\n' workload plain/s tls/s tls/plain "p50/p99 µs: plain | tls"
for i in "${!workloads[@]}"; do
    name=${workloads[$i]%%|*}
    read -r -a flags <<<"${workloads[$i]#*|}"
    for mode in plain tls; do
        start_server "$mode"
        tls=()
        [[ $mode == tls ]] && tls=(--tls-ca "$work/cert.pem")
        "$loadgen" --addr "$addr" "${flags[@]}" "${tls[@]}" --duration "$DURATION" \
            --warmup "$WARMUP" --json >"$work/$i.$mode.json" 2>"$work/$i.$mode.err" || {
            echo "tls.sh: loadgen failed for $name ($mode):" >&2
            cat "$work/$i.$mode.err" >&2
            exit 1
        }
        stop_server
    done
    case $name in
        put*) rate=.put_per_sec kind=put ;;
        *) rate=.consumed_per_sec kind=consume ;;
    esac
    plain=$(jq -r "$rate | round" "$work/$i.plain.json")
    tls=$(jq -r "$rate | round" "$work/$i.tls.json")
    lat() { jq -r --arg k "$kind" '.latency_us[$k] | "\(.p50)/\(.p99)"' "$1"; }
    printf '%-24s %12s %12s %8s   %s | %s\n' "$name" "$plain" "$tls" \
        "$(awk -v p="$plain" -v t="$tls" 'BEGIN { printf "%.2f", t / p }')" \
        "$(lat "$work/$i.plain.json")" "$(lat "$work/$i.tls.json")"
done
echo
echo "larder --fsync always; ${WARMUP} s warm-up + ${DURATION} s per run; 100-byte bodies unless"
echo "noted; mixed rows are reserve+delete pairs consumed per second."
