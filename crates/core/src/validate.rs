//! Input checks shared by the commands: lock names, holder values, TTLs and limits. Each
//! check does bounded work (a name is measured before it is scanned) and returns the
//! error the caller sees.

use crate::types::{Error, Limits};

impl Limits {
    /// Checks that these limits can be put in force: every maximum is at least 1,
    /// `min_ttl_ms` is at least 1 and not above `max_ttl_ms`, and `max_name_bytes` is at
    /// most [`Limits::NAME_BYTES_CEILING`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLimits`] naming the first rule broken.
    pub fn validate(&self) -> Result<(), Error> {
        let maxima = [
            ("max_sessions", self.max_sessions),
            ("max_locks", self.max_locks),
            ("max_waiters_per_lock", self.max_waiters_per_lock),
            ("max_locks_per_session", self.max_locks_per_session),
            (
                "max_pending_requests_per_session",
                self.max_pending_requests_per_session,
            ),
            ("max_name_bytes", self.max_name_bytes),
            ("max_value_bytes", self.max_value_bytes),
            ("min_ttl_ms", self.min_ttl_ms),
            ("max_ttl_ms", self.max_ttl_ms),
            ("max_expire_batch", self.max_expire_batch),
        ];
        for (field, value) in maxima {
            if value < 1 {
                return Err(Error::InvalidLimits(format!("{field} must be at least 1")));
            }
        }
        if self.max_name_bytes > Limits::NAME_BYTES_CEILING {
            return Err(Error::InvalidLimits(format!(
                "max_name_bytes {} is above the ceiling of {}",
                self.max_name_bytes,
                Limits::NAME_BYTES_CEILING
            )));
        }
        if self.min_ttl_ms > self.max_ttl_ms {
            return Err(Error::InvalidLimits(format!(
                "min_ttl_ms {} is above max_ttl_ms {}",
                self.min_ttl_ms, self.max_ttl_ms
            )));
        }
        Ok(())
    }
}

impl crate::types::PrimitiveLimits {
    /// Checks that these limits can be put in force: every maximum at least 1, and
    /// `max_lock_delay_ms` at most [`PrimitiveLimits::LOCK_DELAY_CEILING_MS`] (0 is
    /// allowed: no acquire may ask for a delay).
    ///
    /// [`PrimitiveLimits::LOCK_DELAY_CEILING_MS`]: crate::PrimitiveLimits::LOCK_DELAY_CEILING_MS
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLimits`] naming the first rule broken.
    pub fn validate(&self) -> Result<(), Error> {
        if self.max_permits < 1 || self.max_locks_per_request < 1 || self.max_hold_count < 1 {
            return Err(Error::InvalidLimits(
                "max_permits, max_locks_per_request and max_hold_count must be at least 1"
                    .to_owned(),
            ));
        }
        if self.max_lock_delay_ms > Self::LOCK_DELAY_CEILING_MS {
            return Err(Error::InvalidLimits(format!(
                "max_lock_delay_ms {} is above the ceiling of {}",
                self.max_lock_delay_ms,
                Self::LOCK_DELAY_CEILING_MS
            )));
        }
        Ok(())
    }
}

impl Limits {
    /// Checks a lock name against these limits: 1..=`max_name_bytes` bytes of UTF-8
    /// without control characters. The server may call it to refuse a bad name before
    /// proposing anything; the state machine checks again when it applies.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] saying what is wrong.
    pub fn check_name(&self, name: &str) -> Result<(), Error> {
        validate_name(self.max_name_bytes, name)
    }

    /// Checks a holder value's length against `max_value_bytes`.
    ///
    /// # Errors
    ///
    /// [`Error::ValueTooLarge`].
    pub fn check_value(&self, value: &[u8]) -> Result<(), Error> {
        validate_value(self.max_value_bytes, value)
    }

    /// Checks a session TTL against `[min_ttl_ms, max_ttl_ms]`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTtl`].
    pub fn check_ttl(&self, ttl_ms: u64) -> Result<(), Error> {
        validate_ttl(self, ttl_ms)
    }
}

/// The widest of two sets of limits: the larger of each maximum, the smaller minimum TTL.
/// Used to keep the envelope that existing state is checked against.
pub(crate) fn widen(a: &Limits, b: &Limits) -> Limits {
    Limits {
        max_sessions: a.max_sessions.max(b.max_sessions),
        max_locks: a.max_locks.max(b.max_locks),
        max_waiters_per_lock: a.max_waiters_per_lock.max(b.max_waiters_per_lock),
        max_locks_per_session: a.max_locks_per_session.max(b.max_locks_per_session),
        max_pending_requests_per_session: a
            .max_pending_requests_per_session
            .max(b.max_pending_requests_per_session),
        max_name_bytes: a.max_name_bytes.max(b.max_name_bytes),
        max_value_bytes: a.max_value_bytes.max(b.max_value_bytes),
        min_ttl_ms: a.min_ttl_ms.min(b.min_ttl_ms),
        max_ttl_ms: a.max_ttl_ms.max(b.max_ttl_ms),
        max_expire_batch: a.max_expire_batch.max(b.max_expire_batch),
    }
}

/// Lock names are 1..=`max_name_bytes` bytes of UTF-8 with no control characters.
pub(crate) fn validate_name(max_name_bytes: u64, name: &str) -> Result<(), Error> {
    if name.is_empty() {
        return Err(Error::InvalidName("the name is empty".to_owned()));
    }
    let len = name.len() as u64;
    if len > max_name_bytes {
        return Err(Error::InvalidName(format!(
            "the name is {len} bytes, more than the limit of {max_name_bytes}"
        )));
    }
    if let Some((index, _)) = name.char_indices().find(|(_, c)| c.is_control()) {
        return Err(Error::InvalidName(format!(
            "the name has a control character at byte {index}"
        )));
    }
    Ok(())
}

/// Holder values are at most `max_value_bytes` long.
pub(crate) fn validate_value(max_value_bytes: u64, value: &[u8]) -> Result<(), Error> {
    if value.len() as u64 > max_value_bytes {
        return Err(Error::ValueTooLarge {
            len: value.len(),
            max: usize::try_from(max_value_bytes).unwrap_or(usize::MAX),
        });
    }
    Ok(())
}

/// Session TTLs are within `[min_ttl_ms, max_ttl_ms]`.
pub(crate) fn validate_ttl(limits: &Limits, ttl_ms: u64) -> Result<(), Error> {
    if ttl_ms < limits.min_ttl_ms || ttl_ms > limits.max_ttl_ms {
        return Err(Error::InvalidTtl {
            ttl_ms,
            min_ttl_ms: limits.min_ttl_ms,
            max_ttl_ms: limits.max_ttl_ms,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_limits_are_valid() {
        assert_eq!(Limits::default().validate(), Ok(()));
    }

    #[test]
    fn each_zero_maximum_is_refused() {
        let zeroed: [fn(&mut Limits); 10] = [
            |l| l.max_sessions = 0,
            |l| l.max_locks = 0,
            |l| l.max_waiters_per_lock = 0,
            |l| l.max_locks_per_session = 0,
            |l| l.max_pending_requests_per_session = 0,
            |l| l.max_name_bytes = 0,
            |l| l.max_value_bytes = 0,
            |l| l.min_ttl_ms = 0,
            |l| l.max_ttl_ms = 0,
            |l| l.max_expire_batch = 0,
        ];
        for zero in zeroed {
            let mut limits = Limits::default();
            zero(&mut limits);
            assert!(matches!(limits.validate(), Err(Error::InvalidLimits(_))));
        }
    }

    #[test]
    fn name_ceiling_is_enforced() {
        let mut limits = Limits {
            max_name_bytes: Limits::NAME_BYTES_CEILING,
            ..Limits::default()
        };
        assert_eq!(limits.validate(), Ok(()));
        limits.max_name_bytes += 1;
        assert!(matches!(limits.validate(), Err(Error::InvalidLimits(m)) if m.contains("ceiling")));
    }

    #[test]
    fn min_ttl_above_max_ttl_is_refused() {
        let limits = Limits {
            min_ttl_ms: 10,
            max_ttl_ms: 9,
            ..Limits::default()
        };
        assert!(
            matches!(limits.validate(), Err(Error::InvalidLimits(m)) if m.contains("min_ttl_ms"))
        );
    }

    #[test]
    fn names_are_checked_for_length_then_control_characters() {
        assert_eq!(validate_name(4, "abcd"), Ok(()));
        assert_eq!(validate_name(4, "é"), Ok(()));
        assert!(matches!(validate_name(4, ""), Err(Error::InvalidName(m)) if m.contains("empty")));
        assert!(
            matches!(validate_name(4, "abcde"), Err(Error::InvalidName(m)) if m.contains("5 bytes"))
        );
        assert!(
            matches!(validate_name(4, "a\nb"), Err(Error::InvalidName(m)) if m.contains("byte 1"))
        );
        assert!(matches!(
            validate_name(8, "a\u{85}"),
            Err(Error::InvalidName(_))
        ));
    }

    #[test]
    fn public_checks_use_the_limits() {
        let limits = Limits {
            max_name_bytes: 3,
            max_value_bytes: 1,
            ..Limits::default()
        };
        assert_eq!(limits.check_name("abc"), Ok(()));
        assert!(matches!(
            limits.check_name("abcd"),
            Err(Error::InvalidName(_))
        ));
        assert_eq!(limits.check_value(b"a"), Ok(()));
        assert!(limits.check_value(b"ab").is_err());
        assert_eq!(limits.check_ttl(limits.min_ttl_ms), Ok(()));
        assert!(limits.check_ttl(0).is_err());
    }

    #[test]
    fn values_and_ttls_are_bounded() {
        assert_eq!(validate_value(2, b"ab"), Ok(()));
        assert_eq!(
            validate_value(2, b"abc"),
            Err(Error::ValueTooLarge { len: 3, max: 2 })
        );
        let limits = Limits::default();
        assert_eq!(validate_ttl(&limits, limits.min_ttl_ms), Ok(()));
        assert_eq!(validate_ttl(&limits, limits.max_ttl_ms), Ok(()));
        assert!(validate_ttl(&limits, limits.min_ttl_ms - 1).is_err());
        assert!(validate_ttl(&limits, limits.max_ttl_ms + 1).is_err());
    }
}
