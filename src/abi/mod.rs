//! Raw declarations from `wdm.h`, `wsk.h` and `ws2def.h`: the only place C
//! names appear.
//!
//! Everything here is `#[repr(C)]` and uses fixed-width integers, so the same
//! layout holds on `x86_64` Windows (the kernel) and on a 64-bit host (the
//! emulator). Every size and offset the library relies on is asserted at
//! compile time below, and `tests/layout.rs` reads the same numbers from the
//! real headers with the mingw cross compiler.
//!
//! These items are public for driver authors who need to go below the safe
//! wrappers; using them is `unsafe` in the usual FFI ways.
#![allow(
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    clippy::upper_case_acronyms,
    missing_docs
)]

mod status;

use core::ffi::c_void;
use core::mem::{offset_of, size_of};

pub use status::*;

pub type NTSTATUS = i32;
pub type BOOLEAN = u8;
pub type KIRQL = u8;
pub type CCHAR = i8;
pub type ULONG = u32;
pub type USHORT = u16;
pub type LONG = i32;
pub type SIZE_T = usize;
pub type ADDRESS_FAMILY = u16;
pub type KPROCESSOR_MODE = i8;
/// `KSPIN_LOCK`: a `ULONG_PTR` that `KeInitializeSpinLock` (an inline on
/// x64) sets to zero.
pub type KSPIN_LOCK = usize;

pub const TRUE: BOOLEAN = 1;
pub const FALSE: BOOLEAN = 0;

// ---------------------------------------------------------------- IRQL
pub const PASSIVE_LEVEL: KIRQL = 0;
pub const APC_LEVEL: KIRQL = 1;
pub const DISPATCH_LEVEL: KIRQL = 2;

// ---------------------------------------------------------------- time
/// `KI_USER_SHARED_DATA` on x64: the kernel's read-only mapping of
/// `KUSER_SHARED_DATA`.
pub const KI_USER_SHARED_DATA: u64 = 0xFFFF_F780_0000_0000;
/// `SharedInterruptTime`: `KUSER_SHARED_DATA.InterruptTime`, which wdm.h's
/// x64 `KeQueryInterruptTime` inline reads (100 ns units since boot).
pub const SharedInterruptTime: u64 = KI_USER_SHARED_DATA + 0x8;

// ---------------------------------------------------------------- IRP
pub const IO_TYPE_IRP: i16 = 6;
pub const SL_PENDING_RETURNED: u8 = 0x01;
pub const SL_INVOKE_ON_CANCEL: u8 = 0x20;
pub const SL_INVOKE_ON_SUCCESS: u8 = 0x40;
pub const SL_INVOKE_ON_ERROR: u8 = 0x80;
pub const IO_NO_INCREMENT: i8 = 0;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IO_STATUS_BLOCK {
    /// `Status` in a union with `Pointer`; padded to 8 bytes.
    pub Status: NTSTATUS,
    pub Padding: u32,
    pub Information: usize,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LIST_ENTRY {
    pub Flink: *mut Self,
    pub Blink: *mut Self,
}

/// The completion routine of an IRP stack location.
pub type PIO_COMPLETION_ROUTINE = Option<
    unsafe extern "system" fn(
        DeviceObject: *mut c_void,
        Irp: *mut IRP,
        Context: *mut c_void,
    ) -> NTSTATUS,
>;

/// `DEVICE_OBJECT`: the library only passes pointers to it along (to
/// `IoSetCompletionRoutineEx`, `IoAllocateWorkItem`, `ObfReferenceObject`).
#[repr(C)]
pub struct DEVICE_OBJECT {
    _opaque: [u8; 0],
}

/// `IO_WORKITEM`: opaque, allocated by `IoAllocateWorkItem`.
#[repr(C)]
pub struct IO_WORKITEM {
    _opaque: [u8; 0],
}

/// `PIO_WORKITEM_ROUTINE`: runs at `PASSIVE_LEVEL` on a system worker
/// thread.
pub type PIO_WORKITEM_ROUTINE =
    Option<unsafe extern "system" fn(DeviceObject: *mut DEVICE_OBJECT, Context: *mut c_void)>;

/// `WORK_QUEUE_TYPE`.
pub type WORK_QUEUE_TYPE = i32;
/// `DelayedWorkQueue`: the queue for work that may block.
pub const DelayedWorkQueue: WORK_QUEUE_TYPE = 1;

/// The cancel routine of a pending IRP.
pub type PDRIVER_CANCEL =
    Option<unsafe extern "system" fn(DeviceObject: *mut c_void, Irp: *mut IRP)>;

/// `IRP` (wdm.h). Fields the library does not touch are kept as opaque bytes.
#[repr(C)]
pub struct IRP {
    pub Type: i16,
    pub Size: u16,
    pub AllocationProcessorNumber: u16,
    pub Reserved: u16,
    pub MdlAddress: *mut MDL,
    pub Flags: u32,
    pub Padding: u32,
    /// `AssociatedIrp` (a union of pointers).
    pub AssociatedIrp: *mut c_void,
    pub ThreadListEntry: LIST_ENTRY,
    pub IoStatus: IO_STATUS_BLOCK,
    pub RequestorMode: KPROCESSOR_MODE,
    pub PendingReturned: BOOLEAN,
    pub StackCount: CCHAR,
    pub CurrentLocation: CCHAR,
    pub Cancel: BOOLEAN,
    pub CancelIrql: KIRQL,
    pub ApcEnvironment: CCHAR,
    pub AllocationFlags: u8,
    pub UserIosb: *mut IO_STATUS_BLOCK,
    pub UserEvent: *mut KEVENT,
    /// `Overlay` (user APC routine and context, or an allocation size).
    pub Overlay: [usize; 2],
    pub CancelRoutine: PDRIVER_CANCEL,
    pub UserBuffer: *mut c_void,
    pub Tail: IRP_TAIL,
}

/// `IRP.Tail.Overlay`, the member of the `Tail` union the library uses.
#[repr(C)]
pub struct IRP_TAIL {
    /// `DriverContext[4]` (in a union with `DeviceQueueEntry`).
    pub DriverContext: [*mut c_void; 4],
    pub Thread: *mut c_void,
    pub AuxiliaryBuffer: *mut c_void,
    pub ListEntry: LIST_ENTRY,
    /// `CurrentStackLocation` (in a union with `PacketType`).
    pub CurrentStackLocation: *mut IO_STACK_LOCATION,
    pub OriginalFileObject: *mut c_void,
    pub IrpExtension: *mut c_void,
}

/// `IO_STACK_LOCATION` (wdm.h); `Parameters` is kept opaque.
#[repr(C)]
pub struct IO_STACK_LOCATION {
    pub MajorFunction: u8,
    pub MinorFunction: u8,
    pub Flags: u8,
    pub Control: u8,
    pub Padding: u32,
    pub Parameters: [usize; 4],
    pub DeviceObject: *mut c_void,
    pub FileObject: *mut c_void,
    pub CompletionRoutine: PIO_COMPLETION_ROUTINE,
    pub Context: *mut c_void,
}

// ---------------------------------------------------------------- KEVENT
/// `EVENT_TYPE`.
pub type EVENT_TYPE = i32;
pub const NotificationEvent: EVENT_TYPE = 0;
pub const SynchronizationEvent: EVENT_TYPE = 1;
/// `KWAIT_REASON::Executive`.
pub const Executive: i32 = 0;
/// `KPROCESSOR_MODE::KernelMode`.
pub const KernelMode: KPROCESSOR_MODE = 0;

/// `DISPATCHER_HEADER` as far as an event uses it.
#[repr(C)]
pub struct DISPATCHER_HEADER {
    pub Type: u8,
    pub Signalling: u8,
    pub Size: u8,
    pub Reserved1: u8,
    pub SignalState: LONG,
    pub WaitListHead: LIST_ENTRY,
}

#[repr(C)]
pub struct KEVENT {
    pub Header: DISPATCHER_HEADER,
}

// ---------------------------------------------------------------- timers, DPCs
/// A deferred procedure call's routine (runs at `DISPATCH_LEVEL`).
pub type PKDEFERRED_ROUTINE = Option<
    unsafe extern "system" fn(
        Dpc: *mut KDPC,
        DeferredContext: *mut c_void,
        SystemArgument1: *mut c_void,
        SystemArgument2: *mut c_void,
    ),
>;

#[repr(C)]
pub struct KDPC {
    pub Type: u8,
    pub Importance: u8,
    pub Number: u16,
    pub Padding: u32,
    pub DpcListEntry: LIST_ENTRY,
    pub DeferredRoutine: PKDEFERRED_ROUTINE,
    pub DeferredContext: *mut c_void,
    pub SystemArgument1: *mut c_void,
    pub SystemArgument2: *mut c_void,
    pub DpcData: *mut c_void,
}

#[repr(C)]
pub struct KTIMER {
    pub Header: DISPATCHER_HEADER,
    /// `ULARGE_INTEGER`.
    pub DueTime: u64,
    pub TimerListEntry: LIST_ENTRY,
    pub Dpc: *mut KDPC,
    pub Processor: u32,
    pub Period: u32,
}

// ---------------------------------------------------------------- pool, MDL
/// `POOL_TYPE`.
pub type POOL_TYPE = i32;
pub const NonPagedPoolNx: POOL_TYPE = 512;

pub const MDL_MAPPED_TO_SYSTEM_VA: i16 = 0x0001;
/// `MDL_PAGES_LOCKED`: the pages are locked, not necessarily mapped.
pub const MDL_PAGES_LOCKED: i16 = 0x0002;
pub const MDL_SOURCE_IS_NONPAGED_POOL: i16 = 0x0004;

/// `MEMORY_CACHING_TYPE` (an enum).
pub type MEMORY_CACHING_TYPE = i32;
/// `MmCached`.
pub const MmCached: MEMORY_CACHING_TYPE = 1;
/// `MM_PAGE_PRIORITY` (an enum; the WDK now takes a `ULONG` there, so that
/// `MdlMapping*` flags can be added).
pub type MM_PAGE_PRIORITY = i32;
/// `NormalPagePriority`.
pub const NormalPagePriority: MM_PAGE_PRIORITY = 16;
/// `MdlMappingNoExecute` (Windows 8 and later): map without execute rights.
pub const MdlMappingNoExecute: MM_PAGE_PRIORITY = 0x4000_0000;

#[repr(C)]
pub struct MDL {
    pub Next: *mut Self,
    pub Size: i16,
    pub MdlFlags: i16,
    pub AllocationProcessorNumber: u16,
    pub Reserved: u16,
    pub Process: *mut c_void,
    pub MappedSystemVa: *mut c_void,
    pub StartVa: *mut c_void,
    pub ByteCount: ULONG,
    pub ByteOffset: ULONG,
}

// ---------------------------------------------------------------- version
/// `RTL_OSVERSIONINFOW`, which `RtlGetVersion` fills.
#[repr(C)]
pub struct RTL_OSVERSIONINFOW {
    /// Set by the caller to the structure's size (276 bytes).
    pub dwOSVersionInfoSize: ULONG,
    pub dwMajorVersion: ULONG,
    pub dwMinorVersion: ULONG,
    pub dwBuildNumber: ULONG,
    pub dwPlatformId: ULONG,
    /// `WCHAR[128]`: the service pack, NUL-terminated.
    pub szCSDVersion: [u16; 128],
}

// ---------------------------------------------------------------- ws2def.h
pub const AF_UNSPEC: ADDRESS_FAMILY = 0;
pub const AF_INET: ADDRESS_FAMILY = 2;
/// 23 on Windows (10 on Linux).
pub const AF_INET6: ADDRESS_FAMILY = 23;
pub const SOCK_STREAM: USHORT = 1;
pub const SOCK_DGRAM: USHORT = 2;
pub const IPPROTO_TCP: ULONG = 6;
pub const IPPROTO_UDP: ULONG = 17;
/// `SOL_SOCKET`: the level of the socket-wide options (winsock2.h).
pub const SOL_SOCKET: ULONG = 0xffff;
/// `SO_REUSEADDR`.
pub const SO_REUSEADDR: ULONG = 0x0004;
/// `SO_KEEPALIVE`.
pub const SO_KEEPALIVE: ULONG = 0x0008;
/// `SO_SNDBUF`.
pub const SO_SNDBUF: ULONG = 0x1001;
/// `SO_RCVBUF`.
pub const SO_RCVBUF: ULONG = 0x1002;
/// `SO_EXCLUSIVEADDRUSE`: `(int)(~SO_REUSEADDR)`.
pub const SO_EXCLUSIVEADDRUSE: ULONG = !SO_REUSEADDR;
/// `TCP_NODELAY`, an `IPPROTO_TCP` option (ws2ipdef.h).
pub const TCP_NODELAY: ULONG = 0x0001;
/// `TCP_FASTOPEN`, an `IPPROTO_TCP` option (ws2ipdef.h, Windows 10 1607+).
pub const TCP_FASTOPEN: ULONG = 15;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SOCKADDR {
    pub sa_family: ADDRESS_FAMILY,
    pub sa_data: [u8; 14],
}

/// `sin_addr` is an `IN_ADDR` union holding a `ULONG`, hence the alignment.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default)]
pub struct SOCKADDR_IN {
    pub sin_family: ADDRESS_FAMILY,
    /// Network byte order.
    pub sin_port: u16,
    /// Network byte order.
    pub sin_addr: [u8; 4],
    pub sin_zero: [u8; 8],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SOCKADDR_IN6 {
    pub sin6_family: ADDRESS_FAMILY,
    /// Network byte order.
    pub sin6_port: u16,
    /// Network byte order.
    pub sin6_flowinfo: u32,
    pub sin6_addr: [u8; 16],
    pub sin6_scope_id: u32,
}

#[repr(C, align(8))]
#[derive(Clone, Copy, Debug)]
pub struct SOCKADDR_STORAGE {
    pub ss_family: ADDRESS_FAMILY,
    pub ss_data: [u8; 126],
}

// ---------------------------------------------------------------- wsk.h
pub const WSK_FLAG_BASIC_SOCKET: ULONG = 0;
pub const WSK_FLAG_LISTEN_SOCKET: ULONG = 1;
pub const WSK_FLAG_CONNECTION_SOCKET: ULONG = 2;
pub const WSK_FLAG_DATAGRAM_SOCKET: ULONG = 4;
pub const WSK_FLAG_STREAM_SOCKET: ULONG = 8;
pub const WSK_NO_WAIT: ULONG = 0;
pub const WSK_INFINITE_WAIT: ULONG = 0xFFFF_FFFF;

/// `MAKE_WSK_VERSION(major, minor)`.
#[must_use]
pub const fn MAKE_WSK_VERSION(major: u8, minor: u8) -> USHORT {
    ((major as USHORT) << 8) | (minor as USHORT)
}
/// `WSK_MAJOR_VERSION(version)`.
#[must_use]
pub const fn WSK_MAJOR_VERSION(version: USHORT) -> u8 {
    (version >> 8) as u8
}

/// `WSK_CONTROL_SOCKET_TYPE`.
pub type WSK_CONTROL_SOCKET_TYPE = i32;
pub const WskSetOption: WSK_CONTROL_SOCKET_TYPE = 0;
pub const WskGetOption: WSK_CONTROL_SOCKET_TYPE = 1;
pub const WskIoctl: WSK_CONTROL_SOCKET_TYPE = 2;

/// Opaque client handle from the provider NPI.
#[repr(C)]
pub struct WSK_CLIENT {
    _opaque: [u8; 0],
}

#[repr(C)]
pub struct WSK_SOCKET {
    pub Dispatch: *const c_void,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WSK_BUF {
    pub Mdl: *mut MDL,
    pub Offset: ULONG,
    pub Length: SIZE_T,
}

#[repr(C)]
pub struct WSK_DATA_INDICATION {
    pub Next: *mut Self,
    pub Buffer: WSK_BUF,
}

pub type PFN_WSK_CLIENT_EVENT = Option<
    unsafe extern "system" fn(
        ClientContext: *mut c_void,
        EventType: ULONG,
        Information: *mut c_void,
        InformationLength: SIZE_T,
    ) -> NTSTATUS,
>;

#[repr(C)]
pub struct WSK_CLIENT_DISPATCH {
    pub Version: USHORT,
    pub Reserved: USHORT,
    pub WskClientEvent: PFN_WSK_CLIENT_EVENT,
}

#[repr(C)]
pub struct WSK_CLIENT_NPI {
    pub ClientContext: *mut c_void,
    pub Dispatch: *const WSK_CLIENT_DISPATCH,
}

/// Opaque to the client: the provider keeps its state here.
#[repr(C)]
pub struct WSK_REGISTRATION {
    pub ReservedRegistrationState: u64,
    pub ReservedRegistrationContext: *mut c_void,
    pub ReservedRegistrationLock: usize,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct WSK_PROVIDER_NPI {
    pub Client: *mut WSK_CLIENT,
    pub Dispatch: *const WSK_PROVIDER_DISPATCH,
}

pub type PFN_WSK_SOCKET = Option<
    unsafe extern "system" fn(
        Client: *mut WSK_CLIENT,
        AddressFamily: ADDRESS_FAMILY,
        SocketType: USHORT,
        Protocol: ULONG,
        Flags: ULONG,
        SocketContext: *mut c_void,
        Dispatch: *const c_void,
        OwningProcess: *mut c_void,
        OwningThread: *mut c_void,
        SecurityDescriptor: *mut c_void,
        Irp: *mut IRP,
    ) -> NTSTATUS,
>;
pub type PFN_WSK_SOCKET_CONNECT = Option<
    unsafe extern "system" fn(
        Client: *mut WSK_CLIENT,
        SocketType: USHORT,
        Protocol: ULONG,
        LocalAddress: *mut SOCKADDR,
        RemoteAddress: *mut SOCKADDR,
        Flags: ULONG,
        SocketContext: *mut c_void,
        Dispatch: *const WSK_CLIENT_CONNECTION_DISPATCH,
        OwningProcess: *mut c_void,
        OwningThread: *mut c_void,
        SecurityDescriptor: *mut c_void,
        Irp: *mut IRP,
    ) -> NTSTATUS,
>;
/// Entries of the client-level table the library does not call are kept as
/// untyped pointers (still checked for size and position).
pub type PFN_UNUSED = *const c_void;

#[repr(C)]
pub struct WSK_PROVIDER_DISPATCH {
    pub Version: USHORT,
    pub Reserved: USHORT,
    pub WskSocket: PFN_WSK_SOCKET,
    pub WskSocketConnect: PFN_WSK_SOCKET_CONNECT,
    pub WskControlClient: PFN_UNUSED,
    pub WskGetAddressInfo: PFN_WSK_GET_ADDRESS_INFO,
    pub WskFreeAddressInfo: PFN_WSK_FREE_ADDRESS_INFO,
    pub WskGetNameInfo: PFN_WSK_GET_NAME_INFO,
}

/// `UNICODE_STRING` (wdm.h): lengths in bytes, no terminator needed.
#[repr(C)]
pub struct UNICODE_STRING {
    pub Length: USHORT,
    pub MaximumLength: USHORT,
    pub Buffer: *mut u16,
}

/// `ADDRINFOEXW` (ws2def.h).
#[repr(C)]
pub struct ADDRINFOEXW {
    pub ai_flags: i32,
    pub ai_family: i32,
    pub ai_socktype: i32,
    pub ai_protocol: i32,
    pub ai_addrlen: SIZE_T,
    pub ai_canonname: *mut u16,
    pub ai_addr: *mut SOCKADDR,
    pub ai_blob: *mut c_void,
    pub ai_bloblen: SIZE_T,
    pub ai_provider: *mut c_void,
    pub ai_next: *mut Self,
}

/// `NS_ALL`: every name space.
pub const NS_ALL: ULONG = 0;

pub type PFN_WSK_GET_ADDRESS_INFO = Option<
    unsafe extern "system" fn(
        Client: *mut WSK_CLIENT,
        NodeName: *mut UNICODE_STRING,
        ServiceName: *mut UNICODE_STRING,
        NameSpace: ULONG,
        Provider: *mut c_void,
        Hints: *mut ADDRINFOEXW,
        Result: *mut *mut ADDRINFOEXW,
        OwningProcess: *mut c_void,
        OwningThread: *mut c_void,
        Irp: *mut IRP,
    ) -> NTSTATUS,
>;
pub type PFN_WSK_GET_NAME_INFO = Option<
    unsafe extern "system" fn(
        Client: *mut WSK_CLIENT,
        SockAddr: *mut SOCKADDR,
        SockAddrLength: ULONG,
        NodeName: *mut UNICODE_STRING,
        ServiceName: *mut UNICODE_STRING,
        Flags: ULONG,
        OwningProcess: *mut c_void,
        OwningThread: *mut c_void,
        Irp: *mut IRP,
    ) -> NTSTATUS,
>;
/// `NI_NUMERICHOST` (ws2def.h): the address as text, no lookup.
pub const NI_NUMERICHOST: ULONG = 0x02;
/// `NI_NAMEREQD` (ws2def.h): fail if the address has no name.
pub const NI_NAMEREQD: ULONG = 0x04;
pub type PFN_WSK_FREE_ADDRESS_INFO =
    Option<unsafe extern "system" fn(Client: *mut WSK_CLIENT, AddrInfo: *mut ADDRINFOEXW)>;

pub type PFN_WSK_RECEIVE_EVENT = Option<
    unsafe extern "system" fn(
        SocketContext: *mut c_void,
        Flags: ULONG,
        DataIndication: *mut WSK_DATA_INDICATION,
        BytesIndicated: SIZE_T,
        BytesAccepted: *mut SIZE_T,
    ) -> NTSTATUS,
>;
pub type PFN_WSK_DISCONNECT_EVENT =
    Option<unsafe extern "system" fn(SocketContext: *mut c_void, Flags: ULONG) -> NTSTATUS>;
pub type PFN_WSK_SEND_BACKLOG_EVENT = Option<
    unsafe extern "system" fn(SocketContext: *mut c_void, IdealBacklogSize: SIZE_T) -> NTSTATUS,
>;

#[repr(C)]
pub struct WSK_CLIENT_CONNECTION_DISPATCH {
    pub WskReceiveEvent: PFN_WSK_RECEIVE_EVENT,
    pub WskDisconnectEvent: PFN_WSK_DISCONNECT_EVENT,
    pub WskSendBacklogEvent: PFN_WSK_SEND_BACKLOG_EVENT,
}

pub type PFN_WSK_CONTROL_SOCKET = Option<
    unsafe extern "system" fn(
        Socket: *mut WSK_SOCKET,
        RequestType: WSK_CONTROL_SOCKET_TYPE,
        ControlCode: ULONG,
        Level: ULONG,
        InputSize: SIZE_T,
        InputBuffer: *mut c_void,
        OutputSize: SIZE_T,
        OutputBuffer: *mut c_void,
        OutputSizeReturned: *mut SIZE_T,
        Irp: *mut IRP,
    ) -> NTSTATUS,
>;
pub type PFN_WSK_CLOSE_SOCKET =
    Option<unsafe extern "system" fn(Socket: *mut WSK_SOCKET, Irp: *mut IRP) -> NTSTATUS>;
pub type PFN_WSK_BIND = Option<
    unsafe extern "system" fn(
        Socket: *mut WSK_SOCKET,
        LocalAddress: *mut SOCKADDR,
        Flags: ULONG,
        Irp: *mut IRP,
    ) -> NTSTATUS,
>;
pub type PFN_WSK_CONNECT = Option<
    unsafe extern "system" fn(
        Socket: *mut WSK_SOCKET,
        RemoteAddress: *mut SOCKADDR,
        Flags: ULONG,
        Irp: *mut IRP,
    ) -> NTSTATUS,
>;
pub type PFN_WSK_SEND_RECEIVE = Option<
    unsafe extern "system" fn(
        Socket: *mut WSK_SOCKET,
        Buffer: *mut WSK_BUF,
        Flags: ULONG,
        Irp: *mut IRP,
    ) -> NTSTATUS,
>;
/// `PFN_WSK_SEND`.
pub type PFN_WSK_SEND = PFN_WSK_SEND_RECEIVE;
/// `PFN_WSK_RECEIVE`.
pub type PFN_WSK_RECEIVE = PFN_WSK_SEND_RECEIVE;
/// `PFN_WSK_DISCONNECT` (the buffer may be NULL).
pub type PFN_WSK_DISCONNECT = PFN_WSK_SEND_RECEIVE;
pub type PFN_WSK_GET_ADDRESS = Option<
    unsafe extern "system" fn(
        Socket: *mut WSK_SOCKET,
        Address: *mut SOCKADDR,
        Irp: *mut IRP,
    ) -> NTSTATUS,
>;
pub type PFN_WSK_CONNECT_EX = Option<
    unsafe extern "system" fn(
        Socket: *mut WSK_SOCKET,
        RemoteAddress: *mut SOCKADDR,
        Buffer: *mut WSK_BUF,
        Flags: ULONG,
        Irp: *mut IRP,
    ) -> NTSTATUS,
>;
pub type PFN_WSK_RELEASE_DATA_INDICATION_LIST = Option<
    unsafe extern "system" fn(
        Socket: *mut WSK_SOCKET,
        DataIndication: *mut WSK_DATA_INDICATION,
    ) -> NTSTATUS,
>;

#[repr(C)]
pub struct WSK_PROVIDER_BASIC_DISPATCH {
    pub WskControlSocket: PFN_WSK_CONTROL_SOCKET,
    pub WskCloseSocket: PFN_WSK_CLOSE_SOCKET,
}

#[repr(C)]
pub struct WSK_PROVIDER_CONNECTION_DISPATCH {
    pub Basic: WSK_PROVIDER_BASIC_DISPATCH,
    pub WskBind: PFN_WSK_BIND,
    pub WskConnect: PFN_WSK_CONNECT,
    pub WskGetLocalAddress: PFN_WSK_GET_ADDRESS,
    pub WskGetRemoteAddress: PFN_WSK_GET_ADDRESS,
    pub WskSend: PFN_WSK_SEND,
    pub WskReceive: PFN_WSK_RECEIVE,
    pub WskDisconnect: PFN_WSK_DISCONNECT,
    pub WskRelease: PFN_WSK_RELEASE_DATA_INDICATION_LIST,
    pub WskConnectEx: PFN_WSK_CONNECT_EX,
    pub WskSendEx: PFN_UNUSED,
    pub WskReceiveEx: PFN_UNUSED,
}

#[repr(C)]
pub struct WSK_PROVIDER_STREAM_DISPATCH {
    pub Basic: WSK_PROVIDER_BASIC_DISPATCH,
    pub WskBind: PFN_WSK_BIND,
    pub WskAccept: PFN_UNUSED,
    pub WskConnect: PFN_WSK_CONNECT,
    pub WskListen: PFN_UNUSED,
    pub WskSend: PFN_WSK_SEND,
    pub WskReceive: PFN_WSK_RECEIVE,
    pub WskDisconnect: PFN_WSK_DISCONNECT,
    pub WskRelease: PFN_WSK_RELEASE_DATA_INDICATION_LIST,
    pub WskGetLocalAddress: PFN_WSK_GET_ADDRESS,
    pub WskGetRemoteAddress: PFN_WSK_GET_ADDRESS,
    pub WskConnectEx: PFN_WSK_CONNECT_EX,
    pub WskSendEx: PFN_UNUSED,
    pub WskReceiveEx: PFN_UNUSED,
}

pub type PFN_WSK_ACCEPT = Option<
    unsafe extern "system" fn(
        ListenSocket: *mut WSK_SOCKET,
        Flags: ULONG,
        AcceptSocketContext: *mut c_void,
        AcceptSocketDispatch: *const WSK_CLIENT_CONNECTION_DISPATCH,
        LocalAddress: *mut SOCKADDR,
        RemoteAddress: *mut SOCKADDR,
        Irp: *mut IRP,
    ) -> NTSTATUS,
>;

pub type PFN_WSK_SEND_TO = Option<
    unsafe extern "system" fn(
        Socket: *mut WSK_SOCKET,
        Buffer: *mut WSK_BUF,
        Flags: ULONG,
        RemoteAddress: *mut SOCKADDR,
        ControlInfoLength: ULONG,
        ControlInfo: *mut c_void,
        Irp: *mut IRP,
    ) -> NTSTATUS,
>;
pub type PFN_WSK_RECEIVE_FROM = Option<
    unsafe extern "system" fn(
        Socket: *mut WSK_SOCKET,
        Buffer: *mut WSK_BUF,
        Flags: ULONG,
        RemoteAddress: *mut SOCKADDR,
        ControlLength: *mut ULONG,
        ControlInfo: *mut c_void,
        ControlFlags: *mut ULONG,
        Irp: *mut IRP,
    ) -> NTSTATUS,
>;

/// `WSK_PROVIDER_DATAGRAM_DISPATCH`. `WskSendMessages` (the last entry)
/// is never read: older providers' tables may end before it.
#[repr(C)]
pub struct WSK_PROVIDER_DATAGRAM_DISPATCH {
    pub Basic: WSK_PROVIDER_BASIC_DISPATCH,
    pub WskBind: PFN_WSK_BIND,
    pub WskSendTo: PFN_WSK_SEND_TO,
    pub WskReceiveFrom: PFN_WSK_RECEIVE_FROM,
    pub WskRelease: PFN_UNUSED,
    pub WskGetLocalAddress: PFN_WSK_GET_ADDRESS,
    pub WskSendMessages: PFN_UNUSED,
}

#[repr(C)]
pub struct WSK_PROVIDER_LISTEN_DISPATCH {
    pub Basic: WSK_PROVIDER_BASIC_DISPATCH,
    pub WskBind: PFN_WSK_BIND,
    pub WskAccept: PFN_WSK_ACCEPT,
    pub WskInspectComplete: PFN_UNUSED,
    pub WskGetLocalAddress: PFN_WSK_GET_ADDRESS,
}

/// `WSK_FLAG_NODELAY` for `WskSend`.
pub const WSK_FLAG_NODELAY: ULONG = 0x0000_0002;
/// `WSK_FLAG_WAITALL` for `WskReceive`.
pub const WSK_FLAG_WAITALL: ULONG = 0x0000_0002;
/// `WSK_FLAG_ABORTIVE` for `WskDisconnect`, and in `WskDisconnectEvent`'s
/// flags for a connection the peer reset.
pub const WSK_FLAG_ABORTIVE: ULONG = 0x0000_0001;
/// `WSK_FLAG_AT_DISPATCH_LEVEL`: an event callback runs at `DISPATCH_LEVEL`.
pub const WSK_FLAG_AT_DISPATCH_LEVEL: ULONG = 0x0000_0008;

// Event callbacks (Microsoft's wsk.h and ws2def.h; neither Wine's nor
// mingw's headers declare them, so only the documentation checks them).
/// `WSK_SO_BASE`: the first WSK-specific `SOL_SOCKET` option.
pub const WSK_SO_BASE: ULONG = 0x4000;
/// `SO_WSK_EVENT_CALLBACK`: turns event callbacks on or off (a
/// `WskSetOption` at `SOL_SOCKET`, without an IRP when turning them on).
pub const SO_WSK_EVENT_CALLBACK: ULONG = WSK_SO_BASE + 2;
/// `WSK_EVENT_RECEIVE`: `WskReceiveEvent` on a connection socket.
pub const WSK_EVENT_RECEIVE: ULONG = 0x0000_0040;
/// `WSK_EVENT_DISCONNECT`: `WskDisconnectEvent` on a connection socket.
pub const WSK_EVENT_DISCONNECT: ULONG = 0x0000_0080;
/// `WSK_EVENT_DISABLE`: with an event's flag, turns that event off.
pub const WSK_EVENT_DISABLE: ULONG = 0x8000_0000;

/// A GUID (`NPIID` is one).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GUID {
    pub Data1: u32,
    pub Data2: u16,
    pub Data3: u16,
    pub Data4: [u8; 8],
}

/// `NPIID`: a network programming interface's identifier.
pub type NPIID = GUID;

/// `NPI_WSK_INTERFACE_ID`, {2227E803-8D8B-11D4-ABAD-009027719E09}: the WSK
/// interface, whose standard events `SO_WSK_EVENT_CALLBACK` names.
pub const NPI_WSK_INTERFACE_ID: NPIID = GUID {
    Data1: 0x2227_E803,
    Data2: 0x8D8B,
    Data3: 0x11D4,
    Data4: [0xAB, 0xAD, 0x00, 0x90, 0x27, 0x71, 0x9E, 0x09],
};

/// `WSK_EVENT_CALLBACK_CONTROL`: which events `SO_WSK_EVENT_CALLBACK`
/// turns on (or off, with `WSK_EVENT_DISABLE`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WSK_EVENT_CALLBACK_CONTROL {
    pub NpiId: *const NPIID,
    pub EventMask: ULONG,
}

// ------------------------------------------------- compile-time layout checks
// The numbers are x86_64 Windows' (REFERENCE: read from the headers); they hold
// for the emulator's 64-bit hosts because only fixed-width fields are used.
macro_rules! assert_layout {
    ($($t:ty => $size:expr $(, { $($field:ident).+ @ $off:expr })*;)*) => {
        $(
            const _: () = assert!(size_of::<$t>() == $size);
            $(const _: () = assert!(offset_of!($t, $($field).+) == $off);)*
        )*
    };
}

#[cfg(target_pointer_width = "64")]
assert_layout! {
    IRP => 208, { MdlAddress @ 8 }, { IoStatus @ 48 }, { StackCount @ 66 },
        { CurrentLocation @ 67 }, { Cancel @ 68 }, { CancelIrql @ 69 }, { UserEvent @ 80 },
        { CancelRoutine @ 104 }, { Tail.CurrentStackLocation @ 184 };
    IO_STACK_LOCATION => 72, { Control @ 3 }, { DeviceObject @ 40 },
        { CompletionRoutine @ 56 }, { Context @ 64 };
    IO_STATUS_BLOCK => 16, { Information @ 8 };
    KEVENT => 24, { Header.SignalState @ 4 };
    KDPC => 64, { DpcListEntry @ 8 }, { DeferredRoutine @ 24 }, { DeferredContext @ 32 },
        { DpcData @ 56 };
    KTIMER => 64, { DueTime @ 24 }, { TimerListEntry @ 32 }, { Dpc @ 48 }, { Period @ 60 };
    MDL => 48, { MdlFlags @ 10 }, { MappedSystemVa @ 24 }, { StartVa @ 32 },
        { ByteCount @ 40 }, { ByteOffset @ 44 };
    RTL_OSVERSIONINFOW => 276, { dwMajorVersion @ 4 }, { dwMinorVersion @ 8 },
        { dwBuildNumber @ 12 }, { dwPlatformId @ 16 }, { szCSDVersion @ 20 };
    WSK_BUF => 24, { Offset @ 8 }, { Length @ 16 };
    WSK_SOCKET => 8;
    WSK_CLIENT_DISPATCH => 16, { WskClientEvent @ 8 };
    WSK_CLIENT_NPI => 16, { Dispatch @ 8 };
    WSK_PROVIDER_NPI => 16, { Dispatch @ 8 };
    WSK_REGISTRATION => 24;
    WSK_PROVIDER_DISPATCH => 56, { WskSocket @ 8 }, { WskSocketConnect @ 16 },
        { WskGetAddressInfo @ 32 }, { WskFreeAddressInfo @ 40 }, { WskGetNameInfo @ 48 };
    UNICODE_STRING => 16, { MaximumLength @ 2 }, { Buffer @ 8 };
    ADDRINFOEXW => 72, { ai_addrlen @ 16 }, { ai_canonname @ 24 }, { ai_addr @ 32 },
        { ai_blob @ 40 }, { ai_bloblen @ 48 }, { ai_provider @ 56 }, { ai_next @ 64 };
    WSK_PROVIDER_BASIC_DISPATCH => 16, { WskCloseSocket @ 8 };
    WSK_PROVIDER_CONNECTION_DISPATCH => 104, { WskBind @ 16 }, { WskConnect @ 24 },
        { WskGetLocalAddress @ 32 }, { WskGetRemoteAddress @ 40 }, { WskSend @ 48 },
        { WskReceive @ 56 }, { WskDisconnect @ 64 }, { WskRelease @ 72 }, { WskConnectEx @ 80 };
    WSK_PROVIDER_STREAM_DISPATCH => 120, { WskBind @ 16 }, { WskConnect @ 32 },
        { WskSend @ 48 }, { WskReceive @ 56 }, { WskDisconnect @ 64 },
        { WskGetLocalAddress @ 80 }, { WskGetRemoteAddress @ 88 }, { WskConnectEx @ 96 };
    WSK_PROVIDER_DATAGRAM_DISPATCH => 64, { WskBind @ 16 }, { WskSendTo @ 24 },
        { WskReceiveFrom @ 32 }, { WskRelease @ 40 }, { WskGetLocalAddress @ 48 },
        { WskSendMessages @ 56 };
    WSK_PROVIDER_LISTEN_DISPATCH => 48, { WskBind @ 16 }, { WskAccept @ 24 },
        { WskInspectComplete @ 32 }, { WskGetLocalAddress @ 40 };
    WSK_CLIENT_CONNECTION_DISPATCH => 24, { WskDisconnectEvent @ 8 };
    WSK_DATA_INDICATION => 32, { Buffer @ 8 };
    GUID => 16, { Data4 @ 8 };
    WSK_EVENT_CALLBACK_CONTROL => 16, { EventMask @ 8 };
    SOCKADDR_IN => 16, { sin_port @ 2 }, { sin_addr @ 4 };
    SOCKADDR_IN6 => 28, { sin6_port @ 2 }, { sin6_flowinfo @ 4 }, { sin6_addr @ 8 },
        { sin6_scope_id @ 24 };
    SOCKADDR_STORAGE => 128;
}

// Dispatch tables are immutable tables of function pointers (and untyped
// entries that are never dereferenced): sharing them between threads is
// what the WSK subsystem itself does.
macro_rules! dispatch_tables_are_sync {
    ($($t:ty),*) => {$(
        // SAFETY: see above: read-only after construction.
        unsafe impl Sync for $t {}
        // SAFETY: as above.
        unsafe impl Send for $t {}
    )*};
}
dispatch_tables_are_sync!(
    WSK_PROVIDER_DISPATCH,
    WSK_PROVIDER_CONNECTION_DISPATCH,
    WSK_PROVIDER_STREAM_DISPATCH,
    WSK_PROVIDER_LISTEN_DISPATCH,
    WSK_PROVIDER_DATAGRAM_DISPATCH,
    WSK_CLIENT_DISPATCH,
    WSK_CLIENT_CONNECTION_DISPATCH
);
