//! The wire forms every call builds: durations in milliseconds, wait policies, the
//! per-attempt timeout of a waiting call, and request ids.

use crate::config::Config;
use crate::types::Wait;
use fencelock_proto::v1 as pb;
use std::time::{Duration, Instant};

/// A fresh request id (a UUID): built once per call, so every retry of the call carries
/// the same one and the cluster acts once.
pub(crate) fn request_id() -> Vec<u8> {
    uuid::Uuid::new_v4().as_bytes().to_vec()
}

pub(crate) fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The wire form of a wait.
pub(crate) fn wait_to_pb(wait: Wait) -> (pb::WaitPolicy, u64) {
    match wait {
        Wait::NoWait => (pb::WaitPolicy::NoWait, 0),
        Wait::Timeout(timeout) => (pb::WaitPolicy::Timeout, duration_ms(timeout).max(1)),
        Wait::Forever => (pb::WaitPolicy::Forever, 0),
    }
}

/// The per-attempt timeout of an acquire with `wait`.
pub(crate) fn attempt_timeout(config: &Config, wait: Wait) -> Option<Duration> {
    match wait {
        Wait::NoWait => Some(config.call_timeout),
        Wait::Timeout(timeout) => Some(timeout + config.call_timeout),
        Wait::Forever => None,
    }
}

/// Remaining time of a wait that started at `started`, at least 1 ms.
pub(crate) fn remaining(wait: Wait, started: Instant) -> Wait {
    match wait {
        Wait::Timeout(timeout) => Wait::Timeout(
            timeout
                .saturating_sub(started.elapsed())
                .max(Duration::from_millis(1)),
        ),
        other => other,
    }
}
