//! Checks the declarations in `wsk::abi` and `src/sys.rs` against real C
//! headers: sizes, offsets, alignments and constants here, function
//! signatures in `layout/signatures.rs`.
//!
//! Two translation units are compiled with the mingw-w64 cross compiler
//! (nothing Windows ever runs): one includes mingw's kernel headers
//! (`ddk/ntddk.h` and `ddk/wdm.h`, which also give the `ntstatus.h` values),
//! the other
//! mingw's user-mode Winsock headers and Wine's `ddk/wsk.h` (kernel and user
//! headers cannot be mixed in one translation unit). Each emits an array of
//! `sizeof`, `offsetof`, `_Alignof` and constant values into its own section;
//! the test extracts that section with `objcopy` and compares every value
//! with what the Rust declarations say.
//!
//! Wine's `wsk.h` is LGPL: it is read from the system at test time (copied
//! into the temporary build directory) and never stored in this repository.
//!
//! Without the toolchain (Debian: `gcc-mingw-w64-x86-64`,
//! `mingw-w64-x86-64-dev`, `libwine-dev`) the test is skipped, unless the
//! environment variable `CI` is set, in which case it fails.

use core::mem::{align_of, offset_of, size_of};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use wsk::abi;

#[path = "layout/signatures.rs"]
mod signatures;

/// How many functions src/sys.rs imports for Windows.
const IMPORTS: usize = 33;

const CC: &str = "x86_64-w64-mingw32-gcc";
const OBJCOPY: &str = "x86_64-w64-mingw32-objcopy";
const PACKAGES: &str = "gcc-mingw-w64-x86-64, mingw-w64-x86-64-dev, libwine-dev";
/// Where Debian's `libwine-dev` puts `wsk.h` (newer and older layouts).
const WINE_WSK_H: &[&str] = &[
    "/usr/include/wine/wine/windows/ddk/wsk.h",
    "/usr/include/wine/windows/ddk/wsk.h",
];
/// The section the values are emitted into (at most 8 characters for COFF).
const SECTION: &str = ".wsklay";
/// First and last element of each emitted array, to catch a misread section.
const MAGIC: u64 = 0x5753_4B4C_4159_4F55;

const WDM_PRELUDE: &str = "\
#include <ddk/ntddk.h>
#include <stddef.h>
";

const WSK_PRELUDE: &str = "\
#include <winsock2.h>
#include <ws2ipdef.h>
#include <ws2tcpip.h>
#include <winternl.h>
#include <stddef.h>
typedef struct _MDL MDL, *PMDL;
typedef struct _IRP IRP;
typedef struct _KPROCESS *PEPROCESS;
typedef struct _KTHREAD *PETHREAD;
typedef ULONG_PTR KSPIN_LOCK;
typedef struct _WSACMSGHDR CMSGHDR, *PCMSGHDR;
#include \"wsk.h\"
";

/// Which translation unit a value is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Set {
    /// mingw's `ddk/wdm.h` (with `ntstatus.h`).
    Wdm,
    /// mingw's Winsock headers and Wine's `ddk/wsk.h`.
    Wsk,
}

impl Set {
    const ALL: [Self; 2] = [Self::Wdm, Self::Wsk];

    const fn name(self) -> &'static str {
        match self {
            Self::Wdm => "wdm",
            Self::Wsk => "wsk",
        }
    }

    const fn prelude(self) -> &'static str {
        match self {
            Self::Wdm => WDM_PRELUDE,
            Self::Wsk => WSK_PRELUDE,
        }
    }
}

impl fmt::Display for Set {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One value read from C and compared with Rust.
struct Check {
    set: Set,
    /// What is compared, for the report.
    what: String,
    /// A C expression of type `unsigned long long`.
    c_expr: String,
    /// The value the Rust declarations give.
    rust: u64,
}

fn usize_value(value: usize) -> u64 {
    u64::try_from(value).expect("usize fits in u64")
}

fn size(set: Set, ty: &str, rust: usize) -> Check {
    Check {
        set,
        what: format!("sizeof({ty})"),
        c_expr: format!("(unsigned long long)sizeof({ty})"),
        rust: usize_value(rust),
    }
}

fn align(set: Set, ty: &str, rust: usize) -> Check {
    Check {
        set,
        what: format!("_Alignof({ty})"),
        c_expr: format!("(unsigned long long)_Alignof({ty})"),
        rust: usize_value(rust),
    }
}

fn offset(set: Set, ty: &str, rust_path: &str, c_path: &str, rust: usize) -> Check {
    let what = if rust_path == c_path {
        format!("offsetof({ty}, {c_path})")
    } else {
        format!("offsetof({ty}, {c_path}) [Rust: {ty}.{rust_path}]")
    };
    Check {
        set,
        what,
        c_expr: format!("(unsigned long long)offsetof({ty}, {c_path})"),
        rust: usize_value(rust),
    }
}

/// A 32-bit (or narrower) constant: C casts it through `unsigned int`, Rust
/// converts it the same way (`v as u32 as u64`), so signed values are not
/// sign-extended on either side.
fn constant(set: Set, name: &str, c_expr: &str, rust: u64) -> Check {
    Check {
        set,
        what: name.to_owned(),
        c_expr: format!("(unsigned long long)(unsigned int)({c_expr})"),
        rust,
    }
}

/// The value a constant has once C converts it with `(unsigned int)`.
trait CValue {
    fn c_value(self) -> u64;
}

macro_rules! c_value_unsigned {
    ($($t:ty),*) => {$(
        impl CValue for $t {
            fn c_value(self) -> u64 {
                u64::from(self)
            }
        }
    )*};
}
c_value_unsigned!(u8, u16, u32);

macro_rules! c_value_signed {
    ($($t:ty),*) => {$(
        impl CValue for $t {
            fn c_value(self) -> u64 {
                u64::from(i32::from(self).cast_unsigned())
            }
        }
    )*};
}
c_value_signed!(i8, i16, i32);

/// Size, alignment and the offset of each listed field (same path in C and
/// in Rust).
macro_rules! layout {
    ($checks:ident, $set:ident, $t:ident, [$($($field:ident).+),* $(,)?]) => {
        $checks.push(size(Set::$set, stringify!($t), size_of::<abi::$t>()));
        $checks.push(align(Set::$set, stringify!($t), align_of::<abi::$t>()));
        $({
            let path = [$(stringify!($field)),+].join(".");
            $checks.push(offset(
                Set::$set,
                stringify!($t),
                &path,
                &path,
                offset_of!(abi::$t, $($field).+),
            ));
        })*
    };
}

/// Fields of Rust's `IRP_TAIL`, which flattens C's `IRP.Tail.Overlay`.
macro_rules! irp_tail {
    ($checks:ident, $($field:ident),* $(,)?) => {$(
        $checks.push(offset(
            Set::Wdm,
            "IRP",
            concat!("Tail.", stringify!($field)),
            concat!("Tail.Overlay.", stringify!($field)),
            offset_of!(abi::IRP, Tail.$field),
        ));
    )*};
}

/// Constants whose C name is the Rust name.
macro_rules! constants {
    ($checks:ident, $set:ident, $($name:ident),* $(,)?) => {$(
        $checks.push(constant(
            Set::$set,
            stringify!($name),
            stringify!($name),
            abi::$name.c_value(),
        ));
    )*};
}

/// `IRP` and `IO_STACK_LOCATION` (mingw's wdm.h).
fn irp_layouts(checks: &mut Vec<Check>) {
    // Rust-only members, not checked: IRP.AllocationProcessorNumber,
    // IRP.Reserved and IRP.Padding are padding in mingw's IRP (which lacks the
    // first two, newer WDK members). IRP.Tail.IrpExtension is absent from
    // mingw's Tail.Overlay (the Tail union is still as large, through KAPC,
    // which sizeof(IRP) covers).
    layout!(
        checks,
        Wdm,
        IRP,
        [
            Type,
            Size,
            MdlAddress,
            Flags,
            AssociatedIrp,
            ThreadListEntry,
            IoStatus,
            RequestorMode,
            PendingReturned,
            StackCount,
            CurrentLocation,
            Cancel,
            CancelIrql,
            ApcEnvironment,
            AllocationFlags,
            UserIosb,
            UserEvent,
            // A union in C (APC parameters or an allocation size): offset only.
            Overlay,
            CancelRoutine,
            UserBuffer,
            Tail,
        ]
    );
    irp_tail!(
        checks,
        DriverContext,
        Thread,
        AuxiliaryBuffer,
        ListEntry,
        CurrentStackLocation,
        OriginalFileObject,
    );
    // IO_STACK_LOCATION.Padding is Rust-only (padding before the union).
    layout!(
        checks,
        Wdm,
        IO_STACK_LOCATION,
        [
            MajorFunction,
            MinorFunction,
            Flags,
            Control,
            Parameters,
            DeviceObject,
            FileObject,
            CompletionRoutine,
            Context,
        ]
    );
}

/// Status block, lists, events and MDLs (mingw's wdm.h).
fn kernel_object_layouts(checks: &mut Vec<Check>) {
    // IO_STATUS_BLOCK.Padding is Rust-only (C's Status shares a union with
    // Pointer).
    layout!(checks, Wdm, IO_STATUS_BLOCK, [Status, Information]);
    layout!(checks, Wdm, LIST_ENTRY, [Flink, Blink]);
    layout!(checks, Wdm, UNICODE_STRING, [Length, MaximumLength, Buffer]);
    // DISPATCHER_HEADER.Reserved1 has no single C counterpart (a union of
    // flag bytes in mingw's header).
    layout!(
        checks,
        Wdm,
        KEVENT,
        [
            Header,
            Header.Type,
            Header.Signalling,
            Header.Size,
            Header.SignalState,
            Header.WaitListHead,
        ]
    );
    layout!(
        checks,
        Wdm,
        DISPATCHER_HEADER,
        [Type, Signalling, Size, SignalState, WaitListHead,]
    );
    // KDPC.Padding is Rust-only (alignment before the list entry).
    layout!(
        checks,
        Wdm,
        KDPC,
        [
            Type,
            Importance,
            Number,
            DpcListEntry,
            DeferredRoutine,
            DeferredContext,
            SystemArgument1,
            SystemArgument2,
            DpcData,
        ]
    );
    layout!(
        checks,
        Wdm,
        KTIMER,
        [Header, DueTime, TimerListEntry, Dpc, Processor, Period]
    );
    // MDL.AllocationProcessorNumber and MDL.Reserved are padding in mingw's
    // MDL (which lacks these newer WDK members).
    layout!(
        checks,
        Wdm,
        MDL,
        [
            Next,
            Size,
            MdlFlags,
            Process,
            MappedSystemVa,
            StartVa,
            ByteCount,
            ByteOffset,
        ]
    );
}

/// `NTSTATUS` values and the kernel constants (mingw's wdm.h).
fn wdm_constants(checks: &mut Vec<Check>) {
    for &(value, name) in abi::STATUS_NAMES {
        checks.push(constant(Set::Wdm, name, name, value.c_value()));
    }
    constants!(
        checks,
        Wdm,
        SL_PENDING_RETURNED,
        SL_INVOKE_ON_CANCEL,
        SL_INVOKE_ON_SUCCESS,
        SL_INVOKE_ON_ERROR,
        IO_TYPE_IRP,
        IO_NO_INCREMENT,
        PASSIVE_LEVEL,
        APC_LEVEL,
        DISPATCH_LEVEL,
        NotificationEvent,
        SynchronizationEvent,
        Executive,
        KernelMode,
        NonPagedPoolNx,
        MDL_MAPPED_TO_SYSTEM_VA,
        MDL_PAGES_LOCKED,
        MDL_SOURCE_IS_NONPAGED_POOL,
        MmCached,
        NormalPagePriority,
    );
    // A 64-bit address: not through `constant`'s `unsigned int`.
    checks.push(Check {
        set: Set::Wdm,
        what: "SharedInterruptTime".to_owned(),
        c_expr: "(unsigned long long)(SharedInterruptTime)".to_owned(),
        rust: abi::SharedInterruptTime,
    });
}

/// `RtlGetVersion`'s structure. The WDK declares it in `wdm.h`, mingw only
/// in `ddk/ntddk.h` (which cannot be included here as it is installed) and
/// in `winnt.h`, the same typedef, which the Winsock unit includes.
fn version_layout(checks: &mut Vec<Check>) {
    layout!(
        checks,
        Wsk,
        RTL_OSVERSIONINFOW,
        [
            dwOSVersionInfoSize,
            dwMajorVersion,
            dwMinorVersion,
            dwBuildNumber,
            dwPlatformId,
            szCSDVersion,
        ]
    );
}

/// WSK structures other than dispatch tables (Wine's wsk.h).
fn wsk_layouts(checks: &mut Vec<Check>) {
    layout!(checks, Wsk, WSK_BUF, [Mdl, Offset, Length]);
    layout!(checks, Wsk, WSK_SOCKET, [Dispatch]);
    layout!(checks, Wsk, WSK_DATA_INDICATION, [Next, Buffer]);
    layout!(
        checks,
        Wsk,
        WSK_CLIENT_DISPATCH,
        [Version, Reserved, WskClientEvent,]
    );
    layout!(checks, Wsk, WSK_CLIENT_NPI, [ClientContext, Dispatch]);
    layout!(checks, Wsk, WSK_PROVIDER_NPI, [Client, Dispatch]);
    layout!(
        checks,
        Wsk,
        WSK_REGISTRATION,
        [
            ReservedRegistrationState,
            ReservedRegistrationContext,
            ReservedRegistrationLock,
        ]
    );
}

/// The dispatch tables (function-pointer entries, in order).
fn wsk_dispatch_layouts(checks: &mut Vec<Check>) {
    layout!(
        checks,
        Wsk,
        WSK_PROVIDER_DISPATCH,
        [
            Version,
            Reserved,
            WskSocket,
            WskSocketConnect,
            WskControlClient,
            WskGetAddressInfo,
            WskFreeAddressInfo,
            WskGetNameInfo,
        ]
    );
    layout!(
        checks,
        Wsk,
        WSK_CLIENT_CONNECTION_DISPATCH,
        [WskReceiveEvent, WskDisconnectEvent, WskSendBacklogEvent,]
    );
    layout!(
        checks,
        Wsk,
        WSK_PROVIDER_BASIC_DISPATCH,
        [WskControlSocket, WskCloseSocket,]
    );
    layout!(
        checks,
        Wsk,
        WSK_PROVIDER_CONNECTION_DISPATCH,
        [
            Basic,
            Basic.WskControlSocket,
            Basic.WskCloseSocket,
            WskBind,
            WskConnect,
            WskGetLocalAddress,
            WskGetRemoteAddress,
            WskSend,
            WskReceive,
            WskDisconnect,
            WskRelease,
            WskConnectEx,
            WskSendEx,
            WskReceiveEx,
        ]
    );
    layout!(
        checks,
        Wsk,
        WSK_PROVIDER_STREAM_DISPATCH,
        [
            Basic,
            Basic.WskControlSocket,
            Basic.WskCloseSocket,
            WskBind,
            WskAccept,
            WskConnect,
            WskListen,
            WskSend,
            WskReceive,
            WskDisconnect,
            WskRelease,
            WskGetLocalAddress,
            WskGetRemoteAddress,
            WskConnectEx,
            WskSendEx,
            WskReceiveEx,
        ]
    );
}

/// The dispatch tables of listening and datagram sockets (Wine's wsk.h).
fn wsk_socket_kind_layouts(checks: &mut Vec<Check>) {
    layout!(
        checks,
        Wsk,
        WSK_PROVIDER_DATAGRAM_DISPATCH,
        [
            Basic,
            Basic.WskControlSocket,
            Basic.WskCloseSocket,
            WskBind,
            WskSendTo,
            WskReceiveFrom,
            WskRelease,
            WskGetLocalAddress,
            WskSendMessages,
        ]
    );
    layout!(
        checks,
        Wsk,
        WSK_PROVIDER_LISTEN_DISPATCH,
        [
            Basic,
            Basic.WskControlSocket,
            Basic.WskCloseSocket,
            WskBind,
            WskAccept,
            WskInspectComplete,
            WskGetLocalAddress,
        ]
    );
}

/// Socket addresses (mingw's ws2def.h and ws2ipdef.h).
fn sockaddr_layouts(checks: &mut Vec<Check>) {
    layout!(
        checks,
        Wsk,
        ADDRINFOEXW,
        [
            ai_flags,
            ai_family,
            ai_socktype,
            ai_protocol,
            ai_addrlen,
            ai_canonname,
            ai_addr,
            ai_blob,
            ai_bloblen,
            ai_provider,
            ai_next,
        ]
    );
    layout!(checks, Wsk, SOCKADDR, [sa_family, sa_data]);
    layout!(
        checks,
        Wsk,
        SOCKADDR_IN,
        [sin_family, sin_port, sin_addr, sin_zero,]
    );
    layout!(
        checks,
        Wsk,
        SOCKADDR_IN6,
        [
            sin6_family,
            sin6_port,
            sin6_flowinfo,
            sin6_addr,
            sin6_scope_id,
        ]
    );
    // SOCKADDR_STORAGE.ss_data is Rust-only (C splits it into private
    // padding and alignment members).
    layout!(checks, Wsk, SOCKADDR_STORAGE, [ss_family]);
}

/// Winsock and WSK constants.
fn wsk_constants(checks: &mut Vec<Check>) {
    // TCP_FASTOPEN is in neither mingw's nor Wine's headers: it is checked
    // against the documented value (15, ws2ipdef.h, Windows 10 1607+) only,
    // by whoever declared it. WSK_FLAG_NODELAY, WSK_FLAG_WAITALL and
    // WSK_FLAG_ABORTIVE are not in Wine's wsk.h either.
    constants!(
        checks,
        Wsk,
        AF_UNSPEC,
        AF_INET,
        AF_INET6,
        SOCK_STREAM,
        SOCK_DGRAM,
        IPPROTO_TCP,
        IPPROTO_UDP,
        SOL_SOCKET,
        SO_REUSEADDR,
        SO_KEEPALIVE,
        SO_SNDBUF,
        SO_RCVBUF,
        SO_EXCLUSIVEADDRUSE,
        TCP_NODELAY,
        NI_NUMERICHOST,
        NI_NAMEREQD,
        WSK_FLAG_BASIC_SOCKET,
        WSK_FLAG_LISTEN_SOCKET,
        WSK_FLAG_CONNECTION_SOCKET,
        WSK_FLAG_DATAGRAM_SOCKET,
        WSK_FLAG_STREAM_SOCKET,
        WSK_NO_WAIT,
        WSK_INFINITE_WAIT,
        WskSetOption,
        WskGetOption,
        WskIoctl,
    );
    checks.push(constant(
        Set::Wsk,
        "MAKE_WSK_VERSION(1, 0)",
        "MAKE_WSK_VERSION(1, 0)",
        abi::MAKE_WSK_VERSION(1, 0).c_value(),
    ));
}

/// Size and signedness of each integer alias (`KIRQL`, `SIZE_T`, ...): the
/// signature checks name these types as the header does, so only here is
/// the Rust alias's width compared. Signedness: 1 when `(T)-1 < 0`.
macro_rules! scalars {
    ($checks:ident, $set:ident, $($t:ident),* $(,)?) => {$(
        $checks.push(size(Set::$set, stringify!($t), size_of::<abi::$t>()));
        $checks.push(Check {
            set: Set::$set,
            what: concat!("signedness of ", stringify!($t)).to_owned(),
            c_expr: concat!("(unsigned long long)((", stringify!($t), ")-1 < 0)").to_owned(),
            rust: u64::from(abi::$t::MIN != 0),
        });
    )*};
}

fn scalar_aliases(checks: &mut Vec<Check>) {
    scalars!(
        checks,
        Wdm,
        NTSTATUS,
        BOOLEAN,
        KIRQL,
        CCHAR,
        ULONG,
        USHORT,
        LONG,
        SIZE_T,
        KPROCESSOR_MODE,
        KSPIN_LOCK,
    );
    scalars!(checks, Wsk, ADDRESS_FAMILY);
    // C enums, passed as 32-bit integers: their signedness is the
    // compiler's choice, their size is the ABI.
    for (set, name, rust) in [
        (
            Set::Wdm,
            "WORK_QUEUE_TYPE",
            size_of::<abi::WORK_QUEUE_TYPE>(),
        ),
        (Set::Wdm, "EVENT_TYPE", size_of::<abi::EVENT_TYPE>()),
        (Set::Wdm, "POOL_TYPE", size_of::<abi::POOL_TYPE>()),
        (
            Set::Wdm,
            "MEMORY_CACHING_TYPE",
            size_of::<abi::MEMORY_CACHING_TYPE>(),
        ),
        (
            Set::Wdm,
            "MM_PAGE_PRIORITY",
            size_of::<abi::MM_PAGE_PRIORITY>(),
        ),
        (
            Set::Wsk,
            "WSK_CONTROL_SOCKET_TYPE",
            size_of::<abi::WSK_CONTROL_SOCKET_TYPE>(),
        ),
    ] {
        checks.push(size(set, name, rust));
    }
}

fn all_checks() -> Vec<Check> {
    let mut checks = Vec::new();
    scalar_aliases(&mut checks);
    irp_layouts(&mut checks);
    kernel_object_layouts(&mut checks);
    version_layout(&mut checks);
    wdm_constants(&mut checks);
    wsk_layouts(&mut checks);
    wsk_dispatch_layouts(&mut checks);
    wsk_socket_kind_layouts(&mut checks);
    sockaddr_layouts(&mut checks);
    wsk_constants(&mut checks);
    checks
}

/// A build directory removed when dropped (also when the test panics).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("wsk-layout-{}", std::process::id()));
        // A leftover from an earlier process with the same id.
        if path.exists() {
            fs::remove_dir_all(&path).expect("remove stale layout build directory");
        }
        fs::create_dir_all(&path).expect("create layout build directory");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(error) = fs::remove_dir_all(&self.0) {
            eprintln!("layout: could not remove {}: {error}", self.0.display());
        }
    }
}

fn tool_works(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success())
}

/// The path of Wine's `wsk.h`, or why the test cannot run.
fn find_toolchain() -> Result<PathBuf, String> {
    let mut missing = Vec::new();
    for tool in [CC, OBJCOPY] {
        if !tool_works(tool) {
            missing.push(format!("`{tool}` is not installed"));
        }
    }
    let wsk_h = WINE_WSK_H.iter().map(Path::new).find(|path| path.is_file());
    if wsk_h.is_none() {
        missing.push(format!(
            "Wine's wsk.h was not found (looked for {})",
            WINE_WSK_H.join(", ")
        ));
    }
    match wsk_h {
        Some(path) if missing.is_empty() => Ok(path.to_path_buf()),
        _ => Err(missing.join("; ")),
    }
}

fn c_source(set: Set, checks: &[&Check]) -> String {
    let values = checks
        .iter()
        .map(|check| format!("    {}, /* {} */\n", check.c_expr, check.what))
        .collect::<Vec<_>>()
        .concat();
    let (signatures, _) = signatures::c_checks(set);
    format!(
        "/* Generated by wsk's tests/layout.rs. */\n{prelude}{signatures}\
         const unsigned long long wsk_values[] \
         __attribute__((section(\"{SECTION}\"), used)) = {{\n    \
         {MAGIC:#x}ULL, /* magic */\n{values}    {MAGIC:#x}ULL /* magic */\n}};\n",
        prelude = set.prelude(),
    )
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command
        .output()
        .map_err(|error| format!("could not run {command:?}: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// The directory of mingw's `ddk/wdm.h`, as the compiler finds it.
fn ddk_dir() -> Result<String, String> {
    let mut child = Command::new(CC)
        .args(["-E", "-M", "-x", "c", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|error| format!("could not run {CC}: {error}"))?;
    std::io::Write::write_all(
        child.stdin.as_mut().expect("piped stdin"),
        b"#include <ddk/wdm.h>\n",
    )
    .map_err(|error| format!("could not write to {CC}: {error}"))?;
    let output = child
        .wait_with_output()
        .map_err(|error| format!("could not run {CC}: {error}"))?;
    String::from_utf8_lossy(&output.stdout)
        .split([' ', '\\', '\n'])
        .find(|path| path.ends_with("ddk/wdm.h"))
        .and_then(|path| Path::new(path).parent())
        .map(|dir| dir.display().to_string())
        .ok_or_else(|| format!("{CC} does not find ddk/wdm.h"))
}

/// Compiles one translation unit and reads back the values it emitted, in
/// the order of `checks`.
fn read_c_values(dir: &Path, set: Set, checks: &[&Check]) -> Result<Vec<u64>, String> {
    let name = set.name();
    let source = dir.join(format!("{name}.c"));
    let object = dir.join(format!("{name}.o"));
    let binary = dir.join(format!("{name}.bin"));
    fs::write(&source, c_source(set, checks))
        .map_err(|error| format!("could not write {}: {error}", source.display()))?;
    let mut compile = Command::new(CC);
    if set == Set::Wdm {
        // ntddk.h includes <wdm.h> from its own directory.
        compile.arg(format!("-I{}", ddk_dir()?));
    }
    run(compile
        .current_dir(dir)
        .arg("-c")
        .arg(&source)
        .arg("-o")
        .arg(&object))?;
    run(Command::new(OBJCOPY)
        .current_dir(dir)
        .args(["-O", "binary", "--only-section", SECTION])
        .arg(&object)
        .arg(&binary))?;
    let bytes = fs::read(&binary)
        .map_err(|error| format!("could not read {}: {error}", binary.display()))?;
    // The section may be padded at the end: read only what was emitted.
    let wanted = checks.len() + 2;
    if bytes.len() < wanted * 8 {
        return Err(format!(
            "{name}: section {SECTION} has {} bytes, expected at least {}",
            bytes.len(),
            wanted * 8
        ));
    }
    let values: Vec<u64> = bytes
        .chunks_exact(8)
        .take(wanted)
        .map(|chunk| u64::from_le_bytes(<[u8; 8]>::try_from(chunk).expect("8-byte chunk")))
        .collect();
    if values.first() != Some(&MAGIC) || values.last() != Some(&MAGIC) {
        return Err(format!(
            "{name}: section {SECTION} does not start and end with the magic value"
        ));
    }
    Ok(values[1..=checks.len()].to_vec())
}

#[test]
fn abi_matches_c_headers() {
    let ci = std::env::var_os("CI").is_some_and(|value| !value.is_empty());
    if !cfg!(target_pointer_width = "64") {
        eprintln!("layout: SKIPPED: the values are x86_64 Windows', this host is not 64-bit");
        return;
    }
    let wsk_h = match find_toolchain() {
        Ok(path) => path,
        Err(reason) => {
            assert!(
                !ci,
                "layout: {reason}. Install the Debian packages {PACKAGES} \
                 (CI is set, so the header check cannot be skipped)"
            );
            eprintln!("layout: SKIPPED: {reason} (Debian packages: {PACKAGES})");
            return;
        }
    };

    // Every import of src/sys.rs is checked (the parser saw them all).
    assert_eq!(
        signatures::import_count(),
        IMPORTS,
        "src/sys.rs's Windows imports (update IMPORTS when adding one)"
    );
    let checks = all_checks();
    let dir = TempDir::new();
    fs::copy(&wsk_h, dir.0.join("wsk.h")).expect("copy Wine's wsk.h into the build directory");

    let mut errors = Vec::new();
    let mut mismatches = Vec::new();
    for set in Set::ALL {
        let set_checks: Vec<&Check> = checks.iter().filter(|check| check.set == set).collect();
        match read_c_values(&dir.0, set, &set_checks) {
            Ok(values) => {
                for (check, c) in set_checks.iter().zip(values) {
                    if c != check.rust {
                        mismatches.push(format!(
                            "  [{set}] {}: C = {c} ({c:#x}), Rust = {} ({:#x})",
                            check.what, check.rust, check.rust
                        ));
                    }
                }
            }
            Err(error) => errors.push(format!("[{set}] {error}")),
        }
    }
    drop(dir);

    let mut report = Vec::new();
    if errors.is_empty() {
        println!(
            "layout: {} values checked against wdm.h/ntstatus.h (mingw) and wsk.h (Wine)",
            checks.len()
        );
    } else {
        report.push(format!(
            "layout: the C side could not be built:\n{}",
            errors.join("\n")
        ));
    }
    if !mismatches.is_empty() {
        report.push(format!(
            "layout: {} of {} values differ between the C headers and wsk::abi:\n{}",
            mismatches.len(),
            checks.len(),
            mismatches.join("\n")
        ));
    }
    assert!(report.is_empty(), "{}", report.join("\n"));
}
