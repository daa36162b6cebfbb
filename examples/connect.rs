//! The `connect` job: connects the three WSK ways through the library and
//! the emulator, sends a payload, reads one reply chunk, and prints one
//! result line per mode.
//!
//! With no arguments it starts an echo server on loopback and runs all three
//! modes against it:
//!
//! ```sh
//! cargo run --example connect
//! cargo run --example connect -- --remote 127.0.0.1:8000 --mode connect --send 'GET / HTTP/1.0\r\n\r\n'
//! cargo run --example connect -- --remote localhost:8000      # a name: WskGetAddressInfo first
//! cargo run --example connect -- --mode accept --local 127.0.0.1:7000   # then connect to it
//! ```
//!
//! `--mode accept` listens on `--local` instead, accepts one peer, prints
//! its first chunk as the reply, and sends back `--send` or that chunk.
//!
//! Exit status: 0 when every requested mode succeeded, 1 otherwise, 2 for
//! malformed arguments.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use wsk::emulator::Kernel;
use wsk::{Family, PassiveLevel, Registration};
use wsk_demo::{Job, Mode, Outcome, ResultLine};

const USAGE: &str = "usage: connect [--remote ADDR|HOST:PORT] [--mode socket-connect|connect|connect-ex|all] \
[--local ADDR] [--send TEXT | --send-file PATH] [--tfo] [--timeout-ms N]\n       \
connect --mode accept --local ADDR [--send TEXT | --send-file PATH] [--timeout-ms N]";
const DEFAULT_PAYLOAD: &str = "hello from wsk\\r\\n";

struct Options {
    remote: Option<SocketAddr>,
    /// `--remote HOST:PORT`: resolved through the provider first.
    name: Option<(String, u16)>,
    modes: &'static [Mode],
    local: Option<SocketAddr>,
    payload: Vec<u8>,
    fast_open: bool,
    timeout: Duration,
}

fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        remote: None,
        name: None,
        modes: &Mode::ALL,
        local: None,
        payload: Vec::new(),
        fast_open: false,
        timeout: Duration::from_secs(5),
    };
    let mut text = None;
    let mut file = None;
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--remote" => {
                let text = value()?;
                match address(&text) {
                    Ok(remote) => options.remote = Some(remote),
                    Err(error) => {
                        let (name, port) = text.rsplit_once(':').ok_or_else(|| error.clone())?;
                        let port: u16 = port.parse().map_err(|_| error.clone())?;
                        // A name: letters, digits, dots, hyphens and
                        // underscores (an IPv6 address needs brackets).
                        let valid = |byte: u8| {
                            byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b'_')
                        };
                        if name.is_empty()
                            || name.len() > 253
                            || !name.bytes().all(valid)
                            || port == 0
                        {
                            return Err(error);
                        }
                        options.name = Some((name.to_owned(), port));
                    }
                }
            }
            "--local" => options.local = Some(address(&value()?)?),
            "--mode" => {
                let mode = value()?;
                options.modes =
                    wsk_demo::parse_modes(&mode).ok_or_else(|| format!("unknown mode {mode:?}"))?;
            }
            "--send" => text = Some(value()?),
            "--send-file" => file = Some(value()?),
            "--tfo" => options.fast_open = true,
            "--timeout-ms" => {
                let millis = value()?;
                let millis: u64 = millis
                    .parse()
                    .map_err(|_| format!("bad --timeout-ms {millis:?}"))?;
                if millis == 0 {
                    return Err("--timeout-ms must be positive".into());
                }
                options.timeout = Duration::from_millis(millis);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    options.payload = match (text, file) {
        (Some(_), Some(_)) => return Err("--send and --send-file exclude each other".into()),
        (None, Some(path)) => {
            std::fs::read(&path).map_err(|error| format!("--send-file {path}: {error}"))?
        }
        (text, None) => {
            let text = text.unwrap_or_else(|| DEFAULT_PAYLOAD.into());
            let mut out = vec![0; text.len()];
            let len =
                wsk_demo::unescape(&text, &mut out).map_err(|error| format!("--send: {error}"))?;
            out.truncate(len);
            out
        }
    };
    if let (Some(local), Some(remote)) = (options.local, options.remote)
        && Family::of(&local) != Family::of(&remote)
    {
        return Err("--local and --remote must be of the same family".into());
    }
    if options.modes == Mode::ACCEPT {
        // The listening address stands for both.
        match options.local {
            Some(local)
                if local.port() != 0
                    && options.remote.is_none()
                    && options.name.is_none()
                    && !options.fast_open =>
            {
                options.remote = Some(local);
            }
            _ => {
                return Err(
                    "--mode accept takes --local ip:port with a non-zero port, and neither --remote nor --tfo"
                        .into(),
                );
            }
        }
    }
    Ok(options)
}

fn address(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("bad address {text:?} (use ip:port, [v6]:port or host:port)"))
}

/// An echo server on loopback: each connection gets back what it sends.
fn start_echo_server() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buffer = [0_u8; 16 * 1024];
                while let Ok(n @ 1..) = stream.read(&mut buffer) {
                    if stream.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(address)
}

fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("connect: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let remote = match options.remote {
        Some(remote) => remote,
        // Resolved below, once the provider is captured.
        None if options.name.is_some() => SocketAddr::from(([0, 0, 0, 0], 0)),
        None => match start_echo_server() {
            Ok(address) => address,
            Err(error) => {
                eprintln!("connect: cannot start the echo server: {error}");
                return ExitCode::FAILURE;
            }
        },
    };
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = PassiveLevel::check().expect("main runs at PASSIVE_LEVEL");
    let registration = match Registration::register(&passive) {
        Ok(registration) => registration,
        Err(error) => {
            eprintln!("connect: WskRegister failed: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut all_ok = true;
    {
        let provider = match registration.capture(&passive, options.timeout) {
            Ok(provider) => provider,
            Err(error) => {
                eprintln!("connect: WskCaptureProviderNPI failed: {error}");
                return ExitCode::FAILURE;
            }
        };
        let remote = match &options.name {
            None => remote,
            Some((name, port)) => {
                match provider.resolve_blocking(&passive, options.timeout, name, *port) {
                    Ok(addresses) => {
                        let wanted = |address: &&SocketAddr| {
                            options
                                .local
                                .is_none_or(|local| Family::of(&local) == Family::of(address))
                        };
                        if let Some(&address) = addresses.iter().find(wanted) {
                            address
                        } else {
                            eprintln!("connect: {name} has no address of --local's family");
                            return ExitCode::FAILURE;
                        }
                    }
                    Err(error) => {
                        eprintln!("connect: cannot resolve {name}: {error}");
                        return ExitCode::FAILURE;
                    }
                }
            }
        };
        let local = options
            .local
            .unwrap_or_else(|| Family::of(&remote).unspecified());
        for &mode in options.modes {
            let start = Instant::now();
            let job = Job {
                local,
                remote,
                payload: &options.payload,
                fast_open: options.fast_open,
                timeout: options.timeout,
            };
            let result = wsk_demo::run_mode(&provider, &passive, mode, &job);
            let elapsed_us = start.elapsed().as_micros();
            all_ok &= result.is_ok();
            let outcome = Outcome::of(&result, elapsed_us);
            println!("{}", ResultLine { mode, outcome });
        }
    }
    let report = registration.deregister(&passive);
    if !report.is_clean() {
        eprintln!("connect: deregistration had to force: {report}");
        return ExitCode::FAILURE;
    }
    let leaks = kernel.settled_usage();
    if !leaks.is_empty() {
        eprintln!("connect: leaks: {leaks}");
        return ExitCode::FAILURE;
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
