#![forbid(unsafe_code)]
//! Issue 12, "Security evidence": property tests of the request parsers that
//! `tests/hostile_input.rs` does not generate input for. Each property drives the real local
//! server (`spawn_app`) against the real PostgreSQL with generated input and checks:
//!
//! - the answer is the one CONTRACT.md gives for that input (computed here, from the contract's
//!   rules restated as plain code, never by calling the server's parsers), so a wrong 4xx fails
//!   too, not only a 500;
//! - every error is the contract's JSON shape (`error.code`, a message, `details.field` where the
//!   contract names a field or header), a 401 carries the `Bearer` challenge;
//! - a refused request writes nothing (the user's rows, the task, its request keys).
//!
//! Parsers covered: the `Authorization` header, the token's structure (JWS header, claims types,
//! segments, base64, size), JSON bodies (depth, size, duplicate and unknown keys, types, Unicode
//! length rules), `Content-Type`, `Idempotency-Key`, `If-Match`/`If-None-Match`, and the list
//! cursor (a round trip over generated task sets, and arbitrary cursors).
//!
//! Case count per property: `TASKS_PROPTEST_CASES` (default 64; 5000 for the long run). The seed
//! is fixed (ChaCha; `PROPTEST_RNG_SEED` overrides it), so every run is reproducible.

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::jwks::JwksServer;
use common::tokens::{self, now};
use common::{
    TestApp, TestResponse, bearer, inspect, json_type, spawn_app, spawn_app_with, stored_rows,
};
use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};

// The contract's limits (CONTRACT.md), restated: this file is the oracle.
const TITLE_MAX: usize = 500;
const DESCRIPTION_MAX: usize = 5000;
const BODY_MAX_BYTES: usize = 64 * 1024;
const TOKEN_MAX_BYTES: usize = 8192;
const LEEWAY: i64 = 60;
const KEY_MAX: usize = 255;
/// PostgreSQL's earliest `timestamptz` and the last microsecond of year 9999, as Unix µs: the
/// range a cursor position can name (see `tests/hostile_input.rs`).
const PG_MIN_MICROS: i128 = -210_866_803_200_000_000;
const LAST_MICROS_9999: i128 = 253_402_300_799_999_999;

const DEFAULT_CASES: u32 = 64;
const DEFAULT_SEED: u64 = 0x7a5c_0012;

/// The Better Auth-like JWKS family of the token property: our own Ed25519 key.
const KID: &str = "parsers-key";
const ISSUER: &str = "https://auth.parsers.example";
const AUDIENCE: &str = "parsers-api";

/// One server (and what a property needs around it) for all cases of a property.
struct Ctx {
    app: TestApp,
    db: tokio_postgres::Client,
    /// The JWKS family's signing key (only with [`Setup::Jwks`]).
    key: Option<Ed25519KeyPair>,
    _jwks: Option<JwksServer>,
}

#[derive(Clone, Copy)]
enum Setup {
    /// HS256 only, no issuer or audience.
    Plain,
    /// HS256 and a JWKS with one Ed25519 key, `JWT_ISSUER` and `JWT_AUDIENCE` set.
    Jwks,
}

fn signing_key() -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(&[12; 32]).expect("Ed25519 key")
}

async fn context(setup: Setup) -> Ctx {
    let db = inspect().await;
    match setup {
        Setup::Plain => Ctx {
            app: spawn_app().await,
            db,
            key: None,
            _jwks: None,
        },
        Setup::Jwks => {
            let key = signing_key();
            let document = json!({"keys": [{
                "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "kid": KID,
                "x": URL_SAFE_NO_PAD.encode(key.public_key().as_ref()),
            }]});
            let jwks = JwksServer::start(Some(document.to_string()))
                .await
                .expect("JWKS stub");
            let app = spawn_app_with(&[
                ("JWKS_URL", &jwks.url()),
                ("JWT_ISSUER", ISSUER),
                ("JWT_AUDIENCE", AUDIENCE),
            ])
            .await;
            Ctx {
                app,
                db,
                key: Some(key),
                _jwks: Some(jwks),
            }
        }
    }
}

/// Runs `property` on generated values against one server set up as `setup` says.
fn run_property<S, F>(setup: Setup, strategy: S, property: F)
where
    S: Strategy,
    S::Value: std::fmt::Debug,
    F: AsyncFn(&Ctx, S::Value) -> Result<(), TestCaseError>,
{
    common::property::run(
        (DEFAULT_CASES, DEFAULT_SEED),
        context(setup),
        strategy,
        property,
    );
}

// ---------------------------------------------------------------------------------------------
// Shared helpers.

/// The contract's error shape: status, JSON content type, `error.code`, a message,
/// `details.field` when `field` is given, the `Bearer` challenge on a 401.
fn expect_error(
    response: &TestResponse,
    status: u16,
    code: &str,
    field: Option<&str>,
) -> Result<Value, TestCaseError> {
    let text = String::from_utf8_lossy(&response.body);
    prop_assert_eq!(response.status.as_u16(), status, "body: {}", text);
    prop_assert_eq!(
        response.header(header::CONTENT_TYPE),
        Some("application/json"),
        "{}",
        text
    );
    let body: Value = serde_json::from_slice(&response.body)
        .map_err(|e| TestCaseError::fail(format!("error body is not JSON ({e}): {text}")))?;
    prop_assert_eq!(&body["error"]["code"], code, "{}", text);
    prop_assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "no message: {}",
        text
    );
    if let Some(field) = field {
        prop_assert_eq!(&body["error"]["details"]["field"], field, "{}", text);
    }
    if status == 401 {
        prop_assert!(
            response
                .header(header::WWW_AUTHENTICATE)
                .is_some_and(|c| c.starts_with("Bearer")),
            "401 without a Bearer challenge"
        );
    }
    Ok(body)
}

/// A task's stored state, to prove a refusal changed nothing.
async fn task_row(
    db: &tokio_postgres::Client,
    id: &str,
) -> Option<(String, Option<String>, bool, String)> {
    db.query_opt(
        "SELECT title, description, is_completed, updated_at::text FROM tasks WHERE id::text = $1",
        &[&id],
    )
    .await
    .expect("task row")
    .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
}

/// What the contract says about an input where it leaves room for either answer (an
/// implementation limit, or a form it neither allows nor forbids), or pins one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Accept,
    Refuse,
    /// Both are within the contract; the answer must still be one of the two.
    Either,
}

impl Verdict {
    /// Both must hold: a refusal anywhere wins, then a doubt.
    fn and(self, other: Verdict) -> Verdict {
        match (self, other) {
            (Verdict::Refuse, _) | (_, Verdict::Refuse) => Verdict::Refuse,
            (Verdict::Either, _) | (_, Verdict::Either) => Verdict::Either,
            _ => Verdict::Accept,
        }
    }
}

/// HTTP strips optional whitespace around a field value (RFC 9110 §5.5): what the server sees.
fn ows_trimmed(bytes: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// Generated bytes, shown as an escaped byte string in a failing case (not a list of numbers).
#[derive(Clone, PartialEq, Eq)]
struct Raw(Vec<u8>);

impl std::fmt::Debug for Raw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

/// Bytes a header value can carry (no CR, LF, NUL or other controls but tab, no DEL).
fn header_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        6 => 0x21u8..0x7f,
        1 => Just(b' '),
        1 => Just(b'\t'),
        2 => 0x80u8..=0xff,
    ]
}

// ---------------------------------------------------------------------------------------------
// 1. The `Authorization` header.

#[derive(Debug, Clone)]
enum Credential {
    /// This case's valid token.
    Valid,
    /// The valid token with one byte inserted at a position (never at either end: OWS there
    /// would be stripped).
    Inserted(usize, u8),
    /// The valid token with its last `n` bytes cut.
    Truncated(usize),
    /// The valid token behind a second scheme word (`Bearer Bearer <token>`).
    DoubleScheme,
    /// Arbitrary bytes.
    Bytes(Raw),
    /// `n` base64url characters: huge values.
    Huge(usize),
    Empty,
}

#[derive(Debug, Clone)]
struct AuthLine {
    lead: &'static str,
    scheme: Raw,
    separator: &'static str,
    credential: Credential,
    trail: &'static str,
}

#[derive(Debug, Clone)]
struct AuthInput {
    lines: Vec<AuthLine>,
    post: bool,
}

const GOOD_SCHEMES: &[&[u8]] = &[b"Bearer", b"bearer", b"BEARER", b"bEaReR"];

fn auth_line() -> impl Strategy<Value = AuthLine> {
    let scheme = prop_oneof![
        4 => prop::sample::select(GOOD_SCHEMES.to_vec()),
        1 => prop::sample::select(vec![
            b"Basic".as_slice(), b"Token", b"JWT", b"Bearer:", b"Bearerr", b"Bear", b"",
            b"Bearer\xc3\xa9", b"B\xe9arer", b"\"Bearer\"", b"Bearer,", b"DPoP", b"Bearer=",
        ]),
    ];
    let separator = prop_oneof![
        4 => Just(" "),
        1 => prop::sample::select(vec!["  ", "", "\t", "\t ", ":", "=", ",", " \t"]),
    ];
    let ows = prop::sample::select(vec!["", "", "", " ", "\t", "  \t"]);
    let credential = prop_oneof![
        4 => Just(Credential::Valid),
        1 => (any::<prop::sample::Index>(), prop::sample::select(vec![
            b'.', b'=', b'+', b'/', b' ', b'"', b',', b'\t', 0xe9, b'%', b'A',
        ]))
            .prop_map(|(i, b)| Credential::Inserted(i.index(1 << 16), b)),
        1 => (1usize..8).prop_map(Credential::Truncated),
        1 => Just(Credential::DoubleScheme),
        1 => prop::collection::vec(header_byte(), 0..80).prop_map(|b| Credential::Bytes(Raw(b))),
        1 => prop::sample::select(vec![8191usize, 8192, 8193, 20_000])
            .prop_map(Credential::Huge),
        1 => Just(Credential::Empty),
    ];
    (ows.clone(), scheme, separator, credential, ows).prop_map(
        |(lead, scheme, separator, credential, trail)| AuthLine {
            lead,
            scheme: Raw(scheme.to_vec()),
            separator,
            credential,
            trail,
        },
    )
}

fn auth_input() -> impl Strategy<Value = AuthInput> {
    let lines = prop_oneof![
        8 => auth_line().prop_map(|l| vec![l]),
        1 => Just(vec![]),
        2 => prop::collection::vec(auth_line(), 2..4),
    ];
    (lines, any::<bool>()).prop_map(|(lines, post)| AuthInput { lines, post })
}

fn render_auth_line(line: &AuthLine, token: &str) -> Vec<u8> {
    let mut out = line.lead.as_bytes().to_vec();
    out.extend_from_slice(&line.scheme.0);
    out.extend_from_slice(line.separator.as_bytes());
    let token = token.as_bytes();
    match &line.credential {
        Credential::Valid => out.extend_from_slice(token),
        Credential::Inserted(at, byte) => {
            let at = 1 + at % (token.len() - 1);
            out.extend_from_slice(&token[..at]);
            out.push(*byte);
            out.extend_from_slice(&token[at..]);
        }
        Credential::Truncated(n) => out.extend_from_slice(&token[..token.len() - n]),
        Credential::DoubleScheme => {
            out.extend_from_slice(b"Bearer ");
            out.extend_from_slice(token);
        }
        Credential::Bytes(bytes) => out.extend_from_slice(&bytes.0),
        Credential::Huge(n) => out.extend(std::iter::repeat_n(b'A', *n)),
        Credential::Empty => {}
    }
    out.extend_from_slice(line.trail.as_bytes());
    out
}

/// The contract: `Authorization: Bearer <token>`, the scheme case-insensitive, one or more spaces
/// before the credential (RFC 6750 §2.1), one such field (RFC 9110 §5.3: not a list). Read from
/// the rendered field as the server receives it (HTTP strips the whitespace around a value).
fn auth_verdict(lines: &[Vec<u8>], token: &str) -> Verdict {
    let [line] = lines else {
        return Verdict::Refuse; // missing, or several fields: ambiguous
    };
    let value = ows_trimmed(line);
    let Some((scheme, rest)) = value.split_at_checked(6) else {
        return Verdict::Refuse;
    };
    let spaces = rest.iter().take_while(|b| **b == b' ').count();
    if !scheme.eq_ignore_ascii_case(b"bearer") || spaces == 0 {
        return Verdict::Refuse;
    }
    let credential = &rest[spaces..];
    if credential == token.as_bytes() {
        Verdict::Accept
    } else if credential.starts_with(b"\t") && ows_trimmed(credential) == token.as_bytes() {
        // A tab after the spaces: not RFC 6750's `1*SP`, tolerable either way.
        Verdict::Either
    } else {
        Verdict::Refuse
    }
}

#[test]
fn generated_authorization_headers_are_401_with_a_challenge_unless_well_formed() {
    run_property(Setup::Plain, auth_input(), async |ctx, input| {
        let (user, token) = ctx.app.new_user();
        let rendered: Vec<Vec<u8>> = input
            .lines
            .iter()
            .map(|line| render_auth_line(line, &token))
            .collect();
        let mut headers = Vec::new();
        for bytes in &rendered {
            let value = HeaderValue::from_bytes(bytes).expect("generated bytes are a field value");
            headers.push((header::AUTHORIZATION, value));
        }
        let verdict = auth_verdict(&rendered, &token);
        let response = if input.post {
            headers.push(json_type());
            ctx.app
                .send_raw(
                    Method::POST,
                    "/api/tasks",
                    &headers,
                    br#"{"title":"t"}"#.to_vec(),
                )
                .await
        } else {
            ctx.app
                .send_raw(Method::GET, "/api/tasks", &headers, Vec::new())
                .await
        };
        let accepted = response.status.is_success();
        match verdict {
            Verdict::Accept => prop_assert!(accepted, "{:?}", response.body),
            Verdict::Refuse => {
                expect_error(&response, 401, "UNAUTHORIZED", None)?;
            }
            Verdict::Either => {
                if !accepted {
                    expect_error(&response, 401, "UNAUTHORIZED", None)?;
                }
            }
        }
        let written = i64::from(accepted && input.post);
        prop_assert_eq!(
            stored_rows(&ctx.db, &user).await,
            (written, written, written),
            "rows after {}",
            response.status
        );
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// 2. Token structure: the JWS header, claim types, segments, base64, size.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alg {
    Hs256,
    Hs384,
    Hs512,
    EdDsa,
    /// A name no key verifies (`none`, ES256 without such a key, garbage, wrong JSON types).
    Other(&'static str),
}

impl Alg {
    fn json(self) -> &'static str {
        match self {
            Alg::Hs256 => "\"HS256\"",
            Alg::Hs384 => "\"HS384\"",
            Alg::Hs512 => "\"HS512\"",
            Alg::EdDsa => "\"EdDSA\"",
            Alg::Other(raw) => raw,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Signer {
    /// The key the `alg` names: the secret for HS*, our Ed25519 key for EdDSA, random bytes else.
    Natural,
    /// The other family's key.
    Crossed,
    Empty,
}

/// A member's raw JSON value and what the contract says about it.
type Member = (&'static str, Option<&'static str>, Verdict);

#[derive(Debug, Clone)]
struct JwsHeader {
    alg: Alg,
    /// `(raw JSON, verdict)`; `None` leaves the member out.
    kid: Option<(String, Verdict)>,
    typ: Option<(&'static str, Verdict)>,
    crit: Option<(&'static str, Verdict)>,
    extra: Option<(&'static str, &'static str, Verdict)>,
    /// A second `alg` member after the first.
    second_alg: Option<&'static str>,
}

/// Claims, rendered at send time (their times are relative to now).
#[derive(Debug, Clone, Copy)]
enum Exp {
    In600,
    In600Float,
    AgoWithinLeeway,
    AgoBeyondLeeway,
    AsString,
    Null,
    True,
    Negative,
    Array,
    Absent,
    U64Max,
    Huge,
}

#[derive(Debug, Clone, Copy)]
enum Nbf {
    Absent,
    Null,
    Past,
    SoonWithinLeeway,
    Future,
    FutureFloat,
    PastFloat,
    AsString,
    Negative,
}

#[derive(Debug, Clone)]
struct TokenInput {
    header: JwsHeader,
    signer: Signer,
    exp: Exp,
    nbf: Nbf,
    sub: Member,
    iat: Member,
    iss: Member,
    aud: Member,
    /// An extra claim nested this deep.
    deep: Option<usize>,
    shape: Shape,
    /// Pad the claims so the credential is about this long.
    size: Option<usize>,
}

#[derive(Debug, Clone, Copy)]
enum Shape {
    Canonical,
    /// `=` padding appended to segment `0..3`.
    Padded(usize, usize),
    /// `+`/`/` for `-`/`_` (RFC 4648 §4 instead of §5).
    StandardAlphabet,
    ExtraSegment,
    TrailingDot,
    TwoSegments,
    OneSegment,
    EmptyHeader,
    /// A space inside the signature.
    InnerSpace,
}

fn jws_header() -> impl Strategy<Value = JwsHeader> {
    let alg = prop_oneof![
        4 => Just(Alg::Hs256),
        4 => Just(Alg::EdDsa),
        1 => Just(Alg::Hs384),
        1 => Just(Alg::Hs512),
        3 => prop::sample::select(vec![
            "\"none\"", "\"None\"", "\"NONE\"", "\"hs256\"", "\"ES256\"", "\"RS256\"",
            "\"PS256\"", "\"ES512\"", "\"\"", "1", "null", "[\"HS256\"]", "{\"alg\":\"HS256\"}",
            "\"HS256 \"",
        ])
        .prop_map(Alg::Other),
    ];
    let kid = prop_oneof![
        3 => Just(Some((format!("\"{KID}\""), Verdict::Accept))),
        1 => Just(None),
        1 => (0u32..1000).prop_map(|n| Some((format!("\"unknown-{n}\""), Verdict::Accept))),
        1 => prop::sample::select(vec!["1", "[]", "{}", "true"])
            .prop_map(|raw| Some((raw.to_owned(), Verdict::Refuse))),
        1 => Just(Some(("null".to_owned(), Verdict::Accept))),
        1 => Just(Some(("\"\"".to_owned(), Verdict::Accept))),
    ];
    let typ = prop::option::weighted(
        0.4,
        prop::sample::select(vec![
            ("\"JWT\"", Verdict::Accept),
            ("\"at+jwt\"", Verdict::Accept),
            ("1", Verdict::Refuse),
            ("null", Verdict::Accept),
        ]),
    );
    // RFC 7515 §4.1.11: a critical extension the recipient does not understand makes the JWS
    // invalid; this API understands none.
    let crit = prop::option::weighted(
        0.2,
        prop::sample::select(vec![
            ("[\"exp\"]", Verdict::Refuse),
            ("[\"b64\"]", Verdict::Refuse),
            ("[]", Verdict::Refuse),
            ("\"x\"", Verdict::Refuse),
            ("null", Verdict::Either),
        ]),
    );
    // Keys a token may name or embed are never trusted: verification uses configured keys only.
    let extra = prop::option::weighted(
        0.3,
        prop::sample::select(vec![
            ("jku", "\"https://evil.example/jwks\"", Verdict::Accept),
            ("x5u", "\"https://evil.example/cert\"", Verdict::Accept),
            ("zzz", "{\"a\":[1,2,{\"b\":null}]}", Verdict::Accept),
            ("jwk", "\"not a key\"", Verdict::Refuse),
            ("x5c", "7", Verdict::Refuse),
        ]),
    );
    let second_alg = prop::option::weighted(
        0.1,
        prop::sample::select(vec!["\"none\"", "\"HS256\"", "\"EdDSA\""]),
    );
    (alg, kid, typ, crit, extra, second_alg).prop_map(|(alg, kid, typ, crit, extra, second_alg)| {
        JwsHeader {
            alg,
            kid,
            typ,
            crit,
            extra,
            second_alg,
        }
    })
}

fn exp() -> impl Strategy<Value = Exp> {
    prop_oneof![
        6 => Just(Exp::In600),
        1 => prop::sample::select(vec![
            Exp::In600Float, Exp::AgoWithinLeeway, Exp::AgoBeyondLeeway, Exp::AsString,
            Exp::Null, Exp::True, Exp::Negative, Exp::Array, Exp::Absent, Exp::U64Max, Exp::Huge,
        ]),
    ]
}

fn nbf() -> impl Strategy<Value = Nbf> {
    prop_oneof![
        4 => Just(Nbf::Absent),
        1 => prop::sample::select(vec![
            Nbf::Null, Nbf::Past, Nbf::SoonWithinLeeway, Nbf::Future, Nbf::FutureFloat,
            Nbf::PastFloat, Nbf::AsString, Nbf::Negative,
        ]),
    ]
}

/// `Some(raw)` or absent, with the verdict; `"SUB"` stands for this case's fresh user id.
fn member(
    accept: &'static str,
    others: Vec<(Option<&'static str>, Verdict)>,
) -> impl Strategy<Value = (Option<&'static str>, Verdict)> {
    prop_oneof![
        5 => Just((Some(accept), Verdict::Accept)),
        1 => prop::sample::select(others),
    ]
}

fn token_input() -> impl Strategy<Value = TokenInput> {
    let sub = member(
        "SUB",
        vec![
            (Some("123"), Verdict::Refuse),
            (Some("[SUB]"), Verdict::Refuse),
            (Some("{}"), Verdict::Refuse),
            (Some("null"), Verdict::Refuse),
            (Some("\"\""), Verdict::Refuse),
            (Some("\" \\t \""), Verdict::Refuse),
            (None, Verdict::Refuse),
        ],
    );
    // `iat` is not checked (CONTRACT "Tokens"), whatever it holds.
    let iat = member(
        "NOW",
        vec![
            (Some("\"yesterday\""), Verdict::Accept),
            (Some("99999999999"), Verdict::Accept),
            (Some("-1"), Verdict::Accept),
            (Some("[]"), Verdict::Accept),
            (None, Verdict::Accept),
        ],
    );
    let iss = member(
        "\"ISS\"",
        vec![
            (None, Verdict::Refuse),
            (Some("\"https://evil.example\""), Verdict::Refuse),
            (Some("\"ISS/\""), Verdict::Refuse),
            (Some("1"), Verdict::Refuse),
            (Some("null"), Verdict::Refuse),
            // Not the string the contract asks for; jsonwebtoken reads a list of issuers.
            (Some("[\"ISS\"]"), Verdict::Either),
        ],
    );
    let aud = member(
        "\"AUD\"",
        vec![
            (Some("[\"AUD\",\"other\"]"), Verdict::Accept),
            (Some("[\"other\"]"), Verdict::Refuse),
            (Some("[]"), Verdict::Refuse),
            (None, Verdict::Refuse),
            (Some("1"), Verdict::Refuse),
            (Some("\"AUD \""), Verdict::Refuse),
        ],
    );
    let signer = prop_oneof![
        8 => Just(Signer::Natural),
        1 => Just(Signer::Crossed),
        1 => Just(Signer::Empty),
    ];
    let shape = prop_oneof![
        8 => Just(Shape::Canonical),
        2 => prop::sample::select(vec![
            Shape::StandardAlphabet, Shape::ExtraSegment, Shape::TrailingDot, Shape::TwoSegments,
            Shape::OneSegment, Shape::EmptyHeader, Shape::InnerSpace,
        ]),
        1 => (0usize..3, 1usize..3).prop_map(|(segment, n)| Shape::Padded(segment, n)),
    ];
    let size = prop::option::weighted(
        0.15,
        prop::sample::select(vec![4000usize, 8190, 8191, 8192, 8193, 8194, 9000]),
    );
    let deep = prop::option::weighted(0.1, prop::sample::select(vec![1usize, 8, 32, 300, 5000]));
    (
        jws_header(),
        signer,
        (exp(), nbf()),
        (sub, iat, iss, aud),
        deep,
        shape,
        size,
    )
        .prop_map(
            |(header, signer, (exp, nbf), (sub, iat, iss, aud), deep, shape, size)| TokenInput {
                header,
                signer,
                exp,
                nbf,
                sub: ("sub", sub.0, sub.1),
                iat: ("iat", iat.0, iat.1),
                iss: ("iss", iss.0, iss.1),
                aud: ("aud", aud.0, aud.1),
                deep,
                shape,
                size,
            },
        )
}

fn exp_json(exp: Exp, now: i64) -> (Option<String>, Verdict) {
    let v = |s: String, verdict| (Some(s), verdict);
    match exp {
        Exp::In600 => v(format!("{}", now + 600), Verdict::Accept),
        Exp::In600Float => v(format!("{}.5", now + 600), Verdict::Accept),
        Exp::AgoWithinLeeway => v(format!("{}", now - LEEWAY / 2), Verdict::Accept),
        Exp::AgoBeyondLeeway => v(format!("{}", now - 3600), Verdict::Refuse),
        Exp::AsString => v(format!("\"{}\"", now + 600), Verdict::Refuse),
        Exp::Null => v("null".into(), Verdict::Refuse),
        Exp::True => v("true".into(), Verdict::Refuse),
        Exp::Negative => v("-5".into(), Verdict::Refuse),
        Exp::Array => v(format!("[{}]", now + 600), Verdict::Refuse),
        Exp::Absent => (None, Verdict::Refuse),
        Exp::U64Max => v(u64::MAX.to_string(), Verdict::Accept),
        // Beyond any 64-bit second count: an implementation limit either way.
        Exp::Huge => v("1e30".into(), Verdict::Either),
    }
}

fn nbf_json(nbf: Nbf, now: i64) -> (Option<String>, Verdict) {
    let v = |s: String, verdict| (Some(s), verdict);
    match nbf {
        Nbf::Absent => (None, Verdict::Accept),
        Nbf::Null => v("null".into(), Verdict::Either),
        Nbf::Past => v(format!("{}", now - 3600), Verdict::Accept),
        Nbf::SoonWithinLeeway => v(format!("{}", now + LEEWAY / 2), Verdict::Accept),
        Nbf::Future => v(format!("{}", now + 3600), Verdict::Refuse),
        Nbf::FutureFloat => v(format!("{}.25", now + 3600), Verdict::Refuse),
        Nbf::PastFloat => v(format!("{}.75", now - 10), Verdict::Accept),
        Nbf::AsString => v(format!("\"{}\"", now - 3600), Verdict::Refuse),
        // Before 1970: a date in the past, or not a NumericDate a verifier must read.
        Nbf::Negative => v("-1".into(), Verdict::Either),
    }
}

/// The JWS header JSON and what the contract says about it (with the signer).
fn header_json(header: &JwsHeader, signer: Signer) -> (String, Verdict) {
    let mut members = vec![format!("\"alg\":{}", header.alg.json())];
    let mut verdict = match (header.alg, signer) {
        (Alg::Hs256, Signer::Natural) => Verdict::Accept,
        (Alg::EdDsa, Signer::Natural) => match &header.kid {
            Some((kid, _)) if *kid == format!("\"{KID}\"") => Verdict::Accept,
            _ => Verdict::Refuse, // no kid, an unknown one, or not a string
        },
        // HS384/HS512 (even correctly signed), `none`, unknown algorithms, wrong keys.
        _ => Verdict::Refuse,
    };
    if let Some((kid, kid_verdict)) = &header.kid {
        members.push(format!("\"kid\":{kid}"));
        verdict = verdict.and(*kid_verdict);
    }
    for (name, member) in [("typ", header.typ), ("crit", header.crit)] {
        if let Some((raw, member_verdict)) = member {
            members.push(format!("\"{name}\":{raw}"));
            verdict = verdict.and(member_verdict);
        }
    }
    if let Some((name, raw, member_verdict)) = header.extra {
        members.push(format!("\"{name}\":{raw}"));
        verdict = verdict.and(member_verdict);
    }
    if let Some(second) = header.second_alg {
        members.push(format!("\"alg\":{second}"));
        // RFC 7515 §4: reject, or use the last one. Using the first is a bug.
        let last_ok = matches!(
            (second, signer, header.alg),
            ("\"HS256\"", Signer::Natural, Alg::Hs256) | ("\"EdDSA\"", Signer::Natural, Alg::EdDsa)
        );
        verdict = verdict.and(if last_ok {
            Verdict::Either
        } else {
            Verdict::Refuse
        });
    }
    (format!("{{{}}}", members.join(",")), verdict)
}

fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

/// The claims JSON (padded by `pad` characters) and its verdict.
fn claims_json(input: &TokenInput, user: &str, now: i64, pad: usize) -> (String, Verdict) {
    let mut members = Vec::new();
    let mut verdict = Verdict::Accept;
    for (name, (raw, member_verdict)) in [
        ("exp", exp_json(input.exp, now)),
        ("nbf", nbf_json(input.nbf, now)),
    ] {
        if let Some(raw) = raw {
            members.push(format!("\"{name}\":{raw}"));
        }
        verdict = verdict.and(member_verdict);
    }
    for (name, raw, member_verdict) in [input.sub, input.iat, input.iss, input.aud] {
        if let Some(raw) = raw {
            // Templates: SUB is this case's user id as a JSON string, NOW the time, ISS and AUD
            // the configured issuer and audience (inside quotes in the template).
            let raw = raw
                .replace("SUB", &format!("\"{user}\""))
                .replace("NOW", &now.to_string())
                .replace("ISS", ISSUER)
                .replace("AUD", AUDIENCE);
            members.push(format!("\"{name}\":{raw}"));
        }
        verdict = verdict.and(member_verdict);
    }
    if let Some(depth) = input.deep {
        members.push(format!("\"deep\":{}", nested(depth)));
        // A parser may bound nesting (RFC 8259 §9); shallow claims must be read.
        verdict = verdict.and(if depth <= 32 {
            Verdict::Accept
        } else {
            Verdict::Either
        });
    }
    if pad > 0 {
        members.push(format!("\"pad\":\"{}\"", "p".repeat(pad)));
    }
    (format!("{{{}}}", members.join(",")), verdict)
}

fn sign(ctx: &Ctx, alg: Alg, signer: Signer, secret: &str, message: &str) -> String {
    let hmac = |alg| tokens::hmac(alg, secret, message);
    let ed = || {
        let key = ctx.key.as_ref().expect("JWKS setup");
        URL_SAFE_NO_PAD.encode(key.sign(message.as_bytes()).as_ref())
    };
    match (signer, alg) {
        (Signer::Empty, _) => String::new(),
        (Signer::Natural, Alg::Hs256) | (Signer::Crossed, Alg::EdDsa) => {
            hmac(jsonwebtoken::Algorithm::HS256)
        }
        (Signer::Natural, Alg::Hs384) => hmac(jsonwebtoken::Algorithm::HS384),
        (Signer::Natural, Alg::Hs512) => hmac(jsonwebtoken::Algorithm::HS512),
        (Signer::Natural, Alg::EdDsa) | (Signer::Crossed, _) => ed(),
        (Signer::Natural, Alg::Other(_)) => URL_SAFE_NO_PAD.encode([7u8; 64]),
    }
}

/// The compact token for `claims`, and the canonical (unaltered) one.
fn compact(ctx: &Ctx, input: &TokenInput, header: &str, claims: &str) -> (String, String) {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = sign(
        ctx,
        input.header.alg,
        input.signer,
        &ctx.app.secret,
        &message,
    );
    let canonical = format!("{message}.{signature}");
    let mut parts: Vec<String> = canonical.split('.').map(str::to_owned).collect();
    let rendered = match input.shape {
        Shape::Canonical => canonical.clone(),
        Shape::Padded(segment, n) => {
            parts[segment].push_str(&"=".repeat(n));
            parts.join(".")
        }
        Shape::StandardAlphabet => canonical.replace('-', "+").replace('_', "/"),
        Shape::ExtraSegment => format!("{canonical}.{}", parts[2]),
        Shape::TrailingDot => format!("{canonical}."),
        Shape::TwoSegments => format!("{}.{}", parts[0], parts[1]),
        Shape::OneSegment => parts[1].clone(),
        Shape::EmptyHeader => format!(".{}.{}", parts[1], parts[2]),
        Shape::InnerSpace => {
            let middle = parts[2].len() / 2;
            if middle > 0 {
                parts[2].insert(middle, ' ');
            } else {
                parts[2].push_str(" x");
            }
            parts.join(".")
        }
    };
    (rendered, canonical)
}

#[test]
fn generated_token_structures_are_answered_by_the_contract() {
    run_property(Setup::Jwks, token_input(), async |ctx, input| {
        let user = common::new_user_id();
        let now = now();
        let (header, header_verdict) = header_json(&input.header, input.signer);
        // Pad the claims until the credential is as close to the target size as base64 allows.
        let mut pad = 0usize;
        let build = |pad| {
            let (claims, verdict) = claims_json(&input, &user, now, pad);
            let (rendered, canonical) = compact(ctx, &input, &header, &claims);
            (rendered, canonical, verdict)
        };
        let (mut token, mut canonical, mut claims_verdict) = build(0);
        if let Some(target) = input.size {
            for _ in 0..6 {
                if token.len() == target {
                    break;
                }
                let missing = target as i64 - token.len() as i64;
                let next = (pad as i64 + (missing * 3 / 4).max(if missing > 0 { 1 } else { -1 }))
                    .max(0) as usize;
                if next == pad {
                    break;
                }
                pad = next;
                (token, canonical, claims_verdict) = build(pad);
            }
        }
        let mut verdict = header_verdict.and(claims_verdict);
        if token != canonical || token.len() > TOKEN_MAX_BYTES {
            verdict = Verdict::Refuse;
        }
        let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) else {
            return Err(TestCaseError::fail("token is not a header value"));
        };
        let headers = [(header::AUTHORIZATION, value), json_type()];
        let response = ctx
            .app
            .send_raw(
                Method::POST,
                "/api/tasks",
                &headers,
                br#"{"title":"t"}"#.to_vec(),
            )
            .await;
        let accepted = response.status == StatusCode::CREATED;
        match verdict {
            Verdict::Accept => prop_assert!(
                accepted,
                "{} {:?} (token {} bytes)",
                response.status,
                response.body,
                token.len()
            ),
            Verdict::Refuse => {
                expect_error(&response, 401, "UNAUTHORIZED", None)?;
            }
            Verdict::Either => {
                if !accepted {
                    expect_error(&response, 401, "UNAUTHORIZED", None)?;
                }
            }
        }
        let written = i64::from(accepted);
        prop_assert_eq!(
            stored_rows(&ctx.db, &user).await,
            (written, written, written)
        );
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// 3. JSON bodies: depth, size, duplicate and unknown keys, types, Unicode length rules.

/// Unicode `White_Space` (what the contract trims from a title), listed rather than asked of
/// `char::is_whitespace`.
const WHITE_SPACE: &[char] = &[
    '\u{9}', '\u{a}', '\u{b}', '\u{c}', '\u{d}', ' ', '\u{85}', '\u{a0}', '\u{1680}', '\u{2000}',
    '\u{2001}', '\u{2002}', '\u{2003}', '\u{2004}', '\u{2005}', '\u{2006}', '\u{2007}', '\u{2008}',
    '\u{2009}', '\u{200a}', '\u{2028}', '\u{2029}', '\u{202f}', '\u{205f}', '\u{3000}',
];

/// Pieces of text without white space at either end, with their length in code points.
const UNITS: &[&str] = &[
    "a",
    "e\u{301}",                                    // e + combining acute: 2 code points
    "\u{1f600}",                                   // astral: 1 code point, 2 UTF-16 units
    "\u{1f469}\u{200d}\u{1f469}\u{200d}\u{1f467}", // ZWJ family: 5 code points, 1 glyph
    "\u{1f1eb}\u{1f1f7}",                          // flag: 2 regional indicators
    "\u{200b}",                                    // zero width space: not White_Space
    "\u{feff}",                                    // BOM: not White_Space
    "\u{180e}",                                    // Mongolian vowel separator: not since 6.3
    "x\u{3000}y",                                  // inner ideographic space: kept, counted
    "\u{5b57}",                                    // CJK
    "\u{fdd0}",                                    // noncharacter
    "\u{10ffff}",
    "a\u{300}\u{301}\u{302}\u{303}", // stacked combining marks
];

/// Text whose length (after trimming, for a title) is exactly `target` code points.
#[derive(Debug, Clone)]
struct Text {
    lead: Vec<char>,
    units: Vec<usize>,
    target: usize,
    trail: Vec<char>,
    /// Write every character as `\uXXXX` (surrogate pairs for astral ones).
    escaped: bool,
}

impl Text {
    /// The text as a Rust string: units, then `a` until `target` code points (cut if over).
    fn core(&self) -> String {
        let mut core: Vec<char> = Vec::new();
        for unit in &self.units {
            let chars: Vec<char> = UNITS[*unit].chars().collect();
            if core.len() + chars.len() > self.target {
                break;
            }
            core.extend(chars);
        }
        while core.len() < self.target {
            core.push('a');
        }
        core.into_iter().collect()
    }

    fn value(&self) -> String {
        let mut text: String = self.lead.iter().collect();
        text.push_str(&self.core());
        text.extend(self.trail.iter());
        text
    }

    fn literal(&self) -> String {
        let value = self.value();
        if !self.escaped {
            return Value::String(value).to_string();
        }
        let mut out = String::from("\"");
        for unit in value.encode_utf16() {
            out.push_str(&format!("\\u{unit:04x}"));
        }
        out.push('"');
        out
    }
}

fn text(targets: Vec<usize>) -> impl Strategy<Value = Text> {
    let ws = prop::collection::vec(prop::sample::select(WHITE_SPACE.to_vec()), 0..3);
    (
        ws.clone(),
        prop::collection::vec(0..UNITS.len(), 0..24),
        prop::sample::select(targets),
        ws,
        prop::bool::weighted(0.2),
    )
        .prop_map(|(lead, units, target, trail, escaped)| Text {
            lead,
            units,
            target,
            trail,
            escaped,
        })
}

#[derive(Debug, Clone)]
enum Json {
    Text(Text),
    /// Raw JSON: null, booleans, numbers.
    Raw(&'static str),
    /// `depth` nested arrays or objects around a string.
    Deep(usize, bool),
}

impl Json {
    fn render(&self) -> String {
        match self {
            Json::Text(text) => text.literal(),
            Json::Raw(raw) => (*raw).to_owned(),
            Json::Deep(depth, objects) => {
                if *objects {
                    format!("{}\"x\"{}", "{\"k\":".repeat(*depth), "}".repeat(*depth))
                } else {
                    format!("{}\"x\"{}", "[".repeat(*depth), "]".repeat(*depth))
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
struct BodyInput {
    members: Vec<(String, Json)>,
    /// Whitespace inserted after `{` to bring the body to about this many bytes.
    size: Option<usize>,
    put: bool,
}

/// Member names: the three fields, case and spacing variants, and other unknown names.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec!["title", "description", "is_completed"]).prop_map(str::to_owned),
        1 => prop::sample::select(vec![
            "Title", "TITLE", "title ", " title", "descriptio", "", "__proto__", "constructor",
            "tit\u{0}le", "t\u{131}tle", "title\u{200b}", "id", "user_id", "created_at",
        ])
        .prop_map(str::to_owned),
        1 => prop::collection::vec(prop::sample::select(vec!['a', 'z', '_', '\u{e9}', '\u{1f600}']), 1..12)
            .prop_map(|chars| chars.into_iter().collect()),
    ]
}

fn json_value() -> impl Strategy<Value = Json> {
    prop_oneof![
        6 => text(vec![0, 1, 2, 499, 500, 501, 4999, 5000, 5001]).prop_map(Json::Text),
        2 => prop::sample::select(vec![
            "null", "true", "false", "0", "-0", "1.5e300", "[]", "{}", "[\"t\"]", "{\"title\":\"t\"}",
        ])
        .prop_map(Json::Raw),
        1 => (prop::sample::select(vec![1usize, 2, 16, 64, 127, 128, 129, 256, 1000, 20_000]), any::<bool>())
            .prop_map(|(depth, objects)| Json::Deep(depth, objects)),
    ]
}

fn body_input() -> impl Strategy<Value = BodyInput> {
    let title = text(vec![1, 2, 499, 500, 501]).prop_map(Json::Text);
    let members = (
        title,
        prop::collection::vec((name(), json_value()), 0..4),
        0usize..5,
    )
        .prop_map(|(title, rest, at)| {
            let mut members = rest;
            members.insert(at.min(members.len()), ("title".to_owned(), title));
            members
        });
    let size = prop::option::weighted(
        0.15,
        prop::sample::select(vec![
            BODY_MAX_BYTES - 1,
            BODY_MAX_BYTES,
            BODY_MAX_BYTES + 1,
            70_000,
        ]),
    );
    (members, size, any::<bool>()).prop_map(|(members, size, put)| BodyInput { members, size, put })
}

fn render_body(input: &BodyInput) -> Vec<u8> {
    let members: Vec<String> = input
        .members
        .iter()
        .map(|(name, value)| format!("{}:{}", Value::String(name.clone()), value.render()))
        .collect();
    let inner = members.join(",");
    let mut body = format!("{{{inner}}}");
    if let Some(size) = input.size
        && size > body.len()
    {
        body = format!("{{{}{inner}}}", " ".repeat(size - body.len()));
    }
    body.into_bytes()
}

/// What a member's value is, as a validated field (the contract's rules, in code points).
#[derive(Debug, Clone, PartialEq)]
enum Field {
    Title(String),
    Description(Option<String>),
    Completed(bool),
}

/// `Err(None)`: the JSON itself is refused (no field); `Err(Some(name))`: the field is refused.
fn field(name: &str, value: &Json, put: bool) -> Result<Field, Option<String>> {
    let refuse = || Err(Some(name.to_owned()));
    match (name, value) {
        ("title", Json::Text(text)) => {
            let value = text.value();
            let trimmed = value.trim_matches(|c| WHITE_SPACE.contains(&c));
            let count = trimmed.chars().count();
            if count == 0 || count > TITLE_MAX {
                return refuse();
            }
            Ok(Field::Title(trimmed.to_owned()))
        }
        ("description", Json::Raw("null")) => Ok(Field::Description(None)),
        ("description", Json::Text(text)) => {
            let value = text.value();
            if value.chars().count() > DESCRIPTION_MAX {
                return refuse();
            }
            Ok(Field::Description(Some(value)))
        }
        ("is_completed", Json::Raw("true")) if put => Ok(Field::Completed(true)),
        ("is_completed", Json::Raw("false")) if put => Ok(Field::Completed(false)),
        _ => refuse(),
    }
}

#[derive(Debug, PartialEq)]
enum BodyVerdict {
    Stored {
        title: String,
        description: Option<String>,
        is_completed: Option<bool>,
    },
    /// Status, and `Some(field)` when `details.field` must name it.
    Refused(u16, Option<String>),
}

/// The contract's verdict for a body whose members are unique; a repeated member takes its last
/// value at its first position (what RFC 8259 §4 leaves open; the alternative, refusing the
/// repeated field, is accepted by the caller).
fn body_verdict(input: &BodyInput, raw_len: usize) -> BodyVerdict {
    if raw_len > BODY_MAX_BYTES {
        return BodyVerdict::Refused(413, None);
    }
    let mut order: Vec<&str> = Vec::new();
    let mut last: std::collections::HashMap<&str, &Json> = std::collections::HashMap::new();
    for (name, value) in &input.members {
        if !last.contains_key(name.as_str()) {
            order.push(name);
        }
        last.insert(name, value);
    }
    let (mut title, mut description, mut is_completed) = (None, None, None);
    for name in order {
        match field(name, last[name], input.put) {
            Ok(Field::Title(t)) => title = Some(t),
            Ok(Field::Description(d)) => description = d,
            Ok(Field::Completed(c)) => is_completed = Some(c),
            Err(field) => return BodyVerdict::Refused(400, field),
        }
    }
    match title {
        Some(title) => BodyVerdict::Stored {
            title,
            description,
            is_completed,
        },
        None => BodyVerdict::Refused(400, Some("title".into())),
    }
}

#[test]
fn generated_json_bodies_are_answered_by_the_contract_and_refusals_write_nothing() {
    run_property(Setup::Plain, body_input(), async |ctx, input| {
        let (user, token) = ctx.app.new_user();
        let before = if input.put {
            Some(ctx.app.create_task(&token, "before").await)
        } else {
            None
        };
        let id = before
            .as_ref()
            .map(|t| t["id"].as_str().expect("id").to_owned());
        let raw = render_body(&input);
        let verdict = body_verdict(&input, raw.len());
        let (method, path) = match &id {
            Some(id) => (Method::PUT, format!("/api/tasks/{id}")),
            None => (Method::POST, "/api/tasks".to_owned()),
        };
        let stored_before = match &id {
            Some(id) => task_row(&ctx.db, id).await,
            None => None,
        };
        let rows_before = stored_rows(&ctx.db, &user).await;
        let response = ctx
            .app
            .send_raw(method, &path, &[bearer(&token), json_type()], raw)
            .await;
        let duplicated: Vec<&str> = input
            .members
            .iter()
            .enumerate()
            .filter(|(i, (name, _))| input.members[..*i].iter().any(|(n, _)| n == name))
            .map(|(_, (name, _))| name.as_str())
            .collect();
        // Nesting this deep may meet a parser's depth limit (RFC 8259 §9): then the body is
        // refused as malformed, without a field.
        let deep = input
            .members
            .iter()
            .any(|(_, v)| matches!(v, Json::Deep(d, _) if *d > 100));
        match verdict {
            BodyVerdict::Stored {
                title,
                description,
                is_completed,
            } if response.status.is_success() || duplicated.is_empty() => {
                let expected = if input.put {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                };
                prop_assert_eq!(response.status, expected, "{:?}", response.body);
                let data = &response.json()["data"];
                prop_assert_eq!(&data["title"], &json!(title));
                prop_assert_eq!(&data["description"], &json!(description));
                if input.put {
                    prop_assert_eq!(&data["is_completed"], &json!(is_completed.unwrap_or(false)));
                }
                let id = data["id"].as_str().expect("id");
                let row = task_row(&ctx.db, id).await.expect("stored");
                prop_assert_eq!((row.0, row.1), (title, description));
            }
            verdict => {
                let refused_field = match &verdict {
                    BodyVerdict::Refused(_, field) => field.clone(),
                    BodyVerdict::Stored { .. } => None,
                };
                let status = match verdict {
                    BodyVerdict::Refused(status, _) => status,
                    BodyVerdict::Stored { .. } => 400,
                };
                let code = match status {
                    413 => "PAYLOAD_TOO_LARGE",
                    _ => "VALIDATION_ERROR",
                };
                let body = expect_error(&response, status, code, None)?;
                let named = &body["error"]["details"]["field"];
                if status == 400 {
                    // The expected field; or, for a repeated member, that member refused as a
                    // duplicate; or, past a parser's depth limit, no field at all.
                    let ok = named.as_str() == refused_field.as_deref()
                        || (named.is_null() && refused_field.is_none())
                        || named.as_str().is_some_and(|n| duplicated.contains(&n))
                        || (deep && named.is_null());
                    prop_assert!(ok, "field {} expected {:?}", named, refused_field);
                }
                prop_assert_eq!(
                    stored_rows(&ctx.db, &user).await,
                    rows_before,
                    "a refusal wrote"
                );
                if let Some(id) = &id {
                    prop_assert_eq!(&task_row(&ctx.db, id).await, &stored_before);
                }
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// 4. Content types on POST and PUT.

#[derive(Debug, Clone)]
struct ContentTypeInput {
    /// The `Content-Type` field lines (none: missing).
    lines: Vec<Raw>,
    /// 0: a valid body; 1: not JSON; 2: JSON but not an object.
    body: u8,
    put: bool,
}

const MEDIA_TYPES: &[&str] = &[
    "application/json",
    "Application/JSON",
    "APPLICATION/JSON",
    "application/jsonx",
    "application/json-patch+json",
    "application/vnd.api+json",
    "application/ld+json",
    "text/json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "application/*",
    "*/*",
    "application",
    "json",
    "",
    "application /json",
    "application/ json",
    "application\\json",
    "application/json/",
    "application/json5",
];

const PARAMETERS: &[&str] = &[
    "",
    "; charset=utf-8",
    ";charset=UTF-8",
    "; charset=\"utf-8\"",
    "; charset=latin1",
    "; charset=utf-16",
    ";",
    "; ;",
    "; boundary=x",
    ";;a=b",
    "; charset",
    " ; charset=utf-8",
    "\t;\tq=1",
];

fn content_type_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => (
            prop::sample::select(vec!["", " ", "\t"]),
            prop_oneof![
                2 => prop::sample::select(MEDIA_TYPES[..3].to_vec()),
                3 => prop::sample::select(MEDIA_TYPES.to_vec()),
            ],
            prop::sample::select(PARAMETERS.to_vec()),
            prop::sample::select(vec!["", " ", "\t"]),
        )
            .prop_map(|(lead, media, params, trail)| format!("{lead}{media}{params}{trail}").into_bytes()),
        1 => (prop::sample::select(MEDIA_TYPES.to_vec()), prop::collection::vec(header_byte(), 0..24))
            .prop_map(|(media, mut tail)| {
                let mut line = media.as_bytes().to_vec();
                line.append(&mut tail);
                line
            }),
        1 => prop::collection::vec(header_byte(), 0..40),
    ]
}

fn content_type_input() -> impl Strategy<Value = ContentTypeInput> {
    let lines = prop_oneof![
        6 => content_type_line().prop_map(|l| vec![Raw(l)]),
        2 => Just(vec![]),
        2 => prop::collection::vec(content_type_line().prop_map(Raw), 2..4),
    ];
    (
        lines,
        prop_oneof![6 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
        any::<bool>(),
    )
        .prop_map(|(lines, body, put)| ContentTypeInput { lines, body, put })
}

/// The contract: `application/json` with any parameters is JSON, a missing content type too;
/// anything else is 415. `Some(true)`: JSON; `Some(false)`: 415; `None`: either.
fn is_json(lines: &[Raw]) -> Option<bool> {
    match lines {
        [] => Some(true),
        [line] => {
            let line = ows_trimmed(&line.0);
            let essence_end = line.iter().position(|b| *b == b';').unwrap_or(line.len());
            let essence = ows_trimmed(&line[..essence_end]);
            let json = essence.eq_ignore_ascii_case(b"application/json");
            if json && line[essence_end..].iter().any(|b| *b >= 0x80) {
                // obs-text in a parameter: a quoted-string may carry it (RFC 9110 §5.6.4),
                // a token may not; the contract does not say which parameters it takes.
                None
            } else {
                Some(json)
            }
        }
        // Several media types (API Gateway joins them with commas): not one JSON type.
        _ => Some(false),
    }
}

#[test]
fn generated_content_types_are_json_or_415_and_refusals_write_nothing() {
    run_property(Setup::Plain, content_type_input(), async |ctx, input| {
        let (user, token) = ctx.app.new_user();
        let id = if input.put {
            Some(
                ctx.app.create_task(&token, "before").await["id"]
                    .as_str()
                    .expect("id")
                    .to_owned(),
            )
        } else {
            None
        };
        let before = match &id {
            Some(id) => task_row(&ctx.db, id).await,
            None => None,
        };
        let rows_before = stored_rows(&ctx.db, &user).await;
        let mut headers = vec![bearer(&token)];
        for line in &input.lines {
            let value = HeaderValue::from_bytes(&line.0).expect("generated field value");
            headers.push((header::CONTENT_TYPE, value));
        }
        let body: &[u8] = match input.body {
            0 => br#"{"title":"typed"}"#,
            1 => b"title=typed",
            _ => br#"["title"]"#,
        };
        let (method, path) = match &id {
            Some(id) => (Method::PUT, format!("/api/tasks/{id}")),
            None => (Method::POST, "/api/tasks".to_owned()),
        };
        let response = ctx
            .app
            .send_raw(method, &path, &headers, body.to_vec())
            .await;
        let success = if input.put {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        let json = is_json(&input.lines);
        match (json, input.body) {
            (Some(true), 0) => prop_assert_eq!(response.status, success, "{:?}", response.body),
            (Some(true), _) => {
                expect_error(&response, 400, "VALIDATION_ERROR", None)?;
            }
            (Some(false), _) => {
                expect_error(&response, 415, "UNSUPPORTED_MEDIA_TYPE", None)?;
            }
            (None, _) => {
                if response.status != success {
                    let status = response.status.as_u16();
                    prop_assert!(status == 415 || status == 400, "{}", status);
                }
            }
        }
        if !response.status.is_success() {
            prop_assert_eq!(stored_rows(&ctx.db, &user).await, rows_before);
            if let Some(id) = &id {
                prop_assert_eq!(&task_row(&ctx.db, id).await, &before);
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// 5. `Idempotency-Key`.

#[derive(Debug, Clone, Copy)]
enum WriteRoute {
    Create,
    Replace,
    Delete,
    Toggle,
}

fn write_route() -> impl Strategy<Value = WriteRoute> {
    prop::sample::select(vec![
        WriteRoute::Create,
        WriteRoute::Replace,
        WriteRoute::Delete,
        WriteRoute::Toggle,
    ])
}

/// A key value: visible ASCII, any header byte, quoted forms, lengths 0–300.
fn key_value() -> impl Strategy<Value = Vec<u8>> {
    let visible = prop::collection::vec(0x21u8..0x7f, 0..300);
    prop_oneof![
        3 => prop::collection::vec(0x21u8..0x7f, 1..=KEY_MAX),
        2 => visible.clone(),
        1 => prop::sample::select(vec![0usize, 1, 254, 255, 256, 257, 300])
            .prop_map(|n| vec![b'k'; n]),
        2 => prop::collection::vec(0x21u8..0x7f, 0..258).prop_map(|inner| {
            let mut quoted = vec![b'"'];
            quoted.extend(inner);
            quoted.push(b'"');
            quoted
        }),
        2 => prop::collection::vec(header_byte(), 0..300),
        1 => (prop::collection::vec(0x21u8..0x7f, 1..20), prop::sample::select(vec![" ", "\t", "\"", "\"\"", " \""]))
            .prop_map(|(mut key, wrap)| {
                let mut out = wrap.as_bytes().to_vec();
                out.append(&mut key);
                out.extend_from_slice(wrap.as_bytes());
                out
            }),
    ]
}

#[derive(Debug, Clone)]
struct KeyInput {
    route: WriteRoute,
    lines: Vec<Raw>,
}

fn key_input() -> impl Strategy<Value = KeyInput> {
    let lines = prop_oneof![
        8 => key_value().prop_map(|v| vec![Raw(v)]),
        1 => prop::collection::vec(key_value().prop_map(Raw), 2..4),
    ];
    (write_route(), lines).prop_map(|(route, lines)| KeyInput { route, lines })
}

/// The contract's key: 1–255 visible ASCII characters, a double-quoted value being the text
/// inside the quotes; one field. `None`: 400.
fn canonical_key(lines: &[Raw]) -> Option<Vec<u8>> {
    let [line] = lines else {
        return None;
    };
    let value = ows_trimmed(&line.0);
    let key = if value.len() >= 2 && value.starts_with(b"\"") && value.ends_with(b"\"") {
        &value[1..value.len() - 1]
    } else {
        value
    };
    let visible = key.iter().all(|b| (0x21..=0x7e).contains(b));
    (!key.is_empty() && key.len() <= KEY_MAX && visible).then(|| key.to_vec())
}

/// Sends `route` on `task` with these extra header lines.
async fn write(
    ctx: &Ctx,
    token: &str,
    route: WriteRoute,
    task: &str,
    extra: &[(HeaderName, HeaderValue)],
) -> TestResponse {
    let mut headers = vec![bearer(token)];
    headers.extend_from_slice(extra);
    let (method, path, body) = match route {
        WriteRoute::Create => (
            Method::POST,
            "/api/tasks".to_owned(),
            br#"{"title":"keyed"}"#.to_vec(),
        ),
        WriteRoute::Replace => (
            Method::PUT,
            format!("/api/tasks/{task}"),
            br#"{"title":"replaced"}"#.to_vec(),
        ),
        WriteRoute::Delete => (Method::DELETE, format!("/api/tasks/{task}"), Vec::new()),
        WriteRoute::Toggle => (
            Method::PATCH,
            format!("/api/tasks/{task}/toggle"),
            Vec::new(),
        ),
    };
    if !body.is_empty() {
        headers.push(json_type());
    }
    ctx.app.send_raw(method, &path, &headers, body).await
}

fn success_of(route: WriteRoute) -> StatusCode {
    match route {
        WriteRoute::Create => StatusCode::CREATED,
        WriteRoute::Delete => StatusCode::NO_CONTENT,
        WriteRoute::Replace | WriteRoute::Toggle => StatusCode::OK,
    }
}

#[test]
fn generated_idempotency_keys_are_400_naming_the_header_or_one_replayable_write() {
    run_property(Setup::Plain, key_input(), async |ctx, input| {
        let (user, token) = ctx.app.new_user();
        let task = ctx.app.create_task(&token, "keyed").await;
        let id = task["id"].as_str().expect("id").to_owned();
        let before = task_row(&ctx.db, &id).await;
        let rows_before = stored_rows(&ctx.db, &user).await;
        let lines: Vec<(HeaderName, HeaderValue)> = input
            .lines
            .iter()
            .map(|l| {
                let value = HeaderValue::from_bytes(&l.0).expect("generated field value");
                (HeaderName::from_static("idempotency-key"), value)
            })
            .collect();
        let response = write(ctx, &token, input.route, &id, &lines).await;
        match canonical_key(&input.lines) {
            None => {
                expect_error(&response, 400, "VALIDATION_ERROR", Some("Idempotency-Key"))?;
                prop_assert_eq!(
                    stored_rows(&ctx.db, &user).await,
                    rows_before,
                    "a 400 wrote"
                );
                prop_assert_eq!(&task_row(&ctx.db, &id).await, &before);
            }
            Some(key) => {
                prop_assert_eq!(
                    response.status,
                    success_of(input.route),
                    "{:?}",
                    response.body
                );
                prop_assert_eq!(response.header("idempotent-replayed"), None);
                let after_first = stored_rows(&ctx.db, &user).await;
                let stored = task_row(&ctx.db, &id).await;
                // The same key in its quoted form is the same key: a replay, nothing written.
                let mut quoted = vec![b'"'];
                quoted.extend_from_slice(&key);
                quoted.push(b'"');
                let again = [(
                    HeaderName::from_static("idempotency-key"),
                    HeaderValue::from_bytes(&quoted).expect("quoted key"),
                )];
                let replay = write(ctx, &token, input.route, &id, &again).await;
                prop_assert_eq!(replay.status, response.status, "{:?}", replay.body);
                prop_assert_eq!(replay.header("idempotent-replayed"), Some("true"));
                prop_assert_eq!(&replay.body, &response.body);
                prop_assert_eq!(stored_rows(&ctx.db, &user).await, after_first);
                prop_assert_eq!(&task_row(&ctx.db, &id).await, &stored);
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// 6. `If-Match` and `If-None-Match`.

#[derive(Debug, Clone)]
enum Element {
    Star,
    /// The current ETag of the target, strong or weak.
    Current(bool),
    /// Another entity tag: `weak`, the bytes between the quotes (any `etagc`, commas too).
    Tag(bool, Raw),
    /// An empty list element.
    Empty,
    /// Bytes that are not an element on their own.
    Garbage(Raw),
}

fn etagc() -> impl Strategy<Value = u8> {
    prop_oneof![
        6 => 0x23u8..0x7f,
        1 => Just(0x21u8),
        1 => Just(b','),
        1 => 0x80u8..=0xff,
    ]
}

fn element() -> impl Strategy<Value = Element> {
    prop_oneof![
        1 => Just(Element::Star),
        3 => any::<bool>().prop_map(Element::Current),
        3 => (any::<bool>(), prop::collection::vec(etagc(), 0..24)).prop_map(|(w, o)| Element::Tag(w, Raw(o))),
        1 => Just(Element::Empty),
        2 => prop_oneof![
            prop::sample::select(vec![
                b"abc".as_slice(), b"\"unterminated", b"w/\"x\"", b"W/ \"x\"", b"W/x", b"\"a b\"",
                b"\"a\tb\"", b"W/", b"\"", b"\"a\"\"b\"", b"W/W/\"x\"", b"**", b"\"x\"y",
                b"\xe9", b"W/\"", b"'x'",
            ])
            .prop_map(|b| b.to_vec()),
            prop::collection::vec(header_byte(), 1..16),
        ]
        .prop_map(|b| Element::Garbage(Raw(b))),
    ]
}

#[derive(Debug, Clone, Copy)]
enum Conditional {
    /// `If-Match` on a write.
    Match(WriteRoute),
    /// `If-None-Match` on GET one.
    NoneMatchOne,
    /// `If-None-Match` on the list.
    NoneMatchList,
}

#[derive(Debug, Clone)]
struct ConditionInput {
    target: Conditional,
    /// Field lines, each a list of (OWS before, element, OWS after).
    lines: Vec<Vec<(&'static str, Element, &'static str)>>,
    /// Aim at a task that does not exist for this user.
    missing: bool,
}

fn condition_input() -> impl Strategy<Value = ConditionInput> {
    let target = prop_oneof![
        3 => prop::sample::select(vec![WriteRoute::Replace, WriteRoute::Delete, WriteRoute::Toggle])
            .prop_map(Conditional::Match),
        2 => Just(Conditional::NoneMatchOne),
        1 => Just(Conditional::NoneMatchList),
    ];
    let ows = prop::sample::select(vec!["", "", " ", "\t", "  "]);
    let line = prop::collection::vec((ows.clone(), element(), ows), 1..4);
    (
        target,
        prop::collection::vec(line, 1..3),
        prop::bool::weighted(0.15),
    )
        .prop_map(|(target, lines, missing)| ConditionInput {
            target,
            lines,
            missing,
        })
}

fn render_line(line: &[(&str, Element, &str)], current: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, (before, element, after)) in line.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(before.as_bytes());
        match element {
            Element::Star => out.push(b'*'),
            Element::Current(weak) => {
                if *weak {
                    out.extend_from_slice(b"W/");
                }
                out.extend_from_slice(current.as_bytes());
            }
            Element::Tag(weak, opaque) => {
                if *weak {
                    out.extend_from_slice(b"W/");
                }
                out.push(b'"');
                out.extend_from_slice(&opaque.0);
                out.push(b'"');
            }
            Element::Empty => {}
            Element::Garbage(bytes) => out.extend_from_slice(&bytes.0),
        }
        out.extend_from_slice(after.as_bytes());
    }
    out
}

/// Entity tags as (weak, the bytes between the quotes).
type Tags = Vec<(bool, Vec<u8>)>;

/// RFC 9110 §13.1.1/§8.8.3 read from the bytes: `*`, or a list of `[W/]"etagc*"` (empty list
/// elements allowed, §5.6.1). `Err`: malformed. `Ok(None)`: `*`. `Ok(Some(tags))`: (weak, opaque).
fn parse_condition(lines: &[Vec<u8>]) -> Result<Option<Tags>, ()> {
    let mut stars = 0;
    let mut tags = Vec::new();
    for line in lines {
        // Split at commas outside quotes, then each element must be `*` or one entity tag.
        let mut elements = vec![Vec::new()];
        let mut quoted = false;
        for b in line {
            match b {
                b'"' => {
                    quoted = !quoted;
                    elements.last_mut().expect("element").push(*b);
                }
                b',' if !quoted => elements.push(Vec::new()),
                _ => elements.last_mut().expect("element").push(*b),
            }
        }
        if quoted {
            return Err(());
        }
        for element in &elements {
            let element = ows_trimmed(element);
            if element.is_empty() {
                continue;
            }
            if element == b"*" {
                stars += 1;
                continue;
            }
            let (weak, rest) = match element.strip_prefix(b"W/") {
                Some(rest) => (true, rest),
                None => (false, element),
            };
            let ok = rest.len() >= 2
                && rest.starts_with(b"\"")
                && rest.ends_with(b"\"")
                && rest[1..rest.len() - 1]
                    .iter()
                    .all(|b| *b == 0x21 || (0x23..=0x7e).contains(b) || *b >= 0x80);
            if !ok {
                return Err(());
            }
            tags.push((weak, rest[1..rest.len() - 1].to_vec()));
        }
    }
    match (stars, tags.is_empty()) {
        (1, true) => Ok(None),
        (0, false) => Ok(Some(tags)),
        _ => Err(()),
    }
}

#[test]
fn generated_conditional_headers_are_400_naming_them_or_answered_by_the_contract() {
    run_property(Setup::Plain, condition_input(), async |ctx, input| {
        let (user, token) = ctx.app.new_user();
        let task = ctx.app.create_task(&token, "conditional").await;
        let id = if input.missing {
            uuid::Uuid::now_v7().to_string()
        } else {
            task["id"].as_str().expect("id").to_owned()
        };
        let task_etag = format!("\"{}\"", task["updated_at"].as_str().expect("updated_at"));
        let current = match input.target {
            Conditional::NoneMatchList => {
                let list = ctx
                    .app
                    .send_raw(Method::GET, "/api/tasks", &[bearer(&token)], Vec::new())
                    .await;
                list.header(header::ETAG).expect("list ETag").to_owned()
            }
            _ => task_etag.clone(),
        };
        let (name, field) = match input.target {
            Conditional::Match(_) => (header::IF_MATCH, "If-Match"),
            _ => (header::IF_NONE_MATCH, "If-None-Match"),
        };
        let rendered: Vec<Vec<u8>> = input
            .lines
            .iter()
            .map(|l| render_line(l, &current))
            .collect();
        let lines: Vec<(HeaderName, HeaderValue)> = rendered
            .iter()
            .map(|l| {
                (
                    name.clone(),
                    HeaderValue::from_bytes(l).expect("generated field value"),
                )
            })
            .collect();
        let stored = task_row(&ctx.db, task["id"].as_str().expect("id")).await;
        let rows_before = stored_rows(&ctx.db, &user).await;
        let response = match input.target {
            Conditional::Match(route) => write(ctx, &token, route, &id, &lines).await,
            Conditional::NoneMatchOne => {
                let mut headers = vec![bearer(&token)];
                headers.extend(lines);
                ctx.app
                    .send_raw(
                        Method::GET,
                        &format!("/api/tasks/{id}"),
                        &headers,
                        Vec::new(),
                    )
                    .await
            }
            Conditional::NoneMatchList => {
                let mut headers = vec![bearer(&token)];
                headers.extend(lines);
                ctx.app
                    .send_raw(Method::GET, "/api/tasks", &headers, Vec::new())
                    .await
            }
        };
        let opaque = current
            .trim_start_matches("W/")
            .trim_matches('"')
            .as_bytes()
            .to_vec();
        let missing = input.missing && !matches!(input.target, Conditional::NoneMatchList);
        let mut changed = false;
        match parse_condition(&rendered) {
            Err(()) => {
                expect_error(&response, 400, "VALIDATION_ERROR", Some(field))?;
            }
            Ok(_) if missing => {
                expect_error(&response, 404, "TASK_NOT_FOUND", None)?;
            }
            Ok(condition) => match input.target {
                Conditional::Match(route) => {
                    // Strong comparison: a weak tag never matches.
                    let matches = condition
                        .as_ref()
                        .is_none_or(|tags| tags.iter().any(|(weak, o)| !weak && *o == opaque));
                    if matches {
                        prop_assert_eq!(response.status, success_of(route), "{:?}", response.body);
                        changed = true;
                    } else {
                        expect_error(&response, 412, "PRECONDITION_FAILED", None)?;
                        prop_assert_eq!(response.header(header::ETAG), Some(current.as_str()));
                    }
                }
                Conditional::NoneMatchOne | Conditional::NoneMatchList => {
                    // Weak comparison.
                    let matches = condition
                        .as_ref()
                        .is_none_or(|tags| tags.iter().any(|(_, o)| *o == opaque));
                    let expected = if matches {
                        StatusCode::NOT_MODIFIED
                    } else {
                        StatusCode::OK
                    };
                    prop_assert_eq!(response.status, expected, "{:?}", response.body);
                    prop_assert_eq!(response.header(header::ETAG), Some(current.as_str()));
                    if matches {
                        prop_assert!(response.body.is_empty(), "a 304 with a body");
                    }
                }
            },
        }
        if !changed {
            prop_assert_eq!(
                &task_row(&ctx.db, task["id"].as_str().expect("id")).await,
                &stored
            );
            prop_assert_eq!(stored_rows(&ctx.db, &user).await, rows_before);
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// 7. The list cursor: a round trip over generated task sets, and arbitrary cursors.

#[derive(Debug, Clone)]
struct PagingInput {
    /// Per task: its `created_at` group (equal groups share a timestamp) and whether it is done.
    tasks: Vec<(u8, bool)>,
    status: &'static str,
    limit: i64,
}

fn paging_input() -> impl Strategy<Value = PagingInput> {
    (
        prop::collection::vec((0u8..4, prop::bool::weighted(0.3)), 0..14),
        prop::sample::select(vec!["all", "all", "pending", "completed"]),
        1i64..8,
    )
        .prop_map(|(tasks, status, limit)| PagingInput {
            tasks,
            status,
            limit,
        })
}

/// The user's tasks as (created_at µs, id), in the contract's list order.
async fn ordered(db: &tokio_postgres::Client, user: &str, status: &str) -> Vec<(i64, String)> {
    let rows = db
        .query(
            "SELECT (EXTRACT(EPOCH FROM created_at) * 1000000)::bigint, id::text, is_completed
             FROM tasks WHERE user_id = $1",
            &[&user],
        )
        .await
        .expect("tasks");
    let mut tasks: Vec<(i64, String)> = rows
        .iter()
        .filter(|row| match status {
            "pending" => !row.get::<_, bool>(2),
            "completed" => row.get::<_, bool>(2),
            _ => true,
        })
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    // DESC by created_at, then by id (lower-case hex compares as the UUID's bytes).
    tasks.sort_by(|a, b| b.cmp(a));
    tasks
}

/// Creates the generated tasks and moves them into their `created_at` groups.
async fn seed(ctx: &Ctx, token: &str, user: &str, tasks: &[(u8, bool)]) {
    for (i, (group, done)) in tasks.iter().enumerate() {
        let task = ctx.app.create_task(token, &format!("task {i}")).await;
        let id = task["id"].as_str().expect("id");
        if *done {
            let path = format!("/api/tasks/{id}/toggle");
            let toggled = ctx
                .app
                .send_raw(Method::PATCH, &path, &[bearer(token)], Vec::new())
                .await;
            assert_eq!(toggled.status, StatusCode::OK);
        }
        // Equal groups collide on purpose: the id breaks the tie (CONTRACT "Pagination").
        ctx.db
            .execute(
                "UPDATE tasks SET created_at = timestamptz '2030-01-01 00:00:00Z'
                     + make_interval(secs => $2::int / 1000000.0)
                 WHERE id::text = $1 AND user_id = $3",
                &[&id, &i32::from(*group), &user],
            )
            .await
            .expect("group created_at");
    }
}

async fn page(ctx: &Ctx, token: &str, query: &str) -> TestResponse {
    ctx.app
        .send_raw(
            Method::GET,
            &format!("/api/tasks?{query}"),
            &[bearer(token)],
            Vec::new(),
        )
        .await
}

#[test]
fn paging_through_generated_task_sets_sees_every_task_once_in_order() {
    run_property(Setup::Plain, paging_input(), async |ctx, input| {
        let (user, token) = ctx.app.new_user();
        seed(ctx, &token, &user, &input.tasks).await;
        let expected: Vec<String> = ordered(&ctx.db, &user, input.status)
            .await
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut query = format!("status={}&limit={}", input.status, input.limit);
            if let Some(cursor) = &cursor {
                query.push_str(&format!("&cursor={cursor}"));
            }
            let response = page(ctx, &token, &query).await;
            prop_assert_eq!(response.status, StatusCode::OK, "{:?}", response.body);
            let body = response.json();
            let data = body["data"].as_array().expect("data");
            prop_assert_eq!(body["count"].as_u64(), Some(data.len() as u64));
            prop_assert!(data.len() as i64 <= input.limit);
            seen.extend(
                data.iter()
                    .map(|t| t["id"].as_str().expect("id").to_owned()),
            );
            pages += 1;
            prop_assert!(pages <= expected.len() + 1, "paging does not end");
            match body["next_cursor"].as_str() {
                Some(next) => {
                    // `next_cursor` is null exactly when nothing is left.
                    prop_assert!(seen.len() < expected.len(), "a cursor after the last task");
                    prop_assert_eq!(data.len() as i64, input.limit);
                    cursor = Some(next.to_owned());
                }
                None => break,
            }
        }
        prop_assert_eq!(&seen, &expected, "every task exactly once, in order");
        let full_pages = expected.len().div_ceil(input.limit as usize).max(1);
        prop_assert_eq!(pages, full_pages);
        Ok(())
    });
}

#[derive(Debug, Clone)]
enum CursorEdit {
    Replace(usize, char),
    Insert(usize, char),
    Remove(usize),
    Truncate(usize),
    Pad(usize),
    StandardAlphabet,
    Append(String),
    /// Arbitrary text instead of the cursor.
    Arbitrary(String),
}

fn cursor_char() -> impl Strategy<Value = char> {
    prop_oneof![
        6 => prop::sample::select(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".chars().collect::<Vec<_>>()
        ),
        1 => prop::sample::select(vec!['=', '+', '/', '%', ' ', '.', ':', '\0', '\u{e9}', '\u{1f600}']),
    ]
}

fn cursor_edit() -> impl Strategy<Value = CursorEdit> {
    let at = any::<prop::sample::Index>().prop_map(|i| i.index(1 << 16));
    prop_oneof![
        3 => (at.clone(), cursor_char()).prop_map(|(i, c)| CursorEdit::Replace(i, c)),
        1 => (at.clone(), cursor_char()).prop_map(|(i, c)| CursorEdit::Insert(i, c)),
        1 => at.clone().prop_map(CursorEdit::Remove),
        1 => at.prop_map(CursorEdit::Truncate),
        1 => (1usize..4).prop_map(CursorEdit::Pad),
        1 => Just(CursorEdit::StandardAlphabet),
        1 => prop::collection::vec(cursor_char(), 1..6).prop_map(|c| CursorEdit::Append(c.into_iter().collect())),
        2 => prop::collection::vec(prop_oneof![cursor_char(), any::<char>()], 0..80)
            .prop_map(|c| CursorEdit::Arbitrary(c.into_iter().collect())),
    ]
}

fn edit_cursor(cursor: &str, edit: &CursorEdit) -> String {
    let mut chars: Vec<char> = cursor.chars().collect();
    let n = chars.len();
    match edit {
        CursorEdit::Replace(i, c) => chars[i % n] = *c,
        CursorEdit::Insert(i, c) => chars.insert(i % (n + 1), *c),
        CursorEdit::Remove(i) => {
            chars.remove(i % n);
        }
        CursorEdit::Truncate(i) => chars.truncate(i % n),
        CursorEdit::Pad(k) => chars.extend(std::iter::repeat_n('=', *k)),
        CursorEdit::StandardAlphabet => {
            for c in &mut chars {
                *c = match *c {
                    '-' => '+',
                    '_' => '/',
                    other => other,
                };
            }
        }
        CursorEdit::Append(tail) => chars.extend(tail.chars()),
        CursorEdit::Arbitrary(text) => return text.clone(),
    }
    chars.into_iter().collect()
}

/// The position a cursor names, if it is one: `base64url("<µs>:<uuid>")` within PostgreSQL's
/// range (what the server issues; CONTRACT: anything else is malformed).
fn cursor_position(cursor: &str) -> Option<(i64, String)> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (micros, id) = text.split_once(':')?;
    let micros: i128 = micros.parse().ok()?;
    if !(PG_MIN_MICROS..=LAST_MICROS_9999).contains(&micros) {
        return None;
    }
    let id = uuid::Uuid::parse_str(id).ok()?;
    Some((i64::try_from(micros).ok()?, id.hyphenated().to_string()))
}

#[test]
fn edited_and_arbitrary_cursors_are_400_naming_cursor_or_the_page_after_their_position() {
    run_property(
        Setup::Plain,
        (paging_input(), cursor_edit()),
        async |ctx, (input, edit)| {
            let (user, token) = ctx.app.new_user();
            let mut tasks = input.tasks.clone();
            tasks.truncate(5);
            tasks.push((1, false));
            tasks.push((2, false));
            seed(ctx, &token, &user, &tasks).await;
            let first = page(ctx, &token, "limit=1").await;
            let real = first.json()["next_cursor"]
                .as_str()
                .expect("a next page")
                .to_owned();
            let cursor = edit_cursor(&real, &edit);
            let mut query = form_urlencoded::Serializer::new(String::new());
            query.append_pair("limit", &input.limit.to_string());
            query.append_pair("cursor", &cursor);
            let response = page(ctx, &token, &query.finish()).await;
            match cursor_position(&cursor) {
                None => {
                    expect_error(&response, 400, "VALIDATION_ERROR", Some("cursor"))?;
                }
                Some(position) => {
                    prop_assert_eq!(response.status, StatusCode::OK, "{:?}", response.body);
                    let after: Vec<String> = ordered(&ctx.db, &user, "all")
                        .await
                        .into_iter()
                        .filter(|task| *task < position)
                        .map(|(_, id)| id)
                        .take(input.limit as usize)
                        .collect();
                    let body = response.json();
                    let got: Vec<&str> = body["data"]
                        .as_array()
                        .expect("data")
                        .iter()
                        .map(|t| t["id"].as_str().expect("id"))
                        .collect();
                    prop_assert_eq!(got, after.iter().map(String::as_str).collect::<Vec<_>>());
                }
            }
            Ok(())
        },
    );
}
