//! `wsk-sample-kmdf`: the `wsk` library in a KMDF driver built the
//! windows-drivers-rs way (`wdk`, `wdk-sys`, `wdk-alloc`, `wdk-panic`,
//! `wdk-build`, `cargo make`, an `.inx`).
//!
//! It serves the same request contract as the no-WDK sample
//! (`examples/wdm-driver`): `wsk_demo::request`. A root-enumerated device
//! (`root\WskSampleKmdf`) named `\Device\WskSample`, linked as
//! `\\.\WskSample`, takes `IOCTL_WSK_SAMPLE_RUN` with one request line,
//! runs it as a task on the library's executor and completes it with the
//! `connect` example's result line. See `docs/kmdf-sample.md`.
//!
//! - `device`: the add-device callback (device, link, queue, the WSK
//!   registration, provider and executor in the device context) and the
//!   cleanup callback that shuts the executor down and deregisters;
//! - `queue`: the parallel default queue, its `EvtIoDeviceControl`, and
//!   the pended request's cancel routine and completion;
//! - `wdf`: the small pieces of `wdf.h` that are macros or inline
//!   functions in C (context types, attribute and structure sizes).
//!
//! Builds only on Windows with the WDK (or eWDK): `cargo make` in this
//! directory.
#![no_std]

extern crate wdk_panic;

mod device;
mod queue;
mod wdf;

use wdk_alloc::WdkAllocator;
use wdk_sys::{
    NTSTATUS, PCUNICODE_STRING, PDRIVER_OBJECT, WDF_DRIVER_CONFIG, WDF_NO_HANDLE,
    WDF_NO_OBJECT_ATTRIBUTES, WDFDRIVER, call_unsafe_wdf_function_binding,
};

/// The crate does not allocate through `alloc`; windows-drivers-rs drivers
/// declare the allocator all the same (`ExAllocatePool2`, non-paged).
#[global_allocator]
static A: WdkAllocator = WdkAllocator;

/// The pool tag of the driver's own blocks and of the framework's
/// allocations on its behalf (`WDF_DRIVER_CONFIG::DriverPoolTag`).
const POOL_TAG: wsk::PoolTag = wsk::PoolTag::new(*b"WskK");

/// `log!("...", args)`: one `wsk-sample-kmdf: ` line through `DbgPrint`
/// (IRQL `DISPATCH_LEVEL` or below).
macro_rules! log {
    ($($arg:tt)*) => {
        wdk::println!("wsk-sample-kmdf: {}", format_args!($($arg)*))
    };
}
pub(crate) use log;

/// The driver's entry point, called by the KMDF stub (`FxDriverEntry`, the
/// image's entry point) once the framework is bound: creates the framework
/// driver object with the add-device callback.
///
/// # Safety
/// Called once by the KMDF stub at `PASSIVE_LEVEL` with the I/O manager's
/// driver object and service key path.
// SAFETY: `DriverEntry` is the one symbol the KMDF stub calls; nothing
// else in the image exports that name.
#[unsafe(export_name = "DriverEntry")]
pub unsafe extern "system" fn driver_entry(
    driver: PDRIVER_OBJECT,
    registry_path: PCUNICODE_STRING,
) -> NTSTATUS {
    let mut config = WDF_DRIVER_CONFIG {
        Size: wdf::struct_size::<WDF_DRIVER_CONFIG>(),
        EvtDriverDeviceAdd: Some(device::evt_driver_device_add),
        EvtDriverUnload: Some(evt_driver_unload),
        DriverPoolTag: POOL_TAG.value(),
        ..WDF_DRIVER_CONFIG::default()
    };
    // SAFETY: the driver object and path DriverEntry was given; no object
    // attributes; a WDF_DRIVER_CONFIG of the right size; no handle wanted
    // back; PASSIVE_LEVEL.
    let status = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDriverCreate,
            driver,
            registry_path,
            WDF_NO_OBJECT_ATTRIBUTES,
            &raw mut config,
            WDF_NO_HANDLE.cast::<WDFDRIVER>(),
        )
    };
    log!(
        "loaded: {} (KMDF driver object: {})",
        wsk_demo::request::USER_NAME,
        wsk::NtStatus(status)
    );
    status
}

/// The framework calls this once every device is gone and the image is
/// about to unload.
///
/// # Safety
/// Called by the framework at `PASSIVE_LEVEL`.
unsafe extern "C" fn evt_driver_unload(_driver: WDFDRIVER) {
    log!("unloaded");
}
