//! `WskGetAddressInfo` and `WskFreeAddressInfo`, over the host's resolver.
//!
//! The answer is an `ADDRINFOEXW` list the provider owns until the client
//! frees it. Every list handed out is recorded, so that freeing one twice,
//! or one the provider never gave, bugchecks, and a list never freed shows
//! as a leak (`Usage::address_lists`).

use core::ffi::c_void;
use core::mem::size_of;
use core::ptr;
use std::boxed::Box;
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::string::String;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::vec::Vec;

use super::io::{self, IrpHandle};
use super::sockets::write_sockaddr;
use super::verifier::bugcheck;
use super::{Kernel, irql, provider};
use crate::abi::{
    ADDRESS_FAMILY, ADDRINFOEXW, AF_INET, AF_INET6, AF_UNSPEC, IRP, NI_NAMEREQD, NI_NUMERICHOST,
    NS_ALL, NTSTATUS, SOCKADDR, SOCKADDR_IN6, SOCKADDR_STORAGE, STATUS_BUFFER_OVERFLOW,
    STATUS_INVALID_PARAMETER, STATUS_NOT_FOUND, STATUS_NOT_IMPLEMENTED, STATUS_NOT_SUPPORTED,
    STATUS_SUCCESS, ULONG, UNICODE_STRING, WSK_CLIENT,
};

/// One entry of a list: the node and the address it points to.
#[repr(C)]
struct Entry {
    node: ADDRINFOEXW,
    address: SOCKADDR_STORAGE,
}

/// A list handed out, by the address of its first node.
struct List {
    kernel: u64,
    /// Kept where they are until freed (the nodes point into each other).
    #[allow(dead_code, reason = "read by the client through the list's pointers")]
    entries: Box<[Entry]>,
}

// SAFETY: the list's pointers only point into its own boxed entries.
#[allow(clippy::non_send_fields_in_send_ty, reason = "see the SAFETY comment")]
unsafe impl Send for List {}

static LISTS: LazyLock<Mutex<HashMap<usize, List>>> = LazyLock::new(Mutex::default);

/// Lists of `kernel` not freed yet.
pub(crate) fn outstanding(kernel: u64) -> usize {
    LISTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .values()
        .filter(|list| list.kernel == kernel)
        .count()
}

/// The text of a `UNICODE_STRING` (`None` for a NULL pointer).
///
/// # Safety
/// `text` is NULL or a readable `UNICODE_STRING` whose buffer holds
/// `Length` bytes.
unsafe fn read(text: *const UNICODE_STRING) -> Result<Option<String>, NTSTATUS> {
    // SAFETY: NULL or readable (the contract).
    let Some(text) = (unsafe { text.as_ref() }) else {
        return Ok(None);
    };
    if text.Length % 2 != 0 || text.Length > text.MaximumLength || text.Buffer.is_null() {
        return Err(STATUS_INVALID_PARAMETER);
    }
    // SAFETY: `Length` bytes of UTF-16 (the contract).
    let units = unsafe { core::slice::from_raw_parts(text.Buffer, usize::from(text.Length / 2)) };
    String::from_utf16(units)
        .map(Some)
        .map_err(|_| STATUS_INVALID_PARAMETER)
}

/// `WskGetAddressInfo`, completing its IRP inline.
///
/// The node name (a host name or an address literal) and the service (a
/// port number, or NULL for port 0) are resolved by the host; `Hints` may
/// restrict the family (`AF_INET`, `AF_INET6`) and must ask for stream
/// sockets or nothing.
///
/// # Safety
/// As the WSK contract says: a captured client, readable names and hints,
/// a writable `Result`, an IRP of the caller's.
pub unsafe extern "system" fn wsk_get_address_info(
    client: *mut WSK_CLIENT,
    node: *mut UNICODE_STRING,
    service: *mut UNICODE_STRING,
    name_space: ULONG,
    provider_guid: *mut c_void,
    hints: *mut ADDRINFOEXW,
    result: *mut *mut ADDRINFOEXW,
    _owning_process: *mut c_void,
    _owning_thread: *mut c_void,
    irp: *mut IRP,
) -> NTSTATUS {
    irql::require(const { irql::rule_of("WskGetAddressInfo") });
    // SAFETY: the client handle of a captured provider NPI (WSK contract).
    let kernel = unsafe { provider::kernel_of_client(client, "WskGetAddressInfo") };
    // SAFETY: the caller's IRP (WSK contract).
    let irp: IrpHandle = unsafe { io::start(irp, "WskGetAddressInfo") };
    // SAFETY: as the contract says.
    let resolved = unsafe { resolve(node, service, name_space, provider_guid, hints, result) };
    let status = match resolved {
        Ok(head) => {
            // SAFETY: the client's writable result pointer (checked).
            unsafe { result.write(head) };
            STATUS_SUCCESS
        }
        Err(status) => status,
    };
    drop(kernel);
    // SAFETY: the provider owns the IRP and gives it up here, once.
    unsafe { io::complete(irp, status, 0) };
    status
}

/// # Safety
/// As for [`wsk_get_address_info`].
unsafe fn resolve(
    node: *mut UNICODE_STRING,
    service: *mut UNICODE_STRING,
    name_space: ULONG,
    provider_guid: *mut c_void,
    hints: *mut ADDRINFOEXW,
    result: *mut *mut ADDRINFOEXW,
) -> Result<*mut ADDRINFOEXW, NTSTATUS> {
    if result.is_null() || name_space != NS_ALL || !provider_guid.is_null() {
        return Err(STATUS_INVALID_PARAMETER);
    }
    // SAFETY: the contract.
    let node = unsafe { read(node) }?;
    // SAFETY: the contract.
    let service = unsafe { read(service) }?;
    let Some(node) = node.filter(|node| !node.is_empty()) else {
        return Err(STATUS_INVALID_PARAMETER);
    };
    let port = match service {
        None => 0,
        Some(service) => service.parse::<u16>().map_err(|_| STATUS_NOT_SUPPORTED)?,
    };
    // SAFETY: NULL or readable hints (the contract).
    let family = match unsafe { hints.as_ref() } {
        None => AF_UNSPEC,
        Some(hints) => {
            if hints.ai_socktype != 0 && hints.ai_socktype != 1 {
                return Err(STATUS_NOT_SUPPORTED);
            }
            u16::try_from(hints.ai_family).map_err(|_| STATUS_INVALID_PARAMETER)?
        }
    };
    let addresses: Vec<SocketAddr> = (node.as_str(), port)
        .to_socket_addrs()
        .map_err(|_| STATUS_NOT_FOUND)?
        .filter(|address| match family {
            AF_INET => address.is_ipv4(),
            AF_INET6 => address.is_ipv6(),
            _ => true,
        })
        .collect();
    if addresses.is_empty() {
        return Err(STATUS_NOT_FOUND);
    }
    Ok(hand_out(&addresses))
}

/// Builds the list and records it; gives its first node.
fn hand_out(addresses: &[SocketAddr]) -> *mut ADDRINFOEXW {
    let mut entries: Box<[Entry]> = addresses
        .iter()
        .map(|address| {
            // SAFETY: all-zero is a valid SOCKADDR_STORAGE.
            let mut storage: SOCKADDR_STORAGE = unsafe { core::mem::zeroed() };
            // SAFETY: storage is large enough for any address.
            unsafe { write_sockaddr(address, (&raw mut storage).cast::<SOCKADDR>()) };
            Entry {
                node: ADDRINFOEXW {
                    ai_flags: 0,
                    ai_family: i32::from(if address.is_ipv4() { AF_INET } else { AF_INET6 }),
                    ai_socktype: 1,
                    ai_protocol: 6,
                    ai_addrlen: if address.is_ipv4() { 16 } else { 28 },
                    ai_canonname: ptr::null_mut(),
                    ai_addr: ptr::null_mut(),
                    ai_blob: ptr::null_mut(),
                    ai_bloblen: 0,
                    ai_provider: ptr::null_mut(),
                    ai_next: ptr::null_mut(),
                },
                address: storage,
            }
        })
        .collect();
    // The boxed slice does not move from here on: the nodes may point into
    // it (each at its own address, and at the next node).
    let count = entries.len();
    let base = entries.as_mut_ptr();
    for index in 0..count {
        // SAFETY: within the slice.
        let entry = unsafe { base.add(index) };
        // SAFETY: as above; only the field's address is taken.
        let address = unsafe { &raw mut (*entry).address };
        let next = if index + 1 < count {
            // SAFETY: within the slice.
            let next = unsafe { base.add(index + 1) };
            // SAFETY: as above; only the field's address is taken.
            unsafe { &raw mut (*next).node }
        } else {
            ptr::null_mut()
        };
        // SAFETY: within the slice, which this function owns.
        let node = unsafe { &mut (*entry).node };
        node.ai_addr = address.cast();
        node.ai_next = next;
    }
    let head = base.cast::<ADDRINFOEXW>();
    LISTS.lock().unwrap_or_else(PoisonError::into_inner).insert(
        head as usize,
        List {
            kernel: Kernel::current().id(),
            entries,
        },
    );
    head
}

/// `WskFreeAddressInfo`: frees a list `WskGetAddressInfo` gave; any other
/// pointer (or a list freed already) bugchecks.
///
/// # Safety
/// As the WSK contract says.
pub unsafe extern "system" fn wsk_free_address_info(
    client: *mut WSK_CLIENT,
    list: *mut ADDRINFOEXW,
) {
    irql::require(const { irql::rule_of("WskFreeAddressInfo") });
    // SAFETY: the client handle of a captured provider NPI (WSK contract).
    let _kernel = unsafe { provider::kernel_of_client(client, "WskFreeAddressInfo") };
    let freed = LISTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&(list as usize));
    if freed.is_none() {
        bugcheck(
            "DRIVER_VERIFIER_DETECTED_VIOLATION",
            format_args!(
                "WskFreeAddressInfo({list:p}): not a list WskGetAddressInfo gave (or freed already)"
            ),
        );
    }
}

/// `WskGetNameInfo`, completing its IRP inline.
///
/// The host's `getnameinfo` for the address (`NI_NUMERICHOST` and
/// `NI_NAMEREQD` as flags), the name written into the client's `NodeName`
/// buffer (`STATUS_BUFFER_OVERFLOW` when it does not fit). A service name
/// is not emulated (NULL only).
///
/// # Safety
/// As the WSK contract says: a captured client, a readable address of
/// `length` bytes, a writable `UNICODE_STRING` with its buffer, an IRP of
/// the caller's.
pub unsafe extern "system" fn wsk_get_name_info(
    client: *mut WSK_CLIENT,
    address: *mut SOCKADDR,
    length: ULONG,
    node: *mut UNICODE_STRING,
    service: *mut UNICODE_STRING,
    flags: ULONG,
    _owning_process: *mut c_void,
    _owning_thread: *mut c_void,
    irp: *mut IRP,
) -> NTSTATUS {
    irql::require(const { irql::rule_of("WskGetNameInfo") });
    // SAFETY: the client handle of a captured provider NPI (WSK contract).
    let kernel = unsafe { provider::kernel_of_client(client, "WskGetNameInfo") };
    if kernel.inner().provider.config.name_info_stub {
        // Wine 8's stub: returns at once, never touches the IRP.
        return STATUS_NOT_IMPLEMENTED;
    }
    // SAFETY: the caller's IRP (WSK contract).
    let irp: IrpHandle = unsafe { io::start(irp, "WskGetNameInfo") };
    // SAFETY: as the contract says.
    let status = match unsafe { name_of(address, length, node, service, flags) } {
        Ok(()) => STATUS_SUCCESS,
        Err(status) => status,
    };
    // SAFETY: the provider owns the IRP and gives it up here, once.
    unsafe { io::complete(irp, status, 0) };
    status
}

/// # Safety
/// As for [`wsk_get_name_info`].
unsafe fn name_of(
    address: *mut SOCKADDR,
    length: ULONG,
    node: *mut UNICODE_STRING,
    service: *mut UNICODE_STRING,
    flags: ULONG,
) -> Result<(), NTSTATUS> {
    if !service.is_null() || flags & !(NI_NUMERICHOST | NI_NAMEREQD) != 0 {
        return Err(STATUS_NOT_SUPPORTED);
    }
    // SAFETY: NULL or writable (the contract).
    let Some(node) = (unsafe { node.as_mut() }) else {
        return Err(STATUS_INVALID_PARAMETER);
    };
    if node.Buffer.is_null() || (length as usize) < size_of::<SOCKADDR>() {
        return Err(STATUS_INVALID_PARAMETER);
    }
    // SAFETY: at least a SOCKADDR's bytes (checked above): its family.
    let family = unsafe { address.cast::<ADDRESS_FAMILY>().read_unaligned() };
    if family == AF_INET6 && (length as usize) < size_of::<SOCKADDR_IN6>() {
        return Err(STATUS_INVALID_PARAMETER);
    }
    // SAFETY: a readable address (the contract); its family says its size.
    let address = unsafe { super::sockets::read_sockaddr(address) }?;
    let host = socket2::SockAddr::from(address);
    let mut name = [0 as libc::c_char; 1025];
    let mut host_flags = 0;
    if flags & NI_NUMERICHOST != 0 {
        host_flags |= libc::NI_NUMERICHOST;
    }
    if flags & NI_NAMEREQD != 0 {
        host_flags |= libc::NI_NAMEREQD;
    }
    // SAFETY: a socket address of `host.len()` bytes; `name` is writable
    // for its length; no service asked for.
    let found = unsafe {
        libc::getnameinfo(
            host.as_ptr().cast(),
            host.len(),
            name.as_mut_ptr(),
            libc::socklen_t::try_from(name.len()).expect("1025 fits"),
            ptr::null_mut(),
            0,
            host_flags,
        )
    };
    if found != 0 {
        return Err(STATUS_NOT_FOUND);
    }
    // SAFETY: getnameinfo wrote a NUL-terminated name.
    let name = unsafe { core::ffi::CStr::from_ptr(name.as_ptr()) };
    let units: Vec<u16> = name.to_string_lossy().encode_utf16().collect();
    let bytes = units.len() * 2;
    if bytes > usize::from(node.MaximumLength) {
        return Err(STATUS_BUFFER_OVERFLOW);
    }
    // SAFETY: the client's buffer, writable for `MaximumLength` bytes
    // (the contract), which the name fits.
    unsafe { ptr::copy_nonoverlapping(units.as_ptr(), node.Buffer, units.len()) };
    node.Length = u16::try_from(bytes).expect("checked against MaximumLength");
    Ok(())
}
