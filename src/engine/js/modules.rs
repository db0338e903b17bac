//! `require` for scripts: the bot's own files (relative paths, inside the bot folder or
//! `data/global/`) and pure-JavaScript CommonJS packages under the bot's `node_modules/` or
//! `data/node_modules/`. Node's built-ins and native packages are refused by name: botd
//! gives scripts no file system, process or sockets.

use serde_json::{json, Value};
use std::path::{Component, Path, PathBuf};

/// Node's built-in modules, which a script cannot have in botd.
pub const NODE_BUILTINS: [&str; 38] = [
    "assert",
    "async_hooks",
    "buffer",
    "child_process",
    "cluster",
    "console",
    "constants",
    "crypto",
    "dgram",
    "dns",
    "domain",
    "events",
    "fs",
    "http",
    "http2",
    "https",
    "inspector",
    "module",
    "net",
    "os",
    "path",
    "perf_hooks",
    "process",
    "punycode",
    "querystring",
    "readline",
    "repl",
    "stream",
    "string_decoder",
    "timers",
    "tls",
    "tty",
    "url",
    "util",
    "v8",
    "vm",
    "worker_threads",
    "zlib",
];

/// The folders `require` may read from.
#[derive(Debug, Clone)]
pub struct Roots {
    bot_dir: PathBuf,
    data_dir: PathBuf,
}

impl Roots {
    /// The roots of scripts in `data/global/` (no bot folder of their own).
    pub fn global(data_dir: &Path) -> Roots {
        Roots {
            bot_dir: data_dir.join("global"),
            data_dir: data_dir.to_path_buf(),
        }
    }

    pub fn for_bot(bot_dir: &Path) -> Roots {
        Roots {
            bot_dir: bot_dir.to_path_buf(),
            data_dir: super::data_dir(bot_dir),
        }
    }

    fn allowed(&self, path: &Path) -> bool {
        path.starts_with(&self.bot_dir) || path.starts_with(self.data_dir.join("global"))
    }

    /// Finds `spec` as required from `dir`: `{path, dir, source, json}`.
    pub fn resolve(&self, dir: &str, spec: &str) -> Result<Value, String> {
        let package = package_name(spec);
        let builtin = spec.strip_prefix("node:").unwrap_or(package);
        if NODE_BUILTINS.contains(&builtin) {
            return Err(format!(
                "require('{spec}'): \"{builtin}\" is a Node.js built-in module, which botd scripts cannot use"
            ));
        }
        let file = if spec.starts_with("./") || spec.starts_with("../") || spec.starts_with('/') {
            let wanted = normalize(&Path::new(dir).join(spec));
            if !self.allowed(&wanted) {
                return Err(format!(
                    "require('{spec}'): outside the bot's folder and data/global"
                ));
            }
            find_file(&wanted)
                .ok_or_else(|| format!("require('{spec}'): no such file from {dir}"))?
        } else {
            self.find_package(spec)?
        };
        let source = std::fs::read_to_string(&file)
            .map_err(|e| format!("require('{spec}'): {}: {e}", file.display()))?;
        Ok(json!({
            "path": file.display().to_string(),
            "dir": file.parent().unwrap_or(Path::new("/")).display().to_string(),
            "source": source,
            "json": file.extension().is_some_and(|e| e == "json"),
        }))
    }

    /// The package's entry file (or a file inside it) under one of the `node_modules`.
    fn find_package(&self, spec: &str) -> Result<PathBuf, String> {
        let name = package_name(spec);
        let rest = &spec[name.len()..];
        for base in [
            self.bot_dir.join("node_modules"),
            self.data_dir.join("node_modules"),
        ] {
            let root = base.join(name);
            if !root.is_dir() {
                continue;
            }
            if let Some(why) = not_pure_js(&root) {
                return Err(format!(
                    "require('{spec}'): the package \"{name}\" {why}, which botd cannot load"
                ));
            }
            let entry = if rest.is_empty() {
                let main = std::fs::read_to_string(root.join("package.json"))
                    .ok()
                    .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                    .and_then(|p| p["main"].as_str().map(str::to_string))
                    .unwrap_or_else(|| "index.js".into());
                root.join(main)
            } else {
                root.join(rest.trim_start_matches('/'))
            };
            let entry = normalize(&entry);
            if !entry.starts_with(&root) {
                break;
            }
            return find_file(&entry).ok_or_else(|| {
                format!(
                    "require('{spec}'): the package \"{name}\" has no file {}",
                    entry.display()
                )
            });
        }
        Err(format!(
            "require('{spec}'): the package \"{name}\" is not installed (npm install it in the data folder: data/node_modules/)"
        ))
    }
}

/// `lodash/fp` → `lodash`, `@scope/pkg/x` → `@scope/pkg`.
fn package_name(spec: &str) -> &str {
    let mut parts = spec.splitn(3, '/');
    let first = parts.next().unwrap_or("");
    if first.starts_with('@') {
        let len = first.len() + parts.next().map_or(0, |p| p.len() + 1);
        &spec[..len]
    } else {
        first
    }
}

/// Why a package is not plain JavaScript: a compiled addon or a build of one.
fn not_pure_js(root: &Path) -> Option<&'static str> {
    if root.join("binding.gyp").is_file() {
        return Some("builds a native addon (binding.gyp)");
    }
    let mut stack = vec![root.to_path_buf()];
    let mut seen = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            seen += 1;
            // A package is scanned only so far: its size is not ours to walk entirely.
            if seen > 5000 {
                return None;
            }
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "node_modules") {
                    stack.push(p);
                }
            } else if p.extension().is_some_and(|x| x == "node") {
                return Some("contains a native addon (.node file)");
            }
        }
    }
    None
}

/// Node's file lookup: the path, then `.js`, `.json`, then a folder's `index.js`.
fn find_file(path: &Path) -> Option<PathBuf> {
    if path.is_file() {
        return Some(path.to_path_buf());
    }
    for ext in ["js", "json"] {
        let mut with = path.as_os_str().to_owned();
        with.push(format!(".{ext}"));
        let with = PathBuf::from(with);
        if with.is_file() {
            return Some(with);
        }
    }
    let index = path.join("index.js");
    index.is_file().then_some(index)
}

/// `a/b/../c` → `a/c` without touching the file system (symlinks are not followed out).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The packages `source` requires (`require('x')` with a literal name) that are neither
/// built into the SDK nor installed as pure JavaScript, each with why.
pub fn missing_packages(roots: &Roots, source: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find("require(") {
        rest = &rest[at + "require(".len()..];
        let trimmed = rest.trim_start();
        let Some(quote) = trimmed
            .chars()
            .next()
            .filter(|c| matches!(c, '\'' | '"' | '`'))
        else {
            continue;
        };
        let Some(end) = trimmed[1..].find(quote) else {
            continue;
        };
        let spec = &trimmed[1..1 + end];
        if spec == "axios" || spec.starts_with('.') || spec.starts_with('/') {
            continue;
        }
        if let Err(why) = roots.resolve("", spec) {
            if !out.iter().any(|(s, _)| s == spec) {
                out.push((spec.to_string(), why));
            }
        }
    }
    out
}
