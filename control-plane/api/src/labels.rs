//! Label selectors as the workload validation and the SELECTOR columns use them (on top of
//! kproxy-apimachinery's selector), and label maps as `kubectl get` prints them.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kproxy_apimachinery::selector::LabelSelector as Selector;

/// Whether `labels` satisfy every requirement of `sel` (kproxy-apimachinery's selector). An
/// empty selector matches everything; a selector that does not convert matches nothing.
pub(crate) fn matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    Selector::from_api(sel).is_ok_and(|s| s.matches(labels))
}

/// The selector in Kubernetes' string form (`app=web,tier in (a,b),!legacy`), requirements
/// sorted by key; "" for an empty selector. `None` when the selector does not convert (unknown
/// operator, In/NotIn without values, Exists with values).
pub(crate) fn selector_string(sel: &LabelSelector) -> Option<String> {
    Selector::from_api(sel).ok().map(|s| s.to_string())
}

/// labels.FormatLabels: `k=v,k2=v2` sorted by key, "<none>" when empty.
pub(crate) fn format_labels(labels: Option<&BTreeMap<String, String>>) -> String {
    let parts: Vec<String> = labels
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if parts.is_empty() {
        "<none>".into()
    } else {
        parts.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn req(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| {
                values
                    .iter()
                    .map(std::string::ToString::to_string)
                    .collect()
            }),
        }
    }

    #[test]
    fn matching() {
        let sel = LabelSelector {
            match_labels: Some(map(&[("app", "web")])),
            match_expressions: Some(vec![
                req("tier", "In", &["fe", "be"]),
                req("legacy", "DoesNotExist", &[]),
                req("env", "NotIn", &["prod"]),
                req("team", "Exists", &[]),
            ]),
        };
        assert!(matches(
            &sel,
            &map(&[("app", "web"), ("tier", "fe"), ("team", "x")])
        ));
        assert!(!matches(&sel, &map(&[("app", "web"), ("tier", "fe")])));
        assert!(!matches(
            &sel,
            &map(&[("app", "web"), ("tier", "xx"), ("team", "x")])
        ));
        assert!(!matches(
            &sel,
            &map(&[
                ("app", "web"),
                ("tier", "fe"),
                ("team", "x"),
                ("legacy", "1")
            ])
        ));
        assert!(!matches(
            &sel,
            &map(&[
                ("app", "web"),
                ("tier", "fe"),
                ("team", "x"),
                ("env", "prod")
            ])
        ));
        assert!(matches(&LabelSelector::default(), &map(&[])));
        let bad = LabelSelector {
            match_expressions: Some(vec![req("a", "Like", &["x"])]),
            ..Default::default()
        };
        assert!(!matches(&bad, &map(&[("a", "x")])));
    }

    #[test]
    fn strings() {
        let sel = LabelSelector {
            match_labels: Some(map(&[("app", "web")])),
            match_expressions: Some(vec![
                req("tier", "In", &["fe", "be"]),
                req("legacy", "DoesNotExist", &[]),
                req("zone", "Exists", &[]),
                req("env", "NotIn", &["prod"]),
            ]),
        };
        assert_eq!(
            selector_string(&sel).as_deref(),
            Some("app=web,env notin (prod),!legacy,tier in (be,fe),zone")
        );
        assert_eq!(
            selector_string(&LabelSelector::default()).as_deref(),
            Some("")
        );
        let bad = LabelSelector {
            match_expressions: Some(vec![req("a", "In", &[])]),
            ..Default::default()
        };
        assert_eq!(selector_string(&bad), None);
        assert_eq!(
            format_labels(Some(&map(&[("b", "2"), ("a", "1")]))),
            "a=1,b=2"
        );
        assert_eq!(format_labels(None), "<none>");
    }
}
