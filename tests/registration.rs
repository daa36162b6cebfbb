//! `WskRegister`, provider NPI capture and release, and `WskDeregister`
//! through the library's RAII types and the emulator's raw exports.
#![allow(
    clippy::unnecessary_box_returns,
    reason = "the registration block must not move"
)]

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use wsk::abi::{
    DISPATCH_LEVEL, MAKE_WSK_VERSION, STATUS_DEVICE_NOT_READY, STATUS_NOINTERFACE, STATUS_SUCCESS,
    WSK_CLIENT_DISPATCH, WSK_CLIENT_NPI, WSK_NO_WAIT, WSK_PROVIDER_NPI, WSK_REGISTRATION,
};
use wsk::emulator::{FaultPlan, Kernel, ProviderConfig, exports, irql};
use wsk::{AtMostDispatch, Error, NtStatus, PassiveLevel, Registration, WskVersion};

fn passive() -> PassiveLevel {
    PassiveLevel::check().expect("test threads start at PASSIVE_LEVEL")
}

#[test]
fn register_capture_release_deregister_returns_every_resource() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = passive();
    let registration = Registration::register(&passive).unwrap();
    let usage = kernel.usage();
    assert_eq!(usage.registrations, 1);
    assert_eq!(
        usage.pool_tag(*b"WskR").allocations,
        1,
        "the registration block is tagged pool"
    );
    {
        let provider = registration
            .capture(&passive, Duration::from_secs(1))
            .unwrap();
        assert_eq!(provider.version(), WskVersion { major: 1, minor: 0 });
        assert_eq!(kernel.usage().captures, 1);
        let second = registration
            .capture(&passive, Duration::from_secs(1))
            .unwrap();
        assert_eq!(kernel.usage().captures, 2);
        drop(second);
    }
    assert_eq!(kernel.usage().captures, 0, "released on drop");
    let report = registration.deregister(&passive);
    assert!(report.is_clean(), "deregistration had to force: {report}");
    kernel.assert_no_leaks();
}

#[test]
fn dropping_a_registration_at_passive_level_deregisters_it() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let registration = Registration::register(&passive()).unwrap();
    drop(registration);
    kernel.assert_no_leaks();
}

#[test]
fn capture_waits_for_the_provider_to_become_ready() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    kernel.set_provider_ready(false);
    let passive = passive();
    let registration = Registration::register(&passive).unwrap();
    let start = Instant::now();
    thread::scope(|scope| {
        scope.spawn(|| {
            thread::sleep(Duration::from_millis(80));
            kernel.set_provider_ready(true);
        });
        let provider = registration
            .capture(&passive, Duration::from_secs(10))
            .unwrap();
        assert!(start.elapsed() >= Duration::from_millis(80));
        drop(provider);
    });
    let report = registration.deregister(&passive);
    assert!(report.is_clean(), "deregistration had to force: {report}");
    kernel.assert_no_leaks();
}

#[test]
fn a_bounded_capture_gives_up_with_device_not_ready() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    kernel.set_provider_ready(false);
    let passive = passive();
    let registration = Registration::register(&passive).unwrap();
    let start = Instant::now();
    let error = registration
        .capture(&passive, Duration::from_millis(100))
        .unwrap_err();
    assert_eq!(
        error,
        Error::ProviderUnavailable(NtStatus::DEVICE_NOT_READY)
    );
    assert!(start.elapsed() >= Duration::from_millis(100));
    assert_eq!(
        error.to_string(),
        "WSK provider unavailable: STATUS_DEVICE_NOT_READY (0xC00000A3)"
    );
    let report = registration.deregister(&passive);
    assert!(report.is_clean(), "deregistration had to force: {report}");
    kernel.assert_no_leaks();
}

#[test]
fn capture_without_waiting_works_at_dispatch_level() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = passive();
    let registration = Registration::register(&passive).unwrap();
    {
        let _dispatch = irql::raise(DISPATCH_LEVEL);
        let token = AtMostDispatch::check().unwrap();
        assert!(
            PassiveLevel::check().is_err(),
            "no blocking capture up here"
        );
        let provider = registration.try_capture(&token).unwrap();
        kernel.set_provider_ready(false);
        assert_eq!(
            registration.try_capture(&token).unwrap_err(),
            Error::ProviderUnavailable(NtStatus::DEVICE_NOT_READY)
        );
        drop(provider);
    }
    let report = registration.deregister(&passive);
    assert!(report.is_clean(), "deregistration had to force: {report}");
    kernel.assert_no_leaks();
}

#[test]
fn the_provider_dispatch_table_is_read_at_run_time() {
    let config = ProviderConfig {
        version: MAKE_WSK_VERSION(1, 0),
        socket_connect: false,
        connect_ex: false,
        ..ProviderConfig::default()
    };
    let kernel = Kernel::with_provider(config);
    let _enter = kernel.enter();
    let passive = passive();
    let registration = Registration::register(&passive).unwrap();
    let provider = registration
        .capture(&passive, Duration::from_secs(1))
        .unwrap();
    assert!(
        !provider.supports_socket_connect(),
        "a NULL WskSocketConnect entry is absent"
    );
    drop(provider);
    let report = registration.deregister(&passive);
    assert!(report.is_clean(), "deregistration had to force: {report}");
    kernel.assert_no_leaks();
}

#[test]
fn registration_failure_from_exhausted_pool_leaks_nothing() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    kernel.inject_faults(FaultPlan {
        fail_first_pool: 1,
        ..FaultPlan::default()
    });
    assert_eq!(
        Registration::register(&passive()).unwrap_err(),
        Error::InsufficientResources(NtStatus::INSUFFICIENT_RESOURCES)
    );
    kernel.assert_no_leaks();
}

#[test]
fn dropping_a_registration_above_passive_level_ends_what_it_holds_without_waiting() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let registration = Registration::register(&passive()).unwrap();
    let provider = registration
        .capture(&passive(), Duration::from_secs(1))
        .unwrap();
    assert_eq!(kernel.usage().captures, 1);
    {
        let _dispatch = irql::raise(DISPATCH_LEVEL);
        // No bugcheck: the capture is released at DISPATCH_LEVEL; only
        // WskDeregister, which blocks, cannot be called here.
        drop(registration);
    }
    let usage = kernel.settled_usage();
    assert_eq!((usage.captures, usage.registrations), (0, 1), "{usage}");
    assert_eq!(
        provider
            .socket_blocking(
                &passive(),
                Duration::from_secs(1),
                wsk::Family::V4,
                wsk::SocketKind::Connection
            )
            .err(),
        Some(Error::ProviderUnavailable(NtStatus::DEVICE_NOT_READY)),
        "the released capture answers a typed error"
    );
}

/// A client registered through the raw exports, as a C driver would.
struct RawClient {
    dispatch: WSK_CLIENT_DISPATCH,
    registration: WSK_REGISTRATION,
}

impl RawClient {
    fn register(version: u16) -> Box<Self> {
        let mut client = Box::new(Self {
            dispatch: WSK_CLIENT_DISPATCH {
                Version: version,
                Reserved: 0,
                WskClientEvent: None,
            },
            registration: WSK_REGISTRATION {
                ReservedRegistrationState: 0,
                ReservedRegistrationContext: core::ptr::null_mut(),
                ReservedRegistrationLock: 0,
            },
        });
        let npi = WSK_CLIENT_NPI {
            ClientContext: core::ptr::null_mut(),
            Dispatch: &raw const client.dispatch,
        };
        // SAFETY: the boxed client outlives its registration.
        let status = unsafe {
            exports::WskRegister((&raw const npi).cast_mut(), &raw mut client.registration)
        };
        assert_eq!(status, STATUS_SUCCESS);
        client
    }

    fn capture(&mut self, wait: u32) -> i32 {
        let mut npi = WSK_PROVIDER_NPI {
            Client: core::ptr::null_mut(),
            Dispatch: core::ptr::null(),
        };
        // SAFETY: a registered block.
        unsafe { exports::WskCaptureProviderNPI(&raw mut self.registration, wait, &raw mut npi) }
    }

    fn registration(&mut self) -> usize {
        (&raw mut self.registration) as usize
    }
}

fn release(registration: usize) {
    // SAFETY: a registered block with a capture outstanding.
    unsafe { exports::WskReleaseProviderNPI(registration as *mut WSK_REGISTRATION) };
}

fn deregister(registration: usize) {
    // SAFETY: a registered block.
    unsafe { exports::WskDeregister(registration as *mut WSK_REGISTRATION) };
}

#[test]
fn deregister_blocks_until_every_capture_is_released() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let mut client = RawClient::register(MAKE_WSK_VERSION(1, 0));
    assert_eq!(client.capture(1000), STATUS_SUCCESS);
    let registration = client.registration();
    let start = Instant::now();
    let releaser = {
        let kernel = kernel.clone();
        thread::spawn(move || {
            let _enter = kernel.enter();
            thread::sleep(Duration::from_millis(100));
            release(registration);
        })
    };
    deregister(registration);
    assert!(
        start.elapsed() >= Duration::from_millis(100),
        "returned before the release"
    );
    releaser.join().unwrap();
    drop(client);
    kernel.assert_no_leaks();
}

#[test]
fn captures_fail_once_deregistration_has_begun() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let mut client = RawClient::register(MAKE_WSK_VERSION(1, 0));
    assert_eq!(client.capture(WSK_NO_WAIT), STATUS_SUCCESS);
    let registration = client.registration();
    let started = Arc::new(Barrier::new(2));
    let deregistering = {
        let (kernel, started) = (kernel.clone(), started.clone());
        thread::spawn(move || {
            let _enter = kernel.enter();
            started.wait();
            deregister(registration);
        })
    };
    started.wait();
    // The first capture stays held, so deregistration cannot finish; probe
    // with a second one until deregistration has begun.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = client.capture(WSK_NO_WAIT);
        if status != STATUS_SUCCESS {
            break status;
        }
        release(registration);
        assert!(Instant::now() < deadline, "deregistration never began");
        thread::yield_now();
    };
    assert_eq!(status, STATUS_DEVICE_NOT_READY);
    release(registration);
    deregistering.join().unwrap();
    drop(client);
    kernel.assert_no_leaks();
}

#[test]
fn an_unsupported_client_version_gets_nointerface() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let mut client = RawClient::register(MAKE_WSK_VERSION(2, 0));
    assert_eq!(client.capture(WSK_NO_WAIT), STATUS_NOINTERFACE);
    deregister(client.registration());
    drop(client);
    kernel.assert_no_leaks();
}

#[test]
#[should_panic(
    expected = "BUGCHECK IRQL_NOT_LESS_OR_EQUAL: WskDeregister called at DISPATCH_LEVEL"
)]
fn deregistering_at_dispatch_level_bugchecks() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let mut client = RawClient::register(MAKE_WSK_VERSION(1, 0));
    let _dispatch = irql::raise(DISPATCH_LEVEL);
    deregister(client.registration());
}

#[test]
#[should_panic(expected = "WskCaptureProviderNPI called at DISPATCH_LEVEL")]
fn a_waiting_capture_at_dispatch_level_bugchecks() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let mut client = RawClient::register(MAKE_WSK_VERSION(1, 0));
    let _dispatch = irql::raise(DISPATCH_LEVEL);
    client.capture(1000);
}

#[test]
#[should_panic(expected = "WskDeregister(")]
fn a_deregistration_that_never_finishes_is_reported() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    kernel.set_deregister_deadline(Duration::from_millis(50));
    let mut client = RawClient::register(MAKE_WSK_VERSION(1, 0));
    assert_eq!(client.capture(WSK_NO_WAIT), STATUS_SUCCESS);
    deregister(client.registration());
}
