//! Reading `-f` arguments: files, directories (recursively, `.yaml`/`.yml`/`.json`) and `-`
//! (stdin); multi-document YAML and JSON streams; `List` objects expanded into their items;
//! empty documents skipped.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

/// One object from a manifest, with where it came from (for error messages).
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub source: String,
    pub object: Value,
}

impl Manifest {
    pub fn api_version(&self) -> &str {
        self.object["apiVersion"].as_str().unwrap_or("")
    }

    pub fn kind(&self) -> &str {
        self.object["kind"].as_str().unwrap_or("")
    }

    pub fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or("")
    }

    pub fn namespace(&self) -> Option<&str> {
        self.object["metadata"]["namespace"]
            .as_str()
            .filter(|s| !s.is_empty())
    }
}

/// Loads every object named by the `-f` arguments, in order.
pub fn load_all(paths: &[String]) -> Result<Vec<Manifest>> {
    let mut out = Vec::new();
    for p in paths {
        if p == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading standard input")?;
            out.extend(parse_documents(&text, "STDIN", None)?);
            continue;
        }
        let path = Path::new(p);
        let meta =
            std::fs::metadata(path).with_context(|| format!("the path \"{p}\" does not exist"))?;
        let files = if meta.is_dir() {
            collect_files(path)?
        } else {
            vec![path.to_path_buf()]
        };
        for file in files {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let source = file.display().to_string();
            out.extend(parse_documents(
                &text,
                &source,
                file.extension().and_then(|e| e.to_str()),
            )?);
        }
    }
    if out.is_empty() {
        bail!("no objects passed to the command");
    }
    Ok(out)
}

/// Manifest files under `dir`, recursively, sorted by path.
pub fn collect_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading directory {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("reading directory {}", dir.display()))?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            out.extend(collect_files(&path)?);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(path);
        }
    }
    Ok(out)
}

/// Splits `text` into objects. `extension` picks the parser (`json` → JSON stream); without
/// one, text starting with `{` is read as JSON and anything else as YAML.
pub fn parse_documents(text: &str, source: &str, extension: Option<&str>) -> Result<Vec<Manifest>> {
    let json = match extension {
        Some("json") => true,
        Some(_) => false,
        None => text.trim_start().starts_with('{'),
    };
    let docs: Vec<Value> = if json {
        serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .collect::<Result<_, _>>()
            .with_context(|| format!("error parsing {source}"))?
    } else {
        kproxy_apimachinery::yaml::split(text)
            .iter()
            .map(|doc| {
                doc.value()
                    .with_context(|| format!("document at line {}", doc.line))
            })
            .collect::<Result<_, _>>()
            .with_context(|| format!("error parsing {source}"))?
    };
    let mut out = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        // `---` with nothing (or only comments) after it.
        if doc.is_null() {
            continue;
        }
        for object in expand_lists(doc) {
            validate(&object)
                .with_context(|| format!("error validating {source:?} (document {})", i + 1))?;
            out.push(Manifest {
                source: source.to_string(),
                object,
            });
        }
    }
    Ok(out)
}

/// `kind: List` (and `*List` kinds with items) stand for their items.
fn expand_lists(doc: Value) -> Vec<Value> {
    let is_list =
        doc["kind"].as_str().is_some_and(|k| k.ends_with("List")) && doc["items"].is_array();
    if !is_list {
        return vec![doc];
    }
    match doc {
        Value::Object(mut m) => match m.remove("items") {
            Some(Value::Array(items)) => items
                .into_iter()
                .filter(|i| !i.is_null())
                .flat_map(expand_lists)
                .collect(),
            _ => Vec::new(),
        },
        other => vec![other],
    }
}

fn validate(object: &Value) -> Result<()> {
    if !object.is_object() {
        bail!("expected an object, got {}", kind_of(object));
    }
    let mut missing = Vec::new();
    if object["apiVersion"].as_str().is_none_or(str::is_empty) {
        missing.push("apiVersion not set");
    }
    if object["kind"].as_str().is_none_or(str::is_empty) {
        missing.push("kind not set");
    }
    let meta = &object["metadata"];
    if meta["name"].as_str().is_none_or(str::is_empty)
        && meta["generateName"].as_str().is_none_or(str::is_empty)
    {
        missing.push("metadata.name not set");
    }
    if !missing.is_empty() {
        bail!("error validating data: [{}]", missing.join(", "));
    }
    Ok(())
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    pub(crate) struct TempDir(pub PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            let dir = std::env::temp_dir()
                .join(format!("kctl-test-{tag}-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const TWO_DOCS: &str = "\
# leading comment
---
apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
# only a comment
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: demo
spec:
  replicas: 2
---
";

    #[test]
    fn splits_multi_document_yaml_and_skips_empty_documents() {
        let docs = parse_documents(TWO_DOCS, "x.yaml", Some("yaml")).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(
            (docs[0].kind(), docs[0].name(), docs[0].namespace()),
            ("Namespace", "demo", None)
        );
        assert_eq!(
            (docs[1].api_version(), docs[1].name(), docs[1].namespace()),
            ("apps/v1", "web", Some("demo"))
        );
        assert_eq!(docs[1].object["spec"]["replicas"], 2);
        assert_eq!(docs[1].source, "x.yaml");
    }

    #[test]
    fn reads_json_streams_and_expands_lists() {
        let text = r#"{"apiVersion":"v1","kind":"List","items":[
            {"apiVersion":"v1","kind":"Service","metadata":{"name":"a"}},
            {"apiVersion":"v1","kind":"ServiceList","items":[{"apiVersion":"v1","kind":"Service","metadata":{"name":"b"}}]}]}
            {"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"p-"}}"#;
        let docs = parse_documents(text, "STDIN", None).unwrap();
        let names: Vec<&str> = docs.iter().map(super::Manifest::name).collect();
        assert_eq!(names, ["a", "b", ""]);
        assert_eq!(docs[2].kind(), "Pod");
    }

    #[test]
    fn rejects_invalid_documents() {
        let err =
            parse_documents("kind: Pod\nmetadata: {}\n", "bad.yaml", Some("yaml")).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("apiVersion not set") && msg.contains("metadata.name not set"),
            "{msg}"
        );
        assert!(!msg.contains("kind not set"), "{msg}");
        assert!(parse_documents("- a\n- b\n", "list.yaml", Some("yaml")).is_err());
        assert!(parse_documents("a: [unclosed\n", "broken.yaml", Some("yaml")).is_err());
        assert!(parse_documents("{\"a\":", "broken.json", Some("json")).is_err());
    }

    #[test]
    fn empty_input_has_no_documents() {
        assert!(
            parse_documents("", "e.yaml", Some("yaml"))
                .unwrap()
                .is_empty()
        );
        assert!(
            parse_documents("---\n---\n", "e.yaml", Some("yaml"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn walks_directories_recursively_for_manifest_files() {
        let dir = TempDir::new("manifests");
        let root = &dir.0;
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        std::fs::write(
            root.join("b.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n",
        )
        .unwrap();
        std::fs::write(
            root.join("a.json"),
            r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}}"#,
        )
        .unwrap();
        std::fs::write(root.join("notes.txt"), "not a manifest").unwrap();
        std::fs::write(
            root.join("sub/c.yml"),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: c}\n",
        )
        .unwrap();
        std::fs::write(root.join("sub/deeper/d.yaml"), "---\n").unwrap();
        let files = collect_files(root).unwrap();
        let rel: Vec<String> = files
            .iter()
            .map(|f| f.strip_prefix(root).unwrap().display().to_string())
            .collect();
        assert_eq!(rel, ["a.json", "b.yaml", "sub/c.yml", "sub/deeper/d.yaml"]);
        let all = load_all(&[root.display().to_string()]).unwrap();
        let names: Vec<&str> = all.iter().map(super::Manifest::name).collect();
        assert_eq!(names, ["a", "b", "c"]);
        // A single file works too; a missing path and an empty directory are errors.
        assert_eq!(
            load_all(&[root.join("b.yaml").display().to_string()])
                .unwrap()
                .len(),
            1
        );
        assert!(load_all(&[root.join("missing.yaml").display().to_string()]).is_err());
        assert!(load_all(&[root.join("sub/deeper").display().to_string()]).is_err());
    }

    /// A ConfigMap whose `b` is 20,000 references to a 20,000-element list: 400 million
    /// nodes if it were expanded.
    fn alias_bomb() -> String {
        let items = vec!["x"; 20_000].join(",");
        let refs = vec!["*a"; 20_000].join(",");
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: bomb}}\n\
             data:\n  a: &a [{items}]\n  b: [{refs}]\n"
        )
    }

    #[test]
    fn yaml_alias_bombs_are_refused_not_expanded() {
        // `kctl apply -f bomb.yaml`: refused while reading the file, naming it.
        let dir = TempDir::new("bomb");
        let path = dir.0.join("bomb.yaml");
        std::fs::write(&path, alias_bomb()).unwrap();
        let started = std::time::Instant::now();
        let err = load_all(&[path.display().to_string()]).expect_err("an alias bomb");
        let took = started.elapsed();
        let msg = format!("{err:#}");
        assert!(msg.contains("bomb.yaml"), "{msg}");
        assert!(
            msg.contains("too large once its aliases are expanded"),
            "{msg}"
        );
        // A debug build; a release build refuses it in milliseconds.
        assert!(took < std::time::Duration::from_secs(3), "{took:?}");
    }
}
