//! JSON-lines files: one account or event per line, every problem named
//! by file and line.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::model::account::Account;
use crate::model::event::Event;

/// A problem with one line of an input file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {message}", file.display())]
pub struct LineError {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

fn line_error(file: &Path, line: usize, message: impl Into<String>) -> LineError {
    LineError {
        file: file.to_path_buf(),
        line,
        message: message.into(),
    }
}

/// Calls `f` with each non-blank line and its 1-based number.
pub fn for_each_line(
    path: &Path,
    mut f: impl FnMut(usize, &str) -> Result<(), LineError>,
) -> Result<(), LineError> {
    let file = File::open(path).map_err(|e| line_error(path, 0, format!("cannot open: {e}")))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut buf = String::new();
    let mut n = 0;
    loop {
        buf.clear();
        let read = reader
            .read_line(&mut buf)
            .map_err(|e| line_error(path, n + 1, format!("cannot read: {e}")))?;
        if read == 0 {
            return Ok(());
        }
        n += 1;
        let line = buf.trim();
        if !line.is_empty() {
            f(n, line)?;
        }
    }
}

/// Parses one account line.
pub fn parse_account(path: &Path, n: usize, line: &str) -> Result<Account, LineError> {
    let v: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| line_error(path, n, format!("invalid JSON: {e}")))?;
    Account::from_json(v).map_err(|m| line_error(path, n, m))
}

/// Parses one event line.
pub fn parse_event(path: &Path, n: usize, line: &str) -> Result<Event, LineError> {
    let v: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| line_error(path, n, format!("invalid JSON: {e}")))?;
    Event::from_json(&v).map_err(|m| line_error(path, n, m))
}

/// Reads every account of a file; duplicates are an error naming both lines.
pub fn read_accounts(path: &Path) -> Result<Vec<Account>, LineError> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for_each_line(path, |n, line| {
        let a = parse_account(path, n, line)?;
        if let Some(first) = seen.insert(a.id().to_string(), n) {
            return Err(line_error(
                path,
                n,
                format!("duplicate account id `{}` (first on line {first})", a.id()),
            ));
        }
        out.push(a);
        Ok(())
    })?;
    Ok(out)
}
