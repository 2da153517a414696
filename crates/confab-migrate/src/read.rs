//! Bounded readers for the export files: JSON Lines with a longest line, and a JSON
//! array read one element at a time with a largest element. Neither holds more than
//! one record in memory, so a file of any size imports in bounded memory.

use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde_json::Value;
use std::cell::Cell;
use std::io::{BufRead, Read};
use std::rc::Rc;

/// One line of a JSON Lines file.
#[derive(Debug)]
pub(crate) enum Line {
    /// The line's bytes, without the newline.
    Text(Vec<u8>),
    /// A line longer than the limit (its length); it was read past, not kept.
    TooLong(usize),
}

/// Reads lines of at most `max` bytes; a longer line is skipped and reported as
/// [`Line::TooLong`] without being held.
pub(crate) struct Lines<R> {
    reader: R,
    max: usize,
    /// 1-based number of the line last returned.
    pub number: u64,
}

impl<R: BufRead> Lines<R> {
    pub(crate) fn new(reader: R, max: usize) -> Lines<R> {
        Lines { reader, max, number: 0 }
    }

    /// The next line, or `None` at the end of the file.
    pub(crate) fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        let mut line = Vec::new();
        let mut length = 0usize;
        let mut any = false;
        loop {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                break;
            }
            any = true;
            let (chunk, end) = match buf.iter().position(|b| *b == b'\n') {
                Some(i) => (&buf[..i], Some(i + 1)),
                None => (buf, None),
            };
            length += chunk.len();
            if length <= self.max {
                line.extend_from_slice(chunk);
            } else {
                line = Vec::new();
            }
            let used = end.unwrap_or(buf.len());
            self.reader.consume(used);
            if end.is_some() {
                break;
            }
        }
        if !any {
            return Ok(None);
        }
        self.number += 1;
        if length > self.max {
            return Ok(Some(Line::TooLong(length)));
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        // A byte-order mark at the start of the file (some editors write one).
        if self.number == 1 && line.starts_with(&[0xEF, 0xBB, 0xBF]) {
            line.drain(..3);
        }
        Ok(Some(Line::Text(line)))
    }
}

/// Counts the bytes the JSON parser pulls and fails the read once one element has
/// taken more than its limit, so one huge element cannot fill memory.
struct Counted<R> {
    inner: R,
    used: Rc<Cell<usize>>,
    max: usize,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.used.get() > self.max {
            return Err(std::io::Error::other(TooLarge));
        }
        let n = self.inner.read(buf)?;
        self.used.set(self.used.get() + n);
        Ok(n)
    }
}

/// The marker error of an element over the limit.
#[derive(Debug)]
struct TooLarge;

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("element over the size limit")
    }
}

impl std::error::Error for TooLarge {}

/// Why reading a JSON array stopped early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ArrayError<E> {
    /// The callback refused an element (a fatal error of the caller, which it keeps).
    #[error("stopped by the caller")]
    Callback(E),
    /// Element `index` (0-based) took more than the limit; the rest was not read.
    #[error("element {index} is over {max} bytes; the rest of the file was not read")]
    TooLarge {
        /// Which element.
        index: u64,
        /// The limit.
        max: usize,
    },
    /// The file is not a JSON array, or is malformed at element `index`; the rest was
    /// not read.
    #[error("malformed JSON at element {index}: {error}; the rest of the file was not read")]
    Malformed {
        /// Which element.
        index: u64,
        /// The parser's message.
        error: String,
    },
}

/// Reads a JSON array from `reader`, calling `each` with every element in order.
/// Returns how many elements were read. Each element may take at most `max` bytes of
/// the file.
pub(crate) fn each_element<R: Read, E>(
    reader: R,
    max: usize,
    mut each: impl FnMut(u64, Value) -> Result<(), E>,
) -> Result<u64, ArrayError<E>> {
    let used = Rc::new(Cell::new(0));
    let counted = Counted { inner: reader, used: used.clone(), max };
    let mut de = serde_json::Deserializer::from_reader(counted);
    let failure: Cell<Option<E>> = Cell::new(None);
    let index = Cell::new(0u64);
    let seed = ArraySeed { used: &used, index: &index, each: &mut each, failure: &failure };
    let result = serde::Deserializer::deserialize_seq(&mut de, seed).and_then(|()| de.end());
    match result {
        Ok(()) => Ok(index.get()),
        Err(e) => {
            if let Some(f) = failure.take() {
                return Err(ArrayError::Callback(f));
            }
            let too_large = e.is_io()
                && std::error::Error::source(&e)
                    .and_then(|s| s.downcast_ref::<std::io::Error>())
                    .and_then(|io| io.get_ref())
                    .is_some_and(|inner| inner.is::<TooLarge>());
            if too_large || used.get() > max {
                Err(ArrayError::TooLarge { index: index.get(), max })
            } else {
                Err(ArrayError::Malformed { index: index.get(), error: e.to_string() })
            }
        }
    }
}

struct ArraySeed<'s, F, E> {
    used: &'s Rc<Cell<usize>>,
    index: &'s Cell<u64>,
    each: &'s mut F,
    failure: &'s Cell<Option<E>>,
}

impl<'de, F, E> DeserializeSeed<'de> for ArraySeed<'_, F, E>
where
    F: FnMut(u64, Value) -> Result<(), E>,
{
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, F, E> Visitor<'de> for ArraySeed<'_, F, E>
where
    F: FnMut(u64, Value) -> Result<(), E>,
{
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        loop {
            self.used.set(0);
            let Some(value) = seq.next_element::<Value>()? else { return Ok(()) };
            let i = self.index.get();
            self.index.set(i + 1);
            if let Err(e) = (self.each)(i, value) {
                self.failure.set(Some(e));
                return Err(serde::de::Error::custom("stopped by the importer"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn lines(text: &[u8], max: usize) -> Vec<String> {
        let mut l = Lines::new(text, max);
        let mut out = Vec::new();
        while let Some(line) = l.next_line().unwrap() {
            out.push(match line {
                Line::Text(t) => String::from_utf8(t).unwrap(),
                Line::TooLong(n) => format!("<{n}>"),
            });
        }
        out
    }

    #[test]
    fn lines_are_bounded_and_crlf_and_bom_tolerated() {
        assert_eq!(lines(b"a\nbb\r\n\nccc", 10), ["a", "bb", "", "ccc"]);
        assert_eq!(lines(b"a\n0123456789ab\nc\n", 10), ["a", "<12>", "c"]);
        assert_eq!(lines(b"\xEF\xBB\xBF{}\n", 10), ["{}"]);
        assert_eq!(lines(b"", 10), Vec::<String>::new());
    }

    #[test]
    fn arrays_stream_with_a_bound_per_element() {
        let mut seen = Vec::new();
        let n = each_element::<_, ()>(&b" [1, {\"a\": 2}, \"x\"] "[..], 100, |i, v| {
            seen.push((i, v));
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 3);
        assert_eq!(seen[1].1["a"], 2);
        let big = format!("[1, \"{}\", 3]", "y".repeat(500));
        let e = each_element::<_, ()>(big.as_bytes(), 100, |_, _| Ok(())).unwrap_err();
        assert!(matches!(e, ArrayError::TooLarge { index: 1, .. }), "{e}");
        let e = each_element::<_, ()>(&b"[1, 2,, 3]"[..], 100, |_, _| Ok(())).unwrap_err();
        assert!(matches!(e, ArrayError::Malformed { index: 2, .. }), "{e}");
        let e = each_element::<_, ()>(&b"{\"a\": 1}"[..], 100, |_, _| Ok(())).unwrap_err();
        assert!(matches!(e, ArrayError::Malformed { index: 0, .. }), "{e}");
        let e = each_element::<_, &str>(&b"[1, 2]"[..], 100, |i, _| if i == 1 { Err("no") } else { Ok(()) })
            .unwrap_err();
        assert!(matches!(e, ArrayError::Callback("no")));
        let e = each_element::<_, ()>(&b"[1] [2]"[..], 100, |_, _| Ok(())).unwrap_err();
        assert!(matches!(e, ArrayError::Malformed { .. }), "{e}");
    }
}
