//! Datagram sockets (`WSK_FLAG_DATAGRAM_SOCKET`, UDP): `WskSendTo` and
//! `WskReceiveFrom` with the sender's address.
//!
//! ```text
//! Provider::datagram ──> DatagramSocket ──send_to / receive_from──> ...
//! ```
//!
//! A datagram socket is bound when it is made ([`Provider::datagram`]:
//! `WskSocket`, then `WskBind`; port 0 lets the provider choose). Each send
//! is one datagram of the whole buffer; each receive takes one datagram, up
//! to the buffer's capacity (the rest of a longer one is lost, as UDP
//! does). Like a connection's transfers, each keeps its operation set aside
//! in the socket, so steady traffic allocates nothing; dropping a future
//! cancels its IRP, and the buffer comes back on every path.

use core::net::SocketAddr;
use core::time::Duration;

use super::shared::Direction;
use super::{
    Moved, Raw, address_flow, bind_raw, blocking_on, create_flow, end_transfer, finish,
    start_transfer,
};
use crate::error::{Error, Result};
use crate::kernel::irql::PassiveLevel;
use crate::kernel::pool::PoolBuffer;
use crate::objects::addr::Family;
use crate::objects::registration::{Missing, Provider};
use crate::operation::calls::{self, Table};
use crate::operation::{Await, Blocking, Waiter, run_blocking};
use crate::status::NtStatus;

/// A bound datagram (UDP) socket.
///
/// # IRQL
/// Futures at `DISPATCH_LEVEL` or below; `*_blocking` at `PASSIVE_LEVEL`.
/// Dropping closes the socket without blocking, at `DISPATCH_LEVEL` or
/// below; its pending transfers complete with an error.
pub struct DatagramSocket {
    pub(super) raw: Raw,
    family: Family,
}

async fn datagram_flow<W: Waiter>(
    provider: &Provider,
    waiter: &mut W,
    local: SocketAddr,
) -> Result<DatagramSocket> {
    let family = Family::of(&local);
    let registration = provider.registration();
    if registration.is_missing(Missing::Datagram) {
        // Said once: not asked again (a stub may keep each IRP).
        return Err(Error::NotSupported(NtStatus::NOT_SUPPORTED));
    }
    let created = create_flow(provider, waiter, family, Table::Datagram).await;
    registration.note(Missing::Datagram, &created);
    let raw = created?;
    // On failure `raw` is dropped, which closes the socket.
    bind_raw(&raw, waiter, local).await?;
    Ok(DatagramSocket { raw, family })
}

async fn send_to_flow<W: Waiter>(
    socket: &DatagramSocket,
    waiter: &mut W,
    buffer: PoolBuffer,
    remote: SocketAddr,
) -> (Result<usize>, PoolBuffer) {
    if Family::of(&remote) != socket.family() {
        return (
            Err(Error::InvalidArgument(NtStatus::INVALID_PARAMETER)),
            buffer,
        );
    }
    let submit = |handle: &_, registration: &_, buffer, spare: &_| {
        calls::send_to(handle, registration, buffer, remote, spare)
    };
    let op = match start_transfer(&socket.raw, buffer, Direction::Send, submit) {
        Ok(op) => op,
        Err((result, buffer, _)) => return (result, buffer),
    };
    let result = finish(waiter, &op).await;
    let (result, buffer, _) = end_transfer(&socket.raw, op, result, Direction::Send);
    (result, buffer)
}

/// A receive's outcome: the datagram's length and sender, and the buffer
/// with its length set to the bytes that arrived.
type Received = (Result<(usize, SocketAddr)>, PoolBuffer);

async fn receive_from_flow<W: Waiter>(
    socket: &DatagramSocket,
    waiter: &mut W,
    buffer: PoolBuffer,
) -> Received {
    let mut op = match start_transfer(&socket.raw, buffer, Direction::Receive, calls::receive_from)
    {
        Ok(op) => op,
        Err((result, buffer, _)) => return (result.map(|_| unreachable!("not sent")), buffer),
    };
    let result = finish(waiter, &op).await;
    let sender = op
        .is_complete()
        .then(|| op.payload_mut().sender())
        .flatten();
    received_from(
        end_transfer(&socket.raw, op, result, Direction::Receive),
        sender,
    )
}

/// The buffer's length set to what arrived, and the sender with the count.
fn received_from((result, mut buffer, moved): Moved, sender: Option<SocketAddr>) -> Received {
    buffer.set_len(moved.min(buffer.capacity()));
    let result = result.and_then(|count| {
        sender
            .map(|sender| (count, sender))
            .ok_or(Error::Other(NtStatus::UNSUCCESSFUL))
    });
    (result, buffer)
}

impl Provider {
    /// Creates a datagram (UDP) socket bound to `local` (`WskSocket` with
    /// `WSK_FLAG_DATAGRAM_SOCKET`, then `WskBind`; port 0: the provider
    /// chooses, [`DatagramSocket::local_address`] tells which).
    ///
    /// # IRQL
    /// Poll at `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// [`Error::AddressInUse`]; [`Error::NotSupported`] when the provider
    /// offers no datagram sockets; what the provider returns otherwise;
    /// [`Error::ProviderUnavailable`] once deregistration has begun.
    pub fn datagram(
        &self,
        local: SocketAddr,
    ) -> impl Future<Output = Result<DatagramSocket>> + Send + 'static {
        let provider = self.clone();
        async move { datagram_flow(&provider, &mut Await, local).await }
    }

    /// [`datagram`](Self::datagram), blocking up to `timeout` (both calls
    /// together).
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL` (the token proves it).
    ///
    /// # Errors
    /// As `datagram`, and [`Error::TimedOut`].
    pub fn datagram_blocking(
        &self,
        irql: &PassiveLevel,
        timeout: Duration,
        local: SocketAddr,
    ) -> Result<DatagramSocket> {
        run_blocking(datagram_flow(
            self,
            &mut Blocking::new(irql, timeout),
            local,
        ))
    }
}

impl DatagramSocket {
    const fn family(&self) -> Family {
        self.family
    }

    /// Sends all of `buffer` as one datagram to `remote` (`WskSendTo`);
    /// the buffer comes back with the result. An empty buffer sends
    /// nothing and gives `Ok(0)`.
    ///
    /// # IRQL
    /// Poll at `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a `remote` of the other family,
    /// before any call; what the provider returns (a datagram too long for
    /// the network, say).
    pub fn send_to(
        &self,
        buffer: PoolBuffer,
        remote: SocketAddr,
    ) -> impl Future<Output = (Result<usize>, PoolBuffer)> + Send + '_ {
        async move { send_to_flow(self, &mut Await, buffer, remote).await }
    }

    /// [`send_to`](Self::send_to), blocking up to `timeout`.
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL`.
    ///
    /// # Errors
    /// As `send_to`, and [`Error::TimedOut`].
    pub fn send_to_blocking(
        &self,
        irql: &PassiveLevel,
        timeout: Duration,
        buffer: PoolBuffer,
        remote: SocketAddr,
    ) -> (Result<usize>, PoolBuffer) {
        run_blocking(send_to_flow(
            self,
            &mut blocking_on(&self.raw, irql, timeout),
            buffer,
            remote,
        ))
    }

    /// Receives one datagram into `buffer` (up to its capacity;
    /// `WskReceiveFrom`): its length and its sender, and the buffer with
    /// its length set to what arrived. A buffer of zero capacity is
    /// rejected with [`Error::InvalidArgument`] before any call.
    ///
    /// A datagram longer than the buffer is cut to it, and nothing says so
    /// (no control data is asked for): give a buffer as large as the
    /// largest datagram expected.
    ///
    /// # IRQL
    /// Poll at `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// What the provider returns.
    pub fn receive_from(&self, buffer: PoolBuffer) -> impl Future<Output = Received> + Send + '_ {
        async move { receive_from_flow(self, &mut Await, buffer).await }
    }

    /// [`receive_from`](Self::receive_from), blocking up to `timeout`.
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL`.
    ///
    /// # Errors
    /// As `receive_from`, and [`Error::TimedOut`] when no datagram came in
    /// time (the receive was cancelled).
    pub fn receive_from_blocking(
        &self,
        irql: &PassiveLevel,
        timeout: Duration,
        buffer: PoolBuffer,
    ) -> Received {
        run_blocking(receive_from_flow(
            self,
            &mut blocking_on(&self.raw, irql, timeout),
            buffer,
        ))
    }

    /// The address the socket is bound to (`WskGetLocalAddress`).
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

    /// Closes the socket (`WskCloseSocket`) and waits for the close.
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

impl core::fmt::Debug for DatagramSocket {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DatagramSocket").finish_non_exhaustive()
    }
}
