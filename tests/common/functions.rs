//! The real function binaries, built once per test process, run under the in-test Runtime API.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use tasks_shared::http::ROUTES;
use tasks_tools::function::{FunctionProcess, FunctionSpec, Output};
use tasks_tools::runtime_api::Outcome;

/// The directory holding the eight function binaries. `TASKS_FUNCTION_DIR` names prebuilt ones
/// (CI: the arm64 release binaries that ship, run with `TASKS_FUNCTION_RUNNER=qemu-aarch64 …`);
/// otherwise they are built here (debug profile, same target directory), since `cargo test`
/// builds only test harnesses for other packages' binaries.
pub fn binaries_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Ok(dir) = std::env::var("TASKS_FUNCTION_DIR") {
            return PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(dir);
        }
        let mut packages = vec![tasks_shared::http::routes::CATCH_ALL];
        packages.extend(ROUTES.iter().map(|route| route.function.name()));
        cargo_build(&packages, None);
        build_dir()
    })
    .clone()
}

/// A binary of the tools crate (e.g. `fleet`), built here like the functions: `cargo test`
/// gives `CARGO_BIN_EXE_*` only for the tested package's own binaries.
pub fn tool_binary(name: &str) -> PathBuf {
    cargo_build(&["tasks-tools"], Some(name));
    build_dir().join(name)
}

/// `cargo build` (debug, this target directory) of `packages`, or only `bin` of them.
fn cargo_build(packages: &[&str], bin: Option<&str>) {
    let mut command = std::process::Command::new(env!("CARGO"));
    command.args(["build", "--quiet"]);
    for package in packages {
        command.args(["-p", package]);
    }
    if let Some(bin) = bin {
        command.args(["--bin", bin]);
    }
    let status = command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building {packages:?} failed");
}

/// Where this test's debug binaries are: target/debug/deps/<this test> → target/debug.
fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .to_path_buf()
}

/// A function process attached to its own Runtime API (`api`, `child` and the rest of
/// [`FunctionProcess`] through `Deref`).
pub struct Function(FunctionProcess);

impl std::ops::Deref for Function {
    type Target = FunctionProcess;
    fn deref(&self) -> &FunctionProcess {
        &self.0
    }
}

impl std::ops::DerefMut for Function {
    fn deref_mut(&mut self) -> &mut FunctionProcess {
        &mut self.0
    }
}

impl Function {
    /// Starts `name` with the Lambda environment plus `vars` (nothing else is inherited but
    /// PATH, so the developer's shell cannot leak configuration in).
    pub async fn start(name: &str, vars: &[(&str, String)]) -> Self {
        Self::start_with_output(name, vars, Output::Discard).await
    }

    /// [`Function::start`], with the process' stdout and stderr going where `output` says
    /// (`Output::Capture`: read them from `child`, to see what the function logs).
    pub async fn start_with_output(name: &str, vars: &[(&str, String)], output: Output) -> Self {
        // e.g. "qemu-aarch64 -L /usr/aarch64-linux-gnu" to run arm64 binaries on x86_64.
        let runner = std::env::var("TASKS_FUNCTION_RUNNER").unwrap_or_default();
        let spec = FunctionSpec {
            name: name.to_owned(),
            binary: binaries_dir().join(name),
            env: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            runner: runner.split_whitespace().map(str::to_owned).collect(),
            output,
            ..FunctionSpec::default()
        };
        Self(FunctionProcess::spawn(&spec).await.expect("spawn function"))
    }

    pub async fn invoke(&self, event: &Value) -> Outcome {
        self.0
            .invoke(event, Duration::from_secs(20))
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
