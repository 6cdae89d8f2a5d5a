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
//!         --db-delay-ms 1 --jwks-delay-ms 25 --families hs256,eddsa,eddsa-json --spawns 20 \
//!         [--memory 128 [--throttle init-free|always]]
//!
//! scripts/bench-cold.sh builds everything and starts a throwaway TLS PostgreSQL for it.
//! `--memory MB` runs the function processes under Lambda's CPU quota for that size
//! (`tasks_tools::lambda_cpu`: init unthrottled, the quota from the first `invocation/next` on;
//! `--throttle always`: from the spawn on). Every first response must be the fixture's status
//! (200 for list-tasks), or the run fails without a table.
//! Token families: `hs256` (a minted token, `JWT_SECRET`), `eddsa` (the real Better Auth token
//! `tests/fixtures/better-auth/eddsa.jwt`, valid until 2126, served its JWKS over plain HTTP
//! through the proxy as `JWKS_URL`), `eddsa-json` (the same, plus the key set as `JWKS_JSON`:
//! builds that know that variable fetch nothing). All three by default.

mod delay_proxy;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use delay_proxy::DelayProxy;
use serde_json::Value;
use tasks_shared::auth::{Identity, JwksCache};
use tasks_shared::config::DatabaseSettings;
use tasks_shared::db::Database;
use tasks_shared::tasks::ListQuery;
use tasks_tools::events::{fixture_status, signed_fixture};
use tasks_tools::function::{FunctionProcess, FunctionSpec};
use tasks_tools::jwks::JwksServer;
use tasks_tools::lambda_cpu::{CpuGroup, CpuModel};
use tasks_tools::tokens::hs256_for;

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
    /// CPU models to run every build under (interleaved like the builds).
    cpus: Vec<CpuModel>,
}

fn options() -> Result<Options, String> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mut options = Options {
        builds: Vec::new(),
        function: "list-tasks".into(),
        families: vec![Family::Hs256, Family::EdDsa, Family::EdDsaJson],
        spawns: 20,
        database_url: "postgres://postgres@127.0.0.1:5432/tasks_bench".into(),
        db_delay: Duration::from_millis(1),
        jwks_delay: Duration::from_millis(25),
        fixtures: PathBuf::from(format!("{root}/tests/fixtures/better-auth")),
        cpus: vec![CpuModel::WholeCore],
    };
    let (mut memory, mut throttle) = (None, None);
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
            "--memory" => memory = Some(value),
            "--throttle" => throttle = Some(value),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    options.cpus = memory
        .as_deref()
        .unwrap_or("none")
        .split(',')
        .map(|mb| CpuModel::parse(Some(mb), throttle.as_deref()))
        .collect::<Result<_, _>>()?;
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

/// What one spawned function needs: its environment beyond Lambda's, and its event.
struct Setup {
    env: Vec<(String, String)>,
    event: Value,
}

struct Sample {
    /// Spawn → first response posted.
    cold: Duration,
    /// Spawn → first `invocation/next` (Lambda's init phase).
    init: Option<Duration>,
    /// 20 ms periods in which the process ran out of CPU quota.
    throttled_periods: u64,
    jwks_fetches: usize,
}

async fn cold_start(
    spec: &FunctionSpec,
    event: &Value,
    jwks: &JwksServer,
) -> Result<Sample, String> {
    let fetches_before = jwks.hits();
    let process = FunctionProcess::spawn(spec).await?;
    let status = process.status(event, INVOKE_TIMEOUT).await;
    let cold = process.started.elapsed();
    let init = process.init_duration();
    let throttled_periods = process.throttled_periods().unwrap_or(0);
    let applied = process.cpu_applied();
    process.stop().await;
    applied?;
    let status = status?;
    let expected = fixture_status(&spec.name);
    if status != expected {
        return Err(format!(
            "{}: answered {status}, expected {expected}",
            spec.binary.display()
        ));
    }
    Ok(Sample {
        cold,
        init,
        throttled_periods,
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
    for cpu in &options.cpus {
        if let CpuModel::Lambda { memory_mb, .. } = cpu {
            // Say now, before any figure, if the model cannot be applied here.
            CpuGroup::create(*memory_mb)?;
        }
    }
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
    let jwks = JwksServer::start(Some(jwks_document.clone()))
        .await
        .map_err(|e| format!("JWKS server: {e}"))?;
    let jwks_proxy = DelayProxy::start(jwks.address, options.jwks_delay)
        .await
        .map_err(|e| format!("JWKS proxy: {e}"))?;
    let jwks_url = format!("http://{}/api/auth/jwks", jwks_proxy.address);

    let hs256_token = hs256_for(SECRET, "cold-bench-user");
    let setups: Vec<(Family, Setup)> = options
        .families
        .iter()
        .map(|&family| {
            let database = ("DATABASE_URL", proxied_url.clone());
            let quiet = ("AWS_LAMBDA_LOG_LEVEL", "error".to_owned());
            let jwks_env = [
                ("JWKS_URL", jwks_url.clone()),
                ("JWT_ISSUER", BETTER_AUTH_URL.to_owned()),
                ("JWT_AUDIENCE", BETTER_AUTH_URL.to_owned()),
            ];
            let (env, token) = match family {
                Family::Hs256 => (
                    vec![database, quiet, ("JWT_SECRET", SECRET.to_owned())],
                    &hs256_token,
                ),
                Family::EdDsa => (
                    [vec![database, quiet], jwks_env.to_vec()].concat(),
                    &eddsa_token,
                ),
                Family::EdDsaJson => (
                    [
                        vec![database, quiet, ("JWKS_JSON", jwks_document.clone())],
                        jwks_env.to_vec(),
                    ]
                    .concat(),
                    &eddsa_token,
                ),
            };
            Ok((
                family,
                Setup {
                    env: env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
                    event: signed_fixture(&options.function, token)?,
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
    for cpu in &options.cpus {
        println!("{}", cpu.describe());
    }
    println!("(the CPU model applies to the function processes; the components run unthrottled)");
    for (label, dir) in &options.builds {
        println!("build {label}: {}", dir.display());
    }

    // Every build under every CPU model: (label, its specs per family).
    let configurations: Vec<(String, Vec<FunctionSpec>)> = options
        .builds
        .iter()
        .flat_map(|(label, dir)| options.cpus.iter().map(move |cpu| (label, dir, *cpu)))
        .map(|(label, dir, cpu)| {
            let specs = setups
                .iter()
                .map(|(_, setup)| FunctionSpec {
                    name: options.function.clone(),
                    binary: dir.join(&options.function),
                    env: setup.env.clone(),
                    cpu,
                    ..FunctionSpec::default()
                })
                .collect();
            (format!("{label}, {}", cpu.label()), specs)
        })
        .collect();
    // One unmeasured spawn of each, so every binary starts from the page cache.
    for (_, build) in &configurations {
        for (spec, (_, setup)) in build.iter().zip(&setups) {
            cold_start(spec, &setup.event, &jwks).await?;
        }
    }
    let mut components = Components {
        jwks_fetch: Vec::new(),
        db_connect: Vec::new(),
        db_first_list: Vec::new(),
        db_round_trip: Vec::new(),
    };
    let mut samples: Vec<Vec<Vec<Sample>>> = configurations
        .iter()
        .map(|_| setups.iter().map(|_| Vec::new()).collect())
        .collect();
    for _ in 0..options.spawns {
        measure_components(&jwks_url, &kid, &proxied_url, &mut components).await?;
        for (b, (_, build)) in configurations.iter().enumerate() {
            for (f, (spec, (_, setup))) in build.iter().zip(&setups).enumerate() {
                let sample = cold_start(spec, &setup.event, &jwks).await?;
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
        "| build | tokens | cold median ms | cold p90 ms | init median ms | JWKS fetches/spawn | status | throttled periods (median) | target ms | sum ms | median − max ms | floor ms | median ≤ target |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let status = fixture_status(&options.function);
    for (b, (label, _)) in configurations.iter().enumerate() {
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
            let mut throttled: Vec<u64> = runs.iter().map(|s| s.throttled_periods).collect();
            throttled.sort_unstable();
            let throttled = throttled[throttled.len() / 2];
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
                "| {label} | {} | {} | {} | {} | {fetches:?} | {status} | {throttled} | {} | {} | {:+.1} | {} | {} |",
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
    tasks_tools::run_tool("cold-bench", options(), run).await
}
