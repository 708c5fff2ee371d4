//! The command line: clap arguments, resolved once into the library's option structs.

pub mod args;
pub mod train;

use std::process::ExitCode;

use clap::Parser;

use crate::error::Error;

/// Parses the command line, runs it, and turns the outcome into an exit code.
pub fn main() -> ExitCode {
    let cli = args::Cli::parse();
    match train::run(&cli.train) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}

/// `error: ...` on one line, then `hint: ...` when the fix is known.
pub fn report(e: &Error) {
    eprintln!("error: {}", e.message());
    if let Some(h) = e.hint() {
        eprintln!("hint: {h}");
    }
}
