//! The cluster version, and the one table of which [`Command`] needs which.
//!
//! Nodes of different builds run side by side during a rolling upgrade. A node decodes
//! only the commands its build knows, so a command added by a newer build may enter the
//! log only once every member runs a build that knows it. The replicated state carries
//! the *cluster version* ([`State::cluster_version`], [`INITIAL_CLUSTER_VERSION`] until
//! the first [`Command::SetClusterVersion`]); the leader raises it once every member
//! says it speaks the new version, and the server refuses to propose a command whose
//! [`Command::introduced_in`] is above the version in force. It never goes down: a node
//! of an older build cannot rejoin a cluster whose version it does not speak.
//!
//! The version numbers are also the peer protocol's: a node speaks versions
//! `1..=`[`MAX_CLUSTER_VERSION`].

use crate::state::State;
use crate::types::{Command, Error, Response};

/// The cluster version of a state that never applied a `SetClusterVersion`: everything
/// a cluster of the first versioned release's predecessor could log.
pub const INITIAL_CLUSTER_VERSION: u32 = 1;

/// The highest cluster version this build knows the commands of.
pub const MAX_CLUSTER_VERSION: u32 = 2;

impl Command {
    /// The cluster version that introduced this command: it may be proposed only while
    /// the cluster version is at least this (a wrapper needs what it wraps). Every
    /// variant is listed, with no catch-all, so a new one cannot be added without a
    /// version.
    pub fn introduced_in(&self) -> u32 {
        match self {
            Command::OpenSession { .. }
            | Command::CloseSession { .. }
            | Command::Acquire { .. }
            | Command::AcquireWithLease { .. }
            | Command::Release { .. }
            | Command::CancelWait { .. }
            | Command::ExpireSessions { .. }
            | Command::ForceRelease { .. }
            | Command::SetLimits(_)
            | Command::Auth(_)
            | Command::RevokeSession { .. }
            | Command::AcquireLocks { .. }
            | Command::AcquireLocksWithLease { .. }
            | Command::WallClock { .. }
            | Command::EndLockDelay { .. }
            | Command::SetValue { .. }
            | Command::SetPrimitiveLimits(_) => 1,
            Command::Owned { command, .. }
            | Command::Authorized { command, .. }
            | Command::Once { command, .. } => command.introduced_in(),
            Command::SetClusterVersion { .. } => 2,
        }
    }

    /// Whether this command may be proposed while the cluster version is `cluster`:
    /// [`Command::introduced_in`] is at most `cluster`, or, for the `SetClusterVersion`
    /// that raises the cluster to a version that has it, at most that version.
    pub fn allowed_at(&self, cluster: u32) -> bool {
        let version = match self {
            Command::SetClusterVersion { version } => cluster.max(*version),
            _ => cluster,
        };
        self.introduced_in() <= version
    }
}

impl State {
    /// The cluster version in force (see the module docs).
    pub fn cluster_version(&self) -> u32 {
        self.cluster_version
    }

    /// Applies [`Command::SetClusterVersion`].
    pub(crate) fn set_cluster_version(&mut self, version: u32) -> Result<Response, Error> {
        if version < self.cluster_version {
            return Err(Error::ClusterVersionDowngrade {
                current: self.cluster_version,
                proposed: version,
            });
        }
        self.cluster_version = version;
        Ok(Response::ClusterVersionSet { version })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{AuthCommand, Caller};
    use crate::types::{ClientId, SessionId};

    #[test]
    fn every_command_of_the_first_release_is_version_1_and_the_new_one_2() {
        let open = Command::OpenSession {
            client_id: ClientId(1),
            ttl_ms: 5_000,
        };
        assert_eq!(open.introduced_in(), 1);
        assert_eq!(
            Command::Auth(AuthCommand::RoleAdd { name: "r".into() }).introduced_in(),
            1
        );
        let raise = Command::SetClusterVersion { version: 2 };
        assert_eq!(raise.introduced_in(), 2);
        // A wrapper needs what it wraps.
        let wrapped = |command: Command| Command::Authorized {
            caller: Caller::Anyone,
            command: Box::new(Command::Once {
                request: 1,
                remember: 10,
                command: Box::new(command),
            }),
        };
        assert_eq!(wrapped(open.clone()).introduced_in(), 1);
        assert_eq!(wrapped(raise.clone()).introduced_in(), 2);
        // Gating: version-1 commands pass at 1; a version-2 command only at 2, but the
        // command that raises the cluster to 2 passes at 1.
        assert!(open.allowed_at(1));
        assert!(!wrapped(raise.clone()).allowed_at(1));
        assert!(wrapped(raise.clone()).allowed_at(2));
        assert!(raise.allowed_at(1));
        assert!(raise.allowed_at(2));
        let raise_to_1 = Command::SetClusterVersion { version: 1 };
        assert!(
            !raise_to_1.allowed_at(1),
            "version 1 had no SetClusterVersion"
        );
        let close = Command::CloseSession {
            session: SessionId(1),
        };
        assert!(close.allowed_at(INITIAL_CLUSTER_VERSION));
        assert!(MAX_CLUSTER_VERSION >= raise.introduced_in());
    }

    #[test]
    fn the_cluster_version_only_goes_up() {
        let mut state = State::default();
        let mut events = Vec::new();
        assert_eq!(state.cluster_version(), INITIAL_CLUSTER_VERSION);
        assert_eq!(
            state.apply(Command::SetClusterVersion { version: 2 }, &mut events),
            Ok(Response::ClusterVersionSet { version: 2 })
        );
        assert_eq!(state.cluster_version(), 2);
        // The same version again changes nothing and is no error (a retried proposal).
        assert_eq!(
            state.apply(Command::SetClusterVersion { version: 2 }, &mut events),
            Ok(Response::ClusterVersionSet { version: 2 })
        );
        assert_eq!(
            state.apply(Command::SetClusterVersion { version: 1 }, &mut events),
            Err(Error::ClusterVersionDowngrade {
                current: 2,
                proposed: 1
            })
        );
        assert_eq!(state.cluster_version(), 2);
        assert!(events.is_empty());
        // Only the leader's own proposal carries it: no caller may send it.
        let on_behalf = Command::Authorized {
            caller: Caller::Anyone,
            command: Box::new(Command::SetClusterVersion { version: 3 }),
        };
        assert!(matches!(
            state.apply(on_behalf, &mut events),
            Err(Error::BadWrapper(_))
        ));
        assert_eq!(state.cluster_version(), 2);
        state.check_invariants().unwrap();
    }
}
