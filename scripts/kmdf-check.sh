#!/usr/bin/env bash
# Checks the KMDF sample (examples/sample-kmdf-driver) as far as Linux can:
# it cannot build here (wdk-build refuses non-Windows hosts and wdk-sys
# needs the WDK's headers), so this checks everything around the build:
#
#   1. formatting of the sample's Rust files (rustfmt --edition 2024);
#   2. the .inx: UTF-16LE with a BOM, the sections, the root-enumerated
#      hardware ID and the AddService values, and that it is what
#      make-inx.py writes;
#   3. the manifest: `cargo metadata --locked` resolves (crates.io), the
#      wdk crates are exactly the pinned set, the driver model is KMDF 1.31,
#      cdylib, panic = "abort", lto;
#   4. the sample holds no copy of the shared request code: it uses
#      wsk_demo::request and defines no parser, task body or contract
#      constant of its own;
#   5. the sample is not a member of the root workspace;
#   6. the sample's code type-checks and passes clippy against stand-ins for
#      the wdk crates (examples/sample-kmdf-driver/linux-check), with wsk's
#      KMDF interop (src/wdk.rs) compiled in;
#   7. scripts/vm-test.ps1 is well formed as far as a text scan can tell
#      (balanced brackets outside strings and comments, strict mode).
#
# Runs every check, then exits 1 if any failed, naming each failure.
set -uo pipefail
cd "$(dirname "$0")/.."

readonly SAMPLE=examples/sample-kmdf-driver
readonly WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

failures=()
check() {
    local name=$1
    shift
    echo
    echo "--- $name"
    if "$@"; then
        echo "kmdf-check: ok: $name"
    else
        echo "kmdf-check: FAIL: $name" >&2
        failures+=("$name")
    fi
}

rust_files() {
    find "$SAMPLE" -name '*.rs' -not -path '*/target/*' | sort
}

format() {
    # shellcheck disable=SC2046
    rustfmt --edition 2024 --check $(rust_files)
}

inx() {
    python3 "$SAMPLE/make-inx.py" --check || return 1
    python3 - "$SAMPLE/wsk_sample_kmdf.inx" <<'EOF'
import re
import sys

path = sys.argv[1]
data = open(path, "rb").read()
problems = []
if not data.startswith(b"\xff\xfe"):
    sys.exit(f"{path}: no UTF-16LE byte order mark (FF FE)")
try:
    text = data[2:].decode("utf-16-le")
except UnicodeDecodeError as error:
    sys.exit(f"{path}: not UTF-16LE: {error}")

# Sections: name -> list of (key, value) lines, comments and blanks dropped.
sections = {}
current = None
def uncommented(raw):
    """The line without its `;` comment (a `;` inside double quotes stays)."""
    quoted = False
    for index, char in enumerate(raw):
        if char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            return raw[:index].strip()
    return raw.strip()

for raw in text.splitlines():
    line = uncommented(raw)
    if not line:
        continue
    match = re.fullmatch(r"\[([^\]]+)\]", line)
    if match:
        current = match.group(1).lower()
        sections.setdefault(current, [])
        continue
    if current is None:
        problems.append(f"a line outside any section: {line!r}")
        continue
    key, _, value = line.partition("=")
    sections[current].append((key.strip(), value.strip()))

def values(section, key):
    return [v for k, v in sections.get(section.lower(), []) if k.lower() == key.lower()]

for name in ["Version", "DestinationDirs", "SourceDisksNames", "SourceDisksFiles",
             "Manufacturer", "Strings"]:
    if name.lower() not in sections:
        problems.append(f"no [{name}] section")
for key in ["Signature", "Class", "ClassGuid", "Provider", "CatalogFile", "DriverVer"]:
    if not values("Version", key):
        problems.append(f"[Version] has no {key}")
if values("Version", "PnpLockDown") != ["1"]:
    problems.append("[Version] PnpLockDown is not 1")
if values("Version", "CatalogFile") != ["wsk_sample_kmdf.cat"]:
    problems.append("[Version] CatalogFile is not wsk_sample_kmdf.cat")
if not values("SourceDisksFiles", "wsk_sample_kmdf.sys"):
    problems.append("[SourceDisksFiles] does not list wsk_sample_kmdf.sys")
manufacturer = values("Manufacturer", "%StdMfg%")
if manufacturer != ["Standard,NT$ARCH$.10.0...16299"]:
    problems.append(f"[Manufacturer] is {manufacturer}, not %StdMfg%=Standard,NT$ARCH$.10.0...16299")

models = sections.get("standard.nt$arch$.10.0...16299")
install = None
if models is None:
    problems.append("no models section [Standard.NT$ARCH$.10.0...16299]")
else:
    for _, value in models:
        parts = [p.strip() for p in value.split(",")]
        if len(parts) >= 2 and parts[1] == r"root\WskSampleKmdf":
            install = parts[0]
    if install is None:
        problems.append(r"the models section has no device with hardware ID root\WskSampleKmdf")

if install:
    ddinstall = next((s for s in sections if s in (f"{install}.nt$arch$".lower(), f"{install}.nt".lower(), install.lower())), None)
    if ddinstall is None:
        problems.append(f"no install section for {install}")
    else:
        copy = values(ddinstall, "CopyFiles")
        if not copy:
            problems.append(f"[{ddinstall}] has no CopyFiles")
        elif not any(k == "wsk_sample_kmdf.sys" for k, _ in sections.get(copy[0].lower(), [])):
            problems.append(f"CopyFiles section {copy[0]} does not copy wsk_sample_kmdf.sys")
        services = values(f"{ddinstall}.services", "AddService")
        if not services:
            problems.append(f"no AddService in [{ddinstall}.Services]")
        else:
            parts = [p.strip() for p in services[0].split(",")]
            if len(parts) < 3:
                problems.append(f"AddService = {services[0]}: no service-install section")
            else:
                if parts[1] != "%SPSVCINST_ASSOCSERVICE%" or values("Strings", "SPSVCINST_ASSOCSERVICE") != ["0x00000002"]:
                    problems.append("AddService is not flagged SPSVCINST_ASSOCSERVICE (0x2)")
                service = parts[2]
                for key, want in [("ServiceType", "1"), ("StartType", "3"), ("ErrorControl", "1")]:
                    got = values(service, key)
                    if got != [want]:
                        problems.append(f"[{service}] {key} is {got}, not {want}")
                binary = values(service, "ServiceBinary")
                if binary != [r"%13%\wsk_sample_kmdf.sys"]:
                    problems.append(f"[{service}] ServiceBinary is {binary}")

# Every %token% used is defined in [Strings] (or a DIRID number).
defined = {k.lower() for k, _ in sections.get("strings", [])}
for token in set(re.findall(r"%([^%\s]+)%", text)):
    if not token.isdigit() and token.lower() not in defined:
        problems.append(f"%{token}% is not defined in [Strings]")

if problems:
    for problem in problems:
        print(f"{path}: {problem}", file=sys.stderr)
    sys.exit(1)
print(f"{path}: UTF-16LE with BOM; sections, root\\WskSampleKmdf and AddService (1, 3, 1) as required")
EOF
}

manifest() {
    cargo metadata --locked --format-version 1 --manifest-path "$SAMPLE/Cargo.toml" >"$WORK/sample.json" || {
        echo "cargo metadata failed (if Cargo.lock is out of date: cargo generate-lockfile --manifest-path $SAMPLE/Cargo.toml)" >&2
        return 1
    }
    python3 - "$SAMPLE/Cargo.toml" "$WORK/sample.json" <<'EOF'
import json
import sys
import tomllib

manifest_path, metadata_path = sys.argv[1:]
manifest = tomllib.load(open(manifest_path, "rb"))
metadata = json.load(open(metadata_path))
problems = []

PINS = {"wdk": "=0.5.0", "wdk-sys": "=0.5.2", "wdk-alloc": "=0.4.2", "wdk-panic": "=0.5.0"}
BUILD_PINS = {"wdk-build": "=0.6.0"}
RESOLVED = {"wdk": "0.5.0", "wdk-sys": "0.5.2", "wdk-alloc": "0.4.2", "wdk-panic": "0.5.0",
            "wdk-build": "0.6.0", "wdk-macros": "0.5.2"}

def requirement(spec):
    return spec if isinstance(spec, str) else spec.get("version")

deps = manifest.get("dependencies", {})
wdk_deps = {name: requirement(spec) for name, spec in deps.items() if name.startswith("wdk")}
if wdk_deps != PINS:
    problems.append(f"[dependencies] wdk crates are {wdk_deps}, not {PINS}")
build = {name: requirement(spec) for name, spec in manifest.get("build-dependencies", {}).items()}
if build != BUILD_PINS:
    problems.append(f"[build-dependencies] are {build}, not {BUILD_PINS}")
wsk = deps.get("wsk", {})
if not (isinstance(wsk, dict) and wsk.get("path") == "../.." and wsk.get("features") == ["wdk"]):
    problems.append(f'wsk is {wsk}, not {{ path = "../..", features = ["wdk"] }}')
if deps.get("wsk-demo") != {"path": "../demo"}:
    problems.append(f'wsk-demo is {deps.get("wsk-demo")}, not {{ path = "../demo" }}')

package = manifest.get("package", {})
if package.get("name") != "wsk-sample-kmdf":
    problems.append(f"package name is {package.get('name')}")
model = package.get("metadata", {}).get("wdk", {}).get("driver-model", {})
if model != {"driver-type": "KMDF", "kmdf-version-major": 1, "target-kmdf-version-minor": 31}:
    problems.append(f"[package.metadata.wdk.driver-model] is {model}, not KMDF 1.31")
if manifest.get("lib", {}).get("crate-type") != ["cdylib"]:
    problems.append('crate-type is not ["cdylib"]')
profiles = manifest.get("profile", {})
for profile in ["dev", "release"]:
    if profiles.get(profile, {}).get("panic") != "abort":
        problems.append(f'[profile.{profile}] panic is not "abort"')
if profiles.get("release", {}).get("lto") is not True:
    problems.append("[profile.release] lto is not true")
if "workspace" not in manifest:
    problems.append("no [workspace] table: the sample must be its own workspace")

# What cargo resolved: exactly one version of each, the pinned one.
found = {}
for pkg in metadata["packages"]:
    found.setdefault(pkg["name"], []).append(pkg["version"])
for name, version in RESOLVED.items():
    if found.get(name) != [version]:
        problems.append(f"resolved {name} {found.get(name)}, not exactly {version}")
members = [m for m in metadata["workspace_members"]]
if len(members) != 1 or "wsk-sample-kmdf" not in members[0]:
    problems.append(f"the sample's workspace members are {members}")

if problems:
    for problem in problems:
        print(f"{manifest_path}: {problem}", file=sys.stderr)
    sys.exit(1)
print(f"{manifest_path}: resolves; " + ", ".join(f"{n} {v}" for n, v in RESOLVED.items()) + "; KMDF 1.31, cdylib, panic=abort, lto")
EOF
}

shared_code() {
    local src="$SAMPLE/src" ok=0
    # It uses the contract...
    local used
    for used in 'wsk_demo::request' 'Request::parse' 'serve(' 'write_rejection' 'write_line' \
        'DEVICE_NAME' 'LINK_NAME' 'IOCTL_WSK_SAMPLE_RUN'; do
        if ! grep -rqF -- "$used" "$src"; then
            echo "the sample does not use $used from wsk_demo::request" >&2
            ok=1
        fi
    done
    # ...and holds no copy of it: no parser, task body, result line or
    # contract constant of its own.
    local pattern hits
    for pattern in \
        'fn (parse|serve|write_rejection|write_line|run_mode|run_mode_async|unescape)\b' \
        '(struct|enum) (Request|RequestError|Served|Tokens)\b' \
        'const (DEVICE_NAME|LINK_NAME|USER_NAME|IOCTL_WSK_SAMPLE_RUN|MAX_LINE|MAX_PAYLOAD|OUTPUT_CAPACITY)\b' \
        'WskSample"' '"--(remote|mode|send|timeout-ms|tfo|local)"' '0x800 *<< *2'; do
        hits=$(grep -rnE -- "$pattern" "$src" || true)
        if [ -n "$hits" ]; then
            echo "a copy of shared request code ($pattern):" >&2
            echo "$hits" >&2
            ok=1
        fi
    done
    [ "$ok" -eq 0 ] && echo "uses wsk_demo::request; defines none of it"
    return "$ok"
}

outside_root_workspace() {
    cargo metadata --format-version 1 --no-deps >"$WORK/root.json" || return 1
    python3 - "$WORK/root.json" Cargo.toml <<'EOF'
import json
import sys
import tomllib

metadata = json.load(open(sys.argv[1]))
root = tomllib.load(open(sys.argv[2], "rb"))
problems = []
names = [p["name"] for p in metadata["packages"]]
if "wsk-sample-kmdf" in names or any("sample-kmdf-driver" in m for m in metadata["workspace_members"]):
    problems.append(f"the root workspace lists the KMDF sample: {metadata['workspace_members']}")
if "examples/sample-kmdf-driver" not in root.get("workspace", {}).get("exclude", []):
    problems.append("the root Cargo.toml's [workspace] exclude does not list examples/sample-kmdf-driver")
if problems:
    sys.exit("\n".join(problems))
print("root workspace members: " + ", ".join(names))
EOF
}

stand_ins() {
    rustup target list --installed | grep -qx x86_64-pc-windows-msvc || rustup target add x86_64-pc-windows-msvc
    # wdk-build would set this cfg for every crate of a KMDF build; here it
    # is set by hand so that the KMDF-only code (wsk::wdk) compiles.
    RUSTFLAGS='--cfg driver_model__driver_type="KMDF" --check-cfg cfg(driver_model__driver_type,values("KMDF","WDM","UMDF"))' \
        cargo clippy --locked --target x86_64-pc-windows-msvc \
        --manifest-path "$SAMPLE/linux-check/Cargo.toml" -p wsk-sample-kmdf-linux-check -- -D warnings
}

vm_script() {
    python3 - scripts/vm-test.ps1 <<'EOF'
import sys

path = sys.argv[1]
text = open(path, encoding="utf-8-sig").read()
problems = []
for needle in ["Set-StrictMode -Version Latest", "$ErrorActionPreference = 'Stop'",
               "bcdedit", "verifier", "devcon", "install", "remove", r"root\WskSampleKmdf",
               "wsk-probe", "--concurrency", "--cancel-after-ms", "cargo make"]:
    if needle not in text:
        problems.append(f"does not contain {needle!r}")

# Brackets outside strings, comments and here-strings must balance.
stack = []
pairs = {")": "(", "]": "[", "}": "{"}
i, line = 0, 1
n = len(text)
while i < n:
    c = text[i]
    if c == "\n":
        line += 1
    if text.startswith("<#", i):
        end = text.find("#>", i + 2)
        if end < 0:
            problems.append(f"line {line}: unterminated <# comment")
            break
        line += text.count("\n", i, end)
        i = end + 2
        continue
    if c == "#":
        end = text.find("\n", i)
        i = n if end < 0 else end
        continue
    if text.startswith("@'", i) or text.startswith('@"', i):
        quote = text[i + 1]
        end = text.find("\n" + quote + "@", i)
        if end < 0:
            problems.append(f"line {line}: unterminated here-string")
            break
        line += text.count("\n", i, end + 1)
        i = end + 3
        continue
    if c == "'":
        j = i + 1
        while j < n:
            if text[j] == "'" and text.startswith("''", j):
                j += 2
                continue
            if text[j] == "'":
                break
            j += 1
        line += text.count("\n", i, j)
        i = j + 1
        continue
    if c == '"':
        j = i + 1
        depth = 0
        while j < n:
            if text[j] == "`":
                j += 2
                continue
            if text.startswith("$(", j):
                depth += 1
                j += 2
                continue
            if text[j] == ")" and depth:
                depth -= 1
            elif text[j] == '"' and not depth:
                break
            j += 1
        line += text.count("\n", i, j)
        i = j + 1
        continue
    if c == "`":
        i += 2
        continue
    if c in "([{":
        stack.append((c, line))
    elif c in ")]}":
        if not stack or stack[-1][0] != pairs[c]:
            problems.append(f"line {line}: unmatched {c}")
            break
        stack.pop()
    i += 1
for opener, at in stack:
    problems.append(f"line {at}: {opener} never closed")
if problems:
    for problem in problems:
        print(f"{path}: {problem}", file=sys.stderr)
    sys.exit(1)
print(f"{path}: brackets balance; strict mode; every step named")
EOF
}

check "rustfmt --edition 2024 --check (the sample's .rs files)" format
check "the .inx (UTF-16LE + BOM, sections, root\\WskSampleKmdf, AddService)" inx
check "the manifest resolves with exactly the pinned wdk crates (cargo metadata --locked)" manifest
check "no copy of the shared request code (wsk_demo::request)" shared_code
check "outside the root workspace" outside_root_workspace
check "the sample's code against stand-ins for the wdk crates (clippy -D warnings)" stand_ins
check "scripts/vm-test.ps1 is well formed (text scan)" vm_script

echo
if [ ${#failures[@]} -gt 0 ]; then
    echo "kmdf-check: ${#failures[@]} check(s) failed:" >&2
    printf '  - %s\n' "${failures[@]}" >&2
    exit 1
fi
echo "kmdf-check: all checks passed (nothing was built or run with the WDK: Linux cannot)"
