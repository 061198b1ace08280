//! The standalone input: one manifest file or a directory of them (`*.yaml`, `*.yml`,
//! `*.json`, not recursive). Files are re-read only when their size or modification time
//! changes, so editing one small file among many costs the parse of that file only.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    time::SystemTime,
};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};

use crate::{manifest, model::namespace_of};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    #[error("{kind} {name} is defined in both {} and {}", first.display(), second.display())]
    Duplicate {
        kind: &'static str,
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
}

type Fingerprint = (SystemTime, u64);
pub type Objects = (Vec<Service>, Vec<EndpointSlice>);

struct Parsed {
    fingerprint: Fingerprint,
    services: Vec<Service>,
    slices: Vec<EndpointSlice>,
}

/// A manifest file or directory, with the parsed objects of every file cached.
pub struct ManifestSource {
    path: PathBuf,
    /// The listing seen by the last poll (also after an error, so a bad file is reported
    /// once, not on every poll).
    seen: BTreeMap<PathBuf, Fingerprint>,
    parsed: HashMap<PathBuf, Parsed>,
    polled: bool,
}

impl ManifestSource {
    #[must_use]
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            seen: BTreeMap::new(),
            parsed: HashMap::new(),
            polled: false,
        }
    }

    fn listing(&self) -> Result<BTreeMap<PathBuf, Fingerprint>, SourceError> {
        let read_err = |path: &Path| {
            let path = path.to_path_buf();
            move |error| SourceError::Read { path, error }
        };
        let fp = |p: &Path| -> Result<Fingerprint, SourceError> {
            let md = std::fs::metadata(p).map_err(read_err(p))?;
            Ok((md.modified().map_err(read_err(p))?, md.len()))
        };
        let mut out = BTreeMap::new();
        if self.path.is_dir() {
            for entry in std::fs::read_dir(&self.path).map_err(read_err(&self.path))? {
                let p = entry.map_err(read_err(&self.path))?.path();
                let is_manifest = p
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
                if is_manifest && p.is_file() {
                    out.insert(p.clone(), fp(&p)?);
                }
            }
        } else {
            out.insert(self.path.clone(), fp(&self.path)?);
        }
        Ok(out)
    }

    /// `None` when nothing changed since the last call; otherwise all objects (re-reading
    /// only the files that changed), or the first error, in which case the caller keeps
    /// its running state.
    pub fn poll(&mut self) -> Option<Result<Objects, SourceError>> {
        let first = !std::mem::replace(&mut self.polled, true);
        let listing = match self.listing() {
            Ok(l) => l,
            Err(e) => {
                // Report a missing/unreadable source once, until it changes again.
                let report = first || !self.seen.is_empty();
                self.seen.clear();
                return report.then_some(Err(e));
            }
        };
        if listing == self.seen {
            return None;
        }
        self.seen = listing.clone();
        self.parsed.retain(|p, _| listing.contains_key(p));
        for (path, fingerprint) in &listing {
            if self
                .parsed
                .get(path)
                .is_some_and(|p| p.fingerprint == *fingerprint)
            {
                continue;
            }
            match manifest::load_file(path) {
                Ok((services, slices)) => {
                    self.parsed.insert(
                        path.clone(),
                        Parsed {
                            fingerprint: *fingerprint,
                            services,
                            slices,
                        },
                    );
                }
                Err(e) => {
                    self.parsed.remove(path);
                    return Some(Err(e.into()));
                }
            }
        }
        Some(self.merge())
    }

    /// All objects, in file order; an object defined in two files is an error.
    fn merge(&self) -> Result<Objects, SourceError> {
        let mut owner: HashMap<(&'static str, String), &Path> = HashMap::new();
        let mut services = Vec::new();
        let mut slices = Vec::new();
        let mut files: Vec<_> = self.parsed.iter().collect();
        files.sort_by(|a, b| a.0.cmp(b.0));
        for (path, parsed) in files {
            let metas = parsed
                .services
                .iter()
                .map(|s| ("Service", &s.metadata))
                .chain(parsed.slices.iter().map(|s| ("EndpointSlice", &s.metadata)));
            for (kind, meta) in metas {
                let name = format!(
                    "{}/{}",
                    namespace_of(meta),
                    meta.name.as_deref().unwrap_or_default()
                );
                if let Some(first) = owner.insert((kind, name.clone()), path) {
                    return Err(SourceError::Duplicate {
                        kind,
                        name,
                        first: first.to_path_buf(),
                        second: path.clone(),
                    });
                }
            }
            services.extend(parsed.services.iter().cloned());
            slices.extend(parsed.slices.iter().cloned());
        }
        Ok((services, slices))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, ip: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  clusterIP: {ip}\n  ports: [{{port: 80}}]\n"
        )
    }

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kproxy-source-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn names(objs: &Objects) -> Vec<String> {
        let mut v: Vec<String> = objs
            .0
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn directory_is_merged_and_only_changes_reported() {
        let d = dir("merge");
        std::fs::write(d.join("a.yaml"), svc("a", "10.96.0.1")).unwrap();
        std::fs::write(d.join("b.yml"), svc("b", "10.96.0.2")).unwrap();
        std::fs::write(d.join("notes.txt"), "not a manifest").unwrap();
        let mut src = ManifestSource::new(&d);
        let objs = src.poll().expect("first poll reports").unwrap();
        assert_eq!(names(&objs), ["a", "b"]);
        assert!(src.poll().is_none(), "nothing changed");
        std::fs::write(d.join("b.yml"), svc("b2", "10.96.0.3")).unwrap();
        let objs = src.poll().expect("change seen").unwrap();
        assert_eq!(names(&objs), ["a", "b2"]);
        std::fs::remove_file(d.join("a.yaml")).unwrap();
        assert_eq!(names(&src.poll().unwrap().unwrap()), ["b2"]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bad_file_and_duplicates_are_errors_reported_once() {
        let d = dir("errors");
        std::fs::write(d.join("a.yaml"), svc("a", "10.96.0.1")).unwrap();
        std::fs::write(
            d.join("b.yaml"),
            "apiVersion: v1\nkind: Service\nmetadata: {name: [\n",
        )
        .unwrap();
        let mut src = ManifestSource::new(&d);
        let err = src.poll().unwrap().unwrap_err().to_string();
        assert!(err.contains("b.yaml"), "{err}");
        assert!(
            src.poll().is_none(),
            "an unchanged bad file is reported once"
        );
        std::fs::write(d.join("b.yaml"), svc("a", "10.96.0.9")).unwrap();
        let err = src.poll().unwrap().unwrap_err().to_string();
        assert!(err.contains("defined in both"), "{err}");
        std::fs::write(d.join("b.yaml"), svc("b", "10.96.0.9")).unwrap();
        assert_eq!(names(&src.poll().unwrap().unwrap()), ["a", "b"]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn missing_source_is_an_error() {
        let mut src = ManifestSource::new(Path::new("/nonexistent/kproxy/services.yaml"));
        let err = src.poll().expect("reported on the first poll").unwrap_err();
        assert!(err.to_string().contains("cannot read"), "{err}");
        assert!(src.poll().is_none(), "and not again until it changes");
    }
}
