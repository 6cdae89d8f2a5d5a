//! Request keys: how every write is applied at most once.
//!
//! Every write statement records its outcome under a key in `idempotency_keys`, in the write's
//! own statement (see [`crate::tasks::sql`]): the client's `Idempotency-Key` when it sent one,
//! else a key the server makes up for this request. A statement whose key is already recorded
//! writes nothing and returns the record instead. That one rule gives:
//!
//! - **safe resends** ([`crate::db`]): a statement whose connection broke is sent again with the
//!   same key; if the first copy committed, the second finds its record (or waits on the key's
//!   primary key until it commits) and the request answers the first copy's true outcome;
//! - **safe client retries** (CONTRACT "Safe retries"): a retry with the same key and the same
//!   request is a replay; with another request it is 422; concurrent copies wait for the first
//!   and then replay it.
//!
//! `request_id` tells the two apart: a record made by this very request (a resend) is answered
//! as a first answer, a record from an earlier request as a replay.

use http::HeaderMap;
use uuid::Uuid;

use crate::http::{ApiError, Function};

pub const HEADER: &str = "idempotency-key";
/// The name `details.field` gives for a malformed key.
const FIELD: &str = "Idempotency-Key";
const MAX_KEY_CHARS: usize = 255;

/// CONTRACT: a client's key is remembered at least 24 hours after its write.
const CLIENT_KEY_SECONDS: f64 = 24.0 * 3600.0;
/// A server key only has to outlive its own request's resends (deadline + server
/// `statement_timeout`); minutes keep the table small when clients send no keys.
const SERVER_KEY_SECONDS: f64 = 300.0;

/// The key a write is recorded under, and what identifies its request.
#[derive(Debug, Clone)]
pub struct RequestKey {
    /// The client's key, or `req <request_id>` (a space never occurs in a client key).
    pub key: String,
    pub from_client: bool,
    /// This HTTP request, to tell its own resends from replays of an earlier request.
    pub request_id: Uuid,
    /// SHA-256 of route, task id and body: "same request" (CONTRACT).
    pub request_hash: Vec<u8>,
}

impl RequestKey {
    /// The key for one write request: the validated `Idempotency-Key` header, or a new server
    /// key. The task id is hashed in canonical (lower-case) form, so it compares
    /// case-insensitively; the body as sent, so identical bytes are the same request.
    pub fn for_request(
        headers: &HeaderMap,
        function: Function,
        task_id: Option<Uuid>,
        body: &[u8],
    ) -> Result<Self, ApiError> {
        let request_id = Uuid::now_v7();
        let client_key = client_key(headers)?;
        let from_client = client_key.is_some();
        let key = client_key.unwrap_or_else(|| format!("req {request_id}"));
        let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
        hash.update(function.name().as_bytes());
        hash.update(&[0]);
        if let Some(id) = task_id {
            hash.update(id.hyphenated().to_string().as_bytes());
        }
        hash.update(&[0]);
        hash.update(body);
        Ok(Self {
            key,
            from_client,
            request_id,
            request_hash: hash.finish().as_ref().to_vec(),
        })
    }

    /// How long the record is kept, in seconds.
    pub fn retention_seconds(&self) -> f64 {
        if self.from_client {
            CLIENT_KEY_SECONDS
        } else {
            SERVER_KEY_SECONDS
        }
    }
}

/// The `Idempotency-Key` header: 1–255 visible ASCII characters, optionally in double quotes
/// (the structured-field form of the IETF draft names the same key). One header at most.
fn client_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::invalid_field(
            FIELD,
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        )
    };
    if values.next().is_some() {
        return Err(invalid());
    }
    let raw = value.as_bytes();
    let key = match raw {
        [b'"', inner @ .., b'"'] => inner,
        _ => raw,
    };
    let visible = |b: &u8| (b'!'..=b'~').contains(b);
    if key.is_empty() || key.len() > MAX_KEY_CHARS || !key.iter().all(visible) {
        return Err(invalid());
    }
    // All bytes are ASCII, so this is the same text.
    Ok(Some(String::from_utf8_lossy(key).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn key_of(values: &[&[u8]]) -> Result<Option<String>, ApiError> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(HEADER, HeaderValue::from_bytes(value).unwrap());
        }
        client_key(&headers)
    }

    #[test]
    fn plain_and_quoted_forms_name_the_same_key() {
        assert_eq!(key_of(&[b"abc-123"]).unwrap().as_deref(), Some("abc-123"));
        assert_eq!(
            key_of(&[b"\"abc-123\""]).unwrap().as_deref(),
            Some("abc-123")
        );
        assert_eq!(key_of(&[]).unwrap(), None);
        let longest = "k".repeat(255);
        assert_eq!(
            key_of(&[longest.as_bytes()]).unwrap().as_deref(),
            Some(&*longest)
        );
    }

    #[test]
    fn malformed_keys_name_the_header() {
        let long = "k".repeat(256);
        for bad in [
            &b""[..],
            b"\"\"",
            b"with space",
            b"tab\tkey",
            b"caf\xc3\xa9",
            long.as_bytes(),
        ] {
            match key_of(&[bad]) {
                Err(ApiError::Validation { field, .. }) => {
                    assert_eq!(field.as_deref(), Some("Idempotency-Key"), "{bad:?}")
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert!(key_of(&[b"a", b"b"]).is_err(), "two keys are ambiguous");
    }

    #[test]
    fn the_request_hash_covers_route_id_and_body() {
        let headers = HeaderMap::new();
        let id = Uuid::now_v7();
        let hash = |function, id, body: &[u8]| {
            RequestKey::for_request(&headers, function, id, body)
                .unwrap()
                .request_hash
        };
        let base = hash(Function::UpdateTask, Some(id), b"{}");
        assert_eq!(base, hash(Function::UpdateTask, Some(id), b"{}"));
        assert_ne!(base, hash(Function::UpdateTask, Some(id), b"{ }"));
        assert_ne!(base, hash(Function::ToggleTask, Some(id), b"{}"));
        assert_ne!(
            base,
            hash(Function::UpdateTask, Some(Uuid::now_v7()), b"{}")
        );
    }

    #[test]
    fn server_keys_cannot_collide_with_client_keys() {
        let key =
            RequestKey::for_request(&HeaderMap::new(), Function::CreateTask, None, b"").unwrap();
        assert!(!key.from_client);
        assert!(key.key.contains(' '));
        assert!(key.retention_seconds() < CLIENT_KEY_SECONDS);
    }
}
