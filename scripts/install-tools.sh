#!/usr/bin/env bash
# Install the pinned chart tooling into the git-ignored .tools/ folder:
#   helm (v3, built from the Go module proxy), the helm-unittest plugin (built from its
#   downloaded module, installed as a helm plugin inside .tools/), kubeconform, actionlint (lints
#   the release workflow), and the offline Kubernetes JSON schemas shipped by the
#   kubernetes-validate PyPI package.
# Idempotent: each tool is checked by asking the installed binary for its version, so a
# second run builds nothing. Nothing is written to $HOME: Go and helm caches live in .tools/.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOOLS="$ROOT/.tools"
BIN="$TOOLS/bin"

HELM_VERSION=v3.21.3          # same helm library version helm-unittest v1.1.2 links against
HELM_UNITTEST_VERSION=v1.1.2
KUBECONFORM_VERSION=v0.8.0
ACTIONLINT_VERSION=v1.7.12
KUBERNETES_VALIDATE_VERSION=1.37.0
# Kubernetes version whose schemas kubeconform validates against (shipped by the wheel above);
# scripts/chart-test.sh renders for the same version.
K8S_SCHEMA_VERSION=v1.33.0
# Default Kubernetes version helm assumes when no cluster is asked (upstream's release builds
# take it from the client-go they link; helm v3.21 links client-go v0.36).
HELM_K8S_MAJOR=1
HELM_K8S_MINOR=36

# Go writes its module and build caches inside .tools/ so nothing lands in $HOME.
export GOPATH="$TOOLS/go"
export GOMODCACHE="$TOOLS/go/pkg/mod"
export GOCACHE="$TOOLS/go/cache"
export GOFLAGS="-modcacherw -buildvcs=false"
export GOTOOLCHAIN=local
export CGO_ENABLED=0
# helm keeps plugins, repositories and caches inside .tools/ as well.
export HELM_PLUGINS="$TOOLS/helm/plugins"
export HELM_DATA_HOME="$TOOLS/helm/data"
export HELM_CONFIG_HOME="$TOOLS/helm/config"
export HELM_CACHE_HOME="$TOOLS/helm/cache"

mkdir -p "$BIN" "$HELM_PLUGINS" "$HELM_DATA_HOME" "$HELM_CONFIG_HOME" "$HELM_CACHE_HOME"

say() { printf 'install-tools: %s\n' "$*"; }

need() {
  command -v "$1" >/dev/null 2>&1 || { say "missing '$1' on PATH ($2)"; exit 1; }
}

# ldflags that set helm's default Kubernetes version (as upstream's Makefile does).
k8s_ldflags() {
  local f="" pkg
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    f+=" -X $pkg.k8sVersionMajor=$HELM_K8S_MAJOR -X $pkg.k8sVersionMinor=$HELM_K8S_MINOR"
  done
  echo "$f"
}

install_helm() {
  local have="" stamp="$BIN/.helm.build" want="$HELM_VERSION k8s$HELM_K8S_MAJOR.$HELM_K8S_MINOR"
  [[ -x "$BIN/helm" && -f "$stamp" ]] && have="$("$BIN/helm" version --template '{{.Version}}' 2>/dev/null || true) $(sed 's/^[^ ]* //' "$stamp")"
  if [[ "$have" == "$want" ]]; then
    say "helm $HELM_VERSION already installed"
    return
  fi
  need go "helm is built from the Go module proxy"
  say "building helm $HELM_VERSION (go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION)"
  local pkg=helm.sh/helm/v3
  GOBIN="$BIN" go install -trimpath \
    -ldflags "-s -w -X $pkg/internal/version.version=$HELM_VERSION -X $pkg/internal/version.metadata= $(k8s_ldflags)" \
    "$pkg/cmd/helm@$HELM_VERSION"
  echo "$want" >"$stamp"
  say "helm: $("$BIN/helm" version --short)"
}

install_helm_unittest() {
  local plugin_dir="$HELM_PLUGINS/unittest" want="${HELM_UNITTEST_VERSION#v}" have=""
  local stamp="$plugin_dir/.build" build="${HELM_UNITTEST_VERSION#v} k8s$HELM_K8S_MAJOR.$HELM_K8S_MINOR"
  # The binary has no --version: the stamp written after a successful build records what it is,
  # and `helm plugin list` must agree.
  if [[ -x "$plugin_dir/untt" && -f "$stamp" ]] && [[ "$(cat "$stamp")" == "$build" ]]; then
    have=$("$BIN/helm" plugin list 2>/dev/null | awk '$1 == "unittest" {print $2}')
  fi
  if [[ "$have" == "$want" ]]; then
    say "helm-unittest $HELM_UNITTEST_VERSION already installed"
    return
  fi
  need go "helm-unittest is built from the Go module proxy"
  # go.mod has a replace directive, so `go install pkg@version` refuses it: download the
  # module and build it from its own directory, where the replace applies.
  say "downloading github.com/helm-unittest/helm-unittest@$HELM_UNITTEST_VERSION"
  local mod_dir
  mod_dir=$(cd "$TOOLS" && go mod download -json \
    "github.com/helm-unittest/helm-unittest@$HELM_UNITTEST_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [[ -d "$mod_dir" ]] || { say "module download gave no directory"; exit 1; }
  say "building helm-unittest from $mod_dir"
  rm -rf "$plugin_dir"
  mkdir -p "$plugin_dir"
  (cd "$mod_dir" && go build -trimpath \
    -ldflags "-s -w $(k8s_ldflags)" -o "$plugin_dir/untt" ./cmd/helm-unittest)
  # A plugin is a folder with plugin.yaml; ours runs the binary we built instead of the
  # upstream install hook, which would download a prebuilt release.
  cat >"$plugin_dir/plugin.yaml" <<EOF
name: "unittest"
version: "$want"
usage: "unittest for helm charts"
description: "helm-unittest $HELM_UNITTEST_VERSION, built from source by scripts/install-tools.sh"
ignoreFlags: false
command: "\$HELM_PLUGIN_DIR/untt"
EOF
  echo "$build" >"$stamp"
  say "helm-unittest: $("$BIN/helm" plugin list | awk '$1 == "unittest" {print $2}')"
}

install_kubeconform() {
  local have=""
  [[ -x "$BIN/kubeconform" ]] && have=$("$BIN/kubeconform" -v 2>/dev/null || true)
  if [[ "$have" == "$KUBECONFORM_VERSION" ]]; then
    say "kubeconform $KUBECONFORM_VERSION already installed"
    return
  fi
  need go "kubeconform is built from the Go module proxy"
  say "building kubeconform $KUBECONFORM_VERSION"
  GOBIN="$BIN" go install -trimpath -ldflags "-s -w -X main.version=$KUBECONFORM_VERSION" \
    "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"
  say "kubeconform: $("$BIN/kubeconform" -v)"
}

install_actionlint() {
  # A small static binary (a few pure-Go modules); built without cgo like the others.
  local have=""
  [[ -x "$BIN/actionlint" ]] && have=$("$BIN/actionlint" -version 2>/dev/null | head -1 || true)
  if [[ "$have" == "$ACTIONLINT_VERSION" ]]; then
    say "actionlint $ACTIONLINT_VERSION already installed"
    return
  fi
  need go "actionlint is built from the Go module proxy"
  say "building actionlint $ACTIONLINT_VERSION"
  GOBIN="$BIN" go install -trimpath \
    -ldflags "-s -w -X github.com/rhysd/actionlint.version=$ACTIONLINT_VERSION" \
    "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
  say "actionlint: $("$BIN/actionlint" -version | head -1)"
}

install_schemas() {
  # The wheel ships standalone JSON schemas per Kubernetes version; we unpack only the
  # strict set of one version, without installing the package anywhere.
  local dest="$TOOLS/k8s-schemas" stamp="$TOOLS/k8s-schemas/.version"
  local want="kubernetes-validate==$KUBERNETES_VALIDATE_VERSION $K8S_SCHEMA_VERSION relative-refs-no-ids"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    say "Kubernetes $K8S_SCHEMA_VERSION schemas already unpacked"
    return
  fi
  local py="$ROOT/.venv/bin/python"
  [[ -x "$py" ]] || py=python3
  local wheel_dir="$ROOT/.cache/wheels"
  mkdir -p "$wheel_dir"
  say "fetching kubernetes-validate $KUBERNETES_VALIDATE_VERSION wheel (schemas only)"
  "$py" -m pip download --quiet --no-deps --only-binary=:all: -d "$wheel_dir" \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  rm -rf "$dest"
  mkdir -p "$dest/$K8S_SCHEMA_VERSION-strict"
  "$py" - "$wheel_dir/kubernetes_validate-$KUBERNETES_VALIDATE_VERSION-py3-none-any.whl" \
    "$dest" "$K8S_SCHEMA_VERSION" <<'PY'
import json
import sys
import zipfile

wheel, dest, version = sys.argv[1:4]
prefix = f"kubernetes_validate/kubernetes-json-schema/{version}-local-strict/"
with zipfile.ZipFile(wheel) as zf:
    names = [n for n in zf.namelist() if n.startswith(prefix) and n.endswith(".json")]
    if not names:
        sys.exit(f"no schemas for {version} in {wheel}")
    for name in names:
        schema = json.loads(zf.read(name))
        # The wheel's schemas carry "$id": "https://kubernetes.io/api/..." and absolute refs
        # ("/api/_definitions.json#...") that its own loader maps to files. kubeconform resolves
        # refs against the schema's location, so drop the ids and make the refs file-relative.
        schema.pop("$id", None)
        text = json.dumps(schema).replace('"/api/_definitions.json#', '"_definitions.json#')
        with open(f"{dest}/{version}-strict/{name[len(prefix):]}", "w") as out:
            out.write(text)
PY
  echo "$want" >"$stamp"
  say "schemas: $(ls "$dest/$K8S_SCHEMA_VERSION-strict" | wc -l) files in .tools/k8s-schemas/$K8S_SCHEMA_VERSION-strict"
}

install_helm
install_helm_unittest
install_kubeconform
install_actionlint
install_schemas
say "done: tools in .tools/bin, helm plugins in .tools/helm/plugins"
