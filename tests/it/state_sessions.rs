//! `session.state_dir` across in-process restarts (a new `App` on the same directory, as a
//! restarted binary would be): the sessions page lists sessions read back from disk, and every
//! way a session ends (from the page, "sign out everywhere", a reload that changes a password)
//! stays ended across the next restarts; a TOTP code used before a restart is refused after.

use std::path::PathBuf;

use crate::common::*;
use crate::sessions_page::{CURL, FIREFOX, handles, login_as, sessions_page};
use crate::totp::{app_for_alice, code_now, password_step, post_code, signed_in, with_totp};
use http::StatusCode;
use sessiongate::Config;
use sessiongate::credentials::totp::unix_now;

/// A config file and the state directory beside it, removed when the test ends.
struct Files {
    _dir: tempfile::TempDir,
    file: PathBuf,
    state: PathBuf,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::tempdir().unwrap();
        Files {
            file: dir.path().join("sessiongate.toml"),
            state: dir.path().join("state"),
            _dir: dir,
        }
    }

    /// Writes `toml` with this state_dir as the config file.
    fn write(&self, toml: &str) {
        let line = format!("state_dir = '{}'", self.state.display());
        std::fs::write(&self.file, with_session(toml, &line)).unwrap();
    }

    fn config(&self) -> Config {
        Config::load(&self.file).unwrap()
    }
}

/// The number of sessions listed on a sessions page.
fn rows(html: &str) -> usize {
    html.matches("<tr").count() - 1
}

/// `toml` with alice's password hash replaced by one of `password`.
fn alice_with_password(toml: &str, password: &str) -> String {
    let hash = toml
        .split("password_hash = \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap();
    assert!(toml.contains(&format!("name = \"{USER}\"\npassword_hash = \"{hash}\"")));
    toml.replacen(hash, &cheap_hash(password), 1)
}

#[tokio::test]
async fn sessions_read_back_from_disk_are_listed_and_every_way_to_end_one_stays_ended() {
    let files = Files::new();
    let upstream = start_upstream().await;
    let team = team_config(upstream.addr, "", "");
    files.write(&team);
    let proxy = start_proxy_from(files.config()).await;
    let alice_here = login_as(&proxy, USER, PASSWORD, FIREFOX).await;
    let alice_other = login_as(&proxy, USER, PASSWORD, CURL).await;
    let bob_before = login_as(&proxy, "bob", BOB_PASSWORD, CURL).await;

    // The page lists alice's sessions read back from disk: this one (moved to memory by the
    // page's own request) and the other (not used since the restart), by browser and address.
    let proxy = restart(proxy, files.config()).await;
    let html = sessions_page(&proxy, &alice_here).await.text();
    assert_eq!(rows(&html), 2, "{html}");
    assert_eq!(html.matches("(this browser)").count(), 1, "{html}");
    assert!(
        html.contains("Firefox on Linux") && html.contains("<td>curl</td>"),
        "{html}"
    );
    assert!(html.contains("<td>127.0.0.1</td>"), "{html}");
    let listed = handles(&html);
    assert_eq!(listed.len(), 1, "an end form for the other session: {html}");
    let res = post_form(
        &proxy,
        "/.sessiongate/sessions/end",
        &alice_here,
        &[("session", &listed[0])],
    )
    .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    assert_eq!(
        status_with(&proxy, &alice_other).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status_with(&proxy, &alice_here).await, StatusCode::OK);

    // Sign out everywhere from a session made after the restart ends the one read back from
    // disk too (bob has not used it since), and no one else's.
    let bob_after = login_as(&proxy, "bob", BOB_PASSWORD, FIREFOX).await;
    let res = post_form(
        &proxy,
        "/.sessiongate/logout",
        &bob_after,
        &[("everywhere", "1")],
    )
    .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    for bob in [&bob_before, &bob_after] {
        assert_eq!(status_with(&proxy, bob).await, StatusCode::UNAUTHORIZED);
    }

    let proxy = restart(proxy, files.config()).await;
    for (ended, what) in [
        (&alice_other, "ended from the page"),
        (&bob_before, "signed out everywhere"),
        (&bob_after, "signed out everywhere"),
    ] {
        assert_eq!(
            status_with(&proxy, ended).await,
            StatusCode::UNAUTHORIZED,
            "{what}, then a restart"
        );
    }
    // alice_here is left unused (read back, not yet in memory) so the reload must end it
    // where it is; a session of hers made after the restart lists it.
    let alice_after = login_as(&proxy, USER, PASSWORD, CURL).await;
    let html = sessions_page(&proxy, &alice_after).await.text();
    assert_eq!(rows(&html), 2, "{html}");

    std::fs::write(
        &files.file,
        alice_with_password(
            &std::fs::read_to_string(&files.file).unwrap(),
            "new-password",
        ),
    )
    .unwrap();
    let done = proxy.app.reload().await.unwrap();
    assert_eq!(done.ended_sessions, 2, "both of alice's sessions");
    for alice in [&alice_here, &alice_after] {
        assert_eq!(status_with(&proxy, alice).await, StatusCode::UNAUTHORIZED);
    }

    // Back to the old password for the restart: her old sessions would match it again, so
    // only the ends kept on disk keep them ended.
    files.write(&team);
    let proxy = restart(proxy, files.config()).await;
    for alice in [&alice_here, &alice_after, &alice_other] {
        assert_eq!(
            status_with(&proxy, alice).await,
            StatusCode::UNAUTHORIZED,
            "ended by the reload, then a restart"
        );
    }
    let alice = login(&proxy, USER, PASSWORD).await;
    assert_eq!(status_with(&proxy, &alice).await, StatusCode::OK);
}

#[tokio::test]
async fn a_totp_code_used_before_a_restart_is_refused_after_it() {
    let files = Files::new();
    let upstream = start_upstream().await;
    files.write(&with_auth(
        &with_totp(&config_toml(upstream.addr, "", "")),
        "max_failures = 100",
    ));
    let mut proxy = start_proxy_from(files.config()).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        let step = unix_now() / 30;
        let pending = password_step(&proxy, "/").await;
        let code = code_now();
        signed_in(&post_code(&proxy, &pending, &code).await, &proxy, "/");

        proxy = restart(proxy, files.config()).await;
        let pending = password_step(&proxy, "/").await;
        let res = post_code(&proxy, &pending, &code).await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED, "a code is used once");
        // The verifier takes a code until a step after its own: refused before then, it was
        // refused as used. Later (a machine that held the test up), the run proves nothing.
        if unix_now() / 30 > step + 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "no run within a code's lifetime in five minutes"
            );
            eprintln!("the restart outlasted the code: starting the run again");
            continue;
        }
        // The sign-in itself works after the restart: a code not used yet (the next step's,
        // which the verifier takes a step early) is accepted on the same pending sign-in.
        let fresh = app_for_alice().generate(unix_now() + 30).to_string();
        signed_in(&post_code(&proxy, &pending, &fresh).await, &proxy, "/");
        return;
    }
}
