//! The request contract both sample drivers serve, and the task that
//! serves one request.
//!
//! User mode opens `\\.\WskSample` and sends [`IOCTL_WSK_SAMPLE_RUN`]
//! (buffered) with one line of the `connect` example's options as input:
//!
//! ```text
//! --remote ADDR|HOST:PORT --mode socket-connect|connect|connect-ex [--send TEXT] [--timeout-ms N] [--tfo] [--local ADDR]
//! --mode accept --local ADDR [--send TEXT] [--timeout-ms N]
//! ```
//!
//! A `--remote` host name is resolved first (`WskGetAddressInfo`, in the
//! task, at `PASSIVE_LEVEL`): the first address of `--local`'s family, or
//! the first of all.
//!
//! `accept` listens on `--local` (a non-zero port), accepts one peer,
//! takes its first chunk as the reply, and sends back `--send` or, without
//! it, that chunk.
//!
//! Options are separated by spaces; a value with spaces is written in
//! double quotes, and `TEXT` takes the escapes `\r`, `\n`, `\\` and `\xHH`
//! (`\x22` for a quote). The driver pends the request, runs it as a task,
//! and completes it with the result line of that mode (exactly the line
//! the `connect` example prints) as output. A malformed line completes the
//! request at once with `STATUS_INVALID_PARAMETER` and a one-line reason as
//! output; a cancelled request (`CancelIoEx`, or the driver unloading)
//! completes with `STATUS_CANCELLED`.
//!
//! Parsing ([`Request::parse`]), the task body ([`serve`]) and the output
//! ([`Served::write_line`]) are the same code in every driver, and run
//! under `cargo test` against the emulator.

use core::fmt::{self, Write as _};
use core::net::SocketAddr;
use core::time::Duration;

use wsk::{Error, Family, NtStatus, PoolBuffer, PoolTag, Provider, SocketKind};

use crate::{EscapeError, Job, Mode, REPLY_CAPACITY, ResultLine, Run, unescape};

/// The device's kernel name.
pub const DEVICE_NAME: &str = r"\Device\WskSample";

/// The symbolic link that makes the device `\\.\WskSample` in user mode.
pub const LINK_NAME: &str = r"\DosDevices\WskSample";

/// What user mode opens.
pub const USER_NAME: &str = r"\\.\WskSample";

/// `CTL_CODE(FILE_DEVICE_UNKNOWN, 0x800, METHOD_BUFFERED, FILE_ANY_ACCESS)`:
/// run one request.
pub const IOCTL_WSK_SAMPLE_RUN: u32 = (0x22 << 16) | (0x800 << 2);

/// The longest request line accepted.
pub const MAX_LINE: usize = 4096;

/// The longest payload a request may send.
pub const MAX_PAYLOAD: usize = 2048;

/// The default limit for each step of a request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest limit a request may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_mins(10);

/// The output buffer a caller should offer: enough for any result line.
pub const OUTPUT_CAPACITY: usize = 512;

/// The longest host name `--remote` takes.
pub const MAX_NAME: usize = 253;

/// Where a request connects.
#[derive(Debug)]
pub enum Remote {
    /// An address.
    Address(SocketAddr),
    /// A host name to resolve first, in pool, and the port.
    Name {
        /// The name's bytes (UTF-8).
        name: PoolBuffer,
        /// The port.
        port: u16,
    },
}

/// One parsed request.
#[derive(Debug)]
pub struct Request {
    /// The one mode to run.
    pub mode: Mode,
    /// The local address, if given (otherwise the wildcard of the remote's
    /// family).
    pub local: Option<SocketAddr>,
    /// The server.
    pub remote: Remote,
    /// The bytes to send, in pool.
    pub payload: PoolBuffer,
    /// The limit for each step.
    pub timeout: Duration,
    /// Whether connect-ex enables TCP Fast Open first.
    pub fast_open: bool,
}

/// Why a request line was rejected: one line for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// The line is not UTF-8, or longer than [`MAX_LINE`].
    BadLine,
    /// An option this contract does not have.
    UnknownOption,
    /// An option without its value.
    MissingValue(&'static str),
    /// `--remote` is missing.
    NoRemote,
    /// `--mode` is missing.
    NoMode,
    /// An address that is not `ip:port` or `[v6]:port` (or, for
    /// `--remote`, `host:port`; with a non-zero port for `--remote`).
    BadAddress(&'static str),
    /// A mode that is not `socket-connect`, `connect` or `connect-ex`.
    BadMode,
    /// `--timeout-ms` not a number from 1 to 600000.
    BadTimeout,
    /// A malformed `--send` escape, or a payload over [`MAX_PAYLOAD`].
    BadPayload(EscapeError),
    /// `--local` and `--remote` of different families.
    MixedFamilies,
    /// `--mode accept` without `--local` and a non-zero port, or with
    /// `--remote` or `--tfo`.
    BadAccept,
    /// An unterminated double quote.
    OpenQuote,
    /// The payload could not be allocated.
    NoMemory,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadLine => write!(
                f,
                "the request is not one UTF-8 line of at most {MAX_LINE} bytes"
            ),
            Self::UnknownOption => f.write_str(
                "unknown option (use --remote, --mode, --send, --timeout-ms, --tfo, --local)",
            ),
            Self::MissingValue(option) => write!(f, "{option} needs a value"),
            Self::NoRemote => f.write_str("--remote is required"),
            Self::NoMode => f.write_str("--mode is required"),
            Self::BadAddress(option) => {
                write!(
                    f,
                    "{option} is not ip:port, [v6]:port or host:port with a non-zero port"
                )
            }
            Self::BadMode => f.write_str("--mode is socket-connect, connect, connect-ex or accept"),
            Self::BadTimeout => f.write_str("--timeout-ms is a number from 1 to 600000"),
            Self::BadPayload(error) => write!(f, "--send: {error}"),
            Self::MixedFamilies => f.write_str("--local and --remote must be of the same family"),
            Self::BadAccept => f.write_str(
                "--mode accept takes --local ip:port with a non-zero port, and neither --remote nor --tfo",
            ),
            Self::OpenQuote => f.write_str("unterminated double quote"),
            Self::NoMemory => f.write_str("no memory for the payload"),
        }
    }
}

impl Request {
    /// Parses one request line.
    ///
    /// # Errors
    /// [`RequestError`] saying what is wrong, in one line.
    pub fn parse(line: &[u8]) -> Result<Self, RequestError> {
        if line.len() > MAX_LINE {
            return Err(RequestError::BadLine);
        }
        let line = core::str::from_utf8(line).map_err(|_| RequestError::BadLine)?;
        let line = line.trim_end_matches(['\r', '\n', '\0']);
        if line.contains(['\r', '\n']) {
            return Err(RequestError::BadLine);
        }
        let mut remote = None;
        let mut local = None;
        let mut mode = None;
        let mut send = None;
        let mut timeout = DEFAULT_TIMEOUT;
        let mut fast_open = false;
        let mut tokens = Tokens { rest: line };
        while let Some(option) = tokens.next()? {
            let mut value =
                |name: &'static str| tokens.next()?.ok_or(RequestError::MissingValue(name));
            match option {
                "--remote" => remote = Some(remote_of(value("--remote")?)?),
                "--local" => local = Some(address(value("--local")?, "--local", true)?),
                "--mode" => {
                    mode = Some(match value("--mode")? {
                        "socket-connect" => Mode::SocketConnect,
                        "connect" => Mode::Connect,
                        "connect-ex" => Mode::ConnectEx,
                        "accept" => Mode::Accept,
                        _ => return Err(RequestError::BadMode),
                    });
                }
                "--send" => send = Some(value("--send")?),
                "--timeout-ms" => {
                    let millis: u64 = value("--timeout-ms")?
                        .parse()
                        .map_err(|_| RequestError::BadTimeout)?;
                    timeout = Duration::from_millis(millis);
                    if timeout.is_zero() || timeout > MAX_TIMEOUT {
                        return Err(RequestError::BadTimeout);
                    }
                }
                "--tfo" => fast_open = true,
                _ => return Err(RequestError::UnknownOption),
            }
        }
        let mode = mode.ok_or(RequestError::NoMode)?;
        if mode == Mode::Accept {
            // The listening address stands for both (only its family is
            // read as the remote's).
            let listen = local
                .filter(|local| local.port() != 0 && remote.is_none() && !fast_open)
                .ok_or(RequestError::BadAccept)?;
            remote = Some(Target::Address(listen));
        }
        let remote = match remote.ok_or(RequestError::NoRemote)? {
            Target::Address(remote) => {
                if local.is_some_and(|local| Family::of(&local) != Family::of(&remote)) {
                    return Err(RequestError::MixedFamilies);
                }
                Remote::Address(remote)
            }
            Target::Name(name, port) => Remote::Name {
                name: PoolBuffer::from_slice(name.as_bytes(), PoolTag::BUFFER)
                    .map_err(|_| RequestError::NoMemory)?,
                port,
            },
        };
        // Decoded straight into pool: a kernel stack is small. Every escape
        // decodes to one byte, so the text's length is enough room.
        let text = send.unwrap_or("");
        let mut payload = PoolBuffer::zeroed(text.len().min(MAX_PAYLOAD * 4), PoolTag::BUFFER)
            .map_err(|_| RequestError::NoMemory)?;
        let len = unescape(text, &mut payload).map_err(RequestError::BadPayload)?;
        if len > MAX_PAYLOAD {
            return Err(RequestError::BadPayload(EscapeError::TooLong));
        }
        payload.set_len(len);
        Ok(Self {
            mode,
            local,
            remote,
            payload,
            timeout,
            fast_open,
        })
    }
}

/// What `--remote` names, as parsed (the name still in the line).
enum Target<'a> {
    Address(SocketAddr),
    Name(&'a str, u16),
}

/// `--remote`: an address, or `host:port` (a name of at most [`MAX_NAME`]
/// letters, digits, dots, hyphens and underscores; a non-zero port).
fn remote_of(text: &str) -> Result<Target<'_>, RequestError> {
    if let Ok(address) = address(text, "--remote", false) {
        return Ok(Target::Address(address));
    }
    let bad = RequestError::BadAddress("--remote");
    let (name, port) = text.rsplit_once(':').ok_or(bad)?;
    let port: u16 = port.parse().map_err(|_| bad)?;
    let valid = |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b'_');
    if port == 0 || name.is_empty() || name.len() > MAX_NAME || !name.bytes().all(valid) {
        return Err(bad);
    }
    Ok(Target::Name(name, port))
}

fn address(text: &str, option: &'static str, any_port: bool) -> Result<SocketAddr, RequestError> {
    text.parse::<SocketAddr>()
        .ok()
        .filter(|address| any_port || address.port() != 0)
        .ok_or(RequestError::BadAddress(option))
}

/// Space-separated tokens, with double quotes around values that hold
/// spaces.
struct Tokens<'a> {
    rest: &'a str,
}

impl<'a> Tokens<'a> {
    fn next(&mut self) -> Result<Option<&'a str>, RequestError> {
        let rest = self.rest.trim_start_matches(' ');
        if rest.is_empty() {
            self.rest = rest;
            return Ok(None);
        }
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').ok_or(RequestError::OpenQuote)?;
            self.rest = &quoted[end + 1..];
            return Ok(Some(&quoted[..end]));
        }
        let end = rest.find(' ').unwrap_or(rest.len());
        self.rest = &rest[end..];
        Ok(Some(&rest[..end]))
    }
}

/// What serving one request gave.
#[derive(Debug)]
pub struct Served {
    /// The mode it ran.
    pub mode: Mode,
    /// What the mode did.
    pub result: Result<Run, Error>,
}

impl Served {
    /// Writes the result line (that of the `connect` example for this
    /// mode, `elapsed_us` included) into `out`, cut short if `out` is too
    /// small; returns the bytes written.
    #[must_use]
    pub fn write_line(&self, elapsed_us: u128, out: &mut [u8]) -> usize {
        let outcome = crate::Outcome::of(&self.result, elapsed_us);
        write_into(
            out,
            format_args!(
                "{}",
                ResultLine {
                    mode: self.mode,
                    outcome
                }
            ),
        )
    }
}

/// Writes a rejected request's reason into `out`; returns the bytes written.
#[must_use]
pub fn write_rejection(error: &RequestError, out: &mut [u8]) -> usize {
    write_into(out, format_args!("invalid request: {error}"))
}

/// Formats into a byte buffer, cutting what does not fit.
fn write_into(out: &mut [u8], args: fmt::Arguments<'_>) -> usize {
    struct Cursor<'a> {
        out: &'a mut [u8],
        len: usize,
    }
    impl fmt::Write for Cursor<'_> {
        fn write_str(&mut self, text: &str) -> fmt::Result {
            let room = self.out.len() - self.len;
            let take = text.len().min(room);
            self.out[self.len..self.len + take].copy_from_slice(&text.as_bytes()[..take]);
            self.len += take;
            Ok(())
        }
    }
    let mut cursor = Cursor { out, len: 0 };
    let _ = cursor.write_fmt(args);
    cursor.len
}

/// Serves one request: runs its mode through futures, so that a driver
/// runs it as a task.
///
/// Each step is bounded by the request's timeout with a kernel timer.
/// Dropping the future (an aborted task) cancels whatever is in flight and
/// closes the connection.
pub async fn serve(provider: Provider, request: Request) -> Served {
    let result = match resolve(&provider, &request) {
        Ok(remote) => {
            let job = Job {
                local: request
                    .local
                    .unwrap_or_else(|| Family::of(&remote).unspecified()),
                remote,
                payload: &request.payload,
                fast_open: request.fast_open,
                timeout: request.timeout,
            };
            run_mode_async(&provider, request.mode, &job).await
        }
        Err(error) => Err(error),
    };
    Served {
        mode: request.mode,
        result,
    }
}

/// The request's remote address: as given, or its name resolved
/// (`WskGetAddressInfo` at `PASSIVE_LEVEL`, where tasks run): the first
/// address of `--local`'s family, or the first of all.
///
/// # Errors
/// [`Error::IrqlTooHigh`] above `PASSIVE_LEVEL`; what resolving returns;
/// [`Error::NotFound`] when no address of `--local`'s family came back.
fn resolve(provider: &Provider, request: &Request) -> Result<SocketAddr, Error> {
    let (name, port) = match &request.remote {
        Remote::Address(remote) => return Ok(*remote),
        Remote::Name { name, port } => (name, *port),
    };
    let name = core::str::from_utf8(name)
        .map_err(|_| Error::InvalidArgument(NtStatus::INVALID_PARAMETER))?;
    let passive = wsk::PassiveLevel::check().map_err(Error::IrqlTooHigh)?;
    let addresses = provider.resolve_blocking(&passive, request.timeout, name, port)?;
    addresses
        .iter()
        .copied()
        .find(|address| {
            request
                .local
                .is_none_or(|local| Family::of(&local) == Family::of(address))
        })
        .ok_or(Error::NotFound(NtStatus::NOT_FOUND))
}

/// [`run_mode`](crate::run_mode) as a future, each step within
/// `job.timeout`.
///
/// Connects the mode's way, sends the payload, reads one reply chunk, and
/// closes gracefully; `accept` listens, accepts, reads and answers.
///
/// # Errors
/// The first failing step's error ([`Error::TimedOut`] for a step that
/// took too long); the connection is closed either way.
pub async fn run_mode_async(provider: &Provider, mode: Mode, job: &Job<'_>) -> Result<Run, Error> {
    let Job {
        local,
        remote,
        payload,
        fast_open,
        timeout,
    } = *job;
    let data = PoolBuffer::from_slice(payload, PoolTag::BUFFER)?;
    let family = Family::of(&remote);
    let (connection, path, sent) = match mode {
        Mode::Accept => {
            let listener = wsk::timeout(timeout, provider.listen(local)).await??;
            let (connection, _peer) = wsk::timeout(timeout, listener.accept()).await??;
            let buffer = PoolBuffer::zeroed(REPLY_CAPACITY, PoolTag::BUFFER)?;
            let (received, chunk) = wsk::timeout(timeout, connection.receive(buffer)).await?;
            received?;
            let back = if data.is_empty() {
                PoolBuffer::from_slice(&chunk, PoolTag::BUFFER)?
            } else {
                data
            };
            let sent = send(&connection, timeout, back).await?;
            wsk::timeout(timeout, connection.close_gracefully()).await??;
            // One peer: stop listening, once done with it (Wine 8 closes
            // the connection accepted last with its listener).
            wsk::timeout(timeout, listener.close()).await??;
            return Ok(Run {
                path: "accept",
                sent,
                reply: chunk,
            });
        }
        Mode::SocketConnect => {
            let connection =
                wsk::timeout(timeout, provider.socket_connect(local, remote)).await??;
            let sent = send(&connection, timeout, data).await?;
            (connection, "socket-connect", sent)
        }
        Mode::Connect => {
            let socket =
                wsk::timeout(timeout, provider.socket(family, SocketKind::Connection)).await??;
            let bound = wsk::timeout(timeout, socket.bind(local)).await??;
            let connection = wsk::timeout(timeout, bound.connect(remote)).await??;
            let sent = send(&connection, timeout, data).await?;
            (connection, "connect", sent)
        }
        Mode::ConnectEx => {
            let mut socket =
                wsk::timeout(timeout, provider.socket(family, SocketKind::Connection)).await??;
            if fast_open {
                wsk::timeout(timeout, socket.enable_fast_open()).await??;
            }
            let bound = wsk::timeout(timeout, socket.bind(local)).await??;
            let data = (!data.is_empty()).then_some(data);
            let (connected, _data) = wsk::timeout(timeout, bound.connect_ex(remote, data)).await?;
            let (connection, outcome) = connected?;
            (connection, outcome.path.name(), outcome.sent)
        }
    };
    let buffer = PoolBuffer::zeroed(REPLY_CAPACITY, PoolTag::BUFFER)?;
    let (received, reply) = wsk::timeout(timeout, connection.receive(buffer)).await?;
    received?;
    wsk::timeout(timeout, connection.close_gracefully()).await??;
    Ok(Run { path, sent, reply })
}

async fn send(
    connection: &wsk::Connection,
    timeout: Duration,
    data: PoolBuffer,
) -> Result<usize, Error> {
    if data.is_empty() {
        return Ok(0);
    }
    let (sent, _data) = wsk::timeout(timeout, connection.send(data)).await?;
    sent
}
