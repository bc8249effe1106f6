//! The state a cluster restored from a backup starts from.
//!
//! A backup is a snapshot of an old cluster's state. The old cluster may have granted
//! locks after it was taken, and a resource's fence that saw those tokens refuses every
//! token below them: so a restored state's counter moves forward by a margin before the
//! new cluster grants anything. Sessions and locks belong to the old cluster's clients
//! and are dropped unless the operator asks to keep them; users, roles, bearer tokens,
//! limits and the session id counter always stay.

use crate::State;

/// What a restore does with the backup's sessions and locks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoredSessions {
    /// Drop every session, with its held locks and waits.
    Drop,
    /// Keep them as they are (a new leader restarts every lease at its full TTL).
    Keep,
}

/// Why a state cannot be restored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// The last token plus the margin does not fit in a token.
    #[error("the last token {last_token} plus a margin of {margin} overflows a 64-bit token")]
    TokenOverflow {
        /// The backup's last token.
        last_token: u64,
        /// The margin asked for.
        margin: u64,
    },
}

impl State {
    /// This state, prepared for a new cluster: the token counter moved forward by
    /// `token_margin` (the first grant gets `last_token + token_margin + 1`), and the
    /// sessions and locks dropped or kept as `sessions` says.
    ///
    /// # Errors
    ///
    /// [`RestoreError::TokenOverflow`] when the counter cannot move that far.
    pub fn restored(
        mut self,
        token_margin: u64,
        sessions: RestoredSessions,
    ) -> Result<State, RestoreError> {
        self.last_token =
            self.last_token
                .checked_add(token_margin)
                .ok_or(RestoreError::TokenOverflow {
                    last_token: self.last_token,
                    margin: token_margin,
                })?;
        if sessions == RestoredSessions::Drop {
            self.sessions.clear();
            self.sessions_by_client.clear();
            self.locks.clear();
            // A delay protects a resource from the old cluster's lost holder; with the
            // old cluster's locks gone, no grant of the new one follows that holder.
            self.lock_delays.clear();
            self.grant_index.clear();
            self.held_grants = 0;
            self.waiters = 0;
            self.auth.session_owners.clear();
        }
        debug_assert!(self.check_invariants().is_ok(), "a restored state is valid");
        Ok(self)
    }

    /// The number of users and of roles.
    pub fn user_and_role_counts(&self) -> (u64, u64) {
        (self.auth.users.len() as u64, self.auth.roles.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::{RestoreError, RestoredSessions};
    use crate::{ClientId, Command, LockMode, RequestId, SessionId, State, WaitPolicy};

    fn busy_state() -> State {
        let mut state = State::default();
        let mut events = Vec::new();
        for client in 1..=3u128 {
            state
                .apply(
                    Command::OpenSession {
                        client_id: ClientId(client),
                        ttl_ms: 10_000,
                    },
                    &mut events,
                )
                .expect("open");
        }
        for session in 1..=3 {
            let _ = state.apply(
                Command::Acquire {
                    session: SessionId(session),
                    request: RequestId {
                        seq: 1,
                        first_unanswered_seq: 1,
                    },
                    name: "a".into(),
                    mode: LockMode::Exclusive,
                    wait: WaitPolicy::Queue,
                    value: Vec::new(),
                },
                &mut events,
            );
        }
        state
    }

    #[test]
    fn dropping_sessions_drops_the_lock_delays_of_their_locks() {
        let mut state = busy_state();
        let mut events = Vec::new();
        let spec = crate::LockSpec {
            lock_delay_ms: 5_000,
            ..crate::LockSpec::new("delayed", LockMode::Exclusive)
        };
        state
            .apply(
                Command::AcquireLocks {
                    session: SessionId(1),
                    request: RequestId {
                        seq: 2,
                        first_unanswered_seq: 2,
                    },
                    locks: vec![spec],
                    wait: WaitPolicy::NoWait,
                    value: Vec::new(),
                },
                &mut events,
            )
            .expect("granted");
        state
            .apply(
                Command::ExpireSessions {
                    sessions: vec![SessionId(1)],
                },
                &mut events,
            )
            .expect("expired");
        assert!(
            state.lock_delay("delayed").is_some(),
            "the expiry started a delay"
        );
        let kept = state
            .clone()
            .restored(10, RestoredSessions::Keep)
            .expect("restored");
        assert!(kept.lock_delay("delayed").is_some());
        let dropped = state
            .restored(10, RestoredSessions::Drop)
            .expect("restored");
        assert_eq!(dropped.lock_delays().count(), 0);
        dropped.check_invariants().expect("invariants");
    }

    #[test]
    fn dropping_sessions_keeps_the_counters_and_a_valid_state() {
        let state = busy_state();
        let before = state.stats();
        assert_eq!((before.sessions, before.locks, before.waiters), (3, 1, 2));
        let restored = state
            .restored(1000, RestoredSessions::Drop)
            .expect("restored");
        restored.check_invariants().expect("invariants");
        let after = restored.stats();
        assert_eq!(
            (
                after.sessions,
                after.locks,
                after.held_grants,
                after.waiters
            ),
            (0, 0, 0, 0)
        );
        assert_eq!(after.last_token, before.last_token + 1000);
        assert_eq!(restored.last_token().0, after.last_token);
    }

    #[test]
    fn keeping_sessions_keeps_them() {
        let restored = busy_state()
            .restored(7, RestoredSessions::Keep)
            .expect("restored");
        restored.check_invariants().expect("invariants");
        assert_eq!(restored.stats().sessions, 3);
        assert_eq!(restored.stats().held_grants, 1);
    }

    #[test]
    fn a_margin_that_overflows_is_refused() {
        let error = busy_state()
            .restored(u64::MAX, RestoredSessions::Drop)
            .expect_err("overflow");
        assert!(matches!(
            error,
            RestoreError::TokenOverflow {
                margin: u64::MAX,
                ..
            }
        ));
    }
}
