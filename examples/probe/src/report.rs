//! How one request ended, and the line printed for it.

use std::time::Duration;

/// `ERROR_FILE_NOT_FOUND`: opening a device nobody created.
pub const ERROR_FILE_NOT_FOUND: u32 = 2;

/// `ERROR_INVALID_PARAMETER`: what `STATUS_INVALID_PARAMETER` (a rejected
/// request line) becomes in user mode.
pub const ERROR_INVALID_PARAMETER: u32 = 87;

/// `ERROR_OPERATION_ABORTED`: what `STATUS_CANCELLED` becomes.
pub const ERROR_OPERATION_ABORTED: u32 = 995;

/// A Win32 error and the system's words for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The code `GetLastError` gave.
    pub code: u32,
    /// Its message.
    pub message: String,
}

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It could not be issued: the step that failed, and why.
    NotIssued {
        /// `open \\.\WskSample`, `CreateEventW` or `DeviceIoControl`.
        step: String,
        /// Why.
        failure: Failure,
    },
    /// It completed with a success status: the output bytes.
    Finished(Vec<u8>),
    /// It completed with an error: the error and whatever output bytes
    /// came back with it.
    Failed {
        /// The error.
        failure: Failure,
        /// The output (the driver's reason for a rejection, if it arrived).
        output: Vec<u8>,
    },
    /// It did not complete within the bound; it was cancelled and then
    /// completed.
    Expired(Duration),
    /// It did not complete within the bound nor after `CancelIoEx` and a
    /// grace period: its buffers were left allocated.
    Abandoned(Duration),
}

impl Outcome {
    /// The line to print for `mode`, and whether it counts as a success.
    /// `cancel_asked`: the request was cancelled on purpose
    /// (`--cancel-after-ms`). For `request` (a line sent as it is), any
    /// mode's `ok` line counts.
    #[must_use]
    pub fn report(&self, mode: &str, cancel_asked: bool) -> (String, bool) {
        match self {
            Self::NotIssued { step, failure } => {
                let hint = if failure.code == ERROR_FILE_NOT_FOUND && step.starts_with("open ") {
                    " (is the driver loaded?)"
                } else {
                    ""
                };
                (
                    format!(
                        "{mode}: error cannot {step}: {} (Win32 error {}){hint}",
                        failure.message.trim_end(),
                        failure.code
                    ),
                    false,
                )
            }
            Self::Finished(output) if output.is_empty() => (
                format!("{mode}: error the request succeeded with no result line"),
                false,
            ),
            Self::Finished(output) => {
                let line = String::from_utf8_lossy(output).into_owned();
                let ok = if mode == "request" {
                    line.split_once(": ")
                        .is_some_and(|(_, rest)| rest.starts_with("ok "))
                } else {
                    line.starts_with(&format!("{mode}: ok "))
                };
                (line, ok)
            }
            Self::Failed { failure, output } => match failure.code {
                ERROR_INVALID_PARAMETER => {
                    let reason = if output.is_empty() {
                        "(no reason came back with the error)".into()
                    } else {
                        String::from_utf8_lossy(output)
                    };
                    (
                        format!("{mode}: rejected STATUS_INVALID_PARAMETER: {reason}"),
                        false,
                    )
                }
                ERROR_OPERATION_ABORTED if cancel_asked => (format!("{mode}: cancelled"), true),
                ERROR_OPERATION_ABORTED => (
                    format!(
                        "{mode}: error cancelled without being asked (ERROR_OPERATION_ABORTED)"
                    ),
                    false,
                ),
                code => {
                    let mut line = format!(
                        "{mode}: error the request failed: {} (Win32 error {code})",
                        failure.message.trim_end()
                    );
                    if !output.is_empty() {
                        line.push_str(": ");
                        line.push_str(&String::from_utf8_lossy(output));
                    }
                    (line, false)
                }
            },
            Self::Expired(bound) => (
                format!(
                    "{mode}: error no completion within {} ms; cancelled with CancelIoEx",
                    bound.as_millis()
                ),
                false,
            ),
            Self::Abandoned(bound) => (
                format!(
                    "{mode}: error no completion within {} ms, nor after CancelIoEx; abandoned",
                    bound.as_millis()
                ),
                false,
            ),
        }
    }
}

/// The text the driver wrote into a zeroed output buffer: the bytes the
/// completion reported (all of them when it reported none), up to the
/// first NUL.
///
/// A result line never holds a NUL (the line escapes it). The cut matters
/// for error completions: a synchronous one reports no count, and one
/// that pended reports the driver's count although, for
/// `METHOD_BUFFERED`, neither Windows nor Wine copies the bytes back for
/// an error status: the buffer stays zero.
#[must_use]
pub fn written(output: &[u8], reported: usize) -> &[u8] {
    let reported = if reported == 0 {
        output
    } else {
        &output[..reported.min(output.len())]
    };
    let end = reported
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(reported.len());
    &reported[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: u32) -> Failure {
        Failure {
            code,
            message: "The message.\r\n".into(),
        }
    }

    #[test]
    fn a_finished_line_is_printed_as_is() {
        let line =
            "connect: ok path=connect sent=16 received=16 reply=hello from wsk\\r\\n elapsed_us=7";
        let outcome = Outcome::Finished(line.as_bytes().to_vec());
        assert_eq!(outcome.report("connect", false), (line.to_owned(), true));
        assert_eq!(outcome.report("connect", true), (line.to_owned(), true));
        // Another mode's line is not this mode's success.
        assert!(!outcome.report("connect-ex", false).1);
        // A line sent as it is succeeds with any mode's ok line.
        assert!(outcome.report("request", false).1);
        let accept = "accept: ok path=accept sent=4 received=4 reply=ping elapsed_us=9";
        assert!(Outcome::Finished(accept.into()).report("request", false).1);
    }

    #[test]
    fn a_finished_error_line_is_printed_and_fails() {
        let line = "socket-connect: error STATUS_NOT_IMPLEMENTED (0xC0000002) not supported by this provider";
        let outcome = Outcome::Finished(line.as_bytes().to_vec());
        assert_eq!(
            outcome.report("socket-connect", false),
            (line.to_owned(), false)
        );
        assert!(!outcome.report("request", false).1);
        let outcome = Outcome::Finished(Vec::new());
        let (line, ok) = outcome.report("connect", false);
        assert_eq!(
            line,
            "connect: error the request succeeded with no result line"
        );
        assert!(!ok);
    }

    #[test]
    fn a_rejection_shows_the_drivers_reason() {
        let outcome = Outcome::Failed {
            failure: failure(87),
            output: b"invalid request: --remote is required".to_vec(),
        };
        assert_eq!(
            outcome.report("connect", false),
            (
                "connect: rejected STATUS_INVALID_PARAMETER: invalid request: --remote is required"
                    .to_owned(),
                false
            )
        );
        let outcome = Outcome::Failed {
            failure: failure(87),
            output: Vec::new(),
        };
        assert_eq!(
            outcome.report("connect", false).0,
            "connect: rejected STATUS_INVALID_PARAMETER: (no reason came back with the error)"
        );
    }

    #[test]
    fn a_cancellation_counts_only_when_asked() {
        let outcome = Outcome::Failed {
            failure: failure(995),
            output: Vec::new(),
        };
        assert_eq!(
            outcome.report("connect-ex", true),
            ("connect-ex: cancelled".to_owned(), true)
        );
        let (line, ok) = outcome.report("connect-ex", false);
        assert!(line.starts_with("connect-ex: error cancelled without being asked"));
        assert!(!ok);
    }

    #[test]
    fn the_probes_own_failures() {
        let outcome = Outcome::NotIssued {
            step: r"open \\.\WskSample".into(),
            failure: failure(2),
        };
        assert_eq!(
            outcome.report("connect", false),
            (
                "connect: error cannot open \\\\.\\WskSample: The message. (Win32 error 2) \
                 (is the driver loaded?)"
                    .to_owned(),
                false
            )
        );
        let outcome = Outcome::NotIssued {
            step: "CreateEventW".into(),
            failure: failure(8),
        };
        assert_eq!(
            outcome.report("connect", false).0,
            "connect: error cannot CreateEventW: The message. (Win32 error 8)"
        );
        let outcome = Outcome::Failed {
            failure: failure(31),
            output: b"partial".to_vec(),
        };
        assert_eq!(
            outcome.report("connect", true).0,
            "connect: error the request failed: The message. (Win32 error 31): partial"
        );
        let bound = Duration::from_secs(25);
        assert_eq!(
            Outcome::Expired(bound).report("connect", true),
            (
                "connect: error no completion within 25000 ms; cancelled with CancelIoEx"
                    .to_owned(),
                false
            )
        );
        let (line, ok) = Outcome::Abandoned(bound).report("connect", true);
        assert!(line.ends_with("nor after CancelIoEx; abandoned"), "{line}");
        assert!(!ok);
    }

    #[test]
    fn written_bytes() {
        let mut output = [0_u8; 8];
        output[..3].copy_from_slice(b"abc");
        assert_eq!(written(&output, 2), b"ab");
        assert_eq!(written(&output, 0), b"abc");
        assert_eq!(written(&output, 100), b"abc");
        assert_eq!(written(&[b'x'; 4], 0), b"xxxx");
        assert_eq!(written(&[b'x'; 4], 3), b"xxx");
        // An error status that pended: a count, but nothing copied.
        assert_eq!(written(&[0; 8], 5), b"");
    }
}
