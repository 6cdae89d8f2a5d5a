#![forbid(unsafe_code)]
//! Load generator for the local server: N users, one keep-alive connection and one token each,
//! driving the mixed workload of the original plan's benchmark (~50% list, 20% create, 15% get,
//! 10% toggle, 5% update) for a fixed time. Prints requests/s, errors and latency percentiles.
//!
//!     loadgen --url http://127.0.0.1:8000 --users 100 --seconds 30 --secret "$JWT_SECRET"
//!     loadgen --token-family eddsa --jwks-port 8078 --issuer https://app.example.com ...
//!     loadgen --seed-tasks 0 --first-response 1 --seconds 5 ...   (a burst: everyone at once)
//!
//! Any answer other than the operation's expected status, any failed request and any user
//! that died counts as an error; a run with errors exits non-zero.
//!
//! `--first-response 1` also reports the distribution of each user's first response in the
//! measured window: all users send it at the same instant. With `--seed-tasks 0` a user without
//! tasks yet creates one where the mix would read or change one.
//!
//! Token families: `hs256` (signed with `--secret`, the server's `JWT_SECRET`), or `eddsa` /
//! `es256`, shaped like Better Auth's (header `{alg, kid}`, the user object plus `sub`, `iat`,
//! `exp`, `iss`, `aud`) and signed with a key pair generated at start. loadgen then serves the
//! public key as a JWKS at `http://127.0.0.1:<jwks-port>/api/auth/jwks` for as long as it runs:
//! start the server with that `JWKS_URL` (it fetches keys on first use, not at start-up).
//! `rs256` signs with the RSA key in `--rsa-key FILE` (PKCS#8 DER): ring cannot generate RSA
//! keys, so `scripts/bench-load.sh` makes a throwaway one with openssl (no key is committed).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rand::{Rng, SeedableRng};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RSA_PKCS1_SHA256,
    RsaKeyPair, RsaPublicKeyComponents,
};
use serde_json::json;
use tasks_tools::jwks::JwksServer;
use tasks_tools::tokens::{hs256_for, now_seconds};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Family {
    Hs256,
    EdDsa,
    Es256,
    Rs256,
}

struct Options {
    url: String,
    users: usize,
    seconds: u64,
    secret: String,
    seed_tasks: usize,
    family: Family,
    jwks_port: u16,
    issuer: String,
    first_response: bool,
    rsa_key: Option<String>,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        url: "http://127.0.0.1:8000".into(),
        users: 100,
        seconds: 30,
        secret: std::env::var("JWT_SECRET").unwrap_or_default(),
        seed_tasks: 10,
        family: Family::Hs256,
        jwks_port: 8078,
        issuer: "https://app.example.com".into(),
        first_response: false,
        rsa_key: None,
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
            "--token-family" => {
                options.family = match value.as_str() {
                    "hs256" => Family::Hs256,
                    "eddsa" => Family::EdDsa,
                    "es256" => Family::Es256,
                    "rs256" => Family::Rs256,
                    _ => return Err("--token-family: hs256, eddsa, es256 or rs256".into()),
                }
            }
            "--jwks-port" => options.jwks_port = value.parse().map_err(|_| "bad --jwks-port")?,
            "--issuer" => options.issuer = value,
            "--rsa-key" => options.rsa_key = Some(value),
            "--first-response" => {
                options.first_response = match value.as_str() {
                    "1" | "true" | "yes" => true,
                    "0" | "false" | "no" => false,
                    _ => return Err("--first-response: 1 or 0".into()),
                }
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    if options.family == Family::Hs256 && options.secret.is_empty() {
        return Err("set --secret or JWT_SECRET".into());
    }
    Ok(options)
}

/// Signs tokens for every user: the server's HS256 secret, or a key pair of our own.
enum Signer {
    Hs256(String),
    Jwks(Box<KeyPair>),
}

enum KeyPair {
    EdDsa(Ed25519KeyPair),
    Es256(EcdsaKeyPair, SystemRandom),
    Rs256(RsaKeyPair, SystemRandom),
}

const KID: &str = "loadgen";
const TOKEN_TTL_SECONDS: u64 = 3600;

impl Signer {
    fn new(options: &Options) -> Result<Self, String> {
        let rng = SystemRandom::new();
        let pair = match options.family {
            Family::Hs256 => return Ok(Self::Hs256(options.secret.clone())),
            Family::EdDsa => {
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| e.to_string())?;
                let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|e| e.to_string())?;
                KeyPair::EdDsa(pair)
            }
            Family::Es256 => {
                let alg = &ECDSA_P256_SHA256_FIXED_SIGNING;
                let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).map_err(|e| e.to_string())?;
                let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng)
                    .map_err(|e| e.to_string())?;
                KeyPair::Es256(pair, rng)
            }
            Family::Rs256 => {
                let path = options
                    .rsa_key
                    .as_deref()
                    .ok_or("rs256 needs --rsa-key FILE")?;
                let der = std::fs::read(path).map_err(|e| format!("--rsa-key {path}: {e}"))?;
                let pair = RsaKeyPair::from_pkcs8(&der).map_err(|e| format!("--rsa-key: {e}"))?;
                KeyPair::Rs256(pair, rng)
            }
        };
        Ok(Self::Jwks(Box::new(pair)))
    }

    /// The public key set the server must be given, for the asymmetric families.
    fn jwks(&self) -> Option<String> {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let key = match self {
            Self::Hs256(_) => return None,
            Self::Jwks(pair) => match pair.as_ref() {
                KeyPair::EdDsa(pair) => json!({
                    "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "kid": KID,
                    "x": b64(pair.public_key().as_ref()),
                }),
                KeyPair::Es256(pair, _) => {
                    // Uncompressed SEC1 point: 0x04, then x and y (32 bytes each).
                    let point = pair.public_key().as_ref();
                    json!({
                        "kty": "EC", "crv": "P-256", "alg": "ES256", "kid": KID,
                        "x": b64(&point[1..33]), "y": b64(&point[33..65]),
                    })
                }
                KeyPair::Rs256(pair, _) => {
                    let public = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
                    json!({
                        "kty": "RSA", "alg": "RS256", "kid": KID,
                        "n": b64(&public.n), "e": b64(&public.e),
                    })
                }
            },
        };
        Some(json!({ "keys": [key] }).to_string())
    }

    fn token(&self, user: &str, issuer: &str) -> Result<String, String> {
        let pair = match self {
            Self::Hs256(secret) => return Ok(hs256_for(secret, user)),
            Self::Jwks(pair) => pair.as_ref(),
        };
        let alg = match pair {
            KeyPair::EdDsa(_) => "EdDSA",
            KeyPair::Es256(..) => "ES256",
            KeyPair::Rs256(..) => "RS256",
        };
        let now = now_seconds();
        // What Better Auth's jwt() plugin issues: header {alg, kid}; the user object + claims.
        let header = json!({ "alg": alg, "kid": KID });
        let claims = json!({
            "id": user, "name": user, "email": format!("{user}@example.com"),
            "emailVerified": true, "image": null,
            "createdAt": "2026-01-01T00:00:00.000Z", "updatedAt": "2026-01-01T00:00:00.000Z",
            "iat": now, "sub": user, "exp": now + TOKEN_TTL_SECONDS, "iss": issuer, "aud": issuer,
        });
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = match pair {
            KeyPair::EdDsa(pair) => pair.sign(message.as_bytes()).as_ref().to_vec(),
            KeyPair::Es256(pair, rng) => pair
                .sign(rng, message.as_bytes())
                .map_err(|e| e.to_string())?
                .as_ref()
                .to_vec(),
            KeyPair::Rs256(pair, rng) => {
                let mut signature = vec![0; pair.public().modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, rng, message.as_bytes(), &mut signature)
                    .map_err(|e| e.to_string())?;
                signature
            }
        };
        Ok(format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
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
    /// The first request of the measured window, answered or not.
    first: Option<Duration>,
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
        first: None,
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
        let op = match pick(&mut rng) {
            // Nothing to read or change yet (`--seed-tasks 0`): make something.
            Op::Get | Op::Toggle | Op::Update if ids.is_empty() => Op::Create,
            op => op,
        };
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
        let answer = connection.send(method, &path, body).await;
        result.first.get_or_insert_with(|| sent.elapsed());
        match answer {
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
        let signer = Signer::new(&options)?;
        // Served for as long as the run lasts.
        let _jwks = match signer.jwks() {
            Some(document) => {
                let address = SocketAddr::from(([127, 0, 0, 1], options.jwks_port));
                let server = JwksServer::start_on(address, Some(document))
                    .await
                    .map_err(|e| format!("JWKS port {}: {e}", options.jwks_port))?;
                Some(server)
            }
            None => None,
        };
        // Seeding happens before `start`; the measured window is exactly `seconds` long.
        let start = Instant::now() + Duration::from_secs(5);
        let end = start + Duration::from_secs(options.seconds);
        let mut users = Vec::new();
        for i in 0..options.users {
            let token = signer.token(&format!("load-user-{i:03}"), &options.issuer)?;
            users.push(tokio::spawn(run_user(
                authority.clone(),
                token,
                options.seed_tasks,
                start,
                end,
            )));
        }
        let mut results = Vec::new();
        for (i, user) in users.into_iter().enumerate() {
            // A user that panicked is a failed user, not a missing one.
            results.push(user.await.unwrap_or_else(|error| UserResult {
                latencies: Vec::new(),
                errors: vec![format!("user {i} died: {error}")],
                first: None,
            }));
        }
        Ok::<_, String>(results)
    });
    let results = match results {
        Ok(results) => results,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut all: Vec<Duration> = Vec::new();
    let mut per_op: std::collections::BTreeMap<String, usize> = Default::default();
    let mut errors = Vec::new();
    let mut firsts: Vec<Duration> = Vec::new();
    for result in results {
        firsts.extend(result.first);
        for (op, latency) in result.latencies {
            *per_op.entry(format!("{op:?}")).or_default() += 1;
            all.push(latency);
        }
        errors.extend(result.errors);
    }
    all.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "users: {}  duration: {} s  tokens: {:?}",
        options.users, options.seconds, options.family
    );
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
    if options.first_response {
        firsts.sort();
        println!(
            "first response ms: users {}  p50 {:.2}  p95 {:.2}  max {:.2}",
            firsts.len(),
            ms(percentile(&firsts, 50.0)),
            ms(percentile(&firsts, 95.0)),
            ms(firsts.last().copied().unwrap_or_default())
        );
    }
    for error in errors.iter().take(10) {
        println!("error: {error}");
    }
    if errors.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        eprintln!(
            "loadgen: {} errors (unexpected statuses, failed requests or users): failing the run",
            errors.len()
        );
        std::process::ExitCode::FAILURE
    }
}
