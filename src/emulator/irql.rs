//! The emulated IRQL: one value per thread, as each processor has its own.

use std::cell::Cell;
use std::thread_local;

use super::verifier::bugcheck;
use crate::abi::{APC_LEVEL, DISPATCH_LEVEL, KIRQL, PASSIVE_LEVEL};

thread_local! {
    static IRQL: Cell<KIRQL> = const { Cell::new(PASSIVE_LEVEL) };
}

/// The current thread's IRQL (`KeGetCurrentIrql`).
#[must_use]
pub fn current() -> KIRQL {
    IRQL.with(Cell::get)
}

/// Raises the current thread's IRQL to `new` until the guard drops
/// (`KeRaiseIrql` / `KeLowerIrql`).
///
/// # Panics
/// Like a bugcheck (`IRQL_NOT_GREATER_OR_EQUAL`) if `new` is below the
/// current IRQL.
#[must_use = "the IRQL is lowered again when the guard drops"]
pub fn raise(new: KIRQL) -> RaisedIrql {
    let old = current();
    if new < old {
        bugcheck(
            "IRQL_NOT_GREATER_OR_EQUAL",
            format_args!(
                "KeRaiseIrql to {} from {}: raising may not lower",
                name(new),
                name(old)
            ),
        );
    }
    IRQL.with(|irql| irql.set(new));
    RaisedIrql { old }
}

/// Runs `f` with the current thread at `irql`.
pub fn run_at<R>(irql: KIRQL, f: impl FnOnce() -> R) -> R {
    let _raised = raise(irql);
    f()
}

/// The IRQL returns to its previous value when this drops.
#[must_use = "the IRQL is lowered again when the guard drops"]
pub struct RaisedIrql {
    old: KIRQL,
}

impl RaisedIrql {
    /// The IRQL in force before the raise.
    #[must_use]
    pub const fn previous(&self) -> KIRQL {
        self.old
    }
}

impl Drop for RaisedIrql {
    fn drop(&mut self) {
        IRQL.with(|irql| irql.set(self.old));
    }
}

pub(crate) fn raise_raw(new: KIRQL) -> KIRQL {
    let guard = raise(new);
    let old = guard.old;
    core::mem::forget(guard);
    old
}

pub(crate) fn lower_raw(old: KIRQL) {
    let now = current();
    if old > now {
        bugcheck(
            "IRQL_NOT_LESS_OR_EQUAL",
            format_args!(
                "KeLowerIrql to {} from {}: lowering may not raise",
                name(old),
                name(now)
            ),
        );
    }
    IRQL.with(|irql| irql.set(old));
}

/// Bugchecks unless the current IRQL is at most `max`; `rule` names the call
/// and the rule it breaks.
#[track_caller]
pub(crate) fn require_at_most(max: KIRQL, function: &str, rule: &str) {
    let now = current();
    if now > max {
        bugcheck(
            "IRQL_NOT_LESS_OR_EQUAL",
            format_args!(
                "{function} called at {}: {rule} (requires IRQL <= {})",
                name(now),
                name(max)
            ),
        );
    }
}

/// The usual name of an IRQL.
#[must_use]
pub const fn name(irql: KIRQL) -> &'static str {
    match irql {
        PASSIVE_LEVEL => "PASSIVE_LEVEL",
        APC_LEVEL => "APC_LEVEL",
        DISPATCH_LEVEL => "DISPATCH_LEVEL",
        _ => "DIRQL",
    }
}
