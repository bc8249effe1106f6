//! `fencelock demo` runs to completion, exits 0, and its JSON summary says the paused
//! holder's write was refused by the fence and every invariant held.

use std::time::{Duration, Instant};

#[test]
fn the_demo_tells_its_story_and_checks_its_invariants() {
    let started = Instant::now();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fencelock"))
        .args(["demo", "--output", "json", "--seed", "42"])
        .env_remove("RUST_LOG")
        .output()
        .expect("run the demo");
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert_eq!(summary["ok"], true, "{summary}");
    assert_eq!(summary["story_ok"], true);
    let paused = &summary["paused"];
    assert_eq!(paused["write_refused"], true, "{summary}");
    assert_eq!(paused["refusal"], "stale token");
    assert_eq!(paused["session_expired"], true);
    assert!(paused["highest_seen"].as_u64() > paused["token"].as_u64());
    assert!(paused["lock_passed_to"]["token"].as_u64() > paused["token"].as_u64());
    for invariant in [
        "tokens_strictly_increasing",
        "no_lower_token_admitted_after_higher",
        "final_value_is_fold_of_admitted_appends",
    ] {
        assert_eq!(
            summary["invariants"][invariant], true,
            "{invariant}: {summary}"
        );
    }
    assert!(summary["writes_refused"].as_u64() >= Some(1));
    assert!(summary["writes_admitted"].as_u64() > Some(1));
    let tokens: Vec<u64> = summary["grant_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect();
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
    assert_eq!(tokens.len() as u64, summary["grants"].as_u64().unwrap());
    assert!(!summary["timeline"].as_array().unwrap().is_empty());
}
