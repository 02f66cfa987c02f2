//! Binding: listening sockets and the file-descriptor limit the connections need.

use std::net::SocketAddr;

/// A non-blocking listening socket with a deep accept queue. The standard library's 128 drops
/// connections when a thousand clients arrive at once (SYN retransmits cost them a second);
/// the kernel caps the value at net.core.somaxconn.
pub fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// File descriptors `max_connections` needs: each client connection can hold an upstream
/// connection too, and a few more for listeners, logs and Redis.
pub fn descriptors_needed(max_connections: usize) -> u64 {
    (max_connections as u64) * 2 + 256
}

/// Raises the soft file-descriptor limit to the hard one, as far as `max_connections` needs.
pub fn raise_fd_limit(max_connections: usize) {
    let wanted = descriptors_needed(max_connections);
    match rlimit::increase_nofile_limit(wanted) {
        Ok(got) if got < wanted => tracing::warn!(
            "the file descriptor limit is {got}; server.max_connections = {max_connections} needs about {wanted} (raise `ulimit -n`)"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot raise the file descriptor limit: {e}"),
    }
}
