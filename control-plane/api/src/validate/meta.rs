//! ObjectMeta rules (apimachinery's ValidateObjectMeta), labels, annotations and label
//! selectors.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kproxy_apimachinery::names;

use super::{FieldError, Json, Path, name_errors};

/// Kubernetes' limit on the summed size of all annotation keys and values.
const TOTAL_ANNOTATION_SIZE: usize = 256 * 1024;

/// Finalizers Kubernetes itself defines; anything else must be domain-qualified.
const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];

/// Which rule an object's name follows.
#[derive(Clone, Copy)]
pub(crate) enum NameRule {
    /// Namespaces.
    Label,
    /// Services (their names become DNS labels and must not start with a digit).
    Dns1035,
    /// Most objects.
    Subdomain,
}

impl NameRule {
    fn check(self, s: &str) -> Vec<String> {
        match self {
            NameRule::Label => names::dns1123_label(s),
            NameRule::Dns1035 => names::dns1035_label(s),
            NameRule::Subdomain => names::dns1123_subdomain(s),
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Scope {
    Namespaced,
    Cluster,
}

/// ValidateObjectMeta for a top-level object.
pub(crate) fn object_meta(meta: &ObjectMeta, scope: Scope, rule: NameRule) -> Vec<FieldError> {
    let path = Path::root("metadata");
    let mut errs = Vec::new();
    let name = meta.name.as_deref().unwrap_or_default();
    let generate = meta.generate_name.as_deref().unwrap_or_default();
    if !generate.is_empty() {
        // A prefix may end in '-'; the generated suffix makes it a valid name.
        let masked = match generate.strip_suffix('-') {
            Some(head) if !head.is_empty() => format!("{head}a"),
            _ => generate.to_string(),
        };
        errs.extend(name_errors(
            &path.child("generateName"),
            generate,
            rule.check(&masked),
        ));
    }
    if name.is_empty() {
        if generate.is_empty() {
            errs.push(FieldError::required(
                &path.child("name"),
                "name or generateName is required",
            ));
        }
    } else {
        errs.extend(name_errors(&path.child("name"), name, rule.check(name)));
    }
    let namespace = meta.namespace.as_deref().unwrap_or_default();
    match scope {
        Scope::Namespaced if !namespace.is_empty() => {
            errs.extend(name_errors(
                &path.child("namespace"),
                namespace,
                names::dns1123_label(namespace),
            ));
        }
        Scope::Cluster if !namespace.is_empty() => {
            errs.push(FieldError::forbidden(
                &path.child("namespace"),
                "not allowed on this type",
            ));
        }
        _ => {}
    }
    errs.extend(labels(meta.labels.as_ref(), &path.child("labels")));
    errs.extend(annotations(
        meta.annotations.as_ref(),
        &path.child("annotations"),
    ));
    errs.extend(owner_references(meta, &path.child("ownerReferences")));
    for f in meta.finalizers.iter().flatten() {
        errs.extend(finalizer_name(f, &path.child("finalizers")));
    }
    errs
}

/// ValidateObjectMetaUpdate: what may not change between the stored and the new object.
pub(crate) fn object_meta_update(new: &ObjectMeta, old: &ObjectMeta) -> Vec<FieldError> {
    let path = Path::root("metadata");
    let mut errs = Vec::new();
    let pairs = [
        ("name", &new.name, &old.name),
        ("namespace", &new.namespace, &old.namespace),
    ];
    for (field, n, o) in pairs {
        let n = n.as_deref().unwrap_or_default();
        if n != o.as_deref().unwrap_or_default() {
            errs.push(FieldError::invalid(
                &path.child(field),
                n,
                "field is immutable",
            ));
        }
    }
    errs
}

/// ValidateLabels: keys are qualified names, values label values. Errors name the map itself.
pub(crate) fn labels(labels: Option<&BTreeMap<String, String>>, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (k, v) in labels.into_iter().flatten() {
        errs.extend(name_errors(path, k, names::qualified_name(k)));
        errs.extend(name_errors(path, v, names::label_value(v)));
    }
    errs
}

/// ValidateAnnotations: keys are (case-insensitively) qualified names; at most 256 KiB in all.
pub(crate) fn annotations(
    annotations: Option<&BTreeMap<String, String>>,
    path: &Path,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut total = 0usize;
    for (k, v) in annotations.into_iter().flatten() {
        errs.extend(name_errors(
            path,
            k,
            names::qualified_name(&k.to_lowercase()),
        ));
        total += k.len() + v.len();
    }
    if total > TOTAL_ANNOTATION_SIZE {
        errs.push(FieldError::too_long(path, TOTAL_ANNOTATION_SIZE));
    }
    errs
}

fn owner_references(meta: &ObjectMeta, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut controller: Option<String> = None;
    for r in meta.owner_references.iter().flatten() {
        // The group may be empty (core), the version may not.
        let version = r.api_version.rsplit('/').next().unwrap_or_default();
        let required = [
            (
                "apiVersion",
                version,
                &r.api_version,
                "version must not be empty",
            ),
            ("kind", r.kind.as_str(), &r.kind, "kind must not be empty"),
            ("name", r.name.as_str(), &r.name, "name must not be empty"),
            ("uid", r.uid.as_str(), &r.uid, "uid must not be empty"),
        ];
        for (field, part, value, msg) in required {
            if part.is_empty() {
                errs.push(FieldError::invalid(&path.child(field), value, msg));
            }
        }
        // Not a Kubernetes rule (its collector ignores such a reference): an object cannot be
        // its own owner, and refusing it here keeps the reference out of garbage collection.
        if !r.uid.is_empty() && meta.uid.as_deref() == Some(r.uid.as_str()) {
            errs.push(FieldError::invalid(
                &path.child("uid"),
                &r.uid,
                "an object cannot be its own owner",
            ));
        }
        if r.controller == Some(true) {
            let this = format!("{}/{}", r.kind, r.name);
            match &controller {
                Some(first) => errs.push(FieldError::invalid(
                    path,
                    Json(&meta.owner_references),
                    format!(
                        "Only one reference can have Controller set to true. Found \"true\" in \
                         references for {first} and {this}"
                    ),
                )),
                None => controller = Some(this),
            }
        }
    }
    errs
}

/// A finalizer is a qualified name; unqualified ones must be Kubernetes' own.
pub(crate) fn finalizer_name(name: &str, path: &Path) -> Vec<FieldError> {
    let mut errs = name_errors(path, name, names::qualified_name(name));
    if errs.is_empty() && !name.contains('/') && !STANDARD_FINALIZERS.contains(&name) {
        errs.push(FieldError::invalid(
            path,
            name,
            "name is neither a standard finalizer name nor is it fully qualified",
        ));
    }
    errs
}

/// ValidateLabelSelector (strict: selector values must be valid label values).
pub(crate) fn label_selector(sel: &LabelSelector, path: &Path) -> Vec<FieldError> {
    let mut errs = labels(sel.match_labels.as_ref(), &path.child("matchLabels"));
    for (i, req) in sel.match_expressions.iter().flatten().enumerate() {
        let p = path.child("matchExpressions").index(i);
        let values = req.values.as_deref().unwrap_or_default();
        match req.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => errs.push(FieldError::required(
                &p.child("values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if !values.is_empty() => errs.push(FieldError::forbidden(
                &p.child("values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            op => errs.push(FieldError::invalid(
                &p.child("operator"),
                op,
                "not a valid selector operator",
            )),
        }
        errs.extend(name_errors(
            &p.child("key"),
            &req.key,
            names::qualified_name(&req.key),
        ));
        for (j, v) in values.iter().enumerate() {
            errs.extend(name_errors(
                &p.child("values").index(j),
                v,
                names::label_value(v),
            ));
        }
    }
    errs
}
