//! The layout rules of `crates/`, checked on every `make test` (docs/architecture.md, "Rules"):
//! - no module longer than 400 lines, counting the code before its `#[cfg(test)]` block;
//! - every `main.rs` under 40 lines: parse config, start tracing, call the library;
//! - no cycle between the modules of one crate: a module names what it uses by the module that
//!   defines it (not through a parent's re-export), and the dependencies point one way.
//!
//! Module dependencies are read from the source text: every `crate::…`, `super::…` and
//! `self::…` path in code (not in comments or tests), resolved to the longest module it names;
//! `mod x;` declarations are not dependencies, `pub use x::Y` is.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

const MAX_MODULE_LINES: usize = 400;
const MAX_MAIN_LINES: usize = 40;

fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file before its test module, with comments removed.
fn code(text: &str) -> Vec<String> {
    text.lines()
        .take_while(|l| l.trim() != "#[cfg(test)]")
        .map(|l| match l.find("//") {
            Some(i) => l[..i].to_owned(),
            None => l.to_owned(),
        })
        .collect()
}

/// Lines of a module before its `#[cfg(test)]` block.
fn module_lines(text: &str) -> usize {
    text.lines().take_while(|l| l.trim() != "#[cfg(test)]").count()
}

#[test]
fn no_module_is_over_400_lines_and_every_main_is_short() {
    let mut too_long = Vec::new();
    for krate in fs::read_dir(crates_dir()).unwrap().flatten() {
        let mut files = Vec::new();
        rust_files(&krate.path().join("src"), &mut files);
        assert!(!files.is_empty() || !krate.path().join("src").exists());
        for f in files {
            let text = fs::read_to_string(&f).unwrap();
            let n = module_lines(&text);
            let name = f.strip_prefix(crates_dir()).unwrap().display().to_string();
            if n > MAX_MODULE_LINES {
                too_long.push(format!(
                    "{name}: {n} lines before its tests (at most {MAX_MODULE_LINES})"
                ));
            }
            if f.file_name().is_some_and(|n| n == "main.rs") && text.lines().count() >= MAX_MAIN_LINES {
                too_long.push(format!(
                    "{name}: {} lines (a main.rs has fewer than {MAX_MAIN_LINES})",
                    text.lines().count()
                ));
            }
        }
    }
    assert!(too_long.is_empty(), "split these:\n{}", too_long.join("\n"));
}

/// The module path of a source file (`src/lib.rs` and `src/main.rs` are the root, ``).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.first().is_some_and(|p| p == "bin") {
        return None; // each binary is a crate of its own
    }
    let last = parts.pop()?;
    match last.as_str() {
        "lib.rs" | "main.rs" if parts.is_empty() => {}
        "mod.rs" => {}
        other => parts.push(other.trim_end_matches(".rs").to_owned()),
    }
    Some(parts.join("::"))
}

/// The paths of a `use` tree (`a::{b, c::{d, e}}` is `a::b`, `a::c::d`, `a::c::e`).
fn expand_use(tree: &str) -> Vec<String> {
    // `x as y` keeps `x`: mark the rename before the spaces go.
    let tree: String = tree
        .replace(" as ", "@")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let mut out = Vec::new();
    expand_into("", &tree, &mut out);
    out
}

fn expand_into(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let Some(open) = tree.find('{') else {
        let path = tree.split('@').next().unwrap_or(tree);
        out.push(format!("{prefix}{path}"));
        return;
    };
    let head = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let (mut depth, mut start) = (0, 0);
    let mut items = Vec::new();
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    for item in items.into_iter().filter(|i| !i.is_empty()) {
        expand_into(&format!("{prefix}{head}"), item, out);
    }
}

/// Every `crate::`/`super::`/`self::` path in `code` (use trees expanded).
fn paths(code: &[String]) -> Vec<String> {
    let text = code.join("\n");
    let mut out = Vec::new();
    // Use statements, whole (they may span lines).
    let mut rest = text.as_str();
    let mut outside = String::new();
    while let Some(i) = rest.find("use ") {
        let before_ok = i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric() && rest.as_bytes()[i - 1] != b'_';
        outside.push_str(&rest[..i]);
        let after = &rest[i + 4..];
        match after.find(';') {
            Some(end) if before_ok => {
                out.extend(expand_use(&after[..end]));
                rest = &after[end + 1..];
            }
            _ => {
                outside.push_str("use ");
                rest = after;
            }
        }
    }
    outside.push_str(rest);
    // Inline paths elsewhere: every `a::b…` chain.
    let chars: Vec<char> = outside.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let ident = |c: char| c.is_alphanumeric() || c == '_';
        if ident(chars[i]) && (i == 0 || !(ident(chars[i - 1]) || chars[i - 1] == ':')) {
            let start = i;
            while i < chars.len() && (ident(chars[i]) || chars[i] == ':') {
                i += 1;
            }
            let chain: String = chars[start..i].iter().collect();
            if chain.contains("::") {
                out.push(chain);
            }
        } else {
            i += 1;
        }
    }
    out
}

/// The module `path` (written in module `from`) depends on: the longest module it names.
fn resolve(from: &str, path: &str, modules: &BTreeSet<String>) -> Option<String> {
    let mut segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let mut base: Vec<&str> = if from.is_empty() {
        Vec::new()
    } else {
        from.split("::").collect()
    };
    match segs.first().copied() {
        Some("crate") => {
            base.clear();
            segs.remove(0);
        }
        Some("self") => {
            segs.remove(0);
        }
        Some("super") => {
            while segs.first() == Some(&"super") {
                segs.remove(0);
                base.pop();
            }
        }
        // A child module of `from` (`use hub::Hub;` in lib.rs), or another crate's path.
        Some(first) => {
            let child = if from.is_empty() {
                first.to_owned()
            } else {
                format!("{from}::{first}")
            };
            if !modules.contains(&child) {
                return None;
            }
        }
        None => return None,
    }
    let mut best = base.join("::");
    let mut cur = base.clone();
    for s in segs {
        cur.push(s);
        let name = cur.join("::");
        if modules.contains(&name) {
            best = name;
        } else {
            break;
        }
    }
    Some(best)
}

/// The groups of modules that depend on each other (strongly connected, more than one).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_owned()];
        while let Some(n) = todo.pop() {
            for m in graph.get(&n).into_iter().flatten() {
                if seen.insert(m.clone()) {
                    todo.push(m.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> = graph.keys().map(|n| (n, reach(n))).collect();
    let mut placed = BTreeSet::new();
    let mut out = Vec::new();
    for n in graph.keys() {
        if placed.contains(n) {
            continue;
        }
        let group: Vec<String> = graph
            .keys()
            .filter(|m| *m != n && reaches[n].contains(*m) && reaches[*m].contains(n))
            .cloned()
            .collect();
        if !group.is_empty() {
            let mut all = vec![n.clone()];
            all.extend(group);
            placed.extend(all.iter().cloned());
            out.push(all);
        }
    }
    out
}

fn graph_of(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mods: Vec<(String, PathBuf)> = files
        .into_iter()
        .filter_map(|f| Some((module_of(src, &f)?, f)))
        .collect();
    let modules: BTreeSet<String> = mods.iter().map(|(m, _)| m.clone()).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, f) in &mods {
        let code = code(&fs::read_to_string(f).unwrap());
        let deps = graph.entry(m.clone()).or_default();
        for p in paths(&code) {
            if let Some(d) = resolve(m, &p, &modules) {
                deps.insert(d);
            }
        }
    }
    graph
}

#[test]
fn no_cycle_between_the_modules_of_a_crate() {
    let mut found = Vec::new();
    for krate in fs::read_dir(crates_dir()).unwrap().flatten() {
        let src = krate.path().join("src");
        if !src.exists() {
            continue;
        }
        let name = krate.file_name().to_string_lossy().into_owned();
        for group in cycles(&graph_of(&src)) {
            let shown: Vec<String> = group
                .iter()
                .map(|m| if m.is_empty() { "(root)".into() } else { m.clone() })
                .collect();
            found.push(format!("{name}: {{{}}} depend on each other", shown.join(", ")));
        }
    }
    assert!(found.is_empty(), "module cycles:\n{}", found.join("\n"));
}

#[test]
fn the_checker_reads_use_trees_and_finds_cycles() {
    assert_eq!(
        expand_use("crate::{a::B, b::{C, D as E}, e}"),
        ["crate::a::B", "crate::b::C", "crate::b::D", "crate::e"]
    );
    let modules: BTreeSet<String> = ["a", "a::b", "c"].iter().map(|s| s.to_string()).collect();
    assert_eq!(resolve("a::b", "super::Thing", &modules).unwrap(), "a");
    assert_eq!(resolve("a::b", "crate::c::X", &modules).unwrap(), "c");
    assert_eq!(resolve("a", "self::b::Y", &modules).unwrap(), "a::b");
    let code = vec![
        "use crate::c::{X, Y};".to_owned(),
        "fn f() { super::z::W::new(); }".to_owned(),
    ];
    assert_eq!(paths(&code), ["crate::c::X", "crate::c::Y", "super::z::W::new"]);
    assert_eq!(
        resolve("", "c::X", &modules).unwrap(),
        "c",
        "a child module, from the root"
    );
    assert_eq!(resolve("a", "b::Y", &modules).unwrap(), "a::b");
    assert_eq!(resolve("a", "std::sync::Arc", &modules), None);
    let g: BTreeMap<String, BTreeSet<String>> = [("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")]
        .iter()
        .map(|(x, y)| (x.to_string(), BTreeSet::from([y.to_string()])))
        .collect();
    assert_eq!(cycles(&g), [vec!["a", "b", "c"]]);
}
