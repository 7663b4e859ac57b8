#!/usr/bin/env bash
# Runs the same loads against beanstalkd and larder and prints a comparison table.
#
# Builds larder and the loadgen bench in release mode, then for each workload starts a fresh
# beanstalkd (in memory), runs loadgen against it, stops it, and does the same with a fresh
# larder (empty data directory). Each server only ever runs alone, and every run starts
# from an empty server.
#
# Usage: benches/compare.sh            in-memory beanstalkd against larder (fsync always)
#        MODE=durable benches/compare.sh
#                                beanstalkd -b DIR (its default: fsync at most every 50 ms,
#                                replies before syncing) and beanstalkd -b DIR -f 0 (fsync per
#                                command) against larder --fsync always: the four loads of
#                                issue 13, mixed ones counting jobs done with a bounded backlog
# Environment:
#   DURATION=8     measured seconds per run
#   WARMUP=1       unmeasured seconds before each run
#   REPEAT=1       rounds per workload, alternating the servers; each server's median round
#                  (by operations per second) is reported
#   BACKLOG=1000   durable mode: most jobs put but not yet deleted in mixed runs
#   PORT=11500     first port to listen on (each server start takes the next one)
#   BEANSTALKD=beanstalkd   the beanstalkd binary
#   OUT=file.jsonl also keep loadgen's JSON results, one line per run
# Needs: cargo, jq, beanstalkd. Honours CARGO_TARGET_DIR.

set -euo pipefail

DURATION=${DURATION:-8}
WARMUP=${WARMUP:-1}
PORT=${PORT:-11500}
BACKLOG=${BACKLOG:-1000}
REPEAT=${REPEAT:-1}
BEANSTALKD=${BEANSTALKD:-beanstalkd}

for tool in cargo jq "$BEANSTALKD"; do
    command -v "$tool" >/dev/null || { echo "compare.sh: $tool not found" >&2; exit 1; }
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
source "benches/build.sh" compare.sh

# Starts server $1 on the next free port and waits until it accepts connections.
start_server() {
    while (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do PORT=$((PORT + 1)); done
    addr=127.0.0.1:$PORT
    case $1 in
        beanstalkd) "$BEANSTALKD" -l 127.0.0.1 -p "$PORT" 2>>"$work/$1.log" & ;;
        beanstalkd-b)
            "$BEANSTALKD" -l 127.0.0.1 -p "$PORT" -b "$(mktemp -d -p "$work")" \
                2>>"$work/$1.log" &
            ;;
        beanstalkd-f0)
            "$BEANSTALKD" -l 127.0.0.1 -p "$PORT" -b "$(mktemp -d -p "$work")" -f 0 \
                2>>"$work/$1.log" &
            ;;
        larder)
            # No job-count or byte limits: beanstalkd has none, and long put runs pass
            # the default --max-jobs.
            LARDER_LOG=warn "$larder" serve --listen "$addr" --max-jobs 0 --max-bytes 0 \
                --data-dir "$(mktemp -d -p "$work")" 2>>"$work/larder.log" &
            ;;
    esac
    server_pid=$!
    PORT=$((PORT + 1))
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/${addr%:*}/${addr#*:}") 2>/dev/null; then return 0; fi
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.05
    done
    echo "compare.sh: $1 did not start on $addr; log:" >&2
    cat "$work/$1.log" >&2
    exit 1
}

# name | loadgen arguments
if [[ ${MODE:-memory} == durable ]]; then
    # The loads of issue 13. Mixed runs bound the jobs put but not yet deleted (--backlog),
    # so they count jobs done at the rate the workers keep up with. A worker reserves one
    # job, waits for it, then deletes it (depth 1), as worker libraries do.
    workloads=(
        "put 1x1|--workload put --connections 1 --depth 1"
        "put 16x16|--workload put --connections 16 --depth 16"
        "4p(d4)+32w|--workload mixed --producers 4 --producer-depth 4 --consumers 32 --depth 1 --backlog $BACKLOG"
        "4p+4w d1|--workload mixed --producers 4 --consumers 4 --depth 1 --backlog $BACKLOG"
    )
    servers=(beanstalkd-b beanstalkd-f0 larder)
else
    workloads=(
        "put 1x1|--workload put --connections 1 --depth 1"
        "put 16x16|--workload put --connections 16 --depth 16"
        "put 16x16 1KiB|--workload put --connections 16 --depth 16 --body-size 1024"
        "reserve-delete 4x1|--workload reserve-delete --connections 4 --depth 1"
        "mixed 4p+4c d1|--workload mixed --producers 4 --consumers 4 --depth 1"
        "mixed 4p+4c d16|--workload mixed --producers 4 --consumers 4 --depth 16"
    )
    servers=(beanstalkd larder)
fi

runs=$(( ${#workloads[@]} * ${#servers[@]} * REPEAT ))
echo "running $runs runs of ${WARMUP}+${DURATION} s each..." >&2
for i in "${!workloads[@]}"; do
    name=${workloads[$i]%%|*}
    read -r -a flags <<<"${workloads[$i]#*|}"
    # Rounds alternate the servers, so a disturbance on the shared machine hits each alike.
    for r in $(seq "$REPEAT"); do
        for server in "${servers[@]}"; do
            run=$work/$i.$server.$r
            start_server "$server"
            echo "  $name on $server ($addr), round $r" >&2
            if ! "$loadgen" --addr "$addr" "${flags[@]}" --duration "$DURATION" \
                --warmup "$WARMUP" --json >"$run.json" 2>"$run.err"; then
                echo "compare.sh: loadgen failed for $name on $server:" >&2
                cat "$run.err" >&2
                rm -f "$run.json"
            fi
            stop_server
            if [[ -n ${OUT:-} && -s $run.json ]]; then
                jq -c --arg server "$server" '. + {server: $server}' "$run.json" >>"$OUT"
            fi
        done
    done
    # The run reported for each server is its median round by operations per second.
    for server in "${servers[@]}"; do
        median=$(for f in "$work/$i.$server".*.json; do
            [[ -s $f ]] && echo "$(jq -r .ops_per_sec "$f") $f"
        done | sort -n | awk '{ line[NR] = $2 } END { if (NR) print line[int((NR + 1) / 2)] }')
        if [[ -n $median ]]; then cp "$median" "$work/$i.$server.json"; fi
    done
done

# Prints field $2 (a jq path) of run file $1, or "-" if the run failed.
field() {
    if [[ -s $1 ]]; then jq -r "$2 // \"-\"" "$1"; else echo -; fi
}
# Prints "p99/p99.9" for latency kind $2 of run file $1.
latency() {
    if [[ -s $1 ]]; then
        jq -r --arg k "$2" '.latency_us[$k] // {} | "\(.p99 // "-")/\(.p999 // "-")"' "$1"
    else
        echo -
    fi
}

others=("${servers[@]:0:${#servers[@]}-1}")
echo
printf '%-28s' workload
for server in "${servers[@]}"; do printf ' %14s' "$server/s"; done
for server in "${others[@]}"; do printf ' %8s' "l/${server#beanstalkd}"; done
printf '   p99/p99.9 µs:'
for server in "${servers[@]}"; do printf ' %s' "$server"; done
printf '\n'
table_row() { # label, run index, rate field, latency kind
    local rates=() r lr sep=' '
    printf '%-28s' "$1"
    for server in "${servers[@]}"; do
        r=$(field "$work/$2.$server.json" ".$3 | round")
        rates+=("$r")
        printf ' %14s' "$r"
    done
    lr=${rates[-1]}
    for j in "${!others[@]}"; do
        awk -v b="${rates[$j]}" -v l="$lr" \
            'BEGIN { if (b > 0 && l != "-") printf " %8.2f", l / b; else printf " %8s", "-" }'
    done
    printf '   '
    for server in "${servers[@]}"; do
        printf '%s%s' "$sep" "$(latency "$work/$2.$server.json" "$4")"
        sep=' | '
    done
    printf '\n'
}
for i in "${!workloads[@]}"; do
    name=${workloads[$i]%%|*}
    case $name in
        put*) table_row "$name" "$i" put_per_sec put ;;
        reserve-delete*) table_row "$name (pairs)" "$i" ops_per_sec consume ;;
        *)
            table_row "$name put" "$i" put_per_sec put
            table_row "$name done" "$i" consumed_per_sec consume
            ;;
    esac
done

echo
echo "ops/s: puts, or jobs done (reserve+delete pairs). Latency: per command, from the moment its"
echo "pipelined batch was queued to its reply; 'done' rows merge reserve and delete."
for i in "${!workloads[@]}"; do
    name=${workloads[$i]%%|*}
    [[ $name == put* || $name == reserve-delete* ]] && continue
    backlog=""
    for server in "${servers[@]}"; do
        backlog+=" $server $(field "$work/$i.$server.json" .backlog)"
    done
    echo "backlog after '$name' (jobs):$backlog"
done
for i in "${!workloads[@]}"; do
    for server in "${servers[@]}"; do
        if [[ $(field "$work/$i.$server.json" .ran_dry) == true ]]; then
            echo "warning: '${workloads[$i]%%|*}' on $server emptied its prefilled tube early;" \
                "its rate covers the time until then (add --prefill N to its flags)"
        fi
    done
done
echo "${WARMUP} s warm-up + ${DURATION} s per run, median of $REPEAT; $(nproc) CPUs, shared by the load generator" \
    "and the server; 100-byte bodies unless noted."
