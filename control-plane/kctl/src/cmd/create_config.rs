//! `kctl create configmap|secret generic NAME --from-literal/--from-file/--from-env-file`, with
//! kubectl's key rules and messages (kubectl/pkg/cmd/create/create_configmap.go,
//! create_secret.go).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Where the keys of a ConfigMap or Secret come from.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Sources {
    /// `key=value`; repeat for several keys.
    #[arg(long = "from-literal", value_name = "KEY=VALUE")]
    pub literals: Vec<String>,
    /// A file (key: its name, or `key=path`) or a directory (each regular file in it).
    #[arg(long = "from-file", value_name = "[KEY=]PATH")]
    pub files: Vec<String>,
    /// A file of `KEY=VALUE` lines (`#` comments and blank lines skipped).
    #[arg(long = "from-env-file", value_name = "PATH")]
    pub env_files: Vec<String>,
}

/// The kind being built, as kubectl names it in its messages.
#[derive(Clone, Copy)]
enum Target {
    ConfigMap,
    Secret,
}

impl Target {
    fn kind(self) -> &'static str {
        match self {
            Target::ConfigMap => "ConfigMap",
            Target::Secret => "Secret",
        }
    }
}

/// Keys and their bytes, in the order kubectl adds them; duplicates refused.
struct Entries {
    target: Target,
    name: String,
    map: BTreeMap<String, Vec<u8>>,
}

impl Entries {
    fn add(&mut self, key: &str, value: Vec<u8>) -> Result<()> {
        let errs = kproxy_api::validate::config_key(key);
        if !errs.is_empty() {
            bail!(
                "{key:?} is not a valid key name for a {}: {}",
                self.target.kind(),
                errs.join(",")
            );
        }
        if self.map.contains_key(key) {
            bail!(
                "cannot add key {key:?}, another key by that name already exists in Data for {} {:?}",
                self.target.kind(),
                self.name
            );
        }
        self.map.insert(key.to_string(), value);
        Ok(())
    }
}

/// ParseLiteralSource: `key=value`, split at the first `=`.
fn literal(source: &str) -> Result<(&str, &str)> {
    match source.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k, v)),
        _ => bail!("invalid literal source {source}, expected key=value"),
    }
}

/// The entries `sources` name, read from the local files.
fn collect(target: Target, name: &str, sources: &Sources) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut e = Entries {
        target,
        name: name.to_string(),
        map: BTreeMap::new(),
    };
    for f in &sources.files {
        let (key, path) = match f.split_once('=') {
            Some((k, p)) if !k.is_empty() && !p.is_empty() => (Some(k), p),
            Some(_) => bail!("key names or file paths cannot contain '='"),
            None => (None, f.as_str()),
        };
        let meta = std::fs::metadata(path).with_context(|| format!("error reading {path}"))?;
        if meta.is_dir() {
            if key.is_some() {
                bail!("cannot give a key name for a directory path");
            }
            let mut items: Vec<_> = std::fs::read_dir(path)
                .with_context(|| format!("error listing files in {path}"))?
                .filter_map(std::result::Result::ok)
                .filter(|i| i.file_type().is_ok_and(|t| t.is_file()))
                .collect();
            items.sort_by_key(std::fs::DirEntry::file_name);
            for item in items {
                let key = item.file_name().to_string_lossy().into_owned();
                let bytes = std::fs::read(item.path())
                    .with_context(|| format!("error reading {}", item.path().display()))?;
                e.add(&key, bytes)?;
            }
        } else {
            let key = match key {
                Some(k) => k.to_string(),
                None => Path::new(path)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            };
            let bytes = std::fs::read(path).with_context(|| format!("error reading {path}"))?;
            e.add(&key, bytes)?;
        }
    }
    for l in &sources.literals {
        let (k, v) = literal(l)?;
        e.add(k, v.as_bytes().to_vec())?;
    }
    for path in &sources.env_files {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("error reading {path}"))?;
        for (k, v) in env_file(&text)? {
            e.add(&k, v.into_bytes())?;
        }
    }
    Ok(e.map)
}

/// An env file's `KEY=VALUE` lines (a bare `KEY` takes this process's value of KEY).
fn env_file(text: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = match line.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (line.to_string(), std::env::var(line).unwrap_or_default()),
        };
        if k.is_empty() || k.contains(char::is_whitespace) {
            bail!(
                "{k:?} is not a valid key name: line {} of the env file",
                n + 1
            );
        }
        out.push((k, v));
    }
    Ok(out)
}

/// kubectl's ConfigMap: text values in `data`, anything not UTF-8 in `binaryData`.
pub fn build_config_map(name: &str, sources: &Sources) -> Result<ConfigMap> {
    let mut data = BTreeMap::new();
    let mut binary = BTreeMap::new();
    for (k, v) in collect(Target::ConfigMap, name, sources)? {
        match String::from_utf8(v) {
            Ok(s) => {
                data.insert(k, s);
            }
            Err(e) => {
                binary.insert(k, ByteString(e.into_bytes()));
            }
        }
    }
    Ok(ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        data: (!data.is_empty()).then_some(data),
        binary_data: (!binary.is_empty()).then_some(binary),
        ..Default::default()
    })
}

/// kubectl's generic Secret: every value in `data`.
pub fn build_secret(name: &str, type_: Option<&str>, sources: &Sources) -> Result<Secret> {
    let data: BTreeMap<String, ByteString> = collect(Target::Secret, name, sources)?
        .into_iter()
        .map(|(k, v)| (k, ByteString(v)))
        .collect();
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        type_: type_.map(String::from),
        data: (!data.is_empty()).then_some(data),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn literals(l: &[&str]) -> Sources {
        Sources {
            literals: l.iter().map(|s| (*s).to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn literals_and_files_become_keys() {
        let dir = std::env::temp_dir().join(format!("kctl-cm-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("d")).unwrap();
        std::fs::write(dir.join("app.conf"), "x=1\n").unwrap();
        std::fs::write(dir.join("d/one"), "1").unwrap();
        std::fs::write(dir.join("d/bin"), [0xff, 0xfe]).unwrap();
        let mut s = literals(&["greeting=hello=world"]);
        s.files = vec![
            dir.join("app.conf").display().to_string(),
            format!("renamed={}", dir.join("app.conf").display()),
            dir.join("d").display().to_string(),
        ];
        let cm = build_config_map("cfg", &s).unwrap();
        let data = cm.data.unwrap();
        assert_eq!(data["greeting"], "hello=world");
        assert_eq!(data["app.conf"], "x=1\n");
        assert_eq!(data["renamed"], "x=1\n");
        assert_eq!(data["one"], "1");
        assert_eq!(cm.binary_data.unwrap()["bin"].0, vec![0xff, 0xfe]);
        let secret = build_secret("s", None, &s).unwrap();
        assert_eq!(secret.data.unwrap()["bin"].0, vec![0xff, 0xfe]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn kubectls_errors() {
        let err = |l: &[&str]| {
            build_config_map("cfg", &literals(l))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(&["novalue"]),
            "invalid literal source novalue, expected key=value"
        );
        assert_eq!(
            err(&["a=1", "a=2"]),
            "cannot add key \"a\", another key by that name already exists in Data for ConfigMap \"cfg\""
        );
        assert!(err(&["bad key=1"]).starts_with(
            "\"bad key\" is not a valid key name for a ConfigMap: a valid config key"
        ));
        assert!(
            build_secret("s", None, &literals(&["..x=1"]))
                .unwrap_err()
                .to_string()
                .contains("not a valid key name for a Secret")
        );
    }

    #[test]
    fn env_files() {
        let v = env_file("# c\n\nA=1\nB=x=y\n").unwrap();
        assert_eq!(v, [("A".into(), "1".into()), ("B".into(), "x=y".into())]);
        assert!(env_file("bad key=1").is_err());
    }
}
