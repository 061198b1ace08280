//! YAML as the API server, kctl and kproxy read and write it: one parser for all three
//! (serde-saphyr, pure Rust; serde_yaml is deprecated upstream). Its budgets bound what a
//! document may cost: aliases that would expand without bound (a "billion laughs") and
//! oversized node counts are refused with an error instead of being expanded. The budgets are
//! scaled to the largest object the API server takes (a 3 MiB body), so the refusal is cheap.
//!
//! Documents are read into `serde_json::Value` first, as Kubernetes reads YAML (it converts
//! YAML to JSON and decodes that), so the same typed decoding follows for both formats.

use serde::{Serialize, de::DeserializeOwned};

/// A YAML text that could not be read or a value that could not be written, with the line it
/// is on when known. (Boxed: the parser's error is large, and callers' `Result`s stay small.)
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    #[error("{0}")]
    Parse(#[source] Box<serde_saphyr::Error>),
    /// Past a budget: most likely aliases that expand without bound (an alias bomb).
    #[error(
        "the YAML document is too large once its aliases are expanded (a limit against alias \
         bombs): {0}"
    )]
    TooLarge(#[source] Box<serde_saphyr::Error>),
    #[error("{0}")]
    Write(#[source] Box<serde_saphyr::SerializeError>),
}

impl YamlError {
    /// The line (1-based) the error is on, for errors of the text.
    pub fn line(&self) -> Option<u64> {
        match self {
            Self::Parse(e) | Self::TooLarge(e) => e.location().map(|l| l.line()),
            Self::Write(_) => None,
        }
    }
}

/// Most bytes of scalar text one document may hold, aliases expanded: a 3 MiB object holds
/// at most 3 MiB of it, with room to spare (the parser's default is 64 MiB).
const MAX_SCALAR_BYTES: usize = 8 * 1024 * 1024;

/// Most events aliases may replay in one document. Manifests use few aliases, if any; an
/// alias bomb is refused after this much work (a few milliseconds in a release build) rather
/// than after the parser's default of a million.
const MAX_REPLAYED_EVENTS: usize = 100_000;

/// One-line errors (no source snippet) under budgets for a document of at most a few MiB.
/// Booleans are YAML 1.2's `true`/`false` only, so a port named `y` or a label value `on`
/// stays a string.
fn options() -> serde_saphyr::options::Options {
    let mut options = serde_saphyr::options::Options::default();
    options.with_snippet = false;
    options.strict_booleans = true;
    options.budget = serde_saphyr::budget! {
        max_total_scalar_bytes: MAX_SCALAR_BYTES,
        max_recorded_anchor_bytes: MAX_SCALAR_BYTES,
    };
    options.alias_limits = serde_saphyr::alias_limits! {
        max_total_replayed_events: MAX_REPLAYED_EVENTS,
    };
    options
}

/// The error for a text that could not be read: [`YamlError::TooLarge`] past a budget.
fn parse_error(e: serde_saphyr::Error) -> YamlError {
    if past_a_limit(&e) {
        YamlError::TooLarge(Box::new(e))
    } else {
        YamlError::Parse(Box::new(e))
    }
}

fn past_a_limit(e: &serde_saphyr::Error) -> bool {
    use serde_saphyr::Error as E;
    match e {
        E::Budget { .. }
        | E::AliasReplayLimitExceeded { .. }
        | E::AliasExpansionLimitExceeded { .. }
        | E::AliasReplayStackDepthExceeded { .. }
        | E::AliasReplayCounterOverflow { .. } => true,
        E::AliasError { error, .. } | E::WithSnippet { error, .. } => past_a_limit(error),
        _ => false,
    }
}

/// One document of a stream: its text and the line (1-based) it starts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Document<'a> {
    pub line: usize,
    pub text: &'a str,
}

impl Document<'_> {
    /// The document's value; `Null` for an empty one (only comments or nothing).
    pub fn value(&self) -> Result<serde_json::Value, YamlError> {
        from_str(self.text)
    }
}

/// Splits a stream at its `---` lines, as kubectl does, so each document is read (and its
/// errors numbered) on its own. Empty documents are kept: their numbers count.
pub fn split(text: &str) -> Vec<Document<'_>> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end();
        let separator = bare == "---"
            || bare.strip_prefix("---").is_some_and(|rest| {
                rest.starts_with([' ', '\t']) && rest.trim_start().starts_with('#')
            });
        if separator {
            if i > 0 {
                docs.push(Document {
                    line: start_line,
                    text: &text[start..offset],
                });
            }
            start = offset + line.len();
            start_line = i + 2;
        }
        offset += line.len();
    }
    docs.push(Document {
        line: start_line,
        text: &text[start..],
    });
    docs
}

/// The values of a `---`-separated stream's non-empty documents.
pub fn documents(text: &str) -> Result<Vec<serde_json::Value>, YamlError> {
    let mut values = Vec::new();
    for doc in split(text) {
        let value = doc.value()?;
        if !value.is_null() {
            values.push(value);
        }
    }
    Ok(values)
}

/// One document, decoded into `T`.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    serde_saphyr::from_str_with_options(text, options()).map_err(parse_error)
}

/// One document from bytes (which must be UTF-8), decoded into `T`.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, YamlError> {
    serde_saphyr::from_slice_with_options(bytes, options()).map_err(parse_error)
}

/// `value` as a YAML document.
pub fn to_string<T: Serialize>(value: &T) -> Result<String, YamlError> {
    serde_saphyr::to_string(value).map_err(|e| YamlError::Write(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use serde_json::json;

    use super::*;

    #[test]
    fn streams_split_at_separator_lines() {
        let text = "---\na: 1\n---\n--- # two\nb: \"---\"\n---x: 1\n";
        let docs = split(text);
        assert_eq!(
            docs,
            [
                Document {
                    line: 2,
                    text: "a: 1\n"
                },
                Document { line: 4, text: "" },
                Document {
                    line: 5,
                    text: "b: \"---\"\n---x: 1\n"
                },
            ]
        );
        assert_eq!(
            split("a: 1"),
            [Document {
                line: 1,
                text: "a: 1"
            }]
        );
        assert_eq!(docs[1].value().unwrap(), serde_json::Value::Null);
    }

    #[test]
    fn streams_skip_empty_documents() {
        let docs = documents("a: 1\n---\n---\nkind: x\nb: [1, 2]\n---\n# a comment\n").unwrap();
        assert_eq!(docs, [json!({"a": 1}), json!({"kind": "x", "b": [1, 2]})]);
        assert!(documents("").unwrap().is_empty());
    }

    #[test]
    fn errors_are_one_line_with_the_line_number() {
        let e = documents("a: 1\n---\nb: [1, 2\n---\nc: 3\n").unwrap_err();
        // Lines count from the document's start.
        assert_eq!(e.line(), Some(1), "{e}");
        assert!(!e.to_string().contains('\n'), "{e}");
        let e = from_str::<serde_json::Value>("a: 1\na: 2\n").unwrap_err();
        assert!(e.to_string().contains("duplicate"), "{e}");
        assert!(from_slice::<serde_json::Value>(b"\xff\xfe: x").is_err());
    }

    #[test]
    fn alias_bombs_are_refused_not_expanded() {
        // 20,000 references to a 20,000-element list would be 400 million nodes.
        let items = vec!["x"; 20_000].join(",");
        let refs = vec!["*a"; 20_000].join(",");
        let bomb = format!("a: &a [{items}]\nb: [{refs}]\n");
        let started = Instant::now();
        let e = from_str::<serde_json::Value>(&bomb).unwrap_err();
        let took = started.elapsed();
        assert!(matches!(e, YamlError::TooLarge(_)), "{e}");
        assert!(e.to_string().contains("alias bombs"), "{e}");
        // A debug build (a release build: a few milliseconds).
        assert!(took < Duration::from_secs(3), "{took:?}");
        // A long string repeated: bounded by the scalar bytes, not only by the node count.
        let long = "x".repeat(1_000_000);
        let refs = vec!["*a"; 20].join(",");
        let e = from_str::<serde_json::Value>(&format!("a: &a {long}\nb: [{refs}]\n"));
        assert!(matches!(e, Err(YamlError::TooLarge(_))), "{e:?}");
        // A few aliases are fine, and so is a large document without them.
        let v: serde_json::Value = from_str("a: &a {x: 1}\nb: *a\n").unwrap();
        assert_eq!(v, json!({"a": {"x": 1}, "b": {"x": 1}}));
        let big = format!(
            "a: {}\nb: [{}]\n",
            "x".repeat(3_000_000),
            vec!["1"; 100_000].join(",")
        );
        assert!(from_str::<serde_json::Value>(&big).is_ok());
    }

    #[test]
    fn only_true_and_false_are_booleans() {
        let v: serde_json::Value = from_str("a: y\nb: on\nc: yes\nd: true\ne: False\n").unwrap();
        assert_eq!(
            v,
            json!({"a": "y", "b": "on", "c": "yes", "d": true, "e": false})
        );
    }

    #[test]
    fn writes_round_trip() {
        let v = json!({"apiVersion": "v1", "clusters": [{"name": "k"}], "s": "yes", "n": "123"});
        let text = to_string(&v).unwrap();
        assert_eq!(from_str::<serde_json::Value>(&text).unwrap(), v);
    }
}
