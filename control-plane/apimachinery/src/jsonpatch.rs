//! RFC 6902 JSON patch under kube-apiserver's bounds: at most 10,000 operations, and at most
//! 3 MiB added by the `copy` operations of one patch between them (its JSONPatchMaxCopyBytes).
//! Every other operation adds at most what the request body holds; a `copy` needs no body at
//! all, and copying the document into itself doubles it, so 40 of them would ask for 2^40
//! times the object. Each copy is measured before it is made and the patch fails as soon as
//! the copies would pass the limit.

use json_patch::PatchOperation;
use serde_json::Value;

/// Most operations one patch may hold (kube-apiserver's maxJSONPatchOperations).
pub const MAX_OPERATIONS: usize = 10_000;

/// Most bytes (of compact JSON) the `copy` operations of one patch may add between them: the
/// request body limit, as kube-apiserver sets JSONPatchMaxCopyBytes.
pub const MAX_COPY_BYTES: usize = 3 * 1024 * 1024;

/// Deepest nesting of arrays and objects a patched object may have. Copies and moves can nest
/// a document deeper than any request body could; stored objects are read back by serde_json,
/// which stops at 128 levels, and their managedFields mirror the object a few levels down.
pub const MAX_DEPTH: usize = 100;

/// Why a JSON patch was not applied.
#[derive(Debug, thiserror::Error)]
pub enum JsonPatchError {
    /// Kubernetes' wording (and its 413).
    #[error("The allowed maximum operations in a JSON patch is {MAX_OPERATIONS}, got {0}")]
    TooManyOperations(usize),
    #[error(
        "the JSON patch could not be applied: operation '/{operation}' failed at path '{path}': \
         unable to copy, the accumulated size increase of copy would exceed the limit of \
         {MAX_COPY_BYTES} bytes"
    )]
    CopyLimit { operation: usize, path: String },
    #[error(
        "the JSON patch could not be applied: the patched object would nest deeper than \
         {MAX_DEPTH} levels"
    )]
    TooDeep,
    #[error(
        "the JSON patch could not be applied: operation '/{operation}' failed at path '{path}': \
         {kind}"
    )]
    Failed {
        operation: usize,
        path: String,
        #[source]
        kind: json_patch::PatchErrorKind,
    },
}

impl JsonPatchError {
    /// 413 for too many operations (as Kubernetes answers), 422 for a patch that can't be
    /// applied to this object.
    pub fn status_code(&self) -> u16 {
        match self {
            Self::TooManyOperations(_) => 413,
            Self::CopyLimit { .. } | Self::TooDeep | Self::Failed { .. } => 422,
        }
    }
}

/// Applies `ops` to a copy of `target`, one at a time. On error the target is untouched (the
/// copy is dropped), so the operations apply atomically without an undo log.
pub fn apply(target: &Value, ops: &[PatchOperation]) -> Result<Value, JsonPatchError> {
    if ops.len() > MAX_OPERATIONS {
        return Err(JsonPatchError::TooManyOperations(ops.len()));
    }
    let mut doc = target.clone();
    let mut copied = 0;
    for (operation, op) in ops.iter().enumerate() {
        if let PatchOperation::Copy(copy) = op
            && let Some(source) = doc.pointer(copy.from.as_str())
        {
            // Measured only as far as the budget reaches: the check costs at most what the
            // budget has left, and the copy that would pass it is never made.
            copied += encoded_len(source, MAX_COPY_BYTES - copied);
            if copied > MAX_COPY_BYTES {
                return Err(JsonPatchError::CopyLimit {
                    operation,
                    path: copy.path.to_string(),
                });
            }
        }
        json_patch::patch_unsafe(&mut doc, std::slice::from_ref(op)).map_err(|e| {
            JsonPatchError::Failed {
                operation,
                path: e.path.to_string(),
                kind: e.kind,
            }
        })?;
    }
    if deeper_than(&doc, MAX_DEPTH) {
        return Err(JsonPatchError::TooDeep);
    }
    Ok(doc)
}

/// The length of `v` as compact JSON (string escapes aside), counted only until it passes
/// `cap`: then some number above `cap`. Iterative, as copies can nest values deeply.
fn encoded_len(v: &Value, cap: usize) -> usize {
    let mut len = 0;
    let mut pending = vec![v];
    while let Some(v) = pending.pop() {
        len += match v {
            Value::Null | Value::Bool(true) => 4,
            Value::Bool(false) => 5,
            Value::Number(n) => n.to_string().len(),
            Value::String(s) => s.len() + 2,
            Value::Array(items) => {
                pending.extend(items);
                // Brackets and commas.
                (items.len() + 1).max(2)
            }
            Value::Object(map) => {
                for (k, v) in map {
                    len += k.len() + 3;
                    pending.push(v);
                }
                (map.len() + 1).max(2)
            }
        };
        if len > cap {
            break;
        }
    }
    len
}

/// Whether `v` nests arrays and objects more than `max` levels deep (recursing at most `max`
/// levels to find out).
fn deeper_than(v: &Value, max: usize) -> bool {
    let mut children: Box<dyn Iterator<Item = &Value>> = match v {
        Value::Array(items) => Box::new(items.iter()),
        Value::Object(map) => Box::new(map.values()),
        _ => return false,
    };
    max == 0 || children.any(|c| deeper_than(c, max - 1))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn lengths_are_those_of_compact_json() {
        for v in [
            json!(null),
            json!(true),
            json!(false),
            json!(-12.5),
            json!("abc"),
            json!([]),
            json!({}),
            json!([1, "x", [null], {"k": {"l": [true, false]}}]),
            json!({"a": 1, "bb": [2, 3], "c": {}}),
        ] {
            let want = serde_json::to_string(&v).unwrap().len();
            assert_eq!(encoded_len(&v, usize::MAX), want, "{v}");
        }
        // Counting stops soon after the cap.
        let big = json!(vec!["x".repeat(1000); 1000]);
        let n = encoded_len(&big, 10_000);
        assert!(n > 10_000 && n < 12_000, "{n}");
    }

    #[test]
    fn depth_is_bounded_as_the_store_reads_it() {
        let nested = |n: usize| (1..n).fold(json!({}), |v, _| json!({"a": v}));
        assert!(!deeper_than(&nested(MAX_DEPTH), MAX_DEPTH));
        assert!(deeper_than(&nested(MAX_DEPTH + 1), MAX_DEPTH));
        assert!(!deeper_than(&json!("x"), 0));
        // The bound leaves room below what serde_json reads back.
        let text = serde_json::to_string(&nested(MAX_DEPTH + 20)).unwrap();
        assert!(serde_json::from_str::<Value>(&text).is_ok());
    }
}
