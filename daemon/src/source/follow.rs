//! Following the file source as it grows: complete lines after a saved
//! position. The position (byte offset and line number) is stored with
//! the events read up to it, in one commit, so a restart neither reads a
//! line twice nor skips one. A file that became shorter than the position
//! was replaced (rotated): it is read again from its start.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Where reading stopped: after `offset` bytes, which held `line` lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    pub offset: u64,
    pub line: usize,
}

impl Position {
    /// As stored: `OFFSET:LINE`.
    pub fn encode(self) -> String {
        format!("{}:{}", self.offset, self.line)
    }

    pub fn decode(s: &str) -> Option<Position> {
        let (o, l) = s.split_once(':')?;
        Some(Position {
            offset: o.parse().ok()?,
            line: l.parse().ok()?,
        })
    }
}

/// New complete lines since `from`, each with its 1-based line number,
/// at most `max_bytes` of them (whole lines; at least one), and the
/// position after them. `rotated` is set when the file was shorter than
/// `from` and was read from its start.
pub struct NewLines {
    pub lines: Vec<(usize, String)>,
    pub to: Position,
    pub rotated: bool,
}

pub fn read_new(path: &Path, from: Position, max_bytes: u64) -> std::io::Result<NewLines> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let (from, rotated) = if len < from.offset {
        (Position::default(), true)
    } else {
        (from, false)
    };
    if len == from.offset {
        return Ok(NewLines {
            lines: Vec::new(),
            to: from,
            rotated,
        });
    }
    file.seek(SeekFrom::Start(from.offset))?;
    let mut buf = Vec::new();
    file.take(max_bytes.max(1)).read_to_end(&mut buf)?;
    // Only complete lines: a writer may be in the middle of the last one.
    let mut end = match buf.iter().rposition(|b| *b == b'\n') {
        Some(i) => i + 1,
        None => 0,
    };
    if end == 0 && buf.len() as u64 == max_bytes.max(1) && from.offset + (buf.len() as u64) < len {
        // One line longer than the budget: read it whole.
        let mut rest = Vec::new();
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(from.offset))?;
        std::io::BufRead::read_until(&mut std::io::BufReader::new(file), b'\n', &mut rest)?;
        if rest.last() == Some(&b'\n') {
            buf = rest;
            end = buf.len();
        }
    }
    let text = String::from_utf8_lossy(&buf[..end]);
    let mut lines = Vec::new();
    let mut n = from.line;
    for line in text.split_inclusive('\n') {
        n += 1;
        let line = line.trim_end_matches(['\n', '\r']);
        if !line.trim().is_empty() {
            lines.push((n, line.to_string()));
        }
    }
    Ok(NewLines {
        lines,
        to: Position {
            offset: from.offset + end as u64,
            line: n,
        },
        rotated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_complete_lines_only_and_resumes_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, "a\n\nb\npartial").unwrap();
        let r = read_new(&path, Position::default(), 1 << 20).unwrap();
        assert_eq!(r.lines, vec![(1, "a".into()), (3, "b".into())]);
        assert_eq!(r.to, Position { offset: 5, line: 3 });
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b" line\nc\n").unwrap();
        let r2 = read_new(&path, r.to, 1 << 20).unwrap();
        assert_eq!(r2.lines, vec![(4, "partial line".into()), (5, "c".into())]);
        assert!(!r2.rotated);
        assert_eq!(Position::decode(&r2.to.encode()), Some(r2.to));
        // Nothing new: nothing read.
        assert!(read_new(&path, r2.to, 1 << 20).unwrap().lines.is_empty());
        // Replaced by a shorter file: read again from the start.
        std::fs::write(&path, "z\n").unwrap();
        let r3 = read_new(&path, r2.to, 1 << 20).unwrap();
        assert!(r3.rotated);
        assert_eq!(r3.lines, vec![(1, "z".into())]);
    }

    #[test]
    fn a_budget_splits_at_lines_and_a_long_line_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.jsonl");
        std::fs::write(&path, "aaaa\nbb\ncccccccccc\n").unwrap();
        let r = read_new(&path, Position::default(), 7).unwrap();
        assert_eq!(r.lines, vec![(1, "aaaa".into())]);
        let r = read_new(&path, r.to, 7).unwrap();
        assert_eq!(r.lines, vec![(2, "bb".into())]);
        let r = read_new(&path, r.to, 7).unwrap();
        assert_eq!(r.lines, vec![(3, "cccccccccc".into())]);
    }
}
