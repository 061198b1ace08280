//! The three PATCH formats the API server accepts: RFC 6902 JSON patch, RFC 7386 merge patch and
//! Kubernetes' strategic merge patch (k8s.io/apimachinery/pkg/util/strategicpatch, apply side).
//!
//! Strategic merge patch needs to know, per field, whether a list is merged (and by which key)
//! or replaced. Kubernetes reads that from Go struct tags; here it is a small table of
//! (schema type, field) → strategy, plus the type of the field's value so the walk can follow
//! `spec.template.spec.containers[*].env` and friends. Anything not in the table behaves like a
//! merge patch: maps are merged, lists replaced.

use serde_json::{Map, Value};

/// Why a patch could not be applied. [`PatchError::status_code`] suggests the HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("the patch is not valid JSON: {0}")]
    InvalidJson(#[source] serde_json::Error),
    #[error("invalid JSON patch document: {0}")]
    InvalidJsonPatch(#[source] serde_json::Error),
    #[error(transparent)]
    JsonPatch(#[from] crate::jsonpatch::JsonPatchError),
    #[error("{what} must be a JSON object")]
    NotAnObject { what: &'static str },
    #[error("invalid strategic merge patch at {path}: {reason}")]
    Strategic { path: String, reason: String },
}

impl PatchError {
    /// 400 when the patch document itself can't be decoded, 422 when it is well-formed but
    /// can't be applied to this object (mirrors the Kubernetes API server).
    pub fn status_code(&self) -> u16 {
        match self {
            PatchError::InvalidJson(_)
            | PatchError::InvalidJsonPatch(_)
            | PatchError::NotAnObject { .. } => 400,
            PatchError::JsonPatch(e) => e.status_code(),
            PatchError::Strategic { .. } => 422,
        }
    }
}

/// The PATCH content types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    StrategicMerge,
    /// Server-side apply: not a patch of the current object but a configuration merged with
    /// field ownership (see [`crate::fields`] and [`crate::managed`]).
    Apply,
}

impl PatchType {
    /// Maps a `Content-Type` header (parameters such as `; charset=utf-8` are ignored).
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        let media = ct
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match media.as_str() {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::StrategicMerge),
            "application/apply-patch+yaml" => Some(PatchType::Apply),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            PatchType::Json => "application/json-patch+json",
            PatchType::Merge => "application/merge-patch+json",
            PatchType::StrategicMerge => "application/strategic-merge-patch+json",
            PatchType::Apply => "application/apply-patch+yaml",
        }
    }
}

/// RFC 6902, bounded as Kubernetes bounds it (see [`crate::jsonpatch`]). The operations apply
/// atomically: on error the target is left as it was.
pub fn json_patch(target: &Value, patch: &[u8]) -> Result<Value, PatchError> {
    let raw: Value = serde_json::from_slice(patch).map_err(PatchError::InvalidJson)?;
    let ops: json_patch::Patch =
        serde_json::from_value(raw).map_err(PatchError::InvalidJsonPatch)?;
    Ok(crate::jsonpatch::apply(target, &ops)?)
}

/// RFC 7386. Only object patches are accepted: a Kubernetes object can't be replaced by a
/// scalar or a list.
pub fn merge_patch(target: &Value, patch: &[u8]) -> Result<Value, PatchError> {
    let patch: Value = serde_json::from_slice(patch).map_err(PatchError::InvalidJson)?;
    if !patch.is_object() {
        return Err(PatchError::NotAnObject {
            what: "a merge patch",
        });
    }
    let mut doc = target.clone();
    json_patch::merge(&mut doc, &patch);
    Ok(doc)
}

/// Whether [`strategic_merge_patch`] knows the list strategies of `kind`. Other kinds are still
/// patched (metadata is known for every kind; the rest merges like a merge patch), but a server
/// may prefer to answer 415 for them, as Kubernetes does for custom resources.
pub fn supports_strategic_merge(kind: &str) -> bool {
    Ty::for_kind(kind) != Ty::MetaOnly
        || matches!(kind, "Endpoints" | "EndpointSlice" | "Lease" | "Event")
}

/// Kubernetes strategic merge patch for the built-in kinds we serve: Pod, Service, Deployment,
/// ReplicaSet, Node, Namespace, Endpoints, EndpointSlice, Lease, Event.
///
/// Supports the directives kubectl sends: `$patch: replace|delete|merge`, `$retainKeys`,
/// `$setElementOrder/<field>`, `$deleteFromPrimitiveList/<field>`, and `null` to delete a key.
/// Values the target doesn't have yet are stripped of directives and nulls before insertion.
pub fn strategic_merge_patch(
    kind: &str,
    target: &Value,
    patch: &[u8],
) -> Result<Value, PatchError> {
    let patch: Value = serde_json::from_slice(patch).map_err(PatchError::InvalidJson)?;
    let Value::Object(patch) = patch else {
        return Err(PatchError::NotAnObject {
            what: "a strategic merge patch",
        });
    };
    let Value::Object(original) = target.clone() else {
        return Err(PatchError::NotAnObject {
            what: "the patched object",
        });
    };
    match merge_map(original, patch, Ty::for_kind(kind), "")? {
        Some(merged) => Ok(Value::Object(merged)),
        None => Err(smp_err(
            "",
            "'$patch: delete' cannot delete the whole object",
        )),
    }
}

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder";
const DELETE_PRIMITIVE: &str = "$deleteFromPrimitiveList";

/// Schema types reachable from the kinds we serve. Only types with merge lists (or leading to
/// them) are named; everything else is `Any`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    Any,
    /// Kinds whose only strategic fields are in metadata.
    MetaOnly,
    ObjectMeta,
    Pod,
    PodSpec,
    PodStatus,
    Container,
    PodTemplateSpec,
    /// Deployment, ReplicaSet and DaemonSet: `spec.template` is a PodTemplateSpec.
    Workload,
    WorkloadSpec,
    WorkloadStatus,
    Service,
    ServiceSpec,
    ServiceStatus,
    Node,
    NodeSpec,
    NodeStatus,
    Namespace,
    NamespaceStatus,
}

impl Ty {
    pub(crate) fn for_kind(kind: &str) -> Ty {
        match kind {
            "Pod" => Ty::Pod,
            "Deployment" | "ReplicaSet" | "DaemonSet" => Ty::Workload,
            "Service" => Ty::Service,
            "Node" => Ty::Node,
            "Namespace" => Ty::Namespace,
            _ => Ty::MetaOnly,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strategy {
    /// Maps merge, lists are replaced.
    Default,
    /// `patchStrategy:"merge"`: lists of objects merge by the key, lists of scalars are unioned.
    Merge(Option<&'static str>),
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    pub(crate) strategy: Strategy,
    pub(crate) ty: Ty,
}

const fn to(ty: Ty) -> Field {
    Field {
        strategy: Strategy::Default,
        ty,
    }
}

const fn merge_by(key: &'static str, ty: Ty) -> Field {
    Field {
        strategy: Strategy::Merge(Some(key)),
        ty,
    }
}

const UNION: Field = Field {
    strategy: Strategy::Merge(None),
    ty: Ty::Any,
};
const ANY: Field = to(Ty::Any);

/// Patch strategies from the `patchStrategy`/`patchMergeKey` tags of k8s.io/api (v1.33) and
/// metav1.ObjectMeta, for the fields reachable from the kinds above.
const FIELDS: &[(Ty, &str, Field)] = &[
    (Ty::MetaOnly, "metadata", to(Ty::ObjectMeta)),
    (Ty::ObjectMeta, "finalizers", UNION),
    (Ty::ObjectMeta, "ownerReferences", merge_by("uid", Ty::Any)),
    (Ty::Pod, "metadata", to(Ty::ObjectMeta)),
    (Ty::Pod, "spec", to(Ty::PodSpec)),
    (Ty::Pod, "status", to(Ty::PodStatus)),
    (Ty::PodTemplateSpec, "metadata", to(Ty::ObjectMeta)),
    (Ty::PodTemplateSpec, "spec", to(Ty::PodSpec)),
    (Ty::PodSpec, "containers", merge_by("name", Ty::Container)),
    (
        Ty::PodSpec,
        "initContainers",
        merge_by("name", Ty::Container),
    ),
    (
        Ty::PodSpec,
        "ephemeralContainers",
        merge_by("name", Ty::Container),
    ),
    (Ty::PodSpec, "volumes", merge_by("name", Ty::Any)),
    (Ty::PodSpec, "imagePullSecrets", merge_by("name", Ty::Any)),
    (Ty::PodSpec, "hostAliases", merge_by("ip", Ty::Any)),
    (
        Ty::PodSpec,
        "topologySpreadConstraints",
        merge_by("topologyKey", Ty::Any),
    ),
    (Ty::PodSpec, "schedulingGates", merge_by("name", Ty::Any)),
    (Ty::PodSpec, "resourceClaims", merge_by("name", Ty::Any)),
    // tolerations, readinessGates: no strategy (atomic).
    (Ty::Container, "ports", merge_by("containerPort", Ty::Any)),
    (Ty::Container, "env", merge_by("name", Ty::Any)),
    (
        Ty::Container,
        "volumeMounts",
        merge_by("mountPath", Ty::Any),
    ),
    (
        Ty::Container,
        "volumeDevices",
        merge_by("devicePath", Ty::Any),
    ),
    (Ty::PodStatus, "conditions", merge_by("type", Ty::Any)),
    (Ty::PodStatus, "podIPs", merge_by("ip", Ty::Any)),
    (Ty::PodStatus, "hostIPs", merge_by("ip", Ty::Any)),
    (
        Ty::PodStatus,
        "resourceClaimStatuses",
        merge_by("name", Ty::Any),
    ),
    (Ty::Workload, "metadata", to(Ty::ObjectMeta)),
    (Ty::Workload, "spec", to(Ty::WorkloadSpec)),
    (Ty::Workload, "status", to(Ty::WorkloadStatus)),
    (Ty::WorkloadSpec, "template", to(Ty::PodTemplateSpec)),
    (Ty::WorkloadStatus, "conditions", merge_by("type", Ty::Any)),
    (Ty::Service, "metadata", to(Ty::ObjectMeta)),
    (Ty::Service, "spec", to(Ty::ServiceSpec)),
    (Ty::Service, "status", to(Ty::ServiceStatus)),
    (Ty::ServiceSpec, "ports", merge_by("port", Ty::Any)),
    (Ty::ServiceStatus, "conditions", merge_by("type", Ty::Any)),
    (Ty::Node, "metadata", to(Ty::ObjectMeta)),
    (Ty::Node, "spec", to(Ty::NodeSpec)),
    (Ty::Node, "status", to(Ty::NodeStatus)),
    // taints: no strategy (atomic).
    (Ty::NodeSpec, "podCIDRs", UNION),
    (Ty::NodeStatus, "conditions", merge_by("type", Ty::Any)),
    (Ty::NodeStatus, "addresses", merge_by("type", Ty::Any)),
    (Ty::Namespace, "metadata", to(Ty::ObjectMeta)),
    (Ty::Namespace, "status", to(Ty::NamespaceStatus)),
    (Ty::NamespaceStatus, "conditions", merge_by("type", Ty::Any)),
];

pub(crate) fn field(ty: Ty, name: &str) -> Field {
    FIELDS
        .iter()
        .find(|(t, n, _)| *t == ty && *n == name)
        .map_or(ANY, |(_, _, f)| *f)
}

fn smp_err(path: &str, reason: impl Into<String>) -> PatchError {
    let path = if path.is_empty() {
        "the top level".to_string()
    } else {
        path.to_string()
    };
    PatchError::Strategic {
        path,
        reason: reason.into(),
    }
}

fn child_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Strips `prefix` + `/` from a parallel-list directive key, e.g. `$setElementOrder/env`.
fn directive_target<'a>(key: &'a str, prefix: &str, path: &str) -> Result<&'a str, PatchError> {
    key.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('/'))
        .filter(|target| !target.is_empty())
        .ok_or_else(|| {
            smp_err(
                path,
                format!("invalid directive key {key:?}; expected {prefix}/<field>"),
            )
        })
}

/// Merges `patch` into `original`. `None` means the map is deleted (`$patch: delete`).
fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    ty: Ty,
    path: &str,
) -> Result<Option<Map<String, Value>>, PatchError> {
    if let Some(directive) = patch.remove(DIRECTIVE) {
        match directive.as_str() {
            // Still go through the merge so nested directives and nulls are dropped.
            Some("replace") => return merge_map(Map::new(), patch, ty, path),
            Some("delete") => return Ok(None),
            Some("merge") => {}
            _ => {
                return Err(smp_err(
                    path,
                    format!(
                        "unknown $patch directive {directive}; expected replace, delete or merge"
                    ),
                ));
            }
        }
    }
    apply_retain_keys(&mut original, &mut patch, path)?;
    apply_set_element_order(&mut original, &mut patch, ty, path)?;

    // Deletions from primitive lists first, so they only ever remove what the object had.
    let (deletions, rest): (Vec<_>, Vec<_>) = patch
        .into_iter()
        .partition(|(k, _)| k.starts_with(DELETE_PRIMITIVE));
    for (key, value) in deletions {
        let target = directive_target(&key, DELETE_PRIMITIVE, path)?;
        let Value::Array(doomed) = value else {
            return Err(smp_err(path, format!("{key} must be a list")));
        };
        if let Some(Value::Array(list)) = original.get_mut(target) {
            list.retain(|v| !doomed.contains(v));
        }
    }

    for (key, value) in rest {
        let f = field(ty, &key);
        let path = child_path(path, &key);
        if value.is_null() {
            original.remove(&key);
            continue;
        }
        match original.get_mut(&key) {
            None => {
                if let Some(v) = materialize(value, f, &path)? {
                    original.insert(key, v);
                }
            }
            Some(slot) => match merge_value(slot.take(), value, f, &path)? {
                Some(v) => *slot = v,
                None => {
                    original.remove(&key);
                }
            },
        }
    }
    Ok(Some(original))
}

/// Merges a non-null patch value into an existing value of field `f`; `None` removes the field.
fn merge_value(
    current: Value,
    patch: Value,
    f: Field,
    path: &str,
) -> Result<Option<Value>, PatchError> {
    match (current, patch) {
        // `$patch: delete` on an existing map leaves it empty, as in Kubernetes.
        (Value::Object(cur), Value::Object(p)) => Ok(Some(Value::Object(
            merge_map(cur, p, f.ty, path)?.unwrap_or_default(),
        ))),
        (Value::Array(cur), Value::Array(p)) => match f.strategy {
            Strategy::Merge(key) => Ok(Some(Value::Array(merge_list(cur, p, key, f.ty, path)?))),
            Strategy::Default => Ok(Some(Value::Array(replace_list(p, f.ty, path)?))),
        },
        // Scalars, or a change of type: the patch value wins.
        (_, p) => materialize(p, f, path),
    }
}

/// A patch value for a field the object doesn't have (or has with another type): directives
/// are applied against nothing and nulls dropped, so neither ends up stored.
fn materialize(value: Value, f: Field, path: &str) -> Result<Option<Value>, PatchError> {
    match value {
        Value::Null => Ok(None),
        Value::Object(m) => Ok(merge_map(Map::new(), m, f.ty, path)?.map(Value::Object)),
        Value::Array(items) => match f.strategy {
            Strategy::Merge(key) => Ok(Some(Value::Array(merge_list(
                Vec::new(),
                items,
                key,
                f.ty,
                path,
            )?))),
            Strategy::Default => Ok(Some(Value::Array(replace_list(items, f.ty, path)?))),
        },
        scalar => Ok(Some(scalar)),
    }
}

/// A list without merge strategy: the patch list as sent, minus directive elements, with
/// nulls and directives inside its objects resolved.
fn replace_list(items: Vec<Value>, elem: Ty, path: &str) -> Result<Vec<Value>, PatchError> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::Object(m) if m.contains_key(DIRECTIVE) => {}
            Value::Object(m) => {
                if let Some(m) = merge_map(Map::new(), m, elem, path)? {
                    out.push(Value::Object(m));
                }
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    path: &str,
) -> Result<(), PatchError> {
    let Some(list) = patch.remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(list) = list else {
        return Err(smp_err(path, "$retainKeys must be a list of field names"));
    };
    let keep: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
    // Every field the patch sets must be retained, or the patch contradicts itself.
    for (k, v) in patch.iter() {
        let directive = k.starts_with(DELETE_PRIMITIVE) || k.starts_with(SET_ORDER);
        if !v.is_null() && !directive && !keep.contains(&k.as_str()) {
            return Err(smp_err(
                path,
                format!("the patch sets {k:?}, which is not in its $retainKeys list"),
            ));
        }
    }
    original.retain(|k, _| keep.contains(&k.as_str()));
    Ok(())
}

/// `$setElementOrder/<field>`: merges the field's patch list (if any) and orders the result as
/// the directive says, keeping server-only elements near their old neighbours.
fn apply_set_element_order(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    ty: Ty,
    path: &str,
) -> Result<(), PatchError> {
    let directive_keys: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ORDER))
        .cloned()
        .collect();
    for dkey in directive_keys {
        let order = patch.remove(&dkey).unwrap_or(Value::Null);
        let key = directive_target(&dkey, SET_ORDER, path)?;
        let Value::Array(order) = order else {
            return Err(smp_err(path, format!("{dkey} must be a list")));
        };
        let f = field(ty, key);
        // For a list without merge strategy the order is the one sent; nothing to do.
        let Strategy::Merge(merge_key) = f.strategy else {
            continue;
        };
        let list_path = child_path(path, key);
        let patch_list = match patch.remove(key) {
            None => None,
            Some(Value::Array(items)) => Some(items),
            Some(_) => {
                return Err(smp_err(
                    &list_path,
                    format!("must be a list to go with {dkey}"),
                ));
            }
        };
        let original_list = match original.get_mut(key) {
            Some(Value::Array(items)) => Some(std::mem::take(items)),
            _ => None,
        };
        let id_key = identity_key(merge_key, [&order, patch_list.as_deref().unwrap_or(&[])]);
        if let Some(items) = &patch_list {
            validate_order(items, &order, id_key, &list_path)?;
        }
        let server_order = identities(original_list.as_deref().unwrap_or(&[]), id_key, &list_path)?;
        let merged = match (original_list, patch_list) {
            (None, None) => continue,
            (Some(items), None) => items,
            (items, Some(p)) => {
                merge_list(items.unwrap_or_default(), p, merge_key, f.ty, &list_path)?
            }
        };
        let order_ids = identities(&order, id_key, &list_path)?;
        let ordered = normalize_order(merged, &order_ids, &server_order, id_key);
        original.insert(key.to_string(), Value::Array(ordered));
    }
    Ok(())
}

/// The merge key to identify elements by: none for lists of scalars.
fn identity_key<'a>(merge_key: Option<&'a str>, lists: [&[Value]; 2]) -> Option<&'a str> {
    let objects = lists.iter().flat_map(|l| l.iter()).any(Value::is_object);
    if objects { merge_key } else { None }
}

/// What identifies a list element: its merge-key value, or the scalar itself.
fn identity<'a>(item: &'a Value, key: Option<&str>) -> Option<&'a Value> {
    match key {
        Some(k) => item.as_object().and_then(|m| m.get(k)),
        None => Some(item),
    }
}

fn identities(items: &[Value], key: Option<&str>, path: &str) -> Result<Vec<Value>, PatchError> {
    items
        .iter()
        .map(|item| {
            identity(item, key)
                .cloned()
                .ok_or_else(|| missing_merge_key(item, key, path))
        })
        .collect()
}

fn missing_merge_key(item: &Value, key: Option<&str>, path: &str) -> PatchError {
    smp_err(
        path,
        format!(
            "{item} does not contain declared merge key {:?}",
            key.unwrap_or("")
        ),
    )
}

/// The patch list must list its (non-deleted) elements in the relative order of
/// `$setElementOrder`, and only elements named there.
fn validate_order(
    items: &[Value],
    order: &[Value],
    key: Option<&str>,
    path: &str,
) -> Result<(), PatchError> {
    let plain: Vec<&Value> = items
        .iter()
        .filter(|v| v.as_object().is_none_or(|m| !m.contains_key(DIRECTIVE)))
        .collect();
    let mut next = 0;
    for item in &plain {
        let id = identity(item, key).ok_or_else(|| missing_merge_key(item, key, path))?;
        let found = order[next..]
            .iter()
            .position(|o| identity(o, key) == Some(id));
        match found {
            Some(offset) => next += offset + 1,
            None => {
                return Err(smp_err(
                    path,
                    format!(
                        "the order of the patch list doesn't match its $setElementOrder list (at {id})"
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ElemKind {
    Object,
    Scalar,
}

fn element_kind(lists: [&[Value]; 2], path: &str) -> Result<Option<ElemKind>, PatchError> {
    let mut kind = None;
    for item in lists.iter().flat_map(|l| l.iter()) {
        let k = match item {
            Value::Array(_) => return Err(smp_err(path, "lists of lists are not supported")),
            Value::Object(_) => ElemKind::Object,
            _ => ElemKind::Scalar,
        };
        match kind {
            None => kind = Some(k),
            Some(prev) if prev != k => {
                return Err(smp_err(
                    path,
                    "list elements must all be objects or all be scalars",
                ));
            }
            Some(_) => {}
        }
    }
    Ok(kind)
}

/// A list with `patchStrategy:"merge"`.
fn merge_list(
    original: Vec<Value>,
    patch: Vec<Value>,
    merge_key: Option<&str>,
    elem: Ty,
    path: &str,
) -> Result<Vec<Value>, PatchError> {
    match element_kind([&original, &patch], path)? {
        None => Ok(original),
        Some(ElemKind::Scalar) => {
            // Union, keeping the first occurrence.
            let server_order = original.clone();
            let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
            for v in original.into_iter().chain(patch.iter().cloned()) {
                if !merged.contains(&v) {
                    merged.push(v);
                }
            }
            Ok(normalize_order(merged, &patch, &server_order, None))
        }
        Some(ElemKind::Object) => {
            let Some(key) = merge_key else {
                return Err(smp_err(
                    path,
                    "cannot merge a list of objects without a merge key",
                ));
            };
            merge_object_list(original, patch, key, elem, path)
        }
    }
}

fn merge_object_list(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    key: &str,
    elem: Ty,
    path: &str,
) -> Result<Vec<Value>, PatchError> {
    let mut plain = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch {
        let Value::Object(item) = item else {
            return Err(smp_err(path, "list elements must all be objects"));
        };
        let Some(directive) = item.get(DIRECTIVE) else {
            plain.push(item);
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let Some(id) = item.get(key) else {
                    return Err(missing_merge_key(&Value::Object(item), Some(key), path));
                };
                original.retain(|o| identity(o, Some(key)) != Some(id));
            }
            Some("replace") => replace = true,
            Some("merge") => {
                return Err(smp_err(
                    path,
                    "merging lists cannot yet be specified in the patch",
                ));
            }
            _ => {
                return Err(smp_err(
                    path,
                    format!("unknown $patch directive {directive}; expected replace or delete"),
                ));
            }
        }
    }
    if replace {
        // `{"$patch": "replace"}` as an element: the rest of the patch list is the new list.
        original = Vec::with_capacity(plain.len());
        for item in plain {
            if let Some(m) = merge_map(Map::new(), item, elem, path)? {
                original.push(Value::Object(m));
            }
        }
        return Ok(original);
    }

    let server_order: Vec<Value> = original
        .iter()
        .filter_map(|o| identity(o, Some(key)).cloned())
        .collect();
    let mut patch_order = Vec::with_capacity(plain.len());
    for item in plain {
        let Some(id) = item.get(key).cloned() else {
            return Err(missing_merge_key(&Value::Object(item), Some(key), path));
        };
        let item_path = format!("{path}[{key}={id}]");
        match original
            .iter()
            .position(|o| identity(o, Some(key)) == Some(&id))
        {
            Some(pos) => {
                let Value::Object(current) = original[pos].take() else {
                    return Err(smp_err(path, "list elements must all be objects"));
                };
                match merge_map(current, item, elem, &item_path)? {
                    Some(m) => original[pos] = Value::Object(m),
                    None => {
                        original.remove(pos);
                    }
                }
            }
            None => {
                if let Some(m) = merge_map(Map::new(), item, elem, &item_path)? {
                    original.push(Value::Object(m));
                }
            }
        }
        patch_order.push(id);
    }
    Ok(normalize_order(
        original,
        &patch_order,
        &server_order,
        Some(key),
    ))
}

/// Orders a merged list the way Kubernetes does: elements named by the patch (or
/// `$setElementOrder`) in that order, server-only elements in their old order, the two
/// interleaved so server-only elements stay before the patch elements that followed them.
fn normalize_order(
    items: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    let index_in = |list: &[Value], item: &Value| {
        identity(item, key).and_then(|id| list.iter().position(|x| x == id))
    };
    let (mut from_patch, mut server_only): (Vec<Value>, Vec<Value>) = items
        .into_iter()
        .partition(|item| index_in(patch_order, item).is_some());
    from_patch.sort_by_key(|item| index_in(patch_order, item).unwrap_or(usize::MAX));
    server_only.sort_by_key(|item| index_in(server_order, item).unwrap_or(usize::MAX));

    let mut out = Vec::with_capacity(from_patch.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = from_patch.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!(
                (index_in(server_order, l), index_in(server_order, r)),
                (Some(li), Some(ri)) if li < ri
            ),
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[expect(
        clippy::needless_pass_by_value,
        reason = "callers write the patch inline as a json! literal"
    )]
    fn smp(kind: &str, target: &Value, patch: Value) -> Value {
        let bytes = serde_json::to_vec(&patch).expect("serialize");
        strategic_merge_patch(kind, target, &bytes).unwrap_or_else(|e| panic!("{e}"))
    }

    #[expect(
        clippy::needless_pass_by_value,
        reason = "callers write the patch inline as a json! literal"
    )]
    fn smp_err_of(kind: &str, target: &Value, patch: Value) -> PatchError {
        let bytes = serde_json::to_vec(&patch).expect("serialize");
        let before = target.clone();
        let err = strategic_merge_patch(kind, target, &bytes).expect_err("should fail");
        assert_eq!(target, &before);
        err
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"},
                         "finalizers": ["a", "b"]},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {"name": "web", "image": "nginx:1.25",
                             "ports": [{"containerPort": 80, "protocol": "TCP"},
                                       {"containerPort": 443, "protocol": "TCP"}],
                             "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                             "terminationMessagePath": "/dev/termination-log"},
                            {"name": "sidecar", "image": "busybox"}
                        ],
                        "tolerations": [{"key": "x", "operator": "Exists"}]
                    }
                }
            },
            "status": {"conditions": [{"type": "Available", "status": "True"},
                                      {"type": "Progressing", "status": "True"}]}
        })
    }

    fn containers(v: &Value) -> &Vec<Value> {
        v["spec"]["template"]["spec"]["containers"]
            .as_array()
            .expect("containers")
    }

    #[test]
    fn content_types() {
        assert_eq!(
            PatchType::from_content_type("application/json-patch+json"),
            Some(PatchType::Json)
        );
        assert_eq!(
            PatchType::from_content_type("application/merge-patch+json; charset=utf-8"),
            Some(PatchType::Merge)
        );
        assert_eq!(
            PatchType::from_content_type(" Application/Strategic-Merge-Patch+JSON "),
            Some(PatchType::StrategicMerge)
        );
        assert_eq!(
            PatchType::from_content_type("application/apply-patch+yaml"),
            Some(PatchType::Apply)
        );
        assert_eq!(PatchType::from_content_type("application/json"), None);
        for t in [
            PatchType::Json,
            PatchType::Merge,
            PatchType::StrategicMerge,
            PatchType::Apply,
        ] {
            assert_eq!(PatchType::from_content_type(t.content_type()), Some(t));
        }
    }

    #[test]
    fn json_patch_applies_ops() {
        let target = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 1}});
        let patch = br#"[
            {"op": "test", "path": "/spec/replicas", "value": 1},
            {"op": "replace", "path": "/spec/replicas", "value": 3},
            {"op": "add", "path": "/metadata/labels/b", "value": "2"},
            {"op": "remove", "path": "/metadata/labels/a"}
        ]"#;
        let out = json_patch(&target, patch).expect("applies");
        assert_eq!(
            out,
            json!({"metadata": {"labels": {"b": "2"}}, "spec": {"replicas": 3}})
        );
    }

    #[test]
    fn json_patch_errors_leave_target_unchanged() {
        let target = json!({"spec": {"replicas": 1}});
        let before = target.clone();
        let cases: [(&[u8], u16); 5] = [
            (b"not json", 400),
            (br#"{"op": "add"}"#, 400),
            (br#"[{"op": "frobnicate", "path": "/a"}]"#, 400),
            (
                br#"[{"op": "replace", "path": "/spec/nope/x", "value": 1}]"#,
                422,
            ),
            (
                br#"[{"op": "replace", "path": "/spec/replicas", "value": 2},
                    {"op": "test", "path": "/spec/replicas", "value": 5}]"#,
                422,
            ),
        ];
        for (patch, status) in cases {
            let err = json_patch(&target, patch).expect_err("should fail");
            assert_eq!(err.status_code(), status, "{err}");
            assert_eq!(target, before);
        }
        let err = json_patch(&target, br#"[{"op": "add", "path": "spec", "value": 1}]"#)
            .expect_err("pointer without leading slash");
        assert!(matches!(err, PatchError::InvalidJsonPatch(_)), "{err}");
    }

    #[test]
    fn merge_patch_rfc7386() {
        let target = json!({"a": "b", "c": {"d": "e", "f": "g"}, "list": [1, 2]});
        let out =
            merge_patch(&target, br#"{"a": "z", "c": {"f": null}, "list": [3]}"#).expect("applies");
        assert_eq!(out, json!({"a": "z", "c": {"d": "e"}, "list": [3]}));
        assert!(matches!(
            merge_patch(&target, b"[1]"),
            Err(PatchError::NotAnObject { .. })
        ));
        assert!(matches!(
            merge_patch(&target, b"{"),
            Err(PatchError::InvalidJson(_))
        ));
    }

    #[test]
    fn set_image_merges_containers_by_name() {
        // What `kubectl set image deployment/web web=nginx:1.27` sends.
        let out = smp(
            "Deployment",
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}}),
        );
        let cs = containers(&out);
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0]["image"], "nginx:1.27");
        assert_eq!(cs[0]["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(cs[0]["env"].as_array().map(Vec::len), Some(2));
        assert_eq!(cs[1], json!({"name": "sidecar", "image": "busybox"}));
    }

    #[test]
    fn new_container_is_appended() {
        let out = smp(
            "Deployment",
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "log", "image": "fluent", "args": null}]}}}}),
        );
        // Without `$setElementOrder`, Kubernetes puts elements the server hasn't seen before the
        // server-only ones (patch order wins where the server order can't compare).
        let names: Vec<&str> = containers(&out)
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(names, ["log", "web", "sidecar"]);
        assert_eq!(
            containers(&out)[0],
            json!({"name": "log", "image": "fluent"})
        );
    }

    #[test]
    fn ports_merge_by_container_port() {
        let out = smp(
            "Deployment",
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "ports": [
                {"containerPort": 443, "name": "https"},
                {"containerPort": 8080}
            ]}]}}}}),
        );
        assert_eq!(
            containers(&out)[0]["ports"],
            json!([{"containerPort": 80, "protocol": "TCP"},
                   {"containerPort": 443, "protocol": "TCP", "name": "https"},
                   {"containerPort": 8080}])
        );
    }

    #[test]
    fn env_merges_by_name() {
        let out = smp(
            "Deployment",
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "env": [
                {"name": "B", "value": "two"}, {"name": "C", "value": "3"}
            ]}]}}}}),
        );
        assert_eq!(
            containers(&out)[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "two"}, {"name": "C", "value": "3"}])
        );
    }

    #[test]
    fn service_ports_merge_by_port() {
        let svc = json!({"kind": "Service", "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [
                {"port": 80, "targetPort": 8080, "protocol": "TCP"},
                {"port": 443, "targetPort": 8443, "protocol": "TCP"}]}});
        let out = smp(
            "Service",
            &svc,
            json!({"spec": {"ports": [
            {"port": 80, "targetPort": 9090}, {"port": 53, "protocol": "UDP"}]}}),
        );
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 80, "targetPort": 9090, "protocol": "TCP"},
                   {"port": 53, "protocol": "UDP"},
                   {"port": 443, "targetPort": 8443, "protocol": "TCP"}])
        );
        assert_eq!(out["spec"]["selector"], json!({"app": "web"}));
    }

    #[test]
    fn lists_without_strategy_are_replaced() {
        let out = smp(
            "Deployment",
            &deployment(),
            json!({"spec": {"template": {"spec": {"tolerations": [{"key": "y", "operator": "Exists", "value": null}],
                                                  "containers": [{"name": "web", "args": ["-v"]}]}}}}),
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["tolerations"],
            json!([{"key": "y", "operator": "Exists"}])
        );
        assert_eq!(containers(&out)[0]["args"], json!(["-v"]));
        // Unknown kinds: metadata is known, everything else merges like a merge patch.
        let obj = json!({"metadata": {"finalizers": ["a"]}, "data": {"list": [1, 2], "k": "v"}});
        let out = smp(
            "ConfigMap",
            &obj,
            json!({"metadata": {"finalizers": ["b"]}, "data": {"list": [3]}}),
        );
        assert_eq!(
            out,
            json!({"metadata": {"finalizers": ["b", "a"]}, "data": {"list": [3], "k": "v"}})
        );
        assert!(!supports_strategic_merge("ConfigMap"));
        assert!(supports_strategic_merge("Lease") && supports_strategic_merge("Pod"));
    }

    #[test]
    fn null_deletes_keys_labels_and_annotations() {
        // `kubectl label deploy web tier=fe app-` and `kubectl annotate ... note=x`.
        let out = smp(
            "Deployment",
            &deployment(),
            json!({"metadata": {"labels": {"tier": "fe", "app": null}, "annotations": {"note": "x"}}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({"tier": "fe"}));
        assert_eq!(out["metadata"]["annotations"], json!({"note": "x"}));
        // Deleting something that isn't there is a no-op, and nulls never get stored.
        let out = smp(
            "Deployment",
            &deployment(),
            json!({"spec": {"gone": {"$patch": "delete"}}}),
        );
        assert!(out["spec"].get("gone").is_none());
        let out = smp(
            "Deployment",
            &deployment(),
            json!({"spec": {"paused": null, "extra": {"a": null, "b": 1}}}),
        );
        assert!(out["spec"].get("paused").is_none());
        assert_eq!(out["spec"]["extra"], json!({"b": 1}));
    }

    #[test]
    fn scale_and_rollout_restart() {
        let out = smp(
            "Deployment",
            &deployment(),
            json!({"spec": {"replicas": 5}}),
        );
        assert_eq!(out["spec"]["replicas"], 5);
        let out = smp(
            "Deployment",
            &deployment(),
            json!({"spec": {"template": {"metadata": {"annotations": {
                "kubectl.kubernetes.io/restartedAt": "2025-01-01T00:00:00Z"}}}}}),
        );
        let meta = &out["spec"]["template"]["metadata"];
        assert_eq!(
            meta["annotations"]["kubectl.kubernetes.io/restartedAt"],
            "2025-01-01T00:00:00Z"
        );
        assert_eq!(meta["labels"], json!({"app": "web"}));
    }

    #[test]
    fn patch_delete_removes_list_element() {
        let out = smp(
            "Deployment",
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}}),
        );
        assert_eq!(containers(&out).len(), 1);
        assert_eq!(containers(&out)[0]["name"], "web");
        // A delete without the merge key is an error.
        let err = smp_err_of(
            "Deployment",
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [{"$patch": "delete"}]}}}}),
        );
        assert!(err.to_string().contains("merge key"), "{err}");
    }

    #[test]
    fn patch_delete_and_replace_on_maps() {
        let out = smp(
            "Deployment",
            &deployment(),
            json!({"spec": {"strategy": {"$patch": "delete"},
                            "template": {"metadata": {"labels": {"$patch": "replace", "v": "2", "gone": null}}}}}),
        );
        assert_eq!(out["spec"]["strategy"], json!({}));
        assert_eq!(
            out["spec"]["template"]["metadata"]["labels"],
            json!({"v": "2"})
        );
        // `$patch: merge` is the default behaviour.
        let out = smp(
            "Deployment",
            &deployment(),
            json!({"metadata": {"labels": {"$patch": "merge", "x": "y"}}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({"app": "web", "x": "y"}));
        // On a field the object doesn't have yet, the directive is resolved, not stored.
        let out = smp(
            "Deployment",
            &deployment(),
            json!({"metadata": {"annotations": {"$patch": "replace", "a": "b"}}}),
        );
        assert_eq!(out["metadata"]["annotations"], json!({"a": "b"}));
    }

    #[test]
    fn patch_replace_on_list() {
        let out = smp(
            "Deployment",
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [
                {"$patch": "replace"}, {"name": "only", "image": "x"}]}}}}),
        );
        assert_eq!(
            containers(&out),
            &vec![json!({"name": "only", "image": "x"})]
        );
    }

    #[test]
    fn primitive_lists_union_and_delete() {
        // Union; patch elements keep the patch's order, `b` (server-only) stays after `a`.
        let out = smp(
            "Deployment",
            &deployment(),
            json!({"metadata": {"finalizers": ["c", "a"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["c", "a", "b"]));
        let out = smp(
            "Deployment",
            &deployment(),
            json!({"metadata": {"finalizers": ["b"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b"]));
        let out = smp(
            "Deployment",
            &deployment(),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a", "zz"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
        // Deleting from a list the object doesn't have is a no-op.
        let node = json!({"kind": "Node", "metadata": {"name": "n"}, "spec": {}});
        let out = smp(
            "Node",
            &node,
            json!({"spec": {"$deleteFromPrimitiveList/podCIDRs": ["10.0.0.0/24"]}}),
        );
        assert_eq!(out["spec"], json!({}));
        let out = smp(
            "Node",
            &node,
            json!({"spec": {"podCIDRs": ["10.0.0.0/24"]}}),
        );
        assert_eq!(out["spec"]["podCIDRs"], json!(["10.0.0.0/24"]));
    }

    #[test]
    fn set_element_order_orders_merged_list() {
        // kubectl apply reordering env and adding one: patch carries only the new element.
        let out = smp(
            "Deployment",
            &deployment(),
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "web"}],
                "containers": [{"name": "web",
                    "$setElementOrder/env": [{"name": "C"}, {"name": "B"}, {"name": "A"}],
                    "env": [{"name": "C", "value": "3"}]}]}}}}),
        );
        let names: Vec<&str> = containers(&out)
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(names, ["sidecar", "web"]);
        let env: Vec<&str> = containers(&out)[1]["env"]
            .as_array()
            .expect("env")
            .iter()
            .filter_map(|e| e["name"].as_str())
            .collect();
        assert_eq!(env, ["C", "B", "A"]);
    }

    #[test]
    fn set_element_order_keeps_server_only_elements_in_place() {
        // `server` is not in the order list (added by someone else): it keeps its place
        // relative to the elements around it.
        let pod =
            json!({"spec": {"containers": [{"name": "a"}, {"name": "server"}, {"name": "b"}]}});
        let order = |names: &[&str]| {
            let order: Vec<Value> = names.iter().map(|n| json!({"name": n})).collect();
            let out = smp(
                "Pod",
                &pod,
                json!({"spec": {"$setElementOrder/containers": order}}),
            );
            out["spec"]["containers"]
                .as_array()
                .expect("list")
                .iter()
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect::<Vec<_>>()
        };
        assert_eq!(order(&["a", "b"]), ["a", "server", "b"]);
        assert_eq!(order(&["b", "a"]), ["server", "b", "a"]);
        // Upstream case: elements new to the server go first when the patch has no order.
        let list = json!({"spec": {"conditions": [{"type": "1"}, {"type": "2", "v": "b"}, {"type": "3"}]}});
        let out = smp(
            "Node",
            &json!({"status": list["spec"]}),
            json!({"status": {"conditions": [{"type": "3", "v": "c"}, {"type": "1", "v": "a"}]}}),
        );
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type": "2", "v": "b"}, {"type": "3", "v": "c"}, {"type": "1", "v": "a"}])
        );
        // Primitive list ordering with a parallel deletion list.
        let out = smp(
            "Deployment",
            &deployment(),
            json!({"metadata": {"$setElementOrder/finalizers": ["c", "b"], "finalizers": ["c"],
                                "$deleteFromPrimitiveList/finalizers": ["a"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["c", "b"]));
    }

    #[test]
    fn set_element_order_mismatch_is_an_error() {
        let err = smp_err_of(
            "Deployment",
            &deployment(),
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
                "containers": [{"name": "sidecar", "image": "x"}, {"name": "web", "image": "y"}]}}}}),
        );
        assert!(err.to_string().contains("$setElementOrder"), "{err}");
        let err = smp_err_of(
            "Deployment",
            &deployment(),
            json!({"metadata": {"$setElementOrder/finalizers": "x"}}),
        );
        assert!(err.to_string().contains("must be a list"), "{err}");
    }

    #[test]
    fn retain_keys_clears_other_fields() {
        // kubectl apply switching the strategy to Recreate.
        let out = smp(
            "Deployment",
            &deployment(),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}}}),
        );
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        let err = smp_err_of(
            "Deployment",
            &deployment(),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {"maxSurge": 2}}}}),
        );
        assert!(err.to_string().contains("$retainKeys"), "{err}");
        let err = smp_err_of(
            "Deployment",
            &deployment(),
            json!({"spec": {"strategy": {"$retainKeys": "type"}}}),
        );
        assert!(err.to_string().contains("spec.strategy"), "{err}");
    }

    #[test]
    fn retain_keys_inside_list_elements() {
        // kubectl apply switching a volume from emptyDir to configMap.
        let pod = json!({"spec": {"volumes": [
            {"name": "cfg", "emptyDir": {}},
            {"name": "data", "hostPath": {"path": "/d"}}]}});
        let out = smp(
            "Pod",
            &pod,
            json!({"spec": {"volumes": [{"name": "cfg", "$retainKeys": ["configMap", "name"],
                                         "configMap": {"name": "app"}}]}}),
        );
        assert_eq!(
            out["spec"]["volumes"],
            json!([{"name": "cfg", "configMap": {"name": "app"}},
                   {"name": "data", "hostPath": {"path": "/d"}}])
        );
    }

    #[test]
    fn status_conditions_merge_by_type() {
        let pod = json!({"kind": "Pod", "status": {"phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False"}],
            "podIPs": [{"ip": "10.0.0.1"}]}});
        let out = smp(
            "Pod",
            &pod,
            json!({"status": {"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "Initialized", "status": "True"}]}}),
        );
        assert_eq!(out["status"]["phase"], "Running");
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"},
                   {"type": "Initialized", "status": "True"}])
        );
        assert_eq!(out["status"]["podIPs"], json!([{"ip": "10.0.0.1"}]));
        let node = json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.5"},
                                                   {"type": "Hostname", "address": "n1"}]}});
        let out = smp(
            "Node",
            &node,
            json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.6"}]}}),
        );
        assert_eq!(out["status"]["addresses"][0]["address"], "10.0.0.6");
        assert_eq!(out["status"]["addresses"][1]["address"], "n1");
    }

    #[test]
    fn owner_references_merge_by_uid() {
        let rs = json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "a", "controller": true}]}});
        let out = smp(
            "ReplicaSet",
            &rs,
            json!({"metadata": {"ownerReferences": [
            {"uid": "1", "controller": false}, {"uid": "2", "name": "b"}]}}),
        );
        assert_eq!(
            out["metadata"]["ownerReferences"],
            json!([{"uid": "1", "name": "a", "controller": false}, {"uid": "2", "name": "b"}])
        );
    }

    #[test]
    fn kubectl_apply_three_way_patch() {
        // Shape of what kubectl 1.33 `apply` sends after editing a manifest: new replicas,
        // image change, env B removed and C added, a port dropped, a label removed, a new
        // container, and the last-applied annotation updated.
        let mut live = deployment();
        live["metadata"]["annotations"] = json!({
            "kubectl.kubernetes.io/last-applied-configuration": "{old}",
            "deployment.kubernetes.io/revision": "3"});
        live["metadata"]["labels"]["old"] = json!("x");
        let patch = json!({
            "metadata": {
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{new}"},
                "labels": {"old": null, "team": "blue"}
            },
            "spec": {
                "replicas": 3,
                "template": {"spec": {
                    "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}, {"name": "metrics"}],
                    "containers": [
                        {"name": "web", "image": "nginx:1.27",
                         "$setElementOrder/env": [{"name": "A"}, {"name": "C"}],
                         "env": [{"name": "C", "value": "3"}, {"$patch": "delete", "name": "B"}],
                         "$setElementOrder/ports": [{"containerPort": 80}],
                         "ports": [{"$patch": "delete", "containerPort": 443}]},
                        {"name": "metrics", "image": "prom/exporter",
                         "ports": [{"containerPort": 9100}]}
                    ]
                }}
            }
        });
        let out = smp("Deployment", &live, patch);
        assert_eq!(out["spec"]["replicas"], 3);
        assert_eq!(
            out["metadata"]["annotations"],
            json!({"kubectl.kubernetes.io/last-applied-configuration": "{new}",
                   "deployment.kubernetes.io/revision": "3"})
        );
        assert_eq!(
            out["metadata"]["labels"],
            json!({"app": "web", "team": "blue"})
        );
        let cs = containers(&out);
        let names: Vec<&str> = cs.iter().filter_map(|c| c["name"].as_str()).collect();
        assert_eq!(names, ["web", "sidecar", "metrics"]);
        assert_eq!(
            cs[0],
            json!({"name": "web", "image": "nginx:1.27",
                   "ports": [{"containerPort": 80, "protocol": "TCP"}],
                   "env": [{"name": "A", "value": "1"}, {"name": "C", "value": "3"}],
                   "terminationMessagePath": "/dev/termination-log"})
        );
        assert_eq!(
            cs[2],
            json!({"name": "metrics", "image": "prom/exporter", "ports": [{"containerPort": 9100}]})
        );
        // Untouched parts survive, including server-owned status.
        assert_eq!(out["status"], live["status"]);
        assert_eq!(
            out["spec"]["template"]["spec"]["tolerations"],
            live["spec"]["template"]["spec"]["tolerations"]
        );
    }

    #[test]
    fn kubectl_edit_two_way_patch() {
        // `kubectl edit` moving `sidecar` first and changing its image.
        let out = smp(
            "Deployment",
            &deployment(),
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "web"}],
                "containers": [{"name": "sidecar", "image": "busybox:2"}]}}}}),
        );
        assert_eq!(
            containers(&out)[0],
            json!({"name": "sidecar", "image": "busybox:2"})
        );
        assert_eq!(containers(&out)[1]["name"], "web");
    }

    #[test]
    fn malformed_strategic_patches() {
        let d = deployment();
        let cases = [
            json!({"spec": {"template": {"spec": {"containers": [{"image": "no-name"}]}}}}),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "web"}, "oops"]}}}}),
            json!({"spec": {"template": {"spec": {"containers": [[1]]}}}}),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "x", "$patch": "merge"}]}}}}),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "x", "$patch": "bogus"}]}}}}),
            json!({"spec": {"strategy": {"$patch": "bogus"}}}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}),
            json!({"metadata": {"$deleteFromPrimitiveListfinalizers": ["a"]}}),
            json!({"metadata": {"$setElementOrder": []}}),
            json!({"$patch": "delete"}),
        ];
        for patch in cases {
            let err = smp_err_of("Deployment", &d, patch.clone());
            assert!(
                matches!(err, PatchError::Strategic { .. }),
                "{patch}: {err}"
            );
            assert_eq!(err.status_code(), 422);
        }
        for bad in [&b"{"[..], b"[]", b"\"x\"", b"null"] {
            let err = strategic_merge_patch("Deployment", &d, bad).expect_err("malformed");
            assert_eq!(err.status_code(), 400, "{err}");
        }
        let err = strategic_merge_patch("Pod", &json!([1]), b"{}").expect_err("target");
        assert!(matches!(err, PatchError::NotAnObject { .. }));
    }

    #[test]
    fn error_messages_carry_the_path() {
        let err = smp_err_of(
            "Deployment",
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "env": [{"value": "x"}]}]}}}}),
        );
        let msg = err.to_string();
        assert!(
            msg.contains("spec.template.spec.containers[name=\"web\"].env"),
            "{msg}"
        );
    }

    /// An Event, and a JSON patch of `n` operations that each copy the whole document into a
    /// new key of itself: each one doubles it.
    fn doubling_copies(n: usize) -> (Value, Vec<u8>) {
        let event = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
            "reason": "Bomb", "message": "x".repeat(100),
        });
        let ops: Vec<Value> = (0..n)
            .map(|i| json!({"op": "copy", "from": "", "path": format!("/x{i}")}))
            .collect();
        (event, serde_json::to_vec(&ops).expect("serialize"))
    }

    #[test]
    fn json_patch_copy_bombs_are_refused_before_they_grow() {
        // A few doublings are an ordinary (if odd) patch.
        let (event, patch) = doubling_copies(4);
        let out = json_patch(&event, &patch).expect("16 Events' worth is fine");
        assert_eq!(out["x3"]["x2"]["x1"]["x0"]["message"], event["message"]);
        // 20 would be 2^20 Events (~300 MB), 40 would be 2^40: refused once the copies add
        // more than the limit, before the copy that would pass it is made.
        for n in [20, 40] {
            let (event, patch) = doubling_copies(n);
            let started = std::time::Instant::now();
            let Err(err) = json_patch(&event, &patch) else {
                panic!("{n} doubling copies applied in {:?}", started.elapsed());
            };
            assert!(
                started.elapsed() < std::time::Duration::from_secs(1),
                "{:?}",
                started.elapsed()
            );
            assert_eq!(err.status_code(), 422, "{err}");
            assert!(err.to_string().contains("copy"), "{err}");
        }
    }

    #[test]
    fn json_patch_operation_count_is_capped() {
        let target = json!({"spec": {"replicas": 1}});
        let ops = |n: usize| {
            let op = json!({"op": "test", "path": "/spec/replicas", "value": 1});
            serde_json::to_vec(&vec![op; n]).expect("serialize")
        };
        assert_eq!(
            json_patch(&target, &ops(10_000)).expect("at the cap"),
            target
        );
        let Err(err) = json_patch(&target, &ops(10_001)) else {
            panic!("10,001 operations applied");
        };
        assert_eq!(err.status_code(), 413, "{err}");
        assert_eq!(
            err.to_string(),
            "The allowed maximum operations in a JSON patch is 10000, got 10001"
        );
    }

    #[test]
    fn json_patch_errors_name_the_operation() {
        let target = json!({"a": 1});
        let patch = br#"[{"op": "test", "path": "/a", "value": 1},
                         {"op": "copy", "from": "/nope", "path": "/b"}]"#;
        let err = json_patch(&target, patch).expect_err("bad from");
        assert_eq!(err.status_code(), 422);
        assert!(
            err.to_string()
                .contains("operation '/1' failed at path '/b': \"from\" path is invalid"),
            "{err}"
        );
    }

    #[test]
    fn json_patch_results_stay_readable() {
        // Stored objects are read back by a parser that nests at most 128 levels: a patch may
        // not build one deeper.
        let mut deep = json!(1);
        for _ in 0..120 {
            deep = json!([deep]);
        }
        let target = json!({"a": {"b": {"c": {}}}});
        let patch = serde_json::to_vec(&json!([
            {"op": "add", "path": "/a/b/c/d", "value": deep},
            {"op": "copy", "from": "/a", "path": "/a/b/c/e"},
        ]))
        .expect("serialize");
        let Err(err) = json_patch(&target, &patch) else {
            panic!("a 125-level object was built");
        };
        assert_eq!(err.status_code(), 422, "{err}");
        assert!(err.to_string().contains("nest"), "{err}");
    }
}
