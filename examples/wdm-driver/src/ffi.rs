//! What the driver itself imports from `ntoskrnl.exe` (the library imports
//! its own), and the few `wdm.h` types it touches, with their x64 layouts
//! asserted at compile time (the numbers are mingw's `ddk/wdm.h`;
//! `scripts/wine-check.sh` checks them against that header again).
//!
//! Every function here exists in Windows 10 1703's `ntoskrnl.exe` (and in
//! Wine 8's); `scripts/wine-check.sh` keeps the allowlist.
#![allow(non_camel_case_types, non_snake_case, clippy::upper_case_acronyms)]

use core::ffi::{c_char, c_void};
use core::mem::{offset_of, size_of};

pub use wsk::abi::NTSTATUS;

pub type HANDLE = *mut c_void;
pub type ACCESS_MASK = u32;
pub type KPROCESSOR_MODE = i8;

pub const STATUS_SUCCESS: NTSTATUS = 0;
pub const STATUS_TIMEOUT: NTSTATUS = 0x102;
#[allow(clippy::cast_possible_wrap)]
pub const STATUS_OBJECT_NAME_NOT_FOUND: NTSTATUS = 0xC000_0034_u32 as i32;
#[allow(clippy::cast_possible_wrap)]
pub const STATUS_NAME_TOO_LONG: NTSTATUS = 0xC000_0106_u32 as i32;
#[allow(clippy::cast_possible_wrap)]
pub const STATUS_BUFFER_OVERFLOW: NTSTATUS = 0x8000_0005_u32 as i32;
#[allow(clippy::cast_possible_wrap)]
pub const STATUS_BUFFER_TOO_SMALL: NTSTATUS = 0xC000_0023_u32 as i32;

#[allow(clippy::cast_possible_wrap)]
pub const STATUS_INVALID_PARAMETER: NTSTATUS = 0xC000_000D_u32 as i32;
#[allow(clippy::cast_possible_wrap)]
pub const STATUS_INVALID_DEVICE_REQUEST: NTSTATUS = 0xC000_0010_u32 as i32;
#[allow(clippy::cast_possible_wrap)]
pub const STATUS_INSUFFICIENT_RESOURCES: NTSTATUS = 0xC000_009A_u32 as i32;
#[allow(clippy::cast_possible_wrap)]
pub const STATUS_CANCELLED: NTSTATUS = 0xC000_0120_u32 as i32;
#[allow(clippy::cast_possible_wrap)]
pub const STATUS_DEVICE_NOT_READY: NTSTATUS = 0xC000_00A3_u32 as i32;
pub const STATUS_PENDING: NTSTATUS = 0x103;

pub const IRP_MJ_CREATE: usize = 0x00;
pub const IRP_MJ_CLOSE: usize = 0x02;
pub const IRP_MJ_DEVICE_CONTROL: usize = 0x0e;
pub const IRP_MJ_CLEANUP: usize = 0x12;
pub const FILE_DEVICE_UNKNOWN: u32 = 0x22;
/// Opens of `\\.\WskSample\anything` get the device's own security check.
pub const FILE_DEVICE_SECURE_OPEN: u32 = 0x100;
/// `IoMarkIrpPending` sets this in the current stack location's `Control`.
pub const SL_PENDING_RETURNED: u8 = 0x01;

pub const KERNEL_MODE: KPROCESSOR_MODE = 0;
/// `KWAIT_REASON::Executive`.
pub const EXECUTIVE: i32 = 0;
pub const SYNCHRONIZE: ACCESS_MASK = 0x0010_0000;
pub const THREAD_ALL_ACCESS: ACCESS_MASK = 0x001F_FFFF;
pub const KEY_READ: ACCESS_MASK = 0x0002_0019;
pub const OBJ_CASE_INSENSITIVE: u32 = 0x40;
pub const OBJ_KERNEL_HANDLE: u32 = 0x200;
/// `KEY_VALUE_INFORMATION_CLASS::KeyValuePartialInformation`.
pub const KEY_VALUE_PARTIAL_INFORMATION_CLASS: i32 = 2;
pub const REG_SZ: u32 = 1;
pub const REG_DWORD: u32 = 4;

#[repr(C)]
pub struct UNICODE_STRING {
    /// Bytes in use, without a terminator.
    pub Length: u16,
    pub MaximumLength: u16,
    pub Buffer: *mut u16,
}

#[repr(C)]
pub struct OBJECT_ATTRIBUTES {
    pub Length: u32,
    pub RootDirectory: HANDLE,
    pub ObjectName: *mut UNICODE_STRING,
    pub Attributes: u32,
    pub SecurityDescriptor: *mut c_void,
    pub SecurityQualityOfService: *mut c_void,
}

pub type PDRIVER_UNLOAD = Option<unsafe extern "system" fn(DriverObject: *mut DRIVER_OBJECT)>;

/// A dispatch routine (`DRIVER_DISPATCH`).
pub type DriverDispatch =
    unsafe extern "system" fn(DeviceObject: *mut DEVICE_OBJECT, Irp: *mut IRP) -> NTSTATUS;

pub use wsk::abi::{DEVICE_OBJECT, IO_STACK_LOCATION, IRP};

/// `IO_STACK_LOCATION.Parameters.DeviceIoControl`: the first three fields
/// of the parameters union, each pointer-aligned on x64.
#[repr(C)]
pub struct DeviceIoControlParameters {
    pub OutputBufferLength: u32,
    pub Padding1: u32,
    pub InputBufferLength: u32,
    pub Padding2: u32,
    pub IoControlCode: u32,
    pub Padding3: u32,
    pub Type3InputBuffer: *mut c_void,
}

/// `DRIVER_OBJECT`, as far as the driver touches it (`DriverUnload`); the
/// rest is opaque.
#[repr(C)]
pub struct DRIVER_OBJECT {
    pub Type: i16,
    pub Size: i16,
    pub DeviceObject: *mut c_void,
    pub Flags: u32,
    pub DriverStart: *mut c_void,
    pub DriverSize: u32,
    pub DriverSection: *mut c_void,
    pub DriverExtension: *mut c_void,
    pub DriverName: UNICODE_STRING,
    pub HardwareDatabase: *mut UNICODE_STRING,
    pub FastIoDispatch: *mut c_void,
    pub DriverInit: *mut c_void,
    pub DriverStartIo: *mut c_void,
    pub DriverUnload: PDRIVER_UNLOAD,
    pub MajorFunction: [*mut c_void; 28],
}

/// `KEY_VALUE_PARTIAL_INFORMATION`: a header, then `DataLength` bytes.
#[repr(C)]
pub struct KEY_VALUE_PARTIAL_INFORMATION {
    pub TitleIndex: u32,
    pub Type: u32,
    pub DataLength: u32,
    pub Data: [u8; 1],
}

pub type KSTART_ROUTINE = unsafe extern "system" fn(StartContext: *mut c_void);

const _: () = {
    assert!(size_of::<DeviceIoControlParameters>() == 32);
    assert!(offset_of!(DeviceIoControlParameters, InputBufferLength) == 8);
    assert!(offset_of!(DeviceIoControlParameters, IoControlCode) == 16);
    assert!(offset_of!(IO_STACK_LOCATION, Parameters) == 8);
    assert!(offset_of!(IRP, AssociatedIrp) == 24);
    assert!(size_of::<UNICODE_STRING>() == 16);
    assert!(offset_of!(UNICODE_STRING, Buffer) == 8);
    assert!(size_of::<OBJECT_ATTRIBUTES>() == 48);
    assert!(offset_of!(OBJECT_ATTRIBUTES, ObjectName) == 16);
    assert!(offset_of!(OBJECT_ATTRIBUTES, Attributes) == 24);
    assert!(size_of::<DRIVER_OBJECT>() == 336);
    assert!(offset_of!(DRIVER_OBJECT, DriverName) == 56);
    assert!(offset_of!(DRIVER_OBJECT, DriverUnload) == 104);
    assert!(offset_of!(DRIVER_OBJECT, MajorFunction) == 112);
    assert!(offset_of!(KEY_VALUE_PARTIAL_INFORMATION, Type) == 4);
    assert!(offset_of!(KEY_VALUE_PARTIAL_INFORMATION, DataLength) == 8);
    assert!(offset_of!(KEY_VALUE_PARTIAL_INFORMATION, Data) == 12);
};

#[link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")]
unsafe extern "C" {
    /// cdecl with varargs; the driver always passes `"%s\n"` and one string.
    pub fn DbgPrint(Format: *const c_char, ...) -> u32;
    // The compiler emits calls to these four; a driver links no C runtime.
    // Rust code never calls them by name, and raw-dylib imports every
    // declared function anyway.
    #[allow(dead_code, reason = "called by compiler-generated code only")]
    pub fn memcpy(dest: *mut c_void, src: *const c_void, count: usize) -> *mut c_void;
    #[allow(dead_code, reason = "called by compiler-generated code only")]
    pub fn memmove(dest: *mut c_void, src: *const c_void, count: usize) -> *mut c_void;
    #[allow(dead_code, reason = "called by compiler-generated code only")]
    pub fn memset(dest: *mut c_void, value: i32, count: usize) -> *mut c_void;
    #[allow(dead_code, reason = "called by compiler-generated code only")]
    pub fn memcmp(left: *const c_void, right: *const c_void, count: usize) -> i32;
    /// The stack probe the compiler calls for frames over a page (a task's
    /// future is built on the stack before it moves to pool); its real
    /// convention is special, but it is only ever called by generated code.
    #[allow(dead_code, reason = "called by compiler-generated code only")]
    pub fn __chkstk();
}

#[link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")]
unsafe extern "system" {
    pub fn KeBugCheckEx(
        BugCheckCode: u32,
        BugCheckParameter1: usize,
        BugCheckParameter2: usize,
        BugCheckParameter3: usize,
        BugCheckParameter4: usize,
    ) -> !;
    pub fn PsCreateSystemThread(
        ThreadHandle: *mut HANDLE,
        DesiredAccess: ACCESS_MASK,
        ObjectAttributes: *mut OBJECT_ATTRIBUTES,
        ProcessHandle: HANDLE,
        ClientId: *mut c_void,
        StartRoutine: KSTART_ROUTINE,
        StartContext: *mut c_void,
    ) -> NTSTATUS;
    pub fn PsTerminateSystemThread(ExitStatus: NTSTATUS) -> NTSTATUS;
    /// The thread object type: an exported `POBJECT_TYPE` variable. (C
    /// declares it `POBJECT_TYPE *` without `dllimport` and dereferences
    /// the import slot; a Rust import static reads the variable itself.)
    pub static PsThreadType: *mut c_void;
    pub fn ObReferenceObjectByHandle(
        Handle: HANDLE,
        DesiredAccess: ACCESS_MASK,
        ObjectType: *mut c_void,
        AccessMode: KPROCESSOR_MODE,
        Object: *mut *mut c_void,
        HandleInformation: *mut c_void,
    ) -> NTSTATUS;
    /// What wdm.h's `ObDereferenceObject` macro calls.
    pub fn ObfDereferenceObject(Object: *mut c_void) -> isize;
    pub fn KeWaitForSingleObject(
        Object: *mut c_void,
        WaitReason: i32,
        WaitMode: KPROCESSOR_MODE,
        Alertable: u8,
        Timeout: *const i64,
    ) -> NTSTATUS;
    pub fn MmGetSystemRoutineAddress(SystemRoutineName: *mut UNICODE_STRING) -> *mut c_void;
    pub fn IoCreateDevice(
        DriverObject: *mut DRIVER_OBJECT,
        DeviceExtensionSize: u32,
        DeviceName: *mut UNICODE_STRING,
        DeviceType: u32,
        DeviceCharacteristics: u32,
        Exclusive: u8,
        DeviceObject: *mut *mut DEVICE_OBJECT,
    ) -> NTSTATUS;
    pub fn IoDeleteDevice(DeviceObject: *mut DEVICE_OBJECT);
    pub fn IoCreateSymbolicLink(
        SymbolicLinkName: *mut UNICODE_STRING,
        DeviceName: *mut UNICODE_STRING,
    ) -> NTSTATUS;
    pub fn IoDeleteSymbolicLink(SymbolicLinkName: *mut UNICODE_STRING) -> NTSTATUS;
    /// What wdm.h's `IoCompleteRequest` macro calls.
    pub fn IofCompleteRequest(Irp: *mut IRP, PriorityBoost: i8);
    pub fn IoAcquireCancelSpinLock(Irql: *mut u8);
    pub fn IoReleaseCancelSpinLock(Irql: u8);
    pub fn ZwClose(Handle: HANDLE) -> NTSTATUS;
    pub fn ZwOpenKey(
        KeyHandle: *mut HANDLE,
        DesiredAccess: ACCESS_MASK,
        ObjectAttributes: *const OBJECT_ATTRIBUTES,
    ) -> NTSTATUS;
    pub fn ZwQueryValueKey(
        KeyHandle: HANDLE,
        ValueName: *const UNICODE_STRING,
        KeyValueInformationClass: i32,
        KeyValueInformation: *mut c_void,
        Length: u32,
        ResultLength: *mut u32,
    ) -> NTSTATUS;
}
