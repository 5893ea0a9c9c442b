//! `cargo xtask modules [crate ...]`: the module graph of each crate, drawn
//! from its `crate::` paths, in layers; fails on an import circle.
//!
//! Each file `src/<name>.rs` (or `src/<name>/mod.rs` with its submodules) is
//! one module. An edge `a -> b` is any `crate::b` path in `a`'s code (a `use`
//! line, a braced `use crate::{b, c}` group, or a qualified call), outside
//! comments and outside the `#[cfg(test)]` module at the end of a file. The
//! layers are printed bottom first: layer 0 imports no other module, and each
//! module imports only modules of lower layers. A module left over is in a
//! circle; the circle is printed and the command fails.
//!
//! `cargo xtask tidy` runs the same check on every crate under `crates/`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use crate::util::{Failed, Session, relative};

/// A crate's modules and, for each, the modules it imports.
pub(crate) type Graph = BTreeMap<String, BTreeSet<String>>;

/// The `modules` task: prints every named crate's layers (all crates under
/// `crates/` when none is named); fails if one has a circle.
pub(crate) fn run(session: &mut Session, args: &[String]) -> Result<(), Failed> {
    session.step("modules", |session| {
        let root = session.root().to_path_buf();
        let dirs: Vec<_> = if args.is_empty() {
            crate_dirs(&root)
        } else {
            args.iter()
                .map(|a| {
                    let p = root.join(a);
                    if p.join("src").is_dir() {
                        p
                    } else {
                        root.join("crates").join(a)
                    }
                })
                .collect()
        };
        let mut failed = false;
        for dir in dirs {
            let graph = graph(&dir.join("src"));
            println!("{}:", relative(&root, &dir));
            let (layers, circle) = layers(&graph);
            for (i, layer) in layers.iter().enumerate() {
                let shown: Vec<String> = layer
                    .iter()
                    .map(|m| {
                        let deps: Vec<&str> = graph[m].iter().map(String::as_str).collect();
                        if deps.is_empty() {
                            m.clone()
                        } else {
                            format!("{m} -> {}", deps.join(", "))
                        }
                    })
                    .collect();
                println!("    layer {i}: {}", shown.join("; "));
            }
            if let Some(circle) = circle {
                println!("    import circle: {}", circle.join(" -> "));
                failed = true;
            }
        }
        if failed {
            eprintln!("error: an import circle (see above)");
            Err(Failed)
        } else {
            Ok(())
        }
    })
}

/// The crate folders under `crates/`, sorted.
pub(crate) fn crate_dirs(root: &Path) -> Vec<std::path::PathBuf> {
    let mut dirs: Vec<_> = fs::read_dir(root.join("crates"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.join("src/lib.rs").is_file())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// The module graph of the crate whose sources are in `src`.
pub(crate) fn graph(src: &Path) -> Graph {
    let mut texts: BTreeMap<String, String> = BTreeMap::new();
    let Ok(entries) = fs::read_dir(src) else {
        return Graph::new();
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
        if path.is_dir() {
            let mut text = String::new();
            collect(&path, &mut text);
            texts.insert(name, text);
        } else if path.extension().is_some_and(|e| e == "rs") && name != "lib" && name != "main" {
            texts
                .entry(name)
                .or_default()
                .push_str(&fs::read_to_string(&path).unwrap_or_default());
        }
    }
    let names: BTreeSet<String> = texts.keys().cloned().collect();
    let lib = fs::read_to_string(src.join("lib.rs")).unwrap_or_default();
    let exported = reexports(&lib, &names);
    texts
        .iter()
        .map(|(m, text)| {
            let mut reached = imports(text, &names);
            // `crate::Item` for an item the crate root re-exports is an edge
            // to the module it comes from.
            reached.extend(
                imports(text, &exported.keys().cloned().collect())
                    .iter()
                    .map(|i| exported[i].clone()),
            );
            let deps = reached.into_iter().filter(|d| d != m).collect();
            (m.clone(), deps)
        })
        .collect()
}

/// The items the crate root re-exports (`pub use module::{A, b};`), each
/// with the module it comes from.
pub(crate) fn reexports(lib: &str, names: &BTreeSet<String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for stmt in lib.split(';') {
        let Some(rest) = stmt.trim_start().strip_prefix("pub use ") else {
            continue;
        };
        let module: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        if !names.contains(&module) {
            continue;
        }
        let items = &rest[module.len()..];
        for item in items
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty() && *w != "self")
        {
            out.insert(item.to_owned(), module.clone());
        }
    }
    out
}

/// Every `.rs` file under `dir`, appended to `out`.
fn collect(dir: &Path, out: &mut String) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&fs::read_to_string(&path).unwrap_or_default());
            out.push('\n');
        }
    }
}

/// The modules of `names` that `text` reaches through `crate::` paths.
pub(crate) fn imports(text: &str, names: &BTreeSet<String>) -> BTreeSet<String> {
    let mut code = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t == "#[cfg(test)]" && lines.peek().is_some_and(|n| n.trim_start().starts_with("mod tests")) {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        code.push_str(line.split(" //").next().unwrap_or_default());
        code.push('\n');
    }
    let ident = |s: &str| -> String { s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect() };
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::C, c::{self, D}}`: the first name of each item.
            let mut depth = 0;
            let mut item_start = true;
            for (i, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_alphanumeric() || c == '_') => {
                        found.insert(ident(&group[i..]));
                        item_start = false;
                    }
                    c if c.is_whitespace() => {}
                    _ => item_start = false,
                }
            }
        } else {
            found.insert(ident(rest));
        }
    }
    found.retain(|m| names.contains(m));
    found
}

/// The graph's layers, bottom first, and a circle among the modules left
/// over, if any.
pub(crate) fn layers(graph: &Graph) -> (Vec<Vec<String>>, Option<Vec<String>>) {
    let mut placed: BTreeSet<&String> = BTreeSet::new();
    let mut layers = Vec::new();
    loop {
        let layer: Vec<String> = graph
            .iter()
            .filter(|(m, deps)| !placed.contains(m) && deps.iter().all(|d| placed.contains(d)))
            .map(|(m, _)| m.clone())
            .collect();
        if layer.is_empty() {
            break;
        }
        placed.extend(graph.keys().filter(|k| layer.contains(k)));
        layers.push(layer);
    }
    let left: Vec<&String> = graph.keys().filter(|m| !placed.contains(m)).collect();
    let circle = left.first().map(|start| {
        // Every module left over imports another one left over: walk until a
        // module repeats.
        let mut path: Vec<String> = vec![(*start).clone()];
        loop {
            let here = path.last().cloned().unwrap_or_default();
            let next = graph[&here]
                .iter()
                .find(|d| !placed.contains(d))
                .cloned()
                .unwrap_or_default();
            if let Some(i) = path.iter().position(|p| *p == next) {
                let mut c = path[i..].to_vec();
                c.push(next);
                return c;
            }
            path.push(next);
        }
    });
    (layers, circle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn imports_read_paths_groups_and_skip_comments_and_tests() {
        let text = "use crate::a::X;\n// crate::b\nuse crate::{c, d::{self, E}};\nfn f() { crate::e::g(); }\n\
                    #[cfg(test)]\nmod tests { use crate::f; }\n";
        let got = imports(text, &names(&["a", "b", "c", "d", "e", "f"]));
        assert_eq!(got, names(&["a", "c", "d", "e"]));
    }

    #[test]
    fn layers_place_a_chain_and_find_a_circle() {
        let g: Graph = [("a", vec![]), ("b", vec!["a"]), ("c", vec!["b", "a"])]
            .into_iter()
            .map(|(m, d)| (m.to_owned(), names(&d)))
            .collect();
        let (l, circle) = layers(&g);
        assert_eq!(
            l,
            vec![vec!["a".to_owned()], vec!["b".to_owned()], vec!["c".to_owned()]]
        );
        assert_eq!(circle, None);
        let g: Graph = [("a", vec!["c"]), ("b", vec!["a"]), ("c", vec!["b"]), ("d", vec![])]
            .into_iter()
            .map(|(m, d)| (m.to_owned(), names(&d)))
            .collect();
        let (l, circle) = layers(&g);
        assert_eq!(l, vec![vec!["d".to_owned()]]);
        assert_eq!(circle.unwrap().len(), 4);
    }
}
