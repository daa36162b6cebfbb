//! Draining: deregistration waits for operations in flight.

use std::thread;
use std::time::{Duration, Instant};

use crate::emulator::Kernel;
use crate::{Error, NtStatus, PassiveLevel, Registration};

#[test]
fn deregistration_drains_operations_in_flight_and_refuses_new_ones() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = PassiveLevel::check().unwrap();
    let registration = Registration::register(&passive).unwrap();
    let provider = registration
        .capture(&passive, Duration::from_secs(1))
        .unwrap();
    let in_flight = provider.registration().begin_operation().unwrap();
    let block = provider.registration().clone();
    drop(provider);
    assert_eq!(registration.in_flight(), 1);

    let start = Instant::now();
    let completion = {
        let kernel = kernel.clone();
        thread::spawn(move || {
            let _enter = kernel.enter();
            thread::sleep(Duration::from_millis(100));
            // Deregistration has begun by now: new operations are refused.
            assert_eq!(
                block.begin_operation().err(),
                Some(Error::ProviderUnavailable(NtStatus::DEVICE_NOT_READY))
            );
            // The "completion routine" gives its reference back at DISPATCH_LEVEL.
            crate::emulator::irql::run_at(crate::abi::DISPATCH_LEVEL, || drop(in_flight));
            drop(block);
        })
    };
    let report = registration.deregister(&passive);
    assert!(report.is_clean(), "deregistration had to force: {report}");
    assert!(
        start.elapsed() >= Duration::from_millis(100),
        "deregistered before the drain"
    );
    completion.join().unwrap();
    kernel.assert_no_leaks();
}
