#!/bin/sh
# Stands in for a `beanstalkd` binary: runs larder with the beanstalkd flags it was given
# (-l ADDR, -p PORT, -z BYTES, -l unix:PATH) and a fresh data directory, so client libraries'
# own test suites, which start "beanstalkd" themselves, run against larder unchanged.
# LARDER_BIN names the larder binary (default: larder on the PATH).
data_dir=$(mktemp -d "${TMPDIR:-/tmp}/larder-shim.XXXXXX") || exit 1
exec "${LARDER_BIN:-larder}" serve --data-dir "$data_dir" "$@"
