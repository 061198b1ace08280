//! The shape of the generated message table (`generated.rs`; `messages.rs` looks it up): for
//! every message of the supported Kubernetes packages, its fields by number with their JSON
//! name, type, cardinality and the Go details that decide how Kubernetes' JSON shows them.

/// A field's element type: a protobuf scalar or an index into the generated `MESSAGES`.
// The unit tests exercise every type, so only the library build has unused ones.
#[cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "not every scalar type occurs in today's packages; the decoder handles them all \
                  so that a regenerated table with more packages needs no decoder change"
    )
)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ty {
    Bool,
    I32,
    I64,
    U32,
    U64,
    S32,
    S64,
    Fixed32,
    Fixed64,
    SFixed32,
    SFixed64,
    F32,
    F64,
    Str,
    Bytes,
    Msg(u16),
}

/// Singular, repeated, or `map<string, ty>` (repeated key/value entry messages on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Card {
    One,
    Many,
    Map,
}

/// The Go field is a pointer: present on the wire exactly when set, zero values included.
pub(super) const PTR: u8 = 1;
/// The Go JSON tag has `omitempty`.
pub(super) const OMIT: u8 = 2;
/// The Go JSON tag is `,inline`: the message's JSON fields sit in the parent object.
pub(super) const INLINE: u8 = 4;

#[derive(Debug)]
pub(super) struct Field {
    pub num: u32,
    /// The JSON name (for inline fields, the protobuf name, used in error paths only).
    pub name: &'static str,
    pub ty: Ty,
    pub card: Card,
    /// [`PTR`] | [`OMIT`] | [`INLINE`].
    pub go: u8,
}

#[derive(Debug)]
pub(super) struct Message {
    /// Fully qualified protobuf name, e.g. `k8s.io.api.core.v1.Pod`.
    pub name: &'static str,
    /// Sorted by number.
    pub fields: &'static [Field],
}

impl Message {
    pub(super) fn field_index(&self, num: u32) -> Option<usize> {
        self.fields.binary_search_by_key(&num, |f| f.num).ok()
    }
}
