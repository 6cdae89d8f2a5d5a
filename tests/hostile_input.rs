#![forbid(unsafe_code)]
//! Issue 13: no input is ever a 500. Generated and hand-picked hostile input against the real
//! local server and the real PostgreSQL: text the database cannot store (U+0000, over-long keys),
//! lone surrogate escapes, control and non-BMP characters, values at and past every limit, huge
//! numbers. Every answer must be below 500, and a refused request must write nothing.
//!
//! The expected outcome of each generated request is computed here from CONTRACT.md's rules
//! (restated below as plain numbers), so a wrong 4xx fails too, not only a 5xx.
//!
//! Case count per property: `TASKS_PROPTEST_CASES` (default 48). The seed is fixed (ChaCha,
//! `PROPTEST_RNG_SEED` overrides it), so a run is reproducible.

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::tokens::{now, sign_raw_hs256};
use common::{TestApp, bearer, inspect, json_type, spawn_app, spawn_app_with, stored_rows};
use http::{Method, StatusCode, header};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{Value, json};
use tasks_api::dev::TokenOptions;

// The contract's limits (CONTRACT.md), restated rather than imported: this file is the oracle.
const TITLE_MAX: usize = 500;
const DESCRIPTION_MAX: usize = 5000;
const SUB_MAX: usize = 255;
const EMAIL_MAX: usize = 320;
const BODY_MAX_BYTES: usize = 64 * 1024;
const TOKEN_MAX_BYTES: usize = 8192;
const LIMIT_MAX: i128 = 500;
/// PostgreSQL's `timestamptz` range, as Unix microseconds: 4714-11-24 00:00 BC ...
const PG_MIN_MICROS: i128 = -210_866_803_200_000_000;
/// ... and the last microsecond of 9999 (what an RFC 3339 timestamp can carry).
const LAST_MICROS_9999: i128 = 253_402_300_799_999_999;

const DEFAULT_CASES: u32 = 48;
const DEFAULT_SEED: u64 = 0x7a5c_0013;

/// Runs `property` on generated values against one server and a connection for inspection.
fn run_property<S, F>(strategy: S, property: F)
where
    S: Strategy,
    S::Value: std::fmt::Debug,
    F: AsyncFn(&TestApp, &tokio_postgres::Client, S::Value) -> Result<(), TestCaseError>,
{
    common::property::run(
        (DEFAULT_CASES, DEFAULT_SEED),
        async { (spawn_app().await, inspect().await) },
        strategy,
        async |(app, db), value| property(app, db, value).await,
    );
}

// ---------------------------------------------------------------------------------------------
// Generated text, as the JSON string literals a client could send.

/// A piece of a JSON string literal.
#[derive(Debug, Clone)]
enum Piece {
    /// A character written as serde_json writes it (raw, or escaped when it must be).
    Char(char),
    /// A character written as a `\uXXXX` escape (controls, U+0000, anything in the BMP).
    Escaped(char),
    /// A lone surrogate escape: not a character, invalid JSON text.
    LoneSurrogate(u16),
    /// A non-BMP character as an escaped surrogate pair, in order or reversed.
    Pair(char, bool),
    /// `count` copies of a character: reaches every length limit.
    Run(char, usize),
}

fn escape_u16(unit: u16) -> String {
    format!("\\u{unit:04x}")
}

fn render_piece(piece: &Piece, out: &mut String) {
    match piece {
        Piece::Char(c) => {
            let quoted = Value::String(c.to_string()).to_string();
            out.push_str(&quoted[1..quoted.len() - 1]);
        }
        Piece::Escaped(c) => {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&escape_u16(*unit));
            }
        }
        Piece::LoneSurrogate(unit) => out.push_str(&escape_u16(*unit)),
        Piece::Pair(c, reversed) => {
            let mut units = [0u16; 2];
            let units = c.encode_utf16(&mut units);
            if *reversed {
                units.reverse();
            }
            for unit in units.iter() {
                out.push_str(&escape_u16(*unit));
            }
        }
        Piece::Run(c, count) => {
            let quoted = Value::String(c.to_string()).to_string();
            out.push_str(&quoted[1..quoted.len() - 1].repeat(*count));
        }
    }
}

/// A JSON string literal, quotes included.
fn literal(pieces: &[Piece]) -> String {
    let mut out = String::from("\"");
    for piece in pieces {
        render_piece(piece, &mut out);
    }
    out.push('"');
    out
}

/// Characters that have broken text handling somewhere: controls (C0, DEL, C1), U+0000,
/// Unicode whitespace, BOM, noncharacters, the replacement character, non-BMP.
fn hostile_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => Just('\0'),
        3 => (0u32..0x20).prop_map(|c| char::from_u32(c).unwrap_or('\0')),
        1 => prop::sample::select(vec![
            '\u{7f}', '\u{80}', '\u{85}', '\u{9f}', '\u{a0}', '\u{2028}', '\u{2029}',
            '\u{3000}', '\u{200b}', '\u{feff}', '\u{fffd}', '\u{fffe}', '\u{ffff}',
            '\u{10ffff}', '\u{1f600}', '\u{1d11e}', ' ', '"', '\\', '/', '%', '\'',
        ]),
        2 => any::<char>(),
        2 => prop::char::range('a', 'z'),
    ]
}

/// Lengths around every limit a text can meet (title 500, sub 255, email 320, description 5000).
fn run_length() -> impl Strategy<Value = usize> {
    prop_oneof![
        1..8usize,
        prop::sample::select(vec![
            254usize, 255, 256, 319, 320, 321, 499, 500, 501, 4999, 5000, 5001
        ]),
    ]
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        6 => hostile_char().prop_map(Piece::Char),
        2 => hostile_char().prop_map(Piece::Escaped),
        1 => (0xd800u16..=0xdfff).prop_map(Piece::LoneSurrogate),
        1 => (prop::char::range('\u{10000}', '\u{10ffff}'), any::<bool>())
            .prop_map(|(c, reversed)| Piece::Pair(c, reversed)),
        2 => (
            prop::sample::select(vec!['a', 'é', '\u{1f600}', '\u{3000}', '\0']),
            run_length()
        )
            .prop_map(|(c, n)| Piece::Run(c, n)),
    ]
}

fn text() -> impl Strategy<Value = Vec<Piece>> {
    prop::collection::vec(piece(), 0..6)
}

// ---------------------------------------------------------------------------------------------
// Bodies.

/// A value for a body field.
#[derive(Debug, Clone)]
enum FieldValue {
    Text(Vec<Piece>),
    /// Raw JSON text: null, booleans, huge numbers, arrays.
    Raw(&'static str),
}

fn field_value() -> impl Strategy<Value = FieldValue> {
    prop_oneof![
        8 => text().prop_map(FieldValue::Text),
        1 => prop::sample::select(vec![
            "null", "true", "false", "0", "-1", "1e400", "-1e400",
            "123456789012345678901234567890", "18446744073709551616", "[]", "{}", "[\"a\"]",
        ])
        .prop_map(FieldValue::Raw),
    ]
}

#[derive(Debug, Clone)]
enum Body {
    /// An object with these members, in this order.
    Object(Vec<(&'static str, FieldValue)>),
    /// An object with one member whose name is generated (always an unknown field).
    OddKey(Vec<Piece>),
    /// Arbitrary bytes (mostly not UTF-8, not JSON).
    Bytes(Vec<u8>),
}

fn body() -> impl Strategy<Value = Body> {
    let member = (
        prop::sample::select(vec!["title", "description", "is_completed", "tittle"]),
        field_value(),
    );
    let members = (field_value(), prop::collection::vec(member, 0..3)).prop_map(|(title, rest)| {
        let mut members = vec![("title", title)];
        members.extend(rest);
        members
    });
    prop_oneof![
        8 => (members, any::<bool>()).prop_map(|(mut members, title_last)| {
            // One member per name (a repeated member is JSON's undefined corner, not this issue).
            let mut seen = std::collections::HashSet::new();
            members.retain(|(name, _)| seen.insert(*name));
            if title_last {
                members.rotate_left(1);
            }
            Body::Object(members)
        }),
        1 => text().prop_map(Body::OddKey),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Body::Bytes),
    ]
}

fn render_value(value: &FieldValue) -> String {
    match value {
        FieldValue::Text(pieces) => literal(pieces),
        FieldValue::Raw(raw) => (*raw).to_owned(),
    }
}

fn render_body(body: &Body) -> Vec<u8> {
    match body {
        Body::Object(members) => {
            let members: Vec<String> = members
                .iter()
                .map(|(name, value)| format!("\"{name}\": {}", render_value(value)))
                .collect();
            format!("{{{}}}", members.join(", ")).into_bytes()
        }
        Body::OddKey(pieces) => format!("{{{}: 1}}", literal(pieces)).into_bytes(),
        Body::Bytes(bytes) => bytes.clone(),
    }
}

/// What the contract says about a body: the status, and on success the stored fields.
#[derive(Debug, PartialEq)]
enum Verdict {
    Accepted {
        title: String,
        description: Option<String>,
        is_completed: Option<bool>,
    },
    Refused(u16, Option<String>),
}

/// The contract's body rules, written independently of `shared/src/tasks/model.rs`.
fn expected(raw: &[u8], replace: bool) -> Verdict {
    if raw.len() > BODY_MAX_BYTES {
        return Verdict::Refused(413, None);
    }
    let Ok(Value::Object(members)) = serde_json::from_slice::<Value>(raw) else {
        return Verdict::Refused(400, None);
    };
    let refuse = |field: &str| Verdict::Refused(400, Some(field.to_owned()));
    let (mut title, mut description, mut is_completed) = (None, None, None);
    for (name, value) in members {
        match (name.as_str(), value) {
            ("title", Value::String(text)) => {
                let trimmed = text.trim();
                let count = trimmed.chars().count();
                if count == 0 || count > TITLE_MAX || trimmed.contains('\0') {
                    return refuse("title");
                }
                title = Some(trimmed.to_owned());
            }
            ("description", Value::Null) => description = None,
            ("description", Value::String(text))
                if text.chars().count() <= DESCRIPTION_MAX && !text.contains('\0') =>
            {
                description = Some(text);
            }
            ("is_completed", Value::Bool(done)) if replace => is_completed = Some(done),
            (other, _) => return refuse(other),
        }
    }
    match title {
        Some(title) => Verdict::Accepted {
            title,
            description,
            is_completed,
        },
        None => refuse("title"),
    }
}

/// The status and error of a refusal match the verdict; the body is the contract's error shape.
fn check_refusal(
    response: &common::TestResponse,
    status: u16,
    field: Option<&str>,
) -> Result<(), TestCaseError> {
    let text = String::from_utf8_lossy(&response.body);
    prop_assert_eq!(response.status.as_u16(), status, "{}", text);
    let json: Value = serde_json::from_slice(&response.body)
        .map_err(|e| TestCaseError::fail(format!("error body is not JSON: {e}: {text}")))?;
    if status == 400 {
        prop_assert_eq!(&json["error"]["code"], "VALIDATION_ERROR");
        if let Some(field) = field {
            prop_assert_eq!(&json["error"]["details"]["field"], field, "{}", text);
        }
    }
    Ok(())
}

#[test]
fn generated_post_bodies_are_answered_by_the_contract_and_refusals_write_nothing() {
    run_property(body(), async |app, db, body| {
        let (user, token) = app.new_user();
        let raw = render_body(&body);
        let verdict = expected(&raw, false);
        let response = app.post_raw(&token, raw).await;
        prop_assert!(response.status.as_u16() < 500, "{:?}", response.body);
        match verdict {
            Verdict::Accepted {
                title, description, ..
            } => {
                prop_assert_eq!(response.status, StatusCode::CREATED, "{:?}", response.body);
                let task = &response.json()["data"];
                prop_assert_eq!(&task["title"], &json!(title));
                prop_assert_eq!(&task["description"], &json!(description));
                let row = db
                    .query_one(
                        "SELECT title, description FROM tasks WHERE user_id = $1",
                        &[&user],
                    )
                    .await
                    .expect("stored task");
                prop_assert_eq!(row.get::<_, String>(0), title);
                prop_assert_eq!(row.get::<_, Option<String>>(1), description);
            }
            Verdict::Refused(status, field) => {
                check_refusal(&response, status, field.as_deref())?;
                prop_assert_eq!(
                    stored_rows(db, &user).await,
                    (0, 0, 0),
                    "a refusal wrote rows"
                );
            }
        }
        Ok(())
    });
}

#[test]
fn generated_put_bodies_are_answered_by_the_contract_and_refusals_change_nothing() {
    run_property(body(), async |app, db, body| {
        let (user, token) = app.new_user();
        let before = app.create_task(&token, "original").await;
        let id = before["id"].as_str().expect("id").to_owned();
        let raw = render_body(&body);
        let verdict = expected(&raw, true);
        let path = format!("/api/tasks/{id}");
        let response = app
            .send_raw(Method::PUT, &path, &[bearer(&token), json_type()], raw)
            .await;
        prop_assert!(response.status.as_u16() < 500, "{:?}", response.body);
        let after = app
            .send(Method::GET, &path, Some(&token), None)
            .await
            .json()["data"]
            .clone();
        match verdict {
            Verdict::Accepted {
                title,
                description,
                is_completed,
            } => {
                prop_assert_eq!(response.status, StatusCode::OK, "{:?}", response.body);
                prop_assert_eq!(&after["title"], &json!(title));
                prop_assert_eq!(&after["description"], &json!(description));
                prop_assert_eq!(
                    &after["is_completed"],
                    &json!(is_completed.unwrap_or(false))
                );
            }
            Verdict::Refused(status, field) => {
                check_refusal(&response, status, field.as_deref())?;
                prop_assert_eq!(&after, &before, "a refused PUT changed the task");
                prop_assert_eq!(stored_rows(db, &user).await, (1, 1, 1));
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// Query strings.

#[derive(Debug, Clone)]
enum CursorInput {
    /// `base64url("<micros>:<uuid text>")`, the server's own format with any numbers in it.
    Encoded(String, String),
    /// Anything else, sent as is (percent-encoded).
    Raw(String),
}

#[derive(Debug, Clone)]
struct ListInput {
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<CursorInput>,
    /// An unknown parameter (ignored by the contract).
    extra: Option<(String, String)>,
}

fn hostile_string() -> impl Strategy<Value = String> {
    prop::collection::vec(hostile_char(), 0..12).prop_map(|chars| chars.into_iter().collect())
}

fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "0",
            "1",
            "2",
            "499",
            "500",
            "501",
            "-1",
            "+5",
            "007",
            " 5",
            "5 ",
            "1.0",
            "1e2",
            "0x10",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "18446744073709551616",
            "99999999999999999999999999999999",
            "NaN",
            "Infinity",
            "",
        ])
        .prop_map(str::to_owned),
        any::<i64>().prop_map(|n| n.to_string()),
        (-1000i64..1000).prop_map(|n| n.to_string()),
    ]
}

/// The earliest instant the `time` crate represents without its large-dates feature (-9999-01-01):
/// between it and PostgreSQL's minimum a cursor decodes in Rust but not in the database.
const TIME_MIN_MICROS: i128 = -377_705_116_800_000_000;

fn micros_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            PG_MIN_MICROS,
            PG_MIN_MICROS - 1,
            LAST_MICROS_9999,
            LAST_MICROS_9999 + 1,
            0,
            -1,
            i64::MIN as i128,
            i64::MAX as i128,
            i128::MIN,
            i128::MAX,
            TIME_MIN_MICROS,
            // 294277-01-01: PostgreSQL's upper end.
            9_224_318_016_000_000_000,
        ])
        .prop_map(|n| n.to_string()),
        2 => (PG_MIN_MICROS..=LAST_MICROS_9999).prop_map(|n| n.to_string()),
        2 => (TIME_MIN_MICROS..PG_MIN_MICROS).prop_map(|n| n.to_string()),
        1 => number_text(),
    ]
}

fn uuid_text() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string()),
        1 => any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).simple().to_string()),
        1 => Just("00000000-0000-0000-0000-00000000000g".to_owned()),
        1 => hostile_string(),
    ]
}

fn valid_status() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["all", "pending", "completed"]).prop_map(str::to_owned)
}

fn list_input() -> impl Strategy<Value = ListInput> {
    let status = prop_oneof![
        3 => prop::sample::select(vec!["all", "pending", "completed", "ALL", "done", ""])
            .prop_map(str::to_owned),
        1 => hostile_string(),
    ];
    let limit = prop_oneof![3 => number_text(), 1 => hostile_string()];
    let cursor = prop_oneof![
        3 => (micros_text(), uuid_text()).prop_map(|(m, u)| CursorInput::Encoded(m, u)),
        1 => hostile_string().prop_map(CursorInput::Raw),
    ];
    // Each parameter is valid more often than not, so a later one is reached and checked.
    (
        prop::option::of(prop_oneof![2 => valid_status(), 1 => status]),
        prop::option::of(prop_oneof![2 => (1i64..=500).prop_map(|n| n.to_string()), 1 => limit]),
        prop::option::weighted(0.8, cursor),
        prop::option::of((hostile_string(), hostile_string())),
    )
        .prop_map(|(status, limit, cursor, extra)| ListInput {
            status,
            limit,
            cursor,
            extra,
        })
}

fn cursor_text(cursor: &CursorInput) -> String {
    match cursor {
        CursorInput::Encoded(micros, id) => URL_SAFE_NO_PAD.encode(format!("{micros}:{id}")),
        CursorInput::Raw(raw) => raw.clone(),
    }
}

/// The field a list query is refused for, `None` when it is valid (contract rules).
fn refused_list_field(input: &ListInput) -> Option<&'static str> {
    if let Some(status) = &input.status
        && !["all", "pending", "completed"].contains(&status.as_str())
    {
        return Some("status");
    }
    if let Some(limit) = &input.limit
        && !limit
            .parse::<i64>()
            .is_ok_and(|n| (1..=LIMIT_MAX).contains(&i128::from(n)))
    {
        return Some("limit");
    }
    match &input.cursor {
        Some(CursorInput::Encoded(micros, id)) => {
            let in_range = micros
                .parse::<i128>()
                .is_ok_and(|m| (PG_MIN_MICROS..=LAST_MICROS_9999).contains(&m));
            (!in_range || uuid::Uuid::parse_str(id).is_err()).then_some("cursor")
        }
        Some(CursorInput::Raw(raw)) => {
            // A raw value is valid only if it happens to decode to a cursor.
            let decoded = URL_SAFE_NO_PAD
                .decode(raw)
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            let valid = decoded
                .as_deref()
                .and_then(|t| t.split_once(':'))
                .is_some_and(|(m, id)| {
                    m.parse::<i128>()
                        .is_ok_and(|m| (PG_MIN_MICROS..=LAST_MICROS_9999).contains(&m))
                        && uuid::Uuid::parse_str(id).is_ok()
                });
            (!valid).then_some("cursor")
        }
        None => None,
    }
}

fn query_string(input: &ListInput) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    // Parameters in an order that puts an invalid one first when there are several, like the
    // server's own order (status, limit, cursor) - the oracle reports that one.
    if let Some(status) = &input.status {
        query.append_pair("status", status);
    }
    if let Some(limit) = &input.limit {
        query.append_pair("limit", limit);
    }
    if let Some(cursor) = &input.cursor {
        query.append_pair("cursor", &cursor_text(cursor));
    }
    if let Some((key, value)) = &input.extra
        && !["status", "limit", "cursor"].contains(&key.as_str())
    {
        query.append_pair(key, value);
    }
    query.finish()
}

#[test]
fn generated_list_queries_are_200_or_400_naming_the_parameter() {
    run_property(list_input(), async |app, db, input| {
        let (user, token) = app.new_user();
        let path = format!("/api/tasks?{}", query_string(&input));
        let response = app.send(Method::GET, &path, Some(&token), None).await;
        prop_assert!(response.status.as_u16() < 500, "{:?}", response.body);
        match refused_list_field(&input) {
            None => {
                prop_assert_eq!(response.status, StatusCode::OK, "{:?}", response.body);
                prop_assert_eq!(response.json()["count"].as_u64(), Some(0));
            }
            Some(field) => check_refusal(&response, 400, Some(field))?,
        }
        prop_assert_eq!(stored_rows(db, &user).await, (0, 0, 0), "a read wrote rows");
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// Paths (task ids).

#[derive(Debug, Clone)]
enum TaskIdInput {
    /// A well-formed id in random case (no such task for this user).
    Uuid(u128, bool),
    /// Another user's real task.
    Foreign,
    /// Anything else, percent-encoded into the path segment.
    Text(String),
}

fn task_id_input() -> impl Strategy<Value = TaskIdInput> {
    prop_oneof![
        2 => (any::<u128>(), any::<bool>()).prop_map(|(n, upper)| TaskIdInput::Uuid(n, upper)),
        1 => Just(TaskIdInput::Foreign),
        4 => prop_oneof![
            hostile_string(),
            prop::sample::select(vec![
                "0193f0c25d8e7c1a9b2e3f4a5b6c7d8e",
                "{0193f0c2-5d8e-7c1a-9b2e-3f4a5b6c7d8e}",
                "0193f0c2-5d8e-7c1a-9b2e-3f4a5b6c7d8e0",
                "0193f0c2-5d8e-7c1a-9b2e-3f4a5b6c7d8\u{0}",
                "0193f0c2-5d8e-7c1a-9b2e-3f4a5b6c7d8é",
                "%00", "..", ".", "%2F", "-1", "99999999999999999999999999999999999999999",
            ])
            .prop_map(str::to_owned),
            prop::collection::vec(any::<char>(), 36).prop_map(|c| c.into_iter().collect()),
        ]
        .prop_map(TaskIdInput::Text),
    ]
}

/// Percent-encodes everything but unreserved characters, so any text makes a valid path.
fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn generated_task_ids_are_404_on_every_route_and_write_nothing() {
    run_property(
        (task_id_input(), 0usize..4),
        async |app, db, (id, route)| {
            let (owner, owner_token) = app.new_user();
            let foreign = app.create_task(&owner_token, "not yours").await;
            let (user, token) = app.new_user();
            let segment = match &id {
                TaskIdInput::Uuid(n, upper) => {
                    let text = uuid::Uuid::from_u128(*n).to_string();
                    if *upper { text.to_uppercase() } else { text }
                }
                TaskIdInput::Foreign => foreign["id"].as_str().expect("id").to_owned(),
                TaskIdInput::Text(text) => path_segment(text),
            };
            let base = format!("/api/tasks/{segment}");
            let body = json!({"title": "hijack"});
            let response = match route {
                0 => app.send(Method::GET, &base, Some(&token), None).await,
                1 => {
                    app.send(Method::PUT, &base, Some(&token), Some(&body))
                        .await
                }
                2 => app.send(Method::DELETE, &base, Some(&token), None).await,
                _ => {
                    let toggle = format!("{base}/toggle");
                    app.send(Method::PATCH, &toggle, Some(&token), None).await
                }
            };
            prop_assert_eq!(
                response.status,
                StatusCode::NOT_FOUND,
                "{} {:?}",
                base,
                response.body
            );
            prop_assert_eq!(stored_rows(db, &user).await, (0, 0, 0), "a 404 wrote rows");
            let path = format!("/api/tasks/{}", foreign["id"].as_str().expect("id"));
            let still = app.send(Method::GET, &path, Some(&owner_token), None).await;
            prop_assert_eq!(
                &still.json()["data"],
                &foreign,
                "another user's task changed"
            );
            prop_assert_eq!(stored_rows(db, &owner).await, (1, 1, 1));
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Token claims.

#[derive(Debug, Clone)]
struct ClaimsInput {
    /// Appended to a unique prefix, so the test can find any row the request wrote.
    sub_tail: Vec<Piece>,
    email: Option<FieldValue>,
}

fn claims_input() -> impl Strategy<Value = ClaimsInput> {
    (text(), prop::option::of(field_value()))
        .prop_map(|(sub_tail, email)| ClaimsInput { sub_tail, email })
}

#[test]
fn generated_sub_and_email_claims_are_201_or_401_and_refusals_write_nothing() {
    run_property(claims_input(), async |app, db, claims| {
        // Hex only, so it is a plain LIKE prefix.
        let prefix = format!("h{}", uuid::Uuid::now_v7().simple());
        let sub_literal = format!("\"{prefix}{}", &literal(&claims.sub_tail)[1..]);
        let mut payload = format!("{{\"sub\": {sub_literal}, \"exp\": {}", now() + 600);
        if let Some(email) = &claims.email {
            payload.push_str(&format!(", \"email\": {}", render_value(email)));
        }
        payload.push('}');
        let token = sign_raw_hs256(&app.secret, &payload);

        // The contract's verdict: the payload must be JSON, `sub` storable, the token ≤ 8 KiB.
        let parsed: Option<Value> = serde_json::from_str(&payload).ok();
        let sub = parsed
            .as_ref()
            .and_then(|p| p["sub"].as_str().map(str::to_owned));
        let accepted = token.len() <= TOKEN_MAX_BYTES
            && sub
                .as_ref()
                .is_some_and(|s| !s.contains('\0') && s.chars().count() <= SUB_MAX);
        let email = parsed
            .as_ref()
            .and_then(|p| p["email"].as_str().map(str::to_owned))
            .filter(|e| !e.contains('\0') && e.chars().count() <= EMAIL_MAX);

        let body = json!({"title": "from a hostile token"});
        let created = app
            .send(Method::POST, "/api/tasks", Some(&token), Some(&body))
            .await;
        let listed = app
            .send(Method::GET, "/api/tasks", Some(&token), None)
            .await;
        let like = format!("{prefix}%");
        let row = db
            .query_one(
                "SELECT (SELECT count(*) FROM users WHERE id LIKE $1),
                        (SELECT count(*) FROM tasks WHERE user_id LIKE $1),
                        (SELECT min(email) FROM users WHERE id LIKE $1)",
                &[&like],
            )
            .await
            .expect("rows by prefix");
        let (users, tasks, stored_email): (i64, i64, Option<String>) =
            (row.get(0), row.get(1), row.get(2));
        if accepted {
            prop_assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
            prop_assert_eq!(&created.json()["data"]["user_id"], &json!(sub));
            prop_assert_eq!(listed.status, StatusCode::OK);
            prop_assert_eq!(listed.json()["count"].as_u64(), Some(1));
            prop_assert_eq!((users, tasks), (1, 1));
            prop_assert_eq!(stored_email, email);
        } else {
            for response in [&created, &listed] {
                check_refusal(response, 401, None)?;
                prop_assert!(
                    response
                        .header(header::WWW_AUTHENTICATE)
                        .is_some_and(|c| c.starts_with("Bearer")),
                    "401 without a Bearer challenge"
                );
            }
            prop_assert_eq!((users, tasks), (0, 0), "a refused token wrote rows");
        }
        Ok(())
    });
}

/// What else a token can carry: a malformed header, huge or odd `exp`/`nbf`, a non-string `sub`.
#[derive(Debug, Clone)]
enum BadToken {
    /// `Authorization: <bytes>` (visible ASCII, tab and obs-text: what a header can carry).
    Header(Vec<u8>),
    /// A signed token whose claims are `{"sub": <user>, <member>}`.
    Claims(&'static str),
    /// A signed token whose `sub` is this raw JSON value.
    Sub(&'static str),
}

fn bad_token() -> impl Strategy<Value = BadToken> {
    let header_byte = prop_oneof![
        8 => 0x20u8..0x7f,
        1 => Just(b'\t'),
        1 => 0x80u8..=0xff,
    ];
    let header = prop_oneof![
        prop::collection::vec(header_byte.clone(), 0..64),
        (prop::collection::vec(header_byte, 0..64), 0usize..9000).prop_map(|(mut tail, pad)| {
            let mut value = b"Bearer ".to_vec();
            value.extend(std::iter::repeat_n(b'A', pad));
            value.append(&mut tail);
            value
        }),
    ];
    prop_oneof![
        2 => header.prop_map(BadToken::Header),
        1 => prop::sample::select(vec![
            r#""exp": 1e400"#,
            r#""exp": 18446744073709551616"#,
            r#""exp": -1"#,
            r#""exp": null"#,
            r#""exp": "9999999999""#,
            r#""exp": 9999999999, "nbf": 1e400"#,
            r#""exp": 9999999999, "nbf": 99999999999999999999"#,
            r#""exp": 9999999999, "nbf": 9999999999"#,
            r#""exp": 9223372036854775807, "nbf": 9223372036854775807"#,
        ])
        .prop_map(BadToken::Claims),
        1 => prop::sample::select(vec![
            "null", "1", "1e400", "18446744073709551616", "true", "[]", "{}", "\"\"", "\" \"",
            "\"\\u0000\"",
        ])
        .prop_map(BadToken::Sub),
    ]
}

#[test]
fn generated_bad_tokens_are_401_and_write_nothing() {
    run_property(bad_token(), async |app, db, bad| {
        let user = common::new_user_id();
        let authorization = match &bad {
            BadToken::Header(bytes) => bytes.clone(),
            BadToken::Claims(member) => {
                let payload = format!("{{\"sub\": \"{user}\", {member}}}");
                format!("Bearer {}", sign_raw_hs256(&app.secret, &payload)).into_bytes()
            }
            BadToken::Sub(sub) => {
                let payload = format!("{{\"sub\": {sub}, \"exp\": {}}}", now() + 600);
                format!("Bearer {}", sign_raw_hs256(&app.secret, &payload)).into_bytes()
            }
        };
        let Ok(value) = http::HeaderValue::from_bytes(&authorization) else {
            return Ok(()); // not sendable as a header at all
        };
        let headers = [(header::AUTHORIZATION, value), json_type()];
        let body = br#"{"title": "t"}"#.to_vec();
        let response = app
            .send_raw(Method::POST, "/api/tasks", &headers, body)
            .await;
        check_refusal(&response, 401, None)?;
        prop_assert_eq!(
            stored_rows(db, &user).await,
            (0, 0, 0),
            "a refused token wrote rows"
        );
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// The issue's table, as plain examples.

fn options(email: Option<&str>) -> TokenOptions<'_> {
    TokenOptions {
        email,
        ttl_seconds: 600,
        ..TokenOptions::default()
    }
}

async fn assert_nothing_stored(user: &str) {
    assert_eq!(stored_rows(&inspect().await, user).await, (0, 0, 0));
}

#[tokio::test]
async fn nul_in_title_or_description_is_400_naming_the_field_on_post_and_put() {
    let app = spawn_app().await;
    for (body, field) in [
        (r#"{"title": "a\u0000b"}"#, "title"),
        (r#"{"title": "\u0000"}"#, "title"),
        (
            r#"{"title": "t", "description": "a\u0000b"}"#,
            "description",
        ),
    ] {
        let (user, token) = app.new_user();
        let response = app.post_raw(&token, body.into()).await;
        let json = response.assert_error(400, "VALIDATION_ERROR");
        assert_eq!(json["error"]["details"]["field"], field, "{body}");
        assert_nothing_stored(&user).await;

        let (_, token) = app.new_user();
        let task = app.create_task(&token, "before").await;
        let path = format!("/api/tasks/{}", task["id"].as_str().expect("id"));
        let response = app
            .send_raw(
                Method::PUT,
                &path,
                &[bearer(&token), json_type()],
                body.into(),
            )
            .await;
        let json = response.assert_error(400, "VALIDATION_ERROR");
        assert_eq!(json["error"]["details"]["field"], field, "{body}");
        let after = app.send(Method::GET, &path, Some(&token), None).await;
        assert_eq!(after.json()["data"], task);
    }
}

#[tokio::test]
async fn lone_surrogate_escape_in_title_is_400() {
    let app = spawn_app().await;
    let (user, token) = app.new_user();
    let body = r#"{"title": "a\ud800b"}"#;
    let response = app.post_raw(&token, body.into()).await;
    response.assert_error(400, "VALIDATION_ERROR");
    assert_nothing_stored(&user).await;
}

#[tokio::test]
async fn sub_with_nul_is_401_on_every_route() {
    let app = spawn_app().await;
    let token = app.token_with("user\0x", &options(None));
    let id = uuid::Uuid::now_v7();
    for (method, path) in [
        (Method::GET, "/api/tasks".to_owned()),
        (Method::POST, "/api/tasks".to_owned()),
        (Method::GET, format!("/api/tasks/{id}")),
        (Method::PUT, format!("/api/tasks/{id}")),
        (Method::DELETE, format!("/api/tasks/{id}")),
        (Method::PATCH, format!("/api/tasks/{id}/toggle")),
    ] {
        let body = json!({"title": "t"});
        let body = matches!(method, Method::POST | Method::PUT).then_some(&body);
        app.send(method.clone(), &path, Some(&token), body)
            .await
            .assert_error(401, "UNAUTHORIZED");
    }
}

#[tokio::test]
async fn sub_length_is_bounded_at_255_code_points() {
    let app = spawn_app().await;
    let body = json!({"title": "t"});
    let unique = uuid::Uuid::now_v7().simple().to_string();
    // Exactly 255 code points, mostly 4-byte ones: 1,000+ bytes of key, accepted.
    let at_limit = format!("{unique}{}", "😀".repeat(SUB_MAX - unique.len()));
    assert_eq!(at_limit.chars().count(), SUB_MAX);
    let token = app.token_with(&at_limit, &options(None));
    let response = app
        .send(Method::POST, "/api/tasks", Some(&token), Some(&body))
        .await;
    assert_eq!(response.status, StatusCode::CREATED, "{:?}", response.body);
    assert_eq!(response.json()["data"]["user_id"], at_limit.as_str());
    assert_eq!(stored_rows(&inspect().await, &at_limit).await, (1, 1, 1));

    let over = format!("{at_limit}x");
    let token = app.token_with(&over, &options(None));
    app.send(Method::POST, "/api/tasks", Some(&token), Some(&body))
        .await
        .assert_error(401, "UNAUTHORIZED");
    assert_nothing_stored(&over).await;

    // 4,000 random characters: the token is still under 8 KiB, the id could not be indexed.
    let mut state = 0x9e37_79b9_u32;
    let random: String = (0..4000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            char::from(b'!' + (state % 94) as u8)
        })
        .collect();
    let token = app.token_with(&random, &options(None));
    assert!(token.len() <= TOKEN_MAX_BYTES);
    for method in [Method::POST, Method::GET] {
        let body = (method == Method::POST).then_some(&body);
        app.send(method, "/api/tasks", Some(&token), body)
            .await
            .assert_error(401, "UNAUTHORIZED");
    }
    assert_nothing_stored(&random).await;
}

#[tokio::test]
async fn unstorable_email_is_treated_as_absent() {
    let app = spawn_app().await;
    let db = inspect().await;
    let body = json!({"title": "t"});
    let long = format!("{}@example.com", "e".repeat(EMAIL_MAX + 1 - 12));
    assert_eq!(long.chars().count(), EMAIL_MAX + 1);
    let at_limit = &long[1..];
    for (email, stored) in [
        ("a\0b@example.com", None),
        (long.as_str(), None),
        (at_limit, Some(at_limit)),
    ] {
        let user = common::new_user_id();
        let token = app.token_with(&user, &options(Some(email)));
        let response = app
            .send(Method::POST, "/api/tasks", Some(&token), Some(&body))
            .await;
        assert_eq!(response.status, StatusCode::CREATED, "{:?}", response.body);
        let row = db
            .query_one("SELECT email FROM users WHERE id = $1", &[&user])
            .await
            .expect("users row");
        assert_eq!(row.get::<_, Option<&str>>(0), stored);
    }
    // An unusable email never overwrites a stored one (absent means "no news").
    let user = common::new_user_id();
    let good = app.token_with(&user, &options(Some("a@example.com")));
    app.create_task(&good, "first").await;
    let bad = app.token_with(&user, &options(Some("b\0@example.com")));
    let response = app
        .send(Method::POST, "/api/tasks", Some(&bad), Some(&body))
        .await;
    assert_eq!(response.status, StatusCode::CREATED);
    let row = db
        .query_one("SELECT email FROM users WHERE id = $1", &[&user])
        .await
        .expect("users row");
    assert_eq!(row.get::<_, Option<&str>>(0), Some("a@example.com"));
}

/// A lone surrogate makes the claims set invalid JSON (RFC 7519 requires a JSON object), so the
/// whole token is refused, whichever claim carries it.
#[tokio::test]
async fn lone_surrogate_escape_in_a_claim_is_401() {
    let app = spawn_app().await;
    let body = json!({"title": "t"});
    let user = common::new_user_id();
    for payload in [
        format!(r#"{{"sub": "{user}\ud800", "exp": {}}}"#, now() + 600),
        format!(
            r#"{{"sub": "{user}", "email": "\udfff@x", "exp": {}}}"#,
            now() + 600
        ),
    ] {
        let token = sign_raw_hs256(&app.secret, &payload);
        app.send(Method::POST, "/api/tasks", Some(&token), Some(&body))
            .await
            .assert_error(401, "UNAUTHORIZED");
    }
    assert_nothing_stored(&user).await;
}

#[tokio::test]
async fn cursor_timestamps_at_and_past_postgresql_range() {
    let app = spawn_app().await;
    let (_, token) = app.new_user();
    let id = uuid::Uuid::now_v7();
    for (micros, ok) in [
        (PG_MIN_MICROS, true),
        (PG_MIN_MICROS - 1, false),
        (LAST_MICROS_9999, true),
        (LAST_MICROS_9999 + 1, false),
        (i128::from(i64::MAX), false),
        (i128::from(i64::MIN), false),
    ] {
        let cursor = URL_SAFE_NO_PAD.encode(format!("{micros}:{id}"));
        let response = app
            .send(
                Method::GET,
                &format!("/api/tasks?limit=500&cursor={cursor}"),
                Some(&token),
                None,
            )
            .await;
        if ok {
            assert_eq!(response.status, StatusCode::OK, "{micros}");
        } else {
            let json = response.assert_error(400, "VALIDATION_ERROR");
            assert_eq!(json["error"]["details"]["field"], "cursor", "{micros}");
        }
    }
}

// The JWKS family ends in the same claim checks; one token of each kind proves the wiring.
#[tokio::test]
async fn jwks_tokens_get_the_same_claim_rules() {
    use ring::signature::{Ed25519KeyPair, KeyPair};
    let pair = Ed25519KeyPair::from_seed_unchecked(&[13; 32]).expect("Ed25519 key");
    let jwks_doc = json!({"keys": [{
        "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "kid": "hostile",
        "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
    }]});
    let jwks = common::jwks::JwksServer::start(Some(jwks_doc.to_string()))
        .await
        .expect("JWKS stub");
    let app = spawn_app_with(&[("JWKS_URL", &jwks.url())]).await;
    let sign = |claims: &Value| {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","kid":"hostile","typ":"JWT"}"#);
        let message = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
        let signature = URL_SAFE_NO_PAD.encode(pair.sign(message.as_bytes()).as_ref());
        format!("{message}.{signature}")
    };
    let body = json!({"title": "t"});
    let user = common::new_user_id();
    let ok = sign(&json!({"sub": user, "exp": now() + 600, "email": "x\u{0}@example.com"}));
    let response = app
        .send(Method::POST, "/api/tasks", Some(&ok), Some(&body))
        .await;
    assert_eq!(response.status, StatusCode::CREATED, "{:?}", response.body);
    let row = inspect()
        .await
        .query_one("SELECT email FROM users WHERE id = $1", &[&user])
        .await
        .expect("users row");
    assert_eq!(row.get::<_, Option<&str>>(0), None);
    for sub in ["a\0b".to_owned(), "x".repeat(SUB_MAX + 1)] {
        let token = sign(&json!({"sub": sub, "exp": now() + 600}));
        app.send(Method::POST, "/api/tasks", Some(&token), Some(&body))
            .await
            .assert_error(401, "UNAUTHORIZED");
    }
}
