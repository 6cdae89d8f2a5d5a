//! Tokens that verified, remembered until they would stop verifying.
//!
//! A browser sends the same Better Auth token for up to 15 minutes, and an EdDSA check costs
//! ~50 µs: a quarter of the local server's throughput under load. A token that verified is
//! answered from here, without header parsing, key lookup, signature or claim checks, until
//! the moment the full check would refuse it.
//!
//! - **Lifetime.** An entry is used while `nbf − leeway ≤ now ≤ exp + leeway` — exactly the
//!   window in which `jsonwebtoken` accepts the token (same clock, same whole seconds, same
//!   reading of `exp`/`nbf`, see [`numeric_date`]). Afterwards it is a miss, and the full check
//!   refuses the token. `iat` is not checked, here as there.
//! - **Key.** The whole token. The map hashes it (SipHash, randomly keyed per process) and then
//!   compares the full bytes, so a hit is only ever the very token that verified: no false hits,
//!   and no reliance on a cryptographic hash being collision-free. Hashing an 8 KiB key costs
//!   less than a microsecond; a separate digest would save nothing.
//! - **Only successes.** Nothing is remembered about a refused token (wrong signature, unknown
//!   key, JWKS outage…): it is checked in full every time. Success is never inferred from
//!   anything but a completed check of these exact bytes.
//! - **Keys rotating or disappearing.** A remembered success stays valid until `exp + leeway`
//!   even if its signing key leaves the JWKS. That matches what can be done anyway: Better Auth
//!   keeps rotated keys published for a grace period (30 days) far longer than a token's 15
//!   minutes, and a JWT cannot be revoked before its `exp`. Issuer and audience are fixed for
//!   the life of the process, so they are not part of the key.
//! - **Bounded.** At most [`CAPACITY`] entries and [`MAX_BYTES`] of token and identity text.
//!   A Lambda instance serves one request at a time and sees few users during its life; the
//!   local server sees many (the load benchmark: 100). 1,024 covers both with room to spare.
//!   Tokens are at most 8 KiB (`MAX_TOKEN_BYTES`), so the byte budget, not the entry count,
//!   caps the worst case: 8 MiB of text plus ~100 bytes of bookkeeping per entry (~0.1 MiB).
//!   Real tokens are ~0.5–1 KiB, so 1,024 of them take about 1 MiB.
//! - **Eviction** when full: entries past their lifetime go first (a sweep of the map, at most
//!   once per second), then the oldest inserted (FIFO, O(1)). Tokens come from one issuer with
//!   one lifetime, so insertion order is close to expiry order anyway.
//! - **Threads.** One `std` mutex, held for a map lookup or insert; never across an `.await`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;

use super::{Identity, LEEWAY_SECONDS, MAX_TOKEN_BYTES};

/// Most entries kept (see the module docs for the reasoning).
pub const CAPACITY: usize = 1024;
/// Most bytes of token and identity text kept: 1,024 tokens of the largest accepted size.
pub const MAX_BYTES: usize = CAPACITY * MAX_TOKEN_BYTES;

/// When, in Unix seconds, a verified token verifies: `from ≤ now ≤ until`, both inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    pub from: u64,
    pub until: u64,
}

impl Lifetime {
    /// The window in which `jsonwebtoken`, with our leeway, accepts a token with these claims;
    /// `None` if `exp` is missing or unreadable (such a token did not verify) or if `nbf` is
    /// present but unreadable (the validation would have refused it).
    pub fn of(exp: Option<&Value>, nbf: Option<&Value>) -> Option<Self> {
        let until = numeric_date(exp?)?.saturating_add(LEEWAY_SECONDS);
        let from = match nbf {
            Some(nbf) => numeric_date(nbf)?.saturating_sub(LEEWAY_SECONDS),
            None => 0,
        };
        Some(Self { from, until })
    }

    fn contains(&self, now: u64) -> bool {
        self.from <= now && now <= self.until
    }
}

/// A JWT NumericDate read exactly as `jsonwebtoken` 11 reads `exp` and `nbf`: a non-negative
/// integer as is, a finite non-negative float below 2^64 rounded to the nearest second, anything
/// else unreadable.
pub fn numeric_date(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64)
            .map(|f| f.round() as u64)
    })
}

struct Entry {
    identity: Identity,
    lifetime: Lifetime,
    bytes: usize,
}

#[derive(Default)]
struct State {
    entries: HashMap<Arc<str>, Entry>,
    /// Keys in insertion order; always exactly the keys of `entries`.
    order: VecDeque<Arc<str>>,
    bytes: usize,
    last_sweep: u64,
}

impl State {
    fn clear(&mut self) {
        *self = Self::default();
    }

    /// Drops every entry whose lifetime is over.
    fn sweep(&mut self, now: u64) {
        let before = self.entries.len();
        let mut freed = 0;
        self.entries.retain(|_, entry| {
            let keep = now <= entry.lifetime.until;
            if !keep {
                freed += entry.bytes;
            }
            keep
        });
        if self.entries.len() != before {
            let entries = &self.entries;
            self.order.retain(|key| entries.contains_key(key));
            self.bytes -= freed;
        }
        self.last_sweep = now;
    }

    fn evict_oldest(&mut self) {
        if let Some(key) = self.order.pop_front()
            && let Some(entry) = self.entries.remove(&key)
        {
            self.bytes -= entry.bytes;
        }
    }
}

pub struct TokenCache {
    state: Mutex<State>,
    capacity: usize,
    max_bytes: usize,
}

impl Default for TokenCache {
    fn default() -> Self {
        Self::with_limits(CAPACITY, MAX_BYTES)
    }
}

impl TokenCache {
    pub fn with_limits(capacity: usize, max_bytes: usize) -> Self {
        Self {
            state: Mutex::default(),
            capacity,
            max_bytes,
        }
    }

    /// The identity `token` verified as, if it did and still would at `now` (Unix seconds).
    pub fn get(&self, token: &str, now: u64) -> Option<Identity> {
        let state = self.lock();
        let entry = state.entries.get(token)?;
        entry.lifetime.contains(now).then(|| entry.identity.clone())
    }

    /// Remembers that `token` verified as `identity`, valid during `lifetime`. Call only after a
    /// complete, successful verification of these exact bytes.
    pub fn insert(&self, token: &str, identity: &Identity, lifetime: Lifetime, now: u64) {
        let bytes =
            token.len() + identity.user_id.len() + identity.email.as_ref().map_or(0, String::len);
        if !lifetime.contains(now) || token.len() > MAX_TOKEN_BYTES || bytes > self.max_bytes {
            return;
        }
        let entry = Entry {
            identity: identity.clone(),
            lifetime,
            bytes,
        };
        let mut state = self.lock();
        // Two requests with the same new token may both have verified it: keep one entry.
        if let Some(existing) = state.entries.get_mut(token) {
            let old = std::mem::replace(existing, entry);
            state.bytes = state.bytes - old.bytes + bytes;
            return;
        }
        let full = |s: &State| s.entries.len() >= self.capacity || s.bytes + bytes > self.max_bytes;
        if full(&state) && state.last_sweep < now {
            state.sweep(now);
        }
        while full(&state) && !state.entries.is_empty() {
            state.evict_oldest();
        }
        if state.entries.len() >= self.capacity {
            return; // capacity 0
        }
        let key: Arc<str> = Arc::from(token);
        state.order.push_back(key.clone());
        state.entries.insert(key, entry);
        state.bytes += bytes;
    }

    /// Entries held (expired ones included until evicted).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of token and identity text held.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// The state; after a panic elsewhere while it was held, an empty one (a cache may forget).
    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => {
                let mut state = poisoned.into_inner();
                state.clear();
                self.state.clear_poison();
                state
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_800_000_000;

    fn alice() -> Identity {
        Identity {
            user_id: "alice".into(),
            email: Some("alice@example.com".into()),
        }
    }

    fn for_minutes(minutes: u64) -> Lifetime {
        Lifetime {
            from: 0,
            until: NOW + minutes * 60,
        }
    }

    #[test]
    fn lifetime_is_the_window_jsonwebtoken_accepts() {
        let exp = json!(NOW);
        let lifetime = Lifetime::of(Some(&exp), None).unwrap();
        assert_eq!(
            lifetime,
            Lifetime {
                from: 0,
                until: NOW + LEEWAY_SECONDS
            }
        );
        let nbf = json!(NOW);
        let lifetime = Lifetime::of(Some(&exp), Some(&nbf)).unwrap();
        assert_eq!(lifetime.from, NOW - LEEWAY_SECONDS);
        // Floats round like jsonwebtoken's NumericDate; unreadable values give no lifetime.
        assert_eq!(numeric_date(&json!(1.5)), Some(2));
        assert_eq!(numeric_date(&json!(1.4)), Some(1));
        for bad in [json!(-1), json!(-0.5), json!("1"), json!(null), json!(1e30)] {
            assert_eq!(numeric_date(&bad), None, "{bad}");
        }
        assert_eq!(Lifetime::of(None, None), None);
        assert_eq!(Lifetime::of(Some(&exp), Some(&json!("soon"))), None);
        // No overflow at the edges.
        let huge = json!(u64::MAX);
        assert_eq!(Lifetime::of(Some(&huge), None).unwrap().until, u64::MAX);
    }

    #[test]
    fn hit_until_exp_plus_leeway_then_miss() {
        let cache = TokenCache::default();
        let lifetime = Lifetime {
            from: NOW - 10,
            until: NOW + 100,
        };
        cache.insert("t", &alice(), lifetime, NOW);
        assert_eq!(cache.get("t", NOW), Some(alice()));
        assert_eq!(
            cache.get("t", NOW + 100),
            Some(alice()),
            "last second included"
        );
        assert_eq!(cache.get("t", NOW + 101), None);
        assert_eq!(
            cache.get("t", NOW - 11),
            None,
            "clock went back before nbf − leeway"
        );
        assert_eq!(cache.get("u", NOW), None);
        assert_eq!(cache.get("", NOW), None);
    }

    #[test]
    fn full_token_compared_not_a_prefix_or_hash() {
        let cache = TokenCache::default();
        cache.insert("abc.def.ghi", &alice(), for_minutes(15), NOW);
        for other in ["abc.def.gh", "abc.def.ghi ", "abc.def.ghI", "abc.def.ghj"] {
            assert_eq!(cache.get(other, NOW), None, "{other}");
        }
    }

    #[test]
    fn nothing_outside_its_lifetime_or_too_large_is_inserted() {
        let cache = TokenCache::default();
        cache.insert(
            "expired",
            &alice(),
            Lifetime {
                from: 0,
                until: NOW - 1,
            },
            NOW,
        );
        cache.insert(
            "early",
            &alice(),
            Lifetime {
                from: NOW + 1,
                until: NOW + 9,
            },
            NOW,
        );
        cache.insert(
            &"x".repeat(MAX_TOKEN_BYTES + 1),
            &alice(),
            for_minutes(1),
            NOW,
        );
        assert!(cache.is_empty());
        let largest = "x".repeat(MAX_TOKEN_BYTES);
        cache.insert(&largest, &alice(), for_minutes(1), NOW);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn capacity_bound_holds_oldest_evicted_first() {
        let cache = TokenCache::with_limits(8, MAX_BYTES);
        for i in 0..100 {
            cache.insert(&format!("token-{i}"), &alice(), for_minutes(15), NOW);
            assert!(cache.len() <= 8);
        }
        assert_eq!(cache.len(), 8);
        assert_eq!(cache.get("token-91", NOW), None);
        for i in 92..100 {
            assert_eq!(cache.get(&format!("token-{i}"), NOW), Some(alice()), "{i}");
        }
        // Re-inserting a present token replaces it in place: nothing evicted.
        cache.insert("token-92", &alice(), for_minutes(15), NOW);
        assert_eq!(cache.get("token-92", NOW), Some(alice()));
        assert_eq!(cache.len(), 8);
    }

    #[test]
    fn expired_entries_are_evicted_before_live_ones() {
        let cache = TokenCache::with_limits(4, MAX_BYTES);
        cache.insert("live-old", &alice(), for_minutes(60), NOW);
        cache.insert("short-1", &alice(), for_minutes(1), NOW);
        cache.insert("short-2", &alice(), for_minutes(1), NOW);
        cache.insert("live", &alice(), for_minutes(60), NOW);
        let later = NOW + 120;
        cache.insert("new", &alice(), for_minutes(60), later);
        assert_eq!(cache.len(), 3, "both expired entries swept");
        for live in ["live-old", "live", "new"] {
            assert_eq!(cache.get(live, later), Some(alice()), "{live}");
        }
    }

    #[test]
    fn byte_budget_bounds_memory() {
        let token = "t".repeat(1000);
        let per_entry = 1000 + "alice".len() + "alice@example.com".len();
        let cache = TokenCache::with_limits(CAPACITY, 3 * per_entry);
        for i in 0..10 {
            let token = format!("{i}{}", &token[1..]);
            cache.insert(&token, &alice(), for_minutes(15), NOW);
            assert!(cache.bytes() <= 3 * per_entry);
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.bytes(), 3 * per_entry);
        // The default worst case: every entry at the largest accepted size.
        let cache = TokenCache::default();
        for i in 0..CAPACITY + 10 {
            let mut token = format!("{i}-");
            token.push_str(&"x".repeat(MAX_TOKEN_BYTES - token.len()));
            cache.insert(&token, &alice(), for_minutes(15), NOW);
        }
        assert!(cache.bytes() <= MAX_BYTES);
        assert!(cache.len() < CAPACITY, "the byte budget binds first");
    }

    #[test]
    fn shared_across_threads() {
        let cache = Arc::new(TokenCache::with_limits(64, MAX_BYTES));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let cache = cache.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        let token = format!("{t}-{}", i % 40);
                        if cache.get(&token, NOW).is_none() {
                            cache.insert(&token, &alice(), for_minutes(15), NOW);
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert!(cache.len() <= 64);
        let state = cache.lock();
        assert_eq!(state.order.len(), state.entries.len());
        assert_eq!(
            state.bytes,
            state.entries.values().map(|e| e.bytes).sum::<usize>()
        );
    }
}
