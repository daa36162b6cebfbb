//! Links the cdylib as a native kernel driver with the toolchain's `rust-lld`
//! (lld-link flavor; the repository's `.cargo/config.toml` selects it for
//! `x86_64-pc-windows-msvc`): no WDK, no Visual Studio, no import libraries
//! (the imports are `raw-dylib`).

const LINK_ARGS: &[&str] = &[
    "/DRIVER",
    "/NODEFAULTLIB",
    "/SUBSYSTEM:NATIVE",
    "/KERNEL",
    "/ENTRY:DriverEntry",
    "/NXCOMPAT",
    "/DYNAMICBASE",
    "/OPT:REF,ICF",
    "/MANIFEST:NO",
    "/RELEASE",
];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "windows" && env == "msvc" {
        for arg in LINK_ARGS {
            println!("cargo::rustc-link-arg={arg}");
        }
    }
}
