//! Socket options (`WskControlSocket` with `WskSetOption` and
//! `WskGetOption`), for every kind of socket handle.
//!
//! Each option is one `ULONG`, as Microsoft's "WSK Socket Options" pages
//! give them. When an option takes effect matters: `SO_REUSEADDR` and
//! `SO_EXCLUSIVEADDRUSE` only before the socket is bound (on a
//! [`Socket`](super::Socket), or through
//! [`Provider::listen_with`](crate::Provider::listen_with) for a listener);
//! buffer sizes and keep-alive before or after connecting; `TCP_NODELAY`
//! on a connection. A provider that does not
//! offer an option answers [`Error::NotSupported`](crate::Error) or
//! [`Error::InvalidArgument`](crate::Error).
//!
//! ```no_run
//! # async fn demo(connection: &wsk::Connection) -> Result<(), wsk::Error> {
//! use wsk::{SocketOption, SocketOptions};
//! connection.set_option(SocketOption::NoDelay(true)).await?;
//! assert_eq!(connection.option(SocketOption::NoDelay(false)).await?, SocketOption::NoDelay(true));
//! # Ok(()) }
//! ```

use core::time::Duration;

use super::datagram::DatagramSocket;
use super::listener::Listener;
use super::{BoundSocket, Connection, Raw, Socket, blocking_on, finish};
use crate::abi::{
    IPPROTO_TCP, SO_EXCLUSIVEADDRUSE, SO_KEEPALIVE, SO_RCVBUF, SO_REUSEADDR, SO_SNDBUF, SOL_SOCKET,
    TCP_NODELAY,
};
use crate::error::Result;
use crate::kernel::irql::PassiveLevel;
use crate::operation::calls;
use crate::operation::{Await, Waiter, run_blocking};

/// One socket option and its value.
///
/// # IRQL
/// Any (a value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketOption {
    /// `TCP_NODELAY`: send small segments at once (no Nagle delay).
    NoDelay(bool),
    /// `SO_KEEPALIVE`: send keep-alive probes on an idle connection.
    KeepAlive(bool),
    /// `SO_RCVBUF`: the receive buffer, in bytes.
    ReceiveBuffer(u32),
    /// `SO_SNDBUF`: the send buffer, in bytes.
    SendBuffer(u32),
    /// `SO_REUSEADDR`: bind an address another socket holds (before the
    /// bind).
    ReuseAddress(bool),
    /// `SO_EXCLUSIVEADDRUSE`: no other socket may bind this address, even
    /// with `SO_REUSEADDR` (before the bind).
    ExclusiveAddressUse(bool),
}

impl SocketOption {
    /// `(level, ControlCode)`.
    const fn code(self) -> (u32, u32) {
        match self {
            Self::NoDelay(_) => (IPPROTO_TCP, TCP_NODELAY),
            Self::KeepAlive(_) => (SOL_SOCKET, SO_KEEPALIVE),
            Self::ReceiveBuffer(_) => (SOL_SOCKET, SO_RCVBUF),
            Self::SendBuffer(_) => (SOL_SOCKET, SO_SNDBUF),
            Self::ReuseAddress(_) => (SOL_SOCKET, SO_REUSEADDR),
            Self::ExclusiveAddressUse(_) => (SOL_SOCKET, SO_EXCLUSIVEADDRUSE),
        }
    }

    /// The value as the `ULONG` the provider takes.
    const fn value(self) -> u32 {
        match self {
            Self::NoDelay(on)
            | Self::KeepAlive(on)
            | Self::ReuseAddress(on)
            | Self::ExclusiveAddressUse(on) => on as u32,
            Self::ReceiveBuffer(bytes) | Self::SendBuffer(bytes) => bytes,
        }
    }

    /// The same option with the value the provider gave.
    const fn with(self, value: u32) -> Self {
        match self {
            Self::NoDelay(_) => Self::NoDelay(value != 0),
            Self::KeepAlive(_) => Self::KeepAlive(value != 0),
            Self::ReuseAddress(_) => Self::ReuseAddress(value != 0),
            Self::ExclusiveAddressUse(_) => Self::ExclusiveAddressUse(value != 0),
            Self::ReceiveBuffer(_) => Self::ReceiveBuffer(value),
            Self::SendBuffer(_) => Self::SendBuffer(value),
        }
    }
}

/// Sets `option` on `raw` (a step of another flow, such as a listen).
pub(super) async fn set_option_flow<W: Waiter>(
    raw: &Raw,
    waiter: &mut W,
    option: SocketOption,
) -> Result<()> {
    option_flow(raw, waiter, option, true).await.map(drop)
}

async fn option_flow<W: Waiter>(
    raw: &Raw,
    waiter: &mut W,
    option: SocketOption,
    set: bool,
) -> Result<SocketOption> {
    let (level, code) = option.code();
    let value = set.then_some(option.value());
    let mut op =
        raw.submit(|handle, registration| calls::option(handle, registration, level, code, value))?;
    finish(waiter, &op).await?;
    Ok(if set {
        option
    } else {
        option.with(op.payload_mut().value())
    })
}

mod sealed {
    /// The socket handles that carry options.
    pub trait Handle {
        fn raw(&self) -> &super::Raw;
    }
}

/// Setting and reading socket options, on [`Socket`], [`BoundSocket`],
/// [`Connection`], [`Listener`] and [`DatagramSocket`].
///
/// # IRQL
/// Futures at `DISPATCH_LEVEL` or below; `*_blocking` at `PASSIVE_LEVEL`.
pub trait SocketOptions: sealed::Handle {
    /// Sets `option` (`WskSetOption`).
    ///
    /// # IRQL
    /// Poll at `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// What the provider answers: [`Error::NotSupported`](crate::Error)
    /// for an option it does not offer, [`Error::InvalidArgument`](crate::Error)
    /// for one it takes only at another time (before the bind, say).
    fn set_option(&self, option: SocketOption) -> impl Future<Output = Result<()>> + Send + '_
    where
        Self: Sync,
    {
        async move {
            option_flow(self.raw(), &mut Await, option, true)
                .await
                .map(drop)
        }
    }

    /// [`set_option`](Self::set_option), blocking.
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL`.
    ///
    /// # Errors
    /// As `set_option`, and [`Error::TimedOut`](crate::Error).
    fn set_option_blocking(
        &self,
        irql: &PassiveLevel,
        timeout: Duration,
        option: SocketOption,
    ) -> Result<()> {
        run_blocking(option_flow(
            self.raw(),
            &mut blocking_on(self.raw(), irql, timeout),
            option,
            true,
        ))
        .map(drop)
    }

    /// Reads the option `option` names (its value is ignored), as the same
    /// variant with the current value (`WskGetOption`).
    ///
    /// # IRQL
    /// Poll at `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// As [`set_option`](Self::set_option).
    fn option(&self, option: SocketOption) -> impl Future<Output = Result<SocketOption>> + Send + '_
    where
        Self: Sync,
    {
        async move { option_flow(self.raw(), &mut Await, option, false).await }
    }

    /// [`option`](Self::option), blocking.
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL`.
    ///
    /// # Errors
    /// As `option`, and [`Error::TimedOut`](crate::Error).
    fn option_blocking(
        &self,
        irql: &PassiveLevel,
        timeout: Duration,
        option: SocketOption,
    ) -> Result<SocketOption> {
        run_blocking(option_flow(
            self.raw(),
            &mut blocking_on(self.raw(), irql, timeout),
            option,
            false,
        ))
    }
}

macro_rules! handles {
    ($($handle:ty),*) => {$(
        impl sealed::Handle for $handle {
            fn raw(&self) -> &Raw {
                &self.raw
            }
        }
        impl SocketOptions for $handle {}
    )*};
}
handles!(Socket, BoundSocket, Connection, Listener, DatagramSocket);
