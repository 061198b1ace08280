//! YAML output in the style kubectl produces (go-yaml v2 via sigs.k8s.io/yaml): sorted keys,
//! lists at their parent's indentation, multi-line strings as literal blocks, and quoting only
//! where a plain scalar would be read back as something else (`"5"`, `"true"`,
//! `"2024-01-01T00:00:00Z"`) or is not allowed (`'*'`, `'a: b'`).

use std::fmt::Write as _;

use serde_json::Value;

/// `v` as a YAML document (no `---`), ending with a newline.
pub fn to_string(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => write_map(&mut out, v, 0),
        Value::Array(a) if !a.is_empty() => write_list(&mut out, v, 0),
        scalar => {
            out.push_str(&inline(scalar, 0));
            out.push('\n');
        }
    }
    out
}

fn sorted_entries(v: &Value) -> Vec<(&String, &Value)> {
    let mut entries: Vec<(&String, &Value)> = v
        .as_object()
        .map(|m| m.iter().collect())
        .unwrap_or_default();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

fn write_map(out: &mut String, v: &Value, indent: usize) {
    for (i, (k, val)) in sorted_entries(v).into_iter().enumerate() {
        // The first key of a list item continues the `- ` line.
        if i > 0 || !out.ends_with("- ") {
            pad(out, indent);
        }
        out.push_str(&scalar_string(k));
        out.push(':');
        write_value_after_key(out, val, indent);
    }
}

fn write_value_after_key(out: &mut String, val: &Value, indent: usize) {
    match val {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            write_map(out, val, indent + 2);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            write_list(out, val, indent);
        }
        scalar => {
            out.push(' ');
            out.push_str(&inline(scalar, indent + 2));
            out.push('\n');
        }
    }
}

fn write_list(out: &mut String, v: &Value, indent: usize) {
    for item in v.as_array().into_iter().flatten() {
        if !out.ends_with("- ") {
            pad(out, indent);
        }
        out.push_str("- ");
        match item {
            Value::Object(m) if !m.is_empty() => write_map(out, item, indent + 2),
            Value::Array(a) if !a.is_empty() => write_list(out, item, indent + 2),
            scalar => {
                out.push_str(&inline(scalar, indent + 2));
                out.push('\n');
            }
        }
    }
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// A scalar (or empty collection) on the current line; multi-line strings become literal
/// blocks indented to `block_indent`.
fn inline(v: &Value, block_indent: usize) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        Value::String(s) if s.contains('\n') && literal_ok(s) => literal_block(s, block_indent),
        Value::String(s) => scalar_string(s),
    }
}

/// Literal blocks cannot start with a space or hold characters that need escaping.
fn literal_ok(s: &str) -> bool {
    !s.starts_with(' ') && !s.chars().any(|c| c != '\n' && needs_escape(c))
}

fn literal_block(s: &str, indent: usize) -> String {
    let trailing = s.len() - s.trim_end_matches('\n').len();
    let chomp = match trailing {
        0 => "-",
        1 => "",
        _ => "+",
    };
    let mut out = format!("|{chomp}");
    let body = if trailing == 1 {
        &s[..s.len() - 1]
    } else {
        s.trim_end_matches('\n')
    };
    for line in body.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            out.extend(std::iter::repeat_n(' ', indent));
            out.push_str(line);
        }
    }
    // Keep the extra trailing newlines of a `|+` block.
    for _ in 1..trailing {
        out.push('\n');
    }
    out
}

/// A string scalar: plain when allowed and not read back as another type, else single or
/// double quoted.
pub fn scalar_string(s: &str) -> String {
    if s.chars().any(needs_escape) || s.contains('\n') {
        return double_quoted(s);
    }
    if resolves_to_non_string(s) {
        return double_quoted(s);
    }
    if plain_allowed(s) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "''"))
}

fn needs_escape(c: char) -> bool {
    (c.is_control() && c != '\n') || c == '\u{feff}'
}

fn double_quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c if needs_escape(c) => {
                let n = c as u32;
                if n <= 0xff {
                    let _ = write!(out, "\\x{n:02X}");
                } else {
                    let _ = write!(out, "\\u{n:04X}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// libyaml's rules for plain scalars in block context.
fn plain_allowed(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    if s.starts_with("---") || s.starts_with("...") {
        return false;
    }
    if first == ' ' || s.ends_with(' ') {
        return false;
    }
    if "#,[]{}&*!|>'\"%@`".contains(first) {
        return false;
    }
    let chars: Vec<char> = s.chars().collect();
    let followed_by_blank = |i: usize| chars.get(i + 1).is_none_or(|c| *c == ' ');
    if matches!(first, '-' | '?' | ':') && followed_by_blank(0) {
        return false;
    }
    for (i, &c) in chars.iter().enumerate() {
        if c == ':' && followed_by_blank(i) {
            return false;
        }
        if c == '#' && i > 0 && chars[i - 1] == ' ' {
            return false;
        }
    }
    true
}

/// Whether YAML 1.1 (as go-yaml v2 reads it) would take this plain scalar for a null, bool,
/// number or timestamp.
fn resolves_to_non_string(s: &str) -> bool {
    const SPECIAL: &[&str] = &[
        "", "~", "null", "Null", "NULL", "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO",
        "true", "True", "TRUE", "false", "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF",
        ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", "-.inf", "-.Inf", "-.INF", ".nan",
        ".NaN", ".NAN",
    ];
    SPECIAL.contains(&s) || is_int(s) || is_float(s) || is_timestamp(s) || is_base60(s)
}

fn is_int(s: &str) -> bool {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let digits_in = |t: &str, ok: fn(char) -> bool| {
        !t.is_empty() && t.chars().all(|c| ok(c) || c == '_') && t.chars().any(ok)
    };
    if let Some(hex) = body.strip_prefix("0x") {
        return digits_in(hex, |c| c.is_ascii_hexdigit());
    }
    if let Some(bin) = body.strip_prefix("0b") {
        return digits_in(bin, |c| c == '0' || c == '1');
    }
    if let Some(oct) = body.strip_prefix("0o") {
        return digits_in(oct, |c| ('0'..='7').contains(&c));
    }
    digits_in(body, |c| c.is_ascii_digit())
}

fn is_float(s: &str) -> bool {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let (int_part, frac) = match mantissa.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (mantissa, None),
    };
    let digits = |t: &str| t.chars().all(|c| c.is_ascii_digit() || c == '_');
    let mantissa_ok = match frac {
        Some(f) => {
            digits(int_part)
                && digits(f)
                && (int_part.chars().any(|c| c.is_ascii_digit())
                    || f.chars().any(|c| c.is_ascii_digit()))
        }
        None => {
            exponent.is_some()
                && !int_part.is_empty()
                && digits(int_part)
                && int_part.chars().any(|c| c.is_ascii_digit())
        }
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && e.chars().all(|c| c.is_ascii_digit())
    });
    mantissa_ok && exponent_ok
}

/// `2006-1-2`, optionally followed by a time (`T15:04:05Z`, ` 15:04:05.5`).
fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |from: usize, min: usize, max: usize| -> Option<usize> {
        let n = b[from..]
            .iter()
            .take(max)
            .take_while(|c| c.is_ascii_digit())
            .count();
        (n >= min).then_some(from + n)
    };
    let Some(i) = digits(0, 4, 4) else {
        return false;
    };
    if b.get(i) != Some(&b'-') {
        return false;
    }
    let Some(i) = digits(i + 1, 1, 2) else {
        return false;
    };
    if b.get(i) != Some(&b'-') {
        return false;
    }
    let Some(i) = digits(i + 1, 1, 2) else {
        return false;
    };
    if i == b.len() {
        return true;
    }
    if !matches!(b[i], b'T' | b't' | b' ') {
        return false;
    }
    let Some(j) = digits(i + 1, 1, 2) else {
        return false;
    };
    b.get(j) == Some(&b':')
}

/// Sexagesimal numbers (`1:30`), which YAML 1.1 reads as numbers.
fn is_base60(s: &str) -> bool {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let mut parts = body.split(':');
    let Some(head) = parts.next() else {
        return false;
    };
    let rest: Vec<&str> = parts.collect();
    if rest.is_empty()
        || head.is_empty()
        || !head.starts_with(|c: char| c.is_ascii_digit())
        || !head.chars().all(|c| c.is_ascii_digit() || c == '_')
    {
        return false;
    }
    let last = rest.len() - 1;
    rest.iter().enumerate().all(|(i, p)| {
        let (whole, frac) = if i == last {
            p.split_once('.').map_or((*p, None), |(a, b)| (a, Some(b)))
        } else {
            (*p, None)
        };
        !whole.is_empty()
            && whole.len() <= 2
            && whole.chars().all(|c| c.is_ascii_digit())
            && whole.parse::<u32>().is_ok_and(|n| n < 60)
            && frac.is_none_or(|f| f.chars().all(|c| c.is_ascii_digit() || c == '_'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documents_look_like_kubectls() {
        let v = json!({
            "kind": "Deployment",
            "apiVersion": "apps/v1",
            "metadata": {
                "name": "web",
                "creationTimestamp": "2026-11-26T20:07:23Z",
                "resourceVersion": "5",
                "labels": {"app": "web"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"a\":1}\n"},
                "finalizers": [],
                "managedFields": {},
            },
            "spec": {
                "replicas": 2,
                "paused": false,
                "template": {"spec": {"containers": [
                    {"name": "web", "image": "nginx", "args": ["-c", "echo hi"], "ports": [{"containerPort": 80}], "resources": {}},
                ]}},
            },
            "status": {"ratio": 0.5, "nothing": null, "matrix": [[1, 2], []]},
        });
        let expected = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: |
      {\"a\":1}
  creationTimestamp: \"2026-11-26T20:07:23Z\"
  finalizers: []
  labels:
    app: web
  managedFields: {}
  name: web
  resourceVersion: \"5\"
spec:
  paused: false
  replicas: 2
  template:
    spec:
      containers:
      - args:
        - -c
        - echo hi
        image: nginx
        name: web
        ports:
        - containerPort: 80
        resources: {}
status:
  matrix:
  - - 1
    - 2
  - []
  nothing: null
  ratio: 0.5
";
        assert_eq!(to_string(&v), expected);
    }

    #[test]
    fn quoting_rules() {
        for (s, want) in [
            ("web", "web"),
            ("", "\"\""),
            ("5", "\"5\""),
            ("-3", "\"-3\""),
            ("0x1F", "\"0x1F\""),
            ("1.5", "\"1.5\""),
            ("1e3", "\"1e3\""),
            (".5", "\".5\""),
            ("true", "\"true\""),
            ("yes", "\"yes\""),
            ("off", "\"off\""),
            ("null", "\"null\""),
            ("~", "\"~\""),
            ("2024-01-02", "\"2024-01-02\""),
            ("2024-01-02T03:04:05Z", "\"2024-01-02T03:04:05Z\""),
            ("1:30", "\"1:30\""),
            ("*", "'*'"),
            ("a: b", "'a: b'"),
            ("it's: x", "'it''s: x'"),
            (" lead", "' lead'"),
            ("- item", "'- item'"),
            ("#tag", "'#tag'"),
            ("a #b", "'a #b'"),
            ("a#b", "a#b"),
            ("http://x:80/y", "http://x:80/y"),
            ("-c", "-c"),
            ("1.2.3", "1.2.3"),
            ("10.96.0.1", "10.96.0.1"),
            ("tab\there", "\"tab\\there\""),
            ("a\"b", "a\"b"),
            ("{}", "'{}'"),
            ("100m", "100m"),
            ("v1.33.0", "v1.33.0"),
        ] {
            assert_eq!(scalar_string(s), want, "{s:?}");
        }
    }

    #[test]
    fn multi_line_strings() {
        assert_eq!(to_string(&json!({"a": "x\ny"})), "a: |-\n  x\n  y\n");
        assert_eq!(to_string(&json!({"a": "x\n\n"})), "a: |+\n  x\n\n");
        assert_eq!(to_string(&json!({"a": "x\n\ny\n"})), "a: |\n  x\n\n  y\n");
        assert_eq!(to_string(&json!({"a": " x\ny"})), "a: \" x\\ny\"\n");
        assert_eq!(to_string(&json!(["l1\nl2\n"])), "- |\n  l1\n  l2\n");
    }

    #[test]
    fn scalars_and_empty_documents() {
        assert_eq!(to_string(&json!({})), "{}\n");
        assert_eq!(to_string(&json!([])), "[]\n");
        assert_eq!(to_string(&json!("5")), "\"5\"\n");
        assert_eq!(to_string(&json!({"items": []})), "items: []\n");
    }
}
