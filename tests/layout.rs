//! The module layout of `src/lib.rs` holds in the source: each module names
//! only the modules its "Imports" table allows (so no circle can form),
//! only `store` names a database driver (rusqlite, postgres), only `main`/`cli` import `app`, and no file
//! is over 1,500 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The allowed imports, from the `# Imports` table of `src/lib.rs`.
fn table(lib: &str) -> BTreeMap<String, BTreeSet<String>> {
    let doc: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect();
    let start = doc
        .iter()
        .position(|l| *l == "# Imports")
        .expect("lib.rs has an Imports section");
    let mut rows = BTreeMap::new();
    let mut fenced = false;
    for l in &doc[start..] {
        if l.starts_with("```") {
            if fenced {
                break;
            }
            fenced = true;
            continue;
        }
        if !fenced {
            continue;
        }
        let (module, deps) = l.split_once('→').expect("a row is `module → deps`");
        rows.insert(
            module.trim().to_string(),
            deps.split_whitespace().map(str::to_string).collect(),
        );
    }
    rows
}

/// The top-level module a file belongs to (`src/store/view.rs` → `store`).
fn top_module(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next().expect("a component");
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_string()
}

/// Code lines only: comments name modules without importing them.
fn code(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter(|l| !l.trim_start().starts_with("//"))
}

#[test]
fn the_source_follows_the_module_map() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let allowed = table(&lib);
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let modules: BTreeSet<String> = files
        .iter()
        .map(|f| top_module(&src, f))
        .filter(|m| m != "lib" && m != "main")
        .collect();
    assert_eq!(
        modules,
        allowed.keys().cloned().collect::<BTreeSet<_>>(),
        "every module has one row in lib.rs's Imports table"
    );
    let mut wrong = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read");
        let rel = f
            .strip_prefix(&src)
            .expect("under src")
            .display()
            .to_string();
        let lines = text.lines().count();
        if lines > 1_500 {
            wrong.push(format!("{rel}: {lines} lines (over 1,500)"));
        }
        let top = top_module(&src, f);
        if top == "main" || top == "lib" {
            continue;
        }
        let may = &allowed[&top];
        for line in code(&text) {
            for driver in ["rusqlite", "postgres::", "tokio_postgres"] {
                if top != "store" && line.contains(driver) {
                    wrong.push(format!("{rel}: names {driver}: {}", line.trim()));
                }
            }
            let mut rest = line;
            while let Some(i) = rest.find("crate::") {
                rest = &rest[i + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if name != top && modules.contains(&name) && !may.contains(&name) {
                    wrong.push(format!("{rel}: {top} imports {name}: {}", line.trim()));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_imports_table_has_no_circle() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .expect("lib.rs");
    let allowed = table(&lib);
    // Depth-first search for a back edge.
    fn visit(
        m: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) {
        match state.get(m) {
            Some(2) => return,
            Some(1) => panic!("import circle: {} → {m}", path.join(" → ")),
            _ => {}
        }
        state.insert(m.to_string(), 1);
        path.push(m.to_string());
        for d in g.get(m).into_iter().flatten() {
            assert!(g.contains_key(d), "{m} lists an unknown module {d}");
            visit(d, g, state, path);
        }
        path.pop();
        state.insert(m.to_string(), 2);
    }
    let mut state = BTreeMap::new();
    for m in allowed.keys() {
        visit(m, &allowed, &mut state, &mut Vec::new());
    }
    let doors = ["smtp", "imap", "jmap", "api", "portal", "console"];
    for a in doors {
        for b in doors {
            assert!(!allowed[a].contains(b), "door {a} may not import door {b}");
        }
    }
    for (m, deps) in &allowed {
        if m != "cli" {
            assert!(!deps.contains("app"), "{m} may not import app");
        }
    }
}
