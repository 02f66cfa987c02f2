//! Real edge proxies for the forward-auth tests: nginx and Caddy (Debian's packages, from
//! tests/install-deps.sh), each in a scratch directory on a loopback port, stopped on drop.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::program;

pub struct Edge {
    child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    name: &'static str,
}

impl Edge {
    /// Everything the proxy wrote to its log file, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx serving `server` (a `server { }` block whose `listen` is given by the port
/// placeholder `{port}`), in one process, with every file in a scratch directory.
pub fn nginx(server: &str) -> Edge {
    let nginx = program(
        "nginx",
        "the forward-auth tests run nginx in front of sessiongate",
    );
    start("nginx", |dir, port| {
        let d = dir.display();
        let conf = format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid;\n\
             error_log {d}/log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{ access_log {d}/log; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n{}\n}}\n",
            server.replace("{port}", &port.to_string())
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let mut cmd = Command::new(&nginx);
        cmd.arg("-p").arg(dir).arg("-c").arg(dir.join("nginx.conf"));
        cmd
    })
}

/// Caddy serving `caddyfile` (its site address given by the placeholder `{port}`) on
/// 127.0.0.1 only, with its admin endpoint and automatic HTTPS off and its storage in a
/// scratch directory.
pub fn caddy(caddyfile: &str) -> Edge {
    let caddy = program(
        "caddy",
        "the forward-auth tests run Caddy in front of sessiongate",
    );
    start("caddy", |dir, port| {
        // default_bind: without it Caddy listens on every address ([::]), so a port found
        // free on 127.0.0.1 could be taken on another (seen once in CI: "address already in
        // use" on all five tries).
        let text = format!(
            "{{\n admin off\n auto_https off\n default_bind 127.0.0.1\n}}\n{}",
            caddyfile.replace("{port}", &port.to_string())
        );
        std::fs::write(dir.join("Caddyfile"), text).unwrap();
        let mut cmd = Command::new(&caddy);
        cmd.arg("run")
            .arg("--config")
            .arg(dir.join("Caddyfile"))
            .arg("--adapter")
            .arg("caddyfile")
            .env("HOME", dir)
            .env("XDG_DATA_HOME", dir.join("data"))
            .env("XDG_CONFIG_HOME", dir.join("config"));
        cmd
    })
}

/// Whether process `pid` holds the socket listening on loopback `port` (Linux: the
/// listening sockets of `/proc/net/tcp` against the process's open files). A connection that
/// succeeds proves only that some process listens there.
pub fn listens(pid: u32, port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let wanted = format!("0100007F:{port:04X}");
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local address, state (0A: LISTEN), inode
            (fields.get(1) == Some(&wanted.as_str()) && fields.get(3) == Some(&"0A"))
                .then(|| fields.get(9).map(|i| format!("socket:[{i}]")))
                .flatten()
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .any(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
}

/// Starts the proxy that `command` builds for a scratch directory and a free port, and waits
/// until it accepts connections. A port taken in between (it was free when asked) means a
/// retry on another.
fn start(name: &'static str, command: impl Fn(&Path, u16) -> Command) -> Edge {
    let mut last_log = String::new();
    // A port that failed stays held here, so the next try is given another.
    let mut held = Vec::new();
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = command(dir.path(), port)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let mut edge = Edge {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            name,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Some process accepting on the port is not enough: with every test binary running,
            // another test's server once took the port between our finding it free and the
            // edge binding it, and the test then talked to that server. It must be ours.
            if listens(edge.child.id(), port) && std::net::TcpStream::connect(edge.addr).is_ok() {
                return edge;
            }
            if let Ok(Some(_)) = edge.child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not listen on {} within 30 s:\n{}",
                    edge.name,
                    edge.addr,
                    edge.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        last_log = edge.log();
        held.push(std::net::TcpListener::bind(edge.addr).ok());
    }
    panic!("{name} did not start:\n{last_log}");
}
