//! The module map's hard rule: no import cycle between the modules (files) of src/. A module
//! may only use modules below it (docs/ARCHITECTURE.md), so its imports never lead back to it.
//!
//! The checker reads the sources, not the compiler's view: every path a file writes that names
//! a module of this crate is an edge from that file to the module. Counted are `crate::` paths
//! (in `use` trees with their groups, and written inline), `super::` and `self::` paths, and,
//! in a file that declares child modules, paths through a child (`pub use child::Thing` makes
//! the parent depend on the child). A path names the deepest module file it reaches
//! (`crate::gate::policy::User` is `gate::policy`), or, when that file only imports the name,
//! the module it imports it from (`crate::session::StoreError`, re-exported by session/mod.rs,
//! is `session::memory`, which defines it). Unit tests (`#[cfg(test)]` items) are not counted:
//! they may build values with anything. `main.rs` is another crate and not read.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

/// A module by its path from the crate root (`["gate", "policy"]`); the root is empty.
type Module = Vec<String>;

/// Who imports whom: each module and the modules its file names.
type Graph = BTreeMap<Module, BTreeSet<Module>>;

#[test]
fn src_has_no_import_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let cycles = cycles(&graph(&read_tree(&src)));
    assert!(
        cycles.is_empty(),
        "import cycles between modules of src/ (a module may only use modules below it):\n{}",
        cycles.join("\n")
    );
}

/// The folders are layers (docs/ARCHITECTURE.md): a folder's modules import only from folders
/// below it, so no two folders import each other, even through different files.
#[test]
fn src_folders_import_only_downwards() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut layers = Graph::new();
    for (from, to) in graph(&read_tree(&src)) {
        // lib.rs only declares the layers and re-exports the public surface; a unit-test file
        // (`#[cfg(test)] mod tests;`) may build its values with anything.
        if from.last().is_some_and(|m| m == "tests") {
            continue;
        }
        let Some(layer) = from.first() else { continue };
        let uses = layers.entry(vec![layer.clone()]).or_default();
        for other in to.iter().filter_map(|m| m.first()) {
            if other != layer {
                uses.insert(vec![other.clone()]);
            }
        }
    }
    let cycles = cycles(&layers);
    assert!(
        cycles.is_empty(),
        "folders of src/ that import each other (a layer may only use layers below it):\n{}",
        cycles.join("\n")
    );
}

/// Every `.rs` file under `src` but `main.rs`, as (path relative to `src`, text).
fn read_tree(src: &Path) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path
                    .strip_prefix(src)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                if relative != "main.rs" {
                    files.push((relative, std::fs::read_to_string(&path).unwrap()));
                }
            }
        }
    }
    files
}

/// The module a file under src/ is: `lib.rs` the root, `a/mod.rs` and `a.rs` are `a`.
fn module_of(relative: &str) -> Module {
    let mut parts: Module = relative
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_owned)
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// A module as the report names it: `gate::policy`, or `crate` for the root.
fn name(module: &[String]) -> String {
    if module.is_empty() {
        "crate".to_owned()
    } else {
        module.join("::")
    }
}

/// The import graph of `files`, given as (path under src/, text).
fn graph(files: &[(String, String)]) -> Graph {
    let known: BTreeSet<Module> = files.iter().map(|(path, _)| module_of(path)).collect();
    let written: Vec<(Module, Vec<Written>)> = files
        .iter()
        .map(|(path, text)| (module_of(path), paths(&tokens(text))))
        .collect();
    let mut imports = Imports::new();
    for (module, paths) in &written {
        let names = imports.entry(module.clone()).or_default();
        for path in paths.iter().filter(|p| p.inline.is_empty()) {
            if let Some(name) = &path.binds {
                names.insert(name.clone(), absolute(module, path, &known));
            }
        }
    }
    let mut graph = Graph::new();
    for (module, paths) in written {
        let targets = paths
            .iter()
            .filter_map(|path| absolute(&module, path, &known))
            .filter_map(|full| defining(full, &imports, &known))
            .filter(|t| *t != module)
            .collect();
        graph.insert(module, targets);
    }
    graph
}

/// What each module's `use` declarations bring into it: a name, and the path in this crate it
/// stands for (`None` for another crate's).
type Imports = BTreeMap<Module, BTreeMap<String, Option<Vec<String>>>>;

/// The path from the crate root that a written path means, if it means one in this crate.
fn absolute(module: &Module, written: &Written, known: &BTreeSet<Module>) -> Option<Vec<String>> {
    let here: Module = module.iter().chain(&written.inline).cloned().collect();
    let (first, rest) = written.path.split_first()?;
    match first.as_str() {
        "crate" => Some(rest.to_vec()),
        "self" => Some(here.into_iter().chain(rest.iter().cloned()).collect()),
        "super" => {
            let ups = written.path.iter().take_while(|s| *s == "super").count();
            let base = here.len().checked_sub(ups)?;
            Some(
                here[..base]
                    .iter()
                    .chain(&written.path[ups..])
                    .cloned()
                    .collect(),
            )
        }
        // A path through a child module of this file; anything else is another crate's or
        // an item of this file.
        child if written.inline.is_empty() => {
            let mut through = module.clone();
            through.push(child.to_owned());
            known
                .contains(&through)
                .then(|| module.iter().chain(&written.path).cloned().collect())
        }
        _ => None,
    }
}

/// The module file that defines what `full` names: the deepest module the path reaches, or,
/// when that module only imports the name (`pub use memory::StoreError` in session/mod.rs),
/// the module the import leads to.
fn defining(mut full: Vec<String>, imports: &Imports, known: &BTreeSet<Module>) -> Option<Module> {
    // Bounded: a chain of imports is a few steps, and odd input must not loop.
    for _ in 0..16 {
        let module = (0..=full.len())
            .rev()
            .map(|n| full[..n].to_vec())
            .find(|prefix| known.contains(prefix))?;
        let imported = full
            .get(module.len())
            .and_then(|name| imports.get(&module)?.get(name));
        match imported {
            None => return Some(module),
            Some(None) => return None,
            Some(Some(path)) => {
                full = path
                    .iter()
                    .chain(&full[module.len() + 1..])
                    .cloned()
                    .collect();
            }
        }
    }
    None
}

/// A lexical token, all the checker needs: words, `::`, and single punctuation.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Sep,
    Punct(char),
}

/// The tokens of Rust source, with comments, string and character literals left out (a path
/// in a comment or a string is no import).
fn tokens(text: &str) -> Vec<Tok> {
    let chars: Vec<char> = text.chars().collect();
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            i = skip_block_comment(&chars, i);
        } else if c == '"' {
            i = skip_string(&chars, i + 1);
        } else if c == '\'' {
            i = skip_char(&chars, i);
        } else if c == ':' && at(i + 1) == ':' {
            out.push(Tok::Sep);
            i += 2;
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let raw_ident =
                word == "r" && at(i) == '#' && (at(i + 1).is_alphanumeric() || at(i + 1) == '_');
            match (word.as_str(), at(i)) {
                // r#type is the word `type`, read on the next turn.
                _ if raw_ident => i += 1,
                ("r" | "br" | "cr", '#' | '"') => i = skip_raw_string(&chars, i),
                ("b" | "c", '"') => i = skip_string(&chars, i + 1),
                ("b", '\'') => i = skip_char(&chars, i),
                _ => out.push(Tok::Word(word)),
            }
        } else {
            out.push(Tok::Punct(c));
            i += 1;
        }
    }
    out
}

/// Past a character literal at `start` ('x', '\n', '\u{1F600}'), or past the quote of a
/// lifetime or label ('a).
fn skip_char(chars: &[char], start: usize) -> usize {
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    if at(start + 1) == '\\' {
        let mut i = start + 3;
        while i < chars.len() && chars[i] != '\'' {
            i += 1;
        }
        i + 1
    } else if at(start + 2) == '\'' {
        start + 3
    } else {
        start + 1
    }
}

/// Past a (nested) block comment starting at `start`.
fn skip_block_comment(chars: &[char], start: usize) -> usize {
    let mut depth = 0;
    let mut i = start;
    while i + 1 < chars.len() {
        match (chars[i], chars[i + 1]) {
            ('/', '*') => {
                depth += 1;
                i += 2;
            }
            ('*', '/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    chars.len()
}

/// Past the closing quote of a string whose body starts at `i`.
fn skip_string(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// Past a raw string whose hashes (if any) start at `i`: r"..", r#".."#, r##".."##.
fn skip_raw_string(chars: &[char], mut i: usize) -> usize {
    let hashes = chars[i..].iter().take_while(|c| **c == '#').count();
    i += hashes + 1;
    while i < chars.len() {
        if chars[i] == '"' && chars[i + 1..].iter().take_while(|c| **c == '#').count() >= hashes {
            return i + 1 + hashes;
        }
        i += 1;
    }
    i
}

/// A path as a file writes it (`crate::gate::Gate`, `super::conn`), and the inline modules
/// (`mod file { .. }`) it is written in, which `self` and `super` start from.
#[derive(Debug)]
struct Written {
    path: Vec<String>,
    inline: Vec<String>,
    /// The name a `use` binds the path to (`None` for a glob or a path written inline).
    binds: Option<String>,
}

/// Every path a file's tokens write, `use` trees expanded (`use a::{b, c::d}` is `a::b` and
/// `a::c::d`), items under `#[cfg(test)]` left out.
fn paths(toks: &[Tok]) -> Vec<Written> {
    let word = |i: usize| match toks.get(i) {
        Some(Tok::Word(w)) => Some(w.as_str()),
        _ => None,
    };
    let mut out = Vec::new();
    // The inline modules around the current token, each with the brace depth it opened at.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Tok::Punct('#') if is_cfg_test(&toks[i..]) => i = skip_item(toks, i),
            Tok::Word(w) if w == "mod" && toks.get(i + 2) == Some(&Tok::Punct('{')) => {
                inline.push((word(i + 1).unwrap_or_default().to_owned(), depth));
                depth += 1;
                i += 3;
            }
            Tok::Word(w) if w == "use" => {
                i += 1;
                let mut trees = Vec::new();
                use_tree(toks, &mut i, Vec::new(), &mut trees);
                let scope = names(&inline);
                out.extend(trees.into_iter().map(|(path, binds)| Written {
                    path,
                    inline: scope.clone(),
                    binds,
                }));
            }
            Tok::Punct('{') => {
                depth += 1;
                i += 1;
            }
            Tok::Punct('}') => {
                depth -= 1;
                if inline.last().is_some_and(|(_, opened)| *opened == depth) {
                    inline.pop();
                }
                i += 1;
            }
            Tok::Word(first) if starts_path(toks, i) => {
                let mut path = vec![first.clone()];
                i += 1;
                while toks.get(i) == Some(&Tok::Sep) && word(i + 1).is_some() {
                    path.extend(word(i + 1).map(str::to_owned));
                    i += 2;
                }
                out.push(Written {
                    path,
                    inline: names(&inline),
                    binds: None,
                });
            }
            _ => i += 1,
        }
    }
    out
}

fn names(inline: &[(String, usize)]) -> Vec<String> {
    inline.iter().map(|(name, _)| name.clone()).collect()
}

/// Whether a path starts at `i`: a word followed by `::` that does not follow one.
fn starts_path(toks: &[Tok], i: usize) -> bool {
    toks.get(i + 1) == Some(&Tok::Sep) && (i == 0 || toks[i - 1] != Tok::Sep)
}

/// Whether the tokens start with `#[cfg(test)]`.
fn is_cfg_test(toks: &[Tok]) -> bool {
    let want = [
        Tok::Punct('#'),
        Tok::Punct('['),
        Tok::Word("cfg".into()),
        Tok::Punct('('),
        Tok::Word("test".into()),
        Tok::Punct(')'),
        Tok::Punct(']'),
    ];
    toks.starts_with(&want)
}

/// Past the item an attribute at `start` belongs to: to its `;`, or to the `}` closing its
/// body (a function, a module, an impl).
fn skip_item(toks: &[Tok], start: usize) -> usize {
    let mut depth = 0usize;
    let mut i = start;
    while i < toks.len() {
        match toks[i] {
            Tok::Punct('(' | '[') => depth += 1,
            Tok::Punct(')' | ']') => depth = depth.saturating_sub(1),
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            Tok::Punct(';') if depth == 0 => return i + 1,
            _ => {}
        }
        i += 1;
    }
    i
}

/// Reads one `use` tree at `*i` (after `use`, or inside a group's braces) and adds every path
/// it names to `out`, each with `prefix` in front and with the name it binds:
/// `a::{self, b::c as d, e::*}` binds `a` to `a` and `d` to `a::b::c`, and names `a::e` (a
/// glob, which binds no one name).
fn use_tree(
    toks: &[Tok],
    i: &mut usize,
    prefix: Vec<String>,
    out: &mut Vec<(Vec<String>, Option<String>)>,
) {
    let mut path = prefix;
    let mut alias = None;
    loop {
        match toks.get(*i) {
            Some(Tok::Word(w)) => {
                path.push(w.clone());
                *i += 1;
            }
            Some(Tok::Punct('*')) => {
                *i += 1;
                out.push((path, None));
                return;
            }
            Some(Tok::Punct('{')) => {
                *i += 1;
                while let Some(tok) = toks.get(*i) {
                    match tok {
                        Tok::Punct('}') => {
                            *i += 1;
                            return;
                        }
                        Tok::Punct(',') => *i += 1,
                        _ => use_tree(toks, i, path.clone(), out),
                    }
                }
                return;
            }
            _ => break,
        }
        match toks.get(*i) {
            Some(Tok::Sep) => *i += 1,
            Some(Tok::Word(w)) if w == "as" => {
                alias = toks.get(*i + 1).cloned();
                *i += 2;
                break;
            }
            _ => break,
        }
    }
    // `a::{self}` is `a` itself.
    if path.len() > 1 && path.last().is_some_and(|s| s == "self") {
        path.pop();
    }
    let binds = match alias {
        Some(Tok::Word(name)) if name != "_" => Some(name),
        Some(_) => None,
        None => path.last().cloned(),
    };
    out.push((path, binds));
}

/// Each import cycle in `graph`, as a line naming its modules and one way round it.
fn cycles(graph: &Graph) -> Vec<String> {
    strongly_connected(graph)
        .into_iter()
        .filter(|scc| scc.len() > 1)
        .map(|scc| {
            let names: Vec<String> = scc.iter().map(|m| name(m)).collect();
            let round: Vec<String> = shortest_cycle(graph, &scc)
                .iter()
                .map(|m| name(m))
                .collect();
            format!(
                "{} modules: {}\n  for example {}",
                scc.len(),
                names.join(", "),
                round.join(" -> ")
            )
        })
        .collect()
}

/// The strongly connected components of `graph` (Tarjan's algorithm), each sorted.
fn strongly_connected(graph: &Graph) -> Vec<Vec<Module>> {
    struct Tarjan<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g Module, usize>,
        low: BTreeMap<&'g Module, usize>,
        stack: Vec<&'g Module>,
        found: Vec<Vec<Module>>,
    }
    impl<'g> Tarjan<'g> {
        fn visit(&mut self, v: &'g Module) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            for w in self.graph.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.stack.contains(&w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let at = self.stack.iter().position(|m| *m == v).unwrap();
                let mut scc: Vec<Module> = self.stack.drain(at..).cloned().collect();
                scc.sort();
                self.found.push(scc);
            }
        }
    }
    let mut tarjan = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !tarjan.index.contains_key(v) {
            tarjan.visit(v);
        }
    }
    tarjan.found.sort();
    tarjan.found
}

/// A shortest way from the component's first module back to itself, inside the component.
fn shortest_cycle(graph: &Graph, scc: &[Module]) -> Vec<Module> {
    let start = &scc[0];
    let mut came_from: BTreeMap<&Module, &Module> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for w in graph.get(v).into_iter().flatten() {
            if w == start {
                let mut way = vec![start.clone(), v.clone()];
                let mut at = v;
                while let Some(before) = came_from.get(at) {
                    way.push((*before).clone());
                    at = before;
                }
                way.reverse();
                return way;
            }
            if scc.contains(w) && !came_from.contains_key(w) {
                came_from.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    Vec::new()
}

/// The cycles in a made-up tree of (path under src/, text) files.
fn cycles_in(files: &[(&str, &str)]) -> Vec<String> {
    let files: Vec<(String, String)> = files
        .iter()
        .map(|(path, text)| (path.to_string(), text.to_string()))
        .collect();
    cycles(&graph(&files))
}

/// The modules `module` imports in a made-up tree.
fn edges_in(files: &[(&str, &str)], module: &str) -> Vec<String> {
    let files: Vec<(String, String)> = files
        .iter()
        .map(|(path, text)| (path.to_string(), text.to_string()))
        .collect();
    let graph = graph(&files);
    let module: Module = match module {
        "crate" => Vec::new(),
        path => path.split("::").map(str::to_owned).collect(),
    };
    graph[&module].iter().map(|m| name(m)).collect()
}

const LIB: &str = "pub mod a; pub mod b; pub mod c; pub mod d;";

#[test]
fn a_cycle_is_found_and_named() {
    let cycles = cycles_in(&[
        ("lib.rs", LIB),
        ("a.rs", "use crate::b::Thing;"),
        ("b.rs", "pub fn f() { crate::c::g() }"),
        ("c.rs", "pub fn g() { let _ = crate::a::A; }"),
        ("d.rs", "use crate::a::A;"),
    ]);
    assert_eq!(
        cycles,
        ["3 modules: a, b, c\n  for example a -> b -> c -> a"]
    );
}

#[test]
fn a_tree_whose_imports_point_one_way_passes() {
    let cycles = cycles_in(&[
        ("lib.rs", LIB),
        (
            "a.rs",
            "use crate::{b::B, c::C};\nfn f() -> crate::d::D { todo!() }",
        ),
        ("b.rs", "use crate::c::C;\nuse crate::d::{self, D};"),
        ("c.rs", "use crate::d::*;"),
        (
            "d.rs",
            "use std::collections::HashMap;\nuse http::StatusCode;",
        ),
    ]);
    assert_eq!(cycles, Vec::<String>::new());
}

#[test]
fn use_groups_name_each_module_they_reach() {
    let files = [
        (
            "lib.rs",
            "pub mod a; pub mod gate; pub mod http; pub mod ops;",
        ),
        (
            "a.rs",
            "pub(crate) use crate::{\n    gate::{self, policy::{User, Policy as P}},\n    http::{headers::*, Response},\n};",
        ),
        ("gate/mod.rs", "pub mod policy;"),
        ("gate/policy.rs", ""),
        ("http/mod.rs", "pub mod headers;"),
        ("http/headers.rs", ""),
        ("ops.rs", ""),
    ];
    assert_eq!(
        edges_in(&files, "a"),
        ["gate", "gate::policy", "http", "http::headers"]
    );
}

#[test]
fn super_and_self_paths_start_from_the_file_and_its_inline_modules() {
    let files = [
        ("lib.rs", "pub mod a;"),
        ("a/mod.rs", "pub mod b; pub mod c; pub mod d;"),
        (
            "a/b.rs",
            "use super::c::C;\nfn f() { super::d::go(); }\nuse super::Parent;",
        ),
        (
            "a/c.rs",
            "mod inner { use super::super::d::D; use super::Same; }",
        ),
        ("a/d.rs", "use self::nothing::Here;"),
    ];
    assert_eq!(edges_in(&files, "a::b"), ["a", "a::c", "a::d"]);
    assert_eq!(edges_in(&files, "a::c"), ["a::d"]);
    assert_eq!(edges_in(&files, "a::d"), Vec::<String>::new());
}

#[test]
fn a_parent_that_re_exports_a_child_depends_on_it() {
    let files = [
        ("lib.rs", "pub mod gate; pub use gate::Gate;"),
        (
            "gate/mod.rs",
            "mod policy;\npub use policy::{Policy, User};\npub struct Gate;",
        ),
        ("gate/policy.rs", "use super::Gate;"),
    ];
    assert_eq!(edges_in(&files, "crate"), ["gate"]);
    assert_eq!(edges_in(&files, "gate"), ["gate::policy"]);
    assert_eq!(
        cycles_in(&files),
        ["2 modules: gate, gate::policy\n  for example gate -> gate::policy -> gate"]
    );
}

#[test]
fn comments_strings_unit_tests_and_other_crates_are_no_imports() {
    let files = [
        ("lib.rs", "pub mod a; pub mod b; pub mod http;"),
        (
            "a.rs",
            r###"
            // use crate::b::B;
            /* crate::b::B /* nested */ crate::b::B */
            /// Like crate::b::B.
            const S: &str = "crate::b::B \" crate::b::B";
            const R: &str = r#"crate::b::B "still" crate::b::B"#;
            const C: char = '"'; const Q: char = '\''; const B: u8 = b'"';
            fn f<'a>(x: &'a str) -> http::StatusCode { todo!() }
            #[cfg(test)]
            mod tests { use crate::b::B; }
            #[cfg(test)]
            fn helper() { crate::b::go() }
            "###,
        ),
        ("b.rs", "use crate::a::A;"),
        ("http.rs", ""),
    ];
    assert_eq!(edges_in(&files, "a"), Vec::<String>::new());
    assert_eq!(cycles_in(&files), Vec::<String>::new());
}
