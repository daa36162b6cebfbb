//! `core::net::SocketAddr` <-> `SOCKADDR_IN` / `SOCKADDR_IN6` (with the
//! Windows `AF_INET6`, 23).

use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::abi::{AF_INET, AF_INET6, SOCKADDR, SOCKADDR_STORAGE};

/// An address family the library speaks.
///
/// # IRQL
/// Any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4 (`AF_INET`).
    V4,
    /// IPv6 (`AF_INET6`, 23 on Windows).
    V6,
}

impl Family {
    /// The family of `address`.
    #[must_use]
    pub const fn of(address: &SocketAddr) -> Self {
        match address {
            SocketAddr::V4(_) => Self::V4,
            SocketAddr::V6(_) => Self::V6,
        }
    }

    /// The Windows `ADDRESS_FAMILY` value.
    #[must_use]
    pub const fn raw(self) -> u16 {
        match self {
            Self::V4 => AF_INET,
            Self::V6 => AF_INET6,
        }
    }

    /// The wildcard address of this family with port 0.
    #[must_use]
    pub const fn unspecified(self) -> SocketAddr {
        match self {
            Self::V4 => SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
            Self::V6 => SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0)),
        }
    }
}

/// A socket address in the layout WSK reads, big enough for either family.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct RawAddress {
    storage: SOCKADDR_STORAGE,
}

impl RawAddress {
    /// An all-zero address (family `AF_UNSPEC`), to be filled by the provider.
    #[must_use]
    pub const fn empty() -> Self {
        Self {
            storage: SOCKADDR_STORAGE {
                ss_family: 0,
                ss_data: [0; 126],
            },
        }
    }

    /// The Windows layout of `address`: `SOCKADDR_IN` or `SOCKADDR_IN6`
    /// written byte by byte into the storage (`ss_data` starts at the
    /// structures' offset 2).
    #[must_use]
    pub fn new(address: SocketAddr) -> Self {
        let mut raw = Self::empty();
        let data = &mut raw.storage.ss_data;
        data[0..2].copy_from_slice(&address.port().to_be_bytes());
        match address {
            SocketAddr::V4(v4) => {
                raw.storage.ss_family = AF_INET;
                data[2..6].copy_from_slice(&v4.ip().octets());
            }
            SocketAddr::V6(v6) => {
                raw.storage.ss_family = AF_INET6;
                data[2..6].copy_from_slice(&v6.flowinfo().to_be_bytes());
                data[6..22].copy_from_slice(&v6.ip().octets());
                data[22..26].copy_from_slice(&v6.scope_id().to_ne_bytes());
            }
        }
        raw
    }

    /// The address back as a `SocketAddr`, if its family is one we know.
    #[must_use]
    pub fn get(&self) -> Option<SocketAddr> {
        let data = &self.storage.ss_data;
        let port = u16::from_be_bytes([data[0], data[1]]);
        let bytes = |range: core::ops::Range<usize>| -> [u8; 4] {
            data[range].try_into().expect("four bytes")
        };
        match self.storage.ss_family {
            AF_INET => Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(bytes(2..6)),
                port,
            ))),
            AF_INET6 => {
                let octets: [u8; 16] = data[6..22].try_into().expect("sixteen bytes");
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(octets),
                    port,
                    u32::from_be_bytes(bytes(2..6)),
                    u32::from_ne_bytes(bytes(22..26)),
                )))
            }
            _ => None,
        }
    }

    /// The address a provider's `SOCKADDR` of `len` bytes holds, if its
    /// family is one we know and `len` covers it.
    ///
    /// # Safety
    /// `address` is NULL or readable for `len` bytes.
    #[must_use]
    pub unsafe fn read(address: *const SOCKADDR, len: usize) -> Option<SocketAddr> {
        if address.is_null() {
            return None;
        }
        let mut raw = Self::empty();
        let len = len.min(core::mem::size_of::<SOCKADDR_STORAGE>());
        // SAFETY: readable for `len` bytes (the contract), which fit the
        // storage; the two do not overlap (`raw` is ours).
        unsafe {
            core::ptr::copy_nonoverlapping(
                address.cast::<u8>(),
                (&raw mut raw.storage).cast::<u8>(),
                len,
            );
        }
        let needed = match raw.storage.ss_family {
            AF_INET => 16,
            AF_INET6 => 28,
            _ => return None,
        };
        if len < needed {
            return None;
        }
        raw.get()
    }

    /// The pointer to pass to WSK.
    pub const fn as_mut_ptr(&mut self) -> *mut SOCKADDR {
        (&raw mut self.storage).cast()
    }
}

impl core::fmt::Debug for RawAddress {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.get() {
            Some(address) => write!(f, "RawAddress({address})"),
            None => write!(f, "RawAddress(family {})", self.storage.ss_family),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_bytes(raw: &RawAddress) -> std::vec::Vec<u8> {
        let mut bytes = raw.storage.ss_family.to_ne_bytes().to_vec();
        bytes.extend_from_slice(&raw.storage.ss_data);
        bytes
    }

    #[test]
    fn addresses_round_trip_in_windows_layout() {
        let v4: SocketAddr = "192.0.2.7:8080".parse().unwrap();
        let raw = RawAddress::new(v4);
        let bytes = as_bytes(&raw);
        assert_eq!(&bytes[0..2], &2_u16.to_ne_bytes(), "AF_INET");
        assert_eq!(
            &bytes[2..4],
            &8080_u16.to_be_bytes(),
            "sin_port at offset 2, network order"
        );
        assert_eq!(&bytes[4..8], &[192, 0, 2, 7], "sin_addr at offset 4");
        assert_eq!(raw.get(), Some(v4));

        let v6: SocketAddr = "[2001:db8::1%3]:443".parse().unwrap();
        let raw = RawAddress::new(v6);
        let bytes = as_bytes(&raw);
        assert_eq!(
            &bytes[0..2],
            &23_u16.to_ne_bytes(),
            "AF_INET6 is 23 on Windows"
        );
        assert_eq!(
            &bytes[8..24],
            &"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(
            &bytes[24..28],
            &3_u32.to_ne_bytes(),
            "sin6_scope_id at offset 24"
        );
        assert_eq!(raw.get(), Some(v6));
        assert_eq!(RawAddress::empty().get(), None);
    }
}
