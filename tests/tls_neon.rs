#![forbid(unsafe_code)]
//! Neon-shaped TLS.
//!
//! - `sslnegotiation=direct` through a TLS-terminating proxy shaped like Neon's (and like
//!   PostgreSQL 17's direct TLS): it takes an SSLRequest (and answers `S` itself) or a TLS
//!   ClientHello straight away, refuses a direct ClientHello without ALPN `postgresql` (fatal
//!   `no_application_protocol`, as PostgreSQL 17 does), and forwards the plaintext protocol to
//!   the test database. It records the flights on the client's side of the wire, so the round
//!   trip that direct negotiation saves is counted, not assumed. The API's own connection code
//!   (`tasks_shared::db`) must offer that ALPN to get through, and must refuse
//!   `sslnegotiation=direct` without TLS required.
//! - Neon's certificate shape on a throwaway PostgreSQL (`common/tls_cluster.rs`): a P-384 root,
//!   a P-384 intermediate signing with ecdsa-with-SHA384, a P-256 or P-384 leaf. `verify-full`
//!   walks the chain; SCRAM-SHA-256-PLUS (`channel_binding=require`) works because the
//!   tls-server-end-point hash follows the leaf's signature algorithm: SHA-384 (RFC 5929 §4.1).

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use common::tls_cluster::{Chain, Curve, PASSWORD, ServerChain, TlsCluster};
use common::tools::find;
use http::{Method, StatusCode};
use ring::digest::{SHA256, SHA384, digest};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{Acceptor, ServerConfig, ServerConnection};
use tasks_shared::State;
use tasks_shared::config::{Config, DatabaseSettings, Runtime};
use tasks_shared::db::{Database, DbError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres_rustls::MakeRustlsConnect;

const POSTGRESQL_ALPN: &[u8] = b"postgresql";
/// Length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
/// A TLS alert record: fatal `no_application_protocol` (120).
const NO_APPLICATION_PROTOCOL: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 120];

// ---------------------------------------------------------------------------------------------
// The proxy
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Negotiation {
    /// SSLRequest, `S`, then the TLS handshake.
    SslRequest,
    /// The TLS handshake at once.
    Direct,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToServer,
    ToClient,
}

/// One client connection as the proxy saw it on the client's side of the wire.
#[derive(Debug, Clone, Default)]
struct Wire {
    negotiation: Option<Negotiation>,
    /// `Some` once the TLS handshake completed: the ALPN protocol agreed on, if any.
    alpn: Option<Option<Vec<u8>>>,
    /// Why the proxy ended the connection, when it did (a refusal, a TLS error).
    ended: Option<String>,
    /// Flights: runs of bytes in one direction until the other side speaks, `(direction,
    /// bytes)`. Recorded before the bytes are passed on, so a client that has its answer finds
    /// it counted.
    flights: Vec<(Direction, usize)>,
}

impl Wire {
    fn record(&mut self, direction: Direction, bytes: usize) {
        match self.flights.last_mut() {
            Some((last, total)) if *last == direction => *total += bytes,
            _ => self.flights.push((direction, bytes)),
        }
    }

    fn flights(&self, direction: Direction) -> usize {
        self.flights.iter().filter(|(d, _)| *d == direction).count()
    }
}

struct TlsProxy {
    address: SocketAddr,
    wires: Arc<Mutex<Vec<Arc<Mutex<Wire>>>>>,
    /// `user[:password]` and database for [`TlsProxy::url`].
    login: String,
    db: String,
    /// Owns the connections too (a `JoinSet`): aborting it ends them.
    task: JoinHandle<()>,
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsProxy {
    /// In front of the test database (`TEST_DATABASE_URL`'s credentials and database).
    async fn start(chain: &ServerChain) -> Self {
        // The test database must exist before anything connects through the proxy to it.
        common::prepare_database().await;
        let config: tokio_postgres::Config =
            common::test_database_url().parse().expect("database url");
        let password = config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        Self::start_to(
            common::pooled_upstream(),
            chain,
            config.get_user().unwrap_or("postgres"),
            password.as_deref(),
            config.get_dbname().unwrap_or("postgres"),
        )
        .await
    }

    /// Terminates TLS with `chain` (what the server sends: `chain.chain_der`) and forwards the
    /// plaintext protocol to `upstream`, where `user` may log in to `db`.
    async fn start_to(
        upstream: SocketAddr,
        chain: &ServerChain,
        user: &str,
        password: Option<&str>,
        db: &str,
    ) -> Self {
        let config = server_config(chain);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let wires = Arc::new(Mutex::new(Vec::<Arc<Mutex<Wire>>>::new()));
        let registry = wires.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let wire = Arc::new(Mutex::new(Wire::default()));
                registry.lock().expect("wires").push(wire.clone());
                connections.spawn(serve(client, upstream, config.clone(), wire));
                while connections.try_join_next().is_some() {}
            }
        });
        let password = password
            .map(|p| {
                format!(
                    ":{}",
                    form_urlencoded::byte_serialize(p.as_bytes()).collect::<String>()
                )
            })
            .unwrap_or_default();
        Self {
            address,
            wires,
            login: format!("{user}{password}"),
            db: db.to_owned(),
            task,
        }
    }

    /// The connections since the last call, as they are now.
    fn take_wires(&self) -> Vec<Wire> {
        std::mem::take(&mut *self.wires.lock().expect("wires"))
            .iter()
            .map(|wire| wire.lock().expect("wire").clone())
            .collect()
    }

    /// The upstream's URL through the proxy, as `localhost` (the certificate's only name).
    fn url(&self, query: &str) -> String {
        format!(
            "postgres://{}@localhost:{}/{}?{query}",
            self.login,
            self.address.port(),
            self.db
        )
    }
}

fn server_config(chain: &ServerChain) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = chain
        .chain_der
        .iter()
        .map(|der| CertificateDer::from(der.clone()))
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(chain.key_der.clone()));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server certificate");
    // Offered: must be `postgresql` (rustls refuses any other list with no_application_protocol).
    config.alpn_protocols = vec![POSTGRESQL_ALPN.to_vec()];
    // No TLS 1.3 session tickets: sent after the client's Finished, they would race the startup
    // message and make the flight count depend on timing. (No resumption is used either way.)
    config.send_tls13_tickets = 0;
    Arc::new(config)
}

async fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    config: Arc<ServerConfig>,
    wire: Arc<Mutex<Wire>>,
) {
    if let Err(reason) = terminate(&mut client, upstream, config, &wire).await {
        wire.lock().expect("wire").ended = Some(reason);
    }
}

async fn read_client(
    client: &mut TcpStream,
    buf: &mut [u8],
    wire: &Mutex<Wire>,
) -> Result<usize, String> {
    let n = client.read(buf).await.map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("client closed during the handshake".to_owned());
    }
    wire.lock().expect("wire").record(Direction::ToServer, n);
    Ok(n)
}

async fn send_client(
    client: &mut TcpStream,
    bytes: &[u8],
    wire: &Mutex<Wire>,
) -> Result<(), String> {
    wire.lock()
        .expect("wire")
        .record(Direction::ToClient, bytes.len());
    client.write_all(bytes).await.map_err(|e| e.to_string())
}

async fn flush_tls(
    tls: &mut ServerConnection,
    client: &mut TcpStream,
    wire: &Mutex<Wire>,
) -> Result<(), String> {
    while tls.wants_write() {
        let mut out = Vec::new();
        tls.write_tls(&mut out).map_err(|e| e.to_string())?;
        send_client(client, &out, wire).await?;
    }
    Ok(())
}

/// Negotiation, TLS handshake, then plaintext both ways until either side closes.
async fn terminate(
    client: &mut TcpStream,
    upstream: SocketAddr,
    config: Arc<ServerConfig>,
    wire: &Mutex<Wire>,
) -> Result<(), String> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut received = Vec::new();
    // An SSLRequest, or a TLS record (0x16: handshake) straight away.
    let negotiation = loop {
        let n = read_client(client, &mut buf, wire).await?;
        received.extend_from_slice(&buf[..n]);
        if received[0] == 0x16 {
            break Negotiation::Direct;
        }
        if received.len() >= SSL_REQUEST.len() {
            if received[..SSL_REQUEST.len()] != SSL_REQUEST {
                return Err("refused: not TLS (plain-text startup)".to_owned());
            }
            received.drain(..SSL_REQUEST.len());
            send_client(client, b"S", wire).await?;
            break Negotiation::SslRequest;
        }
    };
    wire.lock().expect("wire").negotiation = Some(negotiation);

    let mut acceptor = Acceptor::default();
    let accepted = loop {
        let mut unread = &received[..];
        while !unread.is_empty() {
            acceptor.read_tls(&mut unread).map_err(|e| e.to_string())?;
        }
        received.clear();
        match acceptor.accept() {
            Ok(Some(accepted)) => break accepted,
            Ok(None) => {
                let n = read_client(client, &mut buf, wire).await?;
                received.extend_from_slice(&buf[..n]);
            }
            Err((error, mut alert)) => {
                let mut out = Vec::new();
                let _ = alert.write_all(&mut out);
                send_client(client, &out, wire).await?;
                return Err(format!("ClientHello: {error}"));
            }
        }
    };
    let offers_postgresql = accepted
        .client_hello()
        .alpn()
        .is_some_and(|mut offered| offered.any(|p| p == POSTGRESQL_ALPN));
    if negotiation == Negotiation::Direct && !offers_postgresql {
        send_client(client, &NO_APPLICATION_PROTOCOL, wire).await?;
        return Err("refused: direct TLS without ALPN postgresql".to_owned());
    }
    let mut tls = match accepted.into_connection(config) {
        Ok(tls) => tls,
        Err((error, mut alert)) => {
            let mut out = Vec::new();
            let _ = alert.write_all(&mut out);
            send_client(client, &out, wire).await?;
            return Err(format!("TLS: {error}"));
        }
    };

    let mut server = TcpStream::connect(upstream)
        .await
        .map_err(|e| e.to_string())?;
    let mut from_server = vec![0u8; 16 * 1024];
    let mut plain = vec![0u8; 16 * 1024];
    loop {
        flush_tls(&mut tls, client, wire).await?;
        if !tls.is_handshaking() {
            let mut wire = wire.lock().expect("wire");
            if wire.alpn.is_none() {
                wire.alpn = Some(tls.alpn_protocol().map(<[u8]>::to_vec));
            }
        }
        tokio::select! {
            read = client.read(&mut buf) => {
                let n = read.map_err(|e| e.to_string())?;
                if n == 0 {
                    return Ok(());
                }
                wire.lock().expect("wire").record(Direction::ToServer, n);
                let mut unread = &buf[..n];
                while !unread.is_empty() {
                    tls.read_tls(&mut unread).map_err(|e| e.to_string())?;
                    if let Err(error) = tls.process_new_packets() {
                        flush_tls(&mut tls, client, wire).await?;
                        return Err(format!("TLS: {error}"));
                    }
                }
                loop {
                    match tls.reader().read(&mut plain) {
                        Ok(0) => return Ok(()), // close_notify
                        Ok(n) => server.write_all(&plain[..n]).await.map_err(|e| e.to_string())?,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e.to_string()),
                    }
                }
            }
            read = server.read(&mut from_server) => {
                let n = read.map_err(|e| e.to_string())?;
                if n == 0 {
                    tls.send_close_notify();
                    flush_tls(&mut tls, client, wire).await?;
                    return Ok(());
                }
                tls.writer().write_all(&from_server[..n]).map_err(|e| e.to_string())?;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A file deleted on drop (the root CA's PEM for `DATABASE_CA_CERT`).
struct TempFile(PathBuf);

impl TempFile {
    fn new(contents: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "tasks-tls-neon-{}.pem",
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::write(&path, contents).expect("write temp file");
        Self(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn settings(ca_cert: Option<&str>) -> DatabaseSettings {
    DatabaseSettings {
        pool_size: 1,
        timeout: Duration::from_secs(3),
        ca_cert: ca_cert.map(str::to_owned),
    }
}

/// A rustls client trusting only `root_der`, offering `alpn`.
fn client_config(root_der: &[u8], alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(root_der.to_vec()))
        .expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// An error with its causes.
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A new pool's first statement through the proxy, and the one connection it opened as the
/// proxy saw it up to the answer (read while the connection is still open).
async fn first_statement(proxy: &TlsProxy, query: &str, ca: &TempFile) -> Wire {
    proxy.take_wires();
    let db = Database::new(&proxy.url(query), &settings(Some(ca.path()))).expect("config");
    let rows = db.query("SELECT 1", &[]).await.expect("first statement");
    assert_eq!(rows[0].get::<_, i32>(0), 1);
    let mut wires = proxy.take_wires();
    assert_eq!(wires.len(), 1, "one new connection: {wires:?}");
    let wire = wires.remove(0);
    drop(db);
    wire
}

// ---------------------------------------------------------------------------------------------
// sslnegotiation=direct
// ---------------------------------------------------------------------------------------------

/// A new connection's flights up to its first answer, the SSLRequest way and direct; asserts
/// that direct saves exactly the SSLRequest round trip. Returns `(client→server,
/// server→client)` flights for each.
async fn compare_negotiations(proxy: &TlsProxy, ca: &TempFile, label: &str) -> [(usize, usize); 2] {
    let negotiated = first_statement(proxy, "sslmode=require", ca).await;
    let direct = first_statement(proxy, "sslmode=require&sslnegotiation=direct", ca).await;

    assert_eq!(negotiated.negotiation, Some(Negotiation::SslRequest));
    assert_eq!(negotiated.alpn, Some(None), "no ALPN the SSLRequest way");
    assert_eq!(direct.negotiation, Some(Negotiation::Direct));
    assert_eq!(direct.alpn, Some(Some(POSTGRESQL_ALPN.to_vec())));
    for wire in [&negotiated, &direct] {
        assert_eq!(wire.ended, None, "{wire:?}");
        // The client speaks first and the answer ends it: flights alternate by construction.
        assert_eq!(wire.flights.first().map(|f| f.0), Some(Direction::ToServer));
        assert_eq!(wire.flights.last().map(|f| f.0), Some(Direction::ToClient));
    }
    let count = |wire: &Wire| {
        (
            wire.flights(Direction::ToServer),
            wire.flights(Direction::ToClient),
        )
    };
    let counts = [count(&negotiated), count(&direct)];
    eprintln!(
        "{label}: connect + first statement, (client→server, server→client) flights: SSLRequest {:?}, direct {:?}\n  SSLRequest (direction, bytes): {:?}\n  direct:                        {:?}",
        counts[0], counts[1], negotiated.flights, direct.flights
    );
    assert_eq!(counts[1].0 + 1, counts[0].0, "{negotiated:?}\n{direct:?}");
    assert_eq!(counts[1].1 + 1, counts[0].1, "{negotiated:?}\n{direct:?}");
    // The saved round trip is the SSLRequest (8 bytes) and its `S` (1 byte).
    assert_eq!(
        negotiated.flights[..2],
        [(Direction::ToServer, 8), (Direction::ToClient, 1)]
    );
    counts
}

#[tokio::test]
async fn direct_negotiation_saves_exactly_one_round_trip() {
    let chain = ServerChain::generate(Chain::Intermediate { leaf: Curve::P256 });
    let ca = TempFile::new(&chain.root_pem);

    // The test database (trust authentication locally: no password round trips).
    let proxy = TlsProxy::start(&chain).await;
    compare_negotiations(&proxy, &ca, "test database").await;

    // SCRAM-SHA-256 behind the proxy, as on Neon (whose proxy authenticates the client with
    // SCRAM itself): the throwaway cluster, in plain text behind the proxy (its pg_hba `host`
    // lines take both).
    let Some(pg) = TlsCluster::start() else {
        find("initdb");
        find("pg_ctl");
        return;
    };
    let upstream = SocketAddr::from(([127, 0, 0, 1], pg.port));
    let proxy = TlsProxy::start_to(upstream, &chain, "postgres", Some(PASSWORD), "postgres").await;
    let [negotiated, direct] = compare_negotiations(&proxy, &ca, "SCRAM-SHA-256").await;
    // Startup → SASL → SASL continue → final + ReadyForQuery, then the statement.
    assert_eq!((negotiated, direct), ((6, 6), (5, 5)));
}

#[tokio::test]
async fn the_api_works_over_direct_tls() {
    let chain = ServerChain::generate(Chain::Intermediate { leaf: Curve::P256 });
    let ca = TempFile::new(&chain.root_pem);
    let proxy = TlsProxy::start(&chain).await;
    let url = proxy.url("sslmode=verify-full&sslnegotiation=direct");
    let app =
        common::spawn_app_with(&[("DATABASE_URL", &url), ("DATABASE_CA_CERT", ca.path())]).await;

    let (_, token) = app.new_user();
    let task = app.create_task(&token, "over direct TLS").await;
    let id = task["id"].as_str().expect("id");
    let got = app
        .send(Method::GET, &format!("/api/tasks/{id}"), Some(&token), None)
        .await;
    assert_eq!(got.status, StatusCode::OK, "{:?}", got.body);
    assert_eq!(got.json()["data"]["title"], "over direct TLS");

    let wires = proxy.take_wires();
    assert!(!wires.is_empty());
    for wire in &wires {
        assert_eq!(wire.negotiation, Some(Negotiation::Direct), "{wire:?}");
        assert_eq!(wire.alpn, Some(Some(POSTGRESQL_ALPN.to_vec())), "{wire:?}");
        assert_eq!(wire.ended, None, "{wire:?}");
    }
}

/// Connects with tokio-postgres directly, `sslnegotiation=direct`, offering `alpn`.
async fn direct_with_alpn(proxy: &TlsProxy, root_der: &[u8], alpn: &[&[u8]]) -> Result<(), String> {
    let config: tokio_postgres::Config = proxy
        .url("sslmode=require&sslnegotiation=direct")
        .parse()
        .expect("url");
    let tls = MakeRustlsConnect::new(client_config(root_der, alpn));
    let (client, connection) = config.connect(tls).await.map_err(|e| describe(&e))?;
    tokio::spawn(connection);
    client
        .simple_query("SELECT 1")
        .await
        .map_err(|e| describe(&e))?;
    Ok(())
}

/// A server that refuses direct TLS without ALPN `postgresql` (PostgreSQL 17, Neon's proxy)
/// takes the API's connections, because the API offers it (`shared/src/db`: neither
/// tokio-postgres nor tokio-postgres-rustls does). The proxy's refusal is shown to fire first,
/// with a bare client offering no ALPN or another one, so the API's success is not for want of
/// a refusal.
#[tokio::test]
async fn the_api_offers_the_alpn_direct_tls_requires() {
    let chain = ServerChain::generate(Chain::Intermediate { leaf: Curve::P256 });
    let ca = TempFile::new(&chain.root_pem);
    let proxy = TlsProxy::start(&chain).await;

    for alpn in [&[][..], &[&b"http/1.1"[..]][..]] {
        let refused = direct_with_alpn(&proxy, &chain.root_der, alpn)
            .await
            .expect_err("refused");
        assert!(refused.contains("NoApplicationProtocol"), "{refused}");
        let wires = proxy.take_wires();
        assert_eq!(wires.len(), 1);
        assert_eq!(wires[0].negotiation, Some(Negotiation::Direct));
        assert_eq!(
            wires[0].alpn, None,
            "no handshake completed: {:?}",
            wires[0]
        );
        let ended = wires[0].ended.as_deref().unwrap_or_default();
        assert!(ended.contains("ALPN"), "{ended}");
    }

    // The API's connection code (`tasks_shared::db::Database`), direct and verified.
    let wire = first_statement(&proxy, "sslmode=verify-full&sslnegotiation=direct", &ca).await;
    assert_eq!(wire.negotiation, Some(Negotiation::Direct));
    assert_eq!(wire.alpn, Some(Some(POSTGRESQL_ALPN.to_vec())));
    assert_eq!(wire.ended, None, "{wire:?}");
}

/// `sslnegotiation=direct` without TLS required is a configuration error of the API (as in
/// libpq: direct negotiation never falls back to plain text), so no server starts with it.
#[tokio::test]
async fn the_api_refuses_direct_negotiation_without_tls_required() {
    let chain = ServerChain::generate(Chain::Intermediate { leaf: Curve::P256 });
    let proxy = TlsProxy::start(&chain).await;
    for query in [
        "sslnegotiation=direct",
        "sslmode=prefer&sslnegotiation=direct",
        "sslmode=disable&sslnegotiation=direct",
    ] {
        let vars = HashMap::from([
            ("DATABASE_URL", proxy.url(query)),
            ("JWT_SECRET", "tls-neon-secret".to_owned()),
        ]);
        let config = Config::from_lookup(&|name| vars.get(name).cloned(), Runtime::Local)
            .expect("the rest of the configuration is valid");
        let Err(refused) = State::new(config) else {
            panic!("{query}: the API accepted direct negotiation without TLS");
        };
        let message = refused.to_string();
        assert!(
            message.contains("DATABASE_URL") && message.contains("sslnegotiation=direct"),
            "{query}: {message}"
        );
    }
    assert!(proxy.take_wires().is_empty(), "nothing was sent anywhere");
}

#[tokio::test]
async fn direct_negotiation_verifies_the_whole_chain() {
    let chain = ServerChain::generate(Chain::Intermediate { leaf: Curve::P384 });
    let ca = TempFile::new(&chain.root_pem);
    // A server that sends its leaf without the intermediate: the root alone cannot verify it.
    let leaf_only = ServerChain {
        chain_der: chain.chain_der[..1].to_vec(),
        chain_pem: String::new(),
        root_pem: chain.root_pem.clone(),
        root_der: chain.root_der.clone(),
        key_pem: chain.key_pem.clone(),
        key_der: chain.key_der.clone(),
    };
    let proxy = TlsProxy::start(&leaf_only).await;
    let db = Database::new(
        &proxy.url("sslmode=verify-full&sslnegotiation=direct"),
        &settings(Some(ca.path())),
    )
    .expect("config");
    let err = db
        .query("SELECT 1", &[])
        .await
        .expect_err("unverifiable chain");
    assert!(matches!(err, DbError::Unavailable(_)), "{err}");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");

    // The full chain verifies against the root alone (the first test shows it).
    let full = TlsProxy::start(&chain).await;
    let wire = first_statement(&full, "sslmode=verify-full&sslnegotiation=direct", &ca).await;
    assert_eq!(wire.alpn, Some(Some(POSTGRESQL_ALPN.to_vec())));
}

// ---------------------------------------------------------------------------------------------
// Neon's certificate shape, channel binding
// ---------------------------------------------------------------------------------------------

/// DER of the OIDs the chain must carry.
const ECDSA_WITH_SHA384: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
const ECDSA_WITH_SHA256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
const SECP256R1: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const SECP384R1: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A TLS stream that presents `binding` as its tls-server-end-point data.
struct PinnedStream<T> {
    inner: T,
    binding: Vec<u8>,
}

impl<T: AsyncRead + Unpin> AsyncRead for PinnedStream<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for PinnedStream<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<T: TlsStream + Unpin> TlsStream for PinnedStream<T> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::tls_server_end_point(self.binding.clone())
    }
}

/// tokio-postgres-rustls' handshake, with the channel binding replaced by `binding`.
struct PinnedBinding<T> {
    inner: T,
    binding: Vec<u8>,
}

type Handshake<S, E> = Pin<Box<dyn Future<Output = Result<S, E>>>>;

impl<S, T> TlsConnect<S> for PinnedBinding<T>
where
    T: TlsConnect<S>,
    T::Future: 'static,
{
    type Stream = PinnedStream<T::Stream>;
    type Error = T::Error;
    type Future = Handshake<Self::Stream, T::Error>;

    fn connect(self, stream: S) -> Self::Future {
        let binding = self.binding;
        let handshake = self.inner.connect(stream);
        Box::pin(async move {
            Ok(PinnedStream {
                inner: handshake.await?,
                binding,
            })
        })
    }
}

/// SCRAM with `channel_binding=require`, presenting `binding` as tls-server-end-point.
async fn scram_plus_with(pg: &TlsCluster, binding: Vec<u8>) -> Result<(), tokio_postgres::Error> {
    let config: tokio_postgres::Config = pg
        .url("localhost", "sslmode=require&channel_binding=require")
        .parse()
        .expect("url");
    let mut tls = MakeRustlsConnect::new(client_config(&pg.ca_der, &[]));
    let connect =
        MakeTlsConnect::<TcpStream>::make_tls_connect(&mut tls, "localhost").expect("sni");
    let stream = TcpStream::connect(("127.0.0.1", pg.port))
        .await
        .expect("tcp");
    let (client, connection) = config
        .connect_raw(
            stream,
            PinnedBinding {
                inner: connect,
                binding,
            },
        )
        .await?;
    tokio::spawn(connection);
    client.simple_query("SELECT 1").await?;
    Ok(())
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

async fn neon_chain_with_channel_binding(leaf: Curve) {
    let Some(pg) = TlsCluster::start_with(Chain::Intermediate { leaf }) else {
        // Loud skip, or a failure in CI (TASKS_REQUIRE_TOOLS=1).
        find("initdb");
        find("pg_ctl");
        return;
    };
    // The chain is what it claims: the leaf is signed with ecdsa-with-SHA384, on `leaf`'s curve.
    assert!(contains(&pg.leaf_der, ECDSA_WITH_SHA384));
    assert!(!contains(&pg.leaf_der, ECDSA_WITH_SHA256));
    let curve = match leaf {
        Curve::P256 => SECP256R1,
        Curve::P384 => SECP384R1,
    };
    assert!(contains(&pg.leaf_der, curve));

    // The API's own path: verify-full against the root alone (the server sends leaf +
    // intermediate), SCRAM-SHA-256-PLUS required.
    let url = pg.url(
        "localhost",
        &format!(
            "sslmode=verify-full&sslrootcert={}&channel_binding=require",
            path(&pg.ca_pem)
        ),
    );
    let db = Database::new(&url, &settings(None)).expect("config");
    let rows = db
        .query(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("verify-full + channel_binding=require");
    assert!(rows[0].get::<_, bool>(0));

    // PostgreSQL's side of the binding is SHA-384 of the leaf: presented by hand it passes, and
    // the SHA-256 a SHA-256-only client would send is refused.
    scram_plus_with(&pg, digest(&SHA384, &pg.leaf_der).as_ref().to_vec())
        .await
        .expect("SHA-384 tls-server-end-point");
    let refused = scram_plus_with(&pg, digest(&SHA256, &pg.leaf_der).as_ref().to_vec())
        .await
        .expect_err("SHA-256 tls-server-end-point");
    let message = refused
        .as_db_error()
        .map(|db| db.message().to_owned())
        .unwrap_or_else(|| describe(&refused));
    assert!(message.contains("channel binding"), "{message}");

    // verify-full refuses the wrong host name and a root it was not given.
    let wrong_host = pg.url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={}", path(&pg.ca_pem)),
    );
    let err = Database::new(&wrong_host, &settings(None))
        .expect("config")
        .query("SELECT 1", &[])
        .await
        .expect_err("wrong host");
    assert!(matches!(err, DbError::Unavailable(_)), "{err}");
    let mozilla_only = pg.url("localhost", "sslmode=verify-full&channel_binding=require");
    let err = Database::new(&mozilla_only, &settings(None))
        .expect("config")
        .query("SELECT 1", &[])
        .await
        .expect_err("unknown root");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn neon_chain_p256_leaf_channel_binding_and_verify_full() {
    neon_chain_with_channel_binding(Curve::P256).await;
}

#[tokio::test]
async fn neon_chain_p384_leaf_channel_binding_and_verify_full() {
    neon_chain_with_channel_binding(Curve::P384).await;
}
