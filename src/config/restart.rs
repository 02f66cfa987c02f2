//! Which settings a reload cannot apply: the keys that differ between the file sessiongate
//! started with and the one it read again, other than those SIGHUP puts in force.

/// What SIGHUP applies without a restart.
const RELOADED_KEYS: &[&str] = &[
    "users",
    "rules",
    "auth.public_paths",
    "auth.default",
    "auth.redirect_hosts",
    "login_page",
    "providers",
    "auth.auto_redirect",
];

/// The dotted names of the keys whose values differ between `old` and `new`, other than those
/// a reload applies: settings that only take effect on a restart.
pub(super) fn changes(old: &toml::Table, new: &toml::Table) -> Vec<String> {
    let mut changed = Vec::new();
    diff_tables("", old, new, &mut changed);
    changed.retain(|key| {
        !RELOADED_KEYS.iter().any(|reloaded| {
            key == reloaded
                || key
                    .strip_prefix(reloaded)
                    .is_some_and(|rest| rest.starts_with('.'))
        })
    });
    changed
}

/// Appends to `out` the dotted names of the keys whose values differ between `a` and `b`,
/// descending into tables (but not into arrays, which count as one value).
fn diff_tables(prefix: &str, a: &toml::Table, b: &toml::Table, out: &mut Vec<String>) {
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        let name = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (a.get(key), b.get(key)) {
            (Some(toml::Value::Table(x)), Some(toml::Value::Table(y))) => {
                diff_tables(&name, x, y, out)
            }
            (x, y) if x == y => {}
            _ => out.push(name),
        }
    }
}
