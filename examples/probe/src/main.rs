//! `wsk-probe`: sends the sample drivers' requests from user mode.
//!
//! ```text
//! wsk-probe [--remote ADDR] [--mode socket-connect|connect|connect-ex|all]
//!           [--send TEXT | --send-file PATH] [--timeout-ms N] [--tfo]
//!           [--concurrency N] [--cancel-after-ms N] [--device PATH]
//!           [--request LINE]
//! ```
//!
//! `--request LINE` sends that request line as it is, labelled `request`
//! (to see how the driver answers a malformed one, or to send a mode the
//! options do not build, such as `--mode accept --local ADDR`).
//!
//! Prints one line per request: the driver's result line as it returned
//! it, `MODE: cancelled`, `MODE: rejected STATUS_INVALID_PARAMETER: REASON`
//! or `MODE: error ...` for the probe's own failures. Exit status: 0 when
//! every request succeeded (`MODE: ok ...`) or was cancelled as asked, 1
//! otherwise, 2 for malformed arguments. Windows (or Wine) only.

use std::process::ExitCode;

#[cfg(not(windows))]
fn main() -> ExitCode {
    eprintln!(
        "wsk-probe: runs only on Windows (it sends requests to the driver's device); \
         build it with scripts/build-probe.sh"
    );
    ExitCode::FAILURE
}

#[cfg(windows)]
fn main() -> ExitCode {
    use wsk_probe::options::{self, Command, USAGE};
    use wsk_probe::{batch, echo, line};

    let options = match options::parse(std::env::args_os().skip(1)) {
        Ok(Command::Run(options)) => options,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("wsk-probe: {message}; {USAGE}");
            return ExitCode::from(2);
        }
    };
    let remote = match options.remote {
        Some(remote) => remote,
        None => match echo::start() {
            Ok(address) => address,
            Err(error) => {
                eprintln!("wsk-probe: cannot start the echo server: {error}");
                return ExitCode::FAILURE;
            }
        },
    };
    let mut all_ok = true;
    if let Some(request) = &options.request {
        for outcome in batch::run(&options, request.as_bytes()) {
            let (text, ok) = outcome.report("request", options.cancel_after.is_some());
            println!("{text}");
            all_ok &= ok;
        }
        return if all_ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    for &mode in options.modes {
        let request = line::request_line(
            remote,
            mode,
            &options.text,
            options.timeout_ms,
            options.fast_open,
        );
        for outcome in batch::run(&options, request.as_bytes()) {
            let (text, ok) = outcome.report(mode.name(), options.cancel_after.is_some());
            println!("{text}");
            all_ok &= ok;
        }
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
