//! Request targets: which are acceptable at all, their normalized path (the one that is
//! routed, authorised and forwarded), and which fall under a public prefix.
//!
//! Auth proxies have been bypassed again and again by a path the proxy read one way and the
//! backend another (`/public/../admin`, `/public/%2e%2e/admin`, `/public/..;/admin`). Two
//! rules close that class: the path is normalized once, before any decision, and that
//! normalized path is what the upstream receives; and a public prefix only matches a path
//! that no backend could read as anything else.

use std::borrow::Cow;

/// Why a request target is refused (answered 400 with this text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadTarget {
    NotAPath,
    BadEscape,
    EncodedControl,
    Control,
}

impl BadTarget {
    pub fn message(self) -> &'static str {
        match self {
            BadTarget::NotAPath => "the request target must be a path starting with '/'",
            BadTarget::BadEscape => {
                "bad percent-encoding in the target (a '%' not followed by two hex digits)"
            }
            BadTarget::EncodedControl => {
                "an encoded NUL in the target, or an encoded control character in its path"
            }
            BadTarget::Control => "a control character in the target",
        }
    }
}

/// Checks the whole target (path and query) and returns the normalized path: percent-escapes
/// of unreserved characters decoded (`%7E` -> `~`, `%2e` -> `.`), other escapes upper-cased,
/// and dot segments resolved (RFC 3986 §6.2.2). Escapes of reserved characters such as `%2F`
/// stay encoded: decoding them would change which segments the path has.
///
/// Borrowed (no allocation) when the path is already normal, which is almost always.
pub fn normalize<'a>(path: &'a str, query: Option<&str>) -> Result<Cow<'a, str>, BadTarget> {
    if !path.starts_with('/') {
        return Err(BadTarget::NotAPath);
    }
    if let Some(q) = query {
        check_bytes(q.as_bytes(), Part::Query)?;
    }
    let needs_work = check_bytes(path.as_bytes(), Part::Path)?;
    if !needs_work {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path);
    let resolved = remove_dot_segments(&decoded);
    Ok(if resolved == path {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(resolved)
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Path,
    Query,
}

/// Refuses bad escapes and control characters (raw ones never get past hyper's parser, but
/// escaped ones do). A path never holds an escaped control character (a backend that decodes
/// it could truncate at a NUL or split a header it reflects the path into); a query may carry
/// escaped newlines and tabs (a GET form with a text area does), but never an escaped NUL.
/// Returns whether the text has an escape or a dot segment to normalize.
fn check_bytes(b: &[u8], part: Part) -> Result<bool, BadTarget> {
    let mut needs_work = false;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let (Some(hi), Some(lo)) = (hex(b.get(i + 1)), hex(b.get(i + 2))) else {
                    return Err(BadTarget::BadEscape);
                };
                let byte = hi * 16 + lo;
                let control = byte < 0x20 || byte == 0x7f;
                if byte == 0 || (control && part == Part::Path) {
                    return Err(BadTarget::EncodedControl);
                }
                needs_work = true;
                i += 3;
            }
            b'.' if i > 0 && b[i - 1] == b'/' => {
                needs_work = true;
                i += 1;
            }
            c if c < 0x20 || c == 0x7f => return Err(BadTarget::Control),
            _ => i += 1,
        }
    }
    Ok(needs_work)
}

fn hex(b: Option<&u8>) -> Option<u8> {
    b.and_then(|b| (*b as char).to_digit(16)).map(|d| d as u8)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Decodes escapes of unreserved characters; upper-cases the hex digits of the others.
/// Only called on text that passed `check_bytes`, so every `%` starts a valid escape. Works
/// on bytes: escapes are ASCII and become ASCII, so any UTF-8 around them stays intact.
fn decode_unreserved(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let byte = hex(b.get(i + 1)).unwrap_or(0) * 16 + hex(b.get(i + 2)).unwrap_or(0);
            if is_unreserved(byte) {
                out.push(byte);
            } else {
                out.extend_from_slice(&[
                    b'%',
                    b[i + 1].to_ascii_uppercase(),
                    b[i + 2].to_ascii_uppercase(),
                ]);
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("ASCII replaced by ASCII in valid UTF-8")
}

/// RFC 3986 §5.2.4 for an absolute path: `.` segments vanish, `..` removes the segment
/// before it, and nothing climbs above the root.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let mut result = String::with_capacity(path.len());
    for seg in out {
        result.push('/');
        result.push_str(seg);
    }
    if result.is_empty() {
        result.push('/');
    }
    result
}

/// What a normalized path holds that a backend could read differently, found in one pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// No encoded `/` or `\` (some servers decode them before routing), no `\` (read as `/`
    /// on Windows servers), no `;` (Tomcat and Jetty drop `;params`, so `/public/..;/admin`
    /// is `/admin` to them) and no dot segment left.
    pub unambiguous: bool,
    /// `//` somewhere: many servers merge repeated slashes.
    pub repeated_slash: bool,
}

impl Shape {
    /// Whether a lenient backend reads the path as written.
    pub fn is_plain(self) -> bool {
        self.unambiguous && !self.repeated_slash
    }
}

/// The [`Shape`] of a normalized path (escapes in upper case, as `normalize` leaves them).
pub fn shape(path: &str) -> Shape {
    let b = path.as_bytes();
    let mut unambiguous = true;
    let mut repeated_slash = false;
    let mut segment_start = 0;
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'\\' | b';' => unambiguous = false,
            b'%' if matches!(b.get(i + 1..i + 3), Some(b"2F" | b"5C")) => unambiguous = false,
            b'/' => {
                if i > 0 && b[i - 1] == b'/' {
                    repeated_slash = true;
                }
                if is_dot_segment(&b[segment_start..i]) {
                    unambiguous = false;
                }
                segment_start = i + 1;
            }
            _ => {}
        }
    }
    if is_dot_segment(&b[segment_start..]) {
        unambiguous = false;
    }
    Shape {
        unambiguous,
        repeated_slash,
    }
}

fn is_dot_segment(segment: &[u8]) -> bool {
    segment == b"." || segment == b".."
}

/// True when no backend could read the normalized `path` as another path (see [`Shape`]).
pub fn is_unambiguous(path: &str) -> bool {
    shape(path).unambiguous
}

/// How a lenient backend may read a normalized path that is ambiguous or has repeated
/// slashes: `\`, `%2F` and `%5C` as `/`, `;params` dropped from every segment, repeated
/// slashes merged (nginx, Apache and many frameworks do) and dot segments resolved. `None`
/// when there is no other reading. Access rules judge both readings and keep the stricter
/// answer, so no spelling of a path gets past a rule a backend would apply to it.
pub fn backend_reading(path: &str) -> Option<String> {
    if shape(path).is_plain() {
        return None;
    }
    let slashes = path
        .replace('\\', "/")
        .replace("%2F", "/")
        .replace("%5C", "/");
    let unparam: Vec<&str> = slashes
        .split('/')
        .map(|seg| seg.split(';').next().unwrap_or(""))
        .collect();
    let merged = merge_slashes(&unparam.join("/"));
    let reading = merge_slashes(&remove_dot_segments(&merged));
    (reading != path).then_some(reading)
}

fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(target: &str) -> Result<String, BadTarget> {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        normalize(path, query).map(Cow::into_owned)
    }

    #[test]
    fn targets_with_bad_escapes_or_control_characters_are_refused() {
        for ok in [
            "/",
            "/a%20b?q=%2F&x=%7e",
            "/%41",
            "/caf%C3%A9",
            "/search?text=line%0D%0Aline%09tab%1b",
        ] {
            assert!(norm(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("/%zz", BadTarget::BadEscape),
            ("/a%2", BadTarget::BadEscape),
            ("/a%", BadTarget::BadEscape),
            ("/x?y=%G0", BadTarget::BadEscape),
            ("/a%00b", BadTarget::EncodedControl),
            ("/a%0d%0aX:1", BadTarget::EncodedControl),
            ("/%7F", BadTarget::EncodedControl),
            ("/?a=%00", BadTarget::EncodedControl),
            ("/a%09b", BadTarget::EncodedControl),
            ("*", BadTarget::NotAPath),
            ("", BadTarget::NotAPath),
            ("example.com:443", BadTarget::NotAPath),
        ] {
            assert_eq!(norm(bad), Err(why), "{bad}");
        }
    }

    #[test]
    fn normal_paths_are_borrowed_unchanged() {
        for p in ["/", "/a/b.css", "/a/.well-known", "/a..b/c", "/x/", "/a//b"] {
            let n = normalize(p, Some("q=../x")).unwrap();
            assert!(matches!(n, Cow::Borrowed(_)), "{p}");
            assert_eq!(n, p);
        }
    }

    #[test]
    fn escapes_of_unreserved_characters_are_decoded_and_dot_segments_resolved() {
        for (input, want) in [
            ("/%7Euser/%61", "/~user/a"),
            ("/a%2fb", "/a%2Fb"),
            ("/a%2Fb/%3b", "/a%2Fb/%3B"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/public/../admin", "/admin"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/public/%2E%2e/admin", "/admin"),
            ("/public/.%2e/admin", "/admin"),
            ("/PUBLIC/../admin", "/admin"),
            ("/a/./b/.", "/a/b/"),
            ("/a/b/..", "/a/"),
            ("/..", "/"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/.", "/"),
            ("/a/.b/./c", "/a/.b/c"),
            ("/public//../admin", "/public/admin"),
            ("/%2e%2e/%2e", "/"),
            // Found by the fuzzer: text around the escapes is kept byte for byte.
            ("/\u{e9}/.", "/\u{e9}/"),
            ("/\u{5ba}%2e", "/\u{5ba}."),
            ("/\u{e9}%3b", "/\u{e9}%3B"),
        ] {
            assert_eq!(norm(input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn the_shape_of_a_path_is_found_in_one_pass() {
        let plain = Shape {
            unambiguous: true,
            repeated_slash: false,
        };
        for p in ["/", "/a/b.css", "/a..b/.c", "/x/", "/caf%C3%A9", "/a%2"] {
            assert_eq!(shape(p), plain, "{p}");
        }
        for p in [
            "/a;b", "/a\\b", "/a%2Fb", "/a%5C", "/.", "/..", "/a/./b", "/a/../b", "/a/..",
        ] {
            assert!(!shape(p).unambiguous, "{p}");
        }
        assert!(shape("//a").repeated_slash && shape("//a").unambiguous);
        assert!(shape("/a//").repeated_slash);
        assert!(!shape("/a/b/").repeated_slash);
    }

    #[test]
    fn ambiguous_paths_get_the_reading_a_lenient_backend_would_route() {
        let reading = |t: &str| backend_reading(&norm(t).unwrap());
        for (input, want) in [
            ("/public/..;/admin", "/admin"),
            ("/admin;jsessionid=1/x", "/admin/x"),
            ("/public/..%2fadmin", "/admin"),
            ("/public/..%5Cadmin", "/admin"),
            ("/public\\..\\admin", "/admin"),
            ("//admin", "/admin"),
            ("/a//b///c", "/a/b/c"),
            ("/a%2Fb", "/a/b"),
        ] {
            assert_eq!(reading(input).as_deref(), Some(want), "{input}");
            assert!(!is_unambiguous(&norm(input).unwrap()) || input.contains("//"));
        }
        for plain in ["/", "/admin", "/a/b.css", "/public/../admin", "/caf%C3%A9"] {
            assert_eq!(reading(plain), None, "{plain}");
            assert!(is_unambiguous(&norm(plain).unwrap()), "{plain}");
        }
    }
}
