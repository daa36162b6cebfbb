//! Windows `SOCKADDR_IN`/`SOCKADDR_IN6` <-> host socket addresses.
//!
//! Windows numbers `AF_INET6` 23 (Linux: 10), so the client's structures are
//! translated field by field rather than handed to the host as they are.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::abi::{
    ADDRESS_FAMILY, AF_INET, AF_INET6, NTSTATUS, SOCKADDR, SOCKADDR_IN, SOCKADDR_IN6,
    STATUS_INVALID_PARAMETER,
};

/// The two address families the provider serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The family a client names with a Windows `ADDRESS_FAMILY`.
    pub const fn from_windows(family: ADDRESS_FAMILY) -> Option<Self> {
        match family {
            AF_INET => Some(Self::V4),
            AF_INET6 => Some(Self::V6),
            _ => None,
        }
    }

    pub const fn of(address: &SocketAddr) -> Self {
        match address {
            SocketAddr::V4(_) => Self::V4,
            SocketAddr::V6(_) => Self::V6,
        }
    }

    pub const fn domain(self) -> socket2::Domain {
        match self {
            Self::V4 => socket2::Domain::IPV4,
            Self::V6 => socket2::Domain::IPV6,
        }
    }
}

/// Reads a client's `SOCKADDR_IN` or `SOCKADDR_IN6`; NULL or another family
/// is `STATUS_INVALID_PARAMETER`, as Windows answers `EAFNOSUPPORT`.
///
/// # Safety
/// `address` is NULL or points to a `SOCKADDR` whose family says how long
/// it is (16 bytes for `AF_INET`, 28 for `AF_INET6`), as WSK requires.
pub unsafe fn read(address: *const SOCKADDR) -> Result<SocketAddr, NTSTATUS> {
    if address.is_null() {
        return Err(STATUS_INVALID_PARAMETER);
    }
    // SAFETY: every SOCKADDR starts with its family (the contract).
    let family = unsafe { address.cast::<ADDRESS_FAMILY>().read_unaligned() };
    match Family::from_windows(family) {
        Some(Family::V4) => {
            // SAFETY: an AF_INET address is a SOCKADDR_IN (the contract).
            let v4 = unsafe { address.cast::<SOCKADDR_IN>().read_unaligned() };
            Ok(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(v4.sin_addr),
                u16::from_be(v4.sin_port),
            )))
        }
        Some(Family::V6) => {
            // SAFETY: an AF_INET6 address is a SOCKADDR_IN6 (the contract).
            let v6 = unsafe { address.cast::<SOCKADDR_IN6>().read_unaligned() };
            Ok(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(v6.sin6_addr),
                u16::from_be(v6.sin6_port),
                u32::from_be(v6.sin6_flowinfo),
                v6.sin6_scope_id,
            )))
        }
        None => Err(STATUS_INVALID_PARAMETER),
    }
}

/// Writes `address` as the Windows structure of its family.
///
/// # Safety
/// `out` points to writable memory large enough for that structure (a
/// `SOCKADDR_STORAGE` always is).
pub const unsafe fn write(address: &SocketAddr, out: *mut SOCKADDR) {
    match address {
        SocketAddr::V4(v4) => {
            let raw = SOCKADDR_IN {
                sin_family: AF_INET,
                sin_port: v4.port().to_be(),
                sin_addr: v4.ip().octets(),
                sin_zero: [0; 8],
            };
            // SAFETY: room for a SOCKADDR_IN (the contract).
            unsafe { out.cast::<SOCKADDR_IN>().write_unaligned(raw) };
        }
        SocketAddr::V6(v6) => {
            let raw = SOCKADDR_IN6 {
                sin6_family: AF_INET6,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo().to_be(),
                sin6_addr: v6.ip().octets(),
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: room for a SOCKADDR_IN6 (the contract).
            unsafe { out.cast::<SOCKADDR_IN6>().write_unaligned(raw) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::SOCKADDR_STORAGE;

    fn round_trip(address: SocketAddr) -> SocketAddr {
        let mut storage = SOCKADDR_STORAGE {
            ss_family: 0,
            ss_data: [0; 126],
        };
        let out = (&raw mut storage).cast::<SOCKADDR>();
        // SAFETY: a SOCKADDR_STORAGE holds either structure.
        unsafe { write(&address, out) };
        // SAFETY: written just now.
        unsafe { read(out) }.expect("a family the provider serves")
    }

    #[test]
    fn addresses_survive_the_windows_structures() {
        for text in [
            "127.0.0.1:80",
            "[::1]:8080",
            "[fe80::1%3]:443",
            "10.1.2.3:65535",
        ] {
            let address: SocketAddr = text.parse().unwrap();
            assert_eq!(round_trip(address), address, "{text}");
        }
    }

    #[test]
    fn windows_numbers_af_inet6_23_and_rejects_other_families() {
        let mut storage = SOCKADDR_STORAGE {
            ss_family: 0,
            ss_data: [0; 126],
        };
        // SAFETY: a SOCKADDR_STORAGE holds either structure.
        unsafe { write(&"[::1]:1".parse().unwrap(), (&raw mut storage).cast()) };
        assert_eq!(storage.ss_family, 23);
        // Linux's AF_INET6 means nothing to WSK.
        let linux = SOCKADDR_IN6 {
            sin6_family: 10,
            ..SOCKADDR_IN6::default()
        };
        // SAFETY: a readable SOCKADDR_IN6.
        let read_linux = unsafe { read((&raw const linux).cast()) };
        assert_eq!(read_linux, Err(STATUS_INVALID_PARAMETER));
        // SAFETY: NULL is accepted (and refused).
        let read_null = unsafe { read(core::ptr::null()) };
        assert_eq!(read_null, Err(STATUS_INVALID_PARAMETER));
    }
}
