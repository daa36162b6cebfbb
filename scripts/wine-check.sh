#!/usr/bin/env bash
# Runs the sample driver (examples/wdm-driver) under Wine 8, an independent
# WSK implementation, against a real loopback server: the one check that can
# catch an ABI mistake the emulator shares with the library (an offset, a
# calling convention, an import, a completion rule).
#
#   1. installs what it needs when missing (Debian wine, wine64, the mingw
#      binutils and compiler, the Rust target);
#   2. builds the driver with plain cargo and checks the image: PE32+,
#      native subsystem, imports only from ntoskrnl.exe and netio.sys, every
#      imported name on the Windows 10 1703 allowlist below and implemented
#      (not a stub) by Wine; the driver's own declarations against mingw's
#      wdm.h;
#   3. twice, each time from a fresh WINEPREFIX: starts a python3 echo server
#      on 127.0.0.1, installs, configures, starts and stops the driver, and
#      checks the log lines, what the server received and the clean unload;
#      then a configuration error (a malformed RemoteAddress): one clear
#      error line, a clean unload, no network traffic; then requests from
#      the probe: every connecting mode at once, a malformed line, an
#      accept (the driver listens; a python3 client connects), a host name
#      (localhost), cancels, and requests in flight at sc stop.
#
# Every wait is bounded; the wineservers and the echo server are stopped on
# exit. Set WINE_CHECK_KEEP=1 to keep the work directory (prefixes, logs).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

readonly SERVICE=wsk_sample
readonly KEY="HKLM\\System\\CurrentControlSet\\Services\\$SERVICE\\Parameters"
readonly RUNS=2
readonly TARGET=x86_64-pc-windows-msvc
readonly MANIFEST=examples/wdm-driver/Cargo.toml
readonly BUILT=examples/wdm-driver/target/$TARGET/release/wsk_wdm_driver.dll
readonly WINE_LIB=/usr/lib/x86_64-linux-gnu/wine/x86_64-windows
readonly TIMEOUT_MS=5000
# The Payload registry value, with the escapes the driver decodes...
readonly PAYLOAD_TEXT='hello from wine\x21 \\ \x00\x7f end\r\n'
# ...the bytes the server must receive...
readonly PAYLOAD_PRINTF='hello from wine! \\ \000\177 end\r\n'
# ...and the reply as the result line shows it.
readonly REPLY_SHOWN='hello from wine! \\ \x00\x7F end\r\n'

# Functions and data present in Windows 10 1703 (build 15063), the oldest
# Windows the library supports. Every import of the driver must be here.
readonly ALLOW_NTOSKRNL="
DbgPrint ExAllocatePoolWithTag ExFreePoolWithTag IoAllocateIrp IoAllocateMdl
IoAcquireCancelSpinLock IoAllocateWorkItem IoCancelIrp IoCreateDevice IoCreateSymbolicLink
IoDeleteDevice IoDeleteSymbolicLink IoFreeIrp IoFreeMdl IoFreeWorkItem IoQueueWorkItem
IoReleaseCancelSpinLock IoReuseIrp IofCompleteRequest
IoSetCompletionRoutineEx KeAcquireSpinLockRaiseToDpc KeBugCheckEx KeCancelTimer KeClearEvent
KeFlushQueuedDpcs KeInitializeDpc KeInitializeEvent KeInitializeTimer KeReadStateEvent KeSetEvent
KeReleaseSpinLock KeSetTimer KeWaitForSingleObject
MmBuildMdlForNonPagedPool MmGetSystemRoutineAddress ObReferenceObjectByHandle
ObfDereferenceObject ObfReferenceObject PsCreateSystemThread PsTerminateSystemThread PsThreadType RtlGetVersion
ZwClose ZwOpenKey ZwQueryValueKey __chkstk memcmp memcpy memmove memset
"
# Imported, but never called by a driver run under Wine: Wine 8 exports
# them only as stubs. IoSetCompletionRoutineEx is used only by a
# registration made with a device object, which the Wine runs do not make.
readonly UNCALLED_UNDER_WINE="IoSetCompletionRoutineEx"
readonly ALLOW_NETIO="
WskCaptureProviderNPI WskDeregister WskRegister WskReleaseProviderNPI
"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/wine-check.XXXXXX")
PREFIXES=()
SERVER_PIDS=()
CURRENT_LOG=

step() {
    echo
    echo "=== $1"
}

fail() {
    echo "wine-check: FAIL: $*" >&2
    exit 1
}

# Stops every process of one prefix: politely with wineserver -k, then, for
# anything left, by the process ids whose environment names this prefix
# (a unique temporary path: nothing else can match).
stop_prefix() {
    local prefix=$1 pid
    WINEPREFIX=$prefix timeout 30 wineserver -k >/dev/null 2>&1 || true
    for _ in $(seq 50); do
        pids_of_prefix "$prefix" | grep -q . || return 0
        sleep 0.2
    done
    for pid in $(pids_of_prefix "$prefix"); do
        kill -9 "$pid" 2>/dev/null || true
    done
}

pids_of_prefix() {
    local environ
    for environ in /proc/[0-9]*/environ; do
        if grep -qzxF "WINEPREFIX=$1" "$environ" 2>/dev/null; then
            environ=${environ#/proc/}
            echo "${environ%/environ}"
        fi
    done
}

stop_server() {
    local pid
    for pid in "${SERVER_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    SERVER_PIDS=()
}

cleanup() {
    local status=$?
    set +e
    stop_server
    local prefix
    for prefix in "${PREFIXES[@]}"; do
        stop_prefix "$prefix"
    done
    if [ "$status" -ne 0 ] && [ -n "$CURRENT_LOG" ] && [ -f "$CURRENT_LOG" ]; then
        echo "--- last lines of $CURRENT_LOG" >&2
        tail -n 40 "$CURRENT_LOG" >&2
    fi
    if [ "${WINE_CHECK_KEEP:-0}" = 1 ]; then
        echo "wine-check: work directory kept: $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- setup
install_packages() {
    local missing=()
    command -v wine >/dev/null || missing+=(wine)
    if command -v dpkg >/dev/null; then
        dpkg -s wine64 >/dev/null 2>&1 || missing+=(wine64)
    fi
    command -v x86_64-w64-mingw32-objdump >/dev/null || missing+=(binutils-mingw-w64-x86-64)
    command -v x86_64-w64-mingw32-gcc >/dev/null || missing+=(gcc-mingw-w64-x86-64)
    [ -f /usr/share/mingw-w64/include/ddk/wdm.h ] || missing+=(mingw-w64-x86-64-dev)
    command -v python3 >/dev/null || missing+=(python3)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing: ${missing[*]}"
        timeout 600 apt-get update -qq
        DEBIAN_FRONTEND=noninteractive timeout 1200 apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    wine --version 2>/dev/null
}

install_rust_target() {
    if ! rustup target list --installed | grep -qx "$TARGET"; then
        rustup target add "$TARGET"
    fi
}

# ---------------------------------------------------------------- the image
check_image() {
    local dump=$WORK/objdump.txt
    x86_64-w64-mingw32-objdump -p "$SYS" >"$dump"
    python3 - "$dump" "$WINE_LIB" "$ALLOW_NTOSKRNL" "$ALLOW_NETIO" "$UNCALLED_UNDER_WINE" <<'PY'
import re, subprocess, sys

dump_path, wine_lib, allow_ntoskrnl, allow_netio, uncalled = sys.argv[1:]
uncalled = set(uncalled.split())
dump = open(dump_path).read()
allow = {"ntoskrnl.exe": set(allow_ntoskrnl.split()), "netio.sys": set(allow_netio.split())}
errors = []

if not re.search(r"^Magic\s+020b\s+\(PE32\+\)", dump, re.M):
    errors.append("not PE32+")
if not re.search(r"^Subsystem\s+00000001\s+\(NT native\)", dump, re.M):
    errors.append("subsystem is not native")
for flag in ("DYNAMIC_BASE", "NX_COMPAT"):
    if not re.search(rf"^\s+{flag}$", dump, re.M):
        errors.append(f"DllCharacteristics lacks {flag}")

imports = {}
current = None
for line in dump.splitlines():
    m = re.match(r"^\s*DLL Name: (\S+)", line)
    if m:
        current = m.group(1).lower()
        imports.setdefault(current, [])
        continue
    m = re.match(r"^\s+[0-9a-f]+\s+\d+\s+(\S+)$", line)
    if current and m:
        imports[current].append(m.group(1))
    elif current and not line.strip():
        current = None

if set(imports) != set(allow):
    errors.append(f"imports from {sorted(imports)}, expected exactly {sorted(allow)}")

def wine_exports(dll):
    out = subprocess.run(["x86_64-w64-mingw32-objdump", "-p", f"{wine_lib}/{dll}"],
                         capture_output=True, text=True, check=True).stdout
    exported = set(re.findall(r"^\s+\[\s*\d+\]\s+(\S+)$", out, re.M))
    strings = open(f"{wine_lib}/{dll}", "rb").read()
    stubs = set(n.decode() for n in re.findall(rb"__wine_stub_([A-Za-z0-9_]+)\x00", strings))
    return exported, stubs

for dll, names in sorted(imports.items()):
    if dll not in allow:
        continue
    exported, stubs = wine_exports(dll)
    for name in names:
        if name not in allow[dll]:
            errors.append(f"{dll}!{name} is not on the Windows 10 1703 allowlist")
        if name not in exported:
            errors.append(f"{dll}!{name} is not exported by Wine's {dll}")
        elif name in stubs and name not in uncalled:
            errors.append(f"{dll}!{name} is a stub in Wine's {dll}")
        elif name in stubs:
            print(f"{dll}!{name}: a stub in Wine, imported but not called under Wine")
    print(f"{dll}: {len(names)} imports: {' '.join(sorted(names))}")

if errors:
    for error in errors:
        print("image:", error, file=sys.stderr)
    sys.exit(1)
print("image: PE32+, native subsystem, DYNAMIC_BASE, NX_COMPAT; imports on the allowlist and implemented by Wine")
PY
}

# The driver's own `wdm.h` declarations (compile-time asserts in
# src/ffi.rs, the constants there and in src/clock.rs) against mingw's
# header: every asserted size and offset and every named constant.
check_declarations() {
    local source=$WORK/declarations.c
    python3 - examples/wdm-driver/src/ffi.rs examples/wdm-driver/src/clock.rs >"$source" <<'PY'
import re, sys

ffi = open(sys.argv[1]).read()
clock = open(sys.argv[2]).read()
# Rust name -> C expression, for constants whose names differ.
renamed = {
    "KERNEL_MODE": "KernelMode",
    "EXECUTIVE": "Executive",
    "KEY_VALUE_PARTIAL_INFORMATION_CLASS": "KeyValuePartialInformation",
    "SHARED_INTERRUPT_TIME": "SharedInterruptTime",
}
print("#include <ddk/wdm.h>\n#include <stddef.h>")
count = 0
# Rust structs that are a member of a C union: the C member to measure.
members = {"DeviceIoControlParameters": ("IO_STACK_LOCATION", "Parameters.DeviceIoControl")}
for ty, size in re.findall(r"assert!\(size_of::<(\w+)>\(\) == (\d+)\);", ffi):
    if ty in members:
        continue  # an anonymous C struct: its fields' offsets are checked
    print(f"_Static_assert(sizeof({ty}) == {size}, \"sizeof({ty})\");")
    count += 1
for ty, field, value in re.findall(r"assert!\(offset_of!\((\w+), (\w+)\) == (\d+)\);", ffi):
    if ty in members:
        outer, member = members[ty]
        expression = f"offsetof({outer}, {member}.{field}) - offsetof({outer}, {member})"
    else:
        expression = f"offsetof({ty}, {field})"
    print(f"_Static_assert({expression} == {value}, \"{ty}.{field}\");")
    count += 1
for name, ty, value in re.findall(
        r"const (\w+): (\w+) = (0x[0-9A-Fa-f_]+|\d+)(?:_u32 as i32)?;", ffi + clock):
    c_name = renamed.get(name, name)
    number = int(value.replace("_", ""), 0)
    # 32-bit values compare as C's unsigned int, so NTSTATUS does not sign-extend.
    cast = "(unsigned long long)" if ty == "u64" else "(unsigned long long)(unsigned int)"
    print(f"_Static_assert({cast}({c_name}) == {number:#x}ULL, \"{c_name}\");")
    count += 1
if count < 20:
    sys.exit(f"only {count} declarations found: the patterns no longer match src/ffi.rs")
print(f"/* {count} */")
PY
    x86_64-w64-mingw32-gcc -fsyntax-only -std=c11 -Wno-pragma-pack "$source"
    echo "declarations: $(tail -n 1 "$source" | tr -dc '0-9') sizes, offsets and constants match mingw's ddk/wdm.h"
}

# ---------------------------------------------------------------- one run
# A loopback server: each connection's bytes go to conn-N.bin and (unless
# $2 is `silent`) back to the sender; a silent server never answers. It ends
# itself after 15 minutes whatever happens.
start_server() {
    local dir=$1 kind=${2:-echo}
    mkdir -p "$dir"
    timeout 900 python3 - "$dir" "$kind" <<'PY' &
import os, socket, sys, threading

out, silent = sys.argv[1], sys.argv[2] == "silent"
listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.bind(("127.0.0.1", 0))
listener.listen(16)
with open(os.path.join(out, "port.tmp"), "w") as f:
    f.write(str(listener.getsockname()[1]))
os.rename(os.path.join(out, "port.tmp"), os.path.join(out, "port"))

def serve(conn, n):
    with conn, open(os.path.join(out, f"conn-{n}.bin"), "wb") as record:
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                break
            if not data:
                break
            record.write(data)
            record.flush()
            if silent:
                continue
            try:
                conn.sendall(data)
            except OSError:
                break

n = 0
while True:
    conn, _ = listener.accept()
    n += 1
    threading.Thread(target=serve, args=(conn, n), daemon=True).start()
PY
    SERVER_PIDS+=($!)
    for _ in $(seq 100); do
        [ -f "$dir/port" ] && return 0
        sleep 0.1
    done
    fail "the echo server did not start"
}

# A wine command, bounded; its output goes to the session log (where the
# services it starts write DbgPrint too).
w() {
    timeout 120 wine "$@" >>"$CURRENT_LOG" 2>&1
}

log_lines() {
    grep -a -c '' "$CURRENT_LOG" || true
}

# Waits up to $2 seconds for a log line (after line $3) containing $1.
wait_for_line() {
    local text=$1 seconds=$2 from=$3
    for _ in $(seq $((seconds * 5))); do
        tail -n +"$((from + 1))" "$CURRENT_LOG" | grep -aqF -- "$text" && return 0
        sleep 0.2
    done
    fail "no log line with '$text' within ${seconds}s"
}

# Checks that the wsk-sample lines after line $1 are exactly the patterns
# given ({N}: a number, {WORD}: a word; everything else literal), in order,
# and that Wine reported no crash or unimplemented call.
expect_lines() {
    local from=$1
    shift
    python3 - "$CURRENT_LOG" "$from" "$@" <<'PY'
import re, sys

log, start, expected = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
with open(log, "rb") as f:
    text = f.read().decode("utf-8", "replace").splitlines()[start:]
problems = [l for l in text if re.search(r"Unhandled|unimplemented function|starting debugger", l)]
lines = [l[l.index("wsk-sample: "):] for l in text if "wsk-sample: " in l]

def pattern(line):
    parts = re.split(r"(\{N\}|\{WORD\})", line)
    return "".join({"{N}": r"[0-9]+", "{WORD}": r"[A-Za-z0-9_.+-]+"}.get(p, re.escape(p))
                   for p in parts)

ok = not problems and len(lines) == len(expected) and all(
    re.fullmatch(pattern(e), l) for e, l in zip(expected, lines))
if not ok:
    print("expected:", *expected, sep="\n  ", file=sys.stderr)
    print("got:", *lines, sep="\n  ", file=sys.stderr)
    for problem in problems:
        print("wine reported:", problem, file=sys.stderr)
    sys.exit(1)
for line in lines:
    print("  " + line)
PY
}

# sc stop, then the service must read STOPPED and DriverUnload must have
# logged `unloaded`.
stop_service() {
    local from=$1 state
    w sc stop "$SERVICE" || fail "sc stop $SERVICE failed"
    for _ in $(seq 150); do
        state=$(timeout 60 wine sc query "$SERVICE" 2>>"$CURRENT_LOG" || true)
        if grep -qE 'STATE +: +1 +STOPPED' <<<"$state"; then
            wait_for_line "wsk-sample: unloaded" 30 "$from"
            echo "  sc stop: STOPPED"
            return 0
        fi
        sleep 0.2
    done
    fail "$SERVICE is not STOPPED 30s after sc stop: $state"
}

# The device's lines: what DriverEntry says it serves with, and what
# DriverUnload ended ({N}: whatever requests were in flight).
readonly SERVING='wsk-sample: serving: \\.\WskSample completions=plain (Wine: IoSetCompletionRoutineEx is a stub)'
readonly STOPPED_SERVING='wsk-sample: stopped serving: requests aborted={N} unfinished=0; deregistration: cancelled_operations={N} closed_sockets={N} released_captures=0 cancelled_timers={N} unfinished_operations=0 quarantined_operations={N} left_registered=false'

run_once() {
    local run=$1
    local dir=$WORK/run$run
    mkdir -p "$dir"
    export WINEPREFIX=$dir/prefix
    PREFIXES+=("$WINEPREFIX")
    CURRENT_LOG=$dir/wine.log
    : >"$CURRENT_LOG"

    start_server "$dir/server"
    local port
    port=$(cat "$dir/server/port")
    echo "echo server: 127.0.0.1:$port"

    # A fresh prefix; the services it starts inherit WINEDEBUG and the log.
    timeout 300 wine wineboot -i >>"$CURRENT_LOG" 2>&1 || fail "wineboot -i failed"
    timeout 120 wineserver -w || fail "wineserver -w did not return"
    # Keep the session (services.exe, winedevice.exe) alive between the
    # commands below; stop_prefix ends it.
    timeout 30 wineserver -p >>"$CURRENT_LOG" 2>&1 || fail "wineserver -p failed"

    cp "$SYS" "$WINEPREFIX/drive_c/windows/system32/drivers/$SERVICE.sys"
    w sc create "$SERVICE" type= kernel start= demand \
        binPath= "C:\\windows\\system32\\drivers\\$SERVICE.sys" || fail "sc create failed"
    w reg add "$KEY" /v RemoteAddress /t REG_SZ /d "127.0.0.1:$port" /f || fail "reg add failed"
    w reg add "$KEY" /v Payload /t REG_SZ /d "$PAYLOAD_TEXT" /f || fail "reg add failed"
    w reg add "$KEY" /v Mode /t REG_SZ /d all /f || fail "reg add failed"
    w reg add "$KEY" /v TimeoutMs /t REG_DWORD /d "$TIMEOUT_MS" /f || fail "reg add failed"

    # All three modes against the echo server.
    local from
    from=$(log_lines)
    w sc start "$SERVICE" || fail "sc start $SERVICE failed"
    wait_for_line "wsk-sample: deregistered" 90 "$from"
    stop_service "$from"
    local n=$PAYLOAD_LEN
    expect_lines "$from" \
        "$SERVING" \
        "wsk-sample: loaded: remote=127.0.0.1:$port modes=3 payload_bytes=$n timeout_ms=$TIMEOUT_MS clock={WORD}" \
        "wsk-sample: socket-connect: error STATUS_NOT_IMPLEMENTED (0xC0000002) not supported by this provider" \
        "wsk-sample: connect: ok path=connect sent=$n received=$n reply=$REPLY_SHOWN elapsed_us={N}" \
        "wsk-sample: connect-ex: ok path=connect+send sent=$n received=$n reply=$REPLY_SHOWN elapsed_us={N}" \
        "wsk-sample: deregistered" \
        "$STOPPED_SERVING" \
        "wsk-sample: unloaded" || fail "the log lines do not match the contract"
    # connect and connect-ex connected; socket-connect never did.
    local received=("$dir"/server/conn-*.bin)
    [ ${#received[@]} -eq 2 ] && [ -f "${received[0]}" ] ||
        fail "the server saw ${#received[@]} connections, expected 2"
    local file
    for file in "${received[@]}"; do
        cmp -s "$file" "$WORK/payload.bin" || fail "$(basename "$file"): the server did not receive the payload"
    done
    echo "  server: received the $n-byte payload on each of 2 connections"

    # A configuration error: one clear line, a clean unload, no traffic.
    w reg add "$KEY" /v RemoteAddress /t REG_SZ /d "127.0.0.1:not-a-port" /f || fail "reg add failed"
    from=$(log_lines)
    w sc start "$SERVICE" || fail "sc start $SERVICE (configuration error) failed"
    wait_for_line "wsk-sample: configuration error" 30 "$from"
    stop_service "$from"
    expect_lines "$from" \
        "$SERVING" \
        'wsk-sample: configuration error: RemoteAddress "127.0.0.1:not-a-port" is not ip:port or [v6]:port with a non-zero port' \
        "$STOPPED_SERVING" \
        "wsk-sample: unloaded" || fail "the configuration error lines do not match"
    received=("$dir"/server/conn-*.bin)
    [ ${#received[@]} -eq 2 ] || fail "the misconfigured driver connected to the server"

    serve_requests "$dir" "$port"

    w sc delete "$SERVICE" || fail "sc delete failed"
    stop_prefix "$WINEPREFIX"
    stop_server
}

# Runs the probe (output to $1), which must exit with $2.
probe() {
    local out=$1 expected=$2 status=0
    shift 2
    timeout 180 wine "$PROBE" "$@" >"$out" 2>>"$CURRENT_LOG" || status=$?
    [ "$status" -eq "$expected" ] || {
        cat "$out" >&2
        fail "wsk-probe $* exited $status, expected $expected"
    }
}

# Requires exactly $2 lines of $1 matching the pattern $3 ({N} a number).
count_lines() {
    local out=$1 expected=$2 line=$3 found
    found=$(python3 - "$out" "$line" <<'PY'
import re, sys
out, line = sys.argv[1], sys.argv[2]
pattern = "".join({"{N}": r"[0-9]+"}.get(p, re.escape(p)) for p in re.split(r"(\{N\})", line))
print(sum(1 for l in open(out, encoding="utf-8", errors="replace").read().splitlines()
          if re.fullmatch(pattern, l)))
PY
)
    [ "$found" -eq "$expected" ] || {
        cat "$out" >&2
        fail "$(basename "$out"): $found line(s) '$line', expected $expected"
    }
}

# Counts the connections a server in $1 has seen.
connections() {
    local files=("$1"/conn-*.bin)
    [ -f "${files[0]}" ] && echo ${#files[@]} || echo 0
}

# The device: requests from the probe, four at once over every connecting
# mode; an accept; cancelled ones; and requests still in flight when the
# driver stops.
serve_requests() {
    local dir=$1 port=$2 n=$PAYLOAD_LEN
    start_server "$dir/silent" silent
    local silent
    silent=$(cat "$dir/silent/port")
    w reg delete "$KEY" /v RemoteAddress /f || fail "reg delete failed"
    local from
    from=$(log_lines)
    w sc start "$SERVICE" || fail "sc start $SERVICE (requests) failed"
    wait_for_line "wsk-sample: serving:" 30 "$from"

    # Every mode, four requests at once (socket-connect is a stub in Wine,
    # so the probe exits 1).
    local before
    before=$(connections "$dir/server")
    probe "$dir/all.out" 1 --remote "127.0.0.1:$port" --mode all --concurrency 4 \
        --send "$PAYLOAD_TEXT" --timeout-ms "$TIMEOUT_MS"
    count_lines "$dir/all.out" 4 "socket-connect: error STATUS_NOT_IMPLEMENTED (0xC0000002) not supported by this provider"
    count_lines "$dir/all.out" 4 "connect: ok path=connect sent=$n received=$n reply=$REPLY_SHOWN elapsed_us={N}"
    count_lines "$dir/all.out" 4 "connect-ex: ok path=connect+send sent=$n received=$n reply=$REPLY_SHOWN elapsed_us={N}"
    local after file
    after=$(connections "$dir/server")
    [ $((after - before)) -eq 8 ] || fail "the server saw $((after - before)) request connections, expected 8"
    for file in $(seq $((before + 1)) "$after"); do
        cmp -s "$dir/server/conn-$file.bin" "$WORK/payload.bin" ||
            fail "conn-$file.bin: the server did not receive the payload"
    done
    echo "  probe: 12 requests at once; 8 connected, and the server received every payload"

    # A malformed request: rejected at once with STATUS_INVALID_PARAMETER
    # (the reason is in the driver's log: no output comes back for an error
    # status), and no connection.
    before=$(connections "$dir/server")
    probe "$dir/reject.out" 1 --request "--remote 127.0.0.1:$port --mode all"
    count_lines "$dir/reject.out" 1 "request: rejected STATUS_INVALID_PARAMETER: (no reason came back with the error)"
    [ "$(connections "$dir/server")" -eq "$before" ] || fail "a rejected request connected"
    echo "  probe: a malformed request rejected with STATUS_INVALID_PARAMETER"

    # Accept: the driver listens (WskSocket with WSK_FLAG_LISTEN_SOCKET,
    # WskBind), accepts one peer (WskAccept), reads its first chunk and
    # sends back the request's payload; the peer is a python3 client here.
    local listen_port
    listen_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    timeout 180 wine "$PROBE" --request \
        "--mode accept --local 127.0.0.1:$listen_port --send pong --timeout-ms 30000" \
        >"$dir/accept.out" 2>>"$CURRENT_LOG" &
    local accept_pid=$!
    local answer
    answer=$(timeout 60 python3 - "$listen_port" <<'PY'
import socket, sys, time
deadline = time.monotonic() + 50
while True:
    try:
        peer = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.2)
peer.settimeout(30)
peer.sendall(b"ping from the script")
answer = b""
while True:
    try:
        data = peer.recv(4096)
    except ConnectionResetError:
        # The driver closed without a FIN (Wine 8 has no WskDisconnect):
        # what arrived before the reset is the answer.
        break
    if not data:
        break
    answer += data
print(answer.decode())
PY
) || fail "the accept request's peer could not connect or read"
    local accept_status=0
    wait "$accept_pid" || accept_status=$?
    [ "$accept_status" -eq 0 ] || {
        cat "$dir/accept.out" >&2
        fail "wsk-probe (accept) exited $accept_status, expected 0"
    }
    [ "$answer" = pong ] || fail "the accepted connection answered '$answer', expected 'pong'"
    count_lines "$dir/accept.out" 1 "accept: ok path=accept sent=4 received=20 reply=ping from the script elapsed_us={N}"
    echo "  probe: an accept request listened, accepted the script's connection and answered it"

    # A host name: the driver resolves localhost (WskGetAddressInfo, then
    # WskFreeAddressInfo: Wine's netio resolves with the host) and connects
    # to the first IPv4 address.
    before=$(connections "$dir/server")
    probe "$dir/name.out" 0 --request \
        "--remote localhost:$port --local 127.0.0.1:0 --mode connect --send ping --timeout-ms $TIMEOUT_MS"
    count_lines "$dir/name.out" 1 "connect: ok path=connect sent=4 received=4 reply=ping elapsed_us={N}"
    [ $(($(connections "$dir/server") - before)) -eq 1 ] || fail "the named request did not reach the server"
    echo "  probe: a request to localhost:PORT resolved the name and connected"

    # Cancelled: four requests to a server that never answers, each
    # cancelled (CancelIoEx) after 300 ms.
    probe "$dir/cancel.out" 0 --remote "127.0.0.1:$silent" --mode connect --concurrency 4 \
        --timeout-ms 60000 --cancel-after-ms 300
    count_lines "$dir/cancel.out" 4 "connect: cancelled"
    echo "  probe: 4 requests cancelled with CancelIoEx"

    # Unload with requests in flight: four requests wait on the silent
    # server when sc stop comes; each completes with STATUS_CANCELLED.
    local pending_before
    pending_before=$(connections "$dir/silent")
    timeout 180 wine "$PROBE" --remote "127.0.0.1:$silent" --mode connect-ex --concurrency 4 \
        --timeout-ms 60000 >"$dir/unload.out" 2>>"$CURRENT_LOG" &
    local probe_pid=$!
    for _ in $(seq 150); do
        [ $(($(connections "$dir/silent") - pending_before)) -ge 4 ] && break
        sleep 0.2
    done
    [ $(($(connections "$dir/silent") - pending_before)) -ge 4 ] ||
        fail "the four requests never reached the silent server"
    stop_service "$from"
    local status=0
    wait "$probe_pid" || status=$?
    [ "$status" -eq 1 ] || fail "wsk-probe (unload) exited $status, expected 1"
    count_lines "$dir/unload.out" 4 "connect-ex: error cancelled without being asked (ERROR_OPERATION_ABORTED)"
    wait_for_line "wsk-sample: stopped serving: requests aborted=4 " 5 "$from"
    echo "  sc stop with 4 requests in flight: each cancelled, the driver unloaded"
    expect_lines "$from" \
        "$SERVING" \
        "wsk-sample: loaded: no startup run (no RemoteAddress); clock={WORD}" \
        "wsk-sample: rejected a request: --mode is socket-connect, connect, connect-ex or accept" \
        "$STOPPED_SERVING" \
        "wsk-sample: unloaded" || fail "the request lines do not match the contract"
}

# ---------------------------------------------------------------- main
step "install what is missing (wine, wine64, mingw binutils and gcc, the Rust target)"
install_packages
install_rust_target

step "build the driver (plain cargo, no WDK)"
cargo build --locked --release --target "$TARGET" --manifest-path "$MANIFEST"
SYS=$WORK/$SERVICE.sys
cp "$BUILT" "$SYS"
echo "built $SYS ($(stat -c %s "$SYS") bytes)"

step "check the image"
check_image

step "check the driver's declarations against mingw's wdm.h"
check_declarations

step "build the user-mode probe (scripts/build-probe.sh)"
bash scripts/build-probe.sh "$WORK/probe"
PROBE=$WORK/probe/wsk-probe.exe

# shellcheck disable=SC2059 # the format is the payload, escapes and all
printf "$PAYLOAD_PRINTF" >"$WORK/payload.bin"
PAYLOAD_LEN=$(stat -c %s "$WORK/payload.bin")

# Headless; DbgPrint appears as debugstr messages. Set before the first wine
# command: the services inherit it.
unset DISPLAY WAYLAND_DISPLAY
export WINEDEBUG=${WINE_CHECK_DEBUG:--all,+debugstr}
export WINEDLLOVERRIDES="mscoree,mshtml="

for run in $(seq "$RUNS"); do
    step "run $run of $RUNS: a fresh prefix, the driver against a loopback echo server"
    run_once "$run"
done

echo
echo "wine-check: all checks passed ($RUNS runs)"
