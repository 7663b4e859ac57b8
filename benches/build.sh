# Sourced by the benchmark scripts (compare.sh, tls.sh, cluster.sh): builds larder and the
# load generator in release mode and sets $larder and $loadgen to their paths. Honours
# CARGO_TARGET_DIR. $1 names the calling script in errors.

# Prints the path of the executable cargo built for target $1 of kind $2, reading cargo's
# JSON messages on standard input.
executable() {
    jq -r --arg name "$1" --arg kind "$2" \
        'select(.reason == "compiler-artifact" and .target.name == $name
                and (.target.kind | index($kind)) and .executable != null) | .executable' |
        tail -n 1
}

echo "building larder and loadgen in release mode..." >&2
larder=$(cargo build --release --bin larder --message-format=json | executable larder bin)
loadgen=$(cargo bench --bench loadgen --no-run --message-format=json | executable loadgen bench)
[[ -x $larder && -x $loadgen ]] || { echo "$1: build produced no binaries" >&2; exit 1; }
