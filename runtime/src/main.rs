//! `berth-runc`: a runc-compatible OCI runtime. The command line is runc's, so containerd's runc
//! shim (and through it Docker and Kubernetes) can drive it in place of runc.

use std::process::ExitCode;

use clap::Parser;

use berth_runtime::cli::{self, Cli};
use berth_runtime::logging;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let global = &cli.global;
    if let Err(err) = logging::init(global.log.as_deref(), global.log_format, global.debug) {
        logging::report_error(&format!("{err:#}"));
        return ExitCode::from(1);
    }
    match cli::dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            let msg = format!("{err:#}");
            tracing::error!("{msg}");
            logging::report_error(&msg);
            ExitCode::from(1)
        }
    }
}
