//! The `tsuba` command.

#![forbid(unsafe_code)]

fn main() {}
