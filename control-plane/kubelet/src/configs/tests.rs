use std::os::unix::fs::PermissionsExt as _;

use serde_json::json;

use super::*;

fn data(pairs: &[(&str, &str)]) -> Data {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), v.as_bytes().to_vec()))
        .collect()
}

fn volume(v: &serde_json::Value) -> Volume {
    serde_json::from_value(v.clone()).unwrap()
}

struct Tmp(PathBuf);

impl Tmp {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("kubelet-cfg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        Self(p)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn objects() -> Objects {
    Objects::with(
        "prod",
        vec![
            (Kind::ConfigMap, "app", data(&[("a.conf", "A"), ("b", "B")])),
            (Kind::Secret, "creds", data(&[("password", "hunter2")])),
        ],
    )
}

#[test]
fn references_cover_env_env_from_and_volumes() {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "prod"},
        "spec": {
            "containers": [{"name": "c",
                "envFrom": [{"configMapRef": {"name": "app"}}, {"secretRef": {"name": "s1"}}],
                "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s2", "key": "k"}}}]}],
            "volumes": [{"name": "v", "configMap": {"name": "files"}},
                        {"name": "w", "secret": {"secretName": "tls"}},
                        {"name": "e", "emptyDir": {}}]
        }
    }))
    .unwrap();
    let c = pod.spec.as_ref().unwrap().containers[0].clone();
    let refs: Vec<(Kind, String)> = references(&pod, [&c]).into_iter().collect();
    assert_eq!(
        refs,
        [
            (Kind::ConfigMap, "app".into()),
            (Kind::ConfigMap, "files".into()),
            (Kind::Secret, "s1".into()),
            (Kind::Secret, "s2".into()),
            (Kind::Secret, "tls".into()),
        ]
    );
    assert_eq!(volume_references(&pod).len(), 2);
}

#[test]
fn payloads_follow_items_modes_and_optional() {
    let objs = objects();
    let all = payload(
        &volume(&json!({"name": "v", "configMap": {"name": "app", "defaultMode": 0o600}})),
        &objs,
    )
    .unwrap()
    .unwrap();
    assert_eq!(all["a.conf"], (b"A".to_vec(), 0o600));
    assert_eq!(all["b"], (b"B".to_vec(), 0o600));
    let items = payload(
        &volume(&json!({"name": "v", "configMap": {"name": "app", "items": [
            {"key": "b", "path": "dir/b.txt", "mode": 0o400}, {"key": "a.conf", "path": "a"}]}})),
        &objs,
    )
    .unwrap()
    .unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items["dir/b.txt"], (b"B".to_vec(), 0o400));
    assert_eq!(items["a"], (b"A".to_vec(), 0o644), "no defaultMode: 0644");
    let missing = |v: serde_json::Value| payload(&volume(&v), &objs).unwrap();
    assert_eq!(
        missing(json!({"name": "v", "configMap": {"name": "nope"}})).unwrap_err(),
        "configmap \"nope\" not found"
    );
    assert_eq!(
        missing(json!({"name": "v", "secret": {"secretName": "nope"}})).unwrap_err(),
        "secret \"nope\" not found"
    );
    assert!(
        missing(json!({"name": "v", "configMap": {"name": "nope", "optional": true}}))
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        missing(json!({"name": "v", "configMap": {"name": "app", "items": [{"key": "zz", "path": "z"}]}}))
            .unwrap_err(),
        "configmap references non-existent config key: zz"
    );
    assert_eq!(
        missing(json!({"name": "v", "secret": {"secretName": "creds", "items": [{"key": "zz", "path": "z"}]}}))
            .unwrap_err(),
        "references non-existent secret key: zz"
    );
    assert!(
        missing(json!({"name": "v", "configMap": {"name": "app", "items": [{"key": "b", "path": "../x"}]}}))
            .is_err()
    );
    assert!(payload(&volume(&json!({"name": "e", "emptyDir": {}})), &objs).is_none());
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_atomic_writer_swaps_data_and_links() {
    let tmp = Tmp::new("writer");
    let dir = tmp.0.join("vol");
    let mut p = Payload::new();
    p.insert("a".into(), (b"one".to_vec(), 0o640));
    p.insert("sub/b".into(), (b"two".to_vec(), 0o644));
    assert!(write(&dir, &p).unwrap());
    assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"one");
    assert_eq!(std::fs::read(dir.join("sub/b")).unwrap(), b"two");
    assert_eq!(mode(&dir.join("a")), 0o640);
    assert_eq!(
        std::fs::read_link(dir.join("a")).unwrap(),
        Path::new("..data/a"),
        "top-level names link through ..data"
    );
    let first = std::fs::read_link(dir.join("..data")).unwrap();
    assert!(
        !write(&dir, &p).unwrap(),
        "the same payload is not rewritten"
    );
    assert_eq!(std::fs::read_link(dir.join("..data")).unwrap(), first);

    p.insert("a".into(), (b"uno".to_vec(), 0o640));
    p.remove("sub/b");
    p.insert("c".into(), (b"three".to_vec(), 0o600));
    assert!(write(&dir, &p).unwrap());
    let second = std::fs::read_link(dir.join("..data")).unwrap();
    assert_ne!(first, second);
    assert!(
        !dir.join(&first).exists(),
        "the old data directory is removed"
    );
    assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"uno");
    assert_eq!(std::fs::read(dir.join("c")).unwrap(), b"three");
    assert!(
        std::fs::symlink_metadata(dir.join("sub")).is_err(),
        "a name no longer in the payload is unlinked"
    );
    // A mode change alone is a change.
    p.insert("c".into(), (b"three".to_vec(), 0o644));
    assert!(write(&dir, &p).unwrap());
    assert_eq!(mode(&dir.join("c")), 0o644);
}

#[test]
fn refresh_rewrites_only_written_volumes() {
    let tmp = Tmp::new("refresh");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "prod"},
        "spec": {"containers": [{"name": "c", "volumeMounts": [{"name": "cfg", "mountPath": "/c"}]}],
                 "volumes": [{"name": "cfg", "configMap": {"name": "app"}},
                             {"name": "unused", "secret": {"secretName": "creds"}}]}
    }))
    .unwrap();
    let c = pod.spec.as_ref().unwrap().containers[0].clone();
    write_volumes(&pod, &c, &tmp.0, &objects()).unwrap();
    assert_eq!(
        std::fs::read(volume_dir(&tmp.0, "cfg").join("b")).unwrap(),
        b"B"
    );
    assert!(
        !volume_dir(&tmp.0, "unused").exists(),
        "only mounted volumes are written"
    );
    let newer = Objects::with(
        "prod",
        vec![(
            Kind::ConfigMap,
            "app",
            data(&[("a.conf", "A"), ("b", "B2")]),
        )],
    );
    assert_eq!(refresh_volumes(&pod, &tmp.0, &newer), ["cfg"]);
    assert_eq!(
        std::fs::read(volume_dir(&tmp.0, "cfg").join("b")).unwrap(),
        b"B2"
    );
    assert!(refresh_volumes(&pod, &tmp.0, &newer).is_empty());
    // Gone from the API: the files stay.
    assert!(refresh_volumes(&pod, &tmp.0, &Objects::default()).is_empty());
    assert!(volume_dir(&tmp.0, "cfg").join("b").exists());
    let missing = Objects::with("prod", vec![]);
    assert_eq!(
        write_volumes(&pod, &c, &tmp.0, &missing).unwrap_err(),
        ("cfg".to_string(), "configmap \"app\" not found".to_string())
    );
}
