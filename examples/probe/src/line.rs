//! The request line: one line of the `connect` example's options, as the
//! contract in `examples/demo/src/request.rs` reads it.
//!
//! The payload goes in double quotes with the contract's escapes (`\r`,
//! `\n`, `\\`, `\xHH`). Inside the quotes nothing may end them or the
//! line, so a double quote is always written `\x22`, and so is any byte
//! outside printable ASCII as `\xHH`.

use std::fmt::Write as _;
use std::net::SocketAddr;

use crate::options::Mode;

/// Checks `--send TEXT` and makes it safe between the line's double
/// quotes: the user's escapes are kept as written, a double quote becomes
/// `\x22`, and every byte outside printable ASCII becomes `\xHH`.
///
/// # Errors
/// A malformed escape, in the driver's words.
pub fn quote_text(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escape @ ('r' | 'n' | '\\')) => {
                    out.push('\\');
                    out.push(escape);
                }
                Some('x') => {
                    let digits: String = chars.by_ref().take(2).collect();
                    if digits.len() != 2 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
                        return Err(r"\x needs two hex digits".into());
                    }
                    out.push_str(r"\x");
                    out.push_str(&digits);
                }
                Some(other) => {
                    return Err(format!(r"unknown escape \{other} (use \r, \n, \\ or \xHH)"));
                }
                None => return Err("trailing backslash".into()),
            },
            '"' => out.push_str(r"\x22"),
            ' '..='~' => out.push(c),
            _ => {
                let mut utf8 = [0; 4];
                for &byte in c.encode_utf8(&mut utf8).as_bytes() {
                    push_hex(&mut out, byte);
                }
            }
        }
    }
    Ok(out)
}

/// Writes the bytes of `--send-file` for the line: a backslash as `\\`; a
/// double quote, a space and every byte outside printable ASCII as `\xHH`;
/// everything else as is.
#[must_use]
pub fn quote_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &byte in bytes {
        match byte {
            b'\\' => out.push_str(r"\\"),
            b'"' | b' ' => push_hex(&mut out, byte),
            0x21..=0x7E => out.push(char::from(byte)),
            _ => push_hex(&mut out, byte),
        }
    }
    out
}

fn push_hex(out: &mut String, byte: u8) {
    let _ = write!(out, r"\x{byte:02X}");
}

/// The request line for one mode: `--remote ADDR --mode MODE --send
/// "TEXT" --timeout-ms N`, then ` --tfo` when asked. `text` is already
/// quoted ([`quote_text`], [`quote_bytes`]).
#[must_use]
pub fn request_line(
    remote: SocketAddr,
    mode: Mode,
    text: &str,
    timeout_ms: u64,
    fast_open: bool,
) -> String {
    let mut line = format!(
        "--remote {remote} --mode {} --send \"{text}\" --timeout-ms {timeout_ms}",
        mode.name()
    );
    if fast_open {
        line.push_str(" --tfo");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_keeps_the_users_escapes() {
        let text = r"GET / HTTP/1.0\r\n\r\n \\ \x00\xfF";
        assert_eq!(quote_text(text).unwrap(), text);
    }

    #[test]
    fn text_quotes_what_would_break_the_line() {
        assert_eq!(quote_text(r#"say "hi""#).unwrap(), r"say \x22hi\x22");
        assert_eq!(quote_text("tab\there").unwrap(), r"tab\x09here");
        assert_eq!(quote_text("cr\rlf\n").unwrap(), r"cr\x0Dlf\x0A");
        assert_eq!(quote_text("\u{7f}").unwrap(), r"\x7F");
        assert_eq!(quote_text("é").unwrap(), r"\xC3\xA9");
        assert_eq!(quote_text("").unwrap(), "");
    }

    #[test]
    fn text_rejects_malformed_escapes() {
        assert_eq!(
            quote_text(r"\t").unwrap_err(),
            r"unknown escape \t (use \r, \n, \\ or \xHH)"
        );
        assert_eq!(quote_text(r"\x4").unwrap_err(), r"\x needs two hex digits");
        assert_eq!(quote_text(r"\x4g").unwrap_err(), r"\x needs two hex digits");
        assert_eq!(quote_text(r"\xé0").unwrap_err(), r"\x needs two hex digits");
        assert_eq!(quote_text("a\\").unwrap_err(), "trailing backslash");
    }

    #[test]
    fn bytes_are_quoted_one_by_one() {
        assert_eq!(quote_bytes(b"abc~!"), "abc~!");
        assert_eq!(quote_bytes(b"a b"), r"a\x20b");
        assert_eq!(quote_bytes(b"\"q\""), r"\x22q\x22");
        assert_eq!(quote_bytes(b"back\\slash"), r"back\\slash");
        assert_eq!(
            quote_bytes(b"\r\n\t\0\x7f\x80\xff"),
            r"\x0D\x0A\x09\x00\x7F\x80\xFF"
        );
        assert_eq!(quote_bytes(b""), "");
    }

    #[test]
    fn every_byte_survives_the_round_trip() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(unescape(&quote_bytes(&all)), all);
        let text: String = (' '..='~').collect::<String>() + "\r\n\té\u{0}";
        let quoted = quote_text(&text.replace('\\', r"\\")).unwrap();
        assert_eq!(unescape(&quoted), text.as_bytes());
    }

    #[test]
    fn quoted_text_never_ends_the_quotes_or_the_line() {
        let all: Vec<u8> = (0..=255).collect();
        let text: String = (0..=0x7f_u8)
            .map(char::from)
            .collect::<String>()
            .replace('\\', "");
        for quoted in [quote_bytes(&all), quote_text(&text).unwrap()] {
            assert!(
                quoted
                    .bytes()
                    .all(|b| (0x20..=0x7E).contains(&b) && b != b'"')
            );
        }
    }

    #[test]
    fn the_line() {
        let remote = "127.0.0.1:7".parse().unwrap();
        assert_eq!(
            request_line(remote, Mode::Connect, r"hello\r\n", 5000, false),
            r#"--remote 127.0.0.1:7 --mode connect --send "hello\r\n" --timeout-ms 5000"#
        );
        let remote = "[::1]:443".parse().unwrap();
        assert_eq!(
            request_line(remote, Mode::ConnectEx, "", 1, true),
            r#"--remote [::1]:443 --mode connect-ex --send "" --timeout-ms 1 --tfo"#
        );
        assert_eq!(
            request_line(remote, Mode::SocketConnect, r"a\x20b", 10, false),
            r#"--remote [::1]:443 --mode socket-connect --send "a\x20b" --timeout-ms 10"#
        );
    }

    /// The contract's decoding (`wsk_demo::unescape`), for the round trip.
    fn unescape(text: &str) -> Vec<u8> {
        let mut bytes = text.bytes();
        let mut out = Vec::new();
        while let Some(byte) = bytes.next() {
            out.push(if byte == b'\\' {
                match bytes.next() {
                    Some(b'r') => b'\r',
                    Some(b'n') => b'\n',
                    Some(b'\\') => b'\\',
                    Some(b'x') => {
                        let hex = [bytes.next().unwrap(), bytes.next().unwrap()];
                        u8::from_str_radix(std::str::from_utf8(&hex).unwrap(), 16).unwrap()
                    }
                    other => panic!("bad escape {other:?} in {text:?}"),
                }
            } else {
                byte
            });
        }
        out
    }
}
