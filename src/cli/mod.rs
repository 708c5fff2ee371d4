//! The command line: clap arguments, resolved once into the library's option structs.

pub mod args;
pub mod evaluate;
pub mod export;
pub mod generate;
pub mod inspect;
pub mod train;

use std::process::ExitCode;

use clap::Parser;

use crate::error::Error;

/// Parses the command line, runs it, and turns the outcome into an exit code.
pub fn main() -> ExitCode {
    let cli = args::Cli::parse();
    crate::interrupt::install();
    let result = match &cli.command {
        None => train::run(&cli.train),
        Some(args::Command::Generate(a)) => generate::run(a),
        Some(args::Command::Inspect(a)) => inspect::run(a),
        Some(args::Command::Export(a)) => export::run(a),
        Some(args::Command::Evaluate(a)) => evaluate::run(a),
    };
    match result {
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
