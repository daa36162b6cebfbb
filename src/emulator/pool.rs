//! Tagged non-paged pool with outstanding-allocation accounting, and
//! Driver Verifier's special-pool checks as far as a user-mode heap allows:
//! fresh blocks are filled with a pattern, freed blocks are poisoned and
//! kept in a quarantine (so a use after free never lands in a reused
//! block), and a write after free is found when the block leaves the
//! quarantine or when the machine checks its freed pool.

use core::ffi::c_void;
use std::alloc::{Layout, alloc, dealloc};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{LazyLock, Mutex, MutexGuard, OnceLock, PoisonError};
use std::vec::Vec;

use super::faults::Resource;
use super::verifier::{PoolRecord, bugcheck, registry};
use super::{Kernel, irql};
use crate::abi::{NonPagedPoolNx, POOL_TYPE};

/// `NonPagedPool`, accepted like `NonPagedPoolNx`.
const NON_PAGED_POOL: POOL_TYPE = 0;
/// Pool blocks are 16-byte aligned on x64.
pub const POOL_ALIGNMENT: usize = 16;
/// Fresh pool is not zeroed: this pattern makes reads of uninitialised
/// memory visible.
const FRESH_FILL: u8 = 0xC5;
/// Freed pool is filled with this while it waits in the quarantine.
const FREED_FILL: u8 = 0xDF;
/// Freed blocks kept poisoned before they go back to the host allocator.
const QUARANTINE_BLOCKS: usize = 4096;
/// Bytes kept at most in the quarantine (larger blocks are checked and
/// released at once).
const QUARANTINE_BYTES: usize = 16 << 20;

/// A freed block waiting in the quarantine.
struct Freed {
    base: usize,
    size: usize,
    tag: u32,
    kernel: u64,
}

#[derive(Default)]
struct Quarantine {
    blocks: VecDeque<Freed>,
    bytes: usize,
}

/// One quarantine per machine, so that a write after free is reported by
/// the machine (the test) it happened in.
static QUARANTINE: LazyLock<Mutex<BTreeMap<u64, Quarantine>>> = LazyLock::new(Mutex::default);

fn quarantine() -> MutexGuard<'static, BTreeMap<u64, Quarantine>> {
    QUARANTINE.lock().unwrap_or_else(PoisonError::into_inner)
}

pub fn allocate(pool_type: POOL_TYPE, size: usize, tag: u32) -> *mut c_void {
    irql::require(const { irql::rule_of("ExAllocatePoolWithTag") });
    if pool_type != NonPagedPoolNx && pool_type != NON_PAGED_POOL {
        bugcheck(
            "DRIVER_VERIFIER_DETECTED_VIOLATION",
            format_args!(
                "ExAllocatePoolWithTag: pool type {pool_type} is not emulated; WSK buffers must be non-paged"
            ),
        );
    }
    if tag == 0 {
        bugcheck(
            "BAD_POOL_CALLER",
            format_args!("ExAllocatePoolWithTag with a zero tag"),
        );
    }
    let kernel = Kernel::current();
    if kernel.inner().faults.should_fail(Resource::Pool) {
        return core::ptr::null_mut();
    }
    // A size no pool can hold gets NULL, as from the kernel: one the host
    // cannot even describe, one beyond the machine's memory (non-paged pool
    // is resident; and a host that overcommits would hand it out, then
    // fail filling it), or one the host allocator refuses.
    let Some(layout) = layout(size).filter(|_| size <= physical_memory()) else {
        return core::ptr::null_mut();
    };
    // SAFETY: the layout has a non-zero size.
    let block = unsafe { alloc(layout) };
    if block.is_null() {
        return block.cast();
    }
    // SAFETY: `block` is a fresh allocation of `layout.size()` bytes.
    unsafe { block.write_bytes(FRESH_FILL, layout.size()) };
    kernel.inner().count_allocation(super::Counted::Pool);
    registry().pool.insert(
        block as usize,
        PoolRecord {
            kernel: kernel.id(),
            tag,
            size,
        },
    );
    block.cast()
}

pub fn free(block: *mut c_void, tag: u32) {
    if super::verifier::unwinding() {
        return;
    }
    irql::require(const { irql::rule_of("ExFreePoolWithTag") });
    let record = {
        let mut registry = registry();
        match registry.pool.get(&(block as usize)) {
            None => bugcheck(
                "BAD_POOL_CALLER",
                format_args!(
                    "ExFreePoolWithTag({block:p}): not an allocated pool block (double free or foreign pointer)"
                ),
            ),
            Some(record) if record.tag != tag => {
                let (had, given) = (record.tag.to_le_bytes(), tag.to_le_bytes());
                drop(registry);
                bugcheck(
                    "BAD_POOL_CALLER",
                    format_args!(
                        "ExFreePoolWithTag({block:p}) with tag '{}' but it was allocated with '{}'",
                        super::PoolTagName(given),
                        super::PoolTagName(had)
                    ),
                );
            }
            Some(_) => registry.pool.remove(&(block as usize)).expect("present"),
        }
    };
    super::timer::check_freed(block as usize, record.size);
    // Poison it: a use after free then reads garbage (an event's type byte,
    // a reference count), not stale but plausible values, and a write
    // after free is found when the block leaves the quarantine.
    // SAFETY: the block is still allocated with at least `record.size`
    // bytes, and nobody may use it any more.
    unsafe { block.cast::<u8>().write_bytes(FREED_FILL, record.size) };
    let freed = Freed {
        base: block as usize,
        size: record.size,
        tag: record.tag,
        kernel: record.kernel,
    };
    let evicted = {
        let mut machines = quarantine();
        let quarantine = machines.entry(freed.kernel).or_default();
        quarantine.bytes += freed.size;
        quarantine.blocks.push_back(freed);
        let mut evicted = Vec::new();
        while quarantine.blocks.len() > QUARANTINE_BLOCKS || quarantine.bytes > QUARANTINE_BYTES {
            let Some(oldest) = quarantine.blocks.pop_front() else {
                break;
            };
            quarantine.bytes -= oldest.size;
            evicted.push(oldest);
        }
        evicted
    };
    for freed in evicted {
        release(&freed);
    }
}

/// Checks that nobody wrote to a quarantined block since it was freed.
fn check_poison(freed: &Freed) {
    // SAFETY: quarantined blocks stay allocated (and poisoned) until
    // `release`; nothing else owns them.
    let bytes = unsafe { core::slice::from_raw_parts(freed.base as *const u8, freed.size) };
    if let Some(offset) = bytes.iter().position(|&byte| byte != FREED_FILL) {
        bugcheck(
            "DRIVER_VERIFIER_DETECTED_VIOLATION",
            format_args!(
                "pool block {:#x} (tag '{}', {} bytes) was written at offset {offset} after it was freed",
                freed.base,
                super::PoolTagName(freed.tag.to_le_bytes()),
                freed.size
            ),
        );
    }
}

/// Checks a block leaving the quarantine and gives it back to the host.
fn release(freed: &Freed) {
    check_poison(freed);
    let layout = layout(freed.size).expect("a recorded block had a layout");
    // SAFETY: the block was allocated by `allocate` with this very layout,
    // left the registry when freed, and has just left the quarantine, so
    // it is deallocated once.
    unsafe { dealloc(freed.base as *mut u8, layout) };
}

/// Checks every quarantined block of `kernel` for writes after free, and
/// releases them (a machine checks its freed pool when it is dropped, or
/// when asked to).
pub fn check_freed_pool(kernel: u64) {
    let mine = quarantine().remove(&kernel).unwrap_or_default().blocks;
    // A violation stops at the first block written after free; the rest
    // stay allocated, as after any bugcheck.
    for freed in &mine {
        release(freed);
    }
}

/// Whether `[start, start + len)` lies inside one live pool block.
pub fn is_pool_range(start: usize, len: usize) -> bool {
    let registry = registry();
    // The block with the highest base at or below `start` is the only one
    // that can hold it.
    registry
        .pool
        .range(..=start)
        .next_back()
        .is_some_and(|(&base, record)| {
            start
                .checked_add(len)
                .is_some_and(|end| end <= base + record.size)
        })
}

/// The host layout of a pool block of `size` bytes, if the host can
/// describe one that large.
fn layout(size: usize) -> Option<Layout> {
    Layout::from_size_align(size.max(1), POOL_ALIGNMENT).ok()
}

/// The host's physical memory in bytes: no pool block can be larger.
fn physical_memory() -> usize {
    static BYTES: OnceLock<usize> = OnceLock::new();
    *BYTES.get_or_init(|| {
        if cfg!(miri) {
            // Miri does not model the machine's memory: let the host
            // allocator decide alone.
            return usize::MAX;
        }
        // SAFETY: sysconf only reads configuration values.
        let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
        // SAFETY: as above.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        match (usize::try_from(pages), usize::try_from(page_size)) {
            (Ok(pages), Ok(page_size)) if pages > 0 => pages.saturating_mul(page_size),
            // Unknown: let the host allocator decide alone.
            _ => usize::MAX,
        }
    })
}
