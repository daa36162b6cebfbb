//! Compile-only stand-in for `wdk` 0.5.0: `nt_success` and `println!` with
//! the real crate's shapes; nothing here runs.
#![no_std]

/// `NT_SUCCESS`.
#[must_use]
pub const fn nt_success(status: i32) -> bool {
    status >= 0
}

/// What `println!` expands to; prints nothing.
#[doc(hidden)]
pub fn _print(args: core::fmt::Arguments<'_>) {
    let _ = args;
}

/// `print!` as the real crate declares it.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {
        ($crate::_print(format_args!($($arg)*)))
    };
}

/// `println!` as the real crate declares it.
#[macro_export]
macro_rules! println {
    () => {
        ($crate::print!("\n"))
    };
    ($($arg:tt)*) => {
        ($crate::print!("{}\n", format_args!($($arg)*)))
    };
}
