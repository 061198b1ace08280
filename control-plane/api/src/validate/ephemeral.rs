//! Ephemeral containers (`spec.ephemeralContainers`, added through `pods/ephemeralcontainers`
//! by `kubectl debug`): Kubernetes' validateEphemeralContainers and, on update, the rule of
//! ValidatePodEphemeralContainersUpdate that existing ones stay as they are.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{Container, EphemeralContainer, Pod, PodSpec};
use serde_json::Value;

use super::{FieldError, Path};

/// The fields an ephemeral container may set (Kubernetes' allowedEphemeralContainerFields,
/// by JSON name); anything else set is forbidden: ephemeral containers are not to be relied
/// on for the pod's work (no ports, probes, resources, lifecycle).
const ALLOWED: &[&str] = &[
    "name",
    "image",
    "command",
    "args",
    "workingDir",
    "envFrom",
    "env",
    "volumeMounts",
    "volumeDevices",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "imagePullPolicy",
    "securityContext",
    "stdin",
    "stdinOnce",
    "tty",
    "targetContainerName",
];

/// The ephemeral containers of `pod`; `old`: the stored pod on update, `None` on create.
pub(crate) fn pod(pod: &Pod, old: Option<&Pod>) -> Vec<FieldError> {
    // Like Go's zero value: no spec is an empty spec.
    let default = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&default);
    let old = old.map(|o| o.spec.as_ref().unwrap_or(&default));
    containers(spec, old, &Path::root("spec"))
}

/// `old`: the stored pod's spec on update, `None` on create.
fn containers(spec: &PodSpec, old: Option<&PodSpec>, path: &Path) -> Vec<FieldError> {
    let list_path = path.child("ephemeralContainers");
    let eph = spec.ephemeral_containers.as_deref().unwrap_or_default();
    let Some(old) = old else {
        if eph.is_empty() {
            return Vec::new();
        }
        return vec![FieldError::forbidden(&list_path, "cannot be set on create")];
    };
    let mut errs = Vec::new();
    let others: HashSet<&str> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .map(|c| c.name.as_str())
        .collect();
    let mut names: HashSet<String> = others.iter().map(|n| (*n).to_string()).collect();
    let host_network = spec.host_network == Some(true);
    for (i, ec) in eph.iter().enumerate() {
        let p = list_path.index(i);
        let json = serde_json::to_value(ec).unwrap_or_default();
        if let Some(c) = as_container(&json) {
            // Names: unique across every kind of container (`container` counts them in).
            errs.extend(super::pod::container(
                &c,
                &p,
                false,
                host_network,
                &mut names,
            ));
        }
        if let Some(target) = ec.target_container_name.as_deref()
            && !target.is_empty()
            && !others.contains(target)
        {
            errs.push(FieldError::not_found(
                &p.child("targetContainerName"),
                target,
            ));
        }
        for (field, value) in json.as_object().into_iter().flatten() {
            if !ALLOWED.contains(&field.as_str()) && !is_zero(value) {
                errs.push(FieldError::forbidden(
                    &p.child(field),
                    "cannot be set for an Ephemeral Container",
                ));
            }
        }
        // subPath mounts are bind mounts that outlive the container until the pod goes.
        for (j, m) in ec.volume_mounts.iter().flatten().enumerate() {
            let mp = p.child("volumeMounts").index(j);
            for (field, v) in [("subPath", &m.sub_path), ("subPathExpr", &m.sub_path_expr)] {
                if v.as_deref().is_some_and(|s| !s.is_empty()) {
                    errs.push(FieldError::forbidden(
                        &mp.child(field),
                        "cannot be set for an Ephemeral Container",
                    ));
                }
            }
        }
    }
    errs.extend(unchanged(
        eph,
        old.ephemeral_containers.as_deref().unwrap_or_default(),
        &list_path,
    ));
    errs
}

/// Existing ephemeral containers may be neither removed nor changed (a patch may reorder
/// them, so they are matched by name). The messages end in a newline, as Kubernetes'.
fn unchanged(
    new: &[EphemeralContainer],
    old: &[EphemeralContainer],
    path: &Path,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for o in old {
        match new.iter().find(|n| n.name == o.name) {
            None => errs.push(FieldError::forbidden(
                path,
                format!(
                    "existing ephemeral containers {:?} may not be removed\n",
                    o.name
                ),
            )),
            Some(n) if n != o => errs.push(FieldError::forbidden(
                &path.key(&o.name),
                format!(
                    "existing ephemeral containers {:?} may not be changed\n",
                    o.name
                ),
            )),
            Some(_) => {}
        }
    }
    errs
}

/// The ephemeral container as the Container its fields share (EphemeralContainerCommon).
fn as_container(json: &Value) -> Option<Container> {
    let mut json = json.clone();
    json.as_object_mut()?.remove("targetContainerName");
    serde_json::from_value(json).ok()
}

/// Go's zero value: a field set to nothing is not set.
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(is_zero),
        Value::Number(n) => n.as_f64() == Some(0.0),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::defaults::apply_defaults;
    use crate::validate::{Invalid, validate};

    fn pod(ephemeral: Value) -> Value {
        let mut p = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "initContainers": [{"name": "setup", "image": "busybox"}],
                "containers": [{"name": "main", "image": "nginx"}],
            },
        });
        if !ephemeral.is_null() {
            p["spec"]["ephemeralContainers"] = ephemeral;
        }
        apply_defaults("Pod", &mut p);
        p
    }

    /// The messages of an update from `old` to `new` (empty: valid).
    fn update(new: &Value, old: &Value) -> Vec<String> {
        match validate("Pod", new, Some(old)) {
            Ok(()) => Vec::new(),
            Err(Invalid::Fields(errs)) => errs.iter().map(ToString::to_string).collect(),
            Err(e) => panic!("decode error {e}"),
        }
    }

    /// What `kubectl debug pod/web -i --image=busybox --target=main` adds.
    fn debugger(name: &str) -> Value {
        json!({"name": name, "image": "busybox", "stdin": true,
               "terminationMessagePolicy": "File", "targetContainerName": "main"})
    }

    #[test]
    fn kubectl_debug_containers_are_valid_and_stay() {
        let before = pod(Value::Null);
        let one = pod(json!([debugger("debugger-a")]));
        assert_eq!(update(&one, &before), Vec::<String>::new());
        let two = pod(json!([debugger("debugger-b"), debugger("debugger-a")]));
        assert_eq!(
            update(&two, &one),
            Vec::<String>::new(),
            "reordered is fine"
        );

        let removed = pod(json!([debugger("debugger-b")]));
        assert_eq!(
            update(&removed, &two),
            [
                "spec.ephemeralContainers: Forbidden: existing ephemeral containers \"debugger-a\" may not be removed\n"
            ]
        );
        let mut changed = debugger("debugger-a");
        changed["image"] = json!("alpine");
        let changed = pod(json!([debugger("debugger-b"), changed]));
        assert_eq!(
            update(&changed, &two),
            [
                "spec.ephemeralContainers[debugger-a]: Forbidden: existing ephemeral containers \"debugger-a\" may not be changed\n"
            ]
        );
    }

    #[test]
    fn not_on_create() {
        let e = validate("Pod", &pod(json!([debugger("d")])), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.ephemeralContainers: Forbidden: cannot be set on create"
        );
    }

    #[test]
    fn names_targets_and_forbidden_fields() {
        let before = pod(Value::Null);
        let mut bad = debugger("main");
        bad["targetContainerName"] = json!("nope");
        bad["ports"] = json!([{"containerPort": 80}]);
        bad["readinessProbe"] = json!({"exec": {"command": ["true"]}});
        bad["volumeMounts"] = json!([{"name": "v", "mountPath": "/v", "subPath": "x"}]);
        let msgs = update(&pod(json!([bad])), &before);
        for want in [
            "spec.ephemeralContainers[0].name: Duplicate value: \"main\"",
            "spec.ephemeralContainers[0].targetContainerName: Not found: \"nope\"",
            "spec.ephemeralContainers[0].ports: Forbidden: cannot be set for an Ephemeral Container",
            "spec.ephemeralContainers[0].readinessProbe: Forbidden: cannot be set for an Ephemeral Container",
            "spec.ephemeralContainers[0].volumeMounts[0].subPath: Forbidden: cannot be set for an Ephemeral Container",
        ] {
            assert!(msgs.iter().any(|m| m == want), "{want:?} not in {msgs:#?}");
        }
        // The init container's name is taken too, and an init container is no target.
        let mut init_named = debugger("setup");
        init_named["targetContainerName"] = json!("setup");
        let msgs = update(&pod(json!([init_named])), &before);
        assert_eq!(
            msgs,
            ["spec.ephemeralContainers[0].name: Duplicate value: \"setup\""]
        );
        let twice = pod(json!([debugger("d"), debugger("d")]));
        assert_eq!(
            update(&twice, &before),
            ["spec.ephemeralContainers[1].name: Duplicate value: \"d\""]
        );
        // Empty values are no values (Go's zero values).
        let mut empty = debugger("d");
        empty["resources"] = json!({});
        empty["ports"] = json!([]);
        assert_eq!(update(&pod(json!([empty])), &before), Vec::<String>::new());
    }
}
