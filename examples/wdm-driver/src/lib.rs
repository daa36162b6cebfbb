//! `wsk-sample`: a WDM kernel driver built with plain cargo, no WDK, that
//! opens TCP connections through the `wsk` library.
//!
//! `DriverEntry` creates the device `\Device\WskSample` and serves the
//! request contract of `wsk_demo::request` from it (see [`service`]): each
//! request a task on the library's executor, cancelable, all of them
//! cancelled when the driver unloads.
//!
//! If the service key's `Parameters` subkey configures one (see
//! [`config`]), it also starts a system thread for a startup run: the
//! thread registers with WSK, runs each configured mode exactly as the
//! `connect` example does (`wsk_demo::run_mode`) and logs the same result
//! line with `DbgPrint`, prefixed `wsk-sample: `; then it deregisters.
//! `DriverUnload` waits for the thread, stops serving, and logs
//! `wsk-sample: unloaded`. A configuration problem is one
//! `wsk-sample: configuration error: ...` line; the driver then only serves
//! requests.
//!
//! Build (Linux or Windows, from the repository root):
//!
//! ```sh
//! cargo build --release --target x86_64-pc-windows-msvc --manifest-path examples/wdm-driver/Cargo.toml
//! ```
//!
//! and rename `wsk_wdm_driver.dll` to `wsk_sample.sys`.
#![no_std]

#[cfg(not(all(target_os = "windows", target_env = "msvc")))]
compile_error!("the sample driver builds for x86_64-pc-windows-msvc only");

mod clock;
mod config;
mod ffi;
mod log;
mod service;
mod worker;

use wsk::{NtStatus, PassiveLevel};

use crate::ffi::{DRIVER_OBJECT, NTSTATUS, UNICODE_STRING};
use crate::log::log;

/// The MSVC ABI's marker that floating point is used; the C runtime that
/// would define it is not linked.
#[unsafe(no_mangle)]
#[used]
pub static _fltused: i32 = 0;

/// The driver's entry point (`/ENTRY:DriverEntry`).
///
/// # Safety
/// Called once by the I/O manager at `PASSIVE_LEVEL` with a valid driver
/// object and the service key's registry path.
#[unsafe(export_name = "DriverEntry")]
pub unsafe extern "system" fn driver_entry(
    driver: *mut DRIVER_OBJECT,
    registry_path: *const UNICODE_STRING,
) -> NTSTATUS {
    // Set first, so that every path below unloads through it.
    // SAFETY: the I/O manager's driver object, ours to fill in.
    unsafe { (*driver).DriverUnload = Some(driver_unload) };
    clock::init();
    // SAFETY: DriverEntry runs at PASSIVE_LEVEL.
    let passive = unsafe { PassiveLevel::assume() };
    // SAFETY: the driver object DriverEntry was given; PASSIVE_LEVEL.
    if let Err(status) = unsafe { service::start(driver, &passive) } {
        log!(
            "error: cannot serve {}: {}",
            wsk_demo::request::USER_NAME,
            NtStatus(status)
        );
    }
    // SAFETY: the I/O manager passes a valid path, alive during DriverEntry.
    let Some(registry_path) = (unsafe { registry_path.as_ref() }) else {
        log!("configuration error: no registry path");
        return ffi::STATUS_SUCCESS;
    };
    // SAFETY: the registry path DriverEntry was given; PASSIVE_LEVEL.
    let config = match unsafe { config::read(registry_path) } {
        Ok(Some(config)) => config,
        Ok(None) => {
            log!(
                "loaded: no startup run (no RemoteAddress); clock={}",
                clock::source()
            );
            return ffi::STATUS_SUCCESS;
        }
        Err(error) => {
            // Loaded, serving requests only: `sc stop` unloads it cleanly.
            log!("{error}");
            return ffi::STATUS_SUCCESS;
        }
    };
    let modes = config.modes.len();
    log!(
        "loaded: remote={} modes={} payload_bytes={} timeout_ms={} clock={}",
        config.remote,
        modes,
        config.payload.len(),
        config.timeout.as_millis(),
        clock::source()
    );
    if let Err(status) = worker::start(config) {
        log!("error: cannot start the worker thread: {status}");
    }
    ffi::STATUS_SUCCESS
}

/// Waits for the worker (which has closed everything and deregistered by
/// the time it ends), stops serving (cancelling the requests in flight),
/// then logs `unloaded`.
///
/// # Safety
/// Called once by the I/O manager at `PASSIVE_LEVEL`.
unsafe extern "system" fn driver_unload(_driver: *mut DRIVER_OBJECT) {
    worker::stop();
    // SAFETY: DriverUnload runs at PASSIVE_LEVEL.
    let passive = unsafe { PassiveLevel::assume() };
    service::stop(&passive);
    log!("unloaded");
}

/// `MANUALLY_INITIATED_CRASH`: the bug check a driver panic raises.
const PANIC_BUGCHECK: u32 = 0xE2;
/// `BugCheckParameter1` of a panic: `WskS`, to tell it from a real manual crash.
const PANIC_MARKER: usize = u32::from_le_bytes(*b"WskS") as usize;

/// A panic in a driver is a bug the driver cannot recover from (there is no
/// unwinding, and state may be half-changed): log it on one line, then stop
/// the machine with `KeBugCheckEx(MANUALLY_INITIATED_CRASH, 'WskS', line,
/// column)` so a crash dump shows where. (Wine's `KeBugCheckEx` logs an
/// `err:ntoskrnl:KeBugCheckEx` line and ends the `winedevice.exe` process
/// hosting the driver.)
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let (file, line, column) = info.location().map_or(("?", 0, 0), |location| {
        (location.file(), location.line(), location.column())
    });
    log!("panic at {file}:{line}:{column}: {}", info.message());
    // SAFETY: ends the system; the arguments are plain numbers.
    unsafe {
        ffi::KeBugCheckEx(
            PANIC_BUGCHECK,
            PANIC_MARKER,
            line as usize,
            column as usize,
            0,
        )
    }
}
