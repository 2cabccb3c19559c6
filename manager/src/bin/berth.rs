//! berth: the ctr-style CLI for berthd. See `berth --help`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = berth_manager::cli::Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(berth_manager::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
