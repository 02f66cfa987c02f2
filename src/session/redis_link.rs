//! The connection to Redis, shared by the session store and the failed-login counters.
//!
//! All Redis I/O runs on one thread of its own with its own small runtime: the request workers
//! are single-threaded runtimes, and a connection's driver living on one of them would stall
//! whenever that worker is busy. Requests hand each command over and wait for its answer, and
//! every command has the `redis.timeout` deadline, so a slow or vanished Redis costs a request
//! that deadline and never more.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::{Client, ProtocolVersion, RedisResult};
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

pub struct RedisLink {
    handle: tokio::runtime::Handle,
    conn: ConnectionManager,
    /// For the invalidation channel (a subscribed connection speaks RESP2).
    pubsub_client: Client,
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

impl RedisLink {
    pub fn start(config: &RedisConfig, metrics: &Metrics) -> Result<RedisLink, LinkError> {
        let manager_client = client(config, ProtocolVersion::RESP3)?;
        let pubsub_client = client(config, ProtocolVersion::RESP2)?;
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            // Reconnecting is tried again by the next command anyway. One quick retry: while
            // Redis refuses connections, a command should fail fast (503 at once) rather than
            // wait out backoff delays up to its deadline.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(50));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let conn = {
            let _in_runtime = rt.enter();
            ConnectionManager::new_lazy_with_config(manager_client, manager_config)?
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
            conn,
            pubsub_client,
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
        let conn = self.conn.clone();
        let deadline = self.timeout;
        let durations = self.durations.clone();
        let task = self.handle.spawn(async move {
            let start = Instant::now();
            let result = tokio::time::timeout(deadline, op(conn)).await;
            durations.observe(start.elapsed());
            result
        });
        let failure = match task.await {
            Ok(Ok(Ok(value))) => return Ok(value),
            Ok(Ok(Err(e))) => e.to_string(),
            Ok(Err(_)) => format!("no answer within redis.timeout ({deadline:?})"),
            Err(e) => format!("the Redis task failed: {e}"),
        };
        self.errors.inc();
        self.log_failure(what, &failure);
        Err(StoreError::Unavailable)
    }

    /// Spawns a background task on the Redis thread.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.handle.spawn(task);
    }

    pub fn pubsub_client(&self) -> &Client {
        &self.pubsub_client
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
