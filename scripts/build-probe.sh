#!/usr/bin/env bash
# Builds the user-mode probe (examples/probe) for Windows and copies it to a
# directory:
#
#   bash scripts/build-probe.sh [DIR]     # DIR defaults to target/probe
#
#   DIR/wsk-probe.exe          the probe (x86_64-pc-windows-gnu)
#   DIR/bcryptprimitives.dll   for Wine 8 only: a shim exporting ProcessPrng,
#                              which Rust's std imports and Wine 8 lacks
#                              (examples/probe/shim/bcryptprimitives.c).
#                              Leave it out on Windows, which has the real
#                              DLL.
#
# Installs the Rust target when missing; needs x86_64-w64-mingw32-gcc
# (Debian: gcc-mingw-w64-x86-64), which .cargo/config.toml names as the
# linker. Run it under Wine with: wine DIR/wsk-probe.exe --help
set -euo pipefail

readonly TARGET=x86_64-pc-windows-gnu
readonly CC=x86_64-w64-mingw32-gcc

# DIR relative to where the script is run from; the default inside the repo.
if [ $# -gt 0 ]; then
    mkdir -p "$1"
    OUT=$(cd "$1" && pwd)
fi
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/target/probe}
mkdir -p "$OUT"

if ! command -v "$CC" >/dev/null; then
    echo "build-probe: $CC is missing (Debian: apt-get install gcc-mingw-w64-x86-64)" >&2
    exit 1
fi
if ! rustup target list --installed | grep -qx "$TARGET"; then
    rustup target add "$TARGET"
fi

# From the repository root, so that .cargo/config.toml (the linker) applies.
cargo build --locked --release --target "$TARGET" --manifest-path examples/probe/Cargo.toml
cp examples/probe/target/"$TARGET"/release/wsk-probe.exe "$OUT/"

"$CC" -Wall -Wextra -Werror -shared -O2 -s -o "$OUT/bcryptprimitives.dll" \
    examples/probe/shim/bcryptprimitives.c examples/probe/shim/bcryptprimitives.def -ladvapi32

echo "build-probe: $OUT/wsk-probe.exe and $OUT/bcryptprimitives.dll (the latter for Wine only)"
