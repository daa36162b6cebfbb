//! `wsk-probe`: a user-mode program that drives the sample drivers' request
//! contract (`examples/demo/src/request.rs`) the way an application would.
//!
//! For each mode it opens `\\.\WskSample` for overlapped I/O, sends the
//! request line with `DeviceIoControl` (as many at once as
//! `--concurrency` says), optionally cancels each with `CancelIoEx`, waits
//! for them with `GetOverlappedResult`, and prints each result line as the
//! driver returned it. Without `--remote` the requests target a loopback
//! echo server the probe starts itself.
//!
//! The command line, the request line and the report are plain Rust,
//! tested on any host; the I/O ([`device`], [`batch`]) is Windows only.
//! Under Wine 8 the program needs `bcryptprimitives.dll` from `shim/`
//! beside it (see `scripts/build-probe.sh`).

pub mod contract;
pub mod echo;
pub mod line;
pub mod options;
pub mod report;

#[cfg(windows)]
pub mod batch;
#[cfg(windows)]
pub mod device;
