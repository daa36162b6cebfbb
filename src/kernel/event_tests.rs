//! `RawEvent::wait`, the signature the crate's older callers still use:
//! above `APC_LEVEL` it must neither block nor bugcheck.

use core::time::Duration;

use super::{EventKind, RawEvent, WaitError, WaitTimedOut};
use crate::abi::DISPATCH_LEVEL;
use crate::emulator::{Kernel, irql};
use crate::kernel::irql::{Irql, IrqlTooHigh, PassiveLevel};
use crate::kernel::pool::{PoolBox, PoolTag};

fn synchronization_event() -> PoolBox<RawEvent> {
    let init = |slot: *mut RawEvent| {
        // SAFETY: a fresh pool block that never moves; PASSIVE_LEVEL.
        unsafe { RawEvent::init(slot, EventKind::Synchronization, false) };
    };
    // SAFETY: `RawEvent::init` initialises the whole block.
    unsafe { PoolBox::new_with(PoolTag::EVENT, init) }.unwrap()
}

#[test]
fn the_old_wait_only_polls_above_apc_level() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    // Copied at PASSIVE_LEVEL, used after a raise: no longer a proof.
    let stale = PassiveLevel::check().unwrap().at_most_apc();
    let event = synchronization_event();
    irql::run_at(DISPATCH_LEVEL, || {
        assert_eq!(
            event.wait_checked(&stale, None),
            Err(WaitError::IrqlTooHigh(IrqlTooHigh {
                current: Irql::DISPATCH,
                required: Irql::APC
            }))
        );
        assert_eq!(event.wait(&stale, None), Err(WaitTimedOut));
        assert_eq!(
            event.wait(&stale, Some(Duration::from_secs(10))),
            Err(WaitTimedOut)
        );
        event.set();
        assert_eq!(event.wait(&stale, None), Ok(()), "a signal already set");
        assert!(!event.is_set(), "and taken, as a satisfied wait takes it");
    });
    event.set();
    // Above DISPATCH_LEVEL not even a zero-timeout wait is allowed.
    irql::run_at(3, || {
        assert_eq!(event.wait(&stale, None), Err(WaitTimedOut));
    });
    assert!(event.is_set());
    assert_eq!(event.wait(&stale, None), Ok(()));
    drop(event);
    kernel.assert_no_leaks();
}
