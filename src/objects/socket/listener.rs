//! Listening sockets (`WSK_FLAG_LISTEN_SOCKET`) and `WskAccept`.
//!
//! ```text
//! Provider::listen ──> Listener ──accept──> (Connection, peer address)
//! ```
//!
//! A listening socket begins listening when it is bound (Microsoft's
//! "Listening for and Accepting Incoming Connections"), so
//! [`Provider::listen`] creates and binds it in one flow. Each accept
//! prepares the accepted socket's block first (the block's own operation
//! makes the `WskAccept` call, receives the addresses, and later closes the
//! accepted socket), so an accepted connection costs what a connect does,
//! and nothing in steady state. Dropping an accept future cancels its IRP;
//! a connection the provider accepted for a caller who has gone is closed.
//! Closing or dropping the listener, or [`Listener::shutdown`] from another
//! thread or task, completes its pending accepts.
//!
//! An accept is a call on the listening socket:
//!
//! ```compile_fail
//! # async fn demo(listener: wsk::Listener) {
//! listener.close().await.unwrap();
//! let _ = listener.accept().await; // `listener` was moved by `close`
//! # }
//! ```

use core::net::SocketAddr;
use core::time::Duration;

use super::options::{SocketOption, set_option_flow};
use super::shared::SocketRef;
use super::{Connection, Raw, address_flow, bind_raw, blocking_on, create_flow, finish};
use crate::error::{Error, Result};
use crate::kernel::irql::PassiveLevel;
use crate::objects::addr::{Family, RawAddress};
use crate::objects::registration::Provider;
use crate::operation::calls::{self, Table};
use crate::operation::{Await, Blocking, Waiter, run_blocking};
use crate::status::NtStatus;

/// A bound, listening socket.
///
/// # IRQL
/// Futures at `DISPATCH_LEVEL` or below; `*_blocking` at `PASSIVE_LEVEL`.
/// Dropping closes the socket without blocking, at `DISPATCH_LEVEL` or
/// below; its pending accepts complete with an error.
pub struct Listener {
    pub(super) raw: Raw,
}

/// The most options [`Provider::listen_with`] sets before the bind.
pub const MAX_LISTEN_OPTIONS: usize = 8;

/// Options to set between the listening socket's creation and its bind.
type Options = heapless::Vec<SocketOption, MAX_LISTEN_OPTIONS>;

fn options_of(options: &[SocketOption]) -> Result<Options> {
    Options::from_slice(options).map_err(|_| Error::InvalidArgument(NtStatus::INVALID_PARAMETER))
}

async fn listen_flow<W: Waiter>(
    provider: &Provider,
    waiter: &mut W,
    local: SocketAddr,
    options: Options,
) -> Result<Listener> {
    let raw = create_flow(provider, waiter, Family::of(&local), Table::Listen).await?;
    // On failure `raw` is dropped, which closes the socket.
    for option in options {
        set_option_flow(&raw, waiter, option).await?;
    }
    bind_raw(&raw, waiter, local).await?;
    Ok(Listener { raw })
}

async fn accept_flow<W: Waiter>(
    listener: &Listener,
    waiter: &mut W,
) -> Result<(Connection, SocketAddr)> {
    let socket = &listener.raw.socket;
    let mut op = SocketRef::create(
        Table::Connection,
        socket.registration(),
        RawAddress::empty(),
        RawAddress::empty(),
    )?;
    listener
        .raw
        .submit(|handle, registration| calls::accept(handle, registration, &mut op))?;
    finish(waiter, &op).await?;
    let accepted = op.payload_mut().take()?;
    op.consume();
    let remote = op.payload_mut().remote.get();
    drop(op);
    // Without the peer's address the connection is closed (dropped) here.
    let connection = Connection {
        raw: Raw { socket: accepted },
    };
    let remote = remote.ok_or(Error::Other(NtStatus::UNSUCCESSFUL))?;
    Ok((connection, remote))
}

impl Provider {
    /// Creates a listening socket and binds it to `local` (`WskSocket` with
    /// `WSK_FLAG_LISTEN_SOCKET`, then `WskBind`); it listens from then on.
    /// Port 0 lets the provider choose: [`Listener::local_address`] tells
    /// which.
    ///
    /// # IRQL
    /// Poll at `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// [`Error::AddressInUse`]; [`Error::NotSupported`] when the provider
    /// offers no listening sockets; what the provider returns otherwise;
    /// [`Error::ProviderUnavailable`] once deregistration has begun.
    pub fn listen(
        &self,
        local: SocketAddr,
    ) -> impl Future<Output = Result<Listener>> + Send + 'static {
        let provider = self.clone();
        async move { listen_flow(&provider, &mut Await, local, Options::new()).await }
    }

    /// [`listen`](Self::listen), with `options` set before the bind
    /// (`SocketOption::ExclusiveAddressUse` or `ReuseAddress`, which only
    /// then take effect; buffer sizes and keep-alive, which accepted
    /// connections inherit).
    ///
    /// # IRQL
    /// Poll at `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for more than [`MAX_LISTEN_OPTIONS`]
    /// options, before any call; as `listen`, and as
    /// [`SocketOptions::set_option`](super::options::SocketOptions::set_option)
    /// for each option.
    pub fn listen_with(
        &self,
        local: SocketAddr,
        options: &[SocketOption],
    ) -> impl Future<Output = Result<Listener>> + Send + 'static {
        let provider = self.clone();
        let options = options_of(options);
        async move { listen_flow(&provider, &mut Await, local, options?).await }
    }

    /// [`listen_with`](Self::listen_with), blocking up to `timeout` (every
    /// call together).
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL` (the token proves it).
    ///
    /// # Errors
    /// As `listen_with`, and [`Error::TimedOut`].
    pub fn listen_with_blocking(
        &self,
        irql: &PassiveLevel,
        timeout: Duration,
        local: SocketAddr,
        options: &[SocketOption],
    ) -> Result<Listener> {
        let options = options_of(options)?;
        run_blocking(listen_flow(
            self,
            &mut Blocking::new(irql, timeout),
            local,
            options,
        ))
    }

    /// [`listen`](Self::listen), blocking up to `timeout` (both calls
    /// together).
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL` (the token proves it).
    ///
    /// # Errors
    /// As `listen`, and [`Error::TimedOut`].
    pub fn listen_blocking(
        &self,
        irql: &PassiveLevel,
        timeout: Duration,
        local: SocketAddr,
    ) -> Result<Listener> {
        run_blocking(listen_flow(
            self,
            &mut Blocking::new(irql, timeout),
            local,
            Options::new(),
        ))
    }
}

impl Listener {
    /// Waits for the next incoming connection (`WskAccept`) and gives it
    /// with the peer's address.
    ///
    /// # IRQL
    /// Poll at `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// [`Error::ForcedClosed`] once the listener is closed (by
    /// deregistration, say); [`Error::Cancelled`] when the listener was
    /// closed while the accept was pending; what the provider returns.
    pub fn accept(&self) -> impl Future<Output = Result<(Connection, SocketAddr)>> + Send + '_ {
        async move { accept_flow(self, &mut Await).await }
    }

    /// [`accept`](Self::accept), blocking up to `timeout`.
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL`.
    ///
    /// # Errors
    /// As `accept`, and [`Error::TimedOut`] when no connection came in time
    /// (the accept was cancelled; if the provider would not give it back
    /// within [`CANCEL_GRACE`](crate::CANCEL_GRACE), the listener is
    /// closed).
    pub fn accept_blocking(
        &self,
        irql: &PassiveLevel,
        timeout: Duration,
    ) -> Result<(Connection, SocketAddr)> {
        run_blocking(accept_flow(
            self,
            &mut blocking_on(&self.raw, irql, timeout),
        ))
    }

    /// The address the listener is bound to (`WskGetLocalAddress`): the
    /// port the provider chose when bound to port 0.
    ///
    /// # IRQL
    /// Poll at `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// As the provider reports.
    pub fn local_address(&self) -> impl Future<Output = Result<SocketAddr>> + Send + '_ {
        async move { address_flow(&self.raw, &mut Await, false).await }
    }

    /// [`local_address`](Self::local_address), blocking.
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL`.
    ///
    /// # Errors
    /// As `local_address`, and [`Error::TimedOut`].
    pub fn local_address_blocking(
        &self,
        irql: &PassiveLevel,
        timeout: Duration,
    ) -> Result<SocketAddr> {
        self.raw.address_blocking(irql, timeout, false)
    }

    /// Stops listening without waiting, from any thread or task that
    /// shares the listener: the socket is closed (`WskCloseSocket`), its
    /// pending accepts complete with [`Error::Cancelled`], and later calls
    /// answer [`Error::ForcedClosed`]. Dropping the listener, or
    /// [`close`](Self::close), still completes; nothing is closed twice.
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL` or below.
    pub fn shutdown(&self) {
        self.raw.socket.close_detached();
    }

    /// Stops listening (`WskCloseSocket`) and waits for the close; pending
    /// accepts complete with an error.
    ///
    /// # IRQL
    /// Poll at `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// What `WskCloseSocket` returns.
    pub fn close(self) -> impl Future<Output = Result<()>> + Send + 'static {
        async move { self.raw.close(&mut Await).await }
    }

    /// [`close`](Self::close), blocking.
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL`.
    ///
    /// # Errors
    /// As `close`, and [`Error::TimedOut`].
    pub fn close_blocking(self, irql: &PassiveLevel, timeout: Duration) -> Result<()> {
        run_blocking(self.raw.close(&mut Blocking::new(irql, timeout)))
    }
}

impl core::fmt::Debug for Listener {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Listener").finish_non_exhaustive()
    }
}
