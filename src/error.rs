//! Errors the library reports to its callers: what went wrong, and how to fix it when known.

use std::fmt;

/// A failure with a one-line message and, where the fix is known, a hint.
#[derive(Debug)]
pub struct Error {
    message: String,
    hint: Option<String>,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: one_line(&message.into()),
            hint: None,
        }
    }

    /// Adds the fix; an empty hint is none.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        let hint = one_line(&hint.into());
        self.hint = (!hint.is_empty()).then_some(hint);
        self
    }

    /// Prefixes the message with what was being done, keeping the hint.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }
}

/// Messages from dependencies sometimes span lines (candle appends backtraces); a user gets one.
fn one_line(s: &str) -> String {
    let first = s
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    first.trim_end_matches('.').to_string()
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::new(e.to_string())
    }
}

/// Lets our errors cross candle's interfaces (a `VarBuilder` backend) with their message.
impl From<Error> for candle_core::Error {
    fn from(e: Error) -> Self {
        candle_core::Error::Msg(e.message().to_string())
    }
}
