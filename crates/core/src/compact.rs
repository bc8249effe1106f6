//! The two per-lock collections, laid out for the common case: a lock held by one
//! session with no one waiting. There can be millions of such locks, so each costs what
//! it holds and no more.
//!
//! - [`Holders`] keeps a single grant inline and only builds a `BTreeMap` for two or
//!   more (shared) grants: a one-entry `BTreeMap` would allocate a whole B-tree leaf,
//!   hundreds of bytes, for every held lock.
//! - [`WaitQueue`] is one null pointer while empty and gives its buffer back when it
//!   empties, so a lock that once had a queue does not keep paying for it.
//!
//! Both serialize exactly as the `BTreeMap<FencingToken, Holder>` and
//! `VecDeque<Waiter>` they replace (a map and a sequence), so the snapshot format did
//! not change, and both are kept in one canonical form (checked by
//! `State::check_invariants`) so that equal contents compare equal.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::state::{Holder, Waiter};
use crate::types::{FencingToken, SessionId};

/// The grants in force on one lock, in token order (which is grant order).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum Holders {
    /// No grant (only for a moment, while a lock is handed on or forgotten).
    #[default]
    None,
    /// One grant, kept inline: the common case.
    One(FencingToken, Holder),
    /// Two or more grants (shared holders), never fewer.
    Many(BTreeMap<FencingToken, Holder>),
}

impl Holders {
    /// How many grants.
    pub(crate) fn len(&self) -> usize {
        match self {
            Holders::None => 0,
            Holders::One(..) => 1,
            Holders::Many(map) => map.len(),
        }
    }

    /// No grant.
    pub(crate) fn is_empty(&self) -> bool {
        matches!(self, Holders::None)
    }

    /// The oldest grant.
    pub(crate) fn first(&self) -> Option<&Holder> {
        self.iter().next().map(|(_, holder)| holder)
    }

    /// The grant with `token`, if in force here.
    pub(crate) fn get(&self, token: FencingToken) -> Option<&Holder> {
        match self {
            Holders::None => None,
            Holders::One(held, holder) => (*held == token).then_some(holder),
            Holders::Many(map) => map.get(&token),
        }
    }

    /// The grant with `token`, if in force here, to change its value or hold count.
    pub(crate) fn get_mut(&mut self, token: FencingToken) -> Option<&mut Holder> {
        match self {
            Holders::None => None,
            Holders::One(held, holder) => (*held == token).then_some(holder),
            Holders::Many(map) => map.get_mut(&token),
        }
    }

    /// Whether `token` is a grant in force here.
    pub(crate) fn contains(&self, token: FencingToken) -> bool {
        match self {
            Holders::None => false,
            Holders::One(held, _) => *held == token,
            Holders::Many(map) => map.contains_key(&token),
        }
    }

    /// The grants, in token order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (FencingToken, &Holder)> {
        let (one, many) = match self {
            Holders::None => (None, None),
            Holders::One(token, holder) => (Some((*token, holder)), None),
            Holders::Many(map) => (None, Some(map)),
        };
        let many = many.into_iter().flatten();
        one.into_iter()
            .chain(many.map(|(&token, holder)| (token, holder)))
    }

    /// Consumes the grants, in token order.
    pub(crate) fn into_entries(self) -> impl Iterator<Item = (FencingToken, Holder)> {
        let (one, many) = match self {
            Holders::None => (None, None),
            Holders::One(token, holder) => (Some((token, holder)), None),
            Holders::Many(map) => (None, Some(map)),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    /// Adds a grant.
    ///
    /// # Panics
    ///
    /// If `token` is already in force here: tokens are minted once (invariant 2).
    pub(crate) fn insert(&mut self, token: FencingToken, holder: Holder) {
        match std::mem::take(self) {
            Holders::None => *self = Holders::One(token, holder),
            Holders::One(first, first_holder) => {
                assert_ne!(first, token, "token {token} granted twice");
                *self = Holders::Many(BTreeMap::from([(first, first_holder), (token, holder)]));
            }
            Holders::Many(mut map) => {
                let previous = map.insert(token, holder);
                assert!(previous.is_none(), "token {token} granted twice");
                *self = Holders::Many(map);
            }
        }
    }

    /// Removes the grant with `token`, if in force here.
    pub(crate) fn remove(&mut self, token: FencingToken) -> Option<Holder> {
        match std::mem::take(self) {
            Holders::None => None,
            Holders::One(held, holder) if held == token => Some(holder),
            one @ Holders::One(..) => {
                *self = one;
                None
            }
            Holders::Many(mut map) => {
                let removed = map.remove(&token);
                *self = Holders::from_map(map);
                removed
            }
        }
    }

    /// The canonical form of `map`'s grants.
    fn from_map(mut map: BTreeMap<FencingToken, Holder>) -> Holders {
        match map.len() {
            0 => Holders::None,
            1 => {
                let (token, holder) = map.pop_first().expect("one entry");
                Holders::One(token, holder)
            }
            _ => Holders::Many(map),
        }
    }

    /// Whether this is the canonical form: `Many` only for two or more grants.
    pub(crate) fn is_canonical(&self) -> bool {
        !matches!(self, Holders::Many(map) if map.len() < 2)
    }
}

/// As the map `{token: holder}` (what `BTreeMap<FencingToken, Holder>` writes).
impl Serialize for Holders {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (token, holder) in self.iter() {
            map.serialize_entry(&token, holder)?;
        }
        map.end()
    }
}

/// From the map `{token: holder}`, as `BTreeMap<FencingToken, Holder>` reads it (a
/// repeated token keeps the last holder), without building a tree for one grant.
impl<'de> Deserialize<'de> for Holders {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Holders, D::Error> {
        struct HoldersVisitor;

        impl<'de> Visitor<'de> for HoldersVisitor {
            type Value = Holders;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a map from fencing tokens to holders")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Holders, A::Error> {
                let Some((first, first_holder)) = access.next_entry()? else {
                    return Ok(Holders::None);
                };
                let Some((second, second_holder)) = access.next_entry()? else {
                    return Ok(Holders::One(first, first_holder));
                };
                let mut map = BTreeMap::from([(first, first_holder)]);
                map.insert(second, second_holder);
                while let Some((token, holder)) = access.next_entry()? {
                    map.insert(token, holder);
                }
                Ok(Holders::from_map(map))
            }
        }

        deserializer.deserialize_map(HoldersVisitor)
    }
}

/// A lock's FIFO wait queue, oldest first: no allocation while empty.
///
/// Boxed so that it takes one pointer in every lock, not the 32 bytes of a `VecDeque`:
/// the extra allocation is paid only by locks that have a queue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[expect(
    clippy::box_collection,
    reason = "one pointer per lock; only queued locks pay for the box"
)]
pub(crate) struct WaitQueue(Option<Box<VecDeque<Waiter>>>);

impl WaitQueue {
    /// How many waits.
    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |queue| queue.len())
    }

    /// No one waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The oldest wait: the next to be granted.
    pub(crate) fn front(&self) -> Option<&Waiter> {
        self.0.as_ref().and_then(|queue| queue.front())
    }

    /// The waits, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Waiter> {
        self.0.iter().flat_map(|queue| queue.iter())
    }

    /// Queues a wait last.
    pub(crate) fn push_back(&mut self, waiter: Waiter) {
        self.0.get_or_insert_default().push_back(waiter);
    }

    /// Takes the oldest wait.
    pub(crate) fn pop_front(&mut self) -> Option<Waiter> {
        let waiter = self.0.as_mut()?.pop_front();
        self.release_if_empty();
        waiter
    }

    /// Takes `session`'s wait, wherever it is in the queue.
    pub(crate) fn remove_session(&mut self, session: SessionId) -> Option<Waiter> {
        let queue = self.0.as_mut()?;
        let position = queue.iter().position(|waiter| waiter.session == session)?;
        let waiter = queue.remove(position);
        self.release_if_empty();
        waiter
    }

    fn release_if_empty(&mut self) {
        if self.0.as_ref().is_some_and(|queue| queue.is_empty()) {
            self.0 = None;
        }
    }

    /// A queue in the non-canonical form, for the invariant checker's tests.
    #[cfg(test)]
    pub(crate) fn empty_with_buffer() -> WaitQueue {
        WaitQueue(Some(Box::default()))
    }

    /// Whether this is the canonical form: no buffer kept for an empty queue.
    pub(crate) fn is_canonical(&self) -> bool {
        self.0.as_ref().is_none_or(|queue| !queue.is_empty())
    }
}

/// As the sequence of waits (what `VecDeque<Waiter>` writes).
impl Serialize for WaitQueue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(queue) => queue.serialize(serializer),
            None => serializer.serialize_seq(Some(0))?.end(),
        }
    }
}

/// From the sequence of waits, as `VecDeque<Waiter>` reads it.
impl<'de> Deserialize<'de> for WaitQueue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<WaitQueue, D::Error> {
        let queue = VecDeque::<Waiter>::deserialize(deserializer)?;
        Ok(WaitQueue((!queue.is_empty()).then(|| Box::new(queue))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::LockMode;

    fn holder(session: u64) -> Holder {
        Holder {
            session: SessionId(session),
            mode: LockMode::Shared,
            value: vec![u8::try_from(session).unwrap(); 2].into(),
            granted_at_ms: session,
            weight: 1,
            hold_count: 1,
            lock_delay_ms: 0,
        }
    }

    fn waiter(session: u64) -> Waiter {
        Waiter {
            session: SessionId(session),
            mode: LockMode::Exclusive,
            value: Box::default(),
            seq: session,
            queued_at_ms: 0,
            weight: 1,
            lock_delay_ms: 0,
            group: None,
        }
    }

    /// `holders` against the `BTreeMap` it stands for: same grants, same order, same
    /// encoding, and it decodes back to itself; always canonical.
    fn agrees(holders: &Holders, map: &BTreeMap<FencingToken, Holder>) {
        assert!(holders.is_canonical());
        assert_eq!(holders.len(), map.len());
        assert_eq!(holders.is_empty(), map.is_empty());
        assert!(
            holders
                .iter()
                .eq(map.iter().map(|(&token, holder)| (token, holder)))
        );
        assert_eq!(holders.first(), map.values().next());
        for token in (0..8).map(FencingToken) {
            assert_eq!(holders.contains(token), map.contains_key(&token));
        }
        let bytes = postcard::to_stdvec(holders).unwrap();
        assert_eq!(bytes, postcard::to_stdvec(map).unwrap());
        assert_eq!(&postcard::from_bytes::<Holders>(&bytes).unwrap(), holders);
        assert!(holders.clone().into_entries().eq(map.clone()));
    }

    #[test]
    fn holders_behave_as_the_map_they_replace() {
        let mut holders = Holders::default();
        let mut map = BTreeMap::new();
        agrees(&holders, &map);
        for token in 1..=4 {
            holders.insert(FencingToken(token), holder(token));
            map.insert(FencingToken(token), holder(token));
            agrees(&holders, &map);
        }
        assert!(matches!(holders, Holders::Many(_)));
        for token in [7, 2, 4, 2, 1, 3, 3] {
            let token = FencingToken(token);
            assert_eq!(holders.remove(token), map.remove(&token));
            agrees(&holders, &map);
        }
        assert_eq!(holders, Holders::None);
        holders.insert(FencingToken(5), holder(5));
        assert_eq!(holders.remove(FencingToken(6)), None);
        assert!(matches!(holders, Holders::One(FencingToken(5), _)));
    }

    #[test]
    #[should_panic(expected = "granted twice")]
    fn a_token_is_granted_once() {
        let mut holders = Holders::default();
        holders.insert(FencingToken(1), holder(1));
        holders.insert(FencingToken(1), holder(2));
    }

    #[test]
    fn wait_queue_behaves_as_the_deque_it_replaces_and_frees_its_buffer() {
        let mut queue = WaitQueue::default();
        let mut deque = VecDeque::new();
        let agrees = |queue: &WaitQueue, deque: &VecDeque<Waiter>| {
            assert!(queue.is_canonical());
            assert_eq!(queue.len(), deque.len());
            assert_eq!(queue.is_empty(), deque.is_empty());
            assert_eq!(queue.front(), deque.front());
            assert!(queue.iter().eq(deque));
            let bytes = postcard::to_stdvec(queue).unwrap();
            assert_eq!(bytes, postcard::to_stdvec(deque).unwrap());
            assert_eq!(&postcard::from_bytes::<WaitQueue>(&bytes).unwrap(), queue);
        };
        agrees(&queue, &deque);
        for session in 1..=3 {
            queue.push_back(waiter(session));
            deque.push_back(waiter(session));
            agrees(&queue, &deque);
        }
        assert_eq!(queue.remove_session(SessionId(2)), deque.remove(1));
        assert_eq!(queue.remove_session(SessionId(9)), None);
        agrees(&queue, &deque);
        assert_eq!(queue.pop_front(), deque.pop_front());
        assert_eq!(queue.remove_session(SessionId(3)), deque.pop_front());
        agrees(&queue, &deque);
        assert_eq!(queue, WaitQueue(None), "an emptied queue keeps no buffer");
        assert_eq!(queue.pop_front(), None);
        assert!(!WaitQueue::empty_with_buffer().is_canonical());
    }
}
