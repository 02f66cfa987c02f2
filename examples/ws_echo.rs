//! WebSocket echo server, the upstream of `benches/ws/ws_bench.sh`: every text or binary message
//! comes back unchanged on the same socket. One thread, so the bench can pin it to one CPU.
//!
//!     cargo run --release --example ws_echo -- --listen 127.0.0.1:18220

use std::net::SocketAddr;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[derive(Parser)]
#[command(about = "WebSocket echo server (text and binary) for the WebSocket bench")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:18220")]
    listen: SocketAddr,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    // A bench holds thousands of sockets; the soft limit is often 1024.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let listener = TcpListener::bind(args.listen).await?;
    eprintln!("ws_echo listening on {}", listener.local_addr()?);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(echo(stream));
            }
            // Out of file descriptors or a connection reset before accept: keep serving the rest.
            Err(e) => {
                eprintln!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

async fn echo(stream: TcpStream) {
    // One small message per round trip: Nagle would hold the echo back for the client's ACK.
    let _ = stream.set_nodelay(true);
    // tungstenite zero-fills its whole read buffer before every read: at the default 128 KiB that
    // memset was most of the echo's CPU (and 128 KiB per socket). Larger frames take more reads.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    while let Some(Ok(msg)) = ws.next().await {
        // Pings are answered and closes acknowledged by tungstenite itself.
        if matches!(msg, Message::Text(_) | Message::Binary(_)) && ws.send(msg).await.is_err() {
            return;
        }
    }
}
