//! Compile-only stand-in for `wdk-alloc` 0.4.2: the allocator's type.
#![no_std]

use core::alloc::{GlobalAlloc, Layout};

/// The allocator type; this stand-in never allocates.
pub struct WdkAllocator;

// SAFETY: never hands out memory (null is "allocation failed").
unsafe impl GlobalAlloc for WdkAllocator {
    unsafe fn alloc(&self, _layout: Layout) -> *mut u8 {
        core::ptr::null_mut()
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}
}
