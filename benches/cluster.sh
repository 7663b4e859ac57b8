#!/usr/bin/env bash
# Cluster mode against one larder node and beanstalkd 1.12, same machine, same run.
#
# For each load it starts, one at a time and each from empty: beanstalkd -b DIR (fsync at most
# every 50 ms, replies before syncing), beanstalkd -b DIR -f 0 (fsync per command), one larder
# node (--fsync always), and a 3-node larder cluster on loopback, loaded once through its
# leader and once through a follower (which forwards the connections to the leader). Then it
# measures failover: with a client putting through a follower, SIGKILL the leader and time
# until the first INSERTED from the new one.
#
# Usage: benches/cluster.sh
# Environment:
#   DURATION=8     measured seconds per run
#   WARMUP=1       unmeasured seconds before each run
#   BACKLOG=1000   most jobs put but not yet deleted in the mixed load
#   FAILOVERS=10   failover repetitions
#   PORT=11600     first port to try
#   SEGMENT=       the cluster nodes' --wal-segment-size (default: larder's); small segments
#                  make them snapshot and purge often (the count is reported per run)
#   CLUSTER_TLS=1  mutual TLS among the cluster nodes (one certificate for 127.0.0.1 from a
#                  CA made here with openssl)
#   BEANSTALKD=beanstalkd
# Needs: cargo, jq, python3, beanstalkd. The 2-core machine runs three nodes and the load
# generator at once: cluster figures include that contention.

set -euo pipefail

DURATION=${DURATION:-8}
WARMUP=${WARMUP:-1}
BACKLOG=${BACKLOG:-1000}
FAILOVERS=${FAILOVERS:-10}
PORT=${PORT:-11600}
BEANSTALKD=${BEANSTALKD:-beanstalkd}

for tool in cargo jq python3 "$BEANSTALKD"; do
    command -v "$tool" >/dev/null || { echo "cluster.sh: $tool not found" >&2; exit 1; }
done
cd "$(dirname "$0")/.."

work=$(mktemp -d)
pids=()

cluster_tls=()
if [[ ${CLUSTER_TLS:-} == 1 ]]; then
    command -v openssl >/dev/null || { echo "cluster.sh: openssl not found" >&2; exit 1; }
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -keyout "$work/ca.key" -out "$work/ca.pem" -subj "/CN=bench CA" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$work/node.key" -out "$work/node.csr" -subj "/CN=bench node" 2>/dev/null
    printf 'subjectAltName = IP:127.0.0.1\nextendedKeyUsage = serverAuth, clientAuth\n' \
        >"$work/node.ext"
    openssl x509 -req -in "$work/node.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
        -CAcreateserial -days 2 -extfile "$work/node.ext" -out "$work/node.pem" 2>/dev/null
    cluster_tls=(--cluster-tls-cert "$work/node.pem" --cluster-tls-key "$work/node.key"
        --cluster-tls-ca "$work/ca.pem")
fi

stop_all() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
cleanup() {
    stop_all
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=benches/build.sh
source "benches/build.sh" cluster.sh

# Sets $port to a port nobody listens on, and moves past it.
next_port() {
    while (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do PORT=$((PORT + 1)); done
    port=$PORT
    PORT=$((PORT + 1))
}

wait_port() { # port pid
    for _ in $(seq 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        kill -0 "$2" 2>/dev/null || break
        sleep 0.05
    done
    echo "cluster.sh: nothing listens on $1; logs:" >&2
    tail -n 20 "$work"/*.log "$work"/*/*.log >&2 2>/dev/null || true
    exit 1
}

# Starts server $1; sets $addr to the address to load.
start() {
    local port
    case $1 in
        beanstalkd-b | beanstalkd-f0)
            next_port
            local extra=()
            if [[ $1 == beanstalkd-f0 ]]; then extra=(-f 0); fi
            "$BEANSTALKD" -l 127.0.0.1 -p "$port" -b "$(mktemp -d -p "$work")" "${extra[@]}" \
                2>>"$work/$1.log" &
            pids+=($!)
            wait_port "$port" "$!"
            addr=127.0.0.1:$port
            ;;
        larder)
            next_port
            LARDER_LOG=warn "$larder" serve --listen "127.0.0.1:$port" --max-jobs 0 --max-bytes 0 \
                --data-dir "$(mktemp -d -p "$work")" 2>>"$work/larder.log" &
            pids+=($!)
            wait_port "$port" "$!"
            addr=127.0.0.1:$port
            ;;
        cluster-leader | cluster-follower)
            start_cluster
            if [[ $1 == cluster-leader ]]; then addr=127.0.0.1:${client[$leader]}; else
                addr=127.0.0.1:${client[$((leader % 3 + 1))]}
            fi
            ;;
    esac
}

# Starts three nodes; sets client[i], cpid[i], clog[i] and $leader.
start_cluster() {
    local i j base
    base=$(mktemp -d -p "$work")
    for i in 1 2 3; do
        next_port
        client[$i]=$port
        next_port
        cport[$i]=$port
    done
    for i in 1 2 3; do
        local peers=()
        for j in 1 2 3; do
            if [[ $j != "$i" ]]; then peers+=(--peer "$j=127.0.0.1:${cport[$j]}"); fi
        done
        clog[$i]=$base/n$i.log
        LARDER_LOG=info "$larder" serve --listen "127.0.0.1:${client[$i]}" --max-jobs 0 \
            --max-bytes 0 --data-dir "$base/n$i" --node-id "$i" \
            --cluster-listen "127.0.0.1:${cport[$i]}" "${peers[@]}" \
            ${SEGMENT:+--wal-segment-size "$SEGMENT"} "${cluster_tls[@]}" 2>>"${clog[$i]}" &
        cpid[$i]=$!
        pids+=($!)
    done
    for i in 1 2 3; do wait_port "${client[$i]}" "${cpid[$i]}"; done
    find_leader
}

# Sets $leader to the running node that opened as leader last, waiting for one.
find_leader() {
    local i t best
    for _ in $(seq 400); do
        leader="" best=-1
        for i in 1 2 3; do
            kill -0 "${cpid[$i]}" 2>/dev/null || continue
            t=$({ grep -E 'leader: serving commands|lost leadership' "${clog[$i]}" || true; } |
                tail -n 1 | sed -n 's/.*leader: serving commands term=\([0-9]*\).*/\1/p')
            if [[ -n $t && $t -gt $best ]]; then best=$t; leader=$i; fi
        done
        [[ -n $leader ]] && return 0
        sleep 0.05
    done
    echo "cluster.sh: no leader" >&2
    exit 1
}

workloads=(
    "put 16x16|--workload put --connections 16 --depth 16"
    "4p(d4)+32w|--workload mixed --producers 4 --producer-depth 4 --consumers 32 --depth 1 --backlog $BACKLOG"
)
servers=(beanstalkd-b beanstalkd-f0 larder cluster-leader cluster-follower)

for i in "${!workloads[@]}"; do
    name=${workloads[$i]%%|*}
    read -r -a flags <<<"${workloads[$i]#*|}"
    for server in "${servers[@]}"; do
        start "$server"
        echo "  $name on $server ($addr)" >&2
        if ! "$loadgen" --addr "$addr" "${flags[@]}" --duration "$DURATION" --warmup "$WARMUP" \
            --json >"$work/$i.$server.json" 2>"$work/$i.$server.err"; then
            echo "cluster.sh: loadgen failed for $name on $server:" >&2
            cat "$work/$i.$server.err" >&2
            rm -f "$work/$i.$server.json"
        fi
        if [[ $server == cluster-* && ${#cluster_tls[@]} -gt 0 ]]; then
            tls_nodes=$(cat "${clog[@]}" | grep -c "mutual TLS among members" || true)
            echo "$name on $server: $tls_nodes of 3 nodes with mutual TLS" >>"$work/snapshots.txt"
        fi
        if [[ $server == cluster-* ]]; then
            built=$(cat "${clog[@]}" | grep -c "snapshot built" || true)
            installed=$(cat "${clog[@]}" | grep -c "snapshot installed" || true)
            echo "$name on $server: $built snapshots built, $installed installed (3 nodes)" \
                >>"$work/snapshots.txt"
        fi
        stop_all
    done
done

field() { if [[ -s $1 ]]; then jq -r "$2 // \"-\"" "$1"; else echo -; fi; }

echo
printf '%-22s %-17s %10s %8s %8s %8s  %s\n' workload server "ops/s" "/bs-b" "/bs-f0" "/larder" \
    "p50/p99 µs"
for i in "${!workloads[@]}"; do
    name=${workloads[$i]%%|*}
    case $name in put*) rate=put_per_sec kind=put ;; *) rate=consumed_per_sec kind=consume ;; esac
    b=$(field "$work/$i.beanstalkd-b.json" ".$rate")
    f=$(field "$work/$i.beanstalkd-f0.json" ".$rate")
    l=$(field "$work/$i.larder.json" ".$rate")
    for server in "${servers[@]}"; do
        r=$(field "$work/$i.$server.json" ".$rate")
        lat=$(field "$work/$i.$server.json" ".latency_us.$kind | \"\(.p50)/\(.p99)\"")
        awk -v n="$name" -v s="$server" -v r="$r" -v b="$b" -v f="$f" -v l="$l" -v lat="$lat" \
            'function ratio(x, y) { return (x > 0 && y > 0) ? sprintf("%.2f", x / y) : "-" }
             BEGIN { printf "%-22s %-17s %10.0f %8s %8s %8s  %s\n", n, s, r, ratio(r, b),
                     ratio(r, f), ratio(r, l), lat }'
    done
done

echo
cat "$work/snapshots.txt" 2>/dev/null || true
echo
echo "failover: SIGKILL the leader while a client puts through the others; time to the first"
echo "INSERTED from the new leader (${FAILOVERS} repetitions)"
times=()
for n in $(seq "$FAILOVERS"); do
    start_cluster
    survivors=()
    for i in 1 2 3; do
        if [[ $i != "$leader" ]]; then survivors+=("${client[$i]}"); fi
    done
    ms=$(python3 - "${cpid[$leader]}" "${survivors[@]}" <<'EOF'
import os, signal, socket, sys, time
victim, ports = int(sys.argv[1]), [int(p) for p in sys.argv[2:]]
def put(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.settimeout(2)
            s.sendall(b"put 0 0 60 4\r\nping\r\n")
            return s.recv(64).startswith(b"INSERTED")
    except OSError:
        return False
assert any(put(p) for p in ports), "no put before the kill"
os.kill(victim, signal.SIGKILL)
t0 = time.monotonic()
while True:
    for p in ports:
        if put(p):
            print(round((time.monotonic() - t0) * 1000))
            sys.exit(0)
    if time.monotonic() - t0 > 30:
        print("timeout")
        sys.exit(0)
    time.sleep(0.01)
EOF
)
    times+=("$ms")
    echo "  round $n: ${ms} ms" >&2
    stop_all
done
printf '%s\n' "${times[@]}" | sort -n | awk '{ v[NR] = $1 } END {
    printf "failover to first confirmation: median %s ms, min %s ms, max %s ms (%d rounds)\n",
        v[int((NR + 1) / 2)], v[1], v[NR], NR }'
echo "${WARMUP} s warm-up + ${DURATION} s per run; $(nproc) CPUs shared by every server process" \
    "and the load generator; 100-byte bodies."
