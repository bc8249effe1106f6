//! The fencing token and the decisions the fence makes about it.

/// A fencing token: the `u64` a fencelock grant carries, the same type the client
/// library hands out (from the dependency-free `fencelock-token` crate).
///
/// Tokens of successive grants of one lock strictly increase. The fence compares tokens
/// only within one resource, which is bound to one lock (see the crate docs for why).
pub use fencelock_token::FencingToken;

/// What the fence decided about one presented token, for logs, metrics and checkers.
///
/// [`Admitted::decision`] and [`FenceError::decision`](crate::FenceError::decision) give
/// the decision of every call to [`Fence::admit`](crate::Fence::admit) that reached the
/// token comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    /// The token was at least the highest seen; the operation ran and the token is now
    /// the highest seen.
    Admitted {
        /// The token presented.
        token: FencingToken,
        /// The highest token seen before this one, `None` on the first admission for the
        /// resource.
        previous: Option<FencingToken>,
    },
    /// The token was below the highest seen; the operation did not run.
    Refused {
        /// The token presented.
        token: FencingToken,
        /// The highest token seen for the resource, which is greater than `token`.
        highest_seen: FencingToken,
    },
}

/// The fence's record for one resource: the lock it is bound to and the highest token
/// admitted under that lock.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FenceRecord {
    /// The lock whose tokens the resource accepts.
    pub lock: String,
    /// The highest token admitted so far.
    pub highest_seen: FencingToken,
}

/// A successful admission: the decision and the output of the operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admitted<T> {
    /// The token presented, now the highest seen for the resource.
    pub token: FencingToken,
    /// The highest token seen before, `None` on the first admission for the resource.
    /// Equal to `Some(token)` when the same holder wrote again.
    pub previous: Option<FencingToken>,
    /// What the operation returned.
    pub output: T,
}

impl<T> Admitted<T> {
    /// The decision, without the output.
    #[must_use]
    pub fn decision(&self) -> Decision {
        Decision::Admitted {
            token: self.token,
            previous: self.previous,
        }
    }
}

/// The comparison shared by every backend.
///
/// Returns the previous highest token on admission, or the error that refuses the token.
/// The caller runs the operation and records the token only on `Ok`.
pub(crate) fn decide<E>(
    resource: &str,
    record: Option<&FenceRecord>,
    lock: &str,
    token: FencingToken,
) -> Result<Option<FencingToken>, crate::FenceError<E>> {
    let Some(record) = record else {
        return Ok(None);
    };
    if record.lock != lock {
        return Err(crate::FenceError::WrongLock {
            resource: resource.to_owned(),
            bound_lock: record.lock.clone(),
            presented_lock: lock.to_owned(),
        });
    }
    if token < record.highest_seen {
        return Err(crate::FenceError::Refused {
            resource: resource.to_owned(),
            token,
            highest_seen: record.highest_seen,
        });
    }
    Ok(Some(record.highest_seen))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FenceError;

    fn record(lock: &str, highest_seen: u64) -> FenceRecord {
        FenceRecord {
            lock: lock.to_owned(),
            highest_seen: FencingToken(highest_seen),
        }
    }

    fn decide_plain(
        record: Option<&FenceRecord>,
        lock: &str,
        token: u64,
    ) -> Result<Option<FencingToken>, FenceError<()>> {
        decide("resource", record, lock, FencingToken(token))
    }

    #[test]
    fn first_presentation_has_no_previous() {
        assert_eq!(decide_plain(None, "a", 0).unwrap(), None);
    }

    #[test]
    fn equal_and_higher_are_admitted_lower_is_refused() {
        let bound = record("a", 10);
        assert_eq!(
            decide_plain(Some(&bound), "a", 10).unwrap(),
            Some(FencingToken(10))
        );
        assert_eq!(
            decide_plain(Some(&bound), "a", 11).unwrap(),
            Some(FencingToken(10))
        );
        let refused = decide_plain(Some(&bound), "a", 9).unwrap_err();
        assert_eq!(
            refused.decision(),
            Some(Decision::Refused {
                token: FencingToken(9),
                highest_seen: FencingToken(10)
            })
        );
    }

    #[test]
    fn lock_is_compared_before_token() {
        let bound = record("a", 10);
        for token in [0, 10, 11] {
            assert!(matches!(
                decide_plain(Some(&bound), "b", token),
                Err(FenceError::WrongLock { .. })
            ));
        }
    }

    #[test]
    fn token_conversions_and_display() {
        assert_eq!(FencingToken::from(7).get(), 7);
        assert_eq!(u64::from(FencingToken(7)), 7);
        assert_eq!(FencingToken(7).to_string(), "7");
        assert!(FencingToken(1) < FencingToken(2));
    }

    #[test]
    fn refusal_message_names_resource_and_tokens() {
        let refused = decide_plain(Some(&record("a", 10)), "a", 9).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "fencing token 9 refused for resource \"resource\": highest seen is 10"
        );
    }
}
