//! Host names through the library and the emulated provider (the host's
//! resolver): names and literals of both families, the port asked for,
//! malformed names refused before any call, and every list the provider
//! gave freed.

mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ptr;
use std::time::Duration;

use support::{Client, expect_bugcheck_in_child, in_fatal_child};
use wsk::abi::DISPATCH_LEVEL;
use wsk::emulator::names::{wsk_free_address_info, wsk_get_address_info};
use wsk::emulator::{Kernel, ProviderConfig, irql};
use wsk::{Error, NtStatus, PassiveLevel, Registration};

const TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn names_and_literals_resolve_with_the_port_and_every_list_is_freed() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = PassiveLevel::check().unwrap();
    let registration = Registration::register(&passive).unwrap();
    let provider = registration.capture(&passive, TIMEOUT).unwrap();

    let localhost = provider
        .resolve_blocking(&passive, TIMEOUT, "localhost", 6379)
        .unwrap();
    assert!(!localhost.is_empty());
    assert!(
        localhost
            .iter()
            .all(|address| address.port() == 6379 && address.ip().is_loopback()),
        "{localhost:?}"
    );
    assert_eq!(
        &*provider
            .resolve_blocking(&passive, TIMEOUT, "127.0.0.1", 7)
            .unwrap(),
        &[SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7)]
    );
    assert_eq!(
        &*provider
            .resolve_blocking(&passive, TIMEOUT, "::1", 0)
            .unwrap(),
        &[SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 0)]
    );
    assert_eq!(kernel.usage().address_lists, 0, "every list was freed");

    drop(provider);
    assert!(registration.deregister(&passive).is_clean());
    kernel.assert_no_leaks();
}

#[test]
fn an_address_resolves_back_to_its_name() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = PassiveLevel::check().unwrap();
    let registration = Registration::register(&passive).unwrap();
    let provider = registration.capture(&passive, TIMEOUT).unwrap();
    let loopback = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 80);
    let name = provider
        .name_of_blocking(&passive, TIMEOUT, loopback)
        .unwrap();
    // Whatever the host calls it, the name resolves back to the address.
    let back = provider
        .resolve_blocking(&passive, TIMEOUT, name.as_str(), 80)
        .unwrap();
    assert!(back.contains(&loopback), "{name} -> {back:?}");
    drop(provider);
    assert!(registration.deregister(&passive).is_clean());
    kernel.assert_no_leaks();
}

#[test]
fn malformed_names_are_refused_before_any_call() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = PassiveLevel::check().unwrap();
    let registration = Registration::register(&passive).unwrap();
    let provider = registration.capture(&passive, TIMEOUT).unwrap();
    let before = kernel.allocations();
    let long = "a".repeat(256);
    for name in ["", "local\0host", long.as_str()] {
        assert_eq!(
            provider.resolve_blocking(&passive, TIMEOUT, name, 80),
            Err(Error::InvalidArgument(NtStatus::INVALID_PARAMETER)),
            "{name:?}"
        );
    }
    let during = kernel.allocations() - before;
    assert_eq!((during.pool, during.irps), (0, 0), "nothing was sent");
    drop(provider);
    assert!(registration.deregister(&passive).is_clean());
    kernel.assert_no_leaks();
}

#[test]
fn resolving_above_passive_level_bugchecks() {
    if !in_fatal_child() {
        expect_bugcheck_in_child(
            "resolving_above_passive_level_bugchecks",
            &[
                "BUGCHECK IRQL_NOT_LESS_OR_EQUAL: ",
                "WskGetAddressInfo",
                "resolving a name waits for the resolver",
            ],
        );
        return;
    }
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    irql::run_at(DISPATCH_LEVEL, || {
        // SAFETY: the IRQL check comes before any argument is read.
        let _ = unsafe {
            wsk_get_address_info(
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null_mut(),
                0,
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
    });
    unreachable!("the verifier stops a resolution above PASSIVE_LEVEL");
}

#[test]
fn freeing_a_list_the_provider_never_gave_bugchecks() {
    if !in_fatal_child() {
        expect_bugcheck_in_child(
            "freeing_a_list_the_provider_never_gave_bugchecks",
            &[
                "BUGCHECK DRIVER_VERIFIER_DETECTED_VIOLATION: WskFreeAddressInfo(0x",
                "not a list WskGetAddressInfo gave",
            ],
        );
        return;
    }
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let client = Client::register();
    let mut bogus = 0_u64;
    // SAFETY: a captured client; the list is checked before it is touched.
    unsafe { wsk_free_address_info(client.npi.Client, (&raw mut bogus).cast()) };
    unreachable!("the verifier stops freeing a list it never gave");
}

#[test]
fn a_stub_get_name_info_is_asked_once_and_leaves_one_call_behind() {
    // Wine 8's WskGetNameInfo answers STATUS_NOT_IMPLEMENTED without ever
    // completing its IRP: the library reclaims that call's block
    // (quarantined, it might still complete), remembers, and answers later
    // calls itself, so a second lookup leaves nothing more behind.
    let kernel = Kernel::with_provider(ProviderConfig::like_wine());
    let _enter = kernel.enter();
    let passive = PassiveLevel::check().unwrap();
    let registration = Registration::register(&passive).unwrap();
    let provider = registration.capture(&passive, TIMEOUT).unwrap();
    let loopback = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 80);
    assert_eq!(
        provider.name_of_blocking(&passive, TIMEOUT, loopback),
        Err(Error::NotSupported(NtStatus::NOT_IMPLEMENTED))
    );
    let before = kernel.allocations();
    assert_eq!(
        provider.name_of_blocking(&passive, TIMEOUT, loopback),
        Err(Error::NotSupported(NtStatus::NOT_SUPPORTED))
    );
    let during = kernel.allocations() - before;
    assert_eq!((during.pool, during.irps), (0, 0), "not asked again");
    drop(provider);
    let report = registration.deregister(&passive);
    assert!(report.is_clean(), "{report}");
    // The stub's one call stays quarantined; the second never went out.
    assert_eq!(report.quarantined_operations, 1, "{report}");
    kernel.expect_leaks();
}

#[test]
fn statuses_of_a_name_not_found_are_not_found() {
    for status in [NtStatus::NOT_FOUND, NtStatus::NO_MATCH] {
        assert_eq!(Error::from_status(status), Error::NotFound(status));
    }
}
