//! Log lines: formatted with `core::fmt` into a fixed stack buffer, then
//! handed to `DbgPrint("%s\n", line)`. No allocation, never fails: text
//! that does not fit is cut and marked with `...`.

use core::fmt::{self, Write};

use crate::ffi;

/// Every line starts with this.
pub const PREFIX: &str = "wsk-sample: ";

/// `DbgPrint` handles at most 512 bytes per call: the line, `\n` and NUL fit.
const CAPACITY: usize = 510;
const CUT_MARK: &[u8] = b"...";

/// One line being formatted.
pub struct Line {
    bytes: [u8; CAPACITY],
    len: usize,
    cut: bool,
}

impl Line {
    const fn new() -> Self {
        Self {
            bytes: [0; CAPACITY],
            len: 0,
            cut: false,
        }
    }

    /// The text with its terminating NUL, cut if it overflowed.
    fn terminated(&mut self) -> &[u8] {
        // Room for the NUL is kept by `write_str`.
        if self.cut {
            let start = self.len.saturating_sub(CUT_MARK.len());
            self.bytes[start..self.len].copy_from_slice(CUT_MARK);
        }
        self.bytes[self.len] = 0;
        &self.bytes[..=self.len]
    }
}

impl Write for Line {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for &byte in text.as_bytes() {
            // Keep one byte for the NUL.
            if self.len + 1 >= CAPACITY {
                self.cut = true;
                break;
            }
            // A NUL inside would end the C string early; a line break would
            // split the line.
            self.bytes[self.len] = match byte {
                0 => b'?',
                b'\r' | b'\n' => b' ',
                other => other,
            };
            self.len += 1;
        }
        Ok(())
    }
}

/// Logs `PREFIX` and `args` as one line.
///
/// # IRQL
/// `DISPATCH_LEVEL` or below (the line is on the stack, which is resident
/// while the thread runs).
pub fn line(args: fmt::Arguments<'_>) {
    let mut line = Line::new();
    let _ = line.write_str(PREFIX);
    let _ = line.write_fmt(args);
    let text = line.terminated();
    // SAFETY: a NUL-terminated format and one NUL-terminated string argument
    // for its one `%s`; both outlive the call.
    unsafe { ffi::DbgPrint(c"%s\n".as_ptr(), text.as_ptr()) };
}

/// `log!("...", args)`: one `wsk-sample: ` line through `DbgPrint`.
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::log::line(format_args!($($arg)*))
    };
}
pub(crate) use log;
