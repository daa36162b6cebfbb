//! The I/O manager's part: IRPs, stack locations, completion and cancel.

use core::mem::size_of;
use core::ptr::{self, addr_of_mut};
use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, Ordering};
use std::sync::{LazyLock, Mutex, PoisonError};

use super::faults::Resource;
use super::verifier::{IrpOwner, IrpRecord, bugcheck, registry};
use super::{Kernel, irql};
use crate::abi::{
    BOOLEAN, CCHAR, DISPATCH_LEVEL, FALSE, IO_STACK_LOCATION, IO_TYPE_IRP, IRP, KIRQL, NTSTATUS,
    PDRIVER_CANCEL, SL_INVOKE_ON_CANCEL, SL_INVOKE_ON_ERROR, SL_INVOKE_ON_SUCCESS,
    SL_PENDING_RETURNED, STATUS_MORE_PROCESSING_REQUIRED, STATUS_PENDING, TRUE,
};

const IRP_ALIGN: usize = 16;

fn irp_layout(bytes: usize) -> Layout {
    Layout::from_size_align(bytes, IRP_ALIGN).expect("IRP size fits a layout")
}

/// The first stack location of an IRP (they follow the IRP header).
///
/// # Safety
/// `irp` is a live IRP allocated by [`allocate`].
const unsafe fn stack_base(irp: *mut IRP) -> *mut IO_STACK_LOCATION {
    // SAFETY: the stack locations follow the header in the same allocation.
    unsafe { irp.cast::<u8>().add(size_of::<IRP>()).cast() }
}

fn owner_of(irp: *mut IRP, function: &str) -> IrpOwner {
    match registry().irps.get(&(irp as usize)) {
        Some(record) => record.owner,
        None => bugcheck(
            "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
            format_args!("{function}({irp:p}): not a live IRP (freed or never allocated)"),
        ),
    }
}

fn set_owner(irp: *mut IRP, owner: IrpOwner) {
    if let Some(record) = registry().irps.get_mut(&(irp as usize)) {
        record.owner = owner;
    }
}

pub fn allocate(stack_size: CCHAR, _charge_quota: BOOLEAN) -> *mut IRP {
    irql::require(const { irql::rule_of("IoAllocateIrp") });
    let Ok(count @ 1..) = usize::try_from(stack_size) else {
        bugcheck(
            "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
            format_args!("IoAllocateIrp({stack_size}): an IRP needs at least one stack location"),
        );
    };
    let kernel = Kernel::current();
    if kernel.inner().faults.should_fail(Resource::Irp) {
        return ptr::null_mut();
    }
    let bytes = size_of::<IRP>() + count * size_of::<IO_STACK_LOCATION>();
    // SAFETY: the layout has a non-zero size.
    #[allow(clippy::cast_ptr_alignment, reason = "the layout is 16-byte aligned")]
    let irp = unsafe { alloc_zeroed(irp_layout(bytes)) }.cast::<IRP>();
    if irp.is_null() {
        return irp;
    }
    // SAFETY: `irp` is a fresh zeroed allocation large enough for the header
    // and `count` stack locations.
    unsafe { initialize(irp, bytes, stack_size, 0) };
    kernel.inner().count_allocation(super::Counted::Irp);
    registry().irps.insert(
        irp as usize,
        IrpRecord {
            kernel: kernel.id(),
            owner: IrpOwner::Client,
            bytes,
        },
    );
    irp
}

/// `IoInitializeIrp`: the whole packet zeroed, then the header set up.
///
/// # Safety
/// `irp` points to `bytes` writable bytes holding room for `stack_size`
/// stack locations.
unsafe fn initialize(irp: *mut IRP, bytes: usize, stack_size: CCHAR, allocation_flags: u8) {
    // SAFETY: the caller guarantees `bytes` writable bytes.
    unsafe { irp.cast::<u8>().write_bytes(0, bytes) };
    // SAFETY: as above; the header fits in `bytes`.
    let header = unsafe { &mut *irp };
    header.Type = IO_TYPE_IRP;
    header.Size = u16::try_from(bytes).expect("IRP size fits USHORT");
    header.StackCount = stack_size;
    header.CurrentLocation = stack_size + 1;
    header.AllocationFlags = allocation_flags;
    let count = usize::try_from(stack_size).expect("positive stack size");
    // SAFETY: one past the last stack location of this allocation.
    // SAFETY: `irp` is the allocation the caller describes.
    let base = unsafe { stack_base(irp) };
    // SAFETY: one past the last stack location of this allocation.
    header.Tail.CurrentStackLocation = unsafe { base.add(count) };
}

pub fn free(irp: *mut IRP) {
    if super::verifier::unwinding() {
        return;
    }
    irql::require(const { irql::rule_of("IoFreeIrp") });
    if owner_of(irp, "IoFreeIrp") == IrpOwner::Provider {
        bugcheck(
            "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
            format_args!(
                "IoFreeIrp({irp:p}) while the IRP is still in flight: it must complete first"
            ),
        );
    }
    let record = registry()
        .irps
        .remove(&(irp as usize))
        .expect("checked above");
    // Poison it so that a use after free reads garbage, not a plausible IRP.
    // SAFETY: the IRP was allocated by `allocate` with `record.bytes` bytes
    // and has just left the registry, so nobody frees it again.
    unsafe { irp.cast::<u8>().write_bytes(0xDF, record.bytes) };
    // Its address is not handed out again for a while: a stale pointer to
    // it (a provider's queue entry, a late cancel) then finds no live IRP
    // and bugchecks, rather than a new IRP that happens to share it.
    let evicted = {
        let mut freed = FREED_IRPS.lock().unwrap_or_else(PoisonError::into_inner);
        freed.push_back((irp as usize, record.bytes));
        (freed.len() > FREED_IRPS_KEPT)
            .then(|| freed.pop_front())
            .flatten()
    };
    if let Some((address, bytes)) = evicted {
        // SAFETY: allocated by `allocate` with `bytes` bytes, freed once
        // (it left the registry), and now out of the quarantine.
        unsafe { dealloc(address as *mut u8, irp_layout(bytes)) };
    }
}

/// Freed IRPs kept allocated (and poisoned) before their memory goes back
/// to the host, so that their addresses are not reused at once.
const FREED_IRPS_KEPT: usize = 4096;
static FREED_IRPS: LazyLock<Mutex<VecDeque<(usize, usize)>>> = LazyLock::new(Mutex::default);

pub fn reuse(irp: *mut IRP, status: NTSTATUS) {
    irql::require(const { irql::rule_of("IoReuseIrp") });
    if owner_of(irp, "IoReuseIrp") == IrpOwner::Provider {
        bugcheck(
            "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
            format_args!("IoReuseIrp({irp:p}) while the IRP is still in flight"),
        );
    }
    // SAFETY: the IRP is live (checked against the registry) and owned by the
    // caller.
    let header = unsafe { &mut *irp };
    if header.CancelRoutine.is_some() {
        bugcheck(
            "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
            format_args!("IoReuseIrp({irp:p}) with a cancel routine still set"),
        );
    }
    let (bytes, stack, flags) = (
        usize::from(header.Size),
        header.StackCount,
        header.AllocationFlags,
    );
    // SAFETY: the IRP owns `bytes` bytes with room for its stack.
    unsafe { initialize(irp, bytes, stack, flags) };
    // SAFETY: as above.
    unsafe { (*irp).IoStatus.Status = status };
}

/// `IoSetNextIrpStackLocation` done by the driver an IRP is passed to: it now
/// owns the IRP until it completes it.
///
/// # Safety
/// `irp` is a live IRP.
pub unsafe fn take(irp: *mut IRP, function: &str) {
    // A driver may pass an IRP it was given further down: only liveness is
    // checked here.
    owner_of(irp, function);
    // Raw places only: the client may cancel the IRP meanwhile.
    // SAFETY: live per the registry; the submitter gave it to us.
    let current = unsafe { (*irp).CurrentLocation };
    if current <= 1 {
        bugcheck(
            "NO_MORE_IRP_STACK_LOCATIONS",
            format_args!("{function}: IRP {irp:p} has no stack location left for the callee"),
        );
    }
    // SAFETY: as above.
    unsafe { (*irp).CurrentLocation = current - 1 };
    // SAFETY: as above.
    let location = unsafe { (*irp).Tail.CurrentStackLocation };
    // SAFETY: stays within the stack: CurrentLocation was >= 2.
    let callee = unsafe { location.sub(1) };
    // SAFETY: live per the registry.
    unsafe { (*irp).Tail.CurrentStackLocation = callee };
    set_owner(irp, IrpOwner::Provider);
}

/// `IoMarkIrpPending` by the owner of the current stack location.
///
/// # Safety
/// `irp` is a live IRP owned by the caller (after [`take`]).
pub unsafe fn mark_pending(irp: *mut IRP) {
    // SAFETY: a live IRP per the contract.
    let location = unsafe { (*irp).Tail.CurrentStackLocation };
    // SAFETY: the current location is within the stack after `take`.
    unsafe { (*location).Control |= SL_PENDING_RETURNED };
}

/// `IoSetCancelRoutine`: an interlocked exchange on the IRP's field.
///
/// # Safety
/// `irp` is a live IRP.
pub unsafe fn set_cancel_routine(irp: *mut IRP, routine: PDRIVER_CANCEL) -> PDRIVER_CANCEL {
    // SAFETY: the field is pointer-sized and aligned; every access to it goes
    // through this atomic exchange.
    let field = unsafe { addr_of_mut!((*irp).CancelRoutine) };
    // SAFETY: as above.
    let field = unsafe { AtomicPtr::<()>::from_ptr(field.cast()) };
    let new = routine.map_or(ptr::null_mut(), |f| f as *mut ());
    let old = field.swap(new, Ordering::AcqRel);
    // SAFETY: only cancel routines (or NULL) are ever stored in the field.
    unsafe { core::mem::transmute::<*mut (), PDRIVER_CANCEL>(old) }
}

/// `Irp->Cancel`, which `IoCancelIrp` sets while the IRP's owner may be
/// completing it on another thread (a race the kernel tolerates): every
/// access to it is atomic, and nothing takes a reference to the whole IRP
/// while it may be cancelled.
///
/// # Safety
/// `irp` is a live IRP, live for `'a`.
pub unsafe fn cancel_flag<'a>(irp: *mut IRP) -> &'a AtomicU8 {
    // SAFETY: a field of a live IRP (no reference is made).
    let field = unsafe { addr_of_mut!((*irp).Cancel) };
    // SAFETY: a byte of a live IRP; every access to it goes through this
    // atomic.
    unsafe { AtomicU8::from_ptr(field) }
}

static CANCEL_LOCK: AtomicBool = AtomicBool::new(false);

pub fn acquire_cancel_lock() -> KIRQL {
    let old = irql::raise_raw(DISPATCH_LEVEL);
    while CANCEL_LOCK.swap(true, Ordering::Acquire) {
        std::thread::yield_now();
    }
    old
}

pub fn release_cancel_lock(old: KIRQL) {
    CANCEL_LOCK.store(false, Ordering::Release);
    irql::lower_raw(old);
}

pub fn cancel(irp: *mut IRP) -> BOOLEAN {
    irql::require(const { irql::rule_of("IoCancelIrp") });
    owner_of(irp, "IoCancelIrp");
    let old = acquire_cancel_lock();
    // SAFETY: live per the registry; `Cancel` is only set under the
    // cancel lock.
    unsafe { cancel_flag(irp) }.store(TRUE, Ordering::SeqCst);
    // SAFETY: live IRP.
    let routine = unsafe { set_cancel_routine(irp, None) };
    if let Some(routine) = routine {
        // SAFETY: live IRP; the cancel routine releases the lock with it.
        unsafe { (*irp).CancelIrql = old };
        // SAFETY: the routine was set by the IRP's current owner, which
        // keeps it valid while the IRP is pending; it is called with the
        // cancel lock held, as the contract says.
        unsafe { routine(ptr::null_mut(), irp) };
        TRUE
    } else {
        release_cancel_lock(old);
        FALSE
    }
}

pub fn complete(irp: *mut IRP) {
    irql::require(const { irql::rule_of("IoCompleteRequest") });
    if owner_of(irp, "IoCompleteRequest") != IrpOwner::Provider {
        bugcheck(
            "MULTIPLE_IRP_COMPLETE_REQUESTS",
            format_args!("IoCompleteRequest({irp:p}): the IRP is not in flight (completed twice?)"),
        );
    }
    // The IRP is reached through raw places only: `IoCancelIrp` may set
    // its `Cancel` flag from another thread meanwhile.
    // SAFETY: live and owned by the completing driver.
    if unsafe { (*irp).IoStatus.Status } == STATUS_PENDING {
        bugcheck(
            "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
            format_args!("IoCompleteRequest({irp:p}) with STATUS_PENDING"),
        );
    }
    // SAFETY: a field of a live IRP (no reference is made).
    let field = unsafe { addr_of_mut!((*irp).CancelRoutine) };
    // SAFETY: pointer-sized and aligned; every access to it is atomic.
    let field = unsafe { AtomicPtr::<()>::from_ptr(field.cast()) };
    if !field.load(Ordering::Acquire).is_null() {
        bugcheck(
            "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
            format_args!("IoCompleteRequest({irp:p}) with a cancel routine still set"),
        );
    }
    // SAFETY: live IRP.
    let stack_count = unsafe { (*irp).StackCount };
    set_owner(irp, IrpOwner::Client);
    // The I/O manager's loop: from the current location up, each location's
    // completion routine runs (if its Control bits ask for this outcome) with
    // the IRP's current location already advanced past it.
    // SAFETY (every access in the loop): the IRP stays live while no routine
    // has freed it; a routine that frees it must return
    // STATUS_MORE_PROCESSING_REQUIRED (checked below), which ends the loop.
    loop {
        // SAFETY: as above.
        let current_location = unsafe { (*irp).CurrentLocation };
        if current_location > stack_count {
            break;
        }
        // SAFETY: as above.
        let location = unsafe { (*irp).Tail.CurrentStackLocation };
        // SAFETY: as above.
        unsafe { (*irp).CurrentLocation = current_location + 1 };
        // SAFETY: at most one past the last location of this IRP's stack.
        let next_location = unsafe { location.add(1) };
        // SAFETY: as above.
        unsafe { (*irp).Tail.CurrentStackLocation = next_location };
        // SAFETY: `location` is within this IRP's stack, which nobody else
        // touches during completion.
        let here = unsafe { &mut *location };
        let pending_returned = here.Control & SL_PENDING_RETURNED;
        // SAFETY: as above.
        unsafe { (*irp).PendingReturned = pending_returned };
        // SAFETY: as above.
        let status = unsafe { (*irp).IoStatus.Status };
        // SAFETY: as above.
        let cancelled = unsafe { cancel_flag(irp) }.load(Ordering::SeqCst) != FALSE;
        let success = status >= 0;
        let wanted = (success && here.Control & SL_INVOKE_ON_SUCCESS != 0)
            || (!success && here.Control & SL_INVOKE_ON_ERROR != 0)
            || (cancelled && here.Control & SL_INVOKE_ON_CANCEL != 0);
        let routine = here.CompletionRoutine;
        let context = here.Context;
        // ZeroIrpStackLocation keeps nothing a lower driver wrote.
        here.Control = 0;
        here.CompletionRoutine = None;
        here.Context = ptr::null_mut();
        let next = current_location + 1;
        let device = if next <= stack_count {
            // SAFETY: within the stack.
            unsafe { (*next_location).DeviceObject }
        } else {
            ptr::null_mut()
        };
        if let (true, Some(routine)) = (wanted, routine) {
            let result = irql::run_as_callback("a completion routine", || {
                // SAFETY: the routine and context were installed by the owner
                // of that location, which keeps them valid until this call.
                unsafe { routine(device, irp, context) }
            });
            if result == STATUS_MORE_PROCESSING_REQUIRED {
                // Below the top, the routine's driver owns the IRP again and
                // will complete it once more; at the top, the allocator owns
                // it (and may already have freed or reused it).
                if current_location < stack_count {
                    set_owner(irp, IrpOwner::Provider);
                }
                return;
            }
            if !registry().irps.contains_key(&(irp as usize)) {
                bugcheck(
                    "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
                    format_args!(
                        "a completion routine freed IRP {irp:p} but returned {result:#x}, not STATUS_MORE_PROCESSING_REQUIRED"
                    ),
                );
            }
        } else if pending_returned != 0 && next <= stack_count {
            // SAFETY: within the stack.
            unsafe { (*next_location).Control |= SL_PENDING_RETURNED };
        }
    }
    bugcheck(
        "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
        format_args!(
            "IRP {irp:p} completed past its last stack location: the completion routine of a driver-allocated IRP must return STATUS_MORE_PROCESSING_REQUIRED"
        ),
    );
}
