//! Which requests ask to switch protocols (WebSocket handshakes and other HTTP/1.1 upgrades),
//! and whether a browser's upgrade comes from a page this site allows.

use http::{HeaderMap, HeaderValue, Request, Version, header};

use crate::conn::ConnInfo;

/// The protocol an HTTP/1.1 request asks to switch to (`Upgrade`, with `upgrade` among the
/// `Connection` tokens), or `None` for an ordinary request.
pub fn requested<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let protocol = req.headers().get(header::UPGRADE)?;
    let asks = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| protocol.clone())
}

/// Browsers send cookies on cross-site WebSocket handshakes, so a page on another site could
/// open a socket as the signed-in user. An upgrade whose `Origin` is neither this site's own
/// (the scheme the browser used and the host the rules judge, `host::judged_authority`) nor
/// listed in `auth.websocket_origins` is refused; hosts compare in canonical form, ports by
/// value (a scheme's default when none is written). Without `Origin` (not a browser) it is
/// judged by its session alone.
pub fn origin_allowed(headers: &HeaderMap, conn: &ConnInfo, listed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Some(origin) = origin.to_str().ok().and_then(crate::host::Origin::parse) else {
        return false;
    };
    if listed
        .iter()
        .any(|l| crate::host::Origin::parse(l).is_some_and(|l| l.same(&origin)))
    {
        return true;
    }
    // Behind a trusted TLS-terminating proxy the browser's scheme is the proxy's.
    let scheme = conn
        .trusted
        .then(|| headers.get(crate::headers::X_FORWARDED_PROTO))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .unwrap_or(conn.proto);
    // An upgrade is HTTP/1.1, whose Host the screen requires: no target authority needed.
    crate::host::judged_authority(headers, None)
        .and_then(|a| crate::host::parse(a).ok())
        .is_some_and(|authority| origin.is(scheme, &authority))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade_req(connection: &str, version: Version) -> Request<()> {
        Request::builder()
            .version(version)
            .header(header::CONNECTION, connection)
            .header(header::UPGRADE, "websocket")
            .body(())
            .unwrap()
    }

    #[test]
    fn an_upgrade_needs_the_connection_token_and_http_1_1() {
        assert!(requested(&upgrade_req("Upgrade", Version::HTTP_11)).is_some());
        assert!(requested(&upgrade_req("keep-alive, upgrade", Version::HTTP_11)).is_some());
        assert!(requested(&upgrade_req("keep-alive", Version::HTTP_11)).is_none());
        assert!(requested(&upgrade_req("upgrade", Version::HTTP_10)).is_none());
        assert!(requested(&upgrade_req("upgrade", Version::HTTP_2)).is_none());
    }
}
