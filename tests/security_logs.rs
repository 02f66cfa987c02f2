//! Logs never carry a credential: the real binary, at the most verbose level, is driven
//! through a wrong login, a good one, requests with a token in the query, and a logout; its
//! whole output is then searched for the passwords, the cookie, the session id and the
//! query. The per-request lines carry a short hash of the session id instead.

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use http::{Method, StatusCode};
use sha2::{Digest, Sha256};

const WRONG_PASSWORD: &str = "hunter2-wrong-password";
const QUERY_TOKEN: &str = "tok-5f1d9a7c2e";

#[tokio::test]
async fn no_password_cookie_session_id_or_query_reaches_the_log() {
    let upstream = start_upstream().await;
    let toml = config_toml(upstream.addr, "", "secure = false");
    let dir = std::env::temp_dir().join(format!("sessiongate-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("sessiongate.toml");
    std::fs::write(&config, toml).unwrap();
    let running = spawn_sessiongate(&config, &[("RUST_LOG", "trace")]);
    let addr = running.addr;
    let origin = format!("http://{addr}");
    let form = |user: &str, password: &str| {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs([("username", user), ("password", password)])
            .finish()
    };
    let login = |body: String| {
        req_with_body(
            Method::POST,
            "/.sessiongate/login",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("origin", &origin),
            ],
            body,
        )
    };
    // A password typed into the username field is a classic leak.
    let res = send(addr, login(form(WRONG_PASSWORD, WRONG_PASSWORD))).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    let res = send(addr, login(form(USER, WRONG_PASSWORD))).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    let res = send(addr, login(form(USER, PASSWORD))).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    let cookie = cookie_pair(&res);
    let value = cookie.split_once('=').unwrap().1.to_string();
    let id_b64 = value.split_once('.').unwrap().0.to_string();
    let id = URL_SAFE_NO_PAD.decode(&id_b64).unwrap();
    let tag: String = Sha256::digest(&id)[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();

    for path in [format!("/app?token={QUERY_TOKEN}"), "/other".to_string()] {
        let res = get(
            addr,
            &path,
            &[("cookie", &cookie), ("authorization", "Bearer abc.def")],
        )
        .await;
        assert_eq!(res.status, StatusCode::OK);
    }
    let res = send(
        addr,
        req(
            Method::POST,
            "/.sessiongate/logout",
            &[("cookie", &cookie), ("origin", &origin)],
        ),
    )
    .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);

    let log_handle = running.log.clone();
    assert!(running.stop().success(), "clean exit after SIGTERM");
    let log = log_handle.lock().unwrap().clone();
    let _ = std::fs::remove_dir_all(&dir);

    assert!(
        log.contains("status=200"),
        "the request lines are there: {log}"
    );
    for (what, secret) in [
        ("wrong password", WRONG_PASSWORD),
        ("password", PASSWORD),
        ("cookie value", value.as_str()),
        ("session id", id_b64.as_str()),
        ("query token", QUERY_TOKEN),
        ("authorization", "abc.def"),
        ("secret", SECRET),
    ] {
        assert!(!log.contains(secret), "the log holds the {what}:\n{log}");
    }
    let tagged = log
        .lines()
        .filter(|l| l.contains("status=200") && l.contains(&tag))
        .count();
    assert_eq!(
        tagged, 2,
        "both requests carry the session tag {tag}:\n{log}"
    );
}
