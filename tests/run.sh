#!/usr/bin/env bash
# The project's test command: provisions the control-plane binaries when missing (cached in
# ~/.cache/nuclia-token-operator), starts one local control plane for the whole run, runs every
# test against it, and stops it. Extra arguments go to `cargo test` (e.g. a test name).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
STATE=$(mktemp -d "${TMPDIR:-/tmp}/nto-test-cluster.XXXXXX")
RELEASE_BUILD=
cleanup() {
  # a release build still running (the run failed before the image test) dies with the run
  [[ -z $RELEASE_BUILD ]] || kill -TERM -- "-$RELEASE_BUILD" 2>/dev/null || true
  tests/k8s/cluster.sh stop "$STATE" || true
  rm -rf "$STATE"
}
trap cleanup EXIT
started=$SECONDS
stage() { echo "tests/run.sh: $1 in $((SECONDS - started)) s" >&2; started=$SECONDS; }

# The image test (tests/image.rs) builds the release binary (fat LTO, codegen-units 1: the
# longest compile of the run) through images/build.sh. When the whole suite runs and the image
# can be built here, that same build starts now, in the background at the lowest CPU and I/O
# priority: it takes the cores the other stages leave idle, and yields them to everything else.
# The test's own build then waits for it on cargo's lock and finds it fresh; what the test builds
# and checks is unchanged. (The debug and release profiles have separate cargo locks, so nothing
# else waits for it.)
if (($# == 0)) && [[ ${NTO_IMAGE_SKIP_CARGO:-} != 1 ]] && images/build.sh --check 2>/dev/null; then
  # its own process group (setsid), so that cleanup stops cargo and its rustc children together;
  # setsid also makes a session, which the kernel's autogroup scheduling (where enabled) weighs
  # as much as the rest of the run whatever the nice value: the group's own nice goes to 19 too.
  setsid bash -c 'echo 19 >/proc/self/autogroup 2>/dev/null; exec nice -n 19 ionice -c 3 images/build.sh --cargo-only' \
    >"$STATE/release-build.log" 2>&1 </dev/null &
  RELEASE_BUILD=$!
fi
export NTO_K8S_BIN=$(tests/k8s/provision.sh)
# promtool for the alert rules (unpacked from Debian's prometheus package into the cache) and
# lua5.1 for the Argo CD health check (installed when missing and this is root).
export NTO_PROMTOOL=$(tests/promtool.sh)
command -v lua5.1 >/dev/null || { [[ $(id -u) == 0 ]] && apt-get install -y -q --no-install-recommends lua5.1 >/dev/null; } || true
stage "provisioning"
NTO_CLUSTER_WATCH_PID=$$ tests/k8s/cluster.sh start "$STATE" >/dev/null
stage "control plane started"
export NTO_KUBECONFIG=$STATE/kubeconfig
# the runtime tests name the control plane their own way
export NTO_TEST_KUBECONFIG=$NTO_KUBECONFIG NTO_TEST_APISERVER=127.0.0.1:$(cat "$STATE/api.port")
cargo build --workspace --all-targets --locked
stage "cargo build"
cargo test --locked --workspace --all-targets "$@"
stage "cargo test"
