//! The three values of the request contract the probe needs.
//!
//! Copies of the constants in `examples/demo/src/request.rs`, which the
//! probe cannot depend on (`wsk-demo` is `no_std` kernel code). The test
//! below reads that file and fails if the two ever differ.

/// `IOCTL_WSK_SAMPLE_RUN`: `CTL_CODE(FILE_DEVICE_UNKNOWN, 0x800,
/// METHOD_BUFFERED, FILE_ANY_ACCESS)`, run one request.
pub const IOCTL_WSK_SAMPLE_RUN: u32 = 0x0022_2000;

/// `USER_NAME`: the device as user mode opens it.
pub const USER_NAME: &str = r"\\.\WskSample";

/// `OUTPUT_CAPACITY`: the output buffer to offer, enough for any result
/// line (or a rejection's reason).
pub const OUTPUT_CAPACITY: usize = 512;

#[cfg(test)]
mod tests {
    use super::{IOCTL_WSK_SAMPLE_RUN, OUTPUT_CAPACITY, USER_NAME};

    const REQUEST_RS: &str = include_str!("../../demo/src/request.rs");

    /// The text between `=` and `;` of `pub const NAME: ...`.
    fn value_of(name: &str) -> &'static str {
        let start = format!("pub const {name}:");
        let line = REQUEST_RS
            .lines()
            .find(|line| line.trim_start().starts_with(&start))
            .unwrap_or_else(|| panic!("request.rs has no `{start}`"));
        let (_, value) = line.split_once('=').expect("a constant has a value");
        value.trim().trim_end_matches(';').trim()
    }

    /// Evaluates the integer expressions request.rs uses: literals
    /// (decimal or `0x`, with `_`), `<<`, `|` and parentheses.
    fn evaluate(expression: &str) -> u64 {
        fn or(text: &mut &str) -> u64 {
            let mut value = shift(text);
            while let Some(rest) = text.trim_start().strip_prefix('|') {
                *text = rest;
                value |= shift(text);
            }
            value
        }
        fn shift(text: &mut &str) -> u64 {
            let mut value = atom(text);
            while let Some(rest) = text.trim_start().strip_prefix("<<") {
                *text = rest;
                value <<= atom(text);
            }
            value
        }
        fn atom(text: &mut &str) -> u64 {
            let trimmed = text.trim_start();
            if let Some(rest) = trimmed.strip_prefix('(') {
                *text = rest;
                let value = or(text);
                *text = text
                    .trim_start()
                    .strip_prefix(')')
                    .expect("a closing parenthesis");
                return value;
            }
            let end = trimmed
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(trimmed.len());
            let literal = trimmed[..end].replace('_', "");
            *text = &trimmed[end..];
            literal.strip_prefix("0x").map_or_else(
                || literal.parse().expect("a decimal literal"),
                |hex| u64::from_str_radix(hex, 16).expect("a hex literal"),
            )
        }
        let mut text = expression;
        let value = or(&mut text);
        assert!(
            text.trim().is_empty(),
            "unparsed: {text:?} in {expression:?}"
        );
        value
    }

    #[test]
    fn the_ioctl_code_matches_request_rs() {
        let expression = value_of("IOCTL_WSK_SAMPLE_RUN");
        assert_eq!(
            evaluate(expression),
            u64::from(IOCTL_WSK_SAMPLE_RUN),
            "{expression}"
        );
    }

    #[test]
    fn the_user_name_matches_request_rs() {
        let value = value_of("USER_NAME");
        let name = value
            .strip_prefix("r\"")
            .and_then(|value| value.strip_suffix('"'))
            .unwrap_or_else(|| panic!("USER_NAME is not a raw string: {value}"));
        assert_eq!(name, USER_NAME);
    }

    #[test]
    fn the_output_capacity_matches_request_rs() {
        let value = value_of("OUTPUT_CAPACITY");
        assert_eq!(evaluate(value), OUTPUT_CAPACITY as u64);
    }

    #[test]
    fn the_evaluator_reads_what_request_rs_writes() {
        assert_eq!(evaluate("(0x22 << 16) | (0x800 << 2)"), 0x0022_2000);
        assert_eq!(evaluate("512"), 512);
        assert_eq!(evaluate("0x0022_2000"), 0x0022_2000);
    }
}
