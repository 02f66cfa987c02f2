//! Access rules: which requests need no login, which users may open what, and which nobody may.
//! Rules are checked in order and the first that matches decides; `auth.public_paths` are
//! public rules placed before all `[[rules]]`. Pure data and matching: who the users are and
//! what they are in is `policy`'s business.

use http::Method;

/// One validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Where it was written, for error messages and `sessiongate explain`.
    pub origin: Origin,
    /// A segment-aligned prefix of the normalized path: `/admin` matches `/admin` and
    /// `/admin/x`, never `/administrator`; `/admin/` matches `/admin/...` only; `/` matches all.
    pub path: String,
    /// Absent: every method.
    pub methods: Option<Vec<Method>>,
    /// Canonical (`host::canonical`: lower case, no port, no trailing dot). Absent: every host.
    pub host: Option<String>,
    pub access: Access,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `auth.public_paths[i]`
    PublicPath(usize),
    /// `rules[i]`
    Rule(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// No login needed; a session, if there is one, still names its user to the app.
    Public,
    /// Login required, then only these users and members of these groups.
    Allow(Vec<Principal>),
    /// Nobody.
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    User(String),
    Group(String),
}

/// What happens to a request no rule matches (`auth.default`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultAccess {
    /// Any logged-in user.
    Login,
    /// Nobody.
    Deny,
}

/// The rules in the order they are checked, and the default.
#[derive(Debug, Clone)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub default: DefaultAccess,
}

/// What a rule is judged against.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub method: &'a Method,
    /// The request's canonical host (`host::judged`), if it named one.
    pub host: Option<&'a str>,
    /// The normalized path, without the query.
    pub path: &'a str,
}

impl Rule {
    /// Whether the rule applies to `target`. Public rules never apply to an ambiguous path
    /// (`unambiguous == false`): a backend might read it as a path outside the prefix.
    pub fn matches(&self, target: &Target<'_>, unambiguous: bool) -> bool {
        if self.access == Access::Public && !unambiguous {
            return false;
        }
        // Both sides are canonical, so equal hosts are equal bytes.
        if let Some(host) = &self.host
            && target.host != Some(host.as_str())
        {
            return false;
        }
        if let Some(methods) = &self.methods
            && !methods.contains(target.method)
        {
            return false;
        }
        prefix_matches(&self.path, target.path)
    }

    /// Whether every request this rule would match is matched by `earlier` first, so this
    /// one can never decide anything.
    pub fn is_shadowed_by(&self, earlier: &Rule) -> bool {
        let host = match (&earlier.host, &self.host) {
            (None, _) => true,
            (Some(a), Some(b)) => a == b,
            (Some(_), None) => false,
        };
        let methods = match (&earlier.methods, &self.methods) {
            (None, _) => true,
            (Some(a), Some(b)) => b.iter().all(|m| a.contains(m)),
            (Some(_), None) => false,
        };
        host && methods && prefix_matches(&earlier.path, &self.path)
    }

    /// The rule as the config wrote it, for `explain` and log lines: `rules[3] (path "/admin")`.
    pub fn name(&self) -> String {
        match self.origin {
            Origin::PublicPath(i) => format!("auth.public_paths[{i}] ({:?})", self.path),
            Origin::Rule(i) => format!("rules[{i}] (path {:?})", self.path),
        }
    }

    /// The rule's conditions and access, one line: `path = "/admin", methods = ["GET"], allow = [...]`.
    pub fn describe(&self) -> String {
        let mut out = format!("path = {:?}", self.path);
        if let Some(methods) = &self.methods {
            let list: Vec<String> = methods
                .iter()
                .map(|m| format!("{:?}", m.as_str()))
                .collect();
            out.push_str(&format!(", methods = [{}]", list.join(", ")));
        }
        if let Some(host) = &self.host {
            out.push_str(&format!(", host = {host:?}"));
        }
        match &self.access {
            Access::Public => out.push_str(", public = true"),
            Access::Deny => out.push_str(", deny = true"),
            Access::Allow(who) => {
                let list: Vec<String> = who
                    .iter()
                    .map(|p| match p {
                        Principal::User(u) => format!("{u:?}"),
                        Principal::Group(g) => format!("\"group:{g}\""),
                    })
                    .collect();
                out.push_str(&format!(", allow = [{}]", list.join(", ")));
            }
        }
        out
    }
}

/// `prefix` as a segment-aligned prefix of `path`.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'))
}

impl RuleSet {
    /// The first rule that applies to `target` and its position, if any.
    pub fn first_match(&self, target: &Target<'_>, unambiguous: bool) -> Option<(usize, &Rule)> {
        self.rules
            .iter()
            .enumerate()
            .find(|(_, r)| r.matches(target, unambiguous))
    }
}

/// Checks a rule path as written in the config: a plain path prefix that normalization leaves
/// as it is, so what is written is what is matched. Returns what is wrong with it.
pub fn check_path(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("must start with '/'");
    }
    if path.contains(['?', '#', '%', '\\', ';']) || path.chars().any(char::is_control) {
        return Err("must be a plain path (no ?, #, %, \\, ; or control characters)");
    }
    if path.contains("//") {
        return Err("must not contain \"//\" (repeated slashes are merged before matching)");
    }
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return Err("must not contain dot segments (. or ..)");
    }
    Ok(())
}

/// Group names: letters, digits and `-_.`.
pub fn is_group_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(path: &str, methods: Option<&[Method]>, host: Option<&str>, access: Access) -> Rule {
        Rule {
            origin: Origin::Rule(0),
            path: path.into(),
            methods: methods.map(<[Method]>::to_vec),
            host: host.map(str::to_string),
            access,
        }
    }

    fn target<'a>(method: &'a Method, host: Option<&'a str>, path: &'a str) -> Target<'a> {
        Target { method, host, path }
    }

    #[test]
    fn paths_match_whole_segments() {
        let admin = rule("/admin", None, None, Access::Deny);
        let admin_dir = rule("/admin/", None, None, Access::Deny);
        let root = rule("/", None, None, Access::Deny);
        let get = Method::GET;
        for (path, a, dir) in [
            ("/admin", true, false),
            ("/admin/", true, true),
            ("/admin/x", true, true),
            ("/administrator", false, false),
            ("/Admin", false, false),
            ("/", false, false),
            ("/x/admin", false, false),
        ] {
            let t = target(&get, None, path);
            assert_eq!(admin.matches(&t, true), a, "/admin vs {path}");
            assert_eq!(admin_dir.matches(&t, true), dir, "/admin/ vs {path}");
            assert!(root.matches(&t, true), "/ vs {path}");
        }
    }

    #[test]
    fn methods_and_hosts_narrow_a_rule() {
        let r = rule(
            "/",
            Some(&[Method::GET, Method::HEAD]),
            Some("grafana.example.com"),
            Access::Deny,
        );
        assert!(r.matches(
            &target(&Method::GET, Some("grafana.example.com"), "/"),
            true
        ));
        let spelled = crate::http::host::canonical(b"Grafana.Example.COM.:443").unwrap();
        assert!(r.matches(&target(&Method::HEAD, Some(&spelled), "/x"), true));
        assert!(!r.matches(
            &target(&Method::POST, Some("grafana.example.com"), "/"),
            true
        ));
        assert!(!r.matches(&target(&Method::GET, Some("example.com"), "/"), true));
        assert!(!r.matches(&target(&Method::GET, None, "/"), true));
    }

    #[test]
    fn public_rules_never_match_ambiguous_paths() {
        let public = rule("/static", None, None, Access::Public);
        let deny = rule("/static", None, None, Access::Deny);
        let t = target(&Method::GET, None, "/static/x");
        assert!(public.matches(&t, true));
        assert!(!public.matches(&t, false));
        assert!(deny.matches(&t, false), "restrictive rules still apply");
    }

    #[test]
    fn shadowing_needs_a_covering_path_methods_and_host() {
        let deny = |path, methods: Option<&[Method]>, host| rule(path, methods, host, Access::Deny);
        let get: &[Method] = &[Method::GET];
        let get_post: &[Method] = &[Method::GET, Method::POST];
        for (earlier, later, shadowed) in [
            (deny("/", None, None), deny("/admin", None, None), true),
            (
                deny("/admin", None, None),
                deny("/admin/x", None, None),
                true,
            ),
            (
                deny("/admin", None, None),
                deny("/admin/", None, None),
                true,
            ),
            (
                deny("/admin/", None, None),
                deny("/admin", None, None),
                false,
            ),
            (
                deny("/admin", None, None),
                deny("/administrator", None, None),
                false,
            ),
            (
                deny("/admin", Some(get_post), None),
                deny("/admin", Some(get), None),
                true,
            ),
            (
                deny("/admin", Some(get), None),
                deny("/admin", Some(get_post), None),
                false,
            ),
            (
                deny("/admin", Some(get), None),
                deny("/admin", None, None),
                false,
            ),
            (
                deny("/", None, Some("a.example")),
                deny("/", None, Some("a.example")),
                true,
            ),
            (
                deny("/", None, Some("a.example")),
                deny("/", None, Some("b.example")),
                false,
            ),
            (
                deny("/", None, Some("a.example")),
                deny("/", None, None),
                false,
            ),
            (
                deny("/", None, None),
                deny("/", None, Some("a.example")),
                true,
            ),
        ] {
            assert_eq!(
                later.is_shadowed_by(&earlier),
                shadowed,
                "{} after {}",
                later.describe(),
                earlier.describe()
            );
        }
    }

    #[test]
    fn rule_paths_must_be_plain_prefixes() {
        for ok in ["/", "/admin", "/admin/", "/a.b/c-d_e~f", "/.well-known"] {
            assert_eq!(check_path(ok), Ok(()), "{ok}");
        }
        for bad in [
            "", "admin", "/a?b", "/a#b", "/a%2Fb", "/a\\b", "/a;b", "//admin", "/a//b", "/a/..",
            "/./a",
        ] {
            assert!(check_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn group_names_are_letters_digits_and_dash_underscore_dot() {
        for ok in ["admins", "ops-team", "a_b.c", "0"] {
            assert!(is_group_name(ok), "{ok}");
        }
        for bad in ["", "a b", "a:b", "grp/x", "é"] {
            assert!(!is_group_name(bad), "{bad:?}");
        }
    }
}
