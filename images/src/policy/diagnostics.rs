//! Errors and warnings with the line and column they are about.

use std::fmt;
use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

/// One finding, at a 1-based line and column (in characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub line: usize,
    pub column: usize,
    pub severity: Severity,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}:{}: {what}: {}", self.line, self.column, self.message)
    }
}

/// Findings about one text, in the order of the text.
#[derive(Debug)]
pub struct Diagnostics<'t> {
    text: &'t str,
    pub items: Vec<Diagnostic>,
}

impl<'t> Diagnostics<'t> {
    pub fn new(text: &'t str) -> Self {
        Diagnostics { text, items: Vec::new() }
    }

    pub fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.push(span, Severity::Error, message.into());
    }

    pub fn warning(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.push(span, Severity::Warning, message.into());
    }

    fn push(&mut self, span: Range<usize>, severity: Severity, message: String) {
        let (line, column) = line_column(self.text, span.start);
        self.items.push(Diagnostic { line, column, severity, message });
    }

    /// The line byte `offset` is on.
    pub fn line_of(&self, offset: usize) -> usize {
        line_column(self.text, offset).0
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    /// The findings sorted by position (errors before warnings at the same place).
    pub fn sorted(mut self) -> Vec<Diagnostic> {
        self.items.sort_by(|a, b| (a.line, a.column, b.severity).cmp(&(b.line, b.column, a.severity)));
        self.items.dedup();
        self.items
    }
}

/// 1-based line and column (in characters) of byte `offset`.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let mut offset = offset;
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Renders findings for a terminal: `FILE:LINE:COL: error: ...`, one per line.
pub fn render(file: &str, items: &[Diagnostic]) -> String {
    items.iter().map(|d| format!("{file}:{d}\n")).collect()
}
