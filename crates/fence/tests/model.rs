//! Property test: random interleavings of token presentations, on both backends,
//! checked against a plain model and against each other.

use std::collections::BTreeMap;

use fencelock_fence::{Decision, DurableFence, Fence, FenceError, FencingToken, MemoryFence};
use proptest::prelude::*;

const RESOURCES: [&str; 3] = ["r0", "r1", "r2"];
const LOCKS: [&str; 2] = ["locks/a", "locks/b"];

#[derive(Clone, Debug)]
enum Step {
    /// Present `token` for `resource` under `lock`; the operation fails if `fails`.
    Present {
        resource: usize,
        lock: usize,
        token: u64,
        fails: bool,
    },
    /// Close and reopen the durable fence (the memory fence carries on).
    Reopen,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        20 => (0..RESOURCES.len(), prop::bool::weighted(0.1), 0u64..24, prop::bool::weighted(0.15))
            .prop_map(|(resource, other_lock, token, fails)| Step::Present {
                resource,
                lock: usize::from(other_lock),
                token,
                fails,
            }),
        1 => Just(Step::Reopen),
    ]
}

/// The outcome of one presentation, in a form both backends can be compared on.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Decided(Decision),
    WrongLock { bound_lock: String },
    OperationFailed,
}

fn present(fence: &impl Fence, resource: &str, lock: &str, token: u64, fails: bool) -> Outcome {
    let result = fence.admit(resource, lock, FencingToken(token), |table| {
        table
            .insert(resource.as_bytes(), &token.to_be_bytes())
            .map_err(|_| "storage")?;
        if fails {
            Err("operation failed")
        } else {
            Ok(())
        }
    });
    match result {
        Ok(admitted) => Outcome::Decided(admitted.decision()),
        Err(FenceError::Operation(_)) => Outcome::OperationFailed,
        Err(FenceError::WrongLock { bound_lock, .. }) => Outcome::WrongLock { bound_lock },
        Err(error @ FenceError::Refused { .. }) => Outcome::Decided(error.decision().unwrap()),
        Err(FenceError::Storage(error)) => panic!("storage failed: {error}"),
    }
}

/// The model: per resource, the bound lock and the highest admitted token.
#[derive(Default)]
struct Model {
    records: BTreeMap<usize, (usize, u64)>,
}

impl Model {
    fn expect(&mut self, resource: usize, lock: usize, token: u64, fails: bool) -> Outcome {
        match self.records.get(&resource).copied() {
            Some((bound, _)) if bound != lock => Outcome::WrongLock {
                bound_lock: LOCKS[bound].to_owned(),
            },
            Some((_, highest)) if token < highest => Outcome::Decided(Decision::Refused {
                token: FencingToken(token),
                highest_seen: FencingToken(highest),
            }),
            _ if fails => Outcome::OperationFailed,
            previous => {
                self.records.insert(resource, (lock, token));
                Outcome::Decided(Decision::Admitted {
                    token: FencingToken(token),
                    previous: previous.map(|(_, highest)| FencingToken(highest)),
                })
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn admitted_tokens_never_decrease_and_backends_agree(
        steps in prop::collection::vec(step(), 1..60)
    ) {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("fence.redb");
        let memory = MemoryFence::new();
        let mut durable = Some(DurableFence::open(&path).unwrap());
        let mut model = Model::default();
        // Per resource, every admitted token in order.
        let mut admitted: BTreeMap<usize, Vec<u64>> = BTreeMap::new();

        for step in steps {
            let Step::Present { resource, lock, token, fails } = step else {
                drop(durable.take());
                durable = Some(DurableFence::open(&path).unwrap());
                continue;
            };
            let durable_fence = durable.as_ref().unwrap();
            let (name, lock_name) = (RESOURCES[resource], LOCKS[lock]);
            let from_memory = present(&memory, name, lock_name, token, fails);
            let from_durable = present(durable_fence, name, lock_name, token, fails);
            prop_assert_eq!(&from_memory, &from_durable);
            prop_assert_eq!(&from_memory, &model.expect(resource, lock, token, fails));

            let history = admitted.entry(resource).or_default();
            let max_before = history.last().copied();
            match from_memory {
                Outcome::Decided(Decision::Admitted { token: FencingToken(token), .. }) => {
                    prop_assert!(max_before.is_none_or(|max| max <= token));
                    history.push(token);
                }
                Outcome::Decided(Decision::Refused { token: FencingToken(token), highest_seen }) => {
                    prop_assert!(max_before.is_some_and(|max| token < max));
                    prop_assert_eq!(Some(highest_seen.get()), max_before);
                }
                Outcome::WrongLock { .. } => prop_assert!(max_before.is_some()),
                Outcome::OperationFailed => {}
            }
        }

        let durable = durable.unwrap();
        for (index, resource) in RESOURCES.iter().enumerate() {
            let record = memory.record(resource).unwrap();
            prop_assert_eq!(&record, &durable.record(resource).unwrap());
            let last = admitted.get(&index).and_then(|history| history.last().copied());
            prop_assert_eq!(record.map(|record| record.highest_seen.get()), last);
            // The data written by the last admitted operation, and no failed one.
            let data = last.map(|token| token.to_be_bytes().to_vec());
            prop_assert_eq!(&memory.get(resource.as_bytes()).unwrap(), &data);
            prop_assert_eq!(&durable.get(resource.as_bytes()).unwrap(), &data);
        }
    }
}
