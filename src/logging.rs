//! Log output: tracing's formatter writing to standard output through one shared buffer, and
//! the per-request line, formatted directly.
//!
//! A line per request written straight to stdout is a `write` system call per request, about
//! a tenth of a proxy's CPU time under load (benches/results, profile). Lines are collected in
//! memory instead and written in batches: when 32 KiB have gathered, every 100 ms by a flusher
//! thread, at once for warnings and errors (an operator watching the log sees those without
//! delay), and on exit. A crash can lose at most the last 100 ms of request lines.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

const FLUSH_BYTES: usize = 32 * 1024;
const FLUSH_EVERY: Duration = Duration::from_millis(100);

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
#[derive(Serialize)]
pub struct RequestLine<'a> {
    #[serde(serialize_with = "method_str")]
    pub method: &'a http::Method,
    pub path: &'a str,
    pub status: u16,
    /// What the gate decided (the metrics' `decision` label).
    pub decision: &'static str,
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

fn method_str<S: serde::Serializer>(m: &&http::Method, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(m.as_str())
}

/// The JSON request line's frame around the fields, as tracing's JSON formatter writes an
/// event (flattened), so every line of a JSON log has the same shape.
#[derive(Serialize)]
struct JsonLine<'a> {
    timestamp: &'a str,
    level: &'static str,
    message: &'static str,
    #[serde(flatten)]
    fields: &'a RequestLine<'a>,
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
    text.push_str(line.decision);
    text.push_str(" user=");
    push_quoted(text, line.user.unwrap_or("-"));
    text.push_str(" session=");
    push_quoted(text, line.session.unwrap_or(""));
    text.push_str(" client=");
    // An address's text is digits, dots, colons and hex: nothing to quote.
    let _ = write!(text, "{}", line.client);
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

fn write_json(out: &mut Vec<u8>, stamp: &str, line: &RequestLine<'_>) {
    let json = JsonLine {
        timestamp: stamp,
        level: "INFO",
        message: "request",
        fields: line,
    };
    // serde_json escapes every string, so nothing in a path can end the object or the line.
    // Serializing these fields into memory cannot fail; if it ever did, no half line is left.
    if serde_json::to_writer(&mut *out, &json).is_err() {
        out.clear();
        return;
    }
    out.push(b'\n');
}

/// `n` in decimal, zero-padded to at least `width` digits, without the formatting machinery.
fn push_padded(out: &mut String, mut n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut i = digits.len();
    while n > 0 || digits.len() - i < width {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.push_str(std::str::from_utf8(&digits[i..]).unwrap_or("?"));
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
    use super::{push_padded, push_quoted};

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
