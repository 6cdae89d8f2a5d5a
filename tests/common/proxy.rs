//! A TCP proxy in front of PostgreSQL that a test can cut, to play a database outage without
//! touching the shared server.
//!
//! - `Open`: bytes flow both ways.
//! - `Refuse`: every connection is cut and new ones are closed at once (database down).
//! - `Hold`: connections stay up but client bytes are queued, not forwarded (a database that
//!   hangs, or PgBouncer queueing a query while its server is away). Back to `Open`, queued bytes
//!   of connections that are *still open* are delivered — so a statement whose connection the
//!   API failed to close would run late, which is what the tests look for.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Open,
    Refuse,
    Hold,
}

pub struct PgProxy {
    pub address: SocketAddr,
    mode: watch::Sender<Mode>,
    counts: Arc<Mutex<Counts>>,
    task: JoinHandle<()>,
}

/// What clients sent upstream, counted from the wire protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// TCP connections opened through the proxy.
    pub connections: usize,
    /// Extended-protocol `Sync` messages: one per round trip.
    pub syncs: usize,
    /// `Parse` messages: one per statement sent with the extended protocol.
    pub parses: usize,
    /// Simple-protocol `Query` messages.
    pub queries: usize,
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.mode.send_replace(Mode::Refuse);
    }
}

impl PgProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (mode, _) = watch::channel(Mode::Open);
        let modes = mode.clone();
        let counts = Arc::new(Mutex::new(Counts::default()));
        let tally = counts.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let modes = modes.subscribe();
                if *modes.borrow() == Mode::Refuse {
                    drop(client);
                    continue;
                }
                if let Ok(mut counts) = tally.lock() {
                    counts.connections += 1;
                }
                tokio::spawn(pipe(client, upstream, modes, tally.clone()));
            }
        });
        Self {
            address,
            mode,
            counts,
            task,
        }
    }

    /// Counts since the last call (and resets them).
    pub fn take_counts(&self) -> Counts {
        std::mem::take(&mut *self.counts.lock().expect("counts"))
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// A database URL through the proxy, same credentials and database as `direct`.
    pub fn url_for(&self, direct: &str) -> String {
        let config: tokio_postgres::Config = direct.parse().expect("database url");
        let user = config.get_user().unwrap_or("postgres");
        let db = config.get_dbname().unwrap_or("postgres");
        format!("postgres://{user}@127.0.0.1:{}/{db}", self.address.port())
    }
}

/// Splits the client→server byte stream into protocol messages and counts the interesting ones.
struct MessageCounter {
    counts: Arc<Mutex<Counts>>,
    buffer: Vec<u8>,
    started: bool,
}

impl MessageCounter {
    fn feed(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
        loop {
            // The startup packet (and an SSLRequest) has no type byte: just a length.
            let header = if self.started { 5 } else { 4 };
            if self.buffer.len() < header {
                return;
            }
            let at = header - 4;
            let length = u32::from_be_bytes(self.buffer[at..at + 4].try_into().unwrap()) as usize;
            let total = at + length;
            if self.buffer.len() < total {
                return;
            }
            if self.started {
                let mut counts = self.counts.lock().expect("counts");
                match self.buffer[0] {
                    b'S' => counts.syncs += 1,
                    b'P' => counts.parses += 1,
                    b'Q' => counts.queries += 1,
                    _ => {}
                }
            } else if length != 8 {
                // Not an SSLRequest/GSSENCRequest: the startup packet; typed messages follow.
                self.started = true;
            }
            self.buffer.drain(..total);
        }
    }
}

async fn pipe(
    client: TcpStream,
    upstream: SocketAddr,
    mut modes: watch::Receiver<Mode>,
    counts: Arc<Mutex<Counts>>,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let mut cut = modes.clone();
    let mut counter = MessageCounter {
        counts,
        buffer: Vec::new(),
        started: false,
    };
    let to_server = async move {
        let mut pending = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let mode = *modes.borrow_and_update();
            if mode == Mode::Refuse {
                return;
            }
            if mode == Mode::Open && !pending.is_empty() {
                counter.feed(&pending);
                if server_write.write_all(&pending).await.is_err() {
                    return;
                }
                pending.clear();
            }
            tokio::select! {
                read = client_read.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                },
                changed = modes.changed() => if changed.is_err() { return },
            }
        }
    };
    let to_client = async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    };
    let refused = async move {
        let _ = cut.wait_for(|m| *m == Mode::Refuse).await;
    };
    // Whichever ends first ends the connection: both sockets close when this returns.
    tokio::select! {
        _ = to_server => {}
        _ = to_client => {}
        _ = refused => {}
    }
}
