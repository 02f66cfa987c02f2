//! The connection to Redis, shared by the session store and the failed-login counters.
//!
//! All Redis I/O runs on one thread of its own with its own small runtime: the request workers
//! are single-threaded runtimes, and a connection's driver living on one of them would stall
//! whenever that worker is busy. Requests hand each command over and wait for its answer, and
//! every command has the `redis.timeout` deadline, so a slow or vanished Redis costs a request
//! that deadline and never more.
//!
//! With `redis.sentinels` the master is not configured but found: asked of the sentinels at
//! start, again when a sentinel announces `+switch-master`, and again when a command fails
//! in a way a failover causes (`READONLY`, a dropped or refused connection, no answer).
//! Right after the start a command waits for the first answer (within `redis.timeout`);
//! while the old master is gone and no new one is named, commands fail (a 503).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{
    Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, ProtocolVersion, RedisResult,
};
use secrecy::{ExposeSecret, SecretString};

use crate::ops::metrics::{Histogram, Metrics};
use crate::session::StoreError;
use prometheus_client::metrics::counter::Counter;

/// `[redis]`, validated.
#[derive(Clone)]
pub struct RedisConfig {
    /// Address, database, user name and protocol, ready for the client; no password.
    pub connection: redis::ConnectionInfo,
    /// From `redis.url` or `redis.password_file`, given to the client only when it is made.
    pub password: Option<SecretString>,
    /// Set for `rediss://`: the CA (PEM) to verify the server with, or `None` for the system
    /// roots.
    pub tls: Option<Option<Vec<u8>>>,
    /// Every key sessiongate writes starts with it.
    pub key_prefix: String,
    /// One command's deadline.
    pub timeout: Duration,
    /// The server as logs may name it: no password.
    pub display: String,
    /// Set for `redis.sentinels`: `connection`'s address is then the master they name.
    pub sentinel: Option<SentinelConfig>,
}

/// `redis.sentinels`, `redis.master_name` and `redis.sentinel_password_file`.
#[derive(Clone)]
pub struct SentinelConfig {
    /// Each sentinel's host and port, asked in this order.
    pub nodes: Vec<(String, u16)>,
    pub master_name: String,
    pub password: Option<SecretString>,
}

// Hand-written so a log line names the server once, without the CA's bytes.
impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("server", &self.display)
            .field("password", &self.password)
            .field("tls", &self.tls.is_some())
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The master commands go to, and the client for its invalidation channel (a subscribed
/// connection speaks RESP2).
pub struct Master {
    /// Host and port, to tell a new master from the one in use.
    addr: String,
    conn: ConnectionManager,
    pub pubsub: Client,
}

/// The master in use, shared by the link, the task that follows the sentinels and the
/// invalidation channel. With `redis.url` it is set once and never changes.
pub struct MasterSlot {
    current: ArcSwapOption<Master>,
    /// Counts the masters taken on, so the invalidation channel moves to each new one.
    changed: tokio::sync::watch::Sender<u64>,
    /// A command failed as a failover makes commands fail: ask the sentinels again.
    suspect: tokio::sync::Notify,
}

impl MasterSlot {
    fn new(master: Option<Master>) -> MasterSlot {
        MasterSlot {
            current: ArcSwapOption::from(master.map(Arc::new)),
            changed: tokio::sync::watch::Sender::new(0),
            suspect: tokio::sync::Notify::new(),
        }
    }

    pub fn current(&self) -> Option<Arc<Master>> {
        self.current.load_full()
    }

    /// Wakes whenever another master is taken on.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn take_on(&self, master: Master) {
        self.current.store(Some(Arc::new(master)));
        self.changed.send_modify(|n| *n += 1);
    }
}

pub struct RedisLink {
    handle: tokio::runtime::Handle,
    master: Arc<MasterSlot>,
    /// Whether the master is found through sentinels (and so may move).
    follows_sentinels: bool,
    timeout: Duration,
    pub prefix: String,
    /// The server as logs may name it (no password).
    pub display: String,
    /// When a failure was last logged, so an outage is one line a second, not one per request.
    last_logged: AtomicU64,
    epoch: Instant,
    /// Each command's time, and the failed ones.
    durations: Histogram,
    errors: Counter,
    /// Dropping it ends the thread and its runtime, and every task on it.
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Why the link could not be set up at start (a bad CA, no thread). Redis being down is not
/// one: sessiongate starts anyway and connects when Redis answers.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("redis: {0}")]
    Client(#[from] redis::RedisError),
    #[error("cannot start the Redis thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// A client for the server in `config`, speaking `protocol`, trusting its CA when one is set.
pub fn client(config: &RedisConfig, protocol: ProtocolVersion) -> RedisResult<Client> {
    let mut redis = config
        .connection
        .redis_settings()
        .clone()
        .set_protocol(protocol);
    if let Some(password) = &config.password {
        redis = redis.set_password(password.expose_secret());
    }
    let info = config.connection.clone().set_redis_settings(redis);
    match &config.tls {
        Some(Some(ca)) => Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.clone()),
            },
        ),
        // rediss:// without a CA file: the system's roots.
        Some(None) | None => Client::open(info),
    }
}

/// The settings for `config`'s master with its address replaced by `host:port`.
fn at(config: &RedisConfig, host: &str, port: u16) -> RedisConfig {
    let mut config = config.clone();
    config.connection = config
        .connection
        .set_addr(ConnectionAddr::Tcp(host.to_string(), port));
    config
}

/// A lazy connection to the master in `config` (nothing is sent until the first command),
/// and the client for its invalidation channel. Must run inside the link's runtime.
fn master(config: &RedisConfig) -> RedisResult<Master> {
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.timeout))
        .set_response_timeout(Some(config.timeout))
        // Reconnecting is tried again by the next command anyway. One quick retry: while
        // Redis refuses connections, a command should fail fast (503 at once) rather than
        // wait out backoff delays up to its deadline.
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(10))
        .set_max_delay(Duration::from_millis(50));
    let conn = ConnectionManager::new_lazy_with_config(
        client(config, ProtocolVersion::RESP3)?,
        manager_config,
    )?;
    Ok(Master {
        addr: config.connection.addr().to_string(),
        conn,
        pubsub: client(config, ProtocolVersion::RESP2)?,
    })
}

impl RedisLink {
    pub fn start(config: &RedisConfig, metrics: &Metrics) -> Result<RedisLink, LinkError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let slot = {
            let _in_runtime = rt.enter();
            match &config.sentinel {
                None => Arc::new(MasterSlot::new(Some(master(config)?))),
                Some(sentinels) => {
                    let slot = Arc::new(MasterSlot::new(None));
                    rt.spawn(follow_master(
                        config.clone(),
                        sentinels.clone(),
                        slot.clone(),
                    ));
                    // Every sentinel is listened to: one that is stale (cut off from the
                    // others during the failover) never announces it.
                    for (host, port) in &sentinels.nodes {
                        rt.spawn(hear_switches(
                            config.timeout,
                            (host.clone(), *port),
                            sentinels.clone(),
                            slot.clone(),
                        ));
                    }
                    slot
                }
            }
        };
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("sessiongate-redis".into())
            .spawn(move || {
                // Runs the runtime's tasks until the link is dropped.
                let _ = rt.block_on(stopped);
            })?;
        Ok(RedisLink {
            handle,
            master: slot,
            follows_sentinels: config.sentinel.is_some(),
            timeout: config.timeout,
            prefix: config.key_prefix.clone(),
            display: config.display.clone(),
            last_logged: AtomicU64::new(0),
            epoch: Instant::now(),
            durations: metrics.redis_duration.clone(),
            errors: metrics.store_errors.clone(),
            _stop: stop,
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs `op` on the Redis thread with a connection, within `redis.timeout`. Any error or
    /// a missed deadline is `StoreError::Unavailable` (logged here, at most once a second).
    pub async fn run<T, F, Fut>(&self, what: &'static str, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut + Send + 'static,
        Fut: Future<Output = RedisResult<T>> + Send + 'static,
        T: Send + 'static,
    {
        let Some(master) = self.current_master().await else {
            self.errors.inc();
            self.log_failure(what, "the sentinels have named no master yet");
            return Err(StoreError::Unavailable);
        };
        let conn = master.conn.clone();
        let deadline = self.timeout;
        let durations = self.durations.clone();
        let task = self.handle.spawn(async move {
            let start = Instant::now();
            let result = tokio::time::timeout(deadline, op(conn)).await;
            durations.observe(start.elapsed());
            result
        });
        let (failure, moved) = match task.await {
            Ok(Ok(Ok(value))) => return Ok(value),
            Ok(Ok(Err(e))) => (e.to_string(), failover_sign(&e)),
            Ok(Err(_)) => (
                format!("no answer within redis.timeout ({deadline:?})"),
                true,
            ),
            Err(e) => (format!("the Redis task failed: {e}"), false),
        };
        if moved && self.follows_sentinels {
            self.master.suspect.notify_one();
        }
        self.errors.inc();
        self.log_failure(what, &failure);
        Err(StoreError::Unavailable)
    }

    /// The master in use. Right after the start the sentinels may not have been asked yet: a
    /// command then waits for their answer, within `redis.timeout`.
    async fn current_master(&self) -> Option<Arc<Master>> {
        let mut changes = self.master.changes();
        if let Some(master) = self.master.current() {
            return Some(master);
        }
        let first = async {
            while changes.changed().await.is_ok() {
                if let Some(master) = self.master.current() {
                    return Some(master);
                }
            }
            None
        };
        tokio::time::timeout(self.timeout, first)
            .await
            .ok()
            .flatten()
    }

    /// Spawns a background task on the Redis thread.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.handle.spawn(task);
    }

    /// The master in use, for the invalidation channel to follow.
    pub fn master(&self) -> Arc<MasterSlot> {
        self.master.clone()
    }

    pub fn log_failure(&self, what: &str, failure: &str) {
        let now = self.epoch.elapsed().as_millis() as u64 + 1000;
        let last = self.last_logged.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 1000
            && self
                .last_logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::error!("redis {}: {what} failed: {failure}", self.display);
        }
    }

    /// Whether Redis answers a PING within the deadline.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.run("PING", |mut conn| async move {
            redis::cmd("PING").query_async::<()>(&mut conn).await
        })
        .await
    }
}

/// Whether `e` is what a failover does to commands: the node became a replica (`READONLY`),
/// or it is gone (dropped, refused, timed out). A script's write on a replica fails with
/// the READONLY code inside the script's error, hence the look at the text.
fn failover_sign(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
        || e.to_string().contains("READONLY")
        || e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
}

/// How often the sentinels are asked even when nothing suggests a failover: a missed
/// `+switch-master` (no sentinel reachable at that moment) is noticed within this.
const RECHECK: Duration = Duration::from_secs(5);

/// The least time between two askings on suspicion, so a burst of failing requests asks
/// the sentinels a few times a second, not once per request.
const RETRY: Duration = Duration::from_millis(100);

/// `config` as a fresh connection to the master would use it: as written with `redis.url`,
/// or at the master the sentinels name (for `check`).
pub async fn resolve(config: &RedisConfig) -> Result<RedisConfig, String> {
    let Some(sentinels) = &config.sentinel else {
        return Ok(config.clone());
    };
    let deadline = config.timeout.max(Duration::from_secs(1));
    let (host, port) = discover(config, sentinels, deadline).await?;
    Ok(at(config, &host, port))
}

/// Finds the master through the sentinels and takes on each new one. Runs until the link's
/// runtime stops.
async fn follow_master(config: RedisConfig, sentinels: SentinelConfig, slot: Arc<MasterSlot>) {
    let deadline = config.timeout.max(Duration::from_secs(1));
    // A failover is a few seconds of failed askings: one line when it starts, not ten a second.
    let mut failing = false;
    loop {
        match discover(&config, &sentinels, deadline).await {
            Ok((host, port)) => {
                failing = false;
                let known = slot.current().map(|m| m.addr.clone());
                let found = at(&config, &host, port);
                if known.as_deref() != Some(&found.connection.addr().to_string()) {
                    match master(&found) {
                        Ok(m) => {
                            tracing::info!("redis {}: the master is {host}:{port}", config.display);
                            slot.take_on(m);
                        }
                        Err(e) => tracing::error!(
                            "redis {}: cannot use the master {host}:{port}: {e}",
                            config.display
                        ),
                    }
                }
            }
            // The master in use (if any) is kept: it may still answer, and when it does not
            // the commands fail and bring us back here.
            Err(why) => {
                if !failing {
                    tracing::warn!("redis {}: no master found: {why}", config.display);
                }
                failing = true;
            }
        }
        tokio::time::sleep(RETRY).await;
        let _ = tokio::time::timeout(RECHECK, slot.suspect.notified()).await;
    }
}

/// The master's host and port. Every sentinel is asked at once (`SENTINEL MASTER`), and the
/// answer with the newest configuration epoch wins (see [`newest`]): right after a failover
/// a sentinel that has not heard of it yet still names the old master, which may still think
/// it is one. The node is then asked itself that it is a master, so a replica is never taken
/// for one. (redis-rs's `sentinel` feature takes the first valid answer in list order, which
/// can be the stale one in that case; and its deadlines are its fixed defaults, not
/// `redis.timeout`.)
async fn discover(
    config: &RedisConfig,
    sentinels: &SentinelConfig,
    deadline: Duration,
) -> Result<(String, u16), String> {
    let asked =
        futures_util::future::join_all(sentinels.nodes.iter().map(|(host, port)| {
            tokio::time::timeout(deadline, ask_sentinel(host, *port, sentinels))
        }))
        .await;
    let mut named = Vec::new();
    let mut why = String::new();
    for ((host, port), answer) in sentinels.nodes.iter().zip(asked) {
        match answer {
            Ok(Ok(Some(master))) => named.push(master),
            Ok(Ok(None)) => {
                why = format!(
                    "sentinel {host}:{port} knows no master named {:?}",
                    sentinels.master_name
                );
            }
            Ok(Err(e)) => why = format!("sentinel {host}:{port}: {e}"),
            Err(_) => why = format!("sentinel {host}:{port}: no answer within {deadline:?}"),
        }
    }
    for (host, port) in newest(named) {
        let node = at(config, &host, port);
        let role = tokio::time::timeout(deadline, async {
            let mut conn = client(&node, ProtocolVersion::RESP3)?
                .get_multiplexed_async_connection()
                .await?;
            redis::cmd("INFO")
                .arg("replication")
                .query_async::<String>(&mut conn)
                .await
        })
        .await;
        match role {
            Ok(Ok(info)) if info.lines().any(|l| l.trim_end() == "role:master") => {
                return Ok((host, port));
            }
            Ok(Ok(_)) => why = format!("{host}:{port}, named by the sentinels, is not a master"),
            Ok(Err(e)) => why = format!("{host}:{port}: {e}"),
            Err(_) => why = format!("{host}:{port}: no answer within {deadline:?}"),
        }
    }
    Err(why)
}

/// The nodes the sentinels named (configuration epoch, host, port) at the newest epoch, each
/// once: the only ones that may be the master. A node named at an older epoch was replaced
/// by a failover, even while it still says it is a master (not yet made a replica, or cut
/// off with a stale sentinel: a split brain). So it is never the fallback when the newest
/// one cannot be checked: what is written there is lost when it rejoins as a replica.
fn newest(mut named: Vec<(u64, String, u16)>) -> Vec<(String, u16)> {
    let newest = named.iter().map(|m| m.0).max();
    named.retain(|m| Some(m.0) == newest);
    let mut nodes: Vec<(String, u16)> = named.into_iter().map(|(_, h, p)| (h, p)).collect();
    nodes.sort();
    nodes.dedup();
    nodes
}

/// What one sentinel says of our master: its configuration epoch, host and port.
async fn ask_sentinel(
    host: &str,
    port: u16,
    sentinels: &SentinelConfig,
) -> RedisResult<Option<(u64, String, u16)>> {
    let mut conn = sentinel_client(host, port, sentinels, ProtocolVersion::RESP3)?
        .get_multiplexed_async_connection()
        .await?;
    let answer = redis::cmd("SENTINEL")
        .arg("MASTER")
        .arg(&sentinels.master_name)
        .query_async::<std::collections::HashMap<String, String>>(&mut conn)
        .await;
    let master = match answer {
        Ok(master) => master,
        // "ERR No such master with that name"
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let field = |name: &str| master.get(name).map(String::as_str);
    let parsed = (|| {
        Some((
            field("config-epoch")?.parse().ok()?,
            field("ip")?.to_string(),
            field("port")?.parse().ok()?,
        ))
    })();
    Ok(parsed)
}

/// A client for one sentinel, with `redis.sentinel_password_file`'s password.
fn sentinel_client(
    host: &str,
    port: u16,
    sentinels: &SentinelConfig,
    protocol: ProtocolVersion,
) -> RedisResult<Client> {
    let mut redis = redis::RedisConnectionInfo::default().set_protocol(protocol);
    if let Some(password) = &sentinels.password {
        redis = redis.set_password(password.expose_secret());
    }
    let info: ConnectionInfo = (host, port).into_connection_info()?;
    let tcp = info.tcp_settings().clone().set_nodelay(true);
    Client::open(info.set_redis_settings(redis).set_tcp_settings(tcp))
}

/// Listens on the sentinel at `node` for `+switch-master` of our master, and asks the
/// sentinels at once when it comes; connects again whenever the connection drops. Runs until
/// the link's runtime stops.
async fn hear_switches(
    timeout: Duration,
    node: (String, u16),
    sentinels: SentinelConfig,
    slot: Arc<MasterSlot>,
) {
    let deadline = timeout.max(Duration::from_secs(1));
    let (host, port) = &node;
    loop {
        let subscribed = tokio::time::timeout(deadline, async {
            let client = sentinel_client(host, *port, &sentinels, ProtocolVersion::RESP2)?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe("+switch-master").await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        let Ok(Ok(pubsub)) = subscribed else {
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        };
        // Whatever happened while nobody listened: ask now.
        slot.suspect.notify_one();
        let (mut sink, mut stream) = pubsub.split();
        let mut beat = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    // "<name> <old ip> <old port> <new ip> <new port>"
                    Some(msg) => {
                        let payload = msg.get_payload_bytes();
                        if payload.split(|b| *b == b' ').next()
                            == Some(sentinels.master_name.as_bytes())
                        {
                            slot.suspect.notify_one();
                        }
                    }
                    None => break,
                },
                _ = beat.tick() => {
                    let pong = tokio::time::timeout(deadline, sink.ping::<redis::Value>()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::newest;

    fn named(answers: &[(u64, &str, u16)]) -> Vec<(u64, String, u16)> {
        answers
            .iter()
            .map(|(epoch, host, port)| (*epoch, host.to_string(), *port))
            .collect()
    }

    #[test]
    fn a_node_named_at_an_older_epoch_is_never_a_candidate() {
        // A stale sentinel first, naming the old master; two naming the new one.
        let answers = named(&[
            (0, "10.0.0.1", 6379),
            (1, "10.0.0.2", 6379),
            (1, "10.0.0.2", 6379),
        ]);
        assert_eq!(newest(answers), vec![("10.0.0.2".to_string(), 6379)]);
    }

    #[test]
    fn every_node_named_at_the_newest_epoch_is_a_candidate_once() {
        let answers = named(&[(3, "b", 1), (3, "a", 1), (3, "b", 1), (2, "c", 1)]);
        assert_eq!(
            newest(answers),
            vec![("a".to_string(), 1), ("b".to_string(), 1)]
        );
        assert_eq!(newest(Vec::new()), Vec::<(String, u16)>::new());
    }
}
