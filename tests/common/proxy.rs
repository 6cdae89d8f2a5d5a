//! A TCP proxy in front of PostgreSQL (or PgBouncer) that a test can cut and fault, to play
//! what networks do to a database connection without touching the shared server.
//!
//! Modes apply to every connection:
//! - `Open`: bytes flow both ways.
//! - `Refuse`: every connection is cut and new ones are closed at once (database down).
//! - `Hold`: connections stay up but client bytes are queued, not forwarded (a database that
//!   hangs, or PgBouncer queueing a query while its server is away). Back to `Open`, queued bytes
//!   of connections that are *still open* are delivered — so a statement whose connection the
//!   API failed to close would run late, which is what the tests look for.
//!
//! [`Fault`]s hit only the connections open when they are armed (new connections work), each
//! at the next bytes the client sends on it: the network failures in front of Neon.
//! [`PgProxy::fault_on`] aims a fault at one request instead: the first client bytes, on any
//! connection, that contain the request's own data (its title, its task id's 16 bytes).
//! [`PgProxy::silence_established`] makes every open connection go silent at once, whatever it
//! is doing. Every fault that fires is counted ([`PgProxy::take_fired`]).
//! [`PgProxy::delay_connects`] plays a database that is slow to accept (a compute waking up).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use std::time::Duration;

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

/// What happens to an established connection at the client's next bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Swallowed, never answered, connection left open, nothing more passes either way: a NAT
    /// or pooler that forgot the flow without telling anyone.
    SilentDrop,
    /// Forwarded (the statement reaches the database and runs), then nothing more passes
    /// either way, the connection left open: the connection went silent mid-statement.
    ForwardThenSilent,
    /// Answered with a TCP reset, nothing forwarded: an expired NAT mapping, a restarted peer.
    Reset,
    /// Forwarded; the server's answer is discarded and the client gets a reset: the connection
    /// died after the database received (and ran) the statement.
    LoseAnswer,
    /// `LoseAnswer`, and the proxy then refuses everything (`Mode::Refuse`) until told otherwise:
    /// the database unreachable after the statement was sent.
    LoseAnswerThenRefuse,
}

/// What a test can do to one live connection.
#[derive(Default)]
struct Control {
    /// Fires at the client's next bytes.
    armed: Mutex<Option<Fault>>,
    /// Nothing passes either way any more; the sockets stay open.
    silent: AtomicBool,
}

type Armed = Arc<Control>;
/// The controls of the connections still open (a closed connection's is gone).
type Live = Arc<Mutex<Vec<Weak<Control>>>>;

/// A fault waiting for the first client bytes that contain `pattern`, on any connection.
struct Aimed {
    fault: Fault,
    pattern: Vec<u8>,
    /// Fires this many more times.
    remaining: usize,
}

type Target = Arc<Mutex<Option<Aimed>>>;

pub struct PgProxy {
    pub address: SocketAddr,
    mode: Arc<watch::Sender<Mode>>,
    counts: Arc<Mutex<Counts>>,
    live: Live,
    target: Target,
    fired: Arc<AtomicUsize>,
    connect_delay: Arc<Mutex<Duration>>,
    task: JoinHandle<()>,
}

/// What clients sent upstream, counted from the wire protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// TCP connections opened through the proxy (cancel requests included).
    pub connections: usize,
    /// Connections that carried a `CancelRequest` instead of a startup packet.
    pub cancels: usize,
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
        let mode = Arc::new(watch::channel(Mode::Open).0);
        let counts = Arc::new(Mutex::new(Counts::default()));
        let live: Live = Arc::default();
        let target: Target = Arc::default();
        let fired = Arc::new(AtomicUsize::new(0));
        let connect_delay = Arc::new(Mutex::new(Duration::ZERO));
        let (modes, tally, registry, delay, aimed, fired_count) = (
            mode.clone(),
            counts.clone(),
            live.clone(),
            connect_delay.clone(),
            target.clone(),
            fired.clone(),
        );
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *modes.borrow() == Mode::Refuse {
                    drop(client);
                    continue;
                }
                if let Ok(mut counts) = tally.lock() {
                    counts.connections += 1;
                }
                let armed: Armed = Arc::default();
                if let Ok(mut live) = registry.lock() {
                    live.retain(|slot| slot.strong_count() > 0);
                    live.push(Arc::downgrade(&armed));
                }
                let delay = delay.lock().map(|d| *d).unwrap_or_default();
                let connection = Connection {
                    upstream,
                    modes: modes.clone(),
                    counts: tally.clone(),
                    armed,
                    target: aimed.clone(),
                    fired: fired_count.clone(),
                    delay,
                };
                tokio::spawn(connection.pipe(client));
            }
        });
        Self {
            address,
            mode,
            counts,
            live,
            target,
            fired,
            connect_delay,
            task,
        }
    }

    /// Arms `fault` on every connection open now; returns how many there are.
    pub fn fault_established(&self, fault: Fault) -> usize {
        let live = self.live.lock().expect("live connections");
        let mut armed = 0;
        for control in live.iter().filter_map(Weak::upgrade) {
            *control.armed.lock().expect("fault slot") = Some(fault);
            armed += 1;
        }
        armed
    }

    /// Arms `fault` for the first client bytes, on any connection open now or later, that
    /// contain `pattern`; it fires once (a resend carrying the same bytes passes).
    pub fn fault_on(&self, fault: Fault, pattern: impl Into<Vec<u8>>) {
        self.fault_on_times(fault, pattern, 1);
    }

    /// [`Self::fault_on`] for the first `times` matching sends (a resend is hit too).
    pub fn fault_on_times(&self, fault: Fault, pattern: impl Into<Vec<u8>>, times: usize) {
        *self.target.lock().expect("target") = Some(Aimed {
            fault,
            pattern: pattern.into(),
            remaining: times,
        });
    }

    /// Every connection open now goes silent at once, in whatever state it is (a statement
    /// in flight, an answer on its way, idle); returns how many there are.
    pub fn silence_established(&self) -> usize {
        let live = self.live.lock().expect("live connections");
        let mut silenced = 0;
        for control in live.iter().filter_map(Weak::upgrade) {
            if !control.silent.swap(true, Ordering::SeqCst) {
                silenced += 1;
            }
        }
        self.fired.fetch_add(silenced, Ordering::SeqCst);
        silenced
    }

    /// Faults fired since the last call (and resets the count).
    pub fn take_fired(&self) -> usize {
        self.fired.swap(0, Ordering::SeqCst)
    }

    /// New connections reach the upstream only after `delay`.
    pub fn delay_connects(&self, delay: Duration) {
        *self.connect_delay.lock().expect("delay") = delay;
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

/// A `CancelRequest`'s request code (1234 << 16 | 5678), after its length.
const CANCEL_REQUEST_CODE: [u8; 4] = 80_877_102u32.to_be_bytes();

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
            } else if length == 16 && self.buffer[4..8] == CANCEL_REQUEST_CODE {
                self.counts.lock().expect("counts").cancels += 1;
            } else if length != 8 {
                // Not an SSLRequest/GSSENCRequest: the startup packet; typed messages follow.
                self.started = true;
            }
            self.buffer.drain(..total);
        }
    }
}

/// One proxied connection.
struct Connection {
    upstream: SocketAddr,
    modes: Arc<watch::Sender<Mode>>,
    counts: Arc<Mutex<Counts>>,
    armed: Armed,
    target: Target,
    fired: Arc<AtomicUsize>,
    delay: Duration,
}

impl Connection {
    /// The fault that fires at these client bytes, if any: the connection's own, else the
    /// one aimed at bytes they contain.
    fn fault_at(&self, bytes: &[u8]) -> Option<Fault> {
        let own = self
            .armed
            .armed
            .lock()
            .ok()
            .and_then(|mut slot| slot.take());
        let fault = own.or_else(|| {
            let mut target = self.target.lock().ok()?;
            let aimed = target.as_ref()?;
            let hit = bytes
                .windows(aimed.pattern.len().max(1))
                .any(|window| window == aimed.pattern.as_slice());
            if !hit {
                return None;
            }
            let fault = aimed.fault;
            if aimed.remaining <= 1 {
                *target = None;
            } else if let Some(aimed) = target.as_mut() {
                aimed.remaining -= 1;
            }
            Some(fault)
        });
        if fault.is_some() {
            self.fired.fetch_add(1, Ordering::SeqCst);
        }
        fault
    }
}

impl Connection {
    async fn pipe(self, client: TcpStream) {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let Ok(server) = TcpStream::connect(self.upstream).await else {
            return;
        };
        let (mut client_read, client_write) = client.into_split();
        let (mut server_read, mut server_write) = server.into_split();
        let mut modes = self.modes.subscribe();
        let mut cut = self.modes.subscribe();
        let mut counter = MessageCounter {
            counts: self.counts.clone(),
            buffer: Vec::new(),
            started: false,
        };
        // Set when the server's next answer must be discarded and the client reset.
        let lose_answer: Arc<Mutex<Option<Fault>>> = Arc::new(Mutex::new(None));
        let reset_client = Arc::new(tokio::sync::Notify::new());
        let client_write = Arc::new(tokio::sync::Mutex::new(client_write));
        let to_server = {
            let lose_answer = lose_answer.clone();
            let reset_client = reset_client.clone();
            let this = &self;
            async move {
                let silent = || this.armed.silent.load(Ordering::SeqCst);
                let mut pending = Vec::new();
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let mode = *modes.borrow_and_update();
                    if mode == Mode::Refuse {
                        return;
                    }
                    if mode == Mode::Open && !pending.is_empty() && !silent() {
                        let mut then_silent = false;
                        match this.fault_at(&pending) {
                            Some(Fault::SilentDrop) => {
                                this.armed.silent.store(true, Ordering::SeqCst)
                            }
                            Some(Fault::ForwardThenSilent) => then_silent = true,
                            Some(Fault::Reset) => {
                                reset_client.notify_one();
                                return std::future::pending().await;
                            }
                            Some(fault) => {
                                *lose_answer.lock().expect("lose answer") = Some(fault);
                            }
                            None => {}
                        }
                        if !silent() {
                            counter.feed(&pending);
                            if server_write.write_all(&pending).await.is_err() {
                                return;
                            }
                        }
                        pending.clear();
                        if then_silent {
                            this.armed.silent.store(true, Ordering::SeqCst);
                        }
                    }
                    tokio::select! {
                        read = client_read.read(&mut buf) => match read {
                            Ok(0) | Err(_) => return,
                            Ok(_) if silent() => {} // swallowed
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                        },
                        changed = modes.changed() => if changed.is_err() { return },
                    }
                }
            }
        };
        let to_client = {
            let client_write = client_write.clone();
            let reset_client = reset_client.clone();
            let modes = self.modes.clone();
            let control = self.armed.clone();
            async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = match server_read.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if control.silent.load(Ordering::SeqCst) {
                        continue; // discarded
                    }
                    let lost = lose_answer.lock().expect("lose answer").take();
                    if let Some(fault) = lost {
                        // The statement ran; its answer goes nowhere.
                        if fault == Fault::LoseAnswerThenRefuse {
                            modes.send_replace(Mode::Refuse);
                        }
                        reset_client.notify_one();
                        return std::future::pending().await;
                    }
                    let mut writer = client_write.lock().await;
                    if writer.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        };
        let refused = async move {
            let _ = cut.wait_for(|m| *m == Mode::Refuse).await;
        };
        let reset = reset_client.notified();
        // Whichever ends first ends the connection: both sockets close when this returns.
        tokio::select! {
            _ = to_server => {}
            _ = to_client => {}
            _ = refused => {}
            _ = reset => {
                // SO_LINGER 0: closing sends RST instead of FIN.
                let writer = client_write.lock().await;
                // Deprecated because a non-zero linger blocks on drop; zero never does.
                #[allow(deprecated)]
                let _ = writer.as_ref().set_linger(Some(Duration::ZERO));
            }
        }
    }
}
