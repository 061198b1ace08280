//! Resource types: the catalog discovered from the server, resolution of what users type
//! (`po`, `pods`, `Pod`, `deployments.apps`, `deploy/web`) and splitting of `TYPE NAME...`
//! arguments.

use anyhow::{Result, bail};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList;
use kube::core::ApiResource;
use kube::discovery::{Discovery, Scope};

/// One served resource at one version, with everything needed to address it and to match it
/// against user input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceInfo {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    /// Lower-case singular name; discovery leaves it empty for older servers, then the kind
    /// in lower case stands in.
    pub singular: String,
    pub short_names: Vec<String>,
    pub namespaced: bool,
    pub verbs: Vec<String>,
    /// Names of subresources (`status`, `scale`, `log`, ...).
    pub subresources: Vec<String>,
    /// Groupings such as `all` (`kctl get all`).
    pub categories: Vec<String>,
    /// Whether this is the group's preferred version (only those answer to names).
    pub preferred: bool,
}

impl ResourceInfo {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn api_resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.clone(),
            version: self.version.clone(),
            api_version: self.api_version(),
            kind: self.kind.clone(),
            plural: self.plural.clone(),
        }
    }

    /// `pod`, `deployment.apps`: the prefix kubectl prints in `-o name` and in messages like
    /// `deployment.apps/web created`.
    pub fn kind_ref(&self) -> String {
        kind_ref(&self.kind, &self.group)
    }

    pub fn supports(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }

    pub fn has_subresource(&self, name: &str) -> bool {
        self.subresources.iter().any(|s| s == name)
    }

    fn singular_or_kind(&self) -> String {
        if self.singular.is_empty() {
            self.kind.to_lowercase()
        } else {
            self.singular.clone()
        }
    }
}

/// `kind.group` in lower case, or just `kind` for the core group.
pub fn kind_ref(kind: &str, group: &str) -> String {
    if group.is_empty() {
        kind.to_lowercase()
    } else {
        format!("{}.{group}", kind.to_lowercase())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResolveError {
    #[error("the server doesn't have a resource type \"{0}\"")]
    Unknown(String),
}

/// Every resource the server serves.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    entries: Vec<ResourceInfo>,
    aliases_loaded: bool,
}

impl Catalog {
    /// Entries in priority order: when a name matches in several groups, the first wins (the
    /// core group comes first, like kubectl).
    pub fn new(entries: Vec<ResourceInfo>) -> Self {
        Catalog {
            entries,
            aliases_loaded: false,
        }
    }

    /// Builds the catalog from kube's discovery: every version of every group, core first.
    pub fn from_discovery(discovery: &Discovery) -> Self {
        let mut groups: Vec<_> = discovery.groups().collect();
        groups.sort_by_key(|g| (!g.name().is_empty(), g.name().to_string()));
        let mut entries = Vec::new();
        for group in groups {
            let preferred = group.preferred_version_or_latest().to_string();
            for version in group.versions() {
                for (ar, caps) in group.versioned_resources(version) {
                    entries.push(ResourceInfo {
                        group: ar.group.clone(),
                        version: ar.version.clone(),
                        kind: ar.kind.clone(),
                        plural: ar.plural.clone(),
                        singular: String::new(),
                        short_names: Vec::new(),
                        namespaced: matches!(caps.scope, Scope::Namespaced),
                        verbs: caps.operations.clone(),
                        subresources: caps
                            .subresources
                            .iter()
                            .map(|(sub, _)| sub.plural.clone())
                            .collect(),
                        categories: Vec::new(),
                        preferred: version == preferred,
                    });
                }
            }
        }
        Catalog::new(entries)
    }

    /// Whether short and singular names have been merged in (see [`Catalog::merge_aliases`]).
    pub fn aliases_loaded(&self) -> bool {
        self.aliases_loaded
    }

    /// The preferred group versions, for fetching their resource lists.
    pub fn preferred_group_versions(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for e in self.entries.iter().filter(|e| e.preferred) {
            let gv = e.api_version();
            if !out.contains(&gv) {
                out.push(gv);
            }
        }
        out
    }

    /// kube's discovery keeps neither short names, singular names nor categories, so they come
    /// from the raw resource lists of the same group versions.
    pub fn merge_aliases(&mut self, lists: &[APIResourceList]) {
        for list in lists {
            let (group, version) = split_group_version(&list.group_version);
            for r in list.resources.iter().filter(|r| !r.name.contains('/')) {
                if let Some(e) = self
                    .entries
                    .iter_mut()
                    .find(|e| e.group == group && e.version == version && e.plural == r.name)
                {
                    e.singular = r.singular_name.to_lowercase();
                    e.short_names = r.short_names.clone().unwrap_or_default();
                    e.categories = r.categories.clone().unwrap_or_default();
                }
            }
        }
        self.aliases_loaded = true;
    }

    /// Resolves what a user typed: plural, singular, short name or kind, case-insensitively,
    /// optionally qualified as `name.group` or `name.version.group`.
    pub fn resolve(&self, input: &str) -> Result<&ResourceInfo, ResolveError> {
        let lower = input.trim().to_lowercase();
        let unknown = || ResolveError::Unknown(input.to_string());
        if lower.is_empty() {
            return Err(unknown());
        }
        // Unqualified first: `pods` must not be read as resource `pods` in group "".
        if let Some(e) = self.find(&lower, None, None) {
            return Ok(e);
        }
        let Some((name, qualifier)) = lower.split_once('.') else {
            return Err(unknown());
        };
        if let Some(e) = self.find(name, None, Some(qualifier)) {
            return Ok(e);
        }
        // `deployments.v1.apps`
        if let Some((version, group)) = qualifier.split_once('.')
            && let Some(e) = self.find(name, Some(version), Some(group))
        {
            return Ok(e);
        }
        Err(unknown())
    }

    /// Every preferred resource in `category` (e.g. `all`), in priority order.
    pub fn category(&self, category: &str) -> Vec<&ResourceInfo> {
        let lower = category.trim().to_lowercase();
        self.entries
            .iter()
            .filter(|e| e.preferred && e.categories.contains(&lower))
            .collect()
    }

    fn find(
        &self,
        name: &str,
        version: Option<&str>,
        group: Option<&str>,
    ) -> Option<&ResourceInfo> {
        let candidates = || {
            self.entries.iter().filter(move |e| {
                group.is_none_or(|g| e.group == g)
                    && match version {
                        Some(v) => e.version == v,
                        None => e.preferred,
                    }
            })
        };
        // Exact resource names beat kinds and short names (kubectl's RESTMapper order).
        candidates()
            .find(|e| e.plural == name)
            .or_else(|| candidates().find(|e| e.singular_or_kind() == name))
            .or_else(|| candidates().find(|e| e.kind.to_lowercase() == name))
            .or_else(|| {
                candidates().find(|e| e.short_names.iter().any(|s| s.eq_ignore_ascii_case(name)))
            })
    }

    /// The resource serving `kind` at `api_version` (as written in a manifest).
    pub fn for_kind(&self, api_version: &str, kind: &str) -> Option<&ResourceInfo> {
        let (group, version) = split_group_version(api_version);
        self.entries
            .iter()
            .find(|e| e.group == group && e.version == version && e.kind == kind)
    }
}

/// `apps/v1` → (`apps`, `v1`); `v1` → (``, `v1`).
pub fn split_group_version(gv: &str) -> (&str, &str) {
    gv.split_once('/').unwrap_or(("", gv))
}

/// One resource type as typed by the user, with the names asked for (none = all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeArg {
    pub resource: String,
    pub names: Vec<String>,
}

/// Splits `get`/`delete`/`describe` arguments: either `TYPE[,TYPE...] [NAME...]` or
/// `TYPE/NAME...` (all arguments in that form, as kubectl requires).
pub fn parse_type_args(args: &[String]) -> Result<Vec<TypeArg>> {
    let Some(first) = args.first() else {
        bail!("you must specify the type of resource");
    };
    if first.contains('/') || args.iter().skip(1).any(|a| a.contains('/')) {
        let mut out: Vec<TypeArg> = Vec::new();
        for arg in args {
            let Some((resource, name)) = arg.split_once('/') else {
                bail!(
                    "there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (e.g. 'kctl get resource/<resource_name>' instead of 'kctl get resource resource/<resource_name>'"
                );
            };
            if resource.is_empty() || name.is_empty() || name.contains('/') {
                bail!("arguments in resource/name form must have a single resource and name");
            }
            match out.last_mut() {
                Some(last) if last.resource == resource => last.names.push(name.to_string()),
                _ => out.push(TypeArg {
                    resource: resource.to_string(),
                    names: vec![name.to_string()],
                }),
            }
        }
        return Ok(out);
    }
    let names: Vec<String> = args[1..].to_vec();
    let types: Vec<&str> = first.split(',').collect();
    if types.iter().any(|t| t.trim().is_empty()) {
        bail!("invalid resource type list {first:?}");
    }
    Ok(types
        .into_iter()
        .map(|t| TypeArg {
            resource: t.trim().to_string(),
            names: names.clone(),
        })
        .collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResource;

    fn info(group: &str, kind: &str, plural: &str, namespaced: bool) -> ResourceInfo {
        ResourceInfo {
            group: group.into(),
            version: "v1".into(),
            kind: kind.into(),
            plural: plural.into(),
            singular: String::new(),
            short_names: vec![],
            namespaced,
            verbs: ["get", "list", "watch", "create", "delete", "patch"]
                .map(String::from)
                .to_vec(),
            subresources: vec![],
            categories: vec![],
            preferred: true,
        }
    }

    fn raw(name: &str, singular: &str, short: &[&str]) -> APIResource {
        let all = ["pods", "services", "deployments", "replicasets"].contains(&name);
        APIResource {
            name: name.into(),
            singular_name: singular.into(),
            short_names: Some(short.iter().map(std::string::ToString::to_string).collect()),
            categories: Some(if all { vec!["all".to_string()] } else { vec![] }),
            ..Default::default()
        }
    }

    /// A catalog shaped like the kproxy API server's, short names merged in.
    pub(crate) fn catalog() -> Catalog {
        let mut deploy = info("apps", "Deployment", "deployments", true);
        deploy.subresources = vec!["scale".into(), "status".into()];
        let mut c = Catalog::new(vec![
            info("", "Pod", "pods", true),
            info("", "Service", "services", true),
            info("", "Endpoints", "endpoints", true),
            info("", "Node", "nodes", false),
            info("", "Namespace", "namespaces", false),
            info("", "Event", "events", true),
            deploy,
            info("apps", "ReplicaSet", "replicasets", true),
            info("coordination.k8s.io", "Lease", "leases", true),
            info("discovery.k8s.io", "EndpointSlice", "endpointslices", true),
        ]);
        let core = APIResourceList {
            group_version: "v1".into(),
            resources: vec![
                raw("pods", "pod", &["po"]),
                raw("pods/status", "", &[]),
                raw("services", "service", &["svc"]),
                raw("endpoints", "endpoints", &["ep"]),
                raw("nodes", "node", &["no"]),
                raw("namespaces", "namespace", &["ns"]),
                raw("events", "event", &["ev"]),
            ],
        };
        let apps = APIResourceList {
            group_version: "apps/v1".into(),
            resources: vec![
                raw("deployments", "deployment", &["deploy"]),
                raw("replicasets", "replicaset", &["rs"]),
            ],
        };
        assert!(!c.aliases_loaded());
        c.merge_aliases(&[core, apps]);
        assert!(c.aliases_loaded());
        c
    }

    #[test]
    fn resolves_every_alias_kubectl_accepts() {
        let c = catalog();
        let cases = [
            ("pods", "pods"),
            ("po", "pods"),
            ("pod", "pods"),
            ("Pod", "pods"),
            ("PODS", "pods"),
            ("deploy", "deployments"),
            ("deployments", "deployments"),
            ("Deployment", "deployments"),
            ("rs", "replicasets"),
            ("svc", "services"),
            ("services", "services"),
            ("ep", "endpoints"),
            ("endpoints", "endpoints"),
            ("endpointslices", "endpointslices"),
            ("endpointslice", "endpointslices"),
            ("nodes", "nodes"),
            ("no", "nodes"),
            ("ns", "namespaces"),
            ("leases", "leases"),
            ("events", "events"),
            ("ev", "events"),
            ("deployments.apps", "deployments"),
            ("deploy.apps", "deployments"),
            ("deployments.v1.apps", "deployments"),
            ("leases.coordination.k8s.io", "leases"),
        ];
        for (input, plural) in cases {
            assert_eq!(
                c.resolve(input).map(|r| r.plural.as_str()),
                Ok(plural),
                "{input}"
            );
        }
    }

    #[test]
    fn rejects_unknown_types_and_wrong_groups() {
        let c = catalog();
        for bad in [
            "foo",
            "",
            "pods.apps",
            "deployments.v2.apps",
            "deployments.batch",
        ] {
            assert_eq!(
                c.resolve(bad),
                Err(ResolveError::Unknown(bad.to_string())),
                "{bad}"
            );
        }
        assert_eq!(
            c.resolve("foo").unwrap_err().to_string(),
            "the server doesn't have a resource type \"foo\""
        );
    }

    #[test]
    fn categories_expand_in_priority_order() {
        let c = catalog();
        let all: Vec<&str> = c
            .category("all")
            .iter()
            .map(|r| r.plural.as_str())
            .collect();
        assert_eq!(all, ["pods", "services", "deployments", "replicasets"]);
        assert!(c.category("ALL").len() == 4 && c.category("nothing").is_empty());
    }

    #[test]
    fn kinds_resolve_without_aliases() {
        // Before short names are merged, kinds and plurals still work.
        let c = Catalog::new(vec![info("apps", "ReplicaSet", "replicasets", true)]);
        assert_eq!(c.resolve("replicaset").unwrap().plural, "replicasets");
        assert!(c.resolve("rs").is_err());
    }

    #[test]
    fn non_preferred_versions_only_by_explicit_version() {
        let mut old = info("apps", "Deployment", "deployments", true);
        old.version = "v1beta1".into();
        old.preferred = false;
        let c = Catalog::new(vec![old, info("apps", "Deployment", "deployments", true)]);
        assert_eq!(c.resolve("deployments").unwrap().version, "v1");
        assert_eq!(
            c.resolve("deployments.v1beta1.apps").unwrap().version,
            "v1beta1"
        );
        assert_eq!(
            c.for_kind("apps/v1beta1", "Deployment").unwrap().version,
            "v1beta1"
        );
        assert!(c.for_kind("apps/v2", "Deployment").is_none());
    }

    #[test]
    fn kind_refs_and_api_versions() {
        let c = catalog();
        assert_eq!(c.resolve("po").unwrap().kind_ref(), "pod");
        assert_eq!(c.resolve("deploy").unwrap().kind_ref(), "deployment.apps");
        assert_eq!(c.resolve("deploy").unwrap().api_version(), "apps/v1");
        assert_eq!(c.resolve("svc").unwrap().api_version(), "v1");
        assert_eq!(c.for_kind("v1", "Service").unwrap().plural, "services");
        assert!(c.resolve("deploy").unwrap().has_subresource("scale"));
        assert!(c.resolve("po").unwrap().supports("list"));
        assert_eq!(
            c.preferred_group_versions()[..2],
            ["v1".to_string(), "apps/v1".to_string()]
        );
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(std::string::ToString::to_string).collect()
    }

    #[test]
    fn parses_type_and_name_arguments() {
        assert_eq!(
            parse_type_args(&args(&["pods"])).unwrap(),
            vec![TypeArg {
                resource: "pods".into(),
                names: vec![]
            }]
        );
        assert_eq!(
            parse_type_args(&args(&["pods,svc", "web"])).unwrap(),
            vec![
                TypeArg {
                    resource: "pods".into(),
                    names: vec!["web".into()]
                },
                TypeArg {
                    resource: "svc".into(),
                    names: vec!["web".into()]
                },
            ]
        );
        assert_eq!(
            parse_type_args(&args(&["pod/a", "pod/b", "svc/c"])).unwrap(),
            vec![
                TypeArg {
                    resource: "pod".into(),
                    names: vec!["a".into(), "b".into()]
                },
                TypeArg {
                    resource: "svc".into(),
                    names: vec!["c".into()]
                },
            ]
        );
    }

    #[test]
    fn rejects_malformed_type_arguments() {
        assert!(parse_type_args(&[]).is_err());
        assert!(parse_type_args(&args(&["pods", "pod/web"])).is_err());
        assert!(parse_type_args(&args(&["pod/web", "other"])).is_err());
        assert!(parse_type_args(&args(&["pod/"])).is_err());
        assert!(parse_type_args(&args(&["/web"])).is_err());
        assert!(parse_type_args(&args(&["pod/a/b"])).is_err());
        assert!(parse_type_args(&args(&["pods,,svc"])).is_err());
    }
}
