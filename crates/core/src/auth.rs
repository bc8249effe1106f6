//! Authentication and per-prefix permissions, kept in the replicated state so that every
//! replica (and every future leader) agrees on who may do what.
//!
//! The state machine stays pure: it stores password hashes (PHC strings computed by the
//! server before it proposes) and bearer-token hashes, never secrets, and it decides
//! nothing about credentials. The server verifies credentials and asks [`State::permits`]
//! before it proposes or reads. The one check made here is session ownership at open
//! ([`Command::Owned`]): a client id that names another user's live session is refused.

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
    pub(crate) fn apply_auth(&mut self, command: AuthCommand) -> Result<Response, Error> {
        self.auth.apply(command).map_err(Error::Auth)?;
        Ok(Response::AuthDone)
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
            | Command::AcquireWithLease { client_id, .. } => *client_id,
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
        Ok(())
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
