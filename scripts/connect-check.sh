#!/usr/bin/env bash
# Checks the `connect` example's contract: its result lines, its exit
# statuses, and that it works against a third-party server (Python's
# http.server on loopback) as well as its embedded echo server.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
    echo "connect-check: FAIL: $*" >&2
    exit 1
}

cargo build -q --example connect
connect=target/debug/examples/connect
work=$(mktemp -d)
server_pid=
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

ok_line='^(socket-connect|connect|connect-ex): ok path=[a-z+-]+ sent=[0-9]+ received=[0-9]+ reply=.* elapsed_us=[0-9]+$'

echo "--- no arguments: embedded echo server, all three modes"
timeout 60 "$connect" | tee "$work/all.out"
[ "$(wc -l <"$work/all.out")" -eq 3 ] || fail "expected three result lines"
grep -Evq "$ok_line" "$work/all.out" && fail "a line does not match the contract"
grep -q '^socket-connect: ok path=socket-connect sent=16 received=16 reply=hello from wsk\\r\\n ' "$work/all.out" || fail "socket-connect line"
grep -q '^connect: ok path=connect ' "$work/all.out" || fail "connect line"
grep -q '^connect-ex: ok path=connect-ex ' "$work/all.out" || fail "connect-ex line"

echo "--- payload escapes and a file"
timeout 60 "$connect" --mode connect --send 'a\x00b\\c' | tee "$work/escape.out"
grep -q '^connect: ok path=connect sent=5 received=5 reply=a\\x00b\\\\c ' "$work/escape.out" || fail "escaped payload"
head -c 3000 /dev/urandom >"$work/payload.bin"
timeout 60 "$connect" --mode connect-ex --tfo --send-file "$work/payload.bin" | tee "$work/file.out"
grep -q '^connect-ex: ok path=connect-ex sent=3000 ' "$work/file.out" || fail "--send-file with --tfo"

echo "--- IPv6"
timeout 60 python3 -c '
import socket, threading
s = socket.socket(socket.AF_INET6); s.bind(("::1", 0)); s.listen()
print(s.getsockname()[1], flush=True)
def serve(c):
    with c:  # ends its side once the client has ended its own
        while (d := c.recv(4096)): c.sendall(d)
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
' >"$work/port6" &
server_pid=$!
for _ in $(seq 50); do [ -s "$work/port6" ] && break; sleep 0.1; done
timeout 60 "$connect" --remote "[::1]:$(cat "$work/port6")" | tee "$work/v6.out"
[ "$(grep -Ec "$ok_line" "$work/v6.out")" -eq 3 ] || fail "IPv6 modes"
kill "$server_pid"; server_pid=

echo "--- a third-party server: Python's http.server"
mkdir "$work/site" && echo "served by python" >"$work/site/index.html"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server --bind 127.0.0.1 --directory "$work/site" "$port" >/dev/null 2>&1 &
server_pid=$!
for _ in $(seq 50); do python3 -c "import socket; socket.create_connection(('127.0.0.1',$port))" 2>/dev/null && break; sleep 0.1; done
timeout 60 "$connect" --remote "127.0.0.1:$port" --send 'GET / HTTP/1.0\r\n\r\n' | tee "$work/http.out"
[ "$(grep -c ': ok path=.* reply=HTTP/1.0 200 OK' "$work/http.out")" -eq 3 ] || fail "HTTP replies"
kill "$server_pid"; server_pid=

echo "--- a refused connection: error lines, exit status 1"
set +e
timeout 60 "$connect" --remote "127.0.0.1:$port" --mode all >"$work/refused.out"
status=$?
set -e
cat "$work/refused.out"
[ "$status" -eq 1 ] || fail "exit status $status for refused connections, expected 1"
[ "$(grep -c ': error STATUS_CONNECTION_REFUSED (0xC0000236) connection refused$' "$work/refused.out")" -eq 3 ] || fail "refused lines"

echo "--- malformed arguments: one usage line, exit status 2"
for args in "--mode bogus" "--remote nowhere" "--timeout-ms x" "--send \\q" "--frobnicate"; do
    set +e
    # shellcheck disable=SC2086
    "$connect" $args >"$work/usage.out" 2>"$work/usage.err"
    status=$?
    set -e
    [ "$status" -eq 2 ] || fail "'$args' exited $status, expected 2"
    [ ! -s "$work/usage.out" ] || fail "'$args' printed results"
    grep -q '^connect: ' "$work/usage.err" || fail "'$args' gave no error line"
done

echo "connect-check: ok"
