//! The backend: the functions the library calls below its kernel-object
//! layer, with their C names and signatures.
//!
//! In the Windows kernel they are imported from `ntoskrnl.exe` and
//! `netio.sys` with `raw-dylib` (no WDK import libraries needed); on a host
//! they are the emulator's implementations of the very same functions.

#[cfg(not(wsk_emulator))]
pub use self::windows::*;
#[cfg(wsk_emulator)]
pub use crate::emulator::exports::*;

#[cfg(not(wsk_emulator))]
#[allow(non_snake_case, clippy::missing_safety_doc)]
mod windows {
    use crate::abi::{
        BOOLEAN, CCHAR, DEVICE_OBJECT, EVENT_TYPE, IO_WORKITEM, IRP, KDPC, KEVENT, KIRQL,
        KPROCESSOR_MODE, KSPIN_LOCK, KTIMER, LONG, MDL, MEMORY_CACHING_TYPE, MM_PAGE_PRIORITY,
        NTSTATUS, PIO_COMPLETION_ROUTINE, PIO_WORKITEM_ROUTINE, PKDEFERRED_ROUTINE, POOL_TYPE,
        RTL_OSVERSIONINFOW, SIZE_T, SharedInterruptTime, ULONG, WORK_QUEUE_TYPE, WSK_CLIENT_NPI,
        WSK_PROVIDER_NPI, WSK_REGISTRATION,
    };
    use core::ffi::c_void;

    #[link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")]
    unsafe extern "system" {
        pub fn IoAllocateIrp(StackSize: CCHAR, ChargeQuota: BOOLEAN) -> *mut IRP;
        pub fn IoFreeIrp(Irp: *mut IRP);
        pub fn IoReuseIrp(Irp: *mut IRP, Iostatus: NTSTATUS);
        pub fn IoCancelIrp(Irp: *mut IRP) -> BOOLEAN;
        pub fn IoAllocateMdl(
            VirtualAddress: *mut c_void,
            Length: ULONG,
            SecondaryBuffer: BOOLEAN,
            ChargeQuota: BOOLEAN,
            Irp: *mut IRP,
        ) -> *mut MDL;
        pub fn IoFreeMdl(Mdl: *mut MDL);
        pub fn MmBuildMdlForNonPagedPool(MemoryDescriptorList: *mut MDL);
        pub fn MmMapLockedPagesSpecifyCache(
            MemoryDescriptorList: *mut MDL,
            AccessMode: KPROCESSOR_MODE,
            CacheType: MEMORY_CACHING_TYPE,
            RequestedAddress: *mut c_void,
            BugCheckOnFailure: ULONG,
            Priority: MM_PAGE_PRIORITY,
        ) -> *mut c_void;
        pub fn ExAllocatePoolWithTag(
            PoolType: POOL_TYPE,
            NumberOfBytes: SIZE_T,
            Tag: ULONG,
        ) -> *mut c_void;
        pub fn ExFreePoolWithTag(P: *mut c_void, Tag: ULONG);
        pub fn KeInitializeEvent(Event: *mut KEVENT, Type: EVENT_TYPE, State: BOOLEAN);
        pub fn KeSetEvent(Event: *mut KEVENT, Increment: LONG, Wait: BOOLEAN) -> LONG;
        pub fn KeClearEvent(Event: *mut KEVENT);
        pub fn KeReadStateEvent(Event: *mut KEVENT) -> LONG;
        pub fn KeInitializeTimer(Timer: *mut KTIMER);
        pub fn KeSetTimer(Timer: *mut KTIMER, DueTime: i64, Dpc: *mut KDPC) -> BOOLEAN;
        pub fn KeCancelTimer(Timer: *mut KTIMER) -> BOOLEAN;
        pub fn KeFlushQueuedDpcs();
        pub fn IoSetCompletionRoutineEx(
            DeviceObject: *mut DEVICE_OBJECT,
            Irp: *mut IRP,
            CompletionRoutine: PIO_COMPLETION_ROUTINE,
            Context: *mut c_void,
            InvokeOnSuccess: BOOLEAN,
            InvokeOnError: BOOLEAN,
            InvokeOnCancel: BOOLEAN,
        ) -> NTSTATUS;
        pub fn IoAllocateWorkItem(DeviceObject: *mut DEVICE_OBJECT) -> *mut IO_WORKITEM;
        pub fn IoQueueWorkItem(
            IoWorkItem: *mut IO_WORKITEM,
            WorkerRoutine: PIO_WORKITEM_ROUTINE,
            QueueType: WORK_QUEUE_TYPE,
            Context: *mut c_void,
        );
        pub fn IoFreeWorkItem(IoWorkItem: *mut IO_WORKITEM);
        pub fn ObfReferenceObject(Object: *mut c_void) -> isize;
        pub fn ObfDereferenceObject(Object: *mut c_void) -> isize;
        pub fn KeAcquireSpinLockRaiseToDpc(SpinLock: *mut KSPIN_LOCK) -> KIRQL;
        pub fn KeReleaseSpinLock(SpinLock: *mut KSPIN_LOCK, NewIrql: KIRQL);
        pub fn KeInitializeDpc(
            Dpc: *mut KDPC,
            DeferredRoutine: PKDEFERRED_ROUTINE,
            DeferredContext: *mut c_void,
        );
        pub fn KeWaitForSingleObject(
            Object: *mut c_void,
            WaitReason: i32,
            WaitMode: KPROCESSOR_MODE,
            Alertable: BOOLEAN,
            Timeout: *const i64,
        ) -> NTSTATUS;
        pub fn RtlGetVersion(lpVersionInformation: *mut RTL_OSVERSIONINFOW) -> NTSTATUS;
    }

    #[link(name = "netio.sys", kind = "raw-dylib", modifiers = "+verbatim")]
    unsafe extern "system" {
        pub fn WskRegister(
            WskClientNpi: *mut WSK_CLIENT_NPI,
            WskRegistration: *mut WSK_REGISTRATION,
        ) -> NTSTATUS;
        pub fn WskDeregister(WskRegistration: *mut WSK_REGISTRATION);
        pub fn WskCaptureProviderNPI(
            WskRegistration: *mut WSK_REGISTRATION,
            WaitTimeout: ULONG,
            WskProviderNpi: *mut WSK_PROVIDER_NPI,
        ) -> NTSTATUS;
        pub fn WskReleaseProviderNPI(WskRegistration: *mut WSK_REGISTRATION);
    }

    /// `YieldProcessor`: an inline in wdm.h (`pause`), for a spin that
    /// waits on another processor.
    pub fn yield_processor() {
        core::hint::spin_loop();
    }

    /// `KeGetCurrentIrql`: an inline in wdm.h that reads CR8 on x64.
    #[must_use]
    pub fn current_irql() -> KIRQL {
        let cr8: u64;
        // SAFETY: reading CR8 has no side effects and is permitted at every
        // IRQL in kernel mode, which is where this backend runs.
        unsafe {
            core::arch::asm!("mov {}, cr8", out(reg) cr8, options(nomem, nostack, preserves_flags));
        }
        #[allow(clippy::cast_possible_truncation)]
        let irql = cr8 as KIRQL;
        irql
    }

    /// `KeQueryInterruptTime`: an inline in wdm.h that reads
    /// `KUSER_SHARED_DATA.InterruptTime` on x64, in 100 ns units since boot.
    ///
    /// Not `KeQueryPerformanceCounter`: that is documented as a `hal.dll`
    /// export, so importing it from `ntoskrnl.exe` is not guaranteed to
    /// resolve on the Windows versions the library supports, and Wine 8's
    /// `ntoskrnl.exe` lacks it (the first call aborts the driver host).
    #[must_use]
    pub fn interrupt_time() -> u64 {
        let time: u64;
        // SAFETY: KUSER_SHARED_DATA is mapped read-only in every kernel
        // address space and readable at every IRQL; the 64-bit read of
        // LowPart and High1Time is atomic on x64, as wdm.h relies on. A
        // plain `mov` from memory, which Wine's ntoskrnl emulates for this
        // page when drivers run in user mode.
        unsafe {
            core::arch::asm!(
                "mov {time}, qword ptr [{address}]",
                time = out(reg) time,
                address = in(reg) SharedInterruptTime,
                options(nostack, readonly, preserves_flags),
            );
        }
        time
    }
}
