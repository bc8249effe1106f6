//! Property test of authorization at apply time against a reference model.
//!
//! The server checks a caller's credentials on the state it has applied, then proposes
//! the command inside `Command::Authorized`; between that check and the apply, other
//! entries may revoke a token, remove or re-create the user, change a password, take a
//! right away or switch auth on. Here "the API" captures callers at random points
//! (a pool of callers that go stale), auth administration runs between captures and
//! uses, and every client command is applied on behalf of a caller from the pool. A
//! naive model, written separately from `crate::auth`, says for each command whether it
//! must be refused as unauthenticated, refused as not permitted, or let through; the state
//! machine must agree, a command let through must do exactly what the bare command does,
//! and the recorded session owners must be the model's.

use std::collections::BTreeMap;

use fencelock_core::{
    AuthCommand, Caller, ClientId, Command, Credential, Error, FencingToken, LockMode, ROOT_USER,
    RequestId, Rights, SessionId, State, WaitPolicy, password_fingerprint,
};
use proptest::prelude::*;

const USERS: [&str; 3] = [ROOT_USER, "alice", "bob"];
const NAMES: [&str; 3] = ["a/1", "a/2", "b"];
const PREFIXES: [&str; 3] = ["", "a/", "b"];
const TOKENS: [&str; 2] = ["t0", "t1"];

#[derive(Clone, Debug)]
enum Admin {
    UserAdd(u8),
    UserRemove(u8),
    Passwd(u8),
    TokenAdd(u8, u8),
    TokenRemove(u8),
    Grant(u8, u8, u8),
    Revoke(u8, u8),
    Enable,
    Disable,
}

#[derive(Clone, Debug)]
enum Client {
    Open(u8),
    Lease(u8, u8),
    Acquire(u8, u8),
    Release(u8, u8),
    Close(u8),
    Cancel(u8, u8),
    Force(u8),
    RevokeSession(u8),
}

#[derive(Clone, Debug)]
enum Op {
    Admin(Admin),
    /// The API authenticates `user` now (by password, or by token `Some(t)`).
    Capture(u8, Option<u8>),
    /// A client command on behalf of the captured caller at this index of the pool.
    Use(u8, Client),
}

fn admin() -> impl Strategy<Value = Admin> {
    prop_oneof![
        (0u8..3).prop_map(Admin::UserAdd),
        (0u8..3).prop_map(Admin::UserRemove),
        (0u8..3).prop_map(Admin::Passwd),
        (0u8..2, 0u8..3).prop_map(|(t, u)| Admin::TokenAdd(t, u)),
        (0u8..2).prop_map(Admin::TokenRemove),
        (0u8..3, 0u8..3, 0u8..16).prop_map(|(u, p, r)| Admin::Grant(u, p, r)),
        (0u8..3, 0u8..3).prop_map(|(u, p)| Admin::Revoke(u, p)),
        Just(Admin::Enable),
        Just(Admin::Disable),
    ]
}

fn client() -> impl Strategy<Value = Client> {
    prop_oneof![
        3 => (0u8..4).prop_map(Client::Open),
        1 => (0u8..4, 0u8..3).prop_map(|(c, n)| Client::Lease(c, n)),
        4 => (any::<u8>(), 0u8..3).prop_map(|(s, n)| Client::Acquire(s, n)),
        3 => (any::<u8>(), 0u8..3).prop_map(|(s, n)| Client::Release(s, n)),
        1 => any::<u8>().prop_map(Client::Close),
        1 => (any::<u8>(), 0u8..3).prop_map(|(s, n)| Client::Cancel(s, n)),
        1 => (0u8..3).prop_map(Client::Force),
        1 => any::<u8>().prop_map(Client::RevokeSession),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => admin().prop_map(Op::Admin),
        3 => (0u8..3, prop::option::weighted(0.4, 0u8..2)).prop_map(|(u, t)| Op::Capture(u, t)),
        8 => (any::<u8>(), client()).prop_map(|(i, c)| Op::Use(i, c)),
    ]
}

/// What the model expects of an authorized command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Allowed,
    Unauthenticated,
    Denied,
}

/// The reference: plain maps, rights per user as a list of (prefix, rights).
#[derive(Default)]
struct Model {
    enabled: bool,
    users: BTreeMap<String, String>,
    tokens: BTreeMap<String, String>,
    /// Grants of each user's own role `r-<user>` (a role outlives its user).
    grants: BTreeMap<String, Vec<(String, Rights)>>,
    /// Users that have their role (removing the user takes it away).
    members: std::collections::BTreeSet<String>,
    owners: BTreeMap<SessionId, String>,
}

impl Model {
    fn rights(&self, user: &str, name: &str) -> Rights {
        if user == ROOT_USER {
            return Rights {
                acquire: true,
                release: true,
                read: true,
                admin: true,
            };
        }
        let mut all = Rights::default();
        let grants = self
            .grants
            .get(user)
            .filter(|_| self.members.contains(user));
        for (prefix, rights) in grants.into_iter().flatten() {
            if name.starts_with(prefix.as_str()) {
                all = all.union(*rights);
            }
        }
        if all.admin {
            all = Rights {
                acquire: true,
                release: true,
                read: true,
                admin: true,
            };
        }
        all
    }

    fn superuser(&self, user: &str) -> bool {
        self.rights(user, "").admin
    }

    fn session_ok(&self, state: &State, user: &str, session: SessionId, name: &str) -> bool {
        if state.session(session).is_none() {
            return true;
        }
        match self.owners.get(&session) {
            Some(owner) if owner == user => true,
            Some(_) => self.rights(user, name).admin,
            None => self.superuser(user),
        }
    }

    fn verdict(&self, state: &State, caller: &Caller, command: &Command) -> Verdict {
        if !self.enabled {
            return Verdict::Allowed;
        }
        let Caller::User {
            name: user,
            credential,
        } = caller
        else {
            return Verdict::Unauthenticated;
        };
        let Some(hash) = self.users.get(user) else {
            return Verdict::Unauthenticated;
        };
        let current = match credential {
            Credential::Token(token) => self.tokens.get(token) == Some(user),
            Credential::Password(fingerprint) => password_fingerprint(hash) == *fingerprint,
        };
        if !current {
            return Verdict::Unauthenticated;
        }
        let client_ok = |client_id: &ClientId| {
            let existing = state
                .sessions_after(None, 100)
                .0
                .into_iter()
                .find(|view| view.client_id == *client_id);
            existing.is_none_or(|view| {
                self.owners.get(&view.session) == Some(user) || self.superuser(user)
            })
        };
        let allowed = match command {
            Command::OpenSession { client_id, .. } => client_ok(client_id),
            Command::AcquireWithLease {
                client_id, name, ..
            } => self.rights(user, name).acquire && client_ok(client_id),
            Command::Acquire { session, name, .. } => {
                self.rights(user, name).acquire && self.session_ok(state, user, *session, name)
            }
            Command::Release { session, name, .. } => {
                self.rights(user, name).release && self.session_ok(state, user, *session, name)
            }
            Command::CancelWait { session, name } => self.session_ok(state, user, *session, name),
            Command::CloseSession { session } => self.session_ok(state, user, *session, ""),
            Command::ForceRelease { name } => self.rights(user, name).admin,
            Command::RevokeSession { .. } => self.superuser(user),
            other => panic!("not generated: {other:?}"),
        };
        if allowed {
            Verdict::Allowed
        } else {
            Verdict::Denied
        }
    }
}

struct Run {
    state: State,
    model: Model,
    pool: Vec<Caller>,
    next_hash: u64,
    next_seq: BTreeMap<SessionId, u64>,
}

impl Run {
    fn new() -> Run {
        let mut run = Run {
            state: State::default(),
            model: Model::default(),
            pool: vec![Caller::Anyone],
            next_hash: 0,
            next_seq: BTreeMap::new(),
        };
        for user in 0..3 {
            run.admin(&Admin::UserAdd(user));
        }
        run
    }

    fn auth(&mut self, command: AuthCommand) -> bool {
        self.state
            .apply(Command::Auth(command), &mut Vec::new())
            .is_ok()
    }

    /// Applies an admin command; the model follows what the state accepted (the auth
    /// commands' own rules are unit-tested in `auth`).
    fn admin(&mut self, admin: &Admin) {
        let user = |u: &u8| USERS[usize::from(*u)].to_owned();
        match admin {
            Admin::UserAdd(u) | Admin::Passwd(u) => {
                self.next_hash += 1;
                let hash = format!("hash-{}", self.next_hash);
                let command = if matches!(admin, Admin::UserAdd(_)) {
                    AuthCommand::UserAdd {
                        name: user(u),
                        password_hash: hash.clone(),
                    }
                } else {
                    AuthCommand::UserPasswd {
                        name: user(u),
                        password_hash: hash.clone(),
                    }
                };
                if self.auth(command) {
                    self.model.users.insert(user(u), hash);
                }
            }
            Admin::UserRemove(u) => {
                if self.auth(AuthCommand::UserRemove { name: user(u) }) {
                    self.model.users.remove(&user(u));
                    self.model.tokens.retain(|_, owner| *owner != user(u));
                    self.model.owners.retain(|_, owner| *owner != user(u));
                    self.model.members.remove(&user(u));
                }
            }
            Admin::TokenAdd(t, u) => {
                let token = TOKENS[usize::from(*t)].to_owned();
                if self.auth(AuthCommand::TokenAdd {
                    token_hash: token.clone(),
                    user: user(u),
                }) {
                    self.model.tokens.insert(token, user(u));
                }
            }
            Admin::TokenRemove(t) => {
                let token = TOKENS[usize::from(*t)].to_owned();
                assert!(self.auth(AuthCommand::TokenRemove {
                    token_hash: token.clone()
                }));
                self.model.tokens.remove(&token);
            }
            Admin::Grant(u, p, bits) => {
                let role = format!("r-{}", user(u));
                self.auth(AuthCommand::RoleAdd { name: role.clone() });
                let rights = Rights {
                    acquire: bits & 1 != 0,
                    release: bits & 2 != 0,
                    read: bits & 4 != 0,
                    admin: bits & 8 != 0,
                };
                let prefix = PREFIXES[usize::from(*p)].to_owned();
                assert!(self.auth(AuthCommand::RoleGrant {
                    role: role.clone(),
                    prefix: prefix.clone(),
                    rights,
                }));
                self.model
                    .grants
                    .entry(user(u))
                    .or_default()
                    .push((prefix, rights));
                if self.auth(AuthCommand::UserGrantRole {
                    user: user(u),
                    role,
                }) {
                    self.model.members.insert(user(u));
                }
            }
            Admin::Revoke(u, p) => {
                let prefix = PREFIXES[usize::from(*p)];
                if self.auth(AuthCommand::RoleRevoke {
                    role: format!("r-{}", user(u)),
                    prefix: prefix.to_owned(),
                }) && let Some(grants) = self.model.grants.get_mut(&user(u))
                {
                    grants.retain(|(q, _)| q != prefix);
                }
            }
            Admin::Enable => self.model.enabled |= self.auth(AuthCommand::Enable),
            Admin::Disable => {
                assert!(self.auth(AuthCommand::Disable));
                self.model.enabled = false;
            }
        }
    }

    /// What the API would attach now, if it would let the call through at all.
    fn capture(&mut self, u: u8, token: Option<u8>) {
        if !self.state.auth_enabled() {
            self.pool.push(Caller::Anyone);
            return;
        }
        let name = USERS[usize::from(u)].to_owned();
        let credential = match token {
            Some(t) => {
                let token = TOKENS[usize::from(t)];
                if self.state.token_user(token) != Some(name.as_str()) {
                    return;
                }
                Credential::Token(token.to_owned())
            }
            None => match self.state.password_hash(&name) {
                Some(hash) => Credential::Password(password_fingerprint(hash)),
                None => return,
            },
        };
        self.pool.push(Caller::User { name, credential });
    }

    fn session(&self, pick: u8) -> SessionId {
        let (live, _) = self.state.sessions_after(None, 100);
        if pick % 8 == 7 || live.is_empty() {
            return SessionId(u64::from(pick % 8));
        }
        live[usize::from(pick) % live.len()].session
    }

    fn request(&mut self, session: SessionId) -> RequestId {
        let seq = self.next_seq.entry(session).or_insert(0);
        *seq += 1;
        RequestId {
            seq: *seq,
            first_unanswered_seq: *seq,
        }
    }

    fn command(&mut self, client: &Client) -> Command {
        let name = |n: &u8| NAMES[usize::from(*n)].to_owned();
        match client {
            Client::Open(c) => Command::OpenSession {
                client_id: ClientId(u128::from(*c)),
                ttl_ms: 10_000,
            },
            Client::Lease(c, n) => Command::AcquireWithLease {
                client_id: ClientId(u128::from(*c)),
                ttl_ms: 10_000,
                name: name(n),
                mode: LockMode::Exclusive,
                wait: WaitPolicy::Queue,
                value: Vec::new(),
            },
            Client::Acquire(s, n) => {
                let session = self.session(*s);
                Command::Acquire {
                    session,
                    request: self.request(session),
                    name: name(n),
                    mode: LockMode::Exclusive,
                    wait: WaitPolicy::Queue,
                    value: Vec::new(),
                }
            }
            Client::Release(s, n) => {
                let session = self.session(*s);
                let token = self
                    .state
                    .held_token(session, &name(n))
                    .unwrap_or(FencingToken(1));
                Command::Release {
                    session,
                    request: self.request(session),
                    name: name(n),
                    token,
                }
            }
            Client::Close(s) => Command::CloseSession {
                session: self.session(*s),
            },
            Client::Cancel(s, n) => Command::CancelWait {
                session: self.session(*s),
                name: name(n),
            },
            Client::Force(n) => Command::ForceRelease { name: name(n) },
            Client::RevokeSession(s) => Command::RevokeSession {
                session: self.session(*s),
            },
        }
    }

    fn use_caller(&mut self, index: u8, client: &Client) -> Result<Verdict, TestCaseError> {
        let caller = self.pool[usize::from(index) % self.pool.len()].clone();
        let command = self.command(client);
        let verdict = self.model.verdict(&self.state, &caller, &command);
        let sessions_before: Vec<SessionId> = live(&self.state);
        let mut bare = self.state.clone();
        let mut bare_events = Vec::new();
        let bare_result = bare.apply(command.clone(), &mut bare_events);
        let mut events = Vec::new();
        let result = self.state.apply(
            Command::Authorized {
                caller: caller.clone(),
                command: Box::new(command.clone()),
            },
            &mut events,
        );
        let context = format!("{caller:?} {command:?}: {result:?}");
        match verdict {
            Verdict::Unauthenticated => {
                prop_assert!(
                    matches!(&result, Err(Error::Auth(e)) if e.is_unauthenticated()),
                    "expected unauthenticated: {}",
                    context
                );
            }
            Verdict::Denied => {
                prop_assert!(
                    matches!(&result, Err(Error::Auth(e)) if e.is_permission_denied()),
                    "expected permission denied: {}",
                    context
                );
            }
            Verdict::Allowed => {
                prop_assert_eq!(&result, &bare_result, "{}", context);
                prop_assert_eq!(&events, &bare_events, "{}", context);
                if let Caller::User { name, .. } = &caller {
                    for session in live(&self.state) {
                        if !sessions_before.contains(&session) {
                            self.model.owners.insert(session, name.clone());
                        }
                    }
                }
            }
        }
        if result.is_err() {
            prop_assert!(events.is_empty());
        }
        Ok(verdict)
    }

    fn check_owners(&mut self) -> Result<(), TestCaseError> {
        let live = live(&self.state);
        self.model
            .owners
            .retain(|session, _| live.contains(session));
        for session in live {
            prop_assert_eq!(
                self.state.session_owner(session),
                self.model.owners.get(&session).map(String::as_str),
                "owner of {:?}",
                session
            );
        }
        self.state.check_invariants().map_err(TestCaseError::fail)
    }
}

fn live(state: &State) -> Vec<SessionId> {
    state
        .sessions_after(None, 100)
        .0
        .into_iter()
        .map(|view| view.session)
        .collect()
}

fn run_ops(ops: &[Op], verdicts: &mut BTreeMap<String, usize>) -> Result<(), TestCaseError> {
    let mut run = Run::new();
    for op in ops {
        match op {
            Op::Admin(admin) => run.admin(admin),
            Op::Capture(u, t) => run.capture(*u, *t),
            Op::Use(index, client) => {
                let verdict = run.use_caller(*index, client)?;
                *verdicts.entry(format!("{verdict:?}")).or_default() += 1;
            }
        }
        run.check_owners()?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Commands checked on a stale view, applied after auth changed: the state machine
    /// refuses exactly what the model says, and what it lets through acts as the bare
    /// command would.
    #[test]
    fn authorization_at_apply_matches_the_model(ops in prop::collection::vec(op(), 50..=150)) {
        run_ops(&ops, &mut BTreeMap::new())?;
    }
}

/// The generator reaches every verdict, so the comparison is not vacuous.
#[test]
fn the_generator_reaches_every_verdict() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let sequences = prop::collection::vec(op(), 150);
    let mut verdicts = BTreeMap::new();
    for _ in 0..32 {
        let ops = sequences.new_tree(&mut runner).unwrap().current();
        run_ops(&ops, &mut verdicts).unwrap();
    }
    for verdict in ["Allowed", "Unauthenticated", "Denied"] {
        assert!(
            verdicts.get(verdict).is_some_and(|n| *n >= 10),
            "{verdict} reached too rarely: {verdicts:?}"
        );
    }
}
