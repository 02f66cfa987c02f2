//! Forward-auth through a real nginx and a real Caddy, configured with the README's own
//! copy-paste configs (read from README.md here, with the ports put in), in front of the echo
//! upstream: sign-in and back, API clients, refusals, spoofed headers, public paths.

use crate::common::*;
use http::StatusCode;

const README: &str = include_str!("../../README.md");

/// The README code block whose first line is `first_line`.
fn readme_block(first_line: &str) -> String {
    let start = README
        .find(first_line)
        .unwrap_or_else(|| panic!("README.md has no block starting {first_line:?}"));
    let rest = &README[start..];
    rest[..rest.find("```").expect("the block ends")].to_string()
}

/// The README's nginx server block, listening on the placeholder port, in front of `app`
/// with sessiongate at `gate`.
fn nginx_config(app: &str, gate: &str) -> String {
    readme_block("# sessiongate forward-auth: nginx")
        .replace("listen 443 ssl;", "listen 127.0.0.1:{port};")
        .replace("127.0.0.1:3000", app)
        .replace("127.0.0.1:9091", gate)
}

fn caddy_config(app: &str, gate: &str) -> String {
    readme_block("# sessiongate forward-auth: Caddy")
        .replace("app.example.com {", "http://127.0.0.1:{port} {")
        .replace("127.0.0.1:3000", app)
        .replace("127.0.0.1:9091", gate)
}

/// sessiongate as the login service only (no upstream), trusting the edge proxy on loopback.
async fn start_gate() -> Proxy {
    let toml = team_config(
        "127.0.0.1:9".parse().unwrap(),
        "public_paths = [\"/public\"]",
        ADMINS_RULE,
    )
    .replace("[upstream]\nurl = \"http://127.0.0.1:9\"\n", "")
    .replace(
        "shutdown_timeout = \"5s\"",
        "shutdown_timeout = \"5s\"\ntrusted_proxies = [\"127.0.0.1\"]",
    );
    start_proxy_with(&toml).await
}

/// Signs in through the edge proxy at `edge` as a browser would: the form's POST with the
/// page's Origin. Returns the Set-Cookie's pair and the redirect target.
async fn sign_in(
    edge: std::net::SocketAddr,
    user: &str,
    password: &str,
    rd: &str,
) -> (String, String) {
    let res = post_login_to(
        edge,
        &[("username", user), ("password", password), ("rd", rd)],
        &[],
    )
    .await;
    assert_eq!(
        res.status,
        StatusCode::SEE_OTHER,
        "sign-in through the proxy: {}",
        res.text()
    );
    (
        cookie_pair(&res),
        res.header("location").unwrap().to_string(),
    )
}

/// The whole flow through one edge proxy at `edge`, in front of `upstream`.
async fn scenario(edge: std::net::SocketAddr, upstream: &Upstream, edge_log: impl Fn() -> String) {
    // 1. A browser without a session is sent to the sign-in page, with the way back.
    let res = get(edge, "/app/page?x=1", &[BROWSER]).await;
    assert_eq!(
        res.status,
        StatusCode::FOUND,
        "{}\n{}",
        res.text(),
        edge_log()
    );
    // nginx makes the redirect absolute (its absolute_redirect is on by default).
    let location = res.header("location").unwrap();
    let location = location
        .strip_prefix(&format!("http://{edge}"))
        .unwrap_or(location)
        .to_string();
    assert_eq!(location, "/.sessiongate/login?rd=%2Fapp%2Fpage%3Fx%3D1");
    let page = get(edge, &location, &[BROWSER]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.text().contains("name=\"rd\" value=\"/app/page?x=1\""),
        "{}",
        page.text()
    );
    assert_eq!(upstream.requests(), 0, "nothing reached the app");

    // 2. Signing in through the proxy lands back on the page, as alice.
    let (alice, back) = sign_in(edge, USER, PASSWORD, "/app/page?x=1").await;
    assert_eq!(back, "/app/page?x=1");
    let res = get(edge, &back, &[("cookie", &alice), BROWSER]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(res.json()["uri"], "/app/page?x=1");
    assert_eq!(res.upstream_header("x-forwarded-user"), vec!["alice"]);
    assert_eq!(
        res.upstream_header("x-forwarded-groups"),
        vec!["admins,ops"]
    );

    // 3. A script without a session gets the 401, not a page.
    let res = get(edge, "/app/api", &[]).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    assert_eq!(res.json()["error"], "login required");

    // 4. A rule refuses bob: 403, and the app never hears of it.
    let (bob, _) = sign_in(edge, "bob", BOB_PASSWORD, "/").await;
    let before = upstream.requests();
    let res = get(edge, "/admin/users", &[("cookie", &bob)]).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert_eq!(upstream.requests(), before);
    let res = get(edge, "/admin/users", &[("cookie", &alice)]).await;
    assert_eq!(res.status, StatusCode::OK);

    // 5. What a client says about the original request or the user changes nothing.
    let spoofs = [
        ("x-original-uri", "/public/x"),
        ("x-original-method", "POST"),
        ("x-forwarded-uri", "/public/x"),
        ("x-forwarded-method", "POST"),
        ("x-forwarded-user", "admin"),
        ("x-forwarded-groups", "admins"),
        ("x_forwarded_user", "admin"),
        ("x_forwarded_groups", "admins"),
    ];
    let res = get(edge, "/admin/users", &spoofs).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{}", res.text());
    let mut as_bob = spoofs.to_vec();
    as_bob.push(("cookie", &bob));
    let res = get(edge, "/admin/users", &as_bob).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    let res = get(edge, "/app/x", &as_bob).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.upstream_header("x-forwarded-user"), vec!["bob"]);
    assert_eq!(
        non_empty(res.upstream_header("x-forwarded-groups")),
        Vec::<String>::new()
    );
    assert!(
        res.upstream_header("x_forwarded_user").is_empty(),
        "{}",
        res.text()
    );
    assert!(
        res.upstream_header("x_forwarded_groups").is_empty(),
        "{}",
        res.text()
    );

    // 6. A public path reaches the app without a session and without an identity, whatever
    // the client claimed.
    let res = get(edge, "/public/x", &spoofs).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(
        non_empty(res.upstream_header("x-forwarded-user")),
        Vec::<String>::new()
    );
    assert_eq!(
        non_empty(res.upstream_header("x-forwarded-groups")),
        Vec::<String>::new()
    );

    // 7. Clients cannot ask the auth endpoint themselves through the proxy.
    let res = get(
        edge,
        "/.sessiongate/auth/nginx",
        &[("x-original-uri", "/admin"), ("x-original-method", "GET")],
    )
    .await;
    assert_eq!(res.status, StatusCode::NOT_FOUND, "{}", res.text());
    let res = get(
        edge,
        "/.sessiongate/auth/forward",
        &[("x-forwarded-uri", "/admin"), ("x-forwarded-method", "GET")],
    )
    .await;
    assert_eq!(res.status, StatusCode::NOT_FOUND, "{}", res.text());
}

/// Header values that say something (a proxy may pass an empty identity header on).
fn non_empty(values: Vec<String>) -> Vec<String> {
    values.into_iter().filter(|v| !v.is_empty()).collect()
}

#[tokio::test]
async fn forward_auth_through_a_real_nginx() {
    let upstream = start_upstream().await;
    let gate = start_gate().await;
    let nginx = edge::nginx(&nginx_config(
        &upstream.addr.to_string(),
        &gate.addr.to_string(),
    ));
    scenario(nginx.addr, &upstream, || nginx.log()).await;
}

#[tokio::test]
async fn forward_auth_through_a_real_caddy() {
    let upstream = start_upstream().await;
    let gate = start_gate().await;
    let caddy = edge::caddy(&caddy_config(
        &upstream.addr.to_string(),
        &gate.addr.to_string(),
    ));
    scenario(caddy.addr, &upstream, || caddy.log()).await;
}

/// sessiongate behind the README's nginx, with a rule that denies admin.example.com to all.
#[tokio::test]
async fn a_trailing_dot_host_through_a_real_nginx_is_judged_as_the_host() {
    let upstream = start_upstream().await;
    let toml = team_config(
        "127.0.0.1:9".parse().unwrap(),
        "",
        "[[rules]]\npath = \"/\"\nhost = \"admin.example.com\"\ndeny = true\n",
    )
    .replace("[upstream]\nurl = \"http://127.0.0.1:9\"\n", "")
    .replace(
        "shutdown_timeout = \"5s\"",
        "shutdown_timeout = \"5s\"\ntrusted_proxies = [\"127.0.0.1\"]",
    );
    let gate = start_proxy_with(&toml).await;
    let nginx = edge::nginx(&nginx_config(
        &upstream.addr.to_string(),
        &gate.addr.to_string(),
    ));
    let (alice, _) = sign_in(nginx.addr, USER, PASSWORD, "/").await;
    let as_alice = |host: &'static str| {
        let (addr, alice) = (nginx.addr, &alice);
        async move { get(addr, "/app/x", &[("cookie", alice), ("host", host)]).await }
    };
    // nginx passes `$http_host` as sent: the trailing dot reaches sessiongate.
    for host in [
        "admin.example.com",
        "admin.example.com.",
        "ADMIN.example.com.:80",
    ] {
        let res = as_alice(host).await;
        assert_eq!(res.status, StatusCode::FORBIDDEN, "{host}\n{}", nginx.log());
    }
    // Hosts nginx lets through that are no host: refused, never nginx's 500.
    for host in [
        "evil@admin.example.com",
        "admin%2eexample.com",
        "admin.example.com:x",
    ] {
        let res = as_alice(host).await;
        assert!(
            matches!(res.status.as_u16(), 400 | 403),
            "{host}: {}\n{}",
            res.status,
            nginx.log()
        );
    }
    assert_eq!(upstream.requests(), 0, "nothing reached the app");
    let res = as_alice("app.example.com.").await;
    assert_eq!(res.status, StatusCode::OK, "{}", nginx.log());
    assert_eq!(res.upstream_header("x-forwarded-user"), vec![USER]);
}

/// The edge helpers' readiness check names the process that listens, not merely a port that
/// accepts: a port another process holds is not the edge's.
#[test]
fn the_readiness_check_knows_whose_socket_listens() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    assert!(crate::common::edge::listens(std::process::id(), port));
    let other = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    assert!(!crate::common::edge::listens(other.id(), port));
    drop(listener);
    assert!(!crate::common::edge::listens(std::process::id(), port));
    let mut other = other;
    other.kill().unwrap();
    other.wait().unwrap();
}
