//! WSK sockets as typestates, and the three ways to connect.
//!
//! ```text
//! Provider::socket ──> Socket ──bind──> BoundSocket ──connect / connect_ex──> Connection
//! Provider::socket_connect ─────────────────────────────────────────────────> Connection
//! ```
//!
//! Every operation comes twice: as a future (`Send`, pollable at IRQL <=
//! `DISPATCH_LEVEL`, woken from the completion routine) and as a blocking
//! call (`*_blocking`) that takes a `PassiveLevel` token and a timeout. Both
//! run the same flow. Dropping a future cancels its IRP and frees nothing
//! the provider may still touch; a blocking call whose timeout expires
//! cancels its IRP, waits for the completion, and returns
//! [`Error::TimedOut`].
//!
//! Handles are owned (`'static`): a driver keeps them in its device
//! context or moves them into a task. The futures of [`Provider`] hold a
//! clone of the capture, so they are `'static` too. Deregistration closes
//! whatever sockets are still open; a handle used afterwards answers
//! [`Error::ForcedClosed`].
//!
//! Misuse does not compile. A socket must be bound before it connects:
//!
//! ```compile_fail
//! # async fn demo(provider: &wsk::Provider) -> Result<(), wsk::Error> {
//! let socket = provider.socket(wsk::Family::V4, wsk::SocketKind::Connection).await?;
//! let connection = socket.connect("127.0.0.1:7".parse().unwrap()).await?; // no `connect` before `bind`
//! # Ok(()) }
//! ```
//!
//! A closed connection is gone:
//!
//! ```compile_fail
//! # async fn demo(connection: wsk::Connection, buffer: wsk::PoolBuffer) {
//! connection.close().await.unwrap();
//! let _ = connection.send(buffer).await; // `connection` was moved by `close`
//! # }
//! ```

#![allow(
    clippy::manual_async_fn,
    reason = "the `Send` bound on each future is part of the API"
)]

mod closer;
pub mod datagram;
pub mod events;
pub mod listener;
pub mod options;
pub mod shared;

use core::net::SocketAddr;
use core::time::Duration;

use self::shared::{Direction, SocketRef};
use crate::error::{Error, Result};
use crate::kernel::irql::PassiveLevel;
use crate::kernel::pool::{PoolBuffer, PoolTag};
use crate::objects::addr::Family;
use crate::objects::registration::{Missing, Provider, RegistrationRef};
use crate::operation::calls::{self, SocketHandle, SocketKind, Table};
use crate::operation::{Await, Blocking, Operation, Payload, Spare, Waiter, run_blocking};
use crate::status::NtStatus;

/// The most `WskConnectEx` sends with the connect.
pub const CONNECT_EX_MAX_DATA: usize = 65_535;

/// A socket owned by one of the handles: dropping it closes the socket
/// without blocking. Public only to name it in the sealed trait behind
/// [`SocketOptions`](options::SocketOptions); it offers nothing outside the
/// crate.
pub struct Raw {
    socket: SocketRef,
}

impl Raw {
    /// `WskGetLocalAddress` (`remote`: `WskGetRemoteAddress`), blocking up
    /// to `timeout`: what every handle's `*_address_blocking` does.
    fn address_blocking(
        &self,
        irql: &PassiveLevel,
        timeout: Duration,
        remote: bool,
    ) -> Result<SocketAddr> {
        run_blocking(address_flow(
            self,
            &mut blocking_on(self, irql, timeout),
            remote,
        ))
    }

    /// Closes and waits for the close to complete. Nothing to wait for if
    /// someone else (deregistration, a timeout's escalation) closed it
    /// already: that close is under way, and `Ok(())` comes back at once.
    async fn close<W: Waiter>(self, waiter: &mut W) -> Result<()> {
        let Some(op) = self.socket.close() else {
            return Ok(());
        };
        // A blocking waiter returns within its bound even if the provider
        // holds on to the close; the operation is then left to finish.
        waiter.complete(&op).await?;
        op.status().ok()
    }

    /// Submits one call on the socket under its run-down protection.
    fn submit<T>(
        &self,
        call: impl FnOnce(&SocketHandle, &RegistrationRef) -> Result<T>,
    ) -> Result<T> {
        let entered = self.socket.enter()?;
        call(entered.handle(), self.socket.registration())
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        self.socket.close_detached();
    }
}

/// A blocking waiter for a call on `raw`'s socket: after a timeout whose
/// cancel the provider ignores, it aborts and then closes that socket.
fn blocking_on(raw: &Raw, irql: &PassiveLevel, timeout: Duration) -> Blocking<SocketRef> {
    Blocking::new(irql, timeout).escalating(raw.socket.clone())
}

/// Waits for `op`, then turns its status into a `Result` of its information.
async fn finish<W: Waiter, P: Payload>(waiter: &mut W, op: &Operation<P>) -> Result<usize> {
    waiter.complete(op).await?;
    op.result()
}

/// A new, unbound socket (`WskSocket`).
///
/// # IRQL
/// Futures at `DISPATCH_LEVEL` or below; `*_blocking` at `PASSIVE_LEVEL`.
/// Dropping closes the socket without blocking, at `DISPATCH_LEVEL` or below.
pub struct Socket {
    raw: Raw,
    family: Family,
    kind: SocketKind,
}

/// A bound socket (`WskBind`), ready to connect.
///
/// # IRQL
/// As [`Socket`].
pub struct BoundSocket {
    raw: Raw,
}

/// A connected socket: send, receive, disconnect, close.
///
/// # IRQL
/// As [`Socket`].
pub struct Connection {
    raw: Raw,
}

/// Which way a connect-with-data call went.
///
/// # IRQL
/// Any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectPath {
    /// `WskConnectEx` connected and sent the data.
    ConnectEx,
    /// The provider has no `WskConnectEx` (or answered
    /// `STATUS_NOT_IMPLEMENTED` / `STATUS_NOT_SUPPORTED`): `WskConnect`,
    /// then `WskSend`.
    ConnectThenSend,
}

impl ConnectPath {
    /// A short name (`connect-ex`, `connect+send`).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::ConnectEx => "connect-ex",
            Self::ConnectThenSend => "connect+send",
        }
    }
}

/// What [`BoundSocket::connect_ex`] did besides connecting.
///
/// # IRQL
/// Any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectEx {
    /// The path taken.
    pub path: ConnectPath,
    /// Bytes of initial data sent: all of it on success (Microsoft's
    /// `WskConnectEx` page gives no byte count in `IoStatus.Information`;
    /// the call sends the whole buffer or fails).
    pub sent: usize,
}

// --------------------------------------------------------------- flows
async fn socket_flow<W: Waiter>(
    provider: &Provider,
    waiter: &mut W,
    family: Family,
    kind: SocketKind,
) -> Result<Socket> {
    Ok(Socket {
        raw: create_flow(provider, waiter, family, kind.into()).await?,
        family,
        kind,
    })
}

/// `WskSocket` for a socket with the dispatch table `table`.
async fn create_flow<W: Waiter>(
    provider: &Provider,
    waiter: &mut W,
    family: Family,
    table: Table,
) -> Result<Raw> {
    let mut op = calls::socket(provider, family, table)?;
    finish(waiter, &op).await?;
    let socket = op.payload_mut().take()?;
    op.consume();
    Ok(Raw { socket })
}

async fn socket_connect_flow<W: Waiter>(
    provider: &Provider,
    waiter: &mut W,
    local: SocketAddr,
    remote: SocketAddr,
) -> Result<Connection> {
    if Family::of(&local) != Family::of(&remote) {
        return Err(Error::InvalidArgument(NtStatus::INVALID_PARAMETER));
    }
    let mut op = calls::socket_connect(provider, local, remote)?;
    finish(waiter, &op).await?;
    let socket = op.payload_mut().take()?;
    op.consume();
    Ok(Connection {
        raw: Raw { socket },
    })
}

async fn bind_flow<W: Waiter>(
    socket: Socket,
    waiter: &mut W,
    local: SocketAddr,
) -> Result<BoundSocket> {
    if Family::of(&local) != socket.family {
        return Err(Error::InvalidArgument(NtStatus::INVALID_PARAMETER));
    }
    bind_raw(&socket.raw, waiter, local).await?;
    Ok(BoundSocket { raw: socket.raw })
}

/// `WskBind` of `raw` to `local`.
async fn bind_raw<W: Waiter>(raw: &Raw, waiter: &mut W, local: SocketAddr) -> Result<()> {
    let op = raw.socket.call_operation()?;
    let op = raw.submit(|handle, registration| calls::bind(handle, registration, local, op))?;
    finish(waiter, &op).await.map(drop)
}

async fn connect_flow<W: Waiter>(
    bound: BoundSocket,
    waiter: &mut W,
    remote: SocketAddr,
) -> Result<Connection> {
    let op = bound.raw.socket.call_operation()?;
    let op = bound
        .raw
        .submit(|handle, registration| calls::connect(handle, registration, remote, op))?;
    finish(waiter, &op).await?;
    drop(op);
    Ok(Connection { raw: bound.raw })
}

async fn connect_ex_flow<W: Waiter>(
    bound: BoundSocket,
    waiter: &mut W,
    remote: SocketAddr,
    data: Option<PoolBuffer>,
) -> (Result<(Connection, ConnectEx)>, Option<PoolBuffer>) {
    // Rejected before any call, with the status the provider would give.
    if data
        .as_ref()
        .is_some_and(|data| data.len() > CONNECT_EX_MAX_DATA)
    {
        return (Err(Error::InvalidArgument(NtStatus::BUFFER_OVERFLOW)), data);
    }
    let mut data = data;
    let submitted = match bound.raw.socket.enter() {
        Err(error) => return (Err(error), data),
        Ok(entered)
            if entered.handle().has_connect_ex()
                && !bound
                    .raw
                    .socket
                    .registration()
                    .is_missing(Missing::ConnectEx) =>
        {
            Some(calls::connect_ex(
                entered.handle(),
                bound.raw.socket.registration(),
                remote,
                data.take(),
            ))
        }
        Ok(_) => None,
    };
    if let Some(submitted) = submitted {
        let mut op = match submitted {
            Ok(op) => op,
            Err((error, data)) => return (Err(error), data),
        };
        let completion = waiter.complete(&op).await;
        if !op.is_complete() {
            // Given up on after a timeout: the data stays with the
            // abandoned operation (see `transfer_flow`).
            return (completion.map(|()| unreachable!("completed")), None);
        }
        let buffer = take_buffer(&mut op);
        if let Err(error) = completion {
            return (Err(error), buffer);
        }
        let status = op.status();
        if status != NtStatus::NOT_IMPLEMENTED && status != NtStatus::NOT_SUPPORTED {
            let outcome = status.ok().map(|()| {
                // Microsoft's WskConnectEx page does not say that
                // IoStatus.Information carries a byte count (WskSend's
                // does): a successful WskConnectEx sent all of its data.
                let outcome = ConnectEx {
                    path: ConnectPath::ConnectEx,
                    sent: buffer.as_ref().map_or(0, |data| data.len()),
                };
                (Connection { raw: bound.raw }, outcome)
            });
            return (outcome, buffer);
        }
        bound
            .raw
            .socket
            .registration()
            .note(Missing::ConnectEx, &status.ok());
        data = buffer;
    }
    let connection = match connect_flow(bound, waiter, remote).await {
        Ok(connection) => connection,
        Err(error) => return (Err(error), data),
    };
    match data {
        Some(buffer) if !buffer.is_empty() => {
            let (sent, buffer) = send_flow(&connection, waiter, buffer).await;
            let outcome = sent.map(|sent| {
                (
                    connection,
                    ConnectEx {
                        path: ConnectPath::ConnectThenSend,
                        sent,
                    },
                )
            });
            (outcome, Some(buffer))
        }
        other => (
            Ok((
                connection,
                ConnectEx {
                    path: ConnectPath::ConnectThenSend,
                    sent: 0,
                },
            )),
            other,
        ),
    }
}

async fn send_flow<W: Waiter>(
    connection: &Connection,
    waiter: &mut W,
    buffer: PoolBuffer,
) -> (Result<usize>, PoolBuffer) {
    send_with(connection, waiter, buffer, calls::send).await
}

/// A send through `submit` (`WskSend` with its flags).
async fn send_with<W: Waiter>(
    connection: &Connection,
    waiter: &mut W,
    buffer: PoolBuffer,
    submit: Transfer,
) -> (Result<usize>, PoolBuffer) {
    let (result, buffer, _) =
        transfer_flow(connection, waiter, buffer, Direction::Send, submit).await;
    (result, buffer)
}

async fn receive_flow<W: Waiter>(
    connection: &Connection,
    waiter: &mut W,
    buffer: PoolBuffer,
) -> (Result<usize>, PoolBuffer) {
    receive_with(connection, waiter, buffer, calls::receive).await
}

/// A receive through `submit` (`WskReceive` with its flags).
async fn receive_with<W: Waiter>(
    connection: &Connection,
    waiter: &mut W,
    buffer: PoolBuffer,
    submit: Transfer,
) -> (Result<usize>, PoolBuffer) {
    received(transfer_flow(connection, waiter, buffer, Direction::Receive, submit).await)
}

/// A receive's outcome: what arrived stays visible, even when a timeout
/// cut the receive after the provider had taken bytes from the stream.
fn received((result, mut buffer, moved): Moved) -> (Result<usize>, PoolBuffer) {
    buffer.set_len(moved.min(buffer.capacity()));
    (result, buffer)
}

type Transfer = fn(
    &SocketHandle,
    &RegistrationRef,
    PoolBuffer,
    &Spare<calls::Data>,
) -> core::result::Result<Operation<calls::Data>, calls::Refused>;

async fn transfer_flow<W: Waiter>(
    connection: &Connection,
    waiter: &mut W,
    buffer: PoolBuffer,
    direction: Direction,
    submit: Transfer,
) -> Moved {
    let op = match start_transfer(&connection.raw, buffer, direction, submit) {
        Ok(op) => op,
        Err(ended) => return ended,
    };
    let result = finish(waiter, &op).await;
    end_transfer(&connection.raw, op, result, direction)
}

/// [`transfer_flow`] for a blocking caller: the same two halves around one
/// blocking wait, without building a future.
fn transfer_blocking(
    connection: &Connection,
    irql: &PassiveLevel,
    timeout: Duration,
    buffer: PoolBuffer,
    direction: Direction,
    submit: Transfer,
) -> Moved {
    let op = match start_transfer(&connection.raw, buffer, direction, submit) {
        Ok(op) => op,
        Err(ended) => return ended,
    };
    let socket = &connection.raw.socket;
    let result = Blocking::new(irql, timeout)
        .escalating(socket)
        .block(&op)
        .and_then(|()| op.result());
    end_transfer(&connection.raw, op, result, direction)
}

/// How a transfer ended: its result, the buffer back, and the bytes moved.
type Moved = (Result<usize>, PoolBuffer, usize);

/// Submits a send or receive of `buffer`, in the operation the socket set
/// aside for `direction` when there is one (steady traffic allocates
/// nothing; a concurrent transfer finds none and makes its own). A transfer
/// that ends before any call (an empty send: nothing to do; a refusal)
/// comes back as `Err`.
fn start_transfer(
    raw: &Raw,
    buffer: PoolBuffer,
    direction: Direction,
    submit: impl FnOnce(
        &SocketHandle,
        &RegistrationRef,
        PoolBuffer,
        &Spare<calls::Data>,
    ) -> core::result::Result<Operation<calls::Data>, calls::Refused>,
) -> core::result::Result<Operation<calls::Data>, Moved> {
    if direction == Direction::Send && buffer.is_empty() {
        return Err((Ok(0), buffer, 0));
    }
    let socket = &raw.socket;
    let submitted = match socket.enter() {
        Ok(entered) => submit(
            entered.handle(),
            socket.registration(),
            buffer,
            socket.spare(direction),
        ),
        Err(error) => Err((error, buffer)),
    };
    submitted.map_err(|(error, buffer)| (Err(error), buffer, 0))
}

/// The buffer and the bytes moved back from a transfer that `result` says
/// how it ended, and its operation set aside for the next one.
fn end_transfer(
    raw: &Raw,
    mut op: Operation<calls::Data>,
    result: Result<usize>,
    direction: Direction,
) -> Moved {
    if !op.is_complete() {
        // A timeout the provider would not give the IRP back for, even once
        // the socket was closed: the buffer stays with the abandoned
        // operation (freed when the provider completes it, if ever).
        return (result, PoolBuffer::empty(), 0);
    }
    let (status, information) = op.outcome();
    let moved = if status.is_success() { information } else { 0 };
    // The waiter reports a timeout even when the provider completed the
    // call before the cancel reached it (`Blocking` hides nothing: the
    // operation says so): for a transfer the bytes moved, and say so.
    let result = match result {
        Err(Error::TimedOut(_)) if status.is_success() => Ok(information),
        result => result,
    };
    let buffer = take_buffer(&mut op).expect("the buffer comes back");
    op.consume();
    raw.socket.spare(direction).put(op);
    (result, buffer, moved)
}

/// A completed operation's buffer, back to the caller. If the provider
/// returned without completing the IRP (the operation stays quarantined),
/// the buffer's MDL stays with the operation: that provider may still use
/// it.
fn take_buffer(op: &mut Operation<calls::Data>) -> Option<PoolBuffer> {
    let mut buffer = op.payload_mut().take_buffer()?;
    if op.was_reclaimed() {
        op.payload_mut().keep_mdl(&mut buffer);
    }
    Some(buffer)
}

async fn disconnect_flow<W: Waiter>(connection: &Connection, waiter: &mut W) -> Result<()> {
    disconnect_with(connection, waiter, false).await
}

async fn abort_flow<W: Waiter>(connection: &Connection, waiter: &mut W) -> Result<()> {
    disconnect_with(connection, waiter, true).await
}

/// `WskDisconnect`, unless the provider said it has none.
async fn disconnect_with<W: Waiter>(
    connection: &Connection,
    waiter: &mut W,
    abortive: bool,
) -> Result<()> {
    let registration = connection.raw.socket.registration();
    if registration.is_missing(Missing::Disconnect) {
        return Err(Error::NotSupported(NtStatus::NOT_IMPLEMENTED));
    }
    let op = connection
        .raw
        .submit(|handle, registration| calls::disconnect(handle, registration, abortive))?;
    let result = finish(waiter, &op).await.map(drop);
    registration.note(Missing::Disconnect, &result);
    result
}

/// What [`Connection::close_gracefully`] read while it waited for the
/// peer's end.
const DRAIN_CHUNK: usize = 512;

async fn graceful_close_flow<W: Waiter>(connection: Connection, waiter: &mut W) -> Result<usize> {
    // Any error below drops `connection`, which closes it abortively.
    match disconnect_flow(&connection, waiter).await {
        Ok(()) => {}
        // A provider without WskDisconnect (Wine 8): its close is all there is.
        Err(Error::NotSupported(_)) => return connection.raw.close(waiter).await.map(|()| 0),
        Err(error) => return Err(error),
    }
    let mut buffer = PoolBuffer::zeroed(DRAIN_CHUNK, PoolTag::BUFFER)?;
    let mut discarded = 0;
    loop {
        let (received, back) = receive_flow(&connection, waiter, buffer).await;
        match received? {
            0 => break,
            read => discarded += read,
        }
        buffer = back;
    }
    // Disconnected in both directions: the close is graceful.
    connection.raw.close(waiter).await?;
    Ok(discarded)
}

async fn address_flow<W: Waiter>(raw: &Raw, waiter: &mut W, remote: bool) -> Result<SocketAddr> {
    let op = raw.socket.call_operation()?;
    let mut op =
        raw.submit(|handle, registration| calls::address(handle, registration, remote, op))?;
    finish(waiter, &op).await?;
    op.payload_mut()
        .address_mut()
        .get()
        .ok_or(Error::Other(NtStatus::UNSUCCESSFUL))
}

async fn fast_open_flow<W: Waiter>(socket: &Socket, waiter: &mut W) -> Result<()> {
    let op = socket.raw.submit(|handle, registration| {
        calls::option(
            handle,
            registration,
            crate::abi::IPPROTO_TCP,
            crate::abi::TCP_FASTOPEN,
            Some(1),
        )
    })?;
    finish(waiter, &op).await.map(drop)
}

// --------------------------------------------------------------- surfaces
impl Provider {
    /// Creates a socket of `kind` for `family` (`WskSocket`).
    ///
    /// # IRQL
    /// Poll at `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// What the provider returns; [`Error::InsufficientResources`] when the
    /// IRP or pool runs out; [`Error::ProviderUnavailable`] once
    /// deregistration has begun.
    pub fn socket(
        &self,
        family: Family,
        kind: SocketKind,
    ) -> impl Future<Output = Result<Socket>> + Send + 'static {
        let provider = self.clone();
        async move { socket_flow(&provider, &mut Await, family, kind).await }
    }

    /// [`socket`](Self::socket), blocking up to `timeout`.
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL` (the token proves it).
    ///
    /// # Errors
    /// As `socket`, and [`Error::TimedOut`] when `timeout` passed (the IRP
    /// was cancelled; see [`CANCEL_GRACE`](crate::CANCEL_GRACE) for how long
    /// the call then waits for it).
    pub fn socket_blocking(
        &self,
        irql: &PassiveLevel,
        timeout: Duration,
        family: Family,
        kind: SocketKind,
    ) -> Result<Socket> {
        run_blocking(socket_flow(
            self,
            &mut Blocking::new(irql, timeout),
            family,
            kind,
        ))
    }

    /// Creates, binds and connects a connection socket in one call
    /// (`WskSocketConnect`); the family comes from `local`.
    ///
    /// # IRQL
    /// Poll at `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`STATUS_INVALID_PARAMETER`) when the two
    /// families differ, before any call; [`Error::NotSupported`] when the
    /// provider has no `WskSocketConnect`; otherwise the provider's result
    /// (refused, unreachable, ...).
    pub fn socket_connect(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> impl Future<Output = Result<Connection>> + Send + 'static {
        let provider = self.clone();
        async move { socket_connect_flow(&provider, &mut Await, local, remote).await }
    }

    /// [`socket_connect`](Self::socket_connect), blocking up to `timeout`.
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL` (the token proves it).
    ///
    /// # Errors
    /// As `socket_connect`, and [`Error::TimedOut`] (the socket, if the
    /// provider created one anyway, is closed).
    pub fn socket_connect_blocking(
        &self,
        irql: &PassiveLevel,
        timeout: Duration,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<Connection> {
        run_blocking(socket_connect_flow(
            self,
            &mut Blocking::new(irql, timeout),
            local,
            remote,
        ))
    }
}

impl Socket {
    /// The socket's kind.
    #[must_use]
    pub const fn kind(&self) -> SocketKind {
        self.kind
    }

    /// Sets `TCP_FASTOPEN` (`WskControlSocket`), so that a later
    /// [`BoundSocket::connect_ex`] may carry its data in the SYN.
    ///
    /// # IRQL
    /// Poll at `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// [`Error::NotSupported`] when the provider does not offer the option.
    pub fn enable_fast_open(&mut self) -> impl Future<Output = Result<()>> + Send + '_ {
        async move { fast_open_flow(self, &mut Await).await }
    }

    /// [`enable_fast_open`](Self::enable_fast_open), blocking.
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL`.
    ///
    /// # Errors
    /// As `enable_fast_open`, and [`Error::TimedOut`].
    pub fn enable_fast_open_blocking(
        &mut self,
        irql: &PassiveLevel,
        timeout: Duration,
    ) -> Result<()> {
        run_blocking(fast_open_flow(
            self,
            &mut blocking_on(&self.raw, irql, timeout),
        ))
    }

    /// Binds to `local` (`WskBind`). On failure the socket is closed.
    ///
    /// # IRQL
    /// Poll at `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `local` is of another family (before
    /// any call); [`Error::AddressInUse`]; what the provider returns.
    pub fn bind(
        self,
        local: SocketAddr,
    ) -> impl Future<Output = Result<BoundSocket>> + Send + 'static {
        async move { bind_flow(self, &mut Await, local).await }
    }

    /// [`bind`](Self::bind), blocking.
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL`.
    ///
    /// # Errors
    /// As `bind`, and [`Error::TimedOut`].
    pub fn bind_blocking(
        self,
        irql: &PassiveLevel,
        timeout: Duration,
        local: SocketAddr,
    ) -> Result<BoundSocket> {
        let mut waiter = blocking_on(&self.raw, irql, timeout);
        run_blocking(bind_flow(self, &mut waiter, local))
    }

    /// Closes the socket and waits for the close.
    ///
    /// # IRQL
    /// Poll at `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// What `WskCloseSocket` returns.
    pub fn close(self) -> impl Future<Output = Result<()>> + Send + 'static {
        async move { self.raw.close(&mut Await).await }
    }
}

impl BoundSocket {
    /// The address the socket is bound to (`WskGetLocalAddress`), before it
    /// connects: the port the provider chose when bound to port 0.
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

    /// Connects to `remote` (`WskConnect`). On failure the socket is closed.
    ///
    /// # IRQL
    /// Poll at `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// Refused, unreachable, timed out, ... as the provider reports.
    pub fn connect(
        self,
        remote: SocketAddr,
    ) -> impl Future<Output = Result<Connection>> + Send + 'static {
        async move { connect_flow(self, &mut Await, remote).await }
    }

    /// [`connect`](Self::connect), blocking up to `timeout`.
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL`.
    ///
    /// # Errors
    /// As `connect`, and [`Error::TimedOut`].
    pub fn connect_blocking(
        self,
        irql: &PassiveLevel,
        timeout: Duration,
        remote: SocketAddr,
    ) -> Result<Connection> {
        let mut waiter = blocking_on(&self.raw, irql, timeout);
        run_blocking(connect_flow(self, &mut waiter, remote))
    }

    /// Connects and sends `data` (at most [`CONNECT_EX_MAX_DATA`] bytes)
    /// with `WskConnectEx`: in the SYN if TCP Fast Open was enabled and the
    /// provider can. Without `WskConnectEx` (a NULL entry, or the provider
    /// answers `STATUS_NOT_IMPLEMENTED` / `STATUS_NOT_SUPPORTED`) it falls
    /// back to connect then send, and says so in [`ConnectEx::path`]. The
    /// data buffer comes back with the result, whatever it is.
    ///
    /// # IRQL
    /// Poll at `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`STATUS_BUFFER_OVERFLOW`) for more than
    /// 65,535 bytes, before anything is sent; otherwise as `connect` and
    /// `send`.
    pub fn connect_ex(
        self,
        remote: SocketAddr,
        data: Option<PoolBuffer>,
    ) -> impl Future<Output = (Result<(Connection, ConnectEx)>, Option<PoolBuffer>)> + Send + 'static
    {
        async move { connect_ex_flow(self, &mut Await, remote, data).await }
    }

    /// [`connect_ex`](Self::connect_ex), blocking up to `timeout`.
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL`.
    ///
    /// # Errors
    /// As `connect_ex`, and [`Error::TimedOut`].
    pub fn connect_ex_blocking(
        self,
        irql: &PassiveLevel,
        timeout: Duration,
        remote: SocketAddr,
        data: Option<PoolBuffer>,
    ) -> (Result<(Connection, ConnectEx)>, Option<PoolBuffer>) {
        let mut waiter = blocking_on(&self.raw, irql, timeout);
        run_blocking(connect_ex_flow(self, &mut waiter, remote, data))
    }

    /// Closes the socket and waits for the close.
    ///
    /// # IRQL
    /// Poll at `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// What `WskCloseSocket` returns.
    pub fn close(self) -> impl Future<Output = Result<()>> + Send + 'static {
        async move { self.raw.close(&mut Await).await }
    }
}

impl Connection {
    /// Sends all of `buffer` (`WskSend`); the buffer comes back with the
    /// result, whatever it is.
    ///
    /// # IRQL
    /// Poll at `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// Reset, disconnected, ... as the provider reports.
    pub fn send(
        &self,
        buffer: PoolBuffer,
    ) -> impl Future<Output = (Result<usize>, PoolBuffer)> + Send + '_ {
        async move { send_flow(self, &mut Await, buffer).await }
    }

    /// [`send`](Self::send), blocking up to `timeout`.
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL`.
    ///
    /// # Errors
    /// As `send`, and [`Error::TimedOut`]: the send was cancelled, but some
    /// or all of the data may have gone out before the cancel took effect,
    /// so the stream's position is unknown: close the connection.
    pub fn send_blocking(
        &self,
        irql: &PassiveLevel,
        timeout: Duration,
        buffer: PoolBuffer,
    ) -> (Result<usize>, PoolBuffer) {
        let (result, buffer, _) =
            transfer_blocking(self, irql, timeout, buffer, Direction::Send, calls::send);
        (result, buffer)
    }

    /// [`send`](Self::send) with `WSK_FLAG_NODELAY`: the data goes out at
    /// once, not held to be coalesced with later data (Nagle's algorithm),
    /// for this send only (see `SocketOption::NoDelay` for every send).
    ///
    /// # IRQL
    /// Poll at `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// As `send`.
    pub fn send_now(
        &self,
        buffer: PoolBuffer,
    ) -> impl Future<Output = (Result<usize>, PoolBuffer)> + Send + '_ {
        async move { send_with(self, &mut Await, buffer, calls::send_no_delay).await }
    }

    /// [`send_now`](Self::send_now), blocking up to `timeout`.
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL`.
    ///
    /// # Errors
    /// As [`send_blocking`](Self::send_blocking).
    pub fn send_now_blocking(
        &self,
        irql: &PassiveLevel,
        timeout: Duration,
        buffer: PoolBuffer,
    ) -> (Result<usize>, PoolBuffer) {
        let (result, buffer, _) = transfer_blocking(
            self,
            irql,
            timeout,
            buffer,
            Direction::Send,
            calls::send_no_delay,
        );
        (result, buffer)
    }

    /// [`receive`](Self::receive) with `WSK_FLAG_WAITALL`: completes once
    /// the buffer is full (its capacity), or the peer ends the connection
    /// first (fewer bytes, the buffer's length saying how many), or it
    /// fails.
    ///
    /// # IRQL
    /// Poll at `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// As `receive`.
    pub fn receive_full(
        &self,
        buffer: PoolBuffer,
    ) -> impl Future<Output = (Result<usize>, PoolBuffer)> + Send + '_ {
        async move { receive_with(self, &mut Await, buffer, calls::receive_full).await }
    }

    /// [`receive_full`](Self::receive_full), blocking up to `timeout`.
    ///
    /// A full receive cut by its timeout is cancelled, and a provider may
    /// complete the cancelled IRP with none of the bytes it had gathered
    /// (the emulator does): they are lost. Close the connection after a
    /// timed-out full receive.
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL`.
    ///
    /// # Errors
    /// As [`receive_blocking`](Self::receive_blocking).
    pub fn receive_full_blocking(
        &self,
        irql: &PassiveLevel,
        timeout: Duration,
        buffer: PoolBuffer,
    ) -> (Result<usize>, PoolBuffer) {
        received(transfer_blocking(
            self,
            irql,
            timeout,
            buffer,
            Direction::Receive,
            calls::receive_full,
        ))
    }

    /// Receives into `buffer` (up to its capacity; `WskReceive`); the
    /// buffer comes back with its length set to what arrived. `Ok(0)` means
    /// the peer closed its side. A buffer of zero capacity is rejected with
    /// [`Error::InvalidArgument`] before any call.
    ///
    /// # IRQL
    /// Poll at `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// Reset, ... as the provider reports.
    pub fn receive(
        &self,
        buffer: PoolBuffer,
    ) -> impl Future<Output = (Result<usize>, PoolBuffer)> + Send + '_ {
        async move { receive_flow(self, &mut Await, buffer).await }
    }

    /// [`receive`](Self::receive), blocking up to `timeout`.
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL`.
    ///
    /// # Errors
    /// As `receive`, and [`Error::TimedOut`]: the receive was cancelled;
    /// bytes the provider had already taken from the stream are in the
    /// returned buffer (its length), not lost.
    pub fn receive_blocking(
        &self,
        irql: &PassiveLevel,
        timeout: Duration,
        buffer: PoolBuffer,
    ) -> (Result<usize>, PoolBuffer) {
        received(transfer_blocking(
            self,
            irql,
            timeout,
            buffer,
            Direction::Receive,
            calls::receive,
        ))
    }

    /// Graceful disconnect of the sending direction (`WskDisconnect`): the
    /// FIN follows the data already sent. Receiving still works until the
    /// peer ends its side; [`close_gracefully`](Self::close_gracefully)
    /// does the whole dance.
    ///
    /// # IRQL
    /// Poll at `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// [`Error::NotConnected`] when already disconnected; what the provider
    /// reports ([`Error::NotSupported`] without `WskDisconnect`, as under
    /// Wine 8).
    pub fn disconnect(&self) -> impl Future<Output = Result<()>> + Send + '_ {
        async move { disconnect_flow(self, &mut Await).await }
    }

    /// Abortive disconnect (`WskDisconnect` with `WSK_FLAG_ABORTIVE`): the
    /// peer sees a reset, data not yet delivered is lost, and pending
    /// operations on the connection complete with an error.
    ///
    /// # IRQL
    /// Poll at `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// What the provider reports ([`Error::NotSupported`] without
    /// `WskDisconnect`).
    pub fn abort(&self) -> impl Future<Output = Result<()>> + Send + '_ {
        async move { abort_flow(self, &mut Await).await }
    }

    /// [`abort`](Self::abort), blocking.
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL`.
    ///
    /// # Errors
    /// As `abort`, and [`Error::TimedOut`].
    pub fn abort_blocking(&self, irql: &PassiveLevel, timeout: Duration) -> Result<()> {
        run_blocking(abort_flow(self, &mut blocking_on(&self.raw, irql, timeout)))
    }

    /// Closes the connection gracefully: disconnects (FIN after the data
    /// sent), receives until the peer's end (discarding what arrives, and
    /// returning how many bytes that was), then closes, which is graceful
    /// once the connection is disconnected in both directions. The peer
    /// sees an orderly end, not a reset.
    ///
    /// On any error the connection is closed abortively. Bound it with
    /// [`timeout`](crate::timeout): dropping the future on expiry closes
    /// abortively too. A provider without `WskDisconnect` (Wine 8) is
    /// closed with `WskCloseSocket` alone.
    ///
    /// # IRQL
    /// Poll at `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// What the disconnect, the receives or the close report;
    /// [`Error::InsufficientResources`] when the drain buffer cannot be
    /// allocated.
    pub fn close_gracefully(self) -> impl Future<Output = Result<usize>> + Send + 'static {
        async move { graceful_close_flow(self, &mut Await).await }
    }

    /// [`close_gracefully`](Self::close_gracefully), blocking: the whole
    /// sequence within `timeout`; once it passes the connection is closed
    /// abortively (see [`CANCEL_GRACE`](crate::CANCEL_GRACE) for the bound).
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL`.
    ///
    /// # Errors
    /// As `close_gracefully`, and [`Error::TimedOut`] when the peer did not
    /// end its side in time.
    pub fn close_gracefully_blocking(
        self,
        irql: &PassiveLevel,
        timeout: Duration,
    ) -> Result<usize> {
        let mut waiter = blocking_on(&self.raw, irql, timeout);
        run_blocking(graceful_close_flow(self, &mut waiter))
    }

    /// [`disconnect`](Self::disconnect), blocking.
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL`.
    ///
    /// # Errors
    /// As `disconnect`, and [`Error::TimedOut`].
    pub fn disconnect_blocking(&self, irql: &PassiveLevel, timeout: Duration) -> Result<()> {
        run_blocking(disconnect_flow(
            self,
            &mut blocking_on(&self.raw, irql, timeout),
        ))
    }

    /// The local address (`WskGetLocalAddress`).
    ///
    /// # IRQL
    /// Poll at `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// As the provider reports.
    pub fn local_address(&self) -> impl Future<Output = Result<SocketAddr>> + Send + '_ {
        async move { address_flow(&self.raw, &mut Await, false).await }
    }

    /// The remote address (`WskGetRemoteAddress`).
    ///
    /// # IRQL
    /// Poll at `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// As the provider reports.
    pub fn remote_address(&self) -> impl Future<Output = Result<SocketAddr>> + Send + '_ {
        async move { address_flow(&self.raw, &mut Await, true).await }
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

    /// [`remote_address`](Self::remote_address), blocking.
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL`.
    ///
    /// # Errors
    /// As `remote_address`, and [`Error::TimedOut`].
    pub fn remote_address_blocking(
        &self,
        irql: &PassiveLevel,
        timeout: Duration,
    ) -> Result<SocketAddr> {
        self.raw.address_blocking(irql, timeout, true)
    }

    /// Closes the connection (`WskCloseSocket`) and waits for the close.
    ///
    /// The close is abortive (the peer sees a reset, and data still in
    /// flight may be lost) unless the connection is disconnected in both
    /// directions: [`disconnect`](Self::disconnect) ran *and* a receive saw
    /// the peer's end. [`close_gracefully`](Self::close_gracefully) does
    /// that; dropping a connection closes it abortively.
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
    /// As `close`, and [`Error::TimedOut`] when the close did not complete in
    /// `timeout` plus the escalation's bound ([`CANCEL_GRACE`](crate::CANCEL_GRACE)):
    /// it is left to finish on its own.
    pub fn close_blocking(self, irql: &PassiveLevel, timeout: Duration) -> Result<()> {
        run_blocking(self.raw.close(&mut Blocking::new(irql, timeout)))
    }
}

impl core::fmt::Debug for Socket {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Socket")
            .field("family", &self.family)
            .finish_non_exhaustive()
    }
}

impl core::fmt::Debug for BoundSocket {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BoundSocket").finish_non_exhaustive()
    }
}

impl core::fmt::Debug for Connection {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}
