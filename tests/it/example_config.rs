//! `config/sessiongate.example.toml` and the README document the config file: the example is
//! valid as shipped, its commented-out values are the real defaults, and every key the parser
//! accepts appears in both. The key list is read from the serde structs in
//! src/config/file.rs, so a new key that is not documented fails here.

use std::path::Path;

use sessiongate::Config;

const FILE_RS: &str = include_str!("../../src/config/file.rs");
const EXAMPLE: &str = include_str!("../../config/sessiongate.example.toml");
const README: &str = include_str!("../../README.md");

/// Keys whose commented-out value in the example is an illustration, not the default: they
/// have no default that can be written down (number of cores, "off", "none"), or need files.
const EXAMPLE_VALUES: &[&str] = &[
    "workers",
    "redirect_http",
    "hsts",
    "cert",
    "key",
    "ca",
    "tls_server_name",
    "secret",
    "secret_file",
    "cookie_max_age",
    "cookie_domain",
    "state_dir",
    "login_workers",
    "totp_secret",
    "totp_secret_file",
    "public_url",
    "passkey_rp_id",
    // [[rules]] has no defaults: the example shows rules as illustrations.
    "path",
    "methods",
    "host",
    "allow",
    "public",
    "deny",
];

/// A key of the config file: the table it belongs to ("" for the top level, "server",
/// "server.tls", ...), its name, and whether it is itself a table.
#[derive(Debug)]
struct Key {
    section: String,
    name: String,
    is_table: bool,
}

impl Key {
    fn path(&self) -> String {
        if self.section.is_empty() {
            self.name.clone()
        } else {
            format!("{}.{}", self.section, self.name)
        }
    }
}

/// The structs of src/config/file.rs: (struct name, [(field, type)]).
fn file_structs() -> Vec<(String, Vec<(String, String)>)> {
    let mut structs: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let mut in_struct = false;
    let mut depth = 0usize;
    for line in FILE_RS.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("pub struct ") {
            let name = rest.trim_end_matches('{').trim().to_string();
            structs.push((name, Vec::new()));
            in_struct = true;
        } else if in_struct
            && depth == 1
            && let Some(rest) = line.strip_prefix("pub ")
            && let Some((field, ty)) = rest.split_once(": ")
        {
            let (_, fields) = structs.last_mut().expect("a field inside a struct");
            fields.push((field.to_string(), ty.trim_end_matches(',').to_string()));
        }
        depth += line.matches('{').count();
        depth -= line.matches('}').count();
        if depth == 0 {
            in_struct = false;
        }
    }
    structs
}

/// Every key the parser accepts, found by walking the structs from `File`.
fn config_keys() -> Vec<Key> {
    let structs = file_structs();
    let fields_of = |name: &str| {
        structs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, f)| f.clone())
            .unwrap_or_else(|| panic!("no struct {name} in src/config/file.rs"))
    };
    let mut keys = Vec::new();
    let mut todo = vec![(String::new(), "File".to_string())];
    while let Some((section, strukt)) = todo.pop() {
        for (field, ty) in fields_of(&strukt) {
            // A field whose type names another struct of file.rs is a table.
            let nested = ty
                .split(|c: char| !c.is_alphanumeric() && c != '_')
                .find(|word| structs.iter().any(|(n, _)| n == word));
            let key = Key {
                section: section.clone(),
                name: field,
                is_table: nested.is_some(),
            };
            if let Some(inner) = nested {
                todo.push((key.path(), inner.to_string()));
            }
            keys.push(key);
        }
    }
    keys
}

/// A line of the example without its comment marker: `# key = 1` and `key = 1` both give
/// `key = 1`.
fn uncommented(line: &str) -> &str {
    line.trim().trim_start_matches('#').trim()
}

/// The table a header line opens (`[server.tls]` -> "server.tls"), commented out or not.
fn header(line: &str) -> Option<&str> {
    let line = uncommented(line);
    let inner = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]"));
    inner.or_else(|| line.strip_prefix('[').and_then(|l| l.strip_suffix(']')))
}

/// The key a line sets (`# idle_timeout = "30m"` -> "idle_timeout"), commented out or not.
fn key_set(line: &str) -> Option<&str> {
    let (lhs, _) = uncommented(line).split_once('=')?;
    let lhs = lhs.trim();
    let ident = !lhs.is_empty() && lhs.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    ident.then_some(lhs)
}

/// (section, key) for every key line of the example, commented out or not.
fn example_entries() -> Vec<(String, String)> {
    let mut section = String::new();
    let mut entries = Vec::new();
    for line in EXAMPLE.lines() {
        if let Some(h) = header(line) {
            section = h.to_string();
        } else if let Some(k) = key_set(line) {
            entries.push((section.clone(), k.to_string()));
        }
    }
    entries
}

/// The README's text under each `### ` heading, up to the next `##` or `###` heading.
fn readme_sections() -> Vec<(&'static str, String)> {
    let mut sections: Vec<(&'static str, String)> = Vec::new();
    let mut in_code = false;
    for line in README.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        // `#` lines inside code blocks are comments, not headings.
        if !in_code && let Some(h) = line.strip_prefix("### ") {
            sections.push((h, String::new()));
        } else if !in_code && (line.starts_with("# ") || line.starts_with("## ")) {
            sections.push(("", String::new()));
        } else if let Some((_, text)) = sections.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    sections
}

fn table_header(path: &str) -> String {
    if matches!(path, "users" | "rules" | "providers") {
        format!("[[{path}]]")
    } else {
        format!("[{path}]")
    }
}

#[test]
fn the_key_list_is_read_from_file_rs() {
    let keys = config_keys();
    let paths: Vec<String> = keys.iter().map(Key::path).collect();
    for want in [
        "server.listen",
        "server.tls.cert",
        "upstream.identity_header",
        "session.idle_timeout",
        "auth.failure_window",
        "users.password_hash",
    ] {
        assert!(paths.iter().any(|p| p == want), "{want} not in {paths:?}");
    }
    assert!(
        keys.len() >= 35,
        "only {} keys found: {paths:?}",
        keys.len()
    );
}

#[test]
fn example_config_is_valid_and_its_comments_are_true() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sessiongate.example.toml");
    let config = Config::load(&path).expect("the example config is valid as shipped");

    assert_eq!(config.server.listen, "127.0.0.1:8080".parse().unwrap());
    assert!(config.server.tls.is_none(), "TLS is commented out");
    let target = config
        .upstream
        .target
        .as_ref()
        .expect("the example has an upstream.url");
    assert_eq!(target.authority.as_str(), "127.0.0.1:3000");
    assert!(target.tls.is_none());
    assert_eq!(config.upstream.identity_header.as_str(), "x-forwarded-user");
    assert!(
        config.session.secret.is_none(),
        "secret left to the default"
    );
    assert!(config.session.secure);
    assert_eq!(config.session.cookie_name, "__Host-sessiongate");
    assert_eq!(config.session.idle_timeout.as_secs(), 30 * 60);
    assert_eq!(config.session.absolute_timeout.as_secs(), 12 * 3600);
    assert_eq!(config.auth.prefix, "/.sessiongate");
    assert_eq!(config.auth.max_failures, 5);

    // The example user's password is the one the comment names.
    assert!(EXAMPLE.contains("for the password \"change-me\""));
    assert_eq!(config.users.len(), 1);
    assert_eq!(config.users[0].name, "admin");
    assert!(config.users[0].password_hash.verify(b"change-me"));
}

/// Uncommenting every `# key = value` line that shows a default must change nothing. Keys of a
/// table whose header is commented out too (`# [redis]`: a table that is off by default) are
/// illustrations of that table.
#[test]
fn commented_out_values_are_the_defaults() {
    let mut uncommented_keys = Vec::new();
    let mut table_off = false;
    let text: String = EXAMPLE
        .lines()
        .map(|line| {
            if header(line).is_some() {
                table_off = line.trim_start().starts_with('#');
            }
            (line, key_set(line), table_off)
        })
        .map(|(line, key, table_off)| match key {
            Some(k)
                if line.trim_start().starts_with('#')
                    && !table_off
                    && !EXAMPLE_VALUES.contains(&k) =>
            {
                uncommented_keys.push(k.to_string());
                format!("{}\n", uncommented(line))
            }
            _ => format!("{line}\n"),
        })
        .collect();
    assert!(
        uncommented_keys.len() >= 15,
        "only {uncommented_keys:?} were uncommented"
    );
    let shipped = Config::from_toml(EXAMPLE).unwrap();
    let defaults = Config::from_toml(&text)
        .unwrap_or_else(|e| panic!("uncommented defaults are invalid: {e}\n{text}"));
    assert_eq!(
        format!("{:?}", shipped.server),
        format!("{:?}", defaults.server)
    );
    assert_eq!(
        format!("{:?}", shipped.upstream),
        format!("{:?}", defaults.upstream)
    );
    assert_eq!(
        format!("{:?}", shipped.session),
        format!("{:?}", defaults.session)
    );
    assert_eq!(
        format!("{:?}", shipped.auth),
        format!("{:?}", defaults.auth)
    );
    // The illustrative values are all in the example, commented out.
    let entries = example_entries();
    for k in EXAMPLE_VALUES {
        assert!(
            EXAMPLE
                .lines()
                .any(|l| l.trim_start().starts_with('#') && key_set(l) == Some(k)),
            "{k} is in EXAMPLE_VALUES but not commented out in the example"
        );
        assert!(entries.iter().any(|(_, key)| key == k));
    }
}

#[test]
fn every_config_key_is_in_the_example() {
    let entries = example_entries();
    let headers: Vec<&str> = EXAMPLE.lines().filter_map(header).collect();
    let mut missing = Vec::new();
    for key in config_keys() {
        let found = if key.is_table {
            headers.contains(&key.path().as_str())
        } else {
            entries
                .iter()
                .any(|(s, k)| *s == key.section && *k == key.name)
        };
        if !found {
            missing.push(key.path());
        }
    }
    assert!(
        missing.is_empty(),
        "config/sessiongate.example.toml does not document {missing:?}"
    );
}

#[test]
fn every_config_key_is_in_the_readme_reference() {
    let sections = readme_sections();
    let section_text = |path: &str| {
        let heading = format!("`{}`", table_header(path));
        sections
            .iter()
            .find(|(h, _)| h.contains(&heading))
            .map(|(_, text)| text.as_str())
    };
    let mut missing = Vec::new();
    for key in config_keys() {
        let found = if key.is_table {
            section_text(&key.path()).is_some()
        } else {
            section_text(&key.section)
                .is_some_and(|text| text.contains(&format!("| `{}` |", key.name)))
        };
        if !found {
            missing.push(key.path());
        }
    }
    assert!(
        missing.is_empty(),
        "README.md's configuration reference has no row (or no ### heading) for {missing:?}"
    );
}
