#!/usr/bin/env bash
# The stress command on fixed seeds (each phase's fault plan comes from the
# seed), once more with reuse off (so that the emulator's poisoned
# quarantine of freed pool sees every block), then once with a leak on
# purpose, which must fail: the check that the run's leak detection can
# fail at all. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --example stress
stress=target/release/examples/stress
for seed in 1 2 3; do
    echo "--- seed $seed"
    # The command's own watchdog covers the workers; this bounds the rest.
    timeout 600 "$stress" --ops 5000 --seed "$seed"
done
echo "--- seed 4, nothing set aside for reuse: every block through the freed-pool quarantine"
timeout 600 "$stress" --ops 5000 --seed 4 --no-reuse
echo "--- a leak on purpose must fail the run"
set +e
output=$(timeout 300 "$stress" --ops 300 --seed 1 --leak-on-purpose 2>&1)
status=$?
set -e
if [ "$status" -ne 1 ] || ! grep -qx "leaks: 1" <<<"$output"; then
    echo "$output"
    echo "stress-check: the leak on purpose was not reported (exit $status)"
    exit 1
fi
echo "stress-check: the leak on purpose failed the run, as it must"
