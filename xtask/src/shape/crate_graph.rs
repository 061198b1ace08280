//! The crate graph drawn in docs/ARCHITECTURE.md must be the one Cargo builds: every library
//! dependency between workspace crates is an arrow, and every arrow is a dependency.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context as _, Result};

/// (from, to) package names.
pub type Edges = BTreeSet<(String, String)>;

const START: &str = "<!-- crate-graph -->";
const END: &str = "<!-- /crate-graph -->";

/// The solid arrows (`a[name] --> b[name]`) between the doc's markers; dotted arrows (`-.->`)
/// are notes, not dependencies. Node ids stand for their bracketed labels.
pub fn from_doc(doc: &str) -> Result<Edges> {
    let start = doc
        .find(START)
        .with_context(|| format!("no {START} marker"))?;
    let end = doc[start..]
        .find(END)
        .with_context(|| format!("no {END} marker after {START}"))?;
    let block = &doc[start + START.len()..start + end];
    let mut labels: BTreeMap<&str, &str> = BTreeMap::new();
    let mut arrows = Vec::new();
    for line in block.lines() {
        let (arrow, dotted) = if line.contains("-.->") {
            ("-.->", true)
        } else {
            ("-->", false)
        };
        let Some((from, to)) = line.split_once(arrow) else {
            continue;
        };
        let (from_id, from_label) = node_of(from.trim());
        let (to_id, to_label) = node_of(to.trim());
        for (id, label) in [(from_id, from_label), (to_id, to_label)] {
            if let Some(label) = label {
                labels.insert(id, label);
            }
        }
        if !dotted {
            arrows.push((from_id, to_id));
        }
    }
    let name = |id: &str| labels.get(id).copied().unwrap_or(id).to_string();
    Ok(arrows
        .into_iter()
        .map(|(a, b)| (name(a), name(b)))
        .collect())
}

/// `id[label]` or `id`.
fn node_of(text: &str) -> (&str, Option<&str>) {
    match text.split_once('[') {
        Some((id, rest)) => (id.trim(), rest.strip_suffix(']')),
        None => (text, None),
    }
}

/// The library dependencies between the workspace's packages, from `cargo metadata`.
pub fn from_metadata(meta: &serde_json::Value) -> Edges {
    let packages = meta["packages"].as_array().map_or(&[][..], Vec::as_slice);
    let names: BTreeSet<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    let mut edges = Edges::new();
    for p in packages {
        let from = p["name"].as_str().unwrap_or_default();
        for d in p["dependencies"].as_array().into_iter().flatten() {
            let to = d["name"].as_str().unwrap_or_default();
            if d["kind"].is_null() && names.contains(to) {
                edges.insert((from.to_string(), to.to_string()));
            }
        }
    }
    edges
}

/// What differs, one line per edge.
pub fn differences(doc: &Edges, cargo: &Edges) -> Vec<String> {
    let missing = cargo
        .difference(doc)
        .map(|(a, b)| format!("{a} depends on {b}, but the picture has no arrow"));
    let extra = doc
        .difference(cargo)
        .map(|(a, b)| format!("the picture draws {a} → {b}, which is no dependency"));
    missing.chain(extra).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn e(pairs: &[(&str, &str)]) -> Edges {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_string(), (*b).to_string()))
            .collect()
    }

    #[test]
    fn arrows_between_the_markers_by_label() {
        let doc = "```\nx --> y\n```\n<!-- crate-graph -->\n```mermaid\nflowchart TD\n  a[kproxy-a] --> b[kproxy-b]\n  a --> c\n  a -.-> d[ebpf]\n  d --> b\n```\n<!-- /crate-graph -->\nz --> w\n";
        assert_eq!(
            from_doc(doc).unwrap(),
            e(&[
                ("kproxy-a", "kproxy-b"),
                ("kproxy-a", "c"),
                ("ebpf", "kproxy-b")
            ])
        );
        assert!(from_doc("no markers").is_err());
    }

    #[test]
    fn metadata_edges_are_library_dependencies_inside_the_workspace() {
        let meta = json!({"packages": [
            {"name": "a", "dependencies": [
                {"name": "b", "kind": null}, {"name": "c", "kind": "dev"}, {"name": "serde", "kind": null}
            ]},
            {"name": "b", "dependencies": []},
            {"name": "c", "dependencies": [{"name": "b", "kind": "build"}]},
        ]});
        assert_eq!(from_metadata(&meta), e(&[("a", "b")]));
        let diff = differences(&e(&[("a", "c")]), &e(&[("a", "b")]));
        assert_eq!(
            diff,
            [
                "a depends on b, but the picture has no arrow",
                "the picture draws a → c, which is no dependency"
            ]
        );
    }
}
