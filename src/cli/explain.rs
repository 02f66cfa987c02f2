//! `sessiongate explain`: what the gate would decide for a request, and which rule decides it,
//! from a config file alone (no server, no session store). It asks the gate itself, the same
//! `Gate::decide_under` every proxied request goes through, with a stand-in session for
//! `--user` in a store of its own, so it cannot disagree with the proxy.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method, header};

use crate::app::Routes;
use crate::config::Config;
use crate::gate::policy::{Policy, User};
use crate::gate::rules::{DefaultAccess, Rule};
use crate::gate::{Decision, Gate, Head, HostOf, Via};
use crate::http::host;
use crate::http::paths;
use crate::ops::metrics::Metrics;
use crate::session::identity::{Profile, UserNames, provider_key};
use crate::session::tunnels::Tunnels;
use crate::session::{CookieSigner, MemoryStore, SessionKeys, SessionMeta, Sessions};

/// The question, read: a method, a normalized path, and the canonical host if the URL has one.
struct Question {
    method: Method,
    path: String,
    host: Option<String>,
    https: bool,
}

/// The explanation, several lines of text, or what is wrong with the question.
pub fn explain(
    config: &Config,
    user: Option<&str>,
    groups: &[String],
    method: &str,
    url: &str,
) -> Result<String, String> {
    let question = read(method, url)?;
    let (gate, signer) = stand_in_gate(config);
    let policy = gate.policy();
    let user = match user {
        None if groups.is_empty() => None,
        None => return Err("--group needs --user (a provider's user)".into()),
        Some(name) => Some(who(config, &gate, &policy, name, groups)?),
    };
    let user = user.as_ref();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| format!("cannot start: {e}"))?;
    let (decision, rule) =
        runtime.block_on(decide(&gate, &signer, &policy, &question, user, config))?;
    let mut out = asked(&question, user);
    if let Decision::Own(_) = decision {
        out.push_str(&format!(
            "decision: sessiongate's own endpoint (under auth.prefix {:?}); never forwarded\n",
            config.auth.prefix
        ));
        return Ok(out);
    }
    out.push_str(&format!("decision: {}\n", said(config, &decision)));
    match rule {
        Some(rule) => out.push_str(&format!("rule: {}: {}\n", rule.name(), rule.describe())),
        None => out.push_str(&format!(
            "rule: none matched; auth.default = {:?}\n",
            match config.rules.default {
                DefaultAccess::Login => "login",
                DefaultAccess::Deny => "deny",
            }
        )),
    }
    if let Some(reading) = paths::backend_reading(&question.path) {
        out.push_str(&format!(
            "note: a backend may read this path as {reading}; both readings were judged and the stricter answer stands\n"
        ));
    }
    Ok(out)
}

/// The method and URL as the proxy would read them, or why it would refuse them.
fn read(method: &str, url: &str) -> Result<Question, String> {
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
    Ok(Question {
        method,
        path: path.into_owned(),
        host: host.map(|h| h.into_owned()),
        https: uri.scheme() == Some(&http::uri::Scheme::HTTPS),
    })
}

/// A gate for `config` over a memory store of its own, and the signer of its cookies. The
/// store lives for one question and its cookies never leave the process, so a fixed key does.
fn stand_in_gate(config: &Config) -> (Gate, CookieSigner) {
    const KEY: &[u8] = b"sessiongate explain: a stand-in store for one question";
    let s = &config.session;
    let signer = CookieSigner::new(KEY, &s.cookie_name);
    let sessions = Sessions::Memory {
        store: Arc::new(MemoryStore::new(s.idle_timeout, s.absolute_timeout)),
        keys: SessionKeys::new(KEY),
    };
    let gate = Gate::new(
        config.policy(),
        Arc::new(UserNames::default()),
        sessions,
        Arc::new(Tunnels::default()),
        signer.clone(),
        Arc::new(Metrics::new(true)),
        Routes::new(&config.auth.prefix).site(config),
    );
    (gate, signer)
}

/// The user `name` names: a `[[users]]` name, or a provider's user `{id}:{name}` with `groups`
/// as their provider would send them.
fn who(
    config: &Config,
    gate: &Gate,
    policy: &Policy,
    name: &str,
    groups: &[String],
) -> Result<Arc<User>, String> {
    if let Some(user) = policy.user(name) {
        if !groups.is_empty() {
            return Err(format!(
                "{name:?} is a [[users]] name: its groups are the config's, --group is for a provider's user"
            ));
        }
        return Ok(user.clone());
    }
    let provider = name
        .split_once(':')
        .and_then(|(id, rest)| config.providers.iter().find(|p| p.id == id && !rest.is_empty()))
        .ok_or_else(|| format!("there is no user {name:?} in [[users]], nor a provider's user (write PROVIDER:NAME with a [[providers]] id)"))?;
    if let Some(g) = groups
        .iter()
        .find(|g| !crate::gate::rules::is_group_name(g))
    {
        return Err(format!(
            "{g:?} is not a group name (letters, digits and -_. only)"
        ));
    }
    let profile = Profile {
        provider: provider.id.clone(),
        name: name.to_string(),
        groups: groups.to_vec(),
        signed_in_ms: 0,
    };
    let key = provider_key(&provider.id, "sessiongate-explain");
    gate.provider_user(&key, profile, provider.fingerprint())
        .ok_or_else(|| format!("{name:?} is not a name the identity header can carry"))
}

/// The gate's decision on `question` from `user` (signed in by a stand-in session), and the
/// rule that made it.
async fn decide<'p>(
    gate: &Gate,
    signer: &CookieSigner,
    policy: &'p Policy,
    question: &Question,
    user: Option<&Arc<User>>,
    config: &Config,
) -> Result<(Decision, Option<&'p Rule>), String> {
    let mut headers = HeaderMap::new();
    if let Some(user) = user {
        let meta = SessionMeta {
            client: IpAddr::V4(Ipv4Addr::LOCALHOST),
            browser: Default::default(),
        };
        let id = gate
            .start_session(user, &meta)
            .await
            .map_err(|e| format!("cannot start a stand-in session: {e}"))?;
        let cookie = format!("{}={}", config.session.cookie_name, signer.sign(&id));
        let cookie =
            HeaderValue::from_str(&cookie).map_err(|_| "the cookie name is not header-safe")?;
        headers.insert(header::COOKIE, cookie);
    }
    let head = Head {
        method: &question.method,
        host: HostOf::Known(question.host.as_deref()),
        path: &question.path,
        headers: &headers,
        via: Via::Connection {
            trusted: false,
            proto: if question.https { "https" } else { "http" },
            upgrade: false,
        },
    };
    let (decided, rule) = gate.decide_under(policy, &head).await;
    Ok((decided.decision, rule))
}

/// The first line: the request, and who asks.
fn asked(question: &Question, user: Option<&Arc<User>>) -> String {
    let mut out = format!("{} {}", question.method, question.path);
    if let Some(host) = &question.host {
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
    out
}

/// What the proxy does with a request the gate decided `decision` on.
fn said(config: &Config, decision: &Decision) -> String {
    let identity = &config.upstream.identity_header;
    let groups = &config.upstream.groups_header;
    match decision {
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
        Decision::Forbidden { .. } | Decision::CrossSiteUpgrade => "forbidden: 403".to_string(),
        Decision::Unavailable => "unavailable: 503".to_string(),
        Decision::Own(_) => "sessiongate's own endpoint; never forwarded".to_string(),
    }
}
