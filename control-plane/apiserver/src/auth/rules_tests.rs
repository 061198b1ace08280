use super::*;

/// RBAC's reading of a listed rule (k8s.io/component-helpers/auth/rbac: verbs, groups,
/// resources with `*` and `*/sub`, resourceNames), to check the list says what `decide` does.
fn rbac_allows(rules: &[Listed], a: &Attributes) -> bool {
    let combined = match a.sub {
        Some(s) => format!("{}/{s}", a.resource),
        None => a.resource.to_string(),
    };
    rules.iter().any(|r| {
        verb_matches(&r.verbs, a.verb)
            && r.api_groups.iter().any(|g| *g == "*" || *g == a.group)
            && r.resources.iter().any(|res| {
                res == "*"
                    || *res == combined
                    || a.sub.is_some_and(|s| res.strip_prefix("*/") == Some(s))
            })
            && (r.resource_names.is_empty()
                || a.name
                    .is_some_and(|n| r.resource_names.iter().any(|x| x == n)))
    })
}

const VERBS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "escalate",
];

/// Every (group, resource, subresource) a rule names, every served one, and some that are not.
fn samples() -> Vec<(&'static str, &'static str, Option<&'static str>)> {
    let mut out = vec![
        ("", "pods", Some("log")),
        ("", "pods", Some("exec")),
        ("", "nodes", Some("proxy")),
        ("", "widgets", None),
        ("apps", "pods", None),
        ("", "*", None),
    ];
    for r in RESOURCES {
        out.push((r.group, r.plural, None));
        out.push((r.group, r.plural, Some("status")));
        out.push((r.group, r.plural, Some("scale")));
    }
    for rule in NODE_RULES.iter().chain(ADMIN_RULES) {
        if let Resources::Listed { group, resources } = rule.resources {
            for r in resources {
                match r.split_once('/') {
                    Some((res, sub)) => out.push((group, res, Some(sub))),
                    None => out.push((group, r, None)),
                }
            }
        }
    }
    out
}

#[test]
fn authorizer_and_rules_review_agree() {
    let bound = vec!["p-bound".to_string()];
    for id in [Identity::Admin, Identity::Node("n1".into())] {
        for ns in [
            None,
            Some("default"),
            Some(NODE_LEASE_NAMESPACE),
            Some("kube-system"),
        ] {
            let (listed, incomplete) = resource_rules(&id, ns.unwrap_or_default(), Some(&bound));
            // A node's ConfigMap and Secret reads depend on its pods: not listed.
            assert_eq!(incomplete, id != Identity::Admin);
            for (group, resource, sub) in samples() {
                for verb in VERBS {
                    for name in ["n1", "n2", "p-bound", "p-other"] {
                        let a = Attributes {
                            verb,
                            group,
                            resource,
                            sub,
                            ns,
                            name: Some(name),
                        };
                        let by_authorizer = match decide(&id, &a) {
                            Access::Allowed => true,
                            // A ConfigMap or Secret read is left out of this review
                            // (incomplete) and checked per request.
                            Access::Denied | Access::ReferencedBy(_) => false,
                            // The handler's check with the stored pod.
                            Access::PodBoundTo(_) => bound.iter().any(|b| b == name),
                        };
                        assert_eq!(
                            by_authorizer,
                            rbac_allows(&listed, &a),
                            "{id:?} {a:?}: authorizer and rules review disagree"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn every_node_rule_grants_something() {
    // A rule that no sample hits would escape the agreement test above.
    for (i, rule) in NODE_RULES.iter().enumerate() {
        let hit = samples().into_iter().any(|(group, resource, sub)| {
            rule.resources.matches(group, resource, sub)
                && rule.verbs.iter().all(|v| VERBS.contains(v) || *v == "*")
        });
        assert!(hit, "node rule {i} is not sampled");
    }
}

#[test]
fn names_and_namespaces() {
    let n = Identity::Node("n1".into());
    let lease = |verb, ns, name| Attributes {
        verb,
        group: "coordination.k8s.io",
        resource: "leases",
        sub: None,
        ns,
        name,
    };
    assert_eq!(
        decide(&n, &lease("update", Some(NODE_LEASE_NAMESPACE), Some("n1"))),
        Access::Allowed
    );
    assert_eq!(
        decide(&n, &lease("update", Some("default"), Some("n1"))),
        Access::Denied
    );
    // The name of a create is in the object, which admission checks.
    assert_eq!(
        decide(&n, &lease("create", Some(NODE_LEASE_NAMESPACE), None)),
        Access::Allowed
    );
    assert_eq!(
        decide(&n, &lease("update", Some(NODE_LEASE_NAMESPACE), None)),
        Access::Denied
    );
    // The L2 announcement leases (admission checks their names), never deleted by nodes.
    assert_eq!(
        decide(
            &n,
            &lease("update", Some("kube-system"), Some("kproxy-l2-a.b"))
        ),
        Access::Allowed
    );
    assert_eq!(
        decide(
            &n,
            &lease("delete", Some("kube-system"), Some("kproxy-l2-a.b"))
        ),
        Access::Denied
    );
    let (in_lease_ns, _) = resource_rules(&n, NODE_LEASE_NAMESPACE, Some(&[]));
    let (in_default, _) = resource_rules(&n, "default", Some(&[]));
    assert_eq!(in_lease_ns.len(), in_default.len() + 1);
    assert!(
        !in_default.iter().any(
            |r| r.verbs.contains(&"update") && r.resources.contains(&"pods/status".to_string())
        ),
        "no bound pod: no pod rule"
    );
    let (_, incomplete) = resource_rules(&n, "", None);
    assert!(incomplete, "bound pods not listed without a namespace");
}

#[test]
fn paths() {
    let n = Identity::Node("n1".into());
    assert!(allows_path(&n, "get", "/healthz"));
    assert!(allows_path(&n, "get", "/apis/apps/v1"));
    assert!(!allows_path(&n, "get", "/metrics"));
    assert!(!allows_path(&n, "post", "/healthz"));
    assert!(allows_path(&Identity::Admin, "get", "/metrics"));
    assert!(allows_path(&Identity::Admin, "delete", "/anything"));
}
