#!/usr/bin/env bash
# Mutation check of the power-loss tests: each build below removes one kind of sync
# (a cargo feature of fencelock-server), and the power-loss tests must fail with it.
# A mutant that survives means the tests no longer see that sync.
set -uo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0
status=0
for mutant in mutant-skip-wal-sync mutant-skip-dir-sync; do
    echo "== $mutant: the power-loss tests must fail"
    if cargo nextest run -p fencelock-server --features "$mutant" --test power_loss --test power_loss_cluster \
        --no-fail-fast >"target/$mutant.log" 2>&1; then
        echo "!! $mutant survived: the power-loss tests passed without that sync"
        status=1
    else
        grep -E '^\s+(FAIL|PASS) ' "target/$mutant.log" | sort -u
        echo "== $mutant killed"
    fi
done
exit $status
