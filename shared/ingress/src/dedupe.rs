//! Remembering recent verified deliveries, so a replay or a duplicate does not drain twice
//! (CATALOGUE W10, P5, P6).
//!
//! The key is the verified `webhook-id`, compared exactly; the value is a fingerprint of the raw
//! body. The timestamp is deliberately not part of the match: the sender regenerates it on every
//! retry of one event (PROTOCOL.md §10.4), so "same id, same body" is the same event whatever its
//! timestamp. A reused id with a different body is *not* merged (W12): it is reported as
//! [`Seen::Reused`], acted on, and logged as an anomaly, because the id is advisory and the
//! queue's claim is what really prevents double execution.
//!
//! Bounded in entries and in age; the oldest entry goes first when full.
//!
//! Every delivery passes through here, so the layout is chosen for it (tests/bench/webhook):
//! - entries live in a ring in arrival order, ids inline when short (the sender's are 36
//!   bytes), so remembering one allocates nothing and evicting the oldest reads the ring's head,
//!   memory the previous evictions just touched;
//! - the index from id to ring position holds 4-byte positions (about 80 KiB for 10,000
//!   entries), where a map owning its keys took 64 bytes a bucket plus an allocation a key, and
//!   had each eviction chase a pointer to a key allocated thousands of deliveries earlier;
//! - the body's fingerprint is its length and a keyed 64-bit hash ([`foldhash`], a seed drawn
//!   at random per process), not a SHA-256: the bodies compared are authentic (verified before
//!   they get here), so nobody but the sender chooses them, and the only thing a collision
//!   could do (a reused id's new body taken for its old one, about 2^-64 for a given pair) is
//!   hold that wake-up back until the next periodic drain, which the webhook path is built to
//!   survive since deliveries get lost anyway.

use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use foldhash::quality::RandomState;
use hashbrown::HashTable;

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

/// What two bodies are compared on: the length and a keyed hash of the bytes, from
/// [`RecentDeliveries::body_print`] (the key is per cache, so prints of two caches differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyPrint {
    len: usize,
    hash: u64,
}

/// Ids up to this many bytes are stored inline; the sender's are `whe_` and 32 hex digits.
const INLINE_ID_BYTES: usize = 46;

/// A remembered `webhook-id`, exactly. Longer ids (up to the verifier's 256 bytes) are rare
/// enough to be allocated.
enum StoredId {
    Inline {
        len: u8,
        bytes: [u8; INLINE_ID_BYTES],
    },
    Heap(Box<[u8]>),
}

impl StoredId {
    fn new(id: &[u8]) -> Self {
        let mut bytes = [0; INLINE_ID_BYTES];
        match (bytes.get_mut(..id.len()), u8::try_from(id.len())) {
            (Some(inline), Ok(len)) => {
                inline.copy_from_slice(id);
                StoredId::Inline { len, bytes }
            }
            _ => StoredId::Heap(id.into()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            StoredId::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or(bytes),
            StoredId::Heap(id) => id,
        }
    }
}

/// One delivery in the ring.
struct Slot {
    /// The id's hash in the index, kept to find the index entry again at eviction.
    id_hash: u64,
    id: StoredId,
    body: BodyPrint,
    at: Instant,
    /// False once the entry was replaced (a reused id), forgotten or evicted: the slot only
    /// waits for its turn in the ring then.
    live: bool,
}

struct Inner {
    /// Positions in `slots` of the live entries, found by id.
    index: HashTable<u32>,
    /// The ring, in arrival order from `head`; it grows to `capacity` slots and then wraps.
    slots: Vec<Slot>,
    head: usize,
    /// Slots in use from `head` on, live or not.
    len: usize,
}

/// A bounded, time-limited memory of verified deliveries.
pub struct RecentDeliveries {
    capacity: usize,
    ttl: Duration,
    ids: RandomState,
    bodies: RandomState,
    inner: Mutex<Inner>,
}

impl RecentDeliveries {
    /// At most `capacity` deliveries (1 to `u32::MAX`), each for at most `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        let capacity = capacity.clamp(1, u32::MAX as usize);
        RecentDeliveries {
            capacity,
            ttl,
            ids: RandomState::default(),
            bodies: RandomState::default(),
            inner: Mutex::new(Inner {
                index: HashTable::new(),
                slots: Vec::new(),
                head: 0,
                len: 0,
            }),
        }
    }

    /// The fingerprint deliveries are compared on.
    pub fn body_print(&self, body: &[u8]) -> BodyPrint {
        BodyPrint {
            len: body.len(),
            hash: self.bodies.hash_one(body),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The ring and the index agree between statements, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Looks `id` up and remembers this delivery. Check and insert are one step, so of many
    /// concurrent copies exactly one sees [`Seen::New`].
    pub fn check_and_remember(&self, id: &str, body: BodyPrint) -> Seen {
        let now = Instant::now();
        let id_hash = self.ids.hash_one(id.as_bytes());
        let mut inner = self.lock();
        inner.evict_expired(now, self.ttl, self.capacity);
        let seen = match inner.find(id_hash, id.as_bytes()) {
            Some(pos) if inner.slots.get(pos).is_some_and(|s| s.body == body) => {
                return Seen::Duplicate;
            }
            Some(pos) => {
                inner.unlink(pos);
                Seen::Reused
            }
            None => Seen::New,
        };
        let slot = Slot {
            id_hash,
            id: StoredId::new(id.as_bytes()),
            body,
            at: now,
            live: true,
        };
        inner.push(slot, self.capacity);
        seen
    }

    /// Forgets a delivery that was not acted on after all (it was answered 503, so the sender
    /// retries it and the retry must drain). Only the entry with this body is removed.
    pub fn forget(&self, id: &str, body: BodyPrint) {
        let id_hash = self.ids.hash_one(id.as_bytes());
        let mut inner = self.lock();
        if let Some(pos) = inner.find(id_hash, id.as_bytes())
            && inner.slots.get(pos).is_some_and(|s| s.body == body)
        {
            inner.unlink(pos);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    /// The ring position of the live entry for `id`.
    fn find(&self, id_hash: u64, id: &[u8]) -> Option<usize> {
        let slots = &self.slots;
        self.index
            .find(id_hash, |&pos| {
                slots
                    .get(pos as usize)
                    .is_some_and(|s| s.id.as_bytes() == id)
            })
            .map(|&pos| pos as usize)
    }

    /// Takes the entry at `pos` out of the index; its slot stays in the ring, dead.
    fn unlink(&mut self, pos: usize) {
        let Some(slot) = self.slots.get_mut(pos) else {
            return;
        };
        if !slot.live {
            return;
        }
        slot.live = false;
        if let Ok(entry) = self.index.find_entry(slot.id_hash, |&p| p as usize == pos) {
            entry.remove();
        }
    }

    /// Drops the oldest slots while they are older than `ttl`.
    fn evict_expired(&mut self, now: Instant, ttl: Duration, capacity: usize) {
        while self.len > 0
            && self
                .slots
                .get(self.head)
                .is_some_and(|s| now.duration_since(s.at) >= ttl)
        {
            self.pop_oldest(capacity);
        }
    }

    fn pop_oldest(&mut self, capacity: usize) {
        self.unlink(self.head);
        self.head = (self.head + 1) % capacity;
        self.len -= 1;
    }

    /// Adds `slot` as the newest entry, evicting the oldest when the ring is full.
    fn push(&mut self, slot: Slot, capacity: usize) {
        if self.len >= capacity {
            self.pop_oldest(capacity);
        }
        let pos = (self.head + self.len) % capacity;
        let id_hash = slot.id_hash;
        // Until the ring first wraps, the next position is always the end of `slots`.
        match self.slots.get_mut(pos) {
            Some(old) => *old = slot,
            None => self.slots.push(slot),
        }
        self.len += 1;
        let slots = &self.slots;
        // `capacity` fits in a u32, so every position does.
        self.index.insert_unique(id_hash, pos as u32, |&p| {
            slots.get(p as usize).map_or(0, |s| s.id_hash)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_id_same_body_is_a_duplicate_and_a_new_body_is_reuse() {
        let d = RecentDeliveries::new(10, Duration::from_secs(60));
        let a = d.body_print(b"a");
        assert_eq!(d.check_and_remember("whe_1", a), Seen::New);
        assert_eq!(d.check_and_remember("whe_1", a), Seen::Duplicate);
        let b = d.body_print(b"b");
        assert_eq!(d.check_and_remember("whe_1", b), Seen::Reused);
        // The reused body is now remembered, in place of the first.
        assert_eq!(d.check_and_remember("whe_1", b), Seen::Duplicate);
        assert_eq!(d.check_and_remember("whe_1", a), Seen::Reused);
        assert_eq!(d.check_and_remember("whe_2", a), Seen::New);
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn bodies_differing_only_in_length_or_one_byte_differ() {
        let d = RecentDeliveries::new(10, Duration::from_secs(60));
        assert_ne!(d.body_print(b"{}"), d.body_print(b"{} "));
        assert_ne!(d.body_print(b"{\"a\":1}"), d.body_print(b"{\"a\":2}"));
        assert_eq!(d.body_print(b"{\"a\":1}"), d.body_print(b"{\"a\":1}"));
    }

    #[test]
    fn forgotten_deliveries_are_new_again() {
        let d = RecentDeliveries::new(10, Duration::from_secs(60));
        let a = d.body_print(b"a");
        d.check_and_remember("whe_1", a);
        d.forget("whe_1", d.body_print(b"other"));
        assert_eq!(d.check_and_remember("whe_1", a), Seen::Duplicate);
        d.forget("whe_1", a);
        assert!(d.is_empty());
        assert_eq!(d.check_and_remember("whe_1", a), Seen::New);
    }

    #[test]
    fn bounded_in_entries_and_age() {
        let d = RecentDeliveries::new(3, Duration::from_secs(60));
        let x = d.body_print(b"x");
        for i in 0..10 {
            d.check_and_remember(&format!("whe_{i}"), x);
        }
        assert_eq!(d.len(), 3);
        assert_eq!(d.check_and_remember("whe_9", x), Seen::Duplicate);
        assert_eq!(d.check_and_remember("whe_7", x), Seen::Duplicate);
        assert_eq!(d.check_and_remember("whe_6", x), Seen::New);
        // Remembering whe_6 evicted the oldest, whe_7.
        assert_eq!(d.check_and_remember("whe_8", x), Seen::Duplicate);
        assert_eq!(d.check_and_remember("whe_7", x), Seen::New);

        let d = RecentDeliveries::new(10, Duration::ZERO);
        d.check_and_remember("whe_1", x);
        assert_eq!(d.check_and_remember("whe_1", x), Seen::New);
    }

    #[test]
    fn ids_are_compared_exactly_inline_or_not() {
        let d = RecentDeliveries::new(10, Duration::from_secs(60));
        let x = d.body_print(b"x");
        let long = "w".repeat(200);
        let edge = "e".repeat(INLINE_ID_BYTES);
        let past = "e".repeat(INLINE_ID_BYTES + 1);
        for id in [long.as_str(), edge.as_str(), past.as_str(), "", "whe_1"] {
            assert_eq!(d.check_and_remember(id, x), Seen::New, "{id}");
        }
        for id in [long.as_str(), edge.as_str(), past.as_str(), "", "whe_1"] {
            assert_eq!(d.check_and_remember(id, x), Seen::Duplicate, "{id}");
        }
        assert_eq!(d.check_and_remember(&long[1..], x), Seen::New);
        assert_eq!(d.check_and_remember("whe_", x), Seen::New);
    }

    /// The ring and its index against a plain model, over long random runs with a small
    /// capacity: wrapping, evictions of live and dead slots, reuse and forgetting.
    #[test]
    fn agrees_with_a_model_through_wraps_reuse_and_forgetting() {
        use std::collections::VecDeque;

        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for capacity in [1_usize, 2, 5, 16] {
            let d = RecentDeliveries::new(capacity, Duration::from_secs(3600));
            let prints = [d.body_print(b"a"), d.body_print(b"b")];
            // The model: (id, body) in arrival order, at most one per id, newest last.
            let mut model: VecDeque<(String, usize)> = VecDeque::new();
            // Arrivals still counted against the capacity: a replaced or forgotten entry keeps
            // its place in the ring until it is the oldest.
            let mut ring: VecDeque<(String, bool)> = VecDeque::new();
            for _ in 0..5_000 {
                let id = format!("whe_{}", next(capacity as u64 * 2));
                let body = next(2) as usize;
                if next(8) == 0 {
                    d.forget(&id, prints[body]);
                    if let Some(i) = model.iter().position(|(m, b)| *m == id && *b == body) {
                        model.remove(i);
                        if let Some(r) = ring.iter_mut().find(|(r, live)| *r == id && *live) {
                            r.1 = false;
                        }
                    }
                    continue;
                }
                let expected = match model.iter().position(|(m, _)| *m == id) {
                    Some(i) if model[i].1 == body => Seen::Duplicate,
                    Some(i) => {
                        model.remove(i);
                        if let Some(r) = ring.iter_mut().find(|(r, live)| *r == id && *live) {
                            r.1 = false;
                        }
                        Seen::Reused
                    }
                    None => Seen::New,
                };
                assert_eq!(d.check_and_remember(&id, prints[body]), expected, "{id}");
                if expected != Seen::Duplicate {
                    if ring.len() == capacity
                        && let Some((old, true)) = ring.pop_front()
                    {
                        model.retain(|(m, _)| *m != old);
                    }
                    model.push_back((id.clone(), body));
                    ring.push_back((id, true));
                }
                assert_eq!(d.len(), model.len());
            }
        }
    }
}
