//! The upgrade decision: what an HTTP/1.1 `Upgrade` request may become (relayed, refused, or
//! an ordinary request), made once per request; and whether a browser's upgrade comes from a
//! page this site allows.
//!
//! Everything after a `101` is relayed unseen, so only protocols whose later traffic carries
//! no further HTTP requests may be relayed: `websocket` by default, others only when listed in
//! `upstream.upgrades`, and `h2c` never (after it, the client sends HTTP/2 requests straight to
//! the app, past the gate).

use http::{HeaderMap, HeaderValue, Request, Version, header};

/// What a request's `Upgrade` header makes of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upgrade<'a> {
    /// No `Upgrade` header: an ordinary request.
    None,
    /// An `Upgrade` header on a request that does not ask to switch (no `upgrade` token in
    /// `Connection`, or not HTTP/1.1): served as an ordinary request, and the app never sees
    /// the header (it is hop-by-hop).
    Ignored,
    /// An HTTP/1.1 upgrade to exactly one protocol listed in `upstream.upgrades`: the entry it
    /// matched (lower case), which is the `Upgrade` the app receives.
    Relay(&'a HeaderValue),
    /// Answered 400 and never forwarded.
    Refused(Refused),
}

impl Upgrade<'_> {
    /// The request carried an `Upgrade` header. Unless it is answered `101`, its connection is
    /// closed after the answer: bytes the client sent after it (early frames of the new
    /// protocol, or a smuggled request) are never read as another request.
    pub fn asked(&self) -> bool {
        !matches!(self, Upgrade::None)
    }
}

/// Why an upgrade is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "upgrade to h2c refused: sessiongate never relays h2c, whatever upstream.upgrades lists (the HTTP/2 requests inside it would reach the app unchecked)"
    )]
    H2c,
    #[error(
        "upgrade refused: the Upgrade header must name exactly one protocol, one of upstream.upgrades"
    )]
    NotOne,
    #[error("upgrade to {} refused: the protocol is not listed in upstream.upgrades", text(.0))]
    NotListed(HeaderValue),
}

/// A `NotListed` protocol is a token (checked before), so it is always text.
fn text(protocol: &HeaderValue) -> &str {
    protocol.to_str().unwrap_or("?")
}

/// The upgrade decision for `req`, every consumer's: the proxy path (public and signed-in
/// alike) and sessiongate's own endpoints, forward-auth among them. `allowed` is
/// `upstream.upgrades`, lower case. An ordinary request costs one header lookup.
pub fn decide<'a, B>(req: &Request<B>, allowed: &'a [HeaderValue]) -> Upgrade<'a> {
    let headers = req.headers();
    let mut protocols = headers.get_all(header::UPGRADE).iter();
    let Some(first) = protocols.next() else {
        return Upgrade::None;
    };
    // h2c is refused wherever it appears, in any case and on any request: an app that
    // accepts it would take the connection's later requests from the client directly.
    if headers
        .get_all(header::UPGRADE)
        .iter()
        .any(|v| names_h2c(v.as_bytes()))
    {
        return Upgrade::Refused(Refused::H2c);
    }
    if req.version() != Version::HTTP_11 || !connection_upgrade(headers) {
        return Upgrade::Ignored;
    }
    // One protocol, one header line: a list leaves the choice to the app, which may pick one
    // that was not judged.
    if protocols.next().is_some() || !is_token(first.as_bytes()) {
        return Upgrade::Refused(Refused::NotOne);
    }
    match allowed
        .iter()
        .find(|p| p.as_bytes().eq_ignore_ascii_case(first.as_bytes()))
    {
        Some(listed) => Upgrade::Relay(listed),
        None => Upgrade::Refused(Refused::NotListed(first.clone())),
    }
}

/// `upgrade` is among the `Connection` tokens.
fn connection_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
}

/// Some element of an `Upgrade` list is h2c (`protocol-name ["/" version]`, any case).
fn names_h2c(value: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|element| {
        let name = element.split(|&b| b == b'/').next().unwrap_or_default();
        name.trim_ascii().eq_ignore_ascii_case(b"h2c")
    })
}

/// An HTTP token (RFC 9110 §5.6.2): what a protocol name in `upstream.upgrades` must be, and
/// what a relayed `Upgrade` header must be exactly.
pub fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Browsers send cookies on cross-site WebSocket handshakes, so a page on another site could
/// open a socket as the signed-in user. An upgrade whose `Origin` is neither this site's own
/// (the scheme the browser used and the host the rules judge, `host::judged_authority`) nor
/// listed in `auth.websocket_origins` is refused; hosts compare in canonical form, ports by
/// value (a scheme's default when none is written). Without `Origin` (not a browser) it is
/// judged by its session alone. `trusted`: the peer is a trusted proxy; `proto`: the scheme the
/// peer used.
pub fn origin_allowed(headers: &HeaderMap, trusted: bool, proto: &str, listed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Some(origin) = origin
        .to_str()
        .ok()
        .and_then(crate::http::host::Origin::parse)
    else {
        return false;
    };
    if listed
        .iter()
        .any(|l| crate::http::host::Origin::parse(l).is_some_and(|l| l.same(&origin)))
    {
        return true;
    }
    // Behind a trusted TLS-terminating proxy the browser's scheme is the proxy's.
    let scheme = trusted
        .then(|| headers.get(crate::http::headers::X_FORWARDED_PROTO))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .unwrap_or(proto);
    // An upgrade is HTTP/1.1, whose Host the screen requires: no target authority needed.
    crate::http::host::judged_authority(headers, None)
        .and_then(|a| crate::http::host::parse(a).ok())
        .is_some_and(|authority| origin.is(scheme, &authority))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn websocket_only() -> Vec<HeaderValue> {
        vec![HeaderValue::from_static("websocket")]
    }

    fn request(version: Version, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().version(version);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    fn decided(connection: &str, upgrade: &[&str]) -> Upgrade<'static> {
        static ALLOWED: std::sync::OnceLock<Vec<HeaderValue>> = std::sync::OnceLock::new();
        let allowed = ALLOWED.get_or_init(|| {
            vec![
                HeaderValue::from_static("websocket"),
                HeaderValue::from_static("my-proto"),
            ]
        });
        let mut headers: Vec<(&str, &str)> = vec![("connection", connection)];
        headers.extend(upgrade.iter().map(|u| ("upgrade", *u)));
        decide(&request(Version::HTTP_11, &headers), allowed)
    }

    #[test]
    fn an_ordinary_request_is_none() {
        let req = request(Version::HTTP_11, &[("connection", "upgrade")]);
        assert_eq!(decide(&req, &websocket_only()), Upgrade::None);
        assert!(!Upgrade::None.asked());
    }

    #[test]
    fn one_listed_protocol_is_relayed_as_listed() {
        for spelled in ["websocket", "WebSocket", "WEBSOCKET"] {
            let Upgrade::Relay(p) = decided("Upgrade", &[spelled]) else {
                panic!("{spelled} not relayed");
            };
            assert_eq!(p, "websocket");
        }
        assert!(matches!(
            decided("keep-alive, Upgrade", &["My-Proto"]),
            Upgrade::Relay(p) if p == "my-proto"
        ));
    }

    #[test]
    fn h2c_is_refused_in_any_case_position_or_connection() {
        for upgrade in [
            &["h2c"][..],
            &["H2C"],
            &["H2c/2"],
            &["websocket, h2c"],
            &["h2c, websocket"],
            &["websocket", "h2c"],
            &[" h2c ,foo"],
        ] {
            for connection in ["Upgrade, HTTP2-Settings", "keep-alive", "HTTP2-Settings"] {
                assert_eq!(
                    decided(connection, upgrade),
                    Upgrade::Refused(Refused::H2c),
                    "{upgrade:?} with Connection: {connection}"
                );
            }
        }
        // Over HTTP/1.0 too: h2c is never forwarded.
        let req = request(
            Version::HTTP_10,
            &[("connection", "upgrade"), ("upgrade", "h2c")],
        );
        assert_eq!(
            decide(&req, &websocket_only()),
            Upgrade::Refused(Refused::H2c)
        );
    }

    #[test]
    fn anything_but_exactly_one_listed_token_is_refused() {
        for upgrade in [
            &["websocket, my-proto"][..],
            &["websocket", "websocket"],
            &["websocket,"],
            &["websocket/13"],
            &["\"websocket\""],
            &[""],
        ] {
            assert_eq!(
                decided("upgrade", upgrade),
                Upgrade::Refused(Refused::NotOne),
                "{upgrade:?}"
            );
        }
        assert_eq!(
            decided("upgrade", &["TLS"]),
            Upgrade::Refused(Refused::NotListed(HeaderValue::from_static("TLS")))
        );
        assert_eq!(
            Refused::NotListed(HeaderValue::from_static("TLS")).to_string(),
            "upgrade to TLS refused: the protocol is not listed in upstream.upgrades"
        );
    }

    #[test]
    fn an_upgrade_header_without_the_connection_token_or_http_1_1_is_ignored() {
        assert_eq!(decided("keep-alive", &["websocket"]), Upgrade::Ignored);
        assert_eq!(decided("upgraded", &["TLS"]), Upgrade::Ignored);
        assert!(Upgrade::Ignored.asked());
        for version in [Version::HTTP_10, Version::HTTP_2] {
            let req = request(
                version,
                &[("connection", "upgrade"), ("upgrade", "websocket")],
            );
            assert_eq!(decide(&req, &websocket_only()), Upgrade::Ignored);
        }
    }

    #[test]
    fn tokens_are_http_tokens() {
        assert!(is_token(b"websocket"));
        assert!(is_token(b"my-proto.v2"));
        for bad in [&b""[..], b"a b", b"a/1", b"a,b", b"\"a\"", b"caf\xc3\xa9"] {
            assert!(!is_token(bad), "{bad:?}");
        }
    }
}
