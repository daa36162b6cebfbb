//! The configuration of the startup run, from the service key's
//! `Parameters` subkey (without `RemoteAddress` there is no startup run; the
//! device serves requests either way):
//!
//! | value | type | meaning |
//! |---|---|---|
//! | `RemoteAddress` | `REG_SZ`, optional | the server, `ip:port` or `[v6]:port` |
//! | `Payload` | `REG_SZ`, default `hello from wsk\r\n` | bytes to send, with the `\r` `\n` `\\` `\xHH` escapes |
//! | `Mode` | `REG_SZ`, default `all` | `socket-connect`, `connect`, `connect-ex` or `all` |
//! | `TimeoutMs` | `REG_DWORD`, default 5000 | the limit for every blocking call, 1 to 600000 |
//!
//! Read with `ZwOpenKey` and `ZwQueryValueKey` at `PASSIVE_LEVEL`.

use core::fmt;
use core::net::SocketAddr;
use core::ptr;
use core::time::Duration;

use wsk::{NtStatus, PoolBuffer, PoolTag};
use wsk_demo::{EscapeError, Escaped, Mode};

use crate::ffi::{
    self, HANDLE, KEY_VALUE_PARTIAL_INFORMATION, OBJECT_ATTRIBUTES, REG_DWORD, REG_SZ,
    UNICODE_STRING,
};

/// The driver's pool tag (configuration buffers).
pub const TAG: PoolTag = PoolTag::new(*b"WskD");

/// The longest `Payload` text, in UTF-16 units; the payload is never longer.
const MAX_PAYLOAD_TEXT: usize = 8192;
/// The longest of the other text values, in UTF-16 units.
const MAX_SHORT_TEXT: usize = 256;
const DEFAULT_PAYLOAD: &str = "hello from wsk\\r\\n";
const DEFAULT_TIMEOUT_MS: u32 = 5000;
const MAX_TIMEOUT_MS: u32 = 600_000;

/// What the driver is asked to do.
pub struct Config {
    /// The server.
    pub remote: SocketAddr,
    /// The bytes to send (`len` is the payload's length).
    pub payload: PoolBuffer,
    /// The modes to run, in order.
    pub modes: &'static [Mode],
    /// The limit for every blocking call.
    pub timeout: Duration,
}

/// How much of an offending value an error line shows.
const SNIPPET: usize = 64;

/// The start of a value's text, kept for the error line.
#[derive(Clone, Copy)]
pub struct Snippet {
    bytes: [u8; SNIPPET],
    len: usize,
    cut: bool,
}

impl Snippet {
    fn of(text: &str) -> Self {
        let mut bytes = [0; SNIPPET];
        let len = text.len().min(SNIPPET);
        bytes[..len].copy_from_slice(&text.as_bytes()[..len]);
        Self {
            bytes,
            len,
            cut: text.len() > SNIPPET,
        }
    }
}

impl fmt::Display for Snippet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}", Escaped(&self.bytes[..self.len]))?;
        f.write_str(if self.cut { "...\"" } else { "\"" })
    }
}

/// Why the configuration cannot be used: one clear line each.
pub enum ConfigError {
    /// The `Parameters` subkey cannot be opened.
    NoKey(NtStatus),
    /// A value has the wrong registry type.
    WrongType {
        name: &'static str,
        found: u32,
        expected: &'static str,
    },
    /// A value is longer than the driver accepts.
    TooLong { name: &'static str, max: usize },
    /// A text value is not valid UTF-16.
    NotText(&'static str),
    /// `ZwQueryValueKey` failed.
    Query {
        name: &'static str,
        status: NtStatus,
    },
    /// `RemoteAddress` is not `ip:port` or `[v6]:port` (or has port 0).
    BadAddress(Snippet),
    /// `Payload` has a malformed escape.
    BadPayload(EscapeError),
    /// `Mode` is not one of the four.
    BadMode(Snippet),
    /// `TimeoutMs` is out of range.
    BadTimeout(u32),
    /// Pool ran out.
    NoMemory,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("configuration error: ")?;
        match self {
            Self::NoKey(status) => write!(
                f,
                "cannot open the service key's Parameters subkey: {status}"
            ),
            Self::WrongType {
                name,
                found,
                expected,
            } => write!(f, "{name} has registry type {found}, expected {expected}"),
            Self::TooLong { name, max } => {
                write!(f, "{name} is longer than {max} characters")
            }
            Self::NotText(name) => write!(f, "{name} is not valid UTF-16 text"),
            Self::Query { name, status } => write!(f, "{name} cannot be read: {status}"),
            Self::BadAddress(text) => write!(
                f,
                "RemoteAddress {text} is not ip:port or [v6]:port with a non-zero port"
            ),
            Self::BadPayload(error) => write!(f, "Payload: {error}"),
            Self::BadMode(text) => write!(
                f,
                "Mode {text} is not socket-connect, connect, connect-ex or all"
            ),
            Self::BadTimeout(value) => {
                write!(f, "TimeoutMs {value} is not between 1 and {MAX_TIMEOUT_MS}")
            }
            Self::NoMemory => f.write_str("out of pool memory"),
        }
    }
}

impl From<wsk::Error> for ConfigError {
    fn from(_: wsk::Error) -> Self {
        Self::NoMemory
    }
}

/// An ASCII name as the UTF-16 a `UNICODE_STRING` points at.
const fn wide<const N: usize>(text: &str) -> [u16; N] {
    let bytes = text.as_bytes();
    assert!(bytes.len() == N, "the length is the name's");
    let mut out = [0; N];
    let mut i = 0;
    while i < N {
        out[i] = bytes[i] as u16;
        i += 1;
    }
    out
}

/// A registry value name.
struct Name {
    text: &'static str,
    wide: &'static [u16],
}

const REMOTE_ADDRESS: Name = Name {
    text: "RemoteAddress",
    wide: &wide::<13>("RemoteAddress"),
};
const PAYLOAD: Name = Name {
    text: "Payload",
    wide: &wide::<7>("Payload"),
};
const MODE: Name = Name {
    text: "Mode",
    wide: &wide::<4>("Mode"),
};
const TIMEOUT_MS: Name = Name {
    text: "TimeoutMs",
    wide: &wide::<9>("TimeoutMs"),
};
const PARAMETERS: [u16; 11] = wide::<11>("\\Parameters");
/// The longest `...\Services\<name>\Parameters` path, in UTF-16 units
/// (service names have at most 256 characters).
const MAX_KEY_PATH: usize = 512;

/// The UTF-16 text of a `UNICODE_STRING`.
///
/// # Safety
/// `string` describes `Length` readable bytes of UTF-16, valid for `'a`.
unsafe fn units<'a>(string: &UNICODE_STRING) -> &'a [u16] {
    if string.Buffer.is_null() || string.Length == 0 {
        return &[];
    }
    // SAFETY: per the contract.
    unsafe { core::slice::from_raw_parts(string.Buffer, usize::from(string.Length) / 2) }
}

/// An open registry key, closed on drop.
struct Key(HANDLE);

impl Key {
    /// Opens `path` (UTF-16, an absolute `\Registry\...` name) for reading.
    fn open(path: &[u16]) -> Result<Self, NtStatus> {
        let length =
            u16::try_from(path.len() * 2).map_err(|_| NtStatus(ffi::STATUS_BUFFER_OVERFLOW))?;
        let mut name = UNICODE_STRING {
            Length: length,
            MaximumLength: length,
            Buffer: path.as_ptr().cast_mut(),
        };
        let attributes = OBJECT_ATTRIBUTES {
            Length: u32::try_from(size_of::<OBJECT_ATTRIBUTES>()).unwrap_or(48),
            RootDirectory: ptr::null_mut(),
            ObjectName: &raw mut name,
            Attributes: ffi::OBJ_CASE_INSENSITIVE | ffi::OBJ_KERNEL_HANDLE,
            SecurityDescriptor: ptr::null_mut(),
            SecurityQualityOfService: ptr::null_mut(),
        };
        let mut handle: HANDLE = ptr::null_mut();
        // SAFETY: valid attributes naming a string that outlives the call
        // (ZwOpenKey does not write it); PASSIVE_LEVEL (DriverEntry).
        let status =
            unsafe { ffi::ZwOpenKey(&raw mut handle, ffi::KEY_READ, &raw const attributes) };
        if status == ffi::STATUS_SUCCESS {
            Ok(Self(handle))
        } else {
            Err(NtStatus(status))
        }
    }

    /// Reads `name` into `buffer`: `None` when it does not exist, else its
    /// type and data (a view into `buffer`).
    fn query<'b>(
        &self,
        name: &Name,
        buffer: &'b mut PoolBuffer,
    ) -> Result<Option<(u32, &'b [u8])>, ConfigError> {
        let length = u16::try_from(name.wide.len() * 2).unwrap_or(u16::MAX);
        let value_name = UNICODE_STRING {
            Length: length,
            MaximumLength: length,
            Buffer: name.wide.as_ptr().cast_mut(),
        };
        let capacity = u32::try_from(buffer.len()).unwrap_or(u32::MAX);
        let mut needed = 0_u32;
        // SAFETY: an open key; a value name that is only read; `buffer` has
        // `capacity` writable bytes, 16-byte aligned (pool); PASSIVE_LEVEL.
        let status = unsafe {
            ffi::ZwQueryValueKey(
                self.0,
                &raw const value_name,
                ffi::KEY_VALUE_PARTIAL_INFORMATION_CLASS,
                buffer.as_mut_ptr().cast(),
                capacity,
                &raw mut needed,
            )
        };
        match status {
            ffi::STATUS_SUCCESS => {}
            ffi::STATUS_OBJECT_NAME_NOT_FOUND => return Ok(None),
            ffi::STATUS_BUFFER_OVERFLOW | ffi::STATUS_BUFFER_TOO_SMALL => {
                return Err(ConfigError::TooLong {
                    name: name.text,
                    max: (buffer.len() - DATA) / 2 - 1,
                });
            }
            other => {
                return Err(ConfigError::Query {
                    name: name.text,
                    status: NtStatus(other),
                });
            }
        }
        let header = |offset: usize| {
            u32::from_le_bytes([
                buffer[offset],
                buffer[offset + 1],
                buffer[offset + 2],
                buffer[offset + 3],
            ])
        };
        let kind = header(core::mem::offset_of!(KEY_VALUE_PARTIAL_INFORMATION, Type));
        let data_length = header(core::mem::offset_of!(
            KEY_VALUE_PARTIAL_INFORMATION,
            DataLength
        ));
        let end = DATA
            .saturating_add(usize::try_from(data_length).unwrap_or(usize::MAX))
            .min(buffer.len());
        Ok(Some((kind, &buffer[DATA..end])))
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        // SAFETY: a handle from ZwOpenKey, closed once.
        let _ = unsafe { ffi::ZwClose(self.0) };
    }
}

/// Where a value's data starts in the query buffer.
const DATA: usize = core::mem::offset_of!(KEY_VALUE_PARTIAL_INFORMATION, Data);

/// A query buffer for text of at most `units` UTF-16 units plus a NUL.
fn query_buffer(units: usize) -> Result<PoolBuffer, ConfigError> {
    Ok(PoolBuffer::zeroed(DATA + (units + 1) * 2, TAG)?)
}

/// Text decoded from UTF-16 into UTF-8, in pool.
struct Text {
    bytes: PoolBuffer,
}

impl Text {
    fn as_str(&self) -> &str {
        // Only ever filled from `char`s.
        core::str::from_utf8(&self.bytes).unwrap_or_default()
    }
}

/// A `REG_SZ` value's text, `None` when absent.
fn text(key: &Key, name: &Name, max_units: usize) -> Result<Option<Text>, ConfigError> {
    let mut buffer = query_buffer(max_units)?;
    let Some((kind, data)) = key.query(name, &mut buffer)? else {
        return Ok(None);
    };
    if kind != REG_SZ {
        return Err(ConfigError::WrongType {
            name: name.text,
            found: kind,
            expected: "REG_SZ",
        });
    }
    let units = data
        .chunks_exact(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]));
    // Trailing NULs are the terminator, not text.
    let count = data.len() / 2;
    let trailing = data
        .chunks_exact(2)
        .rev()
        .take_while(|pair| pair == &[0, 0])
        .count();
    let units = units.take(count - trailing);
    if count - trailing > max_units {
        return Err(ConfigError::TooLong {
            name: name.text,
            max: max_units,
        });
    }
    // At most three UTF-8 bytes per UTF-16 unit.
    let mut bytes = PoolBuffer::zeroed((count - trailing) * 3, TAG)?;
    let mut len = 0;
    for decoded in char::decode_utf16(units) {
        let ch = decoded.map_err(|_| ConfigError::NotText(name.text))?;
        len += ch.encode_utf8(&mut bytes[len..]).len();
    }
    bytes.set_len(len);
    Ok(Some(Text { bytes }))
}

/// A `REG_DWORD` value, `None` when absent.
fn dword(key: &Key, name: &Name) -> Result<Option<u32>, ConfigError> {
    // Room for a short string too, so a value of the wrong type is reported
    // as such rather than as too long.
    let mut buffer = query_buffer(MAX_SHORT_TEXT)?;
    let Some((kind, data)) = key.query(name, &mut buffer)? else {
        return Ok(None);
    };
    match (kind, data) {
        (REG_DWORD, &[a, b, c, d]) => Ok(Some(u32::from_le_bytes([a, b, c, d]))),
        _ => Err(ConfigError::WrongType {
            name: name.text,
            found: kind,
            expected: "REG_DWORD",
        }),
    }
}

/// Reads and checks the configuration under `registry_path\Parameters`.
///
/// # IRQL
/// `PASSIVE_LEVEL`.
///
/// # Safety
/// `registry_path` is the `RegistryPath` `DriverEntry` was given, still
/// valid (it is, during `DriverEntry`).
pub unsafe fn read(registry_path: &UNICODE_STRING) -> Result<Option<Config>, ConfigError> {
    // SAFETY: per the contract.
    let service = unsafe { units(registry_path) };
    let mut path = [0_u16; MAX_KEY_PATH];
    let path_len = service.len() + PARAMETERS.len();
    if path_len > path.len() {
        return Err(ConfigError::NoKey(NtStatus(ffi::STATUS_NAME_TOO_LONG)));
    }
    for (slot, unit) in path.iter_mut().zip(service.iter().chain(&PARAMETERS)) {
        *slot = *unit;
    }
    let key = match Key::open(&path[..path_len]) {
        Ok(key) => key,
        // No Parameters subkey: no startup run.
        Err(status) if status.0 == ffi::STATUS_OBJECT_NAME_NOT_FOUND => return Ok(None),
        Err(status) => return Err(ConfigError::NoKey(status)),
    };

    let Some(remote) = text(&key, &REMOTE_ADDRESS, MAX_SHORT_TEXT)? else {
        return Ok(None);
    };
    let remote = match remote.as_str().parse::<SocketAddr>() {
        Ok(address) if address.port() != 0 => address,
        _ => return Err(ConfigError::BadAddress(Snippet::of(remote.as_str()))),
    };

    let payload_text = text(&key, &PAYLOAD, MAX_PAYLOAD_TEXT)?;
    let payload_text = payload_text.as_ref().map_or(DEFAULT_PAYLOAD, Text::as_str);
    // Every escape decodes to one byte, every other byte stays one byte: the
    // payload is never longer than its text (at most 3 x 8192 bytes, well
    // within WskConnectEx's 65,535).
    let mut payload = PoolBuffer::zeroed(payload_text.len(), TAG)?;
    let len = wsk_demo::unescape(payload_text, &mut payload).map_err(ConfigError::BadPayload)?;
    payload.set_len(len);

    let modes = match text(&key, &MODE, MAX_SHORT_TEXT)? {
        None => &Mode::ALL[..],
        Some(mode) => wsk_demo::parse_modes(mode.as_str())
            .ok_or_else(|| ConfigError::BadMode(Snippet::of(mode.as_str())))?,
    };

    let timeout_ms = dword(&key, &TIMEOUT_MS)?.unwrap_or(DEFAULT_TIMEOUT_MS);
    if !(1..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
        return Err(ConfigError::BadTimeout(timeout_ms));
    }

    Ok(Some(Config {
        remote,
        payload,
        modes,
        timeout: Duration::from_millis(u64::from(timeout_ms)),
    }))
}
