//! The rules: `auth.public_paths` (public rules ahead of the rest), `[[rules]]` and
//! `auth.default`. Each rule is checked on its own, against the users it names, and against the
//! rules before it.

use crate::config::error::{ConfigError, invalid};
use crate::config::file;
use crate::gate::policy::UserConfig;
use crate::gate::rules::{self, Access, DefaultAccess, Origin, Principal, Rule, RuleSet};
use crate::oidc::config::ProviderConfig;

pub(super) fn validate_rules(
    auth: &file::Auth,
    written: Vec<file::Rule>,
    users: &[UserConfig],
    providers: &[ProviderConfig],
) -> Result<RuleSet, ConfigError> {
    let mut list = public_paths(auth.public_paths.as_deref())?;
    for (i, r) in written.into_iter().enumerate() {
        let rule = validate_rule(i, r, users, providers)?;
        // Only [[rules]] are checked for shadowing: an overlap among public_paths is harmless,
        // but a [[rules]] entry that can never match is a mistake the operator must hear about.
        if let Some(earlier) = list.iter().find(|e| rule.is_shadowed_by(e)) {
            return Err(invalid(
                format!("rules[{i}]"),
                format!(
                    "path {:?} can never match: {} comes first and matches every request it would",
                    rule.path,
                    earlier.name()
                ),
            ));
        }
        list.push(rule);
    }
    let default = match auth.default.as_deref().unwrap_or("login") {
        "login" => DefaultAccess::Login,
        "deny" => DefaultAccess::Deny,
        other => {
            return Err(invalid(
                "auth.default",
                format!("{other:?} is not allowed; use \"login\" (any logged-in user) or \"deny\""),
            ));
        }
    };
    Ok(RuleSet {
        rules: list,
        default,
    })
}

/// `auth.public_paths`, as public rules.
fn public_paths(listed: Option<&[String]>) -> Result<Vec<Rule>, ConfigError> {
    let mut list: Vec<Rule> = Vec::new();
    for (i, p) in listed.into_iter().flatten().enumerate() {
        if !p.starts_with('/') || p.contains(['?', '#', '%', '\\']) || p.contains("/.") {
            return Err(invalid(
                format!("auth.public_paths[{i}]"),
                format!(
                    "{p:?} must be a plain path prefix starting with '/' (no ?, #, %, \\ or dot segments)"
                ),
            ));
        }
        if p == "/" {
            return Err(invalid(
                format!("auth.public_paths[{i}]"),
                "\"/\" would make every path public; remove sessiongate instead",
            ));
        }
        list.push(Rule {
            origin: Origin::PublicPath(i),
            path: p.clone(),
            methods: None,
            host: None,
            access: Access::Public,
        });
    }
    Ok(list)
}

fn validate_rule(
    i: usize,
    r: file::Rule,
    users: &[UserConfig],
    providers: &[ProviderConfig],
) -> Result<Rule, ConfigError> {
    let at = |field: &str| format!("rules[{i}].{field}");
    rules::check_path(&r.path)
        .map_err(|reason| invalid(at("path"), format!("{:?} {reason}", r.path)))?;
    let methods = methods(i, r.methods.as_deref())?;
    let host = host(i, r.host.as_deref())?;
    for (key, value) in [("public", r.public), ("deny", r.deny)] {
        if value == Some(false) {
            return Err(invalid(
                at(key),
                format!("{key} = false means nothing; remove the key"),
            ));
        }
    }
    let access = access(i, &r, users, providers)?;
    Ok(Rule {
        origin: Origin::Rule(i),
        path: r.path,
        methods,
        host,
        access,
    })
}

/// `rules[i].methods`: HTTP methods in capitals; absent means every method.
fn methods(i: usize, listed: Option<&[String]>) -> Result<Option<Vec<http::Method>>, ConfigError> {
    let Some(list) = listed else { return Ok(None) };
    if list.is_empty() {
        return Err(invalid(
            format!("rules[{i}].methods"),
            "is empty: leave it out to match every method",
        ));
    }
    list.iter()
        .enumerate()
        .map(|(j, m)| {
            let upper = !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase());
            http::Method::from_bytes(m.as_bytes())
                .ok()
                .filter(|_| upper)
                .ok_or_else(|| {
                    invalid(
                        format!("rules[{i}].methods[{j}]"),
                        format!("{m:?} is not an HTTP method; write it in capitals, e.g. \"GET\""),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// `rules[i].host`: a host name without port, canonical as every request's host is before it
/// is compared.
fn host(i: usize, written: Option<&str>) -> Result<Option<String>, ConfigError> {
    let Some(h) = written else { return Ok(None) };
    match crate::http::host::parse(h.as_bytes()) {
        Ok(a) if a.port.is_none() => Ok(Some(a.host.into_owned())),
        reason => {
            let reason = reason.map_or_else(|bad| bad.message(), |_| "it has a port");
            Err(invalid(
                format!("rules[{i}].host"),
                format!(
                    "{h:?} is not a host name (no scheme, port or path), e.g. \"grafana.example.com\": {reason}"
                ),
            ))
        }
    }
}

/// What `rules[i]` does: exactly one of `public = true`, `allow = [...]` or `deny = true`.
fn access(
    i: usize,
    r: &file::Rule,
    users: &[UserConfig],
    providers: &[ProviderConfig],
) -> Result<Access, ConfigError> {
    let named = |reason: &str| {
        invalid(
            format!("rules[{i}]"),
            format!("path {:?}: {reason}", r.path),
        )
    };
    match (r.public.is_some(), &r.allow, r.deny.is_some()) {
        (true, None, false) => Ok(Access::Public),
        (false, None, true) => Ok(Access::Deny),
        (false, Some(list), false) => Ok(Access::Allow(principals(i, list, users, providers)?)),
        (false, None, false) => Err(named(
            "needs one of public = true, allow = [...] or deny = true",
        )),
        (true, Some(_), _) => Err(named(
            "public = true and allow cannot be combined: public needs no login, allow names who may enter",
        )),
        _ => Err(named(
            "set only one of public = true, allow = [...] or deny = true",
        )),
    }
}

/// The entries of `rules[i].allow`: user names from `[[users]]`, a provider's user as
/// `{provider id}:{name}`, or `group:NAME` for a group at least one user is in (any group, when
/// a provider hands out groups). A name that matches nobody is a mistake (a typo locks the
/// wrong people out or, worse, was meant to let someone in), so it is refused rather than
/// ignored.
fn principals(
    i: usize,
    list: &[String],
    users: &[UserConfig],
    providers: &[ProviderConfig],
) -> Result<Vec<Principal>, ConfigError> {
    let provider_groups = providers.iter().any(|p| p.groups_claim.is_some());
    if list.is_empty() {
        return Err(invalid(
            format!("rules[{i}].allow"),
            "is empty: nobody could enter; write deny = true if that is meant",
        ));
    }
    list.iter()
        .enumerate()
        .map(|(j, entry)| {
            let key = format!("rules[{i}].allow[{j}]");
            if let Some(group) = entry.strip_prefix("group:") {
                if !rules::is_group_name(group) {
                    return Err(invalid(key, format!("{group:?} is not a group name (letters, digits and -_. only)")));
                }
                if !provider_groups && !users.iter().any(|u| u.groups.iter().any(|g| g == group)) {
                    return Err(invalid(
                        key,
                        format!("unknown group {group:?}: no [[users]] entry lists it in groups (and no provider has a groups_claim)"),
                    ));
                }
                Ok(Principal::Group(group.to_string()))
            } else if users.iter().any(|u| u.name == *entry) || names_provider_user(entry, providers) {
                Ok(Principal::User(entry.clone()))
            } else {
                Err(invalid(
                    key,
                    format!("unknown user {entry:?}: not a [[users]] name (write \"group:NAME\" for a group, \"PROVIDER:NAME\" for a provider's user)"),
                ))
            }
        })
        .collect()
}

/// Whether `entry` is `{id}:{name}` for a configured provider `id` and a non-empty name.
fn names_provider_user(entry: &str, providers: &[ProviderConfig]) -> bool {
    entry
        .split_once(':')
        .is_some_and(|(id, name)| !name.is_empty() && providers.iter().any(|p| p.id == id))
}
