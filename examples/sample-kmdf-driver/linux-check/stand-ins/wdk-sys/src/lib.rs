//! Compile-only stand-in for `wdk-sys` 0.5.2 in a KMDF configuration: the
//! declarations the KMDF sample and `wsk::wdk` use, written from KMDF
//! 1.31's headers the way the real crate's bindgen run renders them
//! (enums as modules of constants, callbacks as `Option<unsafe extern "C"
//! fn>`, `Default` on structures, WDF functions called through
//! `call_unsafe_wdf_function_binding!`). Nothing here runs: every function
//! panics. The real crate is generated from the installed WDK on Windows.
#![no_std]
#![allow(non_camel_case_types, non_snake_case, non_upper_case_globals)]
#![allow(clippy::missing_safety_doc, missing_docs)]

use core::ffi::c_void;

pub type NTSTATUS = i32;
pub type ULONG = u32;
pub type USHORT = u16;
pub type UCHAR = u8;
pub type BOOLEAN = UCHAR;
pub type CHAR = core::ffi::c_char;
pub type WCHAR = u16;
pub type PWCH = *mut WCHAR;
pub type LPCSTR = *const CHAR;
pub type PVOID = *mut c_void;
pub type HANDLE = PVOID;
pub type ULONG_PTR = u64;
pub type LONGLONG = i64;
pub type DEVICE_TYPE = ULONG;

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct _UNICODE_STRING {
    pub Length: USHORT,
    pub MaximumLength: USHORT,
    pub Buffer: PWCH,
}
pub type UNICODE_STRING = _UNICODE_STRING;
pub type PCUNICODE_STRING = *const UNICODE_STRING;

#[repr(C)]
#[derive(Copy, Clone)]
pub struct _LARGE_INTEGER__bindgen_ty_1 {
    pub LowPart: ULONG,
    pub HighPart: i32,
}
#[repr(C)]
#[derive(Copy, Clone)]
pub union _LARGE_INTEGER {
    pub __bindgen_anon_1: _LARGE_INTEGER__bindgen_ty_1,
    pub u: _LARGE_INTEGER__bindgen_ty_1,
    pub QuadPart: LONGLONG,
}
impl Default for _LARGE_INTEGER {
    fn default() -> Self {
        Self { QuadPart: 0 }
    }
}
pub type LARGE_INTEGER = _LARGE_INTEGER;
pub type PLARGE_INTEGER = *mut LARGE_INTEGER;

/// Opaque here: the sample only passes pointers along.
#[repr(C)]
pub struct _DRIVER_OBJECT {
    _opaque: [u8; 0],
}
pub type DRIVER_OBJECT = _DRIVER_OBJECT;
pub type PDRIVER_OBJECT = *mut DRIVER_OBJECT;
#[repr(C)]
pub struct _DEVICE_OBJECT {
    _opaque: [u8; 0],
}
pub type DEVICE_OBJECT = _DEVICE_OBJECT;
pub type PDEVICE_OBJECT = *mut DEVICE_OBJECT;

// The structures `wsk::wdk` checks the sizes of (x86_64).
#[repr(C, align(8))]
pub struct _IRP([u8; 208]);
pub type IRP = _IRP;
pub type PIRP = *mut IRP;
#[repr(C, align(8))]
pub struct _IO_STACK_LOCATION([u8; 72]);
pub type IO_STACK_LOCATION = _IO_STACK_LOCATION;
#[repr(C, align(8))]
pub struct _KEVENT([u8; 24]);
pub type KEVENT = _KEVENT;
#[repr(C, align(8))]
pub struct _MDL([u8; 48]);
pub type MDL = _MDL;
pub type PMDL = *mut MDL;
#[repr(C, align(8))]
pub struct _IO_STATUS_BLOCK([u8; 16]);
pub type IO_STATUS_BLOCK = _IO_STATUS_BLOCK;

pub const FILE_DEVICE_UNKNOWN: u32 = 34;

pub const STATUS_SUCCESS: NTSTATUS = 0;
pub const STATUS_PENDING: NTSTATUS = 0x103;
pub const STATUS_CANCELLED: NTSTATUS = 0xC000_0120_u32 as i32;
pub const STATUS_DEVICE_NOT_READY: NTSTATUS = 0xC000_00A3_u32 as i32;
pub const STATUS_INSUFFICIENT_RESOURCES: NTSTATUS = 0xC000_009A_u32 as i32;
pub const STATUS_INVALID_DEVICE_REQUEST: NTSTATUS = 0xC000_0010_u32 as i32;
pub const STATUS_INVALID_DEVICE_STATE: NTSTATUS = 0xC000_0184_u32 as i32;
pub const STATUS_INVALID_PARAMETER: NTSTATUS = 0xC000_000D_u32 as i32;

// WDF handles (`DECLARE_HANDLE`), and WDFOBJECT (`HANDLE`).
macro_rules! handles {
    ($($name:ident $opaque:ident;)*) => {$(
        #[repr(C)]
        #[derive(Debug, Default, Copy, Clone)]
        pub struct $opaque {
            pub unused: i32,
        }
        pub type $name = *mut $opaque;
    )*};
}
handles! {
    WDFDRIVER WDFDRIVER__;
    WDFDEVICE WDFDEVICE__;
    WDFQUEUE WDFQUEUE__;
    WDFREQUEST WDFREQUEST__;
}
pub type WDFOBJECT = HANDLE;
#[repr(C)]
pub struct WDFDEVICE_INIT {
    _opaque: [u8; 0],
}
pub type PWDFDEVICE_INIT = *mut WDFDEVICE_INIT;

pub mod _WDF_EXECUTION_LEVEL {
    pub type Type = core::ffi::c_int;
    pub const WdfExecutionLevelInvalid: Type = 0;
    pub const WdfExecutionLevelInheritFromParent: Type = 1;
    pub const WdfExecutionLevelPassive: Type = 2;
    pub const WdfExecutionLevelDispatch: Type = 3;
}
pub use self::_WDF_EXECUTION_LEVEL::Type as WDF_EXECUTION_LEVEL;
pub mod _WDF_SYNCHRONIZATION_SCOPE {
    pub type Type = core::ffi::c_int;
    pub const WdfSynchronizationScopeInvalid: Type = 0;
    pub const WdfSynchronizationScopeInheritFromParent: Type = 1;
    pub const WdfSynchronizationScopeDevice: Type = 2;
    pub const WdfSynchronizationScopeQueue: Type = 3;
    pub const WdfSynchronizationScopeNone: Type = 4;
}
pub use self::_WDF_SYNCHRONIZATION_SCOPE::Type as WDF_SYNCHRONIZATION_SCOPE;
pub mod _WDF_IO_QUEUE_DISPATCH_TYPE {
    pub type Type = core::ffi::c_int;
    pub const WdfIoQueueDispatchInvalid: Type = 0;
    pub const WdfIoQueueDispatchSequential: Type = 1;
    pub const WdfIoQueueDispatchParallel: Type = 2;
    pub const WdfIoQueueDispatchManual: Type = 3;
    pub const WdfIoQueueDispatchMax: Type = 4;
}
pub use self::_WDF_IO_QUEUE_DISPATCH_TYPE::Type as WDF_IO_QUEUE_DISPATCH_TYPE;
pub mod _WDF_TRI_STATE {
    pub type Type = core::ffi::c_int;
    pub const WdfFalse: Type = 0;
    pub const WdfTrue: Type = 1;
    pub const WdfUseDefault: Type = 2;
}
pub use self::_WDF_TRI_STATE::Type as WDF_TRI_STATE;

pub type PFN_WDF_DRIVER_DEVICE_ADD =
    Option<unsafe extern "C" fn(Driver: WDFDRIVER, DeviceInit: PWDFDEVICE_INIT) -> NTSTATUS>;
pub type PFN_WDF_DRIVER_UNLOAD = Option<unsafe extern "C" fn(Driver: WDFDRIVER)>;
pub type PFN_WDF_OBJECT_CONTEXT_CLEANUP = Option<unsafe extern "C" fn(Object: WDFOBJECT)>;
pub type PFN_WDF_OBJECT_CONTEXT_DESTROY = Option<unsafe extern "C" fn(Object: WDFOBJECT)>;
pub type PFN_GET_UNIQUE_CONTEXT_TYPE =
    Option<unsafe extern "C" fn() -> PCWDF_OBJECT_CONTEXT_TYPE_INFO>;
pub type PFN_WDF_IO_QUEUE_IO_DEFAULT =
    Option<unsafe extern "C" fn(Queue: WDFQUEUE, Request: WDFREQUEST)>;
pub type PFN_WDF_IO_QUEUE_IO_READ =
    Option<unsafe extern "C" fn(Queue: WDFQUEUE, Request: WDFREQUEST, Length: usize)>;
pub type PFN_WDF_IO_QUEUE_IO_WRITE = PFN_WDF_IO_QUEUE_IO_READ;
pub type PFN_WDF_IO_QUEUE_IO_DEVICE_CONTROL = Option<
    unsafe extern "C" fn(
        Queue: WDFQUEUE,
        Request: WDFREQUEST,
        OutputBufferLength: usize,
        InputBufferLength: usize,
        IoControlCode: ULONG,
    ),
>;
pub type PFN_WDF_IO_QUEUE_IO_INTERNAL_DEVICE_CONTROL = PFN_WDF_IO_QUEUE_IO_DEVICE_CONTROL;
pub type PFN_WDF_IO_QUEUE_IO_STOP =
    Option<unsafe extern "C" fn(Queue: WDFQUEUE, Request: WDFREQUEST, ActionFlags: ULONG)>;
pub type PFN_WDF_IO_QUEUE_IO_RESUME =
    Option<unsafe extern "C" fn(Queue: WDFQUEUE, Request: WDFREQUEST)>;
pub type PFN_WDF_IO_QUEUE_IO_CANCELED_ON_QUEUE = PFN_WDF_IO_QUEUE_IO_RESUME;
pub type PFN_WDF_REQUEST_CANCEL = Option<unsafe extern "C" fn(Request: WDFREQUEST)>;

#[repr(C)]
#[derive(Debug, Default, Copy, Clone)]
pub struct _WDF_DRIVER_CONFIG {
    pub Size: ULONG,
    pub EvtDriverDeviceAdd: PFN_WDF_DRIVER_DEVICE_ADD,
    pub EvtDriverUnload: PFN_WDF_DRIVER_UNLOAD,
    pub DriverInitFlags: ULONG,
    pub DriverPoolTag: ULONG,
}
pub type WDF_DRIVER_CONFIG = _WDF_DRIVER_CONFIG;
pub type PWDF_DRIVER_CONFIG = *mut WDF_DRIVER_CONFIG;

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct _WDF_OBJECT_CONTEXT_TYPE_INFO {
    pub Size: ULONG,
    pub ContextName: LPCSTR,
    pub ContextSize: usize,
    pub UniqueType: PCWDF_OBJECT_CONTEXT_TYPE_INFO,
    pub EvtDriverGetUniqueContextType: PFN_GET_UNIQUE_CONTEXT_TYPE,
}
pub type WDF_OBJECT_CONTEXT_TYPE_INFO = _WDF_OBJECT_CONTEXT_TYPE_INFO;
pub type PCWDF_OBJECT_CONTEXT_TYPE_INFO = *const WDF_OBJECT_CONTEXT_TYPE_INFO;

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct _WDF_OBJECT_ATTRIBUTES {
    pub Size: ULONG,
    pub EvtCleanupCallback: PFN_WDF_OBJECT_CONTEXT_CLEANUP,
    pub EvtDestroyCallback: PFN_WDF_OBJECT_CONTEXT_DESTROY,
    pub ExecutionLevel: WDF_EXECUTION_LEVEL,
    pub SynchronizationScope: WDF_SYNCHRONIZATION_SCOPE,
    pub ParentObject: WDFOBJECT,
    pub ContextSizeOverride: usize,
    pub ContextTypeInfo: PCWDF_OBJECT_CONTEXT_TYPE_INFO,
}
impl Default for _WDF_OBJECT_ATTRIBUTES {
    fn default() -> Self {
        Self {
            Size: 0,
            EvtCleanupCallback: None,
            EvtDestroyCallback: None,
            ExecutionLevel: 0,
            SynchronizationScope: 0,
            ParentObject: core::ptr::null_mut(),
            ContextSizeOverride: 0,
            ContextTypeInfo: core::ptr::null(),
        }
    }
}
pub type WDF_OBJECT_ATTRIBUTES = _WDF_OBJECT_ATTRIBUTES;
pub type PWDF_OBJECT_ATTRIBUTES = *mut WDF_OBJECT_ATTRIBUTES;

#[repr(C)]
#[derive(Debug, Default, Copy, Clone)]
pub struct _WDF_IO_QUEUE_CONFIG__bindgen_ty_1__bindgen_ty_1 {
    pub NumberOfPresentedRequests: ULONG,
}
#[repr(C)]
#[derive(Copy, Clone)]
pub union _WDF_IO_QUEUE_CONFIG__bindgen_ty_1 {
    pub Parallel: _WDF_IO_QUEUE_CONFIG__bindgen_ty_1__bindgen_ty_1,
}
impl Default for _WDF_IO_QUEUE_CONFIG__bindgen_ty_1 {
    fn default() -> Self {
        Self {
            Parallel: _WDF_IO_QUEUE_CONFIG__bindgen_ty_1__bindgen_ty_1::default(),
        }
    }
}
#[repr(C)]
#[derive(Copy, Clone)]
pub struct _WDF_IO_QUEUE_CONFIG {
    pub Size: ULONG,
    pub DispatchType: WDF_IO_QUEUE_DISPATCH_TYPE,
    pub PowerManaged: WDF_TRI_STATE,
    pub AllowZeroLengthRequests: BOOLEAN,
    pub DefaultQueue: BOOLEAN,
    pub EvtIoDefault: PFN_WDF_IO_QUEUE_IO_DEFAULT,
    pub EvtIoRead: PFN_WDF_IO_QUEUE_IO_READ,
    pub EvtIoWrite: PFN_WDF_IO_QUEUE_IO_WRITE,
    pub EvtIoDeviceControl: PFN_WDF_IO_QUEUE_IO_DEVICE_CONTROL,
    pub EvtIoInternalDeviceControl: PFN_WDF_IO_QUEUE_IO_INTERNAL_DEVICE_CONTROL,
    pub EvtIoStop: PFN_WDF_IO_QUEUE_IO_STOP,
    pub EvtIoResume: PFN_WDF_IO_QUEUE_IO_RESUME,
    pub EvtIoCanceledOnQueue: PFN_WDF_IO_QUEUE_IO_CANCELED_ON_QUEUE,
    pub Settings: _WDF_IO_QUEUE_CONFIG__bindgen_ty_1,
    pub Driver: WDFDRIVER,
}
impl Default for _WDF_IO_QUEUE_CONFIG {
    fn default() -> Self {
        Self {
            Size: 0,
            DispatchType: 0,
            PowerManaged: 0,
            AllowZeroLengthRequests: 0,
            DefaultQueue: 0,
            EvtIoDefault: None,
            EvtIoRead: None,
            EvtIoWrite: None,
            EvtIoDeviceControl: None,
            EvtIoInternalDeviceControl: None,
            EvtIoStop: None,
            EvtIoResume: None,
            EvtIoCanceledOnQueue: None,
            Settings: _WDF_IO_QUEUE_CONFIG__bindgen_ty_1::default(),
            Driver: core::ptr::null_mut(),
        }
    }
}
pub type WDF_IO_QUEUE_CONFIG = _WDF_IO_QUEUE_CONFIG;
pub type PWDF_IO_QUEUE_CONFIG = *mut WDF_IO_QUEUE_CONFIG;

pub const WDF_NO_OBJECT_ATTRIBUTES: PWDF_OBJECT_ATTRIBUTES = core::ptr::null_mut();
pub const WDF_NO_HANDLE: PVOID = core::ptr::null_mut();

/// `NT_SUCCESS`.
#[must_use]
pub const fn NT_SUCCESS(nt_status: NTSTATUS) -> bool {
    nt_status >= 0
}

pub mod ntddk {
    use super::{LARGE_INTEGER, PLARGE_INTEGER};

    // Declared, never defined: the check type-checks and never links.
    unsafe extern "system" {
        pub fn KeQueryPerformanceCounter(PerformanceFrequency: PLARGE_INTEGER) -> LARGE_INTEGER;
    }
}

/// The WDF functions, as `call_unsafe_wdf_function_binding!` types them
/// (the real macro calls them through the framework's function table).
pub mod wdf {
    use super::*;

    // Declared, never defined: the check type-checks and never links.
    macro_rules! returning {
        ($(fn $name:ident($($param:ident: $ty:ty),* $(,)?) -> $ret:ty;)*) => {
            unsafe extern "system" {$(
                pub fn $name($($param: $ty),*) -> $ret;
            )*}
        };
    }

    macro_rules! void {
        ($(fn $name:ident($($param:ident: $ty:ty),* $(,)?);)*) => {
            unsafe extern "system" {$(
                pub fn $name($($param: $ty),*);
            )*}
        };
    }

    returning! {
        fn WdfDriverCreate(
            DriverObject: PDRIVER_OBJECT,
            RegistryPath: PCUNICODE_STRING,
            DriverAttributes: PWDF_OBJECT_ATTRIBUTES,
            DriverConfig: PWDF_DRIVER_CONFIG,
            Driver: *mut WDFDRIVER,
        ) -> NTSTATUS;
        fn WdfDeviceInitAssignName(DeviceInit: PWDFDEVICE_INIT, DeviceName: PCUNICODE_STRING) -> NTSTATUS;
        fn WdfDeviceInitAssignSDDLString(DeviceInit: PWDFDEVICE_INIT, SDDLString: PCUNICODE_STRING) -> NTSTATUS;
        fn WdfDeviceCreate(
            DeviceInit: *mut PWDFDEVICE_INIT,
            DeviceAttributes: PWDF_OBJECT_ATTRIBUTES,
            Device: *mut WDFDEVICE,
        ) -> NTSTATUS;
        fn WdfDeviceCreateSymbolicLink(Device: WDFDEVICE, SymbolicLinkName: PCUNICODE_STRING) -> NTSTATUS;
        fn WdfDeviceWdmGetDeviceObject(Device: WDFDEVICE) -> PDEVICE_OBJECT;
        fn WdfIoQueueCreate(
            Device: WDFDEVICE,
            Config: PWDF_IO_QUEUE_CONFIG,
            QueueAttributes: PWDF_OBJECT_ATTRIBUTES,
            Queue: *mut WDFQUEUE,
        ) -> NTSTATUS;
        fn WdfIoQueueGetDevice(Queue: WDFQUEUE) -> WDFDEVICE;
        fn WdfObjectGetTypedContextWorker(Handle: WDFOBJECT, TypeInfo: PCWDF_OBJECT_CONTEXT_TYPE_INFO) -> PVOID;
        fn WdfRequestRetrieveInputBuffer(
            Request: WDFREQUEST,
            MinimumRequiredLength: usize,
            Buffer: *mut PVOID,
            Length: *mut usize,
        ) -> NTSTATUS;
        fn WdfRequestRetrieveOutputBuffer(
            Request: WDFREQUEST,
            MinimumRequiredLength: usize,
            Buffer: *mut PVOID,
            Length: *mut usize,
        ) -> NTSTATUS;
        fn WdfRequestMarkCancelableEx(Request: WDFREQUEST, EvtRequestCancel: PFN_WDF_REQUEST_CANCEL) -> NTSTATUS;
        fn WdfRequestUnmarkCancelable(Request: WDFREQUEST) -> NTSTATUS;
    }

    void! {
        fn WdfDeviceInitSetDeviceType(DeviceInit: PWDFDEVICE_INIT, DeviceType: DEVICE_TYPE);
        fn WdfDeviceInitSetRequestAttributes(
            DeviceInit: PWDFDEVICE_INIT,
            RequestAttributes: PWDF_OBJECT_ATTRIBUTES,
        );
        fn WdfRequestCompleteWithInformation(Request: WDFREQUEST, Status: NTSTATUS, Information: ULONG_PTR);
    }
}

/// Calls a WDF function by name with typed arguments, as the real macro
/// does (an `unsafe` call: use it in an `unsafe` block).
#[macro_export]
macro_rules! call_unsafe_wdf_function_binding {
    ($name:ident $(, $arg:expr)* $(,)?) => {
        $crate::wdf::$name($($arg),*)
    };
}
