//! The library's modules form layers that only point down (issue 15, docs/ARCHITECTURE.md): a
//! module may use modules of a lower layer, never one of its own layer or above, and never one
//! of DESIGN.md's "nevers". This test reads the `crate::` paths of every file under `src/`
//! (the CLI, `main.rs` and `lib.rs` excepted: they sit on top) and fails on any import that
//! breaks the rule and is not in `KNOWN`, the list of today's violations. `KNOWN` may only
//! shrink: an entry that no longer occurs fails the test too, so that it is removed with the
//! import it excused.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Bottom up. A module may import only modules of a lower layer.
const LAYERS: &[&[&str]] = &[
    &[
        "hooks",
        "flow",
        "redact",
        "delta",
        "crypto",
        "policy",
        "progress",
        "timetable",
    ],
    &["model"],
    &["target", "index"],
    &["store"],
    &["git"],
    &["lfs", "provider", "snapshot"],
    &["vault"],
    &[
        "backup",
        "restore",
        "retention",
        "replicas",
        "recover",
        "stats",
    ],
    // Composed of the operations: verify restores samples and reads the replica check; metrics
    // read a backup run's report and the stats; status reads saved reports of both; notify
    // sends a backup run's report.
    &["verify", "metrics", "status", "notify", "report"],
    // Runs the operations on schedules, each run with its notifications and metrics.
    &["daemon"],
];

/// DESIGN.md's "no part reaches around another", whatever the layers say.
const NEVER: &[(&str, &str)] = &[
    ("target", "git"),
    ("provider", "store"),
    ("provider", "target"),
    ("provider", "index"),
    ("git", "target"),
    ("git", "store"),
];

/// Imports that break the rule today, each to be removed by moving a type or a function to
/// the layer it belongs to (issue 15).
const KNOWN: &[(&str, &str)] = &[];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The top-level module a file under `src/` belongs to, or `None` for the binary's files.
fn module_of(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let module = first.trim_end_matches(".rs").to_string();
    (!matches!(module.as_str(), "cli" | "main" | "lib")).then_some(module)
}

/// `crate::name` paths in the code of `text` (comments left out).
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `crate::{a, b}` lists several.
            if name.is_empty() && after.starts_with('{') {
                let list = after[1..].split('}').next().unwrap_or("");
                for item in list.split(',') {
                    let item: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !item.is_empty() {
                        out.insert(item);
                    }
                }
            } else if !name.is_empty() {
                out.insert(name);
            }
            rest = after;
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every (importer, imported) pair of top-level modules, with a file that shows it.
fn imports() -> BTreeMap<(String, String), String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut pairs = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap().to_path_buf();
        let Some(from) = module_of(&rel) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for to in crate_paths(&text) {
            if to == from || to.chars().next().is_some_and(|c| c.is_ascii_uppercase()) {
                // Re-exports at the crate root (`crate::ChunkId`) name no module.
                continue;
            }
            pairs
                .entry((from.clone(), to))
                .or_insert_with(|| rel.display().to_string());
        }
    }
    pairs
}

#[test]
fn layers_only_point_down() {
    let mut broken = Vec::new();
    let mut seen_known = BTreeSet::new();
    for ((from, to), file) in imports() {
        let (Some(lf), Some(lt)) = (layer_of(&from), layer_of(&to)) else {
            broken.push(format!(
                "{file}: `{from}` → `{to}`: place every module in LAYERS"
            ));
            continue;
        };
        let never = NEVER.contains(&(from.as_str(), to.as_str()));
        if lt < lf && !never {
            continue;
        }
        if KNOWN.contains(&(from.as_str(), to.as_str())) {
            seen_known.insert((from.clone(), to.clone()));
            continue;
        }
        broken.push(format!(
            "{file}: `{from}` (layer {lf}) imports `{to}` (layer {lt}){}",
            if never {
                ", which DESIGN.md forbids"
            } else {
                ""
            }
        ));
    }
    for (from, to) in KNOWN {
        if !seen_known.contains(&(from.to_string(), to.to_string())) {
            broken.push(format!(
                "`{from}` → `{to}` is in KNOWN but no longer imported: remove it from the list"
            ));
        }
    }
    assert!(
        broken.is_empty(),
        "layer violations:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_parser_sees_imports() {
    let text = "use crate::store::{pack, ChunkStore};\n// crate::retention in a comment\nlet x = crate::git::objects::walk();\nuse crate::{index, vault::Vault};";
    let found = crate_paths(text);
    let expected: BTreeSet<String> = ["store", "git", "index", "vault"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(found, expected);
}

/// docs/ARCHITECTURE.md's layer table, as (layer, module) rows, so the page cannot drift from
/// `LAYERS`.
fn architecture_table() -> BTreeSet<(usize, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ARCHITECTURE.md");
    let text = std::fs::read_to_string(path).unwrap();
    let mut rows = BTreeSet::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // `| 3 | `store` | job |` splits into ["", "3", "`store`", "job", ""].
        if cells.len() < 4 {
            continue;
        }
        let (Ok(layer), Some(module)) = (
            cells[1].parse::<usize>(),
            cells[2].strip_prefix('`').and_then(|m| m.strip_suffix('`')),
        ) else {
            continue;
        };
        rows.insert((layer, module.to_string()));
    }
    rows
}

#[test]
fn the_architecture_page_shows_the_layers() {
    let expected: BTreeSet<(usize, String)> = LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, l)| l.iter().map(move |m| (i, m.to_string())))
        .collect();
    let documented = architecture_table();
    let missing: Vec<_> = expected.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/ARCHITECTURE.md's layer table differs from LAYERS in tests/layers.rs:\n\
         not in the page: {missing:?}\nnot in LAYERS: {extra:?}"
    );
}

/// Every top-level module of the library is placed in a layer, so a new module cannot slip past
/// the rule by never being imported.
#[test]
fn every_module_has_a_layer() {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let unplaced: Vec<String> = lib
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l
                .strip_prefix("pub mod ")
                .or_else(|| l.strip_prefix("mod "))
                .or_else(|| l.strip_prefix("pub(crate) mod "))?;
            Some(rest.trim_end_matches(';').to_string())
        })
        .filter(|m| m != "cli" && layer_of(m).is_none())
        .collect();
    assert!(unplaced.is_empty(), "modules in no layer: {unplaced:?}");
}
