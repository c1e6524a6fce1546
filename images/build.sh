#!/usr/bin/env bash
# Builds the operator image without a Docker daemon and without pulling anything: a release
# build of the binary, a root filesystem assembled FROM scratch out of it (stripped) and exactly
# what it needs at run time (the glibc loader and libraries `ldd` lists, the CA bundle, passwd
# and group with the nonroot user 65532, /tmp), then buildah (vfs storage, chroot isolation,
# no RUN step) with images/Containerfile.
#
# The tag is the one the chart's default values deploy: `image.repository`:`image.tag`, the tag
# defaulting to the chart's appVersion (templates/_helpers.tpl). IMAGE=name:tag overrides it.
#
# Outputs, under target/image/:
#   rootfs/                                   the image's root filesystem
#   nuclia-token-operator_<tag>.oci.tar       OCI archive (podman load, skopeo copy)
#   nuclia-token-operator_<tag>.docker.tar    docker archive (docker load, kind load image-archive)
#   containers/                               buildah's storage holding the image, unless
#                                             NTO_IMAGE_STORE=default (buildah's usual storage) or
#                                             NTO_IMAGE_STORE=DIR
# Environment: NTO_IMAGE_SKIP_CARGO=1 uses target/release/nuclia-token-operator as it is.
# Options (one, instead of a build):
#   --check       exit 0 when this machine can build and run the image (buildah, and the
#                 namespaces its chroot isolation needs: what tests/image.rs probes), else say why
#   --cargo-only  only the release build of the binary (tests/run.sh and .ci/run start it early,
#                 in the background, for the image test)
# The last lines printed (stdout; progress goes to stderr) are `image: NAME:TAG`, `id: …`,
# `size: …`, `store: DIR|default`, `oci-archive: PATH` and `docker-archive: PATH`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
CHART=charts/nuclia-token-operator
TARGET=${CARGO_TARGET_DIR:-target}
[[ $TARGET = /* ]] || TARGET=$ROOT/$TARGET
OUT=$TARGET/image
BIN=$TARGET/release/nuclia-token-operator

log() { printf 'images/build.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

MODE=${1:-build}
case $MODE in
  build | --check | --cargo-only) ;;
  *) die "unknown option $MODE (--check, --cargo-only)" ;;
esac
if [[ $MODE == --check ]]; then
  command -v buildah >/dev/null || die "buildah is not installed"
  user=()
  [[ $(id -u) == 0 ]] || user=(--user --map-root-user)
  unshare "${user[@]}" --mount --uts --ipc --pid --fork true >/dev/null 2>&1 \
    || die "the kernel forbids the namespaces buildah's chroot isolation needs"
  exit 0
fi

# The value of `key:` in the top-level block `block:` of a simple YAML file, quotes removed.
yaml_value() {
  awk -v block="$2" -v key="$3" '
    /^[^ #]/ { inblock = (block == "" || $0 ~ "^" block ":") ; if (block != "") next }
    inblock && $1 == key ":" {
      sub(/^[^:]*:[ \t]*/, ""); sub(/[ \t]+#.*$/, ""); gsub(/^["'\'']|["'\'']$/, ""); print; exit
    }' "$1"
}

# --- the tag -------------------------------------------------------------------------------
repository=$(yaml_value "$CHART/values.yaml" image repository)
tag=$(yaml_value "$CHART/values.yaml" image tag)
app_version=$(yaml_value "$CHART/Chart.yaml" "" appVersion)
crate_version=$(awk -F'"' '/^version *=/ { print $2; exit }' Cargo.toml)
[[ -n $repository && -n $app_version ]] || die "cannot read image.repository / appVersion from $CHART"
IMAGE=${IMAGE:-$repository:${tag:-$app_version}}
if [[ $app_version != "$crate_version" ]]; then
  die "Chart.yaml appVersion $app_version differs from Cargo.toml version $crate_version"
fi
command -v buildah >/dev/null || die "buildah is not installed (Debian: apt-get install buildah)"

# --- the binary ----------------------------------------------------------------------------
# Called from `cargo test` (tests/image.rs) this inherits the variables cargo sets for the
# test's process; some build scripts track them (ring: CARGO_MANIFEST_DIR), so keeping them
# would rebuild half the release tree, and the next plain `cargo build --release` again.
unset CARGO_MANIFEST_DIR CARGO_MANIFEST_PATH CARGO_CRATE_NAME CARGO_PRIMARY_PACKAGE \
  CARGO_TARGET_TMPDIR RUST_RECURSION_COUNT "${!CARGO_PKG_@}" "${!CARGO_BIN_EXE_@}"
if [[ ${NTO_IMAGE_SKIP_CARGO:-} != 1 ]]; then
  log "cargo build --release --bin nuclia-token-operator"
  cargo build --release --locked --bin nuclia-token-operator >&2
fi
[[ $MODE != --cargo-only ]] || exit 0
[[ -x $BIN ]] || die "$BIN missing"

mkdir -p "$OUT"
# One build at a time per target dir (the test and a person may both run this).
exec 9>"$OUT/.lock"
command -v flock >/dev/null && flock 9

# --- the root filesystem -------------------------------------------------------------------
ROOTFS=$OUT/rootfs
rm -rf "$ROOTFS"
mkdir -p "$ROOTFS"/{etc/ssl/certs,usr/local/bin,tmp}
chmod 1777 "$ROOTFS/tmp"
install -m 0755 "$BIN" "$ROOTFS/usr/local/bin/nuclia-token-operator"
if command -v strip >/dev/null; then
  strip --strip-all "$ROOTFS/usr/local/bin/nuclia-token-operator"
else
  log "strip not found (binutils): the binary keeps its symbols"
fi

# The loader and every shared library the binary needs, at the paths the loader looks them up.
# (LD_LIBRARY_PATH plays no part in the image: cargo test sets one.)
libs=$(env -u LD_LIBRARY_PATH ldd "$BIN" 2>&1) || libs=""   # a static binary: "not a dynamic executable"
if grep -q 'not found' <<<"$libs"; then die "unresolved libraries: $libs"; fi
needed=()
while read -r path; do
  [[ -n $path ]] || continue
  mkdir -p "$ROOTFS$(dirname "$path")"
  cp -L "$path" "$ROOTFS$path"
  needed+=("$path")
done < <(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' <<<"$libs")
((${#needed[@]})) || log "no shared libraries (static binary)"

# rustls uses the platform's roots (rustls-platform-verifier / rustls-native-certs): the bundle
# at the path they read first on Debian-like systems.
CA=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
[[ -s $CA ]] || die "no CA bundle at $CA (Debian: apt-get install ca-certificates)"
install -m 0644 "$CA" "$ROOTFS/etc/ssl/certs/ca-certificates.crt"

cat >"$ROOTFS/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin
EOF
cat >"$ROOTFS/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
EOF
# glibc resolves names from /etc/hosts, then DNS (the pod's /etc/resolv.conf).
echo 'hosts: files dns' >"$ROOTFS/etc/nsswitch.conf"

# The licences of what is shipped besides the operator (glibc, libgcc, the CA bundle).
if command -v dpkg-query >/dev/null; then
  for f in "${needed[@]}" "$CA"; do
    pkg=$(dpkg-query -S "$(readlink -f "$f")" 2>/dev/null || dpkg-query -S "$f" 2>/dev/null) || continue
    pkg=${pkg%%:*}
    doc=/usr/share/doc/$pkg/copyright
    if [[ -f $doc ]]; then install -D -m 0644 "$doc" "$ROOTFS$doc"; fi
  done
fi
doc=/usr/share/doc/ca-certificates/copyright   # the bundle is generated, owned by no package
if [[ -f $doc ]]; then install -D -m 0644 "$doc" "$ROOTFS$doc"; fi

# --- the image -----------------------------------------------------------------------------
STORE=${NTO_IMAGE_STORE:-$OUT/containers}
store=(--storage-driver vfs --root "$STORE" --runroot "$STORE-run")
[[ $STORE != default ]] || store=()
# Everything in the image, and the image itself, dated by the last commit: same inputs, same image.
epoch=$(git log -1 --format=%ct 2>/dev/null || echo 0)
log "buildah build -t $IMAGE (vfs, chroot isolation)"
buildah "${store[@]}" build --isolation chroot --pull=never --layers=false --format oci \
  --timestamp "$epoch" --identity-label=false \
  --label "org.opencontainers.image.version=$crate_version" \
  --label "org.opencontainers.image.revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
  -f images/Containerfile -t "$IMAGE" "$ROOTFS" >&2
# Earlier builds of the same tag are left untagged: drop them.
buildah "${store[@]}" rmi --prune >/dev/null 2>&1 || true

# Two archives of it: OCI (podman load, skopeo, crane) and docker's (docker load, kind load
# image-archive, ctr -n k8s.io images import), whose tag is the name the kubelet asks for:
# `nuclia-token-operator:0.1.0` is docker.io/library/nuclia-token-operator:0.1.0.
base=${IMAGE##*/}
OCI_ARCHIVE=$OUT/${base//:/_}.oci.tar
DOCKER_ARCHIVE=$OUT/${base//:/_}.docker.tar
rm -f "$OCI_ARCHIVE" "$DOCKER_ARCHIVE"
echo '{"default": [{"type": "insecureAcceptAnything"}]}' >"$OUT/policy.json"
for dest in "oci-archive:$OCI_ARCHIVE:$IMAGE" "docker-archive:$DOCKER_ARCHIVE:$IMAGE"; do
  buildah "${store[@]}" push --signature-policy "$OUT/policy.json" --quiet "$IMAGE" "$dest" >&2
done

mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1000000 }'; }
id=$(buildah "${store[@]}" images --noheading --no-trunc --format '{{.ID}}' "$IMAGE" | head -n1)
# The image's one layer, uncompressed, is what a node stores; the OCI archive holds it gzipped.
layer=$(tar -tvf "$DOCKER_ARCHIVE" | awk '$6 ~ /^[0-9a-f]+\.tar$/ { s += $3 } END { print s + 0 }')
stripped=$(stat -c %s "$ROOTFS/usr/local/bin/nuclia-token-operator")
echo "image: $IMAGE"
echo "id: $id"
echo "size: $layer bytes ($(mb "$layer")) uncompressed, $(mb "$(stat -c %s "$OCI_ARCHIVE")") as OCI archive; binary $(mb "$stripped") stripped ($(mb "$(stat -c %s "$BIN")") before)"
echo "store: $STORE"
echo "oci-archive: $OCI_ARCHIVE"
echo "docker-archive: $DOCKER_ARCHIVE"
