//! The core crate's import graph has no circle, and the phases stay below the modules that
//! assemble and sequence them.
//!
//! The graph is read from the source: every `src/**/*.rs` file but the test files (`tests.rs`,
//! `#[cfg(test)]` items) and `src/bin`, each belonging to its top-level module (`src/auth/jwk.rs`
//! to `auth`). An edge `a -> b` is a path in `a` that names `crate::b` (or a name the crate root
//! re-exports from `b`), alone or in a `use crate::{b, c::D}` group, or a `super::` path that
//! leaves `a` for `b`. Comments and string literals are not read.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The modules above the phases: `config` assembles the phases' config sections, `gateway` and
/// `lifecycle` sequence the phases. No other module names them.
const ABOVE_THE_PHASES: [&str; 3] = ["config", "gateway", "lifecycle"];

type Graph = BTreeMap<String, BTreeSet<String>>;

#[test]
fn the_core_crate_has_no_import_circle() {
    let graph = import_graph();
    // `cargo test --test layers -- --nocapture` shows it.
    println!("the core crate's import graph:\n{}", render(&graph));
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "the core crate's modules import each other in a circle: {}\n\nthe graph:\n{}",
            cycle.join(" -> "),
            render(&graph)
        );
    }
}

#[test]
fn phases_do_not_import_config_gateway_or_lifecycle() {
    let graph = import_graph();
    let mut wrong = Vec::new();
    for (module, names) in &graph {
        if ABOVE_THE_PHASES.contains(&module.as_str()) {
            continue;
        }
        for above in ABOVE_THE_PHASES {
            if names.contains(above) {
                wrong.push(format!("{module} -> {above}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "phases and leaves name the modules above them: {}\n\nthe graph:\n{}",
        wrong.join(", "),
        render(&graph)
    );
}

#[test]
fn the_reader_sees_every_kind_of_path() {
    let modules: BTreeSet<String> = ["a", "b", "c", "d", "e", "f", "g"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let exports = BTreeMap::from([("Thing".to_string(), "g".to_string())]);
    let source = r#"
        use crate::a::X;
        use crate::{b, c::{Y, Z}};
        // crate::nothing in a comment
        const S: &str = "crate::nothing in a string";
        fn f(_: &super::d::W) -> crate::Thing { let c = '"'; crate::e::make(c) }
        #[cfg(test)]
        mod tests { use crate::nothing::Q; }
        fn g() -> super::super::f::V {}
    "#;
    let names = names_in(source, 1, &modules, &exports);
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["a", "b", "c", "d", "e", "g"],
        "`super::super::` from a top-level file leaves the crate and is not a module path"
    );
    let nested = names_in("use super::super::f::V;", 2, &modules, &exports);
    assert_eq!(nested.into_iter().collect::<Vec<_>>(), ["f"]);
    let inside = names_in("use super::Sibling;", 2, &modules, &exports);
    assert!(inside.is_empty(), "super:: from src/m/x.rs stays inside m");

    let mut graph = Graph::new();
    for (from, to) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        graph.entry(from.into()).or_default().insert(to.into());
    }
    assert_eq!(
        find_cycle(&graph).map(|c| c.join(" -> ")),
        Some("a -> b -> c -> a".to_string())
    );
    graph.get_mut("c").map(|s| s.remove("a"));
    assert_eq!(find_cycle(&graph), None);
}

/// Every top-level module and the modules it names.
fn import_graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = fs::read_to_string(src.join("lib.rs")).expect("src/lib.rs");
    let lib = code_only(&lib);
    let modules = declared_modules(&lib);
    let exports = root_exports(&lib, &modules);

    let mut graph: Graph = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for file in rust_files(&src) {
        let relative = file.strip_prefix(&src).expect("under src");
        let parts: Vec<String> = relative
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        if parts[0] == "bin"
            || parts[0] == "lib.rs"
            || parts.last().is_some_and(|p| p == "tests.rs")
        {
            continue;
        }
        let module = parts[0].trim_end_matches(".rs").to_string();
        assert!(
            modules.contains(&module),
            "{} is not under a module src/lib.rs declares",
            relative.display()
        );
        // How deep the file's module is: src/m.rs and src/m/mod.rs are `m`, src/m/x.rs is `m::x`.
        let depth = parts.len() - usize::from(parts.last().is_some_and(|p| p == "mod.rs"));
        let text = fs::read_to_string(&file).expect("readable source");
        let names = names_in(&text, depth, &modules, &exports);
        graph
            .get_mut(&module)
            .expect("declared")
            .extend(names.into_iter().filter(|n| *n != module));
    }
    graph
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .expect("readable directory")
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
    out
}

/// The modules `mod NAME;` declares in the crate root.
fn declared_modules(lib: &str) -> BTreeSet<String> {
    let tokens = tokens(lib);
    tokens
        .windows(3)
        .filter(|w| w[0] == "mod" && w[2] == ";")
        .map(|w| w[1].clone())
        .collect()
}

/// The names the crate root re-exports (`pub use m::{A, B};`), each with its module.
fn root_exports(lib: &str, modules: &BTreeSet<String>) -> BTreeMap<String, String> {
    let tokens = tokens(lib);
    let mut out = BTreeMap::new();
    let mut i = 0;
    while i + 1 < tokens.len() {
        if tokens[i] == "use" && modules.contains(&tokens[i + 1]) {
            let module = tokens[i + 1].clone();
            let mut j = i + 2;
            while j < tokens.len() && tokens[j] != ";" {
                let t = &tokens[j];
                if t.starts_with(|c: char| c.is_ascii_uppercase()) {
                    out.insert(t.clone(), module.clone());
                }
                j += 1;
            }
            i = j;
        }
        i += 1;
    }
    out
}

/// The top-level modules a source file at `depth` names, test items left out.
fn names_in(
    text: &str,
    depth: usize,
    modules: &BTreeSet<String>,
    exports: &BTreeMap<String, String>,
) -> BTreeSet<String> {
    let tokens = without_test_items(tokens(&code_only(text)));
    let mut out = BTreeSet::new();
    let resolve = |name: &str, out: &mut BTreeSet<String>| {
        if modules.contains(name) {
            out.insert(name.to_string());
        } else if let Some(m) = exports.get(name) {
            out.insert(m.clone());
        }
    };
    let mut i = 0;
    while i < tokens.len() {
        // The first segment after the crate root: `crate::` or enough `super::` to leave `m`.
        let mut at_root = None;
        if tokens[i] == "crate" && tokens.get(i + 1).is_some_and(|t| t == "::") {
            at_root = Some(i + 2);
        } else if tokens[i] == "super" && (i == 0 || tokens[i - 1] != "::") {
            let mut j = i;
            let mut ups = 0;
            while tokens.get(j).is_some_and(|t| t == "super")
                && tokens.get(j + 1).is_some_and(|t| t == "::")
            {
                ups += 1;
                j += 2;
            }
            if ups == depth {
                at_root = Some(j);
            }
        }
        if let Some(j) = at_root {
            match tokens.get(j).map(String::as_str) {
                Some("{") => {
                    // A group: every item at its top level names its first segment.
                    let mut level = 0;
                    let mut first = true;
                    let mut k = j;
                    while k < tokens.len() {
                        match tokens[k].as_str() {
                            "{" => {
                                level += 1;
                                first = level == 1;
                            }
                            "}" => {
                                level -= 1;
                                if level == 0 {
                                    break;
                                }
                            }
                            "," if level == 1 => first = true,
                            t if first && level == 1 => {
                                resolve(t, &mut out);
                                first = false;
                            }
                            _ => {}
                        }
                        k += 1;
                    }
                }
                Some(name) => resolve(name, &mut out),
                None => {}
            }
        }
        i += 1;
    }
    out
}

/// The text with comments and string and character literals blanked out.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut level = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    level += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    level -= 1;
                    i += 2;
                    if level == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == 'r' && matches!(next, Some('"') | Some('#')) && !ident_before(&chars, i) {
            // A raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (0..hashes).all(|h| chars.get(j + 1 + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{..}'), or a lifetime ('a), left as it is.
            if next == Some('\\') {
                let mut j = i + 2;
                while j < chars.len() && chars[j] != '\'' {
                    j += 1;
                }
                i = j + 1;
                out.push_str("' '");
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
                out.push_str("' '");
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

fn ident_before(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

/// Identifiers, `::`, and single punctuation characters.
fn tokens(code: &str) -> Vec<String> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push("::".to_string());
            i += 2;
        } else if c.is_whitespace() {
            i += 1;
        } else {
            out.push(c.to_string());
            i += 1;
        }
    }
    out
}

/// The tokens without the items marked `#[cfg(test)]`: each ends at its first `;` or at the end
/// of its first `{ ... }` block.
fn without_test_items(tokens: Vec<String>) -> Vec<String> {
    let marker = ["#", "[", "cfg", "(", "test", ")", "]"];
    let mut out = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i..].starts_with(&marker.map(String::from)) {
            let mut j = i + marker.len();
            let mut level = 0;
            while j < tokens.len() {
                match tokens[j].as_str() {
                    ";" if level == 0 => break,
                    "{" => level += 1,
                    "}" => {
                        level -= 1;
                        if level == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            i = j + 1;
        } else {
            out.push(tokens[i].clone());
            i += 1;
        }
    }
    out
}

/// One circle of the graph, starting and ending at the same module, or `None`.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &Graph,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(node.to_string(), Mark::Open);
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            match marks.get(next).copied().unwrap_or(Mark::New) {
                Mark::Open => {
                    let start = stack.iter().position(|n| n == next).expect("on the stack");
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(c) = visit(next, graph, marks, stack) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if marks.get(node).copied().unwrap_or(Mark::New) == Mark::New {
            if let Some(c) = visit(node, graph, &mut marks, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

fn render(graph: &Graph) -> String {
    graph
        .iter()
        .map(|(m, names)| {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            format!("  {m} -> {}", names.join(", "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}
