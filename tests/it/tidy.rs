//! The invariants ARCHITECTURE.md states about the code's shape, checked
//! on the source text (as rust-analyzer's `tidy.rs` does): no import cycle
//! between the crate's top-level modules, SQL only in `src/db/`, sockets
//! only in `src/http/` (besides the two places named below). Test code
//! (`#[cfg(test)] mod tests`) is left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every source file under `src/`, with its text up to its test module.
fn sources() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                let code = text.split("#[cfg(test)]\nmod tests").next().unwrap().to_owned();
                out.push((path, code));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    walk(&root, &mut out);
    out.into_iter().map(|(path, code)| (path.strip_prefix(&root).unwrap().to_path_buf(), code)).collect()
}

/// The top-level module a file belongs to (`api` for `api/stores.rs`).
fn top(path: &Path) -> String {
    let first = path.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
    first.trim_end_matches(".rs").to_owned()
}

#[test]
fn top_level_modules_import_each_other_without_cycles() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, code) in sources() {
        let from = top(&path);
        let uses = graph.entry(from.clone()).or_default();
        for (at, _) in code.match_indices("crate::") {
            let name: String = code[at + 7..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            if !name.is_empty() && name != from {
                uses.insert(name);
            }
        }
    }
    // Depth-first search for a path back to where it started.
    fn cycle(graph: &BTreeMap<String, BTreeSet<String>>, start: &str, at: &str, path: &mut Vec<String>) -> bool {
        for next in graph.get(at).into_iter().flatten() {
            if next == start {
                return true;
            }
            if !path.contains(next) {
                path.push(next.clone());
                if cycle(graph, start, next, path) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    for module in graph.keys() {
        let mut path = vec![module.clone()];
        assert!(!cycle(&graph, module, module, &mut path), "import cycle: {} -> {module}", path.join(" -> "));
    }
    assert!(graph["http"].iter().all(|used| !["error", "api", "server", "db"].contains(&used.as_str())));
}

#[test]
fn sql_is_written_only_in_the_db_module() {
    for (path, code) in sources() {
        if path.starts_with("db") {
            continue;
        }
        // A string literal that starts as SQL does (comments may name it).
        for word in ["SELECT ", "INSERT ", "UPDATE ", "DELETE ", "CREATE ", "PRAGMA ", "BEGIN", "COMMIT", "ROLLBACK"] {
            let literal = format!("\"{word}");
            assert!(!code.contains(&literal), "{} writes SQL ({word:?})", path.display());
        }
    }
}

#[test]
fn only_the_http_module_touches_sockets() {
    // The stopping server's one connection to wake its accept thread, and
    // the connection thread that is handed its accepted socket.
    let allowed = ["lifecycle.rs", "worker.rs"];
    for (path, code) in sources() {
        if path.starts_with("http") || allowed.iter().any(|a| path == Path::new(a)) {
            continue;
        }
        for word in ["TcpStream", "TcpListener", "UdpSocket", "rustix::net", "rustix::event"] {
            assert!(!code.contains(word), "{} uses {word}", path.display());
        }
    }
}

#[test]
fn the_readmes_configuration_table_is_the_servers() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut documented = BTreeMap::new();
    for line in readme.lines().filter(|line| line.starts_with("| `")) {
        let cells: Vec<&str> = line.split(" | ").collect();
        let name = cells[0].trim_start_matches("| `").trim_end_matches('`');
        if name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') && cells.len() >= 3 {
            documented.insert(name.to_owned(), cells[1].replace('`', "").replace('−', "-"));
        }
    }
    for (name, default, _) in sync_node::config::VARIABLES {
        let readme_default = documented.remove(*name).unwrap_or_else(|| panic!("README's table lacks {name}"));
        // The first word of the default (a number, a word, "unset", "=").
        let first = default.split([' ', ',']).next().unwrap();
        assert!(readme_default.starts_with(first), "{name}: README says {readme_default:?}, the server {default:?}");
    }
    assert!(documented.is_empty(), "README documents variables the server does not read: {documented:?}");
}

#[test]
fn the_readmes_fixed_limits_are_the_servers() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut table = String::from("| limit | value |\n|---|---|\n");
    for limit in sync_node::limits::TABLE {
        table.push_str(&format!("| {} | {} |\n", limit.what, limit.shown()));
    }
    assert!(
        readme.contains(&table),
        "README's \"Fixed limits\" table is not src/limits.rs's; it should read:\n{table}"
    );
}
