//! A container's environment: `envFrom` ConfigMaps and Secrets, then `env` values with
//! `$(VAR)` references expanded, the downward API fields (`valueFrom.fieldRef`) the kubelet
//! knows itself and keys of ConfigMaps and Secrets (`configMapKeyRef`, `secretKeyRef`).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod};

use crate::configs::{Kind, Objects};

/// `NAME=value` entries for Docker: envFrom's keys first, then env in spec order (a later
/// name replaces an earlier one in place). A missing object or key that is not optional is an
/// error in the kubelet's words (the container then waits with CreateContainerConfigError).
pub fn build(
    pod: &Pod,
    c: &Container,
    objects: &Objects,
    pod_ip: Option<&str>,
    host_ip: &str,
) -> Result<Vec<String>, String> {
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut out: Vec<(String, String)> = Vec::new();
    let mut put = |name: String, value: String, seen: &mut HashMap<String, String>| {
        seen.insert(name.clone(), value.clone());
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => out.push((name, value)),
        }
    };
    for from in c.env_from.iter().flatten() {
        let (kind, name, optional) = match (&from.config_map_ref, &from.secret_ref) {
            (Some(r), _) => (Kind::ConfigMap, &r.name, r.optional),
            (None, Some(r)) => (Kind::Secret, &r.name, r.optional),
            (None, None) => continue,
        };
        let Some(data) = objects.get(kind, name, optional == Some(true))? else {
            continue;
        };
        let prefix = from.prefix.as_deref().unwrap_or_default();
        for (k, v) in data {
            let var = format!("{prefix}{k}");
            // Docker cannot carry a name with '='; Kubernetes skips invalid names too.
            if var.contains('=') {
                continue;
            }
            put(var, String::from_utf8_lossy(v).into_owned(), &mut seen);
        }
    }
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (_, Some(_)) => match value_from(pod, e, objects, pod_ip, host_ip)? {
                Some(v) => v,
                // An optional reference to something missing sets nothing.
                None => continue,
            },
            (Some(v), None) => expand(v, &seen),
            (None, None) => String::new(),
        };
        put(e.name.clone(), value, &mut seen);
    }
    Ok(out.into_iter().map(|(n, v)| format!("{n}={v}")).collect())
}

/// The value of an env var with `valueFrom`; `None` when an optional source is missing.
fn value_from(
    pod: &Pod,
    e: &EnvVar,
    objects: &Objects,
    pod_ip: Option<&str>,
    host_ip: &str,
) -> Result<Option<String>, String> {
    let Some(from) = &e.value_from else {
        return Ok(None);
    };
    let key_ref = match (&from.config_map_key_ref, &from.secret_key_ref) {
        (Some(r), _) => Some((Kind::ConfigMap, &r.name, &r.key, r.optional)),
        (None, Some(r)) => Some((Kind::Secret, &r.name, &r.key, r.optional)),
        (None, None) => None,
    };
    if let Some((kind, name, key, optional)) = key_ref {
        let optional = optional == Some(true);
        let Some(data) = objects.get(kind, name, optional)? else {
            return Ok(None);
        };
        return match data.get(key) {
            Some(v) => Ok(Some(String::from_utf8_lossy(v).into_owned())),
            None if optional => Ok(None),
            None => Err(format!(
                "couldn't find key {key} in {} {}/{name}",
                kind.title(),
                objects.namespace
            )),
        };
    }
    let Some(f) = &from.field_ref else {
        return Err(format!(
            "env {}: only fieldRef, configMapKeyRef and secretKeyRef are supported by this node",
            e.name
        ));
    };
    field(pod, &f.field_path, pod_ip, host_ip)
        .map(Some)
        .ok_or_else(|| format!("env {}: unsupported fieldPath {:?}", e.name, f.field_path))
}

fn field(pod: &Pod, path: &str, pod_ip: Option<&str>, host_ip: &str) -> Option<String> {
    let m = &pod.metadata;
    let spec = pod.spec.as_ref();
    let keyed = |prefix: &str, map: Option<&std::collections::BTreeMap<String, String>>| {
        let key = path
            .strip_prefix(prefix)?
            .strip_prefix("['")?
            .strip_suffix("']")?;
        Some(map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    Some(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" => pod_ip.unwrap_or_default().to_string(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_string(),
        p if p.starts_with("metadata.labels") => keyed("metadata.labels", m.labels.as_ref())?,
        p if p.starts_with("metadata.annotations") => {
            keyed("metadata.annotations", m.annotations.as_ref())?
        }
        _ => return None,
    })
}

/// Kubernetes' `$(VAR)` expansion: defined variables are replaced, `$$` escapes, anything
/// else stays as written.
fn expand(v: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(v.len());
    let mut rest = v;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
            && let Some(val) = vars.get(&inner[..end])
        {
            out.push_str(val);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, PodSpec};

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "prod", "uid": "u-1",
                          "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": []}
        }))
        .unwrap()
    }

    fn from_field(name: &str, path: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: path.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn values_and_downward_fields() {
        let c = Container {
            env: Some(vec![
                from_field("POD_NAME", "metadata.name"),
                from_field("POD_IP", "status.podIP"),
                from_field("APP", "metadata.labels['app']"),
                EnvVar {
                    name: "GREETING".into(),
                    value: Some("hi $(POD_NAME) at $(POD_IP), $$(POD_NAME) $(NOPE)".into()),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let env = build(
            &pod(),
            &c,
            &Objects::default(),
            Some("10.244.0.7"),
            "192.0.2.1",
        )
        .unwrap();
        assert_eq!(
            env,
            [
                "POD_NAME=web-1",
                "POD_IP=10.244.0.7",
                "APP=web",
                "GREETING=hi web-1 at 10.244.0.7, $(POD_NAME) $(NOPE)"
            ]
        );
    }

    fn objects() -> Objects {
        let d = |pairs: &[(&str, &str)]| -> crate::configs::Data {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_string(), v.as_bytes().to_vec()))
                .collect()
        };
        Objects::with(
            "prod",
            vec![
                (
                    Kind::ConfigMap,
                    "app",
                    d(&[("MODE", "fast"), ("level", "3")]),
                ),
                (Kind::Secret, "creds", d(&[("password", "hunter2")])),
            ],
        )
    }

    fn container(v: &serde_json::Value) -> Container {
        serde_json::from_value(v.clone()).unwrap()
    }

    #[test]
    fn config_maps_and_secrets_as_env_and_env_from() {
        let c = container(&serde_json::json!({"name": "c",
        "envFrom": [{"configMapRef": {"name": "app"}, "prefix": "CFG_"},
                    {"secretRef": {"name": "creds"}},
                    {"configMapRef": {"name": "absent", "optional": true}}],
        "env": [
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
            {"name": "CFG_MODE", "value": "slow, was $(CFG_MODE)"},
            {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "level"}}},
            {"name": "NONE", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "x", "optional": true}}},
            {"name": "GONE", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "x", "optional": true}}}
        ]}));
        let env = build(&pod(), &c, &objects(), None, "h").unwrap();
        assert_eq!(
            env,
            [
                "CFG_MODE=slow, was fast",
                "CFG_level=3",
                "password=hunter2",
                "PW=hunter2",
                "LEVEL=3"
            ]
        );
    }

    #[test]
    fn missing_objects_and_keys_are_the_kubelets_errors() {
        let err = |v: serde_json::Value| {
            build(&pod(), &container(&v), &objects(), None, "h").unwrap_err()
        };
        assert_eq!(
            err(serde_json::json!({"name": "c", "envFrom": [{"configMapRef": {"name": "x"}}]})),
            "configmap \"x\" not found"
        );
        assert_eq!(
            err(
                serde_json::json!({"name": "c", "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "y", "key": "k"}}}]})
            ),
            "secret \"y\" not found"
        );
        assert_eq!(
            err(
                serde_json::json!({"name": "c", "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "k"}}}]})
            ),
            "couldn't find key k in ConfigMap prod/app"
        );
        assert_eq!(
            err(
                serde_json::json!({"name": "c", "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "k"}}}]})
            ),
            "couldn't find key k in Secret prod/creds"
        );
    }

    #[test]
    fn unsupported_sources_are_errors() {
        let mut c = Container {
            env: Some(vec![from_field("X", "spec.priority")]),
            ..Default::default()
        };
        assert!(
            build(&pod(), &c, &Objects::default(), None, "h")
                .unwrap_err()
                .contains("unsupported fieldPath")
        );
        c.env = Some(vec![EnvVar {
            name: "S".into(),
            value_from: Some(EnvVarSource::default()),
            ..Default::default()
        }]);
        assert!(build(&pod(), &c, &Objects::default(), None, "h").is_err());
        let _ = PodSpec::default();
    }
}
