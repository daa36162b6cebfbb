//! Compile-only stand-in for `wdk-panic` 0.5.0: the real crate provides the
//! panic handler, which a type check does not need.
#![no_std]
