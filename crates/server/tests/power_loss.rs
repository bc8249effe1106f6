//! Power cuts on the simulated disk (`store::sim`): what a process crash cannot show,
//! because the page cache survives it. After a cut, every acknowledged entry, vote and
//! snapshot must be there and the store must open.
//!
//! Seeded: each test prints its seed; `FENCELOCK_SIM_SEED=<seed>` replays it, and
//! `FENCELOCK_POWER_LOSS_ITERATIONS=<n>` runs more (or fewer) iterations.

use fencelock_core::{ClientId, Command};
use fencelock_server::raft::{CommandBatch, LogId, NodeId, PeerNode, TypeConfig};
use fencelock_server::store::log::LogStoreOptions;
use fencelock_server::store::sim::{SimDisk, SimRng, seed_from_env};
use fencelock_server::store::wal::{MIN_WAL_BYTES, WAL_FILE_NAME};
use fencelock_server::store::{Disk, LogStore, NoObserver, SharedState, StateMachineStore};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, Membership, RaftLogReader, RaftSnapshotBuilder,
    Snapshot, Vote,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

/// An entry of `commands` `OpenSession`s (a few bytes each), or the membership at 1.
fn entry(term: u64, index: u64, commands: u64) -> Entry<TypeConfig> {
    if index == 1 {
        let nodes: BTreeMap<NodeId, PeerNode> = [1, 2, 3]
            .into_iter()
            .map(|id| {
                let peer_addr = format!("127.0.0.1:{}", 7000 + id);
                (id, PeerNode { peer_addr })
            })
            .collect();
        return Entry {
            log_id: log_id(term, index),
            payload: EntryPayload::Membership(Membership::new(
                vec![nodes.keys().copied().collect()],
                nodes,
            )),
        };
    }
    let commands = (0..commands)
        .map(|c| Command::OpenSession {
            client_id: ClientId(u128::from(index) << 32 | u128::from(c)),
            ttl_ms: 10_000,
        })
        .collect();
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(CommandBatch(commands)),
    }
}

fn iterations(default: u64) -> u64 {
    std::env::var("FENCELOCK_POWER_LOSS_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Iterations stop at this much time even if fewer than asked ran (a loaded machine).
const TIME_BUDGET: Duration = Duration::from_secs(40);

/// One step of a log workload, as openraft would ask for it.
#[derive(Clone, Debug)]
enum Step {
    Vote(u64),
    Append(Vec<Entry<TypeConfig>>),
    Commit(LogId),
    Truncate(LogId),
    Purge(LogId),
    Checkpoint,
}

/// A workload that keeps Raft's rules: votes only go up, entries follow the log's end in
/// the vote's term, the committed id is in the log, truncates stay above it, purges at or
/// below it.
fn workload(rng: &mut SimRng, steps: usize) -> Vec<Step> {
    let mut out = Vec::new();
    let mut term = 0;
    let mut log: BTreeMap<u64, LogId> = BTreeMap::new();
    let (mut committed, mut purged) = (0u64, 0u64);
    let mut new_term = true;
    while out.len() < steps {
        let last = log.keys().next_back().copied().unwrap_or(purged);
        match rng.below(100) {
            0..=49 => {
                if new_term {
                    term += 1;
                    out.push(Step::Vote(term));
                    new_term = false;
                }
                let n = 1 + rng.below(6);
                let entries: Vec<_> = (last + 1..=last + n)
                    .map(|i| entry(term, i, 1 + rng.below(40)))
                    .collect();
                for e in &entries {
                    log.insert(e.log_id.index, e.log_id);
                }
                out.push(Step::Append(entries));
            }
            50..=59 => new_term = true,
            60..=71 if last > committed => {
                committed += 1 + rng.below(last - committed);
                out.push(Step::Commit(log[&committed]));
            }
            72..=81 if last > committed && committed >= purged => {
                let from = committed + 1 + rng.below(last - committed);
                out.push(Step::Truncate(log[&from]));
                log.retain(|&i, _| i < from);
                new_term = true;
            }
            82..=91 if committed > purged => {
                let upto = purged + 1 + rng.below(committed - purged);
                out.push(Step::Purge(log[&upto]));
                log.retain(|&i, _| i > upto);
                purged = upto;
            }
            92..=99 => out.push(Step::Checkpoint),
            _ => {}
        }
    }
    out
}

/// What was acknowledged before the cut.
#[derive(Debug, Default)]
struct Acked {
    vote: Option<u64>,
    /// Entries acknowledged and not since removed (or being removed) by a truncate or a
    /// purge.
    entries: BTreeMap<u64, LogId>,
}

/// Run `steps` until the first failure (the power cut).
async fn run(disk: &Disk, dir: &Path, options: &LogStoreOptions, steps: &[Step]) -> Acked {
    let mut acked = Acked::default();
    let Ok(mut store) = LogStore::open_on(disk, dir, options.clone()) else {
        return acked;
    };
    for step in steps {
        let ok = match step {
            Step::Vote(term) => {
                let ok = store.save_vote(&Vote::new(*term, 1)).await.is_ok();
                if ok {
                    acked.vote = Some(*term);
                }
                ok
            }
            Step::Append(entries) => {
                let ok = store.blocking_append(entries.clone()).await.is_ok();
                if ok {
                    acked
                        .entries
                        .extend(entries.iter().map(|e| (e.log_id.index, e.log_id)));
                }
                ok
            }
            Step::Commit(id) => store.save_committed(Some(*id)).await.is_ok(),
            Step::Truncate(id) => {
                acked.entries.retain(|&i, _| i < id.index);
                store.truncate(*id).await.is_ok()
            }
            Step::Purge(id) => {
                acked.entries.retain(|&i, _| i > id.index);
                store.purge(*id).await.is_ok()
            }
            Step::Checkpoint => store.checkpoint().is_ok(),
        };
        if !ok {
            break;
        }
    }
    acked
}

/// Check the log reopened after the cut against what was acknowledged.
async fn check_log(
    disk: &Disk,
    dir: &Path,
    options: &LogStoreOptions,
    acked: &Acked,
) -> Result<(), String> {
    // Even a cut during the very first start-up, which creates the files, must leave a
    // log that opens.
    let mut store = LogStore::open_on(disk, dir, options.clone())
        .map_err(|e| format!("the store does not open after the cut: {e}"))?;
    let vote = store.read_vote().await.map_err(|e| e.to_string())?;
    if vote.map(|v| v.leader_id.term) < acked.vote {
        return Err(format!(
            "vote {vote:?} is older than the acknowledged term {:?}",
            acked.vote
        ));
    }
    for (&index, &id) in &acked.entries {
        let found = store
            .try_get_log_entries(index..=index)
            .await
            .map_err(|e| e.to_string())?;
        if found.first().map(|e| e.log_id) != Some(id) {
            return Err(format!(
                "acknowledged entry {id} is gone (found {:?})",
                found.first().map(|e| e.log_id)
            ));
        }
    }
    Ok(())
}

fn options_for(rng: &mut SimRng) -> LogStoreOptions {
    LogStoreOptions {
        wal_bytes: [0, MIN_WAL_BYTES, 2 * MIN_WAL_BYTES, 8 * MIN_WAL_BYTES][rng.below(4) as usize],
        inline_append_max_bytes: [0, 64 << 10][rng.below(2) as usize],
        cache_entries_max: [0, 256][rng.below(2) as usize],
        ..LogStoreOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_entries_and_votes_survive_a_power_cut_at_any_write() {
    let seed = seed_from_env();
    eprintln!("seed {seed} (replay with FENCELOCK_SIM_SEED={seed})");
    let mut rng = SimRng::new(seed);
    let started = Instant::now();
    let wanted = iterations(150);
    let mut ran = 0;
    while ran < wanted && started.elapsed() < TIME_BUDGET {
        ran += 1;
        let options = options_for(&mut rng);
        let count = 12 + rng.below(30) as usize;
        let steps = workload(&mut rng, count);
        let dir = PathBuf::from(format!("/power-loss/log-{seed}-{ran}/data"));
        // A dry run counts the writes, so the cut can fall on any of them.
        let dry = SimDisk::new(&dir.with_file_name("dry"), 0);
        run(
            &dry.mount(),
            &dir.with_file_name("dry").join("data"),
            &options,
            &steps,
        )
        .await;
        let writes = dry.writes();
        let sim = SimDisk::new(dir.parent().unwrap(), rng.next_u64());
        let cut_at = rng.below(writes + 1);
        sim.cut_after(Some(cut_at));
        let acked = run(&sim.mount(), &dir, &options, &steps).await;
        if sim.cuts() == 0 {
            sim.power_cut();
        }
        // Half the time, cut again while the restarted store recovers (or closes).
        let second_cut = rng.chance(50).then(|| rng.below(40));
        if let Some(at) = second_cut {
            sim.cut_after(Some(at));
            drop(LogStore::open_on(&sim.mount(), &dir, options.clone()));
            if sim.cuts() == 1 {
                sim.power_cut();
            }
        }
        if let Err(e) = check_log(&sim.mount(), &dir, &options, &acked).await {
            panic!(
                "seed {seed}, iteration {ran}, cut before write {cut_at} of {writes}, then \
                 {second_cut:?} writes into the recovery, {options:?}: {e}\nsteps: {steps:#?}"
            );
        }
    }
    eprintln!("{ran} power cuts");
}

#[tokio::test]
async fn a_missing_write_ahead_file_in_use_refuses_start_up_naming_it() {
    let root = Path::new("/power-loss/missing-wal");
    let sim = SimDisk::new(root, 1);
    let dir = root.join("data");
    let options = LogStoreOptions::default();
    let mut store = LogStore::open_on(&sim.mount(), &dir, options.clone()).expect("open");
    store.save_vote(&Vote::new(1, 1)).await.expect("vote");
    store
        .blocking_append((1..=3).map(|i| entry(1, i, 2)).collect::<Vec<_>>())
        .await
        .expect("append");
    // The entries are in the write-ahead file only; the file goes missing.
    sim.power_cut();
    drop(store);
    sim.remove_durably(&dir.join(WAL_FILE_NAME));
    let error = LogStore::open_on(&sim.mount(), &dir, options).expect_err("must refuse");
    let message = error.to_string();
    assert!(
        message.contains(WAL_FILE_NAME) && message.contains("missing"),
        "{message}"
    );
}

#[tokio::test]
async fn a_new_data_directory_and_its_files_survive_a_power_cut() {
    // Everything not synced is lost: the data directory, the log database and the
    // write-ahead file must each have been synced into their directory.
    let root = Path::new("/power-loss/new-dir");
    let sim = SimDisk::new(root, 2);
    let dir = root.join("nodes").join("data");
    let mut store =
        LogStore::open_on(&sim.mount(), &dir, LogStoreOptions::default()).expect("open");
    store.save_vote(&Vote::new(1, 1)).await.expect("vote");
    store
        .blocking_append(vec![entry(1, 1, 1)])
        .await
        .expect("append");
    sim.power_cut_losing_everything_unsynced();
    drop(store);
    let mut store =
        LogStore::open_on(&sim.mount(), &dir, LogStoreOptions::default()).expect("reopen");
    assert_eq!(
        store.read_vote().await.expect("vote"),
        Some(Vote::new(1, 1))
    );
    let entries = store.try_get_log_entries(1..2).await.expect("read");
    assert_eq!(entries.len(), 1);

    // The snapshot directory too: a snapshot built in it survives.
    let snapshots = dir.join("snapshots");
    let mut machine = StateMachineStore::open_on(
        &sim.mount(),
        &snapshots,
        SharedState::new(Arc::new(NoObserver)),
    )
    .expect("open");
    machine.apply([entry(1, 1, 0)]).await.expect("apply");
    build(&mut machine).await;
    sim.power_cut_losing_everything_unsynced();
    drop(machine);
    let mut machine = StateMachineStore::open_on(
        &sim.mount(),
        &snapshots,
        SharedState::new(Arc::new(NoObserver)),
    )
    .expect("reopen");
    assert_eq!(
        machine.applied_state().await.expect("applied").0,
        Some(log_id(1, 1))
    );
}

async fn build(store: &mut StateMachineStore) -> Snapshot<TypeConfig> {
    store
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build snapshot")
}

/// Snapshots a leader would send: after entries 1..=`upto`.
async fn leader_snapshots(points: &[u64]) -> Vec<(Snapshot<TypeConfig>, Vec<u8>)> {
    let root = Path::new("/power-loss/leader");
    let sim = SimDisk::new(root, 0);
    let mut leader = StateMachineStore::open_on(
        &sim.mount(),
        &root.join("snapshots"),
        SharedState::new(Arc::new(NoObserver)),
    )
    .expect("open");
    let mut applied = 0;
    let mut out = Vec::new();
    for &upto in points {
        leader
            .apply(
                (applied + 1..=upto)
                    .map(|i| entry(1, i, 3))
                    .collect::<Vec<_>>(),
            )
            .await
            .expect("apply");
        applied = upto;
        let snapshot = build(&mut leader).await;
        let bytes = snapshot.snapshot.get_ref().clone();
        out.push((snapshot, bytes));
    }
    out
}

/// Install the first snapshot, apply and build one locally, install the second: what
/// was acknowledged last (its last log id).
async fn snapshot_steps(
    disk: &Disk,
    dir: &Path,
    snapshots: &[(Snapshot<TypeConfig>, Vec<u8>)],
) -> Option<LogId> {
    let mut acked = None;
    let Ok(mut store) =
        StateMachineStore::open_on(disk, dir, SharedState::new(Arc::new(NoObserver)))
    else {
        return acked;
    };
    for (round, (snapshot, bytes)) in snapshots.iter().enumerate() {
        let mut received = store.begin_receiving_snapshot().await.expect("begin");
        *received.get_mut() = bytes.clone();
        if store
            .install_snapshot(&snapshot.meta, received)
            .await
            .is_err()
        {
            return acked;
        }
        acked = snapshot.meta.last_log_id;
        if round == 0 {
            let next = acked.map_or(1, |id| id.index + 1);
            store
                .apply((next..next + 3).map(|i| entry(1, i, 1)).collect::<Vec<_>>())
                .await
                .expect("apply");
            match store.get_snapshot_builder().await.build_snapshot().await {
                Ok(built) => acked = built.meta.last_log_id,
                Err(_) => return acked,
            }
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_snapshots_survive_a_power_cut_at_any_write() {
    let seed = seed_from_env();
    eprintln!("seed {seed} (replay with FENCELOCK_SIM_SEED={seed})");
    let mut rng = SimRng::new(seed);
    let snapshots = leader_snapshots(&[5, 20]).await;
    let started = Instant::now();
    let wanted = iterations(150);
    let mut ran = 0;
    while ran < wanted && started.elapsed() < TIME_BUDGET {
        ran += 1;
        let root = PathBuf::from(format!("/power-loss/snap-{seed}-{ran}"));
        let dry = SimDisk::new(&root.join("dry"), 0);
        snapshot_steps(
            &dry.mount(),
            &root.join("dry").join("snapshots"),
            &snapshots,
        )
        .await;
        let writes = dry.writes();
        let sim = SimDisk::new(&root.join("cut"), rng.next_u64());
        let dir = root.join("cut").join("snapshots");
        let cut_at = rng.below(writes + 1);
        sim.cut_after(Some(cut_at));
        let acked = snapshot_steps(&sim.mount(), &dir, &snapshots).await;
        if sim.cuts() == 0 {
            sim.power_cut();
        }
        let mut store = StateMachineStore::open_on(
            &sim.mount(),
            &dir,
            SharedState::new(Arc::new(NoObserver)),
        )
        .unwrap_or_else(|e| {
            panic!("seed {seed}, iteration {ran}, cut before write {cut_at}: does not open: {e}")
        });
        let applied = store.applied_state().await.expect("applied").0;
        assert!(
            applied >= acked,
            "seed {seed}, iteration {ran}, cut before write {cut_at} of {writes}: the \
             acknowledged snapshot at {acked:?} is gone (loaded {applied:?})"
        );
    }
    eprintln!("{ran} power cuts");
}
