#![forbid(unsafe_code)]
//! Load generator for the local server: N users, one keep-alive connection and one token each,
//! driving the mixed workload of the original plan's benchmark (~50% list, 20% create, 15% get,
//! 10% toggle, 5% update) for a fixed time. Prints requests/s, errors and latency percentiles.
//!
//!     loadgen --url http://127.0.0.1:8000 --users 100 --seconds 30 --secret "$JWT_SECRET"

use std::time::{Duration, Instant};

use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rand::{Rng, SeedableRng};
use tasks_api::dev::{TokenOptions, mint_hs256};

struct Options {
    url: String,
    users: usize,
    seconds: u64,
    secret: String,
    seed_tasks: usize,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        url: "http://127.0.0.1:8000".into(),
        users: 100,
        seconds: 30,
        secret: std::env::var("JWT_SECRET").unwrap_or_default(),
        seed_tasks: 10,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).ok_or("missing value")?.clone();
        match pair[0].as_str() {
            "--url" => options.url = value,
            "--users" => options.users = value.parse().map_err(|_| "bad --users")?,
            "--seconds" => options.seconds = value.parse().map_err(|_| "bad --seconds")?,
            "--secret" => options.secret = value,
            "--seed-tasks" => options.seed_tasks = value.parse().map_err(|_| "bad --seed-tasks")?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    if options.secret.is_empty() {
        return Err("set --secret or JWT_SECRET".into());
    }
    Ok(options)
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Op {
    List,
    Create,
    Get,
    Toggle,
    Update,
}

fn pick(rng: &mut impl Rng) -> Op {
    match rng.random_range(0..100) {
        0..50 => Op::List,
        50..70 => Op::Create,
        70..85 => Op::Get,
        85..95 => Op::Toggle,
        _ => Op::Update,
    }
}

struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
    host: String,
    token: String,
}

impl Connection {
    async fn open(authority: &str, token: String) -> Result<Self, String> {
        let stream = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        Ok(Self {
            sender,
            host: authority.to_owned(),
            token,
        })
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<(u16, Bytes), String> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.host)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| e.to_string())?;
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    }
}

fn task_id(body: &Bytes) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value["data"]["id"].as_str().map(str::to_owned)
}

struct UserResult {
    latencies: Vec<(Op, Duration)>,
    errors: Vec<String>,
}

async fn run_user(
    authority: String,
    token: String,
    seed_tasks: usize,
    start: Instant,
    end: Instant,
) -> UserResult {
    let mut result = UserResult {
        latencies: Vec::new(),
        errors: Vec::new(),
    };
    let mut connection = match Connection::open(&authority, token).await {
        Ok(c) => c,
        Err(e) => {
            result.errors.push(format!("connect: {e}"));
            return result;
        }
    };
    let mut ids = Vec::new();
    for i in 0..seed_tasks {
        match connection
            .send(
                Method::POST,
                "/api/tasks",
                Some(format!(r#"{{"title":"seed {i}"}}"#)),
            )
            .await
        {
            Ok((201, body)) => ids.extend(task_id(&body)),
            Ok((status, _)) => result.errors.push(format!("seed: {status}")),
            Err(e) => result.errors.push(format!("seed: {e}")),
        }
    }
    let mut rng = rand::rngs::SmallRng::from_rng(&mut rand::rng());
    // Everyone starts measuring together, after seeding.
    tokio::time::sleep_until(start.into()).await;
    while Instant::now() < end {
        let op = pick(&mut rng);
        let id = ids
            .get(rng.random_range(0..ids.len().max(1)))
            .cloned()
            .unwrap_or_default();
        let (method, path, body, expected) = match op {
            Op::List => (Method::GET, "/api/tasks?limit=20".to_owned(), None, 200),
            Op::Create => (
                Method::POST,
                "/api/tasks".to_owned(),
                Some(r#"{"title":"load test task","description":"created under load"}"#.to_owned()),
                201,
            ),
            Op::Get => (Method::GET, format!("/api/tasks/{id}"), None, 200),
            Op::Toggle => (Method::PATCH, format!("/api/tasks/{id}/toggle"), None, 200),
            Op::Update => (
                Method::PUT,
                format!("/api/tasks/{id}"),
                Some(r#"{"title":"updated under load","is_completed":false}"#.to_owned()),
                200,
            ),
        };
        let sent = Instant::now();
        match connection.send(method, &path, body).await {
            Ok((status, body)) if status == expected => {
                result.latencies.push((op, sent.elapsed()));
                if op == Op::Create {
                    ids.extend(task_id(&body));
                }
            }
            Ok((status, _)) => result.errors.push(format!("{op:?}: HTTP {status}")),
            Err(e) => {
                result.errors.push(format!("{op:?}: {e}"));
                return result;
            }
        }
    }
    result
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() -> std::process::ExitCode {
    let options = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let authority = options
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let results = runtime.block_on(async {
        // Seeding happens before `start`; the measured window is exactly `seconds` long.
        let start = Instant::now() + Duration::from_secs(5);
        let end = start + Duration::from_secs(options.seconds);
        let users: Vec<_> = (0..options.users)
            .map(|i| {
                let token = mint_hs256(
                    &options.secret,
                    &format!("load-user-{i:03}"),
                    &TokenOptions {
                        ttl_seconds: 3600,
                        ..Default::default()
                    },
                );
                tokio::spawn(run_user(
                    authority.clone(),
                    token,
                    options.seed_tasks,
                    start,
                    end,
                ))
            })
            .collect();
        let mut results = Vec::new();
        for user in users {
            if let Ok(result) = user.await {
                results.push(result);
            }
        }
        results
    });
    let mut all: Vec<Duration> = Vec::new();
    let mut per_op: std::collections::BTreeMap<String, usize> = Default::default();
    let mut errors = Vec::new();
    for result in results {
        for (op, latency) in result.latencies {
            *per_op.entry(format!("{op:?}")).or_default() += 1;
            all.push(latency);
        }
        errors.extend(result.errors);
    }
    all.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("users: {}  duration: {} s", options.users, options.seconds);
    println!(
        "requests: {}  requests/s: {:.0}  errors: {}",
        all.len(),
        all.len() as f64 / options.seconds as f64,
        errors.len()
    );
    println!(
        "latency ms: p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2}",
        ms(percentile(&all, 50.0)),
        ms(percentile(&all, 95.0)),
        ms(percentile(&all, 99.0)),
        ms(all.last().copied().unwrap_or_default())
    );
    println!("mix: {per_op:?}");
    for error in errors.iter().take(10) {
        println!("error: {error}");
    }
    if errors.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
