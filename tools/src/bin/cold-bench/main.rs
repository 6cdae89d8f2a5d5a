#![forbid(unsafe_code)]
//! Cold start with the network in the way: spawn → first response of a real function binary
//! when the database and the JWKS endpoint are a round trip away, through [`DelayProxy`]s.
//!
//! A cold instance's first request needs the JWKS (EdDSA tokens: Better Auth's keys, fetched
//! on first use) and a database connection (TLS + SCRAM). Run one after the other, the first
//! response costs their sum; overlapped (shared/src/handlers.rs, since ff5ad38), the longer of
//! the two. The target: cold first response ≤ max(JWKS fetch, DB connect) + 5 ms.
//!
//! Each `--build LABEL=DIR` names a directory holding release function binaries (e.g. one
//! built from the commit before the change and one from now); every build × token family is
//! spawned `--spawns` times, interleaved (round by round) so that machine noise hits all alike.
//! The components are measured alone through the same proxies, with the same library code the
//! functions run (`tasks_shared::db::Database`, `tasks_shared::auth::JwksCache`).
//!
//!     cold-bench --build before=/tmp/before/release --build after=target/release \
//!         --database-url 'postgres://postgres:PW@localhost:5433/tasks_bench?sslmode=require&sslrootcert=/tmp/ca.pem' \
//!         --db-delay-ms 1 --jwks-delay-ms 25 --families hs256,eddsa --spawns 20
//!
//! scripts/bench-cold.sh builds everything and starts a throwaway TLS PostgreSQL for it.
//! Token families: `hs256` (a minted token, `JWT_SECRET`), `eddsa` (the real Better Auth token
//! `tests/fixtures/better-auth/eddsa.jwt`, valid until 2126, served its JWKS over plain HTTP
//! through the proxy as `JWKS_URL`), `eddsa-json` (the same, plus the key set as `JWKS_JSON`:
//! builds that know that variable fetch nothing).

mod delay_proxy;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use delay_proxy::DelayProxy;
use http::Response;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tasks_shared::auth::{Identity, JwksCache};
use tasks_shared::config::DatabaseSettings;
use tasks_shared::db::Database;
use tasks_shared::tasks::ListQuery;
use tasks_tools::runtime_api::{Outcome, RuntimeApi, lambda_environment};
use tasks_tools::tokens::{TokenOptions, mint_hs256};
use tokio::process::Command;

const SECRET: &str = "cold-bench-secret-0123456789abcdef01234567";
/// `iss` and `aud` of the Better Auth fixtures.
const BETTER_AUTH_URL: &str = "https://app.example.com";
const INVOKE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Hs256,
    EdDsa,
    EdDsaJson,
}

impl Family {
    fn parse(name: &str) -> Result<Self, String> {
        match name {
            "hs256" => Ok(Self::Hs256),
            "eddsa" => Ok(Self::EdDsa),
            "eddsa-json" => Ok(Self::EdDsaJson),
            _ => Err(format!(
                "--families: hs256, eddsa or eddsa-json, not {name:?}"
            )),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Hs256 => "hs256",
            Self::EdDsa => "eddsa",
            Self::EdDsaJson => "eddsa-json",
        }
    }
}

struct Options {
    builds: Vec<(String, PathBuf)>,
    function: String,
    families: Vec<Family>,
    spawns: usize,
    database_url: String,
    db_delay: Duration,
    jwks_delay: Duration,
    fixtures: PathBuf,
}

fn options() -> Result<Options, String> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mut options = Options {
        builds: Vec::new(),
        function: "list-tasks".into(),
        families: vec![Family::Hs256, Family::EdDsa],
        spawns: 20,
        database_url: "postgres://postgres@127.0.0.1:5432/tasks_bench".into(),
        db_delay: Duration::from_millis(1),
        jwks_delay: Duration::from_millis(25),
        fixtures: PathBuf::from(format!("{root}/tests/fixtures/better-auth")),
    };
    let millis = |value: &str, name: &str| {
        value
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| format!("{name}: milliseconds, not {value:?}"))
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--build" => {
                let (label, dir) = value
                    .split_once('=')
                    .ok_or("--build LABEL=DIR (a directory of release function binaries)")?;
                options.builds.push((label.to_owned(), PathBuf::from(dir)));
            }
            "--function" => options.function = value,
            "--families" => {
                options.families = value
                    .split(',')
                    .map(Family::parse)
                    .collect::<Result<_, _>>()?
            }
            "--spawns" => {
                options.spawns = value
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or("--spawns: a positive number")?
            }
            "--database-url" => options.database_url = value,
            "--db-delay-ms" => options.db_delay = millis(&value, "--db-delay-ms")?,
            "--jwks-delay-ms" => options.jwks_delay = millis(&value, "--jwks-delay-ms")?,
            "--fixtures" => options.fixtures = PathBuf::from(value),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if options.builds.is_empty() {
        options.builds.push((
            "current".into(),
            PathBuf::from(format!("{root}/target/release")),
        ));
    }
    Ok(options)
}

/// `postgres://user:pw@HOST:PORT/db?query` → (`postgres://user:pw@`, HOST, PORT, `/db?query`).
fn split_url(url: &str) -> Result<(&str, &str, u16, &str), String> {
    let bad = || {
        "--database-url: expected postgres://[user[:password]@]host[:port]/db[?params] (one host, not IPv6)"
            .to_owned()
    };
    let after_scheme = url.find("://").ok_or_else(bad)? + 3;
    let authority_end = url[after_scheme..]
        .find(['/', '?'])
        .map_or(url.len(), |i| after_scheme + i);
    let host_start = url[after_scheme..authority_end]
        .rfind('@')
        .map_or(after_scheme, |i| after_scheme + i + 1);
    let host_port = &url[host_start..authority_end];
    let (host, port) = match host_port.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().map_err(|_| bad())?),
        None => (host_port, 5432),
    };
    if host.is_empty() || host.contains(['[', ',']) {
        return Err(bad());
    }
    Ok((&url[..host_start], host, port, &url[authority_end..]))
}

/// A JWKS endpoint over plain HTTP (the functions accept an `http://` `JWKS_URL`), counting
/// fetches. The delay is the proxy's, not the server's.
struct JwksServer {
    address: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl JwksServer {
    async fn start(document: String) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let hits = Arc::new(AtomicUsize::new(0));
        let document = Bytes::from(document);
        let counter = hits.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (document, counter) = (document.clone(), counter.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |_request| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let mut response = Response::new(Full::new(document.clone()));
                        response.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/json"),
                        );
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            address,
            hits,
            task,
        })
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// What one spawned function needs: its environment beyond Lambda's, and its event.
struct Setup {
    env: Vec<(&'static str, String)>,
    event: Value,
}

fn event(function: &str, token: &str) -> Result<Value, String> {
    let path = format!(
        "{}/events/{function}.json",
        concat!(env!("CARGO_MANIFEST_DIR"), "/..")
    );
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let mut event: Value = serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    if event["headers"].get("authorization").is_some() {
        event["headers"]["authorization"] = json!(format!("Bearer {token}"));
    }
    Ok(event)
}

struct Sample {
    /// Spawn → first response posted.
    cold: Duration,
    /// Spawn → first `invocation/next` (Lambda's init phase).
    init: Option<Duration>,
    status: u64,
    jwks_fetches: usize,
}

async fn cold_start(
    binary: &PathBuf,
    function: &str,
    setup: &Setup,
    jwks: &JwksServer,
) -> Result<Sample, String> {
    let api = RuntimeApi::start()
        .await
        .map_err(|e| format!("runtime api: {e}"))?;
    let fetches_before = jwks.hits();
    let started = Instant::now();
    let mut child = Command::new(binary)
        .env_clear()
        .envs(lambda_environment(&api, function))
        .envs(setup.env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("AWS_LAMBDA_LOG_LEVEL", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", binary.display()))?;
    let outcome = api.invoke(setup.event.clone(), INVOKE_TIMEOUT).await;
    let cold = started.elapsed();
    let _ = child.kill().await;
    let status = match outcome {
        Some(Outcome::Response(document)) => document["statusCode"].as_u64().unwrap_or(0),
        other => {
            return Err(format!(
                "{}: invocation failed: {other:?}",
                binary.display()
            ));
        }
    };
    Ok(Sample {
        cold,
        init: api.first_poll().map(|at| at.duration_since(started)),
        status,
        jwks_fetches: jwks.hits() - fetches_before,
    })
}

/// The components alone, through the same proxies and with the functions' own code.
struct Components {
    jwks_fetch: Vec<Duration>,
    db_connect: Vec<Duration>,
    /// The first statement on the new connection: list-tasks' own (`tasks_list_v1`, whose
    /// PL/pgSQL plan the session builds on first call).
    db_first_list: Vec<Duration>,
    /// `SELECT 1` after it: one round trip through the proxy.
    db_round_trip: Vec<Duration>,
}

async fn measure_components(
    jwks_url: &str,
    kid: &str,
    database_url: &str,
    into: &mut Components,
) -> Result<(), String> {
    // A new cache holds no key and no client: one fetch on a new connection, as a cold start.
    let cache = JwksCache::new(jwks_url.to_owned(), Default::default());
    let started = Instant::now();
    cache
        .key(kid)
        .await
        .map_err(|e| format!("JWKS fetch through the proxy: {e}"))?;
    into.jwks_fetch.push(started.elapsed());

    let settings = DatabaseSettings {
        pool_size: 1,
        timeout: Duration::from_secs(10),
        ca_cert: None,
    };
    let db = Database::new(database_url, &settings).map_err(|e| e.to_string())?;
    let started = Instant::now();
    db.prewarm().await;
    let connected = started.elapsed();
    if db.status().size != 1 {
        // prewarm leaves failures to the statement: let it say what went wrong.
        let error = db.query("SELECT 1", &[]).await.err();
        return Err(format!(
            "database connect through the proxy failed: {error:?}"
        ));
    }
    let who = Identity {
        user_id: "cold-bench-user".into(),
        email: None,
    };
    let query = ListQuery::parse(Some("status=pending&limit=20"))
        .map_err(|e| format!("list query: {e:?}"))?;
    let sent = Instant::now();
    tasks_shared::tasks::sql::list(&db, &who, &query)
        .await
        .map_err(|e| format!("list statement through the proxy: {e:?}"))?;
    let first_list = sent.elapsed();
    let sent = Instant::now();
    db.query("SELECT 1", &[])
        .await
        .map_err(|e| format!("SELECT 1 through the proxy: {e:?}"))?;
    into.db_connect.push(connected);
    into.db_first_list.push(first_list);
    into.db_round_trip.push(sent.elapsed());
    Ok(())
}

/// Median and p90 (nearest rank).
fn stats(values: &[Duration]) -> (Duration, Duration) {
    let mut sorted = values.to_vec();
    sorted.sort();
    let at = |p: usize| sorted[((sorted.len() * p).div_ceil(100)).clamp(1, sorted.len()) - 1];
    (at(50), at(90))
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

async fn run(options: Options) -> Result<(), String> {
    tasks_shared::auth::install_crypto();
    let (prefix, host, port, rest) = split_url(&options.database_url)?;
    let upstream = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("resolve {host}: {e}"))?
        .find(SocketAddr::is_ipv4)
        .ok_or(format!("{host} has no IPv4 address"))?;
    tasks_shared::migrate::prepare(&options.database_url, None)
        .await
        .map_err(|e| format!("prepare the benchmark database: {e}"))?;

    let db_proxy = DelayProxy::start(upstream, options.db_delay)
        .await
        .map_err(|e| format!("database proxy: {e}"))?;
    // Same host name (the certificate's), the proxy's port: 127.0.0.1 must be what it resolves to.
    let proxied_url = format!("{prefix}{host}:{}{rest}", db_proxy.address.port());

    let read = |name: &str| {
        let path = options.fixtures.join(name);
        std::fs::read_to_string(&path)
            .map(|s| s.trim().to_owned())
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    let (jwks_document, eddsa_token) = (read("eddsa.jwks.json")?, read("eddsa.jwt")?);
    let kid = serde_json::from_str::<Value>(&jwks_document)
        .ok()
        .and_then(|doc| doc["keys"][0]["kid"].as_str().map(str::to_owned))
        .ok_or("eddsa.jwks.json: no keys[0].kid")?;
    let jwks = JwksServer::start(jwks_document.clone())
        .await
        .map_err(|e| format!("JWKS server: {e}"))?;
    let jwks_proxy = DelayProxy::start(jwks.address, options.jwks_delay)
        .await
        .map_err(|e| format!("JWKS proxy: {e}"))?;
    let jwks_url = format!("http://{}/api/auth/jwks", jwks_proxy.address);

    let hs256_token = mint_hs256(
        SECRET,
        "cold-bench-user",
        &TokenOptions {
            ttl_seconds: 3600,
            ..Default::default()
        },
    );
    let setups: Vec<(Family, Setup)> = options
        .families
        .iter()
        .map(|&family| {
            let database = ("DATABASE_URL", proxied_url.clone());
            let jwks_env = [
                ("JWKS_URL", jwks_url.clone()),
                ("JWT_ISSUER", BETTER_AUTH_URL.to_owned()),
                ("JWT_AUDIENCE", BETTER_AUTH_URL.to_owned()),
            ];
            let (env, token) = match family {
                Family::Hs256 => (
                    vec![database, ("JWT_SECRET", SECRET.to_owned())],
                    &hs256_token,
                ),
                Family::EdDsa => ([vec![database], jwks_env.to_vec()].concat(), &eddsa_token),
                Family::EdDsaJson => (
                    [
                        vec![database, ("JWKS_JSON", jwks_document.clone())],
                        jwks_env.to_vec(),
                    ]
                    .concat(),
                    &eddsa_token,
                ),
            };
            Ok((
                family,
                Setup {
                    env,
                    event: event(&options.function, token)?,
                },
            ))
        })
        .collect::<Result<_, String>>()?;

    println!(
        "{} on {} cores; database one-way delay {} ms (RTT {} ms), JWKS one-way delay {} ms (RTT {} ms); {} spawns each",
        options.function,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        options.db_delay.as_millis(),
        options.db_delay.as_millis() * 2,
        options.jwks_delay.as_millis(),
        options.jwks_delay.as_millis() * 2,
        options.spawns,
    );
    for (label, dir) in &options.builds {
        println!("build {label}: {}", dir.display());
    }

    let binaries: Vec<(&str, PathBuf)> = options
        .builds
        .iter()
        .map(|(label, dir)| (label.as_str(), dir.join(&options.function)))
        .collect();
    // One unmeasured spawn of each, so every binary starts from the page cache.
    for (_, binary) in &binaries {
        for (_, setup) in &setups {
            cold_start(binary, &options.function, setup, &jwks).await?;
        }
    }
    let mut components = Components {
        jwks_fetch: Vec::new(),
        db_connect: Vec::new(),
        db_first_list: Vec::new(),
        db_round_trip: Vec::new(),
    };
    let mut samples: Vec<Vec<Vec<Sample>>> = binaries
        .iter()
        .map(|_| setups.iter().map(|_| Vec::new()).collect())
        .collect();
    for _ in 0..options.spawns {
        measure_components(&jwks_url, &kid, &proxied_url, &mut components).await?;
        for (b, (_, binary)) in binaries.iter().enumerate() {
            for (f, (_, setup)) in setups.iter().enumerate() {
                let sample = cold_start(binary, &options.function, setup, &jwks).await?;
                samples[b][f].push(sample);
            }
        }
    }

    let (jwks_median, jwks_p90) = stats(&components.jwks_fetch);
    let (connect_median, connect_p90) = stats(&components.db_connect);
    let (list_median, list_p90) = stats(&components.db_first_list);
    let (round_trip_median, round_trip_p90) = stats(&components.db_round_trip);
    println!();
    println!("| component, alone through the proxy | median ms | p90 ms |");
    println!("|---|---|---|");
    println!(
        "| JWKS fetch (new connection + GET) | {} | {} |",
        ms(jwks_median),
        ms(jwks_p90)
    );
    println!(
        "| DB connect (TCP + SSLRequest + TLS + SCRAM) | {} | {} |",
        ms(connect_median),
        ms(connect_p90)
    );
    println!(
        "| first statement on it (list-tasks' tasks_list_v1) | {} | {} |",
        ms(list_median),
        ms(list_p90)
    );
    println!(
        "| then SELECT 1 (one round trip) | {} | {} |",
        ms(round_trip_median),
        ms(round_trip_p90)
    );

    let slack = Duration::from_millis(5);
    println!();
    println!(
        "| build | tokens | cold median ms | cold p90 ms | init median ms | JWKS fetches/spawn | status | target ms | sum ms | median − max ms | floor ms | median ≤ target |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (b, (label, _)) in binaries.iter().enumerate() {
        for (f, (family, _)) in setups.iter().enumerate() {
            let runs = &samples[b][f];
            let (cold_median, cold_p90) = stats(&runs.iter().map(|s| s.cold).collect::<Vec<_>>());
            let inits: Vec<Duration> = runs.iter().filter_map(|s| s.init).collect();
            let init_median = if inits.is_empty() {
                Duration::ZERO
            } else {
                stats(&inits).0
            };
            let fetches: BTreeSet<usize> = runs.iter().map(|s| s.jwks_fetches).collect();
            let statuses: BTreeSet<u64> = runs.iter().map(|s| s.status).collect();
            // What the first response waits for: the connection, and the JWKS when fetched.
            let fetched = fetches.iter().any(|n| *n > 0);
            let longest = if fetched {
                jwks_median.max(connect_median)
            } else {
                connect_median
            };
            let sum = connect_median + if fetched { jwks_median } else { Duration::ZERO };
            let target = longest + slack;
            // Unavoidable: the process's init before it asks for the event, and the statement
            // after both waits (it is keyed by the verified token's subject).
            let floor = init_median + longest + list_median;
            println!(
                "| {label} | {} | {} | {} | {} | {fetches:?} | {statuses:?} | {} | {} | {:+.1} | {} | {} |",
                family.name(),
                ms(cold_median),
                ms(cold_p90),
                ms(init_median),
                ms(target),
                ms(sum),
                (cold_median.as_secs_f64() - longest.as_secs_f64()) * 1000.0,
                ms(floor),
                if cold_median <= target { "yes" } else { "no" },
            );
        }
    }
    println!();
    println!(
        "target = max(JWKS fetch, DB connect) + 5 ms (DB connect + 5 ms when nothing is fetched), from the component medians; sum = JWKS fetch + DB connect (both waits one after the other); median − max = what the cold start costs beyond the longer wait; floor = init + the longer wait + list-tasks' first statement (what no overlap can remove)"
    );
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("cold-bench: {message}");
            return ExitCode::from(2);
        }
    };
    match run(options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("cold-bench: {message}");
            ExitCode::FAILURE
        }
    }
}
