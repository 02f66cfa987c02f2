//! `sessiongate explain`: what the gate would decide for a request, and which rule decides it,
//! from a config file alone (no server, no session store).

use http::Method;

use crate::config::Config;
use crate::gate::policy::Policy;
use crate::gate::rules::{DefaultAccess, Target};
use crate::gate::{Decision, decision};
use crate::http::host;
use crate::http::paths;
use crate::session::identity::UserNames;

/// The explanation, several lines of text, or what is wrong with the question.
pub fn explain(
    config: &Config,
    user: Option<&str>,
    method: &str,
    url: &str,
) -> Result<String, String> {
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("{method:?} is not an HTTP method"))?;
    let uri: http::Uri = url.parse().map_err(|_| {
        format!("{url:?} is not a URL or a path (e.g. /admin or https://app.example.com/admin)")
    })?;
    let path = paths::normalize(uri.path(), uri.query()).map_err(|bad| {
        format!(
            "sessiongate refuses this target with 400: {}",
            bad.message()
        )
    })?;
    // Judged in canonical form, as the proxy judges a request's host.
    let host = uri
        .authority()
        .map(|a| host::canonical(a.as_str().as_bytes()))
        .transpose()
        .map_err(|bad| format!("sessiongate refuses this host with 400: {}", bad.message()))?;
    let policy = Policy::build(config, &UserNames::default());
    let user = match user {
        None => None,
        Some(name) => Some(
            policy
                .user(name)
                .ok_or_else(|| format!("there is no user {name:?} in [[users]]"))?,
        ),
    };

    let mut out = format!("{method} {path}");
    if let Some(host) = &host {
        out.push_str(&format!(" on host {host}"));
    }
    match user {
        Some(u) if u.groups.is_empty() => out.push_str(&format!(" as {} (no groups)\n", u.name)),
        Some(u) => out.push_str(&format!(
            " as {} (groups: {})\n",
            u.name,
            u.groups.join(", ")
        )),
        None => out.push_str(" with no session\n"),
    }
    if let Some(rest) = path.strip_prefix(config.auth.prefix.as_str())
        && (rest.is_empty() || rest.starts_with('/'))
    {
        out.push_str(&format!(
            "decision: sessiongate's own endpoint (under auth.prefix {:?}); never forwarded\n",
            config.auth.prefix
        ));
        return Ok(out);
    }

    let target = Target {
        method: &method,
        host: host.as_deref(),
        path: &path,
    };
    let judgement = policy.judge(user.map(|u| &**u), &target);
    let identity = &config.upstream.identity_header;
    let groups = &config.upstream.groups_header;
    let said = match decision(judgement.ruling, user) {
        Decision::Allow { user } => format!(
            "allow: forwarded with {identity}: {} and {groups}: {}",
            user.name,
            user.groups.join(",")
        ),
        Decision::Public { user: None } => {
            "public: forwarded without a login and without an identity".to_string()
        }
        Decision::Public { user: Some(user) } => format!(
            "public: forwarded (no login needed) with {identity}: {}",
            user.name
        ),
        Decision::LoginRequired => {
            "login required: browsers are sent to the sign-in page, other clients get 401"
                .to_string()
        }
        Decision::Forbidden { .. } => "forbidden: 403".to_string(),
        Decision::Unavailable => "unavailable: 503".to_string(),
    };
    out.push_str(&format!("decision: {said}\n"));
    match judgement.rule {
        Some(rule) => out.push_str(&format!("rule: {}: {}\n", rule.name(), rule.describe())),
        None => out.push_str(&format!(
            "rule: none matched; auth.default = {:?}\n",
            match config.rules.default {
                DefaultAccess::Login => "login",
                DefaultAccess::Deny => "deny",
            }
        )),
    }
    if let Some(reading) = paths::backend_reading(&path) {
        out.push_str(&format!(
            "note: a backend may read this path as {reading}; both readings were judged and the stricter answer stands\n"
        ));
    }
    Ok(out)
}
