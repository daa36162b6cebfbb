//! The emulator's implementations of the functions the kernel backend
//! imports from `ntoskrnl.exe` and `netio.sys`, with the same names and
//! signatures, plus what the provider side of an IRP uses.
//!
//! # Safety
//! Every function has the contract of the kernel function it stands for;
//! the emulator checks what it can and bugchecks (panics) on a violation.
#![allow(
    non_snake_case,
    clippy::missing_safety_doc,
    clippy::not_unsafe_ptr_arg_deref
)]

use core::ffi::c_void;

use super::{device, event, irp, irql, mdl, pool, provider, spinlock, timer, version};
use crate::abi::{
    BOOLEAN, CCHAR, DEVICE_OBJECT, EVENT_TYPE, IO_WORKITEM, IRP, KDPC, KEVENT, KIRQL,
    KPROCESSOR_MODE, KSPIN_LOCK, KTIMER, LONG, MDL, MEMORY_CACHING_TYPE, MM_PAGE_PRIORITY,
    NTSTATUS, PIO_COMPLETION_ROUTINE, PIO_WORKITEM_ROUTINE, PKDEFERRED_ROUTINE, POOL_TYPE,
    RTL_OSVERSIONINFOW, SIZE_T, ULONG, WORK_QUEUE_TYPE, WSK_CLIENT_NPI, WSK_PROVIDER_NPI,
    WSK_REGISTRATION,
};

#[must_use]
/// `IoAllocateIrp`.
pub unsafe fn IoAllocateIrp(StackSize: CCHAR, ChargeQuota: BOOLEAN) -> *mut IRP {
    irp::allocate(StackSize, ChargeQuota)
}
/// `IoFreeIrp`.
pub unsafe fn IoFreeIrp(Irp: *mut IRP) {
    irp::free(Irp);
}
/// `IoReuseIrp`.
pub unsafe fn IoReuseIrp(Irp: *mut IRP, Iostatus: NTSTATUS) {
    irp::reuse(Irp, Iostatus);
}
/// `IoCancelIrp`.
pub unsafe fn IoCancelIrp(Irp: *mut IRP) -> BOOLEAN {
    irp::cancel(Irp)
}
/// `IofCompleteRequest`.
pub unsafe fn IofCompleteRequest(Irp: *mut IRP, _PriorityBoost: i8) {
    irp::complete(Irp);
}
/// `IoAcquireCancelSpinLock`.
pub unsafe fn IoAcquireCancelSpinLock(Irql: *mut KIRQL) {
    let old = irp::acquire_cancel_lock();
    // SAFETY: the caller's output location.
    unsafe { Irql.write(old) };
}
/// `IoReleaseCancelSpinLock`.
pub unsafe fn IoReleaseCancelSpinLock(Irql: KIRQL) {
    irp::release_cancel_lock(Irql);
}
/// `IoAllocateMdl`.
pub unsafe fn IoAllocateMdl(
    VirtualAddress: *mut c_void,
    Length: ULONG,
    SecondaryBuffer: BOOLEAN,
    _ChargeQuota: BOOLEAN,
    Irp: *mut IRP,
) -> *mut MDL {
    mdl::allocate(VirtualAddress, Length, SecondaryBuffer, Irp)
}
/// `IoFreeMdl`.
pub unsafe fn IoFreeMdl(Mdl: *mut MDL) {
    mdl::free(Mdl);
}
/// `MmBuildMdlForNonPagedPool`.
pub unsafe fn MmBuildMdlForNonPagedPool(MemoryDescriptorList: *mut MDL) {
    mdl::build_for_non_paged_pool(MemoryDescriptorList);
}
/// `MmMapLockedPagesSpecifyCache` (kernel-mode mappings only).
#[must_use]
pub unsafe fn MmMapLockedPagesSpecifyCache(
    MemoryDescriptorList: *mut MDL,
    AccessMode: KPROCESSOR_MODE,
    _CacheType: MEMORY_CACHING_TYPE,
    RequestedAddress: *mut c_void,
    _BugCheckOnFailure: ULONG,
    _Priority: MM_PAGE_PRIORITY,
) -> *mut c_void {
    // SAFETY: forwarded contract.
    unsafe { mdl::map_locked(MemoryDescriptorList, AccessMode, RequestedAddress) }
}
#[must_use]
/// `ExAllocatePoolWithTag`.
pub unsafe fn ExAllocatePoolWithTag(
    PoolType: POOL_TYPE,
    NumberOfBytes: SIZE_T,
    Tag: ULONG,
) -> *mut c_void {
    pool::allocate(PoolType, NumberOfBytes, Tag)
}
/// `ExFreePoolWithTag`.
pub unsafe fn ExFreePoolWithTag(P: *mut c_void, Tag: ULONG) {
    pool::free(P, Tag);
}
/// `KeInitializeEvent`.
pub unsafe fn KeInitializeEvent(Event: *mut KEVENT, Type: EVENT_TYPE, State: BOOLEAN) {
    // SAFETY: forwarded contract.
    unsafe { event::initialize(Event, Type, State) };
}
/// `KeSetEvent`.
pub unsafe fn KeSetEvent(Event: *mut KEVENT, _Increment: LONG, _Wait: BOOLEAN) -> LONG {
    // SAFETY: forwarded contract.
    unsafe { event::set(Event) }
}
/// `KeClearEvent`.
pub unsafe fn KeClearEvent(Event: *mut KEVENT) {
    // SAFETY: forwarded contract.
    unsafe { event::clear(Event) };
}
/// `KeReadStateEvent`.
pub unsafe fn KeReadStateEvent(Event: *mut KEVENT) -> LONG {
    // SAFETY: forwarded contract.
    unsafe { event::read(Event) }
}
/// `KeWaitForSingleObject`.
pub unsafe fn KeWaitForSingleObject(
    Object: *mut c_void,
    _WaitReason: i32,
    _WaitMode: KPROCESSOR_MODE,
    _Alertable: BOOLEAN,
    Timeout: *const i64,
) -> NTSTATUS {
    // SAFETY: forwarded contract.
    unsafe { event::wait(Object, Timeout) }
}
/// `RtlGetVersion`.
pub unsafe fn RtlGetVersion(lpVersionInformation: *mut RTL_OSVERSIONINFOW) -> NTSTATUS {
    // SAFETY: forwarded contract.
    unsafe { version::get(lpVersionInformation) }
}
/// `WskRegister`.
pub unsafe fn WskRegister(
    WskClientNpi: *mut WSK_CLIENT_NPI,
    WskRegistration: *mut WSK_REGISTRATION,
) -> NTSTATUS {
    // SAFETY: forwarded contract.
    unsafe { provider::register(WskClientNpi, WskRegistration) }
}
/// `WskDeregister`.
pub unsafe fn WskDeregister(WskRegistration: *mut WSK_REGISTRATION) {
    // SAFETY: forwarded contract.
    unsafe { provider::deregister(WskRegistration) };
}
/// `WskCaptureProviderNPI`.
pub unsafe fn WskCaptureProviderNPI(
    WskRegistration: *mut WSK_REGISTRATION,
    WaitTimeout: ULONG,
    WskProviderNpi: *mut WSK_PROVIDER_NPI,
) -> NTSTATUS {
    // SAFETY: forwarded contract.
    unsafe { provider::capture(WskRegistration, WaitTimeout, WskProviderNpi) }
}
/// `WskReleaseProviderNPI`.
pub unsafe fn WskReleaseProviderNPI(WskRegistration: *mut WSK_REGISTRATION) {
    // SAFETY: forwarded contract.
    unsafe { provider::release(WskRegistration) };
}

/// `KeQueryInterruptTime`: 100 ns units on a monotonic clock.
#[must_use]
pub fn interrupt_time() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let elapsed = START.get_or_init(std::time::Instant::now).elapsed();
    u64::try_from(elapsed.as_nanos() / 100).unwrap_or(u64::MAX)
}

/// `KeInitializeTimer`.
pub unsafe fn KeInitializeTimer(Timer: *mut KTIMER) {
    // SAFETY: forwarded contract.
    unsafe { timer::initialize_timer(Timer) };
}
/// `KeSetTimer`.
pub unsafe fn KeSetTimer(Timer: *mut KTIMER, DueTime: i64, Dpc: *mut KDPC) -> BOOLEAN {
    // SAFETY: forwarded contract.
    unsafe { timer::set_timer(Timer, DueTime, Dpc) }
}
/// `KeCancelTimer`.
pub unsafe fn KeCancelTimer(Timer: *mut KTIMER) -> BOOLEAN {
    timer::cancel_timer(Timer)
}
/// `KeInitializeDpc`.
pub unsafe fn KeInitializeDpc(
    Dpc: *mut KDPC,
    DeferredRoutine: PKDEFERRED_ROUTINE,
    DeferredContext: *mut c_void,
) {
    // SAFETY: forwarded contract.
    unsafe { timer::initialize_dpc(Dpc, DeferredRoutine, DeferredContext) };
}

/// `KeFlushQueuedDpcs`.
pub unsafe fn KeFlushQueuedDpcs() {
    timer::flush_queued_dpcs();
}

/// `YieldProcessor`, for a spin that waits on another processor.
///
/// On Windows the routine spun on runs at `DISPATCH_LEVEL`, so it cannot
/// be preempted and ends in a few instructions; here it is a host thread
/// the scheduler may have set aside, so the spinning thread yields to it.
pub fn yield_processor() {
    std::thread::yield_now();
}

/// `KeGetCurrentIrql`.
#[must_use]
pub fn current_irql() -> KIRQL {
    irql::current()
}

/// `KeAcquireSpinLockRaiseToDpc`: raises to `DISPATCH_LEVEL`, then spins
/// until the lock is free.
pub unsafe fn KeAcquireSpinLockRaiseToDpc(SpinLock: *mut KSPIN_LOCK) -> KIRQL {
    spinlock::acquire(SpinLock)
}
/// `KeReleaseSpinLock`: frees the lock and returns to `NewIrql`.
pub unsafe fn KeReleaseSpinLock(SpinLock: *mut KSPIN_LOCK, NewIrql: KIRQL) {
    spinlock::release(SpinLock, NewIrql);
}

/// `IoSetCompletionRoutineEx`: the routine runs through a wrapper that
/// holds a reference on the device until the routine has returned.
pub unsafe fn IoSetCompletionRoutineEx(
    DeviceObject: *mut DEVICE_OBJECT,
    Irp: *mut IRP,
    CompletionRoutine: PIO_COMPLETION_ROUTINE,
    Context: *mut c_void,
    InvokeOnSuccess: BOOLEAN,
    InvokeOnError: BOOLEAN,
    InvokeOnCancel: BOOLEAN,
) -> NTSTATUS {
    // SAFETY: forwarded contract.
    unsafe {
        device::set_completion_routine_ex(
            DeviceObject,
            Irp,
            CompletionRoutine,
            Context,
            InvokeOnSuccess,
            InvokeOnError,
            InvokeOnCancel,
        )
    }
}
/// `IoAllocateWorkItem`.
pub unsafe fn IoAllocateWorkItem(DeviceObject: *mut DEVICE_OBJECT) -> *mut IO_WORKITEM {
    device::allocate_work_item(DeviceObject)
}
/// `IoQueueWorkItem`: the routine runs at `PASSIVE_LEVEL` on a worker
/// thread, holding a reference on the device.
pub unsafe fn IoQueueWorkItem(
    IoWorkItem: *mut IO_WORKITEM,
    WorkerRoutine: PIO_WORKITEM_ROUTINE,
    QueueType: WORK_QUEUE_TYPE,
    Context: *mut c_void,
) {
    device::queue_work_item(IoWorkItem, WorkerRoutine, QueueType, Context);
}
/// `IoFreeWorkItem`.
pub unsafe fn IoFreeWorkItem(IoWorkItem: *mut IO_WORKITEM) {
    device::free_work_item(IoWorkItem);
}
/// `ObfReferenceObject` (device objects).
pub unsafe fn ObfReferenceObject(Object: *mut c_void) -> isize {
    device::reference_object(Object)
}
/// `ObfDereferenceObject` (device objects).
pub unsafe fn ObfDereferenceObject(Object: *mut c_void) -> isize {
    device::dereference_object(Object)
}
