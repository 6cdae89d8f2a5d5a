//! List parameters (`status`, `limit`, `cursor`) and the opaque keyset cursor.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use time::OffsetDateTime;
use uuid::Uuid;

use super::model::Task;
use crate::http::ApiError;

pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 500;

/// A page size parameter (`limit` of the list and of the changes feed): 1 to [`MAX_LIMIT`].
pub(crate) fn parse_limit(value: &str) -> Result<i64, ApiError> {
    value
        .parse::<i64>()
        .ok()
        .filter(|n| (1..=MAX_LIMIT).contains(n))
        .ok_or_else(|| {
            ApiError::invalid_field(
                "limit",
                format!("limit must be an integer from 1 to {MAX_LIMIT}"),
            )
        })
}

/// PostgreSQL's `timestamptz` range in Unix microseconds: from 4714-11-24 00:00 BC (inclusive)
/// to 294277-01-01 00:00 (exclusive). A value outside it is a data exception in the database, so
/// a cursor carrying one (no cursor the server issued can) is malformed.
const PG_MIN_UNIX_MICROS: i128 = -210_866_803_200_000_000;
const PG_END_UNIX_MICROS: i128 = 9_224_318_016_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    All,
    Pending,
    Completed,
}

impl StatusFilter {
    /// The `is_completed` value to filter on, `None` for all.
    pub fn is_completed(self) -> Option<bool> {
        match self {
            Self::All => None,
            Self::Pending => Some(false),
            Self::Completed => Some(true),
        }
    }
}

/// A position in the list order (`created_at` DESC, `id` DESC): the last task of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: OffsetDateTime,
    pub id: Uuid,
}

impl Cursor {
    pub fn after(task: &Task) -> Self {
        Self {
            created_at: task.created_at,
            id: task.id,
        }
    }

    /// `base64url("<unix microseconds>:<uuid>")`: opaque to clients, exact to the microsecond.
    pub fn encode(&self) -> String {
        let micros = self.created_at.unix_timestamp_nanos() / 1_000;
        URL_SAFE_NO_PAD.encode(format!("{micros}:{}", self.id))
    }

    pub fn decode(raw: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(raw).ok()?;
        let text = std::str::from_utf8(&bytes).ok()?;
        let (micros, id) = text.split_once(':')?;
        let micros: i128 = micros.parse().ok()?;
        if !(PG_MIN_UNIX_MICROS..PG_END_UNIX_MICROS).contains(&micros) {
            return None;
        }
        let created_at =
            OffsetDateTime::from_unix_timestamp_nanos(micros.checked_mul(1_000)?).ok()?;
        Some(Self {
            created_at,
            id: Uuid::parse_str(id).ok()?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub status: StatusFilter,
    pub limit: i64,
    pub after: Option<Cursor>,
}

impl ListQuery {
    /// Parses the raw query string. Unknown parameters are ignored (cache busters, tracking);
    /// a repeated parameter takes its last value.
    pub fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let mut parsed = Self {
            status: StatusFilter::All,
            limit: DEFAULT_LIMIT,
            after: None,
        };
        for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match key.as_ref() {
                "status" => {
                    parsed.status = match value.as_ref() {
                        "all" => StatusFilter::All,
                        "pending" => StatusFilter::Pending,
                        "completed" => StatusFilter::Completed,
                        _ => {
                            return Err(ApiError::invalid_field(
                                "status",
                                "status must be one of: all, pending, completed",
                            ));
                        }
                    }
                }
                "limit" => parsed.limit = parse_limit(&value)?,
                "cursor" => {
                    parsed.after = Some(Cursor::decode(&value).ok_or_else(|| {
                        ApiError::invalid_field("cursor", "cursor is not a valid page cursor")
                    })?);
                }
                _ => {}
            }
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn defaults_and_values() {
        let q = ListQuery::parse(None).unwrap();
        assert_eq!((q.status, q.limit, q.after), (StatusFilter::All, 100, None));
        let q = ListQuery::parse(Some("status=completed&limit=500&utm=x")).unwrap();
        assert_eq!((q.status, q.limit), (StatusFilter::Completed, 500));
        assert_eq!(ListQuery::parse(Some("limit=1")).unwrap().limit, 1);
    }

    #[test]
    fn bad_parameters_name_their_field() {
        for (query, name) in [
            ("status=done", "status"),
            ("status=", "status"),
            ("limit=0", "limit"),
            ("limit=501", "limit"),
            ("limit=ten", "limit"),
            ("limit=", "limit"),
            ("limit=1.5", "limit"),
            ("limit=-1", "limit"),
            ("limit=9223372036854775807", "limit"),
            ("limit=99999999999999999999999", "limit"),
            ("cursor=zzz", "cursor"),
            ("cursor=", "cursor"),
        ] {
            let err = ListQuery::parse(Some(query)).unwrap_err();
            assert_eq!(err.validation_field().as_deref(), Some(name), "{query}");
        }
    }

    #[test]
    fn cursor_round_trips_exactly() {
        let cursor = Cursor {
            created_at: datetime!(2026-11-27 18:21:22.639123 UTC),
            id: Uuid::now_v7(),
        };
        let encoded = cursor.encode();
        assert!(
            encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(Cursor::decode(&encoded), Some(cursor));
        let query = format!("cursor={encoded}");
        assert_eq!(ListQuery::parse(Some(&query)).unwrap().after, Some(cursor));
    }

    fn raw_cursor(micros: impl std::fmt::Display) -> String {
        URL_SAFE_NO_PAD.encode(format!("{micros}:{}", Uuid::nil()))
    }

    #[test]
    fn cursor_timestamps_stay_within_postgresql_range() {
        let first = Cursor::decode(&raw_cursor(PG_MIN_UNIX_MICROS)).expect("earliest");
        assert_eq!(first.created_at, datetime!(-4713-11-24 0:00 UTC));
        assert_eq!(Cursor::decode(&raw_cursor(PG_MIN_UNIX_MICROS - 1)), None);
        let last = datetime!(9999-12-31 23:59:59.999999 UTC);
        let micros = last.unix_timestamp_nanos() / 1_000;
        assert_eq!(
            Cursor::decode(&raw_cursor(micros)).unwrap().created_at,
            last
        );
        // Year 10000 and beyond, huge and malformed numbers: never reach the database.
        for micros in [
            (micros + 1).to_string(),
            (PG_END_UNIX_MICROS - 1).to_string(),
            i64::MIN.to_string(),
            i128::MAX.to_string(),
            "9".repeat(60),
            "1e9".to_owned(),
            String::new(),
        ] {
            assert_eq!(Cursor::decode(&raw_cursor(&micros)), None, "{micros}");
        }
    }
}
