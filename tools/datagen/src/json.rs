//! Writes JSON objects with their keys in the order given.
//!
//! `serde_json::Value` sorts keys, which makes a sample line hard to read
//! (`attributes` before `id`), and turning on its `preserve_order` feature
//! would change the daemon's build too. Strings go through `serde_json`, so
//! escaping is never ours to get wrong.

use std::io::Write as _;

/// An object being written into `buf`; `end` closes it.
pub struct Obj<'a> {
    buf: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> Obj<'a> {
    pub fn new(buf: &'a mut Vec<u8>) -> Self {
        buf.push(b'{');
        Obj { buf, empty: true }
    }

    fn key(&mut self, key: &str) {
        if !self.empty {
            self.buf.push(b',');
        }
        self.empty = false;
        string(self.buf, key);
        self.buf.push(b':');
    }

    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        string(self.buf, value);
        self
    }

    pub fn int(&mut self, key: &str, value: i64) -> &mut Self {
        self.key(key);
        write!(self.buf, "{value}").expect("writing to a Vec cannot fail");
        self
    }

    pub fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key);
        self.buf
            .extend_from_slice(if value { b"true" } else { b"false" });
        self
    }

    /// An instant, as RFC 3339 in UTC.
    pub fn time(&mut self, key: &str, unix_seconds: i64) -> &mut Self {
        self.key(key);
        self.buf.push(b'"');
        write_time(self.buf, unix_seconds);
        self.buf.push(b'"');
        self
    }

    /// A nested object written by `fill`.
    pub fn obj(&mut self, key: &str, fill: impl FnOnce(&mut Obj<'_>)) -> &mut Self {
        self.key(key);
        let mut inner = Obj::new(self.buf);
        fill(&mut inner);
        inner.end();
        self
    }

    /// An array whose items `fill` writes, each through the `Arr` it gets.
    pub fn arr(&mut self, key: &str, fill: impl FnOnce(&mut Arr<'_>)) -> &mut Self {
        self.key(key);
        self.buf.push(b'[');
        let mut arr = Arr {
            buf: self.buf,
            empty: true,
        };
        fill(&mut arr);
        self.buf.push(b']');
        self
    }

    pub fn end(self) {
        self.buf.push(b'}');
    }
}

pub struct Arr<'a> {
    buf: &'a mut Vec<u8>,
    empty: bool,
}

impl Arr<'_> {
    pub fn obj(&mut self, fill: impl FnOnce(&mut Obj<'_>)) {
        if !self.empty {
            self.buf.push(b',');
        }
        self.empty = false;
        let mut inner = Obj::new(self.buf);
        fill(&mut inner);
        inner.end();
    }
}

fn string(buf: &mut Vec<u8>, s: &str) {
    // Nearly every generated string needs no escaping; copying it whole
    // halves the run time of an unoptimised build.
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
    } else {
        serde_json::to_writer(buf, s).expect("writing to a Vec cannot fail");
    }
}

/// RFC 3339 in UTC, whole seconds (the generator never makes fractions).
pub fn write_time(buf: &mut Vec<u8>, unix_seconds: i64) {
    let ts =
        jiff::Timestamp::from_second(unix_seconds).expect("generated instants are in jiff's range");
    write!(buf, "{ts}").expect("writing to a Vec cannot fail");
}
