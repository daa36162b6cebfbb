#!/usr/bin/env bash
# Instructions per ping-pong round trip of the library and of the two
# hand-written WSK ways of examples/pingpong.rs (std::net is left out: its
# work is in the host kernel, which callgrind does not count),
# counted by callgrind (all threads). Counts do not move with the machine's
# load, unlike time. Each way runs twice, with N and 2N round trips; the
# difference divided by N leaves out setup and teardown. Every way runs with
# `--inline`: it waits after its send until the echo server has written the
# reply, so every receive completes inline and the path taken does not
# depend on how the threads interleave (which otherwise moves the count by
# a few thousand). The median of three measurements is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
}
n=${1:-2000}
cargo build --release --example pingpong
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
count() {
    timeout 600 valgrind --tool=callgrind --callgrind-out-file="$out/cg.out" \
        target/release/examples/pingpong --only "$1" --round-trips "$2" --rounds 1 --inline \
        >/dev/null 2>"$out/log"
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$out/log" | tail -1
}
declare -A per
for way in wsk raw-fresh raw-reuse; do
    samples=()
    for _ in 1 2 3; do
        small=$(count "$way" "$n")
        large=$(count "$way" $((2 * n)))
        samples+=($(((large - small) / n)))
    done
    per[$way]=$(printf '%s\n' "${samples[@]}" | sort -n | sed -n 2p)
    echo "instructions per round trip $way: ${per[$way]} instructions (samples: ${samples[*]})"
done
for way in raw-fresh raw-reuse; do
    awk -v a="${per[wsk]}" -v b="${per[$way]}" -v w="$way" \
        'BEGIN { printf "ratio instructions wsk/%s: %.2f\n", w, a / b }'
done
