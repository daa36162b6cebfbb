//! The emulated IRQL: one value per thread, as each processor has its own.

use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::thread_local;

use super::verifier::bugcheck;
use crate::abi::{APC_LEVEL, DISPATCH_LEVEL, KIRQL, PASSIVE_LEVEL};

thread_local! {
    static IRQL: Cell<KIRQL> = const { Cell::new(PASSIVE_LEVEL) };
    /// The callback the thread is in, if it is one that must not wait.
    static CALLBACK: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// Runs `f` as a callback that must not wait (a completion routine or a
/// DPC): a wait inside it with a timeout other than zero bugchecks, even
/// when this call happens to be at `PASSIVE_LEVEL`, since the next may not.
pub(crate) fn run_as_callback<R>(callback: &'static str, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<&'static str>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CALLBACK.with(|current| current.set(self.0));
        }
    }
    /// Counts the callback as running on its machine until it returns.
    struct Running(super::Kernel);
    impl Drop for Running {
        fn drop(&mut self) {
            self.0.inner().callbacks.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let kernel = super::Kernel::current();
    kernel.inner().callbacks.fetch_add(1, Ordering::SeqCst);
    let _running = Running(kernel);
    let _restore = Restore(CALLBACK.with(|current| current.replace(Some(callback))));
    f()
}

/// Bugchecks if the thread is in a callback that must not wait.
#[track_caller]
pub(crate) fn forbid_wait(function: &str) {
    if let Some(callback) = CALLBACK.with(Cell::get) {
        bugcheck(
            "DRIVER_VERIFIER_DETECTED_VIOLATION",
            format_args!(
                "{function} waits in {callback}: it may run at DISPATCH_LEVEL, where a wait is fatal"
            ),
        );
    }
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

/// The highest IRQL a kernel or WSK function allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IrqlRule {
    /// The function (and, where its rule depends on an argument, which use).
    pub function: &'static str,
    /// The highest IRQL it may be called at.
    pub max: KIRQL,
    /// Why, in the bugcheck's words.
    pub why: &'static str,
}

const fn rule(function: &'static str, max: KIRQL, why: &'static str) -> IrqlRule {
    IrqlRule { function, max, why }
}

/// Every function the library calls, with its highest IRQL.
///
/// The levels are the ones Microsoft's documentation allows. This is the
/// one table each emulated function checks itself against: a call above it
/// bugchecks with `IRQL_NOT_LESS_OR_EQUAL`, naming the function and the
/// rule.
pub const IRQL_RULES: &[IrqlRule] = &[
    rule(
        "ExAllocatePoolWithTag",
        DISPATCH_LEVEL,
        "non-paged allocations",
    ),
    rule("ExFreePoolWithTag", DISPATCH_LEVEL, "non-paged frees"),
    rule("IoAllocateIrp", DISPATCH_LEVEL, "IRP allocation"),
    rule("IoFreeIrp", DISPATCH_LEVEL, "IRP free"),
    rule("IoReuseIrp", DISPATCH_LEVEL, "reusing an IRP"),
    rule("IoCancelIrp", DISPATCH_LEVEL, "cancelling an IRP"),
    rule("IoCompleteRequest", DISPATCH_LEVEL, "completing an IRP"),
    rule("IoAllocateMdl", DISPATCH_LEVEL, "MDL allocation"),
    rule("IoFreeMdl", DISPATCH_LEVEL, "MDL free"),
    rule(
        "MmBuildMdlForNonPagedPool",
        DISPATCH_LEVEL,
        "building an MDL",
    ),
    rule(
        "MmMapLockedPagesSpecifyCache",
        DISPATCH_LEVEL,
        "mapping locked pages for the kernel",
    ),
    rule("KeInitializeEvent", DISPATCH_LEVEL, "initialising an event"),
    rule("KeSetEvent", DISPATCH_LEVEL, "signalling an event"),
    rule("KeClearEvent", DISPATCH_LEVEL, "clearing an event"),
    rule("KeReadStateEvent", DISPATCH_LEVEL, "reading an event"),
    rule(
        "KeWaitForSingleObject (zero timeout)",
        DISPATCH_LEVEL,
        "a zero-timeout wait",
    ),
    rule(
        "KeWaitForSingleObject",
        APC_LEVEL,
        "a wait with a NULL or non-zero timeout may block, so it needs IRQL <= APC_LEVEL",
    ),
    rule("KeInitializeDpc", DISPATCH_LEVEL, "initialising a DPC"),
    rule("KeInitializeTimer", DISPATCH_LEVEL, "initialising a timer"),
    rule("KeSetTimer", DISPATCH_LEVEL, "arming a timer"),
    rule("KeCancelTimer", DISPATCH_LEVEL, "cancelling a timer"),
    rule(
        "KeFlushQueuedDpcs",
        PASSIVE_LEVEL,
        "flushing DPCs waits for them",
    ),
    rule(
        "KeAcquireSpinLockRaiseToDpc",
        DISPATCH_LEVEL,
        "acquiring a spin lock raises to DISPATCH_LEVEL",
    ),
    rule("RtlGetVersion", PASSIVE_LEVEL, "it is PASSIVE_LEVEL only"),
    rule(
        "IoSetCompletionRoutineEx",
        DISPATCH_LEVEL,
        "it allocates from non-paged pool",
    ),
    rule("IoAllocateWorkItem", DISPATCH_LEVEL, "it allocates"),
    rule("IoQueueWorkItem", DISPATCH_LEVEL, "queueing work"),
    rule("IoFreeWorkItem", DISPATCH_LEVEL, "freeing a work item"),
    rule(
        "ObfReferenceObject",
        DISPATCH_LEVEL,
        "referencing an object",
    ),
    rule(
        "ObfDereferenceObject",
        DISPATCH_LEVEL,
        "dereferencing an object",
    ),
    rule("WskRegister", PASSIVE_LEVEL, "registering a WSK client"),
    rule(
        "WskDeregister",
        PASSIVE_LEVEL,
        "deregistering blocks until captures and sockets are gone",
    ),
    rule(
        "WskCaptureProviderNPI (WSK_NO_WAIT)",
        DISPATCH_LEVEL,
        "capturing with WSK_NO_WAIT",
    ),
    rule(
        "WskCaptureProviderNPI",
        PASSIVE_LEVEL,
        "capturing with a wait needs PASSIVE_LEVEL (use WSK_NO_WAIT above it)",
    ),
    rule(
        "WskReleaseProviderNPI",
        DISPATCH_LEVEL,
        "releasing the provider NPI",
    ),
    rule(
        "WskGetAddressInfo",
        PASSIVE_LEVEL,
        "resolving a name waits for the resolver",
    ),
    rule(
        "WskFreeAddressInfo",
        PASSIVE_LEVEL,
        "freeing an address list",
    ),
    rule(
        "WskGetNameInfo",
        PASSIVE_LEVEL,
        "resolving an address waits for the resolver",
    ),
    rule("WskSocket", DISPATCH_LEVEL, WSK_CALLS),
    rule("WskSocketConnect", DISPATCH_LEVEL, WSK_CALLS),
    rule("WskControlSocket", DISPATCH_LEVEL, WSK_CALLS),
    rule("WskBind", DISPATCH_LEVEL, WSK_CALLS),
    rule("WskAccept", DISPATCH_LEVEL, WSK_CALLS),
    rule("WskSendTo", DISPATCH_LEVEL, WSK_CALLS),
    rule("WskReceiveFrom", DISPATCH_LEVEL, WSK_CALLS),
    rule("WskConnect", DISPATCH_LEVEL, WSK_CALLS),
    rule("WskConnectEx", DISPATCH_LEVEL, WSK_CALLS),
    rule("WskSend", DISPATCH_LEVEL, WSK_CALLS),
    rule("WskReceive", DISPATCH_LEVEL, WSK_CALLS),
    rule("WskDisconnect", DISPATCH_LEVEL, WSK_CALLS),
    rule("WskGetLocalAddress", DISPATCH_LEVEL, WSK_CALLS),
    rule("WskGetRemoteAddress", DISPATCH_LEVEL, WSK_CALLS),
    rule("WskCloseSocket", DISPATCH_LEVEL, WSK_CALLS),
    rule("WskRelease", DISPATCH_LEVEL, WSK_CALLS),
];

const WSK_CALLS: &str = "WSK functions are called at IRQL <= DISPATCH_LEVEL";

/// `function`'s rule in [`IRQL_RULES`]. Call sites evaluate it in a
/// `const` block, so an emulated function's check costs no lookup and a
/// name without a rule does not compile.
///
/// # Panics
/// If `function` has no rule: every emulated function must have one.
pub(crate) const fn rule_of(function: &str) -> &'static IrqlRule {
    let mut index = 0;
    while index < IRQL_RULES.len() {
        if same(IRQL_RULES[index].function, function) {
            return &IRQL_RULES[index];
        }
        index += 1;
    }
    panic!("the emulator's IRQL table has no rule for this function");
}

/// String equality usable in `const` evaluation.
const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut index = 0;
    while index < a.len() {
        if a[index] != b[index] {
            return false;
        }
        index += 1;
    }
    true
}

/// Bugchecks unless the current IRQL is within `rule`.
#[track_caller]
pub(crate) fn require(rule: &IrqlRule) {
    require_at_most(rule.max, rule.function, rule.why);
}
