//! Diagnostics: one problem found in a configuration, playbook or template,
//! located at `FILE:LINE:COLUMN`, and the "did you mean" suggestion helper.

use std::fmt;
use std::path::{Path, PathBuf};

/// Error or warning. Only errors make `validate` exit 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// A problem with a location. Line and column are 1-based; 0 means unknown.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: u64,
    pub column: u64,
    pub severity: Severity,
    pub message: String,
}

impl Diagnostic {
    pub fn error(file: &Path, at: Pos, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: file.to_path_buf(),
            line: at.line,
            column: at.column,
            severity: Severity::Error,
            message: message.into(),
        }
    }

    pub fn warning(file: &Path, at: Pos, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(file, at, message)
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = match self.severity {
            Severity::Error => "",
            Severity::Warning => "warning: ",
        };
        write!(
            f,
            "{}:{}:{}: {prefix}{}",
            self.file.display(),
            self.line.max(1),
            self.column.max(1),
            self.message
        )
    }
}

/// A position in a source file (1-based; 0 = unknown).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: u64,
    pub column: u64,
}

impl Pos {
    pub const START: Pos = Pos { line: 1, column: 1 };

    pub fn new(line: u64, column: u64) -> Pos {
        Pos { line, column }
    }

    /// The position `offset` characters further on the same line.
    pub fn shifted(self, offset: usize) -> Pos {
        Pos {
            line: self.line,
            column: self.column + offset as u64,
        }
    }
}

/// Closest candidate by edit distance, when it is close enough to be the
/// likely intent (at most a third of the word's length, and at least 1).
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (levenshtein(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance where swapping two neighbours counts as one edit
/// (optimal string alignment): `emial` is one typo away from `email`.
fn levenshtein(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    d[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// "did you mean `x`?" or "expected one of `a`, `b`", for unknown names.
pub fn suggestion(word: &str, candidates: &[&str]) -> String {
    match did_you_mean(word, candidates.iter().copied()) {
        Some(best) => format!("did you mean `{best}`?"),
        None if candidates.is_empty() => "none are defined".to_string(),
        None => format!(
            "expected one of {}",
            candidates
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_keys_only() {
        assert_eq!(
            did_you_mean("shedule", ["schedule", "segment"]),
            Some("schedule")
        );
        assert_eq!(did_you_mean("zzz", ["schedule", "segment"]), None);
        assert_eq!(
            suggestion("emial", &["email", "webhook"]),
            "did you mean `email`?"
        );
    }
}
