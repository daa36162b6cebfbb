//! Device objects, as far as a WSK client uses them: references
//! (`ObfReferenceObject`), completion routines held by the device
//! (`IoSetCompletionRoutineEx`), and work items (`IoAllocateWorkItem`,
//! `IoQueueWorkItem`, `IoFreeWorkItem`) run at `PASSIVE_LEVEL` on worker
//! threads.
//!
//! A [`Device`] stands for a driver's device object, and dropping it for
//! the driver unloading: if anything still holds a reference then (a
//! completion routine or work item that has not returned), the emulator
//! bugchecks as Windows does when an image goes while its code may still
//! run (`DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS`).

use core::ffi::c_void;
use core::ptr;
use std::boxed::Box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::faults::Resource;
use super::verifier::bugcheck;
use super::{Kernel, irql};
use crate::abi::{
    BOOLEAN, DEVICE_OBJECT, FALSE, IO_WORKITEM, IRP, NTSTATUS, PASSIVE_LEVEL,
    PIO_COMPLETION_ROUTINE, PIO_WORKITEM_ROUTINE, SL_INVOKE_ON_CANCEL, SL_INVOKE_ON_ERROR,
    SL_INVOKE_ON_SUCCESS, STATUS_INSUFFICIENT_RESOURCES, STATUS_SUCCESS, WORK_QUEUE_TYPE,
};

const DEVICE_MAGIC: u64 = 0x5753_4B44_4556_4943;
const WORK_ITEM_MAGIC: u64 = 0x5753_4B57_4F52_4B49;

/// An emulated device object, as a driver creates with `IoCreateDevice`.
///
/// # IRQL
/// Any: host-side test scaffolding.
pub struct Device {
    inner: Arc<DeviceObject>,
}

#[repr(C)]
struct DeviceObject {
    magic: u64,
    /// References taken with `ObfReferenceObject`, by completion routines
    /// set with `IoSetCompletionRoutineEx` and by queued work items.
    references: AtomicUsize,
}

impl Device {
    /// A new device object.
    #[must_use]
    pub fn new() -> Self {
        Self {
            inner: Arc::new(DeviceObject {
                magic: DEVICE_MAGIC,
                references: AtomicUsize::new(0),
            }),
        }
    }

    /// The `DEVICE_OBJECT` pointer to hand to the library.
    #[must_use]
    pub fn as_ptr(&self) -> *mut DEVICE_OBJECT {
        Arc::as_ptr(&self.inner).cast_mut().cast()
    }

    /// References held on the device (beyond the driver's own).
    #[must_use]
    pub fn references(&self) -> usize {
        self.inner.references.load(Ordering::Acquire)
    }
}

impl Default for Device {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        let references = self.references();
        if references != 0 && !std::thread::panicking() {
            bugcheck(
                "DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS",
                format_args!(
                    "the device object was deleted with {references} reference(s) held: completion routines or work items could still run in the unloaded image"
                ),
            );
        }
    }
}

impl core::fmt::Debug for Device {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Device")
            .field("references", &self.references())
            .finish()
    }
}

fn device<'a>(object: *const c_void, function: &str) -> &'a DeviceObject {
    let device = object.cast::<DeviceObject>();
    // SAFETY: read only after the null check; the magic is the first field.
    if device.is_null() || unsafe { (*device).magic } != DEVICE_MAGIC {
        bugcheck(
            "INVALID_OBJECT_REFERENCE",
            format_args!("{function}({object:p}): not an emulated device object"),
        );
    }
    // SAFETY: a live emulated device (its `Device` keeps it).
    unsafe { &*device }
}

/// Drops one reference and returns how many are left (never wrapping: one
/// too many bugchecks).
fn dereference(device: &DeviceObject, function: &str) -> usize {
    match device
        .references
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
            count.checked_sub(1)
        }) {
        Ok(before) => before - 1,
        Err(_) => bugcheck(
            "REFERENCE_BY_POINTER",
            format_args!("{function}: a device object dereferenced more than referenced"),
        ),
    }
}

/// `ObfReferenceObject` on an emulated device object: the new count.
pub fn reference_object(object: *mut c_void) -> isize {
    irql::require(const { irql::rule_of("ObfReferenceObject") });
    let device = device(object, "ObfReferenceObject");
    let count = device.references.fetch_add(1, Ordering::AcqRel) + 1;
    isize::try_from(count).unwrap_or(isize::MAX)
}

/// `ObfDereferenceObject` on an emulated device object: the new count.
pub fn dereference_object(object: *mut c_void) -> isize {
    irql::require(const { irql::rule_of("ObfDereferenceObject") });
    let device = device(object, "ObfDereferenceObject");
    let left = dereference(device, "ObfDereferenceObject");
    isize::try_from(left).unwrap_or(isize::MAX)
}

/// What `IoSetCompletionRoutineEx` allocates: the driver's routine and
/// context, and the device it holds.
struct Held {
    device: *const DeviceObject,
    routine: PIO_COMPLETION_ROUTINE,
    context: *mut c_void,
}

/// # Safety
/// `irp` is a live IRP the caller owns, with a next stack location.
pub unsafe fn set_completion_routine_ex(
    device_object: *mut DEVICE_OBJECT,
    irp: *mut IRP,
    routine: PIO_COMPLETION_ROUTINE,
    context: *mut c_void,
    on_success: BOOLEAN,
    on_error: BOOLEAN,
    on_cancel: BOOLEAN,
) -> NTSTATUS {
    irql::require(const { irql::rule_of("IoSetCompletionRoutineEx") });
    let device = device(device_object.cast(), "IoSetCompletionRoutineEx");
    if Kernel::current().inner().faults.should_fail(Resource::Pool) {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    device.references.fetch_add(1, Ordering::AcqRel);
    let held = Box::into_raw(Box::new(Held {
        device,
        routine,
        context,
    }));
    // SAFETY: the caller's live IRP.
    let current = unsafe { (*irp).Tail.CurrentStackLocation };
    // SAFETY: its next location is one below the current, within the stack.
    let next = unsafe { current.sub(1) };
    // SAFETY: within the IRP's stack (the caller's contract).
    let next = unsafe { &mut *next };
    next.CompletionRoutine = Some(held_completion);
    next.Context = held.cast();
    next.Control = 0;
    for (wanted, bit) in [
        (on_success, SL_INVOKE_ON_SUCCESS),
        (on_error, SL_INVOKE_ON_ERROR),
        (on_cancel, SL_INVOKE_ON_CANCEL),
    ] {
        if wanted != FALSE {
            next.Control |= bit;
        }
    }
    STATUS_SUCCESS
}

/// The I/O manager's wrapper: runs the driver's routine, and only after it
/// has returned lets go of the device (and so of the driver image).
///
/// # Safety
/// Called by the emulated I/O manager with the context that
/// `set_completion_routine_ex` installed, once.
unsafe extern "system" fn held_completion(
    device_object: *mut c_void,
    irp: *mut IRP,
    context: *mut c_void,
) -> NTSTATUS {
    // SAFETY: the box `set_completion_routine_ex` made, consumed once.
    let held = unsafe { Box::from_raw(context.cast::<Held>()) };
    let routine = held.routine.expect("a completion routine was set");
    // SAFETY: the driver's routine with its own context.
    let status = unsafe { routine(device_object, irp, held.context) };
    // SAFETY: the device outlives its references (checked when dropped).
    dereference(unsafe { &*held.device }, "IoSetCompletionRoutineEx");
    status
}

#[repr(C)]
struct WorkItem {
    magic: u64,
    device: *const DeviceObject,
    queued: AtomicBool,
}

fn work_item<'a>(item: *mut IO_WORKITEM, function: &str) -> &'a WorkItem {
    let raw = item.cast::<WorkItem>();
    // SAFETY: read only after the null check; the magic is the first field.
    if raw.is_null() || unsafe { (*raw).magic } != WORK_ITEM_MAGIC {
        bugcheck(
            "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
            format_args!("{function}({item:p}): not a live work item"),
        );
    }
    // SAFETY: a live work item (freed only by IoFreeWorkItem, checked).
    unsafe { &*raw }
}

/// `IoAllocateWorkItem`: a work item for the emulated device object.
pub fn allocate_work_item(device_object: *mut DEVICE_OBJECT) -> *mut IO_WORKITEM {
    irql::require(const { irql::rule_of("IoAllocateWorkItem") });
    let device = device(device_object.cast(), "IoAllocateWorkItem");
    if Kernel::current().inner().faults.should_fail(Resource::Pool) {
        return ptr::null_mut();
    }
    Box::into_raw(Box::new(WorkItem {
        magic: WORK_ITEM_MAGIC,
        device,
        queued: AtomicBool::new(false),
    }))
    .cast()
}

/// What a work item's thread needs: raw pointers, sent on purpose.
struct Carried(*mut IO_WORKITEM, *mut c_void, *const DeviceObject);
// SAFETY: the pointers are to the emulator's own objects or to the
// driver's context, which the driver gave to another thread on purpose.
unsafe impl Send for Carried {}

impl Carried {
    /// Taken apart on the worker thread (a method, so that the closure
    /// captures the whole `Send` value, not its fields).
    const fn into_parts(self) -> (*mut IO_WORKITEM, *mut c_void, *const DeviceObject) {
        (self.0, self.1, self.2)
    }
}

/// `IoQueueWorkItem`: runs the routine at `PASSIVE_LEVEL` on a thread of its
/// own, holding the device object until the routine has returned.
pub fn queue_work_item(
    item: *mut IO_WORKITEM,
    routine: PIO_WORKITEM_ROUTINE,
    _queue: WORK_QUEUE_TYPE,
    context: *mut c_void,
) {
    irql::require(const { irql::rule_of("IoQueueWorkItem") });
    let work = work_item(item, "IoQueueWorkItem");
    if work.queued.swap(true, Ordering::AcqRel) {
        bugcheck(
            "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
            format_args!("IoQueueWorkItem({item:p}): queued again before its routine began"),
        );
    }
    let routine = routine.expect("a work item routine");
    // SAFETY: a live device (its `Device` outlives its references).
    let device = unsafe { &*work.device };
    device.references.fetch_add(1, Ordering::AcqRel);
    let kernel = Kernel::current();
    let carried = Carried(item, context, work.device);
    std::thread::Builder::new()
        .name("wsk-emu-work-item".into())
        .spawn(move || {
            let (item, context, device) = carried.into_parts();
            let _enter = kernel.enter();
            irql::require_at_most(PASSIVE_LEVEL, "a work item", "runs at PASSIVE_LEVEL");
            // From here on it may be queued again (or freed by its routine).
            work_item(item, "a work item")
                .queued
                .store(false, Ordering::Release);
            // SAFETY: the driver's routine and context.
            unsafe { routine(device.cast_mut().cast(), context) };
            // SAFETY: the device outlives its references.
            dereference(unsafe { &*device }, "IoQueueWorkItem");
        })
        .expect("spawn a work item thread");
}

/// `IoFreeWorkItem`: bugchecks if the item is still queued.
pub fn free_work_item(item: *mut IO_WORKITEM) {
    irql::require(const { irql::rule_of("IoFreeWorkItem") });
    let work = work_item(item, "IoFreeWorkItem");
    if work.queued.load(Ordering::Acquire) {
        bugcheck(
            "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
            format_args!("IoFreeWorkItem({item:p}) while it is queued"),
        );
    }
    // SAFETY: from `allocate_work_item`, freed once (the magic is cleared).
    let mut work = unsafe { Box::from_raw(item.cast::<WorkItem>()) };
    work.magic = 0;
}
