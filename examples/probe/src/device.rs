//! One overlapped `DeviceIoControl` request to the driver (Windows only).
//!
//! Each request has its own handle (opened with `FILE_FLAG_OVERLAPPED`),
//! its own manual-reset event, and an `OVERLAPPED` and output buffer on
//! the heap that stay put while the I/O is in flight. A request dropped in
//! flight (abandoned after `CancelIoEx` did not end it) leaks all of them:
//! the I/O manager may still write there. The process exit cancels it.

use std::ffi::OsStr;
use std::os::windows::ffi::OsStrExt as _;
use std::ptr;
use std::time::Duration;

use windows_sys::Win32::Foundation::{
    CloseHandle, ERROR_FILE_NOT_FOUND, ERROR_INVALID_PARAMETER, ERROR_IO_INCOMPLETE,
    ERROR_IO_PENDING, ERROR_NOT_FOUND, ERROR_OPERATION_ABORTED, GENERIC_READ, GENERIC_WRITE,
    GetLastError, HANDLE, INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, FILE_FLAG_OVERLAPPED, FILE_SHARE_READ, FILE_SHARE_WRITE, OPEN_EXISTING,
};
use windows_sys::Win32::System::IO::{
    CancelIoEx, DeviceIoControl, GetOverlappedResult, OVERLAPPED,
};
use windows_sys::Win32::System::Threading::{CreateEventW, WaitForSingleObject};

use crate::contract::{IOCTL_WSK_SAMPLE_RUN, OUTPUT_CAPACITY};
use crate::report::{self, Failure, Outcome};

// The portable report names these codes itself.
const _: () = assert!(report::ERROR_FILE_NOT_FOUND == ERROR_FILE_NOT_FOUND);
const _: () = assert!(report::ERROR_INVALID_PARAMETER == ERROR_INVALID_PARAMETER);
const _: () = assert!(report::ERROR_OPERATION_ABORTED == ERROR_OPERATION_ABORTED);

/// The output buffer's size as `DeviceIoControl` takes it.
#[allow(clippy::cast_possible_truncation)] // checked just below
const OUTPUT_LEN: u32 = OUTPUT_CAPACITY as u32;
const _: () = assert!(OUTPUT_LEN as usize == OUTPUT_CAPACITY);

/// One request, issued.
pub struct Request {
    device: HANDLE,
    event: HANDLE,
    /// From `Box::into_raw`; the system writes it until completion.
    overlapped: *mut OVERLAPPED,
    /// From `Box::into_raw`; the system writes it until completion.
    output: *mut [u8; OUTPUT_CAPACITY],
    in_flight: bool,
}

impl Request {
    /// Opens `path` and sends `input` with [`IOCTL_WSK_SAMPLE_RUN`].
    ///
    /// # Errors
    /// The outcome, when the request ended at once: it could not be
    /// issued, or it failed synchronously (a rejected line, for one).
    pub fn issue(path: &str, input: &[u8]) -> Result<Self, Outcome> {
        let not_issued = |step: &str| Outcome::NotIssued {
            step: step.to_owned(),
            failure: last_error(),
        };
        let input_len = u32::try_from(input.len()).map_err(|_| Outcome::NotIssued {
            step: "send a request line over 4 GiB".into(),
            failure: failure(ERROR_INVALID_PARAMETER),
        })?;
        let wide: Vec<u16> = OsStr::new(path).encode_wide().chain([0]).collect();
        // SAFETY: `wide` is NUL-terminated and outlives the call; no
        // security attributes and no template are valid arguments.
        let device = unsafe {
            CreateFileW(
                wide.as_ptr(),
                GENERIC_READ | GENERIC_WRITE,
                FILE_SHARE_READ | FILE_SHARE_WRITE,
                ptr::null(),
                OPEN_EXISTING,
                FILE_FLAG_OVERLAPPED,
                ptr::null_mut(),
            )
        };
        if device == INVALID_HANDLE_VALUE {
            return Err(not_issued(&format!("open {path}")));
        }
        // SAFETY: no attributes, no name: an unnamed manual-reset event,
        // initially not signalled.
        let event = unsafe { CreateEventW(ptr::null(), 1, 0, ptr::null()) };
        if event.is_null() {
            let outcome = not_issued("CreateEventW");
            close(device);
            return Err(outcome);
        }
        let overlapped = Box::into_raw(Box::new(OVERLAPPED {
            hEvent: event,
            ..OVERLAPPED::default()
        }));
        let output = Box::into_raw(Box::new([0_u8; OUTPUT_CAPACITY]));
        let mut request = Self {
            device,
            event,
            overlapped,
            output,
            in_flight: true,
        };
        let mut returned = 0_u32;
        // SAFETY: `device` is open for overlapped I/O; the input is copied
        // by the call (METHOD_BUFFERED); `output` and `overlapped` are heap
        // blocks that stay allocated until the I/O completes (`Drop` leaks
        // them otherwise); `returned` outlives the call.
        let issued = unsafe {
            DeviceIoControl(
                device,
                IOCTL_WSK_SAMPLE_RUN,
                input.as_ptr().cast(),
                input_len,
                output.cast(),
                OUTPUT_LEN,
                &raw mut returned,
                overlapped,
            )
        };
        if issued != 0 {
            // Completed at once: the status block and the event are set;
            // `poll` reads them.
            return Ok(request);
        }
        let failure = last_error();
        if failure.code == ERROR_IO_PENDING {
            return Ok(request);
        }
        // Failed synchronously (a driver rejecting the line from its
        // dispatch routine): nothing is in flight, and the OVERLAPPED is
        // left as it was (still STATUS_PENDING, the event unset; seen so
        // under Wine 8 too), so it is not polled.
        request.in_flight = false;
        let output = report::written(request.output(), returned as usize).to_vec();
        Err(Outcome::Failed { failure, output })
    }

    /// The outcome once the request has completed, without waiting.
    pub fn poll(&mut self) -> Option<Outcome> {
        if !self.in_flight {
            return None;
        }
        let mut transferred = 0_u32;
        // SAFETY: the handle and `overlapped` of the I/O issued on it, both
        // alive; `transferred` outlives the call; no wait.
        let done =
            unsafe { GetOverlappedResult(self.device, self.overlapped, &raw mut transferred, 0) };
        let failure = (done == 0).then(last_error);
        if failure
            .as_ref()
            .is_some_and(|failure| failure.code == ERROR_IO_INCOMPLETE)
        {
            return None;
        }
        self.in_flight = false;
        let output = report::written(self.output(), transferred as usize).to_vec();
        Some(match failure {
            None => Outcome::Finished(output),
            Some(failure) => Outcome::Failed { failure, output },
        })
    }

    /// Waits up to `limit` for the completion (the event), then returns;
    /// [`poll`](Self::poll) tells.
    pub fn wait(&self, limit: Duration) {
        // Rounded up, so as not to spin; never INFINITE.
        let millis = u32::try_from(limit.as_micros().div_ceil(1000)).unwrap_or(u32::MAX - 1);
        // SAFETY: `event` is an open event handle.
        unsafe { WaitForSingleObject(self.event, millis) };
    }

    /// Asks the system to cancel this request (`CancelIoEx` with its
    /// `OVERLAPPED`); it still completes, with `ERROR_OPERATION_ABORTED`
    /// or its own result.
    ///
    /// # Errors
    /// `CancelIoEx` failed other than with `ERROR_NOT_FOUND` (which means
    /// the request had already completed).
    pub fn cancel(&self) -> Result<(), Failure> {
        if !self.in_flight {
            return Ok(());
        }
        // SAFETY: the handle and the `OVERLAPPED` of the I/O issued on it.
        let cancelled = unsafe { CancelIoEx(self.device, self.overlapped) };
        if cancelled != 0 {
            return Ok(());
        }
        let failure = last_error();
        if failure.code == ERROR_NOT_FOUND {
            Ok(())
        } else {
            Err(failure)
        }
    }

    fn output(&self) -> &[u8] {
        debug_assert!(!self.in_flight);
        // SAFETY: a live heap block, and nothing writes it any more: the
        // I/O is over.
        unsafe { &*self.output }
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if self.in_flight {
            // The system may still write the OVERLAPPED, the output buffer
            // and the event: leak them all.
            return;
        }
        // SAFETY: from `Box::into_raw` in `issue`, freed once, and the I/O
        // that used it is over.
        drop(unsafe { Box::from_raw(self.overlapped) });
        // SAFETY: as above.
        drop(unsafe { Box::from_raw(self.output) });
        close(self.event);
        close(self.device);
    }
}

fn close(handle: HANDLE) {
    // SAFETY: a handle this module opened and closes once.
    unsafe { CloseHandle(handle) };
}

fn last_error() -> Failure {
    // SAFETY: reads the calling thread's last error; no preconditions.
    failure(unsafe { GetLastError() })
}

/// The code and the system's message for it (without std's
/// " (os error N)").
fn failure(code: u32) -> Failure {
    let text = std::io::Error::from_raw_os_error(code.cast_signed()).to_string();
    let message = text
        .strip_suffix(&format!(" (os error {code})"))
        .unwrap_or(&text)
        .to_owned();
    Failure { code, message }
}
