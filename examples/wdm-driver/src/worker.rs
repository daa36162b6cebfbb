//! The system thread that does the network work: register, capture the
//! provider, run each mode through `wsk_demo::run_mode`, log its result
//! line, release, deregister. `DriverUnload` asks it to stop between modes
//! and waits for it to end.

use core::ffi::c_void;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use core::time::Duration;

use wsk::{Family, NtStatus, PassiveLevel, PoolBox, Registration};
use wsk_demo::{Job, Outcome, ResultLine};

use crate::clock;
use crate::config::{Config, TAG};
use crate::ffi::{self, HANDLE, OBJECT_ATTRIBUTES};
use crate::log::log;

/// The worker thread's object (referenced), or null when none runs.
static THREAD: AtomicPtr<c_void> = AtomicPtr::new(ptr::null_mut());
/// Set by `DriverUnload`: stop before the next mode.
static STOP: AtomicBool = AtomicBool::new(false);

/// How long `DriverUnload` waits before saying it is still waiting.
const UNLOAD_NOTICE: Duration = Duration::from_secs(10);

/// Starts the worker with `config`.
///
/// # IRQL
/// `PASSIVE_LEVEL`.
///
/// # Errors
/// The status of the failed allocation or `PsCreateSystemThread`; nothing
/// runs then.
pub fn start(config: Config) -> Result<(), NtStatus> {
    let config = PoolBox::new(config, TAG).map_err(|error| error.status())?;
    let context = config.into_raw();
    STOP.store(false, Ordering::SeqCst);
    // A kernel handle, whatever process this runs in.
    let mut attributes = OBJECT_ATTRIBUTES {
        Length: u32::try_from(size_of::<OBJECT_ATTRIBUTES>()).unwrap_or(48),
        RootDirectory: ptr::null_mut(),
        ObjectName: ptr::null_mut(),
        Attributes: ffi::OBJ_KERNEL_HANDLE,
        SecurityDescriptor: ptr::null_mut(),
        SecurityQualityOfService: ptr::null_mut(),
    };
    let mut handle: HANDLE = ptr::null_mut();
    // SAFETY: a kernel thread in the system process running `thread_main`,
    // which takes ownership of `context`; PASSIVE_LEVEL.
    let status = unsafe {
        ffi::PsCreateSystemThread(
            &raw mut handle,
            ffi::THREAD_ALL_ACCESS,
            &raw mut attributes,
            ptr::null_mut(),
            ptr::null_mut(),
            thread_main,
            context.as_ptr().cast(),
        )
    };
    if status != ffi::STATUS_SUCCESS {
        // SAFETY: the thread was not created: `context` is still ours, from
        // `into_raw` with this tag.
        drop(unsafe { PoolBox::from_raw(context, TAG) });
        return Err(NtStatus(status));
    }
    // SAFETY: reads the exported object type variable, set before any
    // driver loads and never changed.
    let thread_type = unsafe { ffi::PsThreadType };
    let mut object: *mut c_void = ptr::null_mut();
    // SAFETY: a kernel handle just created with THREAD_ALL_ACCESS; the
    // reference taken is given back in `stop`.
    let status = unsafe {
        ffi::ObReferenceObjectByHandle(
            handle,
            ffi::SYNCHRONIZE,
            thread_type,
            ffi::KERNEL_MODE,
            &raw mut object,
            ptr::null_mut(),
        )
    };
    // SAFETY: the handle from PsCreateSystemThread, closed once; the object
    // reference (if taken) keeps the thread object alive.
    let _ = unsafe { ffi::ZwClose(handle) };
    // Without the reference, unload could not wait for the thread and the
    // image could go away under it: that is worse than stopping here.
    assert!(
        status == ffi::STATUS_SUCCESS,
        "ObReferenceObjectByHandle on the new worker thread failed: {}",
        NtStatus(status)
    );
    THREAD.store(object, Ordering::SeqCst);
    Ok(())
}

/// Asks the worker to stop and waits until it has ended (every socket
/// closed, the registration deregistered).
///
/// # IRQL
/// `PASSIVE_LEVEL` (`DriverUnload`).
pub fn stop() {
    STOP.store(true, Ordering::SeqCst);
    let thread = THREAD.swap(ptr::null_mut(), Ordering::SeqCst);
    if thread.is_null() {
        return;
    }
    // Relative, in 100 ns units.
    let timeout = -i64::try_from(UNLOAD_NOTICE.as_nanos() / 100).unwrap_or(i64::MAX);
    loop {
        // SAFETY: a referenced thread object (non-paged, a dispatcher
        // object); PASSIVE_LEVEL with a timeout.
        let status = unsafe {
            ffi::KeWaitForSingleObject(
                thread,
                ffi::EXECUTIVE,
                ffi::KERNEL_MODE,
                0,
                &raw const timeout,
            )
        };
        if status != ffi::STATUS_TIMEOUT {
            break;
        }
        // The image must outlive the thread: keep waiting, but say so.
        log!("unload: still waiting for the worker thread");
    }
    // SAFETY: the reference taken in `start`, given back once.
    let _ = unsafe { ffi::ObfDereferenceObject(thread) };
}

/// The thread's start routine.
///
/// # Safety
/// `context` is a `PoolBox<Config>` from `into_raw` with [`TAG`], given to
/// this thread alone.
unsafe extern "system" fn thread_main(context: *mut c_void) {
    {
        let context = NonNull::new(context.cast::<Config>()).expect("a configuration");
        // SAFETY: per the contract: ours, taken back once.
        let config = unsafe { PoolBox::from_raw(context, TAG) };
        run(&config);
    }
    // Everything above has been dropped: nothing is left to clean up.
    // SAFETY: a system thread ending itself at PASSIVE_LEVEL.
    let _ = unsafe { ffi::PsTerminateSystemThread(ffi::STATUS_SUCCESS) };
}

fn run(config: &Config) {
    let Ok(passive) = PassiveLevel::check() else {
        log!("error: the worker thread is not at PASSIVE_LEVEL");
        return;
    };
    let registration = match Registration::register(&passive) {
        Ok(registration) => registration,
        Err(error) => {
            log!("error: WskRegister failed: {error}");
            return;
        }
    };
    match registration.capture(&passive, config.timeout) {
        Ok(provider) => {
            for &mode in config.modes {
                if STOP.load(Ordering::SeqCst) {
                    log!("stopping before {}: unload requested", mode.name());
                    break;
                }
                let job = Job {
                    local: Family::of(&config.remote).unspecified(),
                    remote: config.remote,
                    payload: &config.payload,
                    fast_open: false,
                    timeout: config.timeout,
                };
                let start = clock::now_us();
                let result = wsk_demo::run_mode(&provider, &passive, mode, &job);
                let elapsed_us = clock::now_us().saturating_sub(start);
                let outcome = Outcome::of(&result, elapsed_us);
                log!("{}", ResultLine { mode, outcome });
            }
        }
        Err(error) => log!("error: WskCaptureProviderNPI failed: {error}"),
    }
    let report = registration.deregister(&passive);
    if report.is_clean() {
        log!("deregistered");
    } else {
        log!("deregistered: had to force {report}");
    }
}
