//! The emulator's IRQL table: every function the library calls has its
//! rule (Microsoft's highest IRQL for it) in `IRQL_RULES`, and calling it
//! one level above bugchecks with `IRQL_NOT_LESS_OR_EQUAL`, naming it.
//!
//! The WSK socket functions (`WskBind` and the rest) are dispatch-table
//! entries: a bugcheck inside one cannot unwind, so they all share one
//! check (`sockets::dispatch::require_irql`, which reads this table) and
//! `WskBind` is tripped in a child process
//! (`emulator_sockets::a_socket_call_above_dispatch_level_bugchecks`).

mod support;

use core::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use support::{expect_bugcheck_in_child, in_fatal_child};
use wsk::Irp;
use wsk::abi::{
    DEVICE_OBJECT, DISPATCH_LEVEL, IRP, KEVENT, KIRQL, NTSTATUS, NonPagedPoolNx, PASSIVE_LEVEL,
    STATUS_MORE_PROCESSING_REQUIRED, STATUS_SUCCESS,
};
use wsk::emulator::io;
use wsk::emulator::{Device, IRQL_RULES, Kernel, exports, irql};

/// The provider's dispatch-table functions, in the table's order (name
/// resolution's too: `extern "system"`, so a bugcheck inside one aborts,
/// and tests/names.rs trips them in a child process).
const SOCKET_FUNCTIONS: &[&str] = &[
    "WskGetAddressInfo",
    "WskFreeAddressInfo",
    "WskGetNameInfo",
    "WskSocket",
    "WskSocketConnect",
    "WskControlSocket",
    "WskBind",
    "WskAccept",
    "WskSendTo",
    "WskReceiveFrom",
    "WskConnect",
    "WskConnectEx",
    "WskSend",
    "WskReceive",
    "WskDisconnect",
    "WskGetLocalAddress",
    "WskGetRemoteAddress",
    "WskCloseSocket",
    "WskRelease",
];

/// Calls `function`'s export (with arguments it never reaches: the IRQL
/// check comes first), or returns `false` for the socket functions.
#[allow(
    clippy::multiple_unsafe_ops_per_block,
    reason = "one argument covers every arm: each call stops at its IRQL check"
)]
fn call(function: &str) -> bool {
    let null = ptr::null_mut();
    // SAFETY: every call below bugchecks on its IRQL check before it
    // touches an argument.
    unsafe {
        match function {
            "ExAllocatePoolWithTag" => {
                let _ = exports::ExAllocatePoolWithTag(
                    NonPagedPoolNx,
                    16,
                    u32::from_le_bytes(*b"Test"),
                );
            }
            "ExFreePoolWithTag" => exports::ExFreePoolWithTag(null, 1),
            "IoAllocateIrp" => {
                let _ = exports::IoAllocateIrp(1, 0);
            }
            "IoFreeIrp" => exports::IoFreeIrp(null.cast()),
            "IoReuseIrp" => exports::IoReuseIrp(null.cast(), 0),
            "IoCancelIrp" => {
                let _ = exports::IoCancelIrp(null.cast());
            }
            "IoCompleteRequest" => exports::IofCompleteRequest(null.cast(), 0),
            "IoAllocateMdl" => {
                let _ = exports::IoAllocateMdl(null, 16, 0, 0, null.cast());
            }
            "IoFreeMdl" => exports::IoFreeMdl(null.cast()),
            "MmBuildMdlForNonPagedPool" => exports::MmBuildMdlForNonPagedPool(null.cast()),
            "MmMapLockedPagesSpecifyCache" => {
                let _ = exports::MmMapLockedPagesSpecifyCache(null.cast(), 0, 1, null, 0, 16);
            }
            "KeInitializeEvent" => exports::KeInitializeEvent(null.cast(), 0, 0),
            "KeSetEvent" => {
                let _ = exports::KeSetEvent(null.cast(), 0, 0);
            }
            "KeClearEvent" => exports::KeClearEvent(null.cast()),
            "KeReadStateEvent" => {
                let _ = exports::KeReadStateEvent(null.cast());
            }
            "KeWaitForSingleObject (zero timeout)" => {
                let zero = 0_i64;
                let _ = exports::KeWaitForSingleObject(null, 0, 0, 0, &raw const zero);
            }
            "KeWaitForSingleObject" => {
                let _ = exports::KeWaitForSingleObject(null, 0, 0, 0, ptr::null());
            }
            "KeInitializeDpc" => exports::KeInitializeDpc(null.cast(), None, null),
            "KeInitializeTimer" => exports::KeInitializeTimer(null.cast()),
            "KeSetTimer" => {
                let _ = exports::KeSetTimer(null.cast(), -1, null.cast());
            }
            "KeCancelTimer" => {
                let _ = exports::KeCancelTimer(null.cast());
            }
            "KeFlushQueuedDpcs" => exports::KeFlushQueuedDpcs(),
            "KeAcquireSpinLockRaiseToDpc" => {
                let mut lock = 0;
                let _ = exports::KeAcquireSpinLockRaiseToDpc(&raw mut lock);
            }
            "RtlGetVersion" => {
                let _ = exports::RtlGetVersion(null.cast());
            }
            "IoSetCompletionRoutineEx" => {
                let _ = exports::IoSetCompletionRoutineEx(
                    null.cast(),
                    null.cast(),
                    None,
                    null,
                    1,
                    1,
                    1,
                );
            }
            "IoAllocateWorkItem" => {
                let _ = exports::IoAllocateWorkItem(null.cast());
            }
            "IoQueueWorkItem" => exports::IoQueueWorkItem(null.cast(), None, 1, null),
            "IoFreeWorkItem" => exports::IoFreeWorkItem(null.cast()),
            "ObfReferenceObject" => {
                let _ = exports::ObfReferenceObject(null);
            }
            "ObfDereferenceObject" => {
                let _ = exports::ObfDereferenceObject(null);
            }
            "WskRegister" => {
                let _ = exports::WskRegister(ptr::null_mut(), null.cast());
            }
            "WskDeregister" => exports::WskDeregister(null.cast()),
            "WskCaptureProviderNPI (WSK_NO_WAIT)" => {
                let _ = exports::WskCaptureProviderNPI(null.cast(), 0, null.cast());
            }
            "WskCaptureProviderNPI" => {
                let _ = exports::WskCaptureProviderNPI(null.cast(), 1000, null.cast());
            }
            "WskReleaseProviderNPI" => exports::WskReleaseProviderNPI(null.cast()),

            other if SOCKET_FUNCTIONS.contains(&other) => return false,
            other => panic!("no call for {other}: add one"),
        }
    }
    true
}

#[test]
fn every_function_above_its_irql_bugchecks_by_the_table() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut tripped = 0;
    let mut in_child = Vec::new();
    for rule in IRQL_RULES {
        let above: KIRQL = rule.max + 1;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            irql::run_at(above, || call(rule.function))
        }));
        let message = match outcome {
            Ok(false) => {
                in_child.push(rule.function);
                continue;
            }
            Ok(true) => panic!("{} at IRQL {above} did not bugcheck", rule.function),
            Err(payload) => payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(ToString::to_string))
                .unwrap_or_default(),
        };
        let name = rule.function.split(' ').next().unwrap();
        assert!(
            message.starts_with("BUGCHECK IRQL_NOT_LESS_OR_EQUAL: ")
                && message.contains(name)
                && message.contains(rule.why),
            "{}: {message}",
            rule.function
        );
        tripped += 1;
    }
    std::panic::set_hook(previous);
    assert_eq!(
        in_child, SOCKET_FUNCTIONS,
        "only the socket functions are left to the child process"
    );
    assert_eq!(tripped, IRQL_RULES.len() - SOCKET_FUNCTIONS.len());
    assert!(
        IRQL_RULES
            .iter()
            .any(|rule| rule.function == "WskBind" && rule.max == DISPATCH_LEVEL),
        "the socket functions have their rule too"
    );
    for function in SOCKET_FUNCTIONS {
        let rule = IRQL_RULES.iter().find(|rule| rule.function == *function);
        let expected = if function.contains("AddressInfo") || function.contains("NameInfo") {
            PASSIVE_LEVEL
        } else {
            DISPATCH_LEVEL
        };
        assert_eq!(
            rule.map(|rule| rule.max),
            Some(expected),
            "{function}: its documented IRQL"
        );
    }
}

/// Waits (wrongly, where this is called) for 1 ms on an event nobody sets.
fn wait_a_millisecond() {
    // SAFETY: an all-zero KEVENT is a valid block for KeInitializeEvent.
    let mut event: KEVENT = unsafe { core::mem::zeroed() };
    // SAFETY: a local event, initialised before use.
    unsafe { exports::KeInitializeEvent(&raw mut event, 1, 0) };
    let timeout = -10_000_i64;
    // SAFETY: the initialised local event; the wait is the misuse under
    // test and bugchecks before it blocks.
    let _ = unsafe {
        exports::KeWaitForSingleObject((&raw mut event).cast(), 0, 0, 0, &raw const timeout)
    };
}

unsafe extern "system" fn waiting_routine(
    _device: *mut c_void,
    _irp: *mut IRP,
    _context: *mut c_void,
) -> NTSTATUS {
    wait_a_millisecond();
    STATUS_MORE_PROCESSING_REQUIRED
}

#[test]
fn a_wait_in_a_completion_routine_bugchecks_even_at_passive_level() {
    if !in_fatal_child() {
        expect_bugcheck_in_child(
            "a_wait_in_a_completion_routine_bugchecks_even_at_passive_level",
            &[
                "BUGCHECK DRIVER_VERIFIER_DETECTED_VIOLATION: KeWaitForSingleObject waits in a completion routine",
            ],
        );
        return;
    }
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let irp = Irp::allocate(1).unwrap();
    // SAFETY: the routine takes no context; the IRP is not in flight.
    unsafe { irp.set_completion_routine(waiting_routine, ptr::null_mut()) };
    // SAFETY: the provider takes the IRP and completes it at PASSIVE_LEVEL,
    // where the wait would happen to work; the verifier stops it anyway
    // (the panic cannot unwind through `extern "system"`: the child aborts).
    let handle = unsafe { io::start(irp.as_ptr(), "provider") };
    assert_eq!(irql::current(), 0);
    // SAFETY: owned by the provider.
    unsafe { io::complete(handle, STATUS_SUCCESS, 0) };
    unreachable!("the verifier stops a wait in a completion routine");
}

#[test]
fn a_wait_in_a_dpc_bugchecks_naming_the_dpc() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let (sender, receiver) = mpsc::channel();
    kernel.queue_dpc(move || {
        let outcome = catch_unwind(wait_a_millisecond);
        let message = outcome
            .err()
            .and_then(|payload| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        sender.send(message).unwrap();
    });
    let message = receiver.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        message.starts_with(
            "BUGCHECK DRIVER_VERIFIER_DETECTED_VIOLATION: KeWaitForSingleObject waits in a DPC"
        ),
        "{message}"
    );
}

/// Set once [`stuck_work_item`] has begun.
static WORK_ITEM_BEGAN: AtomicBool = AtomicBool::new(false);

/// A work item routine that never returns: it stands for one still queued
/// or running when its driver unloads.
unsafe extern "system" fn stuck_work_item(_device: *mut DEVICE_OBJECT, _context: *mut c_void) {
    WORK_ITEM_BEGAN.store(true, Ordering::Release);
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
#[should_panic(expected = "BUGCHECK DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS")]
fn unloading_with_a_work_item_queued_bugchecks() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let device = Device::new();
    // SAFETY: a live emulated device.
    let item = unsafe { exports::IoAllocateWorkItem(device.as_ptr()) };
    assert!(!item.is_null());
    // SAFETY: a fresh work item; it is never freed (its routine never
    // returns, which is the misuse under test).
    unsafe { exports::IoQueueWorkItem(item, Some(stuck_work_item), 1, ptr::null_mut()) };
    while !WORK_ITEM_BEGAN.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(1));
    }
    // The driver unloads (its device object goes) with the work item's
    // reference still held.
    drop(device);
}

#[test]
#[should_panic(expected = "BUGCHECK BAD_POOL_CALLER: ExAllocatePoolWithTag with a zero tag")]
fn allocating_pool_with_a_zero_tag_bugchecks() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    // SAFETY: the zero tag is the misuse under test; nothing is allocated.
    let _ = unsafe { exports::ExAllocatePoolWithTag(NonPagedPoolNx, 16, 0) };
}

#[test]
#[should_panic(expected = "not an allocated pool block (double free or foreign pointer)")]
fn freeing_pool_twice_bugchecks() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let tag = u32::from_le_bytes(*b"Twce");
    // SAFETY: a valid non-paged allocation with a non-zero tag.
    let block = unsafe { exports::ExAllocatePoolWithTag(NonPagedPoolNx, 16, tag) };
    assert!(!block.is_null());
    // SAFETY: the block just allocated, with its tag.
    unsafe { exports::ExFreePoolWithTag(block, tag) };
    // SAFETY: deliberately a second free: the verifier must stop it first.
    unsafe { exports::ExFreePoolWithTag(block, tag) };
}

#[test]
#[should_panic(expected = "(tag 'Uaf!', 32 bytes) was written at offset 5 after it was freed")]
fn a_write_to_freed_pool_bugchecks_naming_the_block() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let tag = u32::from_le_bytes(*b"Uaf!");
    // SAFETY: a valid non-paged allocation with a non-zero tag.
    let clean = unsafe { exports::ExAllocatePoolWithTag(NonPagedPoolNx, 32, tag) };
    // SAFETY: as above.
    let written = unsafe { exports::ExAllocatePoolWithTag(NonPagedPoolNx, 32, tag) };
    assert!(!clean.is_null() && !written.is_null());
    // SAFETY: the blocks just allocated, with their tag.
    unsafe { exports::ExFreePoolWithTag(clean, tag) };
    // A freed block is poisoned: a use after free reads the pattern.
    // SAFETY: the emulator keeps freed blocks allocated in its quarantine;
    // reading one is the use after free under test.
    assert_eq!(unsafe { clean.cast::<u8>().wrapping_add(3).read() }, 0xDF);
    // Nobody wrote to it: the check passes.
    kernel.check_freed_pool();
    // SAFETY: as above.
    unsafe { exports::ExFreePoolWithTag(written, tag) };
    // SAFETY: still allocated in the quarantine; the write after free is
    // the misuse under test.
    unsafe { written.cast::<u8>().wrapping_add(5).write(1) };
    kernel.check_freed_pool();
}

#[test]
#[should_panic(expected = "dropped with leaks: pool 'Lost': 1 allocation(s), 8 byte(s)")]
fn dropping_a_machine_with_pool_outstanding_bugchecks() {
    let kernel = Kernel::new();
    let enter = kernel.enter();
    std::mem::forget(wsk::PoolBuffer::zeroed(8, wsk::PoolTag::new(*b"Lost")).unwrap());
    drop(enter);
    drop(kernel);
}

#[test]
fn a_machine_expected_to_leak_drops_quietly() {
    let kernel = Kernel::new();
    let enter = kernel.enter();
    std::mem::forget(wsk::PoolBuffer::zeroed(8, wsk::PoolTag::new(*b"Lost")).unwrap());
    kernel.expect_leaks();
    drop(enter);
    drop(kernel);
}
