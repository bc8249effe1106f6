#!/usr/bin/env bash
# The client benchmark: the Rust client, the Python package (its blocking API) and the Go
# module against the same 3-node cluster of the release build, in the same run
# (docs/benchmarks.md, "Clients in other languages").
#
#   scripts/bench-clients.sh                      # 3 rounds, as the table was made
#   scripts/bench-clients.sh --rounds 1 --ops 200 # a quick look
#
# Each language runs the same driver loop (crates/bench/src/client_load.rs,
# clients/python/bench/load.py, clients/go/cmd/fencelock-load): one client, N sessions,
# one worker per session taking and releasing one lock name until --ops pairs are done or
# --max-secs pass. Workloads: seq (1 session) and contended (--clients sessions on one
# name). Rounds alternate the order of the languages; the report gives medians, min-max
# and the ratio to the Rust client, in bench-results/clients-<date>.md (and clients-latest.md).
#
# Builds what it needs: `cargo build --release -p fencelock -p fencelock-bench`, the
# Python package into a virtual environment (pip; maturin from PyPI; release profile unless
# PYTHON_PROFILE=dev), the Go driver (Go's standard library only). To use binaries built
# elsewhere: FENCELOCK_BIN and RUST_LOAD_BIN (both, to skip the cargo build), PYTHON (an
# interpreter that imports fencelock, to skip the pip install). The nodes are started on
# loopback ports with their data under a temporary directory and stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

rounds=3 seq_ops=2000 contended_ops=2000 clients=16 max_secs=60 worker_threads=1 out=bench-results
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --ops) seq_ops=$2; contended_ops=$2; shift 2 ;;
        --seq-ops) seq_ops=$2; shift 2 ;;
        --contended-ops) contended_ops=$2; shift 2 ;;
        --clients) clients=$2; shift 2 ;;
        --max-secs) max_secs=$2; shift 2 ;;
        --worker-threads) worker_threads=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

target=$(mkdir -p "${CARGO_TARGET_DIR:-target}" && cd "${CARGO_TARGET_DIR:-target}" && pwd)
work="$target/bench-clients"
mkdir -p "$work" "$out"
export CARGO_INCREMENTAL=0

if [ -z "${FENCELOCK_BIN:-}" ] || [ -z "${RUST_LOAD_BIN:-}" ]; then
    cargo build --release -p fencelock -p fencelock-bench
    FENCELOCK_BIN="$target/release/fencelock"
    RUST_LOAD_BIN="$target/release/fencelock-client-load"
fi
if [ -z "${PYTHON:-}" ]; then
    profile=${PYTHON_PROFILE:-release}
    python3 -m venv "$work/venv"
    CARGO_TARGET_DIR="$target/python-client-$profile" MATURIN_PEP517_ARGS="--profile $profile" \
        "$work/venv/bin/pip" install --quiet --disable-pip-version-check --force-reinstall --no-deps ./clients/python
    PYTHON="$work/venv/bin/python"
fi
(cd clients/go && GOPROXY=off GOFLAGS=-buildvcs=false go build -o "$work/fencelock-load" ./cmd/fencelock-load)

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
data=$(mktemp -d "${TMPDIR:-/tmp}/fencelock-bench-clients-XXXXXX")
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$data"
}
trap cleanup EXIT
declare -a client_port peer_port
peers=""
for i in 1 2 3; do
    client_port[$i]=$(free_port)
    peer_port[$i]=$(free_port)
    peers+="${peers:+,}$i=127.0.0.1:${peer_port[$i]}"
done
endpoints="127.0.0.1:${client_port[1]},127.0.0.1:${client_port[2]},127.0.0.1:${client_port[3]}"
for i in 1 2 3; do
    "$FENCELOCK_BIN" serve --id "$i" --listen "127.0.0.1:${client_port[$i]}" \
        --peer-listen "127.0.0.1:${peer_port[$i]}" --no-admin --data-dir "$data/node-$i" \
        --peers "$peers" --worker-threads "$worker_threads" --log-level warn \
        >"$data/node-$i.log" 2>&1 </dev/null &
    pids+=($!)
done
for _ in $(seq 600); do
    if "$FENCELOCK_BIN" cluster status --endpoints "$endpoints" --timeout 1s >/dev/null 2>&1; then
        break
    fi
    sleep 0.1
done
"$FENCELOCK_BIN" cluster status --endpoints "$endpoints" --timeout 10s >/dev/null

results="$work/results.jsonl"
: >"$results"
langs=(rust python go)
driver() {
    case "$1" in
        rust) echo "$RUST_LOAD_BIN" ;;
        python) echo "$PYTHON clients/python/bench/load.py" ;;
        go) echo "$work/fencelock-load" ;;
    esac
}
for round in $(seq "$rounds"); do
    for workload in seq contended; do
        if [ "$workload" = seq ]; then n=1 ops=$seq_ops; else n=$clients ops=$contended_ops; fi
        for k in 0 1 2; do
            # Each round starts with another language, so a drift of the machine's load
            # does not always fall on the same one.
            lang=${langs[$(( (round - 1 + k) % 3 ))]}
            name="bench-clients/$round/$workload/$lang"
            # Go's flag package takes -flag; the other two --flag: both accept --flag.
            line=$(timeout $((${max_secs%.*} + 120)) $(driver "$lang") --endpoints "$endpoints" \
                --name "$name" --clients "$n" --ops "$ops" --max-secs "$max_secs") \
                || line='{"failed": true}'
            echo "round $round $workload $lang: $line" >&2
            echo "{\"round\": $round, \"workload\": \"$workload\", \"client\": \"$lang\", \"result\": $line}" >>"$results"
        done
    done
done

stamp=$(date -u +%Y%m%d-%H%M)
python3 - "$results" "$out/clients-$stamp.md" "$clients" "$seq_ops" "$contended_ops" "$rounds" <<'PY'
import json, statistics, subprocess, sys
results, path, clients, seq_ops, contended_ops, rounds = sys.argv[1:]
rows = [json.loads(l) for l in open(results)]
def runs(client, workload):
    return [r["result"] for r in rows
            if r["client"] == client and r["workload"] == workload and not r["result"].get("failed")]
def rate(r):
    return r["ops"] / r["secs"] if r["secs"] > 0 else 0.0
def cell(client, workload):
    rs = runs(client, workload)
    if not rs:
        return None
    rates = [rate(r) for r in rs]
    return {
        "median": statistics.median(rates), "min": min(rates), "max": max(rates),
        "p50": statistics.median(r["p50_ms"] for r in rs),
        "p99": statistics.median(r["p99_ms"] for r in rs),
        "errors": sum(r["errors"] for r in rs), "runs": len(rs),
    }
names = {"rust": "Rust client", "python": "Python package (blocking API)", "go": "Go module (HTTP/JSON)"}
lines = [
    f"Clients against one 3-node cluster (release build), {rounds} rounds, medians "
    f"(min-max); seq: 1 session, {seq_ops} acquire+release pairs; contended: {clients} "
    f"sessions on one name, {contended_ops} pairs in all. Ratio: to the Rust client's median.",
    "",
    "| Client | seq pairs/s | × Rust | seq p50 / p99 ms | contended pairs/s | × Rust | contended p50 / p99 ms | errors |",
    "|---|---|---|---|---|---|---|---|",
]
base = {w: cell("rust", w) for w in ("seq", "contended")}
for client in ("rust", "python", "go"):
    cols = [names[client]]
    errors = 0
    for w in ("seq", "contended"):
        c = cell(client, w)
        if c is None:
            cols += ["not run", "", ""]
            continue
        errors += c["errors"]
        ratio = c["median"] / base[w]["median"] if base[w] and base[w]["median"] else float("nan")
        cols += [f"{c['median']:.0f} ({c['min']:.0f}-{c['max']:.0f})", f"{ratio:.2f}",
                 f"{c['p50']:.2f} / {c['p99']:.2f}"]
    cols.append(str(errors))
    lines.append("| " + " | ".join(cols) + " |")
text = "\n".join(lines) + "\n"
open(path, "w").write(text)
print(text)
PY
cp "$out/clients-$stamp.md" "$out/clients-latest.md"
echo "report written to $out/clients-$stamp.md; raw runs in $results" >&2
