//! Streams the elements of one JSON array, at the top level or under a key
//! of the top-level object, one element in memory at a time, each with the
//! line it starts on: a dump of millions of users reads in constant memory.

use std::cell::Cell;
use std::fmt;
use std::io::{self, Read};
use std::rc::Rc;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// Reads through to `inner`, counting lines and bytes, and remembering the
/// line where the latest value opened at `element_depth` (1 is the top
/// level) began. Strings are tracked so that brackets inside them do not count.
struct Tracker<R> {
    inner: R,
    element_depth: u32,
    state: Rc<TrackState>,
    depth: u32,
    in_string: bool,
    escaped: bool,
}

#[derive(Default)]
struct TrackState {
    line: Cell<u64>,
    element_line: Cell<u64>,
    bytes: Cell<u64>,
}

impl<R: Read> Read for Tracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let state = &self.state;
        for &b in &buf[..n] {
            if b == b'\n' {
                state.line.set(state.line.get() + 1);
            }
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => {
                    self.depth += 1;
                    if self.depth == self.element_depth {
                        state.element_line.set(state.line.get());
                    }
                }
                b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                _ => {}
            }
        }
        state.bytes.set(state.bytes.get() + n as u64);
        Ok(n)
    }
}

/// Where the array is.
#[derive(Debug, Clone, Copy)]
pub enum ArrayAt {
    TopLevel,
    /// Under this key of the top-level object.
    Key(&'static str),
}

/// Calls `each(element, line, bytes_read)` for every element until it
/// returns false. A syntax error ends the stream with an error naming its
/// line; an element of any shape is handed over as a [`Value`].
pub fn for_each_element<R: Read>(
    reader: R,
    at: ArrayAt,
    mut each: impl FnMut(Value, u64, u64) -> bool,
) -> anyhow::Result<()> {
    let state = Rc::new(TrackState::default());
    state.line.set(1);
    let tracker = Tracker {
        inner: reader,
        element_depth: match at {
            ArrayAt::TopLevel => 2,
            ArrayAt::Key(_) => 3,
        },
        state: state.clone(),
        depth: 0,
        in_string: false,
        escaped: false,
    };
    let mut de = serde_json::Deserializer::from_reader(tracker);
    let elements = Elements {
        state: &state,
        each: &mut each,
    };
    let result = match at {
        ArrayAt::TopLevel => de::Deserializer::deserialize_seq(&mut de, elements),
        ArrayAt::Key(key) => de::Deserializer::deserialize_map(&mut de, InKey { key, elements }),
    };
    match result {
        Ok(()) => Ok(de.end()?),
        Err(e) if e.to_string().starts_with(STOPPED) => Ok(()),
        Err(e) => Err(anyhow::anyhow!("the file is not valid JSON: {e}")),
    }
}

const STOPPED: &str = "authql: stopped";

struct Elements<'a, F> {
    state: &'a TrackState,
    each: &'a mut F,
}

impl<'de, F: FnMut(Value, u64, u64) -> bool> Visitor<'de> for Elements<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(value) = seq.next_element::<Value>()? {
            let line = self.state.element_line.get();
            if !(self.each)(value, line, self.state.bytes.get()) {
                return Err(de::Error::custom(STOPPED));
            }
        }
        Ok(())
    }
}

impl<'de, F: FnMut(Value, u64, u64) -> bool> DeserializeSeed<'de> for Elements<'_, F> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

struct InKey<'a, F> {
    key: &'static str,
    elements: Elements<'a, F>,
}

impl<'de, F: FnMut(Value, u64, u64) -> bool> Visitor<'de> for InKey<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an object with `{}`", self.key)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut elements = Some(self.elements);
        while let Some(key) = map.next_key::<String>()? {
            match elements.take() {
                Some(seed) if key == self.key => map.next_value_seed(seed)?,
                other => {
                    elements = other;
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_come_with_the_line_they_start_on() {
        let json = "[\n  {\"a\": \"[{\\\"\"},\n  {\n    \"b\": [1, {\"c\": 2}]\n  },\n  3\n]";
        let mut seen = Vec::new();
        for_each_element(json.as_bytes(), ArrayAt::TopLevel, |v, line, _| {
            seen.push((v, line));
            true
        })
        .expect("valid");
        assert_eq!(seen.len(), 3);
        assert_eq!((seen[0].1, seen[1].1), (2, 3));
        assert_eq!(seen[1].0["b"][1]["c"], 2);
    }

    #[test]
    fn an_array_under_a_key_streams_and_the_rest_is_skipped() {
        let json = r#"{"realm": "x", "roles": {"realm": [{"name": "r"}]},
"users": [{"username": "a"},
{"username": "b"}], "groups": []}"#;
        let mut lines = Vec::new();
        for_each_element(json.as_bytes(), ArrayAt::Key("users"), |v, line, _| {
            lines.push((v["username"].as_str().map(str::to_owned), line));
            true
        })
        .expect("valid");
        assert_eq!(
            lines,
            [(Some("a".to_owned()), 2), (Some("b".to_owned()), 3)]
        );
    }

    #[test]
    fn stopping_early_and_broken_json() {
        let mut n = 0;
        for_each_element("[1, 2, 3]".as_bytes(), ArrayAt::TopLevel, |_, _, _| {
            n += 1;
            n < 2
        })
        .expect("stopped cleanly");
        assert_eq!(n, 2);
        let err = for_each_element("[1,\n 2,,]".as_bytes(), ArrayAt::TopLevel, |_, _, _| true)
            .expect_err("broken");
        assert!(err.to_string().contains("line 2"), "{err}");
    }
}
