//! `NtStatus`: an `NTSTATUS` with its name.

use core::fmt;

use crate::abi;

/// An `NTSTATUS` value.
///
/// `Display` prints the name and hex value, e.g.
/// `STATUS_CONNECTION_REFUSED (0xC0000236)`.
///
/// `STATUS_PENDING` and `STATUS_TIMEOUT` pass the C `NT_SUCCESS` test but are
/// never successes here: [`NtStatus::is_success`] is false for both.
///
/// # IRQL
/// Any.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NtStatus(pub i32);

macro_rules! named {
    ($($name:ident = $c:ident),* $(,)?) => {
        impl NtStatus {
            $(
                #[doc = concat!("`", stringify!($c), "`.")]
                pub const $name: Self = Self(abi::$c);
            )*
        }
    };
}

named! {
    SUCCESS = STATUS_SUCCESS,
    TIMEOUT = STATUS_TIMEOUT,
    PENDING = STATUS_PENDING,
    BUFFER_OVERFLOW = STATUS_BUFFER_OVERFLOW,
    UNSUCCESSFUL = STATUS_UNSUCCESSFUL,
    NOT_IMPLEMENTED = STATUS_NOT_IMPLEMENTED,
    INVALID_PARAMETER = STATUS_INVALID_PARAMETER,
    MORE_PROCESSING_REQUIRED = STATUS_MORE_PROCESSING_REQUIRED,
    INSUFFICIENT_RESOURCES = STATUS_INSUFFICIENT_RESOURCES,
    DEVICE_NOT_READY = STATUS_DEVICE_NOT_READY,
    IO_TIMEOUT = STATUS_IO_TIMEOUT,
    FILE_FORCED_CLOSED = STATUS_FILE_FORCED_CLOSED,
    NOT_SUPPORTED = STATUS_NOT_SUPPORTED,
    CANCELLED = STATUS_CANCELLED,
    INVALID_DEVICE_STATE = STATUS_INVALID_DEVICE_STATE,
    NOINTERFACE = STATUS_NOINTERFACE,
    CONNECTION_DISCONNECTED = STATUS_CONNECTION_DISCONNECTED,
    CONNECTION_RESET = STATUS_CONNECTION_RESET,
    CONNECTION_REFUSED = STATUS_CONNECTION_REFUSED,
    GRACEFUL_DISCONNECT = STATUS_GRACEFUL_DISCONNECT,
    NETWORK_UNREACHABLE = STATUS_NETWORK_UNREACHABLE,
    HOST_UNREACHABLE = STATUS_HOST_UNREACHABLE,
    NOT_FOUND = STATUS_NOT_FOUND,
    NO_MATCH = STATUS_NO_MATCH,
    CONNECTION_ABORTED = STATUS_CONNECTION_ABORTED,
    ADDRESS_ALREADY_ASSOCIATED = STATUS_ADDRESS_ALREADY_ASSOCIATED,
    ADDRESS_ALREADY_EXISTS = STATUS_ADDRESS_ALREADY_EXISTS,
    PROTOCOL_UNREACHABLE = STATUS_PROTOCOL_UNREACHABLE,
    PORT_UNREACHABLE = STATUS_PORT_UNREACHABLE,
    INVALID_ADDRESS = STATUS_INVALID_ADDRESS,
    INVALID_ADDRESS_COMPONENT = STATUS_INVALID_ADDRESS_COMPONENT,
    INVALID_CONNECTION = STATUS_INVALID_CONNECTION,
    CONNECTION_ACTIVE = STATUS_CONNECTION_ACTIVE,
    ACCESS_DENIED = STATUS_ACCESS_DENIED,
}

impl NtStatus {
    /// The C `NT_SUCCESS` test: severity success or informational. True for
    /// `STATUS_PENDING` and `STATUS_TIMEOUT` too.
    #[must_use]
    pub const fn nt_success(self) -> bool {
        self.0 >= 0
    }

    /// Whether the operation this status reports has really succeeded:
    /// `NT_SUCCESS`, but not `STATUS_PENDING` or `STATUS_TIMEOUT`.
    #[must_use]
    pub const fn is_success(self) -> bool {
        self.nt_success() && self.0 != abi::STATUS_PENDING && self.0 != abi::STATUS_TIMEOUT
    }

    /// The C name, if the library knows it.
    #[must_use]
    pub fn name(self) -> Option<&'static str> {
        abi::STATUS_NAMES
            .iter()
            .find(|(value, _)| *value == self.0)
            .map(|(_, name)| *name)
    }

    /// The value as the unsigned 32-bit number it is usually written as.
    #[must_use]
    #[allow(clippy::cast_sign_loss)]
    pub const fn code(self) -> u32 {
        self.0 as u32
    }

    /// `Ok(())` for a real success, otherwise the typed [`Error`](crate::Error).
    ///
    /// # Errors
    /// Every status that is not [`is_success`](Self::is_success), mapped by
    /// [`Error::from_status`](crate::Error::from_status).
    pub const fn ok(self) -> Result<(), crate::Error> {
        if self.is_success() {
            Ok(())
        } else {
            Err(crate::Error::from_status(self))
        }
    }
}

impl fmt::Display for NtStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} (0x{:08X})", self.code()),
            None => write!(f, "NTSTATUS 0x{:08X}", self.code()),
        }
    }
}

impl fmt::Debug for NtStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<i32> for NtStatus {
    fn from(value: i32) -> Self {
        Self(value)
    }
}

impl From<NtStatus> for i32 {
    fn from(value: NtStatus) -> Self {
        value.0
    }
}
