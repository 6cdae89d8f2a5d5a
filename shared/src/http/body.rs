//! Request bodies: size bound, content type, and strict JSON objects.

use http::{HeaderMap, header};
use lambda_http::Body;
use serde_json::{Map, Value};

use super::error::ApiError;

/// Largest accepted request body (CONTRACT: over 64 KiB is 413).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The body as a JSON object, checked in the contract's order: size (413), content type (415),
/// then JSON syntax and shape (400). Key order is preserved so validation can report the first
/// offending field as sent.
pub fn json_object(headers: &HeaderMap, body: &Body) -> Result<Map<String, Value>, ApiError> {
    let bytes: &[u8] = body.as_ref();
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        });
    }
    if !is_json_content_type(headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::validation("Request body must be a JSON object")),
        Err(_) => Err(ApiError::validation("Request body is not valid JSON")),
    }
}

/// `application/json` with any parameters, or no content type at all (then the body must parse).
fn is_json_content_type(headers: &HeaderMap) -> bool {
    let mut fields = headers.get_all(header::CONTENT_TYPE).iter();
    let Some(value) = fields.next() else {
        return true;
    };
    // Several fields name several media types (API Gateway joins them with a comma): not JSON.
    if fields.next().is_some() {
        return false;
    }
    let Ok(value) = value.to_str() else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(content_type: Option<&'static str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = content_type {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn accepts_json_with_parameters_and_missing_content_type() {
        let body = Body::from(r#"{"title":"a"}"#);
        for ct in [
            Some("application/json"),
            Some("Application/JSON; charset=utf-8"),
            None,
        ] {
            assert!(json_object(&headers(ct), &body).is_ok(), "{ct:?}");
        }
    }

    #[test]
    fn rejects_other_content_types_with_415() {
        let body = Body::from(r#"{"title":"a"}"#);
        for ct in ["text/plain", "application/jsonx", "multipart/form-data"] {
            let err = json_object(&headers(Some(ct)), &body).unwrap_err();
            assert_eq!(err.code(), "UNSUPPORTED_MEDIA_TYPE", "{ct}");
        }
    }

    #[test]
    fn size_is_checked_before_content_type() {
        let body = Body::from("x".repeat(MAX_BODY_BYTES + 1));
        let err = json_object(&headers(Some("text/plain")), &body).unwrap_err();
        assert_eq!(err.code(), "PAYLOAD_TOO_LARGE");
        let exact = format!(r#"{{"title":"{}"}}"#, "a".repeat(MAX_BODY_BYTES - 12));
        assert_eq!(exact.len(), MAX_BODY_BYTES);
        assert!(json_object(&headers(None), &Body::from(exact)).is_ok());
    }

    #[test]
    fn malformed_and_non_object_bodies_carry_no_field() {
        for raw in ["{", "[]", "\"x\"", "null", ""] {
            match json_object(&headers(None), &Body::from(raw)).unwrap_err() {
                ApiError::Validation { field, .. } => assert_eq!(field, None, "{raw}"),
                other => panic!("{raw}: {other:?}"),
            }
        }
    }
}
