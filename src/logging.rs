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
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

const FLUSH_BYTES: usize = 32 * 1024;
const FLUSH_EVERY: Duration = Duration::from_millis(100);

static BUFFER: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Starts logging at the level `RUST_LOG` asks for (default `info`).
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: escape codes in a file or the journal are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout())
        && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(Batched)
        .init();
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
    pub user: &'a str,
    pub session: &'a str,
    pub micros: u64,
}

/// Writes the request line, with the same text tracing's formatter would produce for
/// `info!(method, path, status, user, session, micros)`. It is the one line logged for every
/// request, and tracing's formatter spends about 10k instructions on it (callgrind); this
/// spends a fraction. `RUST_LOG` still decides whether it is written.
pub fn request(line: &RequestLine<'_>) {
    if !tracing::enabled!(Level::INFO) {
        return;
    }
    thread_local! {
        static TEXT: RefCell<String> = const { RefCell::new(String::new()) };
        /// The date and time to the second, formatted once per second.
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    TEXT.with_borrow_mut(|text| {
        text.clear();
        SECOND.with_borrow_mut(|(secs, formatted)| {
            if *secs != since_epoch.as_secs() {
                *secs = since_epoch.as_secs();
                formatted.clear();
                // "2026-11-24T23:15:55Z" without its "Z"; writing into a String cannot fail.
                let _ = write!(formatted, "{}", humantime::format_rfc3339_seconds(now));
                formatted.pop();
            }
            text.push_str(formatted);
        });
        text.push('.');
        push_padded(text, u64::from(since_epoch.subsec_micros()), 6);
        text.push_str("Z  INFO method=");
        text.push_str(line.method.as_str());
        text.push_str(" path=");
        push_quoted(text, line.path);
        text.push_str(" status=");
        push_padded(text, u64::from(line.status), 1);
        text.push_str(" user=");
        push_quoted(text, line.user);
        text.push_str(" session=");
        push_quoted(text, line.session);
        text.push_str(" micros=");
        push_padded(text, line.micros, 1);
        text.push('\n');
        let full = {
            let mut pending = lock();
            pending.extend_from_slice(text.as_bytes());
            pending.len() >= FLUSH_BYTES
        };
        if full {
            flush();
        }
    });
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
