//! A container's environment: `env` values with `$(VAR)` references expanded, and the
//! downward API fields (`valueFrom.fieldRef`) the kubelet knows itself.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, Pod};

/// `NAME=value` entries for Docker, in spec order. An unsupported source is an error (the
/// container then waits with CreateContainerConfigError, as in Kubernetes).
pub fn build(
    pod: &Pod,
    c: &Container,
    pod_ip: Option<&str>,
    host_ip: &str,
) -> Result<Vec<String>, String> {
    if c.env_from.as_ref().is_some_and(|e| !e.is_empty()) {
        return Err("envFrom (ConfigMaps and Secrets) is not supported by this node".into());
    }
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut out = Vec::new();
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (_, Some(from)) => {
                let Some(f) = &from.field_ref else {
                    return Err(format!(
                        "env {}: only valueFrom.fieldRef is supported by this node",
                        e.name
                    ));
                };
                field(pod, &f.field_path, pod_ip, host_ip).ok_or_else(|| {
                    format!("env {}: unsupported fieldPath {:?}", e.name, f.field_path)
                })?
            }
            (Some(v), None) => expand(v, &seen),
            (None, None) => String::new(),
        };
        seen.insert(e.name.clone(), value.clone());
        out.push(format!("{}={value}", e.name));
    }
    Ok(out)
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
        let env = build(&pod(), &c, Some("10.244.0.7"), "192.0.2.1").unwrap();
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

    #[test]
    fn unsupported_sources_are_errors() {
        let mut c = Container {
            env: Some(vec![from_field("X", "spec.priority")]),
            ..Default::default()
        };
        assert!(
            build(&pod(), &c, None, "h")
                .unwrap_err()
                .contains("unsupported fieldPath")
        );
        c.env = Some(vec![EnvVar {
            name: "S".into(),
            value_from: Some(EnvVarSource::default()),
            ..Default::default()
        }]);
        assert!(build(&pod(), &c, None, "h").is_err());
        let _ = PodSpec::default();
    }
}
