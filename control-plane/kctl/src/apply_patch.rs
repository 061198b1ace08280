//! The patch `apply` sends for an object that already exists, computed kubectl-style from three
//! versions: the configuration applied last time (stored in the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation), the configuration being
//! applied now, and the live object.
//!
//! The patch is sent as a JSON merge patch (RFC 7386) rather than a strategic merge patch:
//! fields that changed in the configuration, or that someone changed on the live object, are
//! set; fields that were in the last-applied configuration but are gone now are set to `null`
//! (deleted). Lists are replaced as a whole when they differ, because merge patches cannot
//! address list items; a list counts as unchanged when the configuration did not change it and
//! every item's configured fields still match the live item (so server-defaulted fields inside
//! items do not make every apply report `configured`). Fields set by other actors and absent
//! from both configurations are left alone, as with kubectl.

use anyhow::{Context as _, Result};
use serde_json::{Map, Value};

use crate::output::sorted;

pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The configuration as it will be stored and sent: the manifest with the last-applied
/// annotation set to the manifest itself, byte for byte as kubectl writes it (compact JSON,
/// sorted keys, Go's HTML-safe escapes, trailing newline, and an `annotations` map even when
/// the manifest has none), so kubectl and kctl can apply the same objects in turn.
pub fn with_last_applied(config: &Value) -> Result<Value> {
    let mut modified = config.clone();
    let metadata = modified
        .as_object_mut()
        .context("a manifest must be an object")?
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let annotations = metadata
        .as_object_mut()
        .context("metadata must be an object")?
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    // `annotations: null` in a manifest means none.
    if annotations.is_null() {
        *annotations = Value::Object(Map::new());
    }
    let annotations = annotations
        .as_object_mut()
        .context("metadata.annotations must be an object")?;
    annotations.remove(LAST_APPLIED);
    let mut text = go_json(&sorted(&modified))?;
    text.push('\n');
    if let Some(annotations) = modified
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.insert(LAST_APPLIED.into(), Value::String(text));
    }
    Ok(modified)
}

/// Compact JSON as Go's `encoding/json` writes it: `<`, `>`, `&`, U+2028 and U+2029 escaped.
fn go_json(v: &Value) -> Result<String> {
    let text = serde_json::to_string(v).context("encoding the last-applied configuration")?;
    // These characters only occur inside JSON strings, so replacing them is safe.
    Ok(text
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029"))
}

/// The last-applied configuration recorded on a live object, if any (unparseable = none).
pub fn last_applied(current: &Value) -> Option<Value> {
    let text = current["metadata"]["annotations"][LAST_APPLIED].as_str()?;
    serde_json::from_str(text).ok()
}

/// The merge patch taking `current` to `modified`, deleting what `original` had and `modified`
/// dropped. An empty object means nothing to change.
pub fn three_way_patch(original: Option<&Value>, modified: &Value, current: &Value) -> Value {
    let empty = Map::new();
    let modified = modified.as_object().unwrap_or(&empty);
    Value::Object(diff_objects(
        original.and_then(Value::as_object),
        modified,
        current.as_object(),
    ))
}

fn diff_objects(
    original: Option<&Map<String, Value>>,
    modified: &Map<String, Value>,
    current: Option<&Map<String, Value>>,
) -> Map<String, Value> {
    let mut patch = Map::new();
    for (key, want) in modified {
        let have = current.and_then(|c| c.get(key)).filter(|v| !v.is_null());
        let before = original.and_then(|o| o.get(key));
        match (want, have) {
            // An explicit null in the configuration deletes the field.
            (Value::Null, Some(_)) => {
                patch.insert(key.clone(), Value::Null);
            }
            (Value::Null, None) => {}
            (Value::Object(want_map), Some(Value::Object(have_map))) => {
                let sub = diff_objects(before.and_then(Value::as_object), want_map, Some(have_map));
                if !sub.is_empty() {
                    patch.insert(key.clone(), Value::Object(sub));
                }
            }
            (Value::Array(want_items), Some(Value::Array(have_items))) => {
                let config_unchanged = before.is_some_and(|b| equal(b, want));
                let live_matches = want_items.len() == have_items.len()
                    && want_items
                        .iter()
                        .zip(have_items)
                        .all(|(w, h)| contained(w, h));
                // With no previous configuration there is nothing to say the config changed;
                // the live object decides.
                let unchanged = live_matches && (config_unchanged || before.is_none());
                if !unchanged {
                    patch.insert(key.clone(), want.clone());
                }
            }
            (_, Some(have)) if equal(want, have) => {}
            _ => {
                patch.insert(key.clone(), want.clone());
            }
        }
    }
    if let Some(original) = original {
        for key in original.keys() {
            let live = current
                .and_then(|c| c.get(key))
                .is_some_and(|v| !v.is_null());
            if !modified.contains_key(key) && live {
                patch.insert(key.clone(), Value::Null);
            }
        }
    }
    patch
}

/// Whether every field of `want` is present with the same value in `have` (extra fields in
/// `have`, e.g. server defaults, are fine).
fn contained(want: &Value, have: &Value) -> bool {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => w.iter().all(|(k, wv)| match h.get(k) {
            Some(hv) => contained(wv, hv),
            None => wv.is_null(),
        }),
        (Value::Array(w), Value::Array(h)) => {
            w.len() == h.len() && w.iter().zip(h).all(|(a, b)| contained(a, b))
        }
        _ => equal(want, have),
    }
}

/// Deep equality where `2` and `2.0` are the same number (YAML and the server may disagree).
fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, xv)| y.get(k).is_some_and(|yv| equal(xv, yv)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| equal(a, b))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(replicas: i64, image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": image}]},
                },
            },
        })
    }

    /// What the server would hold after applying `config`: defaults filled in, status added.
    fn live(config: &Value) -> Value {
        let mut v = with_last_applied(config).unwrap();
        v["metadata"]["uid"] = json!("u-1");
        v["metadata"]["resourceVersion"] = json!("7");
        v["spec"]["strategy"] = json!({"type": "RollingUpdate"});
        if let Some(cs) = v["spec"]["template"]["spec"]["containers"].as_array_mut() {
            for c in cs {
                c["imagePullPolicy"] = json!("IfNotPresent");
                c["terminationMessagePath"] = json!("/dev/termination-log");
            }
        }
        v["status"] = json!({"replicas": 1});
        v
    }

    fn patch_for(previous: &Value, next: &Value, current: &Value) -> Value {
        let modified = with_last_applied(next).unwrap();
        three_way_patch(
            last_applied(current).as_ref().or(Some(previous)),
            &modified,
            current,
        )
    }

    #[test]
    fn annotation_holds_sorted_compact_config_without_itself() {
        let mut config = deployment(1, "nginx");
        config["metadata"]["annotations"] = json!({LAST_APPLIED: "stale", "team": "a"});
        let modified = with_last_applied(&config).unwrap();
        let text = modified["metadata"]["annotations"][LAST_APPLIED]
            .as_str()
            .unwrap();
        assert!(text.starts_with("{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\",\"metadata\":{\"annotations\":{\"team\":\"a\"}"), "{text}");
        assert!(text.ends_with("}\n") && !text.contains("stale"), "{text}");
        assert_eq!(modified["metadata"]["annotations"]["team"], "a");
        assert_eq!(
            last_applied(&modified).unwrap()["metadata"]["annotations"],
            json!({"team": "a"})
        );
        // Without annotations in the manifest, kubectl still records an empty map.
        let plain = with_last_applied(&deployment(1, "nginx")).unwrap();
        assert_eq!(
            last_applied(&plain).unwrap()["metadata"]["annotations"],
            json!({})
        );
        // Go's HTML-safe escaping.
        let mut html = deployment(1, "nginx");
        html["metadata"]["labels"]["x"] = json!("a<b>&c");
        let text = with_last_applied(&html).unwrap()["metadata"]["annotations"][LAST_APPLIED]
            .as_str()
            .unwrap()
            .to_string();
        assert!(text.contains(r#""x":"a\u003cb\u003e\u0026c""#), "{text}");
        assert_eq!(
            last_applied(&with_last_applied(&html).unwrap()).unwrap()["metadata"]["labels"]["x"],
            "a<b>&c"
        );
        // `annotations: null` and a non-object manifest.
        let mut null_ann = deployment(1, "nginx");
        null_ann["metadata"]["annotations"] = Value::Null;
        assert!(
            with_last_applied(&null_ann).unwrap()["metadata"]["annotations"][LAST_APPLIED]
                .is_string()
        );
        assert!(with_last_applied(&json!([1])).is_err());
        assert!(
            last_applied(&json!({"metadata": {"annotations": {LAST_APPLIED: "not json"}}}))
                .is_none()
        );
    }

    #[test]
    fn reapplying_the_same_config_is_unchanged() {
        let config = deployment(2, "nginx");
        let current = live(&config);
        assert_eq!(patch_for(&config, &config, &current), json!({}));
    }

    #[test]
    fn changed_fields_are_patched() {
        let old = deployment(2, "nginx");
        let current = live(&old);
        let new = deployment(3, "nginx:1.27");
        let patch = patch_for(&old, &new, &current);
        assert_eq!(patch["spec"]["replicas"], 3);
        // The container list changed in the config, so it is sent whole.
        assert_eq!(
            patch["spec"]["template"]["spec"]["containers"],
            json!([{"name": "web", "image": "nginx:1.27"}])
        );
        // The new annotation travels with the patch; untouched fields do not.
        assert!(patch["metadata"]["annotations"][LAST_APPLIED].is_string());
        assert!(patch["spec"].get("selector").is_none() && patch.get("status").is_none());
    }

    #[test]
    fn fields_dropped_from_the_config_are_deleted() {
        let mut old = deployment(2, "nginx");
        old["metadata"]["labels"]["tier"] = json!("frontend");
        old["spec"]["minReadySeconds"] = json!(5);
        let current = live(&old);
        let new = deployment(2, "nginx");
        let patch = patch_for(&old, &new, &current);
        assert_eq!(patch["metadata"]["labels"], json!({"tier": null}));
        assert_eq!(patch["spec"], json!({"minReadySeconds": null}));
    }

    #[test]
    fn fields_owned_by_others_are_kept() {
        let config = deployment(2, "nginx");
        let mut current = live(&config);
        // Someone else added a label; it was never in our configuration.
        current["metadata"]["labels"]["injected"] = json!("yes");
        assert_eq!(patch_for(&config, &config, &current), json!({}));
    }

    #[test]
    fn live_drift_on_configured_fields_is_reverted() {
        let config = deployment(2, "nginx");
        let mut current = live(&config);
        current["spec"]["replicas"] = json!(5);
        current["spec"]["template"]["spec"]["containers"][0]["image"] = json!("httpd");
        let patch = patch_for(&config, &config, &current);
        assert_eq!(patch["spec"]["replicas"], 2);
        assert_eq!(
            patch["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx"
        );
    }

    #[test]
    fn removing_a_field_inside_a_list_item_replaces_the_list() {
        let mut old = deployment(1, "nginx");
        old["spec"]["template"]["spec"]["containers"][0]["command"] = json!(["sleep", "1"]);
        let current = live(&old);
        let new = deployment(1, "nginx");
        let patch = patch_for(&old, &new, &current);
        assert_eq!(
            patch["spec"]["template"]["spec"]["containers"],
            json!([{"name": "web", "image": "nginx"}])
        );
    }

    #[test]
    fn first_apply_over_an_unannotated_object() {
        let config = deployment(2, "nginx");
        let mut current = live(&config);
        current["metadata"]["annotations"] = json!({});
        // No last-applied: nothing is deleted, matching lists count as unchanged, and only the
        // annotation itself needs writing.
        let patch = three_way_patch(None, &with_last_applied(&config).unwrap(), &current);
        assert_eq!(
            patch.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["metadata"]
        );
        assert!(patch["metadata"]["annotations"][LAST_APPLIED].is_string());
    }

    #[test]
    fn explicit_nulls_and_numbers() {
        let current = json!({"spec": {"a": 1, "b": 2.0}});
        let patch = three_way_patch(
            None,
            &json!({"spec": {"a": null, "b": 2, "c": null}}),
            &current,
        );
        assert_eq!(patch, json!({"spec": {"a": null}}));
        // Type changes are patched; a non-object config patches nothing.
        assert_eq!(
            three_way_patch(None, &json!({"spec": "x"}), &current),
            json!({"spec": "x"})
        );
        assert_eq!(three_way_patch(None, &json!(3), &current), json!({}));
    }
}
