//! The gate: for every request that can reach the app or sessiongate's own pages, the one
//! [`Decision`] (who is asking and what they may do), made from the path, the session cookie,
//! the session store, the policy of the moment and what the connection says: own endpoints,
//! public paths, rules, the session, an upgrade's `Origin`, forward-auth's callers and the
//! sessions page are all decided here. The consumers (the handler, forward-auth, the sessions
//! page, tunnels, `explain`) only turn a decision into an answer; none of them works out again
//! whether a request may pass.

pub mod policy;
pub mod rules;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use http::{HeaderMap, Method};

use crate::gate::policy::{Policy, PolicyConfig, User};
use crate::gate::rules::{Rule, Target};
use crate::http::headers::single_cookie;
use crate::http::upgrade;
use crate::ops::metrics::{EndReason, Metrics};
use crate::ops::outcome::Outcome;
use crate::session::identity::{Profile, UserNames};
use crate::session::tunnels::Tunnels;
use crate::session::{
    CookieSigner, Owner, SessionId, SessionKey, SessionMeta, Sessions, StoreError,
};

/// What to do with a request.
pub enum Decision {
    /// A signed-in user the rules let in.
    Allow { user: Arc<User> },
    /// A public path: no login needed. A session, if the request has one, still names its user.
    Public { user: Option<Arc<User>> },
    /// Nobody is signed in and the path needs a login.
    LoginRequired,
    /// The rules refuse this request (to this user, or to anyone).
    Forbidden { user: Option<Arc<User>> },
    /// The session store could not answer: refused, never treated as anonymous.
    Unavailable,
    /// An upgrade from a page on another site (its `Origin`), which could open a connection
    /// with the user's cookie: refused before any session is looked up.
    CrossSiteUpgrade,
    /// sessiongate's own endpoint: answered by sessiongate, never forwarded.
    Own(Own),
}

/// Who may use one of sessiongate's own endpoints.
pub enum Own {
    /// Everyone: sign-in, sign-out, health, the logo, an unknown own path (404).
    Open,
    /// Forward-auth, asked by a peer in `server.trusted_proxies`: it may ask about requests.
    EdgeAsks,
    /// Forward-auth, asked by anyone else: refused (its answer would tell a client who a
    /// cookie belongs to, and the edge proxy is the only one whose headers it reads).
    UntrustedEdge,
    /// The sessions and account pages and their forms, for the signed-in user only. the request's session, or
    /// none, or the store could not answer.
    Mine(Result<Option<Authenticated>, StoreError>),
}

impl Decision {
    /// The outcome the metrics count and the access log names.
    pub fn outcome(&self) -> Outcome {
        match self {
            Decision::Allow { .. } => Outcome::Allow,
            Decision::Public { .. } => Outcome::Public,
            Decision::LoginRequired => Outcome::LoginRequired,
            Decision::Forbidden { .. } | Decision::CrossSiteUpgrade => Outcome::Forbidden,
            Decision::Unavailable => Outcome::Unavailable,
            Decision::Own(_) => Outcome::OwnEndpoint,
        }
    }

    /// The user the decision names to the access log.
    pub fn into_user(self) -> Option<Arc<User>> {
        match self {
            Decision::Allow { user } => Some(user),
            Decision::Public { user } | Decision::Forbidden { user } => user,
            _ => None,
        }
    }
}

/// A decision and the session it was made for, which the access log names.
pub struct Decided {
    pub decision: Decision,
    pub session: Option<SessionId>,
}

impl Decided {
    /// A decision made without looking at a session.
    fn sessionless(decision: Decision) -> Decided {
        Decided {
            decision,
            session: None,
        }
    }
}

/// A live session found on a request, and its user as the current policy knows them.
pub struct Authenticated {
    pub id: SessionId,
    pub user: Arc<User>,
}

/// The parts of a request the gate judges.
pub struct Head<'a> {
    pub method: &'a Method,
    /// The host the client asked for, looked up only when a rule names a host.
    pub host: HostOf<'a>,
    /// The normalized path, without the query.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    pub via: Via,
}

/// How the request the gate judges reached sessiongate.
#[derive(Clone, Copy)]
pub enum Via {
    /// Sent on a connection to sessiongate, by a peer in `server.trusted_proxies` or not, over
    /// `proto` (`http` or `https`); `upgrade`: it asks for an upgrade `upgrade::decide` relays.
    Connection {
        trusted: bool,
        proto: &'static str,
        upgrade: bool,
    },
    /// Described by an edge proxy asking forward-auth: judged as the request that proxy
    /// would pass on. sessiongate's own paths are open to it: the edge proxy sends them on to
    /// sessiongate, which judges them when they come.
    Edge,
}

/// Where a request's host comes from.
#[derive(Clone, Copy)]
pub enum HostOf<'a> {
    /// Already known and canonical (forward-auth reads it from the proxy's header).
    Known(Option<&'a str>),
    /// The request's `Host` or target authority (`host::judged`).
    Request(&'a HeaderMap, Option<&'a http::uri::Authority>),
}

impl<'a> HostOf<'a> {
    /// The canonical host, computed only here: when a rule names a host.
    fn get(self) -> Option<Cow<'a, str>> {
        match self {
            HostOf::Known(host) => host.map(Cow::Borrowed),
            HostOf::Request(headers, target) => crate::http::host::judged(headers, target),
        }
    }
}

/// What the gate knows of sessiongate itself besides the policy: where its own endpoints are,
/// and which other sites' pages may open upgrades.
pub struct Site {
    /// `auth.prefix`: every path under it is sessiongate's own.
    pub prefix: String,
    /// The forward-auth endpoints, which answer only `server.trusted_proxies`.
    pub forward_auth: [String; 2],
    /// The sessions and account pages and their forms, for the signed-in user only.
    pub signed_in: Vec<String>,
    /// `auth.websocket_origins`.
    pub websocket_origins: Vec<String>,
    /// `session.cookie_name`: the cookie a session is read from.
    pub cookie_name: String,
}

impl Site {
    /// Whether `path` (normalized) is sessiongate's own: the prefix, or a path under it. The
    /// one place this is decided: such a path is answered by sessiongate and never forwarded.
    pub fn is_own(&self, path: &str) -> bool {
        path.strip_prefix(self.prefix.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

pub struct Gate {
    policy: ArcSwap<Policy>,
    /// Every user name this process has known; shared by all policies (see `identity`) and by
    /// a shared store, which reads names back.
    names: Arc<UserNames>,
    sessions: Sessions,
    /// Open upgraded connections, closed when their session ends.
    tunnels: Arc<Tunnels>,
    signer: CookieSigner,
    /// Counts the sessions the gate ends (the store counts those that expire).
    metrics: Arc<Metrics>,
    site: Site,
}

impl Gate {
    /// `names` must be the table `sessions` reads names back with.
    pub fn new(
        config: PolicyConfig<'_>,
        names: Arc<UserNames>,
        sessions: Sessions,
        tunnels: Arc<Tunnels>,
        signer: CookieSigner,
        metrics: Arc<Metrics>,
        site: Site,
    ) -> Gate {
        let policy = Policy::build(config, &names);
        Gate {
            policy: ArcSwap::from_pointee(policy),
            names,
            sessions,
            tunnels,
            signer,
            metrics,
            site,
        }
    }

    /// The policy of the moment. Hold it for one request, so the request sees one policy.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    pub fn tunnels(&self) -> &Arc<Tunnels> {
        &self.tunnels
    }

    /// Whether `path` is sessiongate's own (see [`Site::is_own`]).
    pub fn is_own(&self, path: &str) -> bool {
        self.site.is_own(path)
    }

    /// Puts `config`'s users and rules in force for every request from now on, and ends the
    /// sessions of users it removes or whose password it changes; how many sessions ended.
    /// `config` must be validated (it is, being made from a `Config`). The new policy is in
    /// force even if the store cannot answer; such sessions are refused on their next request
    /// anyway.
    pub async fn replace_policy(&self, config: PolicyConfig<'_>) -> Result<usize, StoreError> {
        let policy = Arc::new(Policy::build(config, &self.names));
        let old = self.policy.swap(policy.clone());
        self.tunnels
            .owners_ended(|owner| policy.current(owner).is_none());
        // Requests already refuse such sessions (`Policy::current`); this ends them for good.
        let accepts = |owner| policy.current(owner).is_some();
        let ended = self
            .sessions
            .end_stale(accepts, &policy.revoked_since(&old))
            .await?;
        self.metrics.sessions_ended(EndReason::Revoked, ended);
        Ok(ended)
    }

    /// The live session named by the request's cookie, if any. A missing, malformed, forged,
    /// duplicated or expired cookie all mean "no session", and so does a session whose user
    /// was removed or changed password since (it is ended). A store that cannot answer is an
    /// error, which callers turn into a refusal, never into "anonymous".
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<Authenticated>, StoreError> {
        self.authenticate_under(&self.policy.load(), headers).await
    }

    /// [`authenticate`](Self::authenticate) with the policy the caller already holds.
    async fn authenticate_under(
        &self,
        policy: &Policy,
        headers: &HeaderMap,
    ) -> Result<Option<Authenticated>, StoreError> {
        let Some(id) = self.session_id(headers) else {
            return Ok(None);
        };
        let Some(owner) = self.sessions.touch(&id).await? else {
            return Ok(None);
        };
        match policy.current(owner) {
            Some(user) => Ok(Some(Authenticated { id, user })),
            None => {
                self.sessions.stale(&id).await?;
                self.metrics.sessions_ended(EndReason::Revoked, 1);
                Ok(None)
            }
        }
    }

    /// The session id in the request's cookie, if exactly one cookie of ours (on any Cookie
    /// line, text or not) carries a value we signed. Two session cookies: we never set that,
    /// so trust neither. Live or not: the store is not asked.
    pub fn session_id(&self, headers: &HeaderMap) -> Option<SessionId> {
        let value = single_cookie(headers, &self.site.cookie_name)?;
        self.signer.verify(std::str::from_utf8(value).ok()?)
    }

    /// The decision for one request under the policy of the moment.
    pub async fn decide(&self, head: Head<'_>) -> Decided {
        // One policy for the whole decision, even if a reload swaps it meanwhile.
        self.decide_under(&self.policy.load(), &head).await.0
    }

    /// [`decide`](Self::decide) under `policy`, for a caller that needs the same policy for
    /// more than the decision (forward-auth's return address); with the rule that decided
    /// (`None`: no rule did, or `auth.default` did), for `explain`.
    pub async fn decide_under<'p>(
        &self,
        policy: &'p Policy,
        head: &Head<'_>,
    ) -> (Decided, Option<&'p Rule>) {
        if self.site.is_own(head.path) {
            let own = self.own(policy, head).await;
            return (Decided::sessionless(Decision::Own(own)), None);
        }
        if let Via::Connection {
            trusted,
            proto,
            upgrade: true,
        } = head.via
            && !upgrade::origin_allowed(head.headers, trusted, proto, &self.site.websocket_origins)
        {
            return (Decided::sessionless(Decision::CrossSiteUpgrade), None);
        }
        let session = match self.authenticate_under(policy, head.headers).await {
            Ok(session) => session,
            Err(e) => {
                // Each such request is in the access log with its 503, and the store logs why
                // (a shared store once a second): an error line per request would bury both.
                tracing::debug!("request refused: {e}");
                return (Decided::sessionless(Decision::Unavailable), None);
            }
        };
        // Looked up under the same policy that is judging, never skipped for a rule.
        let host = if policy.has_host_rules() {
            head.host.get()
        } else {
            None
        };
        let target = Target {
            method: head.method,
            host: host.as_deref(),
            path: head.path,
        };
        let user = session.as_ref().map(|s| &s.user);
        let judgement = policy.judge(user.map(|u| &**u), &target);
        let decided = Decided {
            decision: decision(judgement.outcome, user),
            session: session.map(|s| s.id),
        };
        (decided, judgement.rule)
    }

    /// Who may use the own endpoint `head` asks for.
    async fn own(&self, policy: &Policy, head: &Head<'_>) -> Own {
        let Via::Connection { trusted, .. } = head.via else {
            return Own::Open;
        };
        if self.site.forward_auth.iter().any(|p| p == head.path) {
            return if trusted {
                Own::EdgeAsks
            } else {
                Own::UntrustedEdge
            };
        }
        if self.site.signed_in.iter().any(|p| p == head.path) {
            return Own::Mine(self.authenticate_under(policy, head.headers).await);
        }
        Own::Open
    }

    /// The gate's session check for a tunnel about to open on session `id`, which will outlive
    /// the request the gate judged: the session's owner and start, if it is still live for
    /// its user under the policy of the moment.
    pub async fn tunnel_session(
        &self,
        id: &SessionId,
    ) -> Result<Option<(Owner, SystemTime)>, StoreError> {
        let found = self.sessions.peek(id).await?;
        let policy = self.policy.load();
        Ok(found.filter(|(owner, _)| policy.current(*owner).is_some()))
    }

    /// The gate's session check for an open tunnel: whether session `id` is still live for
    /// its user under the policy of the moment. `used`: bytes moved since the last check, so
    /// the use is written back, as a request's is; otherwise the session is only read.
    pub async fn tunnel_live(&self, id: &SessionId, used: bool) -> Result<bool, StoreError> {
        let owner = if used {
            self.sessions.touch(id).await?
        } else {
            self.sessions.peek(id).await?.map(|(owner, _)| owner)
        };
        Ok(owner.is_some_and(|owner| self.policy.load().current(owner).is_some()))
    }

    /// The provider user filed under `key`, with `profile` as their latest (see
    /// `UserNames::intern_profile`), under the policy of the moment; `None` if their provider
    /// is no longer configured with `fingerprint` (a reload during the sign-in).
    pub fn provider_user(
        &self,
        key: &str,
        profile: Profile,
        fingerprint: u32,
    ) -> Option<Arc<User>> {
        let policy = self.policy.load();
        if policy.provider_fingerprint(&profile.provider) != Some(fingerprint) {
            return None;
        }
        let id = self.names.intern_profile(key, profile);
        policy.current(Owner {
            user: id,
            credentials: fingerprint,
        })
    }

    /// Starts a session for `user` (just logged in) from where `meta` says.
    pub async fn start_session(
        &self,
        user: &User,
        meta: &SessionMeta,
    ) -> Result<SessionId, StoreError> {
        self.sessions.create(user, meta).await
    }

    /// Ends a session (for `reason`, as the metrics count it), and closes its tunnels; true if
    /// it existed.
    pub async fn end_session(&self, id: &SessionId, reason: EndReason) -> Result<bool, StoreError> {
        // Closed first: the user asked to be signed out, and this part needs no store.
        self.tunnels.session_ended(&self.sessions.key_of(id));
        let ended = self.sessions.remove(id).await?;
        self.metrics.sessions_ended(reason, usize::from(ended));
        Ok(ended)
    }

    /// Ends every session of `user`, on every replica (sign out everywhere), and closes their
    /// tunnels; how many sessions.
    pub async fn end_sessions_of(&self, user: &User) -> Result<usize, StoreError> {
        self.tunnels.owners_ended(|owner| owner.user == user.id);
        let ended = self.sessions.end_user(user).await?;
        self.metrics.sessions_ended(EndReason::Revoked, ended);
        Ok(ended)
    }

    /// Ends the session of `user` that `handle` names on their sessions page, and closes its
    /// tunnels; false if no session of theirs has that handle.
    pub async fn end_listed(&self, user: &User, handle: &SessionKey) -> Result<bool, StoreError> {
        let ended = self.sessions.end_listed(user, handle).await?;
        if ended {
            self.tunnels.session_ended(handle);
            self.metrics.sessions_ended(EndReason::Revoked, 1);
        }
        Ok(ended)
    }
}

/// What the rules said of a request from `user` (`None`: nobody signed in) as a decision.
fn decision(outcome: Outcome, user: Option<&Arc<User>>) -> Decision {
    match (outcome, user) {
        (Outcome::Public, user) => Decision::Public {
            user: user.cloned(),
        },
        (Outcome::Allow, Some(user)) => Decision::Allow { user: user.clone() },
        // The policy only allows someone who is signed in; be strict if that ever changes.
        (Outcome::Allow, None) | (Outcome::LoginRequired, _) => Decision::LoginRequired,
        (Outcome::Unavailable, _) => Decision::Unavailable,
        // The rules say nothing else; anything else they said would be refused.
        (Outcome::Forbidden | Outcome::OwnEndpoint | Outcome::Invalid, user) => {
            Decision::Forbidden {
                user: user.cloned(),
            }
        }
    }
}

#[cfg(test)]
mod tests;
