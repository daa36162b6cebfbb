//! `NTSTATUS` values the library produces, consumes or names (ntstatus.h).

use super::NTSTATUS;

macro_rules! statuses {
    ($($(#[$doc:meta])* $name:ident = $value:expr;)*) => {
        $(
            $(#[$doc])*
            #[allow(clippy::cast_possible_wrap)]
            pub const $name: NTSTATUS = $value as u32 as i32;
        )*

        /// Every status declared here with its C name, in declaration order:
        /// `NtStatus`'s `Display` and the header check read it.
        pub const STATUS_NAMES: &[(NTSTATUS, &str)] = &[$(($name, stringify!($name))),*];
    };
}

statuses! {
    /// The operation completed successfully.
    STATUS_SUCCESS = 0x0000_0000;
    /// A wait timed out (a success code: never treat it as one).
    STATUS_TIMEOUT = 0x0000_0102;
    /// The operation will complete later (a success code: never treat it as one).
    STATUS_PENDING = 0x0000_0103;
    /// The buffer was too large or too small (a warning, not `NT_SUCCESS`).
    STATUS_BUFFER_OVERFLOW = 0x8000_0005;
    /// Generic failure; also what `IoReuseIrp` leaves in a recycled IRP.
    STATUS_UNSUCCESSFUL = 0xC000_0001;
    /// The function is not implemented.
    STATUS_NOT_IMPLEMENTED = 0xC000_0002;
    /// The handle or object is not valid.
    STATUS_INVALID_HANDLE = 0xC000_0008;
    /// A parameter was invalid.
    STATUS_INVALID_PARAMETER = 0xC000_000D;
    /// A completion routine keeps ownership of its IRP.
    STATUS_MORE_PROCESSING_REQUIRED = 0xC000_0016;
    /// Access was denied.
    STATUS_ACCESS_DENIED = 0xC000_0022;
    /// The buffer is too small.
    STATUS_BUFFER_TOO_SMALL = 0xC000_0023;
    /// Not enough resources (pool, IRPs) to complete the request.
    STATUS_INSUFFICIENT_RESOURCES = 0xC000_009A;
    /// The device is not ready.
    STATUS_DEVICE_NOT_READY = 0xC000_00A3;
    /// The I/O operation timed out.
    STATUS_IO_TIMEOUT = 0xC000_00B5;
    /// The socket was forcibly closed and must be closed by its owner.
    STATUS_FILE_FORCED_CLOSED = 0xC000_00B6;
    /// The request is not supported.
    STATUS_NOT_SUPPORTED = 0xC000_00BB;
    /// The request was cancelled.
    STATUS_CANCELLED = 0xC000_0120;
    /// The object is in a state in which the request is not valid.
    STATUS_INVALID_DEVICE_STATE = 0xC000_0184;
    /// The requested interface is not available.
    STATUS_NOINTERFACE = 0xC000_02B9;
    /// The address is not valid.
    STATUS_INVALID_ADDRESS = 0xC000_0141;
    /// The transport connection is disconnected.
    STATUS_CONNECTION_DISCONNECTED = 0xC000_020C;
    /// The transport connection was reset.
    STATUS_CONNECTION_RESET = 0xC000_020D;
    /// The transport endpoint is already in use.
    STATUS_ADDRESS_ALREADY_EXISTS = 0xC000_020A;
    /// The remote system refused the connection.
    STATUS_CONNECTION_REFUSED = 0xC000_0236;
    /// The connection was gracefully closed.
    STATUS_GRACEFUL_DISCONNECT = 0xC000_0237;
    /// The network is unreachable.
    STATUS_NETWORK_UNREACHABLE = 0xC000_023C;
    /// The host is unreachable.
    STATUS_HOST_UNREACHABLE = 0xC000_023D;
    /// The object (a host name, say) was not found.
    STATUS_NOT_FOUND = 0xC000_0225;
    /// There was no match for the specified key in the index.
    STATUS_NO_MATCH = 0xC000_0272;
    /// A receive event's answer: none of the data indicated was taken.
    STATUS_DATA_NOT_ACCEPTED = 0xC000_021B;
    /// The protocol is unreachable.
    STATUS_PROTOCOL_UNREACHABLE = 0xC000_023E;
    /// The port is unreachable.
    STATUS_PORT_UNREACHABLE = 0xC000_023F;
    /// The local system aborted the connection.
    STATUS_CONNECTION_ABORTED = 0xC000_0241;
    /// The address is already associated with an endpoint.
    STATUS_ADDRESS_ALREADY_ASSOCIATED = 0xC000_0238;
    /// The connection is already established.
    STATUS_CONNECTION_ACTIVE = 0xC000_023B;
    /// The address is not valid in this context.
    STATUS_INVALID_ADDRESS_COMPONENT = 0xC000_0207;
    /// The transport endpoint is not connected.
    STATUS_INVALID_CONNECTION = 0xC000_0140;
}
