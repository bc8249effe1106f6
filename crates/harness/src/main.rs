//! `fencelock-harness`: see the crate docs of `fencelock_harness`.

fn main() {}
