//! Conditional requests (RFC 9110 §8.8.3, §13.1): entity tags, `If-Match`, `If-None-Match`.
//!
//! A task's entity tag is its `updated_at` exactly as the body shows it, in double quotes, so a
//! client holding a list can build it. A list page's is a hash of what its JSON is made of (see [`page_etag`]). The `If-Match`
//! check itself runs inside the write's statement (see [`crate::tasks::sql`]), which is why
//! [`Condition::timestamps`] turns the tags into what that statement compares.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use http::{HeaderMap, HeaderName, header};
use time::OffsetDateTime;
use uuid::Uuid;

use super::ApiError;
use crate::timestamp;

/// A parsed `If-Match` or `If-None-Match` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// `*`: any current representation.
    Any,
    Tags(Vec<EntityTag>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityTag {
    pub weak: bool,
    /// The text between the quotes.
    pub opaque: String,
}

/// `"<updated_at>"`: a task's strong entity tag.
pub fn task_etag(updated_at: OffsetDateTime) -> String {
    format!("\"{}\"", timestamp::format(updated_at))
}

/// Changes when a list page's JSON changes shape; part of every page's entity tag.
const PAGE_FORMAT: &[u8] = b"tasks page v1";

/// A strong entity tag for a list page, from the `(id, updated_at)` of its tasks in page order
/// and the next cursor. Its bytes are a function of which tasks it holds, each task's
/// `updated_at` (every write moves it) and the cursor, so those are hashed instead of the whole
/// body (a twentieth of the bytes). Versions rather than tasks: this layer knows entity tags,
/// not the task model.
pub fn page_etag(
    versions: impl IntoIterator<Item = (Uuid, OffsetDateTime)>,
    next_cursor: Option<&str>,
) -> String {
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    digest.update(PAGE_FORMAT);
    for (id, updated_at) in versions {
        digest.update(id.as_bytes());
        digest.update(&updated_at.unix_timestamp_nanos().to_be_bytes());
    }
    if let Some(cursor) = next_cursor {
        digest.update(cursor.as_bytes());
    }
    // 128 bits are plenty to tell two pages apart.
    format!(
        "\"{}\"",
        URL_SAFE_NO_PAD.encode(&digest.finish().as_ref()[..16])
    )
}

pub fn if_match(headers: &HeaderMap) -> Result<Option<Condition>, ApiError> {
    parse(headers, header::IF_MATCH, "If-Match")
}

pub fn if_none_match(headers: &HeaderMap) -> Result<Option<Condition>, ApiError> {
    parse(headers, header::IF_NONE_MATCH, "If-None-Match")
}

impl Condition {
    /// `If-None-Match` uses the weak comparison: `W/"x"` matches `"x"`.
    pub fn matches_weakly(&self, etag: &str) -> bool {
        let opaque = etag.trim_start_matches("W/").trim_matches('"');
        match self {
            Self::Any => true,
            Self::Tags(tags) => tags.iter().any(|tag| tag.opaque == opaque),
        }
    }

    /// For `If-Match` inside a task write: `None` when any existing task matches (`*`), else the
    /// `updated_at` values a strong tag names. Weak tags never match (strong comparison), nor
    /// do tags that are not a timestamp in the task ETag form.
    pub fn timestamps(&self) -> Option<Vec<OffsetDateTime>> {
        match self {
            Self::Any => None,
            Self::Tags(tags) => Some(
                tags.iter()
                    .filter(|tag| !tag.weak)
                    .filter_map(|tag| timestamp::parse(&tag.opaque))
                    .collect(),
            ),
        }
    }
}

/// `*` alone, or a comma-separated list of entity tags across all lines of the header (empty
/// list elements are allowed, RFC 9110 §5.6.1; a comma inside the quotes belongs to the tag);
/// anything else is 400 naming the header.
fn parse(
    headers: &HeaderMap,
    name: HeaderName,
    field: &'static str,
) -> Result<Option<Condition>, ApiError> {
    let mut lines = headers.get_all(&name).iter().peekable();
    if lines.peek().is_none() {
        return Ok(None);
    }
    let invalid = || {
        ApiError::invalid_field(
            field,
            format!("{field} must be * or a list of quoted entity tags"),
        )
    };
    let mut tags = Vec::new();
    let mut stars = 0;
    for line in lines {
        // Bytes, not text: an entity tag may carry obs-text (0x80–0xFF, RFC 9110 §8.8.3).
        let mut rest = line.as_bytes();
        loop {
            rest = rest.trim_ascii_start();
            match rest {
                [] => break,
                [b',', tail @ ..] => {
                    rest = tail;
                    continue;
                }
                [b'*', tail @ ..] => {
                    stars += 1;
                    rest = tail;
                }
                _ => {
                    let (tag, tail) = entity_tag(rest).ok_or_else(invalid)?;
                    tags.push(tag);
                    rest = tail;
                }
            }
            // After an element: the end, or a comma.
            rest = rest.trim_ascii_start();
            if !(rest.is_empty() || rest.starts_with(b",")) {
                return Err(invalid());
            }
        }
    }
    match (stars, tags.is_empty()) {
        (1, true) => Ok(Some(Condition::Any)),
        (0, false) => Ok(Some(Condition::Tags(tags))),
        // `*` more than once or mixed with tags, or nothing at all.
        _ => Err(invalid()),
    }
}

/// One `[W/]"…"` at the start of `input`, and what follows it.
fn entity_tag(input: &[u8]) -> Option<(EntityTag, &[u8])> {
    let (weak, quoted) = match input.strip_prefix(b"W/") {
        Some(rest) => (true, rest),
        None => (false, input),
    };
    let body = quoted.strip_prefix(b"\"")?;
    let end = body.iter().position(|b| *b == b'"')?;
    let opaque = &body[..end];
    let etagc = |b: &u8| *b == 0x21 || (0x23..=0x7e).contains(b) || *b >= 0x80;
    if !opaque.iter().all(etagc) {
        return None;
    }
    let tag = EntityTag {
        weak,
        // Ours are ASCII; a tag that is not UTF-8 simply never matches one of them.
        opaque: String::from_utf8_lossy(opaque).into_owned(),
    };
    Some((tag, &body[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use time::macros::datetime;

    fn if_match_of(values: &[&str]) -> Result<Option<Condition>, ApiError> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::IF_MATCH, HeaderValue::from_str(value).unwrap());
        }
        if_match(&headers)
    }

    fn tag(weak: bool, opaque: &str) -> EntityTag {
        EntityTag {
            weak,
            opaque: opaque.into(),
        }
    }

    #[test]
    fn parses_star_lists_and_several_lines() {
        assert_eq!(if_match_of(&[]).unwrap(), None);
        assert_eq!(if_match_of(&["*"]).unwrap(), Some(Condition::Any));
        assert_eq!(
            if_match_of(&[r#""a", W/"b" ,, "c""#, r#""d""#]).unwrap(),
            Some(Condition::Tags(vec![
                tag(false, "a"),
                tag(true, "b"),
                tag(false, "c"),
                tag(false, "d")
            ]))
        );
        assert_eq!(
            if_match_of(&[r#""""#]).unwrap(),
            Some(Condition::Tags(vec![tag(false, "")]))
        );
        assert_eq!(
            if_match_of(&[r#"",l!6oHuL", W/"a,b""#]).unwrap(),
            Some(Condition::Tags(vec![
                tag(false, ",l!6oHuL"),
                tag(true, "a,b")
            ])),
            "a comma inside the quotes belongs to the tag"
        );
    }

    #[test]
    fn malformed_headers_name_the_field() {
        for bad in [
            "abc",
            r#""unterminated"#,
            r#"w/"lowercase-weak""#,
            r#""a" "b""#,
            r#""in"side""#,
            r#"*, "a""#,
            "*, *",
            "",
            " , ",
        ] {
            match if_match_of(&[bad]) {
                Err(ApiError::Validation { field, .. }) => {
                    assert_eq!(field.as_deref(), Some("If-Match"), "{bad:?}")
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn if_match_compares_strongly_and_only_task_etags() {
        let at = datetime!(2026-11-27 18:21:22.639001 UTC);
        let etag = task_etag(at);
        assert_eq!(etag, "\"2026-11-27T18:21:22.639001Z\"");
        let condition = if_match_of(&[&format!("W/{etag}, \"nonsense\", {etag}")])
            .unwrap()
            .unwrap();
        assert_eq!(condition.timestamps(), Some(vec![at]));
        let weak_only = if_match_of(&[&format!("W/{etag}")]).unwrap().unwrap();
        assert_eq!(weak_only.timestamps(), Some(vec![]));
        assert_eq!(Condition::Any.timestamps(), None);
    }

    #[test]
    fn if_none_match_compares_weakly() {
        let condition = Condition::Tags(vec![tag(true, "x")]);
        assert!(condition.matches_weakly("\"x\""));
        assert!(!condition.matches_weakly("\"y\""));
        assert!(Condition::Any.matches_weakly("\"y\""));
    }

    #[test]
    fn page_etags_follow_the_tasks_their_versions_and_the_cursor() {
        let at = datetime!(2026-11-27 18:21:22.639001 UTC);
        let task = |id: u128, updated_at| (Uuid::from_u128(id), updated_at);
        let page = [task(1, at), task(2, at)];
        let etag = page_etag(page, None);
        assert_eq!(etag, page_etag(page, None));
        let one_microsecond_later = at + time::Duration::microseconds(1);
        for other in [
            page_etag([task(1, at), task(2, one_microsecond_later)], None),
            page_etag([task(1, at)], None),
            page_etag([task(2, at), task(1, at)], None),
            page_etag(page, Some("next")),
            page_etag([], None),
        ] {
            assert_ne!(etag, other);
        }
    }
}
