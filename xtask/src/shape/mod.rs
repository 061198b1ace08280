//! `cargo xtask shape`: two rules about the code's shape that review kept finding broken, checked
//! mechanically so they stay true.
//!
//! 1. **No import cycle between modules of one crate.** Every `crate::…` and `super::…` path in
//!    a module's non-test code (`use` trees included) names a module; an edge from `a::b::c` to
//!    `a::d::e` is counted between the two children of their common ancestor (`a::b → a::d`).
//!    A module and its own ancestors or descendants are not edges: a parent may hold what its
//!    children share. Among the children of each module the edges must form no cycle.
//! 2. **No source file over [`MAX_LINES`] lines**, not counting a trailing `#[cfg(test)]`
//!    module block, files named `tests.rs`, integration tests (`tests/` directories) and
//!    generated code (an `@generated` marker in its first lines).
//! 3. **The crate graph in docs/ARCHITECTURE.md** is the one Cargo builds (`crate_graph.rs`).
//! 4. **Imports grouped** std/core/alloc, then external crates, then `crate`/`super`/`self`,
//!    each group after a blank line: rustfmt's `group_imports` would do it, but only on nightly.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::util::{step, workspace_root};

mod crate_graph;

/// The longest a source file may be, test modules aside.
pub const MAX_LINES: usize = 800;

pub fn shape() -> Result<()> {
    step("shape: import cycles, file lengths, import groups, the documented crate graph");
    let root = workspace_root();
    let mut problems = Vec::new();
    let meta = metadata(&root)?;
    let doc_path = root.join("docs/ARCHITECTURE.md");
    let doc = std::fs::read_to_string(&doc_path)
        .with_context(|| format!("reading {}", doc_path.display()))?;
    let drawn = crate_graph::from_doc(&doc).context("the crate graph in docs/ARCHITECTURE.md")?;
    for d in crate_graph::differences(&drawn, &crate_graph::from_metadata(&meta)) {
        problems.push(format!("docs/ARCHITECTURE.md crate graph: {d}"));
    }
    for (package, target_root) in targets(&meta) {
        let target_root = target_root
            .strip_prefix(&root)
            .map_or(target_root.clone(), Path::to_path_buf);
        let tree = ModuleTree::load(&root.join(&target_root))
            .with_context(|| format!("reading the modules of {}", target_root.display()))?;
        for cycle in tree.cycles() {
            problems.push(format!("{package}: {cycle}"));
        }
    }
    for file in source_files(&root)? {
        let text = std::fs::read_to_string(root.join(&file))
            .with_context(|| format!("reading {}", file.display()))?;
        for line in misgrouped_imports(&text) {
            problems.push(format!(
                "{}:{line}: imports out of their groups (std, external crates, then crate/super/self; a blank line between groups)",
                file.display()
            ));
        }
        if exempt_from_length(&file, &text) {
            continue;
        }
        let n = counted_lines(&text);
        if n > MAX_LINES {
            problems.push(format!(
                "{}: {n} lines (without its test module); the limit is {MAX_LINES}: split it by concern",
                file.display()
            ));
        }
    }
    if problems.is_empty() {
        println!(
            "shape: no import cycles, no file over {MAX_LINES} lines, imports grouped, the crate graph drawn as built"
        );
        return Ok(());
    }
    for p in &problems {
        println!("shape: {p}");
    }
    bail!("{} shape problem(s), listed above", problems.len())
}

/// `cargo metadata` of the workspace's own packages.
fn metadata(root: &Path) -> Result<serde_json::Value> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(root)
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("parsing cargo metadata")
}

/// (package name, root file) of every library and binary target of the workspace's packages.
fn targets(meta: &serde_json::Value) -> Vec<(String, PathBuf)> {
    let mut targets = Vec::new();
    for package in meta["packages"].as_array().into_iter().flatten() {
        let name = package["name"].as_str().unwrap_or("?");
        for target in package["targets"].as_array().into_iter().flatten() {
            let kinds: Vec<&str> = target["kind"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(serde_json::Value::as_str)
                .collect();
            if kinds
                .iter()
                .any(|k| matches!(*k, "lib" | "rlib" | "bin" | "proc-macro"))
                && let Some(src) = target["src_path"].as_str()
            {
                targets.push((format!("{name} ({})", kinds.join(",")), PathBuf::from(src)));
            }
        }
    }
    targets
}

/// The tracked Rust files, relative to the workspace root.
fn source_files(root: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("git")
        .args([
            "ls-files",
            "--cached",
            "--others",
            "--exclude-standard",
            "*.rs",
        ])
        .current_dir(root)
        .output()
        .context("running git ls-files")?;
    if !out.status.success() {
        bail!(
            "git ls-files failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(PathBuf::from)
        .filter(|p| root.join(p).exists())
        .collect())
}

fn exempt_from_length(path: &Path, text: &str) -> bool {
    path.file_name().is_some_and(|n| n == "tests.rs")
        || path.components().any(|c| c.as_os_str() == "tests")
        || text.lines().take(5).any(|l| l.contains("@generated"))
}

/// Lines of a file without a `#[cfg(test)] mod … { … }` block (the block is assumed to start
/// at column 0, as rustfmt leaves it, and to end at the next line that is exactly `}`).
pub fn counted_lines(text: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let mut n = 0;
    let mut i = 0;
    while i < lines.len() {
        let starts_test_mod = lines[i].trim_end() == "#[cfg(test)]"
            && lines
                .get(i + 1)
                .is_some_and(|l| is_inline_mod(l.trim_start_matches("pub ")));
        if starts_test_mod {
            let end = lines[i + 2..]
                .iter()
                .position(|l| l.trim_end() == "}")
                .map_or(lines.len(), |p| i + 2 + p + 1);
            i = end;
            continue;
        }
        n += 1;
        i += 1;
    }
    n
}

/// Lines of top-level `use` items that break the grouping: a group after a later one, or a new
/// group without a blank line before it. Items separated by other code are not compared.
pub fn misgrouped_imports(text: &str) -> Vec<usize> {
    let lines: Vec<&str> = text.lines().collect();
    // (first line, last line, group) of each top-level `use`.
    let mut uses: Vec<(usize, usize, u8)> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        let rest = l
            .strip_prefix("pub(crate) use ")
            .or_else(|| l.strip_prefix("pub(super) use "))
            .or_else(|| l.strip_prefix("pub use "))
            .or_else(|| l.strip_prefix("use "));
        if let Some(rest) = rest {
            let root: String = rest
                .trim_start_matches("::")
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let group = match root.as_str() {
                "std" | "core" | "alloc" => 0,
                "crate" | "super" | "self" => 2,
                _ => 1,
            };
            let start = i;
            while i < lines.len() && !lines[i].trim_end().ends_with(';') {
                i += 1;
            }
            uses.push((start, i, group));
        }
        i += 1;
    }
    uses.windows(2)
        .filter_map(|w| {
            let ((_, a_end, a), (b_start, _, b)) = (w[0], w[1]);
            let between = &lines[a_end + 1..b_start];
            let adjacent = between.iter().all(|l| {
                let t = l.trim();
                t.is_empty() || t.starts_with("#[") || t.starts_with("//")
            });
            let blank = between.iter().any(|l| l.trim().is_empty());
            (adjacent && (b < a || (b != a && !blank))).then_some(b_start + 1)
        })
        .collect()
}

fn is_inline_mod(line: &str) -> bool {
    line.starts_with("mod ") && line.trim_end().ends_with('{')
}

/// Edges between the children of one module: (from child, to child) → a witness (file, line).
type SiblingEdges = BTreeMap<(String, String), (PathBuf, usize)>;

/// A crate's modules, read from its root file by following `mod name;` declarations.
struct ModuleTree {
    /// Module path (empty for the crate root) → its file.
    files: BTreeMap<Vec<String>, PathBuf>,
    /// Module path → the paths it names, each with the line it is on.
    uses: BTreeMap<Vec<String>, Vec<(Vec<String>, usize)>>,
}

impl ModuleTree {
    fn load(root_file: &Path) -> Result<Self> {
        let mut tree = Self {
            files: BTreeMap::new(),
            uses: BTreeMap::new(),
        };
        let mut todo = vec![(Vec::new(), root_file.to_path_buf())];
        while let Some((module, file)) = todo.pop() {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let code = strip_tests(&blank_comments_and_strings(&text));
            for child in declared_modules(&code) {
                let path = child_file(&file, module.is_empty(), &child)
                    .with_context(|| format!("module `{child}` declared in {}", file.display()))?;
                let mut child_module = module.clone();
                child_module.push(child);
                todo.push((child_module, path));
            }
            let uses = referenced_paths(&code)
                .into_iter()
                .filter_map(|(path, line)| absolute(&module, &path).map(|p| (p, line)))
                .collect();
            tree.uses.insert(module.clone(), uses);
            tree.files.insert(module, file);
        }
        Ok(tree)
    }

    /// The module a path names: its longest prefix that is a module.
    fn module_of(&self, path: &[String]) -> Vec<String> {
        (0..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|p| self.files.contains_key(p))
            .unwrap_or_default()
    }

    /// Sibling edges: parent → (from child, to child) → a witness (file, line).
    fn sibling_edges(&self) -> BTreeMap<Vec<String>, SiblingEdges> {
        let mut edges: BTreeMap<_, SiblingEdges> = BTreeMap::new();
        for (from, uses) in &self.uses {
            for (path, line) in uses {
                let to = self.module_of(path);
                let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
                if common == from.len() || common == to.len() {
                    continue; // the same module, an ancestor or a descendant
                }
                edges
                    .entry(from[..common].to_vec())
                    .or_default()
                    .entry((from[common].clone(), to[common].clone()))
                    .or_insert_with(|| (self.files[from].clone(), *line));
            }
        }
        edges
    }

    /// Each cycle among siblings, described with one witness per edge.
    fn cycles(&self) -> Vec<String> {
        let mut found = Vec::new();
        for (parent, edges) in self.sibling_edges() {
            let graph: BTreeMap<&str, BTreeSet<&str>> =
                edges.keys().fold(BTreeMap::new(), |mut g, (a, b)| {
                    g.entry(a.as_str()).or_default().insert(b.as_str());
                    g
                });
            for (cycle, component) in find_cycles(&graph) {
                let mut text = format!(
                    "import cycle among the modules of `{}` ({} depend on each other), e.g.:",
                    if parent.is_empty() {
                        "crate".to_string()
                    } else {
                        parent.join("::")
                    },
                    component.into_iter().collect::<Vec<_>>().join(", "),
                );
                for pair in cycle.windows(2) {
                    let (file, line) = &edges[&(pair[0].to_string(), pair[1].to_string())];
                    let file = file.strip_prefix(workspace_root()).unwrap_or(file);
                    let _ = write!(
                        text,
                        "\n    {} → {} ({}:{line})",
                        pair[0],
                        pair[1],
                        file.display()
                    );
                }
                found.push(text);
            }
        }
        found
    }
}

/// One cycle (first node repeated at the end) per strongly connected component with more than
/// one member, and all the component's members.
fn find_cycles<'a>(
    graph: &BTreeMap<&'a str, BTreeSet<&'a str>>,
) -> Vec<(Vec<&'a str>, BTreeSet<&'a str>)> {
    let reach = |from: &'a str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from];
        while let Some(n) = todo.pop() {
            for &m in graph.get(n).into_iter().flatten() {
                if seen.insert(m) {
                    todo.push(m);
                }
            }
        }
        seen
    };
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut cycles = Vec::new();
    for &start in graph.keys() {
        if done.contains(start) || !reach(start).contains(start) {
            continue;
        }
        // Shortest way back to `start` (breadth first), for a short report.
        let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        let mut last = None;
        while let Some(n) = queue.pop_front() {
            for &m in graph.get(n).into_iter().flatten() {
                if m == start {
                    last = Some(n);
                    break;
                }
                if !prev.contains_key(m) {
                    prev.insert(m, n);
                    queue.push_back(m);
                }
            }
            if last.is_some() {
                break;
            }
        }
        let mut path = vec![start];
        let mut n = last.unwrap_or(start);
        while n != start {
            path.push(n);
            n = prev[n];
        }
        path[1..].reverse();
        path.push(start);
        // The component: everything that reaches `start` and that `start` reaches.
        let component: BTreeSet<&str> = reach(start)
            .into_iter()
            .filter(|m| reach(m).contains(start))
            .collect();
        done.extend(component.iter().copied());
        cycles.push((path, component));
    }
    cycles
}

/// The file of module `name` declared in `parent_file` (`name.rs` or `name/mod.rs`, beside the
/// parent when it is a crate root or `mod.rs`, else in a directory named after the parent).
fn child_file(parent_file: &Path, parent_is_root: bool, name: &str) -> Result<PathBuf> {
    let dir = parent_file.parent().unwrap_or(Path::new("."));
    let owns_dir = parent_is_root || parent_file.file_name().is_some_and(|n| n == "mod.rs");
    let base = if owns_dir {
        dir.to_path_buf()
    } else {
        dir.join(parent_file.file_stem().unwrap_or_default())
    };
    [
        base.join(format!("{name}.rs")),
        base.join(name).join("mod.rs"),
    ]
    .into_iter()
    .find(|p| p.exists())
    .with_context(|| format!("neither {name}.rs nor {name}/mod.rs in {}", base.display()))
}

/// `mod name;` declarations (file modules) of non-test code.
fn declared_modules(code: &str) -> Vec<String> {
    code.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("pub ").map_or(l, str::trim_start);
            let l = if l.starts_with("pub(") {
                l.split_once(')').map_or(l, |(_, r)| r.trim_start())
            } else {
                l
            };
            let name = l.strip_prefix("mod ")?.strip_suffix(';')?.trim();
            is_ident(name).then(|| name.to_string())
        })
        .collect()
}

/// Code without `#[cfg(test)]` items: a test module (inline or a file) or a single item.
fn strip_tests(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        rest = &rest[at + "#[cfg(test)]".len()..];
        // Skip the item: up to its `;` or through its balanced `{ … }`, whichever comes first.
        let mut depth = 0usize;
        let mut end = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = i + 1;
                    break;
                }
                _ => {}
            }
        }
        // Keep the line count: later witnesses point at the right lines.
        out.extend(rest[..end].chars().filter(|&c| c == '\n'));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The source with comments, string and char literals replaced by spaces (newlines kept), so
/// a `crate::` in a doc comment or a message is not taken for a path.
pub fn blank_comments_and_strings(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                blank(&mut out, b[i]);
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
        } else if (c == 'r' || c == 'b')
            && !b[..i]
                .last()
                .is_some_and(|p| p.is_alphanumeric() || *p == '_')
            && raw_string_hashes(&b[i..]).is_some()
        {
            let (skip, hashes) = raw_string_hashes(&b[i..]).unwrap_or_default();
            let close: Vec<char> = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            let start = i;
            i += skip;
            while i < b.len() && !b[i..].starts_with(&close) {
                i += 1;
            }
            i = (i + close.len()).min(b.len());
            for &ch in &b[start..i] {
                blank(&mut out, ch);
            }
        } else if c == '"' {
            blank(&mut out, c);
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    blank(&mut out, b[i]);
                    i += 1;
                }
                if i < b.len() {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
            if i < b.len() {
                blank(&mut out, b[i]);
                i += 1;
            }
        } else if c == '\'' {
            // A char literal ('x', '\n', '\'') or a lifetime ('a): only the former is blanked.
            let len = if next == Some('\\') {
                b[i + 2..]
                    .iter()
                    .skip(1)
                    .position(|&ch| ch == '\'')
                    .map(|p| p + 4)
            } else if b.get(i + 2) == Some(&'\'') {
                Some(3)
            } else {
                None
            };
            if let Some(n) = len {
                for &ch in &b[i..(i + n).min(b.len())] {
                    blank(&mut out, ch);
                }
                i += n;
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// For `r"`, `r#"`, `br##"` …: (characters up to and including the quote, number of `#`).
fn raw_string_hashes(s: &[char]) -> Option<(usize, usize)> {
    let mut i = usize::from(s.first() == Some(&'b'));
    if s.get(i) != Some(&'r') {
        return None;
    }
    i += 1;
    let hashes = s[i..].iter().take_while(|&&c| c == '#').count();
    (s.get(i + hashes) == Some(&'"')).then_some((i + hashes + 1, hashes))
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Every path that starts with `crate::` or `super::` (use trees expanded), with its line.
pub fn referenced_paths(code: &str) -> Vec<(Vec<String>, usize)> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    for keyword in ["crate", "super"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(keyword).map(|p| p + from) {
            from = at + keyword.len();
            let before_ok = at == 0 || {
                let p = bytes[at - 1];
                !(p.is_ascii_alphanumeric() || p == b'_' || p == b':' || p == b'$')
            };
            if !before_ok || !code[from..].trim_start().starts_with("::") {
                continue;
            }
            let line = code[..at].matches('\n').count() + 1;
            let mut parser = UseTree {
                s: &code.as_bytes()[at..],
                i: 0,
            };
            for path in parser.tree(Vec::new()) {
                found.push((path, line));
            }
        }
    }
    found
}

/// A small parser of paths and `use` trees: `a::b::{c, d::{e, f}, g as h, *}`.
struct UseTree<'a> {
    s: &'a [u8],
    i: usize,
}

impl UseTree<'_> {
    fn skip_ws(&mut self) {
        while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    fn ident(&mut self) -> Option<String> {
        self.skip_ws();
        let start = self.i;
        while self
            .s
            .get(self.i)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
        {
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        if self.s[self.i..].starts_with(token.as_bytes()) {
            self.i += token.len();
            true
        } else {
            false
        }
    }

    fn tree(&mut self, prefix: Vec<String>) -> Vec<Vec<String>> {
        if self.eat("{") {
            let mut all = Vec::new();
            loop {
                if self.eat("}") {
                    break;
                }
                let before = self.i;
                all.extend(self.tree(prefix.clone()));
                self.eat(",");
                if self.i == before {
                    break; // not a use tree after all
                }
            }
            return all;
        }
        if self.eat("*") {
            return vec![prefix];
        }
        let Some(name) = self.ident() else {
            return vec![prefix];
        };
        let mut path = prefix;
        if name != "self" {
            path.push(name);
        }
        if self.eat("::") {
            return self.tree(path);
        }
        let before = self.i;
        if self.ident().as_deref() == Some("as") {
            self.ident(); // the alias names nothing new
        } else {
            self.i = before;
        }
        vec![path]
    }
}

/// A path as seen from `module`, made absolute (`crate` dropped, `super` resolved); `None` when
/// `super` climbs above the crate root.
fn absolute(module: &[String], path: &[String]) -> Option<Vec<String>> {
    let mut segs = path.iter().peekable();
    let mut base: Vec<String> = match segs.peek().map(|s| s.as_str()) {
        Some("crate") => {
            segs.next();
            Vec::new()
        }
        Some("super") => module.to_vec(),
        _ => return None,
    };
    while segs.peek().is_some_and(|s| *s == "super") {
        segs.next();
        base.pop()?;
    }
    base.extend(segs.cloned());
    Some(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn use_trees_expand() {
        let paths: Vec<Vec<String>> = referenced_paths(
            "use crate::{a::{B, c::D}, e, self as f};\nlet x = super::g::h(1);\nfoo::crate_x();",
        )
        .into_iter()
        .map(|(p, _)| p)
        .collect();
        assert_eq!(
            paths,
            vec![
                s(&["crate", "a", "B"]),
                s(&["crate", "a", "c", "D"]),
                s(&["crate", "e"]),
                s(&["crate"]),
                s(&["super", "g", "h"]),
            ]
        );
        let lines: Vec<usize> = referenced_paths("\n\nuse super::x;")
            .into_iter()
            .map(|(_, l)| l)
            .collect();
        assert_eq!(lines, [3]);
    }

    #[test]
    fn comments_strings_and_chars_are_blanked() {
        let src = "a // crate::x\nb /* crate::y /* nested */ */ \"crate::z\\\"\" r#\"crate::w\"# '\"' 'a crate::v";
        let clean = blank_comments_and_strings(src);
        assert_eq!(clean.len(), src.len());
        assert_eq!(clean.lines().count(), 2);
        let paths: Vec<Vec<String>> = referenced_paths(&clean)
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(paths, vec![s(&["crate", "v"])]);
    }

    #[test]
    fn test_modules_are_stripped_and_not_counted() {
        let src = "use crate::a;\n#[cfg(test)]\nmod tests {\n    use crate::b;\n}\n#[cfg(test)]\nmod other;\nfn f() {}\n";
        let code = strip_tests(src);
        assert_eq!(code.lines().count(), src.lines().count());
        let paths: Vec<Vec<String>> = referenced_paths(&code)
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(paths, vec![s(&["crate", "a"])]);
        assert_eq!(declared_modules(&code), Vec::<String>::new());
        assert_eq!(
            declared_modules("pub(crate) mod x;\nmod y;\nmod z {"),
            s(&["x", "y"])
        );
        // Four lines are counted: the test block (lines 2–5) is not.
        assert_eq!(counted_lines(src), 4);
    }

    #[test]
    fn imports_keep_their_groups() {
        let good = "use std::fmt;\n\nuse anyhow::Result;\nuse clap::{\n    Args,\n};\n\nuse crate::x;\npub use super::y;\n";
        assert!(misgrouped_imports(good).is_empty());
        // crate before an external crate; then an external crate right after std.
        let bad = "use crate::x;\n\nuse anyhow::Result;\nfn f() {}\nuse std::fmt;\nuse serde::Serialize;\n";
        assert_eq!(misgrouped_imports(bad), [3, 6]);
        // Code between two items ends the comparison; indented uses are not top-level.
        assert!(
            misgrouped_imports("use crate::x;\nmod m {\n    use std::fmt;\n}\nuse std::io;\n")
                .is_empty()
        );
    }

    #[test]
    fn super_resolves_against_the_module() {
        let m = s(&["a", "b"]);
        assert_eq!(absolute(&m, &s(&["super", "c"])), Some(s(&["a", "c"])));
        assert_eq!(absolute(&m, &s(&["super", "super", "c"])), Some(s(&["c"])));
        assert_eq!(absolute(&m, &s(&["crate", "d"])), Some(s(&["d"])));
        assert_eq!(absolute(&s(&["a"]), &s(&["super", "super", "x"])), None);
    }

    #[test]
    fn cycles_are_found_once_per_component() {
        let mut g: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (a, b) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("d", "e")] {
            g.entry(a).or_default().insert(b);
        }
        assert_eq!(
            find_cycles(&g),
            vec![(vec!["a", "b", "c", "a"], BTreeSet::from(["a", "b", "c"]))]
        );
        g.get_mut("c").unwrap().remove("a");
        assert!(find_cycles(&g).is_empty());
    }

    /// A crate on disk: the root uses `x`, `x` uses `y` through its parent's child path, `y`
    /// uses `x` → one cycle at the root; `x::inner` using its parent is no edge.
    #[test]
    fn a_crate_with_a_cycle_is_reported_with_witnesses() {
        let dir = std::env::temp_dir().join(format!("xtask-shape-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("x")).unwrap();
        let write = |p: &str, t: &str| std::fs::write(dir.join(p), t).unwrap();
        write("lib.rs", "mod x;\nmod y;\npub use x::T;\n");
        write(
            "x.rs",
            "mod inner;\npub struct T;\nfn f() { crate::y::g(); }\n",
        );
        write("x/inner.rs", "use super::T;\n");
        write(
            "y.rs",
            "// crate::x is fine in a comment\nuse crate::x::T;\npub fn g() {}\n",
        );
        let tree = ModuleTree::load(&dir.join("lib.rs")).unwrap();
        let cycles = tree.cycles();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(cycles.len(), 1, "{cycles:?}");
        assert!(
            cycles[0].contains("among the modules of `crate`"),
            "{}",
            cycles[0]
        );
        assert!(
            cycles[0].contains("x → y") && cycles[0].contains("x.rs:3"),
            "{}",
            cycles[0]
        );
        assert!(
            cycles[0].contains("y → x") && cycles[0].contains("y.rs:2"),
            "{}",
            cycles[0]
        );
    }
}
