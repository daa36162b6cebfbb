//! Tagged non-paged pool: [`PoolBox`] for one value, [`PoolBuffer`] for
//! bytes the provider reads or writes.
//!
//! Memory comes from `ExAllocatePoolWithTag(NonPagedPoolNx, ...)`, which
//! exists on every Windows the library targets and under Wine (unlike
//! `ExAllocatePool2`, Windows 10 2004+).

use core::fmt;
use core::marker::PhantomData;
use core::mem::{align_of, size_of};
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

use super::mdl::Mdl;
use crate::abi::{MDL, NonPagedPoolNx};
use crate::error::{Error, Result};
use crate::status::NtStatus;
use crate::sys;

/// Pool blocks are 16-byte aligned on x64; larger alignments are not offered.
const POOL_ALIGNMENT: usize = 16;

/// A pool tag: four characters that identify an allocation's owner in
/// debuggers and in Driver Verifier's leak reports.
///
/// The zero tag (`PoolTag::new([0; 4])`) can be made but never allocates:
/// `ExAllocatePoolWithTag` bugchecks on it (`BAD_POOL_CALLER`), so every
/// allocation in this module rejects it first.
///
/// # IRQL
/// Any.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolTag(u32);

impl PoolTag {
    /// A tag from its four characters, in reading order (`*b"Wsk "`).
    #[must_use]
    pub const fn new(chars: [u8; 4]) -> Self {
        Self(u32::from_le_bytes(chars))
    }

    /// The value passed to the kernel.
    #[must_use]
    pub const fn value(self) -> u32 {
        self.0
    }

    /// The four characters.
    #[must_use]
    pub const fn chars(self) -> [u8; 4] {
        self.0.to_le_bytes()
    }

    /// Whether the kernel accepts this tag for an allocation: any tag but
    /// zero.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub const fn is_valid(self) -> bool {
        self.0 != 0
    }

    /// Registration blocks.
    pub const REGISTRATION: Self = Self::new(*b"WskR");
    /// Events.
    pub const EVENT: Self = Self::new(*b"WskE");
    /// In-flight operation blocks.
    pub const OPERATION: Self = Self::new(*b"WskO");
    /// Data buffers.
    pub const BUFFER: Self = Self::new(*b"WskB");
}

impl fmt::Debug for PoolTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let chars = self.chars();
        write!(f, "PoolTag(\"{}\")", chars.escape_ascii())
    }
}

/// The one way this module asks the kernel for pool.
fn allocate(bytes: usize, tag: PoolTag) -> Result<NonNull<u8>> {
    // A zero tag is a bugcheck (BAD_POOL_CALLER), not a failed allocation:
    // refuse it with the status a bad parameter gets.
    if !tag.is_valid() {
        return Err(Error::InvalidArgument(NtStatus::INVALID_PARAMETER));
    }
    // SAFETY: a plain non-paged allocation; valid at IRQL <= DISPATCH_LEVEL,
    // which every caller of this module runs at.
    let raw = unsafe { sys::ExAllocatePoolWithTag(NonPagedPoolNx, bytes.max(1), tag.value()) };
    NonNull::new(raw.cast::<u8>()).ok_or(Error::InsufficientResources(
        NtStatus::INSUFFICIENT_RESOURCES,
    ))
}

/// # Safety
/// `block` came from [`allocate`] with the same tag and is not used again.
unsafe fn free(block: NonNull<u8>, tag: PoolTag) {
    // SAFETY: per the contract; IRQL <= DISPATCH_LEVEL.
    unsafe { sys::ExFreePoolWithTag(block.as_ptr().cast(), tag.value()) };
}

/// One `T` in tagged non-paged pool: it never moves, so its address can be
/// handed to the kernel.
///
/// # IRQL
/// Allocation and drop at `DISPATCH_LEVEL` or below.
///
/// # Invariants
/// `ptr` is a live pool block of `tag` holding an initialised `T`, owned by
/// this box.
pub struct PoolBox<T> {
    ptr: NonNull<T>,
    tag: PoolTag,
    _owns: PhantomData<T>,
}

// SAFETY: a `PoolBox` owns its `T` like `Box` does; pool memory is usable
// from any thread.
unsafe impl<T: Send> Send for PoolBox<T> {}
// SAFETY: as for `Box`: shared access only hands out `&T`.
unsafe impl<T: Sync> Sync for PoolBox<T> {}

impl<T> PoolBox<T> {
    const FITS: () = assert!(
        align_of::<T>() <= POOL_ALIGNMENT,
        "pool blocks are 16-byte aligned"
    );

    /// Moves `value` into a new pool block.
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`STATUS_INVALID_PARAMETER`) for the zero
    /// tag, before the kernel is called; [`Error::InsufficientResources`]
    /// when the pool is exhausted.
    pub fn new(value: T, tag: PoolTag) -> Result<Self> {
        let init = |slot: *mut T| {
            // SAFETY: `slot` is a fresh, suitably aligned block of `T`'s size.
            unsafe { slot.write(value) };
        };
        // SAFETY: the closure writes a whole `T`.
        unsafe { Self::new_with(tag, init) }
    }

    /// A new block initialised in place by `init`, for values that must not
    /// move once set up (a `KEVENT`).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    ///
    /// # Safety
    /// `init` must leave a fully initialised `T` at the pointer it gets.
    pub(crate) unsafe fn new_with(tag: PoolTag, init: impl FnOnce(*mut T)) -> Result<Self> {
        let () = Self::FITS;
        let block = allocate(size_of::<T>(), tag)?.cast::<T>();
        init(block.as_ptr());
        // INVARIANT: allocated with `tag` and initialised by `init`.
        Ok(Self {
            ptr: block,
            tag,
            _owns: PhantomData,
        })
    }

    /// The value's address, stable for the box's life.
    #[must_use]
    pub const fn as_ptr(&self) -> *mut T {
        self.ptr.as_ptr()
    }

    /// Gives up ownership: the block stays allocated until
    /// [`from_raw`](Self::from_raw) takes it back.
    #[must_use]
    pub const fn into_raw(self) -> NonNull<T> {
        let ptr = self.ptr;
        core::mem::forget(self);
        ptr
    }

    /// Moves the value out and frees the block.
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL` or below.
    #[must_use]
    pub fn into_inner(self) -> T {
        let (ptr, tag) = (self.ptr, self.tag);
        core::mem::forget(self);
        // SAFETY: an initialised value this box owned, read once; the
        // block is freed below without dropping it again.
        let value = unsafe { ptr.as_ptr().read() };
        // SAFETY: allocated by `allocate` with `tag`; freed once.
        unsafe { free(ptr.cast(), tag) };
        value
    }

    /// Takes back a block from [`into_raw`](Self::into_raw).
    ///
    /// # Safety
    /// `ptr` came from `into_raw` of a box with this `tag`, and is taken
    /// back once.
    #[must_use]
    pub const unsafe fn from_raw(ptr: NonNull<T>, tag: PoolTag) -> Self {
        // INVARIANT: per the contract, an initialised block of `tag`.
        Self {
            ptr,
            tag,
            _owns: PhantomData,
        }
    }
}

impl<T> Deref for PoolBox<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: by the invariant the block holds an initialised `T`.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> DerefMut for PoolBox<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: by the invariant; `&mut self` makes the access unique.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T> Drop for PoolBox<T> {
    fn drop(&mut self) {
        // SAFETY: by the invariant the value is initialised and owned.
        unsafe { self.ptr.as_ptr().drop_in_place() };
        // SAFETY: allocated by `allocate` with `self.tag`; freed once.
        unsafe { free(self.ptr.cast(), self.tag) };
    }
}

impl<T: fmt::Debug> fmt::Debug for PoolBox<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// Bytes in tagged non-paged pool: what send and receive operations hand to
/// the provider (through an MDL) and get back with their result.
///
/// # IRQL
/// Allocation and drop at `DISPATCH_LEVEL` or below.
///
/// # Invariants
/// `ptr` is a live pool block of `tag` with at least `capacity` initialised
/// bytes, or, with the zero tag, a dangling pointer of an empty buffer that
/// owns no pool; `len <= capacity`.
pub struct PoolBuffer {
    ptr: NonNull<u8>,
    len: usize,
    capacity: usize,
    tag: PoolTag,
    /// The MDL describing the whole block: built by the first transfer
    /// and reused by every later one (the block never moves).
    mdl: Option<Mdl>,
}

// SAFETY: owns plain bytes in pool memory, usable from any thread.
unsafe impl Send for PoolBuffer {}
// SAFETY: shared access only reads.
unsafe impl Sync for PoolBuffer {}

impl PoolBuffer {
    /// A buffer of no bytes that owns no pool (nothing to allocate, nothing
    /// to free).
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub const fn empty() -> Self {
        // INVARIANT: the zero tag marks a buffer without a pool block.
        Self {
            ptr: NonNull::dangling(),
            len: 0,
            capacity: 0,
            tag: PoolTag::new([0; 4]),
            mdl: None,
        }
    }

    /// `capacity` zeroed bytes, all of them in use (`len == capacity`).
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`STATUS_INVALID_PARAMETER`) for the zero
    /// tag, before the kernel is called; [`Error::InsufficientResources`]
    /// when the pool is exhausted or cannot hold `capacity` bytes (the
    /// kernel returns NULL for a size no pool can satisfy).
    pub fn zeroed(capacity: usize, tag: PoolTag) -> Result<Self> {
        let ptr = allocate(capacity, tag)?;
        // SAFETY: the block has at least `capacity` bytes (and one byte when
        // `capacity` is zero, which writes nothing).
        unsafe { ptr.as_ptr().write_bytes(0, capacity) };
        // INVARIANT: `capacity` bytes initialised just now.
        Ok(Self {
            ptr,
            len: capacity,
            capacity,
            tag,
            mdl: None,
        })
    }

    /// A copy of `data`.
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`STATUS_INVALID_PARAMETER`) for the zero
    /// tag, before the kernel is called; [`Error::InsufficientResources`]
    /// when the pool is exhausted.
    pub fn from_slice(data: &[u8], tag: PoolTag) -> Result<Self> {
        let mut buffer = Self::zeroed(data.len(), tag)?;
        buffer.copy_from_slice(data);
        Ok(buffer)
    }

    /// How many bytes the block holds.
    #[must_use]
    pub const fn capacity(&self) -> usize {
        self.capacity
    }

    /// Sets how many bytes are in use (e.g. what a receive filled).
    ///
    /// # Panics
    /// If `len` exceeds the capacity.
    pub fn set_len(&mut self, len: usize) {
        assert!(
            len <= self.capacity,
            "length {len} beyond capacity {}",
            self.capacity
        );
        // INVARIANT: checked above.
        self.len = len;
    }

    /// The start of the block, for an MDL.
    #[must_use]
    pub const fn as_mut_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The MDL describing the whole block, built on first use and kept
    /// with the buffer, so that a buffer handed to transfer after transfer
    /// is described once.
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// As [`Mdl::describe`].
    pub(crate) fn describe(&mut self) -> Result<*mut MDL> {
        if self.mdl.is_none() {
            self.mdl = Some(Mdl::describe(self)?);
        }
        Ok(self.mdl.as_ref().map_or(core::ptr::null_mut(), Mdl::as_ptr))
    }

    /// Takes the MDL away from the buffer (to outlive it: a provider that
    /// broke the rules may still use it).
    pub(crate) const fn take_mdl(&mut self) -> Option<Mdl> {
        self.mdl.take()
    }
}

impl Deref for PoolBuffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: by the invariant the first `len` bytes are initialised.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for PoolBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: by the invariant; `&mut self` makes the access unique.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for PoolBuffer {
    fn drop(&mut self) {
        // The MDL goes first: it describes the block.
        drop(self.mdl.take());
        if !self.tag.is_valid() {
            // `empty()`: no pool block.
            return;
        }
        // SAFETY: allocated by `allocate` with `self.tag`; freed once.
        unsafe { free(self.ptr, self.tag) };
    }
}

impl fmt::Debug for PoolBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuffer")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .field("tag", &self.tag)
            .finish_non_exhaustive()
    }
}
