//! The ConfigMaps and Secrets a pod uses: read from the API when a container is created (its
//! `env`, `envFrom` and volumes) and again every sync period for the volumes of a running pod,
//! so a changed ConfigMap reaches the pod's files (the kubelet's Get strategy over its
//! Watch one: the node authorizer lets a node get one referenced object, not list them).
//!
//! A volume is a directory under the pod's state written as Kubernetes' atomic writer does:
//! the files live in a timestamped `..<time>` directory, `..data` links to it, and each
//! top-level name links through `..data`. An update writes a new directory and swaps the
//! `..data` link with a rename, so a reader in the container sees the old files or the new
//! ones, never a mix. The container gets the directory bind-mounted read-only.
//!
//! Secrets are written to the node's disk like ConfigMaps (Kubernetes uses a tmpfs); their
//! values are never logged.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use k8s_openapi::api::core::v1::{ConfigMap, Container, KeyToPath, Pod, Secret, Volume};
use kube::{Api, Client};

/// Which kind of object a reference names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    ConfigMap,
    Secret,
}

impl Kind {
    /// As the kubelet's not-found errors name it (`configmap "x" not found`).
    fn resource(self) -> &'static str {
        match self {
            Kind::ConfigMap => "configmap",
            Kind::Secret => "secret",
        }
    }

    /// As the kubelet's missing-key errors name it.
    pub fn title(self) -> &'static str {
        match self {
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
        }
    }
}

/// One object's keys and values (a ConfigMap's data and binaryData, a Secret's data).
pub type Data = BTreeMap<String, Vec<u8>>;

/// The objects a pod references, as read from the API (`None`: it does not exist).
#[derive(Debug, Default, Clone)]
pub struct Objects {
    pub namespace: String,
    found: HashMap<(Kind, String), Option<Data>>,
}

impl Objects {
    /// `Some(data)` when the object exists; `Ok(None)` when it is missing but `optional`; the
    /// kubelet's error otherwise.
    pub fn get(&self, kind: Kind, name: &str, optional: bool) -> Result<Option<&Data>, String> {
        match self.found.get(&(kind, name.to_string())) {
            Some(Some(d)) => Ok(Some(d)),
            _ if optional => Ok(None),
            _ => Err(format!("{} \"{name}\" not found", kind.resource())),
        }
    }

    /// Objects given directly (tests).
    #[cfg(test)]
    pub fn with(namespace: &str, objects: Vec<(Kind, &str, Data)>) -> Self {
        Self {
            namespace: namespace.to_string(),
            found: objects
                .into_iter()
                .map(|(k, n, d)| ((k, n.to_string()), Some(d)))
                .collect(),
        }
    }
}

/// The ConfigMaps and Secrets `containers` (their env and envFrom) and the pod's volumes name.
pub fn references<'a>(
    pod: &'a Pod,
    containers: impl IntoIterator<Item = &'a Container>,
) -> BTreeSet<(Kind, String)> {
    let mut out = BTreeSet::new();
    for c in containers {
        for e in c.env_from.iter().flatten() {
            if let Some(r) = &e.config_map_ref {
                out.insert((Kind::ConfigMap, r.name.clone()));
            }
            if let Some(r) = &e.secret_ref {
                out.insert((Kind::Secret, r.name.clone()));
            }
        }
        for e in c.env.iter().flatten() {
            let Some(from) = &e.value_from else { continue };
            if let Some(r) = &from.config_map_key_ref {
                out.insert((Kind::ConfigMap, r.name.clone()));
            }
            if let Some(r) = &from.secret_key_ref {
                out.insert((Kind::Secret, r.name.clone()));
            }
        }
    }
    for v in volumes(pod) {
        if let Some((kind, name)) = volume_source(v) {
            out.insert((kind, name));
        }
    }
    out
}

fn volumes(pod: &Pod) -> &[Volume] {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default()
}

/// The object a configMap or secret volume shows.
fn volume_source(v: &Volume) -> Option<(Kind, String)> {
    if let Some(cm) = &v.config_map {
        return Some((Kind::ConfigMap, cm.name.clone()));
    }
    v.secret
        .as_ref()
        .map(|s| (Kind::Secret, s.secret_name.clone().unwrap_or_default()))
}

/// Reads `refs` in `ns` from the API; a missing object is recorded as such, any other
/// failure is the error.
pub async fn fetch(
    client: &Client,
    ns: &str,
    refs: &BTreeSet<(Kind, String)>,
) -> Result<Objects, String> {
    let mut found = HashMap::new();
    for (kind, name) in refs {
        let data = match kind {
            Kind::ConfigMap => {
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
                let cm = api
                    .get_opt(name)
                    .await
                    .map_err(|e| format!("couldn't get configMap {ns}/{name}: {e}"))?;
                cm.map(|cm| {
                    let mut d: Data = cm
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.into_bytes()))
                        .collect();
                    d.extend(
                        cm.binary_data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.0)),
                    );
                    d
                })
            }
            Kind::Secret => {
                let api: Api<Secret> = Api::namespaced(client.clone(), ns);
                let s = api
                    .get_opt(name)
                    .await
                    .map_err(|e| format!("couldn't get secret {ns}/{name}: {e}"))?;
                s.map(|s| {
                    s.data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect()
                })
            }
        };
        found.insert((*kind, name.clone()), data);
    }
    Ok(Objects {
        namespace: ns.to_string(),
        found,
    })
}

/// A volume's files: relative path → (content, mode).
pub type Payload = BTreeMap<String, (Vec<u8>, u32)>;

/// Kubernetes' default file mode of configMap and secret volumes (0644).
const DEFAULT_MODE: i32 = 0o644;

/// What a configMap or secret volume holds (`None` for other volumes): every key as a file,
/// or the `items` asked for at their paths (a missing key is an error unless optional).
pub fn payload(v: &Volume, objects: &Objects) -> Option<Result<Payload, String>> {
    let (kind, name) = volume_source(v)?;
    let (items, default_mode, optional) = match (&v.config_map, &v.secret) {
        (Some(cm), _) => (cm.items.as_deref(), cm.default_mode, cm.optional),
        (None, Some(s)) => (s.items.as_deref(), s.default_mode, s.optional),
        (None, None) => return None,
    };
    let optional = optional == Some(true);
    Some(build_payload(
        kind,
        &name,
        items,
        default_mode,
        optional,
        objects,
    ))
}

fn build_payload(
    kind: Kind,
    name: &str,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    optional: bool,
    objects: &Objects,
) -> Result<Payload, String> {
    let mode = |m: Option<i32>| {
        u32::try_from(m.or(default_mode).unwrap_or(DEFAULT_MODE) & 0o777).unwrap_or(0o644)
    };
    let empty = Data::new();
    let data = objects.get(kind, name, optional)?.unwrap_or(&empty);
    let mut out = Payload::new();
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (k, v) in data {
                out.insert(k.clone(), (v.clone(), mode(None)));
            }
        }
        Some(items) => {
            for item in items {
                let Some(v) = data.get(&item.key) else {
                    if optional {
                        continue;
                    }
                    return Err(match kind {
                        Kind::ConfigMap => {
                            format!("configmap references non-existent config key: {}", item.key)
                        }
                        Kind::Secret => {
                            format!("references non-existent secret key: {}", item.key)
                        }
                    });
                };
                safe_path(&item.path)?;
                out.insert(item.path.clone(), (v.clone(), mode(item.mode)));
            }
        }
    }
    Ok(out)
}

/// An item path stays inside its volume and off the writer's `..` names (the API checks this
/// too; the node does not rely on it).
fn safe_path(p: &str) -> Result<(), String> {
    let bad = p.is_empty()
        || p.starts_with('/')
        || p.starts_with("..")
        || p.split('/').any(|c| c.is_empty() || c == "..");
    if bad {
        return Err(format!("invalid item path {p:?}"));
    }
    Ok(())
}

const DATA_LINK: &str = "..data";
const DATA_TMP_LINK: &str = "..data_tmp";

/// Writes `payload` into `dir` with Kubernetes' atomic writer layout; returns whether
/// anything changed (an unchanged payload is not rewritten).
pub fn write(dir: &Path, payload: &Payload) -> Result<bool, String> {
    let io = |what: &str, p: &Path, e: std::io::Error| format!("{what} {}: {e}", p.display());
    std::fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
    let link = dir.join(DATA_LINK);
    let old = std::fs::read_link(&link).ok();
    if let Some(old) = &old
        && holds(&dir.join(old), payload)
    {
        return Ok(false);
    }
    let now = jiff::Timestamp::now();
    let stamp = format!(
        "{}.{:09}",
        now.strftime("..%Y_%m_%d_%H_%M_%S"),
        now.subsec_nanosecond()
    );
    let ts = dir.join(&stamp);
    std::fs::create_dir(&ts).map_err(|e| io("creating", &ts, e))?;
    for (path, (bytes, mode)) in payload {
        let file = ts.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io("creating", parent, e))?;
        }
        std::fs::write(&file, bytes).map_err(|e| io("writing", &file, e))?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode))
            .map_err(|e| io("setting the mode of", &file, e))?;
    }
    std::fs::set_permissions(&ts, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| io("setting the mode of", &ts, e))?;
    let tmp = dir.join(DATA_TMP_LINK);
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp).map_err(|e| io("linking", &tmp, e))?;
    // The swap: readers see the old files or the new ones.
    std::fs::rename(&tmp, &link).map_err(|e| io("renaming", &tmp, e))?;
    let top: BTreeSet<&str> = payload.keys().filter_map(|p| p.split('/').next()).collect();
    for name in &top {
        let entry = dir.join(name);
        if std::fs::symlink_metadata(&entry).is_err() {
            std::os::unix::fs::symlink(Path::new(DATA_LINK).join(name), &entry)
                .map_err(|e| io("linking", &entry, e))?;
        }
    }
    for entry in std::fs::read_dir(dir).map_err(|e| io("reading", dir, e))? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !top.contains(name.as_str()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    if let Some(old) = old {
        let old = dir.join(old);
        if old != ts {
            let _ = std::fs::remove_dir_all(old);
        }
    }
    Ok(true)
}

/// Whether `dir` holds exactly `payload` (contents and modes).
fn holds(dir: &Path, payload: &Payload) -> bool {
    let mut files = Vec::new();
    if list_files(dir, &mut files).is_err() || files.len() != payload.len() {
        return false;
    }
    payload.iter().all(|(path, (bytes, mode))| {
        let p = dir.join(path);
        let same_mode =
            std::fs::metadata(&p).is_ok_and(|m| (m.permissions().mode() & 0o777) == *mode);
        same_mode && std::fs::read(&p).is_ok_and(|b| b == *bytes)
    })
}

fn list_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            list_files(&entry.path(), out)?;
        } else {
            out.push(entry.path());
        }
    }
    Ok(())
}

/// Where a pod's volume `name` lives (beside its emptyDirs).
pub fn volume_dir(pod_dir: &Path, name: &str) -> PathBuf {
    pod_dir.join("volumes").join(name)
}

/// Writes the configMap and secret volumes `c` mounts; the first failure is the volume's
/// name and why.
pub fn write_volumes(
    pod: &Pod,
    c: &Container,
    pod_dir: &Path,
    objects: &Objects,
) -> Result<(), (String, String)> {
    let mounted: BTreeSet<&str> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.name.as_str())
        .collect();
    for v in volumes(pod)
        .iter()
        .filter(|v| mounted.contains(v.name.as_str()))
    {
        let Some(p) = payload(v, objects) else {
            continue;
        };
        let fail = |e: String| (v.name.clone(), e);
        let p = p.map_err(fail)?;
        write(&volume_dir(pod_dir, &v.name), &p).map_err(fail)?;
    }
    Ok(())
}

/// Rewrites the pod's configMap and secret volumes that were written before (a container
/// mounts them) from `objects`; returns the volumes that changed. Volumes whose object is
/// gone keep their last files, as in Kubernetes.
pub fn refresh_volumes(pod: &Pod, pod_dir: &Path, objects: &Objects) -> Vec<String> {
    let mut changed = Vec::new();
    for v in volumes(pod) {
        let dir = volume_dir(pod_dir, &v.name);
        if !dir.join(DATA_LINK).exists() {
            continue;
        }
        if let Some(Ok(p)) = payload(v, objects)
            && write(&dir, &p).unwrap_or(false)
        {
            changed.push(v.name.clone());
        }
    }
    changed
}

/// The objects behind the pod's configMap and secret volumes.
pub fn volume_references(pod: &Pod) -> BTreeSet<(Kind, String)> {
    volumes(pod).iter().filter_map(volume_source).collect()
}

/// Re-reads the objects behind the pod's written configMap and secret volumes and rewrites
/// the volumes that changed; returns their names.
pub async fn refresh(client: &Client, pod: &Pod, pod_dir: &Path) -> Result<Vec<String>, String> {
    let refs = volume_references(pod);
    if refs.is_empty() {
        return Ok(Vec::new());
    }
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let objects = fetch(client, ns, &refs).await?;
    Ok(refresh_volumes(pod, pod_dir, &objects))
}

#[cfg(test)]
mod tests;
