//! A fenced resource, end to end, with the paused-client problem played out.
//!
//! Run with `cargo run -p fencelock-fence --example fenced_service [PATH]`. The resource is
//! a small ledger kept in a redb file next to its fence; two holders of the lock
//! `locks/ledger` write to it, and the first one pauses past its lease. Every decision is
//! printed. Run it twice with the same PATH to see the fence survive the restart: the
//! second run's first holder is refused, as a higher token was seen in the first run.

use std::path::PathBuf;

use fencelock_fence::{
    Decision, DurableFence, Fence, FenceError, FencingToken, ResourceTable, StorageError,
};

const RESOURCE: &str = "ledger/balance";
const LOCK: &str = "locks/ledger";

/// The resource's write: set the balance. Run by the fence only for a current token.
fn set_balance(balance: u64) -> impl FnOnce(&mut dyn ResourceTable) -> Result<(), StorageError> {
    move |table| {
        table.insert(RESOURCE.as_bytes(), balance.to_string().as_bytes())?;
        Ok(())
    }
}

/// What the service would answer the holder: the write and the fence's decision.
fn handle(
    fence: &DurableFence,
    holder: &str,
    token: u64,
    balance: u64,
) -> Result<(), FenceError<StorageError>> {
    let result = fence.admit(RESOURCE, LOCK, FencingToken(token), set_balance(balance));
    let decision = match &result {
        Ok(admitted) => Some(admitted.decision()),
        Err(error) => error.decision(),
    };
    match decision {
        Some(Decision::Admitted { token, previous }) => {
            println!(
                "{holder}: set balance {balance} with token {token}: admitted (previous {previous:?})"
            );
        }
        Some(Decision::Refused {
            token,
            highest_seen,
        }) => {
            println!(
                "{holder}: set balance {balance} with token {token}: REFUSED (highest seen {highest_seen})"
            );
        }
        None => println!("{holder}: set balance {balance} with token {token}: failed"),
    }
    result.map(|_| ())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let directory = tempfile::tempdir()?;
    let path = std::env::args_os()
        .nth(1)
        .map_or_else(|| directory.path().join("ledger.redb"), PathBuf::from);
    let fence = DurableFence::open(&path)?;
    println!("fence database: {}", path.display());

    // Tokens as fencelock would grant them: holder A first, then holder B.
    let (token_a, token_b) = match fence.record(RESOURCE)? {
        Some(record) => (record.highest_seen.get() + 1, record.highest_seen.get() + 2),
        None => (10, 11),
    };
    // A leftover stale holder from an earlier run (if any) is refused straight away.
    let stale = fence
        .record(RESOURCE)?
        .and_then(|record| record.highest_seen.get().checked_sub(1));
    if let Some(stale) = stale {
        let _refused = handle(&fence, "holder from the last run", stale, 0);
    }

    handle(&fence, "holder A", token_a, 100)?;
    handle(&fence, "holder A", token_a, 90)?;
    println!("holder A pauses; its lease expires; holder B is granted token {token_b}");
    handle(&fence, "holder B", token_b, 500)?;
    println!("holder A wakes up, still believing it holds the lock");
    let stale = handle(&fence, "holder A", token_a, 80);
    assert!(matches!(stale, Err(FenceError::Refused { .. })));

    let balance = fence
        .get(RESOURCE.as_bytes())?
        .map(String::from_utf8)
        .transpose()?;
    println!("final balance: {balance:?}");
    assert_eq!(balance.as_deref(), Some("500"));
    Ok(())
}
