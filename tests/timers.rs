//! Kernel timers for futures: `sleep`, `timeout`, cancellation of the timer
//! and of the bounded operation, and the verifier's timer check.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use wsk::emulator::{Kernel, exports};
use wsk::{
    Error, Family, NtStatus, PassiveLevel, PoolBuffer, PoolTag, Registration, block_on, sleep,
    timeout,
};

const TIMER_TAG: [u8; 4] = *b"WskT";

fn passive() -> PassiveLevel {
    PassiveLevel::check().expect("test threads start at PASSIVE_LEVEL")
}

#[test]
fn sleep_wakes_the_task_from_the_timer_dpc() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let start = Instant::now();
    block_on(&passive(), sleep(Duration::from_millis(60)))
        .unwrap()
        .unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(60),
        "woke after {:?}",
        start.elapsed()
    );
    // The DPC gives its reference back after waking us.
    let deadline = Instant::now() + Duration::from_secs(10);
    while kernel.usage().pool_tag(TIMER_TAG).allocations != 0 {
        assert!(Instant::now() < deadline, "the timer block was never freed");
        std::thread::yield_now();
    }
    kernel.assert_no_leaks();
}

#[test]
fn dropping_an_armed_sleep_cancels_the_timer() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    {
        let mut sleeping = Box::pin(sleep(Duration::from_mins(1)));
        let waker = std::task::Waker::noop();
        assert!(
            sleeping
                .as_mut()
                .poll(&mut std::task::Context::from_waker(waker))
                .is_pending()
        );
        assert_eq!(kernel.usage().pool_tag(TIMER_TAG).allocations, 1, "armed");
    }
    // KeCancelTimer found it queued: its DPC never runs, the block is gone.
    kernel.assert_no_leaks();
}

#[test]
fn timeout_gives_the_output_when_the_future_wins() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let output = block_on(&passive(), timeout(Duration::from_mins(1), async { 42 })).unwrap();
    assert_eq!(output, Ok(42));
    kernel.assert_no_leaks();
}

#[test]
#[cfg_attr(miri, ignore = "host sockets: Miri cannot connect(2)")]
fn timeout_cancels_a_pending_receive_and_leaks_nothing() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = passive();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let remote = listener.local_addr().unwrap();
    let registration = Registration::register(&passive).unwrap();
    {
        let provider = registration
            .capture(&passive, Duration::from_secs(5))
            .unwrap();
        let connection = provider
            .socket_connect_blocking(
                &passive,
                Duration::from_secs(5),
                Family::V4.unspecified(),
                remote,
            )
            .unwrap();
        let (_server_side, _) = listener.accept().unwrap();
        let start = Instant::now();
        let buffer = PoolBuffer::zeroed(64, PoolTag::BUFFER).unwrap();
        let result = block_on(
            &passive,
            timeout(Duration::from_millis(80), connection.receive(buffer)),
        )
        .unwrap();
        assert!(
            matches!(result, Err(Error::TimedOut(NtStatus::IO_TIMEOUT))),
            "{result:?}"
        );
        assert!(start.elapsed() >= Duration::from_millis(80));
        // The receive's IRP was cancelled and completed: the connection
        // still works.
        let (sent, _) = connection.send_blocking(
            &passive,
            Duration::from_secs(5),
            PoolBuffer::from_slice(b"x", PoolTag::BUFFER).unwrap(),
        );
        assert_eq!(sent, Ok(1));
        connection
            .close_blocking(&passive, Duration::from_secs(5))
            .unwrap();
    }
    let report = registration.deregister(&passive);
    assert!(report.is_clean(), "deregistration had to force: {report}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !kernel.usage().is_empty() {
        assert!(Instant::now() < deadline, "leaks: {}", kernel.usage());
        std::thread::yield_now();
    }
}

#[test]
#[should_panic(expected = "BUGCHECK TIMER_OR_DPC_INVALID")]
fn freeing_pool_that_holds_an_armed_timer_bugchecks() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let tag = u32::from_le_bytes(*b"Tmr!");
    // SAFETY: a pool block large enough for a KTIMER.
    let block = unsafe { exports::ExAllocatePoolWithTag(wsk::abi::NonPagedPoolNx, 64, tag) };
    let timer = block.cast::<wsk::abi::KTIMER>();
    // SAFETY: initialise and arm a timer (no DPC) in that block.
    unsafe { exports::KeInitializeTimer(timer) };
    // SAFETY: as above.
    unsafe { exports::KeSetTimer(timer, -600_000_000, core::ptr::null_mut()) };
    // SAFETY: deliberately wrong: freed while armed.
    unsafe { exports::ExFreePoolWithTag(block, tag) };
}

#[test]
fn deregistration_cancels_a_forgotten_timer_instead_of_waiting_for_it() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = passive();
    let registration = Registration::register(&passive).unwrap();
    // Armed for an hour, then forgotten by its owner.
    let mut forgotten = Box::pin(sleep(Duration::from_hours(1)));
    let waker = std::task::Waker::noop();
    assert!(
        forgotten
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker))
            .is_pending()
    );
    std::mem::forget(forgotten);
    let start = Instant::now();
    let report = registration.deregister(&passive);
    assert_eq!(report.cancelled_timers, 1, "{report}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "deregistration waited {:?} for a forgotten timer",
        start.elapsed()
    );
    // The forgotten block leaks (its owner never comes back), but its DPC
    // will never run, and nothing else is left.
    let usage = kernel.settled_usage();
    assert_eq!(usage.pool_tag(TIMER_TAG).allocations, 1);
    assert_eq!((usage.irps, usage.registrations), (0, 0));
    kernel.expect_leaks();
}
