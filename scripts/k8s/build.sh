#!/usr/bin/env bash
# Build the pinned Kubernetes control plane from the Go module proxy, once per set of versions:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and kwok (which stands
# in for the kubelets). Prints the bin folder when done; a second run builds nothing.
#
#   scripts/k8s/build.sh            # cold: 5-10 min of both cores, ~2 GB RSS peak, ~5 GB disk peak
#   PDSTACK_K8S_CACHE=/dir ...      # other cache root (default ${XDG_CACHE_HOME:-~/.cache}/pdstack/k8s)
#   PDSTACK_K8S_KEEP_GOCACHE=1 ...  # keep the ~3.7 GB Go build cache (deleted by default)
#
# Modules are downloaded into the module cache scripts/install-tools.sh uses (<repo>/.tools/go),
# so dependencies both need are fetched once. The build cache is this build's own (the tools link
# k8s.io/* v0.36.2, the control plane v0.36.1, so they share few compiled packages) and lives
# in the cache folder, outside the clone; kwok is built first and the four Kubernetes binaries in
# one `go build` after it, which reuses the k8s.io/* packages kwok compiled.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=scripts/k8s/env.sh
source "$HERE/env.sh"

say() { printf 'k8s-build: %s\n' "$*" >&2; }

if k8s_installed; then
  say "control plane $K8S_KEY already built"
  echo "$K8S_BIN"
  exit 0
fi
command -v go >/dev/null || { say "missing 'go' on PATH: the control plane is built from the Go module proxy"; exit 1; }

mkdir -p "$K8S_CACHE_ROOT"
# Two builds of the same versions (a test and `make cluster-up`, say): one builds, the other waits.
exec 9>"$K8S_HOME.lock"
flock 9
if k8s_installed; then
  echo "$K8S_BIN"
  exit 0
fi

WORK=$K8S_HOME/build
STAGE=$K8S_HOME/bin.partial
rm -rf "$WORK" "$STAGE"
mkdir -p "$WORK"/{etcd,kwok,kubernetes} "$STAGE" "$ROOT/.tools/go"

export GOPATH=$ROOT/.tools/go
export GOMODCACHE=$ROOT/.tools/go/pkg/mod
export GOCACHE=$WORK/go-build
export GOFLAGS="-modcacherw -buildvcs=false"
export GOTOOLCHAIN=local
export CGO_ENABLED=0

START=$(date +%s)
T0=$START
lap() { local now; now=$(date +%s); say "$1 in $((now - T0))s"; T0=$now; }
say "building $K8S_KEY into $K8S_BIN (once; 5-10 min on 2 cores, more when the machine is busy)"

# kwok: a wrapper module whose only requirement is kwok, so every dependency is at kwok's own pin.
(
  cd "$WORK/kwok"
  printf 'module pdstack.local/k8s-build/kwok\n\ngo 1.26.0\n' >go.mod
  go get "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  go build -trimpath -ldflags '-s -w' -o "$STAGE/kwok" sigs.k8s.io/kwok/cmd/kwok
)
lap "kwok $KWOK_VERSION"

# etcd: its go.mod replaces ../api and friends, so `go install ...@version` refuses it; as a
# dependency of a wrapper module those replaces do not apply and the published modules are used.
(
  cd "$WORK/etcd"
  printf 'module pdstack.local/k8s-build/etcd\n\ngo 1.26.0\n' >go.mod
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  go build -trimpath -ldflags '-s -w' -o "$STAGE/etcd" go.etcd.io/etcd/server/v3
)
lap "etcd $ETCD_VERSION"

# Kubernetes: k8s.io/kubernetes requires its 30-odd staging modules at v0.0.0 and replaces them
# with ./staging/src/..., folders its module zip does not contain. The wrapper replaces each with
# its published twin (v1.X.Y -> v0.X.Y), read off the module's own go.mod.
(
  cd "$WORK/kubernetes"
  k8s_dir=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [[ -f "$k8s_dir/go.mod" ]] || { say "k8s.io/kubernetes@$K8S_VERSION: no module directory"; exit 1; }
  staging=$(sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._-]*\) => \./staging/.*#\1#p' "$k8s_dir/go.mod")
  [[ -n "$staging" ]] || { say "no staging replaces found in $k8s_dir/go.mod"; exit 1; }
  {
    printf 'module pdstack.local/k8s-build/kubernetes\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$K8S_VERSION"
    for m in $staging; do printf '\t%s => %s v0%s\n' "$m" "$m" "${K8S_VERSION#v1}"; done
    printf ')\n'
  } >go.mod
  pkgs=()
  for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  # An explicit @version: a bare `go get` would ask the proxy for the newest version.
  go get "${pkgs[@]/%/@$K8S_VERSION}"
  minor=${K8S_VERSION#v1.}
  minor=${minor%%.*}
  ldflags="-s -w"
  # Without these the binaries report upstream's v0.0.0-master placeholder, which breaks
  # helm's kubeVersion checks and kubectl's version skew warnings.
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  go build -trimpath -ldflags "$ldflags" -o "$STAGE/" "${pkgs[@]}"
)
lap "kubernetes $K8S_VERSION (4 binaries)"

# kwok's standalone binary has no built-in Stages and its CRDs are applied by whoever runs it:
# keep both next to the binaries.
kwok_dir=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
rm -rf "$K8S_KWOK_FILES"
mkdir -p "$K8S_KWOK_FILES/crds"
(cd "$kwok_dir/kustomize" && find stage -name '*.yaml' ! -path '*/testdata/*' ! -name kustomization.yaml |
  while read -r f; do mkdir -p "$K8S_KWOK_FILES/$(dirname "$f")" && cp "$f" "$K8S_KWOK_FILES/$f"; done)
cp "$kwok_dir"/kustomize/crd/bases/*.yaml "$K8S_KWOK_FILES/crds/"
chmod -R u+w "$K8S_KWOK_FILES"
echo "$KWOK_VERSION" >"$K8S_KWOK_FILES/.complete"

rm -rf "$K8S_BIN"
mv "$STAGE" "$K8S_BIN"
if [[ "${PDSTACK_K8S_KEEP_GOCACHE:-0}" != 1 ]]; then
  chmod -R u+w "$WORK" 2>/dev/null || true
  rm -rf "$WORK"
fi
for b in "${K8S_BINARIES[@]}"; do
  k8s_binary_ok "$b" || { say "$b does not report the pinned version"; exit 1; }
done
say "built in $(($(date +%s) - START))s: $(du -sh "$K8S_BIN" | cut -f1) in $K8S_BIN"
echo "$K8S_BIN"
