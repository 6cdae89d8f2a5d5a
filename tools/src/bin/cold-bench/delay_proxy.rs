//! A TCP proxy that plays a network link with a fixed one-way delay.
//!
//! Every chunk read from one side is written to the other `one_way` after it was read, in
//! order, without holding back what follows (a link with latency, not a slow link). A new
//! connection reaches the upstream one round trip (`2 × one_way`) after it was accepted, as a
//! TCP handshake over that link would, and nothing is forwarded before: so a client's first
//! request arrives `3 × one_way` after its `connect()`, and its answer `4 × one_way` after,
//! exactly as over a real link. End-of-stream is passed on (half-close) after the same delay.
//!
//! Precision: tokio's timer ticks in whole milliseconds (a 1 ms delay would be 1–2 ms), so the
//! delays are slept on the blocking pool's threads (`std::thread::sleep`, ~0.1 ms late at most).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub struct DelayProxy {
    pub address: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DelayProxy {
    /// Listens on 127.0.0.1 (a free port) and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr, one_way: Duration) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(pipe(client, upstream, one_way));
            }
        });
        Ok(Self { address, task })
    }
}

async fn pipe(client: TcpStream, upstream: SocketAddr, one_way: Duration) {
    // The handshake's round trip; what the client sends meanwhile waits in the socket.
    sleep_until(Instant::now() + one_way * 2).await;
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    // Each chunk goes out as soon as it is due: no Nagle on top of the delay.
    if client.set_nodelay(true).is_err() || server.set_nodelay(true).is_err() {
        return;
    }
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        direction(client_read, server_write, one_way),
        direction(server_read, client_write, one_way),
    );
}

/// One direction: a reader stamps each chunk with its due time, a writer sends it then.
async fn direction(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, one_way: Duration) {
    let (chunks, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if chunks
                        .send((Instant::now() + one_way, buffer[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        // The end of the stream travels as late as the bytes before it.
        let _ = chunks.send((Instant::now() + one_way, Vec::new()));
    };
    let write = async move {
        while let Some((at, bytes)) = due.recv().await {
            sleep_until(at).await;
            if bytes.is_empty() {
                break;
            }
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}

/// Sleeps until `at` with sub-millisecond precision, without blocking the runtime.
async fn sleep_until(at: Instant) {
    let wait = at.saturating_duration_since(Instant::now());
    if !wait.is_zero() {
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(wait)).await;
    }
}
