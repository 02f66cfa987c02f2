//! Open redirects after login (the class of oauth2-proxy CVE-2020-5233 and CVE-2020-11053):
//! whatever `rd` an attacker puts in a login link, a successful login only ever redirects to
//! a path on this site, and `rd` can't inject headers.
//!
//! The payloads are oauth2-proxy's own open-redirect list (tests/data, MIT), sent both as
//! written and percent-decoded, through the real login form over real HTTP.

use crate::common::*;
use http::StatusCode;

/// What a browser does with a Location value before resolving it: drops tabs and newlines,
/// reads `\` as `/`. The result must be a path on this site: `/` but not `//`.
fn stays_on_site(location: &str) -> bool {
    let cleaned: String = location
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .map(|c| if c == '\\' { '/' } else { c })
        .collect();
    cleaned.starts_with('/') && !cleaned.starts_with("//")
}

fn payloads() -> Vec<String> {
    let list = include_str!("../data/oauth2-proxy-openredirects.txt");
    let mut out = Vec::new();
    for line in list.lines().filter(|l| !l.trim().is_empty()) {
        out.push(line.to_string());
        let decoded: String =
            form_urlencoded::parse(format!("x={}", line.replace('+', "%2B")).as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
        if decoded != line {
            out.push(decoded);
        }
    }
    out
}

#[tokio::test]
async fn no_open_redirect_payload_leaves_the_site_after_login() {
    let (_upstream, proxy) = start().await;
    let payloads = payloads();
    assert!(payloads.len() > 600, "only {} payloads", payloads.len());
    let mut kept = 0;
    for rd in &payloads {
        let res = post_login(
            &proxy,
            &[("username", USER), ("password", PASSWORD), ("rd", rd)],
            &[],
        )
        .await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{rd:?}");
        let location = res.header("location").unwrap();
        assert!(stays_on_site(location), "{rd:?} -> {location:?}");
        assert_eq!(res.set_cookies().len(), 1, "{rd:?}: one Set-Cookie, ours");
        if location != "/" {
            kept += 1;
        }
    }
    // The list also holds harmless same-site paths; keeping those proves the check is not
    // simply "always /".
    assert!(kept > 0, "no payload kept at all");
}

#[tokio::test]
async fn the_login_form_only_carries_a_safe_return_address() {
    let (_upstream, proxy) = start().await;
    for rd in payloads().iter().step_by(7) {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("rd", rd)
            .finish();
        let res = get(proxy.addr, &format!("/.sessiongate/login?{query}"), &[]).await;
        assert_eq!(res.status, StatusCode::OK, "{rd:?}");
        let html = res.text();
        let field = r#"name="rd" value=""#;
        let start = html.find(field).expect("an rd field") + field.len();
        let value = &html[start..start + html[start..].find('"').unwrap()];
        let unescaped = value
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&");
        assert!(stays_on_site(&unescaped), "{rd:?} -> {value:?}");
    }
}

#[tokio::test]
async fn crlf_tricks_and_overlong_return_addresses_fall_back_to_root() {
    let (_upstream, proxy) = start().await;
    let long = format!("/{}", "a".repeat(3000));
    for rd in [
        "/x\r\nSet-Cookie: pwned=1",
        "/x\nLocation: https://evil.example",
        "/%0d%0aSet-Cookie:%20pwned=1",
        "/\r/evil.example",
        "/\u{2028}/evil.example",
        "/\u{0}/evil.example",
        long.as_str(),
    ] {
        let res = post_login(
            &proxy,
            &[("username", USER), ("password", PASSWORD), ("rd", rd)],
            &[],
        )
        .await;
        let location = res.header("location").unwrap();
        assert!(
            location == "/" || location == "/%0d%0aSet-Cookie:%20pwned=1",
            "{rd:?} -> {location:?}"
        );
        assert_eq!(res.set_cookies().len(), 1);
        assert!(res.header("pwned").is_none());
    }
}

/// The redirect to the login form carries the original target as `rd`; a target that looks
/// like another host comes back as a path on this site.
#[tokio::test]
async fn the_login_redirect_round_trips_only_local_paths() {
    let (_upstream, proxy) = start().await;
    for (target, want_rd) in [
        ("/reports?x=1", "/reports?x=1"),
        ("//evil.example/x", "//evil.example/x"),
    ] {
        let res = get(proxy.addr, target, &[("accept", "text/html")]).await;
        assert_eq!(res.status, StatusCode::FOUND, "{target}");
        let location = res.header("location").unwrap();
        let rd: String = form_urlencoded::parse(location.split_once('?').unwrap().1.as_bytes())
            .find(|(k, _)| k == "rd")
            .unwrap()
            .1
            .into_owned();
        assert_eq!(rd, want_rd);
        let login = post_login(
            &proxy,
            &[("username", USER), ("password", PASSWORD), ("rd", &rd)],
            &[],
        )
        .await;
        assert!(stays_on_site(login.header("location").unwrap()), "{target}");
    }
}
