//! A driver's device object, held by reference: what keeps the driver image
//! loaded while the library's code may still run on its behalf.
//!
//! Completion routines installed with `IoSetCompletionRoutineEx` and work
//! items queued with `IoQueueWorkItem` make the I/O manager hold a
//! reference on the device object until the routine has *returned*; the
//! driver cannot unload while any is held. A KMDF driver gets its WDM
//! device object with `WdfDeviceWdmGetDeviceObject`; a WDM driver has the
//! one `IoCreateDevice` made.

use core::ptr::NonNull;

use crate::abi::DEVICE_OBJECT;
use crate::error::{Error, Result};
use crate::status::NtStatus;
use crate::sys;

/// A counted reference to a device object (`ObfReferenceObject`), released
/// on drop (`ObfDereferenceObject`).
///
/// # IRQL
/// Every method, and drop, at `DISPATCH_LEVEL` or below.
///
/// # Invariants
/// `raw` is a live device object on which this value holds one reference.
pub struct DeviceObject {
    raw: NonNull<DEVICE_OBJECT>,
}

// SAFETY: a device object may be referenced and used from any thread.
unsafe impl Send for DeviceObject {}
// SAFETY: as above; shared access only passes the pointer on.
unsafe impl Sync for DeviceObject {}

impl DeviceObject {
    /// Takes a reference on the device object at `raw`.
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a null pointer.
    ///
    /// # Safety
    /// `raw` is null or a live `DEVICE_OBJECT` (from `IoCreateDevice`, or
    /// `WdfDeviceWdmGetDeviceObject` of a live WDFDEVICE).
    pub unsafe fn from_raw(raw: *mut DEVICE_OBJECT) -> Result<Self> {
        let raw = NonNull::new(raw).ok_or(Error::InvalidArgument(NtStatus::INVALID_PARAMETER))?;
        // SAFETY: a live device object per the contract; <= DISPATCH_LEVEL.
        unsafe { sys::ObfReferenceObject(raw.as_ptr().cast()) };
        // INVARIANT: the reference just taken.
        Ok(Self { raw })
    }

    /// The raw pointer, for the kernel.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub const fn as_ptr(&self) -> *mut DEVICE_OBJECT {
        self.raw.as_ptr()
    }
}

impl Clone for DeviceObject {
    fn clone(&self) -> Self {
        // SAFETY: live (invariant); <= DISPATCH_LEVEL.
        unsafe { sys::ObfReferenceObject(self.raw.as_ptr().cast()) };
        // INVARIANT: the reference just taken.
        Self { raw: self.raw }
    }
}

impl Drop for DeviceObject {
    fn drop(&mut self) {
        // SAFETY: the reference this value holds, released once.
        unsafe { sys::ObfDereferenceObject(self.raw.as_ptr().cast()) };
    }
}

impl core::fmt::Debug for DeviceObject {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("DeviceObject").field(&self.raw).finish()
    }
}
