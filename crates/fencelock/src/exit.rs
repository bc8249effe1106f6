//! Exit codes of the client commands, in one place (the `--help` text and the README
//! list the same table).
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | error (cluster unreachable, refused request, bad answer, ...) |
//! | 2 | usage error (bad flags or arguments) |
//! | 3 | would block: the lock is held and `--no-wait` was given |
//! | 4 | timed out: `--wait` ran out before the grant, or a call got no answer in `--timeout` |
//! | 5 | lease lost: the session ended while CMD ran (CMD was terminated) |
//! | 6 | stale: `verify` found the token is not the current grant |
//! | 7 | not found: `describe --fail-if-free` on a lock no one holds |
//! | 126, 127 | CMD could not be run (not executable, not found) |
//! | 128+N | CMD was killed by signal N (130 also: Ctrl-C while waiting for a lock) |
//!
//! Otherwise `lock` and `elect` exit with CMD's own exit code.

use std::fmt;

/// Success.
pub const OK: u8 = 0;
/// An error (printed as one line on stderr).
pub const ERROR: u8 = 1;
/// A usage error (clap's own exit code for bad flags).
pub const USAGE: u8 = 2;
/// The lock is held and `--no-wait` was given.
pub const WOULD_BLOCK: u8 = 3;
/// `--wait` ran out before the grant, or a call got no answer within `--timeout`.
pub const TIMED_OUT: u8 = 4;
/// The lease was lost while CMD ran.
pub const LOST: u8 = 5;
/// `verify`: the token is not the current grant.
pub const STALE: u8 = 6;
/// `describe --fail-if-free`: no one holds the lock.
pub const NOT_FOUND: u8 = 7;
/// CMD exists but could not be executed.
pub const CANNOT_EXECUTE: u8 = 126;
/// CMD was not found.
pub const COMMAND_NOT_FOUND: u8 = 127;
/// Added to a signal number when CMD was killed by that signal.
pub const SIGNAL_BASE: u8 = 128;

/// The table shown at the end of `fencelock --help`.
pub const HELP: &str = "\
Exit codes of the client commands:
  0        ok
  1        error (cluster unreachable, refused request, ...)
  2        usage error
  3        would block: the lock is held and --no-wait was given
  4        timed out: --wait ran out, or no answer within --timeout
  5        lease lost while CMD ran (CMD was terminated)
  6        stale: verify found the token is not current
  7        not found: describe --fail-if-free on a free lock
  126/127  CMD could not be executed / was not found
  128+N    CMD was killed by signal N (130: Ctrl-C while waiting)
lock and elect otherwise exit with CMD's exit code.";

/// An early exit with a given code. Returned as an error through `anyhow` so that every
/// command ends in one place ([`crate::main`]); `message` (one line) goes to stderr as
/// `error: ...`, and nothing is printed without one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// The process exit code.
    pub code: u8,
    /// What to print on stderr, if anything.
    pub message: Option<String>,
}

impl Exit {
    /// Exit with `code` after printing `message`.
    pub fn with(code: u8, message: impl Into<String>) -> Exit {
        Exit {
            code,
            message: Some(message.into()),
        }
    }

    /// Exit with `code` quietly (the command already said what happened).
    pub fn quiet(code: u8) -> Exit {
        Exit {
            code,
            message: None,
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.message {
            Some(message) => f.write_str(message),
            None => write!(f, "exit {}", self.code),
        }
    }
}

impl std::error::Error for Exit {}

/// The exit code for an error that ended a command: an [`Exit`]'s own code; a client
/// call that timed out, [`TIMED_OUT`]; anything else, [`ERROR`].
pub fn code_of(error: &anyhow::Error) -> u8 {
    if let Some(exit) = error.downcast_ref::<Exit>() {
        return exit.code;
    }
    for cause in error.chain() {
        if let Some(fencelock_client::Error::Timeout { .. }) =
            cause.downcast_ref::<fencelock_client::Error>()
        {
            return TIMED_OUT;
        }
    }
    ERROR
}

/// Whether the error should be printed (a quiet [`Exit`] is not).
pub fn should_print(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<Exit>()
        .is_none_or(|exit| exit.message.is_some())
}
