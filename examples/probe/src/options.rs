//! The command line.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::time::Duration;

use crate::contract::USER_NAME;
use crate::line;

/// The one usage line.
pub const USAGE: &str = "usage: wsk-probe [--remote ADDR] [--mode socket-connect|connect|connect-ex|all] \
[--send TEXT | --send-file PATH] [--timeout-ms N] [--tfo] [--concurrency N] [--cancel-after-ms N] \
[--device PATH] [--request LINE]";

/// What is sent without `--send` or `--send-file` (the `connect`
/// example's payload).
pub const DEFAULT_TEXT: &str = r"hello from wsk\r\n";

/// The default `--timeout-ms`: the contract's default limit per step.
pub const DEFAULT_TIMEOUT_MS: u64 = 5000;

/// The most requests `--concurrency` issues at once.
pub const MAX_CONCURRENCY: usize = 1024;

/// One way to connect, as the contract names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `WskSocketConnect`.
    SocketConnect,
    /// `WskSocket`, `WskBind`, `WskConnect`, then send.
    Connect,
    /// `WskSocket`, `WskBind`, `WskConnectEx`.
    ConnectEx,
}

impl Mode {
    /// Every mode, in the order `all` runs them.
    pub const ALL: [Self; 3] = [Self::SocketConnect, Self::Connect, Self::ConnectEx];

    /// The mode's name in the request line and the result line.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::SocketConnect => "socket-connect",
            Self::Connect => "connect",
            Self::ConnectEx => "connect-ex",
        }
    }

    fn parse_list(text: &str) -> Option<&'static [Self]> {
        match text {
            "all" => Some(&Self::ALL),
            "socket-connect" => Some(&Self::ALL[0..1]),
            "connect" => Some(&Self::ALL[1..2]),
            "connect-ex" => Some(&Self::ALL[2..3]),
            _ => None,
        }
    }
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `--help`: print the usage.
    Help,
    /// Run the requests.
    Run(Options),
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The server; `None` starts a loopback echo server.
    pub remote: Option<SocketAddr>,
    /// The modes, run one after another.
    pub modes: &'static [Mode],
    /// The payload as the request line carries it: the contract's escapes,
    /// nothing that would end the double quotes around it.
    pub text: String,
    /// The driver's limit for each step.
    pub timeout_ms: u64,
    /// `--tfo`: connect-ex enables TCP Fast Open.
    pub fast_open: bool,
    /// Requests issued at once for each mode.
    pub concurrency: usize,
    /// Cancel each request this long after issuing it.
    pub cancel_after: Option<Duration>,
    /// The device to open.
    pub device: String,
    /// `--request LINE`: send this request line as it is (to see how the
    /// driver rejects a malformed one), instead of building one per mode.
    pub request: Option<String>,
}

impl Options {
    /// How long to wait for one request before cancelling it:
    /// `timeout-ms * 4 + 5 s`.
    #[must_use]
    pub const fn wait_bound(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.saturating_mul(4).saturating_add(5000))
    }
}

/// Parses the arguments (without the program name).
///
/// # Errors
/// One line saying what is wrong, for exit status 2.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let mut options = Options {
        remote: None,
        modes: &Mode::ALL,
        text: DEFAULT_TEXT.to_owned(),
        timeout_ms: DEFAULT_TIMEOUT_MS,
        fast_open: false,
        concurrency: 1,
        cancel_after: None,
        device: USER_NAME.to_owned(),
        request: None,
    };
    let mut text = None;
    let mut file = None;
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let flag = flag
            .into_string()
            .map_err(|flag| format!("argument {} is not valid Unicode", flag.display()))?;
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{flag} needs a value"))?
                .into_string()
                .map_err(|value| format!("{flag}: {} is not valid Unicode", value.display()))
        };
        match flag.as_str() {
            "--help" | "-h" => return Ok(Command::Help),
            "--remote" => options.remote = Some(remote(&value()?)?),
            "--mode" => {
                let mode = value()?;
                options.modes =
                    Mode::parse_list(&mode).ok_or_else(|| format!("unknown mode {mode:?}"))?;
            }
            "--send" => text = Some(value()?),
            "--send-file" => file = Some(value()?),
            "--timeout-ms" => options.timeout_ms = number(&flag, &value()?, 1, u64::MAX)?,
            "--tfo" => options.fast_open = true,
            "--concurrency" => {
                let max = MAX_CONCURRENCY as u64;
                let n = number(&flag, &value()?, 1, max)?;
                options.concurrency = usize::try_from(n).map_err(|_| "--concurrency")?;
            }
            "--cancel-after-ms" => {
                let millis = number(&flag, &value()?, 0, u64::MAX)?;
                options.cancel_after = Some(Duration::from_millis(millis));
            }
            "--device" => options.device = value()?,
            "--request" => options.request = Some(value()?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    options.text = match (text, file) {
        (Some(_), Some(_)) => return Err("--send and --send-file exclude each other".into()),
        (Some(text), None) => {
            line::quote_text(&text).map_err(|error| format!("--send: {error}"))?
        }
        (None, Some(path)) => {
            let bytes =
                std::fs::read(&path).map_err(|error| format!("--send-file {path}: {error}"))?;
            line::quote_bytes(&bytes)
        }
        (None, None) => DEFAULT_TEXT.to_owned(),
    };
    Ok(Command::Run(options))
}

fn remote(text: &str) -> Result<SocketAddr, String> {
    text.parse::<SocketAddr>()
        .ok()
        .filter(|address| address.port() != 0)
        .ok_or_else(|| {
            format!("bad --remote {text:?} (use ip:port or [v6]:port, with a non-zero port)")
        })
}

fn number(flag: &str, text: &str, min: u64, max: u64) -> Result<u64, String> {
    text.parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            if max == u64::MAX {
                format!("{flag} is a number from {min}, not {text:?}")
            } else {
                format!("{flag} is a number from {min} to {max}, not {text:?}")
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raw_request_line_is_kept_as_given() {
        let options = run(&[
            "--request",
            "--remote 127.0.0.1:7 --mode all",
            "--concurrency",
            "2",
        ])
        .unwrap();
        assert_eq!(
            options.request.as_deref(),
            Some("--remote 127.0.0.1:7 --mode all")
        );
        assert_eq!(options.concurrency, 2);
        assert_eq!(run(&["--request"]).unwrap_err(), "--request needs a value");
    }

    fn run(args: &[&str]) -> Result<Options, String> {
        match parse(args.iter().map(OsString::from))? {
            Command::Run(options) => Ok(options),
            Command::Help => Err("help".into()),
        }
    }

    #[test]
    fn defaults() {
        let options = run(&[]).unwrap();
        assert_eq!(options.remote, None);
        assert_eq!(options.modes, &Mode::ALL);
        assert_eq!(options.text, r"hello from wsk\r\n");
        assert_eq!(options.timeout_ms, 5000);
        assert!(!options.fast_open);
        assert_eq!(options.concurrency, 1);
        assert_eq!(options.cancel_after, None);
        assert_eq!(options.device, r"\\.\WskSample");
        assert_eq!(options.wait_bound(), Duration::from_secs(25));
    }

    #[test]
    fn every_option() {
        let options = run(&[
            "--remote",
            "[::1]:8080",
            "--mode",
            "connect-ex",
            "--send",
            r#"GET / "x"\r\n"#,
            "--timeout-ms",
            "250",
            "--tfo",
            "--concurrency",
            "8",
            "--cancel-after-ms",
            "0",
            "--device",
            r"\\.\Other",
        ])
        .unwrap();
        assert_eq!(options.remote, Some("[::1]:8080".parse().unwrap()));
        assert_eq!(options.modes, &[Mode::ConnectEx]);
        assert_eq!(options.text, r"GET / \x22x\x22\r\n");
        assert_eq!(options.timeout_ms, 250);
        assert!(options.fast_open);
        assert_eq!(options.concurrency, 8);
        assert_eq!(options.cancel_after, Some(Duration::ZERO));
        assert_eq!(options.device, r"\\.\Other");
        assert_eq!(options.wait_bound(), Duration::from_secs(6));
    }

    #[test]
    fn each_mode() {
        for (text, modes) in [
            ("socket-connect", &[Mode::SocketConnect][..]),
            ("connect", &[Mode::Connect]),
            ("connect-ex", &[Mode::ConnectEx]),
            ("all", &Mode::ALL),
        ] {
            assert_eq!(run(&["--mode", text]).unwrap().modes, modes);
        }
    }

    #[test]
    fn help() {
        for flag in ["--help", "-h"] {
            let command = parse([OsString::from("--mode"), "connect".into(), flag.into()]);
            assert_eq!(command, Ok(Command::Help));
        }
    }

    #[test]
    fn send_file_is_quoted_byte_by_byte() {
        let path = std::env::temp_dir().join(format!("wsk-probe-test-{}", std::process::id()));
        std::fs::write(&path, b"a \"b\"\\\r\n\x00\xff").unwrap();
        let options = run(&["--send-file", path.to_str().unwrap()]);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(options.unwrap().text, r"a\x20\x22b\x22\\\x0D\x0A\x00\xFF");
    }

    #[test]
    fn malformed_arguments() {
        for (args, message) in [
            (&["--bogus"][..], "unknown argument \"--bogus\""),
            (&["--remote"], "--remote needs a value"),
            (&["--remote", "localhost:80"], "bad --remote"),
            (&["--remote", "127.0.0.1:0"], "bad --remote"),
            (&["--mode", "fast"], "unknown mode \"fast\""),
            (&["--timeout-ms", "0"], "--timeout-ms is a number from 1"),
            (&["--timeout-ms", "-1"], "--timeout-ms is a number from 1"),
            (
                &["--concurrency", "0"],
                "--concurrency is a number from 1 to 1024",
            ),
            (
                &["--concurrency", "1025"],
                "--concurrency is a number from 1 to 1024",
            ),
            (
                &["--cancel-after-ms", "x"],
                "--cancel-after-ms is a number from 0",
            ),
            (&["--send", r"\q"], r"--send: unknown escape \q"),
            (&["--send", r"\x4"], r"--send: \x needs two hex digits"),
            (&["--send", "end\\"], "--send: trailing backslash"),
            (&["--send", "a", "--send-file", "b"], "exclude each other"),
            (
                &["--send-file", "/nonexistent/wsk-probe"],
                "--send-file /nonexistent/wsk-probe: ",
            ),
        ] {
            let error = run(args).unwrap_err();
            assert!(error.contains(message), "{args:?}: {error}");
            assert!(!error.contains('\n'), "{args:?}: {error}");
        }
    }

    #[test]
    fn the_last_of_a_repeated_option_counts() {
        let options = run(&[
            "--mode", "connect", "--mode", "all", "--send", "a", "--send", "b",
        ]);
        let options = options.unwrap();
        assert_eq!(options.modes, &Mode::ALL);
        assert_eq!(options.text, "b");
    }
}
