#![forbid(unsafe_code)]
//! Lambda figures for the real function binaries, through the in-process Runtime API:
//! cold start (process spawn → first response, including the first database connection),
//! warm invocation latency, and peak RSS. Every answer must have the status its fixture gets
//! (`tasks_tools::events::fixture_status`), or the run fails without a table.
//!
//!     cargo build --release -p health -p list-tasks …   (scripts/bench-lambda.sh does this)
//!     lambda-bench --dir target/release --spawns 20 --warm 1000 [--memory 128 [--throttle always]]
//!         [--function list-tasks]
//!
//! `--memory MB` runs each process under Lambda's CPU quota for that size (`lambda_cpu`:
//! unthrottled init, then the quota; `--throttle always` from the spawn on). `--function NAME`
//! measures that one function only (scripts/bench-power.sh needs list-tasks alone).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use tasks_shared::http::ROUTES;
use tasks_tools::events::{fixture_status, signed_fixture};
use tasks_tools::function::{FunctionProcess, FunctionSpec};
use tasks_tools::lambda_cpu::{CpuGroup, CpuModel};
use tasks_tools::tokens::hs256_for;

const SECRET: &str = "lambda-bench-secret-0123456789abcdef0123";
const INVOKE_TIMEOUT: Duration = Duration::from_secs(30);

struct Options {
    dir: PathBuf,
    spawns: usize,
    warm: usize,
    database_url: String,
    cpu: CpuModel,
    /// Only this function (`None`: all seven).
    function: Option<String>,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        dir: PathBuf::from("target/release"),
        spawns: 20,
        warm: 1000,
        database_url: "postgres://postgres@127.0.0.1:5432/tasks_bench".into(),
        cpu: CpuModel::WholeCore,
        function: None,
    };
    let (mut memory, mut throttle) = (None, None);
    let count = |value: String, name: &str| {
        value
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or(format!("{name}: a positive number"))
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--dir" => options.dir = PathBuf::from(value),
            "--spawns" => options.spawns = count(value, "--spawns")?,
            "--warm" => options.warm = count(value, "--warm")?,
            "--database-url" => options.database_url = value,
            "--memory" => memory = Some(value),
            "--throttle" => throttle = Some(value),
            "--function" => {
                if !ROUTES.iter().any(|route| route.function.name() == value) {
                    return Err(format!("--function: no function named {value:?}"));
                }
                options.function = Some(value);
            }
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    options.cpu = CpuModel::parse(memory.as_deref(), throttle.as_deref())?;
    Ok(options)
}

fn stats(mut values: Vec<Duration>) -> (Duration, Duration, Duration) {
    values.sort();
    let median = values[values.len() / 2];
    let p99 = values[((values.len() * 99) / 100).min(values.len() - 1)];
    (median, p99, values[values.len() - 1])
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// One invocation, which must answer `expected`.
async fn invoke_expecting(
    process: &FunctionProcess,
    event: &serde_json::Value,
    expected: u16,
) -> Result<(), String> {
    let status = process.status(event, INVOKE_TIMEOUT).await?;
    process.cpu_applied()?;
    if status == expected {
        Ok(())
    } else {
        Err(format!(
            "{} answered {status}, expected {expected}",
            process.name
        ))
    }
}

async fn run(options: Options) -> Result<(), String> {
    if let CpuModel::Lambda { memory_mb, .. } = options.cpu {
        // Say now, before any figure, if the model cannot be applied here.
        CpuGroup::create(memory_mb)?;
    }
    tasks_shared::migrate::prepare(&options.database_url, None)
        .await
        .map_err(|e| format!("prepare the benchmark database: {e}"))?;
    let token = hs256_for(SECRET, "lambda-bench-user");

    println!("{}", options.cpu.describe());
    println!(
        "| function | cold start median ms | cold max ms | status | warm median ms | warm p99 ms | peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|");
    let chosen = |name: &str| options.function.as_deref().is_none_or(|only| only == name);
    for route in ROUTES.iter().filter(|route| chosen(route.function.name())) {
        let function = route.function.name();
        let spec = FunctionSpec {
            name: function.to_owned(),
            binary: options.dir.join(function),
            env: vec![
                ("DATABASE_URL".into(), options.database_url.clone()),
                ("JWT_SECRET".into(), SECRET.into()),
                ("AWS_LAMBDA_LOG_LEVEL".into(), "error".into()),
            ],
            cpu: options.cpu,
            ..FunctionSpec::default()
        };
        let event = signed_fixture(function, &token)?;
        let expected = fixture_status(function);
        let mut colds = Vec::new();
        for _ in 0..options.spawns {
            let process = FunctionProcess::spawn(&spec).await?;
            invoke_expecting(&process, &event, expected).await?;
            colds.push(process.started.elapsed());
            process.stop().await;
        }
        let (cold_median, _, cold_max) = stats(colds);
        // Warm: one process, `warm` sequential invocations after the first.
        let process = FunctionProcess::spawn(&spec).await?;
        invoke_expecting(&process, &event, expected).await?;
        let mut latencies = Vec::with_capacity(options.warm);
        for _ in 0..options.warm {
            let sent = Instant::now();
            invoke_expecting(&process, &event, expected).await?;
            latencies.push(sent.elapsed());
        }
        let rss = process.peak_rss_kib().unwrap_or(0);
        process.stop().await;
        let (warm_median, warm_p99, _) = stats(latencies);
        println!(
            "| {function} | {} | {} | {expected} | {} | {} | {:.1} |",
            ms(cold_median),
            ms(cold_max),
            ms(warm_median),
            ms(warm_p99),
            rss as f64 / 1024.0
        );
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    tasks_tools::run_tool("lambda-bench", options(), run).await
}
