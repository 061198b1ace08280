//! Plain data types shared by the engines, the writer and the watch machinery.

use bytes::Bytes;

/// A global store revision; 0 means "nothing written yet".
pub type Revision = u64;

/// A stored key with its value and revisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// The revision that created the key (survives updates; reset by delete + create).
    pub create_revision: Revision,
    /// The revision of the last write to the key.
    pub mod_revision: Revision,
}

/// One page of a prefix read at a single revision (see [`crate::Store::list_page`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// Up to `limit` keys, sorted by key.
    pub kvs: Vec<KeyValue>,
    /// The revision the page was read at.
    pub revision: Revision,
    /// Whether keys under the prefix follow the last returned one.
    pub more: bool,
    /// How many keys follow the last returned one; only counted when asked for.
    pub remaining: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change delivered to watchers.
#[derive(Clone, Debug)]
pub struct Event {
    pub kind: EventKind,
    /// Put: the new value. Delete: the last value, with mod_revision = the revision of the delete.
    pub kv: KeyValue,
    /// The value before this event (None for a create).
    pub prev: Option<KeyValue>,
}

impl Event {
    /// The revision of the txn that produced this event.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// One operation of a [`crate::Store::txn`].
#[derive(Clone, Debug)]
pub enum Op {
    /// Fails with AlreadyExists if the key exists.
    Create { key: String, value: Bytes },
    /// Fails with NotFound if missing; with Conflict if `expected` is Some(r) and the key's
    /// mod_revision != r.
    Update {
        key: String,
        value: Bytes,
        expected: Option<Revision>,
    },
    /// Fails with NotFound if missing; with Conflict like Update.
    Delete {
        key: String,
        expected: Option<Revision>,
    },
    /// Writes nothing: fails with NotFound if missing, with Conflict if the key's
    /// mod_revision is not `expected` (etcd's compare without a write), so a txn commits only
    /// if a key it depends on is unchanged. It has no result (etcd then reads nothing back for
    /// it); a txn needs at least one write besides its checks to consume a revision.
    Check { key: String, expected: Revision },
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Create { key, .. }
            | Op::Update { key, .. }
            | Op::Delete { key, .. }
            | Op::Check { key, .. } => key,
        }
    }
}
