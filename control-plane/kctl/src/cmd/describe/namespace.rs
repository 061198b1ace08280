//! `describe namespace`. Like kubectl, no events; quotas and limit ranges are not served by
//! this cluster, so their sections (which kubectl only prints when served) are left out.

use serde_json::Value;

use super::{Clock, Writer, annotations_multiline, items, labels_multiline, str_of, string_map};

pub(super) fn render(ns: &Value, clock: &Clock) -> String {
    let mut w = Writer::new();
    let meta = &ns["metadata"];
    put!(w, 0, "Name:\t{}\n", str_of(&meta["name"]));
    labels_multiline(&mut w, "Labels", &string_map(&meta["labels"]));
    annotations_multiline(&mut w, "Annotations", &string_map(&meta["annotations"]));
    put!(w, 0, "Status:\t{}\n", str_of(&ns["status"]["phase"]));
    let conditions = items(&ns["status"]["conditions"]);
    if !conditions.is_empty() {
        w.write(0, "Conditions:\n");
        w.write(1, "Type\tStatus\tLastTransitionTime\tReason\tMessage\n");
        w.write(1, "----\t------\t------------------\t------\t-------\n");
        for c in conditions {
            put!(
                w,
                1,
                "{}\t{}\t{}\t{}\t{}\n",
                str_of(&c["type"]),
                str_of(&c["status"]),
                clock.rfc(&c["lastTransitionTime"]),
                str_of(&c["reason"]),
                str_of(&c["message"])
            );
        }
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::super::tests::clock;
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_a_namespace() {
        let ns = json!({"metadata": {"name": "default", "labels": {"kubernetes.io/metadata.name": "default"}}, "status": {"phase": "Active"}});
        assert_eq!(
            render(&ns, &clock()),
            "Name:         default\nLabels:       kubernetes.io/metadata.name=default\nAnnotations:  <none>\nStatus:       Active\n"
        );
        let terminating = json!({"metadata": {"name": "x"}, "status": {"phase": "Terminating", "conditions": [
            {"type": "NamespaceContentRemaining", "status": "True", "lastTransitionTime": "2024-05-01T11:00:00Z", "reason": "SomeResourcesRemain", "message": "pods remain"}]}});
        let out = render(&terminating, &clock());
        assert!(
            out.contains("Conditions:\n  Type                       Status  LastTransitionTime"),
            "{out}"
        );
        assert!(out.contains("SomeResourcesRemain  pods remain\n"), "{out}");
    }
}
