//! MDLs describing non-paged buffers, as `WSK_BUF` needs.

use core::ptr::NonNull;

use super::pool::PoolBuffer;
use crate::abi::{
    FALSE, KernelMode, MDL, MDL_MAPPED_TO_SYSTEM_VA, MDL_SOURCE_IS_NONPAGED_POOL,
    MdlMappingNoExecute, MmCached, NormalPagePriority, ULONG,
};
use crate::error::{Error, Result};
use crate::status::NtStatus;
use crate::sys;

/// An MDL over non-paged memory (`IoAllocateMdl` +
/// `MmBuildMdlForNonPagedPool`); freed on drop. Nothing is probed or locked,
/// so there is nothing to unlock.
///
/// # IRQL
/// Every method at `DISPATCH_LEVEL` or below.
///
/// # Invariants
/// `raw` is a live, built MDL owned by this value.
pub struct Mdl {
    raw: NonNull<MDL>,
}

// SAFETY: an MDL is plain non-paged memory usable from any thread.
unsafe impl Send for Mdl {}
// SAFETY: shared access only reads the pointer.
unsafe impl Sync for Mdl {}

impl Mdl {
    /// An MDL describing all of `buffer`'s capacity. The MDL does not keep
    /// the buffer alive: whoever hands it to the provider must.
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty buffer or one of 4 GiB or
    /// more; [`Error::InsufficientResources`] when `IoAllocateMdl` fails.
    pub fn describe(buffer: &PoolBuffer) -> Result<Self> {
        let length = u32::try_from(buffer.capacity())
            .ok()
            .filter(|&length| length > 0)
            .ok_or(Error::InvalidArgument(NtStatus::INVALID_PARAMETER))?;
        // SAFETY: the range is one live pool block; no IRP is attached.
        let raw = unsafe {
            sys::IoAllocateMdl(
                buffer.as_mut_ptr().cast(),
                length,
                FALSE,
                FALSE,
                core::ptr::null_mut(),
            )
        };
        let raw = NonNull::new(raw).ok_or(Error::InsufficientResources(
            NtStatus::INSUFFICIENT_RESOURCES,
        ))?;
        // SAFETY: a fresh MDL over non-paged pool, which is what
        // MmBuildMdlForNonPagedPool requires; <= DISPATCH_LEVEL.
        unsafe { sys::MmBuildMdlForNonPagedPool(raw.as_ptr()) };
        // INVARIANT: live and built.
        Ok(Self { raw })
    }

    /// The raw MDL, for a `WSK_BUF`.
    #[must_use]
    pub const fn as_ptr(&self) -> *mut MDL {
        self.raw.as_ptr()
    }
}

impl Drop for Mdl {
    fn drop(&mut self) {
        // SAFETY: owned and live per the invariant; freed once.
        unsafe { sys::IoFreeMdl(self.as_ptr()) };
    }
}

impl core::fmt::Debug for Mdl {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Mdl").field("raw", &self.raw).finish()
    }
}

/// The `ByteCount` bytes an MDL someone else built describes, in system
/// space; `None` when the system has no address space left to map them.
///
/// As `MmGetSystemAddressForMdlSafe`: the MDL's mapping when it is mapped
/// or over non-paged pool, else a new mapping of its locked pages, which
/// the MDL keeps until its owner frees it.
///
/// # IRQL
/// `DISPATCH_LEVEL` or below.
///
/// # Safety
/// `mdl` is a valid MDL whose pages are locked or non-paged, and stay so
/// (and unchanged) for `'a`.
pub unsafe fn system_bytes<'a>(mdl: *mut MDL) -> Option<&'a [u8]> {
    // SAFETY: a valid MDL (the contract).
    let header = unsafe { &*mdl };
    let length = header.ByteCount as usize;
    let address = if header.MdlFlags & (MDL_MAPPED_TO_SYSTEM_VA | MDL_SOURCE_IS_NONPAGED_POOL) != 0
    {
        header.MappedSystemVa
    } else {
        // SAFETY: a locked MDL (the contract), mapped for the kernel at an
        // address of the system's choosing, without execute rights; at
        // DISPATCH_LEVEL or below, where this mapping is allowed.
        unsafe {
            sys::MmMapLockedPagesSpecifyCache(
                mdl,
                KernelMode,
                MmCached,
                core::ptr::null_mut(),
                ULONG::from(FALSE),
                NormalPagePriority | MdlMappingNoExecute,
            )
        }
    };
    if address.is_null() {
        return None;
    }
    // SAFETY: the mapping covers the MDL's `ByteCount` bytes, which stay
    // valid and unchanged for `'a` (the contract).
    Some(unsafe { core::slice::from_raw_parts(address.cast::<u8>(), length) })
}
