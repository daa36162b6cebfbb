//! Memory descriptor lists over non-paged pool.

use core::ffi::c_void;
use core::mem::size_of;
use core::ptr;
use std::alloc::{Layout, alloc_zeroed, dealloc};

use super::faults::Resource;
use super::verifier::{MdlRecord, bugcheck, registry};
use super::{Kernel, irql, pool};
use crate::abi::{
    BOOLEAN, IRP, KPROCESSOR_MODE, KernelMode, MDL, MDL_MAPPED_TO_SYSTEM_VA, MDL_PAGES_LOCKED,
    MDL_SOURCE_IS_NONPAGED_POOL, ULONG,
};

const PAGE_SIZE: usize = 4096;

fn pages_spanned(va: usize, length: usize) -> usize {
    let first = va / PAGE_SIZE;
    let last = (va + length.max(1) - 1) / PAGE_SIZE;
    last - first + 1
}

pub fn allocate(va: *mut c_void, length: ULONG, secondary: BOOLEAN, irp: *mut IRP) -> *mut MDL {
    irql::require(const { irql::rule_of("IoAllocateMdl") });
    let kernel = Kernel::current();
    if length == 0 || kernel.inner().faults.should_fail(Resource::Mdl) {
        return ptr::null_mut();
    }
    let address = va as usize;
    let length_bytes = usize::try_from(length).expect("u32 fits usize");
    // The PFN array follows the header, one entry per page spanned.
    let bytes = size_of::<MDL>() + pages_spanned(address, length_bytes) * size_of::<u64>();
    let layout = Layout::from_size_align(bytes, 16).expect("MDL size fits a layout");
    // SAFETY: non-zero size.
    #[allow(clippy::cast_ptr_alignment, reason = "the layout is 16-byte aligned")]
    let mdl = unsafe { alloc_zeroed(layout) }.cast::<MDL>();
    if mdl.is_null() {
        return mdl;
    }
    // SAFETY: fresh zeroed allocation of at least `size_of::<MDL>()` bytes.
    let header = unsafe { &mut *mdl };
    header.Size = i16::try_from(bytes).unwrap_or(i16::MAX);
    header.StartVa = (address & !(PAGE_SIZE - 1)) as *mut c_void;
    header.ByteOffset = ULONG::try_from(address & (PAGE_SIZE - 1)).expect("below a page");
    header.ByteCount = length;
    kernel.inner().count_allocation(super::Counted::Mdl);
    registry().mdls.insert(
        mdl as usize,
        MdlRecord {
            kernel: kernel.id(),
            bytes,
        },
    );
    if !irp.is_null() && secondary == 0 {
        // SAFETY: the caller passes a live IRP it owns.
        unsafe { (*irp).MdlAddress = mdl };
    }
    mdl
}

pub fn build_for_non_paged_pool(mdl: *mut MDL) {
    irql::require(const { irql::rule_of("MmBuildMdlForNonPagedPool") });
    if !registry().mdls.contains_key(&(mdl as usize)) {
        bugcheck(
            "DRIVER_VERIFIER_DETECTED_VIOLATION",
            format_args!("MmBuildMdlForNonPagedPool({mdl:p}): not a live MDL"),
        );
    }
    // SAFETY: live MDL per the registry.
    let header = unsafe { &mut *mdl };
    let start = header.StartVa as usize + header.ByteOffset as usize;
    let length = header.ByteCount as usize;
    if !pool::is_pool_range(start, length) {
        bugcheck(
            "DRIVER_VERIFIER_DETECTED_VIOLATION",
            format_args!(
                "MmBuildMdlForNonPagedPool: {length} byte(s) at {start:#x} are not inside one non-paged pool block"
            ),
        );
    }
    header.MappedSystemVa = start as *mut c_void;
    header.MdlFlags |= MDL_SOURCE_IS_NONPAGED_POOL | MDL_MAPPED_TO_SYSTEM_VA;
}

/// `MmMapLockedPagesSpecifyCache` for the kernel: an MDL already mapped
/// gives its mapping; a locked one is mapped (in a host process its pages
/// are already addressable) and says so in its flags, as the kernel's does.
///
/// # Safety
/// `mdl` points to an MDL whose described range is valid memory.
pub unsafe fn map_locked(
    mdl: *mut MDL,
    mode: KPROCESSOR_MODE,
    requested: *mut c_void,
) -> *mut c_void {
    irql::require(const { irql::rule_of("MmMapLockedPagesSpecifyCache") });
    if mode != KernelMode || !requested.is_null() {
        bugcheck(
            "DRIVER_VERIFIER_DETECTED_VIOLATION",
            format_args!(
                "MmMapLockedPagesSpecifyCache({mdl:p}): only kernel-mode mappings at an address of the system's choosing are emulated"
            ),
        );
    }
    // SAFETY: a valid MDL (the contract).
    let header = unsafe { &mut *mdl };
    if header.MdlFlags & (MDL_MAPPED_TO_SYSTEM_VA | MDL_SOURCE_IS_NONPAGED_POOL) != 0 {
        return header.MappedSystemVa;
    }
    if header.MdlFlags & MDL_PAGES_LOCKED == 0 {
        bugcheck(
            "DRIVER_VERIFIER_DETECTED_VIOLATION",
            format_args!("MmMapLockedPagesSpecifyCache({mdl:p}): the MDL's pages are not locked"),
        );
    }
    header.MappedSystemVa = (header.StartVa as usize + header.ByteOffset as usize) as *mut c_void;
    header.MdlFlags |= MDL_MAPPED_TO_SYSTEM_VA;
    header.MappedSystemVa
}

pub fn free(mdl: *mut MDL) {
    if super::verifier::unwinding() {
        return;
    }
    irql::require(const { irql::rule_of("IoFreeMdl") });
    let Some(record) = registry().mdls.remove(&(mdl as usize)) else {
        bugcheck(
            "BAD_POOL_CALLER",
            format_args!("IoFreeMdl({mdl:p}): not a live MDL (double free?)"),
        );
    };
    let layout = Layout::from_size_align(record.bytes, 16).expect("as allocated");
    // SAFETY: allocated by `allocate` with this layout; removed from the
    // registry just now, so freed once.
    unsafe { dealloc(mdl.cast(), layout) };
}

/// The data a `WSK_BUF` describes: `length` bytes at `offset` into the
/// MDL's system mapping. Bugchecks unless the MDL is live, was built with
/// `MmBuildMdlForNonPagedPool`, and holds the whole range (WSK buffers
/// spanning an MDL chain are not emulated).
///
/// # Safety
/// `mdl` is a pointer the client passed in a `WSK_BUF`.
pub unsafe fn wsk_buf_range(
    mdl: *const MDL,
    offset: usize,
    length: usize,
    function: &str,
) -> *mut u8 {
    // Checked before the MDL is read: a freed MDL must not be dereferenced.
    if !registry().mdls.contains_key(&(mdl as usize)) {
        bugcheck(
            "DRIVER_VERIFIER_DETECTED_VIOLATION",
            format_args!("{function}: WSK_BUF.Mdl {mdl:p} is not a live MDL"),
        );
    }
    // SAFETY: live MDL per the registry.
    let (start, byte_count) = unsafe { system_range(mdl) };
    if offset
        .checked_add(length)
        .is_none_or(|end| end > byte_count)
    {
        bugcheck(
            "DRIVER_VERIFIER_DETECTED_VIOLATION",
            format_args!(
                "{function}: WSK_BUF (Offset {offset}, Length {length}) runs past its MDL's {byte_count} byte(s)"
            ),
        );
    }
    start.wrapping_add(offset)
}

/// The system address and length an MDL describes, for the provider.
///
/// # Safety
/// `mdl` is a live MDL built with `MmBuildMdlForNonPagedPool`.
unsafe fn system_range(mdl: *const MDL) -> (*mut u8, usize) {
    // SAFETY: live MDL per the contract.
    let header = unsafe { &*mdl };
    if header.MdlFlags & MDL_MAPPED_TO_SYSTEM_VA == 0 {
        bugcheck(
            "DRIVER_VERIFIER_DETECTED_VIOLATION",
            format_args!(
                "MDL {mdl:p} passed to the provider without a system mapping (MmBuildMdlForNonPagedPool)"
            ),
        );
    }
    (header.MappedSystemVa.cast(), header.ByteCount as usize)
}
