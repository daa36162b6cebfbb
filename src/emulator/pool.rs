//! Tagged non-paged pool with outstanding-allocation accounting.

use core::ffi::c_void;
use std::alloc::{Layout, alloc, dealloc};
use std::sync::OnceLock;

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
/// Freed pool is filled with this before it goes back to the allocator.
const FREED_FILL: u8 = 0xDF;

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
    // a reference count), not stale but plausible values.
    // SAFETY: the block is still allocated with at least `record.size`
    // bytes, and nobody may use it any more.
    unsafe { block.cast::<u8>().write_bytes(FREED_FILL, record.size) };
    let layout = layout(record.size).expect("a recorded block had a layout");
    // SAFETY: the registry held this block, allocated by `allocate` with
    // this very layout, and it has just been removed, so it is freed once.
    unsafe { dealloc(block.cast(), layout) };
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
