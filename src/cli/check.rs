//! `sessiongate check`: what a start needs, tried without starting. The config is loaded and
//! validated, the listeners bound and let go, the upstream and the Redis store contacted; each
//! finding is one `ok:`, `warning:` or `problem:` line, and any problem fails the check.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::config::Config;
use crate::config::session::StoreConfig;
use crate::gate::rules::DefaultAccess;
use crate::proxy::readiness;
use crate::session::redis_link::RedisConfig;

/// The least a Redis PING is given; `redis.timeout` when that is longer. A first connection
/// (TLS, AUTH, HELLO) may take longer than one command does.
const REDIS_DEADLINE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    /// Worth knowing, but sessiongate would start and work.
    Warning,
    /// sessiongate would not start, or not work.
    Problem,
}

#[derive(Debug, Clone)]
pub struct Finding {
    pub level: Level,
    /// What was checked (a key, a file or an address) and what was found.
    pub text: String,
}

impl Finding {
    fn ok(text: impl Into<String>) -> Finding {
        Finding {
            level: Level::Ok,
            text: text.into(),
        }
    }

    fn warning(text: impl Into<String>) -> Finding {
        Finding {
            level: Level::Warning,
            text: text.into(),
        }
    }

    fn problem(text: impl Into<String>) -> Finding {
        Finding {
            level: Level::Problem,
            text: text.into(),
        }
    }
}

/// Every finding, in the order checked; printed one a line.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn problems(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.level == Level::Problem)
            .count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            let level = match finding.level {
                Level::Ok => "ok",
                Level::Warning => "warning",
                Level::Problem => "problem",
            };
            // A TOML error quotes the file over several lines: those are indented, so every
            // line at the margin starts a finding.
            let mut lines = finding.text.trim_end().lines();
            writeln!(f, "{level}: {}", lines.next().unwrap_or_default())?;
            for line in lines {
                writeln!(f, "  {line}")?;
            }
        }
        Ok(())
    }
}

/// Checks the config file at `path` and everything it names. A config that does not load is
/// the one problem reported: nothing else can be checked without it.
pub fn check_file(path: &Path) -> Report {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            return Report {
                findings: vec![Finding::problem(e.to_string())],
            };
        }
    };
    let mut findings = vec![Finding::ok(format!("config {}: valid", path.display()))];
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => findings.extend(rt.block_on(check(&config))),
        Err(e) => findings.push(Finding::problem(format!(
            "cannot start a runtime to contact the upstream and the store: {e}"
        ))),
    }
    Report { findings }
}

/// Checks a loaded config: listeners, TLS files, upstream, users and rules, session store,
/// and the warnings a start would log. The upstream and the store are contacted at once.
pub async fn check(config: &Config) -> Vec<Finding> {
    let mut findings = listeners(config);
    findings.extend(tls_files(config));
    let (upstream, store, providers) =
        tokio::join!(upstream(config), store(config), providers(config));
    findings.push(upstream);
    findings.push(Finding::ok(format!("users: {}", config.users.len())));
    findings.push(Finding::ok(format!(
        "rules: {} (public paths included), auth.default = {}",
        config.rules.rules.len(),
        match config.rules.default {
            DefaultAccess::Login => "\"login\" (any logged-in user)",
            DefaultAccess::Deny => "\"deny\" (nobody)",
        }
    )));
    findings.push(store);
    findings.extend(providers);
    findings.extend(login_page(config));
    findings.extend(start_warnings(config));
    findings
}

/// `[login_page]`: a template or a logo that did not load has already failed the config; what
/// loaded is named.
fn login_page(config: &Config) -> Vec<Finding> {
    let page = &config.login_page;
    let mut findings = Vec::new();
    if let Some(t) = &page.template {
        findings.push(Finding::ok(format!(
            "login_page.template {}: compiles, renders within its limits and outputs hidden_fields",
            t.path
        )));
    }
    if let Some(logo) = &page.branding.logo {
        findings.push(Finding::ok(format!(
            "login_page.logo: {} bytes of {}",
            logo.bytes.len(),
            logo.content_type
        )));
    }
    findings
}

/// Binds every address sessiongate would listen on, as the start does. All are held until the
/// last is bound, so two keys naming one address are caught too; then they are let go.
fn listeners(config: &Config) -> Vec<Finding> {
    let wanted: Vec<(&str, SocketAddr)> = [
        Some(("server.listen", config.server.listen)),
        config
            .server
            .redirect_http
            .map(|a| ("server.redirect_http", a)),
        config.metrics.map(|a| ("metrics.listen", a)),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut held = Vec::with_capacity(wanted.len());
    let mut findings = Vec::with_capacity(wanted.len());
    for (key, addr) in wanted {
        match crate::server::listen(addr) {
            Ok(listener) => {
                held.push(listener);
                findings.push(Finding::ok(format!("{key} {addr}: can listen")));
            }
            Err(e) => {
                let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
                    " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
                } else {
                    ""
                };
                findings.push(Finding::problem(format!(
                    "{key} {addr}: cannot listen: {e}{hint}"
                )));
            }
        }
    }
    findings
}

/// The TLS files were loaded and matched when the config was validated; this names them.
fn tls_files(config: &Config) -> Vec<Finding> {
    let mut findings = Vec::new();
    if let Some(tls) = &config.server.tls {
        findings.push(Finding::ok(format!(
            "server.tls: certificate {} ({} in the chain) and key {} load and belong together",
            tls.cert.display(),
            tls.loaded.cert.len(),
            tls.key.display()
        )));
        if let (Some(path), Some(der)) = (&tls.ocsp, &tls.loaded.ocsp) {
            findings.push(Finding::ok(format!(
                "server.tls.ocsp_file {}: {} bytes, stapled as they are (not checked against the certificate)",
                path.display(),
                der.len()
            )));
        }
    }
    // Preload without includeSubDomains or a year's max-age has already failed the config.
    if let Some(hsts) = &config.server.hsts {
        findings.push(Finding::ok(format!(
            "server.hsts: HTTPS responses carry Strict-Transport-Security: {}",
            String::from_utf8_lossy(hsts.as_bytes())
        )));
    }
    if let Some(ca) = config
        .upstream
        .target
        .as_ref()
        .and_then(|t| t.tls.as_ref())
        .and_then(|tls| tls.ca.as_ref())
    {
        findings.push(Finding::ok(format!(
            "upstream.ca {}: loaded; the upstream's certificate is verified against it",
            ca.display()
        )));
    }
    findings
}

/// Each provider's discovery, tried once: one that cannot be reached is a warning (sessiongate
/// starts anyway, answers its button with 503 and keeps trying).
async fn providers(config: &Config) -> Vec<Finding> {
    let providers = match crate::oidc::Providers::new(&config.providers) {
        Ok(p) => p,
        Err(e) => return vec![Finding::problem(e)],
    };
    let all = providers.all();
    let tries = all.iter().map(|p| async move { (p, p.discover().await) });
    futures_util::future::join_all(tries)
        .await
        .into_iter()
        .map(|(p, result)| match result {
            Ok(()) => Finding::ok(format!(
                "provider {:?} ({}): discovered at {}; register {}/oidc/{}/callback on your public origin as its redirect URI",
                p.id(),
                p.config.name,
                p.config.issuer,
                config.auth.prefix,
                p.id()
            )),
            Err(e) => Finding::warning(format!(
                "provider {:?} ({}): {e}; its button answers 503 until it can be reached",
                p.id(),
                p.config.name
            )),
        })
        .collect()
}

/// Whether the upstream accepts a TCP connection, with readyz's deadline. Not answering is
/// only a warning: the app may start after sessiongate.
async fn upstream(config: &Config) -> Finding {
    let Some(target) = &config.upstream.target else {
        return Finding::ok(
            "upstream: none (no upstream.url): sessiongate serves only its sign-in and forward-auth endpoints",
        );
    };
    let url = format!(
        "{}://{}",
        if target.tls.is_some() {
            "https"
        } else {
            "http"
        },
        target.authority
    );
    match readiness::connect(&target.authority, readiness::deadline(target.timeout)).await {
        Ok(()) => Finding::ok(format!("upstream {url}: accepts connections")),
        Err(e) => Finding::warning(format!(
            "upstream {url}: does not accept connections ({e}); requests get 502 and readyz 503 until it does"
        )),
    }
}

async fn store(config: &Config) -> Finding {
    let redis = match &config.session.store {
        StoreConfig::Memory => return memory_store(config),
        StoreConfig::Redis(redis) => redis,
    };
    match redis_answers(redis).await {
        Ok(()) => Finding::ok(format!(
            "session.store: redis {} answers PING",
            redis.display
        )),
        Err(why) => Finding::problem(format!("session.store: redis {}: {why}", redis.display)),
    }
}

/// Whether Redis answers a PING on a fresh connection in time; why not, if not.
pub async fn redis_answers(redis: &RedisConfig) -> Result<(), String> {
    let deadline = redis.timeout.max(REDIS_DEADLINE);
    match tokio::time::timeout(deadline, ping(redis)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("PING failed: {e}")),
        Err(_) => Err(format!("no answer within {deadline:?}")),
    }
}

/// The memory store, and `session.state_dir` if set: a directory only this user may write to
/// (or one its parent lets sessiongate make).
fn memory_store(config: &Config) -> Finding {
    let Some(dir) = &config.session.state_dir else {
        return Finding::ok(
            "session.store: memory (a restart signs everyone out; set session.state_dir to keep sessions)",
        );
    };
    use crate::session::state::dir;
    if !dir.exists() {
        let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
        return match parent.map(|p| p.is_dir()) {
            Some(false) => Finding::problem(format!(
                "session.state_dir {}: neither it nor its parent exists",
                dir.display()
            )),
            _ => Finding::ok(format!(
                "session.state_dir {}: does not exist yet; sessiongate makes it (0700) at start",
                dir.display()
            )),
        };
    }
    match dir::check(dir, false) {
        Err(e) => Finding::problem(e.to_string()),
        Ok(()) => Finding::ok(format!(
            "session.store: memory, kept in session.state_dir {} across restarts",
            dir.display()
        )),
    }
}

/// A fresh connection, as the store makes (TLS, password, RESP3; with sentinels to the
/// master they name), and one PING on it.
async fn ping(config: &RedisConfig) -> Result<(), String> {
    let config = crate::session::redis_link::resolve(config).await?;
    let pinged = async {
        let client = crate::session::redis_link::client(&config, redis::ProtocolVersion::RESP3)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<()>(&mut conn).await
    };
    pinged.await.map_err(|e| e.to_string())
}

/// What a start with this config warns about.
fn start_warnings(config: &Config) -> Vec<Finding> {
    let mut findings = Vec::new();
    if config.session.secret.is_none() {
        findings.push(Finding::warning(crate::app::NO_SECRET));
    }
    let max = config.server.max_connections;
    let needed = crate::server::descriptors_needed(max);
    // The start raises the soft limit up to the hard one, and no further.
    if let Ok((_, hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE)
        && hard < needed
    {
        findings.push(Finding::warning(format!(
            "server.max_connections = {max} needs about {needed} file descriptors, and the limit here is {hard} (raise `ulimit -n` or systemd's LimitNOFILE)"
        )));
    }
    findings
}
