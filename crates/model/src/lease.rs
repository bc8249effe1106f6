//! The lease protocol with time, a lossy network and leader changes: docs/design.md
//! invariant 6, "a client is never told 'you hold it' for a lease the cluster has
//! already expired".
//!
//! # What is modelled
//!
//! One session, one client, and `max_term` nodes, node `k - 1` leading term `k` (a node
//! elected twice is covered: it behaves like a fresh node that has not applied the expiry,
//! the worst case), over discrete time `0..=max_time`. All clocks run at one rate except that a leader's expiry
//! timer may fire up to `drift` ticks early (a fast clock); only durations matter, so
//! clock offsets are irrelevant.
//!
//! * **Client** ([`Client`]; `crates/client/src/keepalive.rs`): sends keepalives stamped
//!   with their send time; on an `Ok` answer moves its lease end to
//!   `send + ttl - margin` ([`LeaseFrom::Send`]) if later. It believes it holds the lease
//!   while `now < lease_end`. With [`LeaseConfig::sticky_client`] an answer that arrives
//!   after the lease ran out is ignored and the session stays lost (as the client crate
//!   does); without it the client takes any later answer (as a client that re-validates
//!   after a lapse, like Chubby's grace period, would).
//! * **Network**: keepalives and answers are delayed and reordered arbitrarily (any
//!   in-flight message may be delivered next, to any node that believes it leads); an
//!   undelivered message is a dropped one. A node that does not believe it leads answers
//!   "not leader", which changes nothing, so that answer is not modelled.
//! * **Leader's lease clock** (`crates/server/src/leases.rs`, `LeaseClock`): per node, the
//!   session's deadline and `expiring` flag. `become_leader` gives a full TTL from the
//!   takeover (unless the node has applied the expiry); `renew(arrived)` moves the
//!   deadline to `arrived + ttl` if later, refused while `expiring`; `take_expired` marks
//!   the session expiring and proposes `ExpireSessions`; `expiry_unresolved` (an outcome
//!   unknown, e.g. the proposer's write timeout) is [`UnknownOutcome`]; applying the
//!   expiry removes the session (`session_ended`). A deposed leader keeps believing it
//!   leads for as long as the search likes; `step_down` is not modelled, because a node
//!   that stepped down can do nothing that a deposed one that stays silent cannot.
//! * **Read barrier** (`crates/server/src/barrier.rs`, `ReadBarrier::confirm`, and the
//!   keepalive stream in `crates/server/src/api/locks.rs`): keepalives that arrived wait
//!   for the next quorum round; a round covers only keepalives that arrived before it
//!   started. The round succeeds only if no later term had been elected when it started
//!   (a quorum acknowledged this leader's term after the start), and, as
//!   openraft's `ensure_linearizable` does, only after the leader's first entry of its
//!   term (the blank entry) is committed and everything committed up to the read index
//!   is applied.
//! * **Log**: the only entry that matters is the session's `ExpireSessions`. An
//!   uncommitted one belongs to the term that proposed it; at each election it is either
//!   in the new leader's log or not (both are explored). It commits either under its own
//!   leader while that term is current, or when a later leader that carries it commits
//!   its blank entry; entries not in the log of a leader whose blank entry committed are
//!   lost for good. This over-approximates Raft (it allows a few carry-overs Raft
//!   forbids), which is sound for a safety check.
//!
//! # Reductions, and why they are sound
//!
//! * **One keepalive** (besides the open) in the CI scope. A counterexample needs one
//!   answered keepalive whose lease outlasts the commit; every other keepalive can only
//!   renew a leader's deadline (which delays expiry) or lengthen the client's lease by an
//!   answer of its own (then it is the witness). Removing the others from a
//!   counterexample leaves one. Rounds driven by other sessions' keepalives or by reads
//!   change nothing under the design's rule; for the mutant that lets a keepalive join a
//!   running round, rounds with none of this session's keepalives are explored. A test
//!   run on demand checks two keepalives.
//! * **Failed rounds** are explored only when the round cannot succeed: a round that could
//!   succeed but fails is, for safety, a successful round whose answers are lost (which
//!   also renews the leader's deadline, only delaying expiry).
//! * **Applying** is explored for nodes that lead; a node takes over with the expiry not
//!   applied yet (a full TTL from takeover), the worst case for the property.
//!
//! # The property
//!
//! [`LeaseModel`]'s `always` property: whenever the cluster has committed the
//! session's expiry, the client does not believe it holds the lease
//! (`!(expired && now < lease_end)`, checked in every state: at the commit step this is
//! `lease_end <= commit time`, and a late answer may not push `lease_end` past `now`).
//!
//! # Mutants
//!
//! Each rule the design relies on can be switched off ([`KeepaliveRule`],
//! [`LeaseFrom`], [`LeaseConfig::wait_for_earlier_terms`], [`LeaseConfig::margin`]); the
//! tests assert that the checker then finds a counterexample, which proves the property
//! can fail and the search reaches the states where it would.
//!
//! # Abstracted away
//!
//! Everything about the locks themselves (one session stands for all; the lock model in
//! [`crate::locks`] covers them), several sessions per keepalive batch (the batch is
//! per node here), the open of the session (at time 0, by node 0, leader of term 1, its
//! blank entry committed), message duplication, snapshots, membership changes, crashes
//! (a crashed node is one that never acts again; a restarted follower that becomes
//! leader is an election), and clock rate drift beyond the early expiry timer.

use stateright::{Model, Property};

/// How keepalives are answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepaliveRule {
    /// The design: answered after a quorum round that started after they arrived.
    RoundAfterArrival,
    /// Mutant: a keepalive that arrives while a round runs joins that round.
    RoundMayStartBeforeArrival,
    /// Mutant: a node that believes it leads answers at once, with no round.
    NoRound,
}

/// From when the client counts its lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseFrom {
    /// The design: from when it sent the keepalive that was answered.
    Send,
    /// Mutant: from when the answer arrived.
    Receipt,
}

/// What a leader does when its `ExpireSessions` proposal ends with an unknown outcome
/// (the proposer's write timeout: the entry may still be in the log and commit later).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownOutcome {
    /// As `LeaseClock::expiry_failed` was written before the fix (kept as a mutant): the
    /// session is no longer `expiring`,
    /// its deadline is "now", and keepalives are renewed again until the next tick
    /// takes it.
    Unmark,
    /// A fix: keep refusing the session's keepalives (leave it `expiring`) until the
    /// apply path removes it or the node steps down. (Proposing the expiry again is not
    /// modelled: it only adds entries decided after the first.)
    KeepRefusing,
}

/// The knobs of the lease model: bounds, timing, and which rules are in force.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Highest term, and the number of nodes: term `k` is led by node `k - 1`, and
    /// term 1 starts at time 0.
    pub max_term: u8,
    /// Last time step.
    pub max_time: u8,
    /// Session TTL in ticks.
    pub ttl: u8,
    /// The client's safety margin in ticks.
    pub margin: u8,
    /// How many ticks early a leader's expiry timer may fire.
    pub drift: u8,
    /// Keepalives the client sends in all.
    pub max_keepalives: u8,
    /// `ExpireSessions` entries proposed in all.
    pub max_proposals: u8,
    /// How keepalives are answered.
    pub keepalive: KeepaliveRule,
    /// How the client counts its lease.
    pub lease_from: LeaseFrom,
    /// The design: a leader answers only after its blank entry committed and the
    /// entries of earlier terms are applied. Off: a mutant that answers as soon as the
    /// quorum round confirms its term.
    pub wait_for_earlier_terms: bool,
    /// What an unknown proposal outcome does.
    pub unknown_outcome: UnknownOutcome,
    /// The client ignores answers that arrive after its lease ran out.
    pub sticky_client: bool,
}

impl LeaseConfig {
    /// The design as docs/design.md states it, with a client that takes any answer, and
    /// unknown expiry outcomes that keep refusing keepalives: the property holds.
    pub fn design() -> LeaseConfig {
        LeaseConfig {
            max_term: 3,
            max_time: 6,
            ttl: 3,
            margin: 1,
            drift: 1,
            max_keepalives: 2,
            max_proposals: 1,
            keepalive: KeepaliveRule::RoundAfterArrival,
            lease_from: LeaseFrom::Send,
            wait_for_earlier_terms: true,
            unknown_outcome: UnknownOutcome::KeepRefusing,
            sticky_client: false,
        }
    }

    /// The server as it was before the fix (`LeaseClock::expiry_failed` un-marked the session)
    /// with a client that takes any answer: the checker finds a counterexample.
    pub fn as_coded() -> LeaseConfig {
        LeaseConfig {
            unknown_outcome: UnknownOutcome::Unmark,
            ..LeaseConfig::design()
        }
    }
}

/// The lease model; see the module docs.
#[derive(Clone, Debug)]
pub struct LeaseModel {
    /// Its configuration.
    pub config: LeaseConfig,
}

/// The session's entry in one node's lease table.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Lease {
    /// When the node will consider the lease over.
    pub deadline: u8,
    /// An expiry was proposed; keepalives are refused.
    pub expiring: bool,
}

/// A quorum round in progress on a node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Round {
    /// No later term had been elected when it started, so it may succeed.
    pub may_succeed: bool,
    /// The expiry was committed when it started (its read index covers it).
    pub covers_expiry: bool,
    /// The keepalives it answers: `(sent, arrived)`.
    pub batch: Vec<(u8, u8)>,
}

/// One server.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Node {
    /// The last term it was elected in (0: never).
    pub term: u8,
    /// It believes it leads (`LeaseClock::is_leading`).
    pub leading: bool,
    /// The blank entry of its term is committed.
    pub blank_committed: bool,
    /// It applied the session's expiry.
    pub applied_expiry: bool,
    /// Its lease table's entry for the session.
    pub lease: Option<Lease>,
    /// Keepalives received, waiting for the next round: `(sent, arrived)`.
    pub arrived: Vec<(u8, u8)>,
    /// The round in progress.
    pub round: Option<Round>,
}

/// An uncommitted `ExpireSessions` entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    /// The term that proposed it.
    pub term: u8,
    /// The latest term whose leader's log holds it.
    pub in_log_of: u8,
}

/// What the client believes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Client {
    /// Its lease ends here (exclusive).
    pub lease_end: u8,
    /// Keepalives sent so far.
    pub sent: u8,
    /// A sticky client saw its lease run out and ignores later answers (always `false`
    /// for a client that is not sticky).
    pub lost: bool,
}

/// A state of the lease model.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LeaseState {
    /// Global time.
    pub now: u8,
    /// The highest term elected.
    pub term: u8,
    /// The servers.
    pub nodes: Vec<Node>,
    /// The client.
    pub client: Client,
    /// Keepalives in flight (send times, sorted).
    pub to_server: Vec<u8>,
    /// `Ok` answers in flight (send times of the keepalives answered, sorted).
    pub to_client: Vec<u8>,
    /// Uncommitted expiry entries.
    pub entries: Vec<Entry>,
    /// Expiry entries proposed so far.
    pub proposals: u8,
    /// The latest term whose blank entry committed.
    pub blank_committed_term: u8,
    /// When the cluster committed the session's expiry.
    pub expired_at: Option<u8>,
    /// The term whose blank entry committed the expiry (an earlier term's entry), if so.
    pub expired_by_blank_of: Option<u8>,
    /// Some leader answered `Ok` to a keepalive after a change of leader.
    pub renewed_by_later_leader: bool,
}

/// One step of the lease model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LeaseAction {
    /// Time advances one tick.
    Tick,
    /// The client sends a keepalive.
    Send,
    /// Keepalive `index` of `to_server` reaches `node`.
    Deliver {
        /// Index in `to_server`.
        index: u8,
        /// The receiving node.
        node: u8,
    },
    /// `node` starts a quorum round for the keepalives that arrived.
    StartRound {
        /// The node.
        node: u8,
    },
    /// `node`'s round ends, confirming leadership (`ok`) or not.
    FinishRound {
        /// The node.
        node: u8,
        /// Leadership confirmed.
        ok: bool,
    },
    /// Answer `index` of `to_client` reaches the client.
    Receive {
        /// Index in `to_client`.
        index: u8,
    },
    /// `node`'s lease clock finds the session's deadline passed and proposes its expiry.
    DecideExpiry {
        /// The node.
        node: u8,
    },
    /// `node`'s expiry proposal times out with an unknown outcome.
    ProposalTimeout {
        /// The node.
        node: u8,
    },
    /// The leader of the current term commits uncommitted entry `index` of its own term.
    CommitOwn {
        /// Index in `entries`.
        index: u8,
    },
    /// The leader of the current term commits its blank entry, and with it every
    /// earlier entry in its log.
    CommitBlank,
    /// `node` applies the committed expiry.
    Apply {
        /// The node.
        node: u8,
    },
    /// The next term's leader (node `term - 1`) is elected; `carry` says, bit by bit,
    /// which uncommitted entries are in its log.
    Elect {
        /// Bit `i`: entry `i` is in its log.
        carry: u8,
    },
}

impl LeaseModel {
    /// A model with this configuration.
    pub fn new(config: LeaseConfig) -> LeaseModel {
        LeaseModel { config }
    }

    /// Renews the session on `node` for a keepalive `(sent, arrived)` and, if renewed,
    /// puts an `Ok` answer on the network (`LeaseClock::renew`).
    fn renew(&self, state: &mut LeaseState, node: usize, sent: u8, arrived: u8) {
        let ttl = self.config.ttl;
        let leader_term = state.nodes[node].term;
        let n = &mut state.nodes[node];
        if !n.leading {
            return;
        }
        let Some(lease) = &mut n.lease else { return };
        if lease.expiring {
            return;
        }
        lease.deadline = lease.deadline.max(arrived + ttl);
        state.to_client.push(sent);
        state.to_client.sort_unstable();
        if leader_term > 1 {
            state.renewed_by_later_leader = true;
        }
    }

    fn blank_rule_met(&self, state: &LeaseState, node: &Node, round: &Round) -> bool {
        if !self.config.wait_for_earlier_terms {
            return true;
        }
        let needs_apply = round.covers_expiry || state.expired_by_blank_of == Some(node.term);
        node.blank_committed && (!needs_apply || node.applied_expiry)
    }
}

fn idx(i: usize) -> u8 {
    u8::try_from(i).expect("small model")
}

impl Model for LeaseModel {
    type State = LeaseState;
    type Action = LeaseAction;

    fn init_states(&self) -> Vec<LeaseState> {
        let c = &self.config;
        let mut nodes = vec![
            Node {
                term: 0,
                leading: false,
                blank_committed: false,
                applied_expiry: false,
                lease: None,
                arrived: Vec::new(),
                round: None,
            };
            usize::from(c.max_term)
        ];
        nodes[0] = Node {
            term: 1,
            leading: true,
            blank_committed: true,
            lease: Some(Lease {
                deadline: c.ttl,
                expiring: false,
            }),
            ..nodes[0].clone()
        };
        vec![LeaseState {
            now: 0,
            term: 1,
            nodes,
            client: Client {
                lease_end: c.ttl - c.margin,
                sent: 0,
                lost: false,
            },
            to_server: Vec::new(),
            to_client: Vec::new(),
            entries: Vec::new(),
            proposals: 0,
            blank_committed_term: 1,
            expired_at: None,
            expired_by_blank_of: None,
            renewed_by_later_leader: false,
        }]
    }

    fn actions(&self, state: &LeaseState, actions: &mut Vec<LeaseAction>) {
        let c = &self.config;
        if state.now < c.max_time {
            actions.push(LeaseAction::Tick);
        }
        if state.client.sent < c.max_keepalives {
            actions.push(LeaseAction::Send);
        }
        let mut last = None;
        for (index, &sent) in state.to_server.iter().enumerate() {
            if last == Some(sent) {
                continue; // identical messages: one choice is enough
            }
            last = Some(sent);
            // Only a node that believes it leads takes a keepalive; the others answer
            // "not leader", which changes nothing (the same as a message lost).
            for (node, n) in state.nodes.iter().enumerate() {
                if n.leading {
                    actions.push(LeaseAction::Deliver {
                        index: idx(index),
                        node: idx(node),
                    });
                }
            }
        }
        let mut last = None;
        for (index, &sent) in state.to_client.iter().enumerate() {
            if last != Some(sent) {
                actions.push(LeaseAction::Receive { index: idx(index) });
            }
            last = Some(sent);
        }
        for (i, n) in state.nodes.iter().enumerate() {
            let node = idx(i);
            // Rounds are shared with other sessions' keepalives and with reads
            // (`Verify`, `Describe`), so one may start with none of this session's. Under
            // the design's rule such a round has no effect on this session (a keepalive
            // arriving meanwhile waits for the next round, as if this one had not run),
            // so it is explored only for the mutant that lets keepalives join it.
            let may_start =
                !n.arrived.is_empty() || c.keepalive == KeepaliveRule::RoundMayStartBeforeArrival;
            if n.leading && n.round.is_none() && may_start {
                actions.push(LeaseAction::StartRound { node });
            }
            if let Some(round) = &n.round {
                // A round that could succeed but fails is no different, for safety, from
                // one that succeeds and whose answers are lost (which also renews the
                // lease on the leader, only making expiry later): it is not explored.
                let ok = round.may_succeed && n.leading && self.blank_rule_met(state, n, round);
                actions.push(LeaseAction::FinishRound { node, ok });
            }
            if n.leading
                && state.expired_at.is_none()
                && state.proposals < c.max_proposals
                && let Some(lease) = &n.lease
                && !lease.expiring
                && state.now + c.drift >= lease.deadline
            {
                actions.push(LeaseAction::DecideExpiry { node });
            }
            if n.leading
                && c.unknown_outcome == UnknownOutcome::Unmark
                && n.lease.as_ref().is_some_and(|l| l.expiring)
            {
                actions.push(LeaseAction::ProposalTimeout { node });
            }
            // Only a node that leads acts on what it applied (a follower's table is
            // rebuilt when it takes over, from a state that may lag: the model takes
            // the worst case, that it had not applied the expiry yet).
            if n.leading && state.expired_at.is_some() && !n.applied_expiry {
                actions.push(LeaseAction::Apply { node });
            }
        }
        let leader = state.nodes.iter().find(|n| n.term == state.term);
        if let Some(leader) = leader {
            for (index, entry) in state.entries.iter().enumerate() {
                if entry.term == state.term && leader.blank_committed {
                    actions.push(LeaseAction::CommitOwn { index: idx(index) });
                }
            }
            if !leader.blank_committed {
                actions.push(LeaseAction::CommitBlank);
            }
        }
        if state.term < c.max_term {
            for carry in 0..1u8 << state.entries.len() {
                actions.push(LeaseAction::Elect { carry });
            }
        }
    }

    fn next_state(&self, state: &LeaseState, action: LeaseAction) -> Option<LeaseState> {
        let c = &self.config;
        let mut s = state.clone();
        let now = s.now;
        match action {
            LeaseAction::Tick => s.now += 1,
            LeaseAction::Send => {
                s.client.sent += 1;
                s.to_server.push(now);
                s.to_server.sort_unstable();
            }
            LeaseAction::Deliver { index, node } => {
                let sent = s.to_server.remove(usize::from(index));
                let n = usize::from(node);
                if s.nodes[n].leading {
                    match c.keepalive {
                        KeepaliveRule::RoundAfterArrival => s.nodes[n].arrived.push((sent, now)),
                        KeepaliveRule::RoundMayStartBeforeArrival => {
                            if let Some(round) = &mut s.nodes[n].round {
                                round.batch.push((sent, now));
                            } else {
                                s.nodes[n].arrived.push((sent, now));
                            }
                        }
                        KeepaliveRule::NoRound => self.renew(&mut s, n, sent, now),
                    }
                    s.nodes[n].arrived.sort_unstable();
                }
            }
            LeaseAction::StartRound { node } => {
                let n = usize::from(node);
                let batch = std::mem::take(&mut s.nodes[n].arrived);
                s.nodes[n].round = Some(Round {
                    may_succeed: s.nodes[n].term == s.term,
                    covers_expiry: s.expired_at.is_some(),
                    batch,
                });
            }
            LeaseAction::FinishRound { node, ok } => {
                let n = usize::from(node);
                let round = s.nodes[n].round.take().expect("a round runs");
                if ok {
                    for (sent, arrived) in round.batch {
                        self.renew(&mut s, n, sent, arrived);
                    }
                }
            }
            LeaseAction::Receive { index } => {
                let sent = s.to_client.remove(usize::from(index));
                let client = &mut s.client;
                if c.sticky_client && now >= client.lease_end {
                    client.lost = true;
                }
                if !client.lost {
                    let from = match c.lease_from {
                        LeaseFrom::Send => sent,
                        LeaseFrom::Receipt => now,
                    };
                    let end = (from + c.ttl).saturating_sub(c.margin);
                    client.lease_end = client.lease_end.max(end);
                }
            }
            LeaseAction::DecideExpiry { node } => {
                let n = usize::from(node);
                let term = s.nodes[n].term;
                s.nodes[n].lease.as_mut().expect("leased").expiring = true;
                s.proposals += 1;
                // After a later term's blank entry committed, an entry appended by a
                // deposed leader can never commit (every later leader's log holds that
                // blank entry, and a log holds no entry of an earlier term after one of a
                // later term): it is lost at once.
                if term >= s.blank_committed_term {
                    s.entries.push(Entry {
                        term,
                        in_log_of: term,
                    });
                }
            }
            LeaseAction::ProposalTimeout { node } => {
                // An unknown outcome: the entry stays in the log.
                let lease = s.nodes[usize::from(node)].lease.as_mut().expect("leased");
                lease.expiring = false;
                lease.deadline = now;
            }
            LeaseAction::CommitOwn { index } => {
                s.entries.remove(usize::from(index));
                s.expired_at = Some(now);
                s.entries.clear();
            }
            LeaseAction::CommitBlank => {
                let term = s.term;
                let leader = s
                    .nodes
                    .iter_mut()
                    .find(|n| n.term == term)
                    .expect("a leader");
                leader.blank_committed = true;
                s.blank_committed_term = term;
                if s.entries
                    .iter()
                    .any(|e| e.term < term && e.in_log_of == term)
                {
                    s.expired_at = Some(now);
                    s.expired_by_blank_of = Some(term);
                    s.entries.clear();
                } else {
                    // Entries of earlier terms not in this log can never commit now.
                    s.entries.retain(|e| e.term == term);
                }
            }
            LeaseAction::Apply { node } => {
                let n = &mut s.nodes[usize::from(node)];
                n.applied_expiry = true;
                n.lease = None;
            }
            LeaseAction::Elect { carry } => {
                s.term += 1;
                let term = s.term;
                let node = term - 1;
                for (i, entry) in s.entries.iter_mut().enumerate() {
                    if carry & (1 << i) != 0 {
                        entry.in_log_of = term;
                    }
                }
                let n = &mut s.nodes[usize::from(node)];
                n.term = term;
                n.leading = true;
                n.blank_committed = false;
                n.round = None;
                // `LeaseClock::become_leader`: a full TTL from now for every session
                // in the applied state.
                n.lease = (!n.applied_expiry).then_some(Lease {
                    deadline: now + c.ttl,
                    expiring: false,
                });
            }
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(
                "never told it holds a lease the cluster expired",
                |_, s: &LeaseState| s.expired_at.is_none() || s.now >= s.client.lease_end,
            ),
            Property::sometimes("the cluster expired the session", |_, s: &LeaseState| {
                s.expired_at.is_some()
            }),
            Property::sometimes(
                "an earlier term's expiry committed under a later leader",
                |_, s: &LeaseState| s.expired_by_blank_of.is_some(),
            ),
            Property::sometimes("a later leader renewed the lease", |_, s: &LeaseState| {
                s.renewed_by_later_leader
            }),
            Property::sometimes(
                "an answer extended the client's lease",
                |model: &LeaseModel, s: &LeaseState| {
                    s.client.lease_end > model.config.ttl - model.config.margin
                },
            ),
        ]
    }
}
