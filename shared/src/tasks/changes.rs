//! Incremental sync (`GET /api/changes`, CONTRACT 1.2): the query, the opaque `since` token and
//! the page.
//!
//! # Positions
//!
//! Every committed, successful write moves its user's counter (`users.change_seq`) by one and
//! stamps the task (`tasks.change_seq`) or its deletion record (`task_deletions`) with the new
//! value (`migrations/V7__change_feed.sql`). The counter is moved by an `UPDATE` of the user's
//! row, so a write holds that row's lock from taking its position until it commits: position
//! N+1 cannot commit before N, and a reader that sees the counter at N sees every change up to
//! N. A page is read in one snapshot (one call of `tasks_changes_v1`): the changes after the
//! token's position in position order, and the counter. Its `next_token` holds the last
//! listed position when there is more, else the counter, so nothing at or below it can still
//! appear, and a page with nothing new repeats a position at least `since`'s.
//!
//! # Tokens
//!
//! `base64url([version][started: u64][position: u64][tag: 8 bytes])`, the tag being SHA-256 of a
//! fixed label, the other fields and the user id, truncated. A token that does not decode, or
//! whose tag does not match the requesting user, is 400: the tag is a checksum against mixed-up
//! and mangled tokens, not a secret (the positions are the user's own; isolation lives in the
//! SQL, which only ever reads the requesting user's rows). A position or start beyond the
//! user's counter is 400 too: no token this server issued to this user can hold one.
//!
//! # History and 410
//!
//! Deletions are kept for `CHANGES_RETENTION_SECONDS` and then purged by the writes of their
//! user, which raise `users.history_purged_through` to the highest purged position. A holder of
//! position P needs every deletion after P, so its token is expired when
//! `history_purged_through > P`. `started` is where a sync from scratch began: the counter read
//! by its first page. A deletion at or before it removed a task that none of that sync's pages
//! could list (each page's snapshot is later), so the sync never needs it: its pages skip such
//! deletions, and its token is expired only when `history_purged_through > max(P, started)`.
//! Hence the pages after the first are never 410 because of history purged while the sync ran,
//! unless a deletion made after it started is itself older than the retention, i.e. the sync
//! ran longer than the retention. Once a sync has caught up, its position is at least
//! `started`, and `started` no longer matters.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::Serialize;
use uuid::Uuid;

use super::list::{DEFAULT_LIMIT, parse_limit};
use super::model::Task;
use crate::http::ApiError;

const TOKEN_VERSION: u8 = 1;
const TOKEN_LABEL: &[u8] = b"tasks-api sync token\0";
const TAG_BYTES: usize = 8;
const TOKEN_BYTES: usize = 1 + 8 + 8 + TAG_BYTES;

/// Where a client stands in its user's changes (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncToken {
    /// The counter when the sync from scratch that led here began.
    pub started: i64,
    /// The position of the last change the holder has seen.
    pub position: i64,
}

impl SyncToken {
    pub fn encode(&self, user_id: &str) -> String {
        let mut bytes = Vec::with_capacity(TOKEN_BYTES);
        bytes.push(TOKEN_VERSION);
        bytes.extend_from_slice(&self.started.to_be_bytes());
        bytes.extend_from_slice(&self.position.to_be_bytes());
        bytes.extend_from_slice(&tag(&bytes, user_id));
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The token, if `raw` is one this server issues and it belongs to `user_id`.
    pub fn decode(raw: &str, user_id: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(raw).ok()?;
        if bytes.len() != TOKEN_BYTES || bytes[0] != TOKEN_VERSION {
            return None;
        }
        let (fields, given_tag) = bytes.split_at(TOKEN_BYTES - TAG_BYTES);
        if tag(fields, user_id) != given_tag {
            return None;
        }
        let number = |at: usize| {
            let raw: [u8; 8] = fields.get(at..at + 8)?.try_into().ok()?;
            Some(i64::from_be_bytes(raw)).filter(|n| *n >= 0)
        };
        Some(Self {
            started: number(1)?,
            position: number(9)?,
        })
    }
}

fn tag(fields: &[u8], user_id: &str) -> [u8; TAG_BYTES] {
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    hash.update(TOKEN_LABEL);
    hash.update(fields);
    hash.update(user_id.as_bytes());
    let mut tag = [0; TAG_BYTES];
    tag.copy_from_slice(&hash.finish().as_ref()[..TAG_BYTES]);
    tag
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangesQuery {
    /// `None`: from scratch.
    pub since: Option<SyncToken>,
    pub limit: i64,
}

impl ChangesQuery {
    /// Parses the raw query string for `user_id` (tokens are bound to their user). Unknown
    /// parameters are ignored and a repeated one takes its last value, as for the list.
    pub fn parse(query: Option<&str>, user_id: &str) -> Result<Self, ApiError> {
        let mut parsed = Self {
            since: None,
            limit: DEFAULT_LIMIT,
        };
        for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match key.as_ref() {
                "limit" => parsed.limit = parse_limit(&value)?,
                "since" => {
                    parsed.since =
                        Some(SyncToken::decode(&value, user_id).ok_or_else(invalid_since)?);
                }
                _ => {}
            }
        }
        Ok(parsed)
    }
}

fn invalid_since() -> ApiError {
    ApiError::invalid_field("since", "since is not a sync token issued to this user")
}

/// One change as the client applies it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Change {
    Upsert { task: Task },
    Delete { id: Uuid },
}

/// What one page read found, in one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangesRead {
    /// The user's counter: the position of their latest committed change (0: none).
    pub latest: i64,
    /// The token's `started`, or the counter when the sync starts from scratch.
    pub started: i64,
    /// The highest position of a purged deletion record.
    pub purged_through: i64,
    /// Up to `limit + 1` changes after the token's position, in position order.
    pub changes: Vec<(i64, Change)>,
}

/// `{"data":[Change…],"count","next_token","has_more","message"}`.
#[derive(Debug, Serialize)]
pub struct ChangesPage {
    pub data: Vec<Change>,
    pub count: usize,
    pub next_token: String,
    pub has_more: bool,
    pub message: &'static str,
}

impl ChangesPage {
    /// The page for `read`, after the checks that need the user's positions: a token ahead of
    /// the counter is 400, one older than the kept history 410 (in the contract's order).
    pub fn build(query: &ChangesQuery, read: ChangesRead, user_id: &str) -> Result<Self, ApiError> {
        if let Some(token) = query.since {
            if token.position > read.latest || token.started > read.latest {
                return Err(invalid_since());
            }
            if read.purged_through > token.position.max(token.started) {
                return Err(ApiError::SyncTokenExpired);
            }
        }
        let mut changes = read.changes;
        let limit = usize::try_from(query.limit).unwrap_or(usize::MAX);
        let has_more = changes.len() > limit;
        changes.truncate(limit);
        let position = match changes.last() {
            Some((position, _)) if has_more => *position,
            _ => read.latest,
        };
        let next_token = SyncToken {
            started: read.started,
            position,
        }
        .encode(user_id);
        let data: Vec<Change> = changes.into_iter().map(|(_, change)| change).collect();
        Ok(Self {
            count: data.len(),
            data,
            next_token,
            has_more,
            message: "Changes retrieved successfully",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_for_their_user_only() {
        let token = SyncToken {
            started: 7,
            position: 42,
        };
        let encoded = token.encode("alice");
        assert!(
            encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(SyncToken::decode(&encoded, "alice"), Some(token));
        assert_eq!(SyncToken::decode(&encoded, "bob"), None);
        let query = ChangesQuery::parse(Some(&format!("since={encoded}&limit=3")), "alice");
        assert_eq!(
            query.unwrap(),
            ChangesQuery {
                since: Some(token),
                limit: 3
            }
        );
    }

    #[test]
    fn altered_or_malformed_tokens_are_refused() {
        let encoded = SyncToken {
            started: 0,
            position: 5,
        }
        .encode("alice");
        let mut bytes = URL_SAFE_NO_PAD.decode(&encoded).unwrap();
        bytes[16] ^= 1;
        let altered = URL_SAFE_NO_PAD.encode(&bytes);
        let negative = {
            let mut fields = vec![TOKEN_VERSION];
            fields.extend_from_slice(&(-1i64).to_be_bytes());
            fields.extend_from_slice(&5i64.to_be_bytes());
            fields.extend_from_slice(&tag(&fields, "alice"));
            URL_SAFE_NO_PAD.encode(fields)
        };
        for raw in [
            altered.as_str(),
            negative.as_str(),
            "",
            "zzz",
            "!!",
            &encoded[..encoded.len() - 1],
            &format!("{encoded}AA"),
        ] {
            assert_eq!(SyncToken::decode(raw, "alice"), None, "{raw}");
            let err = ChangesQuery::parse(Some(&format!("since={raw}")), "alice").unwrap_err();
            assert_eq!(err.validation_field().as_deref(), Some("since"), "{raw}");
        }
    }

    #[test]
    fn bad_limits_name_their_field() {
        for limit in ["0", "501", "-1", "x", "", "1.5", "99999999999999999999"] {
            let err = ChangesQuery::parse(Some(&format!("limit={limit}")), "u").unwrap_err();
            assert_eq!(err.validation_field().as_deref(), Some("limit"), "{limit}");
        }
        assert_eq!(ChangesQuery::parse(None, "u").unwrap().limit, 100);
        assert_eq!(
            ChangesQuery::parse(Some("limit=500"), "u").unwrap().limit,
            500
        );
    }

    fn read(latest: i64, started: i64, purged_through: i64, positions: &[i64]) -> ChangesRead {
        ChangesRead {
            latest,
            started,
            purged_through,
            changes: positions
                .iter()
                .map(|p| (*p, Change::Delete { id: Uuid::nil() }))
                .collect(),
        }
    }

    fn query(since: Option<(i64, i64)>, limit: i64) -> ChangesQuery {
        ChangesQuery {
            since: since.map(|(started, position)| SyncToken { started, position }),
            limit,
        }
    }

    fn next(page: &ChangesPage) -> SyncToken {
        SyncToken::decode(&page.next_token, "u").unwrap()
    }

    #[test]
    fn next_token_is_the_last_listed_position_or_the_counter() {
        let page = ChangesPage::build(&query(None, 2), read(9, 9, 0, &[3, 5, 8]), "u").unwrap();
        assert!(page.has_more);
        assert_eq!((page.count, next(&page).position), (2, 5));
        assert_eq!(next(&page).started, 9);
        let page = ChangesPage::build(&query(Some((9, 5)), 2), read(9, 9, 0, &[8]), "u").unwrap();
        assert!(!page.has_more);
        assert_eq!((page.count, next(&page).position), (1, 9));
        let empty = ChangesPage::build(&query(Some((9, 9)), 2), read(9, 9, 0, &[]), "u").unwrap();
        assert_eq!(
            (empty.count, empty.has_more, next(&empty).position),
            (0, false, 9)
        );
    }

    #[test]
    fn tokens_ahead_are_400_and_beyond_the_history_410() {
        let err = ChangesPage::build(&query(Some((0, 10)), 5), read(9, 0, 0, &[]), "u");
        assert_eq!(
            err.unwrap_err().validation_field().as_deref(),
            Some("since")
        );
        let err = ChangesPage::build(&query(Some((10, 0)), 5), read(9, 10, 0, &[]), "u");
        assert_eq!(
            err.unwrap_err().validation_field().as_deref(),
            Some("since")
        );
        let expired = ChangesPage::build(&query(Some((0, 4)), 5), read(9, 0, 5, &[]), "u");
        assert!(matches!(expired, Err(ApiError::SyncTokenExpired)));
        // A sync from scratch that started at 6 needs no deletion at or before 6.
        let page = ChangesPage::build(&query(Some((6, 4)), 5), read(9, 6, 5, &[]), "u");
        assert!(page.is_ok());
        let at_the_mark = ChangesPage::build(&query(Some((0, 5)), 5), read(9, 0, 5, &[]), "u");
        assert!(at_the_mark.is_ok());
    }
}
