//! The real function binaries, built once per test process, run under the in-test Runtime API.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use tasks_api::runtime_api::{Outcome, RuntimeApi, lambda_environment};
use tasks_shared::http::ROUTES;
use tokio::process::{Child, Command};

/// The directory holding the seven function binaries. `TASKS_FUNCTION_DIR` names prebuilt ones
/// (CI: the arm64 release binaries that ship, run with `TASKS_FUNCTION_RUNNER=qemu-aarch64 …`);
/// otherwise they are built here (debug profile, same target directory), since `cargo test`
/// builds only test harnesses for other packages' binaries.
pub fn binaries_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Ok(dir) = std::env::var("TASKS_FUNCTION_DIR") {
            return PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(dir);
        }
        let mut command = std::process::Command::new(env!("CARGO"));
        command.args(["build", "--quiet"]);
        for route in &ROUTES {
            command.args(["-p", route.function.name()]);
        }
        command.args(["-p", tasks_shared::http::routes::CATCH_ALL]);
        let status = command
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building the function binaries failed");
        // target/debug/deps/<this test> → target/debug
        let exe = std::env::current_exe().expect("test executable");
        exe.parent()
            .and_then(|deps| deps.parent())
            .expect("target dir")
            .to_path_buf()
    })
    .clone()
}

/// A function process attached to its own Runtime API.
pub struct Function {
    pub api: RuntimeApi,
    pub child: Child,
}

impl Function {
    /// Starts `name` with the Lambda environment plus `vars` (nothing else is inherited but
    /// PATH, so the developer's shell cannot leak configuration in).
    pub async fn start(name: &str, vars: &[(&str, String)]) -> Self {
        Self::start_with_output(name, vars, Stdio::null(), Stdio::null()).await
    }

    /// [`Function::start`], with the process' stdout and stderr going to `stdout` and `stderr`
    /// (e.g. `Stdio::piped()`, read from `child`, to see what the function logs).
    pub async fn start_with_output(
        name: &str,
        vars: &[(&str, String)],
        stdout: Stdio,
        stderr: Stdio,
    ) -> Self {
        let api = RuntimeApi::start().await.expect("runtime api");
        let binary = binaries_dir().join(name);
        // e.g. "qemu-aarch64 -L /usr/aarch64-linux-gnu" to run arm64 binaries on x86_64.
        let runner = std::env::var("TASKS_FUNCTION_RUNNER").unwrap_or_default();
        let mut words = runner.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut command = Command::new(program);
                command.args(words).arg(&binary);
                command
            }
            None => Command::new(&binary),
        };
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(lambda_environment(&api, name))
            .envs(vars.iter().map(|(k, v)| (k.to_string(), v.clone())))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true);
        let child = command.spawn().expect("spawn function");
        Self { api, child }
    }

    pub async fn invoke(&self, event: &Value) -> Outcome {
        self.api
            .invoke(event.clone(), Duration::from_secs(20))
            .await
            .expect("the function answered in time")
    }

    /// The API Gateway response document of a successful invocation.
    pub async fn respond(&self, event: &Value) -> Value {
        match self.invoke(event).await {
            Outcome::Response(document) => document,
            other => panic!("expected a response, got {other:?}"),
        }
    }
}

/// The JSON body of an API Gateway v2 response document (`null` when empty).
pub fn body_json(document: &Value) -> Value {
    let body = document["body"].as_str().unwrap_or_default();
    let bytes = if document["isBase64Encoded"] == true {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .expect("base64 body")
    } else {
        body.as_bytes().to_vec()
    };
    if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("JSON body")
    }
}
