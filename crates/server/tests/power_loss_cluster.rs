//! A power cut of a whole three-node cluster at once, mid-load, on the simulated disk:
//! after the restart no acknowledged grant is lost and tokens never go backwards.
//!
//! Seeded: the test prints its seed; `FENCELOCK_SIM_SEED=<seed>` replays the disk's
//! choices and the cut points (the timing of the load is not replayed).

mod common;

use common::*;
use fencelock_proto::v1 as pb;
use fencelock_proto::v1::locks_client::LocksClient;
use fencelock_server::store::sim::{SimRng, seed_from_env};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// One acknowledged grant.
#[derive(Clone, Debug)]
struct Grant {
    name: String,
    token: u64,
}

/// Take a new lock after another on one session until `stop`, recording each grant
/// acknowledged; stop at the first error (the power cut) or after `max` locks.
async fn load(
    mut client: LocksClient<Channel>,
    worker: usize,
    round: usize,
    max: u64,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Grant>>>,
) {
    let Ok(session) = client
        .open_session(pb::OpenSessionRequest {
            client_id: client_id((round * 100 + worker) as u128 + 1),
            ttl_ms: 600_000,
        })
        .await
    else {
        return;
    };
    let session = session.into_inner().session_id;
    for k in 0..max {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let name = format!("r{round}-w{worker}-{k}");
        let request = acquire_request(session, &name, k + 1, pb::WaitPolicy::NoWait);
        match client.acquire(request).await {
            Ok(response) => {
                let response = response.into_inner();
                if response.outcome == pb::AcquireOutcome::Granted as i32 {
                    acked.lock().unwrap().push(Grant {
                        name,
                        token: response.token,
                    });
                }
            }
            Err(_) => return,
        }
    }
}

/// Retry `call` until it succeeds (the cluster is settling after the restart).
async fn describe(cluster: &TestCluster, name: &str) -> pb::DescribeResponse {
    let deadline = Instant::now() + SETTLE * 3;
    loop {
        let leader = cluster.leader().await;
        let mut client = cluster.locks(leader).await;
        match client
            .describe(pb::DescribeRequest {
                name: name.to_owned(),
            })
            .await
        {
            Ok(response) => return response.into_inner(),
            Err(status) => {
                assert!(
                    Instant::now() < deadline,
                    "describe {name} keeps failing: {status}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_cluster_power_cut_mid_load_loses_no_acknowledged_grant() {
    let seed = seed_from_env();
    eprintln!("seed {seed} (replay with FENCELOCK_SIM_SEED={seed})");
    let mut rng = SimRng::new(seed);
    let mut cluster = TestCluster::start_on_simulated_disk(3, rng.next_u64(), fast).await;
    let acked: Arc<Mutex<Vec<Grant>>> = Arc::default();
    const ROUNDS: usize = 3;
    const WORKERS: usize = 3;
    for round in 0..ROUNDS {
        let leader = cluster.leader().await;
        let stop = Arc::new(AtomicBool::new(false));
        let before = acked.lock().unwrap().len();
        let mut tasks = Vec::new();
        for worker in 0..WORKERS {
            let client = cluster.locks(leader).await;
            tasks.push(tokio::spawn(load(
                client,
                worker,
                round,
                400,
                stop.clone(),
                acked.clone(),
            )));
        }
        // Cut after a random number of grants (bounded in time).
        let target = before + 5 + rng.below(60) as usize;
        let deadline = Instant::now() + SETTLE * 2;
        while acked.lock().unwrap().len() < target && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1 + rng.below(5))).await;
        }
        cluster.power_cut().await;
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            let _ = tokio::time::timeout(SETTLE, task).await;
        }
        let grants = acked.lock().unwrap().clone();
        eprintln!(
            "round {round}: power cut after {} grants acknowledged",
            grants.len()
        );
        for grant in &grants {
            let found = describe(&cluster, &grant.name).await;
            let holders = found.lock.map(|lock| lock.holders).unwrap_or_default();
            assert!(
                holders.iter().any(|h| h.token == grant.token),
                "seed {seed}, round {round}: the acknowledged grant {grant:?} is gone after \
                 the power cut (holders now {holders:?})"
            );
        }
        // A new grant's token is above every acknowledged one.
        let highest = grants.iter().map(|g| g.token).max().unwrap_or(0);
        let leader = cluster.leader().await;
        let mut client = cluster.locks(leader).await;
        let session = open_session(&mut client, 10_000 + round as u128, 600_000).await;
        let token = try_lock(&mut client, session, &format!("after-cut-{round}"), 1)
            .await
            .expect("a free lock is granted");
        assert!(
            token > highest,
            "seed {seed}, round {round}: token {token} after the power cut is not above \
             the highest acknowledged {highest}"
        );
    }
    cluster.shutdown().await;
}
