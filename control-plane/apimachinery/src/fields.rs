//! Field sets: the fields of an object a manager owns, as server-side apply tracks them
//! (sigs.k8s.io/structured-merge-diff), and what apply does with objects: the set of an applied
//! configuration, the fields a write changed or removed, the merge of a configuration into the
//! live object, and the pruning of fields an applier stopped applying.
//!
//! The schema is the strategic-merge table of [`crate::patch`]: a list merged by a key there is
//! an associative list here (items named `k:{"name":"c"}`, with Kubernetes' compound keys for
//! ports and topology spread constraints), a list merged without a key is a set of scalars
//! (`v:"x"`), every other list is atomic (owned as a whole). Maps are granular except the atomic
//! ones Kubernetes marks so (label selectors, `nodeSelector`, a Service's `selector`).
//!
//! Simplification: in a write's changed set a map that was added as a whole is a member (`.`)
//! below the top-level sections. Kubernetes compares against Go's zero object, which already
//! holds non-pointer structs such as `spec.template`, so it marks fewer maps; ownership of the
//! fields themselves, and so conflicts, are the same.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Map, Value};

use crate::patch::{self, Strategy, Ty};

/// A managedFields entry's `fieldsV1` that is not a field set.
#[derive(Debug, thiserror::Error)]
#[error("invalid fieldsV1 at {path:?}: {reason}")]
pub struct FieldsError {
    path: String,
    reason: &'static str,
}

/// A set of field paths, in the tree form of `fieldsV1`. Children are keyed by their encoded
/// path element (`f:name`, `k:{...}`, `v:...`, `i:N`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    /// The path leading here is itself in the set (`.` in fieldsV1, or a leaf `{}`).
    member: bool,
    children: BTreeMap<String, FieldSet>,
}

impl FieldSet {
    fn leaf() -> Self {
        FieldSet {
            member: true,
            children: BTreeMap::new(),
        }
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    /// Adds `child` under `elem` (merged with what is there); empty sets are not stored.
    fn insert(&mut self, elem: String, child: FieldSet) {
        if child.is_empty() {
            return;
        }
        match self.children.get_mut(&elem) {
            Some(c) => c.union_with(&child),
            None => {
                self.children.insert(elem, child);
            }
        }
    }

    /// The set below one top-level field, e.g. `f:status`.
    #[must_use]
    pub fn get(&self, elem: &str) -> Option<&FieldSet> {
        self.children.get(elem)
    }

    /// Keeps only the top-level fields `keep` accepts (`f:status`, `f:spec`, ...).
    pub fn retain_top(&mut self, keep: impl Fn(&str) -> bool) {
        self.children.retain(|k, _| keep(k));
    }

    pub fn union_with(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (k, v) in &other.children {
            match self.children.get_mut(k) {
                Some(c) => c.union_with(v),
                None => {
                    self.children.insert(k.clone(), v.clone());
                }
            }
        }
    }

    #[must_use]
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut u = self.clone();
        u.union_with(other);
        u
    }

    /// The members of `self` that are not members of `other`.
    #[must_use]
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (k, v) in &self.children {
            match other.children.get(k) {
                Some(o) => out.insert(k.clone(), v.difference(o)),
                None => {
                    out.children.insert(k.clone(), v.clone());
                }
            }
        }
        out
    }

    #[must_use]
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (k, v) in &self.children {
            if let Some(o) = other.children.get(k) {
                out.insert(k.clone(), v.intersection(o));
            }
        }
        out
    }

    /// Whether `self` and the set encoded as `fieldsV1` share a member. Walks only `self`'s
    /// paths, so a small set is checked against a large encoded one cheaply.
    #[must_use]
    pub fn intersects_json(&self, fields_v1: &Value) -> bool {
        let Some(m) = fields_v1.as_object() else {
            return false;
        };
        if self.member && (m.is_empty() || m.contains_key(".")) {
            return true;
        }
        self.children
            .iter()
            .any(|(k, c)| m.get(k).is_some_and(|cv| c.intersects_json(cv)))
    }

    /// The member paths, each as its path elements, in set order.
    #[must_use]
    pub fn paths(&self) -> Vec<Vec<String>> {
        fn walk(s: &FieldSet, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
            if s.member {
                out.push(prefix.clone());
            }
            for (k, c) in &s.children {
                prefix.push(k.clone());
                walk(c, prefix, out);
                prefix.pop();
            }
        }
        let mut out = Vec::new();
        walk(self, &mut Vec::new(), &mut out);
        out
    }

    /// The `fieldsV1` encoding.
    #[must_use]
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        if self.member && !self.children.is_empty() {
            m.insert(".".into(), Value::Object(Map::new()));
        }
        for (k, c) in &self.children {
            m.insert(k.clone(), c.to_json());
        }
        Value::Object(m)
    }

    /// Decodes `fieldsV1`.
    ///
    /// # Errors
    /// When a node is not an object or a key is not a path element.
    pub fn from_json(v: &Value) -> Result<FieldSet, FieldsError> {
        fn node(v: &Value, path: &str, top: bool) -> Result<FieldSet, FieldsError> {
            let err = |reason| FieldsError {
                path: path.to_string(),
                reason,
            };
            let m = v.as_object().ok_or_else(|| err("not an object"))?;
            let mut s = FieldSet {
                // A leaf `{}` is a member; the root never is.
                member: m.is_empty() && !top,
                children: BTreeMap::new(),
            };
            for (k, c) in m {
                if k == "." {
                    if top {
                        return Err(err("\".\" at the top level"));
                    }
                    s.member = true;
                    continue;
                }
                let ok = ["f:", "k:", "v:", "i:"]
                    .iter()
                    .any(|p| k.len() > 2 && k.starts_with(p));
                if !ok {
                    return Err(err("a key that is not a path element"));
                }
                let child = node(c, &format!("{path}/{k}"), false)?;
                s.children.insert(k.clone(), child);
            }
            Ok(s)
        }
        node(v, "", true)
    }
}

/// A field path the way Kubernetes prints it in conflicts: `.spec.replicas`,
/// `.spec.template.spec.containers[name="web"].image`, `.metadata.finalizers[="x"]`.
#[must_use]
pub fn display_path(elems: &[String]) -> String {
    let mut out = String::new();
    for e in elems {
        let (kind, rest) = e.split_at(2.min(e.len()));
        match kind {
            "f:" => {
                out.push('.');
                out.push_str(rest);
            }
            "k:" => match serde_json::from_str::<Map<String, Value>>(rest) {
                Ok(keys) => {
                    let parts: Vec<String> = keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    let _ = write!(out, "[{}]", parts.join(","));
                }
                Err(_) => {
                    let _ = write!(out, "[{rest}]");
                }
            },
            "v:" => {
                let _ = write!(out, "[={rest}]");
            }
            "i:" => {
                let _ = write!(out, "[{rest}]");
            }
            _ => out.push_str(e),
        }
    }
    out
}

// === Schema ===

/// Metadata the server owns: never part of a field set (Kubernetes' stripMeta).
const SYSTEM_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "managedFields",
];

/// Maps owned as a whole (`+structType=atomic` / `+mapType=atomic` in k8s.io/api).
const ATOMIC_MAPS: &[(Ty, &str)] = &[
    (Ty::WorkloadSpec, "selector"),
    (Ty::ServiceSpec, "selector"),
    (Ty::PodSpec, "nodeSelector"),
];

/// The key fields of an associative list; the second may have a default (ports' protocol).
#[derive(Debug, Clone, Copy)]
struct Keys {
    first: &'static str,
    second: Option<(&'static str, Option<&'static str>)>,
}

/// How a value is tracked.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// The object itself: apiVersion and kind are not fields; metadata, spec and status always
    /// exist (they are not "added").
    Root(Ty),
    /// The object's own metadata, without the server-owned fields.
    Meta,
    /// A map tracked key by key.
    Map(Ty),
    /// Owned as a whole: scalars, atomic lists and atomic maps.
    Atomic,
    /// A list of scalars merged as a set.
    Set,
    /// A list of maps merged by key.
    Keyed(Keys, Ty),
}

fn child_shape(parent: Ty, name: &str) -> Shape {
    if ATOMIC_MAPS.contains(&(parent, name)) {
        return Shape::Atomic;
    }
    let f = patch::field(parent, name);
    match f.strategy {
        Strategy::Merge(Some(key)) => Shape::Keyed(ssa_keys(parent, name, key), f.ty),
        Strategy::Merge(None) => Shape::Set,
        Strategy::Default => Shape::Map(f.ty),
    }
}

/// Server-side apply's list keys where they differ from strategic merge's single key.
fn ssa_keys(parent: Ty, name: &str, key: &'static str) -> Keys {
    let second = match (parent, name) {
        (Ty::Container | Ty::ServiceSpec, "ports") => Some(("protocol", Some("TCP"))),
        (Ty::PodSpec, "topologySpreadConstraints") => Some(("whenUnsatisfiable", None)),
        _ => None,
    };
    Keys { first: key, second }
}

impl Shape {
    /// The shape of field `name` of a map of this shape; `None` for fields nobody owns.
    fn field(self, name: &str) -> Option<Shape> {
        match self {
            Shape::Root(ty) => match name {
                "apiVersion" | "kind" => None,
                "metadata" => Some(Shape::Meta),
                _ => Some(child_shape(ty, name)),
            },
            Shape::Meta if SYSTEM_META.contains(&name) => None,
            Shape::Meta => Some(child_shape(Ty::ObjectMeta, name)),
            Shape::Map(ty) => Some(child_shape(ty, name)),
            Shape::Atomic | Shape::Set | Shape::Keyed(..) => None,
        }
    }

    fn is_map(self) -> bool {
        matches!(self, Shape::Root(_) | Shape::Meta | Shape::Map(_))
    }

    /// Root and metadata are containers, never members themselves.
    fn is_section(self) -> bool {
        matches!(self, Shape::Root(_) | Shape::Meta)
    }
}

fn key_of(keys: Keys, item: &Value) -> Option<String> {
    let m = item.as_object()?;
    let first = m.get(keys.first).filter(|v| !v.is_null())?;
    let default: Value;
    let mut pairs = Vec::with_capacity(2);
    pairs.push((keys.first, first));
    if let Some((name, d)) = keys.second {
        match (m.get(name).filter(|v| !v.is_null()), d) {
            (Some(v), _) => pairs.push((name, v)),
            (None, Some(d)) => {
                default = Value::String(d.to_string());
                pairs.push((name, &default));
            }
            (None, None) => return None,
        }
    }
    pairs.sort_by_key(|p| p.0);
    // Written straight into one string (this runs for every list item of every write). The
    // key names are the schema's own identifiers: nothing in them needs escaping.
    let mut out = String::with_capacity(48);
    out.push_str("k:{");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        out.push_str(k);
        out.push_str("\":");
        let _ = write!(out, "{v}");
    }
    out.push('}');
    Some(out)
}

/// `f:name`, a field's member name in fieldsV1.
fn member(name: &str) -> String {
    let mut m = String::with_capacity(name.len() + 2);
    m.push_str("f:");
    m.push_str(name);
    m
}

/// The keys of every item, or `None` when an item lacks one or two share one (then the list is
/// treated as atomic, which is always safe).
fn list_keys(keys: Keys, items: &[Value]) -> Option<Vec<String>> {
    let ks: Vec<String> = items
        .iter()
        .map(|i| key_of(keys, i))
        .collect::<Option<_>>()?;
    let mut sorted: Vec<&String> = ks.iter().collect();
    sorted.sort();
    sorted.dedup();
    (sorted.len() == ks.len()).then_some(ks)
}

fn set_elem(v: &Value) -> Option<String> {
    match v {
        Value::Array(_) | Value::Object(_) => None,
        scalar => Some(format!("v:{scalar}")),
    }
}

fn set_elems(items: &[Value]) -> Option<Vec<String>> {
    items.iter().map(set_elem).collect()
}

// === The set of a value ===

/// The fields of `v`: leaves and list items, and with `all` every map as well (what a write
/// that added `v` as a whole changed).
fn set_of(shape: Shape, v: &Value, all: bool) -> FieldSet {
    match (shape, v) {
        (s, Value::Object(m)) if s.is_map() => {
            let mut out = FieldSet {
                member: !s.is_section() && (all || m.is_empty()),
                children: BTreeMap::new(),
            };
            for (k, cv) in m {
                if cv.is_null() {
                    continue;
                }
                if let Some(cs) = s.field(k) {
                    out.insert(member(k), set_of(cs, cv, all));
                }
            }
            out
        }
        (Shape::Keyed(keys, ty), Value::Array(items)) => match list_keys(keys, items) {
            Some(ks) => {
                let mut out = FieldSet::default();
                for (k, item) in ks.into_iter().zip(items) {
                    let mut c = set_of(Shape::Map(ty), item, all);
                    c.member = true;
                    out.insert(k, c);
                }
                out.member = all || items.is_empty();
                out
            }
            None => FieldSet::leaf(),
        },
        (Shape::Set, Value::Array(items)) => match set_elems(items) {
            Some(es) => {
                let mut out = FieldSet {
                    member: all || items.is_empty(),
                    children: BTreeMap::new(),
                };
                for e in es {
                    out.children.insert(e, FieldSet::leaf());
                }
                out
            }
            None => FieldSet::leaf(),
        },
        _ => FieldSet::leaf(),
    }
}

/// `set_of(shape, v, true).to_json()` built directly, for the create path: the fieldsV1 of
/// everything a new object holds, without the intermediate set.
fn added_json(shape: Shape, v: &Value) -> Value {
    let mut out = Map::new();
    match (shape, v) {
        (s, Value::Object(m)) if s.is_map() => {
            for (k, cv) in m {
                if cv.is_null() {
                    continue;
                }
                if let Some(cs) = s.field(k) {
                    out.insert(member(k), added_json(cs, cv));
                }
            }
        }
        (Shape::Keyed(keys, ty), Value::Array(items)) => {
            if let Some(ks) = list_keys(keys, items) {
                for (k, item) in ks.into_iter().zip(items) {
                    let mut c = added_json(Shape::Map(ty), item);
                    if let Value::Object(cm) = &mut c
                        && !cm.is_empty()
                    {
                        cm.insert(".".into(), Value::Object(Map::new()));
                    }
                    out.insert(k, c);
                }
            }
        }
        (Shape::Set, Value::Array(items)) => {
            if let Some(es) = set_elems(items) {
                for e in es {
                    out.insert(e, Value::Object(Map::new()));
                }
            }
        }
        _ => {}
    }
    if !out.is_empty() && !shape.is_section() {
        out.insert(".".into(), Value::Object(Map::new()));
    }
    Value::Object(out)
}

/// The fieldsV1 a create records for its creator: every field of `obj` whose top-level field
/// `keep_top` accepts (given `f:status`, `f:spec`, ...); equal to the changed set of
/// `diff(kind, {}, obj)` so filtered. `None` when that is empty.
#[must_use]
pub fn created_fields_v1(
    kind: &str,
    obj: &Value,
    keep_top: impl Fn(&str) -> bool,
) -> Option<Value> {
    let root = Shape::Root(Ty::for_kind(kind));
    let mut out = Map::new();
    for (k, v) in obj.as_object()? {
        let elem = member(k);
        if v.is_null() || !keep_top(&elem) {
            continue;
        }
        let Some(cs) = root.field(k) else { continue };
        let node = if v.is_object() && cs.is_map() {
            // The object's sections exist even when empty: not members themselves.
            let mut n = added_json(cs, v);
            if let Value::Object(m) = &mut n {
                m.remove(".");
            }
            n
        } else {
            added_json(cs, v)
        };
        if node.as_object().is_some_and(|m| !m.is_empty()) || !v.is_object() {
            out.insert(elem, node);
        }
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

/// The fields an applied configuration sets: what its applier owns afterwards.
#[must_use]
pub fn applied_set(kind: &str, config: &Value) -> FieldSet {
    set_of(Shape::Root(Ty::for_kind(kind)), config, false)
}

// === Diff ===

/// What one write did to an object's fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// Fields added or given another value (Kubernetes' Added ∪ Modified).
    pub changed: FieldSet,
    /// Fields that are gone.
    pub removed: FieldSet,
}

impl Diff {
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.removed.is_empty()
    }
}

/// The fields that differ between `old` and `new`. Only differing parts are walked below the
/// first level where they differ, so a small change to a large object costs little beyond the
/// comparison itself.
#[must_use]
pub fn diff(kind: &str, old: &Value, new: &Value) -> Diff {
    let mut d = Diff::default();
    diff_at(Shape::Root(Ty::for_kind(kind)), old, new, &mut d);
    d
}

fn diff_at(shape: Shape, old: &Value, new: &Value, d: &mut Diff) {
    let empty = Value::Object(Map::new());
    match (shape, old, new) {
        (s, Value::Object(o), Value::Object(n)) if s.is_map() => {
            for (k, nv) in n {
                let Some(cs) = s.field(k) else { continue };
                let mut cd = Diff::default();
                match o.get(k).filter(|v| !v.is_null()) {
                    Some(ov) => diff_at(cs, ov, nv, &mut cd),
                    None if nv.is_null() => {}
                    // The sections of the object are there even when empty.
                    None if matches!(s, Shape::Root(_)) && nv.is_object() => {
                        diff_at(cs, &empty, nv, &mut cd);
                    }
                    None => cd.changed = set_of(cs, nv, true),
                }
                d.changed.insert(member(k), cd.changed);
                d.removed.insert(member(k), cd.removed);
            }
            for (k, ov) in o {
                if ov.is_null() || n.get(k).is_some_and(|v| !v.is_null()) {
                    continue;
                }
                if let Some(cs) = s.field(k) {
                    d.removed.insert(member(k), set_of(cs, ov, true));
                }
            }
        }
        (Shape::Keyed(keys, ty), Value::Array(o), Value::Array(n)) if o != n => {
            let (Some(ok), Some(nk)) = (list_keys(keys, o), list_keys(keys, n)) else {
                d.changed = FieldSet::leaf();
                return;
            };
            let old_items: BTreeMap<&String, &Value> = ok.iter().zip(o).collect();
            for (k, item) in nk.iter().zip(n) {
                if let Some(prev) = old_items.get(k) {
                    let mut cd = Diff::default();
                    diff_at(Shape::Map(ty), prev, item, &mut cd);
                    d.changed.insert(k.clone(), cd.changed);
                    d.removed.insert(k.clone(), cd.removed);
                } else {
                    let mut c = set_of(Shape::Map(ty), item, true);
                    c.member = true;
                    d.changed.insert(k.clone(), c);
                }
            }
            for (k, item) in ok.iter().zip(o) {
                if !nk.contains(k) {
                    let mut c = set_of(Shape::Map(ty), item, true);
                    c.member = true;
                    d.removed.insert(k.clone(), c);
                }
            }
        }
        (Shape::Set, Value::Array(o), Value::Array(n)) if o != n => {
            let (Some(oe), Some(ne)) = (set_elems(o), set_elems(n)) else {
                d.changed = FieldSet::leaf();
                return;
            };
            for e in &ne {
                if !oe.contains(e) {
                    d.changed.insert(e.clone(), FieldSet::leaf());
                }
            }
            for e in oe {
                if !ne.contains(&e) {
                    d.removed.insert(e, FieldSet::leaf());
                }
            }
        }
        (s, o, n) if o != n => {
            d.changed = if s.is_map() && n.is_object() {
                set_of(s, n, true)
            } else {
                FieldSet::leaf()
            };
        }
        _ => {}
    }
}

// === Merge and prune ===

fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// Merges an applied configuration into the live object: maps field by field, associative
/// lists item by item (by key; new items appended), sets as a union, everything else replaced.
/// A `null` in the configuration sets nothing.
#[must_use]
pub fn merge(kind: &str, live: &Value, config: &Value) -> Value {
    let mut out = live.clone();
    merge_into(Shape::Root(Ty::for_kind(kind)), &mut out, config);
    out
}

fn merge_into(shape: Shape, live: &mut Value, config: &Value) {
    match (shape, &mut *live, config) {
        (s, Value::Object(l), Value::Object(c)) if s.is_map() => {
            for (k, cv) in c {
                if cv.is_null() {
                    continue;
                }
                // Server-owned and untracked fields (name, apiVersion) are still merged; the
                // request's checks decide whether they are acceptable.
                let cs = s.field(k).unwrap_or(Shape::Atomic);
                match l.get_mut(k) {
                    Some(lv) if !lv.is_null() => merge_into(cs, lv, cv),
                    _ => {
                        l.insert(k.clone(), without_nulls(cv));
                    }
                }
            }
        }
        (Shape::Keyed(keys, ty), Value::Array(l), Value::Array(c)) => {
            match (list_keys(keys, l), list_keys(keys, c)) {
                (Some(lk), Some(ck)) => {
                    for (k, item) in ck.iter().zip(c) {
                        match lk.iter().position(|x| x == k) {
                            Some(i) => merge_into(Shape::Map(ty), &mut l[i], item),
                            None => l.push(without_nulls(item)),
                        }
                    }
                }
                _ => *live = without_nulls(config),
            }
        }
        (Shape::Set, Value::Array(l), Value::Array(c)) => {
            for item in c {
                if !l.contains(item) {
                    l.push(item.clone());
                }
            }
        }
        _ => *live = without_nulls(config),
    }
}

/// Removes from `obj` the member paths of `remove` that nothing in `keep` owns (neither the
/// path nor anything below it). Maps and lists emptied by this are removed too.
pub fn prune(kind: &str, obj: &mut Value, remove: &FieldSet, keep: &FieldSet) {
    prune_at(Shape::Root(Ty::for_kind(kind)), obj, remove, Some(keep));
}

fn is_empty_container(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Prunes the child `cv` (found under `rs`); true when the child itself should go.
fn prune_child(cs: Shape, cv: &mut Value, rs: &FieldSet, ks: Option<&FieldSet>) -> bool {
    if rs.member && ks.is_none() {
        return true;
    }
    let was_empty = is_empty_container(cv);
    prune_at(cs, cv, rs, ks);
    !was_empty && is_empty_container(cv) && !ks.is_some_and(|k| k.member)
}

fn prune_at(shape: Shape, v: &mut Value, remove: &FieldSet, keep: Option<&FieldSet>) {
    let keep_child = |e: &str| keep.and_then(|k| k.children.get(e));
    match (shape, v) {
        (s, Value::Object(m)) if s.is_map() => {
            for (e, rs) in &remove.children {
                let Some(name) = e.strip_prefix("f:") else {
                    continue;
                };
                let (Some(cs), Some(cv)) = (s.field(name), m.get_mut(name)) else {
                    continue;
                };
                if prune_child(cs, cv, rs, keep_child(e)) {
                    m.remove(name);
                }
            }
        }
        (Shape::Keyed(keys, ty), Value::Array(items)) => {
            let Some(ks) = list_keys(keys, items) else {
                return;
            };
            let mut drop = vec![false; items.len()];
            for (i, (k, item)) in ks.iter().zip(items.iter_mut()).enumerate() {
                if let Some(rs) = remove.children.get(k) {
                    drop[i] = prune_child(Shape::Map(ty), item, rs, keep_child(k));
                }
            }
            let mut i = 0;
            items.retain(|_| {
                i += 1;
                !drop[i - 1]
            });
        }
        (Shape::Set, Value::Array(items)) => {
            items.retain(|item| {
                let Some(e) = set_elem(item) else { return true };
                !(remove.children.get(&e).is_some_and(|rs| rs.member) && keep_child(&e).is_none())
            });
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn deployment(replicas: i64, image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "uid": "u", "labels": {"app": "web"}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{
                        "name": "web", "image": image,
                        "ports": [{"containerPort": 80}],
                        "env": [{"name": "A", "value": "1"}],
                        "args": ["-v"],
                    }]},
                },
            },
        })
    }

    #[test]
    fn applied_set_uses_kubernetes_encoding() {
        let set = applied_set("Deployment", &deployment(3, "nginx"));
        assert_eq!(
            set.to_json(),
            json!({
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
                            ".": {},
                            "f:args": {},
                            "f:env": {"k:{\"name\":\"A\"}": {".": {}, "f:name": {}, "f:value": {}}},
                            "f:image": {},
                            "f:name": {},
                            "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {
                                ".": {}, "f:containerPort": {}}},
                        }}},
                    },
                },
            })
        );
        assert_eq!(FieldSet::from_json(&set.to_json()).unwrap(), set);
    }

    #[test]
    fn sets_of_scalars_and_decoding_errors() {
        let s = applied_set(
            "Pod",
            &json!({"metadata": {"finalizers": ["a/b"], "name": "x"}}),
        );
        assert_eq!(
            s.to_json(),
            json!({"f:metadata": {"f:finalizers": {"v:\"a/b\"": {}}}})
        );
        let paths: Vec<String> = s.paths().iter().map(|p| display_path(p)).collect();
        assert_eq!(paths, [".metadata.finalizers[=\"a/b\"]"]);
        assert!(FieldSet::from_json(&json!({"x:y": {}})).is_err());
        assert!(FieldSet::from_json(&json!({"f:a": 1})).is_err());
        assert!(FieldSet::from_json(&json!({".": {}})).is_err());
    }

    #[test]
    fn diff_reports_only_what_changed() {
        let old = deployment(3, "nginx");
        let mut new = deployment(5, "nginx:2");
        new["metadata"]["labels"]["tier"] = json!("front");
        new["metadata"]["resourceVersion"] = json!("9");
        new["spec"]["template"]["spec"]["containers"][0]["env"] = json!([{"name": "B"}]);
        let d = diff("Deployment", &old, &new);
        let paths: Vec<String> = d.changed.paths().iter().map(|p| display_path(p)).collect();
        assert_eq!(
            paths,
            [
                ".metadata.labels.tier",
                ".spec.replicas",
                ".spec.template.spec.containers[name=\"web\"].env[name=\"B\"]",
                ".spec.template.spec.containers[name=\"web\"].env[name=\"B\"].name",
                ".spec.template.spec.containers[name=\"web\"].image",
            ]
        );
        let removed: Vec<String> = d.removed.paths().iter().map(|p| display_path(p)).collect();
        assert_eq!(
            removed,
            [
                ".spec.template.spec.containers[name=\"web\"].env[name=\"A\"]",
                ".spec.template.spec.containers[name=\"web\"].env[name=\"A\"].name",
                ".spec.template.spec.containers[name=\"web\"].env[name=\"A\"].value",
            ]
        );
        assert!(diff("Deployment", &old, &old).is_empty());
    }

    #[test]
    fn a_create_owns_maps_added_below_the_sections() {
        let d = diff(
            "Deployment",
            &json!({}),
            &json!({"kind": "Deployment", "metadata": {"name": "a", "labels": {"x": "1"}},
                    "spec": {"replicas": 1, "strategy": {"type": "Recreate"}}}),
        );
        assert!(d.removed.is_empty());
        assert_eq!(
            d.changed.to_json(),
            json!({"f:metadata": {"f:labels": {".": {}, "f:x": {}}},
                   "f:spec": {"f:replicas": {}, "f:strategy": {".": {}, "f:type": {}}}})
        );
    }

    #[test]
    fn created_fields_match_the_diff_from_nothing() {
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"a": "b"}, "finalizers": ["x"], "annotations": {}},
            "spec": {"containers": [{"name": "c", "image": "i", "resources": {},
                                     "ports": [{"containerPort": 80}], "args": ["a"]}],
                     "nodeSelector": {"k": "v"}, "tolerations": [], "securityContext": {}},
            "status": {"phase": "Pending"}});
        for _ in 0..2 {
            let mut want = diff("Pod", &json!({}), &pod).changed;
            want.retain_top(|k| k != "f:status");
            let got = created_fields_v1("Pod", &pod, |k| k != "f:status").unwrap();
            assert_eq!(got, want.to_json());
            assert_eq!(FieldSet::from_json(&got).unwrap(), want);
            // Also when a section is empty or a top-level field is a scalar or list.
            pod["spec"] = json!({});
            pod["subsets"] = json!([{"addresses": []}]);
        }
        let event = json!({"kind": "Event", "metadata": {"name": "e"}, "reason": "X", "count": 1});
        assert_eq!(
            created_fields_v1("Event", &event, |_| true),
            Some(diff("Event", &json!({}), &event).changed.to_json())
        );
        assert_eq!(
            created_fields_v1("Pod", &json!({"metadata": {"name": "x"}}), |_| true),
            None
        );
    }

    #[test]
    fn merge_follows_keys_and_replaces_atomic_lists() {
        let live = deployment(3, "nginx");
        let config = json!({
            "metadata": {"labels": {"tier": "x"}},
            "spec": {"replicas": null, "template": {"spec": {"containers": [
                {"name": "web", "image": "nginx:2", "args": ["-q"],
                 "env": [{"name": "B", "value": "2"}], "ports": [{"containerPort": 80, "protocol": "TCP", "name": "http"}]},
                {"name": "side", "image": "busybox"},
            ]}}},
        });
        let out = merge("Deployment", &live, &config);
        assert_eq!(out["spec"]["replicas"], 3, "null sets nothing");
        assert_eq!(
            out["metadata"]["labels"],
            json!({"app": "web", "tier": "x"})
        );
        let cs = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0]["image"], "nginx:2");
        assert_eq!(cs[0]["args"], json!(["-q"]));
        assert_eq!(
            cs[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
        );
        // Protocol defaults to TCP in the key, so the port is the same item.
        assert_eq!(
            cs[0]["ports"],
            json!([{"containerPort": 80, "name": "http", "protocol": "TCP"}])
        );
        assert_eq!(cs[1], json!({"name": "side", "image": "busybox"}));
        // Sets are unioned.
        let f = merge(
            "Pod",
            &json!({"metadata": {"finalizers": ["a"]}}),
            &json!({"metadata": {"finalizers": ["b", "a"]}}),
        );
        assert_eq!(f["metadata"]["finalizers"], json!(["a", "b"]));
    }

    #[test]
    fn prune_removes_only_what_nobody_else_owns() {
        let mut obj = deployment(3, "nginx");
        obj["metadata"]["labels"]["tier"] = json!("x");
        obj["spec"]["minReadySeconds"] = json!(5);
        let remove = FieldSet::from_json(&json!({
            "f:metadata": {"f:labels": {"f:tier": {}, "f:app": {}}},
            "f:spec": {"f:minReadySeconds": {}, "f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:env": {"k:{\"name\":\"A\"}": {".": {}, "f:name": {}, "f:value": {}}}}}}}},
        }))
        .unwrap();
        // Someone else owns the app label and the container's image.
        let keep = FieldSet::from_json(&json!({
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {"f:image": {}}}}}},
        }))
        .unwrap();
        prune("Deployment", &mut obj, &remove, &keep);
        assert_eq!(obj["metadata"]["labels"], json!({"app": "web"}));
        assert!(obj["spec"].get("minReadySeconds").is_none());
        let c = &obj["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "nginx");
        assert!(c.get("env").is_none(), "emptied list goes: {c}");
        assert_eq!(c["args"], json!(["-v"]), "not in the removed set");

        // Nobody keeps anything: the container item goes as a whole.
        let mut obj = deployment(3, "nginx");
        prune("Deployment", &mut obj, &remove, &FieldSet::default());
        assert!(obj["spec"]["template"]["spec"].get("containers").is_none());
        assert!(obj["metadata"].get("labels").is_none());
    }

    #[test]
    fn set_algebra() {
        let a = FieldSet::from_json(&json!({"f:a": {".": {}, "f:b": {}}, "f:c": {}})).unwrap();
        let b = FieldSet::from_json(&json!({"f:a": {"f:b": {}}, "f:d": {}})).unwrap();
        assert_eq!(a.difference(&b).to_json(), json!({"f:a": {}, "f:c": {}}));
        assert_eq!(a.intersection(&b).to_json(), json!({"f:a": {"f:b": {}}}));
        assert_eq!(
            a.union(&b).to_json(),
            json!({"f:a": {".": {}, "f:b": {}}, "f:c": {}, "f:d": {}})
        );
        assert!(a.difference(&a).is_empty());
        let enc = a.to_json();
        assert!(b.intersects_json(&enc));
        assert!(
            !FieldSet::from_json(&json!({"f:a": {"f:x": {}}, "f:d": {}}))
                .unwrap()
                .intersects_json(&enc)
        );
        assert!(
            FieldSet::from_json(&json!({"f:a": {}}))
                .unwrap()
                .intersects_json(&enc)
        );
        assert!(
            !FieldSet::from_json(&json!({"f:c": {"f:y": {}}}))
                .unwrap()
                .intersects_json(&enc)
        );
    }
}
