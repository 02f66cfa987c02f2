//! Provider sessions after the sign-in, against the real `oidc-provider`: two providers on
//! one page and the mix-up between them, fresh PKCE, state and nonce per attempt, logout (at
//! the provider too), reloads that add, change and remove providers, the Redis store across
//! replicas, the metrics, the logs (never a code, token or secret) and `check`.

use std::time::Duration;

use serde_json::json;

use crate::common::oidc::*;
use crate::common::redis::{RedisOptions, RedisServer, eventually, redis_store};
use crate::common::*;
use crate::oidc_sign_in::*;

fn query(url: &str) -> std::collections::HashMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[tokio::test]
async fn every_attempt_has_its_own_pkce_state_and_nonce() {
    let idp = start_oidc_provider(accounts()).await;
    let (_upstream, proxy) = start_corp(&idp, "", "").await;
    let mut jar = Jar::new();
    let a = query(&start_attempt(&mut jar, &proxy, "corp", "/").await);
    let b = query(&start_attempt(&mut jar, &proxy, "corp", "/").await);
    assert_eq!(a["code_challenge_method"], "S256");
    assert_eq!(a["response_type"], "code");
    for key in ["state", "nonce", "code_challenge"] {
        assert!(a[key].len() >= 22, "{key} too short: {}", a[key]);
        assert_ne!(a[key], b[key], "{key} reused between attempts");
    }
    assert!(a["scope"].split(' ').any(|s| s == "openid"));
}

#[tokio::test]
async fn two_providers_on_one_page_and_a_response_carried_to_the_other() {
    let one = start_oidc_provider(accounts()).await;
    let two = start_oidc_provider(accounts()).await;
    let upstream = start_upstream().await;
    let tables = format!(
        "{}{}",
        provider_table("one", &one, ""),
        provider_table("two", &two, "")
    );
    let proxy = start_proxy_with(&config_toml(upstream.addr, "", &tables)).await;
    register(&one, &proxy, "one").await;
    register(&two, &proxy, "two").await;
    discovered(&proxy).await;
    let page = get(proxy.addr, "/.sessiongate/login", &[BROWSER])
        .await
        .text();
    assert!(page.contains("Sign in with one SSO") && page.contains("Sign in with two SSO"));

    // The same sub at two providers is two people.
    let mut a = Jar::new();
    assert!(has_session(
        &sign_in(&mut a, &proxy, "one", "ann", "/").await,
        &proxy
    ));
    let mut b = Jar::new();
    assert!(has_session(
        &sign_in(&mut b, &proxy, "two", "ann", "/").await,
        &proxy
    ));
    let who = |r: Resp| r.upstream_header("x-forwarded-user");
    assert_eq!(
        who(a.get_url(&proxy.url("/")).await),
        ["one:ann@example.com"]
    );
    assert_eq!(
        who(b.get_url(&proxy.url("/")).await),
        ["two:ann@example.com"]
    );

    // Provider two's answer brought to provider one's callback: refused (the attempt is
    // two's), and so is one's attempt answered by two (its iss names two).
    let mut jar = Jar::new();
    let authorize = start_attempt(&mut jar, &proxy, "two", "/").await;
    let callback = provider_login(&mut jar, &authorize, "bob").await;
    let swapped = callback.replace("/oidc/two/", "/oidc/one/");
    let res = jar.get_url(&swapped).await;
    assert_eq!(res.status, 400, "{}", res.text());
    assert!(!has_session(&res, &proxy));
}

#[tokio::test]
async fn logout_ends_the_session_and_at_the_provider_when_asked() {
    let idp = start_oidc_provider(accounts()).await;
    let (_upstream, proxy) = start_corp(&idp, "logout_at_provider = true\n", "").await;
    // The provider must know where to send the browser back after its logout.
    let back = proxy.url("/.sessiongate/login?signed_out=1");
    idp.register_client_metadata(json!({
        "client_id": "sessiongate-corp",
        "client_secret": CLIENT_SECRET,
        "redirect_uris": [proxy.url("/.sessiongate/oidc/corp/callback")],
        "post_logout_redirect_uris": [back],
    }))
    .await;
    let mut jar = Jar::new();
    assert!(has_session(
        &sign_in(&mut jar, &proxy, "corp", "ann", "/").await,
        &proxy
    ));
    assert_eq!(jar.get_url(&proxy.url("/")).await.status, 200);

    let origin = proxy.url("");
    let res = jar
        .request(
            http::Method::POST,
            &proxy.url("/.sessiongate/logout"),
            &[
                ("origin", &origin),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            "",
        )
        .await;
    assert_eq!(res.status, 303, "{}", res.text());
    let end = location(&res);
    assert!(end.starts_with(&idp.issuer), "{end}");
    assert_eq!(query(&end)["post_logout_redirect_uri"], back);
    // Signed out here at once, whatever the provider does next.
    assert_eq!(jar.get_url(&proxy.url("/")).await.status, 401);
    // The provider signs the browser out and sends it back to the sign-in page.
    assert_eq!(
        provider_logout(&mut jar, &end).await.as_deref(),
        Some(back.as_str())
    );
    // And its next sign-in asks for the login again (provider_login needs the form).
    assert!(has_session(
        &sign_in(&mut jar, &proxy, "corp", "bob", "/").await,
        &proxy
    ));
    let page = jar.get_url(&proxy.url("/")).await;
    assert_eq!(
        page.upstream_header("x-forwarded-user"),
        ["corp:bob@example.com"]
    );
}

#[tokio::test]
async fn a_reload_adds_changes_and_removes_providers() {
    let idp = start_oidc_provider(accounts()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sessiongate.toml");
    let upstream = start_upstream().await;
    let write =
        |tables: &str| std::fs::write(&file, config_toml(upstream.addr, "", tables)).unwrap();
    write(&provider_table("corp", &idp, ""));
    let proxy = start_proxy_from(sessiongate::Config::load(&file).unwrap()).await;
    register(&idp, &proxy, "corp").await;
    discovered(&proxy).await;

    let mut ann = Jar::new();
    assert!(has_session(
        &sign_in(&mut ann, &proxy, "corp", "ann", "/").await,
        &proxy
    ));

    // Added: a second provider, and corp unchanged keeps its sessions.
    write(&format!(
        "{}{}",
        provider_table("corp", &idp, ""),
        provider_table("extra", &idp, "")
    ));
    proxy.app.reload().await.unwrap();
    register(&idp, &proxy, "extra").await;
    discovered(&proxy).await;
    assert_eq!(ann.get_url(&proxy.url("/")).await.status, 200);
    let mut bob = Jar::new();
    assert!(has_session(
        &sign_in(&mut bob, &proxy, "extra", "bob", "/").await,
        &proxy
    ));

    // Changed: corp now allows only another domain; its sessions end.
    write(&format!(
        "{}{}",
        provider_table("corp", &idp, "allowed_domains = [\"other.org\"]\n"),
        provider_table("extra", &idp, "")
    ));
    proxy.app.reload().await.unwrap();
    assert_eq!(ann.get_url(&proxy.url("/")).await.status, 401);
    assert_eq!(bob.get_url(&proxy.url("/")).await.status, 200);

    // Removed: extra's sessions end, and its endpoints are gone.
    write(&provider_table("corp", &idp, ""));
    proxy.app.reload().await.unwrap();
    assert_eq!(bob.get_url(&proxy.url("/")).await.status, 401);
    assert_eq!(
        get(proxy.addr, "/.sessiongate/oidc/extra/start", &[BROWSER])
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn with_redis_a_provider_session_and_attempt_work_on_every_replica() {
    let redis = RedisServer::start(RedisOptions::default()).await;
    let idp = start_oidc_provider(accounts()).await;
    let upstream = start_upstream().await;
    let toml = config_toml(
        upstream.addr,
        "",
        &format!(
            "{}{}",
            redis_store(&redis.url(), "", ""),
            provider_table("corp", &idp, "")
        ),
    );
    let a = start_proxy_with(&toml).await;
    let b = start_proxy_with(&toml).await;
    // Both replicas' callbacks are registered; the browser starts on a and comes back to b.
    let callbacks = [
        a.url("/.sessiongate/oidc/corp/callback"),
        b.url("/.sessiongate/oidc/corp/callback"),
    ];
    idp.register_client("sessiongate-corp", CLIENT_SECRET, &callbacks)
        .await;
    discovered(&a).await;
    discovered(&b).await;

    let mut jar = Jar::new();
    let authorize = start_attempt(&mut jar, &a, "corp", "/").await;
    let callback = provider_login(&mut jar, &authorize, "ann").await;
    // A load balancer would keep the host; here the replicas differ by port, so the cookie
    // jar is told both are one site.
    let on_b = callback.replace(&a.addr.to_string(), &b.addr.to_string());
    let cookies = jar
        .cookie_header(&url::Url::parse(&a.url("/.sessiongate/oidc/corp/callback")).unwrap())
        .unwrap();
    let target = on_b.split_once(&b.addr.to_string()).unwrap().1.to_string();
    let res = get(b.addr, &target, &[("cookie", &cookies)]).await;
    assert_eq!(res.status, 303, "{}", res.text());
    let session = cookie_pair(&res);
    for replica in [&a, &b] {
        let page = get(replica.addr, "/", &[("cookie", &session)]).await;
        assert_eq!(page.status, 200, "{}", page.text());
        assert_eq!(
            page.upstream_header("x-forwarded-user"),
            ["corp:ann@example.com"]
        );
        assert_eq!(page.upstream_header("x-forwarded-groups"), ["staff"]);
    }
    // Signed out on one, refused on the other within a second.
    let res = post_form(&a, "/.sessiongate/logout", &session, &[]).await;
    assert_eq!(res.status, 303, "{}", res.text());
    eventually("the other replica refuses the ended session", || async {
        status_with(&b, &session).await == http::StatusCode::UNAUTHORIZED
    })
    .await;
}

#[tokio::test]
async fn metrics_count_provider_sign_ins_and_logs_hold_no_secret() {
    let captured = Captured::default();
    let _guard = captured.install();
    let idp = start_oidc_provider(accounts()).await;
    let (_upstream, proxy) = start_corp(&idp, "", "").await;

    let mut jar = Jar::new();
    let authorize = start_attempt(&mut jar, &proxy, "corp", "/").await;
    let callback = provider_login(&mut jar, &authorize, "ann").await;
    let res = jar.get_url(&callback).await;
    let session = cookie_pair(&res);
    jar.get_url(&callback).await; // the same state again: restarted
    idp.tamper("wrong-aud").await;
    sign_in(&mut Jar::new(), &proxy, "corp", "ann", "/").await; // refused
    idp.tamper("off").await;
    let mut deny = Jar::new();
    let authorize = start_attempt(&mut deny, &proxy, "corp", "/").await;
    let denied = provider_deny(&mut deny, &authorize).await;
    deny.get_url(&denied).await;

    let text = proxy.app.metrics.encode();
    for result in ["success", "restarted", "refused", "denied"] {
        let line =
            format!("sessiongate_provider_logins_total{{provider=\"corp\",result=\"{result}\"}} 1");
        assert!(text.contains(&line), "no {line:?} in\n{text}");
    }

    let logs = captured.text();
    assert!(
        logs.contains("provider sign-in refused") && logs.contains("corp"),
        "{logs}"
    );
    let code = query(&callback)["code"].clone();
    let state = query(&callback)["state"].clone();
    let session_value = session.split_once('=').unwrap().1.to_string();
    for secret in [
        code.as_str(),
        state.as_str(),
        CLIENT_SECRET,
        session_value.as_str(),
        "eyJ",
    ] {
        assert!(!logs.contains(secret), "the log holds {secret:?}:\n{logs}");
    }
}

#[tokio::test]
async fn check_reports_each_provider() {
    let idp = start_oidc_provider(accounts()).await;
    let upstream = start_upstream().await;
    let down = format!(
        "\n[[providers]]\nid = \"gone\"\nname = \"Gone\"\nissuer = \"http://127.0.0.1:{}\"\nclient_id = \"x\"\nclient_secret = \"y\"\n",
        closed_port().await.port()
    );
    let toml = config_toml(
        upstream.addr,
        "",
        &format!("{}{down}", provider_table("corp", &idp, "")),
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sessiongate.toml");
    std::fs::write(&file, toml).unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_sessiongate"))
            .args(["check", "--config"])
            .arg(&file)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("ok: provider \"corp\""), "{stdout}");
    assert!(
        stdout.contains("/.sessiongate/oidc/corp/callback"),
        "{stdout}"
    );
    assert!(
        stdout.contains("warning: provider \"gone\"") && stdout.contains("503"),
        "{stdout}"
    );
    assert!(!stdout.contains(CLIENT_SECRET), "{stdout}");
    assert_eq!(
        out.status.code(),
        Some(0),
        "a provider down is a warning: {stdout}"
    );
}

#[tokio::test]
async fn explain_answers_for_a_provider_user_as_the_proxy_does() {
    let idp = start_oidc_provider(accounts()).await;
    let rules = "\n[[rules]]\npath = \"/staff\"\nallow = [\"group:staff\"]\n";
    let (_upstream, proxy) = start_corp(&idp, "", rules).await;
    let config = proxy.app.config.clone();
    let explain = |user: &'static str, groups: &'static [&'static str]| {
        let config = config.clone();
        async move {
            let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
            tokio::task::spawn_blocking(move || {
                sessiongate::cli::explain::explain(&config, Some(user), &groups, "GET", "/staff/x")
            })
            .await
            .unwrap()
        }
    };
    let ann = explain("corp:ann@example.com", &["staff"]).await.unwrap();
    assert!(
        ann.contains("allow") && ann.contains("corp:ann@example.com"),
        "{ann}"
    );
    let bob = explain("corp:bob@example.com", &[]).await.unwrap();
    assert!(bob.contains("forbidden") || bob.contains("deny"), "{bob}");
    let nobody = explain("elsewhere:ann", &[]).await.unwrap_err();
    assert!(nobody.contains("PROVIDER:NAME"), "{nobody}");

    // The proxy says the same for the same people signed in for real.
    let mut a = Jar::new();
    assert!(has_session(
        &sign_in(&mut a, &proxy, "corp", "ann", "/").await,
        &proxy
    ));
    assert_eq!(a.get_url(&proxy.url("/staff/x")).await.status, 200);
    let mut b = Jar::new();
    assert!(has_session(
        &sign_in(&mut b, &proxy, "corp", "bob", "/").await,
        &proxy
    ));
    assert_eq!(b.get_url(&proxy.url("/staff/x")).await.status, 403);
}

#[tokio::test]
async fn a_provider_session_is_an_ordinary_session() {
    let idp = start_oidc_provider(accounts()).await;
    let upstream = start_upstream().await;
    let toml = with_server(
        &config_toml(upstream.addr, "", &provider_table("corp", &idp, "")),
        "trusted_proxies = [\"127.0.0.1\"]",
    );
    let proxy = start_proxy_with(&toml).await;
    register(&idp, &proxy, "corp").await;
    discovered(&proxy).await;
    let session = |res: &Resp| cookie_pair(res);
    let here = session(&sign_in(&mut Jar::new(), &proxy, "corp", "ann", "/").await);
    let there = session(&sign_in(&mut Jar::new(), &proxy, "corp", "ann", "/").await);
    let bobs = session(&sign_in(&mut Jar::new(), &proxy, "corp", "bob", "/").await);

    // The sessions page lists both of ann's, and only hers.
    let page = get(
        proxy.addr,
        "/.sessiongate/sessions",
        &[BROWSER, ("cookie", &here)],
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.text());
    let html = page.text();
    assert!(html.contains("corp:ann@example.com"), "{html}");
    assert_eq!(
        html.matches("name=\"session\"").count(),
        1,
        "one other session to end: {html}"
    );

    // Forward-auth answers for her as for anyone.
    let headers = [
        ("x-forwarded-method", "GET"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "app.example.com"),
        ("x-forwarded-uri", "/x"),
        ("cookie", here.as_str()),
    ];
    let res = get(proxy.addr, "/.sessiongate/auth/forward", &headers).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("x-forwarded-user"), Some("corp:ann@example.com"));
    assert_eq!(res.header("x-forwarded-groups"), Some("staff"));

    // Sign out everywhere ends both of hers, not bob's.
    let res = post_form(
        &proxy,
        "/.sessiongate/logout",
        &here,
        &[("everywhere", "1")],
    )
    .await;
    assert_eq!(res.status, 303, "{}", res.text());
    assert_eq!(status_with(&proxy, &here).await, 401);
    assert_eq!(status_with(&proxy, &there).await, 401);
    assert_eq!(status_with(&proxy, &bobs).await, 200);
}

#[tokio::test]
async fn allowed_users_and_groups_keep_others_out() {
    let idp = start_oidc_provider(accounts()).await;
    let (_upstream, proxy) = start_corp(&idp, "allowed_groups = [\"staff\"]\n", "").await;
    assert!(has_session(
        &sign_in(&mut Jar::new(), &proxy, "corp", "ann", "/").await,
        &proxy
    ));
    let res = sign_in(&mut Jar::new(), &proxy, "corp", "bob", "/").await;
    assert_eq!(res.status, 403, "{}", res.text());
    assert!(
        res.text().contains("in none of the groups allowed here"),
        "{}",
        res.text()
    );

    let idp = start_oidc_provider(accounts()).await;
    let (_upstream, proxy) = start_corp(&idp, "allowed_users = [\"bob@example.com\"]\n", "").await;
    assert!(has_session(
        &sign_in(&mut Jar::new(), &proxy, "corp", "bob", "/").await,
        &proxy
    ));
    let res = sign_in(&mut Jar::new(), &proxy, "corp", "ann", "/").await;
    assert_eq!(res.status, 403, "{}", res.text());
    assert!(
        res.text().contains("not among the users allowed here"),
        "{}",
        res.text()
    );
}

#[tokio::test]
async fn public_url_names_the_callback_and_auto_redirect_can_be_off() {
    let idp = start_oidc_provider(accounts()).await;
    let upstream = start_upstream().await;
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\npublic_url = \"https://login.example.com\"\n[upstream]\nurl = \"http://{}\"\n[auth]\nauto_redirect = false\n[session]\nsecret = \"{}\"\n{}",
        upstream.addr,
        "s".repeat(64),
        provider_table("corp", &idp, "")
    );
    let proxy = start_proxy_with(&toml).await;
    discovered(&proxy).await;
    // The outer proxy's origin, whatever Host this request came with.
    let authorize = start_attempt(&mut Jar::new(), &proxy, "corp", "/").await;
    assert_eq!(
        query(&authorize)["redirect_uri"],
        "https://login.example.com/.sessiongate/oidc/corp/callback"
    );
    // No [[users]] and one provider, but auto_redirect = false: the page with its button.
    let page = get(proxy.addr, "/.sessiongate/login", &[BROWSER]).await;
    assert_eq!(page.status, 200);
    assert!(
        page.text().contains("Sign in with corp SSO"),
        "{}",
        page.text()
    );
}
