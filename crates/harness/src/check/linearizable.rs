//! Linearizability of the lock history against a sequential model of one lock, checked
//! per lock (locks are independent, so the history splits: P-compositionality) with the
//! Wing–Gong search as Porcupine runs it (Lowe's just-in-time linearization with a cache
//! of (linearized set, model state) pairs), bounded by a step budget.
//!
//! # The model
//!
//! The state of a lock is its exclusive holder, `(session, token)` or free, and the
//! largest token granted so far. Operations:
//!
//! - `acquire` granted `t`: the lock was free and `t` is larger than every earlier grant;
//!   `would_block` / `timed_out`: another session held it; refused: no effect.
//! - `release(t)` acknowledged: the session held it with `t`, and now it is free; refused
//!   as not held / stale / session not found: the session did not hold it with `t`.
//! - `verify(t)`: `current` exactly when `t` is the holder's token; the answered current
//!   token is the holder's.
//! - `describe`: the answered holder is the holder.
//! - `end(session)`: a close, or an expiry, releases what the session holds. Expiries are
//!   not operations of any client: for every session the checker adds one that may take
//!   effect from the invocation of the session's last acknowledged operation on, and must
//!   have taken effect by the time the observer saw an `expired` / `closed` event of the
//!   session for this lock (otherwise it may never take effect).
//!
//! Two more things keep a free lock from a plain acquire, and the state carries both:
//! a lock-delay (the lock-delay workload: an expiry on such a lock may start one, which
//! may end at any moment; `lockdelay` checks its order), and the queued multi-lock
//! requests that hold a place in its queue (`reserve`, at some point of the request or
//! never, and `unreserve` at its answer). A refusal of a free lock fits only while one of
//! them is in force.
//!
//! # Unknown outcomes
//!
//! An operation whose outcome is unknown (`info`, or never completed) may take effect at
//! any time after its invocation, or never: its completion is at infinity and the model
//! allows both. An acquire with an unknown outcome that did take effect holds the lock with
//! a token nobody knows, and the client library settles it in the background (releasing a
//! grant that raced a cancel): that "ghost" grant may vanish at any point. The model is
//! nondeterministic, so the search runs over sets of states (as Porcupine's power-set
//! models do).

use super::{Evidence, Verdict};
use crate::history::{Kind, Op, Operation, operations};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// The checker's name.
pub const NAME: &str = "linearizable";

/// Search steps allowed per lock before the check is called inconclusive.
pub const DEFAULT_STEP_BUDGET: u64 = 5_000_000;

/// How long after its invocation an acquire or release with an unknown outcome (that the
/// observer cannot resolve) may still take effect: an assumption, not a fact of Raft. The
/// client gives up after its retry deadline (8 s in the harness), the server answers
/// "unavailable" after its request timeout (5 s), and a proposal left in a deposed
/// leader's log is committed or dropped within an election after the fault ends; every
/// fault lasts at most 10 s. Without a bound, each such operation is concurrent with the
/// whole rest of the history and the search explodes.
pub const UNKNOWN_HORIZON_NS: u64 = 60_000_000_000;

/// The model's state of one lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LockState {
    /// The exclusive holder: session and token (`None`: a grant with an unknown token).
    pub holder: Option<(u64, Option<u64>)>,
    /// The largest token known to be granted so far.
    pub last_token: u64,
    /// A lock-delay may be in force (the lock-delay workload): nobody is granted the lock,
    /// though nobody holds it. It may end at any moment: the leader times it, and a new
    /// leader restarts it; the `lockdelay` checker holds the order of its start and end.
    pub delayed: bool,
    /// The queued multi-locks that hold a place in this lock's queue, one bit per
    /// reservation slot (see [`ModelOp::Reserve`]): the lock may be free, yet a plain
    /// acquire must wait behind them (no overtaking, docs/design.md).
    pub reserved: u64,
}

/// One operation of the model, with the answer it got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelOp {
    /// An acquire by `session`.
    Acquire {
        /// The session.
        session: u64,
        /// `Some(Some(t))` granted `t`; `Some(None)` taken by another (would block, timed
        /// out); `None` refused without effect.
        answer: Option<Option<u64>>,
    },
    /// A release of `token` by `session`.
    Release {
        /// The session.
        session: u64,
        /// The token released.
        token: u64,
        /// `Some(true)` acknowledged; `Some(false)` refused as not held; `None`: no
        /// effect, reason unknown.
        answer: Option<bool>,
    },
    /// A verification of `token`.
    Verify {
        /// The token asked about.
        token: u64,
        /// Whether it was current.
        current: bool,
        /// The current token answered.
        current_token: Option<u64>,
    },
    /// A description: the holder's session and token, if any.
    Describe {
        /// The holder answered.
        holder: Option<(u64, u64)>,
    },
    /// The session ended (closed or expired): it holds nothing any more.
    End {
        /// The session.
        session: u64,
    },
    /// The session ended, by a close or an expiry, on a lock whose grants ask for a
    /// lock-delay: if it held the lock, a delay may follow.
    EndMaybeDelayed {
        /// The session.
        session: u64,
    },
    /// A multi-lock request asking for this lock queued: it holds a place in the queue
    /// (slot `slot` of [`LockState::reserved`]). It may happen at any point between the
    /// request's invocation and its answer, or never (a request granted at once).
    Reserve {
        /// The request's reservation slot on this lock.
        slot: u8,
    },
    /// The multi-lock request of `slot` was answered: its place in the queue is gone
    /// (granted or withdrawn).
    Unreserve {
        /// The request's reservation slot on this lock.
        slot: u8,
    },
    /// An operation without effect on the model (reads that failed, and the like).
    Nothing,
}

/// The states a single state can go to by `op`; `unknown` when the op may not have taken
/// effect at all. Empty: the answer is impossible in this state.
pub fn step(state: LockState, op: &ModelOp, unknown: bool) -> Vec<LockState> {
    let mut out = Vec::new();
    // A ghost grant may have been released in the background at any time.
    let mut starts = vec![state];
    if matches!(state.holder, Some((_, None))) {
        starts.push(LockState {
            holder: None,
            ..state
        });
    }
    // A lock-delay may have ended at any time.
    if state.delayed {
        let ended: Vec<LockState> = starts
            .iter()
            .map(|s| LockState {
                delayed: false,
                ..*s
            })
            .collect();
        starts.extend(ended);
    }
    for s in starts {
        if unknown {
            out.push(s);
            match op {
                ModelOp::Acquire { session, .. } if s.holder.is_none() && !s.delayed => {
                    out.push(LockState {
                        holder: Some((*session, None)),
                        ..s
                    })
                }
                ModelOp::Release { session, token, .. }
                    if s.holder == Some((*session, Some(*token))) =>
                {
                    out.push(LockState { holder: None, ..s })
                }
                ModelOp::End { session } if s.holder.is_some_and(|h| h.0 == *session) => {
                    out.push(LockState { holder: None, ..s })
                }
                ModelOp::EndMaybeDelayed { session }
                    if s.holder.is_some_and(|h| h.0 == *session) =>
                {
                    out.extend(ended_maybe_delayed(s))
                }
                ModelOp::Reserve { slot } => out.push(LockState {
                    reserved: s.reserved | 1 << slot,
                    ..s
                }),
                _ => {}
            }
            continue;
        }
        match op {
            ModelOp::Acquire { session, answer } => match answer {
                Some(Some(token)) => {
                    if s.holder.is_none() && !s.delayed && *token > s.last_token {
                        out.push(LockState {
                            holder: Some((*session, Some(*token))),
                            last_token: *token,
                            ..s
                        });
                    }
                }
                Some(None) => {
                    if s.holder.is_some_and(|h| h.0 != *session) || s.delayed || s.reserved != 0 {
                        out.push(s);
                    }
                }
                None => out.push(s),
            },
            ModelOp::Release {
                session,
                token,
                answer,
            } => {
                let held = s.holder == Some((*session, Some(*token)));
                match answer {
                    Some(true) if held => out.push(LockState { holder: None, ..s }),
                    Some(false) if !held => out.push(s),
                    None => out.push(s),
                    _ => {}
                }
            }
            ModelOp::Verify {
                token,
                current,
                current_token,
            } => match s.holder {
                Some((_, Some(held))) => {
                    if (held == *token) == *current && *current_token == Some(held) {
                        out.push(s);
                    }
                }
                Some((_, None)) => {
                    if !*current && current_token.is_some() {
                        out.push(s);
                    }
                }
                None => {
                    if !*current && current_token.is_none() {
                        out.push(s);
                    }
                }
            },
            ModelOp::Describe { holder } => {
                let fits = match (s.holder, holder) {
                    (None, None) => true,
                    (Some((a, Some(t))), Some((b, u))) => a == *b && t == *u,
                    (Some((a, None)), Some((b, _))) => a == *b,
                    _ => false,
                };
                if fits {
                    out.push(s);
                }
            }
            ModelOp::End { session } => {
                if s.holder.is_some_and(|h| h.0 == *session) {
                    out.push(LockState { holder: None, ..s });
                } else {
                    out.push(s);
                }
            }
            ModelOp::EndMaybeDelayed { session } => {
                if s.holder.is_some_and(|h| h.0 == *session) {
                    out.extend(ended_maybe_delayed(s));
                } else {
                    out.push(s);
                }
            }
            ModelOp::Reserve { slot } => out.push(LockState {
                reserved: s.reserved | 1 << slot,
                ..s
            }),
            ModelOp::Unreserve { slot } => out.push(LockState {
                reserved: s.reserved & !(1 << slot),
                ..s
            }),
            ModelOp::Nothing => out.push(s),
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Identifies one name of one multi-lock request: process, group, lock.
type ReservationKey = (String, u64, String);

fn reservation_key(op: &Operation) -> ReservationKey {
    (
        op.invoke.process.clone(),
        op.invoke.multi.unwrap_or(0),
        op.lock().unwrap_or("").to_string(),
    )
}

/// A reservation slot for each name of each multi-lock request (0..64 per lock, reused
/// once a request is answered), and the locks that had more requests at once than slots.
fn reservation_slots(ops: &[Operation]) -> (HashMap<ReservationKey, u8>, HashSet<String>) {
    let mut per_lock: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in ops {
        if op.op() == Op::Acquire
            && op.invoke.multi.is_some()
            && let Some(lock) = op.lock()
        {
            per_lock.entry(lock).or_default().push(op);
        }
    }
    let mut slots = HashMap::new();
    let mut crowded = HashSet::new();
    for (lock, mut requests) in per_lock {
        requests.sort_by_key(|op| op.start_ns());
        // Slot → until when it is taken (the request's answer).
        let mut taken: Vec<u64> = Vec::new();
        for op in requests {
            let until = if op.kind() == Kind::Info || op.complete.is_none() {
                op.start_ns().saturating_add(UNKNOWN_HORIZON_NS)
            } else {
                op.end_ns()
            };
            let free = taken.iter().position(|&busy| busy < op.start_ns());
            let slot = match free {
                Some(slot) => slot,
                None if taken.len() < 64 => {
                    taken.push(0);
                    taken.len() - 1
                }
                None => {
                    crowded.insert(lock.to_string());
                    break;
                }
            };
            taken[slot] = until;
            slots.insert(reservation_key(op), slot as u8);
        }
    }
    slots.retain(|key, _| !crowded.contains(&key.2));
    (slots, crowded)
}

/// The states after the holder of `s` lost its grant on a lock whose grants ask for a
/// lock-delay: free, and delayed unless the loss was a close.
fn ended_maybe_delayed(s: LockState) -> [LockState; 2] {
    let free = LockState { holder: None, ..s };
    [
        free,
        LockState {
            delayed: true,
            ..free
        },
    ]
}

/// One operation of a lock's sub-history, ready for the search.
#[derive(Clone, Debug)]
pub struct Entry {
    /// What it did and answered.
    pub op: ModelOp,
    /// Whether the outcome is unknown.
    pub unknown: bool,
    /// Invocation time.
    pub start_ns: u64,
    /// Completion time (`u64::MAX` when unknown).
    pub end_ns: u64,
    /// A description for counter-examples.
    pub label: String,
}

/// The result of the search for one lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A linearization exists.
    Linearizable,
    /// None exists: a description of where the search got stuck.
    NotLinearizable(String),
    /// The step budget ran out.
    Inconclusive,
}

const NONE: usize = usize::MAX;

/// Search for a linearization of `entries` from the free state. A session in `mortal`
/// may lose its grant (expire, unseen) at any point from the given time on.
pub fn search(entries: &[Entry], mortal: &HashMap<u64, u64>, budget: u64) -> Outcome {
    search_lock(entries, mortal, false, budget)
}

/// [`search`] on a lock whose grants ask for a lock-delay when `lock_delay`: an unseen
/// expiry of its holder may start one.
pub fn search_lock(
    entries: &[Entry],
    mortal: &HashMap<u64, u64>,
    lock_delay: bool,
    budget: u64,
) -> Outcome {
    // The list of call and return events, sorted by time (calls first on ties).
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(entries.len() * 2);
    for (index, entry) in entries.iter().enumerate() {
        events.push((entry.start_ns, true, index));
        events.push((entry.end_ns.max(entry.start_ns), false, index));
    }
    events.sort_by_key(|&(time, call, index)| (time, !call, index));
    let count = events.len();
    // Node 0 is the head; node k + 1 is events[k].
    let mut next = vec![NONE; count + 1];
    let mut prev = vec![NONE; count + 1];
    let mut partner = vec![NONE; count + 1];
    let mut call_node = vec![NONE; entries.len()];
    for (k, &(_, call, index)) in events.iter().enumerate() {
        let node = k + 1;
        prev[node] = k;
        next[k] = node;
        if call {
            call_node[index] = node;
        } else {
            partner[call_node[index]] = node;
        }
    }
    let op_of = |node: usize| events[node - 1].2;
    let is_call = |node: usize| events[node - 1].1;

    let words = entries.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut state: BTreeSet<LockState> = BTreeSet::from([LockState {
        holder: None,
        last_token: 0,
        delayed: false,
        reserved: 0,
    }]);
    let mut cache: HashSet<(Vec<u64>, Vec<LockState>)> = HashSet::new();
    let mut calls: Vec<(usize, BTreeSet<LockState>)> = Vec::new();
    let mut steps = 0u64;
    let mut deepest = (0usize, String::new());
    let mut entry = next[0];
    while next[0] != NONE {
        steps += 1;
        if steps > budget {
            return Outcome::Inconclusive;
        }
        if is_call(entry) {
            let index = op_of(entry);
            let e = &entries[index];
            let new_state: BTreeSet<LockState> = state
                .iter()
                .flat_map(|s| {
                    // An unseen expiry of the holder may come first.
                    let expired = s.holder.and_then(|(session, _)| {
                        mortal
                            .get(&session)
                            .is_some_and(|&from| from <= e.end_ns)
                            .then_some(LockState { holder: None, ..*s })
                    });
                    let delayed = expired.filter(|_| lock_delay).map(|free| LockState {
                        delayed: true,
                        ..free
                    });
                    std::iter::once(*s).chain(expired).chain(delayed)
                })
                .flat_map(|s| step(s, &e.op, e.unknown))
                .collect();
            if !new_state.is_empty() {
                let mut new_linearized = linearized.clone();
                new_linearized[index / 64] |= 1 << (index % 64);
                let key = (
                    new_linearized,
                    new_state.iter().copied().collect::<Vec<_>>(),
                );
                if !cache.contains(&key) {
                    cache.insert(key.clone());
                    calls.push((entry, std::mem::replace(&mut state, new_state)));
                    linearized = key.0;
                    // Lift the call and its return out of the list.
                    let ret = partner[entry];
                    next[prev[entry]] = next[entry];
                    prev[next[entry]] = prev[entry];
                    next[prev[ret]] = next[ret];
                    if next[ret] != NONE {
                        prev[next[ret]] = prev[ret];
                    }
                    entry = next[0];
                    continue;
                }
            }
            entry = next[entry];
        } else {
            // An operation's completion is reached before it could be linearized.
            if deepest.1.is_empty() || calls.len() > deepest.0 {
                let stuck = &entries[op_of(entry)];
                deepest = (
                    calls.len(),
                    format!(
                        "after {} operation(s) linearized, `{}` ({:.3}s..{:.3}s) fits no order; the model could be in {:?}",
                        calls.len(),
                        stuck.label,
                        stuck.start_ns as f64 / 1e9,
                        stuck.end_ns as f64 / 1e9,
                        state
                    ),
                );
            }
            let Some((call, previous_state)) = calls.pop() else {
                return Outcome::NotLinearizable(deepest.1);
            };
            state = previous_state;
            let index = op_of(call);
            linearized[index / 64] &= !(1 << (index % 64));
            // Unlift.
            let ret = partner[call];
            next[prev[ret]] = ret;
            if next[ret] != NONE {
                prev[next[ret]] = ret;
            }
            next[prev[call]] = call;
            prev[next[call]] = call;
            entry = next[call];
        }
    }
    Outcome::Linearizable
}

/// What the watch observer saw: per (lock, session), (time seen, event, token); and the
/// times at which it reported missing events (a resync to a later revision).
type SeenEvents = HashMap<(String, u64), Vec<(u64, String, u64)>>;

struct Observed {
    present: bool,
    events: SeenEvents,
    gap_times: Vec<u64>,
}

impl Observed {
    fn new(history: &[crate::history::Event]) -> Observed {
        let mut observed = Observed {
            present: false,
            events: HashMap::new(),
            gap_times: Vec::new(),
        };
        let mut last_revision: Option<u64> = None;
        for event in history.iter().filter(|e| e.op == Some(Op::Watch)) {
            observed.present = true;
            let revision = event.revision.unwrap_or(0);
            let what = event.outcome.clone().unwrap_or_default();
            if what == "resync" {
                if last_revision.is_some_and(|last| revision > last) {
                    observed.gap_times.push(event.time_ns);
                }
                last_revision = Some(last_revision.unwrap_or(0).max(revision));
                continue;
            }
            last_revision = Some(last_revision.unwrap_or(0).max(revision));
            if let (Some(lock), Some(session)) = (&event.lock, event.session) {
                observed
                    .events
                    .entry((lock.clone(), session))
                    .or_default()
                    .push((event.time_ns, what, event.token.unwrap_or(0)));
            }
        }
        observed
    }

    /// Whether every change applied after `time` was seen.
    fn complete_after(&self, time: u64) -> bool {
        self.present && !self.gap_times.iter().any(|&gap| gap >= time)
    }

    /// The first event `what` of (lock, session) seen at or after `time` whose token
    /// passes `accept`.
    fn find(
        &self,
        lock: &str,
        session: u64,
        time: u64,
        what: &[&str],
        accept: impl Fn(u64) -> bool,
    ) -> Option<(u64, u64)> {
        self.events
            .get(&(lock.to_string(), session))?
            .iter()
            .find(|(t, w, token)| *t >= time && what.contains(&w.as_str()) && accept(*token))
            .map(|(t, _, token)| (*t, *token))
    }
}

/// One lock's operations, and the sessions that may have expired unseen (from when).
#[derive(Clone, Debug, Default)]
pub struct LockHistory {
    /// The operations.
    pub entries: Vec<Entry>,
    /// Session → the time from which it may have expired without the observer seeing it.
    pub mortal: HashMap<u64, u64>,
    /// Its grants ask for a lock-delay (the lock-delay workload).
    pub lock_delay: bool,
}

/// Build each lock's sub-history from the run's history.
///
/// Operations with an unknown outcome are resolved with the watch observer where it saw
/// every change since their invocation: an unknown acquire whose grant it saw becomes a
/// grant that completed by the time it was seen (and its background release, if seen, a
/// release); one it did not see had no effect; likewise for unknown releases and session
/// ends. Only where the observer missed events do they stay unknown. This keeps the
/// search small: an unknown operation is concurrent with everything after it.
pub fn lock_histories(evidence: &Evidence) -> BTreeMap<String, LockHistory> {
    let ops = operations(&evidence.history);
    let observed = Observed::new(&evidence.history);
    // The invocation of each session's last acknowledged operation (it was alive then).
    let mut alive_at: HashMap<u64, u64> = HashMap::new();
    let mut ended_ok: HashSet<u64> = HashSet::new();
    let mut ok_tokens: HashSet<(String, u64, u64)> = HashSet::new();
    for op in &ops {
        if matches!(op.op(), Op::Watch | Op::Fault | Op::SessionLost) || op.kind() != Kind::Ok {
            continue;
        }
        if let Some(session) = op.session() {
            let at = alive_at.entry(session).or_insert(0);
            *at = (*at).max(op.start_ns());
            if op.op() == Op::CloseSession {
                ended_ok.insert(session);
            }
            if op.op() == Op::Acquire
                && let (Some(lock), Some(token)) = (op.lock(), op.token())
            {
                ok_tokens.insert((lock.to_string(), session, token));
            }
        }
    }
    // The first time the observer saw each (lock, session) grant end.
    let mut seen_end: HashMap<(String, u64), u64> = HashMap::new();
    for event in &evidence.history {
        if event.op == Some(Op::Watch)
            && matches!(
                event.outcome.as_deref(),
                Some("expired" | "closed" | "forced")
            )
            && let (Some(lock), Some(session)) = (&event.lock, event.session)
        {
            seen_end
                .entry((lock.clone(), session))
                .or_insert(event.time_ns);
        }
    }

    // A queued multi-lock holds a place in the queue of each of its names, free ones too
    // (no overtaking, docs/design.md), so a plain acquire of such a free lock may rightly
    // wait or be refused: each multi-lock's name gets a reservation slot on its lock,
    // which the model sets at some point of the request and clears at its answer. A lock
    // with more requests at once than slots keeps the coarse rule: refusals unchecked.
    let (slots, crowded) = reservation_slots(&ops);
    let mut per_lock: BTreeMap<String, LockHistory> = BTreeMap::new();
    let mut sessions_of: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    let mut closes: Vec<&Operation> = Vec::new();
    let mut used_grants: HashSet<(String, u64, u64)> = HashSet::new();
    for op in &ops {
        let model = match op.op() {
            Op::Acquire
                if op.kind() == Kind::Ok
                    && op.outcome() != Some("granted")
                    && op.lock().is_some_and(|lock| crowded.contains(lock)) =>
            {
                ModelOp::Nothing
            }
            Op::Acquire | Op::Release | Op::Verify | Op::Describe => to_model(op),
            Op::CloseSession => {
                closes.push(op);
                continue;
            }
            _ => continue,
        };
        let Some(lock) = op.lock() else { continue };
        // The sequential model is of an exclusive lock; a semaphore's grants are checked
        // by `exclusion` (at most N in force) and `tokens`.
        if crate::workload::permits_of(lock).is_some() {
            continue;
        }
        let session = op.session().unwrap_or(0);
        if op.op() == Op::Acquire {
            sessions_of
                .entry(lock.to_string())
                .or_default()
                .insert(session);
        }
        let entries = &mut per_lock.entry(lock.to_string()).or_default().entries;
        let unknown = op.kind() == Kind::Info || ended_under_release(op);
        if let Some(&slot) = slots.get(&reservation_key(op)) {
            let answered = if unknown {
                op.start_ns().saturating_add(UNKNOWN_HORIZON_NS)
            } else {
                op.end_ns()
            };
            // It queued before its answer: strictly before the slot is cleared.
            entries.push(Entry {
                op: ModelOp::Reserve { slot },
                unknown: true,
                start_ns: op.start_ns(),
                end_ns: answered.saturating_sub(1).max(op.start_ns()),
                label: format!("{} (queued: its place in the queue)", label(op)),
            });
            entries.push(Entry {
                op: ModelOp::Unreserve { slot },
                unknown: false,
                start_ns: answered,
                end_ns: answered,
                label: format!("{} (answered: its place in the queue gone)", label(op)),
            });
        }
        if unknown && observed.complete_after(op.start_ns()) {
            match op.op() {
                Op::Acquire => {
                    let grant = observed.find(lock, session, op.start_ns(), &["acquired"], |t| {
                        !ok_tokens.contains(&(lock.to_string(), session, t))
                            && !used_grants.contains(&(lock.to_string(), session, t))
                    });
                    if let Some((seen, token)) = grant {
                        used_grants.insert((lock.to_string(), session, token));
                        entries.push(Entry {
                            op: ModelOp::Acquire {
                                session,
                                answer: Some(Some(token)),
                            },
                            unknown: false,
                            start_ns: op.start_ns(),
                            end_ns: seen.max(op.start_ns()),
                            label: format!("{} (granted {token}, seen by the observer)", label(op)),
                        });
                        if let Some((released, _)) =
                            observed
                                .find(lock, session, op.start_ns(), &["released"], |t| t == token)
                        {
                            entries.push(Entry {
                                op: ModelOp::Release {
                                    session,
                                    token,
                                    answer: Some(true),
                                },
                                unknown: false,
                                start_ns: op.start_ns(),
                                end_ns: released.max(op.start_ns()),
                                label: format!(
                                    "background release of {token} by session {session} (seen by the observer)"
                                ),
                            });
                        }
                    }
                    continue;
                }
                Op::Release => {
                    let token = op.invoke.token.unwrap_or(0);
                    if let Some((seen, _)) =
                        observed.find(lock, session, op.start_ns(), &["released"], |t| t == token)
                    {
                        entries.push(Entry {
                            op: ModelOp::Release {
                                session,
                                token,
                                answer: Some(true),
                            },
                            unknown: false,
                            start_ns: op.start_ns(),
                            end_ns: seen.max(op.start_ns()),
                            label: format!("{} (seen by the observer)", label(op)),
                        });
                    }
                    continue;
                }
                _ => {}
            }
        }
        entries.push(Entry {
            unknown,
            start_ns: op.start_ns(),
            end_ns: if unknown {
                op.start_ns().saturating_add(UNKNOWN_HORIZON_NS)
            } else {
                op.end_ns()
            },
            label: label(op),
            op: model,
        });
    }
    for (lock, sessions) in &sessions_of {
        let history = per_lock.entry(lock.clone()).or_default();
        history.lock_delay = crate::workload::lock_delay_of(lock).is_some();
        let entries = &mut history.entries;
        for close in &closes {
            let Some(session) = close.session() else {
                continue;
            };
            if !sessions.contains(&session) {
                continue;
            }
            let unknown = close.kind() != Kind::Ok;
            if unknown && observed.complete_after(close.start_ns()) {
                // Its effect, if any, is the end the observer saw (added below).
                continue;
            }
            // A refused close (the session was already gone) changes nothing either way.
            entries.push(Entry {
                op: ModelOp::End { session },
                unknown,
                start_ns: close.start_ns(),
                end_ns: close.end_ns(),
                label: label(close),
            });
        }
        for &session in sessions {
            let end = seen_end.get(&(lock.clone(), session)).copied();
            if ended_ok.contains(&session) && end.is_none() {
                continue;
            }
            let start = alive_at.get(&session).copied().unwrap_or(0);
            if end.is_none() && observed.complete_after(start) {
                // The observer saw no expiry of this session's grant: none took effect.
                continue;
            }
            match end {
                Some(end) => entries.push(Entry {
                    op: if history.lock_delay {
                        ModelOp::EndMaybeDelayed { session }
                    } else {
                        ModelOp::End { session }
                    },
                    unknown: false,
                    start_ns: start.min(end),
                    end_ns: end,
                    label: format!(
                        "end (expiry or close) of session {session}, seen by the observer"
                    ),
                }),
                // It may expire at any point from then on, or never: a nondeterministic
                // step of the model rather than an operation concurrent with everything.
                None => {
                    history.mortal.insert(session, start);
                }
            }
        }
    }
    per_lock
}

/// A release answered "session not found" may still have taken effect: the answers a
/// session remembers end with it, so an attempt that was applied and then retried (with
/// the same request id) after the session expired is answered "not found". Its outcome
/// is unknown. (Post-mortem, seed 42, `--time 180s --nodes 5`: two such releases, both
/// applied — the observer saw them — made the history look non-linearizable.)
fn ended_under_release(op: &Operation) -> bool {
    op.op() == Op::Release && op.kind() == Kind::Fail && op.outcome() == Some("session_not_found")
}

fn to_model(op: &Operation) -> ModelOp {
    let session = op.session().unwrap_or(0);
    let kind = op.kind();
    let outcome = op.outcome().unwrap_or("");
    match op.op() {
        // One name of a multi-lock that was not granted: it had no effect on this lock,
        // but another name may have been the one held.
        Op::Acquire if op.invoke.multi.is_some() && kind == Kind::Ok && outcome != "granted" => {
            ModelOp::Nothing
        }
        Op::Acquire => ModelOp::Acquire {
            session,
            answer: match (kind, outcome) {
                (Kind::Ok, "granted") => op.token().map(Some),
                (Kind::Ok, "would_block" | "timed_out") => Some(None),
                _ => None,
            },
        },
        Op::Release => ModelOp::Release {
            session,
            token: op.invoke.token.unwrap_or(0),
            answer: match (kind, outcome) {
                (Kind::Ok, _) => Some(true),
                (Kind::Fail, "not_held" | "stale_token" | "session_not_found") => Some(false),
                _ => None,
            },
        },
        Op::Verify if kind == Kind::Ok => ModelOp::Verify {
            token: op.invoke.token.unwrap_or(0),
            current: outcome == "current",
            current_token: op.complete.as_ref().and_then(|c| c.holder_token),
        },
        Op::Describe if kind == Kind::Ok => {
            let complete = op.complete.as_ref();
            ModelOp::Describe {
                holder: complete.and_then(|c| c.holder_session.zip(c.holder_token)),
            }
        }
        _ => ModelOp::Nothing,
    }
}

fn label(op: &Operation) -> String {
    format!(
        "{} {:?} {:?} session={:?} token={:?} -> {:?} {}",
        op.invoke.process,
        op.op(),
        op.lock().unwrap_or(""),
        op.session(),
        op.token(),
        op.kind(),
        op.outcome().unwrap_or("")
    )
}

/// Check every lock's history, each within `budget` search steps.
pub fn check(evidence: &Evidence, budget: u64) -> Verdict {
    let mut verdict = Verdict::new(NAME);
    for (lock, history) in lock_histories(evidence) {
        let entries = history.entries;
        verdict.checked += entries.len();
        match search_lock(&entries, &history.mortal, history.lock_delay, budget) {
            Outcome::Linearizable => {}
            Outcome::NotLinearizable(why) => {
                verdict.violation(format!("lock {lock:?}: not linearizable: {why}"))
            }
            Outcome::Inconclusive => verdict.note(format!(
                "lock {lock:?}: search gave up after {budget} steps ({} operations)",
                entries.len()
            )),
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::testkit::H;
    use crate::history::Event;

    fn describe(h: &mut H, a: u64, b: u64, process: &str, holder: Option<(u64, u64)>) {
        h.op(
            a,
            b,
            process,
            Op::Describe,
            Kind::Ok,
            |e| e.lock("l"),
            move |mut e: Event| {
                e.holder_session = holder.map(|h| h.0);
                e.holder_token = holder.map(|h| h.1);
                e.lock("l")
            },
        );
    }

    fn verdict(h: H) -> Verdict {
        check(
            &Evidence {
                history: h.done(),
                ..Evidence::default()
            },
            DEFAULT_STEP_BUDGET,
        )
    }

    #[test]
    fn a_sequential_history_is_linearizable() {
        let mut h = H::default();
        h.grant(0, 1, "c0", "l", 1, 3);
        describe(&mut h, 2, 3, "c1", Some((1, 3)));
        h.release(4, 5, "c0", "l", 1, 3);
        describe(&mut h, 6, 7, "c1", None);
        h.grant(8, 9, "c1", "l", 2, 4);
        let verdict = verdict(h);
        assert!(verdict.valid, "{verdict:?}");
    }

    #[test]
    fn overlapping_operations_may_take_any_order() {
        let mut h = H::default();
        h.grant(0, 10, "c0", "l", 1, 3);
        // Concurrent with the grant: sees the lock free, or held.
        describe(&mut h, 1, 2, "c1", None);
        describe(&mut h, 3, 4, "c2", Some((1, 3)));
        let verdict = verdict(h);
        assert!(verdict.valid, "{verdict:?}");
    }

    #[test]
    fn two_holders_at_once_are_not_linearizable() {
        let mut h = H::default();
        h.grant(0, 1, "c0", "l", 1, 3);
        h.grant(2, 3, "c1", "l", 2, 4);
        // Session 1 was alive after the second grant (its release was acknowledged), so
        // it cannot have expired in between.
        h.release(4, 5, "c0", "l", 1, 3);
        let verdict = verdict(h);
        assert!(!verdict.valid, "{verdict:?}");
        assert!(verdict.first().unwrap().contains("not linearizable"));
    }

    #[test]
    fn a_stale_read_is_not_linearizable() {
        let mut h = H::default();
        h.grant(0, 1, "c0", "l", 1, 3);
        h.release(2, 3, "c0", "l", 1, 3);
        // Completely after the release, a read still sees the holder.
        describe(&mut h, 4, 5, "c1", Some((1, 3)));
        let verdict = verdict(h);
        assert!(!verdict.valid, "{verdict:?}");
    }

    #[test]
    fn an_expiry_frees_the_lock_but_only_after_the_holder_was_alive() {
        let mut h = H::default();
        h.grant(0, 1, "c0", "l", 1, 3);
        // Session 1 is not heard from again; it may expire; then session 2 takes it.
        h.grant(5, 6, "c1", "l", 2, 4);
        let verdict_ok = verdict(h);
        assert!(verdict_ok.valid, "{verdict_ok:?}");

        // But session 1 released (acknowledged) at 10..11, so it was alive then: a grant
        // to session 2 completed before that is an overlap.
        let mut h = H::default();
        h.grant(0, 1, "c0", "l", 1, 3);
        h.grant(5, 6, "c1", "l", 2, 4);
        h.release(10, 11, "c0", "l", 1, 3);
        let verdict_bad = verdict(h);
        assert!(!verdict_bad.valid, "{verdict_bad:?}");
    }

    /// After the observer saw the holder's grant expire, a rival's acquire that timed out
    /// on a free lock is refuted on a plain lock, but fits a lock whose grants ask for a
    /// lock-delay (the delay kept the lock from everyone); a grant after it fits both.
    #[test]
    fn a_refusal_after_an_expiry_fits_only_a_lock_delay() {
        let run = |lock: &str| {
            let mut h = H::default();
            h.grant(0, 1, "c0", lock, 1, 3);
            h.watch(10, "expired", lock, 1, 3, 20);
            h.op(
                12,
                14,
                "c1",
                Op::Acquire,
                Kind::Ok,
                |e| e.lock(lock).session(2),
                |e| e.lock(lock).session(2).outcome("timed_out"),
            );
            h.grant(15, 16, "c1", lock, 2, 4);
            verdict(h)
        };
        let delayed = run("harness/delay500-l0");
        assert!(delayed.valid, "{delayed:?}");
        let plain = run("harness/l0");
        assert!(!plain.valid, "{plain:?}");
    }

    /// A name of a multi-lock request of `session`, invoked at `a` ms and answered at
    /// `b` ms with `outcome` (`granted` with `token`, or `timed_out`).
    #[allow(clippy::too_many_arguments)]
    fn multi_name(
        h: &mut H,
        a: u64,
        b: u64,
        process: &str,
        lock: &'static str,
        session: u64,
        group: u64,
        answer: Option<u64>,
    ) {
        h.op(
            a,
            b,
            process,
            Op::Acquire,
            Kind::Ok,
            |mut e| {
                e.multi = Some(group);
                e.lock(lock).session(session)
            },
            |mut e| {
                e.multi = Some(group);
                let e = e.lock(lock).session(session);
                match answer {
                    Some(token) => e.token(token).outcome("granted"),
                    None => e.outcome("timed_out"),
                }
            },
        );
    }

    /// A plain acquire of `lock` refused (`would_block`) from `a` to `b` ms.
    fn refused(h: &mut H, a: u64, b: u64, lock: &'static str, session: u64) {
        h.op(
            a,
            b,
            "c2",
            Op::Acquire,
            Kind::Ok,
            |e| e.lock(lock).session(session),
            |e| e.lock(lock).session(session).outcome("would_block"),
        );
    }

    /// A queued multi-lock holds a place in the queue of a free name: a plain acquire
    /// refused while the request was waiting fits; the same refusal after the request
    /// was answered (the lock free, nobody queued) does not, though the lock is one a
    /// multi-lock asked for (the coarse rule let every refusal on such a lock pass).
    #[test]
    fn a_multi_lock_reserves_a_free_name_only_while_it_waits() {
        let mut h = H::default();
        h.grant(0, 1, "c0", "m", 1, 3);
        multi_name(&mut h, 2, 50, "c1", "m", 2, 7, None);
        h.release(3, 4, "c0", "m", 1, 3);
        refused(&mut h, 10, 11, "m", 3);
        let during = verdict(h);
        assert!(during.valid, "{during:?}");

        let mut h = H::default();
        h.grant(0, 1, "c0", "m", 1, 3);
        multi_name(&mut h, 2, 50, "c1", "m", 2, 7, None);
        h.release(3, 4, "c0", "m", 1, 3);
        refused(&mut h, 60, 61, "m", 3);
        let after = verdict(h);
        assert!(!after.valid, "{after:?}");
    }

    #[test]
    fn an_unknown_acquire_may_or_may_not_have_happened() {
        let mut h = H::default();
        let id = h.invoke(0, "c0", Op::Acquire, |e| e.lock("l").session(1));
        h.complete(1, "c0", id, Kind::Info, Op::Acquire, |e| {
            e.lock("l").session(1)
        });
        // A try by another session found it taken: only the unknown grant explains it.
        h.op(
            2,
            3,
            "c1",
            Op::Acquire,
            Kind::Ok,
            |e| e.lock("l").session(2),
            |e| e.lock("l").session(2).outcome("would_block"),
        );
        // Later the lock is free and granted: the ghost grant went away.
        h.grant(4, 5, "c1", "l", 2, 9);
        let verdict = verdict(h);
        assert!(verdict.valid, "{verdict:?}");
    }

    #[test]
    fn a_release_answered_session_not_found_may_have_taken_effect() {
        let mut h = H::default();
        h.grant(0, 1, "c0", "l", 1, 7);
        // The release was applied, then its retry found the session gone.
        h.op(
            2,
            9,
            "c0",
            Op::Release,
            Kind::Fail,
            |e| e.lock("l").session(1).token(7),
            |e| e.lock("l").session(1).token(7).outcome("session_not_found"),
        );
        // Another session takes the lock in between: only the applied release explains it.
        h.grant(4, 5, "c1", "l", 2, 8);
        // The observer saw everything: an explicit release, not an expiry.
        h.watch(0, "resync", "", 0, 0, 0);
        h.watch(1, "acquired", "l", 1, 7, 1);
        h.watch(3, "released", "l", 1, 7, 2);
        h.watch(5, "acquired", "l", 2, 8, 3);
        let verdict = verdict(h);
        assert!(verdict.valid, "{verdict:?}");
    }

    #[test]
    fn a_token_lower_than_an_earlier_grant_is_not_linearizable() {
        let mut h = H::default();
        h.grant(0, 1, "c0", "l", 1, 7);
        h.release(2, 3, "c0", "l", 1, 7);
        h.grant(4, 5, "c1", "l", 2, 6);
        let verdict = verdict(h);
        assert!(!verdict.valid, "{verdict:?}");
    }

    #[test]
    fn the_budget_makes_it_inconclusive_not_invalid() {
        let mut h = H::default();
        for i in 0..6 {
            describe(&mut h, 0, 100, &format!("c{i}"), None);
        }
        h.grant(0, 1, "x", "l", 1, 3);
        let verdict = check(
            &Evidence {
                history: h.done(),
                ..Evidence::default()
            },
            3,
        );
        assert!(verdict.valid);
        assert!(!verdict.notes.is_empty());
    }
}

#[cfg(test)]
mod regressions {
    use super::*;
    use crate::check::testkit::H;

    /// Post-mortem, seed 42 (`--time 180s --nodes 5`, debug binaries): p0 was granted
    /// token 2173 on `harness/l0` (revision 2781) and its release was acknowledged
    /// (revision 2782) at 118.431 s; at 118.432 s the nemesis killed every node
    /// (restart-all); a `Verify(2173)` sent at 118.442 s was answered at 121.304 s with
    /// `current = true`: a linearizable read served from the state at revision 2781, after
    /// the restart and before the node had applied the acknowledged release. The observer
    /// saw revisions 2781 and 2782 applied again only at 121.318 s. Open: see the harness
    /// report; this test keeps the checker catching that history (trimmed to its core).
    #[test]
    fn regression_stale_verify_after_restart_all_seed_42() {
        let mut h = H::default();
        h.grant(118_354, 118_370, "p0", "harness/l0", 89, 2173);
        h.release(118_374, 118_431, "p0", "harness/l0", 89, 2173);
        h.op(
            118_442,
            121_304,
            "p0",
            Op::Verify,
            Kind::Ok,
            |e| e.lock("harness/l0").token(2173),
            |mut e: crate::history::Event| {
                e.holder_token = Some(2173);
                e.lock("harness/l0").token(2173).outcome("current")
            },
        );
        h.grant(121_388, 121_477, "p0", "harness/l0", 97, 2174);
        let verdict = check(
            &Evidence {
                history: h.done(),
                ..Evidence::default()
            },
            DEFAULT_STEP_BUDGET,
        );
        assert!(!verdict.valid, "{verdict:?}");
        assert!(verdict.first().unwrap().contains("Verify"), "{verdict:?}");
    }
}
