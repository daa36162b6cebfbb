//! Function signatures against the headers: every `PFN_*` type the
//! library declares, and every function it imports (`src/sys.rs`).
//!
//! For each, C code calls the header's function (or a pointer of the
//! header's type) with arguments of the types the Rust declaration gives,
//! and takes the result as the Rust return type. Compiled with incompatible
//! pointer types, integer-pointer mix-ups, dropped qualifiers and narrowing
//! conversions made errors, a wrong parameter count, a pointer to the wrong
//! type, a wider integer than the header's, or a wrong return type fails
//! the build, naming the function. Two parameters of the same type swapped
//! cannot be seen by any type check.
//!
//! The Rust side is read from the types themselves (`type_name` of each
//! `PFN_*`) and from the text of `src/sys.rs`'s Windows import blocks
//! (compiled only for the kernel target); C names come from a small table
//! of Rust-to-C types. Where the C type cannot be spelt from the Rust one,
//! an override names it, with why the two are the same at the ABI level.

use super::Set;

/// A `PFN_*` type: its C name, the Rust type's `type_name`, and the
/// translation unit whose headers declare it.
struct Pointer {
    c_name: &'static str,
    rust: &'static str,
    set: Set,
}

macro_rules! pointers {
    ($($set:ident: $($rust:ident as $c:ident),*;)*) => {
        vec![$($(Pointer {
            c_name: stringify!($c),
            rust: std::any::type_name::<wsk::abi::$rust>(),
            set: Set::$set,
        }),*),*]
    };
}

fn pointers() -> Vec<Pointer> {
    pointers!(
        Wsk: PFN_WSK_CLIENT_EVENT as PFN_WSK_CLIENT_EVENT,
            PFN_WSK_SOCKET as PFN_WSK_SOCKET,
            PFN_WSK_SOCKET_CONNECT as PFN_WSK_SOCKET_CONNECT,
            PFN_WSK_CONTROL_SOCKET as PFN_WSK_CONTROL_SOCKET,
            PFN_WSK_CLOSE_SOCKET as PFN_WSK_CLOSE_SOCKET,
            PFN_WSK_BIND as PFN_WSK_BIND,
            PFN_WSK_CONNECT as PFN_WSK_CONNECT,
            PFN_WSK_SEND as PFN_WSK_SEND,
            PFN_WSK_RECEIVE as PFN_WSK_RECEIVE,
            PFN_WSK_DISCONNECT as PFN_WSK_DISCONNECT,
            PFN_WSK_GET_ADDRESS as PFN_WSK_GET_LOCAL_ADDRESS,
            PFN_WSK_GET_ADDRESS as PFN_WSK_GET_REMOTE_ADDRESS,
            PFN_WSK_CONNECT_EX as PFN_WSK_CONNECT_EX,
            PFN_WSK_RELEASE_DATA_INDICATION_LIST as PFN_WSK_RELEASE_DATA_INDICATION_LIST,
            PFN_WSK_ACCEPT as PFN_WSK_ACCEPT,
            PFN_WSK_SEND_TO as PFN_WSK_SEND_TO,
            PFN_WSK_RECEIVE_FROM as PFN_WSK_RECEIVE_FROM,
            PFN_WSK_GET_ADDRESS_INFO as PFN_WSK_GET_ADDRESS_INFO,
            PFN_WSK_FREE_ADDRESS_INFO as PFN_WSK_FREE_ADDRESS_INFO,
            PFN_WSK_GET_NAME_INFO as PFN_WSK_GET_NAME_INFO,
            PFN_WSK_RECEIVE_EVENT as PFN_WSK_RECEIVE_EVENT,
            PFN_WSK_DISCONNECT_EVENT as PFN_WSK_DISCONNECT_EVENT,
            PFN_WSK_SEND_BACKLOG_EVENT as PFN_WSK_SEND_BACKLOG_EVENT;
        Wdm: PIO_COMPLETION_ROUTINE as PIO_COMPLETION_ROUTINE,
            PKDEFERRED_ROUTINE as PKDEFERRED_ROUTINE,
            PIO_WORKITEM_ROUTINE as PIO_WORKITEM_ROUTINE,
            PDRIVER_CANCEL as PDRIVER_CANCEL;
    )
}

/// Parameters whose C type cannot be spelt from the Rust one: (function,
/// parameter index, C type).
const OVERRIDES: &[(&str, usize, &str)] = &[
    // LARGE_INTEGER is a union of one LONGLONG: passed by value in the same
    // register as the library's i64.
    ("KeSetTimer", 1, "LARGE_INTEGER"),
    // A pointer to that union, as the library's *const i64.
    ("KeWaitForSingleObject", 4, "PLARGE_INTEGER"),
];

/// The C spelling of a Rust type as `type_name` or `src/sys.rs` writes it.
fn c_type(rust: &str) -> String {
    let rust = rust.trim();
    if let Some(pointee) = rust.strip_prefix("*mut ") {
        return format!("{} *", c_type(pointee));
    }
    if let Some(pointee) = rust.strip_prefix("*const ") {
        return format!("const {} *", c_type(pointee));
    }
    let name = rust.rsplit("::").next().unwrap_or(rust);
    match name {
        "c_void" => "void",
        "u8" => "UCHAR",
        "i8" => "CHAR",
        "u16" => "USHORT",
        "i16" => "SHORT",
        "u32" => "ULONG",
        "i32" => "LONG",
        "u64" => "ULONGLONG",
        "i64" => "LONGLONG",
        "usize" => "SIZE_T",
        "isize" => "LONG_PTR",
        // mingw's wdm.h names only the pointer (PIO_WORKITEM).
        "IO_WORKITEM" => "struct _IO_WORKITEM",
        other => other,
    }
    .to_owned()
}

/// Splits a parameter list at its top-level commas.
fn split_params(list: &str) -> Vec<&str> {
    let mut params = Vec::new();
    let (mut depth, mut start) = (0_i32, 0);
    for (index, byte) in list.bytes().enumerate() {
        match byte {
            b'(' | b'<' => depth += 1,
            b')' | b'>' => depth -= 1,
            b',' if depth == 0 => {
                params.push(&list[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    if !list[start..].trim().is_empty() {
        params.push(&list[start..]);
    }
    params
}

/// `(parameter types, return type)` of an `Option<unsafe extern "system"
/// fn(...) -> R>` as `type_name` writes it.
fn pointer_signature(rust: &str) -> (Vec<String>, Option<String>) {
    let open = rust.find("fn(").expect("a function pointer type") + 3;
    let mut depth = 1;
    let mut close = open;
    for (index, byte) in rust[open..].bytes().enumerate() {
        match byte {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    close = open + index;
                    break;
                }
            }
            _ => {}
        }
    }
    let params = split_params(&rust[open..close])
        .into_iter()
        .map(c_type)
        .collect();
    let returned = rust[close + 1..].trim_end_matches('>').trim();
    (params, returned.strip_prefix("->").map(c_type))
}

/// An imported function of `src/sys.rs`: name, parameter types, return
/// type, translation unit.
struct Import {
    name: String,
    params: Vec<String>,
    ret: Option<String>,
    set: Set,
}

/// The Windows import blocks of `src/sys.rs`, as text.
fn imports() -> Vec<Import> {
    let source = include_str!("../../src/sys.rs");
    // The import blocks end where the helpers begin.
    let source = &source[..source
        .find("/// `YieldProcessor`")
        .expect("src/sys.rs's helpers follow the imports")];
    let mut imports = Vec::new();
    let mut set = None;
    let mut rest = source;
    while let Some(at) = rest.find(['#', 'p']) {
        rest = &rest[at..];
        if rest.starts_with("#[link(name = \"ntoskrnl.exe\"") {
            set = Some(Set::Wdm);
        } else if rest.starts_with("#[link(name = \"netio.sys\"") {
            set = Some(Set::Wsk);
        } else if let (Some(set), Some(signature)) = (set, rest.strip_prefix("pub fn ")) {
            let end = signature.find(';').expect("an import ends with ;");
            let text = &signature[..end];
            if let Some(open) = text.find('(') {
                let close = text.rfind(')').expect("a parameter list");
                let params = split_params(&text[open + 1..close])
                    .into_iter()
                    .map(|param| c_type(param.split_once(':').map_or(param, |(_, ty)| ty)))
                    .collect();
                let returned = text[close + 1..].trim().strip_prefix("->").map(c_type);
                imports.push(Import {
                    name: text[..open].trim().to_owned(),
                    params,
                    ret: returned,
                    set,
                });
            }
        }
        rest = &rest[1..];
    }
    imports
}

/// One check: a function taking the arguments, calling `callee`, and
/// asserting the return type.
fn check(
    tag: &str,
    callee: &str,
    pointer: Option<&str>,
    params: &[String],
    ret: Option<&str>,
) -> String {
    let mut args: Vec<String> = pointer.map(|ty| format!("{ty} f")).into_iter().collect();
    args.extend(
        params
            .iter()
            .enumerate()
            .map(|(index, ty)| format!("{ty} a{index}")),
    );
    let call = format!(
        "{callee}({})",
        (0..params.len())
            .map(|index| format!("a{index}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let body = ret.map_or_else(
        || {
            format!(
                "    _Static_assert(__builtin_types_compatible_p(__typeof__({call}), void), \"{tag}: returns a value where Rust says nothing\");\n    {call};\n"
            )
        },
        |ret| {
            format!(
                "    {ret} r = {call};\n    (void)r;\n    _Static_assert(sizeof(__typeof__({call})) == sizeof({ret}), \"{tag}: the return type's size\");\n"
            )
        },
    );
    format!(
        "__attribute__((unused)) static void wsk_signature_{tag}({}) {{\n{body}}}\n",
        if args.is_empty() {
            "void".to_owned()
        } else {
            args.join(", ")
        }
    )
}

/// The C checks for one translation unit, and how many functions they
/// cover.
pub fn c_checks(set: Set) -> (String, usize) {
    let mut out = String::from(
        "#pragma GCC diagnostic push\n\
         #pragma GCC diagnostic error \"-Wincompatible-pointer-types\"\n\
         #pragma GCC diagnostic error \"-Wint-conversion\"\n\
         #pragma GCC diagnostic error \"-Wdiscarded-qualifiers\"\n\
         #pragma GCC diagnostic error \"-Wconversion\"\n",
    );
    let mut count = 0;
    for pointer in pointers().iter().filter(|pointer| pointer.set == set) {
        let (params, ret) = pointer_signature(pointer.rust);
        out.push_str(&check(
            pointer.c_name,
            "f",
            Some(pointer.c_name),
            &params,
            ret.as_deref(),
        ));
        count += 1;
    }
    for import in imports().iter().filter(|import| import.set == set) {
        let mut params = import.params.clone();
        for &(function, index, ty) in OVERRIDES {
            if function == import.name {
                ty.clone_into(&mut params[index]);
            }
        }
        out.push_str(&check(
            &import.name,
            &import.name,
            None,
            &params,
            import.ret.as_deref(),
        ));
        count += 1;
    }
    out.push_str("#pragma GCC diagnostic pop\n");
    (out, count)
}

/// How many imports `src/sys.rs` declares, to make sure the parser saw
/// them all.
pub fn import_count() -> usize {
    imports().len()
}
