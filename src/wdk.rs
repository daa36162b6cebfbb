//! Interop with windows-drivers-rs (`wdk-sys`), for drivers that use both.
//!
//! This crate declares its own kernel ABI (wdk-sys has no WSK bindings and
//! no inline functions such as `IoSetCompletionRoutine`); this module checks
//! at compile time that the shared types have wdk-sys's sizes, and converts
//! raw pointers between the two sets of declarations.
//!
//! Only built on a Windows host with the WDK installed and the `wdk`
//! feature enabled.

use core::mem::size_of;

use crate::abi;
use crate::kernel::irp::Irp;
use crate::kernel::mdl::Mdl;
use crate::status::NtStatus;

const _: () = assert!(size_of::<wdk_sys::IRP>() == size_of::<abi::IRP>());
const _: () =
    assert!(size_of::<wdk_sys::IO_STACK_LOCATION>() == size_of::<abi::IO_STACK_LOCATION>());
const _: () = assert!(size_of::<wdk_sys::KEVENT>() == size_of::<abi::KEVENT>());
const _: () = assert!(size_of::<wdk_sys::MDL>() == size_of::<abi::MDL>());
const _: () = assert!(size_of::<wdk_sys::IO_STATUS_BLOCK>() == size_of::<abi::IO_STATUS_BLOCK>());

impl Irp {
    /// The IRP as wdk-sys declares it.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub const fn as_wdk_irp(&self) -> wdk_sys::PIRP {
        self.as_ptr().cast()
    }
}

impl Mdl {
    /// The MDL as wdk-sys declares it.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub const fn as_wdk_mdl(&self) -> wdk_sys::PMDL {
        self.as_ptr().cast()
    }
}

impl NtStatus {
    /// The value as wdk-sys's `NTSTATUS`.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub const fn to_wdk(self) -> wdk_sys::NTSTATUS {
        self.0
    }
}
