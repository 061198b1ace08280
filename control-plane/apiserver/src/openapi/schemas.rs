//! The object schemas (`components.schemas`) of one group-version's document, from
//! k8s-openapi's `schemars` output in OpenAPI v3 form: references are
//! `#/components/schemas/<definition>` in Kubernetes' naming, a reference with a description
//! beside it is wrapped in `allOf` (as kube-apiserver publishes it), each served kind carries
//! `x-kubernetes-group-version-kind`, and the vendor extensions k8s-openapi drops (patch
//! strategy and merge key, list and map types) are put back from `extensions.tsv`.

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::kinds;
use crate::registry::Resource;

/// `definition<TAB>property<TAB>{extensions}` (property empty for the type itself), read from
/// k8s.io/api and k8s.io/apimachinery v0.33 by `scripts/gen_openapi_extensions.py`.
const EXTENSIONS: &str = include_str!("../../openapi/extensions.tsv");

/// The kinds whose `metadata` Kubernetes requires (no `omitempty` in k8s.io/api v0.33);
/// k8s-openapi marks it required in every kind, which `kubectl explain` would print.
const METADATA_REQUIRED: &[&str] = &["io.k8s.api.core.v1.Event", "io.k8s.api.events.v1.Event"];

/// What [`components`] built: the schemas, and the definition name of each resource it found a
/// type for.
pub struct Components {
    pub schemas: Map<String, Value>,
    pub names: Vec<(&'static Resource, String)>,
}

impl Components {
    pub fn name_of(&self, r: &Resource) -> Option<&str> {
        self.names
            .iter()
            .find(|(n, _)| std::ptr::eq(*n, r))
            .map(|(_, name)| name.as_str())
    }
}

/// The schemas of `resources` and of everything they reference. A resource k8s-openapi has no
/// type for gets none.
pub fn components(resources: &[&'static Resource]) -> Components {
    let mut g = SchemaSettings::openapi3().into_generator();
    let mut names = Vec::new();
    for r in resources {
        let Some(k) = kinds::find(r.group, r.version, r.kind) else {
            continue;
        };
        let s = (k.add)(&mut g);
        if let Some(name) = s
            .as_value()
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|p| p.rsplit('/').next())
        {
            names.push((*r, name.to_string()));
        }
    }
    let mut schemas = std::mem::take(g.definitions_mut());
    for (r, name) in &names {
        let Some(Value::Object(d)) = schemas.get_mut(name) else {
            continue;
        };
        if !METADATA_REQUIRED.contains(&name.as_str())
            && let Some(Value::Array(required)) = d.get_mut("required")
        {
            required.retain(|f| f != "metadata");
            if required.is_empty() {
                d.remove("required");
            }
        }
        let gvk = json!({"group": r.group, "kind": r.kind, "version": r.version});
        match d.get_mut("x-kubernetes-group-version-kind") {
            Some(Value::Array(all)) => all.push(gvk),
            _ => {
                d.insert("x-kubernetes-group-version-kind".into(), json!([gvk]));
            }
        }
    }
    add_extensions(&mut schemas);
    schemas.values_mut().for_each(wrap_refs);
    Components { schemas, names }
}

fn add_extensions(schemas: &mut Map<String, Value>) {
    for line in EXTENSIONS.lines() {
        let mut f = line.splitn(3, '\t');
        let (Some(def), Some(prop), Some(ext)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let Some(Value::Object(d)) = schemas.get_mut(def) else {
            continue;
        };
        let target = if prop.is_empty() {
            Some(d)
        } else {
            d.get_mut("properties")
                .and_then(|p| p.get_mut(prop))
                .and_then(Value::as_object_mut)
        };
        let (Some(t), Ok(Value::Object(ext))) = (target, serde_json::from_str::<Value>(ext)) else {
            continue;
        };
        t.extend(ext);
    }
}

/// OpenAPI 3.0 ignores whatever stands beside a `$ref` (k8s-openapi puts a field's
/// description there): such a reference moves into `allOf`, as kube-apiserver writes it.
fn wrap_refs(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.len() > 1
                && let Some(r) = m.remove("$ref")
            {
                m.insert("allOf".into(), json!([{"$ref": r}]));
            }
            m.values_mut().for_each(wrap_refs);
        }
        Value::Array(a) => a.iter_mut().for_each(wrap_refs),
        _ => {}
    }
}
