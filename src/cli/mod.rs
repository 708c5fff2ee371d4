//! The command line: clap arguments, resolved once per command into a config the library runs.
//! This is the only layer that prints: data to stdout, logs and errors to stderr.

/// One log line to stderr, written whole (a single `write`, so lines never interleave).
macro_rules! log {
    ($($t:tt)*) => { $crate::cli::log_line(&format!($($t)*)) };
}

pub mod args;
pub mod evaluate;
pub mod export;
pub mod generate;
pub mod inspect;
pub mod serve;
pub mod train;

use std::io::Write;
use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::Parser;

use crate::error::Error;

/// Parses the command line, runs it, and turns the outcome into an exit code.
pub fn main() -> ExitCode {
    let cli = match args::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return bad_flag(e),
    };
    // The server stops on signals itself, letting requests finish; everything else stops at
    // once, leaving nothing half-written.
    if !matches!(cli.command, Some(args::Command::Serve(_))) {
        crate::interrupt::install();
    }
    let result = match &cli.command {
        None => train::run(&cli.train),
        Some(args::Command::Generate(a)) => generate::run(a),
        Some(args::Command::Inspect(a)) => inspect::run(a),
        Some(args::Command::Export(a)) => export::run(a),
        Some(args::Command::Evaluate(a)) => evaluate::run(a),
        Some(args::Command::Serve(a)) => serve::run(a),
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
    let mut text = format!("error: {}", e.message());
    if let Some(h) = e.hint() {
        text.push_str(&format!("\n\nhint: {h}"));
    }
    log_line(&text);
}

/// Writes `text` and a newline to stderr in one call.
pub fn log_line(text: &str) {
    let _ = std::io::stderr().write_all(format!("{text}\n").as_bytes());
}

/// One line of data to stdout.
pub fn print_data(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
}

/// A flag value clap could not parse gets our one-line error (naming the flag and the value)
/// and exit status 1, like every other bad input; help, version and usage errors stay
/// clap's.
fn bad_flag(e: clap::Error) -> ExitCode {
    if !matches!(
        e.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        e.exit();
    }
    let text = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => s.clone(),
        _ => String::new(),
    };
    let flag = text(ContextKind::InvalidArg);
    let flag = flag.split_whitespace().next().unwrap_or_default();
    let value = text(ContextKind::InvalidValue);
    let ours = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<Error>());
    let err = match ours {
        // Errors that know their flag already name it.
        Some(o) if o.message().contains(&format!("`{flag}`")) => {
            Error::new(o.message()).with_hint(o.hint().unwrap_or_default())
        }
        Some(o) => Error::new(format!("invalid `{flag}` value `{value}`: {}", o.message()))
            .with_hint(o.hint().unwrap_or_default()),
        None => {
            let why = std::error::Error::source(&e).map_or(String::new(), |s| format!(": {s}"));
            let valid = match e.get(ContextKind::ValidValue) {
                Some(ContextValue::Strings(v)) => format!("possible values: {}", v.join(", ")),
                _ => String::new(),
            };
            Error::new(format!("invalid `{flag}` value `{value}`{why}")).with_hint(valid)
        }
    };
    report(&err);
    ExitCode::FAILURE
}
