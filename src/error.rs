//! The public error type: what a caller can act on, always with the raw
//! `NtStatus`.

use crate::kernel::irql::IrqlTooHigh;
use crate::status::NtStatus;

/// A failed operation.
///
/// Each variant names something a caller can act on and carries the
/// `NtStatus` the kernel or provider returned (or that the library chose,
/// with the value the real provider would have returned, when it rejected
/// input before calling anything).
///
/// # IRQL
/// Any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The remote end refused the connection.
    #[error("connection refused: {0}")]
    Refused(NtStatus),
    /// No route to the network, host, protocol or port.
    #[error("unreachable: {0}")]
    Unreachable(NtStatus),
    /// The connection was reset, aborted or dropped.
    #[error("connection reset: {0}")]
    Reset(NtStatus),
    /// The operation timed out (in the provider, or a library timeout that
    /// cancelled it).
    #[error("timed out: {0}")]
    TimedOut(NtStatus),
    /// The operation was cancelled.
    #[error("cancelled: {0}")]
    Cancelled(NtStatus),
    /// The provider forcibly closed the socket: close it.
    #[error("socket forcibly closed: {0}")]
    ForcedClosed(NtStatus),
    /// This provider does not offer the operation.
    #[error("not supported by this provider: {0}")]
    NotSupported(NtStatus),
    /// Out of pool, IRPs or other kernel resources.
    #[error("insufficient resources: {0}")]
    InsufficientResources(NtStatus),
    /// An argument was rejected (by the library before any call, or by the
    /// provider).
    #[error("invalid argument: {0}")]
    InvalidArgument(NtStatus),
    /// The local address is already in use.
    #[error("address in use: {0}")]
    AddressInUse(NtStatus),
    /// The socket is not (or no longer) connected: e.g. a second
    /// `WskDisconnect`, or a send after an abortive disconnect.
    #[error("not connected: {0}")]
    NotConnected(NtStatus),
    /// The WSK subsystem is not (or no longer) available to this client.
    #[error("WSK provider unavailable: {0}")]
    ProviderUnavailable(NtStatus),
    /// A host name that does not resolve, or an address without a name
    /// (`STATUS_NOT_FOUND`, `STATUS_NO_MATCH`).
    #[error("not found: {0}")]
    NotFound(NtStatus),
    /// A blocking call found the thread above `PASSIVE_LEVEL` / `APC_LEVEL`
    /// (a token copied before a spin lock was taken, say): it refused to
    /// wait instead of bugchecking. Anything it had in flight was cancelled.
    /// Its status is `STATUS_INVALID_DEVICE_STATE`.
    #[error("{0}")]
    IrqlTooHigh(IrqlTooHigh),
    /// Any other failure.
    #[error("{0}")]
    Other(NtStatus),
}

impl Error {
    /// The typed error for a failure status.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub const fn from_status(status: NtStatus) -> Self {
        match status {
            NtStatus::CONNECTION_REFUSED => Self::Refused(status),
            NtStatus::NETWORK_UNREACHABLE
            | NtStatus::HOST_UNREACHABLE
            | NtStatus::PROTOCOL_UNREACHABLE
            | NtStatus::PORT_UNREACHABLE => Self::Unreachable(status),
            NtStatus::CONNECTION_RESET
            | NtStatus::CONNECTION_ABORTED
            | NtStatus::CONNECTION_DISCONNECTED
            | NtStatus::GRACEFUL_DISCONNECT => Self::Reset(status),
            NtStatus::TIMEOUT | NtStatus::IO_TIMEOUT => Self::TimedOut(status),
            NtStatus::CANCELLED => Self::Cancelled(status),
            NtStatus::FILE_FORCED_CLOSED => Self::ForcedClosed(status),
            NtStatus::NOT_SUPPORTED | NtStatus::NOT_IMPLEMENTED | NtStatus::NOINTERFACE => {
                Self::NotSupported(status)
            }
            NtStatus::INSUFFICIENT_RESOURCES => Self::InsufficientResources(status),
            NtStatus::INVALID_PARAMETER
            | NtStatus::BUFFER_OVERFLOW
            | NtStatus::INVALID_ADDRESS
            | NtStatus::INVALID_ADDRESS_COMPONENT => Self::InvalidArgument(status),
            NtStatus::ADDRESS_ALREADY_ASSOCIATED | NtStatus::ADDRESS_ALREADY_EXISTS => {
                Self::AddressInUse(status)
            }
            NtStatus::INVALID_CONNECTION => Self::NotConnected(status),
            NtStatus::DEVICE_NOT_READY => Self::ProviderUnavailable(status),
            NtStatus::NOT_FOUND | NtStatus::NO_MATCH => Self::NotFound(status),
            _ => Self::Other(status),
        }
    }

    /// The raw status behind this error.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub const fn status(&self) -> NtStatus {
        match *self {
            Self::Refused(s)
            | Self::Unreachable(s)
            | Self::Reset(s)
            | Self::TimedOut(s)
            | Self::Cancelled(s)
            | Self::ForcedClosed(s)
            | Self::NotSupported(s)
            | Self::InsufficientResources(s)
            | Self::InvalidArgument(s)
            | Self::AddressInUse(s)
            | Self::NotConnected(s)
            | Self::ProviderUnavailable(s)
            | Self::NotFound(s)
            | Self::Other(s) => s,
            Self::IrqlTooHigh(_) => NtStatus::INVALID_DEVICE_STATE,
        }
    }
}

impl From<IrqlTooHigh> for Error {
    fn from(error: IrqlTooHigh) -> Self {
        Self::IrqlTooHigh(error)
    }
}

impl From<NtStatus> for Error {
    fn from(status: NtStatus) -> Self {
        Self::from_status(status)
    }
}

/// The library's result type.
pub type Result<T, E = Error> = core::result::Result<T, E>;
