#!/usr/bin/env bash
# Runs the test suite that ships with the fivebeans client library (npm) against larder.
# The suite talks to 127.0.0.1:11300, so that port must be free. Usage:
#   tests/clients/fivebeans.sh path/to/larder
# One test ("emits the error event on failure") is skipped: it checks the shape of a Node.js
# connection error and fails against beanstalkd 1.12 too on current Node versions.
set -euo pipefail
larder=$(realpath "${1:?usage: fivebeans.sh path/to/larder}")
work=$(mktemp -d "${TMPDIR:-/tmp}/fivebeans.XXXXXX")
server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

if (exec 3<>/dev/tcp/127.0.0.1/11300) 2>/dev/null; then
    echo "fivebeans.sh: something already listens on 127.0.0.1:11300" >&2
    exit 1
fi

cd "$work"
npm pack fivebeans@1.5.0 --silent >/dev/null
tar xzf fivebeans-1.5.0.tgz
cd package
npm install --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null

LARDER_LOG=warn "$larder" serve --listen 127.0.0.1:11300 --data-dir "$work/data" &
server_pid=$!
for _ in $(seq 200); do
    (exec 3<>/dev/tcp/127.0.0.1/11300) 2>/dev/null && break
    sleep 0.05
done

./node_modules/.bin/mocha --reporter dot --grep "emits the error event on failure" --invert test/
