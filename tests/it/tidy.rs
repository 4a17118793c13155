//! Architecture rules, checked on the source (rust-analyzer's `tidy.rs` style): the layers'
//! dependencies run one way, no cycle joins two top-level modules, and each foreign crate has
//! one owner. A change that breaks a rule fails here, with the file that broke it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The adapters: they implement ports and are wired by `app` alone.
const ADAPTERS: [&str; 5] = ["script", "store", "users", "sms", "outbound"];

/// What each top-level module may import from the crate (besides itself).
const ALLOWED: [(&str, &[&str]); 14] = [
    ("base", &[]),
    ("config", &["base"]),
    ("ports", &["base"]),
    ("logging", &["base"]),
    ("flow", &["base", "config", "ports"]),
    ("oidc", &["base", "config", "ports"]),
    ("admin", &["base", "config", "ports", "flow"]),
    // The admin listener's handlers call the operator actions the CLI calls.
    ("web", &["base", "config", "ports", "flow", "oidc", "admin"]),
    ("outbound", &["base", "config", "ports"]),
    ("store", &["base", "ports"]),
    ("users", &["base", "config", "ports"]),
    // Providers send through the one HTTP bridge.
    ("sms", &["base", "config", "ports", "outbound"]),
    // The script host hands scripts the flow's HookContext, their SMS provider and the bridge.
    (
        "script",
        &["base", "config", "ports", "flow", "sms", "outbound"],
    ),
    (
        "app",
        &[
            "admin", "base", "config", "flow", "logging", "oidc", "outbound", "ports", "script",
            "sms", "store", "users", "web",
        ],
    ),
];

/// Foreign crates and the only places (file or folder under src/) that may name them.
const OWNERS: [(&str, &[&str]); 28] = [
    ("rhai", &["script/"]),
    ("axum", &["web/"]),
    ("hyper", &["web/"]),
    ("hyper_util", &["web/"]),
    ("tower", &["web/"]),
    ("minijinja", &["web/"]),
    ("reqwest", &["outbound/"]),
    ("notify", &["app/reload.rs"]),
    ("argon2", &["base/password.rs"]),
    ("phonenumber", &["base/phone.rs"]),
    ("getrandom", &["base/random.rs"]),
    ("sha2", &["base/digest.rs", "flow/otp.rs"]),
    ("hmac", &["base/digest.rs", "flow/otp.rs"]),
    ("sha1", &["base/digest.rs"]),
    ("regex", &["script/"]),
    ("toml_edit", &["users/", "admin/config_file.rs"]),
    ("prometheus_client", &["base/metrics.rs"]),
    ("ldap3", &["users/ldap.rs"]),
    ("rustls", &["users/ldap.rs"]),
    ("redis", &["store/"]),
    ("mimalloc", &["base/memory.rs"]),
    ("rsa", &["oidc/"]),
    ("jsonwebtoken", &["oidc/"]),
    ("tracing_appender", &["logging.rs"]),
    ("tracing_subscriber", &["logging.rs"]),
    ("anyhow", &["main.rs"]),
    ("clap", &["main.rs"]),
    ("libc", &["main.rs"]),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comments and without its unit tests (which may use fakes and
/// adapters freely).
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]") {
        Some(at) => &text[..at],
        None => &text,
    };
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `src/web/login.rs` -> "web/login.rs", its top-level module "web".
fn relative(path: &Path) -> (String, String) {
    let rel = path
        .strip_prefix(src())
        .unwrap()
        .to_string_lossy()
        .replace('\\', "/");
    let top = rel
        .split('/')
        .next()
        .unwrap()
        .trim_end_matches(".rs")
        .to_owned();
    (rel, top)
}

/// Top-level modules named by `crate::NAME` or `use crate::{NAME, ...}`.
fn crate_imports(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            // Only the items at the group's own level name top-level modules.
            let (mut depth, mut item) = (1, String::new());
            let mut items = Vec::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 1 => items.push(std::mem::take(&mut item)),
                    _ if depth == 1 => item.push(c),
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
            }
            items.push(item);
            for item in items {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        } else {
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            found.insert(name);
        }
        rest = after;
    }
    found
}

fn module_graph() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut graph: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for file in files {
        let (rel, top) = relative(&file);
        if rel == "main.rs" || rel == "lib.rs" {
            continue;
        }
        for name in crate_imports(&code_of(&file)) {
            if name != top {
                graph
                    .entry(top.clone())
                    .or_default()
                    .entry(name)
                    .or_default()
                    .insert(rel.clone());
            }
        }
    }
    graph
}

#[test]
fn layers_import_only_what_they_may() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.into_iter().collect();
    let mut broken = Vec::new();
    for (module, imports) in module_graph() {
        let Some(may) = allowed.get(module.as_str()) else {
            broken.push(format!("src/{module}: a new top-level module: add it to ALLOWED in tests/it/tidy.rs and to ARCHITECTURE.md"));
            continue;
        };
        for (import, files) in imports {
            if !may.contains(&import.as_str()) {
                broken.push(format!("{module} imports {import} in {files:?}"));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "layer rules broken:\n{}",
        broken.join("\n")
    );
}

#[test]
fn only_the_composition_root_imports_adapters() {
    for (module, imports) in module_graph() {
        if module == "app" || ADAPTERS.contains(&module.as_str()) {
            continue;
        }
        for adapter in ADAPTERS {
            assert!(
                !imports.contains_key(adapter),
                "{module} imports the {adapter} adapter in {:?}",
                imports[adapter]
            );
        }
    }
}

#[test]
fn no_cycle_between_top_level_modules() {
    let graph = module_graph();
    // Depth-first search for a back edge.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if done.contains(node) {
            return;
        }
        if let Some(at) = path.iter().position(|n| n == node) {
            panic!("import cycle: {} -> {node}", path[at..].join(" -> "));
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flat_map(|m| m.keys()) {
            visit(next, graph, path, done);
        }
        path.pop();
        done.insert(node.to_owned());
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, &graph, &mut Vec::new(), &mut done);
    }
}

#[test]
fn each_foreign_crate_has_one_owner() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut broken = Vec::new();
    for file in files {
        let (rel, _) = relative(&file);
        let code = code_of(&file);
        for (krate, owners) in OWNERS {
            let named = code.contains(&format!("{krate}::"))
                || code.contains(&format!("use {krate};"))
                || code.contains(&format!("use {krate} "));
            let owned = owners.iter().any(|o| rel == *o || rel.starts_with(o));
            if named && !owned {
                broken.push(format!("{rel} uses {krate}, which belongs to {owners:?}"));
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn the_checks_see_what_they_check() {
    // Guards against a parser that silently finds nothing.
    let graph = module_graph();
    assert!(graph["web"].contains_key("flow"), "{graph:?}");
    assert!(graph["app"].contains_key("script"));
    assert_eq!(
        crate_imports("use crate::{flow::x, ports::{A, b}};\nlet _ = crate::base::random;"),
        ["base", "flow", "ports"].map(String::from).into()
    );
}
