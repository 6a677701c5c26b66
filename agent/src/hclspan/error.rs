//! The one error type of the HCL layer: a message pinned to `file:line:col`.

use std::fmt;

/// A 1-based line and column in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
}

impl Default for Pos {
    /// The start of a file, 1:1.
    fn default() -> Self {
        Pos { line: 1, column: 1 }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A syntax, type or semantic error in an HCL file, with its location.
///
/// Displays as `file:line:col: message`, the form editors and compilers use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct HclError {
    /// The file name given to the parser.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What went wrong, naming the field involved.
    pub message: String,
}

impl HclError {
    /// An error at `pos` in `file`.
    pub fn new(file: &str, pos: Pos, message: impl Into<String>) -> Self {
        HclError { file: file.to_string(), line: pos.line, column: pos.column, message: message.into() }
    }

    /// The error's location.
    pub fn pos(&self) -> Pos {
        Pos { line: self.line, column: self.column }
    }
}
