#![forbid(unsafe_code)]
//! One source of truth for routes: `template.yaml`, `openapi.yaml`, cargo-lambda's router and
//! the local server's `ROUTES` must agree on every method + path → function. Likewise for CORS:
//! `template.yaml`'s `CorsConfiguration` (API Gateway) must say what the local server says.

use std::collections::BTreeSet;

use tasks_api::server::{
    CORS_ALLOW_HEADERS, CORS_ALLOW_METHODS, CORS_EXPOSE_HEADERS, CORS_MAX_AGE_SECONDS,
};
use tasks_shared::http::ROUTES;
use tasks_shared::http::routes::CATCH_ALL;
use yaml_rust2::{Yaml, YamlLoader};

type RouteSet = BTreeSet<(String, String, String)>;

fn read(name: &str) -> String {
    let path = format!("{}/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(name: &str) -> Yaml {
    YamlLoader::load_from_str(&read(name))
        .expect("valid YAML")
        .remove(0)
}

fn code_routes() -> RouteSet {
    ROUTES
        .iter()
        .map(|r| {
            (
                r.method.to_string(),
                r.path.to_owned(),
                r.function.name().to_owned(),
            )
        })
        .collect()
}

#[test]
fn sam_template_wires_each_function_to_exactly_its_route() {
    let template = yaml("template.yaml");
    let mut routes = RouteSet::new();
    let mut catch_all = Vec::new();
    for (_, resource) in template["Resources"].as_hash().unwrap() {
        if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        assert_eq!(
            resource["Metadata"]["BuildMethod"].as_str(),
            Some("rust-cargolambda")
        );
        let binary = resource["Metadata"]["BuildProperties"]["Binary"]
            .as_str()
            .unwrap();
        let events = resource["Properties"]["Events"].as_hash().unwrap();
        assert_eq!(events.len(), 1, "{binary}: exactly one route");
        for (_, event) in events {
            assert_eq!(event["Type"].as_str(), Some("HttpApi"));
            let props = &event["Properties"];
            match (props["Method"].as_str(), props["Path"].as_str()) {
                (Some(method), Some(path)) => {
                    routes.insert((method.to_owned(), path.to_owned(), binary.to_owned()));
                }
                // Neither: API Gateway's `$default` route, the catch-all.
                (None, None) => catch_all.push(binary.to_owned()),
                other => panic!("{binary}: half a route {other:?}"),
            }
        }
    }
    assert_eq!(routes, code_routes());
    assert_eq!(
        catch_all,
        [CATCH_ALL],
        "one catch-all function, answering 404/405"
    );
}

#[test]
fn openapi_describes_the_same_routes() {
    let spec = yaml("openapi.yaml");
    let mut routes = RouteSet::new();
    for (path, item) in spec["paths"].as_hash().unwrap() {
        for (method, operation) in item.as_hash().unwrap() {
            let method = method.as_str().unwrap();
            if method == "parameters" {
                continue;
            }
            let function = operation["x-lambda-function"]
                .as_str()
                .expect("x-lambda-function");
            routes.insert((
                method.to_uppercase(),
                path.as_str().unwrap().to_owned(),
                function.to_owned(),
            ));
        }
    }
    assert_eq!(routes, code_routes());
}

#[test]
fn cargo_lambda_router_matches_and_every_function_is_a_workspace_binary() {
    let manifest: toml::Table = read("Cargo.toml").parse().unwrap();
    let router = manifest["workspace"]["metadata"]["lambda"]["watch"]["router"]
        .as_table()
        .unwrap();
    let mut routes = RouteSet::new();
    for (path, methods) in router {
        for entry in methods.as_array().unwrap() {
            let field = |name: &str| entry[name].as_str().unwrap().to_owned();
            routes.insert((field("method"), path.clone(), field("function")));
        }
    }
    assert_eq!(routes, code_routes());
    for route in &ROUTES {
        let name = route.function.name();
        let crate_manifest = read(&format!("functions/{name}/Cargo.toml"));
        assert!(
            crate_manifest.contains(&format!("name = \"{name}\"")),
            "{name}"
        );
        let main = read(&format!("functions/{name}/src/main.rs"));
        assert!(
            main.contains(&format!("{:?}", route.function)),
            "functions/{name} serves its own route"
        );
    }
}

/// Header names compare case-insensitively; a name listed twice is a mistake.
fn lowercase_set<'a>(items: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    let items: Vec<String> = items.into_iter().map(str::to_ascii_lowercase).collect();
    let set: BTreeSet<String> = items.iter().cloned().collect();
    assert_eq!(set.len(), items.len(), "duplicates in {items:?}");
    set
}

#[test]
fn sam_template_cors_matches_the_local_server() {
    let template = yaml("template.yaml");
    let apis: Vec<&Yaml> = template["Resources"]
        .as_hash()
        .unwrap()
        .values()
        .filter(|r| r["Type"].as_str() == Some("AWS::Serverless::HttpApi"))
        .collect();
    assert_eq!(apis.len(), 1, "exactly one HTTP API");
    let cors = &apis[0]["Properties"]["CorsConfiguration"];
    let list = |key: &str| {
        let items = cors[key]
            .as_vec()
            .unwrap_or_else(|| panic!("CorsConfiguration.{key} is a list"));
        lowercase_set(
            items
                .iter()
                .map(|item| item.as_str().expect("a header or method name")),
        )
    };
    assert_eq!(
        list("AllowHeaders"),
        lowercase_set(CORS_ALLOW_HEADERS.iter().copied()),
        "AllowHeaders vs src/server.rs CORS_ALLOW_HEADERS"
    );
    assert_eq!(
        list("ExposeHeaders"),
        lowercase_set(CORS_EXPOSE_HEADERS.iter().copied()),
        "ExposeHeaders vs src/server.rs CORS_EXPOSE_HEADERS"
    );
    assert_eq!(
        list("AllowMethods"),
        lowercase_set(CORS_ALLOW_METHODS.iter().copied().chain(["OPTIONS"])),
        "AllowMethods vs src/server.rs CORS_ALLOW_METHODS (+ OPTIONS)"
    );
    assert_eq!(
        cors["MaxAge"].as_i64(),
        Some(i64::from(CORS_MAX_AGE_SECONDS))
    );
}

#[test]
fn cors_lists_cover_the_contracts_headers() {
    let allowed = lowercase_set(CORS_ALLOW_HEADERS.iter().copied());
    for name in [
        "authorization",
        "content-type",
        "idempotency-key",
        "if-match",
        "if-none-match",
    ] {
        assert!(
            allowed.contains(name),
            "{name} is an allowed request header"
        );
    }
    let exposed = lowercase_set(CORS_EXPOSE_HEADERS.iter().copied());
    for name in [
        "etag",
        "idempotent-replayed",
        "location",
        "retry-after",
        "www-authenticate",
    ] {
        assert!(
            exposed.contains(name),
            "{name} is an exposed response header"
        );
    }
}

fn event(path: &std::path::Path) -> serde_json::Value {
    tasks_tools::events::load(path).unwrap_or_else(|e| panic!("{e}"))
}

/// Every fixture in `events/` is an API Gateway v2 event for one of the routes, or for the
/// catch-all `$default` route.
#[test]
fn every_event_fixture_is_for_a_route() {
    let dir = format!("{}/events", env!("CARGO_MANIFEST_DIR"));
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        seen += 1;
        let event = event(&path);
        assert_eq!(event["version"], "2.0", "{path:?}");
        let route_key = event["routeKey"].as_str().expect("routeKey");
        assert_eq!(event["requestContext"]["routeKey"], route_key, "{path:?}");
        if route_key == "$default" {
            continue;
        }
        let (method, route_path) = route_key.split_once(' ').expect("METHOD /path");
        assert_eq!(
            event["requestContext"]["http"]["method"], method,
            "{path:?}"
        );
        assert!(
            ROUTES
                .iter()
                .any(|r| r.method.as_str() == method && r.path == route_path),
            "{path:?}: {route_key} is not a route"
        );
    }
    assert!(seen >= ROUTES.len(), "one event per route at least");
}

/// `update-task-if-match.json` is `update-task.json` plus well-formed `if-match` and
/// `idempotency-key` headers (and its own request id).
#[test]
fn conditional_update_event_differs_only_by_its_headers() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("events");
    let plain = event(&dir.join("update-task.json"));
    let mut conditional = event(&dir.join("update-task-if-match.json"));
    let headers = conditional["headers"].as_object_mut().unwrap();
    let if_match = headers.remove("if-match").expect("if-match header");
    let key = headers
        .remove("idempotency-key")
        .expect("idempotency-key header");
    let if_match = if_match.as_str().unwrap();
    assert!(
        if_match.len() > 2
            && if_match.starts_with('"')
            && if_match.ends_with('"')
            && !if_match[1..if_match.len() - 1].contains('"'),
        "an entity tag: {if_match}"
    );
    let key = key.as_str().unwrap();
    assert!(
        (1..=255).contains(&key.len()) && key.bytes().all(|b| (b'!'..=b'~').contains(&b)),
        "a valid Idempotency-Key: {key}"
    );
    conditional["requestContext"]["requestId"] = plain["requestContext"]["requestId"].clone();
    assert_eq!(conditional, plain);
}

/// Every crate root of ours forbids `unsafe` (SECURITY.md, supply chain): the libraries, every
/// binary (functions and tools), every test and bench crate. A crate that needs `unsafe` must
/// say why where it allows it, and be listed here.
#[test]
fn every_crate_root_forbids_unsafe_code() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut roots = vec![
        root.join("src/lib.rs"),
        root.join("src/main.rs"),
        root.join("shared/src/lib.rs"),
        root.join("tools/src/lib.rs"),
    ];
    let files_in = |dir: &str| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(root.join(dir))
            .map(|entries| entries.flatten().map(|entry| entry.path()).collect())
            .unwrap_or_default()
    };
    for path in files_in("src/bin")
        .into_iter()
        .chain(files_in("tools/src/bin"))
    {
        roots.push(if path.is_dir() {
            path.join("main.rs")
        } else {
            path
        });
    }
    for function in files_in("functions") {
        roots.push(function.join("src/main.rs"));
    }
    for dir in ["tests", "benches", "shared/benches"] {
        roots.extend(
            files_in(dir)
                .into_iter()
                .filter(|p| p.extension() == Some("rs".as_ref())),
        );
    }
    assert!(roots.len() > 30, "{roots:?}");
    let missing: Vec<_> = roots
        .iter()
        .filter(|path| {
            !std::fs::read_to_string(path)
                .unwrap_or_default()
                .contains("#![forbid(unsafe_code)]")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "crate roots without forbid(unsafe_code): {missing:?}"
    );
}
