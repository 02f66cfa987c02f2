//! `{prefix}/readyz` and the upstream: 200 while the upstream accepts connections, 503 naming
//! it when it stops and 200 again when it is back, one probe connection a second however many
//! readiness requests arrive, a bounded wait for an upstream that never completes the TCP
//! handshake, and no upstream at all (forward-auth only) judged by the store alone.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::redis::eventually;
use crate::common::*;
use http::StatusCode;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const READYZ: &str = "/.sessiongate/readyz";

/// An echo upstream listening on `listener`; aborting the task closes the listener.
fn serve_upstream(listener: TcpListener) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(
                http1::Builder::new().serve_connection(TokioIo::new(stream), service_fn(echo)),
            );
        }
    })
}

/// Closes the upstream's listener: once this returns, connections to its port are refused.
async fn stop(upstream: JoinHandle<()>) {
    upstream.abort();
    let _ = upstream.await;
}

/// Listens on `addr` again. The port was ours a moment ago; another socket taking it in
/// between is retried rather than failed on at once.
async fn listen_again(addr: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(e) => assert!(Instant::now() < deadline, "cannot listen on {addr}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn readyz_is_200_while_the_upstream_accepts_connections() {
    let (_upstream, proxy) = start().await;
    let res = get(proxy.addr, READYZ, &[]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(res.text().trim_end(), "ready");
}

#[tokio::test]
async fn readyz_goes_503_when_the_upstream_stops_and_200_when_it_is_back() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = serve_upstream(listener);
    let proxy = start_proxy_with(&config_toml(addr, "", "")).await;
    assert_eq!(get(proxy.addr, READYZ, &[]).await.status, StatusCode::OK);

    stop(upstream).await;
    // The answer before the stop stands for up to a second.
    eventually("readyz says 503", || async {
        get(proxy.addr, READYZ, &[]).await.status == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let res = get(proxy.addr, READYZ, &[]).await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        res.text().trim_end(),
        format!("not ready: the upstream ({addr}) does not accept connections")
    );
    assert_eq!(res.header("retry-after"), Some("1"));
    assert_eq!(
        get(proxy.addr, "/.sessiongate/healthz", &[]).await.status,
        StatusCode::OK,
        "the process is alive"
    );

    let upstream = serve_upstream(listen_again(addr).await);
    eventually("readyz says 200 again", || async {
        get(proxy.addr, READYZ, &[]).await.status == StatusCode::OK
    })
    .await;
    stop(upstream).await;
}

#[tokio::test]
async fn a_flood_of_readyz_requests_opens_one_upstream_connection_a_second() {
    let (upstream, proxy) = start().await;
    let started = Instant::now();
    let answers = futures_util::future::join_all(
        (0..200).map(|_| async { get(proxy.addr, READYZ, &[]).await.status }),
    )
    .await;
    let seconds = started.elapsed().as_secs() as usize;
    assert!(answers.iter().all(|s| *s == StatusCode::OK), "{answers:?}");
    // One probe per started second, however long the flood took on this machine.
    let probes = upstream
        .connections
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        (1..=seconds + 1).contains(&probes),
        "{probes} probe connections for 200 readyz requests in {seconds} s"
    );
    assert_eq!(upstream.requests(), 0, "a probe sends no request");
}

/// A listener whose accept queue is full, so the kernel drops new connection attempts: a
/// connect to it neither succeeds nor fails, it waits.
async fn unanswered_listener() -> (socket2::Socket, Vec<tokio::net::TcpStream>) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut queued = Vec::new();
    // A backlog of 0 queues one connection; the second attempt is dropped.
    while let Ok(Ok(stream)) =
        tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await
    {
        queued.push(stream);
        assert!(queued.len() < 16, "the accept queue never filled");
    }
    (socket, queued)
}

#[tokio::test]
async fn an_upstream_that_never_completes_the_handshake_is_not_ready_within_the_deadline() {
    let (listener, _queued) = unanswered_listener().await;
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let proxy = start_proxy_with(&config_toml(addr, "timeout = \"60s\"", "")).await;

    let started = Instant::now();
    let ready = tokio::spawn(get(proxy.addr, READYZ, &[]));
    // The probe waits on the upstream; the worker goes on serving other requests. (Whether
    // readyz is still waiting says something only if healthz came back inside the probe's
    // deadline, which a held-up test thread may miss.)
    let health = get(proxy.addr, "/.sessiongate/healthz", &[]).await;
    assert_eq!(health.status, StatusCode::OK);
    if started.elapsed() < Duration::from_millis(1900) {
        assert!(
            !ready.is_finished(),
            "readyz answered before the probe's 2 s deadline"
        );
    }
    let res = tokio::time::timeout(Duration::from_secs(30), ready)
        .await
        .expect("readyz answers once the probe's deadline passes")
        .unwrap();
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        res.text().contains("does not accept connections"),
        "{}",
        res.text()
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the probe gave up before its deadline"
    );
}

#[tokio::test]
async fn readyz_without_an_upstream_depends_on_the_store_only() {
    let toml = config_toml("127.0.0.1:9".parse().unwrap(), "", "")
        .replace("url = \"http://127.0.0.1:9\"", "");
    let proxy = start_proxy_with(&toml).await;
    assert!(proxy.app.upstream_probe.is_none());
    let res = get(proxy.addr, READYZ, &[]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
}
