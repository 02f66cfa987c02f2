//! Pure header helpers for the proxy path: hop-by-hop removal, identity-header stripping,
//! forwarding headers, and removing sessiongate's own cookie from what the upstream sees.
//!
//! `X-Forwarded-Uri`, `X-Original-URL` and `X-Rewrite-URL` are removed from every request:
//! some proxies set the first (Traefik, Authelia), and frameworks such as Symfony, Zend and
//! IIS URL Rewrite route by the others instead of the request line, so a client could ask
//! for `/public` and be served `/admin`. The upstream routes by the path that was authorised.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// Names an operator may not choose as the identity header: HTTP framing and routing
/// headers, and the forwarding headers sessiongate sets itself.
pub fn is_reserved(name: &HeaderName) -> bool {
    is_hop_by_hop(name.as_str())
        || name == header::HOST
        || name == header::COOKIE
        || name == header::SET_COOKIE
        || name == header::CONTENT_LENGTH
        || name == header::AUTHORIZATION
        || name == X_FORWARDED_FOR
        || name == X_FORWARDED_PROTO
        || name == X_FORWARDED_HOST
        || matches!(
            name.as_str(),
            "forwarded" | "x-real-ip" | "x-forwarded-uri" | "x-original-url" | "x-rewrite-url"
        )
}

/// Refuses message framing that two HTTP parsers could read differently (request
/// smuggling): a Content-Length together with Transfer-Encoding, more than one
/// Content-Length, or one that is not a plain number. hyper's HTTP/1 parser already refuses
/// or normalizes all of these today (it drops a length that comes with chunked, keeps one of
/// equal lengths, refuses the rest); this keeps the guarantee for every protocol and parser
/// version at the cost of one lookup (tests/it/security_smuggling.rs shows the wire).
pub fn check_framing(headers: &HeaderMap) -> Result<(), &'static str> {
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    let Some(length) = lengths.next() else {
        return Ok(());
    };
    if lengths.next().is_some() {
        return Err("more than one Content-Length header");
    }
    // hyper reads "5, 5" as 5; an upstream might not. Only a plain number is passed on.
    if length.is_empty() || !length.as_bytes().iter().all(u8::is_ascii_digit) {
        return Err("a Content-Length that is not a plain number");
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return Err("both Content-Length and Transfer-Encoding");
    }
    Ok(())
}

/// `X-Forwarded-For: <what the trusted proxy sent>, <the proxy's own address>`, as one header.
pub fn append_forwarded_for(headers: &mut HeaderMap, peer: &HeaderValue) {
    let mut chain: Vec<u8> = Vec::new();
    for v in headers.get_all(X_FORWARDED_FOR) {
        if !chain.is_empty() {
            chain.extend_from_slice(b", ");
        }
        chain.extend_from_slice(v.as_bytes());
    }
    if !chain.is_empty() {
        chain.extend_from_slice(b", ");
    }
    chain.extend_from_slice(peer.as_bytes());
    let value = HeaderValue::from_bytes(&chain).unwrap_or_else(|_| peer.clone());
    headers.insert(X_FORWARDED_FOR, value);
}

/// Hop-by-hop headers (RFC 9110 §7.6.1, plus the non-standard ones proxies commonly see,
/// `Upgrade`: an upgrade request gets it back from the tunnel path (`handler::upstream`), and
/// `HTTP2-Settings`, which belongs to an h2c upgrade of this one hop, RFC 7540 §3.2.1, and
/// must not reach the app even when the client left it out of `Connection`).
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "http2-settings"
    )
}

/// Removes every header `doomed` picks, plus every header the `Connection` header names, in
/// one pass over the names: the usual request carries none of them, and one pass with a
/// `match` costs less than a lookup per name that might be there.
fn remove_where(headers: &mut HeaderMap, doomed: impl Fn(&HeaderName) -> bool) {
    let mut gone: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if doomed(name) {
            gone.push(name.clone());
        }
    }
    // Names listed in Connection. The common values (`keep-alive`, `close`) name nothing
    // else, and the header itself is hop-by-hop, so it is always in `gone` when present.
    if !gone.is_empty() {
        for value in headers.get_all(header::CONNECTION) {
            let Ok(text) = value.to_str() else { continue };
            for listed in text.split(',') {
                let listed = listed.trim();
                if listed.eq_ignore_ascii_case("keep-alive") || listed.eq_ignore_ascii_case("close")
                {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(listed.as_bytes()) {
                    gone.push(name);
                }
            }
        }
    }
    for name in gone {
        headers.remove(name);
    }
}

/// Removes hop-by-hop headers, including every header the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    remove_where(headers, |name| is_hop_by_hop(name.as_str()));
}

/// Gives an answer without `Cache-Control` this one (`upstream.default_cache_control`): a
/// shared cache in front (a CDN) would otherwise be free to keep a signed-in page and serve it
/// to anyone. An answer with its own is the app's decision and keeps it as sent.
pub fn default_cache_control(headers: &mut HeaderMap, value: &HeaderValue) {
    if let header::Entry::Vacant(slot) = headers.entry(header::CACHE_CONTROL) {
        slot.insert(value.clone());
    }
}

/// Cleans a request for the upstream, in one pass: hop-by-hop headers; every client copy
/// of the identity and groups headers in any spelling; headers that override the path; and,
/// unless the peer is a trusted proxy, `Forwarded` and `X-Real-IP` (X-Forwarded-For/-Proto/
/// -Host are overwritten by the caller).
pub fn scrub_request(
    headers: &mut HeaderMap,
    identity: &HeaderName,
    groups: &HeaderName,
    trusted_peer: bool,
) {
    remove_where(headers, |name| match name.as_str() {
        n if is_hop_by_hop(n) => true,
        "x-forwarded-uri" | "x-original-url" | "x-rewrite-url" => true,
        "forwarded" | "x-real-ip" => !trusted_peer,
        _ => same_name(name, identity) || same_name(name, groups),
    });
}

/// True when a backend would read `a` as the same header as `b`: names are case-insensitive
/// (the map already lowercases them) and many frameworks (CGI, PHP, Rails, Django) turn `-`
/// into `_`, so `X_Forwarded_User` counts as `X-Forwarded-User`.
pub fn same_name(a: &HeaderName, b: &HeaderName) -> bool {
    let (a, b) = (a.as_str().as_bytes(), b.as_str().as_bytes());
    a.len() == b.len()
        && a.iter().zip(b).all(|(&x, &y)| {
            let norm = |c: u8| if c == b'_' { b'-' } else { c };
            norm(x) == norm(y)
        })
}

/// Iterates the `name=value` pairs of a Cookie header as (name, value, whole trimmed pair).
/// Browsers join pairs with "; " and no quoting, so splitting is all the parsing there is;
/// the raw pair is kept so other cookies reach the upstream byte for byte. Bytes, not text:
/// a header value may hold any byte but controls, and a pair next to one is still a pair.
pub fn cookie_pairs(header: &[u8]) -> impl Iterator<Item = (&[u8], &[u8], &[u8])> {
    header.split(|&b| b == b';').filter_map(|pair| {
        let pair = pair.trim_ascii();
        if pair.is_empty() {
            return None;
        }
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &b""[..]),
        };
        Some((name.trim_ascii(), value.trim_ascii(), pair))
    })
}

/// The value of the one cookie called `name` over every Cookie header of a request, or `None`
/// when there is none or more than one. Every header counts, text or not: a second cookie of
/// ours on a line of other bytes must not be skipped, or the first would be trusted alone.
pub fn single_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    let mut lines = headers.get_all(header::COOKIE).iter();
    let first = lines.next()?;
    // The common case, a browser whose only cookie here is ours: one line, one pair, found
    // without splitting (about 700 instructions a request less than the loop below).
    if lines.next().is_none()
        && let Some(value) = only_cookie(first.as_bytes(), name.as_bytes())
    {
        return Some(value);
    }
    let mut found = None;
    for value in headers.get_all(header::COOKIE) {
        for (n, v, _) in cookie_pairs(value.as_bytes()) {
            if n == name.as_bytes() {
                if found.is_some() {
                    return None;
                }
                found = Some(v);
            }
        }
    }
    found
}

/// Removes the cookie called `name` from every Cookie header, keeping all others.
pub fn strip_cookie(headers: &mut HeaderMap, name: &str) {
    let mut values = headers.get_all(header::COOKIE).iter();
    let Some(first) = values.next() else {
        return;
    };
    // The common case, an app that sets no cookies of its own: one Cookie header holding our
    // cookie alone. It goes without being split and rebuilt.
    if values.next().is_none() && only_cookie(first.as_bytes(), name.as_bytes()).is_some() {
        headers.remove(header::COOKIE);
        return;
    }
    let mut kept: Vec<&[u8]> = Vec::new();
    let mut found = false;
    for value in headers.get_all(header::COOKIE) {
        if value.to_str().is_err() {
            // Not text: it may hold our cookie, and a lenient backend parser might read it,
            // so drop it rather than forward something we can't vouch for.
            found = true;
            continue;
        }
        for (n, _, pair) in cookie_pairs(value.as_bytes()) {
            if n == name.as_bytes() {
                found = true;
            } else {
                kept.push(pair);
            }
        }
    }
    if !found {
        return;
    }
    let joined = kept.join(&b"; "[..]);
    headers.remove(header::COOKIE);
    if !joined.is_empty()
        && let Ok(v) = HeaderValue::from_bytes(&joined)
    {
        headers.insert(header::COOKIE, v);
    }
}

/// The value when `line` is a single `name=value` pair (surrounding spaces aside), as
/// [`cookie_pairs`] would read it; `None` for anything else, which the caller then splits.
fn only_cookie<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let line = line.trim_ascii();
    let rest = line.strip_prefix(name)?.strip_prefix(b"=")?;
    (!rest.contains(&b';')).then(|| rest.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret, Upgrade"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("te", "trailers"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn identity_and_groups_header_spoofs_in_any_spelling_are_removed() {
        let identity = HeaderName::from_static("x-forwarded-user");
        let groups = HeaderName::from_static("x-forwarded-groups");
        let mut h = map(&[
            ("X-Forwarded-User", "admin"),
            ("x-forwarded-user", "root"),
            ("x_forwarded_user", "admin"),
            ("X_Forwarded-User", "admin"),
            ("X-Forwarded-Groups", "admins"),
            ("x_forwarded_groups", "admins"),
            ("x-forwarded-users", "kept"),
            ("x_other", "kept"),
        ]);
        scrub_request(&mut h, &identity, &groups, false);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(h.contains_key("x-forwarded-users"));
        assert!(h.contains_key("x_other"));
    }

    #[test]
    fn own_cookie_is_stripped_and_others_kept() {
        let mut h = map(&[
            ("cookie", "a=1; __Host-sessiongate=abc.def; b=2"),
            ("cookie", "__Host-sessiongate=x"),
        ]);
        strip_cookie(&mut h, "__Host-sessiongate");
        assert_eq!(h.get_all("cookie").iter().count(), 1);
        assert_eq!(h["cookie"], "a=1; b=2");

        for alone in [
            "__Host-sessiongate=abc",
            " __Host-sessiongate=abc ",
            "__Host-sessiongate=abc;",
        ] {
            let mut only = map(&[("cookie", alone)]);
            strip_cookie(&mut only, "__Host-sessiongate");
            assert!(!only.contains_key("cookie"), "{alone:?}");
        }
        let mut longer = map(&[("cookie", "__Host-sessiongatex=abc")]);
        strip_cookie(&mut longer, "__Host-sessiongate");
        assert_eq!(longer["cookie"], "__Host-sessiongatex=abc");

        let mut other = map(&[("cookie", "sessiongate2=abc")]);
        strip_cookie(&mut other, "sessiongate");
        assert_eq!(other["cookie"], "sessiongate2=abc");
    }

    #[test]
    fn cookie_pairs_trim_and_tolerate_empty_segments() {
        let pairs: Vec<_> = cookie_pairs(b" a = 1 ;;b=2; flag").collect();
        assert_eq!(
            pairs,
            vec![
                (&b"a"[..], &b"1"[..], &b"a = 1"[..]),
                (&b"b"[..], &b"2"[..], &b"b=2"[..]),
                (&b"flag"[..], &b""[..], &b"flag"[..])
            ]
        );
    }

    #[test]
    fn one_cookie_of_ours_is_counted_over_every_line_text_or_not() {
        let line = |bytes: &[u8]| HeaderValue::from_bytes(bytes).unwrap();
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, line(b"a=1; sid=first"));
        assert_eq!(single_cookie(&h, "sid"), Some(&b"first"[..]));
        assert_eq!(single_cookie(&h, "si"), None);
        h.append(header::COOKIE, line(b"b=\xff\xfe; sid=second"));
        assert_eq!(
            single_cookie(&h, "sid"),
            None,
            "a second one on a line of other bytes"
        );

        let mut h = HeaderMap::new();
        h.append(header::COOKIE, line(b"x=\xc3\x28; sid=only"));
        assert_eq!(single_cookie(&h, "sid"), Some(&b"only"[..]));
        assert_eq!(single_cookie(&HeaderMap::new(), "sid"), None);

        // One line with one pair takes the short way; it must read as the loop would.
        for (alone, want) in [
            (&b"sid=abc"[..], Some(&b"abc"[..])),
            (b" sid=abc ", Some(b"abc")),
            (b"sid=abc;", Some(b"abc")),
            (b"sid =abc", Some(b"abc")),
            (b"sid=", Some(b"")),
            (b"sidx=abc", None),
            (b"xsid=abc", None),
            (b"sid=a; sid=b", None),
        ] {
            let mut h = HeaderMap::new();
            h.append(header::COOKIE, line(alone));
            assert_eq!(single_cookie(&h, "sid"), want, "{alone:?}");
        }
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        assert_eq!(check_framing(&map(&[("content-length", "5")])), Ok(()));
        assert_eq!(
            check_framing(&map(&[("transfer-encoding", "chunked")])),
            Ok(())
        );
        assert_eq!(check_framing(&map(&[])), Ok(()));
        assert!(check_framing(&map(&[("content-length", "5"), ("content-length", "5")])).is_err());
        assert!(check_framing(&map(&[("content-length", "5, 5")])).is_err());
        for order in [
            [("transfer-encoding", "chunked"), ("content-length", "5")],
            [("content-length", "5"), ("transfer-encoding", "chunked")],
        ] {
            assert!(check_framing(&map(&order)).is_err());
        }
    }

    #[test]
    fn reserved_names_cannot_be_the_identity_header() {
        assert!(is_reserved(&header::HOST));
        assert!(is_reserved(&X_FORWARDED_FOR));
        assert!(!is_reserved(&HeaderName::from_static("x-forwarded-user")));
    }

    #[test]
    fn default_cache_control_fills_only_an_absent_header() {
        let private = HeaderValue::from_static("private");
        let mut none = map(&[("content-type", "text/html")]);
        default_cache_control(&mut none, &private);
        assert_eq!(
            none.get_all(header::CACHE_CONTROL)
                .iter()
                .collect::<Vec<_>>(),
            [&private]
        );

        let mut own = map(&[
            ("cache-control", "public, max-age=60"),
            ("cache-control", "s-maxage=5"),
        ]);
        default_cache_control(&mut own, &private);
        assert_eq!(
            own.get_all(header::CACHE_CONTROL)
                .iter()
                .collect::<Vec<_>>(),
            ["public, max-age=60", "s-maxage=5"]
        );
        // Even an empty one is the app's.
        let mut empty = map(&[("cache-control", "")]);
        default_cache_control(&mut empty, &private);
        assert_eq!(empty.get(header::CACHE_CONTROL).unwrap(), "");
    }
}
