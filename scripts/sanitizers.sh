#!/usr/bin/env bash
# Sanitizer runs on the nightly toolchain:
#   1. AddressSanitizer: the whole test suite and the stress command, with
#      the emulator's own memory instrumented (use after free, overflows,
#      double frees in the emulator, the library and the tests alike);
#   2. Miri: the library's unit tests and the emulated kernel's tests that
#      need no host sockets (Miri cannot call socket(2)): the I/O manager,
#      events, pool, MDLs, timers and DPCs, run under Miri's data-race and
#      aliasing checks.
# Leak detection is off in both: the emulator keeps some blocks on purpose
# (each machine's driver image, IRPs a Wine-like stub never completes,
# closed sockets' headers), and the emulated kernel's own accounting
# (`assert_no_leaks`, a machine dropped with leaks) is what the tests check.
set -euo pipefail
cd "$(dirname "$0")/.."
host=x86_64-unknown-linux-gnu

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
rustup component add --toolchain nightly miri rust-src >/dev/null

echo "--- AddressSanitizer: cargo test"
export ASAN_OPTIONS=detect_leaks=0
asan=(env RUSTFLAGS="-Zsanitizer=address" cargo +nightly)
"${asan[@]}" test --target "$host" --target-dir target/asan
# The run above proves nothing unless the code was instrumented.
# The binary this run built (not a stale one from an older toolchain).
binary=$("${asan[@]}" test --target "$host" --target-dir target/asan --test verifier --no-run \
    --message-format=json | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
hooks=$(nm "$binary" | grep -c __asan_report_load || true)
if [ "$hooks" -eq 0 ]; then
    echo "sanitizers: $binary is not instrumented by AddressSanitizer"
    exit 1
fi
echo "instrumented: $hooks AddressSanitizer load hooks in $binary"

echo "--- AddressSanitizer: the stress command"
"${asan[@]}" run --target "$host" --target-dir target/asan --example stress -- --ops 3000 --seed 1

echo "--- Miri: unit tests and the emulated kernel without host sockets"
MIRIFLAGS="-Zmiri-disable-isolation -Zmiri-ignore-leaks" \
    cargo +nightly miri test --target-dir target/miri --lib --test io_manager --test kernel_objects --test timers
echo "sanitizers: all passed"
