//! `RawEvent::wait` checks the IRQL again: a token copied before the IRQL
//! was raised must neither block nor bugcheck.

use core::time::Duration;

use super::{EventKind, RawEvent, WaitError};
use crate::abi::DISPATCH_LEVEL;
use crate::emulator::{Kernel, irql};
use crate::kernel::irql::{AtMostDispatch, Irql, IrqlTooHigh, PassiveLevel};
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
fn a_stale_token_cannot_wait_above_apc_level() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    // Copied at PASSIVE_LEVEL, used after a raise: no longer a proof.
    let stale = PassiveLevel::check().unwrap().at_most_apc();
    let event = synchronization_event();
    let too_high = |current| {
        Err(WaitError::IrqlTooHigh(IrqlTooHigh {
            current,
            required: Irql::APC,
        }))
    };
    irql::run_at(DISPATCH_LEVEL, || {
        assert_eq!(event.wait(&stale, None), too_high(Irql::DISPATCH));
        assert_eq!(
            event.wait(&stale, Some(Duration::from_secs(10))),
            too_high(Irql::DISPATCH)
        );
        event.set();
        assert_eq!(
            event.wait(&stale, None),
            too_high(Irql::DISPATCH),
            "even a signal already set is not taken by a refused wait"
        );
        // A zero-timeout poll is what DISPATCH_LEVEL code may do.
        assert!(event.try_wait(&AtMostDispatch::check().unwrap()));
    });
    event.set();
    assert_eq!(event.wait(&stale, None), Ok(()));
    drop(event);
    kernel.assert_no_leaks();
}
