//! The canonical host: the one spelling of a host that every comparison uses (access rules,
//! `auth.redirect_hosts`, forward-auth, the Origin checks, `session.cookie_domain`), and the
//! screen that refuses a request whose host is missing, repeated or not a host at all.
//!
//! Canonical means lower case, no port, one trailing dot removed (DNS and most servers read
//! `admin.example.com.` as `admin.example.com`, so a rule for one must hold for the other) and
//! an IPv6 literal in brackets in its RFC 5952 form. A host is a DNS name (dot-separated labels
//! of letters, digits, `-` and `_`, 1 to 63 bytes each, 253 in all; `_` because Docker service
//! names and other internal names use it; non-ASCII names only as punycode, `xn--`) or an IP
//! literal. Anything else (spaces, `@`, `%`, empty labels, raw UTF-8) is not a host.

use std::borrow::Cow;
use std::fmt;
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};

use http::{HeaderMap, Version, header};

use crate::http::headers::X_FORWARDED_HOST;

/// What makes a text not a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadHost {
    Empty,
    Character,
    EmptyLabel,
    LongLabel,
    TooLong,
    Port,
    Ipv6,
    Number,
}

impl BadHost {
    /// What is wrong, for a 400's text and a config error.
    pub fn message(self) -> &'static str {
        match self {
            BadHost::Empty => "the host is empty",
            BadHost::Character => {
                "the host has a character no host name has (letters, digits, '-', '_' and '.' only; other scripts in punycode, xn--)"
            }
            BadHost::EmptyLabel => {
                "the host has an empty label (\"..\", a leading dot, or more than one trailing dot)"
            }
            BadHost::LongLabel => "a label of the host is longer than 63 bytes",
            BadHost::TooLong => "the host is longer than 253 bytes",
            BadHost::Port => "the port is not a number from 0 to 65535",
            BadHost::Ipv6 => "the host in brackets is not an IPv6 address",
            BadHost::Number => "the host ends in a number but is not an IPv4 address",
        }
    }
}

/// A `host[:port]`, its host canonical.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority<'a> {
    pub host: Cow<'a, str>,
    pub port: Option<u16>,
}

/// Reads `host[:port]` (a Host header, an `:authority`, the authority of a URL). Borrows
/// from `authority` unless the host had to be lower-cased or an IPv6 literal rewritten.
pub fn parse(authority: &[u8]) -> Result<Authority<'_>, BadHost> {
    let (host, port) = split_port(authority)?;
    Ok(Authority {
        host: canonical_host(host)?,
        port,
    })
}

/// The canonical host of `host[:port]`: what every host comparison compares.
pub fn canonical(authority: &[u8]) -> Result<Cow<'_, str>, BadHost> {
    parse(authority).map(|a| a.host)
}

/// True for a canonical host that is an IP literal (a cookie domain or a domain pattern
/// cannot be one).
pub fn is_ip(canonical: &str) -> bool {
    canonical.starts_with('[') || canonical.parse::<Ipv4Addr>().is_ok()
}

fn split_port(authority: &[u8]) -> Result<(&[u8], Option<u16>), BadHost> {
    let (host, port) = if authority.first() == Some(&b'[') {
        // The port follows the closing bracket; anything else there is not an authority.
        let close = authority
            .iter()
            .position(|&b| b == b']')
            .ok_or(BadHost::Ipv6)?;
        match &authority[close + 1..] {
            [] => (&authority[..=close], None),
            [b':', port @ ..] => (&authority[..=close], Some(port)),
            _ => return Err(BadHost::Ipv6),
        }
    } else {
        match authority.iter().position(|&b| b == b':') {
            Some(colon) => (&authority[..colon], Some(&authority[colon + 1..])),
            None => (authority, None),
        }
    };
    Ok((host, port.map(parse_port).transpose()?))
}

fn parse_port(digits: &[u8]) -> Result<u16, BadHost> {
    if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(BadHost::Port);
    }
    let n = digits
        .iter()
        .fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
    u16::try_from(n).map_err(|_| BadHost::Port)
}

/// The canonical form of a host without its port, in one pass over its bytes.
fn canonical_host(host: &[u8]) -> Result<Cow<'_, str>, BadHost> {
    if host.first() == Some(&b'[') {
        return ipv6(host);
    }
    let name = host.strip_suffix(b".").unwrap_or(host);
    if name.is_empty() {
        return Err(BadHost::Empty);
    }
    if name.len() > 253 {
        return Err(BadHost::TooLong);
    }
    let mut upper = false;
    let mut label = 0;
    for (i, &b) in name.iter().enumerate() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => {}
            b'A'..=b'Z' => upper = true,
            b'.' => {
                check_label(i - label)?;
                label = i + 1;
            }
            _ => return Err(BadHost::Character),
        }
    }
    check_label(name.len() - label)?;
    // Only ASCII is left, so this cannot fail.
    let text = std::str::from_utf8(name).map_err(|_| BadHost::Character)?;
    // A browser reads a name that ends in a number as an IPv4 address (`127.1`, `0x7f.1`): only
    // the dotted-quad form, which nothing reads two ways, is taken.
    if ends_in_number(&name[label..]) && !dotted_quad(name) {
        return Err(BadHost::Number);
    }
    Ok(if upper {
        Cow::Owned(text.to_ascii_lowercase())
    } else {
        Cow::Borrowed(text)
    })
}

fn check_label(len: usize) -> Result<(), BadHost> {
    match len {
        0 => Err(BadHost::EmptyLabel),
        1..=63 => Ok(()),
        _ => Err(BadHost::LongLabel),
    }
}

/// The WHATWG URL standard's "ends in a number": decimal digits, or `0x` and hex digits.
fn ends_in_number(last: &[u8]) -> bool {
    match last {
        [b'0', b'x' | b'X', hex @ ..] => hex.iter().all(u8::is_ascii_hexdigit),
        digits => digits.iter().all(u8::is_ascii_digit),
    }
}

/// Four decimal numbers up to 255 without leading zeros, as `Ipv4Addr`'s parser takes them
/// (a unit test holds the two to the same answers). On the request path for every host that
/// is an IPv4 address, where the general parser cost about 200 instructions.
fn dotted_quad(name: &[u8]) -> bool {
    let mut parts = 0;
    for part in name.split(|&b| b == b'.') {
        parts += 1;
        let number = match part {
            [b'0'] => 0,
            [b'1'..=b'9', ..] if part.len() <= 3 && part.iter().all(u8::is_ascii_digit) => {
                part.iter().fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'))
            }
            _ => return false,
        };
        if parts > 4 || number > 255 {
            return false;
        }
    }
    parts == 4
}

/// `[address]` with the address in RFC 5952 form (lower case, zeros compressed), so that
/// `[::1]` and `[0:0::1]` compare equal. No zone id: `%` is not a host character.
fn ipv6(host: &[u8]) -> Result<Cow<'_, str>, BadHost> {
    let inner = host
        .strip_prefix(b"[")
        .and_then(|h| h.strip_suffix(b"]"))
        .ok_or(BadHost::Ipv6)?;
    let text = std::str::from_utf8(inner).map_err(|_| BadHost::Ipv6)?;
    let address: Ipv6Addr = text.parse().map_err(|_| BadHost::Ipv6)?;
    // At most 39 characters and the brackets: written on the stack, compared with the input.
    let mut buf = [0u8; 48];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    write!(cursor, "[{address}]").map_err(|_| BadHost::Ipv6)?;
    let len = cursor.position() as usize;
    let written = &buf[..len];
    let spelled = std::str::from_utf8(written).map_err(|_| BadHost::Ipv6)?;
    Ok(if written == host {
        Cow::Borrowed(std::str::from_utf8(host).map_err(|_| BadHost::Ipv6)?)
    } else {
        Cow::Owned(spelled.to_string())
    })
}

/// An origin (`scheme://host[:port]`) reduced to what decides sameness: the scheme, the
/// canonical host, and the port, the scheme's default when none is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin<'a> {
    pub scheme: &'a str,
    pub host: Cow<'a, str>,
    pub port: Option<u16>,
}

impl<'a> Origin<'a> {
    /// Reads an `Origin` header or a configured origin; `None` for `null`, a path, or a host
    /// that is not one.
    pub fn parse(text: &'a str) -> Option<Origin<'a>> {
        let (scheme, authority) = text.split_once("://")?;
        if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        let Authority { host, port } = parse(authority.as_bytes()).ok()?;
        Some(Origin {
            scheme,
            host,
            port: port.or_else(|| default_port(scheme)),
        })
    }

    /// Whether a request for `authority` under `scheme` is this origin: a page on it is
    /// same-origin with the request.
    pub fn is(&self, scheme: &str, authority: &Authority<'_>) -> bool {
        self.scheme.eq_ignore_ascii_case(scheme)
            && self.host == authority.host
            && self.port == authority.port.or_else(|| default_port(scheme))
    }

    /// Whether two origins are the same one.
    pub fn same(&self, other: &Origin<'_>) -> bool {
        self.scheme.eq_ignore_ascii_case(other.scheme)
            && self.host == other.host
            && self.port == other.port
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("wss") {
        Some(443)
    } else if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("ws") {
        Some(80)
    } else {
        None
    }
}

/// Why a request's host cannot be judged: each is a 400, and the request is never forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostProblem {
    /// HTTP/1.1 without `Host`, HTTP/2 without `:authority` or `Host` (RFC 9112 §3.2).
    Missing,
    Repeated,
    Invalid(BadHost),
    /// The target's authority (HTTP/2 `:authority`, an absolute-form target) and `Host` name
    /// different hosts: which one would the app believe?
    Mismatch,
    ForwardedRepeated,
    ForwardedInvalid(BadHost),
    /// A trusted proxy's `X-Forwarded-Host` names another host than `Host`: the rules would
    /// judge one and an app might route by the other.
    ForwardedMismatch,
}

impl fmt::Display for HostProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostProblem::Missing => {
                f.write_str("no Host header (HTTP/1.1 needs one; HTTP/2 needs :authority or Host)")
            }
            HostProblem::Repeated => f.write_str("more than one Host header"),
            HostProblem::Invalid(bad) => write!(f, "the Host is not a host: {}", bad.message()),
            HostProblem::Mismatch => {
                f.write_str("the target's authority and the Host header name different hosts")
            }
            HostProblem::ForwardedRepeated => f.write_str("more than one X-Forwarded-Host header"),
            HostProblem::ForwardedInvalid(bad) => {
                write!(f, "X-Forwarded-Host is not one host: {}", bad.message())
            }
            HostProblem::ForwardedMismatch => f.write_str(
                "X-Forwarded-Host and Host name different hosts (a proxy in front must pass Host through unchanged)",
            ),
        }
    }
}

/// What the peer's `X-Forwarded-Host` is to the screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardedHost {
    /// Not a trusted proxy's: it is replaced before the request goes on, never judged.
    Ignored,
    /// A trusted proxy's, on the proxy path: it must name the request's own host, so that
    /// the host judged (`Host`) is the host the app receives in either header.
    SameHost,
    /// A trusted proxy's, on the forward-auth endpoint: the original request's host, which
    /// the edge proxy may ask about by another `Host` (a central sign-in host).
    Original,
}

/// The screen's host check, once per request before anything else looks at the host:
/// exactly one valid `Host` (HTTP/1.1), or `:authority` and/or `Host` naming one host
/// (HTTP/2); and `X-Forwarded-Host` as [`ForwardedHost`] says. HTTP/1.0 may omit `Host`;
/// such a request names no host and matches no host rule.
pub fn screen(
    version: Version,
    headers: &HeaderMap,
    target: Option<&http::uri::Authority>,
    scheme: Option<&str>,
    forwarded: ForwardedHost,
) -> Result<(), HostProblem> {
    let host = only(headers, &header::HOST).ok_or(HostProblem::Repeated)?;
    let host = host.map(parse).transpose().map_err(HostProblem::Invalid)?;
    let target = target
        .map(|t| parse(t.as_str().as_bytes()))
        .transpose()
        .map_err(HostProblem::Invalid)?;
    if let (Some(target), Some(host)) = (&target, &host) {
        let default = scheme.and_then(default_port);
        if target.host != host.host || target.port.or(default) != host.port.or(default) {
            return Err(HostProblem::Mismatch);
        }
    }
    let named = match (&host, &target) {
        (Some(host), _) => Some(&host.host),
        // HTTP/1.1 needs Host even with an absolute-form target (RFC 9112 §3.2).
        (None, Some(target)) if version != Version::HTTP_11 => Some(&target.host),
        (None, _) => None,
    };
    if named.is_none() && version != Version::HTTP_10 && version != Version::HTTP_09 {
        return Err(HostProblem::Missing);
    }
    if forwarded == ForwardedHost::Ignored {
        return Ok(());
    }
    let Some(value) = only(headers, &X_FORWARDED_HOST).ok_or(HostProblem::ForwardedRepeated)?
    else {
        return Ok(());
    };
    let claimed = canonical(value).map_err(HostProblem::ForwardedInvalid)?;
    if forwarded == ForwardedHost::SameHost && named != Some(&claimed) {
        return Err(HostProblem::ForwardedMismatch);
    }
    Ok(())
}

/// The one value of `name`, `Some(None)` without one, `None` for more than one.
fn only<'h>(headers: &'h HeaderMap, name: &header::HeaderName) -> Option<Option<&'h [u8]>> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (first, None) => Some(first.map(|v| v.as_bytes())),
        _ => None,
    }
}

/// The request's host as sent (with its port): `Host`, or the target's authority (HTTP/2
/// sends `:authority` instead of `Host`). The screen has made sure that a trusted proxy's
/// `X-Forwarded-Host` names the same host, and an untrusted client's is replaced by this one
/// (`proxy::Upstream::prepare`), so this is the host the app receives either way.
pub fn judged_authority<'a>(
    headers: &'a HeaderMap,
    target: Option<&'a http::uri::Authority>,
) -> Option<&'a [u8]> {
    headers
        .get(header::HOST)
        .map(|v| v.as_bytes())
        .or_else(|| target.map(|a| a.as_str().as_bytes()))
}

/// The canonical host the rules judge (see [`judged_authority`]). `None` when the request
/// names none, or names one the screen would have refused.
pub fn judged<'a>(
    headers: &'a HeaderMap,
    target: Option<&'a http::uri::Authority>,
) -> Option<Cow<'a, str>> {
    judged_authority(headers, target).and_then(|a| canonical(a).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn canon(text: &str) -> Result<String, BadHost> {
        canonical(text.as_bytes()).map(Cow::into_owned)
    }

    #[test]
    fn hosts_are_lower_case_without_port_or_one_trailing_dot() {
        for (input, want) in [
            ("admin.example.com", "admin.example.com"),
            ("admin.example.com.", "admin.example.com"),
            ("Admin.Example.COM.:8443", "admin.example.com"),
            ("admin.example.com:80", "admin.example.com"),
            ("localhost", "localhost"),
            ("my_app:3000", "my_app"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("127.0.0.1:8080", "127.0.0.1"),
            ("[::1]", "[::1]"),
            ("[::1]:8080", "[::1]"),
            ("[0:0::1]", "[::1]"),
            ("[2001:DB8::1]:443", "[2001:db8::1]"),
            ("[::ffff:127.0.0.1]", "[::ffff:127.0.0.1]"),
            ("a1.example", "a1.example"),
            ("example.1a", "example.1a"),
        ] {
            assert_eq!(canon(input).as_deref(), Ok(want), "{input:?}");
        }
    }

    #[test]
    fn a_canonical_host_is_borrowed() {
        for input in ["admin.example.com", "admin.example.com.:443", "[::1]:80"] {
            assert!(
                matches!(canonical(input.as_bytes()), Ok(Cow::Borrowed(_))),
                "{input:?}"
            );
        }
        assert!(matches!(canonical(b"Admin.example"), Ok(Cow::Owned(_))));
    }

    #[test]
    fn what_is_not_a_host_is_refused_with_its_reason() {
        let long_label = format!("{}.example", "a".repeat(64));
        let long_name = format!("{}.example", "abcdefghi.".repeat(25));
        for (input, want) in [
            ("", BadHost::Empty),
            (".", BadHost::Empty),
            (":80", BadHost::Empty),
            ("admin.example.com..", BadHost::EmptyLabel),
            (".admin.example.com", BadHost::EmptyLabel),
            ("admin..example.com", BadHost::EmptyLabel),
            ("admin example.com", BadHost::Character),
            ("admin.example.com ", BadHost::Character),
            ("evil.example@admin.example.com", BadHost::Character),
            ("admin%2eexample.com", BadHost::Character),
            ("bücher.example", BadHost::Character),
            ("admin.example.com/x", BadHost::Character),
            ("admin.example.com\\", BadHost::Character),
            ("*.example.com", BadHost::Character),
            (long_label.as_str(), BadHost::LongLabel),
            (long_name.as_str(), BadHost::TooLong),
            ("admin.example.com:", BadHost::Port),
            ("admin.example.com:65536", BadHost::Port),
            ("admin.example.com:8o", BadHost::Port),
            ("admin.example.com:80:80", BadHost::Port),
            ("admin.example.com:+80", BadHost::Port),
            ("[::1", BadHost::Ipv6),
            ("[::1]x", BadHost::Ipv6),
            ("[fe80::1%25eth0]", BadHost::Ipv6),
            ("[127.0.0.1]", BadHost::Ipv6),
            ("[]", BadHost::Ipv6),
            ("127.1", BadHost::Number),
            ("0x7f.0.0.1", BadHost::Number),
            ("example.0x1F", BadHost::Number),
            ("2130706433", BadHost::Number),
            ("127.000.0.1", BadHost::Number),
            ("256.0.0.1", BadHost::Number),
        ] {
            assert_eq!(canon(input), Err(want), "{input:?}");
        }
        assert_eq!(canonical(b"caf\xc3\xa9.example"), Err(BadHost::Character));
        assert_eq!(canonical(b"a\0b"), Err(BadHost::Character));
    }

    #[test]
    fn ports_are_read_with_the_host() {
        assert_eq!(
            parse(b"App.example:8443"),
            Ok(Authority {
                host: "app.example".into(),
                port: Some(8443)
            })
        );
        assert_eq!(parse(b"[::1]:0").map(|a| a.port), Ok(Some(0)));
        assert_eq!(parse(b"app.example").map(|a| a.port), Ok(None));
    }

    #[test]
    fn origins_compare_by_scheme_canonical_host_and_effective_port() {
        let same = |origin: &str, scheme: &str, authority: &str| {
            Origin::parse(origin)
                .unwrap()
                .is(scheme, &parse(authority.as_bytes()).unwrap())
        };
        assert!(same("https://app.example", "https", "app.example"));
        assert!(same("https://app.example", "https", "APP.example.:443"));
        assert!(same(
            "https://app.example.:8443",
            "https",
            "app.example:8443"
        ));
        assert!(same("http://[::1]:8080", "http", "[0::1]:8080"));
        assert!(!same("https://app.example", "http", "app.example"));
        assert!(!same("https://app.example:8443", "https", "app.example"));
        assert!(!same("https://evil.example", "https", "app.example"));
        for not_an_origin in [
            "null",
            "app.example",
            "https://",
            "https://a b",
            "https://a/x",
        ] {
            assert!(Origin::parse(not_an_origin).is_none(), "{not_an_origin:?}");
        }
        let listed = Origin::parse("https://app.example").unwrap();
        assert!(listed.same(&Origin::parse("HTTPS://App.Example.:443").unwrap()));
        assert!(!listed.same(&Origin::parse("https://app.example:444").unwrap()));
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_str(value).unwrap());
        }
        h
    }

    const IGNORED: ForwardedHost = ForwardedHost::Ignored;

    #[test]
    fn the_screen_wants_one_valid_host_per_request() {
        let one = headers(&[("host", "app.example")]);
        let v11 = Version::HTTP_11;
        assert_eq!(screen(v11, &one, None, None, IGNORED), Ok(()));
        assert_eq!(
            screen(v11, &HeaderMap::new(), None, None, IGNORED),
            Err(HostProblem::Missing)
        );
        assert_eq!(
            screen(Version::HTTP_10, &HeaderMap::new(), None, None, IGNORED),
            Ok(())
        );
        let two = headers(&[("host", "app.example"), ("host", "app.example")]);
        assert_eq!(
            screen(v11, &two, None, None, IGNORED),
            Err(HostProblem::Repeated)
        );
        let bad = headers(&[("host", "app.example..")]);
        assert_eq!(
            screen(v11, &bad, None, None, IGNORED),
            Err(HostProblem::Invalid(BadHost::EmptyLabel))
        );
    }

    #[test]
    fn the_authority_and_host_must_name_one_host() {
        let authority: http::uri::Authority = "app.example".parse().unwrap();
        let h2 = Version::HTTP_2;
        let https = Some("https");
        assert_eq!(
            screen(h2, &HeaderMap::new(), Some(&authority), https, IGNORED),
            Ok(())
        );
        assert_eq!(
            screen(h2, &HeaderMap::new(), None, https, IGNORED),
            Err(HostProblem::Missing)
        );
        for same in ["app.example", "APP.example.", "app.example:443"] {
            let h = headers(&[("host", same)]);
            assert_eq!(
                screen(h2, &h, Some(&authority), https, IGNORED),
                Ok(()),
                "{same}"
            );
        }
        for other in ["admin.example", "app.example:8443"] {
            let h = headers(&[("host", other)]);
            assert_eq!(
                screen(h2, &h, Some(&authority), https, IGNORED),
                Err(HostProblem::Mismatch),
                "{other}"
            );
        }
        // An absolute-form HTTP/1.1 target still needs its Host.
        assert_eq!(
            screen(
                Version::HTTP_11,
                &HeaderMap::new(),
                Some(&authority),
                None,
                IGNORED
            ),
            Err(HostProblem::Missing)
        );
        let userinfo: http::uri::Authority = "evil@app.example".parse().unwrap();
        assert_eq!(
            screen(h2, &HeaderMap::new(), Some(&userinfo), https, IGNORED),
            Err(HostProblem::Invalid(BadHost::Character))
        );
    }

    #[test]
    fn a_trusted_proxys_forwarded_host_must_name_the_host_judged() {
        let v11 = Version::HTTP_11;
        let same = ForwardedHost::SameHost;
        let agreeing = headers(&[
            ("host", "app.example"),
            ("x-forwarded-host", "App.Example.:443"),
        ]);
        assert_eq!(screen(v11, &agreeing, None, None, same), Ok(()));
        let other = headers(&[
            ("host", "app.example"),
            ("x-forwarded-host", "admin.example"),
        ]);
        assert_eq!(
            screen(v11, &other, None, None, same),
            Err(HostProblem::ForwardedMismatch)
        );
        // Forward-auth asks about another host than its own; an untrusted client's is replaced.
        for forwarded in [ForwardedHost::Original, IGNORED] {
            assert_eq!(screen(v11, &other, None, None, forwarded), Ok(()));
        }
        let list = headers(&[("host", "a"), ("x-forwarded-host", "a, b.example")]);
        assert_eq!(
            screen(v11, &list, None, None, ForwardedHost::Original),
            Err(HostProblem::ForwardedInvalid(BadHost::Character))
        );
        assert_eq!(screen(v11, &list, None, None, IGNORED), Ok(()));
        let two = headers(&[
            ("host", "a"),
            ("x-forwarded-host", "a"),
            ("x-forwarded-host", "a"),
        ]);
        assert_eq!(
            screen(v11, &two, None, None, same),
            Err(HostProblem::ForwardedRepeated)
        );
        assert_eq!(judged(&other, None).as_deref(), Some("app.example"));
        let authority: http::uri::Authority = "h2.example:443".parse().unwrap();
        assert_eq!(
            judged(&HeaderMap::new(), Some(&authority)).as_deref(),
            Some("h2.example")
        );
    }

    #[test]
    fn dotted_quad_answers_as_the_standard_parser_does() {
        let mut cases: Vec<String> = [
            "127.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "256.0.0.1",
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            "1.2.3.04",
            "1..2.3",
            ".1.2.3",
            "1.2.3.",
            "1.2.3.4a",
            "00.0.0.0",
            "1000.1.1.1",
            "999.1.1.1",
            "",
            "1",
            "12.34.56.789",
            "0.0.0.00",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for a in [
            "0", "1", "9", "10", "99", "100", "199", "249", "250", "255", "256", "300", "007",
        ] {
            cases.push(format!("{a}.{a}.1.{a}"));
        }
        for case in cases {
            assert_eq!(
                dotted_quad(case.as_bytes()),
                case.parse::<Ipv4Addr>().is_ok(),
                "{case:?}"
            );
        }
    }
}
