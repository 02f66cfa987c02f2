//! WebSocket load generator for `benches/ws/ws_bench.sh`: opens N sockets (a few handshakes at a
//! time, each with the given headers), then every socket sends a message and waits for its echo
//! (`--inflight` at a time) until the duration is up. Reports messages per second, round-trip
//! latency, handshake failures by HTTP status, errors and sockets that closed early.
//! `--hold` opens the sockets and keeps them idle until SIGTERM or ctrl-c, to measure what idle
//! tunnels cost a proxy.
//!
//!     cargo run --release --example ws_load -- --url ws://127.0.0.1:18220/ws --sockets 1000 \
//!         --duration 10s --message-bytes 64 [--header "Cookie: ..."] [--inflight 1] \
//!         [--json FILE] [--hold]
//!
//! Exits 1 when a handshake failed, a socket closed early or an error was counted (the report
//! and the JSON are written all the same), 0 otherwise.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

type Ws = WebSocketStream<TcpStream>;

#[derive(Parser)]
#[command(about = "WebSocket load generator: N sockets, one echo round trip after another")]
struct Args {
    /// ws:// URL to open every socket on.
    #[arg(long)]
    url: String,
    /// Sockets to open.
    #[arg(long, default_value_t = 1000)]
    sockets: usize,
    /// How long to send for, once every socket is open ("10s", "500ms" or seconds).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Size of each (binary) message.
    #[arg(long, default_value_t = 64)]
    message_bytes: usize,
    /// An extra handshake header, "Name: value" (repeatable), e.g. the session cookie.
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Messages each socket keeps in flight.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    inflight: u32,
    /// Handshakes in progress at once while the sockets open.
    #[arg(long, default_value_t = 32)]
    ramp: usize,
    /// Give up on a handshake (connect included) after this long.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    handshake_timeout: Duration,
    /// Runtime threads (1: a current-thread runtime, for a generator pinned to one CPU).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Also write the results as JSON to FILE (with --hold: once the sockets are open).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Open the sockets and keep them idle until SIGTERM or ctrl-c; no messages are sent.
    #[arg(long)]
    hold: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Ok(Duration::from_secs_f64(secs)),
        Ok(_) => Err(format!("not a duration: {s}")),
        Err(_) => humantime::parse_duration(s).map_err(|e| e.to_string()),
    }
}

fn main() {
    let args = Args::parse();
    let headers = match parse_headers(&args.headers) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("ws_load: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = args.url.as_str().into_client_request() {
        eprintln!("ws_load: bad --url {}: {e}", args.url);
        std::process::exit(2);
    }
    // Each socket is a file descriptor; the soft limit is often 1024.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(args.threads);
        b
    }
    .enable_all()
    .build()
    .expect("tokio runtime");
    let ok = rt.block_on(run(args, headers));
    std::process::exit(if ok { 0 } else { 1 });
}

fn parse_headers(raw: &[String]) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    raw.iter()
        .map(|h| {
            let (name, value) = h
                .split_once(':')
                .ok_or_else(|| format!("--header {h:?} is not \"Name: value\""))?;
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|e| format!("--header {h:?}: {e}"))?;
            let value =
                HeaderValue::from_str(value.trim()).map_err(|e| format!("--header {name}: {e}"))?;
            Ok((name, value))
        })
        .collect()
}

/// Latencies in nanoseconds, HDR style: 128 linear buckets per power of two (under 0.8% error
/// at any magnitude) in a fixed 7,424-bucket table, however many samples.
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
    sum: u128,
}

const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;

impl Histogram {
    fn new() -> Self {
        Histogram {
            counts: vec![0; Self::index(u64::MAX) + 1],
            total: 0,
            max: 0,
            sum: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < SUB {
            return v as usize;
        }
        let shift = 63 - v.leading_zeros() - SUB_BITS;
        ((u64::from(shift + 1) << SUB_BITS) | ((v >> shift) - SUB)) as usize
    }

    /// The highest value that lands in bucket `i`.
    fn highest(i: usize) -> u64 {
        let i = i as u64;
        if i < SUB {
            return i;
        }
        let shift = (i >> SUB_BITS) - 1;
        ((SUB + (i & (SUB - 1))) << shift) + ((1u64 << shift) - 1)
    }

    fn record(&mut self, v: u64) {
        self.counts[Self::index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
        self.sum += u128::from(v);
    }

    fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::highest(i).min(self.max);
            }
        }
        self.max
    }

    fn mean(&self) -> u64 {
        if self.total == 0 {
            0
        } else {
            (self.sum / u128::from(self.total)) as u64
        }
    }

    fn summary_ms(&self) -> serde_json::Value {
        let ms = |ns: u64| (ns as f64 / 1e6 * 1e3).round() / 1e3;
        serde_json::json!({
            "samples": self.total,
            "mean": ms(self.mean()),
            "p50": ms(self.quantile(0.50)),
            "p90": ms(self.quantile(0.90)),
            "p99": ms(self.quantile(0.99)),
            "max": ms(self.max),
        })
    }
}

/// What one socket saw during the load.
#[derive(Default)]
struct SocketStats {
    messages: u64,
    errors: BTreeMap<String, u64>,
    closed_early: bool,
}

async fn run(args: Args, headers: Vec<(HeaderName, HeaderValue)>) -> bool {
    let args = Arc::new(args);
    let headers = Arc::new(headers);
    let ramp = Arc::new(Semaphore::new(args.ramp.max(1)));
    let handshakes = Arc::new(Mutex::new(Histogram::new()));
    let latency = Arc::new(Mutex::new(Histogram::new()));
    // Some(start of the load) once every socket has tried its handshake; with --hold, `end`
    // turns true at the signal that ends the hold.
    let (go_tx, go_rx) = watch::channel(None::<Instant>);
    let (end_tx, end_rx) = watch::channel(false);
    let (opened_tx, mut opened_rx) = mpsc::unbounded_channel::<Result<(), String>>();
    let payload = Bytes::from(
        (0..args.message_bytes)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );

    let ramp_start = Instant::now();
    let mut tasks = Vec::with_capacity(args.sockets);
    for _ in 0..args.sockets {
        let (args, headers, ramp, handshakes, latency) = (
            args.clone(),
            headers.clone(),
            ramp.clone(),
            handshakes.clone(),
            latency.clone(),
        );
        let (mut go_rx, end_rx, opened_tx, payload) = (
            go_rx.clone(),
            end_rx.clone(),
            opened_tx.clone(),
            payload.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let opened = {
                let _permit = ramp.acquire().await.expect("semaphore never closed");
                let t0 = Instant::now();
                let r = timeout(
                    args.handshake_timeout,
                    open(&args.url, &headers, args.message_bytes),
                )
                .await;
                let r = r.unwrap_or_else(|_| Err("timeout".to_string()));
                if r.is_ok() {
                    handshakes
                        .lock()
                        .unwrap()
                        .record(t0.elapsed().as_nanos() as u64);
                }
                r
            };
            let mut ws = match opened {
                Ok(ws) => {
                    let _ = opened_tx.send(Ok(()));
                    ws
                }
                Err(e) => {
                    let _ = opened_tx.send(Err(e));
                    return None;
                }
            };
            drop(opened_tx);
            let start = go_rx
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|v| *v)?;
            if args.hold {
                return Some(hold(ws, end_rx).await);
            }
            let deadline = start + args.duration;
            Some(load(&mut ws, payload, args.inflight as usize, deadline, &latency).await)
        }));
    }
    drop(opened_tx);

    let mut opened = 0usize;
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(r) = opened_rx.recv().await {
        match r {
            Ok(()) => opened += 1,
            Err(e) => *failures.entry(e).or_default() += 1,
        }
    }
    let ramp_s = ramp_start.elapsed().as_secs_f64();
    let failed = args.sockets - opened;
    let failures_line = format!(
        "{failed} of {} handshakes failed: {}",
        args.sockets,
        failures
            .iter()
            .map(|(k, n)| format!("{k} x {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut report = serde_json::json!({
        "url": args.url,
        "sockets": args.sockets,
        "opened": opened,
        "handshakes_failed": failed,
        "handshake_failures": failures,
        "ramp_s": (ramp_s * 1e3).round() / 1e3,
        "handshake_ms": handshakes.lock().unwrap().summary_ms(),
    });
    if failed > 0 {
        eprintln!("ws_load: {failures_line}");
    }

    if args.hold {
        if opened == 0 {
            write_json(&args, &report);
            return false;
        }
        report["hold"] = true.into();
        write_json(&args, &report);
        println!("holding {opened} sockets");
        let _ = go_tx.send(Some(Instant::now()));
        wait_for_signal().await;
        let _ = end_tx.send(true);
        let mut closed = 0;
        for t in tasks {
            if let Ok(Some(s)) = t.await {
                closed += usize::from(s.closed_early);
            }
        }
        println!(
            "released {} sockets; {closed} had closed while held",
            opened - closed
        );
        return failed == 0 && closed == 0;
    }

    let start = Instant::now();
    let _ = go_tx.send(Some(start));
    let mut messages = 0u64;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let (mut closed_early, mut silent) = (0usize, 0usize);
    for t in tasks {
        match t.await {
            Ok(Some(s)) => {
                messages += s.messages;
                closed_early += usize::from(s.closed_early);
                silent += usize::from(s.messages == 0);
                for (k, n) in s.errors {
                    *errors.entry(k).or_default() += n;
                }
            }
            Ok(None) => {}
            Err(e) => *errors.entry(format!("task: {e}")).or_default() += 1,
        }
    }
    let secs = args.duration.as_secs_f64();
    let rate = if secs > 0.0 {
        messages as f64 / secs
    } else {
        0.0
    };
    let error_count: u64 = errors.values().sum();
    let lat = latency.lock().unwrap();
    for (k, v) in [
        ("duration_s", secs.into()),
        ("message_bytes", args.message_bytes.into()),
        ("inflight", args.inflight.into()),
        ("messages", messages.into()),
        ("messages_per_s", rate.round().into()),
        ("latency_ms", lat.summary_ms()),
        ("errors", error_count.into()),
        ("error_kinds", serde_json::json!(errors)),
        ("closed_early", closed_early.into()),
        ("silent", silent.into()),
    ] {
        report[k] = v;
    }
    write_json(&args, &report);

    let ms = |q: f64| lat.quantile(q) as f64 / 1e6;
    println!(
        "{}: {opened} of {} sockets open (ramp {ramp_s:.2} s), {}-byte messages, {} in flight, {secs} s",
        args.url, args.sockets, args.message_bytes, args.inflight
    );
    if failed > 0 {
        println!("{failures_line}");
    }
    println!(
        "{rate:.0} messages/s; round trip p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        lat.max as f64 / 1e6
    );
    println!(
        "errors {error_count}{}; closed early {closed_early}; sockets without an echo {silent}",
        if errors.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                errors
                    .iter()
                    .map(|(k, n)| format!("{k} x {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    failed == 0 && error_count == 0 && closed_early == 0
}

fn write_json(args: &Args, report: &serde_json::Value) {
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(report).expect("json");
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("ws_load: writing {}: {e}", path.display());
        }
    }
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Connects and does the handshake; the error names the HTTP status when the server refused.
async fn open(
    url: &str,
    headers: &[(HeaderName, HeaderValue)],
    message_bytes: usize,
) -> Result<Ws, String> {
    // A fresh request per socket: into_client_request draws a new Sec-WebSocket-Key each time.
    let mut req: Request = url.into_client_request().map_err(|e| e.to_string())?;
    for (k, v) in headers {
        req.headers_mut().insert(k.clone(), v.clone());
    }
    let host = req
        .uri()
        .host()
        .unwrap_or("127.0.0.1")
        .trim_matches(['[', ']'])
        .to_string();
    let port = req.uri().port_u16().unwrap_or(80);
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("connect: {}", e.kind()))?;
    let _ = tcp.set_nodelay(true);
    // tungstenite zero-fills its whole read buffer before every read (default 128 KiB, most of
    // the generator's CPU at 64-byte messages): room for one echo, at least 4 KiB.
    let config = WebSocketConfig::default().read_buffer_size((message_bytes + 14).max(4096));
    match tokio_tungstenite::client_async_with_config(req, tcp, Some(config)).await {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(resp)) => Err(format!("HTTP {}", resp.status().as_u16())),
        Err(WsError::Io(e)) => Err(format!("io: {}", e.kind())),
        Err(e) => Err(e.to_string()),
    }
}

/// Sends `inflight` messages, then one more for every echo, until the deadline; echoes that
/// arrive after it are not counted. Then closes the socket (bounded wait for the peer's close).
async fn load(
    ws: &mut Ws,
    payload: Bytes,
    inflight: usize,
    deadline: Instant,
    latency: &Mutex<Histogram>,
) -> SocketStats {
    let mut stats = SocketStats::default();
    let mut sent = VecDeque::with_capacity(inflight);
    let deadline = tokio::time::Instant::from_std(deadline);
    for _ in 0..inflight {
        sent.push_back(Instant::now());
        if let Err(e) = ws.send(Message::Binary(payload.clone())).await {
            note_ws_error(&mut stats, e);
            return stats;
        }
    }
    loop {
        let msg = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => break,
            Ok(None) | Ok(Some(Ok(Message::Close(_)))) => {
                stats.closed_early = true;
                return stats;
            }
            Ok(Some(Err(e))) => {
                note_ws_error(&mut stats, e);
                return stats;
            }
            Ok(Some(Ok(m))) => m,
        };
        let body = match msg {
            Message::Binary(b) => b,
            Message::Text(t) => Bytes::from(t),
            _ => continue, // pings and pongs
        };
        let Some(t0) = sent.pop_front() else {
            count(&mut stats, "unsolicited message".into());
            continue;
        };
        let now = Instant::now();
        if body != payload {
            count(&mut stats, "echo differs from the message".into());
        } else {
            latency.lock().unwrap().record((now - t0).as_nanos() as u64);
            stats.messages += 1;
        }
        if tokio::time::Instant::from_std(now) < deadline {
            sent.push_back(Instant::now());
            if let Err(e) = ws.send(Message::Binary(payload.clone())).await {
                note_ws_error(&mut stats, e);
                return stats;
            }
        }
    }
    // Close cleanly, reading what is still in flight; a peer that never answers the close
    // costs at most two seconds (all sockets close at once).
    let _ = timeout(Duration::from_secs(2), async {
        if ws.close(None).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
    stats
}

fn note_ws_error(stats: &mut SocketStats, e: WsError) {
    match e {
        // The peer went away: the socket ended before the load did.
        WsError::ConnectionClosed | WsError::AlreadyClosed => stats.closed_early = true,
        WsError::Io(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            stats.closed_early = true
        }
        WsError::Protocol(
            tokio_tungstenite::tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        ) => stats.closed_early = true,
        e => count(stats, e.to_string()),
    }
}

fn count(stats: &mut SocketStats, kind: String) {
    *stats.errors.entry(kind).or_default() += 1;
}

/// Keeps the socket open and idle (answering pings) until the hold ends; closed_early when the
/// server or the proxy closed it first.
async fn hold(mut ws: Ws, mut end: watch::Receiver<bool>) -> SocketStats {
    let mut stats = SocketStats::default();
    loop {
        tokio::select! {
            _ = end.wait_for(|e| *e) => break,
            msg = ws.next() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    stats.closed_early = true;
                    return stats;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = timeout(Duration::from_secs(2), async {
        if ws.close(None).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
    stats
}

#[cfg(test)]
mod tests {
    use super::Histogram;

    #[test]
    fn buckets_are_contiguous_and_within_one_percent() {
        let mut v = 0u64;
        while v < u64::MAX / 3 {
            let i = Histogram::index(v);
            let hi = Histogram::highest(i);
            assert!(hi >= v, "{v} above its bucket's highest {hi}");
            assert_eq!(Histogram::index(hi), i);
            assert_eq!(Histogram::index(hi + 1), i + 1, "gap after {hi}");
            assert!((hi - v) as f64 <= v as f64 / 128.0 + 1.0, "{v} -> {hi}");
            v += v / 8 + 1;
        }
        assert_eq!(
            Histogram::index(u64::MAX),
            Histogram::new().counts.len() - 1
        );
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::new();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        for (q, want) in [(0.5, 500_000.0), (0.9, 900_000.0), (0.99, 990_000.0)] {
            let got = h.quantile(q) as f64;
            assert!((got - want).abs() / want < 0.01, "q{q}: {got}");
        }
        assert_eq!(h.quantile(1.0), 1_000_000);
        assert_eq!(h.max, 1_000_000);
        assert_eq!(Histogram::new().quantile(0.5), 0);
    }
}
