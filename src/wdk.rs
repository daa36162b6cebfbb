//! Interop with windows-drivers-rs (`wdk-sys`), for drivers that use both.
//!
//! This crate declares its own kernel ABI (wdk-sys has no WSK bindings and
//! no inline functions such as `IoSetCompletionRoutine`); this module checks
//! at compile time that the shared types have wdk-sys's sizes, and converts
//! raw pointers between the two sets of declarations. In a KMDF build it
//! also takes a framework device's WDM device object
//! (`DeviceObject::from_wdf_device`).
//!
//! Only built on a Windows host with the WDK installed and the `wdk`
//! feature enabled.

use core::mem::size_of;

use crate::abi;
#[cfg(driver_model__driver_type = "KMDF")]
use crate::error::Result;
#[cfg(driver_model__driver_type = "KMDF")]
use crate::kernel::device::DeviceObject;
use crate::kernel::irp::Irp;
use crate::kernel::mdl::Mdl;
use crate::status::NtStatus;

const _: () = assert!(size_of::<wdk_sys::IRP>() == size_of::<abi::IRP>());
const _: () =
    assert!(size_of::<wdk_sys::IO_STACK_LOCATION>() == size_of::<abi::IO_STACK_LOCATION>());
const _: () = assert!(size_of::<wdk_sys::KEVENT>() == size_of::<abi::KEVENT>());
const _: () = assert!(size_of::<wdk_sys::MDL>() == size_of::<abi::MDL>());
const _: () = assert!(size_of::<wdk_sys::IO_STATUS_BLOCK>() == size_of::<abi::IO_STATUS_BLOCK>());

impl Irp {
    /// The IRP as wdk-sys declares it.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub const fn as_wdk_irp(&self) -> wdk_sys::PIRP {
        self.as_ptr().cast()
    }
}

impl Mdl {
    /// The MDL as wdk-sys declares it.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub const fn as_wdk_mdl(&self) -> wdk_sys::PMDL {
        self.as_ptr().cast()
    }
}

impl NtStatus {
    /// The value as wdk-sys's `NTSTATUS`.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub const fn to_wdk(self) -> wdk_sys::NTSTATUS {
        self.0
    }
}

/// Only where wdk-build configured a KMDF driver (its cfg
/// `driver_model__driver_type = "KMDF"`): WDF is not part of a WDM build.
#[cfg(driver_model__driver_type = "KMDF")]
impl DeviceObject {
    /// Takes a reference on the WDM device object of the framework device
    /// `device` (`WdfDeviceWdmGetDeviceObject`): what a KMDF driver passes
    /// to [`Registration::register_with_device`](crate::Registration::register_with_device)
    /// and [`Executor::new`](crate::Executor::new).
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) if the
    /// framework gives no device object.
    ///
    /// # Safety
    /// `device` is a live framework device object of the calling driver
    /// (created by `WdfDeviceCreate`, its cleanup not yet finished).
    ///
    /// The reference keeps the WDM object, and with it the driver image,
    /// not the framework device: let go of every holder (shut the executor
    /// down, deregister) in the device's cleanup callback, or the driver
    /// cannot unload.
    pub unsafe fn from_wdf_device(device: wdk_sys::WDFDEVICE) -> Result<Self> {
        // SAFETY: a live framework device (the caller's contract); any IRQL
        // up to DISPATCH_LEVEL.
        let raw = unsafe {
            wdk_sys::call_unsafe_wdf_function_binding!(WdfDeviceWdmGetDeviceObject, device)
        };
        // SAFETY: the framework's WDM device object for `device`, live while
        // `device` is; both crates declare the same `DEVICE_OBJECT`.
        unsafe { Self::from_raw(raw.cast::<abi::DEVICE_OBJECT>()) }
    }
}
