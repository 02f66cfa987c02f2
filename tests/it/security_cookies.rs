//! Cookie attacks: malformed, truncated, oversized, duplicated, non-UTF-8, signed-but-never-
//! issued and signed-for-another-name values all mean "no session": a 401 (or the login
//! redirect), never a 500, never a store entry, never a forwarded request.

use crate::common::*;
use http::StatusCode;
use sessiongate::session::{CookieSigner, SessionId};

fn status(response: &str) -> u16 {
    response[9..12].parse().unwrap()
}

#[tokio::test]
async fn no_bad_cookie_is_a_session() {
    let (upstream, proxy) = start().await;
    let good = login(&proxy, USER, PASSWORD).await;
    let (name, value) = good.split_once('=').unwrap();
    let seen = upstream.requests();

    let never_issued = proxy.app.signer.sign(&SessionId::generate());
    let other_name =
        CookieSigner::new(SECRET.as_bytes(), "__Host-other").sign(&SessionId::generate());
    let other_key = CookieSigner::new(b"another-secret-0123456789abcdef0123", name)
        .sign(&SessionId::generate());
    // The same id, signed for another cookie name: the signature binds the name.
    let id_part = value.split_once('.').unwrap().0;
    let renamed = format!("sessiongate={value}");
    let mut flipped_tag = value.as_bytes().to_vec();
    let last = flipped_tag.len() - 1;
    flipped_tag[last] = if flipped_tag[last] == b'A' {
        b'B'
    } else {
        b'A'
    };
    let flipped_tag = String::from_utf8(flipped_tag).unwrap();

    let cases: Vec<(&str, String)> = vec![
        ("empty value", format!("{name}=")),
        ("no value", name.to_string()),
        ("truncated", format!("{name}={}", &value[..value.len() - 1])),
        ("id only", format!("{name}={id_part}")),
        ("id and dot", format!("{name}={id_part}.")),
        ("extra character", format!("{name}={value}A")),
        ("flipped tag", format!("{name}={flipped_tag}")),
        (
            "two dots",
            format!("{name}={}", value.replacen('.', "..", 1)),
        ),
        ("padding", format!("{name}={value}=")),
        (
            "standard base64",
            format!("{name}={}", value.replace('-', "+").replace('_', "/")),
        ),
        ("quoted", format!("{name}=\"{value}\"")),
        ("oversized", format!("{name}={}", "A".repeat(40_000))),
        ("never issued", format!("{name}={never_issued}")),
        (
            "other cookie name's signature",
            format!("{name}={other_name}"),
        ),
        ("other key's signature", format!("{name}={other_key}")),
        ("our value under another name", renamed),
        ("duplicated in one header", format!("{good}; {good}")),
        (
            "duplicated with a forged one",
            format!("{name}={never_issued}; {good}"),
        ),
        (
            "lowercased name",
            format!("{}={value}", name.to_ascii_lowercase()),
        ),
        ("nul in value", format!("{name}={value}%00")),
    ];
    // "standard base64" is the real cookie itself when the value happens to have no `-` or
    // `_` (about 1 run in 15): that is no attack, and must not fail the test.
    for (what, cookie) in cases.iter().filter(|(_, c)| *c != good) {
        for accept in ["application/json", "text/html"] {
            let res = get(proxy.addr, "/", &[("cookie", cookie), ("accept", accept)]).await;
            let want = if accept == "text/html" {
                StatusCode::FOUND
            } else {
                StatusCode::UNAUTHORIZED
            };
            assert_eq!(res.status, want, "{what}: {cookie:.80}");
        }
    }

    // Two Cookie header lines each carrying a session cookie: trust neither.
    let two_lines = raw(
        proxy.addr,
        format!("GET / HTTP/1.1\r\nHost: a\r\nCookie: {good}\r\nCookie: {good}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(status(&two_lines), 401, "{two_lines}");

    // Bytes that are not UTF-8 (obs-text) in our cookie's value, or glued to it.
    for cookie in [
        format!("{name}=\u{ff}\u{fe}").into_bytes(),
        [good.as_bytes(), b"\xff".as_slice()].concat(),
        [name.as_bytes(), b"=\xff".as_slice(), value.as_bytes()].concat(),
    ] {
        let request = [
            b"GET / HTTP/1.1\r\nHost: a\r\nCookie: ".as_slice(),
            &cookie,
            b"\r\nConnection: close\r\n\r\n",
        ]
        .concat();
        let res = raw(proxy.addr, &request).await;
        assert_eq!(status(&res), 401, "{res}");
    }

    assert_eq!(
        proxy.app.gate.sessions().len(),
        1,
        "no bad cookie created a session"
    );
    assert_eq!(upstream.requests(), seen, "no bad cookie was forwarded");
    assert_eq!(
        get(proxy.addr, "/", &[("cookie", &good)]).await.status,
        StatusCode::OK,
        "the real session still works"
    );
}

/// A cookie larger than the head limit is answered 431, not a crash or a hang.
#[tokio::test]
async fn a_cookie_bigger_than_the_head_limit_gets_431() {
    let (upstream, proxy) = start().await;
    let huge = format!("x={}", "a".repeat(65 * 1024));
    let res = raw(
        proxy.addr,
        format!("GET / HTTP/1.1\r\nHost: a\r\nCookie: {huge}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(status(&res), 431, "{res:.200}");
    assert_eq!(upstream.requests(), 0);
}

/// A logout or login never trusts a cookie more than a request does: a forged cookie posted
/// to logout ends nothing, and the real session lives on.
#[tokio::test]
async fn forged_cookies_at_logout_end_nothing() {
    let (_upstream, proxy) = start().await;
    let good = login(&proxy, USER, PASSWORD).await;
    let name = good.split_once('=').unwrap().0;
    let forged = format!("{name}={}", proxy.app.signer.sign(&SessionId::generate()));
    let origin = format!("http://{}", proxy.addr);
    let res = send(
        proxy.addr,
        req(
            http::Method::POST,
            "/.sessiongate/logout",
            &[("cookie", &forged), ("origin", &origin)],
        ),
    )
    .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert_eq!(proxy.app.gate.sessions().len(), 1);
    assert_eq!(
        get(proxy.addr, "/", &[("cookie", &good)]).await.status,
        StatusCode::OK
    );
}

/// Two session cookies mean no session, whichever Cookie line each is on: a second one on a
/// line that is not text (not UTF-8, or any byte outside visible ASCII) is counted like any
/// other, instead of the line being skipped and the first cookie trusted alone.
#[tokio::test]
async fn a_second_session_cookie_on_a_line_that_is_not_text_means_no_session() {
    let (upstream, proxy) = start().await;
    let good = login(&proxy, USER, PASSWORD).await;
    let other = login(&proxy, USER, PASSWORD).await;
    let name = good.split_once('=').unwrap().0;
    let forged = format!("{name}={}", proxy.app.signer.sign(&SessionId::generate()));
    let request = |lines: &[Vec<u8>]| {
        let mut r = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for line in lines {
            r.extend_from_slice(b"Cookie: ");
            r.extend_from_slice(line);
            r.extend_from_slice(b"\r\n");
        }
        r.extend_from_slice(b"Connection: close\r\n\r\n");
        r
    };
    // Other cookies whose bytes are not UTF-8, then `cookie`.
    let binary = |cookie: &str| [b"theme=\xff\xfe; ".as_slice(), cookie.as_bytes()].concat();
    let text = |cookie: &str| cookie.as_bytes().to_vec();
    let utf8 =
        |cookie: &str| [b"caf\xc3\xa9=cr\xc3\xa8me; ".as_slice(), cookie.as_bytes()].concat();
    for (what, lines) in [
        ("another live session", vec![text(&good), binary(&other)]),
        ("the same session again", vec![text(&good), binary(&good)]),
        ("a forged one", vec![text(&good), binary(&forged)]),
        (
            "the line that is not UTF-8 first",
            vec![binary(&other), text(&good)],
        ),
        (
            "both on lines that are not UTF-8",
            vec![binary(&good), binary(&other)],
        ),
        (
            "one line holding both",
            vec![binary(&format!("{good}; {other}"))],
        ),
        (
            "a UTF-8 line outside ASCII",
            vec![text(&good), utf8(&other)],
        ),
    ] {
        let res = raw(proxy.addr, &request(&lines)).await;
        assert_eq!(status(&res), 401, "{what}: {res}");
    }
    assert_eq!(
        upstream.requests(),
        0,
        "no request with two session cookies was forwarded"
    );

    // One session cookie, beside other cookies whose bytes are not text, is the session: the
    // line is read, not skipped. The line goes nowhere near the app (it is not text, so it is
    // dropped whole rather than forwarded with our cookie taken out of it).
    let res = raw(proxy.addr, &request(&[binary(&good)])).await;
    assert_eq!(status(&res), 200, "{res}");
    assert_eq!(upstream.requests(), 1);
    let headers = raw_json(&res)["headers"].as_array().unwrap().clone();
    assert!(
        headers.iter().all(|h| h[0] != "cookie"),
        "the app got a cookie line: {headers:?}"
    );
}
