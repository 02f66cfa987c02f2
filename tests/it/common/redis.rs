//! A real Redis for the session store tests: Debian's redis-server (from tests/install-deps.sh)
//! in a scratch directory on a loopback port, with a config written for the test (password,
//! TLS with a throwaway CA, RDB persistence across a restart), killed on drop. Also the ways a
//! test looks inside it: every key with its values, TTLs, per-command call counts.
//!
//! Every wait polls against a 30 s deadline instead of sleeping a fixed time: on a loaded
//! machine running many test binaries at once, redis can take seconds to start or to load.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisResult};

// A test file with `use common::*;` sees this module under the name `redis`, which hides the
// redis crate from its paths. Re-exporting the crate here makes `redis::cmd`,
// `redis::Client`, ... mean the same in such a file as anywhere; only a `use` of the crate
// there must say `::redis::...` (the compiler says so too).
pub use ::redis::*;

use super::program;
use super::tls::Ca;

/// How long a start, a restart or a stop may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(30);

/// What redis-server prints before it opens its log file (config errors), and that log file.
const LOG_FILES: [&str; 2] = ["output", "redis.log"];

/// How a [`RedisServer`] is configured. The default: no password, plain TCP, nothing written
/// to disk.
#[derive(Clone, Debug, Default)]
pub struct RedisOptions {
    /// `requirepass`: every client must AUTH with it.
    pub password: Option<String>,
    /// Serve TLS only (no plain port), with a certificate for 127.0.0.1 and localhost signed
    /// by a CA made for this server ([`RedisServer::ca_pem_path`]).
    pub tls: bool,
    /// Keep the data across [`RedisServer::stop`] and [`RedisServer::start_again`]: redis
    /// writes its RDB file when it shuts down and loads it when it starts.
    pub persist: bool,
    /// `replicaof 127.0.0.1 PORT`: a replica of the redis on that port, for the Sentinel
    /// tests.
    pub replica_of: Option<u16>,
}

/// A redis-server child process. Dropping it kills the process (a test that panics too) and
/// then removes its directory.
pub struct RedisServer {
    opts: RedisOptions,
    port: u16,
    redis_server: PathBuf,
    /// With TLS: the CA's PEM file, and its text for building clients.
    ca: Option<(PathBuf, String)>,
    /// `None` between [`RedisServer::stop`] and [`RedisServer::start_again`].
    child: Option<Child>,
    // Removed with the fields, so only after Drop::drop has killed and reaped the process
    // that writes into it.
    dir: tempfile::TempDir,
}

/// Why a launch did not give a server answering PING.
enum Failed {
    /// Another process holds the port: worth another try.
    PortTaken,
}

impl RedisServer {
    /// Starts redis-server on a free loopback port and returns once it answers PING (through
    /// AUTH and TLS when configured). A port that another process takes between our asking
    /// for it and redis binding it means a retry on another port.
    pub async fn start(opts: RedisOptions) -> RedisServer {
        let redis_server = program(
            "redis-server",
            "the Redis session store tests run a real Redis",
        );
        let mut last_log = String::new();
        for _ in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("sessiongate-redis-")
                .tempdir()
                .unwrap();
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let ca = opts
                .tls
                .then(|| (dir.path().join("ca.pem"), write_certificates(dir.path())));
            std::fs::write(
                dir.path().join("redis.conf"),
                config(&opts, port, dir.path()),
            )
            .unwrap();
            let mut server = RedisServer {
                opts: opts.clone(),
                port,
                redis_server: redis_server.clone(),
                ca,
                child: None,
                dir,
            };
            match server.launch().await {
                Ok(()) => return server,
                Err(Failed::PortTaken) => last_log = server.log(),
            }
        }
        panic!("redis-server found no free port in 5 tries:\n{last_log}");
    }

    /// The URL a client (sessiongate's store) connects to, database 0, without the password:
    /// `redis://127.0.0.1:PORT/0`, or `rediss://` with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.opts.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// [`RedisServer::url`] with the password in it (`redis://:PASSWORD@127.0.0.1:PORT/0`),
    /// percent-encoded as a URL needs; the plain URL when there is no password.
    pub fn url_with_password(&self) -> String {
        let mut url = url::Url::parse(&self.url()).unwrap();
        if let Some(password) = &self.opts.password {
            url.set_password(Some(password)).unwrap();
        }
        url.to_string()
    }

    /// The PEM file of the CA that signed the server's certificate (TLS only): what a client
    /// must trust.
    pub fn ca_pem_path(&self) -> Option<&Path> {
        self.ca.as_ref().map(|(path, _)| path.as_path())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The scratch directory: config, log, certificates, and dump.rdb when persisting.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id while it runs (to check that it is gone after a drop).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// redis's log file, and anything it printed before opening it (config errors), for
    /// failure messages.
    pub fn log(&self) -> String {
        self.log_since([0, 0])
    }

    /// What [`RedisServer::log`] has gained since `mark` (from [`RedisServer::log_mark`]),
    /// so a restart's failure is judged by its own lines, not by an earlier run's.
    fn log_since(&self, mark: [usize; 2]) -> String {
        let read = |name: &str, from: usize| {
            let text = std::fs::read(self.dir.path().join(name)).unwrap_or_default();
            String::from_utf8_lossy(text.get(from..).unwrap_or_default()).into_owned()
        };
        read(LOG_FILES[0], mark[0]) + &read(LOG_FILES[1], mark[1])
    }

    fn log_mark(&self) -> [usize; 2] {
        LOG_FILES.map(|name| {
            std::fs::metadata(self.dir.path().join(name)).map_or(0, |m| m.len() as usize)
        })
    }

    /// The last lines of [`RedisServer::log`]: the part that says why it failed.
    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// A connection, authenticated and over TLS as configured, for the test to look at or
    /// change what is in Redis. Its timeouts are generous, so a loaded machine does not fail
    /// a test; a test that wants to see a stall uses its own `tokio::time::timeout`.
    pub async fn client(&self) -> MultiplexedConnection {
        self.connect(DEADLINE).await.unwrap_or_else(|e| {
            panic!(
                "cannot connect to redis at {}: {e}\n{}",
                self.url(),
                self.log_tail()
            )
        })
    }

    /// SIGTERM, then waits for the process to exit. With `persist`, redis writes dump.rdb
    /// before exiting (it saves on shutdown when save points are configured).
    pub async fn stop(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        // SAFETY: kill(2) on our own child, whose pid stays ours until we wait for it.
        let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(sent, 0, "SIGTERM to redis-server failed");
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                assert!(
                    status.success(),
                    "redis-server exited with {status} on SIGTERM:\n{}",
                    self.log_tail()
                );
                return;
            }
            if Instant::now() > deadline {
                // A redis that cannot write its RDB refuses to shut down; the log says so.
                panic!(
                    "redis-server did not exit within 30 s of SIGTERM:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, and waits for the process to be gone: a crash, nothing saved, no goodbye to
    /// its clients.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// INFO replication's `role:` (`master` or `slave`) and, for a replica, whether its link
    /// to the master is up. A node changing role drops its clients (seen in a forced
    /// failover under tests/all-at-once.sh: "connection reset by peer"), so an error answers
    /// `("", false)`: the callers poll until the role they wait for.
    pub async fn role(&self) -> (String, bool) {
        let asked: redis::RedisResult<String> = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut self.client().await)
            .await;
        let Ok(info) = asked else {
            return (String::new(), false);
        };
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        (field("role:"), field("master_link_status:") == "up")
    }

    /// Starts redis again on the same port with the same directory and config (stopping it
    /// first if it runs), and returns once it answers PING: with `persist`, after it has
    /// loaded the keys it saved. The port is needed again, so a process holding it meanwhile
    /// is waited out rather than a new port taken.
    pub async fn start_again(&mut self) {
        self.stop().await;
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self.launch().await {
                Ok(()) => return,
                Err(Failed::PortTaken) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(Failed::PortTaken) => panic!(
                    "port {} stayed taken for 30 s; redis-server cannot start again:\n{}",
                    self.port,
                    self.log_tail()
                ),
            }
        }
    }

    /// Blocks every client's commands for `how_long` (CLIENT PAUSE ... ALL): a stall of the
    /// store, as when redis is busy or the network hangs. Returns once redis has paused.
    pub async fn pause(&self, how_long: Duration) {
        let () = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(how_long.as_millis() as u64)
            .arg("ALL")
            .query_async(&mut self.client().await)
            .await
            .unwrap();
    }

    /// Every key in database 0, sorted. By SCAN, not KEYS, so a test can check in
    /// [`RedisServer::commandstats`] that the store itself never runs the blocking KEYS.
    pub async fn keys(&self) -> Vec<String> {
        let mut conn = self.client().await;
        scan(&mut conn).await.into_iter().collect()
    }

    /// Every key in database 0, sorted, with everything in it: a string's value; a hash's fields and values
    /// alternately (by field); a set's members (sorted); a sorted set's members and their
    /// scores as text alternately (by score); a list's items in order.
    pub async fn dump(&self) -> Vec<(String, Vec<Vec<u8>>)> {
        let mut conn = self.client().await;
        let mut out = Vec::new();
        for key in scan(&mut conn).await {
            let kind: String = redis::cmd("TYPE")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            let values: Vec<Vec<u8>> = match kind.as_str() {
                // Expired between SCAN and TYPE.
                "none" => continue,
                "string" => {
                    let value: Option<Vec<u8>> = query(&mut conn, "GET", &key, &[]).await;
                    match value {
                        Some(value) => vec![value],
                        None => continue,
                    }
                }
                "hash" => {
                    let map: BTreeMap<Vec<u8>, Vec<u8>> =
                        query(&mut conn, "HGETALL", &key, &[]).await;
                    map.into_iter().flat_map(|(f, v)| [f, v]).collect()
                }
                "set" => {
                    let members: BTreeSet<Vec<u8>> = query(&mut conn, "SMEMBERS", &key, &[]).await;
                    members.into_iter().collect()
                }
                "zset" => query(&mut conn, "ZRANGE", &key, &["0", "-1", "WITHSCORES"]).await,
                "list" => query(&mut conn, "LRANGE", &key, &["0", "-1"]).await,
                other => panic!("dump: key {key:?} is a {other}, which dump does not read"),
            };
            out.push((key, values));
        }
        out
    }

    /// PTTL: milliseconds until `key` expires; -1 when it never does, -2 when it is absent.
    pub async fn ttl_ms(&self, key: &str) -> i64 {
        query(&mut self.client().await, "PTTL", key, &[]).await
    }

    /// INFO commandstats: calls per command since start (or [`RedisServer::reset_stats`]),
    /// by redis's name for it (`get`, `hset`, `client|pause`, ...). This helper's own
    /// commands count too: PING and INFO when starting, SCAN and TYPE for
    /// [`RedisServer::dump`], etc.
    pub async fn commandstats(&self) -> BTreeMap<String, u64> {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut self.client().await)
            .await
            .unwrap();
        parse_commandstats(&info)
    }

    /// CONFIG RESETSTAT: counts in [`RedisServer::commandstats`] start again from zero.
    pub async fn reset_stats(&self) {
        let () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut self.client().await)
            .await
            .unwrap();
    }

    /// FLUSHALL: every key in every database gone.
    pub async fn flush(&self) {
        let () = redis::cmd("FLUSHALL")
            .query_async(&mut self.client().await)
            .await
            .unwrap();
    }

    /// Spawns redis-server on `self.port` and waits until it answers PING. Its stdout and
    /// stderr go to a file, appended to on a restart so a failure shows the whole history.
    async fn launch(&mut self) -> Result<(), Failed> {
        assert!(self.child.is_none(), "redis-server is already running");
        let mark = self.log_mark();
        let output = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(LOG_FILES[0]))
            .unwrap();
        let child = Command::new(&self.redis_server)
            .arg(self.dir.path().join("redis.conf"))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server: {e}"));
        // Owned by `self` from here on, so a panic below still kills it.
        self.child = Some(child);
        let deadline = Instant::now() + DEADLINE;
        loop {
            // Each try gets a few seconds: a refused or half-open connection fails fast, and
            // a redis still loading its RDB answers PING with an error until it is done.
            let last_error = match self.ping(Duration::from_secs(5)).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                if self.log_since(mark).contains("Address already in use") {
                    return Err(Failed::PortTaken);
                }
                panic!(
                    "redis-server exited with {status} instead of starting:\n{}",
                    self.log_tail()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "redis-server on port {} did not answer PING within 30 s (last: {last_error}):\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// PING, then a check that the redis answering is our child: when two tests are handed
    /// the same free port, the one whose redis lost the race must not take the other's
    /// server for its own (it would see and flush the other test's keys).
    async fn ping(&self, timeout: Duration) -> Result<(), String> {
        let mut conn = self.connect(timeout).await.map_err(|e| e.to_string())?;
        let pong: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        if pong != "PONG" {
            return Err(format!("PING answered {pong:?}"));
        }
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let pid = info
            .lines()
            .find_map(|line| line.strip_prefix("process_id:"))
            .map(str::trim);
        let ours = self.pid().map(|p| p.to_string());
        if pid != ours.as_deref() {
            return Err(format!(
                "the redis on port {} is process {pid:?}, not ours ({ours:?})",
                self.port
            ));
        }
        Ok(())
    }

    async fn connect(&self, timeout: Duration) -> RedisResult<MultiplexedConnection> {
        let url = self.url_with_password();
        let client = match &self.ca {
            Some((_, ca)) => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.as_bytes().to_vec()),
                },
            )?,
            None => redis::Client::open(url)?,
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// redis.conf for `opts`, listening on `port` of 127.0.0.1 only, with every file in `dir`.
fn config(opts: &RedisOptions, port: u16, dir: &Path) -> String {
    let path = |name: &str| quote(&dir.join(name).display().to_string());
    let mut conf = format!(
        "bind 127.0.0.1\n\
         protected-mode no\n\
         daemonize no\n\
         dir {}\n\
         logfile {}\n\
         appendonly no\n",
        quote(&dir.display().to_string()),
        path(LOG_FILES[1]),
    );
    if opts.tls {
        conf += &format!(
            "port 0\ntls-port {port}\ntls-cert-file {}\ntls-key-file {}\n\
             tls-ca-cert-file {}\ntls-auth-clients no\n",
            path("server.pem"),
            path("server.key"),
            path("ca.pem"),
        );
    } else {
        conf += &format!("port {port}\n");
    }
    if opts.persist {
        // Any save point makes redis save on shutdown; this one never fires during a test.
        conf += &format!("save 3600 1\ndbfilename {}\n", quote("dump.rdb"));
    } else {
        conf += "save \"\"\n";
    }
    if let Some(password) = &opts.password {
        // masterauth too: after a failover any node may be a replica of any other.
        conf += &format!("requirepass {0}\nmasterauth {0}\n", quote(password));
    }
    if let Some(master) = opts.replica_of {
        conf += &format!("replicaof 127.0.0.1 {master}\n");
    }
    conf
}

/// A value as one double-quoted redis.conf argument.
fn quote(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A CA and a server certificate for 127.0.0.1 and localhost signed by it, written into
/// `dir`; the CA's PEM.
fn write_certificates(dir: &Path) -> String {
    let ca = Ca::new("sessiongate redis test CA");
    let (cert, key, _) = ca.leaf();
    std::fs::write(dir.join("ca.pem"), &ca.pem).unwrap();
    std::fs::write(dir.join("server.pem"), cert).unwrap();
    std::fs::write(dir.join("server.key"), key).unwrap();
    ca.pem
}

/// Every key in database 0, by SCAN (which may return a key twice, hence the set).
async fn scan(conn: &mut MultiplexedConnection) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .unwrap();
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

/// `command key args...`, panicking with the command on an error.
async fn query<T: redis::FromRedisValue>(
    conn: &mut MultiplexedConnection,
    command: &str,
    key: &str,
    args: &[&str],
) -> T {
    redis::cmd(command)
        .arg(key)
        .arg(args)
        .query_async(conn)
        .await
        .unwrap_or_else(|e| panic!("{command} {key:?}: {e}"))
}

/// `cmdstat_get:calls=3,usec=12,...` lines to `get -> 3`.
fn parse_commandstats(info: &str) -> BTreeMap<String, u64> {
    info.lines()
        .filter_map(|line| {
            let (name, fields) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = fields
                .split(',')
                .find_map(|f| f.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

/// `[session]` lines and a `[redis]` table for [`super::config_toml`]'s `extra`: the Redis store
/// at `url`, `session` lines first. The command deadline is generous (2 s) so a busy machine
/// does not turn a slow answer into a 503; tests about the deadline set their own.
pub fn redis_store(url: &str, session: &str, redis: &str) -> String {
    let timeout = if redis.contains("timeout") {
        ""
    } else {
        "timeout = \"2s\"\n"
    };
    format!("store = \"redis\"\n{session}\n\n[redis]\nurl = \"{url}\"\n{timeout}{redis}\n")
}

/// The standard test config (alice) in front of `upstream`, with the Redis store at `url`.
pub fn redis_config(upstream: std::net::SocketAddr, url: &str, session: &str) -> String {
    super::config_toml(upstream, "", &redis_store(url, session, ""))
}

/// Polls `check` every 50 ms until it holds, failing after 20 s with `what`.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !check().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The name the [`Sentinels`] monitor the master under.
pub const MASTER_NAME: &str = "mymaster";

/// Three redis-sentinel processes (Debian's redis-sentinel, from tests/install-deps.sh) on
/// loopback ports watching one master, with a quorum of two and short timeouts so a failover
/// takes a few seconds: down after 1 s without an answer, a failover given up after 5 s.
/// Dropping it kills them.
pub struct Sentinels {
    nodes: Vec<SentinelNode>,
    /// `requirepass` of every sentinel.
    password: Option<String>,
}

struct SentinelNode {
    port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for SentinelNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sentinels {
    /// Starts three sentinels monitoring the redis on `master_port` (whose password is
    /// `data_password`), each requiring `password` when set, and returns once every one
    /// knows the master, its replica and the two other sentinels: a failover can then pick
    /// the replica.
    pub async fn start(
        master_port: u16,
        data_password: Option<&str>,
        password: Option<&str>,
    ) -> Sentinels {
        let program = program(
            "redis-sentinel",
            "the Redis Sentinel tests run three real sentinels",
        );
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(start_sentinel(&program, master_port, data_password, password).await);
        }
        let sentinels = Sentinels {
            nodes,
            password: password.map(str::to_string),
        };
        for i in 0..3 {
            eventually(
                "each sentinel knows the replica and the other sentinels",
                || sentinels.knows_everyone(i),
            )
            .await;
        }
        sentinels
    }

    /// `["127.0.0.1:PORT", ...]`, as `redis.sentinels` takes them.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect()
    }

    /// Each sentinel's log, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let log = std::fs::read(n.dir.path().join("sentinel.log")).unwrap_or_default();
                format!(
                    "--- sentinel {} ---\n{}",
                    n.port,
                    String::from_utf8_lossy(&log)
                )
            })
            .collect()
    }

    /// A connection to sentinel `i`.
    pub async fn client(&self, i: usize) -> MultiplexedConnection {
        let mut info = ("127.0.0.1", self.nodes[i].port)
            .into_connection_info()
            .unwrap();
        if let Some(password) = &self.password {
            let redis = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(redis);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(5)));
        redis::Client::open(info)
            .unwrap()
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .unwrap()
    }

    /// The master's port as sentinel `i` names it.
    pub async fn master_port(&self, i: usize) -> u16 {
        let (_, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(MASTER_NAME)
            .query_async(&mut self.client(i).await)
            .await
            .unwrap();
        port
    }

    /// What sentinel `i` says of the master in `SENTINEL MASTER`, the question sessiongate
    /// asks: its configuration epoch and port.
    pub async fn master_config(&self, i: usize) -> (u64, u16) {
        let master: BTreeMap<String, String> = redis::cmd("SENTINEL")
            .arg("MASTER")
            .arg(MASTER_NAME)
            .query_async(&mut self.client(i).await)
            .await
            .unwrap();
        let field = |name: &str| {
            master
                .get(name)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("SENTINEL MASTER without {name}: {master:?}"))
        };
        (field("config-epoch"), field("port") as u16)
    }

    /// Waits until every sentinel names the redis on `port` as the master.
    pub async fn wait_for_master(&self, port: u16) {
        for i in 0..self.nodes.len() {
            eventually_within(
                &format!("sentinel {i} names port {port} the master"),
                Duration::from_secs(60),
                || async move { self.master_port(i).await == port },
            )
            .await;
        }
    }

    /// SENTINEL FAILOVER on the first sentinel, asked again while it answers that no replica
    /// is fit yet (a replica's state reaches the sentinel every second or so).
    pub async fn force_failover(&self) {
        eventually_within(
            "SENTINEL FAILOVER accepted",
            Duration::from_secs(60),
            || async {
                redis::cmd("SENTINEL")
                    .arg("FAILOVER")
                    .arg(MASTER_NAME)
                    .query_async::<()>(&mut self.client(0).await)
                    .await
                    .is_ok()
            },
        )
        .await;
    }

    async fn knows_everyone(&self, i: usize) -> bool {
        let mut conn = self.client(i).await;
        let master: BTreeMap<String, String> = match redis::cmd("SENTINEL")
            .arg("MASTER")
            .arg(MASTER_NAME)
            .query_async(&mut conn)
            .await
        {
            Ok(master) => master,
            Err(_) => return false,
        };
        let replicas: Vec<BTreeMap<String, String>> = redis::cmd("SENTINEL")
            .arg("REPLICAS")
            .arg(MASTER_NAME)
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        master.get("num-other-sentinels").map(String::as_str) == Some("2")
            && replicas.iter().any(|r| {
                r.get("flags").map(String::as_str) == Some("slave")
                    && r.get("master-link-status").map(String::as_str) == Some("ok")
            })
    }
}

/// One sentinel on a free port, answering PING; another port when the first is taken.
async fn start_sentinel(
    program: &Path,
    master_port: u16,
    data_password: Option<&str>,
    password: Option<&str>,
) -> SentinelNode {
    for _ in 0..5 {
        let dir = tempfile::Builder::new()
            .prefix("sessiongate-sentinel-")
            .tempdir()
            .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut conf = format!(
            "port {port}\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\ndir {}\nlogfile {}\n\
             sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
             sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
             sentinel failover-timeout {MASTER_NAME} 5000\n\
             sentinel parallel-syncs {MASTER_NAME} 1\n",
            quote(&dir.path().display().to_string()),
            quote(&dir.path().join("sentinel.log").display().to_string()),
        );
        if let Some(data_password) = data_password {
            conf += &format!(
                "sentinel auth-pass {MASTER_NAME} {}\n",
                quote(data_password)
            );
        }
        if let Some(password) = password {
            // The sentinels talk to each other too.
            conf += &format!(
                "requirepass {0}\nsentinel sentinel-pass {0}\n",
                quote(password)
            );
        }
        let conf_path = dir.path().join("sentinel.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let output = std::fs::File::create(dir.path().join("output")).unwrap();
        let child = Command::new(program)
            .arg(&conf_path)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-sentinel: {e}"));
        let mut node = SentinelNode { port, child, dir };
        let deadline = Instant::now() + DEADLINE;
        loop {
            let answered = async {
                let mut info = ("127.0.0.1", port).into_connection_info()?;
                if let Some(password) = password {
                    let redis = info.redis_settings().clone().set_password(password);
                    info = info.set_redis_settings(redis);
                }
                let mut conn = redis::Client::open(info)?
                    .get_multiplexed_async_connection()
                    .await?;
                redis::cmd("PING").query_async::<String>(&mut conn).await
            };
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(5), answered).await {
                return node;
            }
            if node.child.try_wait().unwrap().is_some() {
                let log = std::fs::read_to_string(node.dir.path().join("sentinel.log"))
                    .unwrap_or_default()
                    + &std::fs::read_to_string(node.dir.path().join("output")).unwrap_or_default();
                if log.contains("Address already in use") {
                    break;
                }
                panic!("redis-sentinel exited instead of starting:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "redis-sentinel on port {port} did not answer PING within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("redis-sentinel found no free port in 5 tries");
}

/// `[session]` lines and a `[redis]` table for [`super::config_toml`]'s `extra`: the Redis
/// store through `sentinels`, with a generous command deadline (2 s) as [`redis_store`].
pub fn sentinel_store(sentinels: &[String], session: &str, redis: &str) -> String {
    let list = sentinels
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "store = \"redis\"\n{session}\n\n[redis]\nsentinels = [{list}]\nmaster_name = \"{MASTER_NAME}\"\ntimeout = \"2s\"\n{redis}\n"
    )
}

/// Polls `check` every 50 ms until it holds, failing after `within` with `what`.
pub async fn eventually_within<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
