#!/usr/bin/env bash
# The project's test command: provisions the control-plane binaries when missing (cached in
# ~/.cache/nuclia-token-operator), starts one local control plane for the whole run, runs every
# test against it, and stops it. Extra arguments go to `cargo test` (e.g. a test name).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
STATE=$(mktemp -d "${TMPDIR:-/tmp}/nto-test-cluster.XXXXXX")
cleanup() { tests/k8s/cluster.sh stop "$STATE" || true; rm -rf "$STATE"; }
trap cleanup EXIT
export NTO_K8S_BIN=$(tests/k8s/provision.sh)
# promtool for the alert rules (unpacked from Debian's prometheus package into the cache) and
# lua5.1 for the Argo CD health check (installed when missing and this is root).
export NTO_PROMTOOL=$(tests/promtool.sh)
command -v lua5.1 >/dev/null || { [[ $(id -u) == 0 ]] && apt-get install -y -q --no-install-recommends lua5.1 >/dev/null; } || true
NTO_CLUSTER_WATCH_PID=$$ tests/k8s/cluster.sh start "$STATE" >/dev/null
export NTO_KUBECONFIG=$STATE/kubeconfig
# the runtime tests name the control plane their own way
export NTO_TEST_KUBECONFIG=$NTO_KUBECONFIG NTO_TEST_APISERVER=127.0.0.1:$(cat "$STATE/api.port")
cargo build --workspace --all-targets --locked
cargo test --locked --workspace --all-targets "$@"
