//! Host names: `WskGetAddressInfo`, then `WskFreeAddressInfo`; and
//! `WskGetNameInfo` the other way.
//!
//! Both run at `PASSIVE_LEVEL` only (Microsoft's pages for them), so name
//! resolution is a blocking call that takes a [`PassiveLevel`] token: from a
//! driver's own threads, or from an executor task (tasks run at
//! `PASSIVE_LEVEL` on system worker threads: make the token with
//! [`PassiveLevel::check`] there). The provider's list is copied into an
//! [`Addresses`] and freed before the call returns.
//!
//! ```no_run
//! # fn demo(provider: &wsk::Provider) -> Result<(), wsk::Error> {
//! use core::time::Duration;
//! let passive = wsk::PassiveLevel::check().expect("a PASSIVE_LEVEL thread");
//! let addresses = provider.resolve_blocking(&passive, Duration::from_secs(5), "localhost", 6379)?;
//! let first = addresses.first().copied();
//! # Ok(()) }
//! ```

use core::net::SocketAddr;
use core::ops::Deref;
use core::time::Duration;

use crate::error::{Error, Result};
use crate::kernel::irql::PassiveLevel;
use crate::objects::addr::RawAddress;
use crate::objects::registration::{Missing, Provider};
use crate::operation::Blocking;
use crate::operation::calls;
use crate::status::NtStatus;

/// The most bytes of a name [`Provider::name_of_blocking`] gives: the
/// provider writes at most 255 UTF-16 units, each at most 3 bytes of UTF-8
/// (a DNS name is at most 253 ASCII bytes).
pub const MAX_HOST_NAME: usize = 3 * calls::MAX_NAME;

/// A host's name, as [`Provider::name_of_blocking`] found it.
///
/// # IRQL
/// Any (a value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostName {
    text: heapless::String<MAX_HOST_NAME>,
}

impl HostName {
    /// The name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl core::fmt::Display for HostName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.text)
    }
}

/// The most addresses [`Provider::resolve_blocking`] keeps, in the
/// provider's order.
pub const MAX_ADDRESSES: usize = 16;

/// The addresses a name resolved to, in the provider's order (at most
/// [`MAX_ADDRESSES`]), each with the port asked for.
///
/// # IRQL
/// Any (a value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Addresses {
    list: heapless::Vec<SocketAddr, MAX_ADDRESSES>,
}

impl Deref for Addresses {
    type Target = [SocketAddr];

    fn deref(&self) -> &[SocketAddr] {
        &self.list
    }
}

impl Provider {
    /// Resolves `host` (a name, or an IPv4 or IPv6 literal) to addresses
    /// with `port` (`WskGetAddressInfo`, any family, stream sockets), then
    /// frees the provider's list (`WskFreeAddressInfo`).
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL` (the token proves it).
    ///
    /// # Errors
    /// [`Error::IrqlTooHigh`] when the thread is above `PASSIVE_LEVEL` after
    /// all (a token made earlier); [`Error::InvalidArgument`] for an empty name, one with a NUL or
    /// longer than 255 UTF-16 units, before any call; [`Error::NotFound`]
    /// when the name does not resolve; [`Error::NotSupported`] when the
    /// provider has no `WskGetAddressInfo`; [`Error::TimedOut`] when
    /// `timeout` passed (the call was cancelled); what the provider
    /// returns otherwise.
    pub fn resolve_blocking(
        &self,
        irql: &PassiveLevel,
        timeout: Duration,
        host: &str,
        port: u16,
    ) -> Result<Addresses> {
        // A token proves the IRQL only when it was made: both calls need
        // PASSIVE_LEVEL itself (not only a wait's APC_LEVEL at most).
        PassiveLevel::check().map_err(Error::IrqlTooHigh)?;
        // The capture is held until the list is freed: the client the free
        // names stays valid (deregistration releases it after).
        let captured = self.enter()?;
        let mut op = calls::get_address_info(self, &captured, host, port)?;
        let waited = Blocking::new(irql, timeout).block(&op);
        // Completed, within the bound or within the cancel's grace: the
        // list is this caller's to read and free, here at PASSIVE_LEVEL.
        // Given up on (a provider that ignores the cancel beyond
        // CANCEL_GRACE), a list it gives later cannot be freed: its
        // completion runs at up to DISPATCH_LEVEL.
        let list = if op.is_complete() {
            op.payload_mut().take_result()
        } else {
            None
        };
        let mut addresses = Addresses::default();
        if let Some(head) = list {
            let mut node = head.as_ptr();
            while !node.is_null() && !addresses.list.is_full() {
                // SAFETY: a node of the provider's list, valid until it is
                // freed below.
                let entry = unsafe { &*node };
                // SAFETY: the node's address of `ai_addrlen` bytes.
                let address = unsafe { RawAddress::read(entry.ai_addr, entry.ai_addrlen) };
                if let Some(mut address) = address {
                    address.set_port(port);
                    let _ = addresses.list.push(address);
                }
                node = entry.ai_next;
            }
            // SAFETY: the list this call's completed WskGetAddressInfo gave
            // under `captured`, freed once, at PASSIVE_LEVEL (checked on
            // entry, and the thread has not been raised since).
            unsafe { calls::free_address_info(&captured, head) };
        }
        waited?;
        op.result()?;
        if addresses.is_empty() {
            return Err(Error::NotFound(NtStatus::NOT_FOUND));
        }
        Ok(addresses)
    }

    /// The name of the host at `address` (`WskGetNameInfo`, a name
    /// required: an address without one is [`Error::NotFound`]).
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL` (the token proves it).
    ///
    /// # Errors
    /// [`Error::IrqlTooHigh`] when the thread is above `PASSIVE_LEVEL` after
    /// all; [`Error::NotFound`] when the address has no name;
    /// [`Error::NotSupported`] when the provider has no `WskGetNameInfo`
    /// (Wine 8's is a stub); [`Error::TimedOut`]; what the provider returns
    /// otherwise.
    pub fn name_of_blocking(
        &self,
        irql: &PassiveLevel,
        timeout: Duration,
        address: SocketAddr,
    ) -> Result<HostName> {
        PassiveLevel::check().map_err(Error::IrqlTooHigh)?;
        let registration = self.registration();
        if registration.is_missing(Missing::NameInfo) {
            // Said once: not asked again (a stub may keep each IRP).
            return Err(Error::NotSupported(NtStatus::NOT_SUPPORTED));
        }
        let captured = self.enter()?;
        let mut op = calls::get_name_info(self, &captured, address)?;
        Blocking::new(irql, timeout).block(&op)?;
        let result = op.result();
        registration.note(Missing::NameInfo, &result);
        result?;
        let mut name = HostName::default();
        for unit in char::decode_utf16(op.payload_mut().name().iter().copied()) {
            // At most 255 units of at most 3 bytes each: room for all
            // (`MAX_HOST_NAME`); an unpaired surrogate becomes U+FFFD.
            let pushed = name.text.push(unit.unwrap_or(char::REPLACEMENT_CHARACTER));
            debug_assert!(pushed.is_ok(), "MAX_HOST_NAME holds 255 units");
        }
        Ok(name)
    }
}
