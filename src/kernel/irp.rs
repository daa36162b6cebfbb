//! IRPs the library allocates for WSK calls.

use core::ffi::c_void;
use core::ptr::NonNull;

use super::device::DeviceObject;
use crate::abi::{
    FALSE, IO_STACK_LOCATION, IRP, NTSTATUS, SL_INVOKE_ON_CANCEL, SL_INVOKE_ON_ERROR,
    SL_INVOKE_ON_SUCCESS, STATUS_UNSUCCESSFUL, TRUE,
};
use crate::error::{Error, Result};
use crate::status::NtStatus;
use crate::sys;

/// A completion routine: runs at `DISPATCH_LEVEL` or below, in any thread.
pub type CompletionRoutine =
    unsafe extern "system" fn(device: *mut c_void, irp: *mut IRP, context: *mut c_void) -> NTSTATUS;

/// An IRP this driver allocated (`IoAllocateIrp`); freed on drop.
///
/// # IRQL
/// Every method at `DISPATCH_LEVEL` or below.
///
/// # Invariants
/// `raw` is a live IRP from `IoAllocateIrp` owned by this value; whoever
/// submits it to a provider keeps this value alive (and does not drop it)
/// until its completion routine has run.
pub struct Irp {
    raw: NonNull<IRP>,
}

// SAFETY: an IRP is plain non-paged memory; the I/O manager allows any
// thread to submit, cancel or free it.
unsafe impl Send for Irp {}
// SAFETY: the shared methods (`cancel`, reading the status) are safe to
// call concurrently: `IoCancelIrp` is synchronised by the kernel.
unsafe impl Sync for Irp {}

impl Irp {
    /// Allocates an IRP with `stack_size` stack locations (at least one; a
    /// WSK call needs exactly one).
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for zero or more than 127 locations;
    /// [`Error::InsufficientResources`] when `IoAllocateIrp` fails.
    pub fn allocate(stack_size: u8) -> Result<Self> {
        let Ok(count @ 1..) = i8::try_from(stack_size) else {
            return Err(Error::InvalidArgument(NtStatus::INVALID_PARAMETER));
        };
        // SAFETY: valid arguments; IoAllocateIrp is callable at <= DISPATCH_LEVEL.
        let raw = unsafe { sys::IoAllocateIrp(count, FALSE) };
        // INVARIANT: a fresh IRP owned by the new value.
        NonNull::new(raw)
            .map(|raw| Self { raw })
            .ok_or(Error::InsufficientResources(
                NtStatus::INSUFFICIENT_RESOURCES,
            ))
    }

    /// The raw IRP, to pass to a WSK function.
    #[must_use]
    pub const fn as_ptr(&self) -> *mut IRP {
        self.raw.as_ptr()
    }

    /// The port of wdm.h's `IoSetCompletionRoutine` (a FORCEINLINE): installs
    /// `routine` with `context` in the next stack location, invoked on
    /// success, error and cancel, as WSK requires.
    ///
    /// # Safety
    /// The IRP is not in flight and nobody else uses it meanwhile;
    /// `routine` and `context` stay valid until the routine has run; the
    /// routine returns `STATUS_MORE_PROCESSING_REQUIRED` (this driver owns
    /// the IRP).
    pub unsafe fn set_completion_routine(&self, routine: CompletionRoutine, context: *mut c_void) {
        let next = self.next_stack_location();
        // SAFETY: `next` is within this IRP's stack (checked by
        // `next_stack_location`), and the IRP is not in flight and nobody
        // else uses it (contract).
        let next = unsafe { &mut *next };
        next.CompletionRoutine = Some(routine);
        next.Context = context;
        next.Control = SL_INVOKE_ON_SUCCESS | SL_INVOKE_ON_ERROR | SL_INVOKE_ON_CANCEL;
    }

    /// `IoSetCompletionRoutineEx`: installs `routine` as
    /// [`set_completion_routine`](Self::set_completion_routine) does, but
    /// through the I/O manager's wrapper, which holds a reference on
    /// `device` (and so on the driver image) until the routine has
    /// returned.
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// [`Error::InsufficientResources`] when the wrapper's context cannot be
    /// allocated; nothing was installed then.
    ///
    /// # Safety
    /// As for [`set_completion_routine`](Self::set_completion_routine).
    pub unsafe fn set_completion_routine_ex(
        &self,
        device: &DeviceObject,
        routine: CompletionRoutine,
        context: *mut c_void,
    ) -> Result<()> {
        // SAFETY: the IRP is ours and not in flight; the device is live (the
        // reference `device` holds); the caller's contract covers the
        // routine and context; <= DISPATCH_LEVEL.
        let status = unsafe {
            sys::IoSetCompletionRoutineEx(
                device.as_ptr(),
                self.as_ptr(),
                Some(routine),
                context,
                TRUE,
                TRUE,
                TRUE,
            )
        };
        NtStatus(status).ok()
    }

    /// `IoGetNextIrpStackLocation`.
    fn next_stack_location(&self) -> *mut IO_STACK_LOCATION {
        // SAFETY: live per the invariant; not in flight while the only
        // caller installs a routine (its contract).
        let header = unsafe { self.raw.as_ref() };
        assert!(header.CurrentLocation > 1, "IRP has no next stack location");
        // SAFETY: CurrentLocation > 1, so one below the current location is
        // still inside the stack that follows the header.
        unsafe { header.Tail.CurrentStackLocation.sub(1) }
    }

    /// `IoReuseIrp(irp, STATUS_UNSUCCESSFUL)`: ready for another request. The
    /// completion routine must be set again.
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL` or below.
    pub fn reuse(&mut self) {
        // SAFETY: owned and (by `&mut self` and the invariant) not in
        // flight: nobody else uses it.
        unsafe { self.reuse_unshared() };
    }

    /// [`reuse`](Self::reuse) through a shared reference, for an IRP that
    /// lives in a block several parties reach.
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL` or below.
    ///
    /// # Safety
    /// The IRP is not in flight and nobody else uses it meanwhile.
    pub(crate) unsafe fn reuse_unshared(&self) {
        // SAFETY: live, owned, not in flight and not used by anyone else
        // (contract).
        unsafe { sys::IoReuseIrp(self.as_ptr(), STATUS_UNSUCCESSFUL) };
    }

    /// `IoCancelIrp`: asks whoever holds the IRP to complete it early.
    /// Returns whether a cancel routine was called. The IRP still completes
    /// through its completion routine, possibly with success.
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL` or below.
    #[must_use]
    pub fn cancel(&self) -> bool {
        // SAFETY: live per the invariant (the owner keeps it alive while in
        // flight), which is all IoCancelIrp needs; <= DISPATCH_LEVEL.
        unsafe { sys::IoCancelIrp(self.as_ptr()) != FALSE }
    }

    /// `IoStatus.Status` (meaningful once the IRP has completed).
    #[must_use]
    pub fn status(&self) -> NtStatus {
        // SAFETY: live per the invariant; a plain read of a completed field.
        NtStatus(unsafe { (*self.as_ptr()).IoStatus.Status })
    }

    /// `IoStatus.Information` (meaningful once the IRP has completed).
    #[must_use]
    pub fn information(&self) -> usize {
        // SAFETY: as for `status`.
        unsafe { (*self.as_ptr()).IoStatus.Information }
    }

    /// Gives up ownership without freeing.
    #[must_use]
    pub const fn into_raw(self) -> NonNull<IRP> {
        let raw = self.raw;
        core::mem::forget(self);
        raw
    }

    /// Takes back an IRP from [`into_raw`](Self::into_raw).
    ///
    /// # Safety
    /// `raw` came from `into_raw` and is taken back once.
    #[must_use]
    pub const unsafe fn from_raw(raw: NonNull<IRP>) -> Self {
        // INVARIANT: per the contract.
        Self { raw }
    }
}

impl Drop for Irp {
    fn drop(&mut self) {
        // SAFETY: owned, live, and not in flight (per the invariant).
        unsafe { sys::IoFreeIrp(self.as_ptr()) };
    }
}

impl core::fmt::Debug for Irp {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Irp").field("raw", &self.raw).finish()
    }
}
