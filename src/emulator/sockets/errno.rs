//! Host `errno` values as the `NTSTATUS` Windows' TCP/IP stack reports for
//! the same condition: the one place this translation is made.

use std::io;

use crate::abi::{
    NTSTATUS, STATUS_ACCESS_DENIED, STATUS_ADDRESS_ALREADY_EXISTS, STATUS_CONNECTION_ABORTED,
    STATUS_CONNECTION_ACTIVE, STATUS_CONNECTION_DISCONNECTED, STATUS_CONNECTION_REFUSED,
    STATUS_CONNECTION_RESET, STATUS_HOST_UNREACHABLE, STATUS_INSUFFICIENT_RESOURCES,
    STATUS_INVALID_ADDRESS_COMPONENT, STATUS_INVALID_CONNECTION, STATUS_INVALID_DEVICE_STATE,
    STATUS_INVALID_PARAMETER, STATUS_IO_TIMEOUT, STATUS_NETWORK_UNREACHABLE, STATUS_NOT_SUPPORTED,
    STATUS_UNSUCCESSFUL,
};

/// The status for a host `errno`. Anything without a Windows counterpart
/// becomes `STATUS_UNSUCCESSFUL`.
#[must_use]
pub const fn status_from_errno(errno: i32) -> NTSTATUS {
    match errno {
        libc::ECONNREFUSED => STATUS_CONNECTION_REFUSED,
        libc::ENETUNREACH | libc::ENETDOWN => STATUS_NETWORK_UNREACHABLE,
        libc::EHOSTUNREACH | libc::EHOSTDOWN => STATUS_HOST_UNREACHABLE,
        libc::ETIMEDOUT => STATUS_IO_TIMEOUT,
        libc::ECONNRESET => STATUS_CONNECTION_RESET,
        libc::ECONNABORTED => STATUS_CONNECTION_ABORTED,
        // Writing after the connection was shut down: Windows reports the
        // connection as disconnected.
        libc::EPIPE | libc::ESHUTDOWN => STATUS_CONNECTION_DISCONNECTED,
        libc::EADDRINUSE => STATUS_ADDRESS_ALREADY_EXISTS,
        libc::EADDRNOTAVAIL => STATUS_INVALID_ADDRESS_COMPONENT,
        libc::EISCONN => STATUS_CONNECTION_ACTIVE,
        libc::ENOTCONN => STATUS_INVALID_CONNECTION,
        libc::EACCES | libc::EPERM => STATUS_ACCESS_DENIED,
        libc::ENOBUFS | libc::ENOMEM | libc::EMFILE | libc::ENFILE => STATUS_INSUFFICIENT_RESOURCES,
        libc::EAFNOSUPPORT | libc::EINVAL => STATUS_INVALID_PARAMETER,
        libc::EALREADY => STATUS_INVALID_DEVICE_STATE,
        libc::EOPNOTSUPP => STATUS_NOT_SUPPORTED,
        _ => STATUS_UNSUCCESSFUL,
    }
}

/// The status for a failed host call.
#[must_use]
pub fn status_of(error: &io::Error) -> NTSTATUS {
    error
        .raw_os_error()
        .map_or(STATUS_UNSUCCESSFUL, status_from_errno)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_values_map_to_the_statuses_windows_reports() {
        let table = [
            (libc::ECONNREFUSED, STATUS_CONNECTION_REFUSED),
            (libc::ENETUNREACH, STATUS_NETWORK_UNREACHABLE),
            (libc::EHOSTUNREACH, STATUS_HOST_UNREACHABLE),
            (libc::ETIMEDOUT, STATUS_IO_TIMEOUT),
            (libc::ECONNRESET, STATUS_CONNECTION_RESET),
            (libc::ECONNABORTED, STATUS_CONNECTION_ABORTED),
            (libc::EPIPE, STATUS_CONNECTION_DISCONNECTED),
            (libc::ESHUTDOWN, STATUS_CONNECTION_DISCONNECTED),
            (libc::EADDRINUSE, STATUS_ADDRESS_ALREADY_EXISTS),
            (libc::EADDRNOTAVAIL, STATUS_INVALID_ADDRESS_COMPONENT),
            (libc::EISCONN, STATUS_CONNECTION_ACTIVE),
            (libc::ENOTCONN, STATUS_INVALID_CONNECTION),
            (libc::EACCES, STATUS_ACCESS_DENIED),
            (libc::EPERM, STATUS_ACCESS_DENIED),
            (libc::ENOBUFS, STATUS_INSUFFICIENT_RESOURCES),
            (libc::ENOMEM, STATUS_INSUFFICIENT_RESOURCES),
            (libc::EMFILE, STATUS_INSUFFICIENT_RESOURCES),
            (libc::EAFNOSUPPORT, STATUS_INVALID_PARAMETER),
            (libc::EINVAL, STATUS_INVALID_PARAMETER),
            (libc::EOPNOTSUPP, STATUS_NOT_SUPPORTED),
            (libc::EIO, STATUS_UNSUCCESSFUL),
        ];
        for (errno, status) in table {
            assert_eq!(
                crate::NtStatus(status_from_errno(errno)),
                crate::NtStatus(status),
                "errno {errno} ({})",
                io::Error::from_raw_os_error(errno)
            );
        }
    }

    #[test]
    fn an_error_without_an_errno_is_unsuccessful() {
        let error = io::Error::other("not from the OS");
        assert_eq!(status_of(&error), STATUS_UNSUCCESSFUL);
        let refused = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(status_of(&refused), STATUS_CONNECTION_REFUSED);
    }
}
