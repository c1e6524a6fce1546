#!/usr/bin/env bash
# The benchmark (docs/benchmark.md): builds the operator, nuclia-fake and nto-bench in release
# mode, starts a private local control plane (tests/k8s/cluster.sh, stopped on exit), and runs
# nto-bench against it; nto-bench starts nuclia-fake and the operator as processes, runs the
# phases and prints the table. Arguments go to nto-bench, e.g.:
#
#   tests/bench.sh                         # N = 1000
#   tests/bench.sh --n 100 --json out.json
#   tests/bench.sh --help                  # every option
#
# env: NTO_BENCH_KUBECONFIG  use this cluster instead of starting one (its /metrics then count
#                            every client, not only the benchmark)
#      NTO_BENCH_CLUSTER_DIR  with it: the cluster.sh state directory whose NAME.pid files name
#                            the control plane's processes, for the CPU-by-process table
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --release --locked -p nuclia-token-operator -p nuclia-fake -p nto-bench \
  --bin nuclia-token-operator --bin nuclia-fake --bin nto-bench >&2
BIN=${CARGO_TARGET_DIR:-target}/release
if [[ " $* " == *" --help "* || " $* " == *" -h "* ]]; then
  exec "$BIN/nto-bench" --help
fi

if [[ -n ${NTO_BENCH_KUBECONFIG:-} ]]; then
  export KUBECONFIG=$NTO_BENCH_KUBECONFIG
else
  STATE=$(mktemp -d "${TMPDIR:-/tmp}/nto-bench-cluster.XXXXXX")
  cleanup() { tests/k8s/cluster.sh stop "$STATE" >/dev/null 2>&1 || true; rm -rf "$STATE"; }
  trap cleanup EXIT
  tests/k8s/provision.sh >/dev/null
  NTO_CLUSTER_WATCH_PID=$$ tests/k8s/cluster.sh start "$STATE" >/dev/null
  export KUBECONFIG=$STATE/kubeconfig NTO_BENCH_CLUSTER_DIR=$STATE
fi
"$BIN/nto-bench" --bin-dir "$BIN" "$@"
