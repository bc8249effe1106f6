#!/usr/bin/env bash
# The full comparison of fencelock with etcd, ZooKeeper and Redis on this machine.
#
#   scripts/bench.sh                         # everything, as docs/benchmarks.md's table was made
#   scripts/bench.sh --systems fencelock-3,etcd-3 --runs 1    # any fencelock-bench flags
#   scripts/bench.sh --workloads scale       # fencelock-3 only: restarts, a new member's
#                                            # catch-up, keepalives at 100k and 1M locks
#                                            # (~30 min here; scale-latest.md/.json)
#
# Installs what is missing from Debian's packages (etcd-server, etcd-client, redis-server,
# zookeeper and a Java runtime with it), builds the release binaries, runs
# fencelock-bench, and writes the report to bench-results/ (bench-<date>.md/.json/.svg and
# latest.*). Every server is started by the harness on loopback ports with its data under
# a temporary directory, and stopped by PID. Needs root for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v redis-server >/dev/null || need+=(redis-server)
[ -f /usr/share/java/zookeeper.jar ] || need+=(zookeeper)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}" >&2
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}"
fi
# The Debian packages start system services; the benchmark runs its own instances.
for svc in etcd redis-server zookeeper; do
    if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
        echo "note: the system service $svc is running; the benchmark does not use it" >&2
    fi
done

cargo build --release -p fencelock -p fencelock-bench
mkdir -p bench-results
exec ./target/release/fencelock-bench --out bench-results "$@"
