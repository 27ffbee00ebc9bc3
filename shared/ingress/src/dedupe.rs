//! Remembering recent verified deliveries, so a replay or a duplicate does not drain twice
//! (CATALOGUE W10, P5, P6).
//!
//! The key is the verified `webhook-id`; the value is the SHA-256 of the raw body. The
//! timestamp is deliberately not part of the match: the sender regenerates it on every retry of
//! one event (PROTOCOL.md §10.4), so "same id, same body" is the same event whatever its
//! timestamp. A reused id with a different body is *not* merged (W12): it is reported as
//! [`Seen::Reused`], acted on, and logged as an anomaly, because the id is advisory and the
//! queue's claim is what really prevents double execution.
//!
//! Bounded in entries and in age; the oldest entry goes first when full.

use std::collections::{HashMap, VecDeque, hash_map};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// What the cache knew about a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not seen before (or forgotten): act on it.
    New,
    /// Same id and same body as a remembered delivery: acknowledge without acting.
    Duplicate,
    /// Same id, different body: the sender reused an id. Act on it and raise an anomaly.
    Reused,
}

struct Entry {
    body_hash: [u8; 32],
    at: Instant,
}

struct Inner {
    /// Keys are shared with `order`: one allocation per remembered delivery.
    entries: HashMap<Arc<str>, Entry>,
    /// Insertion order, for eviction; may hold ids already replaced or forgotten.
    order: VecDeque<(Arc<str>, Instant)>,
}

/// A bounded, time-limited memory of verified deliveries.
pub struct RecentDeliveries {
    capacity: usize,
    ttl: Duration,
    inner: Mutex<Inner>,
}

/// SHA-256 of a body, the value deliveries are compared on.
pub fn body_hash(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

impl RecentDeliveries {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        RecentDeliveries {
            capacity: capacity.max(1),
            ttl,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The maps stay consistent between statements, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Looks `id` up and remembers this delivery. Check and insert are one step, so of many
    /// concurrent copies exactly one sees [`Seen::New`].
    pub fn check_and_remember(&self, id: &str, body_hash: [u8; 32]) -> Seen {
        let now = Instant::now();
        let mut inner = self.lock();
        self.evict(&mut inner, now);
        // One lookup: the key is allocated first, which a new delivery (the usual case) needs
        // anyway.
        let id: Arc<str> = Arc::from(id);
        let seen = match inner.entries.entry(Arc::clone(&id)) {
            hash_map::Entry::Occupied(e) if e.get().body_hash == body_hash => {
                return Seen::Duplicate;
            }
            hash_map::Entry::Occupied(mut e) => {
                e.insert(Entry { body_hash, at: now });
                Seen::Reused
            }
            hash_map::Entry::Vacant(e) => {
                e.insert(Entry { body_hash, at: now });
                Seen::New
            }
        };
        inner.order.push_back((id, now));
        seen
    }

    /// Forgets a delivery that was not acted on after all (it was answered 503, so the sender
    /// retries it and the retry must drain). Only the entry with this body is removed.
    pub fn forget(&self, id: &str, body_hash: [u8; 32]) {
        let mut inner = self.lock();
        if inner
            .entries
            .get(id)
            .is_some_and(|e| e.body_hash == body_hash)
        {
            inner.entries.remove(id);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn evict(&self, inner: &mut Inner, now: Instant) {
        while let Some(&(_, at)) = inner.order.front() {
            let expired = now.duration_since(at) >= self.ttl;
            let full = inner.entries.len() >= self.capacity;
            if !expired && !full && inner.order.len() <= self.capacity.saturating_mul(2) {
                break;
            }
            let Some((id, at)) = inner.order.pop_front() else {
                break;
            };
            // Only remove the entry this order record created, not a newer one with the same id.
            if let hash_map::Entry::Occupied(e) = inner.entries.entry(id)
                && e.get().at == at
            {
                e.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_id_same_body_is_a_duplicate_and_a_new_body_is_reuse() {
        let d = RecentDeliveries::new(10, Duration::from_secs(60));
        let a = body_hash(b"a");
        assert_eq!(d.check_and_remember("whe_1", a), Seen::New);
        assert_eq!(d.check_and_remember("whe_1", a), Seen::Duplicate);
        assert_eq!(d.check_and_remember("whe_1", body_hash(b"b")), Seen::Reused);
        // The reused body is now remembered too.
        assert_eq!(
            d.check_and_remember("whe_1", body_hash(b"b")),
            Seen::Duplicate
        );
        assert_eq!(d.check_and_remember("whe_2", a), Seen::New);
    }

    #[test]
    fn forgotten_deliveries_are_new_again() {
        let d = RecentDeliveries::new(10, Duration::from_secs(60));
        let a = body_hash(b"a");
        d.check_and_remember("whe_1", a);
        d.forget("whe_1", body_hash(b"other"));
        assert_eq!(d.check_and_remember("whe_1", a), Seen::Duplicate);
        d.forget("whe_1", a);
        assert_eq!(d.check_and_remember("whe_1", a), Seen::New);
    }

    #[test]
    fn bounded_in_entries_and_age() {
        let d = RecentDeliveries::new(3, Duration::from_secs(60));
        for i in 0..10 {
            d.check_and_remember(&format!("whe_{i}"), body_hash(b"x"));
        }
        assert!(d.len() <= 3, "{}", d.len());
        assert_eq!(
            d.check_and_remember("whe_9", body_hash(b"x")),
            Seen::Duplicate
        );
        assert_eq!(d.check_and_remember("whe_0", body_hash(b"x")), Seen::New);

        let d = RecentDeliveries::new(10, Duration::ZERO);
        d.check_and_remember("whe_1", body_hash(b"x"));
        assert_eq!(d.check_and_remember("whe_1", body_hash(b"x")), Seen::New);
    }
}
