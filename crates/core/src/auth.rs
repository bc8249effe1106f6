//! Authentication and per-prefix permissions, kept in the replicated state so that every
//! replica (and every future leader) agrees on who may do what.
//!
//! The state machine stays pure: it stores password hashes (PHC strings computed by the
//! server before it proposes) and bearer-token hashes, never secrets, and it verifies no
//! password. The server verifies the credentials of a call and proposes the command inside
//! [`Command::Authorized`] with a [`Caller`]: the user and a reference to the credential
//! it verified (the bearer token's hash, or a [`password_fingerprint`] of the stored
//! password hash). `apply` is the judge ([`State::authorize_command`]): against the state
//! of the entry being applied, it refuses a caller whose user was removed, whose token
//! was revoked or whose password changed since the check, a right missing on the lock,
//! a session of another user, and an unauthenticated caller once auth is on. The same
//! rules answer the server's early checks and its checks after a read barrier
//! ([`State::authorize`]).
//!
//! Session ownership: a session opened by an authenticated user is that user's. A session
//! opened while auth was off has no owner, and once auth is on only a superuser may use
//! it (keepalives included), so a client id learned by someone else claims nothing.
//! Removing a user drops its ownerships: its sessions become ownerless (usable by a
//! superuser only, so they end when their leases run out) and a user re-created with the
//! same name inherits none of them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::state::State;
use crate::types::{Command, Error, Event, Response, SessionId};

/// The name of the superuser: every right on every prefix, cluster and auth
/// administration. Auth cannot be enabled before this user exists.
pub const ROOT_USER: &str = "root";

/// The longest user, role or prefix name, in bytes.
pub const MAX_AUTH_NAME_BYTES: usize = 256;

/// One right on a lock-name prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Right {
    /// `Acquire` (and the convenience form).
    Acquire,
    /// `Release` of one's own grants.
    Release,
    /// `Describe`, `List`, `Watch`, `Verify`.
    Read,
    /// Everything, including acting on other users' sessions and `ForceRelease`.
    Admin,
}

/// A set of rights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rights {
    /// May acquire.
    pub acquire: bool,
    /// May release.
    pub release: bool,
    /// May read.
    pub read: bool,
    /// May administer (implies the others).
    pub admin: bool,
}

impl Rights {
    /// Whether this set grants `right` (`admin` grants every right).
    pub fn grants(&self, right: Right) -> bool {
        self.admin
            || match right {
                Right::Acquire => self.acquire,
                Right::Release => self.release,
                Right::Read => self.read,
                Right::Admin => false,
            }
    }

    /// The union of two sets.
    pub fn union(self, other: Rights) -> Rights {
        Rights {
            acquire: self.acquire || other.acquire,
            release: self.release || other.release,
            read: self.read || other.read,
            admin: self.admin || other.admin,
        }
    }
}

/// Rights on every lock name that starts with `prefix` (`""`: every lock).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    /// The lock-name prefix.
    pub prefix: String,
    /// The rights granted there.
    pub rights: Rights,
}

/// A user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// The password's hash as a PHC string (argon2), or empty: no password login.
    pub password_hash: String,
    /// The roles granted to the user.
    pub roles: BTreeSet<String>,
}

/// Authentication and permission administration, replicated like every other command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthCommand {
    /// Switch checks on. Refused unless the user `root` exists.
    Enable,
    /// Switch checks off.
    Disable,
    /// Create a user.
    UserAdd {
        /// Its name.
        name: String,
        /// The PHC string of its password (hashed by the server).
        password_hash: String,
    },
    /// Delete a user (and its bearer tokens). `root` cannot be removed while auth is on.
    UserRemove {
        /// Its name.
        name: String,
    },
    /// Replace a user's password hash.
    UserPasswd {
        /// Its name.
        name: String,
        /// The new PHC string.
        password_hash: String,
    },
    /// Give a user a role.
    UserGrantRole {
        /// The user.
        user: String,
        /// The role (must exist).
        role: String,
    },
    /// Take a role from a user.
    UserRevokeRole {
        /// The user.
        user: String,
        /// The role.
        role: String,
    },
    /// Create a role with no permissions.
    RoleAdd {
        /// Its name.
        name: String,
    },
    /// Delete a role (and take it from every user).
    RoleRemove {
        /// Its name.
        name: String,
    },
    /// Grant rights on a prefix (added to the rights already there).
    RoleGrant {
        /// The role.
        role: String,
        /// The lock-name prefix.
        prefix: String,
        /// The rights.
        rights: Rights,
    },
    /// Remove every right of a role on exactly this prefix.
    RoleRevoke {
        /// The role.
        role: String,
        /// The lock-name prefix.
        prefix: String,
    },
    /// Register a bearer token (by its hash) for a user.
    TokenAdd {
        /// A hash of the token (the server never proposes the token itself).
        token_hash: String,
        /// The user the token acts as.
        user: String,
    },
    /// Forget a bearer token.
    TokenRemove {
        /// The token's hash.
        token_hash: String,
    },
}

/// Why an auth command was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AuthError {
    /// No such user.
    #[error("user {0:?} not found")]
    UserNotFound(String),
    /// The user exists already.
    #[error("user {0:?} already exists")]
    UserExists(String),
    /// No such role.
    #[error("role {0:?} not found")]
    RoleNotFound(String),
    /// The role exists already.
    #[error("role {0:?} already exists")]
    RoleExists(String),
    /// `Enable` without a `root` user, or removing `root` while auth is on.
    #[error(
        "auth needs the user \"root\" (add it before enabling auth; it cannot be removed while auth is on)"
    )]
    RootRequired,
    /// A name is empty, too long or has control characters.
    #[error("invalid name: {0}")]
    InvalidName(String),
    /// The client id names a live session of another user.
    #[error("session {0} belongs to another user")]
    NotSessionOwner(SessionId),
    /// `Owned` wraps only `OpenSession` and `AcquireWithLease`.
    #[error("only OpenSession and AcquireWithLease can carry an owner")]
    NotOwnable,
    /// Auth is on and the command came without credentials (it was checked while auth
    /// was off).
    #[error("authentication is required")]
    AuthRequired,
    /// The credential the caller was checked with is no longer valid: the user was
    /// removed, the bearer token revoked, or the password changed.
    #[error(
        "the credentials of user {0:?} are no longer valid (user removed, token revoked or password changed)"
    )]
    CredentialRevoked(String),
    /// The user lacks a right on a lock.
    #[error("user {user:?} lacks the {right} right on lock {name:?}")]
    PermissionDenied {
        /// The user.
        user: String,
        /// The lock (or prefix).
        name: String,
        /// The right missing.
        right: Right,
    },
    /// Only root (or a user with `admin` on every lock) may do this.
    #[error("user {0:?} is not root (nor admin on every lock)")]
    SuperuserRequired(String),
}

impl AuthError {
    /// Whether the caller is not (or no longer) authenticated, as opposed to
    /// authenticated but not allowed.
    pub fn is_unauthenticated(&self) -> bool {
        matches!(
            self,
            AuthError::AuthRequired | AuthError::CredentialRevoked(_)
        )
    }

    /// Whether the caller is authenticated but not allowed.
    pub fn is_permission_denied(&self) -> bool {
        matches!(
            self,
            AuthError::NotSessionOwner(_)
                | AuthError::PermissionDenied { .. }
                | AuthError::SuperuserRequired(_)
        )
    }
}

impl std::fmt::Display for Right {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Right::Acquire => "acquire",
            Right::Release => "release",
            Right::Read => "read",
            Right::Admin => "admin",
        })
    }
}

/// Who sent a command, as the API authenticated it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Caller {
    /// Auth was off when the API looked: no credentials. Refused once auth is on.
    Anyone,
    /// An authenticated user, with the credential that was verified.
    User {
        /// The user's name.
        name: String,
        /// The credential the API verified.
        credential: Credential,
    },
}

impl Caller {
    /// The user's name ("" for [`Caller::Anyone`]).
    pub fn name(&self) -> &str {
        match self {
            Caller::Anyone => "",
            Caller::User { name, .. } => name,
        }
    }
}

/// A reference to a verified credential, enough for `apply` to tell whether it is still
/// the one in force.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Credential {
    /// A bearer token, by its hash (as registered with [`AuthCommand::TokenAdd`]).
    Token(String),
    /// A password, verified against the stored hash whose [`password_fingerprint`] this
    /// is: a changed password (a new hash, with a new salt) no longer matches.
    Password(u64),
}

/// A short, deterministic fingerprint of a stored password hash (64-bit FNV-1a of the PHC
/// string), carried by commands instead of the whole hash. Not a security boundary: the
/// password was verified by the server; this only tells whether the hash it was verified
/// against is still the stored one (a new hash has a fresh random salt).
pub fn password_fingerprint(password_hash: &str) -> u64 {
    password_hash
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |hash: u64, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

/// What a caller wants to do, for [`State::authorize`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access<'a> {
    /// Nothing beyond being authenticated (e.g. open a session).
    Authenticated,
    /// A right on a lock (or, for reads of many locks, on a prefix).
    Lock(&'a str, Right),
    /// Act on a session (keepalive, close, acquire or release in it), optionally about
    /// one lock: its owner may; another user needs `admin` on that lock (on every lock
    /// when there is none); a session with no owner is a superuser's only. A session that
    /// is not live is no one's secret: allowed (the command itself then fails).
    Session(SessionId, Option<&'a str>),
    /// Root, or `admin` on every lock.
    Superuser,
}

/// The auth part of the replicated state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AuthState {
    pub(crate) enabled: bool,
    pub(crate) users: BTreeMap<String, UserRecord>,
    pub(crate) roles: BTreeMap<String, Vec<Permission>>,
    /// Bearer tokens by hash → user.
    pub(crate) tokens: BTreeMap<String, String>,
    /// The user that opened each live session (sessions opened with auth on).
    pub(crate) session_owners: BTreeMap<SessionId, String>,
}

/// A read-only summary of the auth configuration (no hashes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthView {
    /// Whether checks are on.
    pub enabled: bool,
    /// Users with their roles.
    pub users: Vec<(String, Vec<String>)>,
    /// Roles with their permissions.
    pub roles: Vec<(String, Vec<Permission>)>,
}

fn check_auth_name(what: &str, name: &str, allow_empty: bool) -> Result<(), AuthError> {
    if (!allow_empty && name.is_empty())
        || name.len() > MAX_AUTH_NAME_BYTES
        || name.chars().any(char::is_control)
    {
        return Err(AuthError::InvalidName(format!(
            "{what} {name:?} must be 1..={MAX_AUTH_NAME_BYTES} bytes without control characters"
        )));
    }
    Ok(())
}

impl State {
    /// Applies an [`AuthCommand`].
    pub(crate) fn apply_auth(
        &mut self,
        command: AuthCommand,
        events: &mut Vec<Event>,
    ) -> Result<Response, Error> {
        self.auth.apply(command).map_err(Error::Auth)?;
        self.auth_revision += 1;
        events.push(Event::AuthChanged {
            revision: self.auth_revision,
        });
        Ok(Response::AuthDone)
    }

    /// The number of auth commands that took effect so far. It changes whenever users,
    /// roles, tokens or the on/off switch may have changed, so a long-lived stream
    /// re-checks its caller when it moves.
    pub fn auth_revision(&self) -> u64 {
        self.auth_revision
    }

    /// Whether `caller` may do `access`, against this state. With auth off, everything is
    /// allowed. With auth on, [`Caller::Anyone`] is refused, and a user must still exist
    /// and its credential still be the one in force before its rights are looked at.
    ///
    /// # Errors
    ///
    /// [`Error::Auth`] with [`AuthError::AuthRequired`], [`AuthError::CredentialRevoked`],
    /// [`AuthError::PermissionDenied`], [`AuthError::NotSessionOwner`] or
    /// [`AuthError::SuperuserRequired`].
    pub fn authorize(&self, caller: &Caller, access: Access<'_>) -> Result<(), Error> {
        if !self.auth.enabled {
            return Ok(());
        }
        let user = self.verify_caller(caller).map_err(Error::Auth)?;
        self.check_access(user, access).map_err(Error::Auth)
    }

    /// The user of `caller` if its credential is the one in force.
    fn verify_caller<'c>(&self, caller: &'c Caller) -> Result<&'c str, AuthError> {
        let Caller::User { name, credential } = caller else {
            return Err(AuthError::AuthRequired);
        };
        let revoked = || AuthError::CredentialRevoked(name.clone());
        let record = self.auth.users.get(name).ok_or_else(revoked)?;
        let current = match credential {
            Credential::Token(hash) => self.auth.tokens.get(hash) == Some(name),
            Credential::Password(fingerprint) => {
                !record.password_hash.is_empty()
                    && password_fingerprint(&record.password_hash) == *fingerprint
            }
        };
        if current { Ok(name) } else { Err(revoked()) }
    }

    fn check_access(&self, user: &str, access: Access<'_>) -> Result<(), AuthError> {
        let superuser = || {
            if self.is_superuser(user) {
                Ok(())
            } else {
                Err(AuthError::SuperuserRequired(user.to_owned()))
            }
        };
        match access {
            Access::Authenticated => Ok(()),
            Access::Lock(name, right) => {
                if self.permits(user, name, right) {
                    Ok(())
                } else {
                    Err(AuthError::PermissionDenied {
                        user: user.to_owned(),
                        name: name.to_owned(),
                        right,
                    })
                }
            }
            Access::Session(session, name) => {
                if !self.sessions.contains_key(&session) {
                    return Ok(());
                }
                let allowed = match self.auth.session_owners.get(&session) {
                    Some(owner) if owner == user => true,
                    Some(_) => self.permits(user, name.unwrap_or(""), Right::Admin),
                    None => self.is_superuser(user),
                };
                if allowed {
                    Ok(())
                } else {
                    Err(AuthError::NotSessionOwner(session))
                }
            }
            Access::Superuser => superuser(),
        }
    }

    /// Whether `caller` may have `command` applied, against this state: the judge of
    /// [`Command::Authorized`]. What each command needs (with auth on):
    ///
    /// | command | needs |
    /// |---|---|
    /// | `OpenSession` | an authenticated user (a client id naming a live session that is not the user's is refused when applied, superusers excepted) |
    /// | `AcquireWithLease` | `acquire` on the lock (and the same for its client id) |
    /// | `AcquireLocksWithLease` | `acquire` on every lock (and the same for its client id) |
    /// | `AcquireLocks` | `acquire` on every lock, and the session |
    /// | `SetValue` | `acquire` on the lock, and the session |
    /// | `Acquire` | `acquire` on the lock, and the session (see [`Access::Session`]) |
    /// | `Release` | `release` on the lock, and the session |
    /// | `CancelWait` | the session (about that lock) |
    /// | `CloseSession` | the session |
    /// | `ForceRelease` | `admin` on the lock |
    /// | `RevokeSession`, `Auth` | a superuser (`UserPasswd` of one's own password: the user itself) |
    /// | `Once` | what the command it wraps needs |
    ///
    /// # Errors
    ///
    /// As [`State::authorize`], and [`Error::BadWrapper`] for a command that cannot be
    /// sent on behalf of a caller (`ExpireSessions`, `SetLimits`, `WallClock`,
    /// `EndLockDelay`, `SetPrimitiveLimits`, `SetClusterVersion`, `Owned`, `Authorized`).
    pub fn authorize_command(&self, caller: &Caller, command: &Command) -> Result<(), Error> {
        let accesses: Vec<Access<'_>> = match command {
            Command::OpenSession { .. } => vec![Access::Authenticated],
            Command::AcquireWithLease { name, .. } => vec![Access::Lock(name, Right::Acquire)],
            Command::Acquire { session, name, .. } => vec![
                Access::Lock(name, Right::Acquire),
                Access::Session(*session, Some(name)),
            ],
            Command::Release { session, name, .. } => vec![
                Access::Lock(name, Right::Release),
                Access::Session(*session, Some(name)),
            ],
            Command::AcquireLocksWithLease { locks, .. } => locks
                .iter()
                .map(|spec| Access::Lock(&spec.name, Right::Acquire))
                .collect(),
            Command::AcquireLocks { session, locks, .. } => locks
                .iter()
                .flat_map(|spec| {
                    [
                        Access::Lock(&spec.name, Right::Acquire),
                        Access::Session(*session, Some(&spec.name)),
                    ]
                })
                .collect(),
            Command::SetValue { session, name, .. } => vec![
                Access::Lock(name, Right::Acquire),
                Access::Session(*session, Some(name)),
            ],
            Command::CancelWait { session, name } => vec![Access::Session(*session, Some(name))],
            Command::CloseSession { session } => vec![Access::Session(*session, None)],
            Command::ForceRelease { name } => vec![Access::Lock(name, Right::Admin)],
            Command::Auth(AuthCommand::UserPasswd { name, .. }) if name == caller.name() => {
                vec![Access::Authenticated]
            }
            Command::RevokeSession { .. } | Command::Auth(_) => vec![Access::Superuser],
            Command::Once { command, .. } => {
                check_once_wraps(command)?;
                return self.authorize_command(caller, command);
            }
            Command::ExpireSessions { .. }
            | Command::SetLimits(_)
            | Command::WallClock { .. }
            | Command::EndLockDelay { .. }
            | Command::SetPrimitiveLimits(_)
            | Command::SetClusterVersion { .. }
            | Command::Owned { .. }
            | Command::Authorized { .. } => {
                return Err(Error::BadWrapper(
                    "the leader's own commands and wrappers carry no caller".to_owned(),
                ));
            }
        };
        accesses
            .into_iter()
            .try_for_each(|access| self.authorize(caller, access))
    }

    /// Applies [`Command::Authorized`]: refuses what the caller may not do, then applies
    /// the command; a session it opens becomes the caller's.
    pub(crate) fn apply_authorized(
        &mut self,
        caller: Caller,
        command: Command,
        events: &mut Vec<Event>,
    ) -> Result<Response, Error> {
        self.authorize_command(&caller, &command)?;
        match (caller, command) {
            (
                Caller::User { name, .. },
                command @ (Command::OpenSession { .. }
                | Command::AcquireWithLease { .. }
                | Command::AcquireLocksWithLease { .. }),
            ) => self.open_as_user(name, command, events),
            (_, command) => self.apply(command, events),
        }
    }

    /// `OpenSession` or `AcquireWithLease` by an authenticated user. A live session of the
    /// same client id must be the user's own (a superuser may use any, without becoming
    /// its owner); a session it creates is recorded as the user's.
    fn open_as_user(
        &mut self,
        user: String,
        command: Command,
        events: &mut Vec<Event>,
    ) -> Result<Response, Error> {
        let client_id = match &command {
            Command::OpenSession { client_id, .. }
            | Command::AcquireWithLease { client_id, .. }
            | Command::AcquireLocksWithLease { client_id, .. } => *client_id,
            _ => return Err(Error::Auth(AuthError::NotOwnable)),
        };
        let existing = self.sessions_by_client.get(&client_id).copied();
        if let Some(session) = existing
            && self.auth.enabled
            && self.session_owner(session) != Some(user.as_str())
            && !self.is_superuser(&user)
        {
            return Err(Error::Auth(AuthError::NotSessionOwner(session)));
        }
        let response = self.apply(command, events)?;
        if existing.is_none()
            && let Some(&session) = self.sessions_by_client.get(&client_id)
        {
            self.auth.session_owners.insert(session, user);
        }
        Ok(response)
    }

    /// Applies `OpenSession` or `AcquireWithLease` on behalf of `owner`, recording the
    /// owner of the session it opens.
    pub(crate) fn apply_owned(
        &mut self,
        owner: String,
        command: Command,
        events: &mut Vec<Event>,
    ) -> Result<Response, Error> {
        let client_id = match &command {
            Command::OpenSession { client_id, .. }
            | Command::AcquireWithLease { client_id, .. }
            | Command::AcquireLocksWithLease { client_id, .. } => *client_id,
            _ => return Err(Error::Auth(AuthError::NotOwnable)),
        };
        if let Some(&session) = self.sessions_by_client.get(&client_id)
            && self
                .auth
                .session_owners
                .get(&session)
                .is_some_and(|existing| *existing != owner)
        {
            return Err(Error::Auth(AuthError::NotSessionOwner(session)));
        }
        let response = self.apply(command, events)?;
        let session = match &response {
            Response::SessionOpened { session, .. }
            | Response::Granted { session, .. }
            | Response::GrantedLocks { session, .. }
            | Response::Queued { session } => Some(*session),
            _ => None,
        };
        if let Some(session) = session
            && self.sessions.contains_key(&session)
        {
            self.auth.session_owners.entry(session).or_insert(owner);
        }
        Ok(response)
    }

    /// Forgets the owner of an ended session.
    pub(crate) fn forget_session_owner(&mut self, session: SessionId) {
        self.auth.session_owners.remove(&session);
    }

    /// How many answers of session-less requests ([`Command::Once`]) are remembered.
    pub fn remembered_requests(&self) -> usize {
        self.recent_requests.answers.len()
    }

    /// Whether authentication and permission checks are on.
    pub fn auth_enabled(&self) -> bool {
        self.auth.enabled
    }

    /// The stored password hash (PHC string) of `user`, if the user exists.
    pub fn password_hash(&self, user: &str) -> Option<&str> {
        self.auth
            .users
            .get(user)
            .map(|record| record.password_hash.as_str())
    }

    /// The user a bearer token (given by its hash) acts as.
    pub fn token_user(&self, token_hash: &str) -> Option<&str> {
        self.auth
            .tokens
            .get(token_hash)
            .filter(|user| self.auth.users.contains_key(*user))
            .map(String::as_str)
    }

    /// Whether `user` exists.
    pub fn user_exists(&self, user: &str) -> bool {
        self.auth.users.contains_key(user)
    }

    /// The rights `user` has on the lock `name`: the union over its roles' permissions
    /// whose prefix starts `name`. `root` has every right.
    pub fn rights_on(&self, user: &str, name: &str) -> Rights {
        if user == ROOT_USER {
            return Rights {
                acquire: true,
                release: true,
                read: true,
                admin: true,
            };
        }
        let Some(record) = self.auth.users.get(user) else {
            return Rights::default();
        };
        record
            .roles
            .iter()
            .filter_map(|role| self.auth.roles.get(role))
            .flatten()
            .filter(|permission| name.starts_with(&permission.prefix))
            .fold(Rights::default(), |acc, permission| {
                acc.union(permission.rights)
            })
    }

    /// Whether `user` has `right` on the lock `name`.
    pub fn permits(&self, user: &str, name: &str, right: Right) -> bool {
        self.rights_on(user, name).grants(right)
    }

    /// Whether `user` is `root` or has `admin` on the empty prefix (every lock).
    pub fn is_superuser(&self, user: &str) -> bool {
        self.permits(user, "", Right::Admin)
    }

    /// The user that opened `session` with auth on, if recorded.
    pub fn session_owner(&self, session: SessionId) -> Option<&str> {
        self.auth.session_owners.get(&session).map(String::as_str)
    }

    /// Users, roles and whether auth is on (no hashes).
    pub fn auth_view(&self) -> AuthView {
        AuthView {
            enabled: self.auth.enabled,
            users: self
                .auth
                .users
                .iter()
                .map(|(name, record)| (name.clone(), record.roles.iter().cloned().collect()))
                .collect(),
            roles: self
                .auth
                .roles
                .iter()
                .map(|(name, permissions)| (name.clone(), permissions.clone()))
                .collect(),
        }
    }

    /// Auth invariants: session owners are live sessions; user roles exist.
    pub(crate) fn check_auth_invariants(&self) -> Result<(), String> {
        if let Some(session) = self
            .auth
            .session_owners
            .keys()
            .find(|session| !self.sessions.contains_key(session))
        {
            return Err(format!("session {session} has an owner but is not live"));
        }
        for (user, record) in &self.auth.users {
            if let Some(role) = record
                .roles
                .iter()
                .find(|role| !self.auth.roles.contains_key(*role))
            {
                return Err(format!("user {user:?} has the unknown role {role:?}"));
            }
        }
        if self.auth.enabled && !self.auth.users.contains_key(ROOT_USER) {
            return Err("auth is on without a root user".to_owned());
        }
        let recent = &self.recent_requests;
        if recent.answers.len() != recent.order.len()
            || recent
                .order
                .iter()
                .any(|id| !recent.answers.contains_key(id))
        {
            return Err("the remembered request answers and their order disagree".to_owned());
        }
        Ok(())
    }
}

/// `Once` wraps only the session-less mutations, bare or inside `Authorized` (then a retry
/// gets the first answer even if the caller's rights changed since: it acted once, when
/// it was allowed).
fn check_once_wraps(command: &Command) -> Result<(), Error> {
    let inner = match command {
        Command::Authorized { command, .. } => command,
        command => command,
    };
    match inner {
        Command::ForceRelease { .. } | Command::RevokeSession { .. } | Command::Auth(_) => Ok(()),
        _ => Err(Error::BadWrapper(
            "Once wraps only ForceRelease, RevokeSession and auth commands".to_owned(),
        )),
    }
}

impl State {
    /// Applies [`Command::Once`]: a request id seen among the last `remember` gets its
    /// first answer again; a new one is applied and its answer remembered (the oldest
    /// remembered answer is forgotten beyond `remember`).
    pub(crate) fn apply_once(
        &mut self,
        request: u128,
        remember: u64,
        command: Command,
        events: &mut Vec<Event>,
    ) -> Result<Response, Error> {
        check_once_wraps(&command)?;
        if remember == 0 || remember > crate::types::Once::MAX_REMEMBER {
            return Err(Error::BadWrapper(format!(
                "Once must remember 1..={} answers, not {remember}",
                crate::types::Once::MAX_REMEMBER
            )));
        }
        if let Some(answer) = self.recent_requests.answer(request) {
            return answer.clone();
        }
        let answer = self.apply(command, events);
        self.recent_requests
            .remember(request, answer.clone(), remember);
        answer
    }
}

/// The answers of the last session-less requests ([`Command::Once`]), by request id, and
/// their order of arrival for eviction (oldest first).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RecentRequests {
    pub(crate) answers: BTreeMap<u128, Result<Response, Error>>,
    pub(crate) order: std::collections::VecDeque<u128>,
}

impl RecentRequests {
    fn answer(&self, request: u128) -> Option<&Result<Response, Error>> {
        self.answers.get(&request)
    }

    fn remember(&mut self, request: u128, answer: Result<Response, Error>, keep: u64) {
        self.answers.insert(request, answer);
        self.order.push_back(request);
        while crate::state::count(self.order.len()) > keep {
            let oldest = self.order.pop_front().expect("longer than keep >= 1");
            self.answers.remove(&oldest);
        }
    }
}

impl AuthState {
    fn apply(&mut self, command: AuthCommand) -> Result<(), AuthError> {
        match command {
            AuthCommand::Enable => {
                if !self.users.contains_key(ROOT_USER) {
                    return Err(AuthError::RootRequired);
                }
                self.enabled = true;
            }
            AuthCommand::Disable => self.enabled = false,
            AuthCommand::UserAdd {
                name,
                password_hash,
            } => {
                check_auth_name("user", &name, false)?;
                if self.users.contains_key(&name) {
                    return Err(AuthError::UserExists(name));
                }
                self.users.insert(
                    name,
                    UserRecord {
                        password_hash,
                        roles: BTreeSet::new(),
                    },
                );
            }
            AuthCommand::UserRemove { name } => {
                if !self.users.contains_key(&name) {
                    return Err(AuthError::UserNotFound(name));
                }
                if self.enabled && name == ROOT_USER {
                    return Err(AuthError::RootRequired);
                }
                self.users.remove(&name);
                self.tokens.retain(|_, user| *user != name);
                // A user created later with this name inherits none of these sessions.
                self.session_owners.retain(|_, owner| *owner != name);
            }
            AuthCommand::UserPasswd {
                name,
                password_hash,
            } => {
                let record = self
                    .users
                    .get_mut(&name)
                    .ok_or(AuthError::UserNotFound(name))?;
                record.password_hash = password_hash;
            }
            AuthCommand::UserGrantRole { user, role } => {
                if !self.roles.contains_key(&role) {
                    return Err(AuthError::RoleNotFound(role));
                }
                let record = self
                    .users
                    .get_mut(&user)
                    .ok_or(AuthError::UserNotFound(user))?;
                record.roles.insert(role);
            }
            AuthCommand::UserRevokeRole { user, role } => {
                let record = self
                    .users
                    .get_mut(&user)
                    .ok_or(AuthError::UserNotFound(user))?;
                if !record.roles.remove(&role) {
                    return Err(AuthError::RoleNotFound(role));
                }
            }
            AuthCommand::RoleAdd { name } => {
                check_auth_name("role", &name, false)?;
                if self.roles.contains_key(&name) {
                    return Err(AuthError::RoleExists(name));
                }
                self.roles.insert(name, Vec::new());
            }
            AuthCommand::RoleRemove { name } => {
                if self.roles.remove(&name).is_none() {
                    return Err(AuthError::RoleNotFound(name));
                }
                for record in self.users.values_mut() {
                    record.roles.remove(&name);
                }
            }
            AuthCommand::RoleGrant {
                role,
                prefix,
                rights,
            } => {
                check_auth_name("prefix", &prefix, true)?;
                let permissions = self
                    .roles
                    .get_mut(&role)
                    .ok_or(AuthError::RoleNotFound(role))?;
                match permissions.iter_mut().find(|p| p.prefix == prefix) {
                    Some(permission) => permission.rights = permission.rights.union(rights),
                    None => permissions.push(Permission { prefix, rights }),
                }
            }
            AuthCommand::RoleRevoke { role, prefix } => {
                let permissions = self
                    .roles
                    .get_mut(&role)
                    .ok_or(AuthError::RoleNotFound(role))?;
                permissions.retain(|p| p.prefix != prefix);
            }
            AuthCommand::TokenAdd { token_hash, user } => {
                if !self.users.contains_key(&user) {
                    return Err(AuthError::UserNotFound(user));
                }
                self.tokens.insert(token_hash, user);
            }
            AuthCommand::TokenRemove { token_hash } => {
                self.tokens.remove(&token_hash);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ClientId, LockMode, WaitPolicy};

    fn run(state: &mut State, command: AuthCommand) -> Result<Response, Error> {
        state.apply(Command::Auth(command), &mut Vec::new())
    }

    fn add_user(state: &mut State, name: &str) {
        run(
            state,
            AuthCommand::UserAdd {
                name: name.into(),
                password_hash: format!("hash-of-{name}"),
            },
        )
        .unwrap();
    }

    fn rights(acquire: bool, release: bool, read: bool, admin: bool) -> Rights {
        Rights {
            acquire,
            release,
            read,
            admin,
        }
    }

    #[test]
    fn enable_needs_root_and_root_cannot_be_removed_while_on() {
        let mut state = State::default();
        assert!(!state.auth_enabled());
        assert_eq!(
            run(&mut state, AuthCommand::Enable),
            Err(Error::Auth(AuthError::RootRequired))
        );
        add_user(&mut state, ROOT_USER);
        assert_eq!(run(&mut state, AuthCommand::Enable), Ok(Response::AuthDone));
        assert!(state.auth_enabled());
        assert_eq!(
            run(
                &mut state,
                AuthCommand::UserRemove {
                    name: ROOT_USER.into()
                }
            ),
            Err(Error::Auth(AuthError::RootRequired))
        );
        run(&mut state, AuthCommand::Disable).unwrap();
        assert!(!state.auth_enabled());
        run(
            &mut state,
            AuthCommand::UserRemove {
                name: ROOT_USER.into(),
            },
        )
        .unwrap();
        state.check_invariants().unwrap();
    }

    #[test]
    fn users_roles_and_their_errors() {
        let mut state = State::default();
        add_user(&mut state, "alice");
        assert_eq!(state.password_hash("alice"), Some("hash-of-alice"));
        assert_eq!(
            run(
                &mut state,
                AuthCommand::UserAdd {
                    name: "alice".into(),
                    password_hash: String::new()
                }
            ),
            Err(Error::Auth(AuthError::UserExists("alice".into())))
        );
        assert!(matches!(
            run(
                &mut state,
                AuthCommand::UserAdd {
                    name: String::new(),
                    password_hash: String::new()
                }
            ),
            Err(Error::Auth(AuthError::InvalidName(_)))
        ));
        assert_eq!(
            run(
                &mut state,
                AuthCommand::UserPasswd {
                    name: "bob".into(),
                    password_hash: String::new()
                }
            ),
            Err(Error::Auth(AuthError::UserNotFound("bob".into())))
        );
        run(
            &mut state,
            AuthCommand::UserPasswd {
                name: "alice".into(),
                password_hash: "new".into(),
            },
        )
        .unwrap();
        assert_eq!(state.password_hash("alice"), Some("new"));
        assert_eq!(
            run(
                &mut state,
                AuthCommand::UserGrantRole {
                    user: "alice".into(),
                    role: "jobs".into()
                }
            ),
            Err(Error::Auth(AuthError::RoleNotFound("jobs".into())))
        );
        run(
            &mut state,
            AuthCommand::RoleAdd {
                name: "jobs".into(),
            },
        )
        .unwrap();
        assert_eq!(
            run(
                &mut state,
                AuthCommand::RoleAdd {
                    name: "jobs".into()
                }
            ),
            Err(Error::Auth(AuthError::RoleExists("jobs".into())))
        );
        assert_eq!(
            run(
                &mut state,
                AuthCommand::RoleGrant {
                    role: "nope".into(),
                    prefix: "x".into(),
                    rights: Rights::default()
                }
            ),
            Err(Error::Auth(AuthError::RoleNotFound("nope".into())))
        );
        run(
            &mut state,
            AuthCommand::RoleGrant {
                role: "jobs".into(),
                prefix: "jobs/".into(),
                rights: rights(true, false, false, false),
            },
        )
        .unwrap();
        run(
            &mut state,
            AuthCommand::RoleGrant {
                role: "jobs".into(),
                prefix: "jobs/".into(),
                rights: rights(false, true, true, false),
            },
        )
        .unwrap();
        run(
            &mut state,
            AuthCommand::UserGrantRole {
                user: "alice".into(),
                role: "jobs".into(),
            },
        )
        .unwrap();
        assert!(state.permits("alice", "jobs/a", Right::Acquire));
        assert!(state.permits("alice", "jobs/a", Right::Release));
        assert!(state.permits("alice", "jobs/a", Right::Read));
        assert!(!state.permits("alice", "jobs/a", Right::Admin));
        assert!(!state.permits("alice", "other", Right::Acquire));
        assert!(!state.permits("nobody", "jobs/a", Right::Read));
        assert!(state.permits(ROOT_USER, "anything", Right::Admin));
        assert!(!state.is_superuser("alice"));
        run(
            &mut state,
            AuthCommand::RoleRevoke {
                role: "jobs".into(),
                prefix: "jobs/".into(),
            },
        )
        .unwrap();
        assert!(!state.permits("alice", "jobs/a", Right::Acquire));
        run(
            &mut state,
            AuthCommand::RoleGrant {
                role: "jobs".into(),
                prefix: String::new(),
                rights: rights(false, false, false, true),
            },
        )
        .unwrap();
        assert!(state.is_superuser("alice"));
        assert!(
            state.permits("alice", "x", Right::Acquire),
            "admin implies the rest"
        );
        run(
            &mut state,
            AuthCommand::RoleRemove {
                name: "jobs".into(),
            },
        )
        .unwrap();
        assert!(!state.is_superuser("alice"));
        assert_eq!(state.auth_view().users, vec![("alice".into(), vec![])]);
        state.check_invariants().unwrap();
    }

    #[test]
    fn tokens_act_as_their_user_until_it_is_removed() {
        let mut state = State::default();
        assert_eq!(
            run(
                &mut state,
                AuthCommand::TokenAdd {
                    token_hash: "h".into(),
                    user: "alice".into()
                }
            ),
            Err(Error::Auth(AuthError::UserNotFound("alice".into())))
        );
        add_user(&mut state, "alice");
        run(
            &mut state,
            AuthCommand::TokenAdd {
                token_hash: "h".into(),
                user: "alice".into(),
            },
        )
        .unwrap();
        assert_eq!(state.token_user("h"), Some("alice"));
        run(
            &mut state,
            AuthCommand::UserRemove {
                name: "alice".into(),
            },
        )
        .unwrap();
        assert_eq!(state.token_user("h"), None);
    }

    #[test]
    fn owned_sessions_record_their_owner_until_they_end() {
        let mut state = State::default();
        let mut events = Vec::new();
        let open = |client| Command::OpenSession {
            client_id: ClientId(client),
            ttl_ms: 10_000,
        };
        let owned = |owner: &str, command: Command| Command::Owned {
            owner: owner.into(),
            command: Box::new(command),
        };
        let Ok(Response::SessionOpened { session, .. }) =
            state.apply(owned("alice", open(1)), &mut events)
        else {
            panic!("opened")
        };
        assert_eq!(state.session_owner(session), Some("alice"));
        // Retried by its owner: the same session; by another user: refused.
        assert!(matches!(
            state.apply(owned("alice", open(1)), &mut events),
            Ok(Response::SessionOpened { session: s, .. }) if s == session
        ));
        assert_eq!(
            state.apply(owned("bob", open(1)), &mut events),
            Err(Error::Auth(AuthError::NotSessionOwner(session)))
        );
        assert_eq!(
            state.apply(owned("bob", Command::CloseSession { session }), &mut events),
            Err(Error::Auth(AuthError::NotOwnable))
        );
        let lease = Command::AcquireWithLease {
            client_id: ClientId(2),
            ttl_ms: 10_000,
            name: "a".into(),
            mode: LockMode::Exclusive,
            wait: WaitPolicy::NoWait,
            value: Vec::new(),
        };
        let Ok(Response::Granted {
            session: leased, ..
        }) = state.apply(owned("bob", lease), &mut events)
        else {
            panic!("granted")
        };
        assert_eq!(state.session_owner(leased), Some("bob"));
        state
            .apply(Command::CloseSession { session }, &mut events)
            .unwrap();
        assert_eq!(state.session_owner(session), None);
        state
            .apply(
                Command::ExpireSessions {
                    sessions: vec![leased],
                },
                &mut events,
            )
            .unwrap();
        assert_eq!(state.session_owner(leased), None);
        state.check_invariants().unwrap();
    }

    /// root, alice (acquire/release/read on "jobs/"), bob (acquire/release/read on
    /// everything), carol (admin on "jobs/"); a token for alice; auth on.
    fn cluster_with_users() -> State {
        let mut state = State::default();
        for user in [ROOT_USER, "alice", "bob", "carol"] {
            add_user(&mut state, user);
        }
        for (role, prefix, granted) in [
            ("jobs", "jobs/", rights(true, true, true, false)),
            ("all", "", rights(true, true, true, false)),
            ("jobs-admin", "jobs/", rights(false, false, false, true)),
        ] {
            run(&mut state, AuthCommand::RoleAdd { name: role.into() }).unwrap();
            run(
                &mut state,
                AuthCommand::RoleGrant {
                    role: role.into(),
                    prefix: prefix.into(),
                    rights: granted,
                },
            )
            .unwrap();
        }
        for (user, role) in [("alice", "jobs"), ("bob", "all"), ("carol", "jobs-admin")] {
            run(
                &mut state,
                AuthCommand::UserGrantRole {
                    user: user.into(),
                    role: role.into(),
                },
            )
            .unwrap();
        }
        run(
            &mut state,
            AuthCommand::TokenAdd {
                token_hash: "alice-token".into(),
                user: "alice".into(),
            },
        )
        .unwrap();
        run(&mut state, AuthCommand::Enable).unwrap();
        state
    }

    /// `user` with the password credential the server would attach now.
    fn with_password(state: &State, user: &str) -> Caller {
        Caller::User {
            name: user.into(),
            credential: Credential::Password(password_fingerprint(
                state.password_hash(user).unwrap(),
            )),
        }
    }

    fn as_caller(caller: &Caller, command: Command) -> Command {
        Command::Authorized {
            caller: caller.clone(),
            command: Box::new(command),
        }
    }

    fn open_as(state: &mut State, caller: &Caller, client: u128) -> SessionId {
        let open = Command::OpenSession {
            client_id: ClientId(client),
            ttl_ms: 10_000,
        };
        match state.apply(as_caller(caller, open), &mut Vec::new()) {
            Ok(Response::SessionOpened { session, .. }) => session,
            other => panic!("open: {other:?}"),
        }
    }

    fn acquire(session: SessionId, seq: u64, name: &str) -> Command {
        Command::Acquire {
            session,
            request: crate::types::RequestId {
                seq,
                first_unanswered_seq: 1,
            },
            name: name.into(),
            mode: LockMode::Exclusive,
            wait: WaitPolicy::Queue,
            value: Vec::new(),
        }
    }

    fn auth_error(result: Result<Response, Error>) -> AuthError {
        match result {
            Err(Error::Auth(error)) => error,
            other => panic!("expected an auth refusal, got {other:?}"),
        }
    }

    #[test]
    fn apply_refuses_callers_whose_credential_is_no_longer_in_force() {
        let mut state = cluster_with_users();
        let mut events = Vec::new();
        let alice = with_password(&state, "alice");
        let alice_token = Caller::User {
            name: "alice".into(),
            credential: Credential::Token("alice-token".into()),
        };
        let session = open_as(&mut state, &alice, 1);
        let grant = state.apply(
            as_caller(&alice_token, acquire(session, 1, "jobs/a")),
            &mut events,
        );
        assert!(matches!(grant, Ok(Response::Granted { .. })), "{grant:?}");

        // Auth on: a command checked while it was off (no caller) is refused.
        let anyone = state.apply(
            as_caller(&Caller::Anyone, acquire(session, 2, "jobs/b")),
            &mut events,
        );
        assert_eq!(auth_error(anyone), AuthError::AuthRequired);

        // The token revoked in an earlier entry: refused, though the proposer saw it valid.
        run(
            &mut state,
            AuthCommand::TokenRemove {
                token_hash: "alice-token".into(),
            },
        )
        .unwrap();
        let revoked = state.apply(
            as_caller(&alice_token, acquire(session, 3, "jobs/c")),
            &mut events,
        );
        assert!(auth_error(revoked).is_unauthenticated());
        // A token that never existed, for an existing user: refused as well.
        let forged = Caller::User {
            name: "alice".into(),
            credential: Credential::Token("made-up".into()),
        };
        assert!(
            auth_error(state.apply(
                as_caller(&forged, acquire(session, 4, "jobs/d")),
                &mut events
            ))
            .is_unauthenticated()
        );

        // The password changed since it was verified.
        run(
            &mut state,
            AuthCommand::UserPasswd {
                name: "alice".into(),
                password_hash: "another-hash".into(),
            },
        )
        .unwrap();
        let stale = state.apply(
            as_caller(&alice, Command::CloseSession { session }),
            &mut events,
        );
        assert_eq!(
            auth_error(stale),
            AuthError::CredentialRevoked("alice".into())
        );
        let fresh = with_password(&state, "alice");
        state
            .apply(
                as_caller(&fresh, acquire(session, 5, "jobs/e")),
                &mut events,
            )
            .unwrap();

        // The user removed.
        run(
            &mut state,
            AuthCommand::UserRemove {
                name: "alice".into(),
            },
        )
        .unwrap();
        let removed = state.apply(
            as_caller(&fresh, acquire(session, 6, "jobs/f")),
            &mut events,
        );
        assert_eq!(
            auth_error(removed),
            AuthError::CredentialRevoked("alice".into())
        );
        state.check_invariants().unwrap();
    }

    #[test]
    fn apply_refuses_missing_rights_and_other_users_sessions() {
        let mut state = cluster_with_users();
        let mut events = Vec::new();
        let alice = with_password(&state, "alice");
        let bob = with_password(&state, "bob");
        let carol = with_password(&state, "carol");
        let root = with_password(&state, ROOT_USER);
        let session = open_as(&mut state, &alice, 1);

        // A right missing on the lock name.
        let outside = state.apply(
            as_caller(&alice, acquire(session, 1, "billing/a")),
            &mut events,
        );
        assert_eq!(
            auth_error(outside),
            AuthError::PermissionDenied {
                user: "alice".into(),
                name: "billing/a".into(),
                right: Right::Acquire
            }
        );
        let Ok(Response::Granted { token, .. }) = state.apply(
            as_caller(&alice, acquire(session, 2, "jobs/a")),
            &mut events,
        ) else {
            panic!("granted")
        };
        // The right taken away in an earlier entry.
        run(
            &mut state,
            AuthCommand::UserRevokeRole {
                user: "alice".into(),
                role: "jobs".into(),
            },
        )
        .unwrap();
        let release = |seq| Command::Release {
            session,
            request: crate::types::RequestId {
                seq,
                first_unanswered_seq: 1,
            },
            name: "jobs/a".into(),
            token,
        };
        assert!(
            auth_error(state.apply(as_caller(&alice, release(3)), &mut events))
                .is_permission_denied()
        );
        run(
            &mut state,
            AuthCommand::UserGrantRole {
                user: "alice".into(),
                role: "jobs".into(),
            },
        )
        .unwrap();

        // Another user's session: bob has every right on the names, but not the session.
        for command in [
            release(4),
            acquire(session, 5, "jobs/b"),
            Command::CloseSession { session },
            Command::CancelWait {
                session,
                name: "jobs/a".into(),
            },
        ] {
            assert_eq!(
                auth_error(state.apply(as_caller(&bob, command), &mut events)),
                AuthError::NotSessionOwner(session)
            );
        }
        // Nor may bob claim it by its client id.
        let claim = Command::OpenSession {
            client_id: ClientId(1),
            ttl_ms: 10_000,
        };
        assert_eq!(
            auth_error(state.apply(as_caller(&bob, claim.clone()), &mut events)),
            AuthError::NotSessionOwner(session)
        );
        // Admin on the name may act on the session about that name, not about others.
        assert_eq!(
            state.apply(as_caller(&carol, release(6)), &mut events),
            Ok(Response::Released)
        );
        assert!(
            auth_error(state.apply(
                as_caller(&carol, Command::CloseSession { session }),
                &mut events
            ))
            .is_permission_denied()
        );

        // Admin commands: force release needs admin on the name, revoke and auth commands
        // a superuser; a user may change its own password only.
        let force = |name: &str| Command::ForceRelease { name: name.into() };
        assert!(
            auth_error(state.apply(as_caller(&bob, force("jobs/a")), &mut events))
                .is_permission_denied()
        );
        state
            .apply(as_caller(&carol, force("jobs/a")), &mut events)
            .unwrap();
        assert_eq!(
            auth_error(state.apply(
                as_caller(&carol, Command::RevokeSession { session }),
                &mut events
            )),
            AuthError::SuperuserRequired("carol".into())
        );
        let role = Command::Auth(AuthCommand::RoleAdd { name: "x".into() });
        assert_eq!(
            auth_error(state.apply(as_caller(&bob, role.clone()), &mut events)),
            AuthError::SuperuserRequired("bob".into())
        );
        state.apply(as_caller(&root, role), &mut events).unwrap();
        let passwd = |name: &str| {
            Command::Auth(AuthCommand::UserPasswd {
                name: name.into(),
                password_hash: "new".into(),
            })
        };
        assert!(
            auth_error(state.apply(as_caller(&bob, passwd("alice")), &mut events))
                .is_permission_denied()
        );
        state
            .apply(as_caller(&bob, passwd("bob")), &mut events)
            .unwrap();

        // The leader's own commands and nested wrappers cannot carry a caller.
        for command in [
            Command::ExpireSessions {
                sessions: vec![session],
            },
            Command::SetLimits(crate::types::Limits::default()),
            as_caller(&root, Command::CloseSession { session }),
        ] {
            assert!(matches!(
                state.apply(as_caller(&root, command), &mut events),
                Err(Error::BadWrapper(_))
            ));
        }
        // root may use (and end) any session.
        state
            .apply(
                as_caller(&root, Command::RevokeSession { session }),
                &mut events,
            )
            .unwrap();
        state.check_invariants().unwrap();
    }

    #[test]
    fn sessions_opened_while_auth_was_off_are_a_superusers_only() {
        let mut state = State::default();
        let mut events = Vec::new();
        let session = open_as(&mut state, &Caller::Anyone, 1);
        assert_eq!(state.session_owner(session), None);
        for user in [ROOT_USER, "bob"] {
            add_user(&mut state, user);
        }
        run(&mut state, AuthCommand::RoleAdd { name: "all".into() }).unwrap();
        run(
            &mut state,
            AuthCommand::RoleGrant {
                role: "all".into(),
                prefix: String::new(),
                rights: rights(true, true, true, false),
            },
        )
        .unwrap();
        run(
            &mut state,
            AuthCommand::UserGrantRole {
                user: "bob".into(),
                role: "all".into(),
            },
        )
        .unwrap();
        run(&mut state, AuthCommand::Enable).unwrap();
        let bob = with_password(&state, "bob");
        let root = with_password(&state, ROOT_USER);
        // Whoever learns the client id claims nothing, by open or by use.
        let claim = Command::OpenSession {
            client_id: ClientId(1),
            ttl_ms: 10_000,
        };
        assert_eq!(
            auth_error(state.apply(as_caller(&bob, claim.clone()), &mut events)),
            AuthError::NotSessionOwner(session)
        );
        assert_eq!(
            auth_error(state.apply(as_caller(&bob, acquire(session, 1, "a")), &mut events)),
            AuthError::NotSessionOwner(session)
        );
        assert_eq!(
            state.authorize(&bob, Access::Session(session, None)),
            Err(Error::Auth(AuthError::NotSessionOwner(session)))
        );
        assert_eq!(
            state.authorize(&Caller::Anyone, Access::Session(session, None)),
            Err(Error::Auth(AuthError::AuthRequired))
        );
        // A superuser may, without becoming its owner.
        assert!(matches!(
            state.apply(as_caller(&root, claim), &mut events),
            Ok(Response::SessionOpened { session: s, .. }) if s == session
        ));
        assert_eq!(state.session_owner(session), None);
        assert!(
            state
                .authorize(&root, Access::Session(session, None))
                .is_ok()
        );
        state.check_invariants().unwrap();
    }

    #[test]
    fn a_removed_user_leaves_its_sessions_to_no_one() {
        let mut state = cluster_with_users();
        let mut events = Vec::new();
        let alice = with_password(&state, "alice");
        let session = open_as(&mut state, &alice, 1);
        assert_eq!(state.session_owner(session), Some("alice"));
        run(
            &mut state,
            AuthCommand::UserRemove {
                name: "alice".into(),
            },
        )
        .unwrap();
        assert_eq!(state.session_owner(session), None);
        // Re-created with the same name: a new password hash, and no sessions.
        add_user(&mut state, "alice");
        run(
            &mut state,
            AuthCommand::UserGrantRole {
                user: "alice".into(),
                role: "jobs".into(),
            },
        )
        .unwrap();
        let new_alice = with_password(&state, "alice");
        assert_eq!(
            auth_error(state.apply(
                as_caller(&new_alice, acquire(session, 1, "jobs/a")),
                &mut events
            )),
            AuthError::NotSessionOwner(session)
        );
        assert_eq!(
            state.authorize(&new_alice, Access::Session(session, None)),
            Err(Error::Auth(AuthError::NotSessionOwner(session)))
        );
        state.check_invariants().unwrap();
    }

    #[test]
    fn with_auth_off_every_caller_may_and_auth_changes_are_events() {
        let mut state = State::default();
        let mut events = Vec::new();
        let session = open_as(&mut state, &Caller::Anyone, 1);
        state
            .apply(
                as_caller(&Caller::Anyone, acquire(session, 1, "a")),
                &mut events,
            )
            .unwrap();
        let revision = state.auth_revision();
        events.clear();
        add_user(&mut state, ROOT_USER);
        let mut events = Vec::new();
        state
            .apply(Command::Auth(AuthCommand::Enable), &mut events)
            .unwrap();
        assert_eq!(state.auth_revision(), revision + 2);
        assert_eq!(
            events,
            vec![Event::AuthChanged {
                revision: revision + 2
            }]
        );
    }

    #[test]
    fn once_acts_once_and_returns_the_first_answer() {
        let mut state = cluster_with_users();
        let root = with_password(&state, ROOT_USER);
        let bob = with_password(&state, "bob");
        let mut events = Vec::new();
        let session = open_as(&mut state, &bob, 1);
        let second = open_as(&mut state, &bob, 2);
        state
            .apply(as_caller(&bob, acquire(session, 1, "a")), &mut events)
            .unwrap();
        state
            .apply(as_caller(&bob, acquire(second, 1, "a")), &mut events)
            .unwrap();
        let once = |request: u128, command: Command| Command::Once {
            request,
            remember: 2,
            command: Box::new(as_caller(&root, command)),
        };
        // Force release, retried after the next holder got the lock: acts once.
        let force = once(1, Command::ForceRelease { name: "a".into() });
        let first = state.apply(force.clone(), &mut events);
        assert_eq!(first, Ok(Response::ForceReleased { count: 1 }));
        let holder = state.lock("a").unwrap().holders[0].session;
        assert_eq!(holder, second, "handed to the next waiter");
        let mut retry_events = Vec::new();
        assert_eq!(state.apply(force.clone(), &mut retry_events), first);
        assert!(retry_events.is_empty(), "the retry did nothing");
        assert_eq!(state.lock("a").unwrap().holders[0].session, second);
        // A user added, retried: the first answer, not "exists".
        let add = once(
            2,
            Command::Auth(AuthCommand::UserAdd {
                name: "dave".into(),
                password_hash: "h1".into(),
            }),
        );
        assert_eq!(
            state.apply(add.clone(), &mut events),
            Ok(Response::AuthDone)
        );
        assert_eq!(state.apply(add, &mut events), Ok(Response::AuthDone));
        // A refusal is remembered too.
        let revoke = once(
            3,
            Command::RevokeSession {
                session: SessionId(99),
            },
        );
        let refused = state.apply(revoke.clone(), &mut events);
        assert_eq!(refused, Err(Error::SessionNotFound(SessionId(99))));
        assert_eq!(state.apply(revoke, &mut events), refused);
        // Bounded: the two newest are kept, the oldest went first.
        assert_eq!(state.remembered_requests(), 2);
        assert_eq!(
            state.apply(force, &mut events),
            Ok(Response::ForceReleased { count: 1 }),
            "forgotten: acts again"
        );
        // Only session-less mutations, with a sane bound.
        assert!(matches!(
            state.apply(once(4, Command::CloseSession { session }), &mut events),
            Err(Error::BadWrapper(_))
        ));
        assert!(matches!(
            state.apply(
                Command::Once {
                    request: 5,
                    remember: 0,
                    command: Box::new(Command::ForceRelease { name: "a".into() }),
                },
                &mut events
            ),
            Err(Error::BadWrapper(_))
        ));
        state.check_invariants().unwrap();
        let bytes = postcard::to_allocvec(&state).unwrap();
        assert_eq!(postcard::from_bytes::<State>(&bytes).unwrap(), state);
    }

    #[test]
    fn auth_state_survives_serialization() {
        let mut state = State::default();
        add_user(&mut state, ROOT_USER);
        run(&mut state, AuthCommand::Enable).unwrap();
        let bytes = postcard::to_allocvec(&state).unwrap();
        let back: State = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, state);
        assert!(back.auth_enabled());
    }
}
