//! `-o` formats other than tables: YAML and JSON (one object, or a `List` of several like
//! kubectl), and `name` (`kind.group/name`).

use anyhow::{Context as _, Result};
use serde::Serialize as _;
use serde_json::{Map, Value, json};

/// What `-o` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Wide,
    Yaml,
    Json,
    Name,
}

/// `kind.group/name` (`pod/web`, `deployment.apps/web`).
pub fn name_line(kind_ref: &str, name: &str) -> String {
    format!("{kind_ref}/{name}")
}

/// Wraps several objects the way kubectl does for `-o yaml|json`.
pub fn as_list(items: &[Value]) -> Value {
    json!({
        "apiVersion": "v1",
        "items": items,
        "kind": "List",
        "metadata": {"resourceVersion": ""},
    })
}

/// Keys in lexical order at every level, as Go's encoders write maps (and independent of
/// whether serde_json preserves insertion order in this build).
pub fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for k in keys {
                out.insert(k.clone(), sorted(&m[k]));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// kubectl's JSON: four-space indent, trailing newline.
pub fn to_json(v: &Value) -> Result<String> {
    let mut buf = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
    sorted(v).serialize(&mut ser).context("encoding JSON")?;
    let mut s = String::from_utf8(buf).context("encoding JSON")?;
    s.push('\n');
    Ok(s)
}

/// kubectl's YAML (see [`crate::yaml`]).
pub fn to_yaml(v: &Value) -> String {
    crate::yaml::to_string(v)
}

/// Writes to stdout. A closed pipe (`kctl get pods | head -1`) ends the program quietly, as it
/// would for a Go program killed by SIGPIPE.
pub fn emit(text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        other => other.context("writing to standard output"),
    }
}

/// Renders `v` in `format` (yaml or json).
pub fn render(v: &Value, format: OutputFormat) -> Result<String> {
    match format {
        OutputFormat::Json => to_json(v),
        _ => Ok(to_yaml(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_lines() {
        assert_eq!(name_line("pod", "web"), "pod/web");
        assert_eq!(name_line("deployment.apps", "web"), "deployment.apps/web");
    }

    #[test]
    fn lists_wrap_items() {
        let l = as_list(&[json!({"kind": "Pod"})]);
        assert_eq!(l["kind"], "List");
        assert_eq!(l["apiVersion"], "v1");
        assert_eq!(l["items"][0]["kind"], "Pod");
        assert_eq!(l["metadata"]["resourceVersion"], "");
    }

    #[test]
    fn json_uses_four_spaces_and_sorted_keys() {
        let s = to_json(&json!({"b": 1, "a": {"d": [1], "c": null}})).unwrap();
        assert_eq!(
            s,
            "{\n    \"a\": {\n        \"c\": null,\n        \"d\": [\n            1\n        ]\n    },\n    \"b\": 1\n}\n"
        );
    }

    #[test]
    fn yaml_sorts_keys() {
        let s = to_yaml(&json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "web"}}));
        assert_eq!(s, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n");
        let s = render(&json!({"items": []}), OutputFormat::Yaml).unwrap();
        assert_eq!(s, "items: []\n");
        let s = render(&json!({"x": 1}), OutputFormat::Json).unwrap();
        assert_eq!(s, "{\n    \"x\": 1\n}\n");
    }
}
