//! Events, pool, MDLs and IRQL tokens on the emulator, including the
//! verifier's bugchecks for misuse.

use std::thread;
use std::time::{Duration, Instant};

use wsk::abi::{APC_LEVEL, DISPATCH_LEVEL, KEVENT, NotificationEvent, PASSIVE_LEVEL};
use wsk::emulator::{FaultPlan, Kernel, exports, irql};
use wsk::{
    AtMostApc, AtMostDispatch, Error, Event, EventKind, Irql, IrqlTooHigh, Mdl, NtStatus,
    PassiveLevel, PoolBox, PoolBuffer, PoolTag, WaitError,
};

fn passive() -> AtMostApc {
    PassiveLevel::check()
        .expect("test threads start at PASSIVE_LEVEL")
        .at_most_apc()
}

#[test]
fn a_timed_wait_expires_after_its_timeout() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let event = Event::new(EventKind::Notification, false).unwrap();
    let start = Instant::now();
    assert_eq!(
        event.wait(&passive(), Some(Duration::from_millis(60))),
        Err(WaitError::TimedOut)
    );
    assert!(
        start.elapsed() >= Duration::from_millis(60),
        "waited {:?}",
        start.elapsed()
    );
    drop(event);
    kernel.assert_no_leaks();
}

#[test]
fn a_wait_ends_when_another_thread_sets_the_event() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let event = Event::new(EventKind::Synchronization, false).unwrap();
    thread::scope(|scope| {
        scope.spawn(|| {
            thread::sleep(Duration::from_millis(30));
            irql::run_at(DISPATCH_LEVEL, || event.set());
        });
        event
            .wait(&passive(), Some(Duration::from_secs(10)))
            .unwrap();
    });
    assert!(
        !event.is_set(),
        "a synchronization event resets when a wait is satisfied"
    );
    drop(event);
    kernel.assert_no_leaks();
}

#[test]
fn notification_events_stay_set_and_try_wait_does_not_block() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let event = Event::new(EventKind::Notification, true).unwrap();
    let raised = irql::raise(DISPATCH_LEVEL);
    let dispatch = AtMostDispatch::check().unwrap();
    assert!(event.try_wait(&dispatch));
    assert!(
        event.try_wait(&dispatch),
        "a notification event stays signalled"
    );
    event.clear();
    assert!(!event.try_wait(&dispatch));
    drop(raised);
    drop(event);
    kernel.assert_no_leaks();
}

#[test]
#[should_panic(
    expected = "BUGCHECK IRQL_NOT_LESS_OR_EQUAL: KeWaitForSingleObject called at DISPATCH_LEVEL"
)]
fn a_timed_wait_above_apc_level_bugchecks() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let mut event = core::mem::MaybeUninit::<KEVENT>::uninit();
    // SAFETY: a KEVENT on this stack frame, which outlives the wait.
    unsafe { exports::KeInitializeEvent(event.as_mut_ptr(), NotificationEvent, 0) };
    let timeout = -10_000_i64;
    let _raised = irql::raise(DISPATCH_LEVEL);
    // SAFETY: deliberately at DISPATCH_LEVEL: the verifier must stop it.
    unsafe {
        exports::KeWaitForSingleObject(event.as_mut_ptr().cast(), 0, 0, 0, &raw const timeout)
    };
}

#[test]
fn a_wait_checks_the_irql_again_instead_of_trusting_a_copied_token() {
    // A token copied at PASSIVE_LEVEL, then the IRQL raised (as by
    // KeAcquireSpinLock): the wait must refuse, not bugcheck or block.
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let stale = passive();
    let event = Event::new(EventKind::Synchronization, false).unwrap();
    for level in [DISPATCH_LEVEL, 3] {
        irql::run_at(level, || {
            let refused = Err(WaitError::IrqlTooHigh(IrqlTooHigh {
                current: Irql(level),
                required: Irql::APC,
            }));
            assert_eq!(event.wait(&stale, Some(Duration::from_secs(10))), refused);
            assert_eq!(event.wait(&stale, None), refused);
        });
    }
    irql::run_at(DISPATCH_LEVEL, || event.set());
    irql::run_at(DISPATCH_LEVEL, || {
        assert!(event.wait(&stale, None).is_err(), "even when signalled");
    });
    assert!(event.is_set(), "a refused wait takes nothing");
    // At APC_LEVEL and below the same token waits as usual.
    irql::run_at(APC_LEVEL, || assert_eq!(event.wait(&stale, None), Ok(())));
    assert_eq!(
        event.wait(&stale, Some(Duration::from_millis(10))),
        Err(WaitError::TimedOut)
    );
    assert_eq!(
        WaitError::from(IrqlTooHigh {
            current: Irql::DISPATCH,
            required: Irql::APC
        })
        .to_string(),
        "refused to wait: running at DISPATCH_LEVEL, but this needs APC_LEVEL or below"
    );
    drop(event);
    kernel.assert_no_leaks();
}

#[test]
fn irql_tokens_follow_the_current_irql() {
    assert_eq!(Irql::current(), Irql::PASSIVE);
    assert!(PassiveLevel::check().is_ok());
    {
        let _apc = irql::raise(APC_LEVEL);
        assert_eq!(
            PassiveLevel::check().unwrap_err(),
            IrqlTooHigh {
                current: Irql::APC,
                required: Irql::PASSIVE
            }
        );
        assert!(AtMostApc::check().is_ok());
        let _dispatch = irql::raise(DISPATCH_LEVEL);
        assert!(AtMostApc::check().is_err());
        assert!(AtMostDispatch::check().is_ok());
        assert_eq!(
            PassiveLevel::check().unwrap_err().to_string(),
            "running at DISPATCH_LEVEL, but this needs PASSIVE_LEVEL or below"
        );
    }
    assert_eq!(irql::current(), PASSIVE_LEVEL);
}

#[test]
#[should_panic(expected = "IRQL_NOT_GREATER_OR_EQUAL")]
fn raising_to_a_lower_irql_bugchecks() {
    let _dispatch = irql::raise(DISPATCH_LEVEL);
    let _wrong = irql::raise(PASSIVE_LEVEL);
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "assumed PASSIVE_LEVEL but running at DISPATCH_LEVEL")]
fn an_assumed_token_still_asserts_in_debug_builds() {
    let _dispatch = irql::raise(DISPATCH_LEVEL);
    // SAFETY: deliberately wrong: debug builds must catch it.
    let _token = unsafe { PassiveLevel::assume() };
}

#[test]
fn pool_is_accounted_per_tag_until_freed() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let tag = PoolTag::new(*b"Test");
    let first = PoolBuffer::from_slice(b"hello", tag).unwrap();
    let second = PoolBox::new([7_u64; 4], tag).unwrap();
    let usage = kernel.usage().pool_tag(*b"Test");
    assert_eq!((usage.allocations, usage.bytes), (2, 5 + 32));
    assert_eq!(&*first, b"hello");
    assert_eq!(*second, [7; 4]);
    drop(first);
    assert_eq!(kernel.usage().pool_tag(*b"Test").allocations, 1);
    drop(second);
    kernel.assert_no_leaks();
}

#[test]
fn settled_usage_waits_for_a_routine_still_returning() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let block = PoolBox::new(0_u64, PoolTag::new(*b"Test")).unwrap();
    let signalled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = signalled.clone();
    // As a completion routine does: signal the waiter, then free on the way out.
    kernel.queue_dpc(move || {
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        thread::sleep(Duration::from_millis(200));
        drop(block);
    });
    while !signalled.load(std::sync::atomic::Ordering::SeqCst) {
        thread::yield_now();
    }
    let usage = kernel.settled_usage();
    assert_eq!(usage.pool_tag(*b"Test").allocations, 0, "{usage}");
    kernel.assert_no_leaks();
}

#[test]
fn a_leak_is_reported_with_its_tag() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let leaked = PoolBuffer::zeroed(100, PoolTag::new(*b"Leak")).unwrap();
    let report = kernel.usage().to_string();
    assert_eq!(report, "pool 'Leak': 1 allocation(s), 100 byte(s)");
    drop(leaked);
    kernel.assert_no_leaks();
}

#[test]
fn fresh_pool_is_not_zeroed_but_zeroed_buffers_are() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let buffer = PoolBuffer::zeroed(64, PoolTag::BUFFER).unwrap();
    assert!(buffer.iter().all(|&byte| byte == 0));
    drop(buffer);
    kernel.assert_no_leaks();
}

#[test]
fn pool_exhaustion_is_a_typed_error() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    kernel.inject_faults(FaultPlan {
        fail_first_pool: 2,
        ..FaultPlan::default()
    });
    let insufficient = Error::InsufficientResources(NtStatus::INSUFFICIENT_RESOURCES);
    assert_eq!(
        PoolBuffer::zeroed(8, PoolTag::BUFFER).unwrap_err(),
        insufficient
    );
    assert_eq!(
        Event::new(EventKind::Notification, false).unwrap_err(),
        insufficient
    );
    assert!(PoolBuffer::zeroed(8, PoolTag::BUFFER).is_ok());
    kernel.assert_no_leaks();
}

#[test]
fn the_zero_tag_is_rejected_before_the_kernel_sees_it() {
    // `ExAllocatePoolWithTag` bugchecks on tag 0 (BAD_POOL_CALLER), and so
    // does the emulator: every allocation path must stop it first.
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let zero = PoolTag::new([0; 4]);
    assert!(!zero.is_valid());
    assert!(PoolTag::BUFFER.is_valid());
    let invalid = Error::InvalidArgument(NtStatus::INVALID_PARAMETER);
    assert_eq!(PoolBuffer::zeroed(16, zero).unwrap_err(), invalid);
    assert_eq!(PoolBuffer::zeroed(0, zero).unwrap_err(), invalid);
    assert_eq!(PoolBuffer::from_slice(b"data", zero).unwrap_err(), invalid);
    assert_eq!(PoolBox::new(7_u64, zero).unwrap_err(), invalid);
    kernel.assert_no_leaks();
}

#[test]
#[cfg_attr(miri, ignore = "Miri cannot even try an allocation this large")]
fn an_absurd_size_is_insufficient_resources_not_a_crash() {
    // The kernel returns NULL for a size no pool can hold; so must the
    // emulator, whether the host cannot describe the size (`usize::MAX / 2`
    // has no `Layout`) or cannot provide it.
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let insufficient = Error::InsufficientResources(NtStatus::INSUFFICIENT_RESOURCES);
    for size in [usize::MAX, usize::MAX / 2, usize::MAX / 4, 1 << 50] {
        assert_eq!(
            PoolBuffer::zeroed(size, PoolTag::BUFFER).unwrap_err(),
            insufficient,
            "{size} bytes"
        );
    }
    assert!(
        kernel.usage().is_empty(),
        "nothing recorded: {}",
        kernel.usage()
    );
    let fine = PoolBuffer::zeroed(64, PoolTag::BUFFER).unwrap();
    assert_eq!(fine.len(), 64);
    drop(fine);
    kernel.assert_no_leaks();
}

#[test]
fn seeded_fault_injection_is_reproducible() {
    let failures = |seed| {
        let kernel = Kernel::new();
        let _enter = kernel.enter();
        kernel.inject_faults(FaultPlan {
            seed,
            pool_one_in: 3,
            ..FaultPlan::default()
        });
        let pattern: Vec<bool> = (0..64)
            .map(|_| PoolBuffer::zeroed(1, PoolTag::BUFFER).is_err())
            .collect();
        kernel.assert_no_leaks();
        pattern
    };
    let first = failures(7);
    assert_eq!(first, failures(7), "same seed, same failures");
    assert_ne!(first, failures(8), "another seed, other failures");
    let count = first.iter().filter(|&&failed| failed).count();
    assert!(
        (8..=40).contains(&count),
        "about one in three failed: {count} of 64"
    );
}

#[test]
#[should_panic(expected = "BUGCHECK BAD_POOL_CALLER")]
fn freeing_with_the_wrong_tag_bugchecks() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let buffer = PoolBuffer::zeroed(8, PoolTag::new(*b"Good")).unwrap();
    let raw = buffer.as_mut_ptr();
    core::mem::forget(buffer);
    // SAFETY: deliberately the wrong tag: the verifier must stop it.
    unsafe { exports::ExFreePoolWithTag(raw.cast(), PoolTag::new(*b"Evil").value()) };
}

#[test]
fn an_mdl_describes_its_buffer() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let buffer = PoolBuffer::from_slice(&[1, 2, 3, 4, 5], PoolTag::BUFFER).unwrap();
    let mdl = Mdl::describe(&buffer).unwrap();
    // SAFETY: a live MDL.
    let raw = unsafe { &*mdl.as_ptr() };
    assert_eq!(raw.ByteCount, 5);
    assert_eq!(raw.MappedSystemVa.cast::<u8>(), buffer.as_mut_ptr());
    assert_eq!(
        raw.StartVa as usize + raw.ByteOffset as usize,
        buffer.as_mut_ptr() as usize
    );
    assert_eq!(kernel.usage().mdls, 1);
    let empty = PoolBuffer::zeroed(0, PoolTag::BUFFER).unwrap();
    assert_eq!(
        Mdl::describe(&empty).unwrap_err(),
        Error::InvalidArgument(NtStatus::INVALID_PARAMETER)
    );
    drop((mdl, buffer, empty));
    kernel.assert_no_leaks();
}

#[test]
#[should_panic(expected = "are not inside one non-paged pool block")]
fn an_mdl_over_stack_memory_bugchecks() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let mut on_stack = [0_u8; 16];
    // SAFETY: a valid address; the MDL only records it.
    let mdl = unsafe {
        exports::IoAllocateMdl(
            on_stack.as_mut_ptr().cast(),
            16,
            0,
            0,
            core::ptr::null_mut(),
        )
    };
    // SAFETY: deliberately not pool memory: the verifier must stop it.
    unsafe { exports::MmBuildMdlForNonPagedPool(mdl) };
}
