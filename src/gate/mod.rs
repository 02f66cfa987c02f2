//! The gate: for every request, one [`Decision`] (who is asking and what they may do), made
//! from the session cookie, the session store and the policy of the moment. The consumers (the
//! proxy path in `handler`, `explain`, and later forward-auth) only turn a decision into an
//! answer; none of them works out again whether a user is allowed.

pub mod policy;
pub mod rules;

use std::borrow::Cow;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{HeaderMap, Method};

use crate::config::Config;
use crate::gate::policy::{Policy, Ruling, User};
use crate::gate::rules::Target;
use crate::http::headers::single_cookie;
use crate::ops::metrics::{EndReason, Metrics};
use crate::session::identity::UserNames;
use crate::session::tunnels::Tunnels;
use crate::session::{CookieSigner, SessionId, SessionKey, SessionMeta, Sessions, StoreError};

/// What to do with a request.
pub enum Decision {
    /// A logged-in user the rules let in.
    Allow { user: Arc<User> },
    /// A public path: no login needed. A session, if the request has one, still names its user.
    Public { user: Option<Arc<User>> },
    /// Nobody is logged in and the path needs a login.
    LoginRequired,
    /// The rules refuse this request (to this user, or to anyone).
    Forbidden { user: Option<Arc<User>> },
    /// The session store could not answer: refused, never treated as anonymous.
    Unavailable,
}

/// A decision and the session it was made for, which the access log names.
pub struct Verdict {
    pub decision: Decision,
    pub session: Option<SessionId>,
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

pub struct Gate {
    policy: ArcSwap<Policy>,
    /// Every user name this process has known; shared by all policies (see `identity`) and by
    /// a shared store, which reads names back.
    names: Arc<UserNames>,
    sessions: Sessions,
    /// Open upgraded connections, closed when their session ends.
    tunnels: Arc<Tunnels>,
    signer: CookieSigner,
    cookie_name: String,
    /// Counts the sessions the gate ends (the store counts those that expire).
    metrics: Arc<Metrics>,
}

impl Gate {
    /// `names` must be the table `sessions` reads names back with.
    pub fn new(
        config: &Config,
        names: Arc<UserNames>,
        sessions: Sessions,
        tunnels: Arc<Tunnels>,
        signer: CookieSigner,
        metrics: Arc<Metrics>,
    ) -> Gate {
        let policy = Policy::build(config, &names);
        Gate {
            policy: ArcSwap::from_pointee(policy),
            names,
            sessions,
            tunnels,
            signer,
            cookie_name: config.session.cookie_name.clone(),
            metrics,
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

    /// Puts `config`'s users and rules in force for every request from now on, and ends the
    /// sessions of users it removes or whose password it changes; how many sessions ended.
    /// `config` must be validated (it is, being a `Config`). The new policy is in force even
    /// if the store cannot answer; such sessions are refused on their next request anyway.
    pub async fn replace_policy(&self, config: &Config) -> Result<usize, StoreError> {
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
            Some(user) => Ok(Some(Authenticated {
                id,
                user: user.clone(),
            })),
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
        let value = single_cookie(headers, &self.cookie_name)?;
        self.signer.verify(std::str::from_utf8(value).ok()?)
    }

    /// The decision for one request under the policy of the moment.
    pub async fn decide(&self, head: &Head<'_>) -> Verdict {
        // One policy for the whole decision, even if a reload swaps it meanwhile.
        self.decide_under(&self.policy.load(), head).await
    }

    /// [`decide`](Self::decide) under `policy`, for a caller that needs the same policy for
    /// more than the decision (forward-auth's return address).
    pub async fn decide_under(&self, policy: &Policy, head: &Head<'_>) -> Verdict {
        let session = match self.authenticate_under(policy, head.headers).await {
            Ok(session) => session,
            Err(e) => {
                // Each such request is in the access log with its 503, and the store logs why
                // (a shared store once a second): an error line per request would bury both.
                tracing::debug!("request refused: {e}");
                return Verdict {
                    decision: Decision::Unavailable,
                    session: None,
                };
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
        let ruling = policy.judge(user.map(|u| &**u), &target).ruling;
        Verdict {
            decision: decision(ruling, user),
            session: session.map(|s| s.id),
        }
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

/// A ruling for a request from `user` (`None`: nobody logged in) as a decision.
pub fn decision(ruling: Ruling, user: Option<&Arc<User>>) -> Decision {
    match (ruling, user) {
        (Ruling::Public, user) => Decision::Public {
            user: user.cloned(),
        },
        (Ruling::Allow, Some(user)) => Decision::Allow { user: user.clone() },
        // The policy only allows someone who is logged in; be strict if that ever changes.
        (Ruling::Allow, None) | (Ruling::LoginRequired, _) => Decision::LoginRequired,
        (Ruling::Forbidden, user) => Decision::Forbidden {
            user: user.cloned(),
        },
    }
}
