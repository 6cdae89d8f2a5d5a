//! API Gateway HTTP API (payload 2.0) events: the fixtures in `events/` and the edits tests
//! and benchmarks make to them, and the event API Gateway builds from an HTTP request (the
//! fleet's gateway).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::{Method, header};
use serde_json::{Map, Value, json};
use tasks_shared::http::routes::CATCH_ALL;
use tasks_shared::http::{ROUTES, resolve};

/// The repository's `events/` directory.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../events")
}

/// The event in the JSON file `path`.
pub fn load(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The fixture `events/NAME.json` (one per function, named after it, plus variants).
pub fn fixture(name: &str) -> Result<Value, String> {
    load(&fixtures_dir().join(format!("{name}.json")))
}

/// The fixture for `function`, carrying `token` if the fixture carries a token at all
/// (`health` does not): what the benchmarks send.
pub fn signed_fixture(function: &str, token: &str) -> Result<Value, String> {
    let event = fixture(function)?;
    Ok(if event["headers"].get("authorization").is_some() {
        authorize(event, token)
    } else {
        event
    })
}

/// The status a function answers its fixture with, signed by a valid token: the task routes'
/// fixtures name a task nobody owns, so they answer 404 after the same auth and statement.
pub fn fixture_status(function: &str) -> u16 {
    match function {
        "create-task" => 201,
        "get-task" | "update-task" | "delete-task" | "toggle-task" => 404,
        _ if function == CATCH_ALL => 404,
        _ => 200,
    }
}

/// The event with `Authorization: Bearer <token>`.
pub fn authorize(mut event: Value, token: &str) -> Value {
    event["headers"]["authorization"] = json!(format!("Bearer {token}"));
    event
}

/// The event addressed to task `id` instead of the fixture's (`Err` if it names no task).
pub fn for_task(mut event: Value, id: &str) -> Result<Value, String> {
    let fixture_id = event["pathParameters"]["task_id"]
        .as_str()
        .ok_or("not a task route: no pathParameters.task_id")?
        .to_owned();
    for pointer in ["/rawPath", "/requestContext/http/path"] {
        let path = event
            .pointer(pointer)
            .and_then(Value::as_str)
            .ok_or(format!("no {pointer}"))?
            .replace(&fixture_id, id);
        if let Some(slot) = event.pointer_mut(pointer) {
            *slot = json!(path);
        }
    }
    event["pathParameters"]["task_id"] = json!(id);
    Ok(event)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// The function and route key API Gateway would pick: a `ROUTES` entry, else `$default`.
pub fn route(method: &Method, path: &str) -> (&'static str, String, Option<String>) {
    match resolve(method, path) {
        Ok(matched) => {
            let key = ROUTES
                .iter()
                .find(|route| route.function == matched.function)
                .map(|route| format!("{} {}", route.method, route.path))
                .unwrap_or_else(|| "$default".to_owned());
            (
                matched.function.name(),
                key,
                matched.task_id.map(percent_decode),
            )
        }
        Err(_) => (CATCH_ALL, "$default".to_owned(), None),
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `27/Nov/2026:18:21:22 +0000`, as in `requestContext.time`.
pub fn clf_time(epoch_ms: u64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = epoch_ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[(month - 1).clamp(0, 11) as usize],
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The payload-2.0 event API Gateway HTTP API sends for this request (request `request_id` of
/// a gateway listening on `listen_port`), and the function it goes to.
pub fn from_request(
    parts: &http::request::Parts,
    body: &[u8],
    peer: SocketAddr,
    listen_port: u16,
    request_id: u64,
) -> (&'static str, Value) {
    let path = parts.uri.path();
    let (function, route_key, task_id) = route(&parts.method, path);
    let mut headers = Map::new();
    let mut cookies = Vec::new();
    for name in parts.headers.keys() {
        let values: Vec<&str> = parts
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if name == header::COOKIE {
            cookies.extend(values.iter().flat_map(|v| v.split(';')).map(str::trim));
            continue;
        }
        headers.insert(name.as_str().to_owned(), json!(values.join(",")));
    }
    let epoch_ms = now_ms();
    let trace = format!("Root=1-{:08x}-{:024x}", epoch_ms / 1000, request_id);
    let source_ip = match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        ip => ip,
    }
    .to_string();
    for (name, value) in [
        ("x-amzn-trace-id", trace),
        ("x-forwarded-for", source_ip.clone()),
        ("x-forwarded-port", listen_port.to_string()),
        ("x-forwarded-proto", "http".to_owned()),
    ] {
        headers.entry(name).or_insert(json!(value));
    }
    let domain = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_owned();
    let query = parts.uri.query().unwrap_or("");
    let mut parameters: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        parameters
            .entry(percent_decode(key))
            .or_default()
            .push(percent_decode(value));
    }
    let mut event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "fleet",
            "domainName": domain,
            "domainPrefix": domain.split('.').next().unwrap_or(""),
            "http": {
                "method": parts.method.as_str(),
                "path": path,
                "protocol": format!("{:?}", parts.version),
                "sourceIp": source_ip,
                "userAgent": parts.headers.get(header::USER_AGENT)
                    .and_then(|v| v.to_str().ok()).unwrap_or(""),
            },
            "requestId": format!("fleet-{request_id:012x}"),
            "routeKey": route_key,
            "stage": "$default",
            "time": clf_time(epoch_ms),
            "timeEpoch": epoch_ms,
        },
        "isBase64Encoded": false,
    });
    if !cookies.is_empty() {
        event["cookies"] = json!(cookies);
    }
    if !parameters.is_empty() {
        let joined: Map<String, Value> = parameters
            .into_iter()
            .map(|(k, v)| (k, json!(v.join(","))))
            .collect();
        event["queryStringParameters"] = Value::Object(joined);
    }
    if let Some(task_id) = task_id {
        event["pathParameters"] = json!({ "task_id": task_id });
    }
    if !body.is_empty() {
        match std::str::from_utf8(body) {
            Ok(text) => event["body"] = json!(text),
            Err(_) => {
                event["body"] = json!(BASE64.encode(body));
                event["isBase64Encoded"] = json!(true);
            }
        }
    }
    (function, event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clf_time_matches_api_gateway() {
        // The fixtures' timeEpoch 1795803682641 is "27/Nov/2026:18:21:22 +0000".
        assert_eq!(clf_time(1_795_803_682_641), "27/Nov/2026:18:21:22 +0000");
        assert_eq!(clf_time(0), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(clf_time(951_782_400_000), "29/Feb/2000:00:00:00 +0000");
    }

    #[test]
    fn routes_go_to_their_function_and_the_rest_to_the_catch_all() {
        let (function, key, id) = route(&Method::PATCH, "/api/tasks/a%2Db/toggle");
        assert_eq!(
            (function, key.as_str(), id.as_deref()),
            (
                "toggle-task",
                "PATCH /api/tasks/{task_id}/toggle",
                Some("a-b")
            )
        );
        assert_eq!(route(&Method::DELETE, "/health").0, CATCH_ALL);
        assert_eq!(route(&Method::GET, "/nope").1, "$default");
    }

    #[test]
    fn every_function_has_a_fixture_and_task_routes_can_be_readdressed() {
        for route in &ROUTES {
            let event = fixture(route.function.name()).expect("fixture");
            assert_eq!(event["version"], "2.0");
        }
        let moved = for_task(fixture("get-task").unwrap(), "abc").unwrap();
        assert_eq!(moved["pathParameters"]["task_id"], "abc");
        assert!(moved["rawPath"].as_str().unwrap().ends_with("/abc"));
        assert!(for_task(fixture("health").unwrap(), "abc").is_err());
    }
}
