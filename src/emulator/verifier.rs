//! Bugchecks and the registry of live kernel objects that the verifier
//! checks every call against.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use std::fmt;
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

use super::{PoolTagName, Usage};

/// Stops like a bugcheck: a panic naming the stop code and the rule broken.
#[track_caller]
pub fn bugcheck(code: &str, detail: fmt::Arguments<'_>) -> ! {
    panic!("BUGCHECK {code}: {detail}")
}

/// Runs the body of one of the machine's own threads (DPCs, the poller,
/// timers, late completions): a bugcheck there stops the whole process, as
/// it stops the machine, instead of ending only that thread while the test
/// carries on. The panic message has been printed by then.
pub fn machine_thread(body: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).is_err() {
        std::eprintln!(
            "the emulated machine stopped: a bugcheck (or panic) on {:?}",
            std::thread::current()
                .name()
                .unwrap_or("an emulator thread")
        );
        std::process::abort();
    }
}

/// Whether this thread is unwinding from a panic (a bugcheck or a failed
/// assertion). Clean-up calls made while unwinding (drops of IRPs, pool,
/// registrations) are then skipped and leak, as nothing runs after a real
/// bugcheck: checking them would only turn one failure into an abort.
pub fn unwinding() -> bool {
    std::thread::panicking()
}

/// Who owns an IRP right now.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum IrpOwner {
    /// The driver that allocated it: it may set it up, reuse or free it.
    Client,
    /// A driver or the provider it was passed to, until it completes it.
    Provider,
}

pub struct PoolRecord {
    pub kernel: u64,
    pub tag: u32,
    pub size: usize,
}

pub struct IrpRecord {
    pub kernel: u64,
    pub owner: IrpOwner,
    pub bytes: usize,
}

pub struct MdlRecord {
    pub kernel: u64,
    pub bytes: usize,
}

#[derive(Default)]
pub struct Registry {
    /// Ordered by address, so the block holding an address is one lookup.
    pub pool: BTreeMap<usize, PoolRecord>,
    pub irps: FxHashMap<usize, IrpRecord>,
    pub mdls: FxHashMap<usize, MdlRecord>,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Mutex::default);

/// The registry, locked. Held only briefly and never across a call out of
/// the emulator (completion and cancel routines run without it).
pub fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

pub fn usage_of(kernel: u64) -> Usage {
    let registry = registry();
    let mut usage = Usage::default();
    for record in registry
        .pool
        .values()
        .filter(|record| record.kernel == kernel)
    {
        let entry = usage
            .pool
            .entry(PoolTagName(record.tag.to_le_bytes()))
            .or_default();
        entry.allocations += 1;
        entry.bytes += record.size;
    }
    for record in registry
        .irps
        .values()
        .filter(|record| record.kernel == kernel)
    {
        usage.irps += 1;
        usage.irp_bytes += record.bytes;
        usage.irps_in_flight += usize::from(record.owner == IrpOwner::Provider);
    }
    for record in registry
        .mdls
        .values()
        .filter(|record| record.kernel == kernel)
    {
        usage.mdls += 1;
        usage.mdl_bytes += record.bytes;
    }
    usage
}
