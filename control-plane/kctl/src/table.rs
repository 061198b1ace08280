//! Server-side printing: the meta.k8s.io/v1 `Table` the API server returns for `get`, and how
//! kubectl lays it out (upper-case headers, NAMESPACE first with `-A`, priority-1 columns only
//! with `-o wide`, `kind/name` when several kinds are printed, LABELS with `--show-labels`).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// The Accept header that asks for a Table instead of the objects.
pub const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Table {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: TableMeta,
    #[serde(default)]
    pub column_definitions: Vec<Column>,
    #[serde(default)]
    pub rows: Vec<Row>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TableMeta {
    #[serde(default)]
    pub resource_version: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default)]
    pub format: String,
    #[serde(default)]
    pub priority: i32,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Row {
    #[serde(default)]
    pub cells: Vec<Value>,
    /// PartialObjectMetadata (or the full object) of the row.
    #[serde(default)]
    pub object: Value,
}

impl Row {
    pub fn namespace(&self) -> &str {
        self.object["metadata"]["namespace"].as_str().unwrap_or("")
    }

    fn labels(&self) -> BTreeMap<String, String> {
        self.object["metadata"]["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// How to lay a table out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent kubectl print switches"
)]
pub struct PrintOptions {
    /// `-o wide`: include priority > 0 columns.
    pub wide: bool,
    /// `-A` on a namespaced resource: a NAMESPACE column first.
    pub with_namespace: bool,
    /// Prefix names with `kind.group/` (several kinds in one listing).
    pub kind_prefix: Option<String>,
    /// `--show-labels`: a LABELS column last.
    pub show_labels: bool,
    pub no_headers: bool,
}

/// Tab-separated lines for `table` (header included unless `include_header` is false or there
/// are no rows — kubectl prints nothing at all for an empty table). Feed the result to
/// [`crate::tabwriter::TabWriter`].
pub fn render_lines(table: &Table, opts: &PrintOptions, include_header: bool) -> String {
    if table.rows.is_empty() {
        return String::new();
    }
    let visible: Vec<usize> = table
        .column_definitions
        .iter()
        .enumerate()
        .filter(|(_, c)| opts.wide || c.priority == 0)
        .map(|(i, _)| i)
        .collect();
    let name_column = name_column(&table.column_definitions);
    let mut out = String::new();
    if include_header && !opts.no_headers {
        let mut header: Vec<String> = Vec::new();
        if opts.with_namespace {
            header.push("NAMESPACE".into());
        }
        header.extend(
            visible
                .iter()
                .map(|&i| table.column_definitions[i].name.to_uppercase()),
        );
        if opts.show_labels {
            header.push("LABELS".into());
        }
        out.push_str(&header.join("\t"));
        out.push('\n');
    }
    for row in &table.rows {
        let mut cells: Vec<String> = Vec::new();
        if opts.with_namespace {
            cells.push(row.namespace().to_string());
        }
        for &i in &visible {
            let mut cell = row.cells.get(i).map(cell_text).unwrap_or_default();
            if Some(i) == name_column
                && let Some(prefix) = &opts.kind_prefix
            {
                cell = format!("{prefix}/{cell}");
            }
            cells.push(cell);
        }
        if opts.show_labels {
            cells.push(format_labels(&row.labels()));
        }
        out.push_str(&cells.join("\t"));
        out.push('\n');
    }
    out
}

/// The column holding object names: the one declared with format `name` (kubectl's rule), else
/// one called "Name".
fn name_column(columns: &[Column]) -> Option<usize> {
    columns
        .iter()
        .position(|c| c.format == "name" && c.type_ == "string")
        .or_else(|| {
            columns
                .iter()
                .position(|c| c.name.eq_ignore_ascii_case("name"))
        })
}

/// A cell as Go's `fmt.Sprint` shows it; text stops at the first line break (with `...`),
/// as kubectl does, so rows stay on one line.
pub fn cell_text(v: &Value) -> String {
    let s = match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(cell_text).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| format!("{k}:{}", cell_text(&m[*k])))
                .collect();
            format!("map[{}]", parts.join(" "))
        }
    };
    match s.find(['\n', '\r', '\x0c']) {
        Some(i) => format!("{}...", &s[..i]),
        None => s.replace('\t', " "),
    }
}

/// `a=b,c=d` (sorted), or `<none>`: apimachinery's `labels.FormatLabels`.
pub fn format_labels(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "<none>".into();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tabwriter::TabWriter;
    use serde_json::json;

    fn pods_table() -> Table {
        serde_json::from_value(json!({
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": "42"},
            "columnDefinitions": [
                {"name": "Name", "type": "string", "format": "name", "description": "", "priority": 0},
                {"name": "Ready", "type": "string", "format": "", "description": "", "priority": 0},
                {"name": "Restarts", "type": "integer", "format": "", "description": "", "priority": 0},
                {"name": "Age", "type": "string", "format": "", "description": "", "priority": 0},
                {"name": "IP", "type": "string", "format": "", "description": "", "priority": 1},
                {"name": "Node", "type": "string", "format": "", "description": "", "priority": 1},
            ],
            "rows": [
                {"cells": ["web-7d4b9c", "1/1", 0, "5m", "10.0.0.12", "node-a"],
                 "object": {"kind": "PartialObjectMetadata", "metadata": {"name": "web-7d4b9c", "namespace": "default", "labels": {"app": "web", "tier": "fe"}}}},
                {"cells": ["db", "0/1", 12, "3h", null, "<none>"],
                 "object": {"kind": "PartialObjectMetadata", "metadata": {"name": "db", "namespace": "prod"}}},
            ],
        }))
        .unwrap()
    }

    fn print(table: &Table, opts: &PrintOptions) -> String {
        TabWriter::for_tables().format(&render_lines(table, opts, true))
    }

    #[test]
    fn default_output_hides_wide_columns() {
        let t = pods_table();
        assert_eq!(t.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(
            print(&t, &PrintOptions::default()),
            "NAME         READY   RESTARTS   AGE\n\
             web-7d4b9c   1/1     0          5m\n\
             db           0/1     12         3h\n"
        );
    }

    #[test]
    fn wide_output_adds_priority_columns() {
        let opts = PrintOptions {
            wide: true,
            ..Default::default()
        };
        assert_eq!(
            print(&pods_table(), &opts),
            "NAME         READY   RESTARTS   AGE   IP          NODE\n\
             web-7d4b9c   1/1     0          5m    10.0.0.12   node-a\n\
             db           0/1     12         3h                <none>\n"
        );
    }

    #[test]
    fn all_namespaces_puts_namespace_first() {
        let opts = PrintOptions {
            with_namespace: true,
            ..Default::default()
        };
        assert_eq!(
            print(&pods_table(), &opts),
            "NAMESPACE   NAME         READY   RESTARTS   AGE\n\
             default     web-7d4b9c   1/1     0          5m\n\
             prod        db           0/1     12         3h\n"
        );
    }

    #[test]
    fn kind_prefix_labels_and_no_headers() {
        let opts = PrintOptions {
            kind_prefix: Some("pod".into()),
            show_labels: true,
            no_headers: true,
            ..Default::default()
        };
        assert_eq!(
            print(&pods_table(), &opts),
            "pod/web-7d4b9c   1/1   0     5m    app=web,tier=fe\n\
             pod/db           0/1   12    3h    <none>\n"
        );
    }

    #[test]
    fn empty_tables_print_nothing() {
        let mut t = pods_table();
        t.rows.clear();
        assert_eq!(render_lines(&t, &PrintOptions::default(), true), "");
    }

    #[test]
    fn short_rows_and_missing_name_format() {
        // A server that sends fewer cells than columns, and no `format: name`.
        let t: Table = serde_json::from_value(json!({
            "columnDefinitions": [{"name": "Name", "type": "string"}, {"name": "Age", "type": "string"}],
            "rows": [{"cells": ["x"]}],
        }))
        .unwrap();
        let opts = PrintOptions {
            kind_prefix: Some("lease.coordination.k8s.io".into()),
            ..Default::default()
        };
        assert_eq!(
            print(&t, &opts),
            "NAME                          AGE\nlease.coordination.k8s.io/x   \n"
        );
    }

    #[test]
    fn cells_print_like_go() {
        assert_eq!(cell_text(&json!(null)), "");
        assert_eq!(cell_text(&json!(true)), "true");
        assert_eq!(cell_text(&json!(3)), "3");
        assert_eq!(cell_text(&json!(1.5)), "1.5");
        assert_eq!(cell_text(&json!(["a", 1])), "[a 1]");
        assert_eq!(cell_text(&json!({"b": 1, "a": "x"})), "map[a:x b:1]");
        assert_eq!(cell_text(&json!("first\nsecond")), "first...");
        assert_eq!(cell_text(&json!("a\tb")), "a b");
    }

    #[test]
    fn formats_labels() {
        assert_eq!(format_labels(&BTreeMap::new()), "<none>");
        let l: BTreeMap<String, String> = [("b", "2"), ("a", "1")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(format_labels(&l), "a=1,b=2");
    }
}
