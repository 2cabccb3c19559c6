//! berth-init's executable: see src/program.rs. Built by build.rs alone, statically.

#[path = "../src/program.rs"]
mod program;

fn main() {
    std::process::exit(program::run(std::env::args_os().skip(1).collect()));
}
