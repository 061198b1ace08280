//! `metadata.managedFields`: which manager owns which fields, how each write moves ownership,
//! and server-side apply's conflicts (k8s.io/apimachinery/pkg/util/managedfields, simplified:
//! one API version per kind, so no conversion between versions).

use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use crate::fields::{Diff, FieldSet, FieldsError, display_path};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// Who writes: one managedFields entry per distinct manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manager {
    pub name: String,
    pub operation: Operation,
    pub api_version: String,
    /// "" for the object itself, else `status`, `scale`.
    pub subresource: String,
}

impl Manager {
    /// Kubernetes' manager identity: the API version counts for updaters only, so an applier
    /// keeps its entry across versions.
    fn same(&self, other: &Manager) -> bool {
        self.name == other.name
            && self.operation == other.operation
            && self.subresource == other.subresource
            && (self.operation == Operation::Apply || self.api_version == other.api_version)
    }

    /// As conflict messages name a manager: `"kubectl" with subresource "scale" using apps/v1`.
    #[must_use]
    pub fn describe(&self) -> String {
        let mut s = format!("{:?}", self.name);
        if !self.subresource.is_empty() {
            let _ = write!(s, " with subresource {:?}", self.subresource);
        }
        if self.operation == Operation::Update {
            let _ = write!(s, " using {}", self.api_version);
        }
        s
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub manager: Manager,
    /// RFC 3339, when the manager last changed something.
    pub time: Option<String>,
    pub fields: FieldSet,
}

/// A field another manager owns and an apply would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub manager: Manager,
    /// `.spec.replicas`
    pub field: String,
}

/// Apply's refusal: the fields and who owns them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct Conflicts(pub Vec<Conflict>);

impl Conflicts {
    /// Kubernetes' wording: "Apply failed with 1 conflict: conflict with \"m\": .spec.replicas",
    /// or per manager (sorted) with a line per field when there are several.
    #[must_use]
    pub fn message(&self) -> String {
        if let [c] = self.0.as_slice() {
            return format!(
                "Apply failed with 1 conflict: conflict with {}: {}",
                c.manager.describe(),
                c.field
            );
        }
        let mut by: Vec<(String, Vec<&str>)> = Vec::new();
        for c in &self.0 {
            let d = c.manager.describe();
            match by.iter_mut().find(|(m, _)| *m == d) {
                Some((_, fs)) => fs.push(&c.field),
                None => by.push((d, vec![&c.field])),
            }
        }
        by.sort();
        let mut lines = Vec::new();
        for (m, fs) in by {
            lines.push(format!("conflicts with {m}:"));
            lines.extend(fs.iter().map(|f| format!("- {f}")));
        }
        format!(
            "Apply failed with {} conflicts: {}",
            self.0.len(),
            lines.join("\n")
        )
    }
}

/// Why stored or sent managedFields could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManagedFieldsError {
    #[error("managedFields must be a list of entries")]
    NotAList,
    #[error("managedFields entry {0}: {1}")]
    Entry(usize, &'static str),
    #[error("managedFields entry {0}: {1}")]
    Fields(usize, #[source] FieldsError),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManagedFields {
    entries: Vec<Entry>,
}

impl ManagedFields {
    /// Reads `metadata.managedFields` (absent or null: no entries).
    ///
    /// # Errors
    /// An entry without a known operation or with an invalid `fieldsV1` (Kubernetes resets such
    /// managedFields; the caller decides).
    pub fn decode(v: Option<&Value>) -> Result<Self, ManagedFieldsError> {
        let items = match v {
            None | Some(Value::Null) => return Ok(Self::default()),
            Some(Value::Array(items)) => items,
            Some(_) => return Err(ManagedFieldsError::NotAList),
        };
        let mut entries = Vec::with_capacity(items.len());
        for (i, e) in items.iter().enumerate() {
            let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default();
            let operation = match s("operation") {
                "Apply" => Operation::Apply,
                "Update" => Operation::Update,
                _ => {
                    return Err(ManagedFieldsError::Entry(
                        i,
                        "operation must be Apply or Update",
                    ));
                }
            };
            if !matches!(s("fieldsType"), "" | "FieldsV1") {
                return Err(ManagedFieldsError::Entry(i, "fieldsType must be FieldsV1"));
            }
            let fields = match e.get("fieldsV1") {
                None | Some(Value::Null) => FieldSet::default(),
                Some(f) => {
                    FieldSet::from_json(f).map_err(|err| ManagedFieldsError::Fields(i, err))?
                }
            };
            let manager = Manager {
                name: s("manager").to_string(),
                operation,
                api_version: s("apiVersion").to_string(),
                subresource: s("subresource").to_string(),
            };
            if entries.iter().any(|x: &Entry| x.manager.same(&manager)) {
                return Err(ManagedFieldsError::Entry(i, "duplicate manager"));
            }
            entries.push(Entry {
                manager,
                time: e.get("time").and_then(Value::as_str).map(String::from),
                fields,
            });
        }
        Ok(Self { entries })
    }

    /// The wire form, in Kubernetes' order (Apply before Update, then by time, manager, API
    /// version, subresource). `None` when there are no entries (the field is then omitted).
    #[must_use]
    pub fn encode(&self) -> Option<Value> {
        if self.entries.is_empty() {
            return None;
        }
        let mut items: Vec<Value> = self
            .entries
            .iter()
            .map(|e| encode_entry(&e.manager, e.time.as_deref(), e.fields.to_json()))
            .collect();
        sort_encoded(&mut items);
        Some(Value::Array(items))
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    #[must_use]
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The fields `m` owns now.
    #[must_use]
    pub fn fields_of(&self, m: &Manager) -> Option<&FieldSet> {
        self.entries
            .iter()
            .find(|e| e.manager.same(m))
            .map(|e| &e.fields)
    }

    /// Everything managers other than `m` own.
    #[must_use]
    pub fn owned_by_others(&self, m: &Manager) -> FieldSet {
        let mut u = FieldSet::default();
        for e in self.entries.iter().filter(|e| !e.manager.same(m)) {
            u.union_with(&e.fields);
        }
        u
    }

    /// Records a write by `m` that changed the object as `diff` says: `m` takes the changed
    /// fields from everyone else (an update never conflicts), removed fields belong to nobody.
    pub fn update(&mut self, m: &Manager, diff: &Diff, now: &str) {
        if diff.is_empty() {
            return;
        }
        self.take_from_others(m, diff);
        match self.entries.iter_mut().find(|e| e.manager.same(m)) {
            Some(e) => {
                e.fields = e.fields.difference(&diff.removed);
                e.fields.union_with(&diff.changed);
                e.manager.api_version.clone_from(&m.api_version);
                e.time = Some(now.to_string());
            }
            None => self.entries.push(Entry {
                manager: m.clone(),
                time: Some(now.to_string()),
                fields: diff.changed.clone(),
            }),
        }
        self.entries.retain(|e| !e.fields.is_empty());
    }

    /// Records an apply by `m` whose configuration sets `applied` and whose result changed the
    /// object as `diff` says. Fields another manager owns that the apply changed are conflicts;
    /// with `force` the applier takes them, else nothing is recorded and they are returned.
    ///
    /// # Errors
    /// The conflicts, when there are any and `force` is false.
    pub fn apply(
        &mut self,
        m: &Manager,
        applied: FieldSet,
        diff: &Diff,
        force: bool,
        now: &str,
    ) -> Result<(), Conflicts> {
        let mut conflicts = Vec::new();
        for e in self.entries.iter().filter(|e| !e.manager.same(m)) {
            for p in e.fields.intersection(&diff.changed).paths() {
                conflicts.push(Conflict {
                    manager: e.manager.clone(),
                    field: display_path(&p),
                });
            }
        }
        if !force && !conflicts.is_empty() {
            return Err(Conflicts(conflicts));
        }
        self.take_from_others(m, diff);
        let changed = !diff.is_empty();
        match self.entries.iter_mut().find(|e| e.manager.same(m)) {
            Some(e) => {
                if changed || e.fields != applied {
                    e.time = Some(now.to_string());
                }
                e.fields = applied;
                e.manager.api_version.clone_from(&m.api_version);
            }
            None => self.entries.push(Entry {
                manager: m.clone(),
                time: Some(now.to_string()),
                fields: applied,
            }),
        }
        self.entries.retain(|e| !e.fields.is_empty());
        Ok(())
    }

    fn take_from_others(&mut self, m: &Manager, diff: &Diff) {
        for e in self.entries.iter_mut().filter(|e| !e.manager.same(m)) {
            if !diff.changed.is_empty() {
                e.fields = e.fields.difference(&diff.changed);
            }
            if !diff.removed.is_empty() {
                e.fields = e.fields.difference(&diff.removed);
            }
        }
    }
}

/// One managedFields entry in its wire form.
#[must_use]
pub fn encode_entry(m: &Manager, time: Option<&str>, fields_v1: Value) -> Value {
    let mut e = Map::new();
    e.insert("manager".into(), json!(m.name));
    e.insert("operation".into(), json!(m.operation.as_str()));
    e.insert("apiVersion".into(), json!(m.api_version));
    if let Some(t) = time {
        e.insert("time".into(), json!(t));
    }
    e.insert("fieldsType".into(), json!("FieldsV1"));
    e.insert("fieldsV1".into(), fields_v1);
    if !m.subresource.is_empty() {
        e.insert("subresource".into(), json!(m.subresource));
    }
    Value::Object(e)
}

/// Kubernetes' order of entries: operation (Apply first), time, manager, API version,
/// subresource. RFC 3339 times in UTC sort as strings.
fn sort_encoded(items: &mut [Value]) {
    fn key(e: &Value) -> [&str; 5] {
        ["operation", "time", "manager", "apiVersion", "subresource"]
            .map(|k| e.get(k).and_then(Value::as_str).unwrap_or_default())
    }
    items.sort_by(|p, q| key(p).cmp(&key(q)));
}

/// Whether an encoded entry is `m`'s (the same identity as [`Manager::same`]).
fn is_managers(e: &Value, m: &Manager) -> bool {
    let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default();
    s("manager") == m.name
        && s("operation") == m.operation.as_str()
        && s("subresource") == m.subresource
        && (m.operation == Operation::Apply || s("apiVersion") == m.api_version)
}

/// [`ManagedFields::update`] on entries as stored, editing them in place: only entries the
/// write touches are decoded, so an update to a large object with several managers costs
/// about the size of the change. Same result as decode, update, encode.
///
/// # Errors
/// An entry the write touches that cannot be decoded (the caller falls back to `decode`,
/// which reports it).
pub fn update_encoded(
    items: &mut Vec<Value>,
    m: &Manager,
    diff: &Diff,
    now: &str,
) -> Result<(), ManagedFieldsError> {
    if diff.is_empty() {
        return Ok(());
    }
    let touched = diff.changed.union(&diff.removed);
    let mut mine = None;
    for (i, e) in items.iter_mut().enumerate() {
        if is_managers(e, m) {
            mine = Some(i);
            continue;
        }
        let Some(f) = e.get("fieldsV1") else { continue };
        if !touched.intersects_json(f) {
            continue;
        }
        let left = FieldSet::from_json(f)
            .map_err(|err| ManagedFieldsError::Fields(i, err))?
            .difference(&touched);
        e["fieldsV1"] = left.to_json();
    }
    match mine {
        Some(i) => {
            let e = &mut items[i];
            let cur = match e.get("fieldsV1") {
                None | Some(Value::Null) => FieldSet::default(),
                Some(f) => {
                    FieldSet::from_json(f).map_err(|err| ManagedFieldsError::Fields(i, err))?
                }
            };
            let mut fields = cur.difference(&diff.removed);
            fields.union_with(&diff.changed);
            *e = encode_entry(m, Some(now), fields.to_json());
        }
        None => items.push(encode_entry(m, Some(now), diff.changed.to_json())),
    }
    items.retain(|e| {
        e.get("fieldsV1")
            .and_then(Value::as_object)
            .is_some_and(|f| !f.is_empty())
    });
    sort_encoded(items);
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::fields::{applied_set, diff};

    fn mgr(name: &str, op: Operation, sub: &str) -> Manager {
        Manager {
            name: name.into(),
            operation: op,
            api_version: "apps/v1".into(),
            subresource: sub.into(),
        }
    }

    fn dep(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "web", "image": image}]}}}})
    }

    #[test]
    fn scale_then_apply_conflicts_and_force_takes_over() {
        let applier = mgr("kubectl", Operation::Apply, "");
        let scaler = mgr("kubectl", Operation::Update, "scale");
        let mut mf = ManagedFields::default();
        let v1 = dep(3, "nginx");
        mf.apply(
            &applier,
            applied_set("Deployment", &v1),
            &diff("Deployment", &json!({}), &v1),
            false,
            "2025-01-01T00:00:00Z",
        )
        .unwrap();

        let v2 = dep(5, "nginx");
        mf.update(
            &scaler,
            &diff("Deployment", &v1, &v2),
            "2025-01-01T00:00:01Z",
        );
        let mine = mf.fields_of(&applier).unwrap();
        assert!(
            !mine
                .paths()
                .iter()
                .any(|p| display_path(p) == ".spec.replicas"),
            "the scaler took replicas"
        );

        // Re-applying replicas 3 changes a field the scaler owns.
        let before = mf.clone();
        let err = mf
            .apply(
                &applier,
                applied_set("Deployment", &v1),
                &diff("Deployment", &v2, &v1),
                false,
                "2025-01-01T00:00:02Z",
            )
            .unwrap_err();
        assert_eq!(
            err.message(),
            "Apply failed with 1 conflict: conflict with \"kubectl\" with subresource \"scale\" using apps/v1: .spec.replicas"
        );
        assert_eq!(mf, before, "a refused apply records nothing");

        mf.apply(
            &applier,
            applied_set("Deployment", &v1),
            &diff("Deployment", &v2, &v1),
            true,
            "2025-01-01T00:00:03Z",
        )
        .unwrap();
        assert!(
            mf.fields_of(&scaler).is_none(),
            "the scaler owned only replicas"
        );
        let enc = mf.encode().unwrap();
        assert_eq!(enc.as_array().unwrap().len(), 1);
        assert_eq!(enc[0]["time"], "2025-01-01T00:00:03Z");
        assert_eq!(enc[0]["fieldsV1"]["f:spec"]["f:replicas"], json!({}));
    }

    #[test]
    fn same_value_is_shared_without_conflict() {
        let a = mgr("a", Operation::Apply, "");
        let b = mgr("b", Operation::Apply, "");
        let obj = dep(3, "nginx");
        let mut mf = ManagedFields::default();
        let created = diff("Deployment", &json!({}), &obj);
        mf.apply(&a, applied_set("Deployment", &obj), &created, false, "t1")
            .unwrap();
        let cfg = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 3}});
        // Same value: no change, no conflict, both own it.
        mf.apply(
            &b,
            applied_set("Deployment", &cfg),
            &Diff::default(),
            false,
            "t2",
        )
        .unwrap();
        for m in [&a, &b] {
            let owned: Vec<String> = mf
                .fields_of(m)
                .unwrap()
                .paths()
                .iter()
                .map(|p| display_path(p))
                .collect();
            assert!(owned.contains(&".spec.replicas".to_string()), "{owned:?}");
        }
        // Another value: conflict with a (an applier: no "using").
        let d = diff("Deployment", &obj, &dep(4, "nginx"));
        let err = mf
            .apply(&b, applied_set("Deployment", &cfg), &d, false, "t3")
            .unwrap_err();
        assert_eq!(
            err.message(),
            "Apply failed with 1 conflict: conflict with \"a\": .spec.replicas"
        );
    }

    #[test]
    fn in_place_updates_match_decoded_ones() {
        let obj = dep(1, "x");
        let mut mf = ManagedFields::default();
        mf.update(
            &mgr("creator", Operation::Update, ""),
            &diff("Deployment", &json!({}), &obj),
            "t1",
        );
        mf.apply(
            &mgr("app", Operation::Apply, ""),
            applied_set("Deployment", &json!({"metadata": {"labels": {"a": "b"}}})),
            &Diff::default(),
            false,
            "t0",
        )
        .unwrap();
        let steps = [
            (
                mgr("scaler", Operation::Update, "scale"),
                dep(1, "x"),
                dep(4, "x"),
            ),
            (
                mgr("creator", Operation::Update, ""),
                dep(4, "x"),
                dep(4, "y"),
            ),
            (
                mgr("scaler", Operation::Update, "scale"),
                dep(4, "y"),
                dep(2, "y"),
            ),
        ];
        for (m, before, after) in steps {
            let d = diff("Deployment", &before, &after);
            let mut enc = mf.encode().unwrap().as_array().unwrap().clone();
            update_encoded(&mut enc, &m, &d, "t9").unwrap();
            mf.update(&m, &d, "t9");
            assert_eq!(Value::Array(enc), mf.encode().unwrap());
        }
        assert_eq!(mf.entries().len(), 3);
    }

    #[test]
    fn several_conflicts_are_grouped_by_manager() {
        let c = |m: &str, f: &str| Conflict {
            manager: mgr(m, Operation::Update, ""),
            field: f.into(),
        };
        let msg = Conflicts(vec![c("z", ".a"), c("y", ".b"), c("z", ".c")]).message();
        assert_eq!(
            msg,
            "Apply failed with 3 conflicts: conflicts with \"y\" using apps/v1:\n- .b\nconflicts with \"z\" using apps/v1:\n- .a\n- .c"
        );
    }

    #[test]
    fn encode_and_decode_round_trip_in_kubernetes_order() {
        let mut mf = ManagedFields::default();
        let obj = dep(1, "x");
        mf.update(
            &mgr("kubectl-create", Operation::Update, ""),
            &diff("Deployment", &json!({}), &obj),
            "2025-01-01T00:00:05Z",
        );
        mf.apply(
            &mgr("kubectl", Operation::Apply, ""),
            applied_set("Deployment", &json!({"metadata": {"labels": {"a": "b"}}})),
            &Diff::default(),
            false,
            "2025-01-01T00:00:09Z",
        )
        .unwrap();
        let enc = mf.encode().unwrap();
        assert_eq!(enc[0]["operation"], "Apply");
        assert_eq!(enc[1]["manager"], "kubectl-create");
        assert_eq!(enc[1]["fieldsType"], "FieldsV1");
        assert!(enc[1].get("subresource").is_none());
        let back = ManagedFields::decode(Some(&enc)).unwrap();
        assert_eq!(back.encode().unwrap(), enc);
        assert!(ManagedFields::decode(Some(&json!([{}]))).is_err());
        assert!(ManagedFields::decode(Some(&json!({}))).is_err());
        assert!(ManagedFields::decode(None).unwrap().is_empty());
    }

    #[test]
    fn updates_move_ownership_and_drop_empty_entries() {
        let one = mgr("one", Operation::Update, "");
        let two = mgr("two", Operation::Update, "");
        let mut mf = ManagedFields::default();
        let a = json!({"metadata": {"labels": {"x": "1"}}});
        let b = json!({"metadata": {"labels": {"x": "2"}}});
        mf.update(&one, &diff("Pod", &json!({}), &a), "t1");
        mf.update(&two, &diff("Pod", &a, &b), "t2");
        // one keeps the labels map itself, two owns the value.
        assert_eq!(
            mf.fields_of(&one).unwrap().to_json(),
            json!({"f:metadata": {"f:labels": {}}})
        );
        assert_eq!(
            mf.fields_of(&two).unwrap().to_json(),
            json!({"f:metadata": {"f:labels": {"f:x": {}}}})
        );
        // The in-place form gives the same result.
        let mut enc = mf.encode().unwrap().as_array().unwrap().clone();
        let d = diff("Pod", &b, &json!({}));
        update_encoded(&mut enc, &two, &d, "t3").unwrap();
        assert!(enc.is_empty(), "{enc:?}");
        mf.update(&two, &d, "t3");
        assert!(mf.is_empty(), "{:?}", mf.encode());
        // Nothing changed: nothing recorded.
        mf.update(&one, &Diff::default(), "t4");
        assert!(mf.is_empty());
    }
}
