//! Logs never carry a credential: the real binary, at the most verbose level, is driven
//! through a wrong login, a good one, requests with a token in the query, and a logout; its
//! whole output is then searched for the passwords, the cookie, the session id and the
//! query. The per-request lines carry a short hash of the session id instead. The same runs
//! with `[log] format = "json"`, where every line must also be a JSON object with the fields.

use crate::common::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{Method, StatusCode};
use sha2::{Digest, Sha256};

const WRONG_PASSWORD: &str = "hunter2-wrong-password";
const QUERY_TOKEN: &str = "tok-5f1d9a7c2e";

#[tokio::test]
async fn no_password_cookie_session_id_or_query_reaches_the_log() {
    let log = drive("text").await;
    let tag = log.tag;
    let log = log.text;
    assert!(
        log.contains("status=200"),
        "the request lines are there: {log}"
    );
    let tagged = log
        .lines()
        .filter(|l| l.contains("status=200") && l.contains(&tag))
        .count();
    assert_eq!(
        tagged, 2,
        "both requests carry the session tag {tag}:\n{log}"
    );
    let line = log
        .lines()
        .find(|l| l.contains("path=\"/other\""))
        .expect("the /other line");
    for field in [
        "method=GET",
        "status=200",
        "decision=allow",
        "user=\"alice\"",
        "client=127.0.0.1",
        "upstream_micros=",
        "bytes=",
    ] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
}

#[tokio::test]
async fn json_logs_have_every_field_and_no_secret() {
    let log = drive("json").await;
    let mut requests = Vec::new();
    for line in log.text.lines() {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}\n{}", log.text));
        let object = value.as_object().expect("each line is an object");
        assert!(
            object["timestamp"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z')),
            "{line}"
        );
        assert!(object["level"].is_string(), "{line}");
        assert!(object["message"].is_string(), "{line}");
        if object["message"] == "request" {
            requests.push(value);
        }
    }
    assert!(
        log.text
            .contains("\"message\":\"sessiongate listening on http://"),
        "the start-up lines are JSON too: {}",
        log.text
    );
    let other = requests
        .iter()
        .find(|r| r["path"] == "/other")
        .unwrap_or_else(|| panic!("no request line for /other: {}", log.text));
    assert_eq!(other["method"], "GET");
    assert_eq!(other["status"], 200);
    assert_eq!(other["decision"], "allow");
    assert_eq!(other["user"], USER);
    assert_eq!(other["session"], log.tag.as_str());
    assert_eq!(other["client"], "127.0.0.1");
    assert!(other["micros"].as_u64().is_some(), "{other}");
    let upstream = other["upstream_micros"].as_u64().expect("upstream_micros");
    assert!(upstream <= other["micros"].as_u64().unwrap(), "{other}");
    assert!(other["bytes"].as_u64().is_some_and(|b| b > 0), "{other}");
    // The query never appears, not even in the path field.
    let app = requests
        .iter()
        .find(|r| r["path"] == "/app")
        .expect("/app line");
    assert_eq!(app["path"], "/app");
    // A login page: no user, no session, no upstream.
    let failed = requests
        .iter()
        .find(|r| r["path"] == "/.sessiongate/login" && r["status"] == 401)
        .expect("a failed login line");
    assert_eq!(failed["decision"], "own_endpoint");
    assert!(
        failed["user"].is_null() && failed["session"].is_null(),
        "{failed}"
    );
    assert!(failed["upstream_micros"].is_null(), "{failed}");
}

/// What the log of one run holds, and the session's tag in it.
struct Log {
    text: String,
    tag: String,
}

/// Runs the binary with `[log] format`, drives it through the logins, requests and logout,
/// and checks that none of the secrets appears anywhere in its output.
async fn drive(format: &str) -> Log {
    let upstream = start_upstream().await;
    let toml = config_toml(upstream.addr, "", "secure = false")
        + &format!("\n[log]\nformat = \"{format}\"\n");
    let dir =
        std::env::temp_dir().join(format!("sessiongate-logs-{format}-{}", std::process::id()));
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
    Log { text: log, tag }
}
