//! Label selector matching and printing, as metav1.LabelSelectorAsSelector does them (for the
//! template check of workload validation and the SELECTOR column).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `labels` satisfy every requirement of `sel`. An empty selector matches everything.
/// Unknown operators match nothing.
pub(crate) fn matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_label = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    by_label
        && sel.match_expressions.iter().flatten().all(|req| {
            let values = req.values.as_deref().unwrap_or_default();
            let value = labels.get(&req.key);
            match req.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

/// The selector in Kubernetes' string form (`app=web,tier in (a,b),!legacy`), requirements
/// sorted by key; "" for an empty selector. `None` when the selector cannot be converted
/// (unknown operator, In/NotIn without values, Exists with values).
pub(crate) fn selector_string(sel: &LabelSelector) -> Option<String> {
    let mut reqs: Vec<(String, String)> = sel
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), format!("{k}={v}")))
        .collect();
    for req in sel.match_expressions.iter().flatten() {
        let mut values = req.values.clone().unwrap_or_default();
        values.sort();
        let k = &req.key;
        let s = match (req.operator.as_str(), values.is_empty()) {
            ("In", false) => format!("{k} in ({})", values.join(",")),
            ("NotIn", false) => format!("{k} notin ({})", values.join(",")),
            ("Exists", true) => k.clone(),
            ("DoesNotExist", true) => format!("!{k}"),
            _ => return None,
        };
        reqs.push((k.clone(), s));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    Some(
        reqs.into_iter()
            .map(|(_, s)| s)
            .collect::<Vec<_>>()
            .join(","),
    )
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
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
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
