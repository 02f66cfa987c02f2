//! Log output: tracing's formatter writing to standard output through one shared buffer, and
//! the per-request line, formatted directly.
//!
//! A line per request written straight to stdout is a `write` system call per request, about
//! a tenth of a proxy's CPU time under load (benches/results, profile). Lines are collected in
//! memory instead and written in batches: when 32 KiB have gathered, every 100 ms by a flusher
//! thread, at once for warnings and errors (an operator watching the log sees those without
//! delay), and on exit. A crash can lose at most the last 100 ms of request lines.
//!
//! tracing-appender's non-blocking writer was measured in this writer's place (lossless, to
//! stdout, 2026-12-07): +1,032 instructions per signed-in request (61,018 vs 59,986,
//! `benches/profile.sh --callgrind`; a line copied into its own allocation and sent through a
//! channel) and one `write` system call per line on its thread (5.25 vs 4.17 system calls per
//! request under 16 connections), so this one stays.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

use crate::ops::outcome::Outcome;

const FLUSH_BYTES: usize = 32 * 1024;
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// `[log] format`: how log lines are written. Read at start only (a reload keeps the format).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `key=value` lines, as tracing's formatter writes them.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

static BUFFER: Mutex<Vec<u8>> = Mutex::new(Vec::new());
/// Whether request lines are JSON (`[log] format = "json"`), set once by `init`.
static JSON: AtomicBool = AtomicBool::new(false);

/// Starts logging at the level `RUST_LOG` asks for (default `info`), in `format`.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(Batched);
    match format {
        LogFormat::Text => {
            // Colours only on a terminal: escape codes in a file or the journal are noise.
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout())
                && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(ansi).init();
        }
        LogFormat::Json => {
            JSON.store(true, Ordering::Relaxed);
            // Flat objects, like the request lines: {"timestamp", "level", "message", fields}.
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .init();
        }
    }
    let spawned = std::thread::Builder::new()
        .name("log-flusher".into())
        .spawn(|| {
            loop {
                std::thread::sleep(FLUSH_EVERY);
                flush();
            }
        });
    if spawned.is_err() {
        // Without the flusher, lines still go out in 32 KiB batches and at exit.
        tracing::warn!("cannot start the log flusher thread");
    }
}

/// Writes out whatever is buffered. Called by the flusher, for warnings, and before exit.
pub fn flush() {
    let pending = std::mem::take(&mut *lock());
    if !pending.is_empty() {
        // Nowhere to report a failed log write; the lines are dropped rather than kept forever.
        let _ = std::io::stdout().lock().write_all(&pending);
    }
}

/// What one request's log line says. Never a cookie, a header value, a query string or a
/// session id: the session appears as its log tag.
pub struct RequestLine<'a> {
    pub method: &'a http::Method,
    pub path: &'a str,
    pub status: u16,
    /// What was made of the request (the metrics' `decision` label).
    pub decision: Outcome,
    pub user: Option<&'a str>,
    /// The session's log tag.
    pub session: Option<&'a str>,
    /// The client's address (from X-Forwarded-For only behind a trusted proxy).
    pub client: IpAddr,
    /// From the request's head to the response's head.
    pub micros: u64,
    /// The upstream's part of that, for forwarded requests.
    pub upstream_micros: Option<u64>,
    /// The response body's length when known up front (Content-Length); a streamed body
    /// of unknown length has none.
    pub bytes: Option<u64>,
}

/// Writes the request line: in text, the same text tracing's formatter would produce for
/// `info!(method, path, status, ...)`; in JSON, the object its JSON formatter would. It is
/// the one line logged for every request, and tracing's formatter spends about 10k
/// instructions on it (callgrind); this spends a fraction. `RUST_LOG` still decides whether
/// it is written.
pub fn request(line: &RequestLine<'_>) {
    if !tracing::enabled!(Level::INFO) {
        return;
    }
    thread_local! {
        static TEXT: RefCell<String> = const { RefCell::new(String::new()) };
        static STAMP: RefCell<String> = const { RefCell::new(String::new()) };
        static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        /// The date and time to the second, formatted once per second.
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    STAMP.with_borrow_mut(|stamp| {
        stamp.clear();
        SECOND.with_borrow_mut(|(secs, formatted)| {
            if *secs != since_epoch.as_secs() {
                *secs = since_epoch.as_secs();
                formatted.clear();
                // "2026-11-24T23:15:55Z" without its "Z"; writing into a String cannot fail.
                let _ = write!(formatted, "{}", humantime::format_rfc3339_seconds(now));
                formatted.pop();
            }
            stamp.push_str(formatted);
        });
        stamp.push('.');
        push_padded(stamp, u64::from(since_epoch.subsec_micros()), 6);
        stamp.push('Z');
        LINE.with_borrow_mut(|out| {
            out.clear();
            if JSON.load(Ordering::Relaxed) {
                write_json(out, stamp, line);
            } else {
                TEXT.with_borrow_mut(|text| {
                    text.clear();
                    write_text(text, stamp, line);
                    out.extend_from_slice(text.as_bytes());
                });
            }
            let full = {
                let mut pending = lock();
                pending.extend_from_slice(out);
                pending.len() >= FLUSH_BYTES
            };
            if full {
                flush();
            }
        });
    });
}

fn write_text(text: &mut String, stamp: &str, line: &RequestLine<'_>) {
    text.push_str(stamp);
    text.push_str("  INFO method=");
    text.push_str(line.method.as_str());
    text.push_str(" path=");
    push_quoted(text, line.path);
    text.push_str(" status=");
    push_padded(text, u64::from(line.status), 1);
    text.push_str(" decision=");
    text.push_str(line.decision.as_str());
    text.push_str(" user=");
    push_quoted(text, line.user.unwrap_or("-"));
    text.push_str(" session=");
    push_quoted(text, line.session.unwrap_or(""));
    text.push_str(" client=");
    // An address's text is digits, dots, colons and hex: nothing to quote.
    text.push_str(ip_text(line.client, &mut [0; IP_TEXT]));
    text.push_str(" micros=");
    push_padded(text, line.micros, 1);
    for (key, value) in [
        (" upstream_micros=", line.upstream_micros),
        (" bytes=", line.bytes),
    ] {
        if let Some(n) = value {
            text.push_str(key);
            push_padded(text, n, 1);
        }
    }
    text.push('\n');
}

/// The JSON line, in the shape tracing's JSON formatter gives every other line. The keys and
/// the values sessiongate makes (method token, decision, tag, address, numbers) need no
/// escaping and are written as they are; the path and the user name go through serde_json's
/// string escaping, so nothing in them can end the string or the line. Serializing a whole
/// struct with serde_json cost 3,000 instructions a line, nearly all in escaping the keys
/// (callgrind); this costs about what the text line does.
fn write_json(out: &mut Vec<u8>, stamp: &str, line: &RequestLine<'_>) {
    out.extend_from_slice(b"{\"timestamp\":\"");
    out.extend_from_slice(stamp.as_bytes());
    out.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"request\",\"method\":");
    json_string(out, line.method.as_str());
    out.extend_from_slice(b",\"path\":");
    json_string(out, line.path);
    out.extend_from_slice(b",\"status\":");
    out.extend_from_slice(itoa::Buffer::new().format(line.status).as_bytes());
    out.extend_from_slice(b",\"decision\":\"");
    out.extend_from_slice(line.decision.as_str().as_bytes());
    out.extend_from_slice(b"\",\"user\":");
    match line.user {
        Some(user) => json_string(out, user),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"session\":");
    match line.session {
        // A log tag is hex digits.
        Some(tag) => {
            out.push(b'"');
            out.extend_from_slice(tag.as_bytes());
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"client\":\"");
    out.extend_from_slice(ip_text(line.client, &mut [0; IP_TEXT]).as_bytes());
    out.extend_from_slice(b"\",\"micros\":");
    out.extend_from_slice(itoa::Buffer::new().format(line.micros).as_bytes());
    for (key, value) in [
        (&b",\"upstream_micros\":"[..], line.upstream_micros),
        (&b",\"bytes\":"[..], line.bytes),
    ] {
        out.extend_from_slice(key);
        match value {
            Some(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
    }
    out.extend_from_slice(b"}\n");
}

/// `value` as a JSON string, quoted and escaped by serde_json.
fn json_string(out: &mut Vec<u8>, value: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// `n` in decimal, zero-padded to at least `width` digits, without the formatting machinery
/// (itoa's digits cost a fraction of `write!`'s).
fn push_padded(out: &mut String, n: u64, width: usize) {
    let mut buffer = itoa::Buffer::new();
    let digits = buffer.format(n);
    for _ in digits.len()..width {
        out.push('0');
    }
    out.push_str(digits);
}

/// Room for any address's text ("ffff:ffff:...:255.255.255.255" is 45 bytes).
const IP_TEXT: usize = 48;

/// An address as `Display` writes it, in `buf`. IPv4, nearly every client, is written octet
/// by octet: `Display` through the formatting machinery cost about 900 instructions a line
/// (callgrind).
fn ip_text(ip: IpAddr, buf: &mut [u8; IP_TEXT]) -> &str {
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    // The buffer holds any address, so these writes cannot fail.
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    let _ = cursor.write_all(b".");
                }
                let _ = cursor.write_all(itoa::Buffer::new().format(octet).as_bytes());
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(cursor, "{v6}");
        }
    }
    let len = cursor.position() as usize;
    std::str::from_utf8(&buf[..len]).unwrap_or("-")
}

/// `value` in double quotes, escaped as `{:?}` would, so nothing in it can start a new line
/// or forge a field.
fn push_quoted(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' ' => out.push(' '),
            c if c.is_ascii_graphic() => out.push(c),
            c => out.extend(c.escape_debug()),
        }
    }
    out.push('"');
}

fn lock() -> std::sync::MutexGuard<'static, Vec<u8>> {
    BUFFER.lock().unwrap_or_else(|e| e.into_inner())
}

struct Batched;

/// One event's writer: appends to the shared buffer; `urgent` lines are flushed when the
/// event is complete.
pub struct Line {
    urgent: bool,
}

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let full = {
            let mut pending = lock();
            pending.extend_from_slice(buf);
            pending.len() >= FLUSH_BYTES
        };
        if full {
            flush();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if self.urgent {
            flush();
        }
    }
}

impl<'a> MakeWriter<'a> for Batched {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line { urgent: true }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line {
        Line {
            urgent: *meta.level() <= Level::WARN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{IP_TEXT, RequestLine, ip_text, push_padded, push_quoted, write_json};

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "127.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "10.0.20.3",
            "::1",
            "2001:db8::7",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:255.255.255.255",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip, &mut [0; IP_TEXT]), ip.to_string());
        }
    }

    #[test]
    fn a_json_line_is_one_object_whatever_the_path_and_user_hold() {
        let hostile = "/a\"b\\c\nd\u{1b}[31m\u{0}é\u{2028}}\n{\"forged\":1";
        let method = http::Method::from_bytes(b"PURGE").unwrap();
        let line = RequestLine {
            method: &method,
            path: hostile,
            status: 200,
            decision: crate::ops::outcome::Outcome::Allow,
            user: Some("bob \"the\" builder"),
            session: Some("8b7b1bf4"),
            client: "2001:db8::7".parse().unwrap(),
            micros: 1562,
            upstream_micros: None,
            bytes: Some(394),
        };
        let mut out = Vec::new();
        write_json(&mut out, "2026-12-01T15:09:38.619222Z", &line);
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "timestamp": "2026-12-01T15:09:38.619222Z",
                "level": "INFO",
                "message": "request",
                "method": "PURGE",
                "path": hostile,
                "status": 200,
                "decision": "allow",
                "user": "bob \"the\" builder",
                "session": "8b7b1bf4",
                "client": "2001:db8::7",
                "micros": 1562,
                "upstream_micros": null,
                "bytes": 394,
            })
        );
        let line = RequestLine {
            user: None,
            session: None,
            upstream_micros: Some(7),
            ..line
        };
        let mut out = Vec::new();
        write_json(&mut out, "t", &line);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(v["user"].is_null() && v["session"].is_null());
        assert_eq!(v["upstream_micros"], 7);
    }

    #[test]
    fn numbers_are_padded_like_the_timestamp_needs() {
        for (n, width, want) in [
            (0, 1, "0"),
            (7, 6, "000007"),
            (123456, 6, "123456"),
            (200, 1, "200"),
        ] {
            let mut out = String::new();
            push_padded(&mut out, n, width);
            assert_eq!(out, want);
        }
        let mut out = String::new();
        push_padded(&mut out, u64::MAX, 1);
        assert_eq!(out, u64::MAX.to_string());
    }

    #[test]
    fn quoted_values_cannot_break_the_line() {
        let mut out = String::new();
        push_quoted(&mut out, "a \"b\" \\ c\nd\u{1b}[31m");
        assert_eq!(out, r#""a \"b\" \\ c\nd\u{1b}[31m""#);
        assert_eq!(out, format!("{:?}", "a \"b\" \\ c\nd\u{1b}[31m"));
    }
}
