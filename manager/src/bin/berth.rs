//! berth: the ctr-style CLI for berthd.
fn main() {}
