//! The grants in force ordered by grant time, so that the oldest ones are found without
//! a scan of the locks: what an alert on a lock held too long, and the status page's
//! longest-held list, read.
//!
//! Derived data: it is not serialized (the snapshot format does not change) and is
//! rebuilt from the locks whenever a state is decoded. Every path that adds or ends a
//! grant keeps it (`apply/acquire.rs` and `apply/settle.rs` grant; `apply.rs` ends a
//! session's grants, releases and force-releases; `restore.rs` drops them all), and
//! [`State::check_invariants`] compares it with what a scan of the locks gives.
//!
//! Grants are ordered by token, which is their order in time as well: tokens are minted
//! in increasing order and the state's clock never goes back, so a grant with a larger
//! token was made at the same time or later (`check_invariants` checks this too). So the
//! index is one map from token to lock name, 24 bytes a grant and no copy of the time,
//! which is read from the grant itself. A reentrant grant is one grant (its later holds
//! do not change its time); a semaphore's holders are one grant each, whatever their
//! weight; a multi-lock is one grant per name. Grants made before the state knew a wall
//! clock (snapshot formats 1 and 2, or no `WallClock` applied yet) have time 0 and come
//! first, since they predate every stamped grant; their age is unknown, so
//! [`State::oldest_stamped_grant_ms`] skips them.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::state::{Name, State};
use crate::types::FencingToken;

/// The grants in force by token (= by grant time), each with its lock's name (the
/// lock's own allocation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct GrantIndex(BTreeMap<FencingToken, Name>);

impl GrantIndex {
    /// Records a new grant of lock `name`.
    pub(crate) fn insert(&mut self, token: FencingToken, name: &Name) {
        let previous = self.0.insert(token, Arc::clone(name));
        debug_assert!(previous.is_none(), "token {token} indexed twice");
    }

    /// Forgets an ended grant.
    pub(crate) fn remove(&mut self, token: FencingToken) {
        let removed = self.0.remove(&token);
        debug_assert!(removed.is_some(), "token {token} was not indexed");
    }

    /// Forgets every grant.
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }

    /// What the locks say the index must be.
    pub(crate) fn of(state: &State) -> GrantIndex {
        GrantIndex(
            state
                .locks
                .iter()
                .flat_map(|(name, lock)| {
                    lock.holders
                        .iter()
                        .map(|(token, _)| (token, Arc::clone(name)))
                })
                .collect(),
        )
    }
}

/// One grant in force, as [`State::grants_by_age`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantAge<'a> {
    /// The lock's name.
    pub name: &'a str,
    /// The grant's token.
    pub token: FencingToken,
    /// The state's wall clock when it was granted (ms since the epoch; 0: granted before
    /// any wall clock was known).
    pub granted_at_ms: u64,
}

impl State {
    /// The grants in force, oldest first (by grant time, then token; grants made before
    /// any wall clock was known, time 0, first of all). Each step is one map step and
    /// one lookup of the lock: no scan of the locks.
    pub fn grants_by_age(&self) -> impl Iterator<Item = GrantAge<'_>> + '_ {
        self.grant_index.0.iter().map(|(&token, name)| GrantAge {
            name,
            token,
            granted_at_ms: self.locks[name]
                .holders
                .get(token)
                .expect("the index holds grants in force")
                .granted_at_ms,
        })
    }

    /// The grant time (ms since the epoch) of the oldest grant in force that carries
    /// one, or `None` when no such grant is in force. Skips the grants of unknown age
    /// first (only a state decoded from an old snapshot has any).
    pub fn oldest_stamped_grant_ms(&self) -> Option<u64> {
        self.grants_by_age()
            .map(|grant| grant.granted_at_ms)
            .find(|&granted_at_ms| granted_at_ms > 0)
    }

    /// Grants in force made before any wall clock was known: their age is unknown.
    pub fn unstamped_grants(&self) -> u64 {
        crate::state::count(
            self.grants_by_age()
                .take_while(|grant| grant.granted_at_ms == 0)
                .count(),
        )
    }

    /// Rebuilds the index from the locks (after decoding them).
    pub(crate) fn rebuild_grant_index(&mut self) {
        self.grant_index = GrantIndex::of(self);
    }

    /// The index holds exactly the grants in force, and token order is time order.
    pub(crate) fn check_grant_index(&self) -> Result<(), String> {
        if self.grant_index != GrantIndex::of(self) {
            return Err(format!(
                "the grant index ({} grants) disagrees with the locks ({} grants)",
                self.grant_index.0.len(),
                self.held_grants
            ));
        }
        let mut previous = 0;
        for grant in self.grants_by_age() {
            if grant.granted_at_ms < previous {
                return Err(format!(
                    "grant {} of lock {:?} is older than a grant with a smaller token",
                    grant.token, grant.name
                ));
            }
            previous = grant.granted_at_ms;
        }
        Ok(())
    }
}
